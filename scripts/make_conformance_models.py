#!/usr/bin/env python3
"""Writes ONNX models produced by Python tools for kiln's engine conformance suite.

Usage: make_conformance_models.py DIR

- py_mlp.onnx       : an MLP built with onnx.helper (Gemm with transB=1, Relu, Softmax),
                      input "x" float32 [N, 6], output "probs" [N, 3].
- py_mlp_matmul.onnx: the same network with MatMul + Add, the form ORT's quantizer rewrites.
- py_swish_fn.onnx  : the Gemm MLP with a Swish activation as a model-local function
                      (ONNX Runtime runs the function; kiln inlines it for tract).
- ort_dynamic.onnx  : py_mlp_matmul quantized by onnxruntime.quantization.quantize_dynamic
                      (int8 weights, MatMulInteger).
- ort_qdq.onnx      : py_mlp_matmul quantized by onnxruntime.quantization.quantize_static in QDQ
                      format, calibrated on 200 random rows.
"""
import pathlib, sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(1234)
W1 = rng.normal(0, 0.5, (16, 6)).astype(np.float32)   # [out, in] for transB=1
B1 = rng.normal(0, 0.1, 16).astype(np.float32)
W2 = rng.normal(0, 0.5, (3, 16)).astype(np.float32)
B2 = rng.normal(0, 0.1, 3).astype(np.float32)


def io():
    return ([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])])


def gemm_model():
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    inits = [numpy_helper.from_array(a, n) for a, n in [(W1, "w1"), (B1, "b1"), (W2, "w2"), (B2, "b2")]]
    i, o = io()
    return helper.make_model(helper.make_graph(nodes, "py_mlp", i, o, inits), opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def matmul_model():
    nodes = [helper.make_node("MatMul", ["x", "w1t"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2t"], ["l0"]),
             helper.make_node("Add", ["l0", "b2"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    inits = [numpy_helper.from_array(a, n) for a, n in [(W1.T.copy(), "w1t"), (B1, "b1"), (W2.T.copy(), "w2t"), (B2, "b2")]]
    i, o = io()
    return helper.make_model(helper.make_graph(nodes, "py_mlp_matmul", i, o, inits), opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def swish_function_model():
    """The MLP with a Swish activation written as a model-local function (domain ai.kiln)."""
    fn = helper.make_function("ai.kiln", "Swish", ["x"], ["y"],
                              [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                              [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Swish", ["h"], ["r"], domain="ai.kiln"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    inits = [numpy_helper.from_array(a, n) for a, n in [(W1, "w1"), (B1, "b1"), (W2, "w2"), (B2, "b2")]]
    i, o = io()
    return helper.make_model(helper.make_graph(nodes, "py_swish_fn", i, o, inits),
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.kiln", 1)],
                             functions=[fn], ir_version=8)


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(gemm_model(), out / "py_mlp.onnx")
    onnx.save(matmul_model(), out / "py_mlp_matmul.onnx")
    onnx.save(swish_function_model(), out / "py_swish_fn.onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    quantize_dynamic(str(out / "py_mlp_matmul.onnx"), str(out / "ort_dynamic.onnx"), weight_type=QuantType.QUInt8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter([{"x": rng.normal(0, 1, (1, 6)).astype(np.float32)} for _ in range(200)])

        def get_next(self):
            return next(self.rows, None)

    quantize_static(str(out / "py_mlp_matmul.onnx"), str(out / "ort_qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)


if __name__ == "__main__":
    main()
