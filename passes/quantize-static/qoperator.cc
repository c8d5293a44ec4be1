// quantize-static's QOperator form: see qoperator.h.
//
// One walk over the QDQ graph in node order: each node whose inputs are read
// through DequantizeLinear and whose output goes to one QuantizeLinear
// (directly, or through a Relu/Clip when its op may fold one) is replaced by
// its QLinear op, which reads the DequantizeLinear's inputs and writes the
// QuantizeLinear's output. Then QuantizeLinear/DequantizeLinear nodes whose
// outputs nothing reads any more are removed, and the initializers only they
// read are dropped.
#include "qoperator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "onnx_quant_util.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kMs = "com.microsoft";

bool default_domain(const Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

bool is_q(const Node& n) { return n.op_type == "QuantizeLinear" && (default_domain(n) || n.domain == kMs); }
bool is_dq(const Node& n) {
  return n.op_type == "DequantizeLinear" && (default_domain(n) || n.domain == kMs);
}

enum class Kind { None, Conv, MatMul, Gemm, Add, Mul, Concat, AvgPool, GlobalAvgPool, Sigmoid, Move };

Kind kind_of(const std::string& op) {
  if (op == "Conv") return Kind::Conv;
  if (op == "MatMul") return Kind::MatMul;
  if (op == "Gemm") return Kind::Gemm;
  if (op == "Add") return Kind::Add;
  if (op == "Mul") return Kind::Mul;
  if (op == "Concat") return Kind::Concat;
  if (op == "AveragePool") return Kind::AvgPool;
  if (op == "GlobalAveragePool") return Kind::GlobalAvgPool;
  if (op == "Sigmoid") return Kind::Sigmoid;
  static const std::set<std::string> moves = {"Reshape", "Transpose",    "Squeeze",     "Unsqueeze",
                                              "Flatten", "Slice",        "Gather",      "MaxPool",
                                              "Resize",  "DepthToSpace", "SpaceToDepth"};
  return moves.count(op) ? Kind::Move : Kind::None;
}

// Why an op quantize-static puts in QDQ form has no QOperator form.
std::string no_form_reason(const std::string& op) {
  if (op == "ConvTranspose")
    return "ConvTranspose has no QOperator form (ONNX Runtime's QOperator quantizer leaves it in float too)";
  if (op == "GlobalMaxPool") return "GlobalMaxPool takes no 8-bit tensors in ONNX";
  if (op == "Relu" || op == "Clip")
    return op + " not after a quantized Conv, MatMul, Gemm, Add or Mul has no QOperator form";
  return op + " has no QOperator form in quantize-static";
}

// A quantized value: the codes and the names of its scale and zero point.
struct QRef {
  std::string codes, scale, zp;
  int64_t axis = -1;  // the DequantizeLinear's axis when per channel
};

class Converter {
 public:
  Converter(Model& work, const std::set<size_t>& quantized)
      : work_(work), g_(*work.graph), uses_(g_), names_(work), quantized_(quantized) {}

  QOperatorReport run() {
    const size_t n_nodes = g_.nodes.size();
    std::vector<bool> drop(n_nodes, false);
    std::vector<std::pair<size_t, Node>> replacements;
    std::set<std::string> gone;  // float values that no longer exist
    for (size_t i = 0; i < n_nodes; ++i) {
      const Node& n = g_.nodes[i];
      if (drop[i] || !quantized_.count(i) || is_q(n) || is_dq(n) || !default_domain(n)) continue;
      int act = -1;
      const int q = output_q(i, act);
      Node out;
      std::string why;
      if (q < 0) {
        why = "its output is not quantized by one QuantizeLinear";
      } else if ((n.op_type == "Relu" || n.op_type == "Clip") && !n.inputs.empty() &&
                 !dq_producer(n.inputs[0])) {
        why = "the op before it stays in float";
      } else {
        why = convert(n, act, g_.nodes[static_cast<size_t>(q)], out);
      }
      if (!why.empty()) {
        report_.kept_float.push_back(
            {"kept in float between DequantizeLinear and QuantizeLinear: " + why, quant::node_label(n, i)});
        continue;
      }
      drop[i] = true;
      drop[static_cast<size_t>(q)] = true;
      ++report_.removed_qdq;
      gone.insert(n.outputs[0]);
      if (act >= 0) {
        drop[static_cast<size_t>(act)] = true;
        gone.insert(g_.nodes[static_cast<size_t>(act)].outputs[0]);
        ++report_.folded;
      }
      replacements.emplace_back(i, std::move(out));
    }

    std::vector<std::string> candidates;  // initializers possibly unused now
    std::vector<Node> nodes;
    nodes.reserve(n_nodes);
    size_t r = 0;
    for (size_t i = 0; i < n_nodes; ++i) {
      if (r < replacements.size() && replacements[r].first == i) {
        nodes.push_back(std::move(replacements[r].second));
        ++r;
      } else if (!drop[i]) {
        nodes.push_back(std::move(g_.nodes[i]));
      } else {
        for (const std::string& in : g_.nodes[i].inputs) candidates.push_back(in);
      }
    }
    g_.nodes = std::move(nodes);

    // QuantizeLinear/DequantizeLinear nobody reads any more (a DQ first
    // frees the Q before it).
    for (bool again = true; again;) {
      again = false;
      const ValueUses uses(g_);
      std::vector<size_t> dead;
      for (size_t i = 0; i < g_.nodes.size(); ++i) {
        const Node& n = g_.nodes[i];
        if (!(is_q(n) || is_dq(n)) || n.outputs.empty()) continue;
        const std::string& v = n.outputs[0];
        if (g_.is_output(v) || !uses.consumers_of(v).empty()) continue;
        dead.push_back(i);
        for (const std::string& in : n.inputs) candidates.push_back(in);
        gone.insert(v);
      }
      if (!dead.empty()) {
        report_.removed_qdq += dead.size();
        g_.remove_nodes(dead);
        again = true;
      }
    }
    quant::drop_unused_initializers(work_, candidates);
    auto& vi = g_.value_info;
    vi.erase(std::remove_if(vi.begin(), vi.end(), [&](const ValueInfo& v) { return gone.count(v.name) > 0; }),
             vi.end());
    return report_;
  }

 private:
  // ------------------------------------------------------------ lookups
  const Node* dq_producer(const std::string& v) const {
    const int p = uses_.producer_of(v);
    if (p < 0) return nullptr;
    const Node& n = g_.nodes[static_cast<size_t>(p)];
    return is_dq(n) && n.inputs.size() == 3 && !n.inputs[2].empty() ? &n : nullptr;
  }

  std::vector<float> floats(const std::string& name) const {
    if (!quant::is_constant_initializer(work_, name)) return {};
    const Tensor* t = work_.tensor(name);
    if (t->type != ElemType::F32) return {};
    return quant::read_f32(*t);
  }

  // The code of a scalar 8-bit zero point; false when it is not one.
  bool zero_point(const std::string& name, ElemType& type, int32_t& code) const {
    if (!quant::is_constant_initializer(work_, name)) return false;
    const Tensor* t = work_.tensor(name);
    if ((t->type != ElemType::U8 && t->type != ElemType::I8) || t->numel() != 1) return false;
    const BlobPtr b = t->bytes();
    if (!b || b->size() < 1) return false;
    type = t->type;
    code = t->type == ElemType::I8 ? static_cast<int8_t>(b->data()[0]) : b->data()[0];
    return true;
  }

  // The quantized value a DequantizeLinear reads, per tensor with 8-bit
  // codes unless `per_channel_ok`.
  bool dq_ref(const std::string& v, QRef& out, bool per_channel_ok = false) const {
    const Node* dq = dq_producer(v);
    if (!dq) return false;
    out.codes = dq->inputs[0];
    out.scale = dq->inputs[1];
    out.zp = dq->inputs[2];
    const Attribute* axis = dq->attr("axis");
    const std::vector<float> s = floats(out.scale);
    if (s.empty()) return false;
    out.axis = -1;
    if (s.size() > 1 || (axis && work_.tensor(out.scale)->shape.size() == 1)) {
      if (!per_channel_ok) return false;
      out.axis = axis ? axis->i : 1;
    }
    const Tensor* z = work_.tensor(out.zp);
    if (!z || (z->type != ElemType::U8 && z->type != ElemType::I8)) return false;
    return true;
  }

  // The QuantizeLinear reading n's output 0, directly or through one
  // Relu/Clip (returned in `act`); -1 when there is none.
  int output_q(size_t i, int& act) const {
    act = -1;
    const Node& n = g_.nodes[i];
    auto single = [&](const std::string& v) -> int {
      if (v.empty() || g_.is_output(v)) return -1;
      const std::vector<size_t>& c = uses_.consumers_of(v);
      return c.size() == 1 ? static_cast<int>(c[0]) : -1;
    };
    if (n.outputs.empty() ||
        std::any_of(n.outputs.begin() + 1, n.outputs.end(), [](const std::string& o) { return !o.empty(); }))
      return -1;
    const int c = single(n.outputs[0]);
    if (c < 0) return -1;
    const Node& cn = g_.nodes[static_cast<size_t>(c)];
    if (is_q(cn)) return c;
    if (default_domain(cn) && (cn.op_type == "Relu" || cn.op_type == "Clip") && !cn.outputs.empty()) {
      const int q = single(cn.outputs[0]);
      if (q >= 0 && is_q(g_.nodes[static_cast<size_t>(q)])) {
        act = c;
        return q;
      }
    }
    return -1;
  }

  // Scale and zero point of a QuantizeLinear (per tensor, 8-bit).
  bool q_params(const Node& q, QRef& out) const {
    if (q.inputs.size() < 3 || q.inputs[2].empty() || q.attr("axis")) return false;
    out.codes = q.outputs[0];
    out.scale = q.inputs[1];
    out.zp = q.inputs[2];
    const std::vector<float> s = floats(out.scale);
    ElemType t = ElemType::U8;
    int32_t z = 0;
    return s.size() == 1 && zero_point(out.zp, t, z);
  }

  bool same_params(const QRef& a, const QRef& b) const {
    ElemType ta = ElemType::U8, tb = ElemType::U8;
    int32_t za = 0, zb = 0;
    return floats(a.scale) == floats(b.scale) && zero_point(a.zp, ta, za) && zero_point(b.zp, tb, zb) &&
           ta == tb && za == zb;
  }

  // Whether quantizing to `y` saturates as Relu/Clip `act` clips, so the
  // activation can be dropped: q(lo) <= qmin and q(hi) >= qmax.
  std::string fold_problem(const Node& act, const QRef& y) const {
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (act.op_type == "Relu") {
      lo = 0;
    } else if (g_.opset("") < 11) {
      if (const Attribute* a = act.attr("min")) lo = a->f;
      if (const Attribute* a = act.attr("max")) hi = a->f;
    } else {
      for (size_t k = 1; k < 3 && k < act.inputs.size(); ++k) {
        if (act.inputs[k].empty()) continue;
        const std::vector<float> v = floats(act.inputs[k]);
        if (v.size() != 1) return "Clip's bounds are not constant";
        (k == 1 ? lo : hi) = v[0];
      }
    }
    const float s = floats(y.scale)[0];
    ElemType t = ElemType::U8;
    int32_t z = 0;
    zero_point(y.zp, t, z);
    const double qmin = t == ElemType::U8 ? 0 : -128, qmax = t == ElemType::U8 ? 255 : 127;
    auto code = [&](float x) {
      if (std::isinf(x)) return x < 0 ? -1e30 : 1e30;
      return static_cast<double>(std::nearbyint(x / s)) + z;
    };
    if (code(lo) <= qmin && code(hi) >= qmax) return "";
    return act.op_type +
           " after it cannot be folded into the output's range (the zero point is not the lowest code, as "
           "with symmetric activations)";
  }

  // An int32 bias read through a DequantizeLinear whose scale is
  // in_scale x weight scale and zero point 0 (what the QLinear ops assume).
  std::string int32_bias(const std::string& v, float in_scale, const std::vector<float>& w_scales,
                         std::string& codes) const {
    const Node* dq = dq_producer(v);
    if (!dq) return "its bias is not an int32 DequantizeLinear";
    const Tensor* b = work_.tensor(dq->inputs[0]);
    if (!b || b->type != ElemType::I32) return "its bias is not int32";
    const std::vector<float> s = floats(dq->inputs[1]);
    if (s.empty()) return "its bias scale is not a constant";
    for (size_t c = 0; c < s.size(); ++c) {
      float want = in_scale * w_scales[w_scales.size() == 1 ? 0 : c % w_scales.size()];
      if (want == 0) want = 1;
      if (s[c] != want) return "its bias scale is not input scale x weight scale";
    }
    const Tensor* z = work_.tensor(dq->inputs[2]);
    if (!z) return "its bias has no zero point";
    const BlobPtr zb = z->bytes();
    for (uint64_t k = 0; zb && k < zb->size(); ++k)
      if (zb->data()[k] != 0) return "its bias zero point is not 0";
    codes = dq->inputs[0];
    return "";
  }

  Node qnode(const Node& n, const std::string& op, const std::string& domain, std::vector<std::string> in,
             const QRef& y) {
    Node out = make_node(names_.fresh((n.name.empty() ? n.op_type : n.name) + "_quant"), op, std::move(in),
                         {y.codes});
    out.domain = domain;
    out.doc_string = n.doc_string;
    return out;
  }

  void count(const std::string& op) { ++report_.emitted[op]; }

  // Builds n's QOperator form into `out`; returns why not ("" on success).
  std::string convert(const Node& n, int act, const Node& q, Node& out) {
    QRef y;
    if (!q_params(q, y)) return "its QuantizeLinear is not per tensor with an 8-bit zero point";
    const Kind kind = kind_of(n.op_type);
    if (kind == Kind::None) return no_form_reason(n.op_type);
    if (act >= 0) {
      if (kind != Kind::Conv && kind != Kind::MatMul && kind != Kind::Gemm && kind != Kind::Add &&
          kind != Kind::Mul)
        return "a Relu/Clip follows it";
      const std::string p = fold_problem(g_.nodes[static_cast<size_t>(act)], y);
      if (!p.empty()) return p;
    }
    QRef a, b;
    switch (kind) {
      case Kind::Conv: {
        if (n.inputs.size() < 2 || !dq_ref(n.inputs[0], a) || !dq_ref(n.inputs[1], b, true))
          return "its input and weight are not both read through DequantizeLinear";
        if (b.axis > 0) return "its weight is quantized along axis " + std::to_string(b.axis) + ", not 0";
        std::vector<std::string> in = {a.codes, a.scale, a.zp, b.codes, b.scale, b.zp, y.scale, y.zp};
        if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
          std::string bias;
          const std::string p = int32_bias(n.inputs[2], floats(a.scale)[0], floats(b.scale), bias);
          if (!p.empty()) return p;
          in.push_back(bias);
        }
        out = qnode(n, "QLinearConv", "", std::move(in), y);
        out.attributes = n.attributes;
        break;
      }
      case Kind::MatMul: {
        if (!dq_ref(n.inputs[0], a) || n.inputs.size() < 2 || !dq_ref(n.inputs[1], b, true))
          return "its inputs are not both read through DequantizeLinear";
        if (b.axis >= 0) {
          const Tensor* bt = work_.tensor(b.codes);
          if (!bt || bt->shape.size() != 2 || b.axis != 1)
            return "per-channel scales of a B that is not a 2-D [K, N] weight";
        }
        out =
            qnode(n, "QLinearMatMul", "", {a.codes, a.scale, a.zp, b.codes, b.scale, b.zp, y.scale, y.zp}, y);
        break;
      }
      case Kind::Gemm: {
        if (!dq_ref(n.inputs[0], a) || n.inputs.size() < 2 || !dq_ref(n.inputs[1], b, true))
          return "its inputs are not both read through DequantizeLinear";
        const Attribute* alpha = n.attr("alpha");
        const Attribute* beta = n.attr("beta");
        if (alpha && alpha->f != 1.0f) return "alpha is not 1";
        std::string bias;
        if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
          if (beta && beta->f != 1.0f) return "beta is not 1";
          const std::string p = int32_bias(n.inputs[2], floats(a.scale)[0], floats(b.scale), bias);
          if (!p.empty()) return p;
        }
        out =
            qnode(n, "QGemm", kMs, {a.codes, a.scale, a.zp, b.codes, b.scale, b.zp, bias, y.scale, y.zp}, y);
        for (const Attribute& at : n.attributes)
          if (at.name == "transA" || at.name == "transB") out.attributes.push_back(at);
        break;
      }
      case Kind::Add:
      case Kind::Mul: {
        if (n.inputs.size() != 2 || !dq_ref(n.inputs[0], a) || !dq_ref(n.inputs[1], b))
          return "its inputs are not both read through DequantizeLinear";
        const std::string op = kind == Kind::Add ? "QLinearAdd" : "QLinearMul";
        out = qnode(n, op, kMs, {a.codes, a.scale, a.zp, b.codes, b.scale, b.zp, y.scale, y.zp}, y);
        break;
      }
      case Kind::Concat: {
        std::vector<std::string> in = {y.scale, y.zp};
        for (const std::string& v : n.inputs) {
          QRef x;
          if (!dq_ref(v, x)) return "an input is not read through DequantizeLinear";
          in.insert(in.end(), {x.codes, x.scale, x.zp});
        }
        out = qnode(n, "QLinearConcat", kMs, std::move(in), y);
        out.attributes = n.attributes;
        break;
      }
      case Kind::AvgPool:
      case Kind::GlobalAvgPool:
      case Kind::Sigmoid: {
        if (!dq_ref(n.inputs[0], a)) return "its input is not read through DequantizeLinear";
        const std::string op = kind == Kind::AvgPool         ? "QLinearAveragePool"
                               : kind == Kind::GlobalAvgPool ? "QLinearGlobalAveragePool"
                                                             : "QLinearSigmoid";
        if (kind == Kind::AvgPool)
          if (const Attribute* d = n.attr("dilations"))
            for (int64_t v : d->ints)
              if (v != 1) return "QLinearAveragePool has no dilations";
        out = qnode(n, op, kMs, {a.codes, a.scale, a.zp, y.scale, y.zp}, y);
        for (const Attribute& at : n.attributes)
          if (at.name != "dilations") out.attributes.push_back(at);
        break;
      }
      case Kind::Move: {
        if (!dq_ref(n.inputs[0], a)) return "its input is not read through DequantizeLinear";
        if (!same_params(a, y)) return "its input and output have different scales or zero points";
        if (n.op_type == "MaxPool" && g_.opset("") < 12)
          return "MaxPool takes 8-bit tensors from opset 12 (the model has opset " +
                 std::to_string(g_.opset("")) + ")";
        if (n.op_type == "Resize")
          if (const Attribute* m = n.attr("mode"); m && m->s != "nearest") return "Resize is not nearest";
        out = n;
        out.inputs[0] = a.codes;
        out.outputs = {y.codes};
        ++report_.direct;
        return "";
      }
      case Kind::None: break;
    }
    count(out.op_type);
    return "";
  }

  Model& work_;
  Graph& g_;
  const ValueUses uses_;
  NameAllocator names_;
  const std::set<size_t>& quantized_;
  QOperatorReport report_;
};

}  // namespace

QOperatorReport qdq_to_qoperator(Model& work, const std::set<size_t>& quantized) {
  QOperatorReport r = Converter(work, quantized).run();
  bool ms = false;
  for (const Node& n : work.graph->nodes) ms |= n.domain == kMs;
  if (ms) quant::ensure_opset(*work.graph, kMs, 1);
  return r;
}

}  // namespace qforge::passes
