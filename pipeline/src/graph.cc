#include "qforge/graph.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <unordered_map>

#include "qforge/status.h"

namespace qforge {

// ---------------------------------------------------------------- value types

ValueType ValueType::tensor(ElemType t, std::vector<Dim> dims) {
  ValueType v;
  v.kind = Kind::Tensor;
  v.elem = t;
  v.shape = std::move(dims);
  return v;
}

ValueType ValueType::tensor(ElemType t, const std::vector<int64_t>& dims) {
  std::vector<Dim> d(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] >= 0) d[i].value = dims[i];
  }
  return tensor(t, std::move(d));
}

// ---------------------------------------------------------------- attributes

Attribute Attribute::of_int(std::string name, int64_t v) {
  Attribute a;
  a.name = std::move(name);
  a.type = Type::Int;
  a.i = v;
  return a;
}

Attribute Attribute::of_float(std::string name, float v) {
  Attribute a;
  a.name = std::move(name);
  a.type = Type::Float;
  a.f = v;
  return a;
}

Attribute Attribute::of_string(std::string name, std::string v) {
  Attribute a;
  a.name = std::move(name);
  a.type = Type::String;
  a.s = std::move(v);
  return a;
}

Attribute Attribute::of_ints(std::string name, std::vector<int64_t> v) {
  Attribute a;
  a.name = std::move(name);
  a.type = Type::Ints;
  a.ints = std::move(v);
  return a;
}

Attribute Attribute::of_floats(std::string name, std::vector<float> v) {
  Attribute a;
  a.name = std::move(name);
  a.type = Type::Floats;
  a.floats = std::move(v);
  return a;
}

Attribute Attribute::of_tensor(std::string name, Tensor t) {
  Attribute a;
  a.name = std::move(name);
  a.type = Type::Tensor;
  a.tensors.push_back(std::move(t));
  return a;
}

// ---------------------------------------------------------------- nodes

const Attribute* Node::attr(const std::string& attr_name) const {
  for (const Attribute& a : attributes) {
    if (a.name == attr_name) return &a;
  }
  return nullptr;
}

Attribute* Node::attr(const std::string& attr_name) {
  for (Attribute& a : attributes) {
    if (a.name == attr_name) return &a;
  }
  return nullptr;
}

namespace {

// Names a graph defines itself: inputs, initializers, node outputs.
std::unordered_set<std::string> defined_names(const Graph& g) {
  std::unordered_set<std::string> d;
  for (const ValueInfo& v : g.inputs) d.insert(v.name);
  for (const Tensor& t : g.initializers) d.insert(t.name);
  for (const auto& s : g.sparse_initializers) d.insert(s.first);
  for (const Node& n : g.nodes) {
    for (const std::string& o : n.outputs) d.insert(o);
  }
  return d;
}

// Adds to `out` the names `g` (and its subgraphs) reads without defining.
void free_names(const Graph& g, std::vector<std::string>& out, std::unordered_set<std::string>& seen) {
  std::unordered_set<std::string> defined = defined_names(g);
  auto use = [&](const std::string& name) {
    if (!name.empty() && !defined.count(name) && seen.insert(name).second) out.push_back(name);
  };
  for (const Node& n : g.nodes) {
    for (const std::string& in : n.inputs) use(in);
    for (const std::string& in : n.implicit_inputs()) use(in);
  }
  for (const ValueInfo& v : g.outputs) use(v.name);
}

bool has_subgraphs(const Node& n) {
  for (const Attribute& a : n.attributes) {
    if (!a.graphs.empty()) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> Node::implicit_inputs() const {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const Attribute& a : attributes) {
    for (const auto& g : a.graphs) {
      if (g) free_names(*g, out, seen);
    }
  }
  return out;
}

// ---------------------------------------------------------------- graph queries

int Graph::producer(const std::string& value) const {
  if (value.empty()) return -1;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const std::string& o : nodes[i].outputs) {
      if (o == value) return static_cast<int>(i);
    }
  }
  return -1;
}

std::vector<size_t> Graph::consumers(const std::string& value) const {
  std::vector<size_t> out;
  if (value.empty()) return out;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    bool uses = std::find(n.inputs.begin(), n.inputs.end(), value) != n.inputs.end();
    if (!uses && has_subgraphs(n)) {
      std::vector<std::string> imp = n.implicit_inputs();
      uses = std::find(imp.begin(), imp.end(), value) != imp.end();
    }
    if (uses) out.push_back(i);
  }
  return out;
}

bool Graph::is_input(const std::string& value) const {
  for (const ValueInfo& v : inputs) {
    if (v.name == value) return true;
  }
  return false;
}

bool Graph::is_output(const std::string& value) const {
  for (const ValueInfo& v : outputs) {
    if (v.name == value) return true;
  }
  return false;
}

const ValueInfo* Graph::find_value_info(const std::string& value) const {
  return const_cast<Graph*>(this)->find_value_info(value);
}

ValueInfo* Graph::find_value_info(const std::string& value) {
  for (auto* list : {&inputs, &outputs, &value_info}) {
    for (ValueInfo& v : *list) {
      if (v.name == value) return &v;
    }
  }
  return nullptr;
}

int64_t Graph::opset(const std::string& domain) const {
  const bool want_default = domain.empty() || domain == "ai.onnx";
  for (const OpsetImport& o : model.opset_imports) {
    const bool is_default = o.domain.empty() || o.domain == "ai.onnx";
    if (want_default ? is_default : o.domain == domain) return o.version;
  }
  return -1;
}

void Graph::collect_names(std::unordered_set<std::string>& out) const {
  for (auto* list : {&inputs, &outputs, &value_info}) {
    for (const ValueInfo& v : *list) out.insert(v.name);
  }
  for (const Tensor& t : initializers) out.insert(t.name);
  for (const auto& s : sparse_initializers) out.insert(s.first);
  for (const Node& n : nodes) {
    if (!n.name.empty()) out.insert(n.name);
    for (const std::string& s : n.inputs) out.insert(s);
    for (const std::string& s : n.outputs) out.insert(s);
    for (const Attribute& a : n.attributes) {
      for (const auto& g : a.graphs) {
        if (g) g->collect_names(out);
      }
    }
  }
  out.erase("");
}

void Graph::detach_subgraphs() {
  for (Node& n : nodes) {
    for (Attribute& a : n.attributes) {
      for (auto& g : a.graphs) {
        if (!g) continue;
        g = std::make_shared<Graph>(*g);
        g->detach_subgraphs();
      }
    }
  }
}

// ---------------------------------------------------------------- edits

size_t Graph::insert_node(Node node) {
  size_t pos = 0;
  std::vector<std::string> reads = node.inputs;
  for (const std::string& s : node.implicit_inputs()) reads.push_back(s);
  for (const std::string& in : reads) {
    int p = producer(in);
    if (p >= 0) pos = std::max(pos, static_cast<size_t>(p) + 1);
  }
  for (const std::string& out : node.outputs) {
    for (size_t c : consumers(out)) {
      if (c < pos) {
        throw Error("cannot insert node '" + node.name + "' (" + node.op_type + "): its output '" + out +
                    "' is read by node '" + nodes[c].name +
                    "', which comes before the producer of one of its inputs; "
                    "insert the node before rewiring its consumers");
      }
    }
  }
  nodes.insert(nodes.begin() + static_cast<std::ptrdiff_t>(pos), std::move(node));
  return pos;
}

void Graph::remove_nodes(std::vector<size_t> indices) {
  std::sort(indices.begin(), indices.end());
  indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
  std::vector<Node> kept;
  kept.reserve(nodes.size());
  size_t k = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (k < indices.size() && indices[k] == i) {
      ++k;
      continue;
    }
    kept.push_back(std::move(nodes[i]));
  }
  nodes = std::move(kept);
}

namespace {

void replace_in(Graph& g, const std::string& from, const std::string& to, int except) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (static_cast<int>(i) == except) continue;
    Node& n = g.nodes[i];
    for (std::string& in : n.inputs) {
      if (in == from) in = to;
    }
    for (Attribute& a : n.attributes) {
      for (auto& sub : a.graphs) {
        if (!sub || defined_names(*sub).count(from)) continue;
        if (sub.use_count() > 1) sub = std::make_shared<Graph>(*sub);  // copy on write
        replace_in(*sub, from, to, -1);
        for (ValueInfo& o : sub->outputs) {
          if (o.name == from) o.name = to;
        }
      }
    }
  }
}

}  // namespace

void Graph::replace_uses(const std::string& from, const std::string& to, int except) {
  if (from.empty() || from == to) return;
  replace_in(*this, from, to, except);
}

// ---------------------------------------------------------------- validation

namespace {

// Stable topological sort (Kahn, smallest original index first); throws on a cycle.
void sort_nodes(std::vector<Node>& nodes, std::vector<size_t>& indegree,
                const std::vector<std::vector<size_t>>& users, const std::string& where,
                const std::function<std::string(size_t)>& node_label) {
  std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (indegree[i] == 0) ready.push(i);
  }
  std::vector<size_t> order;
  order.reserve(nodes.size());
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t u : users[i]) {
      if (--indegree[u] == 0) ready.push(u);
    }
  }
  if (order.size() != nodes.size()) {
    std::string members;
    int listed = 0;
    for (size_t i = 0; i < nodes.size() && listed < 4; ++i) {
      if (indegree[i] > 0) {
        members += (listed++ ? ", " : "") + node_label(i);
      }
    }
    throw Error(where + ": the nodes form a cycle (" + std::to_string(nodes.size() - order.size()) +
                " nodes involved, including " + members + "); a graph must be acyclic — break the cycle");
  }
  std::vector<Node> reordered;
  reordered.reserve(nodes.size());
  for (size_t i : order) reordered.push_back(std::move(nodes[i]));
  nodes = std::move(reordered);
}

}  // namespace

void Graph::validate(const std::unordered_set<std::string>& outer,
                     const std::vector<std::string>& initializer_names) {
  const std::string where = name.empty() ? std::string("graph") : "graph '" + name + "'";
  auto node_label = [&](size_t i) {
    const Node& n = nodes[i];
    return "node #" + std::to_string(i) + (n.name.empty() ? "" : " '" + n.name + "'") + " (" +
           (n.domain.empty() ? "" : n.domain + ".") + n.op_type + ")";
  };

  // Which values exist before any node runs, and who produces the rest.
  std::unordered_set<std::string> available = outer;
  for (const ValueInfo& v : inputs) available.insert(v.name);
  for (const std::string& s : initializer_names) available.insert(s);
  for (const auto& s : sparse_initializers) available.insert(s.first);
  std::unordered_map<std::string, size_t> produced_by;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const std::string& o : nodes[i].outputs) {
      if (o.empty()) continue;
      if (available.count(o) && !outer.count(o)) {
        throw Error(where + ": " + node_label(i) + " writes value '" + o +
                    "', which is already a graph input or initializer (rename the output)");
      }
      auto [it, fresh] = produced_by.emplace(o, i);
      if (!fresh) {
        throw Error(where + ": value '" + o + "' is produced by both " + node_label(it->second) + " and " +
                    node_label(i) + "; every value must have one producer (rename one output)");
      }
    }
  }

  // Each node's dependencies on other nodes; dangling reads are errors.
  std::vector<std::vector<size_t>> deps(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::vector<std::string> reads = nodes[i].inputs;
    for (const std::string& s : nodes[i].implicit_inputs()) reads.push_back(s);
    for (const std::string& in : reads) {
      if (in.empty()) continue;
      auto it = produced_by.find(in);
      if (it != produced_by.end()) {
        deps[i].push_back(it->second);
      } else if (!available.count(in)) {
        throw Error(where + ": " + node_label(i) + " reads value '" + in +
                    "', which no graph input, initializer or node output defines "
                    "(dangling input; fix the name or add the missing producer)");
      }
    }
  }
  for (const ValueInfo& v : outputs) {
    if (!available.count(v.name) && !produced_by.count(v.name)) {
      throw Error(where + ": graph output '" + v.name +
                  "' is not produced by any node, input or initializer");
    }
  }

  std::vector<size_t> indegree(nodes.size(), 0);
  std::vector<std::vector<size_t>> users(nodes.size());
  bool sorted = true;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (size_t d : deps[i]) {
      if (d == i) {
        throw Error(where + ": " + node_label(i) + " reads its own output (a cycle)");
      }
      if (d > i) sorted = false;
      users[d].push_back(i);
      ++indegree[i];
    }
  }
  if (!sorted) sort_nodes(nodes, indegree, users, where, node_label);

  // Subgraphs see everything this graph defines.
  bool any_sub = false;
  for (const Node& n : nodes) any_sub = any_sub || has_subgraphs(n);
  if (!any_sub) return;
  std::unordered_set<std::string> scope = available;
  for (const auto& kv : produced_by) scope.insert(kv.first);
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (Attribute& a : nodes[i].attributes) {
      for (auto& sub : a.graphs) {
        if (!sub) continue;
        std::vector<std::string> names;
        for (const Tensor& t : sub->initializers) names.push_back(t.name);
        try {
          sub->validate(scope, names);
        } catch (const Error& e) {
          throw Error(where + ": " + node_label(i) + " attribute '" + a.name + "': " + e.what());
        }
      }
    }
  }
}

// ---------------------------------------------------------------- uses

ValueUses::ValueUses(const Graph& graph) {
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& n = graph.nodes[i];
    for (const std::string& o : n.outputs) {
      if (!o.empty()) producer.emplace(o, i);
    }
    std::unordered_set<std::string> seen;
    auto use = [&](const std::string& v) {
      if (!v.empty() && seen.insert(v).second) consumers[v].push_back(i);
    };
    for (const std::string& in : n.inputs) use(in);
    if (has_subgraphs(n)) {
      for (const std::string& in : n.implicit_inputs()) use(in);
    }
  }
}

int ValueUses::producer_of(const std::string& value) const {
  auto it = producer.find(value);
  return it == producer.end() ? -1 : static_cast<int>(it->second);
}

const std::vector<size_t>& ValueUses::consumers_of(const std::string& value) const {
  static const std::vector<size_t> none;
  auto it = consumers.find(value);
  return it == consumers.end() ? none : it->second;
}

// ---------------------------------------------------------------- names

NameAllocator::NameAllocator(const Model& model) {
  for (const Tensor& t : model.tensors) taken_.insert(t.name);
  if (model.graph) model.graph->collect_names(taken_);
}

NameAllocator::NameAllocator(const Graph& graph) { graph.collect_names(taken_); }

std::string NameAllocator::fresh(const std::string& base) {
  if (!base.empty() && taken_.insert(base).second) return base;
  const std::string stem = base.empty() ? std::string("v") : base;
  for (uint64_t k = 1;; ++k) {
    std::string candidate = stem + "_" + std::to_string(k);
    if (taken_.insert(candidate).second) return candidate;
  }
}

Node make_node(std::string name, std::string op, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

}  // namespace qforge
