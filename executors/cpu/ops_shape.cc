// Shape and data-movement operators without arithmetic (executors/cpu/README.md).
#include "kernel.h"

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
}

}  // namespace qforge::cpu
