// select-precision: the pass (options, validation, report lines); see select_precision.h.
#include <memory>
#include <string>
#include <vector>

#include "qforge/diag.h"
#include "qforge/status.h"
#include "quant_options.h"
#include "quantize_gguf.h"
#include "select_precision.h"

namespace qforge::select_precision {
namespace {

constexpr const char* kPass = "select-precision";

const std::vector<std::string> kDefaultTypes = {"Q2_K", "Q3_K", "Q4_0", "Q4_K",
                                                "Q5_0", "Q5_K", "Q6_K", "Q8_0"};

Settings settings_of(const Options& o) {
  Settings s;
  s.budget = o.at("budget").s;
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
  return s;
}

class SelectPrecisionPass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) override {
    PassResult r;
    r.status = guard([&] {
      Result res = select(model, settings_of(ctx.options), ctx.threads, ctx.progress);
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
      "chooses a GGUF type per tensor that minimises the measured (imatrix-weighted) quantization error "
      "within a size budget: a precision plan the next quantize-gguf step follows";
  info.version = 1;
  info.output = {ArtifactKind::Table, gguf_quant::kPrecisionSchema, false, "a precision plan"};
  OptionSpec budget = quant::option_spec(
      "budget", OptType::String,
      "the size to fit: the file in bytes (\"3.5GiB\", \"500MB\", \"123456\"), tensor data "
      "bits per weight (\"4.5bpw\"), or the size of a llama.cpp file type's mixture "
      "(\"Q4_K_M\"); default: the profile's [memory] budget");
  budget.required = true;
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
  OptionSpec cos =
      quant::option_spec("min_cosine", OptType::Float,
                         "drop a tensor's candidate types whose weight cosine similarity is below this");
  cos.has_min = cos.has_max = true;
  cos.min = 0, cos.max = 1;
  OptionSpec sq = quant::option_spec("min_sqnr_db", OptType::Float,
                                     "drop a tensor's candidate types whose weight SQNR (dB) is below this");
  OptionSpec rows = quant::option_spec(
      "max_rows", OptType::Int, "rows measured per tensor (evenly spaced, the error scaled up); 0: every row",
      Value::of_int(4096));
  rows.has_min = true;
  rows.min = 0;
  info.options = {budget, ty, im, cos, sq, rows};
  info.validate = validate;
  info.factory = [] { return std::unique_ptr<Pass>(new SelectPrecisionPass()); };
  return info;
}

}  // namespace qforge::select_precision
