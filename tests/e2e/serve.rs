//! `kiln serve` as users run it: the real binary on a loopback port, driven by NVIDIA's Triton
//! HTTP client (a client kiln did not write), load-tested with `kiln bench --server`, and
//! stopped with SIGTERM.

use crate::crosscheck::python;
use crate::util::{Kiln, read_csv, trained_and_exported};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `kiln serve`; killed if the test fails before stopping it.
struct Served {
    child: Child,
    addr: String,
    /// The server's log up to its "listening" line.
    started: Vec<String>,
    /// The rest of the server's log (the reader thread keeps draining the pipe).
    _stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(k: &Kiln, args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .current_dir(k.path(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let addr = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    break rest.split(';').next().unwrap_or_default().to_string();
                }
                seen.push(line);
            }
            Err(_) => panic!("kiln serve did not start; stderr so far: {seen:?}"),
        }
    };
    Served {
        child,
        addr,
        started: seen,
        _stderr: rx,
    }
}

fn get(addr: &str, path: &str) -> u16 {
    // A minimal HTTP/1.1 GET, so that this test needs no HTTP client crate of its own.
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn wait_ready(addr: &str) {
    for _ in 0..600 {
        if get(addr, "/v2/health/ready") == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("kiln serve never became ready");
}

/// Fails the test, naming the fix, when the Python lacks the Triton HTTP client.
fn require_triton_client(py: &std::path::Path) {
    let ok = Command::new(py)
        .args(["-c", "import tritonclient.http"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{}",
        crate::crosscheck::missing_tool("tritonclient[http]", "scripts/setup-python.sh")
    );
}

#[test]
fn triton_client_drives_kiln_serve_and_sigterm_drains() {
    let k = Kiln::new();
    let (_, _, test) = trained_and_exported(&k, 11, "5");
    k.ok(&[
        "infer",
        "--model",
        "m.onnx",
        "--data",
        test.to_str().unwrap(),
        "--output",
        "preds.csv",
        "-q",
    ]);
    let (header, cells) = read_csv(&k.path("preds.csv"));
    let prob_cols: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("prob_"))
        .collect();
    let (test_header, test_rows) = read_csv(&test);
    let feature_cols: Vec<usize> = (0..test_header.len())
        .filter(|&i| test_header[i] != "label")
        .collect();
    let rows: Vec<Vec<f32>> = test_rows
        .iter()
        .take(20)
        .map(|r| {
            feature_cols
                .iter()
                .map(|&i| r[i].parse().unwrap())
                .collect()
        })
        .collect();

    let mut s = serve(&k, &["m.onnx", "--name", "demo", "--max-delay-ms", "1"]);
    assert_eq!(get(&s.addr, "/v2/health/live"), 200);
    wait_ready(&s.addr);

    {
        let py = python();
        require_triton_client(&py);
        k.write("rows.json", &serde_json::to_string(&rows).unwrap());
        let out = Command::new(&py)
            .arg(crate::util::repo().join("scripts/triton_client_check.py"))
            .args([
                s.addr.as_str(),
                "demo",
                k.path("rows.json").to_str().unwrap(),
            ])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "triton client failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client json");
        assert_eq!(v["live"], true);
        assert_eq!(v["ready"], true);
        assert_eq!(v["model_ready"], true);
        assert_eq!(v["server"]["name"], "kiln");
        assert_eq!(
            v["model"]["inputs"][0]["shape"][0], -1,
            "dynamic batch is -1"
        );
        assert_eq!(v["json_id"], "42");
        for form in ["binary", "json"] {
            let probs = v[form]["probabilities"].as_array().expect("probabilities");
            let labels = v[form]["label"].as_array().expect("label");
            assert_eq!(probs.len(), rows.len());
            for (r, p) in probs.iter().enumerate() {
                for (c, &col) in prob_cols.iter().enumerate() {
                    let want: f64 = cells[r][col].parse().unwrap();
                    let got = p[c].as_f64().unwrap();
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{form} row {r} class {c}: served {got}, kiln infer {want}"
                    );
                }
                assert_eq!(
                    labels[r].as_i64().unwrap().to_string(),
                    cells[r][1],
                    "{form} row {r} label"
                );
            }
        }
        assert_eq!(v["bad_shape"]["status"], "400");
        assert!(
            v["bad_shape"]["message"]
                .as_str()
                .unwrap()
                .contains("has shape")
        );
    }

    // A bounded load test against the same server: every request answered, batches merged.
    let url = format!("http://{}", s.addr);
    let r = k.json(&[
        "bench",
        "--server",
        &url,
        "--clients",
        "20",
        "--requests",
        "400",
        "--max-seconds",
        "60",
    ]);
    assert_eq!(r["report"]["requests"], 400, "{r:#}");
    assert_eq!(r["report"]["failures"], 0, "{r:#}");
    assert!(r["report"]["latency"]["p95_us"].as_u64().unwrap() > 0);
    assert!(r["report"]["mean_batch_rows"].as_f64().unwrap() >= 1.0);

    // SIGTERM: the server stops cleanly and reports what it served.
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = s.child.wait().expect("wait");
    assert!(status.success(), "kiln serve exit status {status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut s.child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("kiln serve stopped"), "{stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    assert_eq!(
        get(&s.addr, "/v2/health/live"),
        0,
        "nothing listens after shutdown"
    );
}

#[test]
fn serve_refuses_bad_setups_with_clear_errors() {
    let k = Kiln::new();
    trained_and_exported(&k, 12, "2");
    k.ok(&["package", "m.onnx", "--out", "bundle", "-q"]);
    // A verified bundle serves, under its model's name.
    let s = serve(&k, &["bundle", "--warmup-iterations", "1"]);
    wait_ready(&s.addr);
    assert_eq!(
        get(&s.addr, "/v2/models/model"),
        200,
        "a bundle serves under its model file name"
    );
    drop(s);
    // A tampered bundle does not.
    let onnx = k.path("bundle/model.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&onnx, bytes).unwrap();
    let err = k.fails(&["serve", "bundle", "--port", "0"], 1);
    assert!(err.contains("sha256"), "{err}");
    // Bad flags are usage errors that name the fix.
    let err = k.fails(&["serve", "m.onnx", "--host", "localhost:80"], 2);
    assert!(err.contains("--host"), "{err}");
    let err = k.fails(&["serve", "m.onnx", "--max-batch", "0"], 2);
    assert!(err.contains("--max-batch"), "{err}");
    // A port in use is an error naming it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let err = k.fails(&["serve", "m.onnx", "--port", &port], 1);
    assert!(
        err.contains("cannot listen") && err.contains(&port),
        "{err}"
    );
}

/// `kiln serve --provider`: ONNX Runtime on the provider, or a loud warning naming the CPU when
/// the provider is not here (this build has no CUDA), or an error with --strict-provider.
#[test]
fn serve_falls_back_loudly_from_a_missing_provider_or_refuses_when_strict() {
    let k = Kiln::new();
    trained_and_exported(&k, 13, "2");
    let s = serve(&k, &["m.onnx", "--provider", "cuda"]);
    let log = s.started.join("\n");
    assert!(
        log.contains("warning:") && log.contains("cuda:0") && log.contains("running on cpu"),
        "{log}"
    );
    wait_ready(&s.addr);
    drop(s);
    let err = k.fails(
        &[
            "serve",
            "m.onnx",
            "--provider",
            "cuda",
            "--strict-provider",
            "--port",
            "0",
        ],
        2,
    );
    assert!(err.contains("cuda:0"), "{err}");
}
