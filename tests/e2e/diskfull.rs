//! A full disk, for real: a small tmpfs is mounted (this needs root, which the CI machine has;
//! built as another user, the test is ignored and the runner reports it as skipped) and filled, then export, infer, optimize and
//! train write into it. Each must fail with a clear "no space" error, leave the previous file
//! exactly as it was, and leave no temporary file behind.

use crate::util::{Kiln, trained_and_exported};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs to simulate a full disk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(dir)
    }

    /// Fills the file system, leaving about `leave` bytes free.
    fn fill(&self, leave: u64) {
        let mut left = free_bytes(&self.0);
        let mut i = 0;
        while left > leave + 4096 {
            let chunk = (left - leave).min(1 << 20) as usize;
            let path = self.0.join(format!("filler-{i}"));
            if std::fs::write(&path, vec![0u8; chunk]).is_err() {
                break;
            }
            i += 1;
            left = free_bytes(&self.0);
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".kiln-tmp") || n.starts_with(".kiln-"))
        .collect()
}

#[test]
#[cfg_attr(
    not(kiln_test_as_root),
    ignore = "mounting a tmpfs needs root: run the tests as root to include this one"
)]
fn a_full_disk_fails_cleanly_and_keeps_the_old_files() {
    let k = Kiln::new();
    let (train, _, test) = trained_and_exported(&k, 58, "2");
    let fs = Tmpfs::mount(k.path("full"), "256k");
    let dir = fs.0.clone();
    // Earlier results, then a disk with almost nothing left.
    let old_model = b"an earlier model that must survive".to_vec();
    let old_preds = b"row,label\n0,earlier\n".to_vec();
    std::fs::write(dir.join("m.onnx"), &old_model).expect("seed");
    std::fs::write(dir.join("p.csv"), &old_preds).expect("seed");
    fs.fill(2048);
    let path = |n: &str| dir.join(n).to_string_lossy().to_string();

    let cases: Vec<Vec<String>> = vec![
        vec![
            "export".into(),
            "--model".into(),
            "run/model".into(),
            "--output".into(),
            path("m.onnx"),
            "--force".into(),
        ],
        vec![
            "infer".into(),
            "--model".into(),
            "m.onnx".into(),
            "--data".into(),
            test.to_string_lossy().to_string(),
            "--output".into(),
            path("p.csv"),
            "--force".into(),
        ],
        vec![
            "optimize".into(),
            "--model".into(),
            "m.onnx".into(),
            "--output".into(),
            path("m.onnx"),
            "--force".into(),
            "--quantization".into(),
            "dynamic".into(),
        ],
    ];
    for args in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = k.run(&a);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "kiln {}:\n{stderr}",
            a.join(" ")
        );
        assert!(
            stderr.contains("No space left on device"),
            "kiln {} should name the cause:\n{stderr}",
            a.join(" ")
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            std::fs::read(dir.join("m.onnx")).expect("old model"),
            old_model
        );
        assert_eq!(
            std::fs::read(dir.join("p.csv")).expect("old preds"),
            old_preds
        );
        assert!(
            leftovers(&dir).is_empty(),
            "temporary files left: {:?}",
            leftovers(&dir)
        );
    }
    // Training into the full disk fails with the cause, and its run record says so if it
    // could be written at all.
    let out = k.run(&[
        "train",
        "--data",
        train.to_str().expect("utf8"),
        "--epochs",
        "1",
        "--out",
        &path("run"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.join("run/model/kiln-model.json").exists());
}
