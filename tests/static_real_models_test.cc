// Held-out real trained models (tests/data/real_models.md: not the ones the
// executor's tests run) through calibrate + quantize-static per channel
// (uint8 activations, int8 weights), from ONE manifest with a matrix over the
// models, then run in ONNX Runtime next to the float model on held-out inputs
// (tests/tools/ort_fidelity.py): a convolutional network (the PP-OCRv3
// detector, opset 12, every weight a Constant node), an attention model (the
// g2p-id character BERT, tf2onnx, opset 13) and the PP-OCR direction
// classifier (opset 11, Constant-node weights). Calibration and held-out
// inputs are generated (tests/tools/synth_inputs.py): document pages and text
// lines as PNG read through the manifest's image datasets, token sequences as
// .npz. Each model keeps cosine >= 0.99 against its float model, or the test
// asserts the documented lower bound and names the layer that prevents 0.99:
// a second target leaves that one node in float and must reach 0.99.
//
// A model file that is missing because `make models` was not run makes the
// test say so and stop (Catch2 WARN), not fail.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "onnx_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace qforge;
using namespace qforge::testutil;

struct HeldOut {
  const char* key;    // the manifest's model and dataset name
  const char* file;   // build/models/<file>.onnx
  const char* what;   // for the messages
  double min_cosine;  // the bar: 0.99, or the documented bound below it
  // When min_cosine < 0.99: the node that prevents 0.99 (left in float by the
  // "-without" target, which must then reach 0.99), and why.
  const char* culprit;
  const char* why;
};

// Measured (percentile 99.999, 4-8 calibration samples, ONNX Runtime 1.31.1):
// see tests/data/real_models.md.
const HeldOut kModels[] = {
    {"det", "ppocrv3_det", "PP-OCRv3 detector (convolutional, opset 12, Constant weights)", 0.99, "", ""},
    // 0.989: left alone, the attention scores of the first encoder block lose
    // the most (of the 167 quantized nodes, leaving any other one in float
    // gives at most 0.9906; this one 0.993).
    {"bert", "g2p_id_bert", "g2p-id character BERT (attention, opset 13)", 0.985, "MatMul__281",
     "encoder 0's attention scores, the scaled query times the transposed key, before the softmax"},
    {"cls", "ppocr_mobile_v2_cls", "PP-OCR direction classifier (MobileNetV3, opset 11, Constant weights)",
     0.99, "", ""},
};

}  // namespace

TEST_CASE(
    "held-out real models: one manifest with a matrix over a conv net, an attention model and a classifier, "
    "quantize-static per channel keeps cosine 0.99 in ONNX Runtime or names the layer",
    "[real-models][quantize-static]") {
  std::map<std::string, fs::path> paths;
  for (const HeldOut& m : kModels) {
    const fs::path p = models_dir() / (std::string(m.file) + ".onnx");
    if (!fs::exists(p)) {
      WARN("skipped: " << p.string() << " is missing; run `make models` (make test does) to fetch it");
      return;
    }
    paths[m.key] = p;
  }
  const std::string python = ort_python("[real-models]");
  test::TempDir dir("qforge_static_real_");
  const fs::path d = dir.path;
  // Calibration inputs (seed 7) and held-out inputs (seed 8, as float arrays
  // computed from the PNGs the way the image dataset computes them).
  const std::string imagenet = "--channels bgr --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225";
  const std::string half = "--channels bgr --mean 0.5 --std 0.5";
  py(python, "synth_inputs.py", "images page " + q(d / "cal/det") + " 4 --seed 7 --size 320,320");
  py(python, "synth_inputs.py", "images page " + q(d / "png/det") + " 4 --seed 8 --size 320,320");
  py(python, "synth_inputs.py", "images line180 " + q(d / "cal/cls") + " 8 --seed 7");
  py(python, "synth_inputs.py", "images line180 " + q(d / "png/cls") + " 8 --seed 8");
  py(python, "synth_inputs.py",
     "arrays " + q(d / "eval/det") + " " + q(d / "png/det") + "/*.png --input x " + imagenet);
  py(python, "synth_inputs.py",
     "arrays " + q(d / "eval/cls") + " " + q(d / "png/cls") + "/*.png --input x " + half);
  const std::string tokens = " 4 --input input_1 --batch 8 --vocab 2,31 --mask 31";
  py(python, "synth_inputs.py", "tokens " + q(d / "cal/bert") + tokens + " --seed 7");
  py(python, "synth_inputs.py", "tokens " + q(d / "eval/bert") + tokens + " --seed 8");

  std::string toml = "[build]\noutput = \"dist\"\ncache = \".qforge/cache\"\n";
  for (const HeldOut& m : kModels)
    toml += std::string("\n[models.") + m.key + "]\npath = \"" + paths[m.key].string() + "\"\n";
  toml +=
      "\n[datasets.det]\nimages = [\"cal/det/*.png\"]\nchannels = \"bgr\"\n"
      "mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n"
      "\n[datasets.cls]\nimages = [\"cal/cls/*.png\"]\nchannels = \"bgr\"\nmean = 0.5\nstd = 0.5\n"
      "\n[datasets.bert]\nfiles = [\"cal/bert/*.npz\"]\n";
  // One recipe for every model: per-channel weights need opset 13, so the
  // opset 11 and 12 models are raised first (a no-op, with a warning, for the
  // BERT, already at 13).
  const std::string pipeline =
      "pipeline = [ { pass = \"upgrade-opset\", opset = 13 },\n"
      "  { pass = \"calibrate\", dataset = \"{m}\", method = \"percentile\" },\n"
      "  { pass = \"quantize-static\", activation_type = \"uint8\", weight_type = \"int8\", per_channel = "
      "true";
  toml += "\n[[targets]]\nname = \"{m}-static\"\nmodel = \"{m}\"\nmatrix = { m = [";
  for (size_t i = 0; i < std::size(kModels); ++i)
    toml += std::string(i ? ", " : "") + "\"" + kModels[i].key + "\"";
  toml += "] }\n" + pipeline + " } ]\n";
  for (const HeldOut& m : kModels)
    if (*m.culprit)
      toml += std::string("\n[[targets]]\nname = \"") + m.key + "-without\"\nmodel = \"" + m.key + "\"\n" +
              std::regex_replace(pipeline, std::regex("\\{m\\}"), m.key) + ", exclude_nodes = [\"" +
              m.culprit + "\"] } ]\n";
  std::ofstream(d / "qforge.toml") << toml;
  int st = 0;
  const std::string out =
      test::run_capture("cd " + q(d) + " && " + test::shell_quote(QFORGE_BIN) + " build -t 2 2>&1", st);
  INFO(toml << "\n" << out);
  REQUIRE(st == 0);
  const nlohmann::json report = nlohmann::json::parse(test::slurp(d / "dist/report.json"));

  for (const HeldOut& m : kModels) {
    DYNAMIC_SECTION(m.file) {
      const std::string target = std::string(m.key) + "-static";
      bool reported = false;
      for (const auto& t : report.at("targets"))
        if (t.at("name") == target) {
          reported = true;
          CHECK(t.at("metrics").at("quantized_nodes").get<double>() >= 1);
          // Below float; the BERT keeps its embedding tables (Gather of a
          // constant) in float, so no bound near 8 for every model.
          CHECK(t.at("bits_per_weight").get<double>() < 32);
        }
      CHECK(reported);
      std::string cands = q(d / "dist" / (target + ".onnx"));
      if (*m.culprit) cands += " " + q(d / "dist" / (std::string(m.key) + "-without.onnx"));
      const std::string res =
          py(python, "ort_fidelity.py", q(paths[m.key]) + " " + cands + " --data " + q(d / "eval" / m.key));
      INFO(res);
      std::vector<nlohmann::json> js;
      for (size_t a = 0, b; (b = res.find('\n', a)) != std::string::npos; a = b + 1)
        if (res[a] == '{') js.push_back(nlohmann::json::parse(res.substr(a, b - a)));
      REQUIRE(js.size() == (*m.culprit ? 2u : 1u));
      const double cosine = js[0].at("cosine_mean").get<double>();
      std::cout << "held-out " << m.file << " (" << m.what
                << "), quantize-static u8/s8 per channel: cosine mean " << cosine << ", min "
                << js[0].at("cosine_min").get<double>() << ", SQNR " << js[0].at("sqnr_db").get<double>()
                << " dB over " << js[0].at("samples").get<int>() << " held-out samples\n";
      CHECK(cosine >= m.min_cosine);
      if (*m.culprit) {
        const double without = js[1].at("cosine_mean").get<double>();
        std::cout << "  below 0.99 because of node '" << m.culprit << "' (" << m.why
                  << "): left in float, cosine " << without << "\n";
        CHECK(without >= 0.99);
      }
    }
  }
}
