#include "precision_plan.h"

#include "qforge/status.h"

namespace qforge::gguf_quant {

namespace {
Value table_value() {
  Value v;
  v.kind = Value::Kind::Table;
  return v;
}
}  // namespace

std::map<std::string, int> PrecisionPlan::counts() const {
  std::map<std::string, int> c;
  for (const auto& t : tensors) ++c[t.type];
  return c;
}

const PlannedTensor* PrecisionPlan::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

Table PrecisionPlan::to_table() const {
  Table t;
  t.schema = kPrecisionSchema;
  t.data = table_value();
  auto& d = t.data.table;
  d.emplace_back("method", Value::of_string(method));
  d.emplace_back("budget", Value::of_string(budget));
  d.emplace_back("budget_bytes", Value::of_int(static_cast<int64_t>(budget_bytes)));
  d.emplace_back("file_bytes", Value::of_int(static_cast<int64_t>(file_bytes)));
  d.emplace_back("bits_per_weight", Value::of_float(bits_per_weight));
  d.emplace_back("error", Value::of_float(error));
  d.emplace_back("weighting", Value::of_string(weighting));
  Value ts = table_value();
  for (const auto& e : tensors) {
    Value v = table_value();
    v.table.emplace_back("type", Value::of_string(e.type));
    v.table.emplace_back("bytes", Value::of_int(static_cast<int64_t>(e.bytes)));
    v.table.emplace_back("error", Value::of_float(e.error));
    ts.table.emplace_back(e.name, std::move(v));
  }
  d.emplace_back("tensors", std::move(ts));
  Value cs = table_value();
  for (const auto& [type, n] : counts()) cs.table.emplace_back(type, Value::of_int(n));
  d.emplace_back("counts", std::move(cs));
  return t;
}

PrecisionPlan PrecisionPlan::from_table(const Table& t, const std::string& what) {
  if (t.schema != kPrecisionSchema)
    throw Error(what + ": expected a '" + std::string(kPrecisionSchema) + "' table, found '" + t.schema +
                "'");
  if (const Value* f = t.data.find("format"); f && f->kind == Value::Kind::String && f->s != "gguf")
    throw Error(
        what + ": a precision plan for an " + f->s +
        " model (per-node activation precision), not per-tensor GGUF types; quantize-static follows it");
  auto bad = [&](const std::string& why) { return Error(what + ": malformed precision plan: " + why); };
  auto num = [](const Value* v) {
    return v && (v->kind == Value::Kind::Float || v->kind == Value::Kind::Int);
  };
  PrecisionPlan p;
  if (const Value* v = t.data.find("method"); v && v->kind == Value::Kind::String) p.method = v->s;
  if (const Value* v = t.data.find("budget"); v && v->kind == Value::Kind::String) p.budget = v->s;
  if (const Value* v = t.data.find("weighting"); v && v->kind == Value::Kind::String) p.weighting = v->s;
  if (const Value* v = t.data.find("budget_bytes"); num(v))
    p.budget_bytes = static_cast<uint64_t>(v->as_number());
  if (const Value* v = t.data.find("file_bytes"); num(v))
    p.file_bytes = static_cast<uint64_t>(v->as_number());
  if (const Value* v = t.data.find("bits_per_weight"); num(v)) p.bits_per_weight = v->as_number();
  if (const Value* v = t.data.find("error"); num(v)) p.error = v->as_number();
  const Value* ts = t.data.find("tensors");
  if (!ts || ts->kind != Value::Kind::Table) throw bad("no 'tensors' table");
  for (const auto& [name, e] : ts->table) {
    const Value* type = e.find("type");
    if (!type || type->kind != Value::Kind::String) throw bad("tensor '" + name + "' has no type");
    PlannedTensor pt;
    pt.name = name;
    pt.type = type->s;
    if (const Value* b = e.find("bytes"); num(b)) pt.bytes = static_cast<uint64_t>(b->as_number());
    if (const Value* x = e.find("error"); num(x)) pt.error = x->as_number();
    p.tensors.push_back(std::move(pt));
  }
  return p;
}

}  // namespace qforge::gguf_quant
