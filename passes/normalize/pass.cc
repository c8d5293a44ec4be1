// normalize: see normalize_pass.h.
#include "normalize_pass.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "graph_rewrite.h"
#include "onnx_quant_util.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "normalize";

class NormalizePass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext&, PassResult& res) override {
    Model work = quant::working_copy(model, "normalize rewrites ONNX graphs");
    const quant::NormalizeStats s = quant::normalize_weights(work);
    quant::note_normalized(s, res);
    res.changed = s.changed();
    if (!res.changed) {
      res.warnings.push_back(
          "the model's weights are already initializers (no Constant node holds a tensor, "
          "no initializer is listed as a graph input in an IR < 4 model)");
      return;
    }
    quant::validate_top_level(work);
    model = std::move(work);
  }
};

}  // namespace

PassInfo normalize_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description =
      "ONNX weights as initializers: lifts Constant nodes holding tensors, drops initializers listed as "
      "graph "
      "inputs in IR < 4 models";
  info.version = 1;
  info.needs_graph = true;
  info.factory = [] { return std::unique_ptr<Pass>(new NormalizePass()); };
  return info;
}

}  // namespace qforge::passes
