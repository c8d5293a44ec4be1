// quantize-gguf against llama.cpp: for generated models of several shapes (GQA, no GQA,
// tied embeddings, 8 experts, a "70B" layer count, rows that force K-quant fallbacks) and
// every supported file type, with and without an importance matrix (GGUF and legacy
// .dat) and llama-quantize's options, qforge's output file equals the one
// llama_model_quantize (libllama of node-llama-cpp 3.22.1, dlopen'ed from
// QFORGE_LLAMA_SO) writes, byte for byte. [llama] cases also load the outputs in
// node-llama-cpp and compare next-token probabilities.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include "test_util.h"
#include "tools/llama_abi.h"

#include "gguf/gguf.h"
#include "gguf/tiny_llama.h"
#include "imatrix.h"
#include "qforge/graph.h"
#include "qforge/status.h"
#include "quantize_gguf.h"

namespace fs = std::filesystem;
using namespace qforge;
using namespace qforge::gguf_quant;

namespace {

// ------------------------------------------------------------------ llama.h (v0.5.0)
using namespace qforge::llama_abi;
constexpr int kGgmlTypeCount = 43;  // GGML_TYPE_COUNT in ggml 0.25.1

// common/imatrix-loader.h of the same version (libllama-common.so exports the loader).
struct common_imatrix_entry {
  std::vector<float> sums;
  std::vector<int64_t> counts;
};
struct common_imatrix {
  std::map<std::string, common_imatrix_entry> entries;
  std::vector<std::string> datasets;
  int32_t chunk_count = 0;
  int32_t chunk_size = 0;
  bool is_legacy = false;
  bool has_metadata = false;
};

std::string g_llama_log;
void log_sink(int level, const char* text, void*) {
  if (level >= 3) g_llama_log += text;  // warnings and errors
}

struct Llama {
  void* llama = nullptr;
  void* common = nullptr;
  llama_model_quantize_params (*default_params)() = nullptr;
  uint32_t (*quantize)(const char*, const char*, const llama_model_quantize_params*) = nullptr;
  bool (*imatrix_load)(const std::string&, common_imatrix&) = nullptr;
  std::string error;

  static Llama& get() {
    static Llama l;
    return l;
  }

 private:
  Llama() {
    const char* so = std::getenv("QFORGE_LLAMA_SO");
    const char* base = std::getenv("QFORGE_GGML_BASE_SO");
    if (!so || !*so || !base || !*base) {
      error =
          "QFORGE_LLAMA_SO and QFORGE_GGML_BASE_SO must name libllama.v0.5.0.so and "
          "libggml-base.so of @node-llama-cpp/linux-x64@3.22.1 (make test installs them into "
          "build/deps/node_modules and sets both)";
      return;
    }
    if (!dlopen(base, RTLD_NOW | RTLD_GLOBAL)) {
      error = std::string("dlopen ") + base + ": " + dlerror();
      return;
    }
    llama = dlopen(so, RTLD_NOW | RTLD_GLOBAL);
    if (!llama) {
      error = std::string("dlopen ") + so + ": " + dlerror();
      return;
    }
    default_params = reinterpret_cast<llama_model_quantize_params (*)()>(
        dlsym(llama, "llama_model_quantize_default_params"));
    quantize = reinterpret_cast<uint32_t (*)(const char*, const char*, const llama_model_quantize_params*)>(
        dlsym(llama, "llama_model_quantize"));
    auto init = reinterpret_cast<void (*)()>(dlsym(llama, "llama_backend_init"));
    auto log_set =
        reinterpret_cast<void (*)(void (*)(int, const char*, void*), void*)>(dlsym(llama, "llama_log_set"));
    if (!default_params || !quantize || !init || !log_set) {
      error = std::string(so) + ": missing llama_model_quantize* / llama_backend_init / llama_log_set";
      return;
    }
    log_set(&log_sink, nullptr);
    init();
    const std::string common_so = (fs::path(so).parent_path() / "libllama-common.so").string();
    common = dlopen(common_so.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (common)
      imatrix_load = reinterpret_cast<bool (*)(const std::string&, common_imatrix&)>(dlsym(
          common,
          "_Z19common_imatrix_loadRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEER14common_imatrix"));
  }
};

Llama& llama() {
  Llama& l = Llama::get();
  if (!l.error.empty()) FAIL(l.error);
  return l;
}

// ------------------------------------------------------------------ helpers
struct TempDir : qforge::test::TempDir {
  TempDir() : qforge::test::TempDir("quantize_gguf_test_") {}
};
using qforge::test::slurp;

// The first difference between two GGUF files, in words ("" when the bytes are equal).
std::string gguf_diff(const std::string& a, const std::string& b) {
  if (slurp(a) == slurp(b)) return "";
  Model ma = read_gguf(a), mb = read_gguf(b);
  if (ma.metadata.size() != mb.metadata.size())
    return "metadata count " + std::to_string(ma.metadata.size()) + " vs " +
           std::to_string(mb.metadata.size());
  for (size_t i = 0; i < ma.metadata.size(); ++i)
    if (ma.metadata[i].first != mb.metadata[i].first || ma.metadata[i].second != mb.metadata[i].second)
      return "metadata #" + std::to_string(i) + ": " + ma.metadata[i].first + "=" +
             ma.metadata[i].second.summary() + " vs " + mb.metadata[i].first + "=" +
             mb.metadata[i].second.summary();
  if (ma.tensors.size() != mb.tensors.size()) return "tensor count differs";
  for (size_t i = 0; i < ma.tensors.size(); ++i) {
    const Tensor &x = ma.tensors[i], &y = mb.tensors[i];
    if (x.name != y.name) return "tensor #" + std::to_string(i) + ": " + x.name + " vs " + y.name;
    if (x.type != y.type) return x.name + ": type " + name_of(x.type) + " vs " + name_of(y.type);
    BlobPtr bx = x.bytes(), by = y.bytes();
    if (bx->size() != by->size() || std::memcmp(bx->data(), by->data(), bx->size()) != 0)
      return x.name + " (" + name_of(x.type) + "): data differ";
  }
  return "bytes differ outside metadata and tensors (layout)";
}

// llama.cpp's quantization of `in` with llama-quantize-like arguments.
struct LlamaArgs {
  int ftype = 7;
  int output_tensor_type = kGgmlTypeCount;
  int token_embedding_type = kGgmlTypeCount;
  bool allow_requantize = false;
  bool leave_output = false;
  bool pure = false;
  std::vector<std::pair<std::string, int>> tensor_types;
  std::map<std::string, std::vector<float>> imatrix;  // already normalised
  std::vector<llama_model_kv_override> kv;
};

bool llama_quantize(const std::string& in, const std::string& out, const LlamaArgs& a) {
  Llama& l = llama();
  llama_model_quantize_params p = l.default_params();
  p.nthread = 2;
  p.ftype = a.ftype;
  p.output_tensor_type = a.output_tensor_type;
  p.token_embedding_type = a.token_embedding_type;
  p.allow_requantize = a.allow_requantize;
  p.quantize_output_tensor = !a.leave_output;
  p.pure = a.pure;
  std::vector<llama_model_imatrix_data> im;
  for (const auto& [name, v] : a.imatrix) im.push_back({name.c_str(), v.data(), v.size()});
  im.push_back({nullptr, nullptr, 0});
  if (!a.imatrix.empty()) p.imatrix = im.data();
  std::vector<llama_model_tensor_override> tt;
  for (const auto& [re, t] : a.tensor_types) tt.push_back({re.c_str(), t});
  tt.push_back({nullptr, kGgmlTypeCount});
  if (!a.tensor_types.empty()) p.tt_overrides = tt.data();
  std::vector<llama_model_kv_override> kv = a.kv;
  if (!kv.empty()) {
    kv.emplace_back();
    kv.back().key[0] = 0;
    p.kv_overrides = kv.data();
  }
  g_llama_log.clear();
  return l.quantize(in.c_str(), out.c_str(), &p) == 0;
}

llama_model_kv_override kv_str(const char* key, const std::string& v) {
  llama_model_kv_override o;
  std::memset(&o, 0, sizeof o);
  o.tag = KV_STR;
  std::snprintf(o.key, sizeof o.key, "%s", key);
  std::snprintf(o.val_str, sizeof o.val_str, "%s", v.c_str());
  return o;
}
llama_model_kv_override kv_int(const char* key, int64_t v) {
  llama_model_kv_override o;
  std::memset(&o, 0, sizeof o);
  o.tag = KV_INT;
  std::snprintf(o.key, sizeof o.key, "%s", key);
  o.val_i64 = v;
  return o;
}

// qforge's quantization of `in`.
QuantizeSummary qforge_quantize(const std::string& in, const std::string& out, const QuantizeOptions& o,
                                int threads = 2) {
  Model m = read_gguf(in);
  QuantizeSummary s = quantize_model(m, o, threads);
  write_gguf(m, out);
  return s;
}

QuantizeOptions qopts(const std::string& type) {
  QuantizeOptions o;
  o.type = type;
  return o;
}

// ------------------------------------------------------------------ models
struct Shape {
  const char* what;
  TinyLlamaOptions o;
  bool tied = false;     // drop output.weight (token_embd doubles as the output)
  uint32_t experts = 0;  // replace the FFN by this many experts
};

std::vector<float> random_floats(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

Tensor f32_tensor(const std::string& name, std::vector<int64_t> shape, uint64_t seed, float scale) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  std::vector<float> v = random_floats(n, seed, scale);
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.type = ElemType::F32;
  t.data = make_blob(v.data(), v.size() * sizeof(float));
  return t;
}

Model make_model(const Shape& s) {
  Model m = make_tiny_llama(s.o);
  if (s.tied) {
    m.tensors.erase(std::remove_if(m.tensors.begin(), m.tensors.end(),
                                   [](const Tensor& t) { return t.name == "output.weight"; }),
                    m.tensors.end());
  }
  if (s.experts) {
    const int64_t E = s.o.embd, F = s.o.ff, X = s.experts;
    std::vector<Tensor> ts;
    for (auto& t : m.tensors) {
      if (t.name.find("ffn_gate.weight") != std::string::npos ||
          t.name.find("ffn_up.weight") != std::string::npos ||
          t.name.find("ffn_down.weight") != std::string::npos)
        continue;
      ts.push_back(t);
      if (t.name.find("ffn_norm.weight") != std::string::npos) {
        const std::string p = t.name.substr(0, t.name.find("ffn_norm"));
        const uint64_t seed = s.o.seed * 1000 + ts.size();
        ts.push_back(f32_tensor(p + "ffn_gate_inp.weight", {X, E}, seed + 1, 0.1f));
        ts.push_back(f32_tensor(p + "ffn_gate_exps.weight", {X, F, E}, seed + 2, 0.05f));
        ts.push_back(f32_tensor(p + "ffn_up_exps.weight", {X, F, E}, seed + 3, 0.05f));
        ts.push_back(f32_tensor(p + "ffn_down_exps.weight", {X, E, F}, seed + 4, 0.05f));
      }
    }
    m.tensors = std::move(ts);
    m.set_meta("llama.expert_count", MetaValue::of_u32(s.experts));
    m.set_meta("llama.expert_used_count", MetaValue::of_u32(2));
  }
  return m;
}

TinyLlamaOptions tl(uint32_t layers, uint32_t embd, uint32_t ff, uint32_t heads, uint32_t heads_kv,
                    uint64_t seed, uint32_t vocab = 320) {
  TinyLlamaOptions o;
  o.layers = layers;
  o.embd = embd;
  o.ff = ff;
  o.heads = heads;
  o.heads_kv = heads_kv;
  o.seed = seed;
  o.vocab = vocab;
  return o;
}

std::vector<Shape> shapes() {
  return {
      // GQA 4, 8 layers (use_more_bits picks layers), ffn_down rows of 352: K-quant fallback.
      {"gqa4-8L", tl(8, 256, 352, 4, 1, 11)},
      // no GQA, every row a multiple of 256, vocab not a multiple of 32 rows (rows are fine).
      {"mha-3L", tl(3, 512, 768, 8, 8, 12, 300)},
      // tied embeddings: token_embd gets output.weight's rules.
      {"tied-2L", tl(2, 256, 512, 4, 2, 13), true},
      // 8 experts (Mixtral-like rules: attn_v/attn_k Q8_0, attn_output Q5_K).
      {"moe8-2L", tl(2, 256, 256, 4, 2, 14), false, 8},
      // rows of 64 (K-quants fall back) and ffn_down rows of 40 (not a multiple of 32: F16).
      {"small-odd", tl(3, 64, 40, 4, 4, 15)},
      // 80 layers with GQA: llama.cpp's 70B rule for attn_v.
      {"70b-like", tl(80, 64, 64, 4, 2, 16)},
  };
}

struct FT {
  const char* name;
  int ftype;
};
const FT kFileTypesToCheck[] = {
    {"Q2_K", 10},   {"Q3_K_S", 11}, {"Q3_K_M", 12}, {"Q3_K_L", 13}, {"Q4_K_S", 14}, {"Q4_K_M", 15},
    {"Q5_K_S", 16}, {"Q5_K_M", 17}, {"Q6_K", 18},   {"Q8_0", 7},    {"Q4_0", 2},    {"Q4_1", 3},
    {"Q5_0", 8},    {"Q5_1", 9},    {"IQ4_NL", 25}, {"IQ4_XS", 30}, {"F16", 1},     {"BF16", 32},
};

// Writes a llama-imatrix GGUF file (in_sum2 / counts per weight) for `model`'s quantizable
// matrices, and returns the raw values.
struct RawImatrix {
  std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> e;  // sums, counts
};

RawImatrix make_raw_imatrix(const Model& m, uint64_t seed) {
  RawImatrix r;
  uint64_t k = 0;
  for (const auto& t : m.tensors) {
    if (t.shape.size() < 2 || t.name.find("_norm") != std::string::npos) continue;
    if (t.name == "token_embd.weight" || t.name.find("gate_inp") != std::string::npos) continue;
    const int64_t ne0 = t.shape.back();
    const int64_t ne2 = t.shape.size() >= 3 ? t.shape[0] : 1;
    std::vector<float> sums = random_floats(static_cast<size_t>(ne0 * ne2), seed + k++, 1.0f);
    for (auto& x : sums) x = x * x * 100.0f + 0.01f;
    std::vector<float> counts(static_cast<size_t>(ne2));
    for (int64_t j = 0; j < ne2; ++j) counts[static_cast<size_t>(j)] = static_cast<float>(100 + 7 * j);
    if (ne2 > 2) counts[1] = 0.0f;  // an expert never routed to: llama-quantize uses 1s
    r.e[t.name] = {std::move(sums), std::move(counts)};
  }
  return r;
}

void write_gguf_imatrix(const RawImatrix& r, const std::string& path) {
  Model m;
  m.format = "gguf";
  m.metadata.emplace_back("general.type", MetaValue::of_string("imatrix"));
  m.metadata.emplace_back("imatrix.datasets",
                          MetaValue::of_array(MetaType::String, {MetaValue::of_string("calib.txt")}));
  m.metadata.emplace_back("imatrix.chunk_count", MetaValue::of_u32(17));
  m.metadata.emplace_back("imatrix.chunk_size", MetaValue::of_u32(512));
  for (const auto& [name, sc] : r.e) {
    const int64_t n = static_cast<int64_t>(sc.second.size());
    const int64_t ne0 = static_cast<int64_t>(sc.first.size()) / n;
    Tensor s;
    s.name = name + ".in_sum2";
    s.shape = {n, ne0};
    s.type = ElemType::F32;
    s.data = make_blob(sc.first.data(), sc.first.size() * 4);
    Tensor c;
    c.name = name + ".counts";
    c.shape = {n, 1};
    c.type = ElemType::F32;
    c.data = make_blob(sc.second.data(), sc.second.size() * 4);
    m.tensors.push_back(std::move(s));
    m.tensors.push_back(std::move(c));
  }
  write_gguf(m, path);
}

// Legacy .dat: values stored as mean * ncall (what llama-imatrix wrote).
void write_dat_imatrix(const RawImatrix& r, const std::string& path, int32_t ncall) {
  std::ofstream f(path, std::ios::binary);
  auto i32 = [&](int32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  i32(static_cast<int32_t>(r.e.size()));
  for (const auto& [name, sc] : r.e) {
    i32(static_cast<int32_t>(name.size()));
    f.write(name.data(), static_cast<std::streamsize>(name.size()));
    i32(ncall);
    i32(static_cast<int32_t>(sc.first.size()));
    f.write(reinterpret_cast<const char*>(sc.first.data()),
            static_cast<std::streamsize>(sc.first.size() * 4));
  }
  i32(23);  // chunk count
  const std::string ds = "legacy-calib.txt";
  i32(static_cast<int32_t>(ds.size()));
  f.write(ds.data(), static_cast<std::streamsize>(ds.size()));
}

// llama-quantize's normalisation of what common_imatrix_load returns (tools/quantize).
std::map<std::string, std::vector<float>> llama_normalised(const common_imatrix& ci) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, e] : ci.entries) {
    std::vector<float>& v = out[name];
    v.resize(e.sums.size());
    if (!ci.is_legacy) {
      const int64_t nc = static_cast<int64_t>(e.counts.size());
      const int64_t ne0 = static_cast<int64_t>(e.sums.size()) / nc;
      for (int64_t j = 0; j < nc; ++j) {
        const float c = static_cast<float>(e.counts[static_cast<size_t>(j)]);
        for (int64_t i = 0; i < ne0; ++i)
          v[static_cast<size_t>(j * ne0 + i)] =
              c > 0.0f ? e.sums[static_cast<size_t>(j * ne0 + i)] / c : 1.0f;
      }
    } else {
      const int64_t ncall = e.counts.empty() ? 0 : e.counts[0];
      for (size_t i = 0; i < e.sums.size(); ++i) v[i] = ncall > 0 ? e.sums[i] / ncall : e.sums[i];
    }
  }
  return out;
}

// The imatrix arguments llama-quantize would give llama_model_quantize for `path`.
void add_llama_imatrix(LlamaArgs& a, const std::string& path, const std::vector<std::string>& include = {}) {
  Llama& l = llama();
  REQUIRE(l.imatrix_load);
  common_imatrix ci;
  REQUIRE(l.imatrix_load(path, ci));
  a.imatrix = llama_normalised(ci);
  if (!include.empty()) {
    std::map<std::string, std::vector<float>> kept;
    for (const auto& x : include)
      for (auto& [n, v] : a.imatrix)
        if (n.find(x) != std::string::npos) kept.emplace(n, v);
    a.imatrix = kept;
  }
  a.kv.push_back(kv_str("quantize.imatrix.file", path));
  if (!ci.datasets.empty()) a.kv.push_back(kv_str("quantize.imatrix.dataset", ci.datasets[0]));
  a.kv.push_back(kv_int("quantize.imatrix.entries_count", static_cast<int64_t>(a.imatrix.size())));
  if (ci.chunk_count > 0) a.kv.push_back(kv_int("quantize.imatrix.chunks_count", ci.chunk_count));
}

int ggml_id(ElemType t) { return traits(t).ggml_id; }

}  // namespace

// ------------------------------------------------------------------ tests
TEST_CASE("quantize-gguf: the llama.h struct layout matches libllama", "[quantize-gguf][llamalib]") {
  Llama& l = llama();
  llama_model_quantize_params p = l.default_params();
  CHECK(p.nthread == 0);
  CHECK(p.ftype == 7);
  CHECK(p.output_tensor_type == kGgmlTypeCount);
  CHECK(p.token_embedding_type == kGgmlTypeCount);
  CHECK_FALSE(p.allow_requantize);
  CHECK(p.quantize_output_tensor);
  CHECK_FALSE(p.only_copy);
  CHECK_FALSE(p.pure);
  CHECK(p.imatrix == nullptr);
  CHECK(p.tt_overrides == nullptr);
  CHECK(p.prune_layers == nullptr);
  CHECK(p.max_buf_size == 8ull * 1024 * 1024 * 1024);
}

TEST_CASE("quantize-gguf: every file type equals llama.cpp byte for byte", "[quantize-gguf][llamalib]") {
  llama();
  TempDir dir;
  int compared = 0, fallbacks_seen = 0;
  for (const Shape& s : shapes()) {
    const std::string in = dir / (std::string(s.what) + ".gguf");
    write_gguf(make_model(s), in);
    for (const FT& ft : kFileTypesToCheck) {
      INFO(s.what << " " << ft.name);
      const std::string ref = dir / "ref.gguf", out = dir / "out.gguf";
      LlamaArgs a;
      a.ftype = ft.ftype;
      INFO("llama.cpp log: " << g_llama_log);
      REQUIRE(llama_quantize(in, ref, a));
      QuantizeSummary sum = qforge_quantize(in, out, qopts(ft.name));
      fallbacks_seen += sum.fallbacks;
      CHECK(gguf_diff(ref, out) == "");
      ++compared;
    }
  }
  CHECK(compared == 6 * 18);
  CHECK(fallbacks_seen > 0);  // the shapes do exercise fallbacks
}

TEST_CASE("quantize-gguf: aliases and tensor-type names pick llama-quantize's file types",
          "[quantize-gguf]") {
  CHECK(parse_file_type("q4_k").ftype == FileType::Q4_K_M);
  CHECK(parse_file_type("Q3_K").ftype == FileType::Q3_K_M);
  CHECK(parse_file_type("q5_K").ftype == FileType::Q5_K_M);
  CHECK(parse_file_type("q8_0").ftype == FileType::Q8_0);
  CHECK(parse_file_type("iq4_xs").ftype == FileType::IQ4_XS);
  CHECK(parse_file_type("f32").ftype == FileType::ALL_F32);
  CHECK_THROWS_WITH(parse_file_type("IQ2_XXS"), Catch::Contains("not supported"));
  CHECK_THROWS_WITH(parse_file_type("Q4_K_X"),
                    Catch::Contains("expected one of") && Catch::Contains("Q4_K_M"));
}

TEST_CASE("quantize-gguf: the plan follows llama.cpp's rules", "[quantize-gguf]") {
  Shape s{"gqa4-8L", tl(8, 256, 352, 4, 1, 11)};
  Model m = make_model(s);
  QuantizeSummary sum = quantize_model(m, qopts("Q4_K_M"), 1);
  std::map<std::string, Decision> d;
  for (const auto& x : sum.plan) d[x.name] = x;
  // tensors are in llama.cpp's order: non-block tensors first, then by block, then name
  CHECK(sum.plan.front().name == "output.weight");
  CHECK(sum.plan.back().name == "blk.7.ffn_up.weight");
  CHECK(d["output.weight"].to == ElemType::Q6_K);
  CHECK(d["token_embd.weight"].to == ElemType::Q4_K);
  CHECK(d["blk.0.attn_norm.weight"].to == ElemType::F32);
  CHECK(d["blk.0.attn_v.weight"].to == ElemType::Q6_K);  // use_more_bits(0, 8)
  CHECK(d["blk.1.attn_v.weight"].to == ElemType::Q4_K);
  CHECK(d["blk.3.attn_v.weight"].to == ElemType::Q6_K);  // (3 - 1) % 3 == 2
  CHECK(d["blk.7.attn_v.weight"].to == ElemType::Q6_K);
  // ffn_down rows of 352: Q6_K falls back to Q8_0, Q4_K to Q5_0
  CHECK(d["blk.0.ffn_down.weight"].to == ElemType::Q8_0);
  CHECK(d["blk.1.ffn_down.weight"].to == ElemType::Q5_0);
  CHECK_THAT(d["blk.1.ffn_down.weight"].fallback, Catch::Contains("352") && Catch::Contains("q5_0"));
  CHECK(sum.fallbacks == 8);
  CHECK(sum.notes.size() == 8);
  CHECK(d["blk.0.attn_v.weight"].role == Role::AttnV);
  CHECK(d["blk.0.ffn_gate.weight"].role == Role::FfnGate);
  CHECK(m.meta("general.file_type")->u == 15);
  CHECK(m.meta("general.quantization_version")->u == 2);
  // the last two keys, in llama.cpp's order
  CHECK(m.metadata[m.metadata.size() - 2].first == "general.quantization_version");
  CHECK(m.metadata.back().first == "general.file_type");

  Model m2 = make_model(s);
  QuantizeOptions o = qopts("Q4_K_M");
  o.no_fallback = true;
  CHECK_THROWS_WITH(quantize_model(m2, o, 1),
                    Catch::Contains("no_fallback") && Catch::Contains("blk.0.ffn_down.weight"));
  CHECK(m2.tensors[0].type == ElemType::F32);  // untouched
}

TEST_CASE("quantize-gguf: takes a model of any format without a graph", "[quantize-gguf]") {
  Model m = make_tiny_llama(TinyLlamaOptions{});
  m.format = "safetensors";  // e.g. imported by plugins/safetensors
  QuantizeSummary sum = quantize_model(m, qopts("Q8_0"), 1);
  CHECK(sum.quantized_tensors == 16);
  Model g = make_tiny_llama(TinyLlamaOptions{});
  g.format = "onnx";
  g.source = "m.onnx";
  g.graph = std::make_shared<Graph>();
  CHECK_THROWS_WITH(quantize_model(g, qopts("Q8_0"), 1),
                    Catch::Contains("needs a model without a graph") &&
                        Catch::Contains("onnx model with a graph (m.onnx)"));
}

TEST_CASE("quantize-gguf: llama-quantize options equal llama.cpp", "[quantize-gguf][llamalib]") {
  llama();
  TempDir dir;
  Shape s{"gqa4-8L", tl(8, 256, 352, 4, 1, 21)};
  const std::string in = dir / "in.gguf";
  write_gguf(make_model(s), in);
  const std::string ref = dir / "ref.gguf", out = dir / "out.gguf";

  SECTION("tensor_types overrides, output and token embedding types") {
    LlamaArgs a;
    a.ftype = 15;
    a.tensor_types = {{"attn_v", ggml_id(ElemType::Q8_0)},
                      {"ffn_(up|gate)", ggml_id(ElemType::Q5_K)},
                      {"blk\\.1\\.", ggml_id(ElemType::IQ4_NL)}};
    a.output_tensor_type = ggml_id(ElemType::Q5_K);
    a.token_embedding_type = ggml_id(ElemType::Q8_0);
    REQUIRE(llama_quantize(in, ref, a));
    QuantizeOptions o = qopts("Q4_K_M");
    o.tensor_types = {{"ATTN_V", "q8_0"}, {"ffn_(up|gate)", "Q5_K"}, {"blk\\.1\\.", "iq4_nl"}};
    o.output_tensor_type = "q5_K";
    o.token_embedding_type = "Q8_0";
    qforge_quantize(in, out, o);
    CHECK(gguf_diff(ref, out) == "");
  }
  SECTION("leave_output_tensor and pure") {
    LlamaArgs a;
    a.ftype = 12;
    a.leave_output = true;
    a.pure = true;
    REQUIRE(llama_quantize(in, ref, a));
    QuantizeOptions o = qopts("Q3_K_M");
    o.leave_output_tensor = true;
    o.pure = true;
    qforge_quantize(in, out, o);
    CHECK(gguf_diff(ref, out) == "");
    CHECK(read_gguf(out).tensor("output.weight")->type == ElemType::F32);
  }
  SECTION("override_kv") {
    LlamaArgs a;
    a.ftype = 18;
    llama_model_kv_override f;
    std::memset(&f, 0, sizeof f);
    f.tag = KV_FLOAT;
    std::snprintf(f.key, sizeof f.key, "qforge.test.f");
    f.val_f64 = 0.25;
    llama_model_kv_override b = f;
    b.tag = KV_BOOL;
    std::snprintf(b.key, sizeof b.key, "qforge.test.b");
    b.val_bool = true;
    a.kv = {kv_int("llama.context_length", -4096), f, b, kv_str("general.name", "renamed")};
    REQUIRE(llama_quantize(in, ref, a));
    QuantizeOptions o = qopts("Q6_K");
    o.override_kv = {"llama.context_length=int:-4096", "qforge.test.f=float:0.25", "qforge.test.b=bool:true",
                     "general.name=str:renamed"};
    qforge_quantize(in, out, o);
    CHECK(gguf_diff(ref, out) == "");
    Model r = read_gguf(out);
    CHECK(r.meta("llama.context_length")->u == 4096);
    CHECK(r.meta("general.name")->s == "renamed");
  }
  SECTION("bad option values are errors") {
    QuantizeOptions o = qopts("Q4_K_M");
    o.override_kv = {"k=double:1"};
    Model m = read_gguf(in);
    CHECK_THROWS_WITH(quantize_model(m, o, 1), Catch::Contains("int, float, bool or str"));
    o = qopts("Q4_K_M");
    o.tensor_types = {{"attn_v", "q9_9"}};
    CHECK_THROWS_WITH(quantize_model(m, o, 1), Catch::Contains("unknown ggml tensor type 'q9_9'"));
    o.tensor_types = {{"attn_v", "iq2_xxs"}};
    CHECK_THROWS_WITH(quantize_model(m, o, 1), Catch::Contains("cannot quantize to iq2_xxs"));
    o.tensor_types = {{"attn_v(", "q8_0"}};
    CHECK_THROWS_WITH(quantize_model(m, o, 1), Catch::Contains("not a valid regular expression"));
    o = qopts("Q4_K_M");
    o.output_tensor_type = "q4_K";  // output rows of 256 are fine; token_embd rows too
    o.token_embedding_type = "q4_K";
    CHECK_NOTHROW(quantize_model(m, o, 1));
  }
}

TEST_CASE("quantize-gguf: importance matrices equal llama.cpp's use of them", "[quantize-gguf][llamalib]") {
  llama();
  TempDir dir;
  const std::string ref = dir / "ref.gguf", out = dir / "out.gguf";
  int compared = 0;
  for (const Shape& s :
       {Shape{"gqa4-8L", tl(8, 256, 352, 4, 1, 31)}, Shape{"moe8-2L", tl(2, 256, 256, 4, 2, 32), false, 8}}) {
    const std::string in = dir / "in.gguf";
    Model model = make_model(s);
    write_gguf(model, in);
    const RawImatrix raw = make_raw_imatrix(model, 77);
    const std::string gg = dir / "imatrix.gguf", dat = dir / "imatrix.dat";
    write_gguf_imatrix(raw, gg);
    write_dat_imatrix(raw, dat, 10);
    for (const char* path : {gg.c_str(), dat.c_str()}) {
      for (const FT& ft :
           {FT{"Q4_K_M", 15}, FT{"Q4_0", 2}, FT{"Q5_0", 8}, FT{"IQ4_XS", 30}, FT{"IQ4_NL", 25},
            FT{"Q2_K", 10}, FT{"Q3_K_S", 11}, FT{"Q5_K_S", 16}, FT{"Q6_K", 18}, FT{"Q4_1", 3}}) {
        INFO(s.what << " " << ft.name << " " << path);
        LlamaArgs a;
        a.ftype = ft.ftype;
        add_llama_imatrix(a, path);
        INFO("llama.cpp log: " << g_llama_log);
        REQUIRE(llama_quantize(in, ref, a));
        QuantizeOptions o = qopts(ft.name);
        o.imatrix = path;
        qforge_quantize(in, out, o);
        CHECK(gguf_diff(ref, out) == "");
        ++compared;
      }
    }
    // include_weights: only the attention weights get the imatrix
    LlamaArgs a;
    a.ftype = 15;
    add_llama_imatrix(a, gg, {"attn_"});
    REQUIRE(llama_quantize(in, ref, a));
    QuantizeOptions o = qopts("Q4_K_M");
    o.imatrix = gg;
    o.include_weights = {"attn_"};
    qforge_quantize(in, out, o);
    CHECK(gguf_diff(ref, out) == "");
    // Q2_K_S needs an imatrix for its Q2_K tensors
    a = LlamaArgs{};
    a.ftype = 21;
    add_llama_imatrix(a, gg);
    REQUIRE(llama_quantize(in, ref, a));
    o = qopts("Q2_K_S");
    o.imatrix = gg;
    qforge_quantize(in, out, o);
    CHECK(gguf_diff(ref, out) == "");
  }
  CHECK(compared == 2 * 2 * 10);
}

TEST_CASE("quantize-gguf: bad importance matrices are errors naming the tensor", "[quantize-gguf]") {
  TempDir dir;
  Shape s{"gqa4-8L", tl(8, 256, 352, 4, 1, 41)};
  Model model = make_model(s);
  const std::string in = dir / "in.gguf";
  write_gguf(model, in);
  RawImatrix raw = make_raw_imatrix(model, 5);
  auto attempt = [&](const RawImatrix& r, const std::string& type) -> std::string {
    const std::string p = dir / "bad.gguf";
    write_gguf_imatrix(r, p);
    QuantizeOptions o = qopts(type);
    o.imatrix = p;
    Model m = read_gguf(in);
    try {
      quantize_model(m, o, 1);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  RawImatrix nan = raw;
  nan.e["blk.2.attn_q.weight"].first[5] = std::nanf("");
  CHECK_THAT(attempt(nan, "Q4_K_M"), Catch::Contains("blk.2.attn_q.weight") && Catch::Contains("not finite"));
  RawImatrix len = raw;
  len.e["blk.3.ffn_up.weight"].first.resize(128);
  CHECK_THAT(attempt(len, "Q4_K_M"),
             Catch::Contains("blk.3.ffn_up.weight") && Catch::Contains("expected 256"));
  RawImatrix missing = raw;
  missing.e.erase("blk.4.attn_q.weight");
  CHECK_THAT(attempt(missing, "Q2_K_S"),
             Catch::Contains("blk.4.attn_q.weight") && Catch::Contains("needs an importance matrix"));
  CHECK(attempt(missing, "Q4_K_M") == "");  // Q4_K does not need one
  {
    QuantizeOptions o = qopts("Q2_K_S");
    Model m = read_gguf(in);
    CHECK_THROWS_WITH(quantize_model(m, o, 1),
                      Catch::Contains("needs an importance matrix") && Catch::Contains("set imatrix"));
  }
  // truncated legacy file
  {
    const std::string p = dir / "trunc.dat";
    write_dat_imatrix(raw, p, 3);
    std::vector<uint8_t> b = slurp(p);
    b.resize(b.size() / 2);
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    CHECK_THROWS_WITH(load_imatrix(p), Catch::Contains("trunc.dat: byte") && Catch::Contains("expected"));
  }
  // GGUF without llama-imatrix's metadata
  {
    Model m;
    m.format = "gguf";
    m.tensors.push_back(f32_tensor("x.in_sum2", {1, 32}, 1, 1.0f));
    m.tensors.push_back(f32_tensor("x.counts", {1, 1}, 1, 1.0f));
    const std::string p = dir / "nometa.gguf";
    write_gguf(m, p);
    CHECK_THROWS_WITH(load_imatrix(p), Catch::Contains("missing imatrix metadata"));
  }
}

TEST_CASE("quantize-gguf: F16, BF16 and quantized inputs equal llama.cpp", "[quantize-gguf][llamalib]") {
  llama();
  TempDir dir;
  Shape s{"mha-3L", tl(3, 512, 768, 8, 4, 51)};
  const std::string f32 = dir / "f32.gguf";
  write_gguf(make_model(s), f32);
  const std::string ref = dir / "ref.gguf", out = dir / "out.gguf";
  for (const FT& src : {FT{"F16", 1}, FT{"BF16", 32}, FT{"Q8_0", 7}}) {
    const std::string in = dir / (std::string(src.name) + ".gguf");
    LlamaArgs a0;
    a0.ftype = src.ftype;
    REQUIRE(llama_quantize(f32, in, a0));
    const bool quantized = std::string(src.name) == "Q8_0";
    for (const FT& ft : {FT{"Q4_K_M", 15}, FT{"Q8_0", 7}, FT{"Q5_1", 9}, FT{"F16", 1}}) {
      INFO(src.name << " -> " << ft.name);
      LlamaArgs a;
      a.ftype = ft.ftype;
      a.allow_requantize = quantized;
      REQUIRE(llama_quantize(in, ref, a));
      QuantizeOptions o = qopts(ft.name);
      o.allow_requantize = quantized;
      qforge_quantize(in, out, o);
      CHECK(gguf_diff(ref, out) == "");
    }
    if (quantized) {
      Model m = read_gguf(in);
      CHECK_THROWS_WITH(quantize_model(m, qopts("Q4_K_M"), 1),
                        Catch::Contains("already q8_0") && Catch::Contains("allow_requantize"));
    }
  }
}

TEST_CASE("quantize-gguf: output does not depend on the thread count", "[quantize-gguf]") {
  TempDir dir;
  Shape s{"moe8-2L", tl(2, 256, 256, 4, 2, 61), false, 8};
  const std::string in = dir / "in.gguf";
  write_gguf(make_model(s), in);
  qforge_quantize(in, dir / "t1.gguf", qopts("Q4_K_M"), 1);
  qforge_quantize(in, dir / "t3.gguf", qopts("Q4_K_M"), 3);
  qforge_quantize(in, dir / "t8.gguf", qopts("Q4_K_M"), 8);
  CHECK(slurp(dir / "t1.gguf") == slurp(dir / "t3.gguf"));
  CHECK(slurp(dir / "t1.gguf") == slurp(dir / "t8.gguf"));
}

TEST_CASE("quantize-gguf: the pass runs through qforge quantize", "[quantize-gguf][cli]") {
  const char* bin = std::getenv("QFORGE_BIN");
  if (!bin || !*bin) FAIL("QFORGE_BIN is not set (the qforge binary; ctest sets it)");
  TempDir dir;
  write_gguf(make_model(Shape{"gqa4-8L", tl(8, 256, 352, 4, 1, 71)}), dir / "in.gguf");
  const std::string cmd = std::string(bin) + " quantize " + (dir / "in.gguf") + " " + (dir / "out.gguf") +
                          " --type Q4_K_M --tensor-type attn_v=q8_0 --threads 2 >" + (dir / "log.txt") +
                          " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::vector<uint8_t> log = slurp(dir / "log.txt");
  INFO(std::string(log.begin(), log.end()));
  REQUIRE(rc == 0);
  QuantizeOptions o = qopts("Q4_K_M");
  o.tensor_types = {{"attn_v", "q8_0"}};
  qforge_quantize(dir / "in.gguf", dir / "lib.gguf", o);
  CHECK(slurp(dir / "out.gguf") == slurp(dir / "lib.gguf"));
  const std::string bad = std::string(bin) + " quantize " + (dir / "in.gguf") + " " + (dir / "bad.gguf") +
                          " --type Q4_K_M --no-fallback >" + (dir / "log2.txt") + " 2>&1";
  CHECK(std::system(bad.c_str()) != 0);
  CHECK_FALSE(fs::exists(dir / "bad.gguf"));
  std::vector<uint8_t> log2 = slurp(dir / "log2.txt");
  CHECK_THAT(std::string(log2.begin(), log2.end()), Catch::Contains("blk.0.ffn_down.weight"));
}

namespace {
using qforge::test::run_capture;
using qforge::test::shell_quote;
}  // namespace

TEST_CASE("quantize-gguf: llama.cpp gives qforge's Q4_K_M and Q8_0 the same next-token probabilities",
          "[quantize-gguf][llama]") {
  llama();
  const char* npm = std::getenv("QFORGE_NPM_DIR");
  if (!npm || !*npm)
    FAIL("QFORGE_NPM_DIR is not set: it must name the directory where node-llama-cpp is installed");
  const std::string script = std::string(QFORGE_SOURCE_DIR) + "/tests/tools/llama_probs.mjs";
  REQUIRE(fs::exists(script));
  TempDir dir;
  const std::string in = dir / "in.gguf";
  write_gguf(make_model(Shape{"mha-3L", tl(3, 256, 512, 4, 2, 81)}), in);
  for (const FT& ft : {FT{"Q4_K_M", 15}, FT{"Q8_0", 7}}) {
    fs::create_directories(dir.path / ft.name / "llama");
    fs::create_directories(dir.path / ft.name / "qforge");
    // same file name so that the scripts' whole outputs compare
    const std::string ref = (dir.path / ft.name / "llama" / "m.gguf").string();
    const std::string out = (dir.path / ft.name / "qforge" / "m.gguf").string();
    LlamaArgs a;
    a.ftype = ft.ftype;
    REQUIRE(llama_quantize(in, ref, a));
    qforge_quantize(in, out, qopts(ft.name));
    const std::string cmd = "QFORGE_NPM_DIR=" + shell_quote(npm) + " node " + shell_quote(script) + " ";
    int s1 = 0, s2 = 0, s3 = 0;
    const std::string o1 = run_capture(cmd + shell_quote(ref) + " 2>&1", s1);
    const std::string o2 = run_capture(cmd + shell_quote(out) + " 2>&1", s2);
    const std::string o3 = run_capture(cmd + shell_quote(in) + " 2>&1", s3);
    INFO(ft.name << ": " << o2.substr(0, 600));
    REQUIRE(s1 == 0);
    REQUIRE(s2 == 0);
    REQUIRE(s3 == 0);
    CHECK_THAT(o2, Catch::Contains("\"probabilities\":["));
    CHECK(o1 == o2);
    // the quantization is visible to the probe (it differs from the F32 model)
    auto logits = [](const std::string& s) { return s.substr(s.find("\"logits\"")); };
    CHECK(logits(o3) != logits(o2));
  }
}

namespace {
// Peak RSS (KiB) of `qforge quantize IN OUT --type TYPE --threads 2`, run as a child process.
long quantize_peak_rss_kb(const std::string& bin, const std::string& in, const std::string& out,
                          const std::string& type) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execl(bin.c_str(), bin.c_str(), "quantize", in.c_str(), out.c_str(), "--type", type.c_str(),
            "--threads", "2", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid < 0) return -1;
  int status = 0;
  struct rusage ru {};
  if (::wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return ru.ru_maxrss;
}
}  // namespace

TEST_CASE("quantize-gguf: peak memory does not grow with the number of layers",
          "[quantize-gguf][cli][memory]") {
  const char* bin = std::getenv("QFORGE_BIN");
  if (!bin || !*bin) FAIL("QFORGE_BIN is not set (the qforge binary; ctest sets it)");
  TempDir dir;
  // ~9 MB of F32 weights per layer; the embeddings (vocab 2048 x 512) are 4 MB each.
  const std::string small = dir / "l3.gguf", large = dir / "l24.gguf";
  write_gguf(make_tiny_llama(tl(3, 512, 1024, 8, 2, 91, 2048)), small);
  write_gguf(make_tiny_llama(tl(24, 512, 1024, 8, 2, 91, 2048)), large);
  const auto large_mb = static_cast<long>(fs::file_size(large) >> 20);
  for (const char* type : {"Q4_K_M", "Q8_0"}) {
    const long a = quantize_peak_rss_kb(bin, small, dir / "o3.gguf", type);
    const long b = quantize_peak_rss_kb(bin, large, dir / "o24.gguf", type);
    INFO(type << ": peak RSS 3 layers " << a / 1024 << " MB, 24 layers " << b / 1024 << " MB (input "
              << large_mb << " MB)");
    REQUIRE(a > 0);
    REQUIRE(b > 0);
    CHECK(b < a + 12 * 1024);        // 21 more layers (~190 MB of weights) cost < 12 MB
    CHECK(b / 1024 < large_mb / 3);  // far below the model's size
  }
}

TEST_CASE("quantize-gguf: pass options in manifest and command-line forms", "[quantize-gguf]") {
  Options o;
  o["type"] = Value::of_string("q4_k_m");
  Value tt;  // "REGEX=TYPE" rules in order, as a manifest list and --tensor-type give them
  tt.kind = Value::Kind::List;
  tt.list = {Value::of_string("attn_v=q8_0"), Value::of_string("ffn_down=q5_K"),
             Value::of_string("blk\\.(0|1)\\.=f16")};  // split at the first '='
  o["tensor_types"] = tt;
  Value inc;
  inc.kind = Value::Kind::List;
  inc.list = {Value::of_string("attn")};
  o["include_weights"] = inc;
  o["pure"] = Value::of_bool(true);
  QuantizeOptions q = options_from(o);
  CHECK(q.type == "q4_k_m");
  REQUIRE(q.tensor_types.size() == 3);
  CHECK(q.tensor_types[0] == std::make_pair(std::string("attn_v"), std::string("q8_0")));
  CHECK(q.tensor_types[1] == std::make_pair(std::string("ffn_down"), std::string("q5_K")));
  CHECK(q.tensor_types[2] == std::make_pair(std::string("blk\\.(0|1)\\."), std::string("f16")));
  CHECK(q.include_weights == std::vector<std::string>{"attn"});
  CHECK(q.pure);
  CHECK_FALSE(q.no_fallback);
  Options missing;
  CHECK_THROWS_WITH(options_from(missing), Catch::Contains("'type' is required"));
  o["pure"] = Value::of_string("yes");
  CHECK_THROWS_WITH(options_from(o), Catch::Contains("pure") && Catch::Contains("true or false"));
}

// Issue 3: real llama.cpp-written GGUF files (quantized by libllama, every
// file type) import and re-emit byte for byte.
TEST_CASE("gguf: files written by llama.cpp re-emit byte for byte", "[gguf][llamalib]") {
  llama();
  TempDir dir;
  int checked = 0;
  auto all = shapes();
  for (size_t si = 0; si < 2 && si < all.size(); ++si) {
    const Shape& s = all[si];
    const std::string in = dir / (std::string(s.what) + ".gguf");
    write_gguf(make_model(s), in);
    for (const FT& ft : kFileTypesToCheck) {
      INFO(s.what << " " << ft.name);
      const std::string ref = dir / "llama.gguf", rt = dir / "roundtrip.gguf";
      LlamaArgs a;
      a.ftype = ft.ftype;
      REQUIRE(llama_quantize(in, ref, a));
      write_gguf(read_gguf(ref), rt);
      CHECK(slurp(ref) == slurp(rt));
      ++checked;
    }
  }
  CHECK(checked == 2 * 18);
}
