// oneDNN (Debian's libdnnl-dev) helpers for the kernels that use it
// (executors/cpu/README.md): the engine, plain memory descriptors, running a
// primitive on the caller's buffers.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <string>
#include <unordered_map>
#include <vector>

#include "kernel.h"

namespace qforge::cpu {

// The CPU engine (one per process).
dnnl::engine& dnnl_engine();

// A row-major (C order) f32 descriptor of `dims`.
inline dnnl::memory::desc plain_desc(const std::vector<int64_t>& dims,
                                     dnnl::memory::data_type dt = dnnl::memory::data_type::f32) {
  dnnl::memory::dims d(dims.begin(), dims.end());
  dnnl::memory::dims st(dims.size());
  int64_t acc = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    st[i] = acc;
    acc *= dims[i];
  }
  return dnnl::memory::desc(d, dt, st);
}

// A descriptor with explicit strides (elements).
inline dnnl::memory::desc strided_desc(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides,
                                       dnnl::memory::data_type dt = dnnl::memory::data_type::f32) {
  return dnnl::memory::desc(dnnl::memory::dims(dims.begin(), dims.end()), dt,
                            dnnl::memory::dims(strides.begin(), strides.end()));
}

// Memory over bytes we own or read (oneDNN does not write through `src` args).
inline dnnl::memory wrap(const dnnl::memory::desc& md, const void* p) {
  return dnnl::memory(md, dnnl_engine(), const_cast<void*>(p));
}

// Every primitive takes its scratchpad from the caller (scratchpad_mode::user):
// with oneDNN's shared library scratchpad (Debian's build has no
// DNNL_ENABLE_CONCURRENT_EXEC), two build steps running primitives at once
// overwrite each other's intermediate results. Create every primitive
// descriptor with this attribute and run it with run_primitive.
inline dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

// Runs `prim` with `args`, plus a scratchpad of its own for this call.
void run_primitive(const dnnl::primitive& prim, dnnl::stream& s, std::unordered_map<int, dnnl::memory> args);

// `src` reordered into `md` (for weights, once per shape).
dnnl::memory reorder_to(const dnnl::memory& src, const dnnl::memory::desc& md);

// Turns oneDNN's error into a qforge::Error naming what was being done.
[[noreturn]] void dnnl_failed(const dnnl::error& e, const std::string& what);

// A shape as a cache key.
struct ShapeKey {
  std::vector<int64_t> dims;
  bool operator==(const ShapeKey& o) const { return dims == o.dims; }
};
struct ShapeKeyHash {
  size_t operator()(const ShapeKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t d : k.dims) h = (h ^ static_cast<size_t>(d)) * 1099511628211ull;
    return h;
  }
};

}  // namespace qforge::cpu

namespace qforge::cpu {

// C[M, N] = A[M, K] · B (B is [K, N], or [N, K] when `b_transposed`), all f32
// row-major, through oneDNN's matmul (primitives cached by shape).
void f32_matmul(const float* a, const float* b, float* c, int64_t M, int64_t K, int64_t N, bool b_transposed);

}  // namespace qforge::cpu
