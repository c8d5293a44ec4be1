// The built-in quantize-static pass plugin.
#include "qforge/plugin.h"
#include "qforge/registry.h"
#include "quantize_static.h"

namespace {
void register_quantize_static(qforge::Registry& r) {
  r.add_pass(qforge::passes::quantize_static_pass_info());
}
}  // namespace

QFORGE_BUILTIN_PLUGIN(quantize_static, "quantize-static", "1.0.0", register_quantize_static)
