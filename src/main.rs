//! The `kiln` binary; all of it lives in `kiln-cli`.

fn main() -> std::process::ExitCode {
    kiln_cli::main()
}
