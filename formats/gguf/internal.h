// Helpers shared by the GGUF reader and writer (not part of the plugin's API).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "qforge/model.h"

namespace qforge::gguf_detail {

// GGUF's spelling of a value type id ("u8" ... "f64"), "unknown" past 12.
inline const char* value_type_name(uint64_t t) {
  static const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  return t < 13 ? names[t] : "unknown";
}
inline const char* value_type_name(MetaType t) { return value_type_name(static_cast<uint64_t>(t)); }

// Index of the first byte of `s` that breaks UTF-8 (overlong forms, surrogates and
// code points past U+10FFFF included), or std::string::npos when it is valid.
inline size_t utf8_error_at(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
      return i;
    i += len;
  }
  return std::string::npos;
}

}  // namespace qforge::gguf_detail
