//! kiln's ONNX local functions: layers with no single ONNX operator, exported as
//! `ModelProto.functions` in the `ai.kiln` domain with bodies made of standard operators. ONNX
//! Runtime runs them as functions; kiln's tract engine inlines them on load (tract does not run
//! local functions), and `kiln export --inline-functions` writes them inlined.

use kiln_core::Activation;
use kiln_onnx::attr_float;
use kiln_onnx::proto::{AttributeProto, FunctionProto, NodeProto, OperatorSetIdProto};

/// The domain of kiln's functions.
pub const DOMAIN: &str = "ai.kiln";

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn constant(output: &str, value: f32) -> NodeProto {
    node(
        "Constant",
        &[],
        output,
        vec![attr_float("value_float", value)],
    )
}

/// The function of an activation that has no single ONNX op (SiLU, GELU), for `opset`.
pub fn activation(a: Activation, opset: i64) -> FunctionProto {
    let (name, body, doc) = match a {
        Activation::Gelu => (
            "GELU",
            vec![
                constant("sqrt2", std::f32::consts::SQRT_2),
                node("Div", &["X", "sqrt2"], "scaled", vec![]),
                node("Erf", &["scaled"], "erf", vec![]),
                constant("one", 1.0),
                node("Add", &["erf", "one"], "cdf2", vec![]),
                node("Mul", &["X", "cdf2"], "x_cdf2", vec![]),
                constant("half", 0.5),
                node("Mul", &["x_cdf2", "half"], "Y", vec![]),
            ],
            "GELU(x) = x * (1 + erf(x / sqrt(2))) / 2, as burn's gelu",
        ),
        // SiLU; the other activations have their own ONNX ops and never reach here.
        _ => (
            "SiLU",
            vec![
                node("Sigmoid", &["X"], "sig", vec![]),
                node("Mul", &["X", "sig"], "Y", vec![]),
            ],
            "SiLU(x) = x * sigmoid(x), as burn's silu",
        ),
    };
    FunctionProto {
        name: Some(name.into()),
        domain: Some(DOMAIN.into()),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        node: body,
        doc_string: Some(doc.into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        ..Default::default()
    }
}
