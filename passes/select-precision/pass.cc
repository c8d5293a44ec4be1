// select-precision: the pass (options, validation, report lines); see select_precision.h.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qforge/diag.h"
#include "qforge/status.h"
#include "quant_options.h"
#include "quantize_gguf.h"
#include "range_table.h"
#include "select_precision.h"
#include "sensitivity.h"

namespace qforge::select_precision {
namespace {

constexpr const char* kPass = "select-precision";

const std::vector<std::string> kDefaultTypes = {"Q2_K", "Q3_K", "Q4_0", "Q4_K",
                                                "Q5_0", "Q5_K", "Q6_K", "Q8_0"};

// The quantize-static options the ONNX search mirrors, with quantize-static's defaults.
const std::vector<std::pair<std::string, Value>>& mirrored() {
  static const std::vector<std::pair<std::string, Value>> m = {
      {"activation_type", Value::of_string("uint8")},
      {"weight_type", Value::of_string("int8")},
      {"per_channel", Value::of_bool(false)},
      {"activation_symmetric", Value::of_bool(false)},
      {"weight_symmetric", Value()},
      {"qdq_domain", Value::of_string("ai.onnx")},
      {"per_channel_ops", Value()},
      {"shared_scale_ops", Value()},
      {"fixed_outputs", Value()}};
  return m;
}

std::optional<double> number(const Options& o, const char* name) {
  if (auto it = o.find(name); it != o.end() && !it->second.is_null()) return it->second.as_number();
  return std::nullopt;
}

OnnxSettings onnx_settings_of(const Options& o) {
  OnnxSettings s;
  if (auto it = o.find("dataset"); it != o.end() && !it->second.is_null()) s.dataset = it->second.s;
  s.min_cosine = number(o, "min_cosine");
  s.min_sqnr_db = number(o, "min_sqnr_db");
  if (auto it = o.find("budget"); it != o.end() && !it->second.is_null()) {
    SizeValue sv;
    if (!parse_size(it->second.s, sv) || sv.unit != SizeValue::Unit::Bytes)
      throw Error("budget '" + it->second.s +
                  "': an ONNX model's budget is a size in bytes (\"5MB\", \"123456\"), the tensors' bytes");
    s.budget_bytes = static_cast<uint64_t>(sv.value);
  }
  if (auto it = o.find("widen_to"); it != o.end() && !it->second.is_null()) {
    if (it->second.kind == Value::Kind::String) s.widen_to.push_back(it->second.s);
    for (const auto& v : it->second.list) s.widen_to.push_back(v.s);
  }
  if (auto it = o.find("samples"); it != o.end() && !it->second.is_null()) s.samples = it->second.i;
  s.sensitivity_samples = o.at("sensitivity_samples").i;
  if (auto it = o.find("give_back"); it != o.end() && it->second.kind == Value::Kind::Bool)
    s.give_back = it->second.b;
  for (const auto& [name, dflt] : mirrored()) {
    auto it = o.find(name);
    if (it != o.end() && !it->second.is_null())
      s.quantize[name] = it->second;
    else if (!dflt.is_null())
      s.quantize[name] = dflt;
  }
  return s;
}

Settings settings_of(const Options& o) {
  Settings s;
  auto b = o.find("budget");
  if (b == o.end() || b->second.is_null())
    throw Error("a GGUF model needs `budget`: the size to fit (\"3.5GiB\", \"4.5bpw\", \"Q4_K_M\")");
  s.budget = b->second.s;
  for (const auto& v : o.at("types").list) s.types.push_back(v.s);
  if (auto it = o.find("imatrix"); it != o.end() && !it->second.is_null()) {
    s.imatrix = it->second.s;
    s.imatrix_written = it->second.written.empty() ? it->second.s : it->second.written;
  }
  if (auto it = o.find("min_cosine"); it != o.end() && !it->second.is_null())
    s.min_cosine = it->second.as_number();
  if (auto it = o.find("min_sqnr_db"); it != o.end() && !it->second.is_null())
    s.min_sqnr_db = it->second.as_number();
  s.max_rows = o.at("max_rows").i;
  s.objective = o.at("objective").s;
  if (auto it = o.find("max_error"); it != o.end() && !it->second.is_null()) s.max_error = it->second.s;
  return s;
}

class SelectPrecisionPass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) override {
    PassResult r;
    r.status = guard([&] {
      if (model.graph) {
        if (ctx.options.at("objective").s != "error")
          throw Error("objective = \"" + ctx.options.at("objective").s +
                      "\" is for GGUF llama models; an ONNX model's plan is measured on `dataset` against "
                      "min_cosine / min_sqnr_db (remove objective)");
        Result res = select_onnx(model, onnx_settings_of(ctx.options), ctx);
        r.table = res.onnx_plan;
        r.metrics = std::move(res.metrics);
        r.notes = std::move(res.notes);
        r.warnings = std::move(res.warnings);
        return;
      }
      Settings s = settings_of(ctx.options);
      if (ctx.tables.size() > 1) s.sensitivity = ctx.tables[1];
      Result res = select(model, s, ctx.threads, ctx.progress);
      r.table = std::make_shared<Table>(res.plan.to_table());
      r.metrics = std::move(res.metrics);
      r.notes = std::move(res.notes);
      r.warnings = std::move(res.warnings);
    });
    return r;
  }
};

std::vector<OptionProblem> validate(const Options& o) {
  std::vector<OptionProblem> out;
  auto given = [&](const char* k) {
    auto it = o.find(k);
    return it != o.end() && !it->second.is_null();
  };
  if (auto it = o.find("objective");
      it != o.end() && it->second.kind == Value::Kind::String && it->second.s == "kl" && given("dataset"))
    out.push_back(
        {"objective",
         "objective = \"kl\" is for GGUF models and reads its token sequences from a gguf-sensitivity "
         "step, not from `dataset` (an ONNX model's samples): move the dataset to that step"});
  if (given("max_error")) {
    auto ob = o.find("objective");
    if (ob == o.end() || ob->second.kind != Value::Kind::String || ob->second.s != "kl")
      out.push_back({"max_error", "bounds the weight error of a KL plan: needs objective = \"kl\""});
    auto b = o.find("budget");
    if (o.at("max_error").s == "reference" && b != o.end() && b->second.kind == Value::Kind::String) {
      SizeValue sv;
      if (parse_size(b->second.s, sv))
        out.push_back(
            {"max_error",
             "\"reference\" is the error of the llama.cpp mixture a file-type budget names (budget = "
             "\"Q4_K_M\"), but budget is '" +
                 b->second.s + "'"});
    }
  }
  if (!given("budget") && !given("dataset"))
    out.push_back({"budget",
                   "needs option 'budget' (GGUF: the size to fit); an ONNX model needs `dataset` and "
                   "min_cosine or min_sqnr_db instead"});
  else if (given("dataset") && !given("min_cosine") && !given("min_sqnr_db"))
    out.push_back({"dataset", "needs a fidelity floor to measure on it: min_cosine and/or min_sqnr_db"});
  if (auto it = o.find("budget"); it != o.end() && it->second.kind == Value::Kind::String) {
    SizeValue sv;
    if (!parse_size(it->second.s, sv)) {
      try {
        gguf_quant::parse_file_type(it->second.s);
      } catch (const Error&) {
        out.push_back({"budget", "'" + it->second.s +
                                     "' is not a size (\"3.5GiB\", \"500MB\", bytes), bits per weight "
                                     "(\"4.5bpw\") or a llama.cpp file type (\"Q4_K_M\")"});
      }
    }
  }
  if (auto it = o.find("widen_to"); it != o.end() && it->second.kind == Value::Kind::List) {
    const auto& l = it->second.list;
    std::vector<std::string> seen;
    for (size_t i = 0; i < l.size(); ++i) {
      const std::string& v = l[i].s;
      if (std::find(seen.begin(), seen.end(), v) != seen.end())
        out.push_back({"widen_to", "lists '" + v + "' twice"});
      else if (v != "float" && !seen.empty() && seen.back() != "float")
        out.push_back({"widen_to", "lists two 16-bit types ('" + seen.back() + "', '" + v +
                                       "'): a plan has one; keep one of them"});
      else if (v != "float" && std::find(seen.begin(), seen.end(), "float") != seen.end())
        out.push_back({"widen_to", "lists '" + v +
                                       "' after 'float': list the levels in order of cost, the 16-bit type "
                                       "first (widen_to = [\"" +
                                       v + "\", \"float\"])"});
      seen.push_back(v);
    }
    if (l.empty())
      out.push_back({"widen_to", "needs at least one level (\"uint16\", \"int16\" or \"float\")"});
  }
  if (auto it = o.find("types"); it != o.end() && it->second.kind == Value::Kind::List) {
    std::vector<std::string> known;
    for (ElemType t : all_elem_types())
      if (traits(t).ggml_id >= 0) known.push_back(name_of(t));
    if (it->second.list.empty()) out.push_back({"types", "needs at least one tensor type"});
    for (const auto& v : it->second.list) {
      auto t = elem_from_name(v.s);
      if (!t || traits(*t).ggml_id < 0)
        out.push_back({"types", "unknown tensor type '" + v.s + "'" + did_you_mean(v.s, known)});
    }
  }
  return out;
}

}  // namespace

PassInfo pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "GGUF: chooses a type per tensor that minimises the measured (imatrix-weighted) quantization error "
      "within a size budget; ONNX: widens nodes (16-bit activations and/or float, the levels widen_to lists) "
      "until a fidelity floor measured with the executor on a dataset is met, at the fewest extra bytes it "
      "finds, then gives back the widenings not needed: a precision plan the next quantize-gguf or "
      "quantize-static step follows";
  // 2: the ONNX half; 3: size-aware, multi-level ONNX search; 4: measures
  // quantize-static 7 (float Conv/ConvTranspose/Gemm read unquantized inputs).
  info.version = 4;
  info.needs_executor = true;
  info.inputs = {{ArtifactKind::Table, quant::kRangesSchema, true,
                  "activation ranges from calibrate (ONNX models; GGUF ignores it)"},
                 {ArtifactKind::Table, kSensitivitySchema, true,
                  "next-token KL sensitivities from gguf-sensitivity (GGUF, objective = \"kl\")"}};
  info.output = {ArtifactKind::Table, gguf_quant::kPrecisionSchema, false, "a precision plan"};
  OptionSpec budget = quant::option_spec(
      "budget", OptType::String,
      "the size to fit: the file in bytes (\"3.5GiB\", \"500MB\", \"123456\"), tensor data "
      "bits per weight (\"4.5bpw\"), or the size of a llama.cpp file type's mixture "
      "(\"Q4_K_M\"); default: the profile's [memory] budget. Required for GGUF; for ONNX optional, "
      "bytes of the quantized model's tensors");
  Value types;
  types.kind = Value::Kind::List;
  for (const auto& t : kDefaultTypes) types.list.push_back(Value::of_string(t));
  OptionSpec ty =
      quant::option_spec("types", OptType::List,
                         "candidate tensor types (a tensor gets one whose block size divides its rows); "
                         "default with a profile: its [gguf] fast_types",
                         types);
  ty.unordered = true;
  OptionSpec im = quant::option_spec(
      "imatrix", OptType::Path,
      "importance matrix (llama-imatrix GGUF or legacy .dat) weighting each column's error; "
      "give quantize-gguf the same one");
  OptionSpec cos = quant::option_spec(
      "min_cosine", OptType::Float,
      "GGUF: drop a tensor's candidate types whose weight cosine similarity is below this; "
      "ONNX: the least cosine of the worst output against the float model on `dataset`");
  cos.has_min = cos.has_max = true;
  cos.min = 0, cos.max = 1;
  OptionSpec sq = quant::option_spec(
      "min_sqnr_db", OptType::Float,
      "GGUF: drop a tensor's candidate types whose weight SQNR (dB) is below this; ONNX: the "
      "least SQNR (dB) of the worst output on `dataset`");
  OptionSpec rows = quant::option_spec(
      "max_rows", OptType::Int, "rows measured per tensor (evenly spaced, the error scaled up); 0: every row",
      Value::of_int(4096));
  rows.has_min = true;
  rows.min = 0;
  using quant::option_spec;
  OptionSpec ds =
      quant::option_spec("dataset", OptType::Dataset,
                         "ONNX: the samples the floor is measured on (held out from calibration, ideally)");
  OptionSpec samples =
      quant::option_spec("samples", OptType::Int, "ONNX: use at most this many samples (default: all)");
  samples.has_min = true;
  samples.min = 1;
  OptionSpec sens = quant::option_spec(
      "sensitivity_samples", OptType::Int,
      "ONNX: samples each node's sensitivity is measured on (the first ones)", Value::of_int(4));
  sens.has_min = true;
  sens.min = 1;
  OptionSpec widen = option_spec(
      "widen_to", OptType::List,
      "ONNX: the levels a widened node may get, in order of cost: 16-bit activations (uint16 or int16; "
      "weights unchanged) and/or float (left alone), one (\"float\") or a list ([\"uint16\", \"float\"]); "
      "the search spends bytes only where free levels miss the floor; default: the 16-bit type of "
      "activation_type, with a profile the first its [onnx] allows, else float",
      {}, {"uint16", "int16", "float"});
  OptionSpec back =
      option_spec("give_back", OptType::Bool,
                  "ONNX: after meeting the floor, give the free widenings it does not need back to "
                  "8 bits (fewer wide nodes; the plan then sits closer to the floor)",
                  Value::of_bool(true));
  const std::string same = "; give quantize-static the same (the plan is checked against it)";
  OptionSpec objective = option_spec(
      "objective", OptType::Enum,
      "GGUF: what the plan minimises: \"error\", the summed (imatrix-weighted) weight error, or \"kl\", the "
      "summed next-token KL sensitivities a gguf-sensitivity step before this one measured (a first-order "
      "estimate)",
      Value::of_string("error"), {"error", "kl"});
  OptionSpec max_error = option_spec(
      "max_error", OptType::String,
      "GGUF, objective = \"kl\": the summed weight error the plan may not exceed, a number or \"reference\" "
      "(the error of the llama.cpp mixture a file-type budget names): the least-KL plan within it");
  max_error.pattern = R"(reference|[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?)";
  max_error.pattern_help = "a non-negative number or \"reference\"";
  info.options = {
      budget,
      objective,
      max_error,
      ty,
      im,
      cos,
      sq,
      rows,
      ds,
      samples,
      sens,
      widen,
      back,
      option_spec("activation_type", OptType::Enum, "ONNX: the 8-bit activation codes" + same, {},
                  {"uint8", "int8", "uint16", "int16"}),
      option_spec("weight_type", OptType::Enum, "ONNX: weight codes" + same, {},
                  {"int8", "uint8", "int4", "uint4"}),
      option_spec("per_channel", OptType::Bool, "ONNX: one weight scale per output channel" + same),
      option_spec("activation_symmetric", OptType::Bool, "ONNX: symmetric activation ranges" + same),
      option_spec("weight_symmetric", OptType::Bool, "ONNX: symmetric weights" + same),
      option_spec("qdq_domain", OptType::Enum, "ONNX: Q/DQ domain" + same, {}, {"ai.onnx", "com.microsoft"}),
      option_spec("per_channel_ops", OptType::List, "ONNX: op types with per-channel weight scales" + same),
      option_spec("shared_scale_ops", OptType::List,
                  "ONNX: op types whose inputs and output share one scale" + same),
      option_spec("fixed_outputs", OptType::List, "ONNX: \"OP=MIN:MAX\" fixed output ranges" + same),
  };
  for (auto& o : info.options)
    o.unordered = o.unordered || o.name == "per_channel_ops" || o.name == "shared_scale_ops" ||
                  o.name == "fixed_outputs";
  info.validate = validate;
  info.factory = [] { return std::unique_ptr<Pass>(new SelectPrecisionPass()); };
  return info;
}

}  // namespace qforge::select_precision
