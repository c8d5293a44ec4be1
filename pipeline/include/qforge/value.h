// Typed option values as written in the manifest, with where they came from.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace qforge {

struct SourceLoc {
  std::string file;  // empty when the value did not come from a file
  uint32_t line = 0;
  uint32_t column = 0;
};

struct Value {
  enum class Kind { Null, Bool, Int, Float, String, List, Table };
  Kind kind = Kind::Null;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::string written;  // Path options: the path as the user wrote it (`s` is absolute)
  std::vector<Value> list;
  std::vector<std::pair<std::string, Value>> table;  // in source order
  std::vector<SourceLoc> key_locs;                   // where each table key is written
  SourceLoc loc;

  static Value of_bool(bool v);
  static Value of_int(int64_t v);
  static Value of_float(double v);
  static Value of_string(std::string v);

  bool is_null() const { return kind == Kind::Null; }
  double as_number() const { return kind == Kind::Int ? static_cast<double>(i) : f; }
  const Value* find(const std::string& key) const;  // Table lookup
  // A stable textual form (JSON-like, tables sorted by key): part of cache keys.
  std::string canonical() const;
  // What a user would write ("3", "\"entropy\"", "[\"a\", \"b\"]").
  std::string display() const;
  static const char* kind_name(Kind k);
};

// Options of a pass or an emit step: name -> value, sorted by name.
using Options = std::map<std::string, Value>;

std::string canonical(const Options& options);

}  // namespace qforge
