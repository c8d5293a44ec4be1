#include "qforge/types.h"

#include <array>
#include <cctype>
#include <cstdio>

namespace qforge {
namespace {

using E = ElemType;
// type, name, block_size, type_size, ggml id, onnx id, quantized
constexpr ElemTraits kTable[] = {
    {E::F32, "f32", 1, 4, 0, 1, false},
    {E::F16, "f16", 1, 2, 1, 10, false},
    {E::BF16, "bf16", 1, 2, 30, 16, false},
    {E::F64, "f64", 1, 8, 28, 11, false},
    {E::I8, "i8", 1, 1, 24, 3, false},
    {E::U8, "u8", 1, 1, -1, 2, false},
    {E::I16, "i16", 1, 2, 25, 5, false},
    {E::U16, "u16", 1, 2, -1, 4, false},
    {E::I32, "i32", 1, 4, 26, 6, false},
    {E::U32, "u32", 1, 4, -1, 12, false},
    {E::I64, "i64", 1, 8, 27, 7, false},
    {E::U64, "u64", 1, 8, -1, 13, false},
    {E::Bool, "bool", 1, 1, -1, 9, false},
    {E::I4, "i4", 2, 1, -1, 22, false},
    {E::U4, "u4", 2, 1, -1, 21, false},
    {E::String, "string", 1, 0, -1, 8, false},
    {E::Complex64, "complex64", 1, 8, -1, 14, false},
    {E::Complex128, "complex128", 1, 16, -1, 15, false},
    {E::F8E4M3FN, "f8e4m3fn", 1, 1, -1, 17, false},
    {E::F8E4M3FNUZ, "f8e4m3fnuz", 1, 1, -1, 18, false},
    {E::F8E5M2, "f8e5m2", 1, 1, -1, 19, false},
    {E::F8E5M2FNUZ, "f8e5m2fnuz", 1, 1, -1, 20, false},
    {E::Q4_0, "q4_0", 32, 18, 2, -1, true},
    {E::Q4_1, "q4_1", 32, 20, 3, -1, true},
    {E::Q5_0, "q5_0", 32, 22, 6, -1, true},
    {E::Q5_1, "q5_1", 32, 24, 7, -1, true},
    {E::Q8_0, "q8_0", 32, 34, 8, -1, true},
    {E::Q8_1, "q8_1", 32, 36, 9, -1, true},
    {E::Q2_K, "q2_K", 256, 84, 10, -1, true},
    {E::Q3_K, "q3_K", 256, 110, 11, -1, true},
    {E::Q4_K, "q4_K", 256, 144, 12, -1, true},
    {E::Q5_K, "q5_K", 256, 176, 13, -1, true},
    {E::Q6_K, "q6_K", 256, 210, 14, -1, true},
    {E::Q8_K, "q8_K", 256, 292, 15, -1, true},
    {E::IQ2_XXS, "iq2_xxs", 256, 66, 16, -1, true},
    {E::IQ2_XS, "iq2_xs", 256, 74, 17, -1, true},
    {E::IQ3_XXS, "iq3_xxs", 256, 98, 18, -1, true},
    {E::IQ1_S, "iq1_s", 256, 50, 19, -1, true},
    {E::IQ4_NL, "iq4_nl", 32, 18, 20, -1, true},
    {E::IQ3_S, "iq3_s", 256, 110, 21, -1, true},
    {E::IQ2_S, "iq2_s", 256, 82, 22, -1, true},
    {E::IQ4_XS, "iq4_xs", 256, 136, 23, -1, true},
    {E::IQ1_M, "iq1_m", 256, 56, 29, -1, true},
    {E::TQ1_0, "tq1_0", 256, 54, 34, -1, true},
    {E::TQ2_0, "tq2_0", 256, 66, 35, -1, true},
    {E::MXFP4, "mxfp4", 32, 17, 39, -1, true},
};
static_assert(sizeof(kTable) / sizeof(kTable[0]) == static_cast<size_t>(E::Count_), "one row per ElemType");

constexpr bool table_in_order() {
  for (size_t i = 0; i < sizeof(kTable) / sizeof(kTable[0]); ++i)
    if (static_cast<size_t>(kTable[i].type) != i) return false;
  return true;
}
static_assert(table_in_order(), "rows in enum order");

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

const ElemTraits& traits(ElemType t) { return kTable[static_cast<size_t>(t)]; }

std::optional<ElemType> elem_from_ggml(int id) {
  for (const auto& r : kTable)
    if (r.ggml_id == id && id >= 0) return r.type;
  return std::nullopt;
}

std::optional<ElemType> elem_from_onnx(int id) {
  for (const auto& r : kTable)
    if (r.onnx_id == id && id >= 0) return r.type;
  return std::nullopt;
}

std::optional<ElemType> elem_from_name(std::string_view name) {
  for (const auto& r : kTable)
    if (iequal(r.name, name)) return r.type;
  return std::nullopt;
}

std::vector<ElemType> all_elem_types() {
  std::vector<ElemType> v;
  for (const auto& r : kTable) v.push_back(r.type);
  return v;
}

std::optional<uint64_t> byte_size(ElemType t, uint64_t n) {
  const auto& tr = traits(t);
  uint64_t blocks = n / tr.block_size + (n % tr.block_size ? 1 : 0);
  if (tr.type_size != 0 && blocks > UINT64_MAX / tr.type_size) return std::nullopt;
  return blocks * tr.type_size;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += shape[i] < 0 ? "?" : std::to_string(shape[i]);
  }
  return s + "]";
}

size_t utf8_error_at(const std::string& s) {
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

std::string printable(const std::string& s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace qforge
