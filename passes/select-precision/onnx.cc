// select-precision, the ONNX half: see select_precision.h ("ONNX models").
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "onnx_precision_plan.h"
#include "qforge/dataset.h"
#include "qforge/fidelity.h"
#include "qforge/status.h"
#include "quantize_static.h"
#include "select_precision.h"

namespace qforge::select_precision {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string db(double v) { return std::isinf(v) ? std::string("inf") : fmt("%.2f", v); }

// Runs models on the first samples of the dataset against the float model's
// outputs (computed once).
class Measurer {
 public:
  Measurer(const Model& reference, const Dataset& ds, size_t n, PassContext& ctx) : ctx_(ctx) {
    eo_.threads = ctx.threads;
    std::unique_ptr<PreparedModel> ref;
    Status st = ctx.executor->prepare(reference, eo_, ref);
    if (!st.ok) throw Error("preparing the float model to run: " + st.message);
    names_ = ref->output_names();
    const auto shapes = ref->input_shapes();
    for (size_t i = 0; i < n; ++i) {
      const Sample s = ds.load(i);
      inputs_.push_back(bind_sample(s, ds.input, shapes));
      files_.push_back(ds.files[i]);
      NamedValues out;
      st = ref->run(inputs_.back(), out);
      if (!st.ok) throw Error(ds.files[i] + ": running the float model: " + st.message);
      outputs_.push_back(std::move(out));
    }
  }

  // The worst output's fidelity over the first `n` samples.
  passes::FidelityPair measure(const Model& m, size_t n) {
    std::unique_ptr<PreparedModel> pm;
    Status st = ctx_.executor->prepare(m, eo_, pm);
    if (!st.ok) throw Error("preparing a quantized candidate to run: " + st.message);
    Fidelity fid(names_, -1);
    double per_sample = 0;
    size_t count = 0;
    for (size_t i = 0; i < n && i < inputs_.size(); ++i, ++count) {
      NamedValues out;
      st = pm->run(inputs_[i], out);
      if (!st.ok) throw Error(files_[i] + ": running a quantized candidate: " + st.message);
      fid.add(outputs_[i], out, files_[i]);
      Fidelity one(names_, -1);
      one.add(outputs_[i], out, files_[i]);
      per_sample += worst_of(one.stats()).cosine;
    }
    ++runs_;
    const FidelityStats w = worst_of(fid.stats());
    // The stricter of the cosine over every sample and the mean of the
    // samples' cosines (a few poor samples weigh more in the mean).
    return {std::min(w.cosine, count ? per_sample / static_cast<double>(count) : 1.0), w.sqnr_db};
  }
  size_t runs() const { return runs_; }

 private:
  PassContext& ctx_;
  ExecOptions eo_;
  std::vector<std::string> names_;
  std::vector<NamedValues> inputs_, outputs_;
  std::vector<std::string> files_;
  size_t runs_ = 0;
};

}  // namespace

Result select_onnx(const Model& model, const OnnxSettings& s, PassContext& ctx) {
  using passes::FidelityPair;
  using passes::OnnxPrecisionPlan;
  using passes::PlannedNode;
  if (!s.min_cosine && !s.min_sqnr_db)
    throw Error(
        "an ONNX model needs a fidelity floor: set min_cosine and/or min_sqnr_db (measured on `dataset`)");
  if (s.dataset.empty()) throw Error("an ONNX model needs `dataset`: the samples the floor is measured on");
  if (ctx.tables.empty() || !ctx.tables[0])
    throw Error(
        "select-precision on an ONNX model needs activation ranges: put a calibrate step before it "
        "([ { pass = \"calibrate\", ... }, { pass = \"select-precision\", ... }, { pass = "
        "\"quantize-static\" } ])");
  if (!ctx.executor) throw Error("no executor is registered to run the model");
  const std::string act = s.quantize.at("activation_type").s;
  if (act != "uint8" && act != "int8")
    throw Error(
        "activation_type is '" + act +
        "': the search widens 8-bit activations; set activation_type = \"uint8\" (or \"int8\") on both "
        "select-precision and quantize-static");
  const std::string widen = s.widen_to.empty() ? (act == "uint8" ? "uint16" : "int16") : s.widen_to;
  const std::string wide_label = widen == "float" ? "float" : "int16";
  const Dataset& ds = *ctx.datasets.at(s.dataset);
  size_t n = ds.size();
  if (s.samples > 0) n = std::min<size_t>(n, static_cast<size_t>(s.samples));
  if (n == 0) throw Error("dataset '" + s.dataset + "' has no samples");
  const size_t ns = std::min<size_t>(n, static_cast<size_t>(std::max<int64_t>(1, s.sensitivity_samples)));

  Measurer meas(model, ds, n, ctx);
  const std::shared_ptr<const Table> ranges = ctx.tables[0];
  NullProgress quiet;

  OnnxPrecisionPlan plan;
  plan.activation_type = act;
  plan.weight_type = s.quantize.at("weight_type").s;
  plan.per_channel = s.quantize.at("per_channel").b;
  plan.widen_to = widen;
  plan.dataset = s.dataset;
  plan.samples = static_cast<int64_t>(n);
  plan.sensitivity_samples = static_cast<int64_t>(ns);
  plan.min_cosine = s.min_cosine;
  plan.min_sqnr_db = s.min_sqnr_db;
  plan.budget_bytes = s.budget_bytes;
  plan.float_bytes = model.tensor_bytes();

  auto quantize = [&](const std::vector<PlannedNode>& nodes) {
    OnnxPrecisionPlan p = plan;
    p.nodes = nodes;
    auto t = std::make_shared<Table>(p.to_table());
    return passes::quantize_static(model, s.quantize, ranges, t, quiet, ctx.threads);
  };
  auto score = [&](const FidelityPair& f) { return s.min_cosine ? f.cosine : f.sqnr_db; };
  auto meets = [&](const FidelityPair& f) {
    return (!s.min_cosine || f.cosine >= *s.min_cosine) && (!s.min_sqnr_db || f.sqnr_db >= *s.min_sqnr_db);
  };

  // 1. Every candidate at 8 bits: the baseline, and the candidates (the nodes
  //    quantize-static quantizes, but the data-movement ops, which follow the
  //    values around them).
  passes::StaticQuantization base = quantize({});
  std::vector<PlannedNode> nodes;
  std::set<std::string> seen;
  for (const auto& [name, op] : base.quantized)
    if (!name.empty() && !passes::quantize_static_moves_values(op) && seen.insert(name).second)
      nodes.push_back({name, op, "int8", 0});
  const FidelityPair baseline = meas.measure(base.model, n);
  plan.baseline = baseline;

  Result res;
  FidelityPair achieved = baseline;
  uint64_t bytes = base.model.tensor_bytes();
  size_t k_best = 0;
  std::vector<size_t> order;
  if (!meets(baseline) && !nodes.empty()) {
    // 2. Sensitivity: what widening each node alone gains, on the first
    //    `ns` samples.
    const double base_s = ns == n ? score(baseline) : score(meas.measure(base.model, ns));
    ctx.progress.begin("select-precision", nodes.size(), "nodes");
    for (size_t i = 0; i < nodes.size(); ++i) {
      std::vector<PlannedNode> one = nodes;
      one[i].precision = wide_label;
      const FidelityPair f = meas.measure(quantize(one).model, ns);
      double gain = score(f) - base_s;
      if (std::isnan(gain)) gain = 0;
      if (std::isinf(gain)) gain = gain > 0 ? 1e9 : -1e9;
      nodes[i].sensitivity = gain;
      ctx.progress.advance(1);
    }
    ctx.progress.end();
    for (size_t i = 0; i < nodes.size(); ++i) order.push_back(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return nodes[a].sensitivity > nodes[b].sensitivity; });

    // 3. Widen the k most sensitive; the least k meeting the floor on all
    //    `n` samples, by binary search (measurements cached by k).
    std::map<size_t, std::pair<FidelityPair, uint64_t>> at;
    auto eval = [&](size_t k) {
      auto it = at.find(k);
      if (it != at.end()) return it->second;
      std::vector<PlannedNode> p = nodes;
      for (size_t j = 0; j < k; ++j) p[order[j]].precision = wide_label;
      passes::StaticQuantization q = quantize(p);
      return at[k] = {meas.measure(q.model, n), q.model.tensor_bytes()};
    };
    const auto all = eval(nodes.size());
    if (!meets(all.first))
      throw Error("the floor (" + std::string(s.min_cosine ? "cosine " + fmt("%.4f", *s.min_cosine) : "") +
                  (s.min_cosine && s.min_sqnr_db ? ", " : "") +
                  (s.min_sqnr_db ? "SQNR " + fmt("%.2f", *s.min_sqnr_db) + " dB" : "") +
                  ") is not reached even with all " + std::to_string(nodes.size()) + " candidate nodes at " +
                  widen + ": cosine " + fmt("%.6f", all.first.cosine) + ", SQNR " + db(all.first.sqnr_db) +
                  " dB on " + std::to_string(n) + " samples (8-bit: cosine " + fmt("%.6f", baseline.cosine) +
                  ")" + (widen == "float" ? "" : "; try widen_to = \"float\""));
    size_t lo = 1, hi = nodes.size();
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if (meets(eval(mid).first))
        hi = mid;
      else
        lo = mid + 1;
    }
    k_best = lo;
    achieved = eval(k_best).first;
    bytes = eval(k_best).second;
    for (size_t j = 0; j < k_best; ++j) nodes[order[j]].precision = wide_label;
  }
  if (s.budget_bytes && bytes > *s.budget_bytes)
    throw Error("the plan meeting the floor takes " + std::to_string(bytes) + " bytes of tensors (" +
                std::to_string(k_best) + " node(s) at " + widen + "), over the budget of " +
                std::to_string(*s.budget_bytes) + " bytes");
  plan.achieved = achieved;
  plan.model_bytes = bytes;
  plan.nodes = nodes;
  plan.method = std::string("sensitivity per node (widened alone, ") + std::to_string(ns) +
                " samples), then the fewest most sensitive widened to " + widen + " meeting the floor on " +
                std::to_string(n) + " samples (binary search)";

  const auto c = plan.counts();
  res.metrics["cosine"] = achieved.cosine;
  res.metrics["sqnr_db"] = achieved.sqnr_db;
  res.metrics["baseline_cosine"] = baseline.cosine;
  res.metrics["baseline_sqnr_db"] = baseline.sqnr_db;
  res.metrics["wide_nodes"] = static_cast<double>(k_best);
  res.metrics["float_nodes"] = c.at("float");
  res.metrics["int16_nodes"] = c.at("int16");
  res.metrics["int8_nodes"] = c.at("int8");
  res.metrics["model_bytes"] = static_cast<double>(bytes);
  res.metrics["float_bytes"] = static_cast<double>(plan.float_bytes);
  res.metrics["size_ratio"] = plan.float_bytes ? static_cast<double>(bytes) / plan.float_bytes : 0;
  res.metrics["measurements"] = static_cast<double>(meas.runs());
  res.notes.push_back("select-precision: " + std::to_string(nodes.size()) + " candidate node(s); all at " +
                      act + ": cosine " + fmt("%.6f", baseline.cosine) + ", SQNR " + db(baseline.sqnr_db) +
                      " dB; " + std::to_string(k_best) + " widened to " + widen + ": cosine " +
                      fmt("%.6f", achieved.cosine) + ", SQNR " + db(achieved.sqnr_db) + " dB on " +
                      std::to_string(n) + " samples of '" + s.dataset + "'; tensors " +
                      std::to_string(bytes) + " bytes (" + fmt("%.1f", 100.0 * res.metrics["size_ratio"]) +
                      "% of float)");
  for (size_t j = 0; j < k_best; ++j) {
    const PlannedNode& nd = nodes[order[j]];
    res.notes.push_back("select-precision: widened '" + nd.name + "' (" + nd.op + ") to " + widen +
                        ": sensitivity " + fmt("%.6g", nd.sensitivity) +
                        (s.min_cosine ? " cosine" : " dB SQNR") + " gained alone");
  }
  res.onnx_plan = std::make_shared<Table>(plan.to_table());
  return res;
}

}  // namespace qforge::select_precision
