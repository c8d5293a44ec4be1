// The suite itself: every test case must be runnable on its own through
// ctest. catch_discover_tests (tests/CMakeLists.txt) turns each name into a
// CMake list element, so a ';' in a name splits it into two ctest tests whose
// filters match nothing: both "pass" without running anything. A name that
// starts with '-' is read as an option and fails to run.
#include <catch2/catch.hpp>
#include <string>

TEST_CASE("every test name can be run alone through ctest (no semicolon in a name, no leading dash)",
          "[tests]") {
  const auto& all = Catch::getRegistryHub().getTestCaseRegistry().getAllTests();
  REQUIRE(all.size() > 100);
  for (const Catch::TestCase& tc : all) {
    const std::string& name = tc.getTestCaseInfo().name;
    INFO(name);
    CHECK(name.find(';') == std::string::npos);
    CHECK(name.front() != ' ');
    CHECK(name.front() != '-');  // ctest passes the name to Catch, which would read it as an option
    CHECK(name.back() != ' ');
  }
}
