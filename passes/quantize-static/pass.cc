// quantize-static: see quantize_static.h.
//
// Three steps over the top-level graph, in node order:
//   1. select: each node whose op type has a rule in kRules is judged (its
//      activations need calibrated ranges, its weight must be a constant);
//      what is left alone goes to PassResult::skipped with the reason;
//   2. parameters: values that must share a scale (Concat, data-movement ops)
//      are joined, each group's range is the union of its members', and one
//      scale and zero point is computed per group;
//   3. rebuild: weights, biases and constant inputs are stored quantized with
//      a DequantizeLinear in front of their node; every quantized activation
//      gets one QuantizeLinear -> DequantizeLinear pair after its producer,
//      and every reader reads the DequantizeLinear's output.
// The conventions (names, zero points, bias scales) are those of ONNX
// Runtime's QDQ quantizer; docs/manifest.md describes the options.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "accuracy.h"
#include "onnx_precision_plan.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "qforge/graph.h"
#include "qforge/status.h"
#include "qoperator.h"
#include "quantize_static.h"
#include "range_table.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "quantize-static";

// ---------------------------------------------------------------- the op table
enum class Role {
  Compute,  // input 0 (and a non-constant weight slot) quantized, weight and bias stored quantized
  Binary,   // both inputs and the output quantized, each with its own range
  Concat,   // every input and the output share one scale and zero point
  Move,     // input 0 and output 0 share one scale and zero point (values are only moved)
  Own,      // input 0 and output 0 quantized, each with its own range
  Fixed,    // input 0 with its own range, output 0 with a fixed range
};

constexpr int kLastAxis = -2;  // the weight's last axis (MatMul's N)
constexpr int kGemmAxis = -3;  // Gemm: 0 when transB = 1, else 1

struct OpRule {
  const char* op;
  Role role;
  int weight = -1;  // input index of the weight (Compute)
  int bias = -1;    // input index of the bias (Compute)
  int axis = 0;     // the weight's output-channel axis (per_channel)
  float fixed_min = 0, fixed_max = 0;
  bool by_default = true;  // in the default `op_types`
};

const std::vector<OpRule>& rules() {
  static const std::vector<OpRule> r = {
      {"Conv", Role::Compute, 1, 2, 0},
      {"ConvTranspose", Role::Compute, 1, 2, 1},
      {"Gemm", Role::Compute, 1, 2, kGemmAxis},
      {"MatMul", Role::Compute, 1, -1, kLastAxis},
      {"Add", Role::Binary},
      {"Mul", Role::Binary},
      {"Concat", Role::Concat},
      {"Reshape", Role::Move},
      {"Transpose", Role::Move},
      {"Squeeze", Role::Move},
      {"Unsqueeze", Role::Move},
      {"Flatten", Role::Move},
      {"MaxPool", Role::Move},
      {"GlobalMaxPool", Role::Move},
      {"Slice", Role::Move},
      {"Resize", Role::Move},  // mode = nearest only
      {"Gather", Role::Move},
      {"DepthToSpace", Role::Move},
      {"SpaceToDepth", Role::Move},
      {"AveragePool", Role::Own},
      {"GlobalAveragePool", Role::Own},
      {"Relu", Role::Own},
      {"Clip", Role::Own},
      {"Sigmoid", Role::Fixed, -1, -1, 0, 0.0f, 1.0f, false},
      {"Softmax", Role::Fixed, -1, -1, 0, 0.0f, 1.0f, false},
      {"Tanh", Role::Fixed, -1, -1, 0, -1.0f, 1.0f, false},
  };
  return r;
}

const OpRule* rule_of(const std::string& op) {
  for (const OpRule& r : rules())
    if (op == r.op) return &r;
  return nullptr;
}

std::vector<std::string> all_ops(bool defaults_only) {
  std::vector<std::string> out;
  for (const OpRule& r : rules())
    if (!defaults_only || r.by_default) out.push_back(r.op);
  return out;
}

std::vector<std::string> ops_with(std::initializer_list<Role> roles) {
  std::vector<std::string> out;
  for (const OpRule& r : rules())
    if (std::find(roles.begin(), roles.end(), r.role) != roles.end()) out.push_back(r.op);
  return out;
}

// "OP=MIN:MAX" (fixed_outputs): false when malformed.
bool parse_fixed_output(const std::string& s, std::string& op, float& lo, float& hi) {
  const size_t eq = s.find('='), colon = s.find(':', eq == std::string::npos ? 0 : eq);
  if (eq == std::string::npos || eq == 0 || colon == std::string::npos) return false;
  op = s.substr(0, eq);
  try {
    size_t a = 0, b = 0;
    const std::string l = s.substr(eq + 1, colon - eq - 1), h = s.substr(colon + 1);
    lo = std::stof(l, &a);
    hi = std::stof(h, &b);
    return a == l.size() && b == h.size() && lo < hi && lo <= 0 && hi >= 0;
  } catch (const std::exception&) {
    return false;
  }
}

// ---------------------------------------------------------------- options
struct Config {
  ElemType act_type = ElemType::U8;
  ElemType weight_type = ElemType::I8;
  bool per_channel = false;
  bool act_symmetric = false;
  bool weight_symmetric = true;
  bool reduce_range = false;
  bool ms_domain = false;
  bool fold_batchnorm = true;
  bool fold_relu = true;
  bool qoperator = false;        // format = "qoperator" (qoperator.h)
  bool upgrade_opset = true;     // ONNX's version converter when per-channel needs opset 13
  bool equalize = true;          // accuracy.h
  bool bias_correction = false;  // accuracy.h
  accuracy::WeightClip weight_clip = accuracy::WeightClip::MinMax;
  std::set<std::string> op_types;
  std::set<std::string> exclude_op_types;
  std::set<std::string> exclude_nodes;
  // A runtime's constraints, usually from the target's profile
  // (docs/manifest.md "Hardware profiles"): which ops take per-channel
  // weights, which share one scale between inputs and output, which have a
  // fixed output range.
  std::set<std::string> per_channel_ops;
  std::set<std::string> shared_scale_ops;
  std::map<std::string, std::pair<float, float>> fixed_outputs;
  // From a precision plan (onnx_precision_plan.h): nodes left in float, and
  // nodes whose activations take `wide_type`.
  std::set<std::string> plan_float, plan_wide;
  ElemType wide_type = ElemType::U16;
};

const char* type_name_of(ElemType t) {
  switch (t) {
    case ElemType::U8: return "uint8";
    case ElemType::I8: return "int8";
    case ElemType::U16: return "uint16";
    case ElemType::I16: return "int16";
    case ElemType::I4: return "int4";
    case ElemType::U4: return "uint4";
    default: return "?";
  }
}

ElemType type_named(const std::string& s) {
  if (s == "uint8") return ElemType::U8;
  if (s == "int8") return ElemType::I8;
  if (s == "uint16") return ElemType::U16;
  if (s == "int16") return ElemType::I16;
  if (s == "int4") return ElemType::I4;
  if (s == "uint4") return ElemType::U4;
  throw Error("unknown quantized type '" + s + "'");
}

std::vector<OptionProblem> check_options(const Options& o) {
  std::vector<OptionProblem> out;
  auto str = [&](const char* name, const std::string& dflt) {
    auto it = o.find(name);
    return it != o.end() && it->second.kind == Value::Kind::String ? it->second.s : dflt;
  };
  std::set<std::string> shared;
  if (auto it = o.find("shared_scale_ops"); it != o.end() && it->second.kind == Value::Kind::List)
    for (const Value& v : it->second.list) shared.insert(v.s);
  if (auto it = o.find("fixed_outputs"); it != o.end() && it->second.kind == Value::Kind::List) {
    const std::vector<std::string> fixable = ops_with({Role::Binary, Role::Own, Role::Fixed});
    for (const Value& v : it->second.list) {
      std::string op;
      float lo = 0, hi = 0;
      if (!parse_fixed_output(v.s, op, lo, hi)) {
        out.push_back({"fixed_outputs", "entry '" + v.s +
                                            "' is not \"OP=MIN:MAX\" with MIN <= 0 <= MAX and MIN < MAX "
                                            "(e.g. \"Sigmoid=0:1\")"});
      } else if (std::find(fixable.begin(), fixable.end(), op) == fixable.end()) {
        std::string list;
        for (const auto& f : fixable) list += (list.empty() ? "" : ", ") + f;
        out.push_back({"fixed_outputs", "entry '" + v.s + "': '" + op +
                                            "' is not an op whose output quantize-static quantizes with its "
                                            "own range (" +
                                            list + ")"});
      } else if (shared.count(op)) {
        out.push_back({"fixed_outputs", "entry '" + v.s + "': '" + op +
                                            "' is also in shared_scale_ops; an output cannot both share its "
                                            "inputs' scale and have a fixed range"});
      }
    }
  }
  if (str("format", "qdq") == "qoperator") {
    // QOperator kernels (QLinearConv, QLinearMatMul, QGemm, ...) take 8-bit codes only.
    const std::string act = str("activation_type", "uint8"), weight = str("weight_type", "int8");
    if (act != "uint8" && act != "int8")
      out.push_back({"activation_type", "is '" + act +
                                            "' but format = \"qoperator\" needs 8-bit activations (uint8 or "
                                            "int8); use format = \"qdq\" for 16-bit activations"});
    if (weight != "int8" && weight != "uint8")
      out.push_back({"weight_type", "is '" + weight +
                                        "' but format = \"qoperator\" needs 8-bit weights (int8 or uint8); "
                                        "use format = \"qdq\" for 4-bit weights"});
    if (act == "int8" && weight == "uint8")
      out.push_back(
          {"weight_type",
           "is 'uint8' with activation_type = \"int8\", but ONNX Runtime has no QLinearConv, "
           "QLinearMatMul or QGemm kernel for int8 activations with uint8 weights; use weight_type = "
           "\"int8\" or format = \"qdq\""});
  }
  return out;
}

Config parse_config(const Options& o) {
  using namespace quant;
  const std::vector<OptionProblem> problems = check_options(o);
  if (!problems.empty())
    throw Error(opt_where(o, problems[0].option) + "option '" + problems[0].option + "' " +
                problems[0].message);
  Config c;
  c.act_type = type_named(opt_string(o, kPass, "activation_type", "uint8"));
  c.weight_type = type_named(opt_string(o, kPass, "weight_type", "int8"));
  c.per_channel = opt_bool(o, kPass, "per_channel", false);
  c.act_symmetric = opt_bool(o, kPass, "activation_symmetric", false);
  // ORT: signed weight types are symmetric unless told otherwise.
  const bool signed_w = c.weight_type == ElemType::I8 || c.weight_type == ElemType::I4;
  c.weight_symmetric = opt_bool(o, kPass, "weight_symmetric", signed_w);
  c.reduce_range = opt_bool(o, kPass, "reduce_range", false);
  c.ms_domain = opt_string(o, kPass, "qdq_domain", "ai.onnx") == "com.microsoft";
  c.fold_batchnorm = opt_bool(o, kPass, "fold_batchnorm", true);
  c.fold_relu = opt_bool(o, kPass, "fold_relu", true);
  c.qoperator = opt_string(o, kPass, "format", "qdq") == "qoperator";
  c.upgrade_opset = opt_bool(o, kPass, "upgrade_opset", true);
  // Unset: on for per-tensor weights only (bench/quantize_static: with per-channel
  // scales it costs more activation range than it saves; docs/manifest.md).
  c.equalize = opt_has(o, "equalize") ? opt_bool(o, kPass, "equalize", true) : !c.per_channel;
  c.bias_correction = opt_bool(o, kPass, "bias_correction", false);
  c.weight_clip = opt_string(o, kPass, "weight_clip", "minmax") == "mse" ? accuracy::WeightClip::Mse
                                                                         : accuracy::WeightClip::MinMax;
  for (const std::string& s : opt_list(o, kPass, "op_types", all_ops(true))) c.op_types.insert(s);
  for (const std::string& s : opt_list(o, kPass, "exclude_op_types", {})) c.exclude_op_types.insert(s);
  for (const std::string& s : opt_list(o, kPass, "exclude_nodes", {})) c.exclude_nodes.insert(s);
  for (const std::string& s : opt_list(o, kPass, "per_channel_ops", ops_with({Role::Compute})))
    c.per_channel_ops.insert(s);
  for (const std::string& s : opt_list(o, kPass, "shared_scale_ops", {})) c.shared_scale_ops.insert(s);
  for (const std::string& s : opt_list(o, kPass, "fixed_outputs", {})) {
    std::string op;
    float lo = 0, hi = 0;
    if (parse_fixed_output(s, op, lo, hi)) c.fixed_outputs[op] = {lo, hi};
  }
  if (c.op_types.empty())
    throw Error(opt_where(o, "op_types") + "option 'op_types' is empty; nothing to quantize");
  return c;
}

// ---------------------------------------------------------------- encoding
std::vector<uint8_t> encode(const std::vector<int32_t>& v, ElemType t) {
  if (t == ElemType::I8 || t == ElemType::U8 || t == ElemType::I4 || t == ElemType::U4)
    return quant::encode_codes(v, t);
  const size_t w = t == ElemType::I32 ? 4 : 2;
  std::vector<uint8_t> out(v.size() * w);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint32_t u = static_cast<uint32_t>(v[i]);
    for (size_t b = 0; b < w; ++b) out[i * w + b] = static_cast<uint8_t>(u >> (8 * b));
  }
  return out;
}

// ---------------------------------------------------------------- selection
// One accepted node.
struct Plan {
  size_t node = 0;
  const OpRule* rule = nullptr;
  std::vector<size_t> acts;  // input indices quantized as activations
  int weight = -1;           // input index of the weight stored quantized
  int64_t axis = -1;         // its per-channel axis; -1: per tensor
  int bias = -1;             // input index of the bias stored as int32
};

// Union-find over value names: values that share a scale and zero point.
struct Groups {
  std::map<std::string, std::string> parent;
  std::string find(const std::string& v) {
    auto it = parent.find(v);
    if (it == parent.end()) {
      parent[v] = v;
      return v;
    }
    if (it->second == v) return v;
    const std::string r = find(it->second);
    parent[v] = r;
    return r;
  }
  void join(const std::string& a, const std::string& b) {
    const std::string ra = find(a), rb = find(b);
    if (ra != rb) parent[rb] = ra;
  }
};

struct Params {
  float scale = 1;
  int32_t zp = 0;
};

// Folds each BatchNormalization (inference form) whose input is a Conv's
// output read by nothing else into that Conv's weight and bias, as ONNX
// Runtime's pre-processing (quant_pre_process, its graph optimizer) does
// before quantizing: W'[m] = W[m] * s[m], b'[m] = (b[m] - mean[m]) * s[m] + B[m]
// with s = scale / sqrt(var + epsilon). The Conv then writes the BN's output
// (whose range the calibrate step measured). Returns the number folded.
size_t fold_batchnorm(Model& work, NameAllocator& names, std::vector<std::string>& replaced) {
  Graph& g = *work.graph;
  const ValueUses uses(g);
  auto is_f32_const = [&](const std::string& v) {
    return !v.empty() && quant::is_constant_initializer(work, v) && work.tensor(v)->type == ElemType::F32;
  };
  std::vector<size_t> drop;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& bn = g.nodes[i];
    if (bn.op_type != "BatchNormalization" || !(bn.domain.empty() || bn.domain == "ai.onnx")) continue;
    if (bn.inputs.size() != 5 || bn.outputs.empty()) continue;
    if (std::any_of(bn.outputs.begin() + 1, bn.outputs.end(),
                    [](const std::string& o) { return !o.empty(); }))
      continue;  // training outputs
    if (const Attribute* t = bn.attr("training_mode"); t && t->i != 0) continue;
    const std::string& x = bn.inputs[0];
    const int p = uses.producer_of(x);
    if (p < 0) continue;
    Node& conv = g.nodes[static_cast<size_t>(p)];
    if (conv.op_type != "Conv" || !(conv.domain.empty() || conv.domain == "ai.onnx")) continue;
    if (uses.consumers_of(x).size() != 1 || g.is_output(x) || conv.inputs.size() < 2) continue;
    const std::string w = conv.inputs[1];
    const std::string b = conv.inputs.size() > 2 ? conv.inputs[2] : std::string();
    if (!is_f32_const(w) || uses.consumers_of(w).size() != 1) continue;
    if (!b.empty() && (!is_f32_const(b) || uses.consumers_of(b).size() != 1)) continue;
    bool params = true;
    for (size_t k = 1; k < 5; ++k) params = params && is_f32_const(bn.inputs[k]);
    if (!params) continue;
    const Tensor& wt = *work.tensor(w);
    if (wt.shape.empty()) continue;
    const int64_t M = wt.shape[0];
    std::vector<std::vector<float>> pv;
    for (size_t k = 1; k < 5; ++k) pv.push_back(quant::read_f32(*work.tensor(bn.inputs[k])));
    if (std::any_of(pv.begin(), pv.end(),
                    [&](const std::vector<float>& v) { return static_cast<int64_t>(v.size()) != M; }))
      continue;
    std::vector<float> bias =
        b.empty() ? std::vector<float>(static_cast<size_t>(M), 0.0f) : quant::read_f32(*work.tensor(b));
    if (static_cast<int64_t>(bias.size()) != M) continue;
    const Attribute* e = bn.attr("epsilon");
    const float eps = e ? e->f : 1e-5f;
    std::vector<float> wv = quant::read_f32(wt);
    const size_t per = wv.size() / static_cast<size_t>(M);
    for (int64_t m = 0; m < M; ++m) {
      const float sc = pv[0][m] / std::sqrt(pv[3][m] + eps);
      for (size_t k = 0; k < per; ++k) wv[static_cast<size_t>(m) * per + k] *= sc;
      bias[m] = (bias[m] - pv[2][m]) * sc + pv[1][m];
    }
    const std::string wn = names.fresh(w + "_bn_folded");
    const std::string bname = names.fresh((b.empty() ? conv.name + "_bias" : b) + "_bn_folded");
    work.tensors.push_back(quant::make_f32_tensor(wn, wt.shape, wv));
    work.tensors.push_back(quant::make_f32_tensor(bname, {M}, bias));
    replaced.push_back(w);
    if (!b.empty()) replaced.push_back(b);
    for (size_t k = 1; k < 5; ++k) replaced.push_back(bn.inputs[k]);
    conv.inputs.resize(3);
    conv.inputs[1] = wn;
    conv.inputs[2] = bname;
    conv.outputs[0] = bn.outputs[0];
    drop.push_back(i);
  }
  g.remove_nodes(drop);
  return drop.size();
}

// Makes each Conv, ConvTranspose and Gemm left in float (not in
// `quantized_at`) read its input 0 before the QuantizeLinear/DequantizeLinear
// pair rather than the DequantizeLinear output: ONNX Runtime would otherwise
// quantize the node's float weights to per-tensor int8 (docs/manifest.md,
// "Precision plans"). Removes the pairs nobody reads afterwards (their scale
// and zero point go to `replaced`), keeping `quantized_at` and `q_nodes` in
// step, and returns how many nodes were rewired.
size_t read_float_before_pairs(std::vector<Node>& out, std::set<size_t>& quantized_at,
                               std::set<size_t>& q_nodes,
                               const std::map<std::string, std::string>& unquantized, const Graph& g,
                               size_t& pairs, std::vector<std::string>& replaced) {
  size_t rewired = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    Node& n = out[i];
    if (quantized_at.count(i) || !n.domain.empty() || n.inputs.empty()) continue;
    if (n.op_type != "Conv" && n.op_type != "ConvTranspose" && n.op_type != "Gemm") continue;
    auto it = unquantized.find(n.inputs[0]);
    if (it == unquantized.end()) continue;
    n.inputs[0] = it->second;
    ++rewired;
  }
  if (!rewired) return 0;
  std::set<std::string> read;
  for (const Node& n : out) {
    read.insert(n.inputs.begin(), n.inputs.end());
    for (const std::string& v : n.implicit_inputs()) read.insert(v);
  }
  std::map<std::string, size_t> q_of;  // Q output -> index of its QuantizeLinear
  for (size_t i : q_nodes) q_of[out[i].outputs[0]] = i;
  std::set<size_t> drop;
  for (size_t i = 0; i < out.size(); ++i) {
    const Node& dq = out[i];
    if (dq.outputs.empty() || !unquantized.count(dq.outputs[0])) continue;
    if (read.count(dq.outputs[0]) || g.is_output(dq.outputs[0])) continue;
    auto q = q_of.find(dq.inputs[0]);
    if (q == q_of.end()) continue;
    size_t q_readers = 0;
    for (const Node& n : out)
      q_readers += static_cast<size_t>(std::count(n.inputs.begin(), n.inputs.end(), dq.inputs[0]));
    if (q_readers != 1) continue;
    drop.insert(i);
    drop.insert(q->second);
    replaced.push_back(dq.inputs[1]);
    replaced.push_back(dq.inputs[2]);
    --pairs;
  }
  if (drop.empty()) return rewired;
  std::vector<Node> kept;
  std::set<size_t> kept_quantized, kept_q;
  for (size_t i = 0; i < out.size(); ++i) {
    if (drop.count(i)) continue;
    if (quantized_at.count(i)) kept_quantized.insert(kept.size());
    if (q_nodes.count(i)) kept_q.insert(kept.size());
    kept.push_back(std::move(out[i]));
  }
  out = std::move(kept);
  quantized_at = std::move(kept_quantized);
  q_nodes = std::move(kept_q);
  return rewired;
}

// Applies a precision plan to the config, after checking it was measured
// with this step's types.
void follow_plan(const OnnxPrecisionPlan& plan, Config& cfg, PassResult& res) {
  auto mismatch = [&](const char* option, const std::string& plan_v, const std::string& mine) {
    if (plan_v != mine)
      throw Error("the precision plan was measured with " + std::string(option) + " = " + plan_v +
                  " and this step quantizes with " + option + " = " + mine +
                  ": give select-precision and quantize-static the same quantization options");
  };
  mismatch("activation_type", plan.activation_type, type_name_of(cfg.act_type));
  mismatch("weight_type", plan.weight_type, type_name_of(cfg.weight_type));
  mismatch("per_channel", plan.per_channel ? "true" : "false", cfg.per_channel ? "true" : "false");
  if (plan.widen_to != "float") cfg.wide_type = type_named(plan.widen_to);
  for (const PlannedNode& n : plan.nodes) {
    if (n.precision == "float") cfg.plan_float.insert(n.name);
    if (n.precision == "int16") cfg.plan_wide.insert(n.name);
  }
  if (cfg.qoperator && !cfg.plan_wide.empty())
    throw Error("the precision plan gives " + std::to_string(cfg.plan_wide.size()) +
                " node(s) 16-bit activations, which format = \"qoperator\" cannot express; use format = "
                "\"qdq\" or widen_to = \"float\" in select-precision");
  const auto c = plan.counts();
  res.metrics["plan_float_nodes"] = c.at("float");
  res.metrics["plan_wide_nodes"] = c.at("int16");
  res.notes.push_back("quantize-static: follows the precision plan (" + plan.method +
                      "): " + std::to_string(c.at("int16")) + " node(s) with " + plan.widen_to +
                      " activations, " + std::to_string(c.at("float")) + " left in float, " +
                      std::to_string(c.at("int8")) + " at " + plan.activation_type);
}

class QuantizeStaticPass : public quant::RewritePass {
 public:
  explicit QuantizeStaticPass(std::vector<std::pair<std::string, std::string>>* quantized = nullptr)
      : quantized_(quantized) {}

 private:
  std::vector<std::pair<std::string, std::string>>* quantized_;

  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    Config cfg = parse_config(ctx.options);
    if (ctx.tables.size() > 1 && ctx.tables[1])
      follow_plan(OnnxPrecisionPlan::from_table(*ctx.tables[1], "the select-precision step's plan"), cfg,
                  res);
    if (ctx.tables.empty() || !ctx.tables[0])
      throw Error(
          "quantize-static needs activation ranges: put a calibrate step before it in the pipeline "
          "([ { pass = \"calibrate\", dataset = \"...\" }, { pass = \"quantize-static\" } ]) or name one "
          "with inputs = [\"target/step\"]");
    quant::RangeTable table = quant::RangeTable::from_table(*ctx.tables[0], "the calibrate step's table");
    quant::NormalizeStats normalized;
    Model work = quant::begin_weight_rewrite(model, "quantize-static rewrites ONNX graphs", normalized);
    if (cfg.upgrade_opset) upgrade_for_per_channel(cfg, work, res);
    Graph& g = *work.graph;
    quant::note_subgraph_bodies(g, res.notes);
    std::vector<std::string> replaced;  // float tensors the rewrite replaced
    size_t folded_bn = 0;
    if (cfg.fold_batchnorm) {
      NameAllocator bn_names(work);
      folded_bn = fold_batchnorm(work, bn_names, replaced);
    }
    const accuracy::WeightScheme scheme{cfg.weight_type, cfg.weight_symmetric, cfg.reduce_range,
                                        cfg.weight_clip};
    if (cfg.equalize) accuracy::equalize_calibrated(work, table, res);

    // ---------------------------------------------------------------- 1. select
    std::set<std::string> qvals;                           // activations that get Q -> DQ
    std::map<std::string, quant::Range> ranges;            // their ranges (and constant inputs')
    std::set<std::string> const_acts;                      // constants in activation slots
    std::map<std::string, std::pair<float, float>> fixed;  // fixed output ranges
    // What the runtime's constraints changed, per op type (for the notes).
    std::map<std::string, size_t> per_tensor_by_op, fixed_by_op, shared_by_op;
    Groups groups;
    std::vector<Plan> plans;
    quant::Selection sel;
    sel.ops = "quantizable";

    auto is_const = [&](const std::string& v) { return quant::is_constant_initializer(work, v); };
    auto const_range = [&](const std::string& v) {
      const std::vector<float> d = quant::read_f32(*work.tensor(v));
      quant::Range r;
      if (!d.empty()) {
        r.min = *std::min_element(d.begin(), d.end());
        r.max = *std::max_element(d.begin(), d.end());
      }
      return r;
    };
    auto is_f32_const = [&](const std::string& v) {
      return is_const(v) && work.tensor(v)->type == ElemType::F32;
    };

    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      const bool default_domain = n.domain.empty() || n.domain == "ai.onnx";
      const OpRule* rule = default_domain ? rule_of(n.op_type) : nullptr;
      auto skip = [&](const std::string& reason, const std::string& detail = "") {
        std::string what = quant::node_label(n, i);
        if (!detail.empty()) what += ": " + detail;
        sel.skipped.push_back({reason, what});
      };
      if (!rule) {
        skip("op type has no quantized form in quantize-static",
             n.domain.empty() ? n.op_type : n.domain + "." + n.op_type);
        continue;
      }
      if (!cfg.op_types.count(n.op_type)) {
        skip("op type not in op_types");
        continue;
      }
      ++sel.considered;
      if (cfg.exclude_op_types.count(n.op_type)) {
        skip("op type listed in exclude_op_types");
        continue;
      }
      if (cfg.exclude_nodes.count(n.name)) {
        skip("listed in exclude_nodes");
        continue;
      }
      if (cfg.plan_float.count(n.name)) {
        skip("left in float by the precision plan");
        continue;
      }
      if (!n.implicit_inputs().empty() || n.inputs.empty() || n.outputs.empty() || n.inputs[0].empty()) {
        skip("node has subgraphs or no input");
        continue;
      }
      if (n.outputs.size() > 1 && std::any_of(n.outputs.begin() + 1, n.outputs.end(),
                                              [](const std::string& s) { return !s.empty(); })) {
        skip("node has more than one output", "'" + n.outputs[1] + "'");
        continue;
      }
      if (n.op_type == "Resize") {
        const Attribute* mode = n.attr("mode");
        if (mode && mode->s != "nearest") {
          skip("Resize is not nearest (it computes new values)", "mode '" + mode->s + "'");
          continue;
        }
      }
      Plan p;
      p.node = i;
      p.rule = rule;
      std::string why, detail;
      const std::string& out = n.outputs[0];
      if (g.is_input(out)) why = "output is also a graph input", detail = "'" + out + "'";
      // Activation slots.
      std::vector<size_t> slots;
      switch (rule->role) {
        case Role::Compute: {
          slots.push_back(0);
          const std::string& w = n.inputs.size() > 1 ? n.inputs[1] : std::string();
          if (w.empty()) {
            why = "no weight input";
            break;
          }
          if (!is_const(w)) {
            if (n.op_type == "MatMul" || n.op_type == "Gemm") {
              slots.push_back(1);  // both operands are activations
              break;
            }
            why = "weight is not a constant", detail = "'" + w + "'";
            break;
          }
          const Tensor* wt = work.tensor(w);
          if (wt->type != ElemType::F32) {
            why = std::string("weight is ") + name_of(wt->type) + ", not f32 (convert the model to f32)";
            detail = "'" + w + "'";
            break;
          }
          const int64_t rank = static_cast<int64_t>(wt->shape.size());
          if (n.op_type != "MatMul" && rank < 2) {
            why = "weight has rank < 2", detail = "'" + w + "' has shape " + shape_str(wt->shape);
            break;
          }
          p.weight = 1;
          if (cfg.per_channel && rank >= 2 && !cfg.per_channel_ops.count(n.op_type)) {
            ++per_tensor_by_op[n.op_type];
          } else if (cfg.per_channel && rank >= 2) {
            if (rule->axis == kLastAxis) {
              p.axis = rank - 1;
            } else if (rule->axis == kGemmAxis) {
              const Attribute* tb = n.attr("transB");
              p.axis = tb && tb->i != 0 ? 0 : 1;
            } else {
              p.axis = rule->axis;
            }
          }
          // Bias: a 1-D f32 constant with one value per output channel.
          if (rule->bias >= 0 && n.inputs.size() > static_cast<size_t>(rule->bias) &&
              !n.inputs[rule->bias].empty()) {
            const std::string& b = n.inputs[rule->bias];
            const Tensor* bt = is_f32_const(b) ? work.tensor(b) : nullptr;
            bool ok = bt && bt->shape.size() == 1;
            if (ok && n.op_type == "Gemm") {
              const Attribute* beta = n.attr("beta");
              ok = !beta || beta->f == 1.0f;
              const int64_t N = p.axis >= 0 ? wt->shape[p.axis]
                                            : wt->shape[(n.attr("transB") && n.attr("transB")->i) ? 0 : 1];
              ok = ok && bt->shape[0] == N;
            }
            if (ok && n.op_type == "Conv") ok = bt->shape[0] == wt->shape[0];
            if (ok && n.op_type == "ConvTranspose") ok = bt->shape[0] % wt->shape[1] == 0;
            if (ok) p.bias = rule->bias;  // otherwise the bias stays in float
          }
          break;
        }
        case Role::Binary:
          if (n.inputs.size() != 2 || n.inputs[1].empty()) why = "needs 2 inputs";
          slots = {0, 1};
          break;
        case Role::Concat:
          for (size_t k = 0; k < n.inputs.size(); ++k) slots.push_back(k);
          break;
        case Role::Move:
        case Role::Own:
        case Role::Fixed: slots.push_back(0); break;
      }
      for (size_t k : slots) {
        if (!why.empty()) break;
        const std::string& v = n.inputs[k];
        if (v.empty()) {
          why = "an input is omitted";
        } else if (is_const(v)) {
          if (!is_f32_const(v)) why = "a constant input is not f32", detail = "'" + v + "'";
          if (rule->role == Role::Move) why = "input is a constant", detail = "'" + v + "'";
        } else if (!table.find(v)) {
          why = "no calibrated range for an input (not a float activation the calibrate step saw)";
          detail = "'" + v + "'";
        } else if (rule->role == Role::Move && !qvals.count(v)) {
          why = "input is not quantized (a data-movement op is quantized after a quantized op)";
          detail = "'" + v + "'";
        } else if (g.is_input(v) && g.is_output(v)) {
          why = "input is both a graph input and a graph output", detail = "'" + v + "'";
        }
      }
      const auto fixed_cfg = cfg.fixed_outputs.find(n.op_type);
      const bool fixed_out = rule->role == Role::Fixed || fixed_cfg != cfg.fixed_outputs.end();
      if (why.empty() && !fixed_out && !table.find(out))
        why = "no calibrated range for the output (not a float activation the calibrate step saw)",
        detail = "'" + out + "'";
      if (!why.empty()) {
        skip(why, detail);
        continue;
      }
      // Accepted.
      for (size_t k : slots) {
        const std::string& v = n.inputs[k];
        if (is_const(v)) {
          const_acts.insert(v);
          ranges[v] = const_range(v);
        } else {
          qvals.insert(v);
          ranges[v] = *table.find(v);
        }
        p.acts.push_back(k);
      }
      qvals.insert(out);
      if (fixed_out) {
        // The runtime's fixed range (profile fixed_outputs) wins over the op's own.
        const std::pair<float, float> fr = fixed_cfg != cfg.fixed_outputs.end()
                                               ? fixed_cfg->second
                                               : std::make_pair(rule->fixed_min, rule->fixed_max);
        ranges[out] = quant::Range{fr.first, fr.second};
        fixed[out] = fr;
        if (fixed_cfg != cfg.fixed_outputs.end()) ++fixed_by_op[n.op_type];
      } else {
        ranges[out] = *table.find(out);
      }
      const bool shares = rule->role == Role::Move || rule->role == Role::Concat;
      if (shares || cfg.shared_scale_ops.count(n.op_type))
        for (size_t k : slots) groups.join(out, n.inputs[k]);
      if (!shares && cfg.shared_scale_ops.count(n.op_type)) ++shared_by_op[n.op_type];
      plans.push_back(std::move(p));
    }

    // Relu and Clip right after a quantized Conv, Gemm, MatMul, Add or Mul
    // (their only reader): the producer's output is not quantized, only the
    // activation's, as ONNX Runtime's QDQ quantizer folds them.
    if (cfg.fold_relu) {
      std::set<size_t> planned;
      for (const Plan& p : plans) planned.insert(p.node);
      const ValueUses uses(g);
      for (const Plan& p : plans) {
        if (p.rule->role != Role::Own) continue;
        const std::string op = g.nodes[p.node].op_type;
        if (op != "Relu" && op != "Clip") continue;
        const std::string& v = g.nodes[p.node].inputs[0];
        const int prod = uses.producer_of(v);
        if (prod < 0 || !planned.count(static_cast<size_t>(prod))) continue;
        const Role r = rule_of(g.nodes[static_cast<size_t>(prod)].op_type)->role;
        if ((r != Role::Compute && r != Role::Binary) || uses.consumers_of(v).size() != 1 || g.is_output(v))
          continue;
        qvals.erase(v);
        ranges.erase(v);
      }
    }

    if (cfg.bias_correction && !plans.empty()) {
      std::vector<accuracy::BiasTarget> targets;
      for (const Plan& p : plans)
        if (p.weight >= 0) targets.push_back({p.node, p.axis, p.bias});
      const std::vector<std::string> changed =
          accuracy::correct_biases(work, targets, scheme, table, replaced, res);
      size_t t = 0;
      for (Plan& p : plans)
        if (p.weight >= 0) p.bias = targets[t++].bias;  // a Conv or Gemm may have got one
      for (const std::string& c : changed)
        if (ranges.count(c)) ranges[c] = const_range(c);
    }

    if (quantized_)
      for (const Plan& p : plans) quantized_->emplace_back(g.nodes[p.node].name, g.nodes[p.node].op_type);

    quant::RewriteStats stats;
    if (plans.empty()) {
      quant::commit_rewrite(model, work, replaced, sel, stats, normalized, res);
      return;
    }

    // ---------------------------------------------------------------- 2. parameters
    // A fixed range wins over the group's union (Softmax's [0, 1] stays
    // [0, 1] after a Reshape).
    std::map<std::string, quant::Range> group_range;
    std::map<std::string, bool> group_fixed;
    for (const auto& [v, r] : ranges) {
      const std::string root = groups.find(v);
      if (fixed.count(v)) {
        group_range[root] = r;
        group_fixed[root] = true;
        continue;
      }
      if (group_fixed[root]) continue;
      auto it = group_range.find(root);
      if (it == group_range.end()) {
        group_range[root] = r;
      } else {
        it->second.min = std::min(it->second.min, r.min);
        it->second.max = std::max(it->second.max, r.max);
      }
    }
    // Mixed precision (a plan's "int16" nodes): every activation such a node
    // reads or writes takes the wide type, and with it every value sharing
    // its scale (a Concat's or a data-movement op's group). A value between
    // an 8-bit and a 16-bit node is 16-bit for both: its one
    // QuantizeLinear -> DequantizeLinear pair is the wider, and the 8-bit
    // reader reads the same float DequantizeLinear output, so no
    // requantization is needed between the regions.
    std::set<std::string> wide_roots;
    if (!cfg.plan_wide.empty())
      for (const Plan& p : plans) {
        const Node& n = g.nodes[p.node];
        if (!cfg.plan_wide.count(n.name)) continue;
        for (size_t k : p.acts) wide_roots.insert(groups.find(n.inputs[k]));
        if (ranges.count(n.outputs[0])) wide_roots.insert(groups.find(n.outputs[0]));
      }
    auto type_of = [&](const std::string& v) {
      return wide_roots.count(groups.find(v)) ? cfg.wide_type : cfg.act_type;
    };
    const quant::QRange ar8 = quant::qrange(cfg.act_type, cfg.act_symmetric, false);
    const quant::QRange ar16 = quant::qrange(cfg.wide_type, cfg.act_symmetric, false);
    auto qrange_of = [&](const std::string& v) { return type_of(v) == cfg.act_type ? ar8 : ar16; };
    auto params_of = [&](const std::string& v) {
      const quant::Range& r = group_range.at(groups.find(v));
      const quant::ScaleZp s = quant::compute_scale_zp(static_cast<float>(r.min), static_cast<float>(r.max),
                                                       qrange_of(v), cfg.act_symmetric);
      return Params{s.scale, s.zero_point};
    };
    size_t wide_values = 0;
    for (const auto& [v, r] : ranges)
      if (qvals.count(v) && wide_roots.count(groups.find(v))) ++wide_values;

    // ---------------------------------------------------------------- opsets
    bool any_per_channel = false;
    for (const Plan& p : plans) any_per_channel |= p.axis >= 0;
    const bool wide = cfg.act_type == ElemType::U16 || cfg.act_type == ElemType::I16 ||
                      cfg.weight_type == ElemType::I4 || cfg.weight_type == ElemType::U4 ||
                      !wide_roots.empty();
    const std::string qdomain = cfg.ms_domain ? "com.microsoft" : "";
    if (cfg.ms_domain) {
      quant::ensure_opset(g, "com.microsoft", 1);
    } else {
      const int64_t want = wide ? 21 : any_per_channel ? 13 : 10;
      const std::string why = wide              ? "QuantizeLinear/DequantizeLinear of 16- and 4-bit types"
                              : any_per_channel ? "per-channel DequantizeLinear (axis)"
                                                : "QuantizeLinear/DequantizeLinear";
      try {
        quant::raise_default_opset_noted(g, want, kPass, why, res.notes);
      } catch (const Error& e) {
        if (wide)
          throw Error(std::string(e.what()) +
                      "; ONNX's version converter qforge is built with stops at opset " +
                      std::to_string(max_upgrade_opset()) +
                      ": set qdq_domain = \"com.microsoft\" to keep the model's opset");
        throw Error(std::string(e.what()) +
                    (cfg.upgrade_opset ? std::string()
                                       : "; set upgrade_opset = true (the default) or add an `upgrade-opset` "
                                         "step before quantize-static to convert the model") +
                    "; or set qdq_domain = \"com.microsoft\" to keep the model's opset");
      }
      quant::ensure_ir_version(g, wide ? 10 : any_per_channel ? 7 : 5);
    }
    if (cfg.weight_type == ElemType::I4 || cfg.weight_type == ElemType::U4 || wide)
      quant::ensure_ir_version(g, 10);

    // ---------------------------------------------------------------- 3. rebuild
    NameAllocator names(work);
    std::vector<Tensor> new_tensors;
    auto add_tensor = [&](const std::string& name, std::vector<int64_t> shape, ElemType t,
                          std::vector<uint8_t> bytes) {
      stats.bytes_after += bytes.size();
      new_tensors.push_back(quant::make_tensor(name, std::move(shape), t, std::move(bytes)));
    };
    auto dq_node = [&](const std::string& base, const std::string& q, const std::string& s,
                       const std::string& z, const std::string& outname, int64_t axis) {
      Node dq = make_node(names.fresh(base + "_DequantizeLinear"), "DequantizeLinear", {q, s, z}, {outname});
      dq.domain = qdomain;
      if (axis >= 0) dq.attributes.push_back(Attribute::of_int("axis", axis));
      return dq;
    };

    // Weights (one quantized copy per weight and axis) and their scales.
    struct QWeight {
      std::string dq_out;
      std::vector<float> scales;  // one per channel (one when per tensor)
      int64_t channels = 1;
    };
    std::map<std::pair<std::string, int64_t>, QWeight> qweights;
    std::map<std::string, std::string> qconsts;  // constant activation -> its DequantizeLinear output
    std::vector<Node> out;
    out.reserve(g.nodes.size() * 3);

    auto quantize_weight = [&](const std::string& w, int64_t axis, std::vector<Node>& pre) -> QWeight& {
      auto key = std::make_pair(w, axis);
      auto it = qweights.find(key);
      if (it != qweights.end()) return it->second;
      const Tensor& t = *work.tensor(w);
      const std::vector<float> v = quant::read_f32(t);
      // Round to nearest, after the clip search of weight_clip (accuracy.h).
      const accuracy::QuantizedWeight qv = accuracy::quantize_weight(v, t.shape, axis, scheme);
      const int64_t C = qv.channels;
      QWeight q;
      q.channels = C;
      std::vector<int32_t> zps(C);
      for (int64_t c = 0; c < C; ++c) {
        q.scales.push_back(qv.params[static_cast<size_t>(c)].scale);
        zps[c] = qv.params[static_cast<size_t>(c)].zero_point;
      }
      const std::vector<int32_t>& codes = qv.codes;
      const std::vector<int64_t> pshape = axis >= 0 ? std::vector<int64_t>{C} : std::vector<int64_t>{};
      const std::string qn = names.fresh(w + "_quantized"), sn = names.fresh(w + "_scale"),
                        zn = names.fresh(w + "_zero_point");
      stats.bytes_before += quant::stored_bytes(t);
      add_tensor(qn, t.shape, cfg.weight_type, encode(codes, cfg.weight_type));
      add_tensor(sn, pshape, ElemType::F32, quant::float_bytes(q.scales, ElemType::F32));
      add_tensor(zn, pshape, cfg.weight_type, encode(zps, cfg.weight_type));
      q.dq_out = names.fresh(w + "_DequantizeLinear_Output");
      pre.push_back(dq_node(w, qn, sn, zn, q.dq_out, axis));
      replaced.push_back(w);
      ++stats.quantized_weights;
      return qweights.emplace(key, std::move(q)).first->second;
    };

    auto quantize_bias = [&](const std::string& b, float in_scale, const QWeight& qw, int64_t axis,
                             std::vector<Node>& pre) {
      const Tensor& t = *work.tensor(b);
      const std::vector<float> v = quant::read_f32(t);
      std::vector<float> scales(axis >= 0 ? v.size() : 1);
      for (size_t c = 0; c < scales.size(); ++c) {
        scales[c] = in_scale * qw.scales[qw.channels == 1 ? 0 : c % static_cast<size_t>(qw.channels)];
        if (scales[c] == 0) scales[c] = 1;
      }
      std::vector<int32_t> codes(v.size());
      for (size_t c = 0; c < v.size(); ++c) {
        const double q = quant::round_to_int(v[c] / scales[axis >= 0 ? c : 0], quant::Rounding::HalfEven);
        codes[c] = static_cast<int32_t>(std::max<double>(std::min<double>(q, 2147483647.0), -2147483648.0));
      }
      const std::vector<int64_t> pshape =
          axis >= 0 ? std::vector<int64_t>{static_cast<int64_t>(v.size())} : std::vector<int64_t>{};
      const std::string qn = names.fresh(b + "_quantized"), sn = names.fresh(b + "_quantized_scale"),
                        zn = names.fresh(b + "_quantized_zero_point");
      stats.bytes_before += quant::stored_bytes(t);
      add_tensor(qn, t.shape, ElemType::I32, encode(codes, ElemType::I32));
      add_tensor(sn, pshape, ElemType::F32, quant::float_bytes(scales, ElemType::F32));
      add_tensor(zn, pshape, ElemType::I32, encode(std::vector<int32_t>(scales.size(), 0), ElemType::I32));
      const std::string dq_out = names.fresh(b + "_DequantizeLinear_Output");
      pre.push_back(dq_node(b, qn, sn, zn, dq_out, axis >= 0 ? 0 : -1));
      replaced.push_back(b);
      return dq_out;
    };

    // Scale and zero point initializers of an activation value.
    auto act_params = [&](const std::string& v) {
      const Params p = params_of(v);
      const std::string sn = names.fresh(v + "_scale"), zn = names.fresh(v + "_zero_point");
      add_tensor(sn, {}, ElemType::F32, quant::float_bytes({p.scale}, ElemType::F32));
      add_tensor(zn, {}, type_of(v), encode({p.zp}, type_of(v)));
      return std::make_pair(sn, zn);
    };
    auto quantize_const = [&](const std::string& v, std::vector<Node>& pre) {
      auto it = qconsts.find(v);
      if (it != qconsts.end()) return it->second;
      const Tensor& t = *work.tensor(v);
      const Params p = params_of(v);
      const quant::ScaleZp s{p.scale, p.zp};
      std::vector<int32_t> codes;
      for (float x : quant::read_f32(t)) codes.push_back(quant::quantize_value(x, s, qrange_of(v)));
      const std::string qn = names.fresh(v + "_quantized");
      stats.bytes_before += quant::stored_bytes(t);
      add_tensor(qn, t.shape, type_of(v), encode(codes, type_of(v)));
      const auto [sn, zn] = act_params(v);
      const std::string dq_out = names.fresh(v + "_DequantizeLinear_Output");
      pre.push_back(dq_node(v, qn, sn, zn, dq_out, -1));
      replaced.push_back(v);
      return qconsts[v] = dq_out;
    };

    // Q -> DQ of an activation, after its producer (or at the start for a
    // graph input). A graph output keeps its name on the DequantizeLinear;
    // its producer writes a renamed value.
    std::map<std::string, std::string> remap;        // activation -> DQ output its readers read
    std::map<std::string, std::string> unquantized;  // DQ output -> the float value its Q reads
    std::set<size_t> q_nodes;                        // indices in `out` of QuantizeLinear nodes
    std::set<size_t> quantized_at;                   // indices in `out` of the quantized nodes
    size_t pairs = 0;
    auto emit_pair = [&](const std::string& v, Node* producer) {
      const auto [sn, zn] = act_params(v);
      std::string src = v;
      std::string dq_out;
      if (g.is_output(v) && producer) {
        src = names.fresh(v + "_QuantizeLinear_Input");
        for (std::string& o : producer->outputs)
          if (o == v) o = src;
        dq_out = v;
      } else {
        dq_out = names.fresh(v + "_DequantizeLinear_Output");
        remap[v] = dq_out;
      }
      const std::string q_out = names.fresh(v + "_QuantizeLinear_Output");
      Node q = make_node(names.fresh(v + "_QuantizeLinear"), "QuantizeLinear", {src, sn, zn}, {q_out});
      q.domain = qdomain;
      q_nodes.insert(out.size());
      out.push_back(std::move(q));
      out.push_back(dq_node(v, q_out, sn, zn, dq_out, -1));
      unquantized[dq_out] = src;
      ++pairs;
    };

    for (const ValueInfo& in : g.inputs)
      if (qvals.count(in.name)) emit_pair(in.name, nullptr);
    std::map<size_t, const Plan*> plan_of;
    for (const Plan& p : plans) plan_of[p.node] = &p;
    ctx.progress.begin(kPass, g.nodes.size(), "nodes");
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      Node n = std::move(g.nodes[i]);
      auto pit = plan_of.find(i);
      if (pit != plan_of.end()) {
        const Plan& p = *pit->second;
        std::vector<Node> pre;
        try {
          for (size_t k : p.acts)
            if (const_acts.count(n.inputs[k])) n.inputs[k] = quantize_const(n.inputs[k], pre);
          if (p.weight >= 0) {
            const std::string w = n.inputs[p.weight];
            QWeight& qw = quantize_weight(w, p.axis, pre);
            n.inputs[p.weight] = qw.dq_out;
            if (p.bias >= 0)
              n.inputs[p.bias] =
                  quantize_bias(n.inputs[p.bias], params_of(n.inputs[0]).scale, qw, p.axis, pre);
          }
        } catch (const Error& e) {
          throw Error(quant::node_label(n, i) + ": " + e.what());
        }
        for (Node& d : pre) out.push_back(std::move(d));
      }
      out.push_back(std::move(n));
      const size_t at = out.size() - 1;
      if (pit != plan_of.end()) quantized_at.insert(at);
      const std::vector<std::string> outs = out[at].outputs;
      for (const std::string& v : outs)
        if (!v.empty() && qvals.count(v)) emit_pair(v, &out[at]);
      ctx.progress.advance(1);
    }
    ctx.progress.end();
    for (size_t i = 0; i < out.size(); ++i) {
      if (q_nodes.count(i)) continue;
      for (std::string& in : out[i].inputs) {
        auto it = remap.find(in);
        if (it != remap.end()) in = it->second;
      }
    }
    // A Conv, ConvTranspose or Gemm left in float reads its input before the
    // Q/DQ pair: ONNX Runtime rewrites DequantizeLinear -> such a node with
    // float weights -> QuantizeLinear by quantizing the weights to per-tensor
    // int8 (its WeightBiasQuantization, at every optimization level but
    // none), which a node left in float must not get (docs/manifest.md,
    // "Precision plans"). A pair that nothing reads any more is removed.
    const size_t float_readers =
        read_float_before_pairs(out, quantized_at, q_nodes, unquantized, g, pairs, replaced);
    g.nodes = std::move(out);
    for (Tensor& t : new_tensors) work.tensors.push_back(std::move(t));
    QOperatorReport qop;
    if (cfg.qoperator) qop = qdq_to_qoperator(work, quantized_at);

    stats.quantized_nodes = plans.size();

    quant::commit_rewrite(model, work, replaced, sel, stats, normalized, res);
    res.metrics["qdq_pairs"] = static_cast<double>(pairs);
    auto by_op = [](const std::map<std::string, size_t>& m) {
      std::string s;
      for (const auto& [op, k] : m) s += (s.empty() ? "" : ", ") + std::to_string(k) + " " + op;
      return s;
    };
    if (!per_tensor_by_op.empty())
      res.notes.push_back("quantize-static: per-tensor weight scales for " + by_op(per_tensor_by_op) +
                          " (not in per_channel_ops)");
    if (!shared_by_op.empty())
      res.notes.push_back("quantize-static: inputs and output share one scale for " + by_op(shared_by_op) +
                          " (shared_scale_ops)");
    if (!fixed_by_op.empty())
      res.notes.push_back("quantize-static: fixed output ranges for " + by_op(fixed_by_op) +
                          " (fixed_outputs)");
    if (float_readers) {
      res.metrics["float_reads_unquantized"] = static_cast<double>(float_readers);
      res.notes.push_back(
          "quantize-static: " + std::to_string(float_readers) +
          " Conv/ConvTranspose/Gemm node(s) left in float read their input before its "
          "QuantizeLinear/DequantizeLinear pair (so ONNX Runtime does not quantize their float "
          "weights per tensor)");
    }
    if (wide_values) {
      res.metrics["wide_activations"] = static_cast<double>(wide_values);
      res.notes.push_back("quantize-static: " + std::to_string(wide_values) + " activation(s) in " +
                          type_name_of(cfg.wide_type) + " for the precision plan's 16-bit nodes (a value " +
                          "shared with an 8-bit node takes the wider type)");
    }
    if (folded_bn) {
      res.metrics["folded_batchnorm"] = static_cast<double>(folded_bn);
      res.notes.push_back("quantize-static: folded " + std::to_string(folded_bn) +
                          " BatchNormalization node(s) into the Conv before them");
    }
    const std::string types = std::string(name_of(cfg.act_type)) + " activations, " +
                              name_of(cfg.weight_type) + " weights " +
                              (any_per_channel ? "per channel" : "per tensor");
    if (!cfg.qoperator) {
      res.notes.push_back("quantize-static: " + std::to_string(plans.size()) + " nodes quantized, " +
                          std::to_string(pairs) + " activations with QuantizeLinear/DequantizeLinear (" +
                          types + "), from " + table.method + " ranges over " +
                          std::to_string(table.samples) + " samples");
      return;
    }
    std::string ops;
    size_t qlinear = 0;
    for (const auto& [op, n] : qop.emitted) {
      ops += (ops.empty() ? "" : ", ") + std::to_string(n) + " " + op;
      qlinear += n;
    }
    res.metrics["qlinear_nodes"] = static_cast<double>(qlinear);
    res.metrics["direct_8bit_nodes"] = static_cast<double>(qop.direct);
    res.metrics["float_between_qdq"] = static_cast<double>(qop.kept_float.size());
    res.metrics["qdq_nodes_removed"] = static_cast<double>(qop.removed_qdq);
    res.notes.push_back(
        "quantize-static: QOperator form (" + types + ", from " + table.method + " ranges over " +
        std::to_string(table.samples) + " samples): " + (ops.empty() ? "no QLinear op" : ops) + "; " +
        std::to_string(qop.direct) + " data-movement op(s) on 8-bit values, " + std::to_string(qop.folded) +
        " Relu/Clip folded into the op before them, " + std::to_string(qop.kept_float.size()) +
        " node(s) left in float between DequantizeLinear and QuantizeLinear");
    for (Skipped& s : qop.kept_float) res.skipped.push_back(std::move(s));
  }

 private:
  // Per-channel scales need opset 13: below it, the model is converted first
  // by ONNX's version converter, as an `upgrade-opset` step would.
  static void upgrade_for_per_channel(const Config& cfg, Model& work, PassResult& res) {
    if (!cfg.per_channel || cfg.ms_domain) return;
    const int64_t from = work.graph->opset("");
    if (from < 1 || from >= 13) return;
    bool weights = false;
    for (const Node& n : work.graph->nodes) {
      const OpRule* r = (n.domain.empty() || n.domain == "ai.onnx") ? rule_of(n.op_type) : nullptr;
      weights |= r && r->role == Role::Compute && cfg.op_types.count(n.op_type) > 0;
    }
    if (!weights) return;
    OpsetUpgrade up;
    try {
      up = upgrade_model_opset(work, 13);
    } catch (const Error& e) {
      throw Error("per-channel scales need opset 13 and converting the model from opset " +
                  std::to_string(from) + " failed: " + e.what() +
                  "; set qdq_domain = \"com.microsoft\" to keep the model's opset, or per_channel = false");
    }
    work = std::move(up.model);
    res.metrics["opset_upgraded_from"] = static_cast<double>(from);
    res.notes.push_back("quantize-static: upgraded opset " + std::to_string(from) + " -> " +
                        std::to_string(up.to) +
                        " for per-channel scales (ONNX's version converter, as an upgrade-opset step; "
                        "upgrade_opset = false turns this off)");
  }
};

}  // namespace

PassInfo quantize_static_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "static quantization of ONNX models in QDQ form from calibrated activation ranges, as ONNX Runtime's "
      "QDQ quantizer writes it (Conv, ConvTranspose, Gemm, MatMul, Add, Mul, Concat, pooling and "
      "data-movement ops)";
  // 2: qoperator, implicit upgrade-opset; 3: equalize, bias_correction, weight_clip;
  // 4: equalize by default only for per-tensor weights; 5: precision plans;
  // 6: per_channel_ops, shared_scale_ops, fixed_outputs; 7: float Conv,
  // ConvTranspose and Gemm read their input before its Q/DQ pair.
  info.version = 7;
  info.needs_graph = true;
  info.inputs = {{ArtifactKind::Table, quant::kRangesSchema, false, "activation ranges from calibrate"},
                 {ArtifactKind::Table, "precision/1", true,
                  "an ONNX precision plan from select-precision: its float nodes are left alone, its int16 "
                  "nodes get 16-bit activations"}};
  using quant::option_spec;
  const std::vector<std::string> ops = all_ops(false);
  info.options = {
      option_spec("activation_type", OptType::Enum, "activation codes", Value::of_string("uint8"),
                  {"uint8", "int8", "uint16", "int16"}),
      option_spec("weight_type", OptType::Enum, "weight codes", Value::of_string("int8"),
                  {"int8", "uint8", "int4", "uint4"}),
      option_spec("per_channel", OptType::Bool,
                  "one weight scale per output channel (Conv axis 0, ConvTranspose 1, Gemm transB ? 0 : 1, "
                  "MatMul the last axis); needs opset 13",
                  Value::of_bool(false)),
      option_spec("activation_symmetric", OptType::Bool, "activation ranges symmetric about 0",
                  Value::of_bool(false)),
      option_spec("weight_symmetric", OptType::Bool,
                  "symmetric weights (default: true for int8 and int4, false for uint8 and uint4)"),
      option_spec("reduce_range", OptType::Bool, "7-bit weight range (for CPUs without VNNI)",
                  Value::of_bool(false)),
      option_spec("format", OptType::Enum,
                  "qdq: QuantizeLinear/DequantizeLinear around float ops; qoperator: ONNX Runtime's QLinear "
                  "ops (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearMul, QLinearConcat, "
                  "QLinearAveragePool, QLinearGlobalAveragePool, QLinearSigmoid), data-movement ops on the "
                  "8-bit values, Q/DQ only where float begins or ends (8-bit types only)",
                  Value::of_string("qdq"), {"qdq", "qoperator"}),
      option_spec("op_types", OptType::List,
                  "op types to quantize (default: all but Sigmoid, Softmax and Tanh, which get fixed output "
                  "ranges when listed)",
                  quant::string_list(all_ops(true)), ops),
      option_spec("exclude_op_types", OptType::List, "op types to leave in float", {}, ops),
      option_spec("exclude_nodes", OptType::List, "node names to leave in float"),
      option_spec(
          "fold_batchnorm", OptType::Bool,
          "fold BatchNormalization into the Conv before it first (as ONNX Runtime's pre-processing does)",
          Value::of_bool(true)),
      option_spec("per_channel_ops", OptType::List,
                  "with per_channel: the op types whose weights get per-channel scales; the others' are per "
                  "tensor (default: every op with a weight; a profile's per_channel_ops)",
                  quant::string_list(ops_with({Role::Compute})), ops_with({Role::Compute})),
      option_spec("shared_scale_ops", OptType::List,
                  "op types whose quantized inputs and output share one scale and zero point (the union of "
                  "their ranges), as some runtimes require (Concat and data-movement ops always do; default: "
                  "a profile's shared_scale_ops)",
                  {}, ops_with({Role::Binary, Role::Own, Role::Concat, Role::Move})),
      option_spec("fixed_outputs", OptType::List,
                  "\"OP=MIN:MAX\": the output range of OP when quantized, instead of the calibrated one "
                  "(default: a profile's fixed_outputs; Sigmoid 0:1, Softmax 0:1 and Tanh -1:1 otherwise)"),
      option_spec("fold_relu", OptType::Bool,
                  "Relu/Clip right after a quantized op: quantize only the activation's output",
                  Value::of_bool(true)),
      option_spec(
          "equalize", OptType::Bool,
          "cross-layer equalization of Conv -> [Relu] -> Conv pairs first (as the equalize pass does; "
          "ranges rescaled from the table's per-channel statistics) (default: true with per-tensor weights, "
          "false with per_channel)",
          Value()),
      option_spec("bias_correction", OptType::Bool,
                  "biases of Conv, Gemm and MatMul + Add absorb the mean output shift of weight quantization "
                  "(from the table's per-channel means); a Conv or Gemm without a bias gets one",
                  Value::of_bool(false)),
      option_spec("weight_clip", OptType::Enum,
                  "minmax: each weight channel's full range; mse: per channel, the clip ratio (1 to 0.5) "
                  "with the least squared weight error",
                  Value::of_string("minmax"), {"minmax", "mse"}),
      option_spec("qdq_domain", OptType::Enum,
                  "ai.onnx: standard Q/DQ (opset raised to 13 for per-channel, 21 for 16- and 4-bit types); "
                  "com.microsoft: ONNX Runtime's Q/DQ at the model's opset",
                  Value::of_string("ai.onnx"), {"ai.onnx", "com.microsoft"}),
      option_spec("upgrade_opset", OptType::Bool,
                  "per-channel scales below opset 13: convert the model to opset 13 with ONNX's version "
                  "converter first, as an upgrade-opset step would (false: raise the opset only when no op "
                  "changes form, else refuse)",
                  Value::of_bool(true)),
  };
  for (auto& o : info.options)
    o.unordered = o.name == "op_types" || o.name == "exclude_op_types" || o.name == "exclude_nodes" ||
                  o.name == "per_channel_ops" || o.name == "shared_scale_ops" || o.name == "fixed_outputs";
  info.validate = quant::validate_hook(check_options);
  info.factory = [] { return std::unique_ptr<Pass>(new QuantizeStaticPass()); };
  return info;
}

StaticQuantization quantize_static(const Model& model, const Options& options,
                                   std::shared_ptr<const Table> ranges, std::shared_ptr<const Table> plan,
                                   Progress& progress, int threads) {
  StaticQuantization out;
  out.model = model;
  PassContext ctx{options, nullptr, "", "", threads, progress, {}, nullptr, {ranges, plan}, nullptr};
  QuantizeStaticPass pass(&out.quantized);
  out.result = pass.run(out.model, ctx);
  if (!out.result.status.ok) throw Error(out.result.status.message);
  return out;
}

bool quantize_static_moves_values(const std::string& op) {
  const OpRule* r = rule_of(op);
  return r && r->role == Role::Move;
}

}  // namespace qforge::passes
