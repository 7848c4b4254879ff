//! The `kiln` command-line front end. It parses arguments and config files into validated
//! stage configurations, dispatches to the stage crates, and renders their events and results.
//! Some pipeline logic still lives here (the run directory and its files, `kiln pipeline`'s
//! orchestration, config layering, bench-suite building); moving it into the library crates is
//! tracked work, and docs/ARCHITECTURE.md says what is where.
//!
//! Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 input data error,
//! 4 accuracy gate refused the optimized model.
//!
//! ```no_run
//! std::process::exit(kiln_cli::main_with_args(["kiln", "pipeline", "--demo", "--out", "runs/demo"]));
//! ```

use std::io::Write;

mod args;
mod commands;
mod doctor;
mod engine;
mod infer;
mod init;
mod logging;
mod measure;
mod optimize;
mod render;
mod runstate;
mod serve;
mod watch;

pub use args::Cli;
pub use kiln_train::check_config;

use std::process::ExitCode;

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for bad input data.
pub const EXIT_DATA: i32 = 3;
/// Exit code when the accuracy gate refuses an optimized model.
pub const EXIT_ACCURACY_GATE: i32 = 4;

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    ExitCode::from(main_with_args(std::env::args_os()) as u8)
}

/// Runs the CLI with the given arguments and returns the exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    runstate::mark_start();
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let color = logging::color_from_args(&args);
    let clap_color =
        if logging::decide_color(color, std::io::IsTerminal::is_terminal(&std::io::stderr())) {
            clap::ColorChoice::Always
        } else {
            clap::ColorChoice::Never
        };
    let mut command_name = String::from("<command>");
    let parsed = <Cli as clap::CommandFactory>::command()
        .color(clap_color)
        .try_get_matches_from(&args)
        .and_then(|m| {
            if let Some(name) = m.subcommand_name() {
                command_name = name.to_string();
            }
            <Cli as clap::FromArgMatches>::from_arg_matches(&m)
        });
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    logging::init(cli.quiet, cli.verbose, cli.color);
    let result = commands::run(&cli);
    // A reader that closed our stdout (`kiln infer … | head`) got what it wanted.
    let broken_pipe = result.as_ref().err().is_some_and(|e| {
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        })
    });
    let result = if broken_pipe { Ok(()) } else { result };
    let code = match &result {
        Ok(()) => 0,
        Err(err) => classify(err),
    };
    if let Err(err) = &result {
        let mut lines = vec![format!(
            "{} {err}",
            logging::paint("error:", logging::error_style())
        )];
        // Most messages already quote their cause; print only what adds information.
        let mut shown = err.to_string();
        for cause in err.chain().skip(1) {
            let text = cause.to_string();
            if !shown.contains(&text) {
                lines.push(format!("  caused by: {text}"));
                shown.push_str(&text);
            }
        }
        if let Some(hint) = hint_for(code, &command_name) {
            lines.push(format!("  hint: {hint}"));
        }
        // Not eprintln!: a closed stderr must not turn an error into a panic.
        let mut stderr = std::io::stderr().lock();
        for l in &lines {
            let _ = writeln!(stderr, "{l}");
        }
        // A backtrace only when asked for with -vv or KILN_BACKTRACE=1 (it is captured when
        // RUST_BACKTRACE or RUST_LIB_BACKTRACE is set), never for a user's mistake by default.
        if cli.verbose >= 2
            || std::env::var("KILN_BACKTRACE").is_ok_and(|v| !v.is_empty() && v != "0")
        {
            let _ = writeln!(stderr, "backtrace:\n{}", err.backtrace());
        }
        logging::file_only(&format!("error: {err:#}"));
    }
    runstate::finish(code, result.as_ref().err().map(|e| format!("{e:#}")));
    code
}

/// A next step for each kind of failure, shown under the error.
fn hint_for(code: i32, command: &str) -> Option<String> {
    match code {
        EXIT_USAGE => Some(format!("check the flags with `kiln {command} --help`")),
        EXIT_DATA => Some("fix the named file (and the row and column, when given), then run the command again".into()),
        EXIT_ACCURACY_GATE => Some(
            "the optimized model was refused and not written; try --quantization static with --calibration-data, or lower --min-accuracy-ratio knowingly".into(),
        ),
        _ => None,
    }
}

/// Maps an error to its exit code by looking for the stage error types in its chain.
fn classify(err: &anyhow::Error) -> i32 {
    use kiln_export::ExportError;
    use kiln_infer::InferError;
    use kiln_optimize::OptimizeError;
    fn infer_code(e: &InferError) -> Option<i32> {
        match e {
            InferError::Data(_) => Some(EXIT_DATA),
            // A missing engine is a setup problem the user fixes with a flag or a script.
            InferError::EngineUnavailable { .. } | InferError::ProviderUnavailable { .. } => {
                Some(EXIT_USAGE)
            }
            _ => None,
        }
    }
    // A named input (model, data, config) that does not exist is bad input, whichever stage
    // noticed it.
    // Writing an output (creating its directory, a temporary file, renaming) that fails is a
    // failure of the run, not bad input, whatever the OS error.
    let writing = err.chain().any(|c| {
        matches!(
            c.downcast_ref::<kiln_core::CoreError>(),
            Some(kiln_core::CoreError::Io { action, .. }) if !action.starts_with("read")
        )
    });
    if !writing
        && err.chain().any(|c| {
            c.downcast_ref::<std::io::Error>().is_some_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                )
            })
        })
    {
        return EXIT_DATA;
    }
    for cause in err.chain() {
        if cause.downcast_ref::<kiln_data::DataError>().is_some() {
            return EXIT_DATA;
        }

        if cause.downcast_ref::<commands::UsageError>().is_some() {
            return EXIT_USAGE;
        }
        if let Some(e) = cause.downcast_ref::<InferError>() {
            return infer_code(e).unwrap_or(1);
        }
        if let Some(e) = cause.downcast_ref::<ExportError>() {
            return match e {
                ExportError::Exists { .. }
                | ExportError::Opset { .. }
                | ExportError::Names { .. }
                | ExportError::Options(_) => EXIT_USAGE,
                ExportError::Infer(i) => infer_code(i).unwrap_or(1),
                _ => 1,
            };
        }
        if let Some(e) = cause.downcast_ref::<OptimizeError>() {
            return match e {
                OptimizeError::Exists { .. } | OptimizeError::Options(_) => EXIT_USAGE,
                OptimizeError::Data(_) => EXIT_DATA,
                OptimizeError::AccuracyGate { .. } => EXIT_ACCURACY_GATE,
                OptimizeError::Infer(i) => infer_code(i).unwrap_or(1),
                _ => 1,
            };
        }
        match cause.downcast_ref::<kiln_train::TrainError>() {
            Some(kiln_train::TrainError::Config(_)) => return EXIT_USAGE,
            Some(kiln_train::TrainError::Weights(_) | kiln_train::TrainError::Data(_)) => {
                return EXIT_DATA;
            }
            _ => {}
        }
    }
    1
}
