// The build engine: shared nodes run once, the cache makes a second build do
// nothing, one changed option rebuilds one target, corrupt entries are rebuilt,
// -j does not change the bytes. Uses a small text format and pass defined here.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "build_fixture.h"
#include "qforge/atomic_file.h"

TEST_CASE("a shared import runs once, a second build does nothing", "[build]") {
  Fixture fx;
  g_imports = 0;
  g_passes = 0;
  auto r1 = fx.build();
  REQUIRE(r1.ok());
  CHECK(r1.built == 2);
  CHECK(g_imports == 1);  // one import serves both targets
  CHECK(g_passes == 2);
  CHECK(fx.read("dist/x3.txt") == "a 3 6 9\nb 12 15\n");
  CHECK(fx.read("dist/x2.txt") == "a 2 4 6\nb 8 10\n");
  REQUIRE(r1.steps.size() == 5);  // import, 2 x scale, 2 x emit
  CHECK(r1.steps[0].pass == "import");
  CHECK(r1.steps[0].targets.size() == 2);

  auto r2 = fx.build();
  CHECK(r2.built == 0);
  CHECK(r2.cached == 2);
  CHECK(g_imports == 1);
  CHECK(g_passes == 2);
  for (const auto& s : r2.steps) CHECK(s.status == "cached");
  CHECK(r2.targets[0].metrics.at("factor") == 3.0);  // metrics come back from the cache
}

TEST_CASE("changing one target's option rebuilds only that target", "[build]") {
  Fixture fx;
  REQUIRE(fx.build().ok());
  g_passes = 0;
  fx.manifest("5");
  auto r = fx.build();
  CHECK(r.built == 1);
  CHECK(r.cached == 1);
  CHECK(g_passes == 1);
  CHECK(fx.read("dist/x5.txt") == "a 5 10 15\nb 20 25\n");
}

TEST_CASE("a missing artifact is restored and a corrupt cache entry is rebuilt", "[build]") {
  Fixture fx;
  REQUIRE(fx.build().ok());
  fs::remove(fx.dir / "dist/x3.txt");
  g_passes = 0;
  auto r = fx.build();
  CHECK(r.cached == 2);
  CHECK(g_passes == 0);
  CHECK(fx.read("dist/x3.txt") == "a 3 6 9\nb 12 15\n");

  // Corrupt every object of the cache, then ask for x3 again.
  for (auto& e : fs::recursive_directory_iterator(fx.dir / ".qforge/cache/objects"))
    if (e.is_regular_file()) {
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
      std::ofstream(e.path()) << "garbage";
    }
  fs::remove(fx.dir / "dist/x3.txt");
  r = fx.build();
  CHECK(r.built == 1);
  CHECK(fx.read("dist/x3.txt") == "a 3 6 9\nb 12 15\n");
}

TEST_CASE("an input change rebuilds, and --explain says why", "[build]") {
  Fixture fx;
  REQUIRE(fx.build().ok());
  fx.write("model.txt", "a 1 1 1\n");
  BuildOptions o;
  o.explain = true;
  auto r = fx.build_with(o);
  CHECK(r.built == 2);
  // Every step ran again, and each target's emit step says which input changed.
  size_t explained = 0;
  for (const auto& s : r.steps) {
    INFO(s.label << ": " << s.why);
    CHECK(s.status == "built");
    if (s.pass == "emit") {
      CHECK_THAT(s.why, Catch::Contains("input changed") && Catch::Contains("model.txt"));
      ++explained;
    }
  }
  CHECK(explained == 2);
  CHECK(fx.read("dist/x2.txt") == "a 2 2 2\n");
}

TEST_CASE("artifacts are byte-identical with one or two jobs, and --no-cache writes no cache", "[build]") {
  Fixture fx;
  REQUIRE(fx.build(1, true).ok());
  CHECK_FALSE(fs::exists(fx.dir / ".qforge"));
  std::string a = fx.read("dist/x3.txt"), b = fx.read("dist/x2.txt");
  fs::remove_all(fx.dir / "dist");
  REQUIRE(fx.build(2).ok());
  CHECK(fx.read("dist/x3.txt") == a);
  CHECK(fx.read("dist/x2.txt") == b);
}

TEST_CASE("option errors: unknown option, wrong type, missing required", "[build]") {
  Fixture fx;
  fx.write("qforge.toml",
           "[models.m]\npath = \"model.txt\"\n[[targets]]\nname = \"t\"\nmodel = \"m\"\n"
           "pipeline = [ { pass = \"scale\", factr = 2 }, { pass = \"scale\", factor = \"big\" }, { pass = "
           "\"scael\" } ]\n");
  Diagnostics d;
  Manifest m = load_manifest((fx.dir / "qforge.toml").string(), d);
  StatCache stats(m.cache_dir + "/stat-cache");
  make_plan(m, fx.reg, fx.profiles, stats, {}, d);
  std::string text = d.render();
  CHECK_THAT(text,
             Catch::Contains("6:32: error: pass 'scale' has no option 'factr' (did you mean 'factor'?)"));
  CHECK_THAT(text, Catch::Contains("error: pass 'scale' needs option 'factor' (the factor)"));
  CHECK_THAT(text, Catch::Contains(
                       "error: option 'factor' of pass 'scale' must be a number, found a string \"big\""));
  CHECK_THAT(text, Catch::Contains("error: unknown pass 'scael' (did you mean 'scale'?)"));
}

TEST_CASE("AtomicFile leaves nothing under the final name until commit", "[build]") {
  auto dir = fs::temp_directory_path() / "qforge-atomic-test";
  fs::create_directories(dir);
  std::string final = (dir / "out.bin").string();
  {
    AtomicFile f(final);
    f.write("abc", 3);
    CHECK_FALSE(fs::exists(final));
  }  // destroyed without commit
  CHECK_FALSE(fs::exists(final));
  CHECK(fs::is_empty(dir));
  {
    AtomicFile f(final);
    f.write("abc", 3);
    f.commit();
  }
  CHECK(fs::file_size(final) == 3);
  fs::remove_all(dir);
}

TEST_CASE("the stat cache re-hashes a file only when its stat changes", "[build]") {
  auto dir = fs::temp_directory_path() / ("qforge-statcache-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto file = dir / "big.bin";
  std::ofstream(file) << std::string(1 << 20, 'x');
  // Older than the racy window, so the digest may be remembered.
  fs::last_write_time(file, fs::file_time_type::clock::now() - std::chrono::hours(1));
  Digest first;
  {
    StatCache sc((dir / "stat-cache").string());
    first = sc.digest(file.string());
    CHECK(sc.misses == 1);
    CHECK(sc.digest(file.string()) == first);
    CHECK(sc.hits == 1);
    sc.save();
  }
  {
    StatCache sc((dir / "stat-cache").string());  // reloaded from disk
    CHECK(sc.digest(file.string()) == first);
    CHECK(sc.hits == 1);
    CHECK(sc.misses == 0);
  }
  // Same size, new contents and mtime: hashed again, new digest.
  std::ofstream(file) << std::string(1 << 20, 'y');
  fs::last_write_time(file, fs::file_time_type::clock::now() - std::chrono::minutes(30));
  {
    StatCache sc((dir / "stat-cache").string());
    CHECK(sc.digest(file.string()) != first);
    CHECK(sc.misses == 1);
  }
  // A file of an unknown version is ignored, and said so.
  std::ofstream(dir / "stat-cache") << "qforge-stat-cache 99\n";
  StatCache sc((dir / "stat-cache").string());
  CHECK_THAT(sc.note, Catch::Contains("unknown stat cache version"));
  fs::remove_all(dir);
}
