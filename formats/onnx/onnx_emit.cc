// ONNX emit: qforge::Model -> ModelProto bytes, streamed.
//
// The proto is built without the top-level initializers' data; their bytes
// are then streamed one tensor at a time, either inline (as raw_data, written
// by hand after the rest of each TensorProto) or into the sidecar
// `<model>.data`. Peak memory grows with the largest tensor, and a model over
// protobuf's 2 GiB limit is written with external data.
#include <climits>
#include <cstring>

#include <google/protobuf/io/coded_stream.h>
#include <onnx/onnx_pb.h>

#include "onnx_format.h"
#include "onnx_internal.h"
#include "qforge/atomic_file.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {

std::optional<uint64_t> onnx_byte_size(ElemType t, uint64_t n) {
  if (t == ElemType::String) return std::nullopt;
  if (t == ElemType::I4 || t == ElemType::U4) return n / 2 + n % 2;
  return byte_size(t, n);
}

std::vector<uint8_t> encode_strings(const std::vector<std::string>& items) {
  std::vector<uint8_t> out;
  for (const std::string& s : items) {
    uint64_t len = s.size();
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(len >> (8 * i));
    out.insert(out.end(), le, le + 8);
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

std::vector<std::string> decode_strings(const Blob& blob, uint64_t count, const std::string& what) {
  std::vector<std::string> out;
  const uint8_t* p = blob.data();
  uint64_t left = blob.size();
  for (uint64_t k = 0; k < count; ++k) {
    if (left < 8) throw Error(what + ": string tensor data ends inside element " + std::to_string(k));
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(p[i]) << (8 * i);
    p += 8;
    left -= 8;
    if (len > left) throw Error(what + ": string element " + std::to_string(k) + " overruns the data");
    out.emplace_back(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
    p += len;
    left -= len;
  }
  if (left != 0) throw Error(what + ": string tensor data has " + std::to_string(left) + " extra bytes");
  return out;
}

void encode_type(const ValueType& v, onnx::TypeProto& out) {
  switch (v.kind) {
    case ValueType::Kind::None: return;
    case ValueType::Kind::Other:
      if (!out.ParseFromString(v.opaque)) throw Error("a value's opaque type is not a TypeProto");
      return;
    case ValueType::Kind::Tensor: break;
  }
  auto* tt = out.mutable_tensor_type();
  if (v.elem) {
    int id = traits(*v.elem).onnx_id;
    if (id < 0) throw Error(std::string("element type ") + name_of(*v.elem) + " has no ONNX equivalent");
    tt->set_elem_type(id);
  }
  if (v.shape) {
    auto* shape = tt->mutable_shape();
    for (const Dim& d : *v.shape) {
      auto* dp = shape->add_dim();
      if (d.value >= 0)
        dp->set_dim_value(d.value);
      else if (!d.param.empty())
        dp->set_dim_param(d.param);
      if (!d.denotation.empty()) dp->set_denotation(d.denotation);
    }
  }
  if (!v.denotation.empty()) out.set_denotation(v.denotation);
}

namespace {

constexpr uint64_t kProtoLimit = static_cast<uint64_t>(INT_MAX);  // protobuf's hard limit
constexpr uint64_t kAutoThreshold = 1024;  // bytes; as onnx.save_model's size_threshold

void set_unknown(google::protobuf::UnknownFieldSet* u, const std::string& bytes, const std::string& what) {
  if (!bytes.empty() && !u->ParseFromString(bytes)) {
    throw Error(what + ": carried-over protobuf fields are corrupt");
  }
}

void parse_opaque(google::protobuf::MessageLite& m, const std::string& bytes, const std::string& what) {
  if (!m.ParseFromString(bytes)) throw Error(what + ": carried-over protobuf bytes are corrupt");
}

int onnx_type_of(const Tensor& t, const std::string& what) {
  int id = traits(t.type).onnx_id;
  if (id < 0) {
    throw Error(what + " tensor '" + t.name + "' has encoding " + name_of(t.type) +
                ", which ONNX cannot store; emit this model as GGUF or choose an ONNX type");
  }
  return id;
}

uint64_t expected_bytes(const Tensor& t, const std::string& what) {
  auto b = onnx_byte_size(t.type, t.numel());
  if (!b) throw Error(what + " tensor '" + t.name + "': byte size overflows");
  return *b;
}

// Dims, type, name, doc string: everything but the data.
void encode_header(const Tensor& t, onnx::TensorProto& tp, const std::string& doc, const std::string& what) {
  if (!t.name.empty()) tp.set_name(t.name);
  for (int64_t d : t.shape) {
    if (d < 0) throw Error(what + " tensor '" + t.name + "' has negative dimension " + std::to_string(d));
    tp.add_dims(d);
  }
  tp.set_data_type(onnx_type_of(t, what));
  if (!doc.empty()) tp.set_doc_string(doc);
}

BlobPtr checked_bytes(const Tensor& t, uint64_t expected, const std::string& what) {
  BlobPtr b = t.bytes();
  if (!b) throw Error(what + " tensor '" + t.name + "' has no data");
  if (b->size() != expected) {
    throw Error(what + " tensor '" + t.name + "': its data has " + std::to_string(b->size()) +
                " bytes but shape " + shape_str(t.shape) + " of " + name_of(t.type) + " needs " +
                std::to_string(expected));
  }
  return b;
}

// A whole tensor inside the proto (attributes, subgraph initializers, strings).
void encode_tensor_inline(const Tensor& t, onnx::TensorProto& tp, const std::string& doc,
                          const std::string& what) {
  encode_header(t, tp, doc, what);
  if (t.type == ElemType::String) {
    BlobPtr b = t.bytes();
    if (!b) throw Error(what + " tensor '" + t.name + "' has no data");
    for (std::string& s : decode_strings(*b, t.numel(), what + " tensor '" + t.name + "'")) {
      tp.add_string_data(std::move(s));
    }
    return;
  }
  BlobPtr b = checked_bytes(t, expected_bytes(t, what), what);
  tp.set_raw_data(b->data(), static_cast<size_t>(b->size()));
}

void encode_value_info(const ValueInfo& v, onnx::ValueInfoProto& p) {
  p.set_name(v.name);
  if (v.type.kind != ValueType::Kind::None) {
    try {
      encode_type(v.type, *p.mutable_type());
    } catch (const Error& e) {
      throw Error("value '" + v.name + "': " + e.what());
    }
  }
  if (!v.doc_string.empty()) p.set_doc_string(v.doc_string);
  set_unknown(p.mutable_unknown_fields(), v.opaque, "value '" + v.name + "'");
}

void encode_graph(const Graph& g, onnx::GraphProto& gp, const std::string& where);

void encode_attribute(const Attribute& a, onnx::AttributeProto& ap, const std::string& where) {
  using T = Attribute::Type;
  const std::string at = where + " attribute '" + a.name + "'";
  ap.set_name(a.name);
  if (!a.ref_attr_name.empty()) ap.set_ref_attr_name(a.ref_attr_name);
  if (!a.doc_string.empty()) ap.set_doc_string(a.doc_string);
  if (a.type != T::Undefined) ap.set_type(static_cast<onnx::AttributeProto::AttributeType>(a.type));
  auto one = [&](size_t n) {
    if (n != 1) throw Error(at + ": expected exactly one value, found " + std::to_string(n));
  };
  // A reference to the caller's attribute (inside functions) has no value of its own.
  const bool ref = !a.ref_attr_name.empty();
  switch (a.type) {
    case T::Undefined: break;
    case T::Float:
      if (!ref || a.f != 0) ap.set_f(a.f);
      break;
    case T::Int:
      if (!ref || a.i != 0) ap.set_i(a.i);
      break;
    case T::String:
      if (!ref || !a.s.empty()) ap.set_s(a.s);
      break;
    case T::Tensor:
      one(a.tensors.size());
      encode_tensor_inline(a.tensors[0], *ap.mutable_t(), "", at);
      break;
    case T::Graph:
      one(a.graphs.size());
      encode_graph(*a.graphs[0], *ap.mutable_g(), at);
      break;
    case T::Floats:
      for (float f : a.floats) ap.add_floats(f);
      break;
    case T::Ints:
      for (int64_t i : a.ints) ap.add_ints(i);
      break;
    case T::Strings:
      for (const auto& s : a.strings) ap.add_strings(s);
      break;
    case T::Tensors:
      for (const Tensor& t : a.tensors) encode_tensor_inline(t, *ap.add_tensors(), "", at);
      break;
    case T::Graphs:
      for (const auto& g : a.graphs) encode_graph(*g, *ap.add_graphs(), at);
      break;
    case T::SparseTensor:
      one(a.opaque.size());
      parse_opaque(*ap.mutable_sparse_tensor(), a.opaque[0], at);
      break;
    case T::SparseTensors:
      for (const auto& s : a.opaque) parse_opaque(*ap.add_sparse_tensors(), s, at);
      break;
    case T::TypeProto:
      one(a.opaque.size());
      parse_opaque(*ap.mutable_tp(), a.opaque[0], at);
      break;
    case T::TypeProtos:
      for (const auto& s : a.opaque) parse_opaque(*ap.add_type_protos(), s, at);
      break;
  }
}

const std::string& doc_of(const Graph& g, const std::string& name) {
  static const std::string empty;
  for (const auto& kv : g.initializer_docs) {
    if (kv.first == name) return kv.second;
  }
  return empty;
}

// Everything but the top-level initializers (the caller streams those).
void encode_graph(const Graph& g, onnx::GraphProto& gp, const std::string& where) {
  const std::string gwhere = where + (where.empty() ? "" : " subgraph ") + "graph '" + g.name + "'";
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const std::string nwhere = gwhere + " node #" + std::to_string(i) +
                               (n.name.empty() ? "" : " '" + n.name + "'") + " (" + n.op_type + ")";
    auto* np = gp.add_node();
    for (const auto& s : n.inputs) np->add_input(s);
    for (const auto& s : n.outputs) np->add_output(s);
    if (!n.name.empty()) np->set_name(n.name);
    np->set_op_type(n.op_type);
    if (!n.domain.empty()) np->set_domain(n.domain);
    for (const Attribute& a : n.attributes) encode_attribute(a, *np->add_attribute(), nwhere);
    if (!n.doc_string.empty()) np->set_doc_string(n.doc_string);
    set_unknown(np->mutable_unknown_fields(), n.opaque, nwhere);
  }
  gp.set_name(g.name);
  for (const Tensor& t : g.initializers) {
    encode_tensor_inline(t, *gp.add_initializer(), doc_of(g, t.name), gwhere + " initializer");
  }
  for (const auto& s : g.sparse_initializers) {
    parse_opaque(*gp.add_sparse_initializer(), s.second, gwhere + " sparse initializer");
  }
  if (!g.doc_string.empty()) gp.set_doc_string(g.doc_string);
  for (const auto& v : g.inputs) encode_value_info(v, *gp.add_input());
  for (const auto& v : g.outputs) encode_value_info(v, *gp.add_output());
  for (const auto& v : g.value_info) encode_value_info(v, *gp.add_value_info());
  for (const auto& q : g.quantization_annotation) {
    parse_opaque(*gp.add_quantization_annotation(), q, gwhere + " quantization annotation");
  }
  set_unknown(gp.mutable_unknown_fields(), g.opaque, gwhere);
}

std::string meta_string(const MetaValue& v) {
  if (v.type == MetaType::String) return v.s;
  return v.summary(SIZE_MAX);
}

// Buffered appends to an AtomicFile.
class Writer {
 public:
  explicit Writer(AtomicFile& f) : f_(f) {}
  ~Writer() = default;
  void put(const void* p, size_t n) {
    if (buf_.size() + n > kBuf) flush();
    if (n >= kBuf) {
      f_.write(p, n);
    } else {
      buf_.append(static_cast<const char*>(p), n);
    }
  }
  void put(const std::string& s) { put(s.data(), s.size()); }
  void varint(uint64_t v) {
    uint8_t b[10];
    size_t n = 0;
    while (v >= 0x80) {
      b[n++] = static_cast<uint8_t>(v | 0x80);
      v >>= 7;
    }
    b[n++] = static_cast<uint8_t>(v);
    put(b, n);
  }
  void flush() {
    if (!buf_.empty()) f_.write(buf_.data(), buf_.size());
    buf_.clear();
  }
  uint64_t offset() const { return f_.size() + buf_.size(); }

 private:
  static constexpr size_t kBuf = 1 << 20;
  AtomicFile& f_;
  std::string buf_;
};

uint64_t varint_size(uint64_t v) {
  uint64_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

struct PlannedTensor {
  const Tensor* tensor = nullptr;
  onnx::TensorProto header;  // no raw data
  uint64_t nbytes = 0;
  bool external = false;
  bool raw = false;              // raw_data streamed after the header (numeric, inline)
  uint64_t entry_size() const {  // the TensorProto's length when written
    uint64_t n = header.ByteSizeLong();
    if (raw) n += 1 + varint_size(nbytes) + nbytes;
    return n;
  }
};

std::string base_name(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Everything but the top-level initializers, from `g` (a validated copy of model.graph).
void encode_model(const Model& model, const Graph& g, onnx::ModelProto& mp, const std::string& ctx) {
  const ModelInfo& info = g.model;
  mp.set_ir_version(info.ir_version);
  for (const OpsetImport& o : info.opset_imports) {
    auto* op = mp.add_opset_import();
    op->set_domain(o.domain);
    op->set_version(o.version);
  }
  if (!info.producer_name.empty()) mp.set_producer_name(info.producer_name);
  if (!info.producer_version.empty()) mp.set_producer_version(info.producer_version);
  if (!info.domain.empty()) mp.set_domain(info.domain);
  if (info.model_version != 0) mp.set_model_version(info.model_version);
  if (!info.doc_string.empty()) mp.set_doc_string(info.doc_string);
  for (const auto& kv : model.metadata) {
    auto* e = mp.add_metadata_props();
    e->set_key(kv.first);
    e->set_value(meta_string(kv.second));
  }
  for (const auto& t : info.training_info) parse_opaque(*mp.add_training_info(), t, ctx + " training_info");
  for (const auto& f : info.functions) parse_opaque(*mp.add_functions(), f, ctx + " function");
  set_unknown(mp.mutable_unknown_fields(), info.opaque, ctx + " model");
  try {
    encode_graph(g, *mp.mutable_graph(), "");
  } catch (const Error& e) {
    throw Error(ctx + " " + e.what());
  }
}

}  // namespace

void emit_onnx(const Model& model, const std::string& path, const EmitOptions& options) {
  if (!model.graph) {
    throw Error(path + ": the model has no graph (imported from " +
                (model.format.empty() ? std::string("a graph-less format") : model.format) +
                "); ONNX output needs a graph — emit it in its own format instead");
  }
  // Validate (and topologically order) a private copy: the model may be shared.
  Graph g = *model.graph;
  g.detach_subgraphs();
  {
    std::vector<std::string> names;
    for (const Tensor& t : model.tensors) names.push_back(t.name);
    try {
      g.validate({}, names);
    } catch (const Error& e) {
      throw Error(path + ": cannot write an invalid graph: " + e.what());
    }
  }
  const std::string ctx = path + ":";

  onnx::ModelProto mp;
  encode_model(model, g, mp, ctx);

  // Plan the top-level initializers.
  std::vector<PlannedTensor> plan(model.tensors.size());
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const Tensor& t = model.tensors[i];
    PlannedTensor& p = plan[i];
    p.tensor = &t;
    if (t.type == ElemType::String) {
      encode_tensor_inline(t, p.header, doc_of(g, t.name), ctx + " initializer");
      continue;
    }
    encode_header(t, p.header, doc_of(g, t.name), ctx + " initializer");
    p.nbytes = expected_bytes(t, ctx + " initializer");
  }
  const std::string model_bytes_no_graph = [&] {
    onnx::ModelProto copy_without_graph;
    copy_without_graph.CopyFrom(mp);
    copy_without_graph.clear_graph();
    return copy_without_graph.SerializeAsString();
  }();
  const std::string graph_bytes = mp.graph().SerializeAsString();
  mp.Clear();

  auto main_size = [&](std::optional<uint64_t> threshold) {
    uint64_t n = 0;
    for (PlannedTensor& p : plan) {
      const bool numeric = p.tensor->type != ElemType::String;
      p.external = numeric && threshold && p.nbytes > 0 && p.nbytes >= *threshold;
      p.raw = numeric && !p.external;
      if (p.external) p.header.set_data_location(onnx::TensorProto::EXTERNAL);  // sizing only
      uint64_t e = p.entry_size();
      p.header.clear_data_location();
      n += 1 + varint_size(e) + e;
    }
    return n + graph_bytes.size();  // the graph's length
  };
  std::optional<uint64_t> threshold = options.external_data_threshold;
  uint64_t graph_len = main_size(threshold);
  if (!threshold && graph_len + model_bytes_no_graph.size() + 16 > kProtoLimit) {
    threshold = kAutoThreshold;
    graph_len = main_size(threshold);
  }
  // External entries grow a little once offsets are known; leave a margin.
  if (graph_len + model_bytes_no_graph.size() + 64 * plan.size() + 16 > kProtoLimit) {
    throw Error(path + ": the model's graph needs " + std::to_string(graph_len) +
                " bytes even with large tensors stored externally, over protobuf's 2 GiB limit");
  }

  // Sidecar first: <model>.data holds the external tensors.
  bool any_external = false;
  for (const PlannedTensor& p : plan) any_external = any_external || p.external;
  if (any_external) {
    const std::string data_name = base_name(path) + ".data";
    AtomicFile side(path + ".data");
    Writer w(side);
    for (PlannedTensor& p : plan) {
      if (!p.external) continue;
      const uint64_t align = p.nbytes >= (1u << 20) ? 4096 : 64;
      static const char zeros[4096] = {};
      uint64_t off = w.offset();
      if (off % align) {
        w.put(zeros, static_cast<size_t>(align - off % align));
        off = w.offset();
      }
      BlobPtr b = checked_bytes(*p.tensor, p.nbytes, ctx + " initializer");
      write_releasing(*b, [&](const uint8_t* d, size_t n) { w.put(d, n); });
      p.header.set_data_location(onnx::TensorProto::EXTERNAL);
      auto add = [&](const char* k, const std::string& v) {
        auto* e = p.header.add_external_data();
        e->set_key(k);
        e->set_value(v);
      };
      add("location", data_name);
      add("offset", std::to_string(off));
      add("length", std::to_string(p.nbytes));
    }
    w.flush();
    side.commit();
  }
  graph_len = graph_bytes.size();
  for (const PlannedTensor& p : plan) {
    uint64_t e = p.entry_size();
    graph_len += 1 + varint_size(e) + e;
  }

  AtomicFile out(path);
  Writer w(out);
  w.put(model_bytes_no_graph);
  w.varint((7u << 3) | 2);  // ModelProto.graph
  w.varint(graph_len);
  w.put(graph_bytes);
  for (const PlannedTensor& p : plan) {
    w.varint((5u << 3) | 2);  // GraphProto.initializer
    w.varint(p.entry_size());
    w.put(p.header.SerializeAsString());
    if (!p.raw) continue;
    w.varint((9u << 3) | 2);  // TensorProto.raw_data
    w.varint(p.nbytes);
    BlobPtr b = checked_bytes(*p.tensor, p.nbytes, ctx + " initializer");
    write_releasing(*b, [&](const uint8_t* d, size_t n) { w.put(d, n); });
  }
  w.flush();
  out.commit();
}

onnx::ModelProto model_to_proto(const Model& model, uint64_t inline_limit) {
  if (!model.graph) throw Error("the model has no graph");
  Graph g = *model.graph;
  g.detach_subgraphs();
  onnx::ModelProto mp;
  encode_model(model, g, mp, "model:");
  for (const Tensor& t : model.tensors) {
    auto* tp = mp.mutable_graph()->add_initializer();
    const uint64_t n = t.type == ElemType::String ? 0 : expected_bytes(t, "initializer");
    if (t.type == ElemType::String || n <= inline_limit) {
      encode_tensor_inline(t, *tp, "", "initializer");
    } else {
      encode_header(t, *tp, "", "initializer");
    }
  }
  return mp;
}

}  // namespace qforge::onnxfmt
