// calibrate: see calibrate.h.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "calibrate.h"
#include "collector.h"
#include "qforge/dataset.h"
#include "qforge/graph.h"
#include "qforge/half.h"
#include "qforge/status.h"
#include "quant_options.h"
#include "range_table.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "calibrate";

calib::Settings settings_of(const Options& o) {
  calib::Settings s;
  const std::string m = o.at("method").s;
  s.method = m == "percentile" ? calib::Method::Percentile
             : m == "entropy"  ? calib::Method::Entropy
             : m == "mse"      ? calib::Method::Mse
                               : calib::Method::MinMax;
  s.percentile = o.at("percentile").f;
  s.symmetric = o.at("symmetric").b;
  s.moving_average = o.at("moving_average").f;
  s.bins = static_cast<int>(o.at("bins").i);
  s.bits = static_cast<int>(o.at("bits").i);
  return s;
}

// The values that get per-channel statistics, with their channel axis: the
// data input and output of each Conv, ConvTranspose, Gemm and MatMul, and the
// outputs of BatchNormalization and Relu (which cross-layer equalization
// rescales). The axis is the last one (-1) for a value a MatMul or Gemm
// reads as its first input, else 1 (NCHW channels).
std::map<std::string, int64_t> channel_axes(const Graph& g) {
  std::map<std::string, int64_t> axes;
  auto add = [&](const std::string& v, int64_t axis) {
    if (v.empty()) return;
    auto [it, fresh] = axes.emplace(v, axis);
    if (!fresh && axis == -1) it->second = -1;  // a MatMul reader decides
  };
  for (const Node& n : g.nodes) {
    if (!(n.domain.empty() || n.domain == "ai.onnx") || n.inputs.empty() || n.outputs.empty()) continue;
    const std::string& op = n.op_type;
    if (op == "MatMul" || op == "Gemm") {
      const Attribute* ta = n.attr("transA");
      if (!(ta && ta->i != 0)) add(n.inputs[0], -1);
      add(n.outputs[0], 1);
    } else if (op == "Conv" || op == "ConvTranspose") {
      add(n.inputs[0], 1);
      add(n.outputs[0], 1);
    } else if (op == "BatchNormalization" || op == "Relu") {
      add(n.outputs[0], 1);
    }
  }
  return axes;
}

// Folds every float value the executor produces into its collector, in the
// order values first appear (deterministic: the executor's plan order).
class Observe : public Observer {
 public:
  Observe(const calib::Settings& s, std::map<std::string, int64_t> axes) : s_(s), axes_(std::move(axes)) {}
  void observe(const std::string& value, const RunValue& v) override {
    auto it = index_.find(value);
    if (it == index_.end()) {
      it = index_.emplace(value, collectors_.size()).first;
      collectors_.emplace_back(value, calib::Collector(s_));
      if (auto a = axes_.find(value); a != axes_.end() && v.type == ElemType::F32)
        channels_.emplace(value, calib::ChannelCollector(a->second));
    }
    calib::Collector& c = collectors_[it->second].second;
    const uint64_t n = v.numel();
    if (v.type == ElemType::F32) {
      c.add(v.as<float>(), n);
      if (auto ch = channels_.find(value); ch != channels_.end()) ch->second.add(v.as<float>(), v.shape);
      return;
    }
    // f16, bf16, f64: converted a piece at a time.
    std::vector<float> buf(std::min<uint64_t>(n, 1 << 16));
    for (uint64_t off = 0; off < n; off += buf.size()) {
      const uint64_t k = std::min<uint64_t>(buf.size(), n - off);
      for (uint64_t i = 0; i < k; ++i) {
        if (v.type == ElemType::F16)
          buf[i] = fp16_to_fp32(v.as<uint16_t>()[off + i]);
        else if (v.type == ElemType::BF16)
          buf[i] = bf16_to_fp32(v.as<uint16_t>()[off + i]);
        else
          buf[i] = static_cast<float>(v.as<double>()[off + i]);
      }
      c.add(buf.data(), k);
    }
  }
  const std::vector<std::pair<std::string, calib::Collector>>& collectors() const { return collectors_; }
  const calib::ChannelCollector* channels(const std::string& value) const {
    auto it = channels_.find(value);
    return it == channels_.end() ? nullptr : &it->second;
  }

 private:
  calib::Settings s_;
  std::map<std::string, int64_t> axes_;
  std::map<std::string, size_t> index_;
  std::vector<std::pair<std::string, calib::Collector>> collectors_;
  std::map<std::string, calib::ChannelCollector> channels_;
};

class CalibratePass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) override {
    PassResult res;
    res.status = guard([&] { run_impl(model, ctx, res); });
    return res;
  }

 private:
  static void run_impl(Model& model, PassContext& ctx, PassResult& res) {
    if (!model.graph) throw Error("model '" + model.source + "' has no graph; calibrate runs ONNX graphs");
    if (!ctx.executor)
      throw Error(
          "no executor is registered to run the model (the built-in 'cpu' executor, or [build] executor)");
    const Options& o = ctx.options;
    const calib::Settings settings = settings_of(o);
    const std::string ds_name = o.at("dataset").s;
    const Dataset& ds = *ctx.datasets.at(ds_name);
    size_t n = ds.size();
    if (auto it = o.find("samples"); it != o.end())
      n = std::min<size_t>(n, static_cast<size_t>(it->second.i));
    if (n == 0) throw Error("dataset '" + ds_name + "' has no samples");

    ExecOptions eo;
    eo.threads = ctx.threads;
    std::unique_ptr<PreparedModel> pm;
    Status st = ctx.executor->prepare(model, eo, pm);
    if (!st.ok) throw Error("preparing the model to run: " + st.message);
    const auto shapes = pm->input_shapes();

    Observe obs(settings,
                o.at("channel_stats").b ? channel_axes(*model.graph) : std::map<std::string, int64_t>{});
    ctx.progress.begin("calibrate", n, "samples");
    for (size_t i = 0; i < n; ++i) {
      const NamedValues in = bind_sample(ds.load(i), ds.input, shapes);
      NamedValues out;
      st = pm->run(in, out, &obs);
      if (!st.ok) throw Error(ds.files[i] + ": running the model: " + st.message);
      ctx.progress.advance(1);
    }
    ctx.progress.end();

    quant::RangeTable t;
    t.method = o.at("method").s;
    if (settings.method == calib::Method::MinMax && settings.moving_average > 0)
      t.method += " (moving average)";
    t.samples = static_cast<int64_t>(n);
    t.symmetric = settings.symmetric;
    size_t degenerate = 0;
    for (const auto& [name, c] : obs.collectors()) {
      const quant::Range r = c.range();
      if (r.min == r.max) {
        ++degenerate;
        res.skipped.push_back({"constant over every sample (min = max)", "value '" + name + "'"});
      }
      t.values.emplace_back(name, r);
      if (const calib::ChannelCollector* ch = obs.channels(name); ch && ch->valid())
        t.channels.emplace(name, ch->stats());
    }
    if (t.values.empty()) throw Error("the executor produced no float value to calibrate");
    res.table = std::make_shared<Table>(t.to_table());
    res.metrics["calibrated_values"] = static_cast<double>(t.values.size());
    res.metrics["calibration_samples"] = static_cast<double>(n);
    if (!t.channels.empty()) res.metrics["channel_stats_values"] = static_cast<double>(t.channels.size());
    res.notes.push_back("calibrate (" + t.method + "): " + std::to_string(t.values.size()) + " values over " +
                        std::to_string(n) + " samples of dataset '" + ds_name + "'");
    if (degenerate)
      res.warnings.push_back(std::to_string(degenerate) +
                             " value(s) never varied over the samples: their range is one point");
  }
};

}  // namespace

PassInfo calibrate_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "runs the model over a dataset and records each float activation's range (minmax, moving-average "
      "minmax, "
      "percentile, entropy, mse) in a range table, in memory that does not grow with the samples";
  info.version = 3;  // 2: per-channel statistics (channel_stats); 3: vectorised collectors (float bin edges)
  info.needs_graph = true;
  info.needs_executor = true;
  info.output = {ArtifactKind::Table, quant::kRangesSchema, false, "activation ranges"};
  OptionSpec dataset = quant::option_spec("dataset", OptType::Dataset, "the samples to run");
  dataset.required = true;
  OptionSpec method =
      quant::option_spec("method", OptType::Enum, "how a range is chosen", Value::of_string("minmax"));
  method.choices = {"minmax", "percentile", "entropy", "mse"};
  OptionSpec pct =
      quant::option_spec("percentile", OptType::Float, "percentile: the share of values the range keeps",
                         Value::of_float(99.999));
  pct.has_min = pct.has_max = true;
  pct.min = 50, pct.max = 100;
  OptionSpec sym = quant::option_spec("symmetric", OptType::Bool,
                                      "ranges symmetric about 0 (percentile, minmax)", Value::of_bool(false));
  OptionSpec ma = quant::option_spec(
      "moving_average", OptType::Float,
      "minmax: average each sample's min and max with this constant (0: plain min and max)",
      Value::of_float(0));
  ma.has_min = ma.has_max = true;
  ma.min = 0, ma.max = 1;
  OptionSpec samples = quant::option_spec("samples", OptType::Int,
                                          "use at most this many samples of the dataset (default: all)");
  samples.has_min = true;
  samples.min = 1;
  OptionSpec bins = quant::option_spec("bins", OptType::Int, "histogram bins (percentile, entropy, mse)",
                                       Value::of_int(2048));
  bins.int_choices = {256, 512, 1024, 2048, 4096, 8192};
  OptionSpec bits = quant::option_spec(
      "bits", OptType::Int, "entropy, mse: the integer width the range is chosen for", Value::of_int(8));
  bits.int_choices = {4, 8, 16};
  OptionSpec channels =
      quant::option_spec("channel_stats", OptType::Bool,
                         "also record per-channel min, max and mean of the values feeding and leaving Conv, "
                         "Gemm and MatMul (for bias_correction, equalize and smooth-quant)",
                         Value::of_bool(true));
  info.options = {dataset, method, pct, sym, ma, samples, bins, bits, channels};
  info.validate = [](const Options& o) {
    std::vector<OptionProblem> out;
    auto m = o.find("method");
    if (m == o.end()) return out;
    auto set = [&](const char* k) { return o.count(k) && !o.at(k).loc.file.empty(); };
    if (m->second.s != "minmax" && set("moving_average") && o.at("moving_average").f > 0)
      out.push_back({"moving_average", "applies to method 'minmax' only"});
    if (m->second.s != "percentile" && set("percentile"))
      out.push_back({"percentile", "applies to method 'percentile' only"});
    return out;
  };
  info.factory = [] { return std::unique_ptr<Pass>(new CalibratePass()); };
  return info;
}

}  // namespace qforge::passes
