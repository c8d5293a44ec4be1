// Helpers shared by the ONNX tests (quantize-weights, quantize-dynamic, the
// ONNX format plugin): models built in the IR, running a pass, a scratch
// directory, and comparing two models in ONNX Runtime through
// tests/tools/ort_compare.py ($QFORGE_PYTHON: a Python with onnxruntime and
// numpy). Header-only; everything is inline.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "onnx_builder.h"
#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "qforge/progress.h"
#include "test_util.h"

namespace qforge::testutil {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- models

// The tests' weight generator: the tiny models' xorshift64, seeded its own way.
class Rng : public onnxfmt::XorShiftRng {
 public:
  explicit Rng(uint64_t seed) : XorShiftRng(seed * 0x9E3779B97F4A7C15ull + 1) {}
};

// An f32 tensor of uniform values in offset +- scale.
inline Tensor rand_tensor(const std::string& name, std::vector<int64_t> shape, Rng& rng, float scale,
                          float offset = 0) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.uniform() * scale + offset;
  return quant::make_f32_tensor(name, std::move(shape), v);
}

using qforge::make_node;

// An ONNX model `name` (source "<name>.onnx") with an empty graph.
inline Model onnx_model(const std::string& name, int64_t opset, int64_t ir_version) {
  Model m;
  m.format = "onnx";
  m.source = name + ".onnx";
  m.graph = std::make_shared<Graph>();
  m.graph->name = name;
  m.graph->model.ir_version = ir_version;
  m.graph->model.opset_imports.push_back({"", opset});
  return m;
}

// An f32 value of shape [batch, dim].
inline ValueInfo io(const std::string& name, int64_t dim) {
  ValueInfo v;
  v.name = name;
  std::vector<Dim> d(2);
  d[0].param = "batch";
  d[1].value = dim;
  v.type = ValueType::tensor(ElemType::F32, d);
  return v;
}

inline void add_io(Graph& g, const std::string& in, int64_t in_dim, const std::string& out, int64_t out_dim) {
  g.inputs.push_back(io(in, in_dim));
  g.outputs.push_back(io(out, out_dim));
}

// Adds x[batch, dims[0]] -> (MatMul -> Add -> Relu)* -> y[batch, dims.back()]
// to a model with an empty graph. Weights are uniform in
// (weight_offset +- 1) * 2 / sqrt(fan_in), biases in +-0.1.
inline void add_mlp(Model& m, const std::vector<int64_t>& dims, uint64_t seed, float weight_offset) {
  Graph& g = *m.graph;
  Rng rng(seed);
  add_io(g, "x", dims.front(), "y", dims.back());
  std::string h = "x";
  const size_t layers = dims.size() - 1;
  for (size_t i = 0; i < layers; ++i) {
    const std::string p = "fc" + std::to_string(i + 1);
    const float s = 2.0f / std::sqrt(static_cast<float>(dims[i]));
    m.tensors.push_back(rand_tensor(p + ".weight", {dims[i], dims[i + 1]}, rng, s, weight_offset * s));
    m.tensors.push_back(rand_tensor(p + ".bias", {dims[i + 1]}, rng, 0.1f));
    g.nodes.push_back(make_node(p, "MatMul", {h, p + ".weight"}, {p + "_mm"}));
    const bool last = i + 1 == layers;
    g.nodes.push_back(make_node(p + "_add", "Add", {p + "_mm", p + ".bias"}, {last ? "y" : p + "_add_out"}));
    if (!last) g.nodes.push_back(make_node(p + "_relu", "Relu", {p + "_add_out"}, {p + "_out"}));
    h = p + "_out";
  }
}

// Adds a transformer-style projection x[batch, seq, k] -> MatMul(wq[k, n]) ->
// y[batch, seq, n], weights uniform in +-0.25, to a model with an empty graph.
inline void add_projection(Model& m, int64_t seq, int64_t k, int64_t n, uint64_t seed) {
  Graph& g = *m.graph;
  std::vector<Dim> d(3);
  d[0].param = "batch";
  d[1].value = seq;
  d[2].value = k;
  g.inputs.push_back(ValueInfo{"x", ValueType::tensor(ElemType::F32, d), "", ""});
  d[2].value = n;
  g.outputs.push_back(ValueInfo{"y", ValueType::tensor(ElemType::F32, d), "", ""});
  Rng rng(seed);
  m.tensors.push_back(rand_tensor("wq", {k, n}, rng, 0.25f));
  g.nodes.push_back(make_node("proj", "MatMul", {"x", "wq"}, {"y"}));
}

// ---------------------------------------------------------------- running

inline Value list_of(std::vector<std::string> items) { return quant::string_list(items); }

// Runs the pass `info` with `opts` completed by the schema's defaults.
inline PassResult run_pass(const PassInfo& info, Model& model, Options opts) {
  for (const OptionSpec& s : info.options)
    if (!opts.count(s.name) && !s.default_value.is_null()) opts[s.name] = s.default_value;
  NullProgress progress;
  PassContext ctx{opts, nullptr, "test", "", 1, progress, {}, nullptr, {}, nullptr};
  std::unique_ptr<Pass> pass = info.factory();
  return pass->run(model, ctx);
}

// A directory <tmp>/<prefix><pid>, removed with the object unless
// QFORGE_KEEP_TEST_FILES is set.
struct Scratch {
  fs::path dir;
  explicit Scratch(const std::string& prefix) {
    dir = fs::temp_directory_path() / (prefix + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~Scratch() {
    if (!std::getenv("QFORGE_KEEP_TEST_FILES")) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
};

inline fs::path source_dir() {
  if (const char* s = std::getenv("QFORGE_SOURCE_DIR")) return s;
#ifdef QFORGE_SOURCE_DIR
  return QFORGE_SOURCE_DIR;
#else
  return fs::path(__FILE__).parent_path().parent_path();
#endif
}

// $QFORGE_PYTHON; fails the test when it is unset or names a missing file.
// `tag` is the test tag the message suggests running by hand.
inline std::string ort_python(const std::string& tag) {
  const char* p = std::getenv("QFORGE_PYTHON");
  if (!p || !*p)
    FAIL(
        "QFORGE_PYTHON is not set: it must name a Python with onnxruntime and numpy "
        "(ctest sets it; by hand: QFORGE_PYTHON=python3 ./qforge_tests \""
        << tag << "\")");
  if (std::string(p).find('/') != std::string::npos && !fs::exists(p))
    FAIL("QFORGE_PYTHON names '" << p
                                 << "', which does not exist: run `make test` (it creates the venv) "
                                    "or set QFORGE_PYTHON to a Python with onnxruntime and numpy");
  return p;
}

// Runs tests/tools/TOOL with `python` and ARGS; fails the test (showing the
// command and its output) on a non-zero exit; returns the output.
inline std::string py(const std::string& python, const std::string& tool, const std::string& args) {
  int status = 0;
  const std::string cmd = test::shell_quote(python) + " " +
                          test::shell_quote((source_dir() / "tests/tools" / tool).string()) + " " + args +
                          " 2>&1";
  const std::string out = test::run_capture(cmd, status);
  INFO(cmd << "\n" << out);
  REQUIRE(status == 0);
  return out;
}

inline std::string q(const fs::path& p) { return test::shell_quote(p.string()); }

struct Comparison {
  int rc = -1;
  std::string output;
  double cosine = 0, max_abs = 0;
  double argmax_agreement = 0;  // fraction of rows whose argmax along the last axis agrees
  int64_t argmax_rows = 0;
};

// Runs tests/tools/ort_compare.py on the float reference and a candidate;
// `extra` is appended to its command line (already quoted for the shell:
// "--glyphs --shape x=4,3,48,320").
inline Comparison ort_compare_with(const std::string& python, const fs::path& ref, const fs::path& cand,
                                   const std::string& extra = "") {
  const std::string cmd = "'" + python + "' '" + (source_dir() / "tests/tools/ort_compare.py").string() +
                          "' '" + ref.string() + "' '" + cand.string() + "' " + extra + " 2>&1";
  Comparison c;
  FILE* f = ::popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) c.output.append(buf, n);
  int st = ::pclose(f);
  c.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (c.rc == 0) {
    auto j = nlohmann::json::parse(c.output.substr(c.output.rfind('{')));
    c.cosine = j.at("cosine").get<double>();
    c.max_abs = j.at("max_abs").get<double>();
    c.argmax_agreement = j.at("argmax_agreement").get<double>();
    c.argmax_rows = j.at("argmax_rows").get<int64_t>();
  }
  return c;
}

// Runs the pass `info` on a copy of `m` and checks that it fails, reports no
// change, says `what`, and left the copy's fc1.weight in place.
inline void check_fails(const PassInfo& info, const Model& m, Options opts, const std::string& what) {
  Model copy = m;
  PassResult r = run_pass(info, copy, std::move(opts));
  CHECK_FALSE(r.status.ok);
  CHECK_FALSE(r.changed);
  CHECK_THAT(r.status.message, Catch::Matchers::Contains(what));
  CHECK(copy.tensor("fc1.weight") != nullptr);  // untouched
}

// Runs the pass `info` on a model without a graph (a GGUF file named
// `source`) and checks that it fails, naming the file.
inline void check_fails_without_graph(const PassInfo& info, const std::string& source) {
  Model gguf;
  gguf.format = "gguf";
  gguf.source = source;
  PassResult r = run_pass(info, gguf, {});
  CHECK_FALSE(r.status.ok);
  CHECK_THAT(r.status.message, Catch::Matchers::Contains(source) && Catch::Matchers::Contains("no graph"));
}

// Checks in ONNX Runtime that the candidate's outputs agree with the float
// reference's with at least `min_cosine` cosine similarity.
inline void check_ort_close(const std::string& python, const fs::path& ref, const fs::path& cand,
                            double min_cosine) {
  Comparison c = ort_compare_with(python, ref, cand);
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= min_cosine);
}

// The directory `make models` fetches the real models into
// ($QFORGE_MODELS_DIR, set by the test runner to <build>/models).
inline fs::path models_dir() {
  const char* d = std::getenv("QFORGE_MODELS_DIR");
  return d && *d ? fs::path(d) : fs::path("models");
}

// Writes `m` to `path` with the ONNX plugin; returns `path`.
inline fs::path emit_to(const fs::path& path, const Model& m) {
  onnxfmt::emit_onnx(m, path.string(), {});
  return path;
}

// ---------------------------------------------------------------- inspecting

inline std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The first node with `op`, or nullptr.
inline const Node* find_op(const Graph& g, const std::string& op) {
  for (const Node& n : g.nodes)
    if (n.op_type == op) return &n;
  return nullptr;
}

// The skip record whose `what` contains `node` (e.g. "node 'fc2'"), or nullptr.
inline const Skipped* skip_of(const PassResult& r, const std::string& node) {
  for (const Skipped& s : r.skipped)
    if (s.what.find(node) != std::string::npos) return &s;
  return nullptr;
}

inline std::vector<uint8_t> bytes_of(const Tensor& t) {
  BlobPtr b = t.bytes();
  return std::vector<uint8_t>(b->data(), b->data() + b->size());
}

}  // namespace qforge::testutil
