// The cpu executor's reductions, normalizations, Einsum and Resize
// (executors/cpu/ops_reduce.cc, ops_norm.cc, ops_einsum.cc, ops_resize.cc)
// on what ONNX's node tests (tests/executor_conformance_test.cc) leave out:
// opsets the test data does not reach, the coercion of old Softmax, Einsum's
// repeated labels and broadcasting '...', Resize modes on a small image.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "qforge/executor.h"
#include "qforge/graph.h"
#include "qforge/plugin_host.h"
#include "qforge/registry.h"

using namespace qforge;
using Catch::Matchers::Contains;

namespace {

template <class T>
RunValue tensor(ElemType type, std::vector<int64_t> shape, std::vector<T> data) {
  RunValue v;
  v.type = type;
  v.shape = std::move(shape);
  v.data = make_blob(data.data(), data.size() * sizeof(T));
  return v;
}
RunValue f32(std::vector<int64_t> shape, std::vector<float> data) {
  return tensor<float>(ElemType::F32, std::move(shape), std::move(data));
}
RunValue i64(std::vector<int64_t> shape, std::vector<int64_t> data) {
  return tensor<int64_t>(ElemType::I64, std::move(shape), std::move(data));
}

template <class T>
std::vector<T> values(const RunValue& v) {
  std::vector<T> out(v.numel());
  std::memcpy(out.data(), v.data->data(), out.size() * sizeof(T));
  return out;
}

// One node of `op` at `opset`; inputs named i0, i1, ... (an input without a
// value is left out: ""), outputs o0, o1, ...
struct NodeRun {
  std::string op;
  int64_t opset = 13;
  std::vector<Attribute> attrs;
  std::vector<std::optional<RunValue>> inputs;
  size_t outputs = 1;

  Status run(NamedValues& out) const {
    Registry registry;
    PluginHost host(registry);
    register_builtins(host);
    const Executor* e = registry.executor("cpu");
    REQUIRE(e);
    Model m;
    m.format = "onnx";
    m.source = op + ".onnx";
    m.graph = std::make_shared<Graph>();
    Graph& g = *m.graph;
    g.name = op;
    g.model.opset_imports = {{"", opset}};
    std::vector<std::string> in_names, out_names;
    NamedValues feed;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i]) {
        in_names.emplace_back();
        continue;
      }
      const std::string name = "i" + std::to_string(i);
      in_names.push_back(name);
      ValueInfo vi;
      vi.name = name;
      vi.type.kind = ValueType::Kind::Tensor;
      vi.type.elem = inputs[i]->type;
      g.inputs.push_back(vi);
      feed.emplace_back(name, *inputs[i]);
    }
    for (size_t i = 0; i < outputs; ++i) {
      out_names.push_back("o" + std::to_string(i));
      ValueInfo vi;
      vi.name = out_names.back();
      vi.type.kind = ValueType::Kind::Tensor;
      g.outputs.push_back(vi);
    }
    Node n = make_node("n", op, in_names, out_names);
    n.attributes = attrs;
    g.nodes.push_back(n);
    std::unique_ptr<PreparedModel> pm;
    Status st = e->prepare(m, {}, pm);
    if (!st.ok) return st;
    return pm->run(feed, out);
  }

  // Output 0 (after checking the run succeeded).
  RunValue one() const {
    NamedValues out;
    const Status st = run(out);
    INFO(st.message);
    REQUIRE(st.ok);
    REQUIRE(!out.empty());
    return out[0].second;
  }
};

void check_close(const std::vector<float>& got, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": " << got[i] << " vs " << want[i]);
    CHECK(std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i])));
  }
}

std::vector<float> iota_f(size_t n, float start = 0, float step = 1) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

}  // namespace

TEST_CASE("cpu executor: Softmax before opset 13 coerces to 2-D at axis, from 13 runs along one axis",
          "[executor][ops_reduce]") {
  const std::vector<float> x = iota_f(12, -1.0f, 0.25f);  // [2, 2, 3]
  for (const bool log : {false, true}) {
    // Opset 12, axis=1: each batch item's 6 values are one row.
    NodeRun r{log ? "LogSoftmax" : "Softmax", 12, {Attribute::of_int("axis", 1)}, {f32({2, 2, 3}, x)}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{2, 2, 3});
    std::vector<double> want(12);
    for (int b = 0; b < 2; ++b) {
      double mx = -1e30, sum = 0;
      for (int i = 0; i < 6; ++i) mx = std::max<double>(mx, x[b * 6 + i]);
      for (int i = 0; i < 6; ++i) sum += std::exp(x[b * 6 + i] - mx);
      for (int i = 0; i < 6; ++i)
        want[b * 6 + i] = log ? x[b * 6 + i] - mx - std::log(sum) : std::exp(x[b * 6 + i] - mx) / sum;
    }
    check_close(values<float>(y), want);
    // Opset 13, axis=1: along the middle axis only (pairs of 2).
    r.opset = 13;
    const std::vector<float> y13 = values<float>(r.one());
    for (int b = 0; b < 2; ++b)
      for (int k = 0; k < 3; ++k) {
        const float a = x[b * 6 + k], c = x[b * 6 + 3 + k];
        const double mx = std::max(a, c), lse = mx + std::log(std::exp(a - mx) + std::exp(c - mx));
        check_close({y13[b * 6 + k], y13[b * 6 + 3 + k]},
                    {log ? a - lse : std::exp(a - lse), log ? c - lse : std::exp(c - lse)});
      }
  }
  // Opset 11 default axis is 1; opset 13's is -1.
  NodeRun d{"Softmax", 11, {}, {f32({2, 3}, {1, 2, 3, 1, 1, 1})}};
  check_close(values<float>(d.one()), {0.0900306, 0.2447285, 0.6652410, 1 / 3.0, 1 / 3.0, 1 / 3.0});
}

TEST_CASE("cpu executor: Reduce* with axes as attribute or input, keepdims, noop_with_empty_axes, empty sets",
          "[executor][ops_reduce]") {
  const RunValue x = f32({2, 3, 2}, iota_f(12, 1));  // 1..12
  SECTION("axes attribute (opset 13), the middle axis with the innermost kept") {
    NodeRun r{"ReduceMean", 13, {Attribute::of_ints("axes", {1})}, {x}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{2, 1, 2});
    check_close(values<float>(y), {3, 4, 9, 10});
    r.op = "ReduceMax";
    r.attrs.push_back(Attribute::of_int("keepdims", 0));
    const RunValue m = r.one();
    CHECK(m.shape == std::vector<int64_t>{2, 2});
    check_close(values<float>(m), {5, 6, 11, 12});
  }
  SECTION("axes input (opset 18), negative, several") {
    NodeRun r{"ReduceSum", 18, {}, {x, i64({2}, {0, -1})}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{1, 3, 1});
    check_close(values<float>(y), {1 + 2 + 7 + 8, 3 + 4 + 9 + 10, 5 + 6 + 11 + 12});
    r.op = "ReduceProd";
    check_close(values<float>(r.one()), {1 * 2 * 7 * 8, 3 * 4 * 9 * 10, 5 * 6 * 11 * 12});
    r.op = "ReduceL2";
    check_close(values<float>(r.one()), {std::sqrt(1 + 4 + 49 + 64.0), std::sqrt(9 + 16 + 81 + 100.0),
                                         std::sqrt(25 + 36 + 121 + 144.0)});
    r.op = "ReduceMin";
    check_close(values<float>(r.one()), {1, 3, 5});
  }
  SECTION("ReduceL1, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp") {
    NodeRun r{"ReduceL1",
              13,
              {Attribute::of_ints("axes", {1}), Attribute::of_int("keepdims", 0)},
              {f32({2, 3, 2}, iota_f(12, -5))}};
    // x = -5..6: [[-5,-4],[-3,-2],[-1,0]], [[1,2],[3,4],[5,6]]
    check_close(values<float>(r.one()), {9, 6, 9, 12});
    r.op = "ReduceSumSquare";
    check_close(values<float>(r.one()), {35, 20, 35, 56});
    r.op = "ReduceLogSum";
    r.inputs[0] = x;
    check_close(values<float>(r.one()), {std::log(9.0), std::log(12.0), std::log(27.0), std::log(30.0)});
    r.op = "ReduceLogSumExp";
    auto lse = [](double a, double b, double c) { return std::log(std::exp(a) + std::exp(b) + std::exp(c)); };
    check_close(values<float>(r.one()), {lse(1, 3, 5), lse(2, 4, 6), lse(7, 9, 11), lse(8, 10, 12)});
    NodeRun big{"ReduceLogSumExp", 18, {}, {f32({2}, {1000, 1000}), i64({1}, {0})}};
    check_close(values<float>(big.one()), {1000 + std::log(2.0)});
  }
  SECTION("no axes: everything, or nothing with noop_with_empty_axes") {
    NodeRun r{"ReduceMean", 18, {}, {x}};
    const RunValue all = r.one();
    CHECK(all.shape == std::vector<int64_t>{1, 1, 1});
    check_close(values<float>(all), {6.5});
    r.attrs.push_back(Attribute::of_int("noop_with_empty_axes", 1));
    const RunValue same = r.one();
    CHECK(same.shape == x.shape);
    CHECK(values<float>(same) == values<float>(x));
    // ReduceSum has the input from 13; an empty axes tensor counts as none.
    NodeRun s{"ReduceSum", 13, {Attribute::of_int("keepdims", 0)}, {x, i64({0}, {})}};
    const RunValue total = s.one();
    CHECK(total.shape.empty());
    check_close(values<float>(total), {78});
  }
  SECTION("integers, and an axis of size 0") {
    NodeRun r{"ReduceSum", 13, {}, {i64({2, 2}, {1, 2, 3, 4}), i64({1}, {1})}};
    CHECK(values<int64_t>(r.one()) == std::vector<int64_t>{3, 7});
    r.op = "ReduceMax";
    r.opset = 18;
    CHECK(values<int64_t>(r.one()) == std::vector<int64_t>{2, 4});
    const RunValue empty = f32({2, 0}, {});
    NodeRun e{"ReduceSum", 18, {}, {empty, i64({1}, {1})}};
    CHECK(values<float>(e.one()) == std::vector<float>{0, 0});
    e.op = "ReduceProd";
    CHECK(values<float>(e.one()) == std::vector<float>{1, 1});
    e.op = "ReduceMax";
    CHECK(values<float>(e.one()) == std::vector<float>{-INFINITY, -INFINITY});
    // bool from opset 20: any / all.
    NodeRun b{"ReduceMax", 20, {}, {tensor<uint8_t>(ElemType::Bool, {2, 2}, {0, 1, 1, 1}), i64({1}, {1})}};
    CHECK(values<uint8_t>(b.one()) == std::vector<uint8_t>{1, 1});
    b.op = "ReduceMin";
    CHECK(values<uint8_t>(b.one()) == std::vector<uint8_t>{0, 1});
  }
  SECTION("a repeated axis and an unsupported type are errors") {
    NodeRun r{"ReduceSum", 18, {}, {x, i64({2}, {1, -2})}};
    NamedValues out;
    Status st = r.run(out);
    REQUIRE_FALSE(st.ok);
    CHECK_THAT(st.message, Contains("axes repeat axis 1"));
    NodeRun b{"ReduceMax", 18, {}, {tensor<uint8_t>(ElemType::Bool, {2}, {0, 1})}};  // bool from 20
    st = b.run(out);
    REQUIRE_FALSE(st.ok);
    CHECK_THAT(st.message, Contains("not supported"));
  }
}

TEST_CASE("cpu executor: ArgMax/ArgMin (select_last_index), TopK ties, CumSum exclusive and reverse",
          "[executor][ops_reduce]") {
  const RunValue x = tensor<int32_t>(ElemType::I32, {2, 4}, {3, 1, 3, 2, 0, 0, -1, -1});
  NodeRun a{"ArgMax", 13, {Attribute::of_int("axis", 1), Attribute::of_int("keepdims", 0)}, {x}};
  RunValue y = a.one();
  CHECK(y.type == ElemType::I64);
  CHECK(y.shape == std::vector<int64_t>{2});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{0, 0});
  a.attrs.push_back(Attribute::of_int("select_last_index", 1));
  CHECK(values<int64_t>(a.one()) == std::vector<int64_t>{2, 1});
  a.op = "ArgMin";
  CHECK(values<int64_t>(a.one()) == std::vector<int64_t>{1, 3});

  // TopK: equal values keep the lower index first, largest and smallest.
  NodeRun t{"TopK", 11, {}, {x, i64({1}, {2})}, 2};
  NamedValues out;
  Status st = t.run(out);
  INFO(st.message);
  REQUIRE(st.ok);
  CHECK(values<int32_t>(out[0].second) == std::vector<int32_t>{3, 3, 0, 0});
  CHECK(values<int64_t>(out[1].second) == std::vector<int64_t>{0, 2, 0, 1});
  t.attrs = {Attribute::of_int("largest", 0), Attribute::of_int("axis", 0)};
  t.inputs[1] = i64({1}, {1});
  REQUIRE(t.run(out).ok);
  CHECK(values<int32_t>(out[0].second) == std::vector<int32_t>{0, 0, -1, -1});
  CHECK(values<int64_t>(out[1].second) == std::vector<int64_t>{1, 1, 1, 1});
  t.inputs[1] = i64({1}, {3});
  st = t.run(out);
  REQUIRE_FALSE(st.ok);
  CHECK_THAT(st.message, Contains("K=3 is out of range"));

  // CumSum along axis 0 of [3, 2]: exclusive, reverse, both.
  const RunValue c = f32({3, 2}, {1, 2, 3, 4, 5, 6});
  NodeRun s{"CumSum", 14, {}, {c, i64({}, {0})}};
  CHECK(values<float>(s.one()) == std::vector<float>{1, 2, 4, 6, 9, 12});
  s.attrs = {Attribute::of_int("exclusive", 1)};
  CHECK(values<float>(s.one()) == std::vector<float>{0, 0, 1, 2, 4, 6});
  s.attrs = {Attribute::of_int("reverse", 1)};
  CHECK(values<float>(s.one()) == std::vector<float>{9, 12, 8, 10, 5, 6});
  s.attrs = {Attribute::of_int("reverse", 1), Attribute::of_int("exclusive", 1)};
  CHECK(values<float>(s.one()) == std::vector<float>{8, 10, 5, 6, 0, 0});
}

TEST_CASE("cpu executor: Einsum with repeated labels, implicit output, three operands and broadcasting '...'",
          "[executor][ops_gather]") {
  const std::vector<float> m = iota_f(9, 1);  // [[1,2,3],[4,5,6],[7,8,9]]
  SECTION("a diagonal and a trace") {
    NodeRun d{"Einsum", 12, {Attribute::of_string("equation", "ii->i")}, {f32({3, 3}, m)}};
    CHECK(values<float>(d.one()) == std::vector<float>{1, 5, 9});
    NodeRun tr{"Einsum", 12, {Attribute::of_string("equation", "ii")}, {f32({3, 3}, m)}};
    const RunValue t = tr.one();
    CHECK(t.shape.empty());
    CHECK(values<float>(t) == std::vector<float>{15});
    // A repeated label with a third one kept: x[i, i, j] -> [i, j].
    NodeRun dj{"Einsum", 12, {Attribute::of_string("equation", "iij->ji")}, {f32({2, 2, 2}, iota_f(8))}};
    CHECK(values<float>(dj.one()) == std::vector<float>{0, 6, 1, 7});
  }
  SECTION("implicit output: labels seen once, alphabetically") {
    NodeRun r{
        "Einsum", 12, {Attribute::of_string("equation", "ij,jk")}, {f32({2, 3}, iota_f(6)), f32({3, 3}, m)}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{2, 3});
    CHECK(values<float>(y) == std::vector<float>{18, 21, 24, 54, 66, 78});
    NodeRun t{"Einsum", 12, {Attribute::of_string("equation", "ba")}, {f32({2, 3}, iota_f(6))}};
    CHECK(t.one().shape == std::vector<int64_t>{3, 2});
    // Upper-case letters are labels too (and sort before lower case).
    NodeRun u{"Einsum", 12, {Attribute::of_string("equation", "aZ")}, {f32({2, 3}, iota_f(6))}};
    const RunValue ut = u.one();
    CHECK(ut.shape == std::vector<int64_t>{3, 2});
    CHECK(values<float>(ut) == std::vector<float>{0, 3, 1, 4, 2, 5});
  }
  SECTION("three operands, and a label summed inside one operand") {
    NodeRun r{"Einsum",
              12,
              {Attribute::of_string("equation", "ij,jk,kl->il")},
              {f32({1, 2}, {1, 2}), f32({2, 2}, {1, 0, 0, 1}), f32({2, 1}, {3, 4})}};
    CHECK(values<float>(r.one()) == std::vector<float>{11});
    NodeRun s{"Einsum",
              12,
              {Attribute::of_string("equation", "ij,k->k")},
              {f32({2, 2}, {1, 2, 3, 4}), f32({2}, {1, 2})}};
    CHECK(values<float>(s.one()) == std::vector<float>{10, 20});
  }
  SECTION("'...' broadcasts batch dimensions") {
    // [2, 1, 2, 3] x [3, 3, 1] -> [2, 3, 2, 1]
    const std::vector<float> a = iota_f(12), b = iota_f(9, 1);
    NodeRun r{"Einsum",
              12,
              {Attribute::of_string("equation", "...ij,...jk->...ik")},
              {f32({2, 1, 2, 3}, a), f32({3, 3, 1}, b)}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{2, 3, 2, 1});
    std::vector<double> want;
    for (int p = 0; p < 2; ++p)
      for (int q = 0; q < 3; ++q)
        for (int i = 0; i < 2; ++i) {
          double s = 0;
          for (int j = 0; j < 3; ++j) s += a[p * 6 + i * 3 + j] * b[q * 3 + j];
          want.push_back(s);
        }
    check_close(values<float>(y), want);
    // Implicit output with '...': the ellipsis first.
    NodeRun t{"Einsum", 12, {Attribute::of_string("equation", "...ij->...ji")}, {f32({2, 1, 2, 3}, a)}};
    CHECK(t.one().shape == std::vector<int64_t>{2, 1, 3, 2});
  }
  SECTION("float64 and int64 operands") {
    NodeRun d{
        "Einsum",
        12,
        {Attribute::of_string("equation", "ij,jk->ik")},
        {tensor<double>(ElemType::F64, {1, 2}, {0.5, 2}), tensor<double>(ElemType::F64, {2, 1}, {4, 0.25})}};
    const RunValue y = d.one();
    CHECK(y.type == ElemType::F64);
    CHECK(values<double>(y) == std::vector<double>{2.5});
    NodeRun t{"Einsum", 12, {Attribute::of_string("equation", "ii")}, {i64({2, 2}, {1, 2, 3, 4})}};
    CHECK(values<int64_t>(t.one()) == std::vector<int64_t>{5});
  }
  SECTION("errors") {
    NodeRun r{"Einsum",
              12,
              {Attribute::of_string("equation", "ij,jk->ik")},
              {f32({2, 3}, iota_f(6)), f32({2, 2}, iota_f(4))}};
    NamedValues out;
    const Status st = r.run(out);
    REQUIRE_FALSE(st.ok);
    CHECK_THAT(st.message, Contains("index 'j' has different sizes"));
  }
}

TEST_CASE(
    "cpu executor: LayerNormalization's axis, broadcast Scale, Mean and InvStdDev, BatchNormalization "
    "in both modes",
    "[executor][ops_norm]") {
  const std::vector<float> xv = {1, 2, 3, 4, 5, 6, -1, 0, 1, 2, 3, 10};
  NodeRun r{"LayerNormalization",
            17,
            {Attribute::of_int("axis", 1), Attribute::of_float("epsilon", 1e-3f)},
            {f32({2, 3, 2}, xv), f32({2}, {1, 2}), f32({2}, {0.5f, 0})},
            3};
  NamedValues out;
  Status st = r.run(out);
  INFO(st.message);
  REQUIRE(st.ok);
  REQUIRE(out.size() == 3);
  CHECK(out[1].second.shape == std::vector<int64_t>{2, 1, 1});
  std::vector<double> want, means, invs;
  for (int b = 0; b < 2; ++b) {
    double mean = 0, var = 0;
    for (int i = 0; i < 6; ++i) mean += xv[b * 6 + i] / 6.0;
    for (int i = 0; i < 6; ++i) var += (xv[b * 6 + i] - mean) * (xv[b * 6 + i] - mean) / 6.0;
    const double inv = 1 / std::sqrt(var + 1e-3);
    for (int i = 0; i < 6; ++i)
      want.push_back((xv[b * 6 + i] - mean) * inv * (i % 2 ? 2 : 1) + (i % 2 ? 0 : 0.5));
    means.push_back(mean);
    invs.push_back(inv);
  }
  check_close(values<float>(out[0].second), want);
  check_close(values<float>(out[1].second), means);
  check_close(values<float>(out[2].second), invs);

  // BatchNormalization: inference with the running statistics, training
  // with the batch's (and the running ones updated by momentum 0.9).
  const std::vector<float> c2 = {1, 1};
  const RunValue bx = f32({2, 2, 1}, {1, 2, 3, 6});
  NodeRun bn{"BatchNormalization", 15, {}, {bx, f32({2}, c2), f32({2}, c2), f32({2}, c2), f32({2}, c2)}};
  const double k = 1 / std::sqrt(1 + 1e-5);
  check_close(values<float>(bn.one()), {0 * k + 1, 1 * k + 1, 2 * k + 1, 5 * k + 1}, 1e-5);
  bn.attrs = {Attribute::of_int("training_mode", 1)};
  bn.outputs = 3;
  st = bn.run(out);
  INFO(st.message);
  REQUIRE(st.ok);
  // channel 0: {1, 3}, mean 2, var 1; channel 1: {2, 6}, mean 4, var 4
  check_close(values<float>(out[0].second), {-1 / std::sqrt(1 + 1e-5) + 1, -2 / std::sqrt(4 + 1e-5) + 1,
                                             1 / std::sqrt(1 + 1e-5) + 1, 2 / std::sqrt(4 + 1e-5) + 1});
  check_close(values<float>(out[1].second), {0.9 + 0.2, 0.9 + 0.4});
  check_close(values<float>(out[2].second), {0.9 + 0.1, 0.9 + 0.4});
}

TEST_CASE(
    "cpu executor: Resize modes on a small image, sizes with axes and aspect ratio, antialias, Upsample",
    "[executor][ops_resize]") {
  const RunValue img = f32({1, 1, 2, 2}, {1, 2, 3, 4});
  const std::optional<RunValue> none;
  auto attrs = [](std::string mode, std::string ctm) {
    return std::vector<Attribute>{Attribute::of_string("mode", std::move(mode)),
                                  Attribute::of_string("coordinate_transformation_mode", std::move(ctm))};
  };
  SECTION("nearest, asymmetric, x2") {
    NodeRun r{"Resize", 13, attrs("nearest", "asymmetric"), {img, none, f32({4}, {1, 1, 2, 2})}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{1, 1, 4, 4});
    CHECK(values<float>(y) == std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  }
  SECTION("linear, half_pixel, x2 (edges clamp)") {
    NodeRun r{"Resize", 13, attrs("linear", "half_pixel"), {img, none, f32({4}, {1, 1, 2, 2})}};
    check_close(values<float>(r.one()),
                {1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4});
  }
  SECTION("linear, align_corners, to sizes 3x3") {
    NodeRun r{"Resize", 13, attrs("linear", "align_corners"), {img, none, none, i64({4}, {1, 1, 3, 3})}};
    check_close(values<float>(r.one()), {1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  }
  SECTION("cubic reads the edge element past the edges; tf_crop_and_resize extrapolates outside the roi") {
    NodeRun r{"Resize",
              13,
              attrs("cubic", "align_corners"),
              {f32({1, 4}, {0, 1, 2, 3}), none, none, i64({2}, {1, 7})}};
    // (values from ONNX's reference implementation)
    check_close(values<float>(r.one()), {0, 0.40625, 1, 1.5, 2, 2.59375, 3}, 1e-5);
    std::vector<Attribute> a = attrs("linear", "tf_crop_and_resize");
    a.push_back(Attribute::of_float("extrapolation_value", -7));
    NodeRun c{
        "Resize", 13, a, {f32({1, 4}, {0, 1, 2, 3}), f32({4}, {0, -0.5f, 1, 1}), none, i64({2}, {1, 3})}};
    check_close(values<float>(c.one()), {-7, 0.75, 3});
  }
  SECTION("opset 18: axes, sizes with not_larger, antialias") {
    std::vector<Attribute> a = attrs("nearest", "asymmetric");
    a.push_back(Attribute::of_ints("axes", {2, 3}));
    a.push_back(Attribute::of_string("keep_aspect_ratio_policy", "not_larger"));
    NodeRun r{"Resize", 18, a, {f32({1, 1, 2, 4}, iota_f(8)), none, none, i64({2}, {2, 2})}};
    const RunValue y = r.one();
    CHECK(y.shape == std::vector<int64_t>{1, 1, 1, 2});  // scale min(1, 0.5)
    CHECK(values<float>(y) == std::vector<float>{0, 2});
    std::vector<Attribute> aa = attrs("linear", "half_pixel");
    aa.push_back(Attribute::of_int("antialias", 1));
    NodeRun s{"Resize", 18, aa, {f32({1, 4}, {1, 2, 3, 4}), none, f32({2}, {1, 0.5f})}};
    // The triangle filter widened to 4 taps: weights 1/8, 3/8, 3/8, 1/8.
    check_close(values<float>(s.one()), {1.625, 3.375});
  }
  SECTION("Resize-10 and Upsample: asymmetric nearest") {
    NodeRun r{"Resize", 10, {}, {f32({1, 4}, {1, 2, 3, 4}), f32({2}, {1, 0.6f})}};
    CHECK(values<float>(r.one()) == std::vector<float>{1, 3});  // shrinking rounds up
    NodeRun u{"Upsample", 7, {Attribute::of_floats("scales", {1, 2})}, {f32({1, 2}, {1, 2})}};
    CHECK(values<float>(u.one()) == std::vector<float>{1, 1, 2, 2});
    NodeRun u9{
        "Upsample", 9, {Attribute::of_string("mode", "linear")}, {f32({1, 2}, {1, 2}), f32({2}, {1, 2})}};
    CHECK(values<float>(u9.one()) == std::vector<float>{1, 1.5, 2, 2});
  }
  SECTION("unsupported values are errors") {
    NodeRun r{"Resize", 13, attrs("area", "half_pixel"), {img, none, f32({4}, {1, 1, 2, 2})}};
    NamedValues out;
    Status st = r.run(out);
    REQUIRE_FALSE(st.ok);
    CHECK_THAT(st.message, Contains("mode='area' is not supported"));
    NodeRun b{"Resize",
              13,
              attrs("nearest", "half_pixel"),
              {img, none, f32({4}, {1, 1, 2, 2}), i64({4}, {1, 1, 4, 4})}};
    st = b.run(out);
    REQUIRE_FALSE(st.ok);
    CHECK_THAT(st.message, Contains("exactly one of scales and sizes"));
  }
}

TEST_CASE(
    "cpu executor: the vectorized rows (Softmax, Reduce*, LayerNormalization) at odd lengths, -inf and NaN",
    "[executor][ops_reduce]") {
  SECTION("reductions over leading axes: column blocks, float partial sums per 64 rows") {
    for (const auto& shape : {std::vector<int64_t>{203, 37}, std::vector<int64_t>{70, 1100}}) {
      const int64_t rows = shape[0], cols = shape[1];
      std::vector<float> x(static_cast<size_t>(rows * cols));
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3;
      std::vector<double> sum(static_cast<size_t>(cols), 0.0), l1 = sum, ssq = sum;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const double v = x[static_cast<size_t>(r * cols + c)];
          sum[c] += v;
          l1[c] += std::fabs(v);
          ssq[c] += v * v;
        }
      NodeRun red{"ReduceSum", 13, {Attribute::of_int("keepdims", 0)}, {f32(shape, x), i64({1}, {0})}};
      check_close(values<float>(red.one()), sum, 1e-4);
      NodeRun l{"ReduceL1",
                13,
                {Attribute::of_ints("axes", {0}), Attribute::of_int("keepdims", 0)},
                {f32(shape, x)}};
      check_close(values<float>(l.one()), l1, 1e-5);
      l.op = "ReduceSumSquare";
      check_close(values<float>(l.one()), ssq, 1e-5);
    }
  }
  SECTION("Softmax and LogSoftmax along a strided axis: one lane per column") {
    const int64_t outer = 2, n = 5, inner = 37;
    std::vector<float> x(static_cast<size_t>(outer * n * inner));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.3f * static_cast<float>(i)) * 8;
    x[40] = -INFINITY;
    for (const bool log : {false, true}) {
      NodeRun r{
          log ? "LogSoftmax" : "Softmax", 13, {Attribute::of_int("axis", 1)}, {f32({outer, n, inner}, x)}};
      const std::vector<float> y = values<float>(r.one());
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          double mx = -INFINITY, sum = 0;
          for (int64_t i = 0; i < n; ++i) mx = std::max<double>(mx, x[(o * n + i) * inner + j]);
          for (int64_t i = 0; i < n; ++i) sum += std::exp(x[(o * n + i) * inner + j] - mx);
          for (int64_t i = 0; i < n; ++i) {
            const size_t at = static_cast<size_t>((o * n + i) * inner + j);
            const double want = log ? x[at] - mx - std::log(sum) : std::exp(x[at] - mx) / sum;
            INFO("at " << at);
            if (std::isinf(want))
              CHECK(y[at] == want);
            else
              CHECK(std::fabs(y[at] - want) <= 1e-5 * (1 + std::fabs(want)));
          }
        }
    }
  }
  for (const int64_t n : {1, 3, 7, 8, 17, 33, 100, 1027}) {
    INFO("row length " << n);
    std::vector<float> x(static_cast<size_t>(2 * n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7f * static_cast<float>(i)) * 5;
    if (n > 2) x[1] = -INFINITY;  // a masked position
    const RunValue v = f32({2, n}, x);
    std::vector<double> soft, lsoft, sum, l2, mx, mean, ln;
    for (int r = 0; r < 2; ++r) {
      const float* row = x.data() + r * n;
      double m = -INFINITY, s = 0, q = 0, e = 0;
      for (int64_t i = 0; i < n; ++i) m = std::max<double>(m, row[i]);
      for (int64_t i = 0; i < n; ++i) e += std::exp(row[i] - m);
      for (int64_t i = 0; i < n; ++i) {
        soft.push_back(std::exp(row[i] - m) / e);
        lsoft.push_back(row[i] - m - std::log(e));
      }
      if (r == 1) {
        for (int64_t i = 0; i < n; ++i) s += row[i], q += double(row[i]) * row[i];
        sum.push_back(s);
        l2.push_back(std::sqrt(q));
        mx.push_back(m);
        mean.push_back(s / n);
        double var = 0;
        for (int64_t i = 0; i < n; ++i) var += (row[i] - s / n) * (row[i] - s / n) / n;
        for (int64_t i = 0; i < n; ++i) ln.push_back((row[i] - s / n) / std::sqrt(var + 1e-5));
      }
    }
    NodeRun sm{"Softmax", 13, {}, {v}};
    check_close(values<float>(sm.one()), soft, 1e-5);
    sm.op = "LogSoftmax";
    const std::vector<float> lgot = values<float>(sm.one());
    if (n > 2) CHECK(lgot[1] == -INFINITY);
    for (size_t i = 0; i < lgot.size(); ++i)
      if (std::isfinite(lsoft[i])) CHECK(std::fabs(lgot[i] - lsoft[i]) <= 1e-4 * (1 + std::fabs(lsoft[i])));
    // Row 1 only (row 0 holds the -inf).
    const RunValue r1 = f32({1, n}, std::vector<float>(x.begin() + n, x.end()));
    NodeRun red{"ReduceSum", 13, {Attribute::of_int("keepdims", 0)}, {r1, i64({1}, {1})}};
    check_close(values<float>(red.one()), sum, 1e-4);
    red = NodeRun{"ReduceL2", 13, {Attribute::of_ints("axes", {1}), Attribute::of_int("keepdims", 0)}, {r1}};
    check_close(values<float>(red.one()), l2, 1e-5);
    red.op = "ReduceMax";
    check_close(values<float>(red.one()), mx, 0);
    red.op = "ReduceMean";
    check_close(values<float>(red.one()), mean, 1e-4);
    NodeRun lnr{
        "LayerNormalization", 17, {}, {r1, f32({n}, std::vector<float>(static_cast<size_t>(n), 1.0f))}};
    check_close(values<float>(lnr.one()), ln, 1e-4);
    // NaN anywhere in the row makes ReduceMax NaN.
    std::vector<float> withnan(x.begin() + n, x.end());
    withnan[static_cast<size_t>(n - 1)] = NAN;
    NodeRun nanr{"ReduceMax", 13, {Attribute::of_ints("axes", {1})}, {f32({1, n}, withnan)}};
    CHECK(std::isnan(values<float>(nanr.one())[0]));
  }
}
