#include "onnx_precision_plan.h"

#include "qforge/status.h"

namespace qforge::passes {

namespace {
Value table_value() {
  Value v;
  v.kind = Value::Kind::Table;
  return v;
}
Value pair_value(const FidelityPair& f) {
  Value v = table_value();
  v.table.emplace_back("cosine", Value::of_float(f.cosine));
  v.table.emplace_back("sqnr_db", Value::of_float(f.sqnr_db));
  return v;
}
bool num(const Value* v) { return v && (v->kind == Value::Kind::Float || v->kind == Value::Kind::Int); }
FidelityPair pair_of(const Value* v) {
  FidelityPair f;
  if (!v) return f;
  if (const Value* c = v->find("cosine"); num(c)) f.cosine = c->as_number();
  if (const Value* s = v->find("sqnr_db"); num(s)) f.sqnr_db = s->as_number();
  return f;
}
}  // namespace

std::map<std::string, int> OnnxPrecisionPlan::counts() const {
  std::map<std::string, int> c{{"float", 0}, {"int16", 0}, {"int8", 0}};
  for (const auto& n : nodes) ++c[n.precision];
  return c;
}

Table OnnxPrecisionPlan::to_table() const {
  Table t;
  t.schema = "precision/1";
  t.data = table_value();
  auto& d = t.data.table;
  d.emplace_back("format", Value::of_string(kOnnxPrecisionFormat));
  d.emplace_back("method", Value::of_string(method));
  d.emplace_back("activation_type", Value::of_string(activation_type));
  d.emplace_back("weight_type", Value::of_string(weight_type));
  d.emplace_back("per_channel", Value::of_bool(per_channel));
  d.emplace_back("widen_to", Value::of_string(widen_to));
  Value lv;
  lv.kind = Value::Kind::List;
  for (const auto& l : levels.empty() ? std::vector<std::string>{widen_to} : levels)
    lv.list.push_back(Value::of_string(l));
  d.emplace_back("levels", std::move(lv));
  d.emplace_back("dataset", Value::of_string(dataset));
  d.emplace_back("samples", Value::of_int(samples));
  d.emplace_back("sensitivity_samples", Value::of_int(sensitivity_samples));
  if (min_cosine) d.emplace_back("min_cosine", Value::of_float(*min_cosine));
  if (min_sqnr_db) d.emplace_back("min_sqnr_db", Value::of_float(*min_sqnr_db));
  if (budget_bytes) d.emplace_back("budget_bytes", Value::of_int(static_cast<int64_t>(*budget_bytes)));
  d.emplace_back("baseline", pair_value(baseline));
  d.emplace_back("achieved", pair_value(achieved));
  d.emplace_back("float_bytes", Value::of_int(static_cast<int64_t>(float_bytes)));
  d.emplace_back("model_bytes", Value::of_int(static_cast<int64_t>(model_bytes)));
  Value ns = table_value();
  for (const auto& n : nodes) {
    Value v = table_value();
    v.table.emplace_back("op", Value::of_string(n.op));
    v.table.emplace_back("precision", Value::of_string(n.precision));
    v.table.emplace_back("sensitivity", Value::of_float(n.sensitivity));
    v.table.emplace_back("cost_bytes", Value::of_int(n.cost_bytes));
    ns.table.emplace_back(n.name, std::move(v));
  }
  d.emplace_back("nodes", std::move(ns));
  Value cs = table_value();
  for (const auto& [p, n] : counts()) cs.table.emplace_back(p, Value::of_int(n));
  d.emplace_back("counts", std::move(cs));
  return t;
}

OnnxPrecisionPlan OnnxPrecisionPlan::from_table(const Table& t, const std::string& what) {
  if (t.schema != "precision/1")
    throw Error(what + ": expected a 'precision/1' table, found '" + t.schema + "'");
  const Value* f = t.data.find("format");
  if (!f || f->kind != Value::Kind::String || f->s != kOnnxPrecisionFormat)
    throw Error(what +
                ": a GGUF precision plan (per-tensor GGUF types), not an ONNX one; quantize-gguf "
                "follows it");
  auto bad = [&](const std::string& why) { return Error(what + ": malformed ONNX precision plan: " + why); };
  auto str = [&](const char* k, std::string& out) {
    if (const Value* v = t.data.find(k); v && v->kind == Value::Kind::String) out = v->s;
  };
  OnnxPrecisionPlan p;
  str("method", p.method);
  str("activation_type", p.activation_type);
  str("weight_type", p.weight_type);
  str("widen_to", p.widen_to);
  str("dataset", p.dataset);
  if (const Value* v = t.data.find("per_channel"); v && v->kind == Value::Kind::Bool) p.per_channel = v->b;
  if (const Value* v = t.data.find("samples"); num(v)) p.samples = static_cast<int64_t>(v->as_number());
  if (const Value* v = t.data.find("sensitivity_samples"); num(v))
    p.sensitivity_samples = static_cast<int64_t>(v->as_number());
  if (const Value* v = t.data.find("min_cosine"); num(v)) p.min_cosine = v->as_number();
  if (const Value* v = t.data.find("min_sqnr_db"); num(v)) p.min_sqnr_db = v->as_number();
  if (const Value* v = t.data.find("budget_bytes"); num(v))
    p.budget_bytes = static_cast<uint64_t>(v->as_number());
  p.baseline = pair_of(t.data.find("baseline"));
  p.achieved = pair_of(t.data.find("achieved"));
  if (const Value* v = t.data.find("float_bytes"); num(v))
    p.float_bytes = static_cast<uint64_t>(v->as_number());
  if (const Value* v = t.data.find("model_bytes"); num(v))
    p.model_bytes = static_cast<uint64_t>(v->as_number());
  const Value* ns = t.data.find("nodes");
  if (!ns || ns->kind != Value::Kind::Table) throw bad("no 'nodes' table");
  for (const auto& [name, e] : ns->table) {
    PlannedNode n;
    n.name = name;
    const Value* pr = e.find("precision");
    if (!pr || pr->kind != Value::Kind::String || (pr->s != "int8" && pr->s != "int16" && pr->s != "float"))
      throw bad("node '" + name + "' has no precision \"int8\", \"int16\" or \"float\"");
    n.precision = pr->s;
    if (const Value* o = e.find("op"); o && o->kind == Value::Kind::String) n.op = o->s;
    if (const Value* s = e.find("sensitivity"); num(s)) n.sensitivity = s->as_number();
    if (const Value* c = e.find("cost_bytes"); num(c)) n.cost_bytes = static_cast<int64_t>(c->as_number());
    p.nodes.push_back(std::move(n));
  }
  if (p.widen_to != "uint16" && p.widen_to != "int16" && p.widen_to != "float")
    throw bad("widen_to is '" + p.widen_to + "'");
  if (const Value* v = t.data.find("levels"); v && v->kind == Value::Kind::List)
    for (const auto& l : v->list) {
      if (l.kind != Value::Kind::String || (l.s != "uint16" && l.s != "int16" && l.s != "float"))
        throw bad("levels has '" + l.display() + "'; a level is \"uint16\", \"int16\" or \"float\"");
      p.levels.push_back(l.s);
    }
  if (p.widen_to == "float")
    for (const auto& n : p.nodes)
      if (n.precision == "int16")
        throw bad("node '" + n.name + "' is \"int16\" but widen_to is \"float\" (no 16-bit type)");
  return p;
}

}  // namespace qforge::passes
