// Conv and ConvTranspose through oneDNN (executors/cpu/README.md): grouped,
// depthwise, dilated, 1-D to 3-D; constant weights are reordered into the
// primitive's preferred layout once per input shape.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "dnnl_util.h"
#include "kernel.h"

namespace qforge::cpu {

dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::memory reorder_to(const dnnl::memory& src, const dnnl::memory::desc& md) {
  if (src.get_desc() == md) {
    // Still copy: the source may be a view of bytes that do not outlive us.
    dnnl::memory dst(md, dnnl_engine());
    std::memcpy(dst.get_data_handle(), src.get_data_handle(), md.get_size());
    return dst;
  }
  dnnl::memory dst(md, dnnl_engine());
  dnnl::stream s(dnnl_engine());
  run_primitive(dnnl::reorder(src, dst, user_scratchpad()), s, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}});
  s.wait();
  return dst;
}

void run_primitive(const dnnl::primitive& prim, dnnl::stream& s, std::unordered_map<int, dnnl::memory> args) {
  const dnnl_memory_desc_t* md =
      dnnl_primitive_desc_query_md(prim.get_primitive_desc(), dnnl_query_scratchpad_md, 0);
  if (md && md->ndims > 0) {
    const dnnl::memory::desc d(*md);
    if (d.get_size() > 0) args[DNNL_ARG_SCRATCHPAD] = dnnl::memory(d, dnnl_engine());
  }
  prim.execute(s, args);
}

void dnnl_failed(const dnnl::error& e, const std::string& what) {
  throw Error(what + ": oneDNN: " + e.what() + " (status " + std::to_string(static_cast<int>(e.status)) +
              ")");
}

namespace {

using dt = dnnl::memory::data_type;

struct ConvAttrs {
  std::string auto_pad;
  std::vector<int64_t> dilations, kernel_shape, pads, strides, output_padding, output_shape;
  int64_t group = 1;
};

ConvAttrs read_attrs(const Node& n, bool transpose) {
  ConvAttrs a;
  a.auto_pad = attr_string(n, "auto_pad", "NOTSET");
  if (a.auto_pad != "NOTSET" && a.auto_pad != "SAME_UPPER" && a.auto_pad != "SAME_LOWER" &&
      a.auto_pad != "VALID")
    throw Error("auto_pad '" + a.auto_pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  a.dilations = attr_ints(n, "dilations");
  a.kernel_shape = attr_ints(n, "kernel_shape");
  a.pads = attr_ints(n, "pads");
  a.strides = attr_ints(n, "strides");
  a.group = attr_int(n, "group", 1);
  if (a.group < 1) throw Error("group must be at least 1");
  if (transpose) {
    a.output_padding = attr_ints(n, "output_padding");
    a.output_shape = attr_ints(n, "output_shape");
  }
  return a;
}

// Spatial geometry of one convolution at one input shape.
struct Geometry {
  std::vector<int64_t> k, s, d, pb, pe, out;  // per spatial dim; d as ONNX (1 = dense)
};

void fill_defaults(const ConvAttrs& a, size_t nsp, const std::vector<int64_t>& wshape, Geometry& g) {
  g.k = a.kernel_shape.empty() ? std::vector<int64_t>(wshape.begin() + 2, wshape.end()) : a.kernel_shape;
  g.s = a.strides.empty() ? std::vector<int64_t>(nsp, 1) : a.strides;
  g.d = a.dilations.empty() ? std::vector<int64_t>(nsp, 1) : a.dilations;
  if (g.k.size() != nsp || g.s.size() != nsp || g.d.size() != nsp)
    throw Error("kernel_shape, strides and dilations must have one entry per spatial dimension (" +
                std::to_string(nsp) + ")");
  for (size_t i = 0; i < nsp; ++i)
    if (g.k[i] != wshape[2 + i])
      throw Error("kernel_shape " + shape_str(g.k) + " does not match the weight " + shape_str(wshape));
  g.pb.assign(nsp, 0);
  g.pe.assign(nsp, 0);
  if (a.auto_pad == "NOTSET" && !a.pads.empty()) {
    if (a.pads.size() != 2 * nsp) throw Error("pads must have 2 entries per spatial dimension");
    for (size_t i = 0; i < nsp; ++i) {
      g.pb[i] = a.pads[i];
      g.pe[i] = a.pads[nsp + i];
    }
  }
}

Geometry conv_geometry(const ConvAttrs& a, const std::vector<int64_t>& x, const std::vector<int64_t>& w) {
  const size_t nsp = x.size() - 2;
  Geometry g;
  fill_defaults(a, nsp, w, g);
  g.out.resize(nsp);
  for (size_t i = 0; i < nsp; ++i) {
    const int64_t in = x[2 + i], ek = (g.k[i] - 1) * g.d[i] + 1;
    if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
      const int64_t out = (in + g.s[i] - 1) / g.s[i];
      const int64_t total = std::max<int64_t>(0, (out - 1) * g.s[i] + ek - in);
      g.pb[i] = a.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      g.pe[i] = total - g.pb[i];
    }
    const int64_t span = in + g.pb[i] + g.pe[i] - ek;
    if (span < 0) throw Error("the kernel is larger than the padded input " + shape_str(x));
    g.out[i] = span / g.s[i] + 1;
  }
  return g;
}

Geometry deconv_geometry(const ConvAttrs& a, const std::vector<int64_t>& x, const std::vector<int64_t>& w) {
  const size_t nsp = x.size() - 2;
  Geometry g;
  fill_defaults(a, nsp, w, g);
  std::vector<int64_t> op = a.output_padding.empty() ? std::vector<int64_t>(nsp, 0) : a.output_padding;
  if (op.size() != nsp) throw Error("output_padding must have one entry per spatial dimension");
  std::vector<int64_t> want = a.output_shape;
  if (want.size() == nsp + 2) want.erase(want.begin(), want.begin() + 2);
  if (!want.empty() && want.size() != nsp)
    throw Error("output_shape must have one entry per spatial dimension");
  g.out.resize(nsp);
  for (size_t i = 0; i < nsp; ++i) {
    const int64_t in = x[2 + i], ek = (g.k[i] - 1) * g.d[i] + 1;
    const int64_t full = g.s[i] * (in - 1) + op[i] + ek;
    if (!want.empty() || a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
      const int64_t out = !want.empty() ? want[i] : in * g.s[i];
      const int64_t total = full - out;  // negative: the output grows past the full size
      // Halves rounded down (towards -infinity, as ONNX's reference computes them).
      const int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);
      if (a.auto_pad == "SAME_UPPER") {
        g.pb[i] = half;
        g.pe[i] = total - half;
      } else {
        g.pb[i] = total - half;
        g.pe[i] = half;
      }
    }
    g.out[i] = full - g.pb[i] - g.pe[i];
    // oneDNN's deconvolution has no output padding: it is negative end padding.
    g.pe[i] -= op[i];
    if (g.out[i] <= 0) throw Error("the output would be empty for input " + shape_str(x));
  }
  return g;
}

class ConvKernel : public Kernel {
 public:
  ConvKernel(const KernelInit& init, bool transpose)
      : attrs_(read_attrs(init.node, transpose)), transpose_(transpose) {
    if (init.constants.size() > 1 && init.constants[1]) w_const_ = *init.constants[1];
    if (init.constants.size() > 2 && init.constants[2]) b_const_ = *init.constants[2];
  }

  void run(KernelContext& ctx) override {
    const RunValue& x = ctx.input(0);
    const RunValue& w = ctx.input(1);
    if (x.type != ElemType::F32 || w.type != ElemType::F32)
      unsupported(std::string(transpose_ ? "ConvTranspose" : "Conv") + " of " + describe(x) +
                  " with weight " + describe(w));
    if (x.shape.size() < 3 || x.shape.size() > 5)
      unsupported("a " + std::to_string(x.shape.size()) + "-D input");
    if (w.shape.size() != x.shape.size())
      throw Error("weight " + describe(w) + " must have the rank of input " + describe(x));
    const bool has_b = ctx.has_input(2);
    if (pointwise(x, w)) return run_pointwise(ctx, x, w, has_b);
    ShapeKey key{x.shape};
    if (!w_const_.data) key.dims.insert(key.dims.end(), w.shape.begin(), w.shape.end());
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, build(x, w, has_b)).first;
    Prepared& p = it->second;

    float* final_out = ctx.alloc<float>(0, ElemType::F32, p.full_shape);
    // Negative begin padding (ConvTranspose's output_shape past the full
    // output): the primitive writes the covered part into a scratch buffer.
    std::shared_ptr<Buffer> inner_buf;
    float* o = final_out;
    if (!p.shift.empty()) {
      inner_buf = ctx.pool().get(numel_of(p.out_shape) * sizeof(float));
      o = reinterpret_cast<float*>(inner_buf->mutable_data());
    }
    try {
      dnnl::stream s(dnnl_engine());
      dnnl::memory src = wrap(p.user_src, x.data->data());
      dnnl::memory dst = wrap(p.user_dst, o);
      // Blocked layouts the primitive prefers: reorder in and out.
      // (scratch buffers from the pool, returned after this node).
      std::shared_ptr<Buffer> src_buf, dst_buf;
      if (p.src_reorder) {
        src_buf = ctx.pool().get(p.src_md.get_size());
        dnnl::memory blocked(p.src_md, dnnl_engine(), src_buf->mutable_data());
        run_primitive(p.src_reorder, s, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, blocked}});
        src = blocked;
      }
      dnnl::memory user_dst = dst;
      if (p.dst_reorder) {
        dst_buf = ctx.pool().get(p.dst_md.get_size());
        dst = dnnl::memory(p.dst_md, dnnl_engine(), dst_buf->mutable_data());
      }
      dnnl::memory weights = p.weights;
      if (!w_const_.data) weights = reorder_to(wrap(p.user_w, w.data->data()), p.pd_w);
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
      if (has_b) {
        const RunValue& b = ctx.input(2);
        if (b.type != ElemType::F32 || b.numel() != static_cast<uint64_t>(p.out_shape[1]))
          throw Error("bias " + describe(b) + " must be f32 with one value per output channel");
        args[DNNL_ARG_BIAS] = b_const_.data ? p.bias : wrap(p.bias_md, b.data->data());
      }
      run_primitive(p.prim, s, args);
      if (p.dst_reorder) run_primitive(p.dst_reorder, s, {{DNNL_ARG_FROM, dst}, {DNNL_ARG_TO, user_dst}});
      s.wait();
    } catch (const dnnl::error& e) {
      dnnl_failed(e, "running the convolution");
    }
    if (!p.shift.empty()) place_shifted(p, o, final_out, has_b ? ctx.input(2).as<float>() : nullptr);
  }

 private:
  // A 1×1 convolution, stride 1, no padding, one group: per image, the
  // product W [M, C] · X [C, H·W] on the plain layout (no reorders).
  bool pointwise(const RunValue& x, const RunValue& w) const {
    if (transpose_ || attrs_.group != 1 || attrs_.auto_pad == "SAME_UPPER" || attrs_.auto_pad == "SAME_LOWER")
      return false;
    for (size_t d = 2; d < w.shape.size(); ++d)
      if (w.shape[d] != 1) return false;
    for (int64_t v : attrs_.strides)
      if (v != 1) return false;
    for (int64_t v : attrs_.pads)
      if (v != 0) return false;
    return w.shape[1] == x.shape[1];
  }

  void run_pointwise(KernelContext& ctx, const RunValue& x, const RunValue& w, bool has_b) {
    const int64_t N = x.shape[0], C = x.shape[1], M = w.shape[0];
    const int64_t S = static_cast<int64_t>(x.numel()) / std::max<int64_t>(1, N * C);
    std::vector<int64_t> out = x.shape;
    out[1] = M;
    float* o = ctx.alloc<float>(0, ElemType::F32, out);
    const float* bias = nullptr;
    if (has_b) {
      const RunValue& b = ctx.input(2);
      if (b.type != ElemType::F32 || b.numel() != static_cast<uint64_t>(M))
        throw Error("bias " + describe(b) + " must be f32 with one value per output channel");
      bias = b.as<float>();
    }
    for (int64_t n = 0; n < N; ++n) {
      float* y = o + n * M * S;
      f32_matmul(w.as<float>(), x.as<float>() + n * C * S, y, M, C, S, false);
      if (bias)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t i = 0; i < S; ++i) y[m * S + i] += bias[m];
    }
  }

  struct Prepared {
    dnnl::primitive prim;
    dnnl::memory::desc user_src, user_dst, user_w, pd_w, bias_md;
    dnnl::memory weights, bias;
    dnnl::reorder src_reorder, dst_reorder;  // null when the primitive takes the plain layout
    dnnl::memory::desc src_md, dst_md;
    std::vector<int64_t> out_shape;   // what the primitive writes
    std::vector<int64_t> full_shape;  // the node's output
    std::vector<int64_t> shift;       // per spatial dim, when the two differ (else empty)
  };

  // The node's output: bias (or 0) where nothing contributes, the primitive's
  // output at offset `shift`.
  static void place_shifted(const Prepared& p, const float* inner, float* out, const float* bias) {
    const int64_t N = p.full_shape[0], M = p.full_shape[1];
    const size_t nsp = p.full_shape.size() - 2;
    const uint64_t full_sp = numel_of(p.full_shape) / static_cast<uint64_t>(N * M);
    const uint64_t in_sp = numel_of(p.out_shape) / static_cast<uint64_t>(N * M);
    const std::vector<int64_t> fs = strides_of(p.full_shape);
    for (int64_t nm = 0; nm < N * M; ++nm) {
      float* dst = out + nm * full_sp;
      std::fill(dst, dst + full_sp, bias ? bias[nm % M] : 0.f);
      const float* src = inner + nm * in_sp;
      std::vector<int64_t> pos(nsp + 1, 0);
      for (uint64_t i = 0; i < in_sp; ++i) {
        int64_t off = 0;
        for (size_t d = 0; d < nsp; ++d) off += (pos[d] + p.shift[d]) * fs[2 + d];
        dst[off] = src[i];
        for (size_t d = nsp; d-- > 0;) {
          if (++pos[d] < p.out_shape[2 + d]) break;
          pos[d] = 0;
        }
      }
    }
  }

  Prepared build(const RunValue& x, const RunValue& w, bool has_b) {
    const int64_t N = x.shape[0], C = x.shape[1], g = attrs_.group;
    const size_t nsp = x.shape.size() - 2;
    Geometry geo =
        transpose_ ? deconv_geometry(attrs_, x.shape, w.shape) : conv_geometry(attrs_, x.shape, w.shape);
    int64_t M;
    std::vector<int64_t> wdims, wstrides;
    int64_t ksize = 1;
    for (size_t i = 0; i < nsp; ++i) ksize *= w.shape[2 + i];
    std::vector<int64_t> spatial_strides(nsp);
    {
      int64_t acc = 1;
      for (size_t i = nsp; i-- > 0;) {
        spatial_strides[i] = acc;
        acc *= w.shape[2 + i];
      }
    }
    if (!transpose_) {
      // ONNX [M, C/g, k...] = oneDNN [g, M/g, C/g, k...] (plain).
      M = w.shape[0];
      if (C != w.shape[1] * g)
        throw Error("input " + describe(x) + " has " + std::to_string(C) + " channels, the weight " +
                    describe(w) + " with group " + std::to_string(g) + " expects " +
                    std::to_string(w.shape[1] * g));
      if (M % g)
        throw Error("output channels " + std::to_string(M) + " are not divisible by group " +
                    std::to_string(g));
      if (g > 1) {
        wdims = {g, M / g, C / g};
        wstrides = {(M / g) * (C / g) * ksize, (C / g) * ksize, ksize};
      } else {
        wdims = {M, C};
        wstrides = {C * ksize, ksize};
      }
    } else {
      // ONNX [C, M/g, k...] = oneDNN [g, M/g (o), C/g (i), k...] with strides.
      if (w.shape[0] != C)
        throw Error("input " + describe(x) + " has " + std::to_string(C) + " channels, the weight " +
                    describe(w) + " expects " + std::to_string(w.shape[0]));
      if (C % g) throw Error("input channels are not divisible by group " + std::to_string(g));
      M = w.shape[1] * g;
      const int64_t mg = w.shape[1], cg = C / g;
      if (g > 1) {
        wdims = {g, mg, cg};
        wstrides = {cg * mg * ksize, ksize, mg * ksize};
      } else {
        wdims = {mg, cg};
        wstrides = {ksize, mg * ksize};
      }
    }
    for (size_t i = 0; i < nsp; ++i) {
      wdims.push_back(w.shape[2 + i]);
      wstrides.push_back(spatial_strides[i]);
    }
    Prepared p;
    p.full_shape = {N, M};
    p.full_shape.insert(p.full_shape.end(), geo.out.begin(), geo.out.end());
    for (size_t i = 0; i < nsp; ++i)
      if (geo.pb[i] < 0) {
        p.shift.assign(nsp, 0);
        break;
      }
    if (!p.shift.empty())
      for (size_t i = 0; i < nsp; ++i) {
        if (geo.pb[i] >= 0) continue;
        p.shift[i] = -geo.pb[i];
        geo.out[i] -= p.shift[i];
        geo.pb[i] = 0;
        if (geo.out[i] <= 0) throw Error("output_shape places the whole output in the padding");
      }
    p.out_shape = {N, M};
    p.out_shape.insert(p.out_shape.end(), geo.out.begin(), geo.out.end());
    p.user_src = plain_desc(x.shape);
    p.user_dst = plain_desc(p.out_shape);
    p.user_w = strided_desc(wdims, wstrides);
    dnnl::memory::dims strides(geo.s.begin(), geo.s.end()), dil(nsp), pl(geo.pb.begin(), geo.pb.end()),
        pr(geo.pe.begin(), geo.pe.end());
    for (size_t i = 0; i < nsp; ++i) dil[i] = geo.d[i] - 1;
    dnnl::memory::dims wany(wdims.begin(), wdims.end());
    const dnnl::memory::desc w_any(wany, dt::f32, dnnl::memory::format_tag::any);
    // Source and destination in the layout the primitive prefers (blocked
    // channels: about twice as fast as plain NCHW here), reordered per run.
    const dnnl::memory::desc src_any(dnnl::memory::dims(x.shape.begin(), x.shape.end()), dt::f32,
                                     dnnl::memory::format_tag::any);
    const dnnl::memory::desc dst_any(dnnl::memory::dims(p.out_shape.begin(), p.out_shape.end()), dt::f32,
                                     dnnl::memory::format_tag::any);
    p.bias_md = plain_desc({M});
    try {
      if (!transpose_) {
        auto d = has_b ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                         dnnl::algorithm::convolution_direct, src_any, w_any,
                                                         p.bias_md, dst_any, strides, dil, pl, pr)
                       : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                         dnnl::algorithm::convolution_direct, src_any, w_any,
                                                         dst_any, strides, dil, pl, pr);
        dnnl::convolution_forward::primitive_desc pd(d, user_scratchpad(), dnnl_engine());
        p.pd_w = pd.weights_desc();
        p.prim = dnnl::convolution_forward(pd);
        set_layouts(p, pd.src_desc(), pd.dst_desc());
      } else {
        auto d = has_b ? dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::deconvolution_direct, src_any,
                                                           w_any, p.bias_md, dst_any, strides, dil, pl, pr)
                       : dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::deconvolution_direct, src_any,
                                                           w_any, dst_any, strides, dil, pl, pr);
        dnnl::deconvolution_forward::primitive_desc pd(d, user_scratchpad(), dnnl_engine());
        p.pd_w = pd.weights_desc();
        p.prim = dnnl::deconvolution_forward(pd);
        set_layouts(p, pd.src_desc(), pd.dst_desc());
      }
      if (w_const_.data) p.weights = reorder_to(wrap(p.user_w, w_const_.data->data()), p.pd_w);
      if (has_b && b_const_.data) {
        if (b_const_.type != ElemType::F32 || b_const_.numel() != static_cast<uint64_t>(M))
          throw Error("bias " + describe(b_const_) + " must be f32 with one value per output channel");
        p.bias = reorder_to(wrap(p.bias_md, b_const_.data->data()), p.bias_md);
      }
    } catch (const dnnl::error& e) {
      dnnl_failed(e, "preparing the convolution of " + describe(x) + " with weight " + describe(w));
    }
    return p;
  }

  static void set_layouts(Prepared& p, const dnnl::memory::desc& src, const dnnl::memory::desc& dst) {
    if (src != p.user_src) {
      p.src_md = src;
      p.src_reorder = dnnl::reorder(
          dnnl::reorder::primitive_desc(dnnl_engine(), p.user_src, dnnl_engine(), src, user_scratchpad()));
    }
    if (dst != p.user_dst) {
      p.dst_md = dst;
      p.dst_reorder = dnnl::reorder(
          dnnl::reorder::primitive_desc(dnnl_engine(), dst, dnnl_engine(), p.user_dst, user_scratchpad()));
    }
  }

  ConvAttrs attrs_;
  bool transpose_;
  RunValue w_const_, b_const_;
  std::unordered_map<ShapeKey, Prepared, ShapeKeyHash> cache_;
};

}  // namespace

void register_ops_conv(KernelTable& t) {
  t.add("", "Conv", 1, kMaxOpset,
        [](const KernelInit& init) { return std::make_unique<ConvKernel>(init, false); });
  t.add("", "ConvTranspose", 1, kMaxOpset,
        [](const KernelInit& init) { return std::make_unique<ConvKernel>(init, true); });
}

}  // namespace qforge::cpu
