// Reductions and operators along one axis:
// ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax/ArgMin, Softmax/LogSoftmax, CumSum,
// TopK (executors/cpu/README.md).
//
// The float rows of Softmax/LogSoftmax and of the reductions over a
// contiguous run are Highway kernels, compiled once per target by
// foreach_target (this file includes itself) and chosen at run time.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <type_traits>

#include "kernel.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops_reduce.cc"
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"  // after highway.h, per target
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace qforge::cpu::reduce_simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// y = softmax(x) (or log-softmax) over one contiguous row of n floats.
void SoftmaxRow(const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t n, int log) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  auto vmax = hn::Set(d, -std::numeric_limits<float>::infinity());
  for (; i + N <= n; i += N) vmax = hn::Max(vmax, hn::LoadU(d, x + i));
  float mx = hn::GetLane(hn::MaxOfLanes(d, vmax));
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  const auto vm = hn::Set(d, mx);
  auto vsum = hn::Zero(d);
  i = 0;
  for (; i + N <= n; i += N) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vm));
    if (!log) hn::StoreU(e, d, y + i);
    vsum = hn::Add(vsum, e);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
  for (; i < n; ++i) {
    const float e = std::exp(x[i] - mx);
    if (!log) y[i] = e;
    sum += e;
  }
  i = 0;
  if (log) {
    const float lse = mx + std::log(sum);
    const auto vl = hn::Set(d, lse);
    for (; i + N <= n; i += N) hn::StoreU(hn::Sub(hn::LoadU(d, x + i), vl), d, y + i);
    for (; i < n; ++i) y[i] = x[i] - lse;
  } else {
    const float inv = 1.0f / sum;
    const auto vi = hn::Set(d, inv);
    for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, y + i), vi), d, y + i);
    for (; i < n; ++i) y[i] *= inv;
  }
}

// Softmax (or log-softmax) along the rows of an [n, inner] block, for the
// columns [j0, j1): each lane is one column.
void SoftmaxCols(const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t n, int64_t inner, int64_t j0,
                 int64_t j1, int log) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t j = j0;
  for (; j + N <= j1; j += N) {
    auto vmax = hn::Set(d, -std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < n; ++i) vmax = hn::Max(vmax, hn::LoadU(d, x + i * inner + j));
    auto vsum = hn::Zero(d);
    for (int64_t i = 0; i < n; ++i) {
      const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i * inner + j), vmax));
      if (!log) hn::StoreU(e, d, y + i * inner + j);
      vsum = hn::Add(vsum, e);
    }
    if (log) {
      const auto lse = hn::Add(vmax, hn::Log(d, vsum));
      for (int64_t i = 0; i < n; ++i)
        hn::StoreU(hn::Sub(hn::LoadU(d, x + i * inner + j), lse), d, y + i * inner + j);
    } else {
      const auto inv = hn::Div(hn::Set(d, 1.0f), vsum);
      for (int64_t i = 0; i < n; ++i)
        hn::StoreU(hn::Mul(hn::LoadU(d, y + i * inner + j), inv), d, y + i * inner + j);
    }
  }
  for (; j < j1; ++j) {
    float mx = -std::numeric_limits<float>::infinity(), sum = 0;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i * inner + j]);
    for (int64_t i = 0; i < n; ++i) {
      const float e = std::exp(x[i * inner + j] - mx);
      if (!log) y[i * inner + j] = e;
      sum += e;
    }
    const float lse = mx + std::log(sum), inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) y[i * inner + j] = log ? x[i * inner + j] - lse : y[i * inner + j] * inv;
  }
}

// Sum (op 0), sum of squares (1), max (2), min (3) or sum of absolute
// values (4) of n contiguous floats; max and min return NaN when a value is
// NaN.
float RowReduce(const float* HWY_RESTRICT x, int64_t n, int op) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  if (op <= 1 || op == 4) {
    auto a0 = hn::Zero(d), a1 = hn::Zero(d);
    for (; i + 2 * N <= n; i += 2 * N) {
      const auto v0 = hn::LoadU(d, x + i), v1 = hn::LoadU(d, x + i + N);
      if (op == 0) {
        a0 = hn::Add(a0, v0);
        a1 = hn::Add(a1, v1);
      } else if (op == 1) {
        a0 = hn::MulAdd(v0, v0, a0);
        a1 = hn::MulAdd(v1, v1, a1);
      } else {
        a0 = hn::Add(a0, hn::Abs(v0));
        a1 = hn::Add(a1, hn::Abs(v1));
      }
    }
    float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
    for (; i < n; ++i) s += op == 0 ? x[i] : op == 1 ? x[i] * x[i] : std::fabs(x[i]);
    return s;
  }
  const bool is_max = op == 2;
  auto acc =
      hn::Set(d, is_max ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity());
  auto nan = hn::Zero(d);
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, x + i);
    acc = is_max ? hn::Max(acc, v) : hn::Min(acc, v);
    nan = hn::Or(nan, hn::VecFromMask(d, hn::Ne(v, v)));
  }
  if (!hn::AllFalse(d, hn::MaskFromVec(nan))) return std::numeric_limits<float>::quiet_NaN();
  float r = hn::GetLane(is_max ? hn::MaxOfLanes(d, acc) : hn::MinOfLanes(d, acc));
  for (; i < n; ++i) {
    if (std::isnan(x[i])) return x[i];
    r = is_max ? std::max(r, x[i]) : std::min(r, x[i]);
  }
  return r;
}

}  // namespace HWY_NAMESPACE
}  // namespace qforge::cpu::reduce_simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qforge::cpu {

namespace reduce_simd {
HWY_EXPORT(SoftmaxRow);
HWY_EXPORT(RowReduce);
HWY_EXPORT(SoftmaxCols);
void softmax_cols(const float* x, float* y, int64_t n, int64_t inner, int64_t j0, int64_t j1, bool log) {
  HWY_DYNAMIC_DISPATCH(SoftmaxCols)(x, y, n, inner, j0, j1, log ? 1 : 0);
}
void softmax_row(const float* x, float* y, int64_t n, bool log) {
  HWY_DYNAMIC_DISPATCH(SoftmaxRow)(x, y, n, log ? 1 : 0);
}
float row_reduce(const float* x, int64_t n, int op) { return HWY_DYNAMIC_DISPATCH(RowReduce)(x, n, op); }
}  // namespace reduce_simd

namespace {

template <class T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) for the element type `t` when it is one of the numeric
// types listed in `ok`; unsupported otherwise.
template <class F>
void visit_numeric(ElemType t, std::initializer_list<ElemType> ok, F&& f) {
  if (std::find(ok.begin(), ok.end(), t) == ok.end()) unsupported(std::string("element type ") + name_of(t));
  switch (t) {
    case ElemType::F32: return f(Tag<float>{});
    case ElemType::F64: return f(Tag<double>{});
    case ElemType::I8: return f(Tag<int8_t>{});
    case ElemType::U8: return f(Tag<uint8_t>{});
    case ElemType::I16: return f(Tag<int16_t>{});
    case ElemType::U16: return f(Tag<uint16_t>{});
    case ElemType::I32: return f(Tag<int32_t>{});
    case ElemType::U32: return f(Tag<uint32_t>{});
    case ElemType::I64: return f(Tag<int64_t>{});
    case ElemType::U64: return f(Tag<uint64_t>{});
    default: unsupported(std::string("element type ") + name_of(t));
  }
}

template <class T>
bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>)
    return std::isnan(x);
  else
    return false;
}

constexpr std::initializer_list<ElemType> kSumTypes = {ElemType::F32, ElemType::F64, ElemType::I32,
                                                       ElemType::I64, ElemType::U32, ElemType::U64};
constexpr std::initializer_list<ElemType> kMinMaxTypes = {ElemType::F32, ElemType::F64, ElemType::I32,
                                                          ElemType::I64, ElemType::U8,  ElemType::I8};

// [outer, n, inner] around `axis`.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at(const std::vector<int64_t>& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t i = 0; i < axis; ++i) s.outer *= shape[i];
  s.n = shape[axis];
  for (size_t i = axis + 1; i < shape.size(); ++i) s.inner *= shape[i];
  return s;
}

// ---------------------------------------------------------------- Reduce*
enum class ReduceKind { Sum, Mean, Max, Min, Prod, L1, L2, SumSquare, LogSum, LogSumExp };

// The accumulator type: double for floats (sums of many floats keep their
// precision), int64/uint64 for integers (wrapping like the ONNX reference's
// cast back), the element type itself for Max/Min.
template <ReduceKind K, class T>
using AccOf =
    std::conditional_t<K == ReduceKind::Max || K == ReduceKind::Min, T,
                       std::conditional_t<std::is_floating_point_v<T>, double,
                                          std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>>;

template <ReduceKind K, class A>
A reduce_init() {
  if constexpr (K == ReduceKind::Prod) return A(1);
  if constexpr (K == ReduceKind::Max)
    return std::numeric_limits<A>::has_infinity ? -std::numeric_limits<A>::infinity()
                                                : std::numeric_limits<A>::lowest();
  if constexpr (K == ReduceKind::Min)
    return std::numeric_limits<A>::has_infinity ? std::numeric_limits<A>::infinity()
                                                : std::numeric_limits<A>::max();
  return A(0);
}

template <ReduceKind K, class A, class T>
inline void reduce_step(A& a, T x) {
  if constexpr (K == ReduceKind::Sum || K == ReduceKind::Mean || K == ReduceKind::LogSum) {
    a += static_cast<A>(x);
  } else if constexpr (K == ReduceKind::L1) {
    if constexpr (std::is_signed_v<T>)
      a += x < 0 ? -static_cast<A>(x) : static_cast<A>(x);
    else
      a += static_cast<A>(x);
  } else if constexpr (K == ReduceKind::L2 || K == ReduceKind::SumSquare) {
    a += static_cast<A>(x) * static_cast<A>(x);
  } else if constexpr (K == ReduceKind::Prod) {
    a *= static_cast<A>(x);
  } else if constexpr (K == ReduceKind::Max) {
    if (x > a || is_nan(x)) a = x;  // NaN propagates, as numpy's maximum
  } else {
    if (x < a || is_nan(x)) a = x;
  }
}

template <ReduceKind K, class A, class T>
inline T reduce_finish(A a, int64_t count) {
  if constexpr (K == ReduceKind::Mean) {
    if constexpr (std::is_floating_point_v<A>) return static_cast<T>(a / static_cast<A>(count));
    return count == 0 ? T(0) : static_cast<T>(a / static_cast<A>(count));
  } else if constexpr (K == ReduceKind::L2) {
    return static_cast<T>(std::sqrt(static_cast<double>(a)));
  } else if constexpr (K == ReduceKind::LogSum) {
    return static_cast<T>(std::log(static_cast<double>(a)));
  } else {
    return static_cast<T>(a);
  }
}

// The reduction's iteration: dimensions of size 1 dropped, neighbours of the
// same kind (kept/reduced) merged.
struct ReducePlan {
  std::vector<int64_t> out_shape;
  std::vector<int64_t> kept_dims, kept_strides;  // kept dimensions (outermost first) and input strides
  std::vector<int64_t> red_dims, red_strides;    // reduced ones
  bool inner_kept = false;                       // the innermost merged dimension is kept
  int64_t reduce_count = 1;                      // elements reduced into each output
};

ReducePlan plan_reduce(const std::vector<int64_t>& shape, const std::vector<bool>& reduced, bool keepdims) {
  ReducePlan p;
  const std::vector<int64_t> strides = strides_of(shape);
  std::vector<int64_t> dims;
  std::vector<bool> kinds;
  std::vector<int64_t> dstr;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (reduced[i]) {
      p.reduce_count *= shape[i];
      if (keepdims) p.out_shape.push_back(1);
    } else {
      p.out_shape.push_back(shape[i]);
    }
    if (shape[i] == 1) continue;
    if (!dims.empty() && kinds.back() == reduced[i] && dstr.back() == shape[i] * strides[i]) {
      dims.back() *= shape[i];
      dstr.back() = strides[i];
    } else {
      dims.push_back(shape[i]);
      kinds.push_back(reduced[i]);
      dstr.push_back(strides[i]);
    }
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    (kinds[i] ? p.red_dims : p.kept_dims).push_back(dims[i]);
    (kinds[i] ? p.red_strides : p.kept_strides).push_back(dstr[i]);
  }
  p.inner_kept = !kinds.empty() && !kinds.back();
  return p;
}

// Offsets of every index of `dims` (odometer order) with `strides`.
std::vector<int64_t> offsets_of(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides) {
  std::vector<int64_t> out{0};
  for (size_t d = 0; d < dims.size(); ++d) {
    std::vector<int64_t> next;
    next.reserve(out.size() * dims[d]);
    for (int64_t o : out)
      for (int64_t i = 0; i < dims[d]; ++i) next.push_back(o + i * strides[d]);
    out.swap(next);
  }
  return out;
}

template <ReduceKind K, class T>
void reduce_typed(KernelContext& ctx, const RunValue& x, const ReducePlan& p) {
  using A = AccOf<K, T>;
  T* out = ctx.alloc<T>(0, x.type, p.out_shape);
  const T* in = x.as<T>();
  const int64_t count = p.reduce_count;
  if (p.inner_kept) {
    // Contiguous rows of the innermost kept dimension accumulate together.
    const int64_t inner = p.kept_dims.back();
    std::vector<int64_t> od(p.kept_dims.begin(), p.kept_dims.end() - 1);
    std::vector<int64_t> os(p.kept_strides.begin(), p.kept_strides.end() - 1);
    const std::vector<int64_t> outer_off = offsets_of(od, os);
    const std::vector<int64_t> red_off = offsets_of(p.red_dims, p.red_strides);
    // Split across outer rows and blocks of columns (so one output row still
    // uses every thread).
    constexpr int64_t kCols = 512;
    const int64_t blocks = (inner + kCols - 1) / kCols;
    constexpr bool float_sum =
        std::is_same_v<T, float> && K != ReduceKind::Max && K != ReduceKind::Min && K != ReduceKind::Prod;
    parallel_for(
        ctx.threads, static_cast<int64_t>(outer_off.size()) * blocks,
        std::max<int64_t>(1, 16384 / std::max<int64_t>(1, std::min(inner, kCols) * count)),
        [&](int64_t b, int64_t e) {
          std::unique_ptr<A[]> acc(new A[kCols]);  // (not vector<bool>)
          std::unique_ptr<float[]> part(new float[kCols]);
          for (int64_t t = b; t < e; ++t) {
            const int64_t r = t / blocks, j0 = (t % blocks) * kCols, w = std::min(kCols, inner - j0);
            for (int64_t j = 0; j < w; ++j) acc[j] = reduce_init<K, A>();
            const T* base = in + outer_off[r] + j0;
            if constexpr (float_sum) {
              // Float partial sums over 64 rows at a time (vectorized), added
              // into the double accumulators.
              const size_t nr = red_off.size();
              for (size_t k0 = 0; k0 < nr; k0 += 64) {
                for (int64_t j = 0; j < w; ++j) part[j] = 0;
                const size_t k1 = std::min(nr, k0 + 64);
                size_t k = k0;
                if constexpr (K != ReduceKind::L2 && K != ReduceKind::SumSquare && K != ReduceKind::L1)
                  for (; k + 4 <= k1; k += 4) {  // four rows per pass over part
                    const float *s0 = base + red_off[k], *s1 = base + red_off[k + 1];
                    const float *s2 = base + red_off[k + 2], *s3 = base + red_off[k + 3];
                    for (int64_t j = 0; j < w; ++j) part[j] += (s0[j] + s1[j]) + (s2[j] + s3[j]);
                  }
                for (; k < k1; ++k) {
                  const float* src = base + red_off[k];
                  if constexpr (K == ReduceKind::L2 || K == ReduceKind::SumSquare)
                    for (int64_t j = 0; j < w; ++j) part[j] += src[j] * src[j];
                  else if constexpr (K == ReduceKind::L1)
                    for (int64_t j = 0; j < w; ++j) part[j] += std::fabs(src[j]);
                  else
                    for (int64_t j = 0; j < w; ++j) part[j] += src[j];
                }
                for (int64_t j = 0; j < w; ++j) acc[j] += part[j];
              }
            } else {
              for (int64_t ro : red_off) {
                const T* src = base + ro;
                for (int64_t j = 0; j < w; ++j) reduce_step<K>(acc[j], src[j]);
              }
            }
            T* dst = out + r * inner + j0;
            for (int64_t j = 0; j < w; ++j) dst[j] = reduce_finish<K, A, T>(acc[j], count);
          }
        });
    return;
  }
  // The innermost merged dimension is reduced: a contiguous run per output.
  const int64_t run = p.red_dims.empty() ? 1 : p.red_dims.back();
  std::vector<int64_t> rd(p.red_dims.begin(), p.red_dims.end() - (p.red_dims.empty() ? 0 : 1));
  std::vector<int64_t> rs(p.red_strides.begin(), p.red_strides.end() - (p.red_strides.empty() ? 0 : 1));
  const std::vector<int64_t> red_off = offsets_of(rd, rs);
  const std::vector<int64_t> out_off = offsets_of(p.kept_dims, p.kept_strides);
  const bool empty = count == 0;
  parallel_for(ctx.threads, static_cast<int64_t>(out_off.size()),
               std::max<int64_t>(1, 16384 / std::max<int64_t>(1, count)), [&](int64_t b, int64_t e) {
                 for (int64_t o = b; o < e; ++o) {
                   A acc = reduce_init<K, A>();
                   if (!empty)
                     for (int64_t ro : red_off) {
                       const T* src = in + out_off[o] + ro;
                       if constexpr (std::is_same_v<T, float> && K != ReduceKind::Prod) {
                         // Highway rows: float lanes, summed into the double accumulator per run.
                         constexpr int op = K == ReduceKind::L2 || K == ReduceKind::SumSquare ? 1
                                            : K == ReduceKind::Max                            ? 2
                                            : K == ReduceKind::Min                            ? 3
                                            : K == ReduceKind::L1                             ? 4
                                                                                              : 0;
                         const float part = reduce_simd::row_reduce(src, run, op);
                         if constexpr (op <= 1 || op == 4)
                           acc += part;
                         else
                           reduce_step<K>(acc, part);
                       } else {
                         for (int64_t j = 0; j < run; ++j) reduce_step<K>(acc, src[j]);
                       }
                     }
                   out[o] = reduce_finish<K, A, T>(acc, count);
                 }
               });
}

// log(sum(exp(x))) per output, the output's max subtracted first.
template <class T>
void reduce_logsumexp(KernelContext& ctx, const RunValue& x, const ReducePlan& p) {
  T* out = ctx.alloc<T>(0, x.type, p.out_shape);
  const T* in = x.as<T>();
  const std::vector<int64_t> out_off = offsets_of(p.kept_dims, p.kept_strides);
  const std::vector<int64_t> red_off = offsets_of(p.red_dims, p.red_strides);
  const bool empty = p.reduce_count == 0;
  parallel_for(ctx.threads, static_cast<int64_t>(out_off.size()),
               std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.reduce_count)), [&](int64_t b, int64_t e) {
                 for (int64_t o = b; o < e; ++o) {
                   double mx = -std::numeric_limits<double>::infinity(), sum = 0;
                   if (!empty) {
                     for (int64_t ro : red_off) mx = std::max(mx, static_cast<double>(in[out_off[o] + ro]));
                     for (int64_t ro : red_off)
                       sum += std::exp(static_cast<double>(in[out_off[o] + ro]) - mx);
                   }
                   // The empty set and all -inf give -inf; +inf gives +inf.
                   if constexpr (!std::is_floating_point_v<T>)
                     if (std::isinf(mx))
                       throw Error("ReduceLogSumExp of an empty set is -inf, which " +
                                   std::string(name_of(x.type)) + " cannot hold");
                   out[o] = static_cast<T>(std::isinf(mx) ? mx : std::log(sum) + mx);
                 }
               });
}

// `axes_input_since`: the opset from which axes is an input (13 for
// ReduceSum, 18 for the others) and noop_with_empty_axes exists.
template <ReduceKind K>
void reduce(KernelContext& ctx, int64_t axes_input_since) {
  const RunValue& x = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> axes;
  bool noop = false;
  if (ctx.opset >= axes_input_since) {
    if (ctx.has_input(1)) axes = to_ints(ctx.input(1), "the axes input");
    noop = attr_int(ctx.node, "noop_with_empty_axes", 0) != 0;
  } else {
    axes = attr_ints(ctx.node, "axes");
  }
  const bool keepdims = attr_int(ctx.node, "keepdims", 1) != 0;
  if (axes.empty() && noop) {
    ctx.set_output(0, x);
    return;
  }
  std::vector<bool> reduced(rank, axes.empty());
  for (int64_t a : axes) {
    const int64_t n = norm_axis(a, rank, "axes value");
    if (reduced[n]) throw Error("axes repeat axis " + std::to_string(n));
    reduced[n] = true;
  }
  const ReducePlan p = plan_reduce(x.shape, reduced, keepdims);
  constexpr bool minmax = K == ReduceKind::Max || K == ReduceKind::Min;
  // ReduceMax/ReduceMin take bool from opset 20 (any/all; the empty set is
  // false/true).
  if (minmax && x.type == ElemType::Bool && ctx.opset >= 20) return reduce_typed<K, bool>(ctx, x, p);
  visit_numeric(x.type, minmax ? kMinMaxTypes : kSumTypes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (K == ReduceKind::LogSumExp)
      reduce_logsumexp<T>(ctx, x, p);
    else
      reduce_typed<K, T>(ctx, x, p);
  });
}

template <ReduceKind K>
void register_reduce(KernelTable& t, const char* op, int64_t axes_input_since) {
  t.add_fn("", op, 1, axes_input_since - 1, [=](KernelContext& ctx) { reduce<K>(ctx, axes_input_since); });
  t.add_fn("", op, axes_input_since, kMaxOpset,
           [=](KernelContext& ctx) { reduce<K>(ctx, axes_input_since); });
}

// ---------------------------------------------------------------- ArgMax/ArgMin
template <bool Max>
void arg_reduce(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 0), rank);
  const bool keepdims = attr_int(ctx.node, "keepdims", 1) != 0;
  const bool last = ctx.opset >= 12 && attr_int(ctx.node, "select_last_index", 0) != 0;
  if (x.shape[axis] == 0)
    throw Error("cannot take the arg" + std::string(Max ? "max" : "min") + " of an empty axis");
  std::vector<int64_t> out_shape = x.shape;
  if (keepdims)
    out_shape[axis] = 1;
  else
    out_shape.erase(out_shape.begin() + axis);
  const AxisSplit s = split_at(x.shape, axis);
  int64_t* out = ctx.alloc<int64_t>(0, ElemType::I64, out_shape);
  visit_numeric(x.type, kMinMaxTypes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = x.as<T>();
    // NaN wins (as numpy's argmax), the first or last one as asked.
    auto better = [&](T v, T best) {
      if (is_nan(best)) return last && is_nan(v);
      if (is_nan(v)) return true;
      if (Max) return last ? v >= best : v > best;
      return last ? v <= best : v < best;
    };
    parallel_for(ctx.threads, s.outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.n * s.inner)),
                 [&](int64_t b, int64_t e) {
                   std::vector<T> best(s.inner);
                   for (int64_t o = b; o < e; ++o) {
                     const T* src = in + o * s.n * s.inner;
                     int64_t* dst = out + o * s.inner;
                     for (int64_t j = 0; j < s.inner; ++j) {
                       best[j] = src[j];
                       dst[j] = 0;
                     }
                     for (int64_t i = 1; i < s.n; ++i)
                       for (int64_t j = 0; j < s.inner; ++j) {
                         const T v = src[i * s.inner + j];
                         if (better(v, best[j])) {
                           best[j] = v;
                           dst[j] = i;
                         }
                       }
                   }
                 });
  });
}

// ---------------------------------------------------------------- Softmax/LogSoftmax
// Before opset 13 the input is coerced to 2-D [prod(shape[:axis]),
// prod(shape[axis:])] and each row normalized; from 13 along `axis` only.
template <bool Log>
void softmax(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const bool coerce = ctx.opset < 13;
  AxisSplit s;
  if (rank == 0) {
    s = AxisSplit{};
  } else if (coerce) {
    const int64_t axis = attr_int(ctx.node, "axis", 1);
    // The coercion accepts axis == rank (every row of one element).
    const int64_t a = axis == rank ? rank : norm_axis(axis, rank);
    for (int64_t i = 0; i < a; ++i) s.outer *= x.shape[i];
    for (int64_t i = a; i < rank; ++i) s.n *= x.shape[i];
  } else {
    s = split_at(x.shape, norm_axis(attr_int(ctx.node, "axis", -1), rank));
  }
  auto run = [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = x.as<T>();
    T* out = ctx.alloc<T>(0, x.type, x.shape);
    if constexpr (std::is_same_v<T, float>) {
      if (s.inner > 1) {
        // Along a strided axis: blocks of columns, one lane per column.
        constexpr int64_t kCols = 256;
        const int64_t blocks = (s.inner + kCols - 1) / kCols;
        parallel_for(ctx.threads, s.outer * blocks, 1, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) {
            const int64_t o = r / blocks, j0 = (r % blocks) * kCols;
            reduce_simd::softmax_cols(in + o * s.n * s.inner, out + o * s.n * s.inner, s.n, s.inner, j0,
                                      std::min(s.inner, j0 + kCols), Log);
          }
        });
        return;
      }
    }
    const int64_t rows = s.outer * s.inner;
    parallel_for(ctx.threads, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, s.n)),
                 [&](int64_t b, int64_t e) {
                   for (int64_t r = b; r < e; ++r) {
                     const int64_t o = r / s.inner, j = r % s.inner;
                     const T* src = in + o * s.n * s.inner + j;
                     T* dst = out + o * s.n * s.inner + j;
                     if constexpr (std::is_same_v<T, float>) {
                       if (s.inner == 1) {
                         reduce_simd::softmax_row(src, dst, s.n, Log);
                         continue;
                       }
                     }
                     const int64_t st = s.inner;
                     T mx = -std::numeric_limits<T>::infinity();
                     for (int64_t i = 0; i < s.n; ++i) mx = std::max(mx, src[i * st]);
                     T sum = 0;
                     if (Log) {
                       for (int64_t i = 0; i < s.n; ++i) sum += std::exp(src[i * st] - mx);
                       const T lse = std::log(sum);
                       for (int64_t i = 0; i < s.n; ++i) dst[i * st] = src[i * st] - mx - lse;
                     } else {
                       for (int64_t i = 0; i < s.n; ++i) {
                         const T v = std::exp(src[i * st] - mx);
                         dst[i * st] = v;
                         sum += v;
                       }
                       const T inv = T(1) / sum;
                       for (int64_t i = 0; i < s.n; ++i) dst[i * st] *= inv;
                     }
                   }
                 });
  };
  switch (x.type) {
    case ElemType::F32: return run(Tag<float>{});
    case ElemType::F64: return run(Tag<double>{});
    default: unsupported(std::string("element type ") + name_of(x.type));
  }
}

// ---------------------------------------------------------------- CumSum
void cumsum(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const std::vector<int64_t> axes = to_ints(ctx.input(1), "the axis input");
  if (axes.size() != 1) throw Error("the axis input must have one element, found " + describe(ctx.input(1)));
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const AxisSplit s = split_at(x.shape, norm_axis(axes[0], rank));
  const bool exclusive = attr_int(ctx.node, "exclusive", 0) != 0;
  const bool reverse = attr_int(ctx.node, "reverse", 0) != 0;
  visit_numeric(x.type, kSumTypes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = x.as<T>();
    T* out = ctx.alloc<T>(0, x.type, x.shape);
    parallel_for(ctx.threads, s.outer, 1, [&](int64_t b, int64_t e) {
      std::vector<T> acc(s.inner);
      for (int64_t o = b; o < e; ++o) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t i = reverse ? s.n - 1 - k : k;
          const T* src = in + (o * s.n + i) * s.inner;
          T* dst = out + (o * s.n + i) * s.inner;
          for (int64_t j = 0; j < s.inner; ++j) {
            if (exclusive) {
              dst[j] = acc[j];
              acc[j] = static_cast<T>(acc[j] + src[j]);
            } else {
              acc[j] = static_cast<T>(acc[j] + src[j]);
              dst[j] = acc[j];
            }
          }
        }
      }
    });
  });
}

// ---------------------------------------------------------------- TopK
// The k largest (or smallest) along `axis`; equal values keep the lower index
// first. NaN orders above every number.
void topk(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  int64_t k = 0;
  if (ctx.opset < 10) {
    k = attr_required(ctx.node, "k").i;
  } else {
    const std::vector<int64_t> kv = to_ints(ctx.input(1), "the K input");
    if (kv.size() != 1) throw Error("the K input must have one element, found " + describe(ctx.input(1)));
    k = kv[0];
  }
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", -1), rank);
  const bool largest = ctx.opset < 11 || attr_int(ctx.node, "largest", 1) != 0;
  // sorted=0 leaves the order unspecified: the sorted order is one such.
  const AxisSplit s = split_at(x.shape, axis);
  if (k < 0 || k > s.n)
    throw Error("K=" + std::to_string(k) + " is out of range for axis " + std::to_string(axis) + " of " +
                describe(x));
  std::vector<int64_t> out_shape = x.shape;
  out_shape[axis] = k;
  visit_numeric(x.type,
                {ElemType::F32, ElemType::F64, ElemType::I8, ElemType::U8, ElemType::I16, ElemType::U16,
                 ElemType::I32, ElemType::U32, ElemType::I64, ElemType::U64},
                [&](auto tag) {
                  using T = typename decltype(tag)::type;
                  const T* in = x.as<T>();
                  T* vals = ctx.alloc<T>(0, x.type, out_shape);
                  int64_t* idx = ctx.alloc<int64_t>(1, ElemType::I64, out_shape);
                  parallel_for(ctx.threads, s.outer * s.inner, 1, [&](int64_t b, int64_t e) {
                    std::vector<int64_t> order(s.n);
                    for (int64_t r = b; r < e; ++r) {
                      const int64_t o = r / s.inner, j = r % s.inner;
                      const T* src = in + o * s.n * s.inner + j;
                      auto val = [&](int64_t i) { return src[i * s.inner]; };
                      // a before b: strictly better, or equal and lower index.
                      auto before = [&](int64_t a, int64_t c) {
                        const T va = val(a), vc = val(c);
                        const bool na = is_nan(va), nc = is_nan(vc);
                        if (na || nc) {
                          if (na && nc) return a < c;
                          return largest ? na : nc;
                        }
                        if (va != vc) return largest ? va > vc : va < vc;
                        return a < c;
                      };
                      std::iota(order.begin(), order.end(), int64_t{0});
                      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
                      for (int64_t i = 0; i < k; ++i) {
                        const int64_t at = (o * k + i) * s.inner + j;
                        vals[at] = val(order[i]);
                        idx[at] = order[i];
                      }
                    }
                  });
                });
}

}  // namespace

void register_ops_reduce(KernelTable& t) {
  register_reduce<ReduceKind::Sum>(t, "ReduceSum", 13);
  register_reduce<ReduceKind::Mean>(t, "ReduceMean", 18);
  register_reduce<ReduceKind::Max>(t, "ReduceMax", 18);
  register_reduce<ReduceKind::Min>(t, "ReduceMin", 18);
  register_reduce<ReduceKind::Prod>(t, "ReduceProd", 18);
  register_reduce<ReduceKind::L1>(t, "ReduceL1", 18);
  register_reduce<ReduceKind::L2>(t, "ReduceL2", 18);
  register_reduce<ReduceKind::SumSquare>(t, "ReduceSumSquare", 18);
  register_reduce<ReduceKind::LogSum>(t, "ReduceLogSum", 18);
  register_reduce<ReduceKind::LogSumExp>(t, "ReduceLogSumExp", 18);
  t.add_fn("", "ArgMax", 1, kMaxOpset, arg_reduce<true>);
  t.add_fn("", "ArgMin", 1, kMaxOpset, arg_reduce<false>);
  t.add_fn("", "Softmax", 1, kMaxOpset, softmax<false>);
  t.add_fn("", "LogSoftmax", 1, kMaxOpset, softmax<true>);
  t.add_fn("", "CumSum", 11, kMaxOpset, cumsum);
  t.add_fn("", "TopK", 1, kMaxOpset, topk);
}

}  // namespace qforge::cpu
#endif  // HWY_ONCE
