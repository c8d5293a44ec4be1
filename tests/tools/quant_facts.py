#!/usr/bin/env python3
"""What a quantized ONNX model's integer codes are, read with the onnx package
(independently of qforge's reader), for tests that check artifacts against a
hardware profile.

  quant_facts.py MODEL.onnx

Prints one JSON object:
  {"opset": 13,
   "activations": [{"node": q, "type": "uint8", "zero_points": [..]}],   # QuantizeLinear
   "weights": [{"node": dq, "type": "int8", "zero_points": [..], "per_channel": true,
                "readers": ["Conv"]}],                                     # DequantizeLinear of an initializer
   "constants": [...],                                                    # other DequantizeLinear of initializers
   "biases": n,                                                           # int32 DequantizeLinear
   "qlinear_ops": ["QLinearConv", ...],
   "pairs": [["uint8", "int8", "Conv"], ...],                            # activation and weight types met at a node
   "nodes": [{"node": "add", "op": "Add", "inputs": [[scale, zp], ..],    # QDQ: a quantized node's activation inputs'
              "output": [scale, zp]}]}                                     # and output's (scalar) parameters
"""
import json
import sys

import onnx
from onnx import numpy_helper

NAMES = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT16: "uint16",
         onnx.TensorProto.INT16: "int16", onnx.TensorProto.INT32: "int32"}
for attr, name in (("UINT4", "uint4"), ("INT4", "int4")):
    if hasattr(onnx.TensorProto, attr):
        NAMES[getattr(onnx.TensorProto, attr)] = name


def weight_slot(node, value):
    """Whether `node` reads `value` where it takes a weight (other constants are coded like activations)."""
    return node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] == value


def main():
    model = onnx.load(sys.argv[1])
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for n in g.node:  # Constant nodes count as initializers
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            inits[n.output[0]] = n.attribute[0].t
    producer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def zp(n):
        if len(n.input) > 2 and n.input[2] in inits:
            t = inits[n.input[2]]
            return NAMES.get(t.data_type, str(t.data_type)), [int(v) for v in numpy_helper.to_array(t).ravel()]
        return "uint8", [0]

    facts = {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
             "activations": [], "weights": [], "constants": [], "biases": 0, "qlinear_ops": [], "pairs": []}
    act_type = {}
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            t, z = zp(n)
            facts["activations"].append({"node": n.name, "type": t, "zero_points": z})
        elif n.op_type == "DequantizeLinear":
            t, z = zp(n)
            if t == "int32":
                facts["biases"] += 1
            elif n.input[0] in inits and any(weight_slot(r, n.output[0]) for r in readers.get(n.output[0], [])):
                scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
                facts["weights"].append({"node": n.name, "type": t, "zero_points": z,
                                         "per_channel": scale is not None and scale.size > 1,
                                         "readers": [r.op_type for r in readers.get(n.output[0], [])]})
            elif n.input[0] in inits:
                facts["constants"].append({"node": n.name, "type": t, "zero_points": z})
            else:
                act_type[n.output[0]] = t
        elif n.op_type.startswith("QLinear") or n.op_type == "QGemm":
            facts["qlinear_ops"].append(n.op_type)
    for n in g.node:
        a = next((act_type[i] for i in n.input if i in act_type), None)
        w = None
        for i in n.input:
            p = producer.get(i)
            if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in inits and weight_slot(n, i):
                t, _ = zp(p)
                if t != "int32":
                    w = t
        if a and w:
            facts["pairs"].append([a, w, n.op_type])

    def scalar_params(q):
        if q.input[1] not in inits:
            return None
        s = numpy_helper.to_array(inits[q.input[1]]).ravel()
        return [float(s[0]), zp(q)[1][0]] if s.size == 1 else None

    facts["nodes"] = []
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or not n.output:
            continue
        q = next((r for r in readers.get(n.output[0], []) if r.op_type == "QuantizeLinear"), None)
        if q is None:
            continue
        ins = []
        for i in n.input:
            p = producer.get(i)
            if p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in inits:
                ins.append(scalar_params(p))
        facts["nodes"].append({"node": n.name, "op": n.op_type, "inputs": ins, "output": scalar_params(q)})
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
