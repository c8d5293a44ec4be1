// upgrade-opset: the model's ai.onnx opset raised by ONNX's own version
// converter (formats/onnx/onnx_convert.cc), as ONNX Runtime's users do by hand
// before per-channel quantization (docs/manifest.md, "Pre-processing passes").
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "upgrade-opset";

std::vector<OptionProblem> check(const Options& o) {
  std::vector<OptionProblem> problems;
  const int64_t want = quant::opt_int(o, kPass, "opset", 13);
  const int64_t known = onnxfmt::max_known_opset();
  if (want > known) {
    problems.push_back({"opset", "is " + std::to_string(want) +
                                     " but the ONNX library qforge is built with converts up to opset " +
                                     std::to_string(known) + "; choose an opset from 7 to " +
                                     std::to_string(known)});
  }
  return problems;
}

class UpgradeOpsetPass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    quant::throw_first_problem(ctx.options, check(ctx.options));
    const int64_t want = quant::opt_int(ctx.options, kPass, "opset", 13);
    Model work = quant::working_copy(model, "upgrade-opset converts ONNX graphs");
    const int64_t from = work.graph->opset("");
    res.metrics["opset_before"] = static_cast<double>(from);
    if (from < 1) {
      throw Error(work.source + ": the model imports no ai.onnx opset; there is nothing to upgrade");
    }
    if (from >= want) {
      res.metrics["opset_after"] = static_cast<double>(from);
      res.warnings.push_back("the model's ai.onnx opset is " + std::to_string(from) + ", already at least " +
                             std::to_string(want) + " (upgrade-opset never lowers an opset)");
      return;
    }
    for (size_t i = 0; i < work.graph->nodes.size(); ++i) {
      const Node& n = work.graph->nodes[i];
      if (!n.domain.empty() && n.domain != "ai.onnx") {
        res.skipped.push_back({"op of domain '" + n.domain + "': the converter changes ai.onnx ops only",
                               quant::node_label(n, i)});
      }
    }
    const size_t nodes_before = work.graph->nodes.size();
    Model out = onnxfmt::convert_opset(work, want);
    res.metrics["opset_after"] = static_cast<double>(out.graph->opset(""));
    res.metrics["nodes_before"] = static_cast<double>(nodes_before);
    res.metrics["nodes_after"] = static_cast<double>(out.graph->nodes.size());
    res.notes.push_back("converted the ai.onnx opset from " + std::to_string(from) + " to " +
                        std::to_string(want) + " with ONNX's version converter (" +
                        std::to_string(nodes_before) + " nodes before, " +
                        std::to_string(out.graph->nodes.size()) + " after)");
    res.changed = true;
    model = std::move(out);
  }
};

}  // namespace

PassInfo upgrade_opset_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "ONNX ai.onnx opset raised with ONNX's version converter (per-channel quantization needs opset 13)";
  info.version = 1;
  info.needs_graph = true;
  info.options = {quant::in_range(
      quant::option_spec("opset", OptType::Int, "the ai.onnx opset to convert to", Value::of_int(13)), 7,
      21)};
  info.validate = quant::validate_hook(check);
  info.factory = [] { return std::unique_ptr<Pass>(new UpgradeOpsetPass()); };
  return info;
}

}  // namespace qforge::passes
