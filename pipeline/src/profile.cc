#include "qforge/profile.h"

#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qforge/hash.h"
#include "toml_value.h"

namespace fs = std::filesystem;

namespace qforge {

const Value* Profile::allowed_values(const std::string& pass, const std::string& option) const {
  auto it = allowed.find(pass);
  if (it == allowed.end()) return nullptr;
  auto jt = it->second.find(option);
  return jt == it->second.end() ? nullptr : &jt->second;
}

void ProfileSet::load_file(const std::string& path, Diagnostics& diags) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    diags.error(
        {path, static_cast<uint32_t>(e.source().begin.line), static_cast<uint32_t>(e.source().begin.column)},
        "invalid TOML in profile: " + std::string(e.description()));
    return;
  }
  Value top = toml_to_value(root, path);
  Profile p;
  p.path = path;
  p.digest = hash_bytes(text.data(), text.size()).hex();
  p.name = fs::path(path).stem().string();
  p.loc = {path, 1, 1};
  p.properties.kind = Value::Kind::Table;
  for (const auto& [k, v] : top.table) {
    if (k == "name") {
      if (v.kind != Value::Kind::String)
        diags.error(v.loc, "profile 'name' must be a string");
      else if (v.s != p.name)
        diags.error(v.loc, "profile name '" + v.s + "' differs from its file name '" + p.name + ".toml'");
    } else if (k == "description") {
      if (v.kind != Value::Kind::String) diags.error(v.loc, "profile 'description' must be a string");
      p.description = v.s;
    } else if (k == "optional_passes") {
      if (v.kind != Value::Kind::List) {
        diags.error(v.loc, "'optional_passes' must list pass names");
        continue;
      }
      for (const auto& e : v.list) {
        if (e.kind != Value::Kind::String)
          diags.error(e.loc, "'optional_passes' must list pass names (strings)");
        else
          p.optional_passes.push_back(e.s);
      }
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
          if (k == "defaults") {
            p.defaults[pass][opt] = val;
          } else if (val.kind != Value::Kind::List) {
            diags.error(val.loc, "[allow." + pass + "] " + opt + " must list the allowed values");
          } else {
            p.allowed[pass][opt] = val;
          }
        }
      }
    } else {
      p.properties.table.emplace_back(k, v);
    }
  }
  profiles_[p.name] = std::move(p);
}

void ProfileSet::load_dir(const std::string& dir, Diagnostics& diags) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".toml") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) load_file(f, diags);
}

const Profile* ProfileSet::find(const std::string& name) const {
  auto it = profiles_.find(name);
  return it == profiles_.end() ? nullptr : &it->second;
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
