//! int8 quantization of MatMul/Gemm weights.
//!
//! Dynamic quantization rewrites `Y = A·B (+ C)` with a constant float `B` into the integer-op
//! form ONNX Runtime's own dynamic quantizer produces, which tract also runs:
//!
//! ```text
//! A_q, A_scale, A_zp = DynamicQuantizeLinear(A)
//! Y_int = MatMulInteger(A_q, B_q, A_zp, B_zp)        B_q: uint8 [K, N], B_zp: uint8 [N]
//! Y     = Cast<float>(Y_int) * (A_scale * B_scale)   B_scale: float [N]
//! Y     = Y + C                                      (Gemm bias)
//! ```
//!
//! Weights are quantized per output column, asymmetric, to uint8: with u8 × u8 operands the
//! integer product is exact in every engine (ONNX Runtime's u8 × s8 AVX2 path saturates
//! intermediate sums, which is where its int8 results drift from the reference).

use crate::{OptimizeError, PassReport};
use kiln_onnx::proto::{ModelProto, NodeProto, data_type};
use kiln_onnx::{TensorValue, attr_int, graph, tensor_f32, tensor_u8};

/// Per-column asymmetric uint8 quantization of a `[k, n]` row-major matrix. Returns the
/// quantized values, one scale and one zero point per column. The range always contains 0, so
/// zero is exactly representable.
pub fn quantize_columns_u8(w: &[f32], k: usize, n: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let mut scales = vec![1.0f32; n];
    let mut zps = vec![0u8; n];
    for j in 0..n {
        let (mut lo, mut hi) = (0f32, 0f32);
        for i in 0..k {
            let v = w[i * n + j];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi > lo {
            let s = (hi - lo) / 255.0;
            scales[j] = s;
            zps[j] = (-lo / s).round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
    let q = (0..k * n)
        .map(|idx| {
            let j = idx % n;
            ((w[idx] / scales[j]).round_ties_even() + zps[j] as f32).clamp(0.0, 255.0) as u8
        })
        .collect();
    (q, scales, zps)
}

struct Candidate {
    index: usize,
    a: String,
    weight: Vec<f32>,
    k: usize,
    n: usize,
    bias: Option<String>,
    out: String,
}

fn candidate(
    g: &kiln_onnx::proto::GraphProto,
    index: usize,
    node: &NodeProto,
    inputs: &std::collections::HashSet<String>,
) -> Result<Option<Candidate>, String> {
    if !node.domain().is_empty() {
        return Ok(None);
    }
    let (is_gemm, is_matmul) = (node.op_type() == "Gemm", node.op_type() == "MatMul");
    if !(is_gemm || is_matmul) || node.input.len() < 2 || node.output.len() != 1 {
        return Ok(None);
    }
    let Some(b) = graph::initializer(g, &node.input[1]) else {
        return Ok(None);
    };
    if inputs.contains(b.name()) || b.data_type() != data_type::FLOAT || b.dims.len() != 2 {
        return Ok(None);
    }
    let w = match TensorValue::from_proto(b) {
        Ok(TensorValue::F32(v)) => v,
        _ => return Ok(None),
    };
    let (d0, d1) = (b.dims[0] as usize, b.dims[1] as usize);
    let mut bias = None;
    let (weight, k, n) = if is_gemm {
        if graph::attr_i(node, "transA", 0) != 0 {
            return Err("transA=1 is not supported".into());
        }
        if graph::attr_f(node, "alpha", 1.0) != 1.0
            || (node.input.len() > 2 && graph::attr_f(node, "beta", 1.0) != 1.0)
        {
            return Err("alpha/beta other than 1 are not supported".into());
        }
        if node.input.len() > 2 && !node.input[2].is_empty() {
            bias = Some(node.input[2].clone());
        }
        if graph::attr_i(node, "transB", 0) != 0 {
            // Store B as [K, N] for MatMulInteger.
            let mut t = vec![0f32; w.len()];
            for r in 0..d0 {
                for c in 0..d1 {
                    t[c * d0 + r] = w[r * d1 + c];
                }
            }
            (t, d1, d0)
        } else {
            (w, d0, d1)
        }
    } else {
        (w, d0, d1)
    };
    Ok(Some(Candidate {
        index,
        a: node.input[0].clone(),
        weight,
        k,
        n,
        bias,
        out: node.output[0].clone(),
    }))
}

/// Rewrites every MatMul/Gemm with a constant 2-D float weight into the dynamic int8 form.
/// Nodes that do not qualify are left in float and listed in the report.
pub fn dynamic_int8(model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
    let g = model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass: "quantize-dynamic",
        reason: "the model has no graph".into(),
    })?;
    let inputs: std::collections::HashSet<String> =
        g.input.iter().map(|i| i.name().to_string()).collect();
    let mut details = Vec::new();
    let mut cands = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        match candidate(g, i, n, &inputs) {
            Ok(Some(c)) => cands.push(c),
            Ok(None) => {}
            Err(why) => details.push(format!(
                "kept {} {:?} in float: {why}",
                n.op_type(),
                n.name()
            )),
        }
    }
    let changes = cands.len();
    // Rewrite from the back so earlier indices stay valid.
    for c in cands.into_iter().rev() {
        let base = g.node[c.index].name().to_string();
        let stem = if base.is_empty() {
            format!("q{}", c.index)
        } else {
            base.clone()
        };
        let (q, scales, zps) = quantize_columns_u8(&c.weight, c.k, c.n);
        let wq = format!("{stem}.weight_u8");
        let ws = format!("{stem}.weight_scale");
        let wz = format!("{stem}.weight_zero_point");
        g.initializer.push(tensor_u8(&wq, &[c.k, c.n], &q));
        g.initializer.push(tensor_f32(&ws, &[c.n], &scales));
        g.initializer.push(tensor_u8(&wz, &[c.n], &zps));
        let v = |s: &str| format!("{stem}.{s}");
        // Node names follow their first output, which is unique in the graph.
        let mk = |op: &str,
                  ins: Vec<String>,
                  outs: Vec<String>,
                  attrs: Vec<kiln_onnx::proto::AttributeProto>| NodeProto {
            name: Some(format!(
                "{op}/{}",
                outs.first().map(String::as_str).unwrap_or("")
            )),
            input: ins,
            output: outs,
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        };
        let final_out = if c.bias.is_some() {
            v("scaled")
        } else {
            c.out.clone()
        };
        let mut nodes = vec![
            mk(
                "DynamicQuantizeLinear",
                vec![c.a.clone()],
                vec![v("a_u8"), v("a_scale"), v("a_zero_point")],
                vec![],
            ),
            mk(
                "MatMulInteger",
                vec![v("a_u8"), wq, v("a_zero_point"), wz],
                vec![v("y_i32")],
                vec![],
            ),
            mk(
                "Cast",
                vec![v("y_i32")],
                vec![v("y_f32")],
                vec![attr_int("to", data_type::FLOAT as i64)],
            ),
            mk("Mul", vec![v("a_scale"), ws], vec![v("scale")], vec![]),
            mk(
                "Mul",
                vec![v("y_f32"), v("scale")],
                vec![final_out.clone()],
                vec![],
            ),
        ];
        if let Some(bias) = &c.bias {
            nodes.push(mk(
                "Add",
                vec![final_out, bias.clone()],
                vec![c.out.clone()],
                vec![],
            ));
        }
        g.node.splice(c.index..=c.index, nodes);
        details.push(format!(
            "quantized {base:?} ([{}, {}] weights, per-column uint8)",
            c.k, c.n
        ));
    }
    // The float weights that were replaced are now unused.
    graph::eliminate_dead(g);
    Ok(PassReport {
        pass: "quantize-dynamic",
        changes,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Dequantized weights are within half a step of the originals, per column.
        #[test]
        fn dequantization_error_is_bounded_by_half_a_step(
            w in proptest::collection::vec(-10f32..10.0, 12),
        ) {
            let (k, n) = (4, 3);
            let (q, s, z) = quantize_columns_u8(&w, k, n);
            for i in 0..k {
                for j in 0..n {
                    let deq = (q[i * n + j] as f32 - z[j] as f32) * s[j];
                    prop_assert!((deq - w[i * n + j]).abs() <= s[j] / 2.0 + 1e-5, "w={} deq={} scale={}", w[i * n + j], deq, s[j]);
                }
            }
        }
    }

    #[test]
    fn zero_is_exact_and_constant_columns_are_safe() {
        let w = [0.0, 1.0, 0.0, -1.0];
        let (q, s, z) = quantize_columns_u8(&w, 2, 2);
        assert_eq!((q[0] as f32 - z[0] as f32) * s[0], 0.0);
        assert!(s.iter().all(|v| v.is_finite() && *v > 0.0));
    }
}
