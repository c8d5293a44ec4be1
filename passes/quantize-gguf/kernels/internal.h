// Private to the gguf kernels: block layouts, scalar conversions and the
// rounding helpers every quantizer shares.
//
// Everything here reproduces ggml's arithmetic bit for bit (ggml 0.25.1, as
// shipped in node-llama-cpp 3.22.1). Two things matter for that:
//  - float operations happen in the same order with the same types; the kernel
//    sources are compiled with -ffp-contract=off and without fast-math;
//  - where ggml converts a float to an integer with a plain C cast (undefined
//    for NaN / out of range), the x86-64 result is reproduced explicitly
//    (`cvtt`): NaN and out-of-range values become INT32_MIN, whose low byte
//    is 0. That keeps degenerate blocks (e.g. a scale whose inverse overflows)
//    byte-identical on every platform.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qforge/half.h"

namespace qforge::gguf::detail {

// ------------------------------------------------------------ bit casts

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ------------------------------------------------------------ fp16 / bf16

// The tree's one scalar conversion (qforge/half.h), which is ggml's bit for
// bit. simd.cc keeps a vectorised row conversion (fp32_to_fp16_row) whose
// results equal these; it is a different implementation of the same function,
// not a different rounding.
using ::qforge::bf16_to_fp32;
using ::qforge::fp16_to_fp32;
using ::qforge::fp32_to_bf16;
using ::qforge::fp32_to_fp16;

// ------------------------------------------------------------ rounding

// Round to nearest (ties to even) through the 1.5 * 2^23 trick; only exact for
// |v| <= 2^22 but the formula is kept as is so out-of-range values wrap the
// same way ggml's do.
inline int nearest_int(float v) {
  const float t = v + 12582912.f;
  return static_cast<int>(bits_of(t) & 0x007fffffu) - 0x00400000;
}

// float -> int32 truncation with x86-64 cvttss2si semantics: NaN and values
// outside [-2^31, 2^31) give INT32_MIN.
inline int32_t cvtt(float f) {
  if (f >= -2147483648.0f && f < 2147483648.0f) return static_cast<int32_t>(f);
  return INT32_MIN;
}

// roundf (half away from zero) followed by an x86 float->int truncation.
inline int32_t round_away_cvtt(float f) {
  const float a = f < 0 ? -f : f;
  if (!(a < 8388608.f)) return cvtt(f);  // already integral, or NaN / huge
  float t = static_cast<float>(static_cast<int32_t>(a));
  if (a - t >= 0.5f) t += 1.0f;
  const int32_t r = static_cast<int32_t>(t);
  return f < 0 ? -r : r;
}

// Low byte of an int, the way C's conversion to int8_t / uint8_t wraps.
inline int8_t wrap_i8(int32_t v) { return static_cast<int8_t>(static_cast<uint8_t>(v & 0xff)); }
inline uint8_t wrap_u8(int32_t v) { return static_cast<uint8_t>(v & 0xff); }

// ------------------------------------------------------------ block layouts
// Byte-compatible with ggml-common.h (QK_K = 256).

constexpr int kQK = 32;    // legacy block
constexpr int kQKK = 256;  // k-quant super-block

struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d, dmin;
};
struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
struct BlockTQ1_0 {
  uint8_t qs[48];
  uint8_t qh[4];
  uint16_t d;
};
struct BlockTQ2_0 {
  uint8_t qs[64];
  uint16_t d;
};
struct BlockMXFP4 {
  uint8_t e;
  uint8_t qs[16];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "layout");
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "layout");
static_assert(sizeof(BlockQ8_0) == 34, "layout");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "layout");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176, "layout");
static_assert(sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292, "layout");
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136, "layout");
static_assert(sizeof(BlockTQ1_0) == 54 && sizeof(BlockTQ2_0) == 66, "layout");
static_assert(sizeof(BlockMXFP4) == 17, "layout");

// The 16 levels of IQ4_NL / IQ4_XS.
extern const int8_t kIQ4NLValues[16];

// ------------------------------------------------------------ kernels
// Quantizers take `nrows` consecutive rows of `n_per_row` floats and write
// `nrows` consecutive rows of blocks; imatrix (n_per_row weights) may be null.
// Dequantizers take `n` elements (a multiple of the block size).

using QuantizeFn = void (*)(const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                            const float* imatrix);
using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);

void quantize_f32(const float*, void*, int64_t, int64_t, const float*);
void quantize_f16(const float*, void*, int64_t, int64_t, const float*);
void quantize_bf16(const float*, void*, int64_t, int64_t, const float*);
void quantize_q4_0(const float*, void*, int64_t, int64_t, const float*);
void quantize_q4_1(const float*, void*, int64_t, int64_t, const float*);
void quantize_q5_0(const float*, void*, int64_t, int64_t, const float*);
void quantize_q5_1(const float*, void*, int64_t, int64_t, const float*);
void quantize_q8_0(const float*, void*, int64_t, int64_t, const float*);
void quantize_q2_K(const float*, void*, int64_t, int64_t, const float*);
void quantize_q3_K(const float*, void*, int64_t, int64_t, const float*);
void quantize_q4_K(const float*, void*, int64_t, int64_t, const float*);
void quantize_q5_K(const float*, void*, int64_t, int64_t, const float*);
void quantize_q6_K(const float*, void*, int64_t, int64_t, const float*);
void quantize_iq4_nl(const float*, void*, int64_t, int64_t, const float*);
void quantize_iq4_xs(const float*, void*, int64_t, int64_t, const float*);

void dequantize_f32(const void*, float*, int64_t);
void dequantize_f16(const void*, float*, int64_t);
void dequantize_bf16(const void*, float*, int64_t);
void dequantize_q4_0(const void*, float*, int64_t);
void dequantize_q4_1(const void*, float*, int64_t);
void dequantize_q5_0(const void*, float*, int64_t);
void dequantize_q5_1(const void*, float*, int64_t);
void dequantize_q8_0(const void*, float*, int64_t);
void dequantize_mxfp4(const void*, float*, int64_t);
void dequantize_q2_K(const void*, float*, int64_t);
void dequantize_q3_K(const void*, float*, int64_t);
void dequantize_q4_K(const void*, float*, int64_t);
void dequantize_q5_K(const void*, float*, int64_t);
void dequantize_q6_K(const void*, float*, int64_t);
void dequantize_q8_K(const void*, float*, int64_t);
void dequantize_tq1_0(const void*, float*, int64_t);
void dequantize_tq2_0(const void*, float*, int64_t);
void dequantize_iq4_nl(const void*, float*, int64_t);
void dequantize_iq4_xs(const void*, float*, int64_t);

}  // namespace qforge::gguf::detail
