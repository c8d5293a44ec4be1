// Vector kernels for the scale searches (Highway, dispatched at run time to
// the best instruction set of the CPU).
//
// A search runs the same sequence of candidate scales over each block. Here
// up to kBatch independent blocks run side by side, one block per vector
// lane: each lane performs exactly ggml's scalar sequence of IEEE operations
// for its block (sums in element order, the same comparisons, branches turned
// into per-lane selects), so each lane's result is bit-identical to ggml's.
// Only lane-wise add, subtract, multiply, divide, compare, abs and exact
// int<->float conversions are used: no reductions across lanes, no FMA, no
// reciprocal estimates.
//
// Batch layout: element i of block b is at [i * kBatch + b] (inputs `xt`,
// `wt`, and the level outputs). `count` is the number of real blocks; lanes
// past it must hold finite values (zeros are fine) and their outputs are
// meaningless.
#pragma once

#include <cstdint>

namespace qforge::gguf::detail::simd {

constexpr int kBatch = 16;

// make_qkx2_quants (qkx3 = false) / make_qkx3_quants (qkx3 = true, squared
// error) with weights: levels in [0, nmax], x ~ scale * L - the_min.
struct QkxParams {
  int nmax;
  float rmin, rdelta;
  int nstep;
  bool use_mad;
  bool qkx3;
};
void qkx_batch(int count, int n, const QkxParams& p, const float* xt, const float* wt, float* scale,
               float* the_min, uint8_t* Lt);

// make_qx_quants with rmse_type 1: symmetric levels in [0, 2*nmax), weights
// wt, or x^2 when wt is null.
void qx_batch(int count, int n, int nmax, const float* xt, const float* wt, float* scale, int8_t* Lt);

// make_q3_quants with do_rmse: make_qx_quants' first guess with x^2 weights,
// then up to 5 passes of per-element refinement.
void q3_batch(int count, int n, int nmax, const float* xt, float* scale, int8_t* Lt);

// The IQ4 block-scale search (ntry = 7) of quantize_row_iq4_nl_impl.
void iq4_batch(int count, int n, const float* xt, const float* wt, float* d);

// L[i] = index of the IQ4 level nearest to id * x[i] (ggml's best_index_int8).
void iq4_indices(int n, const float* x, float id, uint8_t* L);

// Re-rounding against stored scales, element-wise, for `nsub` sub-blocks of
// `len` (16 or 32) elements: for each sub-block j with d[j] != 0,
//   L[j*len + i] = clamp(nearest_int((x + dm[j]) / d[j]), lo, hi) + off
// (x / d[j] when dm is null); sub-blocks with d[j] == 0 are left untouched.
void requantize(int nsub, int len, const float* x, const float* d, const float* dm, int lo, int hi, int off,
                uint8_t* L);

// F32 -> F16 row conversion for finite inputs (round to nearest even); uses
// the F16C instruction where the CPU has it.
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);

}  // namespace qforge::gguf::detail::simd
