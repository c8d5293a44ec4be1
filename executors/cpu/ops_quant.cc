// Quantization operators (executors/cpu/README.md): QuantizeLinear and
// DequantizeLinear (per-tensor, per-axis, blocked; 4-, 8- and 16-bit; ai.onnx
// and com.microsoft), DynamicQuantizeLinear, MatMulInteger, QLinearMatMul,
// ConvInteger, QLinearConv, and ONNX Runtime's com.microsoft MatMulNBits,
// DynamicQuantizeMatMul, QLinearAdd, QLinearMul.
//
// Integer products go through oneDNN's f32 matmul/convolution on the
// zero-point-shifted integers, split along the reduced dimension so that every
// partial sum stays below 2^24 (exact in f32), then summed in int32: exact
// results from the library's kernels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "broadcast.h"
#include "dnnl_util.h"
#include "kernel.h"
#include "qforge/half.h"

namespace qforge::cpu {

namespace {

bool quant_type(ElemType t) {
  return t == ElemType::U8 || t == ElemType::I8 || t == ElemType::U16 || t == ElemType::I16 ||
         t == ElemType::U4 || t == ElemType::I4 || t == ElemType::I32;
}

void range_of(ElemType t, int64_t& lo, int64_t& hi) {
  switch (t) {
    case ElemType::U8: lo = 0, hi = 255; return;
    case ElemType::I8: lo = -128, hi = 127; return;
    case ElemType::U16: lo = 0, hi = 65535; return;
    case ElemType::I16: lo = -32768, hi = 32767; return;
    case ElemType::U4: lo = 0, hi = 15; return;
    case ElemType::I4: lo = -8, hi = 7; return;
    case ElemType::I32:
      lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
      return;
    default: unsupported(std::string("quantized type ") + name_of(t));
  }
}

int32_t get_q(const uint8_t* p, ElemType t, uint64_t i) {
  switch (t) {
    case ElemType::U8: return p[i];
    case ElemType::I8: return reinterpret_cast<const int8_t*>(p)[i];
    case ElemType::U16: return reinterpret_cast<const uint16_t*>(p)[i];
    case ElemType::I16: return reinterpret_cast<const int16_t*>(p)[i];
    case ElemType::I32: return reinterpret_cast<const int32_t*>(p)[i];
    case ElemType::U4: return (i & 1) ? p[i / 2] >> 4 : p[i / 2] & 0xf;
    case ElemType::I4: {
      int v = (i & 1) ? p[i / 2] >> 4 : p[i / 2] & 0xf;
      return v >= 8 ? v - 16 : v;
    }
    default: unsupported(std::string("quantized type ") + name_of(t));
  }
}

void set_q(uint8_t* p, ElemType t, uint64_t i, int32_t v) {
  switch (t) {
    case ElemType::U8: p[i] = static_cast<uint8_t>(v); return;
    case ElemType::I8: reinterpret_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); return;
    case ElemType::U16: reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v); return;
    case ElemType::I16: reinterpret_cast<int16_t*>(p)[i] = static_cast<int16_t>(v); return;
    case ElemType::I32: reinterpret_cast<int32_t*>(p)[i] = v; return;
    case ElemType::U4:
    case ElemType::I4: {
      const uint8_t nib = static_cast<uint8_t>(v) & 0xf;
      uint8_t& b = p[i / 2];
      b = (i & 1) ? static_cast<uint8_t>((b & 0x0f) | (nib << 4)) : static_cast<uint8_t>((b & 0xf0) | nib);
      return;
    }
    default: unsupported(std::string("quantized type ") + name_of(t));
  }
}

// Float elements (f32, f16, bf16) as f32.
std::vector<float> as_f32(const RunValue& v, const char* what) {
  std::vector<float> out(v.numel());
  switch (v.type) {
    case ElemType::F32: std::memcpy(out.data(), v.data->data(), out.size() * 4); break;
    case ElemType::F16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = fp16_to_fp32(v.as<uint16_t>()[i]);
      break;
    case ElemType::BF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_fp32(v.as<uint16_t>()[i]);
      break;
    default: throw Error(std::string(what) + " must be float, found " + describe(v));
  }
  return out;
}

// Where each element's scale and zero point are: per tensor, per axis, or per
// block along the axis (docs: ONNX QuantizeLinear/DequantizeLinear).
struct QParams {
  int64_t outer = 1, dim = 1, inner = 1, block = 0;
  enum Kind { Tensor, Axis, Blocked } kind = Tensor;
  uint64_t index(uint64_t i) const {
    if (kind == Tensor) return 0;
    const uint64_t a = (i / inner) % dim;
    if (kind == Axis) return a;
    const uint64_t o = i / (inner * dim), in = i % inner;
    const uint64_t nb = (dim + block - 1) / block;
    return (o * nb + a / block) * inner + in;
  }
};

QParams qparams(const Node& n, int64_t opset, const std::vector<int64_t>& shape, const RunValue& scale) {
  QParams q;
  if (scale.numel() == 1 && scale.shape.size() <= 1) return q;
  const int64_t r = static_cast<int64_t>(shape.size());
  const int64_t axis = norm_axis(attr_int(n, "axis", 1), r);
  q.block = opset >= 21 ? attr_int(n, "block_size", 0) : 0;
  for (int64_t d = 0; d < r; ++d) {
    if (d < axis)
      q.outer *= shape[d];
    else if (d == axis)
      q.dim = shape[d];
    else
      q.inner *= shape[d];
  }
  if (q.block > 0) {
    q.kind = QParams::Blocked;
    if (static_cast<int64_t>(scale.shape.size()) != r)
      throw Error("blocked scale " + describe(scale) + " must have the input's rank " + std::to_string(r));
    for (int64_t d = 0; d < r; ++d) {
      const int64_t want = d == axis ? (shape[d] + q.block - 1) / q.block : shape[d];
      if (scale.shape[d] != want)
        throw Error("blocked scale " + describe(scale) + " does not match input " + shape_str(shape) +
                    " with block_size " + std::to_string(q.block) + " on axis " + std::to_string(axis));
    }
    return q;
  }
  if (scale.shape.size() != 1 || scale.shape[0] != q.dim)
    throw Error("per-axis scale " + describe(scale) + " must be 1-D of size " + std::to_string(q.dim) +
                " (axis " + std::to_string(axis) + " of " + shape_str(shape) + ")");
  q.kind = QParams::Axis;
  return q;
}

float round_half_even(float v) { return std::nearbyint(v); }

void quantize_linear(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& scale = ctx.input(1);
  ElemType out_t = ElemType::U8;
  if (ctx.has_input(2))
    out_t = ctx.input(2).type;
  else if (ctx.opset >= 21 && attr_int(ctx.node, "output_dtype", 0) != 0)
    out_t = *elem_from_onnx(static_cast<int>(attr_int(ctx.node, "output_dtype", 0)));
  if (!quant_type(out_t) || out_t == ElemType::I32)
    unsupported(std::string("QuantizeLinear to ") + name_of(out_t));
  int64_t lo, hi;
  range_of(out_t, lo, hi);
  const QParams q = qparams(ctx.node, ctx.opset, x.shape, scale);
  const std::vector<float> s = as_f32(scale, "y_scale");
  std::vector<float> xf;
  if (x.type == ElemType::I32) {
    xf.resize(x.numel());
    for (size_t i = 0; i < xf.size(); ++i) xf[i] = static_cast<float>(x.as<int32_t>()[i]);
  } else {
    xf = as_f32(x, "x");
  }
  const uint8_t* zp = ctx.has_input(2) ? ctx.input(2).data->data() : nullptr;
  if (zp && ctx.input(2).numel() != scale.numel()) throw Error("y_zero_point must have y_scale's shape");
  uint8_t* o = ctx.alloc_output(0, out_t, x.shape);
  const uint64_t n = x.numel();
  if (out_t == ElemType::U4 || out_t == ElemType::I4) std::memset(o, 0, bytes_of(out_t, n));
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t k = q.index(i);
    const float z = zp ? static_cast<float>(get_q(zp, out_t, k)) : 0.f;
    const float v = round_half_even(xf[i] / s[k]) + z;
    const int64_t c =
        std::isnan(v) ? 0
                      : static_cast<int64_t>(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi)));
    set_q(o, out_t, i, static_cast<int32_t>(c));
  }
}

void dequantize_linear(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& scale = ctx.input(1);
  if (!quant_type(x.type)) unsupported(std::string("DequantizeLinear of ") + describe(x));
  const QParams q = qparams(ctx.node, ctx.opset, x.shape, scale);
  const std::vector<float> s = as_f32(scale, "x_scale");
  const RunValue* zpv = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  if (zpv && zpv->type != x.type) throw Error("x_zero_point " + describe(*zpv) + " must have x's type");
  if (zpv && zpv->numel() != scale.numel()) throw Error("x_zero_point must have x_scale's shape");
  const uint8_t* zp = zpv ? zpv->data->data() : nullptr;
  const uint64_t n = x.numel();
  const uint8_t* p = x.data->data();
  const ElemType out_t = scale.type;
  std::vector<float> y(n);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t k = q.index(i);
    const int32_t z = zp ? get_q(zp, x.type, k) : 0;
    y[i] = static_cast<float>(get_q(p, x.type, i) - z) * s[k];
  }
  if (out_t == ElemType::F32) {
    std::memcpy(ctx.alloc_output(0, out_t, x.shape), y.data(), n * 4);
  } else if (out_t == ElemType::F16) {
    uint16_t* o = ctx.alloc<uint16_t>(0, out_t, x.shape);
    for (uint64_t i = 0; i < n; ++i) o[i] = fp32_to_fp16(y[i]);
  } else if (out_t == ElemType::BF16) {
    uint16_t* o = ctx.alloc<uint16_t>(0, out_t, x.shape);
    for (uint64_t i = 0; i < n; ++i) o[i] = fp32_to_bf16(y[i]);
  } else {
    unsupported(std::string("DequantizeLinear to ") + name_of(out_t));
  }
}

void dynamic_quantize_linear(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  if (x.type != ElemType::F32) unsupported("DynamicQuantizeLinear of " + describe(x));
  const float* p = x.as<float>();
  const uint64_t n = x.numel();
  float mn = 0, mx = 0;
  for (uint64_t i = 0; i < n; ++i) {
    mn = std::min(mn, p[i]);
    mx = std::max(mx, p[i]);
  }
  const float scale = (mx - mn) / 255.f;
  const float zpf = scale == 0 ? 0.f : std::clamp(round_half_even(0.f - mn / scale), 0.f, 255.f);
  const uint8_t zp = static_cast<uint8_t>(zpf);
  uint8_t* y = ctx.alloc<uint8_t>(0, ElemType::U8, x.shape);
  for (uint64_t i = 0; i < n; ++i) {
    const float v = scale == 0 ? zpf : round_half_even(p[i] / scale) + zpf;
    y[i] = static_cast<uint8_t>(std::clamp(v, 0.f, 255.f));
  }
  *ctx.alloc<float>(1, ElemType::F32, {}) = scale;
  *ctx.alloc<uint8_t>(2, ElemType::U8, {}) = zp;
}

// ---------------------------------------------------------------- integer products
// C[M, N] (int32) = sum_k (A[m, k] - za[m]) (B[k, n] - zb[n]), exactly, through
// oneDNN's f32 matmul over chunks of K whose partial sums stay below 2^24.
void int_matmul(const std::vector<float>& a, const std::vector<float>& b, int32_t* c, int64_t M, int64_t K,
                int64_t N, float max_a, float max_b) {
  const double per = std::max(1.0, static_cast<double>(max_a) * static_cast<double>(max_b));
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>((1 << 24) / per));
  std::fill(c, c + M * N, 0);
  if (chunk >= K) {
    std::vector<float> cf(M * N);
    f32_matmul(a.data(), b.data(), cf.data(), M, K, N, false);
    for (int64_t i = 0; i < M * N; ++i) c[i] = static_cast<int32_t>(cf[i]);
    return;
  }
  std::vector<float> ac, bc, cf(M * N);
  for (int64_t k0 = 0; k0 < K; k0 += chunk) {
    const int64_t kk = std::min(chunk, K - k0);
    ac.resize(M * kk);
    for (int64_t m = 0; m < M; ++m)
      std::copy(a.begin() + m * K + k0, a.begin() + m * K + k0 + kk, ac.begin() + m * kk);
    bc.assign(b.begin() + k0 * N, b.begin() + (k0 + kk) * N);
    f32_matmul(ac.data(), bc.data(), cf.data(), M, kk, N, false);
    for (int64_t i = 0; i < M * N; ++i) c[i] += static_cast<int32_t>(cf[i]);
  }
}

// A batched integer MatMul (numpy shapes; B 2-D or batched like A) with zero
// points: per tensor, per row of A (za of M values), per column of B (zb of N).
void matmul_integer_core(const RunValue& A, const RunValue& B, const RunValue* za, const RunValue* zb,
                         std::vector<int32_t>& out, std::vector<int64_t>& out_shape) {
  if (A.shape.size() < 2 || B.shape.size() < 2) unsupported("integer MatMul of 1-D operands");
  const int64_t M = A.shape[A.shape.size() - 2], K = A.shape.back(), N = B.shape.back();
  if (B.shape[B.shape.size() - 2] != K) throw Error("cannot multiply " + describe(A) + " by " + describe(B));
  const std::vector<int64_t> ab(A.shape.begin(), A.shape.end() - 2), bb(B.shape.begin(), B.shape.end() - 2);
  const std::vector<int64_t> batch = broadcast_shapes(ab, bb);
  const std::vector<int64_t> as = broadcast_strides(ab, batch), bs = broadcast_strides(bb, batch);
  out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  const int64_t nb = static_cast<int64_t>(numel_of(batch));
  out.assign(nb * M * N, 0);
  auto zp_at = [](const RunValue* z, int64_t i) -> float {
    if (!z) return 0.f;
    return static_cast<float>(get_q(z->data->data(), z->type, z->numel() == 1 ? 0 : i));
  };
  if (za && za->numel() != 1 && za->numel() != static_cast<uint64_t>(M))
    throw Error("a_zero_point " + describe(*za) + " must be a scalar or have one value per row (" +
                std::to_string(M) + ")");
  if (zb && zb->numel() != 1 && zb->numel() != static_cast<uint64_t>(N))
    throw Error("b_zero_point " + describe(*zb) + " must be a scalar or have one value per column (" +
                std::to_string(N) + ")");
  std::vector<float> a(M * K), b(K * N);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (size_t d = batch.size(); d-- > 0;) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * as[d];
      ob += idx * bs[d];
    }
    float max_a = 0, max_b = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        a[m * K + k] =
            static_cast<float>(get_q(A.data->data(), A.type, oa * M * K + m * K + k)) - zp_at(za, m);
        max_a = std::max(max_a, std::fabs(a[m * K + k]));
      }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) {
        b[k * N + n] =
            static_cast<float>(get_q(B.data->data(), B.type, ob * K * N + k * N + n)) - zp_at(zb, n);
        max_b = std::max(max_b, std::fabs(b[k * N + n]));
      }
    int_matmul(a, b, out.data() + bi * M * N, M, K, N, max_a, max_b);
  }
}

void matmul_integer(KernelContext& ctx) {
  const RunValue& A = ctx.input(0);
  const RunValue& B = ctx.input(1);
  for (const RunValue* v : {&A, &B})
    if (v->type != ElemType::U8 && v->type != ElemType::I8) unsupported("MatMulInteger of " + describe(*v));
  std::vector<int32_t> out;
  std::vector<int64_t> shape;
  matmul_integer_core(A, B, ctx.has_input(2) ? &ctx.input(2) : nullptr,
                      ctx.has_input(3) ? &ctx.input(3) : nullptr, out, shape);
  std::memcpy(ctx.alloc_output(0, ElemType::I32, shape), out.data(), out.size() * 4);
}

// Requantizes int32 accumulators: y = saturate(round(acc * (sa * sb / sy)) + zy),
// per output column when the B scale is per column.
void requantize(KernelContext& ctx, const std::vector<int32_t>& acc, const std::vector<int64_t>& shape,
                float sa, const std::vector<float>& sb, float sy, const RunValue& zy_v, int64_t per_col_n) {
  const ElemType t = zy_v.type;
  int64_t lo, hi;
  range_of(t, lo, hi);
  const float zy = static_cast<float>(get_q(zy_v.data->data(), t, 0));
  uint8_t* o = ctx.alloc_output(0, t, shape);
  for (size_t i = 0; i < acc.size(); ++i) {
    const float s = sb.size() == 1 ? sb[0] : sb[i % per_col_n];
    const float v = round_half_even(static_cast<float>(acc[i]) * (sa * s / sy)) + zy;
    set_q(o, t, i, static_cast<int32_t>(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi))));
  }
}

void qlinear_matmul(KernelContext& ctx) {
  const RunValue& A = ctx.input(0);
  const RunValue& B = ctx.input(3);
  std::vector<int32_t> acc;
  std::vector<int64_t> shape;
  matmul_integer_core(A, B, &ctx.input(2), &ctx.input(5), acc, shape);
  const std::vector<float> sa = as_f32(ctx.input(1), "a_scale"), sb = as_f32(ctx.input(4), "b_scale"),
                           sy = as_f32(ctx.input(6), "y_scale");
  if (sa.size() != 1 || sy.size() != 1) unsupported("QLinearMatMul with per-row a_scale or y_scale");
  requantize(ctx, acc, shape, sa[0], sb, sy[0], ctx.input(7), shape.back());
}

// ---------------------------------------------------------------- com.microsoft
// MatMulNBits: Y = A · dequant(B)ᵀ (+ bias); B [N, blocks, blob] of `bits`-bit
// values, scales [N * blocks], zero points packed like B (or float) or 2^(bits-1).
class MatMulNBitsKernel : public Kernel {
 public:
  explicit MatMulNBitsKernel(const KernelInit& init)
      : K_(attr_int(init.node, "K", 0)),
        N_(attr_int(init.node, "N", 0)),
        bits_(attr_int(init.node, "bits", 4)),
        block_(attr_int(init.node, "block_size", 0)) {
    if (K_ <= 0 || N_ <= 0) throw Error("attributes K and N must be positive");
    if (bits_ != 4 && bits_ != 8 && bits_ != 2) unsupported("MatMulNBits bits=" + std::to_string(bits_));
    if (block_ < 16 || (block_ & (block_ - 1))) throw Error("block_size must be a power of 2 and >= 16");
    if (init.node.inputs.size() > 4 && !init.node.inputs[4].empty()) unsupported("MatMulNBits with g_idx");
    bool all_const = true;
    for (size_t i = 1; i < 4 && i < init.node.inputs.size(); ++i)
      if (!init.node.inputs[i].empty() && !(i < init.constants.size() && init.constants[i]))
        all_const = false;
    if (all_const) {
      const RunValue* zp =
          init.node.inputs.size() > 3 && !init.node.inputs[3].empty() ? init.constants[3] : nullptr;
      w_ = dequantize(*init.constants[1], *init.constants[2], zp);
    }
  }

  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    if (a.type != ElemType::F32) unsupported("MatMulNBits of " + describe(a));
    if (a.shape.empty() || a.shape.back() != K_)
      throw Error("A " + describe(a) + " must end in K = " + std::to_string(K_));
    std::vector<float> local;
    const std::vector<float>* w = &w_;
    if (w_.empty()) {
      local = dequantize(ctx.input(1), ctx.input(2), ctx.has_input(3) ? &ctx.input(3) : nullptr);
      w = &local;
    }
    std::vector<int64_t> out = a.shape;
    out.back() = N_;
    const int64_t M = static_cast<int64_t>(a.numel()) / K_;
    float* o = ctx.alloc<float>(0, ElemType::F32, out);
    f32_matmul(a.as<float>(), w->data(), o, M, K_, N_, true);
    if (ctx.has_input(5)) {
      const RunValue& b = ctx.input(5);
      if (b.type != ElemType::F32 || b.numel() != static_cast<uint64_t>(N_))
        throw Error("bias must be f32 [N]");
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N_; ++n) o[m * N_ + n] += b.as<float>()[n];
    }
  }

 private:
  // Dequantized weights as [N, K] f32.
  std::vector<float> dequantize(const RunValue& B, const RunValue& scales, const RunValue* zp) const {
    const int64_t blocks = (K_ + block_ - 1) / block_, blob = block_ * bits_ / 8;
    if (B.type != ElemType::U8 || B.numel() != static_cast<uint64_t>(N_ * blocks * blob))
      throw Error("B " + describe(B) + " must be u8 [" + std::to_string(N_) + ", " + std::to_string(blocks) +
                  ", " + std::to_string(blob) + "]");
    const std::vector<float> s = as_f32(scales, "scales");
    if (s.size() != static_cast<size_t>(N_ * blocks)) throw Error("scales must have N * blocks values");
    std::vector<float> zf;
    if (zp && zp->type != ElemType::U8) {
      zf = as_f32(*zp, "zero_points");
      if (zf.size() != s.size()) throw Error("float zero_points must have N * blocks values");
    }
    const int64_t zp_row = (blocks * bits_ + 7) / 8;
    if (zp && zp->type == ElemType::U8 && zp->numel() != static_cast<uint64_t>(N_ * zp_row))
      throw Error("zero_points " + describe(*zp) + " must hold N * ceil(blocks * bits / 8) bytes");
    const int64_t per_byte = 8 / bits_, mask = (1 << bits_) - 1;
    std::vector<float> w(N_ * K_);
    const uint8_t* pb = B.data->data();
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t bk = 0; bk < blocks; ++bk) {
        const float sc = s[n * blocks + bk];
        float z = static_cast<float>(1 << (bits_ - 1));
        if (!zf.empty()) {
          z = zf[n * blocks + bk];
        } else if (zp) {
          const uint8_t byte = zp->data->data()[n * zp_row + bk / per_byte];
          z = static_cast<float>((byte >> ((bk % per_byte) * bits_)) & mask);
        }
        const uint8_t* blk = pb + (n * blocks + bk) * blob;
        for (int64_t j = 0; j < block_ && bk * block_ + j < K_; ++j) {
          const int q = (blk[j / per_byte] >> ((j % per_byte) * bits_)) & mask;
          // Float zero points are in the dequantized domain (ONNX Runtime's contrib op).
          w[n * K_ + bk * block_ + j] =
              zf.empty() ? (static_cast<float>(q) - z) * sc : static_cast<float>(q) * sc - z;
        }
      }
    return w;
  }

  int64_t K_, N_, bits_, block_;
  std::vector<float> w_;
};

// DynamicQuantizeMatMul: A (f32) quantized to u8 per tensor as
// DynamicQuantizeLinear does, times B (int8/uint8, scale/zero point per tensor
// or per column), dequantized, plus bias.
void dynamic_quantize_matmul(KernelContext& ctx) {
  const RunValue& a = ctx.input(0);
  if (a.type != ElemType::F32) unsupported("DynamicQuantizeMatMul of " + describe(a));
  // Quantize A.
  std::vector<RunValue> qa(3);
  KernelContext sub(ctx.node, ctx.opset, ctx.threads, ctx.pool(), {&a}, qa);
  dynamic_quantize_linear(sub);
  const RunValue& B = ctx.input(1);
  const RunValue* zb = ctx.has_input(3) ? &ctx.input(3) : nullptr;
  std::vector<int32_t> acc;
  std::vector<int64_t> shape;
  matmul_integer_core(qa[0], B, &qa[2], zb, acc, shape);
  const float sa = qa[1].as<float>()[0];
  const std::vector<float> sb = as_f32(ctx.input(2), "b_scale");
  const int64_t N = shape.back();
  if (sb.size() != 1 && sb.size() != static_cast<size_t>(N)) throw Error("b_scale must be a scalar or [N]");
  float* o = ctx.alloc<float>(0, ElemType::F32, shape);
  const float* bias = ctx.has_input(4) ? ctx.input(4).as<float>() : nullptr;
  for (size_t i = 0; i < acc.size(); ++i) {
    const int64_t n = static_cast<int64_t>(i) % N;
    o[i] = static_cast<float>(acc[i]) * sa * (sb.size() == 1 ? sb[0] : sb[n]) + (bias ? bias[n] : 0.f);
  }
}

// QLinearAdd / QLinearMul: dequantize both, combine in f32, requantize.
void qlinear_binary(KernelContext& ctx, bool mul) {
  const RunValue& A = ctx.input(0);
  const RunValue& B = ctx.input(3);
  if (A.type != B.type || (A.type != ElemType::U8 && A.type != ElemType::I8))
    unsupported(std::string(mul ? "QLinearMul" : "QLinearAdd") + " of " + describe(A) + " and " +
                describe(B));
  const float sa = as_f32(ctx.input(1), "A_scale")[0], sb = as_f32(ctx.input(4), "B_scale")[0],
              sc = as_f32(ctx.input(6), "C_scale")[0];
  const int32_t za = ctx.has_input(2) ? get_q(ctx.input(2).data->data(), A.type, 0) : 0;
  const int32_t zb = ctx.has_input(5) ? get_q(ctx.input(5).data->data(), B.type, 0) : 0;
  const int32_t zc = ctx.has_input(7) ? get_q(ctx.input(7).data->data(), A.type, 0) : 0;
  int64_t lo, hi;
  range_of(A.type, lo, hi);
  const BroadcastPlan p = plan_broadcast({&A.shape, &B.shape});
  uint8_t* o = ctx.alloc_output(0, A.type, p.out_shape);
  const uint8_t* pa = A.data->data();
  const uint8_t* pb = B.data->data();
  for_each_row(p, 1, [&](int64_t oo, const int64_t* off, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) {
      const float x = static_cast<float>(get_q(pa, A.type, off[0] + i * st[0]) - za) * sa;
      const float y = static_cast<float>(get_q(pb, B.type, off[1] + i * st[1]) - zb) * sb;
      const float v = round_half_even((mul ? x * y : x + y) / sc) + static_cast<float>(zc);
      set_q(o, A.type, oo + i,
            static_cast<int32_t>(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi))));
    }
  });
}

}  // namespace

void register_ops_quant(KernelTable& t) {
  t.add_fn("", "QuantizeLinear", 10, kMaxOpset, quantize_linear);
  t.add_fn("", "DequantizeLinear", 10, kMaxOpset, dequantize_linear);
  t.add_fn("", "DynamicQuantizeLinear", 11, kMaxOpset, dynamic_quantize_linear);
  t.add_fn("", "MatMulInteger", 10, kMaxOpset, matmul_integer);
  t.add_fn("", "QLinearMatMul", 10, kMaxOpset, qlinear_matmul);
  // ONNX Runtime's contrib operators (com.microsoft, opset 1).
  t.add_fn("com.microsoft", "QuantizeLinear", 1, kMaxOpset, quantize_linear);
  t.add_fn("com.microsoft", "DequantizeLinear", 1, kMaxOpset, dequantize_linear);
  t.add("com.microsoft", "MatMulNBits", 1, kMaxOpset,
        [](const KernelInit& init) { return std::make_unique<MatMulNBitsKernel>(init); });
  t.add_fn("com.microsoft", "DynamicQuantizeMatMul", 1, kMaxOpset, dynamic_quantize_matmul);
  t.add_fn("com.microsoft", "QLinearAdd", 1, kMaxOpset,
           [](KernelContext& ctx) { qlinear_binary(ctx, false); });
  t.add_fn("com.microsoft", "QLinearMul", 1, kMaxOpset,
           [](KernelContext& ctx) { qlinear_binary(ctx, true); });
}

}  // namespace qforge::cpu
