// Helpers the reports share (report.cc: JSON, Markdown, terminal;
// report_html.cc: the HTML page).
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace qforge::report_detail {

// `path` relative to `base` when it lies under it, else as given.
inline std::string rel(const std::string& path, const std::string& base) {
  std::error_code ec;
  auto r = std::filesystem::relative(path, base, ec);
  if (ec || r.empty() || r.string().rfind("..", 0) == 0) return path;
  return r.string();
}

inline std::string human_bytes(uint64_t b) {
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

inline std::string fmt_num(double v, const char* f = "%.3g") {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// A metric named `name[output]` is `name` for one output of the model (the
// evaluate pass's breakdown); the others are the target's as a whole.
inline bool per_output(const std::string& key, std::string* name = nullptr, std::string* output = nullptr) {
  const size_t open = key.find('[');
  if (open == std::string::npos || open == 0 || key.size() < open + 2 || key.back() != ']') return false;
  if (name) *name = key.substr(0, open);
  if (output) *output = key.substr(open + 1, key.size() - open - 2);
  return true;
}

// Per-output metrics: the metric names (fidelity's first, in their usual
// order) and, per output in name order, each metric's value.
struct Breakdown {
  std::vector<std::string> columns;
  std::map<std::string, std::map<std::string, double>> rows;
};

inline Breakdown breakdown_of(const std::map<std::string, double>& m) {
  Breakdown b;
  std::set<std::string> names;
  for (const auto& [k, v] : m) {
    std::string name, output;
    if (!per_output(k, &name, &output)) continue;
    b.rows[output][name] = v;
    names.insert(name);
  }
  for (const char* known : {"cosine", "sqnr_db", "max_abs_err", "argmax_agreement"})
    if (names.erase(known)) b.columns.push_back(known);
  b.columns.insert(b.columns.end(), names.begin(), names.end());
  return b;
}

// One value of a breakdown as the reports show it.
inline std::string metric_cell(const std::string& name, double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (name == "cosine") return fmt_num(v, "%.6f");
  if (name == "sqnr_db") return fmt_num(v, "%.2f");
  if (name == "argmax_agreement") return fmt_num(100 * v, "%.2f%%");
  return fmt_num(v, "%.4g");
}

}  // namespace qforge::report_detail
