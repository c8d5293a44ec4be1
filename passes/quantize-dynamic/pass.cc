// quantize-dynamic: see quantize_dynamic.h.
//
// The shared weight-rewrite skeleton (passes/common/weight_rewrite.h) with
// MatMulInteger in place of each accepted MatMul.
#include "quantize_dynamic.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "onnx_quant_util.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "quantize-dynamic";

struct Config {
  ElemType weight_type = ElemType::I8;
  bool per_channel = false;
  bool symmetric = true;
  bool reduce_range = false;
  std::vector<std::string> op_types;
  std::set<std::string> exclude;
};

Config parse_config(const Options& o) {
  using namespace quant;
  Config c;
  const std::string wt = opt_string(o, kPass, "weight_type", "int8");
  if (wt == "int8") {
    c.weight_type = ElemType::I8;
  } else if (wt == "uint8") {
    c.weight_type = ElemType::U8;
  } else {
    throw Error(opt_where(o, "weight_type") + "option 'weight_type' must be 'int8' or 'uint8', found '" + wt +
                "'");
  }
  c.per_channel = opt_bool(o, kPass, "per_channel", false);
  // ORT: signed weight types are symmetric unless told otherwise.
  c.symmetric = opt_bool(o, kPass, "symmetric", c.weight_type == ElemType::I8);
  c.reduce_range = opt_bool(o, kPass, "reduce_range", false);
  c.op_types = opt_list(o, kPass, "op_types", {"MatMul"});
  if (c.op_types.empty())
    throw Error(opt_where(o, "op_types") + "option 'op_types' is empty; nothing to quantize");
  for (const std::string& op : c.op_types)
    if (op != "MatMul")
      throw Error(opt_where(o, "op_types") + "op type '" + op +
                  "' in option 'op_types' is not implemented; "
                  "quantize-dynamic rewrites MatMul only (MatMulInteger with DynamicQuantizeLinear)");
  for (const std::string& n : opt_list(o, kPass, "exclude_nodes", {})) c.exclude.insert(n);
  return c;
}

struct QuantWeight {
  std::string weight;
  std::string q, scale, zp;  // initializer names
  std::vector<Tensor> tensors;
};

struct QuantActivation {
  std::string q, scale, zp;
};

class QuantizeDynamicPass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    const Config cfg = parse_config(ctx.options);
    quant::NormalizeStats normalized;
    Model work = quant::begin_weight_rewrite(model, "quantize-dynamic rewrites ONNX graphs", normalized);
    Graph& g = *work.graph;

    // ---------------------------------------------------------------- select
    quant::Selection sel =
        quant::select_candidates(g, cfg.op_types, [&](const Node& n, size_t, quant::Candidate& c) {
          if (cfg.exclude.count(n.name)) return quant::reject("listed in exclude_nodes");
          if (n.inputs.size() != 2 || n.outputs.size() != 1)
            return quant::reject("MatMul must have 2 inputs and 1 output");
          c.weight = n.inputs[1];
          quant::Verdict v = quant::check_weight_is_constant(work, c.weight);
          if (!v.accepted()) return v;
          const Tensor* t = work.tensor(c.weight);
          if (t->type != ElemType::F32)
            return quant::reject(std::string("weight is ") + name_of(t->type) +
                                     "; DynamicQuantizeLinear and MatMulInteger's rescale need f32 "
                                     "(convert the model to f32)",
                                 "'" + c.weight + "'");
          if (t->shape.size() != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
            return quant::reject("weight is not a non-empty 2-D tensor",
                                 "'" + c.weight + "' has shape " + shape_str(t->shape));
          if (const ValueInfo* a = g.find_value_info(n.inputs[0]))
            if (a->type.kind == ValueType::Kind::Tensor && a->type.elem && *a->type.elem != ElemType::F32)
              return quant::reject(std::string("activation is ") + name_of(*a->type.elem) + ", not f32",
                                   "'" + n.inputs[0] + "'");
          return quant::accept();
        });
    quant::note_subgraph_bodies(g, res.notes);
    if (!sel.chosen.empty())
      quant::raise_default_opset_noted(g, 11, kPass, "DynamicQuantizeLinear", res.notes);

    // ---------------------------------------------------------------- quantize, rebuild
    NameAllocator names(work);
    std::map<std::string, QuantActivation> acts;  // one DynamicQuantizeLinear per activation
    auto quantize = [&](const quant::Candidate& c) {
      return quantize_weight(*work.tensor(c.weight), cfg, names);
    };
    auto rewrite = [&](Node n, const quant::Candidate&, QuantWeight& qw, std::vector<Node>& out) {
      const std::string& a = n.inputs[0];
      auto it = acts.find(a);
      if (it == acts.end()) {
        QuantActivation qa;
        qa.q = names.fresh(a + "_quantized");
        qa.scale = names.fresh(a + "_scale");
        qa.zp = names.fresh(a + "_zero_point");
        out.push_back(qforge::make_node(names.fresh(a + "_QuantizeLinear"), "DynamicQuantizeLinear", {a},
                                        {qa.q, qa.scale, qa.zp}));
        it = acts.emplace(a, std::move(qa)).first;
      }
      const QuantActivation& qa = it->second;
      const std::string y = n.outputs[0];
      const std::string base = n.name.empty() ? y : n.name;
      const std::string mm_name = names.fresh(base + "_quant");
      const std::string mm_out = names.fresh(y + "_output_quantized");
      Node mm = qforge::make_node(mm_name, "MatMulInteger", {qa.q, qw.q, qa.zp, qw.zp}, {mm_out});
      mm.doc_string = n.doc_string;
      const std::string cast_out = names.fresh(mm_out + "_cast_output");
      Node cast = qforge::make_node(names.fresh(mm_out + "_cast"), "Cast", {mm_out}, {cast_out});
      cast.attributes.push_back(Attribute::of_int("to", 1));  // FLOAT
      const std::string scales_name = names.fresh(mm_name + "_scales_mul");
      const std::string scales_out = names.fresh(scales_name + ":0");
      Node scales = qforge::make_node(scales_name, "Mul", {qa.scale, qw.scale}, {scales_out});
      Node mul =
          qforge::make_node(names.fresh(mm_name + "_output_scale_mul"), "Mul", {cast_out, scales_out}, {y});
      out.push_back(std::move(scales));  // ORT's order
      out.push_back(std::move(mm));
      out.push_back(std::move(cast));
      out.push_back(std::move(mul));
    };
    quant::RewriteStats stats;
    const std::vector<std::string> replaced =
        quant::quantize_and_rebuild<QuantWeight>(work, sel, ctx.progress, kPass, quantize, rewrite, stats);
    quant::commit_rewrite(model, work, replaced, sel, stats, normalized, res);
    res.metrics["dynamic_quantize_nodes"] = static_cast<double>(acts.size());
  }

  // The bytes of the quantized weight, its scale and zero point.
  static std::vector<std::vector<uint8_t>> weight_bytes(const Tensor& w, const Config& cfg) {
    const std::vector<float> v = quant::read_f32(w);
    const int64_t K = w.shape[0], N = w.shape[1];
    quant::QuantSpec spec;
    spec.type = cfg.weight_type;
    spec.symmetric = cfg.symmetric;
    spec.reduce_range = cfg.reduce_range;
    spec.block_size = 0;
    spec.convention = quant::Convention::QuantUtils;
    // Per tensor: the whole weight as one column.
    quant::QuantizedMatrix m = cfg.per_channel ? quant::quantize_matrix(v.data(), K, N, false, spec)
                                               : quant::quantize_matrix(v.data(), K * N, 1, false, spec);
    std::vector<int32_t> zps = m.zero_points;
    if (zps.empty()) zps.assign(m.scales.size(), 0);  // MatMulInteger gets an explicit zero point
    std::vector<std::vector<uint8_t>> out;
    out.push_back(quant::encode_codes(m.q, cfg.weight_type));
    out.push_back(quant::float_bytes(m.scales, ElemType::F32));
    out.push_back(quant::encode_codes(zps, cfg.weight_type));
    return out;
  }

  static QuantWeight quantize_weight(const Tensor& w, const Config& cfg, NameAllocator& names) {
    quant::check_float_data(w);
    const int64_t N = w.shape[1];
    const std::vector<int64_t> pshape = cfg.per_channel ? std::vector<int64_t>{N} : std::vector<int64_t>{};
    const Tensor src = w;
    auto parts = quant::lazy_parts(3, [src, cfg] { return weight_bytes(src, cfg); });
    QuantWeight q;
    q.weight = w.name;
    q.q = names.fresh(w.name + "_quantized");
    q.scale = names.fresh(w.name + "_scale");
    q.zp = names.fresh(w.name + "_zero_point");
    q.tensors.push_back(quant::make_lazy_tensor(q.q, w.shape, cfg.weight_type, parts[0], kPass));
    q.tensors.push_back(quant::make_lazy_tensor(q.scale, pshape, ElemType::F32, parts[1], kPass));
    q.tensors.push_back(quant::make_lazy_tensor(q.zp, pshape, cfg.weight_type, parts[2], kPass));
    return q;
  }
};

}  // namespace

PassInfo quantize_dynamic_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "dynamic quantization of ONNX MatMul (DynamicQuantizeLinear + MatMulInteger), as ONNX Runtime's "
      "quantize_dynamic does";
  info.version = 2;  // 2: normalises Constant-node and IR < 4 input weights first
  info.needs_graph = true;
  using quant::option_spec;
  info.options = {
      option_spec("weight_type", OptType::Enum, "weight codes: int8 or uint8", Value::of_string("int8"),
                  {"int8", "uint8"}),
      option_spec("per_channel", OptType::Bool, "one scale per output column instead of one per weight",
                  Value::of_bool(false)),
      option_spec("op_types", OptType::List, "op types to quantize (MatMul)", quant::string_list({"MatMul"}),
                  {"MatMul"}),
      option_spec("symmetric", OptType::Bool, "symmetric weights (default: true for int8, false for uint8)"),
      option_spec("reduce_range", OptType::Bool, "7-bit weight range (for CPUs without VNNI)",
                  Value::of_bool(false)),
      option_spec("exclude_nodes", OptType::List, "node names to leave in float"),
  };
  // Sets: their order does not change the output, so it is not part of the key.
  for (auto& o : info.options) o.unordered = o.name == "op_types" || o.name == "exclude_nodes";
  info.factory = [] { return std::unique_ptr<Pass>(new QuantizeDynamicPass()); };
  return info;
}

}  // namespace qforge::passes
