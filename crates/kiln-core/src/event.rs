use serde::Serialize;

/// Severity of a message event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Detail for `-v`.
    Debug,
    /// Normal status.
    Info,
    /// Something the user should look at; the run continues.
    Warn,
}

/// A progress event. Stages emit them; front ends (the CLI's progress bars, plain log lines, a
/// server's logs) render them. Stages never print.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A stage began.
    StageStarted {
        /// Stage name.
        stage: String,
    },
    /// A stage finished.
    StageFinished {
        /// Stage name.
        stage: String,
        /// Wall time in seconds.
        seconds: f64,
    },
    /// Work done so far within a stage (batches, rows, epochs).
    Progress {
        /// Stage name.
        stage: String,
        /// Units done.
        done: u64,
        /// Units in all, when known.
        total: Option<u64>,
        /// Unit name ("batch", "row").
        unit: String,
    },
    /// One training epoch ended.
    Epoch {
        /// 1-based epoch number.
        epoch: usize,
        /// Number of epochs planned.
        epochs: usize,
        /// Mean training loss.
        train_loss: f64,
        /// Training accuracy (classification).
        train_accuracy: Option<f64>,
        /// Validation loss.
        val_loss: Option<f64>,
        /// Validation accuracy.
        val_accuracy: Option<f64>,
        /// Learning rate at the end of the epoch.
        lr: f64,
        /// Seconds the epoch took.
        seconds: f64,
    },
    /// A free-form message.
    Message {
        /// Severity.
        level: Level,
        /// Text.
        text: String,
    },
}

/// Receives events. Implemented by front ends.
pub trait EventSink {
    /// Handles one event.
    fn emit(&mut self, event: Event);
}

/// A sink that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&mut self, _event: Event) {}
}

impl EventSink for Vec<Event> {
    fn emit(&mut self, event: Event) {
        self.push(event);
    }
}
