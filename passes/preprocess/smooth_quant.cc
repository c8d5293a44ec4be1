// smooth-quant: SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and
// Efficient Post-Training Quantization for Large Language Models"): moves
// activation outliers into the weights of the MatMul and Gemm nodes that
// read them (docs/manifest.md, "Pre-processing passes").
//
// For an activation X [..., K] read by MatMul/Gemm nodes with constant
// weights W [K, N], with a_k the calibrated absolute maximum of X's channel k
// (calibrate's per-channel statistics, range_table.h) and w_k the largest
// |W[k, n]| over every such reader:
//   s_k = a_k^alpha / w_k^(1 - alpha),   X' = X / s,   W' = diag(s) W,
// so X' W' = X W. X / s is folded into X's producer when it is an affine op
// along the last axis:
//   * LayerNormalization (axis -1): its scale and bias divided by s;
//   * Add(Mul(v, gamma), beta) (a LayerNormalization exporters decomposed)
//     or Mul(v, gamma), with gamma and beta constants of one value per
//     channel: both divided by s;
// and with insert_mul = true, any other producer gets a Mul by 1 / s in
// front of the readers. Readers of X other than those MatMul/Gemm (Shape
// aside) would see the scaled values: such an X is left alone, as is an X
// without per-channel statistics.
//
// The activation ranges change: calibrate again on the smoothed model before
// quantize-static (calibrate -> smooth-quant -> calibrate -> quantize-static;
// each step takes the nearest table before it).
#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "graph_rewrite.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "qforge/graph.h"
#include "qforge/status.h"
#include "range_table.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "smooth-quant";

bool default_domain(const Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

class SmoothQuantPass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    if (ctx.tables.empty() || !ctx.tables[0])
      throw Error(
          "smooth-quant needs per-channel activation statistics: put a calibrate step (channel_stats = true, "
          "the default) before it");
    const quant::RangeTable table =
        quant::RangeTable::from_table(*ctx.tables[0], "the calibrate step's table");
    const double alpha = ctx.options.count("alpha") ? ctx.options.at("alpha").as_number() : 0.5;
    const bool insert_mul = quant::opt_bool(ctx.options, kPass, "insert_mul", false);
    Model work = quant::working_copy(model, "smooth-quant rewrites ONNX graphs");
    const quant::NormalizeStats ns = quant::normalize_weights(work);
    quant::note_normalized(ns, res);
    Graph& g = *work.graph;
    const ValueUses uses(g);
    NameAllocator names(work);
    std::vector<std::string> replaced;
    auto f32_const = [&](const std::string& v) {
      return !v.empty() && quant::is_constant_initializer(work, v) && work.tensor(v)->type == ElemType::F32;
    };
    auto unshared = [&](const std::string& v) { return uses.consumers_of(v).size() == 1 && !g.is_output(v); };
    // A constant with one value per last-axis channel ([K] or [1, ..., K]).
    auto per_channel = [&](const std::string& v, int64_t K) {
      if (!f32_const(v) || !unshared(v)) return false;
      const std::vector<int64_t>& s = work.tensor(v)->shape;
      if (s.empty() || s.back() != K) return false;
      for (size_t d = 0; d + 1 < s.size(); ++d)
        if (s[d] != 1) return false;
      return true;
    };
    auto divided = [&](const std::string& v, const std::vector<double>& s) {
      const Tensor& t = *work.tensor(v);
      std::vector<float> x = quant::read_f32(t);
      for (size_t k = 0; k < x.size(); ++k) x[k] = static_cast<float>(x[k] / s[k]);
      const std::string n = names.fresh(v + "_smoothed");
      work.tensors.push_back(quant::make_f32_tensor(n, t.shape, x));
      replaced.push_back(v);
      return n;
    };

    std::set<std::string> seen;
    size_t smoothed = 0, weights = 0, inserted = 0;
    double spread_before = 0, spread_after = 0;
    std::vector<Node> new_muls;  // inserted after the loop (indices stay valid meanwhile)
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& first = g.nodes[i];
      if ((first.op_type != "MatMul" && first.op_type != "Gemm") || !default_domain(first) ||
          first.inputs.size() < 2)
        continue;
      const std::string x = first.inputs[0];
      if (!seen.insert(x).second) continue;
      auto skip = [&](const std::string& why) { res.skipped.push_back({why, "value '" + x + "'"}); };
      // The readers: smoothable MatMul/Gemm nodes (and Shape).
      std::vector<size_t> group;
      std::string why;
      int64_t K = -1;
      for (size_t r : uses.consumers_of(x)) {
        const Node& n = g.nodes[r];
        if (n.op_type == "Shape" && default_domain(n)) continue;
        const bool mm = (n.op_type == "MatMul" || n.op_type == "Gemm") && default_domain(n) &&
                        n.inputs.size() >= 2 && n.inputs[0] == x && n.inputs[1] != x;
        if (!mm) {
          why =
              "read by " + quant::node_label(n, r) + ", which is not a MatMul or Gemm with a constant weight";
          break;
        }
        const std::string& w = n.inputs[1];
        const Attribute* ta = n.attr("transA");
        if (ta && ta->i != 0) {
          why = "read by a Gemm with transA = 1";
          break;
        }
        if (!f32_const(w) || !unshared(w) || work.tensor(w)->shape.size() != 2) {
          why = "read by " + quant::node_label(n, r) + ", whose weight is not an unshared 2-D float constant";
          break;
        }
        const Attribute* tb = n.attr("transB");
        const std::vector<int64_t>& ws = work.tensor(w)->shape;
        const int64_t k = tb && tb->i != 0 ? ws[1] : ws[0];
        if (K >= 0 && k != K) {
          why = "its readers' weights differ in K";
          break;
        }
        K = k;
        group.push_back(r);
      }
      if (!why.empty()) {
        skip(why);
        continue;
      }
      const quant::ChannelStats* cs = table.channel_stats(x);
      if (!cs || cs->axis != -1 || static_cast<int64_t>(cs->channels()) != K) {
        skip(
            "no per-channel statistics along the last axis in the range table (calibrate with "
            "channel_stats)");
        continue;
      }
      // Where 1 / s goes.
      const int p = uses.producer_of(x);
      const Node* prod = p >= 0 ? &g.nodes[static_cast<size_t>(p)] : nullptr;
      enum class Fold { None, LayerNorm, AffineAdd, Mul } fold = Fold::None;
      int mul_index = -1;
      if (prod && default_domain(*prod) && !g.is_output(x)) {
        if (prod->op_type == "LayerNormalization" && prod->inputs.size() >= 2) {
          const Attribute* ax = prod->attr("axis");
          const bool last = !ax || ax->i == -1;
          const bool bias_ok =
              prod->inputs.size() < 3 || prod->inputs[2].empty() || per_channel(prod->inputs[2], K);
          if (last && per_channel(prod->inputs[1], K) && bias_ok) fold = Fold::LayerNorm;
        } else if (prod->op_type == "Add" && prod->inputs.size() == 2) {
          const int c = per_channel(prod->inputs[1], K) ? 1 : per_channel(prod->inputs[0], K) ? 0 : -1;
          if (c >= 0) {
            const std::string& u = prod->inputs[static_cast<size_t>(1 - c)];
            const int q = uses.producer_of(u);
            if (q >= 0 && unshared(u)) {
              const Node& mul = g.nodes[static_cast<size_t>(q)];
              if (mul.op_type == "Mul" && default_domain(mul) && mul.inputs.size() == 2 &&
                  (per_channel(mul.inputs[0], K) || per_channel(mul.inputs[1], K))) {
                fold = Fold::AffineAdd;
                mul_index = q;
              }
            }
          }
        } else if (prod->op_type == "Mul" && prod->inputs.size() == 2 &&
                   (per_channel(prod->inputs[0], K) || per_channel(prod->inputs[1], K))) {
          fold = Fold::Mul;
        }
      }
      if (fold == Fold::None && !insert_mul) {
        skip(
            "its producer is not an affine op to fold 1/s into (LayerNormalization, Mul and Add of "
            "per-channel constants); insert_mul = true inserts a Mul");
        continue;
      }
      // The scales.
      std::vector<double> wmax(static_cast<size_t>(K), 0.0);
      for (size_t r : group) {
        const Node& n = g.nodes[r];
        const Tensor& wt = *work.tensor(n.inputs[1]);
        const std::vector<float> w = quant::read_f32(wt);
        const Attribute* tb = n.attr("transB");
        const bool trans = tb && tb->i != 0;
        const int64_t N = trans ? wt.shape[0] : wt.shape[1];
        for (int64_t k = 0; k < K; ++k)
          for (int64_t c = 0; c < N; ++c) {
            const float v = w[static_cast<size_t>(trans ? c * K + k : k * N + c)];
            wmax[static_cast<size_t>(k)] =
                std::max(wmax[static_cast<size_t>(k)], static_cast<double>(std::fabs(v)));
          }
      }
      std::vector<double> s(static_cast<size_t>(K), 1.0);
      double amax_before = 0, amax_after = 0, asum_before = 0, asum_after = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        const double a = std::max(std::fabs(cs->min[k]), std::fabs(cs->max[k]));
        if (a > 0 && wmax[k] > 0)
          s[k] = std::min(1e5, std::max(1e-5, std::pow(a, alpha) / std::pow(wmax[k], 1 - alpha)));
        amax_before = std::max(amax_before, a), asum_before += a;
        amax_after = std::max(amax_after, a / s[k]), asum_after += a / s[k];
      }
      if (asum_before > 0 && asum_after > 0) {
        spread_before += amax_before / (asum_before / static_cast<double>(K));
        spread_after += amax_after / (asum_after / static_cast<double>(K));
      }
      // X / s.
      if (fold == Fold::LayerNorm) {
        Node& ln = g.nodes[static_cast<size_t>(p)];
        ln.inputs[1] = divided(ln.inputs[1], s);
        if (ln.inputs.size() > 2 && !ln.inputs[2].empty()) ln.inputs[2] = divided(ln.inputs[2], s);
      } else if (fold == Fold::AffineAdd || fold == Fold::Mul) {
        Node& add = g.nodes[static_cast<size_t>(p)];
        if (fold == Fold::AffineAdd) {
          const size_t c = per_channel(add.inputs[1], K) ? 1 : 0;
          add.inputs[c] = divided(add.inputs[c], s);
        }
        Node& mul = g.nodes[static_cast<size_t>(fold == Fold::Mul ? p : mul_index)];
        const size_t c = per_channel(mul.inputs[1], K) ? 1 : 0;
        mul.inputs[c] = divided(mul.inputs[c], s);
      } else {
        std::vector<float> inv(static_cast<size_t>(K));
        for (size_t k = 0; k < inv.size(); ++k) inv[k] = static_cast<float>(1.0 / s[k]);
        const std::string c = names.fresh(x + "_smooth_scale"), y = names.fresh(x + "_smoothed");
        work.tensors.push_back(quant::make_f32_tensor(c, {K}, inv));
        new_muls.push_back(make_node(names.fresh(x + "_smooth"), "Mul", {x, c}, {y}));
        for (size_t r : group) g.nodes[r].inputs[0] = y;
        ++inserted;
      }
      // W' = diag(s) W.
      for (size_t r : group) {
        Node& n = g.nodes[r];
        const Tensor& wt = *work.tensor(n.inputs[1]);
        std::vector<float> w = quant::read_f32(wt);
        const Attribute* tb = n.attr("transB");
        const bool trans = tb && tb->i != 0;
        const int64_t N = trans ? wt.shape[0] : wt.shape[1];
        for (int64_t k = 0; k < K; ++k)
          for (int64_t c = 0; c < N; ++c) {
            float& v = w[static_cast<size_t>(trans ? c * K + k : k * N + c)];
            v = static_cast<float>(v * s[static_cast<size_t>(k)]);
          }
        const std::string wn = names.fresh(n.inputs[1] + "_smoothed");
        work.tensors.push_back(quant::make_f32_tensor(wn, wt.shape, w));
        replaced.push_back(n.inputs[1]);
        n.inputs[1] = wn;
        ++weights;
      }
      ++smoothed;
    }
    for (Node& m : new_muls) g.insert_node(std::move(m));
    res.metrics["smoothed_activations"] = static_cast<double>(smoothed);
    res.metrics["smoothed_weights"] = static_cast<double>(weights);
    if (smoothed == 0) {
      res.warnings.push_back("no MatMul or Gemm input could be smoothed (see the skipped list)");
      return;
    }
    // Max over mean of the channels' absolute maxima, averaged over the
    // smoothed activations: how far the outliers stand out.
    res.metrics["activation_spread_before"] = spread_before / static_cast<double>(smoothed);
    res.metrics["activation_spread_after"] = spread_after / static_cast<double>(smoothed);
    res.notes.push_back(
        "smooth-quant (alpha " + std::to_string(alpha) + "): " + std::to_string(smoothed) +
        " activation(s) smoothed into " + std::to_string(weights) + " weight(s)" +
        (inserted ? ", " + std::to_string(inserted) + " Mul node(s) inserted" : std::string()) +
        "; calibrate again before quantize-static");
    quant::drop_unused_initializers(work, replaced);
    quant::validate_top_level(work);
    res.changed = true;
    model = std::move(work);
  }
};

}  // namespace

PassInfo smooth_quant_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "SmoothQuant: divides each MatMul/Gemm input's channels by s = a^alpha / w^(1 - alpha) (a: the "
      "calibrated "
      "channel absolute maximum, w: the weight row's) and multiplies the weight rows by s, folding 1/s into "
      "a "
      "LayerNormalization or per-channel Mul/Add before it; calibrate again afterwards";
  info.version = 1;
  info.needs_graph = true;
  info.inputs = {{ArtifactKind::Table, quant::kRangesSchema, false, "per-channel statistics from calibrate"}};
  info.options = {
      quant::in_range(quant::option_spec("alpha", OptType::Float,
                                         "migration strength: 0 leaves the activations, 1 moves all of their "
                                         "range into the weights",
                                         Value::of_float(0.5)),
                      0, 1),
      quant::option_spec("insert_mul", OptType::Bool,
                         "insert a Mul by 1/s where the producer cannot absorb it (otherwise such inputs are "
                         "left alone)",
                         Value::of_bool(false)),
  };
  info.factory = [] { return std::unique_ptr<Pass>(new SmoothQuantPass()); };
  return info;
}

}  // namespace qforge::passes
