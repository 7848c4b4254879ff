//! `ai.kiln.Int8Linear`: kiln's int8 linear layer as an ONNX model-local function.
//!
//! ```text
//! Y = Int8Linear(X, W, W_scale, B)      X: float [..., K]   W: int8 [K, N]
//!                                       W_scale: float [N]  B: float [N]   Y: float [..., N]
//! ```
//!
//! Each row of `X` (its last axis) is quantized to u8 with its own scale and zero point; the
//! integer product with `W` is exact (int32); the result is rescaled and the bias added. The
//! function body spells this out in standard operators, so every ONNX runtime (and the ONNX
//! reference evaluator) computes it; kiln's tract engine instead registers the node as a native
//! op backed by `kiln-kernels`, which computes the very same numbers with SIMD int8 arithmetic:
//!
//! ```text
//! lo = Min(ReduceMin(X, -1), 0)       hi = Max(ReduceMax(X, -1), 0)
//! s  = Where((hi − lo) / 255 == 0, 1, (hi − lo) / 255)
//! zp = Clip(Round(−lo / s), 0, 255)
//! q  = Clip(Round(X · (1 / s)) + zp, 0, 255)
//! Y  = Cast<float>(MatMul(Cast<int32>(q − zp), Cast<int32>(W))) · (s · W_scale) + B
//! ```

use crate::attr_int;
use crate::proto::{FunctionProto, NodeProto, OperatorSetIdProto, data_type};

/// The domain of kiln's ops.
pub const DOMAIN: &str = "ai.kiln";
/// The op's name (the function's name).
pub const OP: &str = "Int8Linear";
/// The op followed by `Relu`, as one op: `Relu(Int8Linear(X, W, W_scale, B))`.
pub const OP_RELU: &str = "Int8LinearRelu";
/// The op with a calibrated activation scale and zero point instead of each row's own:
/// `Int8LinearStatic(X, X_scale, X_zero_point, W, W_scale, B)`.
pub const OP_STATIC: &str = "Int8LinearStatic";
/// [`OP_STATIC`] followed by `Relu`.
pub const OP_STATIC_RELU: &str = "Int8LinearStaticRelu";
/// Every kiln int8 op, as `(domain, name)` pairs.
pub const OPS: [(&str, &str); 4] = [
    (DOMAIN, OP),
    (DOMAIN, OP_RELU),
    (DOMAIN, OP_STATIC),
    (DOMAIN, OP_STATIC_RELU),
];

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn with(mut n: NodeProto, attrs: Vec<crate::proto::AttributeProto>) -> NodeProto {
    n.attribute = attrs;
    n
}

/// Whether `node` calls the op (with or without the fused Relu).
pub fn is_int8_linear(node: &NodeProto) -> bool {
    node.domain() == DOMAIN && OPS.iter().any(|(_, op)| node.op_type() == *op)
}

fn f32_const(out: &str, v: f32) -> NodeProto {
    with(
        node("Constant", &[], out),
        vec![crate::attr_float("value_float", v)],
    )
}

fn cast(input: &str, out: &str, to: i32) -> NodeProto {
    with(node("Cast", &[input], out), vec![attr_int("to", to as i64)])
}

/// What every kiln int8 op does once its activation scale `s` and zero point `zp` (float) are
/// known: quantize `X`, multiply exactly in int32, rescale, add `B`, and Relu when asked.
fn quantized_product(s: &str, relu: bool) -> Vec<NodeProto> {
    let mut body = vec![
        node("Div", &["one", s], "inv"),
        node("Mul", &["X", "inv"], "x_scaled"),
        node("Round", &["x_scaled"], "x_round"),
        node("Add", &["x_round", "zp"], "x_shift"),
        node("Clip", &["x_shift", "zero", "c255"], "q"),
        node("Sub", &["q", "zp"], "q_centered"),
        cast("q_centered", "q_i32", data_type::INT32),
        cast("W", "w_i32", data_type::INT32),
        node("MatMul", &["q_i32", "w_i32"], "acc"),
        cast("acc", "acc_f32", data_type::FLOAT),
        node("Mul", &[s, "W_scale"], "out_scale"),
        node("Mul", &["acc_f32", "out_scale"], "scaled"),
        node("Add", &["scaled", "B"], if relu { "linear" } else { "Y" }),
    ];
    if relu {
        body.push(node("Relu", &["linear"], "Y"));
    }
    body
}

fn function_proto(
    name: &str,
    inputs: &[&str],
    body: Vec<NodeProto>,
    doc: String,
    opset: i64,
) -> FunctionProto {
    FunctionProto {
        name: Some(name.into()),
        domain: Some(DOMAIN.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["Y".into()],
        node: body,
        doc_string: Some(doc),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        ..Default::default()
    }
}

fn constants() -> Vec<NodeProto> {
    vec![
        f32_const("zero", 0.0),
        f32_const("one", 1.0),
        f32_const("c255", 255.0),
    ]
}

/// The function of [`OP_STATIC`] (or [`OP_STATIC_RELU`] with `relu`): every row quantized with
/// the calibrated `X_scale` (float scalar) and `X_zero_point` (uint8 scalar):
///
/// ```text
/// q = Clip(Round(X · (1 / X_scale)) + zp, 0, 255)
/// Y = Cast<float>(MatMul(Cast<int32>(q − zp), Cast<int32>(W))) · (X_scale · W_scale) + B
/// ```
pub fn function_static(opset: i64, relu: bool) -> FunctionProto {
    let mut body = constants();
    body.push(cast("X_zero_point", "zp", data_type::FLOAT));
    body.extend(quantized_product("X_scale", relu));
    function_proto(
        if relu { OP_STATIC_RELU } else { OP_STATIC },
        &["X", "X_scale", "X_zero_point", "W", "W_scale", "B"],
        body,
        format!(
            "int8 linear layer{} with a calibrated activation scale and zero point",
            if relu { " followed by Relu" } else { "" }
        ),
        opset,
    )
}

/// The function of [`OP`], written against default-domain `opset` (13 or newer; the reductions
/// take their axes as an input from opset 18).
pub fn function(opset: i64) -> FunctionProto {
    function_with(opset, false)
}

/// The function of [`OP_RELU`]: [`OP`]'s body followed by `Relu`.
pub fn function_relu(opset: i64) -> FunctionProto {
    function_with(opset, true)
}

fn function_with(opset: i64, relu: bool) -> FunctionProto {
    let reduce = |op: &str, out: &str| {
        if opset >= 18 {
            with(node(op, &["X", "axes"], out), vec![attr_int("keepdims", 1)])
        } else {
            with(
                node(op, &["X"], out),
                vec![attr_int("keepdims", 1), crate::attr_ints("axes", &[-1])],
            )
        }
    };
    let mut body = constants();
    if opset >= 18 {
        body.push(with(
            node("Constant", &[], "axes"),
            vec![crate::attr_ints("value_ints", &[-1])],
        ));
    }
    // Each row's own range, widened to hold 0, and from it the row's scale and zero point.
    body.extend([
        reduce("ReduceMin", "row_min"),
        reduce("ReduceMax", "row_max"),
        node("Min", &["row_min", "zero"], "lo"),
        node("Max", &["row_max", "zero"], "hi"),
        node("Sub", &["hi", "lo"], "range"),
        node("Div", &["range", "c255"], "s0"),
        node("Equal", &["s0", "zero"], "flat"),
        node("Where", &["flat", "one", "s0"], "s"),
        node("Neg", &["lo"], "neg_lo"),
        node("Div", &["neg_lo", "s"], "zp_raw"),
        node("Round", &["zp_raw"], "zp_round"),
        node("Clip", &["zp_round", "zero", "c255"], "zp"),
    ]);
    body.extend(quantized_product("s", relu));
    function_proto(
        if relu { OP_RELU } else { OP },
        &["X", "W", "W_scale", "B"],
        body,
        format!(
            "int8 linear layer{}: rows of X quantized to u8 (own scale and zero point), exact int32 product with int8 W, rescaled by s·W_scale, plus B",
            if relu { " followed by Relu" } else { "" }
        ),
        opset,
    )
}
