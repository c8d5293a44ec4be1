// libFuzzer harness for the .npz reader (ZIP parsing, inflate, CRC, member .npy).
// Any exception other than qforge::Error, any sanitizer report, or an array
// whose bytes disagree with its type and shape is a finding.
#include <cstdint>
#include <cstdlib>

#include "qforge/dataset.h"
#include "qforge/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto arrays = qforge::read_npz_bytes(qforge::make_blob(data, size), "fuzz.npz");
    if (arrays.empty()) std::abort();
    for (const auto& a : arrays) {
      uint64_t n = 1;
      for (int64_t d : a.shape) n *= static_cast<uint64_t>(d);
      if (!a.data || a.data->size() != *qforge::byte_size(a.type, n)) std::abort();
      volatile uint8_t sink = 0;
      for (uint64_t i = 0; i < a.data->size(); ++i) sink = sink ^ a.data->data()[i];
    }
  } catch (const qforge::Error&) {
  }
  return 0;
}
