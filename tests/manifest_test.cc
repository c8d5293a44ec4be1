// Manifest v1: structure, matrix expansion, and compiler-like diagnostics.
#include <catch2/catch.hpp>

#include "qforge/manifest.h"

using namespace qforge;

namespace {
Manifest parse(const std::string& text, Diagnostics& d) {
  return parse_manifest(text, "/tmp/qforge-test/qforge.toml", d);
}
}  // namespace

TEST_CASE("matrix expands to the cartesian product, first key outermost", "[manifest]") {
  Diagnostics d;
  auto m = parse(R"(
[models.llm]
path = "/dev/null"
[[targets]]
name = "llm-{type}-{ctx}"
model = "llm"
matrix = { type = ["Q4_K_M", "Q8_0"], ctx = [1, 2] }
pipeline = [ { pass = "quantize-gguf", type = "{type}", n = "{ctx}" } ]
)",
                 d);
  REQUIRE_FALSE(d.has_errors());
  REQUIRE(m.targets.size() == 4);
  CHECK(m.targets[0].name == "llm-Q4_K_M-1");
  CHECK(m.targets[1].name == "llm-Q4_K_M-2");
  CHECK(m.targets[3].name == "llm-Q8_0-2");
  CHECK(m.targets[2].pipeline[0].options.at("type").s == "Q8_0");
  // A whole-string placeholder takes the matrix value's type.
  CHECK(m.targets[2].pipeline[0].options.at("n").kind == Value::Kind::Int);
  CHECK(m.targets[2].pipeline[0].options.at("n").i == 1);
  CHECK(m.output_dir == "/tmp/qforge-test/dist");
  CHECK(m.cache_dir == "/tmp/qforge-test/.qforge/cache");
}

TEST_CASE("matrix everywhere: model, dataset names, typed values, literal braces", "[manifest]") {
  Diagnostics d;
  auto m = parse(R"(
[models.a]
path = "/dev/null"
[models.b]
path = "/dev/null"
[datasets.cal-a]
files = ["/dev/null"]
[datasets.cal-b]
files = ["/dev/null"]
[[targets]]
name = "{m}-w{bits}-{sym}-{p}"
model = "{m}"
matrix = { m = ["a", "b"], bits = [4, 8], sym = [true], p = [99.9] }
output = "out/{m}/{bits}.onnx"
pipeline = [ { pass = "x", id = "step-{m}", bits = "{bits}", symmetric = "{sym}", pct = "{p}", dataset = "cal-{m}", rule = "blk\\.[0-9]{2}\\.attn={{literal}}", inputs = ["{m}-w4-true-99.9/step-{m}"] } ]
)",
                 d);
  INFO(d.render());
  REQUIRE_FALSE(d.has_errors());
  REQUIRE(m.targets.size() == 4);
  const TargetDecl& t = m.targets[3];
  CHECK(t.name == "b-w8-true-99.9");
  CHECK(t.model == "b");
  CHECK(t.output == "/tmp/qforge-test/out/b/8.onnx");
  const StepDecl& s = t.pipeline[0];
  CHECK(s.id == "step-b");
  CHECK(s.options.at("bits").kind == Value::Kind::Int);
  CHECK(s.options.at("bits").i == 8);
  CHECK(s.options.at("symmetric").kind == Value::Kind::Bool);
  CHECK(s.options.at("pct").kind == Value::Kind::Float);
  CHECK(s.options.at("pct").f == 99.9);
  CHECK(s.options.at("dataset").s == "cal-b");
  // {2} is a regex quantifier, not a placeholder; {{ and }} write one brace.
  CHECK(s.options.at("rule").s == "blk\\.[0-9]{2}\\.attn={literal}");
  REQUIRE(s.inputs.size() == 1);
  CHECK(s.inputs[0].target == "b-w4-true-99.9");
  CHECK(s.inputs[0].step == "step-b");

  Diagnostics d2;
  parse(R"(
[models.a]
path = "/dev/null"
[[targets]]
name = "t-{m}"
model = "{m}"
matrix = { m = ["a", "c"] }
pipeline = [ { pass = "x", opt = "{mm}" } ]
)",
        d2);
  const std::string text = d2.render();
  CHECK_THAT(text, Catch::Contains("6:9: error: unknown model 'c' (in variant 't-c') (did you mean 'a'?)"));
  CHECK_THAT(text,
             Catch::Contains(
                 "8:34: error: placeholder '{mm}' has no value: the matrix defines 'm' (did you mean 'm'?)"));
}

TEST_CASE("every mistake is reported with file:line:col and a suggestion", "[manifest]") {
  Diagnostics d;
  parse(R"([build]
outptu = "dist"
[models.det]
path = "/dev/null"
[[targets]]
name = "det"
model = "dte"
pipeline = [ { pass = "calibrate" } ]
prfile = "x"
)",
        d);
  REQUIRE(d.error_count() == 3);
  std::string text = d.render();
  CHECK_THAT(text, Catch::Contains(
                       "qforge.toml:2:1: error: unknown key 'outptu' in [build] (did you mean 'output'?)"));
  CHECK_THAT(text, Catch::Contains("qforge.toml:7:9: error: unknown model 'dte' (did you mean 'det'?)"));
  CHECK_THAT(text, Catch::Contains(
                       "qforge.toml:9:1: error: unknown key 'prfile' in a target (did you mean 'profile'?)"));
  CHECK_THAT(text, Catch::Contains("  model = \"dte\"\n          ^"));
}

TEST_CASE("wrong types name the expected type", "[manifest]") {
  Diagnostics d;
  parse(R"([build]
jobs = "two"
[models.m]
path = "/dev/null"
[[targets]]
name = "t"
model = "m"
matrix = "x"
)",
        d);
  std::string text = d.render();
  CHECK_THAT(text,
             Catch::Contains("2:8: error: 'jobs' in [build] must be an integer, found a string \"two\""));
  CHECK_THAT(text, Catch::Contains("8:10: error: 'matrix' must be a table, found a string"));
}

TEST_CASE("TOML syntax errors point at the position", "[manifest]") {
  Diagnostics d;
  parse("[build]\noutput = \"dist\nx = 1\n", d);
  REQUIRE(d.error_count() == 1);
  CHECK_THAT(d.render(), Catch::Contains("qforge.toml:2:"));
  CHECK_THAT(d.render(), Catch::Contains("invalid TOML"));
}

TEST_CASE("unknown placeholders, duplicate names and missing files are errors", "[manifest]") {
  Diagnostics d;
  parse(R"([models.m]
path = "does-not-exist.gguf"
[[targets]]
name = "a-{typ}"
model = "m"
matrix = { type = ["x", "y"] }
[[targets]]
name = "b"
model = "m"
[[targets]]
name = "b"
model = "m"
)",
        d);
  std::string text = d.render();
  CHECK_THAT(text, Catch::Contains(
                       "placeholder '{typ}' has no value: the matrix defines 'type' (did you mean 'type'?)"));
  CHECK_THAT(text, Catch::Contains("model file 'does-not-exist.gguf' does not exist"));
  CHECK_THAT(text, Catch::Contains("two targets are named 'b'"));
  CHECK_THAT(text, Catch::Contains("warning: matrix key 'type' is used nowhere"));
}

TEST_CASE("did you mean", "[diag]") {
  CHECK(did_you_mean("quantise", {"calibrate", "quantize-static", "evaluate"}) ==
        " (did you mean 'quantize-static'?)");
  CHECK(did_you_mean("zzz", {"calibrate", "evaluate"}).empty());
  CHECK(edit_distance("kitten", "sitting") == 3);
}
