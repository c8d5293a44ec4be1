// Data movement: Concat, Split, Slice, Transpose, Gather, GatherElements,
// Expand, Tile, Pad, DepthToSpace, SpaceToDepth (executors/cpu/README.md).
#include <algorithm>
#include <cstring>
#include <limits>

#include "broadcast.h"
#include "kernel.h"

namespace qforge::cpu {

namespace {

uint64_t elem_size(const RunValue& v) {
  if (v.type == ElemType::I4 || v.type == ElemType::U4) unsupported("moving 4-bit elements");
  return bytes_of(v.type, 1);
}

// dst[i] (C order over out_shape) = src[offset + sum idx_d * src_strides[d]],
// elements of `es` bytes; a contiguous innermost run is one memcpy.
void strided_copy(uint8_t* dst, const uint8_t* src, const std::vector<int64_t>& out_shape,
                  const std::vector<int64_t>& src_strides, int64_t offset, uint64_t es, int threads) {
  // Merge dimensions where the source is contiguous across them.
  std::vector<int64_t> dims, st;
  for (size_t d = 0; d < out_shape.size(); ++d) {
    if (out_shape[d] == 1) continue;
    if (!dims.empty() && st.back() == src_strides[d] * out_shape[d]) {
      dims.back() *= out_shape[d];
      st.back() = src_strides[d];
      continue;
    }
    dims.push_back(out_shape[d]);
    st.push_back(src_strides[d]);
  }
  if (dims.empty()) {
    dims.push_back(1);
    st.push_back(1);
  }
  const size_t r = dims.size();
  const int64_t inner = dims[r - 1], ist = st[r - 1];
  const int64_t rows = static_cast<int64_t>(numel_of(out_shape)) / std::max<int64_t>(1, inner);
  if (numel_of(out_shape) == 0) return;
  parallel_for(threads, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, inner)),
               [&](int64_t b, int64_t e) {
                 for (int64_t row = b; row < e; ++row) {
                   int64_t rem = row, off = offset;
                   for (size_t d = r - 1; d-- > 0;) {
                     off += (rem % dims[d]) * st[d];
                     rem /= dims[d];
                   }
                   uint8_t* o = dst + row * inner * es;
                   if (ist == 1) {
                     std::memcpy(o, src + off * es, inner * es);
                   } else if (es == 4) {
                     const uint32_t* s4 = reinterpret_cast<const uint32_t*>(src) + off;
                     uint32_t* o4 = reinterpret_cast<uint32_t*>(o);
                     for (int64_t i = 0; i < inner; ++i) o4[i] = s4[i * ist];
                   } else {
                     for (int64_t i = 0; i < inner; ++i)
                       std::memcpy(o + i * es, src + (off + i * ist) * es, es);
                   }
                 }
               });
}

void concat(KernelContext& ctx) {
  const RunValue& first = ctx.input(0);
  const int64_t r = static_cast<int64_t>(first.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 0), r);
  std::vector<int64_t> out = first.shape;
  out[axis] = 0;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const RunValue& v = ctx.input(i);
    if (v.type != first.type || v.shape.size() != first.shape.size())
      throw Error("input " + std::to_string(i) + " is " + describe(v) + ", input 0 is " + describe(first));
    for (int64_t d = 0; d < r; ++d)
      if (d != axis && v.shape[d] != first.shape[d])
        throw Error("input " + std::to_string(i) + " is " + describe(v) + ", input 0 is " + describe(first) +
                    ": sizes differ outside axis " + std::to_string(axis));
    out[axis] += v.shape[axis];
  }
  const uint64_t es = elem_size(first);
  uint8_t* o = ctx.alloc_output(0, first.type, out);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= out[d];
  const int64_t out_row = out[axis] * inner;
  int64_t at = 0;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const RunValue& v = ctx.input(i);
    const int64_t row = v.shape[axis] * inner;
    const uint8_t* p = v.data->data();
    for (int64_t k = 0; k < outer; ++k) std::memcpy(o + (k * out_row + at) * es, p + k * row * es, row * es);
    at += row;
  }
}

void split(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 0), r);
  const int64_t total = x.shape[axis];
  const size_t n = ctx.num_outputs();
  std::vector<int64_t> sizes;
  if (ctx.opset >= 13 && ctx.has_input(1))
    sizes = to_ints(ctx.input(1), "split");
  else if (ctx.opset < 13)
    sizes = attr_ints(ctx.node, "split");
  if (sizes.empty()) {
    const int64_t parts = ctx.opset >= 18 && ctx.node.attr("num_outputs")
                              ? attr_int(ctx.node, "num_outputs", 0)
                              : static_cast<int64_t>(n);
    if (parts <= 0) throw Error("num_outputs must be positive");
    const int64_t each = (total + parts - 1) / parts;
    for (int64_t i = 0; i < parts; ++i)
      sizes.push_back(std::max<int64_t>(0, std::min(each, total - i * each)));
  }
  if (sizes.size() != n)
    throw Error("split gives " + std::to_string(sizes.size()) + " parts for " + std::to_string(n) +
                " outputs");
  int64_t sum = 0;
  for (int64_t s : sizes) sum += s;
  if (sum != total)
    throw Error("split sizes add up to " + std::to_string(sum) + ", axis has " + std::to_string(total));
  const std::vector<int64_t> strides = strides_of(x.shape);
  const uint64_t es = elem_size(x);
  int64_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    std::vector<int64_t> sh = x.shape;
    sh[axis] = sizes[i];
    if (ctx.wants_output(i)) {
      uint8_t* o = ctx.alloc_output(i, x.type, sh);
      strided_copy(o, x.data->data(), sh, strides, at * strides[axis], es, ctx.threads);
    }
    at += sizes[i];
  }
}

void slice(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> starts, ends, axes, steps;
  if (ctx.opset >= 10) {
    starts = to_ints(ctx.input(1), "starts");
    ends = to_ints(ctx.input(2), "ends");
    if (ctx.has_input(3)) axes = to_ints(ctx.input(3), "axes");
    if (ctx.has_input(4)) steps = to_ints(ctx.input(4), "steps");
  } else {
    starts = attr_ints(ctx.node, "starts");
    ends = attr_ints(ctx.node, "ends");
    axes = attr_ints(ctx.node, "axes");
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    throw Error("starts, ends, axes and steps must have the same length");
  std::vector<int64_t> begin(r, 0), step(r, 1), out = x.shape;
  std::vector<bool> seen(r, false);
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t a = norm_axis(axes[i], r);
    if (seen[a]) throw Error("axis " + std::to_string(a) + " is sliced twice");
    seen[a] = true;
    const int64_t dim = x.shape[a], s = steps[i];
    if (s == 0) throw Error("step 0 on axis " + std::to_string(a));
    int64_t b = starts[i], e = ends[i];
    if (b < 0) b += dim;
    if (e < 0 && e > std::numeric_limits<int64_t>::min() / 2) e += dim;
    if (s > 0) {
      b = std::clamp<int64_t>(b, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      out[a] = e > b ? (e - b + s - 1) / s : 0;
    } else {
      b = std::clamp<int64_t>(b, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      out[a] = b > e ? (b - e - s - 1) / (-s) : 0;
    }
    begin[a] = b;
    step[a] = s;
  }
  const std::vector<int64_t> xs = strides_of(x.shape);
  std::vector<int64_t> st(r);
  int64_t offset = 0;
  for (int64_t d = 0; d < r; ++d) {
    st[d] = xs[d] * step[d];
    offset += begin[d] * xs[d];
  }
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  strided_copy(o, x.data->data(), out, st, offset, elem_size(x), ctx.threads);
}

void transpose(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> perm = attr_ints(ctx.node, "perm");
  if (perm.empty())
    for (int64_t i = r - 1; i >= 0; --i) perm.push_back(i);
  if (static_cast<int64_t>(perm.size()) != r)
    throw Error("perm has " + std::to_string(perm.size()) + " entries for " + describe(x));
  const std::vector<int64_t> xs = strides_of(x.shape);
  std::vector<int64_t> out(r), st(r);
  std::vector<bool> used(r, false);
  for (int64_t i = 0; i < r; ++i) {
    const int64_t p = norm_axis(perm[i], r, "perm entry");
    if (used[p]) throw Error("perm repeats axis " + std::to_string(p));
    used[p] = true;
    out[i] = x.shape[p];
    st[i] = xs[p];
  }
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  strided_copy(o, x.data->data(), out, st, 0, elem_size(x), ctx.threads);
}

std::vector<int64_t> indices_of(const RunValue& v) {
  const uint64_t n = v.numel();
  std::vector<int64_t> out(n);
  if (v.type == ElemType::I64)
    std::memcpy(out.data(), v.data->data(), n * 8);
  else if (v.type == ElemType::I32)
    for (uint64_t i = 0; i < n; ++i) out[i] = v.as<int32_t>()[i];
  else
    throw Error("indices must be int64 or int32, found " + describe(v));
  return out;
}

void gather(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& idx = ctx.input(1);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 0), r);
  std::vector<int64_t> ind = indices_of(idx);
  const int64_t dim = x.shape[axis];
  for (int64_t& i : ind) {
    if (i < -dim || i >= dim)
      throw Error("index " + std::to_string(i) + " is out of range for axis size " + std::to_string(dim));
    if (i < 0) i += dim;
  }
  std::vector<int64_t> out(x.shape.begin(), x.shape.begin() + axis);
  out.insert(out.end(), idx.shape.begin(), idx.shape.end());
  out.insert(out.end(), x.shape.begin() + axis + 1, x.shape.end());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  const uint64_t es = elem_size(x);
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  const uint8_t* p = x.data->data();
  const int64_t n = static_cast<int64_t>(ind.size());
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(o + ((a * n + j) * inner) * es, p + ((a * dim + ind[j]) * inner) * es, inner * es);
}

void gather_elements(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const RunValue& idx = ctx.input(1);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  if (static_cast<int64_t>(idx.shape.size()) != r)
    throw Error("indices " + describe(idx) + " must have the rank of " + describe(x));
  const int64_t axis = norm_axis(attr_int(ctx.node, "axis", 0), r);
  const std::vector<int64_t> ind = indices_of(idx);
  const std::vector<int64_t> xs = strides_of(x.shape);
  const uint64_t es = elem_size(x);
  uint8_t* o = ctx.alloc_output(0, x.type, idx.shape);
  const uint8_t* p = x.data->data();
  const int64_t n = static_cast<int64_t>(ind.size());
  std::vector<int64_t> pos(r, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int64_t d = 0; d < r; ++d) {
      int64_t c = pos[d];
      if (d == axis) {
        c = ind[i];
        if (c < -x.shape[d] || c >= x.shape[d])
          throw Error("index " + std::to_string(c) + " is out of range for axis size " +
                      std::to_string(x.shape[d]));
        if (c < 0) c += x.shape[d];
      }
      off += c * xs[d];
    }
    std::memcpy(o + i * es, p + off * es, es);
    for (int64_t d = r - 1; d >= 0; --d) {
      if (++pos[d] < idx.shape[d]) break;
      pos[d] = 0;
    }
  }
}

void expand(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const std::vector<int64_t> shape = to_ints(ctx.input(1), "shape");
  const std::vector<int64_t> out = broadcast_shapes(x.shape, shape);
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  strided_copy(o, x.data->data(), out, broadcast_strides(x.shape, out), 0, elem_size(x), ctx.threads);
}

void tile(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const std::vector<int64_t> reps = to_ints(ctx.input(1), "repeats");
  const size_t r = x.shape.size();
  if (reps.size() != r)
    throw Error("repeats has " + std::to_string(reps.size()) + " entries for " + describe(x));
  // As a copy over [rep_0, d_0, rep_1, d_1, ...] with stride 0 on the repeats.
  std::vector<int64_t> view, st;
  const std::vector<int64_t> xs = strides_of(x.shape);
  std::vector<int64_t> out(r);
  for (size_t d = 0; d < r; ++d) {
    if (reps[d] < 0) throw Error("repeats must not be negative");
    view.push_back(reps[d]);
    st.push_back(0);
    view.push_back(x.shape[d]);
    st.push_back(xs[d]);
    out[d] = x.shape[d] * reps[d];
  }
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  strided_copy(o, x.data->data(), view, st, 0, elem_size(x), ctx.threads);
}

void pad(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> pads;
  const std::string mode = attr_string(ctx.node, "mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap")
    unsupported("Pad mode='" + mode + "'");
  if (mode == "wrap") unsupported("Pad mode='wrap'");
  std::vector<uint8_t> value(elem_size(x), 0);
  if (ctx.opset >= 11) {
    pads = to_ints(ctx.input(1), "pads");
    if (ctx.has_input(2) && ctx.input(2).numel() > 0) {
      if (ctx.input(2).type != x.type) throw Error("constant_value must have the input's type");
      std::memcpy(value.data(), ctx.input(2).data->data(), value.size());
    }
  } else {
    pads = attr_ints(ctx.node, "pads");
    const float v = attr_float(ctx.node, "value", 0.f);
    if (x.type != ElemType::F32) unsupported("Pad-2 of " + describe(x));
    std::memcpy(value.data(), &v, 4);
  }
  std::vector<int64_t> axes;
  if (ctx.opset >= 18 && ctx.has_input(3)) {
    axes = to_ints(ctx.input(3), "axes");
    for (int64_t& a : axes) a = norm_axis(a, r);
  } else {
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  if (pads.size() != 2 * axes.size())
    throw Error("pads has " + std::to_string(pads.size()) + " entries for " + std::to_string(axes.size()) +
                " axes");
  std::vector<int64_t> before(r, 0), after(r, 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    before[axes[i]] = pads[i];
    after[axes[i]] = pads[i + axes.size()];
  }
  std::vector<int64_t> out(r);
  for (int64_t d = 0; d < r; ++d) {
    out[d] = x.shape[d] + before[d] + after[d];
    if (out[d] < 0) throw Error("pads make axis " + std::to_string(d) + " negative");
    if (mode == "reflect" && x.shape[d] < 2 && (before[d] > 0 || after[d] > 0))
      throw Error("reflect padding needs at least 2 elements on axis " + std::to_string(d));
    if (mode != "constant" && x.shape[d] == 0 && out[d] > 0)
      throw Error("cannot pad an empty axis in mode " + mode);
  }
  const uint64_t es = value.size();
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  const uint8_t* p = x.data->data();
  const std::vector<int64_t> xs = strides_of(x.shape);
  const uint64_t n = numel_of(out);
  std::vector<int64_t> pos(r, 0);
  for (uint64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    bool inside = true;
    for (int64_t d = 0; d < r && inside; ++d) {
      int64_t c = pos[d] - before[d];
      const int64_t dim = x.shape[d];
      if (c < 0 || c >= dim) {
        if (mode == "constant") {
          inside = false;
          break;
        } else if (mode == "edge") {
          c = c < 0 ? 0 : dim - 1;
        } else {  // reflect
          const int64_t period = 2 * (dim - 1);
          c = ((c % period) + period) % period;
          if (c >= dim) c = period - c;
        }
      }
      off += c * xs[d];
    }
    std::memcpy(o + i * es, inside ? p + off * es : value.data(), es);
    for (int64_t d = r - 1; d >= 0; --d) {
      if (++pos[d] < out[d]) break;
      pos[d] = 0;
    }
  }
}

void depth_space(KernelContext& ctx, bool to_space) {
  const RunValue& x = ctx.input(0);
  if (x.shape.size() != 4) throw Error("input must be 4-D, found " + describe(x));
  const int64_t b = attr_int(ctx.node, "blocksize", 0);
  if (b <= 0) throw Error("blocksize must be positive");
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const std::vector<int64_t> xs = strides_of(x.shape);
  std::vector<int64_t> view, st, out;
  if (to_space) {
    if (C % (b * b)) throw Error("channels " + std::to_string(C) + " are not divisible by blocksize^2");
    const int64_t c = C / (b * b);
    const bool crd = attr_string(ctx.node, "mode", "DCR") == "CRD";
    const std::string mode = attr_string(ctx.node, "mode", "DCR");
    if (mode != "DCR" && mode != "CRD") unsupported("DepthToSpace mode='" + mode + "'");
    // Output [N, c, H, b, W, b] from the input channel index (DCR: b1, b2, c; CRD: c, b1, b2).
    view = {N, c, H, b, W, b};
    const int64_t sc = crd ? b * b * xs[1] : xs[1];
    const int64_t sb1 = crd ? b * xs[1] : b * c * xs[1];
    const int64_t sb2 = crd ? xs[1] : c * xs[1];
    st = {xs[0], sc, xs[2], sb1, xs[3], sb2};
    out = {N, c, H * b, W * b};
  } else {
    if (H % b || W % b) throw Error("height and width must be divisible by blocksize");
    const int64_t h = H / b, w = W / b;
    // Output [N, b1, b2, C, h, w].
    view = {N, b, b, C, h, w};
    st = {xs[0], xs[2], xs[3], xs[1], b * xs[2], b * xs[3]};
    out = {N, C * b * b, h, w};
  }
  uint8_t* o = ctx.alloc_output(0, x.type, out);
  strided_copy(o, x.data->data(), view, st, 0, elem_size(x), ctx.threads);
}

}  // namespace

void register_ops_movement(KernelTable& t) {
  t.add_fn("", "Concat", 4, kMaxOpset, concat);
  t.add_fn("", "Split", 2, kMaxOpset, split);
  t.add_fn("", "Slice", 1, kMaxOpset, slice);
  t.add_fn("", "Transpose", 1, kMaxOpset, transpose);
  t.add_fn("", "Gather", 1, kMaxOpset, gather);
  t.add_fn("", "GatherElements", 11, kMaxOpset, gather_elements);
  t.add_fn("", "Expand", 8, kMaxOpset, expand);
  t.add_fn("", "Tile", 6, kMaxOpset, tile);
  t.add_fn("", "Pad", 2, kMaxOpset, pad);
  t.add_fn("", "DepthToSpace", 1, kMaxOpset, [](KernelContext& ctx) { depth_space(ctx, true); });
  t.add_fn("", "SpaceToDepth", 1, kMaxOpset, [](KernelContext& ctx) { depth_space(ctx, false); });
}

}  // namespace qforge::cpu
