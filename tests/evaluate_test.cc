// evaluate: the fidelity sums (qforge/fidelity.h, shared with `qforge
// compare`), and the pass in a build: calibrate -> quantize-static ->
// evaluate on a generated model, its metrics in report.json / report.md / the
// terminal checked against ONNX Runtime (tests/tools/ort_compare.py on the
// same samples), the float model against itself, a cached build reporting the
// same, a sample that does not fit, and memory flat from 8 to 64 samples.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "onnx_format.h"
#include "onnx_test_util.h"
#include "qforge/fidelity.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace qforge;
using namespace qforge::testutil;
using Json = nlohmann::json;

RunValue f32(std::vector<int64_t> shape, const std::vector<float>& v) {
  return RunValue{ElemType::F32, std::move(shape), make_blob(v.data(), v.size() * 4)};
}

using test::write_npy;

// Writes inputs (DIR/data/s<i>.npz) for `model` with tests/tools/ort_reference.py.
void ort_inputs(const fs::path& model, const fs::path& dir, const std::string& args) {
  int status = 0;
  const std::string cmd = test::shell_quote(ort_python("[evaluate]")) + " " +
                          test::shell_quote((source_dir() / "tests/tools/ort_reference.py").string()) + " " +
                          test::shell_quote(model.string()) + " " + test::shell_quote(dir.string()) + " " +
                          args + " 2>&1";
  const std::string out = test::run_capture(cmd, status);
  INFO(cmd << "\n" << out);
  REQUIRE(status == 0);
}

std::string qforge_in(const fs::path& dir, const std::string& args, int& status) {
  return test::run_capture(
      "cd " + test::shell_quote(dir.string()) + " && " + test::shell_quote(QFORGE_BIN) + " " + args + " 2>&1",
      status);
}

Json report_of(const fs::path& dir) { return Json::parse(file_bytes(dir / "dist/report.json")); }

const Json& target_of(const Json& report, const std::string& name) {
  for (const auto& t : report["targets"])
    if (t["name"] == name) return t;
  FAIL("no target '" << name << "' in report.json");
  static Json none;
  return none;
}

}  // namespace

TEST_CASE("fidelity sums: cosine, SQNR, max abs error, argmax agreement along an axis", "[evaluate]") {
  // Two samples of a [2, 3] output; the candidate is off by 0.5 in one element.
  FidelityAccumulator acc;
  acc.add(f32({2, 3}, {1, 2, 3, 3, 2, 1}), f32({2, 3}, {1, 2, 3, 3, 2, 1}), "s0");
  acc.add(f32({2, 3}, {1, 2, 3, 0, 1, 0}), f32({2, 3}, {1, 2, 3, 0, 1, 0.5f}), "s1");
  FidelityStats s = acc.stats();
  const double rr = 1 + 4 + 9 + 9 + 4 + 1 + 1 + 4 + 9 + 0 + 1 + 0, cc = rr + 0.25, dot = rr;
  CHECK(s.cosine == Approx(dot / std::sqrt(rr * cc)).epsilon(1e-12));
  CHECK(s.sqnr_db == Approx(10 * std::log10(rr / 0.25)).epsilon(1e-12));
  CHECK(s.max_abs_err == 0.5);
  CHECK(s.rows == 4);
  CHECK(s.argmax_agreement == 1);  // argmax of {0, 1, 0.5} is still 1
  CHECK(s.elements == 12);

  // Along axis 0 of a [3, 2]: two rows (columns); one disagrees.
  FidelityAccumulator col(0);
  col.add(f32({3, 2}, {0, 5, 1, 0, 0, 0}), f32({3, 2}, {0, 0, 1, 0, 0, 9}), "s");
  CHECK(col.stats().rows == 2);
  CHECK(col.stats().argmax_agreement == 0.5);

  // Equal outputs: cosine 1, SQNR +inf; all zeros too.
  FidelityAccumulator same;
  same.add(f32({4}, {0, 0, 0, 0}), f32({4}, {0, 0, 0, 0}), "z");
  CHECK(same.stats().cosine == 1);
  CHECK(std::isinf(same.stats().sqnr_db));

  // Shape mismatch and a missing axis name the sample and output.
  Fidelity fid({"y"});
  CHECK_THROWS_WITH(fid.add({{"y", f32({2}, {1, 2})}}, {{"y", f32({1, 2}, {1, 2})}}, "a.npy"),
                    Catch::Contains("a.npy: output 0 ('y'): the reference gives [2], the candidate [1, 2]"));
  FidelityAccumulator bad(3);
  CHECK_THROWS_WITH(bad.add(f32({2}, {1, 2}), f32({2}, {1, 2}), "b.npy"),
                    Catch::Contains("b.npy: argmax axis 3 does not exist in shape [2]"));
  // The worst output: least cosine and SQNR, largest error.
  FidelityStats a, b;
  a.cosine = 0.9, a.sqnr_db = 20, a.max_abs_err = 0.1, a.argmax_agreement = 1;
  b.cosine = 0.99, b.sqnr_db = 10, b.max_abs_err = 0.3, b.argmax_agreement = 0.5;
  const FidelityStats w = worst_of({{"a", a}, {"b", b}});
  CHECK(w.cosine == 0.9);
  CHECK(w.sqnr_db == 10);
  CHECK(w.max_abs_err == 0.3);
  CHECK(w.argmax_agreement == 0.5);
}

TEST_CASE(
    "evaluate in a build: calibrate, quantize-static, evaluate, metrics as ONNX Runtime measures them, "
    "the same from the cache",
    "[evaluate][cli]") {
  test::TempDir dir("qforge_evaluate_build_");
  fs::create_directories(dir.path / "models");
  const fs::path model = dir.path / "models/conv.onnx";
  onnxfmt::write_tiny_model("conv", model.string());
  ort_inputs(model, dir.path / "cal", "--batch 1 --samples 4 --seed 7");
  ort_inputs(model, dir.path / "holdout", "--batch 4 --samples 8 --seed 3");
  std::ofstream(dir.path / "qforge.toml")
      << "[models.conv]\npath = \"models/conv.onnx\"\n"
         "[datasets.cal]\nfiles = [\"cal/data/*.npz\"]\n"
         "[datasets.holdout]\nfiles = [\"holdout/data/*.npz\"]\n"
         "[[targets]]\nname = \"conv-int8\"\nmodel = \"conv\"\n"
         "pipeline = [ { pass = \"calibrate\", dataset = \"cal\" }, { pass = \"quantize-static\" }, "
         "{ pass = \"evaluate\", dataset = \"holdout\" } ]\n"
         "[[targets]]\nname = \"conv-float\"\nmodel = \"conv\"\n"
         "pipeline = [ { pass = \"evaluate\", dataset = \"holdout\" } ]\n";
  int st = 0;
  std::string out = qforge_in(dir.path, "build", st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("2 built"));
  CHECK_THAT(out, !Catch::Contains("changed nothing"));
  CHECK_THAT(out, Catch::Contains("fidelity of 'conv-int8' against the model as imported (8 samples):"));
  const Json r1 = report_of(dir.path);
  const Json& q = target_of(r1, "conv-int8");
  const Json& m = q["metrics"];
  INFO(m.dump(2));
  REQUIRE(m.contains("cosine"));
  REQUIRE(m.contains("outputs"));
  REQUIRE(m["outputs"].contains("y"));
  const double cosine = m["cosine"].get<double>(), sqnr = m["sqnr_db"].get<double>();
  CHECK(m["outputs"]["y"]["cosine"].get<double>() == cosine);  // one output: the worst is it
  CHECK(m["evaluation_samples"] == 8);
  CHECK(cosine < 1);
  CHECK(cosine > 0.99);
  CHECK(m["max_abs_err"].get<double>() > 0);
  CHECK(m["argmax_agreement"].get<double>() >= 0.9);
  CHECK(m["calibration_samples"] == 4);  // the other steps' metrics are still there
  // The artifact is the quantized model, not a copy of the float one.
  CHECK(q["artifact"] == "dist/conv-int8.onnx");
  CHECK(file_bytes(dir.path / "dist/conv-int8.onnx").find("QuantizeLinear") != std::string::npos);
  bool evaluate_step = false;
  for (const auto& s : r1["steps"])
    if (s["pass"] == "evaluate" && s["targets"] == Json::array({"conv-int8"})) {
      evaluate_step = true;
      CHECK(s["kind"] == "table");
      CHECK(s["status"] == "built");
    }
  CHECK(evaluate_step);

  // Independently: ONNX Runtime runs the float model and the artifact on the
  // same samples (ort_compare.py draws what ort_reference.py wrote for the
  // same seed, batch and count) and numpy computes cosine and SQNR.
  Comparison c = ort_compare_with(ort_python("[evaluate]"), model, dir.path / "dist/conv-int8.onnx",
                                  "--seed 3 --batch 4 --samples 8");
  INFO(c.output);
  REQUIRE(c.rc == 0);
  const Json oj = Json::parse(c.output.substr(c.output.rfind('{')));
  const double ort_sqnr = oj["sqnr_db"].get<double>();
  std::printf(
      "evaluate conv-int8: qforge cosine %.8f sqnr %.4f dB max_abs %.6g argmax %.4f; "
      "ONNX Runtime cosine %.8f sqnr %.4f dB max_abs %.6g argmax %.4f\n",
      cosine, sqnr, m["max_abs_err"].get<double>(), m["argmax_agreement"].get<double>(), c.cosine, ort_sqnr,
      c.max_abs, c.argmax_agreement);
  CHECK(1 - cosine == Approx(1 - c.cosine).epsilon(0.05));  // the error, within 5%
  CHECK(sqnr == Approx(ort_sqnr).margin(0.25));             // dB
  CHECK(m["argmax_agreement"].get<double>() == Approx(c.argmax_agreement).margin(1.0 / 32));

  // `qforge compare` sums the same way (qforge/fidelity.h): the same numbers.
  out = qforge_in(dir.path, "compare models/conv.onnx dist/conv-int8.onnx --data holdout/data --json", st);
  REQUIRE(st == 0);
  const Json cmp = Json::parse(out.substr(out.find('{')));
  CHECK(cmp["outputs"][0]["cosine"].get<double>() == cosine);
  CHECK(cmp["outputs"][0]["sqnr_db"].get<double>() == sqnr);
  CHECK(cmp["outputs"][0]["max_abs_error"] == m["max_abs_err"]);

  // The float model against itself: no error at all; SQNR +inf is null in JSON.
  const Json& f = target_of(r1, "conv-float")["metrics"];
  CHECK(f["cosine"] == 1.0);
  CHECK(f["sqnr_db"].is_null());
  CHECK(f["outputs"]["y"]["sqnr_db"].is_null());
  CHECK(f["max_abs_err"] == 0.0);
  CHECK(f["argmax_agreement"] == 1.0);
  CHECK(file_bytes(dir.path / "dist/conv-float.onnx") != "");

  // report.md: a fidelity table per evaluated target.
  const std::string md = file_bytes(dir.path / "dist/report.md");
  CHECK_THAT(md, Catch::Contains("## Fidelity"));
  CHECK_THAT(md, Catch::Contains("| output | cosine | sqnr_db | max_abs_err | argmax_agreement |"));
  CHECK_THAT(md, Catch::Contains("| y | 1.000000 | inf | 0 | 100.00% |"));

  // A second build is served from the cache and reports the same metrics.
  out = qforge_in(dir.path, "build", st);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("(nothing to do)"));
  const Json r2 = report_of(dir.path);
  CHECK(target_of(r2, "conv-int8")["status"] == "cached");
  CHECK(target_of(r2, "conv-int8")["metrics"] == m);
  CHECK(target_of(r2, "conv-float")["metrics"] == f);

  // Without the cache: the same artifact, byte for byte, and the same metrics.
  const std::string artifact = file_bytes(dir.path / "dist/conv-int8.onnx");
  out = qforge_in(dir.path, "build --no-cache", st);
  REQUIRE(st == 0);
  CHECK(file_bytes(dir.path / "dist/conv-int8.onnx") == artifact);
  CHECK(target_of(report_of(dir.path), "conv-int8")["metrics"] == m);
}

TEST_CASE("evaluate: options are checked at plan time, a sample that does not fit is named",
          "[evaluate][cli]") {
  test::TempDir dir("qforge_evaluate_errors_");
  fs::create_directories(dir.path / "models");
  fs::create_directories(dir.path / "bad");
  onnxfmt::write_tiny_model("conv", (dir.path / "models/conv.onnx").string());
  write_npy(dir.path / "bad/00.npy", {1, 3, 16, 16}, std::vector<float>(3 * 16 * 16, 0.5f));
  write_npy(dir.path / "bad/01.npy", {1, 3, 8, 8}, std::vector<float>(3 * 8 * 8, 0.5f));
  auto manifest = [&](const std::string& step) {
    std::ofstream(dir.path / "qforge.toml")
        << "[models.conv]\npath = \"models/conv.onnx\"\n[datasets.bad]\nfiles = [\"bad/*.npy\"]\n"
           "[[targets]]\nname = \"conv\"\nmodel = \"conv\"\npipeline = [ "
        << step << " ]\n";
  };
  int st = 0;
  manifest(R"({ pass = "evaluate", dataset = "bad" })");
  std::string out = qforge_in(dir.path, "build", st);
  INFO(out);
  CHECK(st != 0);
  CHECK_THAT(out,
             Catch::Contains("bad/01.npy: input 'x' expects [") && Catch::Contains("found [1, 3, 8, 8]"));
  CHECK_FALSE(fs::exists(dir.path / "dist/conv.onnx"));

  manifest(R"({ pass = "evaluate", dataset = "bad", reference = "float" })");
  out = qforge_in(dir.path, "plan", st);
  CHECK(st != 0);
  CHECK_THAT(out, Catch::Contains("qforge.toml:8:64: error: option 'reference' of pass 'evaluate' cannot be "
                                  "'float'; choose 'imported'"));
  manifest(R"({ pass = "evaluate" })");
  out = qforge_in(dir.path, "plan", st);
  CHECK(st != 0);
  CHECK_THAT(out, Catch::Contains("dataset"));
}

TEST_CASE("evaluate: memory flat from 8 to 64 samples", "[evaluate][cli]") {
  test::TempDir dir("qforge_evaluate_rss_");
  fs::create_directories(dir.path / "models");
  onnxfmt::write_tiny_model("conv", (dir.path / "models/conv.onnx").string());
  fs::create_directories(dir.path / "data");
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int i = 0; i < 64; ++i) {
    // 192 KiB a sample: keeping the 64 samples' inputs would add 12 MiB,
    // their conv activations 32 MiB.
    std::vector<float> v(64 * 3 * 16 * 16);
    for (auto& x : v) x = u(rng);
    char name[32];
    std::snprintf(name, sizeof name, "data/%02d.npy", i);
    write_npy(dir.path / name, {64, 3, 16, 16}, v);
  }
  auto manifest = [&](int samples) {
    std::ofstream(dir.path / "qforge.toml")
        << "[models.conv]\npath = \"models/conv.onnx\"\n[datasets.d]\nfiles = [\"data/*.npy\"]\n"
           "[[targets]]\nname = \"conv-int8\"\nmodel = \"conv\"\n"
           "pipeline = [ { pass = \"calibrate\", dataset = \"d\", samples = 4 }, { pass = "
           "\"quantize-static\" }, "
           "{ pass = \"evaluate\", dataset = \"d\", samples = "
        << samples << " } ]\n";
  };
  const std::string qforge = test::shell_quote(QFORGE_BIN);
  manifest(8);
  const auto [s8, rss8] = test::run_measured(qforge + " build --no-cache", dir.path);
  const Json r8 = report_of(dir.path);
  manifest(64);
  const auto [s64, rss64] = test::run_measured(qforge + " build --no-cache", dir.path);
  REQUIRE(s8 == 0);
  REQUIRE(s64 == 0);
  CHECK(target_of(report_of(dir.path), "conv-int8")["metrics"]["evaluation_samples"] == 64);
  CHECK(target_of(r8, "conv-int8")["metrics"]["evaluation_samples"] == 8);
  std::printf("evaluate peak RSS: 8 samples %ld KiB, 64 samples %ld KiB\n", rss8, rss64);
  INFO("peak RSS: 8 samples " << rss8 << " KiB, 64 samples " << rss64 << " KiB");
  CHECK(rss64 < rss8 + 4 * 1024);  // within 4 MiB: memory does not grow with the samples
}
