#include "weight_rewrite.h"

#include "graph_rewrite.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace qforge::quant {
namespace {

bool is_default_domain(const std::string& d) { return d.empty() || d == "ai.onnx"; }

std::string join_ops(const std::vector<std::string>& ops) {
  std::string s;
  for (size_t i = 0; i < ops.size(); ++i) s += (i == 0 ? "" : i + 1 == ops.size() ? " or " : ", ") + ops[i];
  return s;
}

}  // namespace

Selection select_candidates(const Graph& g, const std::vector<std::string>& op_types, const Judge& judge) {
  Selection sel;
  sel.ops = join_ops(op_types);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!is_default_domain(n.domain)) continue;
    if (std::find(op_types.begin(), op_types.end(), n.op_type) == op_types.end()) continue;
    ++sel.considered;
    Candidate c;
    c.node = i;
    Verdict v = judge(n, i, c);
    if (!v.accepted()) {
      std::string what = node_label(n, i);
      if (!v.detail.empty()) what += ": " + v.detail;
      sel.skipped.push_back(Skipped{std::move(v.reason), std::move(what)});
      continue;
    }
    if (c.key.empty()) c.key = c.weight;
    sel.chosen.push_back(std::move(c));
  }
  return sel;
}

Verdict check_weight_is_constant(const Model& work, const std::string& w) {
  const Graph& g = *work.graph;
  if (!work.tensor(w)) {
    const int p = g.producer(w);
    if (p >= 0)
      return reject("weight is not a constant",
                    "'" + w + "' is computed by " +
                        node_label(g.nodes[static_cast<size_t>(p)], static_cast<size_t>(p)));
    if (g.is_input(w)) return reject("weight is not a constant", "'" + w + "' is a graph input");
    return reject("weight is not a constant", "'" + w + "' comes from an enclosing scope");
  }
  if (g.is_input(w))
    return reject("weight is an initializer that is also a graph input (overridable at run time)",
                  "'" + w + "' (ir_version " + std::to_string(g.model.ir_version) + ")");
  return accept();
}

Model begin_weight_rewrite(const Model& model, const std::string& what_pass_needs,
                           NormalizeStats& normalized) {
  Model work = working_copy(model, what_pass_needs);
  normalized = normalize_weights(work);
  return work;
}

void commit_rewrite(Model& model, Model& work, const std::vector<std::string>& replaced, Selection& sel,
                    const RewriteStats& stats, const NormalizeStats& normalized, PassResult& res) {
  res.metrics["quantized_weights"] = static_cast<double>(stats.quantized_weights);
  res.metrics["quantized_nodes"] = static_cast<double>(stats.quantized_nodes);
  res.metrics["skipped_nodes"] = static_cast<double>(sel.skipped.size());
  res.metrics["weight_bytes_before"] = static_cast<double>(stats.bytes_before);
  res.metrics["weight_bytes_after"] = static_cast<double>(stats.bytes_after);
  const bool quantized = stats.quantized_nodes > 0;
  if (!quantized) {
    if (sel.considered == 0) {
      res.warnings.push_back("no " + sel.ops + " node in the model's top-level graph; nothing was quantized");
    } else {
      std::vector<std::pair<std::string, size_t>> counts;  // reasons in first-seen order
      for (const Skipped& s : sel.skipped) {
        auto it =
            std::find_if(counts.begin(), counts.end(), [&](const auto& p) { return p.first == s.reason; });
        if (it == counts.end())
          counts.emplace_back(s.reason, 1);
        else
          ++it->second;
      }
      std::string why;
      for (const auto& [reason, n] : counts)
        why += (why.empty() ? "" : "; ") + reason + " (" + std::to_string(n) + ")";
      res.warnings.push_back(std::to_string(sel.considered) + " " + sel.ops + " node" +
                             (sel.considered == 1 ? "" : "s") + ", all skipped: " + why);
    }
  }
  res.skipped.insert(res.skipped.end(), std::make_move_iterator(sel.skipped.begin()),
                     std::make_move_iterator(sel.skipped.end()));
  sel.skipped.clear();
  res.changed = quantized;
  if (!quantized) return;
  note_normalized(normalized, res);
  drop_unused_initializers(work, replaced);
  validate_top_level(work);
  model = std::move(work);
}

}  // namespace qforge::quant
