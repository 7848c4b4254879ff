//! Rewrites that make tract compute a model's exact ONNX semantics where its own graph
//! simplification does not.
//!
//! Found by the engine conformance suite: tract 0.23.9 fuses `Softmax → QuantizeLinear →
//! DequantizeLinear` (the output fake-quantization that ONNX Runtime's static quantizer emits)
//! into a quantized softmax that returns 1.0 for every class; without its declutter pass it is
//! exact. kiln replaces that QDQ pair by the same arithmetic in float ops
//! (`Clip(Round(x / s) + zp, lo, hi) - zp) * s`, with ONNX's round-half-to-even), which tract
//! does not fuse, so the result matches ONNX Runtime and the reference evaluator.

use kiln_onnx::proto::{ModelProto, NodeProto, data_type};
use kiln_onnx::{attr_int, graph, tensor_f32};

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<kiln_onnx::proto::AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: Some(format!("kiln_compat/{op}/{output}")),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute: attrs,
        ..Default::default()
    }
}

/// Applies the tract compatibility rewrites; returns how many patterns were rewritten.
pub fn tract_compat(model: &mut ModelProto) -> usize {
    let Some(g) = model.graph.as_mut() else {
        return 0;
    };
    let mut rewritten = 0;
    loop {
        let producers: std::collections::HashMap<&str, usize> = g
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let consumers = graph::consumers(g);
        let outputs = graph::output_names(g);
        let found = g.node.iter().enumerate().find_map(|(qi, q)| {
            if q.op_type() != "QuantizeLinear"
                || !q.domain().is_empty()
                || q.input.len() < 2
                || graph::attr(q, "axis").is_some()
            {
                return None;
            }
            let src = producers.get(q.input[0].as_str())?;
            if g.node[*src].op_type() != "Softmax" || outputs.contains(&q.output[0]) {
                return None;
            }
            let users = consumers.get(&q.output[0])?;
            let [di] = users.as_slice() else { return None };
            let d = &g.node[*di];
            (d.op_type() == "DequantizeLinear"
                && d.input.get(1) == q.input.get(1)
                && d.input.get(2) == q.input.get(2))
            .then_some((qi, *di))
        });
        let Some((qi, di)) = found else { break };
        let (q, d) = (g.node[qi].clone(), g.node[di].clone());
        let zp_type = q
            .input
            .get(2)
            .and_then(|z| graph::initializer(g, z))
            .map(|t| t.data_type())
            .unwrap_or(data_type::UINT8);
        let (lo, hi) = if zp_type == data_type::INT8 {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        let stem = d.output[0].clone();
        let v = |s: &str| format!("{stem}/kiln_qdq/{s}");
        let (lo_n, hi_n) = (v("lo"), v("hi"));
        g.initializer.push(tensor_f32(&lo_n, &[], &[lo]));
        g.initializer.push(tensor_f32(&hi_n, &[], &[hi]));
        let mut nodes = Vec::new();
        let zp = match q.input.get(2).filter(|z| !z.is_empty()) {
            Some(z) => {
                nodes.push(node(
                    "Cast",
                    &[z],
                    &v("zp"),
                    vec![attr_int("to", data_type::FLOAT as i64)],
                ));
                v("zp")
            }
            None => {
                g.initializer.push(tensor_f32(&v("zp"), &[], &[0.0]));
                v("zp")
            }
        };
        nodes.push(node(
            "Div",
            &[&q.input[0], &q.input[1]],
            &v("scaled"),
            vec![],
        ));
        nodes.push(node("Round", &[&v("scaled")], &v("rounded"), vec![]));
        nodes.push(node("Add", &[&v("rounded"), &zp], &v("shifted"), vec![]));
        nodes.push(node(
            "Clip",
            &[&v("shifted"), &lo_n, &hi_n],
            &v("clipped"),
            vec![],
        ));
        nodes.push(node("Sub", &[&v("clipped"), &zp], &v("centred"), vec![]));
        nodes.push(node("Mul", &[&v("centred"), &q.input[1]], &stem, vec![]));
        // Replace the pair: drop the DequantizeLinear, put the float ops where the
        // QuantizeLinear was (its inputs are all available there).
        g.node.remove(di);
        let qi = if di < qi { qi - 1 } else { qi };
        g.node.splice(qi..=qi, nodes);
        rewritten += 1;
    }
    rewritten + dynamic_dequantize(g)
}

/// tract only loads `DequantizeLinear` with constant scales; the QDQ form of dynamic
/// quantization feeds it `DynamicQuantizeLinear`'s run-time scale. Such per-tensor
/// dequantizations become `(Cast<float>(x) − Cast<float>(zp)) · scale`: the same arithmetic,
/// exact (the difference of two 8-bit integers is exact in f32).
fn dynamic_dequantize(g: &mut kiln_onnx::proto::GraphProto) -> usize {
    let constant = |g: &kiln_onnx::proto::GraphProto, name: &str| {
        graph::initializer(g, name).is_some()
            || g.node
                .iter()
                .any(|n| n.op_type() == "Constant" && n.output.iter().any(|o| o == name))
    };
    let targets: Vec<usize> = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.op_type() == "DequantizeLinear"
                && n.domain().is_empty()
                && n.input.len() >= 2
                && graph::attr(n, "axis").is_none()
                && !constant(g, &n.input[1])
        })
        .map(|(i, _)| i)
        .collect();
    for &i in targets.iter().rev() {
        let d = g.node[i].clone();
        let stem = d.output[0].clone();
        let v = |s: &str| format!("{stem}/kiln_dq/{s}");
        let to_float = vec![attr_int("to", data_type::FLOAT as i64)];
        let mut nodes = vec![node("Cast", &[&d.input[0]], &v("x"), to_float.clone())];
        let centred = match d.input.get(2).filter(|z| !z.is_empty()) {
            Some(z) => {
                nodes.push(node("Cast", &[z], &v("zp"), to_float));
                nodes.push(node("Sub", &[&v("x"), &v("zp")], &v("centred"), vec![]));
                v("centred")
            }
            None => v("x"),
        };
        nodes.push(node("Mul", &[&centred, &d.input[1]], &stem, vec![]));
        g.node.splice(i..=i, nodes);
    }
    targets.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::{InferenceEngine, Tensor};
    use kiln_onnx::proto::data_type::FLOAT;
    use kiln_onnx::{Dim, GraphBuilder, tensor_u8};

    /// Softmax → QuantizeLinear(1/255, 0) → DequantizeLinear, as ONNX Runtime's static quantizer
    /// writes it: tract must return the quantized probabilities, not 1.0 everywhere.
    #[test]
    fn softmax_output_qdq_keeps_its_meaning_in_tract() {
        let mut g = GraphBuilder::new("qdq_softmax");
        g.input("x", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(3)]);
        let s = g.constant_f32("s", &[], &[1.0 / 255.0]);
        let z = g.initializer(tensor_u8("z", &[], &[0]));
        let p = g.node("Softmax", &["x"], &[attr_int("axis", 1)]);
        let q = g.node("QuantizeLinear", &[&p, &s, &z], &[]);
        g.node_named("DequantizeLinear", &[&q, &s, &z], &["probs"], &[]);
        g.output("probs", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(3)]);
        let mut m = g.into_model(17);
        let bytes = kiln_onnx::encode(&m);
        assert_eq!(tract_compat(&mut m), 1);
        let engine =
            crate::TractEngine::from_bytes(&bytes, std::path::Path::new("<test>")).expect("load");
        let x = [1.0f32, 0.5, -2.0];
        let out = engine
            .run(vec![Tensor::F32 {
                shape: vec![1, 3],
                data: x.to_vec(),
            }])
            .expect("run");
        let Tensor::F32 { data, .. } = &out[0] else {
            panic!("float output")
        };
        let e: Vec<f32> = x.iter().map(|v| v.exp()).collect();
        let sum: f32 = e.iter().sum();
        for (got, ei) in data.iter().zip(&e) {
            let want = ((ei / sum) * 255.0).round_ties_even().clamp(0.0, 255.0) / 255.0;
            assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
        }
    }
}
