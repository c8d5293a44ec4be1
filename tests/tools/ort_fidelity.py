#!/usr/bin/env python3
"""Fidelity of quantized models against their float model in ONNX Runtime, on
given samples (needs onnxruntime, numpy).

  ort_fidelity.py FLOAT CAND [CAND...] --data DIR [--threads T]

Runs FLOAT and each CAND on every DIR/*.npz (members named after the model
inputs; sorted by name) and prints one JSON object per line and candidate:

  {"model": CAND, "samples": n, "cosine_mean": m, "cosine_min": c,
   "sqnr_db": s, "argmax_agreement": a, "argmax_rows": k, "max_abs": x}

cosine_mean and cosine_min are over samples, each sample's cosine taken over
all its outputs concatenated (float64); sqnr_db is 10 log10 of the float
outputs' energy over the error's, over all samples; argmax_agreement is the
fraction of rows (every position of every output but the last axis) whose
argmax along the last axis is the same as the float model's (top-1
agreement for classifiers and for a recogniser's time steps). Exit status: 0;
3 a candidate failed to load or run; 2 usage.
"""
import glob
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def main(argv):
    args, pos, data, threads = list(argv), [], None, 2
    while args:
        a = args.pop(0)
        if a == "--data" and args:
            data = args.pop(0)
        elif a == "--threads" and args:
            threads = int(args.pop(0))
        else:
            pos.append(a)
    if len(pos) < 2 or not data:
        sys.stderr.write(__doc__)
        return 2
    files = sorted(glob.glob(os.path.join(data, "*.npz")))
    if not files:
        sys.stderr.write("ort_fidelity: no .npz samples in %s\n" % data)
        return 2
    ref = session(pos[0], threads)
    feeds = []
    for f in files:
        z = np.load(f)
        feeds.append({k: z[k] for k in z.files})
    refs = [[np.asarray(y, np.float64) for y in ref.run(None, x)] for x in feeds]
    status = 0
    for cand_path in pos[1:]:
        try:
            cand = session(cand_path, threads)
            outs = [[np.asarray(y, np.float64) for y in cand.run(None, x)] for x in feeds]
        except Exception as e:  # noqa: BLE001
            sys.stderr.write("%s failed: %s\n" % (cand_path, e))
            status = 3
            continue
        cos, sig, err, agree, rows, max_abs = [], 0.0, 0.0, 0, 0, 0.0
        for r, c in zip(refs, outs):
            a = np.concatenate([y.ravel() for y in r])
            b = np.concatenate([y.ravel() for y in c])
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos.append(float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb))
            sig += float(a @ a)
            err += float((a - b) @ (a - b))
            max_abs = max(max_abs, float(np.max(np.abs(a - b))))
            for yr, yc in zip(r, c):
                if yr.ndim >= 1 and yr.shape[-1] > 1:
                    agree += int(np.sum(yr.argmax(-1) == yc.argmax(-1)))
                    rows += int(yr.size // yr.shape[-1])
        print(json.dumps({
            "model": cand_path, "samples": len(feeds), "cosine_mean": float(np.mean(cos)),
            "cosine_min": float(np.min(cos)),
            "sqnr_db": float(10 * np.log10(sig / err)) if err > 0 else float("inf"),
            "argmax_agreement": agree / rows if rows else None, "argmax_rows": rows, "max_abs": max_abs}),
            flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
