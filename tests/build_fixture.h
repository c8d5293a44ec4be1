// A small build world for engine tests: a text model format ("name v v v"
// per line, one f32 tensor per line), a `scale` pass, counters of what ran,
// and a Fixture that writes a manifest in a temporary directory and builds it.
#pragma once

#include <unistd.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "qforge/atomic_file.h"
#include "qforge/build.h"
#include "qforge/cache.h"
#include "qforge/progress.h"

using namespace qforge;
namespace fs = std::filesystem;

namespace {

inline std::atomic<int> g_imports{0};
inline std::atomic<int> g_passes{0};

// "name v v v" per line -> one f32 tensor per line.
class TextFormat : public Format {
 public:
  std::string name() const override { return "text"; }
  std::string version() const override { return "1"; }
  std::string extension() const override { return ".txt"; }
  std::string description() const override { return "test format"; }
  int probe(const std::string& path, const uint8_t*, size_t) const override {
    return path.size() > 4 && path.substr(path.size() - 4) == ".txt" ? 50 : 0;
  }
  Status import_model(const std::string& path, Model& out) const override {
    return guard([&] {
      ++g_imports;
      std::ifstream in(path);
      std::string line;
      while (std::getline(in, line)) {
        std::istringstream ls(line);
        Tensor t;
        ls >> t.name;
        std::vector<float> v;
        float x;
        while (ls >> x) v.push_back(x);
        t.shape = {static_cast<int64_t>(v.size())};
        t.data = make_blob(v.data(), v.size() * 4);
        out.tensors.push_back(t);
      }
    });
  }
  Status emit_model(const Model& m, const std::string& path, const Options&) const override {
    return guard([&] {
      std::ostringstream os;
      for (const auto& t : m.tensors) {
        os << t.name;
        auto b = t.bytes();
        for (uint64_t i = 0; i < t.numel(); ++i) {
          float x;
          std::memcpy(&x, b->data() + 4 * i, 4);
          os << " " << x;
        }
        os << "\n";
      }
      AtomicFile f(path);
      f.write(os.str().data(), os.str().size());
      f.commit();
    });
  }
};

class Scale : public Pass {
 public:
  PassResult run(Model& m, PassContext& ctx) override {
    PassResult r;
    ++g_passes;
    double k = ctx.options.at("factor").f;
    for (auto& t : m.tensors) {
      std::vector<float> v(t.numel());
      std::memcpy(v.data(), t.bytes()->data(), v.size() * 4);
      for (auto& x : v) x = static_cast<float>(x * k);
      t.data = make_blob(v.data(), v.size() * 4);
    }
    r.changed = true;
    r.metrics["factor"] = k;
    return r;
  }
};

struct Fixture {
  fs::path dir;
  Registry reg;
  ProfileSet profiles;
  // `extra` registers more passes (as the test plugin).
  explicit Fixture(const std::function<void(Registry&)>& extra = {}) {
    dir = fs::temp_directory_path() / ("qforge-build-test-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    reg.begin_plugin({"test", "1", "<test>"}, nullptr);
    reg.add_format(std::make_shared<TextFormat>());
    PassInfo p;
    p.name = "scale";
    p.description = "multiply";
    OptionSpec f;
    f.name = "factor";
    f.type = OptType::Float;
    f.required = true;
    f.help = "the factor";
    p.options = {f};
    p.factory = [] { return std::make_unique<Scale>(); };
    reg.add_pass(p);
    if (extra) extra(reg);
    reg.end_plugin();
    write("model.txt", "a 1 2 3\nb 4 5\n");
    manifest("2");
  }
  ~Fixture() { fs::remove_all(dir); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; }
  void manifest(const std::string& second_factor) {
    write("qforge.toml",
          "[models.m]\npath = \"model.txt\"\n"
          "[[targets]]\nname = \"x{f}\"\nmodel = \"m\"\nmatrix = { f = [\"3\", \"" +
              second_factor +
              "\"] }\n"
              "pipeline = [ { pass = \"scale\", factor = \"{f}\" } ]\n");
  }
  BuildResult build(int jobs = 2, bool no_cache = false) {
    BuildOptions o;
    o.jobs = jobs;
    o.no_cache = no_cache;
    return build_with(o);
  }
  BuildResult build_with(const BuildOptions& o, Progress* progress = nullptr) {
    Diagnostics d;
    Manifest m = load_manifest((dir / "qforge.toml").string(), d);
    REQUIRE_FALSE(d.has_errors());
    profiles.load_manifest(m, d);
    StatCache stats(o.no_cache ? std::string() : m.cache_dir + "/stat-cache");
    Plan plan = make_plan(m, reg, profiles, stats, {}, d);
    INFO(d.render());
    REQUIRE_FALSE(d.has_errors());
    NullProgress quiet;
    auto r = run_build(plan, o, stats, progress ? *progress : quiet);
    if (!o.no_cache && !o.dry_run) stats.save();
    return r;
  }
  // The plan of the current manifest, and its diagnostics rendered.
  std::pair<Plan, std::string> plan(std::unique_ptr<Manifest>& keep) {
    Diagnostics d;
    keep = std::make_unique<Manifest>(load_manifest((dir / "qforge.toml").string(), d));
    profiles.load_manifest(*keep, d);
    StatCache stats(keep->cache_dir + "/stat-cache");
    Plan p = make_plan(*keep, reg, profiles, stats, {}, d);
    return {std::move(p), d.render()};
  }
  std::string plan_errors() {
    std::unique_ptr<Manifest> keep;
    return plan(keep).second;
  }
  std::string read(const std::string& name) {
    std::ifstream in(dir / name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

}  // namespace
