#include "qforge/manifest.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>
#include <sstream>
#include <toml++/toml.h>

#include "qforge/status.h"
#include "toml_value.h"

namespace fs = std::filesystem;

namespace qforge {
namespace {

constexpr uint64_t kMaxVariants = 10000;  // per [[targets]] entry

const char* toml_kind(const Value& v) { return Value::kind_name(v.kind); }

class Loader {
 public:
  Loader(std::string file, Diagnostics& d) : file_(std::move(file)), diags_(d) {}

  // Reports keys of `table` not in `known`, with a suggestion.
  void check_keys(const Value& table, const std::vector<std::string>& known, const std::string& where) {
    for (size_t i = 0; i < table.table.size(); ++i) {
      const auto& k = table.table[i].first;
      if (std::find(known.begin(), known.end(), k) == known.end())
        diags_.error(i < table.key_locs.size() ? table.key_locs[i] : table.table[i].second.loc,
                     "unknown key '" + k + "' in " + where + did_you_mean(k, known));
    }
  }

  bool expect(const Value& v, Value::Kind kind, const std::string& what) {
    if (v.kind == kind) return true;
    if (kind == Value::Kind::Float && v.kind == Value::Kind::Int) return true;
    diags_.error(v.loc, what + " must be " + Value::kind_name(kind) + ", found " + toml_kind(v) +
                            " " + v.display());
    return false;
  }

  std::string get_string(const Value& table, const std::string& key, const std::string& where,
                         bool required, SourceLoc* loc = nullptr) {
    const Value* v = table.find(key);
    if (!v) {
      if (required) diags_.error(table.loc, where + " needs '" + key + "'");
      return {};
    }
    if (loc) *loc = v->loc;
    if (!expect(*v, Value::Kind::String, "'" + key + "' in " + where)) return {};
    return v->s;
  }

  std::string file_;
  Diagnostics& diags_;
};

std::string absolute_in(const std::string& dir, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  if (path.is_relative()) path = fs::path(dir) / path;
  return path.lexically_normal().string();
}

// Replaces {key} placeholders; reports unknown ones.
std::string substitute(const std::string& s, const std::vector<std::pair<std::string, std::string>>& vars,
                       const SourceLoc& loc, Diagnostics& diags, std::set<std::string>* used) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '{') {
      size_t j = s.find('}', i);
      if (j != std::string::npos) {
        std::string key = s.substr(i + 1, j - i - 1);
        bool found = false;
        for (const auto& kv : vars)
          if (kv.first == key) {
            out += kv.second;
            found = true;
            if (used) used->insert(key);
          }
        if (!found) {
          std::vector<std::string> names;
          for (const auto& kv : vars) names.push_back(kv.first);
          diags.error(loc, "placeholder '{" + key + "}' has no value: " +
                               (names.empty() ? std::string("this target has no matrix")
                                              : "the matrix defines " + [&] {
                                                  std::string n;
                                                  for (size_t k = 0; k < names.size(); ++k)
                                                    n += (k ? ", " : "") + ("'" + names[k] + "'");
                                                  return n;
                                                }()) +
                               did_you_mean(key, names));
          out += s.substr(i, j - i + 1);
        }
        i = j + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

void substitute_value(Value& v, const std::vector<std::pair<std::string, std::string>>& vars,
                      Diagnostics& diags, std::set<std::string>* used) {
  if (v.kind == Value::Kind::String) {
    // A whole-string placeholder whose matrix value is a number stays a string;
    // passes convert typed options (see build.cc).
    v.s = substitute(v.s, vars, v.loc, diags, used);
  } else if (v.kind == Value::Kind::List) {
    for (auto& e : v.list) substitute_value(e, vars, diags, used);
  } else if (v.kind == Value::Kind::Table) {
    for (auto& kv : v.table) substitute_value(kv.second, vars, diags, used);
  }
}

std::vector<std::string> expand_glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (::glob(pattern.c_str(), GLOB_NOSORT | GLOB_BRACE, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

Manifest parse_manifest(const std::string& text, const std::string& path, Diagnostics& diags) {
  Manifest m;
  m.path = path;
  m.dir = fs::absolute(fs::path(path)).parent_path().lexically_normal().string();
  if (m.dir.size() > 1 && m.dir.back() == '/') m.dir.pop_back();
  m.output_dir = absolute_in(m.dir, "dist");
  m.cache_dir = absolute_in(m.dir, ".qforge/cache");

  diags.set_source(path, text);
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    SourceLoc loc{path, static_cast<uint32_t>(e.source().begin.line),
                  static_cast<uint32_t>(e.source().begin.column)};
    diags.error(loc, "invalid TOML: " + std::string(e.description()));
    return m;
  }
  Value top = toml_to_value(root, path);
  top.loc = {path, 1, 1};
  Loader L(path, diags);
  L.check_keys(top, {"build", "plugins", "models", "datasets", "targets", "profiles"}, "the manifest");

  // [build]
  if (const Value* b = top.find("build"); b && L.expect(*b, Value::Kind::Table, "[build]")) {
    L.check_keys(*b, {"output", "jobs", "cache"}, "[build]");
    if (auto s = L.get_string(*b, "output", "[build]", false); !s.empty()) m.output_dir = absolute_in(m.dir, s);
    if (auto s = L.get_string(*b, "cache", "[build]", false); !s.empty()) m.cache_dir = absolute_in(m.dir, s);
    if (const Value* j = b->find("jobs"); j && L.expect(*j, Value::Kind::Int, "'jobs' in [build]")) {
      if (j->i < 1 || j->i > 1024) diags.error(j->loc, "'jobs' must be between 1 and 1024, found " + std::to_string(j->i));
      else m.jobs = static_cast<int>(j->i);
    }
  }
  // [plugins]
  if (const Value* p = top.find("plugins"); p && L.expect(*p, Value::Kind::Table, "[plugins]")) {
    L.check_keys(*p, {"paths"}, "[plugins]");
    if (const Value* paths = p->find("paths"); paths && L.expect(*paths, Value::Kind::List, "'paths' in [plugins]"))
      for (const auto& e : paths->list)
        if (L.expect(e, Value::Kind::String, "a plugin path")) m.plugin_paths.push_back(absolute_in(m.dir, e.s));
  }
  // [profiles] paths = [...]: extra profile directories
  if (const Value* p = top.find("profiles"); p && L.expect(*p, Value::Kind::Table, "[profiles]")) {
    L.check_keys(*p, {"paths"}, "[profiles]");
    if (const Value* paths = p->find("paths"); paths && L.expect(*paths, Value::Kind::List, "'paths' in [profiles]"))
      for (const auto& e : paths->list)
        if (L.expect(e, Value::Kind::String, "a profile path")) m.profile_paths.push_back(absolute_in(m.dir, e.s));
  }
  // [models.*]
  if (const Value* ms = top.find("models"); ms && L.expect(*ms, Value::Kind::Table, "[models]")) {
    for (const auto& [name, v] : ms->table) {
      std::string where = "[models." + name + "]";
      if (!L.expect(v, Value::Kind::Table, where)) continue;
      L.check_keys(v, {"path", "format"}, where);
      ModelDecl d;
      d.name = name;
      d.loc = v.loc;
      SourceLoc ploc;
      std::string p = L.get_string(v, "path", where, true, &ploc);
      d.format = L.get_string(v, "format", where, false);
      if (!p.empty()) {
        d.path = absolute_in(m.dir, p);
        d.loc = ploc;
        if (!fs::exists(d.path))
          diags.error(ploc, "model file '" + p + "' does not exist (looked for " + d.path + ")");
      }
      m.models[name] = d;
    }
  }
  // [datasets.*]
  if (const Value* ds = top.find("datasets"); ds && L.expect(*ds, Value::Kind::Table, "[datasets]")) {
    for (const auto& [name, v] : ds->table) {
      std::string where = "[datasets." + name + "]";
      if (!L.expect(v, Value::Kind::Table, where)) continue;
      L.check_keys(v, {"files", "input"}, where);
      DatasetDecl d;
      d.name = name;
      d.loc = v.loc;
      d.input = L.get_string(v, "input", where, false);
      const Value* files = v.find("files");
      if (!files) {
        diags.error(v.loc, where + " needs 'files' (a list of paths or glob patterns)");
      } else if (L.expect(*files, Value::Kind::List, "'files' in " + where)) {
        for (const auto& f : files->list) {
          if (!L.expect(f, Value::Kind::String, "a dataset file pattern")) continue;
          d.patterns.push_back(f.s);
          auto found = expand_glob(absolute_in(m.dir, f.s));
          if (found.empty()) diags.error(f.loc, "'" + f.s + "' matches no file");
          d.files.insert(d.files.end(), found.begin(), found.end());
        }
        std::sort(d.files.begin(), d.files.end());
        d.files.erase(std::unique(d.files.begin(), d.files.end()), d.files.end());
      }
      m.datasets[name] = d;
    }
  }
  // [[targets]]
  const Value* ts = top.find("targets");
  if (ts && L.expect(*ts, Value::Kind::List, "[[targets]]")) {
    std::set<std::string> names;
    for (const auto& t : ts->list) {
      if (!L.expect(t, Value::Kind::Table, "a target")) continue;
      L.check_keys(t, {"name", "model", "matrix", "profile", "pipeline", "emit", "output"}, "a target");
      // matrix: cartesian product, first key outermost.
      std::vector<std::pair<std::string, std::vector<std::string>>> axes;
      if (const Value* mx = t.find("matrix"); mx && L.expect(*mx, Value::Kind::Table, "'matrix'")) {
        for (const auto& [k, vals] : mx->table) {
          if (!L.expect(vals, Value::Kind::List, "matrix '" + k + "'")) continue;
          std::vector<std::string> strs;
          for (const auto& e : vals.list) {
            if (e.kind == Value::Kind::String) strs.push_back(e.s);
            else if (e.kind == Value::Kind::Int) strs.push_back(std::to_string(e.i));
            else if (e.kind == Value::Kind::Float || e.kind == Value::Kind::Bool) strs.push_back(e.display());
            else diags.error(e.loc, "matrix values must be strings or numbers, found " + std::string(toml_kind(e)));
          }
          if (strs.empty()) diags.error(vals.loc, "matrix '" + k + "' is empty: give at least one value");
          axes.emplace_back(k, strs);
        }
      }
      std::vector<std::vector<std::pair<std::string, std::string>>> combos{{}};
      uint64_t product = 1;
      for (const auto& [k, vals] : axes) product = std::min<uint64_t>(product * std::max<size_t>(vals.size(), 1), kMaxVariants + 1);
      if (product > kMaxVariants) {
        diags.error(t.find("matrix")->loc, "this matrix makes more than " + std::to_string(kMaxVariants) +
                                               " variants; split the target or shorten its lists");
        continue;
      }
      for (const auto& [k, vals] : axes) {
        std::vector<std::vector<std::pair<std::string, std::string>>> next;
        for (const auto& c : combos)
          for (const auto& v : vals) {
            auto n = c;
            n.emplace_back(k, v);
            next.push_back(n);
          }
        combos = next;
      }
      if (combos.empty()) continue;
      size_t errors_before = diags.error_count();
      for (size_t ci = 0; ci < combos.size(); ++ci) {
        const auto& vars = combos[ci];
        // Report placeholder errors once per target, not once per combination.
        Diagnostics scratch;
        Diagnostics& dd = ci == 0 ? diags : scratch;
        std::set<std::string> used;
        TargetDecl d;
        d.loc = t.loc;
        d.matrix = vars;
        SourceLoc nloc = t.loc;
        std::string raw_name = L.get_string(t, "name", "a target", ci == 0, &nloc);
        d.name = substitute(raw_name, vars, nloc, dd, &used);
        d.model = L.get_string(t, "model", "target '" + d.name + "'", ci == 0, &d.model_loc);
        if (const Value* pv = t.find("profile"); pv && pv->kind == Value::Kind::String) {
          d.profile = substitute(pv->s, vars, pv->loc, dd, &used);
          d.profile_loc = pv->loc;
        } else if (pv && ci == 0) {
          L.expect(*pv, Value::Kind::String, "'profile'");
        }
        if (const Value* ev = t.find("emit"); ev && ev->kind == Value::Kind::String) {
          d.emit = substitute(ev->s, vars, ev->loc, dd, &used);
          d.emit_loc = ev->loc;
        } else if (ev && ci == 0) {
          L.expect(*ev, Value::Kind::String, "'emit'");
        }
        if (const Value* ov = t.find("output"); ov && ov->kind == Value::Kind::String) {
          d.output = absolute_in(m.dir, substitute(ov->s, vars, ov->loc, dd, &used));
        } else if (ov && ci == 0) {
          L.expect(*ov, Value::Kind::String, "'output'");
        }
        const Value* pl = t.find("pipeline");
        if (pl && (pl->kind == Value::Kind::List)) {
          for (const auto& step : pl->list) {
            if (step.kind != Value::Kind::Table) {
              if (ci == 0) L.expect(step, Value::Kind::Table, "a pipeline step");
              continue;
            }
            StepDecl s;
            s.loc = step.loc;
            const Value* pass = step.find("pass");
            if (!pass || pass->kind != Value::Kind::String) {
              if (ci == 0)
                diags.error(step.loc, pass ? "'pass' must be a string, found " + std::string(toml_kind(*pass))
                                           : "a pipeline step needs 'pass' (e.g. { pass = \"quantize-static\" })");
              continue;
            }
            s.pass = pass->s;
            s.loc = pass->loc;
            for (size_t oi = 0; oi < step.table.size(); ++oi) {
              const auto& [k, v] = step.table[oi];
              if (k == "pass") continue;
              Value vv = v;
              substitute_value(vv, vars, dd, &used);
              s.options[k] = vv;
              s.option_locs[k] = oi < step.key_locs.size() ? step.key_locs[oi] : v.loc;
            }
            d.pipeline.push_back(s);
          }
        } else if (pl && ci == 0) {
          L.expect(*pl, Value::Kind::List, "'pipeline'");
        }
        if (ci == 0)
          for (const auto& [k, vals] : axes)
            if (!used.count(k))
              diags.warning(t.find("matrix")->find(k)->loc,
                            "matrix key '" + k + "' is used nowhere in this target: every variant would be the same");
        if (ci == 0 && !d.model.empty() && !m.models.count(d.model)) {
          std::vector<std::string> names;
          for (const auto& kv : m.models) names.push_back(kv.first);
          diags.error(d.model_loc, "unknown model '" + d.model + "'" + did_you_mean(d.model, names) +
                                       (names.empty() ? " (declare it under [models." + d.model + "])" : ""));
        }
        if (!d.name.empty() && !names.insert(d.name).second && diags.error_count() == errors_before)
          diags.error(nloc, "two targets are named '" + d.name + "': give each variant a unique name (use a {key} from the matrix)");
        m.targets.push_back(std::move(d));
      }
    }
  } else if (!ts) {
    diags.error({path, 1, 1}, "the manifest declares no [[targets]]");
  }
  return m;
}

Manifest load_manifest(const std::string& path, Diagnostics& diags) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diags.error({}, path + ": cannot read the manifest (does the file exist? use -f to name another)");
    return {};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_manifest(ss.str(), path, diags);
}

}  // namespace qforge
