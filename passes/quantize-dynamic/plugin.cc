// The built-in quantize-dynamic pass plugin.
#include "qforge/plugin.h"
#include "qforge/registry.h"
#include "quantize_dynamic.h"

namespace {
void register_quantize_dynamic(qforge::Registry& r) {
  r.add_pass(qforge::passes::quantize_dynamic_pass_info());
}
}  // namespace

QFORGE_BUILTIN_PLUGIN(quantize_dynamic, "quantize-dynamic", "1.0.0", register_quantize_dynamic)
