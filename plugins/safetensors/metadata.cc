// The metadata rule (README.md, "Metadata"): safetensors' __metadata__ holds
// only strings, so a non-string value is written as text and its GGUF type is
// recorded in one extra entry, kTypesKey, a JSON object {key: type}. Reading
// such a file gives the typed values back; a file without kTypesKey gives
// strings.
//
// Text of a value: integers in decimal, bools as true/false, floats as the
// shortest decimal that reads back to the same value (std::to_chars; nan, -nan, inf,
// -inf), arrays as a JSON array of those (non-finite floats and strings as JSON
// strings). Types are GGUF's names (u8 ... f64, bool, string) and array[T].
#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "qforge/status.h"
#include "safetensors.h"

namespace qforge::st {
namespace {

using Json = nlohmann::json;

const char* type_name(MetaType t) { return name_of(t); }  // qforge/model.h

std::optional<MetaType> type_from_name(const std::string& s) {
  for (int i = 0; i <= static_cast<int>(MetaType::F64); ++i)
    if (s == type_name(static_cast<MetaType>(i))) return static_cast<MetaType>(i);
  return std::nullopt;
}

bool is_float(MetaType t) { return t == MetaType::F32 || t == MetaType::F64; }
bool is_signed(MetaType t) {
  return t == MetaType::I8 || t == MetaType::I16 || t == MetaType::I32 || t == MetaType::I64;
}
bool is_unsigned(MetaType t) {
  return t == MetaType::U8 || t == MetaType::U16 || t == MetaType::U32 || t == MetaType::U64;
}

std::string float_text(double v, bool f32) {
  if (std::isnan(v)) return std::signbit(v) ? "-nan" : "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = f32 ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
               : std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// ---------------------------------------------------------------- encode
struct Encoder {
  const std::string& key;

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error("metadata '" + printable(key) + "'" + where + ": " + what);
  }

  std::string scalar(const MetaValue& v, bool in_array, const std::string& where) const {
    switch (v.type) {
      case MetaType::U8:
      case MetaType::U16:
      case MetaType::U32:
      case MetaType::U64: return std::to_string(v.u);
      case MetaType::I8:
      case MetaType::I16:
      case MetaType::I32:
      case MetaType::I64: return std::to_string(v.i);
      case MetaType::Bool: return v.u ? "true" : "false";
      case MetaType::F32:
      case MetaType::F64: {
        std::string t = float_text(v.f, v.type == MetaType::F32);
        return in_array && !std::isfinite(v.f) ? "\"" + t + "\"" : t;
      }
      case MetaType::String: {
        size_t bad = utf8_error_at(v.s);
        if (bad != std::string::npos) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", static_cast<unsigned char>(v.s[bad]));
          fail(where, "expected UTF-8 text (a safetensors header is JSON), found the byte " +
                          std::string(buf) + " at position " + std::to_string(bad) + " of '" +
                          printable(v.s) + "'; drop this key or emit GGUF");
        }
        return in_array ? json_quote(v.s) : v.s;
      }
      case MetaType::Array: return array(v, where, 1);
    }
    fail(where, "unknown metadata type " + std::to_string(static_cast<int>(v.type)));
  }

  std::string array(const MetaValue& v, const std::string& where, size_t depth) const {
    if (depth > kMaxArrayDepth)
      fail(where, "expected arrays nested at most " + std::to_string(kMaxArrayDepth) +
                      " levels deep, found a deeper one");
    std::string s = "[";
    for (size_t k = 0; k < v.array.size(); ++k) {
      const MetaValue& e = v.array[k];
      const std::string w = where + "[" + std::to_string(k) + "]";
      if (e.type != v.elem)
        fail(w, std::string("expected an element of type ") + type_name(v.elem) + " (the array's), found " +
                    type_name(e.type));
      if (k) s += ',';
      s += e.type == MetaType::Array ? array(e, w, depth + 1) : scalar(e, true, w);
    }
    return s + "]";
  }

  // "u32", "array[string]", "array[array[u8]]"; nested arrays must agree.
  std::string spec(const MetaValue& v, const std::string& where) const {
    if (v.type != MetaType::Array) return type_name(v.type);
    if (v.elem != MetaType::Array) return std::string("array[") + type_name(v.elem) + "]";
    if (v.array.empty()) return "array[array]";
    std::string inner;
    for (size_t k = 0; k < v.array.size(); ++k) {
      std::string s = spec(v.array[k], where + "[" + std::to_string(k) + "]");
      if (k && s != inner)
        fail(where, "expected nested arrays of one type (" + inner + "), found " + s + " at index " +
                        std::to_string(k) +
                        "; safetensors' metadata records one type per key: drop this key or emit GGUF");
      inner = s;
    }
    return "array[" + inner + "]";
  }
};

// ---------------------------------------------------------------- decode
struct Where {
  const std::string& path;
  const RawMeta& raw;
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path + ": byte " + std::to_string(raw.value_at) + ": __metadata__ '" + printable(raw.key) +
                "': " + what);
  }
};

// A scalar of type `t` from its text. Returns false when the text does not parse.
bool scalar_from_text(MetaType t, const std::string& s, MetaValue& out, std::string& why) {
  out = MetaValue();
  out.type = t;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (t == MetaType::Bool) {
    if (s != "true" && s != "false") return why = "expected true or false", false;
    out.u = s == "true";
    return true;
  }
  if (is_float(t)) {
    std::from_chars_result r;
    if (t == MetaType::F32) {
      float f = 0;
      r = std::from_chars(b, e, f);
      out.f = f;
    } else {
      r = std::from_chars(b, e, out.f);
    }
    if (r.ec == std::errc::result_out_of_range)
      return why = std::string("out of range for ") + type_name(t), false;
    if (r.ec != std::errc() || r.ptr != e) return why = "expected a number (or nan, inf, -inf)", false;
    // Text keeps a NaN's sign, not its payload ("nan(123)"): every NaN read is the quiet one.
    if (std::isnan(out.f))
      out.f = t == MetaType::F32 ? static_cast<double>(std::copysign(std::numeric_limits<float>::quiet_NaN(),
                                                                     static_cast<float>(out.f)))
                                 : std::copysign(std::numeric_limits<double>::quiet_NaN(), out.f);
    return true;
  }
  if (is_unsigned(t)) {
    uint64_t v = 0;
    auto r = std::from_chars(b, e, v);
    if (r.ec != std::errc() || r.ptr != e || s.empty()) return why = "expected an unsigned integer", false;
    const uint64_t max = t == MetaType::U8    ? UINT8_MAX
                         : t == MetaType::U16 ? UINT16_MAX
                         : t == MetaType::U32 ? UINT32_MAX
                                              : UINT64_MAX;
    if (v > max) return why = std::string("out of range for ") + type_name(t), false;
    out.u = v;
    return true;
  }
  if (is_signed(t)) {
    int64_t v = 0;
    auto r = std::from_chars(b, e, v);
    if (r.ec != std::errc() || r.ptr != e || s.empty()) return why = "expected an integer", false;
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    if (t == MetaType::I8) lo = INT8_MIN, hi = INT8_MAX;
    if (t == MetaType::I16) lo = INT16_MIN, hi = INT16_MAX;
    if (t == MetaType::I32) lo = INT32_MIN, hi = INT32_MAX;
    if (v < lo || v > hi) return why = std::string("out of range for ") + type_name(t), false;
    out.i = v;
    return true;
  }
  out.s = s;  // String
  return true;
}

// Builds an array MetaValue from the JSON text of a value, following the type
// chain (chain[0] == Array, chain[k] the element type at depth k).
class ArraySax : public nlohmann::json_sax<Json> {
 public:
  ArraySax(const std::vector<MetaType>& chain, const Where& where) : chain_(chain), where_(where) {}
  MetaValue result;

  bool null() override { return bad("null"); }
  bool boolean(bool v) override { return add(v ? "true" : "false", false); }
  bool number_integer(number_integer_t v) override { return add(std::to_string(v), false); }
  bool number_unsigned(number_unsigned_t v) override { return add(std::to_string(v), false); }
  bool number_float(number_float_t, const string_t& text) override { return add(text, false); }
  bool string(string_t& v) override { return add(v, true); }
  bool binary(binary_t&) override { return bad("binary data"); }
  bool start_object(std::size_t) override { return bad("an object"); }
  bool key(string_t&) override { return bad("an object"); }
  bool end_object() override { return bad("an object"); }
  bool start_array(std::size_t) override {
    const size_t d = stack_.size();
    if (d >= chain_.size() || chain_[d] != MetaType::Array)
      where_.fail("expected " + expected(d) + " at array depth " + std::to_string(d) + ", found an array");
    if (d + 1 >= chain_.size())
      where_.fail(
          "the type array[array] gives no element type for non-empty inner arrays; expected empty ones");
    MetaValue v;
    v.type = MetaType::Array;
    v.elem = chain_[d + 1];
    stack_.push_back(std::move(v));
    return true;
  }
  bool end_array() override {
    MetaValue v = std::move(stack_.back());
    stack_.pop_back();
    if (stack_.empty())
      result = std::move(v);
    else
      stack_.back().array.push_back(std::move(v));
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    where_.fail("expected a JSON array (the value of a key typed array[...] in " + std::string(kTypesKey) +
                "), found invalid JSON at character " + std::to_string(position) + ": " + ex.what());
  }

 private:
  std::string expected(size_t d) const {
    return d < chain_.size()
               ? (chain_[d] == MetaType::Array ? "an array" : std::string("a ") + type_name(chain_[d]))
               : "nothing";
  }
  bool bad(const std::string& found) {
    where_.fail("expected " + expected(stack_.size()) + " inside the array, found " + found);
  }
  bool add(const std::string& text, bool quoted) {
    const size_t d = stack_.size();
    if (d == 0) where_.fail("expected a JSON array, found a scalar");
    const MetaType t = chain_[d];
    const std::string at =
        " at index " + std::to_string(stack_.back().array.size()) + " of depth " + std::to_string(d - 1);
    if (t == MetaType::Array)
      where_.fail("expected an array" + at + ", found " + (quoted ? "a string" : text));
    if (quoted && t != MetaType::String &&
        !(is_float(t) && (text == "nan" || text == "-nan" || text == "inf" || text == "-inf")))
      where_.fail(std::string("expected a ") + type_name(t) + at + ", found the string " + json_quote(text));
    if (!quoted && t == MetaType::String) where_.fail("expected a string" + at + ", found " + text);
    MetaValue v;
    std::string why;
    if (!scalar_from_text(t, text, v, why)) where_.fail(why + at + ", found " + text);
    stack_.back().array.push_back(std::move(v));
    return true;
  }

  const std::vector<MetaType>& chain_;
  const Where& where_;
  std::vector<MetaValue> stack_;
};

}  // namespace

std::vector<std::pair<std::string, std::string>> encode_metadata(const Metadata& metadata) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string types;
  for (const auto& [key, v] : metadata) {
    Encoder enc{key};
    if (key == kTypesKey)
      enc.fail(
          "", std::string("is reserved: the safetensors plugin writes the types of non-string metadata under "
                          "this key; rename or drop it"));
    size_t bad = utf8_error_at(key);
    if (bad != std::string::npos)
      enc.fail("", "expected a UTF-8 key (a safetensors header is JSON), found invalid UTF-8 at byte " +
                       std::to_string(bad));
    if (v.type == MetaType::String) {
      out.emplace_back(key, enc.scalar(v, false, ""));
      continue;
    }
    const std::string spec = enc.spec(v, "");
    out.emplace_back(key, enc.scalar(v, false, ""));
    types += (types.empty() ? "" : ",") + json_quote(key) + ":" + json_quote(spec);
  }
  if (!types.empty()) out.emplace_back(kTypesKey, "{" + types + "}");
  return out;
}

Metadata decode_metadata(const std::vector<RawMeta>& raw, const std::string& path) {
  std::unordered_map<std::string, size_t> index;
  const RawMeta* types_entry = nullptr;
  for (size_t i = 0; i < raw.size(); ++i) {
    index[raw[i].key] = i;
    if (raw[i].key == kTypesKey) types_entry = &raw[i];
  }
  std::vector<std::vector<MetaType>> chains(raw.size());
  if (types_entry) {
    Where w{path, *types_entry};
    Json types;
    try {
      types = Json::parse(types_entry->value);
    } catch (const std::exception& e) {
      w.fail(
          std::string("expected a JSON object {key: type} (qforge's record of metadata types), found invalid "
                      "JSON: ") +
          e.what());
    }
    if (!types.is_object())
      w.fail("expected a JSON object {key: type} (qforge's record of metadata types), found " +
             std::string(types.type_name()));
    for (const auto& [key, spec] : types.items()) {
      auto it = index.find(key);
      if (it == index.end() || key == kTypesKey)
        w.fail("names '" + printable(key) + "', which is not a key of __metadata__");
      if (!spec.is_string())
        w.fail("'" + printable(key) + "': expected a type name (a string), found " + spec.dump());
      // "array[array[u8]]" -> {Array, Array, U8}; "array[array]" -> {Array, Array}
      std::string s = spec.get<std::string>();
      std::vector<MetaType> chain;
      size_t b = 0, e = s.size();  // s[b, e) is what is left to read
      while (e - b > 7 && s.compare(b, 6, "array[") == 0 && s[e - 1] == ']') {
        if (chain.size() == kMaxArrayDepth)
          w.fail("'" + printable(key) + "': expected arrays nested at most " +
                 std::to_string(kMaxArrayDepth) + " levels deep, found a deeper type");
        chain.push_back(MetaType::Array);
        b += 6;
        e -= 1;
      }
      s = s.substr(b, e - b);
      auto t = type_from_name(s);
      if (!t || (*t == MetaType::Array && chain.empty()))
        w.fail("'" + printable(key) +
               "': expected a type (u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, bool, string or "
               "array[type]), "
               "found " +
               json_quote(spec.get<std::string>()));
      chain.push_back(*t);
      chains[it->second] = std::move(chain);
    }
  }

  Metadata out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const RawMeta& r = raw[i];
    if (&r == types_entry) continue;
    const std::vector<MetaType>& chain = chains[i];
    if (chain.empty() || chain[0] == MetaType::String) {
      out.emplace_back(r.key, MetaValue::of_string(r.value));
      continue;
    }
    Where w{path, r};
    MetaValue v;
    if (chain[0] != MetaType::Array) {
      std::string why;
      if (!scalar_from_text(chain[0], r.value, v, why))
        w.fail(why + " (its type in " + std::string(kTypesKey) + " is " + type_name(chain[0]) + "), found '" +
               printable(r.value) + "'");
    } else {
      ArraySax sax(chain, w);
      Json::sax_parse(r.value, &sax);
      v = std::move(sax.result);
    }
    out.emplace_back(r.key, std::move(v));
  }
  return out;
}

}  // namespace qforge::st
