// The gguf-sensitivity pass: how much each weight matrix of a llama GGUF model moves the
// next-token distribution when quantized to each candidate type (a `sensitivity/1`
// Table), for select-precision's objective = "kl" (docs/manifest.md).
//
// 1. The float model (llama_forward.h) runs every token sequence of `dataset` (.npy
//    int32/int64 token ids, one sequence per sample, at most `max_tokens` each), keeping
//    its logits and the residual stream at the input of every layer.
// 2. For each matrix and each candidate type (the `types` whose block size divides its
//    rows, as select-precision's), the matrix alone is quantized and dequantized with
//    qforge's kernels (with the `imatrix` when given: the bytes quantize-gguf writes), and
//    the forward re-runs from the first layer the matrix affects with it replaced. Its
//    cost is KL(float || perturbed) averaged over every position of every sequence, in
//    nats. One measurement per (matrix, type); measurements run on `threads` workers, each
//    forward single-threaded, so the table does not depend on the thread count.
// 3. A model the forward does not implement (another architecture, rope scaling, biases,
//    experts ...) is not an error: the table says unsupported and why, with a warning, and
//    select-precision falls back to the weight error (with a warning too).
//
// The table is keyed, like every step, by the model, the dataset's contents and the
// options, so the targets of several budgets over one model share one measurement.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qforge/dataset.h"
#include "qforge/model.h"
#include "qforge/pass.h"
#include "qforge/progress.h"
#include "qforge/table.h"

namespace qforge::select_precision {

constexpr const char* kSensitivitySchema = "sensitivity/1";

struct SensitivitySettings {
  std::vector<std::string> types;
  std::string imatrix;  // path; empty: none
  int64_t max_tokens = 256;
  int64_t samples = 0;  // sequences used; 0: all
};

// The measured table, as select-precision reads it.
struct Sensitivity {
  bool supported = false;
  std::string reason;  // why not, when unsupported
  bool imatrix = false;
  int64_t sequences = 0, positions = 0, measurements = 0;
  std::map<std::string, std::map<std::string, double>> kl;  // tensor -> TYPE -> mean KL (nats)

  Table to_table() const;
  // Throws qforge::Error on a malformed table.
  static Sensitivity from_table(const Table& t);
};

struct SensitivityResult {
  Sensitivity table;
  std::map<std::string, double> metrics;
  std::vector<std::string> notes, warnings;
};

// Throws qforge::Error for bad token data (naming the file and position) and for a
// failure of the measurement itself; an unsupported model is a warning (see above).
SensitivityResult measure_sensitivity(const Model& model, const Dataset& tokens, const SensitivitySettings& s,
                                      int threads, Progress& progress);

// Token sequences from a dataset: sample i's first array, integers, 1-D (or with leading
// dimensions of 1), truncated to max_tokens. Throws qforge::Error naming the file.
std::vector<std::vector<int32_t>> read_token_sequences(const Dataset& ds, int64_t samples, int64_t max_tokens,
                                                       int64_t n_vocab, int64_t n_ctx, int64_t& truncated);

PassInfo sensitivity_pass_info();

}  // namespace qforge::select_precision
