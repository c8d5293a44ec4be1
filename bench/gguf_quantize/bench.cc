// gguf_quantize_bench: the driver of bench/gguf_quantize (see README.md).
//
//   gguf_quantize_bench generate OUT.gguf [LAYERS EMBD FF VOCAB]
//       a llama-architecture F32 model (default 12 layers, 1024 wide, ff 2816, vocab 32000:
//       ~880 MB), written one tensor at a time
//   gguf_quantize_bench llama IN OUT FTYPE THREADS
//       llama.cpp's llama_model_quantize (dlopen of QFORGE_LLAMA_SO, after
//       QFORGE_GGML_BASE_SO); FTYPE is llama_ftype's number (15 = Q4_K_M)
//   gguf_quantize_bench qforge IN OUT TYPE THREADS
//       qforge's quantize-gguf on the same file (read, plan, quantize lazily, write)
//
// Each run does one quantization, so /usr/bin/time -v around it measures it alone.
#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "gguf/gguf.h"
#include "gguf/tiny_llama.h"
#include "qforge/status.h"
#include "quantize_gguf.h"
#include "tools/llama_abi.h"

namespace {

using namespace qforge::llama_abi;

int usage() {
  std::fprintf(stderr,
               "usage: gguf_quantize_bench generate OUT.gguf [LAYERS EMBD FF VOCAB]\n"
               "       gguf_quantize_bench llama IN OUT FTYPE THREADS\n"
               "       gguf_quantize_bench qforge IN OUT TYPE THREADS\n");
  return 2;
}

void quiet(int, const char*, void*) {}

int run_llama(const char* in, const char* out, int ftype, int threads) {
  const char* so = std::getenv("QFORGE_LLAMA_SO");
  const char* base = std::getenv("QFORGE_GGML_BASE_SO");
  if (!so || !base) {
    std::fprintf(stderr, "QFORGE_LLAMA_SO and QFORGE_GGML_BASE_SO must be set\n");
    return 1;
  }
  if (!dlopen(base, RTLD_NOW | RTLD_GLOBAL)) {
    std::fprintf(stderr, "dlopen %s: %s\n", base, dlerror());
    return 1;
  }
  void* l = dlopen(so, RTLD_NOW | RTLD_GLOBAL);
  if (!l) {
    std::fprintf(stderr, "dlopen %s: %s\n", so, dlerror());
    return 1;
  }
  auto defaults =
      reinterpret_cast<llama_model_quantize_params (*)()>(dlsym(l, "llama_model_quantize_default_params"));
  auto quantize =
      reinterpret_cast<uint32_t (*)(const char*, const char*, const llama_model_quantize_params*)>(
          dlsym(l, "llama_model_quantize"));
  auto init = reinterpret_cast<void (*)()>(dlsym(l, "llama_backend_init"));
  auto log_set =
      reinterpret_cast<void (*)(void (*)(int, const char*, void*), void*)>(dlsym(l, "llama_log_set"));
  if (!defaults || !quantize || !init || !log_set) {
    std::fprintf(stderr, "%s: missing llama_model_quantize symbols\n", so);
    return 1;
  }
  log_set(&quiet, nullptr);
  init();
  llama_model_quantize_params p = defaults();
  p.nthread = threads;
  p.ftype = ftype;
  auto t0 = std::chrono::steady_clock::now();
  const uint32_t rc = quantize(in, out, &p);
  auto t1 = std::chrono::steady_clock::now();
  std::printf("llama seconds %.3f\n", std::chrono::duration<double>(t1 - t0).count());
  return rc == 0 ? 0 : 1;
}

int run_qforge(const char* in, const char* out, const char* type, int threads) {
  auto t0 = std::chrono::steady_clock::now();
  qforge::Model m = qforge::read_gguf(in);
  qforge::gguf_quant::QuantizeOptions o;
  o.type = type;
  qforge::gguf_quant::quantize_model(m, o, threads);
  qforge::write_gguf(m, out);
  auto t1 = std::chrono::steady_clock::now();
  std::printf("qforge seconds %.3f\n", std::chrono::duration<double>(t1 - t0).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 3) return usage();
    const std::string mode = argv[1];
    if (mode == "generate") {
      qforge::TinyLlamaOptions o;
      o.layers = argc > 3 ? std::atoi(argv[3]) : 12;
      o.embd = argc > 4 ? std::atoi(argv[4]) : 1024;
      o.ff = argc > 5 ? std::atoi(argv[5]) : 2816;
      o.vocab = argc > 6 ? std::atoi(argv[6]) : 32000;
      o.heads = 16;
      o.heads_kv = 4;
      o.context = 2048;
      o.name = "qforge-bench-llama";
      qforge::write_gguf(qforge::make_tiny_llama(o), argv[2]);
      return 0;
    }
    if (argc < 6) return usage();
    if (mode == "llama") return run_llama(argv[2], argv[3], std::atoi(argv[4]), std::atoi(argv[5]));
    if (mode == "qforge") return run_qforge(argv[2], argv[3], argv[4], std::atoi(argv[5]));
    return usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
