// The build: a plan (the graph of import -> pass -> ... -> emit nodes, each
// keyed by a content hash of what produced it) computed before any work, then
// executed on a thread pool, skipping what the cache already holds.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/dataset.h"
#include "qforge/diag.h"
#include "qforge/format.h"
#include "qforge/hash.h"
#include "qforge/manifest.h"
#include "qforge/pass.h"
#include "qforge/profile.h"
#include "qforge/registry.h"

namespace qforge {

struct PlanNode {
  enum class Kind { Import, Pass, Emit };
  Kind kind = Kind::Import;
  std::string key;      // hex digest: identifies the result
  int parent = -1;      // index of the node it transforms (-1 for imports)
  std::string model;    // model name
  std::string label;    // "import det", "quantize-gguf det (type=Q8_0)"
  // import
  std::string path;
  const Format* format = nullptr;  // import: source format; emit: output format
  // pass
  const PassInfo* pass = nullptr;
  Options options;                  // validated, defaults applied
  const Profile* profile = nullptr;
  std::string fingerprint;          // what the key is made of, readable (for --explain)
  // emit
  std::string artifact;             // absolute output path
  std::vector<std::string> targets; // every target this node serves
};

struct TargetPlan {
  TargetDecl decl;
  int emit = -1;  // node index
  std::string artifact;
  std::string format;
  std::string profile;
};

struct Plan {
  const Manifest* manifest = nullptr;
  std::vector<PlanNode> nodes;  // parents before children
  std::vector<TargetPlan> targets;
  std::map<std::string, Dataset> datasets;
};

// Validates every step against the registry and profiles and computes the
// graph. Problems go to `diags` (all of them, with file:line:col).
Plan make_plan(const Manifest& m, const Registry& reg, const ProfileSet& profiles, StatCache& stats,
               const std::vector<std::string>& only_targets, Diagnostics& diags);

// Resolves one pass step's options against the schema and profile: unknown
// options, wrong types, values the profile forbids, missing required options.
Options resolve_options(const PassInfo& info, const StepDecl& step, const Profile* profile,
                        const Manifest& m, Diagnostics& diags);

struct BuildOptions {
  int jobs = 0;     // nodes at once; 0 = the manifest's, else the number of cores
  int threads = 0;  // threads a pass may use; 0 = the number of cores
  bool dry_run = false;
  bool explain = false;
  bool no_cache = false;
  bool write_report = true;
  bool quiet = false;
};

struct TargetResult {
  std::string name, model, profile, format, artifact;
  uint64_t bytes = 0;
  double bits_per_weight = 0;
  std::string status;  // "built", "cached", "failed", "skipped"
  double seconds = 0;
  std::map<std::string, double> metrics;
  std::vector<std::string> notes;
  std::string error;
};

struct StepResult {
  std::string key, pass, model, label;
  std::vector<std::string> targets;
  std::string status;  // "built", "cached", "failed", "skipped"
  double seconds = 0;
  std::string why;     // --explain
};

struct BuildResult {
  std::vector<TargetResult> targets;
  std::vector<StepResult> steps;
  size_t built = 0, cached = 0, failed = 0;
  double seconds = 0;
  bool ok() const { return failed == 0; }
};

class Progress;
BuildResult run_build(const Plan& plan, const BuildOptions& opts, StatCache& stats, Progress& progress);

// Reports: dist/report.json, dist/report.md, and the terminal table.
std::string report_json(const BuildResult& r, const std::string& base_dir);
std::string report_markdown(const BuildResult& r, const std::string& base_dir);
std::string report_table(const BuildResult& r, const std::string& base_dir);
void write_reports(const BuildResult& r, const Manifest& m);

// The plan as text or JSON (`qforge plan`): every node, what is cached.
std::string plan_text(const Plan& plan, const std::string& cache_dir, bool no_cache);
std::string plan_json(const Plan& plan, const std::string& cache_dir, bool no_cache);

}  // namespace qforge
