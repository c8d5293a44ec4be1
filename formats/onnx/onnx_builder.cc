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

Tensor float_tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.type = ElemType::F32;
  t.data = make_blob(v.data(), v.size() * sizeof(float));
  return t;
}

Tensor weight(const std::string& name, std::vector<int64_t> shape, int64_t fan_in, Rng& rng) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  const float scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
  for (float& x : v) x = rng.uniform() * scale;
  return float_tensor(name, std::move(shape), v);
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

namespace {

// BatchNormalization's four parameter tensors, near the identity.
void add_batchnorm(Model& m, const std::string& name, int64_t channels, Rng& rng) {
  std::vector<float> scale(channels), bias(channels), mean(channels), var(channels);
  for (int64_t i = 0; i < channels; ++i) {
    scale[i] = 1.0f + 0.2f * rng.uniform();
    bias[i] = 0.1f * rng.uniform();
    mean[i] = 0.1f * rng.uniform();
    var[i] = 1.0f + 0.5f * std::fabs(rng.uniform());
  }
  m.tensors.push_back(float_tensor(name + ".scale", {channels}, scale));
  m.tensors.push_back(float_tensor(name + ".bias", {channels}, bias));
  m.tensors.push_back(float_tensor(name + ".mean", {channels}, mean));
  m.tensors.push_back(float_tensor(name + ".var", {channels}, var));
  m.graph->nodes.push_back(make_node(
      name, "BatchNormalization",
      {name + "_in", name + ".scale", name + ".bias", name + ".mean", name + ".var"}, {name + "_out"}));
}

Node conv_node(const std::string& name, const std::vector<std::string>& inputs, const std::string& out,
               int64_t k, int64_t stride, int64_t group) {
  Node n = make_node(name, "Conv", inputs, {out});
  n.attributes.push_back(Attribute::of_ints("kernel_shape", {k, k}));
  n.attributes.push_back(Attribute::of_ints("pads", {k / 2, k / 2, k / 2, k / 2}));
  n.attributes.push_back(Attribute::of_ints("strides", {stride, stride}));
  if (group > 1) n.attributes.push_back(Attribute::of_int("group", group));
  return n;
}

}  // namespace

Model tiny_cnn_model(uint32_t seed) {
  Model m = new_model("tiny_cnn");
  Rng rng(seed);
  Graph& g = *m.graph;
  add_io(g, "image", {3, 32, 32}, "probs", {10});
  // stem: Conv 3x3 stride 2 -> BN -> Relu
  m.tensors.push_back(weight("stem.weight", {16, 3, 3, 3}, 27, rng));
  g.nodes.push_back(conv_node("stem", {"image", "stem.weight"}, "stem_bn_in", 3, 2, 1));
  add_batchnorm(m, "stem_bn", 16, rng);
  g.nodes.push_back(make_node("stem_relu", "Relu", {"stem_bn_out"}, {"stem_act"}));
  // depthwise 3x3 -> BN -> Clip(0, 6)
  m.tensors.push_back(weight("dw.weight", {16, 1, 3, 3}, 9, rng));
  g.nodes.push_back(conv_node("dw", {"stem_act", "dw.weight"}, "dw_bn_in", 3, 1, 16));
  add_batchnorm(m, "dw_bn", 16, rng);
  m.tensors.push_back(float_tensor("relu6.min", {}, {0.0f}));
  m.tensors.push_back(float_tensor("relu6.max", {}, {6.0f}));
  g.nodes.push_back(make_node("dw_relu6", "Clip", {"dw_bn_out", "relu6.min", "relu6.max"}, {"dw_act"}));
  // pointwise 1x1 -> BN, and a residual 1x1 + Relu branch added back
  m.tensors.push_back(weight("pw.weight", {24, 16, 1, 1}, 16, rng));
  g.nodes.push_back(conv_node("pw", {"dw_act", "pw.weight"}, "pw_bn_in", 1, 1, 1));
  add_batchnorm(m, "pw_bn", 24, rng);
  m.tensors.push_back(weight("res.weight", {24, 24, 1, 1}, 24, rng));
  m.tensors.push_back(weight("res.bias", {24}, 24, rng));
  g.nodes.push_back(conv_node("res", {"pw_bn_out", "res.weight", "res.bias"}, "res_out", 1, 1, 1));
  g.nodes.push_back(make_node("res_relu", "Relu", {"res_out"}, {"res_act"}));
  g.nodes.push_back(make_node("res_add", "Add", {"pw_bn_out", "res_act"}, {"block_out"}));
  // two poolings side by side, concatenated
  Node maxpool = make_node("maxpool", "MaxPool", {"block_out"}, {"max_out"});
  maxpool.attributes.push_back(Attribute::of_ints("kernel_shape", {2, 2}));
  maxpool.attributes.push_back(Attribute::of_ints("strides", {2, 2}));
  g.nodes.push_back(maxpool);
  Node avgpool = make_node("avgpool", "AveragePool", {"block_out"}, {"avg_out"});
  avgpool.attributes.push_back(Attribute::of_ints("kernel_shape", {2, 2}));
  avgpool.attributes.push_back(Attribute::of_ints("strides", {2, 2}));
  g.nodes.push_back(avgpool);
  Node concat = make_node("concat", "Concat", {"max_out", "avg_out"}, {"cat_out"});
  concat.attributes.push_back(Attribute::of_int("axis", 1));
  g.nodes.push_back(concat);
  // head: GlobalAveragePool -> Flatten -> Gemm(transB) -> Softmax
  g.nodes.push_back(make_node("gap", "GlobalAveragePool", {"cat_out"}, {"gap_out"}));
  Node flat = make_node("flatten", "Flatten", {"gap_out"}, {"flat_out"});
  flat.attributes.push_back(Attribute::of_int("axis", 1));
  g.nodes.push_back(flat);
  m.tensors.push_back(weight("fc.weight", {10, 48}, 1, rng));  // wide logits: a peaked softmax
  m.tensors.push_back(weight("fc.bias", {10}, 48, rng));
  Node fc = make_node("fc", "Gemm", {"flat_out", "fc.weight", "fc.bias"}, {"logits"});
  fc.attributes.push_back(Attribute::of_int("transB", 1));
  g.nodes.push_back(fc);
  Node softmax = make_node("softmax", "Softmax", {"logits"}, {"probs"});
  softmax.attributes.push_back(Attribute::of_int("axis", -1));
  g.nodes.push_back(softmax);
  return m;
}

void write_tiny_model(const std::string& kind, const std::string& path, uint32_t seed) {
  Model m;
  if (kind == "mlp") {
    m = tiny_mlp_model(seed ? seed : 1);
  } else if (kind == "conv") {
    m = tiny_conv_model(seed ? seed : 2);
  } else if (kind == "cnn") {
    m = tiny_cnn_model(seed ? seed : 3);
  } else {
    throw Error("unknown tiny model kind '" + kind + "'; expected 'mlp', 'conv' or 'cnn'");
  }
  emit_onnx(m, path, {});
}

}  // namespace qforge::onnxfmt
