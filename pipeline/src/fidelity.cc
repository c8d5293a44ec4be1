// Fidelity sums: see qforge/fidelity.h.
#include "qforge/fidelity.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "qforge/half.h"
#include "qforge/status.h"

namespace qforge {
namespace {

// Elements of a run value as doubles (numeric types).
std::vector<double> as_doubles(const RunValue& v, const std::string& what) {
  const uint64_t n = v.numel();
  std::vector<double> out(n);
  for (uint64_t i = 0; i < n; ++i) {
    switch (v.type) {
      case ElemType::F32: out[i] = v.as<float>()[i]; break;
      case ElemType::F64: out[i] = v.as<double>()[i]; break;
      case ElemType::F16: out[i] = fp16_to_fp32(v.as<uint16_t>()[i]); break;
      case ElemType::BF16: out[i] = bf16_to_fp32(v.as<uint16_t>()[i]); break;
      case ElemType::I8: out[i] = v.as<int8_t>()[i]; break;
      case ElemType::U8:
      case ElemType::Bool: out[i] = v.as<uint8_t>()[i]; break;
      case ElemType::I16: out[i] = v.as<int16_t>()[i]; break;
      case ElemType::U16: out[i] = v.as<uint16_t>()[i]; break;
      case ElemType::I32: out[i] = v.as<int32_t>()[i]; break;
      case ElemType::U32: out[i] = v.as<uint32_t>()[i]; break;
      case ElemType::I64: out[i] = static_cast<double>(v.as<int64_t>()[i]); break;
      case ElemType::U64: out[i] = static_cast<double>(v.as<uint64_t>()[i]); break;
      default: throw Error(what + ": element type " + std::string(name_of(v.type)) + " cannot be compared");
    }
  }
  return out;
}

}  // namespace

void FidelityAccumulator::add(const RunValue& reference, const RunValue& candidate, const std::string& what) {
  if (reference.shape != candidate.shape)
    throw Error(what + ": the reference gives " + shape_str(reference.shape) + ", the candidate " +
                shape_str(candidate.shape));
  const std::vector<double> r = as_doubles(reference, what), c = as_doubles(candidate, what);
  for (size_t j = 0; j < r.size(); ++j) {
    const double d = r[j] - c[j];
    dot_ += r[j] * c[j];
    rr_ += r[j] * r[j];
    cc_ += c[j] * c[j];
    err2_ += d * d;
    max_abs_ = std::max(max_abs_, std::fabs(d));
  }
  n_ += r.size();
  // Argmax along the axis: rows are (outer, inner) positions, `len` apart by `inner`.
  const int64_t rank = static_cast<int64_t>(reference.shape.size());
  if (rank == 0) {  // a scalar: one row of one element
    ++rows_, ++agree_;
    return;
  }
  const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
  if (axis < 0 || axis >= rank)
    throw Error(what + ": argmax axis " + std::to_string(axis_) + " does not exist in shape " +
                shape_str(reference.shape));
  uint64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= static_cast<uint64_t>(reference.shape[d]);
  for (int64_t d = axis + 1; d < rank; ++d) inner *= static_cast<uint64_t>(reference.shape[d]);
  const uint64_t len = static_cast<uint64_t>(reference.shape[axis]);
  if (len == 0) return;
  for (uint64_t o = 0; o < outer; ++o)
    for (uint64_t in = 0; in < inner; ++in) {
      const uint64_t base = o * len * inner + in;
      uint64_t br = base, bc = base;
      for (uint64_t k = 1; k < len; ++k) {
        const uint64_t j = base + k * inner;
        if (r[j] > r[br]) br = j;
        if (c[j] > c[bc]) bc = j;
      }
      ++rows_;
      agree_ += br == bc;
    }
}

FidelityStats FidelityAccumulator::stats() const {
  FidelityStats s;
  s.cosine = rr_ > 0 && cc_ > 0 ? dot_ / std::sqrt(rr_ * cc_) : (rr_ == cc_ ? 1.0 : 0.0);
  s.sqnr_db = err2_ > 0 ? 10 * std::log10(rr_ / err2_) : std::numeric_limits<double>::infinity();
  s.max_abs_err = max_abs_;
  s.argmax_agreement = rows_ ? static_cast<double>(agree_) / static_cast<double>(rows_) : 1.0;
  s.elements = n_;
  s.rows = rows_;
  return s;
}

Fidelity::Fidelity(std::vector<std::string> output_names, int argmax_axis)
    : names_(std::move(output_names)), acc_(names_.size(), FidelityAccumulator(argmax_axis)) {}

void Fidelity::add(const NamedValues& reference, const NamedValues& candidate, const std::string& sample) {
  if (reference.size() != acc_.size() || candidate.size() != acc_.size())
    throw Error(sample + ": expected " + std::to_string(acc_.size()) + " outputs, the reference gives " +
                std::to_string(reference.size()) + " and the candidate " + std::to_string(candidate.size()));
  for (size_t k = 0; k < acc_.size(); ++k)
    acc_[k].add(reference[k].second, candidate[k].second,
                sample + ": output " + std::to_string(k) + " ('" + names_[k] + "')");
}

std::vector<std::pair<std::string, FidelityStats>> Fidelity::stats() const {
  std::vector<std::pair<std::string, FidelityStats>> out;
  for (size_t k = 0; k < acc_.size(); ++k) out.emplace_back(names_[k], acc_[k].stats());
  return out;
}

FidelityStats worst_of(const std::vector<std::pair<std::string, FidelityStats>>& outputs) {
  FidelityStats w;
  w.sqnr_db = std::numeric_limits<double>::infinity();
  for (const auto& [name, s] : outputs) {
    w.cosine = std::min(w.cosine, s.cosine);
    w.sqnr_db = std::min(w.sqnr_db, s.sqnr_db);
    w.max_abs_err = std::max(w.max_abs_err, s.max_abs_err);
    w.argmax_agreement = std::min(w.argmax_agreement, s.argmax_agreement);
    w.elements += s.elements;
    w.rows += s.rows;
  }
  return w;
}

}  // namespace qforge
