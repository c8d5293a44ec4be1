#include "quant_options.h"

#include <exception>
#include <string>
#include <utility>

#include "qforge/status.h"

namespace qforge::quant {

// ---------------------------------------------------------------- options

static std::string where_of(const Value& v) {
  if (v.loc.file.empty()) return "";
  return v.loc.file + ":" + std::to_string(v.loc.line) + ":" + std::to_string(v.loc.column) + ": ";
}

std::string opt_where(const Options& o, const std::string& name) {
  auto it = o.find(name);
  return it == o.end() ? std::string() : where_of(it->second);
}

namespace {

// The option's value, or nullptr when it is absent or null.
const Value* opt_value(const Options& o, const std::string& name) {
  auto it = o.find(name);
  return it == o.end() || it->second.is_null() ? nullptr : &it->second;
}

// The option's value when it is present, checked to be of `kind`.
const Value* opt_of_kind(const Options& o, const std::string& pass, const std::string& name, Value::Kind kind,
                         const char* expected) {
  const Value* v = opt_value(o, name);
  if (v && v->kind != kind)
    throw Error(where_of(*v) + "option '" + name + "' of pass '" + pass + "' must be " + expected +
                ", found " + v->display());
  return v;
}

}  // namespace

bool opt_has(const Options& o, const std::string& name) { return opt_value(o, name) != nullptr; }

bool opt_bool(const Options& o, const std::string& pass, const std::string& name, bool dflt) {
  const Value* v = opt_of_kind(o, pass, name, Value::Kind::Bool, "true or false");
  return v ? v->b : dflt;
}

int64_t opt_int(const Options& o, const std::string& pass, const std::string& name, int64_t dflt) {
  const Value* v = opt_of_kind(o, pass, name, Value::Kind::Int, "an integer");
  return v ? v->i : dflt;
}

std::string opt_string(const Options& o, const std::string& pass, const std::string& name,
                       const std::string& dflt) {
  const Value* v = opt_of_kind(o, pass, name, Value::Kind::String, "a string");
  return v ? v->s : dflt;
}

std::vector<std::string> opt_list(const Options& o, const std::string& pass, const std::string& name,
                                  std::vector<std::string> dflt) {
  const Value* pv = opt_value(o, name);
  if (!pv) return dflt;
  const Value& v = *pv;
  if (v.kind == Value::Kind::String) return {v.s};
  if (v.kind != Value::Kind::List)
    throw Error(where_of(v) + "option '" + name + "' of pass '" + pass +
                "' must be a list of strings, found " + v.display());
  std::vector<std::string> out;
  for (const Value& e : v.list) {
    if (e.kind != Value::Kind::String)
      throw Error(where_of(e) + "items of option '" + name + "' of pass '" + pass +
                  "' must be strings, found " + e.display());
    out.push_back(e.s);
  }
  return out;
}

OptionSpec option_spec(std::string name, OptType type, std::string help, Value dflt,
                       std::vector<std::string> choices) {
  OptionSpec s;
  s.name = std::move(name);
  s.type = type;
  s.help = std::move(help);
  s.default_value = std::move(dflt);
  s.choices = std::move(choices);
  return s;
}

Value string_list(const std::vector<std::string>& items) {
  Value v;
  v.kind = Value::Kind::List;
  for (const std::string& s : items) v.list.push_back(Value::of_string(s));
  return v;
}

OptionSpec int_choices(OptionSpec s, std::vector<int64_t> choices) {
  s.int_choices = std::move(choices);
  return s;
}

OptionSpec at_least(OptionSpec s, double min) {
  s.has_min = true;
  s.min = min;
  return s;
}

OptionSpec in_range(OptionSpec s, double min, double max) {
  s.has_min = s.has_max = true;
  s.min = min;
  s.max = max;
  return s;
}

std::function<std::vector<OptionProblem>(const Options&)> validate_hook(
    std::function<std::vector<OptionProblem>(const Options&)> check) {
  return [check = std::move(check)](const Options& o) -> std::vector<OptionProblem> {
    try {
      return check(o);
    } catch (const std::exception& e) {
      return {OptionProblem{"", e.what()}};
    } catch (...) {
      return {OptionProblem{"", "unknown error while checking the options"}};
    }
  };
}

void throw_first_problem(const Options& o, const std::vector<OptionProblem>& problems) {
  if (problems.empty()) return;
  const OptionProblem& p = problems.front();
  throw Error((p.option.empty() ? std::string() : opt_where(o, p.option)) + p.message);
}

}  // namespace qforge::quant
