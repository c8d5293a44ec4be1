#!/usr/bin/env python3
"""Writes deterministic benchmark inputs for the real models (one .npy per sample).

  inputs.py KIND DIR SAMPLES

KIND: det (a 1x3x640x640 page: dark strokes on a light background, normalised
as PaddleOCR does), rec (1x3x48x320 text lines), cls (1x3x48x192 text lines).
"""
import os
import sys

import numpy as np

SHAPES = {"det": (1, 3, 640, 640), "rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192)}


def page(rng, shape):
    n, c, h, w = shape
    img = np.full((h, w), 0.92, dtype=np.float32)
    # Text-like strokes: short dark horizontal and vertical bars in rows.
    for _ in range(int(h * w / 900)):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 12)
        if rng.random() < 0.5:
            img[y:y + 2, x:x + rng.integers(3, 12)] = 0.1
        else:
            img[y:y + rng.integers(3, 10), x:x + 2] = 0.1
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    x = np.repeat(img[None, None], c, axis=1)
    return ((x - 0.5) / 0.5).astype(np.float32)


def main():
    kind, out, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261129)
    for i in range(samples):
        np.save(os.path.join(out, "s%03d.npy" % i), page(rng, SHAPES[kind]))


if __name__ == "__main__":
    main()
