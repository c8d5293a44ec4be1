// A small llama-architecture model, built in memory, that llama.cpp can load: the
// llama.* hyper-parameters, a SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256
// byte tokens <0xNN>, then word pieces) and F32 weights with deterministic
// pseudo-random values. Tensor data are lazy producers, so writing a large model
// (see tests/tools/make_tiny_llama.cc) needs memory for one tensor at a time.
#pragma once

#include <cstdint>
#include <string>

#include "qforge/model.h"

namespace qforge {

struct TinyLlamaOptions {
  uint32_t layers = 2;
  uint32_t embd = 64;
  uint32_t ff = 176;
  uint32_t vocab = 320;   // at least 259 (3 specials + 256 byte tokens) + 1
  uint32_t heads = 4;     // embd must be a multiple of heads
  uint32_t heads_kv = 2;  // heads must be a multiple of heads_kv
  uint32_t context = 256;
  uint64_t seed = 1;
  std::string name = "qforge-tiny-llama";
};

// Throws qforge::Error on inconsistent options.
Model make_tiny_llama(const TinyLlamaOptions& options);

}  // namespace qforge
