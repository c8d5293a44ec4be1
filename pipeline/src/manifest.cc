#include "qforge/manifest.h"

#include <glob.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

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
    diags_.error(v.loc,
                 what + " must be " + Value::kind_name(kind) + ", found " + toml_kind(v) + " " + v.display());
    return false;
  }

  std::string get_string(const Value& table, const std::string& key, const std::string& where, bool required,
                         SourceLoc* loc = nullptr) {
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

// ------------------------------------------------------------------ placeholders
// A matrix variant: each key's value, typed as written.
using Vars = std::vector<std::pair<std::string, Value>>;

bool is_ident_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_ident(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }

// The text a matrix value stands for inside a longer string.
std::string text_of(const Value& v) { return v.kind == Value::Kind::String ? v.s : v.display(); }

// Where the placeholder `{name}` starting at s[i] ends (index of '}'), or
// npos when s[i] does not start one: a placeholder is `{` + an identifier
// (a letter or '_', then letters, digits, '_', '-') + `}`. Anything else in
// braces (a regex's `{2,3}`) is literal text; `{{` and `}}` write one brace.
size_t placeholder_end(const std::string& s, size_t i) {
  if (s[i] != '{' || i + 1 >= s.size() || !is_ident_start(s[i + 1])) return std::string::npos;
  size_t j = i + 1;
  while (j < s.size() && is_ident(s[j])) ++j;
  return j < s.size() && s[j] == '}' ? j : std::string::npos;
}

std::string names_of(const Vars& vars) {
  std::string n;
  for (size_t k = 0; k < vars.size(); ++k) n += (k ? ", " : "") + ("'" + vars[k].first + "'");
  return n;
}

// Replaces {key} placeholders; reports unknown ones at `loc`.
std::string substitute(const std::string& s, const Vars& vars, const SourceLoc& loc, Diagnostics& diags,
                       std::set<std::string>* used) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if ((s[i] == '{' || s[i] == '}') && i + 1 < s.size() && s[i + 1] == s[i]) {
      out += s[i];
      i += 2;
      continue;
    }
    const size_t j = placeholder_end(s, i);
    if (j == std::string::npos) {
      out += s[i++];
      continue;
    }
    const std::string key = s.substr(i + 1, j - i - 1);
    auto it = std::find_if(vars.begin(), vars.end(), [&](const auto& kv) { return kv.first == key; });
    if (it != vars.end()) {
      out += text_of(it->second);
      if (used) used->insert(key);
    } else {
      std::vector<std::string> names;
      for (const auto& kv : vars) names.push_back(kv.first);
      diags.error(loc, "placeholder '{" + key + "}' has no value: " +
                           (names.empty() ? std::string("this target has no matrix")
                                          : "the matrix defines " + names_of(vars)) +
                           did_you_mean(key, names) + " (write '{{' for a literal brace)");
      out += s.substr(i, j - i + 1);
    }
    i = j + 1;
  }
  return out;
}

// Substitutes every string inside `v`. A string that is exactly one
// placeholder takes the matrix value's type: `bits = "{b}"` with b = [4, 8]
// gives the integer 4.
void substitute_value(Value& v, const Vars& vars, Diagnostics& diags, std::set<std::string>* used) {
  if (v.kind == Value::Kind::String) {
    const size_t j = placeholder_end(v.s, 0);
    if (j != std::string::npos && j + 1 == v.s.size()) {
      const std::string key = v.s.substr(1, j - 1);
      auto it = std::find_if(vars.begin(), vars.end(), [&](const auto& kv) { return kv.first == key; });
      if (it != vars.end() && it->second.kind != Value::Kind::String) {
        const SourceLoc loc = v.loc;
        v = it->second;
        v.loc = loc;
        if (used) used->insert(key);
        return;
      }
    }
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

// ------------------------------------------------------------------ stages
// Each stage reads one part of the manifest into `m`, reporting to the loader's diagnostics.
void parse_build(const Value& top, Loader& L, Manifest& m) {
  const Value* b = top.find("build");
  if (!b || !L.expect(*b, Value::Kind::Table, "[build]")) return;
  L.check_keys(
      *b,
      {"output", "jobs", "threads", "cache", "strict", "executor", "remote_cache", "remote_cache_token_env"},
      "[build]");
  m.executor = L.get_string(*b, "executor", "[build]", false, &m.executor_loc);
  // The remote cache (docs/scale.md): an http(s) URL, and the variable holding its token.
  SourceLoc at;
  m.remote_cache = L.get_string(*b, "remote_cache", "[build]", false, &at);
  if (!m.remote_cache.empty() && m.remote_cache.rfind("http://", 0) != 0 &&
      m.remote_cache.rfind("https://", 0) != 0)
    L.diags_.error(at, "'remote_cache' in [build] must be an http:// or https:// URL, found '" +
                           m.remote_cache + "' (for example \"http://cache.example:8080\")");
  m.remote_cache_token_env = L.get_string(*b, "remote_cache_token_env", "[build]", false, &at);
  if (!m.remote_cache_token_env.empty()) {
    bool ok = !std::isdigit(static_cast<unsigned char>(m.remote_cache_token_env[0]));
    for (char c : m.remote_cache_token_env)
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok)
      L.diags_.error(
          at,
          "'remote_cache_token_env' in [build] must name an environment variable (letters, digits, "
          "'_'), found '" +
              m.remote_cache_token_env + "': the token itself never goes in the manifest");
  }
  if (auto s = L.get_string(*b, "output", "[build]", false); !s.empty()) m.output_dir = absolute_in(m.dir, s);
  if (auto s = L.get_string(*b, "cache", "[build]", false); !s.empty()) m.cache_dir = absolute_in(m.dir, s);
  auto count = [&](const char* key, int& out) {
    const Value* j = b->find(key);
    if (!j || !L.expect(*j, Value::Kind::Int, std::string("'") + key + "' in [build]")) return;
    if (j->i < 1 || j->i > 1024)
      L.diags_.error(j->loc,
                     std::string("'") + key + "' must be between 1 and 1024, found " + std::to_string(j->i));
    else
      out = static_cast<int>(j->i);
  };
  count("jobs", m.jobs);
  count("threads", m.threads);
  if (const Value* st = b->find("strict"); st && L.expect(*st, Value::Kind::Bool, "'strict' in [build]"))
    m.strict = st->b;
}

void parse_path_lists(const Value& top, Loader& L, Manifest& m) {
  // [plugins] paths: plugin files or directories; [profiles] paths: extra
  // profile directories, and [profiles.<id>] tables: profiles of its own.
  const std::pair<const char*, std::vector<std::string>*> sections[] = {{"plugins", &m.plugin_paths},
                                                                        {"profiles", &m.profile_paths}};
  for (const auto& [name, out] : sections) {
    const std::string where = std::string("[") + name + "]";
    const Value* p = top.find(name);
    if (!p || !L.expect(*p, Value::Kind::Table, where)) continue;
    if (out == &m.profile_paths) {
      // [profiles.<id>]: a profile written in the manifest (checked when loaded).
      for (const auto& [k, v] : p->table)
        if (k != "paths" && L.expect(v, Value::Kind::Table, "[profiles." + k + "] (a profile)"))
          m.profiles.emplace_back(k, v);
    } else {
      L.check_keys(*p, {"paths"}, where);
    }
    const Value* paths = p->find("paths");
    if (!paths || !L.expect(*paths, Value::Kind::List, "'paths' in " + where)) continue;
    for (const auto& e : paths->list)
      if (L.expect(e, Value::Kind::String, std::string("a path in ") + where))
        out->push_back(absolute_in(m.dir, e.s));
  }
}

void parse_models(const Value& top, Loader& L, Manifest& m) {
  const Value* ms = top.find("models");
  if (!ms || !L.expect(*ms, Value::Kind::Table, "[models]")) return;
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
        L.diags_.error(ploc, "model file '" + p + "' does not exist (looked for " + d.path + ")");
    }
    m.models[name] = d;
  }
}

// The preprocessing keys of an image dataset (docs/manifest.md, "Image datasets").
std::shared_ptr<ImagePreprocess> parse_preprocess(const Value& v, Loader& L, const std::string& where) {
  auto p = std::make_shared<ImagePreprocess>();
  auto pair = [&](const char* key, int64_t& a, int64_t& b) {
    const Value* x = v.find(key);
    if (!x) return;
    if (x->kind == Value::Kind::Int && x->i > 0) {
      a = b = x->i;
      return;
    }
    if (x->kind == Value::Kind::List && x->list.size() == 2 && x->list[0].kind == Value::Kind::Int &&
        x->list[1].kind == Value::Kind::Int && x->list[0].i > 0 && x->list[1].i > 0) {
      a = x->list[0].i, b = x->list[1].i;
      return;
    }
    L.diags_.error(x->loc, std::string("'") + key + "' in " + where +
                               " must be [height, width] (positive integers) or one size for both, found " +
                               x->display());
  };
  auto choice = [&](const char* key, std::string& out, const std::vector<std::string>& choices) {
    const Value* x = v.find(key);
    if (!x || !L.expect(*x, Value::Kind::String, std::string("'") + key + "' in " + where)) return;
    if (std::find(choices.begin(), choices.end(), x->s) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + ("'" + c + "'");
      L.diags_.error(x->loc, std::string("'") + key + "' in " + where + " cannot be '" + x->s + "'" +
                                 did_you_mean(x->s, choices) + "; choose " + list);
      return;
    }
    out = x->s;
  };
  auto numbers = [&](const char* key, std::vector<double>& out) {
    const Value* x = v.find(key);
    if (!x) return;
    std::vector<Value> items = x->kind == Value::Kind::List ? x->list : std::vector<Value>{*x};
    for (const auto& e : items) {
      if (e.kind != Value::Kind::Int && e.kind != Value::Kind::Float) {
        L.diags_.error(e.loc, std::string("'") + key + "' in " + where +
                                  " must be a number or a list of numbers (one per channel)");
        return;
      }
      out.push_back(e.as_number());
    }
  };
  pair("resize", p->resize_h, p->resize_w);
  if (const Value* x = v.find("resize_shorter");
      x && L.expect(*x, Value::Kind::Int, "'resize_shorter' in " + where)) {
    if (x->i <= 0)
      L.diags_.error(x->loc, "'resize_shorter' in " + where + " must be positive");
    else
      p->resize_shorter = x->i;
  }
  if (p->resize_h > 0 && p->resize_shorter > 0)
    L.diags_.error(v.find("resize_shorter")->loc,
                   "give either 'resize' or 'resize_shorter' in " + where + ", not both");
  pair("center_crop", p->crop_h, p->crop_w);
  choice("interpolation", p->interpolation, {"nearest", "bilinear", "bicubic", "area"});
  choice("channels", p->channels, {"rgb", "bgr", "gray"});
  choice("layout", p->layout, {"nchw", "nhwc"});
  choice("dtype", p->dtype, {"float32", "float16", "uint8"});
  if (const Value* x = v.find("scale"); x && L.expect(*x, Value::Kind::Float, "'scale' in " + where))
    p->scale = x->as_number();
  numbers("mean", p->mean);
  numbers("std", p->std);
  for (double s : p->std)
    if (s == 0) L.diags_.error(v.find("std")->loc, "'std' in " + where + " cannot contain 0");
  const size_t channels = p->channels == "gray" ? 1 : 3;
  for (const auto& [key, list] :
       {std::pair<const char*, const std::vector<double>*>{"mean", &p->mean}, {"std", &p->std}})
    if (list->size() > 1 && list->size() != channels)
      L.diags_.error(v.find(key)->loc,
                     std::string("'") + key + "' in " + where + " has " + std::to_string(list->size()) +
                         " values; give one, or one per channel (" + std::to_string(channels) + ")");
  if (const Value* x = v.find("batch"); x && L.expect(*x, Value::Kind::Bool, "'batch' in " + where))
    p->batch = x->b;
  if (p->dtype == "uint8" && (v.find("scale") || v.find("mean") || v.find("std")))
    L.diags_.error(v.loc,
                   where + ": dtype 'uint8' keeps raw pixel values; 'scale', 'mean' and 'std' do not apply");
  return p;
}

void parse_datasets(const Value& top, Loader& L, Manifest& m) {
  const Value* ds = top.find("datasets");
  if (!ds || !L.expect(*ds, Value::Kind::Table, "[datasets]")) return;
  for (const auto& [name, v] : ds->table) {
    std::string where = "[datasets." + name + "]";
    if (!L.expect(v, Value::Kind::Table, where)) continue;
    const bool images = v.find("images") != nullptr;
    if (images)
      L.check_keys(v,
                   {"images", "input", "resize", "resize_shorter", "interpolation", "center_crop", "channels",
                    "layout", "scale", "mean", "std", "dtype", "batch"},
                   where);
    else
      L.check_keys(v, {"files", "input"}, where);
    DatasetDecl d;
    d.name = name;
    d.loc = v.loc;
    d.input = L.get_string(v, "input", where, false);
    if (images && v.find("files"))
      L.diags_.error(v.find("files")->loc,
                     where + " has both 'files' and 'images': an image dataset lists its images only");
    const char* key = images ? "images" : "files";
    const Value* files = v.find(key);
    if (!files) {
      L.diags_.error(
          v.loc,
          where +
              " needs 'files' (a list of .npy/.npz/.pb paths or glob patterns) or 'images' (image files)");
    } else if (L.expect(*files, Value::Kind::List, "'" + std::string(key) + "' in " + where)) {
      for (const auto& f : files->list) {
        if (!L.expect(f, Value::Kind::String, "a dataset file pattern")) continue;
        d.patterns.push_back(f.s);
        auto found = expand_glob(absolute_in(m.dir, f.s));
        if (found.empty()) L.diags_.error(f.loc, "'" + f.s + "' matches no file");
        d.files.insert(d.files.end(), found.begin(), found.end());
      }
      std::sort(d.files.begin(), d.files.end());
      d.files.erase(std::unique(d.files.begin(), d.files.end()), d.files.end());
    }
    if (images) d.images = parse_preprocess(v, L, where);
    m.datasets[name] = d;
  }
}

// The variants of a target: the cartesian product of its matrix (first key
// outermost), each a list of (key, value). Empty on error.
std::vector<Vars> expand_matrix(const Value& t, Loader& L) {
  std::vector<std::pair<std::string, std::vector<Value>>> axes;
  if (const Value* mx = t.find("matrix"); mx && L.expect(*mx, Value::Kind::Table, "'matrix'")) {
    for (const auto& [k, vals] : mx->table) {
      if (!L.expect(vals, Value::Kind::List, "matrix '" + k + "'")) continue;
      std::vector<Value> values;
      for (const auto& e : vals.list) {
        if (e.kind == Value::Kind::String || e.kind == Value::Kind::Int || e.kind == Value::Kind::Float ||
            e.kind == Value::Kind::Bool)
          values.push_back(e);
        else
          L.diags_.error(e.loc, "matrix values must be strings, integers, floats or booleans, found " +
                                    std::string(toml_kind(e)));
      }
      if (values.empty()) L.diags_.error(vals.loc, "matrix '" + k + "' is empty: give at least one value");
      axes.emplace_back(k, values);
    }
  }
  uint64_t product = 1;
  for (const auto& [k, vals] : axes)
    product = std::min<uint64_t>(product * std::max<size_t>(vals.size(), 1), kMaxVariants + 1);
  if (product > kMaxVariants) {
    L.diags_.error(t.find("matrix")->loc, "this matrix makes more than " + std::to_string(kMaxVariants) +
                                              " variants; split the target or shorten its lists");
    return {};
  }
  std::vector<Vars> combos{{}};
  for (const auto& [k, vals] : axes) {
    std::vector<Vars> next;
    for (const auto& c : combos)
      for (const auto& v : vals) {
        auto n = c;
        n.emplace_back(k, v);
        next.push_back(n);
      }
    combos = next;
  }
  return combos;
}

// A string field of a target with placeholders substituted ("" when absent).
std::string target_string(const Value& t, const char* key, const Vars& vars, Loader& L, Diagnostics& dd,
                          std::set<std::string>& used, bool first, SourceLoc* loc) {
  const Value* v = t.find(key);
  if (!v) return {};
  if (v->kind != Value::Kind::String) {
    if (first) L.expect(*v, Value::Kind::String, std::string("'") + key + "'");
    return {};
  }
  if (loc) *loc = v->loc;
  return substitute(v->s, vars, v->loc, dd, &used);
}

// One pipeline step of one variant. False when the step is malformed (reported once, for the first variant).
bool parse_step(const Value& step, const Vars& vars, Loader& L, Diagnostics& dd, std::set<std::string>& used,
                bool first, StepDecl& s) {
  if (step.kind != Value::Kind::Table) {
    if (first) L.expect(step, Value::Kind::Table, "a pipeline step");
    return false;
  }
  s.loc = step.loc;
  const Value* pass = step.find("pass");
  if (!pass || pass->kind != Value::Kind::String) {
    if (first)
      L.diags_.error(step.loc, pass ? "'pass' must be a string, found " + std::string(toml_kind(*pass))
                                    : "a pipeline step needs 'pass' (e.g. { pass = \"quantize-static\" })");
    return false;
  }
  s.pass = substitute(pass->s, vars, pass->loc, dd, &used);
  s.loc = pass->loc;
  for (size_t oi = 0; oi < step.table.size(); ++oi) {
    const auto& [k, v] = step.table[oi];
    const SourceLoc kloc = oi < step.key_locs.size() ? step.key_locs[oi] : v.loc;
    if (k == "pass") continue;
    if (k == "id") {
      if (v.kind == Value::Kind::String)
        s.id = substitute(v.s, vars, v.loc, dd, &used);
      else if (first)
        L.expect(v, Value::Kind::String, "'id'");
      continue;
    }
    if (k == "inputs") {
      // "step" (this target) or "target/step"; the last '/' separates them.
      if (v.kind != Value::Kind::List) {
        if (first)
          L.diags_.error(v.loc,
                         "'inputs' must be a list of step references such as [\"calibrate\"] or "
                         "[\"other-target/calibrate\"]");
        continue;
      }
      for (const auto& e : v.list) {
        if (e.kind != Value::Kind::String) {
          if (first) L.expect(e, Value::Kind::String, "a step reference");
          continue;
        }
        std::string ref = substitute(e.s, vars, e.loc, dd, &used);
        StepRef r;
        r.loc = e.loc;
        const size_t slash = ref.rfind('/');
        if (slash == std::string::npos)
          r.step = ref;
        else
          r.target = ref.substr(0, slash), r.step = ref.substr(slash + 1);
        if (r.step.empty() && first) L.diags_.error(e.loc, "step reference '" + ref + "' names no step");
        s.inputs.push_back(r);
      }
      continue;
    }
    Value vv = v;
    substitute_value(vv, vars, dd, &used);
    s.options[k] = vv;
    s.option_locs[k] = kloc;
  }
  return true;
}

void parse_targets(const Value& top, Loader& L, Manifest& m, const std::string& path) {
  Diagnostics& diags = L.diags_;
  const Value* ts = top.find("targets");
  if (!ts) {
    diags.error({path, 1, 1}, "the manifest declares no [[targets]]");
    return;
  }
  if (!L.expect(*ts, Value::Kind::List, "[[targets]]")) return;
  std::set<std::string> names;
  std::vector<std::string> model_names;
  for (const auto& kv : m.models) model_names.push_back(kv.first);
  for (const auto& t : ts->list) {
    if (!L.expect(t, Value::Kind::Table, "a target")) continue;
    L.check_keys(t, {"name", "model", "matrix", "profile", "pipeline", "emit", "output"}, "a target");
    const std::vector<Vars> combos = expand_matrix(t, L);
    const size_t errors_before = diags.error_count();
    for (size_t ci = 0; ci < combos.size(); ++ci) {
      const Vars& vars = combos[ci];
      const bool first = ci == 0;
      // Report placeholder errors once per target, not once per variant.
      Diagnostics scratch;
      Diagnostics& dd = first ? diags : scratch;
      std::set<std::string> used;
      TargetDecl d;
      d.loc = t.loc;
      d.matrix = vars;
      SourceLoc nloc = t.loc;
      if (!t.find("name") && first) diags.error(t.loc, "a target needs 'name'");
      if (!t.find("model") && first) diags.error(t.loc, "a target needs 'model'");
      d.name = target_string(t, "name", vars, L, dd, used, first, &nloc);
      d.model = target_string(t, "model", vars, L, dd, used, first, &d.model_loc);
      d.profile = target_string(t, "profile", vars, L, dd, used, first, &d.profile_loc);
      d.emit = target_string(t, "emit", vars, L, dd, used, first, &d.emit_loc);
      SourceLoc oloc;
      if (std::string out = target_string(t, "output", vars, L, dd, used, first, &oloc); !out.empty())
        d.output = absolute_in(m.dir, out);
      const Value* pl = t.find("pipeline");
      if (pl && pl->kind == Value::Kind::List) {
        for (const auto& step : pl->list) {
          StepDecl s;
          if (parse_step(step, vars, L, dd, used, first, s)) d.pipeline.push_back(std::move(s));
        }
      } else if (pl && first) {
        L.expect(*pl, Value::Kind::List, "'pipeline'");
      }
      if (first)
        for (const auto& [k, v] : vars)
          if (!used.count(k))
            diags.warning(
                t.find("matrix")->find(k)->loc,
                "matrix key '" + k + "' is used nowhere in this target: every variant would be the same");
      // The model is checked per variant: `model = "{m}"` names a different one each time.
      const Value* raw_model = t.find("model");
      const bool varies = raw_model && raw_model->kind == Value::Kind::String && raw_model->s != d.model;
      if (!d.model.empty() && !m.models.count(d.model) && (first || varies) &&
          d.model.find('{') == std::string::npos) {
        diags.error(d.model_loc,
                    "unknown model '" + d.model + "'" + (varies ? " (in variant '" + d.name + "')" : "") +
                        did_you_mean(d.model, model_names) +
                        (model_names.empty() ? " (declare it under [models." + d.model + "])" : ""));
      }
      if (!d.name.empty() && !names.insert(d.name).second && diags.error_count() == errors_before)
        diags.error(nloc, "two targets are named '" + d.name +
                              "': give each variant a unique name (use a {key} from the matrix)");
      m.targets.push_back(std::move(d));
    }
  }
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
  parse_build(top, L, m);
  parse_path_lists(top, L, m);
  parse_models(top, L, m);
  parse_datasets(top, L, m);
  parse_targets(top, L, m, path);
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
