#!/usr/bin/env bash
# Generates the quickstart's small models with qforge's own tools: a
# llama-architecture GGUF (F32 weights), an ONNX MLP and an ONNX image
# classifier, and the PNG images the classifier is calibrated on.
#   examples/quickstart/make_models.sh BUILD_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "${1:-build}" && pwd)/bin"
mkdir -p "$here/models"
[ -f "$here/models/tiny-llama.gguf" ] ||
  "$bin/make_tiny_llama" "$here/models/tiny-llama.gguf" --layers 2 --embd 256 --ff 768 --vocab 512 --heads 4 --heads-kv 2
[ -f "$here/models/mlp.onnx" ] || "$bin/make_tiny_onnx" mlp "$here/models/mlp.onnx"
[ -f "$here/models/cnn.onnx" ] || "$bin/make_tiny_onnx" cnn "$here/models/cnn.onnx"
[ -d "$here/images/calib" ] || "$bin/make_images" "$here/images/calib" 16 48 40 1
[ -d "$here/images/holdout" ] || "$bin/make_images" "$here/images/holdout" 8 48 40 2
