// equalize: cross-layer equalization of Conv -> [Relu] -> Conv pairs
// (passes/common/equalize.h says what and why; docs/manifest.md,
// "Pre-processing passes"). The float model's outputs are unchanged; its
// per-channel weight ranges are evened out for quantization. Run it after
// fold-batchnorm and before calibrate.
#include <memory>
#include <string>
#include <vector>

#include "graph_rewrite.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "equalize";

class EqualizePass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    Model work = quant::working_copy(model, "equalize rewrites ONNX graphs");
    const quant::NormalizeStats ns = quant::normalize_weights(work);
    quant::note_normalized(ns, res);
    quant::EqualizeOptions o;
    o.max_iterations = static_cast<int>(quant::opt_int(ctx.options, kPass, "iterations", 20));
    // A Conv followed by a BatchNormalization hides the pair: say so.
    size_t bn_after_conv = 0;
    for (const Node& n : work.graph->nodes) {
      if (n.op_type != "BatchNormalization" || n.inputs.empty()) continue;
      const int p = work.graph->producer(n.inputs[0]);
      bn_after_conv += p >= 0 && work.graph->nodes[static_cast<size_t>(p)].op_type == "Conv";
    }
    if (bn_after_conv)
      res.warnings.push_back(
          std::to_string(bn_after_conv) +
          " BatchNormalization node(s) after a Conv: run fold-batchnorm before equalize, or "
          "those Conv nodes are not equalized");
    const quant::EqualizeResult eq = quant::equalize(work, o);
    res.skipped = eq.skipped;
    res.metrics["equalized_pairs"] = static_cast<double>(eq.pairs);
    res.metrics["equalize_iterations"] = static_cast<double>(eq.iterations);
    if (eq.pairs == 0) {
      res.warnings.push_back("no Conv -> [Relu] -> Conv pair to equalize");
      return;
    }
    res.metrics["channel_range_spread_before"] = eq.spread_before;
    res.metrics["channel_range_spread_after"] = eq.spread_after;
    res.notes.push_back("equalized " + std::to_string(eq.pairs) + " Conv pair(s) in " +
                        std::to_string(eq.iterations) + " sweep(s): channel range spread " +
                        std::to_string(eq.spread_before) + " -> " + std::to_string(eq.spread_after));
    quant::validate_top_level(work);
    res.changed = true;
    model = std::move(work);
  }
};

}  // namespace

PassInfo equalize_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "cross-layer equalization: rescales the channels of Conv -> [Relu] -> Conv pairs so both Conv nodes' "
      "per-channel weight ranges are equal (float outputs unchanged); run after fold-batchnorm, before "
      "calibrate";
  info.version = 1;
  info.needs_graph = true;
  info.options = {quant::in_range(
      quant::option_spec("iterations", OptType::Int, "sweeps over all pairs at most (chains converge)",
                         Value::of_int(20)),
      1, 1000)};
  info.factory = [] { return std::unique_ptr<Pass>(new EqualizePass()); };
  return info;
}

}  // namespace qforge::passes
