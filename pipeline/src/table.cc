// Table artifacts as bytes (see qforge/table.h).
#include "qforge/table.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "qforge/status.h"

namespace qforge {
namespace {

using Json = nlohmann::ordered_json;

Json to_json(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Null: return nullptr;
    case Value::Kind::Bool: return v.b;
    case Value::Kind::Int: return v.i;
    case Value::Kind::Float:
      if (std::isnan(v.f)) return Json{{"$float", "nan"}};
      if (std::isinf(v.f)) return Json{{"$float", v.f > 0 ? "inf" : "-inf"}};
      return v.f;
    case Value::Kind::String: return v.s;
    case Value::Kind::List: {
      Json a = Json::array();
      for (const auto& e : v.list) a.push_back(to_json(e));
      return a;
    }
    case Value::Kind::Table: {
      Json o = Json::object();
      for (const auto& [k, e] : v.table) o[k] = to_json(e);
      return o;
    }
  }
  return nullptr;
}

Value from_json(const Json& j) {
  Value v;
  if (j.is_null()) return v;
  if (j.is_boolean()) return Value::of_bool(j.get<bool>());
  if (j.is_number_integer()) return Value::of_int(j.get<int64_t>());
  if (j.is_number_unsigned()) return Value::of_int(static_cast<int64_t>(j.get<uint64_t>()));
  if (j.is_number_float()) return Value::of_float(j.get<double>());
  if (j.is_string()) return Value::of_string(j.get<std::string>());
  if (j.is_array()) {
    v.kind = Value::Kind::List;
    for (const auto& e : j) v.list.push_back(from_json(e));
    return v;
  }
  if (j.size() == 1 && j.contains("$float") && j["$float"].is_string()) {
    const std::string s = j["$float"].get<std::string>();
    if (s == "nan") return Value::of_float(std::nan(""));
    if (s == "inf") return Value::of_float(HUGE_VAL);
    if (s == "-inf") return Value::of_float(-HUGE_VAL);
  }
  v.kind = Value::Kind::Table;
  for (auto it = j.begin(); it != j.end(); ++it) v.table.emplace_back(it.key(), from_json(it.value()));
  return v;
}

}  // namespace

std::string Table::to_bytes() const {
  Json j = Json::object();
  j["schema"] = schema;
  j["data"] = to_json(data);
  return j.dump(1) + "\n";
}

Table Table::from_bytes(const std::string& bytes, const std::string& what) {
  Json j;
  try {
    j = Json::parse(bytes);
  } catch (const Json::parse_error& e) {
    throw Error(what + ": byte " + std::to_string(e.byte) + ": not a qforge table (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("schema") || !j["schema"].is_string() || !j.contains("data"))
    throw Error(what + ": not a qforge table (expected an object with 'schema' and 'data')");
  Table t;
  t.schema = j["schema"].get<std::string>();
  t.data = from_json(j["data"]);
  return t;
}

}  // namespace qforge
