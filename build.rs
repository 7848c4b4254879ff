//! Build script of the facade package: tells its tests whether they run as root. The disk-full
//! test mounts a small tmpfs, which needs root; elsewhere it is compiled as ignored, so the test
//! runner reports it as skipped instead of it passing without running. (The answer is the build
//! user's, who is the test user in `cargo test`/`cargo nextest run`.)

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(kiln_test_as_root)");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false);
    if root {
        println!("cargo::rustc-cfg=kiln_test_as_root");
    }
}
