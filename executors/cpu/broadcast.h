// Numpy-style broadcasting loops shared by the elementwise kernels
// (docs/architecture.md, "The seams"; executors/cpu/README.md).
#pragma once

#include <cstdint>
#include <vector>

#include "kernel.h"

namespace qforge::cpu {

// The iteration of an n-ary broadcast, with dimensions that broadcast alike
// merged so the innermost loop is as long as possible.
struct BroadcastPlan {
  std::vector<int64_t> out_shape;             // the broadcast shape
  std::vector<int64_t> dims;                  // merged dimensions (outermost first; at least one)
  std::vector<std::vector<int64_t>> strides;  // per operand, per merged dimension (0: broadcast)
  uint64_t numel = 1;
};

BroadcastPlan plan_broadcast(const std::vector<const std::vector<int64_t>*>& shapes);

// Calls fn(out_offset, offsets_of_operands, inner_length, inner_strides) for
// each run of the innermost merged dimension, rows split across threads.
template <class Fn>
void for_each_row(const BroadcastPlan& p, int threads, Fn&& fn) {
  const size_t r = p.dims.size();
  const int64_t inner = p.dims[r - 1];
  const int64_t rows = inner == 0 ? 0 : static_cast<int64_t>(p.numel) / inner;
  const size_t k = p.strides.size();
  parallel_for(threads, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, inner)),
               [&](int64_t b, int64_t e) {
                 std::vector<int64_t> off(k), inner_stride(k);
                 for (size_t j = 0; j < k; ++j) inner_stride[j] = p.strides[j][r - 1];
                 for (int64_t row = b; row < e; ++row) {
                   int64_t rem = row;
                   for (size_t j = 0; j < k; ++j) off[j] = 0;
                   for (size_t d = r - 1; d-- > 0;) {
                     const int64_t idx = rem % p.dims[d];
                     rem /= p.dims[d];
                     for (size_t j = 0; j < k; ++j) off[j] += idx * p.strides[j][d];
                   }
                   fn(row * inner, off.data(), inner, inner_stride.data());
                 }
               });
}

// out[i] = f(a[i], b[i]) with broadcasting; output type R.
template <class A, class B, class R, class F>
void binary_broadcast(KernelContext& ctx, ElemType out_type, F f) {
  const RunValue& a = ctx.input(0);
  const RunValue& b = ctx.input(1);
  const BroadcastPlan p = plan_broadcast({&a.shape, &b.shape});
  R* o = ctx.alloc<R>(0, out_type, p.out_shape);
  const A* pa = a.as<A>();
  const B* pb = b.as<B>();
  for_each_row(p, ctx.threads, [&](int64_t oo, const int64_t* off, int64_t n, const int64_t* st) {
    const A* x = pa + off[0];
    const B* y = pb + off[1];
    R* z = o + oo;
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) z[i] = f(x[i], y[i]);
    } else if (st[0] == 1) {
      const B yv = y[0];
      for (int64_t i = 0; i < n; ++i) z[i] = f(x[i], yv);
    } else if (st[1] == 1) {
      const A xv = x[0];
      for (int64_t i = 0; i < n; ++i) z[i] = f(xv, y[i]);
    } else {
      const R v = f(x[0], y[0]);
      for (int64_t i = 0; i < n; ++i) z[i] = v;
    }
  });
}

// out[i] = f(x[i]) over input 0, output type R.
template <class T, class R, class F>
void unary_map(KernelContext& ctx, ElemType out_type, F f) {
  const RunValue& x = ctx.input(0);
  R* o = ctx.alloc<R>(0, out_type, x.shape);
  const T* px = x.as<T>();
  parallel_for(ctx.threads, static_cast<int64_t>(x.numel()), 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = f(px[i]);
  });
}

}  // namespace qforge::cpu
