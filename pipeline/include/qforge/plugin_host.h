// Finds, checks and loads plugins into a Registry.
#pragma once

#include <string>
#include <vector>

#include "qforge/registry.h"

extern "C" struct QforgePlugin;

namespace qforge {

class PluginHost {
 public:
  explicit PluginHost(Registry& registry) : registry_(registry) {}
  // Admits a plugin linked into the binary (same checks as dynamic ones).
  void add_builtin(const QforgePlugin* (*entry)());
  // Loads one shared library. Throws qforge::Error naming the file and the
  // problem (no entry point, API version or ABI mismatch, register failure).
  void load(const std::string& path);
  // Loads every lib*.so / *.so in `dir` that exports `qforge_plugin`;
  // libraries without it are skipped. A missing directory is ignored.
  void load_dir(const std::string& dir);
  // The default search path: the `plugins` directory beside the binary and
  // ../lib/qforge/plugins, then QFORGE_PLUGIN_PATH (colon-separated).
  static std::vector<std::string> default_dirs();

 private:
  void admit(const QforgePlugin* info, const std::string& origin, std::shared_ptr<void> library);
  Registry& registry_;
  std::vector<std::string> loaded_;
};

// Registers the built-in formats and passes (generated list, see pipeline/cli).
void register_builtins(PluginHost& host);

}  // namespace qforge
