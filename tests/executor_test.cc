// The cpu executor (executors/cpu): the seam, the plan (last uses, observer),
// errors for what it cannot run.
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/executor.h"
#include "qforge/graph.h"
#include "qforge/plugin_host.h"
#include "qforge/registry.h"

using namespace qforge;
using Catch::Matchers::Contains;

namespace {

RunValue f32(std::vector<int64_t> shape, std::vector<float> data) {
  RunValue v;
  v.type = ElemType::F32;
  v.shape = std::move(shape);
  v.data = make_blob(data.data(), data.size() * sizeof(float));
  return v;
}

std::vector<float> floats(const RunValue& v) {
  std::vector<float> out(v.numel());
  std::memcpy(out.data(), v.data->data(), out.size() * sizeof(float));
  return out;
}

Tensor tensor_f32(std::string name, std::vector<int64_t> shape, std::vector<float> data) {
  Tensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.type = ElemType::F32;
  t.data = make_blob(data.data(), data.size() * sizeof(float));
  return t;
}

// y = Relu(Reshape(x, [2, 2]) @ W + b) with W an initializer and b a Constant node.
Model small_model() {
  Model m;
  m.format = "onnx";
  m.source = "small.onnx";
  m.graph = std::make_shared<Graph>();
  Graph& g = *m.graph;
  g.name = "small";
  g.model.opset_imports = {{"", 13}};
  g.inputs.push_back({"x", ValueType::tensor(ElemType::F32, std::vector<int64_t>{4}), "", ""});
  g.outputs.push_back({"y", ValueType::tensor(ElemType::F32, std::vector<int64_t>{2, 2}), "", ""});
  m.tensors.push_back(tensor_f32("W", {2, 2}, {1, 2, 3, 4}));
  Tensor shape;
  shape.name = "shape";
  shape.type = ElemType::I64;
  shape.shape = {2};
  const int64_t dims[2] = {2, -1};
  shape.data = make_blob(dims, sizeof dims);
  m.tensors.push_back(shape);
  Node c = make_node("c", "Constant", {}, {"b"});
  c.attributes.push_back(Attribute::of_tensor("value", tensor_f32("", {2}, {-10, 1})));
  g.nodes.push_back(c);
  g.nodes.push_back(make_node("r", "Reshape", {"x", "shape"}, {"x2"}));
  g.nodes.push_back(make_node("mm", "MatMul", {"x2", "W"}, {"h"}));
  g.nodes.push_back(make_node("add", "Add", {"h", "b"}, {"h2"}));
  g.nodes.push_back(make_node("relu", "Relu", {"h2"}, {"h3"}));
  g.nodes.push_back(make_node("id", "Identity", {"h3"}, {"y"}));
  return m;
}

const Executor& cpu_executor(Registry& registry) {
  static std::unique_ptr<PluginHost> host;
  host = std::make_unique<PluginHost>(registry);
  register_builtins(*host);
  const Executor* e = registry.executor("cpu");
  REQUIRE(e);
  return *e;
}

struct Recorder : Observer {
  std::vector<std::string> names;
  std::map<std::string, std::vector<float>> values;
  void observe(const std::string& value, const RunValue& v) override {
    names.push_back(value);
    values[value] = floats(v);
  }
};

}  // namespace

TEST_CASE("cpu executor: registered as 'cpu', runs a small graph, observer sees each float value",
          "[executor]") {
  Registry registry;
  const Executor& e = cpu_executor(registry);
  CHECK(e.name() == "cpu");
  std::unique_ptr<PreparedModel> pm;
  Status st = e.prepare(small_model(), {}, pm);
  INFO(st.message);
  REQUIRE(st.ok);
  CHECK(pm->input_names() == std::vector<std::string>{"x"});
  CHECK(pm->output_names() == std::vector<std::string>{"y"});
  NamedValues out;
  Recorder rec;
  st = pm->run({{"x", f32({4}, {1, 0, 0, 1})}}, out, &rec);
  INFO(st.message);
  REQUIRE(st.ok);
  REQUIRE(out.size() == 1);
  CHECK(out[0].first == "y");
  CHECK(out[0].second.shape == std::vector<int64_t>{2, 2});
  // [[1,0],[0,1]] @ [[1,2],[3,4]] + [-10, 1] = [[-9, 3], [-7, 5]] -> relu
  CHECK(floats(out[0].second) == std::vector<float>{0, 3, 0, 5});
  // Graph input, then each produced float value in order (Constant outputs
  // are weights, computed at prepare time, not activations).
  CHECK(rec.names == std::vector<std::string>{"x", "x2", "h", "h2", "h3", "y"});
  CHECK(rec.values.at("h") == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("cpu executor: an unsupported operator is an error naming node, op type, domain and opset",
          "[executor]") {
  Registry registry;
  const Executor& e = cpu_executor(registry);
  Model m = small_model();
  m.graph->nodes.push_back(make_node("weird", "NoSuchOp", {"y"}, {"z"}));
  m.graph->nodes.back().domain = "com.example";
  m.graph->model.opset_imports.push_back({"com.example", 3});
  std::unique_ptr<PreparedModel> pm;
  Status st = e.prepare(m, {}, pm);
  REQUIRE_FALSE(st.ok);
  CHECK_THAT(st.message, Contains("node 'weird': operator NoSuchOp of domain com.example at opset 3"));
}

TEST_CASE("cpu executor: a bad input is an error naming the input, a failing kernel names its node",
          "[executor]") {
  Registry registry;
  const Executor& e = cpu_executor(registry);
  std::unique_ptr<PreparedModel> pm;
  REQUIRE(e.prepare(small_model(), {}, pm).ok);
  NamedValues out;
  Status st = pm->run({{"x", f32({5}, {1, 2, 3, 4, 5})}}, out);
  REQUIRE_FALSE(st.ok);
  CHECK_THAT(st.message, Contains("input 'x' expects shape [4], found f32 [5]"));
  st = pm->run({{"nope", f32({4}, {1, 2, 3, 4})}}, out);
  REQUIRE_FALSE(st.ok);
  CHECK_THAT(st.message, Contains("no input 'nope'"));
  // A Reshape to an impossible shape, at run time: the node is named.
  Model m = small_model();
  m.graph->inputs[0].type = ValueType::tensor(ElemType::F32, std::vector<Dim>{Dim{}});
  REQUIRE(e.prepare(m, {}, pm).ok);
  st = pm->run({{"x", f32({3}, {1, 2, 3})}}, out);
  REQUIRE_FALSE(st.ok);
  CHECK_THAT(st.message, Contains("node 'r' (Reshape, domain ai.onnx, opset 13)"));
  CHECK_THAT(st.message, Contains("cannot reshape [3] to [2, -1]"));
}

TEST_CASE("cpu executor: Add broadcasts numpy-style over merged dimensions", "[executor]") {
  Registry registry;
  const Executor& e = cpu_executor(registry);
  Model m;
  m.graph = std::make_shared<Graph>();
  Graph& g = *m.graph;
  g.model.opset_imports = {{"", 17}};
  g.inputs.push_back({"a", ValueType::tensor(ElemType::F32, std::vector<int64_t>{2, 3, 1}), "", ""});
  g.inputs.push_back({"b", ValueType::tensor(ElemType::F32, std::vector<int64_t>{1, 2}), "", ""});
  g.outputs.push_back({"c", ValueType::tensor(ElemType::F32, std::vector<int64_t>{2, 3, 2}), "", ""});
  g.nodes.push_back(make_node("add", "Add", {"a", "b"}, {"c"}));
  std::unique_ptr<PreparedModel> pm;
  REQUIRE(e.prepare(m, {}, pm).ok);
  NamedValues out;
  Status st = pm->run({{"a", f32({2, 3, 1}, {0, 1, 2, 3, 4, 5})}, {"b", f32({1, 2}, {10, 20})}}, out);
  INFO(st.message);
  REQUIRE(st.ok);
  CHECK(out[0].second.shape == std::vector<int64_t>{2, 3, 2});
  CHECK(floats(out[0].second) == std::vector<float>{10, 20, 11, 21, 12, 22, 13, 23, 14, 24, 15, 25});
}

TEST_CASE(
    "cpu executor: ConvTranspose with output_shape 2 past the full output pads 1 at each end (ONNX's "
    "formula)",
    "[executor]") {
  Registry registry;
  const Executor& e = cpu_executor(registry);
  Model m;
  m.graph = std::make_shared<Graph>();
  Graph& g = *m.graph;
  g.model.opset_imports = {{"", 13}};
  g.inputs.push_back({"x", ValueType::tensor(ElemType::F32, std::vector<int64_t>{1, 1, 2, 2}), "", ""});
  g.outputs.push_back({"y", ValueType::tensor(ElemType::F32, std::vector<int64_t>{1, 1, 8, 8}), "", ""});
  m.tensors.push_back(tensor_f32("w", {1, 1, 3, 3}, std::vector<float>(9, 1.f)));
  Node n = make_node("deconv", "ConvTranspose", {"x", "w"}, {"y"});
  n.attributes.push_back(Attribute::of_ints("strides", {3, 3}));
  n.attributes.push_back(Attribute::of_ints("output_shape", {8, 8}));
  g.nodes.push_back(n);
  std::unique_ptr<PreparedModel> pm;
  Status st = e.prepare(m, {}, pm);
  INFO(st.message);
  REQUIRE(st.ok);
  NamedValues out;
  st = pm->run({{"x", f32({1, 1, 2, 2}, {1, 2, 3, 4})}}, out);
  INFO(st.message);
  REQUIRE(st.ok);
  REQUIRE(out[0].second.shape == std::vector<int64_t>{1, 1, 8, 8});
  // The full output is 6 x 6 (each input a 3 x 3 block); total padding -2 gives
  // pads of -1 at both ends: the blocks shifted by one, a zero border.
  const std::vector<float> y = floats(out[0].second);
  std::vector<float> want(64, 0.f);
  const float x[2][2] = {{1, 2}, {3, 4}};
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 6; ++c) want[(r + 1) * 8 + (c + 1)] = x[r / 3][c / 3];
  CHECK(y == want);
}

// ---------------------------------------------------------------- the CLI
#include <filesystem>

#include "qforge/dataset.h"
#include "test_util.h"

namespace {
const char* kAddTest = "/usr/share/libonnx-testdata/data/node/test_add";
}

TEST_CASE("qforge run: writes <sample>_<k>.npy per output, equal to ONNX's expected output, --profile",
          "[executor][cli]") {
  namespace fs = std::filesystem;
  REQUIRE(fs::is_directory(kAddTest));
  test::TempDir tmp;
  fs::create_directories(tmp / "data");
  fs::copy(fs::path(kAddTest) / "test_data_set_0", fs::path(tmp / "data") / "test_data_set_0",
           fs::copy_options::recursive);
  int status = 0;
  const std::string out =
      test::run_capture(std::string("'") + QFORGE_BIN + "' run " + kAddTest + "/model.onnx --data " +
                            (tmp / "data") + " --out " + (tmp / "out") + " --profile -t 2 2>&1",
                        status);
  INFO(out);
  REQUIRE(status == 0);
  CHECK_THAT(out, Contains("ran 1 samples"));
  CHECK_THAT(out, Contains("op type"));
  CHECK_THAT(out, Contains("Add"));
  Array got = read_npy(tmp / "out/test_data_set_0_0.npy");
  Array want = read_tensor_pb(std::string(kAddTest) + "/test_data_set_0/output_0.pb");
  CHECK(got.shape == want.shape);
  REQUIRE(got.data->size() == want.data->size());
  CHECK(std::memcmp(got.data->data(), want.data->data(), got.data->size()) == 0);

  // A directory that is not a dataset: an error naming it, exit 1.
  const std::string bad =
      test::run_capture(std::string("'") + QFORGE_BIN + "' run " + kAddTest + "/model.onnx --data " +
                            kAddTest + " --out " + (tmp / "o2") + " 2>&1",
                        status);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK_THAT(bad, Contains("model.onnx"));
}

TEST_CASE("qforge compare: a model against itself is cosine 1 and full argmax agreement (--json)",
          "[executor][cli]") {
  namespace fs = std::filesystem;
  test::TempDir tmp;
  fs::create_directories(tmp / "data");
  fs::copy(fs::path(kAddTest) / "test_data_set_0", fs::path(tmp / "data") / "s0",
           fs::copy_options::recursive);
  int status = 0;
  const std::string model = std::string(kAddTest) + "/model.onnx";
  const std::string out = test::run_capture(std::string("'") + QFORGE_BIN + "' compare " + model + " " +
                                                model + " --data " + (tmp / "data") + " --json",
                                            status);
  INFO(out);
  REQUIRE(status == 0);
  CHECK_THAT(out, Contains("\"cosine\": 1.0"));
  CHECK_THAT(out, Contains("\"argmax_agreement\": 1.0"));
  CHECK_THAT(out, Contains("\"sqnr_db\": null"));
  CHECK_THAT(out, Contains("\"max_abs_error\": 0.0"));
  CHECK_THAT(out, Contains("\"samples\": 1"));
}
