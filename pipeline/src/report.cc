// Reports: dist/report.json (the contract of DESIGN.md), dist/report.md and
// the terminal table; the plan as text and JSON.
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "qforge/atomic_file.h"
#include "qforge/build.h"
#include "qforge/cache.h"
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace qforge {
namespace {

std::string rel(const std::string& path, const std::string& base) {
  std::error_code ec;
  auto r = fs::relative(path, base, ec);
  if (ec || r.empty() || r.string().rfind("..", 0) == 0) return path;
  return r.string();
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string fmt_num(double v, const char* f = "%.3g") {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string metrics_text(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : " ") + k + "=" + fmt_num(v, "%.6g");
  return s.empty() ? "-" : s;
}

}  // namespace

std::string report_json(const BuildResult& r, const std::string& base) {
  Json j = Json::object();
  Json targets = Json::array();
  for (const auto& t : r.targets) {
    Json o = Json::object();
    o["name"] = t.name; o["model"] = t.model;
    o["profile"] = t.profile.empty() ? Json() : Json(t.profile);
    o["format"] = t.format; o["artifact"] = rel(t.artifact, base);
    o["bytes"] = t.bytes;
    o["bits_per_weight"] = Json(std::stod(fmt_num(t.bits_per_weight, "%.4f")));
    o["status"] = t.status; o["seconds"] = Json(std::stod(fmt_num(t.seconds, "%.3f")));
    Json mm = Json::object();
    for (const auto& [k, v] : t.metrics) mm[k] = v;
    o["metrics"] = mm;
    if (!t.notes.empty()) {
      Json n = Json::array();
      for (const auto& l : t.notes) n.push_back(Json(l));
      o["notes"] = n;
    }
    if (!t.error.empty()) { o["error"] = t.error; }
    targets.push_back(o);
  }
  Json steps = Json::array();
  for (const auto& s : r.steps) {
    Json o = Json::object();
    o["key"] = s.key; o["pass"] = s.pass; o["model"] = s.model;
    Json ts = Json::array();
    for (const auto& t : s.targets) ts.push_back(Json(t));
    o["targets"] = ts; o["status"] = s.status; o["seconds"] = Json(std::stod(fmt_num(s.seconds, "%.3f")));
    steps.push_back(o);
  }
  j["targets"] = targets; j["steps"] = steps;
  Json sum = Json::object();
  sum["built"] = r.built; sum["cached"] = r.cached;
  sum["failed"] = r.failed;
  j["summary"] = sum;
  return j.dump(2) + "\n";
}

std::string report_table(const BuildResult& r, const std::string& base) {
  std::vector<std::vector<std::string>> rows = {
      {"target", "model", "profile", "format", "size", "bpw", "time", "status", "metrics"}};
  for (const auto& t : r.targets)
    rows.push_back({t.name, t.model, t.profile.empty() ? "-" : t.profile, t.format, human_bytes(t.bytes),
                    fmt_num(t.bits_per_weight, "%.2f"), fmt_num(t.seconds, "%.2fs"), t.status, metrics_text(t.metrics)});
  std::vector<size_t> w(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) w[c] = std::max(w[c], row[c].size());
  std::ostringstream os;
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    for (size_t c = 0; c < rows[ri].size(); ++c) {
      os << rows[ri][c];
      if (c + 1 < rows[ri].size()) os << std::string(w[c] - rows[ri][c].size() + 2, ' ');
    }
    os << "\n";
  }
  for (const auto& t : r.targets)
    if (!t.error.empty()) os << "error: target '" << t.name << "': " << t.error << "\n";
  size_t steps_built = 0;
  for (const auto& s : r.steps) steps_built += s.status == "built";
  os << r.targets.size() << " targets: " << r.built << " built, " << r.cached << " cached, " << r.failed
     << " failed; " << steps_built << " of " << r.steps.size() << " steps ran";
  if (r.built == 0 && r.failed == 0) os << " (nothing to do)";
  os << " in " << fmt_num(r.seconds, "%.2fs") << "\n";
  (void)base;
  return os.str();
}

std::string report_markdown(const BuildResult& r, const std::string& base) {
  std::ostringstream os;
  os << "# qforge build report\n\n";
  os << "| target | model | profile | format | artifact | size | bits/weight | time | status | metrics |\n";
  os << "|---|---|---|---|---|---:|---:|---:|---|---|\n";
  for (const auto& t : r.targets)
    os << "| " << t.name << " | " << t.model << " | " << (t.profile.empty() ? "-" : t.profile) << " | " << t.format
       << " | " << rel(t.artifact, base) << " | " << human_bytes(t.bytes) << " | " << fmt_num(t.bits_per_weight, "%.2f")
       << " | " << fmt_num(t.seconds, "%.2fs") << " | " << t.status << " | " << metrics_text(t.metrics) << " |\n";
  os << "\n## Steps\n\n| step | targets | status | time |\n|---|---|---|---:|\n";
  for (const auto& s : r.steps) {
    std::string ts;
    for (const auto& t : s.targets) ts += (ts.empty() ? "" : ", ") + t;
    os << "| " << s.label << " | " << ts << " | " << s.status << " | " << fmt_num(s.seconds, "%.2fs") << " |\n";
  }
  bool any_notes = false;
  for (const auto& t : r.targets) any_notes |= !t.notes.empty() || !t.error.empty();
  if (any_notes) {
    os << "\n## Notes\n\n";
    for (const auto& t : r.targets) {
      for (const auto& n : t.notes) os << "- " << t.name << ": " << n << "\n";
      if (!t.error.empty()) os << "- " << t.name << ": error: " << t.error << "\n";
    }
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
}

namespace {
struct NodeView {
  bool cached;
  std::string state;
};
std::vector<NodeView> view(const Plan& plan, const std::string& cache_dir, bool no_cache) {
  std::vector<NodeView> v(plan.nodes.size(), {false, ""});
  std::optional<Cache> cache;
  if (!no_cache) cache.emplace(cache_dir);
  std::vector<bool> needed(plan.nodes.size(), false);
  for (const auto& t : plan.targets) {
    bool hit = cache && cache->lookup(plan.nodes[t.emit].key).has_value();
    v[t.emit] = {hit, hit ? "cached" : "will run"};
    if (!hit)
      for (int n = plan.nodes[t.emit].parent; n >= 0; n = plan.nodes[n].parent) needed[n] = true;
  }
  for (size_t i = 0; i < plan.nodes.size(); ++i)
    if (plan.nodes[i].kind != PlanNode::Kind::Emit) v[i] = {!needed[i], needed[i] ? "will run" : "not needed (results cached)"};
  return v;
}
const char* kind_name(PlanNode::Kind k) {
  return k == PlanNode::Kind::Import ? "import" : k == PlanNode::Kind::Pass ? "pass" : "emit";
}
}  // namespace

std::string plan_text(const Plan& plan, const std::string& cache_dir, bool no_cache) {
  auto v = view(plan, cache_dir, no_cache);
  std::ostringstream os;
  size_t run = 0;
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const auto& n = plan.nodes[i];
    run += v[i].state == "will run";
    os << "[" << i << "] " << n.key.substr(0, 12) << "  " << n.label;
    if (n.parent >= 0) os << "  <- [" << n.parent << "]";
    std::string ts;
    for (const auto& t : n.targets) ts += (ts.empty() ? "" : ", ") + t;
    os << "\n      targets: " << ts << "\n      " << v[i].state << "\n";
  }
  os << plan.nodes.size() << " nodes, " << plan.targets.size() << " targets; " << run << " nodes will run\n";
  return os.str();
}

std::string plan_json(const Plan& plan, const std::string& cache_dir, bool no_cache) {
  auto v = view(plan, cache_dir, no_cache);
  Json nodes = Json::array();
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const auto& n = plan.nodes[i];
    Json o = Json::object();
    o["id"] = i; o["key"] = n.key; o["kind"] = kind_name(n.kind); o["label"] = n.label;
    o["model"] = n.model;
    o["parent"] = n.parent >= 0 ? Json(n.parent) : Json();
    if (n.pass) { o["pass"] = n.pass->name; }
    if (n.kind == PlanNode::Kind::Emit) { o["artifact"] = n.artifact; o["format"] = n.format->name(); }
    Json ts = Json::array();
    for (const auto& t : n.targets) ts.push_back(Json(t));
    o["targets"] = ts; o["cached"] = Json(v[i].cached); o["state"] = v[i].state;
    nodes.push_back(o);
  }
  Json targets = Json::array();
  for (const auto& t : plan.targets) {
    Json o = Json::object();
    o["name"] = t.decl.name; o["model"] = t.decl.model; o["artifact"] = t.artifact; o["format"] = t.format;
    o["profile"] = t.profile.empty() ? Json() : Json(t.profile); o["emit_node"] = t.emit;
    targets.push_back(o);
  }
  Json j = Json::object();
  j["nodes"] = nodes; j["targets"] = targets;
  return j.dump(2) + "\n";
}

}  // namespace qforge
