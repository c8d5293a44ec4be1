// The safetensors plugin's reader, writer and metadata rule, compiled into the
// test binary (plugins/safetensors/*.cc but its entry point): exact header bytes,
// slices instead of copies, typed metadata at its edges, byte offsets in errors,
// emit failures that leave no file. The plugin itself is built out of tree and
// used in builds by tests/safetensors_plugin.cmake.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "qforge/status.h"
#include "safetensors/safetensors.h"
#include "test_util.h"

using namespace qforge;
namespace fs = std::filesystem;

namespace {

struct TempDir : qforge::test::TempDir {
  TempDir() : qforge::test::TempDir("qforge_safetensors_test_") {}
};
using qforge::test::slurp;

std::vector<uint8_t> file_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  const uint64_t n = header.size();
  std::vector<uint8_t> b(8 + header.size() + data.size());
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(b.data() + 8 + header.size(), data.data(), data.size());
  return b;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    st::parse_safetensors(make_blob(bytes.data(), bytes.size()), "x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Tensor f32_tensor(const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.type = ElemType::F32;
  t.data = make_blob(values.data(), values.size() * 4);
  return t;
}

MetaValue f64(double v) {
  MetaValue m;
  m.type = MetaType::F64;
  m.f = v;
  return m;
}
MetaValue typed(MetaType t, uint64_t u, int64_t i) {
  MetaValue m;
  m.type = t;
  m.u = u;
  m.i = i;
  return m;
}

// encode -> raw entries (as the reader hands them over) -> decode
Metadata round_trip(const Metadata& in) {
  std::vector<st::RawMeta> raw;
  for (auto& [k, v] : st::encode_metadata(in)) raw.push_back({k, v, 0, 0});
  return st::decode_metadata(raw, "x.safetensors");
}

}  // namespace

TEST_CASE("safetensors: the header is written exactly as specified", "[safetensors]") {
  TempDir dir;
  Model m;
  m.metadata.emplace_back("general.architecture", MetaValue::of_string("llama"));
  m.metadata.emplace_back("llama.block_count", MetaValue::of_u32(2));
  m.tensors.push_back(f32_tensor("b", {2}, {1, 2}));
  m.tensors.push_back(f32_tensor("a \"q\"", {}, {3}));
  st::write_safetensors(m, dir / "m.safetensors");
  auto bytes = slurp(dir / "m.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  const std::string json = R"({"__metadata__":{"general.architecture":"llama","llama.block_count":"2",)"
                           R"("qforge.metadata_types":"{\"llama.block_count\":\"u32\"}"},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("a \"q\"":{"dtype":"F32","shape":[],"data_offsets":[8,12]}})";
  CHECK(header.substr(0, json.size()) == json);
  CHECK(header.find_first_not_of(' ', json.size()) == std::string::npos);
  CHECK((8 + n) % 8 == 0);
  CHECK(header.size() - json.size() < 8);
  REQUIRE(bytes.size() == 8 + n + 12);

  // Read back from a blob: tensors are slices of it, metadata typed again.
  BlobPtr blob = make_blob(bytes.data(), bytes.size());
  Model r = st::parse_safetensors(blob, "m.safetensors");
  REQUIRE(r.tensors.size() == 2);
  CHECK(r.tensors[0].name == "b");
  CHECK(r.tensors[1].name == "a \"q\"");
  CHECK(r.tensors[1].shape.empty());
  CHECK(r.tensors[0].data->data() == blob->data() + 8 + n);
  CHECK(r.tensors[1].data->data() == blob->data() + 8 + n + 8);
  CHECK(r.metadata == m.metadata);

  // An empty model is "{}" and six spaces, as the reference implementation writes it.
  st::write_safetensors(Model{}, dir / "empty.safetensors");
  auto e = slurp(dir / "empty.safetensors");
  CHECK(std::string(e.begin(), e.end()) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
}

TEST_CASE("safetensors: typed metadata survives at its edges", "[safetensors]") {
  Metadata in;
  in.emplace_back("u8", typed(MetaType::U8, 255, 0));
  in.emplace_back("i8", typed(MetaType::I8, 0, -128));
  in.emplace_back("u16", typed(MetaType::U16, 65535, 0));
  in.emplace_back("i16", typed(MetaType::I16, 0, -32768));
  in.emplace_back("u32", MetaValue::of_u32(UINT32_MAX));
  in.emplace_back("i32", MetaValue::of_i32(INT32_MIN));
  in.emplace_back("u64", MetaValue::of_u64(UINT64_MAX));
  in.emplace_back("i64", typed(MetaType::I64, 0, INT64_MIN));
  in.emplace_back("eps", MetaValue::of_f32(1e-5f));
  in.emplace_back("f32max", MetaValue::of_f32(std::numeric_limits<float>::max()));
  in.emplace_back("f32tiny", MetaValue::of_f32(std::numeric_limits<float>::denorm_min()));
  in.emplace_back("negzero", MetaValue::of_f32(-0.0f));
  in.emplace_back("nan", MetaValue::of_f32(std::numeric_limits<float>::quiet_NaN()));
  in.emplace_back("f64", f64(0.1));
  in.emplace_back("f64tiny", f64(std::numeric_limits<double>::denorm_min()));
  in.emplace_back("ninf", f64(-std::numeric_limits<double>::infinity()));
  in.emplace_back("yes", MetaValue::of_bool(true));
  in.emplace_back("text", MetaValue::of_string("tab\t \"quote\" é \x01"));
  in.emplace_back("floats",
                  MetaValue::of_array(MetaType::F32, {MetaValue::of_f32(1.5f), MetaValue::of_f32(INFINITY),
                                                      MetaValue::of_f32(0.1f)}));
  in.emplace_back("tokens", MetaValue::of_array(MetaType::String, {MetaValue::of_string("<s>"),
                                                                   MetaValue::of_string("\xe2\x96\x81the"),
                                                                   MetaValue::of_string("")}));
  in.emplace_back("nested", MetaValue::of_array(MetaType::Array,
                                                {MetaValue::of_array(MetaType::I32, {MetaValue::of_i32(-1)}),
                                                 MetaValue::of_array(MetaType::I32, {})}));
  in.emplace_back("no_arrays", MetaValue::of_array(MetaType::Array, {}));
  in.emplace_back("bools", MetaValue::of_array(MetaType::Bool, {MetaValue::of_bool(false)}));
  in.emplace_back("negnan", f64(-std::numeric_limits<double>::quiet_NaN()));

  auto enc = st::encode_metadata(in);
  REQUIRE(enc.size() == in.size() + 1);
  CHECK(enc.back().first == "qforge.metadata_types");
  CHECK(enc[8].second == "1e-05");
  CHECK(enc[13].second == "0.1");
  CHECK(enc[15].second == "-inf");
  CHECK(enc[18].second == R"([1.5,"inf",0.1])");
  CHECK(enc[20].second == "[[-1],[]]");
  CHECK(enc[23].second == "-nan");
  CHECK(round_trip(in) == in);

  // Strings only: no types entry, nothing changes.
  Metadata s{{"format", MetaValue::of_string("pt")}};
  CHECK(st::encode_metadata(s).size() == 1);
  CHECK(round_trip(s) == s);
}

TEST_CASE("safetensors: metadata that cannot be written names its key", "[safetensors]") {
  auto error = [](Metadata m) {
    try {
      st::encode_metadata(m);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(error({{"qforge.metadata_types", MetaValue::of_string("{}")}}),
             Catch::Contains("metadata 'qforge.metadata_types'") && Catch::Contains("reserved"));
  CHECK_THAT(error({{"bad", MetaValue::of_string("a\xff")}}),
             Catch::Contains("metadata 'bad'") && Catch::Contains("expected UTF-8 text"));
  CHECK_THAT(
      error({{"mixed", MetaValue::of_array(MetaType::Array, {MetaValue::of_array(MetaType::I32, {}),
                                                             MetaValue::of_array(MetaType::U8, {})})}}),
      Catch::Contains("metadata 'mixed'") && Catch::Contains("nested arrays of one type"));
}

TEST_CASE("safetensors: header errors carry the byte offset of the token", "[safetensors]") {
  // {"w": {"dtype": "F32",, ...: the second comma is header byte 22, file byte 30.
  CHECK_THAT(parse_error(file_bytes(R"({"w": {"dtype": "F32",, "shape": [1]}})", {})),
             Catch::StartsWith("x.safetensors: byte 30: header JSON: syntax error"));
  // The dtype string ends at header byte 18.
  CHECK_THAT(
      parse_error(file_bytes(R"({"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", {0, 0, 0, 0})),
      Catch::StartsWith("x.safetensors: byte 26: tensor 'w': dtype: expected one of F64"));
  // The second "w" ends at header byte 55.
  CHECK_THAT(parse_error(file_bytes(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{}})", {0})),
             Catch::StartsWith("x.safetensors: byte 63: tensor 'w': expected unique names"));
  // The unsigned 2^64 is beyond 64 bits (the parser reads it as a float).
  CHECK_THAT(parse_error(file_bytes(
                 R"({"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}})", {0})),
             Catch::Contains(
                 "expected an unsigned integer, found the integer 18446744073709551616 (more than 64 bits)"));
  CHECK_THAT(parse_error(file_bytes(R"({"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", {0})),
             Catch::Contains("found F4, a safetensors dtype that qforge cannot hold"));
  CHECK_THAT(parse_error(file_bytes("{}", {1})), Catch::Contains("1 byte after the last tensor's data"));
  // Zero-size tensors at the same offset are neither an overlap nor a hole.
  CHECK(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                               R"("b":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]}})",
                               {})) == "");
}

TEST_CASE("safetensors: probe", "[safetensors]") {
  TempDir dir;
  st::SafetensorsFormat f;
  auto bytes = file_bytes("{\"w\":{}}", {});
  std::ofstream(dir / "m.bin", std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), 16);
  std::ofstream(dir / "m.safetensors", std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), 16);
  CHECK(f.probe(dir / "m.bin", bytes.data(), bytes.size()) == 90);
  CHECK(f.probe(dir / "m.safetensors", bytes.data(), bytes.size()) == 100);
  const uint8_t gguf[16] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  CHECK(f.probe(dir / "m.bin", gguf, sizeof gguf) == 0);
  CHECK(f.probe(dir / "m.safetensors", gguf, sizeof gguf) == 40);  // ours: import explains
  CHECK(f.probe(dir / "missing.bin", bytes.data(), bytes.size()) == 0);
}

TEST_CASE("safetensors: emit errors name the tensor and leave no file", "[safetensors]") {
  TempDir dir;
  const std::string out = dir / "m.safetensors";
  auto emit_error = [&](const Model& m) {
    Status s = st::SafetensorsFormat().emit_model(m, out, {});
    CHECK_FALSE(fs::exists(out));
    return s.message;
  };
  Model q;
  Tensor t;
  t.name = "blk.0.attn_q.weight";
  t.shape = {4, 32};
  t.type = ElemType::Q4_0;
  t.data = make_blob(std::vector<uint8_t>(4 * 18));
  q.tensors.push_back(t);
  CHECK_THAT(emit_error(q),
             Catch::Contains("m.safetensors: cannot write safetensors: tensor 'blk.0.attn_q.weight': "
                             "cannot store type q4_0") &&
                 Catch::Contains("emit = \"gguf\""));

  // A lazy tensor whose producer fails, after another tensor was written.
  Model lazy;
  lazy.tensors.push_back(f32_tensor("ok", {1}, {1}));
  Tensor bad;
  bad.name = "late";
  bad.shape = {1};
  bad.producer = [](std::string& error) -> BlobPtr {
    error = "producer: tensor 'late': out of memory";
    return nullptr;
  };
  lazy.tensors.push_back(bad);
  CHECK_THAT(emit_error(lazy),
             Catch::Contains("m.safetensors: cannot write safetensors: producer: tensor 'late': "
                             "out of memory"));

  Model neg;
  neg.tensors.push_back(f32_tensor("n", {1}, {1}));
  neg.tensors[0].shape = {-1};
  CHECK_THAT(emit_error(neg), Catch::Contains("tensor 'n': shape[0]: expected a dimension >= 0, found -1"));
  Model dup;
  dup.tensors.push_back(f32_tensor("d", {1}, {1}));
  dup.tensors.push_back(f32_tensor("d", {1}, {2}));
  CHECK_THAT(emit_error(dup), Catch::Contains("tensor 'd': expected unique tensor names"));
  CHECK_THAT(st::SafetensorsFormat().emit_model(Model{}, out, {{"alignment", Value::of_int(8)}}).message,
             Catch::Contains("emit option 'alignment'"));
}
