// libFuzzer target: the safetensors plugin's reader (plugins/safetensors) on
// arbitrary bytes, then its writer on what it read, and the reader again on
// that. Errors are fine; crashes, leaks, overflows, hangs and a re-read that
// differs are not.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "qforge/status.h"
#include "safetensors/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qforge::Model m;
  try {
    m = qforge::st::parse_safetensors(qforge::make_blob(data, size), "fuzz.safetensors");
  } catch (const qforge::Error&) {
    return 0;
  }
  for (const auto& t : m.tensors)
    if (t.bytes()->size() != t.nbytes()) __builtin_trap();
  // What was read is written and read back unchanged.
  static const std::string out =
      "/tmp/qforge_fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  try {
    qforge::st::write_safetensors(m, out);
  } catch (const qforge::Error&) {
    return 0;  // e.g. a string the metadata rule cannot write back
  }
  std::ifstream in(out, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  qforge::Model r = qforge::st::parse_safetensors(qforge::make_blob(bytes.data(), bytes.size()), out);
  if (r.tensors.size() != m.tensors.size() || !(r.metadata == m.metadata)) __builtin_trap();
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    auto a = m.tensors[i].bytes(), b = r.tensors[i].bytes();
    if (r.tensors[i].name != m.tensors[i].name || r.tensors[i].shape != m.tensors[i].shape ||
        r.tensors[i].type != m.tensors[i].type || a->size() != b->size() ||
        (a->size() && std::memcmp(a->data(), b->data(), a->size()) != 0))
      __builtin_trap();
  }
  return 0;
}
