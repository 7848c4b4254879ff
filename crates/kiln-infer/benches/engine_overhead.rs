//! kiln's engine layer against calling tract and ONNX Runtime directly, on the same model
//! (MLP 784→256→128→10, batch 64) in the same run. The goal is a ratio: kiln adds ≤ 5 %.
//!
//! Run: `cargo bench -p kiln-infer --features ort --bench engine_overhead`
//! (ONNX Runtime from `scripts/fetch-onnxruntime.sh` or `ORT_DYLIB_PATH`; without it the ort
//! rows are skipped with a message).

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_core::InferenceEngine;
use kiln_infer::{EngineKind, Model, TractEngine};
use kiln_onnx::proto::data_type::FLOAT;
use kiln_onnx::{Dim, GraphBuilder, attr_int};
use std::hint::black_box;
use std::path::Path;

const BATCH: usize = 64;

fn mlp() -> Vec<u8> {
    let mut g = GraphBuilder::new("mlp");
    g.input("x", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(784)]);
    let mut x = "x".to_string();
    let mut state = 12345u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let dims = [784, 256, 128, 10];
    for (i, w) in dims.windows(2).enumerate() {
        let weight: Vec<f32> = (0..w[0] * w[1]).map(|_| next()).collect();
        let bias: Vec<f32> = (0..w[1]).map(|_| next()).collect();
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

fn input() -> Vec<f32> {
    (0..BATCH * 784)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect()
}

fn tract(c: &mut Criterion) {
    use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, IntoTValue, tvec};
    let bytes = mlp();
    let x = input();
    let mut group = c.benchmark_group("tract_batch64");
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract plan");
    group.bench_function("direct", |b| {
        b.iter(|| {
            let t = tract_onnx::prelude::Tensor::from_shape(&[BATCH, 784], &x).expect("tensor");
            black_box(plan.run(tvec!(t.into_tvalue())).expect("run"))
        })
    });
    let engine = TractEngine::from_bytes(&bytes, Path::new("bench")).expect("engine");
    group.bench_function("kiln_engine", |b| {
        b.iter(|| black_box(engine.run_f32(&[BATCH, 784], &x).expect("run")))
    });
    let model = Model::from_bytes(&bytes, Path::new("bench"), EngineKind::Tract).expect("model");
    group.bench_function("kiln_predict", |b| {
        b.iter(|| black_box(model.predict(&x, BATCH).expect("predict")))
    });
    group.finish();
}

fn ort(c: &mut Criterion) {
    let lib = match kiln_infer::ort_engine::find_library(None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED ort benches: {e}");
            return;
        }
    };
    let bytes = mlp();
    let x = input();
    let config = kiln_infer::EngineConfig {
        kind: EngineKind::Ort,
        ort_lib: Some(lib),
        threads: None,
        provider: Default::default(),
        concurrency: 1,
    };
    // Loading the kiln model first initialises the process-wide ONNX Runtime environment,
    // which the direct session below shares.
    let model = Model::from_bytes(&bytes, Path::new("bench"), config.clone()).expect("model");
    let engine = kiln_infer::ort_engine::OrtEngine::from_bytes(
        &bytes,
        Path::new("bench"),
        &Default::default(),
    )
    .expect("engine");
    let env = kiln_infer::ort_engine::environment(None).expect("environment");
    let mut session = ort::session::Session::builder(env)
        .and_then(|mut b| b.commit_from_memory(&bytes))
        .expect("session");
    let mut group = c.benchmark_group("ort_batch64");
    group.bench_function("direct", |b| {
        b.iter(|| {
            let t = ort::value::Tensor::from_array((vec![BATCH, 784], x.clone())).expect("tensor");
            let out = session.run(ort::inputs![t]).expect("run");
            black_box(out[0].try_extract_tensor::<f32>().expect("f32").1.to_vec())
        })
    });
    group.bench_function("kiln_engine", |b| {
        b.iter(|| black_box(engine.run_f32(&[BATCH, 784], &x).expect("run")))
    });
    group.bench_function("kiln_predict", |b| {
        b.iter(|| black_box(model.predict(&x, BATCH).expect("predict")))
    });
    group.finish();
}

criterion_group!(benches, tract, ort);
criterion_main!(benches);
