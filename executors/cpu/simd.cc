// Vectorised float loops (Highway, dynamic dispatch to the best instruction
// set of the machine) for elementwise kernels the profile shows matter
// (executors/cpu/README.md, "Threads" and --profile).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>

#include "simd.h"

HWY_BEFORE_NAMESPACE();
namespace qforge::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void ClipF32(const float* x, float* y, int64_t n, float lo, float hi) {
  const hn::ScalableTag<float> d;
  const auto vlo = hn::Set(d, lo);
  const auto vhi = hn::Set(d, hi);
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::Min(hn::Max(hn::LoadU(d, x + i), vlo), vhi), d, y + i);
  for (; i < n; ++i) y[i] = std::min(std::max(x[i], lo), hi);
}

}  // namespace HWY_NAMESPACE
}  // namespace qforge::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qforge::cpu {
HWY_EXPORT(ClipF32);
void clip_f32(const float* x, float* y, int64_t n, float lo, float hi) {
  HWY_DYNAMIC_DISPATCH(ClipF32)(x, y, n, lo, hi);
}
}  // namespace qforge::cpu
#endif
