#!/usr/bin/env python3
"""Deterministic synthetic inputs for real models (numpy only): document-like
images written as PNG, their model inputs, and token sequences.

  synth_inputs.py images KIND OUTDIR N [--seed S] [--size H,W]
      writes OUTDIR/<KIND>_<i>.png, i = 0..N-1. KIND: page (a scanned
      document: lines of dark glyphs of many sizes on a light page, a few
      rules and boxes; default 640x640), line (one text line filling a
      48x320 crop), line180 (as line, every other one turned 180 degrees;
      48x192). Same seed, same bytes.
  synth_inputs.py arrays OUTDIR PNG... --input NAME [--channels rgb|bgr]
                  [--mean M[,M,M]] [--std S[,S,S]] [--scale F]
      decodes each PNG and writes OUTDIR/<stem>.npz holding the model input
      NAME (float32 [1, C, H, W]) computed as qforge's image datasets compute
      it (pipeline/src/image.cc, no resize): channel order, then
      (value * scale - mean) / std in double precision, rounded to float32.
  synth_inputs.py tokens OUTDIR N --input NAME [--seed S] [--length L]
                  [--vocab LO,HI] [--mask ID] [--batch B]
      writes OUTDIR/t<i>.npz: int64 [B, L] word-like token sequences (3-14
      tokens drawn from [LO, HI), about one in six replaced by the mask
      token, zero padding), the input of a character-level masked language
      model.

PNG files are 8-bit RGB, written and read by the small codec below (zlib
only), so the pixels the arrays are made from are exactly the pixels any PNG
decoder (stb in qforge) reads.
"""
import os
import struct
import sys
import zlib

import numpy as np


# --- PNG (8-bit RGB, filter 0 on write; every filter on read) ---------------

def write_png(path, rgb):
    h, w, c = rgb.shape
    assert c == 3 and rgb.dtype == np.uint8
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(path + ": not a PNG")
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or ctype != 2 or interlace:
        raise ValueError(path + ": only 8-bit RGB, non-interlaced PNG is read here")
    raw = zlib.decompress(idat)
    stride, bpp = w * 3, 3
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        if ft == 0:
            cur = line
        elif ft == 2:
            cur = (line + prev) & 255
        else:  # 1 (sub), 3 (average), 4 (Paeth): sequential along the row
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                if ft == 1:
                    p = a
                elif ft == 3:
                    p = (a + b) // 2
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + p) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, 3)


# --- drawing ------------------------------------------------------------------

def _segment(img, y0, x0, y1, x1, thick, color):
    """A stroke from (y0, x0) to (y1, x1), `thick` pixels wide."""
    h, w, _ = img.shape
    r = thick / 2.0
    ya, yb = int(max(0, min(y0, y1) - r - 1)), int(min(h, max(y0, y1) + r + 2))
    xa, xb = int(max(0, min(x0, x1) - r - 1)), int(min(w, max(x0, x1) + r + 2))
    if ya >= yb or xa >= xb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float64)
    dy, dx = y1 - y0, x1 - x0
    ll = dy * dy + dx * dx
    t = np.zeros_like(yy) if ll == 0 else np.clip(((yy - y0) * dy + (xx - x0) * dx) / ll, 0, 1)
    d2 = (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2
    img[ya:yb, xa:xb][d2 <= r * r] = color


def _ring(img, cy, cx, ry, rx, thick, color):
    h, w, _ = img.shape
    ya, yb = int(max(0, cy - ry - thick)), int(min(h, cy + ry + thick + 1))
    xa, xb = int(max(0, cx - rx - thick)), int(min(w, cx + rx + thick + 1))
    if ya >= yb or xa >= xb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float64)
    d = np.sqrt(((yy - cy) / max(ry, 1)) ** 2 + ((xx - cx) / max(rx, 1)) ** 2)
    img[ya:yb, xa:xb][np.abs(d - 1) * min(ry, rx) <= thick / 2.0] = color


def _glyph(img, rng, y, x, ch, cw, thick, color):
    """2-4 strokes in a ch x cw cell whose top left corner is (y, x)."""
    for _ in range(int(rng.integers(2, 5))):
        k = rng.random()
        if k < 0.3:  # vertical
            gx = x + rng.uniform(0.1, 0.9) * cw
            _segment(img, y + rng.uniform(0, 0.3) * ch, gx, y + rng.uniform(0.7, 1) * ch, gx, thick, color)
        elif k < 0.55:  # horizontal
            gy = y + rng.uniform(0.1, 0.9) * ch
            _segment(img, gy, x, gy, x + rng.uniform(0.5, 1) * cw, thick, color)
        elif k < 0.8:  # diagonal
            _segment(img, y + rng.uniform(0, 0.3) * ch, x + rng.uniform(0, 1) * cw, y + rng.uniform(0.7, 1) * ch,
                     x + rng.uniform(0, 1) * cw, thick, color)
        else:  # bowl
            _ring(img, y + rng.uniform(0.4, 0.7) * ch, x + cw / 2, ch * rng.uniform(0.2, 0.35), cw * 0.4, thick,
                  color)


def _text_line(img, rng, y, x0, x1, ch, color):
    x = x0
    thick = max(1.0, ch / rng.uniform(6, 10))
    while x < x1 - ch:
        for _ in range(int(rng.integers(1, 9))):
            cw = int(ch * rng.uniform(0.5, 0.9))
            if x + cw > x1:
                break
            _glyph(img, rng, y, x, ch, cw, thick, color)
            x += cw + max(1, int(ch * rng.uniform(0.08, 0.2)))
        x += int(ch * rng.uniform(0.4, 0.8))


def _ink(rng):
    if rng.random() < 0.8:
        v = rng.uniform(0, 70)
        return np.array([v, v, v]) + rng.uniform(-10, 10, 3)
    return np.array([rng.uniform(0, 90), rng.uniform(0, 90), rng.uniform(60, 200)])[rng.permutation(3)]


def _finish(rng, img):
    """Blur a little (scanned, not rendered), add sensor noise, round to 8 bits."""
    k = np.array([0.25, 0.5, 0.25])
    img = k[0] * np.roll(img, 1, 0) + k[1] * img + k[2] * np.roll(img, -1, 0)
    img = k[0] * np.roll(img, 1, 1) + k[1] * img + k[2] * np.roll(img, -1, 1)
    img = img + rng.normal(0, 3, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _paper(rng, h, w):
    base = rng.uniform(215, 250) + rng.uniform(-6, 6, 3)
    grad = np.linspace(0, rng.uniform(-15, 15), w)[None, :, None]
    return np.broadcast_to(base, (h, w, 3)) + grad


def page(rng, h, w):
    img = np.array(_paper(rng, h, w))
    y = int(rng.integers(8, 40))
    while y < h - 12:
        r = rng.random()
        if r < 0.06:  # a rule
            _segment(img, y, rng.integers(0, w // 4), y, w - rng.integers(0, w // 4), rng.uniform(1, 3), _ink(rng))
            y += int(rng.integers(6, 20))
            continue
        if r < 0.1:  # a grey or coloured box (a figure, a stamp)
            bh, bw = int(rng.integers(30, h // 4)), int(rng.integers(40, w // 2))
            bx = int(rng.integers(0, w - bw))
            img[y:y + bh, bx:bx + bw] = rng.uniform(60, 220, 3)
            y += bh + int(rng.integers(6, 20))
            continue
        ch = int(rng.integers(9, 40))
        if y + ch >= h:
            break
        x0 = int(rng.integers(4, w // 6))
        x1 = w - int(rng.integers(4, w // 3))
        _text_line(img, rng, y, x0, x1, ch, _ink(rng))
        y += ch + int(rng.integers(max(3, ch // 3), 2 * ch))
    return _finish(rng, img)


def line(rng, h, w):
    img = np.array(_paper(rng, h, w))
    ch = int(rng.integers(int(h * 0.5), int(h * 0.8)))
    y = int(rng.integers(1, h - ch))
    _text_line(img, rng, y, int(rng.integers(1, 10)), w - int(rng.integers(0, w // 5)), ch, _ink(rng))
    return _finish(rng, img)


KINDS = {"page": (page, (640, 640)), "line": (line, (48, 320)), "line180": (line, (48, 192))}


def image_kind(kind, rng, i, size=None):
    fn, (h, w) = KINDS[kind]
    if size:
        h, w = size
    img = fn(rng, h, w)
    if kind == "line180" and i % 2:
        img = np.ascontiguousarray(img[::-1, ::-1])
    return img


def model_input(rgb, channels="rgb", mean=(0.0,), std=(1.0,), scale=1.0 / 255):
    """float32 [1, C, H, W] as pipeline/src/image.cc computes it (no resize)."""
    x = rgb.astype(np.float64)
    if channels == "bgr":
        x = x[:, :, ::-1]
    c = x.shape[2]
    mean = np.array(mean if len(mean) == c else list(mean) * c, np.float64)
    std = np.array(std if len(std) == c else list(std) * c, np.float64)
    x = (x * scale - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def tokens(rng, batch, length, vocab, mask):
    out = np.zeros((batch, length), np.int64)
    for b in range(batch):
        n = int(rng.integers(3, min(15, length + 1)))
        t = rng.integers(vocab[0], vocab[1], n)
        t[rng.random(n) < 1.0 / 6] = mask
        out[b, :n] = t
    return out


def _floats(s):
    return [float(v) for v in s.split(",")]


def main(argv):
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    opts, pos = {}, []
    while args:
        a = args.pop(0)
        if a.startswith("--") and args:
            opts[a] = args.pop(0)
        else:
            pos.append(a)
    if cmd == "images" and len(pos) == 3:
        kind, out, n = pos[0], pos[1], int(pos[2])
        size = tuple(int(v) for v in opts["--size"].split(",")) if "--size" in opts else None
        os.makedirs(out, exist_ok=True)
        rng = np.random.default_rng(int(opts.get("--seed", 0)))
        for i in range(n):
            write_png(os.path.join(out, "%s_%03d.png" % (kind, i)), image_kind(kind, rng, i, size))
        return 0
    if cmd == "arrays" and len(pos) >= 2 and "--input" in opts:
        out = pos[0]
        os.makedirs(out, exist_ok=True)
        for p in pos[1:]:
            x = model_input(read_png(p), opts.get("--channels", "rgb"), _floats(opts.get("--mean", "0")),
                            _floats(opts.get("--std", "1")), float(opts.get("--scale", 1.0 / 255)))
            stem = os.path.splitext(os.path.basename(p))[0]
            np.savez(os.path.join(out, stem + ".npz"), **{opts["--input"]: x})
        return 0
    if cmd == "tokens" and len(pos) == 2 and "--input" in opts:
        out, n = pos[0], int(pos[1])
        os.makedirs(out, exist_ok=True)
        rng = np.random.default_rng(int(opts.get("--seed", 0)))
        lo, hi = (int(v) for v in opts.get("--vocab", "2,31").split(","))
        for i in range(n):
            t = tokens(rng, int(opts.get("--batch", 1)), int(opts.get("--length", 32)), (lo, hi),
                       int(opts.get("--mask", hi)))
            np.savez(os.path.join(out, "t%03d.npz" % i), **{opts["--input"]: t})
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
