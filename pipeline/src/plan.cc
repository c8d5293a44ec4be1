// Planning: manifest + registry + profiles -> a graph of keyed nodes.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <regex>
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
  if (unit == "KB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "TB") mult = 1e12;
  else if (unit == "KiB") mult = 1024.0;
  else if (unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "TiB") mult = 1024.0 * 1024 * 1024 * 1024;
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

// Coerces `v` to the option's type (placeholders make strings of numbers).
// Returns false after reporting.
bool coerce(const OptionSpec& spec, Value& v, const std::string& pass, const Manifest& m,
            Diagnostics& diags) {
  auto bad = [&](const std::string& extra = "") {
    diags.error(v.loc, "option '" + spec.name + "' of pass '" + pass + "' must be " + name_of(spec.type) +
                           ", found " + Value::kind_name(v.kind) + " " + v.display() + extra);
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
      return v.kind == Value::Kind::Int || bad();
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
      return v.kind == Value::Kind::Float || bad();
    }
    case OptType::String:
      return v.kind == Value::Kind::String || bad();
    case OptType::Enum:
      if (v.kind != Value::Kind::String) return bad(" (choose " + list_choices(spec.choices) + ")");
      if (std::find(spec.choices.begin(), spec.choices.end(), v.s) == spec.choices.end()) {
        diags.error(v.loc, "option '" + spec.name + "' of pass '" + pass + "' cannot be '" + v.s + "'" +
                               did_you_mean(v.s, spec.choices) + "; choose " + list_choices(spec.choices));
        return false;
      }
      return true;
    case OptType::List:
      if (v.kind == Value::Kind::String) {  // a single value is a list of one
        Value one = v;
        v.kind = Value::Kind::List;
        v.list = {one};
      }
      if (v.kind != Value::Kind::List) return bad();
      for (const auto& e : v.list) {
        if (e.kind != Value::Kind::String) {
          diags.error(e.loc, "items of option '" + spec.name + "' of pass '" + pass + "' must be strings, found " +
                                 Value::kind_name(e.kind) + " " + e.display());
          return false;
        }
        if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), e.s) == spec.choices.end()) {
          diags.error(e.loc, "option '" + spec.name + "' of pass '" + pass + "' cannot contain '" + e.s + "'" +
                                 did_you_mean(e.s, spec.choices));
          return false;
        }
      }
      return true;
    case OptType::Table:
      if (v.kind != Value::Kind::Table) return bad();
      for (const auto& kv : v.table)
        if (kv.second.kind != Value::Kind::String) {
          diags.error(kv.second.loc, "values of option '" + spec.name + "' of pass '" + pass + "' must be strings, found " +
                                         Value::kind_name(kv.second.kind));
          return false;
        }
      return true;
    case OptType::Path: {
      if (v.kind != Value::Kind::String) return bad();
      fs::path p(v.s);
      if (p.is_relative()) p = fs::path(m.dir) / p;
      std::string abs = p.lexically_normal().string();
      std::error_code ec;
      if (!fs::is_regular_file(abs, ec)) {
        diags.error(v.loc, "option '" + spec.name + "' of pass '" + pass + "': file '" + v.s + "' does not exist (looked for " + abs + ")");
        return false;
      }
      v.written = v.s;
      v.s = abs;
      return true;
    }
    case OptType::Dataset: {
      if (v.kind != Value::Kind::String) return bad();
      if (!m.datasets.count(v.s)) {
        std::vector<std::string> names;
        for (const auto& kv : m.datasets) names.push_back(kv.first);
        diags.error(v.loc, "unknown dataset '" + v.s + "'" + did_you_mean(v.s, names) +
                               (names.empty() ? " (declare it under [datasets." + v.s + "])" : ""));
        return false;
      }
      return true;
    }
    case OptType::Size: {
      static const std::regex re(R"(^\s*([0-9]+(\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|bpw)\s*$)");
      if (v.kind != Value::Kind::String || !std::regex_match(v.s, re)) return bad();
      return true;
    }
  }
  return true;
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

}  // namespace

Options resolve_options(const PassInfo& info, const StepDecl& step, const Profile* profile,
                        const Manifest& m, Diagnostics& diags) {
  Options out;
  std::vector<std::string> names;
  for (const auto& o : info.options) names.push_back(o.name);
  for (const auto& [k, v] : step.options) {
    auto it = std::find_if(info.options.begin(), info.options.end(), [&](const OptionSpec& s) { return s.name == k; });
    if (it == info.options.end()) {
      auto kl = step.option_locs.find(k);
      diags.error(kl != step.option_locs.end() ? kl->second : v.loc, "pass '" + info.name + "' has no option '" + k + "'" + did_you_mean(k, names) +
                             (names.empty() ? " (it takes no options)" : ""));
      continue;
    }
    Value val = v;
    if (!coerce(*it, val, info.name, m, diags)) {
      out[k] = Value();  // reported; don't also report it as missing
      continue;
    }
    if (profile) {
      if (const Value* allowed = profile->allowed_values(info.name, k)) {
        bool ok = false;
        for (const auto& a : allowed->list)
          if (a.canonical() == val.canonical() || (a.kind == Value::Kind::String && val.kind == Value::Kind::String && a.s == val.s))
            ok = true;
        if (!ok) {
          diags.error(v.loc, "option " + k + " = " + val.display() + " of pass '" + info.name +
                                 "' is forbidden by profile '" + profile->name + "', which allows " + allowed->display());
          diags.note(allowed->loc, "profile '" + profile->name + "' restricts '" + k + "' here");
          continue;
        }
      }
    }
    out[k] = val;
  }
  // Profile defaults, then schema defaults, under explicit options.
  if (profile) {
    auto it = profile->defaults.find(info.name);
    if (it != profile->defaults.end())
      for (const auto& [k, v] : it->second) {
        if (out.count(k)) continue;
        auto spec = std::find_if(info.options.begin(), info.options.end(), [&](const OptionSpec& s) { return s.name == k; });
        if (spec == info.options.end()) {
          diags.error(v.loc, "profile '" + profile->name + "' sets option '" + k + "' that pass '" + info.name +
                                 "' does not have" + did_you_mean(k, names));
          continue;
        }
        Value val = v;
        if (coerce(*spec, val, info.name, m, diags)) out[k] = val;
      }
  }
  for (const auto& spec : info.options) {
    if (out.count(spec.name)) {
      if (out[spec.name].is_null()) out.erase(spec.name);  // the placeholder of a reported error
      continue;
    }
    if (!spec.default_value.is_null()) out[spec.name] = spec.default_value;
    else if (spec.required)
      diags.error(step.loc, "pass '" + info.name + "' needs option '" + spec.name + "' (" + spec.help + ")");
  }
  return out;
}

Plan make_plan(const Manifest& m, const Registry& reg, const ProfileSet& profiles, StatCache& stats,
               const std::vector<std::string>& only_targets, Diagnostics& diags) {
  Plan plan;
  plan.manifest = &m;
  std::map<std::string, int> by_key;

  std::vector<std::string> pass_names, format_names;
  for (const auto* p : reg.passes()) pass_names.push_back(p->name);
  for (const auto* f : reg.formats()) format_names.push_back(f->name());

  for (const auto& want : only_targets) {
    bool found = std::any_of(m.targets.begin(), m.targets.end(), [&](const TargetDecl& t) { return t.name == want; });
    if (!found) {
      std::vector<std::string> names;
      for (const auto& t : m.targets) names.push_back(t.name);
      diags.error({}, "no target named '" + want + "' in " + m.path + did_you_mean(want, names));
    }
  }

  auto add_node = [&](PlanNode n, const std::string& target) -> int {
    auto it = by_key.find(n.key);
    if (it != by_key.end()) {
      auto& existing = plan.nodes[it->second];
      if (std::find(existing.targets.begin(), existing.targets.end(), target) == existing.targets.end())
        existing.targets.push_back(target);
      return it->second;
    }
    n.targets = {target};
    plan.nodes.push_back(std::move(n));
    by_key[plan.nodes.back().key] = static_cast<int>(plan.nodes.size() - 1);
    return static_cast<int>(plan.nodes.size() - 1);
  };

  // Imports: one per model, probed once.
  std::map<std::string, std::pair<const Format*, std::string>> imported;  // model -> format, file digest
  auto import_of = [&](const ModelDecl& md, Diagnostics& d) -> std::pair<const Format*, std::string> {
    auto it = imported.find(md.name);
    if (it != imported.end()) return it->second;
    const Format* fmt = nullptr;
    if (!md.format.empty()) {
      fmt = reg.format(md.format);
      if (!fmt) d.error(md.loc, "unknown format '" + md.format + "'" + did_you_mean(md.format, format_names));
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
      for (const auto* f : reg.formats()) {
        int s = f->probe(md.path, head, n);
        if (s > best) {
          best = s;
          fmt = f;
        }
      }
      if (!fmt)
        d.error(md.loc, "no format plugin recognises '" + md.path + "' (known formats: " + list_choices(format_names) +
                            "); set format = \"...\" or load the plugin for it");
    }
    std::string digest;
    if (fmt) {
      try {
        digest = stats.digest(md.path).hex();
      } catch (const Error& e) {
        d.error(md.loc, e.what());
        fmt = nullptr;
      }
    }
    return imported[md.name] = {fmt, digest};
  };

  for (const auto& t : m.targets) {
    if (!only_targets.empty() && std::find(only_targets.begin(), only_targets.end(), t.name) == only_targets.end())
      continue;
    auto mit = m.models.find(t.model);
    const ModelDecl* mdp = mit == m.models.end() ? nullptr : &mit->second;  // unknown: reported by the loader
    const Format* src_fmt = nullptr;
    std::string file_digest;
    if (mdp && !mdp->path.empty() && fs::exists(mdp->path)) std::tie(src_fmt, file_digest) = import_of(*mdp, diags);

    const Profile* profile = nullptr;
    if (!t.profile.empty()) {
      profile = profiles.find(t.profile);
      if (!profile)
        diags.error(t.profile_loc, "unknown profile '" + t.profile + "'" + did_you_mean(t.profile, profiles.names()) +
                                       " (see `qforge list profiles`)");
    }
    const Format* out_fmt = src_fmt;
    if (!t.emit.empty()) {
      out_fmt = reg.format(t.emit);
      if (!out_fmt) diags.error(t.emit_loc, "unknown emit format '" + t.emit + "'" + did_you_mean(t.emit, format_names));
    }

    // Validate every step even when earlier ones failed: all errors in one run.
    std::vector<std::pair<const PassInfo*, Options>> steps;
    for (const auto& s : t.pipeline) {
      const PassInfo* info = reg.pass(s.pass);
      if (!info) {
        diags.error(s.loc, "unknown pass '" + s.pass + "'" + did_you_mean(s.pass, pass_names) +
                               " (see `qforge list passes`)");
        continue;
      }
      if (info->needs_profile && !profile && t.profile.empty())
        diags.error(s.loc, "pass '" + s.pass + "' needs a hardware profile: set profile = \"...\" on target '" + t.name + "'");
      if (info->needs_graph && src_fmt && src_fmt->name() == "gguf")
        diags.error(s.loc, "pass '" + s.pass + "' needs a graph, and model '" + t.model + "' (GGUF) has none");
      Options opts = resolve_options(*info, s, profile, m, diags);
      steps.emplace_back(info, std::move(opts));
    }
    if (!mdp || !src_fmt || !out_fmt || diags.has_errors()) continue;
    const ModelDecl& md = *mdp;

    PlanNode imp;
    imp.kind = PlanNode::Kind::Import;
    imp.model = md.name;
    imp.path = md.path;
    imp.format = src_fmt;
    imp.fingerprint = "import " + src_fmt->name() + " " + src_fmt->version() + " file " + md.path + " " + file_digest;
    imp.key = Hasher().field("import").field(src_fmt->name()).field(src_fmt->version()).field(file_digest).digest().hex();
    imp.label = "import " + md.name;
    int cur = add_node(imp, t.name);

    for (const auto& [info, opts] : steps) {
      Hasher h;
      h.field("pass").field(plan.nodes[cur].key).field(info->name).field(std::to_string(info->version));
      // Options; files named by Path and Dataset options enter by content.
      Options keyed = opts;
      for (const auto& spec : info->options) {
        auto it = keyed.find(spec.name);
        if (it == keyed.end()) continue;
        if (spec.type == OptType::Path) {
          it->second = Value::of_string("sha:" + stats.digest(it->second.s).hex());
        } else if (spec.type == OptType::Dataset) {
          const auto& ds = m.datasets.at(it->second.s);
          Hasher dh;
          for (const auto& f : ds.files) dh.field(stats.digest(f).hex());
          dh.field(ds.input);
          it->second = Value::of_string("dataset:" + dh.digest().hex());
        }
      }
      h.field(canonical(keyed));
      if (info->needs_profile && profile) h.field(profile->digest);
      PlanNode pn;
      pn.kind = PlanNode::Kind::Pass;
      pn.parent = cur;
      pn.model = md.name;
      pn.pass = info;
      pn.options = opts;
      pn.profile = profile;
      pn.fingerprint = "pass " + info->name + " v" + std::to_string(info->version) + " " + canonical(keyed);
      pn.key = h.digest().hex();
      std::string so = short_options(opts);
      pn.label = info->name + " " + md.name + (so.empty() ? "" : " (" + so + ")");
      cur = add_node(pn, t.name);
    }

    PlanNode em;
    em.kind = PlanNode::Kind::Emit;
    em.parent = cur;
    em.model = md.name;
    em.format = out_fmt;
    em.artifact = !t.output.empty() ? t.output : m.output_dir + "/" + t.name + out_fmt->extension();
    em.fingerprint = "emit " + out_fmt->name() + " " + out_fmt->version();
    // The artifact's name is not part of the key: two targets that make the
    // same bytes share the cache entry, and each gets its own file.
    em.key = Hasher().field("emit").field(plan.nodes[cur].key).field(out_fmt->name()).field(out_fmt->version()).digest().hex();
    em.label = "emit " + t.name;
    // Emit nodes are per target (their artifact differs) even with equal keys.
    em.targets = {t.name};
    plan.nodes.push_back(em);
    TargetPlan tp;
    tp.decl = t;
    tp.emit = static_cast<int>(plan.nodes.size() - 1);
    tp.artifact = em.artifact;
    tp.format = out_fmt->name();
    tp.profile = t.profile;
    plan.targets.push_back(tp);
  }
  // Two targets writing one file is an error.
  std::map<std::string, std::string> outputs;
  for (const auto& t : plan.targets) {
    auto [it, fresh] = outputs.emplace(t.artifact, t.decl.name);
    if (!fresh) diags.error(t.decl.loc, "targets '" + it->second + "' and '" + t.decl.name + "' both write " + t.artifact);
  }
  for (const auto& [name, d] : m.datasets) {
    Dataset ds;
    ds.name = name;
    ds.files = d.files;
    ds.input = d.input;
    plan.datasets[name] = ds;
  }
  return plan;
}

}  // namespace qforge
