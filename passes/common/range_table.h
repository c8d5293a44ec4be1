// The activation range table ("ranges/1"): what `calibrate` makes and
// `quantize-static` consumes (docs/manifest.md, "Passes").
//
// Table data:
//   { "method": "percentile", "samples": 16, "symmetric": false,
//     "values": { "<value name>": { "min": -1.5, "max": 3.25 }, ... } }
// Values are listed in the order the executor produced them.
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

struct RangeTable {
  std::string method;
  int64_t samples = 0;
  bool symmetric = false;
  std::vector<std::pair<std::string, Range>> values;  // in production order

  Table to_table() const;
  // Throws qforge::Error naming `what` when the table is not a ranges/1 table.
  static RangeTable from_table(const Table& t, const std::string& what);
  const Range* find(const std::string& value) const;
};

}  // namespace qforge::quant
