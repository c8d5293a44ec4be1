// eliminate: nodes that compute nothing (Identity, inference Dropout, Reshape
// to the input's shape, Transpose with the identity permutation, Cast to the
// input's type) removed, their readers reading the input (docs/manifest.md,
// "Pre-processing passes"). Graph outputs keep their names.
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "preprocess_util.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "eliminate";
const std::vector<std::string> kOps = {"Identity", "Dropout", "Reshape", "Transpose", "Cast"};

bool output_used(const Graph& g, const std::string& v) {
  return !v.empty() && (g.is_output(v) || !g.consumers(v).empty());
}

// Whether node `n` forwards its first input unchanged; `reason` says why not
// (empty: the op is not one eliminate knows).
bool is_noop(const Model& m, const Model& typed, const Node& n, std::string& reason) {
  const Graph& g = *m.graph;
  if (n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) {
    reason = "malformed node (no data input or output)";
    return false;
  }
  const std::string& x = n.inputs[0];
  if (n.op_type == "Identity") return true;
  if (n.op_type == "Dropout") {
    if (n.outputs.size() > 1 && output_used(g, n.outputs[1])) {
      reason = "its mask output is used";
      return false;
    }
    if (n.inputs.size() > 2 && !n.inputs[2].empty()) {  // training_mode (opset 12+)
      auto tm = preprocess::value_elem(m, n.inputs[2]);
      const Tensor* t = quant::is_constant_initializer(m, n.inputs[2]) ? m.tensor(n.inputs[2]) : nullptr;
      BlobPtr b = t && !t->producer && tm == ElemType::Bool ? t->bytes() : nullptr;
      if (!b || b->size() != 1 || b->data()[0] != 0) {
        reason = "training_mode is not a constant false";
        return false;
      }
    }
    return true;
  }
  if (n.op_type == "Transpose") {
    const Attribute* perm = n.attr("perm");
    if (!perm) {
      auto d = preprocess::value_dims(typed, x);
      if (d && d->size() <= 1) return true;
      reason = d ? "no perm: it reverses the dimensions" : "no perm and the input's rank is unknown";
      return false;
    }
    for (size_t i = 0; i < perm->ints.size(); ++i) {
      if (perm->ints[i] != static_cast<int64_t>(i)) {
        reason = "perm is not the identity";
        return false;
      }
    }
    return true;
  }
  if (n.op_type == "Cast") {
    const Attribute* to = n.attr("to");
    auto from = preprocess::value_elem(typed, x);
    if (!from) {
      reason = "the input's element type is unknown (ONNX shape inference found none)";
      return false;
    }
    if (!to) {
      reason = "no 'to' attribute";
      return false;
    }
    auto target = elem_from_onnx(static_cast<int>(to->i));
    if (target && *target == *from) return true;
    reason = "it changes the element type";
    return false;
  }
  if (n.op_type == "Reshape") {
    auto in = preprocess::value_dims(typed, x);
    std::optional<std::vector<int64_t>> target;
    if (n.inputs.size() >= 2 && !n.inputs[1].empty()) {
      target = preprocess::const_ints(m, n.inputs[1]);
    } else if (const Attribute* a = n.attr("shape")) {
      target = a->ints;
    }
    if (!target) {
      reason = "the target shape is not a constant";
      return false;
    }
    if (!in) {
      reason = "the input's shape is unknown (ONNX shape inference found none)";
      return false;
    }
    if (in->size() != target->size()) {
      reason = "it changes the rank";
      return false;
    }
    const Attribute* az = n.attr("allowzero");
    const bool allowzero = az && az->i != 0;
    int minus_one = -1;
    for (size_t i = 0; i < target->size(); ++i) {
      const int64_t t = (*target)[i];
      const Dim& d = (*in)[i];
      if (t == 0 && !allowzero) continue;  // copies the input's dimension
      if (t == -1 && minus_one < 0) {
        minus_one = static_cast<int>(i);
        continue;
      }
      if (!d.known() || d.value != t) {
        reason = d.known() ? "it changes the shape"
                           : "the input's dimension " + std::to_string(i) + " is not known";
        return false;
      }
    }
    // Every other dimension is the input's own, so the one inferred (-1)
    // is the input's too, when the input has no zero-sized dimension.
    if (minus_one >= 0) {
      for (const Dim& d : *in) {
        if (d.known() && d.value == 0) {
          reason = "-1 in the target shape with an empty input";
          return false;
        }
      }
    }
    return true;
  }
  return false;
}

class EliminatePass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    const std::vector<std::string> ops = quant::opt_list(ctx.options, kPass, "ops", kOps);
    Model work = quant::working_copy(model, "eliminate rewrites ONNX graphs");
    // Types and shapes from ONNX's shape inference, on a copy: removing a
    // node changes no remaining value's type or shape.
    Model typed = work;
    try {
      onnxfmt::infer_shapes(typed);
    } catch (const std::exception& e) {
      res.warnings.push_back(std::string("ONNX shape inference failed; only declared shapes are used: ") +
                             e.what());
    }
    std::map<std::string, size_t> removed;
    size_t total = 0;
    // A removal shifts the nodes after it: rescan from the node removed.
    for (size_t i = 0; i < work.graph->nodes.size();) {
      const Node& n = work.graph->nodes[i];
      const bool ours = (n.domain.empty() || n.domain == "ai.onnx") &&
                        std::find(ops.begin(), ops.end(), n.op_type) != ops.end();
      if (!ours) {
        ++i;
        continue;
      }
      std::string reason;
      const std::string label = quant::node_label(n, i);
      const std::string op = n.op_type;
      if (!is_noop(work, typed, n, reason)) {
        if (!reason.empty()) res.skipped.push_back({reason, label});
        ++i;
        continue;
      }
      const std::string in = n.inputs[0], out = n.outputs[0];
      if (!preprocess::bypass_node(work, i, in, out, reason)) {
        res.skipped.push_back({reason, label});
        ++i;
        continue;
      }
      ++removed[op];
      ++total;
    }
    for (const std::string& op : ops) res.metrics["removed_" + op] = static_cast<double>(removed[op]);
    res.metrics["removed"] = static_cast<double>(total);
    if (total == 0) {
      res.warnings.push_back(
          "no node computes nothing (no Identity, inference Dropout, or Reshape, Transpose, Cast "
          "that leaves its input unchanged among the ops " +
          std::to_string(ops.size()) + " listed)");
      return;
    }
    std::string what;
    for (const auto& [op, k] : removed) what += (what.empty() ? "" : ", ") + std::to_string(k) + " " + op;
    res.notes.push_back("removed " + std::to_string(total) + " nodes that compute nothing (" + what + ")");
    quant::validate_top_level(work);
    std::vector<std::string> candidates;  // every initializer: a removed node may have been the last reader
    for (const Tensor& t : work.tensors) candidates.push_back(t.name);
    quant::drop_unused_initializers(work, candidates);
    res.changed = true;
    model = std::move(work);
  }
};

}  // namespace

PassInfo eliminate_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "removes nodes that compute nothing: Identity, inference Dropout, Reshape to the same shape, Transpose "
      "with the identity permutation, Cast to the same type";
  info.version = 1;
  info.needs_graph = true;
  info.options = {quant::option_spec("ops", OptType::List, "op types to remove where they compute nothing",
                                     quant::string_list(kOps), kOps)};
  info.options.back().unordered = true;
  info.factory = [] { return std::unique_ptr<Pass>(new EliminatePass()); };
  return info;
}

}  // namespace qforge::passes
