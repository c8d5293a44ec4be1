// fold-constants: every node whose inputs are all constants (initializers,
// Constant nodes lifted by weight normalisation, earlier folded values) is
// evaluated by the build's executor (PassContext::executor, the seam in
// pipeline/include/qforge/executor.h) and replaced by initializers
// (docs/manifest.md, "Pre-processing passes").
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "preprocess_util.h"
#include "qforge/executor.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "fold-constants";

// Ops whose output differs from run to run.
const std::set<std::string> kRandom = {"RandomNormal",      "RandomUniform", "RandomNormalLike",
                                       "RandomUniformLike", "Bernoulli",     "Multinomial"};
// Ops whose output may be much larger than their inputs: folded only when
// shape inference bounds the output's size.
const std::set<std::string> kGrowing = {"ConstantOfShape", "Expand", "Tile",   "Range",  "Resize",
                                        "Upsample",        "Pad",    "OneHot", "EyeLike"};

std::string human_bytes(uint64_t n) {
  if (n >= (uint64_t{1} << 20)) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " bytes";
}

class FoldConstantsPass : public quant::RewritePass {
 private:
  // Evaluates node `n` on `inputs` with the executor; the outputs in order.
  static std::vector<Tensor> evaluate(const Executor& ex, const Model& work, const Node& n,
                                      const std::vector<const Tensor*>& inputs, int threads) {
    Model mini;
    mini.format = work.format;
    mini.source = work.source;
    auto g = std::make_shared<Graph>();
    g->name = "fold";
    g->model = work.graph->model;
    g->model.functions.clear();
    g->model.training_info.clear();
    std::set<std::string> added;
    for (const Tensor* t : inputs) {
      if (t && added.insert(t->name).second) mini.tensors.push_back(*t);
    }
    g->nodes.push_back(n);
    for (const std::string& o : n.outputs) {
      if (o.empty()) continue;
      ValueInfo vi;
      vi.name = o;
      g->outputs.push_back(vi);
    }
    mini.graph = g;
    std::unique_ptr<PreparedModel> pm;
    ExecOptions eo;
    eo.threads = threads;
    Status st = ex.prepare(mini, eo, pm);
    if (!st.ok) throw Error(st.message);
    NamedValues outs;
    st = pm->run({}, outs);
    if (!st.ok) throw Error(st.message);
    std::vector<Tensor> result;
    for (auto& [name, v] : outs) {
      Tensor t;
      t.name = name;
      t.shape = v.shape;
      t.type = v.type;
      t.data = v.data;
      result.push_back(std::move(t));
    }
    return result;
  }

  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    const int64_t max_bytes = quant::opt_int(ctx.options, kPass, "max_bytes", int64_t{64} << 20);
    Model work = quant::working_copy(model, "fold-constants rewrites ONNX graphs");
    if (!ctx.executor) {
      throw Error(
          "fold-constants evaluates nodes with the build's executor, and none is registered (build qforge "
          "with "
          "executors/cpu, or load a plugin that registers one, and name it in [build] executor)");
    }
    const quant::NormalizeStats ns = quant::normalize_weights(work);
    quant::note_normalized(ns, res);
    // Output sizes before evaluating anything (on a copy: value_info is not
    // this pass's business).
    Model probe = work;
    try {
      onnxfmt::infer_shapes(probe);
    } catch (const std::exception& e) {
      res.warnings.push_back(
          std::string("ONNX shape inference failed, output sizes are checked after evaluation: ") + e.what());
    }
    Graph& g = *work.graph;
    std::unordered_map<std::string, Tensor> folded_values;  // name -> value
    std::vector<size_t> folded_nodes;
    std::map<std::string, size_t> by_op;
    auto constant = [&](const std::string& v) -> const Tensor* {
      auto it = folded_values.find(v);
      if (it != folded_values.end()) return &it->second;
      return quant::is_constant_initializer(work, v) ? work.tensor(v) : nullptr;
    };
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      std::vector<const Tensor*> ins;
      bool all_const = !n.inputs.empty();
      for (const std::string& in : n.inputs) {
        if (in.empty()) continue;
        const Tensor* t = constant(in);
        if (!t) {
          all_const = false;
          break;
        }
        ins.push_back(t);
      }
      if (!all_const || ins.empty()) continue;
      const std::string label = quant::node_label(n, i);
      auto skip = [&](const std::string& why) { res.skipped.push_back({why, label}); };
      if (!n.domain.empty() && n.domain != "ai.onnx") {
        skip("op of domain '" + n.domain + "'");
        continue;
      }
      if (kRandom.count(n.op_type)) {
        skip("nondeterministic op");
        continue;
      }
      if (n.op_type == "DequantizeLinear" || n.op_type == "QuantizeLinear") {
        skip("folding would undo quantization (quantized weights stay quantized)");
        continue;
      }
      bool subgraph = false;
      for (const Attribute& a : n.attributes)
        subgraph |= a.type == Attribute::Type::Graph || a.type == Attribute::Type::Graphs;
      if (subgraph) {
        skip("node with a subgraph");
        continue;
      }
      bool is_graph_output = false, too_big = false, unknown = false;
      std::string size_note;
      for (const std::string& o : n.outputs) {
        if (o.empty()) continue;
        is_graph_output |= g.is_output(o);
        auto shape = preprocess::static_shape(probe, o);
        auto elem = preprocess::value_elem(probe, o);
        if (!shape || !elem) {
          unknown = true;
          continue;
        }
        uint64_t numel = 1;
        for (int64_t d : *shape) numel *= static_cast<uint64_t>(d);
        auto bytes = onnxfmt::onnx_byte_size(*elem, numel);
        if (bytes && *bytes > static_cast<uint64_t>(max_bytes)) {
          too_big = true;
          size_note = "output '" + o + "' would take " + human_bytes(*bytes);
        }
      }
      if (is_graph_output) {
        skip("its output is a graph output");
        continue;
      }
      if (too_big) {
        skip(size_note + ", more than max_bytes (" + human_bytes(static_cast<uint64_t>(max_bytes)) + ")");
        continue;
      }
      if (unknown && kGrowing.count(n.op_type)) {
        skip("its output's size is unknown before evaluation and " + n.op_type + " may make it large");
        continue;
      }
      std::vector<Tensor> outs;
      try {
        outs = evaluate(*ctx.executor, work, n, ins, ctx.threads);
      } catch (const std::exception& e) {
        skip(std::string("the '") + ctx.executor->name() + "' executor cannot evaluate it: " + e.what());
        continue;
      }
      bool over = false;
      for (const Tensor& t : outs) {
        if (t.data && t.data->size() > static_cast<uint64_t>(max_bytes)) {
          over = true;
          size_note = "output '" + t.name + "' takes " + human_bytes(t.data->size());
        }
      }
      if (over) {
        skip(size_note + ", more than max_bytes (" + human_bytes(static_cast<uint64_t>(max_bytes)) + ")");
        continue;
      }
      for (Tensor& t : outs) folded_values[t.name] = std::move(t);
      folded_nodes.push_back(i);
      ++by_op[n.op_type];
    }
    res.metrics["nodes_folded"] = static_cast<double>(folded_nodes.size());
    if (folded_nodes.empty()) {
      if (ns.changed()) {
        res.notes.push_back("no node has only constant inputs besides the lifted Constant nodes");
        res.changed = true;
        model = std::move(work);
        return;
      }
      res.warnings.push_back(
          "no node has only constant inputs (or every such node was left alone: see skipped)");
      return;
    }
    // Inputs the folded nodes read (candidates for removal), then the nodes.
    std::vector<std::string> candidates;
    for (size_t i : folded_nodes) {
      for (const std::string& in : g.nodes[i].inputs) {
        if (!in.empty() && work.tensor(in)) candidates.push_back(in);
      }
    }
    g.remove_nodes(folded_nodes);
    // Folded values something still reads become initializers.
    size_t added = 0;
    uint64_t added_bytes = 0;
    std::vector<std::string> order;
    for (const auto& [name, t] : folded_values) order.push_back(name);
    std::sort(order.begin(), order.end());
    for (const std::string& name : order) {
      if (g.consumers(name).empty()) continue;
      const Tensor& t = folded_values.at(name);
      added_bytes += t.data ? t.data->size() : 0;
      work.tensors.push_back(t);
      ++added;
    }
    quant::drop_unused_initializers(work, candidates);
    quant::validate_top_level(work);
    res.metrics["initializers_added"] = static_cast<double>(added);
    res.metrics["bytes_added"] = static_cast<double>(added_bytes);
    std::string what;
    for (const auto& [op, k] : by_op) what += (what.empty() ? "" : ", ") + std::to_string(k) + " " + op;
    res.notes.push_back("folded " + std::to_string(folded_nodes.size()) + " nodes (" + what + ") into " +
                        std::to_string(added) + " initializers (" + human_bytes(added_bytes) +
                        ") with the '" + ctx.executor->name() + "' executor");
    res.changed = true;
    model = std::move(work);
  }
};

}  // namespace

PassInfo fold_constants_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "evaluates nodes whose inputs are all constants with the build's executor and replaces them by "
      "initializers";
  info.version = 1;
  info.needs_graph = true;
  info.needs_executor = true;
  info.options = {quant::at_least(
      quant::option_spec("max_bytes", OptType::Int, "largest folded output in bytes; larger ones stay nodes",
                         Value::of_int(int64_t{64} << 20)),
      0)};
  info.factory = [] { return std::unique_ptr<Pass>(new FoldConstantsPass()); };
  return info;
}

}  // namespace qforge::passes
