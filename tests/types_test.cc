// The core library's element helpers every component shares: the one
// half-precision conversion (qforge/half.h) and the one shape printer
// (qforge/types.h).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qforge/half.h"
#include "qforge/types.h"

using namespace qforge;

TEST_CASE("fp32_to_fp16 and fp16_to_fp32: IEEE round to nearest even, exact round trip", "[types][half]") {
  CHECK(fp32_to_fp16(1.0f) == 0x3C00);
  CHECK(fp32_to_fp16(-2.0f) == 0xC000);
  CHECK(fp32_to_fp16(65504.0f) == 0x7BFF);
  CHECK(fp32_to_fp16(65520.0f) == 0x7C00);               // rounds up to inf
  CHECK(fp32_to_fp16(1.0f + 1.0f / 2048) == 0x3C00);     // tie -> even
  CHECK(fp32_to_fp16(1.0f + 3.0f / 2048) == 0x3C02);     // tie -> even (up)
  CHECK(fp32_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);  // tie -> even (zero)
  CHECK(fp32_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 ulp -> 2
  CHECK(fp32_to_fp16(-std::numeric_limits<float>::infinity()) == 0xFC00);
  CHECK(fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()) == 0x7E00);
  CHECK(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(fp16_to_fp32(0x03FF) == std::ldexp(1023.0f, -24));
  CHECK(fp16_to_fp32(0x3555) == 0.333251953125f);
  CHECK(std::isinf(fp16_to_fp32(0xFC00)));
  CHECK(std::isnan(fp16_to_fp32(0x7C01)));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;  // NaNs come back quiet
    REQUIRE(fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))) == h);
  }
}

TEST_CASE("fp32_to_bf16 and bf16_to_fp32: round to nearest even", "[types][half]") {
  CHECK(fp32_to_bf16(1.0f) == 0x3F80);
  CHECK(bf16_to_fp32(0x3F80) == 1.0f);
  CHECK(fp32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);  // tie -> even (down)
  CHECK(fp32_to_bf16(1.0f + std::ldexp(3.0f, -8)) == 0x3F82);  // tie -> even (up)
  CHECK(fp32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3F81);
  CHECK((fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()) & 0x7FC0) == 0x7FC0);
}

TEST_CASE("shape_str: the shape every message prints", "[types]") {
  CHECK(shape_str({}) == "[]");
  CHECK(shape_str({7}) == "[7]");
  CHECK(shape_str({1, 3, 224, 224}) == "[1, 3, 224, 224]");
  CHECK(shape_str({-1, 3, -1}) == "[?, 3, ?]");
}
