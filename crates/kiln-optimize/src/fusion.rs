//! Extended graph passes: MatMul+Add → Gemm, transpose folding into Gemm, common-subexpression
//! elimination, and batch-norm folding into Gemm. Each rewrites only what it can prove
//! equivalent (constant weights, known ranks, single consumers) and leaves everything else.

use crate::OptimizeError;
use crate::passes::{Pass, PassReport};
use kiln_onnx::proto::{GraphProto, ModelProto, NodeProto, data_type, type_proto};
use kiln_onnx::{TensorValue, attr_int, graph, tensor_f32};
use std::collections::HashMap;

fn graph_mut<'a>(
    model: &'a mut ModelProto,
    pass: &'static str,
) -> Result<&'a mut GraphProto, OptimizeError> {
    model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass,
        reason: "the model has no graph".into(),
    })
}

/// Ranks of the values whose rank can be known: declared (inputs, value_info, outputs),
/// initializers, and what flows through rank-preserving ops.
pub(crate) fn ranks(g: &GraphProto) -> HashMap<String, usize> {
    let mut r: HashMap<String, usize> = HashMap::new();
    for v in g.input.iter().chain(&g.value_info).chain(&g.output) {
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
            && let Some(s) = &t.shape
        {
            r.insert(v.name().to_string(), s.dim.len());
        }
    }
    for t in &g.initializer {
        r.insert(t.name().to_string(), t.dims.len());
    }
    for n in &g.node {
        let ins: Vec<Option<usize>> = n.input.iter().map(|i| r.get(i).copied()).collect();
        let out = match n.op_type() {
            "Relu" | "Sigmoid" | "Tanh" | "Identity" | "Dropout" | "Softmax" | "Cast" | "Neg"
            | "Exp" | "Log" | "Sqrt" | "Abs" | "Erf" | "LeakyRelu" | "Clip"
            | "BatchNormalization" => ins.first().copied().flatten(),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" => ins
                .iter()
                .copied()
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max()),
            "MatMul" if ins.len() == 2 && ins[0] == Some(2) && ins[1] == Some(2) => Some(2),
            "Gemm" => Some(2),
            _ => None,
        };
        if let (Some(rank), Some(o)) = (out, n.output.first()) {
            r.entry(o.clone()).or_insert(rank);
        }
    }
    r
}

fn producer_index(g: &GraphProto, value: &str) -> Option<usize> {
    g.node
        .iter()
        .position(|n| n.output.iter().any(|o| o == value))
}

/// MatMul(A, B) + C → Gemm(A, B, C) when A and B are 2-D, B is a constant and C is a constant
/// that broadcasts over rows ([N] or [1, N]), and the MatMul result has no other reader.
#[derive(Debug, Clone, Copy)]
pub struct MatMulAddToGemm;

impl Pass for MatMulAddToGemm {
    fn name(&self) -> &'static str {
        "matmul-add-to-gemm"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let mut details = Vec::new();
        loop {
            let r = ranks(g);
            let consumers = graph::consumers(g);
            let outputs = graph::output_names(g);
            let found = g.node.iter().enumerate().find_map(|(ai, add)| {
                if add.op_type() != "Add" || !add.domain().is_empty() || add.input.len() != 2 {
                    return None;
                }
                (0..2).find_map(|k| {
                    let (mm_out, c) = (&add.input[k], &add.input[1 - k]);
                    let mi = producer_index(g, mm_out)?;
                    let mm = &g.node[mi];
                    let ok = mm.op_type() == "MatMul"
                        && mm.domain().is_empty()
                        && r.get(&mm.input[0]) == Some(&2)
                        && graph::initializer(g, &mm.input[1]).is_some_and(|t| {
                            t.dims.len() == 2 && t.data_type() == data_type::FLOAT
                        })
                        && consumers.get(mm_out).is_some_and(|u| u.len() == 1)
                        && !outputs.contains(mm_out);
                    if !ok {
                        return None;
                    }
                    let n = *graph::initializer(g, &mm.input[1])?.dims.get(1)?;
                    let c_ok = graph::initializer(g, c).is_some_and(|t| {
                        t.data_type() == data_type::FLOAT && (t.dims == [n] || t.dims == [1, n])
                    });
                    c_ok.then(|| (ai, mi, c.clone()))
                })
            });
            let Some((ai, mi, c)) = found else { break };
            let mm = g.node[mi].clone();
            let add = g.node[ai].clone();
            g.node[ai] = NodeProto {
                name: Some(format!(
                    "Gemm/{}",
                    add.output.first().map(String::as_str).unwrap_or_default()
                )),
                op_type: Some("Gemm".into()),
                input: vec![mm.input[0].clone(), mm.input[1].clone(), c],
                output: add.output.clone(),
                ..Default::default()
            };
            g.node.remove(mi);
            details.push(format!(
                "fused MatMul {:?} and Add {:?} into Gemm",
                mm.name(),
                add.name()
            ));
        }
        Ok(PassReport {
            pass: self.name(),
            changes: details.len(),
            details,
        })
    }
}

/// Transpose(perm=[1,0]) feeding a Gemm input (and read by nothing else) becomes the Gemm's
/// transA/transB flag.
#[derive(Debug, Clone, Copy)]
pub struct FoldTransposeIntoGemm;

impl Pass for FoldTransposeIntoGemm {
    fn name(&self) -> &'static str {
        "fold-transpose-into-gemm"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let mut details = Vec::new();
        loop {
            let consumers = graph::consumers(g);
            let outputs = graph::output_names(g);
            let found = g.node.iter().enumerate().find_map(|(gi, gemm)| {
                if gemm.op_type() != "Gemm" || !gemm.domain().is_empty() {
                    return None;
                }
                (0..2).find_map(|k| {
                    let v = gemm.input.get(k)?;
                    let ti = producer_index(g, v)?;
                    let t = &g.node[ti];
                    let perm = graph::attr(t, "perm").map(|a| a.ints.clone());
                    let is_2d_swap = t.op_type() == "Transpose"
                        && t.domain().is_empty()
                        && perm.as_deref() == Some(&[1, 0][..]);
                    (is_2d_swap
                        && consumers.get(v).is_some_and(|u| u.len() == 1)
                        && !outputs.contains(v))
                    .then(|| (gi, ti, k, t.input[0].clone()))
                })
            });
            let Some((gi, ti, k, src)) = found else { break };
            let flag = if k == 0 { "transA" } else { "transB" };
            let gemm = &mut g.node[gi];
            gemm.input[k] = src;
            let cur = graph::attr_i(gemm, flag, 0);
            gemm.attribute.retain(|a| a.name() != flag);
            gemm.attribute.push(attr_int(flag, 1 - cur));
            let t = g.node.remove(ti);
            details.push(format!("folded Transpose {:?} into Gemm {flag}", t.name()));
        }
        Ok(PassReport {
            pass: self.name(),
            changes: details.len(),
            details,
        })
    }
}

/// Merges nodes that compute the same thing: same operator, inputs and attributes. Operators
/// with randomness or side effects are never merged.
#[derive(Debug, Clone, Copy)]
pub struct EliminateCommonSubexpressions;

impl Pass for EliminateCommonSubexpressions {
    fn name(&self) -> &'static str {
        "eliminate-common-subexpressions"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        use prost::Message;
        let g = graph_mut(model, self.name())?;
        let outputs = graph::output_names(g);
        let mut seen: HashMap<Vec<u8>, Vec<String>> = HashMap::new();
        let mut details = Vec::new();
        let mut i = 0;
        while i < g.node.len() {
            let n = &g.node[i];
            let random = n.op_type().starts_with("Random")
                || n.op_type() == "Multinomial"
                || n.op_type() == "Bernoulli"
                || n.op_type() == "Dropout";
            let has_subgraph = n
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty());
            if random || has_subgraph || n.output.iter().any(|o| outputs.contains(o)) {
                i += 1;
                continue;
            }
            // The signature is everything but the node's name and outputs.
            let mut sig_node = n.clone();
            sig_node.name = None;
            sig_node.output.clear();
            sig_node.doc_string = None;
            let sig = sig_node.encode_to_vec();
            match seen.get(&sig) {
                Some(prev) if prev.len() == n.output.len() => {
                    let (prev, cur) = (prev.clone(), n.output.clone());
                    let name = n.name().to_string();
                    for (p, c) in prev.iter().zip(&cur) {
                        graph::rename_uses(g, c, p);
                    }
                    g.node.remove(i);
                    details.push(format!("merged {name:?} into an identical earlier node"));
                }
                _ => {
                    seen.insert(sig, n.output.clone());
                    i += 1;
                }
            }
        }
        Ok(PassReport {
            pass: self.name(),
            changes: details.len(),
            details,
        })
    }
}

/// Gemm(A, W, C) → BatchNormalization(·, scale, bias, mean, var) with constant parameters
/// becomes one Gemm with rescaled weights and bias.
#[derive(Debug, Clone, Copy)]
pub struct FoldBatchNormIntoGemm;

impl Pass for FoldBatchNormIntoGemm {
    fn name(&self) -> &'static str {
        "fold-batchnorm-into-gemm"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let mut details = Vec::new();
        loop {
            let consumers = graph::consumers(g);
            let outputs = graph::output_names(g);
            let f32s = |name: &str| {
                graph::initializer(g, name)
                    .and_then(|t| TensorValue::from_proto(t).ok())
                    .and_then(|v| v.as_f32().map(<[f32]>::to_vec))
            };
            let found = g.node.iter().enumerate().find_map(|(bi, bn)| {
                if bn.op_type() != "BatchNormalization"
                    || !bn.domain().is_empty()
                    || bn.input.len() != 5
                    || bn.output.len() != 1
                {
                    return None;
                }
                let gi = producer_index(g, &bn.input[0])?;
                let gemm = &g.node[gi];
                let single = consumers.get(&bn.input[0]).is_some_and(|u| u.len() == 1)
                    && !outputs.contains(&bn.input[0]);
                let plain = gemm.op_type() == "Gemm"
                    && graph::attr_i(gemm, "transA", 0) == 0
                    && graph::attr_f(gemm, "alpha", 1.0) == 1.0
                    && graph::attr_f(gemm, "beta", 1.0) == 1.0;
                let w = graph::initializer(g, gemm.input.get(1)?)?;
                let params: Option<Vec<Vec<f32>>> = bn.input[1..].iter().map(|p| f32s(p)).collect();
                (single && plain && w.dims.len() == 2).then_some((bi, gi, params?))
            });
            let Some((bi, gi, params)) = found else { break };
            let (scale, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
            let bn = g.node[bi].clone();
            let eps = graph::attr_f(&bn, "epsilon", 1e-5);
            let gemm = g.node[gi].clone();
            let trans_b = graph::attr_i(&gemm, "transB", 0) != 0;
            let w_name = gemm.input[1].clone();
            let Some(w_t) = graph::initializer(g, &w_name) else {
                break;
            };
            let dims: Vec<usize> = w_t.dims.iter().map(|&d| d as usize).collect();
            let Some(w) = f32s(&w_name) else { break };
            let n = if trans_b { dims[0] } else { dims[1] };
            if [scale, beta, mean, var].iter().any(|v| v.len() != n) {
                break;
            }
            let s: Vec<f32> = (0..n).map(|j| scale[j] / (var[j] + eps).sqrt()).collect();
            let mut w2 = w.clone();
            for (idx, v) in w2.iter_mut().enumerate() {
                let j = if trans_b {
                    idx / dims[1]
                } else {
                    idx % dims[1]
                };
                *v *= s[j];
            }
            let c = gemm
                .input
                .get(2)
                .filter(|c| !c.is_empty())
                .and_then(|c| f32s(c))
                .unwrap_or_else(|| vec![0.0; n]);
            let c = if c.len() == 1 { vec![c[0]; n] } else { c };
            if c.len() != n {
                break;
            }
            let c2: Vec<f32> = (0..n).map(|j| (c[j] - mean[j]) * s[j] + beta[j]).collect();
            let stem = if gemm.name().is_empty() {
                format!("gemm{gi}")
            } else {
                gemm.name().to_string()
            };
            let (wn, cn) = (
                format!("{stem}.bn_folded_weight"),
                format!("{stem}.bn_folded_bias"),
            );
            g.initializer.push(tensor_f32(&wn, &dims, &w2));
            g.initializer.push(tensor_f32(&cn, &[n], &c2));
            let gm = &mut g.node[gi];
            gm.input = vec![gm.input[0].clone(), wn, cn];
            gm.output = bn.output.clone();
            g.node.remove(bi);
            details.push(format!(
                "folded BatchNormalization {:?} into Gemm {:?}",
                bn.name(),
                gemm.name()
            ));
        }
        graph::eliminate_dead(g);
        Ok(PassReport {
            pass: self.name(),
            changes: details.len(),
            details,
        })
    }
}

/// How far (in units of the folded scale) a folded offset may move the inputs: folding
/// `(x − m) / s · W` into `x · (W / s) − (m / s) · W` trades a product of centred values for a
/// product of uncentred ones whose sum then cancels, so the rounding error grows with `|m / s|`.
/// Up to 64 keeps it within about 64 float ulps of the result's largest term, which the
/// optimize run's own output comparison then measures.
pub const MAX_FOLDED_OFFSET: f64 = 64.0;

/// A chain of per-feature affine operations by constants (`Sub`, `Add`, `Mul`, `Div`; the
/// input normalization every exported tabular model starts with) folded into the `Gemm` that
/// reads it: `(x · a + b) · W + c = x · (diag(a) W) + (b W + c)`. Applies when the chain's
/// input is 2-D, every constant broadcasts along the features only (a scalar, `[K]` or
/// `[1, K]`), each intermediate value has no other reader, the `Gemm` has constant weights,
/// `transA = 0` and `alpha = beta = 1`, and every folded offset stays within
/// [`MAX_FOLDED_OFFSET`]. Removes one elementwise operator per constant, which for small
/// models is most of the run time in engines with per-operator overhead.
#[derive(Debug, Clone, Copy)]
pub struct FoldAffineIntoGemm;

/// One link of an affine chain: the node, and whether it scales (`Mul`/`Div`) or shifts.
struct AffineLink {
    node: usize,
    constant: Vec<f32>,
    op: String,
}

impl FoldAffineIntoGemm {
    /// The affine chain feeding `value`, innermost last, and the chain's input.
    fn chain(
        g: &GraphProto,
        value: &str,
        consumers: &HashMap<String, Vec<usize>>,
        outputs: &std::collections::HashSet<String>,
        k: usize,
    ) -> (Vec<AffineLink>, String) {
        let mut links = Vec::new();
        let mut current = value.to_string();
        while let Some(i) = producer_index(g, &current) {
            let n = &g.node[i];
            let single = consumers.get(&current).is_some_and(|u| u.len() == 1)
                && !outputs.contains(&current);
            if !single
                || !n.domain().is_empty()
                || n.input.len() != 2
                || !matches!(n.op_type(), "Sub" | "Add" | "Mul" | "Div")
            {
                break;
            }
            // The constant: the second operand, or the first for the commutative ops.
            let as_const = |name: &str| {
                graph::initializer(g, name).and_then(|t| {
                    let ok = t.dims.len() <= 2
                        && t.dims.iter().rev().skip(1).all(|&d| d == 1)
                        && t.dims.last().is_none_or(|&d| d == 1 || d as usize == k);
                    ok.then(|| TensorValue::from_proto(t).ok())
                        .flatten()
                        .and_then(|v| v.as_f32().map(<[f32]>::to_vec))
                })
            };
            let commutative = matches!(n.op_type(), "Add" | "Mul");
            let (constant, data) = match (as_const(&n.input[1]), as_const(&n.input[0])) {
                (Some(c), _) if graph::initializer(g, &n.input[0]).is_none() => {
                    (c, n.input[0].clone())
                }
                (_, Some(c)) if commutative && graph::initializer(g, &n.input[1]).is_none() => {
                    (c, n.input[1].clone())
                }
                _ => break,
            };
            let constant = if constant.len() == 1 {
                vec![constant[0]; k]
            } else {
                constant
            };
            links.push(AffineLink {
                node: i,
                constant,
                op: n.op_type().to_string(),
            });
            current = data;
        }
        (links, current)
    }
}

impl Pass for FoldAffineIntoGemm {
    fn name(&self) -> &'static str {
        "fold-affine-into-gemm"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let mut details = Vec::new();
        let mut refused = std::collections::HashSet::new();
        loop {
            let consumers = graph::consumers(g);
            let outputs = graph::output_names(g);
            let rank = ranks(g);
            let f32s = |name: &str| {
                graph::initializer(g, name)
                    .and_then(|t| TensorValue::from_proto(t).ok())
                    .and_then(|v| v.as_f32().map(<[f32]>::to_vec))
            };
            let found = g.node.iter().enumerate().find_map(|(gi, gemm)| {
                let plain = gemm.op_type() == "Gemm"
                    && gemm.domain().is_empty()
                    && graph::attr_i(gemm, "transA", 0) == 0
                    && graph::attr_f(gemm, "alpha", 1.0) == 1.0
                    && graph::attr_f(gemm, "beta", 1.0) == 1.0
                    && !gemm.output.first().is_some_and(|o| refused.contains(o));
                let w = graph::initializer(g, gemm.input.get(1)?)?;
                if !plain || w.dims.len() != 2 {
                    return None;
                }
                let trans_b = graph::attr_i(gemm, "transB", 0) != 0;
                let k = if trans_b { w.dims[1] } else { w.dims[0] } as usize;
                let (links, input) = Self::chain(g, &gemm.input[0], &consumers, &outputs, k);
                (!links.is_empty() && rank.get(&input) == Some(&2)).then_some((gi, links, input, k))
            });
            let Some((gi, links, input, k)) = found else {
                break;
            };
            // Compose the chain, innermost first: x ↦ x · a + b.
            let (mut a, mut b) = (vec![1f64; k], vec![0f64; k]);
            for link in links.iter().rev() {
                for i in 0..k {
                    let c = f64::from(link.constant[i]);
                    match link.op.as_str() {
                        "Sub" => b[i] -= c,
                        "Add" => b[i] += c,
                        "Mul" => (a[i], b[i]) = (a[i] * c, b[i] * c),
                        _ => (a[i], b[i]) = (a[i] / c, b[i] / c),
                    }
                }
            }
            let gemm = g.node[gi].clone();
            let trans_b = graph::attr_i(&gemm, "transB", 0) != 0;
            let w_name = gemm.input[1].clone();
            let (Some(w_t), Some(w)) = (graph::initializer(g, &w_name), f32s(&w_name)) else {
                break;
            };
            let dims: Vec<usize> = w_t.dims.iter().map(|&d| d as usize).collect();
            let n = if trans_b { dims[0] } else { dims[1] };
            let c = gemm
                .input
                .get(2)
                .filter(|c| !c.is_empty())
                .map(|c| f32s(c).ok_or(()))
                .transpose();
            let c = match c {
                Ok(Some(c)) if c.len() == 1 => vec![c[0]; n],
                Ok(Some(c)) if c.len() == n => c,
                Ok(None) => vec![0.0; n],
                _ => {
                    refused.insert(gemm.output.first().cloned().unwrap_or_default());
                    continue;
                }
            };
            let finite = a.iter().chain(&b).all(|v| v.is_finite());
            if !finite || b.iter().any(|v| v.abs() > MAX_FOLDED_OFFSET) {
                details.push(format!(
                    "left the affine chain before Gemm {:?}: its offsets reach {:.1} scale units (folding is limited to {MAX_FOLDED_OFFSET} to keep float rounding small)",
                    gemm.name(),
                    b.iter().fold(0f64, |m, v| m.max(v.abs()))
                ));
                refused.insert(gemm.output.first().cloned().unwrap_or_default());
                continue;
            }
            let at = |i: usize, j: usize| if trans_b { j * k + i } else { i * n + j };
            let mut w2 = w.clone();
            let mut c2: Vec<f64> = c.iter().map(|&v| f64::from(v)).collect();
            for i in 0..k {
                for (j, cj) in c2.iter_mut().enumerate() {
                    let wij = f64::from(w[at(i, j)]);
                    w2[at(i, j)] = (wij * a[i]) as f32;
                    *cj += b[i] * wij;
                }
            }
            let c2: Vec<f32> = c2.into_iter().map(|v| v as f32).collect();
            let stem = if gemm.name().is_empty() {
                format!("gemm{gi}")
            } else {
                gemm.name().to_string()
            };
            let (wn, cn) = (
                format!("{stem}.affine_folded_weight"),
                format!("{stem}.affine_folded_bias"),
            );
            g.initializer.push(tensor_f32(&wn, &dims, &w2));
            g.initializer.push(tensor_f32(&cn, &[n], &c2));
            let ops: Vec<String> = links
                .iter()
                .rev()
                .map(|l| format!("{} {:?}", l.op, g.node[l.node].name()))
                .collect();
            let gm = &mut g.node[gi];
            gm.input = vec![input, wn, cn];
            // The chain's nodes now have no reader; dead-code elimination removes them.
            let mut gone: Vec<usize> = links.iter().map(|l| l.node).collect();
            gone.sort_unstable_by(|x, y| y.cmp(x));
            for i in gone {
                g.node.remove(i);
            }
            details.push(format!(
                "folded {} into Gemm {:?}",
                ops.join(", "),
                gemm.name()
            ));
        }
        graph::eliminate_dead(g);
        Ok(PassReport {
            pass: self.name(),
            changes: details.iter().filter(|d| d.starts_with("folded")).count(),
            details,
        })
    }
}
