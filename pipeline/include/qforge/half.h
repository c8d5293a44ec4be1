// Half-precision conversions, one for the whole tree: the ONNX passes'
// f16 scales and weights, the GGUF kernels' block scales, datasets and tests
// all use these. Header-only (inline) so a kernel loop compiles them in place.
//
// IEEE binary16 <-> binary32 and bfloat16 <-> binary32, bit-exact: round to
// nearest, ties to even; overflow gives infinity. NaNs: fp32_to_fp16 returns
// the quiet NaN 0x7e00 with the input's sign, fp16_to_fp32 and fp32_to_bf16
// return quiet NaNs (as x86's conversions and ggml's do).
#pragma once

#include <cstdint>
#include <cstring>

namespace qforge {

namespace half_detail {
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
}  // namespace half_detail

// binary16 -> binary32, exact.
inline float fp16_to_fp32(uint16_t h) {
  using half_detail::float_of;
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return float_of(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0u));
  if (exp != 0) return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return float_of(sign);
  // subnormal half: mant * 2^-24, a normal float
  uint32_t e = 113;  // exponent of 2^-14, decremented while normalizing
  while (!(mant & 0x400u)) {
    mant <<= 1;
    --e;
  }
  return float_of(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

// binary32 -> binary16, round to nearest even.
inline uint16_t fp32_to_fp16(float f) {
  const uint32_t w = half_detail::bits_of(f);
  const uint16_t sign = static_cast<uint16_t>((w >> 16) & 0x8000u);
  const uint32_t a = w & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (a >= 0x38800000u) {                                              // normal half (>= 2^-14)
    uint32_t q = ((a >> 23) - 112u) << 10 | ((a >> 13) & 0x3ffu);
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero
  // subnormal half: the result counts units of 2^-24
  const uint32_t e = a >> 23;  // 102 ... 112
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14 ... 24
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

inline float bf16_to_fp32(uint16_t h) { return half_detail::float_of(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaNs keep their top bits and are made quiet.
inline uint16_t fp32_to_bf16(float f) {
  const uint32_t w = half_detail::bits_of(f);
  if ((w & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((w >> 16) | 0x40u);
  const uint32_t lsb = (w >> 16) & 1u;
  return static_cast<uint16_t>((w + 0x7fffu + lsb) >> 16);
}

}  // namespace qforge
