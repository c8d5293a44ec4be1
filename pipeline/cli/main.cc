// qforge: the command line (docs/manifest.md, "Command line").
// Exit status: 0 success, 1 build or input error, 2 usage error.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "export_k8s.h"
#include "qforge/atomic_file.h"
#include "qforge/build.h"
#include "qforge/dataset.h"
#include "qforge/diag.h"
#include "qforge/graph.h"
#include "qforge/manifest.h"
#include "qforge/plugin_host.h"
#include "qforge/profile.h"
#include "qforge/progress.h"
#include "qforge/registry.h"
#include "qforge/status.h"
#include "run_cmd.h"
#include "slurm_cmd.h"

namespace fs = std::filesystem;
using namespace qforge;
using Json = nlohmann::ordered_json;

namespace {

struct Env {
  Registry registry;
  PluginHost host{registry};
  ProfileSet profiles;
  Diagnostics profile_diags;

  explicit Env(const std::vector<std::string>& extra_plugins) {
    register_builtins(host);
    for (const auto& d : PluginHost::default_dirs()) load_path(d);
    for (const auto& p : extra_plugins) load_path(p);
    for (const auto& d : builtin_profile_dirs()) {
      if (fs::is_directory(d)) {
        profiles.load_dir(d, profile_diags);
        break;  // the first existing directory wins (installed, else source tree)
      }
    }
  }
  void load_path(const std::string& p) {
    std::error_code ec;
    if (fs::is_directory(p, ec))
      host.load_dir(p);
    else if (fs::exists(p, ec))
      host.load(p);
  }
};

const Format* detect_format(const Registry& reg, const std::string& path, const std::string& forced) {
  if (!forced.empty()) {
    const Format* f = reg.format(forced);
    if (!f) {
      std::vector<std::string> names;
      for (const auto* x : reg.formats()) names.push_back(x->name());
      throw Error("unknown format '" + forced + "'" + did_you_mean(forced, names));
    }
    return f;
  }
  uint8_t head[4096];
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  ssize_t r = ::read(fd, head, sizeof head);
  ::close(fd);
  const Format* best = nullptr;
  int score = 0;
  for (const auto* f : reg.formats()) {
    int s = f->probe(path, head, r > 0 ? static_cast<size_t>(r) : 0);
    if (s > score) {
      score = s;
      best = f;
    }
  }
  if (!best) throw Error(path + ": not a format qforge knows (no format plugin recognises its first bytes)");
  return best;
}

// Dataset files (.npy, .npz, TensorProto .pb): arrays with type and shape.
int inspect_dataset(const std::string& file, bool json) {
  std::string ext = fs::path(file).extension().string();
  std::vector<Array> arrays;
  if (ext == ".npy")
    arrays.push_back(read_npy(file));
  else if (ext == ".npz")
    arrays = read_npz(file);
  else
    arrays.push_back(read_tensor_pb(file));
  if (json) {
    Json j;
    j["file"] = file;
    j["format"] = ext.substr(1);
    Json a = Json::array();
    for (const auto& x : arrays)
      a.push_back({{"name", x.name},
                   {"type", name_of(x.type)},
                   {"shape", x.shape},
                   {"bytes", x.data ? x.data->size() : 0}});
    j["arrays"] = a;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: %s, %zu array(s)\n", file.c_str(), ext.substr(1).c_str(), arrays.size());
  for (const auto& x : arrays)
    std::printf("  %-24s %-6s %-22s %12llu bytes\n", x.name.empty() ? "(unnamed)" : x.name.c_str(),
                name_of(x.type), shape_str(x.shape).c_str(),
                (unsigned long long)(x.data ? x.data->size() : 0));
  return 0;
}

int cmd_inspect(Env& env, const std::string& file, bool json, const std::string& forced) {
  std::string ext = fs::path(file).extension().string();
  if (forced.empty() && (ext == ".npy" || ext == ".npz" || ext == ".pb")) return inspect_dataset(file, json);
  if (forced == "npy" || forced == "npz" || forced == "pb") return inspect_dataset(file, json);
  const Format* f = detect_format(env.registry, file, forced);
  Model m;
  Status s = f->import_model(file, m);
  if (!s.ok) throw Error(s.message);
  uint64_t params = 0, bytes = 0;
  for (const auto& t : m.tensors) {
    params += t.numel();
    bytes += t.nbytes();
  }
  // Exporters that write weights as Constant nodes leave the tensor table
  // empty: count those too, and summarise the graph.
  uint64_t const_nodes = 0, const_params = 0, const_bytes = 0;
  std::map<std::string, uint64_t> ops;
  if (m.graph)
    for (const auto& n : m.graph->nodes) {
      ++ops[(n.domain.empty() || n.domain == "ai.onnx" ? "" : n.domain + ".") + n.op_type];
      if (n.op_type != "Constant") continue;
      ++const_nodes;
      for (const auto& a : n.attributes)
        for (const auto& t : a.tensors) {
          const_params += t.numel();
          const_bytes += t.nbytes();
        }
    }
  double bpw = params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0;
  if (json) {
    Json j;
    j["file"] = file;
    j["format"] = f->name();
    Json meta = Json::array();
    for (const auto& [k, v] : m.metadata)
      meta.push_back({{"key", k}, {"type", name_of(v.type)}, {"value", v.summary(16)}});
    j["metadata"] = meta;
    Json ts = Json::array();
    for (const auto& t : m.tensors)
      ts.push_back({{"name", t.name}, {"shape", t.shape}, {"type", name_of(t.type)}, {"bytes", t.nbytes()}});
    j["tensors"] = ts;
    j["totals"] = {
        {"tensors", m.tensors.size()}, {"parameters", params}, {"bytes", bytes}, {"bits_per_weight", bpw}};
    if (m.graph) {
      Json opsets = Json::object();
      for (const auto& o : m.graph->model.opset_imports)
        opsets[o.domain.empty() ? "ai.onnx" : o.domain] = o.version;
      Json g = Json::object();
      g["ir_version"] = m.graph->model.ir_version;
      g["opsets"] = opsets;
      g["nodes"] = m.graph->nodes.size();
      Json o = Json::object();
      for (const auto& [k, v] : ops) o[k] = v;
      g["ops"] = o;
      g["constant_nodes"] = const_nodes;
      g["constant_parameters"] = const_params;
      g["constant_bytes"] = const_bytes;
      j["graph"] = g;
    }
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: %s\n", file.c_str(), f->name().c_str());
  std::printf("metadata (%zu):\n", m.metadata.size());
  for (const auto& [k, v] : m.metadata)
    std::printf("  %-40s %-6s %s\n", k.c_str(), name_of(v.type), v.summary().c_str());
  std::printf("tensors (%zu):\n", m.tensors.size());
  std::map<std::string, uint64_t> by_type;
  for (const auto& t : m.tensors) {
    std::printf("  %-40s %-8s %-22s %12llu bytes\n", t.name.c_str(), name_of(t.type),
                shape_str(t.shape).c_str(), (unsigned long long)t.nbytes());
    by_type[name_of(t.type)]++;
  }
  std::string types;
  for (const auto& [k, v] : by_type) types += (types.empty() ? "" : ", ") + k + ": " + std::to_string(v);
  std::printf("totals: %zu tensors (%s), %llu parameters, %llu bytes, %.3f bits per weight\n",
              m.tensors.size(), types.c_str(), (unsigned long long)params, (unsigned long long)bytes, bpw);
  if (m.graph) {
    std::string opsets, list;
    for (const auto& o : m.graph->model.opset_imports)
      opsets += (opsets.empty() ? "" : ", ") + (o.domain.empty() ? std::string("ai.onnx") : o.domain) + " " +
                std::to_string(o.version);
    for (const auto& [k, v] : ops) list += (list.empty() ? "" : ", ") + k + " " + std::to_string(v);
    std::printf("graph: ir_version %lld, opsets %s; %zu nodes: %s\n", (long long)m.graph->model.ir_version,
                opsets.c_str(), m.graph->nodes.size(), list.c_str());
    if (const_nodes)
      std::printf(
          "constant nodes: %llu, holding %llu parameters (%llu bytes): weights an exporter wrote as nodes\n",
          (unsigned long long)const_nodes, (unsigned long long)const_params, (unsigned long long)const_bytes);
  }
  return 0;
}

Model import_file(Env& env, const std::string& file) {
  const Format* f = detect_format(env.registry, file, "");
  Model m;
  Status s = f->import_model(file, m);
  if (!s.ok) throw Error(s.message);
  if (m.source.empty()) m.source = file;
  return m;
}

int cmd_list(Env& env, const std::string& what, bool markdown) {
  if (what == "passes" && markdown) {
    std::fputs(pass_reference_markdown(env.registry.passes()).c_str(), stdout);
    return 0;
  }
  if (what == "passes") {
    for (const auto* p : env.registry.passes()) {
      std::printf("%-20s v%-3d %s  [%s]\n", p->name.c_str(), p->version, p->description.c_str(),
                  env.registry.origin_of_pass(p->name).c_str());
      for (const auto& o : p->options)
        std::printf(
            "    %-22s %s%s%s\n", o.name.c_str(), o.help.c_str(),
            o.default_value.is_null() ? "" : (" (default " + o.default_value.display() + ")").c_str(),
            o.choices.empty() ? "" : [&] {
              static std::string c;
              c = " {";
              for (size_t i = 0; i < o.choices.size(); ++i) c += (i ? "|" : "") + o.choices[i];
              c += "}";
              return c.c_str();
            }());
    }
    if (env.registry.passes().empty()) std::printf("(no passes registered)\n");
  } else if (what == "formats") {
    for (const auto* f : env.registry.formats())
      std::printf("%-12s %-8s %-13s %s  [%s]\n", f->name().c_str(), f->version().c_str(),
                  f->extension().c_str(), f->description().c_str(),
                  env.registry.origin_of_format(f->name()).c_str());
  } else if (what == "profiles") {
    validate_profiles(env.profiles, env.registry, env.profile_diags);
    if (env.profile_diags.has_errors()) throw Error(env.profile_diags.render());
    std::printf("%-18s %-22s %-10s %s\n", "profile", "backend", "budget", "description");
    for (const auto* p : env.profiles.all()) {
      const uint64_t b = p->memory.bytes();
      std::string budget =
          b ? fmt::format("{:.1f} GiB", static_cast<double>(b) / (1024.0 * 1024 * 1024)) : "-";
      std::string desc = p->description;
      if (!p->extends.empty()) desc += " (extends " + p->extends + ")";
      if (!p->aliases.empty()) {
        std::string a;
        for (const auto& x : p->aliases) a += (a.empty() ? "" : ", ") + x;
        desc += " [deprecated names: " + a + "]";
      }
      std::printf("%-18s %-22s %-10s %s\n", p->name.c_str(), p->backend.empty() ? "-" : p->backend.c_str(),
                  budget.c_str(), desc.c_str());
    }
  } else if (what == "plugins") {
    for (const auto& p : env.registry.plugins())
      std::printf("%-20s %-8s %s\n", p.name.c_str(), p.version.c_str(), p.path.c_str());
  }
  return 0;
}

struct BuildArgs {
  std::string manifest = "qforge.toml";
  std::vector<std::string> targets;
  int jobs = 0, threads = 0;
  bool dry_run = false, explain = false, no_cache = false, json = false, verbose = false, strict = false;
  bool shared_only = false;   // build only the shared steps (docs/scale.md)
  ShardSpec shard;            // --shard I/N (count 0: not given)
  std::string remote_cache;   // --remote-cache URL
  bool summary_only = false;  // `qforge quantize`: one line, not the target table
  bool plan_only = false;     // `qforge plan`
  std::string on;             // --on slurm
  std::string partition;      // --partition (with --on slurm)
  std::vector<std::string> sbatch_args;
  std::vector<std::string> plugins;  // --plugin, for the jobs --on starts
};

Manifest load_checked(const BuildArgs& a, Diagnostics& diags) {
  Manifest m = load_manifest(a.manifest, diags);
  return m;
}

int run_manifest(Env& env, Manifest& m, Diagnostics& diags, const BuildArgs& a, bool write_reports_flag) {
  for (const auto& p : m.plugin_paths) {
    try {
      env.load_path(p);
    } catch (const Error& e) {
      diags.error({m.path, 0, 0}, e.what());
    }
  }
  env.profiles.load_manifest(m, diags);
  if (env.profile_diags.has_errors()) throw Error(env.profile_diags.render());
  std::error_code ec;
  StatCache stats(a.no_cache ? std::string() : m.cache_dir + "/stat-cache");
  if (!stats.note.empty()) std::fprintf(stderr, "note: %s\n", stats.note.c_str());
  Plan plan = make_plan(m, env.registry, env.profiles, stats, a.targets, diags);
  if (!diags.all().empty()) std::fputs(diags.render(::isatty(2) == 1).c_str(), stderr);
  if (diags.has_errors()) return 1;
  if ((a.strict || m.strict) && !diags.all().empty()) {
    std::fputs("error: warnings are errors (--strict)\n", stderr);
    return 1;
  }
  if (a.on == "slurm") {
    if (!a.no_cache) fs::create_directories(m.cache_dir, ec);
    cli::SlurmArgs sa;
    sa.partition = a.partition;
    sa.sbatch_args = a.sbatch_args;
    sa.plugins = a.plugins;
    sa.manifest = a.manifest;
    sa.targets = a.targets;
    sa.threads = a.threads;
    sa.dry_run = a.dry_run;
    sa.explain = a.explain;
    sa.strict = a.strict;
    sa.verbose = a.verbose;
    sa.remote_cache = a.remote_cache;
    return cli::build_on_slurm(plan, stats, sa);
  }
  ShardInfo shard;
  if (a.shard.count > 0) {
    // The shares are computed on the plan of every selected target, then the
    // shard's own targets are planned again: the same nodes, the same keys.
    shard.index = a.shard.index;
    shard.count = a.shard.count;
    shard.targets = assign_shards(plan, a.shard.count)[static_cast<size_t>(a.shard.index)];
    if (shard.targets.empty()) {
      std::fprintf(stderr,
                   "warning: shard %d/%d has no targets (%zu target(s) in %d shares): nothing to build\n",
                   shard.index, shard.count, plan.targets.size(), shard.count);
      if ((a.strict || m.strict)) return 1;
      BuildResult empty;
      empty.shard = shard;
      if (write_reports_flag && !a.dry_run) write_reports(empty, m);
      std::fputs(report_table(empty, m.dir).c_str(), stdout);
      return 0;
    }
    Diagnostics again;
    plan = make_plan(m, env.registry, env.profiles, stats, shard.targets, again);
    if (again.has_errors()) throw Error("planning shard's targets: " + again.render());
  }
  const bool quiet_plan = a.json || (!a.dry_run && a.plan_only);
  auto progress = quiet_plan ? std::unique_ptr<Progress>(new NullProgress())
                             : make_console_progress(a.verbose || a.explain || a.dry_run);
  BuildOptions bo;
  bo.jobs = a.jobs;
  bo.threads = a.threads;
  bo.dry_run = a.dry_run || a.plan_only;
  bo.explain = a.explain;
  bo.no_cache = a.no_cache;
  bo.strict = a.strict;
  bo.shared_only = a.shared_only;
  bo.remote_cache = a.remote_cache;
  if (!a.no_cache && !bo.dry_run) fs::create_directories(m.cache_dir, ec);
  BuildResult r = run_build(plan, bo, stats, *progress);
  r.shard = shard;
  if (!a.no_cache && !bo.dry_run) stats.save();
  if (a.plan_only) {
    std::fputs((a.json ? plan_json(plan, r) : plan_text(plan, r)).c_str(), stdout);
    return 0;
  }
  if (a.dry_run) {
    size_t run = 0;
    for (const auto& s : r.steps) run += s.status == "planned";
    std::printf("dry run: %zu of %zu nodes would run\n", run, plan.nodes.size());
    return 0;
  }
  if (write_reports_flag) write_reports(r, m);
  if (a.summary_only) {
    for (const auto& t : r.targets) {
      for (const auto& w : t.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      if (!t.error.empty())
        std::fprintf(stderr, "error: %s\n", t.error.c_str());
      else
        std::printf("wrote %s (%llu bytes, %.2f bits per weight) in %.2fs\n", t.artifact.c_str(),
                    (unsigned long long)t.bytes, t.bits_per_weight, r.seconds);
    }
  } else {
    std::fputs(report_table(r, m.dir).c_str(), stdout);
  }
  if (write_reports_flag)
    std::printf("report: %s/report.json, %s/report.md, %s/report.html\n", m.output_dir.c_str(),
                m.output_dir.c_str(), m.output_dir.c_str());
  return r.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // OpenMP (oneDNN's threads and the cpu executor's loops) reads its wait
  // settings once, when the process starts. Spinning forever (its ACTIVE
  // policy) makes runs on a busy machine 10 to 100 times slower; sleeping at
  // once (PASSIVE) makes every parallel region wake threads, 4x slower on a
  // quiet one (measured on the PP-OCR classifier, executors/cpu/README.md,
  // "Threads"). Unless the caller chose, qforge re-executes itself once with a
  // short spin (GOMP_SPINCOUNT=2000) before sleeping: 0.116 s quiet (ACTIVE
  // 0.18, PASSIVE 0.50) and 1.0 s with two runs sharing the cores (ACTIVE 5.8).
  // The test runner sets PASSIVE, for ctest's parallel jobs.
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT") &&
      ::setenv("GOMP_SPINCOUNT", "2000", 1) == 0)
    ::execv("/proc/self/exe", argv);  // returns only on failure: go on as we are

  CLI::App app{"qforge: a build tool for quantized models"};
  app.set_version_flag("--version", std::string("qforge ") + QFORGE_VERSION);
  app.require_subcommand(1);
  std::vector<std::string> plugin_args;
  app.add_option("--plugin", plugin_args, "Load a plugin (file or directory); repeatable");

  BuildArgs b;
  auto* build = app.add_subcommand("build", "Build the manifest's targets");
  build->add_option("-f,--file", b.manifest, "The manifest")->capture_default_str();
  build->add_option("--target", b.targets, "Build only this target (repeatable)");
  build
      ->add_option("-j,--jobs", b.jobs,
                   "Nodes to run in parallel (default: [build] jobs, else the number of cores)")
      ->check(CLI::Range(1, 1024));
  build->add_flag("--dry-run", b.dry_run, "Show what would run, do nothing");
  build->add_flag("--explain", b.explain, "Say why each node runs");
  build->add_flag("--no-cache", b.no_cache, "Neither read nor write the cache");
  build
      ->add_option("-t,--threads", b.threads,
                   "Thread budget of the build: steps at once times the threads each uses never exceeds it "
                   "(default: [build] threads, else the number of cores)")
      ->check(CLI::Range(1, 1024));
  build->add_flag("--strict", b.strict, "Warnings are errors (also [build] strict = true)");
  build->add_flag("-v,--verbose", b.verbose, "Print a line per step");
  build->add_flag("--shared-only", b.shared_only,
                  "Build only the steps two or more targets share (and the cache keeps), no target: "
                  "run it once before per-target or per-shard builds");
  std::string shard_arg;
  build->add_option("--shard", shard_arg,
                    "Build the I-th of N shares of the targets, balanced by an estimate of each target's "
                    "own work (I from 0: 0/N ... N-1/N)");
  build->add_option("--on", b.on, "Run the build on a cluster: slurm (docs/scale.md)")
      ->check(CLI::IsMember({"slurm"}));
  build->add_option("--partition", b.partition, "--on slurm: the partition the jobs run in");
  build
      ->add_option("--sbatch-arg", b.sbatch_args,
                   "--on slurm: an option for every sbatch, as --sbatch-arg=--time=30 (repeatable)")
      ->allow_extra_args(false);
  build->add_option(
      "--remote-cache", b.remote_cache,
      "A shared cache over HTTP(S) (bazel-remote's protocol; overrides QFORGE_REMOTE_CACHE, which "
      "overrides [build] remote_cache); token from QFORGE_REMOTE_CACHE_TOKEN");

  BuildArgs p;
  auto* plan = app.add_subcommand("plan", "Print the build graph: nodes, what is cached, what will run");
  plan->add_option("-f,--file", p.manifest, "The manifest")->capture_default_str();
  plan->add_option("--target", p.targets, "Only this target (repeatable)");
  plan->add_flag("--json", p.json, "Machine-readable output");
  plan->add_option(
      "--remote-cache", p.remote_cache,
      "Also ask this remote cache (HEAD) what it has (else QFORGE_REMOTE_CACHE, [build] remote_cache)");

  std::string inspect_file, inspect_format;
  bool inspect_json = false;
  auto* inspect = app.add_subcommand("inspect", "Metadata, tensors, encodings and sizes of a model file");
  inspect->add_option("FILE", inspect_file, "Model file, or a dataset file (.npy, .npz, TensorProto .pb)")
      ->required();
  inspect->add_flag("--json", inspect_json, "Machine-readable output");
  inspect->add_option("--format", inspect_format, "Force the format instead of probing");

  std::string list_what;
  auto* list = app.add_subcommand("list", "List passes, formats, profiles or plugins");
  list->add_option("WHAT", list_what, "passes|formats|profiles|plugins")
      ->required()
      ->check(CLI::IsMember({"passes", "formats", "profiles", "plugins"}));
  bool list_markdown = false;
  list->add_flag("--markdown", list_markdown,
                 "passes: the option reference as Markdown (as in docs/manifest.md)");

  // quantize: a one-target build of quantize-gguf (llama-quantize's options).
  std::string q_in, q_out, q_type, q_imatrix, q_out_type, q_embd_type;
  std::vector<std::string> q_tensor_types, q_include, q_exclude, q_override_kv;
  bool q_pure = false, q_leave_output = false, q_allow_requant = false, q_no_fallback = false;
  int q_threads = 0;
  auto* quantize = app.add_subcommand(
      "quantize", "Quantize a GGUF model (like llama-quantize), through the build pipeline");
  quantize->add_option("IN", q_in, "Input model")->required()->check(CLI::ExistingFile);
  quantize->add_option("OUT", q_out, "Output model")->required();
  quantize->add_option("--type", q_type, "Tensor type or file type (Q4_K_M, Q8_0, ...)")->required();
  quantize->add_option("--imatrix", q_imatrix, "Importance matrix (GGUF or legacy .dat)")
      ->check(CLI::ExistingFile);
  quantize->add_option("--tensor-type", q_tensor_types, "REGEX=TYPE override (repeatable)");
  quantize->add_option("--include-weights", q_include, "Use the imatrix only for these tensors (repeatable)");
  quantize->add_option("--exclude-weights", q_exclude,
                       "Don't use the imatrix for these tensors (repeatable)");
  quantize->add_option("--output-tensor-type", q_out_type, "Type of output.weight");
  quantize->add_option("--token-embedding-type", q_embd_type, "Type of token_embd.weight");
  quantize->add_option("--override-kv", q_override_kv, "KEY=TYPE:VALUE metadata override (repeatable)");
  quantize->add_flag("--leave-output-tensor", q_leave_output, "Leave output.weight unquantized");
  quantize->add_flag("--pure", q_pure, "Use the same type for every tensor (no mixture rules)");
  quantize->add_flag("--allow-requantize", q_allow_requant, "Allow quantized input (dequantized first)");
  quantize->add_flag("--no-fallback", q_no_fallback, "Fail instead of falling back to another type");
  quantize->add_option("--threads", q_threads, "Worker threads (default: cores)")->check(CLI::Range(1, 1024));

  // run / compare: a model through an executor on a dataset directory.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string run_model;
  cli::RunArgs ra;
  ra.threads = cores;
  auto* run =
      app.add_subcommand("run", "Run a model on each sample of a directory, writing its outputs as .npy");
  run->add_option("MODEL", run_model, "The model")->required()->check(CLI::ExistingFile);
  run->add_option("--data", ra.data,
                  "Samples: .npy/.pb (first input), .npz (by input name), test_data_set_N dirs")
      ->required()
      ->check(CLI::ExistingDirectory);
  run->add_option("--out", ra.out, "Where <sample>_<output index>.npy are written")->required();
  run->add_flag("--profile", ra.profile, "Print where the time went, per op type and per node");
  run->add_option("--executor", ra.executor, "Executor (default: cpu)");
  run->add_option("-t,--threads", ra.threads, "Threads (default: the number of cores)")
      ->check(CLI::Range(1, 1024));

  std::string cmp_ref, cmp_cand;
  cli::CompareArgs ca;
  ca.threads = cores;
  auto* compare = app.add_subcommand(
      "compare",
      "Run two models on the same samples: cosine, SQNR, max abs error, argmax agreement per output");
  compare->add_option("REF", cmp_ref, "The reference model")->required()->check(CLI::ExistingFile);
  compare->add_option("CAND", cmp_cand, "The candidate model")->required()->check(CLI::ExistingFile);
  compare->add_option("--data", ca.data, "Samples, as for run")->required()->check(CLI::ExistingDirectory);
  compare->add_flag("--json", ca.json, "Machine-readable output");
  compare->add_option("--executor", ca.executor, "Executor (default: cpu)");
  compare->add_option("-t,--threads", ca.threads, "Threads (default: the number of cores)")
      ->check(CLI::Range(1, 1024));

  // export k8s: Kubernetes Jobs for the build (docs/scale.md).
  auto* exp = app.add_subcommand("export", "Write the build as jobs for a cluster scheduler");
  exp->require_subcommand(1);
  cli::K8sArgs ka;
  ka.manifest = "qforge.toml";
  std::string k8s_out;
  auto* k8s = exp->add_subcommand(
      "k8s", "Kubernetes: a Job for the shared steps and an Indexed Job whose pod I builds shard I/N");
  k8s->add_option("-f,--file", ka.manifest, "The manifest (its path in the image)")->capture_default_str();
  k8s->add_option("--image", ka.image, "Container image with qforge and the manifest's files");
  k8s->add_option("--remote-cache", ka.remote_cache,
                  "Cache URL the pods share, set as QFORGE_REMOTE_CACHE in their environment");
  k8s->add_option("--namespace", ka.ns, "Namespace of the Jobs");
  k8s->add_option("--name", ka.name, "Prefix of the Job names (<name>-shared, <name>-shards)")
      ->capture_default_str();
  k8s->add_option("--workdir", ka.workdir, "Working directory of the containers (default: the image's)");
  k8s->add_option("--shards", ka.shards, "Completions of the indexed Job (default: one per target)")
      ->check(CLI::Range(1, 100000));
  k8s->add_option("--parallelism", ka.parallelism, "Pods at once (default: every shard)")
      ->check(CLI::Range(1, 100000));
  k8s->add_option("--target", ka.targets, "Only this target (repeatable; passed on to the pods)");
  k8s->add_option("-o,--output", k8s_out, "Write the YAML here (default: standard output)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  try {
    Env env(plugin_args);
    if (*inspect) return cmd_inspect(env, inspect_file, inspect_json, inspect_format);
    if (*list) return cmd_list(env, list_what, list_markdown);
    if (*run) return cli::cmd_run(env.registry, import_file(env, run_model), ra);
    if (*compare)
      return cli::cmd_compare(env.registry, import_file(env, cmp_ref), import_file(env, cmp_cand), ca);
    if (*build) {
      b.plugins = plugin_args;
      // Usage errors first (exit 2), before the manifest is read.
      std::vector<std::string> usage;
      if (!shard_arg.empty()) {
        std::string err = parse_shard(shard_arg, b.shard);
        if (!err.empty()) usage.push_back(err);
      }
      if (b.shared_only && !shard_arg.empty())
        usage.push_back(
            "--shared-only and --shard exclude each other: run `build --shared-only` once, then "
            "`build --shard I/N` for each share");
      if (b.shared_only && b.no_cache)
        usage.push_back(
            "--shared-only keeps the shared steps in the cache for the builds after it; with "
            "--no-cache it would keep nothing");
      if (b.on.empty() && (!b.partition.empty() || !b.sbatch_args.empty()))
        usage.push_back("--partition and --sbatch-arg go with --on slurm");
      if (!b.on.empty() && (b.no_cache || b.shared_only || !shard_arg.empty()))
        usage.push_back(
            "--on " + b.on + " cannot be used with " +
            (b.no_cache      ? "--no-cache"
             : b.shared_only ? "--shared-only"
                             : "--shard") +
            ": its jobs share their results through the cache and it submits the shared steps itself");
      if (!usage.empty()) {
        for (const auto& u : usage) std::fprintf(stderr, "error: %s\n", u.c_str());
        std::fprintf(stderr, "Run with --help for more information.\n");
        return 2;
      }
      Diagnostics diags;
      Manifest m = load_checked(b, diags);
      if (m.path.empty()) {  // unreadable
        std::fputs(diags.render(::isatty(2) == 1).c_str(), stderr);
        return 1;
      }
      // Plan even after manifest errors, so that every mistake is reported in one run.
      return run_manifest(env, m, diags, b, true);
    }
    if (*k8s) {
      const auto problems = cli::check_k8s_args(ka);
      if (!problems.empty()) {
        for (const auto& pr : problems) std::fprintf(stderr, "error: %s\n", pr.c_str());
        std::fprintf(stderr, "Run with --help for more information.\n");
        return 2;
      }
      BuildArgs ea;
      ea.manifest = ka.manifest;
      ea.targets = ka.targets;
      Diagnostics diags;
      Manifest m = load_checked(ea, diags);
      if (m.path.empty()) {
        std::fputs(diags.render(::isatty(2) == 1).c_str(), stderr);
        return 1;
      }
      for (const auto& pp : m.plugin_paths) env.load_path(pp);
      env.profiles.load_manifest(m, diags);
      if (env.profile_diags.has_errors()) throw Error(env.profile_diags.render());
      StatCache stats(m.cache_dir + "/stat-cache");  // read, not saved: nothing is built
      Plan pl = make_plan(m, env.registry, env.profiles, stats, ea.targets, diags);
      if (!diags.all().empty()) std::fputs(diags.render(::isatty(2) == 1).c_str(), stderr);
      if (diags.has_errors()) return 1;
      size_t shared = 0;
      for (const auto& n : pl.nodes) shared += n.shared;
      if (ka.shards == 0) ka.shards = static_cast<int>(std::max<size_t>(pl.targets.size(), 1));
      if (static_cast<size_t>(ka.shards) > pl.targets.size())
        std::fprintf(stderr, "warning: %d shards for %zu target(s): %zu pod(s) will build nothing\n",
                     ka.shards, pl.targets.size(), static_cast<size_t>(ka.shards) - pl.targets.size());
      if (shared == 0)
        std::fprintf(stderr, "note: no step is shared by two targets: the shared Job builds nothing\n");
      if (ka.remote_cache.empty())
        std::fprintf(
            stderr,
            "note: no --remote-cache: the pods share results only if the cache directory (%s) is on a "
            "shared volume\n",
            m.cache_dir.c_str());
      const std::string yaml = cli::k8s_yaml(ka, shared, pl.targets.size());
      if (k8s_out.empty()) {
        std::fputs(yaml.c_str(), stdout);
      } else {
        AtomicFile f(k8s_out);
        f.write(yaml.data(), yaml.size());
        f.commit();
        std::fprintf(stderr, "wrote %s: Job %s-shared and Indexed Job %s-shards (%d completions)\n",
                     k8s_out.c_str(), ka.name.c_str(), ka.name.c_str(), ka.shards);
      }
      return 0;
    }
    if (*plan) {
      Diagnostics diags;
      Manifest m = load_checked(p, diags);
      if (m.path.empty()) {
        std::fputs(diags.render(::isatty(2) == 1).c_str(), stderr);
        return 1;
      }
      p.plan_only = true;
      return run_manifest(env, m, diags, p, false);
    }
    if (*quantize) {
      // Usage errors first, against the pass's own schema and checks: exit 2, with a suggestion.
      if (const PassInfo* qg = env.registry.pass("quantize-gguf")) {
        const std::map<std::string, std::string> flag_of = {
            {"type", "--type"},
            {"tensor_types", "--tensor-type"},
            {"output_tensor_type", "--output-tensor-type"},
            {"token_embedding_type", "--token-embedding-type"}};
        Options given;
        given["type"] = Value::of_string(q_type);
        if (!q_tensor_types.empty()) {
          Value l;
          l.kind = Value::Kind::List;
          for (const auto& tt : q_tensor_types) l.list.push_back(Value::of_string(tt));
          given["tensor_types"] = l;
        }
        if (!q_out_type.empty()) given["output_tensor_type"] = Value::of_string(q_out_type);
        if (!q_embd_type.empty()) given["token_embedding_type"] = Value::of_string(q_embd_type);
        std::vector<std::string> problems;
        for (auto& [name, v] : given)
          for (const auto& spec : qg->options) {
            Diagnostics d;
            if (spec.name != name || check_option_value(spec, v, "quantize-gguf", ".", nullptr, d)) continue;
            std::string msg = d.all().empty() ? " is invalid" : d.all().front().message;
            const std::string prefix = "option '" + name + "' of pass 'quantize-gguf'";
            if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
            problems.push_back(flag_of.at(name) + (msg.rfind(": ", 0) == 0 ? msg : ":" + msg));
          }
        if (problems.empty() && qg->validate)
          for (const auto& pr : qg->validate(given))
            problems.push_back((flag_of.count(pr.option) ? flag_of.at(pr.option) : "--" + pr.option) + ": " +
                               pr.message);
        if (!problems.empty()) {
          for (const auto& pr : problems) std::fprintf(stderr, "error: %s\n", pr.c_str());
          std::fprintf(stderr, "Run with --help for more information.\n");
          return 2;
        }
      }
      // The same pipeline as `build`: a one-target manifest made in memory.
      auto esc = [](const std::string& s) {
        std::string o = "'";
        for (char c : s) {
          if (c == '\'' || c == '\n') throw Error("argument contains a quote or newline: " + s);
          o += c;
        }
        return o + "'";
      };
      auto list = [&](const std::vector<std::string>& v) {
        std::string o = "[";
        for (size_t i = 0; i < v.size(); ++i) o += (i ? ", " : "") + esc(v[i]);
        return o + "]";
      };
      std::string opts = "pass = \"quantize-gguf\", type = " + esc(q_type);
      // As typed: relative paths resolve against the working directory (the
      // in-memory manifest's), and the metadata records the path as given.
      if (!q_imatrix.empty()) opts += ", imatrix = " + esc(q_imatrix);
      if (!q_tensor_types.empty()) opts += ", tensor_types = " + list(q_tensor_types);
      if (!q_include.empty()) opts += ", include_weights = " + list(q_include);
      if (!q_exclude.empty()) opts += ", exclude_weights = " + list(q_exclude);
      if (!q_override_kv.empty()) opts += ", override_kv = " + list(q_override_kv);
      if (!q_out_type.empty()) opts += ", output_tensor_type = " + esc(q_out_type);
      if (!q_embd_type.empty()) opts += ", token_embedding_type = " + esc(q_embd_type);
      if (q_pure) opts += ", pure = true";
      if (q_leave_output) opts += ", leave_output_tensor = true";
      if (q_allow_requant) opts += ", allow_requantize = true";
      if (q_no_fallback) opts += ", no_fallback = true";
      std::string text = "[models.in]\npath = " + esc(fs::absolute(q_in).string()) +
                         "\n\n[[targets]]\nname = " + esc(fs::path(q_out).stem().string()) +
                         "\nmodel = \"in\"\noutput = " + esc(fs::absolute(q_out).string()) +
                         "\npipeline = [ { " + opts + " } ]\n";
      Diagnostics diags;
      Manifest m = parse_manifest(text, "<qforge quantize>", diags);
      if (diags.has_errors()) {
        std::fputs(diags.render().c_str(), stderr);
        return 1;
      }
      BuildArgs qa;
      qa.no_cache = true;
      qa.jobs = 1;  // one target: its pass uses --threads
      qa.threads = q_threads;
      qa.summary_only = true;
      return run_manifest(env, m, diags, qa, false);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
