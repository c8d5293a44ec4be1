// The cpu executor (executors/cpu/README.md): runs ONNX graphs with the
// kernels of the ops_<group>.cc files.
#pragma once

#include <memory>

#include "qforge/executor.h"

namespace qforge::cpu {

class CpuExecutor : public Executor {
 public:
  std::string name() const override { return "cpu"; }
  std::string description() const override {
    return "runs ONNX graphs on the CPU (oneDNN convolutions and matrix products)";
  }
  Status prepare(const Model& model, const ExecOptions& options,
                 std::unique_ptr<PreparedModel>& out) const override;
};

}  // namespace qforge::cpu
