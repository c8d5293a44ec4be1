// select-precision on generated llama models: budgets in bytes, bits per weight and a
// llama.cpp mixture's size are met (the file quantize-gguf then writes is no larger and
// close to it), more budget never costs error, the plan beats the Q4_K_M mixture's
// measured error at that mixture's size, a profile's fast_types restrict the candidates,
// a budget too small is an error naming the size needed; through the CLI: `qforge plan`
// shows the step, a cached build equals a --no-cache one, and llama.cpp loads the result.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/tiny_llama.h"
#include "qforge/status.h"
#include "quantize_gguf.h"
#include "select_precision.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace qforge;
using qforge::test::run_capture;
using qforge::test::shell_quote;
using qforge::test::slurp;
using qforge::test::TempDir;

namespace {

// Rows of 256 and 512 columns: every K-quant fits (llama.cpp's mixtures use them).
Model tiny(uint32_t layers = 2) {
  TinyLlamaOptions o;
  o.layers = layers;
  o.embd = 256;
  o.ff = 512;
  o.vocab = 320;
  o.heads = 4;
  o.heads_kv = 2;
  o.seed = 17;
  return make_tiny_llama(o);
}

select_precision::Result plan_for(const Model& m, const std::string& budget,
                                  std::vector<std::string> types = {"Q2_K", "Q3_K", "Q4_0", "Q4_K", "Q5_0",
                                                                    "Q5_K", "Q6_K", "Q8_0"}) {
  select_precision::Settings s;
  s.budget = budget;
  s.types = std::move(types);
  NullProgress p;
  return select_precision::select(m, s, 2, p);
}

// The file quantize-gguf writes following `plan`.
uint64_t written_size(const Model& m, const gguf_quant::PrecisionPlan& plan, const std::string& path) {
  Model q = m;
  gguf_quant::QuantizeOptions o;
  o.type = "Q4_K_M";
  o.plan = std::make_shared<gguf_quant::PrecisionPlan>(plan);
  gguf_quant::quantize_model(q, o, 2);
  write_gguf(q, path);
  return fs::file_size(path);
}

std::string qforge_bin() {
  const char* bin = std::getenv("QFORGE_BIN");
  if (!bin || !*bin) FAIL("QFORGE_BIN is not set (the qforge binary; ctest sets it)");
  return bin;
}

// Runs qforge with `args`, returns its output (stdout and stderr) and sets `status`.
std::string run_qforge(const std::string& args, int& status) {
  const std::string out = run_capture(shell_quote(qforge_bin()) + " " + args + " 2>&1", status);
  return out;
}

}  // namespace

TEST_CASE("select-precision: a byte budget bounds the file and is nearly used", "[select-precision]") {
  const Model m = tiny();
  TempDir dir;
  for (uint64_t budget : {600000ull, 800000ull, 1000000ull}) {
    const auto r = plan_for(m, std::to_string(budget));
    INFO("budget " << budget << ": " << r.notes.front());
    CHECK(r.plan.file_bytes <= budget);
    CHECK(r.plan.file_bytes >= budget * 97 / 100);
    CHECK(written_size(m, r.plan, dir / "q.gguf") == r.plan.file_bytes);
  }
}

TEST_CASE("select-precision: a bpw budget bounds the tensor data bits per weight", "[select-precision]") {
  const Model m = tiny();
  const auto r = plan_for(m, "4.5bpw");
  CHECK(r.plan.bits_per_weight <= 4.5);
  CHECK(r.plan.bits_per_weight >= 4.3);
  CHECK(r.plan.budget == "4.5bpw");
}

TEST_CASE("select-precision: a larger budget never gives more error", "[select-precision]") {
  const Model m = tiny();
  double last = INFINITY;
  for (const char* b : {"3bpw", "3.5bpw", "4bpw", "4.5bpw", "5bpw", "6bpw", "8.5bpw"}) {
    const auto r = plan_for(m, b);
    INFO(b << ": error " << r.plan.error);
    CHECK(r.plan.error <= last);
    last = r.plan.error;
  }
}

TEST_CASE("select-precision: at the size of llama.cpp's mixtures the plan has less error",
          "[select-precision]") {
  const Model m = tiny(4);
  TempDir dir;
  for (const char* ft : {"Q3_K_M", "Q4_K_M", "Q5_K_M"}) {
    const auto r = plan_for(m, ft);
    INFO(ft << ": " << r.notes.front() << " / " << r.notes[1]);
    // the mixture's size, counted as quantize-gguf writes it
    Model q = m;
    gguf_quant::QuantizeOptions o;
    o.type = ft;
    gguf_quant::quantize_model(q, o, 2);
    write_gguf(q, dir / "mix.gguf");
    const uint64_t mix = fs::file_size(dir / "mix.gguf");
    CHECK(r.metrics.at("reference_file_bytes") == static_cast<double>(mix));
    CHECK(r.plan.budget_bytes == mix);
    CHECK(r.plan.file_bytes <= mix);
    CHECK(r.plan.error <= r.metrics.at("reference_error"));
    CHECK(written_size(m, r.plan, dir / "plan.gguf") <= mix);
  }
}

TEST_CASE("select-precision: a budget too small is an error naming the size needed", "[select-precision]") {
  const Model m = tiny();
  try {
    plan_for(m, "100000");
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("too small"));
    CHECK_THAT(msg, Catch::Contains("-byte file"));
    CHECK_THAT(msg, Catch::Contains("bpw"));
  }
  CHECK_THROWS_WITH(plan_for(m, "Q9_K"), Catch::Contains("llama.cpp file type"));
}

TEST_CASE("select-precision: rows a type cannot hold never get it", "[select-precision]") {
  // embd 64: rows of 64 cannot take K-quants (256-element blocks); the 32-blocks fit.
  TinyLlamaOptions o;
  o.embd = 64;
  o.ff = 128;
  const Model m = make_tiny_llama(o);
  const auto r = plan_for(m, "6bpw");
  for (const auto& t : r.plan.tensors) {
    INFO(t.name << " " << t.type);
    CHECK(t.type.find("_K") == std::string::npos);
  }
}

namespace {
const char* kManifest = R"(
[build]
output = "dist"

[models.llm]
path = "in.gguf"

[[targets]]
name = "plan"
model = "llm"
pipeline = [ { pass = "select-precision", budget = "Q4_K_M" }, { pass = "quantize-gguf", type = "Q4_K_M" } ]

[[targets]]
name = "neon"
model = "llm"
profile = "gguf-cpu-neon"
pipeline = [ { pass = "select-precision", budget = "4.8bpw" }, { pass = "quantize-gguf", type = "Q4_K_M" } ]

[[targets]]
name = "mix"
model = "llm"
pipeline = [ { pass = "quantize-gguf", type = "Q4_K_M" } ]
)";

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
}  // namespace

TEST_CASE("select-precision: through a manifest: plan, cache, profile", "[select-precision][cli]") {
  TempDir dir;
  write_gguf(tiny(3), dir / "in.gguf");
  write_file(dir / "qforge.toml", kManifest);
  const std::string f = "-f " + shell_quote(dir / "qforge.toml");
  int st = 0;
  std::string out = run_qforge("plan " + f, st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("select-precision llm (budget=Q4_K_M"));
  CHECK_THAT(out, Catch::Contains("-> table"));

  out = run_qforge("build -j 2 " + f, st);
  INFO(out);
  REQUIRE(st == 0);
  const auto plan = slurp(dir / "dist/plan.gguf");
  const auto mix = slurp(dir / "dist/mix.gguf");
  CHECK(!plan.empty());
  CHECK(plan.size() <= mix.size());
  CHECK(plan != mix);
  // The report carries the plan's numbers.
  const auto report_bytes = slurp(dir / "dist/report.json");
  const auto report = nlohmann::json::parse(std::string(report_bytes.begin(), report_bytes.end()));
  bool found = false;
  for (const auto& t : report["targets"])
    if (t["name"] == "plan") {
      found = true;
      CHECK(t["metrics"]["error"].get<double>() <= t["metrics"]["reference_error"].get<double>());
      CHECK(t["metrics"].contains("tensors_Q4_K"));
    }
  CHECK(found);

  // The neon profile's fast_types (no Q5_0, Q5_1, Q4_1, IQ4_XS) are the candidates.
  Model neon = read_gguf(dir / "dist/neon.gguf");
  const std::set<std::string> fast = {"q4_0", "q8_0", "q4_K",   "q5_K", "q6_K",
                                      "q3_K", "q2_K", "iq4_nl", "f16",  "f32"};
  for (const auto& t : neon.tensors) {
    INFO(t.name);
    CHECK(fast.count(name_of(t.type)) == 1);
  }

  // Cached (tables and artifacts from the store) equals --no-cache, byte for byte.
  fs::remove_all(dir.path / "dist");
  out = run_qforge("build -j 2 " + f, st);
  REQUIRE(st == 0);
  CHECK(slurp(dir / "dist/plan.gguf") == plan);
  write_file(dir / "nc.toml",
             std::string(kManifest).replace(std::string(kManifest).find("\"dist\""), 6, "\"nc\""));
  out = run_qforge("build -j 2 --no-cache -f " + shell_quote(dir / "nc.toml"), st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK(slurp(dir / "nc/plan.gguf") == plan);
  CHECK(slurp(dir / "nc/neon.gguf") == slurp(dir / "dist/neon.gguf"));
}

TEST_CASE("select-precision: plan-time errors: a forbidden type, no budget", "[select-precision][cli]") {
  TempDir dir;
  write_gguf(tiny(), dir / "in.gguf");
  write_file(dir / "qforge.toml", R"(
[models.llm]
path = "in.gguf"

[[targets]]
name = "a"
model = "llm"
profile = "gguf-cpu-neon"
pipeline = [ { pass = "select-precision", budget = "4bpw", types = ["Q4_K", "Q5_0"] }, { pass = "quantize-gguf", type = "Q4_K_M" } ]

[[targets]]
name = "b"
model = "llm"
pipeline = [ { pass = "select-precision" }, { pass = "quantize-gguf", type = "Q4_K_M" } ]
)");
  int st = 0;
  const std::string out = run_qforge("plan -f " + shell_quote(dir / "qforge.toml"), st);
  INFO(out);
  CHECK(st != 0);
  CHECK_THAT(out, Catch::Contains("Q5_0"));
  CHECK_THAT(out, Catch::Contains("gguf-cpu-neon"));
  CHECK_THAT(out, Catch::Contains("needs option 'budget'"));
}

TEST_CASE("select-precision: llama.cpp loads the planned model", "[select-precision][llama]") {
  const char* npm = std::getenv("QFORGE_NPM_DIR");
  if (!npm || !*npm)
    FAIL("QFORGE_NPM_DIR is not set: it must name the directory where node-llama-cpp is installed");
  const std::string script = std::string(QFORGE_SOURCE_DIR) + "/tests/tools/llama_probs.mjs";
  TempDir dir;
  const Model m = tiny(3);
  const auto r = plan_for(m, "Q4_K_M");
  written_size(m, r.plan, dir / "plan.gguf");
  int st = 0;
  const std::string out = run_capture("QFORGE_NPM_DIR=" + shell_quote(npm) + " node " + shell_quote(script) +
                                          " " + shell_quote(dir / "plan.gguf") + " 2>&1",
                                      st);
  INFO(out.substr(0, 600));
  REQUIRE(st == 0);
  const auto j = nlohmann::json::parse(out);
  double sum = 0;
  for (const auto& p : j["probabilities"]) sum += p.get<double>();
  CHECK(std::fabs(sum - 1.0) < 1e-3);
  CHECK(j["n_vocab"].get<int>() == 320);
}
