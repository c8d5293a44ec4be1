// The part of llama.cpp's C API (include/llama.h of llama.cpp v0.5.0, the tag
// node-llama-cpp 3.22.1 builds) that the tests and bench/gguf_quantize call
// through dlopen: llama_model_quantize and its parameters, declared field by
// field. The quantize test checks this layout at run time against
// llama_model_quantize_default_params().
#pragma once

#include <cstddef>
#include <cstdint>

namespace qforge::llama_abi {

struct llama_model_imatrix_data {
  const char* name;
  const float* data;
  size_t size;
};
struct llama_model_tensor_override {
  const char* pattern;
  int type;  // enum ggml_type
};
enum llama_model_kv_override_type { KV_INT, KV_FLOAT, KV_BOOL, KV_STR };
struct llama_model_kv_override {
  llama_model_kv_override_type tag;
  char key[128];
  union {
    int64_t val_i64;
    double val_f64;
    bool val_bool;
    char val_str[128];
  };
};
struct llama_model_quantize_params {
  int32_t nthread;
  int ftype;                 // enum llama_ftype
  int output_tensor_type;    // enum ggml_type
  int token_embedding_type;  // enum ggml_type
  bool allow_requantize;
  bool quantize_output_tensor;
  bool only_copy;
  bool pure;
  bool keep_split;
  bool dry_run;
  const llama_model_imatrix_data* imatrix;
  const llama_model_kv_override* kv_overrides;
  const llama_model_tensor_override* tt_overrides;
  const int32_t* prune_layers;
  size_t max_buf_size;
};

}  // namespace qforge::llama_abi
