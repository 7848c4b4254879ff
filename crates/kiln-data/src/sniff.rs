//! Guessing what a data file holds from its header and first rows: the target column and the
//! task (`kiln init` offers these as defaults).

use crate::DataError;
use kiln_core::Task;
use std::path::Path;

/// What a data file suggests.
#[derive(Debug, Clone, PartialEq)]
pub struct Sniffed {
    /// Column names, file order.
    pub columns: Vec<String>,
    /// The target column: the one asked for, else a conventional name, else the last column.
    pub target: String,
    /// Classification when the target holds text or at most 20 distinct integers, else
    /// regression.
    pub task: Task,
    /// Rows read to decide.
    pub rows_sampled: usize,
}

const TARGET_NAMES: [&str; 6] = ["label", "target", "class", "y", "species", "quality"];
/// Rows read at most.
pub const SNIFF_ROWS: usize = 2000;

/// Reads the header and up to [`SNIFF_ROWS`] rows of a CSV or JSONL file (`.jsonl`, `.ndjson`)
/// and guesses the target column and the task; `target` names the column instead of guessing.
pub fn sniff(path: &Path, target: Option<&str>) -> Result<Sniffed, DataError> {
    if path.is_dir() {
        let why = "this is a directory; give the data file (CSV or JSONL)";
        return Err(io(
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, why),
        ));
    }
    let (columns, rows) = if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson")
    ) {
        jsonl_sample(path)?
    } else {
        csv_sample(path)?
    };
    if columns.len() < 2 {
        return Err(DataError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "found {} column(s); kiln needs feature columns and a target column, comma-separated with a header line",
                columns.len()
            ),
        });
    }
    let target = match target {
        Some(t) if columns.iter().any(|c| c == t) => t.to_string(),
        Some(t) => {
            return Err(DataError::MissingTarget {
                path: path.to_path_buf(),
                target: t.to_string(),
                columns: columns.join(", "),
            });
        }
        None => columns
            .iter()
            .find(|c| TARGET_NAMES.contains(&c.to_ascii_lowercase().as_str()))
            .or(columns.last())
            .cloned()
            .unwrap_or_default(),
    };
    let idx = columns.iter().position(|c| *c == target).unwrap_or(0);
    let task = guess_task(rows.iter().filter_map(|r| r.get(idx).map(String::as_str)));
    Ok(Sniffed {
        columns,
        target,
        task,
        rows_sampled: rows.len(),
    })
}

/// Classification for text or a few distinct integers, else regression.
fn guess_task<'a>(cells: impl Iterator<Item = &'a str>) -> Task {
    let values: Vec<&str> = cells.filter(|v| !v.is_empty()).collect();
    let numbers: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
    let distinct: std::collections::BTreeSet<&str> = values.iter().copied().collect();
    if numbers.len() < values.len()
        || (numbers.iter().all(|x| x.fract() == 0.0) && distinct.len() <= 20)
    {
        Task::Classification
    } else {
        Task::Regression
    }
}

type Sample = (Vec<String>, Vec<Vec<String>>);

fn io(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn jsonl_sample(path: &Path) -> Result<Sample, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    for (i, line) in lines.take(SNIFF_ROWS).enumerate() {
        let row_error = |reason: String| DataError::Row {
            path: path.to_path_buf(),
            row: i,
            line: i + 1,
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| row_error(format!("not a JSON object: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| row_error("each line must be a JSON object".into()))?;
        if columns.is_empty() {
            columns = obj.keys().cloned().collect();
        }
        rows.push(
            columns
                .iter()
                .map(|c| match obj.get(c) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                })
                .collect(),
        );
    }
    Ok((columns, rows))
}

fn csv_sample(path: &Path) -> Result<Sample, DataError> {
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let columns: Vec<String> = r
        .headers()
        .map_err(|e| DataError::Schema {
            path: path.to_path_buf(),
            reason: format!("cannot read the header: {e}"),
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let rows = r
        .records()
        .take(SNIFF_ROWS)
        .filter_map(|x| x.ok())
        .map(|rec| rec.iter().map(|c| c.trim().to_string()).collect())
        .collect();
    Ok((columns, rows))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn detects_conventional_target_and_task() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.csv");
        std::fs::write(&p, "x,y2,species\n1,2,setosa\n3,4,virginica\n").unwrap();
        let got = sniff(&p, None).unwrap();
        assert_eq!(
            (got.target.as_str(), got.task),
            ("species", Task::Classification)
        );
        std::fs::write(&p, "a,b,price\n1,2,3.5\n3,4,7.25\n").unwrap();
        let got = sniff(&p, None).unwrap();
        assert_eq!((got.target.as_str(), got.task), ("price", Task::Regression));
        std::fs::write(&p, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
        assert_eq!(sniff(&p, None).unwrap().task, Task::Classification);
        let err = sniff(&p, Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("no target column \"nope\"") && err.contains("a, b, label"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_columns_and_one_column_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        std::fs::write(
            &p,
            "{\"f\":1.5,\"target\":\"x\"}\n{\"f\":2,\"target\":\"y\"}\n",
        )
        .unwrap();
        let got = sniff(&p, None).unwrap();
        assert_eq!(got.columns, ["f", "target"]);
        assert_eq!(got.task, Task::Classification);
        let p = d.path().join("one.csv");
        std::fs::write(&p, "a;b;c\n1;2;3\n").unwrap();
        let err = sniff(&p, None).unwrap_err().to_string();
        assert!(err.contains("comma-separated"), "{err}");
        assert!(sniff(d.path(), None).is_err(), "a directory");
    }
}
