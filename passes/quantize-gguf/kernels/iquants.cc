// Non-linear 4-bit formats: IQ4_NL (32-element blocks, fp16 scale) and IQ4_XS
// (256-element super-blocks, 6-bit sub-block scales). Elements map to the
// nearest of 16 fixed levels; the scale per 32 elements is searched over 15
// candidates by weighted least squares (weights x^2, or imatrix *
// sqrt(sigma2 + x^2)).
#include <cmath>
#include <cstring>

#include "internal.h"
#include "search.h"
#include "simd.h"

namespace qforge::gguf::detail {

const int8_t kIQ4NLValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

namespace {

// ggml's IQ4 weights: x^2, or imatrix * sqrt(sigma2 + x^2).
void block_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  if (qw) {
    for (int j = 0; j < 32; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
  } else {
    for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
  }
}

// ggml's sigma2 of a (super-)block: 2 * mean of x^2, computed as sum * (2/n).
inline float block_sigma2(const float* x, int n) {
  float s = 0;
  for (int j = 0; j < n; ++j) s += x[j] * x[j];
  s *= 2.f / static_cast<float>(n);
  return s;
}

void pack_nibbles(const uint8_t* L, int n, uint8_t* q4) {
  for (int i = 0; i < n / 32; ++i)
    for (int j = 0; j < 16; ++j)
      q4[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

// IQ4_NL: `nb` consecutive 32-element blocks (`nb_row` per row), up to
// simd::kBatch searched together.
void iq4_nl_rows(const float* x, BlockIQ4_NL* y, int64_t nb, int64_t nb_row, const float* imatrix) {
  float weights[simd::kBatch][32], d[simd::kBatch];
  const float* xs[simd::kBatch];
  const float* ws[simd::kBatch];
  for (int64_t i0 = 0; i0 < nb; i0 += simd::kBatch) {
    const int count = static_cast<int>(nb - i0 < simd::kBatch ? nb - i0 : simd::kBatch);
    for (int b = 0; b < count; ++b) {
      const float* xb = x + 32 * (i0 + b);
      const float* qw = imatrix ? imatrix + 32 * ((i0 + b) % nb_row) : nullptr;
      block_weights(xb, qw, block_sigma2(xb, 32), weights[b]);
      xs[b] = xb;
      ws[b] = weights[b];
    }
    iq4_search(count, 32, xs, ws, d);
    for (int b = 0; b < count; ++b) {
      BlockIQ4_NL& blk = y[i0 + b];
      blk.d = fp32_to_fp16(d[b]);
      const float id = d[b] != 0 ? 1 / d[b] : 0;
      uint8_t L[32];
      simd::iq4_indices(32, xs[b], id, L);
      pack_nibbles(L, 32, blk.qs);
    }
  }
}

// IQ4_XS: 8 sub-block scales per super-block, quantized to 6 bits against
// -max_scale/32; super-blocks are searched two at a time.
void iq4_xs_rows(const float* x, BlockIQ4_XS* y, int64_t nb, int64_t nb_row, const float* imatrix) {
  float weights[16][32], scales[16];
  const float* xs[16];
  const float* ws[16];
  for (int64_t i0 = 0; i0 < nb; i0 += 2) {
    const int nsb = nb - i0 < 2 ? 1 : 2;
    for (int sb = 0; sb < nsb; ++sb) {
      const float* xb = x + kQKK * (i0 + sb);
      const float* qw = imatrix ? imatrix + kQKK * ((i0 + sb) % nb_row) : nullptr;
      const float sigma2 = block_sigma2(xb, kQKK);
      for (int ib = 0; ib < 8; ++ib) {
        block_weights(xb + 32 * ib, qw ? qw + 32 * ib : nullptr, sigma2, weights[8 * sb + ib]);
        xs[8 * sb + ib] = xb + 32 * ib;
        ws[8 * sb + ib] = weights[8 * sb + ib];
      }
    }
    iq4_search(8 * nsb, 32, xs, ws, scales);
    for (int sb = 0; sb < nsb; ++sb) {
      BlockIQ4_XS& blk = y[i0 + sb];
      const float* xb = x + kQKK * (i0 + sb);
      const float* sc = scales + 8 * sb;
      float max_scale = 0, amax_scale = 0;
      for (int ib = 0; ib < 8; ++ib) {
        const float abs_d = std::fabs(sc[ib]);
        if (abs_d > amax_scale) {
          amax_scale = abs_d;
          max_scale = sc[ib];
        }
      }
      const float d = -max_scale / 32;
      blk.d = fp32_to_fp16(d);
      const float id = d != 0 ? 1 / d : 0.f;
      blk.scales_h = 0;
      uint8_t L[kQKK];
      for (int ib = 0; ib < 8; ++ib) {
        int l = nearest_int(id * sc[ib]);
        l = l < -32 ? -32 : (l > 31 ? 31 : l);
        const float dl = d * static_cast<float>(l);
        const float idl = dl != 0 ? 1 / dl : 0.f;
        simd::iq4_indices(32, xb + 32 * ib, idl, L + 32 * ib);
        l += 32;
        const uint8_t l_l = static_cast<uint8_t>(l & 0xf), l_h = static_cast<uint8_t>(l >> 4);
        if (ib % 2 == 0)
          blk.scales_l[ib / 2] = l_l;
        else
          blk.scales_l[ib / 2] = static_cast<uint8_t>(blk.scales_l[ib / 2] | (l_l << 4));
        blk.scales_h = static_cast<uint16_t>(blk.scales_h | (l_h << (2 * ib)));
      }
      pack_nibbles(L, kQKK, blk.qs);
    }
  }
}

}  // namespace

void quantize_iq4_nl(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  iq4_nl_rows(src, static_cast<BlockIQ4_NL*>(dst), nrows * (n_per_row / 32), n_per_row / 32, imatrix);
}

void quantize_iq4_xs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  iq4_xs_rows(src, static_cast<BlockIQ4_XS*>(dst), nrows * (n_per_row / kQKK), n_per_row / kQKK, imatrix);
}

void dequantize_iq4_nl(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockIQ4_NL*>(src);
  for (int64_t i = 0; i < n / 32; ++i, y += 32) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(kIQ4NLValues[x[i].qs[j] & 0xf]);
      y[j + 16] = d * static_cast<float>(kIQ4NLValues[x[i].qs[j] >> 4]);
    }
  }
}

void dequantize_iq4_xs(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* qs = x[i].qs;
    const float d = fp16_to_fp32(x[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
      const int ls =
          ((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) | (((x[i].scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * static_cast<float>(kIQ4NLValues[qs[j] & 0xf]);
        y[j + 16] = dl * static_cast<float>(kIQ4NLValues[qs[j] >> 4]);
      }
    }
  }
}

}  // namespace qforge::gguf::detail
