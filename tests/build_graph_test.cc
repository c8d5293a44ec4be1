// The typed build graph: Tables made by one step and consumed by another,
// shared between targets and cached across builds; expensive intermediate
// models stored and loaded; step references; plan-time validation; warnings,
// skip summaries and --strict; the thread budget; lazy producer errors.
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "build_fixture.h"

namespace {

std::atomic<int> g_stats{0}, g_offsets{0}, g_slow{0};

std::vector<float> floats_of(const Tensor& t) {
  std::vector<float> v(t.numel());
  std::memcpy(v.data(), t.bytes()->data(), v.size() * 4);
  return v;
}

// A Table: each tensor's sum.
class Stats : public Pass {
 public:
  PassResult run(Model& m, PassContext&) override {
    PassResult r;
    ++g_stats;
    auto t = std::make_shared<Table>();
    t->schema = "sums/1";
    t->data.kind = Value::Kind::Table;
    for (const auto& tensor : m.tensors) {
      double sum = 0;
      for (float x : floats_of(tensor)) sum += x;
      t->data.table.emplace_back(tensor.name, Value::of_float(sum));
    }
    r.table = t;
    r.metrics["summed_tensors"] = static_cast<double>(m.tensors.size());
    return r;
  }
};

// x + k * (the tensor's sum, from the table).
class Offset : public Pass {
 public:
  PassResult run(Model& m, PassContext& ctx) override {
    PassResult r;
    ++g_offsets;
    const double k = ctx.options.at("k").f;
    const Table& sums = *ctx.tables.at(0);
    for (auto& t : m.tensors) {
      const Value* s = sums.data.find(t.name);
      if (!s) {
        r.status = Status::failure("no sum for tensor '" + t.name + "'");
        return r;
      }
      auto v = floats_of(t);
      for (auto& x : v) x = static_cast<float>(x + k * s->f);
      t.data = make_blob(v.data(), v.size() * 4);
    }
    r.changed = true;
    return r;
  }
};

// scale, declared expensive (its model is worth storing).
class SlowScale : public Pass {
 public:
  PassResult run(Model& m, PassContext& ctx) override {
    PassResult r;
    ++g_slow;
    const double k = ctx.options.at("factor").f;
    for (auto& t : m.tensors) {
      auto v = floats_of(t);
      for (auto& x : v) x = static_cast<float>(x * k);
      t.data = make_blob(v.data(), v.size() * 4);
    }
    r.changed = true;
    r.notes.push_back("scaled by " + std::to_string(k));
    return r;
  }
};

// Changes nothing, skipping every tensor with one of two reasons.
class Noop : public Pass {
 public:
  PassResult run(Model& m, PassContext&) override {
    PassResult r;
    for (size_t i = 0; i < m.tensors.size(); ++i)
      r.skipped.push_back({i % 2 ? "odd" : "not interesting", "tensor '" + m.tensors[i].name + "'"});
    return r;
  }
};

// A report Table measuring the model against the one imported (as evaluate
// does): the sum of the differences of the first tensor.
std::atomic<int> g_measures{0};
class Measure : public Pass {
 public:
  PassResult run(Model& m, PassContext& ctx) override {
    PassResult r;
    ++g_measures;
    if (!ctx.reference) {
      r.status = Status::failure("no reference");
      return r;
    }
    double diff = 0;
    const auto a = floats_of(m.tensors.at(0)), b = floats_of(ctx.reference->tensors.at(0));
    for (size_t i = 0; i < a.size(); ++i) diff += a[i] - b[i];
    auto t = std::make_shared<Table>();
    t->schema = "measure/1";
    t->data = Value::of_float(diff);
    r.table = t;
    r.metrics["diff"] = diff * ctx.options.at("k").f;
    return r;
  }
};

// A Table made from another (as select-precision reads calibrate's ranges).
class Echo : public Pass {
 public:
  PassResult run(Model&, PassContext& ctx) override {
    PassResult r;
    if (!ctx.tables.at(0)) {
      r.status = Status::failure("no sums table");
      return r;
    }
    auto t = std::make_shared<Table>(*ctx.tables[0]);
    t->schema = "echo/1";
    r.table = t;
    return r;
  }
};

// Records the threads it was given and how many threads were in use at once.
std::mutex g_mu;
std::vector<int> g_threads;
int g_in_use = 0, g_max_in_use = 0;
class Threads : public Pass {
 public:
  PassResult run(Model&, PassContext& ctx) override {
    {
      std::lock_guard<std::mutex> lk(g_mu);
      g_threads.push_back(ctx.threads);
      g_in_use += ctx.threads;
      g_max_in_use = std::max(g_max_in_use, g_in_use);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    {
      std::lock_guard<std::mutex> lk(g_mu);
      g_in_use -= ctx.threads;
    }
    PassResult r;
    r.changed = true;
    return r;
  }
};

// Makes the first tensor lazy, with a producer that fails.
class LazyFail : public Pass {
 public:
  PassResult run(Model& m, PassContext&) override {
    Tensor& t = m.tensors.at(0);
    t.data = nullptr;
    t.producer = guarded_producer("lazy-fail", t.name,
                                  []() -> BlobPtr { throw Error("the quantizer ran out of luck"); });
    PassResult r;
    r.changed = true;
    return r;
  }
};

template <class P>
PassInfo info(const std::string& name, std::vector<OptionSpec> options = {}) {
  PassInfo p;
  p.name = name;
  p.description = name;
  p.options = std::move(options);
  p.factory = [] { return std::make_unique<P>(); };
  return p;
}

OptionSpec float_opt(const std::string& name, double dflt) {
  OptionSpec o;
  o.name = name;
  o.type = OptType::Float;
  o.help = name;
  o.default_value = Value::of_float(dflt);
  return o;
}

void register_graph_passes(Registry& r) {
  PassInfo stats = info<Stats>("sums");
  stats.output = {ArtifactKind::Table, "sums/1", false, "each tensor's sum"};
  r.add_pass(stats);
  PassInfo offset = info<Offset>("offset", {float_opt("k", 1)});
  offset.inputs = {{ArtifactKind::Table, "sums/1", false, "tensor sums"}};
  r.add_pass(offset);
  PassInfo slow = info<SlowScale>("slow-scale", {float_opt("factor", 2)});
  slow.expensive = true;
  r.add_pass(slow);
  r.add_pass(info<Noop>("noop"));
  PassInfo measure = info<Measure>("measure", {float_opt("k", 1)});
  measure.output = {ArtifactKind::Table, "measure/1", false, "difference from the imported model"};
  measure.needs_reference = true;
  r.add_pass(measure);
  PassInfo echo = info<Echo>("echo");
  echo.inputs = {{ArtifactKind::Table, "sums/1", false, "tensor sums"}};
  echo.output = {ArtifactKind::Table, "echo/1", false, "the sums again"};
  r.add_pass(echo);
  r.add_pass(info<Threads>("threads"));
  r.add_pass(info<LazyFail>("lazy-fail"));
  PassInfo runs = info<Noop>("runs-model");
  runs.needs_executor = true;
  r.add_pass(runs);
  OptionSpec bits;
  bits.name = "bits";
  bits.type = OptType::Int;
  bits.help = "bits";
  bits.int_choices = {4, 8};
  bits.default_value = Value::of_int(4);
  OptionSpec pct = float_opt("percentile", 99.9);
  pct.has_min = pct.has_max = true;
  pct.min = 50;
  pct.max = 100;
  OptionSpec rules;
  rules.name = "rules";
  rules.type = OptType::List;
  rules.help = "ordered rules";
  rules.pattern = "[^=]+=[^=]+";
  rules.pattern_help = "REGEX=TYPE";
  OptionSpec budget;
  budget.name = "budget";
  budget.type = OptType::Size;
  budget.help = "size";
  OptionSpec names;
  names.name = "names";
  names.type = OptType::List;
  names.help = "a set of names";
  names.unordered = true;
  PassInfo checked = info<Noop>("checked", {bits, pct, rules, budget, names});
  checked.validate = [](const Options& o) {
    std::vector<OptionProblem> out;
    if (o.count("budget") && o.at("bits").i == 8) out.push_back({"budget", "a budget needs bits = 4"});
    return out;
  };
  r.add_pass(checked);
}

std::string manifest_with(const std::string& targets) {
  return "[models.m]\npath = \"model.txt\"\n" + targets;
}

std::string target(const std::string& name, const std::string& pipeline) {
  return "[[targets]]\nname = \"" + name + "\"\nmodel = \"m\"\npipeline = [ " + pipeline + " ]\n";
}

const StepResult* step(const BuildResult& r, const std::string& pass) {
  for (const auto& s : r.steps)
    if (s.pass == pass) return &s;
  return nullptr;
}

}  // namespace

TEST_CASE("a table made by one step feeds the next, targets share it, and a later build loads it",
          "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write("qforge.toml", manifest_with(target("a", R"({ pass = "sums" }, { pass = "offset", k = 1 })") +
                                        target("b", R"({ pass = "sums" }, { pass = "offset", k = 2 })")));
  g_stats = g_offsets = 0;
  auto r1 = fx.build();
  REQUIRE(r1.ok());
  CHECK(g_stats == 1);  // one table for both targets
  CHECK(g_offsets == 2);
  CHECK(fx.read("dist/a.txt") == "a 7 8 9\nb 13 14\n");  // a: sum 6, b: sum 9
  CHECK(fx.read("dist/b.txt") == "a 13 14 15\nb 22 23\n");
  const StepResult* sums = step(r1, "sums");
  REQUIRE(sums);
  CHECK(sums->kind == "table");
  CHECK(sums->targets == std::vector<std::string>{"a", "b"});
  CHECK(r1.targets[0].metrics.at("summed_tensors") == 2);  // a table step's metrics reach its targets

  // A third target: the table comes from the cache, not from running `sums`.
  fx.write("qforge.toml", manifest_with(target("a", R"({ pass = "sums" }, { pass = "offset", k = 1 })") +
                                        target("b", R"({ pass = "sums" }, { pass = "offset", k = 2 })") +
                                        target("c", R"({ pass = "sums" }, { pass = "offset", k = 0 })")));
  BuildOptions o;
  o.explain = true;
  struct Lines : NullProgress {
    std::vector<std::string> lines;
    void info(const std::string& l) override { lines.push_back(l); }
  } lines;
  auto r2 = fx.build_with(o, &lines);
  REQUIRE(r2.ok());
  CHECK(g_stats == 1);
  CHECK(g_offsets == 3);
  CHECK(r2.built == 1);
  CHECK(r2.cached == 2);
  CHECK(step(r2, "sums")->status == "cached");
  CHECK(fx.read("dist/c.txt") == "a 1 2 3\nb 4 5\n");
  bool said = false;
  for (const auto& l : lines.lines)
    said |= l.find("load sums m") == 0 && l.find("cached table") != std::string::npos;
  CHECK(said);

  // The cached build equals an uncached one, byte for byte.
  const std::string a = fx.read("dist/a.txt"), c = fx.read("dist/c.txt");
  fs::remove_all(fx.dir / "dist");
  REQUIRE(fx.build(2, true).ok());
  CHECK(fx.read("dist/a.txt") == a);
  CHECK(fx.read("dist/c.txt") == c);

  // A corrupt table object is reported and the table recomputed.
  for (auto& e : fs::recursive_directory_iterator(fx.dir / ".qforge/cache/objects"))
    if (e.is_regular_file() &&
        fx.read(fs::relative(e.path(), fx.dir).string()).find("sums/1") != std::string::npos) {
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
      std::ofstream(e.path()) << "{\"schema\": \"sums/1\", \"data\": {}}";
    }
  fx.write("qforge.toml", manifest_with(target("d", R"({ pass = "sums" }, { pass = "offset", k = 3 })")));
  auto r3 = fx.build();
  REQUIRE(r3.ok());
  CHECK(g_stats == 3);  // once more for the --no-cache build, once for the corrupt object
  CHECK(fx.read("dist/d.txt") == "a 19 20 21\nb 31 32\n");
}

TEST_CASE("a table read by a step loaded from the cache is still there for a step that runs",
          "[build][graph]") {
  // sums feeds echo (a Table step) and offset; changing offset's option
  // loads sums and echo from the cache and runs offset, which must get sums.
  Fixture fx(register_graph_passes);
  auto manifest = [&](const std::string& k) {
    fx.write("qforge.toml",
             manifest_with(
                 target("a", R"({ pass = "sums" }, { pass = "echo" }, { pass = "offset", k = )" + k + " }")));
  };
  manifest("1");
  REQUIRE(fx.build().ok());
  manifest("2");
  auto r = fx.build();
  INFO(r.targets.at(0).error);
  REQUIRE(r.ok());
  CHECK(step(r, "sums")->status == "cached");
  CHECK(step(r, "echo")->status == "cached");
  CHECK(step(r, "offset")->status == "built");
  const std::string cached = fx.read("dist/a.txt");
  REQUIRE(fx.build(2, true).ok());
  CHECK(fx.read("dist/a.txt") == cached);
}

TEST_CASE("step references: another target's step, and the errors of a bad reference", "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write("qforge.toml",
           manifest_with(
               target("a", R"({ pass = "sums", id = "calib" }, { pass = "offset" })") +
               target("b", R"({ pass = "scale", factor = 2 }, { pass = "offset", inputs = ["a/calib"] })")));
  g_stats = 0;
  auto r = fx.build();
  REQUIRE(r.ok());
  CHECK(g_stats == 1);
  // b scales by 2, then adds the sums of the *unscaled* model that a's step measured.
  CHECK(fx.read("dist/b.txt") == "a 8 10 12\nb 17 19\n");

  fx.write("qforge.toml",
           manifest_with(
               target("a", R"({ pass = "offset" })") +
               target("b", R"({ pass = "scale", factor = 2 }, { pass = "offset", inputs = ["scale"] })") +
               target("c", R"({ pass = "offset", inputs = ["nope/sums"] })") +
               target("d", R"({ pass = "offset", inputs = ["x", "y"] })")));
  const std::string text = fx.plan_errors();
  CHECK_THAT(text,
             Catch::Contains(
                 "6:23: error: pass 'offset' needs a 'sums/1' table (tensor sums): add a step that makes "
                 "one before it ('sums'), or name one with inputs = [\"target/step\"]"));
  CHECK_THAT(text,
             Catch::Contains("step 'scale' makes a model, but pass 'offset' needs a 'sums/1' table here"));
  CHECK_THAT(text, Catch::Contains("no target named 'nope'"));
  CHECK_THAT(text, Catch::Contains("pass 'offset' takes 1 table input(s), and inputs names 2"));

  // Targets naming each other's steps are refused (references go one way).
  fx.write(
      "qforge.toml",
      manifest_with(target("a", R"({ pass = "sums", id = "s" }, { pass = "offset", inputs = ["b/s"] })") +
                    target("b", R"({ pass = "sums", id = "s" }, { pass = "offset", inputs = ["a/s"] })")));
  CHECK_THAT(fx.plan_errors(), Catch::Contains("depends on its own steps through step references (a cycle)"));
}

TEST_CASE("an expensive intermediate model is stored, then loaded instead of recomputed", "[build][graph]") {
  Fixture fx(register_graph_passes);
  auto write = [&](const std::string& f2) {
    fx.write(
        "qforge.toml",
        manifest_with(target("a", R"({ pass = "slow-scale" }, { pass = "scale", factor = 3 })") +
                      target("b", R"({ pass = "slow-scale" }, { pass = "scale", factor = )" + f2 + " }")));
  };
  write("5");
  std::unique_ptr<Manifest> keep;
  auto [plan, errors] = fx.plan(keep);
  REQUIRE(errors.empty());
  bool stored = false;
  for (const auto& n : plan.nodes)
    if (n.pass && n.pass->name == "slow-scale")
      stored = n.store && n.store_why.find("expensive") != std::string::npos;
  CHECK(stored);
  g_slow = 0;
  REQUIRE(fx.build().ok());
  CHECK(g_slow == 1);
  CHECK(fx.read("dist/b.txt") == "a 10 20 30\nb 40 50\n");
  write("7");
  auto r = fx.build();
  REQUIRE(r.ok());
  CHECK(g_slow == 0 + 1);  // loaded from the cache
  CHECK(step(r, "slow-scale")->status == "cached");
  CHECK(fx.read("dist/b.txt") == "a 14 28 42\nb 56 70\n");
  CHECK(r.targets[1].notes == std::vector<std::string>{"scaled by 2.000000"});  // notes come back with it
}

TEST_CASE("a table no later step consumes feeds the emit: it runs, reports, and keys the artifact",
          "[build][graph]") {
  Fixture fx(register_graph_passes);
  auto write = [&](const std::string& k) {
    fx.write("qforge.toml",
             manifest_with(target("a", R"({ pass = "slow-scale" }, { pass = "measure", k = )" + k + " }") +
                           target("b", R"({ pass = "sums" })")));
  };
  write("1");
  g_slow = g_measures = g_stats = 0;
  auto r1 = fx.build();
  REQUIRE(r1.ok());
  CHECK(g_measures == 1);
  CHECK(g_stats == 1);                           // a table alone in a pipeline runs too
  CHECK(r1.targets[0].metrics.at("diff") == 6);  // (2 + 4 + 6) - (1 + 2 + 3)
  CHECK(r1.targets[1].metrics.at("summed_tensors") == 2);
  CHECK(fx.read("dist/a.txt") == "a 2 4 6\nb 8 10\n");  // the artifact is the model, not the table

  // Cached: the same metrics without running anything.
  auto r2 = fx.build();
  CHECK(r2.cached == 2);
  CHECK(g_measures == 1);
  CHECK(r2.targets[0].metrics.at("diff") == 6);

  // Other options for the measuring step: the expensive model comes from the
  // cache, the import still runs for the reference, the artifact is emitted
  // again (the same bytes) with the new metrics.
  write("2");
  auto r3 = fx.build();
  REQUIRE(r3.ok());
  CHECK(g_slow == 1);
  CHECK(g_measures == 2);
  CHECK(step(r3, "slow-scale")->status == "cached");
  CHECK(step(r3, "import")->status == "built");
  CHECK(r3.targets[0].metrics.at("diff") == 12);
  CHECK(fx.read("dist/a.txt") == "a 2 4 6\nb 8 10\n");
}

TEST_CASE("plan --json shows artifact kinds, inputs and the cache policy", "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write("qforge.toml", manifest_with(target("a", R"({ pass = "sums" }, { pass = "offset" })")));
  std::unique_ptr<Manifest> keep;
  auto [plan, errors] = fx.plan(keep);
  REQUIRE(errors.empty());
  BuildOptions o;
  o.dry_run = true;
  StatCache stats("");
  NullProgress quiet;
  auto dry = run_build(plan, o, stats, quiet);
  auto j = nlohmann::json::parse(plan_json(plan, dry));
  REQUIRE(j["nodes"].size() == 4);  // import, sums, offset, emit
  CHECK(j["nodes"][1]["produces"] == "table");
  CHECK(j["nodes"][1]["store"] == true);
  CHECK(j["nodes"][2]["inputs"] == nlohmann::json::array({0, 1}));
  CHECK(j["nodes"][2]["produces"] == "model");
  CHECK(j["nodes"][3]["produces"] == "file");
  CHECK(j["nodes"][3]["state"] == "will run");
  CHECK_THAT(plan_text(plan, dry), Catch::Contains("sums m  -> table  <- [0]"));
}

TEST_CASE("option constraints and validate hooks are checked at plan time, located", "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write(
      "qforge.toml",
      manifest_with(target(
          "a", R"({ pass = "checked", bits = 5, percentile = 120, rules = ["attn"], budget = "3 parsecs" },
  { pass = "checked", bits = 8, budget = "3.5GiB" }, { pass = "checked", rules = { "attn_q" = "Q8_0", "attn" = "Q5_0" } })")));
  const std::string text = fx.plan_errors();
  CHECK_THAT(text,
             Catch::Contains("6:41: error: option 'bits' of pass 'checked' cannot be 5; choose one of 4, 8"));
  CHECK_THAT(text, Catch::Contains(
                       "error: option 'percentile' of pass 'checked' must be between 50 and 100, found 120"));
  CHECK_THAT(
      text, Catch::Contains("error: option 'rules' of pass 'checked': 'attn' is not of the form REGEX=TYPE"));
  CHECK_THAT(text, Catch::Contains("error: option 'budget' of pass 'checked' must be a size such as"));
  CHECK_THAT(text, Catch::Contains("7:33: error: pass 'checked', option 'budget': a budget needs bits = 4"));
  CHECK_THAT(text, Catch::Contains(
                       "a list whose order matters (the first matching rule wins), and a TOML table has no "
                       "order; write it as a list: rules = [\"attn_q=Q8_0\", \"attn=Q5_0\"]"));
  SizeValue sv;
  REQUIRE(parse_size("3.5GiB", sv));
  CHECK(sv.unit == SizeValue::Unit::Bytes);
  CHECK(sv.value == 3.5 * 1024 * 1024 * 1024);
  REQUIRE(parse_size("4.5bpw", sv));
  CHECK(sv.unit == SizeValue::Unit::BitsPerWeight);
  CHECK(sv.value == 4.5);
  REQUIRE(parse_size("123456", sv));
  CHECK(sv.value == 123456);
  CHECK_FALSE(parse_size("1.5", sv));
  CHECK_FALSE(parse_size("0bpw", sv));
}

TEST_CASE("profiles are validated against the registry when loaded", "[build][graph][profiles]") {
  Fixture fx(register_graph_passes);
  fs::create_directories(fx.dir / "profiles");
  fx.write("profiles/bad.toml", R"(name = "bad"
optional_passes = ["quantize-later"]
[defaults.scael]
factor = 2.0
[defaults.quantize-later]
anything = 1
[defaults.checked]
bits = 8
bitz = 4
[allow.checked]
bits = [4]
[allow.offset]
k = [2.0]
)");
  Diagnostics d;
  fx.profiles.load_dir((fx.dir / "profiles").string(), d);
  REQUIRE_FALSE(d.has_errors());
  validate_profiles(fx.profiles, fx.reg, d);
  const std::string text = d.render();
  CHECK_THAT(text, Catch::Contains(
                       "bad.toml:3:1: error: profile 'bad' configures pass 'scael', which is not registered "
                       "(did you mean 'scale'?)"));
  CHECK_THAT(text, Catch::Contains(
                       "bad.toml:9:8: error: profile 'bad' sets option 'bitz' that pass 'checked' does not "
                       "have (did you mean 'bits'?)"));
  CHECK_THAT(text, Catch::Contains(
                       "bad.toml:8:8: error: profile 'bad': default bits = 8 for pass 'checked' is not among "
                       "the values it allows, [4]"));
  CHECK_THAT(text, Catch::Contains(
                       "profile 'bad' forbids k = 1, the default of pass 'offset', without setting another"));
  CHECK(text.find("quantize-later") == std::string::npos);  // optional: checked only once registered
}

TEST_CASE("a pass that changes nothing warns, skips are summarised, and --strict fails cached or not",
          "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write("model.txt", "a 1\nb 2\nc 3\nd 4\ne 5\n");
  fx.write("qforge.toml", manifest_with(target("n", R"({ pass = "noop" })")));
  auto r = fx.build();
  REQUIRE(r.ok());
  REQUIRE(r.targets[0].warnings.size() == 1);
  CHECK_THAT(r.targets[0].warnings[0],
             Catch::StartsWith("noop: changed nothing in model 'm' (noop skipped 3 (not interesting)"));
  CHECK(r.targets[0].skipped.size() == 5);
  auto lines = summarize_skips(r.targets[0].skipped);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "noop skipped 3 (not interesting): tensor 'a', tensor 'c', tensor 'e'");
  CHECK(lines[1] == "noop skipped 2 (odd): tensor 'b', tensor 'd'");
  auto j = nlohmann::json::parse(report_json(r, fx.dir.string()));
  CHECK(j["targets"][0]["skipped"].size() == 5);
  CHECK(j["targets"][0]["warnings"].size() == 1);
  CHECK(j["summary"]["warnings"] == 1);
  CHECK_THAT(report_markdown(r, fx.dir.string()), Catch::Contains("## Warnings and errors"));

  // Cached: the same warning comes back; under --strict the cached result fails too.
  auto again = fx.build();
  CHECK(again.cached == 1);
  CHECK(again.targets[0].warnings == r.targets[0].warnings);
  BuildOptions strict;
  strict.strict = true;
  auto rs = fx.build_with(strict);
  CHECK_FALSE(rs.ok());
  CHECK_THAT(rs.targets[0].error, Catch::Contains("warnings are errors (--strict)"));
  strict.no_cache = true;
  auto rn = fx.build_with(strict);
  CHECK_FALSE(rn.ok());
  CHECK_THAT(rn.targets[0].error, Catch::Contains("warnings are errors (--strict): noop: changed nothing"));
}

TEST_CASE("steps at once times threads each never exceeds the budget", "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write("qforge.toml",
           manifest_with(target("a", R"({ pass = "threads" })") +
                         target("b", R"({ pass = "scale", factor = 2 }, { pass = "threads" })") +
                         target("c", R"({ pass = "scale", factor = 3 }, { pass = "threads" })")));
  {
    std::lock_guard<std::mutex> lk(g_mu);
    g_threads.clear();
    g_max_in_use = g_in_use = 0;
  }
  BuildOptions o;
  o.jobs = 4;
  o.threads = 2;
  o.no_cache = true;
  auto r = fx.build_with(o);
  REQUIRE(r.ok());
  CHECK(g_threads.size() == 3);
  CHECK(g_max_in_use <= 2);
  for (const auto& s : r.steps)
    if (s.status == "built") {
      CHECK(s.threads >= 1);
      CHECK(s.threads <= 2);
    }
  // One step alone gets the whole budget.
  fx.write("qforge.toml", manifest_with(target("a", R"({ pass = "threads" })")));
  {
    std::lock_guard<std::mutex> lk(g_mu);
    g_threads.clear();
  }
  o.threads = 3;
  REQUIRE(fx.build_with(o).ok());
  CHECK(g_threads == std::vector<int>{3});
}

TEST_CASE("a lazy producer's failure names the tensor and the pass, and writes nothing", "[build][graph]") {
  Fixture fx(register_graph_passes);
  fx.write("qforge.toml", manifest_with(target("a", R"({ pass = "lazy-fail" })")));
  auto r = fx.build();
  CHECK_FALSE(r.ok());
  CHECK_THAT(r.targets[0].error, Catch::Contains("lazy-fail: tensor 'a': the quantizer ran out of luck"));
  CHECK_FALSE(fs::exists(fx.dir / "dist/a.txt"));
}

TEST_CASE("an ordered list's order is part of the key, a set's is not", "[build][graph]") {
  Fixture fx(register_graph_passes);
  auto key_of = [&](const std::string& options) {
    fx.write("qforge.toml", manifest_with(target("a", "{ pass = \"checked\", " + options + " }")));
    std::unique_ptr<Manifest> keep;
    auto [plan, errors] = fx.plan(keep);
    REQUIRE(errors.empty());
    return plan.nodes.at(1).key;
  };
  CHECK(key_of(R"(rules = ["a=1", "b=2"])") != key_of(R"(rules = ["b=2", "a=1"])"));
  CHECK(key_of(R"(names = ["x", "y"])") == key_of(R"(names = ["y", "x", "y"])"));
  CHECK(key_of(R"(names = ["x", "y"])") != key_of(R"(names = ["x", "z"])"));
}

TEST_CASE("a pass that runs the model needs an executor, said at plan time", "[build][graph]") {
  Fixture fx(register_graph_passes);  // a registry with no executor
  fx.write("qforge.toml", manifest_with(target("a", R"({ pass = "runs-model" })")));
  CHECK_THAT(fx.plan_errors(),
             Catch::Contains("6:23: error: pass 'runs-model' runs the model, and no executor is registered"));
}
