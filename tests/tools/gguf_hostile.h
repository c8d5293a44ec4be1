// Hostile GGUF inputs: one table shared by the corpus generator
// (tests/tools/make_hostile_gguf.cc → tests/data/hostile/gguf/*.gguf) and the unit tests
// (tests/gguf_format_test.cc). Each case is a small file that the reader must refuse
// with an error whose message contains `field` and `at` ("byte N").
//
// Decisions recorded here: keys and tensor names that are not valid UTF-8 are refused
// (the spec asks for ASCII keys); string values are bytes and are not checked.
// Header-only, standard library only.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace gguf_hostile {

class Bytes {
 public:
  std::vector<uint8_t> b;
  size_t size() const { return b.size(); }
  Bytes& raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& f32(float v) { return raw(&v, 4); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& kv_u32(const std::string& k, uint32_t v) { return str(k).u32(4).u32(v); }
  Bytes& kv_str(const std::string& k, const std::string& v) { return str(k).u32(8).str(v); }
  // name, dims in GGUF order (ne[0] first), ggml type, offset
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t off) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(off);
  }
  Bytes& pad(size_t align) {
    while (b.size() % align) b.push_back(0);
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
};

// A small valid file: 2 key/values, tensors t0 (f32 [8], 32 bytes) and t1 (f32 [8, 2],
// 64 bytes), data sizes multiples of 32 so there is no trailing padding and every
// proper prefix of the file is invalid.
inline std::vector<uint8_t> valid_small(uint32_t version = 3) {
  Bytes f;
  f.header(2, 2, version);
  f.kv_str("general.architecture", "llama");
  f.kv_u32("a.u32", 7);
  f.tensor("t0", {8}, 0, 0);
  f.tensor("t1", {8, 2}, 0, 32);
  f.pad(32);
  for (int i = 0; i < 24; ++i) f.f32(static_cast<float>(i) * 0.5f);
  return f.b;
}

struct Case {
  std::string name;  // file name without .gguf
  std::vector<uint8_t> bytes;
  std::string field;  // expected in the message
  std::string at;     // "byte N", expected in the message
};

inline std::string at(size_t n) { return "byte " + std::to_string(n); }

inline std::vector<Case> cases() {
  std::vector<Case> v;
  auto add = [&](std::string name, const Bytes& f, std::string field, size_t pos) {
    v.push_back({std::move(name), f.b, std::move(field), at(pos)});
  };
  const std::vector<uint8_t> good = valid_small();
  auto prefix = [&](size_t n) {
    Bytes f;
    f.b.assign(good.begin(), good.begin() + static_cast<long>(n));
    return f;
  };
  // Offsets inside valid_small(): header 24 bytes; kv 0 at 24.
  const size_t kv0 = 24;
  const size_t kv1 = kv0 + 8 + 20 + 4 + 8 + 5;            // 69
  const size_t ti0 = kv1 + 8 + 5 + 4 + 4;                 // 90
  const size_t ti1 = ti0 + 8 + 2 + 4 + 8 + 4 + 8;         // 124
  const size_t end_infos = ti1 + 8 + 2 + 4 + 16 + 4 + 8;  // 166
  const size_t data = 192;

  {
    Bytes f;
    f.raw("GGML", 4).u32(3).u64(0).u64(0);
    add("wrong_magic", f, "magic", 0);
  }
  add("empty", Bytes{}, "magic", 0);
  add("truncated_magic", prefix(2), "magic", 0);
  add("truncated_header", prefix(12), "tensor count", 8);
  add("truncated_metadata_key", prefix(kv1 + 10), "metadata key 1: string length", kv1);
  add("truncated_metadata_value", prefix(kv1 + 8 + 5 + 4 + 2), "metadata 'a.u32'", kv1 + 17);
  add("truncated_tensor_info", prefix(ti1 + 8 + 2 + 4 + 3), "tensor 't1': ne[0]", ti1 + 14);
  add("truncated_before_data", prefix(end_infos + 4), "tensor data", end_infos);
  add("truncated_data", prefix(data + 40), "tensor 't1': offset", ti1 + 8 + 2 + 4 + 16 + 4);
  {
    Bytes f;
    f.raw("GGUF", 4).u32(1).u32(0).u32(0);
    add("version_1", f, "version", 4);
  }
  {
    Bytes f;
    f.raw("GGUF", 4).u32(0x03000000u).u64(0).u64(0);
    add("big_endian", f, "version", 4);
  }
  {
    Bytes f;
    f.header(0, 0, 4);
    add("version_4", f, "version", 4);
  }
  {
    Bytes f;
    f.header(uint64_t(1) << 60, 0);
    add("huge_tensor_count", f, "tensor count", 8);
  }
  {
    Bytes f;
    f.header(0, uint64_t(1) << 60);
    add("huge_metadata_count", f, "metadata count", 16);
  }
  {
    Bytes f;
    f.header(0, 1).u64(uint64_t(1) << 62).raw("key", 3).u32(4).u32(1);
    add("huge_string_length", f, "metadata key 0: string length", 24);
  }
  {
    Bytes f;
    f.header(0, 1).kv_str("s", "ab");
    f.b[24 + 8 + 1 + 4] = 0xff;  // value length low byte: 255 > bytes left
    add("huge_value_string_length", f, "metadata 's': string length", 24 + 8 + 1 + 4);
  }
  {
    Bytes f;
    f.header(0, 1).str("arr").u32(9).u32(4).u64(uint64_t(1) << 40).u32(1).u32(2);
    add("huge_array_count", f, "metadata 'arr': array count", 24 + 11 + 4 + 4);
  }
  {
    Bytes f;
    f.header(0, 1).str("deep").u32(9);
    for (int i = 0; i < 9; ++i) f.u32(9).u64(1);
    f.u32(4).u64(1).u32(5);
    // depth 1 is the outer array; the 9th nested level starts at 24+12+4+8*12
    add("deeply_nested_array", f, "metadata 'deep'[0][0][0][0][0][0][0][0]", 24 + 12 + 4 + 8 * 12);
  }
  {
    Bytes f;
    f.header(0, 1).str("k").u32(13).u32(0);
    add("unknown_value_type", f, "metadata 'k': value type", 24 + 9);
  }
  {
    Bytes f;
    f.header(0, 1).str("k").u32(9).u32(13).u64(0);
    add("unknown_array_element_type", f, "metadata 'k': array element type", 24 + 9 + 4);
  }
  {
    Bytes f;
    f.header(0, 1).str("flag").u32(7).u8(2);
    add("bool_not_0_or_1", f, "metadata 'flag'", 24 + 12 + 4);
  }
  {
    Bytes f;
    f.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
    add("duplicate_key", f, "metadata 'k'", 24 + 17);
  }
  {
    Bytes f;
    f.header(0, 1).kv_u32("", 1);
    add("empty_key", f, "metadata key 0", 24);
  }
  {
    Bytes f;
    f.header(0, 1).kv_u32(std::string("gen\xff", 4), 1);
    add("non_utf8_key", f, "metadata key 0", 24 + 8 + 3);
  }
  {
    Bytes f;
    f.header(0, 1).kv_u32("general.alignment", 3);
    add("alignment_3", f, "metadata 'general.alignment'", 24 + 8 + 17 + 4);
  }
  {
    Bytes f;
    f.header(0, 1).kv_u32("general.alignment", 0);
    add("alignment_0", f, "metadata 'general.alignment'", 24 + 8 + 17 + 4);
  }
  {
    Bytes f;
    f.header(0, 1).str("general.alignment").u32(10).u64(32);
    add("alignment_not_u32", f, "metadata 'general.alignment'", 24 + 8 + 17 + 4);
  }
  // Tensor-info cases: one key, then tensors.
  auto tensors = [](std::function<void(Bytes&)> body, uint64_t n_tensors, size_t data_bytes) {
    Bytes f;
    f.header(n_tensors, 0);
    body(f);
    f.pad(32).zeros(data_bytes);
    return f;
  };
  add("n_dims_5",
      tensors(
          [](Bytes& f) {
            f.tensor("t", {1, 1, 1, 1, 1}, 0, 0);
          },
          1, 32),
      "tensor 't': n_dims", 24 + 9);
  add("dim_zero",
      tensors(
          [](Bytes& f) {
            f.tensor("t", {8, 0}, 0, 0);
          },
          1, 32),
      "tensor 't': ne[1]", 24 + 9 + 4 + 8);
  add("dims_overflow",
      tensors(
          [](Bytes& f) {
            f.tensor("t", {uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0);
          },
          1, 32),
      "tensor 't': ne[1]", 24 + 9 + 4 + 8);
  add("dim_negative", tensors([](Bytes& f) { f.tensor("t", {uint64_t(-8)}, 0, 0); }, 1, 32),
      "tensor 't': ne[0]", 24 + 9 + 4);
  add("bytes_overflow",
      tensors(
          [](Bytes& f) {
            f.tensor("t", {uint64_t(1) << 31, uint64_t(1) << 31}, 0, 0);
          },
          1, 32),
      "tensor 't'", 24 + 9 + 4 + 16);
  add("unknown_type_id", tensors([](Bytes& f) { f.tensor("t", {8}, 4, 0); }, 1, 32), "tensor 't': type",
      24 + 9 + 4 + 8);
  add("huge_type_id", tensors([](Bytes& f) { f.tensor("t", {8}, 0xffffffffu, 0); }, 1, 32),
      "tensor 't': type", 24 + 9 + 4 + 8);
  add("row_not_block_multiple", tensors([](Bytes& f) { f.tensor("t", {33}, 2, 0); }, 1, 64),
      "tensor 't': ne[0]", 24 + 9 + 4 + 8);
  add("data_past_eof", tensors([](Bytes& f) { f.tensor("t", {8}, 0, 4096); }, 1, 32), "tensor 't': offset",
      24 + 9 + 4 + 8 + 4);
  add("offset_overflow", tensors([](Bytes& f) { f.tensor("t", {8}, 0, ~uint64_t(31)); }, 1, 32),
      "tensor 't': offset", 24 + 9 + 4 + 8 + 4);
  add("overlapping_tensors",
      tensors(
          [](Bytes& f) {
            f.tensor("a", {16}, 0, 0);
            f.tensor("b", {8}, 0, 32);
          },
          2, 64),
      "tensor 'b': offset", 24 + 33 + 9 + 4 + 8 + 4);
  add("misaligned_offset", tensors([](Bytes& f) { f.tensor("t", {4}, 0, 16); }, 1, 64), "tensor 't': offset",
      24 + 9 + 4 + 8 + 4);
  add("duplicate_tensor_names",
      tensors(
          [](Bytes& f) {
            f.tensor("t", {8}, 0, 0);
            f.tensor("t", {8}, 0, 32);
          },
          2, 64),
      "tensor 't'", 24 + 33);
  add("tensor_name_too_long", tensors([](Bytes& f) { f.tensor(std::string(65, 'x'), {8}, 0, 0); }, 1, 32),
      "tensor 0 name: string length", 24);
  add("non_utf8_tensor_name", tensors([](Bytes& f) { f.tensor(std::string("t\xc3", 2), {8}, 0, 0); }, 1, 32),
      "tensor 0 name", 24 + 8 + 1);
  add("empty_tensor_name", tensors([](Bytes& f) { f.tensor("", {8}, 0, 0); }, 1, 32), "tensor 0 name", 24);
  {
    // data section would start beyond the file: infos end at 57, alignment 32 → 64
    Bytes f;
    f.header(1, 0).tensor("t", {8}, 0, 0);
    add("no_data_section", f, "tensor data", 24 + 33);
  }
  return v;
}

}  // namespace gguf_hostile
