// Fanning a build out (docs/scale.md, "Sharding and Kubernetes"): the shared
// steps as a build of their own (`build --shared-only`), shares of the
// targets (`build --shard I/N`), and Kubernetes Jobs (`export k8s`) checked
// against the Kubernetes Job schema and run locally, index by index.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "test_util.h"

namespace fs = std::filesystem;
using Json = nlohmann::json;
namespace test = qforge::test;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Result {
  int rc;
  std::string out, err;
};

// `qforge ARGS` in `dir`.
Result run_qforge(const fs::path& dir, const std::string& args) {
  const fs::path err = dir / ".stderr";
  int st = 0;
  std::string out =
      test::run_capture("cd " + test::shell_quote(dir.string()) + " && " + test::shell_quote(QFORGE_BIN) +
                            " " + args + " 2>" + test::shell_quote(err.string()),
                        st);
  Result r{WIFEXITED(st) ? WEXITSTATUS(st) : 128, out, read_text(err)};
  fs::remove(err);
  return r;
}

std::string python() {
  const char* p = std::getenv("QFORGE_PYTHON");
  return p ? p : "python3";
}

using test::write_npy;

// Targets of uneven cost, in an order where splitting by position would put
// the two costly ones together: two GGUF variants of a 0.5 MB model, and four
// variants of a 3.6 KB ONNX MLP, three of which share one calibration.
const char* kManifest = R"([models.llm]
path = "models/tiny.gguf"
[models.mlp]
path = "models/mlp.onnx"
[datasets.cal]
files = ["cal/*.npy"]
[[targets]]
name = "llm-q8"
model = "llm"
pipeline = [ { pass = "quantize-gguf", type = "Q8_0" } ]
[[targets]]
name = "mlp-u8"
model = "mlp"
pipeline = [ { pass = "calibrate", dataset = "cal" }, { pass = "quantize-static", activation_type = "uint8" } ]
[[targets]]
name = "llm-q4"
model = "llm"
pipeline = [ { pass = "quantize-gguf", type = "Q4_0" } ]
[[targets]]
name = "mlp-s8"
model = "mlp"
pipeline = [ { pass = "calibrate", dataset = "cal" }, { pass = "quantize-static", activation_type = "int8" } ]
[[targets]]
name = "mlp-u16"
model = "mlp"
pipeline = [ { pass = "calibrate", dataset = "cal" }, { pass = "quantize-static", activation_type = "uint16" } ]
[[targets]]
name = "mlp-dyn"
model = "mlp"
pipeline = [ { pass = "quantize-dynamic" } ]
)";

const std::vector<std::string> kTargets = {"llm-q8", "mlp-u8", "llm-q4", "mlp-s8", "mlp-u16", "mlp-dyn"};

std::string bin_dir() { return fs::path(QFORGE_BIN).parent_path().string(); }

// A project directory: the models, the calibration samples and the manifest.
void make_project(const fs::path& dir) {
  fs::create_directories(dir / "models");
  fs::create_directories(dir / "cal");
  int st = 0;
  test::run_capture("cd " + test::shell_quote(dir.string()) + " && " +
                        test::shell_quote(bin_dir() + "/make_tiny_llama") +
                        " models/tiny.gguf >/dev/null && " +
                        test::shell_quote(bin_dir() + "/make_tiny_onnx") + " mlp models/mlp.onnx",
                    st);
  REQUIRE(st == 0);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int i = 0; i < 4; ++i) {
    std::vector<float> v(4 * 16);
    for (auto& x : v) x = u(rng);
    write_npy(dir / ("cal/" + std::to_string(i) + ".npy"), {4, 16}, v);
  }
  std::ofstream(dir / "qforge.toml") << kManifest;
}

// The artifacts of a build: file name -> bytes.
std::map<std::string, std::vector<uint8_t>> artifacts(const fs::path& dist) {
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& e : fs::directory_iterator(dist)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("report.", 0) == 0) continue;
    out[name] = test::slurp(e.path().string());
  }
  return out;
}

// The reference: a plain build without the cache.
const std::map<std::string, std::vector<uint8_t>>& plain_build() {
  static std::map<std::string, std::vector<uint8_t>> ref;
  if (ref.empty()) {
    test::TempDir d("qforge_fanout_plain_");
    make_project(d.path);
    auto r = run_qforge(d.path, "build --no-cache");
    INFO(r.err);
    REQUIRE(r.rc == 0);
    ref = artifacts(d.path / "dist");
    REQUIRE(ref.size() == kTargets.size());
  }
  return ref;
}

Json report_of(const fs::path& dir) { return Json::parse(read_text(dir / "dist/report.json")); }

}  // namespace

TEST_CASE(
    "plan --json marks shared nodes, --shared-only builds them, then each target builds only its own steps",
    "[fanout][cli]") {
  test::TempDir d("qforge_fanout_shared_");
  make_project(d.path);
  auto plan = run_qforge(d.path, "plan --json");
  INFO(plan.err);
  REQUIRE(plan.rc == 0);
  const Json pj = Json::parse(plan.out);
  // shared: serves two or more targets, never an emit.
  std::set<std::string> shared_kept, shared_not_kept;
  std::map<std::string, std::string> label_of;
  size_t calibrations = 0;
  for (const auto& n : pj["nodes"]) {
    const bool shared = n["shared"].get<bool>();
    CHECK(shared == (n["targets"].size() >= 2 && n["kind"] != "emit"));
    if (n["kind"] == "emit") CHECK_FALSE(shared);
    if (n.value("pass", "") == "calibrate") {
      ++calibrations;
      CHECK(shared);
      CHECK(n["targets"].size() == 3);
    }
    if (n.value("pass", "") == "quantize-static") CHECK_FALSE(shared);
    label_of[n["key"]] = n["label"];
    if (shared) (n["store"].get<bool>() ? shared_kept : shared_not_kept).insert(n["key"].get<std::string>());
  }
  CHECK(calibrations == 1);
  REQUIRE(shared_kept.size() == 1);      // the calibration table
  REQUIRE(shared_not_kept.size() == 2);  // the two imports: the input files themselves

  auto s = run_qforge(d.path, "build --shared-only");
  INFO(s.err);
  REQUIRE(s.rc == 0);
  CHECK_THAT(s.out,
             Catch::Contains("shared steps only: 3 shared step(s): 2 built, 0 cached, 0 failed; 1 not kept"));
  Json sr = report_of(d.path);
  CHECK(sr["shared_only"] == true);
  CHECK(sr["targets"].empty());
  REQUIRE(sr["steps"].size() == 3);
  for (const auto& st : sr["steps"]) {
    const std::string key = st["key"];
    CHECK((shared_kept.count(key) || shared_not_kept.count(key)));
    if (shared_kept.count(key)) CHECK(st["status"] == "built");
  }
  // No artifact yet.
  CHECK(artifacts(d.path / "dist").empty());
  // Again: nothing to do.
  auto s2 = run_qforge(d.path, "build --shared-only --explain");
  REQUIRE(s2.rc == 0);
  CHECK_THAT(s2.out, Catch::Contains("0 built, 1 cached"));
  CHECK_THAT(s2.err, Catch::Contains("skip calibrate mlp"));

  // Each target on its own: no shared step the cache keeps runs again.
  for (const auto& t : kTargets) {
    auto r = run_qforge(d.path, "build --target " + t);
    INFO(t << ": " << r.err);
    REQUIRE(r.rc == 0);
    const Json rep = report_of(d.path);
    size_t own_built = 0;
    for (const auto& st : rep["steps"]) {
      const std::string key = st["key"];
      INFO(st["label"]);
      if (shared_kept.count(key))
        CHECK(st["status"] == "cached");
      else if (!shared_not_kept.count(key))
        own_built += st["status"] == "built";  // the target's own steps
    }
    CHECK(own_built >= 2);  // its quantize step and its emit
  }
  CHECK(artifacts(d.path / "dist") == plain_build());
}

TEST_CASE(
    "build --shard I/N: shares are disjoint, cover every target and are balanced, and artifacts equal a full "
    "build's",
    "[fanout][cli]") {
  test::TempDir d("qforge_fanout_shard_");
  make_project(d.path);
  auto plan = run_qforge(d.path, "plan --json");
  REQUIRE(plan.rc == 0);
  std::map<std::string, uint64_t> cost;
  const Json pj = Json::parse(plan.out);
  for (const auto& t : pj["targets"]) cost[t["name"].get<std::string>()] = t["cost"].get<uint64_t>();
  REQUIRE(cost.size() == kTargets.size());
  CHECK(cost["llm-q8"] > 50 * cost["mlp-u8"]);  // uneven: the GGUF model is 150 times the MLP

  for (int n : {2, 3}) {
    INFO(n << " shards");
    std::multiset<std::string> seen;
    std::vector<uint64_t> loads;
    for (int i = 0; i < n; ++i) {
      auto r = run_qforge(d.path, "build --shard " + std::to_string(i) + "/" + std::to_string(n));
      INFO(r.err);
      REQUIRE(r.rc == 0);
      const Json rep = report_of(d.path);
      REQUIRE(rep["shard"]["index"] == i);
      REQUIRE(rep["shard"]["count"] == n);
      std::vector<std::string> names;
      for (const auto& t : rep["targets"]) names.push_back(t["name"]);
      std::vector<std::string> listed = rep["shard"]["targets"];
      CHECK(names == listed);  // the report lists the shard's targets only
      uint64_t load = 0;
      for (const auto& t : names) {
        seen.insert(t);
        load += cost[t];
      }
      loads.push_back(load);
      CHECK_THAT(r.out, Catch::Contains("shard " + std::to_string(i) + "/" + std::to_string(n) + ": "));
    }
    // Every target in exactly one share.
    CHECK(seen == std::multiset<std::string>(kTargets.begin(), kTargets.end()));
    // Balanced: the two costly targets are in different shares, and no two
    // shares differ by more than the costliest target.
    const auto [lo, hi] = std::minmax_element(loads.begin(), loads.end());
    CHECK(*hi - *lo <= std::max(cost["llm-q8"], cost["llm-q4"]));
    CHECK(*hi < cost["llm-q8"] + cost["llm-q4"]);
  }
  CHECK(artifacts(d.path / "dist") == plain_build());

  // Deterministic: the same shares again, and --no-cache builds the same bytes.
  test::TempDir d2("qforge_fanout_shard_nc_");
  make_project(d2.path);
  for (int i = 0; i < 2; ++i) {
    auto r = run_qforge(d2.path, "build --no-cache --shard " + std::to_string(i) + "/2");
    REQUIRE(r.rc == 0);
  }
  CHECK(artifacts(d2.path / "dist") == plain_build());
}

TEST_CASE("build --shard and --shared-only: usage errors exit 2, and an empty shard says so",
          "[fanout][cli]") {
  test::TempDir d("qforge_fanout_usage_");
  make_project(d.path);
  for (const char* bad : {"1/0", "3/3", "a/2", "2", "-1/2", "1/2/3", "/2"}) {
    auto r = run_qforge(d.path, std::string("build --shard='") + bad + "'");
    INFO(bad << ": " << r.err);
    CHECK(r.rc == 2);
    CHECK_THAT(r.err, Catch::Contains("--shard '" + std::string(bad) + "'"));
  }
  CHECK_THAT(run_qforge(d.path, "build --shard 3/3").err,
             Catch::Contains("shares are numbered from 0: 0/3 ... 2/3"));
  auto both = run_qforge(d.path, "build --shared-only --shard 0/2");
  CHECK(both.rc == 2);
  CHECK_THAT(both.err, Catch::Contains("--shared-only and --shard exclude each other"));
  auto nc = run_qforge(d.path, "build --shared-only --no-cache");
  CHECK(nc.rc == 2);
  CHECK_THAT(nc.err, Catch::Contains("with --no-cache it would keep nothing"));
  CHECK_FALSE(fs::exists(d.path / "dist"));

  // 6 targets in 8 shares: shares 6 and 7 are empty, said, and build nothing.
  auto empty = run_qforge(d.path, "build --shard 7/8");
  INFO(empty.err);
  CHECK(empty.rc == 0);
  CHECK_THAT(empty.err, Catch::Contains("warning: shard 7/8 has no targets (6 target(s) in 8 shares)"));
  CHECK_THAT(empty.out, Catch::Contains("shard 7/8: no targets"));
  const Json rep = report_of(d.path);
  CHECK(rep["shard"]["targets"].empty());
  CHECK(rep["targets"].empty());
  CHECK(artifacts(d.path / "dist").empty());
  CHECK(run_qforge(d.path, "build --strict --shard 7/8").rc == 1);
}

TEST_CASE("export k8s: the YAML is two Jobs valid against the Kubernetes Job schema", "[fanout][k8s]") {
  test::TempDir d("qforge_fanout_k8s_schema_");
  make_project(d.path);
  int st = 0;
  test::run_capture(test::shell_quote(python()) + " -c 'import jsonschema, yaml, kubernetes_validate' 2>&1",
                    st);
  INFO("needs jsonschema, PyYAML and kubernetes-validate in $QFORGE_PYTHON (make runtimes installs them)");
  REQUIRE(st == 0);
  auto e = run_qforge(d.path,
                      "export k8s --image registry.example/qforge:1 --remote-cache http://cache.example:8080 "
                      "--namespace quant --parallelism 2 -o jobs.yaml");
  INFO(e.err);
  REQUIRE(e.rc == 0);
  CHECK_THAT(e.err, Catch::Contains(
                        "wrote jobs.yaml: Job qforge-shared and Indexed Job qforge-shards (6 completions)"));
  const std::string yaml = read_text(d.path / "jobs.yaml");
  CHECK_THAT(yaml, Catch::Contains(
                       "kubectl wait -n quant --for=condition=complete --timeout=24h job/qforge-shared"));
  CHECK_THAT(yaml, Catch::Contains("completionMode: Indexed"));
  CHECK_THAT(yaml, Catch::Contains("\"$(JOB_COMPLETION_INDEX)/6\""));
  CHECK_THAT(yaml, Catch::Contains("QFORGE_REMOTE_CACHE"));
  const std::string tool = test::shell_quote(std::string(QFORGE_SOURCE_DIR) + "/tests/tools/k8s_jobs.py");
  std::string out = test::run_capture(
      test::shell_quote(python()) + " " + tool + " validate " + test::shell_quote(d / "jobs.yaml") + " 2>&1",
      st);
  INFO(out);
  CHECK(st == 0);
  CHECK_THAT(out, Catch::Contains("valid: Job qforge-shared") && Catch::Contains("valid: Job qforge-shards"));

  // The validator refuses what Kubernetes would: an unknown field, a wrong type.
  std::string broken = yaml;
  broken.replace(broken.find("completionMode: Indexed"), 23, "completionMode: Indexed\n  completion: 3");
  std::ofstream(d / "broken.yaml") << broken;
  out = test::run_capture(test::shell_quote(python()) + " " + tool + " validate " +
                              test::shell_quote(d / "broken.yaml") + " 2>&1",
                          st);
  CHECK(st != 0);
  CHECK_THAT(out, Catch::Contains("invalid: Job qforge-shards") && Catch::Contains("completion"));
  broken = yaml;
  broken.replace(broken.find("parallelism: 2"), 14, "parallelism: two");
  std::ofstream(d / "broken2.yaml") << broken;
  out = test::run_capture(test::shell_quote(python()) + " " + tool + " validate " +
                              test::shell_quote(d / "broken2.yaml") + " 2>&1",
                          st);
  CHECK(st != 0);
  CHECK_THAT(out, Catch::Contains("/spec/parallelism"));

  // Usage errors.
  auto noimage = run_qforge(d.path, "export k8s");
  CHECK(noimage.rc == 2);
  CHECK_THAT(noimage.err, Catch::Contains("--image: the container image is required"));
  auto badname = run_qforge(d.path, "export k8s --image x --name Big_Name");
  CHECK(badname.rc == 2);
  CHECK_THAT(badname.err, Catch::Contains("--name 'Big_Name'"));
  CHECK(run_qforge(d.path, "export k8s --image x --namespace Bad_NS").rc == 2);
  CHECK(run_qforge(d.path, "export k8s --image x --shards 0").rc == 2);
}

TEST_CASE(
    "export k8s: each index's command, run in order against one local cache, builds a plain build's "
    "artifacts",
    "[fanout][k8s]") {
  test::TempDir d("qforge_fanout_k8s_run_");
  make_project(d.path);
  auto e = run_qforge(d.path, "export k8s --image qforge-test --shards 3 -o jobs.yaml");
  INFO(e.err);
  REQUIRE(e.rc == 0);
  CHECK_THAT(e.err, Catch::Contains("note: no --remote-cache"));
  int st = 0;
  const std::string tool = test::shell_quote(std::string(QFORGE_SOURCE_DIR) + "/tests/tools/k8s_jobs.py");
  std::string out = test::run_capture(
      test::shell_quote(python()) + " " + tool + " run " + test::shell_quote(d / "jobs.yaml") + " --qforge " +
          test::shell_quote(QFORGE_BIN) + " --dir " + test::shell_quote(d.path.string()) + " 2>&1",
      st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("--shared-only") && Catch::Contains("--shard 2/3"));
  // The shared Job built the calibration; no shard ran it again.
  const Json shared = Json::parse(read_text(d.path / "k8s-reports/00.json"));
  CHECK(shared["shared_only"] == true);
  std::set<std::string> names;
  for (int i = 1; i <= 3; ++i) {
    const Json rep = Json::parse(read_text(d.path / ("k8s-reports/0" + std::to_string(i) + ".json")));
    CHECK(rep["shard"]["index"] == i - 1);
    for (const auto& t : rep["targets"]) names.insert(t["name"].get<std::string>());
    for (const auto& s : rep["steps"])
      if (s["pass"] == "calibrate") CHECK(s["status"] == "cached");
  }
  CHECK(names == std::set<std::string>(kTargets.begin(), kTargets.end()));
  CHECK(artifacts(d.path / "dist") == plain_build());
}

TEST_CASE("build --shared-only under --strict: a shared step that warned fails, cached or not",
          "[fanout][cli]") {
  test::TempDir d("qforge_fanout_strict_");
  make_project(d.path);
  // Constant samples: the calibration warns that no value varied.
  for (int i = 0; i < 4; ++i)
    write_npy(d.path / ("cal/" + std::to_string(i) + ".npy"), {4, 16}, std::vector<float>(4 * 16, 0.0f));
  auto strict = run_qforge(d.path, "build --shared-only --strict");
  CHECK(strict.rc == 1);
  CHECK_THAT(strict.err, Catch::Contains("never varied"));
  auto lax = run_qforge(d.path, "build --shared-only");
  INFO(lax.err);
  CHECK(lax.rc == 0);
  CHECK_THAT(lax.out, Catch::Contains("2 built, 0 cached, 0 failed"));
  auto cached = run_qforge(d.path, "build --shared-only --strict");
  CHECK(cached.rc == 1);
  CHECK_THAT(cached.err,
             Catch::Contains("warnings are errors (--strict)") && Catch::Contains("never varied"));
  CHECK_THAT(cached.out, Catch::Contains("0 built, 0 cached, 1 failed"));
}
