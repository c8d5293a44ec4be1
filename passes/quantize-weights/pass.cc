// quantize-weights: see quantize_weights.h.
//
// The shared weight-rewrite skeleton (passes/common/weight_rewrite.h): select
// MatMul/Gemm nodes with a reason for each one left alone, quantize each
// distinct weight once, rebuild the node list in order, commit. All edits
// happen on a normalised copy of the model that replaces the input only when
// a node was quantized.
#include "quantize_weights.h"

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

constexpr const char* kPass = "quantize-weights";

enum class OutFormat { DQ, MatMulNBits };

struct Config {
  int bits = 4;
  int64_t block_size = 32;
  bool symmetric = true;
  OutFormat format = OutFormat::MatMulNBits;
  std::vector<std::string> op_types;
  std::set<std::string> exclude;
  int64_t min_elements = 0;
  int64_t accuracy_level = -1;  // -1: attribute omitted
};

const std::vector<std::string> kSupportedOps = {"MatMul", "Gemm"};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

// Problems of option combinations that depend only on the options' values:
// the plan-time validate hook reports them before any model is read, and
// parse_config throws the first at run time.
std::vector<OptionProblem> combination_problems(const Options& o) {
  using namespace quant;
  std::vector<OptionProblem> out;
  const std::string fmt = opt_string(o, kPass, "format", "dq");
  const bool nbits = fmt == "matmulnbits";
  if (opt_has(o, "block_size")) {
    const int64_t bs = opt_int(o, kPass, "block_size", 0);
    if (nbits && bs != 16 && bs != 32 && bs != 64 && bs != 128 && bs != 256)
      out.push_back({"block_size",
                     "format 'matmulnbits' needs block_size 16, 32, 64, 128 or 256 "
                     "(ONNX Runtime's MatMulNBits kernel accepts only these), found " +
                         std::to_string(bs) +
                         (bs == 0 ? " (per-channel quantization needs format = 'dq')" : "")});
    if (!nbits && bs == 1)
      out.push_back({"block_size",
                     "option 'block_size' = 1 would store one scale per weight; use 0 "
                     "(per output channel) or at least 2"});
  }
  if (opt_has(o, "accuracy_level") && !nbits)
    out.push_back({"accuracy_level", "option 'accuracy_level' applies to format 'matmulnbits' only"});
  return out;
}

Config parse_config(const Options& o) {
  using namespace quant;
  Config c;
  const int64_t bits = opt_int(o, kPass, "bits", 4);
  if (bits != 4 && bits != 8)
    throw Error(opt_where(o, "bits") + "option 'bits' must be 4 or 8, found " + std::to_string(bits));
  c.bits = static_cast<int>(bits);
  const std::string fmt = opt_string(o, kPass, "format", "dq");
  if (fmt == "dq") {
    c.format = OutFormat::DQ;
  } else if (fmt == "matmulnbits") {
    c.format = OutFormat::MatMulNBits;
  } else {
    throw Error(opt_where(o, "format") + "option 'format' must be 'dq' or 'matmulnbits', found '" + fmt +
                "'");
  }
  c.block_size = opt_int(o, kPass, "block_size", c.format == OutFormat::DQ ? 0 : 32);
  if (c.block_size < 0)
    throw Error(opt_where(o, "block_size") +
                "option 'block_size' must be 0 (per output channel) or a positive "
                "number of elements along K, found " +
                std::to_string(c.block_size));
  if (opt_has(o, "accuracy_level")) {
    c.accuracy_level = opt_int(o, kPass, "accuracy_level", 0);
    if (c.accuracy_level < 0 || c.accuracy_level > 4)
      throw Error(opt_where(o, "accuracy_level") +
                  "option 'accuracy_level' must be 0..4 (MatMulNBits), found " +
                  std::to_string(c.accuracy_level));
  }
  throw_first_problem(o, combination_problems(o));
  c.symmetric = opt_bool(o, kPass, "symmetric", true);
  c.op_types = opt_list(o, kPass, "op_types", {"MatMul"});
  if (c.op_types.empty())
    throw Error(opt_where(o, "op_types") + "option 'op_types' is empty; nothing to quantize");
  for (const std::string& op : c.op_types)
    if (std::find(kSupportedOps.begin(), kSupportedOps.end(), op) == kSupportedOps.end())
      throw Error(opt_where(o, "op_types") + "op type '" + op +
                  "' in option 'op_types' is not supported; "
                  "quantize-weights rewrites " +
                  join(kSupportedOps));
  for (const std::string& n : opt_list(o, kPass, "exclude_nodes", {})) c.exclude.insert(n);
  c.min_elements = opt_int(o, kPass, "min_elements", 0);
  if (c.min_elements < 0)
    throw Error(opt_where(o, "min_elements") + "option 'min_elements' must be >= 0, found " +
                std::to_string(c.min_elements));
  return c;
}

int64_t int_attr(const Node& n, const char* name, int64_t dflt) {
  const Attribute* a = n.attr(name);
  return a ? a->i : dflt;
}
float float_attr(const Node& n, const char* name, float dflt) {
  const Attribute* a = n.attr(name);
  return a ? a->f : dflt;
}

// One quantized weight and what replaces it.
struct Quantized {
  std::string weight;
  bool transposed = false;
  int64_t K = 0, N = 0;
  std::vector<Tensor> tensors;  // new initializers (q/B, scales, zero points)
  std::string dq_output;        // dq: the DequantizeLinear output
  Node dq_node;                 // dq: the node producing it
  bool dq_emitted = false;
};

class QuantizeWeightsPass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    const Config cfg = parse_config(ctx.options);
    // Work on a normalised copy: the caller's model is replaced only on success.
    quant::NormalizeStats normalized;
    Model work = quant::begin_weight_rewrite(
        model, "quantize-weights rewrites ONNX graphs (use quantize-gguf for GGUF)", normalized);
    Graph& g = *work.graph;

    // ---------------------------------------------------------------- select
    quant::Selection sel = quant::select_candidates(
        g, cfg.op_types, [&](const Node& n, size_t, quant::Candidate& c) { return judge(work, n, cfg, c); });
    quant::note_subgraph_bodies(g, res.notes);

    // ---------------------------------------------------------------- opsets
    if (!sel.chosen.empty()) {
      if (cfg.format == OutFormat::DQ) {
        bool half = false;
        for (const quant::Candidate& c : sel.chosen) half |= work.tensor(c.weight)->type == ElemType::F16;
        const bool needs21 = cfg.bits == 4 || cfg.block_size > 0;
        const int64_t want = needs21 ? 21 : half ? 19 : 13;
        const std::string why = needs21 ? (cfg.bits == 4 ? "DequantizeLinear of int4/uint4 weights"
                                                         : "DequantizeLinear with block_size")
                                : half  ? "DequantizeLinear with f16 scales"
                                        : "per-axis DequantizeLinear";
        quant::raise_default_opset_noted(g, want, kPass, why, res.notes);
        quant::ensure_ir_version(g, want >= 21 ? 10 : want >= 19 ? 9 : 7);
      } else {
        quant::ensure_opset(g, "com.microsoft", 1);
      }
    }

    // ---------------------------------------------------------------- quantize, rebuild
    NameAllocator names(work);
    auto quantize = [&](const quant::Candidate& c) {
      const Tensor& w = *work.tensor(c.weight);
      return cfg.format == OutFormat::DQ ? quantize_dq(w, c, g.nodes[c.node], cfg, names)
                                         : quantize_nbits(w, c, cfg, names);
    };
    auto rewrite = [&](Node n, const quant::Candidate&, Quantized& q, std::vector<Node>& out) {
      rewrite_node(std::move(n), q, cfg, names, out);
    };
    quant::RewriteStats stats;
    const std::vector<std::string> replaced =
        quant::quantize_and_rebuild<Quantized>(work, sel, ctx.progress, kPass, quantize, rewrite, stats);
    quant::commit_rewrite(model, work, replaced, sel, stats, normalized, res);
  }

  // Step 1 for one node: accept it (filling `c`) or say why not.
  static quant::Verdict judge(const Model& work, const Node& n, const Config& cfg, quant::Candidate& c) {
    using quant::reject;
    if (cfg.exclude.count(n.name)) return reject("listed in exclude_nodes");
    if (n.inputs.size() < 2 || n.inputs[1].empty()) return reject("it has no B input");
    c.weight = n.inputs[1];
    if (n.op_type == "Gemm") {
      c.transposed = int_attr(n, "transB", 0) != 0;
      if (cfg.format == OutFormat::MatMulNBits) {
        if (int_attr(n, "transA", 0) != 0)
          return reject("Gemm with transA = 1 has no MatMulNBits form (use format = 'dq')");
        if (float_attr(n, "alpha", 1.0f) != 1.0f ||
            (n.inputs.size() > 2 && !n.inputs[2].empty() && float_attr(n, "beta", 1.0f) != 1.0f))
          return reject("Gemm with alpha or beta other than 1 has no MatMulNBits form (use format = 'dq')");
      }
    }
    quant::Verdict v = quant::check_weight_is_constant(work, c.weight);
    if (!v.accepted()) return v;
    const Tensor* w = work.tensor(c.weight);
    const std::string wq = "'" + c.weight + "'";
    if (w->type != ElemType::F32 && w->type != ElemType::F16)
      return reject(std::string("weight is ") + name_of(w->type) + "; only f32 and f16 weights are quantized",
                    wq);
    if (w->shape.size() != 2)
      return reject("weight is not 2-D; only 2-D weights are quantized",
                    wq + " has shape " + shape_str(w->shape));
    if (w->shape[0] <= 0 || w->shape[1] <= 0)
      return reject("weight is empty", wq + " " + shape_str(w->shape));
    if (static_cast<int64_t>(w->numel()) < cfg.min_elements)
      return reject("weight has fewer elements than min_elements = " + std::to_string(cfg.min_elements),
                    wq + " has " + std::to_string(w->numel()));
    if (cfg.format == OutFormat::MatMulNBits) {
      const ValueInfo* a = work.graph->find_value_info(n.inputs[0]);
      if (a && a->type.kind == ValueType::Kind::Tensor && a->type.shape && a->type.shape->size() < 2)
        return reject("activation is 1-D; MatMulNBits needs A of rank >= 2 (use format = 'dq')",
                      "'" + n.inputs[0] + "'");
    }
    if (cfg.format == OutFormat::MatMulNBits) c.key = c.weight + (c.transposed ? "|T" : "|N");
    return quant::accept();
  }

  // Step 3 for one node: DequantizeLinear before it (dq), or MatMulNBits (and
  // an Add for Gemm's C) in its place.
  static void rewrite_node(Node n, Quantized& q, const Config& cfg, NameAllocator& names,
                           std::vector<Node>& out) {
    if (cfg.format == OutFormat::DQ) {
      if (!q.dq_emitted) {
        out.push_back(q.dq_node);
        q.dq_emitted = true;
      }
      n.inputs[1] = q.dq_output;
      out.push_back(std::move(n));
      return;
    }
    Node mm;
    mm.name = names.fresh((n.name.empty() ? q.weight : n.name) + "_Q" + std::to_string(cfg.bits));
    mm.op_type = "MatMulNBits";
    mm.domain = "com.microsoft";
    mm.doc_string = n.doc_string;
    mm.inputs = {n.inputs[0], q.tensors[0].name, q.tensors[1].name};
    if (q.tensors.size() > 2) mm.inputs.push_back(q.tensors[2].name);
    mm.attributes.push_back(Attribute::of_int("K", q.K));
    mm.attributes.push_back(Attribute::of_int("N", q.N));
    mm.attributes.push_back(Attribute::of_int("bits", cfg.bits));
    mm.attributes.push_back(Attribute::of_int("block_size", cfg.block_size));
    if (cfg.accuracy_level >= 0)
      mm.attributes.push_back(Attribute::of_int("accuracy_level", cfg.accuracy_level));
    const bool has_bias = n.op_type == "Gemm" && n.inputs.size() > 2 && !n.inputs[2].empty();
    if (!has_bias) {
      mm.outputs = {n.outputs.at(0)};
      out.push_back(std::move(mm));
      return;
    }
    const std::string mid = names.fresh(n.outputs.at(0) + "_matmul");
    mm.outputs = {mid};
    Node add;
    add.name = names.fresh((n.name.empty() ? q.weight : n.name) + "_bias_add");
    add.op_type = "Add";
    add.inputs = {mid, n.inputs[2]};
    add.outputs = {n.outputs.at(0)};
    out.push_back(std::move(mm));
    out.push_back(std::move(add));
  }

  static quant::QuantSpec dq_spec(const Tensor& w, const Config& cfg) {
    quant::QuantSpec spec;
    spec.symmetric = cfg.symmetric;
    spec.block_size = cfg.block_size;
    spec.scale_type = w.type;
    if (cfg.bits == 8) {
      spec.type = cfg.symmetric ? ElemType::I8 : ElemType::U8;
      spec.convention = quant::Convention::QuantUtils;
    } else {
      spec.type = cfg.symmetric ? ElemType::I4 : ElemType::U4;
      spec.convention = quant::Convention::MlasBlockwise;
    }
    return spec;
  }

  // The bytes of the DequantizeLinear inputs: codes in the weight's own
  // layout, scales and (asymmetric) zero points per axis [N] or blocked
  // with the weight's rank.
  static std::vector<std::vector<uint8_t>> dq_bytes(const Tensor& w, bool transposed, const Config& cfg) {
    const std::vector<float> v = quant::read_floats(w);
    const int64_t K = transposed ? w.shape[1] : w.shape[0];
    const int64_t N = transposed ? w.shape[0] : w.shape[1];
    const quant::QuantSpec spec = dq_spec(w, cfg);
    const quant::QuantizedMatrix m = quant::quantize_matrix(v.data(), K, N, transposed, spec);
    std::vector<int32_t> codes = m.q;
    std::vector<float> scales = m.scales;
    std::vector<int32_t> zps = m.zero_points;
    if (transposed) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) codes[n * K + k] = m.q[k * N + n];
      if (cfg.block_size > 0) {  // [n_blocks, N] -> [N, n_blocks]
        for (int64_t b = 0; b < m.n_blocks; ++b)
          for (int64_t n = 0; n < N; ++n) {
            scales[n * m.n_blocks + b] = m.scales[b * N + n];
            if (!zps.empty()) zps[n * m.n_blocks + b] = m.zero_points[b * N + n];
          }
      }
    }
    std::vector<std::vector<uint8_t>> out;
    out.push_back(quant::encode_codes(codes, spec.type));
    out.push_back(quant::float_bytes(scales, w.type));
    if (!zps.empty()) out.push_back(quant::encode_codes(zps, spec.type));
    return out;
  }

  // A Quantized for `d`'s weight with its logical [K, N], after checking the data.
  static Quantized quantized_for(const Tensor& w, const quant::Candidate& d) {
    quant::check_float_data(w);
    Quantized q;
    q.weight = d.weight;
    q.transposed = d.transposed;
    q.K = d.transposed ? w.shape[1] : w.shape[0];
    q.N = d.transposed ? w.shape[0] : w.shape[1];
    return q;
  }

  static Quantized quantize_dq(const Tensor& w, const quant::Candidate& d, const Node& n, const Config& cfg,
                               NameAllocator& names) {
    Quantized q = quantized_for(w, d);
    const ElemType code_type = dq_spec(w, cfg).type;
    const int64_t n_blocks = cfg.block_size > 0 ? (q.K + cfg.block_size - 1) / cfg.block_size : 1;
    std::vector<int64_t> sshape;
    int64_t axis;
    if (cfg.block_size == 0) {
      sshape = {q.N};
      axis = d.transposed ? 0 : 1;
    } else if (!d.transposed) {
      sshape = {n_blocks, q.N};
      axis = 0;
    } else {
      sshape = {q.N, n_blocks};
      axis = 1;
    }
    const bool has_zp = !cfg.symmetric;
    const Tensor src = w;
    const bool transposed = d.transposed;
    auto parts =
        quant::lazy_parts(has_zp ? 3 : 2, [src, transposed, cfg] { return dq_bytes(src, transposed, cfg); });
    const std::string tag = "_DQ_Q" + std::to_string(cfg.bits);
    Tensor qt = quant::make_lazy_tensor(names.fresh(d.weight + tag), w.shape, code_type, parts[0], kPass);
    Tensor st =
        quant::make_lazy_tensor(names.fresh(d.weight + "_DQ_scales"), sshape, w.type, parts[1], kPass);
    Node dq;
    dq.name = names.fresh(d.weight + "_DequantizeLinear");
    dq.op_type = "DequantizeLinear";
    dq.inputs = {qt.name, st.name};
    q.dq_output = names.fresh(d.weight + tag + "_output");
    dq.outputs = {q.dq_output};
    dq.attributes.push_back(Attribute::of_int("axis", axis));
    if (cfg.block_size > 0) dq.attributes.push_back(Attribute::of_int("block_size", cfg.block_size));
    dq.doc_string = "quantize-weights: " + std::to_string(cfg.bits) + "-bit weight of " +
                    (n.name.empty() ? n.op_type : n.name);
    q.tensors.push_back(std::move(qt));
    q.tensors.push_back(std::move(st));
    if (has_zp) {
      Tensor zt = quant::make_lazy_tensor(names.fresh(d.weight + "_DQ_zero_points"), sshape, code_type,
                                          parts[2], kPass);
      dq.inputs.push_back(zt.name);
      q.tensors.push_back(std::move(zt));
    }
    q.dq_node = std::move(dq);
    return q;
  }

  // The bytes of MatMulNBits' B, scales and (asymmetric) zero points.
  static std::vector<std::vector<uint8_t>> nbits_bytes(const Tensor& w, bool transposed, const Config& cfg) {
    const std::vector<float> v = quant::read_floats(w);
    const int64_t K = transposed ? w.shape[1] : w.shape[0];
    const int64_t N = transposed ? w.shape[0] : w.shape[1];
    quant::QuantSpec spec;
    spec.type = cfg.bits == 8 ? ElemType::U8 : ElemType::U4;
    spec.symmetric = cfg.symmetric;
    spec.block_size = cfg.block_size;
    spec.convention = quant::Convention::MlasBlockwise;
    spec.mlas_nbits = true;
    spec.scale_type = w.type;
    quant::NBitsTensors t =
        quant::pack_matmul_nbits(quant::quantize_matrix(v.data(), K, N, transposed, spec), cfg.bits);
    std::vector<std::vector<uint8_t>> out;
    out.push_back(std::move(t.b));
    out.push_back(quant::float_bytes(t.scales, w.type));
    if (!t.zero_points.empty()) out.push_back(std::move(t.zero_points));
    return out;
  }

  static Quantized quantize_nbits(const Tensor& w, const quant::Candidate& d, const Config& cfg,
                                  NameAllocator& names) {
    Quantized q = quantized_for(w, d);
    const int64_t n_blocks = (q.K + cfg.block_size - 1) / cfg.block_size;
    const int64_t blob = cfg.block_size * cfg.bits / 8;
    const bool has_zp = !cfg.symmetric;
    const Tensor src = w;
    const bool transposed = d.transposed;
    auto parts = quant::lazy_parts(has_zp ? 3 : 2,
                                   [src, transposed, cfg] { return nbits_bytes(src, transposed, cfg); });
    const std::string tag = "_Q" + std::to_string(cfg.bits);
    q.tensors.push_back(quant::make_lazy_tensor(names.fresh(d.weight + tag), {q.N, n_blocks, blob},
                                                ElemType::U8, parts[0], kPass));
    q.tensors.push_back(quant::make_lazy_tensor(names.fresh(d.weight + "_scales"), {q.N * n_blocks}, w.type,
                                                parts[1], kPass));
    if (has_zp) {
      const int64_t zp_cols = (n_blocks * cfg.bits + 7) / 8;
      q.tensors.push_back(quant::make_lazy_tensor(names.fresh(d.weight + "_zero_points"), {q.N * zp_cols},
                                                  ElemType::U8, parts[2], kPass));
    }
    return q;
  }
};

}  // namespace

PassInfo quantize_weights_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "weight-only quantization of ONNX MatMul/Gemm weights (DequantizeLinear or com.microsoft.MatMulNBits), "
      "as ONNX Runtime's MatMulNBitsQuantizer does";
  info.version = 2;  // 2: normalises Constant-node and IR < 4 input weights first
  info.needs_graph = true;
  using quant::at_least;
  using quant::in_range;
  using quant::int_choices;
  using quant::option_spec;
  using quant::string_list;
  info.options = {
      int_choices(option_spec("bits", OptType::Int, "bits per weight: 4 or 8", Value::of_int(4)), {4, 8}),
      at_least(option_spec("block_size", OptType::Int,
                           "weights per scale along K; 0 = one scale per output channel (format 'dq' only). "
                           "Default: 0 for 'dq', 32 for 'matmulnbits'"),
               0),
      option_spec("symmetric", OptType::Bool, "symmetric codes without zero points", Value::of_bool(true)),
      option_spec("format", OptType::Enum,
                  "dq: DequantizeLinear + MatMul; matmulnbits: com.microsoft.MatMulNBits",
                  Value::of_string("dq"), {"dq", "matmulnbits"}),
      option_spec("op_types", OptType::List, "op types whose weights are quantized", string_list({"MatMul"}),
                  {"MatMul", "Gemm"}),
      option_spec("exclude_nodes", OptType::List, "node names to leave in float"),
      at_least(option_spec("min_elements", OptType::Int,
                           "skip weights with fewer elements (ONNX Runtime skips none)", Value::of_int(0)),
               0),
      in_range(
          option_spec("accuracy_level", OptType::Int, "MatMulNBits accuracy_level (0-4); omitted when unset"),
          0, 4),
  };
  info.validate = quant::validate_hook(combination_problems);
  // Sets: their order does not change the output, so it is not part of the key.
  for (auto& o : info.options) o.unordered = o.name == "op_types" || o.name == "exclude_nodes";
  info.factory = [] { return std::unique_ptr<Pass>(new QuantizeWeightsPass()); };
  return info;
}

}  // namespace qforge::passes
