// ONNX graph rewriting shared by the ONNX quantization passes: node labels,
// opset and IR version changes, initializer bookkeeping, and the frame of a
// rewriting pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"
#include "qforge/pass.h"

namespace qforge::quant {

// ---------------------------------------------------------------- graphs
// "node 'fc1' (MatMul)" / "node #3 (MatMul)".
std::string node_label(const Node& n, size_t index);

// ---------------------------------------------------------------- rewriting passes
// The frame every ONNX rewriting pass shares: run() calls run_impl with a
// fresh result, turns an exception into a failed status, and reports no
// change when it failed.
class RewritePass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) final;

 protected:
  virtual void run_impl(Model& model, PassContext& ctx, PassResult& res) = 0;
};

// A copy of `model` with its own graph, for a pass to edit and hand back
// only when everything succeeded. Throws Error naming the model when it has
// no graph: "model 'a.gguf' (gguf) has no graph; <what_pass_needs>".
Model working_copy(const Model& model, const std::string& what_pass_needs);

// The note for nodes whose subgraph bodies a pass leaves alone, added to
// `notes` when there are any.
void note_subgraph_bodies(const Graph& g, std::vector<std::string>& notes);

// raise_default_opset, adding "raised the default ONNX opset from 13 to 21
// for <why>" to `notes` when it raised it.
void raise_default_opset_noted(Graph& g, int64_t want, const std::string& pass, const std::string& why,
                               std::vector<std::string>& notes);

// Raises the default-domain opset to at least `want` (the graph's own
// ModelInfo). Before changing anything, checks every node, in subgraphs
// too, for ops whose form changed between the current and the new version
// (attributes that became inputs, removed ops) and throws Error naming the
// node, what changed and at which opset. Returns the previous version
// (unchanged when it was already high enough).
int64_t raise_default_opset(Graph& g, int64_t want, const std::string& pass, const std::string& why);
// Adds an opset import for `domain` at `version` when missing.
void ensure_opset(Graph& g, const std::string& domain, int64_t version);
// Raises ir_version to at least `v`.
void ensure_ir_version(Graph& g, int64_t v);

// Whether a top-level initializer named `name` exists and is not shadowed
// by a graph input (such weights are overridable at run time).
bool is_constant_initializer(const Model& m, const std::string& name);

// Removes top-level initializers no node (or subgraph) reads any more and
// that are not graph outputs, among `candidates`; drops their value_info.
void drop_unused_initializers(Model& m, const std::vector<std::string>& candidates);

// Checks the rewritten top-level graph against the model's initializers
// (Graph::validate: dangling values, double producers, cycles), putting its
// nodes back in topological order; throws naming the problem.
void validate_top_level(Model& m);

// Counts nodes with `op_type` (and `domain`) in the top-level graph.
size_t count_ops(const Graph& g, const std::string& op_type, const std::string& domain = "");
// Number of nodes carrying subgraph attributes (their bodies are not rewritten).
size_t count_subgraph_nodes(const Graph& g);

}  // namespace qforge::quant
