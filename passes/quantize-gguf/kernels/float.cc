// F32 / F16 / BF16 rows: plain element conversions.
#include <cstring>

#include "internal.h"
#include "simd.h"

namespace qforge::gguf::detail {

void quantize_f32(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float*) {
  std::memcpy(dst, src, static_cast<size_t>(nrows * n_per_row) * sizeof(float));
}

void quantize_f16(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float*) {
  // quantize_chunk has rejected non-finite inputs, which the vector path
  // does not convert like ggml.
  simd::fp32_to_fp16_row(src, static_cast<uint16_t*>(dst), nrows * n_per_row);
}

void quantize_bf16(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float*) {
  // Inputs are finite (quantize_chunk checked), so fp32_to_bf16's NaN case
  // cannot occur and the branch-free rounding below vectorizes.
  const int64_t n = nrows * n_per_row;
  auto* y = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t w = bits_of(src[i]);
    y[i] = static_cast<uint16_t>((w + 0x7fffu + ((w >> 16) & 1u)) >> 16);
  }
}

void dequantize_f32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void dequantize_f16(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(x[i]);
}

void dequantize_bf16(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(x[i]);
}

}  // namespace qforge::gguf::detail
