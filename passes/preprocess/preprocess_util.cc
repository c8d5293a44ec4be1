// See preprocess_util.h.
#include "preprocess_util.h"

#include <cstring>

#include "graph_rewrite.h"

namespace qforge::preprocess {

namespace {

const ValueInfo* info_of(const Model& m, const std::string& value) {
  return m.graph ? m.graph->find_value_info(value) : nullptr;
}

}  // namespace

std::optional<ElemType> value_elem(const Model& m, const std::string& value) {
  if (const Tensor* t = m.tensor(value)) return t->type;
  const ValueInfo* vi = info_of(m, value);
  if (vi && vi->type.kind == ValueType::Kind::Tensor) return vi->type.elem;
  return std::nullopt;
}

std::optional<std::vector<Dim>> value_dims(const Model& m, const std::string& value) {
  if (const Tensor* t = m.tensor(value)) {
    std::vector<Dim> d(t->shape.size());
    for (size_t i = 0; i < d.size(); ++i) d[i].value = t->shape[i];
    return d;
  }
  const ValueInfo* vi = info_of(m, value);
  if (vi && vi->type.kind == ValueType::Kind::Tensor) return vi->type.shape;
  return std::nullopt;
}

std::optional<std::vector<int64_t>> static_shape(const Model& m, const std::string& value) {
  auto d = value_dims(m, value);
  if (!d) return std::nullopt;
  std::vector<int64_t> s;
  for (const Dim& x : *d) {
    if (!x.known()) return std::nullopt;
    s.push_back(x.value);
  }
  return s;
}

std::optional<std::vector<int64_t>> const_ints(const Model& m, const std::string& name) {
  if (!quant::is_constant_initializer(m, name)) return std::nullopt;
  const Tensor* t = m.tensor(name);
  if (!t || (t->type != ElemType::I64 && t->type != ElemType::I32) || t->producer) return std::nullopt;
  BlobPtr b = t->bytes();
  const uint64_t n = t->numel();
  const size_t w = t->type == ElemType::I64 ? 8 : 4;
  if (!b || b->size() != n * w) return std::nullopt;
  std::vector<int64_t> v(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (w == 8) {
      std::memcpy(&v[i], b->data() + i * 8, 8);
    } else {
      int32_t x;
      std::memcpy(&x, b->data() + i * 4, 4);
      v[i] = x;
    }
  }
  return v;
}

bool bypass_node(Model& m, size_t index, const std::string& in, const std::string& out, std::string& reason) {
  Graph& g = m.mutable_graph();
  if (!g.is_output(out)) {
    g.replace_uses(out, in, static_cast<int>(index));
    g.remove_nodes({index});
    for (size_t i = 0; i < g.value_info.size(); ++i) {
      if (g.value_info[i].name == out) {
        g.value_info.erase(g.value_info.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
    return true;
  }
  // `out` is a graph output: its name stays, so `in`'s producer takes it.
  const int p = g.producer(in);
  if (p < 0) {
    reason = "its output is a graph output and its input is a graph input or initializer";
    return false;
  }
  if (g.is_output(in)) {
    reason = "both its input and its output are graph outputs";
    return false;
  }
  for (size_t c : g.consumers(in)) {
    if (c == index) continue;
    for (const std::string& ii : g.nodes[c].implicit_inputs()) {
      if (ii == in) {
        reason = "its output is a graph output and its input is read inside a subgraph";
        return false;
      }
    }
  }
  g.remove_nodes({index});
  g.replace_uses(in, out);
  for (std::string& o : g.nodes[static_cast<size_t>(p)].outputs) {
    if (o == in) o = out;
  }
  for (size_t i = 0; i < g.value_info.size(); ++i) {
    if (g.value_info[i].name == in) {
      g.value_info.erase(g.value_info.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  return true;
}

}  // namespace qforge::preprocess
