// Hardware profiles: the built-in library (manifests/profiles), `extends`,
// aliases, [profiles.<id>] in a manifest, [memory] budgets, the [onnx]
// constraints refusing options at plan time, and every built-in ONNX
// profile's constraints checked on an artifact it builds, read back with the
// onnx Python package (tests/tools/quant_facts.py) and run in ONNX Runtime.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "qforge/build.h"
#include "qforge/diag.h"
#include "qforge/plugin_host.h"
#include "qforge/profile.h"
#include "qforge/registry.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace qforge;
using Json = nlohmann::json;

struct Run {
  int rc;
  std::string out;
};

// Runs a shell command in `dir`; stdout and stderr together.
Run run(const std::string& cmd, const fs::path& dir) {
  int st = 0;
  std::string out = test::run_capture("cd " + test::shell_quote(dir.string()) + " && " + cmd + " 2>&1", st);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128, out};
}

std::string qforge_bin() { return test::shell_quote(QFORGE_BIN); }
std::string bin_dir() { return fs::path(QFORGE_BIN).parent_path().string(); }
std::string python() { return std::getenv("QFORGE_PYTHON") ? std::getenv("QFORGE_PYTHON") : "python3"; }
std::string tool(const std::string& name) { return std::string(QFORGE_SOURCE_DIR) + "/tests/tools/" + name; }

Registry& registry() {
  static Registry reg;
  static PluginHost host(reg);
  static bool once = (register_builtins(host), true);
  (void)once;
  return reg;
}

ProfileSet builtin_profiles(Diagnostics& d) {
  ProfileSet ps;
  ps.load_dir(std::string(QFORGE_SOURCE_DIR) + "/manifests/profiles", d);
  return ps;
}

// A directory with the tiny image classifier and calibration images.
struct Workspace {
  test::TempDir dir{"qforge_profiles_"};
  Workspace() {
    REQUIRE(run(test::shell_quote(bin_dir() + "/make_tiny_onnx") + " cnn cnn.onnx", dir.path).rc == 0);
    REQUIRE(run(test::shell_quote(bin_dir() + "/make_images") + " images 8 40 36 5", dir.path).rc == 0);
  }
  void manifest(const std::string& targets, const std::string& extra = "") const {
    std::ofstream(dir / "qforge.toml") << R"([models.cnn]
path = "cnn.onnx"
[datasets.photos]
images = ["images/*.png"]
resize = [32, 32]
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
)" << extra << targets;
  }
};

const char* kStatic =
    R"(pipeline = [ { pass = "calibrate", dataset = "photos" }, { pass = "quantize-static" } ]
)";

}  // namespace

TEST_CASE("the built-in profiles load, validate, cite documentation, and keep the old names as aliases",
          "[profiles]") {
  Diagnostics d;
  ProfileSet ps = builtin_profiles(d);
  validate_profiles(ps, registry(), d);
  INFO(d.render());
  REQUIRE_FALSE(d.has_errors());
  for (const char* name : {"ort-cpu-vnni", "ort-cpu-avx2", "ort-cpu-arm64", "xnnpack", "qnn-htp", "tensorrt",
                           "openvino-cpu", "openvino-npu", "tflite-int8", "gguf-cpu-avx2", "gguf-cpu-neon",
                           "gguf-cuda", "gguf-metal", "sbc-4gb", "sbc-8gb", "phone-npu"}) {
    INFO(name);
    const Profile* p = ps.find(name);
    REQUIRE(p);
    CHECK_FALSE(p->docs.empty());
    CHECK_FALSE(p->backend.empty());
    CHECK((p->format == "onnx" || p->format == "gguf"));
    CHECK((p->onnx.present || p->gguf.present));
  }
  bool alias = false;
  const Profile* avx2 = ps.find("cpu-x86-avx2", &alias);
  REQUIRE(avx2);
  CHECK(alias);
  CHECK(avx2->name == "ort-cpu-avx2");
  // extends: avx2 keeps the VNNI profile's [onnx] and overrides reduce_range.
  CHECK(avx2->onnx.activation_types == ps.find("ort-cpu-vnni")->onnx.activation_types);
  CHECK(avx2->defaults.at("quantize-static").at("reduce_range").b);
  CHECK_FALSE(ps.find("ort-cpu-vnni")->defaults.at("quantize-static").at("reduce_range").b);
  CHECK(avx2->digest != ps.find("ort-cpu-vnni")->digest);
  // Budgets: a share of the RAM minus a reserve, or fixed.
  CHECK(ps.find("sbc-4gb")->memory.bytes() == 4ull * 1024 * 1024 * 1024 * 3 / 4 - 512ull * 1024 * 1024);
  CHECK(ps.find("phone-npu")->memory.bytes() == 1ull << 30);
  CHECK(ps.find("phone-npu")->onnx.activation_types == ps.find("qnn-htp")->onnx.activation_types);
  CHECK(ps.find("sbc-8gb")->gguf.fast_types == ps.find("gguf-cpu-neon")->gguf.fast_types);
  CHECK(ps.find("tensorrt")->memory.bytes() == 0);
  // An ONNX profile's [fidelity] floor is select-precision's default floor; a GGUF one's is not.
  CHECK(ps.find("phone-npu")->defaults.at("select-precision").at("min_cosine").as_number() == Approx(0.99));
  CHECK_FALSE(ps.find("sbc-4gb")->defaults.at("select-precision").count("min_cosine"));
  // `qforge list profiles` shows backend and budget.
  test::TempDir dir;
  auto r = run(qforge_bin() + " list profiles", dir.path);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("sbc-4gb") && Catch::Contains("2.5 GiB") &&
                        Catch::Contains("llama.cpp-cpu") &&
                        Catch::Contains("deprecated names: cpu-x86-avx2"));
}

TEST_CASE("profile files: bad sections, unknown parents and cycles are located errors", "[profiles]") {
  test::TempDir dir;
  fs::create_directories(dir.path / "p");
  std::ofstream(dir / "p/a.toml") << "name = \"a\"\nextends = \"b\"\n";
  std::ofstream(dir / "p/b.toml") << "name = \"b\"\nextends = \"a\"\n";
  std::ofstream(dir / "p/c.toml") << "name = \"c\"\nextends = \"tensorrtt\"\n";
  std::ofstream(dir / "p/d.toml") << R"(name = "d"
[onnx]
activation_types = ["uint8", "uint9"]
pairs = ["uint8-int8"]
zero_point_zero = true
[memory]
ram = "4GiB"
reserve = "5GiB"
[gguf]
fast_type = ["Q4_0"]
)";
  Diagnostics d;
  ProfileSet ps = builtin_profiles(d);
  REQUIRE_FALSE(d.has_errors());
  ps.load_dir((dir.path / "p").string(), d);
  const std::string text = d.render();
  CHECK_THAT(text, Catch::Contains("a.toml:2:11: error: profile 'a' extends itself through a -> b -> a") ||
                       Catch::Contains("b.toml:2:11: error: profile 'b' extends itself"));
  CHECK_THAT(text, Catch::Contains("c.toml:2:11: error: profile 'c' extends unknown profile 'tensorrtt' "
                                   "(did you mean 'tensorrt'?)"));
  CHECK_THAT(text, Catch::Contains("d.toml:3:30: error: 'uint9' is not a valid item of 'activation_types'"));
  CHECK_THAT(text,
             Catch::Contains("'uint8-int8' in 'pairs' of [onnx] of profile 'd' must be ACTIVATION:WEIGHT"));
  CHECK_THAT(text, Catch::Contains("zero_point_zero but lists the unsigned activation type 'uint8'"));
  CHECK_THAT(text, Catch::Contains("the reserve leaves no memory for the model"));
  CHECK_THAT(
      text, Catch::Contains("unknown key 'fast_type' in [gguf] of profile 'd' (did you mean 'fast_types'?)"));
}

TEST_CASE(
    "a manifest's own profile extends a built-in one, and the [onnx] constraints refuse options at plan time",
    "[profiles]") {
  Workspace w;
  w.manifest(R"(
[[targets]]
name = "trt"
model = "cnn"
profile = "my-gpu"
pipeline = [ { pass = "calibrate", dataset = "photos" },
             { pass = "quantize-static", activation_type = "uint8" } ]

[[targets]]
name = "htp"
model = "cnn"
profile = "qnn-htp"
pipeline = [ { pass = "calibrate", dataset = "photos" },
             { pass = "quantize-static", activation_type = "uint8", weight_type = "int4" } ]

[[targets]]
name = "llm-profile"
model = "cnn"
profile = "gguf-cpu-avx2"
pipeline = [ { pass = "quantize-dynamic" } ]
)",
             R"([profiles.my-gpu]
extends = "tensorrt"
description = "a 16 GB GPU"
[profiles.my-gpu.memory]
budget = "12GiB"
)");
  auto r = run(qforge_bin() + " plan", w.dir.path);
  CHECK(r.rc == 1);
  CHECK_THAT(r.out,
             Catch::Contains("option activation_type = \"uint8\" of pass 'quantize-static' is forbidden by "
                             "profile 'my-gpu', which allows [\"int8\"]"));
  CHECK_THAT(r.out, Catch::Contains("tensorrt.toml"));  // the note points at the constraint, in the parent
  CHECK_THAT(r.out,
             Catch::Contains("activation_type = \"uint8\", weight_type = \"int4\" is not a combination "
                             "profile 'qnn-htp' allows"));
  CHECK_THAT(r.out, Catch::Contains(
                        "profile 'gguf-cpu-avx2' is for gguf models, but target 'llm-profile' makes onnx"));

  // The same profile, obeyed: the target builds with its defaults; the deprecated name warns.
  w.manifest(R"(
[[targets]]
name = "trt"
model = "cnn"
profile = "my-gpu"
)" + std::string(kStatic) +
                 R"(
[[targets]]
name = "old"
model = "cnn"
profile = "cpu-x86-vnni"
pipeline = [ { pass = "quantize-weights" } ]
)",
             "[profiles.my-gpu]\nextends = \"tensorrt\"\n");
  r = run(qforge_bin() + " build", w.dir.path);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK_THAT(r.out, Catch::Contains("profile 'cpu-x86-vnni' is a deprecated name of 'ort-cpu-vnni'"));
  auto report = Json::parse(test::slurp(w.dir / "dist/report.json"));
  CHECK(report["targets"][1]["profile"] == "ort-cpu-vnni");
}

TEST_CASE("a pass default the device cannot run is replaced by the first value the profile allows",
          "[profiles]") {
  Workspace w;
  w.manifest(R"(
[[targets]]
name = "w"
model = "cnn"
profile = "tensorrt"
pipeline = [ { pass = "quantize-weights", op_types = ["Gemm"] } ]
)");
  auto r = run(qforge_bin() + " plan", w.dir.path);
  INFO(r.out);
  CHECK_THAT(r.out, Catch::Contains("bits=8"));  // quantize-weights defaults to 4 bits; TensorRT's INT8 has 8
}

TEST_CASE(
    "every built-in ONNX profile's constraints hold on the artifact it builds, which runs in ONNX Runtime",
    "[profiles][ort]") {
  Workspace w;
  const std::vector<std::string> onnx_profiles = {
      "ort-cpu-vnni", "ort-cpu-avx2", "ort-cpu-arm64", "xnnpack",     "qnn-htp",
      "tensorrt",     "openvino-cpu", "openvino-npu",  "tflite-int8", "phone-npu"};
  std::string list;
  for (const auto& p : onnx_profiles) list += (list.empty() ? "\"" : ", \"") + p + "\"";
  w.manifest("[[targets]]\nname = \"cnn-{p}\"\nmodel = \"cnn\"\nprofile = \"{p}\"\nmatrix = { p = [" + list +
             "] }\n" + kStatic);
  auto r = run(qforge_bin() + " build", w.dir.path);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  Diagnostics d;
  ProfileSet ps = builtin_profiles(d);
  for (const auto& name : onnx_profiles) {
    INFO("profile " << name);
    const OnnxSpec& o = ps.find(name)->onnx;
    const std::string artifact = "dist/cnn-" + name + ".onnx";
    auto f =
        run(test::shell_quote(python()) + " " + test::shell_quote(tool("quant_facts.py")) + " " + artifact,
            w.dir.path);
    INFO(f.out);
    REQUIRE(f.rc == 0);
    const Json facts = Json::parse(f.out);
    REQUIRE(facts["activations"].size() >= 5);
    REQUIRE(facts["weights"].size() >= 4);
    auto in = [](const std::vector<std::string>& l, const std::string& s) {
      return l.empty() || std::find(l.begin(), l.end(), s) != l.end();
    };
    CHECK(facts["opset"].get<int>() >= o.min_opset);
    std::set<std::string> signedness;
    for (const auto& a : facts["activations"]) {
      CHECK(in(o.activation_types, a["type"]));
      signedness.insert(a["type"].get<std::string>().substr(0, 1));
      if (o.zero_point_zero)
        for (int z : a["zero_points"]) CHECK(z == 0);
    }
    for (const auto& wt : facts["weights"]) {
      const std::string t = wt["type"];
      CHECK(in(o.weight_types, t));
      if (o.zero_point_zero || o.symmetric_weights)
        for (int z : wt["zero_points"]) CHECK(z == (t[0] == 'u' && !o.zero_point_zero ? 128 : 0));
      if (wt["per_channel"].get<bool>())
        for (const auto& op : wt["readers"]) CHECK(in(o.per_channel_ops, op));
    }
    for (const auto& p : facts["pairs"])
      CHECK(std::find(o.pairs.begin(), o.pairs.end(),
                      std::make_pair(p[0].get<std::string>(), p[1].get<std::string>())) != o.pairs.end());
    // The issue's examples, spelled out.
    if (name == "tensorrt")
      for (const auto& a : facts["activations"]) CHECK(a["zero_points"] == Json::array({0}));
    if (name == "qnn-htp")
      for (const auto& p : facts["pairs"]) {
        CHECK(p[0] == "uint16");
        CHECK(p[1].get<std::string>().find('8') != std::string::npos);
      }
    if (name == "xnnpack")
      for (const auto& p : facts["pairs"]) CHECK(p[0].get<std::string>()[0] == p[1].get<std::string>()[0]);
    // It runs in ONNX Runtime, close to the float model.
    auto c = run(test::shell_quote(python()) + " " + test::shell_quote(tool("ort_compare.py")) +
                     " cnn.onnx " + artifact + " --samples 4",
                 w.dir.path);
    INFO(c.out);
    REQUIRE(c.rc == 0);
    CHECK(Json::parse(c.out)["cosine"].get<double>() > 0.99);
  }
  // Cached and uncached builds give the same bytes.
  const auto first = test::slurp(w.dir / "dist/cnn-tensorrt.onnx");
  REQUIRE(run(qforge_bin() + " build --no-cache", w.dir.path).rc == 0);
  CHECK(test::slurp(w.dir / "dist/cnn-tensorrt.onnx") == first);
}

namespace {
// A runtime that takes per-channel weights for Conv only, one scale for an
// Add's inputs and output, and Softmax's output on a fixed grid of 1/256
// (as TFLite's int8 Softmax).
const char* kStrictProfile = R"([profiles.strict]
extends = "ort-cpu-vnni"
[profiles.strict.onnx]
per_channel_ops = ["Conv"]
shared_scale_ops = ["Add"]
fixed_outputs = ["Softmax=0:0.99609375"]
)";
const char* kWithSoftmax =
    R"(pipeline = [ { pass = "calibrate", dataset = "photos" }, { pass = "quantize-static", op_types = ["Conv", "Gemm", "Add", "Concat", "MaxPool", "Flatten", "AveragePool", "GlobalAveragePool", "Relu", "Clip", "Softmax"] } ]
)";
}  // namespace

TEST_CASE(
    "a profile's per_channel_ops, shared_scale_ops and fixed_outputs shape the artifact quantize-static "
    "writes",
    "[profiles][ort]") {
  Workspace w;
  w.manifest(
      "[[targets]]\nname = \"strict\"\nmodel = \"cnn\"\nprofile = \"strict\"\n" + std::string(kWithSoftmax),
      kStrictProfile);
  auto r = run(qforge_bin() + " build", w.dir.path);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  // Said, per op type.
  const auto md = test::slurp(w.dir / "dist/report.md");
  const std::string report(md.begin(), md.end());
  CHECK_THAT(report, Catch::Contains("per-tensor weight scales for 1 Gemm (not in per_channel_ops)") &&
                         Catch::Contains("inputs and output share one scale for 1 Add (shared_scale_ops)") &&
                         Catch::Contains("fixed output ranges for 1 Softmax (fixed_outputs)"));
  auto f =
      run(test::shell_quote(python()) + " " + test::shell_quote(tool("quant_facts.py")) + " dist/strict.onnx",
          w.dir.path);
  INFO(f.out);
  REQUIRE(f.rc == 0);
  const Json facts = Json::parse(f.out);
  // Per-channel weights for the Conv layers only.
  size_t conv_pc = 0;
  for (const auto& wt : facts["weights"]) {
    if (wt["readers"] == Json::array({"Gemm"})) CHECK_FALSE(wt["per_channel"].get<bool>());
    if (wt["readers"] == Json::array({"Conv"}) && wt["per_channel"].get<bool>()) ++conv_pc;
  }
  CHECK(conv_pc >= 2);
  size_t adds = 0, softmaxes = 0;
  for (const auto& n : facts["nodes"]) {
    if (n["op"] == "Add") {
      ++adds;
      REQUIRE(n["inputs"].size() == 2u);
      for (const auto& in : n["inputs"]) CHECK(in == n["output"]);
    }
    if (n["op"] == "Softmax") {
      ++softmaxes;
      CHECK(n["output"][0].get<double>() == Approx(1.0 / 256).epsilon(1e-6));
      CHECK(n["output"][1].get<int>() == 0);
    }
  }
  CHECK(adds == 1);
  CHECK(softmaxes == 1);
  // It runs in ONNX Runtime, close to the float model.
  auto c = run(test::shell_quote(python()) + " " + test::shell_quote(tool("ort_compare.py")) +
                   " cnn.onnx dist/strict.onnx --samples 4",
               w.dir.path);
  INFO(c.out);
  REQUIRE(c.rc == 0);
  CHECK(Json::parse(c.out)["cosine"].get<double>() > 0.98);
  // Cached and uncached builds give the same bytes.
  const auto first = test::slurp(w.dir / "dist/strict.onnx");
  REQUIRE(run(qforge_bin() + " build --no-cache", w.dir.path).rc == 0);
  CHECK(test::slurp(w.dir / "dist/strict.onnx") == first);
}

TEST_CASE("per_channel_ops beyond the profile's is refused at plan time, naming both", "[profiles]") {
  Workspace w;
  w.manifest(R"(
[[targets]]
name = "strict"
model = "cnn"
profile = "strict"
pipeline = [ { pass = "calibrate", dataset = "photos" }, { pass = "quantize-static", per_channel_ops = ["Conv", "Gemm"] } ]
)",
             kStrictProfile);
  auto r = run(qforge_bin() + " plan", w.dir.path);
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK_THAT(r.out, Catch::Contains("per_channel_ops") && Catch::Contains("profile 'strict'"));
}

TEST_CASE("an artifact that breaks its profile fails its target, naming the node, and is not written",
          "[profiles]") {
  // An explicit fixed_outputs replaces the profile's (a list option); the
  // check of the artifact catches the Softmax coded on another grid.
  Workspace w;
  w.manifest(R"(
[[targets]]
name = "narrow"
model = "cnn"
profile = "strict"
pipeline = [ { pass = "calibrate", dataset = "photos" }, { pass = "quantize-static", fixed_outputs = ["Softmax=0:1"], op_types = ["Conv", "Gemm", "Softmax"] } ]
)",
             kStrictProfile);
  auto r = run(qforge_bin() + " build", w.dir.path);
  CHECK(r.rc == 1);
  CHECK_THAT(r.out,
             Catch::Contains("the artifact breaks profile 'strict'") &&
                 Catch::Contains("(Softmax): its output is quantized with scale 0.00392157, zero point 0; "
                                 "the profile fixes Softmax's output range to [0, 0.996094]"));
  CHECK_FALSE(fs::exists(w.dir.path / "dist/narrow.onnx"));
}
