// make_tiny_onnx KIND OUT.onnx [SEED]: writes a tiny deterministic ONNX model
// (KIND: mlp, conv or cnn; see formats/onnx/onnx_builder.h).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "onnx_builder.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s mlp|conv|cnn OUT.onnx [SEED]\n", argv[0]);
    return 2;
  }
  try {
    uint32_t seed = argc == 4 ? static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)) : 0;
    qforge::onnxfmt::write_tiny_model(argv[1], argv[2], seed);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_tiny_onnx: %s\n", e.what());
    return 1;
  }
  return 0;
}
