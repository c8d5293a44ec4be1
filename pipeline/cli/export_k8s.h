// `qforge export k8s`: Kubernetes Jobs that build a manifest (export_k8s.cc;
// docs/scale.md, "Sharding and Kubernetes").
#pragma once

#include <string>
#include <vector>

namespace qforge::cli {

struct K8sArgs {
  std::string manifest;      // -f as given: the path inside the image, relative to its working directory
  std::string image;         // --image
  std::string remote_cache;  // --remote-cache: passed to the pods as QFORGE_REMOTE_CACHE
  std::string ns;            // --namespace
  std::string name = "qforge";
  std::string workdir;               // --workdir: the container's working directory
  std::vector<std::string> targets;  // --target: passed on to both Jobs' commands
  int shards = 0;                    // completions of the indexed Job (0: one per target)
  int parallelism = 0;               // pods at once (0: all)
};

// Usage problems with the arguments (names Kubernetes would refuse, ...).
std::vector<std::string> check_k8s_args(const K8sArgs& a);

// The YAML: a Job running `qforge build --shared-only`, then an Indexed Job
// whose pod with index I runs `qforge build --shard I/N`, and how to apply
// them in order as comments. `shared_steps`: how many shared steps the plan
// has, `targets`: how many targets (for the comments).
std::string k8s_yaml(const K8sArgs& a, size_t shared_steps, size_t targets);

}  // namespace qforge::cli
