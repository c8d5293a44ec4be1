// The pre-processing passes (docs/manifest.md, "Pre-processing passes", says what
// each does and leaves alone):
//
//  * upgrade-opset   ai.onnx opset raised by ONNX's version converter, so
//                    per-channel quantization (opset 13) works on older models
//  * infer-shapes    ONNX shape inference, adding value_info
//  * fold-batchnorm  BatchNormalization folded into the Conv, ConvTranspose or
//                    Gemm before it
//  * eliminate       Identity, inference Dropout, no-op Reshape, Transpose
//                    and Cast removed
//  * fold-constants  nodes of constant inputs evaluated by the build's
//                    executor and replaced by initializers
//  * equalize        cross-layer equalization of Conv -> [Relu] -> Conv
//                    pairs (passes/common/equalize.h)
//  * smooth-quant    SmoothQuant: activation outliers of MatMul/Gemm inputs
//                    moved into their weights (reads calibrate's table)
//
// Each is a Model -> Model pass that edits a working copy and hands it back
// only when everything succeeded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qforge/model.h"
#include "qforge/pass.h"

namespace qforge::passes {

// What upgrade-opset does, for passes that run it implicitly (quantize-static
// before per-channel scales): `model` converted to ai.onnx opset `want` by
// ONNX's version converter. Throws Error when the model imports no ai.onnx
// opset, `want` is beyond what the converter knows, or the conversion fails.
// `skipped` gets the nodes of other domains the converter leaves alone.
struct OpsetUpgrade {
  Model model;
  int64_t from = 0, to = 0;
  size_t nodes_before = 0, nodes_after = 0;
  std::vector<Skipped> skipped;
};
OpsetUpgrade upgrade_model_opset(const Model& model, int64_t want);
// The highest opset upgrade_model_opset converts to.
int64_t max_upgrade_opset();

PassInfo upgrade_opset_pass_info();
PassInfo infer_shapes_pass_info();
PassInfo fold_batchnorm_pass_info();
PassInfo eliminate_pass_info();
PassInfo fold_constants_pass_info();
PassInfo equalize_pass_info();
PassInfo smooth_quant_pass_info();

}  // namespace qforge::passes
