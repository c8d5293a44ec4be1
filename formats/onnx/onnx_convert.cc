// Opset conversion through ONNX's version converter (onnx/version_converter),
// the library the `upgrade-opset` pass (passes/preprocess) uses; see
// docs/manifest.md ("Pre-processing passes").
#include <cctype>
#include <cstdint>
#include <string>
#include <unordered_map>

#include <onnx/defs/schema.h>
#include <onnx/version_converter/convert.h>

#include "onnx_format.h"
#include "onnx_internal.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {

int64_t max_known_opset() {
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  auto it = ranges.find("");
  return it == ranges.end() ? 0 : it->second.second;
}

namespace {

// Softmax, LogSoftmax and Hardmax changed meaning at opset 13 (one axis
// instead of every axis from `axis` on). ONNX's adapter keeps a last-axis
// one as it is, and otherwise wraps it in Flatten and a Reshape to the
// input's shape written as constants, which is right only when every
// dimension is static: refuse the other cases here, naming the node.
void check_softmax_12_13(const onnx::ModelProto& mp, const std::string& source) {
  std::unordered_map<std::string, const onnx::TypeProto*> types;
  for (auto* list : {&mp.graph().input(), &mp.graph().value_info(), &mp.graph().output()}) {
    for (const auto& vi : *list) types.emplace(vi.name(), &vi.type());
  }
  for (const auto& n : mp.graph().node()) {
    if (n.op_type() != "Softmax" && n.op_type() != "LogSoftmax" && n.op_type() != "Hardmax") continue;
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    int64_t axis = 1;
    for (const auto& a : n.attribute()) {
      if (a.name() == "axis") axis = a.i();
    }
    if (axis == -1) continue;  // the last axis, whatever the rank
    const std::string what =
        source + ": node '" + n.name() + "' (" + n.op_type() + ", axis " + std::to_string(axis) + ")";
    auto it = n.input_size() > 0 ? types.find(n.input(0)) : types.end();
    if (it == types.end() || !it->second->has_tensor_type() || !it->second->tensor_type().has_shape()) {
      throw Error(what + ": its input's rank is unknown, so whether axis " + std::to_string(axis) +
                  " is the last one (the same at opset 13) cannot be told; give the graph inputs shapes, or "
                  "write the node with axis = -1 if it is the last axis");
    }
    const auto& sh = it->second->tensor_type().shape();
    const int64_t rank = sh.dim_size();
    if (axis < 0) axis += rank;
    if (axis == rank - 1) continue;
    for (const auto& d : sh.dim()) {
      if (!d.has_dim_value()) {
        throw Error(
            what + ": not the last axis of a rank-" + std::to_string(rank) +
            " input with dynamic dimensions; opset 13 needs it flattened and reshaped back to a shape "
            "computed at run time, which ONNX's converter does not do: give the graph inputs static "
            "shapes or convert that node by hand");
      }
    }
  }
}

}  // namespace

Model convert_opset(const Model& model, int64_t target) {
  if (!model.graph) throw Error(model.source + ": the model has no graph");
  const int64_t from = model.graph->opset("");
  if (from < 1) {
    throw Error(
        model.source +
        ": the model imports no ai.onnx opset; the version converter converts the default domain only");
  }
  const int64_t known = max_known_opset();
  if (target > known || from > known) {
    throw Error(model.source + ": converting opset " + std::to_string(from) + " to " +
                std::to_string(target) + ": the ONNX library qforge is built with knows opsets up to " +
                std::to_string(known) + "; choose a target of at most " + std::to_string(known));
  }
  // Every initializer carries its data: adapters may read or rewrite them.
  onnx::ModelProto mp = model_to_proto(model, UINT64_MAX);
  // Some adapters need shapes (Softmax 12 -> 13 needs the input's rank):
  // infer them first, as ONNX's own converter does from version 1.13 on.
  try {
    infer_shapes_proto(mp);
  } catch (const std::exception& e) {
    throw Error(model.source + ": ONNX shape inference (before the opset conversion) failed: " + e.what());
  }
  if (from < 13 && target >= 13) check_softmax_12_13(mp, model.source);
  onnx::ModelProto out;
  try {
    out = onnx::version_conversion::ConvertVersion(mp, static_cast<int>(target));
  } catch (const std::exception& e) {
    // The converter names the op ("No Adapter From Version 11 for Foo"), not
    // the node: name the model's nodes of the ops it mentions.
    std::string msg = e.what();
    std::string nodes;
    int listed = 0;
    for (const Node& n : model.graph->nodes) {
      if (!n.domain.empty() && n.domain != "ai.onnx") continue;
      const std::string needle = "for " + n.op_type;
      const size_t at = msg.find(needle);
      const bool names_it =
          at != std::string::npos && (at + needle.size() == msg.size() ||
                                      !std::isalnum(static_cast<unsigned char>(msg[at + needle.size()])));
      if (!names_it || listed >= 5) continue;
      nodes += (listed ? ", " : "") + std::string("node '") + n.name + "' (" + n.op_type + ")";
      ++listed;
    }
    throw Error(model.source + ": ONNX's version converter cannot convert opset " + std::to_string(from) +
                " to " + std::to_string(target) + (nodes.empty() ? "" : " at " + nodes) + ": " + msg +
                " (convert that op by hand or choose another target opset)");
  }
  Model m;
  try {
    m = model_from_proto(out, model.source);
  } catch (const std::exception& e) {
    throw Error("the model ONNX's version converter wrote for opset " + std::to_string(target) +
                " is not valid (" + std::string(e.what()) + "); choose another target opset");
  }
  m.format = model.format;
  m.metadata = model.metadata;
  return m;
}

}  // namespace qforge::onnxfmt
