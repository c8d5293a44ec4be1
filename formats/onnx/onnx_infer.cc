// Shape and type inference through ONNX's implementation.
#include <unordered_set>

#include <onnx/shape_inference/implementation.h>

#include "onnx_format.h"
#include "onnx_internal.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {

size_t infer_shapes(Model& model) {
  // Shape-carrying inputs (Reshape's shape, Slice's starts...) are small;
  // large weights go without data (only their dims and type matter).
  onnx::ModelProto mp = model_to_proto(model, 1u << 20);
  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/false, /*error_mode=*/0,
                                        /*enable_data_propagation=*/true);
    onnx::shape_inference::InferShapes(mp, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    throw Error(model.source + ": ONNX shape inference failed: " + e.what());
  }
  Graph& g = model.mutable_graph();
  std::unordered_set<std::string> known;
  for (auto* list : {&g.inputs, &g.outputs, &g.value_info}) {
    for (const ValueInfo& v : *list) known.insert(v.name);
  }
  size_t added = 0;
  for (const auto& vi : mp.graph().value_info()) {
    if (known.insert(vi.name()).second) {
      g.value_info.push_back(decode_value_info(vi));
      ++added;
    }
  }
  for (const auto& vi : mp.graph().output()) {
    for (ValueInfo& o : g.outputs) {
      if (o.name == vi.name() && o.type.kind == ValueType::Kind::None && vi.has_type()) {
        o.type = decode_value_info(vi).type;
        ++added;
      }
    }
  }
  return added;
}

}  // namespace qforge::onnxfmt
