// quantize-dynamic pass: DynamicQuantizeLinear + MatMulInteger rewrites,
// checked in ONNX Runtime through tests/tools/ort_compare.py ($QFORGE_PYTHON).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "qforge/progress.h"
#include "quantize_dynamic.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace qforge;
namespace q = qforge::quant;

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float uniform() {  // [-1, 1)
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return static_cast<float>((s_ >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
  }

 private:
  uint64_t s_;
};

Tensor rand_tensor(const std::string& name, std::vector<int64_t> shape, Rng& rng, float scale,
                   float offset = 0) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.uniform() * scale + offset;
  return q::make_f32_tensor(name, std::move(shape), v);
}

Node make_node(std::string name, std::string op, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

Model empty_model(int64_t opset = 13) {
  Model m;
  m.format = "onnx";
  m.source = "dyn.onnx";
  m.graph = std::make_shared<Graph>();
  m.graph->name = "dyn";
  m.graph->model.ir_version = opset >= 13 ? 7 : 6;
  m.graph->model.opset_imports.push_back({"", opset});
  return m;
}

ValueInfo io(const std::string& name, int64_t dim) {
  ValueInfo v;
  v.name = name;
  std::vector<Dim> d(2);
  d[0].param = "batch";
  d[1].value = dim;
  v.type = ValueType::tensor(ElemType::F32, d);
  return v;
}

// x[batch, dims[0]] -> (MatMul -> Add -> Relu)* -> y
Model mlp(const std::vector<int64_t>& dims, uint64_t seed = 21, int64_t opset = 13) {
  Model m = empty_model(opset);
  Graph& g = *m.graph;
  Rng rng(seed);
  g.inputs.push_back(io("x", dims.front()));
  g.outputs.push_back(io("y", dims.back()));
  std::string h = "x";
  const size_t layers = dims.size() - 1;
  for (size_t i = 0; i < layers; ++i) {
    const std::string p = "fc" + std::to_string(i + 1);
    const float s = 2.0f / std::sqrt(static_cast<float>(dims[i]));
    // Off-centre weights make uint8 zero points non-trivial.
    m.tensors.push_back(rand_tensor(p + ".weight", {dims[i], dims[i + 1]}, rng, s, 0.2f * s));
    m.tensors.push_back(rand_tensor(p + ".bias", {dims[i + 1]}, rng, 0.1f));
    g.nodes.push_back(make_node(p, "MatMul", {h, p + ".weight"}, {p + "_mm"}));
    const bool last = i + 1 == layers;
    g.nodes.push_back(make_node(p + "_add", "Add", {p + "_mm", p + ".bias"}, {last ? "y" : p + "_add_out"}));
    if (!last) g.nodes.push_back(make_node(p + "_relu", "Relu", {p + "_add_out"}, {p + "_out"}));
    h = p + "_out";
  }
  return m;
}

Value list_of(std::vector<std::string> items) {
  Value v;
  v.kind = Value::Kind::List;
  for (auto& s : items) v.list.push_back(Value::of_string(s));
  return v;
}

PassResult quantize(Model& model, Options opts) {
  const PassInfo info = passes::quantize_dynamic_pass_info();
  for (const OptionSpec& s : info.options)
    if (!opts.count(s.name) && !s.default_value.is_null()) opts[s.name] = s.default_value;
  NullProgress progress;
  PassContext ctx{opts, nullptr, "test", "", 1, progress, {}, nullptr};
  return info.factory()->run(model, ctx);
}

struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("qforge_qd_test_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~Scratch() {
    if (!std::getenv("QFORGE_KEEP_TEST_FILES")) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
};

fs::path scratch() {
  static Scratch s;
  return s.dir;
}

fs::path source_dir() {
  if (const char* s = std::getenv("QFORGE_SOURCE_DIR")) return s;
#ifdef QFORGE_SOURCE_DIR
  return QFORGE_SOURCE_DIR;
#else
  return fs::path(__FILE__).parent_path().parent_path();
#endif
}

std::string python() {
  const char* p = std::getenv("QFORGE_PYTHON");
  if (!p || !*p)
    FAIL(
        "QFORGE_PYTHON is not set: it must name a Python with onnxruntime and numpy "
        "(ctest sets it; by hand: QFORGE_PYTHON=python3 ./qforge_tests \"[quantize-dynamic]\")");
  if (std::string(p).find('/') != std::string::npos && !fs::exists(p))
    FAIL("QFORGE_PYTHON names '" << p
                                 << "', which does not exist: run `make test` (it creates the venv) "
                                    "or set QFORGE_PYTHON to a Python with onnxruntime and numpy");
  return p;
}

struct Comparison {
  int rc = -1;
  std::string output;
  double cosine = 0;
};

Comparison ort_compare(const fs::path& ref, const fs::path& cand) {
  const std::string cmd = "'" + python() + "' '" + (source_dir() / "tests/tools/ort_compare.py").string() +
                          "' '" + ref.string() + "' '" + cand.string() + "' 2>&1";
  Comparison c;
  FILE* f = ::popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) c.output.append(buf, n);
  int st = ::pclose(f);
  c.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (c.rc == 0)
    c.cosine = nlohmann::json::parse(c.output.substr(c.output.rfind('{'))).at("cosine").get<double>();
  return c;
}

fs::path emit(const Model& m, const std::string& name) {
  fs::path p = scratch() / name;
  onnxfmt::emit_onnx(m, p.string(), {});
  return p;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const Node* find_op(const Graph& g, const std::string& op) {
  for (const Node& n : g.nodes)
    if (n.op_type == op) return &n;
  return nullptr;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  BlobPtr b = t.bytes();
  return std::vector<uint8_t>(b->data(), b->data() + b->size());
}

}  // namespace

TEST_CASE("quantize-dynamic: int8/uint8, per tensor/per channel MLPs run in ONNX Runtime",
          "[quantize-dynamic]") {
  Model orig = mlp({64, 128, 64, 16});
  fs::path a = emit(orig, "dyn_f32.onnx");
  for (const char* wt : {"int8", "uint8"}) {
    for (bool pc : {false, true}) {
      DYNAMIC_SECTION(wt << " per_channel " << pc) {
        Model m = orig;
        PassResult r =
            quantize(m, {{"weight_type", Value::of_string(wt)}, {"per_channel", Value::of_bool(pc)}});
        INFO(r.status.message);
        REQUIRE(r.status.ok);
        CHECK(r.changed);
        const Graph& g = *m.graph;
        CHECK(q::count_ops(g, "MatMul") == 0);
        CHECK(q::count_ops(g, "MatMulInteger") == 3);
        CHECK(q::count_ops(g, "DynamicQuantizeLinear") == 3);
        CHECK(q::count_ops(g, "Cast") == 3);
        CHECK(q::count_ops(g, "Mul") == 6);
        CHECK(r.metrics.at("quantized_weights") == 3);
        CHECK(r.metrics.at("weight_bytes_after") < r.metrics.at("weight_bytes_before") / 3.5);
        const Node* mi = find_op(g, "MatMulInteger");
        REQUIRE(mi);
        REQUIRE(mi->inputs.size() == 4);
        const Tensor* w = m.tensor(mi->inputs[1]);
        const Tensor* zp = m.tensor(mi->inputs[3]);
        REQUIRE(w);
        REQUIRE(zp);
        const ElemType want = std::string(wt) == "int8" ? ElemType::I8 : ElemType::U8;
        CHECK(w->type == want);
        CHECK(zp->type == want);
        CHECK(zp->shape == (pc ? std::vector<int64_t>{128} : std::vector<int64_t>{}));
        const std::vector<uint8_t> zb = bytes_of(*zp);
        if (want == ElemType::I8) {
          CHECK(std::all_of(zb.begin(), zb.end(), [](uint8_t b) { return b == 0; }));  // symmetric
        } else {
          CHECK(std::any_of(zb.begin(), zb.end(), [](uint8_t b) { return b != 0 && b != 128; }));
        }
        fs::path b = emit(m, std::string("dyn_") + wt + (pc ? "_pc" : "_pt") + ".onnx");
        CHECK(fs::file_size(b) < fs::file_size(a) / 3);
        Comparison c = ort_compare(a, b);
        INFO(c.output);
        REQUIRE(c.rc == 0);
        CHECK(c.cosine >= 0.99);
      }
    }
  }
}

TEST_CASE("quantize-dynamic: exact weight codes (quant_utils arithmetic)", "[quantize-dynamic]") {
  Model m = empty_model();
  Graph& g = *m.graph;
  g.inputs.push_back(io("x", 2));
  g.outputs.push_back(io("y", 2));
  // absmax 127/64 -> scale 1/64: -62.5 -> -62 and 2.5 -> 2 (ties to even).
  m.tensors.push_back(q::make_f32_tensor("w", {2, 2}, {1.984375f, -0.9765625f, 0.0390625f, 0.0f}));
  g.nodes.push_back(make_node("mm", "MatMul", {"x", "w"}, {"y"}));
  Model pc = m, u8 = m;
  REQUIRE(quantize(m, {}).status.ok);
  const Node* mi = find_op(*m.graph, "MatMulInteger");
  REQUIRE(mi);
  CHECK(bytes_of(*m.tensor(mi->inputs[1])) == std::vector<uint8_t>{127, static_cast<uint8_t>(-62), 2, 0});
  CHECK(q::read_f32(*m.tensor("w_scale")) == std::vector<float>{0.015625f});
  CHECK(m.tensor("w") == nullptr);

  // Per channel: column 1 absmax 0.9765625 -> scale 0.9765625 / 127.
  REQUIRE(quantize(pc, {{"per_channel", Value::of_bool(true)}}).status.ok);
  mi = find_op(*pc.graph, "MatMulInteger");
  CHECK(bytes_of(*pc.tensor(mi->inputs[1])) == std::vector<uint8_t>{127, static_cast<uint8_t>(-127), 2, 0});
  CHECK(q::read_f32(*pc.tensor("w_scale")) ==
        std::vector<float>{0.015625f, static_cast<float>(0.9765625 / 127)});

  // uint8 asymmetric: rmin -0.9765625, rmax 1.984375 -> scale 2.9609375 / 255,
  // zp = round(0.9765625 / scale) = round(84.1029...) = 84.
  REQUIRE(quantize(u8, {{"weight_type", Value::of_string("uint8")}}).status.ok);
  mi = find_op(*u8.graph, "MatMulInteger");
  REQUIRE(mi);
  CHECK(bytes_of(*u8.tensor(mi->inputs[1])) == std::vector<uint8_t>{255, 0, 87, 84});
  CHECK(bytes_of(*u8.tensor(mi->inputs[3])) == std::vector<uint8_t>{84});
  CHECK(q::read_f32(*u8.tensor("w_scale"))[0] == static_cast<float>(2.9609375 / 255));
}

TEST_CASE("quantize-dynamic: reduce_range keeps int8 codes in [-64, 64]", "[quantize-dynamic]") {
  Model orig = mlp({32, 48, 8}, 4);
  Model m = orig;
  PassResult r = quantize(m, {{"reduce_range", Value::of_bool(true)}, {"per_channel", Value::of_bool(true)}});
  REQUIRE(r.status.ok);
  int lo = 0, hi = 0;
  for (const Node& n : m.graph->nodes) {
    if (n.op_type != "MatMulInteger") continue;
    for (uint8_t b : bytes_of(*m.tensor(n.inputs[1]))) {
      lo = std::min(lo, static_cast<int>(static_cast<int8_t>(b)));
      hi = std::max(hi, static_cast<int>(static_cast<int8_t>(b)));
    }
  }
  CHECK(lo >= -64);
  CHECK(hi <= 64);
  CHECK(std::max(-lo, hi) == 64);  // the extreme of each column maps to +-64
  Comparison c = ort_compare(emit(orig, "dyn_rr_f32.onnx"), emit(m, "dyn_rr.onnx"));
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.99);
}

TEST_CASE("quantize-dynamic: one DynamicQuantizeLinear per activation, skips with notes",
          "[quantize-dynamic]") {
  Model m = empty_model();
  Graph& g = *m.graph;
  g.inputs.push_back(io("x", 32));
  g.outputs.push_back(io("y", 16));
  Rng rng(5);
  m.tensors.push_back(rand_tensor("wa", {32, 16}, rng, 0.3f));
  m.tensors.push_back(rand_tensor("wb", {32, 16}, rng, 0.3f));
  m.tensors.push_back(rand_tensor("wc", {32, 16}, rng, 0.3f));
  m.tensors.push_back(rand_tensor("wd", {32, 16}, rng, 0.3f));
  g.nodes.push_back(make_node("a", "MatMul", {"x", "wa"}, {"ha"}));
  g.nodes.push_back(make_node("b", "MatMul", {"x", "wb"}, {"hb"}));
  g.nodes.push_back(make_node("c", "MatMul", {"x", "wc"}, {"hc"}));
  g.nodes.push_back(make_node("neg", "Neg", {"wd"}, {"wd_neg"}));
  g.nodes.push_back(make_node("d", "MatMul", {"x", "wd_neg"}, {"hd"}));
  g.nodes.push_back(make_node("s1", "Add", {"ha", "hb"}, {"s1_out"}));
  g.nodes.push_back(make_node("s2", "Add", {"s1_out", "hc"}, {"s2_out"}));
  g.nodes.push_back(make_node("s3", "Add", {"s2_out", "hd"}, {"y"}));
  Model orig = m;
  PassResult r = quantize(m, {{"exclude_nodes", list_of({"c"})}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(q::count_ops(*m.graph, "DynamicQuantizeLinear") == 1);
  CHECK(q::count_ops(*m.graph, "MatMulInteger") == 2);
  CHECK(q::count_ops(*m.graph, "MatMul") == 2);  // c excluded, d's weight is computed
  CHECK(r.metrics.at("dynamic_quantize_nodes") == 1);
  REQUIRE(r.notes.size() == 2);
  CHECK_THAT(r.notes[0], Contains("node 'c'") && Contains("exclude_nodes"));
  CHECK_THAT(r.notes[1], Contains("node 'd'") && Contains("'wd_neg'") && Contains("not an initializer"));
  CHECK(m.tensor("wc") != nullptr);
  CHECK(m.tensor("wa") == nullptr);
  Comparison c = ort_compare(emit(orig, "dyn_shared_f32.onnx"), emit(m, "dyn_shared.onnx"));
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.99);
}

TEST_CASE("quantize-dynamic: 3-D activations (transformer-style MatMul)", "[quantize-dynamic]") {
  Model orig = empty_model();
  Graph& g = *orig.graph;
  std::vector<Dim> d(3);
  d[0].param = "batch";
  d[1].value = 7;
  d[2].value = 48;
  g.inputs.push_back(ValueInfo{"x", ValueType::tensor(ElemType::F32, d), "", ""});
  d[2].value = 24;
  g.outputs.push_back(ValueInfo{"y", ValueType::tensor(ElemType::F32, d), "", ""});
  Rng rng(31);
  orig.tensors.push_back(rand_tensor("wq", {48, 24}, rng, 0.25f));
  g.nodes.push_back(make_node("proj", "MatMul", {"x", "wq"}, {"y"}));
  Model m = orig;
  REQUIRE(quantize(m, {{"per_channel", Value::of_bool(true)}}).status.ok);
  Comparison c = ort_compare(emit(orig, "dyn_proj_f32.onnx"), emit(m, "dyn_proj.onnx"));
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.99);
}

TEST_CASE("quantize-dynamic: raises opset 10 to 11", "[quantize-dynamic]") {
  Model orig = mlp({16, 24, 8}, 8, 10);
  Model m = orig;
  PassResult r = quantize(m, {});
  REQUIRE(r.status.ok);
  CHECK(m.graph->opset() == 11);
  bool noted = false;
  for (const std::string& n : r.notes) noted |= n.find("from 10 to 11") != std::string::npos;
  CHECK(noted);
  Comparison c = ort_compare(emit(orig, "dyn_op10_f32.onnx"), emit(m, "dyn_op10.onnx"));
  INFO(c.output);
  REQUIRE(c.rc == 0);
  CHECK(c.cosine >= 0.99);
}

TEST_CASE("quantize-dynamic: deterministic output", "[quantize-dynamic]") {
  Model orig = mlp({32, 64, 8});
  Model a = orig, b = orig;
  Options o{{"weight_type", Value::of_string("uint8")}, {"per_channel", Value::of_bool(true)}};
  REQUIRE(quantize(a, o).status.ok);
  REQUIRE(quantize(b, o).status.ok);
  CHECK(file_bytes(emit(a, "dyn_det_a.onnx")) == file_bytes(emit(b, "dyn_det_b.onnx")));
}

TEST_CASE("quantize-dynamic: bad options and unsupported models fail clearly", "[quantize-dynamic]") {
  Model m = mlp({16, 16, 4});
  auto fails = [&](Options o, const std::string& what) {
    Model copy = m;
    PassResult r = quantize(copy, std::move(o));
    CHECK_FALSE(r.status.ok);
    CHECK_FALSE(r.changed);
    CHECK_THAT(r.status.message, Contains(what));
    CHECK(copy.tensor("fc1.weight") != nullptr);
  };
  fails({{"weight_type", Value::of_string("int4")}}, "'weight_type' must be 'int8' or 'uint8', found 'int4'");
  fails({{"op_types", list_of({"MatMul", "Gemm"})}},
        "op type 'Gemm' in option 'op_types' is not implemented");
  fails({{"per_channel", Value::of_string("yes")}},
        "'per_channel' of pass 'quantize-dynamic' must be true or false");
  SECTION("no graph") {
    Model gguf;
    gguf.format = "gguf";
    gguf.source = "llm.gguf";
    PassResult r = quantize(gguf, {});
    CHECK_FALSE(r.status.ok);
    CHECK_THAT(r.status.message, Contains("llm.gguf") && Contains("no graph"));
  }
  SECTION("opset move conflicts") {
    Model x = mlp({16, 16, 4}, 3, 9);
    Graph& g = *x.graph;
    Node up = make_node("up", "Upsample", {"y", "scales"}, {"y2"});
    x.tensors.push_back(q::make_f32_tensor("scales", {2}, {1.0f, 2.0f}));
    g.nodes.push_back(up);
    g.outputs.push_back(io("y2", 8));
    PassResult r = quantize(x, {});
    CHECK_FALSE(r.status.ok);
    CHECK_THAT(r.status.message, Contains("node 'up' (Upsample)") && Contains("from 9 to 11"));
  }
  SECTION("f16 weights are skipped with a note") {
    Model h = m;
    for (Tensor& t : h.tensors)
      if (t.name == "fc2.weight") {
        t.type = ElemType::F16;
        t.data = make_blob(std::vector<uint8_t>(static_cast<size_t>(t.numel() * 2), 0));
      }
    PassResult r = quantize(h, {});
    REQUIRE(r.status.ok);
    CHECK(r.metrics.at("quantized_weights") == 1);
    bool noted = false;
    for (const std::string& n : r.notes) noted |= n.find("'fc2.weight' is f16") != std::string::npos;
    CHECK(noted);
  }
}
