use crate::DataError;
use kiln_core::{Dataset, Targets};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A tabular file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line; keys are column names.
    Jsonl,
    /// A NumPy `.npy` 2-D float array of features (no target column).
    Npy,
}

impl Format {
    /// Picks the format from a file extension (`.jsonl`/`.ndjson` → JSONL, otherwise CSV).
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("jsonl") | Some("ndjson") => Format::Jsonl,
            Some("npy") => Format::Npy,
            _ => Format::Csv,
        }
    }
}

/// The longest row (or header) kiln reads, in bytes: far beyond any real row of features, and
/// small enough that a corrupt or hostile file cannot make one row cost gigabytes.
pub const MAX_ROW_BYTES: usize = 1 << 20;

fn too_long(len: usize) -> String {
    format!(
        "the row is {len} bytes long, more than the {MAX_ROW_BYTES} bytes a row may have (a corrupt file, or a missing line break?)"
    )
}

/// A row-level problem: which column (if one) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The column at fault, when the problem is one cell.
    pub column: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "column {c:?}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// One input row read leniently: its features and target, or why it could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRecord {
    /// 0-based data row number (the header is not counted).
    pub row: usize,
    /// 1-based line in the file.
    pub line: usize,
    /// Features in model order plus the raw target cell, or the row's error.
    pub result: Result<(Vec<f32>, Option<String>), RowError>,
}

/// A file read leniently: every data row is present, good or bad.
#[derive(Debug, Clone)]
pub struct RowTable {
    /// Where the rows came from.
    pub path: PathBuf,
    /// Feature columns, in the order the features are given.
    pub feature_names: Vec<String>,
    /// Whether the target column exists.
    pub has_target: bool,
    /// Every data row.
    pub rows: Vec<RowRecord>,
}

struct RawTable {
    header: Vec<String>,
    rows: Vec<(usize, Result<Vec<String>, String>)>,
}

fn open(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(io)?;
        return Ok(buf);
    }
    if path.is_dir() {
        return Err(io(std::io::Error::other(
            "this is a directory, expected a data file",
        )));
    }
    std::fs::read(path).map_err(io)
}

fn read_csv_raw(path: &Path, bytes: &[u8]) -> Result<RawTable, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = rdr.byte_records();
    let header = match records.next() {
        None => {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
                reason: "the file is empty; expected a header row and data rows".into(),
            });
        }
        Some(Err(e)) => {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
                reason: format!("cannot read the header: {e}"),
            });
        }
        Some(Ok(h)) if h.as_slice().len() > MAX_ROW_BYTES => {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
                reason: format!("header: {}", too_long(h.as_slice().len())),
            });
        }
        Some(Ok(h)) => h
            .iter()
            .enumerate()
            .map(|(i, f)| {
                std::str::from_utf8(f)
                    .map(|s| s.trim().to_string())
                    .map_err(|_| DataError::Empty {
                        path: path.to_path_buf(),
                        reason: format!("header field {i} is not valid UTF-8"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    // One column whose name holds another common separator: the file is not comma-separated.
    if let [only] = header.as_slice()
        && let Some(sep) = [';', '\t', '|'].into_iter().find(|c| only.contains(*c))
    {
        let shown = if sep == '\t' {
            "\\t".to_string()
        } else {
            sep.to_string()
        };
        return Err(DataError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "the header is one column {only:?}: kiln reads comma-separated files and this one looks separated by '{shown}'; convert it (e.g. tr '{shown}' ',' < file > file.csv)"
            ),
        });
    }
    let mut rows = Vec::new();
    for rec in records {
        match rec {
            Ok(r) => {
                let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
                // A completely blank line is not a row.
                if r.len() == 1
                    && r.get(0)
                        .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
                {
                    continue;
                }
                if r.as_slice().len() > MAX_ROW_BYTES {
                    rows.push((line, Err(too_long(r.as_slice().len()))));
                    continue;
                }
                let fields: Result<Vec<String>, String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        std::str::from_utf8(f)
                            .map(|s| s.trim().to_string())
                            .map_err(|_| format!("field {i} is not valid UTF-8"))
                    })
                    .collect();
                rows.push((line, fields));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                rows.push((line, Err(format!("malformed CSV: {e}"))));
            }
        }
    }
    Ok(RawTable { header, rows })
}

fn json_cell(v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Null => Ok(String::new()),
        other => Err(format!("expected a number or string, got {other}")),
    }
}

fn read_jsonl_raw(path: &Path, bytes: &[u8], target: &str) -> Result<RawTable, DataError> {
    let text = String::from_utf8_lossy(bytes);
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_ROW_BYTES {
            rows.push((i + 1, Err(too_long(line.len()))));
            continue;
        }
        let parsed: Result<serde_json::Map<String, serde_json::Value>, String> =
            serde_json::from_str(line).map_err(|e| format!("invalid JSON object: {e}"));
        let fields = parsed.and_then(|obj| {
            let h = header.get_or_insert_with(|| obj.keys().cloned().collect());
            h.iter()
                .map(|k| match obj.get(k) {
                    Some(v) => json_cell(v),
                    // A row without the target is fine for inference; training rejects it.
                    None if k == target => Ok(String::new()),
                    None => Err(format!("key {k:?} is missing")),
                })
                .collect::<Result<Vec<_>, _>>()
        });
        rows.push((i + 1, fields));
    }
    let header = header.ok_or_else(|| DataError::Empty {
        path: path.to_path_buf(),
        reason: "no JSON object found; expected one object per line".into(),
    })?;
    Ok(RawTable { header, rows })
}

fn read_raw(path: &Path, format: Option<Format>, target: &str) -> Result<RawTable, DataError> {
    let bytes = open(path)?;
    match format.unwrap_or_else(|| Format::from_path(path)) {
        Format::Csv => read_csv_raw(path, &bytes),
        Format::Jsonl => read_jsonl_raw(path, &bytes, target),
        Format::Npy => {
            // Values go through their shortest round-trip text form, which parses back to the
            // same f32, so NPY rows share the CSV path's checks.
            let m = crate::npy::parse_npy(path, &bytes)?;
            let header = (0..m.cols).map(|j| format!("f{j}")).collect();
            let rows = m
                .data
                .chunks(m.cols.max(1))
                .enumerate()
                .map(|(i, r)| (i + 1, Ok(r.iter().map(|v| v.to_string()).collect())))
                .collect();
            Ok(RawTable { header, rows })
        }
    }
}

/// Turns the fields of one row into model-ordered features and the target cell. Built once from
/// a header; shared by the file reader and the streaming reader.
#[derive(Debug, Clone)]
pub struct RowParser {
    allow_non_finite: bool,
    header: Vec<String>,
    target_idx: Option<usize>,
    feature_idx: Vec<usize>,
    feature_names: Vec<String>,
}

impl RowParser {
    /// Matches `header` against the model's features: by name if the header has all of them,
    /// otherwise by position if the count (without the target) matches. `origin` names the
    /// source in errors.
    pub fn new(
        origin: &Path,
        header: Vec<String>,
        target: &str,
        expected_features: Option<&[String]>,
    ) -> Result<Self, DataError> {
        let target_idx = header.iter().position(|h| h == target);
        let others: Vec<usize> = (0..header.len())
            .filter(|&i| Some(i) != target_idx)
            .collect();
        let feature_idx: Vec<usize> = match expected_features {
            Some(names) if names.iter().all(|n| header.contains(n)) => names
                .iter()
                .filter_map(|n| header.iter().position(|h| h == n))
                .collect(),
            Some(names) if names.len() == others.len() => others.clone(),
            Some(names) => {
                return Err(DataError::Schema {
                    path: origin.to_path_buf(),
                    reason: format!(
                        "the model expects {} features ({}) but the file has {} feature columns ({}); check the file or --target",
                        names.len(),
                        abbreviate(names),
                        others.len(),
                        abbreviate(
                            &others
                                .iter()
                                .map(|&i| header[i].clone())
                                .collect::<Vec<_>>()
                        )
                    ),
                });
            }
            None => others,
        };
        let feature_names = match expected_features {
            Some(names) => names.to_vec(),
            None => feature_idx.iter().map(|&i| header[i].clone()).collect(),
        };
        Ok(Self {
            allow_non_finite: false,
            header,
            target_idx,
            feature_idx,
            feature_names,
        })
    }

    /// Accept NaN and infinite feature values (by default their rows are errors).
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.allow_non_finite = allow;
        self
    }

    /// Feature names in model order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Whether the header has the target column.
    pub fn has_target(&self) -> bool {
        self.target_idx.is_some()
    }

    /// The header's column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Parses one row's fields. Non-finite numbers are rejected.
    pub fn parse_fields(&self, fields: &[String]) -> Result<(Vec<f32>, Option<String>), RowError> {
        let width = self.header.len();
        if fields.len() != width {
            return Err(RowError {
                column: None,
                reason: format!("has {} fields but the header has {width}", fields.len()),
            });
        }
        let mut x = Vec::with_capacity(self.feature_idx.len());
        for &j in &self.feature_idx {
            let cell = &fields[j];
            let col = || Some(self.header[j].clone());
            let v: f32 = cell.parse().map_err(|_| RowError {
                column: col(),
                reason: if cell.is_empty() {
                    "the cell is empty".into()
                } else {
                    format!("{cell:?} is not a number")
                },
            })?;
            if !v.is_finite() && !self.allow_non_finite {
                return Err(RowError {
                    column: col(),
                    reason: format!("{cell:?} is not a finite number"),
                });
            }
            x.push(v);
        }
        Ok((
            x,
            self.target_idx
                .map(|t| fields[t].clone())
                .filter(|l| !l.is_empty()),
        ))
    }

    /// Parses one CSV line (without its newline).
    pub fn parse_csv_line(&self, line: &str) -> Result<(Vec<f32>, Option<String>), RowError> {
        if line.len() > MAX_ROW_BYTES {
            return Err(RowError {
                column: None,
                reason: too_long(line.len()),
            });
        }
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(line.as_bytes());
        match rdr.records().next() {
            Some(Ok(r)) => {
                self.parse_fields(&r.iter().map(|f| f.trim().to_string()).collect::<Vec<_>>())
            }
            Some(Err(e)) => Err(RowError {
                column: None,
                reason: format!("malformed CSV: {e}"),
            }),
            None => Err(RowError {
                column: None,
                reason: "empty line".into(),
            }),
        }
    }

    /// Parses one JSONL line: an object keyed by column name. A missing target is allowed.
    pub fn parse_json_line(&self, line: &str) -> Result<(Vec<f32>, Option<String>), RowError> {
        if line.len() > MAX_ROW_BYTES {
            return Err(RowError {
                column: None,
                reason: too_long(line.len()),
            });
        }
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| RowError {
                column: None,
                reason: format!("invalid JSON object: {e}"),
            })?;
        let target = self.target_idx.map(|t| self.header[t].as_str());
        let fields = self
            .header
            .iter()
            .map(|k| match obj.get(k) {
                Some(v) => json_cell(v).map_err(|reason| RowError {
                    column: Some(k.clone()),
                    reason,
                }),
                None if Some(k.as_str()) == target => Ok(String::new()),
                None => Err(RowError {
                    column: None,
                    reason: format!("key {k:?} is missing"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.parse_fields(&fields)
    }
}

/// Reads a CSV or JSONL file leniently. Every data row becomes a [`RowRecord`]: its features in
/// model order, or the reason it could not be read. Only file-level problems (unreadable,
/// empty, columns that cannot match `expected_features`) are errors.
///
/// When `expected_features` is given, columns are matched by name if the header has all of
/// them, otherwise by position if the count (without the target) matches.
pub fn read_rows(
    path: &Path,
    format: Option<Format>,
    target: &str,
    expected_features: Option<&[String]>,
) -> Result<RowTable, DataError> {
    read_rows_with(path, format, target, expected_features, false)
}

/// [`read_rows`], optionally accepting NaN/inf feature values instead of rejecting their rows.
pub fn read_rows_with(
    path: &Path,
    format: Option<Format>,
    target: &str,
    expected_features: Option<&[String]>,
    allow_non_finite: bool,
) -> Result<RowTable, DataError> {
    let raw = read_raw(path, format, target)?;
    let parser = RowParser::new(path, raw.header, target, expected_features)?
        .allow_non_finite(allow_non_finite);
    let rows = raw
        .rows
        .into_iter()
        .enumerate()
        .map(|(row, (line, fields))| {
            let result = fields
                .map_err(|reason| RowError {
                    column: None,
                    reason,
                })
                .and_then(|f| parser.parse_fields(&f));
            RowRecord { row, line, result }
        })
        .collect();
    Ok(RowTable {
        path: path.to_path_buf(),
        feature_names: parser.feature_names.clone(),
        has_target: parser.has_target(),
        rows,
    })
}

fn abbreviate(names: &[String]) -> String {
    if names.len() <= 6 {
        names.join(", ")
    } else {
        format!("{}, … {}", names[..3].join(", "), names[names.len() - 1])
    }
}

/// Orders class labels: numerically when they are all numbers, else lexicographically.
pub(crate) fn sort_labels(labels: &mut [String]) {
    if labels.iter().all(|l| l.parse::<f64>().is_ok()) {
        labels.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        });
    } else {
        labels.sort();
    }
}

/// Reads a CSV or JSONL file strictly into a classification [`Dataset`]: the target column must
/// exist and every row must be valid. The first problem is an error naming the file, row and
/// column. With `known_classes` (e.g. validation data for a trained model), labels are mapped
/// onto those classes and an unseen label is an error.
pub fn load_dataset(
    path: &Path,
    target: &str,
    known_classes: Option<&[String]>,
) -> Result<Dataset, DataError> {
    let table = read_rows(path, None, target, None)?;
    if !table.has_target {
        let raw_cols: Vec<String> = table.feature_names.clone();
        return Err(DataError::MissingTarget {
            path: path.to_path_buf(),
            target: target.into(),
            columns: abbreviate(&raw_cols),
        });
    }
    if table.rows.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            reason: "the file has a header but no data rows".into(),
        });
    }
    let f = table.feature_names.len();
    let mut features = Vec::with_capacity(table.rows.len() * f);
    let mut labels = Vec::with_capacity(table.rows.len());
    for rec in &table.rows {
        match &rec.result {
            Ok((x, label)) => {
                let label = label.clone().unwrap_or_default();
                if label.is_empty() {
                    return Err(DataError::Cell {
                        path: path.to_path_buf(),
                        row: rec.row,
                        line: rec.line,
                        column: target.into(),
                        reason: "the target cell is empty".into(),
                    });
                }
                features.extend_from_slice(x);
                labels.push((rec.row, rec.line, label));
            }
            Err(e) => {
                return Err(strict_error(path, rec, e));
            }
        }
    }
    let names: Vec<String> = match known_classes {
        Some(k) => k.to_vec(),
        None => {
            let mut uniq: Vec<String> = labels
                .iter()
                .map(|(_, _, l)| l.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            sort_labels(&mut uniq);
            uniq
        }
    };
    let lookup: std::collections::HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let mut indices = Vec::with_capacity(labels.len());
    for (row, line, l) in &labels {
        match lookup.get(l.as_str()) {
            Some(&i) => indices.push(i),
            None => {
                return Err(DataError::Cell {
                    path: path.to_path_buf(),
                    row: *row,
                    line: *line,
                    column: target.into(),
                    reason: format!(
                        "label {l:?} was never seen in training (known classes: {})",
                        abbreviate(&names)
                    ),
                });
            }
        }
    }
    Ok(Dataset {
        feature_names: table.feature_names,
        features,
        targets: Some(Targets::Classes { indices, names }),
    })
}

/// Reads a CSV/JSONL/NPY file strictly into a regression [`Dataset`]: the target column must
/// exist and hold a finite number on every row.
pub fn load_regression_dataset(path: &Path, target: &str) -> Result<Dataset, DataError> {
    let table = read_rows(path, None, target, None)?;
    if !table.has_target {
        return Err(DataError::MissingTarget {
            path: path.to_path_buf(),
            target: target.into(),
            columns: abbreviate(&table.feature_names),
        });
    }
    if table.rows.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            reason: "the file has a header but no data rows".into(),
        });
    }
    let mut features = Vec::with_capacity(table.rows.len() * table.feature_names.len());
    let mut values = Vec::with_capacity(table.rows.len());
    for rec in &table.rows {
        let cell = |reason: String| DataError::Cell {
            path: path.to_path_buf(),
            row: rec.row,
            line: rec.line,
            column: target.into(),
            reason,
        };
        match &rec.result {
            Ok((x, Some(y))) => {
                let v: f32 = y.parse().map_err(|_| {
                    cell(format!(
                        "{y:?} is not a number; a regression target must be numeric"
                    ))
                })?;
                if !v.is_finite() {
                    return Err(cell(format!("{y:?} is not a finite number")));
                }
                features.extend_from_slice(x);
                values.push(v);
            }
            Ok((_, None)) => return Err(cell("the target cell is empty".into())),
            Err(e) => {
                return Err(strict_error(path, rec, e));
            }
        }
    }
    Ok(Dataset {
        feature_names: table.feature_names,
        features,
        targets: Some(Targets::Values(values)),
    })
}

/// The strict readers' error for a row the lenient reader marked bad: a cell error when the
/// column is known, else a row error.
fn strict_error(path: &Path, rec: &RowRecord, e: &RowError) -> DataError {
    match &e.column {
        Some(c) => DataError::Cell {
            path: path.to_path_buf(),
            row: rec.row,
            line: rec.line,
            column: c.clone(),
            reason: e.reason.clone(),
        },
        None => DataError::Row {
            path: path.to_path_buf(),
            row: rec.row,
            line: rec.line,
            reason: e.reason.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        p
    }

    fn strict_err(body: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(&dir, "d.csv", body);
        load_dataset(&p, "label", None)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn strict_errors_name_row_and_column() {
        for (body, wants) in [
            (&b""[..], vec!["empty"]),
            (b"a,b,label\n", vec!["no data rows"]),
            (b"a,b\n1,2\n", vec!["no target column \"label\""]),
            (
                b"a,b,label\n1,2,x\n1,zz,y\n",
                vec!["row 1", "line 3", "\"b\"", "not a number"],
            ),
            (b"a,b,label\n1,2,x\n1,2\n", vec!["row 1", "2 fields"]),
            (b"a,b,label\n1,NaN,x\n", vec!["\"b\"", "finite"]),
            (b"a,b,label\n1,\xff,x\n", vec!["UTF-8"]),
            (b"a,b,label\n1,2,\n", vec!["target cell is empty"]),
        ] {
            let err = strict_err(body);
            for w in wants {
                assert!(err.contains(w), "error {err:?} should mention {w:?}");
            }
        }
    }

    #[test]
    fn lenient_read_keeps_every_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(&dir, "d.csv", b"a,b,label\n1,2,x\noops,2,x\n3,4,y\n1\n");
        let t = read_rows(&p, None, "label", None).expect("read");
        assert_eq!(t.rows.len(), 4);
        assert!(t.rows[0].result.is_ok());
        assert!(t.rows[1].result.is_err());
        assert!(t.rows[3].result.is_err());
    }

    #[test]
    fn columns_are_matched_by_name_then_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(&dir, "d.csv", b"b,label,a\n2,x,1\n");
        let names = vec!["a".to_string(), "b".to_string()];
        let t = read_rows(&p, None, "label", Some(&names)).expect("read");
        assert_eq!(t.rows[0].result.as_ref().expect("ok").0, vec![1.0, 2.0]);
        let other = vec!["p".to_string(), "q".to_string()];
        let t = read_rows(&p, None, "label", Some(&other)).expect("read");
        assert_eq!(t.rows[0].result.as_ref().expect("ok").0, vec![2.0, 1.0]);
        let three = vec!["p".to_string(), "q".to_string(), "r".to_string()];
        let err = read_rows(&p, None, "label", Some(&three))
            .expect_err("width")
            .to_string();
        assert!(err.contains("expects 3 features"), "{err}");
    }

    #[test]
    fn jsonl_reads_like_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(
            &dir,
            "d.jsonl",
            b"{\"a\":1,\"b\":2,\"label\":\"x\"}\n{\"a\":3,\"b\":4,\"label\":\"y\"}\nnot json\n",
        );
        let t = read_rows(&p, None, "label", None).expect("read");
        assert_eq!(t.feature_names, vec!["a", "b"]);
        assert_eq!(t.rows.len(), 3);
        assert!(t.rows[2].result.is_err());
        let d = load_dataset(&p, "label", None);
        assert!(d.is_err(), "strict load must reject the bad line");
    }

    #[test]
    fn numeric_labels_sort_numerically_and_unseen_labels_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = file(&dir, "d.csv", b"a,label\n1,10\n2,9\n3,2\n");
        let d = load_dataset(&p, "label", None).expect("load");
        assert_eq!(d.class_names().expect("classes"), ["2", "9", "10"]);
        let known = vec!["2".to_string(), "9".to_string()];
        let err = load_dataset(&p, "label", Some(&known))
            .expect_err("unseen")
            .to_string();
        assert!(err.contains("never seen"), "{err}");
    }
}
