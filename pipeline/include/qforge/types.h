// Element encodings of tensors: one table for every format.
//
// A tensor's bytes are a sequence of blocks; a scalar type is a block of one
// element. `block_size` elements take `type_size` bytes. ggml's type ids and
// ONNX's TensorProto.DataType ids are columns of the same table, so a format
// plugin maps its ids here and nowhere else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qforge {

enum class ElemType : uint16_t {
  // scalars
  F32,
  F16,
  BF16,
  F64,
  I8,
  U8,
  I16,
  U16,
  I32,
  U32,
  I64,
  U64,
  Bool,
  I4,  // ONNX int4, two per byte
  U4,  // ONNX uint4, two per byte
  String,
  Complex64,
  Complex128,
  F8E4M3FN,
  F8E4M3FNUZ,
  F8E5M2,
  F8E5M2FNUZ,
  // ggml block encodings
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q8_1,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  Q8_K,
  IQ2_XXS,
  IQ2_XS,
  IQ3_XXS,
  IQ1_S,
  IQ4_NL,
  IQ3_S,
  IQ2_S,
  IQ4_XS,
  IQ1_M,
  TQ1_0,
  TQ2_0,
  MXFP4,
  Count_
};

struct ElemTraits {
  ElemType type;
  const char* name;     // "f32", "q4_K" ... (ggml's spelling for ggml types)
  uint32_t block_size;  // elements per block
  uint32_t type_size;   // bytes per block (0 for String)
  int ggml_id;          // ggml_type value, or -1
  int onnx_id;          // onnx TensorProto_DataType value, or -1
  bool quantized;       // a ggml block encoding
};

const ElemTraits& traits(ElemType t);
inline const char* name_of(ElemType t) { return traits(t).name; }

// Lookups; nullopt when the id or name is unknown.
std::optional<ElemType> elem_from_ggml(int ggml_id);
std::optional<ElemType> elem_from_onnx(int onnx_id);
std::optional<ElemType> elem_from_name(std::string_view name);  // case-insensitive
std::vector<ElemType> all_elem_types();

// Bytes for `n` elements of `t` (n must be a multiple of the block size, which
// the caller checks with `divisible`). Overflow-checked: nullopt on overflow.
std::optional<uint64_t> byte_size(ElemType t, uint64_t n);
inline bool divisible(ElemType t, uint64_t n) { return n % traits(t).block_size == 0; }

// A shape as every message and table prints it: "[1, 3, 224, 224]"; a negative
// (unknown) dimension prints as "?"; a scalar is "[]".
std::string shape_str(const std::vector<int64_t>& shape);

// Index of the first byte of `s` that breaks UTF-8 (overlong forms, surrogates
// and code points past U+10FFFF included), or std::string::npos when it is valid.
size_t utf8_error_at(const std::string& s);

// Bytes read from a file, for messages: non-printable bytes and '\' as \xNN,
// cut after `max` bytes with "..." (the GGUF reader and the safetensors plugin).
std::string printable(const std::string& s, size_t max = 80);

}  // namespace qforge
