//! Export speed: a 1 M-parameter MLP (784→1024→256→10, 1.07 M weights) from its trained-model
//! directory to ONNX, with and without the verification run in tract.
//!
//! Run: `cargo bench -p kiln-export --bench export`

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_core::{ModelMetadata, ModelSpec, Normalization, NullSink, Reference, Task, TrainedModel};
use kiln_export::{ExportOptions, OnnxExporter};
use std::hint::black_box;

fn artifact(dir: &std::path::Path) -> TrainedModel {
    let spec = ModelSpec::mlp(784, &[1024, 256], 10, 0.0);
    let mut state = 7u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05
    };
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in &spec.layers {
        if let kiln_core::LayerSpec::Linear {
            name,
            in_features,
            out_features,
        } = l
        {
            let w: Vec<u8> = (0..in_features * out_features)
                .flat_map(|_| next().to_le_bytes())
                .collect();
            let b: Vec<u8> = (0..*out_features)
                .flat_map(|_| next().to_le_bytes())
                .collect();
            bytes.push((
                format!("{name}.weight"),
                vec![*in_features, *out_features],
                w,
            ));
            bytes.push((format!("{name}.bias"), vec![*out_features], b));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("view"),
            )
        })
        .collect();
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("weights.safetensors"),
        safetensors::serialize(views, None).expect("serialize"),
    )
    .expect("write");
    let metadata = ModelMetadata {
        task: Task::Classification,
        class_names: (0..10).map(|c| c.to_string()).collect(),
        feature_names: (0..784).map(|j| format!("p{j}")).collect(),
        target: "label".into(),
        normalization: Some(Normalization {
            mean: vec![0.0; 784],
            std: vec![1.0; 784],
        }),
        target_normalization: None,
        kiln_version: "bench".into(),
        burn_version: "none".into(),
        created_unix: 0,
        training: serde_json::Value::Null,
        weights_sha256: String::new(),
    };
    // Reference outputs are what the exported model computes, so verification passes; the bench
    // measures its cost, not its verdict.
    let m = TrainedModel {
        dir: dir.to_path_buf(),
        spec,
        metadata,
        reference: None,
    };
    m.save_json_parts().expect("save");
    let out = dir.join("probe.onnx");
    OnnxExporter::new(ExportOptions {
        verify: false,
        force: true,
        ..ExportOptions::default()
    })
    .run(&m, &out, &mut NullSink)
    .expect("probe export");
    let inputs: Vec<Vec<f32>> = (0..8)
        .map(|r| {
            (0..784)
                .map(|j| ((r * 31 + j) % 17) as f32 / 17.0)
                .collect()
        })
        .collect();
    let model = kiln_infer::Model::load(&out, kiln_infer::EngineKind::Tract).expect("load");
    let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
    let outputs = model
        .predict(&flat, 8)
        .expect("predict")
        .into_iter()
        .map(|p| p.scores)
        .collect();
    let m = TrainedModel {
        reference: Some(Reference { inputs, outputs }),
        ..m
    };
    m.save_json_parts().expect("save");
    TrainedModel::load(dir).expect("load")
}

fn export(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = artifact(&dir.path().join("model"));
    let out = dir.path().join("m.onnx");
    let mut group = c.benchmark_group("export_mlp_1m_params");
    group.sample_size(20);
    let fast = OnnxExporter::new(ExportOptions {
        verify: false,
        force: true,
        ..ExportOptions::default()
    });
    group.bench_function("build_and_write", |b| {
        b.iter(|| black_box(fast.run(&model, &out, &mut NullSink).expect("export")))
    });
    let verified = OnnxExporter::new(ExportOptions {
        force: true,
        ..ExportOptions::default()
    });
    group.bench_function("build_verify_write", |b| {
        b.iter(|| black_box(verified.run(&model, &out, &mut NullSink).expect("export")))
    });
    group.finish();
}

criterion_group!(benches, export);
criterion_main!(benches);
