// Tests of the dataset readers (.npy, .npz, TensorProto .pb) and of --data directories.
//
// Fixtures under tests/data/npy/ are written by tests/tools/make_npy_fixtures.py
// (numpy + onnx); their values follow formulas recomputed here. Hostile inputs are
// made by editing the bytes of good fixtures in memory.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "qforge/dataset.h"
#include "qforge/half.h"
#include "qforge/status.h"

namespace fs = std::filesystem;
using namespace qforge;

namespace {

#ifdef QFORGE_SOURCE_DIR
const fs::path kData = fs::path(QFORGE_SOURCE_DIR) / "tests" / "data" / "npy";
#else
const fs::path kData = fs::path(__FILE__).parent_path() / "data" / "npy";
#endif

std::string fixture(const std::string& name) { return (kData / name).string(); }

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void spit(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

template <class T>
T elem(const Array& a, size_t i) {
  T v;
  REQUIRE((i + 1) * sizeof(T) <= a.data->size());
  std::memcpy(&v, a.data->data() + i * sizeof(T), sizeof(T));
  return v;
}

// Element i of the fixtures (tests/tools/make_npy_fixtures.py, values()).
double expected_real(ElemType t, int64_t i) {
  switch (t) {
    case ElemType::Bool: return i % 3 == 0;
    case ElemType::F16:
    case ElemType::F32:
    case ElemType::F64:
    case ElemType::Complex64:
    case ElemType::Complex128: return (static_cast<double>(i) - 2.5) * 0.25;
    case ElemType::U8:
    case ElemType::U16:
    case ElemType::U32:
    case ElemType::U64: return static_cast<double>(i * 37 % 251);
    default: return static_cast<double>(i * 37 % 251 - 100);
  }
}

// Element i of any scalar array, as a double (complex: the real part).
double value_at(const Array& a, size_t i) {
  switch (a.type) {
    case ElemType::F16: return fp16_to_fp32(elem<uint16_t>(a, i));
    case ElemType::F32: return elem<float>(a, i);
    case ElemType::F64: return elem<double>(a, i);
    case ElemType::I8: return elem<int8_t>(a, i);
    case ElemType::U8: return elem<uint8_t>(a, i);
    case ElemType::I16: return elem<int16_t>(a, i);
    case ElemType::U16: return elem<uint16_t>(a, i);
    case ElemType::I32: return elem<int32_t>(a, i);
    case ElemType::U32: return elem<uint32_t>(a, i);
    case ElemType::I64: return static_cast<double>(elem<int64_t>(a, i));
    case ElemType::U64: return static_cast<double>(elem<uint64_t>(a, i));
    case ElemType::Bool: return elem<uint8_t>(a, i);
    case ElemType::Complex64: return elem<float>(a, 2 * i);
    case ElemType::Complex128: return elem<double>(a, 2 * i);
    default: FAIL("unexpected type"); return 0;
  }
}

void check_formula(const Array& a, size_t n) {
  REQUIRE(a.data);
  REQUIRE(a.data->size() == *byte_size(a.type, n));
  for (size_t i = 0; i < n; ++i) {
    INFO(a.source << " element " << i);
    CHECK(value_at(a, i) == expected_real(a.type, static_cast<int64_t>(i)));
    if (a.type == ElemType::Complex64) CHECK(elem<float>(a, 2 * i + 1) == static_cast<float>(i));
    if (a.type == ElemType::Complex128) CHECK(elem<double>(a, 2 * i + 1) == static_cast<double>(i));
  }
  if (a.data->size() > 0) CHECK(reinterpret_cast<uintptr_t>(a.data->data()) % traits(a.type).type_size == 0);
}

// A .npy file from a header text and data bytes (version 1.0, padded like numpy).
std::vector<uint8_t> make_npy(const std::string& header, const std::vector<uint8_t>& data = {},
                              int major = 1) {
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(major), 0};
  uint32_t len = static_cast<uint32_t>(header.size());
  out.push_back(len & 0xff);
  out.push_back((len >> 8) & 0xff);
  if (major != 1) {
    out.push_back((len >> 16) & 0xff);
    out.push_back(len >> 24);
  }
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Array npy_of(const std::vector<uint8_t>& bytes) { return read_npy_bytes(make_blob(bytes), "t.npy"); }
std::vector<Array> npz_of(const std::vector<uint8_t>& bytes) {
  return read_npz_bytes(make_blob(bytes), "t.npz");
}

// ---------------------------------------------------------------- ZIP helpers
uint32_t crc32_of(const std::vector<uint8_t>& d) {
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : d) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}

void put16(std::vector<uint8_t>& o, uint64_t v) {
  for (int i = 0; i < 2; ++i) o.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put32(std::vector<uint8_t>& o, uint64_t v) {
  for (int i = 0; i < 4; ++i) o.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& o, uint64_t v) {
  for (int i = 0; i < 8; ++i) o.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint32_t get32(const std::vector<uint8_t>& o, size_t at) {
  return static_cast<uint32_t>(o[at] | o[at + 1] << 8 | o[at + 2] << 16) | static_cast<uint32_t>(o[at + 3])
                                                                               << 24;
}
void set32(std::vector<uint8_t>& o, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) o[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// A stored ZIP written here (independently of the reader): `zip64` puts the
// sizes and offsets of the central directory in ZIP64 extra fields and adds
// the ZIP64 end records.
std::vector<uint8_t> make_zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& members,
                              bool zip64) {
  std::vector<uint8_t> out, cd;
  for (const auto& [name, data] : members) {
    uint64_t local = out.size();
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, 0);
    put16(out, 0);
    put32(out, 0);
    put32(out, crc32_of(data));
    put32(out, data.size());
    put32(out, data.size());
    put16(out, name.size());
    put16(out, 0);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());
    put32(cd, 0x02014b50);
    put16(cd, 45);
    put16(cd, 45);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, crc32_of(data));
    put32(cd, zip64 ? 0xFFFFFFFF : data.size());
    put32(cd, zip64 ? 0xFFFFFFFF : data.size());
    put16(cd, name.size());
    put16(cd, zip64 ? 28 : 0);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, zip64 ? 0xFFFFFFFF : local);
    cd.insert(cd.end(), name.begin(), name.end());
    if (zip64) {
      put16(cd, 1);
      put16(cd, 24);
      put64(cd, data.size());
      put64(cd, data.size());
      put64(cd, local);
    }
  }
  uint64_t cd_at = out.size();
  out.insert(out.end(), cd.begin(), cd.end());
  if (zip64) {
    uint64_t rec = out.size();
    put32(out, 0x06064b50);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, members.size());
    put64(out, members.size());
    put64(out, cd.size());
    put64(out, cd_at);
    put32(out, 0x07064b50);
    put32(out, 0);
    put64(out, rec);
    put32(out, 1);
  }
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, zip64 ? 0xFFFF : members.size());
  put16(out, zip64 ? 0xFFFF : members.size());
  put32(out, zip64 ? 0xFFFFFFFF : cd.size());
  put32(out, zip64 ? 0xFFFFFFFF : cd_at);
  put16(out, 0);
  return out;
}

// Offsets inside an archive written by make_zip or numpy (no comment).
size_t eocd_of(const std::vector<uint8_t>& z) { return z.size() - 22; }
size_t first_cd_entry(const std::vector<uint8_t>& z) { return get32(z, eocd_of(z) + 16); }

// ---------------------------------------------------------------- protobuf wire helpers
void varint(std::vector<uint8_t>& o, uint64_t v) {
  while (v >= 0x80) {
    o.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  o.push_back(static_cast<uint8_t>(v));
}
void pb_varint(std::vector<uint8_t>& o, int field, uint64_t v) {
  varint(o, static_cast<uint64_t>(field) << 3);
  varint(o, v);
}
void pb_bytes(std::vector<uint8_t>& o, int field, const std::vector<uint8_t>& b) {
  varint(o, static_cast<uint64_t>(field) << 3 | 2);
  varint(o, b.size());
  o.insert(o.end(), b.begin(), b.end());
}
std::vector<uint8_t> floats(std::initializer_list<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.begin(), b.size());
  return b;
}
// TensorProto fields: dims = 1, data_type = 2, float_data = 4 (packed), int32_data = 5,
// name = 8, raw_data = 9.
Array pb_of(const std::vector<uint8_t>& bytes) { return read_tensor_pb_bytes(make_blob(bytes), "t.pb"); }

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() /
           ("qforge_dataset_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

// ================================================================ .npy
TEST_CASE("npy: every dtype numpy writes", "[dataset][npy]") {
  const std::pair<const char*, ElemType> cases[] = {{"float16", ElemType::F16},
                                                    {"float32", ElemType::F32},
                                                    {"float64", ElemType::F64},
                                                    {"int8", ElemType::I8},
                                                    {"uint8", ElemType::U8},
                                                    {"int16", ElemType::I16},
                                                    {"uint16", ElemType::U16},
                                                    {"int32", ElemType::I32},
                                                    {"uint32", ElemType::U32},
                                                    {"int64", ElemType::I64},
                                                    {"uint64", ElemType::U64},
                                                    {"bool", ElemType::Bool},
                                                    {"complex64", ElemType::Complex64},
                                                    {"complex128", ElemType::Complex128}};
  for (const auto& [name, type] : cases) {
    INFO(name);
    Array a = read_npy(fixture(std::string("dtype_") + name + ".npy"));
    CHECK(a.type == type);
    CHECK(a.shape == std::vector<int64_t>{2, 3});
    CHECK(a.name.empty());
    CHECK(a.source == fixture(std::string("dtype_") + name + ".npy"));
    check_formula(a, 6);
  }
}

TEST_CASE("npy: format versions 1.0, 2.0, 3.0", "[dataset][npy]") {
  for (int v = 1; v <= 3; ++v) {
    std::string path = fixture("version_" + std::to_string(v) + ".npy");
    CHECK(slurp(path)[6] == v);
    Array a = read_npy(path);
    CHECK(a.type == ElemType::F32);
    CHECK(a.shape == std::vector<int64_t>{3, 4});
    check_formula(a, 12);
  }
}

TEST_CASE("npy: 0-d, empty and larger arrays", "[dataset][npy]") {
  Array s = read_npy(fixture("scalar.npy"));
  CHECK(s.shape.empty());
  REQUIRE(s.data->size() == 4);
  CHECK(elem<float>(s, 0) == 3.5f);

  Array e = read_npy(fixture("empty.npy"));
  CHECK(e.shape == std::vector<int64_t>{0});
  CHECK(e.data->size() == 0);
  Array e2 = read_npy(fixture("empty_2d.npy"));
  CHECK(e2.type == ElemType::I64);
  CHECK(e2.shape == std::vector<int64_t>{3, 0});
  CHECK(e2.data->size() == 0);

  Array l = read_npy(fixture("large_1d.npy"));
  CHECK(l.shape == std::vector<int64_t>{1000});
  check_formula(l, 1000);
}

TEST_CASE("npy: refusals say why and how to fix", "[dataset][npy]") {
  std::string m = error_of([] { read_npy(fixture("fortran.npy")); });
  CHECK_THAT(m, Catch::Contains("fortran.npy") && Catch::Contains("fortran_order is True") &&
                    Catch::Contains("np.ascontiguousarray"));
  m = error_of([] { read_npy(fixture("big_endian.npy")); });
  CHECK_THAT(m, Catch::Contains("'>f4'") && Catch::Contains("big-endian") &&
                    Catch::Contains("arr.astype(np.float32)"));
  m = error_of([] { read_npy(fixture("object.npy")); });
  CHECK_THAT(m, Catch::Contains("object arrays"));
  m = error_of([] { read_npy(fixture("unicode.npy")); });
  CHECK_THAT(m, Catch::Contains("string arrays"));
  m = error_of([] { read_npy(fixture("structured.npy")); });
  CHECK_THAT(m, Catch::Contains("structured dtypes"));
  m = error_of([] { read_npy(fixture("datetime.npy")); });
  CHECK_THAT(m, Catch::Contains("datetime"));
  m = error_of([] { read_npy(fixture("savez.npz")); });
  CHECK_THAT(m, Catch::Contains("savez.npz: byte 0: not a .npy file"));
  m = error_of([] { read_npy(fixture("does_not_exist.npy")); });
  CHECK_THAT(m, Catch::Contains("does_not_exist.npy"));
}

TEST_CASE("npy: header dict variants numpy and Python accept", "[dataset][npy]") {
  const std::vector<uint8_t> six = {1, 2, 3, 4, 5, 6};
  const char* good[] = {
      "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }          \n",
      "{\"descr\": \"|u1\", \"fortran_order\": False, \"shape\": (2, 3)}\n",
      "{'shape':(2,3),'fortran_order':False,'descr':'|u1'}",
      "  { 'descr' : '|u1' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }  \n",
      "{'descr': '|u1', 'fortran_order': False, 'shape': (2L, 3L), }\n",
      "{'descr': '<u1', 'fortran_order': False, 'shape': (6,), }\n",
      "{'descr': '|u1', 'fortran_order': True, 'shape': (6,), }\n",  // 1-d: same layout
  };
  for (const char* h : good) {
    INFO(h);
    Array a = npy_of(make_npy(h, six));
    CHECK(a.type == ElemType::U8);
    CHECK(a.data->size() == 6);
    CHECK(elem<uint8_t>(a, 5) == 6);
  }
  Array v2 = npy_of(make_npy("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }\n", six, 2));
  CHECK(v2.shape == std::vector<int64_t>{3});
  CHECK(elem<int16_t>(v2, 2) == 0x0605);
}

TEST_CASE("npy: malformed headers are errors naming the byte", "[dataset][npy]") {
  const std::vector<uint8_t> six = {1, 2, 3, 4, 5, 6};
  const std::pair<const char*, const char*> bad[] = {
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (6), }",
       "'shape' (6) is not a tuple in Python; a 1-d shape is written (6,)"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': [6], }", "must be a tuple"},
      {"{'descr': '|u1', 'fortran_order': False}", "lacks the key 'shape'"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (6,), 'x': 1}", "expected a value"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (6,), 'x': True}", "unexpected header key 'x'"},
      {"{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (6,)}", "duplicate header key"},
      {"{'descr': True, 'fortran_order': False, 'shape': (6,)}", "'descr' must be a string"},
      {"{'descr': '|u1', 'fortran_order': 0, 'shape': (6,)}", "expected a value"},
      {"{'descr': '|u1', 'fortran_order': Falsey, 'shape': (6,)}", "expected a value"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (6,)} x", "only padding"},
      {"{'descr': '|u1, 'fortran_order': False, 'shape': (6,)}",
       "expected ',' or '}' after a dict value, found 'fortran_order'"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (-6,)}", "negative dimension"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (6,)", "expected ',' or '}'"},
      {"{'descr': '<x9', 'fortran_order': False, 'shape': (6,)}", "unsupported dtype '<x9'"},
      {"{'descr': 'u1', 'fortran_order': False, 'shape': (6,)}", "no byte-order character"},
      {"{'descr': '|i2', 'fortran_order': False, 'shape': (3,)}", "explicit byte order"},
      {"{'descr': '<f16', 'fortran_order': False, 'shape': (6,)}", "unsupported dtype"},
      {"{'descr': '\\x3cu1', 'fortran_order': False, 'shape': (6,)}", "without escape sequences"},
      {"('descr', '|u1')", "the header dict to start with '{'"},
      {"", "the header dict to start with '{'"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999,)}", "64 bits"},
  };
  for (const auto& [h, want] : bad) {
    INFO(h);
    std::string m = error_of([&] { npy_of(make_npy(h, six)); });
    CHECK_THAT(m, Catch::StartsWith("t.npy: byte ") && Catch::Contains(want));
  }
}

TEST_CASE("npy: sizes and versions are checked", "[dataset][npy]") {
  const std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  std::vector<uint8_t> data(24, 0);
  CHECK_NOTHROW(npy_of(make_npy(h, data)));
  std::vector<uint8_t> less(data.begin(), data.end() - 1), more = data;
  more.push_back(0);
  CHECK_THAT(error_of([&] { npy_of(make_npy(h, less)); }),
             Catch::Contains("truncated") && Catch::Contains("needs 24 data bytes, the file has 23"));
  CHECK_THAT(error_of([&] { npy_of(make_npy(h, more)); }), Catch::Contains("trailing bytes"));
  // Shape whose element count overflows 64 bits, and one whose byte count does.
  CHECK_THAT(error_of([&] {
               npy_of(
                   make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                            "(4294967296, 4294967296, 2), }"));
             }),
             Catch::Contains("more elements than fit in 64 bits"));
  CHECK_THAT(error_of([&] {
               npy_of(
                   make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': "
                            "(4294967296, 1073741824), }"));
             }),
             Catch::Contains("more bytes than fit in 64 bits"));
  // A zero dimension makes any other dimensions empty, however large.
  Array z =
      npy_of(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                      "(4294967296, 4294967296, 0, 4294967296), }"));
  CHECK(z.data->size() == 0);
  CHECK(z.shape == std::vector<int64_t>{4294967296, 4294967296, 0, 4294967296});
  // A huge shape without the data is a truncation, never an allocation.
  CHECK_THAT(error_of([&] {
               npy_of(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"));
             }),
             Catch::Contains("truncated"));
  // Version 4.0, version 1.1.
  auto v4 = make_npy(h, data);
  v4[6] = 4;
  CHECK_THAT(error_of([&] { npy_of(v4); }), Catch::Contains("byte 6: unsupported .npy format version 4.0"));
  v4[6] = 1;
  v4[7] = 1;
  CHECK_THAT(error_of([&] { npy_of(v4); }), Catch::Contains("version 1.1"));
  // Header lengths past the end (u16 and a huge u32).
  auto big = make_npy(h, data);
  big[8] = 0xff;
  big[9] = 0xff;
  CHECK_THAT(error_of([&] { npy_of(big); }), Catch::Contains("byte 8: header length 65535 runs past"));
  auto big2 = make_npy(h, data, 2);
  big2[8] = big2[9] = big2[10] = big2[11] = 0xff;
  CHECK_THAT(error_of([&] { npy_of(big2); }), Catch::Contains("header length 4294967295 runs past"));
}

TEST_CASE("npy: every truncation is an error, never a crash", "[dataset][npy]") {
  for (const char* name : {"dtype_float32.npy", "version_2.npy", "scalar.npy"}) {
    const auto bytes = slurp(fixture(name));
    CHECK_NOTHROW(npy_of(bytes));
    int errors = 0;
    for (size_t n = 0; n < bytes.size(); ++n) {
      std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
      try {
        npy_of(cut);
      } catch (const Error&) {
        ++errors;
      }
    }
    CHECK(errors == static_cast<int>(bytes.size()));
  }
}

TEST_CASE("npy: data is aligned to the element size", "[dataset][npy]") {
  // A v1 header of odd length puts the data at an odd offset: the reader copies it.
  std::vector<uint8_t> data(8);
  double d = 1.25;
  std::memcpy(data.data(), &d, 8);
  Array a = npy_of(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", data));
  CHECK(reinterpret_cast<uintptr_t>(a.data->data()) % 8 == 0);
  CHECK(elem<double>(a, 0) == 1.25);
}

// ================================================================ .npz
TEST_CASE("npz: np.savez, np.savez_compressed, data descriptors, plain zipfile archives", "[dataset][npz]") {
  for (const char* name :
       {"savez.npz", "savez_compressed.npz", "plain_zip.npz", "stream_stored.npz", "stream_deflated.npz"}) {
    INFO(name);
    auto arrays = read_npz(fixture(name));
    REQUIRE(arrays.size() >= 1);
    CHECK(arrays[0].name == "x");
    CHECK(arrays[0].index == 0);
    CHECK(arrays[0].type == ElemType::F32);
    CHECK(arrays[0].shape == std::vector<int64_t>{2, 3});
    CHECK(arrays[0].source == fixture(name) + ":x.npy");
    check_formula(arrays[0], 6);
    if (std::string(name) != "plain_zip.npz") {
      REQUIRE(arrays.size() == 2);
      CHECK(arrays[1].name == "y");
      CHECK(arrays[1].index == 1);
      CHECK(arrays[1].type == ElemType::I64);
      CHECK(arrays[1].shape == std::vector<int64_t>{4});
      check_formula(arrays[1], 4);
    }
  }
  auto pos = read_npz(fixture("savez_positional.npz"));
  REQUIRE(pos.size() == 2);
  CHECK(pos[0].name == "arr_0");
  CHECK(pos[1].name == "arr_1");
  auto zeros = read_npz(fixture("zeros_compressed.npz"));
  REQUIRE(zeros.size() == 1);
  CHECK(zeros[0].shape == std::vector<int64_t>{256, 256});
  CHECK(zeros[0].data->size() == 256 * 256 * 4);
}

TEST_CASE("npz: archives with ZIP64 central directory records", "[dataset][npz]") {
  const auto x = slurp(fixture("dtype_float32.npy"));
  const auto y = slurp(fixture("dtype_int64.npy"));
  for (bool zip64 : {false, true}) {
    INFO("zip64 " << zip64);
    auto arrays = npz_of(make_zip({{"x.npy", x}, {"sub/y.npy", y}}, zip64));
    REQUIRE(arrays.size() == 2);
    CHECK(arrays[0].name == "x");
    CHECK(arrays[1].name == "sub/y");
    check_formula(arrays[0], 6);
    check_formula(arrays[1], 6);
  }
}

TEST_CASE("npz: refusals", "[dataset][npz]") {
  CHECK_THAT(error_of([] { read_npz(fixture("not_npy_member.npz")); }),
             Catch::Contains("member 'readme.txt'") && Catch::Contains("not a .npy member"));
  CHECK_THAT(error_of([] { read_npz(fixture("dtype_float32.npy")); }),
             Catch::Contains("byte 0: not a ZIP archive"));
  CHECK_THAT(error_of([] { npz_of(make_zip({}, false)); }), Catch::Contains("holds no arrays"));
  const auto x = slurp(fixture("dtype_float32.npy"));
  CHECK_THAT(error_of([&] {
               npz_of(make_zip({{"x.npy", x}, {"x.npy", x}}, false));
             }),
             Catch::Contains("duplicate member name"));
  // A member's error names the archive and the member.
  const auto f = slurp(fixture("fortran.npy"));
  CHECK_THAT(error_of([&] {
               npz_of(make_zip({{"w.npy", f}}, false));
             }),
             Catch::StartsWith("t.npz:w.npy: byte") && Catch::Contains("fortran_order is True"));
}

TEST_CASE("npz: every truncation is an error, never a crash", "[dataset][npz]") {
  for (const char* name : {"savez.npz", "savez_compressed.npz", "plain_zip.npz", "stream_deflated.npz"}) {
    const auto bytes = slurp(fixture(name));
    int errors = 0;
    for (size_t n = 0; n < bytes.size(); ++n) {
      std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
      try {
        npz_of(cut);
      } catch (const Error&) {
        ++errors;
      }
    }
    CHECK(errors == static_cast<int>(bytes.size()));
  }
}

TEST_CASE("npz: every single-byte corruption is an error or a good read", "[dataset][npz]") {
  // Flipping any byte either still reads (a byte of a zip field nobody checks,
  // such as the timestamp) or is a qforge::Error; never a crash or another exception.
  for (const char* name : {"savez.npz", "savez_compressed.npz"}) {
    const auto bytes = slurp(fixture(name));
    int errors = 0, reads = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
      auto bad = bytes;
      bad[i] ^= 0x5a;
      try {
        npz_of(bad);
        ++reads;
      } catch (const Error&) {
        ++errors;
      }
    }
    INFO(name << ": " << errors << " errors, " << reads << " reads");
    CHECK(errors + reads == static_cast<int>(bytes.size()));
    CHECK(errors > static_cast<int>(bytes.size()) / 2);
  }
}

TEST_CASE("npz: corrupt data, CRCs and offsets", "[dataset][npz]") {
  const auto good = slurp(fixture("savez.npz"));
  const size_t cd = first_cd_entry(good);
  REQUIRE(get32(good, cd) == 0x02014b50);

  // A data byte of the first (stored) member: its last float.
  auto bad = good;
  size_t local_x = 0;
  size_t data_x = local_x + 30 + (good[26] | good[27] << 8) + (good[28] | good[29] << 8);
  size_t last = data_x + 128 + 23;  // x.npy: 128-byte header + 24 data bytes
  bad[last] ^= 1;
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::StartsWith("t.npz: byte ") &&
                                                 Catch::Contains("member 'x.npy'") &&
                                                 Catch::Contains("CRC-32 mismatch"));
  // The CRC field in the central directory.
  bad = good;
  set32(bad, cd + 16, get32(bad, cd + 16) ^ 0x10000);
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("CRC-32 mismatch"));
  // Local header offset beyond the file.
  bad = good;
  set32(bad, cd + 42, 0x7FFFFFF0);
  CHECK_THAT(error_of([&] { npz_of(bad); }),
             Catch::Contains("member 'x.npy' (central directory entry at byte " + std::to_string(cd)) &&
                 Catch::Contains("runs past"));
  // Central directory offset beyond the file, and one entry too many.
  bad = good;
  set32(bad, eocd_of(bad) + 16, 0xFFFFFF00);
  CHECK_THAT(error_of([&] { npz_of(bad); }),
             Catch::Contains("the central directory") && Catch::Contains("runs past"));
  bad = good;
  bad[eocd_of(bad) + 8] = bad[eocd_of(bad) + 10] = 3;
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("central directory"));
  // A member whose data runs past the central directory.
  bad = good;
  set32(bad, cd + 20, 100000);
  set32(bad, cd + 24, 100000);
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("data") && Catch::Contains("runs past"));
  // Unknown compression method, encryption.
  bad = good;
  bad[cd + 10] = 12;
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("compression method 12"));
  bad = good;
  bad[cd + 8] |= 1;
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("encrypted"));
}

TEST_CASE("npz: deflate bomb guard", "[dataset][npz]") {
  const auto good = slurp(fixture("zeros_compressed.npz"));
  const size_t cd = first_cd_entry(good);
  REQUIRE(get32(good, cd) == 0x02014b50);
  REQUIRE(good[cd + 10] == 8);
  // numpy's central directory has 32-bit sizes (under 4 GiB).
  const uint32_t csize = get32(good, cd + 20), usize = get32(good, cd + 24);
  REQUIRE(usize == 256 * 256 * 4 + 128);
  REQUIRE(csize < usize / 100);
  // Declared smaller than what the stream inflates to: stops at the declared size.
  auto bad = good;
  set32(bad, cd + 24, 4096);
  CHECK_THAT(error_of([&] { npz_of(bad); }),
             Catch::Contains("inflates to more than its declared 4096 bytes"));
  // Declared larger than deflate can produce from the compressed size: no allocation.
  bad = good;
  set32(bad, cd + 24, 0xFFFFFFF0);
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("more than deflate can produce"));
  // Declared larger than the stream gives.
  bad = good;
  set32(bad, cd + 24, usize + 1);
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("inflates to " + std::to_string(usize) +
                                                             " bytes, the directory "
                                                             "declares " +
                                                             std::to_string(usize + 1)));
  // A compressed size that cuts the stream short.
  bad = good;
  set32(bad, cd + 20, csize - 10);
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("the deflate stream ends early"));
  // Garbage deflate data.
  bad = good;
  size_t data = 30 + (good[26] | good[27] << 8) + (good[28] | good[29] << 8);
  for (size_t i = 0; i < 8; ++i) bad[data + i] = 0xff;
  CHECK_THAT(error_of([&] { npz_of(bad); }), Catch::Contains("corrupt deflate data"));
}

// ================================================================ TensorProto .pb
TEST_CASE("pb: raw_data and every typed field match numpy's twin", "[dataset][pb]") {
  const char* names[] = {"pb_raw_f32",   "pb_typed_f32", "pb_typed_f64", "pb_typed_i8",
                         "pb_typed_u8",  "pb_typed_i16", "pb_typed_u16", "pb_typed_i32",
                         "pb_typed_u32", "pb_typed_i64", "pb_typed_u64", "pb_typed_bool",
                         "pb_typed_f16", "pb_scalar",    "pb_empty",     "pb_unnamed"};
  for (const char* name : names) {
    INFO(name);
    Array a = read_tensor_pb(fixture(std::string(name) + ".pb"));
    Array twin = read_npy(fixture(std::string(name) + ".npy"));
    CHECK(a.type == twin.type);
    CHECK(a.shape == twin.shape);
    REQUIRE(a.data->size() == twin.data->size());
    if (a.data->size() > 0) CHECK(std::memcmp(a.data->data(), twin.data->data(), a.data->size()) == 0);
    if (std::string(name).rfind("pb_typed_", 0) == 0) check_formula(a, 6);
  }
  // bfloat16: the twin holds the bit patterns as uint16; (i - 2.5) * 0.25 is exact in bf16.
  Array bf = read_tensor_pb(fixture("pb_typed_bf16.pb"));
  Array bits = read_npy(fixture("pb_typed_bf16.npy"));
  CHECK(bf.type == ElemType::BF16);
  CHECK(bf.shape == std::vector<int64_t>{2, 3});
  REQUIRE(bf.data->size() == 12);
  REQUIRE(bits.data->size() == 12);
  CHECK(std::memcmp(bf.data->data(), bits.data->data(), 12) == 0);
  for (size_t i = 0; i < 6; ++i) {
    uint32_t f32 = static_cast<uint32_t>(elem<uint16_t>(bf, i)) << 16;
    float f;
    std::memcpy(&f, &f32, 4);
    CHECK(f == expected_real(ElemType::F32, static_cast<int64_t>(i)));
  }
  CHECK(read_tensor_pb(fixture("pb_raw_f32.pb")).name == "x");
  CHECK(read_tensor_pb(fixture("pb_typed_i8.pb")).name == "t_i8");
  CHECK(read_tensor_pb(fixture("pb_unnamed.pb")).name.empty());
}

TEST_CASE("pb: ONNX test data (libonnx-testdata) against onnx's numpy_helper", "[dataset][pb]") {
  std::vector<std::string> dirs = {fixture("onnx_test_add")};
  const std::string system = "/usr/share/libonnx-testdata/data/node/test_add/test_data_set_0";
  if (fs::exists(system + "/input_0.pb")) dirs.push_back(system);
  for (const auto& dir : dirs) {
    for (int k = 0; k < 2; ++k) {
      INFO(dir << " input " << k);
      Array a = read_tensor_pb(dir + "/input_" + std::to_string(k) + ".pb");
      Array ref = read_npy(fixture("onnx_test_add_input_" + std::to_string(k) + ".npy"));
      CHECK(a.name == (k == 0 ? "x" : "y"));
      CHECK(a.type == ElemType::F32);
      CHECK(a.shape == std::vector<int64_t>{3, 4, 5});
      CHECK(ref.shape == a.shape);
      REQUIRE(a.data->size() == 240);
      REQUIRE(ref.data->size() == 240);
      CHECK(std::memcmp(a.data->data(), ref.data->data(), 240) == 0);
    }
  }
}

TEST_CASE("pb: refusals and malformed tensors", "[dataset][pb]") {
  CHECK_THAT(error_of([] { read_tensor_pb(fixture("pb_string.pb")); }),
             Catch::Contains("tensor 's'") && Catch::Contains("string tensors"));
  CHECK_THAT(error_of([] { read_tensor_pb(fixture("pb_external.pb")); }),
             Catch::Contains("tensor 'ext'") && Catch::Contains("externally"));
  // Garbage that is not protobuf, or is protobuf without a type.
  CHECK_THAT(error_of([] {
               pb_of({0xff, 0xff, 0xff, 0xff, 0xff});
             }),
             Catch::Contains("t.pb: not a valid ONNX TensorProto"));
  CHECK_THAT(error_of([] { pb_of({}); }), Catch::Contains("data_type is 0"));

  std::vector<uint8_t> t;
  pb_varint(t, 1, 3);
  pb_varint(t, 2, 1);  // FLOAT
  pb_bytes(t, 8, {'v'});
  auto two = t;
  pb_bytes(two, 4, floats({1, 2}));
  CHECK_THAT(error_of([&] { pb_of(two); }),
             Catch::Contains("t.pb: tensor 'v': float_data has 2 values, f32 [3] needs 3"));
  auto three = t;
  pb_bytes(three, 4, floats({1, 2, 3}));
  Array ok = pb_of(three);
  CHECK(elem<float>(ok, 2) == 3.0f);
  auto both = three;
  pb_bytes(both, 9, std::vector<uint8_t>(12));
  CHECK_THAT(error_of([&] { pb_of(both); }), Catch::Contains("both raw_data and float_data"));
  auto short_raw = t;
  pb_bytes(short_raw, 9, std::vector<uint8_t>(11));
  CHECK_THAT(error_of([&] { pb_of(short_raw); }), Catch::Contains("raw_data has 11 bytes"));
  CHECK_THAT(error_of([&] { pb_of(t); }), Catch::Contains("has no data"));
  auto wrong_field = t;
  pb_bytes(wrong_field, 5, {1, 2, 3});  // int32_data, packed
  CHECK_THAT(error_of([&] { pb_of(wrong_field); }), Catch::Contains("keeps its values in float_data"));

  std::vector<uint8_t> i8;
  pb_varint(i8, 1, 2);
  pb_varint(i8, 2, 3);  // INT8
  std::vector<uint8_t> packed;
  varint(packed, 5);
  varint(packed, 300);
  pb_bytes(i8, 5, packed);
  CHECK_THAT(error_of([&] { pb_of(i8); }), Catch::Contains("int32_data[1] = 300 is out of range for i8"));

  std::vector<uint8_t> weird;
  pb_varint(weird, 2, 99);
  CHECK_THAT(error_of([&] { pb_of(weird); }), Catch::Contains("unsupported data_type 99"));
  std::vector<uint8_t> neg;
  pb_varint(neg, 1, static_cast<uint64_t>(-2));
  pb_varint(neg, 2, 1);
  CHECK_THAT(error_of([&] { pb_of(neg); }), Catch::Contains("dims[0] = -2 is negative"));
}

// ================================================================ datasets
TEST_CASE("dataset_from_dir: files, archives and test-data directories", "[dataset]") {
  TempDir tmp;
  fs::copy_file(fixture("dtype_float32.npy"), tmp.path / "b.npy");
  fs::copy_file(fixture("savez.npz"), tmp.path / "c.npz");
  fs::copy_file(fixture("pb_raw_f32.pb"), tmp.path / "a.pb");
  fs::copy(fixture("onnx_test_add"), tmp.path / "d_sample");
  spit(tmp.path / ".DS_Store", {1, 2, 3});

  Dataset d = dataset_from_dir(tmp.path.string());
  REQUIRE(d.size() == 4);
  CHECK(fs::path(d.files[0]).filename() == "a.pb");
  CHECK(fs::path(d.files[1]).filename() == "b.npy");
  CHECK(fs::path(d.files[2]).filename() == "c.npz");
  CHECK(fs::path(d.files[3]).filename() == "d_sample");

  Sample s0 = d.load(0);
  REQUIRE(s0.arrays.size() == 1);
  CHECK(s0.arrays[0].name.empty());  // a single file feeds the first input, whatever its name
  CHECK(s0.arrays[0].index == 0);
  CHECK(s0.source == d.files[0]);
  Sample s1 = d.load(1);
  REQUIRE(s1.arrays.size() == 1);
  check_formula(s1.arrays[0], 6);
  Sample s2 = d.load(2);
  REQUIRE(s2.arrays.size() == 2);
  CHECK(s2.arrays[0].name == "x");
  CHECK(s2.arrays[1].name == "y");
  Sample s3 = d.load(3);
  REQUIRE(s3.arrays.size() == 2);
  CHECK(s3.arrays[0].name == "x");
  CHECK(s3.arrays[0].index == 0);
  CHECK(s3.arrays[1].name == "y");
  CHECK(s3.arrays[1].index == 1);
  CHECK(s3.arrays[1].shape == std::vector<int64_t>{3, 4, 5});

  d.input = "images";
  CHECK(d.load(1).arrays[0].name == "images");
  CHECK_THAT(error_of([&] { d.load(4); }), Catch::Contains("sample 4 does not exist (4 samples)"));
}

TEST_CASE("dataset_from_dir: test-data directories with unnamed tensors keep their order", "[dataset]") {
  TempDir tmp;
  fs::create_directories(tmp.path / "s");
  fs::copy_file(fixture("pb_unnamed.pb"), tmp.path / "s" / "input_0.pb");
  fs::copy_file(fixture("pb_scalar.pb"), tmp.path / "s" / "input_1.pb");
  fs::copy_file(fixture("pb_unnamed.pb"), tmp.path / "s" / "input_2.pb");
  fs::copy_file(fixture("pb_scalar.pb"), tmp.path / "s" / "output_0.pb");
  for (int k = 3; k <= 10; ++k)
    fs::copy_file(fixture("pb_unnamed.pb"), tmp.path / "s" / ("input_" + std::to_string(k) + ".pb"));
  Sample s = dataset_from_dir(tmp.path.string()).load(0);
  REQUIRE(s.arrays.size() == 11);
  for (int k = 0; k <= 10; ++k) CHECK(s.arrays[static_cast<size_t>(k)].index == k);
  CHECK(s.arrays[0].name.empty());
  CHECK(s.arrays[1].name == "s");
  CHECK(s.arrays[1].type == ElemType::I64);
  CHECK(s.arrays[10].type == ElemType::F32);
}

TEST_CASE("dataset_from_dir: a test-data directory given directly is one sample", "[dataset]") {
  Dataset d = dataset_from_dir(fixture("onnx_test_add"));
  REQUIRE(d.size() == 1);
  Sample s = d.load(0);
  REQUIRE(s.arrays.size() == 2);  // output_0.pb is not an input
  CHECK(s.arrays[0].name == "x");
  CHECK(s.arrays[1].name == "y");
  // Without an output_<k>.pb, input_<k>.pb files are separate samples.
  TempDir tmp;
  fs::copy_file(fixture("pb_scalar.pb"), tmp.path / "input_0.pb");
  fs::copy_file(fixture("pb_scalar.pb"), tmp.path / "input_1.pb");
  CHECK(dataset_from_dir(tmp.path.string()).size() == 2);
}

TEST_CASE("dataset_from_dir: errors", "[dataset]") {
  TempDir tmp;
  CHECK_THAT(error_of([&] { dataset_from_dir(tmp.path.string()); }), Catch::Contains("no samples"));
  CHECK_THAT(error_of([&] { dataset_from_dir((tmp.path / "nope").string()); }),
             Catch::Contains("does not exist"));
  spit(tmp.path / "notes.txt", {'h', 'i'});
  CHECK_THAT(error_of([&] { dataset_from_dir(tmp.path.string()); }),
             Catch::Contains("notes.txt: unknown sample file type '.txt'"));
  fs::remove(tmp.path / "notes.txt");
  fs::create_directories(tmp.path / "sub");
  fs::copy_file(fixture("pb_scalar.pb"), tmp.path / "sub" / "input_0.pb");
  fs::copy_file(fixture("pb_scalar.pb"), tmp.path / "sub" / "input_2.pb");
  CHECK_THAT(error_of([&] { dataset_from_dir(tmp.path.string()); }),
             Catch::Contains("input_1.pb is missing"));
  fs::remove(tmp.path / "sub" / "input_0.pb");
  fs::remove(tmp.path / "sub" / "input_2.pb");
  CHECK_THAT(error_of([&] { dataset_from_dir(tmp.path.string()); }), Catch::Contains("needs input_0.pb"));
  fs::remove_all(tmp.path / "sub");
  // A sample that fails to read names the file.
  spit(tmp.path / "bad.npy", {1, 2, 3});
  Dataset d = dataset_from_dir(tmp.path.string());
  CHECK_THAT(error_of([&] { d.load(0); }), Catch::Contains("bad.npy: byte 0: not a .npy file"));
}

TEST_CASE("check_sample", "[dataset]") {
  Array a;
  a.source = "calib/3.npy";
  a.type = ElemType::F64;
  a.shape = {3, 224, 224};
  CHECK(error_of([&] {
          check_sample(a, "x", ElemType::F32, {1, 3, 224, 224});
        }) == "calib/3.npy: input 'x' expects f32 [1, 3, 224, 224], found f64 [3, 224, 224]");
  a.type = ElemType::F32;
  a.shape = {1, 3, 224, 224};
  CHECK_NOTHROW(check_sample(a, "x", ElemType::F32, {1, 3, 224, 224}));
  CHECK_NOTHROW(check_sample(a, "x", ElemType::F32, {-1, 3, -1, -1}));
  CHECK_THAT(error_of([&] {
               check_sample(a, "x", ElemType::F32, {-1, 1, -1, -1});
             }),
             Catch::Contains("expects f32 [?, 1, ?, ?], found f32 [1, 3, 224, 224]"));
  CHECK_THAT(error_of([&] {
               check_sample(a, "x", ElemType::U8, {-1, 3, -1, -1});
             }),
             Catch::Contains("expects u8"));
}
