// libFuzzer harness for the ONNX TensorProto reader (typed fields, raw_data).
#include <cstdint>
#include <cstdlib>

#include "qforge/dataset.h"
#include "qforge/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    qforge::Array a = qforge::read_tensor_pb_bytes(qforge::make_blob(data, size), "fuzz.pb");
    uint64_t n = 1;
    for (int64_t d : a.shape) n *= static_cast<uint64_t>(d);
    if (!a.data || a.data->size() != *qforge::byte_size(a.type, n)) std::abort();
  } catch (const qforge::Error&) {
  }
  return 0;
}
