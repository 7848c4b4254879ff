//! Logs go through `tracing`: one layer prints to stderr (above any progress bar, filtered by
//! -q/-v/-vv or RUST_LOG), another appends to the run directory's `kiln.log` once a command
//! has one. Colour follows --color, NO_COLOR and CLICOLOR_FORCE.

use indicatif::ProgressBar;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);
static COLOR: OnceLock<bool> = OnceLock::new();

/// Whether stderr gets ANSI colours: `--color always|never` decides; with `auto`, NO_COLOR
/// (set and not empty) turns colour off, CLICOLOR_FORCE (set and not 0) turns it on even in a
/// pipe, and otherwise a terminal (not TERM=dumb) gets colour.
pub fn decide_color(choice: clap::ColorChoice, stderr_tty: bool) -> bool {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match choice {
        clap::ColorChoice::Always => true,
        clap::ColorChoice::Never => false,
        clap::ColorChoice::Auto => {
            if env("NO_COLOR").is_some() {
                false
            } else if env("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
                true
            } else {
                stderr_tty && std::env::var("TERM").map_or(true, |t| t != "dumb")
            }
        }
    }
}

/// The --color choice from raw arguments, before clap parses them (clap needs it to colour its
/// own errors). The last occurrence wins, as with clap.
pub fn color_from_args(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut choice = clap::ColorChoice::Auto;
    let mut it = args.iter().filter_map(|a| a.to_str());
    while let Some(a) = it.next() {
        let value = if let Some(v) = a.strip_prefix("--color=") {
            Some(v)
        } else if a == "--color" {
            it.next()
        } else {
            None
        };
        choice = match value {
            Some("always") => clap::ColorChoice::Always,
            Some("never") => clap::ColorChoice::Never,
            Some("auto") => clap::ColorChoice::Auto,
            _ => choice,
        };
        if a == "--" {
            break;
        }
    }
    choice
}

/// Whether colour is on (after [`init`]).
pub fn color() -> bool {
    COLOR.get().copied().unwrap_or(false)
}

/// `text` in the given style when colour is on.
pub fn paint(text: &str, style: anstyle::Style) -> String {
    if color() {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_string()
    }
}

/// Red bold, for "error:".
pub fn error_style() -> anstyle::Style {
    anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Red.into()))
}

/// Yellow bold, for "warning:".
pub fn warn_style() -> anstyle::Style {
    anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Yellow.into()))
}

/// Installs the subscriber. `quiet` shows errors only, `verbose` 1 = debug, 2+ = trace; a
/// non-empty RUST_LOG replaces that filter for stderr.
pub fn init(quiet: bool, verbose: u8, color_choice: clap::ColorChoice) {
    let _ = COLOR.set(decide_color(color_choice, std::io::stderr().is_terminal()));
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let default = format!("warn,kiln={level}");
    let stderr_filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(v.trim()).unwrap_or_else(|_| EnvFilter::new(&default))
        }
        _ => EnvFilter::new(&default),
    };
    let file_level = if verbose > 0 { "debug" } else { "info" };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .event_format(Plain)
        .with_writer(StderrSink)
        .with_filter(stderr_filter);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(FileSink)
        .with_filter(EnvFilter::new(format!("warn,kiln={file_level}")));
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
}

/// From now on, log lines are also appended to `path` (the run's `kiln.log`).
pub fn log_to_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if let Ok(mut g) = LOG_FILE.lock() {
        *g = Some(f);
    }
    Ok(())
}

/// Appends a line to the run's log file only (the final error, which stderr shows itself).
pub fn file_only(line: &str) {
    if let Ok(mut g) = LOG_FILE.lock()
        && let Some(f) = g.as_mut()
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Makes log lines print above `bar` while it is shown.
pub fn set_bar(bar: Option<ProgressBar>) {
    if let Ok(mut g) = BAR.lock() {
        *g = bar;
    }
}

/// Human lines: info messages as they are, other levels prefixed.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "{} ", paint("error:", error_style()))?,
            Level::WARN => write!(writer, "{} ", paint("warning:", warn_style()))?,
            Level::DEBUG => write!(writer, "debug: ")?,
            Level::TRACE => write!(writer, "trace: {}: ", event.metadata().target())?,
            Level::INFO => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

struct StderrSink;
struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|g| g.clone());
        match bar {
            Some(b) if !b.is_finished() => b.suspend(|| std::io::stderr().write_all(buf))?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StderrSink {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}

struct FileSink;
struct FileWriter;

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut g) = LOG_FILE.lock()
            && let Some(f) = g.as_mut()
        {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileSink {
    type Writer = FileWriter;
    fn make_writer(&'a self) -> Self::Writer {
        FileWriter
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn color_flag_is_found_before_parsing() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            color_from_args(&args(&["kiln", "--color", "always", "doctor"])),
            clap::ColorChoice::Always
        );
        assert_eq!(
            color_from_args(&args(&["kiln", "doctor", "--color=never"])),
            clap::ColorChoice::Never
        );
        assert_eq!(
            color_from_args(&args(&["kiln", "doctor"])),
            clap::ColorChoice::Auto
        );
    }

    #[test]
    fn explicit_choice_beats_the_environment() {
        assert!(decide_color(clap::ColorChoice::Always, false));
        assert!(!decide_color(clap::ColorChoice::Never, true));
    }
}
