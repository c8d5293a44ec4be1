// Vectorised float loops (simd.cc, Highway).
#pragma once

#include <cstdint>

namespace qforge::cpu {

// y[i] = min(max(x[i], lo), hi) for i < n (x and y may be the same array).
void clip_f32(const float* x, float* y, int64_t n, float lo, float hi);

}  // namespace qforge::cpu
