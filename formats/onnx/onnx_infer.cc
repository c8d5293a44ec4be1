// Shape and type inference through ONNX's implementation.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <onnx/shape_inference/implementation.h>

#include "onnx_format.h"
#include "onnx_internal.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {

size_t clear_negative_dims(onnx::ModelProto& mp) {
  size_t cleared = 0;
  auto fix = [&](google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& list) {
    for (auto& vi : list) {
      if (!vi.type().has_tensor_type() || !vi.type().tensor_type().has_shape()) continue;
      for (auto& d : *vi.mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim()) {
        if (d.has_dim_value() && d.dim_value() < 0) {
          d.clear_dim_value();
          ++cleared;
        }
      }
    }
  };
  fix(*mp.mutable_graph()->mutable_input());
  fix(*mp.mutable_graph()->mutable_output());
  fix(*mp.mutable_graph()->mutable_value_info());
  return cleared;
}

namespace {

// The rank-1 length of `name` when its shape is known: an initializer's,
// or a typed value's.
int64_t static_length(const std::unordered_map<std::string, const onnx::TypeProto*>& types,
                      const std::unordered_map<std::string, const onnx::TensorProto*>& inits,
                      const std::string& name) {
  if (auto it = inits.find(name); it != inits.end()) {
    return it->second->dims_size() == 1 ? it->second->dims(0) : -1;
  }
  auto it = types.find(name);
  if (it == types.end() || !it->second->has_tensor_type() || !it->second->tensor_type().has_shape())
    return -1;
  const auto& sh = it->second->tensor_type().shape();
  return sh.dim_size() == 1 && sh.dim(0).has_dim_value() ? sh.dim(0).dim_value() : -1;
}

int32_t elem_of(const std::unordered_map<std::string, const onnx::TypeProto*>& types,
                const std::unordered_map<std::string, const onnx::TensorProto*>& inits,
                const std::string& name) {
  if (auto it = inits.find(name); it != inits.end()) return it->second->data_type();
  auto it = types.find(name);
  return it != types.end() && it->second->has_tensor_type() ? it->second->tensor_type().elem_type() : 0;
}

// Where ONNX's inference leaves a Reshape, Expand or ConstantOfShape output
// untyped because the shape input's values are not constant (a shape
// computed from the input, as Paddle2ONNX writes for dynamic batches), the
// rank still follows from the shape input's length. Adds such rank-only
// value_infos; returns how many.
size_t complete_ranks(onnx::ModelProto& mp) {
  onnx::GraphProto& g = *mp.mutable_graph();
  std::unordered_map<std::string, const onnx::TypeProto*> types;
  for (auto* list : {&g.input(), &g.value_info(), &g.output()}) {
    for (const auto& vi : *list) {
      if (vi.has_type() && vi.type().has_tensor_type() && vi.type().tensor_type().has_shape())
        types.emplace(vi.name(), &vi.type());
    }
  }
  std::unordered_map<std::string, const onnx::TensorProto*> inits;
  for (const auto& t : g.initializer()) inits.emplace(t.name(), &t);
  std::vector<onnx::ValueInfoProto> found;
  for (const auto& n : g.node()) {
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    if (n.output_size() < 1 || types.count(n.output(0))) continue;
    int64_t rank = -1;
    int32_t elem = 0;
    if ((n.op_type() == "Reshape" || n.op_type() == "Expand") && n.input_size() >= 2) {
      rank = static_length(types, inits, n.input(1));
      elem = elem_of(types, inits, n.input(0));
      if (n.op_type() == "Expand") {
        auto it = types.find(n.input(0));
        if (it == types.end()) continue;
        rank = std::max<int64_t>(rank, it->second->tensor_type().shape().dim_size());
      }
    } else if (n.op_type() == "ConstantOfShape" && n.input_size() >= 1) {
      rank = static_length(types, inits, n.input(0));
      elem = onnx::TensorProto::FLOAT;
      for (const auto& a : n.attribute()) {
        if (a.name() == "value" && a.has_t()) elem = a.t().data_type();
      }
    }
    if (rank < 0 || elem == 0) continue;
    onnx::ValueInfoProto vi;
    vi.set_name(n.output(0));
    auto* tt = vi.mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    auto* sh = tt->mutable_shape();
    for (int64_t i = 0; i < rank; ++i) sh->add_dim();
    found.push_back(std::move(vi));
  }
  for (auto& vi : found) {
    // A graph output's entry is completed in place; others become value_info.
    bool is_output = false;
    for (auto& o : *g.mutable_output()) {
      if (o.name() == vi.name()) {
        *o.mutable_type() = vi.type();
        is_output = true;
      }
    }
    if (!is_output) {
      bool replaced = false;
      for (auto& v : *g.mutable_value_info()) {
        if (v.name() == vi.name()) {
          v = vi;
          replaced = true;
        }
      }
      if (!replaced) *g.add_value_info() = vi;
    }
  }
  return found.size();
}

}  // namespace

void infer_shapes_proto(onnx::ModelProto& mp) {
  clear_negative_dims(mp);
  onnx::ShapeInferenceOptions options(/*check_type=*/false, /*error_mode=*/0,
                                      /*enable_data_propagation=*/true);
  // Each round of rank completion lets ONNX's inference go further; a graph
  // has finitely many such nodes, so this ends.
  for (int round = 0; round < 64; ++round) {
    onnx::shape_inference::InferShapes(mp, onnx::OpSchemaRegistry::Instance(), options);
    if (complete_ranks(mp) == 0) break;
  }
}

size_t infer_shapes(Model& model) {
  // Shape-carrying inputs (Reshape's shape, Slice's starts...) are small;
  // large weights go without data (only their dims and type matter).
  onnx::ModelProto mp = model_to_proto(model, 1u << 20);
  try {
    infer_shapes_proto(mp);
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
