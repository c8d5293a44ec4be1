// Control flow with subgraphs: If and Loop (executors/cpu/README.md). Each
// branch or body is a Plan of its own, prepared once; it reads values of the
// enclosing graphs through KernelContext::outer.
#include <cstring>

#include "kernel.h"

namespace qforge::cpu {

namespace {

const Graph& graph_attr(const Node& n, const std::string& name) {
  const Attribute& a = attr_required(n, name);
  if (a.type != Attribute::Type::Graph || a.graphs.size() != 1 || !a.graphs[0])
    throw Error("attribute '" + name + "' must be a graph");
  return *a.graphs[0];
}

bool truth(const RunValue& v, const char* what) {
  if (v.type != ElemType::Bool || v.numel() != 1)
    throw Error(std::string(what) + " must be one bool, found " + describe(v));
  return v.data->data()[0] != 0;
}

class IfKernel : public Kernel {
 public:
  explicit IfKernel(const KernelInit& init)
      : then_(init.prepare_subgraph(graph_attr(init.node, "then_branch"))),
        else_(init.prepare_subgraph(graph_attr(init.node, "else_branch"))) {}

  void run(KernelContext& ctx) override {
    SubgraphRunner& branch = truth(ctx.input(0), "cond") ? *then_ : *else_;
    std::vector<RunValue> outs;
    branch.run({}, outs, *ctx.outer);
    if (outs.size() != ctx.num_outputs())
      throw Error("the branch gives " + std::to_string(outs.size()) + " outputs, the node has " +
                  std::to_string(ctx.num_outputs()));
    for (size_t i = 0; i < outs.size(); ++i) ctx.set_output(i, std::move(outs[i]));
  }

 private:
  std::unique_ptr<SubgraphRunner> then_, else_;
};

class LoopKernel : public Kernel {
 public:
  explicit LoopKernel(const KernelInit& init) : body_(init.prepare_subgraph(graph_attr(init.node, "body"))) {}

  void run(KernelContext& ctx) override {
    const int64_t max_trips =
        ctx.has_input(0) ? static_cast<int64_t>(scalar_as_double(ctx.input(0), "M")) : -1;
    bool cond = ctx.has_input(1) ? truth(ctx.input(1), "cond") : true;
    const size_t carried = ctx.num_inputs() - 2;
    const size_t n_in = body_->input_names().size(), n_out = body_->output_names().size();
    if (n_in != carried + 2 || n_out < carried + 1)
      throw Error("the body takes " + std::to_string(n_in) + " inputs and gives " + std::to_string(n_out) +
                  " outputs; the node carries " + std::to_string(carried) + " values");
    const size_t scans = n_out - 1 - carried;
    std::vector<RunValue> state;
    for (size_t i = 0; i < carried; ++i) state.push_back(ctx.input(2 + i));
    std::vector<std::vector<RunValue>> scanned(scans);
    int64_t it = 0;
    while (cond && (max_trips < 0 || it < max_trips)) {
      std::vector<RunValue> in;
      int64_t iv = it;
      in.push_back(RunValue{ElemType::I64, {}, make_blob(&iv, sizeof iv)});
      uint8_t cv = 1;
      in.push_back(RunValue{ElemType::Bool, {}, make_blob(&cv, 1)});
      for (const RunValue& s : state) in.push_back(s);
      std::vector<RunValue> out;
      body_->run(in, out, *ctx.outer);
      cond = truth(out[0], "the body's condition output");
      for (size_t i = 0; i < carried; ++i) state[i] = out[1 + i];
      for (size_t i = 0; i < scans; ++i) scanned[i].push_back(out[1 + carried + i]);
      ++it;
    }
    for (size_t i = 0; i < carried; ++i) ctx.set_output(i, state[i]);
    for (size_t i = 0; i < scans; ++i) {
      if (!ctx.wants_output(carried + i)) continue;
      if (scanned[i].empty())
        unsupported("a Loop scan output over zero iterations (its element shape is unknown)");
      const RunValue& first = scanned[i][0];
      std::vector<int64_t> shape = first.shape;
      shape.insert(shape.begin(), static_cast<int64_t>(scanned[i].size()));
      const uint64_t each = bytes_of(first.type, first.numel());
      uint8_t* o = ctx.alloc_output(carried + i, first.type, shape);
      for (size_t k = 0; k < scanned[i].size(); ++k) {
        if (scanned[i][k].shape != first.shape || scanned[i][k].type != first.type)
          throw Error("scan output " + std::to_string(i) + " changes shape across iterations: " +
                      describe(first) + " then " + describe(scanned[i][k]));
        std::memcpy(o + k * each, scanned[i][k].data->data(), each);
      }
    }
  }

 private:
  std::unique_ptr<SubgraphRunner> body_;
};

}  // namespace

void register_ops_control(KernelTable& t) {
  t.add("", "If", 1, kMaxOpset, [](const KernelInit& init) { return std::make_unique<IfKernel>(init); });
  t.add("", "Loop", 1, kMaxOpset, [](const KernelInit& init) { return std::make_unique<LoopKernel>(init); });
}

}  // namespace qforge::cpu
