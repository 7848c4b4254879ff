//! kiln's int8 op (`ai.kiln.Int8Linear`, written by `kiln optimize --quantization dynamic` for
//! tract): the native kernel tract runs must compute exactly what the op's ONNX function body
//! says, as run by tract itself (body inlined), by the ONNX reference evaluator and by ONNX
//! Runtime; and `--onnx-form` / `--engine` choose the form.

use crate::conformance::ort_lib;
use crate::crosscheck::python;
use crate::util::Kiln;
use kiln::infer::{EngineConfig, EngineKind, Model};
use kiln::onnx::proto::data_type::FLOAT;
use kiln::onnx::{Dim, GraphBuilder, attr_int};
use std::path::Path;
use std::process::Command;

const WIDTH: usize = 20;

/// An MLP 20→32→16→3 with a Gemm (bias), a MatMul without bias, a Gemm with transB and a
/// softmax.
fn mlp(path: &Path) {
    let mut g = GraphBuilder::new("mlp");
    let n = || Dim::Symbol("N".into());
    g.input("x", FLOAT, &[n(), Dim::Fixed(WIDTH)]);
    let mut state = 99u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut v = |len: usize, s: f32| (0..len).map(|_| next() * s).collect::<Vec<f32>>();
    let w0 = g.constant_f32("w0", &[WIDTH, 32], &v(WIDTH * 32, 0.8));
    let b0 = g.constant_f32("b0", &[32], &v(32, 0.2));
    let h = g.node("Gemm", &["x", &w0, &b0], &[]);
    let h = g.node("Relu", &[&h], &[]);
    let w1 = g.constant_f32("w1", &[32, 16], &v(32 * 16, 0.6));
    let h = g.node("MatMul", &[&h, &w1], &[]);
    let h = g.node("Tanh", &[&h], &[]);
    // transB: the weight stored [N, K].
    let w2 = g.constant_f32("w2", &[3, 16], &v(3 * 16, 1.0));
    let b2 = g.constant_f32("b2", &[3], &v(3, 0.1));
    let y = g.node("Gemm", &[&h, &w2, &b2], &[attr_int("transB", 1)]);
    g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
    g.output("probabilities", FLOAT, &[n(), Dim::Fixed(3)]);
    kiln::onnx::save(&g.into_model(17), path).unwrap();
}

/// Rows with mixed signs, an all-zero row, an all-negative row and an all-positive row.
fn rows(n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * WIDTH)
        .map(|i| (((i * 7919) % 1013) as f32 / 200.0) - 2.5)
        .collect();
    x[..WIDTH].fill(0.0);
    for v in &mut x[WIDTH..2 * WIDTH] {
        *v = -v.abs() - 0.1;
    }
    for v in &mut x[2 * WIDTH..3 * WIDTH] {
        *v = v.abs() + 0.1;
    }
    x
}

fn scores(model: &Path, config: EngineConfig, x: &[f32], n: usize) -> Vec<f32> {
    Model::load(model, config)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
        .predict(x, n)
        .unwrap()
        .into_iter()
        .flat_map(|p| p.scores)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The model's outputs from kiln's kernels (`native`) against its ONNX definition run
/// elsewhere, within 1e-6: the function bodies inlined and run by tract (`calls` of them), and,
/// with Python, the ONNX reference evaluator and ONNX Runtime with its graph optimizations off
/// (its optimizer rewrites the bodies' arithmetic, see docs/PERFORMANCE.md).
fn assert_matches_definition(k: &Kiln, file: &str, calls: usize, x: &[f32], native: &[f32]) {
    let n = x.len() / WIDTH;
    let mut inlined = kiln::onnx::load(&k.path(file)).unwrap();
    assert_eq!(kiln::onnx::inline::inline_functions(&mut inlined), calls);
    let body_file = format!("{file}.inlined.onnx");
    kiln::onnx::save(&inlined, &k.path(&body_file)).unwrap();
    let body = scores(&k.path(&body_file), EngineKind::Tract.into(), x, n);
    let d = max_diff(native, &body);
    assert!(d <= 1e-6, "{file}: kernel vs body in tract: {d}");
    let py = python();
    let rows_json: Vec<Vec<f32>> = x.chunks(WIDTH).map(<[f32]>::to_vec).collect();
    std::fs::write(
        k.path("rows.json"),
        serde_json::to_string(&rows_json).unwrap(),
    )
    .unwrap();
    let script = r#"
import json, sys
import numpy as np, onnx, onnxruntime as ort
from onnx.reference import ReferenceEvaluator
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
x = np.asarray(json.load(open(sys.argv[2])), dtype=np.float32)
ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
rt = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
print(json.dumps({"reference": ref.ravel().tolist(), "ort": rt.ravel().tolist()}))
"#;
    let o = Command::new(py)
        .args(["-c", script])
        .arg(k.path(file))
        .arg(k.path("rows.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for engine in ["reference", "ort"] {
        let other: Vec<f32> = v[engine]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = max_diff(native, &other);
        assert!(d <= 1e-6, "{file}: kernel vs {engine}: {d}");
    }
}

#[test]
fn kiln_int8_op_equals_its_onnx_definition_in_every_engine() {
    let k = Kiln::new();
    mlp(&k.path("m.onnx"));
    let out = k.json(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "q.onnx",
        "--quantization",
        "dynamic",
    ]);
    let passes = out
        .pointer("/report/passes")
        .and_then(|p| p.as_array())
        .unwrap();
    let pass = passes
        .iter()
        .find(|p| p["pass"] == "quantize-dynamic-kiln")
        .unwrap_or_else(|| panic!("no kiln quantization pass in {out:#}"));
    assert_eq!(pass["changes"], 3, "{pass:#}");
    let q = kiln::onnx::load(&k.path("q.onnx")).unwrap();
    let ops = kiln::onnx::graph::op_counts(q.graph.as_ref().unwrap());
    // Gemm → Relu became one Int8LinearRelu; the MatMul and the last Gemm plain Int8Linear.
    assert!(
        ops.contains(&("ai.kiln:Int8Linear".to_string(), 2)),
        "{ops:?}"
    );
    assert!(
        ops.contains(&("ai.kiln:Int8LinearRelu".to_string(), 1)),
        "{ops:?}"
    );
    assert!(!ops.iter().any(|(op, _)| op == "Relu"), "{ops:?}");
    for name in ["Int8Linear", "Int8LinearRelu"] {
        assert!(
            q.functions
                .iter()
                .any(|f| f.domain() == "ai.kiln" && f.name() == name),
            "the definition of {name} travels with the model"
        );
    }
    assert_eq!(
        kiln::onnx::metadata_value(&q, "kiln.optimize.form"),
        Some("kiln")
    );

    let n = 64;
    let x = rows(n);
    // 1. tract with kiln's kernel.
    let native = scores(&k.path("q.onnx"), EngineKind::Tract.into(), &x, n);
    // 2.–4. tract running the function bodies (standard ops only, int32 MatMul), the ONNX
    //    reference evaluator and ONNX Runtime.
    assert_matches_definition(&k, "q.onnx", 3, &x, &native);
    // The float model, for scale: quantization moved the outputs, the kernel did not.
    let float = scores(&k.path("m.onnx"), EngineKind::Tract.into(), &x, n);
    assert!(max_diff(&native, &float) > 1e-6);
    assert!(max_diff(&native, &float) < 0.1);
    // 5. ONNX Runtime through kiln's ort engine runs the function too.
    {
        let lib = ort_lib();
        let ort = scores(
            &k.path("q.onnx"),
            EngineConfig {
                kind: EngineKind::Ort,
                ort_lib: Some(lib),
                threads: Some(1),
                ..EngineConfig::default()
            },
            &x,
            n,
        );
        assert!(
            max_diff(&native, &ort) < 0.05,
            "{}",
            max_diff(&native, &ort)
        );
    }
}

#[test]
fn onnx_form_follows_the_engine_and_the_flag() {
    let k = Kiln::new();
    mlp(&k.path("m.onnx"));
    let ops = |file: &str| {
        let m = kiln::onnx::load(&k.path(file)).unwrap();
        kiln::onnx::graph::op_counts(m.graph.as_ref().unwrap())
            .into_iter()
            .map(|(op, _)| op)
            .collect::<Vec<_>>()
    };
    let base = ["optimize", "--model", "m.onnx", "--quantization", "dynamic"];
    let run = |out: &str, extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--output", out, "-q"]);
        args.extend(extra);
        k.ok(&args);
    };
    let kiln_op = "ai.kiln:Int8Linear".to_string();
    run("kiln.onnx", &[]);
    assert!(ops("kiln.onnx").contains(&kiln_op));
    run("tract.onnx", &["--engine", "tract"]);
    assert!(ops("tract.onnx").contains(&kiln_op));
    run("ort.onnx", &["--engine", "ort"]);
    let o = ops("ort.onnx");
    assert!(o.contains(&"MatMulInteger".to_string()), "{o:?}");
    assert!(!o.contains(&kiln_op), "{o:?}");
    run("integer.onnx", &["--onnx-form", "integer"]);
    assert!(ops("integer.onnx").contains(&"MatMulInteger".to_string()));
    run("qdq.onnx", &["--onnx-form", "qdq"]);
    let o = ops("qdq.onnx");
    for op in [
        "DynamicQuantizeLinear",
        "DequantizeLinear",
        "Gemm",
        "MatMul",
    ] {
        assert!(o.contains(&op.to_string()), "{op} missing from {o:?}");
    }
    assert!(!o.contains(&"MatMulInteger".to_string()), "{o:?}");
    // Every form runs in tract and stays close to the float model.
    let x = rows(32);
    let float = scores(&k.path("m.onnx"), EngineKind::Tract.into(), &x, 32);
    for file in ["kiln.onnx", "integer.onnx", "qdq.onnx"] {
        let q = scores(&k.path(file), EngineKind::Tract.into(), &x, 32);
        assert!(
            max_diff(&q, &float) < 0.1,
            "{file}: {}",
            max_diff(&q, &float)
        );
    }
    // Forms that do not exist for a quantization are refused with the way out.
    k.write(
        "cal.csv",
        &format!(
            "{}\n{}\n",
            (0..WIDTH)
                .map(|i| format!("f{i}"))
                .collect::<Vec<_>>()
                .join(","),
            vec!["0.5"; WIDTH].join(",")
        ),
    );
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "bad.onnx",
            "--quantization",
            "weight-only",
            "--onnx-form",
            "kiln",
        ],
        2,
    );
    assert!(err.contains("--quantization dynamic or static"), "{err}");
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "bad.onnx",
            "--onnx-form",
            "int4",
        ],
        2,
    );
    assert!(err.contains("auto, integer, qdq or kiln"), "{err}");
    // Form flags without quantization would do nothing: refused, not ignored.
    for flags in [["--onnx-form", "kiln"], ["--engine", "ort"]] {
        let mut args = vec!["optimize", "--model", "m.onnx", "--output", "bad.onnx"];
        args.extend(flags);
        let err = k.fails(&args, 2);
        assert!(err.contains("add --quantization"), "{err}");
    }
    // kiln's op is asymmetric uint8: symmetric activations are refused for it.
    let err = k.fails(
        &[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            "bad.onnx",
            "--quantization",
            "static",
            "--onnx-form",
            "kiln",
            "--symmetric-activations",
            "--calibration-data",
            "cal.csv",
        ],
        2,
    );
    assert!(err.contains("--symmetric-activations"), "{err}");
    assert!(!k.path("bad.onnx").exists());
}

#[test]
fn bench_measures_int8_beside_float_with_ratios() {
    let k = Kiln::new();
    mlp(&k.path("m.onnx"));
    let out = k.json(&[
        "bench",
        "m.onnx",
        "--int8",
        "--engines",
        "tract",
        "--batch-sizes",
        "1,16",
        "--seconds",
        "0.05",
        "--warmup",
        "2",
    ]);
    let suites = out["suites"].as_array().unwrap();
    let models: Vec<&str> = suites
        .iter()
        .map(|s| s["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["f32", "int8-kiln"], "{out:#}");
    let ratios: Vec<f64> = out["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    // Two batch sizes per model; the float rows are their own best (ratio 1), the int8 rows
    // are measured against them.
    assert_eq!(ratios.len(), 4, "{out:#}");
    assert_eq!(&ratios[..2], &[1.0, 1.0]);
    assert!(ratios[2..].iter().all(|r| *r > 0.0 && r.is_finite()));
    // An int8 model given as such is labelled by its form.
    k.ok(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "q.onnx",
        "--quantization",
        "dynamic",
        "-q",
    ]);
    let out = k.json(&[
        "bench",
        "q.onnx",
        "--engines",
        "tract",
        "--batch-sizes",
        "4",
        "--seconds",
        "0.05",
    ]);
    assert_eq!(out["suites"][0]["model"], "dynamic-kiln", "{out:#}");
}

#[test]
fn dynamic_quantization_takes_per_tensor_weights_in_every_form() {
    let k = Kiln::new();
    mlp(&k.path("m.onnx"));
    let x = rows(32);
    let float = scores(&k.path("m.onnx"), EngineKind::Tract.into(), &x, 32);
    for form in ["kiln", "integer", "qdq"] {
        let out = format!("{form}.onnx");
        let v = k.json(&[
            "optimize",
            "--model",
            "m.onnx",
            "--output",
            &out,
            "--quantization",
            "dynamic",
            "--onnx-form",
            form,
            "--per-tensor-weights",
        ]);
        assert!(
            v["report"]["passes"].to_string().contains("per-tensor"),
            "{v:#}"
        );
        let m = kiln::onnx::load(&k.path(&out)).unwrap();
        let g = m.graph.as_ref().unwrap();
        for t in g
            .initializer
            .iter()
            .filter(|t| t.name().ends_with(".weight_scale"))
        {
            let scales = match kiln::onnx::TensorValue::from_proto(t).unwrap() {
                kiln::onnx::TensorValue::F32(v) => v,
                other => panic!("{other:?}"),
            };
            // One scale per matrix: a scalar, or the op's [N] with every value the same.
            assert!(
                scales.windows(2).all(|w| w[0] == w[1]),
                "{form}: {scales:?}"
            );
            if form != "kiln" {
                assert!(t.dims.is_empty(), "{form}: {:?}", t.dims);
            }
        }
        let q = scores(&k.path(&out), EngineKind::Tract.into(), &x, 32);
        assert!(
            max_diff(&q, &float) < 0.15,
            "{form}: {}",
            max_diff(&q, &float)
        );
    }
}

#[test]
fn static_kiln_op_equals_its_onnx_definition() {
    let k = Kiln::new();
    mlp(&k.path("m.onnx"));
    // Calibration rows: the test rows themselves, as CSV.
    let x = rows(64);
    let mut csv = (0..WIDTH)
        .map(|i| format!("f{i}"))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for r in x.chunks(WIDTH) {
        csv.push_str(
            &r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        csv.push('\n');
    }
    k.write("cal.csv", &csv);
    let out = k.json(&[
        "optimize",
        "--model",
        "m.onnx",
        "--output",
        "s.onnx",
        "--quantization",
        "static",
        "--onnx-form",
        "kiln",
        "--calibration-data",
        "cal.csv",
    ]);
    assert!(
        out["report"]["passes"]
            .to_string()
            .contains("quantize-static-kiln"),
        "{out:#}"
    );
    let q = kiln::onnx::load(&k.path("s.onnx")).unwrap();
    let ops = kiln::onnx::graph::op_counts(q.graph.as_ref().unwrap());
    assert!(
        ops.contains(&("ai.kiln:Int8LinearStatic".to_string(), 2)),
        "{ops:?}"
    );
    assert!(
        ops.contains(&("ai.kiln:Int8LinearStaticRelu".to_string(), 1)),
        "{ops:?}"
    );
    let n = 64;
    let native = scores(&k.path("s.onnx"), EngineKind::Tract.into(), &x, n);
    assert_matches_definition(&k, "s.onnx", 3, &x, &native);
    let float = scores(&k.path("m.onnx"), EngineKind::Tract.into(), &x, n);
    assert!(
        max_diff(&native, &float) < 0.1,
        "{}",
        max_diff(&native, &float)
    );
}
