#include "range_table.h"

#include "qforge/status.h"

namespace qforge::quant {

Table RangeTable::to_table() const {
  Table t;
  t.schema = kRangesSchema;
  t.data.kind = Value::Kind::Table;
  t.data.table.emplace_back("method", Value::of_string(method));
  t.data.table.emplace_back("samples", Value::of_int(samples));
  t.data.table.emplace_back("symmetric", Value::of_bool(symmetric));
  Value vals;
  vals.kind = Value::Kind::Table;
  for (const auto& [name, r] : values) {
    Value e;
    e.kind = Value::Kind::Table;
    e.table.emplace_back("min", Value::of_float(r.min));
    e.table.emplace_back("max", Value::of_float(r.max));
    if (auto c = channels.find(name); c != channels.end()) {
      auto list = [](const std::vector<double>& v) {
        Value l;
        l.kind = Value::Kind::List;
        l.list.reserve(v.size());
        for (double x : v) l.list.push_back(Value::of_float(x));
        return l;
      };
      e.table.emplace_back("axis", Value::of_int(c->second.axis));
      e.table.emplace_back("channel_min", list(c->second.min));
      e.table.emplace_back("channel_max", list(c->second.max));
      e.table.emplace_back("channel_mean", list(c->second.mean));
    }
    vals.table.emplace_back(name, std::move(e));
  }
  t.data.table.emplace_back("values", std::move(vals));
  return t;
}

RangeTable RangeTable::from_table(const Table& t, const std::string& what) {
  if (t.schema != kRangesSchema)
    throw Error(what + ": expected a '" + std::string(kRangesSchema) + "' table, found '" + t.schema + "'");
  RangeTable r;
  auto bad = [&](const std::string& why) { return Error(what + ": malformed range table: " + why); };
  if (const Value* m = t.data.find("method"); m && m->kind == Value::Kind::String) r.method = m->s;
  if (const Value* s = t.data.find("samples"); s && s->kind == Value::Kind::Int) r.samples = s->i;
  if (const Value* s = t.data.find("symmetric"); s && s->kind == Value::Kind::Bool) r.symmetric = s->b;
  const Value* vals = t.data.find("values");
  if (!vals || vals->kind != Value::Kind::Table) throw bad("no 'values' table");
  for (const auto& [name, e] : vals->table) {
    const Value* lo = e.find("min");
    const Value* hi = e.find("max");
    auto num = [](const Value* v) {
      return v && (v->kind == Value::Kind::Float || v->kind == Value::Kind::Int);
    };
    if (!num(lo) || !num(hi)) throw bad("value '" + name + "' has no numeric min and max");
    r.values.emplace_back(name, Range{lo->as_number(), hi->as_number()});
    // Optional per-channel statistics: all three lists of one length, or none.
    const Value* axis = e.find("axis");
    if (!axis) continue;
    ChannelStats cs;
    if (axis->kind != Value::Kind::Int) throw bad("value '" + name + "' has a non-integer 'axis'");
    cs.axis = axis->i;
    auto list = [&](const char* key, std::vector<double>& out) {
      const Value* l = e.find(key);
      if (!l || l->kind != Value::Kind::List)
        throw bad("value '" + name + "' has an axis but no '" + key + "'");
      for (const Value& x : l->list) {
        if (!num(&x)) throw bad("value '" + name + "': '" + key + "' holds a non-number");
        out.push_back(x.as_number());
      }
    };
    list("channel_min", cs.min);
    list("channel_max", cs.max);
    list("channel_mean", cs.mean);
    if (cs.min.size() != cs.mean.size() || cs.max.size() != cs.mean.size())
      throw bad("value '" + name + "': channel_min, channel_max and channel_mean differ in length");
    r.channels.emplace(name, std::move(cs));
  }
  return r;
}

const Range* RangeTable::find(const std::string& value) const {
  for (const auto& [n, r] : values)
    if (n == value) return &r;
  return nullptr;
}

Range* RangeTable::find(const std::string& value) {
  for (auto& [n, r] : values)
    if (n == value) return &r;
  return nullptr;
}

const ChannelStats* RangeTable::channel_stats(const std::string& value) const {
  auto it = channels.find(value);
  return it == channels.end() ? nullptr : &it->second;
}

}  // namespace qforge::quant
