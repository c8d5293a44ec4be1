// The built-in pre-processing passes plugin (preprocess.h).
#include "qforge/plugin.h"
#include "preprocess.h"
#include "qforge/registry.h"

namespace {
void register_preprocess(qforge::Registry& r) {
  r.add_pass(qforge::passes::upgrade_opset_pass_info());
  r.add_pass(qforge::passes::infer_shapes_pass_info());
  r.add_pass(qforge::passes::fold_batchnorm_pass_info());
  r.add_pass(qforge::passes::eliminate_pass_info());
  r.add_pass(qforge::passes::fold_constants_pass_info());
  r.add_pass(qforge::passes::equalize_pass_info());
  r.add_pass(qforge::passes::smooth_quant_pass_info());
}
}  // namespace

QFORGE_BUILTIN_PLUGIN(preprocess, "preprocess", "1.0.0", register_preprocess)
