// The select -> quantize -> rebuild -> commit skeleton every ONNX
// weight-quantizing pass shares (passes/common/weight_rewrite.h), driven here
// by a minimal rewrite: each accepted MatMul's weight is replaced by a scaled
// copy, so what the skeleton does (once per weight, node order, skip reasons,
// the warning when nothing happens, leaving the model alone) is visible.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "onnx_quant_util.h"
#include "onnx_test_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "qforge/progress.h"

namespace {

using namespace qforge;
namespace q = qforge::quant;
using namespace qforge::testutil;

struct Copied {
  std::string weight;
  std::vector<Tensor> tensors;
};

// Rewrites `m` with the skeleton: MatMuls whose weight is a constant get
// "<w>_x2" (the weight doubled) unless their name is in `refuse`.
PassResult rewrite(Model& m, const std::vector<std::string>& refuse, int* quantize_calls = nullptr) {
  PassResult res;
  res.status = guard([&] {
    q::NormalizeStats normalized;
    Model work = q::begin_weight_rewrite(m, "the test rewrites ONNX graphs", normalized);
    q::Selection sel =
        q::select_candidates(*work.graph, {"MatMul"}, [&](const Node& n, size_t, q::Candidate& c) {
          for (const std::string& r : refuse)
            if (n.name == r) return q::reject("refused by the test", "as asked");
          c.weight = n.inputs[1];
          return q::check_weight_is_constant(work, c.weight);
        });
    auto quantize = [&](const q::Candidate& c) {
      if (quantize_calls) ++*quantize_calls;
      std::vector<float> v = q::read_f32(*work.tensor(c.weight));
      for (float& x : v) x *= 2;
      return Copied{c.weight, {q::make_f32_tensor(c.weight + "_x2", work.tensor(c.weight)->shape, v)}};
    };
    auto rebuild = [&](Node n, const q::Candidate&, Copied& cp, std::vector<Node>& out) {
      n.inputs[1] = cp.tensors[0].name;
      out.push_back(std::move(n));
    };
    NullProgress progress;
    q::RewriteStats stats;
    const std::vector<std::string> replaced =
        q::quantize_and_rebuild<Copied>(work, sel, progress, "test", quantize, rebuild, stats);
    q::commit_rewrite(m, work, replaced, sel, stats, normalized, res);
  });
  return res;
}

Model three_matmuls() {
  Model m = onnx_model("skeleton", 13, 8);
  Graph& g = *m.graph;
  add_io(g, "x", 4, "y", 4);
  m.tensors.push_back(q::make_f32_tensor("w", {4, 4}, std::vector<float>(16, 1.0f)));
  m.tensors.push_back(q::make_f32_tensor("v", {4, 4}, std::vector<float>(16, 3.0f)));
  g.nodes.push_back(make_node("a", "MatMul", {"x", "w"}, {"h1"}));
  g.nodes.push_back(make_node("relu", "Relu", {"h1"}, {"h2"}));
  g.nodes.push_back(make_node("b", "MatMul", {"h2", "w"}, {"h3"}));  // shares w with a
  g.nodes.push_back(make_node("c", "MatMul", {"h3", "v"}, {"y"}));
  return m;
}

}  // namespace

TEST_CASE("weight rewrite skeleton: each weight once, nodes in order, replaced weights dropped",
          "[weight-rewrite]") {
  Model m = three_matmuls();
  int calls = 0;
  PassResult r = rewrite(m, {}, &calls);
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  CHECK(calls == 2);  // w (shared by a and b) and v
  CHECK(r.metrics.at("quantized_weights") == 2);
  CHECK(r.metrics.at("quantized_nodes") == 3);
  CHECK(r.metrics.at("weight_bytes_before") == 2 * 64);
  CHECK(r.metrics.at("weight_bytes_after") == 2 * 64);
  const Graph& g = *m.graph;
  REQUIRE(g.nodes.size() == 4);
  CHECK(g.nodes[0].name == "a");
  CHECK(g.nodes[1].name == "relu");
  CHECK(g.nodes[2].name == "b");
  CHECK(g.nodes[0].inputs[1] == "w_x2");
  CHECK(g.nodes[2].inputs[1] == "w_x2");
  CHECK(g.nodes[3].inputs[1] == "v_x2");
  CHECK(m.tensor("w") == nullptr);  // nothing reads it any more
  CHECK(m.tensor("v") == nullptr);
  CHECK(q::read_f32(*m.tensor("v_x2"))[0] == 6.0f);
}

TEST_CASE("weight rewrite skeleton: skips keep their weights, and the reasons are reported",
          "[weight-rewrite]") {
  Model m = three_matmuls();
  PassResult r = rewrite(m, {"b"});
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  CHECK(r.warnings.empty());
  REQUIRE(r.skipped.size() == 1);
  CHECK(r.skipped[0].reason == "refused by the test");
  CHECK(r.skipped[0].what == "node 'b' (MatMul): as asked");
  CHECK(m.graph->nodes[2].inputs[1] == "w");  // b still reads the float weight,
  REQUIRE(m.tensor("w"));                     // which therefore stays
  CHECK(m.graph->nodes[0].inputs[1] == "w_x2");
}

TEST_CASE("weight rewrite skeleton: nothing rewritten is no change, a warning, and the model untouched",
          "[weight-rewrite]") {
  SECTION("every node skipped: counted by reason") {
    Model m = three_matmuls();
    const Model before = m;
    PassResult r = rewrite(m, {"a", "b", "c"});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    CHECK(r.skipped.size() == 3);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0] == "3 MatMul nodes, all skipped: refused by the test (3)");
    CHECK(m.graph == before.graph);  // the same graph object: nothing was handed back
    CHECK(m.tensors.size() == 2);
  }
  SECTION("one node, weight computed") {
    Model m = onnx_model("one", 13, 8);
    Graph& g = *m.graph;
    add_io(g, "x", 4, "y", 4);
    m.tensors.push_back(q::make_f32_tensor("w", {4, 4}, std::vector<float>(16, 1.0f)));
    g.nodes.push_back(make_node("neg", "Neg", {"w"}, {"wn"}));
    g.nodes.push_back(make_node("a", "MatMul", {"x", "wn"}, {"y"}));
    PassResult r = rewrite(m, {});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0] == "1 MatMul node, all skipped: weight is not a constant (1)");
    REQUIRE(r.skipped.size() == 1);
    CHECK(r.skipped[0].what == "node 'a' (MatMul): 'wn' is computed by node 'neg' (Neg)");
  }
  SECTION("no node of the op type") {
    Model m = onnx_model("none", 13, 8);
    add_io(*m.graph, "x", 4, "y", 4);
    m.graph->nodes.push_back(make_node("relu", "Relu", {"x"}, {"y"}));
    PassResult r = rewrite(m, {});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0] == "no MatMul node in the model's top-level graph; nothing was quantized");
  }
}
