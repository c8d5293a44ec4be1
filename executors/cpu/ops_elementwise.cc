// Elementwise arithmetic, comparisons, logic and activations (ONNX operators;
// executors/cpu/README.md says how to add one).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "broadcast.h"
#include "kernel.h"
#include "qforge/half.h"
#include "simd.h"

namespace qforge::cpu {

namespace {

template <class T>
constexpr bool kFloat = std::is_floating_point_v<T>;

// Calls f.template operator()<T>() with T the C++ type of `t` among the
// numeric types ONNX's arithmetic operators take.
template <class F>
void numeric_dispatch(ElemType t, F&& f) {
  switch (t) {
    case ElemType::F32: return f(float{});
    case ElemType::F64: return f(double{});
    case ElemType::I32: return f(int32_t{});
    case ElemType::I64: return f(int64_t{});
    case ElemType::I8: return f(int8_t{});
    case ElemType::U8: return f(uint8_t{});
    case ElemType::I16: return f(int16_t{});
    case ElemType::U16: return f(uint16_t{});
    case ElemType::U32: return f(uint32_t{});
    case ElemType::U64: return f(uint64_t{});
    default: unsupported(std::string("element type ") + name_of(t));
  }
}

void same_types(KernelContext& ctx) {
  for (size_t i = 1; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i) && ctx.input(i).type != ctx.input(0).type)
      throw Error("inputs have different types: " + describe(ctx.input(0)) + " and " +
                  describe(ctx.input(i)));
}

// A binary arithmetic op: op(x, y) for every numeric type.
template <class Op>
KernelFn arith(Op op) {
  return [op](KernelContext& ctx) {
    same_types(ctx);
    numeric_dispatch(ctx.input(0).type, [&](auto tag) {
      using T = decltype(tag);
      binary_broadcast<T, T, T>(ctx, ctx.input(0).type, [&](T x, T y) { return static_cast<T>(op(x, y)); });
    });
  };
}

// A comparison: bool output.
template <class Op>
KernelFn compare(Op op) {
  return [op](KernelContext& ctx) {
    same_types(ctx);
    const ElemType t = ctx.input(0).type;
    if (t == ElemType::Bool) {
      binary_broadcast<uint8_t, uint8_t, uint8_t>(ctx, ElemType::Bool,
                                                  [&](uint8_t x, uint8_t y) { return op(x, y) ? 1 : 0; });
      return;
    }
    numeric_dispatch(t, [&](auto tag) {
      using T = decltype(tag);
      binary_broadcast<T, T, uint8_t>(ctx, ElemType::Bool, [&](T x, T y) { return op(x, y) ? 1 : 0; });
    });
  };
}

template <class Op>
KernelFn logic(Op op) {
  return [op](KernelContext& ctx) {
    if (ctx.input(0).type != ElemType::Bool || ctx.input(1).type != ElemType::Bool)
      unsupported("logic on " + describe(ctx.input(0)) + " and " + describe(ctx.input(1)));
    binary_broadcast<uint8_t, uint8_t, uint8_t>(
        ctx, ElemType::Bool, [&](uint8_t x, uint8_t y) { return op(x != 0, y != 0) ? 1 : 0; });
  };
}

// A float-only unary op (f32, f64); `f` gets the node to read attributes.
template <class Make>
KernelFn float_unary(Make make) {
  return [make](KernelContext& ctx) {
    const RunValue& x = ctx.input(0);
    auto f = make(ctx);
    switch (x.type) {
      case ElemType::F32:
        return unary_map<float, float>(ctx, x.type, [&](float v) { return static_cast<float>(f(v)); });
      case ElemType::F64: return unary_map<double, double>(ctx, x.type, [&](double v) { return f(v); });
      default: unsupported(std::string("element type ") + name_of(x.type));
    }
  };
}

// A unary op on every numeric type.
template <class Op>
KernelFn numeric_unary(Op op) {
  return [op](KernelContext& ctx) {
    numeric_dispatch(ctx.input(0).type, [&](auto tag) {
      using T = decltype(tag);
      unary_map<T, T>(ctx, ctx.input(0).type, [&](T v) { return static_cast<T>(op(v)); });
    });
  };
}

// Runs `fn` on f32 copies of f16/bf16 inputs and converts its output back
// (for kernels that only have float and integer loops).
void via_f32(KernelContext& ctx, const KernelFn& fn) {
  const ElemType t = ctx.input(0).type;
  std::vector<RunValue> ins(ctx.num_inputs());
  std::vector<const RunValue*> ptrs;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const RunValue& v = ctx.input(i);
    std::vector<float> f(v.numel());
    for (size_t j = 0; j < f.size(); ++j)
      f[j] = v.type == ElemType::F16 ? fp16_to_fp32(v.as<uint16_t>()[j]) : bf16_to_fp32(v.as<uint16_t>()[j]);
    ins[i] = RunValue{ElemType::F32, v.shape, make_blob(f.data(), f.size() * 4)};
    ptrs.push_back(&ins[i]);
  }
  std::vector<RunValue> outs(1);
  KernelContext sub(ctx.node, ctx.opset, ctx.threads, ctx.pool(), ptrs, outs);
  fn(sub);
  const RunValue& r = outs[0];
  uint16_t* o = ctx.alloc<uint16_t>(0, t, r.shape);
  for (uint64_t j = 0; j < r.numel(); ++j)
    o[j] = t == ElemType::F16 ? fp32_to_fp16(r.as<float>()[j]) : fp32_to_bf16(r.as<float>()[j]);
}

// Variadic Min/Max/Sum/Mean: folds the inputs pairwise with broadcasting.
template <class Op>
KernelFn variadic(Op op, bool mean) {
  return [op, mean](KernelContext& ctx) {
    same_types(ctx);
    if (ctx.input(0).type == ElemType::F16 || ctx.input(0).type == ElemType::BF16)
      return via_f32(ctx, variadic(op, mean));
    const size_t n = ctx.num_inputs();
    if (n == 0) throw Error("needs at least one input");
    RunValue acc = ctx.input(0);
    for (size_t i = 1; i < n; ++i) {
      std::vector<RunValue> outs(1);
      KernelContext sub(ctx.node, ctx.opset, ctx.threads, ctx.pool(), {&acc, &ctx.input(i)}, outs);
      numeric_dispatch(acc.type, [&](auto tag) {
        using T = decltype(tag);
        binary_broadcast<T, T, T>(sub, acc.type, [&](T x, T y) { return static_cast<T>(op(x, y)); });
      });
      acc = std::move(outs[0]);
    }
    if (mean) {
      std::vector<RunValue> outs(1);
      KernelContext sub(ctx.node, ctx.opset, ctx.threads, ctx.pool(), {&acc}, outs);
      numeric_dispatch(acc.type, [&](auto tag) {
        using T = decltype(tag);
        unary_map<T, T>(sub, acc.type, [&](T v) { return static_cast<T>(v / static_cast<T>(n)); });
      });
      acc = std::move(outs[0]);
    } else if (n == 1) {
      ctx.set_output(0, acc);
      return;
    }
    ctx.set_output(0, std::move(acc));
  };
}

template <class T>
T fmod_or_mod(T x, T y, bool fmod) {
  if constexpr (kFloat<T>) {
    if (fmod) return std::fmod(x, y);
    T r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return r;
  } else {
    if (y == 0) throw Error("integer modulo by zero");
    T r = static_cast<T>(x % y);
    if (!fmod && r != 0 && ((r < 0) != (y < 0))) r = static_cast<T>(r + y);
    return r;
  }
}

void pow_kernel(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& y = ctx.input(1);
  // Exponents of any numeric type; the base's type is the output's.
  auto with_base = [&](auto btag) {
    using B = decltype(btag);
    numeric_dispatch(y.type, [&](auto etag) {
      using E = decltype(etag);
      binary_broadcast<B, E, B>(ctx, x.type, [](B a, E b) {
        if constexpr (kFloat<B>) {
          if constexpr (kFloat<E>) {
            if (b == E(2)) return static_cast<B>(a * a);
            if (b == E(0.5)) return static_cast<B>(std::sqrt(a));
          }
          return static_cast<B>(std::pow(static_cast<double>(a), static_cast<double>(b)));
        } else {
          return static_cast<B>(std::pow(static_cast<double>(a), static_cast<double>(b)));
        }
      });
    });
  };
  switch (x.type) {
    case ElemType::F32: return with_base(float{});
    case ElemType::F64: return with_base(double{});
    case ElemType::I32: return with_base(int32_t{});
    case ElemType::I64: return with_base(int64_t{});
    default: unsupported(std::string("Pow of element type ") + name_of(x.type));
  }
}

void clip_kernel(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  if (ctx.opset < 11) {
    const float lo = attr_float(ctx.node, "min", -INFINITY), hi = attr_float(ctx.node, "max", INFINITY);
    if (x.type != ElemType::F32) unsupported(std::string("Clip-6 of ") + name_of(x.type));
    unary_map<float, float>(ctx, x.type, [&](float v) { return std::min(std::max(v, lo), hi); });
    return;
  }
  if (x.type == ElemType::F32) {
    float lo = -INFINITY, hi = INFINITY;
    for (int k = 1; k < 3; ++k)
      if (ctx.has_input(k)) {
        if (ctx.input(k).type != x.type)
          throw Error(std::string(k == 1 ? "min" : "max") + " must have the input's type, found " +
                      describe(ctx.input(k)));
        (k == 1 ? lo : hi) = ctx.input(k).as<float>()[0];
      }
    float* o = ctx.alloc<float>(0, ElemType::F32, x.shape);
    const float* p = x.as<float>();
    parallel_for(ctx.threads, static_cast<int64_t>(x.numel()), 32768,
                 [&](int64_t b, int64_t e) { clip_f32(p + b, o + b, e - b, lo, hi); });
    return;
  }
  numeric_dispatch(x.type, [&](auto tag) {
    using T = decltype(tag);
    T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
    if (ctx.has_input(1)) {
      if (ctx.input(1).type != x.type)
        throw Error("min must have the input's type, found " + describe(ctx.input(1)));
      lo = ctx.input(1).as<T>()[0];
    }
    if (ctx.has_input(2)) {
      if (ctx.input(2).type != x.type)
        throw Error("max must have the input's type, found " + describe(ctx.input(2)));
      hi = ctx.input(2).as<T>()[0];
    }
    unary_map<T, T>(ctx, x.type, [&](T v) { return v < lo ? lo : (v > hi ? hi : v); });
  });
}

void where_kernel(KernelContext& ctx) {
  const RunValue& c = ctx.input(0);
  const RunValue& a = ctx.input(1);
  const RunValue& b = ctx.input(2);
  if (c.type != ElemType::Bool) throw Error("condition must be bool, found " + describe(c));
  if (a.type != b.type) throw Error("X and Y have different types: " + describe(a) + " and " + describe(b));
  const BroadcastPlan p = plan_broadcast({&c.shape, &a.shape, &b.shape});
  const uint64_t es = bytes_of(a.type, 1);
  if (a.type == ElemType::I4 || a.type == ElemType::U4) unsupported("Where on 4-bit types");
  uint8_t* o = ctx.alloc_output(0, a.type, p.out_shape);
  const uint8_t* pc = c.data->data();
  const uint8_t* pa = a.data->data();
  const uint8_t* pb = b.data->data();
  for_each_row(p, ctx.threads, [&](int64_t oo, const int64_t* off, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) {
      const bool cv = pc[off[0] + i * st[0]] != 0;
      const uint8_t* src = cv ? pa + (off[1] + i * st[1]) * es : pb + (off[2] + i * st[2]) * es;
      std::memcpy(o + (oo + i) * es, src, es);
    }
  });
}

void prelu_kernel(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  switch (x.type) {
    case ElemType::F32:
      return binary_broadcast<float, float, float>(ctx, x.type,
                                                   [](float v, float s) { return v < 0 ? v * s : v; });
    case ElemType::F64:
      return binary_broadcast<double, double, double>(ctx, x.type,
                                                      [](double v, double s) { return v < 0 ? v * s : v; });
    default: unsupported(std::string("PRelu of ") + name_of(x.type));
  }
}

}  // namespace

void register_ops_elementwise(KernelTable& t) {
  t.add_fn("", "Add", 7, kMaxOpset, arith([](auto x, auto y) { return x + y; }));
  t.add_fn("", "Sub", 7, kMaxOpset, arith([](auto x, auto y) { return x - y; }));
  t.add_fn("", "Mul", 7, kMaxOpset, arith([](auto x, auto y) { return x * y; }));
  t.add_fn("", "Div", 7, kMaxOpset, arith([](auto x, auto y) {
             using T = decltype(x);
             if constexpr (!kFloat<T>) {
               if (y == 0) throw Error("integer division by zero");
             }
             return x / y;
           }));
  t.add_fn("", "Mod", 10, kMaxOpset, [](KernelContext& ctx) {
    same_types(ctx);
    const bool fmod = attr_int(ctx.node, "fmod", 0) != 0;
    numeric_dispatch(ctx.input(0).type, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (kFloat<T>) {
        if (!fmod) throw Error("Mod of floating-point inputs requires fmod=1");
      }
      binary_broadcast<T, T, T>(ctx, ctx.input(0).type, [&](T x, T y) { return fmod_or_mod(x, y, fmod); });
    });
  });
  t.add_fn("", "Pow", 7, kMaxOpset, pow_kernel);
  t.add_fn("", "Equal", 7, kMaxOpset, compare([](auto x, auto y) { return x == y; }));
  t.add_fn("", "Less", 7, kMaxOpset, compare([](auto x, auto y) { return x < y; }));
  t.add_fn("", "Greater", 7, kMaxOpset, compare([](auto x, auto y) { return x > y; }));
  t.add_fn("", "LessOrEqual", 12, kMaxOpset, compare([](auto x, auto y) { return x <= y; }));
  t.add_fn("", "GreaterOrEqual", 12, kMaxOpset, compare([](auto x, auto y) { return x >= y; }));
  t.add_fn("", "And", 7, kMaxOpset, logic([](bool x, bool y) { return x && y; }));
  t.add_fn("", "Or", 7, kMaxOpset, logic([](bool x, bool y) { return x || y; }));
  t.add_fn("", "Xor", 7, kMaxOpset, logic([](bool x, bool y) { return x != y; }));
  t.add_fn("", "Not", 1, kMaxOpset, [](KernelContext& ctx) {
    if (ctx.input(0).type != ElemType::Bool) unsupported("Not of " + describe(ctx.input(0)));
    unary_map<uint8_t, uint8_t>(ctx, ElemType::Bool, [](uint8_t v) { return v ? 0 : 1; });
  });
  t.add_fn("", "Where", 9, kMaxOpset, where_kernel);
  t.add_fn("", "Min", 8, kMaxOpset,
           variadic([](auto x, auto y) { return std::isnan(double(x)) ? x : (y < x ? y : x); }, false));
  t.add_fn("", "Max", 8, kMaxOpset,
           variadic([](auto x, auto y) { return std::isnan(double(x)) ? x : (y > x ? y : x); }, false));
  t.add_fn("", "Sum", 8, kMaxOpset, variadic([](auto x, auto y) { return x + y; }, false));
  t.add_fn("", "Mean", 8, kMaxOpset, variadic([](auto x, auto y) { return x + y; }, true));
  t.add_fn("", "Clip", 6, kMaxOpset, clip_kernel);
  t.add_fn("", "PRelu", 9, kMaxOpset, prelu_kernel);

  t.add_fn("", "Abs", 6, kMaxOpset, numeric_unary([](auto v) {
             if constexpr (std::is_unsigned_v<decltype(v)>)
               return v;
             else
               return v < 0 ? -v : v;
           }));
  t.add_fn("", "Neg", 6, kMaxOpset, numeric_unary([](auto v) { return -v; }));
  t.add_fn("", "Sign", 9, kMaxOpset, numeric_unary([](auto v) {
             using T = decltype(v);
             return v > T(0) ? T(1) : (v < T(0) ? static_cast<T>(-1) : T(0));
           }));
  t.add_fn("", "Relu", 6, kMaxOpset,
           numeric_unary([](auto v) { return v > decltype(v)(0) ? v : decltype(v)(0); }));

  auto plain = [](auto f) { return float_unary([f](KernelContext&) { return f; }); };
  t.add_fn("", "Sqrt", 6, kMaxOpset, plain([](double v) { return std::sqrt(v); }));
  t.add_fn("", "Reciprocal", 6, kMaxOpset, plain([](double v) { return 1.0 / v; }));
  t.add_fn("", "Exp", 6, kMaxOpset, plain([](double v) { return std::exp(v); }));
  t.add_fn("", "Log", 6, kMaxOpset, plain([](double v) { return std::log(v); }));
  t.add_fn("", "Erf", 9, kMaxOpset, plain([](double v) { return std::erf(v); }));
  t.add_fn("", "Tanh", 6, kMaxOpset, plain([](double v) { return std::tanh(v); }));
  t.add_fn("", "Sigmoid", 6, kMaxOpset, plain([](double v) { return 1.0 / (1.0 + std::exp(-v)); }));
  t.add_fn("", "Softplus", 1, kMaxOpset,
           plain([](double v) { return v > 30 ? v : std::log1p(std::exp(v)); }));
  t.add_fn("", "Softsign", 1, kMaxOpset, plain([](double v) { return v / (1 + std::fabs(v)); }));
  t.add_fn("", "Floor", 6, kMaxOpset, plain([](double v) { return std::floor(v); }));
  t.add_fn("", "Ceil", 6, kMaxOpset, plain([](double v) { return std::ceil(v); }));
  t.add_fn("", "Round", 11, kMaxOpset, plain([](double v) { return std::nearbyint(v); }));
  t.add_fn("", "Sin", 7, kMaxOpset, plain([](double v) { return std::sin(v); }));
  t.add_fn("", "Cos", 7, kMaxOpset, plain([](double v) { return std::cos(v); }));
  t.add_fn("", "HardSwish", 14, kMaxOpset,
           plain([](double v) { return v * std::max(0.0, std::min(1.0, v / 6 + 0.5)); }));
  t.add_fn("", "HardSigmoid", 6, kMaxOpset, float_unary([](KernelContext& ctx) {
             const double a = attr_float(ctx.node, "alpha", 0.2f), b = attr_float(ctx.node, "beta", 0.5f);
             return [a, b](double v) { return std::max(0.0, std::min(1.0, a * v + b)); };
           }));
  t.add_fn("", "LeakyRelu", 6, kMaxOpset, float_unary([](KernelContext& ctx) {
             const double a = attr_float(ctx.node, "alpha", 0.01f);
             return [a](double v) { return v < 0 ? a * v : v; };
           }));
  t.add_fn("", "Elu", 6, kMaxOpset, float_unary([](KernelContext& ctx) {
             const double a = attr_float(ctx.node, "alpha", 1.0f);
             return [a](double v) { return v < 0 ? a * (std::exp(v) - 1) : v; };
           }));
  t.add_fn("", "Selu", 6, kMaxOpset, float_unary([](KernelContext& ctx) {
             const double a = attr_float(ctx.node, "alpha", 1.67326319217681884765625f);
             const double g = attr_float(ctx.node, "gamma", 1.05070102214813232421875f);
             return [a, g](double v) { return v <= 0 ? g * (a * std::exp(v) - a) : g * v; };
           }));
  t.add_fn("", "Celu", 12, kMaxOpset, float_unary([](KernelContext& ctx) {
             const double a = attr_float(ctx.node, "alpha", 1.0f);
             return [a](double v) { return std::max(0.0, v) + std::min(0.0, a * (std::exp(v / a) - 1)); };
           }));
  t.add_fn("", "ThresholdedRelu", 10, kMaxOpset, float_unary([](KernelContext& ctx) {
             const double a = attr_float(ctx.node, "alpha", 1.0f);
             return [a](double v) { return v > a ? v : 0.0; };
           }));
  t.add_fn("", "Gelu", 20, kMaxOpset, float_unary([](KernelContext& ctx) {
             const std::string approx = attr_string(ctx.node, "approximate", "none");
             if (approx != "none" && approx != "tanh") unsupported("Gelu approximate='" + approx + "'");
             const bool tanh_approx = approx == "tanh";
             return [tanh_approx](double v) {
               if (tanh_approx)
                 return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
               return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
             };
           }));
}

}  // namespace qforge::cpu
