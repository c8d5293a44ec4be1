// Quantization operators (executors/cpu/README.md, "Adding an operator").
//
// ai.onnx: QuantizeLinear, DequantizeLinear (per tensor, per axis, blocked;
// 4-, 8- and 16-bit codes), DynamicQuantizeLinear, MatMulInteger,
// ConvInteger, QLinearMatMul, QLinearConv. com.microsoft (ONNX Runtime's
// contrib operators): QuantizeLinear, DequantizeLinear, QLinearAdd,
// QLinearMul, QGemm, QLinearConcat, QLinearAveragePool,
// QLinearGlobalAveragePool, QLinearSigmoid, QLinearLeakyRelu,
// DynamicQuantizeMatMul, MatMulNBits.
//
// Integer products are exact: oneDNN's integer GEMM (gemm_u8s8s32 /
// gemm_s8s8s32, int32 accumulation) computes the raw product of the codes and
// the zero points are applied afterwards in exact integer arithmetic
// (sum (a - za)(b - zb) = sum ab - za sum b - zb sum a + K za zb), so any zero
// point, per-row or per-column, and uint8 right-hand sides (shifted to int8 by
// 128, an exact change of zero point) run through the same call. Convolutions
// are im2col (padding filled with the input's zero point, so a padded tap
// contributes 0, as the operators define) followed by that GEMM. Rounding and
// saturation follow ONNX's operator specification: round half to even, then
// clamp to the code type's range; requantization multiplies the int32 sum by
// the float multiplier (scale_a * scale_b / scale_y) as ONNX Runtime does.
// Float8 types (opset 19) are encoded by nearest value, ties to even, with
// `saturate` as the specification says.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dnnl_util.h"
#include "kernel.h"
#include "qforge/half.h"

namespace qforge::cpu {

namespace {

// ---------------------------------------------------------------- element access

bool is_float8(ElemType t) {
  return t == ElemType::F8E4M3FN || t == ElemType::F8E4M3FNUZ || t == ElemType::F8E5M2 ||
         t == ElemType::F8E5M2FNUZ;
}

// Integer code types a (De)QuantizeLinear reads or writes.
bool is_code(ElemType t) {
  switch (t) {
    case ElemType::I8:
    case ElemType::U8:
    case ElemType::I16:
    case ElemType::U16:
    case ElemType::I4:
    case ElemType::U4: return true;
    default: return false;
  }
}

bool is_4bit(ElemType t) { return t == ElemType::I4 || t == ElemType::U4; }

struct Range {
  int32_t lo, hi;
};

Range range_of(ElemType t) {
  switch (t) {
    case ElemType::I8: return {-128, 127};
    case ElemType::U8: return {0, 255};
    case ElemType::I16: return {-32768, 32767};
    case ElemType::U16: return {0, 65535};
    case ElemType::I4: return {-8, 7};
    case ElemType::U4: return {0, 15};
    default: throw Error(std::string("no integer range for ") + name_of(t));
  }
}

// Element i of integer codes of type t (4-bit ones two per byte, the first in
// the low nibble, as ONNX packs them).
inline int32_t load_code(ElemType t, const uint8_t* p, int64_t i) {
  switch (t) {
    case ElemType::I8: return reinterpret_cast<const int8_t*>(p)[i];
    case ElemType::U8: return p[i];
    case ElemType::I16: return reinterpret_cast<const int16_t*>(p)[i];
    case ElemType::U16: return reinterpret_cast<const uint16_t*>(p)[i];
    case ElemType::I32: return reinterpret_cast<const int32_t*>(p)[i];
    case ElemType::U4: return (i & 1) ? p[i >> 1] >> 4 : p[i >> 1] & 0xf;
    case ElemType::I4: {
      const int32_t v = (i & 1) ? p[i >> 1] >> 4 : p[i >> 1] & 0xf;
      return v >= 8 ? v - 16 : v;
    }
    default: throw Error(std::string("cannot read integer codes of type ") + name_of(t));
  }
}

// Writes code v (already in range). Two 4-bit codes share a byte: callers
// split work on even element boundaries.
inline void store_code(ElemType t, uint8_t* p, int64_t i, int32_t v) {
  switch (t) {
    case ElemType::I8: reinterpret_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); return;
    case ElemType::U8: p[i] = static_cast<uint8_t>(v); return;
    case ElemType::I16: reinterpret_cast<int16_t*>(p)[i] = static_cast<int16_t>(v); return;
    case ElemType::U16: reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v); return;
    case ElemType::I4:
    case ElemType::U4: {
      uint8_t& b = p[i >> 1];
      const uint8_t nib = static_cast<uint8_t>(v) & 0xf;
      b = (i & 1) ? static_cast<uint8_t>((b & 0x0f) | (nib << 4)) : static_cast<uint8_t>((b & 0xf0) | nib);
      return;
    }
    default: throw Error(std::string("cannot write integer codes of type ") + name_of(t));
  }
}

bool is_float(ElemType t) { return t == ElemType::F32 || t == ElemType::F16 || t == ElemType::BF16; }

inline float load_float(ElemType t, const uint8_t* p, int64_t i) {
  switch (t) {
    case ElemType::F32: return reinterpret_cast<const float*>(p)[i];
    case ElemType::F16: return fp16_to_fp32(reinterpret_cast<const uint16_t*>(p)[i]);
    case ElemType::BF16: return bf16_to_fp32(reinterpret_cast<const uint16_t*>(p)[i]);
    case ElemType::I32: return static_cast<float>(reinterpret_cast<const int32_t*>(p)[i]);
    default: throw Error(std::string("cannot read ") + name_of(t) + " as float");
  }
}

std::vector<float> floats_of(const RunValue& v, const std::string& what) {
  if (!is_float(v.type)) throw Error(what + " must be float, float16 or bfloat16, got " + describe(v));
  std::vector<float> out(v.numel());
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = load_float(v.type, v.data->data(), static_cast<int64_t>(i));
  return out;
}

std::vector<int32_t> codes_of(const RunValue& v) {
  std::vector<int32_t> out(v.numel());
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_code(v.type, v.data->data(), static_cast<int64_t>(i));
  return out;
}

// Round half to even (the spec's rounding) without a library call or a
// branch (so the loops vectorise): adding and subtracting 2^23 with v's sign
// leaves the nearest integer, ties to even, in the default rounding mode, for
// |v| < 2^23. Larger values come back within a few ulps of v, still beyond
// 2^23: every caller saturates the result to a code range of at most 16 bits,
// where they end at the same bound. NaN stays NaN (saturated to the low bound).
inline float rne(float v) {
  const float m = std::copysign(8388608.0f, v);
  return (v + m) - m;
}

// Saturates an integral float to [lo, hi]; NaN saturates to lo, as ONNX
// Runtime's vectorised clamp does.
inline int32_t saturate_to(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  return static_cast<int32_t>(v);
}

// ONNX TensorProto.DataType numbers of output_dtype.
ElemType elem_of_onnx(int64_t dt) {
  switch (dt) {
    case 1: return ElemType::F32;
    case 2: return ElemType::U8;
    case 3: return ElemType::I8;
    case 4: return ElemType::U16;
    case 5: return ElemType::I16;
    case 10: return ElemType::F16;
    case 16: return ElemType::BF16;
    case 17: return ElemType::F8E4M3FN;
    case 18: return ElemType::F8E4M3FNUZ;
    case 19: return ElemType::F8E5M2;
    case 20: return ElemType::F8E5M2FNUZ;
    case 21: return ElemType::U4;
    case 22: return ElemType::I4;
    default: unsupported("output_dtype " + std::to_string(dt));
  }
}

// ---------------------------------------------------------------- (de)quantization layout

// How scales (and zero points) map onto the elements of x: x seen as
// [pre, dim, post] around `axis`; per tensor (one scale), per axis (dim
// scales) or blocked (scale shape = x's with dim replaced by
// ceil(dim / block)).
struct QuantLayout {
  enum Kind { PerTensor, PerAxis, Blocked } kind = PerTensor;
  int64_t pre = 1, dim = 1, post = 1, block = 0, nblocks = 1;
};

QuantLayout quant_layout(const RunValue& x, const RunValue& scale, const RunValue* zp, const Node& node,
                         int64_t opset, bool microsoft) {
  QuantLayout l;
  const int64_t block = attr_int(node, "block_size", 0);
  if (block < 0) throw Error("block_size must be >= 0, got " + std::to_string(block));
  if (zp && zp->shape != scale.shape)
    throw Error("zero point " + describe(*zp) + " and scale " + describe(scale) + " differ in shape");
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (block == 0 && scale.numel() == 1 && scale.shape.size() <= 1) {
    l.post = static_cast<int64_t>(x.numel());
    return l;
  }
  if (!microsoft && opset < 13)
    throw Error("scale " + describe(scale) + " is not a scalar (opset 10 is per tensor)");
  const int64_t axis = norm_axis(attr_int(node, "axis", 1), rank);
  l.dim = x.shape[axis];
  for (int64_t d = 0; d < axis; ++d) l.pre *= x.shape[d];
  for (int64_t d = axis + 1; d < rank; ++d) l.post *= x.shape[d];
  if (block == 0) {
    if (scale.shape.size() != 1 || scale.shape[0] != l.dim)
      throw Error("per-axis scale " + describe(scale) + " must be 1-D with " + std::to_string(l.dim) +
                  " elements (axis " + std::to_string(axis) + " of " + shape_str(x.shape) + ")");
    l.kind = QuantLayout::PerAxis;
    return l;
  }
  l.kind = QuantLayout::Blocked;
  l.block = block;
  l.nblocks = (l.dim + block - 1) / block;
  bool ok = static_cast<int64_t>(scale.shape.size()) == rank;
  for (int64_t d = 0; ok && d < rank; ++d) ok = scale.shape[d] == (d == axis ? l.nblocks : x.shape[d]);
  if (!ok)
    throw Error("blocked scale " + describe(scale) + " does not match " + shape_str(x.shape) + " with axis " +
                std::to_string(axis) + " and block_size " + std::to_string(block));
  return l;
}

// Calls fn(begin, end) over the n elements split across threads; for 4-bit
// outputs the ranges start on even elements (two codes share a byte).
template <class Fn>
void for_elements(int64_t n, int threads, bool four_bit, Fn&& fn) {
  if (!four_bit) {
    parallel_for(threads, n, 16384, fn);
    return;
  }
  parallel_for(threads, (n + 1) / 2, 8192,
               [&](int64_t b, int64_t e) { fn(2 * b, std::min<int64_t>(2 * e, n)); });
}

// Index of the first scale of row r (a row: `post` consecutive elements; its
// elements add their offset q for blocked layouts).
inline int64_t scale_base(const QuantLayout& l, int64_t r) {
  switch (l.kind) {
    case QuantLayout::PerTensor: return 0;
    case QuantLayout::PerAxis: return r % l.dim;
    case QuantLayout::Blocked: {
      const int64_t p = r / l.dim, a = r % l.dim;
      return (p * l.nblocks + a / l.block) * l.post;
    }
  }
  return 0;
}

// Calls f(run_begin, run_end, scale_index, step) over runs of [b, e) whose
// scale index starts at scale_index and grows by step (0 or 1) per element:
// long runs let the kernels keep the scale and zero point in registers.
template <class F>
inline void walk_runs(const QuantLayout& l, int64_t b, int64_t e, F&& f) {
  if (l.kind == QuantLayout::PerTensor) {
    if (b < e) f(b, e, 0, 0);
    return;
  }
  const bool blocked = l.kind == QuantLayout::Blocked;
  if (l.post == 1) {  // the quantized axis is the last one
    while (b < e) {
      const int64_t p = b / l.dim, a = b % l.dim;
      if (!blocked) {
        const int64_t end = std::min(e, (p + 1) * l.dim);
        f(b, end, a, 1);
        b = end;
      } else {
        const int64_t end = std::min(e, p * l.dim + std::min((a / l.block + 1) * l.block, l.dim));
        f(b, end, p * l.nblocks + a / l.block, 0);
        b = end;
      }
    }
    return;
  }
  while (b < e) {
    const int64_t row = b / l.post, q = b % l.post;
    const int64_t end = std::min(e, (row + 1) * l.post);
    const int64_t base = scale_base(l, row);
    if (blocked)
      f(b, end, base + q, 1);
    else
      f(b, end, base, 0);
    b = end;
  }
}

// ---------------------------------------------------------------- float8

// ONNX's float8 types (docs: the operator specification's float8 section):
// E4M3FN (bias 7, no infinities, NaN = S.1111.111), E4M3FNUZ (bias 8, NaN =
// 0x80, no negative zero), E5M2 (bias 15, IEEE-like with infinities),
// E5M2FNUZ (bias 16, NaN = 0x80). Decoding by formula; encoding by nearest
// value, ties to the even code (round half to even), with saturation or
// overflow to infinity / NaN as `saturate` says.
struct Float8Format {
  int mant_bits, bias;
  bool fnuz, has_inf;
  uint8_t max_code;          // largest finite positive code
  std::vector<float> value;  // of codes 0..max_code

  Float8Format(int exp_bits, int mant, int b, bool uz, bool inf, uint8_t maxc)
      : mant_bits(mant), bias(b), fnuz(uz), has_inf(inf), max_code(maxc) {
    (void)exp_bits;
    for (int c = 0; c <= max_code; ++c) {
      const int e = c >> mant_bits, m = c & ((1 << mant_bits) - 1);
      value.push_back(
          e == 0 ? std::ldexp(static_cast<float>(m), 1 - bias - mant_bits)
                 : std::ldexp(1.0f + static_cast<float>(m) / static_cast<float>(1 << mant_bits), e - bias));
    }
  }

  float decode(uint8_t c) const {
    if (fnuz) {
      if (c == 0x80) return std::numeric_limits<float>::quiet_NaN();
    } else if ((c & 0x7f) > max_code) {
      if (has_inf && (c & 0x7f) == max_code + 1) return (c & 0x80) ? -INFINITY : INFINITY;
      return std::numeric_limits<float>::quiet_NaN();
    }
    const float v = value[c & 0x7f];
    return (c & 0x80) ? -v : v;
  }

  uint8_t nan_code() const { return fnuz ? 0x80 : 0x7f; }

  uint8_t encode(float x, bool saturate) const {
    if (std::isnan(x)) return nan_code();
    const bool neg = std::signbit(x);
    const float a = std::fabs(x);
    uint8_t c;
    const float top = value[max_code];
    if (a > top) {
      const float half_ulp = (top - value[max_code - 1]) / 2;
      const bool overflow = std::isinf(a) || a > top + half_ulp || (a == top + half_ulp && (max_code & 1));
      if (!overflow || saturate) {
        c = max_code;
      } else if (has_inf) {
        c = static_cast<uint8_t>(max_code + 1);
      } else {
        return nan_code();
      }
    } else {
      const auto it = std::lower_bound(value.begin(), value.end(), a);  // first >= a
      const int hi = static_cast<int>(it - value.begin());
      if (value[hi] == a || hi == 0) {
        c = static_cast<uint8_t>(hi);
      } else {
        const float dl = a - value[hi - 1], dh = value[hi] - a;
        c = static_cast<uint8_t>(dl < dh ? hi - 1 : dh < dl ? hi : ((hi & 1) ? hi - 1 : hi));
      }
    }
    if (c == 0 && fnuz) return 0;  // no negative zero
    return neg ? static_cast<uint8_t>(c | 0x80) : c;
  }
};

const Float8Format& float8_format(ElemType t) {
  static const Float8Format e4m3fn(4, 3, 7, false, false, 0x7e);
  static const Float8Format e4m3fnuz(4, 3, 8, true, false, 0x7f);
  static const Float8Format e5m2(5, 2, 15, false, true, 0x7b);
  static const Float8Format e5m2fnuz(5, 2, 16, true, false, 0x7f);
  switch (t) {
    case ElemType::F8E4M3FN: return e4m3fn;
    case ElemType::F8E4M3FNUZ: return e4m3fnuz;
    case ElemType::F8E5M2: return e5m2;
    case ElemType::F8E5M2FNUZ: return e5m2fnuz;
    default: throw Error(std::string(name_of(t)) + " is not a float8 type");
  }
}

// ---------------------------------------------------------------- codecs
// A quantized type: get(p, i) reads element i as float, put(p, i, v, z)
// writes the quantization of v (x / scale) with zero point z.

template <class T>
struct IntCodec {
  float lo, hi;
  float get(const uint8_t* p, int64_t i) const {
    return static_cast<float>(reinterpret_cast<const T*>(p)[i]);
  }
  void put(uint8_t* p, int64_t i, float v, float z) const {
    // Round x / scale half to even first, then add the zero point (rounding
    // after adding would change the parity of ties), saturate.
    reinterpret_cast<T*>(p)[i] = static_cast<T>(saturate_to(rne(v) + z, lo, hi));
  }
};

template <bool kSigned>
struct NibbleCodec {
  float lo, hi;
  float get(const uint8_t* p, int64_t i) const {
    const int32_t v = (i & 1) ? p[i >> 1] >> 4 : p[i >> 1] & 0xf;
    return static_cast<float>(kSigned && v >= 8 ? v - 16 : v);
  }
  void put(uint8_t* p, int64_t i, float v, float z) const {
    store_code(kSigned ? ElemType::I4 : ElemType::U4, p, i, saturate_to(rne(v) + z, lo, hi));
  }
};

struct Float8Codec {
  const Float8Format* f;
  bool saturate;
  float get(const uint8_t* p, int64_t i) const { return f->decode(p[i]); }
  // A zero zero point (the usual one) leaves -0 negative, as ONNX Runtime.
  void put(uint8_t* p, int64_t i, float v, float z) const { p[i] = f->encode(z == 0 ? v : v + z, saturate); }
};

// Calls fn(codec) with the codec of t.
template <class Fn>
void with_codec(ElemType t, bool saturate, Fn&& fn) {
  switch (t) {
    case ElemType::I8: return fn(IntCodec<int8_t>{-128, 127});
    case ElemType::U8: return fn(IntCodec<uint8_t>{0, 255});
    case ElemType::I16: return fn(IntCodec<int16_t>{-32768, 32767});
    case ElemType::U16: return fn(IntCodec<uint16_t>{0, 65535});
    case ElemType::I32: return fn(IntCodec<int32_t>{-2147483648.0f, 2147483520.0f});
    case ElemType::I4: return fn(NibbleCodec<true>{-8, 7});
    case ElemType::U4: return fn(NibbleCodec<false>{0, 15});
    case ElemType::F8E4M3FN:
    case ElemType::F8E4M3FNUZ:
    case ElemType::F8E5M2:
    case ElemType::F8E5M2FNUZ: return fn(Float8Codec{&float8_format(t), saturate});
    default: unsupported(std::string("quantized type ") + name_of(t));
  }
}

struct F32Io {
  static float get(const uint8_t* p, int64_t i) { return reinterpret_cast<const float*>(p)[i]; }
  static void put(uint8_t* p, int64_t i, float v) { reinterpret_cast<float*>(p)[i] = v; }
};
struct F16Io {
  static float get(const uint8_t* p, int64_t i) {
    return fp16_to_fp32(reinterpret_cast<const uint16_t*>(p)[i]);
  }
  static void put(uint8_t* p, int64_t i, float v) { reinterpret_cast<uint16_t*>(p)[i] = fp32_to_fp16(v); }
};
struct BF16Io {
  static float get(const uint8_t* p, int64_t i) {
    return bf16_to_fp32(reinterpret_cast<const uint16_t*>(p)[i]);
  }
  static void put(uint8_t* p, int64_t i, float v) { reinterpret_cast<uint16_t*>(p)[i] = fp32_to_bf16(v); }
};
struct I32In {
  static float get(const uint8_t* p, int64_t i) {
    return static_cast<float>(reinterpret_cast<const int32_t*>(p)[i]);
  }
};

// Calls fn(io) with the float writer of t.
template <class Fn>
void with_float_out(ElemType t, Fn&& fn) {
  switch (t) {
    case ElemType::F32: return fn(F32Io{});
    case ElemType::F16: return fn(F16Io{});
    case ElemType::BF16: return fn(BF16Io{});
    default: unsupported(std::string("float values of type ") + name_of(t));
  }
}

// Calls fn(io) with the reader of t (floats, or int32 read as float).
template <class Fn>
void with_float_in(ElemType t, Fn&& fn) {
  if (t == ElemType::I32) return fn(I32In{});
  with_float_out(t, fn);
}

// Zero points as floats (integer codes are exact in float; float8 decoded);
// zeros when absent.
std::vector<float> zero_points_of(const RunValue* zp, size_t n) {
  if (!zp) return std::vector<float>(n, 0.0f);
  std::vector<float> z(zp->numel());
  with_codec(zp->type, true, [&](const auto& c) {
    for (size_t i = 0; i < z.size(); ++i) z[i] = c.get(zp->data->data(), static_cast<int64_t>(i));
  });
  return z;
}

// ---------------------------------------------------------------- QuantizeLinear

void quantize_linear(KernelContext& ctx, bool microsoft) {
  const RunValue& x = ctx.input(0);
  const RunValue& scale = ctx.input(1);
  const RunValue* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  if (!is_float(scale.type)) unsupported("scale of type " + describe(scale));
  ElemType out = ElemType::U8;
  const int64_t out_dtype = attr_int(ctx.node, "output_dtype", 0);
  if (zp) {
    out = zp->type;
    if (out_dtype != 0 && elem_of_onnx(out_dtype) != out)
      throw Error("output_dtype " + std::to_string(out_dtype) + " differs from the zero point's type " +
                  name_of(out));
  } else if (out_dtype != 0) {
    out = elem_of_onnx(out_dtype);
  }
  if (!is_code(out) && !is_float8(out)) unsupported(std::string("QuantizeLinear to ") + name_of(out));
  if (is_float8(out) && !microsoft && ctx.opset < 19) throw Error("float8 QuantizeLinear needs opset 19");
  if (attr_int(ctx.node, "precision", 0) != 0) unsupported("attribute precision != 0");
  const bool saturate = attr_int(ctx.node, "saturate", 1) != 0;
  const QuantLayout l = quant_layout(x, scale, zp, ctx.node, ctx.opset, microsoft);
  const std::vector<float> s = floats_of(scale, "scale");
  const std::vector<float> z = zero_points_of(zp, s.size());
  const int64_t n = static_cast<int64_t>(x.numel());
  uint8_t* o = ctx.alloc_output(0, out, x.shape);
  if (is_4bit(out) && n > 0) o[(n - 1) / 2] = 0;  // the pad nibble of an odd count
  const uint8_t* px = x.data->data();
  with_float_in(x.type, [&](auto in) {
    with_codec(out, saturate, [&](const auto& codec) {
      for_elements(n, ctx.threads, is_4bit(out), [&](int64_t b, int64_t e) {
        walk_runs(l, b, e, [&](int64_t rb, int64_t re, int64_t si, int64_t step) {
          // Locals: stores through `out` (uint8_t, which may alias anything)
          // cannot change them, so they stay in registers.
          const auto c = codec;
          uint8_t* const out = o;
          const uint8_t* const src = px;
          if (step == 0) {
            const float sv = s[si], zv = z[si];
            for (int64_t i = rb; i < re; ++i) c.put(out, i, in.get(src, i) / sv, zv);
          } else {
            const float* sp = s.data() + si - rb;
            const float* zq = z.data() + si - rb;
            for (int64_t i = rb; i < re; ++i) c.put(out, i, in.get(src, i) / sp[i], zq[i]);
          }
        });
      });
    });
  });
}

// ---------------------------------------------------------------- DequantizeLinear

void dequantize_linear(KernelContext& ctx, bool microsoft) {
  const RunValue& x = ctx.input(0);
  const RunValue& scale = ctx.input(1);
  const RunValue* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  if (!is_code(x.type) && !is_float8(x.type) && x.type != ElemType::I32)
    unsupported("DequantizeLinear of " + describe(x));
  if (!is_float(scale.type)) unsupported("scale of type " + describe(scale));
  if (zp && zp->type != x.type)
    throw Error("zero point " + describe(*zp) + " and input " + describe(x) + " differ in type");
  if (x.type == ElemType::I32 && zp) {
    const std::vector<int32_t> zs = codes_of(*zp);
    if (std::any_of(zs.begin(), zs.end(), [](int32_t v) { return v != 0; }))
      throw Error("an int32 input's zero point must be 0");
  }
  ElemType out = scale.type;
  const int64_t out_dtype = attr_int(ctx.node, "output_dtype", 0);
  if (out_dtype != 0) out = elem_of_onnx(out_dtype);
  const QuantLayout l = quant_layout(x, scale, zp, ctx.node, ctx.opset, microsoft);
  const std::vector<float> s = floats_of(scale, "scale");
  const std::vector<float> z = zero_points_of(zp, s.size());
  const int64_t n = static_cast<int64_t>(x.numel());
  uint8_t* o = ctx.alloc_output(0, out, x.shape);
  const uint8_t* px = x.data->data();
  with_float_out(out, [&](auto io) {
    with_codec(x.type, true, [&](const auto& codec) {
      for_elements(n, ctx.threads, false, [&](int64_t b, int64_t e) {
        // (x - zp) is exact in float for integer codes; times the scale, as
        // ONNX Runtime computes it.
        walk_runs(l, b, e, [&](int64_t rb, int64_t re, int64_t si, int64_t step) {
          const auto c = codec;
          if (step == 0) {
            const float sv = s[si], zv = z[si];
            for (int64_t i = rb; i < re; ++i) io.put(o, i, (c.get(px, i) - zv) * sv);
          } else {
            const float* sp = s.data() + si - rb;
            const float* zq = z.data() + si - rb;
            for (int64_t i = rb; i < re; ++i) io.put(o, i, (c.get(px, i) - zq[i]) * sp[i]);
          }
        });
      });
    });
  });
}

// ---------------------------------------------------------------- DynamicQuantizeLinear

struct DynamicParams {
  float scale = 1;
  int32_t zero_point = 0;
};

// uint8 parameters covering [min(x, 0), max(x, 0)] (ONNX's DynamicQuantizeLinear).
DynamicParams dynamic_params(const float* x, int64_t n, int threads) {
  float mn = 0, mx = 0;
  std::mutex mu;
  parallel_for(threads, n, 65536, [&](int64_t b, int64_t e) {
    // Four lanes at a time (GCC/Clang vector extensions: minps/maxps).
    typedef float f4 __attribute__((vector_size(16)));
    const float* xs = x;
    f4 vmn = {0, 0, 0, 0}, vmx = {0, 0, 0, 0};
    int64_t i = b;
    for (; i + 4 <= e; i += 4) {
      f4 v;
      std::memcpy(&v, xs + i, sizeof v);
      vmn = v < vmn ? v : vmn;
      vmx = v > vmx ? v : vmx;
    }
    float lmn = std::min(std::min(vmn[0], vmn[1]), std::min(vmn[2], vmn[3]));
    float lmx = std::max(std::max(vmx[0], vmx[1]), std::max(vmx[2], vmx[3]));
    for (; i < e; ++i) {
      lmn = std::min(lmn, xs[i]);
      lmx = std::max(lmx, xs[i]);
    }
    std::lock_guard<std::mutex> lock(mu);
    mn = std::min(mn, lmn);
    mx = std::max(mx, lmx);
  });
  DynamicParams p;
  p.scale = mx == mn ? 1.0f : (mx - mn) / 255.0f;
  const float initial = 0.0f - mn / p.scale;
  p.zero_point = static_cast<int32_t>(rne(std::max(0.0f, std::min(255.0f, initial))));
  return p;
}

void quantize_u8(const float* x, int64_t n, const DynamicParams& p, uint8_t* y, int threads) {
  const float scale = p.scale, zp = static_cast<float>(p.zero_point);  // locals: not reloaded per store
  parallel_for(threads, n, 16384, [=](int64_t b, int64_t e) {
    // Locals, not the closure's members: a uint8_t store may alias those and
    // would force a reload per element.
    const float* xs = x;
    uint8_t* ys = y;
    const float sc = scale, z = zp;
    for (int64_t i = b; i < e; ++i) ys[i] = static_cast<uint8_t>(saturate_to(rne(xs[i] / sc) + z, 0, 255));
  });
}

void dynamic_quantize_linear(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  if (x.type != ElemType::F32) unsupported("DynamicQuantizeLinear of " + describe(x));
  const int64_t n = static_cast<int64_t>(x.numel());
  const DynamicParams p = dynamic_params(x.as<float>(), n, ctx.threads);
  quantize_u8(x.as<float>(), n, p, ctx.alloc<uint8_t>(0, ElemType::U8, x.shape), ctx.threads);
  *ctx.alloc<float>(1, ElemType::F32, {}) = p.scale;
  *ctx.alloc<uint8_t>(2, ElemType::U8, {}) = static_cast<uint8_t>(p.zero_point);
}

// ---------------------------------------------------------------- exact integer GEMM

// A right-hand side as int8 codes (uint8 ones shifted by -128, their zero
// points with them) with its column sums: prepared once when constant.
struct Rhs {
  int64_t k = 0, n = 0;
  bool transposed = false;      // stored [n, k] (convolution weights) instead of [k, n]
  std::vector<int8_t> b;        // codes - shift
  std::vector<int32_t> colsum;  // per output column: sum over k of b
  std::vector<int32_t> zp;      // per output column: zero point - shift
};

// `zps` has 1 or n entries (per output column).
Rhs make_rhs(ElemType t, const uint8_t* p, int64_t k, int64_t n, bool transposed,
             const std::vector<int32_t>& zps) {
  if (t != ElemType::U8 && t != ElemType::I8) unsupported(std::string("integer matrix of ") + name_of(t));
  Rhs r;
  r.k = k;
  r.n = n;
  r.transposed = transposed;
  const int32_t shift = t == ElemType::U8 ? 128 : 0;
  r.b.resize(static_cast<size_t>(k * n));
  for (int64_t i = 0; i < k * n; ++i) r.b[i] = static_cast<int8_t>(load_code(t, p, i) - shift);
  r.colsum.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < n; ++j) r.colsum[j] += transposed ? r.b[j * k + i] : r.b[i * n + j];
  r.zp.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) r.zp[j] = (zps.size() == 1 ? zps[0] : zps[j]) - shift;
  return r;
}

// c[m, n] = sum_k (a[m, k] - za[m]) * (B[k, n] - zb[n]) exactly, int32.
// `a` is uint8 or int8 codes [m, k] (row-major); `za` has 1 or m entries.
void int_gemm(ElemType at, const uint8_t* a, int64_t m, const std::vector<int32_t>& za, const Rhs& rhs,
              int32_t* c) {
  const int64_t k = rhs.k, n = rhs.n;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(c, c + m * n, 0);
    return;
  }
  const int32_t co = 0;
  const char tb = rhs.transposed ? 'T' : 'N';
  const int64_t ldb = rhs.transposed ? k : n;
  dnnl::status st;
  if (at == ElemType::U8) {
    st = dnnl::gemm_u8s8s32('N', tb, 'F', m, n, k, 1.0f, a, k, 0, rhs.b.data(), ldb, 0, 0.0f, c, n, &co);
  } else if (at == ElemType::I8) {
    st = dnnl::gemm_s8s8s32('N', tb, 'F', m, n, k, 1.0f, reinterpret_cast<const int8_t*>(a), k, 0,
                            rhs.b.data(), ldb, 0, 0.0f, c, n, &co);
  } else {
    unsupported(std::string("integer matrix of ") + name_of(at));
  }
  if (st != dnnl::status::success)
    throw Error("oneDNN integer GEMM failed (status " + std::to_string(int(st)) + ")");
  // Zero points: - za * colsum(b) - zb * rowsum(a) + k * za * zb (mod 2^32,
  // as int32 accumulation is).
  const bool any_za = std::any_of(za.begin(), za.end(), [](int32_t v) { return v != 0; });
  const bool any_zb = std::any_of(rhs.zp.begin(), rhs.zp.end(), [](int32_t v) { return v != 0; });
  if (!any_za && !any_zb) return;
  for (int64_t i = 0; i < m; ++i) {
    int64_t rowsum = 0;
    if (any_zb) {
      if (at == ElemType::U8)
        for (int64_t p = 0; p < k; ++p) rowsum += a[i * k + p];
      else
        for (int64_t p = 0; p < k; ++p) rowsum += reinterpret_cast<const int8_t*>(a)[i * k + p];
    }
    const int64_t zai = za.size() == 1 ? za[0] : za[i];
    int32_t* ci = c + i * n;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t corr =
          -zai * rhs.colsum[j] - static_cast<int64_t>(rhs.zp[j]) * rowsum + k * zai * rhs.zp[j];
      ci[j] = static_cast<int32_t>(static_cast<uint32_t>(ci[j]) + static_cast<uint32_t>(corr));
    }
  }
}

// numpy.matmul shapes (1-D operands promoted, batch dimensions broadcast).
struct MatMulShape {
  int64_t m = 1, k = 1, n = 1;
  std::vector<int64_t> batch, out, a_batch_strides, b_batch_strides;
};

MatMulShape matmul_shape(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  if (a.empty() || b.empty()) throw Error("matrix product operands must have rank >= 1");
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

// Zero points of a left-hand side: scalar, or 1-D per row.
std::vector<int32_t> lhs_zero_points(const KernelContext& ctx, size_t i, ElemType a_type, int64_t m) {
  if (!ctx.has_input(i)) return {0};
  const RunValue& z = ctx.input(i);
  if (z.type != a_type) throw Error("zero point " + describe(z) + " differs in type from its input");
  if (z.numel() == 1) return codes_of(z);
  if (z.shape.size() == 1 && z.shape[0] == m) return codes_of(z);
  unsupported("left-hand zero point " + describe(z) + " (scalar or one per row)");
}

// Zero points of a right-hand side: scalar, or one per output column.
std::vector<int32_t> rhs_zero_points(const RunValue* z, ElemType b_type, int64_t n) {
  if (!z) return {0};
  if (z->type != b_type) throw Error("zero point " + describe(*z) + " differs in type from its input");
  if (z->numel() == 1 || static_cast<int64_t>(z->numel()) == n) return codes_of(*z);
  unsupported("right-hand zero point " + describe(*z) + " (scalar or one per output column)");
}

// The int32 products of every matrix of a batched product; rhs[bi] per
// batch matrix of b (one when b is 2-D).
void batched_int_gemm(const MatMulShape& s, const RunValue& a, const std::vector<int32_t>& za,
                      const std::vector<const Rhs*>& rhs, int32_t* out) {
  const int64_t batches = static_cast<int64_t>(numel_of(s.batch));
  const int64_t asz = a.type == ElemType::U8 || a.type == ElemType::I8 ? 1 : 0;
  if (asz == 0) unsupported("integer matrix of " + describe(a));
  const uint8_t* pa = a.data->data();
  if (rhs.size() == 1 &&
      std::all_of(s.b_batch_strides.begin(), s.b_batch_strides.end(), [](int64_t v) { return v == 0; }) &&
      std::all_of(s.a_batch_strides.begin(), s.a_batch_strides.end(), [](int64_t v) { return v != 0; }) &&
      za.size() == 1) {
    // b shared by every batch and a contiguous: one [batches * m, k] product.
    int_gemm(a.type, pa, batches * s.m, za, *rhs[0], out);
    return;
  }
  for (int64_t bi = 0; bi < batches; ++bi) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (size_t d = s.batch.size(); d-- > 0;) {
      const int64_t idx = rem % s.batch[d];
      rem /= s.batch[d];
      oa += idx * s.a_batch_strides[d];
      ob += idx * s.b_batch_strides[d];
    }
    int_gemm(a.type, pa + oa * s.m * s.k, s.m, za, *rhs[rhs.size() == 1 ? 0 : ob], out + bi * s.m * s.n);
  }
}

// The Rhs of every batch matrix of b [..., k, n].
std::vector<Rhs> make_batched_rhs(const RunValue& b, const std::vector<int32_t>& zb) {
  const int64_t k = b.shape.size() >= 2 ? b.shape[b.shape.size() - 2] : b.shape[0];
  const int64_t n = b.shape.size() >= 2 ? b.shape.back() : 1;
  const int64_t mats = k * n == 0 ? 0 : static_cast<int64_t>(b.numel()) / (k * n);
  std::vector<Rhs> out;
  for (int64_t i = 0; i < std::max<int64_t>(mats, 1); ++i)
    out.push_back(make_rhs(b.type, b.data->data() + i * k * n, k, n, false, zb));
  return out;
}

// Requantizes int32 sums: round(acc * mult[col]) + zp, saturated (ONNX
// Runtime's MlasRequantizeOutput).
void requantize(const int32_t* acc, int64_t rows, int64_t cols, const std::vector<float>& mult, int32_t zp,
                ElemType out_t, uint8_t* out, int threads) {
  const Range r = range_of(out_t);
  const float lo = static_cast<float>(r.lo), hi = static_cast<float>(r.hi);
  parallel_for(threads, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)),
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i)
                   for (int64_t j = 0; j < cols; ++j) {
                     const float m = mult.size() == 1 ? mult[0] : mult[j];
                     const float v = rne(static_cast<float>(acc[i * cols + j]) * m) + static_cast<float>(zp);
                     store_code(out_t, out, i * cols + j, saturate_to(v, lo, hi));
                   }
               });
}

// Per-tensor float scale (a scalar or 1-element tensor).
float scalar_scale(const RunValue& v, const std::string& what) {
  if (v.numel() != 1) unsupported(what + " " + describe(v) + " (a scalar)");
  return floats_of(v, what)[0];
}

// Scales of a right-hand side: scalar or one per output column.
std::vector<float> rhs_scales(const RunValue& v, int64_t n, const std::string& what) {
  if (v.numel() != 1 && static_cast<int64_t>(v.numel()) != n)
    unsupported(what + " " + describe(v) + " (scalar or one per output column)");
  return floats_of(v, what);
}

// ---------------------------------------------------------------- MatMulInteger, QLinearMatMul

// Caches the prepared right-hand side when b and its zero point are constant.
class IntMatMulBase : public Kernel {
 protected:
  IntMatMulBase(const KernelInit& init, size_t b_index, size_t bzp_index)
      : b_index_(b_index), bzp_index_(bzp_index) {
    const RunValue* b = init.constants.size() > b_index ? init.constants[b_index] : nullptr;
    const bool zp_given = init.node.inputs.size() > bzp_index && !init.node.inputs[bzp_index].empty();
    const RunValue* z = zp_given && init.constants.size() > bzp_index ? init.constants[bzp_index] : nullptr;
    if (b && (!zp_given || z)) {
      const int64_t n = b->shape.size() >= 2 ? b->shape.back() : 1;
      const_b_shape_ = b->shape;
      const_rhs_ = make_batched_rhs(*b, rhs_zero_points(z, b->type, n));
      have_const_ = true;
    }
  }

  // The right-hand sides for this run (the cached ones, or made now in `tmp`).
  std::vector<const Rhs*> rhs_for(KernelContext& ctx, const MatMulShape& s, std::vector<Rhs>& tmp) const {
    const RunValue& b = ctx.input(b_index_);
    const std::vector<Rhs>* src = &const_rhs_;
    if (!have_const_) {
      tmp = make_batched_rhs(
          b, rhs_zero_points(ctx.has_input(bzp_index_) ? &ctx.input(bzp_index_) : nullptr, b.type, s.n));
      src = &tmp;
    } else if (b.shape != const_b_shape_) {
      throw Error("constant right-hand side changed shape");
    }
    std::vector<const Rhs*> out;
    for (const Rhs& r : *src) out.push_back(&r);
    return out;
  }

 private:
  size_t b_index_, bzp_index_;
  bool have_const_ = false;
  std::vector<int64_t> const_b_shape_;
  std::vector<Rhs> const_rhs_;
};

class MatMulIntegerKernel : public IntMatMulBase {
 public:
  explicit MatMulIntegerKernel(const KernelInit& init) : IntMatMulBase(init, 1, 3) {}
  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    const RunValue& b = ctx.input(1);
    const MatMulShape s = matmul_shape(a.shape, b.shape);
    const std::vector<int32_t> za = lhs_zero_points(ctx, 2, a.type, s.m);
    std::vector<Rhs> tmp;
    const std::vector<const Rhs*> rhs = rhs_for(ctx, s, tmp);
    batched_int_gemm(s, a, za, rhs, ctx.alloc<int32_t>(0, ElemType::I32, s.out));
  }
};

class QLinearMatMulKernel : public IntMatMulBase {
 public:
  explicit QLinearMatMulKernel(const KernelInit& init) : IntMatMulBase(init, 3, 5) {}
  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    const RunValue& b = ctx.input(3);
    const MatMulShape s = matmul_shape(a.shape, b.shape);
    const float sa = scalar_scale(ctx.input(1), "a_scale");
    const std::vector<int32_t> za = lhs_zero_points(ctx, 2, a.type, 1);
    const std::vector<float> sb = rhs_scales(ctx.input(4), s.n, "b_scale");
    const float sy = scalar_scale(ctx.input(6), "y_scale");
    const RunValue* yz = ctx.has_input(7) ? &ctx.input(7) : nullptr;
    const ElemType yt = yz ? yz->type : ElemType::U8;
    if (yt != ElemType::U8 && yt != ElemType::I8)
      unsupported("QLinearMatMul output " + std::string(name_of(yt)));
    const int32_t zy = yz ? codes_of(*yz).at(0) : 0;
    std::vector<Rhs> tmp;
    const std::vector<const Rhs*> rhs = rhs_for(ctx, s, tmp);
    std::vector<int32_t> acc(numel_of(s.out));
    batched_int_gemm(s, a, za, rhs, acc.data());
    std::vector<float> mult(sb.size());
    for (size_t j = 0; j < sb.size(); ++j) mult[j] = sa * sb[j] / sy;
    requantize(acc.data(), static_cast<int64_t>(acc.size()) / std::max<int64_t>(1, s.n), s.n, mult, zy, yt,
               ctx.alloc_output(0, yt, s.out), ctx.threads);
  }
};

// ---------------------------------------------------------------- DynamicQuantizeMatMul (com.microsoft)

class DynamicQuantizeMatMulKernel : public IntMatMulBase {
 public:
  explicit DynamicQuantizeMatMulKernel(const KernelInit& init) : IntMatMulBase(init, 1, 3) {}
  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    const RunValue& b = ctx.input(1);
    if (a.type != ElemType::F32) unsupported("DynamicQuantizeMatMul of " + describe(a));
    const MatMulShape s = matmul_shape(a.shape, b.shape);
    const std::vector<float> sb = rhs_scales(ctx.input(2), s.n, "b_scale");
    std::vector<float> bias;
    if (ctx.has_input(4)) {
      bias = floats_of(ctx.input(4), "bias");
      if (static_cast<int64_t>(bias.size()) != s.n)
        throw Error("bias " + describe(ctx.input(4)) + " must have N elements");
    }
    const int64_t na = static_cast<int64_t>(a.numel());
    const DynamicParams p = dynamic_params(a.as<float>(), na, ctx.threads);
    auto qbuf = ctx.pool().get(static_cast<uint64_t>(std::max<int64_t>(na, 1)));
    quantize_u8(a.as<float>(), na, p, qbuf->mutable_data(), ctx.threads);
    RunValue qa;
    qa.type = ElemType::U8;
    qa.shape = a.shape;
    qa.data = qbuf;
    std::vector<Rhs> tmp;
    const std::vector<const Rhs*> rhs = rhs_for(ctx, s, tmp);
    std::vector<int32_t> acc(numel_of(s.out));
    batched_int_gemm(s, qa, {p.zero_point}, rhs, acc.data());
    std::vector<float> mult(sb.size());
    for (size_t j = 0; j < sb.size(); ++j) mult[j] = p.scale * sb[j];
    float* y = ctx.alloc<float>(0, ElemType::F32, s.out);
    const int64_t rows = static_cast<int64_t>(acc.size()) / std::max<int64_t>(1, s.n);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < s.n; ++j) {
        float v = static_cast<float>(acc[i * s.n + j]) * (mult.size() == 1 ? mult[0] : mult[j]);
        if (!bias.empty()) v += bias[j];
        y[i * s.n + j] = v;
      }
  }
};

// ---------------------------------------------------------------- ConvInteger, QLinearConv

struct ConvGeometry {
  int64_t batch = 0, cin = 0, cout = 0, group = 1;
  std::vector<int64_t> out;  // output spatial dimensions
  // Up to three spatial dimensions, as (depth, height, width) with leading
  // dimensions of 1 for 1-D and 2-D convolutions.
  int64_t in3[3] = {1, 1, 1}, k3[3] = {1, 1, 1}, out3[3] = {1, 1, 1}, s3[3] = {1, 1, 1}, d3[3] = {1, 1, 1},
          p3[3] = {0, 0, 0};
  int64_t in_size = 1, out_size = 1, kernel_size = 1;
};

ConvGeometry conv_geometry(const Node& node, const std::vector<int64_t>& x, const std::vector<int64_t>& w) {
  if (x.size() < 3 || w.size() != x.size())
    throw Error("convolution of " + shape_str(x) + " by weights " + shape_str(w) +
                ": ranks must match and be >= 3");
  const size_t nsp = x.size() - 2;
  if (nsp > 3) unsupported(std::to_string(nsp) + "-D convolution (1-, 2- and 3-D are)");
  ConvGeometry g;
  g.batch = x[0];
  g.cin = x[1];
  g.cout = w[0];
  g.group = attr_int(node, "group", 1);
  if (g.group < 1 || g.cin % g.group || g.cout % g.group || w[1] * g.group != g.cin)
    throw Error("group " + std::to_string(g.group) + " does not fit input " + shape_str(x) + " and weights " +
                shape_str(w));
  const std::vector<int64_t> kernel(w.begin() + 2, w.end());
  const std::vector<int64_t> ks = attr_ints(node, "kernel_shape");
  if (!ks.empty() && ks != kernel)
    throw Error("kernel_shape " + shape_str(ks) + " differs from the weights' " + shape_str(kernel));
  const std::vector<int64_t> strides = attr_ints(node, "strides", std::vector<int64_t>(nsp, 1));
  const std::vector<int64_t> dil = attr_ints(node, "dilations", std::vector<int64_t>(nsp, 1));
  const std::vector<int64_t> pads = attr_ints(node, "pads", std::vector<int64_t>(2 * nsp, 0));
  if (strides.size() != nsp || dil.size() != nsp || pads.size() != 2 * nsp)
    throw Error("strides, dilations or pads do not match " + std::to_string(nsp) + " spatial dimensions");
  const std::string ap = attr_string(node, "auto_pad", "NOTSET");
  g.out.resize(nsp);
  for (size_t d = 0; d < nsp; ++d) {
    const int64_t in = x[d + 2];
    if (strides[d] < 1 || dil[d] < 1) throw Error("strides and dilations must be >= 1");
    const int64_t ext = (kernel[d] - 1) * dil[d] + 1;
    int64_t pb = pads[d], pe = pads[d + nsp];
    if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
      const int64_t o = (in + strides[d] - 1) / strides[d];
      const int64_t total = std::max<int64_t>(0, (o - 1) * strides[d] + ext - in);
      pb = ap == "SAME_UPPER" ? total / 2 : total - total / 2;
      pe = total - pb;
    } else if (ap == "VALID") {
      pb = pe = 0;
    } else if (ap != "NOTSET") {
      unsupported("auto_pad '" + ap + "'");
    }
    g.out[d] = (in + pb + pe - ext) / strides[d] + 1;
    if (g.out[d] < 1) throw Error("convolution output would be empty for input " + shape_str(x));
    const size_t d3 = 3 - nsp + d;
    g.in3[d3] = in;
    g.k3[d3] = kernel[d];
    g.out3[d3] = g.out[d];
    g.s3[d3] = strides[d];
    g.d3[d3] = dil[d];
    g.p3[d3] = pb;
    g.in_size *= in;
    g.out_size *= g.out[d];
    g.kernel_size *= kernel[d];
  }
  return g;
}

// im2col of one image and group as int8 [cin/group * kernel_size, out_size]
// (a row per channel and kernel tap, the output positions along it): uint8
// inputs are shifted by -128 (x ^ 0x80); taps outside the image get `pad`
// (the shifted zero point).
void im2col_s8(const ConvGeometry& g, const uint8_t* x, int64_t c0, bool shift, int8_t pad, int8_t* col,
               int threads) {
  const int64_t cg = g.cin / g.group;
  const uint8_t flip = shift ? 0x80 : 0;
  const int64_t ID = g.in3[0], IH = g.in3[1], IW = g.in3[2];
  const int64_t OD = g.out3[0], OH = g.out3[1], OW = g.out3[2];
  parallel_for(threads, cg * g.kernel_size, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t c = r / g.kernel_size, kk = r % g.kernel_size;
      const int64_t kw = kk % g.k3[2], kh = (kk / g.k3[2]) % g.k3[1], kd = kk / (g.k3[2] * g.k3[1]);
      const uint8_t* xc = x + (c0 + c) * g.in_size;
      int8_t* row = col + r * g.out_size;
      for (int64_t od = 0; od < OD; ++od) {
        const int64_t id = od * g.s3[0] - g.p3[0] + kd * g.d3[0];
        for (int64_t oh = 0; oh < OH; ++oh) {
          int8_t* o = row + (od * OH + oh) * OW;
          const int64_t ih = oh * g.s3[1] - g.p3[1] + kh * g.d3[1];
          if (id < 0 || id >= ID || ih < 0 || ih >= IH) {
            std::fill(o, o + OW, pad);
            continue;
          }
          const uint8_t* xr = xc + (id * IH + ih) * IW;
          const int64_t w0 = kw * g.d3[2] - g.p3[2];
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t iw = ow * g.s3[2] + w0;
            o[ow] = iw >= 0 && iw < IW ? static_cast<int8_t>(xr[iw] ^ flip) : pad;
          }
        }
      }
    }
  });
}

// Weights of one group: raw codes [cout/group, cin/group * kernel_size], the
// left-hand side of the convolution's GEMM, with their row sums.
struct ConvWeights {
  ElemType type = ElemType::I8;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> w;
  std::vector<int32_t> rowsum, zp;
};

// The int32 convolution sums [batch, cout, out...] of x (codes) by weights
// prepared per group: Y_g = W_g (cout/g x ck) @ col (ck x out_size), exact,
// zero points applied afterwards (see the file comment).
class IntConvBase : public Kernel {
 protected:
  IntConvBase(const KernelInit& init, size_t w_index, size_t wzp_index) : wzp_index_(wzp_index) {
    const RunValue* w = init.constants.size() > w_index ? init.constants[w_index] : nullptr;
    const bool zp_given = init.node.inputs.size() > wzp_index && !init.node.inputs[wzp_index].empty();
    const RunValue* z = zp_given && init.constants.size() > wzp_index ? init.constants[wzp_index] : nullptr;
    if (w && (!zp_given || z)) {
      const_w_shape_ = w->shape;
      const_w_ = make_weights(*w, z, attr_int(init.node, "group", 1));
      have_const_ = true;
    }
  }

  static std::vector<ConvWeights> make_weights(const RunValue& w, const RunValue* z, int64_t group) {
    if (w.type != ElemType::U8 && w.type != ElemType::I8) unsupported("convolution weights " + describe(w));
    if (w.shape.empty() || group < 1 || w.shape[0] % group)
      throw Error("weights " + describe(w) + " do not fit the group");
    const int64_t cout = w.shape[0];
    const int64_t mg = cout / group;
    const int64_t ck = cout == 0 ? 0 : static_cast<int64_t>(w.numel()) / cout;
    const std::vector<int32_t> zs = rhs_zero_points(z, w.type, cout);
    std::vector<ConvWeights> out(static_cast<size_t>(group));
    for (int64_t gi = 0; gi < group; ++gi) {
      ConvWeights& cw = out[gi];
      cw.type = w.type;
      cw.rows = mg;
      cw.cols = ck;
      const uint8_t* p = w.data->data() + gi * mg * ck;
      cw.w.assign(p, p + mg * ck);
      cw.rowsum.assign(static_cast<size_t>(mg), 0);
      cw.zp.resize(static_cast<size_t>(mg));
      for (int64_t m = 0; m < mg; ++m) {
        for (int64_t k = 0; k < ck; ++k) cw.rowsum[m] += load_code(w.type, p, m * ck + k);
        cw.zp[m] = zs.size() == 1 ? zs[0] : zs[gi * mg + m];
      }
    }
    return out;
  }

  // acc [batch, cout, out_size] int32.
  void conv_sums(KernelContext& ctx, const RunValue& x, const RunValue& w, int32_t zx, const ConvGeometry& g,
                 int32_t* acc) const {
    if (x.type != ElemType::U8 && x.type != ElemType::I8) unsupported("convolution input " + describe(x));
    std::vector<ConvWeights> tmp;
    const std::vector<ConvWeights>* ws = &const_w_;
    if (!have_const_) {
      tmp = make_weights(w, ctx.has_input(wzp_index_) ? &ctx.input(wzp_index_) : nullptr, g.group);
      ws = &tmp;
    } else if (w.shape != const_w_shape_) {
      throw Error("constant weights changed shape");
    }
    const bool shift = x.type == ElemType::U8;
    const int32_t zxs = shift ? zx - 128 : zx;  // the zero point of the int8 columns
    const int64_t cg = g.cin / g.group, mg = g.cout / g.group, P = g.out_size;
    const int64_t ck = cg * g.kernel_size;
    std::vector<int8_t> col(static_cast<size_t>(ck * P));
    std::vector<int32_t> colsum(static_cast<size_t>(P));
    const uint8_t* px = x.data->data();
    for (int64_t nb = 0; nb < g.batch; ++nb)
      for (int64_t gi = 0; gi < g.group; ++gi) {
        const ConvWeights& cw = (*ws)[gi];
        im2col_s8(g, px + nb * g.cin * g.in_size, gi * cg, shift, static_cast<int8_t>(zxs), col.data(),
                  ctx.threads);
        int32_t* c = acc + (nb * g.cout + gi * mg) * P;
        if (mg == 0 || P == 0) continue;
        const int32_t co = 0;
        dnnl::status st;
        if (cw.type == ElemType::U8)
          st = dnnl::gemm_u8s8s32('N', 'N', 'F', mg, P, ck, 1.0f, cw.w.data(), ck, 0, col.data(), P, 0, 0.0f,
                                  c, P, &co);
        else
          st =
              dnnl::gemm_s8s8s32('N', 'N', 'F', mg, P, ck, 1.0f, reinterpret_cast<const int8_t*>(cw.w.data()),
                                 ck, 0, col.data(), P, 0, 0.0f, c, P, &co);
        if (st != dnnl::status::success)
          throw Error("oneDNN integer GEMM failed (status " + std::to_string(static_cast<int>(st)) + ")");
        const bool any_zw = std::any_of(cw.zp.begin(), cw.zp.end(), [](int32_t v) { return v != 0; });
        if (any_zw) {
          std::fill(colsum.begin(), colsum.end(), 0);
          for (int64_t k = 0; k < ck; ++k) {
            const int8_t* r = col.data() + k * P;
            for (int64_t p = 0; p < P; ++p) colsum[p] += r[p];
          }
        }
        // - zx * rowsum(W) - zw * colsum(col) + ck * zw * zx, mod 2^32.
        parallel_for(ctx.threads, mg, 1, [&](int64_t b, int64_t e) {
          for (int64_t m = b; m < e; ++m) {
            const int64_t zw = cw.zp[m];
            const uint32_t fixed = static_cast<uint32_t>(-int64_t{zxs} * cw.rowsum[m] + ck * zw * zxs);
            uint32_t* cm = reinterpret_cast<uint32_t*>(c + m * P);
            if (zw == 0) {
              for (int64_t p = 0; p < P; ++p) cm[p] += fixed;
            } else {
              for (int64_t p = 0; p < P; ++p) cm[p] += fixed - static_cast<uint32_t>(zw * colsum[p]);
            }
          }
        });
      }
  }

  size_t wzp_index_;
  bool have_const_ = false;
  std::vector<int64_t> const_w_shape_;
  std::vector<ConvWeights> const_w_;
};

std::vector<int64_t> conv_out_shape(const ConvGeometry& g) {
  std::vector<int64_t> s = {g.batch, g.cout};
  s.insert(s.end(), g.out.begin(), g.out.end());
  return s;
}

int32_t input_zero_point(const KernelContext& ctx, size_t i, ElemType t) {
  if (!ctx.has_input(i)) return 0;
  const RunValue& z = ctx.input(i);
  if (z.type != t) throw Error("zero point " + describe(z) + " differs in type from its input");
  if (z.numel() != 1) unsupported("input zero point " + describe(z) + " (a scalar)");
  return codes_of(z)[0];
}

class ConvIntegerKernel : public IntConvBase {
 public:
  explicit ConvIntegerKernel(const KernelInit& init) : IntConvBase(init, 1, 3) {}
  void run(KernelContext& ctx) override {
    const RunValue& x = ctx.input(0);
    const RunValue& w = ctx.input(1);
    const ConvGeometry g = conv_geometry(ctx.node, x.shape, w.shape);
    const int32_t zx = input_zero_point(ctx, 2, x.type);
    conv_sums(ctx, x, w, zx, g, ctx.alloc<int32_t>(0, ElemType::I32, conv_out_shape(g)));
  }
};

class QLinearConvKernel : public IntConvBase {
 public:
  explicit QLinearConvKernel(const KernelInit& init) : IntConvBase(init, 3, 5) {}
  void run(KernelContext& ctx) override {
    const RunValue& x = ctx.input(0);
    const RunValue& w = ctx.input(3);
    const ConvGeometry g = conv_geometry(ctx.node, x.shape, w.shape);
    const float sx = scalar_scale(ctx.input(1), "x_scale");
    const int32_t zx = input_zero_point(ctx, 2, x.type);
    const std::vector<float> sw = rhs_scales(ctx.input(4), g.cout, "w_scale");
    const float sy = scalar_scale(ctx.input(6), "y_scale");
    const RunValue& yz = ctx.input(7);
    const ElemType yt = yz.type;
    if (yt != ElemType::U8 && yt != ElemType::I8) unsupported("QLinearConv output " + describe(yz));
    const int32_t zy = input_zero_point(ctx, 7, yt);
    std::vector<int32_t> acc(static_cast<size_t>(g.batch * g.cout * g.out_size));
    conv_sums(ctx, x, w, zx, g, acc.data());
    if (ctx.has_input(8)) {
      const RunValue& bias = ctx.input(8);
      if (bias.type != ElemType::I32 || static_cast<int64_t>(bias.numel()) != g.cout)
        throw Error("bias " + describe(bias) + " must be int32 with one value per output channel");
      const int32_t* pb = bias.as<int32_t>();
      for (int64_t nb = 0; nb < g.batch; ++nb)
        for (int64_t m = 0; m < g.cout; ++m)
          for (int64_t p = 0; p < g.out_size; ++p) acc[(nb * g.cout + m) * g.out_size + p] += pb[m];
    }
    uint8_t* out = ctx.alloc_output(0, yt, conv_out_shape(g));
    const Range r = range_of(yt);
    for (int64_t nb = 0; nb < g.batch; ++nb)
      for (int64_t m = 0; m < g.cout; ++m) {
        const float mult = sx * (sw.size() == 1 ? sw[0] : sw[m]) / sy;
        const int64_t base = (nb * g.cout + m) * g.out_size;
        for (int64_t p = 0; p < g.out_size; ++p) {
          const float v = rne(static_cast<float>(acc[base + p]) * mult) + static_cast<float>(zy);
          store_code(yt, out, base + p, saturate_to(v, static_cast<float>(r.lo), static_cast<float>(r.hi)));
        }
      }
  }
};

// ---------------------------------------------------------------- QLinearAdd, QLinearMul (com.microsoft)

struct QParams {
  float scale;
  int32_t zp;
};

QParams qparams(const KernelContext& ctx, size_t si, size_t zi, ElemType t, const std::string& what) {
  QParams p;
  p.scale = scalar_scale(ctx.input(si), what + "_scale");
  p.zp = input_zero_point(ctx, zi, t);
  return p;
}

// C = quantize(f(dequantize(A), dequantize(B))), broadcasting.
template <bool kMul>
void qlinear_binary(KernelContext& ctx) {
  const RunValue& a = ctx.input(0);
  const RunValue& b = ctx.input(3);
  if ((a.type != ElemType::U8 && a.type != ElemType::I8) || b.type != a.type)
    unsupported("operands " + describe(a) + " and " + describe(b));
  const QParams pa = qparams(ctx, 1, 2, a.type, "A");
  const QParams pb = qparams(ctx, 4, 5, a.type, "B");
  const QParams pc = qparams(ctx, 6, 7, a.type, "C");
  const Range r = range_of(a.type);
  const float lo = static_cast<float>(r.lo), hi = static_cast<float>(r.hi);
  // ONNX Runtime's float forms: Add rescales each operand to C's scale, Mul
  // multiplies by one combined scale.
  const float ra = pa.scale / pc.scale, rb = pb.scale / pc.scale, rm = pa.scale * pb.scale / pc.scale;
  const float zc = static_cast<float>(pc.zp);
  const std::vector<int64_t> shape = broadcast_shapes(a.shape, b.shape);
  const std::vector<int64_t> sa = broadcast_strides(a.shape, shape), sb = broadcast_strides(b.shape, shape);
  const int64_t n = static_cast<int64_t>(numel_of(shape));
  uint8_t* o = ctx.alloc_output(0, a.type, shape);
  const uint8_t* xa = a.data->data();
  const uint8_t* xb = b.data->data();
  parallel_for(ctx.threads, n, 16384, [&](int64_t beg, int64_t end) {
    for (int64_t i = beg; i < end; ++i) {
      int64_t rem = i, ia = 0, ib = 0;
      for (size_t d = shape.size(); d-- > 0;) {
        const int64_t idx = rem % shape[d];
        rem /= shape[d];
        ia += idx * sa[d];
        ib += idx * sb[d];
      }
      const float va = static_cast<float>(load_code(a.type, xa, ia) - pa.zp);
      const float vb = static_cast<float>(load_code(a.type, xb, ib) - pb.zp);
      const float v = kMul ? va * vb * rm : ra * va + rb * vb;
      store_code(a.type, o, i, saturate_to(rne(v) + zc, lo, hi));
    }
  });
}

// ---------------------------------------------------------------- QGemm (com.microsoft)

// Y = alpha * A' B' + C with A' = transA ? A^T : A (uint8 or int8 codes,
// per-tensor), B' likewise (per tensor or per column of B'), C int32 at scale
// alpha * a_scale * b_scale, broadcast to [M, N]. With y_scale the sums are
// requantized (y_zero_point's type, uint8 when absent); without, Y is float.
class QGemmKernel : public Kernel {
 public:
  explicit QGemmKernel(const KernelInit& init)
      : trans_a_(attr_int(init.node, "transA", 0) != 0),
        trans_b_(attr_int(init.node, "transB", 0) != 0),
        alpha_(attr_float(init.node, "alpha", 1.0f)) {
    const RunValue* b = init.constants.size() > 3 ? init.constants[3] : nullptr;
    const bool zp_given = init.node.inputs.size() > 5 && !init.node.inputs[5].empty();
    const RunValue* z = zp_given && init.constants.size() > 5 ? init.constants[5] : nullptr;
    if (b && b->shape.size() == 2 && (!zp_given || z)) {
      const_b_shape_ = b->shape;
      const_rhs_ = rhs_of(*b, z);
      have_const_ = true;
    }
  }

  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    const RunValue& b = ctx.input(3);
    if (a.shape.size() != 2 || b.shape.size() != 2)
      throw Error("A " + describe(a) + " and B " + describe(b) + " must be 2-D");
    const int64_t m = trans_a_ ? a.shape[1] : a.shape[0], k = trans_a_ ? a.shape[0] : a.shape[1];
    Rhs tmp;
    const Rhs* rhs = &const_rhs_;
    if (!have_const_ || b.shape != const_b_shape_) {
      tmp = rhs_of(b, ctx.has_input(5) ? &ctx.input(5) : nullptr);
      rhs = &tmp;
    }
    if (rhs->k != k) throw Error("cannot multiply A " + describe(a) + " by B " + describe(b));
    const int64_t n = rhs->n;
    // A' as a contiguous [m, k] matrix.
    const uint8_t* pa = a.data->data();
    std::vector<uint8_t> at;
    if (trans_a_) {
      at.resize(static_cast<size_t>(m * k));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p) at[i * k + p] = pa[p * m + i];
      pa = at.data();
    }
    const float sa = scalar_scale(ctx.input(1), "a_scale");
    const std::vector<int32_t> za = lhs_zero_points(ctx, 2, a.type, 1);
    const std::vector<float> sb = rhs_scales(ctx.input(4), n, "b_scale");
    std::vector<int32_t> acc(static_cast<size_t>(m * n));
    int_gemm(a.type, pa, m, za, *rhs, acc.data());
    if (ctx.has_input(6)) {
      const RunValue& c = ctx.input(6);
      if (c.type != ElemType::I32) throw Error("C " + describe(c) + " must be int32");
      const std::vector<int64_t> shape = broadcast_shapes(c.shape, {m, n});
      if (shape != std::vector<int64_t>{m, n})
        throw Error("C " + describe(c) + " does not broadcast to [" + std::to_string(m) + ", " +
                    std::to_string(n) + "]");
      const std::vector<int64_t> st = broadcast_strides(c.shape, shape);
      const int32_t* pc = c.as<int32_t>();
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const int64_t off = (st.size() > 1 ? i * st[st.size() - 2] : 0) + j * st.back();
          acc[i * n + j] =
              static_cast<int32_t>(static_cast<uint32_t>(acc[i * n + j]) + static_cast<uint32_t>(pc[off]));
        }
    }
    std::vector<float> mult(sb.size());
    for (size_t j = 0; j < sb.size(); ++j) mult[j] = alpha_ * sa * sb[j];
    if (!ctx.has_input(7)) {
      float* y = ctx.alloc<float>(0, ElemType::F32, {m, n});
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j)
          y[i * n + j] = static_cast<float>(acc[i * n + j]) * (mult.size() == 1 ? mult[0] : mult[j]);
      return;
    }
    const float sy = scalar_scale(ctx.input(7), "y_scale");
    const RunValue* yz = ctx.has_input(8) ? &ctx.input(8) : nullptr;
    const ElemType yt = yz ? yz->type : ElemType::U8;
    if (yt != ElemType::U8 && yt != ElemType::I8) unsupported("QGemm output " + std::string(name_of(yt)));
    const int32_t zy = yz ? codes_of(*yz).at(0) : 0;
    for (float& v : mult) v /= sy;
    requantize(acc.data(), m, n, mult, zy, yt, ctx.alloc_output(0, yt, {m, n}), ctx.threads);
  }

 private:
  Rhs rhs_of(const RunValue& b, const RunValue* z) const {
    if (b.shape.size() != 2) throw Error("B " + describe(b) + " must be 2-D");
    const int64_t k = trans_b_ ? b.shape[1] : b.shape[0], n = trans_b_ ? b.shape[0] : b.shape[1];
    return make_rhs(b.type, b.data->data(), k, n, trans_b_, rhs_zero_points(z, b.type, n));
  }

  bool trans_a_, trans_b_;
  float alpha_;
  bool have_const_ = false;
  std::vector<int64_t> const_b_shape_;
  Rhs const_rhs_;
};

// ---------------------------------------------------------------- 8-bit in, 8-bit out (com.microsoft)

// Code x -> quantize(f(dequantize(x))) for all 256 codes of `t`, as ONNX
// Runtime's QLinearLookupBase builds its table: dequantize in float, f in
// float, round half to even, saturate.
template <class F>
std::vector<uint8_t> lookup_table(ElemType t, QParams x, QParams y, F&& f) {
  const Range r = range_of(t);
  std::vector<uint8_t> table(256);
  for (int32_t c = r.lo; c <= r.hi; ++c) {
    const float v = f(x.scale * static_cast<float>(c - x.zp));
    const int32_t q = saturate_to(rne(v / y.scale) + static_cast<float>(y.zp), static_cast<float>(r.lo),
                                  static_cast<float>(r.hi));
    table[static_cast<uint8_t>(c)] = static_cast<uint8_t>(q);
  }
  return table;
}

// QLinearSigmoid, QLinearLeakyRelu: X, X_scale, X_zero_point, Y_scale, Y_zero_point.
template <class F>
void qlinear_unary(KernelContext& ctx, F&& f) {
  const RunValue& x = ctx.input(0);
  if (x.type != ElemType::U8 && x.type != ElemType::I8) unsupported("input " + describe(x));
  const QParams px = qparams(ctx, 1, 2, x.type, "X");
  const QParams py = qparams(ctx, 3, 4, x.type, "Y");
  const std::vector<uint8_t> table = lookup_table(x.type, px, py, f);
  uint8_t* o = ctx.alloc_output(0, x.type, x.shape);
  const uint8_t* p = x.data->data();
  const int64_t n = static_cast<int64_t>(x.numel());
  for (int64_t i = 0; i < n; ++i) o[i] = table[p[i]];
}

// QLinearConcat: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per
// input; inputs with other parameters than Y's are requantized.
void qlinear_concat(KernelContext& ctx) {
  if (ctx.num_inputs() < 5 || (ctx.num_inputs() - 2) % 3 != 0)
    throw Error("QLinearConcat needs Y_scale, Y_zero_point and (X, X_scale, X_zero_point) per input");
  const ElemType t = ctx.input(1).type;
  if (t != ElemType::U8 && t != ElemType::I8) unsupported("output zero point " + describe(ctx.input(1)));
  const QParams py = qparams(ctx, 0, 1, t, "Y");
  const size_t count = (ctx.num_inputs() - 2) / 3;
  const RunValue& first = ctx.input(2);
  const int64_t rank = static_cast<int64_t>(first.shape.size());
  const int64_t axis = norm_axis(attr_required(ctx.node, "axis").i, rank);
  std::vector<int64_t> out = first.shape;
  out[axis] = 0;
  for (size_t i = 0; i < count; ++i) {
    const RunValue& x = ctx.input(2 + 3 * i);
    if (x.type != t) throw Error("input " + describe(x) + " differs in type from Y_zero_point");
    if (static_cast<int64_t>(x.shape.size()) != rank) throw Error("inputs differ in rank");
    for (int64_t d = 0; d < rank; ++d)
      if (d != axis && x.shape[d] != first.shape[d])
        throw Error("input " + describe(x) + " differs from " + describe(first) + " outside the axis");
    out[axis] += x.shape[axis];
  }
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out[d];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= out[d];
  uint8_t* o = ctx.alloc_output(0, t, out);
  const int64_t row = out[axis] * inner;
  int64_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    const RunValue& x = ctx.input(2 + 3 * i);
    const QParams px = qparams(ctx, 3 + 3 * i, 4 + 3 * i, t, "X");
    const bool same = px.scale == py.scale && px.zp == py.zp;
    const std::vector<uint8_t> table =
        same ? std::vector<uint8_t>() : lookup_table(t, px, py, [](float v) { return v; });
    const int64_t len = x.shape[axis] * inner;
    const uint8_t* p = x.data->data();
    for (int64_t r = 0; r < outer; ++r) {
      uint8_t* dst = o + r * row + at;
      const uint8_t* src = p + r * len;
      if (same) {
        std::memcpy(dst, src, static_cast<size_t>(len));
      } else {
        for (int64_t j = 0; j < len; ++j) dst[j] = table[src[j]];
      }
    }
    at += len;
  }
}

// Runs the ai.onnx float kernel of `op` (AveragePool, GlobalAveragePool) on
// dequantize(X) and quantizes its output to Y's scale and zero point, as
// ONNX Runtime's QLinearAveragePool / QLinearGlobalAveragePool compute
// (float average of the dequantized window, rounded half to even).
void qlinear_pool(KernelContext& ctx, const char* op) {
  const RunValue& x = ctx.input(0);
  if (x.type != ElemType::U8 && x.type != ElemType::I8) unsupported("input " + describe(x));
  if (attr_int(ctx.node, "channels_last", 0) != 0) unsupported("channels_last = 1");
  const QParams px = qparams(ctx, 1, 2, x.type, "x");
  const QParams py = qparams(ctx, 3, 4, x.type, "y");
  std::vector<float> f(x.numel());
  const uint8_t* p = x.data->data();
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = px.scale * static_cast<float>(load_code(x.type, p, static_cast<int64_t>(i)) - px.zp);
  const RunValue xf{ElemType::F32, x.shape, make_blob(f.data(), f.size() * 4)};
  const KernelTable::Entry* e = kernel_table().find("", op, 19);
  if (!e) throw Error(std::string("no float ") + op + " kernel");
  const KernelInit init{ctx.node, 19, ctx.threads, {&xf}, {}};
  std::unique_ptr<Kernel> k = e->factory(init);
  std::vector<RunValue> outs(1);
  KernelContext sub(ctx.node, 19, ctx.threads, ctx.pool(), {&xf}, outs);
  k->run(sub);
  const RunValue& y = outs[0];
  const Range r = range_of(x.type);
  uint8_t* o = ctx.alloc_output(0, x.type, y.shape);
  const float* py_f = y.as<float>();
  for (uint64_t i = 0; i < y.numel(); ++i)
    store_code(x.type, o, static_cast<int64_t>(i),
               saturate_to(rne(py_f[i] / py.scale) + static_cast<float>(py.zp), static_cast<float>(r.lo),
                           static_cast<float>(r.hi)));
}

// ---------------------------------------------------------------- MatMulNBits (com.microsoft)

// Y = A @ dequantize(B)^T (+ bias), B [N, blocks, blob] with codes packed
// from the low bits of each byte up, the layout qforge's
// passes/common/quant_math.h (pack_matmul_nbits) writes; absent zero points
// are 2^(bits - 1). The weights are dequantized to f32 once when constant and
// multiplied with oneDNN's matmul (f32_matmul, dnnl_util.h); accuracy_level is
// accepted, the product is f32 whatever it says.
class MatMulNBitsKernel : public Kernel {
 public:
  explicit MatMulNBitsKernel(const KernelInit& init) {
    const Node& n = init.node;
    k_ = attr_required(n, "K").i;
    n_ = attr_required(n, "N").i;
    bits_ = attr_required(n, "bits").i;
    block_ = attr_required(n, "block_size").i;
    if (bits_ != 2 && bits_ != 4 && bits_ != 8)
      unsupported("bits " + std::to_string(bits_) + " (2, 4 and 8 are)");
    if (block_ < 16 || (block_ & (block_ - 1)))
      throw Error("block_size must be a power of 2 >= 16, got " + std::to_string(block_));
    if (k_ <= 0 || n_ <= 0) throw Error("K and N must be positive");
    bool all_const = true;
    for (size_t i = 1; i < n.inputs.size(); ++i)
      if (!n.inputs[i].empty() && (i >= init.constants.size() || !init.constants[i])) all_const = false;
    if (all_const) {
      std::vector<const RunValue*> in(6, nullptr);
      for (size_t i = 1; i < n.inputs.size() && i < 6; ++i)
        if (!n.inputs[i].empty()) in[i] = init.constants[i];
      weights_ = dequantize(in);
      if (in[5]) bias_ = floats_of(*in[5], "bias");
      have_const_ = true;
    }
  }

  void run(KernelContext& ctx) override {
    const RunValue& a = ctx.input(0);
    if (a.type != ElemType::F32 && a.type != ElemType::F16) unsupported("MatMulNBits of " + describe(a));
    if (a.shape.empty() || a.shape.back() != k_)
      throw Error("input " + describe(a) + " must end in K = " + std::to_string(k_));
    std::vector<float> wtmp, btmp;
    const std::vector<float>* w = &weights_;
    const std::vector<float>* bias = &bias_;
    if (!have_const_) {
      std::vector<const RunValue*> in(6, nullptr);
      for (size_t i = 1; i < 6; ++i)
        if (ctx.has_input(i)) in[i] = &ctx.input(i);
      wtmp = dequantize(in);
      w = &wtmp;
      if (in[5]) btmp = floats_of(*in[5], "bias");
      bias = &btmp;
    }
    if (!bias->empty() && static_cast<int64_t>(bias->size()) != n_) throw Error("bias must have N elements");
    const int64_t m = static_cast<int64_t>(a.numel()) / k_;
    std::vector<int64_t> out_shape = a.shape;
    out_shape.back() = n_;
    std::vector<float> af;
    const float* pa = a.as<float>();
    if (a.type == ElemType::F16) {
      af = floats_of(a, "A");
      pa = af.data();
    }
    float* y = nullptr;
    std::vector<float> yf;
    if (a.type == ElemType::F32) {
      y = ctx.alloc<float>(0, ElemType::F32, out_shape);
    } else {
      yf.resize(static_cast<size_t>(m * n_));
      y = yf.data();
    }
    f32_matmul(pa, w->data(), y, m, k_, n_, true);  // W is [N, K]
    if (!bias->empty())
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n_; ++j) y[i * n_ + j] += (*bias)[j];
    if (a.type == ElemType::F16) {
      uint16_t* o = ctx.alloc<uint16_t>(0, ElemType::F16, out_shape);
      for (int64_t i = 0; i < m * n_; ++i) o[i] = fp32_to_fp16(y[i]);
    }
  }

 private:
  // W [N, K] in f32 from B, scales, zero_points, g_idx (inputs 1..4).
  std::vector<float> dequantize(const std::vector<const RunValue*>& in) const {
    const RunValue* b = in[1];
    const RunValue* sc = in[2];
    const RunValue* zp = in[3];
    const RunValue* gidx = in[4];
    if (!b || !sc) throw Error("MatMulNBits needs B and scales");
    const int64_t nb = (k_ + block_ - 1) / block_;
    const int64_t blob = block_ * bits_ / 8;
    if (b->type != ElemType::U8 || static_cast<int64_t>(b->numel()) != n_ * nb * blob)
      throw Error("B " + describe(*b) + " must be uint8 [N, " + std::to_string(nb) + ", " +
                  std::to_string(blob) + "]");
    const std::vector<float> s = floats_of(*sc, "scales");
    if (static_cast<int64_t>(s.size()) != n_ * nb)
      throw Error("scales " + describe(*sc) + " must have N * blocks elements");
    const int64_t zp_cols = (nb * bits_ + 7) / 8;
    const int32_t mask = (1 << bits_) - 1;  // codes packed from the low bits of each byte up
    std::vector<float> zf;                  // per (n, block)
    zf.assign(static_cast<size_t>(n_ * nb), static_cast<float>(1 << (bits_ - 1)));
    if (zp) {
      if (zp->type != ElemType::U8)
        unsupported("zero points of type " + describe(*zp) + " (packed uint8 are)");
      if (static_cast<int64_t>(zp->numel()) != n_ * zp_cols)
        throw Error("zero points " + describe(*zp) + " must have N * " + std::to_string(zp_cols) +
                    " elements");
      const uint8_t* pz = zp->data->data();
      for (int64_t j = 0; j < n_; ++j)
        for (int64_t bl = 0; bl < nb; ++bl) {
          zf[j * nb + bl] =
              static_cast<float>((pz[j * zp_cols + bl * bits_ / 8] >> ((bl * bits_) % 8)) & mask);
        }
    }
    std::vector<int32_t> g;
    if (gidx) {
      if (gidx->type != ElemType::I32 || static_cast<int64_t>(gidx->numel()) != k_)
        throw Error("g_idx " + describe(*gidx) + " must be int32 with K elements");
      g.assign(gidx->as<int32_t>(), gidx->as<int32_t>() + k_);
      for (int32_t v : g)
        if (v < 0 || v >= nb) throw Error("g_idx value " + std::to_string(v) + " is not a block index");
    }
    std::vector<float> w(static_cast<size_t>(n_ * k_));
    const uint8_t* pb = b->data->data();
    for (int64_t j = 0; j < n_; ++j)
      for (int64_t kk = 0; kk < k_; ++kk) {
        const int64_t bl = g.empty() ? kk / block_ : g[kk];
        const int64_t in_block = kk % block_;
        const uint8_t* blk = pb + (j * nb + kk / block_) * blob;
        const int32_t q = (blk[in_block * bits_ / 8] >> ((in_block * bits_) % 8)) & mask;
        w[j * k_ + kk] = (static_cast<float>(q) - zf[j * nb + bl]) * s[j * nb + bl];
      }
    return w;
  }

  int64_t k_ = 0, n_ = 0, bits_ = 4, block_ = 32;
  bool have_const_ = false;
  std::vector<float> weights_, bias_;
};

template <class K>
KernelFactory factory_of() {
  return [](const KernelInit& init) { return std::unique_ptr<Kernel>(new K(init)); };
}

}  // namespace

void register_ops_quant(KernelTable& t) {
  t.add_fn("", "QuantizeLinear", 10, kMaxOpset, [](KernelContext& c) { quantize_linear(c, false); });
  t.add_fn("", "DequantizeLinear", 10, kMaxOpset, [](KernelContext& c) { dequantize_linear(c, false); });
  t.add_fn("", "DynamicQuantizeLinear", 11, kMaxOpset, dynamic_quantize_linear);
  t.add("", "MatMulInteger", 10, kMaxOpset, factory_of<MatMulIntegerKernel>());
  t.add("", "QLinearMatMul", 10, kMaxOpset, factory_of<QLinearMatMulKernel>());
  t.add("", "ConvInteger", 10, kMaxOpset, factory_of<ConvIntegerKernel>());
  t.add("", "QLinearConv", 10, kMaxOpset, factory_of<QLinearConvKernel>());
  t.add_fn("com.microsoft", "QuantizeLinear", 1, kMaxOpset,
           [](KernelContext& c) { quantize_linear(c, true); });
  t.add_fn("com.microsoft", "DequantizeLinear", 1, kMaxOpset,
           [](KernelContext& c) { dequantize_linear(c, true); });
  t.add_fn("com.microsoft", "QLinearAdd", 1, kMaxOpset, qlinear_binary<false>);
  t.add_fn("com.microsoft", "QLinearMul", 1, kMaxOpset, qlinear_binary<true>);
  t.add("com.microsoft", "QGemm", 1, kMaxOpset, factory_of<QGemmKernel>());
  t.add_fn("com.microsoft", "QLinearSigmoid", 1, kMaxOpset,
           [](KernelContext& c) { qlinear_unary(c, [](float v) { return 1.0f / (1.0f + std::exp(-v)); }); });
  t.add_fn("com.microsoft", "QLinearLeakyRelu", 1, kMaxOpset, [](KernelContext& c) {
    const float alpha = attr_float(c.node, "alpha", 0.01f);
    qlinear_unary(c, [alpha](float v) { return v >= 0 ? v : alpha * v; });
  });
  t.add_fn("com.microsoft", "QLinearConcat", 1, kMaxOpset, qlinear_concat);
  t.add_fn("com.microsoft", "QLinearAveragePool", 1, kMaxOpset,
           [](KernelContext& c) { qlinear_pool(c, "AveragePool"); });
  t.add_fn("com.microsoft", "QLinearGlobalAveragePool", 1, kMaxOpset,
           [](KernelContext& c) { qlinear_pool(c, "GlobalAveragePool"); });
  t.add("com.microsoft", "DynamicQuantizeMatMul", 1, kMaxOpset, factory_of<DynamicQuantizeMatMulKernel>());
  t.add("com.microsoft", "MatMulNBits", 1, kMaxOpset, factory_of<MatMulNBitsKernel>());
}

}  // namespace qforge::cpu
