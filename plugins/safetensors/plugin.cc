// The safetensors format plugin's entry point (see README.md beside this file).
#include <memory>

#include "qforge/plugin.h"
#include "safetensors.h"

namespace {
void register_safetensors(qforge::Registry& registry) {
  registry.add_format(std::make_shared<qforge::st::SafetensorsFormat>());
}
}  // namespace

QFORGE_PLUGIN("safetensors", "1.0.0", register_safetensors)
