// Highway kernels for simd.h; compiled once per target by foreach_target.
//
// Each *Group function is the scalar ggml routine written with vectors: read
// it next to the scalar code in search.cc (or ggml-quants.c) line by line.
#include "kernels/simd.h"
#include "kernels/internal.h"

#include <cstddef>
#include <cstdint>

// 32-bit Arm NEON has no exact vector division: use the portable target there.
#if defined(__arm__) && !defined(__aarch64__) && !defined(HWY_COMPILE_ONLY_EMU128)
#define HWY_COMPILE_ONLY_EMU128 1
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef QFORGE_GGUF_SIMD_ONCE
#define QFORGE_GGUF_SIMD_ONCE
namespace qforge::gguf::detail::simd {
namespace {
// The IQ4 levels (kIQ4NLValues as floats).
constexpr float kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
constexpr float kGroupMaxEps = 1e-15f;
inline uint16_t fp32_to_fp16_scalar(float f) { return fp32_to_fp16(f); }
}  // namespace
}  // namespace qforge::gguf::detail::simd
#endif

HWY_BEFORE_NAMESPACE();
namespace qforge::gguf::detail::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most kBatch lanes: a group never spans more blocks than a batch holds.
using DF = hn::CappedTag<float, kBatch>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// ggml's nearest_int, lane-wise: the low mantissa bits of v + 1.5*2^23.
HWY_INLINE VI GgmlNearestInt(VF v) {
  const DF df;
  const DI di;
  const VI bits = hn::BitCast(di, hn::Add(v, hn::Set(df, 12582912.f)));
  return hn::Sub(hn::And(bits, hn::Set(di, 0x007fffff)), hn::Set(di, 0x00400000));
}

HWY_INLINE VI ClampInt(VI v, VI lo, VI hi) { return hn::Min(hn::Max(v, lo), hi); }

// Stores int lanes as bytes of the transposed level array.
template <typename T>
HWY_INLINE void StoreLevelBytes(VI l, T* dst) {
  const DI di;
  HWY_ALIGN int32_t tmp[hn::MaxLanes(di)];
  hn::Store(l, di, tmp);
  for (size_t j = 0; j < hn::Lanes(di); ++j) dst[j] = static_cast<T>(tmp[j]);
}

// ---------------------------------------------------------------- make_qkx2/3_quants

// Run-time flags are template parameters throughout: GCC 12 at -O3 turns a
// vector op guarded by a scalar flag inside a loop into an AVX-512 masked op
// with a one-lane mask (a miscompilation), so kernels contain no such guards.
template <bool kUseMad, bool kQkx3>
void QkxGroup(int n, const QkxParams& p, const float* HWY_RESTRICT xt, const float* HWY_RESTRICT wt,
              float* HWY_RESTRICT scale_out, float* HWY_RESTRICT min_out, uint8_t* HWY_RESTRICT Lt) {
  const DF df;
  const DI di;
  const VF zero = hn::Zero(df);
  const VI lo = hn::Zero(di), hi = hn::Set(di, p.nmax);
  auto X = [&](int i) { return hn::LoadU(df, xt + i * kBatch); };
  auto W = [&](int i) { return hn::LoadU(df, wt + i * kBatch); };
  auto err_term = [](VF diff) {
    if constexpr (kUseMad) {
      return hn::Abs(diff);
    } else {
      return hn::Mul(diff, diff);
    }
  };
  const size_t N = hn::Lanes(df);
  HWY_ALIGN float levels[32 * hn::MaxLanes(df)];  // a trial's levels, kept for its error pass

  VF min = X(0), max = X(0);
  VF sum_w = W(0);
  VF sum_x = hn::Mul(sum_w, X(0));
  for (int i = 1; i < n; ++i) {
    const VF x = X(i), w = W(i);
    min = hn::IfThenElse(hn::Lt(x, min), x, min);
    max = hn::IfThenElse(hn::Gt(x, max), x, max);
    sum_w = hn::Add(sum_w, w);
    sum_x = hn::Add(sum_x, hn::Mul(w, x));
  }
  min = hn::IfThenElse(hn::Gt(min, zero), zero, min);
  const auto degenerate = kQkx3 ? hn::Le(max, min) : hn::Eq(max, min);
  const VF min0 = min;

  const VF fnmax = hn::Set(df, static_cast<float>(p.nmax));
  VF iscale = hn::Div(fnmax, hn::Sub(max, min));
  VF scale = hn::Div(hn::Set(df, 1.0f), iscale);
  VF best_iscale = iscale, best_xmin = min;  // what the chosen levels were rounded with
  VF best_error = zero;
  for (int i = 0; i < n; ++i) {
    const VF x = X(i);
    const VI l = ClampInt(GgmlNearestInt(hn::Mul(iscale, hn::Sub(x, min))), lo, hi);
    const VF diff = hn::Sub(hn::Add(hn::Mul(scale, hn::ConvertTo(df, l)), min), x);
    best_error = hn::Add(best_error, hn::Mul(W(i), err_term(diff)));
  }
  for (int is = 0; p.nstep >= 1 && is <= p.nstep; ++is) {
    const float num = p.rmin + p.rdelta * static_cast<float>(is) + static_cast<float>(p.nmax);
    iscale = hn::Div(hn::Set(df, num), hn::Sub(max, min));
    VF sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      const VF x = X(i), w = W(i);
      const VF fl = hn::ConvertTo(df, ClampInt(GgmlNearestInt(hn::Mul(iscale, hn::Sub(x, min))), lo, hi));
      hn::Store(fl, df, levels + i * N);
      const VF wl = hn::Mul(w, fl);
      sum_l = hn::Add(sum_l, wl);
      sum_l2 = hn::Add(sum_l2, hn::Mul(wl, fl));
      sum_xl = hn::Add(sum_xl, hn::Mul(wl, x));
    }
    const VF D = hn::Sub(hn::Mul(sum_w, sum_l2), hn::Mul(sum_l, sum_l));
    const auto d_pos = hn::Gt(D, zero);
    VF this_scale = hn::Div(hn::Sub(hn::Mul(sum_w, sum_xl), hn::Mul(sum_x, sum_l)), D);
    VF this_min = hn::Div(hn::Sub(hn::Mul(sum_l2, sum_x), hn::Mul(sum_l, sum_xl)), D);
    const auto min_pos = hn::Gt(this_min, zero);
    this_min = hn::IfThenElse(min_pos, zero, this_min);
    this_scale = hn::IfThenElse(min_pos, hn::Div(sum_xl, sum_l2), this_scale);
    VF cur_error = zero;
    for (int i = 0; i < n; ++i) {
      const VF diff = hn::Sub(hn::Add(hn::Mul(this_scale, hn::Load(df, levels + i * N)), this_min), X(i));
      cur_error = hn::Add(cur_error, hn::Mul(W(i), err_term(diff)));
    }
    const auto better = hn::And(d_pos, hn::Lt(cur_error, best_error));
    best_error = hn::IfThenElse(better, cur_error, best_error);
    scale = hn::IfThenElse(better, this_scale, scale);
    best_iscale = hn::IfThenElse(better, iscale, best_iscale);
    best_xmin = hn::IfThenElse(better, min, best_xmin);
    min = hn::IfThenElse(better, this_min, min);
  }
  hn::StoreU(hn::IfThenElse(degenerate, zero, scale), df, scale_out);
  hn::StoreU(hn::Neg(hn::IfThenElse(degenerate, min0, min)), df, min_out);
  const auto degenerate_i = hn::RebindMask(di, degenerate);
  for (int i = 0; i < n; ++i) {
    const VI l = ClampInt(GgmlNearestInt(hn::Mul(best_iscale, hn::Sub(X(i), best_xmin))), lo, hi);
    StoreLevelBytes(hn::IfThenZeroElse(degenerate_i, l), Lt + i * kBatch);
  }
}

// ---------------------------------------------------------------- make_qx_quants

template <bool kWeighted>
void QxGroup(int n, int nmax, const float* HWY_RESTRICT xt, const float* HWY_RESTRICT wt,
             float* HWY_RESTRICT scale_out, int8_t* HWY_RESTRICT Lt) {
  const DF df;
  const DI di;
  const VF zero = hn::Zero(df);
  const VI lo = hn::Set(di, -nmax), hi = hn::Set(di, nmax - 1);
  auto X = [&](int i) { return hn::LoadU(df, xt + i * kBatch); };
  auto W = [&](int i, VF x) {
    if constexpr (kWeighted) {
      (void)x;
      return hn::LoadU(df, wt + i * kBatch);
    } else {
      return hn::Mul(x, x);
    }
  };

  VF max = zero, amax = zero;
  for (int i = 0; i < n; ++i) {
    const VF x = X(i), ax = hn::Abs(x);
    const auto gt = hn::Gt(ax, amax);
    amax = hn::IfThenElse(gt, ax, amax);
    max = hn::IfThenElse(gt, x, max);
  }
  const auto all_zero = hn::Lt(amax, hn::Set(df, kGroupMaxEps));

  auto sums = [&](VF iscale, VF* sumlx, VF* suml2) {
    VF a = zero, b = zero;
    for (int i = 0; i < n; ++i) {
      const VF x = X(i), w = W(i, x);
      const VF fl = hn::ConvertTo(df, ClampInt(GgmlNearestInt(hn::Mul(iscale, x)), lo, hi));
      a = hn::Add(a, hn::Mul(hn::Mul(w, x), fl));
      b = hn::Add(b, hn::Mul(hn::Mul(w, fl), fl));
    }
    *sumlx = a;
    *suml2 = b;
  };

  VF iscale = hn::Div(hn::Set(df, static_cast<float>(-nmax)), max);
  VF sumlx, suml2;
  sums(iscale, &sumlx, &suml2);
  // C's `suml2 ? ...` is true for NaN; Highway's Ne is an ordered compare, so use !Eq.
  VF scale = hn::IfThenElse(hn::Not(hn::Eq(suml2, zero)), hn::Div(sumlx, suml2), zero);
  VF best = hn::Mul(scale, sumlx);
  VF best_iscale = iscale;
  for (int k = 0; k < 18; ++k) {
    const int is = k < 9 ? k - 9 : k - 8;  // -9..-1, 1..9
    iscale = hn::Div(hn::Set(df, -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is))), max);
    sums(iscale, &sumlx, &suml2);
    const auto better = hn::And(hn::Gt(suml2, zero), hn::Gt(hn::Mul(sumlx, sumlx), hn::Mul(best, suml2)));
    scale = hn::IfThenElse(better, hn::Div(sumlx, suml2), scale);
    best = hn::IfThenElse(better, hn::Mul(scale, sumlx), best);
    best_iscale = hn::IfThenElse(better, iscale, best_iscale);
  }
  hn::StoreU(hn::IfThenElse(all_zero, zero, scale), df, scale_out);
  const auto all_zero_i = hn::RebindMask(di, all_zero);
  const VI off = hn::Set(di, nmax);
  for (int i = 0; i < n; ++i) {
    const VI l = hn::Add(ClampInt(GgmlNearestInt(hn::Mul(best_iscale, X(i))), lo, hi), off);
    StoreLevelBytes(hn::IfThenZeroElse(all_zero_i, l), Lt + i * kBatch);
  }
}

// ---------------------------------------------------------------- make_q3_quants

void Q3Group(int n, int nmax, const float* HWY_RESTRICT xt, float* HWY_RESTRICT scale_out,
             int8_t* HWY_RESTRICT Lt) {
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);
  const VF zero = hn::Zero(df);
  const VI lo = hn::Set(di, -nmax), hi = hn::Set(di, nmax - 1);
  auto X = [&](int i) { return hn::LoadU(df, xt + i * kBatch); };
  HWY_ALIGN int32_t levels[32 * hn::MaxLanes(di)];  // L[i] of each lane, before the +nmax

  VF max = zero, amax = zero;
  for (int i = 0; i < n; ++i) {
    const VF x = X(i), ax = hn::Abs(x);
    const auto gt = hn::Gt(ax, amax);
    amax = hn::IfThenElse(gt, ax, amax);
    max = hn::IfThenElse(gt, x, max);
  }
  const auto all_zero = hn::Lt(amax, hn::Set(df, kGroupMaxEps));

  const VF iscale = hn::Div(hn::Set(df, static_cast<float>(-nmax)), max);
  VF sumlx = zero, suml2 = zero;
  for (int i = 0; i < n; ++i) {
    const VF x = X(i);
    const VI l = ClampInt(GgmlNearestInt(hn::Mul(iscale, x)), lo, hi);
    hn::Store(l, di, levels + i * N);
    const VF w = hn::Mul(x, x), fl = hn::ConvertTo(df, l);
    sumlx = hn::Add(sumlx, hn::Mul(hn::Mul(w, x), fl));
    suml2 = hn::Add(suml2, hn::Mul(hn::Mul(w, fl), fl));
  }
  auto active = hn::Not(hn::Lt(zero, zero));  // all lanes: a lane stops after a pass without change
  for (int itry = 0; itry < 5; ++itry) {
    auto changed = hn::Lt(zero, zero);  // none
    for (int i = 0; i < n; ++i) {
      const VF x = X(i);
      const VF w = hn::Mul(x, x);
      const VI li = hn::Load(di, levels + i * N);
      const VF fli = hn::ConvertTo(df, li);
      VF slx = hn::Sub(sumlx, hn::Mul(hn::Mul(w, x), fli));
      const auto slx_pos = hn::Gt(slx, zero);
      VF sl2 = hn::Sub(suml2, hn::Mul(hn::Mul(w, fli), fli));
      const VI new_l = ClampInt(GgmlNearestInt(hn::Div(hn::Mul(x, sl2), slx)), lo, hi);
      const auto differs = hn::RebindMask(df, hn::Not(hn::Eq(new_l, li)));
      const VF fnl = hn::ConvertTo(df, new_l);
      slx = hn::Add(slx, hn::Mul(hn::Mul(w, x), fnl));
      sl2 = hn::Add(sl2, hn::Mul(hn::Mul(w, fnl), fnl));
      const auto better = hn::And(
          hn::Gt(sl2, zero), hn::Gt(hn::Mul(hn::Mul(slx, slx), suml2), hn::Mul(hn::Mul(sumlx, sumlx), sl2)));
      const auto take = hn::And(hn::And(active, slx_pos), hn::And(differs, better));
      hn::Store(hn::IfThenElse(hn::RebindMask(di, take), new_l, li), di, levels + i * N);
      sumlx = hn::IfThenElse(take, slx, sumlx);
      suml2 = hn::IfThenElse(take, sl2, suml2);
      changed = hn::Or(changed, take);
    }
    active = hn::And(active, changed);
    if (hn::AllFalse(df, active)) break;
  }
  const VF scale = hn::IfThenElse(hn::Gt(suml2, zero), hn::Div(sumlx, suml2), zero);
  hn::StoreU(hn::IfThenElse(all_zero, zero, scale), df, scale_out);
  const auto all_zero_i = hn::RebindMask(di, all_zero);
  const VI off = hn::Set(di, nmax);
  for (int i = 0; i < n; ++i) {
    const VI l = hn::Add(hn::Load(di, levels + i * N), off);
    StoreLevelBytes(hn::IfThenZeroElse(all_zero_i, l), Lt + i * kBatch);
  }
}

// ---------------------------------------------------------------- IQ4

// Nearest IQ4 level to each lane of `al`, as ggml's binary search finds it:
// `below` counts the inner levels al is not less than (all of them for NaN),
// lo/hi are the levels either side, and the lower one wins only when strictly
// nearer. Returns the level; *index gets its index.
HWY_INLINE VF Iq4NearestLevel(VF al, VI* index) {
  const DF df;
  const DI di;
  VF lo = hn::Set(df, kLevels[0]);
  VF hi = hn::Set(df, kLevels[1]);
  VI below = hn::Zero(di);
  for (int k = 1; k < 15; ++k) {
    const auto ge = hn::Not(hn::Lt(al, hn::Set(df, kLevels[k])));
    lo = hn::Add(lo, hn::IfThenElseZero(ge, hn::Set(df, kLevels[k] - kLevels[k - 1])));
    hi = hn::Add(hi, hn::IfThenElseZero(ge, hn::Set(df, kLevels[k + 1] - kLevels[k])));
    below = hn::Sub(below, hn::VecFromMask(di, hn::RebindMask(di, ge)));
  }
  const auto take_lo = hn::Lt(hn::Sub(al, lo), hn::Sub(hi, al));
  *index = hn::Add(below, hn::IfThenZeroElse(hn::RebindMask(di, take_lo), hn::Set(di, 1)));
  return hn::IfThenElse(take_lo, lo, hi);
}

void Iq4Group(int n, const float* HWY_RESTRICT xt, const float* HWY_RESTRICT wt, float* HWY_RESTRICT d_out) {
  const DF df;
  const VF zero = hn::Zero(df);
  auto X = [&](int i) { return hn::LoadU(df, xt + i * kBatch); };
  auto W = [&](int i) { return hn::LoadU(df, wt + i * kBatch); };

  VF max = zero, amax = zero;
  for (int i = 0; i < n; ++i) {
    const VF x = X(i), ax = hn::Abs(x);
    const auto gt = hn::Gt(ax, amax);
    amax = hn::IfThenElse(gt, ax, amax);
    max = hn::IfThenElse(gt, x, max);
  }
  const auto all_zero = hn::Lt(amax, hn::Set(df, kGroupMaxEps));

  auto sums = [&](VF id, VF* sumqx, VF* sumq2) {
    VF a = zero, b = zero;
    for (int i = 0; i < n; ++i) {
      const VF x = X(i);
      VI unused;
      const VF q = Iq4NearestLevel(hn::Mul(id, x), &unused);
      const VF wq = hn::Mul(W(i), q);
      a = hn::Add(a, hn::Mul(wq, x));
      b = hn::Add(b, hn::Mul(wq, q));
    }
    *sumqx = a;
    *sumq2 = b;
  };

  VF d = hn::Div(hn::Neg(max), hn::Set(df, kLevels[0]));
  VF id = hn::Div(hn::Set(df, 1.0f), d);
  VF sumqx, sumq2;
  sums(id, &sumqx, &sumq2);
  d = hn::IfThenElse(hn::Gt(sumq2, zero), hn::Div(sumqx, sumq2), zero);
  VF best = hn::Mul(d, sumqx);
  for (int itry = -7; itry <= 7; ++itry) {
    id = hn::Div(hn::Set(df, static_cast<float>(itry + static_cast<int>(kLevels[0]))), max);
    sums(id, &sumqx, &sumq2);
    const auto better = hn::And(hn::Gt(sumq2, zero), hn::Gt(hn::Mul(sumqx, sumqx), hn::Mul(best, sumq2)));
    d = hn::IfThenElse(better, hn::Div(sumqx, sumq2), d);
    best = hn::IfThenElse(better, hn::Mul(d, sumqx), best);
  }
  hn::StoreU(hn::IfThenElse(all_zero, zero, d), df, d_out);
}

// ---------------------------------------------------------------- batch drivers

void QkxBatch(int count, int n, const QkxParams& p, const float* HWY_RESTRICT xt,
              const float* HWY_RESTRICT wt, float* HWY_RESTRICT scale, float* HWY_RESTRICT the_min,
              uint8_t* HWY_RESTRICT Lt) {
  const size_t N = hn::Lanes(DF());
  auto group = p.use_mad ? (p.qkx3 ? QkxGroup<true, true> : QkxGroup<true, false>)
                         : (p.qkx3 ? QkxGroup<false, true> : QkxGroup<false, false>);
  for (size_t g = 0; g < static_cast<size_t>(count); g += N)
    group(n, p, xt + g, wt + g, scale + g, the_min + g, Lt + g);
}

void QxBatch(int count, int n, int nmax, const float* HWY_RESTRICT xt, const float* HWY_RESTRICT wt,
             float* HWY_RESTRICT scale, int8_t* HWY_RESTRICT Lt) {
  const size_t N = hn::Lanes(DF());
  for (size_t g = 0; g < static_cast<size_t>(count); g += N) {
    if (wt)
      QxGroup<true>(n, nmax, xt + g, wt + g, scale + g, Lt + g);
    else
      QxGroup<false>(n, nmax, xt + g, nullptr, scale + g, Lt + g);
  }
}

void Q3Batch(int count, int n, int nmax, const float* HWY_RESTRICT xt, float* HWY_RESTRICT scale,
             int8_t* HWY_RESTRICT Lt) {
  const size_t N = hn::Lanes(DF());
  for (size_t g = 0; g < static_cast<size_t>(count); g += N) Q3Group(n, nmax, xt + g, scale + g, Lt + g);
}

void Iq4Batch(int count, int n, const float* HWY_RESTRICT xt, const float* HWY_RESTRICT wt,
              float* HWY_RESTRICT d) {
  const size_t N = hn::Lanes(DF());
  for (size_t g = 0; g < static_cast<size_t>(count); g += N) Iq4Group(n, xt + g, wt + g, d + g);
}

void Iq4Indices(int n, const float* HWY_RESTRICT x, float id, uint8_t* HWY_RESTRICT L) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF idv = hn::Set(df, id);
  size_t i = 0;
  for (; i + N <= static_cast<size_t>(n); i += N) {
    VI index;
    Iq4NearestLevel(hn::Mul(idv, hn::LoadU(df, x + i)), &index);
    StoreLevelBytes(index, L + i);
  }
  if (i < static_cast<size_t>(n)) {  // only on targets wider than n
    const size_t rest = static_cast<size_t>(n) - i;
    HWY_ALIGN float tail[hn::MaxLanes(df)] = {};
    HWY_ALIGN uint8_t out[hn::MaxLanes(df)];
    for (size_t j = 0; j < rest; ++j) tail[j] = x[i + j];
    VI index;
    Iq4NearestLevel(hn::Mul(idv, hn::Load(df, tail)), &index);
    StoreLevelBytes(index, out);
    for (size_t j = 0; j < rest; ++j) L[i + j] = out[j];
  }
}

template <bool kWithMin>
void RequantizeT(int nsub, int len, const float* HWY_RESTRICT x, const float* HWY_RESTRICT d,
                 const float* HWY_RESTRICT dm, int lo, int hi, int off, uint8_t* HWY_RESTRICT L) {
  const DF df;
  const DI di;
  const size_t N = hn::Lanes(df);  // divides len: len is 16 or 32, N at most 16
  const VI vlo = hn::Set(di, lo), vhi = hn::Set(di, hi), voff = hn::Set(di, off);
  for (int j = 0; j < nsub; ++j) {
    if (d[j] == 0) continue;
    const VF dv = hn::Set(df, d[j]);
    const VF dmv = hn::Set(df, kWithMin ? dm[j] : 0.0f);
    for (size_t i = 0; i < static_cast<size_t>(len); i += N) {
      VF v = hn::LoadU(df, x + j * len + i);
      if constexpr (kWithMin) v = hn::Add(v, dmv);
      const VI l = hn::Add(ClampInt(GgmlNearestInt(hn::Div(v, dv)), vlo, vhi), voff);
      StoreLevelBytes(l, L + j * len + i);
    }
  }
}

void Requantize(int nsub, int len, const float* HWY_RESTRICT x, const float* HWY_RESTRICT d,
                const float* HWY_RESTRICT dm, int lo, int hi, int off, uint8_t* HWY_RESTRICT L) {
  if (dm)
    RequantizeT<true>(nsub, len, x, d, dm, lo, hi, off, L);
  else
    RequantizeT<false>(nsub, len, x, d, nullptr, lo, hi, off, L);
}

// IEEE binary32 -> binary16 with integer lane ops (targets without F16C):
// round to nearest even, overflow to infinity, NaN to 0x7e00, like
// qforge::fp32_to_fp16 (qforge/half.h).
template <class D>
HWY_INLINE hn::Vec<hn::RebindToSigned<D>> Fp16Bits(D df, hn::Vec<D> v) {
  const hn::RebindToSigned<D> di;
  using V = hn::Vec<decltype(di)>;
  const V bits = hn::BitCast(di, v);
  const V sign = hn::And(hn::ShiftRight<16>(bits), hn::Set(di, 0x8000));
  const V a = hn::And(bits, hn::Set(di, 0x7fffffff));
  // Normal halves: exponent rebased, mantissa cut to 10 bits, rounded.
  const V q = hn::Sub(hn::ShiftRight<13>(a), hn::Set(di, 112 << 10));
  const V rem = hn::And(a, hn::Set(di, 0x1fff));
  const V odd = hn::And(q, hn::Set(di, 1));
  const V normal = hn::Add(q, hn::ShiftRight<13>(hn::Add(hn::Add(rem, hn::Set(di, 0x0fff)), odd)));
  // Subnormal halves (|x| < 2^-14): adding 0.5 leaves round(|x| * 2^24) in
  // the low mantissa bits, rounded to nearest even by the FPU.
  const V sub =
      hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(df, a), hn::Set(df, 0.5f))), hn::Set(di, 0x3f000000));
  V r = hn::IfThenElse(hn::Lt(a, hn::Set(di, 0x38800000)), sub, normal);
  r = hn::IfThenElse(hn::Lt(a, hn::Set(di, 0x477ff000)), r, hn::Set(di, 0x7c00));
  r = hn::IfThenElse(hn::Gt(a, hn::Set(di, 0x7f800000)), hn::Set(di, 0x7e00), r);
  return hn::Or(r, sign);
}

void Fp32ToFp16Row(const float* HWY_RESTRICT x, uint16_t* HWY_RESTRICT y, int64_t n) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  int64_t i = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  // F16C rounds to nearest even like IEEE (Highway's own emulation on older
  // targets truncates, hence Fp16Bits there).
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  for (; i + static_cast<int64_t>(N) <= n; i += static_cast<int64_t>(N))
    hn::StoreU(hn::DemoteTo(dh, hn::LoadU(df, x + i)), dh, reinterpret_cast<hwy::float16_t*>(y + i));
#else
  const hn::Rebind<uint16_t, decltype(df)> du16;
  for (; i + static_cast<int64_t>(N) <= n; i += static_cast<int64_t>(N))
    hn::StoreU(hn::DemoteTo(du16, Fp16Bits(df, hn::LoadU(df, x + i))), du16, y + i);
#endif
  for (; i < n; ++i) y[i] = fp32_to_fp16_scalar(x[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace qforge::gguf::detail::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qforge::gguf::detail::simd {

HWY_EXPORT(QkxBatch);
HWY_EXPORT(QxBatch);
HWY_EXPORT(Q3Batch);
HWY_EXPORT(Iq4Batch);
HWY_EXPORT(Iq4Indices);
HWY_EXPORT(Requantize);
HWY_EXPORT(Fp32ToFp16Row);

void qkx_batch(int count, int n, const QkxParams& p, const float* xt, const float* wt, float* scale,
               float* the_min, uint8_t* Lt) {
  HWY_DYNAMIC_DISPATCH(QkxBatch)(count, n, p, xt, wt, scale, the_min, Lt);
}

void qx_batch(int count, int n, int nmax, const float* xt, const float* wt, float* scale, int8_t* Lt) {
  HWY_DYNAMIC_DISPATCH(QxBatch)(count, n, nmax, xt, wt, scale, Lt);
}

void q3_batch(int count, int n, int nmax, const float* xt, float* scale, int8_t* Lt) {
  HWY_DYNAMIC_DISPATCH(Q3Batch)(count, n, nmax, xt, scale, Lt);
}

void iq4_batch(int count, int n, const float* xt, const float* wt, float* d) {
  HWY_DYNAMIC_DISPATCH(Iq4Batch)(count, n, xt, wt, d);
}

void requantize(int nsub, int len, const float* x, const float* d, const float* dm, int lo, int hi, int off,
                uint8_t* L) {
  HWY_DYNAMIC_DISPATCH(Requantize)(nsub, len, x, d, dm, lo, hi, off, L);
}

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) {
  HWY_DYNAMIC_DISPATCH(Fp32ToFp16Row)(x, y, n);
}

void iq4_indices(int n, const float* x, float id, uint8_t* L) {
  HWY_DYNAMIC_DISPATCH(Iq4Indices)(n, x, id, L);
}

}  // namespace qforge::gguf::detail::simd
#endif  // HWY_ONCE
