// The built-in normalize pass plugin.
#include "qforge/plugin.h"
#include "normalize_pass.h"
#include "qforge/registry.h"

namespace {
void register_normalize(qforge::Registry& r) { r.add_pass(qforge::passes::normalize_pass_info()); }
}  // namespace

QFORGE_BUILTIN_PLUGIN(normalize, "normalize", "1.0.0", register_normalize)
