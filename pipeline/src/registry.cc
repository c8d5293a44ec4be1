#include "qforge/registry.h"

#include <map>

#include "qforge/status.h"

namespace qforge {

struct Registry::Impl {
  struct FormatEntry {
    std::shared_ptr<const Format> format;
    std::string origin;
    std::shared_ptr<void> library;
  };
  struct PassEntry {
    PassInfo info;
    std::string origin;
    std::shared_ptr<void> library;
  };
  struct ExecutorEntry {
    std::shared_ptr<const Executor> executor;
    std::string origin;
    std::shared_ptr<void> library;
  };
  // Declared before the entries so that the libraries outlive what they made
  // (members are destroyed in reverse order).
  std::vector<std::shared_ptr<void>> libraries;
  std::map<std::string, FormatEntry> formats;
  std::map<std::string, PassEntry> passes;
  std::map<std::string, ExecutorEntry> executors;
  std::vector<PluginRecord> plugins;
  PluginRecord current;
  std::shared_ptr<void> current_library;
};

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

void Registry::add_format(std::shared_ptr<const Format> format) {
  if (!format) throw Error("plugin '" + impl_->current.name + "' registered a null format");
  std::string name = format->name();
  auto it = impl_->formats.find(name);
  if (it != impl_->formats.end())
    throw Error("format '" + name + "' is registered twice: by plugin '" + it->second.origin +
                "' and by plugin '" + impl_->current.name + "'");
  impl_->formats[name] = {std::move(format), impl_->current.name, impl_->current_library};
}

void Registry::add_executor(std::shared_ptr<const Executor> executor) {
  if (!executor) throw Error("plugin '" + impl_->current.name + "' registered a null executor");
  std::string name = executor->name();
  auto it = impl_->executors.find(name);
  if (it != impl_->executors.end())
    throw Error("executor '" + name + "' is registered twice: by plugin '" + it->second.origin +
                "' and by plugin '" + impl_->current.name + "'");
  impl_->executors[name] = {std::move(executor), impl_->current.name, impl_->current_library};
}

const Executor* Registry::executor(const std::string& name) const {
  auto it = impl_->executors.find(name);
  return it == impl_->executors.end() ? nullptr : it->second.executor.get();
}

std::vector<const Executor*> Registry::executors() const {
  std::vector<const Executor*> v;
  for (const auto& kv : impl_->executors) v.push_back(kv.second.executor.get());
  return v;
}

std::string Registry::origin_of_executor(const std::string& name) const {
  auto it = impl_->executors.find(name);
  return it == impl_->executors.end() ? "" : it->second.origin;
}

void Registry::add_pass(PassInfo info) {
  if (!info.factory) throw Error("pass '" + info.name + "' has no factory");
  if (info.output.kind == ArtifactKind::File)
    throw Error("pass '" + info.name +
                "' declares a File output; files are made by a target's emit step, so a pass "
                "produces a Model or a Table");
  for (const auto& in : info.inputs)
    if (in.kind != ArtifactKind::Table)
      throw Error("pass '" + info.name + "' declares an input of kind " + name_of(in.kind) +
                  "; every pass reads the model, and its other inputs are Tables");
  auto it = impl_->passes.find(info.name);
  if (it != impl_->passes.end())
    throw Error("pass '" + info.name + "' is registered twice: by plugin '" + it->second.origin +
                "' and by plugin '" + impl_->current.name + "'");
  // Objects the factory makes come from the plugin: wrap it so that each
  // keeps the library loaded.
  auto lib = impl_->current_library;
  if (lib) {
    auto inner = std::move(info.factory);
    info.factory = [inner, lib]() -> std::unique_ptr<Pass> {
      struct Keep : Pass {
        std::unique_ptr<Pass> p;
        std::shared_ptr<void> lib;
        PassResult run(Model& m, PassContext& c) override { return p->run(m, c); }
        ~Keep() override { p.reset(); }  // destroy the pass before releasing its library
      };
      auto k = std::make_unique<Keep>();
      k->p = inner();
      k->lib = lib;
      return k;
    };
  }
  std::string name = info.name;
  impl_->passes[name] = {std::move(info), impl_->current.name, lib};
}

const Format* Registry::format(const std::string& name) const {
  auto it = impl_->formats.find(name);
  return it == impl_->formats.end() ? nullptr : it->second.format.get();
}

const PassInfo* Registry::pass(const std::string& name) const {
  auto it = impl_->passes.find(name);
  return it == impl_->passes.end() ? nullptr : &it->second.info;
}

std::vector<const Format*> Registry::formats() const {
  std::vector<const Format*> v;
  for (const auto& kv : impl_->formats) v.push_back(kv.second.format.get());
  return v;
}

std::vector<const PassInfo*> Registry::passes() const {
  std::vector<const PassInfo*> v;
  for (const auto& kv : impl_->passes) v.push_back(&kv.second.info);
  return v;
}

const std::vector<PluginRecord>& Registry::plugins() const { return impl_->plugins; }

std::string Registry::origin_of_pass(const std::string& name) const {
  auto it = impl_->passes.find(name);
  return it == impl_->passes.end() ? "" : it->second.origin;
}

std::string Registry::origin_of_format(const std::string& name) const {
  auto it = impl_->formats.find(name);
  return it == impl_->formats.end() ? "" : it->second.origin;
}

void Registry::begin_plugin(PluginRecord record, std::shared_ptr<void> library) {
  impl_->current = std::move(record);
  impl_->current_library = std::move(library);
  if (impl_->current_library) impl_->libraries.push_back(impl_->current_library);
}

void Registry::end_plugin() {
  impl_->plugins.push_back(impl_->current);
  impl_->current = {};
  impl_->current_library.reset();
}

}  // namespace qforge
