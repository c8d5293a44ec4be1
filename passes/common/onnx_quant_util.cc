#include "onnx_quant_util.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "qforge/status.h"

namespace qforge::quant {

// ---------------------------------------------------------------- rounding

float round_to_int(float x, Rounding mode) {
  if (mode == Rounding::HalfAwayFromZero) return std::round(x);
  // nearbyint rounds ties to even in the default rounding mode; do it by
  // hand so a caller's fesetround cannot change the result.
  float fl = std::floor(x);
  float diff = x - fl;
  if (diff > 0.5f) return fl + 1.0f;
  if (diff < 0.5f) return fl;
  return std::fmod(fl, 2.0f) == 0.0f ? fl : fl + 1.0f;
}

static double round_half_even(double x) {
  double fl = std::floor(x);
  double diff = x - fl;
  if (diff > 0.5) return fl + 1.0;
  if (diff < 0.5) return fl;
  return std::fmod(fl, 2.0) == 0.0 ? fl : fl + 1.0;
}

// ---------------------------------------------------------------- quant_utils

QRange qrange(ElemType type, bool symmetric, bool reduce_range) {
  switch (type) {
    case ElemType::U8: return reduce_range ? QRange{0, 127} : QRange{0, 255};
    case ElemType::I8:
      if (reduce_range) return {-64, 64};
      return symmetric ? QRange{-127, 127} : QRange{-128, 127};
    case ElemType::U16: return reduce_range ? QRange{0, 32767} : QRange{0, 65535};
    case ElemType::I16:
      if (reduce_range) return {-16384, 16384};
      return symmetric ? QRange{-32767, 32767} : QRange{-32768, 32767};
    case ElemType::U4: return reduce_range ? QRange{0, 7} : QRange{0, 15};
    case ElemType::I4: return reduce_range ? QRange{-4, 3} : QRange{-8, 7};
    default: break;
  }
  throw Error(std::string("no integer quantization range for element type ") + name_of(type));
}

// quant_utils' range: widened to include 0, then made symmetric around 0
// when `symmetric`.
static void widen_range(float& rmin, float& rmax, bool symmetric) {
  rmin = std::min(rmin, 0.0f);
  rmax = std::max(rmax, 0.0f);
  if (symmetric) {
    float absmax = std::max(std::fabs(rmin), std::fabs(rmax));
    rmin = -absmax;
    rmax = absmax;
  }
}

ScaleZp compute_scale_zp(float rmin, float rmax, QRange r, bool symmetric) {
  widen_range(rmin, rmax, symmetric);
  const double dr = static_cast<double>(rmax) - static_cast<double>(rmin);
  const double dq = static_cast<double>(r.qmax) - static_cast<double>(r.qmin);
  const double scale = dr / dq;
  ScaleZp out;
  if (!(scale >= static_cast<double>(FLT_MIN))) {  // numpy.finfo(float32).tiny; NaN too
    out.scale = 1.0f;
    out.zero_point = 0;
    return out;
  }
  if (symmetric) {
    out.zero_point = static_cast<int32_t>(round_half_even((r.qmin + r.qmax) / 2.0));
  } else {
    out.zero_point = static_cast<int32_t>(round_half_even(r.qmin - static_cast<double>(rmin) / scale));
  }
  out.scale = static_cast<float>(scale);
  return out;
}

// compute_scale_zp_blocked: the range is subtracted in float32, the zero
// point divides by the float32 scale, and is clipped.
static ScaleZp compute_scale_zp_blocked(float rmin, float rmax, QRange r, bool symmetric) {
  widen_range(rmin, rmax, symmetric);
  const double dr = static_cast<double>(rmax - rmin);
  const double dq = static_cast<double>(r.qmax) - static_cast<double>(r.qmin);
  const float raw = static_cast<float>(dr / dq);
  ScaleZp out;
  if (!(raw >= FLT_MIN)) {
    out.scale = 1.0f;
    out.zero_point = symmetric ? static_cast<int32_t>(round_half_even((r.qmin + r.qmax) / 2.0)) : 0;
    return out;
  }
  out.scale = raw;
  if (symmetric) {
    out.zero_point = static_cast<int32_t>(round_half_even((r.qmin + r.qmax) / 2.0));
  } else {
    double zp = round_half_even(r.qmin - static_cast<double>(rmin) / static_cast<double>(raw));
    zp = std::min(std::max(zp, static_cast<double>(r.qmin)), static_cast<double>(r.qmax));
    out.zero_point = static_cast<int32_t>(zp);
  }
  return out;
}

int32_t quantize_value(float v, const ScaleZp& p, QRange r) {
  float x = round_to_int(v / p.scale, Rounding::HalfEven) + static_cast<float>(p.zero_point);
  if (!(x >= static_cast<float>(r.qmin))) x = static_cast<float>(r.qmin);  // NaN -> qmin
  if (x > static_cast<float>(r.qmax)) x = static_cast<float>(r.qmax);
  return static_cast<int32_t>(x);
}

// ---------------------------------------------------------------- MLAS blockwise

float mlas_symmetric_scale(float vmin, float vmax, int bits) {
  const float m = std::fabs(vmax) > std::fabs(vmin) ? vmax : vmin;
  const float half_range = static_cast<float>(1 << (bits - 1));
  return -m / half_range;
}

ScaleZp mlas_asymmetric_scale_zp(float vmin, float vmax, int bits) {
  vmin = std::min(vmin, 0.0f);
  vmax = std::max(vmax, 0.0f);
  const float kmax = static_cast<float>((1 << bits) - 1);
  const float scale = (vmax - vmin) / kmax;
  float zp_fp = vmin;
  if (scale != 0.0f) zp_fp = 0.0f - vmin / scale;
  ScaleZp out;
  out.scale = scale;
  if (zp_fp < 0.0f) {
    out.zero_point = 0;
  } else if (zp_fp > kmax) {
    out.zero_point = (1 << bits) - 1;
  } else {
    out.zero_point = static_cast<int32_t>(std::round(zp_fp));
  }
  return out;
}

// ---------------------------------------------------------------- matrices

static int bits_of(ElemType t) {
  switch (t) {
    case ElemType::I8:
    case ElemType::U8: return 8;
    case ElemType::I4:
    case ElemType::U4: return 4;
    default: break;
  }
  throw Error(std::string("quantized weights must be int8, uint8, int4 or uint4, not ") + name_of(t));
}

static bool is_signed(ElemType t) { return t == ElemType::I8 || t == ElemType::I4; }

QuantizedMatrix quantize_matrix(const float* w, int64_t K, int64_t N, bool transposed,
                                const QuantSpec& spec) {
  if (K <= 0 || N <= 0) throw Error("cannot quantize an empty matrix");
  const int bits = bits_of(spec.type);
  QuantizedMatrix m;
  m.K = K;
  m.N = N;
  m.block_size = spec.block_size > 0 ? spec.block_size : K;
  m.n_blocks = (K + m.block_size - 1) / m.block_size;
  m.q.assign(static_cast<size_t>(K * N), 0);
  m.scales.assign(static_cast<size_t>(m.n_blocks * N), 0.0f);
  const bool mlas = spec.convention == Convention::MlasBlockwise;
  const bool unsigned_codes = !is_signed(spec.type);
  const bool nbits = mlas && spec.mlas_nbits;
  if (nbits && !unsigned_codes)
    throw Error("the MatMulNBits quantizer produces unsigned codes (uint4/uint8)");
  if (mlas && !spec.symmetric && !unsigned_codes)
    throw Error("MLAS asymmetric quantization produces unsigned codes (uint4/uint8)");
  if (mlas && spec.symmetric && unsigned_codes && !nbits)
    throw Error("MLAS symmetric QDQ quantization produces signed codes (int4/int8)");
  // quant_utils: unsigned codes always carry a zero point (128 when symmetric);
  // MLAS: only asymmetric ones (MatMulNBits implies 2^(bits-1) otherwise).
  const bool has_zp = !spec.symmetric || (!mlas && unsigned_codes);
  if (has_zp) m.zero_points.assign(m.scales.size(), 0);
  if (spec.scale_type != ElemType::F32 && spec.scale_type != ElemType::F16)
    throw Error(std::string("scales are f32 or f16, not ") + name_of(spec.scale_type));
  const bool half_scales = spec.scale_type == ElemType::F16;
  const QRange full = qrange(spec.type, false, false);
  const QRange range = qrange(spec.type, spec.symmetric, spec.reduce_range);
  const bool blocked = spec.block_size > 0;
  const float lo = static_cast<float>(full.qmin), hi = static_cast<float>(full.qmax);

  // Per block: the range of every column (rows are read contiguously), the
  // column parameters, then the codes.
  std::vector<float> vmin(static_cast<size_t>(N)), vmax(static_cast<size_t>(N));
  std::vector<ScaleZp> params(static_cast<size_t>(N));
  std::vector<float> recip(static_cast<size_t>(N));
  for (int64_t b = 0; b < m.n_blocks; ++b) {
    const int64_t k0 = b * m.block_size;
    const int64_t k1 = std::min(k0 + m.block_size, K);
    std::fill(vmin.begin(), vmin.end(), FLT_MAX);
    std::fill(vmax.begin(), vmax.end(), -FLT_MAX);
    if (!transposed) {
      for (int64_t k = k0; k < k1; ++k) {
        const float* row = w + k * N;
        for (int64_t n = 0; n < N; ++n) {
          vmin[n] = std::min(vmin[n], row[n]);
          vmax[n] = std::max(vmax[n], row[n]);
        }
      }
    } else {
      for (int64_t n = 0; n < N; ++n) {
        const float* col = w + n * K;
        for (int64_t k = k0; k < k1; ++k) {
          vmin[n] = std::min(vmin[n], col[k]);
          vmax[n] = std::max(vmax[n], col[k]);
        }
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      ScaleZp p;
      if (!mlas) {
        p = blocked ? compute_scale_zp_blocked(vmin[n], vmax[n], range, spec.symmetric)
                    : compute_scale_zp(vmin[n], vmax[n], range, spec.symmetric);
      } else if (spec.symmetric) {
        p.scale = mlas_symmetric_scale(vmin[n], vmax[n], bits);
        p.zero_point = unsigned_codes ? (1 << (bits - 1)) : 0;
      } else {
        p = mlas_asymmetric_scale_zp(vmin[n], vmax[n], bits);
      }
      // ORT quantizes with the scale as stored.
      if (half_scales) p.scale = half_to_float(float_to_half(p.scale));
      const size_t mi = static_cast<size_t>(b * N + n);
      m.scales[mi] = p.scale;
      if (has_zp) m.zero_points[mi] = p.zero_point;
      params[n] = p;
      recip[n] = p.scale != 0.0f ? 1.0f / p.scale : 0.0f;
    }
    auto code = [&](float v, int64_t n) -> int32_t {
      const ScaleZp& p = params[n];
      if (!mlas) return quantize_value(v, p, full);
      if (nbits)  // MatMulNBits' quantizer rounds after adding the zero point
        return static_cast<int32_t>(
            std::clamp(std::round(v * recip[n] + static_cast<float>(p.zero_point)), lo, hi));
      // QDQ blockwise (QuantizeV): round, then add the zero point.
      return std::clamp(static_cast<int32_t>(std::round(v * recip[n])) + p.zero_point, full.qmin, full.qmax);
    };
    if (!transposed) {
      for (int64_t k = k0; k < k1; ++k) {
        const float* row = w + k * N;
        int32_t* out = m.q.data() + k * N;
        for (int64_t n = 0; n < N; ++n) out[n] = code(row[n], n);
      }
    } else {
      for (int64_t n = 0; n < N; ++n) {
        const float* col = w + n * K;
        for (int64_t k = k0; k < k1; ++k) m.q[static_cast<size_t>(k * N + n)] = code(col[k], n);
      }
    }
  }
  return m;
}

// ---------------------------------------------------------------- packing

std::vector<uint8_t> pack_nibbles(const std::vector<int32_t>& values) {
  std::vector<uint8_t> out((values.size() + 1) / 2, 0);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint8_t nib = static_cast<uint8_t>(values[i] & 0x0F);
    out[i / 2] |= (i % 2) ? static_cast<uint8_t>(nib << 4) : nib;
  }
  return out;
}

std::vector<uint8_t> encode_codes(const std::vector<int32_t>& values, ElemType type) {
  if (type == ElemType::I4 || type == ElemType::U4) return pack_nibbles(values);
  std::vector<uint8_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<uint8_t>(values[i] & 0xFF);
  return out;
}

NBitsTensors pack_matmul_nbits(const QuantizedMatrix& m, int bits) {
  if (bits != 4 && bits != 8) throw Error("MatMulNBits packing supports 4 and 8 bits");
  const int64_t per_byte = 8 / bits;
  if (m.block_size % per_byte != 0) throw Error("MatMulNBits block_size must be a multiple of 8 / bits");
  const int64_t blob = m.block_size * bits / 8;
  NBitsTensors out;
  out.b.assign(static_cast<size_t>(m.N * m.n_blocks * blob), 0);
  out.scales.resize(static_cast<size_t>(m.N * m.n_blocks));
  for (int64_t n = 0; n < m.N; ++n) {
    for (int64_t b = 0; b < m.n_blocks; ++b) {
      const size_t mi = static_cast<size_t>(b * m.N + n);
      out.scales[static_cast<size_t>(n * m.n_blocks + b)] = m.scales[mi];
      uint8_t* dst = out.b.data() + (n * m.n_blocks + b) * blob;
      for (int64_t j = 0; j < m.block_size; ++j) {
        const int64_t k = b * m.block_size + j;
        // Past K: code 0, as ORT's quantizer leaves its zero-filled buffer (the kernel reads K only).
        const int32_t q = k < m.K ? m.q[static_cast<size_t>(k * m.N + n)] : 0;
        if (bits == 8) {
          dst[j] = static_cast<uint8_t>(q);
        } else {
          dst[j / 2] |= static_cast<uint8_t>((q & 0x0F) << (4 * (j % 2)));
        }
      }
    }
  }
  if (!m.zero_points.empty()) {
    const int64_t zp_cols = (m.n_blocks * bits + 7) / 8;
    out.zero_points.assign(static_cast<size_t>(m.N * zp_cols), 0);
    for (int64_t n = 0; n < m.N; ++n) {
      for (int64_t b = 0; b < m.n_blocks; ++b) {
        const int32_t z = m.zero_points[static_cast<size_t>(b * m.N + n)];
        uint8_t& dst = out.zero_points[static_cast<size_t>(n * zp_cols + b / per_byte)];
        if (bits == 8) {
          dst = static_cast<uint8_t>(z);
        } else {
          dst |= static_cast<uint8_t>((z & 0x0F) << (4 * (b % 2)));
        }
      }
      // An odd block count leaves a high nibble unused: ORT fills it with 8.
      if (bits == 4 && m.n_blocks % 2)
        out.zero_points[static_cast<size_t>(n * zp_cols + zp_cols - 1)] |= 0x80;
    }
  }
  return out;
}

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

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t exp = (x >> 23) & 0xFF;
  uint32_t man = x & 0x7FFFFF;
  if (exp == 0xFF) return static_cast<uint16_t>(sign | 0x7C00 | (man ? 0x200 | (man >> 13) : 0));
  const int32_t e = static_cast<int32_t>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7C00);
  if (e <= 0) {
    if (e < -10) return sign;  // rounds to zero
    man |= 0x800000;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t h = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (man >> 13);
  const uint32_t rem = man & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // may carry into the exponent (to inf): correct
  return static_cast<uint16_t>(sign | h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t man = h & 0x3FF;
  uint32_t x;
  if (exp == 0) {
    if (man == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int32_t e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400));
      x = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((man & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7F800000 | (man << 13);
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
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
    v[i] = half_to_float(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
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
    const uint16_t h = float_to_half(v[i]);
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

// ---------------------------------------------------------------- options

static std::string where_of(const Value& v) {
  if (v.loc.file.empty()) return "";
  return v.loc.file + ":" + std::to_string(v.loc.line) + ":" + std::to_string(v.loc.column) + ": ";
}

std::string opt_where(const Options& o, const std::string& name) {
  auto it = o.find(name);
  return it == o.end() ? std::string() : where_of(it->second);
}

namespace {

// The option's value, or nullptr when it is absent or null.
const Value* opt_value(const Options& o, const std::string& name) {
  auto it = o.find(name);
  return it == o.end() || it->second.is_null() ? nullptr : &it->second;
}

// The option's value when it is present, checked to be of `kind`.
const Value* opt_of_kind(const Options& o, const std::string& pass, const std::string& name, Value::Kind kind,
                         const char* expected) {
  const Value* v = opt_value(o, name);
  if (v && v->kind != kind)
    throw Error(where_of(*v) + "option '" + name + "' of pass '" + pass + "' must be " + expected +
                ", found " + v->display());
  return v;
}

}  // namespace

bool opt_has(const Options& o, const std::string& name) { return opt_value(o, name) != nullptr; }

bool opt_bool(const Options& o, const std::string& pass, const std::string& name, bool dflt) {
  const Value* v = opt_of_kind(o, pass, name, Value::Kind::Bool, "true or false");
  return v ? v->b : dflt;
}

int64_t opt_int(const Options& o, const std::string& pass, const std::string& name, int64_t dflt) {
  const Value* v = opt_of_kind(o, pass, name, Value::Kind::Int, "an integer");
  return v ? v->i : dflt;
}

std::string opt_string(const Options& o, const std::string& pass, const std::string& name,
                       const std::string& dflt) {
  const Value* v = opt_of_kind(o, pass, name, Value::Kind::String, "a string");
  return v ? v->s : dflt;
}

std::vector<std::string> opt_list(const Options& o, const std::string& pass, const std::string& name,
                                  std::vector<std::string> dflt) {
  const Value* pv = opt_value(o, name);
  if (!pv) return dflt;
  const Value& v = *pv;
  if (v.kind == Value::Kind::String) return {v.s};
  if (v.kind != Value::Kind::List)
    throw Error(where_of(v) + "option '" + name + "' of pass '" + pass +
                "' must be a list of strings, found " + v.display());
  std::vector<std::string> out;
  for (const Value& e : v.list) {
    if (e.kind != Value::Kind::String)
      throw Error(where_of(e) + "items of option '" + name + "' of pass '" + pass +
                  "' must be strings, found " + e.display());
    out.push_back(e.s);
  }
  return out;
}

OptionSpec option_spec(std::string name, OptType type, std::string help, Value dflt,
                       std::vector<std::string> choices) {
  OptionSpec s;
  s.name = std::move(name);
  s.type = type;
  s.help = std::move(help);
  s.default_value = std::move(dflt);
  s.choices = std::move(choices);
  return s;
}

Value string_list(const std::vector<std::string>& items) {
  Value v;
  v.kind = Value::Kind::List;
  for (const std::string& s : items) v.list.push_back(Value::of_string(s));
  return v;
}

// ---------------------------------------------------------------- graphs

std::string node_label(const Node& n, size_t index) {
  std::string op = (n.domain.empty() ? "" : n.domain + ".") + n.op_type;
  if (!n.name.empty()) return "node '" + n.name + "' (" + op + ")";
  return "node #" + std::to_string(index) + " (" + op + ")";
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}


namespace {

// Forms of ONNX ops that stop being valid when the default-domain opset is
// raised past `since`: an attribute that became an input, or an op removed.
struct OpsetBreak {
  const char* op;
  const char* attribute;  // nullptr: the op itself is gone
  int64_t since;
  const char* what;
};
const OpsetBreak kBreaks[] = {
    {"Squeeze", "axes", 13, "'axes' became an input"},
    {"Unsqueeze", "axes", 13, "'axes' became an input"},
    {"ReduceSum", "axes", 13, "'axes' became an input"},
    {"Split", "split", 13, "'split' became an input"},
    {"ReduceMean", "axes", 18, "'axes' became an input"},
    {"ReduceMax", "axes", 18, "'axes' became an input"},
    {"ReduceMin", "axes", 18, "'axes' became an input"},
    {"ReduceProd", "axes", 18, "'axes' became an input"},
    {"ReduceL1", "axes", 18, "'axes' became an input"},
    {"ReduceL2", "axes", 18, "'axes' became an input"},
    {"ReduceLogSum", "axes", 18, "'axes' became an input"},
    {"ReduceLogSumExp", "axes", 18, "'axes' became an input"},
    {"ReduceSumSquare", "axes", 18, "'axes' became an input"},
    {"Pad", "pads", 11, "'pads' became an input"},
    {"Slice", "starts", 10, "'starts'/'ends' became inputs"},
    {"TopK", "k", 10, "'k' became an input"},
    {"Upsample", nullptr, 10, "the op was deprecated (use Resize)"},
    {"Scatter", nullptr, 11, "the op was deprecated (use ScatterElements)"},
    {"Dropout", "ratio", 12, "'ratio' became an input"},
    {"Clip", "min", 11, "'min'/'max' became inputs"},
    {"Clip", "max", 11, "'min'/'max' became inputs"},
    {"BatchNormalization", "spatial", 9, "'spatial' was removed"},
};

void check_opset_move(const Graph& g, int64_t from, int64_t to, const std::string& pass,
                      const std::string& why, const std::string& scope) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!(n.domain.empty() || n.domain == "ai.onnx")) continue;
    for (const OpsetBreak& b : kBreaks) {
      if (b.since <= from || b.since > to || n.op_type != b.op) continue;
      if (b.attribute && !n.attr(b.attribute)) continue;
      throw Error(why + " needs the default ONNX opset raised from " + std::to_string(from) + " to " +
                  std::to_string(to) + ", but " + scope + node_label(n, i) + " is not valid at opset " +
                  std::to_string(b.since) + " and later (" + b.what + "); convert the model to opset " +
                  std::to_string(to) +
                  " first (onnx.version_converter) or choose options that need no newer opset");
    }
    for (const Attribute& a : n.attributes)
      for (const auto& sub : a.graphs)
        if (sub) check_opset_move(*sub, from, to, pass, why, scope + node_label(n, i) + " subgraph: ");
  }
}

bool is_default_domain(const std::string& d) { return d.empty() || d == "ai.onnx"; }

}  // namespace

int64_t raise_default_opset(Graph& g, int64_t want, const std::string& pass, const std::string& why) {
  OpsetImport* def = nullptr;
  for (OpsetImport& o : g.model.opset_imports)
    if (is_default_domain(o.domain)) def = &o;
  const int64_t current = def ? def->version : -1;
  if (current >= want) return current;
  if (current < 1)
    throw Error("the model imports no default ONNX opset; cannot add " + why + " (" + pass + ")");
  check_opset_move(g, current, want, pass, why, "");
  def->version = want;
  return current;
}

void ensure_opset(Graph& g, const std::string& domain, int64_t version) {
  for (OpsetImport& o : g.model.opset_imports)
    if (o.domain == domain) {
      if (o.version < version) o.version = version;
      return;
    }
  g.model.opset_imports.push_back({domain, version});
}

void ensure_ir_version(Graph& g, int64_t v) {
  if (g.model.ir_version < v) g.model.ir_version = v;
}

bool is_constant_initializer(const Model& m, const std::string& name) {
  if (!m.tensor(name)) return false;
  return !(m.graph && m.graph->is_input(name));
}

void drop_unused_initializers(Model& m, const std::vector<std::string>& candidates) {
  if (!m.graph) return;
  Graph& g = *m.graph;
  std::unordered_set<std::string> drop;
  for (const std::string& name : candidates) {
    if (!g.consumers(name).empty() || g.is_output(name) || g.is_input(name)) continue;
    drop.insert(name);
  }
  if (drop.empty()) return;
  m.tensors.erase(std::remove_if(m.tensors.begin(), m.tensors.end(),
                                 [&](const Tensor& t) { return drop.count(t.name) > 0; }),
                  m.tensors.end());
  g.value_info.erase(std::remove_if(g.value_info.begin(), g.value_info.end(),
                                    [&](const ValueInfo& v) { return drop.count(v.name) > 0; }),
                     g.value_info.end());
  g.initializer_docs.erase(
      std::remove_if(g.initializer_docs.begin(), g.initializer_docs.end(),
                     [&](const std::pair<std::string, std::string>& d) { return drop.count(d.first) > 0; }),
      g.initializer_docs.end());
}

size_t count_ops(const Graph& g, const std::string& op_type, const std::string& domain) {
  size_t n = 0;
  for (const Node& node : g.nodes)
    if (node.op_type == op_type &&
        (node.domain == domain || (is_default_domain(domain) && is_default_domain(node.domain))))
      ++n;
  return n;
}

size_t count_subgraph_nodes(const Graph& g) {
  size_t n = 0;
  for (const Node& node : g.nodes)
    for (const Attribute& a : node.attributes)
      if (!a.graphs.empty()) {
        ++n;
        break;
      }
  return n;
}

// ---------------------------------------------------------------- rewriting passes

PassResult RewritePass::run(Model& model, PassContext& ctx) {
  PassResult res;
  res.status = guard([&] { run_impl(model, ctx, res); });
  if (!res.status.ok) res.changed = false;
  return res;
}

Model working_copy(const Model& model, const std::string& what_pass_needs) {
  if (!model.graph)
    throw Error("model '" + model.source + "' (" + model.format + ") has no graph; " + what_pass_needs);
  Model work = model;
  work.graph = std::make_shared<Graph>(*model.graph);
  return work;
}

std::string constant_weight_problem(const Model& m, const std::string& w) {
  if (!m.tensor(w))
    return "weight '" + w + "' is not an initializer (computed or a graph input); left in float";
  if (m.graph && m.graph->is_input(w))
    return "weight '" + w + "' is also a graph input (can be overridden at run time); left in float";
  return "";
}

void note_subgraph_bodies(const Graph& g, std::vector<std::string>& notes) {
  const size_t sub = count_subgraph_nodes(g);
  if (sub)
    notes.push_back(std::to_string(sub) +
                    " node(s) with subgraph bodies (If/Loop/Scan): their bodies "
                    "are left unquantized");
}

void raise_default_opset_noted(Graph& g, int64_t want, const std::string& pass, const std::string& why,
                               std::vector<std::string>& notes) {
  const int64_t before = raise_default_opset(g, want, pass, why);
  if (before < want)
    notes.push_back("raised the default ONNX opset from " + std::to_string(before) + " to " +
                    std::to_string(want) + " for " + why);
}

void commit_rewrite(Model& model, Model& work, const std::vector<std::string>& replaced,
                    const RewriteStats& stats, PassResult& res) {
  drop_unused_initializers(work, replaced);
  std::vector<std::string> init_names;
  for (const Tensor& t : work.tensors) init_names.push_back(t.name);
  work.graph->validate({}, init_names);

  res.notes.insert(res.notes.end(), stats.skipped.begin(), stats.skipped.end());
  res.metrics["quantized_weights"] = static_cast<double>(stats.quantized_weights);
  res.metrics["quantized_nodes"] = static_cast<double>(stats.quantized_nodes);
  res.metrics["skipped_nodes"] = static_cast<double>(stats.skipped.size());
  res.metrics["weight_bytes_before"] = static_cast<double>(stats.bytes_before);
  res.metrics["weight_bytes_after"] = static_cast<double>(stats.bytes_after);
  res.changed = stats.quantized_nodes > 0;
  if (res.changed) model = std::move(work);
}

}  // namespace qforge::quant
