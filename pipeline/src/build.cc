// Executing a plan: decide what the cache already holds, run the rest on a
// pool of workers (a node runs once its parent is done), store results.
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "qforge/atomic_file.h"
#include "qforge/build.h"
#include "qforge/cache.h"
#include "qforge/dataset.h"
#include "qforge/progress.h"
#include "qforge/status.h"

namespace fs = std::filesystem;

namespace qforge {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<int> chain_of(const Plan& plan, int node) {
  std::vector<int> chain;
  for (int n = node; n >= 0; n = plan.nodes[n].parent) chain.push_back(n);
  std::reverse(chain.begin(), chain.end());
  return chain;
}

std::string record_of(const Plan& plan, int emit) {
  std::string s;
  for (int n : chain_of(plan, emit)) s += plan.nodes[n].fingerprint + "\n";
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
  for (size_t i = 0; i < std::max(before.size(), now.size()); ++i) {
    std::string b = i < before.size() ? before[i] : "";
    std::string a = i < now.size() ? now[i] : "";
    if (a == b) continue;
    if (a.rfind("import ", 0) == 0 && b.rfind("import ", 0) == 0) {
      auto path = plan.nodes[chain_of(plan, emit).front()].path;
      return "input changed: " + path + " (its contents differ from the last build)";
    }
    if (a.rfind("pass ", 0) == 0 && b.rfind("pass ", 0) == 0) {
      auto an = a.substr(5, a.find(' ', 5) - 5), bn = b.substr(5, b.find(' ', 5) - 5);
      if (an == bn) return "pass options changed: " + an + " " + b.substr(b.find('{')) + " -> " + a.substr(a.find('{'));
      return "pipeline changed: '" + bn + "' became '" + an + "'";
    }
    if (a.empty() || b.empty()) return "pipeline changed: a step was " + std::string(a.empty() ? "removed" : "added");
    return "build recipe changed: '" + b + "' -> '" + a + "'";
  }
  return "not cached (same recipe as the last build, but its cache entry is gone)";
}

// Bits of the emitted tensors (weights, and the scales and zero points that
// quantization adds) per parameter of the model as imported: what a variant
// costs per original weight.
double bits_per_weight(const Model& out, const Model* imported) {
  uint64_t bits = 0, n = 0;
  for (const auto& t : out.tensors)
    if (t.type != ElemType::String) bits += t.nbytes() * 8;
  for (const auto& t : (imported ? *imported : out).tensors)
    if (t.type != ElemType::String) n += t.numel();
  return n ? static_cast<double>(bits) / static_cast<double>(n) : 0;
}

}  // namespace

BuildResult run_build(const Plan& plan, const BuildOptions& opts, StatCache& stats, Progress& progress) {
  Progress& outer_progress = progress;
  const Manifest& m = *plan.manifest;
  auto t0 = Clock::now();
  BuildResult result;
  const size_t N = plan.nodes.size();
  std::unique_ptr<Cache> cache;
  if (!opts.no_cache) cache = std::make_unique<Cache>(m.cache_dir);

  enum class St { Idle, Needed, Cached, Built, Failed, Skipped };
  std::vector<St> state(N, St::Idle);
  std::vector<std::string> why(N);
  std::vector<double> secs(N, 0);
  std::vector<std::map<std::string, double>> metrics(N);
  std::vector<std::vector<std::string>> notes(N);
  std::vector<std::string> errors(N);
  std::vector<double> bpw(N, 0);

  // 0. Temporary files of builds that were killed.
  if (!opts.dry_run) {
    std::set<std::string> dirs;
    for (const auto& t : plan.targets) dirs.insert(fs::path(t.artifact).parent_path().string());
    size_t swept = 0;
    for (const auto& d : dirs) swept += sweep_stale_temps(d);
    if (cache) {
      swept += sweep_stale_temps(cache->dir() + "/keys");
      swept += sweep_stale_temps(cache->dir() + "/targets");
      std::error_code ec;
      for (const auto& sub : fs::directory_iterator(cache->dir() + "/objects", ec))
        if (sub.is_directory()) swept += sweep_stale_temps(sub.path().string());
    }
    if (swept) progress.info("removed " + std::to_string(swept) + " temporary file(s) left by an interrupted build");
  }

  // 1. What the cache holds.
  for (const auto& t : plan.targets) {
    const PlanNode& e = plan.nodes[t.emit];
    std::optional<CacheEntry> entry;
    if (cache) entry = cache->lookup(e.key);
    if (entry) {
      bool current = true;
      for (const auto& f : entry->files) {
        std::error_code ec;
        std::string p = e.artifact + f.suffix;
        if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) != f.size || stats.digest(p) != f.digest) {
          current = false;
          break;
        }
      }
      if (current) {
        state[t.emit] = St::Cached;
        why[t.emit] = "up to date";
      } else if (opts.dry_run) {
        state[t.emit] = St::Cached;
        why[t.emit] = "restore from cache: " + e.artifact + " is missing or differs";
      } else {
        fs::create_directories(fs::path(e.artifact).parent_path());
        std::string err = cache->restore(*entry, e.artifact);
        if (err.empty()) {
          state[t.emit] = St::Cached;
          why[t.emit] = "restored from cache: " + e.artifact + " was missing or differed";
        } else {
          progress.warn(err + "; rebuilding target '" + t.decl.name + "'");
          state[t.emit] = St::Needed;
          why[t.emit] = "cache entry corrupt (" + err + ")";
          entry.reset();
        }
      }
      if (entry) {
        metrics[t.emit] = entry->metrics;
        notes[t.emit] = entry->notes;
        bpw[t.emit] = entry->bits_per_weight;
        secs[t.emit] = 0;
      }
    } else {
      state[t.emit] = St::Needed;
      why[t.emit] = opts.no_cache ? "--no-cache" : why_rebuild(plan, t.emit, cache ? cache->read_record(t.decl.name) : std::nullopt);
    }
  }
  // 2. Ancestors of what must be built.
  for (int i = static_cast<int>(N) - 1; i >= 0; --i) {
    if (state[i] != St::Needed) continue;
    int p = plan.nodes[i].parent;
    if (p >= 0 && state[p] != St::Needed) {
      state[p] = St::Needed;
      why[p] = "needed by " + plan.nodes[i].label;
    }
  }
  for (size_t i = 0; i < N; ++i)
    if (state[i] == St::Idle) state[i] = St::Cached;

  if (opts.explain || opts.dry_run)
    for (size_t i = 0; i < N; ++i)
      if (state[i] == St::Needed || plan.nodes[i].kind == PlanNode::Kind::Emit)
        progress.info((state[i] == St::Needed ? (opts.dry_run ? "would run " : "run ") : "skip ") + plan.nodes[i].label +
                      ": " + why[i]);

  // 3. Run.
  if (!opts.dry_run) {
    int jobs = opts.jobs > 0 ? opts.jobs : (m.jobs > 0 ? m.jobs : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    const int pass_threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::shared_ptr<const Model>> out(N);
    std::vector<int> pending_children(N, 0);
    for (size_t i = 0; i < N; ++i)
      if (state[i] == St::Needed && plan.nodes[i].parent >= 0) ++pending_children[plan.nodes[i].parent];
    std::mutex mu;
    std::condition_variable cv;
    std::vector<bool> started(N, false);
    size_t remaining = 0;
    for (size_t i = 0; i < N; ++i) remaining += state[i] == St::Needed;
    std::map<std::string, std::shared_ptr<const Model>> imports;  // model name -> imported (reference for evaluation)

    // One progress task per node, alive until the build ends (lazy tensors
    // made by a pass may report after the pass returned).
    std::vector<std::unique_ptr<Progress>> tasks(N);
    for (size_t i = 0; i < N; ++i) tasks[i] = progress.task();
    auto run_node = [&](size_t i) {
      const PlanNode& n = plan.nodes[i];
      Progress& progress = tasks[i] ? *tasks[i] : outer_progress;
      auto start = Clock::now();
      std::shared_ptr<const Model> parent;
      std::map<std::string, double> inherited;
      std::vector<std::string> inherited_notes;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (n.parent >= 0) {
          parent = out[n.parent];
          inherited = metrics[n.parent];
          inherited_notes = notes[n.parent];
        }
      }
      std::string error;
      std::shared_ptr<const Model> produced;
      std::map<std::string, double> my_metrics = inherited;
      std::vector<std::string> my_notes = inherited_notes;
      double my_bpw = 0;
      try {
        if (n.kind == PlanNode::Kind::Import) {
          auto model = std::make_shared<Model>();
          Status s = n.format->import_model(n.path, *model);
          if (!s.ok) throw Error(s.message);
          if (model->format.empty()) model->format = n.format->name();
          model->source = n.path;
          produced = model;
        } else if (n.kind == PlanNode::Kind::Pass) {
          auto model = std::make_shared<Model>(*parent);
          auto pass = n.pass->factory();
          PassContext ctx{n.options, n.profile, n.targets.front(), m.dir, pass_threads, progress, {}, nullptr, {}};
          for (const auto& spec : n.pass->options)
            if (spec.type == OptType::Dataset) {
              auto it = n.options.find(spec.name);
              if (it != n.options.end()) ctx.datasets[it->second.s] = &plan.datasets.at(it->second.s);
            }
          {
            std::lock_guard<std::mutex> lk(mu);
            auto it = imports.find(n.model);
            ctx.reference = it == imports.end() ? nullptr : it->second.get();
          }
          PassResult r = pass->run(*model, ctx);
          pass.reset();
          if (!r.status.ok) throw Error(n.pass->name + ": " + r.status.message);
          for (const auto& [k, v] : r.metrics) my_metrics[k] = v;
          for (const auto& l : r.notes) my_notes.push_back(l);
          produced = model;
        } else {
          fs::create_directories(fs::path(n.artifact).parent_path());
          // Lazy tensors (e.g. quantized on demand) are the slow part of an
          // emit: count them as they are produced.
          Model counted = *parent;
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
          {
            std::lock_guard<std::mutex> lk(mu);
            auto it = imports.find(n.model);
            my_bpw = bits_per_weight(*parent, it == imports.end() ? nullptr : it->second.get());
          }
          if (cache) {
            CacheEntry e;
            e.files.push_back({"", stats.digest(n.artifact), fs::file_size(n.artifact)});
            std::error_code ec;
            if (fs::is_regular_file(n.artifact + ".data", ec))
              e.files.push_back({".data", stats.digest(n.artifact + ".data"), fs::file_size(n.artifact + ".data")});
            e.metrics = my_metrics;
            e.notes = my_notes;
            e.bits_per_weight = my_bpw;
            e.seconds = since(start);
            cache->store(n.key, n.artifact, e);
          }
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      std::lock_guard<std::mutex> lk(mu);
      secs[i] = since(start);
      if (!error.empty()) {
        state[i] = St::Failed;
        errors[i] = error;
        progress.warn("error: " + n.label + ": " + error);
      } else {
        state[i] = St::Built;
        out[i] = produced;
        metrics[i] = my_metrics;
        notes[i] = my_notes;
        bpw[i] = my_bpw;
        if (n.kind == PlanNode::Kind::Import) imports[n.model] = produced;
        progress.info("done " + n.label + " (" + std::to_string(static_cast<int>(secs[i] * 1000)) + " ms)");
      }
      if (n.parent >= 0 && --pending_children[n.parent] == 0) {
        // Keep imports as evaluation references; release everything else.
        if (plan.nodes[n.parent].kind != PlanNode::Kind::Import) out[n.parent].reset();
      }
      --remaining;
      cv.notify_all();
    };

    std::vector<std::thread> workers;
    for (int w = 0; w < jobs; ++w)
      workers.emplace_back([&] {
        std::unique_lock<std::mutex> lk(mu);
        for (;;) {
          if (remaining == 0) {
            cv.notify_all();
            return;
          }
          // The first ready node in plan order (a deterministic preference).
          size_t pick = N;
          for (size_t i = 0; i < N && pick == N; ++i) {
            if (state[i] != St::Needed || started[i]) continue;
            int p = plan.nodes[i].parent;
            if (p >= 0 && (state[p] == St::Failed || state[p] == St::Skipped)) {
              started[i] = true;
              state[i] = St::Skipped;
              errors[i] = "not run: an earlier step failed";
              --remaining;
              cv.notify_all();
            } else if (p < 0 || state[p] == St::Built) {
              pick = i;
            }
          }
          if (pick == N) {
            if (remaining > 0) cv.wait(lk);
            continue;
          }
          started[pick] = true;
          lk.unlock();
          run_node(pick);
          lk.lock();
        }
      });
    for (auto& w : workers) w.join();
  }

  // 4. Results.
  for (size_t i = 0; i < N; ++i) {
    const PlanNode& n = plan.nodes[i];
    StepResult s;
    s.key = n.key;
    s.pass = n.kind == PlanNode::Kind::Import ? "import" : n.kind == PlanNode::Kind::Emit ? "emit" : n.pass->name;
    s.model = n.model;
    s.label = n.label;
    s.targets = n.targets;
    s.status = state[i] == St::Built ? "built" : state[i] == St::Failed ? "failed" : state[i] == St::Skipped ? "skipped"
             : state[i] == St::Needed ? "planned" : "cached";
    s.seconds = secs[i];
    s.why = why[i];
    result.steps.push_back(s);
  }
  for (const auto& t : plan.targets) {
    const PlanNode& e = plan.nodes[t.emit];
    TargetResult r;
    r.name = t.decl.name;
    r.model = t.decl.model;
    r.profile = t.profile;
    r.format = t.format;
    r.artifact = t.artifact;
    std::error_code ec;
    r.bytes = fs::is_regular_file(e.artifact, ec) ? fs::file_size(e.artifact, ec) : 0;
    if (fs::is_regular_file(e.artifact + ".data", ec)) r.bytes += fs::file_size(e.artifact + ".data", ec);
    r.bits_per_weight = bpw[t.emit];
    r.metrics = metrics[t.emit];
    r.notes = notes[t.emit];
    for (int n : chain_of(plan, t.emit)) r.seconds += state[n] == St::Built ? secs[n] : 0;
    St st = state[t.emit];
    r.status = st == St::Built ? "built" : st == St::Cached ? "cached" : st == St::Needed ? "planned" : "failed";
    if (st == St::Failed || st == St::Skipped) {
      for (int n : chain_of(plan, t.emit))
        if (state[n] == St::Failed) r.error = plan.nodes[n].label + ": " + errors[n];
      r.status = "failed";
      ++result.failed;
    } else if (st == St::Built) {
      ++result.built;
    } else if (st == St::Cached) {
      ++result.cached;
    }
    result.targets.push_back(r);
    if (cache && st == St::Built) cache->write_record(t.decl.name, record_of(plan, t.emit));
  }
  result.seconds = since(t0);
  return result;
}

}  // namespace qforge
