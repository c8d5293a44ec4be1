#include "qforge/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace qforge {

Value Value::of_bool(bool v) {
  Value x;
  x.kind = Kind::Bool;
  x.b = v;
  return x;
}
Value Value::of_int(int64_t v) {
  Value x;
  x.kind = Kind::Int;
  x.i = v;
  return x;
}
Value Value::of_float(double v) {
  Value x;
  x.kind = Kind::Float;
  x.f = v;
  return x;
}
Value Value::of_string(std::string v) {
  Value x;
  x.kind = Kind::String;
  x.s = std::move(v);
  return x;
}

const Value* Value::find(const std::string& key) const {
  for (const auto& kv : table)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const char* Value::kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "nothing";
    case Kind::Bool: return "a boolean";
    case Kind::Int: return "an integer";
    case Kind::Float: return "a number";
    case Kind::String: return "a string";
    case Kind::List: return "an array";
    case Kind::Table: return "a table";
  }
  return "?";
}

namespace {
std::string quote(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (c == '\n')
      o += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else
      o += c;
  }
  return o + "\"";
}

std::string number(double f) {
  if (std::isfinite(f) && f == std::floor(f) && std::fabs(f) < 1e15) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", f);
    return b;
  }
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", f);
  return b;
}
}  // namespace

std::string Value::canonical() const {
  switch (kind) {
    case Kind::Null: return "null";
    case Kind::Bool: return b ? "true" : "false";
    case Kind::Int: return std::to_string(i);
    case Kind::Float: return number(f);
    case Kind::String: return quote(s);
    case Kind::List: {
      std::string o = "[";
      for (size_t k = 0; k < list.size(); ++k) o += (k ? "," : "") + list[k].canonical();
      return o + "]";
    }
    case Kind::Table: {
      std::vector<const std::pair<std::string, Value>*> kv;
      for (const auto& p : table) kv.push_back(&p);
      std::sort(kv.begin(), kv.end(), [](auto* a, auto* b) { return a->first < b->first; });
      std::string o = "{";
      for (size_t k = 0; k < kv.size(); ++k)
        o += (k ? "," : "") + quote(kv[k]->first) + ":" + kv[k]->second.canonical();
      return o + "}";
    }
  }
  return "";
}

std::string Value::display() const {
  if (kind == Kind::Table) {
    std::string o = "{ ";
    for (size_t k = 0; k < table.size(); ++k)
      o += (k ? ", " : "") + table[k].first + " = " + table[k].second.display();
    return o + " }";
  }
  if (kind == Kind::List) {
    std::string o = "[";
    for (size_t k = 0; k < list.size(); ++k) o += (k ? ", " : "") + list[k].display();
    return o + "]";
  }
  if (kind == Kind::Float) {
    char b[40];
    std::snprintf(b, sizeof b, "%g", f);
    return b;
  }
  return canonical();
}

std::string canonical(const Options& options) {
  std::string o = "{";
  bool first = true;
  for (const auto& kv : options) {  // std::map: sorted
    o += (first ? "" : ",") + quote(kv.first) + ":" + kv.second.canonical();
    first = false;
  }
  return o + "}";
}

}  // namespace qforge
