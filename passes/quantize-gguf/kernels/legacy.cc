// Legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (+ MXFP4
// dequantization).
//
// Without an imatrix these use ggml's "reference" round-to-scale rules; with
// one, Q4_0/Q5_0 search a symmetric scale (make_qx_quants) and Q4_1/Q5_1 an
// asymmetric scale and min (make_qkx3_quants), each weighted by
// imatrix * sqrt(sigma2 + x^2).
#include <cmath>
#include <cstring>

#include "internal.h"
#include "search.h"

namespace qforge::gguf::detail {
namespace {

// Mean of x^2 over the row, summed in order (ggml's sigma2 for legacy types).
float row_sigma2(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

// Block statistics of G consecutive blocks, scanned side by side so that the
// compare chains of different blocks overlap; each block is still scanned in
// element order, as ggml does.

// Value of largest magnitude (the first one on ties) and its magnitude.
template <int G>
inline void signed_absmax(const float* x, float* amax_out, float* max_out) {
  float amax[G], max[G];
  for (int g = 0; g < G; ++g) amax[g] = max[g] = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    for (int g = 0; g < G; ++g) {
      const float v = x[g * kQK + j];
      if (amax[g] < std::fabs(v)) {
        amax[g] = std::fabs(v);
        max[g] = v;
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    amax_out[g] = amax[g];
    max_out[g] = max[g];
  }
}

template <int G>
inline void min_max(const float* x, float* min_out, float* max_out) {
  float min[G], max[G];
  for (int g = 0; g < G; ++g) {
    min[g] = 3.40282347e+38f;
    max[g] = -3.40282347e+38f;
  }
  for (int j = 0; j < kQK; ++j) {
    for (int g = 0; g < G; ++g) {
      const float v = x[g * kQK + j];
      if (v < min[g]) min[g] = v;
      if (v > max[g]) max[g] = v;
    }
  }
  for (int g = 0; g < G; ++g) {
    min_out[g] = min[g];
    max_out[g] = max[g];
  }
}

constexpr int kGroup = 4;

// Calls body(block index, stat a, stat b) for every block, with the two
// statistics `Stat` computes, kGroup blocks at a time.
template <void (*Stat4)(const float*, float*, float*), void (*Stat1)(const float*, float*, float*),
          typename Body>
inline void for_each_block(const float* x, int64_t nb, Body body) {
  float a[kGroup], b[kGroup];
  int64_t i = 0;
  for (; i + kGroup <= nb; i += kGroup) {
    Stat4(x + i * kQK, a, b);
    for (int g = 0; g < kGroup; ++g) body(i + g, a[g], b[g]);
  }
  for (; i < nb; ++i) {
    Stat1(x + i * kQK, a, b);
    body(i, a[0], b[0]);
  }
}

inline int min_int(int a, int b) { return a < b ? a : b; }

// float -> int as ggml's C casts compile on x86-64 (see cvtt). When the block
// is known to stay within +-1024 (`in_range`) a plain conversion gives the
// same result and lets the compiler vectorize the loop.
template <typename F>
inline void truncate_all(bool in_range, F value, int32_t* out) {
  if (in_range) {
    for (int j = 0; j < kQK; ++j) out[j] = static_cast<int32_t>(value(j));
  } else {
    for (int j = 0; j < kQK; ++j) out[j] = cvtt(value(j));
  }
}

// 5th bits of 32 levels -> the block's qh word (little endian).
inline void pack_q5(const uint8_t* L, uint8_t* qs, uint8_t* qh_out) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t a = L[j], b = L[j + 16];
    qs[j] = static_cast<uint8_t>((a & 0x0f) | ((b & 0x0f) << 4));
    qh |= ((a & 0x10u) >> 4) << j;
    qh |= ((b & 0x10u) >> 4) << (j + 16);
  }
  for (int k = 0; k < 4; ++k) qh_out[k] = static_cast<uint8_t>(qh >> (8 * k));
}

// ---------------------------------------------------------------- Q4_0

void q4_0_plain(const float* x0, BlockQ4_0* y, int64_t nb) {
  for_each_block<signed_absmax<kGroup>, signed_absmax<1>>(x0, nb, [&](int64_t i, float amax, float max) {
    const float* x = x0 + i * kQK;
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    int32_t t[kQK];
    truncate_all(
        amax * std::fabs(id) < 1024.0f, [&](int j) { return x[j] * id + 8.5f; }, t);
    for (int j = 0; j < 16; ++j) {
      const uint8_t qa = static_cast<uint8_t>(min_int(15, wrap_i8(t[j])));
      const uint8_t qb = static_cast<uint8_t>(min_int(15, wrap_i8(t[j + 16])));
      y[i].qs[j] = static_cast<uint8_t>(qa | (qb << 4));
    }
  });
}

// ---------------------------------------------------------------- Q4_1

void q4_1_plain(const float* x0, BlockQ4_1* y, int64_t nb) {
  for_each_block<min_max<kGroup>, min_max<1>>(x0, nb, [&](int64_t i, float min, float max) {
    const float* x = x0 + i * kQK;
    const float d = (max - min) / 15;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(min);
    int32_t t[kQK];
    truncate_all((max - min) * id < 1024.0f, [&](int j) { return (x[j] - min) * id + 0.5f; }, t);
    for (int j = 0; j < 16; ++j) {
      const uint8_t qa = static_cast<uint8_t>(min_int(15, wrap_i8(t[j])));
      const uint8_t qb = static_cast<uint8_t>(min_int(15, wrap_i8(t[j + 16])));
      y[i].qs[j] = static_cast<uint8_t>(qa | (qb << 4));
    }
  });
}

// ---------------------------------------------------------------- Q5_0

void q5_0_plain(const float* x0, BlockQ5_0* y, int64_t nb) {
  for_each_block<signed_absmax<kGroup>, signed_absmax<1>>(x0, nb, [&](int64_t i, float amax, float max) {
    const float* x = x0 + i * kQK;
    uint8_t L[kQK];
    const float d = max / -16;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    int32_t t[kQK];
    truncate_all(
        amax * std::fabs(id) < 1024.0f, [&](int j) { return x[j] * id + 16.5f; }, t);
    for (int j = 0; j < kQK; ++j) L[j] = static_cast<uint8_t>(min_int(31, wrap_i8(t[j])));
    pack_q5(L, y[i].qs, y[i].qh);
  });
}

// ---------------------------------------------------------------- Q5_1

void q5_1_plain(const float* x0, BlockQ5_1* y, int64_t nb) {
  for_each_block<min_max<kGroup>, min_max<1>>(x0, nb, [&](int64_t i, float min, float max) {
    const float* x = x0 + i * kQK;
    uint8_t L[kQK];
    const float d = (max - min) / 31;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(min);
    int32_t t[kQK];
    truncate_all((max - min) * id < 1024.0f, [&](int j) { return (x[j] - min) * id + 0.5f; }, t);
    for (int j = 0; j < kQK; ++j) L[j] = wrap_u8(t[j]);
    pack_q5(L, y[i].qs, y[i].qh);
  });
}

// ---------------------------------------------------------------- Q8_0

void q8_0_plain(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // The largest |x|: for finite inputs the order of magnitudes is the order
    // of their bit patterns, and a max over integers vectorizes.
    uint32_t amax_bits = 0;
    for (int j = 0; j < kQK; ++j) {
      const uint32_t a = bits_of(x[j]) & 0x7fffffffu;
      amax_bits = amax_bits > a ? amax_bits : a;
    }
    const float amax = float_of(amax_bits);
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    if (amax * id < 1024.0f) {
      // Common case: every |x * id| < 1024, so roundf is trunc plus a
      // branch-free half-up step, and the result fits int8 as it is.
      for (int j = 0; j < kQK; ++j) {
        const float v = x[j] * id;
        const float a = std::fabs(v);
        int r = static_cast<int>(a);
        r += (a - static_cast<float>(r)) >= 0.5f;
        y[i].qs[j] = static_cast<int8_t>(v < 0 ? -r : r);
      }
    } else {  // infinite id (subnormal d) and the like
      for (int j = 0; j < kQK; ++j) y[i].qs[j] = wrap_i8(round_away_cvtt(x[j] * id));
    }
  }
}

// ---------------------------------------------------------------- imatrix paths

// Feeds the blocks of every row, up to simd::kBatch at a time, to
// search(count, xs, ws, first) with their imatrix weights
// qw * sqrt(sigma2 + x^2); `first` is the chunk-wide index of block xs[0].
template <typename Search>
void weighted_batches(const float* src, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      Search search) {
  const int64_t nb = n_per_row / kQK;
  float w[simd::kBatch][kQK];
  const float* xs[simd::kBatch];
  const float* ws[simd::kBatch];
  for (int64_t r = 0; r < nrows; ++r) {
    const float* x = src + r * n_per_row;
    const float sigma2 = row_sigma2(x, n_per_row);
    for (int64_t ib0 = 0; ib0 < nb; ib0 += simd::kBatch) {
      const int count = static_cast<int>(nb - ib0 < simd::kBatch ? nb - ib0 : simd::kBatch);
      for (int b = 0; b < count; ++b) {
        const float* xb = x + kQK * (ib0 + b);
        const float* qw = imatrix + kQK * (ib0 + b);
        for (int j = 0; j < kQK; ++j) w[b][j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
        xs[b] = xb;
        ws[b] = w[b];
      }
      search(count, xs, ws, r * nb + ib0);
    }
  }
}

// Q4_0 / Q5_0: symmetric levels (make_qx_quants), 4 or 5 bits.
template <typename Block, int kNmax>
void symmetric_weighted(const float* src, Block* y, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  weighted_batches(src, nrows, n_per_row, imatrix,
                   [&](int count, const float* const* xs, const float* const* ws, int64_t first) {
                     float d[simd::kBatch];
                     int8_t L[simd::kBatch][kQK];
                     int8_t* Lp[simd::kBatch];
                     for (int b = 0; b < count; ++b) Lp[b] = L[b];
                     qx_search(count, kQK, kNmax, xs, ws, d, Lp);
                     for (int b = 0; b < count; ++b) {
                       Block& blk = y[first + b];
                       blk.d = fp32_to_fp16(d[b]);
                       uint8_t U[kQK];
                       for (int j = 0; j < kQK; ++j) U[j] = static_cast<uint8_t>(L[b][j]);
                       if constexpr (kNmax == 8) {
                         for (int j = 0; j < 16; ++j)
                           blk.qs[j] = static_cast<uint8_t>(U[j] | (U[j + 16] << 4));
                       } else {
                         pack_q5(U, blk.qs, blk.qh);
                       }
                     }
                   });
}

// Q4_1 / Q5_1: scale and min (make_qkx3_quants), 4 or 5 bits.
template <typename Block, int kNmax>
void asymmetric_weighted(const float* src, Block* y, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  const simd::QkxParams params{kNmax, -0.9f, 0.05f, 36, false, true};
  weighted_batches(src, nrows, n_per_row, imatrix,
                   [&](int count, const float* const* xs, const float* const* ws, int64_t first) {
                     float d[simd::kBatch], min[simd::kBatch];
                     uint8_t L[simd::kBatch][kQK];
                     uint8_t* Lp[simd::kBatch];
                     for (int b = 0; b < count; ++b) Lp[b] = L[b];
                     qkx_search(count, kQK, xs, ws, params, d, min, Lp);
                     for (int b = 0; b < count; ++b) {
                       Block& blk = y[first + b];
                       blk.d = fp32_to_fp16(d[b]);
                       blk.m = fp32_to_fp16(-min[b]);
                       if constexpr (kNmax == 15) {
                         for (int j = 0; j < 16; ++j)
                           blk.qs[j] = static_cast<uint8_t>(L[b][j] | (L[b][j + 16] << 4));
                       } else {
                         pack_q5(L[b], blk.qs, blk.qh);
                       }
                     }
                   });
}

}  // namespace

void quantize_q4_0(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  if (!imatrix) return q4_0_plain(src, static_cast<BlockQ4_0*>(dst), nrows * n_per_row / kQK);
  symmetric_weighted<BlockQ4_0, 8>(src, static_cast<BlockQ4_0*>(dst), nrows, n_per_row, imatrix);
}

void quantize_q4_1(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  if (!imatrix) return q4_1_plain(src, static_cast<BlockQ4_1*>(dst), nrows * n_per_row / kQK);
  asymmetric_weighted<BlockQ4_1, 15>(src, static_cast<BlockQ4_1*>(dst), nrows, n_per_row, imatrix);
}

void quantize_q5_0(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  if (!imatrix) return q5_0_plain(src, static_cast<BlockQ5_0*>(dst), nrows * n_per_row / kQK);
  symmetric_weighted<BlockQ5_0, 16>(src, static_cast<BlockQ5_0*>(dst), nrows, n_per_row, imatrix);
}

void quantize_q5_1(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  if (!imatrix) return q5_1_plain(src, static_cast<BlockQ5_1*>(dst), nrows * n_per_row / kQK);
  asymmetric_weighted<BlockQ5_1, 31>(src, static_cast<BlockQ5_1*>(dst), nrows, n_per_row, imatrix);
}

// ggml ignores the imatrix for Q8_0.
void quantize_q8_0(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float*) {
  q8_0_plain(src, static_cast<BlockQ8_0*>(dst), nrows * n_per_row / kQK);
}

// ---------------------------------------------------------------- dequantize

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0x0f) - 8) * d;
      y[j + 16] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>(x[i].qs[j] & 0x0f) * d + m;
      y[j + 16] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

namespace {
inline uint32_t load_qh(const uint8_t* qh) {
  return static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
         static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
}
}  // namespace

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int a = ((x[i].qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10)) - 16;
      const int b = ((x[i].qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
      y[j] = static_cast<float>(a) * d;
      y[j + 16] = static_cast<float>(b) * d;
    }
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int a = (x[i].qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10);
      const int b = (x[i].qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
      y[j] = static_cast<float>(a) * d + m;
      y[j + 16] = static_cast<float>(b) * d + m;
    }
  }
}

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void dequantize_mxfp4(const void* src, float* y, int64_t n) {
  // E2M1 levels times two; the E8M0 scale is halved to compensate.
  static const int8_t kValues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  const auto* x = static_cast<const BlockMXFP4*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const uint8_t e = x[i].e;
    const float d = float_of(e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>(kValues[x[i].qs[j] & 0x0f]) * d;
      y[j + 16] = static_cast<float>(kValues[x[i].qs[j] >> 4]) * d;
    }
  }
}

}  // namespace qforge::gguf::detail
