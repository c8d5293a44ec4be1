// Tiny deterministic ONNX models for examples and tests, built in the IR
// (graph.h) and written with the ONNX plugin's emitter.
//
//   mlp:  x[batch,16] -> MatMul[16,32] -> Add -> Relu -> MatMul[32,8] -> Add -> y[batch,8]
//   conv: x[batch,3,16,16] -> Conv(8x3x3x3, pad 1)+bias -> Relu -> GlobalAveragePool
//         -> Flatten -> MatMul[8,4] -> Add -> y[batch,4]
//   cnn:  image[batch,3,32,32] -> a small MobileNet-like image classifier:
//         Conv 3x3/2 + BatchNorm + Relu, depthwise 3x3 + BatchNorm + Clip(0,6),
//         pointwise 1x1 + BatchNorm, a residual 1x1 + Relu branch (Add), MaxPool
//         and AveragePool side by side (Concat), GlobalAveragePool, Flatten,
//         Gemm(transB) and Softmax -> probs[batch,10]
//
// Weights are uniform in +-1/sqrt(fan_in) from a fixed-seed generator: the
// same seed gives byte-identical files. Opset 13, IR version 7.
#pragma once

#include <cstdint>
#include <string>

#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"

namespace qforge::onnxfmt {

// The xorshift64 generator the tiny models' weights come from (tests use it
// too): uniform() is in [-1, 1) with 24 bits of resolution.
class XorShiftRng {
 public:
  explicit XorShiftRng(uint64_t state) : s_(state) {}
  float uniform() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return static_cast<float>((s_ >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
  }

 private:
  uint64_t s_;
};

Model tiny_mlp_model(uint32_t seed = 1);
Model tiny_conv_model(uint32_t seed = 2);
Model tiny_cnn_model(uint32_t seed = 3);
// `kind` is "mlp", "conv" or "cnn"; throws qforge::Error otherwise or on write failure.
void write_tiny_model(const std::string& kind, const std::string& path, uint32_t seed = 0);

}  // namespace qforge::onnxfmt
