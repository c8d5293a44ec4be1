// quantize-dynamic: ONNX Runtime's quantize_dynamic (QOperator / IntegerOps
// form) for MatMul with a constant weight:
//
//   A -> DynamicQuantizeLinear -> (A_q uint8, A_scale, A_zp)
//   MatMulInteger(A_q, W_q, A_zp, W_zp) -> Cast(float) -> Mul(A_scale * W_scale) -> Y
//
// W_q is int8 (symmetric by default, [-127, 127]) or uint8 (asymmetric by
// default), per tensor or per output column (`per_channel`: scale and zero
// point of shape [N], which ORT's MatMulInteger accepts for B), computed with
// quant_utils' arithmetic (numpy round half to even). One
// DynamicQuantizeLinear is shared by every MatMul reading the same
// activation. Weights are normalised first (passes/common/normalize.h:
// Constant nodes and IR < 4 initializer inputs become plain initializers);
// nodes whose weights are not 2-D f32 initializers are reported in
// PassResult::skipped with the reason, and a pass that quantizes nothing
// reports no change and a warning. Op types other than MatMul are rejected.
// Subgraph bodies are left unquantized.
#pragma once

#include "qforge/pass.h"

namespace qforge::passes {

PassInfo quantize_dynamic_pass_info();

}  // namespace qforge::passes
