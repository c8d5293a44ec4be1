// Helpers shared by the ONNX plugin's import and emit (includes protobuf
// headers: include only from formats/onnx/*.cc).
#pragma once

#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "qforge/graph.h"

namespace qforge::onnxfmt {

// Structured type -> TypeProto (Other: parses the opaque bytes).
void encode_type(const ValueType& v, onnx::TypeProto& out);
// ValueInfoProto -> ValueInfo (onnx_import.cc).
ValueInfo decode_value_info(const onnx::ValueInfoProto& p);
// The model as a proto; top-level initializers of at most `inline_limit`
// bytes carry their data, larger ones only dims and type (onnx_emit.cc).
onnx::ModelProto model_to_proto(const Model& model, uint64_t inline_limit);
// Makes dimensions written as negative dim_values (Paddle2ONNX writes -1 for
// a dynamic batch) unknown, in the graph's inputs, outputs and value_info:
// ONNX's shape inference gives up on every node they reach. Returns how many.
size_t clear_negative_dims(onnx::ModelProto& mp);
// ONNX's shape inference on `mp` (data propagation on), after
// clear_negative_dims, with ranks completed where ONNX gives up on a Reshape,
// Expand or ConstantOfShape whose shape input is computed but of known
// length (onnx_infer.cc). Throws what ONNX throws.
void infer_shapes_proto(onnx::ModelProto& mp);
// A proto -> Model, checked as import_onnx checks a file (onnx_import.cc);
// `source` names it in errors and locates external data. Tensor data is
// moved out of `mp`.
Model model_from_proto(onnx::ModelProto& mp, const std::string& source);

}  // namespace qforge::onnxfmt
