#include "collector.h"
#include "stats_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qforge::calib {

Collector::Collector(const Settings& s) : s_(s) {
  if (histogram()) {
    pos_.assign(static_cast<size_t>(s_.bins), 0.0);
    neg_.assign(static_cast<size_t>(s_.bins), 0.0);
  }
}

void Collector::widen_to(double absmax) {
  if (width_ == 0) {
    // The first non-zero value sets the scale: the range is its magnitude
    // (a little over, so that it falls in the last bin).
    width_ = absmax / s_.bins * (1 + 1e-7);
    if (width_ == 0) width_ = std::numeric_limits<double>::min();
    return;
  }
  while (absmax >= width_ * s_.bins) {
    for (auto* h : {&pos_, &neg_}) {
      const size_t n = h->size();
      for (size_t i = 0; i < n / 2; ++i) (*h)[i] = (*h)[2 * i] + (*h)[2 * i + 1];
      std::fill(h->begin() + static_cast<std::ptrdiff_t>(n / 2), h->end(), 0.0);
    }
    width_ *= 2;
  }
}

void Collector::add(const float* x, uint64_t n) {
  const SpanStats st = span_stats(x, static_cast<size_t>(n), false);
  nonfinite_ += n - st.finite;
  if (st.finite == 0) return;  // nothing finite
  const double lo = st.lo, hi = st.hi;
  if (count_ == 0) {
    min_ = lo, max_ = hi;
  } else {
    min_ = std::min(min_, lo), max_ = std::max(max_, hi);
  }
  // Moving averages of each observation's min and max (ONNX Runtime's
  // MinMax calibrator with moving_average).
  if (observations_ == 0) {
    ma_min_ = lo, ma_max_ = hi;
  } else {
    ma_min_ += s_.moving_average * (lo - ma_min_);
    ma_max_ += s_.moving_average * (hi - ma_max_);
  }
  ++observations_;
  count_ += n;
  if (!histogram()) return;
  const double absmax = std::max(std::fabs(lo), std::fabs(hi));
  if (absmax > 0) widen_to(absmax);
  if (width_ == 0) {
    zeros_ += static_cast<double>(st.finite);
    return;
  }
  // Slots computed in vectors, counted in integers, added to the histograms once.
  const int32_t bins = s_.bins;
  const float inv = static_cast<float>(1.0 / width_);
  counts_.assign(static_cast<size_t>(2 * bins + 2), 0);
  slots_.resize(std::min<uint64_t>(n, 4096));
  for (uint64_t i = 0; i < n; i += slots_.size()) {
    const size_t m = static_cast<size_t>(std::min<uint64_t>(slots_.size(), n - i));
    histogram_slots(x + i, m, inv, bins, slots_.data());
    for (size_t k = 0; k < m; ++k) ++counts_[static_cast<size_t>(slots_[k])];
  }
  for (int32_t k = 0; k < bins; ++k) {
    pos_[static_cast<size_t>(k)] += static_cast<double>(counts_[static_cast<size_t>(k)]);
    neg_[static_cast<size_t>(k)] += static_cast<double>(counts_[static_cast<size_t>(bins + k)]);
  }
  zeros_ += static_cast<double>(counts_[static_cast<size_t>(2 * bins)]);
}

// The value below which a fraction q of the observed values lie (bins are
// taken as uniformly filled).
double Collector::quantile(double q) const {
  double total = zeros_;
  for (double c : pos_) total += c;
  for (double c : neg_) total += c;
  if (total == 0) return 0;
  const double target = q * total;
  double acc = 0;
  // Negative values from the most negative bin up, then zeros, then positive.
  for (size_t i = neg_.size(); i-- > 0;) {
    if (acc + neg_[i] >= target && neg_[i] > 0) {
      const double f = (target - acc) / neg_[i];  // fraction into this bin, from its far edge
      return -(static_cast<double>(i + 1) - f) * width_;
    }
    acc += neg_[i];
  }
  if (acc + zeros_ >= target) return 0;
  acc += zeros_;
  for (size_t i = 0; i < pos_.size(); ++i) {
    if (acc + pos_[i] >= target && pos_[i] > 0)
      return (static_cast<double>(i) + (target - acc) / pos_[i]) * width_;
    acc += pos_[i];
  }
  return max_;
}

namespace {

// A distribution with every zero bin given eps, taken evenly from the
// non-zero bins (the smoothing ONNX Runtime's and TensorRT's entropy
// calibrators apply before comparing). False when every bin is zero.
bool smooth(std::vector<double>& d) {
  double sum = 0;
  size_t zeros = 0;
  for (double v : d) sum += v, zeros += v == 0;
  const size_t nonzero = d.size() - zeros;
  if (sum == 0 || nonzero == 0) return false;
  const double eps = 1e-4, take = eps * static_cast<double>(zeros) / static_cast<double>(nonzero);
  for (double& v : d) v = v == 0 ? eps : v / sum - take;
  return true;
}

// KL divergence of Q from P, after smoothing both.
double kl_divergence(std::vector<double> p, std::vector<double> q) {
  if (!smooth(p) || !smooth(q)) return std::numeric_limits<double>::infinity();
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0 && q[i] > 0) kl += p[i] * std::log(p[i] / q[i]);
  return kl;
}

}  // namespace

// The threshold on |x|: Percentile (of |x|), Entropy (TensorRT's KL search)
// or Mse (the clip with the least expected squared error).
double Collector::threshold(const std::vector<double>& h, uint64_t total) const {
  const size_t B = h.size();
  if (total == 0 || width_ == 0) return 0;
  if (s_.method == Method::Percentile) {
    const double target = s_.percentile / 100.0 * static_cast<double>(total);
    double acc = 0;
    for (size_t i = 0; i < B; ++i) {
      if (acc + h[i] >= target && h[i] > 0) return (static_cast<double>(i) + (target - acc) / h[i]) * width_;
      acc += h[i];
    }
    return static_cast<double>(B) * width_;
  }
  // The last non-empty bin bounds every search.
  size_t used = B;
  while (used > 1 && h[used - 1] == 0) --used;
  if (s_.method == Method::Entropy) {
    const size_t levels = size_t{1} << (s_.bits - 1);  // magnitudes of a signed code
    if (used <= levels) return static_cast<double>(used) * width_;
    double best = std::numeric_limits<double>::infinity();
    size_t best_i = used;
    for (size_t i = levels; i <= used; ++i) {
      // P: the first i bins, with everything beyond folded into the last.
      std::vector<double> p(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(i));
      for (size_t j = i; j < B; ++j) p[i - 1] += h[j];
      // Q: P merged into `levels` groups, each spread evenly over its non-empty bins.
      std::vector<double> q(i, 0.0);
      const double per = static_cast<double>(i) / static_cast<double>(levels);
      for (size_t g = 0; g < levels; ++g) {
        const size_t a = static_cast<size_t>(std::floor(g * per)),
                     b = static_cast<size_t>(std::floor((g + 1) * per));
        const size_t end = g + 1 == levels ? i : std::max(b, a + 1);
        double sum = 0;
        size_t nz = 0;
        for (size_t j = a; j < end; ++j) sum += h[j], nz += h[j] != 0;
        if (g + 1 == levels)
          for (size_t j = i; j < B; ++j) sum += h[j];
        for (size_t j = a; j < end; ++j)
          if (h[j] != 0) q[j] = sum / static_cast<double>(nz);
      }
      const double kl = kl_divergence(p, q);
      if (kl < best) best = kl, best_i = i;
    }
    return (static_cast<double>(best_i) + 0.5) * width_;
  }
  // Mse: expected squared error of a uniform quantizer clipping at t, over the bins' centres.
  const double steps = std::ldexp(1.0, s_.bits - 1) - 1;  // t / steps = the step of a symmetric signed code
  double best = std::numeric_limits<double>::infinity(), best_t = static_cast<double>(used) * width_;
  for (size_t k = std::max<size_t>(1, used / 32); k <= used; ++k) {
    const double t = static_cast<double>(k) * width_;
    const double step = t / steps;
    double err = 0;
    for (size_t i = 0; i < used; ++i) {
      if (h[i] == 0) continue;
      const double c = (static_cast<double>(i) + 0.5) * width_;
      err += h[i] * (c <= t ? step * step / 12.0 : (c - t) * (c - t));
    }
    if (err < best) best = err, best_t = t;
  }
  return best_t;
}

quant::Range Collector::range() const {
  if (count_ == 0) return {0, 0};
  if (s_.method == Method::MinMax) {
    double lo = s_.moving_average > 0 ? ma_min_ : min_, hi = s_.moving_average > 0 ? ma_max_ : max_;
    if (s_.symmetric) {
      const double a = std::max(std::fabs(lo), std::fabs(hi));
      return {lo < 0 ? -a : 0.0, hi > 0 ? a : 0.0};
    }
    return {lo, hi};
  }
  if (s_.method == Method::Percentile && !s_.symmetric) {
    const double q = s_.percentile / 100.0;
    return {std::max(min_, quantile(1 - q)), std::min(max_, quantile(q))};
  }
  // Symmetric methods work on |x|: pos + neg (+ zeros in bin 0).
  std::vector<double> h(pos_.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = pos_[i] + neg_[i];
  if (!h.empty()) h[0] += zeros_;
  double total = 0;
  for (double c : h) total += c;
  const double t =
      std::min(threshold(h, static_cast<uint64_t>(total)), std::max(std::fabs(min_), std::fabs(max_)));
  // One-signed values (after a ReLU, say) keep one side.
  return {min_ < 0 ? -t : 0.0, max_ > 0 ? t : 0.0};
}

void ChannelCollector::add(const float* x, const std::vector<int64_t>& shape) {
  if (!valid_) return;
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t axis = axis_ < 0 ? rank - 1 : axis_;
  if (rank < 2 || axis >= rank || axis < 0) {
    valid_ = false;
    return;
  }
  const int64_t C = shape[static_cast<size_t>(axis)];
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[static_cast<size_t>(d)];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= shape[static_cast<size_t>(d)];
  if (count_.empty()) {
    if (C <= 0) {
      valid_ = false;
      return;
    }
    min_.assign(static_cast<size_t>(C), std::numeric_limits<double>::infinity());
    max_.assign(static_cast<size_t>(C), -std::numeric_limits<double>::infinity());
    sum_.assign(static_cast<size_t>(C), 0.0);
    count_.assign(static_cast<size_t>(C), 0);
  } else if (static_cast<size_t>(C) != count_.size()) {
    valid_ = false;
    return;
  }
  if (inner == 1) {
    // Channels along the last axis (MatMul inputs): row by row.
    for (int64_t o = 0; o < outer; ++o) {
      const float* row = x + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const float v = row[c];
        if (!std::isfinite(v)) continue;
        const size_t k = static_cast<size_t>(c);
        min_[k] = std::min<double>(min_[k], v), max_[k] = std::max<double>(max_[k], v);
        sum_[k] += v, ++count_[k];
      }
    }
    return;
  }
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < C; ++c) {
      const SpanStats st = span_stats(x + (o * C + c) * inner, static_cast<size_t>(inner), true);
      const size_t k = static_cast<size_t>(c);
      if (st.finite == 0) continue;
      min_[k] = std::min<double>(min_[k], st.lo), max_[k] = std::max<double>(max_[k], st.hi);
      sum_[k] += st.sum, count_[k] += st.finite;
    }
  }
}

quant::ChannelStats ChannelCollector::stats() const {
  quant::ChannelStats s;
  s.axis = axis_;
  for (size_t c = 0; c < count_.size(); ++c) {
    const bool any = count_[c] > 0;
    s.min.push_back(any ? min_[c] : 0.0);
    s.max.push_back(any ? max_[c] : 0.0);
    s.mean.push_back(any ? sum_[c] / static_cast<double>(count_[c]) : 0.0);
  }
  return s;
}

}  // namespace qforge::calib
