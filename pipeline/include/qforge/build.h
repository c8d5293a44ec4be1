// The build: a plan (the graph of import -> pass -> ... -> emit nodes, each
// keyed by a content hash of what produced it) computed before any work, then
// executed on a thread pool, skipping what the cache already holds.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/cache.h"
#include "qforge/dataset.h"
#include "qforge/diag.h"
#include "qforge/format.h"
#include "qforge/hash.h"
#include "qforge/manifest.h"
#include "qforge/pass.h"
#include "qforge/profile.h"
#include "qforge/registry.h"
#include "qforge/table.h"

namespace qforge {

// One node of the build graph: it consumes the artifacts of `inputs` and
// produces one artifact of kind `produces`, identified by `key` (a hash of
// what produced it: input keys, pass name and version, canonical options,
// the profile where the pass reads it). Equal keys are one node.
struct PlanNode {
  enum class Kind { Import, Pass, Emit };
  Kind kind = Kind::Import;
  ArtifactKind produces = ArtifactKind::Model;
  std::string key;  // hex digest: identifies the result
  std::vector<int>
      inputs;  // node indices: [0] the model (passes, emits), then the pass's Tables (-1: absent optional)
  std::string model;  // model name
  std::string label;  // "import det", "quantize-gguf det (type=Q8_0)"
  std::string step;   // how a step reference names it: its `id`, else its pass name
  // import
  std::string path;
  const Format* format = nullptr;  // import: source format; emit: output format
  // pass
  const PassInfo* pass = nullptr;
  Options options;  // validated, defaults applied
  const Profile* profile = nullptr;
  std::string fingerprint;  // what the key is made of, readable (for --explain)
  // emit
  std::string artifact;              // absolute output path
  std::vector<std::string> targets;  // every target this node serves
  // Cache policy: whether the result is stored under `key` (always for Tables
  // and emitted files; for a Model when its pass is expensive and another
  // step consumes it), and why, for `qforge plan`.
  bool store = false;
  std::string store_why;
  // Serves two or more of the plan's targets (never an emit): what
  // `qforge build --shared-only` builds before per-target jobs (docs/scale.md).
  bool shared = false;

  int model_input() const { return inputs.empty() ? -1 : inputs[0]; }
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
  std::vector<PlanNode> nodes;  // inputs before the nodes that consume them
  std::vector<TargetPlan> targets;
  std::map<std::string, Dataset> datasets;
  // Nodes that consume node i (computed by make_plan).
  std::vector<std::vector<int>> consumers;
  // The executor passes run models with ([build] executor, default "cpu"); null when none is registered.
  const Executor* executor = nullptr;
};

// Validates every step against the registry and profiles and computes the
// graph. Problems go to `diags` (all of them, with file:line:col).
Plan make_plan(const Manifest& m, const Registry& reg, const ProfileSet& profiles, StatCache& stats,
               const std::vector<std::string>& only_targets, Diagnostics& diags);

// Resolves one pass step's options against the schema and profile: unknown
// options, wrong types, values out of range or not allowed, values the
// profile forbids, missing required options, the pass's validate hook.
Options resolve_options(const PassInfo& info, const StepDecl& step, const Profile* profile, const Manifest& m,
                        Diagnostics& diags);

// Checks a value against an option's schema (type, choices, range, pattern),
// converting what placeholders made strings of. Reports at the value's location.
bool check_option_value(const OptionSpec& spec, Value& v, const std::string& pass,
                        const std::string& base_dir, const std::map<std::string, DatasetDecl>* datasets,
                        Diagnostics& diags);

// Validates every loaded profile against the registry: each pass a profile
// configures must be registered (unless the profile lists it under
// `optional_passes`), each option must exist, defaults and allowed values must
// be valid for the option, defaults must be among the profile's own allowed
// values, and schema defaults the profile does not override must be allowed.
void validate_profiles(const ProfileSet& profiles, const Registry& reg, Diagnostics& diags);

struct BuildOptions {
  int jobs = 0;     // nodes at once; 0 = the manifest's, else the thread budget
  int threads = 0;  // the build's thread budget; 0 = the manifest's, else the number of cores
  bool dry_run = false;
  bool explain = false;
  bool no_cache = false;
  bool strict = false;  // warnings are errors (also [build] strict)
  bool write_report = true;
  bool quiet = false;
  // Build only the shared steps (PlanNode::shared) the cache keeps, and what
  // they need; no target is emitted (docs/scale.md, "Sharding and Kubernetes").
  bool shared_only = false;
  // Every target must come from the cache (`--on slurm` gathering what its
  // tasks built): a target whose result is not cached fails instead of being built.
  bool cached_only = false;
  // The remote cache URL (--remote-cache); "" = $QFORGE_REMOTE_CACHE, else
  // [build] remote_cache, else none. --no-cache turns it off too.
  std::string remote_cache;
};

// A Table one of a target's steps made, kept for the reports: the precision
// plans (schemas "precision/..."), whether the step ran in this build or its
// Table was read back from the cache (so a cached build reports the same).
struct ReportTable {
  std::string step;  // the step's label ("select-precision llm (budget=Q4_K_M)")
  std::string pass;
  std::string key;  // the step's node key
  std::shared_ptr<const Table> table;
};

// Whether the reports show a Table of this schema (precision plans).
bool reported_schema(const std::string& schema);

struct TargetResult {
  std::string name, model, profile, format, artifact;
  uint64_t bytes = 0;
  double bits_per_weight = 0;
  std::string status;  // "built", "cached", "failed", "skipped"
  std::string source;  // for "cached": "remote" when restored from the remote cache, else ""
  double seconds = 0;
  std::map<std::string, double> metrics;
  std::vector<std::string> notes;
  std::vector<std::string> warnings;
  std::vector<SkipRecord> skipped;
  std::vector<ReportTable> tables;  // in step order
  std::string error;
  std::string slurm_job;  // `--on slurm`: the array task that built it ("123_4")
};

struct StepResult {
  std::string key, pass, model, label;
  std::string kind;                 // artifact kind: "model", "table", "file"
  std::vector<std::string> inputs;  // keys of the nodes it consumed
  std::vector<std::string> targets;
  std::string status;  // "built", "cached", "failed", "skipped", "planned"
  std::string source;  // "remote" for a result restored from the remote cache, else ""
  double seconds = 0;
  int threads = 0;        // threads the step was given (0: it did not run)
  std::string why;        // --explain
  std::string slurm_job;  // `--on slurm`: the job that ran it, when one did
};

// Which of N shares of the targets a build was (`qforge build --shard I/N`).
struct ShardInfo {
  int index = 0;                     // from 0
  int count = 0;                     // 0: not a shard build
  std::vector<std::string> targets;  // the shard's targets, in manifest order
};

// What the remote cache did in a build (docs/scale.md, "Remote cache").
struct RemoteCacheSummary {
  std::string url;  // as shown (no user information); "" when no remote cache was used
  size_t hits = 0, misses = 0, downloaded_objects = 0, uploaded_records = 0, uploaded_objects = 0;
  uint64_t downloaded_bytes = 0, uploaded_bytes = 0;
  std::vector<std::string> warnings;  // unreachable server, corrupt objects ...
};

struct BuildResult {
  bool shared_only = false;  // `--shared-only`: `targets` is empty, `steps` the shared steps
  ShardInfo shard;           // `--shard I/N`: `targets` are the shard's only
  std::vector<TargetResult> targets;
  std::vector<StepResult> steps;
  RemoteCacheSummary remote;
  size_t built = 0, cached = 0, failed = 0;
  size_t warnings = 0;
  double seconds = 0;
  bool ok() const { return failed == 0; }
};

// Summary lines for skips: per pass and reason, the count and the first few ("... and 10 more").
std::vector<std::string> summarize_skips(const std::vector<SkipRecord>& skipped, size_t first_few = 3);

// Sharding: `qforge build --shard I/N` builds the I-th of N shares of the
// targets (docs/scale.md, "Sharding and Kubernetes").
struct ShardSpec {
  int index = 0;  // from 0
  int count = 0;
};
// Parses "I/N" (0 <= I < N); returns "" or what is wrong with it.
std::string parse_shard(const std::string& text, ShardSpec& out);
// An estimate of each target's own work (the steps no other target of the
// plan shares), one per plan.targets entry: for each own step, the size in
// bytes of the model file it derives from, times 4 for a pass that runs the
// model through the executor (calibrate, evaluate, ...) and 1 for any other
// pass or an emit (an import counts nothing). Deterministic: the same plan and input files give the same
// costs.
std::vector<uint64_t> target_costs(const Plan& plan);
// The targets in `count` shares balanced by target_costs: the most costly
// first (ties in manifest order), each to the share with the least cost so
// far (ties: the lowest index). Each share lists its targets in manifest order.
std::vector<std::vector<std::string>> assign_shards(const Plan& plan, int count);

class Progress;
BuildResult run_build(const Plan& plan, const BuildOptions& opts, StatCache& stats, Progress& progress);

// Reports: dist/report.json, dist/report.md, dist/report.html and the terminal table.
std::string report_json(const BuildResult& r, const std::string& base_dir);
std::string report_markdown(const BuildResult& r, const std::string& base_dir);
// One self-contained page (inline CSS, SVG and a little script; no network):
// size against fidelity with the Pareto front, each target's facts and
// fidelity per output, and the precision plans its steps made.
std::string report_html(const BuildResult& r, const std::string& base_dir);
std::string report_table(const BuildResult& r, const std::string& base_dir);
void write_reports(const BuildResult& r, const Manifest& m);

// The reference of passes and their options in Markdown (`qforge list passes
// --markdown`; docs/manifest.md holds the built-ins' and a test compares).
std::string pass_reference_markdown(const std::vector<const PassInfo*>& passes);

// The plan as text or JSON (`qforge plan`): every node with its artifact
// kind, inputs, cache policy and what a build would do (`dry`: the result of
// run_build with dry_run).
std::string plan_text(const Plan& plan, const BuildResult& dry);
std::string plan_json(const Plan& plan, const BuildResult& dry);

}  // namespace qforge
