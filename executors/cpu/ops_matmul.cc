// Matrix products (executors/cpu/README.md).
#include "kernel.h"

namespace qforge::cpu {

namespace {

// numpy.matmul shapes: 1-D operands are promoted (and the added dimension
// removed again), batch dimensions broadcast.
struct MatMulShape {
  int64_t m = 1, k = 1, n = 1;
  std::vector<int64_t> batch, out;
  std::vector<int64_t> a_batch_strides, b_batch_strides;  // in matrices
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
  s.batch = broadcast_shapes(ab, bb);
  s.a_batch_strides = broadcast_strides(ab, s.batch);
  s.b_batch_strides = broadcast_strides(bb, s.batch);
  s.out = s.batch;
  if (a.size() >= 2) s.out.push_back(s.m);
  if (b.size() >= 2) s.out.push_back(s.n);
  return s;
}

void matmul_f32(KernelContext& ctx) {
  const RunValue& a = ctx.input(0);
  const RunValue& b = ctx.input(1);
  if (a.type != ElemType::F32 || b.type != ElemType::F32)
    unsupported("MatMul of " + describe(a) + " by " + describe(b));
  const MatMulShape s = matmul_shape(a.shape, b.shape);
  float* o = ctx.alloc<float>(0, ElemType::F32, s.out);
  const int64_t batches = static_cast<int64_t>(numel_of(s.batch));
  const float* pa = a.as<float>();
  const float* pb = b.as<float>();
  for (int64_t bi = 0; bi < batches; ++bi) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (size_t d = s.batch.size(); d-- > 0;) {
      const int64_t idx = rem % s.batch[d];
      rem /= s.batch[d];
      oa += idx * s.a_batch_strides[d];
      ob += idx * s.b_batch_strides[d];
    }
    const float* x = pa + oa * s.m * s.k;
    const float* y = pb + ob * s.k * s.n;
    float* z = o + bi * s.m * s.n;
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) z[i * s.n + j] = 0;
      for (int64_t p = 0; p < s.k; ++p) {
        const float xv = x[i * s.k + p];
        for (int64_t j = 0; j < s.n; ++j) z[i * s.n + j] += xv * y[p * s.n + j];
      }
    }
  }
}

}  // namespace

void register_ops_matmul(KernelTable& t) { t.add_fn("", "MatMul", 1, kMaxOpset, matmul_f32); }

}  // namespace qforge::cpu
