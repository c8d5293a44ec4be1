// GGUF (ggml's model file format), versions 2 and 3, little-endian.
//
// File layout (all integers little-endian):
//
//   "GGUF" u32 version  u64 n_tensors  u64 n_kv
//   n_kv × { string key, u32 value_type, value }
//   n_tensors × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding to `general.alignment` (u32, default 32, a power of two)
//   tensor data: each tensor at data_start + offset (offset a multiple of the alignment)
//
// A string is { u64 length, bytes }. An array value is { u32 element type, u64 count,
// count × value }; its elements may themselves be arrays (each with its own element
// type and count).
//
// IR conventions: Tensor::shape is outermost-first, so GGUF's ne[] is stored reversed
// (ne[0] == shape.back()); metadata keeps file order; MetaType ids are GGUF's value
// type ids. Imported tensors are slices of a memory map of the file (nothing copied).
//
// Emit lays tensors out in table order, each padded with zeros to the alignment (also
// after the last one), which is the layout ggml and gguf-py write; a model without
// tensors ends right after its metadata (as gguf-py writes vocab-only files). Re-emitting
// an unmodified model read from such a file gives the same bytes (checked on the
// ggml-vocab-*.gguf files of llama.cpp's repository). The version written is
// always 3 (v2 and v3 differ only in v3 allowing big-endian files, which qforge does not
// read), so a v2 file re-emits with only its version field changed.
//
// Reader policy (every check names the file, the byte offset, the field, what was
// expected and what was found):
//   - v1 and big-endian files are refused, versions above 3 too;
//   - keys: non-empty, at most 65535 bytes, valid UTF-8, unique;
//   - tensor names: non-empty, at most 64 bytes, valid UTF-8, unique;
//   - string values are bytes, not checked for UTF-8 (vocabularies hold raw bytes);
//   - bool values are 0 or 1; arrays nest at most kGgufMaxArrayDepth levels;
//   - n_dims <= 4, every ne[i] > 0, the element count and byte size fit 64 bits, ne[0]
//     is a multiple of the type's block size, the ggml type id is known;
//   - `general.alignment` is a u32 power of two; tensor offsets are multiples of it;
//   - tensor data lies inside the file and no two tensors overlap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "qforge/format.h"
#include "qforge/model.h"

namespace qforge {

constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr uint32_t kGgufMaxArrayDepth = 8;     // an array of arrays is depth 2
constexpr uint64_t kGgufMaxKeyLength = 65535;  // bytes
constexpr uint64_t kGgufMaxNameLength = 64;    // bytes, tensor names
constexpr uint32_t kGgufMaxDims = 4;

// Reads a GGUF file; tensor data are views of a memory map of it. Throws qforge::Error.
Model read_gguf(const std::string& path);

// Parses GGUF bytes held in `file` (tensor data become slices of it). `path` is only
// used in error messages. Throws qforge::Error.
Model parse_gguf(BlobPtr file, const std::string& path);

// Writes `model` as GGUF v3 to `path` through AtomicFile, one tensor at a time (each
// tensor's bytes are requested, written, and released before the next). `alignment`
// 0 means: `general.alignment` from the metadata if present, else 32. A non-zero
// alignment different from the metadata's replaces the value written (and is added as
// `general.alignment` when not 32). Throws qforge::Error.
void write_gguf(const Model& model, const std::string& path, uint32_t alignment = 0);

// The size in bytes of the file write_gguf would write for `model` (header, metadata,
// tensor infos, padding and every tensor's data padded to the alignment), from the
// tensors' types and shapes alone: no tensor data is read. Throws qforge::Error.
uint64_t gguf_file_size(const Model& model, uint32_t alignment = 0);

// The alignment write_gguf would use (validated).
uint32_t gguf_alignment_for(const Model& model, uint32_t alignment = 0);

class GgufFormat : public Format {
 public:
  std::string name() const override { return "gguf"; }
  std::string version() const override { return "1"; }
  std::string extension() const override { return ".gguf"; }
  std::string description() const override {
    return "GGUF v2/v3 (llama.cpp / ggml): metadata and tensors, every ggml type";
  }
  int probe(const std::string& path, const uint8_t* head, size_t n) const override;
  Status import_model(const std::string& path, Model& out) const override;
  // Options: `alignment` (integer, a power of two; default: the model's
  // general.alignment, else 32).
  Status emit_model(const Model& model, const std::string& path, const Options& options) const override;
};

}  // namespace qforge
