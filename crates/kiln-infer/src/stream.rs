use crate::batch::{csv_fields, json_record, score_columns};
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::{InferError, Model, RowOutcome};
use kiln_data::{Format, RowParser};
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

/// Options of streaming inference.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Input format: CSV with a header line, or JSONL objects.
    pub format: Format,
    /// Output format (CSV or JSONL).
    pub output: crate::OutputFormat,
    /// Target column name (ignored when absent).
    pub target: String,
}

/// What a streaming run did.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Input rows.
    pub rows: usize,
    /// Rows predicted.
    pub ok: usize,
    /// Rows that got an error record.
    pub failed: usize,
    /// Per-row latency from reading the line to flushing its result.
    pub latency: LatencySummary,
    /// Wall time of the whole stream.
    pub seconds: f64,
}

/// Reads rows from `input` one line at a time and writes each result to `output` as soon as it
/// is computed, flushing per line, so it works in a shell pipe with a slow producer. Every input
/// line gets exactly one output record. Memory stays bounded: nothing is kept per row.
pub fn infer_stream(
    model: &Model,
    input: impl BufRead,
    output: impl Write,
    opts: &StreamOptions,
) -> Result<StreamReport, InferError> {
    let start = Instant::now();
    let origin = Path::new("<stdin>");
    let mut lines = input.lines();
    let io = |e: std::io::Error| InferError::Input(format!("reading input: {e}"));
    let wio = |e: std::io::Error| InferError::Input(format!("writing output: {e}"));
    // The header (CSV) or the first object's keys (JSONL) fix the columns.
    let mut first_json: Option<String> = None;
    let header: Vec<String> = loop {
        let Some(line) = lines.next().transpose().map_err(io)? else {
            return Ok(StreamReport {
                rows: 0,
                ok: 0,
                failed: 0,
                latency: LatencySummary::default(),
                seconds: start.elapsed().as_secs_f64(),
            });
        };
        if line.trim().is_empty() {
            continue;
        }
        match opts.format {
            Format::Npy => {
                return Err(InferError::Input(
                    "a .npy array cannot be streamed line by line; pass it as a file with --data"
                        .into(),
                ));
            }
            Format::Csv => break line.split(',').map(|h| h.trim().to_string()).collect(),
            Format::Jsonl => {
                let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line)
                    .map_err(|e| {
                    InferError::Input(format!("the first JSONL line is not a JSON object: {e}"))
                })?;
                first_json = Some(line);
                break obj.keys().cloned().collect();
            }
        }
    };
    let parser = RowParser::new(
        origin,
        header,
        &opts.target,
        model.info().feature_names.as_deref(),
    )?;
    if let Some(w) = model
        .info()
        .input_width
        .filter(|&w| w != parser.feature_names().len())
    {
        return Err(InferError::Data(kiln_data::DataError::Schema {
            path: origin.to_path_buf(),
            reason: format!(
                "the model expects {w} features per row but the input has {} feature columns",
                parser.feature_names().len()
            ),
        }));
    }
    let width = model.output_width()?;
    let columns = score_columns(model, width);
    let werr = |e: csv::Error| InferError::Input(format!("writing output: {e}"));
    let mut sink = match opts.output {
        crate::OutputFormat::Npy => {
            return Err(InferError::Input(
                "streaming writes CSV or JSONL lines; a .npy array needs its row count up front"
                    .into(),
            ));
        }
        crate::OutputFormat::Csv => {
            let mut w = csv::WriterBuilder::new().from_writer(output);
            let mut header = vec!["row".to_string(), "label".to_string()];
            header.extend(columns.iter().cloned());
            header.push("error".into());
            w.write_record(&header).map_err(werr)?;
            w.flush().map_err(wio)?;
            Sink::Csv(Box::new(w))
        }
        crate::OutputFormat::Jsonl => Sink::Json(output),
    };
    let mut latency = LatencyRecorder::new();
    let (mut rows, mut ok) = (0usize, 0usize);
    let pending = first_json.into_iter().map(Ok);
    for line in pending.chain(lines) {
        let t0 = Instant::now();
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = match opts.format {
            Format::Csv | Format::Npy => parser.parse_csv_line(&line),
            Format::Jsonl => parser.parse_json_line(&line),
        };
        let outcome = match parsed {
            Ok((x, target)) => match model.predict(&x, 1) {
                Ok(mut p) if p.len() == 1 => RowOutcome::Ok {
                    row: rows,
                    prediction: p.remove(0),
                    target,
                },
                Ok(_) => RowOutcome::Err {
                    row: rows,
                    error: "the engine returned no prediction".into(),
                },
                Err(e) => RowOutcome::Err {
                    row: rows,
                    error: e.to_string(),
                },
            },
            Err(e) => RowOutcome::Err {
                row: rows,
                error: e.to_string(),
            },
        };
        if matches!(outcome, RowOutcome::Ok { .. }) {
            ok += 1;
        }
        match &mut sink {
            Sink::Csv(w) => {
                w.write_record(csv_fields(&outcome, width)).map_err(werr)?;
                w.flush().map_err(wio)?;
            }
            Sink::Json(w) => {
                writeln!(w, "{}", json_record(&outcome, &columns)).map_err(wio)?;
                w.flush().map_err(wio)?;
            }
        }
        latency.record(t0.elapsed());
        rows += 1;
    }
    Ok(StreamReport {
        rows,
        ok,
        failed: rows - ok,
        latency: latency.summary(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Json(W),
}
