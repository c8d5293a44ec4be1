// select-precision on ONNX models (passes/select-precision/onnx.cc): the real
// attention model g2p-id BERT (tests/data/real_models.md), whose plain uint8
// quantization stays below cosine 0.99 on held-out token sequences in ONNX
// Runtime, brought above it by mixed precision at well under 45% of the float
// file's bytes, through fold-constants -> calibrate -> select-precision ->
// quantize-static in one manifest. Profiles decide what a widened node gets
// (tensorrt: no 16-bit activations, so float; qnn-htp: uint16), and a build
// without the cache writes the same bytes.
//
// The floor is set to 0.995 on a 16-sample holdout set so that the plan keeps
// 0.99 on the 4 different held-out samples ONNX Runtime measures: uint8 gives
// 0.9934 on the holdout set (qforge's executor) and 0.9895 on the held-out
// one (ONNX Runtime), so a floor of 0.99 would widen nothing.
//
// Also: a generated MLP with one very sensitive layer (an outlier input
// channel), of which the plan widens exactly that layer; a generated model on
// which the search prefers a node without weights (size-aware ordering); and
// the PP-OCRv4 recogniser (about 30 s).
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "onnx_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace qforge;
using namespace qforge::testutil;

// Runs the generator script GEN (args: OUT N SEED) once per (subdirectory of
// its directory, sample count, seed).
void run_generator(const std::string& python, const fs::path& gen,
                   std::initializer_list<std::tuple<const char*, int, int>> sets) {
  for (const auto& [sub, n, seed] : sets) {
    int st = 0;
    const std::string out =
        test::run_capture(test::shell_quote(python) + " " + q(gen) + " " + q(gen.parent_path() / sub) + " " +
                              std::to_string(n) + " " + std::to_string(seed) + " 2>&1",
                          st);
    INFO(out);
    REQUIRE(st == 0);
  }
}

const nlohmann::json& target_of(const nlohmann::json& report, const std::string& name) {
  for (const auto& t : report.at("targets"))
    if (t.at("name") == name) return t;
  FAIL("no target " << name << " in the report");
  throw 0;
}

}  // namespace

TEST_CASE(
    "select-precision ONNX: g2p-id BERT reaches cosine 0.99 in ONNX Runtime with mixed precision at most 45% "
    "of its float size, profiles decide uint16 or float, cached equals no-cache",
    "[select-precision][real-models]") {
  const fs::path model = models_dir() / "g2p_id_bert.onnx";
  if (!fs::exists(model)) {
    WARN("skipped: " << model.string() << " is missing; run `make models` (make test does) to fetch it");
    return;
  }
  const std::string python = ort_python("[select-precision]");
  test::TempDir dir("qforge_selprec_onnx_");
  const fs::path d = dir.path;
  const std::string tokens = " --input input_1 --batch 8 --vocab 2,31 --mask 31";
  py(python, "synth_inputs.py", "tokens " + q(d / "cal") + " 4" + tokens + " --seed 7");
  py(python, "synth_inputs.py", "tokens " + q(d / "hold") + " 16" + tokens + " --seed 9");
  py(python, "synth_inputs.py", "tokens " + q(d / "eval") + " 4" + tokens + " --seed 8");

  const std::string u8 = "activation_type = \"uint8\", weight_type = \"int8\", per_channel = true";
  const std::string head =
      "pipeline = [ { pass = \"fold-constants\" },\n"
      "  { pass = \"calibrate\", dataset = \"cal\", method = \"percentile\" },\n";
  std::string toml =
      "[build]\noutput = \"dist\"\ncache = \".qforge/cache\"\n\n[models.bert]\npath = \"" + model.string() +
      "\"\n\n[datasets.cal]\nfiles = [\"cal/*.npz\"]\n[datasets.hold]\nfiles = [\"hold/*.npz\"]\n";
  // Plain uint8 (the baseline ONNX Runtime measures) and the mixed plan.
  toml += "\n[[targets]]\nname = \"bert-u8\"\nmodel = \"bert\"\n" + head +
          "  { pass = \"quantize-static\", " + u8 + " } ]\n";
  toml += "\n[[targets]]\nname = \"bert-mixed\"\nmodel = \"bert\"\n" + head +
          "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.995, " + u8 +
          " },\n  { pass = \"quantize-static\", " + u8 + " } ]\n";
  // tensorrt: int8 only (its quantize-static defaults, which select-precision
  // takes from the profile too): widened nodes stay in float.
  toml += "\n[[targets]]\nname = \"bert-trt\"\nmodel = \"bert\"\nprofile = \"tensorrt\"\n" + head +
          "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.995 },\n"
          "  { pass = \"quantize-static\" } ]\n";
  // qnn-htp: uint16 activations with 8-bit weights.
  const std::string qnn = "activation_type = \"uint8\", weight_type = \"uint8\"";
  toml += "\n[[targets]]\nname = \"bert-qnn\"\nmodel = \"bert\"\nprofile = \"qnn-htp\"\n" + head +
          "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.995, " + qnn +
          " },\n  { pass = \"quantize-static\", " + qnn + " } ]\n";
  std::ofstream(d / "qforge.toml") << toml;
  const std::string qf = test::shell_quote(QFORGE_BIN);

  int st = 0;
  const std::string plan = test::run_capture("cd " + q(d) + " && " + qf + " plan 2>&1", st);
  INFO(plan);
  REQUIRE(st == 0);
  CHECK(plan.find("select-precision") != std::string::npos);

  const std::string out = test::run_capture("cd " + q(d) + " && " + qf + " build -t 2 2>&1", st);
  INFO(toml << "\n" << out);
  REQUIRE(st == 0);
  const nlohmann::json report = nlohmann::json::parse(test::slurp(d / "dist/report.json"));
  const auto& mixed = target_of(report, "bert-mixed").at("metrics");
  CHECK(mixed.at("wide_nodes").get<double>() >= 1);
  CHECK(mixed.at("int16_nodes").get<double>() == mixed.at("wide_nodes").get<double>());
  CHECK(mixed.at("cosine").get<double>() >= 0.995);
  const auto& trt = target_of(report, "bert-trt").at("metrics");
  CHECK(trt.at("float_nodes").get<double>() >= 1);
  CHECK(trt.at("int16_nodes").get<double>() == 0);
  const auto& qnnm = target_of(report, "bert-qnn").at("metrics");
  CHECK(qnnm.at("int16_nodes").get<double>() >= 1);
  CHECK(qnnm.at("float_nodes").get<double>() == 0);
  CHECK(qnnm.at("wide_activations").get<double>() >= 1);

  // ONNX Runtime on held-out sequences.
  const std::string res =
      py(python, "ort_fidelity.py",
         q(model) + " " + q(d / "dist/bert-u8.onnx") + " " + q(d / "dist/bert-mixed.onnx") + " " +
             q(d / "dist/bert-trt.onnx") + " --data " + q(d / "eval"));
  INFO(res);
  std::vector<nlohmann::json> js;
  for (size_t a = 0, b; (b = res.find('\n', a)) != std::string::npos; a = b + 1)
    if (res[a] == '{') js.push_back(nlohmann::json::parse(res.substr(a, b - a)));
  REQUIRE(js.size() == 3u);
  const double u8c = js[0].at("cosine_mean").get<double>(), mixc = js[1].at("cosine_mean").get<double>();
  const double fsize = static_cast<double>(fs::file_size(model));
  const double msize = static_cast<double>(fs::file_size(d / "dist/bert-mixed.onnx"));
  std::cout << "g2p-id BERT in ONNX Runtime, held out: uint8 cosine " << u8c << "; mixed ("
            << mixed.at("wide_nodes").get<double>() << " node(s) uint16) cosine " << mixc << ", "
            << 100 * msize / fsize << "% of the float file; tensorrt (float) cosine "
            << js[2].at("cosine_mean").get<double>() << "\n";
  CHECK(mixc >= 0.99);
  CHECK(mixc > u8c);
  CHECK(msize <= 0.45 * fsize);
  // tensorrt's symmetric int8 with MatMul__281 in float meets 0.995 on the
  // holdout set but measured 0.9879 on these 4 held-out samples: not asserted.

  // A build without the cache writes the same bytes.
  const std::string cached = file_bytes(d / "dist/bert-mixed.onnx");
  const std::string again = test::run_capture("cd " + q(d) + " && " + qf + " build -t 2 --no-cache 2>&1", st);
  INFO(again);
  REQUIRE(st == 0);
  CHECK(file_bytes(d / "dist/bert-mixed.onnx") == cached);
}

namespace {

// Parses the JSON lines tests/tools/ort_fidelity.py prints.
std::vector<nlohmann::json> json_lines(const std::string& res) {
  std::vector<nlohmann::json> js;
  for (size_t a = 0, b; (b = res.find('\n', a)) != std::string::npos; a = b + 1)
    if (res[a] == '{') js.push_back(nlohmann::json::parse(res.substr(a, b - a)));
  return js;
}

}  // namespace

// One very sensitive layer: the MLP's input x[4, 16] has an outlier channel
// (channel 0 near 1000, the others standard normal) that fc1's weights ignore
// (their row 0 is zero). With 8-bit activations the scale of x is about 4, so
// every ordinary channel rounds to 0 or +-4 and the output is destroyed; only
// fc1 reads x, so widening fc1 (uint16 on x and its output) alone restores it.
TEST_CASE(
    "select-precision ONNX: an MLP whose input has an outlier channel gets exactly its first MatMul widened "
    "to uint16 and meets cosine 0.99 in ONNX Runtime",
    "[select-precision]") {
  const std::string python = ort_python("[select-precision]");
  test::TempDir dir("qforge_selprec_outlier_");
  const fs::path d = dir.path;

  Model m = onnx_model("outlier_mlp", 13, 7);
  Graph& g = *m.graph;
  add_io(g, "x", 16, "y", 8);
  Rng rng(11);
  std::vector<float> w1(16 * 32), b1(32), w2(32 * 8), b2(8);
  for (float& v : w1) v = rng.uniform() * 0.5f;
  for (size_t j = 0; j < 32; ++j) w1[j] = 0;  // fc1 ignores the outlier channel
  for (float& v : b1) v = rng.uniform() * 0.1f;
  for (float& v : w2) v = rng.uniform() * 0.35f;
  for (float& v : b2) v = rng.uniform() * 0.1f;
  m.tensors.push_back(quant::make_f32_tensor("fc1.weight", {16, 32}, w1));
  m.tensors.push_back(quant::make_f32_tensor("fc1.bias", {32}, b1));
  m.tensors.push_back(quant::make_f32_tensor("fc2.weight", {32, 8}, w2));
  m.tensors.push_back(quant::make_f32_tensor("fc2.bias", {8}, b2));
  g.nodes.push_back(make_node("fc1", "MatMul", {"x", "fc1.weight"}, {"fc1_mm"}));
  g.nodes.push_back(make_node("fc1_add", "Add", {"fc1_mm", "fc1.bias"}, {"fc1_out"}));
  g.nodes.push_back(make_node("fc1_relu", "Relu", {"fc1_out"}, {"h"}));
  g.nodes.push_back(make_node("fc2", "MatMul", {"h", "fc2.weight"}, {"fc2_mm"}));
  g.nodes.push_back(make_node("fc2_add", "Add", {"fc2_mm", "fc2.bias"}, {"y"}));
  const fs::path model = emit_to(d / "outlier.onnx", m);

  // Samples as .npz (numpy, seeded): calibration, the search's holdout set,
  // and the held-out set ONNX Runtime measures.
  std::ofstream(d / "gen.py") << "import os, sys\nimport numpy as np\n"
                                 "out, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
                                 "rng = np.random.default_rng(seed)\nos.makedirs(out, exist_ok=True)\n"
                                 "for i in range(n):\n"
                                 "    x = rng.standard_normal((4, 16)).astype(np.float32)\n"
                                 "    x[:, 0] = 1000 + rng.standard_normal(4)\n"
                                 "    np.savez(os.path.join(out, 's%02d.npz' % i), x=x)\n";
  run_generator(python, d / "gen.py", {{"cal", 4, 7}, {"hold", 8, 9}, {"eval", 8, 8}});

  const std::string opts =
      "activation_type = \"uint8\", weight_type = \"int8\", per_channel = true, qdq_domain = "
      "\"com.microsoft\"";
  const std::string head = "pipeline = [ { pass = \"calibrate\", dataset = \"cal\", method = \"minmax\" },\n";
  std::string toml =
      "[build]\noutput = \"dist\"\n\n[models.mlp]\npath = \"" + model.string() +
      "\"\n\n[datasets.cal]\nfiles = [\"cal/*.npz\"]\n[datasets.hold]\nfiles = [\"hold/*.npz\"]\n";
  toml += "\n[[targets]]\nname = \"mlp-u8\"\nmodel = \"mlp\"\n" + head + "  { pass = \"quantize-static\", " +
          opts + " } ]\n";
  toml += "\n[[targets]]\nname = \"mlp-mixed\"\nmodel = \"mlp\"\n" + head +
          "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.99, " + opts +
          " },\n  { pass = \"quantize-static\", " + opts + " } ]\n";
  // Float only: fc1 carries weights, so leaving it in float is paid for in bytes.
  toml += "\n[[targets]]\nname = \"mlp-float\"\nmodel = \"mlp\"\n" + head +
          "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.99, widen_to = [\"float\"], " +
          opts + " },\n  { pass = \"quantize-static\", " + opts + " } ]\n";
  std::ofstream(d / "qforge.toml") << toml;
  int st = 0;
  const std::string out =
      test::run_capture("cd " + q(d) + " && " + test::shell_quote(QFORGE_BIN) + " build -t 2 2>&1", st);
  INFO(toml << "\n" << out);
  REQUIRE(st == 0);
  const nlohmann::json report = nlohmann::json::parse(test::slurp(d / "dist/report.json"));
  const auto& mixed = target_of(report, "mlp-mixed").at("metrics");
  CHECK(mixed.at("baseline_cosine").get<double>() < 0.9);
  CHECK(mixed.at("wide_nodes").get<double>() == 1);
  CHECK(mixed.at("int16_nodes").get<double>() == 1);
  CHECK(mixed.at("cosine").get<double>() >= 0.99);
  size_t widened = 0, fc1 = 0;
  for (const auto& n : target_of(report, "mlp-mixed").at("notes")) {
    const std::string note = n.get<std::string>();
    if (note.rfind("select-precision: widened '", 0) == 0) ++widened;
    if (note.rfind("select-precision: widened 'fc1' (MatMul) to uint16", 0) == 0) ++fc1;
  }
  CHECK(widened == 1);
  CHECK(fc1 == 1);
  // fc1 in float costs its weight's bytes (16 x 32 floats instead of int8
  // codes with per-channel scales): one paid widening.
  const auto& flt = target_of(report, "mlp-float").at("metrics");
  CHECK(flt.at("paid_nodes").get<double>() == 1);
  CHECK(flt.at("float_nodes").get<double>() == 1);
  CHECK(flt.at("cosine").get<double>() >= 0.99);
  CHECK(flt.at("model_bytes").get<double>() > mixed.at("model_bytes").get<double>() + 1000);
  size_t fc1_float = 0;
  for (const auto& n : target_of(report, "mlp-float").at("notes"))
    fc1_float += n.get<std::string>().rfind("select-precision: widened 'fc1' (MatMul) to float: ", 0) == 0;
  CHECK(fc1_float == 1);

  const std::string res = py(python, "ort_fidelity.py",
                             q(model) + " " + q(d / "dist/mlp-u8.onnx") + " " + q(d / "dist/mlp-mixed.onnx") +
                                 " --data " + q(d / "eval"));
  INFO(res);
  const std::vector<nlohmann::json> js = json_lines(res);
  REQUIRE(js.size() == 2u);
  const double u8c = js[0].at("cosine_mean").get<double>(), mixc = js[1].at("cosine_mean").get<double>();
  std::cout << "outlier MLP in ONNX Runtime, held out: uint8 cosine " << u8c << "; fc1 at uint16 cosine "
            << mixc << "\n";
  CHECK(u8c < 0.9);
  CHECK(mixc >= 0.99);
}

// Size-aware ordering (onnx.cc): one error, two equal ways to remove it. The
// output is y = fc(x1) + mk(x2, m), where x1 and x2 carry the same samples
// (channel 0 near 100, the others standard normal, so 8-bit codes of x are
// 0.4 apart), fc is a MatMul by an identity whose row 0 is zero (weights) and
// mk multiplies by a mask input zero on channel 0 (no weights): the two
// branches compute the same values from the same 8-bit error, so widening
// either alone gains the same. uint8 keeps cosine about 0.993 and removing
// either branch's error about 0.998, so the floor 0.997 needs one of them.
// With widen_to = ["float"] the search takes mk (free: no weights) and leaves
// fc at 8 bits, adding no bytes; ranking by gain alone would have taken the
// first in graph order, fc. The list ["uint16", "float"] meets the floor at no
// cost too (with give_back = false every node stays at its free level), a
// build without the cache writes the same bytes, a budget below
// the plan is refused naming its bytes and the floor, and a level the profile
// forbids is refused at plan time.
TEST_CASE(
    "select-precision ONNX: a weightless node is put in float before a weighted one of equal gain, a list "
    "widen_to works, cached equals no-cache, budget and profile refusals",
    "[select-precision]") {
  const std::string python = ort_python("[select-precision]");
  test::TempDir dir("qforge_selprec_cost_");
  const fs::path d = dir.path;

  Model m = onnx_model("two_branches", 13, 7);
  Graph& g = *m.graph;
  for (const char* in : {"x1", "x2", "m"}) g.inputs.push_back(io(in, 16));
  g.outputs.push_back(io("y", 16));
  std::vector<float> w(16 * 16, 0.0f);
  for (size_t j = 1; j < 16; ++j) w[j * 16 + j] = 1.0f;
  m.tensors.push_back(quant::make_f32_tensor("fc.weight", {16, 16}, w));
  g.nodes.push_back(make_node("fc", "MatMul", {"x1", "fc.weight"}, {"a"}));
  g.nodes.push_back(make_node("mk", "Mul", {"x2", "m"}, {"b"}));
  g.nodes.push_back(make_node("sum", "Add", {"a", "b"}, {"y"}));
  const fs::path model = emit_to(d / "two_branches.onnx", m);

  std::ofstream(d / "gen.py") << "import os, sys\nimport numpy as np\n"
                                 "out, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
                                 "rng = np.random.default_rng(seed)\nos.makedirs(out, exist_ok=True)\n"
                                 "for i in range(n):\n"
                                 "    x = rng.standard_normal((4, 16)).astype(np.float32)\n"
                                 "    x[:, 0] = 100 + rng.standard_normal(4)\n"
                                 "    m = np.ones((4, 16), np.float32)\n"
                                 "    m[:, 0] = 0\n"
                                 "    np.savez(os.path.join(out, 's%02d.npz' % i), x1=x, x2=x, m=m)\n";
  run_generator(python, d / "gen.py", {{"cal", 4, 7}, {"hold", 8, 9}});

  const std::string opts =
      "activation_type = \"uint8\", weight_type = \"int8\", per_channel = true, qdq_domain = "
      "\"com.microsoft\"";
  const std::string head = "pipeline = [ { pass = \"calibrate\", dataset = \"cal\", method = \"minmax\" },\n";
  auto target = [&](const std::string& name, const std::string& sel) {
    return "\n[[targets]]\nname = \"" + name + "\"\nmodel = \"tb\"\n" + head +
           "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.997, " + sel + opts +
           " },\n  { pass = \"quantize-static\", " + opts + " } ]\n";
  };
  const std::string top =
      "[build]\noutput = \"dist\"\ncache = \".qforge/cache\"\n\n[models.tb]\npath = \"" + model.string() +
      "\"\n\n[datasets.cal]\nfiles = [\"cal/*.npz\"]\n[datasets.hold]\nfiles = [\"hold/*.npz\"]\n";
  std::string toml = top + "\n[[targets]]\nname = \"tb-u8\"\nmodel = \"tb\"\n" + head +
                     "  { pass = \"quantize-static\", " + opts + " } ]\n";
  toml += target("tb-float", "widen_to = [\"float\"], ");
  toml += target("tb-list", "widen_to = [\"uint16\", \"float\"], ");
  toml += target("tb-keep", "widen_to = [\"uint16\", \"float\"], give_back = false, ");
  std::ofstream(d / "qforge.toml") << toml;
  const std::string qf = test::shell_quote(QFORGE_BIN);
  int st = 0;
  const std::string out = test::run_capture("cd " + q(d) + " && " + qf + " build -t 2 2>&1", st);
  INFO(toml << "\n" << out);
  REQUIRE(st == 0);
  const nlohmann::json report = nlohmann::json::parse(test::slurp(d / "dist/report.json"));
  const double u8_bytes = static_cast<double>(fs::file_size(d / "dist/tb-u8.onnx"));

  const auto& flt = target_of(report, "tb-float");
  const auto& fm = flt.at("metrics");
  CHECK(fm.at("baseline_cosine").get<double>() < 0.997);
  CHECK(fm.at("cosine").get<double>() >= 0.997);
  CHECK(fm.at("paid_nodes").get<double>() == 0);
  CHECK(fm.at("wide_nodes").get<double>() == 1);
  CHECK(fm.at("float_nodes").get<double>() == 1);
  size_t mk = 0, fc = 0;
  for (const auto& n : flt.at("notes")) {
    const std::string note = n.get<std::string>();
    mk += note.rfind("select-precision: widened 'mk' (Mul) to float: 0 extra bytes", 0) == 0;
    fc += note.rfind("select-precision: widened 'fc'", 0) == 0;
  }
  CHECK(mk == 1);
  CHECK(fc == 0);
  // fc's weight stays 8-bit: the file is no larger than plain uint8's but for
  // the Q/DQ nodes it drops around mk.
  CHECK(static_cast<double>(fs::file_size(d / "dist/tb-float.onnx")) <= u8_bytes);

  const auto& lm = target_of(report, "tb-list").at("metrics");
  CHECK(lm.at("cosine").get<double>() >= 0.997);
  CHECK(lm.at("paid_nodes").get<double>() == 0);
  CHECK(lm.at("wide_nodes").get<double>() == 1);
  CHECK(lm.at("model_bytes").get<double>() <= fm.at("model_bytes").get<double>() + 64);
  // Without give-back every candidate stays at its free level: fc at uint16,
  // mk and sum in float.
  const auto& km = target_of(report, "tb-keep").at("metrics");
  CHECK(km.at("cosine").get<double>() >= 0.997);
  CHECK(km.at("given_back_nodes").get<double>() == 0);
  CHECK(km.at("int16_nodes").get<double>() == 1);
  CHECK(km.at("float_nodes").get<double>() == 2);

  // A build without the cache writes the same bytes for both option forms.
  const std::string cached_float = file_bytes(d / "dist/tb-float.onnx");
  const std::string cached_list = file_bytes(d / "dist/tb-list.onnx");
  const std::string cached_keep = file_bytes(d / "dist/tb-keep.onnx");
  const std::string again = test::run_capture("cd " + q(d) + " && " + qf + " build -t 2 --no-cache 2>&1", st);
  INFO(again);
  REQUIRE(st == 0);
  CHECK(file_bytes(d / "dist/tb-float.onnx") == cached_float);
  CHECK(file_bytes(d / "dist/tb-list.onnx") == cached_list);
  CHECK(file_bytes(d / "dist/tb-keep.onnx") == cached_keep);

  // A budget under what the floor needs: refused, naming the bytes and the floor.
  {
    std::ofstream(d / "qforge.toml") << top +
                                            target("tb-budget", "widen_to = [\"float\"], budget = \"100\", ");
    const std::string o = test::run_capture("cd " + q(d) + " && " + qf + " build -t 2 2>&1", st);
    INFO(o);
    CHECK(st != 0);
    CHECK(o.find("meeting the floor (cosine 0.9970) takes ") != std::string::npos);
    CHECK(o.find("over the budget of 100 bytes") != std::string::npos);
    CHECK_FALSE(fs::exists(d / "dist/tb-budget.onnx"));
  }
  // Levels out of order, and a level the profile forbids: plan-time errors.
  {
    std::ofstream(d / "qforge.toml") << top + target("tb-order", "widen_to = [\"float\", \"uint16\"], ");
    const std::string o = test::run_capture("cd " + q(d) + " && " + qf + " plan 2>&1", st);
    INFO(o);
    CHECK(st != 0);
    CHECK(o.find("after 'float': list the levels in order of cost") != std::string::npos);
  }
  {
    const std::string i8 = "activation_type = \"int8\", weight_type = \"int8\"";
    std::ofstream(d / "qforge.toml")
        << top + "\n[[targets]]\nname = \"tb-trt\"\nmodel = \"tb\"\nprofile = \"tensorrt\"\n" + head +
               "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.997, widen_to = "
               "[\"int16\", "
               "\"float\"], " +
               i8 + " },\n  { pass = \"quantize-static\", " + i8 + " } ]\n";
    const std::string o = test::run_capture("cd " + q(d) + " && " + qf + " plan 2>&1", st);
    INFO(o);
    CHECK(st != 0);
    CHECK(o.find("is forbidden by profile 'tensorrt'") != std::string::npos);
    CHECK(o.find("widen_to") != std::string::npos);
  }
}

// The headline case: the PP-OCRv4 text recogniser (SVTR attention
// blocks; tests/data/real_models.md), whose plain u8/s8 per-channel
// quantization keeps cosine 0.877 on 8 held-out text lines in ONNX Runtime.
// Every candidate at uint16 (8-bit weights) reaches only 0.988, and ranking
// single nodes in float by their gain alone needed 289 of 299 nodes (96% of
// the float file). With widen_to = ["uint16", "float"] the size-aware search
// starts from the free point (nodes without weights in float, the others at
// uint16: no extra bytes; 0.988 on the 8 holdout lines) and pays for the
// weighted nodes in float the floor needs (ranked by gain per byte, or
// cheapest first). give_back = false: with free widenings given back to 8
// bits the plan keeps the floor on the search's lines but measures 0.98-0.985 on
// the held-out ones, in ONNX Runtime and the executor alike (they disagreed
// before quantize-static 7; tests/data/real_models.md). The whole test takes
// about 30 s on 2 threads, so it runs in `make test`.
TEST_CASE(
    "select-precision ONNX: the PP-OCRv4 recogniser reaches cosine 0.99 in ONNX Runtime with nodes in float "
    "at most 45% of its float size",
    "[select-precision][real-models]") {
  const fs::path model = models_dir() / "ppocrv4_rec.onnx";
  if (!fs::exists(model)) {
    WARN("skipped: " << model.string() << " is missing; run `make models` (make test does) to fetch it");
    return;
  }
  const std::string python = ort_python("[select-precision]");
  test::TempDir dir("qforge_selprec_rec_");
  const fs::path d = dir.path;
  // Calibration lines (seed 7), the search's holdout lines (seed 9) and the
  // held-out lines ONNX Runtime measures (seed 8, as the image dataset
  // computes them).
  py(python, "synth_inputs.py", "images line " + q(d / "cal") + " 8 --seed 7");
  py(python, "synth_inputs.py", "images line " + q(d / "hold") + " 8 --seed 9");
  py(python, "synth_inputs.py", "images line " + q(d / "png") + " 8 --seed 8");
  py(python, "synth_inputs.py",
     "arrays " + q(d / "eval") + " " + q(d / "png") + "/*.png --input x --channels bgr --mean 0.5 --std 0.5");

  // Per-channel weights and 16-bit Q/DQ: com.microsoft keeps the model at
  // opset 13 (the version converter stops at 17; ReduceMean's axes).
  const std::string opts =
      "activation_type = \"uint8\", weight_type = \"int8\", per_channel = true, qdq_domain = "
      "\"com.microsoft\"";
  const std::string head =
      "pipeline = [ { pass = \"upgrade-opset\", opset = 13 }, { pass = \"fold-constants\" },\n"
      "  { pass = \"calibrate\", dataset = \"cal\", method = \"percentile\" },\n";
  const std::string image = "channels = \"bgr\"\nmean = 0.5\nstd = 0.5\n";
  std::string toml = "[build]\noutput = \"dist\"\n\n[models.rec]\npath = \"" + model.string() +
                     "\"\n\n[datasets.cal]\nimages = [\"cal/*.png\"]\n" + image +
                     "\n[datasets.hold]\nimages = [\"hold/*.png\"]\n" + image;
  toml += "\n[[targets]]\nname = \"rec-u8\"\nmodel = \"rec\"\n" + head + "  { pass = \"quantize-static\", " +
          opts + " } ]\n";
  toml += "\n[[targets]]\nname = \"rec-mixed\"\nmodel = \"rec\"\n" + head +
          "  { pass = \"select-precision\", dataset = \"hold\", min_cosine = 0.99, "
          "widen_to = [\"uint16\", \"float\"], give_back = false, " +
          opts + " },\n  { pass = \"quantize-static\", " + opts + " } ]\n";
  std::ofstream(d / "qforge.toml") << toml;
  int st = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string out =
      test::run_capture("cd " + q(d) + " && " + test::shell_quote(QFORGE_BIN) + " build -t 2 2>&1", st);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(toml << "\n" << out);
  REQUIRE(st == 0);
  const nlohmann::json report = nlohmann::json::parse(test::slurp(d / "dist/report.json"));
  const auto& mixed = target_of(report, "rec-mixed").at("metrics");
  CHECK(mixed.at("wide_nodes").get<double>() >= 1);
  CHECK(mixed.at("cosine").get<double>() >= 0.99);
  CHECK(mixed.at("paid_nodes").get<double>() >= 1);
  CHECK(mixed.at("free_cosine").get<double>() < 0.99);
  double search_seconds = 0;
  for (const auto& step : report.at("steps"))
    if (step.at("pass") == "select-precision") search_seconds = step.at("seconds").get<double>();

  const std::string res = py(python, "ort_fidelity.py",
                             q(model) + " " + q(d / "dist/rec-u8.onnx") + " " + q(d / "dist/rec-mixed.onnx") +
                                 " --data " + q(d / "eval"));
  INFO(res);
  const std::vector<nlohmann::json> js = json_lines(res);
  REQUIRE(js.size() == 2u);
  const double u8c = js[0].at("cosine_mean").get<double>(), mixc = js[1].at("cosine_mean").get<double>();
  const double fsize = static_cast<double>(fs::file_size(model));
  const double msize = static_cast<double>(fs::file_size(d / "dist/rec-mixed.onnx"));
  std::cout << "PP-OCRv4 rec in ONNX Runtime, 8 held-out lines: u8/s8 cosine " << u8c << " ("
            << 100 * static_cast<double>(fs::file_size(d / "dist/rec-u8.onnx")) / fsize
            << "% of the float file); mixed: " << mixed.at("float_nodes").get<double>()
            << " node(s) in float (" << mixed.at("paid_nodes").get<double>() << " with weights), "
            << mixed.at("int16_nodes").get<double>() << " at uint16, " << mixed.at("int8_nodes").get<double>()
            << " at uint8 (free point " << mixed.at("free_cosine").get<double>() << ", plan "
            << mixed.at("cosine").get<double>() << " on the holdout lines): cosine " << mixc << " (min "
            << js[1].at("cosine_min").get<double>() << ", top-1 "
            << js[1].at("argmax_agreement").get<double>() << "), " << 100 * msize / fsize
            << "% of the float file; search " << search_seconds << " s ("
            << mixed.at("measurements").get<double>() << " measurements), build (both targets) " << seconds
            << " s\n";
  CHECK(mixc >= 0.99);
  CHECK(msize <= 0.45 * fsize);
}
