// `qforge build --on slurm` (slurm_cmd.cc; docs/scale.md, "Slurm"): the plan's
// shared steps as one job, the targets as a job array that depends on it, all
// against the same cache; waits, then gathers the results from the cache.
#pragma once

#include <string>
#include <vector>

#include "qforge/build.h"

namespace qforge::cli {

struct SlurmArgs {
  std::string partition;                 // --partition
  std::vector<std::string> sbatch_args;  // --sbatch-arg, passed to every sbatch as given
  std::vector<std::string> plugins;      // --plugin, passed to every task
  std::string manifest;                  // as given to -f
  std::vector<std::string> targets;      // --target (the selection the plan was made for)
  int threads = 0;                       // -t for every task (0: the CPUs Slurm gave the task)
  std::string remote_cache;              // --remote-cache, passed to every task (the environment's
                                         // QFORGE_REMOTE_CACHE and token reach them as sbatch exports it)
  bool dry_run = false, explain = false, strict = false, verbose = false;
};

// Runs the build on Slurm and writes the usual reports; returns the exit status.
int build_on_slurm(const Plan& plan, StatCache& stats, const SlurmArgs& a);

}  // namespace qforge::cli
