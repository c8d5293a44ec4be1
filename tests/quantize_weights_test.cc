// quantize-weights pass and the shared quantization arithmetic
// (passes/common/onnx_quant_util.h).
//
// Models are built in the IR, quantized, written with the ONNX plugin and run
// in ONNX Runtime next to the float original through tests/tools/ort_compare.py
// ($QFORGE_PYTHON: a Python with onnxruntime and numpy).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "onnx_quant_util.h"
#include "onnx_test_util.h"
#include "qforge/graph.h"
#include "qforge/pass.h"
#include "qforge/plugin_host.h"
#include "qforge/registry.h"
#include "quantize_weights.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace qforge;
namespace q = qforge::quant;

using namespace qforge::testutil;

// ---------------------------------------------------------------- models

Model empty_model(int64_t opset = 13) {
  Model m = onnx_model("test", opset, 7);
  m.graph->model.producer_name = "qforge-test";
  return m;
}

// x[batch, dims[0]] -> (MatMul -> Add -> Relu)* -> y[batch, dims.back()]
Model mlp(const std::vector<int64_t>& dims, uint64_t seed = 7) {
  Model m = empty_model();
  add_mlp(m, dims, seed, 0.0f);
  return m;
}

// x[batch, K] -> Gemm(W[N, K], transB = 1, C[N]) -> Relu -> Gemm(W2[K2, N2], C) -> y
Model gemm_model(uint64_t seed = 11) {
  Model m = empty_model();
  Graph& g = *m.graph;
  Rng rng(seed);
  add_io(g, "x", 64, "y", 16);
  m.tensors.push_back(rand_tensor("g1.weight", {96, 64}, rng, 0.25f));
  m.tensors.push_back(rand_tensor("g1.bias", {96}, rng, 0.1f));
  m.tensors.push_back(rand_tensor("g2.weight", {96, 16}, rng, 0.2f));
  m.tensors.push_back(rand_tensor("g2.bias", {16}, rng, 0.1f));
  Node g1 = make_node("g1", "Gemm", {"x", "g1.weight", "g1.bias"}, {"g1_out"});
  g1.attributes.push_back(Attribute::of_int("transB", 1));
  g.nodes.push_back(g1);
  g.nodes.push_back(make_node("relu", "Relu", {"g1_out"}, {"relu_out"}));
  g.nodes.push_back(make_node("g2", "Gemm", {"relu_out", "g2.weight", "g2.bias"}, {"y"}));
  return m;
}

// ---------------------------------------------------------------- running

PassResult quantize(Model& m, Options opts) {
  return run_pass(passes::quantize_weights_pass_info(), m, opts);
}

// Emitted models go here; removed at exit unless QFORGE_KEEP_TEST_FILES is set.
fs::path scratch() {
  static Scratch s("qforge_qw_test_");
  return s.dir;
}

std::string python() { return ort_python("[quantize-weights]"); }

void expect_ort_close(const fs::path& ref, const fs::path& cand, double min_cosine) {
  check_ort_close(python(), ref, cand, min_cosine);
}

fs::path emit(const Model& m, const std::string& name) { return emit_to(scratch() / name, m); }

std::vector<float> floats_of(const Tensor& t) { return q::read_f32(t); }

}  // namespace

// ================================================================ arithmetic

TEST_CASE("quant arithmetic: round half to even and half away from zero", "[quantize-weights][quant-util]") {
  using q::Rounding;
  CHECK(q::round_to_int(0.5f, Rounding::HalfEven) == 0.0f);
  CHECK(q::round_to_int(1.5f, Rounding::HalfEven) == 2.0f);
  CHECK(q::round_to_int(2.5f, Rounding::HalfEven) == 2.0f);
  CHECK(q::round_to_int(-2.5f, Rounding::HalfEven) == -2.0f);
  CHECK(q::round_to_int(-3.5f, Rounding::HalfEven) == -4.0f);
  CHECK(q::round_to_int(2.4999998f, Rounding::HalfEven) == 2.0f);
  CHECK(q::round_to_int(2.5000002f, Rounding::HalfEven) == 3.0f);
  CHECK(q::round_to_int(0.5f, Rounding::HalfAwayFromZero) == 1.0f);
  CHECK(q::round_to_int(2.5f, Rounding::HalfAwayFromZero) == 3.0f);
  CHECK(q::round_to_int(-2.5f, Rounding::HalfAwayFromZero) == -3.0f);
}

TEST_CASE("quant arithmetic: ORT quant_utils scale and zero point", "[quantize-weights][quant-util]") {
  // int8 symmetric: [-127, 127], scale = absmax / 127.
  const q::QRange s8 = q::qrange(ElemType::I8, true, false);
  CHECK(s8.qmin == -127);
  CHECK(s8.qmax == 127);
  q::ScaleZp p = q::compute_scale_zp(-0.5f, 31.75f, s8, true);
  CHECK(p.scale == 0.25f);  // 63.5 / 254
  CHECK(p.zero_point == 0);
  const q::QRange full8 = q::qrange(ElemType::I8, false, false);
  CHECK(q::quantize_value(0.625f, p, full8) == 2);    // 2.5 -> 2 (ties to even)
  CHECK(q::quantize_value(0.875f, p, full8) == 4);    // 3.5 -> 4
  CHECK(q::quantize_value(-0.625f, p, full8) == -2);  // -2.5 -> -2
  CHECK(q::quantize_value(40.0f, p, full8) == 127);
  CHECK(q::quantize_value(-40.0f, p, full8) == -128);  // clipped to the type, as numpy does
  // uint8 asymmetric: scale = (3 - -1) / 255, zp = round(1 / scale) = round(63.75) = 64.
  q::ScaleZp u = q::compute_scale_zp(-1.0f, 3.0f, q::qrange(ElemType::U8, false, false), false);
  CHECK(u.scale == Approx(4.0 / 255.0).epsilon(1e-7));
  CHECK(u.zero_point == 64);
  // uint8 symmetric: zp = round(127.5) = 128 (even).
  CHECK(q::compute_scale_zp(-1.0f, 1.0f, q::qrange(ElemType::U8, true, false), true).zero_point == 128);
  // A zero range gives scale 1, zero point 0.
  q::ScaleZp z = q::compute_scale_zp(0.0f, 0.0f, s8, true);
  CHECK(z.scale == 1.0f);
  CHECK(z.zero_point == 0);
  // reduce_range (7-bit)
  CHECK(q::qrange(ElemType::I8, true, true).qmax == 64);
  CHECK(q::qrange(ElemType::U8, false, true).qmax == 127);
}

TEST_CASE("quant arithmetic: MLAS blockwise scales (MatMulNBits conventions)",
          "[quantize-weights][quant-util]") {
  // Symmetric: the value of largest magnitude, sign kept, maps to -8.
  CHECK(q::mlas_symmetric_scale(-2.0f, 1.0f, 4) == 0.25f);
  CHECK(q::mlas_symmetric_scale(-1.0f, 2.0f, 4) == -0.25f);
  CHECK(q::mlas_symmetric_scale(-1.0f, 2.0f, 8) == -2.0f / 128.0f);
  // Asymmetric: (max - min) / 15, zp = roundf(-min / scale).
  q::ScaleZp a = q::mlas_asymmetric_scale_zp(-1.0f, 2.0f, 4);
  CHECK(a.scale == 0.2f);
  CHECK(a.zero_point == 5);
  q::ScaleZp b = q::mlas_asymmetric_scale_zp(0.5f, 2.0f, 4);  // min clamps to 0
  CHECK(b.zero_point == 0);

  // One column: m = -2 -> scale 0.25; roundf ties go away from zero.
  const float col[] = {-2.0f, 0.625f, -0.375f, 1.0f};  // w/scale: -8, 2.5, -1.5, 4
  q::QuantSpec spec;
  spec.type = ElemType::I4;
  spec.symmetric = true;
  spec.convention = q::Convention::MlasBlockwise;
  q::QuantizedMatrix m = q::quantize_matrix(col, 4, 1, false, spec);
  CHECK(m.scales == std::vector<float>{0.25f});
  CHECK(m.zero_points.empty());
  CHECK(m.q == std::vector<int32_t>{-8, 3, -2, 4});
  // MatMulNBits' unsigned symmetric form rounds after adding 8: -1.5 + 8 = 6.5 -> 7.
  spec.type = ElemType::U4;
  spec.mlas_nbits = true;
  m = q::quantize_matrix(col, 4, 1, false, spec);
  CHECK(m.q == std::vector<int32_t>{0, 11, 7, 12});

  // Asymmetric: scale 0.2, zp 5; -0.5 / 0.2 = -2.5 is a tie. The QDQ quantizer
  // gives roundf(-2.5) + 5 = 2, the MatMulNBits one roundf(-2.5 + 5) = 3.
  const float acol[] = {-1.0f, 2.0f, -0.5f};
  q::QuantSpec as;
  as.type = ElemType::U4;
  as.symmetric = false;
  as.convention = q::Convention::MlasBlockwise;
  m = q::quantize_matrix(acol, 3, 1, false, as);
  CHECK(m.zero_points == std::vector<int32_t>{5});
  CHECK(m.q == std::vector<int32_t>{0, 15, 2});
  as.mlas_nbits = true;
  m = q::quantize_matrix(acol, 3, 1, false, as);
  CHECK(m.q == std::vector<int32_t>{0, 15, 3});
}

TEST_CASE("quant arithmetic: quant_utils per-channel matrix with ties", "[quantize-weights][quant-util]") {
  // Column 0: absmax 127/64 -> scale 1/64; 62.5 -> 62 and 2.5 -> 2 (ties to even).
  // Column 1: all zero -> scale 1.
  const float w[] = {1.984375f, 0.0f, 0.9765625f, 0.0f, 0.0390625f, 0.0f, -0.0078125f, 0.0f};
  q::QuantSpec spec;
  spec.type = ElemType::I8;
  spec.symmetric = true;
  q::QuantizedMatrix m = q::quantize_matrix(w, 4, 2, false, spec);
  CHECK(m.scales == std::vector<float>{0.015625f, 1.0f});
  CHECK(m.q == std::vector<int32_t>{127, 0, 62, 0, 2, 0, 0, 0});
  // The same matrix stored transposed ([N, K]) gives the same result.
  const float wt[] = {1.984375f, 0.9765625f, 0.0390625f, -0.0078125f, 0, 0, 0, 0};
  q::QuantizedMatrix mt = q::quantize_matrix(wt, 4, 2, true, spec);
  CHECK(mt.q == m.q);
  CHECK(mt.scales == m.scales);
}

TEST_CASE("quant arithmetic: int4 packing is low nibble first", "[quantize-weights][quant-util]") {
  CHECK(q::pack_nibbles({1, 2, 3}) == std::vector<uint8_t>{0x21, 0x03});
  CHECK(q::pack_nibbles({-1, -8}) == std::vector<uint8_t>{0x8F});
  CHECK(q::pack_nibbles({7, -8, 0, 15}) == std::vector<uint8_t>{0x87, 0xF0});
  CHECK(q::encode_codes({-1, 127, -128}, ElemType::I8) == std::vector<uint8_t>{0xFF, 0x7F, 0x80});
}

TEST_CASE("quant arithmetic: MatMulNBits layout", "[quantize-weights][quant-util]") {
  // K = 20, N = 2, block 16 -> 2 blocks per column, blob 8 bytes; padding holds the zero point.
  q::QuantizedMatrix m;
  m.K = 20;
  m.N = 2;
  m.block_size = 16;
  m.n_blocks = 2;
  for (int64_t k = 0; k < 20; ++k)
    for (int64_t n = 0; n < 2; ++n) m.q.push_back(static_cast<int32_t>((k + 3 * n) % 16));
  m.scales = {1.0f, 2.0f, 3.0f, 4.0f};  // [block][n]
  q::NBitsTensors t = q::pack_matmul_nbits(m, 4);
  REQUIRE(t.b.size() == 2 * 2 * 8);
  CHECK(t.b[0] == 0x10);   // n 0, block 0: k0 = 0 (low), k1 = 1 (high)
  CHECK(t.b[7] == 0xFE);   // k14 = 14, k15 = 15
  CHECK(t.b[8] == 0x10);   // n 0, block 1: k16 = 0, k17 = 1
  CHECK(t.b[9] == 0x32);   // k18 = 2, k19 = 3
  CHECK(t.b[10] == 0x00);  // past K: code 0 (ignored by the kernel, as ORT writes it)
  CHECK(t.b[16] == 0x43);  // n 1, block 0: k0 = 3, k1 = 4
  CHECK(t.scales == std::vector<float>{1.0f, 3.0f, 2.0f, 4.0f});  // [n][block]
  CHECK(t.zero_points.empty());
  // Zero points: 3 blocks -> 2 bytes per column, block 2 in the low nibble of byte 1.
  m.K = 40;
  m.n_blocks = 3;
  m.q.assign(80, 0);
  m.scales.assign(6, 1.0f);
  m.zero_points = {1, 2, 3, 4, 5, 6};  // [block][n]
  t = q::pack_matmul_nbits(m, 4);
  CHECK(t.zero_points == std::vector<uint8_t>{0x31, 0x85, 0x42, 0x86});  // unused nibble: 8
  t = q::pack_matmul_nbits(m, 8);
  CHECK(t.zero_points == std::vector<uint8_t>{1, 3, 5, 2, 4, 6});
  CHECK(t.b.size() == 2 * 3 * 16);
}

static std::vector<uint8_t> read_raw(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <class T>
static std::vector<uint8_t> raw_of(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

TEST_CASE("quant arithmetic: bit-identical to ONNX Runtime's own quantizer kernels",
          "[quantize-weights][quant-util]") {
  // K = 72 (a partial last block), N = 23 (odd: ORT's unaligned QDQ path).
  const int64_t K = 72, N = 23;
  Rng rng(77);
  std::vector<float> w(static_cast<size_t>(K * N));
  for (float& x : w) x = rng.uniform() * 0.3f + 0.02f;
  w[5] = 0.0f;
  const fs::path wf = scratch() / "mlas_w.f32";
  {
    std::ofstream out(wf, std::ios::binary);
    out.write(reinterpret_cast<const char*>(w.data()),
              static_cast<std::streamsize>(w.size() * sizeof(float)));
  }
  struct Case {
    const char* kind;
    int bits;
    int64_t block;
    bool symmetric;
  };
  for (Case cs : {Case{"nbits", 4, 32, true}, Case{"nbits", 4, 16, false}, Case{"nbits", 8, 16, true},
                  Case{"nbits", 8, 32, false}, Case{"qdq", 4, 32, true}, Case{"qdq", 4, 16, false}}) {
    DYNAMIC_SECTION(cs.kind << " bits " << cs.bits << " block " << cs.block << " symmetric "
                            << cs.symmetric) {
      const fs::path out = scratch() / "mlas_ref";
      const std::string cmd = "'" + python() + "' '" +
                              (source_dir() / "tests/tools/ort_compare.py").string() + "' mlas-quant '" +
                              wf.string() + "' " + std::to_string(K) + " " + std::to_string(N) + " " +
                              std::to_string(cs.bits) + " " + std::to_string(cs.block) + " " +
                              (cs.symmetric ? "1" : "0") + " " + cs.kind + " '" + out.string() + "'";
      REQUIRE(std::system(cmd.c_str()) == 0);
      q::QuantSpec spec;
      spec.symmetric = cs.symmetric;
      spec.block_size = cs.block;
      spec.convention = q::Convention::MlasBlockwise;
      if (std::string(cs.kind) == "nbits") {
        spec.type = cs.bits == 4 ? ElemType::U4 : ElemType::U8;
        spec.mlas_nbits = true;
        q::NBitsTensors t = q::pack_matmul_nbits(q::quantize_matrix(w.data(), K, N, false, spec), cs.bits);
        CHECK(t.b == read_raw(out.string() + ".q"));
        CHECK(raw_of(t.scales) == read_raw(out.string() + ".scales"));
        if (!cs.symmetric) CHECK(t.zero_points == read_raw(out.string() + ".zp"));
      } else {
        spec.type = cs.symmetric ? ElemType::I4 : ElemType::U4;
        q::QuantizedMatrix m = q::quantize_matrix(w.data(), K, N, false, spec);
        CHECK(q::encode_codes(m.q, spec.type) == read_raw(out.string() + ".q"));
        CHECK(raw_of(m.scales) == read_raw(out.string() + ".scales"));
        if (!cs.symmetric) CHECK(q::encode_codes(m.zero_points, spec.type) == read_raw(out.string() + ".zp"));
      }
    }
  }
}

// ================================================================ the pass

TEST_CASE("quantize-weights: dq 8-bit per channel on an MLP runs in ONNX Runtime", "[quantize-weights]") {
  Model orig = mlp({64, 128, 64, 16});
  Model m = orig;
  PassResult r = quantize(m, {{"bits", Value::of_int(8)}, {"format", Value::of_string("dq")}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  const Graph& g = *m.graph;
  CHECK(q::count_ops(g, "DequantizeLinear") == 3);
  CHECK(q::count_ops(g, "MatMul") == 3);
  CHECK(g.opset() == 13);
  CHECK(r.metrics.at("quantized_weights") == 3);
  CHECK(r.metrics.at("weight_bytes_after") < r.metrics.at("weight_bytes_before") / 3.5);
  CHECK(m.tensor("fc1.weight") == nullptr);
  const Node* dq = find_op(g, "DequantizeLinear");
  REQUIRE(dq);
  const Tensor* qw = m.tensor(dq->inputs[0]);
  REQUIRE(qw);
  CHECK(qw->type == ElemType::I8);
  CHECK(m.tensor(dq->inputs[1])->shape == std::vector<int64_t>{128});
  CHECK(dq->inputs.size() == 2);  // symmetric: no zero point
  CHECK(dq->attr("axis")->i == 1);
  // The original model is untouched (copy semantics).
  CHECK(orig.tensor("fc1.weight") != nullptr);
  CHECK(q::count_ops(*orig.graph, "DequantizeLinear") == 0);

  fs::path a = emit(orig, "mlp_f32.onnx"), b = emit(m, "mlp_dq8.onnx");
  CHECK(fs::file_size(b) < fs::file_size(a) / 3);
  expect_ort_close(a, b, 0.999);
}

TEST_CASE("quantize-weights: dq 4-bit blocked (int4, uint4) raises the opset and runs",
          "[quantize-weights]") {
  Model orig = mlp({64, 128, 64, 16});
  fs::path a = emit(orig, "mlp_f32_b.onnx");
  for (bool symmetric : {true, false}) {
    DYNAMIC_SECTION("symmetric " << symmetric) {
      Model m = orig;
      PassResult r = quantize(m, {{"bits", Value::of_int(4)},
                                  {"block_size", Value::of_int(32)},
                                  {"symmetric", Value::of_bool(symmetric)},
                                  {"format", Value::of_string("dq")}});
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      const Graph& g = *m.graph;
      CHECK(g.opset() == 21);
      CHECK(g.model.ir_version >= 10);
      CHECK(q::count_ops(g, "DequantizeLinear") == 3);
      const Node* dq = find_op(g, "DequantizeLinear");
      REQUIRE(dq);
      CHECK(dq->attr("block_size")->i == 32);
      CHECK(dq->attr("axis")->i == 0);
      CHECK(m.tensor(dq->inputs[0])->type == (symmetric ? ElemType::I4 : ElemType::U4));
      CHECK(m.tensor(dq->inputs[1])->shape == std::vector<int64_t>{2, 128});  // [K/32, N]
      CHECK(dq->inputs.size() == (symmetric ? 2u : 3u));
      bool raised = false;
      for (const std::string& n : r.notes) raised |= n.find("from 13 to 21") != std::string::npos;
      CHECK(raised);
      CHECK(r.metrics.at("weight_bytes_after") < r.metrics.at("weight_bytes_before") / 6);
      fs::path b = emit(m, std::string("mlp_dq4_") + (symmetric ? "s" : "a") + ".onnx");
      expect_ort_close(a, b, 0.95);
    }
  }
}

TEST_CASE("quantize-weights: dq exact codes for a small weight", "[quantize-weights]") {
  // W [4, 2]; column 0 has ties (62.5, 2.5) under scale 1/64.
  Model m = empty_model();
  Graph& g = *m.graph;
  add_io(g, "x", 4, "y", 2);
  m.tensors.push_back(q::make_f32_tensor(
      "w", {4, 2}, {1.984375f, -1.0f, 0.9765625f, 0.5f, 0.0390625f, 0.25f, -0.0078125f, 0.125f}));
  g.nodes.push_back(make_node("mm", "MatMul", {"x", "w"}, {"y"}));
  Model m4 = m;
  PassResult r = quantize(m, {{"bits", Value::of_int(8)}});
  REQUIRE(r.status.ok);
  const Node* dq = find_op(*m.graph, "DequantizeLinear");
  REQUIRE(dq);
  // Column 1: absmax 1 -> scale 1/127: -127, 63.5 -> 64, 31.75 -> 32, 15.875 -> 16.
  CHECK(bytes_of(*m.tensor(dq->inputs[0])) == std::vector<uint8_t>{127, 0x81, 62, 64, 2, 32, 0, 16});
  CHECK(floats_of(*m.tensor(dq->inputs[1]))[0] == 0.015625f);

  // 4-bit per channel: column 0 m = 1.984375 -> scale -m/8; codes -8, roundf(-3.94) = -4, ...
  r = quantize(m4, {{"bits", Value::of_int(4)}, {"block_size", Value::of_int(0)}});
  REQUIRE(r.status.ok);
  dq = find_op(*m4.graph, "DequantizeLinear");
  REQUIRE(dq);
  const Tensor* qt = m4.tensor(dq->inputs[0]);
  CHECK(qt->type == ElemType::I4);
  CHECK(dq->attr("axis")->i == 1);
  CHECK(dq->attr("block_size") == nullptr);
  // col 0: scale -0.248046875: 1.984375 -> -8, 0.9765625 -> -3.937 -> -4, 0.0390625 -> -0.157 -> 0,
  //        -0.0078125 -> 0.0315 -> 0.
  // col 1: m = -1 -> scale 0.125: -1 -> -8, 0.5 -> 4, 0.25 -> 2, 0.125 -> 1.
  // Row-major [4, 2] codes: -8 -8 | -4 4 | 0 2 | 0 1 -> bytes 0x88, 0x4C, 0x20, 0x10.
  CHECK(bytes_of(*qt) == std::vector<uint8_t>{0x88, 0x4C, 0x20, 0x10});
  CHECK(floats_of(*m4.tensor(dq->inputs[1])) == std::vector<float>{-0.248046875f, 0.125f});
}

TEST_CASE("quantize-weights: matmulnbits 4 and 8 bits run in ONNX Runtime", "[quantize-weights]") {
  Model orig = mlp({64, 128, 64, 16}, 3);
  fs::path a = emit(orig, "mlp_f32_n.onnx");
  struct Case {
    int bits;
    bool symmetric;
    int64_t block;
    double min_cos;
  };
  for (Case cs : {Case{4, true, 32, 0.95}, Case{4, false, 16, 0.95}, Case{8, true, 32, 0.99},
                  Case{8, false, 64, 0.99}}) {
    DYNAMIC_SECTION("bits " << cs.bits << " symmetric " << cs.symmetric << " block " << cs.block) {
      Model m = orig;
      PassResult r = quantize(m, {{"bits", Value::of_int(cs.bits)},
                                  {"block_size", Value::of_int(cs.block)},
                                  {"symmetric", Value::of_bool(cs.symmetric)},
                                  {"format", Value::of_string("matmulnbits")}});
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      const Graph& g = *m.graph;
      CHECK(q::count_ops(g, "MatMulNBits", "com.microsoft") == 3);
      CHECK(q::count_ops(g, "MatMul") == 0);
      CHECK(g.opset("com.microsoft") == 1);
      CHECK(g.opset() == 13);
      const Node* n = find_op(g, "MatMulNBits");
      REQUIRE(n);
      CHECK(n->attr("K")->i == 64);
      CHECK(n->attr("N")->i == 128);
      CHECK(n->attr("bits")->i == cs.bits);
      CHECK(n->attr("block_size")->i == cs.block);
      CHECK(n->inputs.size() == (cs.symmetric ? 3u : 4u));
      const int64_t nb = 64 / cs.block;
      CHECK(m.tensor(n->inputs[1])->shape == std::vector<int64_t>{128, nb, cs.block * cs.bits / 8});
      CHECK(m.tensor(n->inputs[2])->shape == std::vector<int64_t>{128 * nb});
      CHECK(r.metrics.at("weight_bytes_after") <
            r.metrics.at("weight_bytes_before") / (cs.bits == 4 ? 5 : 3));
      fs::path b = emit(m, "mlp_nbits_" + std::to_string(cs.bits) + (cs.symmetric ? "s" : "a") + ".onnx");
      CHECK(fs::file_size(b) < fs::file_size(a));
      expect_ort_close(a, b, cs.min_cos);
    }
  }
}

TEST_CASE("quantize-weights: f16 weights keep f16 scales and run", "[quantize-weights]") {
  Model orig = mlp({64, 96, 16}, 13);
  for (Tensor& t : orig.tensors) t = q::make_float_tensor(t.name, t.shape, ElemType::F16, q::read_f32(t));
  for (ValueInfo* v : {&orig.graph->inputs[0], &orig.graph->outputs[0]}) v->type.elem = ElemType::F16;
  fs::path a = emit(orig, "mlp_f16.onnx");
  struct Case {
    int bits;
    int64_t block;
    const char* fmt;
    int64_t opset;
    double min_cos;
  };
  for (Case cs :
       {Case{8, 0, "dq", 19, 0.99}, Case{4, 32, "dq", 21, 0.95}, Case{4, 32, "matmulnbits", 13, 0.95}}) {
    DYNAMIC_SECTION(cs.fmt << " bits " << cs.bits) {
      Model m = orig;
      PassResult r = quantize(m, {{"bits", Value::of_int(cs.bits)},
                                  {"block_size", Value::of_int(cs.block)},
                                  {"format", Value::of_string(cs.fmt)}});
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      CHECK(r.metrics.at("quantized_weights") == 2);
      CHECK(m.graph->opset() == cs.opset);
      for (const Node& n : m.graph->nodes)
        if (n.op_type == "DequantizeLinear" || n.op_type == "MatMulNBits") {
          CHECK(m.tensor(n.inputs[n.op_type == "DequantizeLinear" ? 1 : 2])->type == ElemType::F16);
        }
      fs::path b = emit(m, std::string("mlp_f16_") + cs.fmt + std::to_string(cs.bits) + ".onnx");
      expect_ort_close(a, b, cs.min_cos);
    }
  }
}

TEST_CASE("quantize-weights: 3-D activations (transformer-style MatMul)", "[quantize-weights]") {
  Model orig = empty_model();
  add_projection(orig, 5, 64, 32, 17);
  fs::path a = emit(orig, "proj_f32.onnx");
  for (const char* fmt : {"dq", "matmulnbits"}) {
    DYNAMIC_SECTION(fmt) {
      Model m = orig;
      PassResult r = quantize(
          m,
          {{"bits", Value::of_int(4)}, {"block_size", Value::of_int(32)}, {"format", Value::of_string(fmt)}});
      REQUIRE(r.status.ok);
      expect_ort_close(a, emit(m, std::string("proj_") + fmt + ".onnx"), 0.95);
    }
  }
}

TEST_CASE("quantize-weights: subgraph bodies are left alone, with a note", "[quantize-weights]") {
  Model orig = empty_model();
  Graph& g = *orig.graph;
  add_io(g, "x", 32, "y", 16);
  g.inputs.push_back(ValueInfo{"cond", ValueType::tensor(ElemType::Bool, std::vector<int64_t>{}), "", ""});
  Rng rng(23);
  orig.tensors.push_back(rand_tensor("fc1.weight", {32, 32}, rng, 0.3f));
  orig.tensors.push_back(rand_tensor("then.weight", {32, 16}, rng, 0.3f));
  orig.tensors.push_back(rand_tensor("else.weight", {32, 16}, rng, 0.3f));
  g.nodes.push_back(make_node("fc1", "MatMul", {"x", "fc1.weight"}, {"h"}));
  auto branch = [&](const std::string& w, const std::string& out) {
    auto b = std::make_shared<Graph>();
    b->name = out;
    b->nodes.push_back(make_node(out + "_mm", "MatMul", {"h", w}, {out}));
    b->outputs.push_back(ValueInfo{out, ValueType::tensor(ElemType::F32, std::vector<Dim>(2)), "", ""});
    Attribute a;
    a.name = out == "then_out" ? "then_branch" : "else_branch";
    a.type = Attribute::Type::Graph;
    a.graphs.push_back(b);
    return a;
  };
  Node iff = make_node("if", "If", {"cond"}, {"y"});
  iff.attributes.push_back(branch("then.weight", "then_out"));
  iff.attributes.push_back(branch("else.weight", "else_out"));
  g.nodes.push_back(iff);
  Model m = orig;
  PassResult r = quantize(m, {{"bits", Value::of_int(8)}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.metrics.at("quantized_weights") == 1);
  CHECK(m.tensor("fc1.weight") == nullptr);
  CHECK(m.tensor("then.weight") != nullptr);  // read from inside the If body
  bool noted = false;
  for (const std::string& n : r.notes) noted |= n.find("subgraph bodies") != std::string::npos;
  CHECK(noted);
  expect_ort_close(emit(orig, "if_f32.onnx"), emit(m, "if_dq8.onnx"), 0.99);
}

TEST_CASE("quantize-weights: K not a multiple of the block size", "[quantize-weights]") {
  Model orig = mlp({40, 24, 8}, 5);
  fs::path a = emit(orig, "mlp_k40.onnx");
  for (const char* fmt : {"dq", "matmulnbits"}) {
    DYNAMIC_SECTION(fmt) {
      Model m = orig;
      PassResult r = quantize(
          m,
          {{"bits", Value::of_int(4)}, {"block_size", Value::of_int(16)}, {"format", Value::of_string(fmt)}});
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      CHECK(r.metrics.at("quantized_weights") == 2);
      fs::path b = emit(m, std::string("mlp_k40_") + fmt + ".onnx");
      expect_ort_close(a, b, 0.95);
    }
  }
}

TEST_CASE("quantize-weights: Gemm with transB in both formats", "[quantize-weights]") {
  Model orig = gemm_model();
  fs::path a = emit(orig, "gemm_f32.onnx");
  SECTION("default op_types leave Gemm alone") {
    Model m = orig;
    PassResult r = quantize(m, {});
    REQUIRE(r.status.ok);
    CHECK_FALSE(r.changed);
    CHECK(r.metrics.at("quantized_weights") == 0);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0] == "no MatMul node in the model's top-level graph; nothing was quantized");
    CHECK(q::count_ops(*m.graph, "Gemm") == 2);
  }
  for (const char* fmt : {"dq", "matmulnbits"}) {
    DYNAMIC_SECTION(fmt) {
      Model m = orig;
      PassResult r = quantize(m, {{"bits", Value::of_int(4)},
                                  {"block_size", Value::of_int(32)},
                                  {"format", Value::of_string(fmt)},
                                  {"op_types", list_of({"Gemm"})}});
      INFO(r.status.message);
      REQUIRE(r.status.ok);
      CHECK(r.metrics.at("quantized_weights") == 2);
      const Graph& g = *m.graph;
      if (std::string(fmt) == "dq") {
        CHECK(q::count_ops(g, "Gemm") == 2);
        CHECK(q::count_ops(g, "DequantizeLinear") == 2);
        // transB weight [N, K] = [96, 64]: blocks run along axis 1.
        const Node* dq = find_op(g, "DequantizeLinear");
        CHECK(dq->attr("axis")->i == 1);
        CHECK(m.tensor(dq->inputs[1])->shape == std::vector<int64_t>{96, 2});
      } else {
        CHECK(q::count_ops(g, "Gemm") == 0);
        CHECK(q::count_ops(g, "MatMulNBits", "com.microsoft") == 2);
        CHECK(q::count_ops(g, "Add") == 2);  // Gemm's C
      }
      fs::path b = emit(m, std::string("gemm_") + fmt + ".onnx");
      expect_ort_close(a, b, 0.95);
    }
  }
}

TEST_CASE("quantize-weights: Gemm with alpha or transA: dq only", "[quantize-weights]") {
  Model orig = gemm_model(12);
  for (Node& n : orig.graph->nodes) {
    if (n.name == "g2") n.attributes.push_back(Attribute::of_float("alpha", 0.5f));
  }
  Model nb = orig;
  PassResult r = quantize(nb, {{"format", Value::of_string("matmulnbits")}, {"op_types", list_of({"Gemm"})}});
  REQUIRE(r.status.ok);
  CHECK(r.metrics.at("quantized_weights") == 1);
  const Skipped* g2 = skip_of(r, "node 'g2'");
  REQUIRE(g2);
  CHECK_THAT(g2->reason, Contains("alpha or beta other than 1"));
  Model dq = orig;
  r = quantize(dq, {{"bits", Value::of_int(8)}, {"op_types", list_of({"Gemm"})}});
  REQUIRE(r.status.ok);
  CHECK(r.metrics.at("quantized_weights") == 2);
  fs::path a = emit(orig, "gemm_alpha_f32.onnx");
  for (const auto& mb :
       {std::make_pair(&nb, "gemm_alpha_nbits.onnx"), std::make_pair(&dq, "gemm_alpha_dq.onnx")}) {
    expect_ort_close(a, emit(*mb.first, mb.second), 0.95);
  }
}

TEST_CASE("quantize-weights: weights ORT leaves alone are skipped with a reason", "[quantize-weights]") {
  Model m = mlp({32, 32, 32, 8});
  Graph& g = *m.graph;
  // fc1.weight also a graph input (overridable); fc2 computed through a Transpose
  // of an initializer; fc3 excluded by name.
  ValueInfo wi;
  wi.name = "fc1.weight";
  wi.type = ValueType::tensor(ElemType::F32, std::vector<int64_t>{32, 32});
  g.inputs.push_back(wi);
  g.nodes.insert(g.nodes.begin(), make_node("tr", "Transpose", {"fc2.weight"}, {"fc2_wt"}));
  for (Node& n : g.nodes)
    if (n.name == "fc2") n.inputs[1] = "fc2_wt";
  PassResult r = quantize(m, {{"exclude_nodes", list_of({"fc3"})}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK_FALSE(r.changed);
  REQUIRE(r.skipped.size() == 3);
  CHECK(r.skipped[0].reason ==
        "weight is an initializer that is also a graph input (overridable at run time)");
  CHECK_THAT(r.skipped[0].what, Contains("node 'fc1' (MatMul)") && Contains("ir_version 7"));
  CHECK(r.skipped[1].reason == "weight is not a constant");
  CHECK_THAT(r.skipped[1].what,
             Contains("node 'fc2' (MatMul)") && Contains("computed by node 'tr' (Transpose)"));
  CHECK(r.skipped[2].reason == "listed in exclude_nodes");
  CHECK(r.skipped[2].what == "node 'fc3' (MatMul)");
  CHECK(r.metrics.at("skipped_nodes") == 3);
  // Nothing quantized: the pass says why, once, by reason.
  REQUIRE(r.warnings.size() == 1);
  CHECK(
      r.warnings[0] ==
      "3 MatMul nodes, all skipped: weight is an initializer that is also a graph input (overridable at run "
      "time) (1); weight is not a constant (1); listed in exclude_nodes (1)");
  CHECK(m.tensor("fc1.weight")->type == ElemType::F32);

  SECTION("min_elements") {
    Model small = mlp({16, 8, 4});
    PassResult s = quantize(small, {{"min_elements", Value::of_int(100)}});
    REQUIRE(s.status.ok);
    CHECK(s.metrics.at("quantized_weights") == 1);  // 16x8 = 128 quantized, 8x4 = 32 skipped
    const Skipped* fc2 = skip_of(s, "node 'fc2'");
    REQUIRE(fc2);
    CHECK(fc2->reason == "weight has fewer elements than min_elements = 100");
    CHECK_THAT(fc2->what, Contains("'fc2.weight' has 32"));
  }
}

TEST_CASE("quantize-weights: a shared weight is quantized once", "[quantize-weights]") {
  Model m = empty_model();
  Graph& g = *m.graph;
  add_io(g, "x", 32, "y", 32);
  Rng rng(9);
  m.tensors.push_back(rand_tensor("w", {32, 32}, rng, 0.2f));
  g.nodes.push_back(make_node("a", "MatMul", {"x", "w"}, {"h"}));
  g.nodes.push_back(make_node("b", "MatMul", {"h", "w"}, {"y"}));
  Model orig = m;
  for (const char* fmt : {"dq", "matmulnbits"}) {
    DYNAMIC_SECTION(fmt) {
      Model mm = orig;
      PassResult r = quantize(mm, {{"format", Value::of_string(fmt)}, {"block_size", Value::of_int(16)}});
      REQUIRE(r.status.ok);
      CHECK(r.metrics.at("quantized_weights") == 1);
      CHECK(r.metrics.at("quantized_nodes") == 2);
      CHECK(q::count_ops(*mm.graph, "DequantizeLinear") == (std::string(fmt) == "dq" ? 1u : 0u));
      expect_ort_close(emit(orig, "shared_f32.onnx"), emit(mm, std::string("shared_") + fmt + ".onnx"), 0.95);
    }
  }
}

TEST_CASE("quantize-weights: output is deterministic", "[quantize-weights]") {
  Model orig = mlp({64, 96, 16});
  Model a = orig, b = orig;
  Options o{{"format", Value::of_string("matmulnbits")}, {"symmetric", Value::of_bool(false)}};
  REQUIRE(quantize(a, o).status.ok);
  REQUIRE(quantize(b, o).status.ok);
  CHECK(file_bytes(emit(a, "det_a.onnx")) == file_bytes(emit(b, "det_b.onnx")));
  Model c = orig, d = orig;
  REQUIRE(quantize(c, {{"bits", Value::of_int(4)}, {"block_size", Value::of_int(32)}}).status.ok);
  REQUIRE(quantize(d, {{"bits", Value::of_int(4)}, {"block_size", Value::of_int(32)}}).status.ok);
  CHECK(file_bytes(emit(c, "det_c.onnx")) == file_bytes(emit(d, "det_d.onnx")));
}

TEST_CASE("quantize-weights: bad options and unsupported models fail clearly", "[quantize-weights]") {
  Model m = mlp({32, 32, 8});
  auto fails = [&](Options o, const std::string& what) {
    check_fails(passes::quantize_weights_pass_info(), m, std::move(o), what);
  };
  fails({{"bits", Value::of_int(5)}}, "'bits' must be 4 or 8, found 5");
  fails({{"format", Value::of_string("matmulnbits")}, {"block_size", Value::of_int(0)}},
        "per-channel quantization needs format = 'dq'");
  fails({{"format", Value::of_string("matmulnbits")}, {"block_size", Value::of_int(24)}},
        "block_size 16, 32, 64, 128 or 256");
  fails({{"block_size", Value::of_int(-1)}}, "'block_size' must be 0");
  fails({{"op_types", list_of({"MatMul", "Conv"})}}, "op type 'Conv'");
  fails({{"accuracy_level", Value::of_int(2)}}, "applies to format 'matmulnbits'");
  fails({{"bits", Value::of_string("4")}}, "'bits' of pass 'quantize-weights' must be an integer");

  SECTION("no graph") { check_fails_without_graph(passes::quantize_weights_pass_info(), "tiny.gguf"); }
  SECTION("opset 21 conflicts with a ReduceMean axes attribute") {
    Model x = mlp({32, 32, 8});
    Graph& g = *x.graph;
    g.outputs.push_back(ValueInfo{"mean", ValueType::tensor(ElemType::F32, std::vector<Dim>{}), "", ""});
    Node rm = make_node("reduce", "ReduceMean", {"y"}, {"mean"});
    rm.attributes.push_back(Attribute::of_ints("axes", {1}));
    g.nodes.push_back(rm);
    PassResult r = quantize(x, {{"bits", Value::of_int(4)}, {"block_size", Value::of_int(16)}});
    CHECK_FALSE(r.status.ok);
    CHECK_THAT(r.status.message,
               Contains("node 'reduce' (ReduceMean)") && Contains("opset 18") && Contains("from 13 to 21"));
    CHECK(x.graph->opset() == 13);
    // 8-bit per channel needs only opset 13: fine.
    PassResult ok = quantize(x, {{"bits", Value::of_int(8)}});
    CHECK(ok.status.ok);
  }
}

TEST_CASE("quantize-weights: registered through the built-in plugin", "[quantize-weights][plugin]") {
  // The built-ins go through the plugin host as a shared library would; the
  // pass found in the registry is the one the plugin registered.
  Registry registry;
  PluginHost host(registry);
  register_builtins(host);
  const PassInfo* info = registry.pass("quantize-weights");
  REQUIRE(info);
  CHECK(registry.origin_of_pass("quantize-weights") == "quantize-weights");
  bool listed = false;
  for (const PluginRecord& p : registry.plugins())
    listed |= p.name == "quantize-weights" && p.path == "<built-in>";
  CHECK(listed);
  CHECK(info->needs_graph);
  REQUIRE(info->factory);
  REQUIRE(info->validate);
  // Its factory makes a working pass.
  Model m = mlp({32, 16, 8});
  PassResult r = run_pass(*info, m, {{"bits", Value::of_int(8)}});
  INFO(r.status.message);
  REQUIRE(r.status.ok);
  CHECK(r.changed);
  CHECK(r.metrics.at("quantized_weights") == 2);
  CHECK(q::count_ops(*m.graph, "DequantizeLinear") == 2);
}

TEST_CASE("quantize-weights: the schema declares the option constraints plan checks", "[quantize-weights]") {
  const PassInfo info = passes::quantize_weights_pass_info();
  auto spec = [&](const std::string& name) -> const OptionSpec& {
    for (const OptionSpec& s : info.options)
      if (s.name == name) return s;
    FAIL("no option " << name);
    throw 0;
  };
  CHECK(spec("bits").int_choices == std::vector<int64_t>{4, 8});
  CHECK(spec("accuracy_level").has_min);
  CHECK(spec("accuracy_level").min == 0);
  CHECK(spec("accuracy_level").has_max);
  CHECK(spec("accuracy_level").max == 4);
  CHECK(spec("block_size").has_min);
  CHECK(spec("block_size").min == 0);
  CHECK_FALSE(spec("block_size").has_max);
  CHECK(spec("min_elements").has_min);
  CHECK(spec("min_elements").min == 0);
  CHECK(spec("format").choices == std::vector<std::string>{"dq", "matmulnbits"});
}

TEST_CASE("quantize-weights: the validate hook refuses option combinations, never throws",
          "[quantize-weights]") {
  const PassInfo info = passes::quantize_weights_pass_info();
  REQUIRE(info.validate);
  auto problems = [&](Options o) { return info.validate(o); };
  const Value nbits = Value::of_string("matmulnbits"), dq = Value::of_string("dq");
  // Fine combinations.
  CHECK(problems({}).empty());
  CHECK(problems({{"format", nbits}, {"block_size", Value::of_int(64)}, {"accuracy_level", Value::of_int(4)}})
            .empty());
  CHECK(problems({{"format", dq}, {"block_size", Value::of_int(0)}}).empty());
  CHECK(problems({{"format", dq}, {"block_size", Value::of_int(24)}}).empty());  // any size >= 2 for dq
  // matmulnbits needs one of ORT's block sizes.
  for (int64_t bs : {0, 1, 8, 24, 512}) {
    auto p = problems({{"format", nbits}, {"block_size", Value::of_int(bs)}});
    REQUIRE(p.size() == 1);
    CHECK(p[0].option == "block_size");
    CHECK_THAT(p[0].message, Contains("block_size 16, 32, 64, 128 or 256") && Contains(std::to_string(bs)));
  }
  CHECK_THAT(problems({{"format", nbits}, {"block_size", Value::of_int(0)}})[0].message,
             Contains("per-channel quantization needs format = 'dq'"));
  // dq refuses block_size 1.
  auto one = problems({{"format", dq}, {"block_size", Value::of_int(1)}});
  REQUIRE(one.size() == 1);
  CHECK(one[0].option == "block_size");
  // accuracy_level belongs to matmulnbits, also when format is left at its default.
  for (const Options& o : {Options{{"accuracy_level", Value::of_int(2)}},
                           Options{{"format", dq}, {"accuracy_level", Value::of_int(2)}}}) {
    auto p = problems(o);
    REQUIRE(p.size() == 1);
    CHECK(p[0].option == "accuracy_level");
    CHECK_THAT(p[0].message, Contains("applies to format 'matmulnbits' only"));
  }
  // Two problems at once are both reported.
  CHECK(problems({{"format", nbits}, {"block_size", Value::of_int(3)}}).size() == 1);
  CHECK(problems({{"block_size", Value::of_int(1)}, {"accuracy_level", Value::of_int(0)}}).size() == 2);
  // A wrong kind of value (the schema check reports it) does not throw.
  std::vector<OptionProblem> wrong;
  CHECK_NOTHROW(wrong = problems({{"format", nbits}, {"block_size", Value::of_string("32")}}));
  REQUIRE(wrong.size() == 1);
  CHECK_THAT(wrong[0].message, Contains("'block_size' of pass 'quantize-weights' must be an integer"));
  // The run-time check says the same as the hook, located at the option.
  Model m = mlp({32, 8});
  Options bad{{"format", nbits}, {"block_size", Value::of_int(24)}};
  bad["block_size"].loc.file = "qforge.toml";
  bad["block_size"].loc.line = 7;
  bad["block_size"].loc.column = 40;
  PassResult r = quantize(m, bad);
  CHECK_FALSE(r.status.ok);
  CHECK_THAT(r.status.message, Contains("qforge.toml:7:40: ") && Contains(problems(bad)[0].message));
}
