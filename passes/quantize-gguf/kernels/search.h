// Scale searches shared by the legacy and k-quant formats. Each one mirrors
// the ggml routine of the same name, operation for operation (internal.h
// says why that matters); only the variants ggml's quantizers actually call
// are provided.
#pragma once

#include <cstdint>

#include "simd.h"

namespace qforge::gguf::detail {

// Symmetric levels L[i] in [0, 2*nmax) for x[i] ~ scale * (L[i] - nmax), the
// scale chosen among 19 candidates by weighted least squares. Weights are
// qw[i], or x[i]^2 when qw is null (ggml's rmse_type 1 — the only one used).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw);

// Non-negative levels L[i] in [0, nmax] for the super-block scales / mins.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights);

// Batched searches: `count` (at most simd::kBatch) independent blocks of n
// (at most 32) elements; x[b] / w[b] point at block b's values and weights,
// results go to scale[b], the_min[b] / d[b] and the levels to L[b][0..n).
// Each block's results equal the scalar ggml routine's.

// make_qkx2_quants (p.qkx3 false) or make_qkx3_quants (true).
void qkx_search(int count, int n, const float* const* x, const float* const* w, const simd::QkxParams& p,
                float* scale, float* the_min, uint8_t* const* L);

// make_qx_quants with rmse_type 1; w null means x^2 weights.
void qx_search(int count, int n, int nmax, const float* const* x, const float* const* w, float* scale,
               int8_t* const* L);

// make_q3_quants (do_rmse true).
void q3_search(int count, int n, int nmax, const float* const* x, float* scale, int8_t* const* L);

// IQ4 block scale (quantize_row_iq4_nl_impl's per-block search, ntry 7).
void iq4_search(int count, int n, const float* const* x, const float* const* w, float* d);

}  // namespace qforge::gguf::detail
