// The built-in quantize-weights pass plugin.
#include "qforge/plugin.h"
#include "qforge/registry.h"
#include "quantize_weights.h"

namespace {
void register_quantize_weights(qforge::Registry& r) {
  r.add_pass(qforge::passes::quantize_weights_pass_info());
}
}  // namespace

QFORGE_BUILTIN_PLUGIN(quantize_weights, "quantize-weights", "1.0.0", register_quantize_weights)
