// Cross-layer equalization: see equalize.h.
#include "equalize.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "quant_tensors.h"

namespace qforge::quant {
namespace {

bool default_domain(const Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

// A Conv's weights and bias, edited in memory until the end.
struct ConvW {
  size_t node = 0;
  std::vector<int64_t> shape;  // [M, C/group, k...]
  int64_t group = 1;
  int64_t inner = 1;  // elements per (output channel, input channel)
  std::vector<float> w, b;
  bool has_bias = false;
  int64_t out_channels() const { return shape[0]; }
  int64_t in_channels() const { return shape[1] * group; }
};

struct Pair {
  size_t first = 0, second = 0;      // indices into the ConvW list
  std::vector<std::string> between;  // values rescaled by the pair
};

// Largest |w| of each output channel of `c`.
std::vector<double> out_ranges(const ConvW& c) {
  const size_t per = static_cast<size_t>(c.shape[1] * c.inner);
  std::vector<double> r(static_cast<size_t>(c.out_channels()), 0.0);
  for (size_t e = 0; e < c.w.size(); ++e)
    r[e / per] = std::max(r[e / per], static_cast<double>(std::fabs(c.w[e])));
  return r;
}

// Calls f(element index, input channel) for every weight of `c`.
template <class F>
void each_input_weight(const ConvW& c, F&& f) {
  const int64_t M = c.shape[0], Cg = c.shape[1], per_group = M / c.group;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t g = m / per_group;
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const size_t base = static_cast<size_t>((m * Cg + ci) * c.inner);
      for (int64_t k = 0; k < c.inner; ++k) f(base + static_cast<size_t>(k), g * Cg + ci);
    }
  }
}

// Largest |w| Conv `c` applies to each input channel.
std::vector<double> in_ranges(const ConvW& c) {
  std::vector<double> r(static_cast<size_t>(c.in_channels()), 0.0);
  each_input_weight(c, [&](size_t e, int64_t ch) {
    r[static_cast<size_t>(ch)] = std::max(r[static_cast<size_t>(ch)], static_cast<double>(std::fabs(c.w[e])));
  });
  return r;
}

double spread(const std::vector<double>& r1, const std::vector<double>& r2, size_t& n) {
  double sum = 0;
  for (size_t i = 0; i < r1.size(); ++i) {
    if (r1[i] <= 0 || r2[i] <= 0) continue;
    sum += std::max(r1[i] / r2[i], r2[i] / r1[i]);
    ++n;
  }
  return sum;
}

}  // namespace

EqualizeResult equalize(Model& work, const EqualizeOptions& o) {
  EqualizeResult res;
  Graph& g = *work.graph;
  const ValueUses uses(g);
  auto f32_const = [&](const std::string& v) {
    return !v.empty() && is_constant_initializer(work, v) && work.tensor(v)->type == ElemType::F32;
  };
  auto only_reader = [&](const std::string& v, size_t node) {
    const std::vector<size_t>& r = uses.consumers_of(v);
    return r.size() == 1 && r[0] == node && !g.is_output(v);
  };
  std::vector<ConvW> convs;
  std::map<size_t, size_t> conv_of;  // node index -> index in convs
  // A Conv with an unshared f32 weight and bias, loaded once.
  auto load = [&](size_t i) -> int {
    auto it = conv_of.find(i);
    if (it != conv_of.end()) return static_cast<int>(it->second);
    const Node& n = g.nodes[i];
    if (n.op_type != "Conv" || !default_domain(n) || n.inputs.size() < 2) return -1;
    const std::string& w = n.inputs[1];
    if (!f32_const(w) || uses.consumers_of(w).size() != 1) return -1;
    ConvW c;
    c.node = i;
    c.shape = work.tensor(w)->shape;
    const Attribute* ga = n.attr("group");
    c.group = ga ? ga->i : 1;
    if (c.shape.size() < 3 || c.group < 1 || c.shape[0] % c.group != 0) return -1;
    for (size_t d = 2; d < c.shape.size(); ++d) c.inner *= c.shape[d];
    c.has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
    if (c.has_bias) {
      const std::string& b = n.inputs[2];
      if (!f32_const(b) || uses.consumers_of(b).size() != 1) return -1;
      c.b = read_f32(*work.tensor(b));
      if (static_cast<int64_t>(c.b.size()) != c.shape[0]) return -1;
    }
    c.w = read_f32(*work.tensor(w));
    conv_of[i] = convs.size();
    convs.push_back(std::move(c));
    return static_cast<int>(convs.size() - 1);
  };

  // ---------------------------------------------------------------- pairs
  std::vector<Pair> pairs;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n2 = g.nodes[i];
    if (n2.op_type != "Conv" || !default_domain(n2) || n2.inputs.empty()) continue;
    const std::string v0 = n2.inputs[0];
    int p = uses.producer_of(v0);
    if (p < 0) continue;
    std::vector<std::string> between = {v0};
    const Node* act = &g.nodes[static_cast<size_t>(p)];
    std::string why;
    if (act->op_type != "Conv") {
      if (act->inputs.empty() || !default_domain(*act)) continue;
      const int pp = uses.producer_of(act->inputs[0]);
      if (pp < 0 || g.nodes[static_cast<size_t>(pp)].op_type != "Conv") continue;
      // Conv -> act -> Conv: the pattern; is the activation homogeneous?
      if (act->op_type != "Relu" && act->op_type != "LeakyRelu") {
        res.skipped.push_back({"equalize: " + act->op_type +
                                   " between the Conv nodes (equalization passes only through Relu and "
                                   "LeakyRelu, for which act(x / s) = act(x) / s)",
                               node_label(n2, i)});
        continue;
      }
      between.push_back(act->inputs[0]);
      if (!only_reader(act->inputs[0], static_cast<size_t>(p)))
        why = "the first Conv's output has other readers";
      p = pp;
    }
    if (why.empty() && !only_reader(v0, i)) why = "the value between the Conv nodes has other readers";
    if (why.empty() && o.can_rescale)
      for (const std::string& v : between)
        if (!o.can_rescale(v))
          why = "the range of '" + v + "' cannot be rescaled (no per-channel statistics)";
    int a = -1, b = -1;
    if (why.empty()) {
      a = load(static_cast<size_t>(p));
      b = load(i);
      if (a < 0 || b < 0) why = "a Conv's weight or bias is shared, not a float constant, or malformed";
    }
    if (why.empty() &&
        convs[static_cast<size_t>(a)].out_channels() != convs[static_cast<size_t>(b)].in_channels())
      why = "the channel counts of the two Conv nodes differ";
    if (!why.empty()) {
      res.skipped.push_back({"equalize: " + why, node_label(n2, i)});
      continue;
    }
    pairs.push_back({static_cast<size_t>(a), static_cast<size_t>(b), between});
  }
  res.pairs = pairs.size();
  if (pairs.empty()) return res;

  auto total_spread = [&] {
    double sum = 0;
    size_t n = 0;
    for (const Pair& pr : pairs) sum += spread(out_ranges(convs[pr.first]), in_ranges(convs[pr.second]), n);
    return n ? sum / static_cast<double>(n) : 1.0;
  };
  res.spread_before = total_spread();

  // ---------------------------------------------------------------- sweeps
  for (const Pair& pr : pairs)
    for (const std::string& v : pr.between)
      res.scaled[v].assign(static_cast<size_t>(convs[pr.first].out_channels()), 1.0);
  for (int it = 0; it < o.max_iterations; ++it) {
    ++res.iterations;
    double worst = 0;
    for (const Pair& pr : pairs) {
      ConvW& c1 = convs[pr.first];
      ConvW& c2 = convs[pr.second];
      const std::vector<double> r1 = out_ranges(c1), r2 = in_ranges(c2);
      std::vector<double> s(r1.size(), 1.0);
      for (size_t ch = 0; ch < s.size(); ++ch)
        if (r1[ch] > 0 && r2[ch] > 0) s[ch] = std::sqrt(r1[ch] * r2[ch]) / r2[ch];
      const size_t per = static_cast<size_t>(c1.shape[1] * c1.inner);
      for (size_t e = 0; e < c1.w.size(); ++e) c1.w[e] = static_cast<float>(c1.w[e] / s[e / per]);
      if (c1.has_bias)
        for (size_t ch = 0; ch < c1.b.size(); ++ch) c1.b[ch] = static_cast<float>(c1.b[ch] / s[ch]);
      each_input_weight(c2, [&](size_t e, int64_t ch) {
        c2.w[e] = static_cast<float>(c2.w[e] * s[static_cast<size_t>(ch)]);
      });
      for (const std::string& v : pr.between)
        for (size_t ch = 0; ch < s.size(); ++ch) res.scaled[v][ch] *= s[ch];
      for (double x : s) worst = std::max(worst, std::fabs(x - 1));
    }
    if (worst < o.tolerance) break;
  }
  res.spread_after = total_spread();

  // ---------------------------------------------------------------- commit
  // The weights and biases are read by their Conv alone: new values under
  // the same names.
  std::vector<bool> used(convs.size(), false);
  for (const Pair& pr : pairs) used[pr.first] = used[pr.second] = true;
  auto replace = [&](const std::string& name, const std::vector<int64_t>& shape,
                     const std::vector<float>& v) {
    for (Tensor& t : work.tensors)
      if (t.name == name) t = make_f32_tensor(name, shape, v);
  };
  for (size_t k = 0; k < convs.size(); ++k) {
    if (!used[k]) continue;
    const ConvW& c = convs[k];
    const Node& n = g.nodes[c.node];
    replace(n.inputs[1], c.shape, c.w);
    if (c.has_bias) replace(n.inputs[2], {c.shape[0]}, c.b);
  }
  return res;
}

}  // namespace qforge::quant
