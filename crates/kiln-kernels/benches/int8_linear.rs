//! The int8 linear kernel on each instruction set this CPU has, for the first layer of the
//! MLP 784→256→128→10 at batch 1, 64 and 256, next to a straightforward f32 loop of the same
//! shape (the engine-level comparison against tract f32 is in kiln-infer's benches).
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln_kernels::{Int8Linear, Isa, quantize_weights_i8};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let (k, n) = (784usize, 256usize);
    let wf: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let (w, ws) = quantize_weights_i8(&wf, k, n);
    let mut group = c.benchmark_group("int8_linear_784x256");
    for m in [1usize, 64, 256] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 97) as f32 / 97.0).collect();
        let mut y = vec![0.0f32; m * n];
        for isa in Isa::all_available() {
            let layer = Int8Linear::with_isa(&w, k, n, ws.clone(), None, isa).expect("pack");
            group.bench_with_input(BenchmarkId::new(isa.name(), m), &m, |b, &m| {
                b.iter(|| layer.forward(black_box(&x), m, &mut y).expect("forward"))
            });
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores > 1 {
            let layer = Int8Linear::new(&w, k, n, ws.clone(), None)
                .expect("pack")
                .with_threads(cores);
            let id = format!("{}-x{cores}", layer.isa().name());
            group.bench_with_input(BenchmarkId::new(id, m), &m, |b, &m| {
                b.iter(|| layer.forward(black_box(&x), m, &mut y).expect("forward"))
            });
        }
    }
    group.finish();
}

/// The first layer of kiln's digits MLP (64→64) at batch 64: a shape where fixed costs, not
/// multiply-adds, decide.
fn small(c: &mut Criterion) {
    let (k, n, m) = (64usize, 64usize, 64usize);
    let wf: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let (w, ws) = quantize_weights_i8(&wf, k, n);
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32).collect();
    let mut y = vec![0.0f32; m * n];
    let mut group = c.benchmark_group("int8_linear_64x64");
    for isa in Isa::all_available() {
        let layer = Int8Linear::with_isa(&w, k, n, ws.clone(), None, isa).expect("pack");
        group.bench_with_input(BenchmarkId::new(isa.name(), m), &m, |b, &m| {
            b.iter(|| layer.forward(black_box(&x), m, &mut y).expect("forward"))
        });
        // The static form: a calibrated activation scale and zero point instead of per-row ones.
        let layer = layer
            .with_static_activation(16.0 / 255.0, 0)
            .expect("static");
        let id = format!("{}-static", isa.name());
        group.bench_with_input(BenchmarkId::new(id, m), &m, |b, &m| {
            b.iter(|| layer.forward(black_box(&x), m, &mut y).expect("forward"))
        });
    }
    group.finish();
}

/// Softmax over 64 rows of 10 classes, the output layer of a classifier batch.
fn softmax(c: &mut Criterion) {
    let mut x: Vec<f32> = (0..640).map(|i| (i % 17) as f32 * 0.3 - 2.0).collect();
    c.bench_function("softmax_rows_64x10", |b| {
        b.iter(|| kiln_kernels::softmax_rows(black_box(&mut x), 10))
    });
}

criterion_group!(benches, bench, small, softmax);
criterion_main!(benches);
