// infer-shapes: ONNX's shape inference (formats/onnx/onnx_infer.cc) adding
// value_info for the values it can type (docs/manifest.md, "Pre-processing passes").
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "onnx_format.h"
#include "onnx_quant_util.h"
#include "preprocess.h"
#include "preprocess_util.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::passes {
namespace {

constexpr const char* kPass = "infer-shapes";

struct ShapeCount {
  size_t shaped = 0;   // node outputs with a known rank
  size_t static_ = 0;  // ... and every dimension known
  std::vector<std::string> unknown;
};

ShapeCount count_shapes(const Model& m) {
  ShapeCount c;
  for (const Node& n : m.graph->nodes) {
    for (const std::string& o : n.outputs) {
      if (o.empty()) continue;
      if (preprocess::value_dims(m, o)) {
        ++c.shaped;
        if (preprocess::static_shape(m, o)) ++c.static_;
      } else {
        c.unknown.push_back(o);
      }
    }
  }
  return c;
}

class InferShapesPass : public quant::RewritePass {
 private:
  void run_impl(Model& model, PassContext& ctx, PassResult& res) override {
    const bool require_all = quant::opt_bool(ctx.options, kPass, "require_all", false);
    Model work = quant::working_copy(model, "infer-shapes reads ONNX graphs");
    const ShapeCount before = count_shapes(work);
    const size_t added = onnxfmt::infer_shapes(work);
    const ShapeCount after = count_shapes(work);
    res.metrics["value_infos_added"] = static_cast<double>(added);
    res.metrics["values_with_shape"] = static_cast<double>(after.shaped);
    res.metrics["values_static"] = static_cast<double>(after.static_);
    res.metrics["values_unknown"] = static_cast<double>(after.unknown.size());
    std::string first;
    for (size_t i = 0; i < after.unknown.size() && i < 5; ++i)
      first += (i ? ", '" : "'") + after.unknown[i] + "'";
    res.notes.push_back(std::to_string(after.shaped) + " node outputs have a shape (" +
                        std::to_string(before.shaped) + " before; " + std::to_string(after.static_) +
                        " fully static), " + std::to_string(after.unknown.size()) + " stay unknown" +
                        (first.empty() ? "" : " (first: " + first + ")"));
    for (const std::string& u : after.unknown) {
      res.skipped.push_back({"ONNX shape inference found no shape", "value '" + u + "'"});
    }
    if (require_all && !after.unknown.empty()) {
      throw Error(work.source + ": " + std::to_string(after.unknown.size()) +
                  " values have no shape after ONNX shape inference (first: " + first +
                  "); give the graph inputs static shapes, or set require_all = false");
    }
    if (added == 0) {
      res.warnings.push_back(
          "ONNX shape inference added no value_info (every value it can type is typed already)");
      return;
    }
    res.changed = true;
    model = std::move(work);
  }
};

}  // namespace

PassInfo infer_shapes_pass_info() {
  PassInfo info;
  info.name = kPass;
  info.description = "ONNX shape inference: value_info for every value ONNX can type";
  info.version = 1;
  info.needs_graph = true;
  info.options = {quant::option_spec("require_all", OptType::Bool,
                                     "fail when a node output is left without a shape",
                                     Value::of_bool(false))};
  info.factory = [] { return std::unique_ptr<Pass>(new InferShapesPass()); };
  return info;
}

}  // namespace qforge::passes
