// The safetensors Format: dtype table, shared helpers, probe, and the guarded
// entry points (no exception leaves the library).
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "qforge/status.h"
#include "safetensors.h"

namespace qforge::st {
namespace {

struct Dtype {
  const char* name;
  ElemType type;
};
// safetensors' dtypes that qforge's IR holds (F8_E4M3 is the "fn" variant: no
// infinities, like torch.float8_e4m3fn).
const Dtype kDtypes[] = {
    {"F64", ElemType::F64},
    {"F32", ElemType::F32},
    {"F16", ElemType::F16},
    {"BF16", ElemType::BF16},
    {"I64", ElemType::I64},
    {"I32", ElemType::I32},
    {"I16", ElemType::I16},
    {"I8", ElemType::I8},
    {"U64", ElemType::U64},
    {"U32", ElemType::U32},
    {"U16", ElemType::U16},
    {"U8", ElemType::U8},
    {"BOOL", ElemType::Bool},
    {"F8_E4M3", ElemType::F8E4M3FN},
    {"F8_E5M2", ElemType::F8E5M2},
    {"F8_E4M3FNUZ", ElemType::F8E4M3FNUZ},
    {"F8_E5M2FNUZ", ElemType::F8E5M2FNUZ},
    {"C64", ElemType::Complex64},
};
// Defined by the format, without an IR element type.
const char* kUnsupported[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0"};

}  // namespace

const char* dtype_name(ElemType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  return nullptr;
}

std::optional<ElemType> elem_from_dtype(std::string_view name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  return std::nullopt;
}

bool known_unsupported_dtype(std::string_view name) {
  for (const char* u : kUnsupported)
    if (name == u) return true;
  return false;
}

std::string dtype_list() {
  std::string s;
  for (const auto& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

std::string json_quote(const std::string& s) {
  std::string o;
  o.reserve(s.size() + 2);
  o += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  o += '"';
  return o;
}

int SafetensorsFormat::probe(const std::string& path, const uint8_t* head, size_t n) const {
  try {
    return probe_bytes(path, head, n);
  } catch (...) {  // nothing leaves the plugin
    return 0;
  }
}

int SafetensorsFormat::probe_bytes(const std::string& path, const uint8_t* head, size_t n) const {
  const bool ext = path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
  bool plausible = false;
  if (n >= 10) {
    uint64_t len = 0;
    std::memcpy(&len, head, 8);  // little-endian host (checked in reader.cc)
    struct stat st {};
    const bool fits =
        ::stat(path.c_str(), &st) == 0 && st.st_size >= 8 && len <= static_cast<uint64_t>(st.st_size) - 8;
    // A JSON object starts with '{' and is at least "{}".
    plausible = len >= 2 && len <= kMaxHeaderBytes && fits && head[8] == '{';
    // `{` followed by a key or the closing brace (after optional whitespace).
    if (plausible) {
      size_t i = 9;
      while (i < n && i < 8 + len &&
             (head[i] == ' ' || head[i] == '\n' || head[i] == '\r' || head[i] == '\t'))
        ++i;
      plausible = i >= n || i >= 8 + len || head[i] == '"' || head[i] == '}';
    }
  }
  // An implausible file named .safetensors is still ours: import explains why.
  if (plausible) return ext ? 100 : 90;
  return ext ? 40 : 0;
}

Status SafetensorsFormat::import_model(const std::string& path, Model& out) const {
  return guard([&] { out = read_safetensors(path); });
}

Status SafetensorsFormat::emit_model(const Model& model, const std::string& path,
                                     const Options& options) const {
  return guard([&] {
    for (const auto& [key, value] : options)
      if (!value.is_null())
        throw Error(path + ": safetensors emit option '" + key +
                    "': the safetensors format takes no options");
    write_safetensors(model, path);
  });
}

}  // namespace qforge::st
