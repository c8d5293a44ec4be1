// Hardware profiles: loading, `extends`, and the [onnx]/[gguf] constraints
// turned into the passes' allowed values (qforge/profile.h,
// docs/manifest.md "Hardware profiles").
#include "qforge/profile.h"

#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "qforge/hash.h"
#include "qforge/manifest.h"
#include "qforge/pass.h"
#include "toml_value.h"

namespace fs = std::filesystem;

namespace qforge {

uint64_t MemorySpec::bytes() const {
  if (budget) return budget;
  if (!ram) return 0;
  const double b = std::floor(static_cast<double>(ram) * usable) - static_cast<double>(reserve);
  return b > 0 ? static_cast<uint64_t>(b) : 0;
}

const Value* Profile::allowed_values(const std::string& pass, const std::string& option) const {
  auto it = allowed.find(pass);
  if (it == allowed.end()) return nullptr;
  auto jt = it->second.find(option);
  return jt == it->second.end() ? nullptr : &jt->second;
}

namespace {

// Tables merge key by key (the child's value wins); anything else is replaced.
Value merged(const Value& parent, const Value& child) {
  if (parent.kind != Value::Kind::Table || child.kind != Value::Kind::Table) return child;
  Value out = parent;
  for (size_t i = 0; i < child.table.size(); ++i) {
    const auto& [k, v] = child.table[i];
    auto it = std::find_if(out.table.begin(), out.table.end(), [&](const auto& kv) { return kv.first == k; });
    if (it == out.table.end()) {
      out.table.emplace_back(k, v);
      out.key_locs.push_back(i < child.key_locs.size() ? child.key_locs[i] : v.loc);
    } else {
      it->second = merged(it->second, v);
    }
  }
  out.loc = child.loc;
  return out;
}

// Keys a profile does not inherit from the one it extends.
Value inheritable(Value v) {
  std::vector<std::pair<std::string, Value>> kept;
  std::vector<SourceLoc> locs;
  for (size_t i = 0; i < v.table.size(); ++i) {
    const std::string& k = v.table[i].first;
    if (k == "name" || k == "aliases" || k == "extends") continue;
    kept.push_back(v.table[i]);
    if (i < v.key_locs.size()) locs.push_back(v.key_locs[i]);
  }
  v.table = std::move(kept);
  v.key_locs = std::move(locs);
  return v;
}

// Typed readers for the structured sections; each reports a located error
// and returns false on a wrong type.
struct Reader {
  Diagnostics& diags;
  std::string where;  // "[onnx]"

  bool string(const Value& v, const std::string& key, std::string& out) {
    if (v.kind != Value::Kind::String) {
      diags.error(v.loc, "'" + key + "' in " + where + " must be a string, found " + v.display());
      return false;
    }
    out = v.s;
    return true;
  }
  bool strings(const Value& v, const std::string& key, std::vector<std::string>& out,
               const std::vector<std::string>& choices = {}) {
    if (v.kind != Value::Kind::List) {
      diags.error(v.loc, "'" + key + "' in " + where + " must be a list of strings, found " + v.display());
      return false;
    }
    out.clear();
    bool ok = true;
    for (const auto& e : v.list) {
      if (e.kind != Value::Kind::String) {
        diags.error(e.loc, "'" + key + "' in " + where + " must list strings, found " + e.display());
        ok = false;
      } else if (!choices.empty() && std::find(choices.begin(), choices.end(), e.s) == choices.end()) {
        std::string list;
        for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
        diags.error(e.loc, "'" + e.s + "' is not a valid item of '" + key + "' in " + where + " (one of " +
                               list + ")" + did_you_mean(e.s, choices));
        ok = false;
      } else {
        out.push_back(e.s);
      }
    }
    return ok;
  }
  bool boolean(const Value& v, const std::string& key, bool& out) {
    if (v.kind != Value::Kind::Bool) {
      diags.error(v.loc, "'" + key + "' in " + where + " must be true or false, found " + v.display());
      return false;
    }
    out = v.b;
    return true;
  }
  bool number(const Value& v, const std::string& key, double& out, double lo, double hi) {
    if ((v.kind != Value::Kind::Int && v.kind != Value::Kind::Float) || v.as_number() < lo ||
        v.as_number() > hi) {
      diags.error(v.loc, "'" + key + "' in " + where + " must be a number from " +
                             Value::of_float(lo).display() + " to " + Value::of_float(hi).display() +
                             ", found " + v.display());
      return false;
    }
    out = v.as_number();
    return true;
  }
  bool bytes(const Value& v, const std::string& key, uint64_t& out) {
    SizeValue sv;
    if (v.kind == Value::Kind::Int && v.i > 0) {
      out = static_cast<uint64_t>(v.i);
      return true;
    }
    if (v.kind != Value::Kind::String || !parse_size(v.s, sv) || sv.unit != SizeValue::Unit::Bytes) {
      diags.error(v.loc, "'" + key + "' in " + where +
                             " must be a size in bytes (\"4GiB\", \"512MB\", 123456), found " + v.display());
      return false;
    }
    out = static_cast<uint64_t>(sv.value);
    return true;
  }
  void unknown(const Value& table, const std::vector<std::string>& keys) {
    for (size_t i = 0; i < table.table.size(); ++i) {
      const std::string& k = table.table[i].first;
      if (std::find(keys.begin(), keys.end(), k) != keys.end()) continue;
      const SourceLoc loc = i < table.key_locs.size() ? table.key_locs[i] : table.table[i].second.loc;
      diags.error(loc, "unknown key '" + k + "' in " + where + did_you_mean(k, keys));
    }
  }
};

const std::vector<std::string> kActivationTypes = {"uint8", "int8", "uint16", "int16"};
const std::vector<std::string> kWeightTypes = {"uint8", "int8", "uint4", "int4", "uint16", "int16"};

void parse_memory(const Value& v, Profile& p, Diagnostics& diags) {
  Reader r{diags, "[memory] of profile '" + p.name + "'"};
  if (v.kind != Value::Kind::Table) return (void)diags.error(v.loc, "[memory] must be a table");
  r.unknown(v, {"budget", "ram", "usable", "reserve"});
  MemorySpec& m = p.memory;
  m.loc = v.loc;
  if (const Value* b = v.find("budget")) r.bytes(*b, "budget", m.budget);
  if (const Value* b = v.find("ram")) r.bytes(*b, "ram", m.ram);
  if (const Value* b = v.find("usable")) r.number(*b, "usable", m.usable, 0.01, 1.0);
  if (const Value* b = v.find("reserve")) r.bytes(*b, "reserve", m.reserve);
  if (m.budget && m.ram)
    diags.error(v.loc, "[memory] of profile '" + p.name + "' sets both 'budget' and 'ram': give one");
  if ((v.find("usable") || v.find("reserve")) && !m.ram)
    diags.error(v.loc, "[memory] of profile '" + p.name + "': 'usable' and 'reserve' need 'ram'");
  if (m.ram && !m.bytes())
    diags.error(v.loc, "[memory] of profile '" + p.name + "': the reserve leaves no memory for the model");
}

void parse_fidelity(const Value& v, Profile& p, Diagnostics& diags) {
  Reader r{diags, "[fidelity] of profile '" + p.name + "'"};
  if (v.kind != Value::Kind::Table) return (void)diags.error(v.loc, "[fidelity] must be a table");
  r.unknown(v, {"min_cosine", "min_sqnr_db"});
  p.fidelity.loc = v.loc;
  double x = 0;
  if (const Value* b = v.find("min_cosine"); b && r.number(*b, "min_cosine", x, -1.0, 1.0))
    p.fidelity.min_cosine = x;
  if (const Value* b = v.find("min_sqnr_db"); b && r.number(*b, "min_sqnr_db", x, -100.0, 300.0))
    p.fidelity.min_sqnr_db = x;
}

void parse_onnx(const Value& v, Profile& p, Diagnostics& diags) {
  Reader r{diags, "[onnx] of profile '" + p.name + "'"};
  if (v.kind != Value::Kind::Table) return (void)diags.error(v.loc, "[onnx] must be a table");
  r.unknown(v, {"min_opset", "activation_types", "weight_types", "pairs", "symmetric_activations",
                "symmetric_weights", "zero_point_zero", "per_channel", "per_channel_ops", "formats",
                "quantized_ops", "shared_scale_ops", "fixed_outputs", "block_sizes"});
  OnnxSpec& o = p.onnx;
  o.present = true;
  o.loc = v.loc;
  double x = 0;
  if (const Value* e = v.find("min_opset"); e && r.number(*e, "min_opset", x, 1, 30))
    o.min_opset = static_cast<int>(x);
  if (const Value* e = v.find("activation_types"))
    r.strings(*e, "activation_types", o.activation_types, kActivationTypes);
  if (const Value* e = v.find("weight_types")) r.strings(*e, "weight_types", o.weight_types, kWeightTypes);
  if (const Value* e = v.find("pairs")) {
    std::vector<std::string> pairs;
    if (r.strings(*e, "pairs", pairs))
      for (size_t i = 0; i < pairs.size(); ++i) {
        const auto colon = pairs[i].find(':');
        const std::string a = pairs[i].substr(0, colon),
                          w = colon == std::string::npos ? "" : pairs[i].substr(colon + 1);
        if (colon == std::string::npos ||
            std::find(kActivationTypes.begin(), kActivationTypes.end(), a) == kActivationTypes.end() ||
            std::find(kWeightTypes.begin(), kWeightTypes.end(), w) == kWeightTypes.end()) {
          diags.error(e->list[i].loc, "'" + pairs[i] + "' in 'pairs' of [onnx] of profile '" + p.name +
                                          "' must be ACTIVATION:WEIGHT, e.g. \"uint16:uint8\"");
          continue;
        }
        o.pairs.emplace_back(a, w);
      }
  }
  if (const Value* e = v.find("symmetric_activations"))
    r.boolean(*e, "symmetric_activations", o.symmetric_activations);
  if (const Value* e = v.find("symmetric_weights")) r.boolean(*e, "symmetric_weights", o.symmetric_weights);
  if (const Value* e = v.find("zero_point_zero")) r.boolean(*e, "zero_point_zero", o.zero_point_zero);
  bool pc = false;
  if (const Value* e = v.find("per_channel"); e && r.boolean(*e, "per_channel", pc)) o.per_channel = pc;
  if (const Value* e = v.find("per_channel_ops")) r.strings(*e, "per_channel_ops", o.per_channel_ops);
  if (const Value* e = v.find("formats")) r.strings(*e, "formats", o.formats, {"qdq", "qoperator"});
  if (const Value* e = v.find("quantized_ops")) r.strings(*e, "quantized_ops", o.quantized_ops);
  if (const Value* e = v.find("shared_scale_ops")) r.strings(*e, "shared_scale_ops", o.shared_scale_ops);
  if (const Value* e = v.find("fixed_outputs")) {
    // ["Sigmoid=0:1", "Tanh=-1:1"]: a set (one entry per op), written as a list.
    std::vector<std::string> items;
    if (r.strings(*e, "fixed_outputs", items))
      for (size_t i = 0; i < items.size(); ++i) {
        const auto eq = items[i].find('='), colon = items[i].rfind(':');
        char* end1 = nullptr;
        char* end2 = nullptr;
        double lo = 0, hi = 0;
        bool ok = eq != std::string::npos && colon != std::string::npos && colon > eq;
        if (ok) {
          const std::string a = items[i].substr(eq + 1, colon - eq - 1), b = items[i].substr(colon + 1);
          lo = std::strtod(a.c_str(), &end1);
          hi = std::strtod(b.c_str(), &end2);
          ok = !a.empty() && !b.empty() && *end1 == 0 && *end2 == 0 && lo < hi;
        }
        if (!ok) {
          diags.error(e->list[i].loc, "'" + items[i] + "' in 'fixed_outputs' of [onnx] of profile '" +
                                          p.name +
                                          "' must be OP=MIN:MAX with MIN < MAX, e.g. \"Sigmoid=0:1\"");
          continue;
        }
        o.fixed_outputs[items[i].substr(0, eq)] = {lo, hi};
      }
  }
  if (const Value* e = v.find("block_sizes")) {
    if (e->kind != Value::Kind::List) {
      diags.error(e->loc, "'block_sizes' in [onnx] of profile '" + p.name + "' must be a list of integers");
    } else {
      for (const auto& b : e->list) {
        if (b.kind != Value::Kind::Int || b.i < 16 || (b.i & (b.i - 1)) != 0)
          diags.error(b.loc, "a block size must be a power of two of at least 16, found " + b.display());
        else
          o.block_sizes.push_back(b.i);
      }
    }
  }
  // Consistency: what the profile says must be satisfiable.
  auto listed = [](const std::vector<std::string>& l, const std::string& s) {
    return l.empty() || std::find(l.begin(), l.end(), s) != l.end();
  };
  for (const auto& [a, w] : o.pairs)
    if (!listed(o.activation_types, a) || !listed(o.weight_types, w))
      diags.error(v.find("pairs")->loc, "pair '" + a + ":" + w + "' in [onnx] of profile '" + p.name +
                                            "' uses a type its activation_types / weight_types do not list");
  if (o.zero_point_zero)
    for (const auto& t : o.activation_types)
      if (t[0] == 'u')
        diags.error(v.find("activation_types")->loc,
                    "profile '" + p.name + "' has zero_point_zero but lists the unsigned activation type '" +
                        t + "': a symmetric unsigned code has its zero point at the middle, not 0");
}

void parse_gguf(const Value& v, Profile& p, Diagnostics& diags) {
  Reader r{diags, "[gguf] of profile '" + p.name + "'"};
  if (v.kind != Value::Kind::Table) return (void)diags.error(v.loc, "[gguf] must be a table");
  r.unknown(v, {"fast_types", "row_multiple"});
  p.gguf.present = true;
  p.gguf.loc = v.loc;
  if (const Value* e = v.find("fast_types")) r.strings(*e, "fast_types", p.gguf.fast_types);
  double x = 0;
  if (const Value* e = v.find("row_multiple"); e && r.number(*e, "row_multiple", x, 1, 4096))
    p.gguf.row_multiple = static_cast<int64_t>(x);
}

Value string_list(const std::vector<std::string>& items, const SourceLoc& loc) {
  Value v;
  v.kind = Value::Kind::List;
  v.loc = loc;
  for (const auto& s : items) {
    Value e = Value::of_string(s);
    e.loc = loc;
    v.list.push_back(e);
  }
  return v;
}

Value bool_list(bool b, const SourceLoc& loc) {
  Value v;
  v.kind = Value::Kind::List;
  v.loc = loc;
  Value e = Value::of_bool(b);
  e.loc = loc;
  v.list.push_back(e);
  return v;
}

// select-precision reads the profile through its options, so that the profile's
// part is in the step's key: [gguf] fast_types become its candidate `types` (the
// default, and the only values allowed), the [memory] budget its default
// `budget`, and for ONNX profiles the [fidelity] floor its default
// `min_cosine` / `min_sqnr_db`. All are derived: a registry without the pass
// ignores them.
void derive_select_precision(Profile& p) {
  const std::string pass = "select-precision";
  if (p.gguf.present && !p.gguf.fast_types.empty()) {
    const Value list = string_list(p.gguf.fast_types, p.gguf.loc);
    if (!p.allowed[pass].count("types")) {
      p.allowed[pass]["types"] = list;
      p.derived.insert({pass, "types"});
    }
    if (!p.defaults[pass].count("types")) {
      p.defaults[pass]["types"] = list;
      p.derived.insert({pass, "types"});
    }
  }
  if (const uint64_t b = p.memory.bytes(); b && !p.defaults[pass].count("budget")) {
    Value v = Value::of_string(std::to_string(b));
    v.loc = p.memory.loc;
    p.defaults[pass]["budget"] = v;
    p.derived.insert({pass, "budget"});
  }
  // [fidelity]: the floor an ONNX search keeps unless the step sets one. (For
  // GGUF, min_cosine / min_sqnr_db filter each tensor's candidate types by its
  // weights' fidelity, another quantity: the floor is not derived there.)
  if (p.onnx.present) {
    auto floor = [&](const char* opt, const std::optional<double>& v) {
      if (!v || p.defaults[pass].count(opt)) return;
      Value x = Value::of_float(*v);
      x.loc = p.fidelity.loc;
      p.defaults[pass][opt] = x;
      p.derived.insert({pass, opt});
    };
    floor("min_cosine", p.fidelity.min_cosine);
    floor("min_sqnr_db", p.fidelity.min_sqnr_db);
  }
  // The ONNX half: what a widened node may take (a 16-bit activation type
  // [onnx] allows with an 8-bit weight type, else float), and quantize-static's
  // defaults for the quantization options the search mirrors.
  if (p.onnx.present && !p.onnx.activation_types.empty()) {
    std::vector<std::string> wide;
    for (const std::string t : {"uint16", "int16"}) {
      const auto& at = p.onnx.activation_types;
      if (std::find(at.begin(), at.end(), t) == at.end()) continue;
      bool paired = p.onnx.pairs.empty();
      for (const auto& [a, w] : p.onnx.pairs) paired = paired || (a == t && (w == "uint8" || w == "int8"));
      if (paired) wide.push_back(t);
    }
    wide.push_back("float");
    if (!p.allowed[pass].count("widen_to")) {
      p.allowed[pass]["widen_to"] = string_list(wide, p.onnx.loc);
      p.derived.insert({pass, "widen_to"});
    }
    if (!p.defaults[pass].count("widen_to")) {
      Value v = Value::of_string(wide.front());
      v.loc = p.onnx.loc;
      p.defaults[pass]["widen_to"] = v;
      p.derived.insert({pass, "widen_to"});
    }
  }
  if (auto qs = p.defaults.find("quantize-static"); qs != p.defaults.end())
    for (const char* o :
         {"activation_type", "weight_type", "per_channel", "activation_symmetric", "weight_symmetric",
          "qdq_domain", "per_channel_ops", "shared_scale_ops", "fixed_outputs"})
      if (auto it = qs->second.find(o); it != qs->second.end() && !p.defaults[pass].count(o)) {
        p.defaults[pass][o] = it->second;
        p.derived.insert({pass, o});
      }
  if (auto qs = p.allowed.find("quantize-static"); qs != p.allowed.end())
    if (auto it = qs->second.find("per_channel_ops");
        it != qs->second.end() && !p.defaults[pass].count(it->first)) {
      p.defaults[pass][it->first] = it->second;
      p.derived.insert({pass, it->first});
    }
  if (p.allowed.count(pass) && p.allowed[pass].empty()) p.allowed.erase(pass);
  if (p.defaults.count(pass) && p.defaults[pass].empty()) p.defaults.erase(pass);
}

// The [onnx] constraints as the passes' allowed values. A profile's own
// [allow.<pass>] entry for the same option wins (it is written on purpose).
void derive_allowed(Profile& p) {
  auto allow = [&](const std::string& pass, const std::string& option, Value list) {
    if (list.list.empty()) return;
    auto& slot = p.allowed[pass];
    if (slot.count(option)) return;
    slot[option] = std::move(list);
    p.derived.insert({pass, option});
  };
  const OnnxSpec& o = p.onnx;
  if (!o.present) return;
  const SourceLoc at = o.loc;
  allow("quantize-static", "activation_type", string_list(o.activation_types, at));
  allow("quantize-static", "weight_type", string_list(o.weight_types, at));
  // quantize-dynamic takes 8-bit weights, quantize-weights a bit width.
  std::vector<std::string> w8;
  std::set<int64_t> bits;
  for (const auto& w : o.weight_types) {
    if (w == "int8" || w == "uint8") w8.push_back(w), bits.insert(8);
    if (w == "int4" || w == "uint4") bits.insert(4);
  }
  if (!o.weight_types.empty()) {
    if (w8.empty()) {
      // No 8-bit weights: dynamic quantization cannot run on this runtime.
      Value none;
      none.kind = Value::Kind::List;
      none.loc = at;
      if (!p.allowed["quantize-dynamic"].count("weight_type")) {
        p.allowed["quantize-dynamic"]["weight_type"] = none;
        p.derived.insert({"quantize-dynamic", "weight_type"});
      }
    } else {
      allow("quantize-dynamic", "weight_type", string_list(w8, at));
    }
    Value b;
    b.kind = Value::Kind::List;
    b.loc = at;
    for (int64_t x : bits) {
      Value e = Value::of_int(x);
      e.loc = at;
      b.list.push_back(e);
    }
    allow("quantize-weights", "bits", b);
  }
  allow("quantize-static", "format", string_list(o.formats, at));
  if (!o.block_sizes.empty()) {
    Value b;
    b.kind = Value::Kind::List;
    b.loc = at;
    for (int64_t x : o.block_sizes) {
      Value e = Value::of_int(x);
      e.loc = at;
      b.list.push_back(e);
    }
    allow("quantize-weights", "block_size", b);
  }
  if (o.symmetric_activations || o.zero_point_zero)
    allow("quantize-static", "activation_symmetric", bool_list(true, at));
  if (o.symmetric_weights || o.zero_point_zero) {
    allow("quantize-static", "weight_symmetric", bool_list(true, at));
    allow("quantize-weights", "symmetric", bool_list(true, at));
    allow("quantize-dynamic", "symmetric", bool_list(true, at));
  }
  if (o.per_channel && !*o.per_channel) {
    allow("quantize-static", "per_channel", bool_list(false, at));
    allow("quantize-dynamic", "per_channel", bool_list(false, at));
  }
  if (!o.quantized_ops.empty()) allow("quantize-static", "op_types", string_list(o.quantized_ops, at));
  // Per-channel weights only where the runtime takes them; shared scales and
  // fixed output ranges as quantize-static's defaults (check_artifact verifies
  // the artifact keeps them).
  allow("quantize-static", "per_channel_ops", string_list(o.per_channel_ops, at));
  auto dflt = [&](const std::string& option, Value list) {
    auto& slot = p.defaults["quantize-static"];
    if (list.list.empty() || slot.count(option)) return;
    slot[option] = std::move(list);
    p.derived.insert({"quantize-static", option});
  };
  dflt("shared_scale_ops", string_list(o.shared_scale_ops, at));
  std::vector<std::string> fixed;
  for (const auto& [op, r] : o.fixed_outputs) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s=%.9g:%.9g", op.c_str(), r.first, r.second);
    fixed.push_back(buf);
  }
  dflt("fixed_outputs", string_list(fixed, at));
  if (!o.pairs.empty()) {
    Combinations c;
    c.options = {"activation_type", "weight_type"};
    c.loc = at;
    for (const auto& [a, w] : o.pairs) c.tuples.push_back({a, w});
    p.combinations["quantize-static"].push_back(std::move(c));
  }
}

// A profile from its merged table.
Profile parse_profile(const std::string& name, const Value& top, Diagnostics& diags) {
  Profile p;
  p.name = name;
  p.properties.kind = Value::Kind::Table;
  const std::string who = "profile '" + name + "'";
  Reader r{diags, who};
  for (const auto& [k, v] : top.table) {
    if (k == "name") {
      // checked by the loader against the file name
    } else if (k == "description") {
      r.string(v, k, p.description);
    } else if (k == "backend") {
      r.string(v, k, p.backend);
    } else if (k == "format") {
      if (r.string(v, k, p.format) && p.format != "onnx" && p.format != "gguf")
        diags.error(v.loc, who + ": 'format' must be \"onnx\" or \"gguf\", found " + v.display());
    } else if (k == "extends") {
      r.string(v, k, p.extends);
    } else if (k == "aliases") {
      r.strings(v, k, p.aliases);
    } else if (k == "docs") {
      r.strings(v, k, p.docs);
    } else if (k == "optional_passes") {
      r.strings(v, k, p.optional_passes);
    } else if (k == "memory") {
      parse_memory(v, p, diags);
    } else if (k == "fidelity") {
      parse_fidelity(v, p, diags);
    } else if (k == "onnx") {
      parse_onnx(v, p, diags);
    } else if (k == "gguf") {
      parse_gguf(v, p, diags);
    } else if (k == "defaults" || k == "allow") {
      if (v.kind != Value::Kind::Table) {
        diags.error(v.loc, "'" + k + "' must be a table of [" + k + ".<pass>] tables");
        continue;
      }
      for (const auto& [pass, opts] : v.table) {
        if (!p.pass_locs.count(pass)) p.pass_locs[pass] = opts.loc;
        if (opts.kind != Value::Kind::Table) {
          diags.error(opts.loc, "[" + k + "." + pass + "] must be a table of options");
          continue;
        }
        for (const auto& [opt, val] : opts.table) {
          if (k == "defaults")
            p.defaults[pass][opt] = val;
          else if (val.kind != Value::Kind::List)
            diags.error(val.loc, "[allow." + pass + "] " + opt + " must list the allowed values");
          else
            p.allowed[pass][opt] = val;
        }
      }
    } else {
      p.properties.table.emplace_back(k, v);
    }
  }
  derive_allowed(p);
  derive_select_precision(p);
  return p;
}

}  // namespace

std::optional<ProfileSet::Raw> ProfileSet::read_file(const std::string& path, Diagnostics& diags) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diags.error({path, 0, 0}, "cannot read the profile");
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    diags.error(
        {path, static_cast<uint32_t>(e.source().begin.line), static_cast<uint32_t>(e.source().begin.column)},
        "invalid TOML in profile: " + std::string(e.description()));
    return std::nullopt;
  }
  Raw raw{fs::path(path).stem().string(), path, hash_bytes(text.data(), text.size()).hex(),
          toml_to_value(root, path)};
  raw.top.loc = {path, 1, 1};
  if (const Value* n = raw.top.find("name")) {
    if (n->kind != Value::Kind::String)
      diags.error(n->loc, "profile 'name' must be a string");
    else if (n->s != raw.name)
      diags.error(n->loc, "profile name '" + n->s + "' differs from its file name '" + raw.name + ".toml'");
  }
  return raw;
}

void ProfileSet::load_file(const std::string& path, Diagnostics& diags) {
  if (auto raw = read_file(path, diags)) add({std::move(*raw)}, diags);
}

void ProfileSet::load_dir(const std::string& dir, Diagnostics& diags) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".toml") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  // Read every file first, so that a profile may extend one read after it.
  std::vector<Raw> batch;
  for (const auto& f : files)
    if (auto raw = read_file(f, diags)) batch.push_back(std::move(*raw));
  add(std::move(batch), diags);
}

void ProfileSet::load_value(const std::string& name, const Value& table, const std::string& manifest_path,
                            Diagnostics& diags) {
  if (table.kind != Value::Kind::Table) {
    diags.error(table.loc, "[profiles." + name + "] must be a table (a profile)");
    return;
  }
  if (const Value* n = table.find("name"); n && (n->kind != Value::Kind::String || n->s != name))
    diags.error(n->loc,
                "profile name " + n->display() + " differs from its table name [profiles." + name + "]");
  const std::string c = table.canonical();
  add({Raw{name, manifest_path, hash_bytes(c.data(), c.size()).hex(), table}}, diags);
}

void ProfileSet::load_manifest(const Manifest& m, Diagnostics& diags) {
  for (const auto& d : m.profile_paths) load_dir(d, diags);
  for (const auto& [name, table] : m.profiles) load_value(name, table, m.path, diags);
}

void ProfileSet::add(std::vector<Raw> batch, Diagnostics& diags) {
  std::map<std::string, Raw> pending;
  std::vector<std::string> order;
  for (auto& r : batch) {
    order.push_back(r.name);
    pending[r.name] = std::move(r);
  }
  for (const auto& n : order) {
    std::vector<std::string> stack;
    if (pending.count(n)) resolve(n, pending, stack, diags);
  }
}

bool ProfileSet::resolve(const std::string& name, std::map<std::string, Raw>& pending,
                         std::vector<std::string>& stack, Diagnostics& diags) {
  Raw raw = std::move(pending.at(name));
  pending.erase(name);
  stack.push_back(name);
  Value top = raw.top;
  std::string digest = raw.text_digest;
  if (const Value* e = raw.top.find("extends")) {
    if (e->kind != Value::Kind::String) {
      diags.error(e->loc, "'extends' of profile '" + name + "' must name a profile");
      stack.pop_back();
      return false;
    }
    std::string parent = e->s;
    if (std::find(stack.begin(), stack.end(), parent) != stack.end()) {
      std::string chain;
      for (const auto& s : stack) chain += s + " -> ";
      diags.error(e->loc, "profile '" + name + "' extends itself through " + chain + parent);
      stack.pop_back();
      return false;
    }
    if (pending.count(parent) && !resolve(parent, pending, stack, diags)) {
      stack.pop_back();
      return false;
    }
    bool alias = false;
    const Profile* pp = find(parent, &alias);
    if (!pp) {
      diags.error(e->loc, "profile '" + name + "' extends unknown profile '" + parent + "'" +
                              did_you_mean(parent, names()));
      stack.pop_back();
      return false;
    }
    const Raw& pr = raw_.at(pp->name);
    top = merged(inheritable(pr.top), raw.top);
    digest = hash_string(pp->digest + "/" + raw.text_digest).hex();
  }
  stack.pop_back();
  Profile p = parse_profile(name, top, diags);
  p.path = raw.path;
  p.digest = digest;
  p.loc = raw.top.loc;
  raw.top = top;  // merged: a profile extending this one starts from it
  raw_[name] = std::move(raw);
  profiles_[name] = std::move(p);
  return true;
}

const Profile* ProfileSet::find(const std::string& name, bool* via_alias) const {
  if (via_alias) *via_alias = false;
  if (auto it = profiles_.find(name); it != profiles_.end()) return &it->second;
  for (const auto& [n, p] : profiles_)
    if (std::find(p.aliases.begin(), p.aliases.end(), name) != p.aliases.end()) {
      if (via_alias) *via_alias = true;
      return &p;
    }
  return nullptr;
}

std::vector<std::string> ProfileSet::names() const {
  std::vector<std::string> v;
  for (const auto& kv : profiles_) v.push_back(kv.first);
  return v;
}

std::vector<const Profile*> ProfileSet::all() const {
  std::vector<const Profile*> v;
  for (const auto& kv : profiles_) v.push_back(&kv.second);
  return v;
}

std::vector<std::string> builtin_profile_dirs() {
  std::vector<std::string> dirs;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    dirs.push_back((exe.parent_path() / ".." / "share" / "qforge" / "profiles").lexically_normal().string());
#ifdef QFORGE_SOURCE_DIR
  dirs.push_back(std::string(QFORGE_SOURCE_DIR) + "/manifests/profiles");
#endif
  return dirs;
}

}  // namespace qforge
