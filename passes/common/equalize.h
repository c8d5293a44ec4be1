// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization
// Through Weight Equalization and Bias Correction", section 4.1), shared by
// the `equalize` pass (passes/preprocess/equalize.cc) and quantize-static's
// `equalize` option.
//
// For two Conv nodes in a row, Conv1 -> [act] -> Conv2, where the activation
// between them is absent or positively homogeneous (Relu, LeakyRelu:
// act(x / s) = act(x) / s for s > 0), dividing output channel i of Conv1
// (its weights and bias) by s_i and multiplying the weights Conv2 applies to
// its input channel i by s_i leaves the float output unchanged. With
//   s_i = sqrt(r1_i * r2_i) / r2_i
// (r1_i the largest |weight| of Conv1's output channel i, r2_i that of the
// weights Conv2 applies to input channel i) both become sqrt(r1_i * r2_i):
// the per-channel weight ranges are equalized, which is what per-tensor
// weight quantization (and a depthwise Conv's few weights per channel) needs.
// Chains (Conv -> depthwise Conv -> Conv) are iterated until the scales stop
// changing.
//
// Left alone: Clip (ReLU6 and hard-swish: clip(x / s) != clip(x) / s),
// activations with other readers (they would see scaled values), graph
// outputs, shared or non-float weights, and BatchNormalization in between
// (fold it first: fold-batchnorm, or quantize-static's fold_batchnorm).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"
#include "qforge/pass.h"

namespace qforge::quant {

struct EqualizeOptions {
  int max_iterations = 20;  // sweeps over all pairs
  double tolerance = 1e-4;  // stop when no scale in a sweep differs from 1 by more
  // Whether a value between a pair may be rescaled (quantize-static: only
  // values whose calibrated range can be rescaled too). Default: all.
  std::function<bool(const std::string& value)> can_rescale;
};

struct EqualizeResult {
  size_t pairs = 0;       // Conv pairs equalized
  size_t iterations = 0;  // sweeps made
  // value -> per-channel divisor: every value between an equalized pair had
  // its channel c divided by scaled[value][c].
  std::map<std::string, std::vector<double>> scaled;
  std::vector<Skipped> skipped;  // pairs that matched the pattern but were left alone, with the reason
  // Mean over the pairs' channels of max(r1_i / r2_i, r2_i / r1_i), before
  // and after: 1 when every channel is equalized.
  double spread_before = 0, spread_after = 0;
};

// Equalizes every matching pair of the top-level graph of `work` in place:
// the Conv nodes' weights and biases (read by them alone) get new values
// under their own names.
EqualizeResult equalize(Model& work, const EqualizeOptions& o = {});

}  // namespace qforge::quant
