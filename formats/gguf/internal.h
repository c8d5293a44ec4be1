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

using qforge::utf8_error_at;  // qforge/types.h

}  // namespace qforge::gguf_detail
