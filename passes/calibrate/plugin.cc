// The built-in calibrate pass plugin.
#include "qforge/plugin.h"
#include "calibrate.h"
#include "qforge/registry.h"

namespace {
void register_calibrate(qforge::Registry& r) { r.add_pass(qforge::passes::calibrate_pass_info()); }
}  // namespace

QFORGE_BUILTIN_PLUGIN(calibrate, "calibrate", "1.0.0", register_calibrate)
