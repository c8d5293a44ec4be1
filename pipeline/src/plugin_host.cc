#include "qforge/plugin_host.h"

#include <boost/dll/shared_library.hpp>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "qforge/plugin.h"
#include "qforge/status.h"

namespace fs = std::filesystem;

namespace qforge {

void PluginHost::admit(const QforgePlugin* info, const std::string& origin, std::shared_ptr<void> library) {
  if (!info) throw Error(origin + ": the plugin entry point returned nothing");
  std::string name = info->name ? info->name : "?";
  std::string version = info->version ? info->version : "?";
  if (info->api_version != QFORGE_PLUGIN_API_VERSION) {
    std::ostringstream os;
    os << origin << ": plugin '" << name << "' " << version << " was built for qforge plugin API version "
       << info->api_version << ", but this qforge expects version " << QFORGE_PLUGIN_API_VERSION
       << "; rebuild the plugin against this qforge's SDK";
    throw Error(os.str());
  }
  std::string tag = info->abi_tag ? info->abi_tag : "";
  if (tag != QFORGE_ABI_TAG)
    throw Error(origin + ": plugin '" + name + "' " + version + " was built with ABI '" + tag +
                "', but this qforge has ABI '" QFORGE_ABI_TAG
                "'; rebuild it with the same compiler family, "
                "standard library and qforge SDK");
  if (!info->register_fn) throw Error(origin + ": plugin '" + name + "' has no register function");
  registry_.begin_plugin({name, version, origin}, library);
  char err[1024] = {0};
  int rc = 0;
  try {
    rc = info->register_fn(&registry_, err, sizeof err);
  } catch (...) {
    rc = 1;
    std::snprintf(err, sizeof err, "an exception escaped the register function");
  }
  registry_.end_plugin();
  if (rc != 0) throw Error(origin + ": plugin '" + name + "' " + version + " failed to register: " + err);
}

void PluginHost::add_builtin(const QforgePlugin* (*entry)()) { admit(entry(), "<built-in>", nullptr); }

void PluginHost::load(const std::string& path) {
  std::string canon = fs::weakly_canonical(path).string();
  for (const auto& l : loaded_)
    if (l == canon) return;
  auto lib = std::make_shared<boost::dll::shared_library>();
  boost::system::error_code ec;
  lib->load(path, boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, ec);
  if (ec)
    throw Error(path + ": cannot load plugin: " + ec.message() + " (" +
                boost::dll::shared_library::suffix().string() + " built for this system?)");
  if (!lib->has("qforge_plugin"))
    throw Error(path + ": not a qforge plugin (no 'qforge_plugin' entry; define it with QFORGE_PLUGIN(...))");
  auto entry = lib->get_alias<const QforgePlugin*()>("qforge_plugin");
  loaded_.push_back(canon);
  admit(entry(), path, lib);
}

void PluginHost::load_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".so" && e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    boost::dll::shared_library probe;
    boost::system::error_code lec;
    probe.load(f, boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, lec);
    if (lec || !probe.has("qforge_plugin")) continue;  // not ours: skip quietly
    probe.unload();
    load(f);
  }
}

std::vector<std::string> PluginHost::default_dirs() {
  std::vector<std::string> dirs;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back((exe.parent_path() / "plugins").string());
    dirs.push_back((exe.parent_path() / ".." / "lib" / "qforge" / "plugins").lexically_normal().string());
  }
  if (const char* env = std::getenv("QFORGE_PLUGIN_PATH")) {
    std::string s = env;
    size_t start = 0;
    while (start <= s.size()) {
      size_t colon = s.find(':', start);
      std::string d = s.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!d.empty()) dirs.push_back(d);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  return dirs;
}

}  // namespace qforge
