// quantize-static, format = "qoperator": the QDQ graph quantize-static built
// rewritten into ONNX Runtime's QOperator form, the way ONNX Runtime's own
// QDQ -> QLinear fusions (and its QOperator quantizer) write it:
//
//   DQ -> Conv [-> Relu/Clip] -> Q          QLinearConv (int32 bias as input 8)
//   DQ -> MatMul [-> Relu/Clip] -> Q        QLinearMatMul
//   DQ -> Gemm [-> Relu/Clip] -> Q          com.microsoft QGemm (int32 bias as C)
//   DQ -> Add / Mul [-> Relu/Clip] -> Q     com.microsoft QLinearAdd / QLinearMul
//   DQ -> Concat -> Q                       com.microsoft QLinearConcat
//   DQ -> AveragePool -> Q                  com.microsoft QLinearAveragePool
//   DQ -> GlobalAveragePool -> Q            com.microsoft QLinearGlobalAveragePool
//   DQ -> Sigmoid -> Q                      com.microsoft QLinearSigmoid
//   DQ -> Reshape/Transpose/... -> Q        the op itself on the 8-bit value
//                                           (same scale and zero point)
//
// A Relu or Clip between the op and its QuantizeLinear is folded when the
// output's saturation does what it does (the zero point is the lowest code,
// as with asymmetric activations). The Q -> DQ pairs left between two
// converted ops are removed; a QuantizeLinear stays where a quantized region
// starts and a DequantizeLinear where a float op or a graph output reads it.
// A node with no QOperator form at its position stays in float between its
// DequantizeLinear and QuantizeLinear, reported with the reason.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "qforge/model.h"
#include "qforge/pass.h"

namespace qforge::passes {

struct QOperatorReport {
  std::map<std::string, size_t> emitted;  // op type written -> count
  size_t direct = 0;                      // data-movement ops now reading 8-bit values
  size_t folded = 0;                      // Relu/Clip folded into the op before them
  size_t removed_qdq = 0;                 // QuantizeLinear/DequantizeLinear nodes removed
  std::vector<Skipped> kept_float;        // nodes left in float, with the reason
};

// Rewrites the top-level graph of `work` (in QDQ form, as quantize-static
// builds it) into QOperator form; `quantized`: the indices of the nodes
// quantize-static quantized (the others, float ops reading a
// DequantizeLinear, are left alone). Unused initializers are dropped.
QOperatorReport qdq_to_qoperator(Model& work, const std::set<size_t>& quantized);

}  // namespace qforge::passes
