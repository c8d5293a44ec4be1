#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "imatrix.h"
#include "kernels/quants.h"
#include "qforge/status.h"
#include "quantize_gguf.h"

namespace qforge::gguf_quant {
namespace {

using E = ElemType;

constexpr uint32_t kQuantizationVersion = 2;  // GGML_QNT_VERSION
// Rows are quantized in chunks of about this many elements (llama.cpp uses at least
// 32 * 512); a chunk never crosses an expert boundary (each expert has its own imatrix).
constexpr int64_t kChunkElements = 64 * 1024;

// A buffer that is not zero-filled first (the quantizer writes every byte).
class OwnedBlob : public Blob {
 public:
  explicit OwnedBlob(uint64_t n) : data_(new uint8_t[n == 0 ? 1 : n]), size_(n) {}
  const uint8_t* data() const override { return data_.get(); }
  uint64_t size() const override { return size_; }
  uint8_t* mutable_data() { return data_.get(); }

 private:
  std::unique_ptr<uint8_t[]> data_;
  uint64_t size_;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// ggml_type_name lookup (case-insensitive), for option values naming a tensor type.
ElemType parse_tensor_type(const std::string& what, const std::string& name) {
  auto t = elem_from_name(name);
  if (!t || traits(*t).ggml_id < 0)
    throw Error("quantize-gguf: " + what + ": unknown ggml tensor type '" + name + "'");
  if (!gguf::can_quantize(*t))
    throw Error("quantize-gguf: " + what + ": qforge cannot quantize to " + name_of(*t));
  return *t;
}

std::string str_opt(const Options& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->second.is_null()) return "";
  if (it->second.kind != Value::Kind::String)
    throw Error(std::string("quantize-gguf: option ") + key + ": expected a string, found " +
                it->second.display());
  return it->second.s;
}

bool bool_opt(const Options& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->second.is_null()) return false;
  if (it->second.kind != Value::Kind::Bool)
    throw Error(std::string("quantize-gguf: option ") + key + ": expected true or false, found " +
                it->second.display());
  return it->second.b;
}

std::vector<std::string> list_opt(const Options& o, const char* key) {
  std::vector<std::string> out;
  auto it = o.find(key);
  if (it == o.end() || it->second.is_null()) return out;
  if (it->second.kind == Value::Kind::String) return {it->second.s};
  if (it->second.kind != Value::Kind::List)
    throw Error(std::string("quantize-gguf: option ") + key + ": expected a list of strings, found " +
                it->second.display());
  for (const auto& v : it->second.list) {
    if (v.kind != Value::Kind::String)
      throw Error(std::string("quantize-gguf: option ") + key + ": expected strings, found " + v.display());
    out.push_back(v.s);
  }
  return out;
}

// llama.cpp's string_parse_kv_override + the way llama_model_quantize writes it.
std::pair<std::string, MetaValue> parse_override(const std::string& s) {
  const auto eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq >= 128)
    throw Error("quantize-gguf: override_kv '" + s +
                "': expected KEY=TYPE:VALUE with a key of 1 "
                "to 127 bytes");
  const std::string key = s.substr(0, eq);
  const std::string rest = s.substr(eq + 1);
  auto starts = [&](const char* p) { return rest.rfind(p, 0) == 0; };
  if (starts("int:")) {
    const long long v = std::atoll(rest.c_str() + 4);
    return {key, MetaValue::of_u32(static_cast<uint32_t>(std::llabs(v)))};
  }
  if (starts("float:")) return {key, MetaValue::of_f32(static_cast<float>(std::atof(rest.c_str() + 6)))};
  if (starts("bool:")) {
    const std::string v = rest.substr(5);
    if (v != "true" && v != "false")
      throw Error("quantize-gguf: override_kv '" + s + "': a bool is true or false, found '" + v + "'");
    return {key, MetaValue::of_bool(v == "true")};
  }
  if (starts("str:")) {
    const std::string v = rest.substr(4);
    if (v.size() > 127)
      throw Error("quantize-gguf: override_kv '" + s + "': a string value has at most 127 bytes");
    return {key, MetaValue::of_string(v)};
  }
  throw Error("quantize-gguf: override_kv '" + s + "': TYPE must be int, float, bool or str");
}

void set_last(Model& m, const std::string& key, MetaValue v) {
  // gguf_set_val_*: remove the key, append it.
  m.erase_meta(key);
  m.metadata.emplace_back(key, std::move(v));
}

// Drops the source's pages range by range while a tensor is being quantized, so
// that a large tensor never sits in memory whole (a no-op for blobs that are not
// views of a file mapping).
class RangeReleaser {
 public:
  explicit RangeReleaser(BlobPtr src) : src_(std::move(src)) {}
  // Releases [0, upto) of the source, beyond what was released, in batches of at
  // least 4 MiB.
  void release_upto(uint64_t upto) {
    if (upto <= done_ || upto - done_ < (4u << 20)) return;
    src_->release_range(done_, upto - done_);
    done_ = upto;
  }
  // Releases the whole file the source views: page-cache folios can be larger than
  // a page (2 MiB ones are mapped with one PMD), so reading one tensor can map pages
  // of neighbours that were already released; dropping the whole mapping after each
  // tensor keeps peak memory independent of the number of tensors. The mapping is
  // read-only, so other readers only fault the same bytes in again.
  void release_mapping() { src_->release_source(); }

 private:
  BlobPtr src_;
  uint64_t done_ = 0;
};

// A view that drops the source's pages when the writer is done with it.
class ReleasingBlob : public Blob {
 public:
  explicit ReleasingBlob(BlobPtr inner) : inner_(std::move(inner)) {}
  ~ReleasingBlob() override { inner_->release_source(); }
  const uint8_t* data() const override { return inner_->data(); }
  uint64_t size() const override { return inner_->size(); }
  void release_pages() const override { inner_->release_pages(); }
  void release_range(uint64_t offset, uint64_t n) const override { inner_->release_range(offset, n); }
  void release_source() const override { inner_->release_source(); }

 private:
  BlobPtr inner_;
};

struct Chunk {
  int64_t row;
  int64_t nrows;
};

// Fixed chunk boundaries: a function of the shape only.
std::vector<Chunk> make_chunks(int64_t nrows_total, int64_t nrows_per_expert, int64_t n_per_row) {
  const int64_t per = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, n_per_row));
  std::vector<Chunk> out;
  for (int64_t e0 = 0; e0 < nrows_total; e0 += nrows_per_expert) {
    const int64_t e1 = std::min(nrows_total, e0 + nrows_per_expert);
    for (int64_t r = e0; r < e1; r += per) out.push_back({r, std::min(per, e1 - r)});
  }
  return out;
}

struct Job {
  std::string name;
  std::vector<int64_t> shape;
  E from, to;
  BlobPtr src;  // or:
  Producer src_producer;
  std::shared_ptr<const Imatrix> imatrix_owner;
  const float* imatrix = nullptr;  // ne0 * n_experts values, or null
  int threads = 1;
};

BlobPtr run_job(const Job& j) {
  BlobPtr src = j.src;
  if (!src) {
    std::string error;
    src = j.src_producer(error);
    if (!src) throw Error(error);
  }
  const int64_t n_per_row = j.shape.back();
  int64_t numel = 1;
  for (int64_t d : j.shape) numel *= d;
  const int64_t nrows_total = numel / n_per_row;
  const int64_t nrows_per_expert = j.shape.size() >= 2 ? j.shape[j.shape.size() - 2] : 1;
  const size_t row_src = *byte_size(j.from, static_cast<uint64_t>(n_per_row));
  const size_t row_dst = gguf::row_size(j.to, n_per_row);
  if (src->size() < row_src * static_cast<uint64_t>(nrows_total))
    throw Error("quantize-gguf: tensor " + j.name + ": source data has " + std::to_string(src->size()) +
                " bytes, expected " + std::to_string(row_src * static_cast<uint64_t>(nrows_total)));
  auto out = std::make_shared<OwnedBlob>(row_dst * static_cast<uint64_t>(nrows_total));
  const std::vector<Chunk> chunks = make_chunks(nrows_total, nrows_per_expert, n_per_row);

  std::atomic<size_t> next{0};
  std::mutex err_mu;
  size_t err_chunk = chunks.size();
  std::string err;
  // Chunks finish out of order; the source below the first unfinished chunk is released.
  RangeReleaser releaser(src);
  std::vector<char> finished(chunks.size(), 0);
  size_t low_water = 0;
  std::mutex done_mu;
  auto work = [&]() {
    std::vector<float> buf;
    for (size_t c; (c = next.fetch_add(1)) < chunks.size();) {
      struct Done {  // marks chunk c finished however the body exits
        size_t c;
        decltype(finished)& f;
        size_t& lw;
        std::mutex& mu;
        RangeReleaser& rel;
        const std::vector<Chunk>& chunks;
        uint64_t row_src;
        ~Done() {
          std::lock_guard<std::mutex> lock(mu);
          f[c] = 1;
          while (lw < f.size() && f[lw]) ++lw;
          const int64_t row = lw < chunks.size() ? chunks[lw].row : chunks.back().row + chunks.back().nrows;
          rel.release_upto(static_cast<uint64_t>(row) * row_src);
        }
      } done{c, finished, low_water, done_mu, releaser, chunks, row_src};
      const Chunk& ch = chunks[c];
      try {
        const uint8_t* s = src->data() + static_cast<uint64_t>(ch.row) * row_src;
        const float* f;
        if (j.from == E::F32) {
          f = reinterpret_cast<const float*>(s);
        } else {
          buf.resize(static_cast<size_t>(ch.nrows * n_per_row));
          gguf::dequantize_row(j.from, s, buf.data(), ch.nrows * n_per_row);
          f = buf.data();
        }
        const float* im = j.imatrix ? j.imatrix + (ch.row / nrows_per_expert) * n_per_row : nullptr;
        gguf::quantize_chunk(j.to, f, out->mutable_data() + static_cast<uint64_t>(ch.row) * row_dst, 0,
                             ch.nrows, n_per_row, im);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (c < err_chunk) {
          err_chunk = c;
          err = "rows " + std::to_string(ch.row) + ".." + std::to_string(ch.row + ch.nrows - 1) + ": " +
                e.what();
        }
      }
    }
  };
  const int nthreads = static_cast<int>(std::min<size_t>(std::max(1, j.threads), chunks.size()));
  std::vector<std::thread> pool;
  for (int t = 1; t < nthreads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  src->release_pages();
  releaser.release_mapping();
  if (err_chunk < chunks.size())
    throw Error("quantize-gguf: tensor " + j.name + " (" + name_of(j.from) + " -> " + name_of(j.to) +
                "): " + err);
  return out;
}

}  // namespace

QuantizeOptions options_from(const Options& o) {
  QuantizeOptions q;
  q.type = str_opt(o, "type");
  if (q.type.empty()) throw Error("quantize-gguf: option 'type' is required (e.g. \"Q4_K_M\")");
  q.imatrix = str_opt(o, "imatrix");
  if (auto it = o.find("imatrix"); it != o.end()) q.imatrix_written = it->second.written;
  // An ordered list of "REGEX=TYPE" rules, first match wins (the order is
  // part of the cache key; a table, which has no order, is refused at plan time).
  for (const std::string& rule : list_opt(o, "tensor_types")) {
    const auto eq = rule.find('=');  // as llama-quantize splits --tensor-type
    if (eq == std::string::npos)
      throw Error("quantize-gguf: tensor_types: '" + rule + "' is not of the form REGEX=TYPE");
    q.tensor_types.emplace_back(rule.substr(0, eq), rule.substr(eq + 1));
  }
  q.output_tensor_type = str_opt(o, "output_tensor_type");
  q.token_embedding_type = str_opt(o, "token_embedding_type");
  q.leave_output_tensor = bool_opt(o, "leave_output_tensor");
  q.pure = bool_opt(o, "pure");
  q.allow_requantize = bool_opt(o, "allow_requantize");
  q.no_fallback = bool_opt(o, "no_fallback");
  q.include_weights = list_opt(o, "include_weights");
  q.exclude_weights = list_opt(o, "exclude_weights");
  q.override_kv = list_opt(o, "override_kv");
  return q;
}

QuantizeSummary quantize_model(Model& model, const QuantizeOptions& q, int threads) {
  // A table of tensors is what llama.cpp quantizes: GGUF, or any format without a
  // graph (e.g. safetensors through plugins/safetensors), whose result is emitted as GGUF.
  if (model.graph)
    throw Error("quantize-gguf: needs a model without a graph (GGUF, safetensors), found a " + model.format +
                " model with a graph (" + model.source + ")");
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const FileTypeInfo& ft = parse_file_type(q.type);
  const ModelFacts facts = read_model_facts(model);

  SelectOptions so;
  so.ftype = ft.ftype;
  so.default_type = ft.default_type;
  so.quantize_output_tensor = !q.leave_output_tensor;
  so.pure = q.pure;
  if (!q.output_tensor_type.empty())
    so.output_tensor_type = parse_tensor_type("output_tensor_type", q.output_tensor_type);
  if (!q.token_embedding_type.empty())
    so.token_embedding_type = parse_tensor_type("token_embedding_type", q.token_embedding_type);
  for (const auto& [re, type] : q.tensor_types) {
    if (re.empty()) throw Error("quantize-gguf: tensor_types: empty tensor name pattern");
    const std::string pattern = lower(re);  // llama-quantize lower-cases the pattern
    try {
      so.overrides.emplace_back(std::regex(pattern), parse_tensor_type("tensor_types " + re, type));
    } catch (const std::regex_error& e) {
      throw Error("quantize-gguf: tensor_types: '" + re + "' is not a valid regular expression: " + e.what());
    }
    so.override_sources.push_back(pattern);
  }
  if (q.plan) {
    std::map<std::string, const Tensor*> by_name;
    for (const auto& t : model.tensors) by_name[t.name] = &t;
    for (const auto& pt : q.plan->tensors) {
      auto it = by_name.find(pt.name);
      if (it == by_name.end())
        throw Error("quantize-gguf: the precision plan names tensor " + pt.name +
                    ", which the model does not have (was the plan made for another model?)");
      const ElemType type = parse_tensor_type("precision plan, tensor " + pt.name, pt.type);
      if (it->second->row_length() % traits(type).block_size != 0)
        throw Error("quantize-gguf: the precision plan gives tensor " + pt.name + " type " + pt.type +
                    ", whose block size does not divide its row length " +
                    std::to_string(it->second->row_length()));
      so.planned[pt.name] = type;
    }
  }
  std::vector<std::pair<std::string, MetaValue>> overrides;
  for (const auto& s : q.override_kv) overrides.push_back(parse_override(s));

  // Importance matrix.
  std::shared_ptr<Imatrix> im;
  if (!q.imatrix.empty()) {
    im = std::make_shared<Imatrix>(load_imatrix(q.imatrix));
    filter_imatrix(*im, q.include_weights, q.exclude_weights);
    for (const auto& [name, v] : im->entries)
      for (size_t k = 0; k < v.size(); ++k)
        if (!std::isfinite(v[k]))
          throw Error(q.imatrix + ": imatrix entry " + name + ": value " + std::to_string(k) +
                      " is not finite (" + std::to_string(v[k]) + ")");
    if (im->entries.empty()) im.reset();  // llama-quantize then passes no imatrix
  } else if (!q.include_weights.empty() || !q.exclude_weights.empty()) {
    throw Error("quantize-gguf: include_weights / exclude_weights filter an imatrix; no imatrix given");
  }
  so.has_imatrix = im != nullptr;

  // The plan, in llama.cpp's tensor order.
  std::vector<std::string> names;
  for (const auto& t : model.tensors) names.push_back(t.name);
  const std::vector<size_t> order = llama_order(names);
  std::vector<const Tensor*> ordered;
  for (size_t k : order) ordered.push_back(&model.tensors[k]);
  QuantizeSummary sum;
  sum.ftype = ft.ftype;
  sum.plan = select_types(ordered, facts, so);

  if (q.plan) {
    std::vector<std::string> unplanned, beaten;
    for (const Decision& d : sum.plan) {
      if (d.planned) ++sum.planned;
      if (d.allows_quantization && !d.planned && d.to != d.from) {
        (q.plan->find(d.name) ? beaten : unplanned).push_back(d.name);
      }
    }
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t k = 0; k < v.size() && k < 4; ++k) s += (k ? ", " : "") + v[k];
      return s + (v.size() > 4 ? ", ..." : "");
    };
    if (!unplanned.empty())
      sum.notes.push_back("precision plan: " + std::to_string(unplanned.size()) +
                          " tensor(s) not in the plan follow the " + name_of(ft.ftype) +
                          " mixture: " + list(unplanned));
    if (!beaten.empty())
      sum.notes.push_back(
          "precision plan: " + std::to_string(beaten.size()) +
          " tensor(s) take the type an explicit option gives instead of the plan's: " + list(beaten));
  }

  // Check everything before any work.
  std::vector<std::string> fallback_errors;
  std::vector<const float*> imatrix_of(ordered.size(), nullptr);
  for (size_t k = 0; k < ordered.size(); ++k) {
    const Tensor& t = *ordered[k];
    const Decision& d = sum.plan[k];
    if (!d.fallback.empty()) {
      ++sum.fallbacks;
      sum.notes.push_back("fallback: " + d.name + ": " + d.fallback);
      fallback_errors.push_back(d.name + ": " + d.fallback);
    }
    if (d.to == d.from) continue;
    ++sum.quantized_tensors;
    if (traits(d.from).quantized && !q.allow_requantize)
      throw Error("quantize-gguf: tensor " + d.name + " is already " + name_of(d.from) +
                  "; requantizing is disabled (set allow_requantize to dequantize it first)");
    if (d.from != E::F32 && !gguf::can_dequantize(d.from))
      throw Error("quantize-gguf: tensor " + d.name + ": qforge cannot read " + name_of(d.from) +
                  " values to requantize them");
    if (!gguf::can_quantize(d.to))
      throw Error("quantize-gguf: tensor " + d.name + ": qforge cannot quantize to " + name_of(d.to));
    if (t.row_length() % traits(d.to).block_size != 0)
      throw Error("quantize-gguf: tensor " + d.name + ": row length " + std::to_string(t.row_length()) +
                  " is not a multiple of " + std::to_string(traits(d.to).block_size) + ", which " +
                  name_of(d.to) + " (chosen by an explicit option) requires");
    if (im) {
      auto it = im->entries.find(d.name);
      if (it != im->entries.end()) {
        const int64_t ne0 = t.row_length();
        const int64_t ne2 = t.shape.size() >= 3 ? t.shape[t.shape.size() - 3] : 1;
        if (static_cast<int64_t>(it->second.size()) == ne0 * ne2) {
          imatrix_of[k] = it->second.data();
        } else if (d.role != Role::TokenEmbd) {  // llama.cpp ignores a bad token_embd entry
          throw Error(q.imatrix + ": imatrix entry " + d.name + " has " + std::to_string(it->second.size()) +
                      " values, expected " + std::to_string(ne0 * ne2) + " (row length " +
                      std::to_string(ne0) + " x " + std::to_string(ne2) + " experts)");
        }
      }
    }
    if (d.allows_quantization && d.requires_imatrix && !imatrix_of[k])
      throw Error("quantize-gguf: tensor " + d.name + " (" + name_of(d.to) + " in a " + name_of(ft.ftype) +
                  " file) needs an importance matrix" +
                  (im ? std::string(" and ") + q.imatrix + " has no entry for it" : ": set imatrix"));
  }
  if (q.no_fallback && !fallback_errors.empty()) {
    std::string msg = "quantize-gguf: no_fallback is set and " + std::to_string(fallback_errors.size()) +
                      " tensor(s) need a fallback type:";
    for (const auto& e : fallback_errors) msg += "\n  " + e;
    throw Error(msg);
  }

  // Execute: lazy tensors in llama.cpp's order.
  std::vector<Tensor> out;
  out.reserve(ordered.size());
  for (size_t k = 0; k < ordered.size(); ++k) {
    const Tensor& t = *ordered[k];
    const Decision& d = sum.plan[k];
    Tensor n;
    n.name = t.name;
    n.shape = t.shape;
    n.type = d.to;
    if (d.to == d.from) {
      if (t.data) {
        BlobPtr src = t.data;
        n.producer = [src](std::string&) -> BlobPtr { return std::make_shared<ReleasingBlob>(src); };
      } else {
        n.producer = t.producer;
      }
    } else {
      auto job = std::make_shared<Job>();
      job->name = t.name;
      job->shape = t.shape;
      job->from = d.from;
      job->to = d.to;
      job->src = t.data;
      if (!t.data) job->src_producer = t.producer;
      job->imatrix_owner = im;
      job->imatrix = imatrix_of[k];
      job->threads = threads;
      n.producer = guarded_producer("quantize-gguf", t.name, [job]() { return run_job(*job); });
    }
    out.push_back(std::move(n));
  }
  model.tensors = std::move(out);

  // Metadata, as llama_model_quantize writes it.
  set_last(model, "general.quantization_version", MetaValue::of_u32(kQuantizationVersion));
  set_last(model, "general.file_type", MetaValue::of_u32(static_cast<uint32_t>(ft.ftype)));
  model.erase_meta("split.no");
  model.erase_meta("split.count");
  model.erase_meta("split.tensors.count");
  for (auto& [key, v] : overrides) set_last(model, key, v);
  if (im) {
    auto trunc = [](const std::string& s) { return s.substr(0, std::min<size_t>(s.size(), 127)); };
    set_last(model, "quantize.imatrix.file",
             MetaValue::of_string(trunc(q.imatrix_written.empty() ? q.imatrix : q.imatrix_written)));
    if (!im->datasets.empty())
      set_last(model, "quantize.imatrix.dataset", MetaValue::of_string(trunc(im->datasets[0])));
    set_last(model, "quantize.imatrix.entries_count",
             MetaValue::of_u32(static_cast<uint32_t>(im->entries.size())));
    if (im->chunk_count > 0)
      set_last(model, "quantize.imatrix.chunks_count",
               MetaValue::of_u32(static_cast<uint32_t>(im->chunk_count)));
  }
  return sum;
}

}  // namespace qforge::gguf_quant
