#!/usr/bin/env python3
"""ONNX Runtime's side of bench/quantize_static: static QDQ quantization of one
model with onnxruntime.quantization.quantize_static, as a user runs it.

  ort_quantize.py SPEC.json

SPEC: {"model": float model, "output": quantized model, "work": scratch dir,
       "input": input name, "samples": [PNG or .npz files],
       "preprocess": {"channels", "mean", "std", "scale"} (images only),
       "method": "minmax" | "percentile" | "entropy", "percentile": 99.999,
       "op_types": [...], "per_channel": true, "opset": 13}

Steps (each timed, printed as "ort <step> <seconds>"):
  1. opset: onnx.version_converter to SPEC opset (ONNX Runtime writes per-channel
     DequantizeLinear with an axis, which needs opset 13; the models here are
     opset 11-12, and quantize_static does not raise the opset itself);
  2. pre_process: onnxruntime.quantization.quant_pre_process with
     skip_symbolic_shape=True (symbolic shape inference needs sympy, which the
     pinned venv does not have; ONNX's shape inference and ONNX Runtime's
     graph optimisations, which fold BatchNormalization and lift Constant
     weights to initializers, still run);
  3. quantize: quantize_static, QDQ, uint8 activations, int8 weights, per
     channel, the calibration method given, fed by a CalibrationDataReader
     that decodes each PNG when asked (tests/tools/synth_inputs.py: the same
     pixels stb decodes, and the same arithmetic as qforge's image datasets)
     or loads each .npz.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "tools"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import version_converter  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

import synth_inputs  # noqa: E402


class Reader(CalibrationDataReader):
    def __init__(self, spec):
        self.spec = spec
        self.it = iter(spec["samples"])

    def get_next(self):
        path = next(self.it, None)
        if path is None:
            return None
        if path.endswith(".npz"):
            z = np.load(path)
            return {k: z[k] for k in z.files}
        p = self.spec["preprocess"]
        return {self.spec["input"]: synth_inputs.model_input(
            synth_inputs.read_png(path), p["channels"], p["mean"], p["std"], p["scale"])}


def main(argv):
    with open(argv[0]) as f:
        spec = json.load(f)
    os.makedirs(spec["work"], exist_ok=True)
    t = time.perf_counter()
    m = onnx.load(spec["model"])
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    upgraded = os.path.join(spec["work"], "opset.onnx")
    if opset < spec["opset"]:
        m = version_converter.convert_version(m, spec["opset"])
    onnx.save(m, upgraded)
    del m
    print("ort opset %.3f" % (time.perf_counter() - t), flush=True)
    t = time.perf_counter()
    pre = os.path.join(spec["work"], "pre.onnx")
    quant_pre_process(upgraded, pre, skip_symbolic_shape=True)
    print("ort pre_process %.3f" % (time.perf_counter() - t), flush=True)
    t = time.perf_counter()
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[spec["method"]]
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if spec["method"] == "percentile":
        extra["CalibPercentile"] = spec.get("percentile", 99.999)
    quantize_static(pre, spec["output"], Reader(spec), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=spec["op_types"], per_channel=spec["per_channel"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method, extra_options=extra)
    print("ort quantize %.3f" % (time.perf_counter() - t), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
