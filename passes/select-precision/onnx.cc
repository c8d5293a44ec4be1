// select-precision, the ONNX half: see select_precision.h ("ONNX models").
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "onnx_precision_plan.h"
#include "qforge/dataset.h"
#include "qforge/fidelity.h"
#include "qforge/graph.h"
#include "qforge/status.h"
#include "quantize_static.h"
#include "select_precision.h"

namespace qforge::select_precision {
namespace {

// Measurements (on all samples) the give-back step may spend.
constexpr size_t kGiveBackMeasurements = 64;

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

namespace {

std::string floor_text(const OnnxSettings& s) {
  return std::string(s.min_cosine ? "cosine " + fmt("%.4f", *s.min_cosine) : "") +
         (s.min_cosine && s.min_sqnr_db ? ", " : "") +
         (s.min_sqnr_db ? "SQNR " + fmt("%.2f", *s.min_sqnr_db) + " dB" : "");
}

// The tensor bytes leaving `node` in float adds to the 8-bit model `q`: per
// float initializer it reads that quantize-static replaced (it is gone from
// `q`), its float bytes less those of the tensors quantize-static derived
// from it, which it names after it (`W_quantized`, `W_scale`,
// `W_bn_folded_quantized`, ...: `q_names` sorted; tensors of the float model
// are not derived). One it kept (Clip's bounds) adds nothing. A shared initializer counts fully for each
// reader (the plan's bytes are measured, not summed).
int64_t float_cost(const Model& model, const Model& q, const std::vector<std::string>& q_names,
                   const Node& node) {
  int64_t extra = 0;
  std::set<std::string> done;
  for (const auto& in : node.inputs) {
    if (in.empty() || !done.insert(in).second || q.tensor(in)) continue;
    const Tensor* t = model.tensor(in);
    if (!t || (t->type != ElemType::F32 && t->type != ElemType::F16 && t->type != ElemType::BF16)) continue;
    const std::string prefix = in + "_";
    int64_t stored = 0;
    for (auto it = std::lower_bound(q_names.begin(), q_names.end(), prefix);
         it != q_names.end() && it->compare(0, prefix.size(), prefix) == 0; ++it)
      if (!model.tensor(*it)) stored += static_cast<int64_t>(q.tensor(*it)->nbytes());
    extra += static_cast<int64_t>(t->nbytes()) - stored;
  }
  return extra;
}

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
  // The levels, in order of cost: at most one 16-bit type, then float.
  const std::vector<std::string> levels =
      s.widen_to.empty() ? std::vector<std::string>{act == "uint8" ? "uint16" : "int16"} : s.widen_to;
  std::string wide16;
  bool to_float = false;
  for (const auto& l : levels) {
    if (l == "float")
      to_float = true;
    else if (wide16.empty())
      wide16 = l;
    else
      throw Error("widen_to lists two 16-bit types ('" + wide16 + "', '" + l + "'): keep one");
  }
  std::string levels_text;
  for (const auto& l : levels) levels_text += (levels_text.empty() ? "" : ", ") + l;
  auto level_of = [&](const std::string& precision) { return precision == "int16" ? wide16 : precision; };
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
  plan.widen_to = wide16.empty() ? "float" : wide16;
  plan.levels = levels;
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
  auto finite = [](double g) { return std::isnan(g) ? 0.0 : std::isinf(g) ? (g > 0 ? 1e9 : -1e9) : g; };

  // 1. Every candidate at 8 bits: the baseline, and the candidates (the nodes
  //    quantize-static quantizes, but the data-movement ops, which follow the
  //    values around them).
  passes::StaticQuantization base = quantize({});
  std::vector<PlannedNode> nodes;
  std::set<std::string> seen;
  for (const auto& [name, op] : base.quantized)
    if (!name.empty() && !passes::quantize_static_moves_values(op) && seen.insert(name).second)
      nodes.push_back({name, op, "int8", 0, 0});
  const FidelityPair baseline = meas.measure(base.model, n);
  plan.baseline = baseline;

  // Every configuration measured on all `n` samples, by its precisions.
  struct Point {
    FidelityPair fid;
    uint64_t bytes = 0;
  };
  std::map<std::vector<std::string>, Point> measured;
  auto precisions = [](const std::vector<PlannedNode>& p) {
    std::vector<std::string> k;
    for (const auto& nd : p) k.push_back(nd.precision);
    return k;
  };
  auto eval = [&](const std::vector<PlannedNode>& p) {
    const auto key = precisions(p);
    if (auto it = measured.find(key); it != measured.end()) return it->second;
    passes::StaticQuantization q = quantize(p);
    return measured[key] = {meas.measure(q.model, n), q.model.tensor_bytes()};
  };
  measured[precisions(nodes)] = {baseline, base.model.tensor_bytes()};

  size_t paid = 0, given_back = 0, free_wide = 0, costly_candidates = 0, untried = 0;
  std::string paid_order, paid_other;  // the order the paid widenings came from; the other's result
  auto check_budget = [&](const Point& p) {
    if (s.budget_bytes && p.bytes > *s.budget_bytes)
      throw Error("the cheapest plan found meeting the floor (" + floor_text(s) + ") takes " +
                  std::to_string(p.bytes) + " bytes of tensors (" + std::to_string(paid) +
                  " node(s) with weights in float, cosine " + fmt("%.6f", p.fid.cosine) +
                  "), over the budget of " + std::to_string(*s.budget_bytes) +
                  " bytes; raise the budget or lower the floor");
  };
  Result res;
  std::vector<PlannedNode> chosen = nodes;
  Point at = measured[precisions(nodes)];
  FidelityPair free_fid = baseline;
  std::vector<bool> paid_node(nodes.size(), false);
  if (!meets(baseline) && !nodes.empty()) {
    std::map<std::string, const Node*> by_name;
    for (const Node& nd : model.graph->nodes) by_name.emplace(nd.name, &nd);
    std::vector<std::string> q_names;
    for (const Tensor& t : base.model.tensors) q_names.push_back(t.name);
    std::sort(q_names.begin(), q_names.end());
    // 2. Levels: a node's free level is its highest that adds no bytes.
    std::vector<PlannedNode> fpt = nodes;
    std::vector<bool> weighted(nodes.size(), false);
    for (size_t i = 0; i < nodes.size(); ++i) {
      auto it = by_name.find(nodes[i].name);
      const int64_t cost = it == by_name.end() ? 0 : float_cost(model, base.model, q_names, *it->second);
      nodes[i].cost_bytes = std::max<int64_t>(cost, 0);
      weighted[i] = cost > 0;
      costly_candidates += to_float && weighted[i];
      if (to_float && !weighted[i])
        fpt[i].precision = "float";
      else if (!wide16.empty())
        fpt[i].precision = "int16";
    }
    // 3. The free point.
    const Point fp = eval(fpt);
    free_fid = fp.fid;
    chosen = fpt;
    at = fp;
    for (const auto& nd : fpt) free_wide += nd.precision != "int8";

    // 4. Paid widenings: float for the nodes with weights, ranked by gain per byte.
    if (!meets(fp.fid)) {
      std::vector<size_t> costly;
      for (size_t i = 0; i < nodes.size(); ++i)
        if (to_float && weighted[i]) costly.push_back(i);
      std::vector<PlannedNode> all = fpt;
      for (size_t i : costly) all[i].precision = "float";
      if (costly.empty() || !meets(eval(all).fid)) {
        const Point top = costly.empty() ? fp : eval(all);
        throw Error("the floor (" + floor_text(s) + ") is not reached even with all " +
                    std::to_string(nodes.size()) + " candidate nodes at their highest level (widen_to = [" +
                    levels_text + "]): cosine " + fmt("%.6f", top.fid.cosine) + ", SQNR " +
                    db(top.fid.sqnr_db) + " dB on " + std::to_string(n) + " samples (8-bit: cosine " +
                    fmt("%.6f", baseline.cosine) + ")" +
                    (to_float ? "" : "; try widen_to = [\"" + wide16 + "\", \"float\"]"));
      }
      const double free_s = ns == n ? score(fp.fid) : score(meas.measure(quantize(fpt).model, ns));
      ctx.progress.begin("select-precision", costly.size(), "nodes with weights");
      for (size_t i : costly) {
        std::vector<PlannedNode> one = fpt;
        one[i].precision = "float";
        nodes[i].sensitivity = finite(score(meas.measure(quantize(one).model, ns)) - free_s);
        ctx.progress.advance(1);
      }
      ctx.progress.end();
      // Two orders: by measured gain per byte (no gain last, by gain), and
      // by cost alone, the cheapest first (one node's gain on top of the free
      // point can be below what the samples resolve while many small ones
      // together matter). In each, the fewest meeting the floor on all
      // samples (binary search); the plan takes the one with fewer bytes.
      std::vector<size_t> by_gain = costly, by_cost = costly;
      auto rank = [&](size_t i) {
        const double g = nodes[i].sensitivity;
        if (g > 0) return std::make_pair(0, -g / static_cast<double>(nodes[i].cost_bytes));
        return std::make_pair(1, -g);
      };
      std::stable_sort(by_gain.begin(), by_gain.end(), [&](size_t a, size_t b) { return rank(a) < rank(b); });
      std::stable_sort(by_cost.begin(), by_cost.end(),
                       [&](size_t a, size_t b) { return nodes[a].cost_bytes < nodes[b].cost_bytes; });
      auto with = [&](const std::vector<size_t>& order, size_t k) {
        std::vector<PlannedNode> p = fpt;
        for (size_t j = 0; j < k; ++j) p[order[j]].precision = "float";
        return p;
      };
      auto fewest = [&](const std::vector<size_t>& order) {
        size_t lo = 1, hi = order.size();
        while (lo < hi) {
          const size_t mid = lo + (hi - lo) / 2;
          if (meets(eval(with(order, mid)).fid))
            hi = mid;
          else
            lo = mid + 1;
        }
        return lo;
      };
      const size_t k_gain = fewest(by_gain), k_cost = fewest(by_cost);
      const Point p_gain = eval(with(by_gain, k_gain)), p_cost = eval(with(by_cost, k_cost));
      const bool cost_wins = p_cost.bytes < p_gain.bytes || (p_cost.bytes == p_gain.bytes && k_cost < k_gain);
      paid_order = cost_wins ? "cheapest first" : "gain per byte";
      paid_other = std::to_string(cost_wins ? k_gain : k_cost) + " node(s), " +
                   std::to_string(cost_wins ? p_gain.bytes : p_cost.bytes) + " bytes by " +
                   (cost_wins ? "gain per byte" : "cheapest first");
      const std::vector<size_t>& order = cost_wins ? by_cost : by_gain;
      paid = cost_wins ? k_cost : k_gain;
      chosen = with(order, paid);
      at = eval(chosen);
      for (size_t j = 0; j < paid; ++j) paid_node[order[j]] = true;
    }
    check_budget(at);

    // 5. Give back the free widenings the floor does not need: blocks of
    //    them in graph order, measured on all samples, largest first (the
    //    whole set, then halves of a block that cannot go back, ...), at
    //    most kGiveBackMeasurements measurements.
    std::vector<size_t> back;
    for (size_t i = 0; i < nodes.size(); ++i)
      if (!paid_node[i] && chosen[i].precision != "int8") back.push_back(i);
    std::deque<std::pair<size_t, size_t>> blocks;  // [begin, end) in `back`
    if (!back.empty() && s.give_back) blocks.push_back({0, back.size()});
    size_t tries = 0;
    if (!blocks.empty())
      ctx.progress.begin("select-precision", kGiveBackMeasurements, "give-back measurements");
    while (!blocks.empty() && tries < kGiveBackMeasurements) {
      const auto [b0, b1] = blocks.front();
      blocks.pop_front();
      std::vector<PlannedNode> p = chosen;
      for (size_t j = b0; j < b1; ++j) p[back[j]].precision = "int8";
      const bool known = measured.count(precisions(p)) > 0;
      const Point r = eval(p);
      if (!known) {
        ++tries;
        ctx.progress.advance(1);
      }
      if (meets(r.fid)) {
        chosen = p;
        at = r;
        given_back += b1 - b0;
      } else if (b1 - b0 > 1) {
        const size_t mid = b0 + (b1 - b0) / 2;
        blocks.push_back({b0, mid});
        blocks.push_back({mid, b1});
      }
    }
    if (!back.empty() && s.give_back) ctx.progress.end();
    for (const auto& [b0, b1] : blocks) untried += b1 - b0;
  }
  check_budget(at);
  for (size_t i = 0; i < nodes.size(); ++i) nodes[i].precision = chosen[i].precision;
  const FidelityPair achieved = at.fid;
  const uint64_t bytes = at.bytes;
  plan.achieved = achieved;
  plan.model_bytes = bytes;
  plan.nodes = nodes;
  const std::string what = s.min_cosine ? "cosine" : "SQNR";
  plan.method =
      "size-aware over widen_to = [" + levels_text + "]: every node at its highest level adding no bytes (" +
      std::string(to_float ? "float without weights" : "") + (to_float && !wide16.empty() ? ", " : "") +
      (wide16.empty() ? "" : wide16 + " with weights") +
      "); if that misses the floor, nodes with weights put in float: the fewest meeting the floor (binary "
      "search) in two rankings, by " +
      what + " gain per byte alone (" + std::to_string(ns) +
      " samples) and by bytes, cheapest first, keeping the one with fewer bytes" +
      (paid_order.empty() ? std::string() : " (here: " + paid_order + ")") +
      (s.give_back
           ? "; then the free widenings the floor does not need given back to 8 bits in blocks in graph "
             "order (all, then halves of a block that cannot go back, at most " +
                 std::to_string(kGiveBackMeasurements) + " measurements)"
           : std::string("; no give-back (give_back = false)")) +
      "; floor measured on " + std::to_string(n) + " samples";

  const auto c = plan.counts();
  size_t wide = 0;
  for (const auto& nd : nodes) wide += nd.precision != "int8";
  res.metrics["cosine"] = achieved.cosine;
  res.metrics["sqnr_db"] = achieved.sqnr_db;
  res.metrics["baseline_cosine"] = baseline.cosine;
  res.metrics["baseline_sqnr_db"] = baseline.sqnr_db;
  res.metrics["free_cosine"] = free_fid.cosine;
  res.metrics["free_sqnr_db"] = free_fid.sqnr_db;
  res.metrics["wide_nodes"] = static_cast<double>(wide);
  res.metrics["float_nodes"] = c.at("float");
  res.metrics["int16_nodes"] = c.at("int16");
  res.metrics["int8_nodes"] = c.at("int8");
  res.metrics["paid_nodes"] = static_cast<double>(paid);
  res.metrics["given_back_nodes"] = static_cast<double>(given_back);
  res.metrics["model_bytes"] = static_cast<double>(bytes);
  res.metrics["float_bytes"] = static_cast<double>(plan.float_bytes);
  res.metrics["size_ratio"] = plan.float_bytes ? static_cast<double>(bytes) / plan.float_bytes : 0;
  res.metrics["measurements"] = static_cast<double>(meas.runs());
  res.notes.push_back("select-precision: " + std::to_string(nodes.size()) + " candidate node(s); all at " +
                      act + ": cosine " + fmt("%.6f", baseline.cosine) + ", SQNR " + db(baseline.sqnr_db) +
                      " dB; " + std::to_string(wide) + " widened (" + std::to_string(c.at("int16")) + " to " +
                      (wide16.empty() ? "16-bit" : wide16) + ", " + std::to_string(c.at("float")) +
                      " to float): cosine " + fmt("%.6f", achieved.cosine) + ", SQNR " +
                      db(achieved.sqnr_db) + " dB on " + std::to_string(n) + " samples of '" + s.dataset +
                      "'; tensors " + std::to_string(bytes) + " bytes (" +
                      fmt("%.1f", 100.0 * res.metrics["size_ratio"]) + "% of float)");
  if (!meets(baseline) && !nodes.empty())
    res.notes.push_back(
        "select-precision: free point (" + std::to_string(free_wide) +
        " node(s) widened at no byte cost): cosine " + fmt("%.6f", free_fid.cosine) + ", SQNR " +
        db(free_fid.sqnr_db) + " dB; " + std::to_string(paid) + " of " + std::to_string(costly_candidates) +
        " node(s) with weights put in float at a cost" +
        (paid_order.empty() ? "" : " (ranked " + paid_order + "; " + paid_other + ")") + "; " +
        (!s.give_back
             ? std::string("giving back free widenings is off (give_back = false)")
             : std::to_string(given_back) + " free widening(s) given back to " + act +
                   (untried ? " (" + std::to_string(untried) + " not tried: the give-back step stops after " +
                                  std::to_string(kGiveBackMeasurements) + " measurements)"
                            : std::string())));
  for (size_t i = 0; i < nodes.size(); ++i) {
    const PlannedNode& nd = nodes[i];
    if (nd.precision == "int8") continue;
    res.notes.push_back(
        "select-precision: widened '" + nd.name + "' (" + nd.op + ") to " + level_of(nd.precision) + ": " +
        (paid_node[i] ? std::to_string(nd.cost_bytes) + " extra bytes, " + fmt("%.6g", nd.sensitivity) +
                            (s.min_cosine ? " cosine" : " dB SQNR") + " gained over the free point alone"
                      : std::string("0 extra bytes (free)")));
  }
  res.onnx_plan = std::make_shared<Table>(plan.to_table());
  return res;
}

}  // namespace qforge::select_precision
