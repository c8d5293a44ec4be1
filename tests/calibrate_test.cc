// calibrate: the collectors (minmax, moving average, percentile, entropy, mse;
// histograms that widen by merging bins), the pass through the cpu executor,
// and calibration in a build: a cached range table shared by targets, and
// memory that stays flat from 8 to 64 samples.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "calibrate.h"
#include "collector.h"
#include "onnx_builder.h"
#include "onnx_format.h"
#include "qforge/dataset.h"
#include "qforge/plugin_host.h"
#include "qforge/progress.h"
#include "qforge/registry.h"
#include "range_table.h"
#include "stats_simd.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace qforge;

namespace {

using test::write_npy;

std::string slurp_text_impl(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

calib::Settings with(calib::Method m) {
  calib::Settings s;
  s.method = m;
  return s;
}

}  // namespace

TEST_CASE("calibrate collectors: minmax, moving average, symmetric", "[calibrate]") {
  calib::Collector c(with(calib::Method::MinMax));
  const float a[] = {-1, 2, 0.5f}, b[] = {-3, 1, 0};
  c.add(a, 3);
  c.add(b, 3);
  CHECK(c.range().min == -3);
  CHECK(c.range().max == 2);
  calib::Settings ma = with(calib::Method::MinMax);
  ma.moving_average = 0.5;
  calib::Collector m(ma);
  m.add(a, 3);
  m.add(b, 3);
  CHECK(m.range().min == Approx(-2));   // -1 + 0.5 * (-3 - -1)
  CHECK(m.range().max == Approx(1.5));  // 2 + 0.5 * (1 - 2)
  calib::Settings sym = with(calib::Method::MinMax);
  sym.symmetric = true;
  calib::Collector s(sym);
  s.add(a, 3);
  CHECK(s.range().min == -2);
  CHECK(s.range().max == 2);
  // NaN and inf are not ranges.
  const float odd[] = {NAN, INFINITY, 4};
  calib::Collector n(with(calib::Method::MinMax));
  n.add(odd, 3);
  CHECK(n.range().max == 4);
}

TEST_CASE("calibrate collectors: histograms widen by merging bins, percentile ignores outliers",
          "[calibrate]") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0, 1);
  calib::Settings p = with(calib::Method::Percentile);
  p.percentile = 99.9;
  calib::Collector c(p);
  // A first sample with a small range, then wider ones: the histogram widens.
  std::vector<float> small(1000);
  for (auto& x : small) x = 0.01f * u(rng);
  c.add(small.data(), small.size());
  std::vector<float> big(100000);
  for (auto& x : big) x = u(rng);
  c.add(big.data(), big.size());
  const float outlier = 8;  // widens the histogram to [0, 8): bins of 1/256
  c.add(&outlier, 1);
  CHECK(c.count() == 101001);
  CHECK(c.range().min == Approx(0.001).margin(0.001));  // the 0.1% quantile
  CHECK(c.range().max == Approx(0.999).margin(0.01));   // the 99.9% quantile, not the outlier
  CHECK(c.max() == 8);
  // Asymmetric percentile on a two-sided distribution.
  calib::Collector two(p);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> gv(200000);
  for (auto& x : gv) x = g(rng);
  two.add(gv.data(), gv.size());
  CHECK(two.range().min == Approx(-3.09).margin(0.1));  // the 0.1% and 99.9% quantiles of N(0, 1)
  CHECK(two.range().max == Approx(3.09).margin(0.1));
}

TEST_CASE("calibrate collectors: entropy clips a long tail, mse minimises the quantization error",
          "[calibrate]") {
  std::mt19937 rng(11);
  std::student_t_distribution<float> g(3);  // heavy tails: many values far out
  std::vector<float> v(200000);
  for (auto& x : v) x = g(rng);
  double absmax = 0;
  for (float x : v) absmax = std::max(absmax, std::fabs(static_cast<double>(x)));
  // The squared error of a symmetric 8-bit quantizer clipping at t, over the samples.
  auto error = [&](double t) {
    const double step = t / 127;
    double e = 0;
    for (float x : v) {
      const double q = std::max(-127.0, std::min(127.0, std::nearbyint(x / step))) * step;
      e += (x - q) * (x - q);
    }
    return e;
  };
  calib::Collector ent(with(calib::Method::Entropy)), mse(with(calib::Method::Mse));
  ent.add(v.data(), v.size());
  mse.add(v.data(), v.size());
  const double te = ent.range().max, tm = mse.range().max;
  INFO("entropy " << te << ", mse " << tm << ", |x| up to " << absmax << "; errors: entropy " << error(te)
                  << ", mse " << error(tm) << ", minmax " << error(absmax));
  CHECK(te > 2);
  CHECK(te < absmax / 4);  // entropy keeps the bulk and clips the tail
  CHECK(ent.range().min == -te);
  CHECK(error(tm) < error(absmax));  // mse beats no clipping ...
  CHECK(error(tm) < error(te));      // ... and entropy's clip, on this measure
  CHECK(error(tm) <= 1.05 * std::min({error(tm * 0.8), error(tm * 1.25)}));  // near a minimum
}

TEST_CASE("calibrate: the pass runs the model through the cpu executor and makes a range table",
          "[calibrate]") {
  Registry reg;
  PluginHost host(reg);
  register_builtins(host);
  REQUIRE(reg.executor("cpu"));
  test::TempDir dir("qforge_calibrate_");
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-2, 2);
  Dataset ds;
  ds.name = "cal";
  float lo = 1e9, hi = -1e9;
  for (int i = 0; i < 6; ++i) {
    std::vector<float> v(2 * 16);
    for (auto& x : v) x = u(rng), lo = std::min(lo, x), hi = std::max(hi, x);
    const fs::path p = dir.path / ("s" + std::to_string(i) + ".npy");
    write_npy(p, {2, 16}, v);
    ds.files.push_back(p.string());
  }
  Model model = onnxfmt::tiny_mlp_model();
  const PassInfo* info = reg.pass("calibrate");
  REQUIRE(info);
  Options o;
  for (const auto& s : info->options)
    if (!s.default_value.is_null()) o[s.name] = s.default_value;
  o["dataset"] = Value::of_string("cal");
  NullProgress progress;
  PassContext ctx{
      o, nullptr, "t", dir.path.string(), 2, progress, {{"cal", &ds}}, nullptr, {}, reg.executor("cpu")};
  auto pass = info->factory();
  PassResult r = pass->run(model, ctx);
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  REQUIRE(r.table);
  const auto t = quant::RangeTable::from_table(*r.table, "test");
  CHECK(t.samples == 6);
  CHECK(t.method == "minmax");
  const quant::Range* x = t.find("x");
  REQUIRE(x);  // the graph input is observed too
  CHECK(x->min == lo);
  CHECK(x->max == hi);
  const quant::Range* y = t.find("y");
  REQUIRE(y);
  CHECK(y->min < y->max);
  CHECK(t.values.size() >= 4);  // x, the hidden activations, y
  // The bytes round-trip through the table's serialization.
  const auto again = quant::RangeTable::from_table(Table::from_bytes(r.table->to_bytes(), "t"), "t");
  CHECK(again.values.size() == t.values.size());
  CHECK(again.find("y")->max == y->max);

  // Samples limit, and a sample that does not fit the model is named.
  o["samples"] = Value::of_int(2);
  r = info->factory()->run(model, ctx);
  REQUIRE(r.status.ok);
  CHECK(quant::RangeTable::from_table(*r.table, "t").samples == 2);
  write_npy(dir.path / "bad.npy", {2, 7}, std::vector<float>(14, 1));
  ds.files.push_back((dir.path / "bad.npy").string());
  o.erase("samples");
  r = info->factory()->run(model, ctx);
  CHECK_FALSE(r.status.ok);
  CHECK_THAT(r.status.message, Catch::Contains("bad.npy"));
}

TEST_CASE("calibrate in a build: one table for several targets, cached, and memory flat from 8 to 64 samples",
          "[calibrate][cli]") {
  test::TempDir dir("qforge_calibrate_build_");
  fs::create_directories(dir.path / "models");
  onnxfmt::write_tiny_model("conv", (dir.path / "models/conv.onnx").string());
  fs::create_directories(dir.path / "cal");
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int i = 0; i < 64; ++i) {
    std::vector<float> v(1 * 3 * 16 * 16);
    for (auto& x : v) x = u(rng);
    char name[32];
    std::snprintf(name, sizeof name, "cal/%02d.npy", i);
    write_npy(dir.path / name, {1, 3, 16, 16}, v);
  }
  auto manifest = [&](int samples) {
    std::ofstream(dir.path / "qforge.toml")
        << "[models.conv]\npath = \"models/conv.onnx\"\n[datasets.cal]\nfiles = [\"cal/*.npy\"]\n"
           "[[targets]]\nname = \"conv-{m}\"\nmodel = \"conv\"\nmatrix = { m = [\"percentile\", \"entropy\"] "
           "}\n"
           "pipeline = [ { pass = \"calibrate\", dataset = \"cal\", method = \"{m}\", samples = "
        << samples << " }, { pass = \"normalize\" } ]\n"
        << "[[targets]]\nname = \"conv-again\"\nmodel = \"conv\"\n"
           "pipeline = [ { pass = \"calibrate\", dataset = \"cal\", method = \"percentile\", samples = "
        << samples << " } ]\n";
  };
  const std::string qforge = std::string("'") + QFORGE_BIN + "'";
  manifest(8);
  int st = 0;
  std::string out = test::run_capture("cd '" + dir.path.string() + "' && " + qforge + " build 2>&1", st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("3 built"));
  // conv-percentile and conv-again share one calibration step.
  const auto report = nlohmann::json::parse(slurp_text_impl(dir.path / "dist/report.json"));
  int calibrations = 0;
  for (const auto& s : report["steps"])
    if (s["pass"] == "calibrate") {
      ++calibrations;
      CHECK(s["kind"] == "table");
    }
  CHECK(calibrations == 2);  // percentile (for two targets) and entropy
  // A second build runs nothing.
  out = test::run_capture("cd '" + dir.path.string() + "' && " + qforge + " build 2>&1", st);
  CHECK_THAT(out, Catch::Contains("(nothing to do)"));

  // Peak memory of a build calibrating on 8 samples against 64.
  manifest(8);
  const auto [s8, rss8] = test::run_measured(qforge + " build --no-cache", dir.path);
  manifest(64);
  const auto [s64, rss64] = test::run_measured(qforge + " build --no-cache", dir.path);
  REQUIRE(s8 == 0);
  REQUIRE(s64 == 0);
  INFO("peak RSS: 8 samples " << rss8 << " KiB, 64 samples " << rss64 << " KiB");
  CHECK(rss64 < rss8 + 4 * 1024);  // within 4 MiB: memory does not grow with the samples
}

TEST_CASE("collector kernels: vector min, max, sum and histogram slots equal a plain loop", "[calibrate]") {
  // Lengths around the vector widths and the sum block, with zeros, negatives, NaN and infinities.
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{7}, size_t{17}, size_t{1023}, size_t{1024},
                   size_t{1029}, size_t{5000}}) {
    INFO("n = " << n);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = i % 11 == 0 ? 0.0f : normal(rng);
    if (n > 5) x[3] = std::numeric_limits<float>::quiet_NaN(), x[5] = -std::numeric_limits<float>::infinity();
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    uint64_t finite = 0;
    double sum = 0;
    for (float v : x)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v), ++finite, sum += v;
    for (bool with_sum : {false, true}) {
      const calib::SpanStats st = calib::span_stats(x.data(), n, with_sum);
      CHECK(st.lo == lo);
      CHECK(st.hi == hi);
      CHECK(st.finite == finite);
      if (with_sum) CHECK(st.sum == Approx(sum).margin(1e-3));
    }
    const int32_t bins = 64;
    const float inv = 1.0f / 0.25f;
    std::vector<int32_t> slots(n);
    calib::histogram_slots(x.data(), n, inv, bins, slots.data());
    for (size_t i = 0; i < n; ++i) {
      const float v = x[i];
      int32_t want;
      if (!std::isfinite(v))
        want = 2 * bins + 1;
      else if (v == 0)
        want = 2 * bins;
      else
        want = static_cast<int32_t>(std::min(std::fabs(v) * inv, static_cast<float>(bins - 1))) +
               (v < 0 ? bins : 0);
      INFO("i = " << i << ", v = " << v);
      CHECK(slots[i] == want);
    }
  }
}
