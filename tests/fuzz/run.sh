#!/bin/sh
# Builds the fuzzers with clang's libFuzzer + ASan + UBSan and, given a time,
# runs each for that many seconds on its seed corpus (`make fuzz` runs this):
#   tests/fuzz/run.sh [OUT_DIR] [SECONDS] [NAME...]
# Needs clang and libclang-rt-14-dev (Debian; `make fuzz` installs them).
# FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION lets the .npz fuzzer past CRC checks.
# New corpus entries go to OUT_DIR/corpus_<name>; findings (crash-*, oom-*,
# timeout-*) to OUT_DIR, and the script exits non-zero.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-/tmp/qforge-fuzz}
secs=${2:-0}
shift 2 2>/dev/null || shift $#
names=${*:-"npy npz tensor_pb gguf manifest onnx safetensors"}
# Absolute: the runs below cd into it (`make fuzz` passes a relative build-fuzz).
mkdir -p "$out"
out=$(cd "$out" && pwd)
CXX=${CXX:-clang++}
flags="-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
# TOML++ as the real build uses it: the shared library (built with NDEBUG).
defs="-DONNX_ML=1 -DONNX_NAMESPACE=onnx -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION $(pkg-config --cflags tomlplusplus)"
incs="-I$root/pipeline/include -I$root/formats -I$root/plugins"
# Object files, compiled once: the core pieces and the format readers.
compile() {  # compile NAME SOURCE
  [ -f "$out/$1.o" ] && [ "$out/$1.o" -nt "$2" ] || $CXX $flags $defs $incs -c "$2" -o "$out/$1.o"
}
for f in types model npy npz dataset image manifest diag value graph atomic_file; do
  compile "$f" "$root/pipeline/src/$f.cc"
done
for f in "$root"/formats/gguf/reader.cc "$root"/formats/gguf/writer.cc; do
  compile "gguf_$(basename "$f" .cc)" "$f"
done
# The safetensors plugin (built out of tree; its sources but the entry point).
for f in format reader writer metadata; do
  compile "st_$f" "$root/plugins/safetensors/$f.cc"
done
onnx_objs=""
if [ -d "$root/formats/onnx" ]; then
  for f in "$root"/formats/onnx/onnx_*.cc; do
    [ -f "$f" ] || continue
    compile "onnx_$(basename "$f" .cc)" "$f"
    onnx_objs="$onnx_objs $out/onnx_$(basename "$f" .cc).o"
  done
fi
core="$out/types.o $out/model.o $out/atomic_file.o"
for name in $names; do
  case $name in
    npy|npz|tensor_pb) objs="$core $out/npy.o $out/npz.o $out/dataset.o $out/image.o" ;;
    gguf) objs="$core $out/value.o $out/gguf_reader.o $out/gguf_writer.o" ;;
    manifest) objs="$out/types.o $out/manifest.o $out/diag.o $out/value.o" ;;
    onnx) objs="$core $out/value.o $out/graph.o $onnx_objs" ;;
    safetensors) objs="$core $out/st_format.o $out/st_reader.o $out/st_writer.o $out/st_metadata.o" ;;
  esac
  $CXX $flags $defs $incs -o "$out/fuzz_$name" "$here/fuzz_$name.cc" $objs \
    -lfmt -lstb -lonnx -lonnx_proto -lprotobuf -lz -ltomlplusplus -lboost_filesystem
done
if [ "$secs" -gt 0 ]; then
  for name in $names; do
    mkdir -p "$out/corpus_$name"
    (cd "$out" && ./fuzz_$name -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
      "$out/corpus_$name" "$here/corpus/$name")
  done
fi
