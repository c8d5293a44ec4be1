// The built-in ONNX format plugin: registration, probe, options.
#include <cstring>

#include "onnx_format.h"
#include "qforge/plugin.h"
#include "qforge/registry.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    char c = s[s.size() - n + i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != suffix[i]) return false;
  }
  return true;
}

// Reads a varint at p[i]; false when it runs past n or exceeds 10 bytes.
bool read_varint(const uint8_t* p, size_t n, size_t& i, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && i < n; shift += 7) {
    uint8_t b = p[i++];
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

class OnnxFormat : public Format {
 public:
  std::string name() const override { return "onnx"; }
  std::string version() const override { return "1.0.0"; }
  std::string extension() const override { return ".onnx"; }
  std::string description() const override {
    return "ONNX ModelProto (.onnx), with external data in <model>.data";
  }
  int probe(const std::string& path, const uint8_t* head, size_t n) const override {
    return probe_onnx(path, head, n);
  }
  Status import_model(const std::string& path, Model& out) const override {
    return guard([&] { out = import_onnx(path); });
  }
  Status emit_model(const Model& model, const std::string& path, const Options& options) const override {
    return guard([&] { emit_onnx(model, path, emit_options_from(options)); });
  }
};

}  // namespace

int probe_onnx(const std::string& path, const uint8_t* head, size_t n) {
  const bool ext = ends_with(path, ".onnx");
  // A ModelProto written by any exporter starts with ir_version (field 1,
  // varint, small) followed by another known ModelProto field.
  bool plausible = false;
  if (n >= 2 && head[0] == 0x08) {
    size_t i = 1;
    uint64_t ir = 0;
    if (read_varint(head, n, i, ir) && ir >= 1 && ir <= 64) {
      if (i >= n) {
        plausible = true;
      } else {
        uint64_t tag = 0;
        if (read_varint(head, n, i, tag)) {
          const uint64_t field = tag >> 3, wire = tag & 7;
          plausible = (field >= 2 && field <= 8 && wire == (field == 5 ? 0u : 2u)) ||
                      (field == 14 && wire == 2) || (field == 20 && wire == 2) || (field == 25 && wire == 2);
        }
      }
    }
  }
  if (plausible) return ext ? 100 : 70;
  return ext ? 40 : 0;
}

EmitOptions emit_options_from(const Options& options) {
  EmitOptions o;
  for (const auto& kv : options) {
    if (kv.first != "external_data_threshold") continue;
    const Value& v = kv.second;
    if (v.is_null()) continue;
    if (v.kind != Value::Kind::Int || v.i < 0) {
      std::string where = v.loc.file.empty() ? ""
                                             : v.loc.file + ":" + std::to_string(v.loc.line) + ":" +
                                                   std::to_string(v.loc.column) + ": ";
      throw Error(where +
                  "emit option 'external_data_threshold' must be a non-negative byte "
                  "count (an integer), found " +
                  v.display());
    }
    o.external_data_threshold = static_cast<uint64_t>(v.i);
  }
  return o;
}

std::shared_ptr<const Format> make_onnx_format() { return std::make_shared<OnnxFormat>(); }

void register_onnx(Registry& registry) { registry.add_format(make_onnx_format()); }

}  // namespace qforge::onnxfmt

namespace {
void register_onnx_plugin(qforge::Registry& r) { qforge::onnxfmt::register_onnx(r); }
}  // namespace

QFORGE_BUILTIN_PLUGIN(onnx, "onnx", "1.0.0", register_onnx_plugin)
