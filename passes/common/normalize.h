// Normalisation of how an ONNX model holds its weights, so that every pass
// sees weights as weights (initializers in Model::tensors):
//
//  * Constant nodes of the top-level graph whose value is a tensor (`value`,
//    `value_float(s)`, `value_int(s)`) become initializers named after their
//    output, and the node goes. Many exporters (Paddle2ONNX, some TensorFlow
//    and PyTorch versions) write every weight this way. Constants that are
//    graph outputs, hold strings or sparse tensors, or sit inside subgraphs
//    stay as they are.
//  * In models with ir_version < 4, ONNX required every initializer to be
//    listed among the graph inputs too, and runtimes treat such inputs as
//    constants; they are dropped from the inputs. From IR 4 on an initializer
//    that is also an input is a default value the caller may override, and
//    stays an input.
//  * When either happened in a model with ir_version < 4, the IR version is
//    raised to 4 (the first in which an initializer need not be an input).
//
// The importer keeps the file as written (an unmodified model re-emits
// exactly); the quantization passes normalise their working copy, and the
// `normalize` pass does it as a step of its own.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qforge/model.h"
#include "qforge/pass.h"

namespace qforge::quant {

struct NormalizeStats {
  size_t constants_lifted = 0;  // Constant nodes turned into initializers
  size_t inputs_dropped = 0;    // initializers no longer listed as graph inputs (IR < 4)
  int64_t ir_before = 0;
  int64_t ir_after = 0;
  bool changed() const { return constants_lifted > 0 || inputs_dropped > 0 || ir_after != ir_before; }
};

// Normalises `m` in place (it must have a graph of its own: call it on a
// working copy). Throws Error naming the node when a Constant's value is
// malformed (a tensor attribute without exactly one tensor).
NormalizeStats normalize_weights(Model& m);

// Records what normalisation did: the metrics constants_lifted and
// inputs_dropped, and a note per kind of change.
void note_normalized(const NormalizeStats& s, PassResult& res);

}  // namespace qforge::quant
