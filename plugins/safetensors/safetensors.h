// safetensors (Hugging Face's tensor file format), read and written by an
// out-of-tree qforge format plugin. See README.md beside this file for what is
// supported and the metadata rule.
//
// File layout:
//
//   u64 N (little-endian)   the header's length in bytes
//   N bytes                 a UTF-8 JSON object, starting with '{', possibly padded
//                           with trailing spaces:
//                             {"__metadata__": {"key": "value", ...},
//                              "name": {"dtype": "F32", "shape": [2, 3],
//                                       "data_offsets": [begin, end]}, ...}
//   the byte buffer         tensor bytes, little-endian, row-major; begin/end are
//                           relative to the buffer's start (byte 8 + N)
//
// Reader policy (every error names the file, the byte offset, the tensor or key,
// what was expected and what was found):
//   - 8 <= file size; N <= kMaxHeaderBytes (the reference implementation's limit)
//     and 8 + N <= file size; the header starts with '{';
//   - the header is valid JSON (errors carry the JSON parser's byte offset), its
//     strings valid UTF-8, no key appears twice at any level;
//   - a tensor entry is an object with exactly dtype, shape and data_offsets; the
//     dtype is one of safetensors' names that qforge's IR can hold; shape is at
//     most kMaxDims unsigned integers, each at most INT64_MAX, whose product (and
//     byte size) fits 64 bits; data_offsets is [begin, end] with begin <= end,
//     end - begin equal to the tensor's byte size;
//   - the tensors tile the byte buffer exactly: sorted by offset, the first begins
//     at 0, each begins where the previous ends (an overlap or a hole is an error,
//     as the format's specification requires), and the last ends at the end of the
//     file;
//   - tensor names are non-empty; `__metadata__` is an object of strings.
//
// IR conventions: shape is outermost-first in both; tensors keep header order;
// tensor data are slices of a memory map of the file (nothing is copied).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qforge/format.h"
#include "qforge/model.h"

namespace qforge::st {

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference implementation's cap
constexpr size_t kMaxDims = 64;
constexpr size_t kMaxArrayDepth = 8;  // typed metadata: an array of arrays is depth 2 (as GGUF's reader)
// The __metadata__ entry that records the GGUF types of non-string metadata (see
// README.md, "Metadata"). Reserved: a model may not have metadata of this name.
constexpr const char* kTypesKey = "qforge.metadata_types";

// safetensors' dtype name for an element type; nullptr when the format has none.
const char* dtype_name(ElemType t);
// The element type of a dtype name; nullopt when unknown to qforge's IR.
std::optional<ElemType> elem_from_dtype(std::string_view name);
// Whether `name` is a dtype the format defines but qforge's IR cannot hold (F4...).
bool known_unsupported_dtype(std::string_view name);
// "F64, F32, ..." for messages.
std::string dtype_list();

using qforge::printable;      // qforge/types.h
using qforge::utf8_error_at;  // qforge/types.h
// `s` as a JSON string literal, with serde_json's escapes (UTF-8 passes through).
std::string json_quote(const std::string& s);

// ---- metadata (metadata.cc)
// A __metadata__ entry as read: key, value and the byte offsets of both.
struct RawMeta {
  std::string key;
  std::string value;
  uint64_t key_at = 0;
  uint64_t value_at = 0;
};
// Model metadata -> __metadata__ strings, in model order, plus kTypesKey last
// when any value is not a string. Throws qforge::Error naming the key.
std::vector<std::pair<std::string, std::string>> encode_metadata(const Metadata& metadata);
// __metadata__ -> model metadata (kTypesKey consumed). Errors name `path` and the
// byte offset. Throws qforge::Error.
Metadata decode_metadata(const std::vector<RawMeta>& raw, const std::string& path);

// ---- reader (reader.cc), writer (writer.cc)
// Parses a safetensors file held in `file` (tensors become slices of it). `path`
// is used in messages. Throws qforge::Error.
Model parse_safetensors(BlobPtr file, const std::string& path);
Model read_safetensors(const std::string& path);
// Writes `model` to `path` through AtomicFile, one tensor at a time: header
// validated and laid out first, then each tensor's bytes (lazy ones produced
// here) written and released. Throws qforge::Error.
void write_safetensors(const Model& model, const std::string& path);

class SafetensorsFormat : public Format {
 public:
  std::string name() const override { return "safetensors"; }
  std::string version() const override { return "1"; }
  std::string extension() const override { return ".safetensors"; }
  std::string description() const override {
    return "safetensors (Hugging Face): tensors memory-mapped, string metadata (plugin)";
  }
  int probe(const std::string& path, const uint8_t* head, size_t n) const override;
  Status import_model(const std::string& path, Model& out) const override;
  Status emit_model(const Model& model, const std::string& path, const Options& options) const override;

 private:
  int probe_bytes(const std::string& path, const uint8_t* head, size_t n) const;
};

}  // namespace qforge::st
