//! Embedding `kiln-infer`: load an ONNX model, predict a few rows, print them.
//!
//! Run with `cargo run --release --example infer -- model.onnx` on a model from
//! `kiln pipeline --demo --out runs/demo` (then `runs/demo/model.onnx`).

use kiln::infer::{EngineKind, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "runs/demo/model.onnx".into());
    let model = Model::load(&path, EngineKind::Tract)?;
    let width = model
        .info()
        .input_width
        .ok_or("the model's input width is not fixed")?;
    // Three rows of zeros, ones and twos, one value per feature.
    let rows: Vec<f32> = (0..3)
        .flat_map(|r| std::iter::repeat_n(r as f32, width))
        .collect();
    for (i, p) in model.predict(&rows, 3)?.iter().enumerate() {
        println!("row {i}: label {} scores {:?}", p.label, p.scores);
    }
    Ok(())
}
