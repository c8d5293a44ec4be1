// GGUF reader: every count, length, dimension and offset is checked against limits and
// against the bytes remaining before it is used (see gguf.h for the policy).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "gguf.h"
#include "internal.h"
#include "qforge/status.h"

namespace qforge {
namespace {

using gguf_detail::utf8_error_at;
using gguf_detail::value_type_name;

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%s%02x", i ? " " : "", p[i]);
    s += buf;
  }
  return s;
}

using qforge::printable;  // qforge/types.h

std::string u64s(uint64_t v) { return std::to_string(v); }

uint64_t fixed_size(MetaType t) {
  switch (t) {
    case MetaType::U8:
    case MetaType::I8:
    case MetaType::Bool: return 1;
    case MetaType::U16:
    case MetaType::I16: return 2;
    case MetaType::U32:
    case MetaType::I32:
    case MetaType::F32: return 4;
    case MetaType::U64:
    case MetaType::I64:
    case MetaType::F64: return 8;
    case MetaType::String: return 8;  // the length prefix, at least
    case MetaType::Array: return 12;  // element type + count, at least
  }
  return 1;
}

// Where we are in a value, for messages: "metadata 'k'[3][0]".
struct FieldPath {
  std::string base;
  std::vector<uint64_t> index;
  std::string str() const {
    std::string s = base;
    for (uint64_t i : index) s += "[" + u64s(i) + "]";
    return s;
  }
};

class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, const std::string& path) : p_(data), size_(size), path_(path) {}

  [[noreturn]] void fail(uint64_t at, const std::string& field, const std::string& what) const {
    throw Error(path_ + ": byte " + u64s(at) + ": " + field + ": " + what);
  }
  [[noreturn]] void fail_file(const std::string& what) const { throw Error(path_ + ": " + what); }

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& field) const {
    if (n > remaining())
      fail(pos_, field,
           "expected " + u64s(n) + " byte" + (n == 1 ? "" : "s") + ", found " + u64s(remaining()) +
               " (the file ends at byte " + u64s(size_) + "; truncated?)");
  }

  template <class T>
  T get(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));  // little-endian host (checked at build time)
    pos_ += sizeof(T);
    return v;
  }
  template <class T>
  T get(const FieldPath& field) {
    if (sizeof(T) > remaining()) need(sizeof(T), field.str());
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A GGUF string: u64 length, bytes.
  std::string str(const std::string& field, uint64_t max_len) {
    uint64_t at = pos_;
    uint64_t n = get<uint64_t>(field + ": string length");
    if (n > max_len)
      fail(at, field + ": string length", "expected at most " + u64s(max_len) + " bytes, found " + u64s(n));
    if (n > remaining())
      fail(at, field + ": string length",
           "expected at most the " + u64s(remaining()) + " bytes left in the file, found " + u64s(n) +
               " (truncated or corrupt)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }
  std::string str(const FieldPath& field) {
    uint64_t at = pos_;
    uint64_t n = get<uint64_t>(field);
    if (n > remaining())
      fail(at, field.str() + ": string length",
           "expected at most the " + u64s(remaining()) + " bytes left in the file, found " + u64s(n) +
               " (truncated or corrupt)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

  MetaType value_type(const std::string& field) {
    uint64_t at = pos_;
    uint32_t t = get<uint32_t>(field);
    if (t > static_cast<uint32_t>(MetaType::F64))
      fail(at, field, "expected a GGUF value type 0..12, found " + u64s(t));
    return static_cast<MetaType>(t);
  }

  MetaValue value(MetaType type, FieldPath& field, uint32_t depth) {
    MetaValue v;
    v.type = type;
    switch (type) {
      case MetaType::U8: v.u = get<uint8_t>(field); break;
      case MetaType::I8: v.i = get<int8_t>(field); break;
      case MetaType::U16: v.u = get<uint16_t>(field); break;
      case MetaType::I16: v.i = get<int16_t>(field); break;
      case MetaType::U32: v.u = get<uint32_t>(field); break;
      case MetaType::I32: v.i = get<int32_t>(field); break;
      case MetaType::U64: v.u = get<uint64_t>(field); break;
      case MetaType::I64: v.i = get<int64_t>(field); break;
      case MetaType::F32: v.f = get<float>(field); break;
      case MetaType::F64: v.f = get<double>(field); break;
      case MetaType::Bool: {
        uint64_t at = pos_;
        uint8_t b = get<uint8_t>(field);
        if (b > 1) fail(at, field.str(), "expected a bool (0 or 1), found " + u64s(b));
        v.u = b;
        break;
      }
      case MetaType::String: v.s = str(field); break;
      case MetaType::Array: array_body(v, field, depth + 1); break;
    }
    return v;
  }

  // { u32 element type, u64 count, elements } into v (v.type already Array).
  void array_body(MetaValue& v, FieldPath& field, uint32_t depth) {
    if (depth > kGgufMaxArrayDepth)
      fail(pos_, field.str(),
           "expected arrays nested at most " + u64s(kGgufMaxArrayDepth) + " levels deep, found a deeper one");
    v.elem = value_type(field.str() + ": array element type");
    uint64_t count_at = pos_;
    uint64_t count = get<uint64_t>(field.str() + ": array count");
    uint64_t min = fixed_size(v.elem);
    if (count > remaining() / min)
      fail(count_at, field.str() + ": array count",
           "expected at most " + u64s(remaining() / min) + " " + value_type_name(v.elem) +
               " elements (the bytes left in the file), found " + u64s(count));
    v.array.reserve(static_cast<size_t>(count));
    field.index.push_back(0);
    for (uint64_t k = 0; k < count; ++k) {
      field.index.back() = k;
      v.array.push_back(value(v.elem, field, depth));
    }
    field.index.pop_back();
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order
  ElemType type = ElemType::F32;
  uint64_t nbytes = 0;
  uint64_t offset = 0;     // relative to the data section
  uint64_t offset_at = 0;  // byte offset of the offset field
};

std::string tensor_field(const std::string& name) { return "tensor '" + printable(name) + "'"; }

}  // namespace

Model parse_gguf(BlobPtr file, const std::string& path) {
  static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE floats");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif
  if (!file) throw Error(path + ": no data");
  Reader r(file->data(), file->size(), path);

  // ---- header
  if (r.size() < 4 || std::memcmp(file->data(), "GGUF", 4) != 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(4, r.size()));
    r.fail(0, "magic",
           "expected \"GGUF\" (47 47 55 46), found " +
               (n ? hex_bytes(file->data(), n) : std::string("an empty file")) +
               (n < 4 ? " (the file is " + u64s(r.size()) + " bytes)" : "") + "; this is not a GGUF file");
  }
  r.get<uint32_t>("magic");
  uint64_t version_at = r.pos();
  uint32_t version = r.get<uint32_t>("version");
  uint32_t swapped = __builtin_bswap32(version);
  if (version != 0 && (version & 0xffffu) == 0 && swapped >= 1 && swapped <= 3)
    r.fail(version_at, "version",
           "found " + u64s(version) + " (byte-swapped: " + u64s(swapped) +
               "): this is a big-endian GGUF file, which qforge does not read; convert it "
               "to little-endian (e.g. gguf-py's gguf_convert_endian.py)");
  if (version == 1)
    r.fail(version_at, "version",
           "expected 2 or 3, found 1: GGUF v1 is not supported; re-convert the model with a "
           "current llama.cpp");
  if (version < 2 || version > 3) r.fail(version_at, "version", "expected 2 or 3, found " + u64s(version));

  uint64_t nt_at = r.pos();
  uint64_t n_tensors = r.get<uint64_t>("tensor count");
  uint64_t nkv_at = r.pos();
  uint64_t n_kv = r.get<uint64_t>("metadata count");
  // Smallest possible entries: a tensor info with n_dims 0 and a 1-byte name is 25
  // bytes; a key/value is 14 bytes.
  if (n_kv > r.remaining() / 14)
    r.fail(nkv_at, "metadata count",
           "expected at most " + u64s(r.remaining() / 14) +
               " key/value pairs (the bytes left in the file), found " + u64s(n_kv));
  if (n_tensors > r.remaining() / 25)
    r.fail(nt_at, "tensor count",
           "expected at most " + u64s(r.remaining() / 25) + " tensors (the bytes left in the file), found " +
               u64s(n_tensors));

  // ---- metadata
  Model m;
  m.format = "gguf";
  m.source = path;
  m.metadata.reserve(static_cast<size_t>(n_kv));
  std::unordered_set<std::string> keys;
  uint64_t alignment_at = 0;
  for (uint64_t k = 0; k < n_kv; ++k) {
    uint64_t key_at = r.pos();
    std::string field = "metadata key " + u64s(k);
    std::string key = r.str(field, kGgufMaxKeyLength);
    if (key.empty()) r.fail(key_at, field, "expected a non-empty key, found an empty string");
    size_t bad = utf8_error_at(key);
    if (bad != std::string::npos)
      r.fail(key_at + 8 + bad, field,
             "expected a UTF-8 key, found the byte 0x" +
                 hex_bytes(reinterpret_cast<const uint8_t*>(key.data()) + bad, 1) + " at position " +
                 u64s(bad) + " in '" + printable(key) + "'");
    FieldPath path_f{"metadata '" + printable(key) + "'", {}};
    if (!keys.insert(key).second)
      r.fail(key_at, path_f.base, "expected unique keys, found a second '" + printable(key) + "'");
    MetaType type = r.value_type(path_f.base + ": value type");
    if (key == "general.alignment") alignment_at = r.pos();
    MetaValue v = r.value(type, path_f, 0);
    m.metadata.emplace_back(std::move(key), std::move(v));
  }

  uint32_t alignment = kGgufDefaultAlignment;
  if (const MetaValue* a = m.meta("general.alignment")) {
    if (a->type != MetaType::U32)
      r.fail(alignment_at, "metadata 'general.alignment'",
             std::string("expected type u32, found ") + value_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      r.fail(alignment_at, "metadata 'general.alignment'",
             "expected a non-zero power of two, found " + u64s(a->u));
    alignment = static_cast<uint32_t>(a->u);
  }

  // ---- tensor infos
  std::vector<TensorInfo> infos;
  infos.reserve(static_cast<size_t>(n_tensors));
  std::unordered_set<std::string> names;
  for (uint64_t t = 0; t < n_tensors; ++t) {
    TensorInfo ti;
    uint64_t name_at = r.pos();
    std::string field = "tensor " + u64s(t) + " name";
    ti.name = r.str(field, kGgufMaxNameLength);
    if (ti.name.empty()) r.fail(name_at, field, "expected a non-empty name, found an empty one");
    size_t bad = utf8_error_at(ti.name);
    if (bad != std::string::npos)
      r.fail(name_at + 8 + bad, field,
             "expected a UTF-8 name, found the byte 0x" +
                 hex_bytes(reinterpret_cast<const uint8_t*>(ti.name.data()) + bad, 1) + " at position " +
                 u64s(bad) + " in '" + printable(ti.name) + "'");
    std::string tf = tensor_field(ti.name);
    if (!names.insert(ti.name).second)
      r.fail(name_at, tf, "expected unique tensor names, found '" + printable(ti.name) + "' again");

    uint64_t nd_at = r.pos();
    uint32_t n_dims = r.get<uint32_t>(tf + ": n_dims");
    if (n_dims > kGgufMaxDims)
      r.fail(nd_at, tf + ": n_dims",
             "expected at most " + u64s(kGgufMaxDims) + " dimensions, found " + u64s(n_dims));
    uint64_t numel = 1;
    for (uint32_t j = 0; j < n_dims; ++j) {
      uint64_t d_at = r.pos();
      std::string df = tf + ": ne[" + u64s(j) + "]";
      uint64_t d = r.get<uint64_t>(df);
      if (d == 0 || d > static_cast<uint64_t>(INT64_MAX))
        r.fail(d_at, df, "expected a dimension in 1.." + u64s(INT64_MAX) + ", found " + u64s(d));
      if (numel > static_cast<uint64_t>(INT64_MAX) / d)
        r.fail(d_at, df,
               "expected the element count to fit 63 bits, found " + u64s(numel) + " × " + u64s(d) +
                   " (overflow)");
      numel *= d;
      ti.ne.push_back(static_cast<int64_t>(d));
    }
    uint64_t type_at = r.pos();
    uint32_t type_id = r.get<uint32_t>(tf + ": type");
    auto type = type_id <= static_cast<uint32_t>(INT32_MAX) ? elem_from_ggml(static_cast<int>(type_id))
                                                            : std::nullopt;
    if (!type) r.fail(type_at, tf + ": type", "expected a known ggml type id, found " + u64s(type_id));
    ti.type = *type;
    const ElemTraits& tr = traits(ti.type);
    uint64_t row = ti.ne.empty() ? 1 : static_cast<uint64_t>(ti.ne[0]);
    if (row % tr.block_size != 0)
      r.fail(type_at, tf + ": ne[0]",
             std::string("expected a multiple of ") + u64s(tr.block_size) + " (the block size of " + tr.name +
                 "), found " + u64s(row));
    auto nb = byte_size(ti.type, numel);
    if (!nb)
      r.fail(type_at, tf,
             "expected a byte size that fits 64 bits, found " + u64s(numel) + " elements of " + tr.name +
                 " (overflow)");
    ti.nbytes = *nb;
    ti.offset_at = r.pos();
    ti.offset = r.get<uint64_t>(tf + ": offset");
    infos.push_back(std::move(ti));
  }

  // ---- data section
  uint64_t end_of_infos = r.pos();
  uint64_t data_start = end_of_infos;
  if (data_start % alignment) {
    uint64_t pad = alignment - data_start % alignment;
    if (data_start > UINT64_MAX - pad) r.fail(end_of_infos, "padding", "offset overflow");
    data_start += pad;
  }
  if (!infos.empty() && data_start > r.size())
    r.fail(end_of_infos, "tensor data",
           "expected the data section at byte " + u64s(data_start) + " (aligned to " + u64s(alignment) +
               "), found the end of the file at byte " + u64s(r.size()));

  for (const TensorInfo& ti : infos) {
    std::string of = tensor_field(ti.name) + ": offset";
    if (ti.offset % alignment)
      r.fail(ti.offset_at, of,
             "expected a multiple of the alignment " + u64s(alignment) + ", found " + u64s(ti.offset));
    uint64_t avail = r.size() - std::min(r.size(), data_start);
    if (ti.offset > avail || ti.nbytes > avail - ti.offset)
      r.fail(
          ti.offset_at, of,
          "expected " + u64s(ti.nbytes) + " bytes of data at data+" + u64s(ti.offset) + " (byte " +
              (ti.offset > UINT64_MAX - data_start ? std::string("overflow") : u64s(data_start + ti.offset)) +
              ") inside the file, found the file ends at byte " + u64s(r.size()));
  }
  std::vector<size_t> order(infos.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return infos[a].offset < infos[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& a = infos[order[k - 1]];
    const TensorInfo& b = infos[order[k]];
    if (a.offset + a.nbytes > b.offset)
      r.fail(b.offset_at, tensor_field(b.name) + ": offset",
             "expected data not overlapping another tensor's, found [" + u64s(b.offset) + ", " +
                 u64s(b.offset + b.nbytes) + ") overlapping " + tensor_field(a.name) + " at [" +
                 u64s(a.offset) + ", " + u64s(a.offset + a.nbytes) + ")");
  }

  m.tensors.reserve(infos.size());
  for (TensorInfo& ti : infos) {
    Tensor t;
    t.name = std::move(ti.name);
    t.shape.assign(ti.ne.rbegin(), ti.ne.rend());
    t.type = ti.type;
    t.data = slice_blob(file, data_start + ti.offset, ti.nbytes);
    m.tensors.push_back(std::move(t));
  }
  return m;
}

Model read_gguf(const std::string& path) {
  std::shared_ptr<MappedFile> f = MappedFile::open(path);
  return parse_gguf(f, path);
}

int GgufFormat::probe(const std::string&, const uint8_t* head, size_t n) const {
  return n >= 4 && std::memcmp(head, "GGUF", 4) == 0 ? 100 : 0;
}

Status GgufFormat::import_model(const std::string& path, Model& out) const {
  return guard([&] { out = read_gguf(path); });
}

}  // namespace qforge
