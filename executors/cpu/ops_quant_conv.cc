// ConvInteger and QLinearConv (executors/cpu/README.md): the zero-point-shifted
// integers convolved by the f32 Conv kernel (oneDNN), split along the input
// channels so that every partial sum stays below 2^24 (exact in f32), summed
// in int32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "kernel.h"

namespace qforge::cpu {

namespace {

int32_t q_at(const RunValue& v, uint64_t i) {
  switch (v.type) {
    case ElemType::U8: return v.as<uint8_t>()[i];
    case ElemType::I8: return v.as<int8_t>()[i];
    default: unsupported("integer convolution of " + describe(v));
  }
}

class IntConvKernel : public Kernel {
 public:
  IntConvKernel(const KernelInit& init, bool qlinear)
      : node_(init.node), opset_(init.opset), qlinear_(qlinear) {
    const KernelTable::Entry* conv = kernel_table().find("", "Conv", 11);
    if (!conv) throw Error("the Conv kernel is missing");
    factory_ = conv->factory;
  }

  void run(KernelContext& ctx) override {
    // Inputs: ConvInteger (x, w, x_zero_point, w_zero_point);
    // QLinearConv (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B).
    const size_t ix = 0, iw = qlinear_ ? 3 : 1, izx = 2, izw = qlinear_ ? 5 : 3;
    const RunValue& x = ctx.input(ix);
    const RunValue& w = ctx.input(iw);
    if (x.shape.size() < 3 || w.shape.size() != x.shape.size())
      throw Error("x " + describe(x) + " and w " + describe(w) + " must have one rank, at least 3");
    const int64_t group = attr_int(ctx.node, "group", 1);
    const int64_t M = w.shape[0], Cg = w.shape[1];
    const int32_t zx = ctx.has_input(izx) ? q_at(ctx.input(izx), 0) : 0;
    if (ctx.has_input(izx) && ctx.input(izx).numel() != 1) unsupported("a per-channel x zero point");
    std::vector<int32_t> zw(M, 0);
    if (ctx.has_input(izw)) {
      const RunValue& z = ctx.input(izw);
      if (z.numel() != 1 && z.numel() != static_cast<uint64_t>(M))
        throw Error("w_zero_point " + describe(z) + " must be a scalar or have one value per output channel");
      for (int64_t m = 0; m < M; ++m) zw[m] = q_at(z, z.numel() == 1 ? 0 : m);
    }
    // Shifted float copies.
    const uint64_t nx = x.numel(), nw = w.numel();
    std::vector<float> xf(nx), wf(nw);
    float max_x = 0, max_w = 0;
    for (uint64_t i = 0; i < nx; ++i) {
      xf[i] = static_cast<float>(q_at(x, i) - zx);
      max_x = std::max(max_x, std::fabs(xf[i]));
    }
    const uint64_t per_m = nw / std::max<int64_t>(1, M);
    for (uint64_t i = 0; i < nw; ++i) {
      wf[i] = static_cast<float>(q_at(w, i) - zw[i / per_m]);
      max_w = std::max(max_w, std::fabs(wf[i]));
    }
    int64_t ksize = 1;
    for (size_t d = 2; d < w.shape.size(); ++d) ksize *= w.shape[d];
    const double per = std::max(1.0, static_cast<double>(max_x) * static_cast<double>(max_w) * ksize);
    const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>((1 << 24) / per));
    if (chunk < Cg && group != 1) unsupported("an exact grouped integer convolution this large");
    std::vector<int32_t> acc;
    std::vector<int64_t> out_shape;
    for (int64_t c0 = 0; c0 < Cg; c0 += chunk) {
      const int64_t cc = std::min(chunk, Cg - c0);
      RunValue xs = slice_channels(xf, x.shape, c0, cc, chunk < Cg);
      RunValue ws = slice_channels(wf, w.shape, c0, cc, chunk < Cg);
      std::vector<RunValue> outs(1);
      KernelContext sub(node_, opset_, ctx.threads, ctx.pool(), {&xs, &ws}, outs);
      kernel_for(xs.shape, ws.shape).run(sub);
      const float* y = outs[0].as<float>();
      if (acc.empty()) {
        out_shape = outs[0].shape;
        acc.assign(outs[0].numel(), 0);
      }
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += static_cast<int32_t>(y[i]);
    }
    if (!qlinear_) {
      std::memcpy(ctx.alloc_output(0, ElemType::I32, out_shape), acc.data(), acc.size() * 4);
      return;
    }
    // y = saturate(round((acc + B) * x_scale * w_scale[m] / y_scale) + y_zero_point)
    const float sx = ctx.input(1).as<float>()[0], sy = ctx.input(6).as<float>()[0];
    const RunValue& sw = ctx.input(4);
    if (sw.type != ElemType::F32 || (sw.numel() != 1 && sw.numel() != static_cast<uint64_t>(M)))
      throw Error("w_scale " + describe(sw) + " must be f32, a scalar or one value per output channel");
    const RunValue& zy = ctx.input(7);
    const int32_t zyv = q_at(zy, 0);
    const int32_t lo = zy.type == ElemType::U8 ? 0 : -128, hi = zy.type == ElemType::U8 ? 255 : 127;
    const int32_t* bias = ctx.has_input(8) ? ctx.input(8).as<int32_t>() : nullptr;
    const int64_t spatial = static_cast<int64_t>(acc.size()) / (out_shape[0] * M);
    uint8_t* o = ctx.alloc_output(0, zy.type, out_shape);
    for (size_t i = 0; i < acc.size(); ++i) {
      const int64_t m = (static_cast<int64_t>(i) / spatial) % M;
      const float s = sx * sw.as<float>()[sw.numel() == 1 ? 0 : m] / sy;
      const float v =
          std::nearbyint(static_cast<float>(acc[i] + (bias ? bias[m] : 0)) * s) + static_cast<float>(zyv);
      const int32_t q = static_cast<int32_t>(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi)));
      if (zy.type == ElemType::U8)
        o[i] = static_cast<uint8_t>(q);
      else
        reinterpret_cast<int8_t*>(o)[i] = static_cast<int8_t>(q);
    }
  }

 private:
  // Channels [c0, c0 + n) of x ([N, C, ...], axis 1) or w ([M, C/g, ...], axis 1).
  static RunValue slice_channels(const std::vector<float>& v, const std::vector<int64_t>& shape, int64_t c0,
                                 int64_t n, bool slice) {
    std::vector<int64_t> sh = shape;
    if (!slice) return RunValue{ElemType::F32, sh, make_blob(v.data(), v.size() * 4)};
    sh[1] = n;
    int64_t inner = 1;
    for (size_t d = 2; d < shape.size(); ++d) inner *= shape[d];
    std::vector<float> out(static_cast<size_t>(shape[0] * n * inner));
    for (int64_t a = 0; a < shape[0]; ++a)
      std::memcpy(&out[a * n * inner], &v[(a * shape[1] + c0) * inner], n * inner * 4);
    return RunValue{ElemType::F32, sh, make_blob(out.data(), out.size() * 4)};
  }

  Kernel& kernel_for(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws) {
    std::vector<int64_t> key = xs;
    key.insert(key.end(), ws.begin(), ws.end());
    auto& k = kernels_[key];
    if (!k) k = factory_(KernelInit{node_, 11, 1, {}, {}});
    return *k;
  }

  const Node& node_;
  int64_t opset_;
  bool qlinear_;
  KernelFactory factory_;
  std::map<std::vector<int64_t>, std::unique_ptr<Kernel>> kernels_;
};

}  // namespace

void register_ops_quant_conv(KernelTable& t) {
  t.add("", "ConvInteger", 10, kMaxOpset,
        [](const KernelInit& init) { return std::make_unique<IntConvKernel>(init, false); });
  t.add("", "QLinearConv", 10, kMaxOpset,
        [](const KernelInit& init) { return std::make_unique<IntConvKernel>(init, true); });
}

}  // namespace qforge::cpu
