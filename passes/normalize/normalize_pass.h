// normalize: makes every weight of an ONNX model an initializer, as the ONNX
// quantization passes do on their working copy first (see
// passes/common/normalize.h): top-level Constant nodes holding tensors become
// initializers, and in models with ir_version < 4 the initializers listed
// among the graph inputs stop being inputs (ir_version raised to 4). The
// model computes the same; passes that follow see weights as weights.
#pragma once

#include "qforge/pass.h"

namespace qforge::passes {

PassInfo normalize_pass_info();

}  // namespace qforge::passes
