// End to end through the qforge binary: exit statuses, diagnostics, builds,
// the cache, plan, report, and an interrupted build (kill -9).
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
#include <set>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;

namespace {

struct Run {
  int rc;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string bin_dir() { return fs::path(QFORGE_BIN).parent_path().string(); }

// Runs a shell command in `dir`, capturing stdout and stderr.
Run run(const std::string& cmd, const fs::path& dir) {
  fs::path o = dir / ".cli-out", e = dir / ".cli-err";
  std::string full = "cd '" + dir.string() + "' && " + cmd + " >'" + o.string() + "' 2>'" + e.string() + "'";
  int st = std::system(full.c_str());
  Run r{WIFEXITED(st) ? WEXITSTATUS(st) : 128, slurp(o), slurp(e)};
  fs::remove(o);
  fs::remove(e);
  return r;
}

std::string qforge() { return std::string("'") + QFORGE_BIN + "'"; }

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("qforge-cli-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path / "models");
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path / name) << text; }
};

void make_models(const TempDir& d, const std::string& llama_args = "") {
  REQUIRE(run("'" + bin_dir() + "/make_tiny_llama' models/tiny.gguf " + llama_args, d.path).rc == 0);
  REQUIRE(run("'" + bin_dir() + "/make_tiny_onnx' mlp models/mlp.onnx", d.path).rc == 0);
}

}  // namespace

TEST_CASE("exit statuses: 0 success, 1 input error, 2 usage error", "[cli]") {
  TempDir d("exit");
  CHECK(run(qforge() + " --version", d.path).rc == 0);
  CHECK(run(qforge() + " --version", d.path).out.find("qforge 0.") == 0);
  CHECK(run(qforge(), d.path).rc == 2);
  CHECK(run(qforge() + " frobnicate", d.path).rc == 2);
  CHECK(run(qforge() + " list nothing", d.path).rc == 2);
  CHECK(run(qforge() + " build --jobs 0", d.path).rc == 2);
  for (const char* sub : {"build", "plan", "inspect", "list", "quantize"})
    CHECK(run(qforge() + " " + sub + " --help", d.path).rc == 0);
  auto r = run(qforge() + " build -f missing.toml", d.path);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains("missing.toml: cannot read the manifest"));
  r = run(qforge() + " inspect nothing.bin", d.path);
  CHECK(r.rc == 1);
}

TEST_CASE("a manifest with three mistakes gets three diagnostics in one run", "[cli]") {
  TempDir d("mistakes");
  make_models(d);
  d.write("qforge.toml", R"([build]
output = "dist"

[models.llm]
path = "models/tiny.gguf"

[[targets]]
name = "llm-{type}"
model = "llm"
matrix = { type = ["Q4_K_M", "Q8_0"] }
pipeline = [ { pass = "quantise", type = "{type}" } ]
emitt = "gguf"

[[targets]]
name = "other"
model = "lmm"
)");
  auto r = run(qforge() + " build", d.path);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err, Catch::Contains(
                        "qforge.toml:12:1: error: unknown key 'emitt' in a target (did you mean 'emit'?)"));
  CHECK_THAT(r.err, Catch::Contains("qforge.toml:11:23: error: unknown pass 'quantise'"));
  CHECK_THAT(r.err, Catch::Contains("qforge.toml:16:9: error: unknown model 'lmm' (did you mean 'llm'?)"));
  CHECK_THAT(r.err, Catch::Contains("3 errors"));
  CHECK_FALSE(fs::exists(d.path / "dist"));  // nothing ran
}

TEST_CASE("build, rebuild with nothing to do, plan, report", "[cli]") {
  TempDir d("build");
  make_models(d);
  d.write("qforge.toml", R"([models.llm]
path = "models/tiny.gguf"
[models.mlp]
path = "models/mlp.onnx"
[[targets]]
name = "llm-copy"
model = "llm"
[[targets]]
name = "mlp-copy"
model = "mlp"
)");
  auto r1 = run(qforge() + " build", d.path);
  INFO(r1.err);
  REQUIRE(r1.rc == 0);
  CHECK_THAT(r1.out, Catch::Contains("2 targets: 2 built, 0 cached, 0 failed"));
  // An unmodified GGUF re-emits byte for byte.
  CHECK(slurp(d.path / "dist/llm-copy.gguf") == slurp(d.path / "models/tiny.gguf"));

  auto r2 = run(qforge() + " build --explain", d.path);
  REQUIRE(r2.rc == 0);
  CHECK_THAT(r2.out, Catch::Contains("0 built, 2 cached, 0 failed; 0 of 4 steps ran (nothing to do)"));
  CHECK_THAT(r2.err, Catch::Contains("skip emit llm-copy: up to date"));

  auto report = nlohmann::json::parse(slurp(d.path / "dist/report.json"));
  REQUIRE(report["targets"].size() == 2);
  CHECK(report["targets"][0]["name"] == "llm-copy");
  CHECK(report["targets"][0]["status"] == "cached");
  CHECK(report["targets"][0]["format"] == "gguf");
  CHECK(report["targets"][0]["artifact"] == "dist/llm-copy.gguf");
  CHECK(report["targets"][0]["bytes"].get<uint64_t>() == fs::file_size(d.path / "models/tiny.gguf"));
  CHECK(report["targets"][0]["bits_per_weight"].get<double>() == Approx(32.0));
  CHECK(report["targets"][1]["bits_per_weight"].get<double>() == Approx(32.0));  // float ONNX too
  CHECK(report["steps"].size() == 4);
  CHECK(fs::exists(d.path / "dist/report.md"));

  auto plan = run(qforge() + " plan --json", d.path);
  REQUIRE(plan.rc == 0);
  auto pj = nlohmann::json::parse(plan.out);
  CHECK(pj["nodes"].size() == 4);
  for (const auto& n : pj["nodes"]) CHECK(n["state"] != "will run");

  // Touching the input without changing it: no rebuild (contents, not times).
  fs::last_write_time(d.path / "models/tiny.gguf", fs::file_time_type::clock::now());
  CHECK_THAT(run(qforge() + " build", d.path).out, Catch::Contains("0 built, 2 cached"));
  // Changing it: only its target rebuilds, and --explain says why.
  REQUIRE(run("'" + bin_dir() + "/make_tiny_llama' models/tiny.gguf --seed 7", d.path).rc == 0);
  auto r3 = run(qforge() + " build --explain", d.path);
  CHECK_THAT(r3.out, Catch::Contains("1 built, 1 cached"));
  CHECK_THAT(r3.err, Catch::Contains("input changed: " + (d.path / "models/tiny.gguf").string()));
  // --dry-run does nothing.
  fs::remove(d.path / "dist/llm-copy.gguf");
  auto r4 = run(qforge() + " build --dry-run", d.path);
  CHECK(r4.rc == 0);
  CHECK_FALSE(fs::exists(d.path / "dist/llm-copy.gguf"));
  // --target builds only that one; a missing artifact is restored from the cache.
  auto r5 = run(qforge() + " build --target llm-copy", d.path);
  CHECK_THAT(r5.out, Catch::Contains("1 targets: 0 built, 1 cached"));
  CHECK(fs::exists(d.path / "dist/llm-copy.gguf"));
  CHECK(run(qforge() + " build --target nope", d.path).rc == 1);
}

TEST_CASE("kill -9 while writing leaves no file under the final name, and the next build completes",
          "[cli]") {
  TempDir d("kill");
  // Large enough that writing takes a while: ~200 MB.
  make_models(d, "--layers 24 --embd 512 --ff 2048 --vocab 4000");
  d.write("qforge.toml",
          "[models.llm]\npath = \"models/tiny.gguf\"\n[[targets]]\nname = \"big\"\nmodel = \"llm\"\n");
  fs::create_directories(d.path / "dist");
  bool killed_mid_write = false;
  for (int attempt = 0; attempt < 5 && !killed_mid_write; ++attempt) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::chdir(d.path.c_str()) != 0) ::_exit(127);
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(QFORGE_BIN, QFORGE_BIN, "build", "--no-cache", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Wait for the temporary file to appear, then kill.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      bool temp = false;
      for (const auto& e : fs::directory_iterator(d.path / "dist"))
        if (e.path().filename().string().find(".big.gguf.tmp-") == 0 && fs::file_size(e.path()) > 0)
          temp = true;
      if (temp) {
        ::kill(pid, SIGKILL);
        killed_mid_write = true;
        break;
      }
      int st;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (pid > 0) ::waitpid(pid, nullptr, 0);
    if (killed_mid_write) CHECK_FALSE(fs::exists(d.path / "dist/big.gguf"));
    fs::remove(d.path / "dist/big.gguf");
  }
  REQUIRE(killed_mid_write);
  auto r = run(qforge() + " build", d.path);
  INFO(r.err);
  CHECK(r.rc == 0);
  CHECK(slurp(d.path / "dist/big.gguf") == slurp(d.path / "models/tiny.gguf"));
  // The next build also swept the dead build's temporary file.
  for (const auto& e : fs::directory_iterator(d.path / "dist"))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
}

TEST_CASE("every hostile file gets exit status 1 and a message, and no output", "[cli][hostile]") {
  TempDir d("hostile");
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(QFORGE_SOURCE_DIR) / "tests/data/hostile")) {
    if (!e.is_regular_file() || e.path().extension() == ".md") continue;
    ++n;
    auto r = run(qforge() + " inspect '" + e.path().string() + "'", d.path);
    INFO(e.path().string() << "\n" << r.err);
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Catch::Contains("error: "));
    // The same file as a build input: an error, and no artifact (models only;
    // dataset files are inputs of calibration, not models).
    std::string kind = e.path().parent_path().filename().string();
    if (kind == "npy" || kind == "npz" || kind == "pb") continue;
    fs::copy_file(e.path(), d.path / ("models/in" + e.path().extension().string()),
                  fs::copy_options::overwrite_existing);
    d.write("qforge.toml", "[models.m]\npath = \"models/in" + e.path().extension().string() +
                               "\"\nformat = \"" + e.path().parent_path().filename().string() +
                               "\"\n[[targets]]\nname = \"t\"\nmodel = \"m\"\n");
    auto b = run(qforge() + " build", d.path);
    CHECK(b.rc == 1);
    CHECK_FALSE(fs::exists(d.path / ("dist/t" + e.path().extension().string())));
  }
  CHECK(n >= 40);
}

TEST_CASE("the quickstart builds, and every artifact runs in ONNX Runtime or llama.cpp",
          "[cli][quickstart]") {
  TempDir d("quickstart");
  // The quickstart's own script makes its models and images, beside the copied manifest.
  for (const char* f : {"qforge.toml", "make_models.sh"})
    fs::copy_file(fs::path(QFORGE_SOURCE_DIR) / "examples/quickstart" / f, d.path / f);
  auto made = run("./make_models.sh '" + bin_dir() + "/..'", d.path);
  INFO(made.err);
  REQUIRE(made.rc == 0);
  auto r = run(qforge() + " build", d.path);
  INFO(r.err);
  REQUIRE(r.rc == 0);
  auto report = nlohmann::json::parse(slurp(d.path / "dist/report.json"));
  REQUIRE(report["targets"].size() >= 7);
  std::string py = std::getenv("QFORGE_PYTHON") ? std::getenv("QFORGE_PYTHON") : "python3";
  std::string src = QFORGE_SOURCE_DIR;
  size_t onnx = 0, gguf = 0;
  for (const auto& t : report["targets"]) {
    std::string artifact = t["artifact"];
    INFO(artifact);
    CHECK(t["status"] == "built");
    if (t["format"] == "onnx") {
      // Runs in ONNX Runtime, and stays close to the float model.
      const std::string reference = "models/" + t["model"].get<std::string>() + ".onnx";
      auto c =
          run("'" + py + "' '" + src + "/tests/tools/ort_compare.py' " + reference + " " + artifact, d.path);
      INFO(c.err);
      REQUIRE(c.rc == 0);
      CHECK(nlohmann::json::parse(c.out)["cosine"].get<double>() > 0.98);
      ++onnx;
    } else {
      // Loads in llama.cpp and gives a probability distribution.
      auto c = run("node '" + src + "/tests/tools/llama_probs.mjs' " + artifact, d.path);
      INFO(c.err);
      REQUIRE(c.rc == 0);
      auto probs = nlohmann::json::parse(c.out)["probabilities"];
      double sum = 0;
      for (double p : probs) sum += p;
      CHECK(sum == Approx(1.0).margin(1e-3));
      ++gguf;
    }
  }
  CHECK(onnx >= 1);
  CHECK(gguf >= 1);
  // The showcase: the classifier for several devices, each evaluated, and
  // GGUF variants chosen by a budget (select-precision) beside the mixtures;
  // report.html plots every evaluated target and lists every plan's tensors.
  size_t evaluated = 0, plans = 0;
  std::set<std::string> profiles;
  for (const auto& t : report["targets"]) {
    evaluated += t["metrics"].contains("cosine");
    if (t["model"] == "cnn") profiles.insert(t["profile"].get<std::string>());
  }
  for (const auto& s : report["steps"]) plans += s["pass"] == "select-precision";
  CHECK(profiles.size() >= 3);
  CHECK(evaluated >= 4);
  CHECK(plans >= 2);
  const std::string html = slurp(d.path / "dist/report.html");
  size_t points = 0;
  for (size_t at = html.find("<g class=\"point "); at != std::string::npos;
       at = html.find("<g class=\"point ", at + 1))
    ++points;
  CHECK(points == evaluated);
  CHECK(html.find("<div class=\"plan\" data-schema=\"precision/1\">") != std::string::npos);
  // A second build does nothing.
  CHECK_THAT(run(qforge() + " build", d.path).out, Catch::Contains("(nothing to do)"));
}

TEST_CASE("reordered tensor_types rules change the artifact, and a cached build equals --no-cache",
          "[cli][graph]") {
  TempDir d("rules");
  make_models(d);
  auto manifest = [&](const std::string& rules) {
    d.write("qforge.toml",
            "[models.llm]\npath = \"models/tiny.gguf\"\n[[targets]]\nname = \"llm\"\nmodel = \"llm\"\n"
            "pipeline = [ { pass = \"quantize-gguf\", type = \"Q4_0\", tensor_types = " +
                rules + " } ]\n");
  };
  manifest(R"(["attn_q=Q8_0", "attn=Q5_0"])");
  auto r1 = run(qforge() + " build", d.path);
  INFO(r1.err);
  REQUIRE(r1.rc == 0);
  const std::string first = slurp(d.path / "dist/llm.gguf");
  manifest(R"(["attn=Q5_0", "attn_q=Q8_0"])");  // attn now matches attn_q first
  auto r2 = run(qforge() + " build --explain", d.path);
  REQUIRE(r2.rc == 0);
  CHECK_THAT(r2.out, Catch::Contains("1 built, 0 cached"));
  CHECK_THAT(r2.err, Catch::Contains("pass options changed: quantize-gguf"));
  const std::string second = slurp(d.path / "dist/llm.gguf");
  CHECK(first != second);
  auto r3 = run(qforge() + " build --no-cache", d.path);
  REQUIRE(r3.rc == 0);
  CHECK(slurp(d.path / "dist/llm.gguf") == second);
  manifest(R"(["attn_q=Q8_0", "attn=Q5_0"])");  // back: served from the cache, equal to the first build
  auto r4 = run(qforge() + " build", d.path);
  CHECK_THAT(r4.out, Catch::Contains("0 built, 1 cached"));
  CHECK(slurp(d.path / "dist/llm.gguf") == first);

  // A table has no order: refused, with the list form to write instead.
  manifest(R"({ "attn_q" = "Q8_0", "attn" = "Q5_0" })");
  auto bad = run(qforge() + " plan", d.path);
  CHECK(bad.rc == 1);
  CHECK_THAT(bad.err, Catch::Contains(
                          "qforge.toml:6:70: error: option 'tensor_types' of pass 'quantize-gguf' is a list "
                          "whose order matters"));
  CHECK_THAT(bad.err, Catch::Contains("tensor_types = [\"attn_q=Q8_0\", \"attn=Q5_0\"]"));
  // Type names are checked at plan time, with a suggestion.
  manifest(R"(["attn_q=Q8_O"])");
  auto typo = run(qforge() + " plan", d.path);
  CHECK(typo.rc == 1);
  CHECK_THAT(typo.err, Catch::Contains(
                           "error: pass 'quantize-gguf', option 'tensor_types': rule 'attn_q=Q8_O': unknown "
                           "tensor type 'Q8_O' (did you mean 'q8_0'?)"));
}

TEST_CASE("qforge quantize: a bad type is one usage error with a suggestion", "[cli]") {
  TempDir d("quantize-usage");
  make_models(d);
  auto r = run(qforge() + " quantize models/tiny.gguf out.gguf --type Q4_K_Z", d.path);
  CHECK(r.rc == 2);
  CHECK_THAT(r.err,
             Catch::Contains("error: --type: unknown type 'Q4_K_Z' (did you mean 'Q4_K_M' or 'Q4_K_S'?)"));
  CHECK(r.err.find("quantize-gguf: quantize-gguf") == std::string::npos);
  CHECK(r.out.empty());
  CHECK_FALSE(fs::exists(d.path / "out.gguf"));
  auto t = run(qforge() + " quantize models/tiny.gguf out.gguf --type Q8_0 --tensor-type attn_v", d.path);
  CHECK(t.rc == 2);
  CHECK_THAT(t.err, Catch::Contains("--tensor-type: 'attn_v' is not of the form REGEX=TYPE"));
  auto ok = run(qforge() + " quantize models/tiny.gguf out.gguf --type Q8_0", d.path);
  INFO(ok.err);
  CHECK(ok.rc == 0);
  CHECK_THAT(ok.out, Catch::StartsWith("wrote "));
  CHECK(ok.out.find("| x") == std::string::npos);
}

TEST_CASE("plan refuses a bad value and a bad profile, each located, before any work", "[cli][graph]") {
  TempDir d("plan-validate");
  make_models(d);
  fs::create_directories(d.path / "profiles");
  d.write("profiles/board.toml", R"(name = "board"
description = "a board whose profile misspells a pass"
[defaults.quantize-weigths]
bits = 4
)");
  d.write("qforge.toml", R"([profiles]
paths = ["profiles"]
[models.mlp]
path = "models/mlp.onnx"
[[targets]]
name = "mlp-w{bits}"
model = "mlp"
matrix = { bits = [4, 5] }
pipeline = [ { pass = "quantize-weights", bits = "{bits}" } ]
)");
  auto r = run(qforge() + " plan", d.path);
  CHECK(r.rc == 1);
  CHECK_THAT(r.err,
             Catch::Contains("qforge.toml:9:50: error: option 'bits' of pass 'quantize-weights' cannot be 5; "
                             "choose one of 4, 8"));
  CHECK_THAT(r.err, Catch::Contains(
                        "board.toml:3:1: error: profile 'board' configures pass 'quantize-weigths', which is "
                        "not registered (did you mean 'quantize-weights'?)"));
  CHECK(r.out.empty());
  auto b = run(qforge() + " build", d.path);
  CHECK(b.rc == 1);
  CHECK_FALSE(fs::exists(d.path / "dist"));
}

TEST_CASE("inspect summarises an ONNX graph: opsets, ops, weights held by Constant nodes", "[cli]") {
  TempDir d("inspect-graph");
  make_models(d);
  auto r = run(qforge() + " inspect models/mlp.onnx --json", d.path);
  REQUIRE(r.rc == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["graph"]["nodes"].get<int>() > 0);
  CHECK(j["graph"]["ops"]["MatMul"] == 2);
  CHECK(j["graph"]["constant_nodes"] == 0);
  auto t = run(qforge() + " inspect models/mlp.onnx", d.path);
  CHECK_THAT(t.out, Catch::Contains("graph: ir_version"));
}
