// Sharding a build's targets (docs/scale.md, "Sharding and Kubernetes").
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <numeric>

#include "qforge/build.h"

namespace fs = std::filesystem;

namespace qforge {

std::string parse_shard(const std::string& text, ShardSpec& out) {
  const std::string form = "give it as I/N, the share I (from 0) of N, e.g. 0/4 ... 3/4";
  const size_t slash = text.find('/');
  auto number = [](const std::string& s, int& v) {
    if (s.empty() || s.size() > 6 ||
        !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    v = std::atoi(s.c_str());
    return true;
  };
  int i = 0, n = 0;
  if (slash == std::string::npos || !number(text.substr(0, slash), i) || !number(text.substr(slash + 1), n))
    return "--shard '" + text + "': " + form;
  if (n < 1) return "--shard '" + text + "': N must be at least 1";
  if (i >= n)
    return "--shard '" + text + "': I must be below N (shares are numbered from 0: 0/" + std::to_string(n) +
           " ... " + std::to_string(n - 1) + "/" + std::to_string(n) + ")";
  out.index = i;
  out.count = n;
  return "";
}

std::vector<uint64_t> target_costs(const Plan& plan) {
  std::vector<uint64_t> bytes(plan.nodes.size(), 0);  // the model file each node derives from
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const PlanNode& n = plan.nodes[i];
    if (n.kind == PlanNode::Kind::Import) {
      std::error_code ec;
      const auto size = fs::file_size(n.path, ec);
      bytes[i] = ec ? 0 : static_cast<uint64_t>(size);
    } else if (n.model_input() >= 0) {
      bytes[i] = bytes[n.model_input()];  // inputs come before their consumers
    }
  }
  std::vector<uint64_t> costs;
  for (const auto& t : plan.targets) {
    uint64_t cost = 0;
    std::vector<int> stack{t.emit};
    std::vector<bool> seen(plan.nodes.size(), false);
    while (!stack.empty()) {
      const int k = stack.back();
      stack.pop_back();
      if (k < 0 || seen[k]) continue;
      seen[k] = true;
      const PlanNode& n = plan.nodes[k];
      if (n.shared) continue;  // built once for every target (--shared-only); its inputs are shared too
      const uint64_t weight = n.kind == PlanNode::Kind::Pass && n.pass->needs_executor ? 4 : 1;
      if (n.kind != PlanNode::Kind::Import) cost += weight * std::max<uint64_t>(bytes[k], 1);
      for (int in : n.inputs) stack.push_back(in);
    }
    costs.push_back(cost);
  }
  return costs;
}

std::vector<std::vector<std::string>> assign_shards(const Plan& plan, int count) {
  const std::vector<uint64_t> costs = target_costs(plan);
  std::vector<size_t> order(plan.targets.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<uint64_t> load(static_cast<size_t>(std::max(count, 1)), 0);
  std::vector<int> share_of(plan.targets.size(), 0);
  for (size_t t : order) {
    const size_t s = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    load[s] += costs[t];
    share_of[t] = static_cast<int>(s);
  }
  std::vector<std::vector<std::string>> shares(load.size());
  for (size_t t = 0; t < plan.targets.size(); ++t) shares[share_of[t]].push_back(plan.targets[t].decl.name);
  return shares;
}

}  // namespace qforge
