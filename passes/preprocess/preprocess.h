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

#include "qforge/pass.h"

namespace qforge::passes {

PassInfo upgrade_opset_pass_info();
PassInfo infer_shapes_pass_info();
PassInfo fold_batchnorm_pass_info();
PassInfo eliminate_pass_info();
PassInfo fold_constants_pass_info();
PassInfo equalize_pass_info();
PassInfo smooth_quant_pass_info();

}  // namespace qforge::passes
