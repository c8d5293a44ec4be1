// Registers the built-in GGUF format.
#include "qforge/plugin.h"

#include <memory>

#include "gguf.h"

namespace {
void register_gguf(qforge::Registry& r) { r.add_format(std::make_shared<qforge::GgufFormat>()); }
}  // namespace

QFORGE_BUILTIN_PLUGIN(gguf, "gguf", "1.0.0", register_gguf)
