// make_hostile_onnx DIR
//
// Writes the hostile ONNX corpus into DIR, plus DIR/README.md listing each file, what is
// wrong with it and the text its error message must contain. The committed copy lives in
// tests/data/hostile/onnx/; regenerate with
//   build/bin/make_hostile_onnx tests/data/hostile/onnx
//
// Malformed-but-parseable models are built with ONNX's protobuf classes from one small
// valid model (base_model()); unparseable ones are raw bytes or cut/patched
// serializations of it. Every file must be refused by `qforge inspect FILE` with exit
// status 1 and a message naming the file and the element at fault. Output is
// deterministic (protobuf serializes fields in field-number order).
//
// External-data cases name files relative to DIR: `empty.onnx` (0 bytes) is the data
// file that is too short; the missing, absolute and '../' ones do not resolve inside DIR.
#ifndef ONNX_ML
#define ONNX_ML 1  // Debian's onnx_proto is the -ml variant
#endif
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Case {
  std::string name;      // file name without .onnx
  std::string bytes;     // file contents
  std::string wrong;     // what is wrong, for the README
  std::string expect;    // text the error message contains
  bool pending = false;  // accepted by the importer today: written only with --pending
};

using onnx::AttributeProto;
using onnx::GraphProto;
using onnx::ModelProto;
using onnx::NodeProto;
using onnx::TensorProto;

void set_value_info(onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(TensorProto::FLOAT);
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

NodeProto* add_node(GraphProto* g, const std::string& name, const std::string& op,
                    std::vector<std::string> inputs, std::vector<std::string> outputs) {
  NodeProto* n = g->add_node();
  n->set_name(name);
  n->set_op_type(op);
  for (const auto& s : inputs) n->add_input(s);
  for (const auto& s : outputs) n->add_output(s);
  return n;
}

// A float tensor [2, 2] with 16 bytes of raw_data (distinctive bytes 0xA0..0xAF).
void set_weight(TensorProto* t, const std::string& name) {
  t->set_name(name);
  t->set_data_type(TensorProto::FLOAT);
  t->add_dims(2);
  t->add_dims(2);
  std::string raw;
  for (int i = 0; i < 16; ++i) raw.push_back(static_cast<char>(0xA0 + i));
  t->set_raw_data(raw);
}

// Valid: Z = Relu(MatMul(X, W)), X and Z float [2, 2], W an initializer.
ModelProto base_model() {
  ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("make_hostile_onnx");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  GraphProto* g = m.mutable_graph();
  g->set_name("g");
  add_node(g, "mm", "MatMul", {"X", "W"}, {"Y"});
  add_node(g, "relu", "Relu", {"Y"}, {"Z"});
  set_weight(g->add_initializer(), "W");
  set_value_info(g->add_input(), "X", {2, 2});
  set_value_info(g->add_output(), "Z", {2, 2});
  return m;
}

std::string ser(const ModelProto& m) {
  std::string s;
  if (!m.SerializeToString(&s)) {
    std::fprintf(stderr, "make_hostile_onnx: SerializeToString failed\n");
    std::exit(1);
  }
  return s;
}

size_t find_or_die(const std::string& hay, const std::string& needle) {
  size_t at = hay.find(needle);
  if (at == std::string::npos || hay.find(needle, at + 1) != std::string::npos) {
    std::fprintf(stderr, "make_hostile_onnx: pattern not found exactly once\n");
    std::exit(1);
  }
  return at;
}

TensorProto* weight(ModelProto& m) { return m.mutable_graph()->mutable_initializer(0); }

void set_external(TensorProto* t, std::vector<std::pair<std::string, std::string>> kv) {
  t->clear_raw_data();
  t->set_data_location(TensorProto::EXTERNAL);
  for (const auto& [k, v] : kv) {
    auto* e = t->add_external_data();
    e->set_key(k);
    e->set_value(v);
  }
}

// `levels` If nodes, each one's then_branch holding the next; the innermost graph is
// `inner`. Node k reads the outer "cond" and writes "y<k>".
void nest_ifs(GraphProto* g, int levels, int k, const GraphProto& inner) {
  if (k == levels) {
    *g = inner;
    return;
  }
  g->set_name("g" + std::to_string(k));
  NodeProto* n = add_node(g, "if" + std::to_string(k), "If", {"cond"}, {"y" + std::to_string(k)});
  AttributeProto* then_a = n->add_attribute();
  then_a->set_name("then_branch");
  then_a->set_type(AttributeProto::GRAPH);
  nest_ifs(then_a->mutable_g(), levels, k + 1, inner);
  set_value_info(g->add_output(), "y" + std::to_string(k), {2, 2});
}

ModelProto nested_model(int levels, const GraphProto& inner) {
  ModelProto m = base_model();
  GraphProto* g = m.mutable_graph();
  g->clear_node();
  g->clear_initializer();
  g->clear_input();
  g->clear_output();
  auto* cond = g->add_input();
  cond->set_name("cond");
  cond->mutable_type()->mutable_tensor_type()->set_elem_type(TensorProto::BOOL);
  nest_ifs(g, levels, 0, inner);
  g->set_name("g");
  return m;
}

std::vector<Case> cases() {
  std::vector<Case> v;
  auto add = [&](std::string name, std::string bytes, std::string wrong, std::string expect) {
    v.push_back({std::move(name), std::move(bytes), std::move(wrong), std::move(expect)});
  };
  // (Cases the importer does not refuse yet are marked pending = true, written only
  // with --pending; there are none today.)
  const std::string parse_failed = "protobuf parsing failed near byte offset";
  const std::string good = ser(base_model());

  // ---- unparseable bytes
  add("empty", "", "0 bytes", "the file is empty");
  add("html_page", "<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n",
      "an HTML error page saved as .onnx ('<' is field 7 with wire type 4)", parse_failed);
  {
    std::string b = "\x08\x08";  // ir_version 8, then bytes that are no protobuf tag
    for (int i = 0; i < 30; ++i) b.push_back(static_cast<char>(0xFF - i * 7));
    add("garbage_after_ir_version", b, "ir_version, then garbage bytes", parse_failed);
  }
  add("truncated_header", good.substr(0, 3), "the first 3 bytes of a valid model", parse_failed);
  {
    size_t at = find_or_die(good, "MatMul");
    add("truncated_mid_node", good.substr(0, at + 3), "cut inside node 'mm' (in its op_type)", parse_failed);
  }
  {
    size_t at = find_or_die(good, "\xA0\xA1\xA2\xA3");
    add("truncated_mid_initializer", good.substr(0, at + 8),
        "cut inside initializer 'W' (8 of its 16 raw_data bytes)", parse_failed);
  }
  add("truncated_last_byte", good.substr(0, good.size() - 1), "a valid model without its last byte",
      parse_failed);
  {
    // ir_version 8, then field 7 (graph, length-delimited) declaring 2^31 - 1 bytes.
    std::string b = std::string("\x08\x08\x3a\xff\xff\xff\xff\x07", 8) + std::string(8, '\0');
    add("huge_graph_length", b, "the graph field declares 2147483647 bytes, 8 follow", parse_failed);
  }
  {
    // A string initializer whose one string_data entry claims more bytes than its
    // TensorProto holds (the length prefix of "hello" patched from 5 to 100).
    ModelProto m = base_model();
    TensorProto* t = m.mutable_graph()->add_initializer();
    t->set_name("s");
    t->set_data_type(TensorProto::STRING);
    t->add_dims(1);
    t->add_string_data("hello");
    std::string b = ser(m);
    size_t at = find_or_die(b, std::string("\x32\x05hello", 7));
    b[at + 1] = 100;
    add("string_bad_length_prefix", b,
        "string tensor 's': the length prefix of its string says 100, 5 follow", parse_failed);
  }
  {
    // 200 Ifs, each inside the previous one's then_branch: 600+ nested messages, past
    // protobuf's recursion limit of 100.
    GraphProto inner;
    inner.set_name("inner");
    add_node(&inner, "id", "Identity", {"cond"}, {"out"});
    set_value_info(inner.add_output(), "out", {2, 2});
    add("nested_if_200", ser(nested_model(200, inner)),
        "If inside If, 200 levels deep (protobuf's recursion limit is 100 messages)", parse_failed);
  }

  // ---- the ModelProto
  {
    ModelProto m = base_model();
    m.clear_graph();
    add("no_graph", ser(m), "ModelProto without 'graph'", "field 'graph' is missing");
  }
  {
    ModelProto m = base_model();
    m.clear_ir_version();
    add("no_ir_version", ser(m), "ModelProto without 'ir_version'", "field 'ir_version' is missing");
  }
  {
    ModelProto m = base_model();
    m.mutable_opset_import(0)->set_version(0);
    add("opset_version_0", ser(m), "the default domain is imported at version 0",
        "No Op registered for MatMul with domain_version of 0");
  }
  {
    ModelProto m = base_model();
    m.mutable_opset_import(0)->set_domain("ai.onnx.nowhere");
    add("opset_unknown_domain_only", ser(m),
        "the only opset_import is of 'ai.onnx.nowhere', which ONNX does not know; the default "
        "domain the nodes use is not imported",
        "No opset import for domain ''");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(1)->set_domain("com.example.nowhere");
    add("node_domain_not_imported", ser(m),
        "node 'relu' uses domain 'com.example.nowhere', which opset_import does not list",
        "com.example.nowhere");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(1)->set_op_type("NoSuchOp");
    add("unknown_op", ser(m), "node 'relu' is op 'NoSuchOp', which the default domain lacks", "NoSuchOp");
  }

  // ---- graph structure
  {
    ModelProto m = base_model();
    GraphProto* g = m.mutable_graph();
    g->mutable_node(0)->set_input(0, "Z");  // mm reads relu's output, relu reads mm's
    add("cycle", ser(m), "mm reads Z, which relu computes from mm's output", "the nodes form a cycle");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(1)->set_input(0, "Z");
    add("self_loop", ser(m), "node 'relu' reads its own output", "reads its own output (a cycle)");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
    add("dangling_input", ser(m), "node 'relu' reads 'nowhere', which nothing defines",
        "reads value 'nowhere', which no graph input, initializer or node output defines");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(1)->set_output(0, "Y");
    m.mutable_graph()->mutable_node(1)->set_input(0, "X");
    m.mutable_graph()->mutable_output(0)->set_name("Y");
    add("two_producers", ser(m), "nodes 'mm' and 'relu' both write 'Y'", "value 'Y' is produced by both");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(0)->set_output(0, "W");
    m.mutable_graph()->mutable_node(1)->set_input(0, "W");
    add("node_overwrites_initializer", ser(m), "node 'mm' writes 'W', an initializer",
        "writes value 'W', which is already a graph input or initializer");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_output(0)->set_name("Q");
    add("output_not_produced", ser(m), "graph output 'Q' is computed by nothing",
        "graph output 'Q' is not produced");
  }
  {
    ModelProto m = base_model();
    m.mutable_graph()->mutable_node(1)->clear_op_type();
    add("empty_op_type", ser(m), "node 'relu' has no op_type", "node #1 'relu' (): op_type is empty");
  }
  {
    ModelProto m = base_model();
    AttributeProto* a = m.mutable_graph()->mutable_node(1)->add_attribute();
    a->set_name("alpha");
    a->set_type(static_cast<AttributeProto::AttributeType>(99));
    // proto2 keeps an unknown enum value as an unknown field: has_type() is false, the
    // attribute reads as UNDEFINED, and the checker's "Field 'type' of 'alpha' is required
    // but missing" is one of the complaints the importer ignores.
    add("unknown_attribute_type", ser(m), "node 'relu' attribute 'alpha' has type 99", "alpha");
  }
  {
    // The checker stops at its first complaint; when that is an ignored "shape ... is
    // required but missing" on a graph input, the unknown op behind it is never reported.
    ModelProto m = base_model();
    m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    m.mutable_graph()->mutable_node(1)->set_op_type("NoSuchOp");
    add("unknown_op_behind_missing_shape", ser(m),
        "node 'relu' is op 'NoSuchOp'; graph input 'X' has no shape", "NoSuchOp");
  }
  {
    ModelProto m = base_model();
    m.set_ir_version(0);
    set_value_info(m.mutable_graph()->add_input(), "W", {2, 2});  // as IR < 4 requires
    add("ir_version_0", ser(m), "ir_version is 0 (onnx.checker.check_model refuses it)", "ir_version");
  }
  {
    ModelProto m = base_model();
    set_weight(m.mutable_graph()->add_initializer(), "W");
    add("duplicate_initializer", ser(m), "two initializers named 'W'", "initializer 'W' appears twice");
  }
  {
    // 30 levels parse (92 nested messages); the innermost graph's initializer is bad.
    GraphProto inner;
    inner.set_name("inner");
    add_node(&inner, "id", "Identity", {"deep"}, {"out"});
    TensorProto* t = inner.add_initializer();
    set_weight(t, "deep");
    t->set_dims(0, -7);
    set_value_info(inner.add_output(), "out", {2, 2});
    add("nested_if_30_bad_tensor", ser(nested_model(30, inner)),
        "If inside If, 30 levels; the innermost initializer 'deep' has dimension -7",
        "subgraph graph 'inner' initializer tensor 'deep': dimension -7 is negative");
  }

  // ---- tensors
  {
    ModelProto m = base_model();
    weight(m)->mutable_raw_data()->resize(12);
    add("raw_data_short", ser(m), "initializer 'W' [2, 2] float has 12 raw_data bytes, needs 16",
        "tensor 'W': has 12 bytes of raw_data but its shape [2, 2]");
  }
  {
    ModelProto m = base_model();
    weight(m)->mutable_raw_data()->append(4, '\0');
    add("raw_data_long", ser(m), "initializer 'W' [2, 2] float has 20 raw_data bytes, needs 16",
        "tensor 'W': has 20 bytes of raw_data but its shape [2, 2]");
  }
  {
    ModelProto m = base_model();
    weight(m)->clear_raw_data();
    for (int i = 0; i < 3; ++i) weight(m)->add_float_data(1.0f);
    add("float_data_short", ser(m), "initializer 'W' [2, 2] float has 3 float_data values, needs 4",
        "tensor 'W': has 3 values but its shape [2, 2]");
  }
  {
    ModelProto m = base_model();
    weight(m)->set_dims(0, -2);
    add("negative_dim", ser(m), "initializer 'W' has dims [-2, 2]", "tensor 'W': dimension -2 is negative");
  }
  {
    ModelProto m = base_model();
    weight(m)->clear_dims();
    for (int i = 0; i < 3; ++i) weight(m)->add_dims(int64_t(1) << 30);
    add("dims_overflow", ser(m), "initializer 'W' has dims [2^30, 2^30, 2^30] (2^90 elements)",
        "tensor 'W': shape overflows");
  }
  {
    ModelProto m = base_model();
    weight(m)->clear_dims();
    weight(m)->add_dims(int64_t(1) << 62);
    add("bytes_overflow", ser(m), "initializer 'W' is float [2^62] (2^64 bytes)",
        "tensor 'W': byte size overflows");
  }
  {
    ModelProto m = base_model();
    weight(m)->set_data_type(99);
    add("unknown_data_type", ser(m), "initializer 'W' has data_type 99",
        "tensor 'W': element type id 99 is not supported");
  }
  {
    ModelProto m = base_model();
    weight(m)->set_data_type(0);
    add("undefined_data_type", ser(m), "initializer 'W' has data_type 0 (UNDEFINED)",
        "tensor 'W': element type id 0 is not supported");
  }
  {
    ModelProto m = base_model();
    TensorProto* t = m.mutable_graph()->add_initializer();
    t->set_name("s");
    t->set_data_type(TensorProto::STRING);
    t->add_dims(3);
    t->add_string_data("a");
    t->add_string_data("b");
    add("string_count_mismatch", ser(m), "string initializer 's' [3] has 2 strings",
        "tensor 's': has 2 strings but its shape [3]");
  }

  // ---- external data (paths relative to the model's directory)
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "../x.bin"}});
    add("external_parent_dir", ser(m), "initializer 'W' location '../x.bin'",
        "tensor 'W': external data location '../x.bin' leaves the model's directory");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "/etc/passwd"}});
    add("external_absolute", ser(m), "initializer 'W' location '/etc/passwd'",
        "tensor 'W': external data location '/etc/passwd' is absolute");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "no_such_file.bin"}});
    add("external_missing_file", ser(m), "initializer 'W' location 'no_such_file.bin', which does not exist",
        "no_such_file.bin' cannot be opened");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "."}});
    add("external_location_is_dir", ser(m), "initializer 'W' location '.', the model's directory itself",
        "tensor 'W': external data location '.' resolves to");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "empty.onnx"}});
    add("external_past_eof", ser(m), "initializer 'W' needs 16 bytes of 'empty.onnx', which has 0",
        "tensor 'W': external data [offset 0, length 16] lies past the end");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "empty.onnx"}, {"offset", "18446744073709551615"}});
    add("external_offset_huge", ser(m), "initializer 'W' at offset 2^64-1 of 'empty.onnx'",
        "tensor 'W': external data [offset 18446744073709551615, length 16] lies past the end");
  }
  {
    ModelProto m = base_model();
    weight(m)->set_dims(0, int64_t(1) << 40);
    set_external(weight(m), {{"location", "empty.onnx"}});
    add("external_huge_length", ser(m), "initializer 'W' is float [2^40, 2] (8 TiB) in 'empty.onnx'",
        "tensor 'W': external data [offset 0, length 8796093022208] lies past the end");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "empty.onnx"}, {"length", "8"}});
    add("external_length_mismatch", ser(m), "initializer 'W' [2, 2] float declares length 8",
        "tensor 'W': external data length is 8 bytes but its shape and type need 16 bytes");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"location", "empty.onnx"}, {"offset", "-1"}});
    add("external_negative_offset", ser(m), "initializer 'W' has external_data offset '-1'",
        "tensor 'W': external_data 'offset' is '-1', expected a non-negative integer");
  }
  {
    ModelProto m = base_model();
    set_external(weight(m), {{"offset", "0"}});
    add("external_no_location", ser(m), "initializer 'W' is EXTERNAL with no 'location'",
        "tensor 'W': data_location is EXTERNAL but no 'location' is given");
  }
  return v;
}

bool write_file(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool with_pending = argc == 3 && std::strcmp(argv[2], "--pending") == 0;
  if (argc != 2 && !with_pending) {
    std::fprintf(stderr, "usage: make_hostile_onnx DIR [--pending]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<Case> all = cases();
  std::string index =
      "# Hostile ONNX corpus\n\n"
      "Generated by `tests/tools/make_hostile_onnx.cc`; do not edit by hand. Regenerate with\n"
      "`build/bin/make_hostile_onnx tests/data/hostile/onnx`. Each file must be refused by\n"
      "the ONNX importer (`qforge inspect FILE` exits with status 1) with a message that\n"
      "names the file and contains the text below.\n\n"
      "The external-data cases resolve their `location` against this directory:\n"
      "`empty.onnx` (0 bytes) is the data file that is too short. Files that protobuf\n"
      "cannot parse are reported with the byte offset where parsing stopped; deep\n"
      "nesting (`nested_if_200`) stops at protobuf's recursion limit of 100 messages.\n\n"
      "| file | what is wrong | the message contains |\n|---|---|---|\n";
  std::string gaps;
  size_t written = 0;
  for (const Case& c : all) {
    if (c.pending) {
      gaps += "| `" + c.name + ".onnx` | " + c.wrong + " | `" + c.expect + "` |\n";
      if (!with_pending) continue;
    }
    ++written;
    const std::string path = dir + "/" + c.name + ".onnx";
    if (!write_file(path, c.bytes)) {
      std::fprintf(stderr, "make_hostile_onnx: %s: cannot write\n", path.c_str());
      return 1;
    }
    if (!c.pending) index += "| `" + c.name + ".onnx` | " + c.wrong + " | `" + c.expect + "` |\n";
  }
  if (!gaps.empty()) {
    index +=
        "\n## Known gaps\n\n"
        "Hostile models the importer accepts today. They are not written (so the corpus\n"
        "test stays green); `make_hostile_onnx DIR --pending` writes them too.\n\n"
        "| file | what is wrong | the message should contain |\n|---|---|---|\n" +
        gaps;
  }
  if (!write_file(dir + "/README.md", index)) {
    std::fprintf(stderr, "make_hostile_onnx: %s/README.md: cannot write\n", dir.c_str());
    return 1;
  }
  std::printf("wrote %zu files to %s\n", written, dir.c_str());
  return 0;
}
