//! The whole kiln pipeline through the library crates, without the CLI:
//! synthetic data → train (burn) → export (verified ONNX) → int8 → predictions (tract).
//!
//! Run with `cargo run --release --example pipeline`.

use kiln::core::{Exporter, NullSink, Optimizer, Trainer};
use kiln::export::{ExportOptions, OnnxExporter};
use kiln::infer::{EngineKind, Model};
use kiln::optimize::{GraphOptimizer, OptimizeOptions, Quantization};
use kiln::train::{BurnTrainer, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::temp_dir().join("kiln-example-pipeline");
    let data = kiln::data::synthetic::blobs(1200, 4, 3, 1.0, 7);
    let parts = kiln::data::split(&data, 0.8, 0.1, 7);

    let config = TrainConfig {
        epochs: 10,
        hidden: vec![32, 16],
        ..TrainConfig::default()
    };
    let trained = BurnTrainer::new(config).train(
        &parts.train,
        Some(&parts.val),
        &out.join("model"),
        &mut NullSink,
    )?;

    let exporter = OnnxExporter::new(ExportOptions {
        force: true,
        ..ExportOptions::default()
    });
    let onnx = exporter.export(&trained, &out.join("model.onnx"), &mut NullSink)?;

    let optimizer = GraphOptimizer::new(OptimizeOptions {
        quantization: Quantization::Dynamic,
        force: true,
        ..OptimizeOptions::default()
    });
    let int8 = optimizer.optimize(&onnx, &out.join("model.int8.onnx"), &mut NullSink)?;

    let model = Model::load(&int8.path, EngineKind::Tract)?;
    let predictions = model.predict(&parts.test.features, parts.test.rows())?;
    let truth = parts.test.class_indices().unwrap_or_default();
    let correct = predictions
        .iter()
        .zip(truth)
        .filter(|(p, t)| p.class_index == Some(**t as usize))
        .count();
    println!(
        "int8 model {}: test accuracy {:.3} on {} rows",
        int8.path.display(),
        correct as f64 / truth.len() as f64,
        truth.len()
    );
    Ok(())
}
