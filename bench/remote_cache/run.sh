#!/usr/bin/env bash
# bench/remote_cache/run.sh BUILD_DIR — a second checkout's build time with a warm
# remote cache against a cold build (docs/scale.md, "Measured"). Run by hand.
#
# Starts nginx (Debian's nginx-light, WebDAV PUT) on 127.0.0.1:$PORT (default 18940)
# with everything in a temporary directory, then, for each manifest, REPS times
# (default 3) on fresh copies of one directory: a cold build without a remote
# cache, a cold build with an empty server (it uploads), and a second checkout
# (same files, empty local cache, no dist/) against the warm server. Prints wall
# times, whether the second checkout's artifacts equal the first's (cmp), and
# what was transferred (report.json's remote_cache).
#
# Manifests: examples/quickstart (its make_models.sh), and a 443 MB F32 llama
# (make_tiny_llama) with targets Q4_K_M, Q5_K_M, Q8_0 built with -t 2.
set -euo pipefail
BUILD=$(cd "${1:?usage: bench/remote_cache/run.sh BUILD_DIR}" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B=$BUILD/bin
PORT=${PORT:-18940}
REPS=${REPS:-3}
URL=http://127.0.0.1:$PORT
W=$(mktemp -d /tmp/qforge-remote-bench.XXXXXX)
mkdir -p "$W/srv/root" "$W/srv/tmp"
cat >"$W/srv/nginx.conf" <<CONF
daemon off;
master_process off;
pid $W/srv/nginx.pid;
error_log $W/srv/error.log;
events { worker_connections 64; }
http {
  access_log $W/srv/access.log;
  client_body_temp_path $W/srv/tmp;
  server {
    listen 127.0.0.1:$PORT;
    root $W/srv/root;
    client_max_body_size 0;
    location / { dav_methods PUT; create_full_put_path on; dav_access user:rw; }
  }
}
CONF
/usr/sbin/nginx -e "$W/srv/error.log" -p "$W/srv" -c "$W/srv/nginx.conf" &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; wait $NGINX 2>/dev/null; rm -rf "$W"' EXIT
sleep 1

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>"$W/last.err" || { cat "$W/last.err"; exit 1; }; e=$(date +%s.%N); awk "BEGIN { printf \"%.2f\", $e - $s }"; }

measure() {  # NAME DIR [qforge build options]
  local name=$1 q=$2; shift 2
  echo "== $name"
  for i in $(seq "$REPS"); do
    rm -rf "$W/a" "$W/b" "$W/c" "$W/srv/root"/*
    cp -r "$q" "$W/a"; cp -r "$q" "$W/b"; cp -r "$q" "$W/c"
    local cold up warm same=yes
    cold=$(cd "$W/c" && secs "$B/qforge" build "$@")
    up=$(cd "$W/a" && secs "$B/qforge" build "$@" --remote-cache "$URL")
    warm=$(cd "$W/b" && secs "$B/qforge" build "$@" --remote-cache "$URL")
    for f in "$W"/a/dist/*.gguf "$W"/a/dist/*.onnx; do
      [ -e "$f" ] || continue
      cmp -s "$f" "$W/b/dist/$(basename "$f")" || same=no
    done
    echo "run $i: cold ${cold}s; cold, uploading ${up}s; second checkout, warm remote ${warm}s; identical: $same"
  done
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('first: ', j['remote_cache'])" "$W/a/dist/report.json"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('second:', j['summary'], j['remote_cache'])" "$W/b/dist/report.json"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cp -r "$SRC/examples/quickstart" "$W/quickstart"
rm -rf "$W/quickstart/models" "$W/quickstart/images" "$W/quickstart/dist" "$W/quickstart/.qforge"
"$W/quickstart/make_models.sh" "$BUILD" >/dev/null
measure "examples/quickstart (12 targets)" "$W/quickstart"

mkdir -p "$W/llm/models"
"$B/make_tiny_llama" "$W/llm/models/llm.gguf" --layers 4 --embd 1024 --ff 2816 --vocab 32000 --heads 16 --heads-kv 4 >/dev/null
cat >"$W/llm/qforge.toml" <<T
[build]
output = "dist"
cache = "cache"
[models.llm]
path = "models/llm.gguf"
[[targets]]
name = "llm-{type}"
model = "llm"
matrix = { type = ["Q4_K_M", "Q5_K_M", "Q8_0"] }
pipeline = [ { pass = "quantize-gguf", type = "{type}" } ]
T
measure "$(stat -c %s "$W/llm/models/llm.gguf") byte F32 llama, Q4_K_M Q5_K_M Q8_0, -t 2" "$W/llm" -t 2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
