#include "imatrix.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "gguf/gguf.h"
#include "qforge/model.h"
#include "qforge/status.h"

namespace qforge::gguf_quant {
namespace {

bool ends_with_strip(std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  s.resize(s.size() - suffix.size());
  return true;
}

std::vector<float> floats_of(const Tensor& t, const std::string& path) {
  if (t.type != ElemType::F32)
    throw Error(path + ": imatrix tensor " + t.name + ": expected type f32, found " + name_of(t.type));
  BlobPtr b = t.bytes();
  std::vector<float> v(t.numel());
  if (b->size() < v.size() * sizeof(float))
    throw Error(path + ": imatrix tensor " + t.name + ": data shorter than its shape");
  std::memcpy(v.data(), b->data(), v.size() * sizeof(float));
  return v;
}

Imatrix load_gguf_imatrix(const std::string& path) {
  Model m = read_gguf(path);
  Imatrix im;
  im.path = path;
  if (m.tensors.empty()) throw Error(path + ": imatrix has no tensors (no data)");
  const MetaValue* ds = m.meta("imatrix.datasets");
  const MetaValue* cc = m.meta("imatrix.chunk_count");
  const MetaValue* cs = m.meta("imatrix.chunk_size");
  if (!ds || !cc || !cs)
    throw Error(path +
                ": missing imatrix metadata (imatrix.datasets, imatrix.chunk_count and "
                "imatrix.chunk_size are required, as llama-quantize requires them)");
  if (ds->type == MetaType::Array && ds->elem == MetaType::String)
    for (const auto& s : ds->array) im.datasets.push_back(s.s);
  auto cnt = cc->as_int();
  if (!cnt || cc->type != MetaType::U32)
    throw Error(path + ": imatrix.chunk_count: expected u32, found " + cc->summary());
  im.chunk_count = static_cast<int32_t>(static_cast<uint32_t>(*cnt));

  std::map<std::string, std::pair<const Tensor*, const Tensor*>> pairs;
  for (const auto& t : m.tensors) {
    std::string name = t.name;
    if (ends_with_strip(name, ".in_sum2"))
      pairs[name].first = &t;
    else if (ends_with_strip(name, ".counts"))
      pairs[name].second = &t;
  }
  for (const auto& [name, p] : pairs) {
    if (!p.first || !p.second)
      throw Error(path + ": imatrix entry " + name + ": has " +
                  (p.first ? "in_sum2 but no counts" : "counts but no in_sum2") + " tensor");
    std::vector<float> sums = floats_of(*p.first, path);
    std::vector<float> counts = floats_of(*p.second, path);
    const int64_t ncounts = static_cast<int64_t>(counts.size());
    if (ncounts == 0 || sums.size() % counts.size() != 0)
      throw Error(path + ": imatrix entry " + name + ": " + std::to_string(sums.size()) +
                  " sums are not a whole number of rows for " + std::to_string(ncounts) + " counts");
    const int64_t ne0 = static_cast<int64_t>(sums.size()) / ncounts;
    std::vector<float>& e = im.entries[name];
    e.resize(sums.size());
    for (int64_t j = 0; j < ncounts; ++j) {
      if (!std::isfinite(counts[j]))
        throw Error(path + ": imatrix entry " + name + ": count " + std::to_string(j) + " is not finite");
      const float count = static_cast<float>(std::lround(counts[j]));
      for (int64_t i = 0; i < ne0; ++i) e[j * ne0 + i] = count > 0.0f ? sums[j * ne0 + i] / count : 1.0f;
    }
  }
  return im;
}

struct Reader {
  const std::vector<uint8_t>& b;
  const std::string& path;
  size_t pos = 0;
  int32_t i32(const char* what) {
    if (b.size() - pos < 4)
      throw Error(path + ": byte " + std::to_string(pos) + ": expected " + what +
                  " (4 bytes), found end of file");
    int32_t v;
    std::memcpy(&v, b.data() + pos, 4);
    pos += 4;
    return v;
  }
  const uint8_t* bytes(size_t n, const std::string& what) {
    if (b.size() - pos < n)
      throw Error(path + ": byte " + std::to_string(pos) + ": expected " + what + " (" + std::to_string(n) +
                  " bytes), found " + std::to_string(b.size() - pos));
    const uint8_t* p = b.data() + pos;
    pos += n;
    return p;
  }
};

Imatrix load_legacy_imatrix(const std::string& path, const std::vector<uint8_t>& bytes) {
  Imatrix im;
  im.path = path;
  im.legacy = true;
  Reader r{bytes, path};
  const int32_t n = r.i32("the entry count");
  if (n < 1) throw Error(path + ": byte 0: expected a positive entry count, found " + std::to_string(n));
  for (int32_t k = 0; k < n; ++k) {
    const size_t at = r.pos;
    const int32_t len = r.i32("a name length");
    if (len < 0 || len > 4096)
      throw Error(path + ": byte " + std::to_string(at) + ": entry " + std::to_string(k) + ": name length " +
                  std::to_string(len) + " is out of range [0, 4096]");
    const uint8_t* p = r.bytes(static_cast<size_t>(len), "the entry name");
    std::string name(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
    name = name.c_str();  // llama.cpp stops at a NUL
    const int32_t ncall = r.i32("the call count");
    const size_t at_nval = r.pos;
    const int32_t nval = r.i32("the value count");
    if (nval < 1)
      throw Error(path + ": byte " + std::to_string(at_nval) + ": entry " + name +
                  ": expected a positive value count, found " + std::to_string(nval));
    const uint8_t* d = r.bytes(static_cast<size_t>(nval) * 4, "the values of " + name);
    std::vector<float> v(static_cast<size_t>(nval));
    std::memcpy(v.data(), d, v.size() * 4);
    const int64_t nc = ncall;
    if (nc > 0)
      for (float& x : v) x = x / nc;
    im.entries[name] = std::move(v);
  }
  if (r.pos < bytes.size()) {
    if (bytes.size() - r.pos >= 4) {
      im.chunk_count = r.i32("the chunk count");
      if (bytes.size() - r.pos >= 4) {
        const int32_t len = r.i32("the dataset name length");
        if (len > 0 && bytes.size() - r.pos >= static_cast<size_t>(len)) {
          const uint8_t* p = r.bytes(static_cast<size_t>(len), "the dataset name");
          im.datasets.push_back(
              std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(len)).c_str());
        }
      }
    }
  }
  return im;
}

}  // namespace

Imatrix load_imatrix(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the imatrix file");
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return load_gguf_imatrix(path);
  in.clear();
  in.seekg(0);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return load_legacy_imatrix(path, bytes);
}

void filter_imatrix(Imatrix& im, const std::vector<std::string>& include,
                    const std::vector<std::string>& exclude) {
  if (!include.empty() && !exclude.empty())
    throw Error(
        "quantize-gguf: include_weights and exclude_weights cannot both be given "
        "(as in llama-quantize)");
  for (const auto& x : exclude)
    for (auto it = im.entries.begin(); it != im.entries.end();)
      it = it->first.find(x) != std::string::npos ? im.entries.erase(it) : std::next(it);
  if (!include.empty()) {
    std::map<std::string, std::vector<float>> kept;
    for (const auto& x : include)
      for (auto& [name, v] : im.entries)
        if (name.find(x) != std::string::npos && !kept.count(name)) kept.emplace(name, v);
    im.entries = std::move(kept);
  }
}

}  // namespace qforge::gguf_quant
