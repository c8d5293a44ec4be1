#!/usr/bin/env python3
"""ONNX Runtime's side of bench/executor: runs MODEL on every .npy in DIR
(sorted; each feeds the first input) with THREADS intra-op threads, writes
each output as <sample>_<k>.npy into OUT (as `qforge run` does) and prints
the time spent running (after the session is made) as 'ort run_seconds S'.

  ort.py MODEL DIR OUT THREADS
"""
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, data, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    os.makedirs(out, exist_ok=True)
    files = sorted(f for f in os.listdir(data) if f.endswith(".npy"))
    t0 = time.perf_counter()
    for f in files:
        outs = sess.run(None, {name: np.load(os.path.join(data, f))})
        for k, o in enumerate(outs):
            np.save(os.path.join(out, "%s_%d.npy" % (f[:-4], k)), o)
    print("ort run_seconds %.4f" % (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
