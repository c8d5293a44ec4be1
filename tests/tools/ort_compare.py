#!/usr/bin/env python3
"""Compares two ONNX models' outputs in ONNX Runtime (needs onnxruntime, numpy).

  ort_compare.py REF.onnx CAND.onnx [--seed S] [--batch B] [--samples N]
                [--shape NAME=D0,D1,...] [--int-range LO,HI] [--glyphs]

Feeds both models the same inputs, drawn from the reference model's inputs:
float tensors uniform in [-1, 1), integer tensors in [LO, HI) (default
[0, 4)), symbolic or unknown dimensions set to --batch (default 4), or an
input's whole shape given by --shape (repeatable). With --glyphs, 4-D float
inputs [B, C, H, W] are text-line-like images instead of noise: a white
page (1.0) with dark (-1.0) horizontal and vertical strokes grouped into
glyph-sized cells, the normalised range OCR models read (on uniform noise an
OCR recogniser predicts "blank" everywhere, which every variant agrees on).
Prints one JSON line:

  {"cosine": c, "sqnr_db": s, "max_abs": m, "ref_max_abs": r, "argmax_agreement": a,
   "argmax_rows": k, "outputs": k, "samples": n}

where cosine is the cosine similarity of all outputs of all samples
concatenated (float64), sqnr_db 10 log10(sum ref^2 / sum (ref - cand)^2) over
the same (null when they are equal), max_abs the largest absolute difference, and
argmax_agreement the fraction of rows (every position of every output but
the last axis) whose argmax along the last axis is the same in both.
Exit status: 0 compared; 3 the candidate failed to load or run (message on
stderr); 4 the reference failed; 2 usage error.

  ort_compare.py mlas-quant W.f32 K N BITS BLOCK SYMMETRIC KIND OUT

Quantizes the float32 matrix W ([K, N] row-major raw little-endian file) with
ONNX Runtime's own C++ quantizers, the ones MatMulNBitsQuantizer calls
(KIND "nbits": quantize_matmul_4bits/8bits, as for MatMulNBits; KIND "qdq":
quantize_qdq_matmul_4bits, as for its QDQ format), padding K to the block
size as the tool does. Writes OUT.q, OUT.scales, OUT.zp (raw bytes; .zp only
when not symmetric).
"""
import json
import sys

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)

_NP = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def glyph_images(rng, shape):
    """White images with dark strokes in glyph-sized cells (see --glyphs)."""
    b, c, h, w = shape
    img = np.ones(shape, np.float32)
    top, bottom = h // 5, h - h // 5
    for i in range(b):
        x0 = 4
        while x0 < w - 16:
            cw = int(rng.integers(8, 16))
            for _ in range(int(rng.integers(2, 5))):
                if rng.random() < 0.5:
                    col = x0 + int(rng.integers(0, cw))
                    img[i, :, top:bottom, col:col + 2] = -1.0
                else:
                    row = int(rng.integers(top, bottom))
                    img[i, :, row:row + 2, x0:x0 + cw] = -1.0
            x0 += cw + int(rng.integers(2, 6))
    return img


def make_inputs(sess, rng, batch, shapes=None, int_range=(0, 4), glyphs=False):
    feeds = {}
    for i in sess.get_inputs():
        if i.type not in _NP:
            raise ValueError("input %s has unsupported type %s" % (i.name, i.type))
        if shapes and i.name in shapes:
            shape = shapes[i.name]
        else:
            shape = [d if isinstance(d, int) and d >= 0 else batch for d in i.shape]
        dt = _NP[i.type]
        if np.issubdtype(dt, np.floating) and glyphs and len(shape) == 4:
            feeds[i.name] = glyph_images(rng, shape).astype(dt)
        elif np.issubdtype(dt, np.floating):
            feeds[i.name] = rng.uniform(-1.0, 1.0, size=shape).astype(dt)
        elif dt == np.bool_:
            feeds[i.name] = rng.integers(0, 2, size=shape).astype(dt)
        else:
            feeds[i.name] = rng.integers(int_range[0], int_range[1], size=shape).astype(dt)
    return feeds


def mlas_quant(argv):
    from onnxruntime.capi import _pybind_state as ps  # ORT's kernels, as the tool uses them

    path, rows, cols, bits, block, sym, kind, out = argv
    rows, cols, bits, block, sym = int(rows), int(cols), int(bits), int(block), bool(int(sym))
    w = np.fromfile(path, dtype=np.float32).reshape(rows, cols)
    kpack = 8 // bits
    k_blocks = (rows + block - 1) // block
    if kind == "nbits":
        pad = k_blocks * block - rows
        if pad:
            w = np.pad(w, ((0, pad), (0, 0)), "constant")
        packed = np.zeros((cols, k_blocks, (block + kpack - 1) // kpack), np.uint8)
        zp = np.zeros((cols, (k_blocks + kpack - 1) // kpack), np.uint8)
        scales = np.zeros((cols, k_blocks), np.float32)
        fn = ps.quantize_matmul_4bits if bits == 4 else ps.quantize_matmul_8bits
        fn(packed, w, scales, zp, block, cols, rows, sym)
    elif kind == "qdq" and bits == 4:
        packed = np.zeros((rows * cols + 1) // 2, np.uint8)
        zp = np.zeros((cols * k_blocks + 1) // 2, np.uint8)
        scales = np.zeros((k_blocks, cols), np.float32)
        ps.quantize_qdq_matmul_4bits(packed, w, scales, zp, block, cols, rows, sym)
    else:
        sys.stderr.write("mlas-quant: KIND must be nbits, or qdq with 4 bits\n")
        return 2
    packed.tofile(out + ".q")
    scales.tofile(out + ".scales")
    if not sym:
        zp.tofile(out + ".zp")
    return 0


def parse_input_args(argv, opts):
    """The input options shared with ort_reference.py: integer options named in
    `opts` (their defaults), --shape NAME=D,D,..., --glyphs, --int-range LO,HI.
    Returns (opts, shapes, glyphs, int_range, positional arguments)."""
    args, opts = list(argv), dict(opts)
    shapes, glyphs, int_range, pos = {}, False, (0, 4), []
    while args:
        a = args.pop(0)
        if a in opts and args:
            opts[a] = int(args.pop(0))
        elif a == "--shape" and args:
            name, _, dims = args.pop(0).partition("=")
            shapes[name] = [int(d) for d in dims.split(",")]
        elif a == "--glyphs":
            glyphs = True
        elif a == "--int-range" and args:
            lo, _, hi = args.pop(0).partition(",")
            int_range = (int(lo), int(hi))
        else:
            pos.append(a)
    return opts, shapes, glyphs, int_range, pos


def main(argv):
    if argv and argv[0] == "mlas-quant":
        if len(argv) != 9:
            sys.stderr.write(__doc__)
            return 2
        return mlas_quant(argv[1:])
    opts, shapes, glyphs, int_range, pos = parse_input_args(argv, {"--seed": 0, "--batch": 4, "--samples": 4})
    if len(pos) != 2:
        sys.stderr.write(__doc__)
        return 2
    try:
        ref = session(pos[0])
    except Exception as e:  # noqa: BLE001
        sys.stderr.write("reference failed to load: %s\n" % e)
        return 4
    try:
        cand = session(pos[1])
    except Exception as e:  # noqa: BLE001
        sys.stderr.write("candidate failed to load: %s\n" % e)
        return 3
    rng = np.random.default_rng(opts["--seed"])
    r_all, c_all = [], []
    agree, rows = 0, 0
    n_out = 0
    for _ in range(opts["--samples"]):
        feeds = make_inputs(ref, rng, opts["--batch"], shapes, int_range, glyphs)
        try:
            r = ref.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            sys.stderr.write("reference failed to run: %s\n" % e)
            return 4
        try:
            c = cand.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            sys.stderr.write("candidate failed to run: %s\n" % e)
            return 3
        if len(r) != len(c):
            sys.stderr.write("output counts differ: %d vs %d\n" % (len(r), len(c)))
            return 3
        for x, y in zip(r, c):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape:
                sys.stderr.write("output shapes differ: %s vs %s\n" % (x.shape, y.shape))
                return 3
            r_all.append(x.astype(np.float64).ravel())
            c_all.append(y.astype(np.float64).ravel())
            if x.ndim >= 1 and x.shape[-1] > 0 and np.issubdtype(x.dtype, np.floating):
                agree += int(np.sum(np.argmax(x, axis=-1) == np.argmax(y, axis=-1)))
                rows += int(x.size // x.shape[-1])
        n_out = len(r)
    a = np.concatenate(r_all)
    b = np.concatenate(c_all)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(np.dot(a, b) / denom) if denom > 0 else (1.0 if np.array_equal(a, b) else 0.0)
    err2 = float(np.dot(a - b, a - b))
    sqnr_db = 10 * np.log10(float(np.dot(a, a)) / err2) if err2 > 0 else None
    print(json.dumps({"cosine": cosine, "sqnr_db": sqnr_db,
                      "max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0,
                      "ref_max_abs": float(np.max(np.abs(a))) if a.size else 0.0,
                      "argmax_agreement": agree / rows if rows else 1.0, "argmax_rows": rows,
                      "outputs": n_out, "samples": opts["--samples"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
