// Accuracy options of quantize-static: see accuracy.h.
#include "accuracy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "equalize.h"
#include "onnx_quant_util.h"
#include "qforge/status.h"

namespace qforge::passes::accuracy {

std::vector<float> QuantizedWeight::dequantized() const {
  std::vector<float> out(codes.size());
  for (size_t e = 0; e < codes.size(); ++e) {
    const quant::ScaleZp& p = params[static_cast<size_t>(channel_of(e))];
    out[e] = static_cast<float>(codes[e] - p.zero_point) * p.scale;
  }
  return out;
}

double squared_error(const std::vector<float>& values, const quant::ScaleZp& p, quant::QRange r) {
  double err = 0;
  for (float x : values) {
    const double d = static_cast<double>(quant::quantize_value(x, p, r) - p.zero_point) * p.scale - x;
    err += d * d;
  }
  return err;
}

quant::ScaleZp mse_clip(const std::vector<float>& values, quant::QRange r, bool symmetric) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (float x : values) lo = std::min(lo, x), hi = std::max(hi, x);
  if (!(lo <= hi)) lo = hi = 0;
  constexpr int kCandidates = 100;
  quant::ScaleZp best = quant::compute_scale_zp(lo, hi, r, symmetric);
  double best_err = squared_error(values, best, r);
  for (int k = 1; k < kCandidates; ++k) {
    const float ratio = 1.0f - 0.5f * static_cast<float>(k) / static_cast<float>(kCandidates - 1);
    const quant::ScaleZp p = quant::compute_scale_zp(lo * ratio, hi * ratio, r, symmetric);
    const double err = squared_error(values, p, r);
    if (err < best_err) best_err = err, best = p;
  }
  return best;
}

QuantizedWeight quantize_weight(const std::vector<float>& v, const std::vector<int64_t>& shape, int64_t axis,
                                const WeightScheme& s) {
  QuantizedWeight q;
  q.inner = static_cast<int64_t>(v.size());
  if (axis >= 0) {
    q.channels = shape[static_cast<size_t>(axis)];
    q.inner = 1;
    for (size_t d = static_cast<size_t>(axis) + 1; d < shape.size(); ++d) q.inner *= shape[d];
  }
  const quant::QRange r = quant::qrange(s.type, s.symmetric, s.reduce_range);
  const size_t C = static_cast<size_t>(q.channels);
  q.params.resize(C);
  if (s.clip == WeightClip::Mse) {
    std::vector<std::vector<float>> per(C);
    for (size_t e = 0; e < v.size(); ++e) per[static_cast<size_t>(q.channel_of(e))].push_back(v[e]);
    for (size_t c = 0; c < C; ++c) q.params[c] = mse_clip(per[c], r, s.symmetric);
  } else {
    std::vector<float> lo(C, std::numeric_limits<float>::infinity()), hi(C, -lo[0]);
    for (size_t e = 0; e < v.size(); ++e) {
      const size_t c = static_cast<size_t>(q.channel_of(e));
      lo[c] = std::min(lo[c], v[e]);
      hi[c] = std::max(hi[c], v[e]);
    }
    for (size_t c = 0; c < C; ++c) {
      if (!(lo[c] <= hi[c])) lo[c] = hi[c] = 0;  // an empty channel
      q.params[c] = quant::compute_scale_zp(lo[c], hi[c], r, s.symmetric);
    }
  }
  q.codes.resize(v.size());
  for (size_t e = 0; e < v.size(); ++e)
    q.codes[e] = quant::quantize_value(v[e], q.params[static_cast<size_t>(q.channel_of(e))], r);
  return q;
}

std::vector<double> conv_output_shift(const std::vector<float>& w, const std::vector<float>& wq,
                                      const std::vector<int64_t>& shape, int64_t group,
                                      const std::vector<double>& mean) {
  const int64_t M = shape[0], Cg = shape[1];
  int64_t inner = 1;
  for (size_t d = 2; d < shape.size(); ++d) inner *= shape[d];
  const int64_t per_group = M / group;
  std::vector<double> shift(static_cast<size_t>(M), 0.0);
  for (int64_t m = 0; m < M; ++m) {
    const int64_t g = m / per_group;
    double acc = 0;
    for (int64_t c = 0; c < Cg; ++c) {
      const double mu = mean[static_cast<size_t>(g * Cg + c)];
      const size_t base = static_cast<size_t>((m * Cg + c) * inner);
      double d = 0;
      for (int64_t k = 0; k < inner; ++k)
        d += static_cast<double>(wq[base + static_cast<size_t>(k)]) - w[base + static_cast<size_t>(k)];
      acc += d * mu;
    }
    shift[static_cast<size_t>(m)] = acc;
  }
  return shift;
}

std::vector<double> matmul_output_shift(const std::vector<float>& w, const std::vector<float>& wq, int64_t K,
                                        int64_t N, bool transposed, const std::vector<double>& mean) {
  std::vector<double> shift(static_cast<size_t>(N), 0.0);
  for (int64_t k = 0; k < K; ++k) {
    const double mu = mean[static_cast<size_t>(k)];
    for (int64_t n = 0; n < N; ++n) {
      const size_t e = static_cast<size_t>(transposed ? n * K + k : k * N + n);
      shift[static_cast<size_t>(n)] += (static_cast<double>(wq[e]) - w[e]) * mu;
    }
  }
  return shift;
}

namespace {

bool is_f32_const(const Model& m, const std::string& v) {
  return !v.empty() && quant::is_constant_initializer(m, v) && m.tensor(v)->type == ElemType::F32;
}

// The means of `value` along `axis` (1 or -1) when the table has them for
// `channels` channels.
const std::vector<double>* means_of(const quant::RangeTable& t, const std::string& value, int64_t axis,
                                    int64_t channels) {
  const quant::ChannelStats* cs = t.channel_stats(value);
  if (!cs || cs->axis != axis || static_cast<int64_t>(cs->channels()) != channels) return nullptr;
  return &cs->mean;
}

// Gives the initializer `name` new f32 values (same name and shape).
void replace_f32(Model& m, const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
  for (Tensor& t : m.tensors)
    if (t.name == name) {
      t = quant::make_f32_tensor(name, std::move(shape), v);
      return;
    }
}

std::vector<float> minus(const std::vector<float>& b, const std::vector<double>& shift, double factor) {
  std::vector<float> out(b.size());
  for (size_t i = 0; i < b.size(); ++i)
    out[i] = static_cast<float>(static_cast<double>(b[i]) - factor * shift[i]);
  return out;
}

}  // namespace

std::vector<std::string> correct_biases(Model& work, std::vector<BiasTarget>& targets, const WeightScheme& s,
                                        const quant::RangeTable& table, std::vector<std::string>& replaced,
                                        PassResult& res) {
  std::vector<std::string> changed_constants;
  Graph& g = *work.graph;
  if (table.channels.empty()) {
    res.metrics["bias_corrected"] = 0;
    res.notes.push_back(
        "quantize-static: bias_correction skipped: the range table has no per-channel statistics "
        "(calibrate with channel_stats = true, the default since calibrate version 2)");
    return changed_constants;
  }
  NameAllocator names(work);
  size_t corrected = 0, added = 0, skipped = 0;
  const ValueUses uses(g);
  for (BiasTarget& t : targets) {
    Node& n = g.nodes[t.node];
    auto skip = [&](const std::string& why) {
      res.skipped.push_back({"bias_correction: " + why, quant::node_label(n, t.node)});
      ++skipped;
    };
    if (n.inputs.size() < 2 || !is_f32_const(work, n.inputs[1])) continue;
    const std::string& x = n.inputs[0];
    const Tensor& wt = *work.tensor(n.inputs[1]);
    const std::vector<float> w = quant::read_f32(wt);
    const std::vector<int64_t>& shape = wt.shape;
    // The output shift, the bias slot (or the Add's constant) and its length.
    std::vector<double> shift;
    double factor = 1;  // Gemm: alpha
    if (n.op_type == "Conv") {
      const Attribute* ga = n.attr("group");
      const int64_t group = ga ? ga->i : 1;
      if (shape.size() < 3 || group < 1 || shape[0] % group != 0) continue;
      const std::vector<double>* mean = means_of(table, x, 1, shape[1] * group);
      if (!mean) {
        skip("no per-channel means of the input in the range table (calibrate with channel_stats = true)");
        continue;
      }
      const QuantizedWeight q = quantize_weight(w, shape, t.axis, s);
      shift = conv_output_shift(w, q.dequantized(), shape, group, *mean);
    } else if (n.op_type == "Gemm" || n.op_type == "MatMul") {
      if (shape.size() != 2) {
        skip("weight is not a matrix");
        continue;
      }
      bool trans_b = false;
      if (n.op_type == "Gemm") {
        const Attribute* ta = n.attr("transA");
        const Attribute* tb = n.attr("transB");
        const Attribute* beta = n.attr("beta");
        const Attribute* alpha = n.attr("alpha");
        if (ta && ta->i != 0) {
          skip("Gemm with transA = 1");
          continue;
        }
        if (beta && beta->f != 1.0f) {
          skip("Gemm with beta != 1");
          continue;
        }
        trans_b = tb && tb->i != 0;
        factor = alpha ? alpha->f : 1.0;
      }
      const int64_t K = trans_b ? shape[1] : shape[0], N = trans_b ? shape[0] : shape[1];
      const std::vector<double>* mean = means_of(table, x, -1, K);
      if (!mean) {
        skip("no per-channel means of the input in the range table (calibrate with channel_stats = true)");
        continue;
      }
      const QuantizedWeight q = quantize_weight(w, shape, t.axis, s);
      shift = matmul_output_shift(w, q.dequantized(), K, N, trans_b, *mean);
    } else {
      continue;
    }
    const int64_t M = static_cast<int64_t>(shift.size());
    if (n.op_type == "MatMul") {
      // MatMul has no bias: the constant of an Add right after it (its only
      // reader), changed in place when nothing else reads it.
      const std::string& y = n.outputs[0];
      const std::vector<size_t>& readers = uses.consumers_of(y);
      const Node* add = readers.size() == 1 ? &g.nodes[readers[0]] : nullptr;
      if (!add || g.is_output(y) || add->op_type != "Add" ||
          !(add->domain.empty() || add->domain == "ai.onnx") || add->inputs.size() != 2) {
        skip("MatMul not followed by an Add of a constant bias (nothing to absorb the shift)");
        continue;
      }
      const std::string& b = add->inputs[0] == y ? add->inputs[1] : add->inputs[0];
      const Tensor* bt = is_f32_const(work, b) ? work.tensor(b) : nullptr;
      bool per_col = bt && !bt->shape.empty() && bt->shape.back() == M;
      for (size_t d = 0; bt && d + 1 < bt->shape.size(); ++d) per_col = per_col && bt->shape[d] == 1;
      if (!per_col || uses.consumers_of(b).size() != 1 || g.is_output(b)) {
        skip("the Add after the MatMul does not add a constant with one value per column read by it alone");
        continue;
      }
      const std::vector<float> values = minus(quant::read_f32(*bt), shift, factor);
      replace_f32(work, b, bt->shape, values);
      changed_constants.push_back(b);
      ++corrected;
      continue;
    }
    const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
    if (has_bias) {
      const std::string b = n.inputs[2];
      const Tensor* bt = is_f32_const(work, b) ? work.tensor(b) : nullptr;
      if (!bt || bt->shape.size() != 1 || bt->shape[0] != M) {
        skip("bias is not a 1-D float constant with one value per output channel");
        continue;
      }
      const std::vector<float> values = minus(quant::read_f32(*bt), shift, factor);
      if (uses.consumers_of(b).size() == 1 && !g.is_output(b)) {
        replace_f32(work, b, {M}, values);  // read by this node alone: keeps its name
      } else {
        const std::string name = names.fresh(b + "_corrected");
        work.tensors.push_back(quant::make_f32_tensor(name, {M}, values));
        replaced.push_back(b);
        n.inputs[2] = name;
      }
    } else {
      const std::string name = names.fresh(n.inputs[1] + "_bias");
      work.tensors.push_back(quant::make_f32_tensor(
          name, {M}, minus(std::vector<float>(static_cast<size_t>(M), 0.0f), shift, factor)));
      n.inputs.resize(3);
      n.inputs[2] = name;
      t.bias = 2;
      ++added;
    }
    ++corrected;
  }
  res.metrics["bias_corrected"] = static_cast<double>(corrected);
  res.notes.push_back("quantize-static: bias correction in " + std::to_string(corrected) + " node(s)" +
                      (added ? " (" + std::to_string(added) + " given a bias)" : std::string()) +
                      (skipped ? ", " + std::to_string(skipped) + " left alone" : std::string()));
  return changed_constants;
}

void equalize_calibrated(Model& work, quant::RangeTable& table, PassResult& res) {
  if (table.channels.empty()) {
    res.notes.push_back(
        "quantize-static: equalize skipped: the range table has no per-channel statistics (calibrate with "
        "channel_stats = true, the default since calibrate version 2)");
    return;
  }
  quant::EqualizeOptions eo;
  eo.can_rescale = [&](const std::string& v) {
    const quant::ChannelStats* cs = table.channel_stats(v);
    return !table.find(v) || (cs && cs->axis == 1);
  };
  quant::EqualizeResult eq = quant::equalize(work, eo);
  rescale_ranges(table, eq.scaled);
  res.metrics["equalized_pairs"] = static_cast<double>(eq.pairs);
  if (eq.pairs)
    res.notes.push_back("quantize-static: equalized " + std::to_string(eq.pairs) +
                        " Conv pair(s) (channel range spread " + std::to_string(eq.spread_before) + " -> " +
                        std::to_string(eq.spread_after) + ")");
  for (Skipped& sk : eq.skipped) res.skipped.push_back(std::move(sk));
}

std::vector<std::string> rescale_ranges(quant::RangeTable& table,
                                        const std::map<std::string, std::vector<double>>& scaled) {
  std::vector<std::string> missing;
  for (const auto& [value, s] : scaled) {
    auto it = table.channels.find(value);
    quant::Range* r = table.find(value);
    if (!r) continue;  // not calibrated: nothing to rescale
    if (it == table.channels.end() || it->second.axis != 1 || it->second.channels() != s.size()) {
      missing.push_back(value);
      continue;
    }
    quant::ChannelStats& cs = it->second;
    double old_lo = 0, old_hi = 0, new_lo = 0, new_hi = 0;
    for (size_t c = 0; c < s.size(); ++c) {
      old_lo = std::min(old_lo, cs.min[c]), old_hi = std::max(old_hi, cs.max[c]);
      cs.min[c] /= s[c], cs.max[c] /= s[c], cs.mean[c] /= s[c];
      new_lo = std::min(new_lo, cs.min[c]), new_hi = std::max(new_hi, cs.max[c]);
    }
    if (old_lo < 0) r->min *= new_lo / old_lo;
    if (old_hi > 0) r->max *= new_hi / old_hi;
  }
  return missing;
}

}  // namespace qforge::passes::accuracy
