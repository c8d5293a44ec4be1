// Public entry points: argument checks, the non-finite scan and the per-type
// kernel table.
#include <algorithm>
#include <cfenv>
#include <cmath>
#include <stdexcept>
#include <string>

#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "internal.h"
#include "quants.h"

namespace qforge::gguf {
namespace {

using namespace detail;

struct Kernel {
  ElemType type;
  QuantizeFn quantize;  // null: dequantize only
  DequantizeFn dequantize;
};

constexpr Kernel kKernels[] = {
    {ElemType::F32, quantize_f32, dequantize_f32},
    {ElemType::F16, quantize_f16, dequantize_f16},
    {ElemType::BF16, quantize_bf16, dequantize_bf16},
    {ElemType::Q4_0, quantize_q4_0, dequantize_q4_0},
    {ElemType::Q4_1, quantize_q4_1, dequantize_q4_1},
    {ElemType::Q5_0, quantize_q5_0, dequantize_q5_0},
    {ElemType::Q5_1, quantize_q5_1, dequantize_q5_1},
    {ElemType::Q8_0, quantize_q8_0, dequantize_q8_0},
    {ElemType::MXFP4, nullptr, dequantize_mxfp4},
    {ElemType::Q2_K, quantize_q2_K, dequantize_q2_K},
    {ElemType::Q3_K, quantize_q3_K, dequantize_q3_K},
    {ElemType::Q4_K, quantize_q4_K, dequantize_q4_K},
    {ElemType::Q5_K, quantize_q5_K, dequantize_q5_K},
    {ElemType::Q6_K, quantize_q6_K, dequantize_q6_K},
    {ElemType::Q8_K, nullptr, dequantize_q8_K},
    {ElemType::TQ1_0, nullptr, dequantize_tq1_0},
    {ElemType::TQ2_0, nullptr, dequantize_tq2_0},
    {ElemType::IQ4_NL, quantize_iq4_nl, dequantize_iq4_nl},
    {ElemType::IQ4_XS, quantize_iq4_xs, dequantize_iq4_xs},
};

const Kernel* find(ElemType t) {
  for (const auto& k : kKernels)
    if (k.type == t) return &k;
  return nullptr;
}

std::string describe(float v) {
  if (std::isnan(v)) return "nan";
  return v < 0 ? "-inf" : "inf";
}

// Index of the first non-finite value of x[0, n), or -1.
int64_t first_non_finite(const float* x, int64_t n) {
  // Branch-free scan of 64-element chunks, then locate within the chunk.
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint32_t bad = 0;
    for (int j = 0; j < 64; ++j)
      bad |= static_cast<uint32_t>((bits_of(x[i + j]) & 0x7f800000u) == 0x7f800000u);
    if (bad) break;
  }
  for (; i < n; ++i)
    if ((bits_of(x[i]) & 0x7f800000u) == 0x7f800000u) return i;
  return -1;
}

void check_n_per_row(ElemType t, int64_t n_per_row, const char* what) {
  const uint32_t bs = traits(t).block_size;
  if (n_per_row <= 0 || n_per_row % bs != 0)
    throw std::invalid_argument(std::string(what) + " " + name_of(t) + ": row length " +
                                std::to_string(n_per_row) + " is not a positive multiple of the block size " +
                                std::to_string(bs));
}

// Puts the floating-point environment in its default state for the duration
// of a call (round to nearest, subnormals neither flushed nor treated as zero)
// and restores the caller's afterwards: ggml's results, which these kernels
// reproduce, assume that state, and some libraries (or -ffast-math code) turn
// flush-to-zero on for their threads.
class FpEnvGuard {
 public:
#if defined(__SSE2__) || defined(_M_X64)
  FpEnvGuard() : saved_(_mm_getcsr()) {
    if ((saved_ & kControl) != kDefault) _mm_setcsr((saved_ & ~kControl) | kDefault);
  }
  ~FpEnvGuard() { _mm_setcsr(saved_); }

 private:
  // FTZ, rounding control, DAZ; all exceptions stay masked by default.
  static constexpr unsigned kControl = 0x8000u | 0x6000u | 0x0040u | 0x1f80u;
  static constexpr unsigned kDefault = 0x1f80u;
  unsigned saved_;
#elif defined(__aarch64__)
  FpEnvGuard() {
    __asm__ volatile("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t want = saved_ & ~kControl;
    if (want != saved_) __asm__ volatile("msr fpcr, %0" : : "r"(want));
  }
  ~FpEnvGuard() { __asm__ volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  static constexpr uint64_t kControl = (uint64_t{1} << 24) | (uint64_t{3} << 22);  // FZ, RMode
  uint64_t saved_;
#else
  FpEnvGuard() : saved_(std::fegetround()) {
    if (saved_ != FE_TONEAREST) std::fesetround(FE_TONEAREST);
  }
  ~FpEnvGuard() {
    if (saved_ != FE_TONEAREST) std::fesetround(saved_);
  }

 private:
  int saved_;
#endif
  FpEnvGuard(const FpEnvGuard&) = delete;
  FpEnvGuard& operator=(const FpEnvGuard&) = delete;
};

}  // namespace

bool can_quantize(ElemType t) {
  const Kernel* k = find(t);
  return k && k->quantize;
}

bool can_dequantize(ElemType t) { return find(t) != nullptr; }

bool requires_imatrix(ElemType t) {
  return t == ElemType::IQ2_XXS || t == ElemType::IQ2_XS || t == ElemType::IQ1_S;
}

size_t row_size(ElemType t, int64_t n_per_row) {
  check_n_per_row(t, n_per_row, "row size of");
  const auto& tr = traits(t);
  return static_cast<size_t>(n_per_row / tr.block_size) * tr.type_size;
}

size_t quantize_chunk(ElemType t, const float* src, void* dst, int64_t start_row, int64_t nrows,
                      int64_t n_per_row, const float* imatrix) {
  const Kernel* k = find(t);
  if (!k || !k->quantize)
    throw std::invalid_argument(std::string("quantize: ggml cannot quantize to ") + name_of(t));
  check_n_per_row(t, n_per_row, "quantize");
  if (start_row < 0 || nrows < 0)
    throw std::invalid_argument("quantize " + std::string(name_of(t)) + ": negative start row (" +
                                std::to_string(start_row) + ") or row count (" + std::to_string(nrows) + ")");
  const size_t rs = row_size(t, n_per_row);
  if (nrows == 0) return 0;

  if (imatrix) {
    const int64_t bad_w = first_non_finite(imatrix, n_per_row);
    if (bad_w >= 0)
      throw std::domain_error("quantize " + std::string(name_of(t)) + ": non-finite imatrix weight " +
                              describe(imatrix[bad_w]) + " at column " + std::to_string(bad_w));
  }

  FpEnvGuard fp_env;
  // Rows go in groups of about 64 KiB of input: each group is checked for
  // non-finite values while it is in cache, then quantized.
  const int64_t group = std::max<int64_t>(1, (int64_t{1} << 14) / n_per_row);
  for (int64_t r = 0; r < nrows; r += group) {
    const int64_t rows = std::min(group, nrows - r);
    const float* x = src + (start_row + r) * n_per_row;
    const int64_t bad = first_non_finite(x, rows * n_per_row);
    if (bad >= 0)
      throw std::domain_error(
          "quantize " + std::string(name_of(t)) + ": non-finite value " + describe(x[bad]) + " at row " +
          std::to_string(start_row + r + bad / n_per_row) + ", column " + std::to_string(bad % n_per_row));
    char* out = static_cast<char*>(dst) + static_cast<size_t>(start_row + r) * rs;
    k->quantize(x, out, rows, n_per_row, imatrix);
  }
  return static_cast<size_t>(nrows) * rs;
}

void dequantize_row(ElemType t, const void* src, float* dst, int64_t n) {
  const Kernel* k = find(t);
  if (!k) throw std::invalid_argument(std::string("dequantize: unsupported type ") + name_of(t));
  if (n < 0 || n % traits(t).block_size != 0)
    throw std::invalid_argument("dequantize " + std::string(name_of(t)) + ": element count " +
                                std::to_string(n) + " is not a multiple of the block size " +
                                std::to_string(traits(t).block_size));
  FpEnvGuard fp_env;
  k->dequantize(src, dst, n);
}

}  // namespace qforge::gguf
