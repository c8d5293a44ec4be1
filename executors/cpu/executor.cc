// The cpu executor: prepares a Plan per model and runs it (README.md).
#include "executor.h"

#include <omp.h>

#include "plan.h"

namespace qforge::cpu {

namespace {

class CpuPreparedModel : public PreparedModel {
 public:
  CpuPreparedModel(const Model& model, const ExecOptions& options)
      : graph_(model.graph), tensors_(model.tensors), threads_(std::max(1, options.threads)) {
    Opsets opsets;
    for (const OpsetImport& o : graph_->model.opset_imports)
      opsets[o.domain == "ai.onnx" ? std::string() : o.domain] = o.version;
    plan_ = std::make_unique<Plan>(*graph_, tensors_, opsets, threads_, std::make_shared<BufferPool>(),
                                   options.profile, std::vector<std::string>{});
    for (size_t i = 0; i < graph_->inputs.size(); ++i) {
      const ValueInfo& vi = graph_->inputs[i];
      std::vector<int64_t> dims;
      if (vi.type.shape)
        for (const Dim& d : *vi.type.shape) dims.push_back(d.known() ? d.value : -1);
      shapes_.emplace_back(vi.name, dims);
    }
  }

  std::vector<std::pair<std::string, std::vector<int64_t>>> input_shapes() const override {
    std::vector<std::pair<std::string, std::vector<int64_t>>> v;
    for (const auto& kv : shapes_)
      for (const std::string& r : plan_->required_inputs())
        if (r == kv.first) v.push_back(kv);
    return v;
  }
  std::vector<std::string> input_names() const override { return plan_->required_inputs(); }
  std::vector<std::string> output_names() const override { return plan_->output_names(); }

  Status run(const NamedValues& inputs, NamedValues& outputs, Observer* observer) override {
    return guard([&] {
      const auto& names = plan_->input_names();
      std::vector<const RunValue*> ins(names.size(), nullptr);
      for (const auto& [name, value] : inputs) {
        auto it = std::find(names.begin(), names.end(), name);
        if (it == names.end()) {
          std::string known;
          for (const std::string& n : plan_->required_inputs()) known += (known.empty() ? "" : ", ") + n;
          throw Error("the model has no input '" + name + "' (its inputs: " + known + ")");
        }
        ins[it - names.begin()] = &value;
      }
      omp_set_num_threads(threads_);
      std::vector<RunValue> outs;
      plan_->run_observed(ins, outs, nullptr, observer);
      outputs.clear();
      for (size_t i = 0; i < outs.size(); ++i)
        outputs.emplace_back(plan_->output_names()[i], std::move(outs[i]));
    });
  }

  std::string profile_report() const override { return plan_->profile_report(); }

 private:
  std::shared_ptr<Graph> graph_;  // kept alive: the plan points into it
  std::vector<Tensor> tensors_;
  int threads_;
  std::unique_ptr<Plan> plan_;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes_;
};

}  // namespace

Status CpuExecutor::prepare(const Model& model, const ExecOptions& options,
                            std::unique_ptr<PreparedModel>& out) const {
  return guard([&] {
    if (!model.graph)
      throw Error("model '" + model.source + "' has no graph (format " + model.format +
                  "): the cpu executor runs graph models (ONNX)");
    out = std::make_unique<CpuPreparedModel>(model, options);
  });
}

}  // namespace qforge::cpu
