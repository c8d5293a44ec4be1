// The built-in cpu executor plugin.
#include "qforge/plugin.h"
#include "executor.h"
#include "qforge/registry.h"

namespace {
void register_cpu(qforge::Registry& r) { r.add_executor(std::make_shared<qforge::cpu::CpuExecutor>()); }
}  // namespace

QFORGE_BUILTIN_PLUGIN(cpu_executor, "cpu-executor", "1.0.0", register_cpu)
