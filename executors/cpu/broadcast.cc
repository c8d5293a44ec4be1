// Broadcast plans (broadcast.h).
#include "broadcast.h"

namespace qforge::cpu {

BroadcastPlan plan_broadcast(const std::vector<const std::vector<int64_t>*>& shapes) {
  BroadcastPlan p;
  for (const auto* s : shapes) p.out_shape = broadcast_shapes(p.out_shape, *s);
  p.numel = numel_of(p.out_shape);
  const size_t r = p.out_shape.size();
  std::vector<std::vector<int64_t>> full;
  for (const auto* s : shapes) full.push_back(broadcast_strides(*s, p.out_shape));
  // Merge dimension d into the one inside it when every operand's stride
  // continues across both (or both are broadcast); size-1 dimensions vanish.
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> st(shapes.size());
  for (size_t d = 0; d < r; ++d) {
    const int64_t n = p.out_shape[d];
    if (n == 1) continue;
    if (!dims.empty()) {
      bool mergeable = true;
      for (size_t j = 0; j < shapes.size() && mergeable; ++j) {
        const int64_t outer = st[j].back(), inner = full[j][d];
        mergeable = (outer == 0 && inner == 0) || (inner != 0 && outer == inner * n);
      }
      if (mergeable) {
        dims.back() *= n;
        for (size_t j = 0; j < shapes.size(); ++j) st[j].back() = full[j][d];
        continue;
      }
    }
    dims.push_back(n);
    for (size_t j = 0; j < shapes.size(); ++j) st[j].push_back(full[j][d]);
  }
  if (dims.empty()) {
    dims.push_back(1);
    for (auto& s : st) s.push_back(0);
  }
  p.dims = std::move(dims);
  p.strides = std::move(st);
  return p;
}

}  // namespace qforge::cpu
