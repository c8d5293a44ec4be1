// Executing a plan (docs/architecture.md, "Running a build"). Stages:
//   sweep    temporary files left by killed builds
//   decide   top-down from each target: an artifact that is current is
//            skipped, one in the cache is restored, else it must be built;
//            each input of a node that runs is loaded from the cache when
//            stored there (Tables, expensive Models), else run too
//   execute  ready nodes on a pool of workers within one thread budget
//   collect  per step and per target results for the reports
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "qforge/atomic_file.h"
#include "qforge/build.h"
#include "qforge/cache.h"
#include "qforge/dataset.h"
#include "qforge/graph.h"
#include "qforge/profile.h"
#include "qforge/progress.h"
#include "qforge/remote_cache.h"
#include "qforge/status.h"

namespace fs = std::filesystem;

namespace qforge {

// ------------------------------------------------------------------ step logs
void StepLog::merge(const StepLog& o) {
  for (const auto& [k, v] : o.metrics) metrics[k] = v;
  auto add = [](std::vector<std::string>& to, const std::vector<std::string>& from) {
    for (const auto& l : from)
      if (std::find(to.begin(), to.end(), l) == to.end()) to.push_back(l);
  };
  add(notes, o.notes);
  add(warnings, o.warnings);
  for (const auto& s : o.skipped)
    if (std::none_of(skipped.begin(), skipped.end(), [&](const SkipRecord& x) {
          return x.pass == s.pass && x.reason == s.reason && x.what == s.what;
        }))
      skipped.push_back(s);
}

bool reported_schema(const std::string& schema) { return schema.rfind("precision/", 0) == 0; }

std::vector<std::string> summarize_skips(const std::vector<SkipRecord>& skipped, size_t first_few) {
  // Group by (pass, reason) in order of first appearance.
  std::vector<std::pair<std::pair<std::string, std::string>, std::vector<std::string>>> groups;
  for (const auto& s : skipped) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g.first.first == s.pass && g.first.second == s.reason;
    });
    if (it == groups.end())
      groups.push_back({{s.pass, s.reason}, {s.what}});
    else
      it->second.push_back(s.what);
  }
  std::vector<std::string> out;
  for (const auto& [pr, whats] : groups) {
    std::string line = pr.first + " skipped " + std::to_string(whats.size()) + " (" + pr.second + "): ";
    for (size_t i = 0; i < whats.size() && i < first_few; ++i) line += (i ? ", " : "") + whats[i];
    if (whats.size() > first_few) line += " and " + std::to_string(whats.size() - first_few) + " more";
    out.push_back(line);
  }
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Every node `node` depends on, itself included, in plan order.
std::vector<int> ancestors(const Plan& plan, int node) {
  std::set<int> seen;
  std::vector<int> stack{node};
  while (!stack.empty()) {
    int n = stack.back();
    stack.pop_back();
    if (n < 0 || !seen.insert(n).second) continue;
    for (int in : plan.nodes[n].inputs) stack.push_back(in);
  }
  return {seen.begin(), seen.end()};
}

// What produced a target, one line per node, for --explain next time.
std::string record_of(const Plan& plan, int emit) {
  std::string s;
  for (int n : ancestors(plan, emit)) s += plan.nodes[n].fingerprint + "\n";
  return s;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string l;
  while (std::getline(is, l)) out.push_back(l);
  return out;
}

// Why a target must be rebuilt, from what built it last time.
std::string why_rebuild(const Plan& plan, int emit, const std::optional<std::string>& previous) {
  if (!previous) return "not cached (first build of this target)";
  auto before = lines(*previous);
  auto now = lines(record_of(plan, emit));
  std::vector<std::string> added, removed;
  for (const auto& a : now)
    if (std::find(before.begin(), before.end(), a) == before.end()) added.push_back(a);
  for (const auto& b : before)
    if (std::find(now.begin(), now.end(), b) == now.end()) removed.push_back(b);
  if (added.empty() && removed.empty())
    return "not cached (same recipe as the last build, but its cache entry is gone)";
  for (const auto& a : added) {
    if (a.rfind("import ", 0) == 0)
      for (const auto& b : removed)
        if (b.rfind("import ", 0) == 0) {
          for (int n : ancestors(plan, emit))
            if (plan.nodes[n].kind == PlanNode::Kind::Import && plan.nodes[n].fingerprint == a)
              return "input changed: " + plan.nodes[n].path + " (its contents differ from the last build)";
        }
    if (a.rfind("pass ", 0) == 0) {
      const std::string an = a.substr(5, a.find(' ', 5) - 5);
      for (const auto& b : removed)
        if (b.rfind("pass " + an + " ", 0) == 0)
          return "pass options changed: " + an + " " + b.substr(b.find('{')) + " -> " + a.substr(a.find('{'));
    }
  }
  if (!added.empty() && !removed.empty())
    return "build recipe changed: '" + removed[0] + "' -> '" + added[0] + "'";
  return "pipeline changed: a step was " + std::string(added.empty() ? "removed" : "added") + ": '" +
         (added.empty() ? removed[0] : added[0]) + "'";
}

// Tensors that carry weights (not shapes, indices or strings).
bool weight_like(ElemType t) {
  switch (t) {
    case ElemType::I32:
    case ElemType::U32:
    case ElemType::I64:
    case ElemType::U64:
    case ElemType::Bool:
    case ElemType::String:
    case ElemType::Complex64:
    case ElemType::Complex128: return false;
    default: return true;
  }
}

// Bits and elements of a model's weights: its tensors and the tensors of
// Constant nodes (exporters that write weights as nodes).
std::pair<uint64_t, uint64_t> weight_bits(const Model& m) {
  uint64_t bits = 0, n = 0;
  auto add = [&](const Tensor& t) {
    if (!weight_like(t.type)) return;
    bits += t.nbytes() * 8;
    n += t.numel();
  };
  for (const auto& t : m.tensors) add(t);
  if (m.graph)
    for (const auto& node : m.graph->nodes)
      if (node.op_type == "Constant" && (node.domain.empty() || node.domain == "ai.onnx"))
        for (const auto& a : node.attributes)
          if (a.type == Attribute::Type::Tensor)
            for (const auto& t : a.tensors) add(t);
  return {bits, n};
}

// Bits of the emitted weights (with the scales and zero points quantization
// adds) per weight of the model as imported: what a variant costs per
// original weight (32 for an f32 model, 16 for f16).
double bits_per_weight(const Model& out, const Model* imported) {
  const uint64_t bits = weight_bits(out).first;
  const uint64_t n = weight_bits(imported ? *imported : out).second;
  return n ? static_cast<double>(bits) / static_cast<double>(n) : 0;
}

// The format a model node's result is written in when stored: its import's.
const Format* source_format(const Plan& plan, int node) {
  for (int n = node; n >= 0; n = plan.nodes[n].model_input())
    if (plan.nodes[n].kind == PlanNode::Kind::Import) return plan.nodes[n].format;
  return nullptr;
}

class Builder {
 public:
  Builder(const Plan& plan, const BuildOptions& opts, StatCache& stats, Progress& progress)
      : plan_(plan),
        m_(*plan.manifest),
        opts_(opts),
        stats_(stats),
        progress_(progress),
        st_(plan.nodes.size()) {
    if (!opts.no_cache) cache_ = std::make_unique<Cache>(m_.cache_dir);
    strict_ = opts.strict || m_.strict;
    open_remote();
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    budget_ = opts.threads > 0 ? opts.threads : m_.threads > 0 ? m_.threads : cores;
    const int jobs = opts.jobs > 0 ? opts.jobs : m_.jobs > 0 ? m_.jobs : budget_;
    concurrency_ = std::max(1, std::min(jobs, budget_));
    if (jobs > budget_)
      progress_.info("running " + std::to_string(concurrency_) + " steps at once, not " +
                     std::to_string(jobs) + ": the thread budget is " + std::to_string(budget_));
  }

  BuildResult run() {
    auto t0 = Clock::now();
    if (!opts_.dry_run) sweep();
    decide();
    if (opts_.explain || opts_.dry_run) explain();
    if (!opts_.dry_run) execute();
    if (!opts_.dry_run) publish_local_hits();
    BuildResult r = collect();
    r.seconds = since(t0);
    return r;
  }

 private:
  enum class St { Unneeded, Cached, Load, Run, Done, Loaded, Failed, Skipped };
  struct NodeState {
    St st = St::Unneeded;
    std::string why;
    bool remote = false;              // restored (or, in a dry run, restorable) from the remote cache
    std::optional<CacheEntry> entry;  // Load, Cached
    StepLog log;                      // what this node's steps said (own + inputs')
    double secs = 0, bpw = 0;
    int threads = 0;
    std::string error;
    std::shared_ptr<const Model> model;
    std::shared_ptr<const Table> table;
    std::shared_ptr<const Table> kept;  // a Table the reports show (not released after use)
    bool started = false;
    int waiting_consumers = 0;
  };

  // ------------------------------------------------------------ remote cache
  // The URL: --remote-cache, else $QFORGE_REMOTE_CACHE, else [build] remote_cache.
  void open_remote() {
    std::string url = opts_.remote_cache, from = "--remote-cache";
    if (url.empty())
      if (const char* e = std::getenv("QFORGE_REMOTE_CACHE"); e && *e) url = e, from = "QFORGE_REMOTE_CACHE";
    if (url.empty()) url = m_.remote_cache, from = "[build] remote_cache";
    if (url.empty()) return;
    if (!cache_) {
      progress_.info("note: --no-cache: the remote cache (" + from + ") is neither read nor written");
      return;
    }
    RemoteCacheConfig cfg;
    cfg.url = url;
    // QFORGE_REMOTE_CACHE_TIMEOUT: seconds a transfer may stall (and at most to connect).
    if (const char* e = std::getenv("QFORGE_REMOTE_CACHE_TIMEOUT"); e && *e) {
      char* end = nullptr;
      const long secs = std::strtol(e, &end, 10);
      if (*end || secs < 1 || secs > 3600)
        throw Error("QFORGE_REMOTE_CACHE_TIMEOUT must be a whole number of seconds from 1 to 3600, found '" +
                    std::string(e) + "'");
      cfg.stall_timeout_s = secs;
      cfg.connect_timeout_s = std::min(cfg.connect_timeout_s, secs);
    }
    const std::string var = m_.remote_cache_token_env.empty() ? std::string("QFORGE_REMOTE_CACHE_TOKEN")
                                                              : m_.remote_cache_token_env;
    if (const char* t = std::getenv(var.c_str()); t && *t)
      cfg.token = t;
    else if (!m_.remote_cache_token_env.empty())
      progress_.warn("warning: [build] remote_cache_token_env names " + var +
                     ", which is not set: no token is sent to the remote cache");
    remote_ = std::make_unique<RemoteCache>(cfg);
    summary_.url = remote_->display_url();
    progress_.info("remote cache " + summary_.url + " (from " + from + ")" +
                   (cfg.token.empty() ? "" : ", with the bearer token in " + var));
  }

  bool remote_usable() const { return remote_ && !remote_down_.load(); }

  // A remote failure: an error under --strict; else a warning, and a server
  // that is down is not asked again in this build.
  void remote_problem(const RemoteCache::Result& r, const std::string& then) {
    if (strict_) throw Error(r.message + " (--strict makes remote cache failures errors)");
    std::lock_guard<std::mutex> lk(remote_mu_);
    std::string w;
    if (r.outcome == RemoteCache::Outcome::Down) {
      if (remote_down_.exchange(true)) return;  // said once
      w = r.message + "; the build goes on without the remote cache";
    } else {
      w = r.message + "; " + then;
    }
    summary_.warnings.push_back(w);
    progress_.warn("warning: " + w);
  }

  // Looks `key` up in the remote cache and restores a hit into the local one.
  // Returns what to say about it ("" on a miss or failure).
  std::string fetch_remote(const std::string& key, const std::string& label) {
    const auto r = remote_->fetch(key, *cache_);
    if (r.outcome == RemoteCache::Outcome::Hit) {
      ++summary_.hits;
      summary_.downloaded_objects += r.objects;
      summary_.downloaded_bytes += r.bytes;
      return "remote hit: downloaded " + std::to_string(r.objects) + " object(s), " +
             std::to_string(r.bytes) + " bytes, from " + summary_.url;
    }
    if (r.outcome == RemoteCache::Outcome::Miss)
      ++summary_.misses;
    else
      remote_problem(r, "building " + label + " locally");
    return {};
  }

  // After a step's result is stored locally: its objects, then its record.
  void publish(size_t i) {
    if (!remote_usable()) return;
    RemoteCache::Result r;
    try {
      r = remote_->upload(plan_.nodes[i].key, *cache_);
    } catch (const std::exception& e) {  // reading the local entry failed: the step itself is fine
      r.outcome = RemoteCache::Outcome::Corrupt;
      r.message =
          "uploading " + plan_.nodes[i].label + " to the remote cache " + summary_.url + ": " + e.what();
    }
    if (r.outcome != RemoteCache::Outcome::Hit) return remote_problem(r, "not uploaded");
    std::lock_guard<std::mutex> lk(remote_mu_);
    ++summary_.uploaded_records;
    summary_.uploaded_objects += r.objects;
    summary_.uploaded_bytes += r.bytes;
  }

  // Results this build took from the local cache that the server lacks
  // (built before the remote cache was configured, or by a build whose
  // upload failed) are uploaded too: the artifacts it found cached, the
  // results it loaded, the precision plans the reports read. One HEAD each.
  void publish_local_hits() {
    for (size_t i = 0; i < st_.size() && remote_usable(); ++i) {
      const NodeState& s = st_[i];
      const PlanNode& n = plan_.nodes[i];
      if (s.remote || s.st == St::Done) continue;  // from the server, or uploaded when it ran
      const bool used = (s.st == St::Cached && n.kind == PlanNode::Kind::Emit) || s.st == St::Loaded ||
                        (reported(i) && s.st == St::Unneeded);
      if (!used || !cache_->lookup(n.key)) continue;
      const auto r = remote_->has(n.key);
      if (r.outcome == RemoteCache::Outcome::Miss)
        publish(i);
      else if (r.outcome == RemoteCache::Outcome::Down)
        remote_problem(r, "");
    }
  }

  // ------------------------------------------------------------ sweep
  void sweep() {
    std::set<std::string> dirs;
    for (const auto& t : plan_.targets) dirs.insert(fs::path(t.artifact).parent_path().string());
    size_t swept = 0;
    for (const auto& d : dirs) swept += sweep_stale_temps(d);
    if (cache_) {
      for (const char* sub : {"/keys", "/targets", "/work"}) swept += sweep_stale_temps(cache_->dir() + sub);
      std::error_code ec;
      for (const auto& sub : fs::directory_iterator(cache_->dir() + "/objects", ec))
        if (sub.is_directory()) swept += sweep_stale_temps(sub.path().string());
    }
    if (swept)
      progress_.info("removed " + std::to_string(swept) + " temporary file(s) left by an interrupted build");
  }

  // ------------------------------------------------------------ decide
  bool artifact_current(const PlanNode& e, const CacheEntry& entry) {
    for (const auto& f : entry.files) {
      std::error_code ec;
      std::string p = e.artifact + f.suffix;
      if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) != f.size || stats_.digest(p) != f.digest)
        return false;
    }
    return true;
  }

  void decide() {
    if (opts_.shared_only) return decide_shared();
    for (const auto& t : plan_.targets) {
      const PlanNode& e = plan_.nodes[t.emit];
      NodeState& s = st_[t.emit];
      std::string why_not;
      std::optional<CacheEntry> entry;
      if (cache_) entry = cache_->lookup(e.key, &why_not);
      std::string remote_why;
      if (!entry && remote_usable()) {
        if (opts_.dry_run) {
          if (remote_has(e.key)) {
            s.st = St::Cached;
            s.remote = true;
            s.why = "remote hit: would download from " + summary_.url;
            continue;
          }
        } else if (!(remote_why = fetch_remote(e.key, e.label)).empty()) {
          entry = cache_->lookup(e.key, &why_not);
          s.remote = entry.has_value();
        }
      }
      if (entry) {
        if (artifact_current(e, *entry)) {
          s.st = St::Cached;
          s.why = "up to date";
        } else if (opts_.dry_run) {
          s.st = St::Cached;
          s.why = "restore from cache: " + e.artifact + " is missing or differs";
        } else {
          fs::create_directories(fs::path(e.artifact).parent_path());
          std::string err = cache_->restore(*entry, e.artifact);
          if (err.empty()) {
            s.st = St::Cached;
            s.why = s.remote ? remote_why + "; restored " + e.artifact
                             : "restored from cache: " + e.artifact + " was missing or differed";
          } else {
            s.remote = false;
            progress_.warn(err + "; rebuilding target '" + t.decl.name + "'");
            s.why = "cache entry corrupt (" + err + ")";
            entry.reset();
          }
        }
      }
      if (entry) {
        s.entry = entry;
        s.log = entry->log;
        s.bpw = entry->bits_per_weight;
        continue;
      }
      if (opts_.cached_only) {  // built elsewhere (a Slurm task): never here
        s.st = St::Failed;
        s.error = "its result is not in the cache (" + (s.why.empty() ? why_not : s.why) + ")";
        continue;
      }
      s.st = St::Run;
      if (s.why.empty())
        s.why = opts_.no_cache ? "--no-cache"
                : why_not.rfind("its cache record", 0) == 0
                    ? why_not
                    : why_rebuild(plan_, t.emit, cache_ ? cache_->read_record(t.decl.name) : std::nullopt);
      for (int in : e.inputs) demand(in, t.emit);
    }
  }

  // --shared-only: the goals are the shared steps the cache keeps (a shared
  // step it does not keep, such as an import, would be lost when the build
  // ends: it runs only when a kept one needs it). Consumers come after their
  // inputs in the plan, so walking backwards demands an input (to load it)
  // before it is considered as a goal of its own.
  void decide_shared() {
    for (size_t k = plan_.nodes.size(); k-- > 0;) {
      const PlanNode& n = plan_.nodes[k];
      NodeState& s = st_[k];
      if (!n.shared || !n.store || s.st != St::Unneeded) continue;
      std::string why_not = "not in the cache";
      if (cache_) {
        if (auto entry = cache_->lookup(n.key, &why_not)) {
          std::string err = cache_->verify(*entry);
          if (err.empty()) {
            s.st = St::Cached;
            s.why =
                "up to date (cached " + std::string(name_of(n.produces)) + " " + n.key.substr(0, 12) + ")";
            s.entry = entry;
            continue;
          }
          progress_.warn(err + "; recomputing " + n.label);
          why_not = "cache entry corrupt (" + err + ")";
        }
      }
      s.st = St::Run;
      s.why = opts_.no_cache ? "shared step (--no-cache)" : "shared step (" + why_not + ")";
      for (int in : n.inputs) demand(in, static_cast<int>(k));
      if (needs_reference(k)) demand(import_of(k), static_cast<int>(k));
    }
  }

  // Node `i`'s result is needed by node `by`: load it from the cache or run it.
  void demand(int i, int by) {
    if (i < 0 || st_[i].st != St::Unneeded) return;
    const PlanNode& n = plan_.nodes[i];
    NodeState& s = st_[i];
    std::string why_not = "not in the cache";
    if (n.store && cache_) {
      auto entry = cache_->lookup(n.key, &why_not);
      std::string remote_why;
      if (!entry && remote_usable()) {
        if (opts_.dry_run) {
          if (remote_has(n.key)) {
            s.st = St::Load;
            s.remote = true;
            s.why = "remote hit: would download from " + summary_.url;
            return;
          }
        } else if (!(remote_why = fetch_remote(n.key, n.label)).empty()) {
          entry = cache_->lookup(n.key, &why_not);
        }
      }
      if (entry) {
        std::string err = cache_->verify(*entry);
        if (err.empty()) {
          s.st = St::Load;
          s.remote = !remote_why.empty();
          s.why = s.remote ? remote_why
                           : "cached " + std::string(name_of(n.produces)) + " " + n.key.substr(0, 12) +
                                 " (made by an earlier build)";
          s.entry = entry;
          return;
        }
        progress_.warn(err + "; recomputing " + n.label);
        why_not = "cache entry corrupt (" + err + ")";
      }
    }
    s.st = St::Run;
    const std::string need = by < 0 ? "shared by " + std::to_string(n.targets.size()) + " targets"
                                    : "needed by " + plan_.nodes[by].label;
    s.why = opts_.no_cache ? need + " (--no-cache)" : n.store ? need + " (" + why_not + ")" : need;
    for (int in : n.inputs) demand(in, i);
    if (needs_reference(i)) demand(import_of(i), i);
  }

  // A dry run asks the remote cache (HEAD) whether it has a record.
  bool remote_has(const std::string& key) {
    const auto r = remote_->has(key);
    if (r.outcome == RemoteCache::Outcome::Down) remote_problem(r, "");
    return r.outcome == RemoteCache::Outcome::Hit;
  }

  // A pass that reads the model as imported (evaluate) waits for its import,
  // which runs even when a cached intermediate stands between them.
  bool needs_reference(size_t i) const {
    const PlanNode& n = plan_.nodes[i];
    return n.kind == PlanNode::Kind::Pass && n.pass->needs_reference;
  }
  int import_of(size_t i) const {
    int n = static_cast<int>(i);
    while (n >= 0 && plan_.nodes[n].kind != PlanNode::Kind::Import) n = plan_.nodes[n].model_input();
    return n;
  }

  void explain() {
    for (size_t i = 0; i < st_.size(); ++i) {
      const NodeState& s = st_[i];
      const PlanNode& n = plan_.nodes[i];
      if (opts_.shared_only && !n.shared) continue;  // no target is built
      std::string verb;
      if (s.st == St::Run)
        verb = opts_.dry_run ? "would run " : "run ";
      else if (s.st == St::Load)
        verb = opts_.dry_run ? "would load " : "load ";
      else if (n.kind == PlanNode::Kind::Emit || (opts_.shared_only && s.st == St::Cached))
        verb = "skip ";
      else
        continue;
      progress_.info(verb + n.label + ": " + s.why);
    }
  }

  // ------------------------------------------------------------ execute
  bool ready(size_t i) const {
    const NodeState& s = st_[i];
    if (s.started || (s.st != St::Run && s.st != St::Load)) return false;
    if (s.st == St::Load) return true;
    for (int in : plan_.nodes[i].inputs)
      if (in >= 0 && st_[in].st != St::Done && st_[in].st != St::Loaded) return false;
    if (needs_reference(i) && st_[import_of(i)].st != St::Done) return false;
    return true;
  }

  bool doomed(size_t i) const {
    if (st_[i].st != St::Run) return false;
    for (int in : plan_.nodes[i].inputs)
      if (in >= 0 && (st_[in].st == St::Failed || st_[in].st == St::Skipped)) return true;
    if (needs_reference(i) && st_[import_of(i)].st == St::Failed) return true;
    return false;
  }

  void execute() {
    const size_t N = st_.size();
    for (size_t i = 0; i < N; ++i)
      if (st_[i].st == St::Run)
        for (int in : plan_.nodes[i].inputs)
          if (in >= 0) ++st_[in].waiting_consumers;
    size_t remaining = 0;
    for (const auto& s : st_) remaining += s.st == St::Run || s.st == St::Load;
    // One progress task per node, alive until the build ends (lazy tensors
    // made by a pass may report after the pass returned).
    tasks_.resize(N);
    for (size_t i = 0; i < N; ++i) tasks_[i] = progress_.task();
    int free_threads = budget_, running = 0;

    std::vector<std::thread> workers;
    for (int w = 0; w < concurrency_; ++w)
      workers.emplace_back([&] {
        std::unique_lock<std::mutex> lk(mu_);
        for (;;) {
          if (remaining == 0) {
            cv_.notify_all();
            return;
          }
          size_t pick = N, n_ready = 0;
          for (size_t i = 0; i < N; ++i) {
            if (st_[i].started) continue;
            if (doomed(i)) {
              st_[i].started = true;
              st_[i].st = St::Skipped;
              st_[i].error = "not run: an earlier step failed";
              --remaining;
              cv_.notify_all();
              continue;
            }
            if (ready(i)) {
              ++n_ready;
              if (pick == N) pick = i;
            }
          }
          if (pick == N || free_threads < 1 || running >= concurrency_) {
            if (remaining > 0) cv_.wait(lk);
            continue;
          }
          // A fair share of the free threads among what can start now.
          const int slots = std::max(1, std::min<int>(static_cast<int>(n_ready), concurrency_ - running));
          const int share = std::max(1, free_threads / slots);
          st_[pick].started = true;
          st_[pick].threads = share;
          free_threads -= share;
          ++running;
          // Only a node that runs was counted as a consumer of its inputs
          // (a node loaded from the cache reads none of them).
          const bool counted = st_[pick].st == St::Run;
          lk.unlock();
          run_node(pick, share);
          lk.lock();
          free_threads += share;
          --running;
          --remaining;
          for (int in : plan_.nodes[pick].inputs)
            if (counted && in >= 0 && --st_[in].waiting_consumers == 0 &&
                plan_.nodes[in].kind != PlanNode::Kind::Import) {
              st_[in].model.reset();  // imports stay: they are the reference for evaluation
              st_[in].table.reset();
            }
          cv_.notify_all();
        }
      });
    for (auto& w : workers) w.join();
  }

  Progress& task_progress(size_t i) { return tasks_[i] ? *tasks_[i] : progress_; }

  void run_node(size_t i, int threads) {
    const PlanNode& n = plan_.nodes[i];
    const bool load = st_[i].st == St::Load;
    auto start = Clock::now();
    StepLog log, own;
    std::shared_ptr<const Model> model;
    std::shared_ptr<const Table> table;
    std::vector<std::shared_ptr<const Table>> in_tables;
    std::shared_ptr<const Model> in_model;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const int in = n.inputs[k];
        if (in < 0) {
          if (k > 0) in_tables.push_back(nullptr);
          continue;
        }
        if (!load) log.merge(st_[in].log);
        if (k == 0)
          in_model = st_[in].model;
        else
          in_tables.push_back(st_[in].table);
      }
    }
    std::string error;
    double bpw = 0;
    try {
      if (load) {
        std::tie(model, table) = load_node(i);
        log = st_[i].entry->log;
      } else if (n.kind == PlanNode::Kind::Import) {
        auto m = std::make_shared<Model>();
        Status s = n.format->import_model(n.path, *m);
        if (!s.ok) throw Error(s.message);
        if (m->format.empty()) m->format = n.format->name();
        m->source = n.path;
        model = m;
      } else if (n.kind == PlanNode::Kind::Pass) {
        std::tie(model, table) = run_pass(i, *in_model, in_tables, threads, own);
        log.merge(own);
        if (strict_ && !own.warnings.empty())
          throw Error(
              "warnings are errors (--strict): " + own.warnings.front() +
              (own.warnings.size() > 1 ? " (and " + std::to_string(own.warnings.size() - 1) + " more)" : ""));
        if (n.store && cache_) {
          store_node(i, model, table, log, since(start));
          publish(i);
        }
      } else {
        bpw = emit(i, *in_model, log, start);
        if (cache_) publish(i);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::lock_guard<std::mutex> lk(mu_);
    NodeState& s = st_[i];
    s.secs = since(start);
    if (!error.empty()) {
      s.st = St::Failed;
      s.error = error;
      progress_.warn("error: " + n.label + ": " + error);
      return;
    }
    s.st = load ? St::Loaded : St::Done;
    s.model = model;
    s.table = table;
    if (table && reported(i)) s.kept = table;
    s.log = log;
    if (n.kind == PlanNode::Kind::Emit) s.bpw = bpw;
    if (n.kind == PlanNode::Kind::Import) imports_[n.model] = model;
    for (const auto& w : own.warnings) progress_.warn("warning: " + n.label + ": " + w);
    for (const auto& l : summarize_skips(own.skipped)) progress_.info(l);
    progress_.info(std::string(load ? "loaded " : "done ") + n.label + " (" +
                   std::to_string(static_cast<int>(s.secs * 1000)) + " ms)");
  }

  std::pair<std::shared_ptr<const Model>, std::shared_ptr<const Table>> run_pass(
      size_t i, const Model& input, const std::vector<std::shared_ptr<const Table>>& tables, int threads,
      StepLog& own) {
    const PlanNode& n = plan_.nodes[i];
    auto model = std::make_shared<Model>(input);
    auto pass = n.pass->factory();
    PassContext ctx{n.options, n.profile, n.targets.empty() ? std::string() : n.targets.front(),
                    m_.dir,    threads,   task_progress(i),
                    {},        nullptr,   tables};
    for (const auto& spec : n.pass->options)
      if (spec.type == OptType::Dataset)
        if (auto it = n.options.find(spec.name); it != n.options.end())
          ctx.datasets[it->second.s] = &plan_.datasets.at(it->second.s);
    ctx.executor = plan_.executor;  // [build] executor (calibrate runs the model with it)
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = imports_.find(n.model);
      ctx.reference = it == imports_.end() ? nullptr : it->second.get();
    }
    PassResult r = pass->run(*model, ctx);
    pass.reset();
    if (!r.status.ok) {
      // A pass often names itself in its message already.
      const std::string& msg = r.status.message;
      throw Error(msg.rfind(n.pass->name + ":", 0) == 0 ? msg : n.pass->name + ": " + msg);
    }
    own.metrics = r.metrics;
    own.notes = r.notes;
    for (const auto& w : r.warnings) own.warnings.push_back(n.pass->name + ": " + w);
    for (const auto& s : r.skipped) own.skipped.push_back({n.pass->name, s.reason, s.what});
    if (n.produces == ArtifactKind::Table) {
      if (!r.table) throw Error(n.pass->name + ": the pass returned no table (a bug in the pass)");
      return {nullptr, r.table};
    }
    if (!r.changed && r.warnings.empty()) {  // a pass that said why itself is not repeated
      std::string w = n.pass->name + ": changed nothing in model '" + n.model + "'";
      const auto sk = summarize_skips(own.skipped, 2);
      if (!sk.empty()) w += " (" + sk.front() + (sk.size() > 1 ? "; ..." : "") + ")";
      own.warnings.insert(own.warnings.begin(), w);
    }
    return {model, nullptr};
  }

  // Writes a stored node's result into the cache: a Table's bytes, or a Model
  // emitted in its source format.
  void store_node(size_t i, const std::shared_ptr<const Model>& model,
                  const std::shared_ptr<const Table>& table, const StepLog& log, double seconds) {
    const PlanNode& n = plan_.nodes[i];
    CacheEntry e;
    e.log = log;
    e.seconds = seconds;
    if (table) {
      cache_->store_bytes(n.key, table->to_bytes(), e);
      return;
    }
    const Format* fmt = source_format(plan_, static_cast<int>(i));
    if (!fmt || !model) return;
    const std::string dir = cache_->dir() + "/work";
    fs::create_directories(dir);
    const std::string path = dir + "/" + n.key + fmt->extension();
    Status s = fmt->emit_model(*model, path, {});
    if (!s.ok) throw Error("storing the result of " + n.label + " in the cache: " + s.message);
    std::error_code ec;
    e.files.push_back({"", stats_.digest(path), fs::file_size(path)});
    if (fs::is_regular_file(path + ".data", ec))
      e.files.push_back({".data", stats_.digest(path + ".data"), fs::file_size(path + ".data")});
    cache_->store(n.key, path, e);
    for (const auto& f : e.files) fs::remove(path + f.suffix, ec);
  }

  std::pair<std::shared_ptr<const Model>, std::shared_ptr<const Table>> load_node(size_t i) {
    const PlanNode& n = plan_.nodes[i];
    const CacheEntry& e = *st_[i].entry;
    if (n.produces == ArtifactKind::Table) {
      auto t = std::make_shared<Table>(
          Table::from_bytes(cache_->read_object(e.files.front()), n.label + " (cache)"));
      return {nullptr, t};
    }
    const Format* fmt = source_format(plan_, static_cast<int>(i));
    if (!fmt) throw Error(n.label + ": no format to read its cached model with");
    // A model with sidecar files is read from copies named as its format expects.
    std::string path = cache_->object_path(e.files.front().digest);
    if (e.files.size() > 1) {
      const std::string dir = cache_->dir() + "/work";
      fs::create_directories(dir);
      path = dir + "/" + n.key + "-" + std::to_string(::getpid()) + fmt->extension();
      std::string err = cache_->restore(e, path);
      if (!err.empty()) throw Error(n.label + ": " + err);
      scratch_.push_back(path);
      for (const auto& f : e.files)
        if (!f.suffix.empty()) scratch_.push_back(path + f.suffix);
    }
    auto m = std::make_shared<Model>();
    Status s = fmt->import_model(path, *m);
    if (!s.ok) throw Error(n.label + ": reading its cached model: " + s.message);
    if (m->format.empty()) m->format = fmt->name();
    return {m, nullptr};
  }

  double emit(size_t i, const Model& input, const StepLog& log, Clock::time_point start) {
    const PlanNode& n = plan_.nodes[i];
    Progress& progress = task_progress(i);
    // The profile is a contract: an artifact its runtime would reject is an error, not a file.
    if (n.profile) {
      const auto problems = check_artifact(input, *n.profile);
      if (!problems.empty()) {
        std::string msg = "the artifact breaks profile '" + n.profile->name + "' (" + n.profile->path + "):";
        for (const auto& p : problems) msg += "\n  " + p;
        throw Error(msg + "\nchange the pass options, or choose a profile whose runtime runs this model");
      }
    }
    fs::create_directories(fs::path(n.artifact).parent_path());
    // Lazy tensors (e.g. quantized on demand) are the slow part of an emit:
    // count them as they are produced.
    Model counted = input;
    uint64_t lazy = 0;
    for (auto& t : counted.tensors)
      if (!t.data && t.producer) {
        ++lazy;
        t.producer = [inner = t.producer, &progress](std::string& error) {
          BlobPtr b = inner(error);
          progress.advance(1);
          return b;
        };
      }
    if (lazy) progress.begin(n.label, lazy, "tensors");
    Status s = n.format->emit_model(counted, n.artifact, {});
    if (lazy) progress.end();
    if (!s.ok) throw Error(s.message);
    double bpw = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = imports_.find(n.model);
      bpw = bits_per_weight(input, it == imports_.end() ? nullptr : it->second.get());
    }
    if (cache_) {
      CacheEntry e;
      e.log = log;
      e.files.push_back({"", stats_.digest(n.artifact), fs::file_size(n.artifact)});
      std::error_code ec;
      if (fs::is_regular_file(n.artifact + ".data", ec))
        e.files.push_back(
            {".data", stats_.digest(n.artifact + ".data"), fs::file_size(n.artifact + ".data")});
      e.bits_per_weight = bpw;
      e.seconds = since(start);
      cache_->store(n.key, n.artifact, e);
    }
    return bpw;
  }

  // ------------------------------------------------------------ collect
  // A Table-producing step whose Table the reports show (precision plans).
  bool reported(size_t i) const {
    const PlanNode& n = plan_.nodes[i];
    return n.kind == PlanNode::Kind::Pass && n.produces == ArtifactKind::Table && n.pass &&
           reported_schema(n.pass->output.schema);
  }

  // The Tables of a target's steps the reports show: kept from this build,
  // else read back from the cache (a cached target's steps did not run).
  std::vector<ReportTable> report_tables(int emit, std::vector<std::string>& warnings) {
    std::vector<ReportTable> out;
    if (opts_.dry_run) return out;
    for (int a : ancestors(plan_, emit)) {
      if (!reported(a)) continue;
      const PlanNode& n = plan_.nodes[a];
      std::shared_ptr<const Table> t = st_[a].kept;
      if (!t && cache_) {
        try {
          auto e = cache_->lookup(n.key);
          // A target restored from the remote cache: its plan is there too.
          if (!e && remote_usable() && !fetch_remote(n.key, n.label).empty()) e = cache_->lookup(n.key);
          if (e && !e->files.empty())
            t = std::make_shared<Table>(
                Table::from_bytes(cache_->read_object(e->files.front()), n.label + " (cache)"));
        } catch (const std::exception& ex) {
          warnings.push_back("the report cannot show the table of " + n.label + ": " + ex.what());
        }
      }
      if (t) out.push_back({n.label, n.pass->name, n.key, t});
    }
    return out;
  }

  static const char* status_of(St s) {
    switch (s) {
      case St::Done: return "built";
      case St::Failed: return "failed";
      case St::Skipped: return "skipped";
      case St::Run:
      case St::Load: return "planned";
      default: return "cached";
    }
  }

  BuildResult collect() {
    BuildResult result;
    for (const auto& p : scratch_) {
      std::error_code ec;
      fs::remove(p, ec);
    }
    result.shared_only = opts_.shared_only;
    for (size_t i = 0; i < st_.size(); ++i) {
      const PlanNode& n = plan_.nodes[i];
      if (opts_.shared_only && !n.shared) continue;
      StepResult s;
      s.key = n.key;
      s.pass = n.kind == PlanNode::Kind::Import ? "import"
               : n.kind == PlanNode::Kind::Emit ? "emit"
                                                : n.pass->name;
      s.kind = name_of(n.produces);
      for (int in : n.inputs)
        if (in >= 0) s.inputs.push_back(plan_.nodes[in].key);
      s.model = n.model;
      s.label = n.label;
      s.targets = n.targets;
      s.status = status_of(st_[i].st);
      if (st_[i].remote && (st_[i].st == St::Cached || st_[i].st == St::Loaded)) s.source = "remote";
      s.seconds = st_[i].secs;
      s.threads = st_[i].st == St::Done ? st_[i].threads : 0;
      s.why = st_[i].why;
      if (opts_.shared_only && st_[i].st == St::Unneeded) {
        s.status = "skipped";
        s.why = "not kept in the cache (" + n.store_why + "): each target's build computes it";
      }
      result.steps.push_back(s);
    }
    if (opts_.shared_only) {  // the summary counts shared steps: there are no targets
      size_t k = 0;
      for (size_t i = 0; i < st_.size(); ++i) {
        if (!plan_.nodes[i].shared) continue;
        StepResult& step = result.steps[k++];
        // A cached result under --strict fails as its first build did.
        if (strict_ && st_[i].st == St::Cached && st_[i].entry && !st_[i].entry->log.warnings.empty()) {
          step.status = "failed";
          step.why = "warnings are errors (--strict): " + st_[i].entry->log.warnings.front();
          progress_.warn("error: " + plan_.nodes[i].label + ": " + step.why);
          ++result.failed;
          continue;
        }
        result.built += st_[i].st == St::Done;
        result.cached += st_[i].st == St::Cached || st_[i].st == St::Loaded;
        result.failed += st_[i].st == St::Failed;
      }
      return result;
    }
    for (const auto& t : plan_.targets) {
      const PlanNode& e = plan_.nodes[t.emit];
      const NodeState& es = st_[t.emit];
      TargetResult r;
      r.name = t.decl.name;
      r.model = t.decl.model;
      r.profile = t.profile;
      r.format = t.format;
      r.artifact = t.artifact;
      std::error_code ec;
      r.bytes = fs::is_regular_file(e.artifact, ec) ? fs::file_size(e.artifact, ec) : 0;
      if (fs::is_regular_file(e.artifact + ".data", ec)) r.bytes += fs::file_size(e.artifact + ".data", ec);
      r.bits_per_weight = es.bpw;
      r.metrics = es.log.metrics;
      r.notes = es.log.notes;
      r.warnings = es.log.warnings;
      r.skipped = es.log.skipped;
      r.tables = report_tables(t.emit, r.warnings);
      for (int n : ancestors(plan_, t.emit)) r.seconds += st_[n].st == St::Done ? st_[n].secs : 0;
      r.status = status_of(es.st);
      if (es.remote && es.st == St::Cached) r.source = "remote";
      if (es.st == St::Failed || es.st == St::Skipped) {
        for (int n : ancestors(plan_, t.emit))
          if (st_[n].st == St::Failed) r.error = plan_.nodes[n].label + ": " + st_[n].error;
        r.status = "failed";
        ++result.failed;
      } else if (es.st == St::Done) {
        ++result.built;
      } else if (es.st == St::Cached) {
        ++result.cached;
        // A cached result under --strict fails as its first build did.
        if (strict_ && !r.warnings.empty()) {
          r.status = "failed";
          r.error = "warnings are errors (--strict): " + r.warnings.front();
          --result.cached;
          ++result.failed;
        }
      }
      result.warnings += r.warnings.size();
      result.targets.push_back(r);
      if (cache_ && es.st == St::Done) cache_->write_record(t.decl.name, record_of(plan_, t.emit));
    }
    result.remote = summary_;
    result.warnings += summary_.warnings.size();
    return result;
  }

  const Plan& plan_;
  const Manifest& m_;
  const BuildOptions& opts_;
  StatCache& stats_;
  Progress& progress_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<RemoteCache> remote_;
  std::atomic<bool> remote_down_{false};  // a server that failed is not asked again in this build
  std::mutex remote_mu_;                  // summary_ and its warnings (uploads run on the workers)
  RemoteCacheSummary summary_;
  bool strict_ = false;
  int budget_ = 1, concurrency_ = 1;
  std::vector<NodeState> st_;
  std::vector<std::unique_ptr<Progress>> tasks_;
  std::map<std::string, std::shared_ptr<const Model>> imports_;  // model name -> imported (reference)
  std::vector<std::string> scratch_;                             // copies of cached models to remove
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace

BuildResult run_build(const Plan& plan, const BuildOptions& opts, StatCache& stats, Progress& progress) {
  return Builder(plan, opts, stats, progress).run();
}

}  // namespace qforge
