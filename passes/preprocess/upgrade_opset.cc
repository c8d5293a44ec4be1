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
    if (from >= want) {
      res.metrics["opset_after"] = static_cast<double>(from);
      res.warnings.push_back("the model's ai.onnx opset is " + std::to_string(from) + ", already at least " +
                             std::to_string(want) + " (upgrade-opset never lowers an opset)");
      return;
    }
    OpsetUpgrade up = upgrade_model_opset(work, want);
    for (Skipped& s : up.skipped) res.skipped.push_back(std::move(s));
    res.metrics["opset_after"] = static_cast<double>(up.to);
    res.metrics["nodes_before"] = static_cast<double>(up.nodes_before);
    res.metrics["nodes_after"] = static_cast<double>(up.nodes_after);
    res.notes.push_back("converted the ai.onnx opset from " + std::to_string(from) + " to " +
                        std::to_string(want) + " with ONNX's version converter (" +
                        std::to_string(up.nodes_before) + " nodes before, " + std::to_string(up.nodes_after) +
                        " after)");
    res.changed = true;
    model = std::move(up.model);
  }
};

}  // namespace

int64_t max_upgrade_opset() { return onnxfmt::max_known_opset(); }

OpsetUpgrade upgrade_model_opset(const Model& model, int64_t want) {
  OpsetUpgrade up;
  const Graph& g = *model.graph;
  up.from = g.opset("");
  if (up.from < 1) {
    throw Error(model.source + ": the model imports no ai.onnx opset; there is nothing to upgrade");
  }
  if (want > max_upgrade_opset()) {
    throw Error("the ONNX library qforge is built with converts up to opset " +
                std::to_string(max_upgrade_opset()) + ", not " + std::to_string(want));
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!n.domain.empty() && n.domain != "ai.onnx") {
      up.skipped.push_back({"op of domain '" + n.domain + "': the converter changes ai.onnx ops only",
                            quant::node_label(n, i)});
    }
  }
  up.nodes_before = g.nodes.size();
  up.model = onnxfmt::convert_opset(model, want);
  up.to = up.model.graph->opset("");
  up.nodes_after = up.model.graph->nodes.size();
  return up;
}

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
