// The quantize-gguf pass and its built-in plugin registration.
#include <algorithm>
#include <cctype>
#include <memory>
#include <regex>
#include <string>

#include "gguf/gguf.h"
#include "kernels/quants.h"
#include "precision_plan.h"
#include "qforge/diag.h"
#include "qforge/pass.h"
#include "qforge/plugin.h"
#include "qforge/status.h"
#include "quantize_gguf.h"

namespace qforge::gguf_quant {
namespace {

class QuantizeGgufPass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) override {
    PassResult r;
    r.status = guard([&] {
      QuantizeOptions o = options_from(ctx.options);
      if (!ctx.tables.empty() && ctx.tables[0])
        o.plan = std::make_shared<PrecisionPlan>(PrecisionPlan::from_table(*ctx.tables[0], "precision plan"));
      QuantizeSummary s = quantize_model(model, o, ctx.threads);
      for (const auto& n : s.notes) ctx.progress.warn(n);
      r.changed = true;
      r.metrics["fallbacks"] = s.fallbacks;
      r.metrics["quantized_tensors"] = s.quantized_tensors;
      r.notes = std::move(s.notes);
      r.notes.push_back(std::string("file type ") + name_of(s.ftype) + ": " +
                        std::to_string(s.quantized_tensors) + " of " + std::to_string(s.plan.size()) +
                        " tensors quantized, " + std::to_string(s.fallbacks) + " fallback(s)");
      if (o.plan) {
        // The size the plan promised, checked on the layout the writer will use.
        const uint64_t bytes = gguf_file_size(model);
        r.metrics["planned_tensors"] = s.planned;
        r.metrics["file_bytes"] = static_cast<double>(bytes);
        r.notes.push_back("precision plan (" + o.plan->budget + "): " + std::to_string(s.planned) +
                          " tensors typed by the plan, file " + std::to_string(bytes) +
                          " bytes (plan: " + std::to_string(o.plan->file_bytes) + ", budget " +
                          std::to_string(o.plan->budget_bytes) + ")");
        if (o.plan->budget_bytes && bytes > o.plan->budget_bytes)
          r.warnings.push_back("the file will have " + std::to_string(bytes) +
                               " bytes, over the plan's budget of " + std::to_string(o.plan->budget_bytes) +
                               " (" + o.plan->budget +
                               "): explicit tensor types or other metadata than the plan assumed");
      }
    });
    return r;
  }
};

// Checks what can be checked before a model is read: the type names and the
// rule patterns (at `qforge plan` time, with a suggestion for a misspelling).
std::vector<OptionProblem> validate_options(const Options& o) {
  std::vector<OptionProblem> out;
  // Suggestions name the commonly chosen mixtures first (a tie between
  // Q4_K_S and Q4_K_M for "Q4_K_Z" reads better as "Q4_K_M or Q4_K_S").
  std::vector<std::string> file_type_names = {"Q4_K_M", "Q5_K_M", "Q8_0", "Q6_K", "Q3_K_M"},
                           tensor_type_names;
  for (const auto& r : file_types())
    if (std::find(file_type_names.begin(), file_type_names.end(), r.name) == file_type_names.end())
      file_type_names.push_back(r.name);
  for (ElemType t : all_elem_types())
    if (traits(t).ggml_id >= 0 && gguf::can_quantize(t)) tensor_type_names.push_back(name_of(t));
  auto text = [&](const char* key) -> std::string {
    auto it = o.find(key);
    return it == o.end() || it->second.kind != Value::Kind::String ? "" : it->second.s;
  };
  auto upper = [](std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  };
  auto tensor_type = [&](const std::string& option, const std::string& name, const std::string& context) {
    auto t = elem_from_name(name);
    if (!t || traits(*t).ggml_id < 0 || !gguf::can_quantize(*t))
      out.push_back(
          {option, context + "unknown tensor type '" + name + "'" + did_you_mean(name, tensor_type_names)});
  };
  if (const std::string type = text("type"); !type.empty()) {
    try {
      parse_file_type(type);
    } catch (const Error& e) {
      std::string msg = e.what();
      if (msg.rfind("quantize-gguf: ", 0) == 0) msg = msg.substr(15);
      const std::string hint = did_you_mean(upper(type), file_type_names);
      const auto semi = msg.find("; expected");
      if (!hint.empty() && semi != std::string::npos) msg = msg.substr(0, semi) + hint + msg.substr(semi);
      out.push_back({"type", msg});
    }
  }
  if (const std::string t = text("output_tensor_type"); !t.empty()) tensor_type("output_tensor_type", t, "");
  if (const std::string t = text("token_embedding_type"); !t.empty())
    tensor_type("token_embedding_type", t, "");
  if (auto it = o.find("tensor_types"); it != o.end() && it->second.kind == Value::Kind::List)
    for (const Value& rule : it->second.list) {
      const auto eq = rule.s.find('=');
      if (eq == std::string::npos) continue;  // the pattern check reports it
      try {
        std::regex re(rule.s.substr(0, eq));
      } catch (const std::regex_error& e) {
        out.push_back({"tensor_types", "rule '" + rule.s + "': '" + rule.s.substr(0, eq) +
                                           "' is not a valid regex (" + e.what() + ")"});
      }
      tensor_type("tensor_types", rule.s.substr(eq + 1), "rule '" + rule.s + "': ");
    }
  return out;
}

OptionSpec opt(const char* name, OptType type, const char* help, bool required = false) {
  OptionSpec s;
  s.name = name;
  s.type = type;
  s.help = help;
  s.required = required;
  return s;
}

PassInfo quantize_gguf_info() {
  PassInfo p;
  p.name = "quantize-gguf";
  p.description =
      "Quantize a GGUF model like llama-quantize (file types Q4_K_M, Q8_0, ...; same tensor "
      "types and bytes as llama.cpp)";
  p.version = 1;
  p.options = {
      opt("type", OptType::String,
          "file type (Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
          "IQ4_NL, IQ4_XS, F16, BF16, F32; aliases Q3_K, Q4_K, Q5_K) or a tensor type naming one",
          true),
      opt("imatrix", OptType::Path, "importance matrix (llama-imatrix GGUF or legacy .dat)"),
      opt("tensor_types", OptType::List,
          "per-tensor type overrides [\"REGEX=TYPE\", ...], in order: the first matching rule wins, and "
          "rules beat the mixture rules and a precision plan"),
      opt("output_tensor_type", OptType::String, "type of output.weight"),
      opt("token_embedding_type", OptType::String, "type of token_embd.weight"),
      opt("leave_output_tensor", OptType::Bool, "leave output.weight unquantized"),
      opt("pure", OptType::Bool, "every quantized tensor gets the default type (no mixture rules)"),
      opt("allow_requantize", OptType::Bool, "accept quantized input (dequantized first)"),
      opt("no_fallback", OptType::Bool, "fail instead of using a fallback type for a tensor shape"),
      opt("include_weights", OptType::List, "use the imatrix only for tensors containing these"),
      opt("exclude_weights", OptType::List, "do not use the imatrix for tensors containing these"),
      opt("override_kv", OptType::List, "metadata overrides KEY=TYPE:VALUE (int, float, bool, str)"),
  };
  for (auto& o : p.options) {
    o.unordered = o.name == "include_weights" || o.name == "exclude_weights";
    if (o.name == "tensor_types") {
      o.pattern = "[^=]+=[^=]+";
      o.pattern_help = "REGEX=TYPE (e.g. \"attn_v=Q6_K\")";
    }
  }
  p.inputs = {{ArtifactKind::Table, kPrecisionSchema, true,
               "a precision plan from select-precision: its per-tensor types replace the mixture rules"}};
  p.validate = validate_options;
  p.factory = [] { return std::make_unique<QuantizeGgufPass>(); };
  return p;
}

void register_quantize_gguf(Registry& r) { r.add_pass(quantize_gguf_info()); }

}  // namespace
}  // namespace qforge::gguf_quant

QFORGE_BUILTIN_PLUGIN(quantize_gguf, "quantize-gguf", "1.0.0", qforge::gguf_quant::register_quantize_gguf)
