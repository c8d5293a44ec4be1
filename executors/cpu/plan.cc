// A prepared graph of the cpu executor (plan.h).
#include "plan.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <sstream>
#include <unordered_set>

#include <fmt/format.h>

namespace qforge::cpu {

RunValue value_of(const Tensor& t) {
  RunValue v;
  v.type = t.type;
  v.shape = t.shape;
  BlobPtr b = t.bytes();
  if (b && b->size() < bytes_of(t.type, v.numel()))
    throw Error("tensor '" + t.name + "' has " + std::to_string(b->size()) + " bytes, " + describe(v) +
                " needs " + std::to_string(bytes_of(t.type, v.numel())));
  if (b && reinterpret_cast<uintptr_t>(b->data()) % 16 != 0) b = make_blob(b->data(), b->size());
  v.data = b ? b : make_blob(std::vector<uint8_t>{});
  return v;
}

namespace {
std::string domain_name(const std::string& d) { return d.empty() ? "ai.onnx" : d; }
}  // namespace

int Plan::slot_of(const std::string& name) {
  auto it = slots_.find(name);
  if (it != slots_.end()) return it->second;
  const int s = static_cast<int>(slot_names_.size());
  slots_.emplace(name, s);
  slot_names_.push_back(name);
  constants_.emplace_back();
  return s;
}

std::string Plan::where(const Step& s) const {
  return fmt::format("node '{}' ({}, domain {}, opset {})", s.node->name, s.node->op_type,
                     domain_name(s.domain), s.opset);
}

Plan::Plan(const Graph& graph, const std::vector<Tensor>& initializers, const Opsets& opsets, int threads,
           std::shared_ptr<BufferPool> pool, bool profile, const std::vector<std::string>& outer_names)
    : graph_(graph), threads_(threads), pool_(std::move(pool)), profile_(profile) {
  for (const Tensor& t : initializers) {
    const int s = slot_of(t.name);
    constants_[s] = value_of(t);
  }
  for (const ValueInfo& vi : graph.inputs) {
    const int s = slot_of(vi.name);
    input_slots_.push_back(s);
    input_names_.push_back(vi.name);
    if (!constants_[s].data) required_inputs_.push_back(vi.name);
    std::vector<int64_t> dims;
    bool rank_known = false;
    if (vi.type.shape) {
      rank_known = true;
      for (const Dim& d : *vi.type.shape) dims.push_back(d.known() ? d.value : -1);
    }
    input_dims_.push_back(dims);
    input_rank_known_.push_back(rank_known);
    input_types_.push_back(vi.type.elem.value_or(ElemType::Count_));  // Count_: not declared
  }
  std::unordered_set<std::string> defined(input_names_.begin(), input_names_.end());
  for (const Tensor& t : initializers) defined.insert(t.name);
  const std::unordered_set<std::string> outer(outer_names.begin(), outer_names.end());
  auto resolve = [&](const std::string& name, const Node& n) {
    if (!defined.count(name)) {
      if (!outer.count(name))
        throw Error(fmt::format("node '{}' ({}) reads value '{}' that nothing in the graph defines", n.name,
                                n.op_type, name));
      const int s = slot_of(name);
      if (std::find(outer_slots_.begin(), outer_slots_.end(), s) == outer_slots_.end())
        outer_slots_.push_back(s);
      defined.insert(name);
    }
    return slot_of(name);
  };

  // Kernels, in the graph's (topological) order; unsupported operators are
  // all listed at once.
  const KernelTable& table = kernel_table();
  std::vector<std::string> missing;
  std::map<std::string, int> missing_ops;
  for (const Node& n : graph.nodes) {
    Step st;
    st.node = &n;
    st.domain = n.domain == "ai.onnx" ? std::string() : n.domain;
    auto ov = opsets.find(st.domain);
    st.opset = ov == opsets.end() ? (st.domain.empty() ? 1 : -1) : ov->second;
    for (const std::string& in : n.inputs) st.in.push_back(in.empty() ? -1 : resolve(in, n));
    std::vector<std::string> implicit = n.implicit_inputs();
    for (const std::string& in : implicit) resolve(in, n);
    const KernelTable::Entry* e = table.find(st.domain, n.op_type, st.opset);
    if (!e) {
      ++missing_ops[fmt::format("{} (domain {}, opset {})", n.op_type, domain_name(st.domain), st.opset)];
      missing.push_back(fmt::format("node '{}': operator {} of domain {} at opset {}", n.name, n.op_type,
                                    domain_name(st.domain), st.opset));
    } else {
      std::vector<const RunValue*> consts;
      for (int s : st.in) consts.push_back(s >= 0 && constants_[s].data ? &constants_[s] : nullptr);
      // Names visible to this node's subgraphs: everything defined so far
      // here and in the enclosing scopes.
      std::vector<std::string> visible(defined.begin(), defined.end());
      visible.insert(visible.end(), outer_names.begin(), outer_names.end());
      KernelInit init{n, st.opset, threads, consts,
                      [this, &opsets, visible](const Graph& g) -> std::unique_ptr<SubgraphRunner> {
                        return std::make_unique<Plan>(g, g.initializers, opsets, threads_, pool_, false,
                                                      visible);
                      }};
      try {
        st.kernel = e->factory(init);
      } catch (const std::exception& ex) {
        throw Error(where(st) + ": " + ex.what());
      }
    }
    for (const std::string& o : n.outputs) {
      if (o.empty()) {
        st.out.push_back(-1);
        continue;
      }
      st.out.push_back(slot_of(o));
      defined.insert(o);
    }
    // A Constant node's value is computed once, here, so kernels reading it
    // see it as a constant input (weights of models stored as Constant nodes).
    if (st.kernel && st.domain.empty() && n.op_type == "Constant" && st.out.size() == 1 && st.out[0] >= 0) {
      std::vector<RunValue> outs(1);
      KernelContext ctx(n, st.opset, threads, *pool_, {}, outs);
      try {
        st.kernel->run(ctx);
      } catch (const std::exception& ex) {
        throw Error(where(st) + ": " + ex.what());
      }
      constants_[st.out[0]] = std::move(outs[0]);
      continue;
    }
    steps_.push_back(std::move(st));
  }
  if (!missing.empty()) {
    std::string msg = "the cpu executor does not support " + std::to_string(missing.size()) +
                      (missing.size() == 1 ? " node" : " nodes") + " of this graph:";
    for (size_t i = 0; i < missing.size() && i < 20; ++i) msg += "\n  " + missing[i];
    if (missing.size() > 20) msg += "\n  ... and " + std::to_string(missing.size() - 20) + " more";
    if (missing_ops.size() > 1) {
      msg += "\nby operator:";
      for (const auto& [op, count] : missing_ops) msg += fmt::format("\n  {} x{}", op, count);
    }
    msg +=
        "\n(executors/cpu/README.md lists the supported operators; another executor may be chosen with "
        "[build] executor)";
    throw Error(msg);
  }
  for (const ValueInfo& vi : graph.outputs) {
    if (!defined.count(vi.name))
      throw Error("graph output '" + vi.name + "' is not produced by any node, input or initializer");
    output_slots_.push_back(slot_of(vi.name));
    output_names_.push_back(vi.name);
  }

  // Last uses: a value is released after the last step reading it (directly
  // or from a subgraph); graph outputs, constants and outer values are kept.
  std::vector<int> last(slot_names_.size(), -1);
  for (size_t i = 0; i < steps_.size(); ++i) {
    for (int s : steps_[i].in)
      if (s >= 0) last[s] = static_cast<int>(i);
    for (const std::string& in : steps_[i].node->implicit_inputs()) last[slots_.at(in)] = static_cast<int>(i);
  }
  std::vector<bool> keep(slot_names_.size(), false);
  for (int s : output_slots_) keep[s] = true;
  for (int s : outer_slots_) keep[s] = true;
  for (size_t s = 0; s < slot_names_.size(); ++s)
    if (constants_[s].data) keep[s] = true;
  for (size_t s = 0; s < slot_names_.size(); ++s) {
    if (keep[s]) continue;
    if (last[s] >= 0) steps_[last[s]].release.push_back(static_cast<int>(s));
  }
  // Produced but never read: released right after the producing step.
  for (size_t i = 0; i < steps_.size(); ++i)
    for (int s : steps_[i].out)
      if (s >= 0 && !keep[s] && last[s] < 0) steps_[i].release.push_back(s);
  for (int s : input_slots_)
    if (!keep[s] && last[s] < 0) release_unused_inputs_.push_back(s);
  wants_.assign(slot_names_.size(), -1);
}

void Plan::run(const std::vector<RunValue>& inputs, std::vector<RunValue>& outputs,
               const std::function<const RunValue*(const std::string&)>& outer) {
  std::vector<const RunValue*> ptrs;
  for (const RunValue& v : inputs) ptrs.push_back(&v);
  run_observed(ptrs, outputs, outer, nullptr);
}

void Plan::run_observed(const std::vector<const RunValue*>& inputs, std::vector<RunValue>& outputs,
                        const std::function<const RunValue*(const std::string&)>& outer, Observer* observer) {
  // Values of this run, by slot: a nested run (a Loop body) has its own.
  std::vector<RunValue> values(slot_names_.size());
  std::vector<const RunValue*> at(slot_names_.size(), nullptr);
  for (size_t s = 0; s < constants_.size(); ++s)
    if (constants_[s].data) at[s] = &constants_[s];
  if (observer != last_observer_) {
    wants_.assign(slot_names_.size(), -1);
    last_observer_ = observer;
  }
  auto observe = [&](int s) {
    if (!observer) return;
    if (wants_[s] < 0) wants_[s] = observer->wants(slot_names_[s], values[s].type) ? 1 : 0;
    if (wants_[s]) observer->observe(slot_names_[s], values[s]);
  };

  if (inputs.size() != input_slots_.size())
    throw Error(fmt::format("graph '{}' takes {} inputs, {} were given", graph_.name, input_slots_.size(),
                            inputs.size()));
  for (size_t i = 0; i < input_slots_.size(); ++i) {
    const int s = input_slots_[i];
    if (!inputs[i]) {
      if (!constants_[s].data)
        throw Error("input '" + input_names_[i] + "' is required (it has no initializer)");
      continue;
    }
    const RunValue& v = *inputs[i];
    if (input_types_[i] != ElemType::Count_ && v.type != input_types_[i])
      throw Error(fmt::format("input '{}' expects {}, found {}", input_names_[i], name_of(input_types_[i]),
                              describe(v)));
    const auto& dims = input_dims_[i];
    bool ok = !input_rank_known_[i] || dims.size() == v.shape.size();
    for (size_t d = 0; ok && d < dims.size(); ++d) ok = dims[d] < 0 || dims[d] == v.shape[d];
    if (!ok)
      throw Error(fmt::format("input '{}' expects shape {}, found {}", input_names_[i], shape_str(dims),
                              describe(v)));
    if (!v.data || v.data->size() < bytes_of(v.type, v.numel()))
      throw Error(
          fmt::format("input '{}' ({}) has fewer bytes than its shape needs", input_names_[i], describe(v)));
    values[s] = v;
    at[s] = &values[s];
    observe(s);
  }
  for (int s : outer_slots_) {
    const RunValue* v = outer ? outer(slot_names_[s]) : nullptr;
    if (!v) throw Error("value '" + slot_names_[s] + "' of an enclosing graph is not available");
    at[s] = v;
  }
  for (int s : release_unused_inputs_) {
    values[s] = RunValue();
    at[s] = nullptr;
  }
  // Subgraphs see every value of this run, then the enclosing scopes'.
  std::function<const RunValue*(const std::string&)> resolver =
      [&](const std::string& name) -> const RunValue* {
    auto it = slots_.find(name);
    if (it != slots_.end() && at[it->second]) return at[it->second];
    return outer ? outer(name) : nullptr;
  };

  std::vector<RunValue> outs;
  for (Step& st : steps_) {
    std::vector<const RunValue*> ins;
    ins.reserve(st.in.size());
    for (int s : st.in) {
      if (s >= 0 && !at[s])
        throw Error(where(st) + ": input '" + slot_names_[s] +
                    "' was freed or never produced (a bug: " + "report it with the model)");
      ins.push_back(s >= 0 ? at[s] : nullptr);
    }
    outs.assign(st.out.size(), RunValue());
    KernelContext ctx(*st.node, st.opset, threads_, *pool_, std::move(ins), outs);
    ctx.outer = &resolver;
    const auto t0 = profile_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    try {
      st.kernel->run(ctx);
    } catch (const std::exception& ex) {
      throw Error(where(st) + ": " + ex.what());
    }
    if (profile_) {
      st.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++st.calls;
    }
    for (size_t o = 0; o < st.out.size(); ++o) {
      const int s = st.out[o];
      if (s < 0) continue;
      if (!outs[o].data)
        throw Error(where(st) + ": the kernel produced no value for output '" + slot_names_[s] + "' (a bug)");
      values[s] = std::move(outs[o]);
      at[s] = &values[s];
      observe(s);
    }
    for (int s : st.release) {
      values[s] = RunValue();
      at[s] = nullptr;
    }
  }
  outputs.clear();
  for (int s : output_slots_) outputs.push_back(*at[s]);
}

std::string Plan::profile_report() const {
  if (!profile_) return {};
  double total = 0;
  std::map<std::string, std::pair<double, int>> by_op;
  for (const Step& s : steps_) {
    total += s.seconds;
    auto& e = by_op[s.node->op_type];
    e.first += s.seconds;
    e.second += 1;
  }
  std::vector<std::pair<double, std::string>> ops;
  for (const auto& kv : by_op) ops.emplace_back(kv.second.first, kv.first);
  std::sort(ops.rbegin(), ops.rend());
  std::ostringstream os;
  os << fmt::format("time in kernels: {:.3f} s over {} runs\n", total, steps_.empty() ? 0 : steps_[0].calls);
  os << fmt::format("{:<28} {:>6} {:>10} {:>7}\n", "op type", "nodes", "ms", "%");
  for (const auto& [t, op] : ops)
    os << fmt::format("{:<28} {:>6} {:>10.2f} {:>6.1f}%\n", op, by_op.at(op).second, t * 1e3,
                      total > 0 ? 100 * t / total : 0.0);
  std::vector<const Step*> nodes;
  for (const Step& s : steps_) nodes.push_back(&s);
  std::sort(nodes.begin(), nodes.end(), [](const Step* a, const Step* b) { return a->seconds > b->seconds; });
  os << fmt::format("\n{:<40} {:<20} {:>10} {:>7}\n", "node (slowest 20)", "op type", "ms", "%");
  for (size_t i = 0; i < nodes.size() && i < 20; ++i)
    os << fmt::format("{:<40} {:<20} {:>10.2f} {:>6.1f}%\n", nodes[i]->node->name, nodes[i]->node->op_type,
                      nodes[i]->seconds * 1e3, total > 0 ? 100 * nodes[i]->seconds / total : 0.0);
  return os.str();
}

}  // namespace qforge::cpu
