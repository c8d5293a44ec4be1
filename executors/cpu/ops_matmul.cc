// MatMul and Gemm through oneDNN's matmul primitive (executors/cpu/README.md).
// A constant right operand is reordered into the primitive's preferred layout
// once per left-operand shape.
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "broadcast.h"
#include "dnnl_util.h"
#include "kernel.h"

namespace qforge::cpu {

namespace {

using dt = dnnl::memory::data_type;

// numpy.matmul shapes: 1-D operands are promoted (and the added dimension
// removed again from the output), batch dimensions broadcast.
struct MatMulShape {
  int64_t m = 1, k = 1, n = 1;
  std::vector<int64_t> a3, b3, o3;  // operands and output as oneDNN sees them (same rank)
  std::vector<int64_t> out;         // the ONNX output shape
};

MatMulShape matmul_shape(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  if (a.empty() || b.empty()) throw Error("MatMul operands must have rank >= 1");
  MatMulShape s;
  std::vector<int64_t> ab(a.begin(), a.end() - std::min<size_t>(a.size(), 2));
  std::vector<int64_t> bb(b.begin(), b.end() - std::min<size_t>(b.size(), 2));
  s.m = a.size() >= 2 ? a[a.size() - 2] : 1;
  s.k = a.back();
  const int64_t kb = b.size() >= 2 ? b[b.size() - 2] : b[0];
  s.n = b.size() >= 2 ? b.back() : 1;
  if (kb != s.k)
    throw Error("cannot multiply " + shape_str(a) + " by " + shape_str(b) + ": inner sizes differ");
  std::vector<int64_t> batch = broadcast_shapes(ab, bb);
  s.out = batch;
  if (a.size() >= 2) s.out.push_back(s.m);
  if (b.size() >= 2) s.out.push_back(s.n);
  if (bb.empty() || numel_of(bb) == 1) {
    // One right matrix: fold the left batch into rows.
    const int64_t rows = static_cast<int64_t>(numel_of(ab)) * s.m;
    s.a3 = {rows, s.k};
    s.b3 = {s.k, s.n};
    s.o3 = {rows, s.n};
    return s;
  }
  const size_t r = batch.size();
  auto pad = [&](const std::vector<int64_t>& v) {
    std::vector<int64_t> p(r - v.size(), 1);
    p.insert(p.end(), v.begin(), v.end());
    return p;
  };
  s.a3 = pad(ab);
  s.a3.push_back(s.m);
  s.a3.push_back(s.k);
  s.b3 = pad(bb);
  s.b3.push_back(s.k);
  s.b3.push_back(s.n);
  s.o3 = batch;
  s.o3.push_back(s.m);
  s.o3.push_back(s.n);
  return s;
}

class MatMulKernel : public Kernel {
 public:
  explicit MatMulKernel(const KernelInit& init) {
    if (init.constants.size() > 1 && init.constants[1]) b_const_ = *init.constants[1];
  }

  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    const RunValue& b = ctx.input(1);
    if (a.type != ElemType::F32 || b.type != ElemType::F32)
      unsupported("MatMul of " + describe(a) + " by " + describe(b));
    ShapeKey key{a.shape};
    key.dims.push_back(-1);
    key.dims.insert(key.dims.end(), b.shape.begin(), b.shape.end());
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, build(a.shape, b.shape)).first;
    Prepared& p = it->second;
    float* o = ctx.alloc<float>(0, ElemType::F32, p.out);
    if (numel_of(p.out) == 0) return;
    if (p.k == 0) {
      std::fill(o, o + numel_of(p.out), 0.f);
      return;
    }
    try {
      dnnl::stream s(dnnl_engine());
      dnnl::memory w = p.weights;
      if (!p.const_weights) w = reorder_to(wrap(p.user_b, b.data->data()), p.pd_b);
      run_primitive(p.prim, s,
                    {{DNNL_ARG_SRC, wrap(p.user_a, a.data->data())},
                     {DNNL_ARG_WEIGHTS, w},
                     {DNNL_ARG_DST, wrap(p.user_o, o)}});
      s.wait();
    } catch (const dnnl::error& e) {
      dnnl_failed(e, "running the matrix product of " + describe(a) + " by " + describe(b));
    }
  }

 private:
  struct Prepared {
    dnnl::primitive prim;
    dnnl::memory::desc user_a, user_b, user_o, pd_b;
    dnnl::memory weights;
    bool const_weights = false;
    std::vector<int64_t> out;
    int64_t k = 0;
  };

  Prepared build(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    const MatMulShape s = matmul_shape(a, b);
    Prepared p;
    p.out = s.out;
    p.k = s.k;
    if (numel_of(s.out) == 0 || s.k == 0) return p;
    p.user_a = plain_desc(s.a3);
    p.user_b = plain_desc(s.b3);
    p.user_o = plain_desc(s.o3);
    try {
      const dnnl::memory::desc b_any(dnnl::memory::dims(s.b3.begin(), s.b3.end()), dt::f32,
                                     dnnl::memory::format_tag::any);
      dnnl::matmul::desc d(p.user_a, b_const_.data ? b_any : p.user_b, p.user_o);
      dnnl::matmul::primitive_desc pd(d, user_scratchpad(), dnnl_engine());
      p.pd_b = pd.weights_desc();
      p.prim = dnnl::matmul(pd);
      if (b_const_.data) {
        p.weights = reorder_to(wrap(p.user_b, b_const_.data->data()), p.pd_b);
        p.const_weights = true;
      }
    } catch (const dnnl::error& e) {
      dnnl_failed(e, "preparing the matrix product of " + shape_str(a) + " by " + shape_str(b));
    }
    return p;
  }

  RunValue b_const_;
  std::unordered_map<ShapeKey, Prepared, ShapeKeyHash> cache_;
};

// Gemm: Y = alpha * A' B' + beta * C, A' and B' optionally transposed.
class GemmKernel : public Kernel {
 public:
  explicit GemmKernel(const KernelInit& init)
      : alpha_(attr_float(init.node, "alpha", 1.f)),
        beta_(attr_float(init.node, "beta", 1.f)),
        ta_(attr_int(init.node, "transA", 0) != 0),
        tb_(attr_int(init.node, "transB", 0) != 0) {
    if (init.constants.size() > 1 && init.constants[1]) b_const_ = *init.constants[1];
  }

  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    const RunValue& b = ctx.input(1);
    if (a.type != ElemType::F32 || b.type != ElemType::F32)
      unsupported("Gemm of " + describe(a) + " by " + describe(b));
    if (a.shape.size() != 2 || b.shape.size() != 2)
      throw Error("A and B must be 2-D, found " + describe(a) + " and " + describe(b));
    const int64_t M = ta_ ? a.shape[1] : a.shape[0], K = ta_ ? a.shape[0] : a.shape[1];
    const int64_t KB = tb_ ? b.shape[1] : b.shape[0], N = tb_ ? b.shape[0] : b.shape[1];
    if (K != KB)
      throw Error("cannot multiply " + describe(a) + " by " + describe(b) + " (transA " +
                  std::to_string(ta_) + ", transB " + std::to_string(tb_) + "): inner sizes differ");
    float* o = ctx.alloc<float>(0, ElemType::F32, {M, N});
    const uint64_t n = static_cast<uint64_t>(M * N);
    ShapeKey key{{M, K, N}};
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, build(M, K, N)).first;
    Prepared& p = it->second;
    if (n > 0 && K > 0) {
      try {
        dnnl::stream s(dnnl_engine());
        dnnl::memory w = b_const_.data ? p.weights : wrap(p.user_b, b.data->data());
        run_primitive(p.prim, s,
                      {{DNNL_ARG_SRC, wrap(p.user_a, a.data->data())},
                       {DNNL_ARG_WEIGHTS, w},
                       {DNNL_ARG_DST, wrap(p.user_o, o)}});
        s.wait();
      } catch (const dnnl::error& e) {
        dnnl_failed(e, "running Gemm of " + describe(a) + " by " + describe(b));
      }
    } else {
      std::fill(o, o + n, 0.f);
    }
    if (alpha_ != 1.f)
      for (uint64_t i = 0; i < n; ++i) o[i] *= alpha_;
    if (ctx.has_input(2) && beta_ != 0.f) {
      const RunValue& c = ctx.input(2);
      if (c.type != ElemType::F32) throw Error("C must be f32, found " + describe(c));
      const std::vector<int64_t> out{M, N};
      if (broadcast_shapes(c.shape, out) != out)
        throw Error("C " + describe(c) + " does not broadcast to [" + std::to_string(M) + ", " +
                    std::to_string(N) + "]");
      const std::vector<int64_t> cs = broadcast_strides(c.shape, out);
      const float* pc = c.as<float>();
      const float beta = beta_;
      parallel_for(ctx.threads, M, 64, [&](int64_t rb, int64_t re) {
        for (int64_t i = rb; i < re; ++i)
          for (int64_t j = 0; j < N; ++j) o[i * N + j] += beta * pc[i * cs[0] + j * cs[1]];
      });
    }
  }

 private:
  struct Prepared {
    dnnl::primitive prim;
    dnnl::memory::desc user_a, user_b, user_o;
    dnnl::memory weights;
  };

  Prepared build(int64_t M, int64_t K, int64_t N) {
    Prepared p;
    if (M * N == 0 || K == 0) return p;
    p.user_a = ta_ ? strided_desc({M, K}, {1, M}) : strided_desc({M, K}, {K, 1});
    p.user_b = tb_ ? strided_desc({K, N}, {1, K}) : strided_desc({K, N}, {N, 1});
    p.user_o = plain_desc({M, N});
    try {
      const dnnl::memory::desc b_any({K, N}, dt::f32, dnnl::memory::format_tag::any);
      dnnl::matmul::desc d(p.user_a, b_const_.data ? b_any : p.user_b, p.user_o);
      dnnl::matmul::primitive_desc pd(d, user_scratchpad(), dnnl_engine());
      p.prim = dnnl::matmul(pd);
      if (b_const_.data) p.weights = reorder_to(wrap(p.user_b, b_const_.data->data()), pd.weights_desc());
    } catch (const dnnl::error& e) {
      dnnl_failed(e, "preparing Gemm [" + std::to_string(M) + " x " + std::to_string(K) + "] by [" +
                         std::to_string(K) + " x " + std::to_string(N) + "]");
    }
    return p;
  }

  float alpha_, beta_;
  bool ta_, tb_;
  RunValue b_const_;
  std::unordered_map<ShapeKey, Prepared, ShapeKeyHash> cache_;
};

}  // namespace

void f32_matmul(const float* a, const float* b, float* c, int64_t M, int64_t K, int64_t N,
                bool b_transposed) {
  if (M * N == 0) return;
  if (K == 0) {
    std::fill(c, c + M * N, 0.f);
    return;
  }
  struct Entry {
    dnnl::matmul prim;
    dnnl::memory::desc a, b, c;
  };
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::shared_ptr<Entry>> cache;
  std::shared_ptr<Entry> e;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto& slot = cache[{M, K, N, b_transposed ? 1 : 0}];
    if (!slot) {
      auto ne = std::make_shared<Entry>();
      ne->a = plain_desc({M, K});
      ne->b = b_transposed ? strided_desc({K, N}, {1, K}) : plain_desc({K, N});
      ne->c = plain_desc({M, N});
      try {
        ne->prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(ne->a, ne->b, ne->c),
                                                             user_scratchpad(), dnnl_engine()));
      } catch (const dnnl::error& err) {
        dnnl_failed(err, "preparing a matrix product");
      }
      slot = ne;
    }
    e = slot;
  }
  try {
    dnnl::stream s(dnnl_engine());
    run_primitive(
        e->prim, s,
        {{DNNL_ARG_SRC, wrap(e->a, a)}, {DNNL_ARG_WEIGHTS, wrap(e->b, b)}, {DNNL_ARG_DST, wrap(e->c, c)}});
    s.wait();
  } catch (const dnnl::error& err) {
    dnnl_failed(err, "running a matrix product");
  }
}

void register_ops_matmul(KernelTable& t) {
  t.add("", "MatMul", 1, kMaxOpset,
        [](const KernelInit& init) { return std::make_unique<MatMulKernel>(init); });
  t.add("", "Gemm", 7, kMaxOpset, [](const KernelInit& init) { return std::make_unique<GemmKernel>(init); });
}

}  // namespace qforge::cpu
