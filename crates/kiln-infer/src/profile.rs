//! Per-node profiling of a model: in tract, time per node of the optimized plan; in ONNX
//! Runtime (feature `ort`), its own profiler's trace. Estimated FLOPs, achieved GFLOP/s against
//! this CPU's theoretical peak, and memory figures.

use crate::{InferError, ModelInfo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

/// One node of tract's optimized plan.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProfile {
    /// tract's node name (tract renames and fuses ONNX nodes when it optimizes).
    pub name: String,
    /// tract's operator name.
    pub op: String,
    /// Mean time per run, microseconds.
    pub mean_us: f64,
    /// Share of the total node time.
    pub share: f64,
    /// Estimated floating-point operations per run.
    pub flops: u64,
    /// Achieved GFLOP/s on this node.
    pub gflops: f64,
}

/// This CPU's theoretical f32 peak, as kiln estimates it.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPeak {
    /// Logical cores.
    pub cores: usize,
    /// Widest SIMD kiln detected (`avx512f`, `avx2+fma`, `sse2`, `neon`, `scalar`).
    pub simd: String,
    /// f32 FLOPs per cycle per core (two FMA units × lanes × 2).
    pub flops_per_cycle: u32,
    /// Clock in GHz from /proc/cpuinfo (2.5 assumed when unknown).
    pub ghz: f64,
    /// cores × flops/cycle × GHz.
    pub peak_gflops: f64,
}

/// A whole profile.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The engine profiled: `tract` (its plan, node by node) or `ort` (ONNX Runtime's own
    /// profiler).
    pub engine: &'static str,
    /// ONNX Runtime's trace file (Chrome trace JSON, for chrome://tracing or Perfetto), when
    /// it was kept.
    pub trace: Option<std::path::PathBuf>,
    /// Rows per run.
    pub batch_size: usize,
    /// Measured runs.
    pub iterations: usize,
    /// Nodes, slowest first.
    pub nodes: Vec<NodeProfile>,
    /// Mean time of a whole run, microseconds.
    pub run_mean_us: f64,
    /// Estimated FLOPs of a whole run.
    pub flops: u64,
    /// Achieved GFLOP/s over whole runs.
    pub gflops: f64,
    /// The CPU's estimated peak.
    pub peak: CpuPeak,
    /// Achieved / peak.
    pub peak_fraction: f64,
    /// Bytes of constant weights in the ONNX file.
    pub weights_bytes: u64,
    /// Bytes of all node outputs of one run at this batch size (an upper bound on activation
    /// memory).
    pub activation_bytes: u64,
    /// Peak resident memory of this process so far (VmHWM), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Detects the CPU's cores, SIMD width and clock.
pub fn cpu_peak() -> CpuPeak {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_arch = "x86_64")]
    let (simd, per_cycle) = if std::arch::is_x86_feature_detected!("avx512f") {
        ("avx512f", 64)
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        ("avx2+fma", 32)
    } else {
        ("sse2", 8)
    };
    #[cfg(target_arch = "aarch64")]
    let (simd, per_cycle) = ("neon", 16);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let (simd, per_cycle) = ("scalar", 2);
    let ghz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|mhz| mhz / 1000.0)
        .unwrap_or(2.5);
    CpuPeak {
        cores,
        simd: simd.into(),
        flops_per_cycle: per_cycle,
        ghz,
        peak_gflops: cores as f64 * per_cycle as f64 * ghz,
    }
}

fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Bytes of the model's initializers.
fn weights_bytes(proto: &kiln_onnx::proto::ModelProto) -> u64 {
    proto
        .graph
        .iter()
        .flat_map(|g| g.initializer.iter())
        .map(|t| {
            t.raw_data.as_ref().map_or(0, |r| r.len() as u64)
                + 4 * (t.float_data.len() + t.int32_data.len()) as u64
                + 8 * (t.int64_data.len() + t.double_data.len()) as u64
        })
        .sum()
}

/// Every matrix product with a constant 2-D weight: `(ONNX node name, K, N)`.
fn products(proto: &kiln_onnx::proto::ModelProto) -> Vec<(String, usize, usize)> {
    let Some(g) = proto.graph.as_ref() else {
        return Vec::new();
    };
    g.node
        .iter()
        .filter(|n| {
            matches!(n.op_type(), "Gemm" | "MatMul" | "MatMulInteger")
                || kiln_onnx::int8::is_int8_linear(n)
        })
        .filter_map(|n| {
            // kiln's static op takes its weight after the activation scale and zero point.
            let w = if n.op_type().starts_with(kiln_onnx::int8::OP_STATIC) {
                3
            } else {
                1
            };
            let t = n
                .input
                .get(w)
                .and_then(|w| kiln_onnx::graph::initializer(g, w))
                .filter(|t| t.dims.len() == 2)?;
            let trans = kiln_onnx::graph::attr_i(n, "transB", 0) != 0;
            let (k, nn) = if trans {
                (t.dims[1], t.dims[0])
            } else {
                (t.dims[0], t.dims[1])
            };
            Some((n.name().to_string(), k as usize, nn as usize))
        })
        .collect()
}

/// The inner dimension K of the matrix products by their output width N. tract's profile
/// names fused nodes, not the operands of its matrix products, so K is taken from the ONNX
/// weights instead; two products with the same N but different K are marked ambiguous (0)
/// rather than guessed.
fn inner_dims(proto: &kiln_onnx::proto::ModelProto) -> std::collections::HashMap<usize, usize> {
    let mut map = std::collections::HashMap::new();
    for (_, k, n) in products(proto) {
        let e = map.entry(n).or_insert(k);
        if *e != k {
            *e = 0;
        }
    }
    map
}

/// FLOPs of one run of the ONNX graph at `batch` rows: 2·M·N·K per matrix product with a
/// constant weight (exact), plus one per output element of the other nodes (counted in tract).
fn product_flops(proto: &kiln_onnx::proto::ModelProto, batch: usize) -> u64 {
    products(proto)
        .iter()
        .map(|(_, k, n)| 2 * (batch * k * n) as u64)
        .sum()
}

/// Matrix products cost 2·M·N·K; everything else one operation per output element.
fn flops(op: &str, outputs: &[TValue], inner: &std::collections::HashMap<usize, usize>) -> u64 {
    let out: u64 = outputs.iter().map(|o| o.len() as u64).sum();
    let lower = op.to_lowercase();
    let is_product = (lower.contains("matmul")
        || lower.contains("gemm")
        || lower.contains("einsum")
        || lower.contains("int8linear"))
        && !lower.contains("pack");
    match outputs
        .first()
        .and_then(|o| o.shape().last())
        .and_then(|n| inner.get(n))
    {
        Some(&k) if is_product => 2 * out * k as u64,
        _ => out,
    }
}

/// Profiles `iterations` runs of the model at `batch_size` rows (synthetic rows around its
/// standardisation statistics) with tract.
pub fn profile(path: &Path, batch_size: usize, iterations: usize) -> Result<Profile, InferError> {
    let load = |e: TractError| InferError::Load {
        path: path.to_path_buf(),
        engine: "tract",
        reason: format!("{e:#}"),
    };
    let run = |e: TractError| InferError::Run {
        engine: "tract",
        reason: format!("{e:#}"),
    };
    let mut proto = kiln_onnx::load(path)?;
    let info = ModelInfo::from_proto(&proto)?;
    crate::tract_engine::prepare(&mut proto);
    let inner = inner_dims(&proto);
    let weights_bytes = weights_bytes(&proto);
    let bytes = kiln_onnx::encode(&proto);
    let plan = crate::tract_engine::framework(1)
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_optimized())
        .and_then(|mut m| {
            crate::row_ops::replace_slow_ops(&mut m)?;
            m.into_runnable()
        })
        .map_err(load)?;
    let x = crate::synthetic_rows(&info, batch_size.max(1), 0x6b696c6e)?;
    let width = x.len() / batch_size.max(1);
    let input = tract_onnx::prelude::Tensor::from_shape(&[batch_size.max(1), width], &x)
        .map_err(|e| InferError::Input(format!("{e:#}")))?;
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan).map_err(run)?;
    let mut per_node: BTreeMap<usize, (String, String, Duration, u64, u64)> = BTreeMap::new();
    let mut total = Duration::ZERO;
    let iterations = iterations.max(1);
    for i in 0..=iterations {
        let t0 = Instant::now();
        // The first run warms caches and is not counted.
        let measured = i > 0;
        state
            .run_plan_with_eval(
                tvec!(input.clone().into_tvalue()),
                |ctx, st, node, inputs| {
                    let t = Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                    let d = t.elapsed();
                    if measured && let Ok(out) = &r {
                        let e = per_node.entry(node.id).or_insert_with(|| {
                            (
                                node.name.clone(),
                                node.op().name().to_string(),
                                Duration::ZERO,
                                0,
                                0,
                            )
                        });
                        e.2 += d;
                        e.3 = flops(&e.1, out, &inner);
                        e.4 = out
                            .iter()
                            .map(|o| (o.len() * o.datum_type().size_of()) as u64)
                            .sum();
                    }
                    r
                },
            )
            .map_err(run)?;
        if measured {
            total += t0.elapsed();
        }
    }
    let node_total: f64 = per_node.values().map(|v| v.2.as_secs_f64()).sum();
    let mut nodes: Vec<NodeProfile> = per_node
        .values()
        .map(|(name, op, d, fl, _)| {
            let mean = d.as_secs_f64() / iterations as f64;
            NodeProfile {
                name: name.clone(),
                op: op.clone(),
                mean_us: mean * 1e6,
                share: if node_total > 0.0 {
                    d.as_secs_f64() / node_total
                } else {
                    0.0
                },
                flops: *fl,
                gflops: if mean > 0.0 {
                    *fl as f64 / mean / 1e9
                } else {
                    0.0
                },
            }
        })
        .collect();
    nodes.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
    let run_mean = total.as_secs_f64() / iterations as f64;
    // Matrix products exactly from the ONNX weights; other ops by their output elements.
    let elementwise: u64 = nodes
        .iter()
        .filter(|n| !n.op.to_lowercase().contains("matmul"))
        .map(|n| n.flops)
        .sum();
    let flops_total = product_flops(&proto, batch_size.max(1)) + elementwise;
    let gflops = if run_mean > 0.0 {
        flops_total as f64 / run_mean / 1e9
    } else {
        0.0
    };
    let peak = cpu_peak();
    Ok(Profile {
        engine: "tract",
        trace: None,
        batch_size: batch_size.max(1),
        iterations,
        run_mean_us: run_mean * 1e6,
        flops: flops_total,
        gflops,
        peak_fraction: gflops / peak.peak_gflops.max(1e-9),
        peak,
        nodes,
        weights_bytes,
        activation_bytes: per_node.values().map(|v| v.4).sum(),
        peak_rss_bytes: peak_rss(),
    })
}

/// Profiles `iterations` runs of the model at `batch_size` rows in ONNX Runtime with its own
/// profiler: per-node kernel times from its trace (the first, warm-up run dropped), FLOPs of
/// matrix products from the ONNX weights and one per output element elsewhere. The trace is
/// written (atomically) to `trace` when given; ONNX Runtime's own file is always deleted.
#[cfg(feature = "ort")]
pub fn profile_ort(
    path: &Path,
    batch_size: usize,
    iterations: usize,
    opts: &crate::ort_engine::OrtOptions,
    trace: Option<&Path>,
) -> Result<Profile, InferError> {
    use kiln_core::InferenceEngine;
    let proto = kiln_onnx::load(path)?;
    let info = ModelInfo::from_proto(&proto)?;
    let bytes = kiln_onnx::encode(&proto);
    let batch = batch_size.max(1);
    let iterations = iterations.max(1);
    let prefix = std::env::temp_dir().join(format!("kiln-ort-profile-{}", std::process::id()));
    let engine = crate::ort_engine::OrtEngine::from_bytes(
        &bytes,
        path,
        &crate::ort_engine::OrtOptions {
            sessions: 1,
            profiling: Some(prefix),
            ..opts.clone()
        },
    )?;
    let x = crate::synthetic_rows(&info, batch, 0x6b696c6e)?;
    let shape = [batch, x.len() / batch];
    engine.run_f32(&shape, &x)?;
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        let t = Instant::now();
        engine.run_f32(&shape, &x)?;
        total += t.elapsed();
    }
    let file = engine.end_profiling()?;
    drop(engine);
    let read = |e: String| InferError::Run {
        engine: "ort",
        reason: format!("reading the profile {}: {e}", file.display()),
    };
    let text = std::fs::read_to_string(&file).map_err(|e| read(e.to_string()));
    // ONNX Runtime wrote it under the temporary directory; kiln keeps a copy only when asked.
    let _ = std::fs::remove_file(&file);
    let text = text?;
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
    // node → (op, kernel durations in µs, output bytes)
    let mut per_node: BTreeMap<String, (String, Vec<f64>, u64)> = BTreeMap::new();
    for e in &events {
        let Some(name) = e["name"]
            .as_str()
            .filter(|_| e["cat"] == "Node")
            .and_then(|n| n.strip_suffix("_kernel_time"))
        else {
            continue;
        };
        let entry = per_node.entry(name.to_string()).or_insert_with(|| {
            (
                e["args"]["op_name"].as_str().unwrap_or("?").to_string(),
                Vec::new(),
                0,
            )
        });
        entry.1.push(e["dur"].as_f64().unwrap_or(0.0));
        entry.2 = e["args"]["output_size"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .or_else(|| e["args"]["output_size"].as_u64())
            .unwrap_or(0);
    }
    let products: BTreeMap<String, u64> = products(&proto)
        .into_iter()
        .map(|(name, k, n)| (name, 2 * (k * n) as u64))
        .collect();
    let mut nodes: Vec<NodeProfile> = per_node
        .iter()
        .map(|(name, (op, durs, out_bytes))| {
            // One event per run: drop the warm-up run's.
            let measured = if durs.len() > iterations {
                &durs[durs.len() - iterations..]
            } else {
                &durs[..]
            };
            let mean_us = measured.iter().sum::<f64>() / measured.len().max(1) as f64;
            // ONNX Runtime names a node it fused "fused <first node>".
            let flops = products
                .get(name.strip_prefix("fused ").unwrap_or(name))
                .map(|kn| kn * batch as u64)
                .unwrap_or(out_bytes / 4);
            NodeProfile {
                name: name.clone(),
                op: op.clone(),
                mean_us,
                share: 0.0,
                flops,
                gflops: if mean_us > 0.0 {
                    flops as f64 / mean_us / 1e3
                } else {
                    0.0
                },
            }
        })
        .collect();
    let node_total: f64 = nodes.iter().map(|n| n.mean_us).sum();
    for n in &mut nodes {
        n.share = if node_total > 0.0 {
            n.mean_us / node_total
        } else {
            0.0
        };
    }
    nodes.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
    let run_mean = total.as_secs_f64() / iterations as f64;
    let flops_total: u64 = nodes.iter().map(|n| n.flops).sum();
    let gflops = if run_mean > 0.0 {
        flops_total as f64 / run_mean / 1e9
    } else {
        0.0
    };
    let kept = match trace {
        Some(to) => {
            kiln_core::fsutil::write_atomic(to, text.as_bytes())?;
            Some(to.to_path_buf())
        }
        None => None,
    };
    let weights_bytes = weights_bytes(&proto);
    let peak = cpu_peak();
    Ok(Profile {
        engine: "ort",
        trace: kept,
        batch_size: batch,
        iterations,
        run_mean_us: run_mean * 1e6,
        flops: flops_total,
        gflops,
        peak_fraction: gflops / peak.peak_gflops.max(1e-9),
        peak,
        activation_bytes: per_node.values().map(|v| v.2).sum(),
        nodes,
        weights_bytes,
        peak_rss_bytes: peak_rss(),
    })
}
