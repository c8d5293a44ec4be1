// ggml-compatible quantization kernels.
//
// quantize_chunk writes the same bytes as ggml's ggml_quantize_chunk (ggml
// 0.25.1, the version in node-llama-cpp 3.22.1) for F32, F16, BF16, Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS,
// with or without an importance matrix; dequantize_row writes the same floats
// as ggml's to_float. Both are pure functions of their arguments: no global
// state, safe to call from many threads on disjoint outputs, and the result
// never depends on how a tensor is split into chunks.
//
// Unlike ggml, non-finite inputs are refused (std::domain_error naming the
// row and column) instead of being turned into meaningless blocks.
//
// Performance: the scale searches of the k-quants, IQ4_* and the imatrix
// variants of Q4_0..Q5_1 run several blocks side by side in SIMD lanes
// (Highway, dispatched at run time: AVX-512, AVX2, SSE4, ... or scalar); every
// lane repeats ggml's scalar float operations in ggml's order, so the bytes do
// not depend on the instruction set.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qforge/types.h"

namespace qforge::gguf {

// True if ggml can quantize to this type through quantize_chunk (the list above).
bool can_quantize(ElemType t);

// Same meaning as ggml_quantize_requires_imatrix (IQ2_XXS, IQ2_XS, IQ1_S).
bool requires_imatrix(ElemType t);

// Same semantics and bytes as ggml_quantize_chunk: quantizes rows
// [start_row, start_row + nrows) of a row-major float matrix `src` (row length
// n_per_row; `src` is the start of the whole matrix) into dst (the start of the
// whole output; rows are written at start_row * row_size). imatrix (n_per_row
// weights, one per column) may be null; Q8_0, F16, BF16 and F32 ignore it.
// Returns bytes written (nrows * row_size).
// Throws std::invalid_argument on an unsupported type, n_per_row not a
// positive multiple of the block size, or negative start_row / nrows;
// std::domain_error naming the row and column of the first non-finite value
// of src (or the column of a non-finite imatrix weight). Rows are checked and
// written in order a few at a time, so after a domain_error the rows before
// the offending one may have been written; it and later rows have not.
// Runs in the default floating-point environment whatever the caller's
// (flush-to-zero, rounding mode), restoring the caller's on return.
size_t quantize_chunk(ElemType t, const float* src, void* dst, int64_t start_row, int64_t nrows,
                      int64_t n_per_row, const float* imatrix);

// Bytes of one row of n_per_row elements. Throws std::invalid_argument when
// n_per_row is not a multiple of the block size.
size_t row_size(ElemType t, int64_t n_per_row);

// True if dequantize_row handles this type: every quantizable type, plus
// Q8_K, TQ1_0, TQ2_0 and MXFP4.
bool can_dequantize(ElemType t);

// Dequantize n elements (a multiple of the block size) of type t into floats,
// with the same results as ggml's to_float. Throws std::invalid_argument on an
// unsupported type or a bad n.
void dequantize_row(ElemType t, const void* src, float* dst, int64_t n);

}  // namespace qforge::gguf
