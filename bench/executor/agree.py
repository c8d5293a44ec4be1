#!/usr/bin/env python3
"""Compares two directories of outputs (<sample>_<k>.npy): the smallest cosine
over outputs and samples, and whether every argmax along the last axis agrees.

  agree.py DIR_A DIR_B   ->  'min_cosine C argmax_identical yes|no files N'
"""
import os
import sys

import numpy as np


def main():
    a, b = sys.argv[1], sys.argv[2]
    files = sorted(f for f in os.listdir(a) if f.endswith(".npy"))
    worst, same = 1.0, True
    for f in files:
        x = np.load(os.path.join(a, f)).astype(np.float64).ravel()
        y = np.load(os.path.join(b, f)).astype(np.float64).ravel()
        den = np.linalg.norm(x) * np.linalg.norm(y)
        cos = float(x @ y / den) if den > 0 else float(np.array_equal(x, y))
        worst = min(worst, cos)
        xa, ya = np.load(os.path.join(a, f)), np.load(os.path.join(b, f))
        if xa.ndim >= 1 and xa.shape[-1] > 1:
            same &= bool(np.array_equal(xa.argmax(-1), ya.argmax(-1)))
    print("min_cosine %.7f argmax_identical %s files %d" % (worst, "yes" if same else "no", len(files)))


if __name__ == "__main__":
    main()
