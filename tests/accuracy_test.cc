// Accuracy beyond round-to-nearest (passes/quantize-static/accuracy.h,
// passes/common/equalize.h): calibrate's per-channel statistics; MSE weight
// clipping lowers the weight error; cross-layer equalization evens out the
// channel ranges and leaves the float model's outputs unchanged in ONNX
// Runtime; bias correction brings the mean output error toward zero; a build
// with the new options is byte-identical with and without the cache. The
// on/off measurements on the real models are the [large] test at the end,
// run by hand (docs/manifest.md, "Accuracy options of `quantize-static`").
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "accuracy.h"
#include "collector.h"
#include "onnx_format.h"
#include "onnx_test_util.h"
#include "preprocess.h"
#include "qforge/dataset.h"
#include "qforge/executor.h"
#include "qforge/plugin_host.h"
#include "qforge/registry.h"
#include "range_table.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace qforge;
using namespace qforge::testutil;
namespace acc = qforge::passes::accuracy;

Registry& registry() {
  static Registry reg;
  static PluginHost host(reg);
  static bool once = (register_builtins(host), true);
  (void)once;
  return reg;
}

const PassInfo& pass_info(const std::string& name) {
  const PassInfo* p = registry().pass(name);
  REQUIRE(p);
  return *p;
}

Options with_defaults(const PassInfo& info, Options o) {
  for (const OptionSpec& s : info.options)
    if (!o.count(s.name) && !s.default_value.is_null()) o[s.name] = s.default_value;
  return o;
}

Options opts_of(std::map<std::string, Value> kv) {
  Options o;
  for (auto& [k, v] : kv) o[k] = v;
  return o;
}

// Inputs (DIR/data/s<i>.npz) and ONNX Runtime's outputs (DIR/ref) for `model`.
void ort_reference(const fs::path& model, const fs::path& dir, const std::string& args) {
  int status = 0;
  const std::string cmd = test::shell_quote(ort_python("[accuracy]")) + " " +
                          test::shell_quote((source_dir() / "tests/tools/ort_reference.py").string()) + " " +
                          test::shell_quote(model.string()) + " " + test::shell_quote(dir.string()) + " " +
                          args + " 2>&1";
  const std::string out = test::run_capture(cmd, status);
  INFO(cmd << "\n" << out);
  REQUIRE(status == 0);
}

std::shared_ptr<const Table> calibrate(Model& m, const fs::path& data, size_t samples = 0) {
  Dataset ds = dataset_from_dir(data.string());
  ds.name = "cal";
  const PassInfo& info = pass_info("calibrate");
  Options o = with_defaults(info, {{"dataset", Value::of_string("cal")}});
  if (samples) o["samples"] = Value::of_int(static_cast<int64_t>(samples));
  NullProgress progress;
  PassContext ctx{
      o, nullptr, "t", data.string(), 2, progress, {{"cal", &ds}}, nullptr, {}, registry().executor("cpu")};
  PassResult r = info.factory()->run(m, ctx);
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  REQUIRE(r.table);
  return r.table;
}

PassResult run_with_table(const std::string& pass, Model& m, std::shared_ptr<const Table> table, Options o) {
  const PassInfo& info = pass_info(pass);
  o = with_defaults(info, std::move(o));
  NullProgress progress;
  PassContext ctx{
      o, nullptr, "t", "", 2, progress, {}, nullptr, {std::move(table)}, registry().executor("cpu")};
  return info.factory()->run(m, ctx);
}

ValueInfo nchw(const std::string& name, std::vector<int64_t> dims) {
  ValueInfo v;
  v.name = name;
  std::vector<Dim> d(dims.size() + 1);
  d[0].param = "batch";
  for (size_t k = 0; k < dims.size(); ++k) d[k + 1].value = dims[k];
  v.type = ValueType::tensor(ElemType::F32, d);
  return v;
}

// A depthwise-separable block with badly balanced channels, as folded
// BatchNormalization leaves them:
//   x[b, 4, 12, 12] -> conv1 (1x1, 4 -> 8) -> Relu -> conv2 (3x3 depthwise)
//   -> Relu -> conv3 (1x1, 8 -> 6) -> GlobalAveragePool -> Flatten -> y[b, 6]
// Output channel c of conv1 is scaled by f_c (0.05 to 20) and conv2's
// weights for it by 1 / f_c; the same between conv2 and conv3 with g_c.
Model dwsep_model() {
  Model m = onnx_model("dwsep", 13, 7);
  Graph& g = *m.graph;
  g.inputs.push_back(nchw("x", {4, 12, 12}));
  g.outputs.push_back(nchw("y", {6}));
  Rng rng(3);
  std::vector<float> w1 = quant::read_f32(rand_tensor("w1", {8, 4, 1, 1}, rng, 0.5f));
  std::vector<float> b1 = quant::read_f32(rand_tensor("b1", {8}, rng, 0.1f));
  std::vector<float> w2 = quant::read_f32(rand_tensor("w2", {8, 1, 3, 3}, rng, 0.5f));
  std::vector<float> b2 = quant::read_f32(rand_tensor("b2", {8}, rng, 0.1f));
  std::vector<float> w3 = quant::read_f32(rand_tensor("w3", {6, 8, 1, 1}, rng, 0.5f));
  std::vector<float> b3 = quant::read_f32(rand_tensor("b3", {6}, rng, 0.1f));
  for (int c = 0; c < 8; ++c) {
    const float f = std::exp(std::log(0.05f) + (std::log(20.0f) - std::log(0.05f)) * c / 7.0f);
    const float h = std::exp(std::log(0.05f) + (std::log(20.0f) - std::log(0.05f)) * ((c * 3) % 8) / 7.0f);
    for (int k = 0; k < 4; ++k) w1[c * 4 + k] *= f;
    b1[c] *= f;
    for (int k = 0; k < 9; ++k) w2[c * 9 + k] = w2[c * 9 + k] / f * h;
    b2[c] *= h;
    for (int o = 0; o < 6; ++o) w3[o * 8 + c] /= h;
  }
  m.tensors.push_back(quant::make_f32_tensor("w1", {8, 4, 1, 1}, w1));
  m.tensors.push_back(quant::make_f32_tensor("b1", {8}, b1));
  m.tensors.push_back(quant::make_f32_tensor("w2", {8, 1, 3, 3}, w2));
  m.tensors.push_back(quant::make_f32_tensor("b2", {8}, b2));
  m.tensors.push_back(quant::make_f32_tensor("w3", {6, 8, 1, 1}, w3));
  m.tensors.push_back(quant::make_f32_tensor("b3", {6}, b3));
  g.nodes.push_back(make_node("conv1", "Conv", {"x", "w1", "b1"}, {"c1"}));
  g.nodes.push_back(make_node("relu1", "Relu", {"c1"}, {"r1"}));
  Node dw = make_node("conv2", "Conv", {"r1", "w2", "b2"}, {"c2"});
  dw.attributes.push_back(Attribute::of_int("group", 8));
  dw.attributes.push_back(Attribute::of_ints("pads", {1, 1, 1, 1}));
  g.nodes.push_back(dw);
  g.nodes.push_back(make_node("relu2", "Relu", {"c2"}, {"r2"}));
  g.nodes.push_back(make_node("conv3", "Conv", {"r2", "w3", "b3"}, {"c3"}));
  g.nodes.push_back(make_node("pool", "GlobalAveragePool", {"c3"}, {"p"}));
  Node flat = make_node("flatten", "Flatten", {"p"}, {"y"});
  flat.attributes.push_back(Attribute::of_int("axis", 1));
  g.nodes.push_back(flat);
  return m;
}

constexpr const char* kDwsepArgs = "--batch 2 --samples 4";

// Largest |w| per output channel (axis 0) and per input channel (axis 1,
// group-aware) of a Conv weight.
std::vector<double> out_absmax(const Tensor& t) {
  const std::vector<float> v = quant::read_f32(t);
  const size_t per = v.size() / static_cast<size_t>(t.shape[0]);
  std::vector<double> r(static_cast<size_t>(t.shape[0]), 0.0);
  for (size_t e = 0; e < v.size(); ++e) r[e / per] = std::max(r[e / per], double(std::fabs(v[e])));
  return r;
}
std::vector<double> in_absmax(const Tensor& t, int64_t group) {
  const std::vector<float> v = quant::read_f32(t);
  const int64_t M = t.shape[0], Cg = t.shape[1];
  const size_t inner = v.size() / static_cast<size_t>(M * Cg);
  std::vector<double> r(static_cast<size_t>(Cg * group), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < Cg; ++c)
      for (size_t k = 0; k < inner; ++k) {
        const size_t ch = static_cast<size_t>((m / (M / group)) * Cg + c);
        r[ch] = std::max(r[ch], double(std::fabs(v[static_cast<size_t>(m * Cg + c) * inner + k])));
      }
  return r;
}

const Tensor& weight_of(const Model& m, const std::string& node) {
  for (const Node& n : m.graph->nodes)
    if (n.name == node) return *m.tensor(n.inputs[1]);
  FAIL("no node " << node);
  throw;
}

// Calibrates `fm` on samples (seed 7), quantizes it with `opts` and returns
// the cosine against the float model in ONNX Runtime on other samples (seed 0).
double static_cosine(const Model& fm, const std::string& label, const std::string& args, Options opts,
                     const std::string& pre_pass = "", PassResult* result = nullptr) {
  test::TempDir dir("qforge_accuracy_");
  const fs::path ref = emit_to(dir.path / "ref.onnx", fm);
  ort_reference(ref, dir.path / "cal", args + " --seed 7");
  Model m = fm;
  if (!pre_pass.empty()) {
    PassResult pr = run_pass(pass_info(pre_pass), m, {});
    REQUIRE(pr.status.ok);
  }
  auto table = calibrate(m, dir.path / "cal/data");
  PassResult r = run_with_table("quantize-static", m, table, std::move(opts));
  INFO(label << ": " << r.status.message);
  REQUIRE(r.status.ok);
  REQUIRE(r.changed);
  const fs::path cand = emit_to(dir.path / "q.onnx", m);
  const Comparison c = ort_compare_with(ort_python("[accuracy]"), ref, cand, args);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  std::cout << "accuracy " << label << ": cosine vs float in ONNX Runtime " << c.cosine << "\n";
  if (result) *result = std::move(r);
  return c.cosine;
}

}  // namespace

TEST_CASE("calibrate: per-channel min, max and mean along axis 1 or the last axis, in fixed memory",
          "[calibrate][accuracy]") {
  calib::ChannelCollector c(1);
  // [2, 3, 2]: channel k holds k * 10 + {0, 1} in batch 0 and {-1, 5} in batch 1.
  const float a[] = {0, 1, 10, 11, 20, 21, -1, 5, -1, 5, -1, 5};
  c.add(a, {2, 3, 2});
  REQUIRE(c.valid());
  quant::ChannelStats s = c.stats();
  CHECK(s.axis == 1);
  CHECK(s.min == std::vector<double>{-1, -1, -1});
  CHECK(s.max == std::vector<double>{5, 11, 21});
  CHECK(s.mean == std::vector<double>{1.25, 6.25, 11.25});
  calib::ChannelCollector last(-1);
  last.add(a, {2, 3, 2});
  CHECK(last.stats().mean == std::vector<double>{(0 + 10 + 20 - 3) / 6.0, (1 + 11 + 21 + 15) / 6.0});
  // A different channel count later (a sequence axis) turns the statistics off.
  calib::ChannelCollector seq(1);
  seq.add(a, {1, 6, 2});
  seq.add(a, {1, 4, 3});
  CHECK_FALSE(seq.valid());

  SECTION("the calibrate pass writes them for Conv and MatMul inputs; the table round-trips") {
    test::TempDir dir("qforge_accuracy_cal_");
    Model m = dwsep_model();
    ort_reference(emit_to(dir.path / "m.onnx", m), dir.path / "cal", kDwsepArgs);
    auto table = calibrate(m, dir.path / "cal/data");
    const quant::RangeTable t = quant::RangeTable::from_table(*table, "t");
    const quant::ChannelStats* r1 = t.channel_stats("r1");
    REQUIRE(r1);
    CHECK(r1->axis == 1);
    CHECK(r1->channels() == 8);
    for (size_t k = 0; k < 8; ++k) {
      CHECK(r1->min[k] >= 0);  // after a Relu
      CHECK(r1->mean[k] <= r1->max[k]);
    }
    CHECK(t.channel_stats("x"));
    CHECK_FALSE(t.channel_stats("y"));  // Flatten's output: nobody needs it
    const quant::RangeTable back = quant::RangeTable::from_table(t.to_table(), "again");
    CHECK(back.channel_stats("r1")->mean == r1->mean);
    CHECK(t.to_table().to_bytes() == back.to_table().to_bytes());

    Model mlp = onnxfmt::tiny_mlp_model();
    ort_reference(emit_to(dir.path / "mlp.onnx", mlp), dir.path / "mcal", "--batch 4 --samples 2");
    const quant::RangeTable mt = quant::RangeTable::from_table(*calibrate(mlp, dir.path / "mcal/data"), "t");
    REQUIRE(mt.channel_stats("x"));
    CHECK(mt.channel_stats("x")->axis == -1);  // read by a MatMul: its K axis
    CHECK(mt.channel_stats("x")->channels() == 16);
  }
}

TEST_CASE("weight_clip = mse: per channel, the clip with the least squared error, never worse than minmax",
          "[quantize-static][accuracy]") {
  // Gaussian-like weights with one outlier per channel, 16 channels of 64.
  Rng rng(9);
  std::vector<float> w(16 * 64);
  for (float& x : w) x = (rng.uniform() + rng.uniform() + rng.uniform()) * 0.1f;
  for (size_t c = 0; c < 16; ++c) w[c * 64 + c] = 0.6f * (c % 2 ? 1.0f : -1.0f);
  for (ElemType type : {ElemType::I4, ElemType::I8, ElemType::U8}) {
    const bool sym = type != ElemType::U8;
    const quant::QRange r = quant::qrange(type, sym, false);
    acc::WeightScheme minmax{type, sym, false, acc::WeightClip::MinMax};
    acc::WeightScheme mse = minmax;
    mse.clip = acc::WeightClip::Mse;
    const acc::QuantizedWeight a = acc::quantize_weight(w, {16, 64}, 0, minmax);
    const acc::QuantizedWeight b = acc::quantize_weight(w, {16, 64}, 0, mse);
    double ea = 0, eb = 0;
    const std::vector<float> da = a.dequantized(), db = b.dequantized();
    for (size_t e = 0; e < w.size(); ++e) {
      ea += (da[e] - w[e]) * (da[e] - w[e]);
      eb += (db[e] - w[e]) * (db[e] - w[e]);
    }
    for (size_t c = 0; c < 16; ++c) {
      const std::vector<float> ch(w.begin() + static_cast<std::ptrdiff_t>(c * 64),
                                  w.begin() + static_cast<std::ptrdiff_t>(c * 64 + 64));
      CHECK(acc::squared_error(ch, b.params[c], r) <= acc::squared_error(ch, a.params[c], r));
    }
    std::cout << "weight_clip " << name_of(type) << ": weight MSE minmax " << ea / w.size() << ", mse "
              << eb / w.size() << "\n";
    CHECK(eb < ea * (type == ElemType::I4 ? 0.9 : 1.0));
  }
  // Per tensor (axis -1): one search over all weights.
  const acc::QuantizedWeight t =
      acc::quantize_weight(w, {16, 64}, -1, {ElemType::I4, true, false, acc::WeightClip::Mse});
  CHECK(t.params.size() == 1);
  CHECK(t.params[0].scale < 0.6f / 7);  // clipped below the outlier
}

TEST_CASE("equalize: per-channel weight ranges equalized, float outputs unchanged in ONNX Runtime",
          "[equalize][accuracy]") {
  const Model fm = dwsep_model();
  Model m = fm;
  PassResult r = run_pass(passes::equalize_pass_info(), m, {});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  REQUIRE(r.changed);
  CHECK(r.metrics.at("equalized_pairs") == 2);
  CHECK(r.metrics.at("channel_range_spread_before") > 10);
  CHECK(r.metrics.at("channel_range_spread_after") < 1.01);
  // conv1's output channel ranges equal conv2's input channel ranges, and
  // conv2's output ones conv3's input ones.
  const std::vector<double> o1 = out_absmax(weight_of(m, "conv1")), i2 = in_absmax(weight_of(m, "conv2"), 8);
  const std::vector<double> o2 = out_absmax(weight_of(m, "conv2")), i3 = in_absmax(weight_of(m, "conv3"), 1);
  for (size_t c = 0; c < 8; ++c) {
    CHECK(o1[c] == Approx(i2[c]).epsilon(1e-3));
    CHECK(o2[c] == Approx(i3[c]).epsilon(1e-3));
  }
  CHECK(quant::read_f32(*m.tensor("w1")) != quant::read_f32(*fm.tensor("w1")));  // new values, same name
  test::TempDir dir("qforge_equalize_");
  const fs::path ref = emit_to(dir.path / "ref.onnx", fm), eq = emit_to(dir.path / "eq.onnx", m);
  const Comparison c = ort_compare_with(ort_python("[accuracy]"), ref, eq, kDwsepArgs);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.max_abs <= 1e-5);

  SECTION("Clip (ReLU6) between two Conv nodes is not equalized, and says why") {
    Model clip = fm;
    for (Node& n : clip.graph->nodes)
      if (n.name == "relu1") n.op_type = "Clip";
    PassResult rc = run_pass(passes::equalize_pass_info(), clip, {});
    REQUIRE(rc.status.ok);
    CHECK(rc.metrics.at("equalized_pairs") == 1);
    const Skipped* s = skip_of(rc, "node 'conv2'");
    REQUIRE(s);
    CHECK_THAT(s->reason, Catch::Contains("Clip") && Catch::Contains("only through Relu"));
  }
  SECTION("per-tensor int8 weights: equalized is closer to the float model; inside quantize-static too") {
    const Options pt = opts_of({{"per_channel", Value::of_bool(false)},
                                {"equalize", Value::of_bool(false)},
                                {"bias_correction", Value::of_bool(false)}});
    const double off = static_cosine(fm, "dwsep per tensor", kDwsepArgs, pt);
    const double pass = static_cosine(fm, "dwsep per tensor, equalize pass", kDwsepArgs, pt, "equalize");
    Options on = pt;
    on["equalize"] = Value::of_bool(true);
    PassResult qr;
    const double opt = static_cosine(fm, "dwsep per tensor, equalize = true", kDwsepArgs, on, "", &qr);
    CHECK(qr.metrics.at("equalized_pairs") == 2);
    CHECK(pass > off);
    CHECK(opt > off);
    CHECK(opt == Approx(pass).margin(2e-3));
  }
}

TEST_CASE("bias_correction: the mean output error of quantized weights moves toward zero",
          "[quantize-static][accuracy]") {
  // int4 weights per channel, 16-bit activations: the weights' error dominates.
  const Model fm = dwsep_model();
  test::TempDir dir("qforge_bias_");
  const fs::path ref = emit_to(dir.path / "ref.onnx", fm);
  ort_reference(ref, dir.path / "cal", "--batch 2 --samples 4 --seed 7");
  ort_reference(ref, dir.path / "f", "--batch 4 --samples 4");
  // Mean over samples of (quantized - float) per output, averaged in |.|.
  auto mean_error = [&](bool correct, PassResult& r) {
    Model m = fm;
    auto table = calibrate(m, dir.path / "cal/data");
    r = run_with_table("quantize-static", m, table,
                       opts_of({{"weight_type", Value::of_string("int4")},
                                {"activation_type", Value::of_string("uint16")},
                                {"per_channel", Value::of_bool(true)},
                                {"equalize", Value::of_bool(false)},
                                {"bias_correction", Value::of_bool(correct)}}));
    INFO(r.status.message);
    REQUIRE(r.status.ok);
    const std::string tag = correct ? "on" : "off";
    ort_reference(emit_to(dir.path / ("q_" + tag + ".onnx"), m), dir.path / tag, "--batch 4 --samples 4");
    std::vector<double> err(6, 0.0);
    size_t rows = 0;
    for (int s = 0; s < 4; ++s) {
      const std::string f = "s" + std::to_string(s) + "_0.npy";
      const Array a = read_npy((dir.path / "f/ref" / f).string()),
                  b = read_npy((dir.path / tag / "ref" / f).string());
      const float* x = reinterpret_cast<const float*>(a.data->data());
      const float* y = reinterpret_cast<const float*>(b.data->data());
      for (size_t row = 0; row < 4; ++row, ++rows)
        for (size_t k = 0; k < 6; ++k) err[k] += double(y[row * 6 + k]) - x[row * 6 + k];
    }
    double sum = 0;
    for (double e : err) sum += std::fabs(e / static_cast<double>(rows));
    return sum / 6;
  };
  PassResult off_r, on_r;
  const double off = mean_error(false, off_r), on = mean_error(true, on_r);
  std::cout << "bias_correction on dwsep (int4 weights): mean |output bias| off " << off << ", on " << on
            << "\n";
  CHECK(on_r.metrics.at("bias_corrected") == 3);
  CHECK(on < off * 0.5);
  // The inputs were uniform in [-1, 1): conv1's correction is about zero;
  // conv2 and conv3 read Relu outputs (positive means).

  SECTION("a Conv without a bias gets one; a table without per-channel means says so") {
    Model nb = fm;
    nb.graph->nodes[0].inputs.resize(2);  // conv1 without b1
    nb.tensors.erase(
        std::remove_if(nb.tensors.begin(), nb.tensors.end(), [](const Tensor& t) { return t.name == "b1"; }),
        nb.tensors.end());
    auto table = calibrate(nb, dir.path / "cal/data");
    PassResult r =
        run_with_table("quantize-static", nb, table, opts_of({{"bias_correction", Value::of_bool(true)}}));
    REQUIRE(r.status.ok);
    CHECK_THAT(r.notes, Catch::VectorContains(
                            std::string("quantize-static: bias correction in 3 node(s) (1 given a bias)")));
    quant::RangeTable bare = quant::RangeTable::from_table(*table, "t");
    bare.channels.clear();
    Model m2 = fm;
    PassResult r2 = run_with_table("quantize-static", m2, std::make_shared<Table>(bare.to_table()),
                                   opts_of({{"bias_correction", Value::of_bool(true)}}));
    REQUIRE(r2.status.ok);
    CHECK(r2.metrics.at("bias_corrected") == 0);
    CHECK_THAT(r2.notes, Catch::VectorContains(std::string(
                             "quantize-static: bias_correction skipped: the range table has no per-channel "
                             "statistics (calibrate with channel_stats = true, the default since calibrate "
                             "version 2)")));
  }
}

TEST_CASE(
    "accuracy options in a build: equalize, bias_correction and weight_clip, cached and --no-cache "
    "byte-identical",
    "[quantize-static][equalize][accuracy][cli]") {
  test::TempDir dir("qforge_accuracy_build_");
  fs::create_directories(dir.path / "models");
  emit_to(dir.path / "models/dwsep.onnx", dwsep_model());
  ort_reference(dir.path / "models/dwsep.onnx", dir.path / "cal", "--batch 1 --samples 3");
  std::ofstream(dir.path / "qforge.toml")
      << "[models.m]\npath = \"models/dwsep.onnx\"\n[datasets.cal]\nfiles = [\"cal/data/*.npz\"]\n"
         "[[targets]]\nname = \"opts\"\nmodel = \"m\"\n"
         "pipeline = [ { pass = \"calibrate\", dataset = \"cal\" }, { pass = \"quantize-static\", equalize = "
         "true, "
         "bias_correction = true, weight_clip = \"mse\", weight_type = \"int4\", per_channel = true } ]\n"
         "[[targets]]\nname = \"pipeline\"\nmodel = \"m\"\n"
         "pipeline = [ { pass = \"fold-batchnorm\" }, { pass = \"equalize\" }, { pass = \"calibrate\", "
         "dataset = "
         "\"cal\" }, { pass = \"quantize-static\", bias_correction = true } ]\n";
  const std::string qforge = test::shell_quote(QFORGE_BIN);
  int st = 0;
  std::string out =
      test::run_capture("cd " + test::shell_quote(dir.path.string()) + " && " + qforge + " build 2>&1", st);
  INFO(out);
  REQUIRE(st == 0);
  const std::string a = file_bytes(dir.path / "dist/opts.onnx"),
                    b = file_bytes(dir.path / "dist/pipeline.onnx");
  REQUIRE_FALSE(a.empty());
  REQUIRE_FALSE(b.empty());
  out = test::run_capture("cd " + test::shell_quote(dir.path.string()) + " && " + qforge + " build 2>&1", st);
  CHECK_THAT(out, Catch::Contains("(nothing to do)"));
  out = test::run_capture(
      "cd " + test::shell_quote(dir.path.string()) + " && " + qforge + " build --no-cache 2>&1", st);
  REQUIRE(st == 0);
  CHECK(file_bytes(dir.path / "dist/opts.onnx") == a);
  CHECK(file_bytes(dir.path / "dist/pipeline.onnx") == b);
}

namespace {

// x[b, 6, 16] -> Mul(gamma) -> Add(beta) -> h (an affine LayerNorm tail with
// two outlier channels, 3 and 11) -> MatMul(w1) -> Add(b1) -> y1 and
// h -> MatMul(w2) -> y2.
Model outlier_model() {
  Model m = onnx_model("outliers", 13, 7);
  Graph& g = *m.graph;
  g.inputs.push_back(nchw("x", {6, 16}));
  g.outputs.push_back(nchw("y1", {6, 24}));
  g.outputs.push_back(nchw("y2", {6, 8}));
  Rng rng(5);
  std::vector<float> gamma(16, 1.0f);
  gamma[3] = 30, gamma[11] = -25;
  m.tensors.push_back(quant::make_f32_tensor("gamma", {16}, gamma));
  m.tensors.push_back(rand_tensor("beta", {16}, rng, 0.2f));
  m.tensors.push_back(rand_tensor("w1", {16, 24}, rng, 0.25f));
  m.tensors.push_back(rand_tensor("b1", {24}, rng, 0.1f));
  m.tensors.push_back(rand_tensor("w2", {16, 8}, rng, 0.25f));
  g.nodes.push_back(make_node("scale", "Mul", {"x", "gamma"}, {"xs"}));
  g.nodes.push_back(make_node("shift", "Add", {"xs", "beta"}, {"h"}));
  g.nodes.push_back(make_node("fc1", "MatMul", {"h", "w1"}, {"m1"}));
  g.nodes.push_back(make_node("fc1_add", "Add", {"m1", "b1"}, {"y1"}));
  g.nodes.push_back(make_node("fc2", "MatMul", {"h", "w2"}, {"y2"}));
  return m;
}

// max / mean of the channels' absolute maxima.
double spread_of(const quant::ChannelStats& cs) {
  double mx = 0, sum = 0;
  for (size_t k = 0; k < cs.channels(); ++k) {
    const double a = std::max(std::fabs(cs.min[k]), std::fabs(cs.max[k]));
    mx = std::max(mx, a), sum += a;
  }
  return mx / (sum / static_cast<double>(cs.channels()));
}

}  // namespace

TEST_CASE("smooth-quant: float outputs unchanged, the activation's channel ranges evened out",
          "[smooth-quant][accuracy]") {
  const Model fm = outlier_model();
  test::TempDir dir("qforge_smooth_");
  const std::string args = "--batch 4 --samples 4";
  const fs::path ref = emit_to(dir.path / "ref.onnx", fm);
  ort_reference(ref, dir.path / "cal", args + " --seed 7");
  Model m = fm;
  auto table = calibrate(m, dir.path / "cal/data");
  PassResult r = run_with_table("smooth-quant", m, table, {});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  REQUIRE(r.changed);
  CHECK(r.metrics.at("smoothed_activations") == 1);
  CHECK(r.metrics.at("smoothed_weights") == 2);  // both readers of h share one s
  CHECK(r.metrics.at("activation_spread_after") < r.metrics.at("activation_spread_before"));
  CHECK(m.tensor("gamma") == nullptr);  // folded into the Mul and the Add
  const fs::path sm = emit_to(dir.path / "smoothed.onnx", m);
  const Comparison c = ort_compare_with(ort_python("[accuracy]"), ref, sm, args);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.max_abs <= 1e-4);  // outputs up to ~30: float rounding only
  // Calibrated again: h's channels are closer together.
  Model again = m;
  const quant::RangeTable before = quant::RangeTable::from_table(*table, "t");
  const quant::RangeTable after =
      quant::RangeTable::from_table(*calibrate(again, dir.path / "cal/data"), "t");
  REQUIRE(before.channel_stats("h"));
  REQUIRE(after.channel_stats("h"));
  const double sb = spread_of(*before.channel_stats("h")), sa = spread_of(*after.channel_stats("h"));
  std::cout << "smooth-quant: channel absmax spread of h " << sb << " -> " << sa << "\n";
  CHECK(sa < sb * 0.6);

  SECTION("uint8 activations: the smoothed model quantizes closer to the float one") {
    auto cosine = [&](Model q, std::shared_ptr<const Table> t, const std::string& tag) {
      PassResult qr =
          run_with_table("quantize-static", q, t, opts_of({{"per_channel", Value::of_bool(true)}}));
      REQUIRE(qr.status.ok);
      const Comparison cc =
          ort_compare_with(ort_python("[accuracy]"), ref, emit_to(dir.path / (tag + ".onnx"), q), args);
      REQUIRE(cc.rc == 0);
      std::cout << "smooth-quant: u8/s8 per channel, " << tag << ": cosine " << cc.cosine << "\n";
      return cc.cosine;
    };
    const double off = cosine(fm, table, "off");
    const double on = cosine(m, std::make_shared<Table>(after.to_table()), "on");
    CHECK(on > off);
  }
  SECTION("a producer that cannot absorb 1/s: skipped, or a Mul with insert_mul") {
    Model other = fm;
    for (Node& n : other.graph->nodes)
      if (n.name == "shift") n.op_type = "Sub";
    auto t2 = calibrate(other, dir.path / "cal/data");
    Model a = other;
    PassResult ra = run_with_table("smooth-quant", a, t2, {});
    REQUIRE(ra.status.ok);
    CHECK_FALSE(ra.changed);
    const Skipped* s = skip_of(ra, "value 'h'");
    REQUIRE(s);
    CHECK_THAT(s->reason, Catch::Contains("insert_mul"));
    PassResult rb =
        run_with_table("smooth-quant", other, t2, opts_of({{"insert_mul", Value::of_bool(true)}}));
    REQUIRE(rb.status.ok);
    CHECK(rb.changed);
    // The same outputs as the float model with the Sub.
    Model sub_ref = fm;
    for (Node& n : sub_ref.graph->nodes)
      if (n.name == "shift") n.op_type = "Sub";
    const Comparison cs =
        ort_compare_with(ort_python("[accuracy]"), emit_to(dir.path / "sub_ref.onnx", sub_ref),
                         emit_to(dir.path / "sub_smoothed.onnx", other), args);
    REQUIRE(cs.rc == 0);
    CHECK(cs.max_abs <= 1e-4);
  }
}

namespace {

fs::path real_model(const std::string& name) {
  const fs::path p = models_dir() / (name + ".onnx");
  if (!fs::exists(p)) {
    WARN("skipped: " << p.string() << " is missing; run `make models` (make test does) to fetch it");
    return {};
  }
  return p;
}

struct Variant {
  std::string label;
  Options opts;        // quantize-static's
  double smooth = -1;  // smooth-quant alpha (then calibrated again); < 0: none
  bool insert_mul = false;
  bool equalize_pass = false;  // fold-batchnorm -> equalize before calibrating
};

// Each variant of `name` calibrated on `cal` samples and compared with the
// float model in ONNX Runtime on `eval` samples; prints one line per variant.
void measure(const std::string& name, const std::string& cal, const std::string& eval,
             const std::vector<Variant>& variants) {
  const fs::path path = real_model(name);
  if (path.empty()) return;
  const Model fm = onnxfmt::import_onnx(path.string());
  test::TempDir dir("qforge_accuracy_real_");
  ort_reference(path, dir.path / "cal", cal + " --seed 7");
  std::cout << "accuracy " << name << ": calibrated on " << cal << ", compared on " << eval << "\n";
  Model base = fm;
  auto table = calibrate(base, dir.path / "cal/data");
  for (const Variant& v : variants) {
    Model m = fm;
    auto t = table;
    if (v.equalize_pass) {
      REQUIRE(run_pass(pass_info("fold-batchnorm"), m, {}).status.ok);
      PassResult e = run_pass(pass_info("equalize"), m, {});
      REQUIRE(e.status.ok);
      std::cout << "  equalize pass: " << e.metrics["equalized_pairs"] << " pairs\n";
      t = calibrate(m, dir.path / "cal/data");
    }
    if (v.smooth >= 0) {
      PassResult s = run_with_table(
          "smooth-quant", m, t,
          opts_of({{"alpha", Value::of_float(v.smooth)}, {"insert_mul", Value::of_bool(v.insert_mul)}}));
      INFO(s.status.message);
      REQUIRE(s.status.ok);
      std::cout << "  smooth-quant: " << s.metrics["smoothed_activations"] << " activations, "
                << s.skipped.size() << " left alone\n";
      t = calibrate(m, dir.path / "cal/data");
    }
    PassResult r = run_with_table("quantize-static", m, t, v.opts);
    INFO(v.label << ": " << r.status.message);
    REQUIRE(r.status.ok);
    const fs::path q = emit_to(dir.path / "q.onnx", m);
    const Comparison c = ort_compare_with(ort_python("[accuracy]"), path, q, eval);
    INFO(c.output);
    REQUIRE(c.rc == 0);
    std::cout << "accuracy " << name << " | " << v.label << " | cosine " << c.cosine << " | argmax "
              << c.argmax_agreement << " (" << c.argmax_rows << " rows)";
    for (const char* k : {"equalized_pairs", "bias_corrected"})
      if (r.metrics.count(k)) std::cout << " | " << k << " " << r.metrics.at(k);
    std::cout << "\n";
  }
}

Options with(Options o, const std::string& k, Value v) {
  o[k] = std::move(v);
  return o;
}

}  // namespace

TEST_CASE("accuracy options on the real models: on/off cosines against the float model in ONNX Runtime",
          "[large][real-models][accuracy]") {
  const Value yes = Value::of_bool(true), no = Value::of_bool(false);
  // Every baseline turns the accuracy options off; each variant turns one on.
  const Options none = opts_of({{"equalize", no}, {"bias_correction", no}});
  SECTION("PP-OCR classifier (MobileNetV3): equalize, bias_correction, weight_clip") {
    const Options pc = with(none, "per_channel", yes);
    const Options pt = with(none, "per_channel", no);
    const Options i4 = with(pc, "weight_type", Value::of_string("int4"));
    std::vector<Variant> v = {
        {"u8/s8 per channel", pc},
        {"u8/s8 per channel, bias_correction", with(pc, "bias_correction", yes)},
        {"u8/s8 per channel, equalize", with(pc, "equalize", yes)},
        {"u8/s8 per channel, equalize + bias_correction",
         with(with(pc, "equalize", yes), "bias_correction", yes)},
        {"u8/s8 per channel, weight_clip mse", with(pc, "weight_clip", Value::of_string("mse"))},
        {"u8/s8 per tensor", pt},
        {"u8/s8 per tensor, bias_correction", with(pt, "bias_correction", yes)},
        {"u8/s8 per tensor, equalize", with(pt, "equalize", yes)},
        {"u8/s8 per tensor, equalize pass before calibrate", pt, -1, false, true},
        {"u8/s8 per tensor, equalize + bias_correction",
         with(with(pt, "equalize", yes), "bias_correction", yes)},
        {"u8/s4 per channel", i4},
        {"u8/s4 per channel, weight_clip mse", with(i4, "weight_clip", Value::of_string("mse"))},
        {"u8/s4 per channel, bias_correction", with(i4, "bias_correction", yes)},
        {"u8/s4 per channel, weight_clip mse + bias_correction",
         with(with(i4, "weight_clip", Value::of_string("mse")), "bias_correction", yes)},
    };
    // Calibrated on 16 and on 64 images; compared on 128 (the 2-way
    // softmax output makes a small comparison noisy).
    for (const char* cal :
         {"--glyphs --shape x=4,3,48,192 --samples 4", "--glyphs --shape x=4,3,48,192 --samples 16"})
      measure("ppocr_mobile_v2_cls", cal, "--glyphs --shape x=8,3,48,192 --samples 16", v);
  }
  SECTION("PP-OCRv4 recogniser (SVTR): smooth-quant, bias_correction, weight_clip") {
    const Options ms = with(with(none, "per_channel", yes), "qdq_domain", Value::of_string("com.microsoft"));
    const Options i4 = with(with(ms, "weight_type", Value::of_string("int4")), "activation_type",
                            Value::of_string("uint16"));
    std::vector<Variant> v = {
        {"u8/s8 per channel", ms},
        {"u8/s8 per channel, smooth-quant 0.5", ms, 0.5},
        {"u8/s8 per channel, smooth-quant 0.5 insert_mul", ms, 0.5, true},
        {"u8/s8 per channel, smooth-quant 0.8 insert_mul", ms, 0.8, true},
        {"u8/s8 per channel, bias_correction", with(ms, "bias_correction", yes)},
        {"u8/s8 per channel, weight_clip mse", with(ms, "weight_clip", Value::of_string("mse"))},
        {"u8/s8 per channel, equalize", with(ms, "equalize", yes)},
        {"u8/s8 per channel, equalize + bias_correction",
         with(with(ms, "equalize", yes), "bias_correction", yes)},
        {"u16/s8 per channel", with(ms, "activation_type", Value::of_string("uint16"))},
        {"u16/s8 per channel, equalize",
         with(with(ms, "activation_type", Value::of_string("uint16")), "equalize", yes)},
        {"u16/s8 per channel, bias_correction",
         with(with(ms, "activation_type", Value::of_string("uint16")), "bias_correction", yes)},
        {"u16/s4 per channel", i4},
        {"u16/s4 per channel, weight_clip mse", with(i4, "weight_clip", Value::of_string("mse"))},
        {"u16/s4 per channel, bias_correction", with(i4, "bias_correction", yes)},
        {"u16/s4 per channel, weight_clip mse + bias_correction",
         with(with(i4, "weight_clip", Value::of_string("mse")), "bias_correction", yes)},
    };
    measure("ppocrv4_rec", "--glyphs --shape x=2,3,48,320 --samples 4",
            "--glyphs --shape x=2,3,48,320 --samples 4", v);
  }
}
