// libFuzzer harness for the .npy reader (tests/fuzz/build.sh builds and runs it).
// Any exception other than qforge::Error, any sanitizer report, or an array
// whose bytes disagree with its type and shape is a finding.
#include <cstdint>
#include <cstdlib>

#include "qforge/dataset.h"
#include "qforge/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    qforge::Array a = qforge::read_npy_bytes(qforge::make_blob(data, size), "fuzz.npy");
    uint64_t n = 1;
    for (int64_t d : a.shape) {
      if (d < 0) std::abort();
      n *= static_cast<uint64_t>(d);
    }
    if (!a.data || a.data->size() != *qforge::byte_size(a.type, n)) std::abort();
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < a.data->size(); ++i) sink = sink ^ a.data->data()[i];
  } catch (const qforge::Error&) {
  }
  return 0;
}
