// A float reference forward pass for llama-architecture GGUF models, for measuring how
// each tensor's quantization error moves the next-token distribution (the gguf-sensitivity
// pass, docs/manifest.md). It computes what llama.cpp's llama graph computes, in float:
//
//   x = token_embd[tokens]
//   per layer: h = RMSNorm(x) * attn_norm; q, k, v = Wq h, Wk h, Wv h;
//              RoPE on q and k (ggml's "normal" mode, the one llama uses: adjacent pairs
//              (2i, 2i+1) of the first n_rot dimensions rotate by pos * base^(-2i/n_rot));
//              causal attention, scale 1/sqrt(head_dim), query head h reads key/value head
//              h / (n_head / n_head_kv) (GQA); x += Wo attn;
//              h = RMSNorm(x) * ffn_norm; x += Wdown (silu(Wgate h) * Wup h)
//   logits = output (or token_embd when the model has no output.weight) RMSNorm(x) * output_norm
//
// Hyper-parameters come from the GGUF metadata (llama.block_count, embedding_length,
// feed_forward_length, attention.head_count(_kv), attention.key_length,
// attention.layer_norm_rms_epsilon, rope.dimension_count, rope.freq_base, context_length).
// What it does not implement is refused by read_config with an Error naming the key or the
// tensor: another architecture, rope scaling, rope_freqs, biases, experts, fused or
// missing tensors, inconsistent shapes.
//
// Matrix products use oneDNN's sgemm, single-threaded per call: callers run independent
// forwards on their own threads, so results never depend on the thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/model.h"

namespace qforge::llama_ref {

struct Config {
  int64_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
  int64_t n_vocab = 0, n_ctx = 0;
  double rope_base = 10000, rms_eps = 1e-5;
  bool tied = false;  // no output.weight: token_embd is the output projection too
};

// Reads and checks the metadata and the tensors' names and shapes. Throws qforge::Error
// naming the key or the tensor and what is wrong.
Config read_config(const Model& model);

// A weight matrix the forward multiplies by, and the first layer its error reaches
// (-1 for token_embd, n_layer for output.weight).
struct WeightRef {
  std::string name;
  int layer = 0;
};

class Forward {
 public:
  // Reads every weight as float (F32 borrowed from the model's data, other types
  // dequantized). Throws qforge::Error.
  explicit Forward(const Model& model);
  const Config& config() const { return cfg_; }

  // The matrices in forward order (token_embd, each layer's, output.weight when present).
  std::vector<WeightRef> weights() const;
  // A weight's floats (row-major, rows x cols); throws when there is none of that name.
  const float* weight(const std::string& name, int64_t& rows, int64_t& cols) const;

  // Logits [tokens.size() x n_vocab] for `tokens` (positions 0, 1, ...). When `stream`
  // is given, (*stream)[l] is the residual stream at the input of layer l
  // ([tokens.size() x n_embd], l = 0 .. n_layer; n_layer: before the final norm).
  void run(const std::vector<int32_t>& tokens, std::vector<float>& logits,
           std::vector<std::vector<float>>* stream = nullptr) const;

  // The same from layer `from` on, starting with the residual stream `x` at its input,
  // with weight `name` replaced by `replacement` (its shape, row-major floats).
  // `from` = -1 starts from the tokens (a replaced token_embd).
  void run_from(int from, const std::vector<int32_t>& tokens, const std::vector<float>& x,
                const std::string& name, const float* replacement, std::vector<float>& logits) const;

 private:
  struct Layer {
    int attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
  };
  struct W {
    std::string name;
    int64_t rows = 0, cols = 0;
    std::vector<float> owned;  // dequantized; empty when borrowing F32 data
    BlobPtr blob;
    const float* data = nullptr;
  };
  int add(const Model& model, const std::string& name);
  void forward(int from, const std::vector<int32_t>& tokens, std::vector<float> x, int replaced,
               const float* replacement, std::vector<float>& logits,
               std::vector<std::vector<float>>* stream) const;

  Config cfg_;
  std::vector<W> w_;
  std::vector<Layer> layers_;
  int embd_ = -1, out_norm_ = -1, out_ = -1;
};

// KL(softmax(p) || softmax(q)) of one position's n_vocab logits, in nats.
double kl_of_logits(const float* p, const float* q, size_t n_vocab);

// Mean over positions of KL(softmax(p) || softmax(q)), in nats (each position's
// clamped at 0); p and q are [positions x n_vocab] logits.
double mean_kl(const std::vector<float>& p, const std::vector<float>& q, int64_t n_vocab);

}  // namespace qforge::llama_ref
