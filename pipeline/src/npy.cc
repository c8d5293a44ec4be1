// NumPy .npy reader (format versions 1.0, 2.0 and 3.0).
//
// Layout: the magic "\x93NUMPY", a major and a minor version byte, the header
// length (u16 little-endian for 1.0, u32 for 2.0/3.0), the header (a Python
// literal dict such as "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
// padded with spaces and ended by '\n'; latin-1 for 1.0/2.0, UTF-8 for 3.0),
// then the array data. numpy reads the header with ast.literal_eval; we accept
// the subset any numpy writes (either quote style, any whitespace, trailing
// commas, Python 2 "3L" integers) and refuse the rest with the offending byte.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string_view>

#include "npy_internal.h"
#include "qforge/dataset.h"
#include "qforge/status.h"

namespace qforge {
namespace detail {

std::string printable(std::string_view s, size_t max_chars) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

BlobPtr aligned_blob(BlobPtr blob, uint32_t align) {
  if (align <= 1 || !blob || blob->size() == 0) return blob;
  if (reinterpret_cast<uintptr_t>(blob->data()) % align == 0) return blob;
  return make_blob(blob->data(), blob->size());  // vector storage: new[]-aligned
}

}  // namespace detail

namespace {

using detail::printable;

constexpr uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] void fail(const std::string& source, uint64_t offset, const std::string& msg) {
  throw Error(fmt::format("{}: byte {}: {}", source, offset, msg));
}

// ---------------------------------------------------------------- header dict
struct Value {
  enum Kind { Str, Bool, Tuple, List } kind = Str;
  std::string str;
  bool b = false;
  std::vector<int64_t> ints;
  uint64_t offset = 0;  // file offset of the value, for errors
};

class HeaderParser {
 public:
  HeaderParser(std::string_view text, uint64_t base, const std::string& source)
      : s_(text), base_(base), source_(source) {}

  // Parses the whole header: a dict, then only whitespace.
  std::vector<std::pair<std::string, Value>> parse() {
    std::vector<std::pair<std::string, Value>> entries;
    skip_ws();
    expect('{', "the header dict to start with '{'");
    skip_ws();
    while (peek() != '}') {
      if (peek() != '\'' && peek() != '"') error("a quoted key or '}'");
      uint64_t key_at = here();
      std::string key = parse_string();
      for (const auto& e : entries)
        if (e.first == key) fail(source_, key_at, fmt::format("duplicate header key '{}'", key));
      skip_ws();
      expect(':', "':' after the key");
      skip_ws();
      if (key == "descr" && peek() == '[')
        fail(source_, here(),
             "'descr' is a list: structured dtypes are not supported; save "
             "each field as its own array");
      Value v = parse_value();
      entries.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      } else if (peek() != '}') {
        error("',' or '}' after a dict value");
      }
    }
    ++pos_;  // '}'
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c != ' ' && c != '\n' && c != '\t' && c != '\r')
        error("only padding (spaces and '\\n') after the header dict");
      ++pos_;
    }
    return entries;
  }

 private:
  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }
  uint64_t here() const { return base_ + pos_; }

  [[noreturn]] void error(const std::string& expected) const {
    std::string found =
        pos_ < s_.size() ? "'" + printable(s_.substr(pos_), 16) + "'" : std::string("the end of the header");
    fail(source_, here(), fmt::format("malformed .npy header: expected {}, found {}", expected, found));
  }

  void expect(char c, const char* what) {
    if (peek() != static_cast<unsigned char>(c)) error(what);
    ++pos_;
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  std::string parse_string() {
    char q = s_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= s_.size() || s_[pos_] == '\n') error(fmt::format("a closing {} quote", q));
      char c = s_[pos_];
      if (c == '\\') error("a string without escape sequences");
      ++pos_;
      if (c == q) break;
      out += c;
    }
    return out;
  }

  bool word(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return false;
    size_t end = pos_ + w.size();
    if (end < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[end])) || s_[end] == '_'))
      return false;
    pos_ = end;
    return true;
  }

  int64_t parse_int() {
    uint64_t at = here();
    if (peek() == '-') fail(source_, at, "negative dimension in 'shape'");
    if (peek() < '0' || peek() > '9') error("a dimension (a non-negative integer)");
    uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      uint64_t d = static_cast<uint64_t>(peek() - '0');
      if (v > (static_cast<uint64_t>(INT64_MAX) - d) / 10)
        fail(source_, at, "dimension in 'shape' does not fit in 64 bits");
      v = v * 10 + d;
      ++pos_;
    }
    if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 long
    return static_cast<int64_t>(v);
  }

  Value parse_value() {
    Value v;
    v.offset = here();
    int c = peek();
    if (c == '\'' || c == '"') {
      v.kind = Value::Str;
      v.str = parse_string();
    } else if (word("True")) {
      v.kind = Value::Bool;
      v.b = true;
    } else if (word("False")) {
      v.kind = Value::Bool;
      v.b = false;
    } else if (c == '(' || c == '[') {
      // Tuples (and lists) of integers: 'shape'.
      char close = c == '(' ? ')' : ']';
      v.kind = c == '(' ? Value::Tuple : Value::List;
      ++pos_;
      skip_ws();
      bool had_comma = false;
      while (peek() != close) {
        v.ints.push_back(parse_int());
        skip_ws();
        had_comma = false;
        if (peek() == ',') {
          ++pos_;
          had_comma = true;
          skip_ws();
        } else if (peek() != close) {
          error(fmt::format("',' or '{}' in a tuple", close));
        }
      }
      ++pos_;
      // "(5)" is the integer 5 in Python, not a tuple: numpy refuses it too.
      if (v.kind == Value::Tuple && v.ints.size() == 1 && !had_comma)
        fail(source_, v.offset,
             fmt::format("'shape' ({0}) is not a tuple in Python; a 1-d shape is written ({0},)", v.ints[0]));
    } else {
      error("a value (a string, True, False or a tuple)");
    }
    return v;
  }

  std::string_view s_;
  size_t pos_ = 0;
  uint64_t base_;
  const std::string& source_;
};

// ---------------------------------------------------------------- dtype
struct DescrEntry {
  const char* code;  // kind + itemsize, without the byte order
  ElemType type;
  const char* numpy;  // numpy's name, for messages
};

constexpr DescrEntry kDescrs[] = {
    {"f2", ElemType::F16, "float16"},
    {"f4", ElemType::F32, "float32"},
    {"f8", ElemType::F64, "float64"},
    {"i1", ElemType::I8, "int8"},
    {"u1", ElemType::U8, "uint8"},
    {"i2", ElemType::I16, "int16"},
    {"u2", ElemType::U16, "uint16"},
    {"i4", ElemType::I32, "int32"},
    {"u4", ElemType::U32, "uint32"},
    {"i8", ElemType::I64, "int64"},
    {"u8", ElemType::U64, "uint64"},
    {"b1", ElemType::Bool, "bool"},
    {"c8", ElemType::Complex64, "complex64"},
    {"c16", ElemType::Complex128, "complex128"},
};

ElemType parse_descr(const std::string& d, uint64_t at, const std::string& source) {
  const std::string shown = "'" + printable(d, 40) + "'";
  if (d.empty()) fail(source, at, "'descr' is empty; expected a dtype such as '<f4'");
  char order = d[0];
  std::string code = d.substr(1);
  if (order != '<' && order != '>' && order != '|' && order != '=') {
    fail(source, at,
         fmt::format("'descr' {} has no byte-order character; expected a dtype such as "
                     "'<f4', '|u1' or '|b1'",
                     shown));
  }
  char kind = code.empty() ? '\0' : code[0];
  if (kind == 'O')
    fail(source, at,
         "'descr' 'O': object arrays (pickled Python objects) are not supported; "
         "save a numeric array");
  if (kind == 'U' || kind == 'S' || kind == 'a')
    fail(source, at, fmt::format("'descr' {}: string arrays are not supported; save a numeric array", shown));
  if (kind == 'V')
    fail(source, at, fmt::format("'descr' {}: void/structured arrays are not supported", shown));
  if (kind == 'M' || kind == 'm')
    fail(source, at,
         fmt::format("'descr' {}: datetime/timedelta arrays are not supported; save "
                     "them as int64",
                     shown));
  const DescrEntry* entry = nullptr;
  for (const auto& e : kDescrs)
    if (code == e.code) entry = &e;
  if (!entry)
    fail(source, at,
         fmt::format("unsupported dtype {} (qforge reads float16/32/64, int8..int64, "
                     "uint8..uint64, bool, complex64/128)",
                     shown));
  bool one_byte = traits(entry->type).type_size == 1;
  if (one_byte) return entry->type;  // byte order is irrelevant
  if (order == '>')
    fail(source, at,
         fmt::format("'descr' {} is big-endian; qforge reads little-endian data: save "
                     "with arr.astype(np.{})",
                     shown, entry->numpy));
  if (order != '<')
    fail(source, at,
         fmt::format("'descr' {}: a {}-byte dtype needs an explicit byte order ('<')", shown,
                     traits(entry->type).type_size));
  return entry->type;
}

}  // namespace

Array read_npy_bytes(BlobPtr bytes, const std::string& source) {
  const uint8_t* p = bytes ? bytes->data() : nullptr;
  const uint64_t n = bytes ? bytes->size() : 0;
  if (n < 8 || std::memcmp(p, kMagic, 6) != 0) {
    std::string found = printable(std::string_view(reinterpret_cast<const char*>(p), n < 8 ? n : 8), 40);
    fail(source, 0,
         fmt::format("not a .npy file: expected the magic \\x93NUMPY, found '{}'{}", found,
                     n < 8 ? fmt::format(" ({} bytes in all)", n) : ""));
  }
  const int major = p[6], minor = p[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    fail(source, 6,
         fmt::format("unsupported .npy format version {}.{} (qforge reads 1.0, 2.0 and 3.0)", major, minor));
  uint64_t header_len = 0, header_at = 0;
  if (major == 1) {
    if (n < 10)
      fail(source, 8, fmt::format("truncated: the header length needs 2 bytes, the file has {} bytes", n));
    header_len = static_cast<uint64_t>(p[8]) | static_cast<uint64_t>(p[9]) << 8;
    header_at = 10;
  } else {
    if (n < 12)
      fail(source, 8, fmt::format("truncated: the header length needs 4 bytes, the file has {} bytes", n));
    header_len = static_cast<uint64_t>(p[8]) | static_cast<uint64_t>(p[9]) << 8 |
                 static_cast<uint64_t>(p[10]) << 16 | static_cast<uint64_t>(p[11]) << 24;
    header_at = 12;
  }
  if (header_len > n - header_at)
    fail(source, 8,
         fmt::format("header length {} runs past the end of the file ({} bytes after "
                     "byte {}): truncated or corrupt",
                     header_len, n - header_at, header_at));

  std::string_view text(reinterpret_cast<const char*>(p + header_at), header_len);
  auto entries = HeaderParser(text, header_at, source).parse();

  const Value* descr = nullptr;
  const Value* fortran = nullptr;
  const Value* shape = nullptr;
  for (const auto& [key, v] : entries) {
    if (key == "descr")
      descr = &v;
    else if (key == "fortran_order")
      fortran = &v;
    else if (key == "shape")
      shape = &v;
    else
      fail(source, v.offset,
           fmt::format("unexpected header key '{}' (expected exactly 'descr', "
                       "'fortran_order' and 'shape')",
                       printable(key, 40)));
  }
  if (!descr || !fortran || !shape)
    fail(source, header_at,
         fmt::format("header lacks the key '{}'", !descr     ? "descr"
                                                  : !fortran ? "fortran_order"
                                                             : "shape"));
  if (descr->kind != Value::Str) fail(source, descr->offset, "'descr' must be a string such as '<f4'");
  if (fortran->kind != Value::Bool) fail(source, fortran->offset, "'fortran_order' must be True or False");
  if (shape->kind != Value::Tuple) fail(source, shape->offset, "'shape' must be a tuple of integers");

  Array a;
  a.source = source;
  a.type = parse_descr(descr->str, descr->offset, source);
  a.shape = shape->ints;
  if (fortran->b) {
    bool trivially = a.shape.size() <= 1;
    if (!trivially)
      fail(source, fortran->offset, "fortran_order is True; save with np.ascontiguousarray(arr)");
  }

  const bool empty = std::find(a.shape.begin(), a.shape.end(), 0) != a.shape.end();
  uint64_t numel = empty ? 0 : 1;
  for (int64_t d : a.shape) {
    uint64_t ud = static_cast<uint64_t>(d);
    if (!empty && numel > UINT64_MAX / ud)
      fail(source, shape->offset,
           fmt::format("shape {} has more elements than fit in 64 bits", shape_str(a.shape)));
    numel *= ud;
  }
  auto nbytes = byte_size(a.type, numel);
  if (!nbytes)
    fail(
        source, shape->offset,
        fmt::format("shape {} of {} is more bytes than fit in 64 bits", shape_str(a.shape), name_of(a.type)));
  const uint64_t data_at = header_at + header_len;
  const uint64_t have = n - data_at;
  if (have != *nbytes) {
    fail(source, data_at,
         fmt::format("{}: shape {} of {} needs {} data bytes, the file has {}",
                     have < *nbytes ? "truncated" : "trailing bytes", shape_str(a.shape), name_of(a.type),
                     *nbytes, have));
  }
  a.data = detail::aligned_blob(slice_blob(bytes, data_at, *nbytes), traits(a.type).type_size);
  return a;
}

Array read_npy(const std::string& path) { return read_npy_bytes(MappedFile::open(path), path); }

}  // namespace qforge
