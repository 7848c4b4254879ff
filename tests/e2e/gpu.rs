//! Training on burn's wgpu backend (feature `wgpu`): the GPU code path, end to end. Where the
//! machine has no GPU, Mesa's lavapipe (Debian's `mesa-vulkan-drivers`, a Vulkan driver that
//! runs on the CPU) is the adapter, so CubeCL still compiles the kernels to SPIR-V and keeps
//! the weights, gradients and optimizer state in device buffers (`scripts/setup-vulkan.sh`).

use crate::resume::weight_gap;
use crate::util::{Kiln, synthetic_splits};

#[test]
fn wgpu_training_matches_cpu_training_and_exports() {
    let k = Kiln::new();
    let (train, val, test) = synthetic_splits(&k, 43);
    let (train, val, test) = (
        train.to_string_lossy().into_owned(),
        val.to_string_lossy().into_owned(),
        test.to_string_lossy().into_owned(),
    );
    for (out, devices) in [("cpu", "cpu"), ("gpu", "wgpu:cpu")] {
        k.ok(&[
            "train",
            "--data",
            &train,
            "--val-data",
            &val,
            "--test-data",
            &test,
            "--out",
            out,
            "--epochs",
            "4",
            "--seed",
            "5",
            "--devices",
            devices,
            "-q",
        ]);
    }
    let metrics = |run: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(k.path(&format!("{run}/metrics.json"))).unwrap())
            .unwrap()
    };
    let (cpu, gpu) = (metrics("cpu"), metrics("gpu"));
    // The strategy names the adapter the device really opened: lavapipe calls itself llvmpipe.
    let strategy = gpu["strategy"].as_str().unwrap();
    assert!(
        strategy.starts_with("single-device (wgpu:cpu); wgpu:cpu = llvmpipe"),
        "{gpu:#}"
    );
    // Same seed, same initial weights and batches: the device changes only the float
    // summation order, so the trained weights agree closely.
    let diff = weight_gap(&k, "cpu", "gpu");
    assert!(diff < 1e-3, "wgpu and cpu training differ by {diff}");
    let acc = |m: &serde_json::Value| m["test"]["accuracy"].as_f64().unwrap();
    assert!(acc(&gpu) > 0.9, "{gpu:#}");
    assert!((acc(&gpu) - acc(&cpu)).abs() <= 0.02, "{cpu:#}\n{gpu:#}");
    // The model trained on the device exports like any other.
    k.ok(&[
        "export",
        "--model",
        "gpu/model",
        "--output",
        "gpu.onnx",
        "-q",
    ]);
    // An adapter that is not there is an error that names the device, not a CPU run.
    let err = k.fails(
        &[
            "train",
            "--data",
            &train,
            "--out",
            "x",
            "--devices",
            "wgpu:7",
        ],
        2,
    );
    assert!(
        err.contains("wgpu:7") && err.contains("not usable"),
        "{err}"
    );
}
