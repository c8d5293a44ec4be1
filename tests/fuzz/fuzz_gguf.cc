// libFuzzer target: the GGUF reader on arbitrary bytes. Errors are fine;
// crashes, leaks, overflows and hangs are not.
#include <cstddef>
#include <cstdint>

#include "gguf/gguf.h"
#include "qforge/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    qforge::Model m = qforge::parse_gguf(qforge::make_blob(data, size), "fuzz.gguf");
    // Touch what a consumer would: sizes and bytes of every tensor.
    uint64_t sum = 0;
    for (const auto& t : m.tensors) {
      auto b = t.bytes();
      if (b->size() != t.nbytes()) __builtin_trap();
      if (b->size()) sum += b->data()[b->size() - 1];
    }
    (void)sum;
  } catch (const qforge::Error&) {
  }
  return 0;
}
