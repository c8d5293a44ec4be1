// The registry of formats, passes and executors. The host hands it to every plugin's
// register function; built-in plugins go through the same path.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "qforge/executor.h"
#include "qforge/format.h"
#include "qforge/pass.h"

namespace qforge {

struct PluginRecord {
  std::string name;
  std::string version;
  std::string path;  // "<built-in>" for statically linked plugins
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Called by plugins. A duplicate name is an error naming both plugins.
  void add_format(std::shared_ptr<const Format> format);
  void add_pass(PassInfo info);
  void add_executor(std::shared_ptr<const Executor> executor);

  const Format* format(const std::string& name) const;
  const PassInfo* pass(const std::string& name) const;
  std::vector<const Format*> formats() const;
  std::vector<const PassInfo*> passes() const;
  const Executor* executor(const std::string& name) const;
  std::vector<const Executor*> executors() const;
  const std::vector<PluginRecord>& plugins() const;
  // Which plugin registered a pass or format.
  std::string origin_of_pass(const std::string& name) const;
  std::string origin_of_format(const std::string& name) const;
  std::string origin_of_executor(const std::string& name) const;

  // Host side: what is registered next comes from this plugin, and keeps
  // `library` (the loaded shared library) alive as long as it exists.
  void begin_plugin(PluginRecord record, std::shared_ptr<void> library);
  void end_plugin();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qforge
