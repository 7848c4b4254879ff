//! A tiny model shared by the batcher tests.

use kiln_infer::{EngineKind, Model};
use kiln_onnx::proto::data_type::FLOAT;
use kiln_onnx::{Dim, GraphBuilder, attr_int};
use std::sync::Arc;

/// MatMul (3 → 4) + Softmax, dynamic batch.
pub fn model() -> Arc<Model> {
    let mut g = GraphBuilder::new("mlp");
    g.input("x", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(3)]);
    let w = g.constant_f32(
        "w",
        &[3, 4],
        &[
            0.5, -1.0, 2.0, 0.1, 0.3, 0.2, -0.7, 1.1, -0.4, 0.9, 0.05, -0.6,
        ],
    );
    let y = g.node("MatMul", &["x", &w], &[]);
    g.node_named("Softmax", &[&y], &["probabilities"], &[attr_int("axis", 1)]);
    g.output(
        "probabilities",
        FLOAT,
        &[Dim::Symbol("N".into()), Dim::Fixed(4)],
    );
    let bytes = kiln_onnx::encode(&g.into_model(17));
    Arc::new(
        Model::from_bytes(&bytes, std::path::Path::new("<test>"), EngineKind::Tract)
            .expect("model"),
    )
}
