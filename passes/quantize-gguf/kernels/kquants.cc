// K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-element super-blocks).
//
// Each super-block is split into 16 or 8 sub-blocks; a scale (and for Q2_K,
// Q4_K, Q5_K a min) is searched per sub-block, those are quantized to 4, 6 or
// 8 bits against one fp16 super-block scale, and the elements are re-rounded
// against the scales as stored. With an imatrix the searches are weighted and
// the super-block scales come from make_qp_quants / make_qx_quants.
#include <cmath>
#include <cstring>

#include "internal.h"
#include "search.h"

namespace qforge::gguf::detail {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// 4 levels of 2 bits per byte: byte l of each 32-byte group holds elements
// l, l+32, l+64, l+96 of its 128-element half.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQKK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] =
          static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// 6-bit scale / min of sub-block j of a Q4_K / Q5_K block.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// Re-rounds each 32-element sub-block against its stored scale and min.
void requantize_k4(const float* x, const uint8_t* scales, uint16_t dh, uint16_t dminh, int nmax, uint8_t* L) {
  const float d_all = fp16_to_fp32(dh), m_all = fp16_to_fp32(dminh);
  float d[8], dm[8];
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(j, scales, &sc, &m);
    d[j] = d_all * static_cast<float>(sc);
    dm[j] = m_all * static_cast<float>(m);
  }
  simd::requantize(8, 32, x, d, dm, 0, nmax, 0, L);
}

// The same for the 16 sub-blocks of Q2_K (4-bit scale and min per byte).
void requantize_q2(const float* x, const BlockQ2_K& y, uint8_t* L) {
  const float d_all = fp16_to_fp32(y.d), m_all = fp16_to_fp32(y.dmin);
  float d[16], dm[16];
  for (int j = 0; j < 16; ++j) {
    d[j] = d_all * static_cast<float>(y.scales[j] & 0xf);
    dm[j] = m_all * static_cast<float>(y.scales[j] >> 4);
  }
  simd::requantize(16, 16, x, d, dm, 0, 3, 0, L);
}

// Row sum of squares of one super-block, in order.
inline float block_sum_x2(const float* x) {
  float s = 0;
  for (int l = 0; l < kQKK; ++l) s += x[l] * x[l];
  return s;
}

// ---------------------------------------------------------------- Q2_K

void q2_K_plain(const float* x, BlockQ2_K* y, int64_t nb) {
  uint8_t L[kQKK];
  float weights[16][16], mins[16], scales[16];
  const float q4scale = 15.f;
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    const float* xs[16];
    const float* ws[16];
    uint8_t* Lp[16];
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[j][l] = std::fabs(x[16 * j + l]);
      xs[j] = x + 16 * j;
      ws[j] = weights[j];
      Lp[j] = L + 16 * j;
    }
    qkx_search(16, 16, xs, ws, {3, -0.5f, 0.1f, 15, true, false}, scales, mins, Lp);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) y[i].scales[j] = wrap_u8(nearest_int(iscale * scales[j]));
      y[i].d = fp32_to_fp16(max_scale / q4scale);
    } else {
      std::memset(y[i].scales, 0, 16);
      y[i].d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j)
        y[i].scales[j] = static_cast<uint8_t>(y[i].scales[j] |
                                              (static_cast<unsigned>(nearest_int(iscale * mins[j])) << 4));
      y[i].dmin = fp32_to_fp16(max_min / q4scale);
    } else {
      y[i].dmin = fp32_to_fp16(0.f);
    }
    requantize_q2(x, y[i], L);
    pack_2bit(L, y[i].qs);
  }
}

void q2_K_weighted(const float* x, BlockQ2_K* y, int64_t n_per_row, const float* imatrix) {
  uint8_t L[kQKK], Ls[16], Lm[16];
  float mins[16], scales[16], sw[16], weight[16][16];
  const float* xs[16];
  const float* ws[16];
  uint8_t* Lp[16];
  for (int64_t i = 0; i < n_per_row / kQKK; ++i, x += kQKK) {
    const float sigma2 = block_sum_x2(x) / kQKK;
    for (int j = 0; j < 16; ++j) {
      const float* qw = imatrix + kQKK * i + 16 * j;
      for (int l = 0; l < 16; ++l) weight[j][l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float s = 0;
      for (int l = 0; l < 16; ++l) s += weight[j][l];
      sw[j] = s;
      xs[j] = x + 16 * j;
      ws[j] = weight[j];
      Lp[j] = L + 16 * j;
    }
    qkx_search(16, 16, xs, ws, {3, -0.9f, 0.05f, 36, false, true}, scales, mins, Lp);
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    y[i].d = fp32_to_fp16(dm);
    y[i].dmin = fp32_to_fp16(mm);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    requantize_q2(x, y[i], L);
    pack_2bit(L, y[i].qs);
  }
}

// ---------------------------------------------------------------- Q3_K

// 16 6-bit scales (already offset by 32) into the 12 scale bytes.
void pack_scales_q3(const int* ls, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int l = ls[j];
    if (j < 8)
      scales[j] = static_cast<uint8_t>(l & 0xf);
    else
      scales[j - 8] = static_cast<uint8_t>(scales[j - 8] | ((l & 0xf) << 4));
    scales[j % 4 + 8] = static_cast<uint8_t>(scales[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
  }
}

// Stored scale of sub-block j, minus 32.
inline int8_t scale_q3(const uint8_t* scales, int j) {
  const int low = j < 8 ? scales[j] & 0xf : scales[j - 8] >> 4;
  return wrap_i8((low | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
}

// Re-round against the stored scales, then split into hmask + 2-bit qs.
void finish_q3(const float* x, BlockQ3_K* y, int8_t* L) {
  const float d_all = fp16_to_fp32(y->d);
  float d[16];
  for (int j = 0; j < 16; ++j) d[j] = d_all * static_cast<float>(scale_q3(y->scales, j));
  simd::requantize(16, 16, x, d, nullptr, -4, 3, 4, reinterpret_cast<uint8_t*>(L));
  // Levels are in [0, 8): bit 2 goes to hmask (bit j/32 of byte j%32), the
  // low two bits to qs.
  uint8_t hmask[32] = {};
  uint8_t U[kQKK];
  for (int j = 0; j < kQKK; ++j) {
    const int l = L[j];
    hmask[j % 32] = static_cast<uint8_t>(hmask[j % 32] | ((l >> 2) << (j / 32)));
    U[j] = static_cast<uint8_t>(l & 3);
  }
  std::memcpy(y->hmask, hmask, 32);
  pack_2bit(U, y->qs);
}

void q3_K_plain(const float* x, BlockQ3_K* y, int64_t nb) {
  int8_t L[kQKK];
  float scales[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float max_scale = 0, amax = 0;
    const float* xs[16];
    int8_t* Lp[16];
    for (int j = 0; j < 16; ++j) {
      xs[j] = x + 16 * j;
      Lp[j] = L + 16 * j;
    }
    q3_search(16, 16, 4, xs, scales, Lp);
    for (int j = 0; j < 16; ++j) {
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale != 0) {
      const float iscale = -32.f / max_scale;
      int ls[16];
      for (int j = 0; j < 16; ++j) {
        const int8_t l = wrap_i8(nearest_int(iscale * scales[j]));
        ls[j] = clamp_int(l, -32, 31) + 32;
      }
      pack_scales_q3(ls, y[i].scales);
      y[i].d = fp32_to_fp16(1 / iscale);
    } else {
      std::memset(y[i].scales, 0, 12);
      y[i].d = fp32_to_fp16(0.f);
    }
    finish_q3(x, &y[i], L);
  }
}

void q3_K_weighted(const float* x, BlockQ3_K* y, int64_t n_per_row, const float* imatrix) {
  int8_t L[kQKK], Ls[16];
  float scales[16], weight[16][16], sw[16];
  const float* xs[16];
  const float* ws[16];
  int8_t* Lp[16];
  for (int64_t i = 0; i < n_per_row / kQKK; ++i, x += kQKK) {
    const float sigma2 = 2 * block_sum_x2(x) / kQKK;
    for (int j = 0; j < 16; ++j) {
      const float* qw = imatrix + kQKK * i + 16 * j;
      for (int l = 0; l < 16; ++l) weight[j][l] = qw[l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[j][l];
      sw[j] = sumw;
      xs[j] = x + 16 * j;
      ws[j] = weight[j];
      Lp[j] = L + 16 * j;
    }
    qx_search(16, 16, 4, xs, ws, scales, Lp);
    const float d_block = make_qx_quants(16, 32, scales, Ls, 1, sw);
    int ls[16];
    for (int j = 0; j < 16; ++j) ls[j] = Ls[j];
    pack_scales_q3(ls, y[i].scales);
    y[i].d = fp32_to_fp16(d_block);
    finish_q3(x, &y[i], L);
  }
}

// ---------------------------------------------------------------- Q4_K / Q5_K

// Scales and mins of one super-block from its 8 sub-block searches, without
// imatrix: 6-bit levels against the largest scale / min.
void k4_plain_scales(const float* scales, const float* mins, uint8_t* scales_out, uint16_t* d_out,
                     uint16_t* dmin_out) {
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    const uint8_t a = wrap_u8(nearest_int(inv_scale * scales[j]));
    const uint8_t b = wrap_u8(nearest_int(inv_min * mins[j]));
    ls[j] = a < 63 ? a : 63;
    lm[j] = b < 63 ? b : 63;
  }
  pack_scale_min_k4(ls, lm, scales_out);
  *d_out = fp32_to_fp16(max_scale / 63.f);
  *dmin_out = fp32_to_fp16(max_min / 63.f);
}

// The same with imatrix: make_qp_quants weighted by the sub-block weight sums.
// Q5_K clamps the 6-bit levels to 63, Q4_K does not: make_qp_quants can return
// wrapped negative levels, which the two formats then store differently.
void k4_weighted_scales(const float* scales, const float* mins, const float* sw, bool clamp63,
                        uint8_t* scales_out, uint16_t* d_out, uint16_t* dmin_out) {
  uint8_t Ls[8], Lm[8];
  const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
  for (int j = 0; j < 8 && clamp63; ++j) {
    if (Ls[j] > 63) Ls[j] = 63;
    if (Lm[j] > 63) Lm[j] = 63;
  }
  pack_scale_min_k4(Ls, Lm, scales_out);
  *d_out = fp32_to_fp16(d_block);
  *dmin_out = fp32_to_fp16(m_block);
}

void pack_q4_K(const uint8_t* L, BlockQ4_K* y) {
  uint8_t* q = y->qs;
  for (int j = 0; j < kQKK; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

void pack_q5_K(const uint8_t* L, BlockQ5_K* y) {
  uint8_t* qh = y->qh;
  uint8_t* ql = y->qs;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQKK; n += 64, ql += 32) {
    for (int j = 0; j < 32; ++j) {  // levels are in [0, 32): bit 4 goes to qh
      const int l1 = L[n + j], l2 = L[n + j + 32];
      qh[j] = static_cast<uint8_t>(qh[j] | ((l1 >> 4) * m1) | ((l2 >> 4) * m2));
      ql[j] = static_cast<uint8_t>((l1 & 15) | ((l2 & 15) << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
  }
}

void pack_k4(const uint8_t* L, BlockQ4_K* y) { pack_q4_K(L, y); }
void pack_k4(const uint8_t* L, BlockQ5_K* y) { pack_q5_K(L, y); }

// Q4_K (nmax 15) and Q5_K (nmax 31) over `nb` consecutive super-blocks
// (`nb_row` per row, for the imatrix offset). Super-blocks go through the
// sub-block search two at a time (16 sub-blocks: one batch).
template <typename Block, int kNmax>
void k4_rows(const float* x, Block* y, int64_t nb, int64_t nb_row, const float* imatrix) {
  const simd::QkxParams plain = kNmax == 15 ? simd::QkxParams{15, -1.f, 0.1f, 20, false, false}
                                            : simd::QkxParams{31, -0.5f, 0.1f, 15, false, false};
  const simd::QkxParams weighted{kNmax, -0.9f, 0.05f, 36, false, true};
  uint8_t L[2][kQKK];
  float weights[16][32], sw[16], scales[16], mins[16];
  const float* xs[16];
  const float* ws[16];
  uint8_t* Lp[16];
  for (int64_t i0 = 0; i0 < nb; i0 += 2) {
    const int nsb = nb - i0 < 2 ? 1 : 2;
    for (int sb = 0; sb < nsb; ++sb) {
      const float* xb = x + kQKK * (i0 + sb);
      if (imatrix) {
        const float* qw = imatrix + kQKK * ((i0 + sb) % nb_row);
        const float sigma2 = 2 * block_sum_x2(xb) / kQKK;
        for (int j = 0; j < 8; ++j) {
          float* w = weights[8 * sb + j];
          for (int l = 0; l < 32; ++l)
            w[l] = qw[32 * j + l] * std::sqrt(sigma2 + xb[32 * j + l] * xb[32 * j + l]);
          float sumw = 0;
          for (int l = 0; l < 32; ++l) sumw += w[l];
          sw[8 * sb + j] = sumw;
        }
      } else {
        for (int j = 0; j < 8; ++j) {
          float* w = weights[8 * sb + j];
          float sum_x2 = 0;
          for (int l = 0; l < 32; ++l) sum_x2 += xb[32 * j + l] * xb[32 * j + l];
          const float av_x = std::sqrt(sum_x2 / 32);
          for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(xb[32 * j + l]);
        }
      }
      for (int j = 0; j < 8; ++j) {
        xs[8 * sb + j] = xb + 32 * j;
        ws[8 * sb + j] = weights[8 * sb + j];
        Lp[8 * sb + j] = L[sb] + 32 * j;
      }
    }
    qkx_search(8 * nsb, 32, xs, ws, imatrix ? weighted : plain, scales, mins, Lp);
    for (int sb = 0; sb < nsb; ++sb) {
      Block& blk = y[i0 + sb];
      if (imatrix)
        k4_weighted_scales(scales + 8 * sb, mins + 8 * sb, sw + 8 * sb, kNmax == 31, blk.scales, &blk.d,
                           &blk.dmin);
      else
        k4_plain_scales(scales + 8 * sb, mins + 8 * sb, blk.scales, &blk.d, &blk.dmin);
      requantize_k4(x + kQKK * (i0 + sb), blk.scales, blk.d, blk.dmin, kNmax, L[sb]);
      pack_k4(L[sb], &blk);
    }
  }
}

// ---------------------------------------------------------------- Q6_K

void q6_K_rows(const float* x, BlockQ6_K* y, int64_t nb, int64_t nb_row, const float* imatrix) {
  int8_t L[kQKK];
  float scales[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    const float* xs[16];
    const float* ws[16];
    int8_t* Lp[16];
    for (int ib = 0; ib < 16; ++ib) {
      xs[ib] = x + 16 * ib;
      ws[ib] = imatrix ? imatrix + kQKK * (i % nb_row) + 16 * ib : nullptr;
      Lp[ib] = L + 16 * ib;
    }
    qx_search(16, 16, 32, xs, imatrix ? ws : nullptr, scales, Lp);
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float scale = scales[ib];
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      y[i].d = fp32_to_fp16(0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < 16; ++ib) {
      const int l = nearest_int(iscale * scales[ib]);
      y[i].scales[ib] = wrap_i8(l < 127 ? l : 127);
    }
    const float d_all = fp16_to_fp32(y[i].d);
    float d[16];
    for (int j = 0; j < 16; ++j) d[j] = d_all * static_cast<float>(y[i].scales[j]);
    simd::requantize(16, 16, x, d, nullptr, -32, 31, 32, reinterpret_cast<uint8_t*>(L));
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQKK; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf;
        const uint8_t q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
        ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                     ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- entry points

void quantize_q2_K(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  auto* y = static_cast<BlockQ2_K*>(dst);
  const int64_t nb = n_per_row / kQKK;
  if (!imatrix) return q2_K_plain(src, y, nrows * nb);
  for (int64_t r = 0; r < nrows; ++r) q2_K_weighted(src + r * n_per_row, y + r * nb, n_per_row, imatrix);
}

void quantize_q3_K(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  auto* y = static_cast<BlockQ3_K*>(dst);
  const int64_t nb = n_per_row / kQKK;
  if (!imatrix) return q3_K_plain(src, y, nrows * nb);
  for (int64_t r = 0; r < nrows; ++r) q3_K_weighted(src + r * n_per_row, y + r * nb, n_per_row, imatrix);
}

void quantize_q4_K(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  auto* y = static_cast<BlockQ4_K*>(dst);
  const int64_t nb = n_per_row / kQKK;
  k4_rows<BlockQ4_K, 15>(src, y, nrows * nb, nb, imatrix);
}

void quantize_q5_K(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  auto* y = static_cast<BlockQ5_K*>(dst);
  const int64_t nb = n_per_row / kQKK;
  k4_rows<BlockQ5_K, 31>(src, y, nrows * nb, nb, imatrix);
}

void quantize_q6_K(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  auto* y = static_cast<BlockQ6_K*>(dst);
  const int64_t nb = n_per_row / kQKK;
  q6_K_rows(src, y, nrows * nb, nb, imatrix);
}

// ---------------------------------------------------------------- dequantize

void dequantize_q2_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * static_cast<float>(sc & 0xf), ml = min * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16 * part] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dequantize_q3_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d_all = fp16_to_fp32(x[i].d);
    const uint8_t* q = x[i].qs;
    const uint8_t* hm = x[i].hmask;
    uint8_t m = 1;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d_all * static_cast<float>(scale_q3(x[i].scales, is++));
          for (int l = 0; l < 16; ++l) {
            const int k = l + 16 * part;
            const int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
            *y++ = dl * static_cast<float>(v);
          }
        }
      }
    }
  }
}

void dequantize_q4_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      scale_min_k4(is, x[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
      scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xf) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dequantize_q5_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32) {
      uint8_t sc, m;
      scale_min_k4(is, x[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
      scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void dequantize_q6_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

void dequantize_q8_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i)
    for (int j = 0; j < kQKK; ++j) *y++ = x[i].d * static_cast<float>(x[i].qs[j]);
}

void dequantize_tq1_0(const void* src, float* y, int64_t n) {
  static const uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};
  const auto* x = static_cast<const BlockTQ1_0*>(src);
  // Each byte holds 5 (qs) or 4 (qh) base-3 digits as a fixed-point fraction.
  auto trit = [](uint8_t byte, uint8_t pow) {
    const uint8_t q = static_cast<uint8_t>(byte * pow);
    return static_cast<float>(((static_cast<uint16_t>(q) * 3) >> 8) - 1);
  };
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 32; j += 32)
      for (int k = 0; k < 5; ++k)
        for (int m = 0; m < 32; ++m) *y++ = trit(x[i].qs[j + m], kPow3[k]) * d;
    for (int j = 32; j < 48; j += 16)
      for (int k = 0; k < 5; ++k)
        for (int m = 0; m < 16; ++m) *y++ = trit(x[i].qs[j + m], kPow3[k]) * d;
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 4; ++j) *y++ = trit(x[i].qh[j], kPow3[k]) * d;
  }
}

void dequantize_tq2_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockTQ2_0*>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 64; j += 32)
      for (int l = 0; l < 4; ++l)
        for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(((x[i].qs[j + m] >> (l * 2)) & 3) - 1) * d;
  }
}

}  // namespace qforge::gguf::detail
