#!/usr/bin/env python3
"""Builds ONNX models that exercise every part of the ONNX IR, for kiln-onnx's round-trip test.

Usage:
  make_diverse_models.py DIR            write DIR/*.onnx
  make_diverse_models.py DIR --compare  check that each DIR/X.kiln (kiln's re-encoding of X.onnx)
                                        is the same message as X.onnx; exit 1 otherwise
"""
import pathlib, sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def meta(msg, **kv):
    for k, v in kv.items():
        e = msg.metadata_props.add()
        e.key, e.value = k, v


def mlp():
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    b = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "b")
    n1 = helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="gemm", doc_string="a gemm", alpha=1.0, transB=0)
    n2 = helper.make_node("Softmax", ["h"], ["y"], name="sm", axis=0)  # axis=0 explicitly set
    meta(n1, origin="layer0")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    x.type.denotation = "TENSOR"
    x.type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    vi = helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 4])
    meta(vi, note="hidden")
    g = helper.make_graph([n1, n2], "mlp", [x], [y], [w, b], doc_string="graph doc", value_info=[vi])
    meta(g, graph_key="graph_value")
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="py", producer_version="1",
                          domain="ai.test", model_version=3, doc_string="model doc")
    meta(m, author="kiln tests", empty="")
    return m


def control_flow():
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    if_n = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "one"], ["acc_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, dtype=np.float32), "one")])
    loop = helper.make_node("Loop", ["n", "", "y"], ["z"], body=body)
    g = helper.make_graph([if_n, loop], "cf",
                          [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                           helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def functions():
    fn = helper.make_function("ai.kiln", "Swish", ["x"], ["y"],
                              [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                              [helper.make_opsetid("", 17)], attributes=["unused"],
                              attribute_protos=[helper.make_attribute("beta", 1.0)], doc_string="swish")
    fn.overload = "v1"
    fn.value_info.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"]))
    meta(fn, kind="activation")
    call = helper.make_node("Swish", ["x"], ["y"], domain="ai.kiln", overload="v1")
    ref = helper.AttributeProto()
    ref.name, ref.ref_attr_name, ref.type = "alpha", "beta", helper.AttributeProto.FLOAT
    g = helper.make_graph([call], "fn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.kiln", 1)], functions=[fn])
    m.functions[0].node[0].attribute.append(ref)
    return m


def tensors_and_types():
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.5, 2.5], dtype=np.float32), "sv"),
                                       numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "si"), [4])
    const = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    typed = TensorProto(name="typed", data_type=TensorProto.DOUBLE, dims=[2], double_data=[1.0, -2.0])
    u64 = TensorProto(name="u64", data_type=TensorProto.UINT64, dims=[2], uint64_data=[1, 2**63])
    i32 = TensorProto(name="i32", data_type=TensorProto.INT32, dims=[3], int32_data=[-1, 0, 7])
    strings = TensorProto(name="strs", data_type=TensorProto.STRING, dims=[2], string_data=[b"a", b"\xff"])
    seg = TensorProto(name="seg", data_type=TensorProto.FLOAT, dims=[1], float_data=[0.5])
    seg.segment.begin, seg.segment.end = 0, 1
    ext = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for k, v in [("location", "weights.bin"), ("offset", "0"), ("length", "16")]:
        e = ext.external_data.add()
        e.key, e.value = k, v
    meta(i32, role="index")
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [None])
    mp = helper.make_value_info("map", helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    opt = helper.make_value_info("opt", helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))
    sp = helper.make_value_info("sp", helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [4]))
    attrs_node = helper.make_node("Custom", ["c"], ["o"], domain="ai.test", ints=[1, 0, -3], floats=[0.0, 1.5], strings=[b"x", b""],
                                  i=0, f=0.0, s=b"", tensor=numpy_helper.from_array(np.array([1], dtype=np.int8), "t8"),
                                  tensors=[numpy_helper.from_array(np.array([2], dtype=np.uint8), "tu8")],
                                  tp=helper.make_tensor_type_proto(TensorProto.FLOAT, [1]),
                                  tps=[helper.make_tensor_type_proto(TensorProto.INT64, ["K"])],
                                  sparse_tensors=[sparse])
    g = helper.make_graph([const, attrs_node], "types", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
                          [typed, u64, i32, strings, seg, ext], value_info=[seq, mp, opt, sp],
                          sparse_initializer=[sparse])
    ann = g.quantization_annotation.add()
    ann.tensor_name = "c"
    e = ann.quant_parameter_tensor_names.add()
    e.key, e.value = "SCALE_TENSOR", "scale"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.test", 1)])
    ti = m.training_info.add()
    ti.initialization.CopyFrom(helper.make_graph([], "init", [], []))
    ti.algorithm.CopyFrom(helper.make_graph([], "algo", [], []))
    b = ti.update_binding.add()
    b.key, b.value = "w", "w_new"
    b = ti.initialization_binding.add()
    b.key, b.value = "w", "w0"
    return m


def distributed():
    m = mlp()
    if not hasattr(m, "configuration"):
        return None
    cfg = m.configuration.add()
    cfg.name, cfg.num_devices = "two", 2
    cfg.device.extend(["cuda:0", "cuda:1"])
    node = m.graph.node[0]
    dc = node.device_configurations.add()
    dc.configuration_id, dc.pipeline_stage = "two", 0
    spec = dc.sharding_spec.add()
    spec.tensor_name = "w"
    spec.device.extend([0, 1])
    grp = spec.index_to_device_group_map.add()
    grp.key = 0
    grp.value.extend([0, 1])
    sd = spec.sharded_dim.add()
    sd.axis = 1
    s = sd.simple_sharding.add()
    s.dim_param, s.num_shards = "N", 2
    s2 = sd.simple_sharding.add()
    s2.dim_value, s2.num_shards = 4, 2
    return m


def main():
    out = pathlib.Path(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "--compare":
        bad = 0
        for p in sorted(out.glob("*.onnx")):
            a = onnx.ModelProto.FromString(p.read_bytes())
            b = onnx.ModelProto.FromString(p.with_suffix(".kiln").read_bytes())
            same_bytes = p.read_bytes() == p.with_suffix(".kiln").read_bytes()
            if a != b:
                bad += 1
                print(f"{p.name}: messages differ")
            else:
                print(f"{p.name}: same message (bytes identical: {same_bytes})")
        sys.exit(1 if bad else 0)
    out.mkdir(parents=True, exist_ok=True)
    for name, build in [("mlp", mlp), ("control_flow", control_flow), ("functions", functions),
                        ("tensors_and_types", tensors_and_types), ("distributed", distributed)]:
        m = build()
        if m is not None:
            (out / f"{name}.onnx").write_bytes(m.SerializeToString())


if __name__ == "__main__":
    main()
