// `qforge build --on slurm` and `--shared-only` (docs/scale.md, "Slurm"): a
// real single-node Slurm (tests/tools/slurm_cluster.sh: slurmctld, slurmd and
// munged on 127.0.0.1, as root) builds GGUF variants as a job array and ONNX
// variants after a shared calibration job; artifacts equal a local
// --no-cache build's, the report carries the job ids, and a failing task fails
// the build with its log.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "test_util.h"

namespace fs = std::filesystem;
using namespace qforge;

namespace {

std::string qforge_cmd() { return test::shell_quote(QFORGE_BIN); }
std::string tool(const std::string& name) {
  return test::shell_quote((fs::path(QFORGE_BIN).parent_path() / name).string());
}

// Runs `cmd` in `dir` with stderr folded into the output.
std::string sh(const fs::path& dir, const std::string& cmd, int& status) {
  std::string out =
      test::run_capture("cd " + test::shell_quote(dir.string()) + " && " + cmd + " 2>&1", status);
  status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return out;
}

std::string text_of(const fs::path& p) {
  auto b = test::slurp(p.string());
  return std::string(b.begin(), b.end());
}

// Why this machine cannot run a Slurm cluster for the test ("" when it can).
std::string cannot_run_slurm() {
  if (::geteuid() != 0) return "not root (slurmd runs as root)";
  for (const char* p : {"/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch"})
    if (!fs::exists(p)) return std::string(p) + " is missing (Debian packages slurm-wlm and munge)";
  return "";
}

// A single-node cluster in a temporary directory, stopped (by its pid files)
// when the object goes; SLURM_CONF points at it meanwhile.
struct Cluster {
  test::TempDir dir{"qforge_slurm_"};
  double start_seconds = 0;
  bool up = false;
  std::string log;
  Cluster() {
    const auto t0 = std::chrono::steady_clock::now();
    int st = 0;
    log = test::run_capture(script() + " start " + test::shell_quote(dir.path.string()) + " 2>&1", st);
    start_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    up = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (up) ::setenv("SLURM_CONF", (dir / "slurm.conf").c_str(), 1);
  }
  ~Cluster() {
    int st = 0;
    test::run_capture(script() + " stop " + test::shell_quote(dir.path.string()) + " 2>&1", st);
    ::unsetenv("SLURM_CONF");
  }
  static std::string script() {
    return test::shell_quote(std::string(QFORGE_SOURCE_DIR) + "/tests/tools/slurm_cluster.sh");
  }
};

using test::write_npy;

const char* kGgufManifest = R"([models.llm]
path = "models/tiny.gguf"

[[targets]]
name = "llm-{type}"
model = "llm"
matrix = { type = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_M"] }
pipeline = [ { pass = "quantize-gguf", type = "{type}" } ]
)";

// Two static quantizations sharing one calibration (a stored Table serving two targets).
const char* kOnnxManifest = R"([models.mlp]
path = "models/mlp.onnx"

[datasets.cal]
files = ["cal/*.npy"]

[[targets]]
name = "mlp-{act}"
model = "mlp"
matrix = { act = ["uint8", "int8"] }
pipeline = [ { pass = "calibrate", dataset = "cal", method = "minmax" },
             { pass = "quantize-static", activation_type = "{act}" } ]
)";

// A directory with the ONNX MLP, its calibration samples and kOnnxManifest.
void make_onnx_project(const fs::path& d) {
  fs::create_directories(d / "models");
  fs::create_directories(d / "cal");
  int st = 0;
  const std::string out = sh(d, tool("make_tiny_onnx") + " mlp models/mlp.onnx", st);
  INFO(out);
  REQUIRE(st == 0);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int i = 0; i < 8; ++i) {
    std::vector<float> v(16);
    for (auto& x : v) x = u(rng);
    write_npy(d / ("cal/" + std::to_string(i) + ".npy"), {1, 16}, v);
  }
  std::ofstream(d / "qforge.toml") << kOnnxManifest;
}

}  // namespace

TEST_CASE("build --shared-only builds the steps two or more targets share, and nothing else",
          "[slurm][cli]") {
  test::TempDir d("qforge_shared_only_");
  make_onnx_project(d.path);
  int st = 0;
  std::string out = sh(d.path, qforge_cmd() + " build --shared-only", st);
  INFO(out);
  REQUIRE(st == 0);
  // The calibration and the import it reads.
  CHECK_THAT(out, Catch::Contains("shared steps only: 2 shared step(s): 2 built, 0 cached, 0 failed"));
  CHECK_FALSE(fs::exists(d / "dist/mlp-uint8.onnx"));
  CHECK_FALSE(fs::exists(d / "dist/mlp-int8.onnx"));
  // Run again: the shared step is cached, nothing runs.
  out = sh(d.path, qforge_cmd() + " build --shared-only", st);
  CHECK(st == 0);
  CHECK_THAT(out, Catch::Contains("0 built, 1 cached, 0 failed"));
  // The targets then load the calibration instead of running it, and equal a --no-cache build.
  out = sh(d.path, qforge_cmd() + " build --explain", st);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("load calibrate mlp"));
  CHECK_THAT(out, Catch::Contains("2 built"));
  const auto cached_a = test::slurp(d / "dist/mlp-uint8.onnx"),
             cached_b = test::slurp(d / "dist/mlp-int8.onnx");
  fs::remove_all(d.path / "dist");
  REQUIRE(sh(d.path, qforge_cmd() + " build --no-cache", st).size() > 0);
  REQUIRE(st == 0);
  CHECK(test::slurp(d / "dist/mlp-uint8.onnx") == cached_a);
  CHECK(test::slurp(d / "dist/mlp-int8.onnx") == cached_b);
  CHECK_FALSE(cached_a.empty());
  // Usage errors.
  CHECK(sh(d.path, qforge_cmd() + " build --shared-only --no-cache", st).find("keep nothing") !=
        std::string::npos);
  CHECK(st == 2);
  CHECK(sh(d.path, qforge_cmd() + " build --on slurm --no-cache", st).find("through the cache") !=
        std::string::npos);
  CHECK(st == 2);
  CHECK(sh(d.path, qforge_cmd() + " build --partition debug", st).find("go with --on slurm") !=
        std::string::npos);
  CHECK(st == 2);
  CHECK(sh(d.path, qforge_cmd() + " build --on kubernetes", st).size() > 0);
  CHECK(st == 2);
}

TEST_CASE("build --on slurm --dry-run prints the scripts and sbatch commands and submits nothing",
          "[slurm][cli]") {
  // Needs no cluster: nothing is submitted (sbatch is not even looked for).
  test::TempDir d("qforge_slurm_dry_");
  make_onnx_project(d.path);
  int st = 0;
  const std::string out = sh(
      d.path, "SLURM_CONF=/nonexistent " + qforge_cmd() + " build --on slurm --dry-run --partition p1", st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("2 of 2 targets to build, 1 shared step(s)"));
  CHECK_THAT(out, Catch::Contains("--shared-only"));
  CHECK_THAT(out, Catch::Contains("sbatch --parsable --job-name=qforge-targets"));
  CHECK_THAT(out, Catch::Contains("--array=0-1 '--dependency=afterok:<shared job id>' --partition=p1"));
  CHECK_THAT(out, Catch::Contains("mlp-uint8\nmlp-int8\n"));
  CHECK_FALSE(fs::exists(d / ".qforge/cache/slurm"));
  CHECK_FALSE(fs::exists(d / "dist"));
  // A remote cache reaches every job's command line (the server need not answer a dry run).
  const std::string rc = sh(d.path,
                            "SLURM_CONF=/nonexistent " + qforge_cmd() +
                                " build --on slurm --dry-run --remote-cache http://127.0.0.1:9/cache",
                            st);
  INFO(rc);
  REQUIRE(st == 0);
  CHECK_THAT(
      rc, Catch::Contains("--shared-only") && Catch::Contains("--remote-cache 'http://127.0.0.1:9/cache'"));
  CHECK_THAT(rc, Catch::Contains("--target \"$target\"") &&
                     Catch::Contains("--remote-cache 'http://127.0.0.1:9/cache'\n"));
}

TEST_CASE("build --on slurm without sbatch on PATH is a clear error", "[slurm][cli]") {
  test::TempDir d("qforge_slurm_nosbatch_");
  make_onnx_project(d.path);
  int st = 0;
  const std::string out = sh(d.path, "PATH=/nonexistent " + qforge_cmd() + " build --on slurm", st);
  CHECK(st == 1);
  CHECK_THAT(out, Catch::Contains("--on slurm needs Slurm's 'sbatch' on PATH"));
  CHECK_FALSE(fs::exists(d / "dist/mlp-uint8.onnx"));
}

TEST_CASE("a single-node Slurm builds GGUF variants as a job array, equal to a local build", "[slurm]") {
  const std::string why = cannot_run_slurm();
  if (!why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  Cluster cluster;
  INFO(cluster.log);
  REQUIRE(cluster.up);
  WARN("the Slurm cluster started (node idle) in " << cluster.start_seconds << " s");

  test::TempDir local("qforge_slurm_local_"), remote("qforge_slurm_remote_");
  int st = 0;
  for (const auto* d : {&local, &remote}) {
    fs::create_directories(d->path / "models");
    REQUIRE(sh(d->path, tool("make_tiny_llama") + " models/tiny.gguf --layers 2", st).find("error") ==
            std::string::npos);
    REQUIRE(st == 0);
    std::ofstream(d->path / "qforge.toml") << kGgufManifest;
  }
  std::string out = sh(local.path, qforge_cmd() + " build --no-cache", st);
  INFO(out);
  REQUIRE(st == 0);

  auto t0 = std::chrono::steady_clock::now();
  out = sh(remote.path, qforge_cmd() + " build --on slurm", st);
  const double slurm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(out);
  REQUIRE(st == 0);
  WARN("six GGUF variants on Slurm took " << slurm_seconds << " s (submit, wait, gather)");
  CHECK_THAT(out, Catch::Contains("submitted job array"));
  CHECK_THAT(out, Catch::Contains("targets: 6/6 done"));
  for (const char* t : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_M"}) {
    const std::string name = std::string("dist/llm-") + t + ".gguf";
    INFO(name);
    const auto a = test::slurp(local / name), b = test::slurp(remote / name);
    CHECK_FALSE(a.empty());
    CHECK(a == b);
  }
  auto report = nlohmann::json::parse(text_of(remote.path / "dist/report.json"));
  REQUIRE(report["targets"].size() == 6);
  std::set<std::string> jobs;
  for (const auto& t : report["targets"]) {
    CHECK(t["status"] == "built");
    REQUIRE(t.contains("slurm_job"));
    const std::string job = t["slurm_job"];
    CHECK(std::regex_match(job, std::regex("[0-9]+_[0-5]")));
    jobs.insert(job);
    CHECK(t["bits_per_weight"].get<double>() > 0);
  }
  CHECK(jobs.size() == 6);
  size_t steps_with_jobs = 0;
  for (const auto& s : report["steps"]) steps_with_jobs += s.contains("slurm_job");
  CHECK(steps_with_jobs >= 12);  // six quantize-gguf steps and six emits
  // The scripts and logs are kept.
  const std::string array_job = jobs.begin()->substr(0, jobs.begin()->find('_'));
  bool kept = false;
  for (const auto& e : fs::recursive_directory_iterator(remote.path / ".qforge/cache/slurm"))
    kept = kept || e.path().filename() == "target-" + array_job + "_0.out";
  CHECK(kept);

  // Nothing changed: nothing is submitted, and the report says cached.
  out = sh(remote.path, qforge_cmd() + " build --on slurm", st);
  CHECK(st == 0);
  CHECK_THAT(out, Catch::Contains("nothing to submit: every target is cached"));
  CHECK_THAT(out, Catch::Contains("0 built, 6 cached"));

  // A target whose step fails at run time (an importance matrix that is not
  // one) fails the build with its task's last log lines; the other is built.
  std::ofstream(remote.path / "bad.imatrix") << "this is not an importance matrix\n";
  std::ofstream(remote.path / "bad.toml") << R"([models.llm]
path = "models/tiny.gguf"
[[targets]]
name = "good"
model = "llm"
pipeline = [ { pass = "quantize-gguf", type = "Q6_K" } ]
[[targets]]
name = "broken"
model = "llm"
pipeline = [ { pass = "quantize-gguf", type = "Q4_0", imatrix = "bad.imatrix" } ]
)";
  out = sh(remote.path, qforge_cmd() + " build -f bad.toml --on slurm", st);
  INFO(out);
  CHECK(st == 1);
  CHECK_THAT(out, Catch::Contains("error: target 'broken': Slurm task"));
  CHECK_THAT(out, Catch::Contains("ended FAILED"));
  CHECK_THAT(out, Catch::Contains("bad.imatrix"));  // the task's own error, from its log
  CHECK(fs::exists(remote.path / "dist/good.gguf"));
  CHECK_FALSE(fs::exists(remote.path / "dist/broken.gguf"));
  report = nlohmann::json::parse(text_of(remote.path / "dist/report.json"));
  for (const auto& t : report["targets"]) CHECK(t["status"] == (t["name"] == "good" ? "built" : "failed"));
}

TEST_CASE("on Slurm, the shared calibration runs as one job and the targets after it", "[slurm]") {
  const std::string why = cannot_run_slurm();
  if (!why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  Cluster cluster;
  INFO(cluster.log);
  REQUIRE(cluster.up);
  test::TempDir local("qforge_slurm_onnx_local_"), remote("qforge_slurm_onnx_remote_");
  make_onnx_project(local.path);
  make_onnx_project(remote.path);
  int st = 0;
  std::string out = sh(local.path, qforge_cmd() + " build --no-cache", st);
  REQUIRE(st == 0);
  out = sh(remote.path, qforge_cmd() + " build --on slurm --sbatch-arg=--time=10", st);
  INFO(out);
  REQUIRE(st == 0);
  CHECK_THAT(out, Catch::Contains("1 shared step(s)"));
  for (const char* name : {"dist/mlp-uint8.onnx", "dist/mlp-int8.onnx"}) {
    INFO(name);
    CHECK_FALSE(test::slurp(local / name).empty());
    CHECK(test::slurp(local / name) == test::slurp(remote / name));
  }
  const auto report = nlohmann::json::parse(text_of(remote.path / "dist/report.json"));
  std::string shared_job, array_job;
  for (const auto& s : report["steps"])
    if (s["pass"] == "calibrate") {
      REQUIRE(s.contains("slurm_job"));
      shared_job = s["slurm_job"];
      CHECK(s["status"] == "built");
    }
  for (const auto& t : report["targets"]) {
    REQUIRE(t.contains("slurm_job"));
    array_job = std::string(t["slurm_job"]).substr(0, std::string(t["slurm_job"]).find('_'));
  }
  CHECK(std::regex_match(shared_job, std::regex("[0-9]+")));
  CHECK(std::stol(array_job) > std::stol(shared_job));

  // The shared job fails (a calibration sample of the wrong size): the array
  // is cancelled and every target fails with the shared job's log.
  write_npy(remote.path / "cal/bad.npy", {1, 7}, std::vector<float>(7, 1.f));
  out = sh(remote.path, qforge_cmd() + " build --on slurm", st);
  {
    INFO(out);
    CHECK(st == 1);
    CHECK_THAT(out, Catch::Contains("error: target 'mlp-uint8': not built: the shared steps' job"));
    CHECK_THAT(out, Catch::Contains("error: target 'mlp-int8': not built: the shared steps' job"));
    CHECK_THAT(out, Catch::Contains("ended FAILED"));
    CHECK_THAT(out, Catch::Contains("bad.npy"));  // the calibration's own error, from the job's log
  }
  fs::remove(remote.path / "cal/bad.npy");

  // Ctrl-C while the jobs wait (held back by --begin) cancels them.
  fs::remove_all(remote.path / ".qforge");
  const fs::path log = remote.path / "interrupted.out";
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(remote.path.c_str()) != 0) ::_exit(127);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(QFORGE_BIN, QFORGE_BIN, "build", "--on", "slurm", "--sbatch-arg=--begin=now+300",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::smatch m;
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    text = text_of(log);
    if (std::regex_search(text, m, std::regex("submitted job array ([0-9]+)"))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO(text);
  REQUIRE(!m.empty());
  const std::string array = m[1];
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 1));
  CHECK_THAT(text_of(log), Catch::Contains("interrupted: cancelled Slurm job(s) "));
  const std::string states = sh(remote.path, "squeue -h -r --states=all -o %T -j " + array, st);
  INFO(states);
  CHECK(st == 0);
  CHECK(std::regex_match(states, std::regex("(CANCELLED\n)+")));
}
