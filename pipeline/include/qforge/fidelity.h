// Fidelity of a candidate model's outputs against a reference's, for
// `qforge compare` and the evaluate pass (docs/manifest.md, "Evaluation").
//
// Accumulated sample by sample into a few sums per output (memory does not
// grow with the number of samples): over every element of every sample,
//   cosine            dot(r, c) / (|r| |c|)   (1 when both are all zeros)
//   sqnr_db           10 log10(sum r^2 / sum (r - c)^2)   (+inf when equal)
//   max_abs_err       max |r - c|
//   argmax_agreement  the share of rows (every position but the argmax axis)
//                     whose first maximum along the axis is at the same index
// Sums are taken in sample order, so the result does not depend on threads.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qforge/executor.h"

namespace qforge {

struct FidelityStats {
  double cosine = 1, sqnr_db = 0, max_abs_err = 0, argmax_agreement = 1;
  uint64_t elements = 0, rows = 0;
};

// One output's sums.
class FidelityAccumulator {
 public:
  // `argmax_axis`: the axis argmax runs along; negative counts from the last.
  explicit FidelityAccumulator(int argmax_axis = -1) : axis_(argmax_axis) {}
  // Folds one sample's values in. Throws qforge::Error naming `what` when the
  // shapes differ, the axis does not exist, or a type is not numeric.
  void add(const RunValue& reference, const RunValue& candidate, const std::string& what);
  FidelityStats stats() const;

 private:
  int axis_;
  double dot_ = 0, rr_ = 0, cc_ = 0, err2_ = 0, max_abs_ = 0;
  uint64_t n_ = 0, rows_ = 0, agree_ = 0;
};

// Every output of two models, matched by position.
class Fidelity {
 public:
  Fidelity(std::vector<std::string> output_names, int argmax_axis = -1);
  // One sample's outputs (in the reference's output order). Throws
  // qforge::Error naming `sample` and the output when counts or shapes differ.
  void add(const NamedValues& reference, const NamedValues& candidate, const std::string& sample);
  // Per output, in order.
  std::vector<std::pair<std::string, FidelityStats>> stats() const;

 private:
  std::vector<std::string> names_;
  std::vector<FidelityAccumulator> acc_;
};

// The worst of several outputs' stats: the least cosine, SQNR and argmax
// agreement, the largest max_abs_err (elements and rows are summed).
FidelityStats worst_of(const std::vector<std::pair<std::string, FidelityStats>>& outputs);

}  // namespace qforge
