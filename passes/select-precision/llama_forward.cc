// The float reference forward pass for llama GGUF models (see llama_forward.h).
#include "llama_forward.h"

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "kernels/quants.h"
#include "qforge/status.h"

namespace qforge::llama_ref {
namespace {

const char* const kArch = "llama";

int64_t meta_int(const Model& m, const std::string& key, bool required, int64_t dflt) {
  const MetaValue* v = m.meta(key);
  if (!v) {
    if (required) throw Error("metadata key '" + key + "' is missing (the llama forward needs it)");
    return dflt;
  }
  switch (v->type) {
    case MetaType::U8:
    case MetaType::U16:
    case MetaType::U32:
    case MetaType::U64: return static_cast<int64_t>(v->u);
    case MetaType::I8:
    case MetaType::I16:
    case MetaType::I32:
    case MetaType::I64: return v->i;
    default: throw Error("metadata key '" + key + "': expected an integer");
  }
}

double meta_float(const Model& m, const std::string& key, double dflt) {
  const MetaValue* v = m.meta(key);
  if (!v) return dflt;
  if (v->type == MetaType::F32 || v->type == MetaType::F64) return v->f;
  return static_cast<double>(meta_int(m, key, true, 0));
}

const Tensor& need(const Model& m, const std::string& name, std::vector<int64_t> shape) {
  const Tensor* t = m.tensor(name);
  if (!t) throw Error("tensor '" + name + "' is missing (the llama forward needs it)");
  if (t->shape != shape) {
    auto str = [](const std::vector<int64_t>& s) {
      std::string o = "[";
      for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
      return o + "]";
    };
    throw Error("tensor '" + name + "' has shape " + str(t->shape) + ", expected " + str(shape) +
                " from the llama.* metadata");
  }
  return *t;
}

// y[T x N] = x[T x K] * W[N x K]^T
void matmul(const float* x, const float* w, float* y, int64_t T, int64_t N, int64_t K) {
  const dnnl_status_t st = dnnl_sgemm('N', 'T', T, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
  if (st != dnnl_success)
    throw Error("oneDNN sgemm [" + std::to_string(T) + " x " + std::to_string(K) + "] by [" +
                std::to_string(K) + " x " + std::to_string(N) + "] failed (status " +
                std::to_string(static_cast<int>(st)) + ")");
}

void rms_norm(const float* x, const float* g, float* y, int64_t T, int64_t E, double eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * E;
    double s = 0;
    for (int64_t i = 0; i < E; ++i) s += static_cast<double>(xr[i]) * xr[i];
    const float scale =
        1.0f / std::sqrt(static_cast<float>(s / static_cast<double>(E)) + static_cast<float>(eps));
    for (int64_t i = 0; i < E; ++i) y[t * E + i] = xr[i] * scale * g[i];
  }
}

// ggml's rope, normal mode: pairs (2i, 2i+1) of the first n_rot dims of each head.
void rope(float* v, int64_t T, int64_t heads, int64_t hd, int64_t n_rot, double base) {
  const float theta_scale = std::pow(static_cast<float>(base), -2.0f / static_cast<float>(n_rot));
  std::vector<float> cs(static_cast<size_t>(n_rot));
  for (int64_t p = 0; p < T; ++p) {
    float theta = static_cast<float>(p);
    for (int64_t i = 0; i < n_rot; i += 2) {
      cs[static_cast<size_t>(i)] = std::cos(theta);
      cs[static_cast<size_t>(i + 1)] = std::sin(theta);
      theta *= theta_scale;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* r = v + (p * heads + h) * hd;
      for (int64_t i = 0; i < n_rot; i += 2) {
        const float c = cs[static_cast<size_t>(i)], s = cs[static_cast<size_t>(i + 1)];
        const float x0 = r[i], x1 = r[i + 1];
        r[i] = x0 * c - x1 * s;
        r[i + 1] = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace

Config read_config(const Model& m) {
  const MetaValue* arch = m.meta("general.architecture");
  if (!arch || arch->type != MetaType::String)
    throw Error("metadata key 'general.architecture' is missing: the reference forward runs llama models");
  if (arch->s != kArch)
    throw Error("metadata key 'general.architecture' is '" + arch->s +
                "': the reference forward implements only 'llama'");
  const std::string p = std::string(kArch) + ".";
  if (const MetaValue* st = m.meta(p + "rope.scaling.type");
      st && st->type == MetaType::String && st->s != "none")
    throw Error("metadata key '" + p + "rope.scaling.type' is '" + st->s +
                "': rope scaling is not implemented");
  if (m.meta(p + "rope.scaling.factor") && meta_float(m, p + "rope.scaling.factor", 1) != 1.0 &&
      meta_float(m, p + "rope.scaling.factor", 1) != 0.0)
    throw Error("metadata key '" + p + "rope.scaling.factor' is not 1: rope scaling is not implemented");
  if (meta_int(m, p + "expert_count", false, 0) > 0)
    throw Error("metadata key '" + p +
                "expert_count' is not 0: mixture-of-experts layers are not implemented");
  Config c;
  c.n_layer = meta_int(m, p + "block_count", true, 0);
  c.n_embd = meta_int(m, p + "embedding_length", true, 0);
  c.n_ff = meta_int(m, p + "feed_forward_length", true, 0);
  c.n_head = meta_int(m, p + "attention.head_count", true, 0);
  c.n_head_kv = meta_int(m, p + "attention.head_count_kv", false, c.n_head);
  c.n_ctx = meta_int(m, p + "context_length", true, 0);
  if (c.n_layer <= 0 || c.n_embd <= 0 || c.n_ff <= 0 || c.n_head <= 0 || c.n_head_kv <= 0 || c.n_ctx <= 0)
    throw Error("metadata keys '" + p + "block_count', embedding_length, feed_forward_length, " +
                "attention.head_count(_kv) and context_length must be positive");
  if (c.n_head % c.n_head_kv != 0)
    throw Error("metadata key '" + p + "attention.head_count' (" + std::to_string(c.n_head) +
                ") is not a multiple of attention.head_count_kv (" + std::to_string(c.n_head_kv) + ")");
  c.head_dim = meta_int(m, p + "attention.key_length", false, c.n_embd / c.n_head);
  if (meta_int(m, p + "attention.value_length", false, c.head_dim) != c.head_dim)
    throw Error("metadata key '" + p +
                "attention.value_length' differs from attention.key_length: not implemented");
  c.n_rot = meta_int(m, p + "rope.dimension_count", false, c.head_dim);
  if (c.n_rot <= 0 || c.n_rot > c.head_dim || c.n_rot % 2)
    throw Error("metadata key '" + p + "rope.dimension_count' (" + std::to_string(c.n_rot) +
                ") must be even and at most the head size (" + std::to_string(c.head_dim) + ")");
  c.rope_base = meta_float(m, p + "rope.freq_base", 10000.0);
  c.rms_eps = meta_float(m, p + "attention.layer_norm_rms_epsilon", 1e-5);
  const Tensor* embd = m.tensor("token_embd.weight");
  if (!embd || embd->shape.size() != 2)
    throw Error("tensor 'token_embd.weight' is missing or not 2-D (the llama forward needs it)");
  c.n_vocab = embd->shape[0];
  c.tied = m.tensor("output.weight") == nullptr;

  // Every tensor must be one the forward uses.
  static const std::regex known(
      R"(token_embd\.weight|output_norm\.weight|output\.weight|blk\.(\d+)\.(attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|ffn_gate|ffn_up|ffn_down)\.weight)");
  for (const Tensor& t : m.tensors) {
    std::smatch mm;
    if (!std::regex_match(t.name, mm, known))
      throw Error("tensor '" + t.name +
                  "' is not part of the llama graph the reference forward implements (no biases, experts, "
                  "fused QKV or rope_freqs)");
    if (mm[1].matched && std::stoll(mm[1].str()) >= c.n_layer)
      throw Error("tensor '" + t.name + "' names a layer beyond " + p + "block_count (" +
                  std::to_string(c.n_layer) + ")");
  }
  return c;
}

int Forward::add(const Model& model, const std::string& name) {
  const Tensor* t = model.tensor(name);
  W w;
  w.name = name;
  w.cols = t->row_length();
  w.rows = t->rows();
  BlobPtr blob = t->bytes();
  if (!blob) throw Error("tensor '" + name + "' has no data");
  const uint64_t n = static_cast<uint64_t>(w.rows * w.cols);
  if (blob->size() < t->nbytes())
    throw Error("tensor '" + name + "': data has " + std::to_string(blob->size()) + " bytes, expected " +
                std::to_string(t->nbytes()));
  if (t->type == ElemType::F32 && reinterpret_cast<uintptr_t>(blob->data()) % alignof(float) == 0) {
    w.blob = blob;
    w.data = reinterpret_cast<const float*>(blob->data());
  } else {
    if (!gguf::can_dequantize(t->type))
      throw Error("tensor '" + name + "': type " + name_of(t->type) + " cannot be read as float");
    w.owned.resize(n);
    if (t->type == ElemType::F32)
      std::memcpy(w.owned.data(), blob->data(), n * sizeof(float));
    else
      gguf::dequantize_row(t->type, blob->data(), w.owned.data(), static_cast<int64_t>(n));
    w.data = w.owned.data();
  }
  w_.push_back(std::move(w));
  return static_cast<int>(w_.size() - 1);
}

Forward::Forward(const Model& model) : cfg_(read_config(model)) {
  const int64_t E = cfg_.n_embd, F = cfg_.n_ff, V = cfg_.n_vocab;
  const int64_t Q = cfg_.n_head * cfg_.head_dim, KV = cfg_.n_head_kv * cfg_.head_dim;
  need(model, "token_embd.weight", {V, E});
  embd_ = add(model, "token_embd.weight");
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    need(model, b + "attn_norm.weight", {E});
    need(model, b + "attn_q.weight", {Q, E});
    need(model, b + "attn_k.weight", {KV, E});
    need(model, b + "attn_v.weight", {KV, E});
    need(model, b + "attn_output.weight", {E, Q});
    need(model, b + "ffn_norm.weight", {E});
    need(model, b + "ffn_gate.weight", {F, E});
    need(model, b + "ffn_up.weight", {F, E});
    need(model, b + "ffn_down.weight", {E, F});
    Layer L;
    L.attn_norm = add(model, b + "attn_norm.weight");
    L.wq = add(model, b + "attn_q.weight");
    L.wk = add(model, b + "attn_k.weight");
    L.wv = add(model, b + "attn_v.weight");
    L.wo = add(model, b + "attn_output.weight");
    L.ffn_norm = add(model, b + "ffn_norm.weight");
    L.gate = add(model, b + "ffn_gate.weight");
    L.up = add(model, b + "ffn_up.weight");
    L.down = add(model, b + "ffn_down.weight");
    layers_.push_back(L);
  }
  need(model, "output_norm.weight", {E});
  out_norm_ = add(model, "output_norm.weight");
  if (!cfg_.tied) {
    need(model, "output.weight", {V, E});
    out_ = add(model, "output.weight");
  }
}

std::vector<WeightRef> Forward::weights() const {
  std::vector<WeightRef> out;
  out.push_back({w_[static_cast<size_t>(embd_)].name, -1});
  for (size_t l = 0; l < layers_.size(); ++l)
    for (int i : {layers_[l].wq, layers_[l].wk, layers_[l].wv, layers_[l].wo, layers_[l].gate, layers_[l].up,
                  layers_[l].down})
      out.push_back({w_[static_cast<size_t>(i)].name, static_cast<int>(l)});
  if (out_ >= 0) out.push_back({w_[static_cast<size_t>(out_)].name, static_cast<int>(cfg_.n_layer)});
  return out;
}

const float* Forward::weight(const std::string& name, int64_t& rows, int64_t& cols) const {
  for (const W& w : w_)
    if (w.name == name) {
      rows = w.rows, cols = w.cols;
      return w.data;
    }
  throw Error("llama forward: no weight named '" + name + "'");
}

void Forward::run(const std::vector<int32_t>& tokens, std::vector<float>& logits,
                  std::vector<std::vector<float>>* stream) const {
  forward(-1, tokens, {}, -1, nullptr, logits, stream);
}

void Forward::run_from(int from, const std::vector<int32_t>& tokens, const std::vector<float>& x,
                       const std::string& name, const float* replacement, std::vector<float>& logits) const {
  int idx = -1;
  for (size_t i = 0; i < w_.size(); ++i)
    if (w_[i].name == name) idx = static_cast<int>(i);
  if (idx < 0) throw Error("llama forward: no weight named '" + name + "'");
  forward(from, tokens, x, idx, replacement, logits, nullptr);
}

void Forward::forward(int from, const std::vector<int32_t>& tokens, std::vector<float> x, int replaced,
                      const float* replacement, std::vector<float>& logits,
                      std::vector<std::vector<float>>* stream) const {
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t E = cfg_.n_embd, F = cfg_.n_ff, V = cfg_.n_vocab, hd = cfg_.head_dim;
  const int64_t H = cfg_.n_head, Hkv = cfg_.n_head_kv, group = H / Hkv;
  const size_t TE = static_cast<size_t>(T * E);
  auto wt = [&](int i) { return i == replaced ? replacement : w_[static_cast<size_t>(i)].data; };
  if (T == 0) throw Error("llama forward: no tokens");
  if (T > cfg_.n_ctx)
    throw Error("llama forward: " + std::to_string(T) + " tokens exceed the context length (" +
                std::to_string(cfg_.n_ctx) + ")");
  if (from < 0) {
    const float* e = wt(embd_);
    x.assign(TE, 0.f);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = tokens[static_cast<size_t>(t)];
      if (id < 0 || id >= V)
        throw Error("llama forward: token " + std::to_string(id) + " at position " + std::to_string(t) +
                    " is outside the vocabulary (0.." + std::to_string(V - 1) + ")");
      std::memcpy(x.data() + t * E, e + static_cast<int64_t>(id) * E, static_cast<size_t>(E) * sizeof(float));
    }
    from = 0;
  }
  if (x.size() != TE) throw Error("llama forward: residual stream of the wrong size");
  if (stream) stream->assign(static_cast<size_t>(cfg_.n_layer + 1), {});
  std::vector<float> h(TE), q(static_cast<size_t>(T * H * hd)), k(static_cast<size_t>(T * Hkv * hd)),
      v(static_cast<size_t>(T * Hkv * hd)), a(static_cast<size_t>(T * H * hd)), o(TE),
      g(static_cast<size_t>(T * F)), u(static_cast<size_t>(T * F)), sc(static_cast<size_t>(T));
  const float kq_scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t l = from; l < cfg_.n_layer; ++l) {
    if (stream) (*stream)[static_cast<size_t>(l)] = x;
    const Layer& L = layers_[static_cast<size_t>(l)];
    rms_norm(x.data(), wt(L.attn_norm), h.data(), T, E, cfg_.rms_eps);
    matmul(h.data(), wt(L.wq), q.data(), T, H * hd, E);
    matmul(h.data(), wt(L.wk), k.data(), T, Hkv * hd, E);
    matmul(h.data(), wt(L.wv), v.data(), T, Hkv * hd, E);
    rope(q.data(), T, H, hd, cfg_.n_rot, cfg_.rope_base);
    rope(k.data(), T, Hkv, hd, cfg_.n_rot, cfg_.rope_base);
    for (int64_t hh = 0; hh < H; ++hh) {
      const int64_t kh = hh / group;
      for (int64_t i = 0; i < T; ++i) {
        const float* qi = q.data() + (i * H + hh) * hd;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const float* kj = k.data() + (j * Hkv + kh) * hd;
          float s = 0;
          for (int64_t d = 0; d < hd; ++d) s += qi[d] * kj[d];
          s *= kq_scale;
          sc[static_cast<size_t>(j)] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          const float e = std::exp(sc[static_cast<size_t>(j)] - mx);
          sc[static_cast<size_t>(j)] = e;
          sum += e;
        }
        float* ai = a.data() + (i * H + hh) * hd;
        std::fill(ai, ai + hd, 0.f);
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t j = 0; j <= i; ++j) {
          const float pj = sc[static_cast<size_t>(j)] * inv;
          const float* vj = v.data() + (j * Hkv + kh) * hd;
          for (int64_t d = 0; d < hd; ++d) ai[d] += pj * vj[d];
        }
      }
    }
    matmul(a.data(), wt(L.wo), o.data(), T, E, H * hd);
    for (size_t i = 0; i < TE; ++i) x[i] += o[i];
    rms_norm(x.data(), wt(L.ffn_norm), h.data(), T, E, cfg_.rms_eps);
    matmul(h.data(), wt(L.gate), g.data(), T, F, E);
    matmul(h.data(), wt(L.up), u.data(), T, F, E);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    matmul(g.data(), wt(L.down), o.data(), T, E, F);
    for (size_t i = 0; i < TE; ++i) x[i] += o[i];
  }
  if (stream) (*stream)[static_cast<size_t>(cfg_.n_layer)] = x;
  rms_norm(x.data(), wt(out_norm_), h.data(), T, E, cfg_.rms_eps);
  logits.assign(static_cast<size_t>(T * V), 0.f);
  matmul(h.data(), wt(out_ >= 0 ? out_ : embd_), logits.data(), T, V, E);
}

double kl_of_logits(const float* a, const float* b, size_t V) {
  const double ma = *std::max_element(a, a + V), mb = *std::max_element(b, b + V);
  double sa = 0, sb = 0;
  for (size_t i = 0; i < V; ++i) sa += std::exp(a[i] - ma), sb += std::exp(b[i] - mb);
  const double la = ma + std::log(sa), lb = mb + std::log(sb);
  double kl = 0;
  for (size_t i = 0; i < V; ++i) {
    const double lpa = a[i] - la, lpb = b[i] - lb;
    kl += std::exp(lpa) * (lpa - lpb);
  }
  return kl;
}

double mean_kl(const std::vector<float>& p, const std::vector<float>& q, int64_t n_vocab) {
  const size_t V = static_cast<size_t>(n_vocab);
  const size_t T = p.size() / V;
  if (T == 0 || q.size() != p.size()) throw Error("mean_kl: logits of different sizes");
  double total = 0;
  for (size_t t = 0; t < T; ++t) total += std::max(0.0, kl_of_logits(p.data() + t * V, q.data() + t * V, V));
  return total / static_cast<double>(T);
}

}  // namespace qforge::llama_ref
