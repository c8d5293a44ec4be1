// ONNX format plugin and graph IR tests.
//
// The corpus test imports and re-emits every model of Debian's libonnx-testdata
// and has ONNX Runtime (tests/tools/ort_run.py, through $QFORGE_PYTHON) run the
// original and the re-emitted model on each test data set: outputs must be
// bit-identical. Models ONNX Runtime cannot run are listed with the reason in
// <build>/onnx_roundtrip/report.txt.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <onnx/onnx_pb.h>

#include "onnx_builder.h"
#include "onnx_format.h"
#include "onnx_test_util.h"
#include "qforge/graph.h"
#include "qforge/plugin.h"
#include "qforge/registry.h"
#include "qforge/status.h"

const QforgePlugin* qforge_builtin_onnx();  // formats/onnx/plugin.cc

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qforge::ElemType;
using qforge::Graph;
using qforge::Model;
using qforge::Node;
using qforge::Tensor;
namespace ox = qforge::onnxfmt;

namespace {

fs::path binary_dir() {
#ifdef QFORGE_BINARY_DIR
  return QFORGE_BINARY_DIR;
#else
  return fs::temp_directory_path();
#endif
}

using qforge::testutil::source_dir;

std::string python() {
  const char* p = std::getenv("QFORGE_PYTHON");
  return p && *p ? p : "python3";
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A fresh scratch directory under the build directory.
fs::path scratch(const std::string& name) {
  fs::path d = binary_dir() / "onnx_test_scratch" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_proto(const fs::path& p, const onnx::ModelProto& mp) { write_file(p, mp.SerializeAsString()); }

std::vector<float> floats_of(const Tensor& t) {
  auto b = t.bytes();
  std::vector<float> v(b->size() / 4);
  std::memcpy(v.data(), b->data(), v.size() * 4);
  return v;
}

// A minimal valid model proto: y = Relu(x + w) with w an initializer.
onnx::ModelProto small_proto() {
  onnx::ModelProto mp;
  mp.set_ir_version(7);
  auto* op = mp.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  auto* g = mp.mutable_graph();
  g->set_name("small");
  auto io = [](onnx::ValueInfoProto* v, const char* name) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_value(2);
  };
  io(g->add_input(), "x");
  io(g->add_output(), "y");
  auto* w = g->add_initializer();
  w->set_name("w");
  w->add_dims(2);
  w->set_data_type(onnx::TensorProto::FLOAT);
  float wv[2] = {1.5f, -2.0f};
  w->set_raw_data(wv, sizeof wv);
  auto* add = g->add_node();
  add->set_op_type("Add");
  add->set_name("add");
  add->add_input("x");
  add->add_input("w");
  add->add_output("s");
  auto* relu = g->add_node();
  relu->set_op_type("Relu");
  relu->set_name("relu");
  relu->add_input("s");
  relu->add_output("y");
  return mp;
}

// Runs the ORT helper; returns its exit status.
int run_helper(const std::string& args) {
  std::string cmd =
      quote(python()) + " " + quote((source_dir() / "tests/tools/ort_run.py").string()) + " " + args;
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

struct OrtResult {
  std::string status;
  std::string reason;
};

// compare-many over `entries`, restarting after an ONNX Runtime crash (the
// crashed entry is recorded as such).
std::map<std::string, OrtResult> compare_many(const nlohmann::json& entries, const fs::path& dir) {
  const fs::path list = dir / "list.json";
  const fs::path results = dir / "results.jsonl";
  {
    std::ofstream f(list);
    f << entries.dump(1);
  }
  fs::remove(results);
  const std::string probe = quote(python()) + " -c 'import onnxruntime, numpy' 2>/dev/null";
  if (std::system(probe.c_str()) != 0) {
    FAIL(python() << " cannot import onnxruntime and numpy; set QFORGE_PYTHON to a Python that has "
                     "them (make test installs them into build/venv)");
  }
  std::map<std::string, OrtResult> out;
  size_t start = 0;
  while (start < entries.size()) {
    int rc = run_helper("compare-many " + quote(list.string()) + " " + quote(results.string()) + " --start " +
                        std::to_string(start));
    std::ifstream f(results);
    std::string line;
    size_t done = 0;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line);
      out[j["name"]] = {j["status"], j["reason"]};
      ++done;
    }
    if (done >= entries.size()) break;
    if (rc == 0 || done < start) {
      FAIL("ort_run.py stopped after " << done << " of " << entries.size() << " models (exit status " << rc
                                       << "); is onnxruntime installed for " << python() << "?");
    }
    // The helper died on entries[done]: record it and go on with the rest.
    std::string name = entries[done]["name"];
    out[name] = {"original_failed", "ONNX Runtime crashed (exit status " + std::to_string(rc) + ")"};
    std::ofstream(results, std::ios::app)
        << nlohmann::json{{"name", name}, {"status", "original_failed"}, {"reason", out[name].reason}}.dump()
        << "\n";
    start = done + 1;
  }
  return out;
}

void write_tensor_pb(const fs::path& p, const std::string& name, const std::vector<int64_t>& dims,
                     const std::vector<float>& v) {
  onnx::TensorProto t;
  t.set_name(name);
  for (int64_t d : dims) t.add_dims(d);
  t.set_data_type(onnx::TensorProto::FLOAT);
  t.set_raw_data(v.data(), v.size() * 4);
  write_file(p, t.SerializeAsString());
}

}  // namespace

// ---------------------------------------------------------------- graph IR

TEST_CASE("graph: producer, consumers, insert, remove, names", "[onnx][graph]") {
  Model m = ox::tiny_mlp_model();
  Graph& g = m.mutable_graph();
  CHECK(g.producer("fc1_out") == 1);
  CHECK(g.producer("x") == -1);
  CHECK(g.consumers("fc1_out") == std::vector<size_t>{2});
  CHECK(g.consumers("fc1.weight") == std::vector<size_t>{0});
  CHECK(g.is_input("x"));
  CHECK(g.is_output("y"));
  CHECK(g.opset("") == 13);
  CHECK(g.opset("ai.onnx") == 13);
  CHECK(g.opset("com.microsoft") == -1);

  qforge::ValueUses uses(g);
  CHECK(uses.producer_of("fc1_out") == 1);
  CHECK(uses.producer_of("x") == -1);
  CHECK(uses.consumers_of("x") == std::vector<size_t>{0});
  CHECK(uses.consumers_of("y").empty());

  qforge::NameAllocator names(m);
  CHECK(names.fresh("fc1.weight") == "fc1.weight_1");
  CHECK(names.fresh("fc1.weight") == "fc1.weight_2");
  CHECK(names.fresh("brand_new") == "brand_new");
  CHECK(names.fresh("relu1") == "relu1_1");  // node names are taken too

  // Insert a node reading relu1_out: it lands right after relu1, and
  // rewiring the consumer keeps the graph valid.
  Node id;
  id.name = "ident";
  id.op_type = "Identity";
  id.inputs = {"relu1_out"};
  id.outputs = {"relu1_id"};
  size_t pos = g.insert_node(id);
  CHECK(pos == 3);
  g.replace_uses("relu1_out", "relu1_id", static_cast<int>(pos));
  CHECK(g.nodes[4].inputs[0] == "relu1_id");
  CHECK(g.nodes[3].inputs[0] == "relu1_out");
  std::vector<std::string> init;
  for (const Tensor& t : m.tensors) init.push_back(t.name);
  REQUIRE_NOTHROW(g.validate({}, init));

  // A node whose output already has an earlier reader cannot be placed.
  Node bad;
  bad.name = "bad";
  bad.op_type = "Identity";
  bad.inputs = {"y"};
  bad.outputs = {"fc1_mm_again"};
  g.nodes[0].inputs[0] = "fc1_mm_again";
  CHECK_THROWS_WITH(g.insert_node(bad), Contains("cannot insert node 'bad'"));
  g.nodes[0].inputs[0] = "x";

  g.remove_nodes({3, 3});
  g.replace_uses("relu1_id", "relu1_out");
  CHECK(g.nodes.size() == 5);
  REQUIRE_NOTHROW(g.validate({}, init));

  // Out-of-order but acyclic nodes are sorted stably.
  std::swap(g.nodes[0], g.nodes[4]);
  REQUIRE_NOTHROW(g.validate({}, init));
  CHECK(g.nodes[0].name == "fc1");
  CHECK(g.nodes[4].name == "fc2_add");
}

TEST_CASE("graph: subgraph implicit inputs count as uses, and copies detach", "[onnx][graph]") {
  Graph g;
  g.inputs.push_back({"c", {}, "", ""});
  g.inputs.push_back({"a", {}, "", ""});
  auto body = std::make_shared<Graph>();
  Node n;
  n.op_type = "Identity";
  n.inputs = {"a"};
  n.outputs = {"b"};
  body->nodes.push_back(n);
  body->outputs.push_back({"b", {}, "", ""});
  Node iff;
  iff.name = "if";
  iff.op_type = "If";
  iff.inputs = {"c"};
  iff.outputs = {"r"};
  qforge::Attribute then_branch;
  then_branch.name = "then_branch";
  then_branch.type = qforge::Attribute::Type::Graph;
  then_branch.graphs.push_back(body);
  iff.attributes.push_back(then_branch);
  g.nodes.push_back(iff);
  g.outputs.push_back({"r", {}, "", ""});
  CHECK(g.nodes[0].implicit_inputs() == std::vector<std::string>{"a"});
  CHECK(g.consumers("a") == std::vector<size_t>{0});
  REQUIRE_NOTHROW(g.validate({}, {}));

  Graph copy = g;
  copy.detach_subgraphs();
  copy.replace_uses("a", "a2");
  CHECK(copy.nodes[0].attributes[0].graphs[0]->nodes[0].inputs[0] == "a2");
  CHECK(body->nodes[0].inputs[0] == "a");  // the original is untouched

  // A dangling read inside the subgraph is reported.
  body->nodes[0].inputs[0] = "nowhere";
  CHECK_THROWS_WITH(g.validate({}, {}), Contains("'nowhere'"));
}

// ---------------------------------------------------------------- exact round trip

TEST_CASE("onnx: every ModelProto field survives import and emit", "[onnx]") {
  fs::path dir = scratch("fields");
  onnx::ModelProto mp = small_proto();
  mp.set_ir_version(8);
  mp.set_producer_name("prod");
  mp.set_producer_version("9.9");
  mp.set_domain("org.example");
  mp.set_model_version(42);
  mp.set_doc_string("model doc");
  auto* op2 = mp.add_opset_import();
  op2->set_domain("ai.onnx.ml");
  op2->set_version(3);
  auto* op3 = mp.add_opset_import();
  op3->set_domain("custom");
  op3->set_version(1);
  for (auto kv : {std::pair<const char*, const char*>{"zeta", "1"}, {"alpha", "2"}, {"mid", "3"}}) {
    auto* e = mp.add_metadata_props();
    e->set_key(kv.first);
    e->set_value(kv.second);
  }
  auto* fn = mp.add_functions();
  fn->set_name("MyFn");
  fn->set_domain("custom");
  fn->add_input("a");
  fn->add_output("b");
  auto* fnode = fn->add_node();
  fnode->set_op_type("Identity");
  fnode->add_input("a");
  fnode->add_output("b");
  auto* ti = mp.add_training_info();
  ti->mutable_algorithm()->set_name("train");
  auto* g = mp.mutable_graph();
  g->set_doc_string("graph doc");
  g->mutable_node(0)->set_doc_string("node doc");
  g->mutable_initializer(0)->set_doc_string("weight doc");
  // A value info with symbolic and unknown dims, one with a sequence type.
  auto* vi = g->add_value_info();
  vi->set_name("s");
  vi->set_doc_string("vi doc");
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("batch");
  tt->mutable_shape()->add_dim();
  tt->mutable_shape()->mutable_dim(1)->set_denotation("DATA_CHANNEL");
  auto* seq = g->add_value_info();
  seq->set_name("unused_seq");
  seq->mutable_type()->mutable_sequence_type()->mutable_elem_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto::INT64);
  // A sparse initializer and a quantization annotation (carried opaquely).
  auto* sp = g->add_sparse_initializer();
  sp->add_dims(4);
  sp->mutable_values()->set_name("sp");
  sp->mutable_values()->set_data_type(onnx::TensorProto::FLOAT);
  sp->mutable_values()->add_dims(1);
  sp->mutable_values()->set_raw_data(std::string(4, '\0'));
  sp->mutable_indices()->set_data_type(onnx::TensorProto::INT64);
  sp->mutable_indices()->add_dims(1);
  sp->mutable_indices()->set_raw_data(std::string(8, '\0'));
  auto* qa = g->add_quantization_annotation();
  qa->set_tensor_name("w");
  // An If node whose branches have their own initializers; a Constant node
  // with a tensor attribute; attributes of every simple kind.
  auto* cond = g->add_input();
  cond->set_name("cond");
  cond->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::BOOL);
  cond->mutable_type()->mutable_tensor_type()->mutable_shape();  // a scalar
  auto* iff = g->add_node();
  iff->set_op_type("If");
  iff->set_name("branch");
  iff->add_input("cond");
  iff->add_output("z");
  for (const char* br : {"then_branch", "else_branch"}) {
    auto* a = iff->add_attribute();
    a->set_name(br);
    a->set_type(onnx::AttributeProto::GRAPH);
    auto* sg = a->mutable_g();
    sg->set_name(br);
    auto* k = sg->add_initializer();
    k->set_name(std::string(br) + "_k");
    k->set_data_type(onnx::TensorProto::FLOAT);
    k->add_dims(2);
    float kv[2] = {3.0f, br[0] == 't' ? 4.0f : 5.0f};
    k->set_raw_data(kv, sizeof kv);
    auto* n = sg->add_node();
    n->set_op_type("Add");
    n->add_input("y");  // outer-scope value
    n->add_input(std::string(br) + "_k");
    n->add_output(std::string(br) + "_out");
    auto* o = sg->add_output();
    o->set_name(std::string(br) + "_out");
    o->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  }
  auto* zo = g->add_output();
  zo->set_name("z");
  zo->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  zo->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(2);
  auto* cn = g->add_node();
  cn->set_op_type("Constant");
  cn->add_output("c");
  auto* ca = cn->add_attribute();
  ca->set_name("value");
  ca->set_type(onnx::AttributeProto::TENSOR);
  ca->mutable_t()->set_data_type(onnx::TensorProto::INT64);
  ca->mutable_t()->add_dims(1);
  int64_t seven = 7;
  ca->mutable_t()->set_raw_data(&seven, 8);
  auto* custom = g->add_node();
  custom->set_op_type("Thing");
  custom->set_domain("custom");
  custom->add_input("c");
  custom->add_input("");
  custom->add_input("sp");  // reads the sparse initializer
  custom->add_output("d");
  auto* a1 = custom->add_attribute();
  a1->set_name("f");
  a1->set_type(onnx::AttributeProto::FLOAT);
  a1->set_f(0.25f);
  auto* a2 = custom->add_attribute();
  a2->set_name("strs");
  a2->set_type(onnx::AttributeProto::STRINGS);
  a2->add_strings("p");
  a2->add_strings(std::string("q\0r", 3));
  auto* a3 = custom->add_attribute();
  a3->set_name("tp");
  a3->set_type(onnx::AttributeProto::TYPE_PROTO);
  a3->mutable_tp()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT8);
  auto* a4 = custom->add_attribute();
  a4->set_name("fwd");
  a4->set_type(onnx::AttributeProto::INT);
  a4->set_ref_attr_name("outer");
  auto* dout = g->add_output();
  dout->set_name("d");
  dout->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  dout->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_param("n");
  // A field newer than our ONNX library (NodeProto.metadata_props = 9 in
  // later ONNX): it must survive as an unknown field.
  custom->mutable_unknown_fields()->AddLengthDelimited(9, "\x0a\x01k\x12\x01v");

  fs::path in = dir / "in.onnx", out = dir / "out.onnx";
  write_proto(in, mp);
  Model m = ox::import_onnx(in.string());
  REQUIRE(m.metadata.size() == 3);
  CHECK(m.metadata[0].first == "zeta");
  CHECK(m.metadata[1].first == "alpha");
  CHECK(m.metadata[2].second.s == "3");
  REQUIRE(m.tensors.size() == 1);
  CHECK(floats_of(m.tensors[0]) == std::vector<float>{1.5f, -2.0f});
  const Graph& gr = *m.graph;
  CHECK(gr.model.producer_name == "prod");
  CHECK(gr.model.functions.size() == 1);
  const qforge::ValueInfo* s = gr.find_value_info("s");
  REQUIRE(s);
  REQUIRE(s->type.kind == qforge::ValueType::Kind::Tensor);
  REQUIRE(s->type.shape);
  CHECK((*s->type.shape)[0].param == "batch");
  CHECK(!(*s->type.shape)[1].known());
  CHECK(gr.find_value_info("unused_seq")->type.kind == qforge::ValueType::Kind::Other);
  const Node& branch = gr.nodes[gr.producer("z")];
  CHECK(branch.implicit_inputs() == std::vector<std::string>{"y"});
  REQUIRE(branch.attr("then_branch"));
  CHECK(branch.attr("then_branch")->graphs[0]->initializers.size() == 1);

  ox::emit_onnx(m, out.string(), {});
  onnx::ModelProto back;
  REQUIRE(back.ParseFromString(read_file(out)));
  std::string diff;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  CHECK(d.Compare(mp, back));
  INFO(diff);
  CHECK(diff.empty());

  // Emitting the re-imported model gives the same bytes (stable output).
  ox::emit_onnx(ox::import_onnx(out.string()), (dir / "out2.onnx").string(), {});
  CHECK(read_file(out) == read_file(dir / "out2.onnx"));
}

TEST_CASE("onnx: typed data fields decode to little-endian bytes", "[onnx]") {
  fs::path dir = scratch("typed");
  onnx::ModelProto mp = small_proto();
  auto* g = mp.mutable_graph();
  auto* w = g->mutable_initializer(0);
  w->clear_raw_data();
  w->add_float_data(1.5f);
  w->add_float_data(-2.0f);
  struct Case {
    const char* name;
    int type;
    std::vector<int64_t> i32;
    std::vector<uint8_t> expect;
  };
  std::vector<Case> cases = {
      {"h", onnx::TensorProto::FLOAT16, {0x3C00, 0xC000}, {0x00, 0x3C, 0x00, 0xC0}},
      {"b", onnx::TensorProto::BOOL, {1, 0, 1}, {1, 0, 1}},
      {"i8", onnx::TensorProto::INT8, {-1, 5}, {0xFF, 5}},
      {"u16", onnx::TensorProto::UINT16, {65535}, {0xFF, 0xFF}},
      {"bf", onnx::TensorProto::BFLOAT16, {0x3F80}, {0x80, 0x3F}},
  };
  for (const Case& c : cases) {
    auto* t = g->add_initializer();
    t->set_name(c.name);
    t->set_data_type(c.type);
    t->add_dims(static_cast<int64_t>(c.i32.size()));
    for (auto v : c.i32) t->add_int32_data(static_cast<int32_t>(v));
  }
  auto* u32 = g->add_initializer();
  u32->set_name("u32");
  u32->set_data_type(onnx::TensorProto::UINT32);
  u32->add_dims(1);
  u32->add_uint64_data(0xDEADBEEF);
  auto* dbl = g->add_initializer();
  dbl->set_name("dbl");
  dbl->set_data_type(onnx::TensorProto::DOUBLE);
  dbl->add_dims(1);
  dbl->add_double_data(0.5);
  auto* str = g->add_initializer();
  str->set_name("str");
  str->set_data_type(onnx::TensorProto::STRING);
  str->add_dims(2);
  str->add_string_data("ab");
  str->add_string_data("");
  fs::path p = dir / "typed.onnx";
  write_proto(p, mp);
  Model m = ox::import_onnx(p.string());
  CHECK(floats_of(*m.tensor("w")) == std::vector<float>{1.5f, -2.0f});
  for (const Case& c : cases) {
    auto b = m.tensor(c.name)->bytes();
    CHECK(std::vector<uint8_t>(b->data(), b->data() + b->size()) == c.expect);
  }
  auto u = m.tensor("u32")->bytes();
  CHECK(std::vector<uint8_t>(u->data(), u->data() + 4) == std::vector<uint8_t>{0xEF, 0xBE, 0xAD, 0xDE});
  double dv = 0;
  std::memcpy(&dv, m.tensor("dbl")->bytes()->data(), 8);
  CHECK(dv == 0.5);
  CHECK(ox::decode_strings(*m.tensor("str")->bytes(), 2, "str") == std::vector<std::string>{"ab", ""});

  // Re-emitted as raw_data (strings stay string_data); values are unchanged.
  fs::path out = dir / "typed_out.onnx";
  ox::emit_onnx(m, out.string(), {});
  onnx::ModelProto back;
  REQUIRE(back.ParseFromString(read_file(out)));
  std::map<std::string, const onnx::TensorProto*> by;
  for (const auto& t : back.graph().initializer()) by[t.name()] = &t;
  CHECK(by["h"]->raw_data() == std::string("\x00\x3C\x00\xC0", 4));
  CHECK(by["str"]->string_data_size() == 2);
  CHECK(by["w"]->raw_data().size() == 8);
}

// ---------------------------------------------------------------- external data

TEST_CASE("onnx: external data round-trips and runs in ONNX Runtime", "[onnx][ort]") {
  fs::path dir = scratch("external");
  fs::path orig = dir / "mlp.onnx", ext = dir / "mlp_ext.onnx", again = dir / "sub" / "again.onnx";
  fs::create_directories(dir / "sub");
  ox::write_tiny_model("mlp", orig.string());
  Model m = ox::import_onnx(orig.string());
  ox::EmitOptions opts;
  opts.external_data_threshold = 64;  // the weights (2 KiB, 1 KiB) and fc1.bias go out
  ox::emit_onnx(m, ext.string(), opts);
  REQUIRE(fs::exists(dir / "mlp_ext.onnx.data"));
  CHECK(fs::file_size(ext) < 1024);
  CHECK(fs::file_size(dir / "mlp_ext.onnx.data") >= (16 * 32 + 32 * 8 + 32) * 4);

  Model e = ox::import_onnx(ext.string());
  REQUIRE(e.tensors.size() == m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    CHECK(e.tensors[i].name == m.tensors[i].name);
    CHECK(floats_of(e.tensors[i]) == floats_of(m.tensors[i]));
  }
  // Re-emit inline elsewhere (the blobs are views of mlp_ext.onnx.data).
  ox::emit_onnx(e, again.string(), {});
  CHECK(!fs::exists(dir / "sub" / "again.onnx.data"));
  Model a = ox::import_onnx(again.string());
  CHECK(floats_of(a.tensors[0]) == floats_of(m.tensors[0]));

  // Re-emit over itself: its tensors are views of the sidecar being replaced.
  ox::emit_onnx(e, ext.string(), opts);
  e = Model();
  Model same = ox::import_onnx(ext.string());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    CHECK(floats_of(same.tensors[i]) == floats_of(m.tensors[i]));
  }

  // ONNX Runtime gives identical outputs for all three.
  fs::create_directories(dir / "test_data_set_0");
  std::vector<float> x(3 * 16);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) - 3.0f;
  write_tensor_pb(dir / "test_data_set_0" / "input_0.pb", "x", {3, 16}, x);
  nlohmann::json entries = nlohmann::json::array();
  for (const fs::path& p : {ext, again}) {
    entries.push_back({{"name", p.filename().string()},
                       {"original", orig.string()},
                       {"emitted", p.string()},
                       {"data", {(dir / "test_data_set_0").string()}}});
  }
  auto res = compare_many(entries, dir);
  CHECK(res["mlp_ext.onnx"].status == "identical");
  CHECK(res["again.onnx"].status == "identical");
}

// ---------------------------------------------------------------- hostile input

TEST_CASE("onnx: hostile inputs give clear errors", "[onnx][hostile]") {
  fs::path dir = scratch("hostile");
  auto import_error = [](const fs::path& p) -> std::string {
    try {
      ox::import_onnx(p.string());
    } catch (const qforge::Error& e) {
      return e.what();
    }
    return "(no error)";
  };

  SECTION("cycle") {
    onnx::ModelProto mp = small_proto();
    auto* g = mp.mutable_graph();
    g->mutable_node(0)->set_input(0, "y");  // add reads relu's output, relu reads add's
    fs::path p = dir / "cycle.onnx";
    write_proto(p, mp);
    std::string e = import_error(p);
    CHECK_THAT(e, Contains(p.string()) && Contains("cycle") && Contains("'add'"));
  }
  SECTION("dangling input") {
    onnx::ModelProto mp = small_proto();
    mp.mutable_graph()->mutable_node(1)->set_input(0, "nothing_here");
    fs::path p = dir / "dangling.onnx";
    write_proto(p, mp);
    std::string e = import_error(p);
    CHECK_THAT(
        e, Contains(p.string()) && Contains("'nothing_here'") && Contains("'relu'") && Contains("dangling"));
  }
  SECTION("truncated and garbage protobuf") {
    std::string bytes = small_proto().SerializeAsString();
    fs::path p = dir / "truncated.onnx";
    write_file(p, bytes.substr(0, bytes.size() - 7));
    CHECK_THAT(import_error(p), Contains(p.string()) && Contains("protobuf parsing failed"));
    fs::path q = dir / "garbage.onnx";
    write_file(q, std::string("\x08\x07\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x3a\x99", 14));
    CHECK_THAT(import_error(q), Contains(q.string()) && Contains("not a valid ONNX ModelProto"));
    fs::path r = dir / "empty.onnx";
    write_file(r, "");
    CHECK_THAT(import_error(r), Contains("empty"));
    fs::path s = dir / "nograph.onnx";
    onnx::ModelProto ng;
    ng.set_ir_version(7);
    write_proto(s, ng);
    CHECK_THAT(import_error(s), Contains("'graph' is missing"));
  }
  SECTION("initializer byte length mismatch") {
    onnx::ModelProto mp = small_proto();
    mp.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(7, '\0'));
    fs::path p = dir / "short.onnx";
    write_proto(p, mp);
    CHECK_THAT(import_error(p),
               Contains("'w'") && Contains("7 bytes of raw_data") && Contains("needs 2 elements (8 bytes)"));
    mp.mutable_graph()->mutable_initializer(0)->clear_raw_data();
    mp.mutable_graph()->mutable_initializer(0)->add_float_data(1);
    write_proto(p, mp);
    CHECK_THAT(import_error(p), Contains("'w'") && Contains("has 1 values"));
  }
  SECTION("external data outside the directory or past the end") {
    fs::create_directories(dir / "m");
    write_file(dir / "outside.bin", std::string(64, '\1'));
    write_file(dir / "m" / "w.bin", std::string(8, '\0'));
    fs::create_symlink(dir / "outside.bin", dir / "m" / "link.bin");
    auto with_location = [&](const std::string& loc, const std::string& offset, const std::string& length) {
      onnx::ModelProto mp = small_proto();
      auto* w = mp.mutable_graph()->mutable_initializer(0);
      w->clear_raw_data();
      w->set_data_location(onnx::TensorProto::EXTERNAL);
      auto add = [&](const char* k, const std::string& v) {
        auto* e = w->add_external_data();
        e->set_key(k);
        e->set_value(v);
      };
      add("location", loc);
      if (!offset.empty()) add("offset", offset);
      if (!length.empty()) add("length", length);
      fs::path p = dir / "m" / "ext.onnx";
      write_proto(p, mp);
      return import_error(p);
    };
    CHECK_THAT(with_location("../outside.bin", "", ""), Contains("leaves the model's directory"));
    CHECK_THAT(with_location((dir / "outside.bin").string(), "", ""), Contains("is absolute"));
    CHECK_THAT(with_location("link.bin", "", ""), Contains("outside the model's directory"));
    CHECK_THAT(with_location("w.bin", "4", ""), Contains("past the end") && Contains("'w'"));
    CHECK_THAT(with_location("w.bin", "0", "12"), Contains("length is 12 bytes"));
    CHECK_THAT(with_location("w.bin", "-3", ""), Contains("non-negative integer"));
    CHECK_THAT(with_location("missing.bin", "", ""), Contains("missing.bin"));
    CHECK(with_location("w.bin", "0", "8") == "(no error)");
  }
  SECTION("emit refuses bad data and leaves no partial output") {
    Model m = ox::tiny_mlp_model();
    m.tensors[1].data = qforge::make_blob(std::vector<uint8_t>(5));
    fs::path p = dir / "bad_out.onnx";
    CHECK_THROWS_WITH(ox::emit_onnx(m, p.string(), {}), Contains("fc1.bias") && Contains("5 bytes"));
    CHECK(!fs::exists(p));
    Model q = ox::tiny_mlp_model();
    q.tensors[0].type = ElemType::Q4_K;
    q.tensors[0].shape = {256};
    q.tensors[0].data = qforge::make_blob(std::vector<uint8_t>(144));
    CHECK_THROWS_WITH(ox::emit_onnx(q, p.string(), {}), Contains("q4_K"));
    Model r = ox::tiny_mlp_model();
    r.graph = nullptr;
    r.format = "gguf";
    CHECK_THROWS_WITH(ox::emit_onnx(r, p.string(), {}), Contains("no graph"));
    CHECK(!fs::exists(p));
  }
}

TEST_CASE("onnx: shape inference fills value infos", "[onnx]") {
  Model m = ox::tiny_conv_model();
  Model shared = m;  // shares the graph: inference must not touch it
  size_t added = ox::infer_shapes(m);
  CHECK(added >= 5);
  CHECK(shared.graph->value_info.empty());
  const qforge::ValueInfo* v = m.graph->find_value_info("conv_out");
  REQUIRE(v);
  REQUIRE(v->type.kind == qforge::ValueType::Kind::Tensor);
  CHECK(v->type.elem == ElemType::F32);
  REQUIRE(v->type.shape);
  REQUIRE(v->type.shape->size() == 4);
  CHECK((*v->type.shape)[0].param == "batch");
  CHECK((*v->type.shape)[1].value == 8);
  CHECK((*v->type.shape)[3].value == 16);
  const qforge::ValueInfo* f = m.graph->find_value_info("flat_out");
  REQUIRE(f);
  REQUIRE(f->type.shape);
  CHECK((*f->type.shape)[1].value == 8);
}

TEST_CASE("onnx: mutated files give errors, never crashes", "[onnx][hostile]") {
  fs::path dir = scratch("mutate");
  fs::path src = dir / "conv.onnx";
  ox::write_tiny_model("conv", src.string());
  const std::string good = read_file(src);
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  int errors = 0, imported = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(next() % 4);
    for (int k = 0; k < flips; ++k) {
      switch (next() % 3) {
        case 0: bytes[next() % bytes.size()] = static_cast<char>(next()); break;
        case 1: bytes.resize(next() % bytes.size()); break;
        default: bytes.insert(next() % bytes.size(), 1, static_cast<char>(next())); break;
      }
      if (bytes.empty()) bytes = "x";
    }
    fs::path p = dir / "m.onnx";
    write_file(p, bytes);
    try {
      Model m = ox::import_onnx(p.string());
      ox::emit_onnx(m, (dir / "out.onnx").string(), {});
      ++imported;
    } catch (const qforge::Error& e) {
      CHECK_THAT(e.what(), Contains(p.string()));
      ++errors;
    }
  }
  CHECK(errors > 200);
  CHECK(errors + imported == 400);
}

TEST_CASE("onnx: probe", "[onnx]") {
  std::string bytes = small_proto().SerializeAsString();
  auto head = reinterpret_cast<const uint8_t*>(bytes.data());
  CHECK(ox::probe_onnx("m.onnx", head, bytes.size()) == 100);
  CHECK(ox::probe_onnx("m.bin", head, bytes.size()) >= 50);
  const uint8_t gguf[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  CHECK(ox::probe_onnx("m.gguf", gguf, sizeof gguf) == 0);
  CHECK(ox::probe_onnx("m.onnx", gguf, sizeof gguf) < 50);
  // The built-in plugin entry registers the format through the registry.
  qforge::Registry registry;
  const QforgePlugin* plugin = qforge_builtin_onnx();
  CHECK(std::string(plugin->name) == "onnx");
  char err[256] = {};
  REQUIRE(plugin->register_fn(&registry, err, sizeof err) == 0);
  REQUIRE(registry.format("onnx"));
  CHECK(registry.format("onnx")->extension() == ".onnx");
  auto f = ox::make_onnx_format();
  CHECK(f->name() == "onnx");
  CHECK(f->extension() == ".onnx");
  qforge::Model out;
  qforge::Status st = f->import_model("/nonexistent/x.onnx", out);
  CHECK(!st.ok);
  CHECK_THAT(st.message, Contains("/nonexistent"));
  qforge::Options o;
  o["external_data_threshold"] = qforge::Value::of_string("big");
  st = f->emit_model(ox::tiny_mlp_model(), "/tmp/never.onnx", o);
  CHECK_THAT(st.message, Contains("external_data_threshold"));
}

// ---------------------------------------------------------------- corpus

TEST_CASE("onnx: libonnx-testdata round-trips bit-identically in ONNX Runtime", "[onnx][ort][corpus]") {
  const fs::path root = "/usr/share/libonnx-testdata/data";
  if (!fs::exists(root)) FAIL(root << " is missing: install Debian's libonnx-testdata");
  const fs::path out = binary_dir() / "onnx_roundtrip";
  fs::remove_all(out);
  fs::create_directories(out);

  nlohmann::json entries = nlohmann::json::array();
  std::map<std::string, std::string> qforge_errors;
  size_t stable = 0, models = 0;
  for (const char* suite : {"node", "pytorch-converted", "pytorch-operator", "simple"}) {
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(root / suite)) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (const fs::path& d : dirs) {
      if (!fs::exists(d / "model.onnx")) continue;
      ++models;
      const std::string name = std::string(suite) + "/" + d.filename().string();
      const fs::path emitted = out / suite / d.filename() / "model.onnx";
      fs::create_directories(emitted.parent_path());
      nlohmann::json data = nlohmann::json::array();
      std::vector<std::string> sets;
      for (const auto& e : fs::directory_iterator(d)) {
        if (e.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(e.path());
      }
      std::sort(sets.begin(), sets.end());
      for (const auto& s : sets) data.push_back(s);
      nlohmann::json entry = {{"name", name},
                              {"original", (d / "model.onnx").string()},
                              {"emitted", emitted.string()},
                              {"data", data}};
      try {
        Model m = ox::import_onnx((d / "model.onnx").string());
        ox::emit_onnx(m, emitted.string(), {});
        // Import and emit again: the bytes must not change.
        const fs::path second = emitted.parent_path() / "model2.onnx";
        ox::emit_onnx(ox::import_onnx(emitted.string()), second.string(), {});
        if (read_file(second) == read_file(emitted))
          ++stable;
        else
          qforge_errors[name] = "re-emitting the emitted model changed its bytes";
      } catch (const std::exception& e) {
        qforge_errors[name] = e.what();
        entry["emitted"] = (d / "model.onnx").string();  // still learn whether ORT runs it
      }
      entries.push_back(entry);
    }
  }
  auto results = compare_many(entries, out);

  std::map<std::string, std::vector<std::string>> by_status;
  std::vector<std::string> failures;
  for (const auto& e : entries) {
    const std::string name = e["name"];
    OrtResult r = results[name];
    auto qe = qforge_errors.find(name);
    if (qe != qforge_errors.end() && r.status != "original_failed") {
      r = {"qforge_failed", qe->second};
    }
    by_status[r.status].push_back(name + (r.reason.empty() ? "" : ": " + r.reason));
    if (r.status != "identical" && r.status != "original_failed" && r.status != "nondeterministic") {
      failures.push_back(name + " [" + r.status + "] " + r.reason);
    }
  }
  std::ofstream report(out / "report.txt");
  std::string summary = "ONNX round trip over libonnx-testdata: " + std::to_string(models) +
                        " models; stable re-emit " + std::to_string(stable);
  for (const auto& kv : by_status) summary += "; " + kv.first + " " + std::to_string(kv.second.size());
  report << summary << "\n";
  for (const auto& kv : by_status) {
    if (kv.first == "identical") continue;
    report << "\n== " << kv.first << " (" << kv.second.size() << ")\n";
    for (const auto& line : kv.second) report << line << "\n";
  }
  report.close();
  WARN(summary << " (details: " << (out / "report.txt").string() << ")");
  for (const auto& f : failures) UNSCOPED_INFO(f);
  CHECK(failures.empty());
  CHECK(by_status["identical"].size() >= 900);
}

// ---------------------------------------------------------------- > 2 GiB

TEST_CASE("onnx: a model over 2 GiB imports, emits with external data and runs", "[onnx][large]") {
  // y[1,16] = x[1,N] * W[N,16]; W is 2.15 GB, generated straight to disk.
  const int64_t N = (int64_t{1} << 25) + 4096;  // 64 bytes per row
  fs::path dir = scratch("large");
  const fs::path raw = dir / "w.bin";
  auto wval = [](int64_t i, int64_t j) { return static_cast<float>((i * 7 + j * 3) % 5); };
  {
    std::ofstream f(raw, std::ios::binary);
    std::vector<float> row(16 * 65536);
    for (int64_t i0 = 0; i0 < N; i0 += 65536) {
      int64_t rows = std::min<int64_t>(65536, N - i0);
      for (int64_t i = 0; i < rows; ++i) {
        for (int j = 0; j < 16; ++j) row[i * 16 + j] = wval(i0 + i, j);
      }
      f.write(reinterpret_cast<const char*>(row.data()), rows * 64);
    }
    REQUIRE(f.good());
  }
  // The first model: built in the IR with W a view of the mapped file. Over
  // 2 GiB, so the emitter moves W to big.onnx.data by itself.
  {
    Model m;
    m.format = "onnx";
    m.graph = std::make_shared<Graph>();
    Graph& g = *m.graph;
    g.name = "large";
    g.model.ir_version = 8;
    g.model.opset_imports.push_back({"", 13});
    g.inputs.push_back({"x", qforge::ValueType::tensor(ElemType::F32, std::vector<int64_t>{1, N}), "", ""});
    g.outputs.push_back({"y", qforge::ValueType::tensor(ElemType::F32, std::vector<int64_t>{1, 16}), "", ""});
    Tensor w;
    w.name = "W";
    w.shape = {N, 16};
    w.type = ElemType::F32;
    w.data = qforge::MappedFile::open(raw.string());
    REQUIRE(w.data->size() == static_cast<uint64_t>(N) * 64);
    m.tensors.push_back(std::move(w));
    Node mm;
    mm.name = "mm";
    mm.op_type = "MatMul";
    mm.inputs = {"x", "W"};
    mm.outputs = {"y"};
    g.nodes.push_back(mm);
    ox::emit_onnx(m, (dir / "big.onnx").string(), {});
  }
  fs::remove(raw);  // keep disk use near 2 copies
  REQUIRE(fs::exists(dir / "big.onnx.data"));
  CHECK(fs::file_size(dir / "big.onnx") < 4096);

  Model big = ox::import_onnx((dir / "big.onnx").string());
  REQUIRE(big.tensors.size() == 1);
  CHECK(big.tensors[0].bytes()->size() == static_cast<uint64_t>(N) * 64);
  fs::create_directories(dir / "out");
  ox::EmitOptions opts;
  opts.external_data_threshold = 1 << 20;
  ox::emit_onnx(big, (dir / "out" / "model.onnx").string(), opts);
  big = Model();
  fs::remove(dir / "big.onnx.data");
  fs::remove(dir / "big.onnx");

  // x: one every 4096 positions, so the float sums are exact.
  std::vector<float> x(static_cast<size_t>(N), 0.0f);
  std::vector<double> expect(16, 0.0);
  for (int64_t i = 0; i < N; i += 4096) {
    x[i] = 1.0f;
    for (int j = 0; j < 16; ++j) expect[j] += wval(i, j);
  }
  {
    std::ofstream f(dir / "x.npy", std::ios::binary);
    std::string header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, " + std::to_string(N) + "), }";
    header.append(64 - (10 + header.size() + 1) % 64, ' ');
    header += '\n';
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t hl = static_cast<uint16_t>(header.size());
    f.write(reinterpret_cast<const char*>(&hl), 2);
    f << header;
    f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
  }
  x = {};
  int rc = run_helper("run " + quote((dir / "out" / "model.onnx").string()) + " " + quote(dir.string()) +
                      " x=" + quote((dir / "x.npy").string()));
  REQUIRE(rc == 0);
  std::string y = read_file(dir / "output_0.npy");
  REQUIRE(y.size() >= 64);
  std::vector<float> got(16);
  std::memcpy(got.data(), y.data() + y.size() - 64, 64);
  for (int j = 0; j < 16; ++j) CHECK(got[j] == static_cast<float>(expect[j]));
  fs::remove_all(dir);
}
