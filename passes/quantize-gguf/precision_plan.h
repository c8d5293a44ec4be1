// Precision plans: the `precision/1` Table the select-precision pass makes and
// quantize-gguf follows (docs/manifest.md, "select-precision").
//
// Layout of the Table's data (keys in this order):
//   method          how the types were chosen ("exact DP over 32-byte cells ...")
//   budget          the budget as written ("4.5bpw", "Q4_K_M", "3.5GiB", bytes)
//   budget_bytes    the file size the plan must not exceed
//   file_bytes      the GGUF file size the plan gives (header, metadata, tensors, padding)
//   bits_per_weight tensor data bits per weight of the whole model
//   error           the sum of the tensors' errors
//   weighting       "imatrix" or "none"
//   tensors         name -> { type, bytes, error } for every tensor the plan chooses
//   counts          type -> number of tensors
// Tensors the plan does not list keep what quantize-gguf's own rules give them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qforge/table.h"

namespace qforge::gguf_quant {

inline constexpr const char* kPrecisionSchema = "precision/1";

struct PlannedTensor {
  std::string name;
  std::string type;    // ggml type name ("Q4_K")
  uint64_t bytes = 0;  // tensor data bytes (before alignment padding)
  double error = 0;    // measured error under `type`
};

struct PrecisionPlan {
  std::string method;
  std::string budget;
  uint64_t budget_bytes = 0;
  uint64_t file_bytes = 0;
  double bits_per_weight = 0;
  double error = 0;
  std::string weighting;
  std::vector<PlannedTensor> tensors;

  Table to_table() const;
  // Throws qforge::Error naming `what` on a table of another schema or a malformed one.
  static PrecisionPlan from_table(const Table& t, const std::string& what);
  const PlannedTensor* find(const std::string& name) const;
  std::map<std::string, int> counts() const;
};

}  // namespace qforge::gguf_quant
