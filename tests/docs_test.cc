// Every document the code, the README and the docs refer to is in the
// repository, and so is every section they name ("docs/manifest.md,
// "Datasets""); nothing points at design notes outside it.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace {
std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
bool is_source(const fs::path& p) {
  static const std::set<std::string> ext = {".cc", ".h",    ".md", ".cmake", ".sh",
                                            ".py", ".toml", ".in", ".mjs"};
  const std::string name = p.filename().string();
  return ext.count(p.extension().string()) || name == "CMakeLists.txt" || name == "Makefile" || name == "run";
}
}  // namespace

TEST_CASE("every referenced document and section is in the repository", "[docs]") {
  const fs::path root = QFORGE_SOURCE_DIR;
  const std::regex ref(R"((docs/[A-Za-z0-9_./-]+\.md)(, \"([^\"]+)\")?)");
  size_t refs = 0;
  std::vector<std::string> missing;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path p = it->path();
    const std::string rel = fs::relative(p, root).string();
    if (it->is_directory() && (rel.rfind("build", 0) == 0 || rel == ".git" ||
                               rel.find("/.") != std::string::npos || p.filename() == "node_modules" ||
                               rel.rfind("tests/data", 0) == 0 || rel.rfind("tests/fuzz/corpus", 0) == 0)) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || !is_source(p)) continue;
    const std::string text = read_all(p);
    const bool cites_outside = text.find(
                                   "DESIGN"
                                   ".md") != std::string::npos ||
                               text.find(
                                   "../sha"
                                   "red/") != std::string::npos;
    if (cites_outside) missing.push_back(rel + " refers to a document outside the repository");
    for (std::sregex_iterator m(text.begin(), text.end(), ref), end; m != end; ++m) {
      ++refs;
      const fs::path doc = root / (*m)[1].str();
      if (!fs::is_regular_file(doc)) {
        missing.push_back(rel + " refers to " + (*m)[1].str() + ", which does not exist");
        continue;
      }
      if ((*m)[3].matched) {
        const std::string heading = (*m)[3].str();
        const std::regex h("(^|\n)#+ [^\n]*" +
                           std::regex_replace(heading, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)"));
        if (!std::regex_search(read_all(doc), h))
          missing.push_back(rel + " refers to section \"" + heading + "\" of " + (*m)[1].str() +
                            ", which has none");
      }
    }
  }
  INFO(refs << " references checked");
  for (const auto& m : missing) FAIL_CHECK(m);
  CHECK(refs >= 5);
}
