#include "quant_math.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>

#include "qforge/half.h"
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
      if (half_scales) p.scale = fp16_to_fp32(fp32_to_fp16(p.scale));
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

}  // namespace qforge::quant
