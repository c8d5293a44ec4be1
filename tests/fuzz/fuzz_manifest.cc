// libFuzzer target: the manifest loader (TOML parsing, structure checks,
// matrix expansion, diagnostics rendering) on arbitrary text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "qforge/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  std::string text(reinterpret_cast<const char*>(data), size);
  qforge::Diagnostics diags;
  qforge::Manifest m = qforge::parse_manifest(text, "/nonexistent/fuzz/qforge.toml", diags);
  // Matrix expansion is a product: keep it bounded so a few lists don't explode.
  (void)diags.render();
  (void)m;
  return 0;
}
