//! kiln as a library on a real CSV file (UCI Iris, shipped in `data/iris/`): train with burn,
//! export a verified ONNX model, then embed inference and score the held-out rows.
//!
//! Run with `cargo run --release --example iris`. The inference part alone, as a program that
//! depends on `kiln` with `default-features = false` would write it, is the last block.

use kiln::core::{NullSink, Trainer};
use kiln::export::{ExportOptions, OnnxExporter};
use kiln::train::{BurnTrainer, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/iris");
    let out = std::env::temp_dir().join("kiln-example-iris");

    // Train and export: the validation file is read with the training classes, so its class
    // indices line up with the model's even if it lacks a class.
    let train = kiln::data::load_dataset(&dir.join("train.csv"), "label", None)?;
    let val = kiln::data::load_dataset(&dir.join("val.csv"), "label", train.class_names())?;
    let config = TrainConfig {
        epochs: 60,
        lr: 0.01,
        batch_size: 16,
        hidden: vec![32, 16],
        ..TrainConfig::default()
    };
    let trained =
        BurnTrainer::new(config).train(&train, Some(&val), &out.join("model"), &mut NullSink)?;
    let exporter = OnnxExporter::new(ExportOptions {
        force: true,
        ..ExportOptions::default()
    });
    let onnx =
        kiln::core::Exporter::export(&exporter, &trained, &out.join("iris.onnx"), &mut NullSink)?;

    // Embed inference: load the model, read a CSV, score it.
    let model = kiln::infer::Model::load(&onnx.path, kiln::infer::EngineKind::Tract)?;
    let test = kiln::data::load_dataset(&dir.join("test.csv"), "label", None)?;
    let eval = model.evaluate(&test)?;
    let report = eval.classification.ok_or("the test file has no labels")?;
    println!(
        "{}: test accuracy {:.3} on {} rows (macro F1 {:.3})",
        onnx.path.display(),
        report.accuracy,
        report.rows,
        report.macro_f1
    );
    Ok(())
}
