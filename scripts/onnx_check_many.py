#!/usr/bin/env python3
"""Runs the `onnx` checker (full_check) and strict shape inference on many files in one process.

Usage: onnx_check_many.py MODEL.onnx [MODEL.onnx ...]

Prints one JSON object mapping each path to "ok" or the error message.
"""
import json
import sys

import onnx


def check(path):
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        return "ok"
    except Exception as e:  # noqa: BLE001 - every failure is reported, per file
        return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    print(json.dumps({p: check(p) for p in sys.argv[1:]}))
