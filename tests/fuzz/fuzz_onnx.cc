// libFuzzer target: the ONNX importer (and, for what it accepts, the emitter)
// on arbitrary bytes. The input is written to a private temporary file because
// import memory-maps its input and resolves external data beside it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "onnx/onnx_format.h"
#include "qforge/status.h"

namespace {
std::string dir() {
  static std::string d = [] {
    char t[] = "/tmp/qforge-fuzz-onnx-XXXXXX";
    return std::string(mkdtemp(t));
  }();
  return d;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in = dir() + "/in.onnx", out = dir() + "/out.onnx";
  FILE* f = std::fopen(in.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    qforge::Model m = qforge::onnxfmt::import_onnx(in);
    qforge::onnxfmt::emit_onnx(m, out, {});
    ::unlink(out.c_str());
  } catch (const qforge::Error&) {
  }
  return 0;
}
