// Weight normalisation (passes/common/normalize.h) and the models it makes
// quantizable: weights written as Constant nodes, and IR 3 models listing
// their initializers among the graph inputs. Generated here in the IR, run
// through the normalize pass and both quantization passes, then in ONNX
// Runtime next to the float original (tests/tools/ort_compare.py).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "normalize_pass.h"
#include "onnx_quant_util.h"
#include "onnx_test_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "qforge/plugin_host.h"
#include "qforge/registry.h"
#include "quantize_dynamic.h"
#include "quantize_weights.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace qforge;
namespace q = qforge::quant;
using namespace qforge::testutil;

fs::path scratch() {
  static Scratch s("qforge_norm_test_");
  return s.dir;
}

fs::path emit(const Model& m, const std::string& name) { return emit_to(scratch() / name, m); }

size_t count_constants(const Graph& g) { return q::count_ops(g, "Constant"); }

// The MLP of add_mlp with every weight a Constant node holding a tensor and
// every bias a Constant with value_floats, the way Paddle2ONNX and some
// TensorFlow exporters write them: no initializers at all.
Model constant_mlp(const std::vector<int64_t>& dims, uint64_t seed) {
  Model m = onnx_model("const_mlp", 13, 7);
  add_mlp(m, dims, seed, 0.1f);
  std::vector<Node> consts;
  for (const Tensor& t : m.tensors) {
    Node c = make_node(t.name + "_const", "Constant", {}, {t.name});
    if (t.shape.size() == 1) {
      c.attributes.push_back(Attribute::of_floats("value_floats", q::read_f32(t)));
    } else {
      Tensor v = t;
      v.name.clear();  // a Constant's tensor need not carry the output's name
      c.attributes.push_back(Attribute::of_tensor("value", v));
    }
    consts.push_back(std::move(c));
  }
  m.tensors.clear();
  Graph& g = *m.graph;
  g.nodes.insert(g.nodes.begin(), consts.begin(), consts.end());
  return m;
}

// The MLP of add_mlp as an IR 3 / opset 8 model: every initializer is also
// listed among the graph inputs, as ONNX required before IR 4.
Model ir3_mlp(const std::vector<int64_t>& dims, uint64_t seed) {
  Model m = onnx_model("ir3_mlp", 8, 3);
  add_mlp(m, dims, seed, 0.1f);
  for (const Tensor& t : m.tensors)
    m.graph->inputs.push_back(ValueInfo{t.name, ValueType::tensor(t.type, t.shape), "", ""});
  return m;
}

std::string python() { return ort_python("[normalize]"); }

}  // namespace

TEST_CASE("normalize_weights: Constant nodes holding tensors become initializers, the others stay",
          "[normalize]") {
  Model m = onnx_model("consts", 13, 8);
  Graph& g = *m.graph;
  add_io(g, "x", 4, "y", 4);
  g.outputs.push_back(ValueInfo{"k_out", ValueType::tensor(ElemType::F32, std::vector<int64_t>{}), "", ""});
  Node w = make_node("w_const", "Constant", {}, {"w"});
  w.attributes.push_back(
      Attribute::of_tensor("value", q::make_f32_tensor("ignored", {4, 4}, std::vector<float>(16, 0.5f))));
  Node f = make_node("f_const", "Constant", {}, {"f"});
  f.attributes.push_back(Attribute::of_float("value_float", 2.0f));
  Node is = make_node("shape_const", "Constant", {}, {"shape"});
  is.attributes.push_back(Attribute::of_ints("value_ints", {-1, 4}));
  Node i1 = make_node("one_const", "Constant", {}, {"one"});
  i1.attributes.push_back(Attribute::of_int("value_int", 1));
  Node s = make_node("s_const", "Constant", {}, {"label"});
  s.attributes.push_back(Attribute::of_string("value_string", "kept"));
  Node out = make_node("out_const", "Constant", {}, {"k_out"});  // a graph output: stays a node
  out.attributes.push_back(Attribute::of_float("value_float", 3.0f));
  for (Node* n : {&w, &f, &is, &i1, &s, &out}) g.nodes.push_back(*n);
  g.nodes.push_back(make_node("mm", "MatMul", {"x", "w"}, {"h"}));
  g.nodes.push_back(make_node("scale", "Mul", {"h", "f"}, {"h2"}));
  g.nodes.push_back(make_node("reshape", "Reshape", {"h2", "shape"}, {"y"}));
  // A Constant inside a subgraph stays there.
  auto body = std::make_shared<Graph>();
  body->name = "then";
  Node inner = make_node("inner_const", "Constant", {}, {"inner"});
  inner.attributes.push_back(Attribute::of_float("value_float", 4.0f));
  body->nodes.push_back(inner);
  body->outputs.push_back(
      ValueInfo{"inner", ValueType::tensor(ElemType::F32, std::vector<int64_t>{}), "", ""});
  Node iff = make_node("if", "If", {"cond"}, {"branch"});
  Attribute then_branch;
  then_branch.name = "then_branch";
  then_branch.type = Attribute::Type::Graph;
  then_branch.graphs.push_back(body);
  iff.attributes.push_back(then_branch);
  g.nodes.push_back(iff);
  g.inputs.push_back(ValueInfo{"cond", ValueType::tensor(ElemType::Bool, std::vector<int64_t>{}), "", ""});

  const q::NormalizeStats st = q::normalize_weights(m);
  CHECK(st.constants_lifted == 4);
  CHECK(st.inputs_dropped == 0);
  CHECK(st.ir_after == 8);         // IR >= 4: no change needed
  CHECK(count_constants(g) == 2);  // the string and the graph output
  CHECK(g.producer("label") >= 0);
  CHECK(g.producer("k_out") >= 0);
  CHECK(count_constants(*g.nodes.back().attributes[0].graphs[0]) == 1);
  REQUIRE(m.tensor("w"));
  CHECK(m.tensor("w")->shape == std::vector<int64_t>{4, 4});
  CHECK(q::read_f32(*m.tensor("w")) == std::vector<float>(16, 0.5f));
  REQUIRE(m.tensor("f"));
  CHECK(m.tensor("f")->shape.empty());
  CHECK(q::read_f32(*m.tensor("f")) == std::vector<float>{2.0f});
  REQUIRE(m.tensor("shape"));
  CHECK(m.tensor("shape")->type == ElemType::I64);
  CHECK(m.tensor("shape")->shape == std::vector<int64_t>{2});
  std::vector<int64_t> dims(2);
  std::memcpy(dims.data(), bytes_of(*m.tensor("shape")).data(), 16);
  CHECK(dims == std::vector<int64_t>{-1, 4});
  REQUIRE(m.tensor("one"));
  CHECK(m.tensor("one")->shape.empty());
  CHECK(m.tensor("one")->type == ElemType::I64);
  // The graph is still well formed and in order.
  std::vector<std::string> names;
  for (const Tensor& t : m.tensors) names.push_back(t.name);
  CHECK_NOTHROW(g.validate({}, names));
  // A second run finds nothing to do.
  CHECK_FALSE(q::normalize_weights(m).changed());
}

TEST_CASE("normalize_weights: IR 3 initializers listed as inputs stop being inputs, IR 4 keeps them",
          "[normalize]") {
  Model m = ir3_mlp({8, 6, 2}, 3);
  REQUIRE(m.graph->inputs.size() == 5);  // x and four initializers
  const q::NormalizeStats st = q::normalize_weights(m);
  CHECK(st.inputs_dropped == 4);
  CHECK(st.constants_lifted == 0);
  CHECK(st.ir_before == 3);
  CHECK(st.ir_after == 4);
  REQUIRE(m.graph->inputs.size() == 1);
  CHECK(m.graph->inputs[0].name == "x");
  CHECK(m.tensors.size() == 4);

  // From IR 4 on an initializer that is also an input is overridable: it stays.
  Model v4 = ir3_mlp({8, 6, 2}, 3);
  v4.graph->model.ir_version = 4;
  const q::NormalizeStats s4 = q::normalize_weights(v4);
  CHECK_FALSE(s4.changed());
  CHECK(v4.graph->inputs.size() == 5);
  PassResult r = run_pass(passes::quantize_dynamic_pass_info(), v4, {});
  REQUIRE(r.status.ok);
  CHECK_FALSE(r.changed);
  REQUIRE(r.skipped.size() == 2);
  CHECK(r.skipped[0].reason ==
        "weight is an initializer that is also a graph input (overridable at run time)");
  REQUIRE(r.warnings.size() == 1);
  CHECK_THAT(r.warnings[0], Contains("2 MatMul nodes, all skipped") && Contains("overridable"));
}

TEST_CASE("quantize-dynamic and quantize-weights quantize Constant-node weights, and ONNX Runtime agrees",
          "[normalize][quantize-dynamic][quantize-weights]") {
  const Model orig = constant_mlp({48, 96, 32, 10}, 41);
  REQUIRE(orig.tensors.empty());
  REQUIRE(count_constants(*orig.graph) == 6);
  const fs::path ref = emit(orig, "const_mlp_f32.onnx");
  struct Case {
    const char* name;
    PassInfo info;
    Options opts;
  };
  for (const Case& cs :
       {Case{"quantize-dynamic", passes::quantize_dynamic_pass_info(), {}},
        Case{"quantize-weights dq 8", passes::quantize_weights_pass_info(), {{"bits", Value::of_int(8)}}},
        Case{"quantize-weights matmulnbits 8",
             passes::quantize_weights_pass_info(),
             {{"bits", Value::of_int(8)},
              {"format", Value::of_string("matmulnbits")},
              {"block_size", Value::of_int(16)}}}}) {
    DYNAMIC_SECTION(cs.name) {
      Model m = orig;
      PassResult r = run_pass(cs.info, m, cs.opts);
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      CHECK(r.changed);
      CHECK(r.warnings.empty());
      CHECK(r.skipped.empty());
      CHECK(r.metrics.at("constants_lifted") == 6);
      CHECK(r.metrics.at("inputs_dropped") == 0);
      CHECK(r.metrics.at("quantized_weights") == 3);
      CHECK(count_constants(*m.graph) == 0);
      CHECK(q::count_ops(*m.graph, "MatMul") == (std::string(cs.name) == "quantize-weights dq 8" ? 3u : 0u));
      bool noted = false;
      for (const std::string& n : r.notes)
        noted |= n.find("normalised 6 Constant node(s)") != std::string::npos;
      CHECK(noted);
      std::string file = std::string("const_mlp_") + cs.name + ".onnx";
      std::replace(file.begin(), file.end(), ' ', '_');
      const fs::path cand = emit(m, file);
      const Comparison c = ort_compare_with(python(), ref, cand, "--batch 8");
      INFO(c.output);
      REQUIRE(c.rc == 0);
      CHECK(c.cosine >= 0.99);
    }
  }
}

TEST_CASE(
    "IR 3 models (initializers listed as inputs) are quantized by both passes and agree in ONNX Runtime",
    "[normalize][quantize-dynamic][quantize-weights]") {
  const Model orig = ir3_mlp({32, 64, 10}, 17);
  const fs::path ref = emit(orig, "ir3_mlp_f32.onnx");
  struct Case {
    const char* name;
    PassInfo info;
    Options opts;
    int64_t opset;
  };
  for (const Case& cs :
       {Case{"quantize-dynamic", passes::quantize_dynamic_pass_info(), {}, 11},
        Case{"quantize-weights", passes::quantize_weights_pass_info(), {{"bits", Value::of_int(8)}}, 13}}) {
    DYNAMIC_SECTION(cs.name) {
      Model m = orig;
      PassResult r = run_pass(cs.info, m, cs.opts);
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      CHECK(r.changed);
      CHECK(r.skipped.empty());
      CHECK(r.metrics.at("inputs_dropped") == 4);
      CHECK(r.metrics.at("quantized_weights") == 2);
      CHECK(m.graph->model.ir_version >= 4);
      CHECK(m.graph->opset() == cs.opset);
      REQUIRE(m.graph->inputs.size() == 1);
      CHECK(m.graph->inputs[0].name == "x");
      const fs::path cand = emit(m, std::string("ir3_") + cs.name + ".onnx");
      const Comparison c = ort_compare_with(python(), ref, cand, "--batch 8");
      INFO(c.output);
      REQUIRE(c.rc == 0);
      CHECK(c.cosine >= 0.99);
    }
  }
}

TEST_CASE("normalisation happens in the passes: import and emit keep Constant nodes as written",
          "[normalize]") {
  const Model orig = constant_mlp({8, 4}, 2);
  const fs::path p = emit(orig, "const_roundtrip.onnx");
  const Model back = onnxfmt::import_onnx(p.string());
  CHECK(back.tensors.empty());
  CHECK(count_constants(*back.graph) == 2);
  CHECK(back.graph->model.ir_version == 7);
  // Emitting what was imported gives the same file again.
  CHECK(file_bytes(emit(back, "const_roundtrip_again.onnx")) == file_bytes(p));
}

TEST_CASE("normalize: registered through the built-in plugin, runs from the registry",
          "[normalize][plugin]") {
  Registry registry;
  PluginHost host(registry);
  register_builtins(host);
  const PassInfo* info = registry.pass("normalize");
  REQUIRE(info);
  CHECK(registry.origin_of_pass("normalize") == "normalize");
  Model m = constant_mlp({8, 6, 4}, 5);
  PassResult r = run_pass(*info, m, {});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  CHECK(r.metrics.at("constants_lifted") == 4);
  CHECK(count_constants(*m.graph) == 0);
  CHECK(m.tensors.size() == 4);
  // Nothing left to do: no change, and a warning saying so.
  PassResult again = run_pass(*info, m, {});
  REQUIRE(again.status.ok);
  CHECK_FALSE(again.changed);
  REQUIRE(again.warnings.size() == 1);
  CHECK_THAT(again.warnings[0], Contains("already initializers"));
  // A model without a graph fails naming the file.
  check_fails_without_graph(*info, "tiny.gguf");
}
