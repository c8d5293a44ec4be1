// Diagnostics like a compiler's: file:line:col: error: message, the source
// line and a caret. All are collected, then reported together.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "qforge/value.h"

namespace qforge {

struct Diagnostic {
  enum class Level { Error, Warning, Note };
  Level level = Level::Error;
  SourceLoc loc;
  std::string message;
};

class Diagnostics {
 public:
  void error(const SourceLoc& loc, std::string message);
  void warning(const SourceLoc& loc, std::string message);
  void note(const SourceLoc& loc, std::string message);
  // Source text for `file` (else render() reads the file from disk).
  void set_source(const std::string& file, const std::string& text) { sources_[file] = text; }
  bool has_errors() const { return errors_ > 0; }
  size_t error_count() const { return errors_; }
  const std::vector<Diagnostic>& all() const { return items_; }
  // Renders every diagnostic with its source line and caret (source text is
  // read from the named files).
  std::string render(bool color = false) const;
  // Throws qforge::Error with the rendered text when there are errors.
  void throw_if_errors() const;

 private:
  std::vector<Diagnostic> items_;
  std::map<std::string, std::string> sources_;
  size_t errors_ = 0;
};

// Levenshtein distance and the closest candidate within a sensible distance
// ("" when nothing is close): powers "did you mean".
size_t edit_distance(const std::string& a, const std::string& b);
std::string closest(const std::string& word, const std::vector<std::string>& candidates);
// " (did you mean 'x'?)" or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace qforge
