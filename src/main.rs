//! The `kiln` binary; all of it lives in `kiln-cli`.

/// mimalloc keeps freed memory for reuse; with glibc's allocator every training step's
/// activation and gradient buffers (above its mmap threshold) went back to the OS and came back
/// as fresh zeroed pages (docs/PERFORMANCE.md, training throughput).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kiln_cli::main()
}
