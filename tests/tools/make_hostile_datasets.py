#!/usr/bin/env python3
"""Writes the hostile dataset corpora: tests/data/hostile/{npy,npz,pb}/.

    python3 tests/tools/make_hostile_datasets.py [ROOT]      (default: tests/data/hostile)

Standard library only, byte-for-byte deterministic (no clocks, no zlib: ZIP archives and
deflate streams are assembled by hand). Each file must be refused by the dataset readers
(pipeline/src/npy.cc, npz.cc, dataset.cc; `qforge inspect FILE` exits with status 1) with
a qforge::Error naming the file and containing the text listed in ROOT/<kind>/README.md,
which this script also writes.
"""
import os
import struct
import sys
import zlib  # crc32 only: the checksum function, not the compressor

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "hostile")

# ---------------------------------------------------------------- .npy

VALID_HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
VALID_DATA = struct.pack("<6f", 0.0, 0.5, 1.0, 1.5, 2.0, 2.5)  # 24 bytes


def npy(header=VALID_HEADER, data=VALID_DATA, major=1, minor=0, header_len=None):
    """An .npy file as np.save writes it: the header padded with spaces so that the
    data starts at a multiple of 64, ended by '\\n'. `header_len` overrides the length field."""
    prefix = 10 if major == 1 else 12
    text = header.encode("latin-1")
    total = prefix + len(text) + 1
    text += b" " * ((64 - total % 64) % 64) + b"\n"
    n = len(text) if header_len is None else header_len
    length = struct.pack("<H", n) if major == 1 else struct.pack("<I", n)
    return b"\x93NUMPY" + bytes([major, minor]) + length + text + data


def hdr(descr="'<f4'", fortran="False", shape="(2, 3)"):
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


GOOD_NPY = npy()
H = 10  # the header dict starts at byte 10 (format 1.0)
DATA_AT = len(GOOD_NPY) - len(VALID_DATA)  # 128: 60 header characters pad to 118


def header_at(text, needle):
    """The file offset of `needle` inside VALID-style header `text` (starting at byte 10)."""
    return H + text.index(needle)


def npy_cases():
    c = []

    def add(name, data, wrong, expect):
        c.append((name + ".npy", data, wrong, expect))

    add("empty", b"", "0 bytes", "byte 0: not a .npy file")
    add("bad_magic", b"\x93NUMPZ" + GOOD_NPY[6:], "the magic is '\\x93NUMPZ'", "byte 0: not a .npy file")
    add("truncated_magic", GOOD_NPY[:5], "the first 5 bytes of a valid file", "(5 bytes in all)")
    add("zip_renamed", b"PK\x03\x04" + b"\x00" * 40, "a ZIP local header saved as .npy",
        "byte 0: not a .npy file")
    add("bad_version", npy(major=4), "format version 4.0", "byte 6: unsupported .npy format version 4.0")
    add("bad_minor_version", npy(minor=1), "format version 1.1",
        "byte 6: unsupported .npy format version 1.1")
    add("truncated_header_length", GOOD_NPY[:9], "version 1.0, one of the two header length bytes",
        "byte 8: truncated: the header length needs 2 bytes")
    add("truncated_header_length_v2", npy(major=2)[:11], "version 2.0, three of the four header length bytes",
        "byte 8: truncated: the header length needs 4 bytes")
    add("truncated_header", GOOD_NPY[:40], "cut inside the header dict (30 of its %d bytes)" % (DATA_AT - H),
        "byte 8: header length %d runs past the end of the file (30 bytes after byte 10)" % (DATA_AT - H))
    add("huge_header_length", npy(major=2, header_len=0xFFFFFFFF), "version 2.0, header length 2^32-1",
        "byte 8: header length 4294967295 runs past the end of the file")
    add("header_not_dict", npy("[1, 2, 3]"), "the header is a list, not a dict",
        "byte 10: malformed .npy header: expected the header dict to start with '{'")
    add("header_unterminated", npy("{'descr': '<f4', "), "the dict is not closed",
        "malformed .npy header: expected a quoted key or '}', found the end of the header")
    t = "{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os').system('id'), }"
    add("header_python_code", npy(t), "'shape' is a Python expression (numpy's literal_eval refuses it too)",
        "byte %d: malformed .npy header: expected a value (a string, True, False or a tuple)" %
        header_at(t, "__import__"))
    t = hdr(descr="True")
    add("descr_not_string", npy(t), "'descr' is True",
        "byte %d: 'descr' must be a string" % header_at(t, "True"))
    t = hdr(descr="'<f3'")
    add("bad_descr", npy(t), "'descr' is '<f3'", "byte %d: unsupported dtype '<f3'" % header_at(t, "'<f3'"))
    t = hdr(descr="'f4'")
    add("descr_no_byte_order", npy(t), "'descr' is 'f4'",
        "byte %d: 'descr' 'f4' has no byte-order character" % header_at(t, "'f4'"))
    t = hdr(fortran="True")
    add("fortran_order", npy(t), "fortran_order True with shape (2, 3)",
        "byte %d: fortran_order is True" % header_at(t, "True"))
    t = hdr(descr="'>f4'")
    add("big_endian", npy(t, struct.pack(">6f", 0.0, 0.5, 1.0, 1.5, 2.0, 2.5)), "'descr' is '>f4'",
        "byte %d: 'descr' '>f4' is big-endian" % header_at(t, "'>f4'"))
    t = hdr(descr="'|O'", shape="(2,)")
    # np.save(allow_pickle=True) of [None, None]: a pickle follows the header.
    add("object_dtype", npy(t, b"\x80\x02]q\x00(NNe."), "'descr' is '|O' (a pickle follows)",
        "byte %d: 'descr' 'O': object arrays (pickled Python objects) are not supported" %
        header_at(t, "'|O'"))
    t = "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (3,), }"
    add("structured_dtype", npy(t, b"\x00" * 24), "'descr' is a list of fields",
        "byte %d: 'descr' is a list: structured dtypes are not supported" % header_at(t, "["))
    t = hdr(descr="'<U5'", shape="(1,)")
    add("unicode_dtype", npy(t, b"\x00" * 20), "'descr' is '<U5'",
        "byte %d: 'descr' '<U5': string arrays are not supported" % header_at(t, "'<U5'"))
    t = hdr(shape="(4294967296, 4294967296, 4294967296)")
    add("shape_overflow", npy(t, b""), "shape (2^32, 2^32, 2^32): 2^96 elements",
        "byte %d: shape [4294967296,4294967296,4294967296] has more elements than fit in 64 bits" %
        header_at(t, "(4294967296"))
    t = hdr(descr="'<f8'", shape="(2305843009213693952,)")
    add("shape_bytes_overflow", npy(t, b""), "shape (2^61,) of float64: 2^64 bytes",
        "byte %d: shape [2305843009213693952] of f64 is more bytes than fit in 64 bits" %
        header_at(t, "(2305843009213693952"))
    t = hdr(shape="(99999999999999999999, 3)")
    add("dim_too_big", npy(t, b""), "a dimension of 10^20",
        "byte %d: dimension in 'shape' does not fit in 64 bits" % header_at(t, "99999"))
    t = hdr(shape="(-1, 3)")
    add("negative_dim", npy(t), "shape (-1, 3)",
        "byte %d: negative dimension in 'shape'" % header_at(t, "-1"))
    t = hdr(shape="(6)")
    add("shape_not_tuple", npy(t), "shape (6), which Python reads as the integer 6",
        "byte %d: 'shape' (6) is not a tuple in Python" % header_at(t, "(6)"))
    t = hdr(shape="(1099511627776,)")
    add("huge_shape_no_data", npy(t, b""), "shape (2^40,) of float32 and no data",
        "byte %d: truncated: shape [1099511627776] of f32 needs 4398046511104 data bytes, the file has 0" %
        len(npy(t, b"")))
    add("data_short", GOOD_NPY[:-4], "shape (2, 3) of float32, 20 data bytes",
        "byte %d: truncated: shape [2,3] of f32 needs 24 data bytes, the file has 20" % DATA_AT)
    add("data_long", GOOD_NPY + b"\x00" * 4, "shape (2, 3) of float32, 28 data bytes",
        "byte %d: trailing bytes: shape [2,3] of f32 needs 24 data bytes, the file has 28" % DATA_AT)
    t = "{'descr': '<f4', 'fortran_order': False, }"
    add("missing_shape", npy(t), "the header has no 'shape'", "byte 10: header lacks the key 'shape'")
    t = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 'x', }"
    add("extra_key", npy(t), "the header has a key 'extra'",
        "byte %d: unexpected header key 'extra'" % header_at(t, "'x'"))
    t = "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    add("duplicate_key", npy(t), "'descr' twice",
        "byte %d: duplicate header key 'descr'" % (H + t.index("'descr'", 2)))
    return c


# ---------------------------------------------------------------- deflate, by hand


class Bits:
    """Deflate's bit order: fields LSB first, Huffman codes MSB first."""

    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, nbits):  # an integer field, LSB first
        self.acc |= value << self.n
        self.n += nbits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def code(self, code, nbits):  # a Huffman code, MSB first
        for i in range(nbits - 1, -1, -1):
            self.put((code >> i) & 1, 1)

    def done(self):
        if self.n:
            self.out.append(self.acc & 0xFF)
        return bytes(self.out)


def fixed_literal(b, value):
    if value < 144:
        b.code(0x30 + value, 8)
    else:
        b.code(0x190 + value - 144, 9)


def deflate_literals(data):
    """A valid raw deflate stream (one fixed-Huffman block of literals) of `data`."""
    b = Bits()
    b.put(1, 1)  # BFINAL
    b.put(1, 2)  # BTYPE 01: fixed Huffman
    for v in data:
        fixed_literal(b, v)
    b.code(0, 7)  # end of block (256)
    return b.done()


def deflate_zeros(n_matches):
    """A byte 0, then `n_matches` copies of 258 bytes at distance 1: 1 + 258 * n bytes of
    zeros from about 13 bits per 258 bytes."""
    b = Bits()
    b.put(1, 1)
    b.put(1, 2)
    fixed_literal(b, 0)
    for _ in range(n_matches):
        b.code(0xC5, 8)  # length code 285 (258 bytes): 11000101
        b.code(0, 5)  # distance code 0 (distance 1)
    b.code(0, 7)
    return b.done()


# ---------------------------------------------------------------- ZIP, by hand


class Member:
    def __init__(self, name, data, method=0, flags=0, payload=None, crc=None, csize=None, usize=None,
                 local_name=None, zip64=None):
        self.name = name.encode()
        self.data = data  # the uncompressed bytes
        self.method = method
        self.flags = flags
        self.payload = payload if payload is not None else (data if method == 0 else deflate_literals(data))
        self.crc = zlib.crc32(data) if crc is None else crc
        self.csize = len(self.payload) if csize is None else csize
        self.usize = len(data) if usize is None else usize
        self.local_name = self.name if local_name is None else local_name.encode()
        self.zip64 = zip64  # (usize, csize) for a ZIP64 extra field in the central entry


DOS_TIME, DOS_DATE = 0, (1 << 5) | 1  # 1980-01-01 00:00


def zip_archive(members, cd_at=None, cd_size=None, entries=None, local_at=None, eocd_disk=0,
                zip64_entries=None, cut_cd=0):
    """Local headers and data, the central directory, and the EOCD (with a ZIP64 EOCD
    record and locator when `zip64_entries` is given). Overrides make it lie."""
    out = bytearray()
    offsets = []
    for m in members:
        offsets.append(len(out))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, m.flags, m.method, DOS_TIME, DOS_DATE, m.crc,
                           min(m.csize, 0xFFFFFFFF), min(m.usize, 0xFFFFFFFF), len(m.local_name), 0)
        out += m.local_name + m.payload
    cd = bytearray()
    for i, m in enumerate(members):
        extra = b""
        csize, usize = m.csize, m.usize
        if m.zip64 is not None:
            extra = struct.pack("<HHQQ", 0x0001, 16, m.zip64[0], m.zip64[1])
            csize = usize = 0xFFFFFFFF
        off = offsets[i] if local_at is None else local_at
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, m.flags, m.method, DOS_TIME, DOS_DATE,
                          m.crc, csize, usize, len(m.name), len(extra), 0, 0, 0, 0, off)
        cd += m.name + extra
    start = len(out)
    out += cd[:len(cd) - cut_cd]
    n = len(members) if entries is None else entries
    size = len(cd) if cd_size is None else cd_size
    at = start if cd_at is None else cd_at
    if zip64_entries is not None:
        rec = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, zip64_entries, zip64_entries, size,
                           at)
        out += struct.pack("<IIQI", 0x07064B50, 0, rec, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, eocd_disk, eocd_disk, n, n, size, at, 0)
    return bytes(out)


def npz_cases():
    c = []

    def add(name, data, wrong, expect):
        c.append((name + ".npz", data, wrong, expect))

    a = GOOD_NPY  # 152 bytes
    # Layout of a one-member stored archive of 'a.npy': local header at 0 (30 + 5 bytes),
    # data at 35, central directory at 187 (46 + 5 bytes), EOCD at 238.
    data_at, cd_at = 35, 35 + len(a)
    n = len(a)
    add("empty", b"", "0 bytes", "byte 0: not a ZIP archive: 0 bytes")
    add("bad_magic", b"NOTAZIP!" + b"\x00" * 40, "no ZIP signature",
        "byte 0: not a ZIP archive: expected 'PK")
    add("npy_renamed", GOOD_NPY, "an .npy file saved as .npz", "byte 0: not a ZIP archive: expected 'PK")
    good = zip_archive([Member("a.npy", a)])
    add("truncated_archive", good[:len(good) - 10],
        "a valid archive without its last 10 bytes (half the EOCD)", "no end-of-central-directory record")
    add("truncated_central_directory", zip_archive([Member("a.npy", a)], cut_cd=20),
        "the central directory lost its last 20 bytes; the EOCD still declares 51",
        "byte %d: the central directory (51 bytes at byte %d) runs past byte %d" % (cd_at, cd_at, cd_at + 31))
    add("empty_archive", zip_archive([]), "only an EOCD record: no members", "the archive holds no arrays")
    add("cd_offset_outside", zip_archive([Member("a.npy", a)], cd_at=0x7FFFFFF0),
        "the EOCD puts the central directory at byte 2147483632",
        "byte 2147483632: the central directory (51 bytes at byte 2147483632) runs past byte")
    add("local_offset_outside", zip_archive([Member("a.npy", a)], local_at=0x10000000),
        "the central entry puts the local header at byte 268435456",
        "member 'a.npy' (central directory entry at byte %d): local header (30 bytes at byte 268435456) "
        "runs past byte %d" % (cd_at, cd_at))
    add("data_size_outside", zip_archive([Member("a.npy", a, csize=0x7FFFFFF0, usize=0x7FFFFFF0)]),
        "the central entry declares 2147483632 stored bytes",
        "member 'a.npy' (central directory entry at byte %d): data (2147483632 bytes at byte %d) runs past" %
        (cd_at, data_at))
    add("bad_crc", zip_archive([Member("a.npy", a, crc=zlib.crc32(a) ^ 1)]),
        "the CRC-32 of 'a.npy' is off by one bit",
        "byte %d: member 'a.npy' (data at byte %d): CRC-32 mismatch" % (data_at, data_at))
    add("bad_crc_deflated", zip_archive([Member("a.npy", a, method=8, crc=0x12345678)]),
        "a deflated 'a.npy' with a wrong CRC-32", "CRC-32 mismatch: the directory says 0x12345678")
    # The bomb: 'a.npy' declares 152 bytes; its 1.3 KB deflate stream inflates to 200 KB.
    bomb = deflate_zeros(800)
    add("deflate_bomb", zip_archive([Member("a.npy", a, method=8, payload=bomb)]),
        "'a.npy' declares %d bytes; its %d deflated bytes inflate to %d" % (n, len(bomb), 1 + 258 * 800),
        "byte %d: member 'a.npy' (data at byte %d): inflates to more than its declared %d bytes" %
        (data_at, data_at, n))
    add("deflate_declared_impossible",
        zip_archive([Member("a.npy", a, method=8, payload=bomb, usize=1 << 31)]),
        "'a.npy' declares 2^31 bytes from %d deflated bytes (deflate's limit is 1032:1)" % len(bomb),
        "declares 2147483648 bytes uncompressed from %d deflated bytes, more than deflate can produce" %
        len(bomb))
    lit = deflate_literals(a)
    add("deflate_truncated", zip_archive([Member("a.npy", a, method=8, payload=lit[:len(lit) // 2])]),
        "the deflate stream of 'a.npy' is cut in half",
        "member 'a.npy' (data at byte %d): the deflate stream ends early" % data_at)
    add("deflate_corrupt", zip_archive([Member("a.npy", a, method=8, payload=b"\x07" + lit[1:])]),
        "the deflate stream of 'a.npy' starts with block type 3 (reserved)",
        "member 'a.npy' (data at byte %d): corrupt deflate data (invalid block type)" % data_at)
    add("deflate_trailing", zip_archive([Member("a.npy", a, method=8, payload=lit + b"\x00" * 8)]),
        "8 bytes after the end of 'a.npy''s deflate stream", "8 bytes after the end of the deflate stream")
    add("encrypted", zip_archive([Member("a.npy", a, flags=1)]), "'a.npy' has the encrypted flag (bit 0)",
        "byte %d: member 'a.npy' (central directory entry at byte %d): encrypted members are not supported" %
        (cd_at + 8, cd_at))
    add("compression_bzip2", zip_archive([Member("a.npy", a, method=12, payload=a)]),
        "'a.npy' uses method 12 (bzip2)",
        "byte %d: member 'a.npy' (central directory entry at byte %d): compression method 12 is not "
        "supported" % (cd_at + 10, cd_at))
    add("member_not_npy", zip_archive([Member("a.txt", a)]), "the member is 'a.txt'",
        "member 'a.txt' (central directory entry at byte %d): not a .npy member" % cd_at)
    add("duplicate_member", zip_archive([Member("a.npy", a), Member("a.npy", a)]),
        "two members named 'a.npy'", "duplicate member name")
    add("local_name_mismatch", zip_archive([Member("a.npy", a, local_name="b.npy")]),
        "the central directory says 'a.npy', the local header 'b.npy'", "the local header names 'b.npy'")
    add("stored_size_mismatch", zip_archive([Member("a.npy", a, usize=n + 8)]),
        "stored 'a.npy': compressed size %d, size %d" % (n, n + 8),
        "member 'a.npy' (data at byte %d): stored, but its compressed size %d differs from its size %d" %
        (data_at, n, n + 8))
    add("multi_disk", zip_archive([Member("a.npy", a)], eocd_disk=1),
        "the EOCD says disk 1 of a split archive", "multi-disk (split) ZIP archives are not supported")
    add("zip64_absurd_sizes",
        zip_archive([Member("a.npy", a, zip64=(1 << 62, 1 << 62))]),
        "'a.npy' has ZIP64 sizes of 2^62 bytes",
        "member 'a.npy' (central directory entry at byte %d): data (4611686018427387904 bytes at byte %d) "
        "runs past" % (cd_at, data_at))
    add("zip64_absurd_entry_count", zip_archive([Member("a.npy", a)], zip64_entries=1 << 60),
        "the ZIP64 EOCD record declares 2^60 entries",
        "the central directory declares 1152921504606846976 entries, its 51 bytes hold at most 1")
    z = bytearray(zip_archive([Member("a.npy", a)]))
    struct.pack_into("<II", z, cd_at + 20, 0xFFFFFFFF, 0xFFFFFFFF)
    add("zip64_missing_extra", bytes(z), "sizes of 0xFFFFFFFF in the central entry and no ZIP64 extra field",
        "sizes are 0xFFFFFFFF but there is no ZIP64 extra field")
    bad_npy = npy(hdr(descr="'>f4'"))
    add("member_bad_npy", zip_archive([Member("a.npy", a), Member("b.npy", bad_npy)]),
        "a valid 'a.npy', then 'b.npy' whose descr is big-endian",
        "b.npy: byte %d: 'descr' '>f4' is big-endian" % header_at(hdr(descr="'>f4'"), "'>f4'"))
    return c


# ---------------------------------------------------------------- TensorProto .pb


def varint(v):
    v &= (1 << 64) - 1  # negative int64 as two's complement, 10 bytes
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data


FLOAT, UINT8, INT8, STRING, INT64 = 1, 2, 3, 8, 7


def tensor(name=b"x", dims=(2, 3), data_type=FLOAT, raw=VALID_DATA, extra=b""):
    """A TensorProto: dims (1), data_type (2), name (8), raw_data (9), then `extra`."""
    out = b"".join(field_varint(1, d) for d in dims)
    if data_type is not None:
        out += field_varint(2, data_type)
    if name is not None:
        out += field_bytes(8, name)
    if raw is not None:
        out += field_bytes(9, raw)
    return out + extra


def pb_cases():
    c = []

    def add(name, data, wrong, expect):
        c.append((name + ".pb", data, wrong, expect))

    good = tensor()
    parse = "not a valid ONNX TensorProto (protobuf parse failed"
    add("empty", b"", "0 bytes (an empty message: no data_type)", "data_type is 0 (UNDEFINED)")
    add("truncated", good[:len(good) - 10], "a valid tensor cut inside its raw_data", parse)
    add("truncated_varint", field_varint(1, 1 << 40)[:3], "cut inside the varint of dims[0]", parse)
    add("garbage", b"\x0f\xff\xff\xff\x00\x01", "field 1 with wire type 7", parse)
    add("huge_length_prefix", tensor(raw=None) + b"\x4a\xff\xff\xff\xff\x07" + b"\x00" * 8,
        "raw_data declares 2^31-1 bytes, 8 follow", parse)
    add("unknown_data_type", tensor(data_type=99), "data_type 99", "tensor 'x': unsupported data_type 99")
    add("undefined_data_type", tensor(data_type=0), "data_type 0", "tensor 'x': data_type is 0 (UNDEFINED)")
    add("string_tensor", tensor(dims=(1,), data_type=STRING, raw=None, extra=field_bytes(6, b"hello")),
        "a string tensor", "tensor 'x': string tensors are not supported as samples")
    add("raw_data_short", tensor(raw=VALID_DATA[:20]), "float [2, 3] with 20 bytes of raw_data",
        "tensor 'x': raw_data has 20 bytes, f32 [2,3] needs 24")
    add("raw_data_long", tensor(raw=VALID_DATA + b"\x00" * 4), "float [2, 3] with 28 bytes of raw_data",
        "tensor 'x': raw_data has 28 bytes, f32 [2,3] needs 24")
    ext = field_bytes(13, field_bytes(1, b"location") + field_bytes(2, b"../../../etc/passwd"))
    add("external_data", tensor(raw=None, extra=ext + field_varint(14, 1)),
        "data_location EXTERNAL, location '../../../etc/passwd'", "tensor 'x': stores its data externally")
    add("external_data_no_location_flag", tensor(raw=None, extra=ext),
        "an external_data entry without data_location", "tensor 'x': stores its data externally")
    add("dims_overflow", tensor(dims=(1 << 32, 1 << 32, 1 << 32), raw=b""), "dims [2^32, 2^32, 2^32]",
        "tensor 'x': dims have more elements than fit in 64 bits")
    add("bytes_overflow", tensor(dims=(1 << 62,), raw=b""), "float [2^62]: 2^64 bytes",
        "tensor 'x': dims are more bytes than fit in 64 bits")
    add("negative_dim", tensor(dims=(-1, 3)), "dims [-1, 3]", "tensor 'x': dims[0] = -1 is negative")
    add("huge_dims_no_data", tensor(dims=(1 << 40,), raw=b""), "float [2^40] with 0 bytes of raw_data",
        "tensor 'x': raw_data has 0 bytes, f32 [1099511627776] needs 4398046511104")
    floats5 = field_bytes(4, struct.pack("<5f", 1, 2, 3, 4, 5))
    add("float_data_count", tensor(raw=None, extra=floats5), "float [2, 3] with 5 float_data values",
        "tensor 'x': float_data has 5 values, f32 [2,3] needs 6")
    add("raw_and_float_data", tensor(extra=floats5), "both raw_data and float_data",
        "tensor 'x': has both raw_data and float_data")
    add("wrong_data_field", tensor(raw=None, extra=field_bytes(7, b"".join(varint(i) for i in range(6)))),
        "float [2, 3] with its values in int64_data",
        "tensor 'x': a f32 tensor keeps its values in float_data, found int64_data")
    add("int8_out_of_range",
        tensor(dims=(2,), data_type=INT8, raw=None, extra=field_bytes(5, varint(1) + varint(300))),
        "int8 [2] with int32_data [1, 300]", "tensor 'x': int32_data[1] = 300 is out of range for i8")
    add("no_data", tensor(raw=None), "float [2, 3] with no data field",
        "tensor 'x': has no data: neither raw_data nor float_data")
    add("segment", tensor(extra=field_bytes(3, field_varint(1, 0) + field_varint(2, 6))), "a segment [0, 6)",
        "tensor 'x': is a segment of a larger tensor")
    return c


# ---------------------------------------------------------------- output

TITLES = {
    "npy": ("NumPy .npy", "`read_npy` (pipeline/src/npy.cc)"),
    "npz": ("NumPy .npz", "`read_npz` (pipeline/src/npz.cc)"),
    "pb": ("TensorProto .pb", "`read_tensor_pb` (pipeline/src/dataset.cc)"),
}

NOTES = {
    "npz": "\nThe archives are assembled byte by byte: one stored member `a.npy` (a 152-byte\n"
           "float32 (2, 3) .npy) unless the table says otherwise; \"deflated\" members use one\n"
           "fixed-Huffman block. `deflate_bomb.npz` is 1.3 KB on disk and inflates to 200 KB;\n"
           "the reader stops one byte past the declared size.\n",
    "npy": "\nEvery file is an .npy as `np.save` lays it out (header padded so the data starts\n"
           "at a multiple of 64 bytes) with one thing wrong; the valid base is float32 (2, 3),\n"
           "its data at byte 128.\n",
    "pb": "\nEach file is one serialized `onnx.TensorProto` (the base: name 'x', float [2, 3],\n"
          "24 bytes of raw_data) with one thing wrong.\n",
}


def write(kind, cases):
    d = os.path.join(ROOT, kind)
    os.makedirs(d, exist_ok=True)
    title, reader = TITLES[kind]
    lines = [
        "# Hostile %s corpus" % title, "",
        "Generated by `tests/tools/make_hostile_datasets.py`; do not edit by hand. Regenerate with",
        "`python3 tests/tools/make_hostile_datasets.py tests/data/hostile`. Each file must be refused by",
        "%s: `qforge inspect FILE` exits with status 1 and a message that names" % reader,
        "the file and contains the text below.",
        NOTES[kind],
        "| file | what is wrong | the message contains |",
        "|---|---|---|",
    ]
    names = set()
    for name, data, wrong, expect in cases:
        assert name not in names, name
        assert "`" not in expect, name
        names.add(name)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731 (GitHub tables: '|' needs escaping)
        lines.append("| `%s` | %s | `%s` |" % (name, cell(wrong), cell(expect)))
    with open(os.path.join(d, "README.md"), "w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d files to %s" % (len(cases), d))


if __name__ == "__main__":
    write("npy", npy_cases())
    write("npz", npz_cases())
    write("pb", pb_cases())
