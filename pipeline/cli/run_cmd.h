// `qforge run` and `qforge compare` (run_cmd.cc).
#pragma once

#include <string>

#include "qforge/model.h"
#include "qforge/registry.h"

namespace qforge::cli {

struct RunArgs {
  std::string data, out, executor = "cpu";
  int threads = 1;
  bool profile = false;
};
int cmd_run(const Registry& reg, const Model& model, const RunArgs& a);

struct CompareArgs {
  std::string data, executor = "cpu";
  int threads = 1;
  bool json = false;
};
int cmd_compare(const Registry& reg, const Model& ref, const Model& cand, const CompareArgs& a);

}  // namespace qforge::cli
