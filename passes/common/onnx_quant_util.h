// Everything the ONNX quantization passes share, by concern:
//   quant_math.h      quantization arithmetic (scales, zero points, codes, packing)
//   quant_tensors.h   reading float weights, making (lazy) tensors
//   quant_options.h   typed option reads, schema entries and their constraints
//   graph_rewrite.h   node labels, opsets, initializer bookkeeping, the pass frame
//   normalize.h       weights as initializers (Constant nodes, IR < 4 inputs)
//   weight_rewrite.h  the select -> quantize -> rebuild -> commit skeleton
//   equalize.h        cross-layer equalization of Conv pairs
#pragma once

#include "equalize.h"
#include "graph_rewrite.h"
#include "normalize.h"
#include "quant_math.h"
#include "quant_options.h"
#include "quant_tensors.h"
#include "weight_rewrite.h"
