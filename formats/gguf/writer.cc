// GGUF writer: validates the whole model, lays out offsets up front, then streams
// tensor data one tensor at a time through AtomicFile.
#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include "gguf.h"
#include "internal.h"
#include "qforge/atomic_file.h"
#include "qforge/status.h"

namespace qforge {
namespace {

using gguf_detail::utf8_error_at;
using gguf_detail::value_type_name;

std::string u64s(uint64_t v) { return std::to_string(v); }
std::string i64s(int64_t v) { return std::to_string(v); }

class Buffer {
 public:
  explicit Buffer(const std::string& path) : path_(path) {}
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s_.append(b, sizeof(T));
  }
  void str(const std::string& v) {
    put<uint64_t>(v.size());
    s_ += v;
  }
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(path_ + ": cannot write GGUF: " + field + ": " + what);
  }

  void value(const MetaValue& v, const std::string& field, uint32_t depth) {
    auto range_u = [&](uint64_t max) {
      if (v.u > max)
        fail(field, std::string("expected a ") + value_type_name(v.type) + " in 0.." + u64s(max) +
                        ", found " + u64s(v.u));
    };
    auto range_i = [&](int64_t lo, int64_t hi) {
      if (v.i < lo || v.i > hi)
        fail(field, std::string("expected a ") + value_type_name(v.type) + " in " + i64s(lo) + ".." +
                        i64s(hi) + ", found " + i64s(v.i));
    };
    switch (v.type) {
      case MetaType::U8:
        range_u(UINT8_MAX);
        put<uint8_t>(uint8_t(v.u));
        break;
      case MetaType::I8:
        range_i(INT8_MIN, INT8_MAX);
        put<int8_t>(int8_t(v.i));
        break;
      case MetaType::U16:
        range_u(UINT16_MAX);
        put<uint16_t>(uint16_t(v.u));
        break;
      case MetaType::I16:
        range_i(INT16_MIN, INT16_MAX);
        put<int16_t>(int16_t(v.i));
        break;
      case MetaType::U32:
        range_u(UINT32_MAX);
        put<uint32_t>(uint32_t(v.u));
        break;
      case MetaType::I32:
        range_i(INT32_MIN, INT32_MAX);
        put<int32_t>(int32_t(v.i));
        break;
      case MetaType::U64: put<uint64_t>(v.u); break;
      case MetaType::I64: put<int64_t>(v.i); break;
      case MetaType::F32: put<float>(static_cast<float>(v.f)); break;
      case MetaType::F64: put<double>(v.f); break;
      case MetaType::Bool:
        range_u(1);
        put<uint8_t>(uint8_t(v.u));
        break;
      case MetaType::String: str(v.s); break;
      case MetaType::Array: array_body(v, field, depth + 1); break;
      default: fail(field, "expected a GGUF value type 0..12, found " + u64s(static_cast<uint64_t>(v.type)));
    }
  }

  void array_body(const MetaValue& v, const std::string& field, uint32_t depth) {
    if (depth > kGgufMaxArrayDepth)
      fail(field,
           "expected arrays nested at most " + u64s(kGgufMaxArrayDepth) + " levels deep, found a deeper one");
    if (static_cast<uint32_t>(v.elem) > static_cast<uint32_t>(MetaType::F64))
      fail(field, "expected an array element type 0..12, found " + u64s(static_cast<uint64_t>(v.elem)));
    put<uint32_t>(static_cast<uint32_t>(v.elem));
    put<uint64_t>(v.array.size());
    for (size_t k = 0; k < v.array.size(); ++k) {
      const MetaValue& e = v.array[k];
      if (e.type != v.elem)
        fail(field + "[" + u64s(k) + "]", std::string("expected an element of type ") +
                                              value_type_name(v.elem) + " (the array's), found " +
                                              value_type_name(e.type));
      value(e, field + "[" + u64s(k) + "]", depth);
    }
  }

  const std::string& bytes() const { return s_; }
  std::string& bytes() { return s_; }

 private:
  std::string s_;
  const std::string& path_;
};

uint64_t align_up(uint64_t v, uint32_t a) { return (v + a - 1) / a * a; }

bool pow2(uint64_t a) { return a != 0 && (a & (a - 1)) == 0; }

// The header (metadata, tensor infos, padding to the data section) in `b`, each
// tensor's byte size in `sizes`, and the size of the data section (tensors padded).
uint64_t lay_out(const Model& model, uint32_t alignment, Buffer& b, std::vector<uint64_t>& sizes) {
  // ---- metadata (general.alignment rewritten or added when the alignment differs)
  const MetaValue* have = model.meta("general.alignment");
  bool add_alignment = !have && alignment != kGgufDefaultAlignment;
  uint64_t n_kv = model.metadata.size() + (add_alignment ? 1 : 0);

  b.bytes().append("GGUF", 4);
  b.put<uint32_t>(3);
  b.put<uint64_t>(model.tensors.size());
  b.put<uint64_t>(n_kv);

  std::unordered_set<std::string> keys;
  for (const auto& [key, v] : model.metadata) {
    std::string field = "metadata '" + key + "'";
    if (key.empty()) b.fail("metadata", "expected non-empty keys, found an empty one");
    if (key.size() > kGgufMaxKeyLength)
      b.fail(field,
             "expected a key of at most " + u64s(kGgufMaxKeyLength) + " bytes, found " + u64s(key.size()));
    if (utf8_error_at(key) != std::string::npos)
      b.fail(field, "expected a UTF-8 key, found invalid UTF-8 at byte " + u64s(utf8_error_at(key)));
    if (!keys.insert(key).second) b.fail(field, "expected unique keys, found it twice");
    b.str(key);
    if (key == "general.alignment") {
      b.put<uint32_t>(static_cast<uint32_t>(MetaType::U32));
      b.put<uint32_t>(alignment);
      continue;
    }
    b.put<uint32_t>(static_cast<uint32_t>(v.type));
    b.value(v, field, 0);
  }
  if (add_alignment) {
    b.str("general.alignment");
    b.put<uint32_t>(static_cast<uint32_t>(MetaType::U32));
    b.put<uint32_t>(alignment);
  }

  // ---- tensor infos, offsets laid out up front
  std::unordered_set<std::string> names;
  sizes.reserve(model.tensors.size());
  uint64_t offset = 0;
  for (const Tensor& t : model.tensors) {
    std::string tf = "tensor '" + t.name + "'";
    if (t.name.empty()) b.fail("tensor", "expected non-empty names, found an empty one");
    if (t.name.size() > kGgufMaxNameLength)
      b.fail(tf, "expected a name of at most " + u64s(kGgufMaxNameLength) + " bytes, found " +
                     u64s(t.name.size()));
    if (utf8_error_at(t.name) != std::string::npos)
      b.fail(tf, "expected a UTF-8 name, found invalid UTF-8 at byte " + u64s(utf8_error_at(t.name)));
    if (!names.insert(t.name).second) b.fail(tf, "expected unique tensor names, found it twice");
    const ElemTraits& tr = traits(t.type);
    if (tr.ggml_id < 0)
      b.fail(tf, std::string("expected a type GGUF can store, found ") + tr.name + " (convert it first)");
    if (t.shape.size() > kGgufMaxDims)
      b.fail(tf, "expected at most " + u64s(kGgufMaxDims) + " dimensions, found " + u64s(t.shape.size()));
    uint64_t numel = 1;
    for (size_t j = 0; j < t.shape.size(); ++j) {
      int64_t d = t.shape[j];
      if (d <= 0) b.fail(tf + ": shape[" + u64s(j) + "]", "expected a dimension > 0, found " + i64s(d));
      if (numel > static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(d))
        b.fail(tf, "expected an element count that fits 63 bits, found an overflow");
      numel *= static_cast<uint64_t>(d);
    }
    uint64_t row = t.shape.empty() ? 1 : static_cast<uint64_t>(t.shape.back());
    if (row % tr.block_size)
      b.fail(tf, std::string("expected a row length (last dimension) that is a multiple of ") +
                     u64s(tr.block_size) + " (the block size of " + tr.name + "), found " + u64s(row));
    auto nb = byte_size(t.type, numel);
    if (!nb || *nb > UINT64_MAX - alignment || offset > UINT64_MAX - alignment - *nb)
      b.fail(tf, "expected a byte size that fits 64 bits, found an overflow");
    b.str(t.name);
    b.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) b.put<uint64_t>(uint64_t(*it));
    b.put<uint32_t>(static_cast<uint32_t>(tr.ggml_id));
    b.put<uint64_t>(offset);
    sizes.push_back(*nb);
    offset = align_up(offset + *nb, alignment);
  }
  // The data section starts aligned. Without tensors there is no data section and no
  // padding (what gguf-py writes for vocab-only files).
  if (!model.tensors.empty()) b.bytes().resize(align_up(b.bytes().size(), alignment), '\0');

  return offset;
}

}  // namespace

uint32_t gguf_alignment_for(const Model& model, uint32_t alignment) {
  if (alignment != 0) {
    if (!pow2(alignment))
      throw Error("GGUF alignment: expected a non-zero power of two, found " + u64s(alignment));
    return alignment;
  }
  if (const MetaValue* a = model.meta("general.alignment")) {
    if (a->type != MetaType::U32)
      throw Error(std::string("metadata 'general.alignment': expected type u32, found ") +
                  value_type_name(a->type));
    if (!pow2(a->u) || a->u > UINT32_MAX)
      throw Error("metadata 'general.alignment': expected a non-zero power of two, found " + u64s(a->u));
    return static_cast<uint32_t>(a->u);
  }
  return kGgufDefaultAlignment;
}

uint64_t gguf_file_size(const Model& model, uint32_t requested) {
  const uint32_t alignment = gguf_alignment_for(model, requested);
  const std::string what = "GGUF layout";  // Buffer keeps a reference
  Buffer b(what);
  std::vector<uint64_t> sizes;
  const uint64_t data = lay_out(model, alignment, b, sizes);
  return b.bytes().size() + data;
}

void write_gguf(const Model& model, const std::string& path, uint32_t requested) {
  uint32_t alignment;
  try {
    alignment = gguf_alignment_for(model, requested);
  } catch (const Error& e) {
    throw Error(path + ": cannot write GGUF: " + e.what());
  }

  Buffer b(path);
  std::vector<uint64_t> sizes;
  const uint64_t offset = lay_out(model, alignment, b, sizes);

  // ---- stream: header, then each tensor's bytes, padded
  AtomicFile out(path);
  out.write(b.bytes().data(), b.bytes().size());
  const uint64_t data_start = b.bytes().size();
  std::string().swap(b.bytes());
  static const char zeros[256] = {};
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const Tensor& t = model.tensors[i];
    BlobPtr blob;
    try {
      blob = t.bytes();
    } catch (const std::exception& e) {
      std::string what = e.what(), tf = "tensor '" + t.name + "'";
      throw Error(path + ": cannot write GGUF: " + (what.rfind(tf, 0) == 0 ? what : tf + ": " + what));
    }
    if (!blob) throw Error(path + ": cannot write GGUF: tensor '" + t.name + "': has no data");
    if (blob->size() != sizes[i])
      throw Error(path + ": cannot write GGUF: tensor '" + t.name + "': expected " + u64s(sizes[i]) +
                  " bytes (" + name_of(t.type) + ", " + u64s(t.shape.size()) + " dims), found " +
                  u64s(blob->size()));
    write_releasing(*blob, [&](const uint8_t* d, size_t n) { out.write(d, n); });
    blob.reset();
    uint64_t pad = align_up(sizes[i], alignment) - sizes[i];
    while (pad) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof zeros));
      out.write(zeros, n);
      pad -= n;
    }
  }
  if (out.size() != data_start + offset)
    throw Error(path + ": cannot write GGUF: internal layout error (wrote " + u64s(out.size()) +
                " bytes, expected " + u64s(data_start + offset) + ")");
  out.commit();
}

Status GgufFormat::emit_model(const Model& model, const std::string& path, const Options& options) const {
  return guard([&] {
    uint32_t alignment = 0;
    auto it = options.find("alignment");
    if (it != options.end() && !it->second.is_null()) {
      const Value& v = it->second;
      if (v.kind != Value::Kind::Int || v.i <= 0 || v.i > INT32_MAX || !pow2(uint64_t(v.i)))
        throw Error(path + ": GGUF option 'alignment': expected a power of two, found " + v.display());
      alignment = static_cast<uint32_t>(v.i);
    }
    write_gguf(model, path, alignment);
  });
}

}  // namespace qforge
