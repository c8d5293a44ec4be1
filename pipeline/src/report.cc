// Reports: dist/report.json (docs/manifest.md, "The report"), dist/report.md and
// the terminal table; the plan as text and JSON.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include "qforge/atomic_file.h"
#include "qforge/build.h"
#include "qforge/cache.h"
#include "report_internal.h"

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace qforge {
namespace {

using namespace report_detail;

std::string metrics_text(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m)
    if (!per_output(k)) s += (s.empty() ? "" : " ") + k + "=" + fmt_num(v, "%.6g");
  return s.empty() ? "-" : s;
}

std::string breakdown_title(const TargetResult& t) {
  std::string s = "fidelity of '" + t.name + "' against the model as imported";
  if (auto it = t.metrics.find("evaluation_samples"); it != t.metrics.end())
    s += " (" + fmt_num(it->second, "%.0f") + " samples)";
  return s;
}

// Rows of cells, columns padded to their widest cell.
std::string aligned(const std::vector<std::vector<std::string>>& rows, const std::string& indent = "") {
  std::vector<size_t> w;
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) {
      if (w.size() <= c) w.push_back(0);
      w[c] = std::max(w[c], row[c].size());
    }
  std::ostringstream os;
  for (const auto& row : rows) {
    os << indent;
    for (size_t c = 0; c < row.size(); ++c) {
      os << row[c];
      if (c + 1 < row.size()) os << std::string(w[c] - row[c].size() + 2, ' ');
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace

std::string report_json(const BuildResult& r, const std::string& base) {
  Json j = Json::object();
  Json targets = Json::array();
  for (const auto& t : r.targets) {
    Json o = Json::object();
    o["name"] = t.name;
    o["model"] = t.model;
    o["profile"] = t.profile.empty() ? Json() : Json(t.profile);
    o["format"] = t.format;
    o["artifact"] = rel(t.artifact, base);
    o["bytes"] = t.bytes;
    o["bits_per_weight"] = Json(std::stod(fmt_num(t.bits_per_weight, "%.4f")));
    o["status"] = t.status;
    if (!t.source.empty()) o["source"] = t.source;
    o["seconds"] = Json(std::stod(fmt_num(t.seconds, "%.3f")));
    // Non-finite values (an SQNR of +inf: no error at all) are written as null.
    Json mm = Json::object();
    for (const auto& [k, v] : t.metrics)
      if (!per_output(k)) mm[k] = std::isfinite(v) ? Json(v) : Json(nullptr);
    const Breakdown b = breakdown_of(t.metrics);
    if (!b.rows.empty()) {
      Json outs = Json::object();
      for (const auto& [output, values] : b.rows) {
        Json vo = Json::object();
        for (const auto& [k, v] : values) vo[k] = std::isfinite(v) ? Json(v) : Json(nullptr);
        outs[output] = vo;
      }
      mm["outputs"] = outs;
    }
    o["metrics"] = mm;
    if (!t.notes.empty()) {
      Json n = Json::array();
      for (const auto& l : t.notes) n.push_back(Json(l));
      o["notes"] = n;
    }
    Json w = Json::array();
    for (const auto& l : t.warnings) w.push_back(Json(l));
    o["warnings"] = w;
    Json sk = Json::array();
    for (const auto& x : t.skipped) sk.push_back({{"pass", x.pass}, {"reason", x.reason}, {"what", x.what}});
    o["skipped"] = sk;
    if (!t.error.empty()) {
      o["error"] = t.error;
    }
    if (!t.slurm_job.empty()) o["slurm_job"] = t.slurm_job;
    targets.push_back(o);
  }
  Json steps = Json::array();
  for (const auto& s : r.steps) {
    Json o = Json::object();
    o["key"] = s.key;
    o["pass"] = s.pass;
    o["kind"] = s.kind;
    o["model"] = s.model;
    o["label"] = s.label;
    Json ins = Json::array();
    for (const auto& k : s.inputs) ins.push_back(Json(k));
    o["inputs"] = ins;
    Json ts = Json::array();
    for (const auto& t : s.targets) ts.push_back(Json(t));
    o["targets"] = ts;
    o["status"] = s.status;
    if (!s.source.empty()) o["source"] = s.source;
    o["seconds"] = Json(std::stod(fmt_num(s.seconds, "%.3f")));
    if (s.threads > 0) o["threads"] = s.threads;
    if (!s.slurm_job.empty()) o["slurm_job"] = s.slurm_job;
    steps.push_back(o);
  }
  if (r.shared_only) j["shared_only"] = true;  // steps: the shared steps; no target was built
  if (r.shard.count > 0) {
    Json ts = Json::array();
    for (const auto& t : r.shard.targets) ts.push_back(Json(t));
    j["shard"] = {{"index", r.shard.index}, {"count", r.shard.count}, {"targets", ts}};
  }
  j["targets"] = targets;
  j["steps"] = steps;
  Json sum = Json::object();
  sum["built"] = r.built;
  sum["cached"] = r.cached;
  sum["failed"] = r.failed;
  sum["warnings"] = r.warnings;
  j["summary"] = sum;
  if (!r.remote.url.empty()) {
    const RemoteCacheSummary& rc = r.remote;
    Json w = Json::array();
    for (const auto& l : rc.warnings) w.push_back(Json(l));
    j["remote_cache"] = {{"url", rc.url},
                         {"hits", rc.hits},
                         {"misses", rc.misses},
                         {"downloaded_objects", rc.downloaded_objects},
                         {"downloaded_bytes", rc.downloaded_bytes},
                         {"uploaded_records", rc.uploaded_records},
                         {"uploaded_objects", rc.uploaded_objects},
                         {"uploaded_bytes", rc.uploaded_bytes},
                         {"warnings", w}};
  }
  return j.dump(2) + "\n";
}

std::string report_table(const BuildResult& r, const std::string& base) {
  if (r.shared_only) {
    std::ostringstream os;
    size_t not_kept = 0;
    for (const auto& s : r.steps) {
      if (s.status == "failed") os << "error: " << s.label << ": failed\n";
      not_kept += s.status == "skipped" && s.why.rfind("not kept", 0) == 0;
    }
    os << "shared steps only: " << r.steps.size() << " shared step(s): " << r.built << " built, " << r.cached
       << " cached, " << r.failed << " failed";
    if (not_kept) os << "; " << not_kept << " not kept in the cache (each target's build computes them)";
    os << " in " << fmt_num(r.seconds, "%.2fs") << "\n";
    return os.str();
  }
  std::vector<std::vector<std::string>> rows = {
      {"target", "model", "profile", "format", "size", "bpw", "time", "status", "metrics"}};
  for (const auto& t : r.targets)
    rows.push_back({t.name, t.model, t.profile.empty() ? "-" : t.profile, t.format, human_bytes(t.bytes),
                    fmt_num(t.bits_per_weight, "%.2f"), fmt_num(t.seconds, "%.2fs"),
                    t.source.empty() ? t.status : t.status + " (" + t.source + ")", metrics_text(t.metrics)});
  std::ostringstream os;
  if (!r.targets.empty()) os << aligned(rows);
  for (const auto& t : r.targets) {
    const Breakdown b = breakdown_of(t.metrics);
    if (b.rows.empty()) continue;
    std::vector<std::vector<std::string>> fr{{"output"}};
    fr[0].insert(fr[0].end(), b.columns.begin(), b.columns.end());
    for (const auto& [output, values] : b.rows) {
      fr.push_back({output});
      for (const auto& c : b.columns) {
        auto it = values.find(c);
        fr.back().push_back(it == values.end() ? "-" : metric_cell(c, it->second));
      }
    }
    os << breakdown_title(t) << ":\n" << aligned(fr, "  ");
  }
  for (const auto& t : r.targets) {
    for (const auto& w : t.warnings) os << "warning: target '" << t.name << "': " << w << "\n";
    for (const auto& l : summarize_skips(t.skipped)) os << "note: target '" << t.name << "': " << l << "\n";
    if (!t.error.empty()) os << "error: target '" << t.name << "': " << t.error << "\n";
  }
  size_t steps_built = 0;
  for (const auto& s : r.steps) steps_built += s.status == "built";
  if (r.shard.count > 0) {
    std::string names;
    for (const auto& t : r.shard.targets) names += (names.empty() ? "" : ", ") + t;
    os << "shard " << r.shard.index << "/" << r.shard.count << ": "
       << (names.empty() ? std::string("no targets") : names) << "\n";
  }
  os << r.targets.size() << " targets: " << r.built << " built, " << r.cached << " cached, " << r.failed
     << " failed; " << steps_built << " of " << r.steps.size() << " steps ran";
  if (r.built == 0 && r.failed == 0) os << " (nothing to do)";
  os << " in " << fmt_num(r.seconds, "%.2fs");
  if (r.warnings) os << "; " << r.warnings << " warning(s)";
  os << "\n";
  if (!r.remote.url.empty()) {
    const RemoteCacheSummary& rc = r.remote;
    for (const auto& w : rc.warnings) os << "warning: " << w << "\n";
    os << "remote cache " << rc.url << ": " << rc.hits << " hit(s), " << rc.misses << " miss(es); downloaded "
       << rc.downloaded_objects << " object(s) (" << human_bytes(rc.downloaded_bytes) << "), uploaded "
       << rc.uploaded_records << " record(s) and " << rc.uploaded_objects << " object(s) ("
       << human_bytes(rc.uploaded_bytes) << ")\n";
  }
  (void)base;
  return os.str();
}

std::string report_markdown(const BuildResult& r, const std::string& base) {
  std::ostringstream os;
  os << "# qforge build report\n\n";
  if (r.shared_only) os << "Shared steps only (`--shared-only`): no target was built.\n\n";
  if (r.shard.count > 0)
    os << "Shard " << r.shard.index << "/" << r.shard.count << " (`--shard`): " << r.shard.targets.size()
       << " of the manifest's targets.\n\n";
  os << "| target | model | profile | format | artifact | size | bits/weight | time | status | metrics |\n";
  os << "|---|---|---|---|---|---:|---:|---:|---|---|\n";
  for (const auto& t : r.targets)
    os << "| " << t.name << " | " << t.model << " | " << (t.profile.empty() ? "-" : t.profile) << " | "
       << t.format << " | " << rel(t.artifact, base) << " | " << human_bytes(t.bytes) << " | "
       << fmt_num(t.bits_per_weight, "%.2f") << " | " << fmt_num(t.seconds, "%.2fs") << " | " << t.status
       << " | " << metrics_text(t.metrics) << " |\n";
  bool any_breakdown = false;
  for (const auto& t : r.targets) {
    const Breakdown b = breakdown_of(t.metrics);
    if (b.rows.empty()) continue;
    if (!any_breakdown) os << "\n## Fidelity\n";
    any_breakdown = true;
    os << "\n" << breakdown_title(t) << ":\n\n| output |";
    for (const auto& c : b.columns) os << " " << c << " |";
    os << "\n|---|";
    for (size_t i = 0; i < b.columns.size(); ++i) os << "---:|";
    os << "\n";
    for (const auto& [output, values] : b.rows) {
      os << "| " << output << " |";
      for (const auto& c : b.columns) {
        auto it = values.find(c);
        os << " " << (it == values.end() ? "-" : metric_cell(c, it->second)) << " |";
      }
      os << "\n";
    }
  }
  os << "\n## Steps\n\n| step | targets | status | time |\n|---|---|---|---:|\n";
  for (const auto& s : r.steps) {
    std::string ts;
    for (const auto& t : s.targets) ts += (ts.empty() ? "" : ", ") + t;
    os << "| " << s.label << " | " << ts << " | " << s.status << " | " << fmt_num(s.seconds, "%.2fs")
       << " |\n";
  }
  bool any_warnings = false, any_notes = false;
  for (const auto& t : r.targets) {
    any_warnings |= !t.warnings.empty() || !t.error.empty();
    any_notes |= !t.notes.empty() || !t.skipped.empty();
  }
  if (any_warnings) {
    os << "\n## Warnings and errors\n\n";
    for (const auto& t : r.targets) {
      for (const auto& w : t.warnings) os << "- " << t.name << ": warning: " << w << "\n";
      if (!t.error.empty()) os << "- " << t.name << ": error: " << t.error << "\n";
    }
  }
  if (any_notes) {
    os << "\n## Notes\n\n";
    for (const auto& t : r.targets) {
      for (const auto& l : summarize_skips(t.skipped)) os << "- " << t.name << ": " << l << "\n";
      for (const auto& n : t.notes) os << "- " << t.name << ": " << n << "\n";
    }
    bool any_skipped = false;
    for (const auto& t : r.targets) any_skipped |= !t.skipped.empty();
    if (any_skipped) os << "\nreport.json lists every skipped node with its reason.\n";
  }
  return os.str();
}

void write_reports(const BuildResult& r, const Manifest& m) {
  fs::create_directories(m.output_dir);
  auto write = [](const std::string& path, const std::string& text) {
    AtomicFile f(path);
    f.write(text.data(), text.size());
    f.commit();
  };
  write(m.output_dir + "/report.json", report_json(r, m.dir));
  write(m.output_dir + "/report.md", report_markdown(r, m.dir));
  write(m.output_dir + "/report.html", report_html(r, m.dir));
}

namespace {
const char* kind_name(PlanNode::Kind k) {
  return k == PlanNode::Kind::Import ? "import" : k == PlanNode::Kind::Pass ? "pass" : "emit";
}
std::string state_of(const StepResult& s) {
  if (s.status == "planned") return s.why.rfind("cached ", 0) == 0 ? "will load from cache" : "will run";
  if (s.pass != "emit" && s.why.empty()) return "not needed (what depends on it is cached)";
  return "cached";
}
}  // namespace

std::string plan_text(const Plan& plan, const BuildResult& dry) {
  std::ostringstream os;
  size_t run = 0;
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const auto& n = plan.nodes[i];
    const StepResult& s = dry.steps[i];
    const std::string state = state_of(s);
    run += state == "will run";
    os << "[" << i << "] " << n.key.substr(0, 12) << "  " << n.label << "  -> " << name_of(n.produces);
    if (!n.inputs.empty()) {
      os << "  <-";
      for (int in : n.inputs) os << " " << (in < 0 ? std::string("(none)") : "[" + std::to_string(in) + "]");
    }
    std::string ts;
    for (const auto& t : n.targets) ts += (ts.empty() ? "" : ", ") + t;
    os << "\n      targets: " << ts << (n.shared ? " (shared)" : "") << "\n      cache: " << n.store_why
       << "\n      " << state;
    if (!s.why.empty() && s.status == "planned")
      os << ": " << s.why;
    else if (s.status == "cached" && n.kind == PlanNode::Kind::Emit && !s.why.empty())
      os << ": " << s.why;
    os << "\n";
  }
  os << plan.nodes.size() << " nodes, " << plan.targets.size() << " targets; " << run << " nodes will run\n";
  return os.str();
}

std::string plan_json(const Plan& plan, const BuildResult& dry) {
  Json nodes = Json::array();
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const auto& n = plan.nodes[i];
    const StepResult& s = dry.steps[i];
    Json o = Json::object();
    o["id"] = i;
    o["key"] = n.key;
    o["kind"] = kind_name(n.kind);
    o["produces"] = name_of(n.produces);
    o["label"] = n.label;
    o["model"] = n.model;
    Json ins = Json::array();
    for (int in : n.inputs) ins.push_back(in < 0 ? Json() : Json(in));
    o["inputs"] = ins;
    if (n.pass) {
      o["pass"] = n.pass->name;
      Json opts = Json::object();
      for (const auto& [k, v] : n.options) opts[k] = v.display();
      o["options"] = opts;
    }
    if (n.kind == PlanNode::Kind::Emit) {
      o["artifact"] = n.artifact;
      o["format"] = n.format->name();
    }
    Json ts = Json::array();
    for (const auto& t : n.targets) ts.push_back(Json(t));
    o["targets"] = ts;
    o["shared"] = n.shared;
    o["store"] = n.store;
    o["cache_policy"] = n.store_why;
    const std::string state = state_of(s);
    o["cached"] = state != "will run";
    o["state"] = state;
    if (!s.why.empty()) o["why"] = s.why;
    nodes.push_back(o);
  }
  Json targets = Json::array();
  const std::vector<uint64_t> costs = target_costs(plan);
  for (size_t k = 0; k < plan.targets.size(); ++k) {
    const auto& t = plan.targets[k];
    Json o = Json::object();
    o["name"] = t.decl.name;
    o["model"] = t.decl.model;
    o["artifact"] = t.artifact;
    o["format"] = t.format;
    o["profile"] = t.profile.empty() ? Json() : Json(t.profile);
    o["emit_node"] = t.emit;
    o["cost"] = costs[k];  // the estimate --shard balances (docs/scale.md)
    targets.push_back(o);
  }
  Json j = Json::object();
  j["nodes"] = nodes;
  j["targets"] = targets;
  return j.dump(2) + "\n";
}

}  // namespace qforge

namespace qforge {
namespace {
const char* short_type(OptType t) {
  switch (t) {
    case OptType::Bool: return "bool";
    case OptType::Int: return "integer";
    case OptType::Float: return "number";
    case OptType::String: return "string";
    case OptType::Enum: return "string";
    case OptType::List: return "list of strings";
    case OptType::Table: return "table";
    case OptType::Path: return "path";
    case OptType::Dataset: return "dataset name";
    case OptType::Size: return "size";
  }
  return "?";
}
std::string md_escape(std::string s) {
  std::string o;
  for (char c : s) {
    if (c == '|')
      o += "\\|";
    else if (c == '\n')
      o += ' ';
    else
      o += c;
  }
  return o;
}
std::string artifact_text(const ArtifactSpec& a) {
  std::string s = name_of(a.kind);
  if (!a.schema.empty()) s += " `" + a.schema + "`";
  if (a.optional) s += " (optional)";
  return s;
}
}  // namespace

std::string pass_reference_markdown(const std::vector<const PassInfo*>& passes) {
  std::ostringstream os;
  for (const PassInfo* p : passes) {
    os << "### `" << p->name << "`\n\n" << md_escape(p->description) << "\n\n";
    os << "Consumes: model";
    for (const auto& in : p->inputs) os << ", " << artifact_text(in);
    os << ". Produces: " << artifact_text(p->output) << ".";
    if (p->needs_graph) os << " Needs a graph (ONNX).";
    if (p->needs_profile) os << " Needs a hardware profile.";
    if (p->needs_executor) os << " Runs the model with the build's executor.";
    if (p->needs_reference) os << " Compares it with the model as imported.";
    if (p->expensive) os << " Its model is cached when another step consumes it.";
    os << "\n\n";
    if (p->options.empty()) {
      os << "No options.\n\n";
      continue;
    }
    os << "| option | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
    for (const auto& o : p->options) {
      std::string allowed;
      if (!o.choices.empty())
        for (size_t i = 0; i < o.choices.size(); ++i) allowed += (i ? ", " : "") + ("`" + o.choices[i] + "`");
      if (!o.int_choices.empty())
        for (size_t i = 0; i < o.int_choices.size(); ++i)
          allowed += (i ? ", " : "") + std::to_string(o.int_choices[i]);
      if (o.has_min || o.has_max) {
        char b[64];
        if (o.has_min && o.has_max)
          std::snprintf(b, sizeof b, "%g to %g", o.min, o.max);
        else if (o.has_min)
          std::snprintf(b, sizeof b, "at least %g", o.min);
        else
          std::snprintf(b, sizeof b, "at most %g", o.max);
        allowed += (allowed.empty() ? "" : "; ") + std::string(b);
      }
      if (!o.pattern_help.empty()) allowed += (allowed.empty() ? "" : "; ") + o.pattern_help;
      if (o.type == OptType::Size)
        allowed += (allowed.empty() ? "" : "; ") + std::string("bytes, `3.5GiB`, `4.5bpw`");
      os << "| `" << o.name << "` | " << short_type(o.type)
         << (o.type == OptType::List ? (o.unordered ? " (a set)" : " (ordered)") : "") << " | "
         << (o.required                  ? "required"
             : o.default_value.is_null() ? "-"
                                         : "`" + md_escape(o.default_value.display()) + "`")
         << " | " << (allowed.empty() ? "-" : md_escape(allowed)) << " | " << md_escape(o.help) << " |\n";
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace qforge
