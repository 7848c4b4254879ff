//! Tabular data for kiln: CSV and JSONL readers with a named target column, synthetic data
//! generators, train/val/test splits and standardisation statistics.
//!
//! Two reading modes serve two needs. [`load_dataset`] is *strict*: training data must be
//! clean, and the first bad cell is an error naming the file, the row and the column.
//! [`read_rows`] is *lenient*: inference keeps going, and every row yields either features or
//! a per-row error, so that rows out always equals rows in.
//!
//! ```
//! use kiln_data::{synthetic, split, fit_normalization};
//!
//! let data = synthetic::blobs(300, 4, 3, 0.5, 7);
//! let parts = split(&data, 0.7, 0.15, 7);
//! assert_eq!(parts.train.rows() + parts.val.rows() + parts.test.rows(), 300);
//! let norm = fit_normalization(&parts.train);
//! assert_eq!(norm.mean.len(), 4);
//! ```

#![warn(missing_docs)]

mod error;
pub mod npy;
mod read;
mod sniff;
pub mod synthetic;
mod write;

pub use error::DataError;
pub use read::{
    Format, MAX_ROW_BYTES, RowError, RowParser, RowRecord, RowTable, load_dataset,
    load_regression_dataset, read_rows, read_rows_with,
};
pub use sniff::{SNIFF_ROWS, Sniffed, sniff};
pub use write::write_csv;

use kiln_core::{Dataset, Normalization};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// The default name of the target column.
pub const DEFAULT_TARGET: &str = "label";

/// A data set split three ways.
#[derive(Debug, Clone)]
pub struct Split {
    /// Training rows.
    pub train: Dataset,
    /// Validation rows.
    pub val: Dataset,
    /// Held-out test rows.
    pub test: Dataset,
}

/// Shuffles the rows with `seed` and splits them into train/val/test by the given fractions
/// (the test part gets the rest).
pub fn split(data: &Dataset, train_frac: f64, val_frac: f64, seed: u64) -> Split {
    let n = data.rows();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let n_train = ((n as f64) * train_frac).round() as usize;
    let n_val = (((n as f64) * val_frac).round() as usize).min(n - n_train.min(n));
    let n_train = n_train.min(n);
    Split {
        train: data.select(&idx[..n_train]),
        val: data.select(&idx[n_train..n_train + n_val]),
        test: data.select(&idx[n_train + n_val..]),
    }
}

/// Fits per-feature mean and standard deviation (population). Constant columns get a standard
/// deviation of 1 so that standardising never divides by zero.
pub fn fit_normalization(data: &Dataset) -> Normalization {
    let f = data.n_features();
    let n = data.rows().max(1) as f64;
    let mut mean = vec![0f64; f];
    for i in 0..data.rows() {
        for (m, &x) in mean.iter_mut().zip(data.row(i)) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; f];
    for i in 0..data.rows() {
        for ((v, &x), m) in var.iter_mut().zip(data.row(i)).zip(&mean) {
            *v += (x as f64 - m).powi(2);
        }
    }
    let std = var
        .iter()
        .map(|v| {
            let s = (v / n).sqrt();
            if s < 1e-12 { 1.0 } else { s as f32 }
        })
        .collect();
    Normalization {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_centres_and_scales() {
        let data = synthetic::blobs(500, 3, 2, 1.0, 1);
        let norm = fit_normalization(&data);
        let mut x = data.features.clone();
        norm.apply(&mut x);
        let z = Dataset {
            features: x,
            ..data.clone()
        };
        let again = fit_normalization(&z);
        for (m, s) in again.mean.iter().zip(&again.std) {
            assert!(m.abs() < 1e-4, "mean {m}");
            assert!((s - 1.0).abs() < 1e-3, "std {s}");
        }
    }

    #[test]
    fn constant_column_gets_unit_std() {
        let data = Dataset {
            feature_names: vec!["a".into()],
            features: vec![2.0; 5],
            targets: None,
        };
        assert_eq!(fit_normalization(&data).std, vec![1.0]);
    }

    #[test]
    fn split_is_a_partition_and_reproducible() {
        let data = synthetic::blobs(101, 2, 2, 1.0, 3);
        let a = split(&data, 0.6, 0.2, 9);
        let b = split(&data, 0.6, 0.2, 9);
        assert_eq!(a.train.features, b.train.features);
        assert_eq!(a.train.rows() + a.val.rows() + a.test.rows(), 101);
    }
}
