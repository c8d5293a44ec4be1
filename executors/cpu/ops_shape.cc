// Shape and data-movement operators without arithmetic (executors/cpu/README.md).
#include <cmath>
#include <limits>
#include <type_traits>

#include "broadcast.h"
#include "kernel.h"
#include "qforge/half.h"

namespace qforge::cpu {

namespace {

// A shape spec as given ("[2, -1]": shape_str would print -1 as "?").
std::string spec_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Reshape's target shape: 0 copies the input's dimension (unless allowzero),
// -1 is inferred.
std::vector<int64_t> reshape_target(const std::vector<int64_t>& in, std::vector<int64_t> spec,
                                    bool allowzero) {
  const std::string given = spec_str(spec);
  int infer = -1;
  uint64_t known = 1;
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == 0 && !allowzero) {
      if (i >= in.size())
        throw Error("shape " + given + " copies dimension " + std::to_string(i) + " of input " +
                    shape_str(in) + ", which has no such dimension");
      spec[i] = in[i];
    }
    if (spec[i] == -1) {
      if (infer >= 0) throw Error("shape " + given + " has more than one -1");
      infer = static_cast<int>(i);
    } else if (spec[i] < 0) {
      throw Error("shape " + given + " has a negative dimension");
    } else {
      known *= static_cast<uint64_t>(spec[i]);
    }
  }
  const uint64_t n = numel_of(in);
  if (infer >= 0) {
    if (known == 0 || n % known != 0)
      throw Error("cannot reshape " + shape_str(in) + " to " + given + ": sizes do not divide");
    spec[infer] = static_cast<int64_t>(n / known);
  } else if (known != n) {
    throw Error("cannot reshape " + shape_str(in) + " (" + std::to_string(n) + " elements) to " + given);
  }
  return spec;
}

// Axes given as an attribute (before `since_input`) or as input `input`.
std::vector<int64_t> axes_of(KernelContext& ctx, int64_t since_input, size_t input) {
  if (ctx.opset >= since_input)
    return ctx.has_input(input) ? to_ints(ctx.input(input), "axes") : std::vector<int64_t>{};
  return attr_ints(ctx.node, "axes");
}

// Element conversions for Cast: every numeric type, bool, f16 and bf16.
template <class F>
void cast_dispatch(ElemType t, F&& f) {
  switch (t) {
    case ElemType::F32: return f(float{});
    case ElemType::F64: return f(double{});
    case ElemType::I8: return f(int8_t{});
    case ElemType::U8: return f(uint8_t{});
    case ElemType::I16: return f(int16_t{});
    case ElemType::U16: return f(uint16_t{});
    case ElemType::I32: return f(int32_t{});
    case ElemType::U32: return f(uint32_t{});
    case ElemType::I64: return f(int64_t{});
    case ElemType::U64: return f(uint64_t{});
    default: unsupported(std::string("Cast of element type ") + name_of(t));
  }
}

// Reads element i of `v` as a wide value (double for floats, int64 for
// integers), writes element i of `o`.
template <class T>
T saturate_to(double d) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(d);
  } else {
    if (std::isnan(d)) return T(0);
    if (d <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (d >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(d);
  }
}

void cast_value(KernelContext& ctx, const RunValue& x, ElemType to) {
  if (x.type == to) {
    ctx.set_output(0, x);
    return;
  }
  const int64_t n = static_cast<int64_t>(x.numel());
  uint8_t* o = ctx.alloc_output(0, to, x.shape);
  // Source as float (for f16/bf16 sources) or as its own type.
  auto write = [&](auto read) {
    // read(i) returns a float/double/integer; convert to `to`.
    auto store = [&](auto tag) {
      using U = decltype(tag);
      U* out = reinterpret_cast<U*>(o);
      parallel_for(ctx.threads, n, 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          auto v = read(i);
          if constexpr (std::is_floating_point_v<decltype(v)>)
            out[i] = saturate_to<U>(static_cast<double>(v));
          else
            out[i] = static_cast<U>(v);
        }
      });
    };
    switch (to) {
      case ElemType::Bool:
        for (int64_t i = 0; i < n; ++i) o[i] = read(i) != 0 ? 1 : 0;
        return;
      case ElemType::F16:
        for (int64_t i = 0; i < n; ++i)
          reinterpret_cast<uint16_t*>(o)[i] = fp32_to_fp16(static_cast<float>(read(i)));
        return;
      case ElemType::BF16:
        for (int64_t i = 0; i < n; ++i)
          reinterpret_cast<uint16_t*>(o)[i] = fp32_to_bf16(static_cast<float>(read(i)));
        return;
      default: cast_dispatch(to, store);
    }
  };
  switch (x.type) {
    case ElemType::Bool:
      return write([&](int64_t i) { return static_cast<int64_t>(x.as<uint8_t>()[i] != 0); });
    case ElemType::F16: return write([&](int64_t i) { return fp16_to_fp32(x.as<uint16_t>()[i]); });
    case ElemType::BF16: return write([&](int64_t i) { return bf16_to_fp32(x.as<uint16_t>()[i]); });
    default:
      cast_dispatch(x.type, [&](auto tag) {
        using T = decltype(tag);
        const T* p = x.as<T>();
        write([p](int64_t i) { return p[i]; });
      });
  }
}

ElemType onnx_type(int64_t id, const char* what) {
  auto t = elem_from_onnx(static_cast<int>(id));
  if (!t) throw Error(std::string(what) + " " + std::to_string(id) + " is not an ONNX element type");
  return *t;
}

}  // namespace

void register_ops_shape(KernelTable& t) {
  t.add_fn("", "Identity", 1, kMaxOpset, [](KernelContext& ctx) { ctx.set_output(0, ctx.input(0)); });
  t.add_fn("", "Reshape", 5, kMaxOpset, [](KernelContext& ctx) {
    const RunValue& x = ctx.input(0);
    RunValue v = x;
    v.shape = reshape_target(x.shape, to_ints(ctx.input(1), "the shape input"),
                             ctx.opset >= 14 && attr_int(ctx.node, "allowzero", 0) != 0);
    ctx.set_output(0, std::move(v));
  });
  t.add_fn("", "Constant", 1, kMaxOpset, [](KernelContext& ctx) {
    const Node& n = ctx.node;
    if (n.attributes.size() != 1) throw Error("a Constant node takes exactly one attribute");
    const Attribute& a = n.attributes[0];
    RunValue v;
    if (a.name == "value" && a.type == Attribute::Type::Tensor && a.tensors.size() == 1) {
      const Tensor& tt = a.tensors[0];
      v.type = tt.type;
      v.shape = tt.shape;
      BlobPtr b = tt.bytes();
      uint8_t* p = ctx.alloc_output(0, v.type, v.shape);
      const uint64_t need = bytes_of(v.type, v.numel());
      if (!b || b->size() < need) throw Error("its value has fewer bytes than " + describe(v) + " needs");
      std::memcpy(p, b->data(), need);
      return;
    }
    if (a.name == "value_float" && a.type == Attribute::Type::Float) {
      *ctx.alloc<float>(0, ElemType::F32, {}) = a.f;
    } else if (a.name == "value_floats" && a.type == Attribute::Type::Floats) {
      float* p = ctx.alloc<float>(0, ElemType::F32, {static_cast<int64_t>(a.floats.size())});
      std::copy(a.floats.begin(), a.floats.end(), p);
    } else if (a.name == "value_int" && a.type == Attribute::Type::Int) {
      *ctx.alloc<int64_t>(0, ElemType::I64, {}) = a.i;
    } else if (a.name == "value_ints" && a.type == Attribute::Type::Ints) {
      int64_t* p = ctx.alloc<int64_t>(0, ElemType::I64, {static_cast<int64_t>(a.ints.size())});
      std::copy(a.ints.begin(), a.ints.end(), p);
    } else {
      unsupported("Constant attribute '" + a.name + "'");
    }
  });

  t.add_fn("", "Shape", 1, kMaxOpset, [](KernelContext& ctx) {
    const std::vector<int64_t>& sh = ctx.input(0).shape;
    const int64_t r = static_cast<int64_t>(sh.size());
    int64_t b = 0, e = r;
    if (ctx.opset >= 15) {
      b = attr_int(ctx.node, "start", 0);
      e = attr_int(ctx.node, "end", r);
      if (b < 0) b += r;
      if (e < 0) e += r;
      b = std::clamp<int64_t>(b, 0, r);
      e = std::clamp<int64_t>(e, 0, r);
    }
    const int64_t n = std::max<int64_t>(0, e - b);
    int64_t* o = ctx.alloc<int64_t>(0, ElemType::I64, {n});
    for (int64_t i = 0; i < n; ++i) o[i] = sh[b + i];
  });
  t.add_fn("", "Size", 1, kMaxOpset, [](KernelContext& ctx) {
    *ctx.alloc<int64_t>(0, ElemType::I64, {}) = static_cast<int64_t>(ctx.input(0).numel());
  });
  t.add_fn("", "Flatten", 1, kMaxOpset, [](KernelContext& ctx) {
    RunValue v = ctx.input(0);
    const int64_t r = static_cast<int64_t>(v.shape.size());
    int64_t axis = attr_int(ctx.node, "axis", 1);
    if (axis < 0) axis += r;
    if (axis < 0 || axis > r)
      throw Error("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(r));
    int64_t a = 1, b = 1;
    for (int64_t i = 0; i < r; ++i) (i < axis ? a : b) *= v.shape[i];
    v.shape = {a, b};
    ctx.set_output(0, std::move(v));
  });
  t.add_fn("", "Squeeze", 1, kMaxOpset, [](KernelContext& ctx) {
    RunValue v = ctx.input(0);
    const int64_t r = static_cast<int64_t>(v.shape.size());
    std::vector<int64_t> axes = axes_of(ctx, 13, 1);
    std::vector<bool> drop(r, false);
    if (axes.empty()) {
      for (int64_t i = 0; i < r; ++i) drop[i] = v.shape[i] == 1;
    } else {
      for (int64_t a : axes) {
        a = norm_axis(a, r);
        if (v.shape[a] != 1)
          throw Error("cannot squeeze axis " + std::to_string(a) + " of " + describe(v) +
                      ": its size is not 1");
        drop[a] = true;
      }
    }
    std::vector<int64_t> sh;
    for (int64_t i = 0; i < r; ++i)
      if (!drop[i]) sh.push_back(v.shape[i]);
    v.shape = sh;
    ctx.set_output(0, std::move(v));
  });
  t.add_fn("", "Unsqueeze", 1, kMaxOpset, [](KernelContext& ctx) {
    RunValue v = ctx.input(0);
    std::vector<int64_t> axes = axes_of(ctx, 13, 1);
    const int64_t r = static_cast<int64_t>(v.shape.size() + axes.size());
    std::vector<bool> add(r, false);
    for (int64_t a : axes) {
      a = norm_axis(a, r);
      if (add[a]) throw Error("axis " + std::to_string(a) + " is given twice");
      add[a] = true;
    }
    std::vector<int64_t> sh;
    size_t k = 0;
    for (int64_t i = 0; i < r; ++i) sh.push_back(add[i] ? 1 : v.shape[k++]);
    v.shape = sh;
    ctx.set_output(0, std::move(v));
  });
  t.add_fn("", "Dropout", 7, kMaxOpset, [](KernelContext& ctx) {
    // Inference: the input unchanged, the mask all true. Training mode with a
    // ratio above 0 drops at random: refused.
    if (ctx.has_input(2) && scalar_as_double(ctx.input(2), "training_mode") != 0) {
      const double ratio = ctx.has_input(1) ? scalar_as_double(ctx.input(1), "ratio") : 0.5;
      if (ratio != 0) unsupported("Dropout with training_mode=true and ratio > 0 (random)");
    }
    ctx.set_output(0, ctx.input(0));
    if (ctx.wants_output(1)) {
      uint8_t* m = ctx.alloc<uint8_t>(1, ElemType::Bool, ctx.input(0).shape);
      std::memset(m, 1, ctx.input(0).numel());
    }
  });
  t.add_fn("", "ConstantOfShape", 9, kMaxOpset, [](KernelContext& ctx) {
    std::vector<int64_t> shape = to_ints(ctx.input(0), "the shape input");
    ElemType type = ElemType::F32;
    std::vector<uint8_t> value(4, 0);
    if (const Attribute* a = ctx.node.attr("value")) {
      if (a->type != Attribute::Type::Tensor || a->tensors.size() != 1 || a->tensors[0].numel() != 1)
        throw Error("attribute 'value' must be a one-element tensor");
      type = a->tensors[0].type;
      BlobPtr b = a->tensors[0].bytes();
      value.assign(b->data(), b->data() + bytes_of(type, 1));
    }
    uint8_t* o = ctx.alloc_output(0, type, shape);
    const uint64_t n = numel_of(shape), es = value.size();
    for (uint64_t i = 0; i < n; ++i) std::memcpy(o + i * es, value.data(), es);
  });
  t.add_fn("", "Range", 11, kMaxOpset, [](KernelContext& ctx) {
    const RunValue& s = ctx.input(0);
    cast_dispatch(s.type, [&](auto tag) {
      using T = decltype(tag);
      for (int i = 1; i < 3; ++i)
        if (ctx.input(i).type != s.type) throw Error("start, limit and delta must have one type");
      const T start = s.as<T>()[0], limit = ctx.input(1).as<T>()[0], delta = ctx.input(2).as<T>()[0];
      if (delta == T(0)) throw Error("delta is 0");
      const double n =
          std::ceil((static_cast<double>(limit) - static_cast<double>(start)) / static_cast<double>(delta));
      const int64_t count = std::max<int64_t>(0, static_cast<int64_t>(n));
      T* o = ctx.alloc<T>(0, s.type, {count});
      for (int64_t i = 0; i < count; ++i) o[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    });
  });
  t.add_fn("", "Cast", 6, kMaxOpset, [](KernelContext& ctx) {
    // `saturate` (opset 19) only affects float8 targets, which cast_value refuses.
    cast_value(ctx, ctx.input(0), onnx_type(attr_int(ctx.node, "to", 0), "attribute 'to'"));
  });
  t.add_fn("", "CastLike", 15, kMaxOpset,
           [](KernelContext& ctx) { cast_value(ctx, ctx.input(0), ctx.input(1).type); });
}

}  // namespace qforge::cpu
