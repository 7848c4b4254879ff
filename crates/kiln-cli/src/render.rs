use crate::args::Format;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_core::{Event, EventSink, Level};
use std::io::IsTerminal;

/// Renders stage events as `tracing` logs on stderr: progress bars on a terminal, one plain
/// line per epoch or stage everywhere, per-batch lines at debug level (-v). stdout is left for
/// results.
pub struct Reporter {
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            crate::logging::set_bar(None);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish_bar();
    }
}

impl EventSink for Reporter {
    fn emit(&mut self, event: Event) {
        // Any event is progress, for the stall watch on remote workers.
        crate::watch::beat();
        match event {
            Event::StageStarted { stage } => tracing::info!(target: "kiln", "[{stage}] started"),
            Event::StageFinished { stage, seconds } => {
                self.finish_bar();
                tracing::info!(target: "kiln", "[{stage}] finished in {seconds:.2}s");
            }
            Event::Progress {
                stage,
                done,
                total,
                unit,
            } => {
                if self.tty && !self.quiet {
                    let bar = self.bar.get_or_insert_with(|| {
                        let b = ProgressBar::new(total.unwrap_or(0));
                        if let Ok(style) = ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                        ) {
                            b.set_style(style.progress_chars("=> "));
                        }
                        b.set_prefix(format!("[{stage}]"));
                        b.set_message(plural(&unit));
                        crate::logging::set_bar(Some(b.clone()));
                        b
                    });
                    bar.set_position(done);
                } else {
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    tracing::debug!(target: "kiln", "[{stage}] {done}{of} {}", plural(&unit));
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
                // The bar carries the latest epoch's loss and accuracy beside its ETA.
                if let Some(b) = &self.bar {
                    let mut m = format!("batches, epoch {epoch}/{epochs} loss {train_loss:.4}");
                    if let Some(a) = val_accuracy.or(train_accuracy) {
                        m.push_str(&format!(" acc {a:.4}"));
                    }
                    b.set_message(m);
                }
                tracing::info!(target: "kiln", "{s}");
            }
            Event::Message { level, text } => match level {
                Level::Warn => tracing::warn!(target: "kiln", "{text}"),
                Level::Info => tracing::info!(target: "kiln", "{text}"),
                Level::Debug => tracing::debug!(target: "kiln", "{text}"),
            },
        }
    }
}

/// "rows", "batches", "engines".
fn plural(unit: &str) -> String {
    if unit.ends_with("ch") || unit.ends_with('s') {
        format!("{unit}es")
    } else {
        format!("{unit}s")
    }
}

/// A result table, printable as aligned text, CSV, Markdown or JSON records.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Title (a Markdown heading, a `# title` line in CSV).
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A two-column (key, value) table of a JSON object's scalar leaves, nested keys joined
    /// with dots; arrays of scalars are joined with commas, longer structures are left out.
    pub fn from_json(title: &str, value: &serde_json::Value) -> Self {
        let mut t = Table::new(title, &["key", "value"]);
        fn walk(prefix: &str, v: &serde_json::Value, t: &mut Table) {
            use serde_json::Value;
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, t);
                    }
                }
                Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
                    if a.len() <= 16 {
                        let items: Vec<String> = a.iter().map(scalar).collect();
                        t.row(vec![prefix.to_string(), items.join(",")]);
                    }
                }
                Value::Array(_) => {}
                other => t.row(vec![prefix.to_string(), scalar(other)]),
            }
        }
        fn scalar(v: &serde_json::Value) -> String {
            match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            }
        }
        walk("", value, &mut t);
        t
    }

    fn numeric(cell: &str) -> bool {
        !cell.is_empty() && cell.trim_end_matches('%').parse::<f64>().is_ok()
    }

    /// Aligned columns; numbers are right-aligned.
    pub fn human(&self) -> String {
        let cols = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String], out: &mut String| {
            let mut parts = Vec::new();
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                if Self::numeric(c) && i > 0 {
                    parts.push(format!("{}{c}", " ".repeat(pad)));
                } else {
                    parts.push(format!("{c}{}", " ".repeat(pad)));
                }
            }
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        let mut out = String::new();
        line(&self.headers, &mut out);
        for r in &self.rows {
            line(r, &mut out);
        }
        out
    }

    pub fn markdown(&self) -> String {
        let esc = |c: &str| c.replace('|', "\\|").replace('\n', " ");
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&format!("### {}\n\n", self.title));
        }
        out.push_str(&format!(
            "| {} |\n",
            self.headers
                .iter()
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        out.push_str(&format!(
            "|{}|\n",
            self.headers
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let numeric = i > 0
                        && !self.rows.is_empty()
                        && self
                            .rows
                            .iter()
                            .all(|r| r.get(i).is_none_or(|c| c.is_empty() || Self::numeric(c)));
                    if numeric { " ---: " } else { " --- " }
                })
                .collect::<Vec<_>>()
                .join("|")
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "| {} |\n",
                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(&self.headers);
        for r in &self.rows {
            let _ = w.write_record(r);
        }
        w.into_inner()
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// Prints tables in a table format: one after another, Markdown with headings, CSV separated
/// by a blank line and a `# title` comment line when there are several.
pub fn print_tables(format: Format, tables: &[Table], to_stderr: bool) {
    let mut out = String::new();
    for (i, t) in tables.iter().enumerate() {
        match format {
            Format::Csv => {
                if tables.len() > 1 {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(&format!("# {}\n", t.title));
                }
                out.push_str(&t.csv());
            }
            Format::Markdown => {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&t.markdown());
            }
            Format::Human | Format::Json => {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&t.human());
            }
        }
    }
    write_out(&out, to_stderr);
}

/// Writes a result to stdout (or stderr). A closed pipe (`kiln … | head`) is not an error: the
/// reader has what it wanted, so the rest is dropped quietly instead of panicking.
pub fn write_out(text: &str, to_stderr: bool) {
    use std::io::Write;
    let result = if to_stderr {
        std::io::stderr().lock().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::warn!(target: "kiln", "could not print the result: {e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("engines", &["engine", "rows/s", "note"]);
        t.row(vec!["tract".into(), "1200".into(), "a, \"b\"".into()]);
        t.row(vec!["ort".into(), "980.5".into(), "x|y".into()]);
        t
    }

    #[test]
    fn csv_quotes_and_round_trips() {
        let text = sample().csv();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(&rows[0][2], "a, \"b\"");
        assert_eq!(r.headers().unwrap().len(), 3);
    }

    #[test]
    fn markdown_escapes_pipes_and_right_aligns_numbers() {
        let md = sample().markdown();
        assert!(md.starts_with("### engines\n\n| engine | rows/s | note |\n"));
        assert!(md.contains("| --- | ---: | --- |"), "{md}");
        assert!(md.contains("x\\|y"));
    }

    #[test]
    fn human_aligns_columns() {
        let h = sample().human();
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(
            lines[1].find("1200").map(|i| i + 4),
            lines[2].find("980.5").map(|i| i + 5)
        );
    }

    #[test]
    fn json_flattens_to_key_value_rows() {
        let v = serde_json::json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": null});
        let t = Table::from_json("r", &v);
        assert_eq!(
            t.rows,
            vec![
                vec!["a".to_string(), "1".into()],
                vec!["b.c".into(), "x".into()],
                vec!["b.d".into(), "1,2".into()],
                vec!["e".into(), "".into()],
            ]
        );
    }
}
