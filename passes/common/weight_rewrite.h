// The skeleton every ONNX weight-quantizing pass follows (quantize-dynamic,
// quantize-weights; quantize-static shares its start and step 4):
//
//   1. select   each top-level node of the pass's op types is a candidate; the
//               pass's judge accepts it (naming its weight) or rejects it
//               with a reason, reported through PassResult::skipped;
//   2. quantize each distinct weight (by key) once, in first-use order;
//   3. rebuild  the node list in order, the pass replacing each accepted
//               node by what quantizes it;
//   4. commit   drop the replaced weights nothing reads any more, validate
//               the graph, record metrics, skips and (when nothing was
//               quantized) a warning saying why, and hand the working copy
//               back only when a node changed.
//
// A pass runs on a working copy (working_copy + normalize_weights, see
// begin_weight_rewrite), so a failure leaves the caller's model untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "normalize.h"
#include "qforge/graph.h"
#include "qforge/model.h"
#include "qforge/pass.h"
#include "qforge/status.h"
#include "quant_tensors.h"

namespace qforge::quant {

// One accepted node.
struct Candidate {
  size_t node = 0;          // index in the top-level graph
  std::string weight;       // the initializer it quantizes
  std::string key;          // nodes with one key share one quantized weight (default: `weight`)
  bool transposed = false;  // the weight is stored [N, K] (Gemm transB = 1)
};

// A judge's verdict: accepted (empty reason) or skipped. `reason` is what the
// report groups by ("weight is not a constant"); `detail` names the tensor and
// the specifics ("'w' is produced by node 'neg' (Neg)").
struct Verdict {
  std::string reason;
  std::string detail;
  bool accepted() const { return reason.empty(); }
};
inline Verdict accept() { return {}; }
inline Verdict reject(std::string reason, std::string detail = "") {
  return {std::move(reason), std::move(detail)};
}

// Step 1's result.
struct Selection {
  std::string ops;        // the op types, for messages ("MatMul", "MatMul or Gemm")
  size_t considered = 0;  // nodes of those op types in the top-level graph
  std::vector<Candidate> chosen;
  std::vector<Skipped> skipped;  // what: "node 'fc1' (MatMul): <detail>"
};

using Judge = std::function<Verdict(const Node& node, size_t index, Candidate& c)>;

// Step 1 over the top-level graph of `work`: every node of the default domain
// whose op type is in `op_types` is judged (the judge fills `c.weight` and
// what else it needs; `c.key` defaults to the weight).
Selection select_candidates(const Graph& g, const std::vector<std::string>& op_types, const Judge& judge);

// The check every weight-quantizing pass makes of a candidate's weight `w`
// (after normalisation): rejected as "weight is not a constant" when it is
// computed by a node, a plain graph input or from an enclosing scope, and as
// an overridable initializer when it is also a graph input (IR >= 4).
Verdict check_weight_is_constant(const Model& work, const std::string& w);

// Statistics of steps 2-4.
struct RewriteStats {
  size_t quantized_weights = 0;
  size_t quantized_nodes = 0;
  uint64_t bytes_before = 0;  // stored bytes of the quantized weights
  uint64_t bytes_after = 0;   // stored bytes of what replaces them
};

// The start every weight-rewriting pass shares: a working copy of `model`
// with its weights normalised (see normalize.h). Throws Error naming the
// model when it has no graph.
Model begin_weight_rewrite(const Model& model, const std::string& what_pass_needs,
                           NormalizeStats& normalized);

// Step 4. `replaced`: the float weights the rewrite replaced (dropped when
// nothing reads them any more). Sets the metrics quantized_weights,
// quantized_nodes, skipped_nodes, weight_bytes_before, weight_bytes_after
// (and constants_lifted / inputs_dropped from `normalized`), moves the
// selection's skips into res.skipped, and when no node was quantized sets
// res.changed = false, leaves `model` alone and adds a warning saying why
// ("no MatMul node in the model", "13 MatMul nodes, all skipped: weight is
// not a constant (13)").
void commit_rewrite(Model& model, Model& work, const std::vector<std::string>& replaced, Selection& sel,
                    const RewriteStats& stats, const NormalizeStats& normalized, PassResult& res);

// Steps 2 and 3 for a pass whose quantized weight type Q has the members
// `std::string weight` (the float weight it replaces) and
// `std::vector<Tensor> tensors` (its new initializers):
//   quantize(const Candidate&) -> Q          for each key's first candidate;
//   rewrite(Node node, const Candidate&, Q&, std::vector<Node>& out)
//                                             appends what replaces `node`.
// Adds the new initializers to `work`, fills `stats` and returns the weights
// replaced (for commit_rewrite). Errors from `quantize` are rethrown naming
// the node and the weight.
template <class Q, class QuantizeFn, class RewriteFn>
std::vector<std::string> quantize_and_rebuild(Model& work, const Selection& sel, Progress& progress,
                                              const std::string& pass, QuantizeFn&& quantize,
                                              RewriteFn&& rewrite, RewriteStats& stats) {
  Graph& g = *work.graph;
  std::map<std::string, Q> done;
  std::vector<std::string> order;  // keys in first-use order
  progress.begin(pass, sel.chosen.size(), "tensors");
  for (const Candidate& c : sel.chosen) {
    if (!done.count(c.key)) {
      const Tensor* w = work.tensor(c.weight);
      if (!w)
        throw Error("internal error: " + node_label(g.nodes[c.node], c.node) + ": weight '" + c.weight +
                    "' vanished before it was quantized");
      Q q;
      try {
        q = quantize(c);
      } catch (const Error& e) {
        throw Error(node_label(g.nodes[c.node], c.node) + ", weight '" + c.weight + "': " + e.what());
      }
      stats.bytes_before += stored_bytes(*w);
      for (const Tensor& t : q.tensors) stats.bytes_after += stored_bytes(t);
      done.emplace(c.key, std::move(q));
      order.push_back(c.key);
    }
    progress.advance(1);
  }
  progress.end();

  std::map<size_t, const Candidate*> by_node;
  for (const Candidate& c : sel.chosen) by_node[c.node] = &c;
  std::vector<Node> out;
  out.reserve(g.nodes.size() + 4 * sel.chosen.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    auto it = by_node.find(i);
    if (it == by_node.end()) {
      out.push_back(std::move(g.nodes[i]));
      continue;
    }
    rewrite(std::move(g.nodes[i]), *it->second, done.at(it->second->key), out);
  }
  g.nodes = std::move(out);

  std::vector<std::string> replaced;
  for (const std::string& key : order) {
    Q& q = done.at(key);
    replaced.push_back(q.weight);
    for (Tensor& t : q.tensors) work.tensors.push_back(std::move(t));
  }
  stats.quantized_weights = order.size();
  stats.quantized_nodes = sel.chosen.size();
  return replaced;
}

}  // namespace qforge::quant
