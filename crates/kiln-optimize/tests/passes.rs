//! Passes on small handmade graphs: each keeps outputs where it applies, changes nothing where
//! it must not, and the accuracy gate refuses a model that lost accuracy.

use kiln_core::NullSink;
use kiln_onnx::proto::data_type::FLOAT;
use kiln_onnx::{Dim, GraphBuilder, attr_int, attr_ints};
use kiln_optimize::{
    GraphLevel, GraphOptimizer, OptimizeError, OptimizeOptions, Pass, Quantization, passes,
};
use std::path::Path;

fn n() -> Dim {
    Dim::Symbol("N".into())
}

/// x [N,2] → (Identity) → MatMul(Transpose(W)) → Dropout → Softmax → probabilities, ArgMax → label.
fn model_with_clutter() -> kiln_onnx::proto::ModelProto {
    let mut g = GraphBuilder::new("clutter");
    g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
    let wt = g.constant_f32("w_t", &[3, 2], &[0.5, -1.0, 2.0, 0.25, -0.75, 1.5]);
    let w = g.node("Transpose", &[&wt], &[attr_ints("perm", &[1, 0])]);
    let id = g.node("Identity", &["x"], &[]);
    let y = g.node("MatMul", &[&id, &w], &[]);
    let d = g.node("Dropout", &[&y], &[]);
    g.node_named("Softmax", &[&d], &["probabilities"], &[attr_int("axis", 1)]);
    g.node_named(
        "ArgMax",
        &["probabilities"],
        &["label"],
        &[attr_int("axis", 1), attr_int("keepdims", 0)],
    );
    g.output("probabilities", FLOAT, &[n(), Dim::Fixed(3)]);
    g.output("label", kiln_onnx::proto::data_type::INT64, &[n()]);
    g.into_model(17)
}

fn run(model: &kiln_onnx::proto::ModelProto, rows: &[f32]) -> Vec<Vec<f32>> {
    let m = kiln_infer::Model::from_bytes(
        &kiln_onnx::encode(model),
        Path::new("<test>"),
        kiln_infer::EngineKind::Tract,
    )
    .expect("load");
    m.predict(rows, rows.len() / 2)
        .expect("predict")
        .into_iter()
        .map(|p| p.scores)
        .collect()
}

const ROWS: [f32; 8] = [0.1, 0.2, -1.0, 3.0, 2.5, -0.5, 0.0, 0.0];

#[test]
fn basic_level_removes_clutter_and_keeps_outputs() {
    let original = model_with_clutter();
    let mut m = original.clone();
    let mut changes = Vec::new();
    for p in GraphLevel::Basic.passes() {
        changes.push((p.name(), p.run(&mut m).expect("pass").changes));
    }
    assert_eq!(
        changes,
        vec![
            ("remove-identities", 2),
            ("fold-shapes", 0),
            ("fold-constants", 1),
            ("eliminate-dead", 1)
        ]
    );
    let ops: Vec<&str> = m
        .graph
        .as_ref()
        .expect("graph")
        .node
        .iter()
        .map(|n| n.op_type())
        .collect();
    assert_eq!(ops, ["MatMul", "Softmax", "ArgMax"]);
    let (a, b) = (run(&original, &ROWS), run(&m, &ROWS));
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= 1e-6, "{x} vs {y}");
    }
}

#[test]
fn passes_leave_graphs_without_their_pattern_alone() {
    let mut g = GraphBuilder::new("plain");
    g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
    let w = g.constant_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let y = g.node("MatMul", &["x", &w], &[]);
    g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
    g.output("probabilities", FLOAT, &[n(), Dim::Fixed(2)]);
    let original = g.into_model(17);
    let mut m = original.clone();
    for p in GraphLevel::Basic.passes() {
        assert_eq!(p.run(&mut m).expect("pass").changes, 0, "{}", p.name());
    }
    assert_eq!(m, original);
}

#[test]
fn identity_feeding_a_graph_output_keeps_the_output_name() {
    let mut g = GraphBuilder::new("id_out");
    g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
    let r = g.node("Relu", &["x"], &[]);
    g.node_named("Identity", &[&r], &["out"], &[]);
    g.output("out", FLOAT, &[n(), Dim::Fixed(2)]);
    let mut m = g.into_model(17);
    let rep = passes::RemoveIdentities.run(&mut m).expect("pass");
    assert_eq!(rep.changes, 1);
    let graph = m.graph.as_ref().expect("graph");
    assert_eq!(graph.node.len(), 1);
    assert_eq!(graph.node[0].output, ["out"]);
}

/// A model whose quantized weights flip a near-tie: accuracy 1.0 → 0.0. The gate must refuse it
/// and write nothing.
#[test]
fn accuracy_gate_refuses_a_model_that_lost_accuracy() {
    let mut g = GraphBuilder::new("near_tie");
    g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
    // Column 0 = [1.0, 0.3] quantizes 0.3 to 76/255 = 0.29804; column 1 = [0, 0.299] is exact.
    let w = g.constant_f32("w", &[2, 2], &[1.0, 0.0, 0.3, 0.299]);
    let y = g.node("MatMul", &["x", &w], &[]);
    g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
    g.output("probabilities", FLOAT, &[n(), Dim::Fixed(2)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("m.onnx");
    kiln_onnx::save(&g.into_model(17), &input).expect("save");
    let val = dir.path().join("val.csv");
    std::fs::write(&val, "a,b,label\n0,1,0\n0,1,0\n").expect("csv");
    let output = dir.path().join("q.onnx");
    let opts = OptimizeOptions {
        quantization: Quantization::Dynamic,
        form: kiln_optimize::OnnxForm::Integer,
        validate_data: Some(val.clone()),
        ..OptimizeOptions::default()
    };
    let err = GraphOptimizer::new(opts.clone())
        .run(&input, &output, &mut NullSink)
        .expect_err("gate");
    assert!(matches!(err, OptimizeError::AccuracyGate { .. }), "{err}");
    assert!(err.to_string().contains("not written"), "{err}");
    assert!(
        !output.exists(),
        "nothing may be written when the gate refuses"
    );
    // Without quantization the model passes the gate.
    let ok = GraphOptimizer::new(OptimizeOptions {
        quantization: Quantization::None,
        ..opts
    })
    .run(&input, &output, &mut NullSink)
    .expect("float");
    assert_eq!(ok.comparison.accuracy_ratio(), Some(1.0));
}

#[test]
fn static_quantization_needs_calibration_data_and_checks_its_width() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("m.onnx");
    kiln_onnx::save(&model_with_clutter(), &input).expect("save");
    let output = dir.path().join("q.onnx");
    let opts = OptimizeOptions {
        quantization: Quantization::Static,
        ..OptimizeOptions::default()
    };
    let err = GraphOptimizer::new(opts.clone())
        .run(&input, &output, &mut NullSink)
        .expect_err("no calibration");
    assert!(err.to_string().contains("--calibration-data"), "{err}");
    let cal = dir.path().join("cal.csv");
    std::fs::write(&cal, "a,b,c\n1,2,3\n").expect("csv");
    let err = GraphOptimizer::new(OptimizeOptions {
        calibration_data: Some(cal.clone()),
        ..opts.clone()
    })
    .run(&input, &output, &mut NullSink)
    .expect_err("width");
    assert!(
        err.to_string()
            .contains("calibration data has 3 feature columns"),
        "{err}"
    );
    std::fs::write(&cal, "a,b\n1,2\n-1,0.5\n3,3\n").expect("csv");
    let r = GraphOptimizer::new(OptimizeOptions {
        calibration_data: Some(cal),
        ..opts
    })
    .run(&input, &output, &mut NullSink)
    .expect("static");
    assert_eq!(
        r.passes.last().map(|p| (p.pass, p.changes)),
        Some(("quantize-static", 1))
    );
    let q = kiln_onnx::load(&output).expect("load");
    let ops = kiln_onnx::graph::op_counts(q.graph.as_ref().expect("graph"));
    assert!(
        ops.iter()
            .any(|(op, n)| op == "DequantizeLinear" && *n == 2),
        "{ops:?}"
    );
}

mod extended {
    use super::*;
    use kiln_optimize::pass_by_name;
    use proptest::prelude::*;

    /// One layer of a random test graph, from `x` of width `w_in` to width `w_out`.
    #[derive(Debug, Clone, Copy)]
    enum Layer {
        /// MatMul + Add with constant weight and bias.
        MatMulAdd,
        /// Gemm followed by BatchNormalization.
        GemmBn,
        /// Transpose(x) fed to Gemm with transA=1 (a double transpose).
        TransposedGemm,
        /// relu(x) + relu(x) computed by two identical nodes.
        DuplicateRelu,
        /// An Identity.
        Identity,
        /// Input normalization: Sub(x, mean) → Div(·, std) → Mul(scale, ·) by constants.
        Normalize,
    }

    fn weights(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn build(layers: &[(Layer, usize)], mut seed: u64) -> kiln_onnx::proto::ModelProto {
        let mut g = GraphBuilder::new("random");
        let w0 = 4;
        g.input("x", FLOAT, &[n(), Dim::Fixed(w0)]);
        let (mut x, mut w) = ("x".to_string(), w0);
        for (i, &(layer, out)) in layers.iter().enumerate() {
            let out = if matches!(
                layer,
                Layer::DuplicateRelu | Layer::Identity | Layer::Normalize
            ) {
                w
            } else {
                out
            };
            match layer {
                Layer::MatMulAdd => {
                    let wn =
                        g.constant_f32(&format!("w{i}"), &[w, out], &weights(&mut seed, w * out));
                    let bn = g.constant_f32(&format!("b{i}"), &[out], &weights(&mut seed, out));
                    let m = g.node("MatMul", &[&x, &wn], &[]);
                    g.annotate(&m, FLOAT, &[n(), Dim::Fixed(out)]);
                    x = g.node("Add", &[&m, &bn], &[]);
                }
                Layer::GemmBn => {
                    let wn =
                        g.constant_f32(&format!("w{i}"), &[w, out], &weights(&mut seed, w * out));
                    let bn = g.constant_f32(&format!("b{i}"), &[out], &weights(&mut seed, out));
                    let y = g.node("Gemm", &[&x, &wn, &bn], &[]);
                    let scale = g.constant_f32(
                        &format!("s{i}"),
                        &[out],
                        &weights(&mut seed, out)
                            .iter()
                            .map(|v| v + 1.0)
                            .collect::<Vec<_>>(),
                    );
                    let beta =
                        g.constant_f32(&format!("beta{i}"), &[out], &weights(&mut seed, out));
                    let mean = g.constant_f32(&format!("m{i}"), &[out], &weights(&mut seed, out));
                    let var = g.constant_f32(
                        &format!("v{i}"),
                        &[out],
                        &weights(&mut seed, out)
                            .iter()
                            .map(|v| v + 1.0)
                            .collect::<Vec<_>>(),
                    );
                    x = g.node("BatchNormalization", &[&y, &scale, &beta, &mean, &var], &[]);
                }
                Layer::TransposedGemm => {
                    let t = g.node("Transpose", &[&x], &[attr_ints("perm", &[1, 0])]);
                    let wn =
                        g.constant_f32(&format!("w{i}"), &[w, out], &weights(&mut seed, w * out));
                    x = g.node("Gemm", &[&t, &wn], &[attr_int("transA", 1)]);
                }
                Layer::DuplicateRelu => {
                    let a = g.node("Relu", &[&x], &[]);
                    let b = g.node("Relu", &[&x], &[]);
                    x = g.node("Add", &[&a, &b], &[]);
                }
                Layer::Identity => x = g.node("Identity", &[&x], &[]),
                Layer::Normalize => {
                    let mean = g.constant_f32(&format!("mean{i}"), &[w], &weights(&mut seed, w));
                    let std: Vec<f32> = weights(&mut seed, w).iter().map(|v| v + 1.0).collect();
                    let std = g.constant_f32(&format!("std{i}"), &[1, w], &std);
                    let scale = g.constant_f32(&format!("scale{i}"), &[], &[1.5]);
                    let c = g.node("Sub", &[&x, &mean], &[]);
                    let d = g.node("Div", &[&c, &std], &[]);
                    x = g.node("Mul", &[&scale, &d], &[]);
                }
            }
            w = out;
            g.annotate(&x, FLOAT, &[n(), Dim::Fixed(w)]);
        }
        g.node_named("Softmax", &[&x], &["probabilities"], &[attr_int("axis", 1)]);
        g.output("probabilities", FLOAT, &[n(), Dim::Fixed(w)]);
        g.into_model(17)
    }

    fn close(a: &kiln_onnx::proto::ModelProto, b: &kiln_onnx::proto::ModelProto) -> f32 {
        let rows: Vec<f32> = (0..5 * 4).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let (x, y) = (
            kiln_infer::Model::from_bytes(
                &kiln_onnx::encode(a),
                Path::new("<a>"),
                kiln_infer::EngineKind::Tract,
            )
            .expect("a")
            .predict(&rows, 5)
            .expect("run a"),
            kiln_infer::Model::from_bytes(
                &kiln_onnx::encode(b),
                Path::new("<b>"),
                kiln_infer::EngineKind::Tract,
            )
            .expect("b")
            .predict(&rows, 5)
            .expect("run b"),
        );
        x.iter()
            .zip(&y)
            .flat_map(|(p, q)| p.scores.iter().zip(&q.scores).map(|(u, v)| (u - v).abs()))
            .fold(0.0, f32::max)
    }

    fn check(layer: Layer, pass: &str, want_changes: usize) {
        check_layers(&[(layer, 3), (Layer::MatMulAdd, 2)], pass, want_changes);
    }

    fn check_layers(layers: &[(Layer, usize)], pass: &str, want_changes: usize) {
        let layer = layers[0].0;
        let original = build(layers, 7);
        let mut m = original.clone();
        let p = pass_by_name(pass).expect("pass");
        let r = p.run(&mut m).expect("run");
        assert!(
            r.changes >= want_changes,
            "{pass} on {layer:?}: {} changes",
            r.changes
        );
        let d = close(&original, &m);
        assert!(d <= 1e-5, "{pass} on {layer:?} moved outputs by {d}");
    }

    #[test]
    fn each_extended_pass_applies_where_it_should() {
        check(Layer::MatMulAdd, "matmul-add-to-gemm", 2);
        check(Layer::GemmBn, "fold-batchnorm-into-gemm", 1);
        check(Layer::TransposedGemm, "fold-transpose-into-gemm", 1);
        check(Layer::DuplicateRelu, "eliminate-common-subexpressions", 1);
        check_layers(
            &[
                (Layer::Normalize, 0),
                (Layer::GemmBn, 3),
                (Layer::MatMulAdd, 2),
            ],
            "fold-affine-into-gemm",
            1,
        );
    }

    /// The folded chain is gone and the Gemm reads the graph input directly.
    #[test]
    fn affine_folding_removes_the_normalization() {
        let original = build(&[(Layer::Normalize, 0), (Layer::GemmBn, 3)], 11);
        let mut m = original.clone();
        let r = pass_by_name("fold-affine-into-gemm")
            .expect("pass")
            .run(&mut m)
            .expect("run");
        assert_eq!(r.changes, 1, "{:?}", r.details);
        assert!(
            r.details[0].contains("Sub") && r.details[0].contains("Mul"),
            "{:?}",
            r.details
        );
        let graph = m.graph.as_ref().expect("graph");
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Gemm", "BatchNormalization", "Softmax"]);
        assert_eq!(graph.node[0].input[0], "x");
        assert!(close(&original, &m) <= 1e-5);
    }

    /// Not folded: a normalized value read twice, a graph output in the chain, a divisor that
    /// is not a constant, a per-row constant, and offsets too large to fold without rounding
    /// loss (reported, not applied).
    #[test]
    fn affine_folding_leaves_what_it_cannot_prove_alone() {
        let fold = |m: &mut kiln_onnx::proto::ModelProto| {
            pass_by_name("fold-affine-into-gemm")
                .expect("pass")
                .run(m)
                .expect("run")
        };
        let graph = |build: &dyn Fn(&mut GraphBuilder, &str) -> String| {
            let mut g = GraphBuilder::new("affine");
            g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
            let a = build(&mut g, "x");
            let w = g.constant_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
            let b = g.constant_f32("b", &[2], &[0.5, -0.5]);
            let y = g.node("Gemm", &[&a, &w, &b], &[]);
            g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
            g.output("probabilities", FLOAT, &[n(), Dim::Fixed(2)]);
            g
        };
        let mut cases: Vec<(&str, kiln_onnx::proto::ModelProto)> = Vec::new();
        // Read twice: the Sub result also feeds the output.
        let mut g = graph(&|g, x| {
            let m = g.constant_f32("m", &[2], &[1.0, 2.0]);
            g.node_named("Sub", &[x, &m], &["centred"], &[]);
            "centred".into()
        });
        g.output("centred", FLOAT, &[n(), Dim::Fixed(2)]);
        cases.push(("graph output", g.into_model(17)));
        cases.push((
            "divisor not constant",
            graph(&|g, x| {
                let r = g.node("Relu", &[x], &[]);
                g.node("Div", &[x, &r], &[])
            })
            .into_model(17),
        ));
        cases.push((
            "constant first in Sub",
            graph(&|g, x| {
                let m = g.constant_f32("m", &[2], &[1.0, 2.0]);
                g.node("Sub", &[&m, x], &[])
            })
            .into_model(17),
        ));
        cases.push((
            "per-row constant",
            graph(&|g, x| {
                let m = g.constant_f32("m", &[2, 1], &[1.0, 2.0]);
                g.node("Sub", &[x, &m], &[])
            })
            .into_model(17),
        ));
        for (what, original) in cases {
            let mut m = original.clone();
            assert_eq!(fold(&mut m).changes, 0, "{what}");
            assert_eq!(m, original, "{what}: changed a graph it does not apply to");
        }
        // Offsets of 1000 standard deviations: reported and left alone.
        let original = graph(&|g, x| {
            let m = g.constant_f32("m", &[2], &[1000.0, 2.0]);
            let s = g.constant_f32("s", &[2], &[1.0, 2.0]);
            let c = g.node("Sub", &[x, &m], &[]);
            g.node("Div", &[&c, &s], &[])
        })
        .into_model(17);
        let mut m = original.clone();
        let r = fold(&mut m);
        assert_eq!(r.changes, 0);
        assert!(
            r.details[0].contains("1000.0 scale units"),
            "{:?}",
            r.details
        );
        assert_eq!(m, original);
    }

    #[test]
    fn extended_passes_leave_other_graphs_alone() {
        // MatMul whose result is read twice cannot become a Gemm.
        let mut g = GraphBuilder::new("shared");
        g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
        let w = g.constant_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = g.constant_f32("b", &[2], &[0.5, -0.5]);
        let m = g.node("MatMul", &["x", &w], &[]);
        let a = g.node("Add", &[&m, &b], &[]);
        let y = g.node("Mul", &[&a, &m], &[]);
        g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
        g.output("probabilities", FLOAT, &[n(), Dim::Fixed(2)]);
        let original = g.into_model(17);
        for pass in [
            "matmul-add-to-gemm",
            "fold-transpose-into-gemm",
            "eliminate-common-subexpressions",
            "fold-batchnorm-into-gemm",
            "fold-affine-into-gemm",
        ] {
            let mut m = original.clone();
            assert_eq!(
                pass_by_name(pass)
                    .expect("pass")
                    .run(&mut m)
                    .expect("run")
                    .changes,
                0,
                "{pass}"
            );
            assert_eq!(m, original, "{pass} changed a graph it does not apply to");
        }
    }

    fn layer() -> impl Strategy<Value = (Layer, usize)> {
        (
            prop_oneof![
                Just(Layer::MatMulAdd),
                Just(Layer::GemmBn),
                Just(Layer::TransposedGemm),
                Just(Layer::DuplicateRelu),
                Just(Layer::Identity),
                Just(Layer::Normalize)
            ],
            1usize..6,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every level keeps the outputs of random small graphs (tract before and after).
        #[test]
        fn every_level_preserves_outputs(layers in proptest::collection::vec(layer(), 1..6), seed in 1u64..u64::MAX) {
            let original = build(&layers, seed);
            for level in [GraphLevel::Basic, GraphLevel::Extended, GraphLevel::All] {
                let mut m = original.clone();
                for p in level.passes() {
                    p.run(&mut m).expect("pass");
                }
                let d = close(&original, &m);
                prop_assert!(d <= 1e-5, "{level:?} moved outputs by {d} on {layers:?}");
            }
        }
    }
}

/// The gate's fallback: the layer whose quantization flips the near-tie is kept in float, the
/// harmless one stays int8, and the output passes the gate.
#[test]
fn accuracy_gate_keeps_the_sensitive_layer_in_float() {
    let mut g = GraphBuilder::new("two_layers");
    g.input("x", FLOAT, &[n(), Dim::Fixed(2)]);
    let eye = g.constant_f32("eye", &[2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let h = g.node("MatMul", &["x", &eye], &[]);
    let w = g.constant_f32("w", &[2, 2], &[1.0, 0.0, 0.3, 0.299]);
    let y = g.node("MatMul", &[&h, &w], &[]);
    g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
    g.output("probabilities", FLOAT, &[n(), Dim::Fixed(2)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("m.onnx");
    kiln_onnx::save(&g.into_model(17), &input).expect("save");
    let val = dir.path().join("val.csv");
    std::fs::write(&val, "a,b,label\n0,1,0\n").expect("csv");
    let output = dir.path().join("q.onnx");
    let opts = OptimizeOptions {
        quantization: Quantization::Dynamic,
        // The asymmetric u8 weights of the integer form are what makes 0.3 vs 0.299 collide.
        form: kiln_optimize::OnnxForm::Integer,
        validate_data: Some(val),
        ..OptimizeOptions::default()
    };
    let r = GraphOptimizer::new(opts)
        .run(&input, &output, &mut NullSink)
        .expect("the fallback makes it pass");
    assert_eq!(r.comparison.accuracy_ratio(), Some(1.0));
    assert_eq!(r.kept_float.len(), 1, "{:?}", r.kept_float);
    assert!(r.kept_float[0].starts_with(&y), "{:?}", r.kept_float);
    let q = kiln_onnx::load(&output).expect("load");
    let ops = kiln_onnx::graph::op_counts(q.graph.as_ref().expect("graph"));
    assert!(
        ops.contains(&("MatMulInteger".to_string(), 1)) && ops.contains(&("MatMul".to_string(), 1)),
        "{ops:?}"
    );
    assert!(
        kiln_onnx::metadata_value(&q, "kiln.optimize.float_layers").is_some_and(|v| v.contains(&y))
    );
}
