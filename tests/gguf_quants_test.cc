// qforge::gguf kernels against ggml itself: every quantizable type, with and
// without an imatrix, over a spread of inputs, must give the same bytes as
// ggml_quantize_chunk, and dequantization the same floats as ggml's
// dequantizers. ggml is loaded at run time from the libggml-base.so named by
// QFORGE_GGML_BASE_SO (the one in @node-llama-cpp/linux-x64@3.22.1, ggml
// 0.25.1); without it the comparison tests fail rather than skip.
#include <dlfcn.h>
#include <hwy/targets.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/quants.h"

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

using qforge::ElemType;
namespace gguf = qforge::gguf;

namespace {

// ------------------------------------------------------------------ ggml

constexpr const char* kExpectedGgmlVersion = "0.25.1";

struct Ggml {
  using QuantizeChunk = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);
  using QuantizeInit = void (*)(int);
  using RequiresImatrix = bool (*)(int);
  using RowSize = size_t (*)(int, int64_t);
  using Version = const char* (*)();
  using ToFloat = void (*)(const void*, float*, int64_t);

  void* handle = nullptr;
  std::string error;
  QuantizeChunk quantize_chunk = nullptr;
  QuantizeInit quantize_init = nullptr;
  RequiresImatrix requires_imatrix = nullptr;
  RowSize row_size = nullptr;
  Version version = nullptr;

  template <typename F>
  F sym(const char* name) {
    void* p = dlsym(handle, name);
    if (!p && error.empty()) error = std::string("symbol ") + name + " not found in the ggml library";
    return reinterpret_cast<F>(p);
  }

  // ggml's dequantizer for a type (exported dequantize_row_* symbols, so the
  // test does not depend on the layout of ggml_type_traits).
  ToFloat to_float(ElemType t) {
    switch (t) {
      case ElemType::F16: return sym<ToFloat>("ggml_fp16_to_fp32_row");
      case ElemType::BF16: return sym<ToFloat>("ggml_bf16_to_fp32_row");
      case ElemType::F32: return nullptr;
      default: break;
    }
    std::string name = std::string("dequantize_row_") + qforge::name_of(t);
    return sym<ToFloat>(name.c_str());
  }

  Ggml() {
    const char* path = std::getenv("QFORGE_GGML_BASE_SO");
    if (!path || !*path) {
      error =
          "QFORGE_GGML_BASE_SO is not set. Point it at libggml-base.so from the npm package "
          "@node-llama-cpp/linux-x64@3.22.1 (bins/linux-x64/libggml-base.so, ggml 0.25.1); "
          "the kernels are checked byte for byte against it.";
      return;
    }
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* e = dlerror();
      error = std::string("cannot load QFORGE_GGML_BASE_SO=") + path + ": " + (e ? e : "unknown error");
      return;
    }
    quantize_chunk = sym<QuantizeChunk>("ggml_quantize_chunk");
    quantize_init = sym<QuantizeInit>("ggml_quantize_init");
    requires_imatrix = sym<RequiresImatrix>("ggml_quantize_requires_imatrix");
    row_size = sym<RowSize>("ggml_row_size");
    version = sym<Version>("ggml_version");
    if (error.empty() && std::string(version()) != kExpectedGgmlVersion)
      error = std::string("QFORGE_GGML_BASE_SO=") + path + " is ggml " + version() + ", expected " +
              kExpectedGgmlVersion + " (the byte-identity contract is with that version)";
  }
};

Ggml& ggml() {
  static Ggml g;
  if (!g.error.empty()) FAIL(g.error);
  return g;
}

int ggml_id(ElemType t) { return qforge::traits(t).ggml_id; }

// ------------------------------------------------------------------ inputs

// Deterministic generator (splitmix64) so failures reproduce everywhere.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double open_uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }
  double normal() {
    return std::sqrt(-2.0 * std::log(open_uniform())) * std::cos(6.283185307179586 * uniform());
  }
  double student_t(double dof) {
    double chi2 = 0;
    for (int i = 0; i < static_cast<int>(dof); ++i) {
      const double z = normal();
      chi2 += z * z;
    }
    return normal() / std::sqrt(chi2 / dof);
  }
  double cauchy() { return std::tan(3.141592653589793 * (open_uniform() - 0.5)); }
};

float clamp_finite(double v) {
  const double m = std::numeric_limits<float>::max();
  return static_cast<float>(v > m ? m : (v < -m ? -m : v));
}

struct DataKind {
  const char* name;
  std::function<void(Rng&, std::vector<float>&, int64_t n_per_row)> fill;
};

std::vector<DataKind> data_kinds() {
  std::vector<DataKind> k;
  auto each = [](auto f) {
    return [f](Rng& r, std::vector<float>& v, int64_t) {
      for (auto& x : v) x = clamp_finite(f(r));
    };
  };
  k.push_back({"normal", each([](Rng& r) { return r.normal(); })});
  k.push_back({"weights-like", each([](Rng& r) { return 0.02 * r.normal(); })});
  k.push_back({"student-t2", each([](Rng& r) { return r.student_t(2); })});
  k.push_back({"cauchy", each([](Rng& r) { return r.cauchy(); })});
  k.push_back({"uniform", each([](Rng& r) { return 2 * r.uniform() - 1; })});
  k.push_back({"positive", each([](Rng& r) { return 0.5 + r.uniform(); })});
  k.push_back({"negative", each([](Rng& r) { return -0.5 - r.uniform(); })});
  k.push_back({"zeros", each([](Rng&) { return 0.0; })});
  k.push_back({"signed-zeros", each([](Rng& r) { return r.uniform() < 0.5 ? -0.0 : 0.0; })});
  k.push_back({"constant-rows", [](Rng& r, std::vector<float>& v, int64_t n) {
                 for (size_t i = 0; i < v.size(); i += static_cast<size_t>(n)) {
                   const float c = static_cast<float>(4 * r.uniform() - 2);
                   for (int64_t j = 0; j < n; ++j) v[i + static_cast<size_t>(j)] = c;
                 }
               }});
  k.push_back({"one-outlier", [](Rng& r, std::vector<float>& v, int64_t n) {
                 for (auto& x : v) x = static_cast<float>(r.normal());
                 for (size_t i = 0; i < v.size(); i += static_cast<size_t>(n))
                   v[i + r.next() % static_cast<uint64_t>(n)] = r.uniform() < 0.5 ? 1e4f : -3e4f;
               }});
  k.push_back({"huge-outlier", [](Rng& r, std::vector<float>& v, int64_t n) {
                 for (auto& x : v) x = static_cast<float>(0.01 * r.normal());
                 for (size_t i = 0; i < v.size(); i += static_cast<size_t>(n))
                   v[i + r.next() % static_cast<uint64_t>(n)] = 1e30f;
               }});
  k.push_back({"subnormal", each([](Rng& r) { return 1e-40 * r.normal(); })});
  k.push_back({"subnormal-mixed", each([](Rng& r) {
                 const double u = r.uniform();
                 return u < 0.3   ? 1e-45 * static_cast<double>(r.next() % 7) - 3e-45
                        : u < 0.6 ? 1e-39 * r.normal()
                                  : 0.0;
               })});
  k.push_back({"tiny-1e-30", each([](Rng& r) { return 1e-30 * r.normal(); })});
  k.push_back({"tiny-1e-37", each([](Rng& r) { return 1e-37 * r.normal(); })});
  k.push_back({"huge-1e30", each([](Rng& r) { return 1e30 * r.normal(); })});
  k.push_back({"near-max", each([](Rng& r) { return 3e38 * (2 * r.uniform() - 1); })});
  k.push_back({"mixed-scales", [](Rng& r, std::vector<float>& v, int64_t) {
                 for (size_t i = 0; i < v.size(); i += 32) {
                   const double s = std::pow(10.0, 16 * r.uniform() - 8);
                   for (size_t j = i; j < i + 32 && j < v.size(); ++j)
                     v[j] = static_cast<float>(s * r.normal());
                 }
               }});
  k.push_back({"grid-ties",
               each([](Rng& r) { return static_cast<double>(static_cast<int>(r.next() % 33) - 16) / 8; })});
  k.push_back({"sparse", each([](Rng& r) { return r.uniform() < 0.9 ? 0.0 : r.normal(); })});
  k.push_back(
      {"fp16-exact", each([](Rng& r) { return std::ldexp(static_cast<double>(r.next() % 2048), -10); })});
  return k;
}

struct ImatrixKind {
  const char* name;
  bool present;
  std::function<float(Rng&)> value;
};

std::vector<ImatrixKind> imatrix_kinds() {
  return {
      {"none", false, nullptr},
      {"activations", true,
       [](Rng& r) {
         const double z = r.normal();
         return static_cast<float>(z * z + 0.01);
       }},
      {"ones", true, [](Rng&) { return 1.0f; }},
      {"with-zeros", true, [](Rng& r) { return r.uniform() < 0.3 ? 0.0f : static_cast<float>(r.uniform()); }},
      {"heavy", true, [](Rng& r) { return static_cast<float>(std::pow(10.0, 12 * r.uniform() - 6)); }},
  };
}

const ElemType kQuantTypes[] = {
    ElemType::F32,  ElemType::F16,  ElemType::BF16, ElemType::Q8_0,   ElemType::Q4_0,
    ElemType::Q4_1, ElemType::Q5_0, ElemType::Q5_1, ElemType::Q2_K,   ElemType::Q3_K,
    ElemType::Q4_K, ElemType::Q5_K, ElemType::Q6_K, ElemType::IQ4_NL, ElemType::IQ4_XS,
};

// Row lengths to try for a type: multiples of 256, and for 32-element
// blocks also lengths that are multiples of 32 only.
std::vector<int64_t> row_lengths(ElemType t) {
  const uint32_t bs = qforge::traits(t).block_size;
  if (bs == 256) return {256, 768};
  if (bs == 32) return {32, 96, 256, 288};
  return {1, 7, 256};
}

// Runs f() once per SIMD instruction set the kernels were compiled for and this
// CPU supports (AVX-512, AVX2, SSE4, ..., scalar): the bytes must not depend
// on which one the run-time dispatch picks.
// f gets the target's name.
template <typename F>
void for_each_simd_target(F f) {
  struct Reset {
    ~Reset() { hwy::SetSupportedTargetsForTest(0); }
  } reset;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    INFO("SIMD target " << hwy::TargetName(target));
    f(hwy::TargetName(target));
  }
}

std::string first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                             size_t block_bytes) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (a[i] != b[i]) {
      std::ostringstream os;
      os << "first difference at byte " << i << " (block " << i / block_bytes << ", offset "
         << i % block_bytes << "): ggml " << int(a[i]) << " vs qforge " << int(b[i]);
      return os.str();
    }
  return "sizes differ";
}

// Quantizes rows [start_row, start_row + nrows) of `x` with both ggml and
// qforge into buffers pre-filled with the same pattern; true when equal.
// Quantizes rows [start_row, start_row + nrows) of `x` with ggml, then with
// qforge on every SIMD target, into buffers pre-filled with the same pattern;
// true when all are equal, else *why says where they first differ.
bool same_quantization(ElemType t, const std::vector<float>& x, int64_t n_per_row, int64_t start_row,
                       int64_t nrows, const float* imatrix, std::string* why) {
  Ggml& g = ggml();
  const size_t rs = gguf::row_size(t, n_per_row);
  const int64_t total_rows = static_cast<int64_t>(x.size()) / n_per_row;
  std::vector<uint8_t> theirs(rs * static_cast<size_t>(total_rows), 0xA5);
  const size_t n_ggml =
      g.quantize_chunk(ggml_id(t), x.data(), theirs.data(), start_row * n_per_row, nrows, n_per_row, imatrix);
  bool same = true;
  for_each_simd_target([&](const char* target) {
    std::vector<uint8_t> ours(theirs.size(), 0xA5);
    const size_t n_ours =
        gguf::quantize_chunk(t, x.data(), ours.data(), start_row, nrows, n_per_row, imatrix);
    if (!same) return;
    if (n_ggml != n_ours) {
      *why = std::string(target) + ": returned sizes differ: ggml " + std::to_string(n_ggml) + " vs qforge " +
             std::to_string(n_ours);
      same = false;
    } else if (ours != theirs) {
      *why = std::string(target) + ": " + first_difference(theirs, ours, qforge::traits(t).type_size);
      same = false;
    }
  });
  return same;
}

// Every type and imatrix kind over every data kind and row length: the whole
// matrix, then chunks written at their offsets.
void check_spread() {
  const auto kinds = data_kinds();
  const auto imats = imatrix_kinds();
  for (ElemType t : kQuantTypes) {
    for (const auto& im : imats) {
      for (int64_t n_per_row : row_lengths(t)) {
        for (const auto& kind : kinds) {
          const uint64_t seed = (static_cast<uint64_t>(ggml_id(t)) << 40) ^
                                (static_cast<uint64_t>(n_per_row) << 20) ^
                                std::hash<std::string>()(std::string(kind.name) + im.name);
          Rng rng(seed);
          const int64_t nrows = 5;
          std::vector<float> x(static_cast<size_t>(nrows * n_per_row));
          kind.fill(rng, x, n_per_row);
          std::vector<float> w;
          if (im.present) {
            w.resize(static_cast<size_t>(n_per_row));
            for (auto& v : w) v = im.value(rng);
          }
          const float* imatrix = im.present ? w.data() : nullptr;
          for (auto [start, count] : {std::pair<int64_t, int64_t>{0, nrows}, {2, 2}, {4, 1}}) {
            std::string why;
            INFO("type " << qforge::name_of(t) << ", imatrix " << im.name << ", data " << kind.name
                         << ", n_per_row " << n_per_row << ", rows [" << start << ", " << start + count
                         << ")");
            const bool same = same_quantization(t, x, n_per_row, start, count, imatrix, &why);
            INFO(why);
            CHECK(same);
          }
        }
      }
    }
  }
}

// Many independent blocks whose scale (2^-40 .. 2^40) and shape vary, to reach
// rare ties and degenerate blocks.
void check_random_blocks() {
  const auto imats = imatrix_kinds();
  for (ElemType t : kQuantTypes) {
    const int64_t n_per_row = 256;
    for (const auto& im : imats) {
      Rng rng(0x51ed27u + static_cast<uint64_t>(ggml_id(t)) * 977 + std::hash<std::string>()(im.name));
      const int64_t nrows = 24;
      std::vector<float> x(static_cast<size_t>(nrows * n_per_row));
      for (size_t i = 0; i < x.size(); i += 16) {
        const double scale = std::pow(2.0, static_cast<double>(static_cast<int>(rng.next() % 80)) - 40);
        const int shape = static_cast<int>(rng.next() % 4);
        for (size_t j = i; j < i + 16; ++j) {
          const double v = shape == 0   ? rng.normal()
                           : shape == 1 ? rng.cauchy()
                           : shape == 2 ? rng.uniform() - 0.25
                                        : std::round(8 * rng.normal()) / 4;
          x[j] = clamp_finite(scale * v);
        }
      }
      std::vector<float> w;
      if (im.present) {
        w.resize(static_cast<size_t>(n_per_row));
        for (auto& v : w) v = im.value(rng);
      }
      std::string why;
      INFO("type " << qforge::name_of(t) << ", imatrix " << im.name);
      const bool same = same_quantization(t, x, n_per_row, 0, nrows, im.present ? w.data() : nullptr, &why);
      INFO(why);
      CHECK(same);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ tests

TEST_CASE("gguf kernels: ggml library is available", "[gguf][quants]") {
  Ggml& g = ggml();
  CHECK(std::string(g.version()) == kExpectedGgmlVersion);
}

TEST_CASE("gguf kernels: type predicates agree with ggml", "[gguf][quants]") {
  Ggml& g = ggml();
  for (ElemType t : qforge::all_elem_types()) {
    const int id = ggml_id(t);
    if (id < 0) {
      CHECK_FALSE(gguf::can_quantize(t));
      continue;
    }
    INFO("type " << qforge::name_of(t));
    CHECK(gguf::requires_imatrix(t) == g.requires_imatrix(id));
  }
  for (ElemType t : kQuantTypes) {
    INFO("type " << qforge::name_of(t));
    g.quantize_init(ggml_id(t));  // a no-op for these types; the ones needing tables are not ours
    CHECK(gguf::can_quantize(t));
    CHECK(gguf::can_dequantize(t));
    for (int64_t n : row_lengths(t)) CHECK(gguf::row_size(t, n) == g.row_size(ggml_id(t), n));
  }
  CHECK_FALSE(gguf::can_quantize(ElemType::IQ2_XXS));
  CHECK_FALSE(gguf::can_quantize(ElemType::Q8_K));
  CHECK_FALSE(gguf::can_quantize(ElemType::I8));
}

TEST_CASE("gguf kernels: quantize_chunk is byte-identical to ggml", "[gguf][quants]") {
  ggml();
  check_spread();
}

TEST_CASE("gguf kernels: random blocks at many scales are byte-identical", "[gguf][quants]") {
  ggml();
  check_random_blocks();
}

TEST_CASE("gguf kernels: the caller's flush-to-zero mode does not change the bytes", "[gguf][quants]") {
#if defined(__SSE2__)
  // ggml's reference bytes in the default environment, ours with FTZ + DAZ on.
  Ggml& g = ggml();
  Rng rng(77);
  const int64_t n_per_row = 256, nrows = 8;
  std::vector<float> x(static_cast<size_t>(n_per_row * nrows));
  for (auto& v : x) v = static_cast<float>(1e-39 * rng.normal());  // subnormal
  for (size_t i = 0; i < x.size(); i += 7) x[i] = static_cast<float>(1e-36 * rng.normal());
  for (ElemType t : kQuantTypes) {
    INFO("type " << qforge::name_of(t));
    const size_t bytes = gguf::row_size(t, n_per_row) * nrows;
    std::vector<uint8_t> theirs(bytes), ours(bytes);
    g.quantize_chunk(ggml_id(t), x.data(), theirs.data(), 0, nrows, n_per_row, nullptr);
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);  // FTZ | DAZ
    gguf::quantize_chunk(t, x.data(), ours.data(), 0, nrows, n_per_row, nullptr);
    const unsigned after = _mm_getcsr();
    _mm_setcsr(saved);
    CHECK((after & 0x8040u) == 0x8040u);  // the caller's mode is restored
    CHECK(ours == theirs);
  }
#else
  SUCCEED("flush-to-zero check is x86-only");
#endif
}

TEST_CASE("gguf kernels: F16 and BF16 rounding matches ggml bit pattern by bit pattern", "[gguf][quants]") {
  Ggml& g = ggml();
  auto h2f = g.sym<float (*)(uint16_t)>("ggml_fp16_to_fp32");
  REQUIRE(h2f != nullptr);
  auto as_float = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  };
  std::vector<float> x;
  auto add = [&](float f) {
    if (std::isfinite(f)) x.push_back(f);
  };
  // A stride through all bit patterns, plus every exact F16 tie (the midpoint
  // of two neighbouring halves, and its float neighbours) and every BF16 tie.
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) add(as_float(static_cast<uint32_t>(u)));
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    for (uint32_t sign : {0u, 0x8000u}) {
      const double lo = h2f(static_cast<uint16_t>(h | sign)), hi = h2f(static_cast<uint16_t>((h + 1) | sign));
      const float mid = static_cast<float>((lo + hi) / 2);
      add(mid);
      add(std::nextafter(mid, 0.0f));
      add(std::nextafter(mid, 1e30f));
    }
  }
  for (uint32_t hi = 0; hi < 0x10000; ++hi)
    for (uint32_t lo : {0x7fffu, 0x8000u, 0x8001u}) add(as_float(hi << 16 | lo));
  const auto n = static_cast<int64_t>(x.size());
  for_each_simd_target([&](const char*) {
    for (ElemType t : {ElemType::F16, ElemType::BF16}) {
      INFO("type " << qforge::name_of(t) << ", " << n << " values");
      std::vector<uint16_t> ours(x.size()), theirs(x.size());
      g.quantize_chunk(ggml_id(t), x.data(), theirs.data(), 0, 1, n, nullptr);
      gguf::quantize_chunk(t, x.data(), ours.data(), 0, 1, n, nullptr);
      size_t bad = 0;
      while (bad < x.size() && ours[bad] == theirs[bad]) ++bad;
      INFO("first difference at value " << bad);
      CHECK(bad == x.size());
    }
  });
  // And back: every one of the 65536 halves.
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> a(65536), b(65536);
  g.to_float(ElemType::F16)(all.data(), a.data(), 65536);
  gguf::dequantize_row(ElemType::F16, all.data(), b.data(), 65536);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST_CASE("gguf kernels: dequantize_row is bit-identical to ggml", "[gguf][quants]") {
  Ggml& g = ggml();
  const auto kinds = data_kinds();
  std::vector<ElemType> types(std::begin(kQuantTypes), std::end(kQuantTypes));
  for (ElemType t : {ElemType::Q8_K, ElemType::TQ1_0, ElemType::TQ2_0, ElemType::MXFP4}) types.push_back(t);
  for (ElemType t : types) {
    INFO("type " << qforge::name_of(t));
    REQUIRE(gguf::can_dequantize(t));
    const auto& tr = qforge::traits(t);
    const int64_t n = tr.block_size == 1 ? 4096 : 64 * static_cast<int64_t>(tr.block_size);
    const size_t bytes = static_cast<size_t>(n / tr.block_size) * tr.type_size;
    Ggml::ToFloat to_float = g.to_float(t);
    if (t != ElemType::F32) REQUIRE(to_float != nullptr);

    auto compare = [&](const std::vector<uint8_t>& q, const char* what) {
      std::vector<float> a(static_cast<size_t>(n), 1.0f), b(static_cast<size_t>(n), 2.0f);
      if (to_float)
        to_float(q.data(), a.data(), n);
      else
        std::memcpy(a.data(), q.data(), bytes);
      gguf::dequantize_row(t, q.data(), b.data(), n);
      size_t bad = 0;
      while (bad < a.size() && std::memcmp(&a[bad], &b[bad], sizeof(float)) == 0) ++bad;
      INFO(what << ": first differing element " << bad);
      CHECK(bad == a.size());
    };

    // Random bytes: every bit pattern of scales and levels, NaN/inf scales included.
    Rng rng(0xdecafbadull + static_cast<uint64_t>(ggml_id(t)));
    std::vector<uint8_t> q(bytes);
    for (auto& v : q) v = static_cast<uint8_t>(rng.next());
    if (t == ElemType::Q8_K) {  // float scales: keep them finite but varied
      for (size_t b = 0; b < bytes; b += tr.type_size) {
        const float d = static_cast<float>(rng.normal() * 1e-3);
        std::memcpy(&q[b], &d, sizeof d);
      }
    }
    if (t == ElemType::F32) {  // random finite floats
      for (size_t i = 0; i < bytes; i += 4) {
        const float f = static_cast<float>(rng.normal());
        std::memcpy(&q[i], &f, 4);
      }
    }
    compare(q, "random bytes");

    // Round trip of real quantizations.
    if (gguf::can_quantize(t)) {
      for (const auto& kind : kinds) {
        Rng r(std::hash<std::string>()(kind.name));
        const int64_t n_per_row = tr.block_size == 256 ? 256 : 64;
        std::vector<float> x(static_cast<size_t>(n));
        kind.fill(r, x, n_per_row);
        std::vector<uint8_t> qq(bytes);
        g.quantize_chunk(ggml_id(t), x.data(), qq.data(), 0, n / n_per_row, n_per_row, nullptr);
        compare(qq, kind.name);
      }
    }
  }
}

TEST_CASE("gguf kernels: non-finite input is refused with its position", "[gguf][quants]") {
  const int64_t n_per_row = 256, nrows = 4;
  std::vector<float> x(static_cast<size_t>(n_per_row * nrows), 0.5f);
  const float bads[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  for (ElemType t : kQuantTypes) {
    for (float bad : bads) {
      INFO("type " << qforge::name_of(t) << ", value " << bad);
      std::vector<float> y = x;
      y[static_cast<size_t>(2 * n_per_row + 37)] = bad;
      std::vector<uint8_t> out(gguf::row_size(t, n_per_row) * nrows, 0x5A);
      try {
        gguf::quantize_chunk(t, y.data(), out.data(), 0, nrows, n_per_row, nullptr);
        FAIL("no exception");
      } catch (const std::domain_error& e) {
        const std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find("row 2") != std::string::npos);
        CHECK(msg.find("column 37") != std::string::npos);
      }
      // The offending row and the rows after it are not written.
      const size_t rs = gguf::row_size(t, n_per_row);
      for (size_t b = 2 * rs; b < out.size(); ++b) REQUIRE(out[b] == 0x5A);
      // A chunk that does not contain the bad row quantizes fine.
      CHECK_NOTHROW(gguf::quantize_chunk(t, y.data(), out.data(), 3, 1, n_per_row, nullptr));
      // Row numbers are absolute, not relative to the chunk.
      CHECK_THROWS_WITH(gguf::quantize_chunk(t, y.data(), out.data(), 1, 2, n_per_row, nullptr),
                        Catch::Contains("row 2, column 37"));
    }
    std::vector<float> w(static_cast<size_t>(n_per_row), 1.0f);
    w[100] = std::numeric_limits<float>::quiet_NaN();
    std::vector<uint8_t> out(gguf::row_size(t, n_per_row) * nrows);
    CHECK_THROWS_AS(gguf::quantize_chunk(t, x.data(), out.data(), 0, nrows, n_per_row, w.data()),
                    std::domain_error);
  }
}

TEST_CASE("gguf kernels: bad arguments are refused", "[gguf][quants]") {
  std::vector<float> x(512, 1.0f);
  std::vector<uint8_t> out(4096);
  CHECK_THROWS_AS(gguf::quantize_chunk(ElemType::Q4_K, x.data(), out.data(), 0, 1, 96, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(gguf::quantize_chunk(ElemType::Q4_0, x.data(), out.data(), 0, 1, 48, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(gguf::quantize_chunk(ElemType::Q4_0, x.data(), out.data(), 0, 1, 0, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(gguf::quantize_chunk(ElemType::Q4_0, x.data(), out.data(), -1, 1, 32, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(gguf::quantize_chunk(ElemType::IQ2_XXS, x.data(), out.data(), 0, 1, 256, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(gguf::quantize_chunk(ElemType::I8, x.data(), out.data(), 0, 1, 256, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(gguf::row_size(ElemType::Q6_K, 100), std::invalid_argument);
  CHECK_THROWS_AS(gguf::dequantize_row(ElemType::Q4_K, out.data(), x.data(), 100), std::invalid_argument);
  CHECK_THROWS_AS(gguf::dequantize_row(ElemType::IQ2_XXS, out.data(), x.data(), 256), std::invalid_argument);
  CHECK(gguf::quantize_chunk(ElemType::Q4_0, x.data(), out.data(), 0, 0, 32, nullptr) == 0);
}
