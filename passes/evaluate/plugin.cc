// The built-in evaluate pass plugin.
#include "qforge/plugin.h"
#include "evaluate.h"
#include "qforge/registry.h"

namespace {
void register_evaluate(qforge::Registry& r) { r.add_pass(qforge::passes::evaluate_pass_info()); }
}  // namespace

QFORGE_BUILTIN_PLUGIN(evaluate, "evaluate", "1.0.0", register_evaluate)
