// fold-batchnorm: an inference BatchNormalization right after a Conv,
// ConvTranspose or Gemm (with constant weights) folded into that node's
// weights and bias (docs/manifest.md, "Pre-processing passes"):
//   y = scale * (x - mean) / sqrt(var + epsilon) + B = a * x + b per channel,
// so the weights of each output channel are multiplied by a and the bias
// becomes bias * a + b.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "fold-batchnorm";
const std::vector<std::string> kInto = {"Conv", "ConvTranspose", "Gemm"};

bool default_domain(const Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

// An f32 constant initializer's values, or a reason why not.
bool const_f32(const Model& m, const std::string& name, std::vector<float>& out, std::string& reason) {
  if (name.empty() || !quant::is_constant_initializer(m, name)) {
    reason = "'" + name + "' is not a constant initializer";
    return false;
  }
  const Tensor* t = m.tensor(name);
  if (t->type != ElemType::F32) {
    reason = "'" + name + "' is " + std::string(name_of(t->type)) + "; only float32 is folded";
    return false;
  }
  out = quant::read_f32(*t);
  return true;
}

class FoldBatchnormPass : public quant::RewritePass {
 private:
  // Folds BatchNormalization node `bi`; false with `reason` when it cannot.
  bool fold(Model& m, size_t bi, const std::vector<std::string>& into_ops, NameAllocator& names,
            std::vector<std::string>& old_inits, std::string& reason) {
    Graph& g = *m.graph;
    const Node bn = g.nodes[bi];
    if (bn.inputs.size() < 5) {
      reason = "it has fewer than 5 inputs";
      return false;
    }
    if (const Attribute* t = bn.attr("training_mode"); t && t->i != 0) {
      reason = "training_mode = 1 (batch statistics)";
      return false;
    }
    if (const Attribute* s = bn.attr("spatial"); s && s->i == 0) {
      reason = "spatial = 0 (statistics per activation, not per channel)";
      return false;
    }
    for (size_t k = 1; k < bn.outputs.size(); ++k) {
      if (!bn.outputs[k].empty() && (g.is_output(bn.outputs[k]) || !g.consumers(bn.outputs[k]).empty())) {
        reason = "its running statistics outputs are used (training graph)";
        return false;
      }
    }
    std::vector<float> scale, bias_bn, mean, var, w, bias;
    if (!const_f32(m, bn.inputs[1], scale, reason) || !const_f32(m, bn.inputs[2], bias_bn, reason) ||
        !const_f32(m, bn.inputs[3], mean, reason) || !const_f32(m, bn.inputs[4], var, reason)) {
      reason = "parameter " + reason;
      return false;
    }
    const std::string x = bn.inputs[0];
    int pi = g.producer(x);
    if (pi < 0) {
      reason = "its input is not produced by a node";
      return false;
    }
    if (g.is_output(x) || g.consumers(x).size() != 1) {
      reason = "its input has other readers";
      return false;
    }
    // Conv -> Add(constant per-channel bias) -> BatchNormalization, as
    // Paddle2ONNX writes a ConvTranspose's bias: the Add joins the bias.
    int add_i = -1;
    std::string conv_out;
    std::vector<float> extra;
    if (g.nodes[static_cast<size_t>(pi)].op_type == "Add" &&
        default_domain(g.nodes[static_cast<size_t>(pi)])) {
      const Node& add = g.nodes[static_cast<size_t>(pi)];
      if (add.inputs.size() != 2) {
        reason = "its input comes from a malformed Add";
        return false;
      }
      const int k = quant::is_constant_initializer(m, add.inputs[1]) ? 1 : 0;
      const std::string c_name = add.inputs[static_cast<size_t>(k)];
      const std::string y = add.inputs[static_cast<size_t>(1 - k)];
      const int ci = g.producer(y);
      const Node* conv = ci >= 0 ? &g.nodes[static_cast<size_t>(ci)] : nullptr;
      if (!conv || !default_domain(*conv) || (conv->op_type != "Conv" && conv->op_type != "ConvTranspose")) {
        reason = "its input comes from an Add that does not add a constant to a Conv or ConvTranspose";
        return false;
      }
      if (!const_f32(m, c_name, extra, reason)) {
        reason = "its input comes from an Add whose other input " + reason;
        return false;
      }
      if (g.is_output(y) || g.consumers(y).size() != 1) {
        reason = "the " + conv->op_type + " before the Add has other readers";
        return false;
      }
      // The constant must broadcast per output channel (axis 1 of a
      // rank-r output, r = the weight's rank) or be one value.
      const Tensor* wt0 = conv->inputs.size() > 1 ? m.tensor(conv->inputs[1]) : nullptr;
      const std::vector<int64_t>& cs = m.tensor(c_name)->shape;
      const int64_t r = wt0 ? static_cast<int64_t>(wt0->shape.size()) : 0;
      bool per_channel = extra.size() == 1;
      if (!per_channel && extra.size() == scale.size() && static_cast<int64_t>(cs.size()) <= r) {
        per_channel = true;
        for (size_t j = 0; j < cs.size(); ++j) {
          const int64_t axis = r - static_cast<int64_t>(cs.size()) + static_cast<int64_t>(j);
          if (cs[j] != 1 && axis != 1) per_channel = false;
        }
      }
      if (!per_channel) {
        reason = "its input comes from an Add of '" + c_name + "', which is not one value per channel";
        return false;
      }
      if (extra.size() == 1) extra.assign(scale.size(), extra[0]);
      add_i = pi;
      conv_out = y;
      pi = ci;
    }
    const Node& p = g.nodes[static_cast<size_t>(pi)];
    if (!default_domain(p) || (p.op_type != "Conv" && p.op_type != "ConvTranspose" && p.op_type != "Gemm")) {
      reason = "its input comes from " + p.op_type + ", not a Conv, ConvTranspose or Gemm";
      return false;
    }
    if (std::find(into_ops.begin(), into_ops.end(), p.op_type) == into_ops.end()) {
      reason = "its input comes from " + p.op_type + ", which is not among the option 'into'";
      return false;
    }
    if (p.inputs.size() < 2) {
      reason = "the " + p.op_type + " has no weight input";
      return false;
    }
    if (!const_f32(m, p.inputs[1], w, reason)) {
      reason = "the " + p.op_type + " weight " + reason;
      return false;
    }
    const Tensor& wt = *m.tensor(p.inputs[1]);
    const std::string bias_name = p.inputs.size() > 2 ? p.inputs[2] : "";
    if (!bias_name.empty() && !const_f32(m, bias_name, bias, reason)) {
      reason = "the " + p.op_type + " bias " + reason;
      return false;
    }
    if (!extra.empty()) {
      if (bias.empty()) bias.assign(extra.size(), 0.0f);
      if (bias.size() != extra.size()) {
        reason =
            "the bias has " + std::to_string(bias.size()) + " values, not " + std::to_string(extra.size());
        return false;
      }
      for (size_t k = 0; k < bias.size(); ++k) bias[k] += extra[k];
    }
    const Attribute* eps_attr = bn.attr("epsilon");
    const double eps = eps_attr ? eps_attr->f : 1e-5;
    const size_t c = scale.size();
    if (bias_bn.size() != c || mean.size() != c || var.size() != c) {
      reason = "its parameters differ in length";
      return false;
    }
    std::vector<double> a(c), b(c);
    for (size_t k = 0; k < c; ++k) {
      a[k] = static_cast<double>(scale[k]) / std::sqrt(static_cast<double>(var[k]) + eps);
      b[k] = static_cast<double>(bias_bn[k]) - static_cast<double>(mean[k]) * a[k];
    }
    // channel_of[e]: the output channel weight element e belongs to.
    const std::vector<int64_t>& ws = wt.shape;
    std::vector<float> new_w(w.size());
    std::vector<float> new_bias(c);
    double beta = 1.0;
    if (p.op_type == "Conv" || p.op_type == "ConvTranspose") {
      if (ws.size() < 2) {
        reason = "the weight has rank " + std::to_string(ws.size());
        return false;
      }
      int64_t inner = 1;
      for (size_t k = 2; k < ws.size(); ++k) inner *= ws[k];
      const Attribute* ga = p.attr("group");
      const int64_t group = ga ? ga->i : 1;
      const int64_t out_ch = p.op_type == "Conv" ? ws[0] : ws[1] * group;
      if (group < 1 || static_cast<int64_t>(c) != out_ch ||
          (p.op_type == "ConvTranspose" && ws[0] % group != 0)) {
        reason = "it has " + std::to_string(c) + " channels but the " + p.op_type + " has " +
                 std::to_string(out_ch) + " output channels";
        return false;
      }
      for (int64_t i0 = 0; i0 < ws[0]; ++i0) {
        for (int64_t i1 = 0; i1 < ws[1]; ++i1) {
          // Conv: [M, C/group, k...]; ConvTranspose: [C, M/group, k...] where
          // input channel i0 belongs to group i0 / (C/group).
          const int64_t ch = p.op_type == "Conv" ? i0 : (i0 / (ws[0] / group)) * ws[1] + i1;
          const size_t base = static_cast<size_t>((i0 * ws[1] + i1) * inner);
          for (int64_t e = 0; e < inner; ++e) {
            new_w[base + static_cast<size_t>(e)] = static_cast<float>(
                static_cast<double>(w[base + static_cast<size_t>(e)]) * a[static_cast<size_t>(ch)]);
          }
        }
      }
      if (!bias.empty() && bias.size() != c) {
        reason = "the bias has " + std::to_string(bias.size()) + " values, not " + std::to_string(c);
        return false;
      }
    } else {  // Gemm: Y = alpha * A' B' + beta * C, channels are B' columns
      if (ws.size() != 2) {
        reason = "the Gemm's B has rank " + std::to_string(ws.size());
        return false;
      }
      const Attribute* tb = p.attr("transB");
      const bool trans_b = tb && tb->i != 0;
      const int64_t n = trans_b ? ws[0] : ws[1];
      if (static_cast<int64_t>(c) != n) {
        reason =
            "it has " + std::to_string(c) + " channels but the Gemm has " + std::to_string(n) + " columns";
        return false;
      }
      for (int64_t r = 0; r < ws[0]; ++r) {
        for (int64_t col = 0; col < ws[1]; ++col) {
          const size_t e = static_cast<size_t>(r * ws[1] + col);
          new_w[e] =
              static_cast<float>(static_cast<double>(w[e]) * a[static_cast<size_t>(trans_b ? r : col)]);
        }
      }
      if (const Attribute* be = p.attr("beta")) beta = be->f;
      if (!bias.empty()) {
        const std::vector<int64_t>& cs = m.tensor(bias_name)->shape;
        const bool per_col = bias.size() == c && (cs.size() == 1 || (cs.size() == 2 && cs[0] == 1));
        const bool scalar = bias.size() == 1;
        if (!per_col && !scalar) {
          reason = "the Gemm's C is neither a scalar nor one value per column";
          return false;
        }
        if (scalar) bias.assign(c, bias[0]);
      }
    }
    for (size_t k = 0; k < c; ++k) {
      const double old = bias.empty() ? 0.0 : beta * static_cast<double>(bias[k]);
      new_bias[k] = static_cast<float>(old * a[k] + b[k]);
    }
    // Commit: new tensors (the old ones may have other readers), the
    // producer takes the BatchNormalization's output.
    const std::string w_name = names.fresh(p.inputs[1] + "_bnfold");
    const std::string b_name = names.fresh((bias_name.empty() ? p.inputs[1] : bias_name) + "_bnfold");
    m.tensors.push_back(quant::make_f32_tensor(w_name, ws, new_w));
    m.tensors.push_back(quant::make_f32_tensor(b_name, {static_cast<int64_t>(c)}, new_bias));
    for (size_t k = 1; k < bn.inputs.size(); ++k) old_inits.push_back(bn.inputs[k]);
    old_inits.push_back(p.inputs[1]);
    if (!bias_name.empty()) old_inits.push_back(bias_name);
    Node& pm = g.nodes[static_cast<size_t>(pi)];
    pm.inputs[1] = w_name;
    if (pm.inputs.size() < 3) pm.inputs.resize(3);
    pm.inputs[2] = b_name;
    if (pm.op_type == "Gemm") {
      if (Attribute* be = pm.attr("beta")) {
        be->f = 1.0f;
      } else {
        pm.attributes.push_back(Attribute::of_float("beta", 1.0f));
      }
    }
    pm.outputs[0] = bn.outputs[0];
    std::vector<size_t> gone = {bi};
    if (add_i >= 0) {
      gone.push_back(static_cast<size_t>(add_i));
      for (const std::string& in : g.nodes[static_cast<size_t>(add_i)].inputs) old_inits.push_back(in);
    }
    g.remove_nodes(gone);
    for (size_t k = 0; k < g.value_info.size();) {
      const std::string& v = g.value_info[k].name;
      if (v == x || (!conv_out.empty() && v == conv_out)) {
        g.value_info.erase(g.value_info.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        ++k;
      }
    }
    return true;
  }

  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    const std::vector<std::string> into_ops = quant::opt_list(ctx.options, kPass, "into", kInto);
    Model work = quant::working_copy(model, "fold-batchnorm rewrites ONNX graphs");
    const quant::NormalizeStats ns = quant::normalize_weights(work);
    quant::note_normalized(ns, res);
    NameAllocator names(work);
    std::vector<std::string> old_inits;
    size_t folded = 0, seen = 0;
    std::map<std::string, size_t> into;
    for (size_t i = 0; i < work.graph->nodes.size();) {
      const Node& n = work.graph->nodes[i];
      if (n.op_type != "BatchNormalization" || !default_domain(n)) {
        ++i;
        continue;
      }
      ++seen;
      const std::string label = quant::node_label(n, i);
      const std::string out = n.outputs.empty() ? "" : n.outputs[0];
      const int pi = work.graph->producer(n.inputs.empty() ? "" : n.inputs[0]);
      const bool through_add = pi >= 0 && work.graph->nodes[static_cast<size_t>(pi)].op_type == "Add";
      std::string reason;
      if (fold(work, i, into_ops, names, old_inits, reason)) {
        ++folded;
        const int now = work.graph->producer(out);
        ++into[(now >= 0 ? work.graph->nodes[static_cast<size_t>(now)].op_type : "?") +
               (through_add ? " (with the Add of its bias)" : "")];
        continue;  // node i is gone: the next one moved here
      }
      res.skipped.push_back({reason, label});
      ++i;
    }
    res.metrics["batchnorms_seen"] = static_cast<double>(seen);
    res.metrics["batchnorms_folded"] = static_cast<double>(folded);
    if (folded == 0) {
      res.warnings.push_back(seen == 0 ? "the model has no BatchNormalization node"
                                       : "no BatchNormalization could be folded (" + std::to_string(seen) +
                                             " left alone; see the skipped list)");
      return;
    }
    std::string what;
    for (const auto& [op, k] : into) what += (what.empty() ? "" : ", ") + std::to_string(k) + " into " + op;
    res.notes.push_back("folded " + std::to_string(folded) + " of " + std::to_string(seen) +
                        " BatchNormalization nodes (" + what + ")");
    quant::drop_unused_initializers(work, old_inits);
    quant::validate_top_level(work);
    res.changed = true;
    model = std::move(work);
  }
};

}  // namespace

PassInfo fold_batchnorm_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "folds inference BatchNormalization into the weights and bias of the Conv, ConvTranspose or Gemm "
      "before it";
  info.version = 1;
  info.needs_graph = true;
  info.options = {quant::option_spec("into", OptType::List, "the ops a BatchNormalization may be folded into",
                                     quant::string_list(kInto), kInto)};
  info.options.back().unordered = true;
  info.factory = [] { return std::unique_ptr<Pass>(new FoldBatchnormPass()); };
  return info;
}

}  // namespace qforge::passes
