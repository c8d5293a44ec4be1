// QuantizeLinear and DequantizeLinear (ai.onnx 10+, and com.microsoft's
// versions ONNX Runtime reads at lower opsets): per tensor or per axis
// (`axis`, opset 13+ and com.microsoft), codes int8/uint8/int16/uint16/
// int4/uint4 (4-bit packed two per byte, low nibble first) and int32 for
// DequantizeLinear. QuantizeLinear rounds x / scale half to even, adds the
// zero point and saturates to the code type (the ONNX operator spec);
// blocked quantization (block_size, opset 21) is refused.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel.h"

namespace qforge::cpu {
namespace {

bool is_code_type(ElemType t) {
  return t == ElemType::I8 || t == ElemType::U8 || t == ElemType::I16 || t == ElemType::U16 ||
         t == ElemType::I4 || t == ElemType::U4;
}

// The code range of `t`.
void code_range(ElemType t, int64_t& lo, int64_t& hi) {
  switch (t) {
    case ElemType::I8: lo = -128, hi = 127; return;
    case ElemType::U8: lo = 0, hi = 255; return;
    case ElemType::I16: lo = -32768, hi = 32767; return;
    case ElemType::U16: lo = 0, hi = 65535; return;
    case ElemType::I4: lo = -8, hi = 7; return;
    case ElemType::U4: lo = 0, hi = 15; return;
    default: unsupported(std::string("quantized type ") + name_of(t));
  }
}

// Element i of a code tensor as an integer.
int64_t code_at(const RunValue& v, uint64_t i) {
  const uint8_t* b = v.data->data();
  switch (v.type) {
    case ElemType::I8: return reinterpret_cast<const int8_t*>(b)[i];
    case ElemType::U8: return b[i];
    case ElemType::I16: return reinterpret_cast<const int16_t*>(b)[i];
    case ElemType::U16: return reinterpret_cast<const uint16_t*>(b)[i];
    case ElemType::I32: return reinterpret_cast<const int32_t*>(b)[i];
    case ElemType::U4: return (b[i / 2] >> (4 * (i % 2))) & 0xF;
    case ElemType::I4: {
      const int64_t n = (b[i / 2] >> (4 * (i % 2))) & 0xF;
      return n >= 8 ? n - 16 : n;
    }
    default: unsupported(std::string("quantized type ") + name_of(v.type));
  }
}

void set_code(uint8_t* b, ElemType t, uint64_t i, int64_t q) {
  switch (t) {
    case ElemType::I8: reinterpret_cast<int8_t*>(b)[i] = static_cast<int8_t>(q); return;
    case ElemType::U8: b[i] = static_cast<uint8_t>(q); return;
    case ElemType::I16: reinterpret_cast<int16_t*>(b)[i] = static_cast<int16_t>(q); return;
    case ElemType::U16: reinterpret_cast<uint16_t*>(b)[i] = static_cast<uint16_t>(q); return;
    case ElemType::I4:
    case ElemType::U4: {
      const uint8_t nib = static_cast<uint8_t>(q & 0xF);
      uint8_t& byte = b[i / 2];
      byte = i % 2 ? static_cast<uint8_t>((byte & 0x0F) | (nib << 4))
                   : static_cast<uint8_t>((byte & 0xF0) | nib);
      return;
    }
    default: unsupported(std::string("quantized type ") + name_of(t));
  }
}

// Per-element index into the scale / zero point: 0 per tensor, else the
// element's coordinate along `axis`.
struct AxisIndex {
  uint64_t inner = 1, channels = 1;
  uint64_t operator()(uint64_t i) const { return channels == 1 ? 0 : (i / inner) % channels; }
};

AxisIndex axis_index(const KernelContext& ctx, const RunValue& x, const RunValue& scale) {
  AxisIndex a;
  if (scale.numel() == 1 && scale.shape.size() <= 1) return a;
  if (attr_int(ctx.node, "block_size", 0) != 0) unsupported("blocked quantization (block_size)");
  if (scale.shape.size() != 1) unsupported("a scale of rank " + std::to_string(scale.shape.size()));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 1), rank);
  if (x.shape[axis] != scale.shape[0])
    throw Error("scale has " + std::to_string(scale.shape[0]) + " values for axis " + std::to_string(axis) +
                " of " + describe(x));
  a.channels = static_cast<uint64_t>(scale.shape[0]);
  for (int64_t d = axis + 1; d < rank; ++d) a.inner *= static_cast<uint64_t>(x.shape[d]);
  return a;
}

void quantize_linear(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& scale = ctx.input(1);
  if (x.type != ElemType::F32 || scale.type != ElemType::F32)
    unsupported("QuantizeLinear of " + describe(x) + " with scale " + describe(scale));
  ElemType t = ElemType::U8;
  const RunValue* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  if (zp) t = zp->type;
  if (!is_code_type(t)) unsupported(std::string("QuantizeLinear to ") + name_of(t));
  const AxisIndex ax = axis_index(ctx, x, scale);
  int64_t lo = 0, hi = 0;
  code_range(t, lo, hi);
  const uint64_t n = x.numel();
  uint8_t* out = ctx.alloc_output(0, t, x.shape);
  if (t == ElemType::I4 || t == ElemType::U4) std::fill(out, out + bytes_of(t, n), uint8_t{0});
  const float* xv = x.as<float>();
  const float* sv = scale.as<float>();
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t c = ax(i);
    const int64_t z = zp ? code_at(*zp, c) : 0;
    const float r = std::nearbyint(xv[i] / sv[c]);  // ties to even in the default rounding mode
    double q = static_cast<double>(r) + static_cast<double>(z);
    q = q < static_cast<double>(lo) ? static_cast<double>(lo) : q > static_cast<double>(hi) ? hi : q;
    set_code(out, t, i, static_cast<int64_t>(q));
  }
}

void dequantize_linear(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& scale = ctx.input(1);
  if (scale.type != ElemType::F32) unsupported("DequantizeLinear with scale " + describe(scale));
  if (!is_code_type(x.type) && x.type != ElemType::I32) unsupported("DequantizeLinear of " + describe(x));
  const RunValue* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  if (zp && zp->type != x.type)
    throw Error("zero point " + describe(*zp) + " does not have the type of " + describe(x));
  const AxisIndex ax = axis_index(ctx, x, scale);
  const uint64_t n = x.numel();
  float* out = ctx.alloc<float>(0, ElemType::F32, x.shape);
  const float* sv = scale.as<float>();
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t c = ax(i);
    const int64_t z = zp ? code_at(*zp, c) : 0;
    out[i] = static_cast<float>(code_at(x, i) - z) * sv[c];
  }
}

}  // namespace

void register_ops_quant(KernelTable& t) {
  t.add_fn("", "QuantizeLinear", 10, kMaxOpset, quantize_linear);
  t.add_fn("", "DequantizeLinear", 10, kMaxOpset, dequantize_linear);
  t.add_fn("com.microsoft", "QuantizeLinear", 1, kMaxOpset, quantize_linear);
  t.add_fn("com.microsoft", "DequantizeLinear", 1, kMaxOpset, dequantize_linear);
}

}  // namespace qforge::cpu
