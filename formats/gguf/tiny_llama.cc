#include "tiny_llama.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "qforge/status.h"

namespace qforge {
namespace {

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Values center + scale * uniform(-1, 1), from a stream seeded by name and seed.
Tensor random_tensor(const std::string& name, std::vector<int64_t> shape, uint64_t seed, float center,
                     float scale) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.type = ElemType::F32;
  uint64_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
  uint64_t s0 = fnv1a(name) ^ (seed * 0x2545f4914f6cdd1dull);
  t.producer = [n, s0, center, scale](std::string&) {
    std::vector<uint8_t> bytes(n * 4);
    uint64_t s = s0;
    for (uint64_t i = 0; i < n; ++i) {
      double u = static_cast<double>(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
      float v = center + scale * static_cast<float>(2 * u - 1);
      std::memcpy(&bytes[i * 4], &v, 4);
    }
    return make_blob(std::move(bytes));
  };
  return t;
}

MetaValue u32v(uint32_t v) { return MetaValue::of_u32(v); }

}  // namespace

Model make_tiny_llama(const TinyLlamaOptions& o) {
  if (o.layers == 0 || o.embd == 0 || o.ff == 0 || o.heads == 0 || o.heads_kv == 0)
    throw Error("tiny llama: layers, embd, ff, heads and heads_kv must be > 0");
  if (o.embd % o.heads != 0)
    throw Error("tiny llama: embd (" + std::to_string(o.embd) + ") must be a multiple of heads (" +
                std::to_string(o.heads) + ")");
  if (o.heads % o.heads_kv != 0) throw Error("tiny llama: heads must be a multiple of heads_kv");
  if ((o.embd / o.heads) % 2 != 0) throw Error("tiny llama: the head size must be even (rope)");
  if (o.vocab < 260) throw Error("tiny llama: vocab must be at least 260");

  Model m;
  m.format = "gguf";
  auto set = [&](const char* k, MetaValue v) { m.metadata.emplace_back(k, std::move(v)); };
  set("general.architecture", MetaValue::of_string("llama"));
  set("general.name", MetaValue::of_string(o.name));
  set("llama.context_length", u32v(o.context));
  set("llama.embedding_length", u32v(o.embd));
  set("llama.block_count", u32v(o.layers));
  set("llama.feed_forward_length", u32v(o.ff));
  set("llama.rope.dimension_count", u32v(o.embd / o.heads));
  set("llama.attention.head_count", u32v(o.heads));
  set("llama.attention.head_count_kv", u32v(o.heads_kv));
  set("llama.attention.layer_norm_rms_epsilon", MetaValue::of_f32(1e-5f));
  set("llama.rope.freq_base", MetaValue::of_f32(10000.0f));
  set("general.file_type", u32v(0));  // all F32

  // SentencePiece-style vocabulary.
  std::vector<MetaValue> tokens, scores, types;
  auto add = [&](std::string piece, float score, int32_t type) {
    tokens.push_back(MetaValue::of_string(std::move(piece)));
    scores.push_back(MetaValue::of_f32(score));
    types.push_back(MetaValue::of_i32(type));
  };
  add("<unk>", 0, 2);  // UNKNOWN
  add("<s>", 0, 3);    // CONTROL
  add("</s>", 0, 3);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, 0, 6);  // BYTE
  }
  const std::string space = "\xe2\x96\x81";  // U+2581, SentencePiece's word boundary
  const char* letters = "etaoinshrdlucmfwypvbgkjqxz";
  for (uint32_t i = 0; tokens.size() < o.vocab; ++i) {
    // a, b, ..., then ▁a ..., then ▁ + the base-26 digits of k + one letter: all distinct.
    std::string piece;
    uint32_t k = i;
    if (k < 26) {
      piece = std::string(1, letters[k]);
    } else if ((k -= 26) < 26) {
      piece = space + letters[k];
    } else {
      k -= 26;
      piece = space;
      do {
        piece += letters[k % 26];
        k /= 26;
      } while (k);
      piece += letters[i % 7];
    }
    add(piece, -static_cast<float>(i + 1), 1);  // NORMAL
  }
  set("tokenizer.ggml.model", MetaValue::of_string("llama"));
  set("tokenizer.ggml.tokens", MetaValue::of_array(MetaType::String, std::move(tokens)));
  set("tokenizer.ggml.scores", MetaValue::of_array(MetaType::F32, std::move(scores)));
  set("tokenizer.ggml.token_type", MetaValue::of_array(MetaType::I32, std::move(types)));
  set("tokenizer.ggml.bos_token_id", u32v(1));
  set("tokenizer.ggml.eos_token_id", u32v(2));
  set("tokenizer.ggml.unknown_token_id", u32v(0));

  const int64_t E = o.embd, F = o.ff, V = o.vocab;
  const int64_t KV = static_cast<int64_t>(o.embd / o.heads * o.heads_kv);
  const float se = 1.0f / std::sqrt(static_cast<float>(E));
  const float sf = 1.0f / std::sqrt(static_cast<float>(F));
  m.tensors.push_back(random_tensor("token_embd.weight", {V, E}, o.seed, 0, 1.0f));
  for (uint32_t l = 0; l < o.layers; ++l) {
    std::string p = "blk." + std::to_string(l) + ".";
    m.tensors.push_back(random_tensor(p + "attn_norm.weight", {E}, o.seed, 1, 0.1f));
    m.tensors.push_back(random_tensor(p + "attn_q.weight", {E, E}, o.seed, 0, se));
    m.tensors.push_back(random_tensor(p + "attn_k.weight", {KV, E}, o.seed, 0, se));
    m.tensors.push_back(random_tensor(p + "attn_v.weight", {KV, E}, o.seed, 0, se));
    m.tensors.push_back(random_tensor(p + "attn_output.weight", {E, E}, o.seed, 0, se));
    m.tensors.push_back(random_tensor(p + "ffn_norm.weight", {E}, o.seed, 1, 0.1f));
    m.tensors.push_back(random_tensor(p + "ffn_gate.weight", {F, E}, o.seed, 0, se));
    m.tensors.push_back(random_tensor(p + "ffn_up.weight", {F, E}, o.seed, 0, se));
    m.tensors.push_back(random_tensor(p + "ffn_down.weight", {E, F}, o.seed, 0, sf));
  }
  m.tensors.push_back(random_tensor("output_norm.weight", {E}, o.seed, 1, 0.1f));
  m.tensors.push_back(random_tensor("output.weight", {V, E}, o.seed, 0, 2.0f * se));
  return m;
}

}  // namespace qforge
