// The quantize-gguf pass: llama-quantize inside the qforge pipeline.
//
// quantize_model() plans first (one Decision per tensor: role, chosen type, fallback,
// whether an importance matrix is needed; every missing input or impossible choice is an
// error before any tensor is touched), then replaces each tensor with a lazy one of the
// new type: its producer reads the source rows (F32 directly, F16/BF16/quantized rows
// dequantized chunk by chunk), quantizes fixed chunks of rows on `threads` threads (the
// bytes never depend on the thread count), returns an owned blob and releases the
// source's pages. The GGUF writer asks for tensors one at a time, so memory holds one
// tensor's output, not the model.
//
// The output equals llama.cpp's llama_model_quantize (v0.5.0 / ggml 0.25.1) byte for byte:
// same tensor order (by block number, then name), types, data and metadata
// (general.quantization_version, general.file_type, --override-kv, quantize.imatrix.*).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "precision_plan.h"
#include "qforge/model.h"
#include "qforge/value.h"
#include "rules.h"

namespace qforge::gguf_quant {

struct QuantizeOptions {
  std::string type;             // a file type ("Q4_K_M") or a tensor type that names one ("q8_0")
  std::string imatrix;          // path; empty: none
  std::string imatrix_written;  // the path as the user wrote it (recorded in the metadata, as llama.cpp does)
  std::vector<std::pair<std::string, std::string>> tensor_types;  // regex, type (in order)
  std::string output_tensor_type;
  std::string token_embedding_type;
  bool leave_output_tensor = false;
  bool pure = false;
  bool allow_requantize = false;
  bool no_fallback = false;
  std::vector<std::string> include_weights;
  std::vector<std::string> exclude_weights;
  std::vector<std::string> override_kv;  // "KEY=TYPE:VALUE", TYPE = int|float|bool|str
  // A precision plan (select-precision's precision/1 Table): its per-tensor types replace
  // the mixture rules; tensor_types, output_tensor_type and token_embedding_type win
  // over it. `type` still names the file type written as general.file_type.
  std::shared_ptr<const PrecisionPlan> plan;
};

// From validated pass options (see pass.cc for the schema). Throws qforge::Error.
QuantizeOptions options_from(const Options& options);

struct QuantizeSummary {
  std::vector<Decision> plan;  // llama.cpp's tensor order
  FileType ftype = FileType::Q8_0;
  int fallbacks = 0;
  int quantized_tensors = 0;  // tensors whose type changes
  int planned = 0;            // tensors whose type a precision plan chose
  std::vector<std::string> notes;
};

// Plans and installs the lazy quantized tensors (see above). Throws qforge::Error, naming
// the tensor, before changing `model` when the plan cannot be carried out.
QuantizeSummary quantize_model(Model& model, const QuantizeOptions& options, int threads);

}  // namespace qforge::gguf_quant
