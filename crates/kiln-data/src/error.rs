use std::path::PathBuf;

/// Errors from reading or writing tabular data. Each names the file, and where it applies the
/// row and the column, so the user can go straight to the bad cell.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file has no header or no rows.
    #[error("{path}: {reason}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The target column is not in the header.
    #[error(
        "{path}: no target column {target:?} in the header (columns: {columns}); pass --target <name>"
    )]
    MissingTarget {
        /// The file.
        path: PathBuf,
        /// The requested target.
        target: String,
        /// The columns that exist.
        columns: String,
    },
    /// A cell is not what it should be.
    #[error("{path}: row {row} (line {line}), column {column:?}: {reason}")]
    Cell {
        /// The file.
        path: PathBuf,
        /// 0-based data row.
        row: usize,
        /// 1-based line in the file.
        line: usize,
        /// Column name.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A row as a whole is malformed (wrong number of fields, not UTF-8, invalid JSON).
    #[error("{path}: row {row} (line {line}): {reason}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 0-based data row.
        row: usize,
        /// 1-based line in the file.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The columns do not match what the model expects.
    #[error("{path}: {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] kiln_core::CoreError),
}
