// See stats_simd.h.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "stats_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "stats_simd.h"

HWY_BEFORE_NAMESPACE();
namespace qforge::calib {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr size_t kSumBlock = 1024;  // float partial sums over this many elements, then double

// With a sum, 4 lanes on every target (lane k adds the elements k mod 4 of a
// block, the lanes are added in order): the same bits whatever the machine.
template <class D>
SpanStats SpanStatsT(D d, const float* x, size_t n, bool with_sum) {
  const size_t lanes = hn::Lanes(d);
  const float inf = std::numeric_limits<float>::infinity();
  auto vlo = hn::Set(d, inf), vhi = hn::Set(d, -inf);
  const auto vinf = hn::Set(d, inf), vninf = hn::Set(d, -inf), zero = hn::Zero(d);
  uint64_t finite = 0;
  double sum = 0;
  size_t i = 0;
  while (i + lanes <= n) {
    const size_t end = std::min(n - (n - i) % lanes, i + kSumBlock);
    auto vsum = zero;
    for (; i < end; i += lanes) {
      const auto v = hn::LoadU(d, x + i);
      const auto ok = hn::IsFinite(v);
      vlo = hn::Min(vlo, hn::IfThenElse(ok, v, vinf));
      vhi = hn::Max(vhi, hn::IfThenElse(ok, v, vninf));
      finite += hn::CountTrue(d, ok);
      if (with_sum) vsum = hn::Add(vsum, hn::IfThenElseZero(ok, v));
    }
    if (with_sum) {
      alignas(64) float part[16];
      hn::Store(vsum, d, part);
      float s = 0;
      for (size_t k = 0; k < lanes; ++k) s += part[k];
      sum += s;
    }
  }
  float lo = hn::GetLane(hn::MinOfLanes(d, vlo)), hi = hn::GetLane(hn::MaxOfLanes(d, vhi));
  for (; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v), hi = std::max(hi, v), ++finite;
    if (with_sum) sum += v;
  }
  return {lo, hi, sum, finite};
}

#if HWY_TARGET == HWY_SCALAR
// No vectors: the same arithmetic as four lanes, one element at a time.
SpanStats SumStats4(const float* x, size_t n) {
  const float inf = std::numeric_limits<float>::infinity();
  float lo = inf, hi = -inf;
  uint64_t finite = 0;
  double sum = 0;
  size_t i = 0;
  while (i + 4 <= n) {
    const size_t end = std::min(n - (n - i) % 4, i + kSumBlock);
    float acc[4] = {0, 0, 0, 0};
    for (; i < end; i += 4)
      for (size_t k = 0; k < 4; ++k) {
        const float v = x[i + k];
        if (!std::isfinite(v)) continue;
        lo = std::min(lo, v), hi = std::max(hi, v), ++finite, acc[k] += v;
      }
    float s = 0;
    for (float a : acc) s += a;
    sum += s;
  }
  for (; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v), hi = std::max(hi, v), ++finite, sum += v;
  }
  return {lo, hi, sum, finite};
}
#else
SpanStats SumStats4(const float* x, size_t n) { return SpanStatsT(hn::FixedTag<float, 4>(), x, n, true); }
#endif

SpanStats SpanStatsImpl(const float* x, size_t n, bool with_sum) {
  if (with_sum) return SumStats4(x, n);
  return SpanStatsT(hn::ScalableTag<float>(), x, n, false);
}

void HistogramSlotsImpl(const float* x, size_t n, float inv, int32_t bins, int32_t* slots) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const size_t lanes = hn::Lanes(d);
  const auto vinv = hn::Set(d, inv), cap = hn::Set(d, static_cast<float>(bins - 1)), zero = hn::Zero(d);
  const auto vbins = hn::Set(di, bins), vzero_slot = hn::Set(di, 2 * bins), vbad = hn::Set(di, 2 * bins + 1);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(d, x + i);
    const auto scaled = hn::Min(hn::Mul(hn::Abs(v), vinv), cap);  // NaN handled below
    auto slot = hn::ConvertTo(di, hn::IfThenElse(hn::IsFinite(scaled), scaled, zero));
    slot = hn::IfThenElse(hn::RebindMask(di, hn::Lt(v, zero)), hn::Add(slot, vbins), slot);
    slot = hn::IfThenElse(hn::RebindMask(di, hn::Eq(v, zero)), vzero_slot, slot);
    slot = hn::IfThenElse(hn::RebindMask(di, hn::Not(hn::IsFinite(v))), vbad, slot);
    hn::StoreU(slot, di, slots + i);
  }
  for (; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) {
      slots[i] = 2 * bins + 1;
    } else if (v == 0) {
      slots[i] = 2 * bins;
    } else {
      const int32_t b = static_cast<int32_t>(std::min(std::fabs(v) * inv, static_cast<float>(bins - 1)));
      slots[i] = v < 0 ? bins + b : b;
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qforge::calib
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qforge::calib {
HWY_EXPORT(SpanStatsImpl);
HWY_EXPORT(HistogramSlotsImpl);
SpanStats span_stats(const float* x, size_t n, bool with_sum) {
  return HWY_DYNAMIC_DISPATCH(SpanStatsImpl)(x, n, with_sum);
}
void histogram_slots(const float* x, size_t n, float inv, int32_t bins, int32_t* slots) {
  HWY_DYNAMIC_DISPATCH(HistogramSlotsImpl)(x, n, inv, bins, slots);
}
}  // namespace qforge::calib
#endif
