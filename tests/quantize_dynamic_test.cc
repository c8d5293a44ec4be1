// quantize-dynamic pass: DynamicQuantizeLinear + MatMulInteger rewrites,
// checked in ONNX Runtime through tests/tools/ort_compare.py ($QFORGE_PYTHON).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "onnx_quant_util.h"
#include "onnx_test_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "quantize_dynamic.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace qforge;
namespace q = qforge::quant;

using namespace qforge::testutil;

Model empty_model(int64_t opset = 13) { return onnx_model("dyn", opset, opset >= 13 ? 7 : 6); }

// x[batch, dims[0]] -> (MatMul -> Add -> Relu)* -> y
Model mlp(const std::vector<int64_t>& dims, uint64_t seed = 21, int64_t opset = 13) {
  Model m = empty_model(opset);
  // Off-centre weights make uint8 zero points non-trivial.
  add_mlp(m, dims, seed, 0.2f);
  return m;
}

PassResult quantize(Model& model, Options opts) {
  return run_pass(passes::quantize_dynamic_pass_info(), model, std::move(opts));
}

fs::path scratch() {
  static Scratch s("qforge_qd_test_");
  return s.dir;
}

void expect_ort_close(const fs::path& ref, const fs::path& cand, double min_cosine) {
  check_ort_close(ort_python("[quantize-dynamic]"), ref, cand, min_cosine);
}

fs::path emit(const Model& m, const std::string& name) { return emit_to(scratch() / name, m); }

}  // namespace

TEST_CASE("quantize-dynamic: int8/uint8, per tensor/per channel MLPs run in ONNX Runtime",
          "[quantize-dynamic]") {
  Model orig = mlp({64, 128, 64, 16});
  fs::path a = emit(orig, "dyn_f32.onnx");
  for (const char* wt : {"int8", "uint8"}) {
    for (bool pc : {false, true}) {
      DYNAMIC_SECTION(wt << " per_channel " << pc) {
        Model m = orig;
        PassResult r =
            quantize(m, {{"weight_type", Value::of_string(wt)}, {"per_channel", Value::of_bool(pc)}});
        INFO(r.status.message);
        REQUIRE(r.status.ok);
        CHECK(r.changed);
        const Graph& g = *m.graph;
        CHECK(q::count_ops(g, "MatMul") == 0);
        CHECK(q::count_ops(g, "MatMulInteger") == 3);
        CHECK(q::count_ops(g, "DynamicQuantizeLinear") == 3);
        CHECK(q::count_ops(g, "Cast") == 3);
        CHECK(q::count_ops(g, "Mul") == 6);
        CHECK(r.metrics.at("quantized_weights") == 3);
        CHECK(r.metrics.at("weight_bytes_after") < r.metrics.at("weight_bytes_before") / 3.5);
        const Node* mi = find_op(g, "MatMulInteger");
        REQUIRE(mi);
        REQUIRE(mi->inputs.size() == 4);
        const Tensor* w = m.tensor(mi->inputs[1]);
        const Tensor* zp = m.tensor(mi->inputs[3]);
        REQUIRE(w);
        REQUIRE(zp);
        const ElemType want = std::string(wt) == "int8" ? ElemType::I8 : ElemType::U8;
        CHECK(w->type == want);
        CHECK(zp->type == want);
        CHECK(zp->shape == (pc ? std::vector<int64_t>{128} : std::vector<int64_t>{}));
        const std::vector<uint8_t> zb = bytes_of(*zp);
        if (want == ElemType::I8) {
          CHECK(std::all_of(zb.begin(), zb.end(), [](uint8_t b) { return b == 0; }));  // symmetric
        } else {
          CHECK(std::any_of(zb.begin(), zb.end(), [](uint8_t b) { return b != 0 && b != 128; }));
        }
        fs::path b = emit(m, std::string("dyn_") + wt + (pc ? "_pc" : "_pt") + ".onnx");
        CHECK(fs::file_size(b) < fs::file_size(a) / 3);
        expect_ort_close(a, b, 0.99);
      }
    }
  }
}

TEST_CASE("quantize-dynamic: exact weight codes (quant_utils arithmetic)", "[quantize-dynamic]") {
  Model m = empty_model();
  Graph& g = *m.graph;
  add_io(g, "x", 2, "y", 2);
  // absmax 127/64 -> scale 1/64: -62.5 -> -62 and 2.5 -> 2 (ties to even).
  m.tensors.push_back(q::make_f32_tensor("w", {2, 2}, {1.984375f, -0.9765625f, 0.0390625f, 0.0f}));
  g.nodes.push_back(make_node("mm", "MatMul", {"x", "w"}, {"y"}));
  Model pc = m, u8 = m;
  REQUIRE(quantize(m, {}).status.ok);
  const Node* mi = find_op(*m.graph, "MatMulInteger");
  REQUIRE(mi);
  CHECK(bytes_of(*m.tensor(mi->inputs[1])) == std::vector<uint8_t>{127, static_cast<uint8_t>(-62), 2, 0});
  CHECK(q::read_f32(*m.tensor("w_scale")) == std::vector<float>{0.015625f});
  CHECK(m.tensor("w") == nullptr);

  // Per channel: column 1 absmax 0.9765625 -> scale 0.9765625 / 127.
  REQUIRE(quantize(pc, {{"per_channel", Value::of_bool(true)}}).status.ok);
  mi = find_op(*pc.graph, "MatMulInteger");
  CHECK(bytes_of(*pc.tensor(mi->inputs[1])) == std::vector<uint8_t>{127, static_cast<uint8_t>(-127), 2, 0});
  CHECK(q::read_f32(*pc.tensor("w_scale")) ==
        std::vector<float>{0.015625f, static_cast<float>(0.9765625 / 127)});

  // uint8 asymmetric: rmin -0.9765625, rmax 1.984375 -> scale 2.9609375 / 255,
  // zp = round(0.9765625 / scale) = round(84.1029...) = 84.
  REQUIRE(quantize(u8, {{"weight_type", Value::of_string("uint8")}}).status.ok);
  mi = find_op(*u8.graph, "MatMulInteger");
  REQUIRE(mi);
  CHECK(bytes_of(*u8.tensor(mi->inputs[1])) == std::vector<uint8_t>{255, 0, 87, 84});
  CHECK(bytes_of(*u8.tensor(mi->inputs[3])) == std::vector<uint8_t>{84});
  CHECK(q::read_f32(*u8.tensor("w_scale"))[0] == static_cast<float>(2.9609375 / 255));
}

TEST_CASE("quantize-dynamic: reduce_range keeps int8 codes in [-64, 64]", "[quantize-dynamic]") {
  Model orig = mlp({32, 48, 8}, 4);
  Model m = orig;
  PassResult r = quantize(m, {{"reduce_range", Value::of_bool(true)}, {"per_channel", Value::of_bool(true)}});
  REQUIRE(r.status.ok);
  int lo = 0, hi = 0;
  for (const Node& n : m.graph->nodes) {
    if (n.op_type != "MatMulInteger") continue;
    for (uint8_t b : bytes_of(*m.tensor(n.inputs[1]))) {
      lo = std::min(lo, static_cast<int>(static_cast<int8_t>(b)));
      hi = std::max(hi, static_cast<int>(static_cast<int8_t>(b)));
    }
  }
  CHECK(lo >= -64);
  CHECK(hi <= 64);
  CHECK(std::max(-lo, hi) == 64);  // the extreme of each column maps to +-64
  expect_ort_close(emit(orig, "dyn_rr_f32.onnx"), emit(m, "dyn_rr.onnx"), 0.99);
}

TEST_CASE("quantize-dynamic: one DynamicQuantizeLinear per activation, skips with reasons",
          "[quantize-dynamic]") {
  Model m = empty_model();
  Graph& g = *m.graph;
  add_io(g, "x", 32, "y", 16);
  Rng rng(5);
  m.tensors.push_back(rand_tensor("wa", {32, 16}, rng, 0.3f));
  m.tensors.push_back(rand_tensor("wb", {32, 16}, rng, 0.3f));
  m.tensors.push_back(rand_tensor("wc", {32, 16}, rng, 0.3f));
  m.tensors.push_back(rand_tensor("wd", {32, 16}, rng, 0.3f));
  g.nodes.push_back(make_node("a", "MatMul", {"x", "wa"}, {"ha"}));
  g.nodes.push_back(make_node("b", "MatMul", {"x", "wb"}, {"hb"}));
  g.nodes.push_back(make_node("c", "MatMul", {"x", "wc"}, {"hc"}));
  g.nodes.push_back(make_node("neg", "Neg", {"wd"}, {"wd_neg"}));
  g.nodes.push_back(make_node("d", "MatMul", {"x", "wd_neg"}, {"hd"}));
  g.nodes.push_back(make_node("s1", "Add", {"ha", "hb"}, {"s1_out"}));
  g.nodes.push_back(make_node("s2", "Add", {"s1_out", "hc"}, {"s2_out"}));
  g.nodes.push_back(make_node("s3", "Add", {"s2_out", "hd"}, {"y"}));
  Model orig = m;
  PassResult r = quantize(m, {{"exclude_nodes", list_of({"c"})}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(q::count_ops(*m.graph, "DynamicQuantizeLinear") == 1);
  CHECK(q::count_ops(*m.graph, "MatMulInteger") == 2);
  CHECK(q::count_ops(*m.graph, "MatMul") == 2);  // c excluded, d's weight is computed
  CHECK(r.metrics.at("dynamic_quantize_nodes") == 1);
  CHECK(r.changed);
  CHECK(r.warnings.empty());
  REQUIRE(r.skipped.size() == 2);
  CHECK(r.skipped[0].reason == "listed in exclude_nodes");
  CHECK(r.skipped[0].what == "node 'c' (MatMul)");
  CHECK(r.skipped[1].reason == "weight is not a constant");
  CHECK_THAT(r.skipped[1].what,
             Contains("node 'd' (MatMul)") && Contains("'wd_neg' is computed by node 'neg' (Neg)"));
  CHECK(r.metrics.at("skipped_nodes") == 2);
  CHECK(m.tensor("wc") != nullptr);
  CHECK(m.tensor("wa") == nullptr);
  expect_ort_close(emit(orig, "dyn_shared_f32.onnx"), emit(m, "dyn_shared.onnx"), 0.99);
}

TEST_CASE("quantize-dynamic: 3-D activations (transformer-style MatMul)", "[quantize-dynamic]") {
  Model orig = empty_model();
  add_projection(orig, 7, 48, 24, 31);
  Model m = orig;
  REQUIRE(quantize(m, {{"per_channel", Value::of_bool(true)}}).status.ok);
  expect_ort_close(emit(orig, "dyn_proj_f32.onnx"), emit(m, "dyn_proj.onnx"), 0.99);
}

TEST_CASE("quantize-dynamic: raises opset 10 to 11", "[quantize-dynamic]") {
  Model orig = mlp({16, 24, 8}, 8, 10);
  Model m = orig;
  PassResult r = quantize(m, {});
  REQUIRE(r.status.ok);
  CHECK(m.graph->opset() == 11);
  bool noted = false;
  for (const std::string& n : r.notes) noted |= n.find("from 10 to 11") != std::string::npos;
  CHECK(noted);
  expect_ort_close(emit(orig, "dyn_op10_f32.onnx"), emit(m, "dyn_op10.onnx"), 0.99);
}

TEST_CASE("quantize-dynamic: deterministic output", "[quantize-dynamic]") {
  Model orig = mlp({32, 64, 8});
  Model a = orig, b = orig;
  Options o{{"weight_type", Value::of_string("uint8")}, {"per_channel", Value::of_bool(true)}};
  REQUIRE(quantize(a, o).status.ok);
  REQUIRE(quantize(b, o).status.ok);
  CHECK(file_bytes(emit(a, "dyn_det_a.onnx")) == file_bytes(emit(b, "dyn_det_b.onnx")));
}

TEST_CASE("quantize-dynamic: bad options and unsupported models fail clearly", "[quantize-dynamic]") {
  Model m = mlp({16, 16, 4});
  auto fails = [&](Options o, const std::string& what) {
    check_fails(passes::quantize_dynamic_pass_info(), m, std::move(o), what);
  };
  fails({{"weight_type", Value::of_string("int4")}}, "'weight_type' must be 'int8' or 'uint8', found 'int4'");
  fails({{"op_types", list_of({"MatMul", "Gemm"})}},
        "op type 'Gemm' in option 'op_types' is not implemented");
  fails({{"per_channel", Value::of_string("yes")}},
        "'per_channel' of pass 'quantize-dynamic' must be true or false");
  SECTION("no graph") { check_fails_without_graph(passes::quantize_dynamic_pass_info(), "llm.gguf"); }
  SECTION("opset move conflicts") {
    Model x = mlp({16, 16, 4}, 3, 9);
    Graph& g = *x.graph;
    Node up = make_node("up", "Upsample", {"y", "scales"}, {"y2"});
    x.tensors.push_back(q::make_f32_tensor("scales", {2}, {1.0f, 2.0f}));
    g.nodes.push_back(up);
    g.outputs.push_back(io("y2", 8));
    PassResult r = quantize(x, {});
    CHECK_FALSE(r.status.ok);
    CHECK_THAT(r.status.message, Contains("node 'up' (Upsample)") && Contains("from 9 to 11"));
  }
  SECTION("f16 weights are skipped with a reason") {
    Model h = m;
    for (Tensor& t : h.tensors)
      if (t.name == "fc2.weight") {
        t.type = ElemType::F16;
        t.data = make_blob(std::vector<uint8_t>(static_cast<size_t>(t.numel() * 2), 0));
      }
    PassResult r = quantize(h, {});
    REQUIRE(r.status.ok);
    CHECK(r.metrics.at("quantized_weights") == 1);
    const Skipped* s = skip_of(r, "node 'fc2'");
    REQUIRE(s);
    CHECK_THAT(s->reason, Contains("weight is f16") && Contains("need f32"));
    CHECK_THAT(s->what, Contains("'fc2.weight'"));
  }
}
