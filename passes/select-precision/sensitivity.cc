// gguf-sensitivity: per-matrix, per-type next-token KL measured with the float llama
// forward (see sensitivity.h).
#include "sensitivity.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>

#include "imatrix.h"
#include "kernels/quants.h"
#include "llama_forward.h"
#include "qforge/status.h"
#include "quant_options.h"

namespace qforge::select_precision {
namespace {

constexpr const char* kPass = "gguf-sensitivity";

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

Value table_value() {
  Value v;
  v.kind = Value::Kind::Table;
  return v;
}

std::string fmt(double v, int digits = 4) {
  std::ostringstream o;
  o.precision(digits);
  o << v;
  return o.str();
}

}  // namespace

Table Sensitivity::to_table() const {
  Table t;
  t.schema = kSensitivitySchema;
  t.data = table_value();
  auto& d = t.data.table;
  d.emplace_back("supported", Value::of_bool(supported));
  if (!supported) d.emplace_back("reason", Value::of_string(reason));
  d.emplace_back("imatrix", Value::of_bool(imatrix));
  d.emplace_back("sequences", Value::of_int(sequences));
  d.emplace_back("positions", Value::of_int(positions));
  d.emplace_back("measurements", Value::of_int(measurements));
  Value ts = table_value();
  for (const auto& [name, costs] : kl) {
    Value c = table_value();
    for (const auto& [type, v] : costs) c.table.emplace_back(type, Value::of_float(v));
    ts.table.emplace_back(name, std::move(c));
  }
  d.emplace_back("kl", std::move(ts));
  return t;
}

Sensitivity Sensitivity::from_table(const Table& t) {
  if (t.schema != kSensitivitySchema)
    throw Error("expected a '" + std::string(kSensitivitySchema) + "' table, found '" + t.schema + "'");
  auto bad = [](const std::string& why) { return Error("malformed sensitivity table: " + why); };
  Sensitivity s;
  const Value* sup = t.data.find("supported");
  if (!sup || sup->kind != Value::Kind::Bool) throw bad("no 'supported'");
  s.supported = sup->b;
  if (const Value* v = t.data.find("reason"); v && v->kind == Value::Kind::String) s.reason = v->s;
  if (const Value* v = t.data.find("imatrix"); v && v->kind == Value::Kind::Bool) s.imatrix = v->b;
  for (auto [key, dst] : {std::pair<const char*, int64_t*>{"sequences", &s.sequences},
                          {"positions", &s.positions},
                          {"measurements", &s.measurements}})
    if (const Value* v = t.data.find(key); v && v->kind == Value::Kind::Int) *dst = v->i;
  const Value* kl = t.data.find("kl");
  if (!kl || kl->kind != Value::Kind::Table) throw bad("no 'kl' table");
  for (const auto& [name, costs] : kl->table) {
    if (costs.kind != Value::Kind::Table) throw bad("tensor '" + name + "' is not a table");
    for (const auto& [type, v] : costs.table) {
      if (v.kind != Value::Kind::Float && v.kind != Value::Kind::Int)
        throw bad("tensor '" + name + "', type " + type + ": not a number");
      s.kl[name][type] = v.as_number();
    }
  }
  return s;
}

std::vector<std::vector<int32_t>> read_token_sequences(const Dataset& ds, int64_t samples, int64_t max_tokens,
                                                       int64_t n_vocab, int64_t n_ctx, int64_t& truncated) {
  size_t n = ds.size();
  if (samples > 0) n = std::min<size_t>(n, static_cast<size_t>(samples));
  if (n == 0) throw Error("dataset '" + ds.name + "' has no samples (token-id arrays)");
  if (ds.images)
    throw Error("dataset '" + ds.name + "' is an image dataset; gguf-sensitivity reads token ids");
  truncated = 0;
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < n; ++i) {
    const Sample s = ds.load(i);
    if (s.arrays.empty()) throw Error(s.source + ": no array");
    const Array& a = s.arrays[0];
    if (a.type != ElemType::I32 && a.type != ElemType::I64)
      throw Error(a.source + ": token ids must be int32 or int64, found " + name_of(a.type) +
                  " (save them with numpy as np.int32)");
    for (size_t d = 0; d + 1 < a.shape.size(); ++d)
      if (a.shape[d] != 1)
        throw Error(a.source +
                    ": expected one sequence of token ids (1-D, or leading dimensions of 1), found " +
                    std::to_string(a.shape.size()) + " dimensions with dimension " + std::to_string(d) +
                    " = " + std::to_string(a.shape[d]));
    int64_t count = 1;
    for (int64_t d : a.shape) count *= d;
    if (count == 0) throw Error(a.source + ": no token ids");
    int64_t keep = count;
    if (max_tokens > 0 && keep > max_tokens) keep = max_tokens, ++truncated;
    if (keep > n_ctx)
      throw Error(a.source + ": " + std::to_string(keep) + " tokens exceed the model's context length (" +
                  std::to_string(n_ctx) + "); set max_tokens");
    std::vector<int32_t> seq(static_cast<size_t>(keep));
    for (int64_t k = 0; k < keep; ++k) {
      int64_t id = 0;
      if (a.type == ElemType::I32) {
        int32_t v;
        std::memcpy(&v, a.data->data() + k * 4, 4);
        id = v;
      } else {
        std::memcpy(&id, a.data->data() + k * 8, 8);
      }
      if (id < 0 || id >= n_vocab)
        throw Error(a.source + ": token id " + std::to_string(id) + " at position " + std::to_string(k) +
                    " is outside the model's vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
      seq[static_cast<size_t>(k)] = static_cast<int32_t>(id);
    }
    out.push_back(std::move(seq));
  }
  return out;
}

SensitivityResult measure_sensitivity(const Model& model, const Dataset& ds, const SensitivitySettings& s,
                                      int threads, Progress& progress) {
  SensitivityResult res;
  Sensitivity& table = res.table;
  table.imatrix = !s.imatrix.empty();
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  std::unique_ptr<llama_ref::Forward> fwd;
  try {
    fwd = std::make_unique<llama_ref::Forward>(model);
  } catch (const Error& e) {
    table.reason = e.what();
    res.warnings.push_back(std::string(kPass) + ": the reference forward cannot run this model: " + e.what() +
                           "; select-precision with objective = \"kl\" falls back to the weight error");
    return res;
  }
  const llama_ref::Config& cfg = fwd->config();

  // Candidate types, in a canonical order.
  std::vector<ElemType> cands;
  for (const auto& name : s.types) {
    auto t = elem_from_name(name);
    if (!t || traits(*t).ggml_id < 0)
      throw Error(std::string(kPass) + ": types: unknown ggml tensor type '" + name + "'");
    if (!gguf::can_quantize(*t) || gguf::requires_imatrix(*t)) continue;
    if (std::find(cands.begin(), cands.end(), *t) == cands.end()) cands.push_back(*t);
  }
  if (cands.empty()) throw Error(std::string(kPass) + ": no candidate type qforge can quantize (types)");
  std::sort(cands.begin(), cands.end(),
            [](ElemType a, ElemType b) { return traits(a).ggml_id < traits(b).ggml_id; });

  std::shared_ptr<gguf_quant::Imatrix> im;
  if (!s.imatrix.empty()) im = std::make_shared<gguf_quant::Imatrix>(gguf_quant::load_imatrix(s.imatrix));

  int64_t truncated = 0;
  const auto seqs = read_token_sequences(ds, s.samples, s.max_tokens, cfg.n_vocab, cfg.n_ctx, truncated);
  if (truncated)
    res.notes.push_back(std::to_string(truncated) + " sequence(s) longer than max_tokens (" +
                        std::to_string(s.max_tokens) + ") were cut to their first max_tokens tokens");

  // The float run of every sequence: logits and the residual stream at each layer's input.
  omp_set_num_threads(1);
  std::vector<std::vector<float>> ref_logits(seqs.size());
  std::vector<std::vector<std::vector<float>>> stream(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    fwd->run(seqs[i], ref_logits[i], &stream[i]);
    table.positions += static_cast<int64_t>(seqs[i].size());
  }
  table.sequences = static_cast<int64_t>(seqs.size());

  // Tasks: (matrix, type).
  struct Task {
    size_t weight;
    ElemType type;
  };
  const std::vector<llama_ref::WeightRef> weights = fwd->weights();
  std::vector<Task> tasks;
  for (size_t w = 0; w < weights.size(); ++w) {
    int64_t rows = 0, cols = 0;
    fwd->weight(weights[w].name, rows, cols);
    for (ElemType c : cands)
      if (cols % traits(c).block_size == 0) tasks.push_back({w, c});
  }
  progress.begin(kPass, tasks.size(), "measurements");
  std::vector<double> kl(tasks.size(), 0);
  std::vector<std::string> errors(tasks.size());
  std::atomic<size_t> next{0};
  auto work = [&]() {
    omp_set_num_threads(1);
    std::vector<uint8_t> q;
    std::vector<float> deq, logits;
    for (size_t k; (k = next.fetch_add(1)) < tasks.size();) {
      const Task& task = tasks[k];
      const llama_ref::WeightRef& w = weights[task.weight];
      try {
        int64_t rows = 0, cols = 0;
        const float* src = fwd->weight(w.name, rows, cols);
        const float* imrow = nullptr;
        if (im) {
          auto it = im->entries.find(w.name);
          if (it != im->entries.end() && static_cast<int64_t>(it->second.size()) == cols)
            imrow = it->second.data();
        }
        q.resize(gguf::row_size(task.type, cols) * static_cast<size_t>(rows));
        deq.resize(static_cast<size_t>(rows * cols));
        gguf::quantize_chunk(task.type, src, q.data(), 0, rows, cols, imrow);
        gguf::dequantize_row(task.type, q.data(), deq.data(), rows * cols);
        double sum = 0;
        for (size_t i = 0; i < seqs.size(); ++i) {
          const int from = w.layer;
          static const std::vector<float> none;
          const std::vector<float>& x = from < 0 ? none : stream[i][static_cast<size_t>(from)];
          fwd->run_from(from, seqs[i], x, w.name, deq.data(), logits);
          sum += llama_ref::mean_kl(ref_logits[i], logits, cfg.n_vocab) * static_cast<double>(seqs[i].size());
        }
        kl[k] = sum / static_cast<double>(table.positions);
      } catch (const std::exception& e) {
        errors[k] = e.what();
      }
      progress.advance(1);
    }
  };
  const int n =
      static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(1, tasks.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  progress.end();
  for (size_t k = 0; k < tasks.size(); ++k)
    if (!errors[k].empty())
      throw Error(std::string(kPass) + ": tensor " + weights[tasks[k].weight].name + " (" +
                  upper(name_of(tasks[k].type)) + "): " + errors[k]);
  for (size_t k = 0; k < tasks.size(); ++k)
    table.kl[weights[tasks[k].weight].name][upper(name_of(tasks[k].type))] = kl[k];
  table.measurements = static_cast<int64_t>(tasks.size());
  table.supported = true;

  // The most sensitive matrix at the cheapest type, for the notes.
  std::string worst;
  double worst_kl = -1;
  for (size_t k = 0; k < tasks.size(); ++k)
    if (tasks[k].type == cands.front() && kl[k] > worst_kl)
      worst_kl = kl[k], worst = weights[tasks[k].weight].name;
  res.metrics["measurements"] = static_cast<double>(table.measurements);
  res.metrics["positions"] = static_cast<double>(table.positions);
  res.notes.push_back(std::to_string(table.measurements) + " measurements (" +
                      std::to_string(weights.size()) +
                      " matrices x their candidate types), each a forward over " +
                      std::to_string(table.positions) + " positions of " + std::to_string(table.sequences) +
                      " sequence(s) from the first layer the "
                      "matrix affects" +
                      (im ? ", quantized with the imatrix" : ""));
  if (!worst.empty())
    res.notes.push_back("most sensitive at " + upper(name_of(cands.front())) + ": " + worst + " (mean KL " +
                        fmt(worst_kl) + " nats)");
  return res;
}

namespace {

class SensitivityPass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) override {
    PassResult r;
    r.status = guard([&] {
      if (model.graph)
        throw Error("gguf-sensitivity measures GGUF llama models; model '" + model.source +
                    "' has a graph (" + model.format + "): select-precision measures ONNX models itself");
      const Options& o = ctx.options;
      SensitivitySettings s;
      for (const auto& v : o.at("types").list) s.types.push_back(v.s);
      if (auto it = o.find("imatrix"); it != o.end() && !it->second.is_null()) s.imatrix = it->second.s;
      s.max_tokens = o.at("max_tokens").i;
      if (auto it = o.find("samples"); it != o.end() && !it->second.is_null()) s.samples = it->second.i;
      const Dataset& ds = *ctx.datasets.at(o.at("dataset").s);
      SensitivityResult res = measure_sensitivity(model, ds, s, ctx.threads, ctx.progress);
      r.table = std::make_shared<Table>(res.table.to_table());
      r.metrics = std::move(res.metrics);
      r.notes = std::move(res.notes);
      r.warnings = std::move(res.warnings);
    });
    return r;
  }
};

}  // namespace

PassInfo sensitivity_pass_info() {
  using quant::option_spec;
  PassInfo info;
  info.name = kPass;
  info.description =
      "GGUF llama models: measures, with a float forward pass over token sequences, the next-token KL "
      "divergence each weight matrix causes when quantized alone to each candidate type: a sensitivity table "
      "for select-precision's objective = \"kl\" (one measurement shared by every budget)";
  info.version = 1;
  info.output = {ArtifactKind::Table, kSensitivitySchema, false, "per-tensor, per-type KL sensitivities"};
  OptionSpec ds = option_spec("dataset", OptType::Dataset,
                              "token sequences: .npy int32/int64 token ids, one sequence per file");
  ds.required = true;
  Value types;
  types.kind = Value::Kind::List;
  for (const char* t : {"Q2_K", "Q3_K", "Q4_0", "Q4_K", "Q5_0", "Q5_K", "Q6_K", "Q8_0"})
    types.list.push_back(Value::of_string(t));
  OptionSpec ty =
      option_spec("types", OptType::List,
                  "candidate tensor types to measure (give select-precision the same or fewer)", types);
  ty.unordered = true;
  OptionSpec im =
      option_spec("imatrix", OptType::Path,
                  "importance matrix quantization uses (give select-precision and quantize-gguf the "
                  "same one)");
  OptionSpec mt = option_spec("max_tokens", OptType::Int, "tokens used per sequence (the first ones); 0: all",
                              Value::of_int(256));
  mt.has_min = true;
  mt.min = 0;
  OptionSpec samples = option_spec("samples", OptType::Int, "use at most this many sequences (default: all)");
  samples.has_min = true;
  samples.min = 1;
  info.options = {ds, ty, im, mt, samples};
  info.validate = [](const Options& o) {
    std::vector<OptionProblem> out;
    if (auto it = o.find("types"); it != o.end() && it->second.kind == Value::Kind::List) {
      if (it->second.list.empty()) out.push_back({"types", "needs at least one tensor type"});
      for (const auto& v : it->second.list) {
        auto t = elem_from_name(v.s);
        if (!t || traits(*t).ggml_id < 0) out.push_back({"types", "unknown tensor type '" + v.s + "'"});
      }
    }
    return out;
  };
  info.factory = [] { return std::unique_ptr<Pass>(new SensitivityPass()); };
  return info;
}

}  // namespace qforge::select_precision
