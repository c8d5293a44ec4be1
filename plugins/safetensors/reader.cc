// safetensors reader: the header length is checked against the file and a cap,
// the JSON header is parsed with nlohmann-json's SAX interface into the few
// shapes the format allows (anything else is an error at its byte offset), then
// every dtype, shape and offset is checked before a tensor becomes a slice of the
// memory map. See safetensors.h for the policy.
#include <algorithm>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "qforge/status.h"
#include "safetensors.h"

namespace qforge::st {
namespace {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader assumes a little-endian host"
#endif

std::string u64s(uint64_t v) { return std::to_string(v); }

// A pointer into the header that counts the bytes the JSON parser has consumed,
// so that every SAX event knows where it is in the file.
struct CountingIter {
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;
  const char* p = nullptr;
  uint64_t* count = nullptr;
  reference operator*() const { return *p; }
  CountingIter& operator++() {
    ++p;
    ++*count;
    return *this;
  }
  CountingIter operator++(int) {
    CountingIter old = *this;
    ++*this;
    return old;
  }
  bool operator==(const CountingIter& o) const { return p == o.p; }
  bool operator!=(const CountingIter& o) const { return p != o.p; }
};

struct Entry {
  std::string name;
  uint64_t name_at = 0;
  std::string dtype;
  uint64_t dtype_at = 0;
  bool has_dtype = false;
  std::vector<uint64_t> shape;
  uint64_t shape_at = 0;
  bool has_shape = false;
  std::vector<uint64_t> offsets;
  uint64_t offsets_at = 0;
  bool has_offsets = false;
};

using Json = nlohmann::json;

// Builds the header's entries from SAX events. Depth 1 is the header object,
// depth 2 a tensor entry or __metadata__, depth 3 a shape or data_offsets array.
class HeaderSax : public nlohmann::json_sax<Json> {
 public:
  HeaderSax(const std::string& path, const uint64_t* count) : path_(path), count_(count) {}

  std::vector<Entry> entries;
  std::vector<RawMeta> meta;

  bool null() override { return scalar("null", nullptr); }
  bool boolean(bool v) override { return scalar(v ? "true" : "false", nullptr); }
  bool number_integer(number_integer_t v) override {
    return number("the negative number " + std::to_string(v), false, 0);
  }
  bool number_unsigned(number_unsigned_t v) override { return number("", true, v); }
  bool number_float(number_float_t, const string_t& text) override {
    const bool integral = text.find_first_of(".eE") == std::string::npos;
    return number(integral ? "the integer " + text + " (more than 64 bits)" : "the number " + text, false, 0);
  }
  bool string(string_t& v) override { return scalar("a string", &v); }
  bool binary(binary_t&) override { return scalar("binary data", nullptr); }

  bool start_object(std::size_t) override {
    if (depth_ == 0) {
      depth_ = 1;
      return true;
    }
    if (depth_ == 1) {
      if (in_meta_) {
        depth_ = 2;
        return true;
      }
      Entry e;
      e.name = key_;
      e.name_at = key_at_;
      entries.push_back(std::move(e));
      field_.clear();
      depth_ = 2;
      return true;
    }
    return scalar("an object", nullptr);
  }

  bool end_object() override {
    if (depth_ == 2 && !in_meta_) {
      const Entry& e = entries.back();
      const char* missing = !e.has_dtype     ? "dtype"
                            : !e.has_shape   ? "shape"
                            : !e.has_offsets ? "data_offsets"
                                             : nullptr;
      if (missing)
        fail(at(), "tensor '" + printable(e.name) + "'",
             std::string("expected the fields dtype, shape and data_offsets, found no '") + missing + "'");
    }
    --depth_;
    return true;
  }

  bool start_array(std::size_t) override {
    if (depth_ == 2 && !in_meta_ && (field_ == "shape" || field_ == "data_offsets")) {
      Entry& e = entries.back();
      if (field_ == "shape") {
        e.has_shape = true;
        e.shape_at = at();
      } else {
        e.has_offsets = true;
        e.offsets_at = at();
      }
      depth_ = 3;
      return true;
    }
    if (depth_ == 0) fail(at(), "header", "expected a JSON object, found an array");
    return scalar("an array", nullptr);
  }

  bool end_array() override {
    Entry& e = entries.back();
    if (field_ == "data_offsets" && e.offsets.size() != 2)
      fail(at(), where(),
           "expected [begin, end] (two byte offsets), found " + u64s(e.offsets.size()) + " number" +
               (e.offsets.size() == 1 ? "" : "s"));
    depth_ = 2;
    return true;
  }

  bool key(string_t& k) override {
    const uint64_t pos = at();
    if (depth_ == 1) {
      if (!keys_.insert(k).second)
        fail(pos, k == "__metadata__" ? std::string("__metadata__") : "tensor '" + printable(k) + "'",
             "expected unique names in the header, found '" + printable(k) +
                 "' a second time (duplicate keys are not allowed by the format)");
      if (k.empty()) fail(pos, "tensor name", "expected a non-empty tensor name, found \"\"");
      in_meta_ = k == "__metadata__";
      key_ = k;
      key_at_ = pos;
      meta_keys_.clear();
      return true;
    }
    if (depth_ == 2 && in_meta_) {
      if (!meta_keys_.insert(k).second)
        fail(pos, "__metadata__", "expected unique keys, found '" + printable(k) + "' a second time");
      RawMeta m;
      m.key = k;
      m.key_at = pos;
      meta.push_back(std::move(m));
      return true;
    }
    // depth 2, a tensor entry
    Entry& e = entries.back();
    field_ = k;
    bool dup = false;
    if (k == "dtype") {
      dup = e.has_dtype;
    } else if (k == "shape") {
      dup = e.has_shape;
    } else if (k == "data_offsets") {
      dup = e.has_offsets;
    } else {
      fail(pos, "tensor '" + printable(e.name) + "'",
           "expected only the fields dtype, shape and data_offsets, found '" + printable(k) + "'");
    }
    if (dup)
      fail(pos, "tensor '" + printable(e.name) + "'",
           "expected each field once, found '" + k + "' a second time (duplicate keys are not allowed)");
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line 1, column 7: syntax error
    // ...".
    std::string msg = ex.what();
    size_t c = msg.find(", column ");
    if (c != std::string::npos) {
      size_t colon = msg.find(": ", c);
      if (colon != std::string::npos) msg = msg.substr(colon + 2);
    } else if (msg.rfind("[json.exception.", 0) == 0 && msg.find("] ") != std::string::npos) {
      msg = msg.substr(msg.find("] ") + 2);
    }
    // Its "last read" quotes raw header bytes; the message quotes them printably instead.
    const size_t lr = msg.find("; last read: '");
    if (lr != std::string::npos) {
      const size_t end = msg.find("'; ", lr + 14);
      msg.erase(lr, end == std::string::npos ? std::string::npos : end + 1 - lr);
    }
    msg = printable(msg, 400);
    if (msg.find("UTF-8") != std::string::npos)
      msg += " (a safetensors header is UTF-8 JSON: tensor names and metadata must be valid UTF-8)";
    const uint64_t byte = 8 + (position ? position - 1 : 0);
    fail(byte, "header JSON", msg);
  }

  void set_header(const std::string* header) { header_ = header; }

 private:
  [[noreturn]] void fail(uint64_t byte, const std::string& field, const std::string& what) const {
    std::string near;
    if (header_ && byte >= 8 && byte - 8 < header_->size()) {
      const size_t rel = static_cast<size_t>(byte - 8);
      const size_t from = rel > 24 ? rel - 24 : 0;
      near = " (near '" + printable(header_->substr(from, rel - from + 1 + 16), 64) + "')";
    }
    throw Error(path_ + ": byte " + u64s(byte) + ": " + field + ": " + what + near);
  }
  // The file offset of the last byte the parser read (the end of the current token).
  uint64_t at() const { return 8 + (*count_ ? *count_ - 1 : 0); }
  std::string where() const {
    if (in_meta_) return "__metadata__";
    std::string w = "tensor '" + printable(entries.back().name) + "'";
    if (!field_.empty() && depth_ >= 2) w += ": " + field_;
    return w;
  }

  bool scalar(const std::string& found, const std::string* s) {
    const uint64_t pos = at();
    if (depth_ == 1) {
      if (in_meta_ && found == "null") return true;  // "__metadata__": null is no metadata
      if (in_meta_) fail(pos, "__metadata__", "expected an object of strings, found " + found);
      fail(pos, "tensor '" + printable(key_) + "'",
           "expected an object {\"dtype\", \"shape\", \"data_offsets\"}, found " + found);
    }
    if (depth_ == 2 && in_meta_) {
      RawMeta& m = meta.back();
      if (!s)
        fail(pos, "__metadata__ '" + printable(m.key) + "'",
             "expected a string (the format's metadata holds only strings), found " + found);
      m.value = *s;
      m.value_at = pos;
      return true;
    }
    if (depth_ == 2 && field_ == "dtype") {
      if (!s) fail(pos, where(), "expected a dtype name (a string such as \"F32\"), found " + found);
      Entry& e = entries.back();
      e.dtype = *s;
      e.dtype_at = pos;
      e.has_dtype = true;
      return true;
    }
    if (depth_ == 2) fail(pos, where(), "expected an array of unsigned integers, found " + found);
    if (depth_ == 3) fail(pos, where(), "expected an unsigned integer, found " + found);
    fail(pos, "header", "expected a JSON object, found " + found);
  }

  bool number(const std::string& found, bool is_unsigned, uint64_t v) {
    if (depth_ != 3) return scalar(found.empty() ? "the number " + u64s(v) : found, nullptr);
    // The parser has read one byte past a number.
    const uint64_t pos = at() > 8 ? at() - 1 : at();
    if (!is_unsigned) fail(pos, where(), "expected an unsigned integer, found " + found);
    Entry& e = entries.back();
    if (field_ == "shape") {
      if (e.shape.size() >= kMaxDims)
        fail(pos, where(), "expected at most " + u64s(kMaxDims) + " dimensions, found more");
      if (v > static_cast<uint64_t>(INT64_MAX))
        fail(pos, where() + "[" + u64s(e.shape.size()) + "]",
             "expected a dimension of at most " + u64s(INT64_MAX) + ", found " + u64s(v));
      e.shape.push_back(v);
    } else {
      if (e.offsets.size() >= 2) fail(pos, where(), "expected [begin, end] (two byte offsets), found more");
      e.offsets.push_back(v);
    }
    return true;
  }

  const std::string& path_;
  const uint64_t* count_;
  const std::string* header_ = nullptr;
  int depth_ = 0;
  bool in_meta_ = false;
  std::string key_;  // the current depth-1 key
  uint64_t key_at_ = 0;
  std::string field_;  // the current field of a tensor entry
  std::unordered_set<std::string> keys_, meta_keys_;
};

}  // namespace

Model parse_safetensors(BlobPtr file, const std::string& path) {
  if (!file) throw Error(path + ": no data");
  const uint8_t* data = file->data();
  const uint64_t size = file->size();
  auto fail = [&](uint64_t byte, const std::string& field, const std::string& what) {
    throw Error(path + ": byte " + u64s(byte) + ": " + field + ": " + what);
  };

  // ---- header length
  if (size < 8)
    fail(0, "header length",
         "expected 8 bytes (a little-endian u64), found " +
             (size ? u64s(size) : std::string("an empty file")) + " (the file is " + u64s(size) +
             " bytes; truncated, or not a safetensors file)");
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > kMaxHeaderBytes)
    fail(0, "header length",
         "expected at most " + u64s(kMaxHeaderBytes) +
             " bytes (the limit of the format's reference implementation), found " + u64s(n) +
             (n > size ? " (more than the whole file: corrupt, or not a safetensors file)" : ""));
  if (n > size - 8)
    fail(0, "header length",
         "expected at most the " + u64s(size - 8) + " bytes after it, found " + u64s(n) +
             " (the file ends at byte " + u64s(size) + "; truncated?)");
  if (n < 2) fail(0, "header length", "expected at least 2 bytes (a JSON object \"{}\"), found " + u64s(n));
  if (data[8] != '{') {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", data[8]);
    fail(8, "header", std::string("expected '{' (0x7b): the header is a JSON object, found ") + buf);
  }

  // ---- JSON
  const std::string header(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n));
  uint64_t consumed = 0;
  HeaderSax sax(path, &consumed);
  sax.set_header(&header);
  CountingIter first{header.data(), &consumed}, last{header.data() + header.size(), &consumed};
  Json::sax_parse(first, last, &sax);

  // ---- tensors: dtype, shape, byte size, offsets in range
  const uint64_t data_start = 8 + n;
  const uint64_t data_len = size - data_start;
  struct Laid {
    ElemType type;
    uint64_t begin, end;
  };
  std::vector<Laid> laid;
  laid.reserve(sax.entries.size());
  for (const Entry& e : sax.entries) {
    const std::string tf = "tensor '" + printable(e.name) + "'";
    auto type = elem_from_dtype(e.dtype);
    if (!type) {
      if (known_unsupported_dtype(e.dtype))
        fail(e.dtype_at, tf + ": dtype",
             "found " + e.dtype +
                 ", a safetensors dtype that qforge cannot hold (no element type of its IR); " +
                 "convert the tensor to one of " + dtype_list());
      fail(e.dtype_at, tf + ": dtype",
           "expected one of " + dtype_list() + ", found '" + printable(e.dtype) + "'");
    }
    uint64_t numel = 1;
    for (size_t j = 0; j < e.shape.size(); ++j) {
      const uint64_t d = e.shape[j];
      if (d != 0 && numel > static_cast<uint64_t>(INT64_MAX) / d)
        fail(e.shape_at, tf + ": shape",
             "expected an element count that fits 63 bits, found " + u64s(numel) + " × " + u64s(d) +
                 " at dimension " + u64s(j) + " (overflow)");
      numel *= d;
    }
    auto nb = byte_size(*type, numel);
    if (!nb)
      fail(e.shape_at, tf + ": shape",
           "expected a byte size that fits 64 bits, found " + u64s(numel) + " elements of " + e.dtype +
               " (overflow)");
    const uint64_t begin = e.offsets[0], end = e.offsets[1];
    if (end < begin)
      fail(e.offsets_at, tf + ": data_offsets",
           "expected [begin, end] with begin <= end, found [" + u64s(begin) + ", " + u64s(end) + "]");
    if (end - begin != *nb)
      fail(e.offsets_at, tf + ": data_offsets",
           "expected end - begin = " + u64s(*nb) + " bytes (" + u64s(numel) + " elements of " + e.dtype +
               "), found [" + u64s(begin) + ", " + u64s(end) + "], " + u64s(end - begin) + " bytes");
    if (end > data_len)
      fail(e.offsets_at, tf + ": data_offsets",
           "expected offsets inside the byte buffer (" + u64s(data_len) + " bytes, from byte " +
               u64s(data_start) + " to the end of the file at byte " + u64s(size) + "), found [" +
               u64s(begin) + ", " + u64s(end) + "] (truncated?)");
    laid.push_back({*type, begin, end});
  }

  // ---- the tensors tile the byte buffer: no overlap, no hole, nothing after
  std::vector<size_t> order(laid.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return laid[a].begin != laid[b].begin ? laid[a].begin < laid[b].begin : laid[a].end < laid[b].end;
  });
  uint64_t next = 0;
  size_t prev = SIZE_MAX;
  for (size_t k : order) {
    const Entry& e = sax.entries[k];
    const std::string tf = "tensor '" + printable(e.name) + "'";
    if (laid[k].begin < next)
      fail(e.offsets_at, tf + ": data_offsets",
           "expected data not overlapping another tensor's, found [" + u64s(laid[k].begin) + ", " +
               u64s(laid[k].end) + ") overlapping tensor '" + printable(sax.entries[prev].name) + "' at [" +
               u64s(laid[prev].begin) + ", " + u64s(laid[prev].end) + ")");
    if (laid[k].begin > next)
      fail(e.offsets_at, tf + ": data_offsets",
           "expected the tensor to begin at " + u64s(next) +
               (prev == SIZE_MAX ? std::string(" (the start of the data)")
                                 : " (where tensor '" + printable(sax.entries[prev].name) + "' ends)") +
               ", found " + u64s(laid[k].begin) + ": bytes [" + u64s(next) + ", " + u64s(laid[k].begin) +
               ") belong to no tensor, and the format does not allow holes");
    next = laid[k].end;
    prev = k;
  }
  if (next != data_len)
    fail(data_start + next, "byte buffer",
         "expected the tensors to cover the byte buffer up to the end of the file, found " +
             u64s(data_len - next) + " byte" + (data_len - next == 1 ? "" : "s") +
             " after the last tensor's data that belong to no tensor (the format does not allow them)");

  // ---- the model
  Model m;
  m.format = "safetensors";
  m.source = path;
  m.metadata = decode_metadata(sax.meta, path);
  m.tensors.reserve(sax.entries.size());
  for (size_t i = 0; i < sax.entries.size(); ++i) {
    Entry& e = sax.entries[i];
    Tensor t;
    t.name = std::move(e.name);
    t.type = laid[i].type;
    t.shape.reserve(e.shape.size());
    for (uint64_t d : e.shape) t.shape.push_back(static_cast<int64_t>(d));
    t.data = slice_blob(file, data_start + laid[i].begin, laid[i].end - laid[i].begin);
    m.tensors.push_back(std::move(t));
  }
  return m;
}

Model read_safetensors(const std::string& path) {
  std::shared_ptr<MappedFile> f = MappedFile::open(path);
  return parse_safetensors(f, path);
}

}  // namespace qforge::st
