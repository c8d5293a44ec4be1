// safetensors writer: validates the whole model and lays out the header first
// (deterministic: tensors in model order, keys dtype/shape/data_offsets in that
// order, no whitespace, padded with spaces so that the data starts at a multiple
// of 8 bytes, as the reference implementation writes), then streams tensor data
// one tensor at a time through AtomicFile.
#include <string>
#include <unordered_set>
#include <vector>

#include "qforge/atomic_file.h"
#include "qforge/status.h"
#include "safetensors.h"

namespace qforge::st {
namespace {

std::string u64s(uint64_t v) { return std::to_string(v); }

[[noreturn]] void fail(const std::string& path, const std::string& field, const std::string& what) {
  throw Error(path + ": cannot write safetensors: " + field + ": " + what);
}

std::string what_to_do(ElemType t) {
  const ElemTraits& tr = traits(t);
  if (tr.quantized)
    return std::string(
               "it is a ggml block encoding, which safetensors cannot hold; emit this target as GGUF ") +
           "(emit = \"gguf\"), or quantize to a type safetensors has (f32, f16, bf16; quantize-gguf type = "
           "\"F16\")";
  return "safetensors has no dtype for it (it holds " + dtype_list() + "); convert the tensor first";
}

}  // namespace

void write_safetensors(const Model& model, const std::string& path) {
  if (model.graph)
    fail(path, "model",
         "expected a table of tensors, found a model with a graph (" +
             (model.format.empty() ? std::string() : model.format + ", ") + "from " + model.source +
             "); safetensors holds tensors only, so writing it would drop the graph: emit it in its own "
             "format");
  // ---- metadata
  std::vector<std::pair<std::string, std::string>> meta;
  try {
    meta = encode_metadata(model.metadata);
  } catch (const Error& e) {
    throw Error(path + ": cannot write safetensors: " + e.what());
  }

  // ---- header, offsets laid out up front
  std::string h = "{";
  if (!meta.empty()) {
    h += "\"__metadata__\":{";
    for (size_t i = 0; i < meta.size(); ++i)
      h += (i ? "," : "") + json_quote(meta[i].first) + ":" + json_quote(meta[i].second);
    h += "}";
  }
  std::unordered_set<std::string> names;
  std::vector<uint64_t> sizes;
  sizes.reserve(model.tensors.size());
  uint64_t offset = 0;
  for (const Tensor& t : model.tensors) {
    const std::string tf = "tensor '" + printable(t.name) + "'";
    if (t.name.empty()) fail(path, "tensor", "expected non-empty names, found an empty one");
    if (t.name == "__metadata__")
      fail(path, tf, "expected a name other than __metadata__ (the format reserves it); rename the tensor");
    const size_t bad = utf8_error_at(t.name);
    if (bad != std::string::npos)
      fail(path, tf,
           "expected a UTF-8 name (a safetensors header is JSON), found invalid UTF-8 at byte " + u64s(bad));
    if (!names.insert(t.name).second) fail(path, tf, "expected unique tensor names, found it twice");
    const char* dtype = dtype_name(t.type);
    if (!dtype)
      fail(path, tf, std::string("cannot store type ") + name_of(t.type) + ": " + what_to_do(t.type));
    if (t.shape.size() > kMaxDims)
      fail(path, tf, "expected at most " + u64s(kMaxDims) + " dimensions, found " + u64s(t.shape.size()));
    uint64_t numel = 1;
    std::string shape;
    for (size_t j = 0; j < t.shape.size(); ++j) {
      const int64_t d = t.shape[j];
      if (d < 0)
        fail(path, tf + ": shape[" + u64s(j) + "]", "expected a dimension >= 0, found " + std::to_string(d));
      if (d != 0 && numel > static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(d))
        fail(path, tf, "expected an element count that fits 63 bits, found an overflow");
      numel *= static_cast<uint64_t>(d);
      shape += (j ? "," : "") + std::to_string(d);
    }
    auto nb = byte_size(t.type, numel);
    if (!nb || offset > UINT64_MAX - *nb)
      fail(path, tf, "expected a byte size that fits 64 bits, found an overflow");
    h += "," + json_quote(t.name) + ":{\"dtype\":\"" + dtype + "\",\"shape\":[" + shape +
         "],\"data_offsets\":[" + u64s(offset) + "," + u64s(offset + *nb) + "]}";
    sizes.push_back(*nb);
    offset += *nb;
  }
  if (h.size() > 1 && h[1] == ',') h.erase(1, 1);  // no metadata: the first tensor opens the object
  h += "}";
  h.resize((h.size() + 7) / 8 * 8, ' ');
  if (h.size() > kMaxHeaderBytes)
    fail(path, "header",
         "expected at most " + u64s(kMaxHeaderBytes) + " bytes (the limit of the format's readers), found " +
             u64s(h.size()) + "; split the model or drop large metadata");

  // ---- stream: length, header, then each tensor's bytes
  AtomicFile out(path);
  const uint64_t n = h.size();
  out.write(&n, 8);  // little-endian host (checked in reader.cc)
  out.write(h.data(), h.size());
  const uint64_t data_start = 8 + n;
  std::string().swap(h);
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const Tensor& t = model.tensors[i];
    const std::string tf = "tensor '" + printable(t.name) + "'";
    BlobPtr blob;
    try {
      blob = t.bytes();
    } catch (const std::exception& e) {
      const std::string what = e.what();
      throw Error(path + ": cannot write safetensors: " +
                  (what.find(tf) != std::string::npos ? what : tf + ": " + what));
    }
    if (!blob) fail(path, tf, "has no data");
    if (blob->size() != sizes[i])
      fail(path, tf,
           "expected " + u64s(sizes[i]) + " bytes (" + name_of(t.type) + ", " + u64s(t.shape.size()) +
               " dims), found " + u64s(blob->size()));
    write_releasing(*blob, [&](const uint8_t* d, size_t len) { out.write(d, len); });
    blob.reset();
  }
  if (out.size() != data_start + offset)
    fail(path, "layout",
         "internal error: wrote " + u64s(out.size()) + " bytes, expected " + u64s(data_start + offset));
  out.commit();
}

}  // namespace qforge::st
