#!/usr/bin/env bash
# Generates the quickstart's two small models with qforge's own tools:
# a llama-architecture GGUF (F32 weights) and an ONNX MLP.
#   examples/quickstart/make_models.sh BUILD_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "${1:-build}" && pwd)/bin"
mkdir -p "$here/models"
[ -f "$here/models/tiny-llama.gguf" ] ||
  "$bin/make_tiny_llama" "$here/models/tiny-llama.gguf" --layers 2 --embd 256 --ff 768 --vocab 512 --heads 4 --heads-kv 2
[ -f "$here/models/mlp.onnx" ] || "$bin/make_tiny_onnx" mlp "$here/models/mlp.onnx"
