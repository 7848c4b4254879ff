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
use kiln_onnx::{TensorValue, attr_int, graph, tensor_f32, tensor_i8, tensor_u8};

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

/// The layers a quantizer rewrites, in graph order, and a line for every one it leaves in
/// float: kept by the accuracy budget (`keep_float`), refused by `skip` (which says why), or not
/// expressible (`candidate`'s reason).
fn scan(
    g: &kiln_onnx::proto::GraphProto,
    keep_float: &std::collections::HashSet<String>,
    skip: impl Fn(&Candidate) -> Option<String>,
) -> (Vec<Candidate>, Vec<String>) {
    let inputs: std::collections::HashSet<String> =
        g.input.iter().map(|i| i.name().to_string()).collect();
    let mut details = Vec::new();
    let mut cands = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        match candidate(g, i, n, &inputs) {
            Ok(Some(c)) if keep_float.contains(&c.out) => {
                details.push(format!("kept {:?} in float (accuracy budget)", c.out))
            }
            Ok(Some(c)) => match skip(&c) {
                Some(why) => details.push(format!("kept {:?} in float: {why}", c.out)),
                None => cands.push(c),
            },
            Ok(None) => {}
            Err(why) => details.push(format!(
                "kept {} {:?} in float: {why}",
                n.op_type(),
                n.name()
            )),
        }
    }
    (cands, details)
}

/// The layers quantization would rewrite, named by their output value (which is unique).
pub fn quantizable_layers(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .map(|g| static_targets(g).into_iter().map(|(_, c)| c.out).collect())
        .unwrap_or_default()
}

/// Rewrites every MatMul/Gemm with a constant 2-D float weight into the dynamic int8 form.
/// Nodes that do not qualify are left in float and listed in the report.
pub fn dynamic_int8(model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
    dynamic_int8_except(model, &Default::default())
}

/// [`dynamic_int8`], leaving the layers whose output is in `keep_float` in float.
pub fn dynamic_int8_except(
    model: &mut ModelProto,
    keep_float: &std::collections::HashSet<String>,
) -> Result<PassReport, OptimizeError> {
    dynamic_int8_with(model, keep_float, true)
}

/// [`dynamic_int8_except`] with per-column (`per_channel`) or per-tensor weights (one scale
/// and zero point for the whole matrix, stored as scalars).
pub fn dynamic_int8_with(
    model: &mut ModelProto,
    keep_float: &std::collections::HashSet<String>,
    per_channel: bool,
) -> Result<PassReport, OptimizeError> {
    let g = model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass: "quantize-dynamic",
        reason: "the model has no graph".into(),
    })?;
    let (cands, mut details) = scan(g, keep_float, |_| None);
    let changes = cands.len();
    // Rewrite from the back so earlier indices stay valid.
    for c in cands.into_iter().rev() {
        let base = g.node[c.index].name().to_string();
        let stem = if base.is_empty() {
            format!("q{}", c.index)
        } else {
            base.clone()
        };
        let wq = format!("{stem}.weight_u8");
        let ws = format!("{stem}.weight_scale");
        let wz = format!("{stem}.weight_zero_point");
        if per_channel {
            let (q, scales, zps) = quantize_columns_u8(&c.weight, c.k, c.n);
            g.initializer.push(tensor_u8(&wq, &[c.k, c.n], &q));
            g.initializer.push(tensor_f32(&ws, &[c.n], &scales));
            g.initializer.push(tensor_u8(&wz, &[c.n], &zps));
        } else {
            // One column of k·n values is the per-tensor quantization of the whole matrix.
            let (q, scales, zps) = quantize_columns_u8(&c.weight, c.k * c.n, 1);
            g.initializer.push(tensor_u8(&wq, &[c.k, c.n], &q));
            g.initializer.push(tensor_f32(&ws, &[], &scales));
            g.initializer.push(tensor_u8(&wz, &[], &zps));
        }
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
        details.push(weights_detail(&base, c.k, c.n, per_channel, "uint8"));
    }
    // The float weights that were replaced are now unused.
    graph::eliminate_dead(g);
    Ok(PassReport {
        pass: "quantize-dynamic",
        changes,
        details,
    })
}

/// The report line of one quantized product: its name, weight shape, scale granularity and the
/// form written (`uint8`, `int8, QDQ`, …).
fn weights_detail(name: &str, k: usize, n: usize, per_channel: bool, form: &str) -> String {
    let scales = if per_channel {
        "per-column"
    } else {
        "per-tensor"
    };
    format!("quantized {name:?} ([{k}, {n}] weights, {scales} {form})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entropy_clips_rare_outliers_but_keeps_the_bulk() {
        // A peaked (Laplace-like, scale 0.1) bulk of 20 000 values and five far outliers.
        let mut v: Vec<f32> = (1..=20_000)
            .map(|i| {
                let u = i as f32 / 20_001.0;
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                sign * -u.ln() * 0.1
            })
            .collect();
        let bulk_max = v.iter().map(|x| x.abs()).fold(0f32, f32::max);
        v.extend([50.0, -50.0, 49.0, 48.0, -47.0]);
        let t = entropy_threshold(&v);
        assert!(t < 25.0, "the outliers are clipped: threshold {t}");
        assert!(
            t > 0.3,
            "the bulk is kept: threshold {t} (bulk max {bulk_max})"
        );
        assert_eq!(entropy_threshold(&[]), 0.0);
        assert_eq!(
            Calibration::parse("entropy").expect("entropy parses"),
            Calibration::Entropy
        );
    }

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

/// How activation ranges are taken from calibration data.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The given lower/upper percentiles (e.g. 0.01 and 99.99), which ignore rare outliers.
    Percentile(f32),
    /// The clipping threshold that minimises the KL divergence between the activations'
    /// histogram and its 128-level quantized form (TensorRT's entropy calibration), applied to
    /// both signs and never wider than the values seen.
    Entropy,
}

impl Calibration {
    /// Parses `minmax`, `percentile` (99.99 %) or `entropy`.
    pub fn parse(s: &str) -> Result<Self, OptimizeError> {
        match s {
            "minmax" => Ok(Self::MinMax),
            "percentile" => Ok(Self::Percentile(99.99)),
            "entropy" => Ok(Self::Entropy),
            other => Err(OptimizeError::Options(format!(
                "unknown calibration method {other:?}; use minmax, percentile or entropy"
            ))),
        }
    }

    fn keeps_samples(self) -> bool {
        !matches!(self, Self::MinMax)
    }
}

/// The entropy (KL-divergence) clipping threshold of `samples`' magnitudes: a 2048-bin
/// histogram of |x| is cut at every candidate bin `i` (outliers folded into the last kept bin),
/// merged into 128 quantization levels and expanded back, and the cut with the smallest
/// KL(P ‖ Q) wins. Returns the largest magnitude when there are too few distinct values.
pub fn entropy_threshold(samples: &[f32]) -> f32 {
    const BINS: usize = 2048;
    const LEVELS: usize = 128;
    let amax = samples
        .iter()
        .map(|v| v.abs())
        .filter(|v| v.is_finite())
        .fold(0f32, f32::max);
    if amax <= 0.0 || samples.len() < LEVELS {
        return amax;
    }
    let width = amax / BINS as f32;
    let mut hist = vec![0f64; BINS];
    for v in samples.iter().filter(|v| v.is_finite()) {
        let b = ((v.abs() / width) as usize).min(BINS - 1);
        hist[b] += 1.0;
    }
    let mut best = (f64::INFINITY, BINS);
    for cut in (LEVELS..=BINS).step_by(16) {
        // P: the first `cut` bins, with everything beyond folded into the last one.
        let mut p: Vec<f64> = hist[..cut].to_vec();
        p[cut - 1] += hist[cut..].iter().sum::<f64>();
        // Q: the kept bins (without the folded outliers, as TensorRT does) merged into LEVELS
        // chunks, each chunk's mass spread over its non-empty bins.
        let mut q = vec![0f64; cut];
        for level in 0..LEVELS {
            let (a, b) = (
                level * cut / LEVELS,
                ((level + 1) * cut / LEVELS).max(level * cut / LEVELS + 1),
            );
            let mass: f64 = hist[a..b].iter().sum();
            let nonzero = hist[a..b].iter().filter(|&&h| h > 0.0).count();
            if nonzero > 0 {
                for (j, qj) in q[a..b].iter_mut().enumerate() {
                    if hist[a + j] > 0.0 {
                        *qj = mass / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps <= 0.0 || qs <= 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (pi, qi) in p.iter().zip(&q) {
            if *pi > 0.0 {
                let (pn, qn) = (pi / ps, (qi / qs).max(1e-12));
                kl += pn * (pn / qn).ln();
            }
        }
        if kl < best.0 {
            best = (kl, cut);
        }
    }
    (best.1 as f32 + 0.5) * width
}

/// The activation inputs of the MatMul/Gemm nodes static quantization will rewrite.
fn static_targets(g: &kiln_onnx::proto::GraphProto) -> Vec<(usize, Candidate)> {
    let inputs: std::collections::HashSet<String> =
        g.input.iter().map(|i| i.name().to_string()).collect();
    g.node
        .iter()
        .enumerate()
        .filter_map(|(i, n)| candidate(g, i, n, &inputs).ok().flatten().map(|c| (i, c)))
        .collect()
}

/// Runs the model on calibration rows and returns the (min, max) range of every tensor that
/// feeds a quantizable MatMul/Gemm. Progress is reported per chunk of 256 rows.
pub fn calibrate(
    model: &ModelProto,
    features: &[f32],
    rows: usize,
    method: Calibration,
    events: &mut dyn kiln_core::EventSink,
) -> Result<std::collections::HashMap<String, (f32, f32)>, OptimizeError> {
    use kiln_core::{InferenceEngine, Tensor};
    use kiln_onnx::proto::{TypeProto, ValueInfoProto, type_proto};
    let g = model.graph.as_ref().ok_or(OptimizeError::Pass {
        pass: "calibrate",
        reason: "the model has no graph".into(),
    })?;
    let mut names: Vec<String> = static_targets(g).into_iter().map(|(_, c)| c.a).collect();
    names.sort();
    names.dedup();
    if names.is_empty() || rows == 0 {
        return Ok(Default::default());
    }
    // Expose each tensor as an extra graph output so the engine returns it.
    let mut probe = model.clone();
    let pg = probe.graph.as_mut().ok_or(OptimizeError::Pass {
        pass: "calibrate",
        reason: "the model has no graph".into(),
    })?;
    let mut existing: std::collections::HashSet<String> =
        pg.output.iter().map(|o| o.name().to_string()).collect();
    // A graph input is read straight from the calibration rows; declaring it as an output too
    // would erase its declared shape in some engines.
    let graph_inputs: std::collections::HashSet<String> =
        pg.input.iter().map(|i| i.name().to_string()).collect();
    existing.extend(graph_inputs.iter().cloned());
    for n in names.iter().filter(|n| !existing.contains(*n)) {
        pg.output.push(ValueInfoProto {
            name: Some(n.clone()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(data_type::FLOAT),
                    shape: None,
                })),
                denotation: None,
            }),
            ..Default::default()
        });
    }
    let out_names: Vec<String> = pg.output.iter().map(|o| o.name().to_string()).collect();
    let engine = kiln_infer::TractEngine::from_bytes(
        &kiln_onnx::encode(&probe),
        std::path::Path::new("<calibration>"),
    )?;
    let width = features.len() / rows;
    let mut samples: std::collections::HashMap<String, Vec<f32>> = Default::default();
    let mut ranges: std::collections::HashMap<String, (f32, f32)> = Default::default();
    for name in names.iter().filter(|n| graph_inputs.contains(*n)) {
        let finite = features.iter().copied().filter(|v| v.is_finite());
        let r = finite
            .clone()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        ranges.insert(name.clone(), r);
        if method.keeps_samples() {
            samples.insert(name.clone(), finite.collect());
        }
    }
    for start in (0..rows).step_by(256) {
        let end = (start + 256).min(rows);
        let outs = engine.run(vec![Tensor::F32 {
            shape: vec![end - start, width],
            data: features[start * width..end * width].to_vec(),
        }])?;
        events.emit(kiln_core::Event::Progress {
            stage: "calibrate".into(),
            done: end as u64,
            total: Some(rows as u64),
            unit: "row".into(),
        });
        for (i, t) in outs.iter().enumerate() {
            let name = &out_names[i];
            if !names.contains(name) {
                continue;
            }
            if let Tensor::F32 { data, .. } = t {
                let r = ranges
                    .entry(name.clone())
                    .or_insert((f32::INFINITY, f32::NEG_INFINITY));
                for &v in data.iter().filter(|v| v.is_finite()) {
                    r.0 = r.0.min(v);
                    r.1 = r.1.max(v);
                }
                if method.keeps_samples() {
                    samples
                        .entry(name.clone())
                        .or_default()
                        .extend(data.iter().copied().filter(|v| v.is_finite()));
                }
            }
        }
    }
    match method {
        Calibration::Percentile(p) => {
            for (name, mut v) in samples {
                if v.is_empty() {
                    continue;
                }
                v.sort_by(f32::total_cmp);
                let at = |q: f32| v[(((v.len() - 1) as f32) * q).round() as usize];
                ranges.insert(name, (at(1.0 - p / 100.0), at(p / 100.0)));
            }
        }
        Calibration::Entropy => {
            for (name, v) in samples {
                let t = entropy_threshold(&v);
                if let Some(r) = ranges.get_mut(&name) {
                    let clipped = (r.0.max(-t), r.1.min(t));
                    if clipped.0 < clipped.1 {
                        *r = clipped;
                    }
                }
            }
        }
        Calibration::MinMax => {}
    }
    Ok(ranges)
}

/// Rewrites every MatMul/Gemm with constant float weights into QDQ form: the activation passes
/// through `QuantizeLinear`/`DequantizeLinear` with a calibrated per-tensor uint8 range, and the
/// weight is stored as per-column uint8 behind a `DequantizeLinear(axis=1)`. Engines that fuse
/// QDQ (ONNX Runtime) run integer kernels; others (tract) compute in f32 with the quantization
/// error, which is what the accuracy comparison measures.
pub fn static_qdq(
    model: &mut ModelProto,
    ranges: &std::collections::HashMap<String, (f32, f32)>,
) -> Result<PassReport, OptimizeError> {
    static_qdq_except(model, ranges, &Default::default())
}

/// [`static_qdq`], leaving the layers whose output is in `keep_float` in float.
pub fn static_qdq_except(
    model: &mut ModelProto,
    ranges: &std::collections::HashMap<String, (f32, f32)>,
    keep_float: &std::collections::HashSet<String>,
) -> Result<PassReport, OptimizeError> {
    static_qdq_with(model, ranges, keep_float, QdqOptions::default())
}

/// How static QDQ quantizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QdqOptions {
    /// Activations as symmetric int8 (zero point 0, range ±max|x|) instead of asymmetric
    /// uint8 over the calibrated [min, max].
    pub symmetric_activations: bool,
    /// One scale and zero point per weight column (the default) or one for the whole matrix.
    pub per_channel_weights: bool,
}

impl Default for QdqOptions {
    fn default() -> Self {
        Self {
            symmetric_activations: false,
            per_channel_weights: true,
        }
    }
}

/// [`static_qdq_except`] with the activation and weight schemes chosen by `opts`.
pub fn static_qdq_with(
    model: &mut ModelProto,
    ranges: &std::collections::HashMap<String, (f32, f32)>,
    keep_float: &std::collections::HashSet<String>,
    opts: QdqOptions,
) -> Result<PassReport, OptimizeError> {
    let g = model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass: "quantize-static",
        reason: "the model has no graph".into(),
    })?;
    let targets = static_targets(g);
    let mut details = Vec::new();
    let mut dq_of: std::collections::HashMap<String, String> = Default::default();
    let mut new_nodes: Vec<(usize, Vec<NodeProto>)> = Vec::new();
    let mut changes = 0;
    for (idx, c) in targets {
        if keep_float.contains(&c.out) {
            details.push(format!("kept {:?} in float (accuracy budget)", c.out));
            continue;
        }
        let Some(&(lo, hi)) = ranges.get(&c.a) else {
            details.push(format!(
                "kept {:?} in float: no calibration range for {:?}",
                g.node[idx].name(),
                c.a
            ));
            continue;
        };
        let stem = if g.node[idx].name().is_empty() {
            format!("q{idx}")
        } else {
            g.node[idx].name().to_string()
        };
        let mut before = Vec::new();
        let a_dq = match dq_of.get(&c.a) {
            Some(n) => n.clone(),
            None => {
                let (s_name, z_name) = (
                    format!("{}.act_scale", c.a),
                    format!("{}.act_zero_point", c.a),
                );
                let q = if opts.symmetric_activations {
                    let m = lo.abs().max(hi.abs());
                    let scale = if m > 0.0 { m / 127.0 } else { 1.0 };
                    g.initializer.push(tensor_f32(&s_name, &[], &[scale]));
                    g.initializer.push(tensor_i8(&z_name, &[], &[0]));
                    format!("{}.act_i8", c.a)
                } else {
                    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
                    g.initializer.push(tensor_f32(&s_name, &[], &[scale]));
                    g.initializer.push(tensor_u8(&z_name, &[], &[zp]));
                    format!("{}.act_u8", c.a)
                };
                let dq = format!("{}.act_dq", c.a);
                before.push(NodeProto {
                    name: Some(format!("QuantizeLinear/{q}")),
                    op_type: Some("QuantizeLinear".into()),
                    input: vec![c.a.clone(), s_name.clone(), z_name.clone()],
                    output: vec![q.clone()],
                    ..Default::default()
                });
                before.push(NodeProto {
                    name: Some(format!("DequantizeLinear/{dq}")),
                    op_type: Some("DequantizeLinear".into()),
                    input: vec![q, s_name, z_name],
                    output: vec![dq.clone()],
                    ..Default::default()
                });
                dq_of.insert(c.a.clone(), dq.clone());
                dq
            }
        };
        let (wq, ws, wz, wdq) = (
            format!("{stem}.weight_u8"),
            format!("{stem}.weight_scale"),
            format!("{stem}.weight_zero_point"),
            format!("{stem}.weight_dq"),
        );
        let axis = if opts.per_channel_weights {
            let (q, scales, zps) = quantize_columns_u8(&c.weight, c.k, c.n);
            g.initializer.push(tensor_u8(&wq, &[c.k, c.n], &q));
            g.initializer.push(tensor_f32(&ws, &[c.n], &scales));
            g.initializer.push(tensor_u8(&wz, &[c.n], &zps));
            vec![attr_int("axis", 1)]
        } else {
            // One column of k·n values is the per-tensor quantization of the whole matrix.
            let (q, scales, zps) = quantize_columns_u8(&c.weight, c.k * c.n, 1);
            g.initializer.push(tensor_u8(&wq, &[c.k, c.n], &q));
            g.initializer.push(tensor_f32(&ws, &[], &scales));
            g.initializer.push(tensor_u8(&wz, &[], &zps));
            Vec::new()
        };
        before.push(NodeProto {
            name: Some(format!("DequantizeLinear/{wdq}")),
            op_type: Some("DequantizeLinear".into()),
            input: vec![wq, ws, wz],
            output: vec![wdq.clone()],
            attribute: axis,
            ..Default::default()
        });
        let node = &mut g.node[idx];
        node.input[0] = a_dq;
        node.input[1] = wdq;
        // The weight is now stored [K, N]; a Gemm that read it transposed must not any more.
        if let Some(t) = node.attribute.iter_mut().find(|a| a.name() == "transB") {
            t.i = Some(0);
        }
        new_nodes.push((idx, before));
        changes += 1;
        details.push(format!(
            "quantized {stem:?} ({} activations over [{lo:.4}, {hi:.4}], [{}, {}] {} uint8 weights)",
            if opts.symmetric_activations { "symmetric int8" } else { "uint8" },
            c.k,
            c.n,
            if opts.per_channel_weights { "per-column" } else { "per-tensor" }
        ));
    }
    for (idx, nodes) in new_nodes.into_iter().rev() {
        g.node.splice(idx..idx, nodes);
    }
    graph::eliminate_dead(g);
    Ok(PassReport {
        pass: "quantize-static",
        changes,
        details,
    })
}

/// Per-column symmetric int8 quantization of a `[k, n]` matrix: scale `max|w| / 127` per column,
/// zero point 0. Returns the values and the scales. The same arithmetic as kiln's int8 kernel
/// ([`kiln_kernels::quantize_weights_i8`]), so every int8 form stores the same weights.
pub fn quantize_columns_i8(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    kiln_kernels::quantize_weights_i8(w, k, n)
}

/// Weight-only int8: every MatMul/Gemm weight is stored as per-column symmetric int8 behind a
/// `DequantizeLinear(axis=1)`; activations and arithmetic stay float. The file shrinks about 4×
/// and every engine runs it; speed is that of float.
pub fn weight_only_int8(
    model: &mut ModelProto,
    keep_float: &std::collections::HashSet<String>,
) -> Result<PassReport, OptimizeError> {
    let g = model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass: "quantize-weight-only",
        reason: "the model has no graph".into(),
    })?;
    let targets = static_targets(g);
    let mut details = Vec::new();
    let mut inserts: Vec<(usize, NodeProto)> = Vec::new();
    for (idx, c) in &targets {
        if keep_float.contains(&c.out) {
            details.push(format!("kept {:?} in float (accuracy budget)", c.out));
            continue;
        }
        let stem = if g.node[*idx].name().is_empty() {
            c.out.clone()
        } else {
            g.node[*idx].name().to_string()
        };
        let (q, scales) = quantize_columns_i8(&c.weight, c.k, c.n);
        let (wq, ws, wdq) = (
            format!("{stem}.weight_i8"),
            format!("{stem}.weight_scale"),
            format!("{stem}.weight_dq"),
        );
        g.initializer
            .push(kiln_onnx::tensor_i8(&wq, &[c.k, c.n], &q));
        g.initializer.push(tensor_f32(&ws, &[c.n], &scales));
        inserts.push((
            *idx,
            NodeProto {
                name: Some(format!("DequantizeLinear/{wdq}")),
                op_type: Some("DequantizeLinear".into()),
                input: vec![wq, ws],
                output: vec![wdq.clone()],
                attribute: vec![attr_int("axis", 1)],
                ..Default::default()
            },
        ));
        let node = &mut g.node[*idx];
        node.input[1] = wdq;
        if let Some(t) = node.attribute.iter_mut().find(|a| a.name() == "transB") {
            t.i = Some(0);
        }
        details.push(format!(
            "stored {stem:?} weights [{}, {}] as per-column int8",
            c.k, c.n
        ));
    }
    for (idx, n) in inserts.into_iter().rev() {
        g.node.insert(idx, n);
    }
    graph::eliminate_dead(g);
    Ok(PassReport {
        pass: "quantize-weight-only",
        changes: details.len(),
        details,
    })
}

/// Dynamic int8 in kiln's own form: every MatMul/Gemm with a constant 2-D float weight becomes
/// one `ai.kiln.Int8Linear` node ([`kiln_onnx::int8`]) with per-column symmetric int8 weights;
/// rows of activations are quantized at run time, each with its own scale. The model carries
/// the op as a local function of standard operators, so every ONNX runtime runs it; kiln's
/// tract engine runs it with its SIMD int8 kernel (`kiln-kernels`), which is where the form is
/// fast.
///
/// Weights are per column (`per_channel`) or per tensor (one scale for the whole matrix,
/// repeated per column since the op takes `W_scale` as `[N]`).
pub fn dynamic_kiln_with(
    model: &mut ModelProto,
    keep_float: &std::collections::HashSet<String>,
    per_channel: bool,
) -> Result<PassReport, OptimizeError> {
    kiln_form(model, keep_float, per_channel, None)
}

/// Static int8 in kiln's form: like [`dynamic_kiln_with`], but every layer's activations are
/// quantized with one calibrated scale and zero point (`ai.kiln.Int8LinearStatic`, from the
/// `ranges` of [`calibrate`]) instead of each row's own; layers without a range stay float.
pub fn static_kiln_with(
    model: &mut ModelProto,
    ranges: &std::collections::HashMap<String, (f32, f32)>,
    keep_float: &std::collections::HashSet<String>,
    per_channel: bool,
) -> Result<PassReport, OptimizeError> {
    kiln_form(model, keep_float, per_channel, Some(ranges))
}

fn kiln_form(
    model: &mut ModelProto,
    keep_float: &std::collections::HashSet<String>,
    per_channel: bool,
    ranges: Option<&std::collections::HashMap<String, (f32, f32)>>,
) -> Result<PassReport, OptimizeError> {
    let pass = if ranges.is_some() {
        "quantize-static-kiln"
    } else {
        "quantize-dynamic-kiln"
    };
    let opset = kiln_onnx::default_opset(model).unwrap_or(0);
    let g = model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass,
        reason: "the model has no graph".into(),
    })?;
    if opset < 13 {
        return Ok(PassReport {
            pass,
            changes: 0,
            details: vec![format!(
                "kept every layer in float: the kiln int8 op needs opset 13 or newer, the model has {opset}"
            )],
        });
    }
    let (cands, mut details) = scan(g, keep_float, |c| {
        if c.k > kiln_kernels::MAX_K {
            Some(format!(
                "{} inputs exceed the kernel's exact range ({})",
                c.k,
                kiln_kernels::MAX_K
            ))
        } else if ranges.is_some_and(|r| !r.contains_key(&c.a)) {
            Some(format!("no calibration range for {:?}", c.a))
        } else {
            None
        }
    });
    let changes = cands.len();
    for c in cands.into_iter().rev() {
        let base = g.node[c.index].name().to_string();
        let stem = if base.is_empty() {
            format!("q{}", c.index)
        } else {
            base.clone()
        };
        let (q, scales) = if per_channel {
            kiln_kernels::quantize_weights_i8(&c.weight, c.k, c.n)
        } else {
            let (q, s) = kiln_kernels::quantize_weights_i8(&c.weight, c.k * c.n, 1);
            (q, vec![s[0]; c.n])
        };
        let (wq, ws) = (format!("{stem}.weight_i8"), format!("{stem}.weight_scale"));
        g.initializer.push(tensor_i8(&wq, &[c.k, c.n], &q));
        g.initializer.push(tensor_f32(&ws, &[c.n], &scales));
        // A constant bias of N values goes into the op; any other bias stays an Add after it.
        let const_bias = c.bias.as_ref().and_then(|b| {
            graph::initializer(g, b)
                .filter(|t| t.data_type() == data_type::FLOAT)
                .and_then(|t| match TensorValue::from_proto(t) {
                    Ok(TensorValue::F32(v)) if v.len() == c.n => Some(b.clone()),
                    _ => None,
                })
        });
        let bias_in = match &const_bias {
            Some(b) => b.clone(),
            None => {
                let zero = format!("{stem}.zero_bias");
                g.initializer
                    .push(tensor_f32(&zero, &[c.n], &vec![0.0; c.n]));
                zero
            }
        };
        let op_out = if c.bias.is_some() && const_bias.is_none() {
            format!("{stem}.int8_linear")
        } else {
            c.out.clone()
        };
        let (op, inputs) = match ranges.and_then(|r| r.get(&c.a)) {
            Some(&(lo, hi)) => {
                // The calibrated range, widened to hold 0, as u8 with a zero point.
                let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                let s0 = (hi - lo) / 255.0;
                let scale = if s0 > 0.0 && s0.is_finite() { s0 } else { 1.0 };
                let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
                let (sn, zn) = (
                    format!("{stem}.act_scale"),
                    format!("{stem}.act_zero_point"),
                );
                g.initializer.push(tensor_f32(&sn, &[], &[scale]));
                g.initializer.push(tensor_u8(&zn, &[], &[zp]));
                (
                    kiln_onnx::int8::OP_STATIC,
                    vec![c.a.clone(), sn, zn, wq, ws, bias_in],
                )
            }
            None => (kiln_onnx::int8::OP, vec![c.a.clone(), wq, ws, bias_in]),
        };
        let mut nodes = vec![NodeProto {
            name: Some(format!("{op}/{op_out}")),
            op_type: Some(op.into()),
            domain: Some(kiln_onnx::int8::DOMAIN.into()),
            input: inputs,
            output: vec![op_out.clone()],
            ..Default::default()
        }];
        if let (Some(b), None) = (&c.bias, &const_bias) {
            nodes.push(NodeProto {
                name: Some(format!("Add/{}", c.out)),
                op_type: Some("Add".into()),
                input: vec![op_out, b.clone()],
                output: vec![c.out.clone()],
                ..Default::default()
            });
        }
        g.node.splice(c.index..=c.index, nodes);
        details.push(weights_detail(
            &base,
            c.k,
            c.n,
            per_channel,
            "int8, kiln Int8Linear",
        ));
    }
    let fused = fuse_relu(g);
    if fused > 0 {
        details.push(format!("fused {fused} Relu into the int8 op"));
    }
    graph::eliminate_dead(g);
    if changes > 0 {
        let used = |name: &str| {
            model.graph.as_ref().is_some_and(|g| {
                g.node
                    .iter()
                    .any(|n| n.domain() == kiln_onnx::int8::DOMAIN && n.op_type() == name)
            })
        };
        let have = |model: &ModelProto, name: &str| {
            model
                .functions
                .iter()
                .any(|f| f.domain() == kiln_onnx::int8::DOMAIN && f.name() == name)
        };
        for (name, make) in [
            (
                kiln_onnx::int8::OP,
                kiln_onnx::int8::function as fn(i64) -> _,
            ),
            (kiln_onnx::int8::OP_RELU, kiln_onnx::int8::function_relu),
            (kiln_onnx::int8::OP_STATIC, |o| {
                kiln_onnx::int8::function_static(o, false)
            }),
            (kiln_onnx::int8::OP_STATIC_RELU, |o| {
                kiln_onnx::int8::function_static(o, true)
            }),
        ] {
            if used(name) && !have(model, name) {
                model.functions.push(make(opset));
            }
        }
        if !model
            .opset_import
            .iter()
            .any(|o| o.domain() == kiln_onnx::int8::DOMAIN)
        {
            model
                .opset_import
                .push(kiln_onnx::proto::OperatorSetIdProto {
                    domain: Some(kiln_onnx::int8::DOMAIN.into()),
                    version: Some(1),
                });
        }
    }
    Ok(PassReport {
        pass,
        changes,
        details,
    })
}

/// Turns `Int8Linear → Relu` into one `Int8LinearRelu` where the Relu is the only consumer and
/// the linear output is not a graph output. Returns the number fused.
fn fuse_relu(g: &mut kiln_onnx::proto::GraphProto) -> usize {
    let outputs = graph::output_names(g);
    let consumers = graph::consumers(g);
    let mut fuse: Vec<(usize, usize)> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if !(n.domain() == kiln_onnx::int8::DOMAIN
            && (n.op_type() == kiln_onnx::int8::OP || n.op_type() == kiln_onnx::int8::OP_STATIC))
        {
            continue;
        }
        let out = &n.output[0];
        if outputs.contains(out) {
            continue;
        }
        if let Some([c]) = consumers.get(out).map(Vec::as_slice)
            && g.node[*c].op_type() == "Relu"
            && g.node[*c].domain().is_empty()
        {
            fuse.push((i, *c));
        }
    }
    let mut dead = Vec::new();
    for &(i, relu) in &fuse {
        let relu_out = g.node[relu].output[0].clone();
        let n = &mut g.node[i];
        let fused = if n.op_type() == kiln_onnx::int8::OP_STATIC {
            kiln_onnx::int8::OP_STATIC_RELU
        } else {
            kiln_onnx::int8::OP_RELU
        };
        n.op_type = Some(fused.into());
        n.name = Some(format!("{fused}/{relu_out}"));
        n.output[0] = relu_out;
        dead.push(relu);
    }
    dead.sort_unstable();
    for idx in dead.into_iter().rev() {
        g.node.remove(idx);
    }
    fuse.len()
}

/// Dynamic int8 in QDQ form: activations go through `DynamicQuantizeLinear` and back through
/// `DequantizeLinear`, weights are per-column symmetric int8 behind `DequantizeLinear(axis=1)`,
/// and the MatMul/Gemm itself stays float. Runtimes that fuse QDQ patterns can run the integer
/// product; the others compute the same quantized values in float.
///
/// Weights are per column (`per_channel`) or per tensor (one scalar scale for the matrix).
pub fn dynamic_qdq_with(
    model: &mut ModelProto,
    keep_float: &std::collections::HashSet<String>,
    per_channel: bool,
) -> Result<PassReport, OptimizeError> {
    let g = model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass: "quantize-dynamic-qdq",
        reason: "the model has no graph".into(),
    })?;
    let targets = static_targets(g);
    let mut details = Vec::new();
    let mut inserts: Vec<(usize, Vec<NodeProto>)> = Vec::new();
    for (idx, c) in &targets {
        if keep_float.contains(&c.out) {
            details.push(format!("kept {:?} in float (accuracy budget)", c.out));
            continue;
        }
        let stem = if g.node[*idx].name().is_empty() {
            c.out.clone()
        } else {
            g.node[*idx].name().to_string()
        };
        let v = |s: &str| format!("{stem}.{s}");
        let weight_axis = if per_channel {
            let (q, scales) = quantize_columns_i8(&c.weight, c.k, c.n);
            g.initializer
                .push(kiln_onnx::tensor_i8(&v("weight_i8"), &[c.k, c.n], &q));
            g.initializer
                .push(tensor_f32(&v("weight_scale"), &[c.n], &scales));
            vec![attr_int("axis", 1)]
        } else {
            let (q, scales) = quantize_columns_i8(&c.weight, c.k * c.n, 1);
            g.initializer
                .push(kiln_onnx::tensor_i8(&v("weight_i8"), &[c.k, c.n], &q));
            g.initializer
                .push(tensor_f32(&v("weight_scale"), &[], &scales));
            Vec::new()
        };
        let mk = |op: &str, ins: Vec<String>, outs: Vec<String>, attrs| NodeProto {
            name: Some(format!("{op}/{}", outs[0])),
            op_type: Some(op.into()),
            input: ins,
            output: outs,
            attribute: attrs,
            ..Default::default()
        };
        inserts.push((
            *idx,
            vec![
                mk(
                    "DynamicQuantizeLinear",
                    vec![c.a.clone()],
                    vec![v("a_u8"), v("a_scale"), v("a_zero_point")],
                    vec![],
                ),
                mk(
                    "DequantizeLinear",
                    vec![v("a_u8"), v("a_scale"), v("a_zero_point")],
                    vec![v("a_dq")],
                    vec![],
                ),
                mk(
                    "DequantizeLinear",
                    vec![v("weight_i8"), v("weight_scale")],
                    vec![v("weight_dq")],
                    weight_axis,
                ),
            ],
        ));
        let node = &mut g.node[*idx];
        node.input[0] = v("a_dq");
        node.input[1] = v("weight_dq");
        if let Some(t) = node.attribute.iter_mut().find(|a| a.name() == "transB") {
            t.i = Some(0);
        }
        details.push(weights_detail(&stem, c.k, c.n, per_channel, "int8, QDQ"));
    }
    for (idx, nodes) in inserts.into_iter().rev() {
        g.node.splice(idx..idx, nodes);
    }
    graph::eliminate_dead(g);
    Ok(PassReport {
        pass: "quantize-dynamic-qdq",
        changes: details
            .iter()
            .filter(|d| d.starts_with("quantized"))
            .count(),
        details,
    })
}
