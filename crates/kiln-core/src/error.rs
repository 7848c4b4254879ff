use std::path::PathBuf;

/// Errors raised while reading or writing kiln's shared artifacts.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What kiln was doing ("reading", "writing", ...).
        action: &'static str,
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON artifact file could not be parsed.
    #[error("{path} is not a valid {what}: {source}")]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// What the file should have held.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An artifact is internally inconsistent or of an unsupported version.
    #[error("invalid model artifact {path}: {reason}")]
    InvalidArtifact {
        /// The artifact directory.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// A model spec does not describe a valid network.
    #[error("invalid model spec: {0}")]
    InvalidSpec(String),
}

impl CoreError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
