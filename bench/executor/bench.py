#!/usr/bin/env python3
"""bench/executor/bench.py BUILD_DIR — qforge's cpu executor against ONNX Runtime
on real trained models (bench/executor/README.md).

For each model: writes SAMPLES deterministic inputs (tests/tools/ort_compare.py's
generator), then runs, alternating, REPS times each:
  qforge run MODEL --data DIR --out OUT -t THREADS
  python ort_runner MODEL DIR OUT THREADS   (ONNX Runtime, intra-op THREADS)
as separate processes, and prints per model the median whole-process wall time
of each, their ratio, the peak RSS of each (wait4's ru_maxrss), and the time per
sample inside each (qforge's and the runner's own loop timing).

Environment: THREADS (2), REPS (3), SAMPLES (per model, see MODELS), PYTHON
(BUILD_DIR/venv/bin/python), MODELS_DIR (BUILD_DIR/models).
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# name, kind, input arguments for ort_reference.py, samples
MODELS = [
    ("ppocr_mobile_v2_cls", "convolutional (MobileNetV3)", ["--glyphs", "--shape", "x=1,3,48,192"], 100),
    ("ppocrv4_det", "convolutional (PP-OCRv4 detector, DB head)", ["--glyphs", "--shape", "x=1,3,320,320"], 10),
    ("ppocrv4_rec", "attention (PP-OCRv4 recogniser, SVTR)", ["--glyphs", "--shape", "x=1,3,48,320"], 50),
]

ORT_RUNNER = r'''
import glob, os, sys, time
import numpy as np
import onnxruntime as ort
model, data, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
s = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
os.makedirs(out, exist_ok=True)
files = sorted(glob.glob(os.path.join(data, "*.npz")))
t0 = time.perf_counter()
for f in files:
    z = np.load(f)
    ys = s.run(None, {k: z[k] for k in z.files})
    stem = os.path.splitext(os.path.basename(f))[0]
    for k, y in enumerate(ys):
        np.save(os.path.join(out, "%s_%d.npy" % (stem, k)), y)
print("loop %.6f s for %d samples" % (time.perf_counter() - t0, len(files)))
'''


def timed(cmd):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read().decode()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit("bench: %s failed:\n%s" % (" ".join(cmd), out))
    return wall, ru.ru_maxrss / 1024.0, out


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    build = os.path.abspath(argv[0])
    threads = os.environ.get("THREADS", "2")
    reps = int(os.environ.get("REPS", "3"))
    python = os.environ.get("PYTHON", os.path.join(build, "venv", "bin", "python"))
    models_dir = os.environ.get("MODELS_DIR", os.path.join(build, "models"))
    qforge = os.path.join(build, "bin", "qforge")
    work = tempfile.mkdtemp(prefix="qforge_exec_bench_")
    runner = os.path.join(work, "ort_runner.py")
    with open(runner, "w") as f:
        f.write(ORT_RUNNER)
    print("threads %s, %d alternating runs each, median; whole-process wall time" % (threads, reps))
    print("%-22s %-44s %7s %9s %9s %7s %9s %9s %11s %11s" % (
        "model", "kind", "samples", "qforge_s", "ort_s", "ratio", "qf_rss_MB", "ort_rss_MB",
        "qf_ms/smpl", "ort_ms/smpl"))
    try:
        for name, kind, args, samples in MODELS:
            samples = int(os.environ.get("SAMPLES", samples))
            model = os.path.join(models_dir, name + ".onnx")
            if not os.path.exists(model):
                print("%-22s missing (make models)" % name)
                continue
            d = os.path.join(work, name)
            subprocess.run([python, os.path.join(ROOT, "tests", "tools", "ort_reference.py"), model, d,
                            "--samples", str(samples)] + args, check=True, stdout=subprocess.DEVNULL)
            data = os.path.join(d, "data")
            q_t, o_t, q_rss, o_rss, q_loop, o_loop = [], [], [], [], [], []
            for _ in range(reps):
                w, rss, out = timed([qforge, "run", model, "--data", data, "--out", os.path.join(d, "q"),
                                     "-t", threads])
                q_t.append(w)
                q_rss.append(rss)
                m = re.search(r"in ([0-9.]+) s", out)
                q_loop.append(float(m.group(1)) if m else float("nan"))
                w, rss, out = timed([python, runner, model, data, os.path.join(d, "o"), threads])
                o_t.append(w)
                o_rss.append(rss)
                m = re.search(r"loop ([0-9.]+) s", out)
                o_loop.append(float(m.group(1)) if m else float("nan"))
            qt, ot = statistics.median(q_t), statistics.median(o_t)
            print("%-22s %-44s %7d %9.3f %9.3f %7.2f %9.1f %9.1f %11.2f %11.2f" % (
                name, kind, samples, qt, ot, qt / ot, max(q_rss), max(o_rss),
                1e3 * statistics.median(q_loop) / samples, 1e3 * statistics.median(o_loop) / samples))
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
