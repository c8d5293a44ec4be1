#include "normalize.h"

#include <algorithm>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "qforge/graph.h"
#include "qforge/status.h"
#include "quant_tensors.h"

namespace qforge::quant {
namespace {

bool is_default_domain(const std::string& d) { return d.empty() || d == "ai.onnx"; }

// The tensor a Constant node holds, named `name`; false when its value is not
// a plain tensor (strings, sparse tensors, attribute references).
bool constant_tensor(const Node& n, size_t index, const std::string& name, Tensor& out) {
  if (n.attributes.size() != 1) return false;
  const Attribute& a = n.attributes[0];
  if (!a.ref_attr_name.empty()) return false;
  if (a.name == "value" && a.type == Attribute::Type::Tensor) {
    if (a.tensors.size() != 1)
      throw Error(node_label(n, index) + ": attribute 'value' holds " + std::to_string(a.tensors.size()) +
                  " tensors, expected 1; the model is malformed (re-export it)");
    out = a.tensors[0];
    if (out.type == ElemType::String) return false;
    out.name = name;
    return true;
  }
  if (a.name == "value_float" && a.type == Attribute::Type::Float) {
    out = make_f32_tensor(name, {}, {a.f});
    return true;
  }
  if (a.name == "value_floats" && a.type == Attribute::Type::Floats) {
    out = make_f32_tensor(name, {static_cast<int64_t>(a.floats.size())}, a.floats);
    return true;
  }
  if ((a.name == "value_int" && a.type == Attribute::Type::Int) ||
      (a.name == "value_ints" && a.type == Attribute::Type::Ints)) {
    const bool scalar = a.name == "value_int";
    const std::vector<int64_t> v = scalar ? std::vector<int64_t>{a.i} : a.ints;
    std::vector<uint8_t> bytes(v.size() * sizeof(int64_t));
    for (size_t i = 0; i < v.size(); ++i)
      for (size_t b = 0; b < sizeof(int64_t); ++b)
        bytes[i * sizeof(int64_t) + b] = static_cast<uint8_t>(static_cast<uint64_t>(v[i]) >> (8 * b));
    out = make_tensor(name,
                      scalar ? std::vector<int64_t>{} : std::vector<int64_t>{static_cast<int64_t>(v.size())},
                      ElemType::I64, std::move(bytes));
    return true;
  }
  return false;
}

}  // namespace

NormalizeStats normalize_weights(Model& m) {
  NormalizeStats s;
  if (!m.graph) return s;
  Graph& g = *m.graph;
  s.ir_before = s.ir_after = g.model.ir_version;

  // Constant nodes -> initializers.
  std::vector<size_t> lifted;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op_type != "Constant" || !is_default_domain(n.domain) || n.outputs.size() != 1) continue;
    const std::string& out = n.outputs[0];
    if (out.empty() || g.is_output(out) || m.tensor(out)) continue;
    Tensor t;
    if (!constant_tensor(n, i, out, t)) continue;
    m.tensors.push_back(std::move(t));
    lifted.push_back(i);
  }
  g.remove_nodes(lifted);
  s.constants_lifted = lifted.size();

  // IR < 4: initializers listed as inputs are constants.
  if (g.model.ir_version < 4) {
    const size_t before = g.inputs.size();
    g.inputs.erase(std::remove_if(g.inputs.begin(), g.inputs.end(),
                                  [&](const ValueInfo& v) { return m.tensor(v.name) != nullptr; }),
                   g.inputs.end());
    s.inputs_dropped = before - g.inputs.size();
    if (s.inputs_dropped > 0 || s.constants_lifted > 0) ensure_ir_version(g, 4);
  }
  s.ir_after = g.model.ir_version;
  return s;
}

void note_normalized(const NormalizeStats& s, PassResult& res) {
  res.metrics["constants_lifted"] = static_cast<double>(s.constants_lifted);
  res.metrics["inputs_dropped"] = static_cast<double>(s.inputs_dropped);
  if (s.constants_lifted)
    res.notes.push_back("normalised " + std::to_string(s.constants_lifted) +
                        " Constant node(s) into initializers");
  if (s.inputs_dropped)
    res.notes.push_back("normalised " + std::to_string(s.inputs_dropped) +
                        " initializer(s) listed as graph inputs (ir_version " + std::to_string(s.ir_before) +
                        " < 4, where they are constants) to plain initializers");
  if (s.ir_after != s.ir_before)
    res.notes.push_back("raised ir_version from " + std::to_string(s.ir_before) + " to " +
                        std::to_string(s.ir_after) + " (initializers that are not graph inputs)");
}

}  // namespace qforge::quant
