// The activation range table ("ranges/1"): what `calibrate` makes and
// `quantize-static` consumes (docs/manifest.md, "Passes").
//
// Table data:
//   { "method": "percentile", "samples": 16, "symmetric": false,
//     "values": { "<value name>": { "min": -1.5, "max": 3.25 }, ... } }
// Values are listed in the order the executor produced them.
//
// A value may also carry per-channel statistics (optional fields, written
// by calibrate since its version 2 for the values that feed or leave a Conv,
// ConvTranspose, Gemm or MatMul; readers of older tables find none):
//   { "min": ..., "max": ..., "axis": 1,
//     "channel_min": [...], "channel_max": [...], "channel_mean": [...] }
// `axis` is the channel axis (1 for NCHW activations, -1 for the last axis,
// which MatMul and Gemm reduce); each list has one entry per channel: the
// channel's min, max and mean over every sample. Bias correction reads the
// means, SmoothQuant the absolute maxima, cross-layer equalization both
// (to rescale the ranges of the values it changes).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "qforge/table.h"

namespace qforge::quant {

inline constexpr const char* kRangesSchema = "ranges/1";

struct Range {
  double min = 0, max = 0;
};

// Per-channel statistics of one value (see above).
struct ChannelStats {
  int64_t axis = 1;  // -1: the last axis
  std::vector<double> min, max, mean;
  size_t channels() const { return mean.size(); }
};

struct RangeTable {
  std::string method;
  int64_t samples = 0;
  bool symmetric = false;
  std::vector<std::pair<std::string, Range>> values;  // in production order
  std::map<std::string, ChannelStats> channels;       // optional, by value name

  Table to_table() const;
  // Throws qforge::Error naming `what` when the table is not a ranges/1 table.
  static RangeTable from_table(const Table& t, const std::string& what);
  const Range* find(const std::string& value) const;
  Range* find(const std::string& value);
  const ChannelStats* channel_stats(const std::string& value) const;
};

}  // namespace qforge::quant
