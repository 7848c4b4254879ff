//! Streaming inference through a real pipe: each result arrives before the next row is sent,
//! bad rows get error records, and memory stays flat over a long stream.

use crate::util::{Kiln, synthetic_splits};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn trained_model(k: &Kiln, seed: u64) -> Vec<String> {
    let (train, val, test) = synthetic_splits(k, seed);
    k.ok(&[
        "train",
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--out",
        "run",
        "--epochs",
        "3",
        "-q",
    ]);
    k.ok(&["export", "--model", "run/model", "--output", "m.onnx", "-q"]);
    std::fs::read_to_string(test)
        .expect("test csv")
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn each_row_is_answered_before_the_next_arrives() {
    let k = Kiln::new();
    let lines = trained_model(&k, 31);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["infer", "--model", "m.onnx", "--stream", "--warmup", "3"])
        .current_dir(k.path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdin
        .write_all(format!("{}\n", lines[0]).as_bytes())
        .expect("header");
    stdin.flush().expect("flush");
    stdout.read_line(&mut line).expect("header out");
    assert_eq!(line.trim(), "row,label,prob_0,prob_1,prob_2,error");
    // A slow producer: one row at a time, waiting for each answer. If kiln buffered its output,
    // this read would block forever (the test's timeout would catch it).
    for (i, row) in lines[1..6].iter().enumerate() {
        stdin.write_all(format!("{row}\n").as_bytes()).expect("row");
        stdin.flush().expect("flush");
        line.clear();
        stdout.read_line(&mut line).expect("answer");
        assert!(
            line.starts_with(&format!("{i},")),
            "row {i} answered with {line:?}"
        );
        assert!(
            line.trim_end().ends_with(','),
            "no error expected: {line:?}"
        );
    }
    stdin.write_all(b"1,2,not-a-number\n").expect("bad row");
    stdin.flush().expect("flush");
    line.clear();
    stdout.read_line(&mut line).expect("error record");
    assert!(
        line.starts_with("5,,") && line.contains("fields"),
        "{line:?}"
    );
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6 rows streamed") && stderr.contains("p95"),
        "{stderr}"
    );
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// 100k rows through the streaming path: RSS after 100k rows stays within a few MB of RSS after
/// the first 10k (nothing is kept per row).
#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads resident memory from /proc (Linux)"
)]
fn long_stream_keeps_memory_flat() {
    let k = Kiln::new();
    let lines = trained_model(&k, 37);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["infer", "--model", "m.onnx", "--stream", "-q"])
        .current_dir(k.path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().count());
    stdin
        .write_all(format!("{}\n", lines[0]).as_bytes())
        .expect("header");
    let rows = &lines[1..];
    let mut early = None;
    for i in 0..100_000 {
        stdin
            .write_all(rows[i % rows.len()].as_bytes())
            .expect("row");
        stdin.write_all(b"\n").expect("newline");
        if i == 10_000 {
            stdin.flush().expect("flush");
            std::thread::sleep(std::time::Duration::from_millis(200));
            early = rss_kb(pid);
        }
    }
    stdin.flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let late = rss_kb(pid);
    drop(stdin);
    let n = reader.join().expect("reader");
    assert!(child.wait().expect("wait").success());
    assert_eq!(n, 100_001, "header + one line per row");
    let (early, late) = (early.expect("rss"), late.expect("rss"));
    assert!(
        late <= early + 8 * 1024,
        "RSS grew from {early} kB to {late} kB over 90k rows"
    );
}

/// `kiln bench --json` sweeps engines × batch sizes and recommends one; nothing here asserts a
/// time, only the shape of the report.
#[test]
fn bench_reports_every_configuration() {
    let k = Kiln::new();
    trained_model(&k, 41);
    let r = k.json(&[
        "bench",
        "m.onnx",
        "--engines",
        "tract",
        "--batch-sizes",
        "1,16",
        "--seconds",
        "0.05",
        "--warmup",
        "2",
    ]);
    let results = r["report"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for (x, b) in results.iter().zip([1, 16]) {
        assert_eq!(x["engine"], "tract");
        assert_eq!(x["batch_size"], b);
        assert!(x["iterations"].as_u64().expect("iterations") >= 20);
        assert!(x["rows_per_second"].as_f64().expect("rows/s") > 0.0);
        assert!(
            x["latency"]["p99_us"].as_u64().expect("p99")
                >= x["latency"]["p50_us"].as_u64().expect("p50")
        );
    }
    assert!(r["report"]["best_throughput"].as_u64().is_some());
    assert_eq!(r["report"]["best_latency"], 0);
    let err = k.fails(&["bench", "m.onnx", "--batch-sizes", "0"], 2);
    assert!(err.contains("positive"), "{err}");
}

/// Workers run batches in parallel and keep the input order; NaN handling is configurable;
/// warm-up time is reported.
#[test]
fn workers_keep_order_and_non_finite_policy_applies() {
    let k = Kiln::new();
    let lines = trained_model(&k, 43);
    let mut body = lines[0].clone() + "\n";
    for i in 0..1000 {
        body.push_str(&lines[1 + i % (lines.len() - 1)]);
        body.push('\n');
    }
    body.push_str("0.1,0.2,NaN,0.4,0.5,0.6,1\n");
    let data = k.write("big.csv", &body);
    let one = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--output",
        "one.csv",
        "--workers",
        "1",
        "--batch-size",
        "7",
    ]);
    let three = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--output",
        "three.csv",
        "--workers",
        "3",
        "--batch-size",
        "7",
        "--warmup",
        "2",
    ]);
    assert_eq!(
        std::fs::read(k.path("one.csv")).expect("one"),
        std::fs::read(k.path("three.csv")).expect("three")
    );
    assert_eq!(
        one["report"]["failed"], 1,
        "the NaN row is rejected by default"
    );
    assert!(three["warmup_seconds"].as_f64().is_some(), "{three:#}");
    assert!(one["warmup_seconds"].is_null());
    let pass = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--output",
        "pass.csv",
        "--non-finite",
        "pass",
    ]);
    assert_eq!(pass["report"]["failed"], 0, "{pass:#}");
    assert_eq!(pass["report"]["rows"], 1001);
}

/// NPY in (a float64 array saved by NumPy), NPY out (the float32 score matrix, NaN rows for
/// errors), checked against the CSV output of the same rows.
#[test]
fn npy_input_and_output() {
    let py = crate::crosscheck::python();
    let k = Kiln::new();
    let lines = trained_model(&k, 47);
    let csv = k.write("rows.csv", &lines[..21].join("\n"));
    let script = "import numpy as np, sys\n\
                  x = np.loadtxt(sys.argv[1], delimiter=',', skiprows=1)[:, :6]\n\
                  x[3, 2] = np.nan\n\
                  np.save(sys.argv[2], x.astype(np.float32))\n";
    let out = std::process::Command::new(&py)
        .args([
            "-c",
            script,
            csv.to_str().unwrap(),
            k.path("rows.npy").to_str().unwrap(),
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        "rows.npy",
        "--output",
        "scores.npy",
    ]);
    assert_eq!(r["report"]["rows"], 20);
    assert_eq!(r["report"]["failed"], 1);
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        csv.to_str().unwrap(),
        "--output",
        "scores.csv",
    ]);
    let check = "import numpy as np, sys, csv\n\
                 s = np.load(sys.argv[1])\n\
                 assert s.dtype == np.float32 and s.shape == (20, 3), (s.dtype, s.shape)\n\
                 rows = list(csv.reader(open(sys.argv[2])))[1:]\n\
                 for i, r in enumerate(rows):\n\
                 \x20   if i == 3:\n\
                 \x20       assert np.isnan(s[i]).all()\n\
                 \x20   else:\n\
                 \x20       assert np.allclose(s[i], np.array([float(v) for v in r[2:5]], dtype=np.float32), atol=1e-6, rtol=0), (i, s[i], r)\n";
    let out = std::process::Command::new(&py)
        .args([
            "-c",
            check,
            k.path("scores.npy").to_str().unwrap(),
            k.path("scores.csv").to_str().unwrap(),
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--stream --format jsonl`: JSON objects in, one CSV line out per object, errors included.
#[test]
fn jsonl_stream() {
    let k = Kiln::new();
    trained_model(&k, 53);
    let input = "{\"f0\":0.1,\"f1\":0.2,\"f2\":0.3,\"f3\":0.4,\"f4\":0.5,\"f5\":0.6}\n\
                 {\"f0\":1,\"f1\":2}\n\
                 {\"f5\":0.6,\"f4\":0.5,\"f3\":0.4,\"f2\":0.3,\"f1\":0.2,\"f0\":0.1,\"label\":\"2\"}\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "infer",
            "--model",
            "m.onnx",
            "--stream",
            "--input-format",
            "jsonl",
            "-q",
        ])
        .current_dir(k.path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].starts_with("0,") && lines[1].ends_with(','),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("1,,") && lines[2].contains("missing"),
        "{}",
        lines[2]
    );
    // Keys in another order are matched by name: the same row, the same answer.
    assert_eq!(
        lines[3].split_once(',').map(|x| x.1),
        lines[1].split_once(',').map(|x| x.1)
    );
}

/// `kiln profile --json`: nodes slowest first, FLOPs from the model's weights, the CPU peak,
/// and memory figures. No time is asserted.
#[test]
fn profile_reports_nodes_flops_and_memory() {
    let k = Kiln::new();
    trained_model(&k, 67);
    let p = k.json(&[
        "profile",
        "m.onnx",
        "--batch-size",
        "32",
        "--iterations",
        "5",
    ]);
    let prof = &p["profile"];
    let nodes = prof["nodes"].as_array().expect("nodes");
    assert!(!nodes.is_empty());
    let times: Vec<f64> = nodes
        .iter()
        .map(|n| n["mean_us"].as_f64().expect("us"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "slowest first: {times:?}"
    );
    // Default MLP 6 -> 64 -> 64 -> 3 at batch 32: matrix products alone are 2*32*(6*64+64*64+64*3).
    assert!(prof["flops"].as_u64().expect("flops") >= 2 * 32 * (6 * 64 + 64 * 64 + 64 * 3));
    assert!(prof["peak"]["peak_gflops"].as_f64().expect("peak") > 0.0);
    assert_eq!(
        prof["weights_bytes"],
        4 * ((6 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)) + 4 * 2 * 6,
        "weights + standardisation: {prof:#}"
    );
    assert!(prof["activation_bytes"].as_u64().expect("act") > 0);
}

/// `kiln profile --engine ort`: ONNX Runtime's own profiler, per node, with its trace kept.
#[test]
fn profile_in_onnx_runtime_keeps_its_trace() {
    let lib = crate::conformance::ort_lib();
    let k = Kiln::new();
    trained_model(&k, 68);
    let p = k.json(&[
        "profile",
        "m.onnx",
        "--engine",
        "ort",
        "--ort-lib",
        lib.to_str().unwrap(),
        "--batch-size",
        "16",
        "--iterations",
        "4",
        "--trace",
        "trace.json",
    ]);
    let prof = &p["profile"];
    assert_eq!(prof["engine"], "ort");
    let nodes = prof["nodes"].as_array().expect("nodes");
    let ops: Vec<&str> = nodes.iter().map(|n| n["op"].as_str().unwrap()).collect();
    assert!(
        ops.contains(&"Gemm") || ops.contains(&"FusedGemm"),
        "{ops:?}"
    );
    // Matrix products from the weights: 2*16*(6*64+64*64+64*3) at least.
    assert!(prof["flops"].as_u64().unwrap() >= 2 * 16 * (6 * 64 + 64 * 64 + 64 * 3));
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(k.path("trace.json")).unwrap()).unwrap();
    assert!(trace.as_array().is_some_and(|e| !e.is_empty()));
    // The trace options belong to ONNX Runtime.
    let err = k.fails(&["profile", "m.onnx", "--trace", "t.json"], 2);
    assert!(err.contains("--engine ort"), "{err}");
}

/// `kiln bench --leak-check N`: memory stays flat over many predictions.
#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads resident memory from /proc (Linux)"
)]
fn leak_check_passes_on_a_steady_model() {
    let k = Kiln::new();
    trained_model(&k, 97);
    let r = k.json(&[
        "bench",
        "m.onnx",
        "--leak-check",
        "20000",
        "--batch-sizes",
        "16",
    ]);
    let g = r["leak_check"]["growth_percent"].as_f64().expect("growth");
    assert!(g <= 5.0, "RSS grew by {g}% over 20000 predictions: {r:#}");
    assert_eq!(r["leak_check"]["iterations"], 20000);
}

/// `--input-format` applies to files too (here a JSONL file without the extension);
/// `--threads` reaches tract.
#[test]
fn explicit_format_and_threads_flag() {
    let k = Kiln::new();
    trained_model(&k, 101);
    let data = k.write(
        "rows.txt",
        "{\"f0\":0.1,\"f1\":0.2,\"f2\":0.3,\"f3\":0.4,\"f4\":0.5,\"f5\":0.6}\n",
    );
    let r = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--input-format",
        "jsonl",
        "--output",
        "p.csv",
    ]);
    assert_eq!(r["report"]["ok"], 1, "{r:#}");
    // With tract, --threads reaches kiln's int8 op (a float model simply runs as before).
    let r = k.json(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        data.to_str().unwrap(),
        "--input-format",
        "jsonl",
        "--threads",
        "2",
        "--output",
        "p2.csv",
    ]);
    assert_eq!(r["report"]["ok"], 1, "{r:#}");
}
