// The quantize-gguf pass and its built-in plugin registration.
#include <memory>
#include <string>

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
      const QuantizeOptions o = options_from(ctx.options);
      QuantizeSummary s = quantize_model(model, o, ctx.threads);
      for (const auto& n : s.notes) ctx.progress.warn(n);
      r.changed = true;
      r.metrics["fallbacks"] = s.fallbacks;
      r.metrics["quantized_tensors"] = s.quantized_tensors;
      r.notes = std::move(s.notes);
      r.notes.push_back(std::string("file type ") + name_of(s.ftype) + ": " +
                        std::to_string(s.quantized_tensors) + " of " + std::to_string(s.plan.size()) +
                        " tensors quantized, " + std::to_string(s.fallbacks) + " fallback(s)");
    });
    return r;
  }
};

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
      opt("tensor_types", OptType::Table,
          "per-tensor type overrides { regex = type } (first match wins; beats the mixture rules)"),
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
  p.factory = [] { return std::make_unique<QuantizeGgufPass>(); };
  return p;
}

void register_quantize_gguf(Registry& r) { r.add_pass(quantize_gguf_info()); }

}  // namespace
}  // namespace qforge::gguf_quant

QFORGE_BUILTIN_PLUGIN(quantize_gguf, "quantize-gguf", "1.0.0", qforge::gguf_quant::register_quantize_gguf)
