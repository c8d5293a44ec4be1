// The test runner. The interop tests find the runtimes through environment
// variables; when they are not set, they default to what `make test` installs
// into the build directory (configured by tests/CMakeLists.txt).
#define CATCH_CONFIG_RUNNER
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstdlib>

int main(int argc, char** argv) {
  // As the qforge CLI (pipeline/cli/main.cc): passive OpenMP threads unless chosen.
  if (!std::getenv("OMP_WAIT_POLICY") && ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
    ::execv("/proc/self/exe", argv);
  const char* defaults[][2] = {
      {"QFORGE_PYTHON", QFORGE_DEFAULT_PYTHON},
      {"QFORGE_NPM_DIR", QFORGE_DEFAULT_NPM_DIR},
      {"QFORGE_GGML_BASE_SO",
       QFORGE_DEFAULT_NPM_DIR "/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"},
      {"QFORGE_LLAMA_SO",
       QFORGE_DEFAULT_NPM_DIR "/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so"},
      {"QFORGE_BIN", QFORGE_BIN},
      {"QFORGE_SOURCE_DIR", QFORGE_SOURCE_DIR},
      {"QFORGE_MODELS_DIR", QFORGE_DEFAULT_MODELS_DIR},
  };
  for (const auto& d : defaults) setenv(d[0], d[1], /*overwrite=*/0);
  // The suite is hermetic: no build of a test talks to a remote cache the
  // developer's shell names (tests/remote_cache_test.cc starts its own servers).
  ::unsetenv("QFORGE_REMOTE_CACHE");
  ::unsetenv("QFORGE_REMOTE_CACHE_TOKEN");
  return Catch::Session().run(argc, argv);
}
