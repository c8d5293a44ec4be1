// Pooling: GlobalAveragePool, GlobalMaxPool, AveragePool, MaxPool
// (executors/cpu/README.md). 1 to 3 spatial dimensions.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernel.h"

namespace qforge::cpu {

namespace {

void global_pool(KernelContext& ctx, bool max) {
  const RunValue& x = ctx.input(0);
  if (x.type != ElemType::F32)
    unsupported(std::string(max ? "GlobalMaxPool" : "GlobalAveragePool") + " of " + describe(x));
  if (x.shape.size() < 2) throw Error("input must have a channel dimension, found " + describe(x));
  std::vector<int64_t> out = x.shape;
  for (size_t d = 2; d < out.size(); ++d) out[d] = 1;
  const int64_t NC = x.shape[0] * x.shape[1];
  const int64_t S = NC ? static_cast<int64_t>(x.numel()) / NC : 0;
  float* o = ctx.alloc<float>(0, ElemType::F32, out);
  const float* p = x.as<float>();
  parallel_for(ctx.threads, NC, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, S)),
               [&](int64_t lo, int64_t hi) {
                 for (int64_t i = lo; i < hi; ++i) {
                   const float* s = p + i * S;
                   if (max) {
                     float m = -INFINITY;
                     for (int64_t j = 0; j < S; ++j) m = std::max(m, s[j]);
                     o[i] = m;
                   } else {
                     float sum = 0;
                     for (int64_t j = 0; j < S; ++j) sum += s[j];
                     o[i] = sum / static_cast<float>(S);
                   }
                 }
               });
}

void pool(KernelContext& ctx, bool max);

// MaxPool of 8-bit integers: exact through f32.
void pool_int8(KernelContext& ctx) {
  const RunValue& x = ctx.input(0);
  std::vector<float> f(x.numel());
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = x.type == ElemType::U8 ? x.as<uint8_t>()[i] : x.as<int8_t>()[i];
  const RunValue xf{ElemType::F32, x.shape, make_blob(f.data(), f.size() * 4)};
  std::vector<RunValue> outs(ctx.num_outputs());
  KernelContext sub(ctx.node, ctx.opset, ctx.threads, ctx.pool(), {&xf}, outs);
  pool(sub, true);
  const RunValue& y = outs[0];
  uint8_t* o = ctx.alloc_output(0, x.type, y.shape);
  for (uint64_t i = 0; i < y.numel(); ++i)
    o[i] = x.type == ElemType::U8 ? static_cast<uint8_t>(y.as<float>()[i])
                                  : static_cast<uint8_t>(static_cast<int8_t>(y.as<float>()[i]));
  if (outs.size() > 1 && outs[1].data) ctx.set_output(1, outs[1]);
}

void pool(KernelContext& ctx, bool max) {
  const RunValue& x = ctx.input(0);
  const char* op = max ? "MaxPool" : "AveragePool";
  if (max && (x.type == ElemType::U8 || x.type == ElemType::I8)) return pool_int8(ctx);
  if (x.type != ElemType::F32) unsupported(std::string(op) + " of " + describe(x));
  const size_t nsp = x.shape.size() - 2;
  if (x.shape.size() < 3 || nsp > 3)
    unsupported(std::string(op) + " of a " + std::to_string(x.shape.size()) + "-D input");
  const std::vector<int64_t> k = attr_ints(ctx.node, "kernel_shape");
  if (k.size() != nsp)
    throw Error("kernel_shape must have one entry per spatial dimension (" + std::to_string(nsp) + ")");
  std::vector<int64_t> s = attr_ints(ctx.node, "strides", std::vector<int64_t>(nsp, 1));
  std::vector<int64_t> d = attr_ints(ctx.node, "dilations", std::vector<int64_t>(nsp, 1));
  std::vector<int64_t> pads = attr_ints(ctx.node, "pads", std::vector<int64_t>(2 * nsp, 0));
  if (s.size() != nsp || d.size() != nsp || pads.size() != 2 * nsp)
    throw Error("strides, dilations and pads must match the spatial dimensions");
  const std::string auto_pad = attr_string(ctx.node, "auto_pad", "NOTSET");
  const bool ceil_mode = attr_int(ctx.node, "ceil_mode", 0) != 0;
  const bool include_pad = attr_int(ctx.node, "count_include_pad", 0) != 0;
  if (max && attr_int(ctx.node, "storage_order", 0) != 0 && ctx.wants_output(1))
    unsupported("MaxPool storage_order=1");
  std::vector<int64_t> pb(nsp), pe(nsp), out(nsp);
  for (size_t i = 0; i < nsp; ++i) {
    const int64_t in = x.shape[2 + i], ek = (k[i] - 1) * d[i] + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out[i] = (in + s[i] - 1) / s[i];
      const int64_t total = std::max<int64_t>(0, (out[i] - 1) * s[i] + ek - in);
      pb[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pe[i] = total - pb[i];
    } else {
      if (auto_pad == "VALID") {
        pb[i] = pe[i] = 0;
      } else if (auto_pad == "NOTSET") {
        pb[i] = pads[i];
        pe[i] = pads[nsp + i];
      } else {
        throw Error("auto_pad '" + auto_pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
      }
      const int64_t span = in + pb[i] + pe[i] - ek;
      if (span < 0) throw Error("the window is larger than the padded input " + describe(x));
      out[i] = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
      // A window starting in the end padding is dropped (as ONNX Runtime and PyTorch).
      if (ceil_mode && (out[i] - 1) * s[i] >= in + pb[i]) --out[i];
    }
  }
  // As 3 spatial dimensions (missing ones of size 1).
  int64_t I[3] = {1, 1, 1}, O[3] = {1, 1, 1}, K[3] = {1, 1, 1}, S[3] = {1, 1, 1}, D[3] = {1, 1, 1},
          PB[3] = {0, 0, 0}, PE[3] = {0, 0, 0};
  for (size_t i = 0; i < nsp; ++i) {
    const size_t j = 3 - nsp + i;
    I[j] = x.shape[2 + i];
    O[j] = out[i];
    K[j] = k[i];
    S[j] = s[i];
    D[j] = d[i];
    PB[j] = pb[i];
    PE[j] = pe[i];
  }
  std::vector<int64_t> oshape = {x.shape[0], x.shape[1]};
  oshape.insert(oshape.end(), out.begin(), out.end());
  float* o = ctx.alloc<float>(0, ElemType::F32, oshape);
  int64_t* idx = max && ctx.wants_output(1) ? ctx.alloc<int64_t>(1, ElemType::I64, oshape) : nullptr;
  const float* p = x.as<float>();
  const int64_t NC = x.shape[0] * x.shape[1], isz = I[0] * I[1] * I[2], osz = O[0] * O[1] * O[2];
  parallel_for(ctx.threads, NC, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nc = lo; nc < hi; ++nc) {
      const float* src = p + nc * isz;
      float* dst = o + nc * osz;
      for (int64_t a = 0; a < O[0]; ++a)
        for (int64_t b = 0; b < O[1]; ++b)
          for (int64_t c = 0; c < O[2]; ++c) {
            float m = -INFINITY, sum = 0;
            int64_t arg = -1, count = 0, padded = 0;
            for (int64_t ka = 0; ka < K[0]; ++ka) {
              const int64_t ia = a * S[0] - PB[0] + ka * D[0];
              for (int64_t kb = 0; kb < K[1]; ++kb) {
                const int64_t ib = b * S[1] - PB[1] + kb * D[1];
                for (int64_t kc = 0; kc < K[2]; ++kc) {
                  const int64_t ic = c * S[2] - PB[2] + kc * D[2];
                  const bool in_pad = ia < I[0] + PE[0] && ib < I[1] + PE[1] && ic < I[2] + PE[2];
                  if (in_pad) ++padded;
                  if (ia < 0 || ia >= I[0] || ib < 0 || ib >= I[1] || ic < 0 || ic >= I[2]) continue;
                  const int64_t off = (ia * I[1] + ib) * I[2] + ic;
                  const float v = src[off];
                  if (max) {
                    if (v > m || arg < 0) {
                      m = v;
                      arg = off;
                    }
                  } else {
                    sum += v;
                    ++count;
                  }
                }
              }
            }
            const int64_t oi = (a * O[1] + b) * O[2] + c;
            if (max) {
              dst[oi] = m;
              if (idx) idx[nc * osz + oi] = nc * isz + arg;
            } else {
              const int64_t div = include_pad ? padded : count;
              dst[oi] = div > 0 ? sum / static_cast<float>(div) : 0.f;
            }
          }
    }
  });
}

}  // namespace

void register_ops_pool(KernelTable& t) {
  t.add_fn("", "GlobalAveragePool", 1, kMaxOpset, [](KernelContext& ctx) { global_pool(ctx, false); });
  t.add_fn("", "GlobalMaxPool", 1, kMaxOpset, [](KernelContext& ctx) { global_pool(ctx, true); });
  t.add_fn("", "AveragePool", 7, kMaxOpset, [](KernelContext& ctx) { pool(ctx, false); });
  t.add_fn("", "MaxPool", 8, kMaxOpset, [](KernelContext& ctx) { pool(ctx, true); });
}

}  // namespace qforge::cpu
