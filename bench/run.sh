#!/bin/sh
# bench/run.sh BUILD_DIR — the benchmarks, run by hand (`make bench`), not by `make test`:
# gguf_quantize (below), then bench/executor/bench.py (the cpu executor against ONNX Runtime),
# then bench/quantize_static/bench.py (calibrate + quantize-static against ONNX Runtime's
# quantize_static; QUICK=1 for a smoke run; bench/quantize_static/README.md),
# then bench/select_precision/run.sh (precision plans against llama.cpp's mixtures at equal size).
# then bench/remote_cache/run.sh (a warm remote cache against a cold build, nginx on loopback).
#
# gguf_quantize: qforge's quantize-gguf against llama.cpp's llama_model_quantize (libllama
# of node-llama-cpp 3.22.1) on a generated llama-architecture F32 model of ~800 MB, same
# thread count, alternating runs; prints wall time, the time ratio, peak RSS (from
# /usr/bin/time -v) and whether the two outputs are byte-identical.
#
# Environment: THREADS (default: nproc), REPS (default 3), TYPES (default
# "Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K"), BENCH_DIR (default BUILD_DIR/bench), QFORGE_NPM_DIR
# (default BUILD_DIR/deps/node_modules).
set -eu
BUILD=${1:?usage: bench/run.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
TYPES=${TYPES:-"Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K"}
DIR=${BENCH_DIR:-$BUILD/bench}
NPM=${QFORGE_NPM_DIR:-$BUILD/deps/node_modules}
BINS=$NPM/@node-llama-cpp/linux-x64/bins/linux-x64
export QFORGE_LLAMA_SO=${QFORGE_LLAMA_SO:-$BINS/libllama.v0.5.0.so}
export QFORGE_GGML_BASE_SO=${QFORGE_GGML_BASE_SO:-$BINS/libggml-base.so}
DRIVER=$BUILD/bin/gguf_quantize_bench
TIME=/usr/bin/time

[ -x "$DRIVER" ] || { echo "bench: $DRIVER not found (build the gguf_quantize_bench target)"; exit 1; }
[ -f "$QFORGE_LLAMA_SO" ] || { echo "bench: $QFORGE_LLAMA_SO not found (make runtimes installs node-llama-cpp)"; exit 1; }
[ -x "$TIME" ] || { echo "bench: /usr/bin/time is needed (apt-get install time)"; exit 1; }
mkdir -p "$DIR"
MODEL=$DIR/bench-llama-f32.gguf
if [ ! -f "$MODEL" ]; then
  echo "generating $MODEL"
  "$DRIVER" generate "$MODEL"
fi

ftype_of() {
  case $1 in
    Q4_0) echo 2 ;; Q4_1) echo 3 ;; Q8_0) echo 7 ;; Q5_0) echo 8 ;; Q5_1) echo 9 ;; Q2_K) echo 10 ;;
    Q3_K_S) echo 11 ;; Q3_K_M) echo 12 ;; Q3_K_L) echo 13 ;; Q4_K_S) echo 14 ;; Q4_K_M) echo 15 ;;
    Q5_K_S) echo 16 ;; Q5_K_M) echo 17 ;; Q6_K) echo 18 ;; IQ4_NL) echo 25 ;; IQ4_XS) echo 30 ;;
    *) echo "bench: unknown type $1" >&2; exit 1 ;;
  esac
}

# run TOOL TYPE OUT -> prints "seconds rss_kb"
run() {
  log=$DIR/time.log
  if [ "$1" = llama ]; then arg=$(ftype_of "$2"); else arg=$2; fi
  "$TIME" -v "$DRIVER" "$1" "$MODEL" "$3" "$arg" "$THREADS" >"$DIR/out.log" 2>"$log" ||
    { echo "bench: $1 $2 failed:"; cat "$DIR/out.log" "$log"; exit 1; }
  s=$(sed -n 's/^\(llama\|qforge\) seconds //p' "$DIR/out.log")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  echo "$s $rss"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "model: $MODEL ($(du -m "$MODEL" | cut -f1) MB), threads: $THREADS, runs per tool: $REPS (alternating)"
echo "$(uname -m), $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
printf '%-8s %10s %10s %7s %12s %12s %s\n' type llama_s qforge_s ratio llama_rss_MB qforge_rss_MB identical
for t in $TYPES; do
  : >"$DIR/l.txt"; : >"$DIR/q.txt"
  i=0
  while [ $i -lt "$REPS" ]; do
    run llama "$t" "$DIR/llama-$t.gguf" >>"$DIR/l.txt"
    run qforge "$t" "$DIR/qforge-$t.gguf" >>"$DIR/q.txt"
    i=$((i + 1))
  done
  ls=$(cut -d' ' -f1 "$DIR/l.txt" | median); qs=$(cut -d' ' -f1 "$DIR/q.txt" | median)
  lr=$(cut -d' ' -f2 "$DIR/l.txt" | sort -n | tail -1); qr=$(cut -d' ' -f2 "$DIR/q.txt" | sort -n | tail -1)
  same=no; cmp -s "$DIR/llama-$t.gguf" "$DIR/qforge-$t.gguf" && same=yes
  printf '%-8s %10.2f %10.2f %7.2f %12.1f %12.1f %s\n' "$t" "$ls" "$qs" "$(echo "$qs / $ls" | bc -l)" \
    "$(echo "$lr / 1024" | bc -l)" "$(echo "$qr / 1024" | bc -l)" "$same"
  rm -f "$DIR/llama-$t.gguf" "$DIR/qforge-$t.gguf"
done

echo
echo "executor: qforge run against ONNX Runtime (bench/executor/README.md)"
"$BUILD/venv/bin/python" "$(dirname "$0")/executor/bench.py" "$BUILD"

echo
echo "quantize_static: qforge calibrate + quantize-static against ONNX Runtime's quantize_static (bench/quantize_static/README.md)"
"$BUILD/venv/bin/python" "$(dirname "$0")/quantize_static/bench.py" "$BUILD"

echo
echo "select-precision: plans against llama.cpp's mixtures at equal size (bench/select_precision/README.md)"
QFORGE_NPM_DIR=$NPM "$(dirname "$0")/select_precision/run.sh" "$BUILD"

echo
echo "remote cache: a second checkout against a warm nginx WebDAV cache against a cold build (docs/scale.md)"
REPS=${REPS:-3} "$(dirname "$0")/remote_cache/run.sh" "$BUILD"
