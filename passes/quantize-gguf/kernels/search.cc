// The scalar searches that run once per super-block (make_qx_quants for
// Q3_K's super-block scales, make_qp_quants), and the batch wrappers that
// transpose blocks into simd.h's lane layout and back.
#include "search.h"

#include <cassert>
#include <cmath>
#include <cstring>

#include "internal.h"
#include "simd.h"

namespace qforge::gguf::detail {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
inline int min_int(int a, int b) { return a < b ? a : b; }

// Value of largest magnitude (first one on ties) and that magnitude.
inline float signed_absmax(int n, const float* x, float* amax_out) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  *amax_out = amax;
  return max;
}

}  // namespace

float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw) {
  assert(rmse_type == 1);
  (void)rmse_type;
  float amax;
  const float max = signed_absmax(n, x, &amax);
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  // Weights: qw, or x^2 (rmse_type 1).
  float wbuf[64];
  const float* w = qw;
  if (!w) {
    assert(n <= 64);
    for (int i = 0; i < n; ++i) wbuf[i] = x[i] * x[i];
    w = wbuf;
  }
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float fl = static_cast<float>(l);
    sumlx += w[i] * x[i] * fl;
    suml2 += w[i] * fl * fl;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  int8_t Ltry[64];
  assert(n <= 64);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      Ltry[i] = static_cast<int8_t>(l + nmax);
      const float fl = static_cast<float>(l);
      sumlx += w[i] * x[i] * fl;
      suml2 += w[i] * fl * fl;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      std::memcpy(L, Ltry, static_cast<size_t>(n));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  const float fnmax = static_cast<float>(nmax);
  float iscale = fnmax / max;
  for (int i = 0; i < n; ++i) L[i] = wrap_u8(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(L[i]);
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + fnmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = min_int(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = min_int(nmax, nearest_int(iscale * x[i]));
    L[i] = wrap_u8(l);
    const float w = quant_weights[i];
    const float fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      const float li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      float sl2 = suml2 - w * li * li;
      if (slx > 0 && sl2 > 0) {
        const int new_l = min_int(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const float fl = static_cast<float>(new_l);
          slx += w * x[i] * fl;
          sl2 += w * fl * fl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = wrap_u8(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---------------------------------------------------------------- batched searches

namespace {

// Copies `count` blocks of n values into the batch layout (whose other lanes
// the callers zero-initialize).
void transpose_in(int count, int n, const float* const* src, float* dst) {
  for (int b = 0; b < count; ++b) {
    const float* s = src[b];
    for (int i = 0; i < n; ++i) dst[i * simd::kBatch + b] = s[i];
  }
}

template <typename T>
void transpose_out(int count, int n, const T* src, T* const* dst) {
  for (int b = 0; b < count; ++b)
    for (int i = 0; i < n; ++i) dst[b][i] = src[i * simd::kBatch + b];
}

constexpr int kMaxN = 32;

}  // namespace

void qkx_search(int count, int n, const float* const* x, const float* const* w, const simd::QkxParams& p,
                float* scale, float* the_min, uint8_t* const* L) {
  assert(count <= simd::kBatch && n <= kMaxN);
  alignas(64) float xt[kMaxN * simd::kBatch] = {}, wt[kMaxN * simd::kBatch] = {};
  alignas(64) float sc[simd::kBatch], mn[simd::kBatch];
  alignas(64) uint8_t Lt[kMaxN * simd::kBatch];
  transpose_in(count, n, x, xt);
  transpose_in(count, n, w, wt);
  simd::qkx_batch(count, n, p, xt, wt, sc, mn, Lt);
  std::memcpy(scale, sc, static_cast<size_t>(count) * sizeof(float));
  std::memcpy(the_min, mn, static_cast<size_t>(count) * sizeof(float));
  transpose_out(count, n, Lt, L);
}

void qx_search(int count, int n, int nmax, const float* const* x, const float* const* w, float* scale,
               int8_t* const* L) {
  assert(count <= simd::kBatch && n <= kMaxN);
  alignas(64) float xt[kMaxN * simd::kBatch] = {}, wt[kMaxN * simd::kBatch] = {};
  alignas(64) float sc[simd::kBatch];
  alignas(64) int8_t Lt[kMaxN * simd::kBatch];
  transpose_in(count, n, x, xt);
  if (w) transpose_in(count, n, w, wt);
  simd::qx_batch(count, n, nmax, xt, w ? wt : nullptr, sc, Lt);
  std::memcpy(scale, sc, static_cast<size_t>(count) * sizeof(float));
  transpose_out(count, n, Lt, L);
}

void q3_search(int count, int n, int nmax, const float* const* x, float* scale, int8_t* const* L) {
  assert(count <= simd::kBatch && n <= kMaxN);
  alignas(64) float xt[kMaxN * simd::kBatch] = {};
  alignas(64) float sc[simd::kBatch];
  alignas(64) int8_t Lt[kMaxN * simd::kBatch];
  transpose_in(count, n, x, xt);
  simd::q3_batch(count, n, nmax, xt, sc, Lt);
  std::memcpy(scale, sc, static_cast<size_t>(count) * sizeof(float));
  transpose_out(count, n, Lt, L);
}

void iq4_search(int count, int n, const float* const* x, const float* const* w, float* d) {
  assert(count <= simd::kBatch && n <= kMaxN);
  alignas(64) float xt[kMaxN * simd::kBatch] = {}, wt[kMaxN * simd::kBatch] = {};
  alignas(64) float dd[simd::kBatch];
  transpose_in(count, n, x, xt);
  transpose_in(count, n, w, wt);
  simd::iq4_batch(count, n, xt, wt, dd);
  std::memcpy(d, dd, static_cast<size_t>(count) * sizeof(float));
}

}  // namespace qforge::gguf::detail
