// The built-in select-precision pass plugin.
#include "qforge/plugin.h"
#include "qforge/registry.h"
#include "select_precision.h"
#include "sensitivity.h"

namespace {
void register_select_precision(qforge::Registry& r) {
  r.add_pass(qforge::select_precision::pass_info());
  r.add_pass(qforge::select_precision::sensitivity_pass_info());
}
}  // namespace

QFORGE_BUILTIN_PLUGIN(select_precision, "select-precision", "1.0.0", register_select_precision)
