// A prepared graph of the cpu executor: kernels chosen, values numbered,
// each value's last consumer known so it is freed right after (README.md).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernel.h"

namespace qforge::cpu {

// Opset versions by domain ("" = ai.onnx), from the model's opset imports.
using Opsets = std::map<std::string, int64_t>;

class Plan : public SubgraphRunner {
 public:
  // `initializers`: the graph's constant tensors (Model::tensors at top level,
  // Graph::initializers in subgraphs). `outer`: names visible from enclosing
  // scopes (read at run time through the `outer` resolver).
  Plan(const Graph& graph, const std::vector<Tensor>& initializers, const Opsets& opsets, int threads,
       std::shared_ptr<BufferPool> pool, bool profile, const std::vector<std::string>& outer_names);

  const std::vector<std::string>& input_names() const override { return input_names_; }
  const std::vector<std::string>& output_names() const override { return output_names_; }
  // Inputs the caller must feed (graph inputs without an initializer).
  const std::vector<std::string>& required_inputs() const { return required_inputs_; }

  void run(const std::vector<RunValue>& inputs, std::vector<RunValue>& outputs,
           const std::function<const RunValue*(const std::string&)>& outer) override;
  // The same with an observer (top level).
  void run_observed(const std::vector<const RunValue*>& inputs, std::vector<RunValue>& outputs,
                    const std::function<const RunValue*(const std::string&)>& outer, Observer* observer);

  std::string profile_report() const;

 private:
  struct Step {
    const Node* node = nullptr;
    int64_t opset = 0;
    std::string domain;
    std::unique_ptr<Kernel> kernel;
    std::vector<int> in;       // slot per input, -1 for omitted
    std::vector<int> out;      // slot per output, -1 for unnamed
    std::vector<int> release;  // slots whose last use is this step
    double seconds = 0;
    uint64_t calls = 0;
  };
  int slot_of(const std::string& name);
  std::string where(const Step& s) const;

  const Graph& graph_;
  int threads_;
  std::shared_ptr<BufferPool> pool_;
  bool profile_;
  std::unordered_map<std::string, int> slots_;
  std::vector<std::string> slot_names_;
  std::vector<RunValue> constants_;  // by slot (data null: not a constant)
  std::vector<int> outer_slots_;     // slots filled from enclosing scopes
  std::vector<int> input_slots_, output_slots_;
  std::vector<std::string> input_names_, output_names_, required_inputs_;
  std::vector<std::vector<int64_t>> input_dims_;  // declared (-1 unknown); empty when the rank is unknown
  std::vector<bool> input_rank_known_;
  std::vector<ElemType> input_types_;
  std::vector<int> release_unused_inputs_;
  std::vector<Step> steps_;
  std::vector<signed char> wants_;  // per slot: observer's answer (-1 unasked)
  Observer* last_observer_ = nullptr;
};

// The value of a Tensor as a RunValue, copied when its bytes are not aligned.
RunValue value_of(const Tensor& t);

}  // namespace qforge::cpu
