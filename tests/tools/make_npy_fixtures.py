#!/usr/bin/env python3
"""Writes the .npy / .npz / TensorProto fixtures of tests/dataset_test.cc.

Run once (by hand) and commit the output; the C++ tests need no Python:
    python3 tests/tools/make_npy_fixtures.py tests/data/npy
Needs numpy (and onnx for the .pb fixtures). Values follow formulas that the
C++ test recomputes, so a reader that gets bytes, order or types wrong fails.
"""
import os
import shutil
import sys
import zipfile

import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "npy")
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def values(dtype, n):
    """Element i of every dtype fixture (tests/dataset_test.cc recomputes these)."""
    i = np.arange(n)
    kind = np.dtype(dtype).kind
    if kind == "b":
        return (i % 3 == 0)
    if kind == "f":
        return ((i - 2.5) * 0.25).astype(dtype)
    if kind == "c":
        return ((i - 2.5) * 0.25 + 1j * i).astype(dtype)
    if kind == "u":
        return (i * 37 % 251).astype(dtype)
    return (i * 37 % 251 - 100).astype(dtype)


DTYPES = ["<f2", "<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1",
          "<c8", "<c16"]

# One (2, 3) array per dtype, as np.save writes it.
for dt in DTYPES:
    name = np.dtype(dt).name
    np.save(path(f"dtype_{name}.npy"), values(dt, 6).reshape(2, 3))

# Format versions: the same float32 (3, 4) array.
a = values("<f4", 12).reshape(3, 4)
for v in (1, 2, 3):
    with open(path(f"version_{v}.npy"), "wb") as f:
        np.lib.format.write_array(f, a, version=(v, 0))

np.save(path("scalar.npy"), np.array(3.5, dtype=np.float32))
np.save(path("empty.npy"), np.zeros((0,), dtype=np.float32))
np.save(path("empty_2d.npy"), np.zeros((3, 0), dtype=np.int64))
np.save(path("large_1d.npy"), values("<f4", 1000))
np.save(path("fortran.npy"), np.asfortranarray(values("<f4", 6).reshape(2, 3)))
np.save(path("big_endian.npy"), values(">f4", 6).reshape(2, 3))
np.save(path("object.npy"), np.array([1, "a", None], dtype=object), allow_pickle=True)
np.save(path("unicode.npy"), np.array(["abc", "de"]))
np.save(path("structured.npy"), np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
np.save(path("datetime.npy"), np.array(["2020-01-01"], dtype="datetime64[D]"))

# Archives: x (f32 2x3) and y (i64 4).
x = values("<f4", 6).reshape(2, 3)
y = values("<i8", 4)
np.savez(path("savez.npz"), x=x, y=y)
np.savez_compressed(path("savez_compressed.npz"), x=x, y=y)
np.savez(path("savez_positional.npz"), x, y)  # arr_0, arr_1
# A compressed archive of a highly compressible array (bomb-guard tests shrink its declared size).
np.savez_compressed(path("zeros_compressed.npz"), z=np.zeros((256, 256), dtype=np.float32))
# Written by zipfile directly, without numpy's force_zip64 (32-bit local headers), with a comment.
with zipfile.ZipFile(path("plain_zip.npz"), "w", compression=zipfile.ZIP_DEFLATED) as z:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, x)
    z.writestr("x.npy", buf.getvalue())
    z.comment = b"written by make_npy_fixtures.py"
# Written to an unseekable stream: zipfile sets flag bit 3 and puts sizes and CRCs in data
# descriptors after each member (the local headers hold zeros).
class Unseekable:
    def __init__(self, f):
        self.f = f

    def write(self, b):
        return self.f.write(b)

    def read(self, *args):
        raise OSError("write-only stream")

    def flush(self):
        self.f.flush()


for fn, tag in ((np.savez, "stored"), (np.savez_compressed, "deflated")):
    with open(path(f"stream_{tag}.npz"), "wb") as f:
        fn(Unseekable(f), x=x, y=y)
# Not a .npy member.
with zipfile.ZipFile(path("not_npy_member.npz"), "w") as z:
    z.writestr("readme.txt", "hello")

# ONNX TensorProto fixtures: each .pb has a .npy twin with the same values.
try:
    import onnx
    from onnx import helper, numpy_helper, TensorProto
except ImportError:
    print("onnx not installed: .pb fixtures not written", file=sys.stderr)
    sys.exit(0)


def save_pb(name, tensor, twin):
    with open(path(name + ".pb"), "wb") as f:
        f.write(tensor.SerializeToString())
    np.save(path(name + ".npy"), twin)


t = values("<f4", 6).reshape(2, 3)
save_pb("pb_raw_f32", numpy_helper.from_array(t, name="x"), t)
# Typed fields (raw=False): each element type in the field ONNX keeps it in.
typed = [
    ("f32", TensorProto.FLOAT, "<f4"),
    ("f64", TensorProto.DOUBLE, "<f8"),
    ("i8", TensorProto.INT8, "|i1"),
    ("u8", TensorProto.UINT8, "|u1"),
    ("i16", TensorProto.INT16, "<i2"),
    ("u16", TensorProto.UINT16, "<u2"),
    ("i32", TensorProto.INT32, "<i4"),
    ("u32", TensorProto.UINT32, "<u4"),
    ("i64", TensorProto.INT64, "<i8"),
    ("u64", TensorProto.UINT64, "<u8"),
    ("bool", TensorProto.BOOL, "|b1"),
    ("f16", TensorProto.FLOAT16, "<f2"),
]
for tag, onnx_type, dt in typed:
    v = values(dt, 6).reshape(2, 3)
    tensor = helper.make_tensor("t_" + tag, onnx_type, v.shape, v.flatten().tolist(), raw=False)
    save_pb("pb_typed_" + tag, tensor, v)
# bfloat16 (no numpy dtype): the twin holds the bit patterns as uint16.
v = values("<f4", 6).reshape(2, 3)
tensor = helper.make_tensor("t_bf16", TensorProto.BFLOAT16, v.shape, v.flatten().tolist(), raw=False)
save_pb("pb_typed_bf16", tensor, np.array(tensor.int32_data, dtype="<u2").reshape(2, 3))
# A scalar, an empty tensor, an unnamed tensor.
save_pb("pb_scalar", numpy_helper.from_array(np.array(7, dtype=np.int64), name="s"),
        np.array(7, dtype=np.int64))
save_pb("pb_empty", numpy_helper.from_array(np.zeros((0, 3), dtype=np.float32), name="e"),
        np.zeros((0, 3), dtype=np.float32))
save_pb("pb_unnamed", numpy_helper.from_array(t), t)
# Refused: strings, external data.
with open(path("pb_string.pb"), "wb") as f:
    f.write(helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"]).SerializeToString())
ext = numpy_helper.from_array(t, name="ext")
ext.ClearField("raw_data")
ext.data_location = TensorProto.EXTERNAL
e = ext.external_data.add()
e.key, e.value = "location", "weights.bin"
with open(path("pb_external.pb"), "wb") as f:
    f.write(ext.SerializeToString())

# Debian's libonnx-testdata input, parsed by onnx's own numpy_helper as an independent reference.
src = "/usr/share/libonnx-testdata/data/node/test_add/test_data_set_0"
if os.path.isdir(src):
    for k in (0, 1):
        tp = onnx.TensorProto()
        with open(os.path.join(src, f"input_{k}.pb"), "rb") as f:
            tp.ParseFromString(f.read())
        np.save(path(f"onnx_test_add_input_{k}.npy"), numpy_helper.to_array(tp))
    # A copy of the test-data directory (so the test runs where the package is missing).
    dst = path("onnx_test_add")
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in ("input_0.pb", "input_1.pb", "output_0.pb"):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
print("fixtures written to", OUT)
