#include "qforge/diag.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "qforge/status.h"

namespace qforge {

namespace {
bool same(const Diagnostic& d, Diagnostic::Level level, const SourceLoc& loc, const std::string& message) {
  return d.level == level && d.loc.file == loc.file && d.loc.line == loc.line && d.loc.column == loc.column &&
         d.message == message;
}
}  // namespace

void Diagnostics::error(const SourceLoc& loc, std::string message) {
  // The same mistake seen twice (e.g. once per matrix variant) is reported once.
  for (const auto& d : items_)
    if (same(d, Diagnostic::Level::Error, loc, message)) return;
  items_.push_back({Diagnostic::Level::Error, loc, std::move(message)});
  ++errors_;
}
void Diagnostics::warning(const SourceLoc& loc, std::string message) {
  for (const auto& d : items_)
    if (same(d, Diagnostic::Level::Warning, loc, message)) return;
  items_.push_back({Diagnostic::Level::Warning, loc, std::move(message)});
}
void Diagnostics::note(const SourceLoc& loc, std::string message) {
  // A note belongs to the diagnostic before it: repeat it only after a new one.
  if (!items_.empty() && same(items_.back(), Diagnostic::Level::Note, loc, message)) return;
  items_.push_back({Diagnostic::Level::Note, loc, std::move(message)});
}

namespace {
std::string source_line(std::map<std::string, std::vector<std::string>>& files,
                        const std::map<std::string, std::string>& sources, const std::string& file,
                        uint32_t line) {
  auto it = files.find(file);
  if (it == files.end()) {
    std::vector<std::string> lines;
    std::string l;
    auto src = sources.find(file);
    if (src != sources.end()) {
      std::istringstream in(src->second);
      while (std::getline(in, l)) lines.push_back(l);
    } else {
      std::ifstream in(file);
      while (std::getline(in, l)) lines.push_back(l);
    }
    it = files.emplace(file, std::move(lines)).first;
  }
  if (line == 0 || line > it->second.size()) return {};
  return it->second[line - 1];
}
}  // namespace

std::string Diagnostics::render(bool color) const {
  std::map<std::string, std::vector<std::string>> files;
  std::ostringstream os;
  const char* bold = color ? "\033[1m" : "";
  const char* reset = color ? "\033[0m" : "";
  for (const auto& d : items_) {
    const char* level = d.level == Diagnostic::Level::Error     ? "error"
                        : d.level == Diagnostic::Level::Warning ? "warning"
                                                                : "note";
    const char* lc = !color                                  ? ""
                     : d.level == Diagnostic::Level::Error   ? "\033[1;31m"
                     : d.level == Diagnostic::Level::Warning ? "\033[1;35m"
                                                             : "\033[1;36m";
    os << bold;
    if (!d.loc.file.empty()) {
      os << d.loc.file;
      if (d.loc.line) os << ":" << d.loc.line << ":" << d.loc.column;
      os << ": ";
    }
    os << reset << lc << level << ":" << reset << " " << d.message << "\n";
    if (!d.loc.file.empty() && d.loc.line) {
      std::string src = source_line(files, sources_, d.loc.file, d.loc.line);
      if (!src.empty()) {
        os << "  " << src << "\n  ";
        for (uint32_t c = 1; c < d.loc.column && c <= src.size(); ++c)
          os << (src[c - 1] == '\t' ? '\t' : ' ');
        os << "^\n";
      }
    }
  }
  if (errors_ > 1) os << errors_ << " errors\n";
  return os.str();
}

void Diagnostics::throw_if_errors() const {
  if (has_errors()) throw Error(render());
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

namespace {
// Distance of `word` to `candidate`, also counting a near-prefix as close
// ("quantise" is one edit from the start of "quantize-static").
size_t closeness(const std::string& word, const std::string& candidate) {
  size_t d = edit_distance(word, candidate);
  if (word.size() >= 4 && candidate.size() > word.size())
    d = std::min(d, edit_distance(word, candidate.substr(0, word.size())) + 1);
  return d;
}
std::vector<std::string> nearest(const std::string& word, const std::vector<std::string>& candidates) {
  size_t best = SIZE_MAX;
  std::vector<std::string> out;
  for (const auto& c : candidates) {
    size_t d = closeness(word, c);
    if (d < best) {
      best = d;
      out.clear();
    }
    if (d == best) out.push_back(c);
  }
  if (best > std::max<size_t>(2, word.size() / 3)) out.clear();
  if (out.size() > 4) out.clear();  // too many to be a hint
  return out;
}
}  // namespace

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  auto n = nearest(word, candidates);
  return n.empty() ? "" : n.front();
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  auto n = nearest(word, candidates);
  if (n.empty()) return "";
  std::string s = " (did you mean ";
  for (size_t i = 0; i < n.size(); ++i)
    s += (i == 0 ? "" : i + 1 == n.size() ? " or " : ", ") + ("'" + n[i] + "'");
  return s + "?)";
}

}  // namespace qforge
