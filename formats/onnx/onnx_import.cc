// ONNX import: ModelProto -> qforge::Model.
#include <climits>
#include <cstring>
#include <map>
#include <unordered_set>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/unknown_field_set.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <boost/filesystem.hpp>

#include "onnx_format.h"
#include "onnx_internal.h"
#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge::onnxfmt {
namespace {

namespace fs = boost::filesystem;

// A blob owning a std::string (raw_data moved out of a parsed TensorProto).
class StringBlob : public Blob {
 public:
  explicit StringBlob(std::string s) : s_(std::move(s)) {}
  const uint8_t* data() const override { return reinterpret_cast<const uint8_t*>(s_.data()); }
  uint64_t size() const override { return s_.size(); }

 private:
  std::string s_;
};

struct ImportCtx {
  std::string path;                                           // the model file, as given
  fs::path dir;                                               // its directory, canonical
  std::map<std::string, std::shared_ptr<MappedFile>> mapped;  // external files by canonical path
};

[[noreturn]] void fail(const ImportCtx& ctx, const std::string& msg) { throw Error(ctx.path + ": " + msg); }

// ---------------------------------------------------------------- external data

BlobPtr external_blob(ImportCtx& ctx, const onnx::TensorProto& tp, uint64_t expected,
                      const std::string& what) {
  std::string location;
  bool has_length = false;
  uint64_t offset = 0, length = 0;
  for (const auto& kv : tp.external_data()) {
    auto parse_u64 = [&](const std::string& v) {
      char* end = nullptr;
      errno = 0;
      unsigned long long x = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0 || v[0] == '-') {
        fail(ctx,
             what + ": external_data '" + kv.key() + "' is '" + v + "', expected a non-negative integer");
      }
      return static_cast<uint64_t>(x);
    };
    if (kv.key() == "location") {
      location = kv.value();
    } else if (kv.key() == "offset") {
      offset = parse_u64(kv.value());
    } else if (kv.key() == "length") {
      length = parse_u64(kv.value());
      has_length = true;
    }  // "checksum" and unknown keys are ignored (as ONNX Runtime does)
  }
  if (location.empty()) fail(ctx, what + ": data_location is EXTERNAL but no 'location' is given");
  fs::path rel(location);
  if (rel.is_absolute() || location.find('\0') != std::string::npos) {
    fail(ctx, what + ": external data location '" + location +
                  "' is absolute; it must be a path relative to the model's directory");
  }
  for (const auto& part : rel) {
    if (part == "..") {
      fail(ctx, what + ": external data location '" + location +
                    "' leaves the model's directory ('..'); move the data file beside the model");
    }
  }
  fs::path full = ctx.dir / rel;
  boost::system::error_code ec;
  fs::path canon = fs::canonical(full, ec);
  if (ec) {
    fail(ctx, what + ": external data file '" + full.string() + "' cannot be opened (" + ec.message() +
                  "); it must exist beside the model");
  }
  const std::string dir_s = ctx.dir.string() + "/";
  if (canon.string().compare(0, dir_s.size(), dir_s) != 0) {
    fail(ctx, what + ": external data location '" + location + "' resolves to '" + canon.string() +
                  "', outside the model's directory '" + ctx.dir.string() +
                  "' (through a symbolic link); copy the data beside the model");
  }
  std::shared_ptr<MappedFile>& mf = ctx.mapped[canon.string()];
  if (!mf) mf = MappedFile::open(canon.string());
  if (!has_length) length = expected;
  if (length != expected) {
    fail(ctx, what + ": external data length is " + std::to_string(length) +
                  " bytes but its shape and type need " + std::to_string(expected) +
                  " bytes; the model or its data file is inconsistent");
  }
  if (offset > mf->size() || length > mf->size() - offset) {
    fail(ctx, what + ": external data [offset " + std::to_string(offset) + ", length " +
                  std::to_string(length) + "] lies past the end of '" + canon.string() + "' (" +
                  std::to_string(mf->size()) + " bytes); the data file is truncated or wrong");
  }
  return slice_blob(mf, offset, length);
}

// ---------------------------------------------------------------- tensors

template <class T, class Src>
std::vector<uint8_t> narrow(const Src& src) {
  std::vector<uint8_t> out(static_cast<size_t>(src.size()) * sizeof(T));
  for (int i = 0; i < src.size(); ++i) {
    T v = static_cast<T>(src.Get(i));
    std::memcpy(out.data() + static_cast<size_t>(i) * sizeof(T), &v, sizeof(T));
  }
  return out;
}

template <class Src>
std::vector<uint8_t> copy_raw(const Src& src) {
  using T = typename Src::value_type;
  std::vector<uint8_t> out(static_cast<size_t>(src.size()) * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), src.data(), out.size());
  return out;
}

Tensor decode_tensor(ImportCtx& ctx, onnx::TensorProto& tp, const std::string& where) {
  Tensor t;
  t.name = tp.name();
  const std::string what = where + " tensor '" + t.name + "'";
  for (int64_t d : tp.dims()) {
    if (d < 0) fail(ctx, what + ": dimension " + std::to_string(d) + " is negative");
    t.shape.push_back(d);
  }
  auto et = elem_from_onnx(tp.data_type());
  if (!et) {
    fail(ctx, what + ": element type id " + std::to_string(tp.data_type()) +
                  " is not supported by qforge (known ids: 1-22)");
  }
  t.type = *et;
  uint64_t n = 1;
  for (int64_t d : t.shape) {
    if (d != 0 && n > UINT64_MAX / static_cast<uint64_t>(d)) fail(ctx, what + ": shape overflows");
    n *= static_cast<uint64_t>(d);
  }
  auto mismatch = [&](uint64_t have, const char* field) {
    fail(ctx, what + ": has " + std::to_string(have) + " " + field + " but its shape " + shape_str(t.shape) +
                  " of " + name_of(t.type) + " needs " + std::to_string(n) + " elements (" +
                  std::to_string(onnx_byte_size(t.type, n).value_or(0)) +
                  " bytes); the file is corrupt or was cut short");
  };

  if (t.type == ElemType::String) {
    if (tp.data_location() == onnx::TensorProto::EXTERNAL) {
      fail(ctx, what + ": string tensors cannot use external data");
    }
    if (static_cast<uint64_t>(tp.string_data_size()) != n) {
      mismatch(static_cast<uint64_t>(tp.string_data_size()), "strings");
    }
    std::vector<std::string> items(tp.string_data().begin(), tp.string_data().end());
    t.data = make_blob(encode_strings(items));
    return t;
  }
  auto expected_opt = onnx_byte_size(t.type, n);
  if (!expected_opt) fail(ctx, what + ": byte size overflows");
  const uint64_t expected = *expected_opt;

  if (tp.data_location() == onnx::TensorProto::EXTERNAL) {
    t.data = external_blob(ctx, tp, expected, what);
    return t;
  }
  if (tp.has_raw_data()) {
    if (tp.raw_data().size() != expected) mismatch(tp.raw_data().size(), "bytes of raw_data");
    std::string* raw = tp.release_raw_data();
    t.data = std::make_shared<StringBlob>(std::move(*raw));
    delete raw;
    return t;
  }
  // Typed fields: decode to little-endian bytes of the element type.
  using TP = onnx::TensorProto;
  std::vector<uint8_t> bytes;
  uint64_t count = 0;  // field entries
  uint64_t want = n;   // field entries the shape needs
  switch (tp.data_type()) {
    case TP::FLOAT:
      count = tp.float_data_size();
      bytes = copy_raw(tp.float_data());
      break;
    case TP::COMPLEX64:
      count = tp.float_data_size();
      want = 2 * n;
      bytes = copy_raw(tp.float_data());
      break;
    case TP::DOUBLE:
      count = tp.double_data_size();
      bytes = copy_raw(tp.double_data());
      break;
    case TP::COMPLEX128:
      count = tp.double_data_size();
      want = 2 * n;
      bytes = copy_raw(tp.double_data());
      break;
    case TP::INT64:
      count = tp.int64_data_size();
      bytes = copy_raw(tp.int64_data());
      break;
    case TP::UINT64:
      count = tp.uint64_data_size();
      bytes = copy_raw(tp.uint64_data());
      break;
    case TP::UINT32:
      count = tp.uint64_data_size();
      bytes = narrow<uint32_t>(tp.uint64_data());
      break;
    case TP::INT32:
      count = tp.int32_data_size();
      bytes = copy_raw(tp.int32_data());
      break;
    case TP::INT16:
      count = tp.int32_data_size();
      bytes = narrow<int16_t>(tp.int32_data());
      break;
    case TP::UINT16:
    case TP::FLOAT16:
    case TP::BFLOAT16:
      count = tp.int32_data_size();
      bytes = narrow<uint16_t>(tp.int32_data());
      break;
    case TP::BOOL: {
      count = tp.int32_data_size();
      bytes.resize(static_cast<size_t>(count));
      for (int i = 0; i < tp.int32_data_size(); ++i) bytes[i] = tp.int32_data(i) != 0;
      break;
    }
    default:  // int8, uint8, float8 kinds, and packed int4/uint4 (one byte per entry)
      count = tp.int32_data_size();
      bytes = narrow<uint8_t>(tp.int32_data());
      if (t.type == ElemType::I4 || t.type == ElemType::U4) want = expected;
      break;
  }
  if (count != want) mismatch(count, "values");
  if (bytes.size() != expected) mismatch(bytes.size(), "bytes");
  t.data = make_blob(std::move(bytes));
  return t;
}

// ---------------------------------------------------------------- types

std::string unknown_bytes(const google::protobuf::UnknownFieldSet& u) {
  std::string s;
  if (!u.empty()) u.SerializeToString(&s);
  return s;
}

ValueType decode_type(const onnx::TypeProto& tp) {
  ValueType v;
  if (tp.value_case() == onnx::TypeProto::VALUE_NOT_SET && tp.denotation().empty() &&
      tp.unknown_fields().empty()) {
    return v;  // Kind::None
  }
  if (tp.value_case() == onnx::TypeProto::kTensorType) {
    const auto& tt = tp.tensor_type();
    ValueType s;
    s.kind = ValueType::Kind::Tensor;
    s.denotation = tp.denotation();
    bool ok = true;
    if (tt.has_elem_type() && tt.elem_type() != 0) {
      auto e = elem_from_onnx(tt.elem_type());
      if (e)
        s.elem = *e;
      else
        ok = false;
    }
    if (tt.has_shape()) {
      std::vector<Dim> dims;
      for (const auto& d : tt.shape().dim()) {
        Dim x;
        if (d.has_dim_value()) {
          if (d.dim_value() < 0) ok = false;
          x.value = d.dim_value();
        } else if (d.has_dim_param()) {
          x.param = d.dim_param();
        }
        x.denotation = d.denotation();
        dims.push_back(std::move(x));
      }
      s.shape = std::move(dims);
    }
    // Keep the structured form only when it re-encodes to the same bytes
    // (anything it does not model falls back to the opaque form).
    if (ok) {
      onnx::TypeProto back;
      encode_type(s, back);
      if (back.SerializeAsString() == tp.SerializeAsString()) return s;
    }
  }
  v.kind = ValueType::Kind::Other;
  v.opaque = tp.SerializeAsString();
  return v;
}

}  // namespace

ValueInfo decode_value_info(const onnx::ValueInfoProto& p) {
  ValueInfo v;
  v.name = p.name();
  if (p.has_type()) v.type = decode_type(p.type());
  v.doc_string = p.doc_string();
  v.opaque = unknown_bytes(p.unknown_fields());
  return v;
}

namespace {

// ---------------------------------------------------------------- graphs

void decode_graph(ImportCtx& ctx, onnx::GraphProto& gp, Graph& g, Model* top, const std::string& where);

Attribute decode_attribute(ImportCtx& ctx, onnx::AttributeProto& ap, const std::string& where) {
  using AP = onnx::AttributeProto;
  Attribute a;
  a.name = ap.name();
  a.ref_attr_name = ap.ref_attr_name();
  a.doc_string = ap.doc_string();
  int type = ap.type();
  // An enum value this protobuf does not know lands in the unknown fields.
  for (int k = 0; k < ap.unknown_fields().field_count(); ++k) {
    const auto& uf = ap.unknown_fields().field(k);
    if (uf.number() == AP::kTypeFieldNumber && uf.type() == google::protobuf::UnknownField::TYPE_VARINT)
      throw Error(where + " attribute '" + a.name + "': unknown attribute type " +
                  std::to_string(uf.varint()) + " (expected 1..14 of ONNX's AttributeType)");
  }
  if (!ap.has_type()) {  // IR version 1 models: infer from the field set
    if (ap.has_f())
      type = AP::FLOAT;
    else if (ap.has_i())
      type = AP::INT;
    else if (ap.has_s())
      type = AP::STRING;
    else if (ap.has_t())
      type = AP::TENSOR;
    else if (ap.has_g())
      type = AP::GRAPH;
    else if (ap.floats_size())
      type = AP::FLOATS;
    else if (ap.ints_size())
      type = AP::INTS;
    else if (ap.strings_size())
      type = AP::STRINGS;
    else if (ap.tensors_size())
      type = AP::TENSORS;
    else if (ap.graphs_size())
      type = AP::GRAPHS;
    else
      type = AP::UNDEFINED;
  }
  if (type < 0 || type > 14) {
    throw Error(where + " attribute '" + a.name + "': unknown attribute type " + std::to_string(type));
  }
  if (type == AP::UNDEFINED && a.ref_attr_name.empty())
    throw Error(where + " attribute '" + a.name + "' has no type and no value");
  a.type = static_cast<Attribute::Type>(type);
  const std::string at = where + " attribute '" + a.name + "'";
  switch (type) {
    case AP::FLOAT: a.f = ap.f(); break;
    case AP::INT: a.i = ap.i(); break;
    case AP::STRING: a.s = ap.s(); break;
    case AP::TENSOR: a.tensors.push_back(decode_tensor(ctx, *ap.mutable_t(), at)); break;
    case AP::GRAPH: {
      auto g = std::make_shared<Graph>();
      decode_graph(ctx, *ap.mutable_g(), *g, nullptr, at);
      a.graphs.push_back(std::move(g));
      break;
    }
    case AP::FLOATS: a.floats.assign(ap.floats().begin(), ap.floats().end()); break;
    case AP::INTS: a.ints.assign(ap.ints().begin(), ap.ints().end()); break;
    case AP::STRINGS: a.strings.assign(ap.strings().begin(), ap.strings().end()); break;
    case AP::TENSORS:
      for (auto& t : *ap.mutable_tensors()) a.tensors.push_back(decode_tensor(ctx, t, at));
      break;
    case AP::GRAPHS:
      for (auto& gp : *ap.mutable_graphs()) {
        auto g = std::make_shared<Graph>();
        decode_graph(ctx, gp, *g, nullptr, at);
        a.graphs.push_back(std::move(g));
      }
      break;
    case AP::SPARSE_TENSOR: a.opaque.push_back(ap.sparse_tensor().SerializeAsString()); break;
    case AP::SPARSE_TENSORS:
      for (const auto& s : ap.sparse_tensors()) a.opaque.push_back(s.SerializeAsString());
      break;
    case AP::TYPE_PROTO: a.opaque.push_back(ap.tp().SerializeAsString()); break;
    case AP::TYPE_PROTOS:
      for (const auto& s : ap.type_protos()) a.opaque.push_back(s.SerializeAsString());
      break;
    default: break;
  }
  return a;
}

void decode_graph(ImportCtx& ctx, onnx::GraphProto& gp, Graph& g, Model* top, const std::string& where) {
  g.name = gp.name();
  g.doc_string = gp.doc_string();
  const std::string gwhere = where + (where.empty() ? "" : " subgraph ") + "graph '" + g.name + "'";
  for (const auto& v : gp.input()) g.inputs.push_back(decode_value_info(v));
  for (const auto& v : gp.output()) g.outputs.push_back(decode_value_info(v));
  for (const auto& v : gp.value_info()) g.value_info.push_back(decode_value_info(v));
  std::unordered_set<std::string> init_names;
  for (auto& tp : *gp.mutable_initializer()) {
    if (tp.name().empty()) fail(ctx, gwhere + ": an initializer has no name");
    if (!init_names.insert(tp.name()).second) {
      fail(ctx, gwhere + ": initializer '" + tp.name() + "' appears twice");
    }
    if (!tp.doc_string().empty()) g.initializer_docs.emplace_back(tp.name(), tp.doc_string());
    Tensor t = decode_tensor(ctx, tp, gwhere + " initializer");
    if (top)
      top->tensors.push_back(std::move(t));
    else
      g.initializers.push_back(std::move(t));
  }
  gp.clear_initializer();  // the data now lives in the tensors
  for (const auto& s : gp.sparse_initializer()) {
    g.sparse_initializers.emplace_back(s.values().name(), s.SerializeAsString());
  }
  for (const auto& q : gp.quantization_annotation()) {
    g.quantization_annotation.push_back(q.SerializeAsString());
  }
  g.opaque = unknown_bytes(gp.unknown_fields());
  g.nodes.reserve(static_cast<size_t>(gp.node_size()));
  for (int i = 0; i < gp.node_size(); ++i) {
    onnx::NodeProto& np = *gp.mutable_node(i);
    Node n;
    n.name = np.name();
    n.op_type = np.op_type();
    n.domain = np.domain();
    n.inputs.assign(np.input().begin(), np.input().end());
    n.outputs.assign(np.output().begin(), np.output().end());
    n.doc_string = np.doc_string();
    n.opaque = unknown_bytes(np.unknown_fields());
    const std::string nwhere = gwhere + " node #" + std::to_string(i) +
                               (n.name.empty() ? "" : " '" + n.name + "'") + " (" + n.op_type + ")";
    if (n.op_type.empty()) fail(ctx, nwhere + ": op_type is empty");
    for (auto& ap : *np.mutable_attribute()) n.attributes.push_back(decode_attribute(ctx, ap, nwhere));
    g.nodes.push_back(std::move(n));
  }
}

// A plausible ModelProto needs ir_version and a graph; the checker runs when
// our ONNX library knows the model's IR version and opsets.
// Returns the checker's complaint, or "" (also when it does not apply).
std::string run_checker(const ImportCtx& ctx, const onnx::ModelProto& mp) {
  if (mp.ir_version() > onnx::IR_VERSION) return {};
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  for (const auto& op : mp.opset_import()) {
    std::string d = op.domain() == "ai.onnx" ? "" : op.domain();
    auto it = ranges.find(d);
    if (it != ranges.end() && op.version() > it->second.second) return {};  // newer than we know
  }
  onnx::checker::CheckerContext cc;
  cc.set_ir_version(static_cast<int>(mp.ir_version()));
  std::unordered_map<std::string, int> opsets;
  for (const auto& op : mp.opset_import()) opsets[op.domain()] = static_cast<int>(op.version());
  cc.set_opset_imports(opsets);
  cc.set_model_dir(ctx.dir.string());
  try {
    onnx::checker::LexicalScopeContext lex;
    onnx::checker::check_graph(mp.graph(), cc, lex);
  } catch (const std::exception& e) {
    std::string first = e.what();
    if (first.find("is required but missing") == std::string::npos) return first;
  }
  // check_graph stops at its first complaint, and a missing type or shape on
  // a graph input (common, and accepted by ONNX Runtime) would hide every
  // later one: check each node on its own, with the names defined before it.
  onnx::checker::LexicalScopeContext lex;
  for (const auto& v : mp.graph().input()) lex.add(v.name());
  for (const auto& t : mp.graph().initializer()) lex.add(t.name());
  for (const auto& n : mp.graph().node()) {
    try {
      onnx::checker::check_node(n, cc, lex);
    } catch (const std::exception& e) {
      std::string msg = e.what();
      if (msg.find("is required but missing") == std::string::npos)
        return "node '" + n.name() + "' (" + n.op_type() + "): " + msg;
    }
    for (const auto& o : n.output()) lex.add(o);
  }
  return {};
}

Model decode_model(ImportCtx& ctx, onnx::ModelProto& mp);

}  // namespace

Model import_onnx(const std::string& path) {
  ImportCtx ctx;
  ctx.path = path;
  boost::system::error_code ec;
  fs::path p(path);
  ctx.dir = fs::canonical(p.has_parent_path() ? p.parent_path() : fs::path("."), ec);
  if (ec) fail(ctx, "cannot resolve the model's directory: " + ec.message());

  auto file = MappedFile::open(path);
  if (file->size() == 0) fail(ctx, "the file is empty; expected an ONNX ModelProto");
  if (file->size() > static_cast<uint64_t>(INT_MAX)) {
    fail(ctx, "the file is " + std::to_string(file->size()) +
                  " bytes; a protobuf ModelProto cannot exceed 2 GiB — store large tensors as "
                  "external data");
  }
  onnx::ModelProto mp;
  {
    google::protobuf::io::CodedInputStream in(file->data(), static_cast<int>(file->size()));
    in.SetTotalBytesLimit(INT_MAX);
    bool ok = mp.ParsePartialFromCodedStream(&in) && in.ConsumedEntireMessage();
    if (!ok) {
      fail(ctx, "not a valid ONNX ModelProto: protobuf parsing failed near byte offset " +
                    std::to_string(in.CurrentPosition()) + " of " + std::to_string(file->size()) +
                    " (the file is truncated, corrupt or not ONNX)");
    }
  }
  file->release_pages();
  file.reset();
  return decode_model(ctx, mp);
}

Model model_from_proto(onnx::ModelProto& mp, const std::string& source) {
  ImportCtx ctx;
  ctx.path = source;
  boost::system::error_code ec;
  fs::path p(source);
  ctx.dir = fs::canonical(p.has_parent_path() ? p.parent_path() : fs::path("."), ec);
  if (ec) ctx.dir = fs::current_path();
  return decode_model(ctx, mp);
}

namespace {

Model decode_model(ImportCtx& ctx, onnx::ModelProto& mp) {
  const std::string& path = ctx.path;
  if (!mp.has_ir_version()) fail(ctx, "ModelProto field 'ir_version' is missing; not an ONNX model?");
  if (mp.ir_version() < 1)
    fail(ctx, "ModelProto field 'ir_version' is " + std::to_string(mp.ir_version()) +
                  "; expected a positive IR version (set it to the version the model was written for)");
  if (!mp.has_graph()) fail(ctx, "ModelProto field 'graph' is missing; the model has no graph");
  // The checker sees the intact proto; its complaint is reported only when
  // our own (more specific) checks below find nothing.
  const std::string checker_error = run_checker(ctx, mp);

  Model m;
  m.format = "onnx";
  m.source = path;
  auto g = std::make_shared<Graph>();
  ModelInfo& info = g->model;
  info.ir_version = mp.ir_version();
  for (const auto& op : mp.opset_import()) info.opset_imports.push_back({op.domain(), op.version()});
  info.producer_name = mp.producer_name();
  info.producer_version = mp.producer_version();
  info.domain = mp.domain();
  info.model_version = mp.model_version();
  info.doc_string = mp.doc_string();
  for (const auto& f : mp.functions()) info.functions.push_back(f.SerializeAsString());
  for (const auto& t : mp.training_info()) info.training_info.push_back(t.SerializeAsString());
  info.opaque = unknown_bytes(mp.unknown_fields());
  for (const auto& kv : mp.metadata_props()) {
    m.metadata.emplace_back(kv.key(), MetaValue::of_string(kv.value()));
  }
  try {
    decode_graph(ctx, *mp.mutable_graph(), *g, &m, "");
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind(path, 0) == 0) throw;
    fail(ctx, msg);  // name the file
  }

  std::vector<std::string> init_names;
  init_names.reserve(m.tensors.size());
  for (const Tensor& t : m.tensors) init_names.push_back(t.name);
  try {
    g->validate({}, init_names);
  } catch (const Error& e) {
    fail(ctx, e.what());
  }
  // Missing type/shape fields on graph inputs and outputs are common in
  // models ONNX Runtime runs fine; every other checker complaint is fatal.
  if (!checker_error.empty() && checker_error.find("is required but missing") == std::string::npos) {
    fail(ctx, "the ONNX checker rejects the model: " + checker_error);
  }
  m.graph = std::move(g);
  return m;
}

}  // namespace

}  // namespace qforge::onnxfmt
