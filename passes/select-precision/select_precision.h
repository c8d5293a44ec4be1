// The select-precision pass: a per-tensor choice of GGUF types for a size budget (a
// `precision/1` Table, passes/quantize-gguf/precision_plan.h) that the next
// quantize-gguf step follows.
//
// 1. Which tensors: those quantize-gguf's rules (llama.cpp's) would quantize; norms,
//    1-D tensors and the others llama.cpp keeps stay as they are and count as fixed
//    bytes. A tensor's candidates are the `types` (or the profile's [gguf] fast_types)
//    whose block size divides its row length (K-quants need a multiple of 256).
// 2. Measure: each tensor, one at a time, is quantized and dequantized with qforge's
//    kernels (the same bytes quantize-gguf writes, with the same importance matrix) under
//    every candidate, on all threads. Its error is the squared error weighted per column
//    by the imatrix (the expected squared error of the tensor's output, E||dW x||^2, when
//    the imatrix holds E[x^2]), or unweighted without one; token_embd, which is looked up
//    rather than multiplied, counts its mean row error (one row per token). Tensors with
//    more than `max_rows` rows are measured on `max_rows` evenly spaced rows and the
//    error scaled up (said in the notes). Floors (`min_cosine`, `min_sqnr_db`) drop the
//    candidates whose weight-space cosine or SQNR falls below them.
// 3. Choose: minimise the total error within the budget, a multiple-choice knapsack,
//    solved by an exact dynamic programme over a byte grid: the cell is the greatest
//    common divisor of every cost (the GGUF alignment, usually), or, when the grid
//    would exceed kMaxDpEntries entries, a coarser cell with costs rounded up (the
//    plan still fits; the rounding loses at most one cell per tensor), after which a
//    greedy pass spends the bytes the rounding left on the upgrades with the best error
//    reduction per byte. Dominated candidates (no cheaper and no better) are dropped
//    first.
// 4. Account exactly: the GGUF file size is the header and metadata quantize-gguf will
//    write (general.file_type, quantize.imatrix.*), the tensor infos, and every tensor's
//    data padded to the alignment (gguf_file_size), so a byte budget bounds the file.
//
// With objective = "kl", step 3 minimises instead the sum of the tensors' measured
// next-token KL sensitivities (gguf-sensitivity, sensitivity.h): each tensor's cost is the
// KL its quantization alone causes, and the sum is a first-order estimate that assumes the
// effects add up. The weight error is still measured and reported (`error`), the floors
// still apply, and the estimate is reported as `kl_estimate`.
//
// Budgets: bytes ("3.5GiB", "123456": the whole file), bits per weight ("4.5bpw": tensor
// data bits over all weights, as llama.cpp reports BPW), or a llama.cpp file type
// ("Q4_K_M": the file size quantize-gguf's Q4_K_M mixture gives this model, which is
// llama.cpp's); then the mixture's own error is measured and reported beside the plan's.
//
// ONNX models (select_onnx, onnx.cc): a plan (passes/quantize-static/onnx_precision_plan.h,
// "precision/1" with "format": "onnx") that keeps the model's fidelity on `dataset` at
// or above the floor (`min_cosine`, `min_sqnr_db`, worst output, against the float model,
// run with the build's executor; the cosine is the lesser of the cosine over all samples
// and the mean of the per-sample cosines) at the fewest extra bytes it finds, then with
// as few wide nodes as it can keep:
// 1. Candidates: the nodes quantize-static quantizes (in process, with the step's ranges
//    and the quantization options mirrored here), but the data-movement ops, which
//    follow the values around them. Every candidate at 8 bits is the baseline; when it
//    meets the floor, the plan widens nothing.
// 2. Levels and costs: `widen_to` lists the levels a node may get in order of cost (a
//    16-bit activation type, "float", or both). A level's cost is the tensor bytes it
//    adds: 0 for 16-bit activations (8-bit weights stay), 0 for float on a node that
//    reads no float initializer (attention's activation x activation MatMuls, Softmax,
//    Add of two activations ...) or only ones quantize-static leaves in float or stores
//    in no fewer bytes (a scalar's code, scale and zero point), and for float on a node
//    with weights the float bytes of its initializers less their quantized codes, scales
//    and zero points in the 8-bit model (float_cost in onnx.cc).
// 3. The free point: every candidate at the highest level that costs nothing (measured
//    on all `samples`).
// 4. Paid widenings, when the free point misses the floor: each node with weights put in
//    float alone on top of the free point, measured on the first `sensitivity_samples`
//    samples: its gain per byte ranks it (no gain: last); the fewest of the
//    ranking meeting the floor on all samples, by binary search. A floor that every node
//    at its highest level misses is an error naming what that reaches; a plan over
//    `budget` (bytes) is an error naming its bytes and the floor.
// 5. Giving back (`give_back`, on by default): the free widenings the floor does not
//    need go back to 8 bits (fewer wide nodes, a faster model). Blocks of them in graph
//    order are tried on all samples, largest first: all of them, then the halves of a
//    block that cannot go back, and so on, at most kGiveBackMeasurements measurements
//    (onnx.cc; a note says what was left untried). No per-node ranking: one node's
//    effect at the plan is below what a few samples resolve.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "precision_plan.h"
#include "qforge/model.h"
#include "qforge/pass.h"
#include "qforge/progress.h"

namespace qforge::select_precision {

// Above this many (tensors x grid cells), the DP grid coarsens.
constexpr uint64_t kMaxDpEntries = uint64_t(1) << 25;
constexpr uint64_t kMaxDpCells = uint64_t(1) << 22;  // and above this many cells

struct Settings {
  std::string budget;                             // as written
  std::vector<std::string> types;                 // candidate tensor types, in order
  std::string imatrix;                            // path; empty: unweighted
  std::string imatrix_written;                    // as the user wrote it (quantize.imatrix.file)
  std::optional<double> min_cosine, min_sqnr_db;  // per-tensor floors
  int64_t max_rows = 4096;                        // rows measured per tensor; 0: all
  // "error": minimise the summed weight error; "kl": the summed per-tensor next-token KL
  // of `sensitivity` (a gguf-sensitivity table; sensitivity.h): a first-order, additive
  // estimate of the plan's KL. An unsupported table falls back to "error" with a warning.
  std::string objective = "error";
  std::shared_ptr<const Table> sensitivity;
  // objective "kl": the summed weight error the plan may not exceed (a number, or
  // "reference": the error of the file-type budget's llama.cpp mixture). The least-KL plan
  // within it is found through the Lagrangian KL + lambda * error (exact per lambda; lambda by
  // bisection), so the plan is optimal for that multiplier, not always over every plan.
  std::optional<std::string> max_error;
};

struct Candidate {
  ElemType type;
  uint64_t bytes = 0;  // tensor data
  double error = 0;
  double cosine = 1, sqnr_db = 0;
  double kl = -1;  // objective "kl": the measured sensitivity; -1 otherwise
};

struct TensorChoice {
  std::string name;
  std::vector<Candidate> candidates;  // measured, after the floors
  size_t chosen = 0;
  int64_t rows = 0, measured_rows = 0;
};

struct Result {
  gguf_quant::PrecisionPlan plan;
  std::shared_ptr<const Table> onnx_plan;  // the ONNX half's plan
  std::vector<TensorChoice> tensors;
  std::map<std::string, double> metrics;
  std::vector<std::string> notes, warnings;
};

// Throws qforge::Error (a budget too small names the size needed).
Result select(const Model& model, const Settings& settings, int threads, Progress& progress);

// The ONNX half's settings; `quantize` holds quantize-static's options the
// search quantizes with (activation_type, weight_type, per_channel, ...).
struct OnnxSettings {
  std::string dataset;
  std::optional<double> min_cosine, min_sqnr_db;
  std::optional<uint64_t> budget_bytes;
  // Levels in order of cost ("uint16" or "int16", then "float"); empty: the
  // 16-bit type of activation_type.
  std::vector<std::string> widen_to;
  int64_t samples = 0;  // 0: the whole dataset
  int64_t sensitivity_samples = 4;
  bool give_back = true;  // step 5
  Options quantize;
};

// Throws qforge::Error (a floor not reached, a budget exceeded).
Result select_onnx(const Model& model, const OnnxSettings& settings, PassContext& ctx);

PassInfo pass_info();

}  // namespace qforge::select_precision
