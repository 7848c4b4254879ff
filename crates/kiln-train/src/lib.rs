//! Training stage of kiln: a declarative model spec trained with burn 0.22 on its pure-Rust
//! `flex` CPU backend, written out as a trained-model directory that the other stages read.
//!
//! Principal types: [`TrainConfig`] (the whole run, declared as data and loadable from TOML),
//! [`BurnTrainer`] (implements [`kiln_core::Trainer`]) and [`TrainOutcome`] (the artifact plus
//! per-epoch history).
//!
//! Design decision: kiln drives burn's autodiff and optimizers with its own epoch loop instead
//! of burn's `Learner`. The loop owns the data order (a seeded shuffle per epoch), emits
//! [`kiln_core::Event`]s that any front end renders (burn's non-TTY renderer prints no metrics),
//! and keeps the *best* epoch's weights by validation loss. The artifact stores weights as
//! SafeTensors in burn's layout (`Linear` weights `[in, out]`) plus burn's own outputs for
//! sample rows, so the export stage can verify itself without linking burn.
//!
//! ```no_run
//! use kiln_core::{NullSink, Trainer};
//! use kiln_train::{BurnTrainer, TrainConfig};
//!
//! let data = kiln_data::synthetic::blobs(600, 4, 3, 0.8, 1);
//! let parts = kiln_data::split(&data, 0.8, 0.2, 1);
//! let trainer = BurnTrainer::new(TrainConfig { epochs: 5, ..TrainConfig::default() });
//! let model = trainer.train(&parts.train, Some(&parts.val), "run/model".as_ref(), &mut NullSink)?;
//! # Ok::<(), kiln_train::TrainError>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
mod config;
#[cfg(feature = "distributed")]
pub mod distributed;
mod error;
pub mod import;
mod layers;
mod net;
mod trainer;

pub use config::{Arch, EarlyStopping, OptimizerKind, Precision, Schedule, Strategy, TrainConfig};
pub use error::TrainError;
pub use layers::{ConfigFile, TrainOverrides, check_config};
pub use trainer::{BurnTrainer, EpochMetrics, EvalMetrics, StepMetrics, TrainOutcome, macro_f1};

/// The burn version kiln trains with, recorded in every artifact.
pub const BURN_VERSION: &str = "0.22.1";
