// Resize and Upsample (executors/cpu/README.md): nearest, N-linear and cubic
// interpolation, separable per axis, every coordinate transformation mode.
#include <algorithm>
#include <cmath>

#include "kernel.h"

namespace qforge::cpu {

namespace {

struct Tap {
  int64_t index;  // -1: outside (tf_crop_and_resize's extrapolation)
  float weight;
};

struct ResizeAttrs {
  std::string mode = "nearest", coord = "half_pixel", nearest = "round_prefer_floor";
  float cubic_a = -0.75f, extrapolation = 0.f;
  bool exclude_outside = false;
  bool from_scales = false;
  bool antialias = false;  // linear/cubic: the filter widened by 1/scale when shrinking (opset 18)
  bool simple = false;     // Resize-10: nearest rounds down, or up when shrinking
};

double to_original(const ResizeAttrs& a, double x, double scale, int64_t in, int64_t out, double roi_start,
                   double roi_end) {
  const std::string& m = a.coord;
  if (m == "half_pixel") return (x + 0.5) / scale - 0.5;
  if (m == "half_pixel_symmetric") {
    const double adj = static_cast<double>(out) / (scale * static_cast<double>(in));
    const double center = static_cast<double>(in) / 2;
    const double offset = center * (1 - adj);
    return offset + (x + 0.5) / scale - 0.5;
  }
  if (m == "pytorch_half_pixel") return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
  if (m == "align_corners") {
    // With scales, the resized length is in * scale before flooring (as ONNX's reference).
    const double len = a.from_scales ? scale * static_cast<double>(in) : static_cast<double>(out);
    return out == 1 ? 0.0 : x * static_cast<double>(in - 1) / (len - 1);
  }
  if (m == "asymmetric") return x / scale;
  if (m == "tf_half_pixel_for_nn") return (x + 0.5) / scale;
  if (m == "tf_crop_and_resize")
    return out > 1
               ? roi_start * (in - 1) + x * (roi_end - roi_start) * (in - 1) / static_cast<double>(out - 1)
               : 0.5 * (roi_start + roi_end) * (in - 1);
  unsupported("Resize coordinate_transformation_mode='" + m + "'");
}

// Antialiased linear/cubic taps (ONNX's reference): the kernel stretched by
// 1/scale when shrinking, normalized to sum 1. The taps start left of x (an
// integral x counts as ratio 1 from its left neighbour).
std::vector<Tap> antialias_taps(const ResizeAttrs& a, double x, double scale, int64_t in) {
  const double s = std::min(scale, 1.0);
  const double f = std::floor(x);
  const int64_t base = static_cast<int64_t>(f) - (x == f ? 1 : 0);
  const double ratio = x == f ? 1.0 : x - f;
  const bool linear = a.mode == "linear";
  const int64_t first = static_cast<int64_t>(std::floor((linear ? -1.0 : -2.0) / s) + 1);
  const double A = a.cubic_a;
  auto kernel = [&](double t) {
    t = std::fabs(t);
    if (linear) return std::max(0.0, 1 - t);
    if (t <= 1) return ((A + 2) * t - (A + 3)) * t * t + 1;
    if (t < 2) return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
    return 0.0;
  };
  std::vector<double> w;
  double sum = 0;
  for (int64_t k = first; k < 2 - first; ++k) {
    w.push_back(kernel(s * (static_cast<double>(k) - ratio)));
    sum += w.back();
  }
  for (double& v : w) v /= sum;
  if (a.exclude_outside) {
    double kept = 0;
    for (size_t k = 0; k < w.size(); ++k) {
      const int64_t idx = base + first + static_cast<int64_t>(k);
      if (idx < 0 || idx >= in) w[k] = 0;
      kept += w[k];
    }
    for (double& v : w) v /= kept;
  }
  std::vector<Tap> taps;
  for (size_t k = 0; k < w.size(); ++k)
    if (w[k] != 0)
      taps.push_back(
          {std::clamp<int64_t>(base + first + static_cast<int64_t>(k), 0, in - 1), static_cast<float>(w[k])});
  return taps;
}

std::vector<Tap> taps_for(const ResizeAttrs& a, double x, double scale, int64_t in) {
  if (a.coord == "tf_crop_and_resize" && (x < 0 || x > static_cast<double>(in - 1))) return {{-1, 1.f}};
  if (a.antialias && a.mode != "nearest") return antialias_taps(a, x, scale, in);
  if (a.mode == "nearest") {
    double r;
    const std::string& nm = a.nearest;
    if (a.simple)
      r = scale < 1 ? std::ceil(x) : std::floor(x);
    else if (nm == "round_prefer_floor")
      r = (x - std::floor(x) == 0.5) ? std::floor(x) : std::round(x);
    else if (nm == "round_prefer_ceil")
      r = std::round(x);
    else if (nm == "floor")
      r = std::floor(x);
    else if (nm == "ceil")
      r = std::ceil(x);
    else
      unsupported("Resize nearest_mode='" + nm + "'");
    return {{std::clamp<int64_t>(static_cast<int64_t>(r), 0, in - 1), 1.f}};
  }
  if (a.mode == "linear") {
    const double xc = std::clamp(x, 0.0, static_cast<double>(in - 1));
    const int64_t i0 = static_cast<int64_t>(std::floor(xc));
    const int64_t i1 = std::min(i0 + 1, in - 1);
    const float w = static_cast<float>(xc - static_cast<double>(i0));
    return {{i0, 1 - w}, {i1, w}};
  }
  if (a.mode == "cubic") {
    const int64_t i = static_cast<int64_t>(std::floor(x));
    const double t = x - static_cast<double>(i);
    const double A = a.cubic_a;
    auto coef = [A](double s) {
      s = std::fabs(s);
      if (s <= 1) return ((A + 2) * s - (A + 3)) * s * s + 1;
      if (s < 2) return ((A * s - 5 * A) * s + 8 * A) * s - 4 * A;
      return 0.0;
    };
    std::vector<Tap> taps;
    double sum = 0;
    for (int64_t k = -1; k <= 2; ++k) {
      const int64_t idx = i + k;
      double w = coef(t - static_cast<double>(k));
      if (a.exclude_outside && (idx < 0 || idx >= in)) w = 0;
      sum += w;
      taps.push_back({std::clamp<int64_t>(idx, 0, in - 1), static_cast<float>(w)});
    }
    if (a.exclude_outside && sum != 0)
      for (Tap& tp : taps) tp.weight = static_cast<float>(tp.weight / sum);
    return taps;
  }
  unsupported("Resize mode='" + a.mode + "'");
}

std::vector<float> floats_of(const RunValue& v, const char* what) {
  std::vector<float> out(v.numel());
  if (v.type == ElemType::F32) {
    std::copy(v.as<float>(), v.as<float>() + out.size(), out.begin());
  } else if (v.type == ElemType::F64) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(v.as<double>()[i]);
  } else {
    throw Error(std::string(what) + " must be float, found " + describe(v));
  }
  return out;
}

void resize(KernelContext& ctx, bool upsample);

// Nearest-neighbour Resize of 8-bit codes (a QOperator model's data
// movement): exact through f32, as MaxPool's 8-bit path.
void resize_int8(KernelContext& ctx, bool upsample) {
  const RunValue& x = ctx.input(0);
  if (attr_string(ctx.node, "mode", "nearest") != "nearest")
    unsupported("Resize of " + describe(x) + " in a mode other than nearest");
  std::vector<float> f(x.numel());
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = x.type == ElemType::U8 ? x.as<uint8_t>()[i] : x.as<int8_t>()[i];
  const RunValue xf{ElemType::F32, x.shape, make_blob(f.data(), f.size() * 4)};
  std::vector<const RunValue*> in = {&xf};
  for (size_t i = 1; i < ctx.num_inputs(); ++i) in.push_back(ctx.has_input(i) ? &ctx.input(i) : nullptr);
  std::vector<RunValue> outs(1);
  KernelContext sub(ctx.node, ctx.opset, ctx.threads, ctx.pool(), in, outs);
  resize(sub, upsample);
  const RunValue& y = outs[0];
  uint8_t* o = ctx.alloc_output(0, x.type, y.shape);
  for (uint64_t i = 0; i < y.numel(); ++i)
    o[i] = x.type == ElemType::U8 ? static_cast<uint8_t>(y.as<float>()[i])
                                  : static_cast<uint8_t>(static_cast<int8_t>(y.as<float>()[i]));
}

void resize(KernelContext& ctx, bool upsample) {
  const RunValue& x = ctx.input(0);
  if (x.type == ElemType::U8 || x.type == ElemType::I8) return resize_int8(ctx, upsample);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  ResizeAttrs a;
  a.mode = attr_string(ctx.node, "mode", "nearest");
  std::vector<float> scales;
  std::vector<int64_t> sizes;
  std::vector<double> roi;
  if (upsample || ctx.opset < 11) {
    // Upsample and Resize-10: asymmetric coordinates, scales only.
    a.coord = "asymmetric";
    a.nearest = "floor";
    a.simple = !upsample;
    if (upsample && ctx.opset < 9)
      scales = attr_floats(ctx.node, "scales");
    else
      scales = floats_of(ctx.input(1), "scales");
    if (a.mode == "bilinear") a.mode = "linear";
  } else {
    a.coord = attr_string(ctx.node, "coordinate_transformation_mode", "half_pixel");
    a.nearest = attr_string(ctx.node, "nearest_mode", "round_prefer_floor");
    a.cubic_a = attr_float(ctx.node, "cubic_coeff_a", -0.75f);
    a.exclude_outside = attr_int(ctx.node, "exclude_outside", 0) != 0;
    a.extrapolation = attr_float(ctx.node, "extrapolation_value", 0.f);
    a.antialias = ctx.opset >= 18 && attr_int(ctx.node, "antialias", 0) != 0;
    if (ctx.has_input(1) && ctx.input(1).numel() > 0) {
      const std::vector<float> rf = floats_of(ctx.input(1), "roi");
      roi.assign(rf.begin(), rf.end());
    }
    if (ctx.has_input(2) && ctx.input(2).numel() > 0) scales = floats_of(ctx.input(2), "scales");
    if (ctx.has_input(3) && ctx.input(3).numel() > 0) sizes = to_ints(ctx.input(3), "sizes");
    if (scales.empty() == sizes.empty()) throw Error("exactly one of scales and sizes must be given");
  }
  // Scales and sizes may name some axes only (opset 18).
  std::vector<int64_t> axes = ctx.opset >= 18 ? attr_ints(ctx.node, "axes") : std::vector<int64_t>{};
  if (axes.empty())
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  for (int64_t& ax : axes) ax = norm_axis(ax, r);
  const size_t given = scales.empty() ? sizes.size() : scales.size();
  if (given != axes.size())
    throw Error((scales.empty() ? "sizes" : "scales") + std::string(" has ") + std::to_string(given) +
                " entries for " + std::to_string(axes.size()) + " axes of " + describe(x));
  std::vector<double> scale(r, 1.0);
  a.from_scales = !scales.empty();
  std::vector<int64_t> out = x.shape;
  if (!scales.empty()) {
    for (size_t i = 0; i < axes.size(); ++i) {
      if (scales[i] <= 0) throw Error("scales must be positive");
      scale[axes[i]] = scales[i];
      out[axes[i]] = static_cast<int64_t>(std::floor(static_cast<double>(x.shape[axes[i]]) * scales[i]));
    }
  } else {
    const std::string policy = attr_string(ctx.node, "keep_aspect_ratio_policy", "stretch");
    if (policy == "stretch") {
      for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = sizes[i];
    } else if (policy == "not_larger" || policy == "not_smaller") {
      double s = policy == "not_larger" ? 1e300 : 0;
      for (size_t i = 0; i < axes.size(); ++i) {
        const double si = static_cast<double>(sizes[i]) / static_cast<double>(x.shape[axes[i]]);
        s = policy == "not_larger" ? std::min(s, si) : std::max(s, si);
      }
      for (size_t i = 0; i < axes.size(); ++i)
        out[axes[i]] = static_cast<int64_t>(std::round(s * static_cast<double>(x.shape[axes[i]])));
    } else {
      unsupported("Resize keep_aspect_ratio_policy='" + policy + "'");
    }
    for (size_t i = 0; i < axes.size(); ++i)
      scale[axes[i]] = static_cast<double>(out[axes[i]]) / static_cast<double>(x.shape[axes[i]]);
  }
  if (!roi.empty() && roi.size() != 2 * axes.size()) throw Error("roi must have 2 entries per axis");
  // Taps per axis and output position.
  std::vector<std::vector<std::vector<Tap>>> taps(r);
  for (int64_t d = 0; d < r; ++d) {
    double rs = 0, re = 1;
    for (size_t i = 0; i < axes.size(); ++i)
      if (axes[i] == d && !roi.empty()) {
        rs = roi[i];
        re = roi[axes.size() + i];
      }
    taps[d].resize(out[d]);
    const bool identity = out[d] == x.shape[d] && a.coord != "tf_crop_and_resize";
    for (int64_t o = 0; o < out[d]; ++o) {
      if (identity && a.mode == "nearest") {
        taps[d][o] = {{o, 1.f}};
        continue;
      }
      const double xo = to_original(a, static_cast<double>(o), scale[d], x.shape[d], out[d], rs, re);
      taps[d][o] = taps_for(a, xo, scale[d], x.shape[d]);
    }
  }
  if (x.type != ElemType::F32) unsupported("Resize of " + describe(x));
  float* o = ctx.alloc<float>(0, ElemType::F32, out);
  const float* p = x.as<float>();
  const std::vector<int64_t> xs = strides_of(x.shape);
  const int64_t inner = r ? out[r - 1] : 1;
  const int64_t rows = inner ? static_cast<int64_t>(numel_of(out)) / inner : 0;
  const float extrap = a.extrapolation;
  // Leading axes that map every output position to the same input position
  // with weight 1 are batch-like: the last two axes are then resized per plane.
  auto identity_axis = [&](int64_t d) {
    if (out[d] != x.shape[d]) return false;
    for (int64_t o2 = 0; o2 < out[d]; ++o2) {
      float w = 0;
      for (const Tap& tp : taps[d][o2]) {
        if (tp.index < 0) return false;
        if (tp.weight != 0.f && tp.index != o2) return false;
        if (tp.index == o2) w += tp.weight;
      }
      if (w != 1.f) return false;
    }
    return true;
  };
  bool planar = r >= 2;
  for (int64_t d = 0; d + 2 < r && planar; ++d) planar = identity_axis(d);
  if (planar) {
    const int64_t H = x.shape[r - 2], W = x.shape[r - 1], OH = out[r - 2], OW = out[r - 1];
    const int64_t planes = (H * W) != 0 ? static_cast<int64_t>(x.numel()) / (H * W) : 0;
    const auto& th = taps[r - 2];
    const auto& tw = taps[r - 1];
    parallel_for(ctx.threads, planes * OH, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t plane = row / OH, oh = row % OH;
        const float* src = p + plane * H * W;
        float* dst = o + plane * OH * OW + oh * OW;
        for (int64_t ow = 0; ow < OW; ++ow) {
          float acc = 0;
          bool outside = false;
          for (const Tap& a1 : th[oh]) {
            if (a1.index < 0) {
              outside = true;
              break;
            }
            for (const Tap& b1 : tw[ow]) {
              if (b1.index < 0) {
                outside = true;
                break;
              }
              acc += a1.weight * b1.weight * src[a1.index * W + b1.index];
            }
          }
          dst[ow] = outside ? extrap : acc;
        }
      }
    });
    return;
  }
  parallel_for(ctx.threads, rows, 16, [&](int64_t lo, int64_t hi) {
    std::vector<int64_t> pos(r + 1, 0);
    std::vector<size_t> k(r + 1, 0);
    for (int64_t row = lo; row < hi; ++row) {
      int64_t rem = row;
      for (int64_t d = r - 2; d >= 0; --d) {
        pos[d] = rem % out[d];
        rem /= out[d];
      }
      for (int64_t c = 0; c < inner; ++c) {
        pos[r - 1] = c;
        // Sum over the product of every axis's taps.
        double acc = 0;
        bool outside = false;
        std::fill(k.begin(), k.end(), 0);
        while (true) {
          int64_t off = 0;
          float w = 1.f;
          for (int64_t d = 0; d < r; ++d) {
            const Tap& t = taps[d][pos[d]][k[d]];
            if (t.index < 0) outside = true;
            off += t.index * xs[d];
            w *= t.weight;
          }
          if (outside) break;
          acc += static_cast<double>(w) * p[off];
          int64_t d = r - 1;
          for (; d >= 0; --d) {
            if (++k[d] < taps[d][pos[d]].size()) break;
            k[d] = 0;
          }
          if (d < 0) break;
        }
        o[row * inner + c] = outside ? extrap : static_cast<float>(acc);
      }
    }
  });
}

}  // namespace

void register_ops_resize(KernelTable& t) {
  t.add_fn("", "Resize", 10, kMaxOpset, [](KernelContext& ctx) { resize(ctx, false); });
  t.add_fn("", "Upsample", 7, 9, [](KernelContext& ctx) { resize(ctx, true); });
}

}  // namespace qforge::cpu
