// TOML++ nodes to qforge::Value, keeping positions and the written order of
// table keys (shared by the manifest and profile loaders).
#pragma once

#include <toml++/toml.h>
#include <algorithm>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "qforge/value.h"

namespace qforge {

inline SourceLoc loc_of(const toml::node& n, const std::string& file) {
  const auto& s = n.source();
  return {file, static_cast<uint32_t>(s.begin.line), static_cast<uint32_t>(s.begin.column)};
}

inline Value toml_to_value(const toml::node& n, const std::string& file) {
  Value v;
  v.loc = loc_of(n, file);
  if (auto* b = n.as_boolean()) {
    v.kind = Value::Kind::Bool;
    v.b = b->get();
  } else if (auto* i = n.as_integer()) {
    v.kind = Value::Kind::Int;
    v.i = i->get();
  } else if (auto* f = n.as_floating_point()) {
    v.kind = Value::Kind::Float;
    v.f = f->get();
  } else if (auto* s = n.as_string()) {
    v.kind = Value::Kind::String;
    v.s = s->get();
  } else if (auto* a = n.as_array()) {
    v.kind = Value::Kind::List;
    for (const auto& e : *a) v.list.push_back(toml_to_value(e, file));
  } else if (auto* t = n.as_table()) {
    v.kind = Value::Kind::Table;
    // TOML++ keeps keys sorted; restore the order they are written in.
    std::vector<std::tuple<SourceLoc, std::string, Value>> items;
    for (const auto& [k, e] : *t) {
      Value child = toml_to_value(e, file);
      const auto& ks = k.source();
      SourceLoc kl = ks.begin.line ? SourceLoc{file, static_cast<uint32_t>(ks.begin.line),
                                               static_cast<uint32_t>(ks.begin.column)}
                                   : child.loc;
      items.emplace_back(kl, std::string(k.str()), std::move(child));
    }
    std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
      const SourceLoc &x = std::get<0>(a), &y = std::get<0>(b);
      return x.line != y.line ? x.line < y.line : x.column < y.column;
    });
    for (auto& [kl, k, child] : items) {
      v.table.emplace_back(k, std::move(child));
      v.key_locs.push_back(kl);
    }
  } else {
    v.kind = Value::Kind::String;  // dates and times: kept as text
    std::ostringstream os;
    if (auto* d = n.as_date())
      os << d->get();
    else if (auto* t = n.as_time())
      os << t->get();
    else if (auto* dt = n.as_date_time())
      os << dt->get();
    v.s = os.str();
  }
  return v;
}

}  // namespace qforge
