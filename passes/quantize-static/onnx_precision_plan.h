// ONNX precision plans: the `precision/1` Table with "format": "onnx" that the
// select-precision pass makes for an ONNX model and quantize-static follows
// (docs/manifest.md, "select-precision"). GGUF plans share the schema name
// (passes/quantize-gguf/precision_plan.h) and have no "format" key or
// "format": "gguf"; each pass refuses the other's.
//
// Layout of the Table's data (keys in this order; floors and the budget only
// when set):
//   format            "onnx"
//   method            how the plan was found (one line)
//   activation_type   the 8-bit activation type every other node keeps
//   weight_type       the weight type
//   per_channel       per-channel weights
//   widen_to          the 16-bit activation type ("uint16" or "int16") an
//                     "int16" node gets (on its inputs and output, weights
//                     unchanged); "float" when `levels` has no 16-bit type
//   levels            the levels the search could widen a node to, in order
//                     of cost (select-precision's `widen_to` list: a 16-bit
//                     type, "float", or both); absent in older plans: the
//                     one level `widen_to`
//   dataset, samples  the dataset and number of samples the floor was measured on
//   sensitivity_samples  samples each node's sensitivity was measured on
//   min_cosine, min_sqnr_db, budget_bytes   the floor and the size budget
//   baseline          {cosine, sqnr_db}: every candidate at 8 bits
//   achieved          {cosine, sqnr_db}: the plan, on the same samples
//   float_bytes       tensor bytes of the float model
//   model_bytes       tensor bytes of the model the plan gives
//   nodes             name -> {op, precision, sensitivity, cost_bytes} for
//                     every candidate node, in graph order; precision is
//                     "int8" (8-bit activations), "int16" (16-bit
//                     activations, `widen_to`) or "float"; sensitivity is the
//                     fidelity (cosine, or SQNR in dB when only min_sqnr_db
//                     is set) the search measured this node's widening to
//                     gain where it ranked it (`method` says where);
//                     cost_bytes the tensor bytes leaving it in float adds
//                     (0 without weights; measured only for nodes the search
//                     considered putting in float at a cost)
//   counts            precision -> number of nodes
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qforge/table.h"

namespace qforge::passes {

inline constexpr const char* kOnnxPrecisionFormat = "onnx";

struct PlannedNode {
  std::string name, op;
  std::string precision = "int8";  // "int8", "int16", "float"
  double sensitivity = 0;
  int64_t cost_bytes = 0;
};

struct FidelityPair {
  double cosine = 1, sqnr_db = 0;
};

struct OnnxPrecisionPlan {
  std::string method;
  std::string activation_type = "uint8", weight_type = "int8";
  bool per_channel = false;
  std::string widen_to = "uint16";
  std::vector<std::string> levels;  // empty: {widen_to}
  std::string dataset;
  int64_t samples = 0, sensitivity_samples = 0;
  std::optional<double> min_cosine, min_sqnr_db;
  std::optional<uint64_t> budget_bytes;
  FidelityPair baseline, achieved;
  uint64_t float_bytes = 0, model_bytes = 0;
  std::vector<PlannedNode> nodes;

  Table to_table() const;
  // Throws qforge::Error naming `what` on another schema, a GGUF plan or a
  // malformed table.
  static OnnxPrecisionPlan from_table(const Table& t, const std::string& what);
  std::map<std::string, int> counts() const;
};

}  // namespace qforge::passes
