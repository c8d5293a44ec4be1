#include "graph_rewrite.h"

#include <algorithm>
#include <memory>
#include <string>
#include <unordered_set>

#include "qforge/status.h"

namespace qforge::quant {

// ---------------------------------------------------------------- graphs

std::string node_label(const Node& n, size_t index) {
  std::string op = (n.domain.empty() ? "" : n.domain + ".") + n.op_type;
  if (!n.name.empty()) return "node '" + n.name + "' (" + op + ")";
  return "node #" + std::to_string(index) + " (" + op + ")";
}

namespace {

// Forms of ONNX ops that stop being valid when the default-domain opset is
// raised past `since`: an attribute that became an input, or an op removed.
struct OpsetBreak {
  const char* op;
  const char* attribute;  // nullptr: the op itself is gone
  int64_t since;
  const char* what;
};
const OpsetBreak kBreaks[] = {
    {"Squeeze", "axes", 13, "'axes' became an input"},
    {"Unsqueeze", "axes", 13, "'axes' became an input"},
    {"ReduceSum", "axes", 13, "'axes' became an input"},
    {"Split", "split", 13, "'split' became an input"},
    {"ReduceMean", "axes", 18, "'axes' became an input"},
    {"ReduceMax", "axes", 18, "'axes' became an input"},
    {"ReduceMin", "axes", 18, "'axes' became an input"},
    {"ReduceProd", "axes", 18, "'axes' became an input"},
    {"ReduceL1", "axes", 18, "'axes' became an input"},
    {"ReduceL2", "axes", 18, "'axes' became an input"},
    {"ReduceLogSum", "axes", 18, "'axes' became an input"},
    {"ReduceLogSumExp", "axes", 18, "'axes' became an input"},
    {"ReduceSumSquare", "axes", 18, "'axes' became an input"},
    {"Pad", "pads", 11, "'pads' became an input"},
    {"Slice", "starts", 10, "'starts'/'ends' became inputs"},
    {"TopK", "k", 10, "'k' became an input"},
    {"Upsample", nullptr, 10, "the op was deprecated (use Resize)"},
    {"Scatter", nullptr, 11, "the op was deprecated (use ScatterElements)"},
    {"Dropout", "ratio", 12, "'ratio' became an input"},
    {"Clip", "min", 11, "'min'/'max' became inputs"},
    {"Clip", "max", 11, "'min'/'max' became inputs"},
    {"BatchNormalization", "spatial", 9, "'spatial' was removed"},
};

void check_opset_move(const Graph& g, int64_t from, int64_t to, const std::string& pass,
                      const std::string& why, const std::string& scope) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!(n.domain.empty() || n.domain == "ai.onnx")) continue;
    for (const OpsetBreak& b : kBreaks) {
      if (b.since <= from || b.since > to || n.op_type != b.op) continue;
      if (b.attribute && !n.attr(b.attribute)) continue;
      throw Error(why + " needs the default ONNX opset raised from " + std::to_string(from) + " to " +
                  std::to_string(to) + ", but " + scope + node_label(n, i) + " is not valid at opset " +
                  std::to_string(b.since) + " and later (" + b.what +
                  "); convert the model first: put { pass = \"upgrade-opset\", opset = " +
                  std::to_string(to) + " } before this step, or choose options that need no newer opset");
    }
    for (const Attribute& a : n.attributes)
      for (const auto& sub : a.graphs)
        if (sub) check_opset_move(*sub, from, to, pass, why, scope + node_label(n, i) + " subgraph: ");
  }
}

bool is_default_domain(const std::string& d) { return d.empty() || d == "ai.onnx"; }

}  // namespace

int64_t raise_default_opset(Graph& g, int64_t want, const std::string& pass, const std::string& why) {
  OpsetImport* def = nullptr;
  for (OpsetImport& o : g.model.opset_imports)
    if (is_default_domain(o.domain)) def = &o;
  const int64_t current = def ? def->version : -1;
  if (current >= want) return current;
  if (current < 1)
    throw Error("the model imports no default ONNX opset; cannot add " + why + " (" + pass + ")");
  check_opset_move(g, current, want, pass, why, "");
  def->version = want;
  return current;
}

void ensure_opset(Graph& g, const std::string& domain, int64_t version) {
  for (OpsetImport& o : g.model.opset_imports)
    if (o.domain == domain) {
      if (o.version < version) o.version = version;
      return;
    }
  g.model.opset_imports.push_back({domain, version});
}

void ensure_ir_version(Graph& g, int64_t v) {
  if (g.model.ir_version < v) g.model.ir_version = v;
}

bool is_constant_initializer(const Model& m, const std::string& name) {
  if (!m.tensor(name)) return false;
  return !(m.graph && m.graph->is_input(name));
}

void drop_unused_initializers(Model& m, const std::vector<std::string>& candidates) {
  if (!m.graph) return;
  Graph& g = *m.graph;
  std::unordered_set<std::string> drop;
  for (const std::string& name : candidates) {
    if (!g.consumers(name).empty() || g.is_output(name) || g.is_input(name)) continue;
    drop.insert(name);
  }
  if (drop.empty()) return;
  m.tensors.erase(std::remove_if(m.tensors.begin(), m.tensors.end(),
                                 [&](const Tensor& t) { return drop.count(t.name) > 0; }),
                  m.tensors.end());
  g.value_info.erase(std::remove_if(g.value_info.begin(), g.value_info.end(),
                                    [&](const ValueInfo& v) { return drop.count(v.name) > 0; }),
                     g.value_info.end());
  g.initializer_docs.erase(
      std::remove_if(g.initializer_docs.begin(), g.initializer_docs.end(),
                     [&](const std::pair<std::string, std::string>& d) { return drop.count(d.first) > 0; }),
      g.initializer_docs.end());
}

void validate_top_level(Model& m) {
  std::vector<std::string> init_names;
  init_names.reserve(m.tensors.size());
  for (const Tensor& t : m.tensors) init_names.push_back(t.name);
  m.graph->validate({}, init_names);
}

size_t count_ops(const Graph& g, const std::string& op_type, const std::string& domain) {
  size_t n = 0;
  for (const Node& node : g.nodes)
    if (node.op_type == op_type &&
        (node.domain == domain || (is_default_domain(domain) && is_default_domain(node.domain))))
      ++n;
  return n;
}

size_t count_subgraph_nodes(const Graph& g) {
  size_t n = 0;
  for (const Node& node : g.nodes)
    for (const Attribute& a : node.attributes)
      if (!a.graphs.empty()) {
        ++n;
        break;
      }
  return n;
}

// ---------------------------------------------------------------- rewriting passes

PassResult RewritePass::run(Model& model, PassContext& ctx) {
  PassResult res;
  res.status = guard([&] { run_impl(model, ctx, res); });
  if (!res.status.ok) res.changed = false;
  return res;
}

Model working_copy(const Model& model, const std::string& what_pass_needs) {
  if (!model.graph)
    throw Error("model '" + model.source + "' (" + model.format + ") has no graph; " + what_pass_needs);
  Model work = model;
  work.graph = std::make_shared<Graph>(*model.graph);
  return work;
}

void note_subgraph_bodies(const Graph& g, std::vector<std::string>& notes) {
  const size_t sub = count_subgraph_nodes(g);
  if (sub)
    notes.push_back(std::to_string(sub) +
                    " node(s) with subgraph bodies (If/Loop/Scan): their bodies "
                    "are left unquantized");
}

void raise_default_opset_noted(Graph& g, int64_t want, const std::string& pass, const std::string& why,
                               std::vector<std::string>& notes) {
  const int64_t before = raise_default_opset(g, want, pass, why);
  if (before < want)
    notes.push_back("raised the default ONNX opset from " + std::to_string(before) + " to " +
                    std::to_string(want) + " for " + why);
}

}  // namespace qforge::quant
