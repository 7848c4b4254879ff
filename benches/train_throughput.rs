//! Training throughput: samples/s of kiln's trainer (burn, flex CPU backend) on an MLP
//! 784→256→128→10 at batch 64 with Adam, and, in the same run, a NumPy/OpenBLAS implementation
//! of the same model and optimizer (`scripts/numpy_mlp_bench.py`) as the baseline.
//!
//! `cargo bench --bench train_throughput` (numbers in docs/PERFORMANCE.md). The NumPy half needs
//! `.venv` (scripts/setup-python.sh) or `KILN_PYTHON`; without it only kiln is measured.

use criterion::{Criterion, Throughput, criterion_group};

/// The allocator the `kiln` binary uses (src/main.rs), so that the bench measures what `kiln
/// train` does (glibc's allocator against it: docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kiln::core::NullSink;
use kiln::train::{BurnTrainer, TrainConfig};
use std::time::Instant;

const ROWS: usize = 6400;
const BATCH: usize = 64;

fn config() -> TrainConfig {
    TrainConfig {
        hidden: vec![256, 128],
        epochs: 1,
        batch_size: BATCH,
        lr: 1e-3,
        checkpoint_every: 0,
        ..TrainConfig::default()
    }
}

fn data() -> kiln::core::Dataset {
    kiln::data::synthetic::make_classification(ROWS, 784, 10, 20, 1.0, 7)
}

fn bench_train(c: &mut Criterion) {
    let data = data();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("burn flex, MLP 784-256-128-10, batch 64, one epoch", |b| {
        b.iter(|| {
            BurnTrainer::new(config())
                .run(&data, None, &dir.path().join("model"), &mut NullSink)
                .expect("train")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_train);

/// Median samples/s of one epoch, measured here too so that the ratio compares runs made in
/// the same process, minutes apart.
fn kiln_samples_per_second() -> f64 {
    let data = data();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            BurnTrainer::new(config())
                .run(&data, None, &dir.path().join("model"), &mut NullSink)
                .expect("train");
            ROWS as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn numpy_samples_per_second() -> Option<f64> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("KILN_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let out = std::process::Command::new(python)
        .arg(root.join("scripts/numpy_mlp_bench.py"))
        .args(["--rows", &ROWS.to_string(), "--batch", &BATCH.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "numpy baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["samples_per_second"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let kiln = kiln_samples_per_second();
    match numpy_samples_per_second() {
        Some(np) => println!(
            "training throughput, MLP 784-256-128-10, batch {BATCH}, Adam: kiln (burn flex) {kiln:.0} samples/s, NumPy/OpenBLAS {np:.0} samples/s, kiln / NumPy = {:.2}x",
            kiln / np
        ),
        None => println!(
            "training throughput: kiln (burn flex) {kiln:.0} samples/s; NumPy baseline skipped (no Python with numpy)"
        ),
    }
}
