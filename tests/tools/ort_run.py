#!/usr/bin/env python3
"""Runs ONNX models in ONNX Runtime for qforge's tests (needs onnxruntime, numpy).

  ort_run.py compare-many LIST.json RESULTS.jsonl [--start K]
      LIST.json: [{"name", "original", "emitted", "data": [test_data_set dirs]}].
      For each entry, runs the original model on every data set (twice, to
      detect nondeterministic models) and the emitted one, and appends one JSON
      line to RESULTS.jsonl: {"name", "status", "reason"} where status is
        identical          outputs of emitted == original, bit for bit
        different          they differ (reason says where)       -> failure
        emitted_failed     ORT cannot load/run the emitted model -> failure
        original_failed    ORT cannot load/run the original (reason)
        nondeterministic   the original differs from itself; only types and
                           shapes of the emitted outputs are compared
      Lines are flushed one by one, so a crash inside ONNX Runtime loses only
      the entry being run (the caller restarts with --start).

  ort_run.py run MODEL OUTDIR [NAME=FILE.npy ...]
      Runs MODEL once and writes output i to OUTDIR/output_<i>.npy.

Test-data .pb files (TensorProto, SequenceProto, OptionalProto) are decoded
here with a small protobuf reader, so the `onnx` package is not needed.
"""
import json
import os
import re
import struct
import sys

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(4)  # failures are reported per model, not logged

# ----------------------------------------------------------------- protobuf


def _varint(buf, i):
    v = 0
    shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _fields(buf):
    """Yields (field number, wire type, value) of a serialized message."""
    i = 0
    n = len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v = buf[i:i + 8]
            i += 8
        elif wire == 2:
            ln, i = _varint(buf, i)
            v = buf[i:i + ln]
            i += ln
        elif wire == 5:
            v = buf[i:i + 4]
            i += 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
        yield field, wire, v


def _signed64(v):
    return v - (1 << 64) if v >= (1 << 63) else v


def _packed_varints(wire, v):
    if wire == 0:
        return [v]
    out = []
    i = 0
    while i < len(v):
        x, i = _varint(v, i)
        out.append(x)
    return out


_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 8: object, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32,
    13: np.uint64, 14: np.complex64, 15: np.complex128, 16: np.uint16,  # bfloat16 bits
}


def decode_tensor(buf):
    dims, dtype_id, raw = [], 0, None
    floats, int32s, int64s, uint64s, doubles, strings = [], [], [], [], [], []
    for f, w, v in _fields(buf):
        if f == 1:
            dims += [_signed64(x) for x in _packed_varints(w, v)]
        elif f == 2:
            dtype_id = v
        elif f == 4:
            floats += list(struct.unpack("<%df" % (len(v) // 4), v)) if w == 2 else \
                list(struct.unpack("<f", v))
        elif f == 5:
            int32s += [_signed64(x) for x in _packed_varints(w, v)]
        elif f == 6:
            strings.append(bytes(v))
        elif f == 7:
            int64s += [_signed64(x) for x in _packed_varints(w, v)]
        elif f == 9:
            raw = bytes(v)
        elif f == 10:
            doubles += list(struct.unpack("<%dd" % (len(v) // 8), v)) if w == 2 else \
                list(struct.unpack("<d", v))
        elif f == 11:
            uint64s += _packed_varints(w, v)
        elif f == 14 and v == 1:
            raise ValueError("external data in a test input is not supported")
    if dtype_id not in _DTYPES:
        raise ValueError("test input element type %d has no numpy equivalent" % dtype_id)
    dt = _DTYPES[dtype_id]
    if dt is object:
        return np.array([s.decode("utf-8") for s in strings], dtype=object).reshape(dims)
    if raw is not None:
        return np.frombuffer(raw, dtype=dt).reshape(dims).copy()
    if dtype_id in (1, 14):
        a = np.array(floats, np.float32)
        return (a.view(np.complex64) if dtype_id == 14 else a).reshape(dims)
    if dtype_id in (11, 15):
        a = np.array(doubles, np.float64)
        return (a.view(np.complex128) if dtype_id == 15 else a).reshape(dims)
    if dtype_id == 7:
        return np.array(int64s, np.int64).reshape(dims)
    if dtype_id in (12, 13):
        return np.array(uint64s, np.uint64).astype(dt).reshape(dims)
    if dtype_id == 10:
        return np.array(int32s, np.int64).astype(np.uint16).view(np.float16).reshape(dims)
    if dtype_id == 9:
        return (np.array(int32s, np.int64) != 0).reshape(dims)
    return np.array(int32s, np.int64).astype(dt).reshape(dims)


def decode_value(buf, type_str):
    """Decodes a test input according to the model input's ORT type string."""
    if type_str.startswith("tensor("):
        return decode_tensor(buf)
    if type_str.startswith("seq("):
        inner = type_str[4:-1]
        items = []
        for f, _, v in _fields(buf):
            if f in (3, 5):  # tensor_values, sequence_values
                items.append(decode_value(v, inner))
            elif f in (4, 6, 7):
                raise ValueError("sequence of sparse tensors/maps/optionals is not supported")
        return items
    if type_str.startswith("optional("):
        inner = type_str[9:-1]
        for f, _, v in _fields(buf):
            if f in (3, 5):
                return decode_value(v, inner)
            if f in (4, 6, 7):
                raise ValueError("optional of sparse tensor/map/optional is not supported")
        return None
    raise ValueError("input type %s is not supported" % type_str)


# ----------------------------------------------------------------- running


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def load_inputs(sess, data_dir):
    inputs = sess.get_inputs()
    files = sorted((f for f in os.listdir(data_dir) if re.match(r"input_\d+\.pb$", f)),
                   key=lambda f: int(f[6:-3]))
    feeds = {}
    by_name = {i.name: i for i in inputs}
    for k, f in enumerate(files):
        with open(os.path.join(data_dir, f), "rb") as fh:
            buf = fh.read()
        # TensorProto/SequenceProto/OptionalProto all keep the name in field 8/1.
        name = None
        for fld, w, v in _fields(buf):
            if w == 2 and fld in (8, 1):
                try:
                    cand = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if cand in by_name:
                    name = cand
                    break
        if name is None:
            if k >= len(inputs):
                raise ValueError("%s: more input files than model inputs" % f)
            name = inputs[k].name
        value = decode_value(buf, by_name[name].type)
        if by_name[name].type == "tensor(bfloat16)" and isinstance(value, np.ndarray) \
                and value.dtype == np.uint16:  # numpy has no bfloat16: pass the bits
            value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(value, 16)
        feeds[name] = value
    return feeds


def same(a, b, where="output"):
    """"" when a and b are bit-identical, else a description of the difference."""
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return "%s: sequence lengths differ" % where
        for k, (x, y) in enumerate(zip(a, b)):
            d = same(x, y, "%s[%d]" % (where, k))
            if d:
                return d
        return ""
    if isinstance(a, dict) or isinstance(b, dict):
        return "" if a == b else "%s: maps differ" % where
    if a is None or b is None:
        return "" if a is None and b is None else "%s: one is None" % where
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return "%s: %s%s vs %s%s" % (where, a.dtype, a.shape, b.dtype, b.shape)
    if a.dtype == object:
        return "" if a.tolist() == b.tolist() else "%s: strings differ" % where
    if a.tobytes() != b.tobytes():
        return "%s: values differ (first at flat index %d)" % (
            where, int(np.argmax(a.reshape(-1).view(np.uint8) != b.reshape(-1).view(np.uint8))
                       // max(a.itemsize, 1)))
    return ""


def same_types(a, b, where="output"):
    if isinstance(a, list) and isinstance(b, list):
        return "" if len(a) == len(b) else "%s: sequence lengths differ" % where
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return "%s: %s%s vs %s%s" % (where, a.dtype, a.shape, b.dtype, b.shape)
    return ""


def first_line(e):
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def compare_one(entry):
    try:
        orig = session(entry["original"])
    except Exception as e:  # noqa: BLE001 - any ORT failure is a reason
        return "original_failed", "load: " + first_line(e)
    runs = []
    try:
        for d in entry["data"]:
            feeds = load_inputs(orig, d)
            runs.append((feeds, orig.run(None, feeds), orig.run(None, feeds)))
    except Exception as e:  # noqa: BLE001
        return "original_failed", "run: " + first_line(e)
    nondeterministic = any(same(r1, r2) for _, r1, r2 in runs)
    try:
        emitted = session(entry["emitted"])
    except Exception as e:  # noqa: BLE001
        return "emitted_failed", "load: " + first_line(e)
    for k, (feeds, r1, _) in enumerate(runs):
        try:
            got = emitted.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            return "emitted_failed", "run: " + first_line(e)
        for j, (x, y) in enumerate(zip(r1, got)):
            d = (same_types if nondeterministic else same)(x, y, "data set %d output %d" % (k, j))
            if d:
                return "different", d
        if len(r1) != len(got):
            return "different", "output counts differ"
    if nondeterministic:
        return "nondeterministic", "the original's outputs differ between two runs"
    if not runs:
        return "original_failed", "no test data sets"
    return "identical", ""


def compare_many(list_path, out_path, start):
    with open(list_path) as fh:
        entries = json.load(fh)
    with open(out_path, "a") as out:
        for entry in entries[start:]:
            status, reason = compare_one(entry)
            out.write(json.dumps({"name": entry["name"], "status": status, "reason": reason}) + "\n")
            out.flush()


def run(model, outdir, pairs):
    sess = session(model)
    feeds = {}
    for p in pairs:
        name, path = p.split("=", 1)
        feeds[name] = np.load(path)
    for i, o in enumerate(sess.run(None, feeds)):
        np.save(os.path.join(outdir, "output_%d.npy" % i), o)


def main(argv):
    if len(argv) >= 3 and argv[0] == "compare-many":
        start = 0
        if "--start" in argv:
            start = int(argv[argv.index("--start") + 1])
        compare_many(argv[1], argv[2], start)
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        run(argv[1], argv[2], argv[3:])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
