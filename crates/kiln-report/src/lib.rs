//! Plots and reports of kiln runs: training curves, confusion matrices, latency histograms and
//! accuracy-vs-speed charts, each written as both SVG and PNG with `plotters`, and a single
//! self-contained `report.html` that embeds the SVGs and the result tables.
//!
//! The crate draws data it is given; it computes no metrics and knows nothing of burn, tract or
//! ONNX Runtime, so any stage (or a user's program) can plot its own results. Every file is
//! written atomically (temporary file + rename). Text is laid out with DejaVu Sans, which
//! is compiled in, so PNGs render the same on machines without fonts.
//!
//! ```
//! use kiln_report::{Plot, Series, write_plot};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let plot = Plot::TrainingCurves {
//!     loss: vec![Series::new("train", vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.3)])],
//!     accuracy: vec![Series::new("val", vec![(1.0, 0.6), (2.0, 0.8), (3.0, 0.9)])],
//! };
//! let files = write_plot(&plot, dir.path(), "training").unwrap();
//! assert!(std::fs::read_to_string(&files.svg).unwrap().contains("<svg"));
//! assert!(std::fs::read(&files.png).unwrap().starts_with(b"\x89PNG"));
//! ```

#![warn(missing_docs)]

mod html;
mod plot;
pub mod runs;

pub use html::{Block, Report, Section};
pub use plot::{Candidate, Plot, PlotFiles, Series, render_png, render_svg, write_plot};

use std::path::PathBuf;

/// Errors of plotting and report writing.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// plotters failed to draw (for example a degenerate axis range).
    #[error("drawing the {plot} plot failed: {reason}")]
    Draw {
        /// Which plot.
        plot: &'static str,
        /// plotters' message.
        reason: String,
    },
    /// The data cannot be plotted.
    #[error("cannot plot {plot}: {reason}")]
    Data {
        /// Which plot.
        plot: &'static str,
        /// What is wrong with the data.
        reason: String,
    },
    /// Encoding the PNG failed.
    #[error("encoding {path}: {reason}")]
    Encode {
        /// The PNG being written.
        path: PathBuf,
        /// The encoder's message.
        reason: String,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Io(#[from] kiln_core::CoreError),
}
