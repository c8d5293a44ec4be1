// quantize-static: ONNX static quantization in QDQ form, as ONNX Runtime's
// QDQ quantizer writes it, or in QOperator form (`format = "qoperator"`:
// QLinearConv, QLinearMatMul, QGemm, QLinearAdd, ...; qoperator.h), from the
// activation ranges a `calibrate` step measured (a ranges/1 Table,
// passes/common/range_table.h).
//
//  * Activations read or produced by a quantized node get a
//    QuantizeLinear -> DequantizeLinear pair (one per value, shared by every
//    reader); scale and zero point come from the value's calibrated range
//    (widened to include 0), in `activation_type`.
//  * Weights (Conv, ConvTranspose, Gemm B, MatMul's constant B) are stored
//    quantized in `weight_type` with a DequantizeLinear, per tensor or per
//    channel along the op's output-channel axis (Conv 0, ConvTranspose 1,
//    Gemm transB ? 0 : 1, MatMul the last axis); biases become int32 with
//    scale = input scale x weight scale and zero point 0.
//  * Ops that move values without changing them (Reshape, Transpose,
//    MaxPool, ...) and Concat share one scale and zero point between their
//    inputs and output (the union of the ranges); Sigmoid, Softmax and Tanh,
//    when listed in `op_types`, get fixed output ranges.
//  * 16- and 4-bit types need opset 21 in the default domain, per-channel
//    scales opset 13. Below 13, per-channel first converts the model with
//    ONNX's version converter, as an `upgrade-opset` step would (noted;
//    `upgrade_opset = false` turns it off). Otherwise the pass raises the
//    opset (refusing with the node's name when an op changed form in
//    between), or writes com.microsoft Q/DQ at the model's opset with
//    `qdq_domain = "com.microsoft"`.
//  * format = "qoperator" builds the QDQ form, then replaces each
//    DequantizeLinear -> op -> QuantizeLinear group by its QLinear op and
//    removes the Q/DQ pairs left between two of them (8-bit types only).
//
//  * Accuracy beyond round-to-nearest (accuracy.h): cross-layer
//    equalization of Conv pairs first (`equalize`, on by default), biases
//    that absorb the mean output shift of weight quantization
//    (`bias_correction`), and a per-channel MSE clip search
//    for the weights (`weight_clip = "mse"`). The first two read the
//    per-channel statistics calibrate records (range_table.h).
//
// The op table in pass.cc says, per op type, which inputs are quantized,
// which share parameters and where the weight's channel axis is. Nodes left
// alone are listed in PassResult::skipped with the reason. docs/manifest.md
// lists the options.
//
//  * A precision plan (an optional second input, onnx_precision_plan.h, from
//    select-precision) leaves its "float" nodes alone and gives its "int16"
//    nodes 16-bit activations (its widen_to type) on every value they read or
//    write; a value shared with an 8-bit node takes the wider type. The plan
//    must have been measured with this step's activation_type, weight_type
//    and per_channel (checked).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qforge/pass.h"

namespace qforge::passes {

PassInfo quantize_static_pass_info();

// quantize-static in process (for select-precision's search): `options` as a
// step's (absent ones take the pass's defaults), the ranges/1 table and an
// optional ONNX precision plan. Throws qforge::Error on failure.
struct StaticQuantization {
  Model model;
  PassResult result;
  std::vector<std::pair<std::string, std::string>> quantized;  // (node name, op type), graph order
};
StaticQuantization quantize_static(const Model& model, const Options& options,
                                   std::shared_ptr<const Table> ranges, std::shared_ptr<const Table> plan,
                                   Progress& progress, int threads);
// Ops quantize-static only moves values through (Reshape, Transpose, ...):
// they share their input's scale and type, so a precision search skips them.
bool quantize_static_moves_values(const std::string& op);

}  // namespace qforge::passes
