// Normalizations and softmax: BatchNormalization, InstanceNormalization,
// LayerNormalization, Softmax, LogSoftmax (executors/cpu/README.md).
#include <algorithm>
#include <cmath>

#include "kernel.h"

namespace qforge::cpu {

namespace {

void need_f32(const RunValue& v, const char* what) {
  if (v.type != ElemType::F32) unsupported(std::string(what) + " of " + describe(v));
}

void batch_norm(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  need_f32(x, "BatchNormalization");
  const bool training = ctx.opset >= 14 && attr_int(ctx.node, "training_mode", 0) != 0;
  if (ctx.opset < 9 && attr_int(ctx.node, "spatial", 1) != 1) unsupported("BatchNormalization spatial=0");
  if (x.shape.size() < 2) throw Error("input must have a channel dimension, found " + describe(x));
  const float eps = attr_float(ctx.node, "epsilon", 1e-5f);
  const int64_t N = x.shape[0], C = x.shape[1];
  const int64_t S = static_cast<int64_t>(x.numel()) / std::max<int64_t>(1, N * C);
  for (size_t i = 1; i < 5; ++i) {
    need_f32(ctx.input(i), "BatchNormalization");
    if (ctx.input(i).numel() != static_cast<uint64_t>(C))
      throw Error("input " + std::to_string(i) + " " + describe(ctx.input(i)) +
                  " must have one value per channel (" + std::to_string(C) + ")");
  }
  const float *scale = ctx.input(1).as<float>(), *bias = ctx.input(2).as<float>(),
              *mean = ctx.input(3).as<float>(), *var = ctx.input(4).as<float>();
  std::vector<float> batch_mean, batch_var;
  if (training) {
    // Statistics of this batch normalize it; the running ones are updated
    // with `momentum` (outputs 1 and 2).
    batch_mean.assign(C, 0.f);
    batch_var.assign(C, 0.f);
    const float* p = x.as<float>();
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, sq = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) s += p[(n * C + c) * S + i];
      const double m = s / static_cast<double>(N * S);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) sq += (p[(n * C + c) * S + i] - m) * (p[(n * C + c) * S + i] - m);
      batch_mean[c] = static_cast<float>(m);
      batch_var[c] = static_cast<float>(sq / static_cast<double>(N * S));
    }
    const float momentum = attr_float(ctx.node, "momentum", 0.9f);
    if (ctx.wants_output(1)) {
      float* rm = ctx.alloc<float>(1, ElemType::F32, {C});
      for (int64_t c = 0; c < C; ++c) rm[c] = mean[c] * momentum + batch_mean[c] * (1 - momentum);
    }
    if (ctx.wants_output(2)) {
      float* rv = ctx.alloc<float>(2, ElemType::F32, {C});
      for (int64_t c = 0; c < C; ++c) rv[c] = var[c] * momentum + batch_var[c] * (1 - momentum);
    }
    mean = batch_mean.data();
    var = batch_var.data();
  }
  std::vector<float> a(C), b(C);
  for (int64_t c = 0; c < C; ++c) {
    a[c] = scale[c] / std::sqrt(var[c] + eps);
    b[c] = bias[c] - mean[c] * a[c];
  }
  float* o = ctx.alloc<float>(0, ElemType::F32, x.shape);
  const float* p = x.as<float>();
  parallel_for(ctx.threads, N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, S)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t nc = lo; nc < hi; ++nc) {
                   const int64_t c = nc % C;
                   const float av = a[c], bv = b[c];
                   const float* src = p + nc * S;
                   float* dst = o + nc * S;
                   for (int64_t i = 0; i < S; ++i) dst[i] = src[i] * av + bv;
                 }
               });
}

void instance_norm(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  need_f32(x, "InstanceNormalization");
  const float eps = attr_float(ctx.node, "epsilon", 1e-5f);
  if (x.shape.size() < 3) throw Error("input must be at least 3-D, found " + describe(x));
  const int64_t N = x.shape[0], C = x.shape[1];
  const int64_t S = static_cast<int64_t>(x.numel()) / std::max<int64_t>(1, N * C);
  const float *scale = ctx.input(1).as<float>(), *bias = ctx.input(2).as<float>();
  if (ctx.input(1).numel() != static_cast<uint64_t>(C) || ctx.input(2).numel() != static_cast<uint64_t>(C))
    throw Error("scale and B must have one value per channel");
  float* o = ctx.alloc<float>(0, ElemType::F32, x.shape);
  const float* p = x.as<float>();
  parallel_for(ctx.threads, N * C, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nc = lo; nc < hi; ++nc) {
      const float* src = p + nc * S;
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < S; ++i) sum += src[i];
      const double mean = sum / S;
      for (int64_t i = 0; i < S; ++i) sq += (src[i] - mean) * (src[i] - mean);
      const double inv = 1.0 / std::sqrt(sq / S + eps);
      const int64_t c = nc % C;
      const float a = static_cast<float>(scale[c] * inv),
                  b = static_cast<float>(bias[c] - mean * scale[c] * inv);
      for (int64_t i = 0; i < S; ++i) o[nc * S + i] = src[i] * a + b;
    }
  });
}

void layer_norm(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  need_f32(x, "LayerNormalization");
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", -1), r);
  const float eps = attr_float(ctx.node, "epsilon", 1e-5f);
  int64_t rows = 1, cols = 1;
  for (int64_t d = 0; d < r; ++d) (d < axis ? rows : cols) *= x.shape[d];
  const RunValue& scale = ctx.input(1);
  need_f32(scale, "LayerNormalization scale");
  const std::vector<int64_t> norm_shape(x.shape.begin() + axis, x.shape.end());
  // Scale and B broadcast over the normalized dimensions (usually exactly their shape).
  auto expand = [&](const RunValue& v) {
    std::vector<float> out(cols);
    const std::vector<int64_t> st = broadcast_strides(v.shape, norm_shape);
    if (v.shape.size() > norm_shape.size())
      throw Error(describe(v) + " does not broadcast to " + shape_str(norm_shape));
    const std::vector<int64_t> bs = broadcast_shapes(v.shape, norm_shape);
    if (bs != norm_shape) throw Error(describe(v) + " does not broadcast to " + shape_str(norm_shape));
    std::vector<int64_t> pos(norm_shape.size(), 0);
    for (int64_t i = 0; i < cols; ++i) {
      int64_t off = 0;
      for (size_t d = 0; d < pos.size(); ++d) off += pos[d] * st[d];
      out[i] = v.as<float>()[off];
      for (size_t d = pos.size(); d-- > 0;) {
        if (++pos[d] < norm_shape[d]) break;
        pos[d] = 0;
      }
    }
    return out;
  };
  const std::vector<float> g = expand(scale);
  std::vector<float> b(cols, 0.f);
  if (ctx.has_input(2)) {
    need_f32(ctx.input(2), "LayerNormalization B");
    b = expand(ctx.input(2));
  }
  float* o = ctx.alloc<float>(0, ElemType::F32, x.shape);
  std::vector<int64_t> stat_shape = x.shape;
  for (int64_t d = axis; d < r; ++d) stat_shape[d] = 1;
  float* mean_out = ctx.wants_output(1) ? ctx.alloc<float>(1, ElemType::F32, stat_shape) : nullptr;
  float* inv_out = ctx.wants_output(2) ? ctx.alloc<float>(2, ElemType::F32, stat_shape) : nullptr;
  const float* p = x.as<float>();
  parallel_for(ctx.threads, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t row = lo; row < hi; ++row) {
                   const float* src = p + row * cols;
                   float* dst = o + row * cols;
                   float sum = 0;
                   for (int64_t i = 0; i < cols; ++i) sum += src[i];
                   const float mean = sum / static_cast<float>(cols);
                   float sq = 0;
                   for (int64_t i = 0; i < cols; ++i) sq += (src[i] - mean) * (src[i] - mean);
                   const float inv = 1.f / std::sqrt(sq / static_cast<float>(cols) + eps);
                   for (int64_t i = 0; i < cols; ++i) dst[i] = (src[i] - mean) * inv * g[i] + b[i];
                   if (mean_out) mean_out[row] = mean;
                   if (inv_out) inv_out[row] = inv;
                 }
               });
}

void softmax(KernelContext& ctx, bool log) {
  const RunValue& x = ctx.input(0);
  need_f32(x, log ? "LogSoftmax" : "Softmax");
  const int64_t r = static_cast<int64_t>(x.shape.size());
  float* o = ctx.alloc<float>(0, ElemType::F32, x.shape);
  if (x.numel() == 0) return;
  const float* p = x.as<float>();
  int64_t outer = 1, len = 1, inner = 1;
  if (ctx.opset < 13) {
    // The input coerced to 2-D at `axis`; softmax over the second dimension.
    const int64_t axis = r == 0 ? 0 : norm_axis(attr_int(ctx.node, "axis", 1), r);
    for (int64_t d = 0; d < r; ++d) (d < axis ? outer : len) *= x.shape[d];
  } else {
    const int64_t axis = norm_axis(attr_int(ctx.node, "axis", -1), std::max<int64_t>(r, 1));
    for (int64_t d = 0; d < r; ++d) {
      if (d < axis)
        outer *= x.shape[d];
      else if (d == axis)
        len = x.shape[d];
      else
        inner *= x.shape[d];
    }
  }
  parallel_for(ctx.threads, outer * inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, len)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t row = lo; row < hi; ++row) {
                   const int64_t a = row / inner, c = row % inner;
                   const float* src = p + a * len * inner + c;
                   float* dst = o + a * len * inner + c;
                   float mx = -INFINITY;
                   for (int64_t i = 0; i < len; ++i) mx = std::max(mx, src[i * inner]);
                   float sum = 0;
                   for (int64_t i = 0; i < len; ++i) {
                     const float e = std::exp(src[i * inner] - mx);
                     dst[i * inner] = e;
                     sum += e;
                   }
                   if (log) {
                     const float ls = std::log(sum);
                     for (int64_t i = 0; i < len; ++i) dst[i * inner] = src[i * inner] - mx - ls;
                   } else {
                     const float inv = 1.f / sum;
                     for (int64_t i = 0; i < len; ++i) dst[i * inner] *= inv;
                   }
                 }
               });
}

}  // namespace

void register_ops_norm(KernelTable& t) {
  t.add_fn("", "BatchNormalization", 7, kMaxOpset, batch_norm);
  t.add_fn("", "InstanceNormalization", 6, kMaxOpset, instance_norm);
  t.add_fn("", "LayerNormalization", 17, kMaxOpset, layer_norm);
  t.add_fn("", "Softmax", 1, kMaxOpset, [](KernelContext& ctx) { softmax(ctx, false); });
  t.add_fn("", "LogSoftmax", 1, kMaxOpset, [](KernelContext& ctx) { softmax(ctx, true); });
}

}  // namespace qforge::cpu
