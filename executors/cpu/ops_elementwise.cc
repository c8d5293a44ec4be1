// Elementwise arithmetic and activations (ONNX operators: docs/architecture.md
// lists where the executor sits; executors/cpu/README.md how to add one).
#include <algorithm>
#include <cmath>

#include "broadcast.h"
#include "kernel.h"

namespace qforge::cpu {

namespace {

// Dispatches a binary arithmetic op over the numeric types ONNX allows.
template <class F>
void arith(KernelContext& ctx, F f) {
  const RunValue& a = ctx.input(0);
  const RunValue& b = ctx.input(1);
  if (a.type != b.type) throw Error("inputs have different types: " + describe(a) + " and " + describe(b));
  switch (a.type) {
    case ElemType::F32: return binary_broadcast<float, float, float>(ctx, a.type, f);
    case ElemType::F64: return binary_broadcast<double, double, double>(ctx, a.type, f);
    case ElemType::I32: return binary_broadcast<int32_t, int32_t, int32_t>(ctx, a.type, f);
    case ElemType::I64: return binary_broadcast<int64_t, int64_t, int64_t>(ctx, a.type, f);
    case ElemType::I8: return binary_broadcast<int8_t, int8_t, int8_t>(ctx, a.type, f);
    case ElemType::U8: return binary_broadcast<uint8_t, uint8_t, uint8_t>(ctx, a.type, f);
    case ElemType::I16: return binary_broadcast<int16_t, int16_t, int16_t>(ctx, a.type, f);
    case ElemType::U16: return binary_broadcast<uint16_t, uint16_t, uint16_t>(ctx, a.type, f);
    case ElemType::U32: return binary_broadcast<uint32_t, uint32_t, uint32_t>(ctx, a.type, f);
    case ElemType::U64: return binary_broadcast<uint64_t, uint64_t, uint64_t>(ctx, a.type, f);
    default: unsupported(std::string("element type ") + name_of(a.type));
  }
}

struct AddF {
  template <class T>
  T operator()(T x, T y) const {
    return static_cast<T>(x + y);
  }
};

// A float activation (the float types only).
template <class F>
void float_unary(KernelContext& ctx, F f) {
  const RunValue& x = ctx.input(0);
  switch (x.type) {
    case ElemType::F32: return unary_map<float, float>(ctx, x.type, [&](float v) { return f(v); });
    case ElemType::F64: return unary_map<double, double>(ctx, x.type, [&](double v) { return f(v); });
    default: unsupported(std::string("element type ") + name_of(x.type));
  }
}

}  // namespace

void register_ops_elementwise(KernelTable& t) {
  t.add_fn("", "Add", 7, kMaxOpset, [](KernelContext& ctx) { arith(ctx, AddF{}); });
  t.add_fn("", "Relu", 6, kMaxOpset, [](KernelContext& ctx) {
    const RunValue& x = ctx.input(0);
    switch (x.type) {
      case ElemType::I32:
        return unary_map<int32_t, int32_t>(ctx, x.type, [](int32_t v) { return std::max(v, 0); });
      case ElemType::I8:
        return unary_map<int8_t, int8_t>(ctx, x.type, [](int8_t v) { return std::max<int8_t>(v, 0); });
      default: float_unary(ctx, [](auto v) { return v > 0 ? v : decltype(v)(0); });
    }
  });
}

}  // namespace qforge::cpu
