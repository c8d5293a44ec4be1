// The calibration collectors' inner loops, vectorised with Highway (dynamic
// dispatch): every activation of every sample streams through them, so they
// are the calibrate pass's cost (bench/quantize_static). Results do not
// depend on the instruction set: min and max are exact, sums are taken
// four lanes wide on every target in fixed-size float blocks added in order
// into a double, and bin indices are computed in float whatever the width.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qforge::calib {

struct SpanStats {
  float lo, hi;     // min and max of the finite values (+inf, -inf when none)
  double sum;       // their sum (when asked for)
  uint64_t finite;  // how many were finite
};

SpanStats span_stats(const float* x, size_t n, bool with_sum);

// Histogram slots of x[0..n): |v| * inv truncated and capped at bins - 1, in
// [0, bins) for v > 0 and [bins, 2 bins) for v < 0; 2 bins for 0 and 2 bins + 1
// for NaN and infinities.
void histogram_slots(const float* x, size_t n, float inv, int32_t bins, int32_t* slots);

}  // namespace qforge::calib
