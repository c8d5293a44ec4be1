// evaluate: see evaluate.h.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "evaluate.h"
#include "qforge/dataset.h"
#include "qforge/fidelity.h"
#include "qforge/status.h"
#include "quant_options.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "evaluate";

// The prepared model's inputs bound from a sample, each checked against the
// declared shape (dimensions < 0 match any size).
NamedValues inputs_of(const Sample& s, const Dataset& ds, const PreparedModel& pm) {
  const auto shapes = pm.input_shapes();
  NamedValues in = bind_sample(s, ds.input, shapes);
  for (const auto& [name, v] : in)
    for (const auto& [input, dims] : shapes) {
      if (input != name) continue;
      bool fits = dims.size() == v.shape.size();
      for (size_t d = 0; fits && d < dims.size(); ++d) fits = dims[d] < 0 || dims[d] == v.shape[d];
      if (!fits)
        throw Error(s.source + ": input '" + name + "' expects " + shape_str(dims) + ", found " +
                    shape_str(v.shape) + " (dataset '" + ds.name + "')");
    }
  return in;
}

Value stats_value(const FidelityStats& f) {
  Value v;
  v.kind = Value::Kind::Table;
  v.table = {{"cosine", Value::of_float(f.cosine)},
             {"sqnr_db", Value::of_float(f.sqnr_db)},
             {"max_abs_err", Value::of_float(f.max_abs_err)},
             {"argmax_agreement", Value::of_float(f.argmax_agreement)},
             {"elements", Value::of_int(static_cast<int64_t>(f.elements))},
             {"argmax_rows", Value::of_int(static_cast<int64_t>(f.rows))}};
  return v;
}

// The report's metrics: `key` for the worst output, `key[output]` for each.
void add_metrics(std::map<std::string, double>& m, const FidelityStats& f, const std::string& suffix) {
  m["cosine" + suffix] = f.cosine;
  m["sqnr_db" + suffix] = f.sqnr_db;
  m["max_abs_err" + suffix] = f.max_abs_err;
  m["argmax_agreement" + suffix] = f.argmax_agreement;
}

std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

class EvaluatePass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) override {
    PassResult res;
    res.status = guard([&] { run_impl(model, ctx, res); });
    return res;
  }

 private:
  static void run_impl(const Model& model, PassContext& ctx, PassResult& res) {
    if (!model.graph) throw Error("model '" + model.source + "' has no graph; evaluate runs ONNX graphs");
    if (!ctx.executor)
      throw Error(
          "no executor is registered to run the model (the built-in 'cpu' executor, or [build] executor)");
    if (!ctx.reference)
      throw Error(
          "the model as imported is not available to compare with (the engine passes it to steps "
          "that need a reference: a bug)");
    const Options& o = ctx.options;
    const std::string ds_name = o.at("dataset").s;
    const Dataset& ds = *ctx.datasets.at(ds_name);
    size_t n = ds.size();
    if (auto it = o.find("samples"); it != o.end())
      n = std::min<size_t>(n, static_cast<size_t>(it->second.i));
    if (n == 0) throw Error("dataset '" + ds_name + "' has no samples");
    const int axis = static_cast<int>(o.at("argmax_axis").i);

    ExecOptions eo;
    eo.threads = ctx.threads;
    std::unique_ptr<PreparedModel> ref, var;
    Status st = ctx.executor->prepare(*ctx.reference, eo, ref);
    if (!st.ok) throw Error("preparing the reference (the model as imported) to run: " + st.message);
    st = ctx.executor->prepare(model, eo, var);
    if (!st.ok) throw Error("preparing the model to run: " + st.message);
    const auto names = ref->output_names();
    if (var->output_names().size() != names.size())
      throw Error("the model has " + std::to_string(var->output_names().size()) +
                  " outputs and the reference " + std::to_string(names.size()) +
                  ": outputs are compared by position");

    Fidelity fid(names, axis);
    ctx.progress.begin("evaluate", n, "samples");
    for (size_t i = 0; i < n; ++i) {
      const Sample s = ds.load(i);
      NamedValues ro, vo;
      st = ref->run(inputs_of(s, ds, *ref), ro);
      if (!st.ok) throw Error(ds.files[i] + ": running the reference (the model as imported): " + st.message);
      st = var->run(inputs_of(s, ds, *var), vo);
      if (!st.ok) throw Error(ds.files[i] + ": running the model: " + st.message);
      fid.add(ro, vo, ds.files[i]);
      ctx.progress.advance(1);
    }
    ctx.progress.end();

    const auto per_output = fid.stats();
    const FidelityStats worst = worst_of(per_output);
    Value outputs;
    outputs.kind = Value::Kind::Table;
    for (const auto& [name, f] : per_output) {
      outputs.table.emplace_back(name, stats_value(f));
      add_metrics(res.metrics, f, "[" + name + "]");
    }
    add_metrics(res.metrics, worst, "");
    res.metrics["evaluation_samples"] = static_cast<double>(n);

    auto t = std::make_shared<Table>();
    t->schema = kFidelitySchema;
    t->data.kind = Value::Kind::Table;
    t->data.table = {{"reference", Value::of_string(o.at("reference").s)},
                     {"dataset", Value::of_string(ds_name)},
                     {"samples", Value::of_int(static_cast<int64_t>(n))},
                     {"argmax_axis", Value::of_int(axis)},
                     {"worst", stats_value(worst)},
                     {"outputs", outputs}};
    res.table = t;
    res.notes.push_back("evaluate: " + std::to_string(n) + " samples of dataset '" + ds_name +
                        "' against the model as imported, " + std::to_string(per_output.size()) +
                        " output(s); worst cosine " + fmt("%.6f", worst.cosine) + ", SQNR " +
                        (std::isinf(worst.sqnr_db) ? std::string("inf") : fmt("%.2f", worst.sqnr_db)) +
                        " dB, max abs error " + fmt("%.4g", worst.max_abs_err) + ", argmax agreement " +
                        fmt("%.2f", 100 * worst.argmax_agreement) + "%");
  }
};

}  // namespace

PassInfo evaluate_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "runs the model as imported and the model at this step on the same samples of a dataset and records, "
      "per output, cosine similarity, SQNR (dB), max absolute error and argmax agreement in the report "
      "(the worst output as `cosine`, `sqnr_db`, ...); changes no model, in memory that does not grow with "
      "the samples";
  info.version = 1;
  info.needs_graph = true;
  info.needs_executor = true;
  info.needs_reference = true;
  info.output = {ArtifactKind::Table, kFidelitySchema, false, "per-output fidelity against the reference"};
  OptionSpec dataset = quant::option_spec("dataset", OptType::Dataset, "the samples to run both models on");
  dataset.required = true;
  OptionSpec reference =
      quant::option_spec("reference", OptType::Enum,
                         "what the model is compared with: `imported` is the model as imported (the "
                         "float model, before any step)",
                         Value::of_string("imported"));
  reference.choices = {"imported"};
  OptionSpec samples = quant::option_spec("samples", OptType::Int,
                                          "use at most this many samples of the dataset (default: all)");
  samples.has_min = true;
  samples.min = 1;
  OptionSpec axis = quant::option_spec(
      "argmax_axis", OptType::Int, "the axis argmax agreement is measured along (negative: from the last)",
      Value::of_int(-1));
  info.options = {dataset, reference, samples, axis};
  info.factory = [] { return std::unique_ptr<Pass>(new EvaluatePass()); };
  return info;
}

}  // namespace qforge::passes
