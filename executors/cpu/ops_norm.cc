// Normalizations: BatchNormalization (inference and training mode), InstanceNormalization,
// LayerNormalization (executors/cpu/README.md).
//
// The float rows of LayerNormalization and InstanceNormalization's
// statistics are Highway kernels, compiled once per target by foreach_target
// (this file includes itself) and chosen at run time.
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops_norm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qforge::cpu::norm_simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Mean and (biased) variance of n contiguous floats, in two passes.
void MeanVar(const float* HWY_RESTRICT x, int64_t n, float* mean_out, float* var_out) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  auto a0 = hn::Zero(d), a1 = hn::Zero(d);
  for (; i + 2 * N <= n; i += 2 * N) {
    a0 = hn::Add(a0, hn::LoadU(d, x + i));
    a1 = hn::Add(a1, hn::LoadU(d, x + i + N));
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
  for (; i < n; ++i) sum += x[i];
  const float mean = n ? sum / static_cast<float>(n) : 0.0f;
  const auto vm = hn::Set(d, mean);
  a0 = hn::Zero(d);
  a1 = hn::Zero(d);
  i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const auto d0 = hn::Sub(hn::LoadU(d, x + i), vm), d1 = hn::Sub(hn::LoadU(d, x + i + N), vm);
    a0 = hn::MulAdd(d0, d0, a0);
    a1 = hn::MulAdd(d1, d1, a1);
  }
  float sq = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
  for (; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  *mean_out = mean;
  *var_out = n ? sq / static_cast<float>(n) : 0.0f;
}

// y = (x - mean) * inv * scale (+ bias when given) over n contiguous floats.
void Normalize(const float* HWY_RESTRICT x, float* HWY_RESTRICT y, const float* HWY_RESTRICT scale,
               const float* HWY_RESTRICT bias, int64_t n, float mean, float inv) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto vm = hn::Set(d, mean), vi = hn::Set(d, inv);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto t = hn::Mul(hn::Sub(hn::LoadU(d, x + i), vm), vi);
    const auto v = bias ? hn::MulAdd(t, hn::LoadU(d, scale + i), hn::LoadU(d, bias + i))
                        : hn::Mul(t, hn::LoadU(d, scale + i));
    hn::StoreU(v, d, y + i);
  }
  for (; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i] + (bias ? bias[i] : 0.0f);
}

}  // namespace HWY_NAMESPACE
}  // namespace qforge::cpu::norm_simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qforge::cpu {

namespace norm_simd {
HWY_EXPORT(MeanVar);
HWY_EXPORT(Normalize);
void mean_var(const float* x, int64_t n, float* mean, float* var) {
  HWY_DYNAMIC_DISPATCH(MeanVar)(x, n, mean, var);
}
void normalize(const float* x, float* y, const float* scale, const float* bias, int64_t n, float mean,
               float inv) {
  HWY_DYNAMIC_DISPATCH(Normalize)(x, y, scale, bias, n, mean, inv);
}
}  // namespace norm_simd

namespace {

// A 1-D per-channel operand of C elements, as float.
template <class T>
std::vector<double> channel_values(const RunValue& v, int64_t c, const char* what, ElemType type) {
  if (v.type != type)
    unsupported(std::string(what) + " of type " + name_of(v.type) + " with X of type " + name_of(type));
  if (v.shape.size() != 1 || v.shape[0] != c)
    throw Error(std::string(what) + " must have shape [" + std::to_string(c) + "], found " + describe(v));
  const T* p = v.as<T>();
  return std::vector<double>(p, p + c);
}

// ---------------------------------------------------------------- BatchNormalization
// y = (x - mean) / sqrt(var + epsilon) * scale + B per channel (dimension 1).
// In inference mode mean and var are the running statistics given; in
// training mode (opset 14+) the batch's own, and outputs 1 and 2 are the
// running statistics updated with `momentum`.
template <class T>
void batchnorm_typed(KernelContext& ctx, bool training) {
  const RunValue& x = ctx.input(0);
  if (x.shape.size() < 2) throw Error("X must have rank >= 2 ([N, C, ...]), found " + describe(x));
  const int64_t n = x.shape[0], c = x.shape[1];
  int64_t spatial = 1;
  for (size_t i = 2; i < x.shape.size(); ++i) spatial *= x.shape[i];
  const double eps = attr_float(ctx.node, "epsilon", 1e-5f);
  const std::vector<double> scale = channel_values<T>(ctx.input(1), c, "scale", x.type);
  const std::vector<double> bias = channel_values<T>(ctx.input(2), c, "B", x.type);
  std::vector<double> mean = channel_values<T>(ctx.input(3), c, "input_mean", x.type);
  std::vector<double> var = channel_values<T>(ctx.input(4), c, "input_var", x.type);
  const T* in = x.as<T>();
  if (training) {
    const double m = attr_float(ctx.node, "momentum", 0.9f);
    std::vector<double> bm(c), bv(c);
    parallel_for(ctx.threads, c, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t ch = lo; ch < hi; ++ch) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < spatial; ++j) sum += in[(i * c + ch) * spatial + j];
        const double count = static_cast<double>(n * spatial);
        bm[ch] = count ? sum / count : 0.0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < spatial; ++j) {
            const double d = in[(i * c + ch) * spatial + j] - bm[ch];
            sq += d * d;
          }
        bv[ch] = count ? sq / count : 0.0;
      }
    });
    if (ctx.wants_output(1)) {
      T* rm = ctx.alloc<T>(1, x.type, {c});
      for (int64_t i = 0; i < c; ++i) rm[i] = static_cast<T>(mean[i] * m + bm[i] * (1 - m));
    }
    if (ctx.wants_output(2)) {
      T* rv = ctx.alloc<T>(2, x.type, {c});
      for (int64_t i = 0; i < c; ++i) rv[i] = static_cast<T>(var[i] * m + bv[i] * (1 - m));
    }
    mean = bm;
    var = bv;
  }
  std::vector<T> a(c), b(c);
  for (int64_t i = 0; i < c; ++i) {
    const double s = scale[i] / std::sqrt(var[i] + eps);
    a[i] = static_cast<T>(s);
    b[i] = static_cast<T>(bias[i] - mean[i] * s);
  }
  T* out = ctx.alloc<T>(0, x.type, x.shape);
  parallel_for(ctx.threads, n * c, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, spatial)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t r = lo; r < hi; ++r) {
                   const T av = a[r % c], bv = b[r % c];
                   const T* src = in + r * spatial;
                   T* dst = out + r * spatial;
                   for (int64_t j = 0; j < spatial; ++j) dst[j] = src[j] * av + bv;
                 }
               });
}

void batchnorm(KernelContext& ctx) {
  const bool training = ctx.opset >= 14 && attr_int(ctx.node, "training_mode", 0) != 0;
  if (ctx.opset < 9 && attr_int(ctx.node, "spatial", 1) != 1) unsupported("spatial=0");
  // Before opset 14, outputs past Y were training outputs (is_test=0): not kept.
  for (size_t i = training ? 3 : 1; i < ctx.node.outputs.size(); ++i)
    if (ctx.wants_output(i))
      unsupported("output " + std::to_string(i) + " (a training-mode output this kernel does not produce)");
  const RunValue& x = ctx.input(0);
  switch (x.type) {
    case ElemType::F32: return batchnorm_typed<float>(ctx, training);
    case ElemType::F64: return batchnorm_typed<double>(ctx, training);
    default: unsupported(std::string("element type ") + name_of(x.type));
  }
}

// ---------------------------------------------------------------- InstanceNormalization
// Per (n, c): y = scale[c] * (x - mean) / sqrt(var + epsilon) + B[c], the
// statistics over the spatial dimensions.
template <class T>
void instancenorm_typed(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  if (x.shape.size() < 2) throw Error("input must have rank >= 2 ([N, C, ...]), found " + describe(x));
  const int64_t n = x.shape[0], c = x.shape[1];
  int64_t spatial = 1;
  for (size_t i = 2; i < x.shape.size(); ++i) spatial *= x.shape[i];
  const double eps = attr_float(ctx.node, "epsilon", 1e-5f);
  const std::vector<double> scale = channel_values<T>(ctx.input(1), c, "scale", x.type);
  const std::vector<double> bias = channel_values<T>(ctx.input(2), c, "B", x.type);
  const T* in = x.as<T>();
  T* out = ctx.alloc<T>(0, x.type, x.shape);
  parallel_for(ctx.threads, n * c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* src = in + r * spatial;
      T* dst = out + r * spatial;
      double mean = 0, var = 0;
      if constexpr (std::is_same_v<T, float>) {
        float m = 0, v = 0;
        norm_simd::mean_var(src, spatial, &m, &v);
        mean = m;
        var = v;
      } else {
        double sum = 0, sq = 0;
        for (int64_t j = 0; j < spatial; ++j) sum += src[j];
        mean = spatial ? sum / static_cast<double>(spatial) : 0.0;
        for (int64_t j = 0; j < spatial; ++j) sq += (src[j] - mean) * (src[j] - mean);
        var = spatial ? sq / static_cast<double>(spatial) : 0.0;
      }
      const double s = scale[r % c] / std::sqrt(var + eps);
      const T a = static_cast<T>(s), b = static_cast<T>(bias[r % c] - mean * s);
      for (int64_t j = 0; j < spatial; ++j) dst[j] = src[j] * a + b;
    }
  });
}

void instancenorm(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  switch (x.type) {
    case ElemType::F32: return instancenorm_typed<float>(ctx);
    case ElemType::F64: return instancenorm_typed<double>(ctx);
    default: unsupported(std::string("element type ") + name_of(x.type));
  }
}

// ---------------------------------------------------------------- LayerNormalization
// Rows are the dimensions from `axis` on: Y = (X - mean) * InvStdDev * Scale +
// B, with Mean and InvStdDev (shape X.shape[:axis] + 1s) as optional outputs
// of the stash type (float).
template <class T>
std::vector<T> expand_to(const RunValue& v, const std::vector<int64_t>& shape, const char* what,
                         ElemType type) {
  if (v.type != type)
    unsupported(std::string(what) + " of type " + name_of(v.type) + " with X of type " + name_of(type));
  if (v.shape.size() > shape.size())
    throw Error(std::string(what) + " " + describe(v) + " does not broadcast to the normalized shape " +
                shape_str(shape));
  for (size_t i = 0; i < v.shape.size(); ++i) {
    const int64_t d = v.shape[v.shape.size() - 1 - i], want = shape[shape.size() - 1 - i];
    if (d != want && d != 1)
      throw Error(std::string(what) + " " + describe(v) + " does not broadcast to the normalized shape " +
                  shape_str(shape));
  }
  const std::vector<int64_t> st = broadcast_strides(v.shape, shape);
  const uint64_t n = numel_of(shape);
  std::vector<T> out(n);
  const T* p = v.as<T>();
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t rem = i;
    int64_t off = 0;
    for (size_t d = shape.size(); d-- > 0;) {
      off += static_cast<int64_t>(rem % shape[d]) * st[d];
      rem /= shape[d];
    }
    out[i] = p[off];
  }
  return out;
}

template <class T>
void layernorm_typed(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", -1), rank);
  const double eps = attr_float(ctx.node, "epsilon", 1e-5f);
  int64_t rows = 1, n = 1;
  for (int64_t i = 0; i < axis; ++i) rows *= x.shape[i];
  for (int64_t i = axis; i < rank; ++i) n *= x.shape[i];
  const std::vector<int64_t> norm_shape(x.shape.begin() + axis, x.shape.end());
  const std::vector<T> scale = expand_to<T>(ctx.input(1), norm_shape, "Scale", x.type);
  const std::vector<T> bias =
      ctx.has_input(2) ? expand_to<T>(ctx.input(2), norm_shape, "B", x.type) : std::vector<T>();
  std::vector<int64_t> stat_shape(x.shape.begin(), x.shape.begin() + axis);
  stat_shape.resize(rank, 1);
  const T* in = x.as<T>();
  T* out = ctx.alloc<T>(0, x.type, x.shape);
  float* mean_out = ctx.wants_output(1) ? ctx.alloc<float>(1, ElemType::F32, stat_shape) : nullptr;
  float* inv_out = ctx.wants_output(2) ? ctx.alloc<float>(2, ElemType::F32, stat_shape) : nullptr;
  parallel_for(
      ctx.threads, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, n)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* src = in + r * n;
          T* dst = out + r * n;
          if constexpr (std::is_same_v<T, float>) {
            float mean = 0, var = 0;
            norm_simd::mean_var(src, n, &mean, &var);
            const float inv = 1.0f / std::sqrt(var + static_cast<float>(eps));
            norm_simd::normalize(src, dst, scale.data(), bias.empty() ? nullptr : bias.data(), n, mean, inv);
            if (mean_out) mean_out[r] = mean;
            if (inv_out) inv_out[r] = inv;
            continue;
          }
          double sum = 0;
          for (int64_t j = 0; j < n; ++j) sum += src[j];
          const double mean = n ? sum / static_cast<double>(n) : 0.0;
          double sq = 0;
          for (int64_t j = 0; j < n; ++j) {
            const double d = src[j] - mean;
            sq += d * d;
          }
          const double inv = 1.0 / std::sqrt((n ? sq / static_cast<double>(n) : 0.0) + eps);
          const T m = static_cast<T>(mean), iv = static_cast<T>(inv);
          if (bias.empty()) {
            for (int64_t j = 0; j < n; ++j) dst[j] = (src[j] - m) * iv * scale[j];
          } else {
            for (int64_t j = 0; j < n; ++j) dst[j] = (src[j] - m) * iv * scale[j] + bias[j];
          }
          if (mean_out) mean_out[r] = static_cast<float>(mean);
          if (inv_out) inv_out[r] = static_cast<float>(inv);
        }
      });
}

void layernorm(KernelContext& ctx) {
  const int64_t stash = attr_int(ctx.node, "stash_type", 1);
  if (stash != 1) unsupported("stash_type=" + std::to_string(stash) + " (float, 1, only)");
  const RunValue& x = ctx.input(0);
  switch (x.type) {
    case ElemType::F32: return layernorm_typed<float>(ctx);
    case ElemType::F64: return layernorm_typed<double>(ctx);
    default: unsupported(std::string("element type ") + name_of(x.type));
  }
}

}  // namespace

void register_ops_norm(KernelTable& t) {
  t.add_fn("", "BatchNormalization", 7, kMaxOpset, batchnorm);
  t.add_fn("", "InstanceNormalization", 6, kMaxOpset, instancenorm);
  t.add_fn("", "LayerNormalization", 17, kMaxOpset, layernorm);
}

}  // namespace qforge::cpu
#endif  // HWY_ONCE
