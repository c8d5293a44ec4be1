// Planning: manifest + registry + profiles -> a graph of keyed nodes, each
// consuming artifacts and producing one (docs/architecture.md, "The build graph").
//
// Stages: option checking (schemas, constraints, profiles, validate hooks),
// profile validation against the registry, then per target: import, steps
// (connecting each Table input to the step that makes it), emit; last the
// consumers of every node, the targets each serves and the cache policy.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "qforge/build.h"
#include "qforge/dataset.h"
#include "qforge/status.h"

namespace fs = std::filesystem;

namespace qforge {

const char* name_of(OptType t) {
  switch (t) {
    case OptType::Bool: return "a boolean (true or false)";
    case OptType::Int: return "an integer";
    case OptType::Float: return "a number";
    case OptType::String: return "a string";
    case OptType::Enum: return "one of the listed strings";
    case OptType::List: return "an array of strings";
    case OptType::Table: return "a table of strings ({ key = \"value\" })";
    case OptType::Path: return "a file path (a string)";
    case OptType::Dataset: return "the name of a [datasets.*] entry";
    case OptType::Size: return "a size such as \"3.5GiB\" or \"4.5bpw\"";
  }
  return "?";
}

const char* name_of(ArtifactKind k) {
  switch (k) {
    case ArtifactKind::Model: return "model";
    case ArtifactKind::Table: return "table";
    case ArtifactKind::File: return "file";
  }
  return "?";
}

bool parse_size(const std::string& text, SizeValue& out) {
  static const std::regex re(R"(^\s*([0-9]+(\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|bpw)?\s*$)");
  std::smatch mt;
  if (!std::regex_match(text, mt, re)) return false;
  const double v = std::strtod(mt[1].str().c_str(), nullptr);
  const std::string unit = mt[3].str();
  if (unit == "bpw") {
    if (v <= 0 || v > 64) return false;
    out = {SizeValue::Unit::BitsPerWeight, v};
    return true;
  }
  double mult = 1;
  if (unit == "KB")
    mult = 1e3;
  else if (unit == "MB")
    mult = 1e6;
  else if (unit == "GB")
    mult = 1e9;
  else if (unit == "TB")
    mult = 1e12;
  else if (unit == "KiB")
    mult = 1024.0;
  else if (unit == "MiB")
    mult = 1024.0 * 1024;
  else if (unit == "GiB")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "TiB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  if (unit.empty() && mt[2].matched) return false;  // fractional bytes
  const double bytes = std::floor(v * mult);
  if (bytes < 1 || bytes > 9.0e18) return false;
  out = {SizeValue::Unit::Bytes, bytes};
  return true;
}

namespace {

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  out = v;
  return true;
}

bool parse_float(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (*end || !std::isfinite(v)) return false;
  out = v;
  return true;
}

std::string list_choices(const std::vector<std::string>& c) {
  std::string s;
  for (size_t i = 0; i < c.size(); ++i) s += (i ? ", " : "") + ("'" + c[i] + "'");
  return s;
}

std::string list_ints(const std::vector<int64_t>& c) {
  std::string s;
  for (size_t i = 0; i < c.size(); ++i) s += (i ? ", " : "") + std::to_string(c[i]);
  return s;
}

std::string fmt_bound(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

std::string range_text(const OptionSpec& spec) {
  if (spec.has_min && spec.has_max) return "between " + fmt_bound(spec.min) + " and " + fmt_bound(spec.max);
  if (spec.has_min) return "at least " + fmt_bound(spec.min);
  return "at most " + fmt_bound(spec.max);
}

// The list form of ordered rules written as a table, to show in the error.
std::string as_rule_list(const Value& table) {
  std::string o = "[";
  for (size_t k = 0; k < table.table.size() && k < 4; ++k) {
    const Value& v = table.table[k].second;
    o += (k ? ", " : "") + std::string("\"") + table.table[k].first + "=" +
         (v.kind == Value::Kind::String ? v.s : v.display()) + "\"";
  }
  if (table.table.size() > 4) o += ", ...";
  return o + "]";
}

std::string short_options(const Options& o) {
  std::string s;
  for (const auto& [k, v] : o) {
    if (!s.empty()) s += " ";
    std::string d = v.kind == Value::Kind::String ? v.s : v.display();
    if (v.kind == Value::Kind::String && d.size() > 40) d = "…" + d.substr(d.size() - 30);
    s += k + "=" + d;
  }
  return s;
}

const OptionSpec* find_spec(const PassInfo& info, const std::string& name) {
  for (const auto& s : info.options)
    if (s.name == name) return &s;
  return nullptr;
}

std::vector<std::string> option_names(const PassInfo& info) {
  std::vector<std::string> names;
  for (const auto& o : info.options) names.push_back(o.name);
  return names;
}

bool allowed_by(const Value& allowed, const Value& val) {
  // A list value (op_types) is allowed when each of its items is.
  if (val.kind == Value::Kind::List && !allowed.list.empty() &&
      allowed.list.front().kind != Value::Kind::List) {
    for (const auto& e : val.list)
      if (!allowed_by(allowed, e)) return false;
    return true;
  }
  for (const auto& a : allowed.list) {
    if (a.canonical() == val.canonical()) return true;
    if (a.kind == Value::Kind::String && val.kind == Value::Kind::String && a.s == val.s) return true;
    if ((a.kind == Value::Kind::Int || a.kind == Value::Kind::Float) &&
        (val.kind == Value::Kind::Int || val.kind == Value::Kind::Float) && a.as_number() == val.as_number())
      return true;
  }
  return false;
}

// Runs a pass's validate hook (plugins must not throw; a throw is reported, not propagated).
std::vector<OptionProblem> run_validate(const PassInfo& info, const Options& opts) {
  if (!info.validate) return {};
  try {
    return info.validate(opts);
  } catch (const std::exception& e) {
    return {{"", std::string("its validate hook failed: ") + e.what()}};
  } catch (...) {
    return {{"", "its validate hook failed"}};
  }
}

}  // namespace

bool check_option_value(const OptionSpec& spec, Value& v, const std::string& pass,
                        const std::string& base_dir, const std::map<std::string, DatasetDecl>* datasets,
                        Diagnostics& diags) {
  const std::string what = "option '" + spec.name + "' of pass '" + pass + "'";
  auto bad = [&](const std::string& extra = "") {
    diags.error(v.loc, what + " must be " + name_of(spec.type) + ", found " + Value::kind_name(v.kind) + " " +
                           v.display() + extra);
    return false;
  };
  auto check_pattern = [&](const Value& e) {
    if (spec.pattern.empty()) return true;
    if (std::regex_match(e.s, std::regex(spec.pattern))) return true;
    diags.error(e.loc, what + ": '" + e.s + "' is not of the form " +
                           (spec.pattern_help.empty() ? spec.pattern : spec.pattern_help));
    return false;
  };
  switch (spec.type) {
    case OptType::Bool:
      if (v.kind == Value::Kind::String && (v.s == "true" || v.s == "false")) {
        bool b = v.s == "true";
        v.kind = Value::Kind::Bool;
        v.b = b;
      }
      return v.kind == Value::Kind::Bool || bad();
    case OptType::Int: {
      int64_t i;
      if (v.kind == Value::Kind::String && parse_int(v.s, i)) {
        v.kind = Value::Kind::Int;
        v.i = i;
      }
      if (v.kind != Value::Kind::Int) return bad();
      if (!spec.int_choices.empty() &&
          std::find(spec.int_choices.begin(), spec.int_choices.end(), v.i) == spec.int_choices.end()) {
        diags.error(v.loc, what + " cannot be " + std::to_string(v.i) + "; choose one of " +
                               list_ints(spec.int_choices));
        return false;
      }
      if ((spec.has_min && static_cast<double>(v.i) < spec.min) ||
          (spec.has_max && static_cast<double>(v.i) > spec.max)) {
        diags.error(v.loc, what + " must be " + range_text(spec) + ", found " + std::to_string(v.i));
        return false;
      }
      return true;
    }
    case OptType::Float: {
      double f;
      if (v.kind == Value::Kind::Int) {
        v.kind = Value::Kind::Float;
        v.f = static_cast<double>(v.i);
      } else if (v.kind == Value::Kind::String && parse_float(v.s, f)) {
        v.kind = Value::Kind::Float;
        v.f = f;
      }
      if (v.kind != Value::Kind::Float) return bad();
      if (!std::isfinite(v.f) || (spec.has_min && v.f < spec.min) || (spec.has_max && v.f > spec.max)) {
        diags.error(v.loc, what + " must be " + (spec.has_min || spec.has_max ? range_text(spec) : "finite") +
                               ", found " + v.display());
        return false;
      }
      return true;
    }
    case OptType::String:
      if (v.kind != Value::Kind::String) return bad();
      return check_pattern(v);
    case OptType::Enum:
      if (v.kind != Value::Kind::String) return bad(" (choose " + list_choices(spec.choices) + ")");
      if (std::find(spec.choices.begin(), spec.choices.end(), v.s) == spec.choices.end()) {
        diags.error(v.loc, what + " cannot be '" + v.s + "'" + did_you_mean(v.s, spec.choices) + "; choose " +
                               list_choices(spec.choices));
        return false;
      }
      return true;
    case OptType::List:
      if (v.kind == Value::Kind::Table) {
        // A TOML table has no order: ordered rules cannot be one.
        diags.error(v.loc,
                    what +
                        " is a list whose order matters (the first matching rule wins), and a TOML table has "
                        "no order; write it as a list: " +
                        spec.name + " = " + as_rule_list(v));
        return false;
      }
      if (v.kind == Value::Kind::String) {  // a single value is a list of one
        Value one = v;
        v.kind = Value::Kind::List;
        v.list = {one};
      }
      if (v.kind != Value::Kind::List) return bad();
      for (const auto& e : v.list) {
        if (e.kind != Value::Kind::String) {
          diags.error(e.loc, "items of " + what + " must be strings, found " + Value::kind_name(e.kind) +
                                 " " + e.display());
          return false;
        }
        if (!spec.choices.empty() &&
            std::find(spec.choices.begin(), spec.choices.end(), e.s) == spec.choices.end()) {
          diags.error(e.loc, what + " cannot contain '" + e.s + "'" + did_you_mean(e.s, spec.choices) +
                                 "; choose from " + list_choices(spec.choices));
          return false;
        }
        if (!check_pattern(e)) return false;
      }
      return true;
    case OptType::Table:
      if (v.kind != Value::Kind::Table) return bad();
      for (const auto& kv : v.table)
        if (kv.second.kind != Value::Kind::String) {
          diags.error(kv.second.loc,
                      "values of " + what + " must be strings, found " + Value::kind_name(kv.second.kind));
          return false;
        }
      return true;
    case OptType::Path: {
      if (v.kind != Value::Kind::String) return bad();
      fs::path p(v.s);
      if (p.is_relative()) p = fs::path(base_dir) / p;
      std::string abs = p.lexically_normal().string();
      std::error_code ec;
      if (!fs::is_regular_file(abs, ec)) {
        diags.error(v.loc, what + ": file '" + v.s + "' does not exist (looked for " + abs + ")");
        return false;
      }
      v.written = v.s;
      v.s = abs;
      return true;
    }
    case OptType::Dataset: {
      if (v.kind != Value::Kind::String) return bad();
      if (!datasets) return true;  // checked where a manifest is at hand
      if (!datasets->count(v.s)) {
        std::vector<std::string> names;
        for (const auto& kv : *datasets) names.push_back(kv.first);
        diags.error(v.loc, "unknown dataset '" + v.s + "'" + did_you_mean(v.s, names) +
                               (names.empty() ? " (declare it under [datasets." + v.s + "])" : ""));
        return false;
      }
      return true;
    }
    case OptType::Size: {
      SizeValue sv;
      if (v.kind == Value::Kind::Int && v.i > 0) return true;  // bytes
      if (v.kind != Value::Kind::String || !parse_size(v.s, sv)) return bad();
      return true;
    }
  }
  return true;
}

Options resolve_options(const PassInfo& info, const StepDecl& step, const Profile* profile, const Manifest& m,
                        Diagnostics& diags) {
  Options out;
  const std::vector<std::string> names = option_names(info);
  std::set<std::string> bad;  // reported: don't also report as missing, don't fill a default
  // Explicit options: schema, constraints, then the profile's allowed values.
  for (const auto& [k, v] : step.options) {
    const OptionSpec* spec = find_spec(info, k);
    if (!spec) {
      auto kl = step.option_locs.find(k);
      diags.error(kl != step.option_locs.end() ? kl->second : v.loc,
                  "pass '" + info.name + "' has no option '" + k + "'" + did_you_mean(k, names) +
                      (names.empty() ? " (it takes no options)" : ""));
      continue;
    }
    Value val = v;
    if (!check_option_value(*spec, val, info.name, m.dir, &m.datasets, diags)) {
      bad.insert(k);
      continue;
    }
    if (profile)
      if (const Value* allowed = profile->allowed_values(info.name, k);
          allowed && !allowed_by(*allowed, val)) {
        diags.error(v.loc, "option " + k + " = " + val.display() + " of pass '" + info.name +
                               "' is forbidden by profile '" + profile->name + "', which allows " +
                               allowed->display());
        diags.note(allowed->loc, "profile '" + profile->name + "' restricts '" + k + "' here");
        bad.insert(k);
        continue;
      }
    out[k] = val;
  }
  // Profile defaults (validated when the profile was loaded), then schema defaults.
  if (profile)
    if (auto it = profile->defaults.find(info.name); it != profile->defaults.end())
      for (const auto& [k, v] : it->second) {
        const OptionSpec* spec = find_spec(info, k);
        if (out.count(k) || bad.count(k) || !spec) continue;
        Value val = v;
        Diagnostics scratch;  // reported by validate_profiles
        if (check_option_value(*spec, val, info.name, m.dir, &m.datasets, scratch)) out[k] = val;
      }
  for (const auto& spec : info.options) {
    if (out.count(spec.name) || bad.count(spec.name)) continue;
    if (!spec.default_value.is_null()) {
      out[spec.name] = spec.default_value;
      // A default the profile's device constraints exclude: the first value
      // they allow, or for a list the items they allow (docs/manifest.md).
      if (profile && profile->derived.count({info.name, spec.name}))
        if (const Value* allowed = profile->allowed_values(info.name, spec.name);
            allowed && !allowed_by(*allowed, spec.default_value)) {
          Value& v = out[spec.name];
          if (v.kind == Value::Kind::List) {
            Value kept = v;
            kept.list.clear();
            for (const auto& e : v.list)
              if (allowed_by(*allowed, e)) kept.list.push_back(e);
            v = kept;
          } else if (!allowed->list.empty()) {
            v = allowed->list.front();
          } else {
            diags.error(step.loc, "pass '" + info.name + "' cannot run with profile '" + profile->name +
                                      "': it allows no value of option '" + spec.name + "'");
            diags.note(allowed->loc, "profile '" + profile->name + "' restricts '" + spec.name + "' here");
          }
        }
    } else if (spec.required)
      diags.error(step.loc, "pass '" + info.name + "' needs option '" + spec.name + "' (" + spec.help + ")");
  }
  // Values the profile allows only together (an activation type with the weight types it pairs with).
  if (profile && bad.empty())
    if (auto it = profile->combinations.find(info.name); it != profile->combinations.end())
      for (const Combinations& c : it->second) {
        std::vector<std::string> tuple;
        std::string shown;
        for (const auto& o : c.options) {
          auto v = out.find(o);
          tuple.push_back(v == out.end()
                              ? ""
                              : (v->second.kind == Value::Kind::String ? v->second.s : v->second.display()));
          shown +=
              (shown.empty() ? "" : ", ") + o + " = " + (v == out.end() ? "(unset)" : v->second.display());
        }
        if (std::find(c.tuples.begin(), c.tuples.end(), tuple) != c.tuples.end()) continue;
        std::string allowed;
        for (const auto& t : c.tuples) {
          std::string one;
          for (const auto& x : t) one += (one.empty() ? "" : ":") + x;
          allowed += (allowed.empty() ? "" : ", ") + one;
        }
        SourceLoc loc = step.loc;
        for (const auto& o : c.options)
          if (auto kl = step.option_locs.find(o); kl != step.option_locs.end()) loc = kl->second;
        diags.error(loc, "pass '" + info.name + "': " + shown + " is not a combination profile '" +
                             profile->name + "' allows (" + allowed + ")");
        diags.note(c.loc, "profile '" + profile->name + "' lists the combinations here");
        bad.insert(c.options.front());
      }
  // Combinations: the pass's own checks, located at the option they name.
  if (bad.empty())
    for (const auto& p : run_validate(info, out)) {
      SourceLoc loc = step.loc;
      if (auto kl = step.option_locs.find(p.option); kl != step.option_locs.end())
        loc = kl->second;
      else if (auto ov = out.find(p.option); ov != out.end() && !ov->second.loc.file.empty())
        loc = ov->second.loc;
      diags.error(loc, "pass '" + info.name + "'" + (p.option.empty() ? "" : ", option '" + p.option + "'") +
                           ": " + p.message);
    }
  return out;
}

void validate_profiles(const ProfileSet& profiles, const Registry& reg, Diagnostics& diags) {
  std::vector<std::string> pass_names;
  for (const auto* p : reg.passes()) pass_names.push_back(p->name);
  for (const Profile* pr : profiles.all()) {
    const std::string who = "profile '" + pr->name + "'";
    std::set<std::string> passes;
    for (const auto& kv : pr->defaults) passes.insert(kv.first);
    for (const auto& kv : pr->allowed) passes.insert(kv.first);
    for (const auto& pass : passes) {
      const PassInfo* info = reg.pass(pass);
      const SourceLoc ploc = pr->pass_locs.count(pass) ? pr->pass_locs.at(pass) : pr->loc;
      if (!info) {
        if (std::find(pr->optional_passes.begin(), pr->optional_passes.end(), pass) !=
            pr->optional_passes.end())
          continue;
        // Entries the profile derives from its [gguf]/[memory] data, not written for this pass.
        bool derived_only = true;
        if (auto it = pr->defaults.find(pass); it != pr->defaults.end())
          for (const auto& kv : it->second) derived_only &= pr->derived.count({pass, kv.first}) > 0;
        if (auto it = pr->allowed.find(pass); it != pr->allowed.end())
          for (const auto& kv : it->second) derived_only &= pr->derived.count({pass, kv.first}) > 0;
        if (derived_only) continue;
        diags.error(ploc, who + " configures pass '" + pass + "', which is not registered" +
                              did_you_mean(pass, pass_names) +
                              "; if a plugin provides it, list it in optional_passes = [\"" + pass + "\"]");
        continue;
      }
      const std::vector<std::string> names = option_names(*info);
      auto unknown = [&](const std::string& opt, const Value& v) {
        diags.error(v.loc, who + " sets option '" + opt + "' that pass '" + pass + "' does not have" +
                               did_you_mean(opt, names));
      };
      std::map<std::string, Value> allowed;
      if (auto it = pr->allowed.find(pass); it != pr->allowed.end())
        for (const auto& [opt, list] : it->second) {
          const OptionSpec* spec = find_spec(*info, opt);
          if (!spec) {
            unknown(opt, list);
            continue;
          }
          bool ok = true;
          Value checked = list;
          for (auto& e : checked.list)
            ok &=
                check_option_value(*spec, e, pass, fs::path(pr->path).parent_path().string(), nullptr, diags);
          if (ok) allowed[opt] = checked;
        }
      if (auto it = pr->defaults.find(pass); it != pr->defaults.end())
        for (const auto& [opt, v] : it->second) {
          const OptionSpec* spec = find_spec(*info, opt);
          if (!spec) {
            unknown(opt, v);
            continue;
          }
          Value val = v;
          if (!check_option_value(*spec, val, pass, fs::path(pr->path).parent_path().string(), nullptr,
                                  diags))
            continue;
          // (derived entries agree by construction: select-precision's types default is its allowed list)
          if (auto a = allowed.find(opt);
              a != allowed.end() && !pr->derived.count({pass, opt}) && !allowed_by(a->second, val))
            diags.error(v.loc, who + ": default " + opt + " = " + val.display() + " for pass '" + pass +
                                   "' is not among the values it allows, " + a->second.display());
        }
      // A schema default the profile forbids and does not replace would make every plain step an error.
      for (const auto& [opt, list] : allowed) {
        const OptionSpec* spec = find_spec(*info, opt);
        const bool has_default = pr->defaults.count(pass) && pr->defaults.at(pass).count(opt);
        if (!has_default && !pr->derived.count({pass, opt}) && !spec->default_value.is_null() &&
            !allowed_by(list, spec->default_value))
          diags.error(list.loc, who + " forbids " + opt + " = " + spec->default_value.display() +
                                    ", the default of pass '" + pass + "', without setting another: add " +
                                    opt + " to [defaults." + pass + "]");
      }
    }
  }
}

namespace {

// Builds the graph target by target. A target's steps are planned on demand
// (a step may consume a Table from another target's step), with cycles refused.
class Planner {
 public:
  Planner(const Manifest& m, const Registry& reg, const ProfileSet& profiles, StatCache& stats,
          Diagnostics& diags)
      : m_(m), reg_(reg), profiles_(profiles), stats_(stats), diags_(diags) {
    for (const auto* p : reg.passes()) pass_names_.push_back(p->name);
    for (const auto* f : reg.formats()) format_names_.push_back(f->name());
    for (size_t i = 0; i < m.targets.size(); ++i) target_index_[m.targets[i].name] = i;
    plan_.manifest = &m;
  }

  Plan run(const std::vector<std::string>& only) {
    check_selection(only);
    const std::string exec = m_.executor.empty() ? "cpu" : m_.executor;
    plan_.executor = reg_.executor(exec);
    if (!plan_.executor && !m_.executor.empty()) {
      std::vector<std::string> names;
      for (const auto* e : reg_.executors()) names.push_back(e->name());
      diags_.error(m_.executor_loc, "unknown executor '" + exec + "'" + did_you_mean(exec, names) +
                                        (names.empty() ? " (no executor is registered)" : ""));
    }
    for (const auto& t : m_.targets) {
      if (!only.empty() && std::find(only.begin(), only.end(), t.name) == only.end()) continue;
      const Planned& p = plan_steps(t);
      if (!p.ok) continue;
      add_emit(t, p);
    }
    check_outputs();
    finish();
    for (const auto& [name, d] : m_.datasets)
      plan_.datasets[name] = Dataset{name, d.files, d.input, d.images};
    return std::move(plan_);
  }

 private:
  struct Planned {
    bool ok = false;
    int model = -1;               // the last Model node
    std::vector<int> step_nodes;  // per pipeline step (-1: not planned)
    const Format* src = nullptr;
  };

  void check_selection(const std::vector<std::string>& only) {
    std::vector<std::string> names;
    for (const auto& t : m_.targets) names.push_back(t.name);
    for (const auto& want : only)
      if (!target_index_.count(want))
        diags_.error({}, "no target named '" + want + "' in " + m_.path + did_you_mean(want, names));
  }

  int add_node(PlanNode n) {
    auto it = by_key_.find(n.key);
    if (it != by_key_.end()) return it->second;
    plan_.nodes.push_back(std::move(n));
    const int idx = static_cast<int>(plan_.nodes.size() - 1);
    by_key_[plan_.nodes.back().key] = idx;
    return idx;
  }

  // The model's format (probed once) and its file's digest; null format after reporting.
  std::pair<const Format*, std::string> probe(const ModelDecl& md) {
    if (auto it = imported_.find(md.name); it != imported_.end()) return it->second;
    const Format* fmt = nullptr;
    if (!md.format.empty()) {
      fmt = reg_.format(md.format);
      if (!fmt)
        diags_.error(md.loc, "unknown format '" + md.format + "'" + did_you_mean(md.format, format_names_));
    } else {
      uint8_t head[4096];
      size_t n = 0;
      int fd = ::open(md.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        ssize_t r = ::read(fd, head, sizeof head);
        n = r > 0 ? static_cast<size_t>(r) : 0;
        ::close(fd);
      }
      int best = 0;
      for (const auto* f : reg_.formats())
        if (int s = f->probe(md.path, head, n); s > best) {
          best = s;
          fmt = f;
        }
      if (!fmt)
        diags_.error(md.loc, "no format plugin recognises '" + md.path +
                                 "' (known formats: " + list_choices(format_names_) +
                                 "); set format = \"...\" or load the plugin for it");
    }
    std::string digest;
    if (fmt) {
      try {
        digest = stats_.digest(md.path).hex();
      } catch (const Error& e) {
        diags_.error(md.loc, e.what());
        fmt = nullptr;
      }
    }
    return imported_[md.name] = {fmt, digest};
  }

  int add_import(const ModelDecl& md, const Format* fmt, const std::string& digest) {
    PlanNode n;
    n.kind = PlanNode::Kind::Import;
    n.produces = ArtifactKind::Model;
    n.model = md.name;
    n.path = md.path;
    n.format = fmt;
    n.step = "import";
    n.fingerprint = "import " + fmt->name() + " " + fmt->version() + " file " + md.path + " " + digest;
    n.key = Hasher().field("import").field(fmt->name()).field(fmt->version()).field(digest).digest().hex();
    n.label = "import " + md.name;
    return add_node(std::move(n));
  }

  // Options with files named by Path and Dataset options replaced by their contents' digests.
  Options keyed_options(const PassInfo& info, const Options& opts) {
    Options keyed = opts;
    for (const auto& spec : info.options) {
      auto it = keyed.find(spec.name);
      if (it == keyed.end()) continue;
      if (spec.type == OptType::List && spec.unordered && it->second.kind == Value::Kind::List) {
        auto& l = it->second.list;
        std::sort(l.begin(), l.end(), [](const Value& a, const Value& b) { return a.s < b.s; });
        l.erase(std::unique(l.begin(), l.end(), [](const Value& a, const Value& b) { return a.s == b.s; }),
                l.end());
      } else if (spec.type == OptType::Path) {
        it->second = Value::of_string("sha:" + stats_.digest(it->second.s).hex());
      } else if (spec.type == OptType::Dataset) {
        const auto& ds = m_.datasets.at(it->second.s);
        Hasher dh;
        for (const auto& f : ds.files) dh.field(stats_.digest(f).hex());
        dh.field(ds.input);
        if (ds.images) dh.field("images " + ds.images->canonical());
        it->second = Value::of_string("dataset:" + dh.digest().hex());
      }
    }
    return keyed;
  }

  // The node a step reference names: in `steps` of `target` (the steps before
  // the referring one, for the same target), the last whose id or pass matches.
  int find_step(const TargetDecl& t, const Planned& p, size_t before, const std::string& step) {
    for (size_t k = std::min(before, t.pipeline.size()); k-- > 0;) {
      const StepDecl& s = t.pipeline[k];
      if ((s.id == step || (s.id.empty() && s.pass == step)) && k < p.step_nodes.size())
        return p.step_nodes[k];
    }
    return -2;  // not found
  }

  // The Table node for input `spec` of step `k` of target `t`; -1 when an
  // optional input has no producer; -2 after reporting an error.
  int table_input(const TargetDecl& t, const Planned& p, size_t k, size_t input_no,
                  const ArtifactSpec& spec) {
    const StepDecl& s = t.pipeline[k];
    const std::string want = spec.schema.empty() ? "a table" : "a '" + spec.schema + "' table";
    if (input_no < s.inputs.size()) {
      const StepRef& ref = s.inputs[input_no];
      int node = -2;
      std::string where = "this target";
      if (ref.target.empty() || ref.target == t.name) {
        node = find_step(t, p, k, ref.step);
      } else {
        auto it = target_index_.find(ref.target);
        if (it == target_index_.end()) {
          std::vector<std::string> names;
          for (const auto& kv : target_index_) names.push_back(kv.first);
          diags_.error(ref.loc, "no target named '" + ref.target + "'" + did_you_mean(ref.target, names));
          return -2;
        }
        const TargetDecl& other = m_.targets[it->second];
        if (other.model != t.model) {
          diags_.error(ref.loc, "step '" + ref.target + "/" + ref.step + "' works on model '" + other.model +
                                    "', but target '" + t.name + "' builds model '" + t.model + "'");
          return -2;
        }
        const Planned& op = plan_steps(other);
        if (!op.ok) return -2;
        node = find_step(other, op, other.pipeline.size(), ref.step);
        where = "target '" + ref.target + "'";
      }
      if (node == -2) {
        diags_.error(ref.loc, "no step '" + ref.step + "' " +
                                  (ref.target.empty() ? "before this one in " : "in ") + where +
                                  " (a step is named by its id = \"...\" or its pass)");
        return -2;
      }
      if (node < 0) return -2;  // that step failed to plan (reported)
      const PlanNode& n = plan_.nodes[node];
      if (n.produces != ArtifactKind::Table) {
        diags_.error(ref.loc, "step '" + ref.step + "' makes a " + name_of(n.produces) + ", but pass '" +
                                  s.pass + "' needs " + want + " here");
        return -2;
      }
      if (!spec.schema.empty() && !n.pass->output.schema.empty() && n.pass->output.schema != spec.schema) {
        diags_.error(ref.loc, "step '" + ref.step + "' makes a '" + n.pass->output.schema +
                                  "' table, but pass '" + s.pass + "' needs " + want + " here");
        return -2;
      }
      return node;
    }
    // Implicitly: the nearest step before this one making a table of that schema.
    for (size_t j = k; j-- > 0;) {
      if (j >= p.step_nodes.size() || p.step_nodes[j] < 0) continue;
      const PlanNode& n = plan_.nodes[p.step_nodes[j]];
      if (n.produces == ArtifactKind::Table && (spec.schema.empty() || n.pass->output.schema == spec.schema))
        return p.step_nodes[j];
    }
    if (spec.optional) return -1;
    std::vector<std::string> makers;
    for (const auto* info : reg_.passes())
      if (info->output.kind == ArtifactKind::Table &&
          (spec.schema.empty() || info->output.schema == spec.schema))
        makers.push_back("'" + info->name + "'");
    std::string hint;
    for (size_t i = 0; i < makers.size(); ++i) hint += (i ? ", " : "") + makers[i];
    diags_.error(s.loc,
                 "pass '" + s.pass + "' needs " + want + (spec.help.empty() ? "" : " (" + spec.help + ")") +
                     ": add a step that makes one before it" + (hint.empty() ? "" : " (" + hint + ")") +
                     ", or name one with inputs = [\"target/step\"]");
    return -2;
  }

  // The nodes of target `t`'s import and steps (memoized; the emit is separate).
  const Planned& plan_steps(const TargetDecl& t) {
    if (auto it = planned_.find(t.name); it != planned_.end()) return it->second;
    if (in_progress_.count(t.name)) {
      diags_.error(t.loc,
                   "target '" + t.name + "' depends on its own steps through step references (a cycle)");
      static const Planned failed;
      return failed;
    }
    in_progress_.insert(t.name);
    Planned p = plan_target(t);
    in_progress_.erase(t.name);
    return planned_[t.name] = std::move(p);
  }

  Planned plan_target(const TargetDecl& t) {
    Planned p;
    auto mit = m_.models.find(t.model);
    const ModelDecl* md = mit == m_.models.end() ? nullptr : &mit->second;  // unknown: reported by the loader
    std::string digest;
    if (md && !md->path.empty() && fs::exists(md->path)) std::tie(p.src, digest) = probe(*md);

    const Profile* profile = nullptr;
    if (!t.profile.empty()) {
      bool alias = false;
      profile = profiles_.find(t.profile, &alias);
      if (profile && alias)
        diags_.warning(t.profile_loc, "profile '" + t.profile + "' is a deprecated name of '" +
                                          profile->name + "': write profile = \"" + profile->name + "\"");
      if (!profile)
        diags_.error(t.profile_loc, "unknown profile '" + t.profile + "'" +
                                        did_you_mean(t.profile, profiles_.names()) +
                                        " (see `qforge list profiles`)");
    }
    // Every step is validated even when earlier ones failed: all errors in one
    // run. (Counted locally: an error another variant reported is folded.)
    Diagnostics mine;
    std::vector<std::pair<const PassInfo*, Options>> steps;
    for (const auto& s : t.pipeline) {
      const PassInfo* info = reg_.pass(s.pass);
      if (!info) {
        mine.error(s.loc, "unknown pass '" + s.pass + "'" + did_you_mean(s.pass, pass_names_) +
                              " (see `qforge list passes`)");
        steps.emplace_back(nullptr, Options{});
        continue;
      }
      if (info->needs_profile && !profile && t.profile.empty())
        mine.error(s.loc, "pass '" + s.pass +
                              "' needs a hardware profile: set profile = \"...\" on target '" + t.name + "'");
      if (info->needs_executor && !plan_.executor)
        mine.error(s.loc, "pass '" + s.pass +
                              "' runs the model, and no executor is registered (the built-in 'cpu' "
                              "executor, or the one [build] executor names)");
      if (info->needs_graph && p.src && p.src->name() == "gguf")
        mine.error(s.loc, "pass '" + s.pass + "' needs a graph, and model '" + t.model + "' (GGUF) has none");
      const size_t table_inputs = info->inputs.size();
      if (s.inputs.size() > table_inputs)
        mine.error(s.inputs[table_inputs].loc, "pass '" + s.pass + "' takes " + std::to_string(table_inputs) +
                                                   " table input(s), and inputs names " +
                                                   std::to_string(s.inputs.size()));
      steps.emplace_back(info, resolve_options(*info, s, profile, m_, mine));
    }
    for (const auto& d : mine.all()) {
      if (d.level == Diagnostic::Level::Error)
        diags_.error(d.loc, d.message);
      else if (d.level == Diagnostic::Level::Warning)
        diags_.warning(d.loc, d.message);
      else
        diags_.note(d.loc, d.message);
    }
    if (!md || !p.src || mine.has_errors()) return p;

    int model = add_import(*md, p.src, digest);
    p.step_nodes.assign(t.pipeline.size(), -1);
    for (size_t k = 0; k < steps.size(); ++k) {
      const auto& [info, opts] = steps[k];
      std::vector<int> inputs{model};
      bool ok = true;
      for (size_t i = 0; i < info->inputs.size(); ++i) {
        int node = table_input(t, p, k, i, info->inputs[i]);
        ok &= node != -2;
        inputs.push_back(node < 0 ? -1 : node);
      }
      if (!ok) return p;
      const Options keyed = keyed_options(*info, opts);
      Hasher h;
      h.field("pass").field(info->name).field(std::to_string(info->version)).field(canonical(keyed));
      if (info->needs_profile && profile) h.field(profile->digest);
      if (info->needs_executor)
        h.field("executor " + (plan_.executor ? plan_.executor->name() : std::string("none")));
      std::string inputs_text;
      for (int in : inputs) {
        h.field(in < 0 ? "-" : plan_.nodes[in].key);
        if (in >= 0 && in != model) inputs_text += " + " + plan_.nodes[in].label;
      }
      PlanNode n;
      n.kind = PlanNode::Kind::Pass;
      n.produces = info->output.kind;
      n.inputs = inputs;
      n.model = md->name;
      n.pass = info;
      n.options = opts;
      n.profile = profile;
      n.step = t.pipeline[k].id.empty() ? info->name : t.pipeline[k].id;
      n.fingerprint =
          "pass " + info->name + " v" + std::to_string(info->version) + " " + canonical(keyed) + inputs_text;
      n.key = h.digest().hex();
      std::string so = short_options(opts);
      n.label = info->name + " " + md->name + (so.empty() ? "" : " (" + so + ")");
      const int idx = add_node(std::move(n));
      p.step_nodes[k] = idx;
      if (info->output.kind == ArtifactKind::Model) model = idx;
    }
    p.model = model;
    p.ok = true;
    return p;
  }

  // Tables of `p`'s steps that no later step of the pipeline consumes (an
  // evaluate step's, say): the emit consumes them too, so they run whenever
  // the target is built and what they report lands in the target.
  std::vector<int> unconsumed_tables(const Planned& p) const {
    std::vector<int> out;
    for (size_t k = 0; k < p.step_nodes.size(); ++k) {
      const int node = p.step_nodes[k];
      if (node < 0 || plan_.nodes[node].produces != ArtifactKind::Table) continue;
      bool consumed = false;
      for (size_t j = k + 1; j < p.step_nodes.size() && !consumed; ++j) {
        if (p.step_nodes[j] < 0) continue;
        const auto& ins = plan_.nodes[p.step_nodes[j]].inputs;
        consumed = std::find(ins.begin() + 1, ins.end(), node) != ins.end();
      }
      if (!consumed && std::find(out.begin(), out.end(), node) == out.end()) out.push_back(node);
    }
    return out;
  }

  void add_emit(const TargetDecl& t, const Planned& p) {
    const int model = p.model;
    const Format* out_fmt = planned_.at(t.name).src;
    if (!t.emit.empty()) {
      out_fmt = reg_.format(t.emit);
      if (!out_fmt) {
        diags_.error(t.emit_loc,
                     "unknown emit format '" + t.emit + "'" + did_you_mean(t.emit, format_names_));
        return;
      }
    }
    const Profile* profile = t.profile.empty() ? nullptr : profiles_.find(t.profile);
    if (profile && !profile->format.empty() && profile->format != out_fmt->name())
      diags_.error(t.profile_loc, "profile '" + profile->name + "' is for " + profile->format +
                                      " models, but target '" + t.name + "' makes " + out_fmt->name() +
                                      " (choose a profile for " + out_fmt->name() +
                                      ", see `qforge list profiles`)");
    PlanNode em;
    em.kind = PlanNode::Kind::Emit;
    em.produces = ArtifactKind::File;
    em.inputs = {model};
    const std::vector<int> reports = unconsumed_tables(p);
    em.inputs.insert(em.inputs.end(), reports.begin(), reports.end());
    em.model = t.model;
    em.format = out_fmt;
    em.step = "emit";
    em.artifact = !t.output.empty() ? t.output : m_.output_dir + "/" + t.name + out_fmt->extension();
    em.fingerprint = "emit " + out_fmt->name() + " " + out_fmt->version();
    em.profile = profile;  // the artifact is checked against it
    // The artifact's name is not part of the key: two targets that make the
    // same bytes share the cache entry, and each gets its own file.
    Hasher h;
    h.field("emit").field(plan_.nodes[model].key).field(out_fmt->name()).field(out_fmt->version());
    for (int r : reports) h.field("report " + plan_.nodes[r].key);  // what the cached entry reports
    if (profile) h.field("profile " + profile->digest);             // the artifact is checked against it
    em.key = h.digest().hex();
    em.label = "emit " + t.name;
    // Emit nodes are per target (their artifact differs) even with equal keys.
    em.targets = {t.name};
    plan_.nodes.push_back(em);
    TargetPlan tp;
    tp.decl = t;
    tp.emit = static_cast<int>(plan_.nodes.size() - 1);
    tp.artifact = em.artifact;
    tp.format = out_fmt->name();
    tp.profile = profile ? profile->name : t.profile;
    plan_.targets.push_back(tp);
  }

  void check_outputs() {
    std::map<std::string, std::string> outputs;
    for (const auto& t : plan_.targets) {
      auto [it, fresh] = outputs.emplace(t.artifact, t.decl.name);
      if (!fresh)
        diags_.error(t.decl.loc,
                     "targets '" + it->second + "' and '" + t.decl.name + "' both write " + t.artifact);
    }
  }

  // Consumers, the targets each node serves, and the cache policy.
  void finish() {
    const size_t N = plan_.nodes.size();
    plan_.consumers.assign(N, {});
    for (size_t i = 0; i < N; ++i)
      for (int in : plan_.nodes[i].inputs)
        if (in >= 0) plan_.consumers[in].push_back(static_cast<int>(i));
    for (const auto& t : plan_.targets) {
      std::vector<int> stack{t.emit};
      std::set<int> seen;
      while (!stack.empty()) {
        int n = stack.back();
        stack.pop_back();
        if (!seen.insert(n).second) continue;
        auto& ts = plan_.nodes[n].targets;
        if (std::find(ts.begin(), ts.end(), t.decl.name) == ts.end()) ts.push_back(t.decl.name);
        for (int in : plan_.nodes[n].inputs)
          if (in >= 0) stack.push_back(in);
      }
    }
    for (size_t i = 0; i < N; ++i) {
      PlanNode& n = plan_.nodes[i];
      n.shared = n.kind != PlanNode::Kind::Emit && n.targets.size() >= 2;
      size_t step_consumers = 0;
      for (int c : plan_.consumers[i]) step_consumers += plan_.nodes[c].kind == PlanNode::Kind::Pass;
      if (n.kind == PlanNode::Kind::Import) {
        n.store = false;
        n.store_why = "not stored: the input file itself";
      } else if (n.kind == PlanNode::Kind::Emit) {
        n.store = true;
        n.store_why = "stored: the artifact";
      } else if (n.produces == ArtifactKind::Table) {
        n.store = true;
        n.store_why = "stored: tables are always cached";
      } else if (n.pass->expensive && step_consumers > 0) {
        n.store = true;
        n.store_why = "stored: pass '" + n.pass->name + "' is expensive and " +
                      std::to_string(step_consumers) + " step(s) consume its model";
      } else {
        n.store = false;
        n.store_why = step_consumers == 0 ? "not stored: only emitted (the artifact is cached)"
                                          : "not stored: recomputing is cheaper than storing (pass '" +
                                                n.pass->name + "' is not marked expensive)";
      }
    }
  }

  const Manifest& m_;
  const Registry& reg_;
  const ProfileSet& profiles_;
  StatCache& stats_;
  Diagnostics& diags_;
  Plan plan_;
  std::vector<std::string> pass_names_, format_names_;
  std::map<std::string, size_t> target_index_;
  std::map<std::string, int> by_key_;
  std::map<std::string, std::pair<const Format*, std::string>> imported_;
  std::map<std::string, Planned> planned_;
  std::set<std::string> in_progress_;
};

}  // namespace

Plan make_plan(const Manifest& m, const Registry& reg, const ProfileSet& profiles, StatCache& stats,
               const std::vector<std::string>& only_targets, Diagnostics& diags) {
  validate_profiles(profiles, reg, diags);
  return Planner(m, reg, profiles, stats, diags).run(only_targets);
}

}  // namespace qforge
