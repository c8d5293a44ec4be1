// select-precision: measurement and choice (see select_precision.h).
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <thread>

#include "gguf/gguf.h"
#include "imatrix.h"
#include "kernels/quants.h"
#include "qforge/status.h"
#include "quantize_gguf.h"
#include "select_precision.h"
#include "sensitivity.h"

namespace qforge::select_precision {
namespace {

using gguf_quant::Decision;
using gguf_quant::Role;

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string type_name(ElemType t) { return upper(name_of(t)); }

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string fmt(double v, int digits = 4) {
  std::ostringstream o;
  o.precision(digits);
  o << v;
  return o.str();
}

struct Budget {
  enum class Kind { Bytes, BitsPerWeight, FileType } kind = Kind::Bytes;
  double value = 0;
  std::string file_type;  // canonical name, for Kind::FileType
};

Budget parse_budget(const std::string& text) {
  Budget b;
  SizeValue sv;
  if (parse_size(text, sv)) {
    b.kind = sv.unit == SizeValue::Unit::Bytes ? Budget::Kind::Bytes : Budget::Kind::BitsPerWeight;
    b.value = sv.value;
    return b;
  }
  try {
    const auto& ft = gguf_quant::parse_file_type(text);
    b.kind = Budget::Kind::FileType;
    b.file_type = gguf_quant::name_of(ft.ftype);
    return b;
  } catch (const Error&) {
    throw Error("select-precision: budget '" + text +
                "': expected a size (\"3.5GiB\", \"500MB\", a number of bytes), bits per weight (\"4.5bpw\") "
                "or a llama.cpp file type whose size to match (\"Q4_K_M\")");
  }
}

// One tensor's measurement: rows sampled, their floats, the imatrix row of each.
struct Measured {
  std::vector<Candidate> all;  // every measured type, in the order asked
};

struct Sums {
  double err = 0, xx = 0, xy = 0, yy = 0;
};

// Quantizes and dequantizes `rows` of `t` under each of `types`, on `threads`.
Measured measure(const Tensor& t, const std::vector<ElemType>& types, const float* imatrix, int64_t max_rows,
                 bool lookup, int threads, int64_t& measured_rows) {
  const int64_t ncols = t.row_length();
  const int64_t nrows = t.rows();
  const int64_t per_expert = t.shape.size() >= 2 ? t.shape[t.shape.size() - 2] : 1;
  const int64_t m = max_rows > 0 && nrows > max_rows ? max_rows : nrows;
  measured_rows = m;
  std::vector<int64_t> rows(static_cast<size_t>(m));
  for (int64_t k = 0; k < m; ++k)
    rows[static_cast<size_t>(k)] =
        m == nrows ? k : static_cast<int64_t>((static_cast<__int128>(k) * nrows) / m);

  // The sampled rows as floats.
  BlobPtr blob = t.bytes();
  if (!blob) throw Error("select-precision: tensor " + t.name + " has no data");
  const uint64_t row_bytes = *byte_size(t.type, static_cast<uint64_t>(ncols));
  if (blob->size() < row_bytes * static_cast<uint64_t>(nrows))
    throw Error("select-precision: tensor " + t.name + ": data has " + std::to_string(blob->size()) +
                " bytes, expected " + std::to_string(row_bytes * static_cast<uint64_t>(nrows)));
  std::vector<float> x(static_cast<size_t>(m * ncols));
  for (int64_t k = 0; k < m; ++k) {
    const uint8_t* src = blob->data() + static_cast<uint64_t>(rows[static_cast<size_t>(k)]) * row_bytes;
    float* dst = x.data() + k * ncols;
    if (t.type == ElemType::F32)
      std::memcpy(dst, src, static_cast<size_t>(ncols) * sizeof(float));
    else
      gguf::dequantize_row(t.type, src, dst, ncols);
  }
  blob.reset();
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      throw Error("select-precision: tensor " + t.name + ": row " +
                  std::to_string(rows[i / static_cast<size_t>(ncols)]) + ", column " +
                  std::to_string(static_cast<int64_t>(i) % ncols) + " is not finite");

  // Chunks of consecutive sampled rows of one expert (each expert has its imatrix row).
  struct Chunk {
    int64_t first, n;
    const float* im;
  };
  std::vector<Chunk> chunks;
  const int64_t per_chunk = std::max<int64_t>(1, 65536 / ncols);
  for (int64_t k = 0; k < m;) {
    const int64_t expert = rows[static_cast<size_t>(k)] / per_expert;
    int64_t e = k;
    while (e < m && e - k < per_chunk && rows[static_cast<size_t>(e)] / per_expert == expert) ++e;
    chunks.push_back({k, e - k, imatrix ? imatrix + expert * ncols : nullptr});
    k = e;
  }

  const size_t ntasks = types.size() * chunks.size();
  std::vector<Sums> sums(ntasks);
  std::atomic<size_t> next{0};
  std::vector<std::string> errors(ntasks);
  auto work = [&]() {
    std::vector<uint8_t> q;
    std::vector<float> y;
    for (size_t task; (task = next.fetch_add(1)) < ntasks;) {
      const ElemType type = types[task / chunks.size()];
      const Chunk& c = chunks[task % chunks.size()];
      try {
        const float* xs = x.data() + c.first * ncols;
        q.resize(gguf::row_size(type, ncols) * static_cast<size_t>(c.n));
        y.resize(static_cast<size_t>(c.n * ncols));
        gguf::quantize_chunk(type, xs, q.data(), 0, c.n, ncols, c.im);
        gguf::dequantize_row(type, q.data(), y.data(), c.n * ncols);
        Sums s;
        for (int64_t r = 0; r < c.n; ++r)
          for (int64_t j = 0; j < ncols; ++j) {
            const double w = c.im ? static_cast<double>(c.im[j]) : 1.0;
            const double a = xs[r * ncols + j], b = y[static_cast<size_t>(r * ncols + j)];
            s.err += w * (a - b) * (a - b);
            s.xx += w * a * a;
            s.xy += w * a * b;
            s.yy += w * b * b;
          }
        sums[task] = s;
      } catch (const std::exception& e) {
        errors[task] = e.what();
      }
    }
  };
  const int n = static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(1, threads)), ntasks));
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  for (size_t task = 0; task < ntasks; ++task)
    if (!errors[task].empty())
      throw Error("select-precision: tensor " + t.name + " (" + type_name(types[task / chunks.size()]) +
                  "): " + errors[task]);

  Measured out;
  const double scale = static_cast<double>(nrows) / static_cast<double>(m);
  for (size_t k = 0; k < types.size(); ++k) {
    Sums s;
    for (size_t c = 0; c < chunks.size(); ++c) {  // in a fixed order: no thread-dependent sums
      const Sums& p = sums[k * chunks.size() + c];
      s.err += p.err, s.xx += p.xx, s.xy += p.xy, s.yy += p.yy;
    }
    Candidate cand;
    cand.type = types[k];
    cand.bytes = gguf::row_size(types[k], ncols) * static_cast<uint64_t>(nrows);
    cand.error = s.err * scale / (lookup ? static_cast<double>(nrows) : 1.0);
    cand.cosine = s.xx > 0 && s.yy > 0 ? s.xy / std::sqrt(s.xx * s.yy) : 1.0;
    cand.sqnr_db = s.err > 0 ? 10 * std::log10(s.xx / s.err) : 999.0;
    out.all.push_back(cand);
  }
  return out;
}

// ------------------------------------------------------------------ the knapsack
struct Item {
  std::vector<uint64_t> cost;  // bytes, per option
  std::vector<double> error;
};

// Indices of the options of `it` that no other option dominates (cheaper or equal
// and better or equal, one of them strictly), in the original order.
std::vector<size_t> undominated(const Item& it) {
  std::vector<size_t> keep;
  for (size_t a = 0; a < it.cost.size(); ++a) {
    bool dominated = false;
    for (size_t b = 0; b < it.cost.size() && !dominated; ++b) {
      if (a == b) continue;
      const bool le = it.cost[b] <= it.cost[a] && it.error[b] <= it.error[a];
      const bool strict = it.cost[b] < it.cost[a] || it.error[b] < it.error[a];
      dominated = le && (strict || b < a);  // equal options: keep the first
    }
    if (!dominated) keep.push_back(a);
  }
  return keep;
}

struct Choice {
  std::vector<size_t> pick;
  std::string method;
};

// Minimises the sum of errors with the sum of costs <= capacity. The caller has
// checked that the cheapest options fit.
Choice solve(const std::vector<Item>& items, uint64_t capacity) {
  const size_t n = items.size();
  std::vector<std::vector<size_t>> opts(n);
  uint64_t g = 0;
  for (size_t i = 0; i < n; ++i) {
    opts[i] = undominated(items[i]);
    for (size_t k : opts[i]) g = std::gcd(g, items[i].cost[k]);
  }
  if (g == 0) g = 1;
  uint64_t cell = g;
  uint64_t cells = capacity / cell;
  const uint64_t limit = std::min<uint64_t>(kMaxDpEntries / std::max<size_t>(1, n), kMaxDpCells);
  bool rounded = false;
  if (cells + 1 > limit) {
    cell = (capacity + limit - 2) / (limit - 1);
    cells = capacity / cell;
    rounded = true;
  }
  auto w = [&](size_t i, size_t k) { return (items[i].cost[k] + cell - 1) / cell; };
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> dp(cells + 1, 0.0), nd(cells + 1);
  std::vector<uint8_t> choice(n * (cells + 1), 0);
  for (size_t i = 0; i < n; ++i) {
    uint8_t* ch = choice.data() + i * (cells + 1);
    for (uint64_t c = 0; c <= cells; ++c) {
      double best = inf;
      uint8_t bk = 0;
      for (size_t o = 0; o < opts[i].size(); ++o) {
        const uint64_t wk = w(i, opts[i][o]);
        if (wk > c) continue;
        const double v = dp[c - wk] + items[i].error[opts[i][o]];
        if (v < best) best = v, bk = static_cast<uint8_t>(o);
      }
      nd[c] = best;
      ch[c] = bk;
    }
    dp.swap(nd);
  }
  Choice out;
  out.pick.assign(n, 0);
  uint64_t c = cells;
  if (!std::isfinite(dp[cells])) throw Error("select-precision: internal error: no plan fits the grid");
  for (size_t i = n; i-- > 0;) {
    const size_t k = opts[i][choice[i * (cells + 1) + c]];
    out.pick[i] = k;
    c -= w(i, k);
  }
  // Spend what the grid's rounding left: the upgrade with the best error drop per byte.
  uint64_t used = 0;
  for (size_t i = 0; i < n; ++i) used += items[i].cost[out.pick[i]];
  int upgrades = 0;
  for (;;) {
    double best_rate = 0;
    size_t bi = n, bk = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t cur = items[i].cost[out.pick[i]];
      for (size_t k : opts[i]) {
        const uint64_t ck = items[i].cost[k];
        const double gain = items[i].error[out.pick[i]] - items[i].error[k];
        if (gain <= 0) continue;
        const uint64_t extra = ck > cur ? ck - cur : 0;
        if (used + extra > capacity) continue;
        const double rate = gain / static_cast<double>(std::max<uint64_t>(1, extra));
        if (rate > best_rate) best_rate = rate, bi = i, bk = k;
      }
    }
    if (bi == n) break;
    used = used - items[bi].cost[out.pick[bi]] + items[bi].cost[bk];
    out.pick[bi] = bk;
    ++upgrades;
  }
  out.method = "exact dynamic programme over " + std::to_string(cells) + " cells of " + std::to_string(cell) +
               " bytes" + (rounded ? " (costs rounded up to the cell)" : "") + ", then " +
               std::to_string(upgrades) + " greedy upgrade(s) with exact bytes";
  return out;
}

}  // namespace

Result select(const Model& model, const Settings& s, int threads, Progress& progress) {
  if (model.graph)
    throw Error("select-precision: needs a model without a graph (GGUF), found " + model.format);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Budget budget = parse_budget(s.budget);
  Result res;

  // Candidate types.
  std::vector<ElemType> cands;
  std::vector<std::string> unusable;
  for (const auto& name : s.types) {
    auto t = elem_from_name(name);
    if (!t || traits(*t).ggml_id < 0)
      throw Error("select-precision: types: unknown ggml tensor type '" + name + "'");
    if (!gguf::can_quantize(*t) || gguf::requires_imatrix(*t)) {
      unusable.push_back(type_name(*t));
      continue;
    }
    if (std::find(cands.begin(), cands.end(), *t) == cands.end()) cands.push_back(*t);
  }
  if (!unusable.empty()) {
    std::string l;
    for (const auto& u : unusable) l += (l.empty() ? "" : ", ") + u;
    res.notes.push_back("candidate type(s) qforge cannot quantize, left out: " + l);
  }
  if (cands.empty()) throw Error("select-precision: no candidate type qforge can quantize (types)");
  // A canonical order (the list is a set; ties between equal options go to the first).
  std::sort(cands.begin(), cands.end(),
            [](ElemType a, ElemType b) { return traits(a).ggml_id < traits(b).ggml_id; });

  // What quantize-gguf will make of the model: which tensors it quantizes, its metadata
  // (so the header is counted exactly), and for a file-type budget that file's size.
  Model ref = model;
  gguf_quant::QuantizeOptions q;
  q.type = budget.kind == Budget::Kind::FileType ? budget.file_type : "Q8_0";
  q.imatrix = s.imatrix;
  q.imatrix_written = s.imatrix_written;
  q.allow_requantize = true;
  const gguf_quant::QuantizeSummary sum = gguf_quant::quantize_model(ref, q, 1);
  const uint32_t align = gguf_alignment_for(ref);
  const uint64_t ref_file = gguf_file_size(ref);
  uint64_t data_aligned = 0;
  for (const auto& t : ref.tensors) data_aligned += align_up(t.nbytes(), align);
  const uint64_t header = ref_file - data_aligned;

  // The objective: the weight error, or the measured KL sensitivities.
  std::optional<Sensitivity> sens;
  if (s.objective == "kl") {
    if (!s.sensitivity)
      throw Error(
          "select-precision: objective = \"kl\" needs a sensitivity table: put a step "
          "{ pass = \"gguf-sensitivity\", dataset = \"<token ids>\" } before this one (or name one with "
          "inputs)");
    sens = Sensitivity::from_table(*s.sensitivity);
    if (!sens->supported) {
      res.warnings.push_back("objective = \"kl\": no sensitivities were measured (" + sens->reason +
                             "), so the plan minimises the weight error instead");
      sens.reset();
    } else if (sens->imatrix != !s.imatrix.empty()) {
      res.warnings.push_back(std::string("objective = \"kl\": the sensitivities were measured ") +
                             (sens->imatrix ? "with" : "without") +
                             " an importance matrix and this plan is made " +
                             (s.imatrix.empty() ? "without" : "with") +
                             " one: give gguf-sensitivity and select-precision the same imatrix");
    }
  } else if (s.sensitivity) {
    res.notes.push_back("a sensitivity table is an input but objective = \"error\": the table is not used");
  }
  auto kl_of = [&](const std::string& tensor, ElemType type) {
    auto it = sens->kl.find(tensor);
    if (it == sens->kl.end())
      throw Error("select-precision: the sensitivity table has no entry for tensor " + tensor +
                  ": was it measured on this model?");
    auto jt = it->second.find(type_name(type));
    if (jt == it->second.end())
      throw Error("select-precision: the sensitivity table has no measurement of " + tensor + " as " +
                  type_name(type) + ": give gguf-sensitivity every type select-precision may choose (types)");
    return jt->second;
  };

  std::shared_ptr<gguf_quant::Imatrix> im;
  if (!s.imatrix.empty()) im = std::make_shared<gguf_quant::Imatrix>(gguf_quant::load_imatrix(s.imatrix));
  const bool tied = model.tensor("output.weight") == nullptr;

  // Planned tensors, in llama.cpp's order.
  std::vector<const Decision*> planned;
  uint64_t fixed_aligned = 0, fixed_raw = 0;
  for (const Decision& d : sum.plan) {
    const Tensor* t = ref.tensor(d.name);
    if (d.allows_quantization) {
      planned.push_back(&d);
    } else {
      fixed_aligned += align_up(t->nbytes(), align);
      fixed_raw += t->nbytes();
    }
  }
  if (planned.empty()) throw Error("select-precision: the model has no tensor llama.cpp would quantize");
  const uint64_t n_weights = model.parameter_count();

  // Capacity for the planned tensors' costs.
  const bool aligned = budget.kind != Budget::Kind::BitsPerWeight;
  uint64_t budget_bytes = 0;  // the whole file (0 for a bpw budget)
  double budget_data = 0;     // tensor data bytes (bpw budget)
  if (budget.kind == Budget::Kind::Bytes) budget_bytes = static_cast<uint64_t>(budget.value);
  if (budget.kind == Budget::Kind::FileType) budget_bytes = ref_file;
  if (budget.kind == Budget::Kind::BitsPerWeight)
    budget_data = std::floor(budget.value * static_cast<double>(n_weights) / 8.0);
  auto cost_of = [&](uint64_t bytes) { return aligned ? align_up(bytes, align) : bytes; };

  // Measure.
  progress.begin("select-precision", planned.size(), "tensors");
  std::vector<Item> items;
  std::vector<double> ref_error(planned.size(), 0), ref_kl(planned.size(), 0);
  bool ref_kl_known = true;
  bool sampled = false;
  int weighted = 0;
  for (size_t i = 0; i < planned.size(); ++i) {
    const Decision& d = *planned[i];
    const Tensor& t = *model.tensor(d.name);
    const int64_t ncols = t.row_length();
    std::vector<ElemType> types;
    for (ElemType c : cands)
      if (ncols % traits(c).block_size == 0) types.push_back(c);
    if (types.empty()) {
      types.push_back(ElemType::F16);
      res.notes.push_back(d.name + ": no candidate type fits row length " + std::to_string(ncols) +
                          ", so F16");
    }
    // The mixture's own type, measured for the comparison.
    size_t ref_index = types.size();
    bool appended = false;  // measured for the comparison only, not a candidate
    if (budget.kind == Budget::Kind::FileType && d.to != d.from) {
      auto it = std::find(types.begin(), types.end(), d.to);
      ref_index = static_cast<size_t>(it - types.begin());
      if (it == types.end()) types.push_back(d.to), appended = true;
    }
    const float* imrow = nullptr;
    if (im) {
      auto it = im->entries.find(d.name);
      const int64_t ne2 = t.shape.size() >= 3 ? t.shape[t.shape.size() - 3] : 1;
      if (it != im->entries.end() && static_cast<int64_t>(it->second.size()) == ncols * ne2) {
        imrow = it->second.data();
        ++weighted;
      }
    }
    const bool lookup = d.role == Role::TokenEmbd && !tied && !imrow;
    TensorChoice tc;
    tc.name = d.name;
    tc.rows = t.rows();
    Measured mres = measure(t, types, imrow, s.max_rows, lookup, threads, tc.measured_rows);
    if (tc.measured_rows < tc.rows) sampled = true;
    if (budget.kind == Budget::Kind::FileType) {
      if (ref_index < types.size()) ref_error[i] = mres.all[ref_index].error;
      if (sens) {
        const auto& costs = sens->kl[d.name];
        auto it = costs.find(type_name(d.to));
        if (d.to == d.from)
          ref_kl[i] = 0;
        else if (it != costs.end())
          ref_kl[i] = it->second;
        else
          ref_kl_known = false;
      }
    }
    // Candidates: the measured types of the candidate list (not the reference-only one),
    // within the floors.
    const size_t n_cand = appended ? types.size() - 1 : types.size();
    std::vector<Candidate> kept;
    for (size_t k = 0; k < n_cand; ++k) {
      const Candidate& c = mres.all[k];
      if (s.min_cosine && c.cosine < *s.min_cosine) continue;
      if (s.min_sqnr_db && c.sqnr_db < *s.min_sqnr_db) continue;
      kept.push_back(c);
    }
    if (kept.empty()) {
      size_t best = 0;
      for (size_t k = 1; k < n_cand; ++k)
        if (mres.all[k].sqnr_db > mres.all[best].sqnr_db) best = k;
      kept.push_back(mres.all[best]);
      res.warnings.push_back(d.name + ": no candidate type meets the fidelity floor; " +
                             type_name(mres.all[best].type) + " (SQNR " + fmt(mres.all[best].sqnr_db) +
                             " dB, cosine " + fmt(mres.all[best].cosine, 6) + ") is the closest");
    }
    if (sens)
      for (auto& c : kept) c.kl = kl_of(d.name, c.type);
    tc.candidates = kept;
    Item it;
    for (const auto& c : kept) {
      it.cost.push_back(cost_of(c.bytes));
      it.error.push_back(sens ? c.kl : c.error);
    }
    items.push_back(std::move(it));
    res.tensors.push_back(std::move(tc));
    progress.advance(1);
  }
  progress.end();

  // Feasibility, then the choice.
  uint64_t min_cost = 0;
  for (const auto& it : items) min_cost += *std::min_element(it.cost.begin(), it.cost.end());
  uint64_t capacity = 0;
  const uint64_t fixed = aligned ? header + fixed_aligned : fixed_raw;
  const double limit = aligned ? static_cast<double>(budget_bytes) : budget_data;
  if (static_cast<double>(fixed + min_cost) > limit) {
    const uint64_t need_file = header + fixed_aligned + [&] {
      uint64_t a = 0;
      for (const auto& tc : res.tensors) {
        uint64_t m = UINT64_MAX;
        for (const auto& c : tc.candidates) m = std::min<uint64_t>(m, align_up(c.bytes, align));
        a += m;
      }
      return a;
    }();
    const double need_bpw = static_cast<double>(fixed_raw +
                                                [&] {
                                                  uint64_t a = 0;
                                                  for (const auto& tc : res.tensors) {
                                                    uint64_t m = UINT64_MAX;
                                                    for (const auto& c : tc.candidates)
                                                      m = std::min<uint64_t>(m, c.bytes);
                                                    a += m;
                                                  }
                                                  return a;
                                                }()) *
                            8.0 / static_cast<double>(n_weights);
    throw Error("select-precision: budget '" + s.budget +
                "' is too small: the smallest candidate types need a " + std::to_string(need_file) +
                "-byte file (" + fmt(need_bpw) + " bpw); give at least that, or add smaller types");
  }
  capacity = static_cast<uint64_t>(limit) - fixed;
  Choice ch;
  std::optional<double> bound;  // the weight error the KL plan may not exceed
  if (sens && s.max_error) {
    if (*s.max_error == "reference") {
      if (budget.kind != Budget::Kind::FileType)
        throw Error("select-precision: max_error = \"reference\" needs a llama.cpp file type as the budget");
      double r = 0;
      for (double e : ref_error) r += e;
      bound = r;
    } else {
      bound = std::stod(*s.max_error);
    }
  }
  if (!bound) {
    ch = solve(items, capacity);
  } else {
    // Minimise KL with the weight error at most `bound`: the Lagrangian KL + lambda * error,
    // solved exactly for each lambda, with the least lambda whose plan meets the bound found
    // by doubling, then bisection (in log space).
    auto weighted = [&](double lambda) {
      std::vector<Item> w = items;
      for (size_t i = 0; i < w.size(); ++i)
        for (size_t k = 0; k < w[i].error.size(); ++k)
          w[i].error[k] = res.tensors[i].candidates[k].kl + lambda * res.tensors[i].candidates[k].error;
      return solve(w, capacity);
    };
    auto error_of = [&](const Choice& c) {
      double e = 0;
      for (size_t i = 0; i < c.pick.size(); ++i) e += res.tensors[i].candidates[c.pick[i]].error;
      return e;
    };
    auto kl_of_choice = [&](const Choice& c) {
      double e = 0;
      for (size_t i = 0; i < c.pick.size(); ++i) e += res.tensors[i].candidates[c.pick[i]].kl;
      return e;
    };
    int solves = 1;
    Choice c0 = weighted(0);
    if (error_of(c0) <= *bound) {
      ch = c0;
      res.notes.push_back("max_error " + fmt(*bound, 6) +
                          " does not bind: the least-KL plan's weight error is " + fmt(error_of(c0), 6));
    } else {
      std::vector<Item> plain = items;
      for (size_t i = 0; i < plain.size(); ++i)
        for (size_t k = 0; k < plain[i].error.size(); ++k)
          plain[i].error[k] = res.tensors[i].candidates[k].error;
      const double least = error_of(solve(plain, capacity));
      if (least > *bound)
        throw Error("select-precision: max_error " + fmt(*bound, 6) + " cannot be met within budget '" +
                    s.budget + "': the least weight error that fits is " + fmt(least, 6));
      double lo = 0, hi = kl_of_choice(c0) / std::max(error_of(c0), 1e-300);
      Choice best;
      for (;; hi *= 4) {
        best = weighted(hi);
        ++solves;
        if (error_of(best) <= *bound || solves > 200) break;
        lo = hi;
      }
      if (error_of(best) > *bound)
        throw Error("select-precision: internal error: no multiplier meets max_error " + fmt(*bound, 6));
      for (int it = 0; it < 24 && (lo == 0 || hi / lo > 1.0001); ++it) {
        const double mid = lo == 0 ? hi / 1024 : std::sqrt(lo * hi);
        Choice c = weighted(mid);
        ++solves;
        if (error_of(c) <= *bound)
          hi = mid, best = c;
        else
          lo = mid;
      }
      ch = best;
      ch.method += "; least KL with the weight error at most " + fmt(*bound, 6) + " (Lagrangian multiplier " +
                   fmt(hi, 4) + ", " + std::to_string(solves) + " solves)";
    }
    res.metrics["max_error"] = *bound;
  }

  // The plan, and its exact file size.
  gguf_quant::PrecisionPlan& plan = res.plan;
  plan.method = ch.method;
  plan.budget = s.budget;
  plan.budget_bytes = budget_bytes;
  plan.weighting = im ? "imatrix" : "none";
  uint64_t raw = fixed_raw;
  double total = 0, ref_total = 0, kl_total = 0, ref_kl_total = 0;
  for (size_t i = 0; i < planned.size(); ++i) {
    TensorChoice& tc = res.tensors[i];
    tc.chosen = ch.pick[i];
    const Candidate& c = tc.candidates[tc.chosen];
    plan.tensors.push_back({tc.name, type_name(c.type), c.bytes, c.error});
    ref.tensor(tc.name)->type = c.type;
    raw += c.bytes;
    total += c.error;
    ref_total += ref_error[i];
    kl_total += c.kl;
    ref_kl_total += ref_kl[i];
  }
  plan.file_bytes = gguf_file_size(ref);
  plan.bits_per_weight = static_cast<double>(raw) * 8.0 / static_cast<double>(n_weights);
  plan.error = total;
  if (budget_bytes && plan.file_bytes > budget_bytes)
    throw Error("select-precision: internal error: the plan's file (" + std::to_string(plan.file_bytes) +
                " bytes) exceeds the budget (" + std::to_string(budget_bytes) + ")");

  res.metrics["bits_per_weight"] = plan.bits_per_weight;
  res.metrics["error"] = plan.error;
  res.metrics["file_bytes"] = static_cast<double>(plan.file_bytes);
  if (budget_bytes) res.metrics["budget_bytes"] = static_cast<double>(budget_bytes);
  std::string counts;
  for (const auto& [type, n] : plan.counts()) {
    res.metrics["tensors_" + type] = n;
    counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + type;
  }
  res.notes.push_back("plan (" + s.budget + "): " + counts + "; file " + std::to_string(plan.file_bytes) +
                      " bytes" + (budget_bytes ? " of " + std::to_string(budget_bytes) : std::string()) +
                      ", " + fmt(plan.bits_per_weight) + " bpw, error " + fmt(plan.error, 6) + " (" +
                      (im ? "imatrix-weighted, " + std::to_string(weighted) + " of " +
                                std::to_string(planned.size()) + " tensors have an entry"
                          : std::string("unweighted")) +
                      ")");
  if (budget.kind == Budget::Kind::FileType) {
    res.metrics["reference_error"] = ref_total;
    res.metrics["reference_file_bytes"] = static_cast<double>(ref_file);
    res.notes.push_back("llama.cpp's " + budget.file_type + " mixture at the same size: error " +
                        fmt(ref_total, 6) + " (the plan's is " +
                        fmt(ref_total > 0 ? 100.0 * (ref_total - total) / ref_total : 0.0, 3) + "% lower)");
  }
  if (sens) {
    res.metrics["kl_estimate"] = kl_total;
    res.notes.push_back("objective: next-token KL, the sum of each tensor's measured sensitivity (" +
                        std::to_string(sens->measurements) + " measurements on " +
                        std::to_string(sens->positions) +
                        " positions; a first-order estimate): " + fmt(kl_total, 6) + " nats");
    if (budget.kind == Budget::Kind::FileType && ref_kl_known) {
      res.metrics["reference_kl_estimate"] = ref_kl_total;
      res.notes.push_back("llama.cpp's " + budget.file_type +
                          " mixture, estimated the same way: " + fmt(ref_kl_total, 6) + " nats");
    }
  }
  res.notes.push_back("method: " + ch.method);
  if (sampled)
    res.notes.push_back(
        "tensors with more than " + std::to_string(s.max_rows) +
        " rows were measured on that many evenly spaced rows (max_rows), the error scaled up");
  return res;
}

}  // namespace qforge::select_precision
