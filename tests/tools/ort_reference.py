#!/usr/bin/env python3
"""Writes deterministic inputs for a model and ONNX Runtime's outputs on them,
for qforge's executor tests (needs onnxruntime, numpy).

  ort_reference.py MODEL DIR [--samples N] [--seed S] [--batch B]
                   [--shape NAME=D,D,...] [--glyphs] [--int-range LO,HI] [--threads T]

Writes DIR/data/s<i>.npz (one member per model input, by name) and
DIR/ref/s<i>_<k>.npy (ONNX Runtime's output k on sample i). Inputs are made as
tests/tools/ort_compare.py makes them (same options).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_compare  # noqa: E402
import onnxruntime as ort  # noqa: E402


def main(argv):
    opts, shapes, glyphs, int_range, pos = ort_compare.parse_input_args(
        argv, {"--seed": 0, "--batch": 1, "--samples": 2, "--threads": 2})
    if len(pos) != 2:
        sys.stderr.write(__doc__)
        return 2
    model, out = pos
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts["--threads"]
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    os.makedirs(os.path.join(out, "ref"), exist_ok=True)
    rng = np.random.default_rng(opts["--seed"])
    for i in range(opts["--samples"]):
        feeds = ort_compare.make_inputs(sess, rng, opts["--batch"], shapes, int_range, glyphs)
        np.savez(os.path.join(out, "data", "s%d.npz" % i), **feeds)
        for k, y in enumerate(sess.run(None, feeds)):
            np.save(os.path.join(out, "ref", "s%d_%d.npy" % (i, k)), np.asarray(y))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
