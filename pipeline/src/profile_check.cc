// An artifact against its target's profile: the integer codes, zero points,
// granularity, formats and quantized ops an ONNX model uses must be ones the
// profile's runtime executes (qforge/profile.h, docs/manifest.md "Hardware
// profiles"). Read from the graph as a runtime would see it: a
// QuantizeLinear's zero point gives an activation's type, a
// DequantizeLinear of an initializer a weight's; QLinear* nodes carry both.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"
#include "qforge/profile.h"

namespace qforge {
namespace {

std::string onnx_type_name(ElemType t) {
  switch (t) {
    case ElemType::U8: return "uint8";
    case ElemType::I8: return "int8";
    case ElemType::U16: return "uint16";
    case ElemType::I16: return "int16";
    case ElemType::U4: return "uint4";
    case ElemType::I4: return "int4";
    case ElemType::I32: return "int32";
    default: return name_of(t);
  }
}

bool listed(const std::vector<std::string>& l, const std::string& s) {
  return std::find(l.begin(), l.end(), s) != l.end();
}

// A zero point's values as integers (absent: one 0).
std::vector<int64_t> zero_points(const Tensor* t) {
  if (!t) return {0};
  BlobPtr b = t->bytes();
  if (!b) return {};
  const uint8_t* p = b->data();
  const int64_t n = t->numel();
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (t->type) {
      case ElemType::U8: v[i] = p[i]; break;
      case ElemType::I8: v[i] = static_cast<int8_t>(p[i]); break;
      case ElemType::U16: v[i] = reinterpret_cast<const uint16_t*>(p)[i]; break;
      case ElemType::I16: v[i] = reinterpret_cast<const int16_t*>(p)[i]; break;
      case ElemType::U4: v[i] = (p[i / 2] >> (4 * (i % 2))) & 15; break;
      case ElemType::I4: {
        const int x = (p[i / 2] >> (4 * (i % 2))) & 15;
        v[i] = x >= 8 ? x - 16 : x;
        break;
      }
      default: v[i] = 0;
    }
  }
  return v;
}

// The zero point of a symmetric code: 0 for signed types, the middle for unsigned ones.
int64_t symmetric_zero(ElemType t) {
  switch (t) {
    case ElemType::U8: return 128;
    case ElemType::U16: return 32768;
    case ElemType::U4: return 8;
    default: return 0;
  }
}

// Whether `node` reads `value` where it takes a weight.
bool is_weight_slot(const Node& node, const std::string& value) {
  static const char* ops[] = {"Conv", "ConvTranspose", "Gemm", "MatMul"};
  if (std::find(std::begin(ops), std::end(ops), node.op_type) == std::end(ops)) return false;
  return node.inputs.size() > 1 && node.inputs[1] == value;
}

// The integer range of a code type.
std::pair<double, double> code_range(ElemType t) {
  switch (t) {
    case ElemType::I8: return {-128, 127};
    case ElemType::U16: return {0, 65535};
    case ElemType::I16: return {-32768, 32767};
    case ElemType::U4: return {0, 15};
    case ElemType::I4: return {-8, 7};
    default: return {0, 255};
  }
}

// A QuantizeLinear's or DequantizeLinear's parameters, when constant.
struct QParams {
  ElemType type = ElemType::U8;
  std::vector<float> scales;
  std::vector<int64_t> zeros;
};
std::optional<QParams> params_of(const Model& m, const Node& n) {
  const Tensor* s = n.inputs.size() > 1 ? m.tensor(n.inputs[1]) : nullptr;
  if (!s || s->type != ElemType::F32) return std::nullopt;
  BlobPtr b = s->bytes();
  if (!b) return std::nullopt;
  QParams p;
  p.scales.resize(static_cast<size_t>(s->numel()));
  std::memcpy(p.scales.data(), b->data(), p.scales.size() * sizeof(float));
  const Tensor* z = n.inputs.size() > 2 && !n.inputs[2].empty() ? m.tensor(n.inputs[2]) : nullptr;
  p.type = z ? z->type : ElemType::U8;
  p.zeros = zero_points(z);
  return p;
}

std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

std::vector<std::string> check_artifact(const Model& m, const Profile& p) {
  std::vector<std::string> problems;
  if (!m.graph || !p.onnx.present) return problems;
  const OnnxSpec& o = p.onnx;
  const Graph& g = *m.graph;
  auto problem = [&](std::string s) {
    if (std::find(problems.begin(), problems.end(), s) == problems.end()) problems.push_back(std::move(s));
  };
  std::map<std::string, const Node*> producer;
  std::map<std::string, std::vector<const Node*>> readers;
  for (const Node& n : g.nodes) {
    for (const auto& out : n.outputs) producer[out] = &n;
    for (const auto& in : n.inputs)
      if (!in.empty()) readers[in].push_back(&n);
  }
  auto zp_tensor = [&](const Node& n, size_t idx) -> const Tensor* {
    return n.inputs.size() > idx && !n.inputs[idx].empty() ? m.tensor(n.inputs[idx]) : nullptr;
  };
  auto zp_type = [&](const Node& n, size_t idx) {
    const Tensor* t = zp_tensor(n, idx);
    return t ? t->type : ElemType::U8;  // ONNX: no zero point means uint8
  };
  auto is_qdq = [](const Node& n) {
    return n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear";
  };

  bool has_qdq = false, has_qop = false;
  std::map<const Node*, std::string> activation_of_dq;  // DQ of an activation -> its type
  for (const Node& n : g.nodes) {
    const std::string where = "node '" + n.name + "' (" + n.op_type + ")";
    if (is_qdq(n)) {
      has_qdq = true;
      // A weight is a constant read where an op takes its weight (Conv's,
      // Gemm's or MatMul's second input); other constants (an Add's bias-like
      // operand) are coded like activations.
      bool weight = false;
      if (n.op_type == "DequantizeLinear" && m.tensor(n.inputs[0]) != nullptr)
        for (const Node* r : readers[n.outputs[0]]) weight |= is_weight_slot(*r, n.outputs[0]);
      const ElemType t = zp_type(n, 2);
      const std::string tn = onnx_type_name(t);
      if (t == ElemType::I32) continue;  // an int32 bias: its scale follows from the others
      const auto zps = zero_points(zp_tensor(n, 2));
      if (weight) {
        if (!o.weight_types.empty() && !listed(o.weight_types, tn))
          problem(where + " stores a weight as " + tn + ", not one of the weight types the profile allows");
        if (o.zero_point_zero || o.symmetric_weights) {
          const int64_t want = o.zero_point_zero ? 0 : symmetric_zero(t);
          for (int64_t z : zps)
            if (z != want) {
              problem(where + ": a weight zero point is " + std::to_string(z) + ", the profile needs " +
                      std::to_string(want) +
                      (o.zero_point_zero ? " (zero_point_zero)" : " (symmetric weights)"));
              break;
            }
        }
        const Tensor* scale = m.tensor(n.inputs[1]);
        const bool per_channel = scale && scale->numel() > 1;
        if (per_channel) {
          if (o.per_channel && !*o.per_channel)
            problem(where + " has per-channel weight scales; the profile runs per-tensor scales only");
          for (const Node* r : readers[n.outputs[0]])
            if (!o.per_channel_ops.empty() && !listed(o.per_channel_ops, r->op_type))
              problem("node '" + r->name + "' (" + r->op_type +
                      ") reads per-channel weights; the profile runs per-channel scales only for " + [&] {
                        std::string s;
                        for (const auto& x : o.per_channel_ops) s += (s.empty() ? "" : ", ") + x;
                        return s;
                      }());
        }
      } else if (n.op_type == "DequantizeLinear" && !m.tensor(n.inputs[0])) {
        activation_of_dq[&n] = tn;  // its QuantizeLinear is checked
      } else {
        if (!o.activation_types.empty() && !listed(o.activation_types, tn))
          problem(
              where +
              (n.op_type == "QuantizeLinear" ? " quantizes an activation to " : " stores a constant as ") +
              tn + ", not one of the activation types the profile allows");
        if (o.zero_point_zero || o.symmetric_activations) {
          const int64_t want = o.zero_point_zero ? 0 : symmetric_zero(t);
          for (int64_t z : zps)
            if (z != want) {
              problem(where + ": an activation zero point is " + std::to_string(z) + ", the profile needs " +
                      std::to_string(want) +
                      (o.zero_point_zero ? " (zero_point_zero)" : " (symmetric activations)"));
              break;
            }
        }
      }
    } else if (n.op_type.rfind("QLinear", 0) == 0 || n.op_type == "QGemm") {
      has_qop = true;
      // QLinearConv / QLinearMatMul: x zero point at 2, w zero point at 5.
      if (n.op_type == "QLinearConv" || n.op_type == "QLinearMatMul" || n.op_type == "QGemm") {
        const std::string a = onnx_type_name(zp_type(n, 2)), w = onnx_type_name(zp_type(n, 5));
        if (!o.activation_types.empty() && !listed(o.activation_types, a))
          problem(where + " reads " + a + " activations, not a type the profile allows");
        if (!o.weight_types.empty() && !listed(o.weight_types, w))
          problem(where + " has " + w + " weights, not a type the profile allows");
        if (!o.pairs.empty() &&
            std::find(o.pairs.begin(), o.pairs.end(), std::make_pair(a, w)) == o.pairs.end())
          problem(where + " pairs " + a + " activations with " + w +
                  " weights, not a pair the profile allows");
        if (o.zero_point_zero)
          for (size_t idx : {size_t{2}, size_t{5}})
            for (int64_t z : zero_points(zp_tensor(n, idx)))
              if (z != 0) {
                problem(where + ": a zero point is " + std::to_string(z) +
                        ", the profile needs 0 (zero_point_zero)");
                break;
              }
      }
    }
  }
  if ((has_qdq || has_qop) && o.min_opset > 0) {
    int64_t opset = 0;
    for (const auto& imp : g.model.opset_imports)
      if (imp.domain.empty() || imp.domain == "ai.onnx") opset = imp.version;
    if (opset < o.min_opset)
      problem("the model's opset is " + std::to_string(opset) + "; the profile needs at least " +
              std::to_string(o.min_opset));
  }
  if (!o.formats.empty()) {
    if (has_qop && !listed(o.formats, "qoperator"))
      problem("the model has QOperator nodes (QLinear*); the profile's runtime takes " +
              std::string(listed(o.formats, "qdq") ? "QDQ" : "other") + " models only");
  }
  // Weights and activations that meet at one node: a pair the runtime has a kernel for,
  // and an op it runs quantized.
  for (const Node& n : g.nodes) {
    if (is_qdq(n) || n.op_type.rfind("QLinear", 0) == 0) continue;
    std::string act, weight;
    bool quantized_in = false;
    for (const auto& in : n.inputs) {
      auto pr = producer.find(in);
      if (pr == producer.end() || pr->second->op_type != "DequantizeLinear") continue;
      quantized_in = true;
      if (auto a = activation_of_dq.find(pr->second); a != activation_of_dq.end()) {
        if (act.empty()) act = a->second;
      } else if (const Node* dq = pr->second; m.tensor(dq->inputs[0]) && is_weight_slot(n, in)) {
        const ElemType t = zp_type(*dq, 2);
        if (t != ElemType::I32 && weight.empty()) weight = onnx_type_name(t);
      }
    }
    if (!quantized_in) continue;
    bool quantized_out = false;
    for (const auto& out : n.outputs)
      for (const Node* r : readers[out]) quantized_out |= r->op_type == "QuantizeLinear";
    const std::string where = "node '" + n.name + "' (" + n.op_type + ")";
    if (!act.empty() && !weight.empty() && !o.pairs.empty() &&
        std::find(o.pairs.begin(), o.pairs.end(), std::make_pair(act, weight)) == o.pairs.end())
      problem(where + " pairs " + act + " activations with " + weight +
              " weights, not a pair the profile allows");
    if (quantized_out && !o.quantized_ops.empty() && !listed(o.quantized_ops, n.op_type))
      problem(where + " is quantized, but the profile's runtime does not run " + n.op_type + " in integers");
    if (!quantized_out) continue;
    // The output's QuantizeLinear: its scale and zero point.
    const Node* q = nullptr;
    for (const Node* r : readers[n.outputs[0]])
      if (r->op_type == "QuantizeLinear") q = r;
    const auto qp = q ? params_of(m, *q) : std::nullopt;
    if (!qp) continue;
    if (auto f = o.fixed_outputs.find(n.op_type); f != o.fixed_outputs.end()) {
      // The range [MIN, MAX] the runtime fixes, coded with either zero-point
      // policy: asymmetric (scale (MAX - MIN) / (qmax - qmin)) or symmetric
      // about 0 (scale max(|MIN|, |MAX|) / qmax, as with zero_point_zero).
      const auto [qmin, qmax] = code_range(qp->type);
      const double lo = f->second.first, hi = f->second.second;
      const double s_asym = (hi - lo) / (qmax - qmin), s_sym = std::max(-lo, hi) / qmax;
      const double z_asym = std::round(qmin - lo / s_asym);
      auto close = [](double a, double b) {
        return std::fabs(a - b) <= 1e-5 * std::max(std::fabs(b), 1e-12);
      };
      const bool ok = qp->scales.size() == 1 && ((close(qp->scales[0], s_asym) && qp->zeros[0] == z_asym) ||
                                                 (close(qp->scales[0], s_sym) && qp->zeros[0] == 0));
      if (!ok)
        problem(where + ": its output is quantized with scale " + fmt_g(qp->scales[0]) + ", zero point " +
                std::to_string(qp->zeros[0]) + "; the profile fixes " + n.op_type + "'s output range to [" +
                fmt_g(lo) + ", " + fmt_g(hi) + "] (scale " + fmt_g(s_asym) + ", zero point " +
                std::to_string(static_cast<int64_t>(z_asym)) + ")");
    }
    if (listed(o.shared_scale_ops, n.op_type))
      for (const auto& in : n.inputs) {
        auto pr = producer.find(in);
        if (pr == producer.end() || pr->second->op_type != "DequantizeLinear" ||
            m.tensor(pr->second->inputs[0]))
          continue;
        const auto ip = params_of(m, *pr->second);
        if (ip && (ip->scales != qp->scales || ip->zeros != qp->zeros)) {
          problem(where + ": input '" + in + "' has scale " + fmt_g(ip->scales.empty() ? 0 : ip->scales[0]) +
                  " and its output scale " + fmt_g(qp->scales.empty() ? 0 : qp->scales[0]) +
                  "; the profile's runtime needs one scale and zero point for " + n.op_type +
                  "'s inputs and output (shared_scale_ops)");
          break;
        }
      }
  }
  return problems;
}

}  // namespace qforge
