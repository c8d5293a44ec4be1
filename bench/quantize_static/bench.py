#!/usr/bin/env python3
"""bench/quantize_static/bench.py BUILD_DIR — qforge's calibrate + quantize-static
against ONNX Runtime's quantize_static (bench/quantize_static/README.md).

For each model: the same float model, the same calibration samples and the
same settings (QDQ, uint8 activations, int8 symmetric weights per channel, the
same calibration method and percentile, the same op types) through
  qforge build --no-cache --target <model>-<method> -t THREADS
      (import, upgrade-opset 13, calibrate on the PNGs through the image
      dataset, quantize-static, emit), and
  python ort_quantize.py (onnx.version_converter to opset 13,
      quant_pre_process, quantize_static with a CalibrationDataReader over the
      same PNGs, decoded and normalised as qforge does),
each one process under /usr/bin/time -v (wall time, peak RSS). Every qforge
run goes first, then every ONNX Runtime run, the detector last. Then both
quantized models run in ONNX Runtime next to the float model on held-out
samples (other images, identical float arrays for both): cosine (mean and
min over samples), SQNR, and top-1 agreement for the recogniser's time steps
and the classifier. Prints a side-by-side table with ratios (qforge / ONNX
Runtime) and writes BUILD_DIR/bench/quantize_static.json.

Environment: THREADS (2), QUICK=1 (a smoke run: few small samples, minmax),
METHODS ("percentile minmax"; "entropy" too if wanted), MODELS (default
"cls bert rec det3 det"), PYTHON (BUILD_DIR/venv/bin/python), MODELS_DIR
(BUILD_DIR/models), BENCH_DIR (BUILD_DIR/bench).
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "tests", "tools")

IMAGENET = {"channels": "bgr", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1.0 / 255}
HALF = {"channels": "bgr", "mean": [0.5], "std": [0.5], "scale": 1.0 / 255}

# key: model file, kind of samples, preprocessing (PP-OCR's, as RapidOCR feeds
# them: BGR as OpenCV reads, x/255 then mean/std), calibration and held-out
# sample counts (full, quick), size (full, quick), top-1 reported
MODELS = {
    "det": dict(file="ppocrv4_det", what="PP-OCRv4 detector (DB, conv)", kind="page", pre=IMAGENET,
                cal=(16, 2), eval=(8, 2), size=((640, 640), (320, 320)), top1=False),
    "det3": dict(file="ppocrv3_det", what="PP-OCRv3 detector (DB, conv)", kind="page", pre=IMAGENET,
                 cal=(16, 2), eval=(8, 2), size=((640, 640), (320, 320)), top1=False),
    "rec": dict(file="ppocrv4_rec", what="PP-OCRv4 recogniser (SVTR)", kind="line", pre=HALF,
                cal=(32, 4), eval=(32, 4), size=((48, 320), (48, 320)), top1=True),
    "cls": dict(file="ppocr_mobile_v2_cls", what="PP-OCR v2 direction classifier", kind="line180", pre=HALF,
                cal=(32, 4), eval=(64, 8), size=((48, 192), (48, 192)), top1=True),
    "bert": dict(file="g2p_id_bert", what="g2p-id character BERT (attention)", kind="tokens", input="input_1",
                 cal=(16, 2), eval=(16, 4), batch=8, top1=True),
}

# quantize-static's default op types (docs/manifest.md), given to ONNX Runtime
# as op_types_to_quantize so both quantize the same kinds of nodes.
OP_TYPES = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "Reshape", "Transpose", "Squeeze",
            "Unsqueeze", "Flatten", "MaxPool", "GlobalMaxPool", "Slice", "Resize", "Gather", "DepthToSpace",
            "SpaceToDepth", "AveragePool", "GlobalAveragePool", "Relu", "Clip"]


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)


def timed(cmd, log):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, peak RSS MB, CPU seconds, output)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    out = p.stdout.decode(errors="replace")
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n" + out)
    if p.returncode != 0:
        sys.exit("bench: %s failed (log %s):\n%s" % (" ".join(cmd), log, out[-3000:]))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([0-9.]+)", out))
    return wall, int(m.group(1)) / 1024.0 if m else float("nan"), cpu, out


def prepare(key, spec, quick, python, d):
    """Calibration samples (PNGs or .npz) and held-out .npz arrays under d."""
    q = 1 if quick else 0
    cal, ev = spec["cal"][q], spec["eval"][q]
    cal_dir, eval_dir, arr_dir = (os.path.join(d, "samples", key, x) for x in ("cal", "eval", "eval_arrays"))
    stamp = os.path.join(d, "samples", key, "done-%d-%d" % (cal, ev))
    if not os.path.exists(stamp):
        shutil.rmtree(os.path.join(d, "samples", key), ignore_errors=True)
        gen = os.path.join(TOOLS, "synth_inputs.py")
        if spec["kind"] == "tokens":
            for out, n, seed in ((cal_dir, cal, 7), (arr_dir, ev, 8)):
                run([python, gen, "tokens", out, str(n), "--input", spec["input"], "--batch", str(spec["batch"]),
                     "--seed", str(seed), "--vocab", "2,31", "--mask", "31"])
        else:
            size = "%d,%d" % spec["size"][q]
            run([python, gen, "images", spec["kind"], cal_dir, str(cal), "--seed", "7", "--size", size])
            run([python, gen, "images", spec["kind"], eval_dir, str(ev), "--seed", "8", "--size", size])
            p = spec["pre"]
            run([python, gen, "arrays", arr_dir] + sorted(os.path.join(eval_dir, f) for f in os.listdir(eval_dir)) +
                ["--input", "x", "--channels", p["channels"], "--mean", ",".join(map(str, p["mean"])),
                 "--std", ",".join(map(str, p["std"])), "--scale", repr(p["scale"])])
        open(stamp, "w").close()
    ext = ".npz" if spec["kind"] == "tokens" else ".png"
    samples = sorted(os.path.join(cal_dir, f) for f in os.listdir(cal_dir) if f.endswith(ext))
    return samples, arr_dir


def manifest(d, models_dir, keys, methods, samples):
    t = ['[build]\noutput = "dist"\ncache = ".qforge/cache"\n']
    for k in keys:
        spec = MODELS[k]
        t.append('[models.%s]\npath = "%s"\n' % (k, os.path.join(models_dir, spec["file"] + ".onnx")))
        if spec["kind"] == "tokens":
            t.append('[datasets.%s]\nfiles = [%s]\n' % (k, ", ".join('"%s"' % s for s in samples[k])))
        else:
            p = spec["pre"]
            t.append('[datasets.%s]\nimages = [%s]\ninput = "x"\nchannels = "%s"\nmean = %s\nstd = %s\n' % (
                k, ", ".join('"%s"' % s for s in samples[k]), p["channels"], json.dumps(p["mean"]),
                json.dumps(p["std"])))
    for k in keys:
        for m in methods:
            # upgrade-opset and fold-constants explicitly, as ONNX Runtime's side
            # runs the converter and quant_pre_process (folding Shape of
            # constants drops tf2onnx's shape-only tensors from the BERT).
            t.append('[[targets]]\nname = "%s-%s"\nmodel = "%s"\npipeline = [\n'
                     '  { pass = "upgrade-opset", opset = 13 },\n'
                     '  { pass = "fold-constants" },\n'
                     '  { pass = "calibrate", dataset = "%s", method = "%s"%s },\n'
                     '  { pass = "quantize-static", activation_type = "uint8", weight_type = "int8", '
                     'per_channel = true },\n]\n' % (k, m, k, k, m,
                                                      ", percentile = 99.999" if m == "percentile" else ""))
    path = os.path.join(d, "qforge.toml")
    with open(path, "w") as f:
        f.write("\n".join(t))
    return path


def fidelity(python, float_model, cands, arrays, threads):
    out = subprocess.run([python, os.path.join(TOOLS, "ort_fidelity.py"), float_model] + cands +
                         ["--data", arrays, "--threads", threads], check=True, stdout=subprocess.PIPE).stdout
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    build = os.path.abspath(argv[0])
    quick = os.environ.get("QUICK", "") not in ("", "0")
    threads = os.environ.get("THREADS", "2")
    methods = os.environ.get("METHODS", "minmax" if quick else "percentile minmax").split()
    keys = os.environ.get("MODELS", "cls bert rec det3 det").split()
    python = os.environ.get("PYTHON", os.path.join(build, "venv", "bin", "python"))
    models_dir = os.environ.get("MODELS_DIR", os.path.join(build, "models"))
    bench_dir = os.environ.get("BENCH_DIR", os.path.join(build, "bench"))
    d = os.path.join(bench_dir, "quantize_static" + ("_quick" if quick else ""))
    qforge = os.path.join(build, "bin", "qforge")
    for k in keys:
        if k not in MODELS:
            sys.exit("bench: unknown model %s (one of %s)" % (k, " ".join(MODELS)))
    keys = [k for k in keys if os.path.exists(os.path.join(models_dir, MODELS[k]["file"] + ".onnx")) or
            print("bench: %s is missing (make models); skipped" % MODELS[k]["file"])]
    if not keys:
        return 1
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    shutil.rmtree(os.path.join(d, "dist"), ignore_errors=True)
    shutil.rmtree(os.path.join(d, "ort"), ignore_errors=True)
    os.makedirs(os.path.join(d, "ort"))
    samples, arrays = {}, {}
    for k in keys:
        samples[k], arrays[k] = prepare(k, MODELS[k], quick, python, d)
    toml = manifest(d, models_dir, keys, methods, samples)
    versions = subprocess.run([python, "-c", "import onnxruntime, onnx; print(onnxruntime.__version__, "
                               "onnx.__version__)"], check=True, stdout=subprocess.PIPE).stdout.decode().split()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print("quantize-static: qforge %s against ONNX Runtime %s quantize_static (onnx %s); %s, %d cores, "
          "threads %s%s" % (subprocess.run([qforge, "--version"], stdout=subprocess.PIPE).stdout.decode().split()[-1],
                            versions[0], versions[1], cpu, os.cpu_count(), threads, ", QUICK" if quick else ""))
    print("QDQ, uint8 activations, int8 symmetric weights per channel; methods: %s" % " ".join(methods))
    rows = []
    jobs = [(k, m) for k in keys for m in methods]
    # every qforge run, then every ONNX Runtime run (the detector last, alone)
    for k, m in jobs:
        load = os.getloadavg()[0]
        wall, rss, cpu, _ = timed([qforge, "build", "-f", toml, "--no-cache", "--target", "%s-%s" % (k, m),
                              "-t", threads], os.path.join(d, "logs", "qforge-%s-%s.log" % (k, m)))
        rows.append({"model": k, "method": m, "qforge": {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": rss,
                                                         "load": load,
                                                         "artifact": os.path.join(d, "dist", "%s-%s.onnx" % (k, m))}})
        print("  qforge %-5s %-10s %8.2f s %9.1f MB  (CPU %.2f s, load %.1f)" % (k, m, wall, rss, cpu, load),
              flush=True)
    for r in rows:
        k, m, spec = r["model"], r["method"], MODELS[r["model"]]
        out = os.path.join(d, "ort", "%s-%s.onnx" % (k, m))
        js = os.path.join(d, "ort", "%s-%s.json" % (k, m))
        with open(js, "w") as f:
            json.dump({"model": os.path.join(models_dir, spec["file"] + ".onnx"), "output": out,
                       "work": os.path.join(d, "ort", "work-%s-%s" % (k, m)), "input": spec.get("input", "x"),
                       "samples": samples[k], "preprocess": spec.get("pre"), "method": m, "percentile": 99.999,
                       "op_types": OP_TYPES, "per_channel": True, "opset": 13}, f)
        load = os.getloadavg()[0]
        wall, rss, cpu, log = timed([python, os.path.join(HERE, "ort_quantize.py"), js],
                               os.path.join(d, "logs", "ort-%s-%s.log" % (k, m)))
        steps = {s: float(v) for s, v in re.findall(r"^ort (\w+) ([0-9.]+)$", log, re.M)}
        r["ort"] = {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": rss, "load": load, "artifact": out,
                    "steps": steps}
        print("  ort    %-5s %-10s %8.2f s %9.1f MB  (CPU %.2f s, load %.1f; %s)" % (
            k, m, wall, rss, cpu, load, ", ".join("%s %.1f s" % kv for kv in steps.items())), flush=True)
    for k in keys:
        mine = [r for r in rows if r["model"] == k]
        cands = [x for r in mine for x in (r["qforge"]["artifact"], r["ort"]["artifact"])]
        res = {j["model"]: j for j in fidelity(python, os.path.join(models_dir, MODELS[k]["file"] + ".onnx"),
                                               cands, arrays[k], threads)}
        for r in mine:
            for side in ("qforge", "ort"):
                r[side]["fidelity"] = res.get(r[side]["artifact"])
    print()
    hdr = ("model", "method", "qf_s", "ort_s", "t_ratio", "cpu_ratio", "qf_MB", "ort_MB", "m_ratio", "qf_cos", "ort_cos",
           "qf_min", "ort_min", "qf_sqnr", "ort_sqnr", "qf_top1", "ort_top1", "qf_KB", "ort_KB")
    print("%-5s %-10s %7s %7s %7s %9s %8s %8s %7s %7s %7s %7s %7s %7s %8s %7s %8s %8s %8s" % hdr)
    for r in rows:
        q, o = r["qforge"], r["ort"]
        qf, of = q["fidelity"] or {}, o["fidelity"] or {}

        def top1(f):
            return "%.4f" % f["argmax_agreement"] if MODELS[r["model"]]["top1"] and f.get("argmax_agreement") \
                is not None else "-"
        for side in (q, o):
            side["artifact_bytes"] = os.path.getsize(side["artifact"]) if os.path.exists(side["artifact"]) else 0
        print("%-5s %-10s %7.2f %7.2f %7.3f %9.3f %8.1f %8.1f %7.3f %7.4f %7.4f %7.4f %7.4f %7.2f %8.2f %7s %8s %8.1f %8.1f" % (
            r["model"], r["method"], q["seconds"], o["seconds"], q["seconds"] / o["seconds"],
            q["cpu_seconds"] / o["cpu_seconds"], q["peak_rss_mb"],
            o["peak_rss_mb"], q["peak_rss_mb"] / o["peak_rss_mb"], qf.get("cosine_mean", float("nan")),
            of.get("cosine_mean", float("nan")), qf.get("cosine_min", float("nan")),
            of.get("cosine_min", float("nan")), qf.get("sqnr_db", float("nan")), of.get("sqnr_db", float("nan")),
            top1(qf), top1(of), q["artifact_bytes"] / 1024, o["artifact_bytes"] / 1024))
    os.makedirs(bench_dir, exist_ok=True)
    out = os.path.join(bench_dir, "quantize_static%s.json" % ("_quick" if quick else ""))
    with open(out, "w") as f:
        json.dump({"quick": quick, "threads": int(threads), "methods": methods, "onnxruntime": versions[0],
                   "onnx": versions[1], "cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
                   "models": {k: {kk: v for kk, v in MODELS[k].items()} for k in keys}, "runs": rows}, f, indent=1)
    print("results: %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
