// Reductions: ReduceMean/Sum/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare,
// ArgMax, ArgMin, CumSum, TopK (executors/cpu/README.md).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kernel.h"

namespace qforge::cpu {

namespace {

enum class Red { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

template <class F>
void red_dispatch(ElemType t, F&& f) {
  switch (t) {
    case ElemType::F32: return f(float{});
    case ElemType::F64: return f(double{});
    case ElemType::I32: return f(int32_t{});
    case ElemType::I64: return f(int64_t{});
    case ElemType::U8: return f(uint8_t{});
    case ElemType::I8: return f(int8_t{});
    case ElemType::U32: return f(uint32_t{});
    case ElemType::U64: return f(uint64_t{});
    default: unsupported(std::string("reduction of element type ") + name_of(t));
  }
}

// Output shape and, per input dimension, whether it is reduced.
struct Reduction {
  std::vector<bool> reduced;
  std::vector<int64_t> out;       // with keepdims
  std::vector<int64_t> out_kept;  // always with the reduced dims as 1
  bool noop = false;
};

Reduction plan_reduction(KernelContext& ctx, const std::vector<int64_t>& shape, int64_t axes_input_since) {
  const int64_t r = static_cast<int64_t>(shape.size());
  std::vector<int64_t> axes;
  bool from_input = ctx.opset >= axes_input_since;
  if (from_input) {
    if (ctx.has_input(1)) axes = to_ints(ctx.input(1), "axes");
  } else {
    axes = attr_ints(ctx.node, "axes");
  }
  const bool keep = attr_int(ctx.node, "keepdims", 1) != 0;
  Reduction R;
  R.reduced.assign(r, false);
  if (axes.empty()) {
    if (from_input && attr_int(ctx.node, "noop_with_empty_axes", 0) != 0) {
      R.noop = true;
      R.out = R.out_kept = shape;
      return R;
    }
    R.reduced.assign(r, true);
  }
  for (int64_t a : axes) R.reduced[norm_axis(a, r)] = true;
  for (int64_t d = 0; d < r; ++d) {
    R.out_kept.push_back(R.reduced[d] ? 1 : shape[d]);
    if (!R.reduced[d] || keep) R.out.push_back(R.reduced[d] ? 1 : shape[d]);
  }
  return R;
}

void reduce(KernelContext& ctx, Red kind, int64_t axes_input_since) {
  const RunValue& x = ctx.input(0);
  const Reduction R = plan_reduction(ctx, x.shape, axes_input_since);
  red_dispatch(x.type, [&](auto tag) {
    using T = decltype(tag);
    using Acc = std::conditional_t<std::is_floating_point_v<T>, double,
                                   std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;
    const T* p = x.as<T>();
    const uint64_t n = x.numel();
    if (R.noop) {
      ctx.set_output(0, x);
      return;
    }
    const uint64_t on = numel_of(R.out_kept);
    std::vector<Acc> acc(on);
    Acc init = kind == Red::Prod ? Acc(1) : Acc(0);
    if (kind == Red::Max)
      init = std::numeric_limits<T>::has_infinity ? Acc(-std::numeric_limits<T>::infinity())
                                                  : Acc(std::numeric_limits<T>::lowest());
    if (kind == Red::Min)
      init = std::numeric_limits<T>::has_infinity ? Acc(std::numeric_limits<T>::infinity())
                                                  : Acc(std::numeric_limits<T>::max());
    std::fill(acc.begin(), acc.end(), init);
    // LogSumExp: subtract each output's max first.
    std::vector<Acc> mx;
    if (kind == Red::LogSumExp) mx.assign(on, Acc(-std::numeric_limits<double>::infinity()));
    const size_t r = x.shape.size();
    const std::vector<int64_t> ost = strides_of(R.out_kept);
    std::vector<int64_t> pos(r + 1, 0);
    auto walk = [&](auto&& fn) {
      std::fill(pos.begin(), pos.end(), 0);
      int64_t oi = 0;
      for (uint64_t i = 0; i < n; ++i) {
        fn(oi, p[i]);
        for (size_t d = r; d-- > 0;) {
          if (!R.reduced[d]) oi += ost[d];
          if (++pos[d] < x.shape[d]) break;
          if (!R.reduced[d]) oi -= ost[d] * x.shape[d];
          pos[d] = 0;
        }
      }
    };
    if (kind == Red::LogSumExp) walk([&](int64_t oi, T v) { mx[oi] = std::max<Acc>(mx[oi], Acc(v)); });
    walk([&](int64_t oi, T v) {
      const Acc a = static_cast<Acc>(v);
      Acc& t = acc[oi];
      switch (kind) {
        case Red::Sum:
        case Red::Mean:
        case Red::LogSum: t += a; break;
        case Red::Max: t = std::max(t, a); break;
        case Red::Min: t = std::min(t, a); break;
        case Red::Prod: t *= a; break;
        case Red::L1: t += a < 0 ? Acc(0) - a : a; break;
        case Red::L2:
        case Red::SumSquare: t += a * a; break;
        case Red::LogSumExp: t += static_cast<Acc>(std::exp(static_cast<double>(a - mx[oi]))); break;
      }
    });
    T* o = ctx.alloc<T>(0, x.type, R.out);
    const uint64_t count = on ? n / on : 0;
    for (uint64_t i = 0; i < on; ++i) {
      double v = static_cast<double>(acc[i]);
      switch (kind) {
        case Red::Mean: v = count ? v / static_cast<double>(count) : NAN; break;
        case Red::L2: v = std::sqrt(v); break;
        case Red::LogSum: v = std::log(v); break;
        case Red::LogSumExp: v = std::log(v) + static_cast<double>(mx[i]); break;
        default: break;
      }
      if constexpr (std::is_floating_point_v<T>)
        o[i] = static_cast<T>(v);
      else
        o[i] = kind == Red::Mean || kind == Red::L2 || kind == Red::LogSum || kind == Red::LogSumExp
                   ? static_cast<T>(v)
                   : static_cast<T>(acc[i]);
    }
  });
}

void arg_extreme(KernelContext& ctx, bool max) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 0), r);
  const bool keep = attr_int(ctx.node, "keepdims", 1) != 0;
  const bool last = ctx.opset >= 12 && attr_int(ctx.node, "select_last_index", 0) != 0;
  int64_t outer = 1, len = x.shape[axis], inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  std::vector<int64_t> out;
  for (int64_t d = 0; d < r; ++d)
    if (d != axis)
      out.push_back(x.shape[d]);
    else if (keep)
      out.push_back(1);
  if (len == 0) throw Error("cannot take the arg" + std::string(max ? "max" : "min") + " of an empty axis");
  int64_t* o = ctx.alloc<int64_t>(0, ElemType::I64, out);
  red_dispatch(x.type, [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.as<T>();
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t c = 0; c < inner; ++c) {
        const T* s = p + a * len * inner + c;
        int64_t best = 0;
        for (int64_t i = 1; i < len; ++i) {
          const T v = s[i * inner], b = s[best * inner];
          const bool better = max ? (last ? v >= b : v > b) : (last ? v <= b : v < b);
          if (better) best = i;
        }
        o[a * inner + c] = best;
      }
  });
}

void cumsum(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(static_cast<int64_t>(scalar_as_double(ctx.input(1), "axis")), r);
  const bool exclusive = attr_int(ctx.node, "exclusive", 0) != 0,
             reverse = attr_int(ctx.node, "reverse", 0) != 0;
  int64_t outer = 1, len = x.shape[axis], inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  red_dispatch(x.type, [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.as<T>();
    T* o = ctx.alloc<T>(0, x.type, x.shape);
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t c = 0; c < inner; ++c) {
        T sum = T(0);
        for (int64_t j = 0; j < len; ++j) {
          const int64_t i = reverse ? len - 1 - j : j;
          const int64_t off = (a * len + i) * inner + c;
          if (exclusive) {
            o[off] = sum;
            sum = static_cast<T>(sum + p[off]);
          } else {
            sum = static_cast<T>(sum + p[off]);
            o[off] = sum;
          }
        }
      }
  });
}

void topk(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", -1), r);
  const int64_t k = ctx.opset >= 10 ? static_cast<int64_t>(scalar_as_double(ctx.input(1), "K"))
                                    : attr_int(ctx.node, "k", 0);
  const bool largest = ctx.opset < 11 || attr_int(ctx.node, "largest", 1) != 0;
  const int64_t len = x.shape[axis];
  if (k < 0 || k > len)
    throw Error("K " + std::to_string(k) + " is out of range for axis size " + std::to_string(len));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  std::vector<int64_t> out = x.shape;
  out[axis] = k;
  red_dispatch(x.type, [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.as<T>();
    T* vo = ctx.alloc<T>(0, x.type, out);
    int64_t* io = ctx.alloc<int64_t>(1, ElemType::I64, out);
    std::vector<int64_t> idx(len);
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t c = 0; c < inner; ++c) {
        const T* s = p + a * len * inner + c;
        std::iota(idx.begin(), idx.end(), 0);
        // Sorted output; ties keep the lower index first.
        auto cmp = [&](int64_t i, int64_t j) {
          const T vi = s[i * inner], vj = s[j * inner];
          if (vi != vj) return largest ? vi > vj : vi < vj;
          return i < j;
        };
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), cmp);
        for (int64_t j = 0; j < k; ++j) {
          vo[(a * k + j) * inner + c] = s[idx[j] * inner];
          io[(a * k + j) * inner + c] = idx[j];
        }
      }
  });
}

}  // namespace

void register_ops_reduce(KernelTable& t) {
  const std::pair<const char*, Red> reds[] = {{"ReduceSum", Red::Sum},
                                              {"ReduceMean", Red::Mean},
                                              {"ReduceMax", Red::Max},
                                              {"ReduceMin", Red::Min},
                                              {"ReduceProd", Red::Prod},
                                              {"ReduceL1", Red::L1},
                                              {"ReduceL2", Red::L2},
                                              {"ReduceLogSum", Red::LogSum},
                                              {"ReduceLogSumExp", Red::LogSumExp},
                                              {"ReduceSumSquare", Red::SumSquare}};
  for (const auto& [name, kind] : reds) {
    // ReduceSum took its axes as an input from opset 13, the others from 18.
    const int64_t since = kind == Red::Sum ? 13 : 18;
    t.add_fn("", name, 1, kMaxOpset, [kind = kind, since](KernelContext& ctx) { reduce(ctx, kind, since); });
  }
  t.add_fn("", "ArgMax", 1, kMaxOpset, [](KernelContext& ctx) { arg_extreme(ctx, true); });
  t.add_fn("", "ArgMin", 1, kMaxOpset, [](KernelContext& ctx) { arg_extreme(ctx, false); });
  t.add_fn("", "CumSum", 11, kMaxOpset, cumsum);
  t.add_fn("", "TopK", 1, kMaxOpset, topk);
}

}  // namespace qforge::cpu
