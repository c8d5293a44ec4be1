#include "quant_tensors.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "qforge/half.h"
#include "qforge/status.h"

namespace qforge::quant {

// ---------------------------------------------------------------- tensors

std::vector<float> read_f32(const Tensor& t) {
  if (t.type != ElemType::F32)
    throw Error("tensor '" + t.name + "' is " + name_of(t.type) + ", expected f32");
  BlobPtr b = t.bytes();
  if (!b) throw Error("tensor '" + t.name + "' has no data");
  const uint64_t want = t.numel() * sizeof(float);
  if (b->size() != want)
    throw Error("tensor '" + t.name + "' has " + std::to_string(b->size()) + " bytes of data, expected " +
                std::to_string(want) + " for its shape");
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (want) std::memcpy(v.data(), b->data(), static_cast<size_t>(want));
  return v;
}

std::vector<float> read_floats(const Tensor& t) {
  if (t.type == ElemType::F32) return read_f32(t);
  if (t.type != ElemType::F16)
    throw Error("tensor '" + t.name + "' is " + name_of(t.type) + ", expected f32 or f16");
  BlobPtr b = t.bytes();
  if (!b) throw Error("tensor '" + t.name + "' has no data");
  const uint64_t want = t.numel() * 2;
  if (b->size() != want)
    throw Error("tensor '" + t.name + "' has " + std::to_string(b->size()) + " bytes of data, expected " +
                std::to_string(want) + " for its shape");
  std::vector<float> v(static_cast<size_t>(t.numel()));
  const uint8_t* p = b->data();
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = fp16_to_fp32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
  return v;
}

Tensor make_float_tensor(std::string name, std::vector<int64_t> shape, ElemType type,
                         const std::vector<float>& v) {
  return make_tensor(std::move(name), std::move(shape), type, float_bytes(v, type));
}

Tensor make_tensor(std::string name, std::vector<int64_t> shape, ElemType type, std::vector<uint8_t> bytes) {
  Tensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.type = type;
  t.data = make_blob(std::move(bytes));
  return t;
}

Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
  return make_float_tensor(std::move(name), std::move(shape), ElemType::F32, v);
}

void check_float_data(const Tensor& t) {
  if (t.type != ElemType::F32 && t.type != ElemType::F16)
    throw Error("tensor '" + t.name + "' is " + name_of(t.type) + ", expected f32 or f16");
  if (!t.data) {
    if (!t.producer) throw Error("tensor '" + t.name + "' has no data");
    return;
  }
  const uint64_t want = t.numel() * (t.type == ElemType::F32 ? 4 : 2);
  if (t.data->size() != want)
    throw Error("tensor '" + t.name + "' has " + std::to_string(t.data->size()) +
                " bytes of data, expected " + std::to_string(want) + " for its shape");
}

namespace {
class LazyParts {
 public:
  LazyParts(size_t n, std::function<std::vector<std::vector<uint8_t>>()> compute)
      : compute_(std::move(compute)), taken_(n, false), n_(n) {}
  BlobPtr get(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    if (parts_.empty()) {
      std::vector<std::vector<uint8_t>> bytes = compute_();
      if (bytes.size() != n_)
        throw Error("internal error: lazy quantization produced the wrong number of parts");
      for (auto& b : bytes) parts_.push_back(make_blob(std::move(b)));
      std::fill(taken_.begin(), taken_.end(), false);
    }
    BlobPtr out = parts_.at(i);
    taken_[i] = true;
    if (std::all_of(taken_.begin(), taken_.end(), [](bool b) { return b; })) parts_.clear();
    return out;
  }

 private:
  std::mutex mu_;
  std::function<std::vector<std::vector<uint8_t>>()> compute_;
  std::vector<BlobPtr> parts_;
  std::vector<bool> taken_;
  size_t n_;
};
}  // namespace

std::vector<std::function<BlobPtr()>> lazy_parts(size_t n,
                                                 std::function<std::vector<std::vector<uint8_t>>()> compute) {
  auto shared = std::make_shared<LazyParts>(n, std::move(compute));
  std::vector<std::function<BlobPtr()>> out;
  for (size_t i = 0; i < n; ++i) out.push_back([shared, i] { return shared->get(i); });
  return out;
}

Tensor make_lazy_tensor(std::string name, std::vector<int64_t> shape, ElemType type,
                        std::function<BlobPtr()> producer, const std::string& pass) {
  Tensor t;
  t.producer = guarded_producer(pass, name, std::move(producer));
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.type = type;
  return t;
}

std::vector<uint8_t> float_bytes(const std::vector<float>& v, ElemType type) {
  if (type == ElemType::F32) {
    std::vector<uint8_t> bytes(v.size() * sizeof(float));
    if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
    return bytes;
  }
  if (type != ElemType::F16) throw Error(std::string("float tensors are f32 or f16, not ") + name_of(type));
  std::vector<uint8_t> bytes(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = fp32_to_fp16(v[i]);
    bytes[2 * i] = static_cast<uint8_t>(h & 0xFF);
    bytes[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return bytes;
}

uint64_t stored_bytes(const Tensor& t) {
  const uint64_t n = t.numel();
  if (t.type == ElemType::I4 || t.type == ElemType::U4) return n / 2 + n % 2;
  auto b = byte_size(t.type, n);
  return b ? *b : 0;
}

}  // namespace qforge::quant
