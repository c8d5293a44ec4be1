// The pre-processing passes (passes/preprocess): upgrade-opset, infer-shapes,
// fold-batchnorm, eliminate and fold-constants, on models generated here in
// the IR and on the real PP-OCR and Magika models (tests/data/real_models.md).
// Every rewritten model is run in ONNX Runtime next to the original
// (tests/tools/ort_compare.py): the outputs must agree.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "onnx_quant_util.h"
#include "onnx_test_util.h"
#include "preprocess.h"
#include "qforge/executor.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "qforge/plugin_host.h"
#include "qforge/registry.h"
#include "quantize_weights.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace qforge;
namespace q = qforge::quant;
using namespace qforge::testutil;

fs::path scratch() {
  static Scratch s("qforge_preprocess_test_");
  return s.dir;
}

fs::path emit(const Model& m, const std::string& name) { return emit_to(scratch() / name, m); }

const Executor* cpu_executor() {
  static Registry registry;
  static std::unique_ptr<PluginHost> host;
  if (!host) {
    host = std::make_unique<PluginHost>(registry);
    register_builtins(*host);
  }
  return registry.executor("cpu");
}

// run_pass with the build's executor in the context.
PassResult run_with(const PassInfo& info, Model& model, Options opts, const Executor* ex) {
  for (const OptionSpec& s : info.options)
    if (!opts.count(s.name) && !s.default_value.is_null()) opts[s.name] = s.default_value;
  NullProgress progress;
  PassContext ctx{opts, nullptr, "test", "", 1, progress, {}, nullptr, {}, ex};
  std::unique_ptr<Pass> pass = info.factory();
  return pass->run(model, ctx);
}

ValueInfo f32_value(const std::string& name, std::vector<int64_t> shape) {
  return ValueInfo{name, ValueType::tensor(ElemType::F32, shape), "", ""};
}

Tensor i64_tensor(const std::string& name, const std::vector<int64_t>& v) {
  return q::make_tensor(name, {static_cast<int64_t>(v.size())}, ElemType::I64,
                        std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                             reinterpret_cast<const uint8_t*>(v.data() + v.size())));
}

// BatchNormalization `name` over `channels` reading `in`, writing `out`, with
// random parameters (variance in [0.5, 1.5]).
void add_bn(Model& m, const std::string& name, int64_t channels, const std::string& in,
            const std::string& out, Rng& rng) {
  m.tensors.push_back(rand_tensor(name + ".scale", {channels}, rng, 0.5f, 1.0f));
  m.tensors.push_back(rand_tensor(name + ".bias", {channels}, rng, 0.5f));
  m.tensors.push_back(rand_tensor(name + ".mean", {channels}, rng, 0.5f));
  m.tensors.push_back(rand_tensor(name + ".var", {channels}, rng, 0.5f, 1.0f));
  Node bn = make_node(name, "BatchNormalization",
                      {in, name + ".scale", name + ".bias", name + ".mean", name + ".var"}, {out});
  bn.attributes.push_back(Attribute::of_float("epsilon", 1e-3f));
  m.graph->nodes.push_back(bn);
}

// x[1,3,8,8] -> Conv(4, 3x3, pad 1, with or without bias) -> BN -> Relu -> y.
Model conv_bn(int64_t opset, bool bias) {
  Model m = onnx_model("conv_bn", opset, opset >= 13 ? 7 : 4);
  Graph& g = *m.graph;
  Rng rng(7);
  g.inputs.push_back(f32_value("x", {1, 3, 8, 8}));
  g.outputs.push_back(f32_value("y", {1, 4, 8, 8}));
  m.tensors.push_back(rand_tensor("conv.w", {4, 3, 3, 3}, rng, 0.5f));
  std::vector<std::string> in = {"x", "conv.w"};
  if (bias) {
    m.tensors.push_back(rand_tensor("conv.b", {4}, rng, 0.2f));
    in.push_back("conv.b");
  }
  Node c = make_node("conv", "Conv", in, {"c"});
  c.attributes.push_back(Attribute::of_ints("pads", {1, 1, 1, 1}));
  g.nodes.push_back(c);
  add_bn(m, "bn", 4, "c", "b", rng);
  g.nodes.push_back(make_node("relu", "Relu", {"b"}, {"y"}));
  return m;
}

// x[1,4,5,5] -> ConvTranspose(W[4,3,3,3], group 2: 6 output channels, stride 2) -> BN -> y.
Model convtranspose_bn() {
  Model m = onnx_model("convt_bn", 13, 7);
  Graph& g = *m.graph;
  Rng rng(8);
  g.inputs.push_back(f32_value("x", {1, 4, 5, 5}));
  g.outputs.push_back(f32_value("y", {1, 6, 11, 11}));
  m.tensors.push_back(rand_tensor("ct.w", {4, 3, 3, 3}, rng, 0.5f));
  m.tensors.push_back(rand_tensor("ct.b", {6}, rng, 0.2f));
  Node c = make_node("ct", "ConvTranspose", {"x", "ct.w", "ct.b"}, {"c"});
  c.attributes.push_back(Attribute::of_int("group", 2));
  c.attributes.push_back(Attribute::of_ints("strides", {2, 2}));
  g.nodes.push_back(c);
  add_bn(m, "bn", 6, "c", "y", rng);
  return m;
}

// x[1,4,5,5] -> ConvTranspose (no bias) -> Add(b[1,6,1,1]) -> BN -> y, the
// way Paddle2ONNX writes a ConvTranspose's bias.
Model convtranspose_add_bn() {
  Model m = onnx_model("convt_add_bn", 11, 6);
  Graph& g = *m.graph;
  Rng rng(10);
  g.inputs.push_back(f32_value("x", {1, 4, 5, 5}));
  g.outputs.push_back(f32_value("y", {1, 6, 10, 10}));
  m.tensors.push_back(rand_tensor("ct.w", {4, 6, 2, 2}, rng, 0.5f));
  Node c = make_node("ct", "ConvTranspose", {"x", "ct.w"}, {"c"});
  c.attributes.push_back(Attribute::of_ints("strides", {2, 2}));
  g.nodes.push_back(c);
  m.tensors.push_back(rand_tensor("ct.b", {1, 6, 1, 1}, rng, 0.3f));
  g.nodes.push_back(make_node("add", "Add", {"c", "ct.b"}, {"a"}));
  add_bn(m, "bn", 6, "a", "y", rng);
  return m;
}

// x[3,5] -> Gemm(B, C; transB, alpha 0.5, beta 2) -> BN -> y[3,6].
Model gemm_bn(bool trans_b, bool with_c) {
  Model m = onnx_model("gemm_bn", 13, 7);
  Graph& g = *m.graph;
  Rng rng(9);
  g.inputs.push_back(f32_value("x", {3, 5}));
  g.outputs.push_back(f32_value("y", {3, 6}));
  m.tensors.push_back(
      rand_tensor("fc.w", trans_b ? std::vector<int64_t>{6, 5} : std::vector<int64_t>{5, 6}, rng, 0.5f));
  std::vector<std::string> in = {"x", "fc.w"};
  if (with_c) {
    m.tensors.push_back(rand_tensor("fc.c", {6}, rng, 0.3f));
    in.push_back("fc.c");
  }
  Node n = make_node("fc", "Gemm", in, {"h"});
  if (trans_b) n.attributes.push_back(Attribute::of_int("transB", 1));
  n.attributes.push_back(Attribute::of_float("alpha", 0.5f));
  n.attributes.push_back(Attribute::of_float("beta", 2.0f));
  g.nodes.push_back(n);
  add_bn(m, "bn", 6, "h", "y", rng);
  return m;
}

// Runs `info` on `m` (must change it), emits both, and checks ONNX Runtime
// gives the same outputs; returns the result.
PassResult rewrite_and_compare(const PassInfo& info, Model& m, Options opts, const std::string& tag,
                               double max_abs = 1e-5, const std::string& inputs = "") {
  const fs::path ref = emit(m, tag + "_ref.onnx");
  PassResult r = run_with(info, m, std::move(opts), cpu_executor());
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  const fs::path out = emit(m, tag + "_out.onnx");
  Comparison c = ort_compare_with(ort_python("[preprocess]"), ref, out, inputs);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.999999);
  CHECK(c.max_abs <= max_abs);
  return r;
}

// The path of a fetched real model, or empty (with a warning).
fs::path real_model(const std::string& name) {
  const fs::path p = models_dir() / (name + ".onnx");
  if (!fs::exists(p)) {
    WARN("skipped: " << p.string() << " is missing; run `make models` (make test does) to fetch it");
    return {};
  }
  return p;
}

struct RealModel {
  const char* name;
  const char* inputs;  // ort_compare.py options
};
const RealModel kReal[] = {
    {"ppocrv4_det", "--glyphs --shape x=1,3,64,96 --samples 1"},
    {"ppocrv4_rec", "--glyphs --shape x=2,3,48,160 --samples 2"},
    {"ppocr_mobile_v2_cls", "--glyphs --shape x=4,3,48,192 --samples 2"},
    {"magika_standard_v3_3", "--batch 4 --int-range 0,257 --samples 2"},
};

}  // namespace

// ---------------------------------------------------------------- upgrade-opset

namespace {

// x -> Conv -> BN -> Clip(min/max attributes) -> Upsample (scales: an
// attribute at opset 7, an input from 9) -> Flatten -> Gemm -> Dropout ->
// Softmax(axis 1) -> Unsqueeze(axes attribute) -> y, at ai.onnx `opset`.
Model old_model(int64_t opset) {
  Model m = onnx_model("old" + std::to_string(opset), opset, opset >= 9 ? 4 : 3);
  Graph& g = *m.graph;
  Rng rng(3);
  g.inputs.push_back(f32_value("x", {1, 3, 4, 4}));
  g.outputs.push_back(f32_value("y", {1, 1, 10}));
  m.tensors.push_back(rand_tensor("conv.w", {4, 3, 3, 3}, rng, 0.5f));
  m.tensors.push_back(rand_tensor("conv.b", {4}, rng, 0.2f));
  Node c = make_node("conv", "Conv", {"x", "conv.w", "conv.b"}, {"c"});
  c.attributes.push_back(Attribute::of_ints("pads", {1, 1, 1, 1}));
  g.nodes.push_back(c);
  add_bn(m, "bn", 4, "c", "b", rng);
  Node clip = make_node("clip", "Clip", {"b"}, {"cl"});
  clip.attributes.push_back(Attribute::of_float("min", -0.5f));
  clip.attributes.push_back(Attribute::of_float("max", 0.75f));
  g.nodes.push_back(clip);
  Node up = make_node("up", "Upsample", {"cl"}, {"u"});
  if (opset >= 9) {
    m.tensors.push_back(q::make_f32_tensor("scales", {4}, {1, 1, 2, 2}));
    up.inputs.push_back("scales");
  } else {
    up.attributes.push_back(Attribute::of_floats("scales", {1, 1, 2, 2}));
  }
  up.attributes.push_back(Attribute::of_string("mode", "nearest"));
  g.nodes.push_back(up);
  g.nodes.push_back(make_node("flat", "Flatten", {"u"}, {"f"}));
  m.tensors.push_back(rand_tensor("fc.w", {10, 256}, rng, 0.1f));
  m.tensors.push_back(rand_tensor("fc.b", {10}, rng, 0.1f));
  Node fc = make_node("fc", "Gemm", {"f", "fc.w", "fc.b"}, {"h"});
  fc.attributes.push_back(Attribute::of_int("transB", 1));
  g.nodes.push_back(fc);
  g.nodes.push_back(make_node("drop", "Dropout", {"h"}, {"d"}));
  Node sm = make_node("sm", "Softmax", {"d"}, {"s"});
  sm.attributes.push_back(Attribute::of_int("axis", 1));
  g.nodes.push_back(sm);
  Node un = make_node("un", "Unsqueeze", {"s"}, {"y"});
  un.attributes.push_back(Attribute::of_ints("axes", {1}));
  g.nodes.push_back(un);
  if (opset < 9) {  // IR 3: initializers are graph inputs too
    for (const Tensor& t : m.tensors) g.inputs.push_back(f32_value(t.name, t.shape));
  }
  return m;
}

}  // namespace

TEST_CASE(
    "upgrade-opset: opset 7 and 9 models (Upsample, Clip, Softmax, Unsqueeze, Dropout) converted to 13 "
    "run "
    "the same in ONNX Runtime",
    "[preprocess][upgrade-opset]") {
  for (int64_t opset : {7, 9}) {
    INFO("opset " << opset);
    Model m = old_model(opset);
    PassResult r = rewrite_and_compare(passes::upgrade_opset_pass_info(), m, {},
                                       "upgrade" + std::to_string(opset), 1e-6);
    CHECK(m.graph->opset() == 13);
    CHECK(r.metrics.at("opset_before") == static_cast<double>(opset));
    CHECK(r.metrics.at("opset_after") == 13);
    // Attributes that became inputs on the way.
    const Node* u = find_op(*m.graph, "Unsqueeze");
    REQUIRE(u);
    CHECK(u->inputs.size() == 2);
    CHECK(find_op(*m.graph, "Upsample") == nullptr);
    CHECK(find_op(*m.graph, "Resize") != nullptr);
    const Node* cl = find_op(*m.graph, "Clip");
    REQUIRE(cl);
    CHECK(cl->inputs.size() == 3);
  }
}

TEST_CASE(
    "upgrade-opset: an opset newer than ONNX's library knows is a plan-time problem, and a newer model is "
    "left "
    "alone with a warning",
    "[preprocess][upgrade-opset]") {
  const PassInfo info = passes::upgrade_opset_pass_info();
  const int64_t known = onnxfmt::max_known_opset();
  CHECK(info.validate({{"opset", Value::of_int(known)}}).empty());
  if (known < 21) {
    auto problems = info.validate({{"opset", Value::of_int(21)}});
    REQUIRE(problems.size() == 1);
    CHECK(problems[0].option == "opset");
    CHECK_THAT(problems[0].message, Contains("converts up to opset " + std::to_string(known)));
  }
  Model m = conv_bn(13, true);
  PassResult r = run_pass(info, m, {{"opset", Value::of_int(11)}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK_FALSE(r.changed);
  REQUIRE(r.warnings.size() == 1);
  CHECK_THAT(r.warnings[0], Contains("already at least 11"));
  CHECK(m.graph->opset() == 13);
}

TEST_CASE("upgrade-opset: a Softmax on a non-last axis of a dynamic input is an error naming the node",
          "[preprocess][upgrade-opset]") {
  Model m = onnx_model("softmax", 12, 7);
  Graph& g = *m.graph;
  std::vector<Dim> d(3);
  d[0].param = "batch";
  d[1].value = 4;
  d[2].value = 5;
  g.inputs.push_back(ValueInfo{"x", ValueType::tensor(ElemType::F32, d), "", ""});
  g.outputs.push_back(ValueInfo{"y", ValueType::tensor(ElemType::F32, d), "", ""});
  Node sm = make_node("attn_softmax", "Softmax", {"x"}, {"y"});
  sm.attributes.push_back(Attribute::of_int("axis", 1));
  g.nodes.push_back(sm);
  Model copy = m;
  PassResult r = run_pass(passes::upgrade_opset_pass_info(), copy, {});
  CHECK_FALSE(r.status.ok);
  CHECK_FALSE(r.changed);
  CHECK_THAT(r.status.message, Contains("node 'attn_softmax' (Softmax, axis 1)") &&
                                   Contains("not the last axis of a rank-3 input with dynamic dimensions"));
  CHECK(copy.graph->opset() == 12);  // untouched
  // The last axis is the same at opset 13, whatever the other dimensions.
  g.nodes[0].attributes[0].i = 2;
  rewrite_and_compare(passes::upgrade_opset_pass_info(), m, {}, "softmax_last", 0);
  CHECK(m.graph->opset() == 13);
}

TEST_CASE(
    "upgrade-opset: the real PP-OCR models (opset 11/12) upgraded to 13 and to the newest opset run the "
    "same in ONNX Runtime",
    "[preprocess][upgrade-opset][real-models]") {
  const int64_t targets[] = {13, onnxfmt::max_known_opset()};
  for (const RealModel& rm : kReal) {
    if (std::string(rm.name) == "magika_standard_v3_3") continue;  // opset 15 already
    const fs::path p = real_model(rm.name);
    if (p.empty()) return;
    for (int64_t target : targets) {
      Model m = onnxfmt::import_onnx(p.string());
      const int64_t before = m.graph->opset();
      PassResult r = run_pass(passes::upgrade_opset_pass_info(), m, {{"opset", Value::of_int(target)}});
      INFO(rm.name << " to " << target << ": " << r.status.message);
      REQUIRE(r.status.ok);
      CHECK(r.changed);
      CHECK(m.graph->opset() == target);
      const fs::path out = emit(m, std::string(rm.name) + "_opset" + std::to_string(target) + ".onnx");
      Comparison c = ort_compare_with(ort_python("[real-models]"), p, out, rm.inputs);
      INFO(c.output);
      REQUIRE(c.rc == 0);
      CHECK(c.cosine >= 0.999999);
      CHECK(c.max_abs <= 1e-4);
      WARN(rm.name << ": opset " << before << " -> " << target << ", cosine " << c.cosine
                   << ", max abs error " << c.max_abs);
    }
  }
}

TEST_CASE("upgrade-opset: PP-OCRv4 rec (opset 12) cannot get per-axis weights without it, and can after it",
          "[preprocess][upgrade-opset][real-models]") {
  const fs::path p = real_model("ppocrv4_rec");
  if (p.empty()) return;
  const PassInfo qw = passes::quantize_weights_pass_info();
  const Options w8 = {{"bits", Value::of_int(8)}};
  Model plain = onnxfmt::import_onnx(p.string());
  PassResult refused = run_pass(qw, plain, w8);
  CHECK_FALSE(refused.status.ok);
  CHECK_THAT(refused.status.message, Contains("{ pass = \"upgrade-opset\", opset = 13 }"));

  Model m = onnxfmt::import_onnx(p.string());
  REQUIRE(run_pass(passes::upgrade_opset_pass_info(), m, {}).status.ok);
  PassResult r = run_pass(qw, m, w8);
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.metrics.at("quantized_weights") == 9);
  const fs::path out = emit(m, "rec_upgraded_w8.onnx");
  Comparison c = ort_compare_with(ort_python("[real-models]"), p, out, kReal[1].inputs);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.999);
  WARN("ppocrv4_rec upgraded to 13, int8 per-axis weights: cosine " << c.cosine << ", argmax agreement "
                                                                    << c.argmax_agreement);
}

// ---------------------------------------------------------------- infer-shapes

TEST_CASE("infer-shapes: adds value_info for every intermediate and reports the values left unknown",
          "[preprocess][infer-shapes]") {
  Model m = conv_bn(13, true);
  PassResult r = run_pass(passes::infer_shapes_pass_info(), m, {});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  CHECK(r.metrics.at("values_unknown") == 0);
  CHECK(r.metrics.at("value_infos_added") == 2);  // c and b (y is a graph output)
  const ValueInfo* c = m.graph->find_value_info("c");
  REQUIRE(c);
  REQUIRE(c->type.shape);
  CHECK(c->type.shape->at(1).value == 4);
  // Again: nothing to add, a warning.
  PassResult again = run_pass(passes::infer_shapes_pass_info(), m, {});
  CHECK_FALSE(again.changed);
  CHECK(again.warnings.size() == 1);

  // A custom-domain op ONNX cannot type: its output stays unknown, reported
  // (and an error with require_all).
  Model u = conv_bn(13, true);
  u.graph->nodes.back().op_type = "Mystery";
  u.graph->nodes.back().domain = "com.example";
  u.graph->model.opset_imports.push_back({"com.example", 1});
  u.graph->outputs[0].type = ValueType{};
  PassResult ru = run_pass(passes::infer_shapes_pass_info(), u, {});
  REQUIRE(ru.status.ok);
  CHECK(ru.metrics.at("values_unknown") == 1);
  CHECK_THAT(ru.notes.at(0), Contains("1 stay unknown (first: 'y')"));
  Model u2 = conv_bn(13, true);
  u2.graph->nodes.back().op_type = "Mystery";
  u2.graph->nodes.back().domain = "com.example";
  u2.graph->model.opset_imports.push_back({"com.example", 1});
  u2.graph->outputs[0].type = ValueType{};
  PassResult strict = run_pass(passes::infer_shapes_pass_info(), u2, {{"require_all", Value::of_bool(true)}});
  CHECK_FALSE(strict.status.ok);
  CHECK_THAT(strict.status.message, Contains("'y'"));
}

TEST_CASE("infer-shapes: the real models get shapes for their values and still run the same",
          "[preprocess][infer-shapes][real-models]") {
  for (const RealModel& rm : kReal) {
    const fs::path p = real_model(rm.name);
    if (p.empty()) return;
    Model m = onnxfmt::import_onnx(p.string());
    PassResult r = run_pass(passes::infer_shapes_pass_info(), m, {});
    INFO(rm.name << ": " << r.status.message);
    REQUIRE(r.status.ok);
    CHECK(r.metrics.at("values_with_shape") > 0);
    WARN(rm.name << ": " << r.notes.at(0));
    const fs::path out = emit(m, std::string(rm.name) + "_shapes.onnx");
    Comparison c = ort_compare_with(ort_python("[real-models]"), p, out, rm.inputs);
    INFO(c.output);
    REQUIRE(c.rc == 0);
    // value_info lets ONNX Runtime choose other fusions: float rounding only.
    CHECK(c.cosine >= 0.999999);
    CHECK(c.max_abs <= 1e-5);
  }
}

// ---------------------------------------------------------------- fold-batchnorm

TEST_CASE(
    "fold-batchnorm: into Conv (with and without bias), ConvTranspose with groups or an Add of its bias, "
    "Gemm (transB, alpha, beta, with and without C)",
    "[preprocess][fold-batchnorm]") {
  const PassInfo info = passes::fold_batchnorm_pass_info();
  struct Case {
    std::string tag;
    Model m;
  };
  std::vector<Case> cases;
  cases.push_back({"conv_bias", conv_bn(13, true)});
  cases.push_back({"conv_nobias", conv_bn(9, false)});
  cases.push_back({"convtranspose", convtranspose_bn()});
  cases.push_back({"convtranspose_add", convtranspose_add_bn()});
  cases.push_back({"gemm_transb", gemm_bn(true, true)});
  cases.push_back({"gemm_noc", gemm_bn(false, false)});
  for (Case& c : cases) {
    INFO(c.tag);
    PassResult r = rewrite_and_compare(info, c.m, {}, "bn_" + c.tag, 1e-5);
    CHECK(r.metrics.at("batchnorms_folded") == 1);
    CHECK(find_op(*c.m.graph, "BatchNormalization") == nullptr);
    CHECK(c.m.tensor("bn.scale") == nullptr);  // parameters dropped
    CHECK(find_op(*c.m.graph, "Add") == nullptr);
  }
}

TEST_CASE(
    "fold-batchnorm: left alone with a reason when the input has other readers, parameters are not "
    "constant, or it follows another op",
    "[preprocess][fold-batchnorm]") {
  const PassInfo info = passes::fold_batchnorm_pass_info();
  {
    Model m = conv_bn(13, true);
    m.graph->outputs.push_back(f32_value("c", {1, 4, 8, 8}));  // the Conv's output is read elsewhere too
    PassResult r = run_pass(info, m, {});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    REQUIRE(skip_of(r, "node 'bn'"));
    CHECK_THAT(skip_of(r, "node 'bn'")->reason, Contains("other readers"));
    CHECK_THAT(r.warnings.at(0), Contains("no BatchNormalization could be folded"));
  }
  {
    Model m = conv_bn(13, true);
    m.graph->inputs.push_back(f32_value("bn.mean", {4}));  // overridable: not a constant
    PassResult r = run_pass(info, m, {});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    CHECK_THAT(skip_of(r, "node 'bn'")->reason, Contains("'bn.mean' is not a constant initializer"));
  }
  {
    Model m = conv_bn(13, true);
    m.graph->nodes[0].op_type = "Relu";  // BN after a Relu (inputs trimmed)
    m.graph->nodes[0].inputs.resize(1);
    m.graph->nodes[0].attributes.clear();
    m.graph->outputs[0] = f32_value("y", {1, 3, 8, 8});
    PassResult r = run_pass(info, m, {});
    REQUIRE(r.status.ok);
    CHECK_THAT(skip_of(r, "node 'bn'")->reason, Contains("comes from Relu"));
  }
  {
    Model m = gemm_bn(true, true);
    PassResult r = run_pass(info, m, {{"into", list_of({"Conv"})}});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    CHECK_THAT(skip_of(r, "node 'bn'")->reason, Contains("not among the option 'into'"));
  }
}

// ---------------------------------------------------------------- eliminate

TEST_CASE(
    "eliminate: Identity chains, inference Dropout, no-op Reshape, Transpose and Cast go, graph outputs keep "
    "their names, the others stay with a reason",
    "[preprocess][eliminate]") {
  Model m = onnx_model("elim", 13, 7);
  Graph& g = *m.graph;
  Rng rng(5);
  std::vector<Dim> xd(3);
  xd[0].param = "batch";
  xd[1].value = 4;
  xd[2].value = 6;
  g.inputs.push_back(ValueInfo{"x", ValueType::tensor(ElemType::F32, xd), "", ""});
  g.outputs.push_back(ValueInfo{"y", ValueType::tensor(ElemType::F32, xd), "", ""});
  g.outputs.push_back(ValueInfo{"z", ValueType{}, "", ""});
  g.nodes.push_back(make_node("id1", "Identity", {"x"}, {"a1"}));
  g.nodes.push_back(make_node("relu", "Relu", {"a1"}, {"r"}));
  g.nodes.push_back(make_node("id2", "Identity", {"r"}, {"a2"}));
  g.nodes.push_back(make_node("id3", "Identity", {"a2"}, {"a3"}));
  g.nodes.push_back(make_node("drop", "Dropout", {"a3"}, {"d"}));
  m.tensors.push_back(i64_tensor("same_shape", {0, 4, -1}));
  g.nodes.push_back(make_node("reshape", "Reshape", {"d", "same_shape"}, {"rs"}));
  m.tensors.push_back(i64_tensor("other_shape", {0, 24}));
  g.nodes.push_back(make_node("reshape2", "Reshape", {"rs", "other_shape"}, {"rs2"}));
  m.tensors.push_back(i64_tensor("back_shape", {0, 4, 6}));
  g.nodes.push_back(make_node("reshape3", "Reshape", {"rs2", "back_shape"}, {"rs3"}));
  Node t = make_node("tr", "Transpose", {"rs3"}, {"t"});
  t.attributes.push_back(Attribute::of_ints("perm", {0, 1, 2}));
  g.nodes.push_back(t);
  Node t2 = make_node("tr2", "Transpose", {"t"}, {"t2"});
  t2.attributes.push_back(Attribute::of_ints("perm", {0, 2, 1}));
  g.nodes.push_back(t2);
  Node t3 = make_node("tr3", "Transpose", {"t2"}, {"t3"});
  t3.attributes.push_back(Attribute::of_ints("perm", {0, 2, 1}));
  g.nodes.push_back(t3);
  Node cast = make_node("cast", "Cast", {"t3"}, {"cs"});
  cast.attributes.push_back(Attribute::of_int("to", 1));  // float -> float
  g.nodes.push_back(cast);
  Node cast16 = make_node("cast16", "Cast", {"cs"}, {"c16"});
  cast16.attributes.push_back(Attribute::of_int("to", 10));  // float -> float16: stays
  g.nodes.push_back(cast16);
  Node back = make_node("cast32", "Cast", {"c16"}, {"c32"});
  back.attributes.push_back(Attribute::of_int("to", 1));
  g.nodes.push_back(back);
  g.nodes.push_back(make_node("out", "Identity", {"c32"}, {"y"}));  // a graph output: the Cast takes its name
  g.nodes.push_back(make_node("zout", "Identity", {"x"}, {"z"}));   // output of an input: stays

  // No value_info: eliminate infers the types and shapes it needs.
  PassResult r = rewrite_and_compare(passes::eliminate_pass_info(), m, {}, "eliminate", 0);
  CHECK(r.metrics.at("removed_Identity") == 4);
  CHECK(r.metrics.at("removed_Dropout") == 1);
  CHECK(r.metrics.at("removed_Reshape") == 1);  // same_shape ([0, 4, -1] of [batch, 4, 6])
  CHECK(r.metrics.at("removed_Transpose") == 1);
  CHECK(r.metrics.at("removed_Cast") == 1);
  CHECK(m.graph->is_output("y"));
  CHECK(m.graph->producer("y") >= 0);
  CHECK(m.graph->nodes[static_cast<size_t>(m.graph->producer("y"))].op_type == "Cast");
  CHECK(m.tensor("same_shape") == nullptr);
  REQUIRE(skip_of(r, "node 'zout'"));
  CHECK_THAT(skip_of(r, "node 'zout'")->reason, Contains("graph input"));
  CHECK_THAT(skip_of(r, "node 'reshape2'")->reason, Contains("changes the rank"));
  CHECK_THAT(skip_of(r, "node 'tr2'")->reason, Contains("not the identity"));
  CHECK_THAT(skip_of(r, "node 'cast16'")->reason, Contains("changes the element type"));

  Model none = conv_bn(13, true);
  PassResult r2 = run_pass(passes::eliminate_pass_info(), none, {});
  REQUIRE(r2.status.ok);
  CHECK_FALSE(r2.changed);
  CHECK(r2.warnings.size() == 1);
}

TEST_CASE("eliminate: a Dropout whose mask is read, or in training mode, stays", "[preprocess][eliminate]") {
  Model m = onnx_model("drop", 13, 7);
  Graph& g = *m.graph;
  g.inputs.push_back(f32_value("x", {2, 3}));
  g.outputs.push_back(f32_value("y", {2, 3}));
  g.outputs.push_back(ValueInfo{"mask", ValueType{}, "", ""});
  g.outputs.push_back(f32_value("w", {2, 3}));
  g.nodes.push_back(make_node("d1", "Dropout", {"x"}, {"y", "mask"}));
  m.tensors.push_back(q::make_tensor("train", {}, ElemType::Bool, {1}));
  m.tensors.push_back(q::make_f32_tensor("ratio", {}, {0.5f}));
  g.nodes.push_back(make_node("d2", "Dropout", {"x", "ratio", "train"}, {"w"}));
  PassResult r = run_pass(passes::eliminate_pass_info(), m, {});
  REQUIRE(r.status.ok);
  CHECK_FALSE(r.changed);
  CHECK_THAT(skip_of(r, "node 'd1'")->reason, Contains("mask output is used"));
  CHECK_THAT(skip_of(r, "node 'd2'")->reason, Contains("training_mode is not a constant false"));
}

// ---------------------------------------------------------------- fold-constants

namespace {

// The shape computation Paddle and PyTorch exports are full of, on
// constants: W (a Constant node) -> Transpose -> MatMul weight; a shape
// tensor from Shape -> Gather -> Unsqueeze -> Concat -> Reshape's shape.
Model constant_chains() {
  Model m = onnx_model("consts", 13, 7);
  Graph& g = *m.graph;
  Rng rng(11);
  std::vector<Dim> xd(2);
  xd[0].param = "batch";
  xd[1].value = 8;
  g.inputs.push_back(ValueInfo{"x", ValueType::tensor(ElemType::F32, xd), "", ""});
  g.outputs.push_back(ValueInfo{"y", ValueType{}, "", ""});
  Node wc = make_node("w_const", "Constant", {}, {"w_t"});
  Tensor w = rand_tensor("", {6, 8}, rng, 0.5f);
  wc.attributes.push_back(Attribute::of_tensor("value", w));
  g.nodes.push_back(wc);
  g.nodes.push_back(make_node("w_transpose", "Transpose", {"w_t"}, {"w"}));
  g.nodes.push_back(make_node("mm", "MatMul", {"x", "w"}, {"h"}));  // [batch, 6]
  g.nodes.push_back(make_node("shape", "Shape", {"w"}, {"ws"}));    // [8, 6]
  m.tensors.push_back(i64_tensor("idx", {1}));
  Node gather = make_node("gather", "Gather", {"ws", "idx"}, {"six"});  // [6]
  g.nodes.push_back(gather);
  m.tensors.push_back(i64_tensor("minus_one", {-1}));
  m.tensors.push_back(i64_tensor("three", {3}));
  Node div = make_node("div", "Div", {"six", "three"}, {"two"});  // [2]
  g.nodes.push_back(div);
  Node cat = make_node("cat", "Concat", {"minus_one", "two"}, {"target"});
  cat.attributes.push_back(Attribute::of_int("axis", 0));
  g.nodes.push_back(cat);
  g.nodes.push_back(make_node("reshape", "Reshape", {"h", "target"}, {"y"}));  // [batch * 3, 2]
  return m;
}

}  // namespace

TEST_CASE(
    "fold-constants: constant chains (Transpose of a Constant weight, Shape -> Gather -> Div -> Concat) "
    "become initializers and ONNX Runtime gives the same outputs",
    "[preprocess][fold-constants]") {
  Model m = constant_chains();
  PassResult r = rewrite_and_compare(passes::fold_constants_pass_info(), m, {}, "fold", 0);
  CHECK(r.metrics.at("nodes_folded") == 5);
  CHECK(r.metrics.at("constants_lifted") == 1);
  CHECK(r.metrics.at("initializers_added") == 2);  // w and target
  const Graph& g = *m.graph;
  CHECK(g.nodes.size() == 2);  // MatMul, Reshape
  REQUIRE(m.tensor("target"));
  CHECK(bytes_of(*m.tensor("target")).size() == 16);
  const std::vector<int64_t> want = {-1, 2};
  CHECK(std::memcmp(bytes_of(*m.tensor("target")).data(), want.data(), 16) == 0);
  CHECK(m.tensor("w_t") == nullptr);  // read only by the folded Transpose
  CHECK(m.tensor("idx") == nullptr);
}

TEST_CASE(
    "fold-constants: nondeterministic ops, outputs above max_bytes and graph outputs stay, with reasons, and "
    "no "
    "executor is an error",
    "[preprocess][fold-constants]") {
  const PassInfo info = passes::fold_constants_pass_info();
  Model m = onnx_model("stay", 13, 7);
  Graph& g = *m.graph;
  g.inputs.push_back(f32_value("x", {4, 4}));
  g.outputs.push_back(f32_value("y", {4, 4}));
  g.outputs.push_back(ValueInfo{"big_out", ValueType{}, "", ""});
  m.tensors.push_back(i64_tensor("shape44", {4, 4}));
  Node rnd = make_node("rnd", "RandomUniformLike", {"x"}, {"unused"});
  g.nodes.push_back(rnd);
  m.tensors.push_back(q::make_f32_tensor("c", {4, 4}, std::vector<float>(16, 0.5f)));
  g.nodes.push_back(make_node("bern", "Bernoulli", {"c"}, {"b"}));
  m.tensors.push_back(i64_tensor("huge", {4096, 4096}));
  g.nodes.push_back(make_node("big", "ConstantOfShape", {"huge"}, {"big_out"}));
  g.nodes.push_back(make_node("add", "Add", {"x", "b"}, {"y"}));
  m.tensors.push_back(i64_tensor("shape_small", {4, 4}));
  g.nodes.push_back(make_node("cos", "ConstantOfShape", {"shape_small"}, {"zeros"}));
  g.nodes.push_back(make_node("add2", "Add", {"y", "zeros"}, {"unused2"}));

  Model copy = m;
  PassResult r = run_with(info, copy, {{"max_bytes", Value::of_int(1024)}}, cpu_executor());
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK_THAT(skip_of(r, "node 'bern'")->reason, Contains("nondeterministic"));
  CHECK_THAT(skip_of(r, "node 'big'")->reason, Contains("graph output"));
  CHECK(r.metrics.at("nodes_folded") == 1);  // the small ConstantOfShape

  // Not a graph output: the size cap speaks.
  Model big = onnx_model("big", 13, 7);
  big.graph->inputs.push_back(f32_value("x", {1}));
  big.graph->outputs.push_back(ValueInfo{"y", ValueType{}, "", ""});
  big.tensors.push_back(i64_tensor("huge", {4096, 4096}));
  big.graph->nodes.push_back(make_node("big", "ConstantOfShape", {"huge"}, {"z"}));
  big.graph->nodes.push_back(make_node("add", "Add", {"x", "z"}, {"y"}));
  PassResult rb = run_with(info, big, {{"max_bytes", Value::of_int(1 << 20)}}, cpu_executor());
  REQUIRE(rb.status.ok);
  CHECK_FALSE(rb.changed);
  REQUIRE(skip_of(rb, "node 'big'"));
  CHECK_THAT(skip_of(rb, "node 'big'")->reason, Contains("would take 64 MiB, more than max_bytes (1 MiB)"));

  Model none = constant_chains();
  PassResult rn = run_with(info, none, {}, nullptr);
  CHECK_FALSE(rn.status.ok);
  CHECK_THAT(rn.status.message, Contains("none is registered"));
}

// ---------------------------------------------------------------- real models

TEST_CASE(
    "real models: fold-batchnorm, eliminate and fold-constants on PP-OCR and Magika, and ONNX Runtime agrees",
    "[preprocess][real-models]") {
  for (const RealModel& rm : kReal) {
    const fs::path p = real_model(rm.name);
    if (p.empty()) return;
    Model m = onnxfmt::import_onnx(p.string());
    std::string summary;
    for (const PassInfo& info : {passes::fold_constants_pass_info(), passes::fold_batchnorm_pass_info(),
                                 passes::eliminate_pass_info()}) {
      PassResult r = run_with(info, m, {}, cpu_executor());
      INFO(rm.name << " " << info.name << ": " << r.status.message);
      REQUIRE(r.status.ok);
      for (const std::string& n : r.notes) summary += "\n  " + info.name + ": " + n;
      if (!r.skipped.empty())
        summary += "\n  " + info.name + ": " + std::to_string(r.skipped.size()) +
                   " skipped (first: " + r.skipped[0].what + ": " + r.skipped[0].reason + ")";
    }
    const fs::path out = emit(m, std::string(rm.name) + "_pre.onnx");
    Comparison c = ort_compare_with(ort_python("[real-models]"), p, out, rm.inputs);
    INFO(c.output);
    REQUIRE(c.rc == 0);
    CHECK(c.cosine >= 0.99999);
    WARN(rm.name << ": cosine " << c.cosine << ", max abs error " << c.max_abs << summary);
  }
}

// ---------------------------------------------------------------- a manifest

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_in(const fs::path& dir, const std::string& args, std::string& out) {
  const fs::path o = dir / ".out";
  const std::string cmd =
      "cd '" + dir.string() + "' && '" + QFORGE_BIN + "' " + args + " >'" + o.string() + "' 2>&1";
  const int st = std::system(cmd.c_str());
  out = slurp(o);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

}  // namespace

TEST_CASE(
    "a manifest pipeline upgrade-opset -> fold-batchnorm -> quantize-dynamic per channel: cached and "
    "--no-cache artifacts are byte-identical, and ONNX Runtime runs them",
    "[preprocess][cli]") {
  const fs::path dir = scratch() / "manifest";
  fs::create_directories(dir);
  Model m = conv_bn(11, true);
  // A MatMul for quantize-dynamic after the folded Conv.
  Graph& g = *m.graph;
  g.nodes.back().outputs[0] = "r";
  g.nodes.push_back(make_node("flat", "Flatten", {"r"}, {"f"}));
  Rng rng(12);
  m.tensors.push_back(rand_tensor("fc.w", {256, 10}, rng, 0.1f));
  g.nodes.push_back(make_node("fc", "MatMul", {"f", "fc.w"}, {"y"}));
  g.outputs[0] = f32_value("y", {1, 10});
  const fs::path model = emit_to(dir / "model.onnx", m);
  std::ofstream(dir / "qforge.toml") << "[build]\noutput = \"dist\"\ncache = \".qforge/cache\"\n\n"
                                        "[models.m]\npath = \"model.onnx\"\n\n"
                                        "[[targets]]\nname = \"m-int8\"\nmodel = \"m\"\n"
                                        "pipeline = [ { pass = \"upgrade-opset\", opset = 13 }, "
                                        "{ pass = \"fold-batchnorm\" }, "
                                        "{ pass = \"quantize-dynamic\", per_channel = true } ]\n";
  std::string out;
  REQUIRE(run_in(dir, "build", out) == 0);
  INFO(out);
  const fs::path artifact = dir / "dist/m-int8.onnx";
  REQUIRE(fs::exists(artifact));
  const std::string first = slurp(artifact);
  fs::remove_all(dir / "dist");
  REQUIRE(run_in(dir, "build", out) == 0);
  CHECK_THAT(out, Contains("cached"));
  CHECK(slurp(artifact) == first);
  REQUIRE(run_in(dir, "build --no-cache", out) == 0);
  CHECK(slurp(artifact) == first);
  Model built = onnxfmt::import_onnx(artifact.string());
  CHECK(built.graph->opset() >= 13);
  CHECK(find_op(*built.graph, "BatchNormalization") == nullptr);
  Comparison c = ort_compare_with(ort_python("[preprocess]"), model, artifact);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.999);
}
