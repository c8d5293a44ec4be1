// Quantization arithmetic shared by the ONNX quantization passes: scales,
// zero points, codes, and the packed layouts ONNX and ONNX Runtime read.
//
// Two families of conventions are implemented, each matching what ONNX
// Runtime's Python quantization tool produces:
//
//  * "quant_utils" (onnxruntime/python/tools/quantization/quant_utils.py,
//    used by quantize_dynamic / quantize_static weight handling):
//      rmin = min(min(w), 0), rmax = max(max(w), 0)
//      symmetric: absmax = max(|rmin|, |rmax|), range [-absmax, absmax]
//      scale = float32((rmax - rmin) / (qmax - qmin))  (computed in double)
//      zero point = symmetric ? round((qmin + qmax) / 2) : round(qmin - rmin / scale)
//      q = clip(round(w / scale) + zp, qmin, qmax)   (float32 divide, numpy
//      round = round half to even); a range below FLT_MIN gives scale 1, zp 0.
//      int8 symmetric uses [-127, 127]; reduce_range uses [-64, 64] / [0, 127].
//
//  * "MLAS blockwise" (the C++ kernels behind MatMulNBitsQuantizer, i.e.
//    onnxruntime/core/mlas/lib/q4_dq.cpp):
//      symmetric: m = the block's value of largest magnitude (sign kept),
//        scale = -m / 2^(bits-1), so m maps to the most negative code;
//      asymmetric: scale = (max(vmax,0) - min(vmin,0)) / (2^bits - 1),
//        zp = roundf(qmin - min / scale) clamped to the code range;
//      codes: QDQ quantizer clamp(roundf(w * r) + zp), MatMulNBits quantizer
//      clamp(roundf(w * r + zp)) (unsigned, zp = 2^(bits-1) when symmetric),
//      r = 1 / scale (0 for a zero scale), C's roundf (ties away from zero).
//      Verified bit-identical to ORT 1.31's quantize_matmul_{4,8}bits and
//      quantize_qdq_matmul_4bits (tests/quantize_weights_test.cc).
//
// Matrices are a weight W of logical shape [K, N] (MatMul's B); `transposed`
// says the bytes are stored as [N, K] (Gemm with transB = 1).
#pragma once

#include <cstdint>
#include <vector>

#include "qforge/types.h"

namespace qforge::quant {

// ---------------------------------------------------------------- rounding
enum class Rounding { HalfEven, HalfAwayFromZero };
// Rounds to an integer-valued float (numpy.round or C roundf).
float round_to_int(float x, Rounding mode);

// ---------------------------------------------------------------- quant_utils
struct QRange {
  int32_t qmin = 0;
  int32_t qmax = 0;
};
// The integer range ORT uses for `type` (I8, U8, I4, U4, I16, U16).
QRange qrange(ElemType type, bool symmetric, bool reduce_range);

struct ScaleZp {
  float scale = 1.0f;
  int32_t zero_point = 0;
};
// quant_utils.compute_scale_zp for one range.
ScaleZp compute_scale_zp(float rmin, float rmax, QRange r, bool symmetric);
// quant_utils.quantize_nparray for one value.
int32_t quantize_value(float v, const ScaleZp& p, QRange r);

// ---------------------------------------------------------------- MLAS blockwise
// Scale of a symmetric block from its min and max (range2scale).
float mlas_symmetric_scale(float vmin, float vmax, int bits);
// Scale and zero point of an asymmetric block (range2scalezp, unsigned codes).
ScaleZp mlas_asymmetric_scale_zp(float vmin, float vmax, int bits);

// ---------------------------------------------------------------- matrices
enum class Convention { QuantUtils, MlasBlockwise };

struct QuantSpec {
  ElemType type = ElemType::I8;  // I8, U8, I4, U4: the code type of `QuantizedMatrix::q`
  bool symmetric = true;
  bool reduce_range = false;  // QuantUtils only
  int64_t block_size = 0;     // along K; 0 = one block of all K (per output channel)
  Convention convention = Convention::QuantUtils;
  // MlasBlockwise as ORT's MatMulNBits quantizer does it (unsigned codes,
  // zero point 2^(bits-1) implied when symmetric, codes rounded after adding
  // the zero point: roundf(w / scale + zp)). Otherwise MlasBlockwise follows
  // the QDQ quantizer (signed codes when symmetric, roundf(w / scale) + zp).
  bool mlas_nbits = false;
  // F32 or F16: the type scales are stored in. With F16 each scale is
  // rounded to half precision before the weights are quantized with it (ORT
  // reads the stored scale back), so codes match the stored scale.
  ElemType scale_type = ElemType::F32;
};

// A quantized [K, N] matrix: w[k][n] ~= scale[b][n] * (q[k][n] - zp[b][n]),
// b = k / block_size. `q` is row-major [K, N]; `scales`/`zero_points` are
// row-major [n_blocks, N]. zero_points is empty when the scheme has none
// (symmetric signed codes).
struct QuantizedMatrix {
  int64_t K = 0, N = 0, block_size = 0, n_blocks = 0;
  std::vector<int32_t> q;
  std::vector<float> scales;
  std::vector<int32_t> zero_points;
};

// Quantizes W ([K, N] logically; [N, K] in memory when `transposed`).
QuantizedMatrix quantize_matrix(const float* w, int64_t K, int64_t N, bool transposed, const QuantSpec& spec);

// ---------------------------------------------------------------- packing
// ONNX int4/uint4 packing: element 2i in the low nibble of byte i, 2i+1 in
// the high nibble; an odd count leaves the last high nibble 0.
std::vector<uint8_t> pack_nibbles(const std::vector<int32_t>& values);
// The bytes of `values` as `type` (I8, U8 one per byte; I4, U4 packed).
std::vector<uint8_t> encode_codes(const std::vector<int32_t>& values, ElemType type);

// MatMulNBits (com.microsoft) inputs from a matrix quantized with unsigned
// codes: B as uint8 [N, n_blocks, block_size * bits / 8] (within a block,
// element k at byte k*bits/8, low bits first; codes past K are 0, as ORT's
// quantizer leaves them), scales [N * n_blocks], zero points packed per column
// [N * ceil(n_blocks * bits / 8)] (empty when the matrix has none; an unused
// last nibble holds 8, as ORT writes it).
struct NBitsTensors {
  std::vector<uint8_t> b;
  std::vector<float> scales;
  std::vector<uint8_t> zero_points;
};
NBitsTensors pack_matmul_nbits(const QuantizedMatrix& m, int bits);

}  // namespace qforge::quant
