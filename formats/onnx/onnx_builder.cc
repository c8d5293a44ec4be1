#include "onnx_builder.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "onnx_format.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {
namespace {

class Rng : public XorShiftRng {
 public:
  explicit Rng(uint32_t seed) : XorShiftRng(0x9E3779B97F4A7C15ull ^ seed) {}
};

Tensor weight(const std::string& name, std::vector<int64_t> shape, int64_t fan_in, Rng& rng) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.type = ElemType::F32;
  std::vector<float> v(t.numel());
  const float scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
  for (float& x : v) x = rng.uniform() * scale;
  std::vector<uint8_t> bytes(v.size() * sizeof(float));
  std::memcpy(bytes.data(), v.data(), bytes.size());
  t.data = make_blob(std::move(bytes));
  return t;
}

std::vector<Dim> dims(const std::vector<int64_t>& fixed) {
  std::vector<Dim> d(fixed.size() + 1);
  d[0].param = "batch";
  for (size_t i = 0; i < fixed.size(); ++i) d[i + 1].value = fixed[i];
  return d;
}

Model new_model(const std::string& name) {
  Model m;
  m.format = "onnx";
  m.graph = std::make_shared<Graph>();
  Graph& g = *m.graph;
  g.name = name;
  g.model.ir_version = 7;
  g.model.opset_imports.push_back({"", 13});
  g.model.producer_name = "qforge";
  g.model.producer_version = "tiny-1";
  m.metadata.emplace_back("qforge.example", MetaValue::of_string(name));
  return m;
}

void add_io(Graph& g, const std::string& in, std::vector<int64_t> in_dims, const std::string& out,
            std::vector<int64_t> out_dims) {
  ValueInfo x;
  x.name = in;
  x.type = ValueType::tensor(ElemType::F32, dims(in_dims));
  g.inputs.push_back(x);
  ValueInfo y;
  y.name = out;
  y.type = ValueType::tensor(ElemType::F32, dims(out_dims));
  g.outputs.push_back(y);
}

}  // namespace

Model tiny_mlp_model(uint32_t seed) {
  Model m = new_model("tiny_mlp");
  Rng rng(seed);
  Graph& g = *m.graph;
  add_io(g, "x", {16}, "y", {8});
  m.tensors.push_back(weight("fc1.weight", {16, 32}, 16, rng));
  m.tensors.push_back(weight("fc1.bias", {32}, 16, rng));
  m.tensors.push_back(weight("fc2.weight", {32, 8}, 32, rng));
  m.tensors.push_back(weight("fc2.bias", {8}, 32, rng));
  g.nodes.push_back(make_node("fc1", "MatMul", {"x", "fc1.weight"}, {"fc1_mm"}));
  g.nodes.push_back(make_node("fc1_add", "Add", {"fc1_mm", "fc1.bias"}, {"fc1_out"}));
  g.nodes.push_back(make_node("relu1", "Relu", {"fc1_out"}, {"relu1_out"}));
  g.nodes.push_back(make_node("fc2", "MatMul", {"relu1_out", "fc2.weight"}, {"fc2_mm"}));
  g.nodes.push_back(make_node("fc2_add", "Add", {"fc2_mm", "fc2.bias"}, {"y"}));
  return m;
}

Model tiny_conv_model(uint32_t seed) {
  Model m = new_model("tiny_conv");
  Rng rng(seed);
  Graph& g = *m.graph;
  add_io(g, "x", {3, 16, 16}, "y", {4});
  m.tensors.push_back(weight("conv.weight", {8, 3, 3, 3}, 27, rng));
  m.tensors.push_back(weight("conv.bias", {8}, 27, rng));
  m.tensors.push_back(weight("fc.weight", {8, 4}, 8, rng));
  m.tensors.push_back(weight("fc.bias", {4}, 8, rng));
  Node conv = make_node("conv", "Conv", {"x", "conv.weight", "conv.bias"}, {"conv_out"});
  conv.attributes.push_back(Attribute::of_ints("kernel_shape", {3, 3}));
  conv.attributes.push_back(Attribute::of_ints("pads", {1, 1, 1, 1}));
  conv.attributes.push_back(Attribute::of_ints("strides", {1, 1}));
  g.nodes.push_back(conv);
  g.nodes.push_back(make_node("relu", "Relu", {"conv_out"}, {"relu_out"}));
  g.nodes.push_back(make_node("pool", "GlobalAveragePool", {"relu_out"}, {"pool_out"}));
  Node flat = make_node("flatten", "Flatten", {"pool_out"}, {"flat_out"});
  flat.attributes.push_back(Attribute::of_int("axis", 1));
  g.nodes.push_back(flat);
  g.nodes.push_back(make_node("fc", "MatMul", {"flat_out", "fc.weight"}, {"fc_mm"}));
  g.nodes.push_back(make_node("fc_add", "Add", {"fc_mm", "fc.bias"}, {"y"}));
  return m;
}

void write_tiny_model(const std::string& kind, const std::string& path, uint32_t seed) {
  Model m;
  if (kind == "mlp") {
    m = tiny_mlp_model(seed ? seed : 1);
  } else if (kind == "conv") {
    m = tiny_conv_model(seed ? seed : 2);
  } else {
    throw Error("unknown tiny model kind '" + kind + "'; expected 'mlp' or 'conv'");
  }
  emit_onnx(m, path, {});
}

}  // namespace qforge::onnxfmt
