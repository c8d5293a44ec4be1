#!/bin/sh
# bench/executor/run.sh BUILD_DIR — qforge's cpu executor against ONNX Runtime
# on real trained models (build/models, from `make models`): the same inputs,
# the same threads, alternating runs. Prints per model the whole-process wall
# time of each tool (median of REPS), their ratio, the time spent running
# samples (each tool's own clock, after loading), peak RSS (/usr/bin/time -v)
# and whether the outputs agree (minimum cosine, identical argmax).
#
# Environment: THREADS (default 2), REPS (default 3), SAMPLES (default 8),
# MODELS (default "ppocrv4_det:det ppocrv4_rec:rec ppocr_mobile_v2_cls:cls").
set -eu
BUILD=$(cd "${1:?usage: bench/executor/run.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
THREADS=${THREADS:-2}
REPS=${REPS:-3}
SAMPLES=${SAMPLES:-8}
MODELS=${MODELS:-"ppocrv4_det:det ppocrv4_rec:rec ppocr_mobile_v2_cls:cls"}
PY=$BUILD/venv/bin/python
QF=$BUILD/bin/qforge
TIME=/usr/bin/time
DIR=$BUILD/bench/executor
mkdir -p "$DIR"
[ -x "$TIME" ] || { echo "bench: /usr/bin/time is needed (apt-get install time)"; exit 1; }

# run NAME CMD... -> "wall_seconds rss_kb run_seconds" (run_seconds from the tool's own output)
run() {
  name=$1; shift
  start=$(date +%s.%N)
  "$TIME" -v "$@" >"$DIR/$name.out" 2>"$DIR/$name.time" || { echo "bench: $name failed:"; cat "$DIR/$name.out" "$DIR/$name.time"; exit 1; }
  end=$(date +%s.%N)
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$DIR/$name.time")
  rs=$(sed -n 's/.*run_seconds \([0-9.]*\).*/\1/p' "$DIR/$name.out" | tail -1)
  echo "$(echo "$end - $start" | bc -l) $rss ${rs:-0}"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "threads: $THREADS, samples per run: $SAMPLES, runs per tool: $REPS (alternating)"
echo "$(uname -m), $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
printf '%-22s %9s %9s %7s %9s %9s %7s %8s %8s %10s %s\n' model ort_s qforge_s ratio ort_run qf_run run_ratio ort_MB qf_MB min_cosine argmax
for spec in $MODELS; do
  m=${spec%%:*}; kind=${spec#*:}
  model=$BUILD/models/$m.onnx
  [ -f "$model" ] || { echo "bench: $model missing (make models)"; exit 1; }
  data=$DIR/$m-inputs
  [ -d "$data" ] || "$PY" "$HERE/inputs.py" "$kind" "$data" "$SAMPLES"
  : >"$DIR/o.txt"; : >"$DIR/q.txt"
  i=0
  while [ $i -lt "$REPS" ]; do
    rm -rf "$DIR/$m-ort" "$DIR/$m-qf"
    run ort "$PY" "$HERE/ort.py" "$model" "$data" "$DIR/$m-ort" "$THREADS" >>"$DIR/o.txt"
    run qforge "$QF" run "$model" --data "$data" --out "$DIR/$m-qf" -t "$THREADS" >>"$DIR/q.txt"
    i=$((i + 1))
  done
  os=$(cut -d' ' -f1 "$DIR/o.txt" | median); qs=$(cut -d' ' -f1 "$DIR/q.txt" | median)
  orun=$(cut -d' ' -f3 "$DIR/o.txt" | median); qrun=$(cut -d' ' -f3 "$DIR/q.txt" | median)
  orss=$(cut -d' ' -f2 "$DIR/o.txt" | sort -n | tail -1); qrss=$(cut -d' ' -f2 "$DIR/q.txt" | sort -n | tail -1)
  agree=$("$PY" "$HERE/agree.py" "$DIR/$m-ort" "$DIR/$m-qf")
  cos=$(echo "$agree" | cut -d' ' -f2); am=$(echo "$agree" | cut -d' ' -f4)
  rr="-"; [ "$(echo "$orun > 0 && $qrun > 0" | bc -l)" = 1 ] && rr=$(printf '%.2f' "$(echo "$qrun / $orun" | bc -l)")
  printf '%-22s %9.2f %9.2f %7.2f %9.2f %9.2f %7s %8.1f %8.1f %10s %s\n' "$m" "$os" "$qs" "$(echo "$qs / $os" | bc -l)" \
    "$orun" "$qrun" "$rr" "$(echo "$orss / 1024" | bc -l)" "$(echo "$qrss / 1024" | bc -l)" "$cos" "$am"
done
