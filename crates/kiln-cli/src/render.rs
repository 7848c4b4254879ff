use indicatif::{ProgressBar, ProgressStyle};
use kiln_core::{Event, EventSink, Level};
use std::io::IsTerminal;

/// Renders stage events on stderr: progress bars on a terminal, one plain line per epoch or
/// stage everywhere, nothing but warnings and errors with `--quiet`. stdout is left for results.
pub struct Reporter {
    quiet: bool,
    verbose: bool,
    tty: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Self {
            quiet,
            verbose,
            tty: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl EventSink for Reporter {
    fn emit(&mut self, event: Event) {
        match event {
            Event::StageStarted { stage } => {
                if !self.quiet {
                    self.line(&format!("[{stage}] started"));
                }
            }
            Event::StageFinished { stage, seconds } => {
                self.finish_bar();
                if !self.quiet {
                    self.line(&format!("[{stage}] finished in {seconds:.2}s"));
                }
            }
            Event::Progress {
                stage,
                done,
                total,
                unit,
            } => {
                if self.quiet {
                    return;
                }
                if self.tty {
                    let bar = self.bar.get_or_insert_with(|| {
                        let b = ProgressBar::new(total.unwrap_or(0));
                        if let Ok(style) = ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                        ) {
                            b.set_style(style.progress_chars("=> "));
                        }
                        b.set_prefix(format!("[{stage}]"));
                        b.set_message(format!("{unit}s"));
                        b
                    });
                    bar.set_position(done);
                } else if self.verbose {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    eprintln!("[{stage}] {done}{of} {unit}s");
                }
            }
            Event::Epoch {
                epoch,
                epochs,
                train_loss,
                train_accuracy,
                val_loss,
                val_accuracy,
                lr,
                seconds,
            } => {
                if self.quiet {
                    return;
                }
                let mut s = format!("epoch {epoch:>3}/{epochs}  train_loss {train_loss:.4}");
                if let Some(a) = train_accuracy {
                    s.push_str(&format!("  train_acc {a:.4}"));
                }
                if let Some(l) = val_loss {
                    s.push_str(&format!("  val_loss {l:.4}"));
                }
                if let Some(a) = val_accuracy {
                    s.push_str(&format!("  val_acc {a:.4}"));
                }
                s.push_str(&format!("  lr {lr:.2e}  {seconds:.2}s"));
                self.line(&s);
            }
            Event::Message { level, text } => match level {
                Level::Warn => self.line(&format!("warning: {text}")),
                Level::Info if !self.quiet => self.line(&text),
                Level::Debug if self.verbose => self.line(&text),
                _ => {}
            },
        }
    }
}
