// llama.cpp's per-tensor type selection (src/llama-quant.cpp of llama.cpp v0.5.0, the
// libllama in node-llama-cpp 3.22.1, ggml 0.25.1), written as data tables.
//
// A file type ("Q4_K_M") names a default tensor type and a mixture: rules that give some
// tensors more bits (attn_v, ffn_down, attn_output, output), with the decisions keyed on
// the tensor's role, its layer, and a few model hyper-parameters (grouped-query factor,
// expert count, architecture). The tables in rules.cc are llama.cpp's if/else chains
// flattened into rows, first match wins; llama.cpp's order of tensors matters (the attn_v
// rules count attn_v tensors as they go), so the planner walks tensors in llama.cpp's
// order (sorted by block number, then name).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "qforge/model.h"
#include "qforge/types.h"

namespace qforge::gguf_quant {

// llama_ftype values (written as general.file_type).
enum class FileType : uint32_t {
  ALL_F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 7,
  Q5_0 = 8,
  Q5_1 = 9,
  Q2_K = 10,
  Q3_K_S = 11,
  Q3_K_M = 12,
  Q3_K_L = 13,
  Q4_K_S = 14,
  Q4_K_M = 15,
  Q5_K_S = 16,
  Q5_K_M = 17,
  Q6_K = 18,
  Q2_K_S = 21,
  IQ4_NL = 25,
  IQ4_XS = 30,
  BF16 = 32,
};

struct FileTypeInfo {
  const char* name;  // llama-quantize's spelling ("Q4_K_M"); aliases have their own rows
  FileType ftype;
  ElemType default_type;
};

// The file types qforge supports, with llama-quantize's aliases (Q3_K, Q4_K, Q5_K, F32).
const std::vector<FileTypeInfo>& file_types();
// Case-insensitive lookup of a file type or an alias; a tensor type name that is also a
// file type name ("q8_0", "q4_K") finds it too. Throws qforge::Error for llama.cpp file
// types qforge does not support (naming why) and for unknown names (listing the known).
const FileTypeInfo& parse_file_type(const std::string& name);
// Name of a file type (the canonical row, not an alias).
const char* name_of(FileType t);

// Tensor roles (llama.cpp's tensor_category).
enum class Role {
  TokenEmbd,
  AttnQ,
  AttnV,
  AttnK,
  AttnQkv,
  AttnKvB,
  AttnOutput,
  FfnUp,
  FfnGate,
  FfnDown,
  Output,
  Other,
};
const char* name_of(Role r);
Role classify(const std::string& tensor_name);

// Model facts the rules look at, read from the GGUF metadata.
struct ModelFacts {
  std::string arch;
  int n_layer = 0;
  uint32_t n_head = 0;
  uint32_t n_head_kv = 0;
  uint32_t n_expert = 0;
  bool is_70b = false;  // llama.cpp's LLM_TYPE_70B (only this size changes a rule)
  uint32_t n_gqa() const { return n_head_kv == 0 ? 0 : n_head / n_head_kv; }
  bool falcon() const { return arch == "falcon"; }
};
// Throws qforge::Error naming the missing or malformed key.
ModelFacts read_model_facts(const Model& model);

struct SelectOptions {
  FileType ftype = FileType::Q8_0;
  ElemType default_type = ElemType::Q8_0;
  std::optional<ElemType> output_tensor_type;
  std::optional<ElemType> token_embedding_type;
  bool quantize_output_tensor = true;  // false: --leave-output-tensor
  bool pure = false;
  bool has_imatrix = false;
  // --tensor-type overrides, compiled once, in the order given (the first match wins).
  std::vector<std::pair<std::regex, ElemType>> overrides;
  std::vector<std::string> override_sources;  // the regex texts, for messages
  // A precision plan's types (select-precision), by tensor name: they replace the
  // mixture rules' choice; explicit overrides, output_tensor_type and
  // token_embedding_type still win over them.
  std::map<std::string, ElemType> planned;
};

// One tensor's decision.
struct Decision {
  std::string name;
  Role role = Role::Other;
  ElemType from = ElemType::F32;
  ElemType to = ElemType::F32;
  bool allows_quantization = false;
  bool manual = false;   // a --tensor-type override chose the type
  bool planned = false;  // a precision plan chose the type
  std::string fallback;  // empty, or why the chosen type was replaced
  bool requires_imatrix = false;
};

// llama.cpp's order of tensors: by the number in "blk.N." (tensors without one first),
// then by name. Returns the permutation of indices into `names`.
std::vector<size_t> llama_order(const std::vector<std::string>& names);

// Chooses the type of every tensor; `tensors` in llama.cpp's order. Pure: no I/O.
std::vector<Decision> select_types(const std::vector<const Tensor*>& tensors, const ModelFacts& facts,
                                   const SelectOptions& options);

// ggml_n_dims of a qforge shape (outermost first).
int ggml_n_dims(const std::vector<int64_t>& shape);

}  // namespace qforge::gguf_quant
