// Accuracy beyond round-to-nearest for quantize-static, each behind an
// option of the pass (docs/manifest.md, "Accuracy options of `quantize-static`"):
//
//  * weight_clip = "mse": per output channel (per tensor when not
//    per_channel), the clip ratio r of the channel's range [r * min, r * max]
//    is searched over 100 candidates from 1.0 down to 0.5 for the one with the
//    least squared quantization error of that channel's weights (ties keep the
//    larger ratio, so "mse" never does worse than "minmax" on a channel).
//    Clipping a few outlying weights buys a finer step for all the others;
//    it matters most for 4-bit weights.
//  * bias_correction: quantizing a weight W to Wq shifts the expected output
//    of its node by (Wq - W) . E[x], E[x] the per-input-channel mean of the
//    activation it reads (calibrate's per-channel statistics, range_table.h).
//    The bias absorbs the shift: b' = b - (Wq - W) . E[x] (Nagel et al. 2019,
//    "Data-Free Quantization Through Weight Equalization and Bias
//    Correction", the empirical form). Conv, Gemm, and MatMul followed by an
//    Add of a constant bias; a Conv or Gemm without a bias gets one.
//  * equalize: cross-layer equalization (passes/common/equalize.h) inside the
//    pass, with the calibrated ranges of the values it rescales rescaled too
//    (rescale_ranges below).
//
// The weight quantization itself (quantize_weight) is the one the pass
// always uses: round to nearest on quant_utils' scales, with the clip ratio
// 1 unless weight_clip says otherwise.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"
#include "qforge/pass.h"
#include "quant_math.h"
#include "range_table.h"

namespace qforge::passes::accuracy {

enum class WeightClip { MinMax, Mse };

struct WeightScheme {
  ElemType type = ElemType::I8;
  bool symmetric = true;
  bool reduce_range = false;
  WeightClip clip = WeightClip::MinMax;
};

// A weight quantized per channel along one axis (or per tensor): element e
// belongs to channel (e / inner) % channels.
struct QuantizedWeight {
  int64_t channels = 1;
  int64_t inner = 1;
  std::vector<int32_t> codes;
  std::vector<quant::ScaleZp> params;  // one per channel
  int64_t channel_of(size_t e) const {
    return channels == 1 ? 0 : static_cast<int64_t>(e / inner) % channels;
  }
  std::vector<float> dequantized() const;
};

// Quantizes `v` of `shape` per channel along `axis` (-1: one scale for the
// whole tensor) with the scheme's type, symmetry, range and clip search.
QuantizedWeight quantize_weight(const std::vector<float>& v, const std::vector<int64_t>& shape, int64_t axis,
                                const WeightScheme& s);

// The clip search of weight_clip = "mse" over one channel's values: the
// scale and zero point with the least squared error. Exposed for tests.
quant::ScaleZp mse_clip(const std::vector<float>& values, quant::QRange r, bool symmetric);
// Squared quantization error of `values` under `p`.
double squared_error(const std::vector<float>& values, const quant::ScaleZp& p, quant::QRange r);

// The expected shift of each output channel when a Conv weight `w`
// ([M, C/group, k...]) is replaced by `wq`, given the per-input-channel means
// `mean` (C of them): sum over (c, k) of (wq - w)[m, c, k] * mean[c]. Padding
// is ignored (border outputs read fewer inputs than the mean assumes).
std::vector<double> conv_output_shift(const std::vector<float>& w, const std::vector<float>& wq,
                                      const std::vector<int64_t>& shape, int64_t group,
                                      const std::vector<double>& mean);
// The same for a matrix [K, N] (stored [N, K] when `transposed`, Gemm
// transB = 1): sum over k of (wq - w)[k, n] * mean[k].
std::vector<double> matmul_output_shift(const std::vector<float>& w, const std::vector<float>& wq, int64_t K,
                                        int64_t N, bool transposed, const std::vector<double>& mean);

// A node whose weight the pass quantizes: its index, the weight's
// per-channel axis (-1: per tensor) and the input index of the bias the pass
// quantizes (-1: none; set to the new bias when one is added).
struct BiasTarget {
  size_t node = 0;
  int64_t axis = -1;
  int bias = -1;
};

// Applies bias correction to every target, quantizing each weight as
// quantize_weight does. A bias read by its node alone gets the corrected
// values under its own name; a shared one is replaced by a new tensor (its
// name appended to `replaced`), and a missing one added (the target's `bias`
// set). Reports in `res` (metric bias_corrected, a note, skipped nodes with
// the reason); a table without any per-channel statistics (written by
// calibrate before version 2, or by hand) corrects nothing, with a note.
// Returns the constants changed in place (an Add's after a MatMul), whose
// ranges the caller recomputes.
std::vector<std::string> correct_biases(Model& work, std::vector<BiasTarget>& targets, const WeightScheme& s,
                                        const quant::RangeTable& table, std::vector<std::string>& replaced,
                                        PassResult& res);

// quantize-static's `equalize`: cross-layer equalization of `work`
// (passes/common/equalize.h) limited to pairs whose values have per-channel
// statistics in `table`, then rescale_ranges. Reports in `res`.
void equalize_calibrated(Model& work, quant::RangeTable& table, PassResult& res);

// After cross-layer equalization divided channel c of each value in
// `scaled` by s[c]: the value's range (and its per-channel statistics) in
// `table` rescaled to match. The new range is the method's range times
// the ratio of the new to the old per-channel extremes on each side (exact
// for minmax). A value without per-channel statistics cannot be rescaled:
// it is returned.
std::vector<std::string> rescale_ranges(quant::RangeTable& table,
                                        const std::map<std::string, std::vector<double>>& scaled);

}  // namespace qforge::passes::accuracy
