"""safetensors files for tests/safetensors_plugin.cmake, written and read with
nothing but the standard library and numpy (independently of the plugin).

  safetensors_files.py tiny OUT.safetensors
      a small llama-shaped model (llama.cpp tensor names; F16, BF16 and F32
      tensors), its header indented and in name order while its data are laid out
      in llama order, with the llama.* metadata quantize-gguf needs, typed through
      the plugin's qforge.metadata_types entry (plugins/safetensors/README.md)
  safetensors_files.py hostile DIR
      malformed files, one per check of the reader; prints "file<TAB>expected
      message fragment" lines
  safetensors_files.py mutants DIR
      a small valid file and 64 damaged copies of it (cut, header bytes replaced);
      prints their names
  safetensors_files.py verify FILE [--dtypes F16,F32] [--same-tensors-as OTHER]
      reads FILE as the format's specification says and checks it: header length
      and padding, 8-byte aligned data, every dtype/shape/offset, the data tiled
      without holes; each tensor read with numpy; with the `safetensors` package
      importable, also compared with what it loads
"""

import json
import struct
import sys

import numpy as np

NP_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
    "C64": "<c8",
    # numpy has no bfloat16 and no float8: read the bits
    "BF16": "<u2", "F8_E4M3": "u1", "F8_E5M2": "u1", "F8_E4M3FNUZ": "u1", "F8_E5M2FNUZ": "u1",
}
BITS_ONLY = {"BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"}


def write(path, header_obj, data, indent=None, pad=True, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header_obj, indent=indent).encode()
    if pad:
        h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def to_bf16(a):
    bits = a.astype("<f4").view("<u4")
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even


def tiny(out):
    rng = np.random.default_rng(7)
    E, F, V, L = 64, 128, 288, 2
    tensors = []  # name, dtype, array (llama order: the data layout)

    def add(name, dtype, shape, center=0.0, scale=0.1):
        a = (center + scale * rng.uniform(-1, 1, size=shape)).astype("<f4")
        if dtype == "F16":
            a = a.astype("<f2")
        elif dtype == "BF16":
            a = to_bf16(a)
        tensors.append((name, dtype, a))

    add("token_embd.weight", "F16", (V, E), scale=1.0)
    for i in range(L):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", "F32", (E,), center=1.0)
        add(p + "attn_q.weight", "BF16", (E, E))
        add(p + "attn_k.weight", "BF16", (E // 2, E))
        add(p + "attn_v.weight", "BF16", (E // 2, E))
        add(p + "attn_output.weight", "F32", (E, E))
        add(p + "ffn_norm.weight", "F32", (E,), center=1.0)
        add(p + "ffn_gate.weight", "F32", (F, E))
        add(p + "ffn_up.weight", "F32", (F, E))
        add(p + "ffn_down.weight", "F32", (E, F))
    add("output_norm.weight", "F32", (E,), center=1.0)
    add("output.weight", "F16", (V, E))

    entries, data, off = {}, b"", 0
    for name, dtype, a in tensors:
        b = a.tobytes()
        entries[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        data += b
        off += len(b)
    u32 = {
        "llama.context_length": 256, "llama.embedding_length": E, "llama.block_count": L,
        "llama.feed_forward_length": F, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
    }
    meta = {"format": "pt", "general.architecture": "llama", "general.name": "tiny-safetensors"}
    meta.update({k: str(v) for k, v in u32.items()})
    meta["llama.attention.layer_norm_rms_epsilon"] = "1e-05"
    types = {k: "u32" for k in u32}
    types["llama.attention.layer_norm_rms_epsilon"] = "f32"
    meta["qforge.metadata_types"] = json.dumps(types)
    header = {"__metadata__": meta}
    for name in sorted(entries):  # header order differs from the data's
        header[name] = entries[name]
    write(out, header, data, indent=2)
    print(f"{out}: {len(tensors)} tensors, {off} bytes of data")


def hostile(d):
    f32 = lambda n: np.arange(n, dtype="<f4").tobytes()  # noqa: E731
    good = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    cases = []

    def case(name, expect, header=None, data=f32(4), **kw):
        write(f"{d}/{name}.safetensors", header if header is not None else good, data, **kw)
        cases.append((name, expect))

    # the header length
    with open(f"{d}/tiny5.safetensors", "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00")
    cases.append(("tiny5", "header length: expected 8 bytes"))
    with open(f"{d}/huge_header.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 1 << 62) + b'{"w":{}}')
    cases.append(("huge_header", "expected at most 100000000 bytes"))
    case("truncated_header", "truncated?", raw_header=json.dumps(good).encode(), data=b"")
    with open(f"{d}/truncated_header.safetensors", "r+b") as f:  # cut inside the header
        f.truncate(30)
    case("not_an_object", "expected '{'", raw_header=b'[{"w": 1}]', pad=True)
    # the JSON
    case("bad_json", "header JSON", raw_header=b'{"w": {"dtype": "F32",, "shape": [4]}}')
    case("non_utf8_name", "UTF-8", raw_header=b'{"w\xff": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}')
    case("duplicate_names", "'w' a second time",
         raw_header=b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
                    b' "w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}')
    case("metadata_not_string", "expected a string", header={"__metadata__": {"n": 1}, **good})
    case("unknown_field", "expected only the fields", header={"w": dict(good["w"], offsets=[0, 16])})
    case("missing_field", "found no 'data_offsets'", header={"w": {"dtype": "F32", "shape": [2, 2]}})
    # dtypes, shapes, offsets
    case("bad_dtype", "expected one of F64", header={"w": dict(good["w"], dtype="Q4_K")})
    case("negative_dim", "expected an unsigned integer, found the negative number -2",
         header={"w": dict(good["w"], shape=[-2, -2])})
    case("shape_overflow", "(overflow)", header={"w": dict(good["w"], shape=[1 << 32, 1 << 32, 16])})
    case("size_mismatch", "expected end - begin = 16 bytes", header={"w": dict(good["w"], data_offsets=[0, 12])},
         data=f32(3))
    case("end_before_begin", "begin <= end", header={"w": dict(good["w"], data_offsets=[16, 0])})
    case("offsets_out_of_range", "expected offsets inside the byte buffer",
         header={"w": dict(good["w"], data_offsets=[1 << 40, (1 << 40) + 16])})
    case("truncated_data", "truncated?", data=f32(4)[:10])
    case("overlapping", "overlapping tensor 'a'",
         header={"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                 "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, data=f32(6))
    case("hole", "does not allow holes",
         header={"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, data=f32(5))
    case("trailing_bytes", "belong to no tensor", data=f32(5))
    case("bad_types_entry", "which is not a key of __metadata__",
         header={"__metadata__": {"qforge.metadata_types": '{"n": "u32"}'}, **good})
    case("bad_typed_value", "expected an unsigned integer",
         header={"__metadata__": {"n": "12x", "qforge.metadata_types": '{"n": "u32"}'}, **good})
    case("deep_metadata_type", "expected arrays nested at most 8 levels deep",
         header={"__metadata__": {"n": "[]", "qforge.metadata_types": json.dumps({"n": "array[" * 9 + "u8" + "]" * 9})},
                 **good})
    for name, expect in cases:
        print(f"{name}.safetensors\t{expect}")


def mutants(d, count=64):
    """Valid and damaged variants of a small file: cut at many lengths, and bytes of
    its header replaced (deterministically). Each must be read or refused, never
    crash the reader."""
    meta = {"a": "1", "v": "[1,2,3]", "qforge.metadata_types": '{"a":"u32","v":"array[i16]"}'}
    header = {"__metadata__": meta,
              "x": {"dtype": "F16", "shape": [3, 2], "data_offsets": [0, 12]},
              "y": {"dtype": "I64", "shape": [2], "data_offsets": [12, 28]},
              "z": {"dtype": "U8", "shape": [0, 5], "data_offsets": [28, 28]}}
    write(f"{d}/base.safetensors", header, bytes(range(28)))
    with open(f"{d}/base.safetensors", "rb") as f:
        base = f.read()
    (n,) = struct.unpack("<Q", base[:8])
    rng = np.random.default_rng(3)
    names = ["base.safetensors"]
    for k in range(count):
        b = bytearray(base)
        if k % 4 == 0:
            b = b[:int(rng.integers(0, len(b)))]
        else:
            for _ in range(1 + k % 3):
                b[int(rng.integers(8, 8 + n))] = int(rng.choice(list(b'{}[]",:0123456789-e. \\xu\xff\x00')))
        names.append(f"mutant{k:02d}.safetensors")
        with open(f"{d}/{names[-1]}", "wb") as f:
            f.write(bytes(b))
    print("\n".join(names))


def fail(path, msg):
    sys.exit(f"verify: {path}: {msg}")


def read(path, written_by_qforge=True):
    """The file's tensors as numpy arrays, checked against the specification (and,
    for a file qforge wrote, its layout: compact header, data in header order)."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        fail(path, "shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        fail(path, f"header length {n} past the end")
    raw = buf[8:8 + n]
    if raw[:1] != b"{":
        fail(path, "the header does not start with '{'")
    if (8 + n) % 8:
        fail(path, f"data start {8 + n} is not a multiple of 8")
    text = raw.decode("utf-8")
    body = text.rstrip(" ")
    if len(text) - len(body) >= 8 or body != text[:len(body)]:
        fail(path, "the header is padded with more than 7 spaces")
    def unique(pairs):
        if len({k for k, _ in pairs}) != len(pairs):
            fail(path, "duplicate keys")
        return dict(pairs)

    header = json.loads(body, object_pairs_hook=unique)
    keys = list(header)
    if written_by_qforge:
        if json.dumps(header, separators=(",", ":"), ensure_ascii=False) != body:
            fail(path, "the header is not compact JSON in its own key order")
        if "__metadata__" in keys and keys[0] != "__metadata__":
            fail(path, "__metadata__ is not the first key")
    data = buf[8 + n:]
    arrays, meta, ranges = {}, {}, []
    for name, info in header.items():
        if name == "__metadata__":
            meta = info
            if not all(isinstance(v, str) for v in meta.values()):
                fail(path, "__metadata__ holds a value that is not a string")
            continue
        if list(info) != ["dtype", "shape", "data_offsets"]:
            fail(path, f"{name}: fields {list(info)}")
        b, e = info["data_offsets"]
        ranges.append((b, e, name))
        dt = np.dtype(NP_DTYPES[info["dtype"]])
        count = int(np.prod(info["shape"], dtype=np.int64))
        if e - b != count * dt.itemsize:
            fail(path, f"{name}: {e - b} bytes for shape {info['shape']} of {info['dtype']}")
        arrays[name] = (info["dtype"], np.frombuffer(data, dtype=dt, count=count, offset=b).reshape(info["shape"]))
    if written_by_qforge and ranges != sorted(ranges):
        fail(path, "the data are not laid out in header order")
    end = 0
    for b, e, name in sorted(ranges):
        if b != end:
            fail(path, f"{name}: begins at {b}, expected {end} (no overlaps, no holes)")
        end = e
    if end != len(data):
        fail(path, f"{len(data) - end} bytes after the last tensor")
    return meta, arrays


def verify(path, dtypes=None, same_as=None):
    meta, arrays = read(path)
    for name, (dtype, a) in arrays.items():
        if dtypes and dtype not in dtypes:
            fail(path, f"{name}: dtype {dtype}, expected one of {sorted(dtypes)}")
        if dtype in ("F16", "F32", "F64"):
            if not np.all(np.isfinite(a)):
                fail(path, f"{name}: non-finite values")
            if name.endswith("norm.weight") and not (0.89 < a.min() and a.max() < 1.11):
                fail(path, f"{name}: values [{a.min()}, {a.max()}], expected 1 +- 0.1 (the generator's)")
    if same_as:
        _, other = read(same_as, written_by_qforge=False)
        if list(other) != list(arrays) and sorted(other) != sorted(arrays):
            fail(path, f"tensors {sorted(arrays)} differ from {same_as}'s {sorted(other)}")
        for name, (dtype, a) in arrays.items():
            odt, o = other[name]
            if odt != dtype or o.shape != a.shape or o.tobytes() != a.tobytes():
                fail(path, f"{name}: differs from {same_as}")
    try:
        from safetensors import safe_open  # the reference implementation, when installed
    except ImportError:
        reference = "not installed"
    else:
        with safe_open(path, framework="np") as f:
            if sorted(f.keys()) != sorted(arrays) or (f.metadata() or {}) != meta:
                fail(path, "the safetensors package reads other names or metadata")
            for name, (dtype, a) in arrays.items():
                if dtype not in BITS_ONLY and not np.array_equal(f.get_tensor(name), a):
                    fail(path, f"{name}: differs from what the safetensors package loads")
        reference = "agrees"
    print(f"{path}: {len(arrays)} tensors, {len(meta)} metadata entries; safetensors package: {reference}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "tiny":
        tiny(argv[1])
    elif len(argv) >= 2 and argv[0] == "hostile":
        hostile(argv[1])
    elif len(argv) >= 2 and argv[0] == "mutants":
        mutants(argv[1])
    elif len(argv) >= 2 and argv[0] == "verify":
        dtypes = same = None
        rest = argv[2:]
        while rest:
            if rest[0] == "--dtypes":
                dtypes = set(rest[1].split(","))
            elif rest[0] == "--same-tensors-as":
                same = rest[1]
            else:
                sys.exit(__doc__)
            rest = rest[2:]
        verify(argv[1], dtypes, same)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
