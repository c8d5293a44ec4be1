#!/bin/sh
# bench/select_precision/run.sh BUILD_DIR — select-precision against llama.cpp's mixtures at
# exactly their file sizes (budget = "Q3_K_M" / "Q4_K_M" / "Q5_K_M"): the measured weight
# error (unweighted, and weighted by a synthetic importance matrix) and the next-token KL
# divergence against the F32 model in llama.cpp (node-llama-cpp 3.22.1's libllama), averaged
# over the positions of a fixed token sequence, for plans minimising the weight error and
# plans minimising the measured next-token KL (objective = "kl", sensitivities measured by
# gguf-sensitivity on other token sequences than the one KL is evaluated on).
# Results: bench/select_precision/README.md.
#
# The model is qforge's generated llama (make_tiny_llama: deterministic pseudo-random
# weights, not a trained model); smollm2.sh, run at the end, makes the same comparison on a
# real trained model (SmolLM2-135M-Instruct, fetched by `make models`).
# Environment: BENCH_DIR (default BUILD_DIR/bench/select_precision), QFORGE_NPM_DIR
# (default BUILD_DIR/deps/node_modules), LAYERS/EMBD/FF/VOCAB (model shape).
set -eu
BUILD=${1:?usage: bench/select_precision/run.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${BENCH_DIR:-$BUILD/bench/select_precision}
export QFORGE_NPM_DIR=${QFORGE_NPM_DIR:-$BUILD/deps/node_modules}
LAYERS=${LAYERS:-6} EMBD=${EMBD:-512} FF=${FF:-1024} VOCAB=${VOCAB:-1024}
mkdir -p "$DIR"
cd "$DIR"
"$BUILD/bin/make_tiny_llama" f32.gguf --layers "$LAYERS" --embd "$EMBD" --ff "$FF" --vocab "$VOCAB" --seed 5 >/dev/null

# A synthetic importance matrix (legacy .dat): per weight, one log-normal value per column
# from a fixed seed. Not measured activations: it only makes the columns unequal, for the
# mixture (quantize-gguf uses it too) and for the plan alike.
python3 - "$LAYERS" "$EMBD" "$FF" <<'PY'
import math, random, struct, sys
layers, embd, ff = map(int, sys.argv[1:])
rnd = random.Random(1234)
entries = []
for l in range(layers):
    for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"):
        entries.append((f"blk.{l}.{n}.weight", embd))
    entries.append((f"blk.{l}.ffn_down.weight", ff))
entries.append(("output.weight", embd))
with open("imatrix.dat", "wb") as f:
    f.write(struct.pack("<i", len(entries)))
    for name, n in entries:
        b = name.encode()
        f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", 1, n))
        f.write(struct.pack(f"<{n}f", *[math.exp(rnd.gauss(0, 1)) for _ in range(n)]))
    f.write(struct.pack("<i", 1) + struct.pack("<i", 9) + b"synthetic")
PY

# Token sequences the sensitivities are measured on (4 x 128 ids from a seeded generator):
# not the sequence the KL is evaluated on below.
mkdir -p tokens
python3 - "$VOCAB" <<'PY'
import random, struct, sys
vocab = int(sys.argv[1])
rnd = random.Random(7)
for k in range(4):
    ids = [rnd.randrange(3, vocab) for _ in range(128)]
    header = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }" % len(ids)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(f"tokens/s{k}.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(f"<{len(ids)}i", *ids))
PY

cat >qforge.toml <<'TOML'
[build]
output = "dist"

[datasets.tokens]
files = ["tokens/*.npy"]

[models.llm]
path = "f32.gguf"

[[targets]]
name = "mix-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "quantize-gguf", type = "{t}" } ]

[[targets]]
name = "plan-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "select-precision", budget = "{t}" }, { pass = "quantize-gguf", type = "{t}" } ]

[[targets]]
name = "imix-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "quantize-gguf", type = "{t}", imatrix = "imatrix.dat" } ]

[[targets]]
name = "iplan-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "select-precision", budget = "{t}", imatrix = "imatrix.dat" },
             { pass = "quantize-gguf", type = "{t}", imatrix = "imatrix.dat" } ]

[[targets]]
name = "klplan-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "gguf-sensitivity", dataset = "tokens" },
             { pass = "select-precision", budget = "{t}", objective = "kl" },
             { pass = "quantize-gguf", type = "{t}" } ]

[[targets]]
name = "iklplan-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "gguf-sensitivity", dataset = "tokens", imatrix = "imatrix.dat" },
             { pass = "select-precision", budget = "{t}", objective = "kl", imatrix = "imatrix.dat" },
             { pass = "quantize-gguf", type = "{t}", imatrix = "imatrix.dat" } ]

[[targets]]
name = "kleplan-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "gguf-sensitivity", dataset = "tokens" },
             { pass = "select-precision", budget = "{t}", objective = "kl", max_error = "reference" },
             { pass = "quantize-gguf", type = "{t}" } ]

[[targets]]
name = "ikleplan-{t}"
model = "llm"
matrix = { t = ["Q3_K_M", "Q4_K_M", "Q5_K_M"] }
pipeline = [ { pass = "gguf-sensitivity", dataset = "tokens", imatrix = "imatrix.dat" },
             { pass = "select-precision", budget = "{t}", objective = "kl", max_error = "reference", imatrix = "imatrix.dat" },
             { pass = "quantize-gguf", type = "{t}", imatrix = "imatrix.dat" } ]
TOML
"$BUILD/bin/qforge" build -f qforge.toml -j 1 >build.log 2>&1 || { cat build.log; exit 1; }

TOKENS=$(python3 -c "print(','.join(str(3 + (i * 7919) % ($VOCAB - 3)) for i in range(96)))")
node "$HERE/kl.mjs" f32.gguf "$TOKENS" dist/*.gguf >kl.txt

python3 - <<'PY'
import json, os, re
rep = json.load(open("dist/report.json"))
tg = {t["name"]: t for t in rep["targets"]}
kl = {}
for line in open("kl.txt"):
    m = re.match(r"(\S+)\.gguf kl=(\S+) top1=(\S+)", line)
    kl[m.group(1)] = (float(m.group(2)), float(m.group(3)))
sens = [s for s in rep["steps"] if s["pass"] == "gguf-sensitivity"]
print("model: %s (%d MB F32)" % ("make_tiny_llama", os.path.getsize("f32.gguf") >> 20))
for s in sens:
    print("gguf-sensitivity step: %s, %.1f s, shared by %d targets" % (s["status"], s["seconds"], len(s["targets"])))
print()
# E: weight-error plan; K: KL plan; KE: KL plan with the weight error at most the mixture's
rows = (("none", "mix", "plan", "klplan", "kleplan"), ("synthetic", "imix", "iplan", "iklplan", "ikleplan"))
print("| imatrix | size of | llama.cpp bytes | E bytes | K bytes | KE bytes | llama.cpp error | E error | K error | KE error |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for w, mix, plan, klp, klep in rows:
    for t in ("Q3_K_M", "Q4_K_M", "Q5_K_M"):
        a, b, c, d = (tg[f"{n}-{t}"] for n in (mix, plan, klp, klep))
        print(f"| {w} | {t} | {a['bytes']} | {b['bytes']} | {c['bytes']} | {d['bytes']} | "
              f"{b['metrics']['reference_error']:.5g} | {b['metrics']['error']:.5g} | {c['metrics']['error']:.5g} | "
              f"{d['metrics']['error']:.5g} |")
print()
print("| imatrix | size of | llama.cpp KL | E KL | K KL | KE KL | K estimate | KE estimate | llama.cpp estimate | llama.cpp top-1 | E top-1 | K top-1 | KE top-1 |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for w, mix, plan, klp, klep in rows:
    for t in ("Q3_K_M", "Q4_K_M", "Q5_K_M"):
        m, me = tg[f"{klp}-{t}"]["metrics"], tg[f"{klep}-{t}"]["metrics"]
        k = [kl[f"{n}-{t}"] for n in (mix, plan, klp, klep)]
        print(f"| {w} | {t} | " + " | ".join(f"{x[0]:.4e}" for x in k) +
              f" | {m['kl_estimate']:.4e} | {me['kl_estimate']:.4e} | {m.get('reference_kl_estimate', float('nan')):.4e} | " +
              " | ".join(f"{x[1]:.3f}" for x in k) + " |")
PY

# The same comparison on a real trained model, in its own directory.
echo
BENCH_DIR="$DIR/smollm2" "$HERE/smollm2.sh" "$BUILD"
