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
  }
  return r;
}

const Range* RangeTable::find(const std::string& value) const {
  for (const auto& [n, r] : values)
    if (n == value) return &r;
  return nullptr;
}

}  // namespace qforge::quant
