// What calibration keeps per observed value: running min and max, their
// moving averages, and a fixed-size histogram that grows its range by merging
// pairs of bins, so memory does not depend on the number of samples
// (docs/architecture.md, "The seams"; docs/manifest.md, "Passes": calibrate).
//
// The histogram counts |x| of positive and negative values separately in
// `bins` bins of equal width from 0; a value beyond the covered range doubles
// the width (merging bins 2i and 2i+1 into i) until it fits. Bin edges stay
// multiples of the width, so merging is exact.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "range_table.h"

namespace qforge::calib {

enum class Method { MinMax, Percentile, Entropy, Mse };

struct Settings {
  Method method = Method::MinMax;
  double percentile = 99.999;  // Percentile
  bool symmetric = false;      // ranges symmetric about 0
  double moving_average = 0;   // MinMax: 0 = plain min/max, else the averaging constant
  int bins = 2048;             // histogram bins (Percentile, Entropy, Mse)
  int bits = 8;                // the integer width ranges are chosen for (Entropy, Mse)
};

class Collector {
 public:
  explicit Collector(const Settings& s);
  // Folds one observation (all elements of one value in one sample) in.
  void add(const float* x, uint64_t n);
  // The range the method chooses.
  quant::Range range() const;
  uint64_t count() const { return count_; }
  double min() const { return min_; }
  double max() const { return max_; }

 private:
  bool histogram() const { return s_.method != Method::MinMax; }
  void widen_to(double absmax);
  // The threshold on |x| the method picks from the histogram `h` (counts per bin from 0).
  double threshold(const std::vector<double>& h, uint64_t total) const;
  double quantile(double q) const;  // signed quantile from the two histograms

  Settings s_;
  uint64_t count_ = 0, nonfinite_ = 0;
  double min_ = 0, max_ = 0;
  double ma_min_ = 0, ma_max_ = 0;
  uint64_t observations_ = 0;
  double width_ = 0;  // bin width; 0 until a non-zero value is seen
  std::vector<double> pos_, neg_;
  double zeros_ = 0;
  std::vector<uint32_t> counts_;  // scratch of add(): slot counts of one observation
  std::vector<int32_t> slots_;    // scratch of add(): slots of a chunk
};

// Per-channel min, max and mean of one value along one axis (1: NCHW
// channels; -1: the last axis, which MatMul and Gemm reduce), over every
// observation: three doubles and a count per channel, so memory does not
// grow with the samples. An observation whose channel count differs from
// the first one's (a sequence length on that axis, say) or whose rank has no
// such axis turns the statistics off for the value (`valid()` false):
// they are an option of the consumers, never a requirement.
class ChannelCollector {
 public:
  explicit ChannelCollector(int64_t axis) : axis_(axis) {}
  void add(const float* x, const std::vector<int64_t>& shape);
  bool valid() const { return valid_ && !count_.empty(); }
  int64_t axis() const { return axis_; }
  // The statistics (channels without a finite value get 0, 0, 0).
  quant::ChannelStats stats() const;

 private:
  int64_t axis_;
  bool valid_ = true;
  std::vector<double> min_, max_, sum_;
  std::vector<uint64_t> count_;
};

}  // namespace qforge::calib
