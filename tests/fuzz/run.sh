#!/bin/sh
# Builds the fuzzers with clang's libFuzzer + ASan + UBSan and, given a time,
# runs each for that many seconds on its seed corpus (`make fuzz` runs this):
#   tests/fuzz/run.sh [OUT_DIR] [SECONDS]
# Needs clang and libclang-rt-14-dev (Debian). Not part of the default build.
# FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION lets the .npz fuzzer past CRC checks.
# New corpus entries go to OUT_DIR/corpus_<name>; findings (crash-*, oom-*,
# timeout-*) to OUT_DIR, and the script exits non-zero.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-/tmp/qforge-fuzz}
secs=${2:-0}
mkdir -p "$out"
CXX=${CXX:-clang++}
flags="-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
defs="-DONNX_ML=1 -DONNX_NAMESPACE=onnx -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION"
src="$root/pipeline/src"
objs=""
for f in types model npy npz dataset; do
  $CXX $flags $defs -I"$root/pipeline/include" -c "$src/$f.cc" -o "$out/$f.o"
  objs="$objs $out/$f.o"
done
for name in npy npz tensor_pb; do
  $CXX $flags $defs -I"$root/pipeline/include" -o "$out/fuzz_$name" "$here/fuzz_$name.cc" $objs \
    -lfmt -lonnx_proto -lprotobuf -lz
done
if [ "$secs" -gt 0 ]; then
  for name in npy npz tensor_pb; do
    mkdir -p "$out/corpus_$name"
    (cd "$out" && ./fuzz_$name -max_total_time="$secs" -rss_limit_mb=2048 \
      "$out/corpus_$name" "$here/corpus/$name")
  done
fi
