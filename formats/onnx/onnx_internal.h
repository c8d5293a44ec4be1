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

}  // namespace qforge::onnxfmt
