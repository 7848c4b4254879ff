#!/usr/bin/env python3
"""Checks an ONNX file with tools kiln did not write, and runs it in ONNX Runtime.

Usage: onnx_crosscheck.py MODEL.onnx [ROWS.json]

1. onnx.checker.check_model(full_check=True)
2. onnx.shape_inference.infer_shapes(strict_mode=True)
3. onnxruntime.InferenceSession(CPUExecutionProvider) on ROWS (a JSON list of float rows), or on
   one row of zeros when ROWS is not given.

Prints one JSON object: {"checker": "ok", "shape_inference": "ok", "outputs": {name: values}}.
Exits non-zero with the error on stderr when any step fails.
"""
import json, sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    path = sys.argv[1]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            rows = np.asarray(json.load(f), dtype=np.float32)
    else:
        width = inp.shape[1] if isinstance(inp.shape[1], int) else 1
        rows = np.zeros((1, width), dtype=np.float32)
    outs = sess.run(None, {inp.name: rows})
    names = [o.name for o in sess.get_outputs()]
    print(json.dumps({
        "checker": "ok",
        "shape_inference": "ok",
        "outputs": {n: o.tolist() for n, o in zip(names, outs)},
    }))


if __name__ == "__main__":
    main()
