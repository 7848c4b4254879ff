//! Inference speed side by side, in one process run: the MLP 784→256→128→10 in f32 and int8,
//! at batch 1, 8, 64 and 256, in
//!
//! - tract f32 and ONNX Runtime f32 (the engines used directly, through kiln's thin engine layer,
//!   whose overhead `crates/kiln-infer/benches/engine_overhead.rs` bounds);
//! - ONNX Runtime int8 in its own dynamic form (`MatMulInteger`), one thread and all cores;
//! - tract int8 with kiln's `Int8Linear` op (kiln's own SIMD kernel), dynamic (each row its
//!   own scale) and static (`Int8LinearStatic`, calibrated on the validation rows);
//! - tract with one thread and with all cores (tract's `multithread-mm` for its matrix
//!   products, kiln's op splitting large calls);
//! - kiln auto: what `kiln optimize --engine auto` chose (form, engine, threads), loaded the way
//!   `kiln infer --engine auto` loads it.
//!
//! After criterion's report it prints, per batch size, each configuration's median and its ratio
//! to the best direct engine in f32 (`> 1` is faster).
//!
//! Run: `cargo bench --no-default-features --features ort --bench inference`
//! (ONNX Runtime from `scripts/fetch-onnxruntime.sh`, `ORT_DYLIB_PATH` or `KILN_ORT_LIB`;
//! without it the ort rows are skipped with a message).

use criterion::{BenchmarkId, Criterion};
use kiln_infer::{EngineConfig, EngineKind, Model};
use kiln_onnx::proto::data_type::FLOAT;
use kiln_onnx::{Dim, GraphBuilder, attr_int};
use kiln_optimize::{GraphOptimizer, OnnxForm, OptimizeOptions, Quantization};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BATCHES: [usize; 4] = [1, 8, 64, 256];

fn mlp() -> Vec<u8> {
    let mut g = GraphBuilder::new("mlp");
    g.input("x", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(784)]);
    let mut x = "x".to_string();
    let mut state = 12345u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let dims = [784, 256, 128, 10];
    for (i, w) in dims.windows(2).enumerate() {
        // He-scaled uniform weights: activations keep their size through the layers.
        let scale = (6.0 / w[0] as f32).sqrt() * 2.0;
        let weight: Vec<f32> = (0..w[0] * w[1]).map(|_| next() * scale).collect();
        let bias: Vec<f32> = (0..w[1]).map(|_| next() * 0.1).collect();
        let wn = g.constant_f32(&format!("w{i}"), &[w[0], w[1]], &weight);
        let bn = g.constant_f32(&format!("b{i}"), &[w[1]], &bias);
        x = g.node("Gemm", &[&x, &wn, &bn], &[]);
        if i < 2 {
            x = g.node("Relu", &[&x], &[]);
        }
    }
    g.node_named("Softmax", &[&x], &["probabilities"], &[attr_int("axis", 1)]);
    g.output(
        "probabilities",
        FLOAT,
        &[Dim::Symbol("N".into()), Dim::Fixed(10)],
    );
    kiln_onnx::encode(&g.into_model(17))
}

fn rows(n: usize, seed: usize) -> Vec<f32> {
    (0..n * 784)
        .map(|i| (((i + seed) * 7919) % 1000) as f32 / 1000.0)
        .collect()
}

/// Validation rows labelled by the float model itself: accuracy then means agreement with f32.
fn labelled_csv(float: &Path, path: &Path) {
    let model = Model::load(float, EngineKind::Tract).expect("float model loads");
    let width = model.info().input_width.expect("fixed input width");
    let x = rows(512 * width / 784 + 1, 17)[..512 * width].to_vec();
    let preds = model.predict(&x, 512).expect("float model runs");
    let mut out = String::new();
    let names = model.info().feature_names.clone();
    let header: Vec<String> = match names {
        Some(n) if n.len() == width => n,
        _ => (0..width).map(|i| format!("f{i}")).collect(),
    };
    out.push_str(&header.join(","));
    out.push_str(",label\n");
    for (r, p) in preds.iter().enumerate() {
        let row: Vec<String> = x[r * width..(r + 1) * width]
            .iter()
            .map(|v| format!("{v}"))
            .collect();
        out.push_str(&row.join(","));
        out.push_str(&format!(",{}\n", p.class_index.unwrap_or(0)));
    }
    std::fs::write(path, out).expect("write validation rows");
}

fn quantized(float: &Path, dir: &Path, form: OnnxForm) -> PathBuf {
    quantized_with(float, dir, Quantization::Dynamic, form, None)
}

fn quantized_with(
    float: &Path,
    dir: &Path,
    quantization: Quantization,
    form: OnnxForm,
    calibration: Option<&Path>,
) -> PathBuf {
    let out = dir.join(format!("mlp-{quantization:?}-{}.onnx", form.name()));
    GraphOptimizer::new(OptimizeOptions {
        quantization,
        form,
        calibration_data: calibration.map(Path::to_path_buf),
        force: true,
        ..OptimizeOptions::default()
    })
    .run(float, &out, &mut kiln_core::NullSink)
    .expect("quantize");
    out
}

fn ort(threads: usize) -> EngineConfig {
    EngineConfig {
        kind: EngineKind::Ort,
        threads: Some(threads),
        ort_lib: std::env::var_os("KILN_ORT_LIB").map(PathBuf::from),
        ..EngineConfig::default()
    }
}

/// One measured configuration: its name, whether it is a direct f32 engine, the loaded model.
type Configuration = (String, bool, Model);

/// The configurations measured for one model.
fn configurations(name: &str, float: &Path, dir: &Path) -> Vec<Configuration> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("model dir");
    let kiln_int8 = quantized(float, &dir, OnnxForm::Kiln);
    let ort_int8 = quantized(float, &dir, OnnxForm::Integer);
    let validate = dir.join("validate.csv");
    labelled_csv(float, &validate);
    // Static int8 in kiln's form, calibrated on the validation rows.
    let kiln_static = quantized_with(
        float,
        &dir,
        Quantization::Static,
        OnnxForm::Kiln,
        Some(&validate),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut configs: Vec<Configuration> = Vec::new();
    let mut add =
        |name: &str, direct_f32: bool, path: &Path, config: EngineConfig| match Model::load(
            path, config,
        ) {
            Ok(m) => configs.push((name.to_string(), direct_f32, m)),
            Err(e) => eprintln!("skipping {name}: {e}"),
        };
    let tract_x = |threads: usize| EngineConfig {
        threads: Some(threads),
        ..EngineKind::Tract.into()
    };
    add("tract f32", true, float, EngineKind::Tract.into());
    if cores > 1 {
        add(&format!("tract f32 x{cores}"), true, float, tract_x(cores));
    }
    add("ort f32 x1", true, float, ort(1));
    if cores > 1 {
        add(&format!("ort f32 x{cores}"), true, float, ort(cores));
    }
    add(
        "tract int8 (kiln op)",
        false,
        &kiln_int8,
        EngineKind::Tract.into(),
    );
    if cores > 1 {
        add(
            &format!("tract int8 (kiln op) x{cores}"),
            false,
            &kiln_int8,
            tract_x(cores),
        );
    }
    add(
        "tract int8 static (kiln op)",
        false,
        &kiln_static,
        EngineKind::Tract.into(),
    );
    add("ort int8 x1", false, &ort_int8, ort(1));
    if cores > 1 {
        add(&format!("ort int8 x{cores}"), false, &ort_int8, ort(cores));
    }
    // kiln auto: chosen by measurement at batch 64, loaded from the recorded choice.
    let auto_path = dir.join("auto.onnx");
    let auto = kiln_optimize::auto::optimize_auto(
        float,
        &auto_path,
        &kiln_optimize::auto::AutoOptions {
            base: OptimizeOptions {
                validate_data: Some(validate.clone()),
                calibration_data: Some(validate.clone()),
                ..OptimizeOptions::default()
            },
            ort_lib: std::env::var_os("KILN_ORT_LIB").map(PathBuf::from),
            ..Default::default()
        },
        &mut kiln_core::NullSink,
    );
    match auto {
        Ok(r) => {
            let c = r.choice();
            eprintln!(
                "{name}: kiln auto chose {} in {}{}",
                kiln_optimize::auto::variant_name(c.quantization, c.form),
                c.engine,
                c.threads.map(|t| format!(" x{t}")).unwrap_or_default()
            );
            match kiln_infer::choose_engine(&auto_path, 64, &EngineConfig::default()) {
                Ok((config, _)) => add("kiln auto", false, &auto_path, config),
                Err(e) => eprintln!("skipping kiln auto: {e}"),
            }
        }
        Err(e) => eprintln!("skipping kiln auto: {e}"),
    }
    configs
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let synthetic = dir.path().join("mlp784.onnx");
    std::fs::write(&synthetic, mlp()).expect("write model");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/digits_mlp.onnx");
    let models = [("mlp784", synthetic), ("digits", digits)];
    let suites: Vec<(&str, usize, Vec<Configuration>)> = models
        .iter()
        .map(|(name, path)| {
            let width = Model::load(path, EngineKind::Tract)
                .expect("model loads")
                .info()
                .input_width
                .expect("fixed input width");
            (*name, width, configurations(name, path, dir.path()))
        })
        .collect();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    for (name, width, configs) in &suites {
        for batch in BATCHES {
            let x = rows(batch * width / 784 + 1, 3)[..batch * width].to_vec();
            let mut group = c.benchmark_group(format!("{name}_batch{batch}"));
            for (config, _, model) in configs {
                group.bench_with_input(BenchmarkId::from_parameter(config), &batch, |b, &n| {
                    b.iter(|| model.predict(black_box(&x), n).expect("predict"))
                });
            }
            group.finish();
        }
    }
    c.final_summary();
    for (name, _, configs) in &suites {
        ratios(name, configs);
    }
}

/// Reads criterion's medians back and prints the ratio table.
fn ratios(model: &str, configs: &[Configuration]) {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion");
    let median = |group: &str, name: &str| -> Option<f64> {
        // criterion keeps the parameter as the directory name, with '/' and spaces kept.
        let path = root
            .join(group)
            .join(name.replace('/', "_"))
            .join("new/estimates.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    println!("\n{model}: ratio to the best direct f32 engine (time_best / time; > 1 is faster)");
    let mut table: BTreeMap<usize, Vec<(String, f64, f64)>> = BTreeMap::new();
    for batch in BATCHES {
        let group = format!("{model}_batch{batch}");
        let times: Vec<(String, bool, Option<f64>)> = configs
            .iter()
            .map(|(n, d, _)| (n.clone(), *d, median(&group, n)))
            .collect();
        let Some(best) = times
            .iter()
            .filter(|(_, d, _)| *d)
            .filter_map(|(_, _, t)| *t)
            .min_by(f64::total_cmp)
        else {
            println!("batch {batch}: no estimates found under {}", root.display());
            continue;
        };
        for (n, _, t) in times {
            if let Some(t) = t {
                table
                    .entry(batch)
                    .or_default()
                    .push((n, t / 1000.0, best / t));
            }
        }
    }
    println!(
        "{:<24} {}",
        "configuration",
        BATCHES
            .map(|b| format!("{:>20}", format!("batch {b}")))
            .join("")
    );
    for (name, _, _) in configs {
        let cells: Vec<String> = BATCHES
            .iter()
            .map(|b| {
                table
                    .get(b)
                    .and_then(|rows| rows.iter().find(|(n, ..)| n == name))
                    .map(|(_, us, r)| format!("{:>20}", format!("{us:.1} us {r:.2}x")))
                    .unwrap_or_else(|| format!("{:>20}", "-"))
            })
            .collect();
        println!("{name:<24} {}", cells.join(""));
    }
}
