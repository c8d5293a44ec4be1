// Tensor data helpers shared by the ONNX quantization passes: reading float
// weights, making (lazy) tensors, byte sizes as ONNX stores them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qforge/model.h"
#include "qforge/types.h"

namespace qforge::quant {

// ---------------------------------------------------------------- tensors
// The float values of an f32 tensor; throws Error naming the tensor when its
// data is missing or has the wrong size.
std::vector<float> read_f32(const Tensor& t);
// The values of an f32 or f16 tensor as floats.
std::vector<float> read_floats(const Tensor& t);
// A tensor of `type` F32 or F16 holding `v`.
Tensor make_float_tensor(std::string name, std::vector<int64_t> shape, ElemType type,
                         const std::vector<float>& v);
Tensor make_tensor(std::string name, std::vector<int64_t> shape, ElemType type, std::vector<uint8_t> bytes);
Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& v);
// Throws Error naming the tensor when it is not f32/f16 or its loaded data
// (if any: lazy tensors are checked when produced) has the wrong size.
void check_float_data(const Tensor& t);

// Deferred computation of several tensors' bytes at once (a weight's codes,
// scales and zero points). Returns one producer per part; the computation
// runs when a part is first asked for, under a lock, and its results are kept
// until each part was taken once, then dropped (asking again recomputes, with
// the same result). Keeps quantized models out of memory until emit streams
// them.
std::vector<std::function<BlobPtr()>> lazy_parts(size_t n,
                                                 std::function<std::vector<std::vector<uint8_t>>()> compute);
// A tensor whose bytes come from `producer` (which may throw: its errors
// become the tensor's error, naming `pass` and the tensor).
Tensor make_lazy_tensor(std::string name, std::vector<int64_t> shape, ElemType type,
                        std::function<BlobPtr()> producer, const std::string& pass);
// The bytes of `v` as f32 or f16.
std::vector<uint8_t> float_bytes(const std::vector<float>& v, ElemType type);

// Bytes as ONNX stores them (int4 rounds up).
uint64_t stored_bytes(const Tensor& t);

}  // namespace qforge::quant
