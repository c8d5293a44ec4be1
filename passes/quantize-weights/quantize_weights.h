// quantize-weights: weight-only quantization of ONNX MatMul (and Gemm) weights,
// the way ONNX Runtime's MatMulNBitsQuantizer (matmul_nbits_quantizer.py)
// rewrites a model.
//
// Weights are normalised first (passes/common/normalize.h: Constant nodes and
// IR < 4 initializer inputs become plain initializers). Then for each
// MatMul/Gemm (top-level graph, default domain, in `op_types`) whose B input
// is a 2-D f32/f16 initializer that is not also a graph input:
//
//   format = "dq":          B -> DequantizeLinear(q, scale[, zero_point]) -> MatMul
//       bits 8: int8 (symmetric, [-127, 127]) or uint8 codes, quant_utils math
//               (numpy round half to even); block_size 0 = per output channel
//               (axis 1, opset 13), else opset-21 blocked (axis 0, scale
//               [ceil(K/bs), N]).
//       bits 4: int4 (symmetric) or uint4 codes, MLAS blockwise math (scale =
//               -m/8 where m is the value of largest magnitude; roundf);
//               opset 21.
//   format = "matmulnbits": MatMul -> com.microsoft.MatMulNBits(A, B[N, n_blocks,
//       blob], scales[N*n_blocks], zero_points?) with MLAS blockwise math,
//       unsigned codes, zero point 2^(bits-1) implied when symmetric.
//
// Nodes whose weights ORT's tool leaves alone (not constant, not 2-D, not
// f32/f16) are reported in PassResult::skipped with the reason; when nothing
// is quantized the pass reports no change and a warning. Bad options (also
// refused at plan time: the schema's constraints and the validate hook) and
// models that cannot take the required
// opset fail the pass with a message naming the node and tensor. Subgraph
// bodies (If/Loop/Scan) are not quantized.
#pragma once

#include "qforge/pass.h"

namespace qforge::passes {

PassInfo quantize_weights_pass_info();

}  // namespace qforge::passes
