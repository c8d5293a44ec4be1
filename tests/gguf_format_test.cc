// GGUF format plugin: round trips, byte-identical re-emit, hostile inputs, and
// llama.cpp giving identical next-token probabilities for a generated model and its
// re-emit ([llama], needs node and QFORGE_NPM_DIR).
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>
#include "test_util.h"

#include "gguf/gguf.h"
#include "gguf/tiny_llama.h"
#include "qforge/status.h"
#include "tools/gguf_hostile.h"

namespace fs = std::filesystem;
using namespace qforge;

namespace {

// A fresh directory per test case, removed afterwards.
struct TempDir : qforge::test::TempDir {
  TempDir() : qforge::test::TempDir("qforge_gguf_test_") {}
};
using qforge::test::slurp;

std::string parse_error(const std::vector<uint8_t>& bytes, const std::string& name = "x.gguf") {
  try {
    parse_gguf(make_blob(bytes.data(), bytes.size()), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

MetaValue scalar(MetaType t, uint64_t u, int64_t i, double f) {
  MetaValue v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

Tensor owned(const std::string& name, std::vector<int64_t> shape, ElemType type, uint64_t nbytes,
             uint8_t seed) {
  std::vector<uint8_t> b(nbytes);
  for (uint64_t k = 0; k < nbytes; ++k) b[k] = static_cast<uint8_t>(seed + k * 7);
  Tensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.type = type;
  t.data = make_blob(std::move(b));
  return t;
}

// Every metadata type, nested arrays, empty arrays and strings; tensors of several types
// (byte sizes chosen so that some need padding).
Model sample_model() {
  Model m;
  m.format = "gguf";
  auto set = [&](const char* k, MetaValue v) { m.metadata.emplace_back(k, std::move(v)); };
  set("general.architecture", MetaValue::of_string("test"));
  set("v.u8", scalar(MetaType::U8, 250, 0, 0));
  set("v.i8", scalar(MetaType::I8, 0, -128, 0));
  set("v.u16", scalar(MetaType::U16, 65535, 0, 0));
  set("v.i16", scalar(MetaType::I16, 0, -32768, 0));
  set("v.u32", MetaValue::of_u32(4000000000u));
  set("v.i32", MetaValue::of_i32(-2000000000));
  set("v.f32", MetaValue::of_f32(0.1f));
  set("v.bool", MetaValue::of_bool(true));
  set("v.string", MetaValue::of_string("h\xc3\xa9llo \xff raw bytes"));
  set("v.empty_string", MetaValue::of_string(""));
  set("v.u64", MetaValue::of_u64(UINT64_MAX));
  set("v.i64", scalar(MetaType::I64, 0, INT64_MIN, 0));
  set("v.f64", scalar(MetaType::F64, 0, 0, -1.0 / 3.0));
  set("v.empty_array", MetaValue::of_array(MetaType::F64, {}));
  set("v.strings", MetaValue::of_array(MetaType::String, {MetaValue::of_string("a"), MetaValue::of_string(""),
                                                          MetaValue::of_string("ccc")}));
  set("v.bools", MetaValue::of_array(MetaType::Bool, {MetaValue::of_bool(false), MetaValue::of_bool(true)}));
  set("v.i8s",
      MetaValue::of_array(MetaType::I8, {scalar(MetaType::I8, 0, -1, 0), scalar(MetaType::I8, 0, 127, 0)}));
  set("v.f32s", MetaValue::of_array(MetaType::F32, {MetaValue::of_f32(1.5f), MetaValue::of_f32(-0.0f)}));
  // arrays of arrays: inner arrays of different element types, one empty; and depth 3
  MetaValue inner1 = MetaValue::of_array(MetaType::U32, {MetaValue::of_u32(1), MetaValue::of_u32(2)});
  MetaValue inner2 = MetaValue::of_array(MetaType::String, {MetaValue::of_string("x")});
  MetaValue inner3 = MetaValue::of_array(MetaType::I64, {});
  set("v.nested", MetaValue::of_array(MetaType::Array, {inner1, inner2, inner3}));
  MetaValue deep = MetaValue::of_array(MetaType::U8, {scalar(MetaType::U8, 9, 0, 0)});
  for (int d = 0; d < 7; ++d) deep = MetaValue::of_array(MetaType::Array, {deep});  // depth 8
  set("v.deep", deep);

  m.tensors.push_back(owned("w.f32", {3, 8}, ElemType::F32, 3 * 8 * 4, 1));
  m.tensors.push_back(owned("w.f16", {5}, ElemType::F16, 10, 2));
  m.tensors.push_back(owned("w.q4_0", {2, 64}, ElemType::Q4_0, 2 * 2 * 18, 3));
  m.tensors.push_back(owned("w.q4_k", {1, 1, 256}, ElemType::Q4_K, 144, 4));
  m.tensors.push_back(owned("w.q8_0", {2, 3, 4, 32}, ElemType::Q8_0, 24 * 34, 5));
  m.tensors.push_back(owned("w.i8", {7}, ElemType::I8, 7, 6));
  m.tensors.push_back(owned("w.bf16_scalar", {}, ElemType::BF16, 2, 7));
  return m;
}

std::string bytes_of(const Tensor& t) {
  BlobPtr b = t.bytes();
  return std::string(reinterpret_cast<const char*>(b->data()), b->size());
}

void require_same(const Model& a, const Model& b) {
  REQUIRE(a.metadata.size() == b.metadata.size());
  for (size_t k = 0; k < a.metadata.size(); ++k) {
    INFO("metadata " << a.metadata[k].first);
    CHECK(a.metadata[k].first == b.metadata[k].first);
    CHECK(a.metadata[k].second == b.metadata[k].second);
  }
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t k = 0; k < a.tensors.size(); ++k) {
    INFO("tensor " << a.tensors[k].name);
    CHECK(a.tensors[k].name == b.tensors[k].name);
    CHECK(a.tensors[k].shape == b.tensors[k].shape);
    CHECK(a.tensors[k].type == b.tensors[k].type);
    CHECK(bytes_of(a.tensors[k]) == bytes_of(b.tensors[k]));
  }
}

std::string source_dir() {  // tests/
#ifdef QFORGE_SOURCE_DIR
  return std::string(QFORGE_SOURCE_DIR) + "/tests";
#else
  return fs::path(__FILE__).parent_path().string();
#endif
}

uint32_t read_u32(const std::vector<uint8_t>& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

}  // namespace

TEST_CASE("gguf: round trip of every metadata type and several tensor types", "[gguf]") {
  TempDir dir;
  Model m = sample_model();
  write_gguf(m, dir / "a.gguf");
  Model r = read_gguf(dir / "a.gguf");
  CHECK(r.format == "gguf");
  CHECK(r.source == dir / "a.gguf");
  require_same(m, r);

  const MetaValue* nested = r.meta("v.nested");
  REQUIRE(nested);
  REQUIRE(nested->elem == MetaType::Array);
  REQUIRE(nested->array.size() == 3);
  CHECK(nested->array[1].elem == MetaType::String);
  CHECK(nested->array[2].array.empty());
  CHECK(r.meta("v.f32")->f == static_cast<double>(0.1f));
  CHECK(r.meta("v.u64")->u == UINT64_MAX);
  CHECK(r.meta("v.i64")->i == INT64_MIN);

  // Layout: default alignment 32, data offsets aligned, every tensor padded, zeros.
  std::vector<uint8_t> b = slurp(dir / "a.gguf");
  CHECK(std::memcmp(b.data(), "GGUF", 4) == 0);
  CHECK(read_u32(b, 4) == 3);
  CHECK(b.size() % 32 == 0);
  uint64_t total = 0;  // the data section: every tensor padded to 32
  for (const Tensor& t : r.tensors) total += (t.bytes()->size() + 31) / 32 * 32;
  REQUIRE(total < b.size());
  const uint64_t data_start = b.size() - total;
  CHECK(data_start % 32 == 0);
  const uint8_t* first = r.tensors[0].bytes()->data();
  uint64_t off = 0;
  for (const Tensor& t : r.tensors) {
    INFO("tensor " << t.name);
    BlobPtr blob = t.bytes();
    CHECK(static_cast<uint64_t>(blob->data() - first) == off);  // views of one mapping
    CHECK(std::memcmp(b.data() + data_start + off, blob->data(), blob->size()) == 0);
    uint64_t end = off + blob->size();
    off = (end + 31) / 32 * 32;
    for (uint64_t k = end; k < off; ++k) CHECK(b[data_start + k] == 0);
  }

  // Import does not copy: tensor data are views of one memory map (checked above by
  // their pointer distances matching the file layout).
}

TEST_CASE("gguf: re-emit of an unmodified model is byte-identical", "[gguf]") {
  TempDir dir;
  for (uint32_t alignment : {0u, 64u, 1u, 4096u}) {
    INFO("alignment " << alignment);
    write_gguf(sample_model(), dir / "a.gguf", alignment);
    Model r = read_gguf(dir / "a.gguf");
    write_gguf(r, dir / "b.gguf");
    auto a = slurp(dir / "a.gguf");
    auto b = slurp(dir / "b.gguf");
    CHECK(a.size() > 0);
    CHECK(a == b);
    // and through the plugin seam
    GgufFormat fmt;
    Model r2;
    REQUIRE(fmt.import_model(dir / "b.gguf", r2).ok);
    REQUIRE(fmt.emit_model(r2, dir / "c.gguf", Options{}).ok);
    CHECK(slurp(dir / "c.gguf") == a);
    // in place: the output replaces the file the model is mapped from
    write_gguf(r, dir / "a.gguf");
    CHECK(slurp(dir / "a.gguf") == a);
    if (alignment > 1 && alignment != 32) {
      CHECK(a.size() % alignment == 0);
      REQUIRE(r.meta("general.alignment"));
      CHECK(r.meta("general.alignment")->u == alignment);
    }
  }
}

TEST_CASE("gguf: a model without tensors ends after its metadata", "[gguf]") {
  TempDir dir;
  Model m = sample_model();
  m.tensors.clear();
  write_gguf(m, dir / "vocab.gguf");
  std::vector<uint8_t> a = slurp(dir / "vocab.gguf");
  Model r = read_gguf(dir / "vocab.gguf");
  CHECK(r.tensors.empty());
  require_same(m, r);
  // no padding: the last metadata value (v.deep, a u8 9) is the last byte
  REQUIRE(!a.empty());
  CHECK(a.back() == 9);
  write_gguf(r, dir / "vocab2.gguf");
  CHECK(slurp(dir / "vocab2.gguf") == a);
}

TEST_CASE("gguf: alignment option and metadata", "[gguf]") {
  TempDir dir;
  Model m = sample_model();
  CHECK_THROWS_WITH(write_gguf(m, dir / "x.gguf", 3),
                    Catch::Contains("power of two") && Catch::Contains("3"));
  CHECK_FALSE(fs::exists(dir / "x.gguf"));
  m.set_meta("general.alignment", MetaValue::of_u32(48));
  CHECK_THROWS_WITH(write_gguf(m, dir / "x.gguf"),
                    Catch::Contains("general.alignment") && Catch::Contains("48"));
  m.set_meta("general.alignment", MetaValue::of_u32(128));
  write_gguf(m, dir / "x.gguf");
  CHECK(slurp(dir / "x.gguf").size() % 128 == 0);
  CHECK(read_gguf(dir / "x.gguf").meta("general.alignment")->u == 128);

  GgufFormat fmt;
  Options o;
  o["alignment"] = Value::of_int(256);
  REQUIRE(fmt.emit_model(m, dir / "y.gguf", o).ok);
  CHECK(read_gguf(dir / "y.gguf").meta("general.alignment")->u == 256);
  o["alignment"] = Value::of_int(100);
  Status s = fmt.emit_model(m, dir / "z.gguf", o);
  CHECK_FALSE(s.ok);
  CHECK_THAT(s.message, Catch::Contains("alignment") && Catch::Contains("100"));
}

TEST_CASE("gguf: v2 files are read, and re-emit writes v3", "[gguf]") {
  std::vector<uint8_t> v2 = gguf_hostile::valid_small(2);
  Model m = parse_gguf(make_blob(v2.data(), v2.size()), "v2.gguf");
  REQUIRE(m.tensors.size() == 2);
  CHECK(m.tensors[1].shape == std::vector<int64_t>{2, 8});  // ne = [8, 2], reversed
  CHECK(m.tensors[1].type == ElemType::F32);
  CHECK(m.meta("a.u32")->u == 7);
  float x;
  std::memcpy(&x, m.tensors[1].bytes()->data() + 4, 4);
  CHECK(x == 4.5f);  // element 9 of the data section
  TempDir dir;
  write_gguf(m, dir / "v3.gguf");
  std::vector<uint8_t> out = slurp(dir / "v3.gguf");
  std::vector<uint8_t> v3 = gguf_hostile::valid_small(3);
  CHECK(out == v3);
  CHECK(read_u32(out, 4) == 3);
}

TEST_CASE("gguf: big-endian and v1 files are refused with the reason", "[gguf]") {
  for (const auto& c : gguf_hostile::cases()) {
    if (c.name == "big_endian") {
      CHECK_THAT(parse_error(c.bytes), Catch::Contains("big-endian"));
    }
    if (c.name == "version_1") {
      CHECK_THAT(parse_error(c.bytes), Catch::Contains("v1 is not supported"));
    }
  }
}

TEST_CASE("gguf: hostile inputs give errors naming the field and the offset", "[gguf]") {
  auto cases = gguf_hostile::cases();
  CHECK(cases.size() >= 40);
  for (const auto& c : cases) {
    INFO("case " << c.name);
    std::string e = parse_error(c.bytes, c.name + ".gguf");
    REQUIRE_FALSE(e.empty());
    CHECK_THAT(e, Catch::StartsWith(c.name + ".gguf: "));
    CHECK_THAT(e, Catch::Contains(c.field));
    CHECK_THAT(e, Catch::Contains(c.at + ":"));
    CHECK_THAT(e, Catch::Contains("expected") || Catch::Contains("found"));
  }
}

TEST_CASE("gguf: specific hostile messages say what was expected and found", "[gguf]") {
  auto find = [](const std::string& name) {
    for (const auto& c : gguf_hostile::cases())
      if (c.name == name) return parse_error(c.bytes, name);
    FAIL("no case " << name);
    return std::string();
  };
  CHECK_THAT(find("n_dims_5"), Catch::Contains("at most 4") && Catch::Contains("found 5"));
  CHECK_THAT(find("alignment_3"), Catch::Contains("power of two, found 3"));
  CHECK_THAT(find("dims_overflow"), Catch::Contains("overflow"));
  CHECK_THAT(find("unknown_type_id"), Catch::Contains("ggml type id, found 4"));
  CHECK_THAT(find("row_not_block_multiple"),
             Catch::Contains("multiple of 32") && Catch::Contains("found 33"));
  CHECK_THAT(find("overlapping_tensors"), Catch::Contains("overlapping tensor 'a'"));
  CHECK_THAT(find("misaligned_offset"), Catch::Contains("multiple of the alignment 32, found 16"));
  CHECK_THAT(find("huge_string_length"), Catch::Contains("at most 65535"));
  CHECK_THAT(find("huge_array_count"), Catch::Contains("found 1099511627776"));
  CHECK_THAT(find("duplicate_tensor_names"), Catch::Contains("unique tensor names"));
  CHECK_THAT(find("duplicate_key"), Catch::Contains("unique keys"));
  CHECK_THAT(find("non_utf8_key"), Catch::Contains("UTF-8") && Catch::Contains("0xff"));
  CHECK_THAT(find("deeply_nested_array"), Catch::Contains("at most 8 levels"));
  CHECK_THAT(find("wrong_magic"), Catch::Contains("not a GGUF file"));
  CHECK_THAT(find("data_past_eof"), Catch::Contains("inside the file"));
  CHECK_THAT(find("truncated_data"), Catch::Contains("inside the file"));
}

TEST_CASE("gguf: every truncation of a small file is an error, never a crash", "[gguf]") {
  std::vector<uint8_t> good = gguf_hostile::valid_small();
  REQUIRE(parse_error(good).empty());
  for (size_t n = 0; n < good.size(); ++n) {
    INFO("truncated to " << n << " bytes");
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<long>(n));
    std::string e = parse_error(cut);
    CHECK_THAT(e, Catch::Contains("x.gguf: ") && Catch::Contains("byte "));
  }
  // Flipping each byte of the header and infos never crashes (errors or a valid model).
  for (size_t n = 0; n < 192; ++n) {
    std::vector<uint8_t> bad = good;
    bad[n] ^= 0xa5;
    (void)parse_error(bad);
  }
}

TEST_CASE("gguf: the committed hostile corpus matches the table and is refused", "[gguf]") {
  fs::path dir = fs::path(source_dir()) / "data" / "hostile" / "gguf";
  REQUIRE(fs::is_directory(dir));
  size_t n = 0;
  for (const auto& c : gguf_hostile::cases()) {
    INFO("file " << c.name << ".gguf (regenerate with make_hostile_gguf)");
    std::string path = (dir / (c.name + ".gguf")).string();
    REQUIRE(fs::exists(path));
    CHECK(slurp(path) == c.bytes);
    std::string msg;
    try {
      read_gguf(path);
    } catch (const Error& e) {
      msg = e.what();
    }
    CHECK_THAT(msg, Catch::StartsWith(path + ": ") && Catch::Contains(c.field));
    ++n;
  }
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".gguf") ++files;
  CHECK(files == n);
}

TEST_CASE("gguf: writer refuses bad models and leaves no output", "[gguf]") {
  TempDir dir;
  std::string out = dir / "bad.gguf";
  auto expect = [&](const Model& m, const std::string& what) {
    INFO(what);
    CHECK_THROWS_WITH(write_gguf(m, out), Catch::Contains(what));
    CHECK_FALSE(fs::exists(out));
  };
  {
    Model m = sample_model();
    m.tensors[1].name = m.tensors[0].name;
    expect(m, "tensor 'w.f32': expected unique tensor names");
  }
  {
    Model m = sample_model();
    m.tensors[1].name = "bad\xc3(";
    expect(m, "expected a UTF-8 name");
  }
  {
    Model m = sample_model();
    m.tensors[2].shape = {2, 33};
    expect(m, "multiple of 32");
  }
  {
    Model m = sample_model();
    m.tensors[0].shape = {1, 1, 1, 3, 8};
    expect(m, "at most 4 dimensions, found 5");
  }
  {
    Model m = sample_model();
    m.tensors[0].type = ElemType::U8;  // no ggml id
    expect(m, "type GGUF can store, found u8");
  }
  {
    Model m = sample_model();
    m.metadata.push_back(m.metadata[0]);
    expect(m, "metadata 'general.architecture': expected unique keys");
  }
  {
    Model m = sample_model();
    m.set_meta("v.u8", scalar(MetaType::U8, 256, 0, 0));
    expect(m, "metadata 'v.u8': expected a u8 in 0..255, found 256");
  }
  {
    Model m = sample_model();
    m.set_meta("v.mixed",
               MetaValue::of_array(MetaType::U32, {MetaValue::of_u32(1), MetaValue::of_string("x")}));
    expect(m, "metadata 'v.mixed'[1]: expected an element of type u32");
  }
  {
    Model m = sample_model();
    MetaValue deep = MetaValue::of_array(MetaType::U8, {});
    for (int d = 0; d < 8; ++d) deep = MetaValue::of_array(MetaType::Array, {deep});  // depth 9
    m.set_meta("v.deep", deep);
    expect(m, "nested at most 8");
  }
  {
    // a producer returning the wrong number of bytes: an error naming the tensor
    Model m = sample_model();
    Tensor& t = m.tensors[3];
    t.data = nullptr;
    t.producer = [](std::string&) { return make_blob(std::vector<uint8_t>(100)); };
    expect(m, "tensor 'w.q4_k': expected 144 bytes");
  }
  {
    Model m = sample_model();
    m.tensors[0].data = nullptr;
    m.tensors[0].producer =
        guarded_producer("quantize-x", "w.f32", []() -> BlobPtr { throw Error("quantizer failed"); });
    expect(m, "quantize-x: tensor 'w.f32': quantizer failed");
  }
}

TEST_CASE("gguf: emit runs each lazy producer once, in order", "[gguf]") {
  TempDir dir;
  Model m = sample_model();
  auto calls = std::make_shared<std::vector<std::string>>();
  for (Tensor& t : m.tensors) {
    BlobPtr data = t.data;
    std::string name = t.name;
    t.data = nullptr;
    t.producer = [data, name, calls](std::string&) {
      calls->push_back(name);
      return data;
    };
  }
  write_gguf(m, dir / "lazy.gguf");
  REQUIRE(calls->size() == m.tensors.size());
  for (size_t k = 0; k < m.tensors.size(); ++k) CHECK((*calls)[k] == m.tensors[k].name);
  require_same(read_gguf(dir / "lazy.gguf"), sample_model());
}

TEST_CASE("gguf: plugin probe and import errors", "[gguf]") {
  GgufFormat fmt;
  const uint8_t gguf[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  const uint8_t onnx[] = {0x08, 0x07, 0x12, 0x04};
  CHECK(fmt.probe("m.gguf", gguf, sizeof gguf) == 100);
  CHECK(fmt.probe("m.gguf", onnx, sizeof onnx) == 0);
  CHECK(fmt.probe("m.gguf", gguf, 2) == 0);
  CHECK(fmt.name() == "gguf");
  CHECK(fmt.extension() == ".gguf");
  Model m;
  Status s = fmt.import_model("/nonexistent/dir/m.gguf", m);
  CHECK_FALSE(s.ok);
  CHECK_THAT(s.message, Catch::Contains("/nonexistent/dir/m.gguf"));
}

TEST_CASE("gguf: tiny llama model is well formed", "[gguf]") {
  TempDir dir;
  TinyLlamaOptions o;
  Model m = make_tiny_llama(o);
  write_gguf(m, dir / "tiny.gguf");
  Model r = read_gguf(dir / "tiny.gguf");
  CHECK(r.meta("general.architecture")->s == "llama");
  CHECK(r.meta("llama.block_count")->u == o.layers);
  CHECK(r.meta("tokenizer.ggml.tokens")->array.size() == o.vocab);
  CHECK(r.tensors.size() == 2 + 9 * o.layers + 1);
  REQUIRE(r.tensor("token_embd.weight"));
  CHECK(r.tensor("token_embd.weight")->shape == std::vector<int64_t>{o.vocab, o.embd});
  CHECK(r.tensor("blk.1.ffn_down.weight")->shape == std::vector<int64_t>{o.embd, o.ff});
  // token pieces are unique
  std::vector<std::string> pieces;
  for (const auto& v : r.meta("tokenizer.ggml.tokens")->array) pieces.push_back(v.s);
  std::sort(pieces.begin(), pieces.end());
  CHECK(std::adjacent_find(pieces.begin(), pieces.end()) == pieces.end());
  // deterministic
  write_gguf(make_tiny_llama(o), dir / "tiny2.gguf");
  CHECK(slurp(dir / "tiny.gguf") == slurp(dir / "tiny2.gguf"));
  o.seed = 2;
  write_gguf(make_tiny_llama(o), dir / "tiny3.gguf");
  CHECK(slurp(dir / "tiny.gguf") != slurp(dir / "tiny3.gguf"));
}

namespace {
using qforge::test::run_capture;
using qforge::test::shell_quote;
}  // namespace

TEST_CASE("gguf: llama.cpp gives identical next-token probabilities after re-emit", "[gguf][llama]") {
  const char* npm = std::getenv("QFORGE_NPM_DIR");
  if (!npm || !*npm)
    FAIL(
        "QFORGE_NPM_DIR is not set: it must name the directory where node-llama-cpp is "
        "installed (make installs it into build/deps/node_modules)");
  if (!fs::is_directory(npm)) FAIL("QFORGE_NPM_DIR=" << npm << " is not a directory");
  std::string script = source_dir() + "/tools/llama_probs.mjs";
  REQUIRE(fs::exists(script));

  TempDir dir;
  fs::create_directories(dir.path / "a");
  fs::create_directories(dir.path / "b");
  // Same file name in both directories so that the scripts' whole outputs compare.
  std::string a = (dir.path / "a" / "tiny.gguf").string();
  std::string b = (dir.path / "b" / "tiny.gguf").string();
  write_gguf(make_tiny_llama(TinyLlamaOptions{}), a);
  write_gguf(read_gguf(a), b);
  REQUIRE(slurp(a) == slurp(b));

  int sa = 0, sb = 0;
  std::string cmd = "QFORGE_NPM_DIR=" + shell_quote(npm) + " node " + shell_quote(script) + " ";
  std::string err = dir / "stderr.txt";
  std::string oa = run_capture(cmd + shell_quote(a) + " 2>" + shell_quote(err), sa);
  std::vector<uint8_t> eb = slurp(err);
  std::string ea(eb.begin(), eb.end());
  std::string ob = run_capture(cmd + shell_quote(b) + " 2>" + shell_quote(err), sb);
  INFO("llama_probs output: " << oa.substr(0, 400) << "\nstderr: " << ea.substr(0, 2000));
  REQUIRE(sa == 0);
  REQUIRE(sb == 0);
  CHECK_THAT(oa, Catch::Contains("\"n_vocab\":320"));
  CHECK_THAT(oa, Catch::Contains("\"probabilities\":["));
  CHECK(oa == ob);

  // A model with different weights gives a different distribution (the probe is live).
  TinyLlamaOptions o2;
  o2.seed = 7;
  std::string c = (dir.path / "tiny7.gguf").string();
  write_gguf(make_tiny_llama(o2), c);
  int sc = 0;
  std::string oc = run_capture(cmd + shell_quote(c), sc);
  REQUIRE(sc == 0);
  auto logits = [](const std::string& s) { return s.substr(s.find("\"logits\"")); };
  CHECK(logits(oc) != logits(oa));
}
