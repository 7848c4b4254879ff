//! Classification quality from (predicted, true) label pairs: accuracy, precision, recall and F1
//! per class and macro-averaged, and the confusion matrix. One implementation, used by training
//! (validation and test), batch inference and the report plots, so every number kiln prints
//! about a classifier means the same thing.
//!
//! Conventions follow scikit-learn's `classification_report`: the macro averages run over the
//! classes that occur in the true labels or the predictions; a class with no predicted rows has
//! precision 0, one with no true rows has recall 0.
//!
//! ```
//! use kiln_core::metrics::ClassificationReport;
//!
//! let pairs = [("a", "a"), ("b", "a"), ("b", "b"), ("a", "a")];
//! let r = ClassificationReport::from_pairs(pairs.iter().copied(), &["a".into(), "b".into()]);
//! assert_eq!(r.accuracy, 0.75);
//! assert_eq!(r.confusion, vec![vec![2, 1], vec![0, 1]]); // rows: true a, true b
//! assert!((r.per_class[1].precision - 0.5).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class label.
    pub class: String,
    /// Of the rows predicted as this class, the share that are this class.
    pub precision: f64,
    /// Of the rows of this class, the share predicted as this class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Rows whose true label is this class.
    pub support: u64,
}

/// Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Labelled rows measured.
    pub rows: u64,
    /// Share of rows predicted correctly.
    pub accuracy: f64,
    /// Mean precision over the classes that occur.
    pub macro_precision: f64,
    /// Mean recall over the classes that occur.
    pub macro_recall: f64,
    /// Mean F1 over the classes that occur.
    pub macro_f1: f64,
    /// One entry per class, in the order of [`ClassificationReport::classes`].
    pub per_class: Vec<ClassMetrics>,
    /// Class labels: the known classes in their order, then any label seen only in the data.
    pub classes: Vec<String>,
    /// `confusion[true][predicted]` row counts, indexed like `classes`.
    pub confusion: Vec<Vec<u64>>,
}

impl ClassificationReport {
    /// Builds the report from `(predicted, true)` pairs. `known` lists the model's classes in
    /// order (so the matrix rows line up with the model's outputs); labels outside it, such as
    /// a class never seen in training, are appended.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        known: &[String],
    ) -> Self {
        let mut classes: Vec<String> = known.to_vec();
        let index = |label: &str, classes: &mut Vec<String>| -> usize {
            match classes.iter().position(|c| c == label) {
                Some(i) => i,
                None => {
                    classes.push(label.to_string());
                    classes.len() - 1
                }
            }
        };
        let mut cells: Vec<(usize, usize)> = Vec::new();
        for (pred, truth) in pairs {
            let p = index(pred, &mut classes);
            let t = index(truth, &mut classes);
            cells.push((t, p));
        }
        let k = classes.len();
        let mut confusion = vec![vec![0u64; k]; k];
        for (t, p) in &cells {
            confusion[*t][*p] += 1;
        }
        let rows = cells.len() as u64;
        let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut per_class = Vec::with_capacity(k);
        let (mut sp, mut sr, mut sf, mut occurring) = (0.0, 0.0, 0.0, 0usize);
        for (i, class) in classes.iter().enumerate() {
            let tp = confusion[i][i];
            let predicted: u64 = (0..k).map(|t| confusion[t][i]).sum();
            let support: u64 = confusion[i].iter().sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = ratio(2 * tp, predicted + support);
            if predicted + support > 0 {
                occurring += 1;
                sp += precision;
                sr += recall;
                sf += f1;
            }
            per_class.push(ClassMetrics {
                class: class.clone(),
                precision,
                recall,
                f1,
                support,
            });
        }
        let mean = |s: f64| {
            if occurring == 0 {
                0.0
            } else {
                s / occurring as f64
            }
        };
        Self {
            rows,
            accuracy: ratio(correct, rows),
            macro_precision: mean(sp),
            macro_recall: mean(sr),
            macro_f1: mean(sf),
            per_class,
            classes,
            confusion,
        }
    }

    /// Builds the report from `(predicted, true)` class indices, naming class `i` by
    /// `names[i]` when given, else by its number.
    pub fn from_indices(pairs: &[(i64, i64)], names: Option<&[String]>) -> Self {
        let max = pairs.iter().map(|&(p, t)| p.max(t)).max().unwrap_or(-1);
        let count = names.map_or(0, |n| n.len()).max((max + 1).max(0) as usize);
        let labels: Vec<String> = (0..count)
            .map(|i| {
                names
                    .and_then(|n| n.get(i).cloned())
                    .unwrap_or_else(|| i.to_string())
            })
            .collect();
        let label = |i: i64| -> &str {
            usize::try_from(i)
                .ok()
                .and_then(|i| labels.get(i))
                .map_or("?", String::as_str)
        };
        let named: Vec<(&str, &str)> = pairs.iter().map(|&(p, t)| (label(p), label(t))).collect();
        Self::from_pairs(named, &labels)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hand_counted_three_classes() {
        // true:  a a a b b c
        // pred:  a a b b c c
        let pairs = [
            ("a", "a"),
            ("a", "a"),
            ("b", "a"),
            ("b", "b"),
            ("c", "b"),
            ("c", "c"),
        ];
        let r = ClassificationReport::from_pairs(pairs, &[]);
        assert_eq!(r.classes, ["a", "b", "c"]);
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // a: p 2/2 r 2/3; b: p 1/2 r 1/2; c: p 1/2 r 1/1
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let expect = (f1(1.0, 2.0 / 3.0) + f1(0.5, 0.5) + f1(0.5, 1.0)) / 3.0;
        assert!(
            (r.macro_f1 - expect).abs() < 1e-12,
            "{} vs {expect}",
            r.macro_f1
        );
        assert!((r.macro_precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class[0].support, 3);
    }

    #[test]
    fn unseen_label_is_appended_and_counts_against_recall() {
        let known = vec!["x".to_string(), "y".to_string()];
        let r = ClassificationReport::from_pairs([("x", "x"), ("y", "z")], &known);
        assert_eq!(r.classes, ["x", "y", "z"]);
        assert_eq!(r.per_class[2].recall, 0.0);
        assert_eq!(r.per_class[2].support, 1);
        assert_eq!(r.accuracy, 0.5);
    }

    #[test]
    fn classes_that_never_occur_are_left_out_of_the_macro_mean() {
        let known: Vec<String> = ["a", "b", "unused"].map(String::from).to_vec();
        let r = ClassificationReport::from_pairs([("a", "a"), ("b", "b")], &known);
        assert_eq!(r.macro_f1, 1.0);
        assert_eq!(r.confusion.len(), 3);
    }

    #[test]
    fn empty_input_is_zero_not_nan() {
        let r = ClassificationReport::from_pairs(std::iter::empty(), &[]);
        assert_eq!(r.rows, 0);
        assert_eq!(r.accuracy, 0.0);
        assert_eq!(r.macro_f1, 0.0);
    }

    #[test]
    fn indices_with_and_without_names() {
        let r = ClassificationReport::from_indices(&[(0, 0), (1, 0), (2, 2)], None);
        assert_eq!(r.classes, ["0", "1", "2"]);
        let names: Vec<String> = ["setosa", "versicolor", "virginica", "extra"]
            .map(String::from)
            .to_vec();
        let r = ClassificationReport::from_indices(&[(0, 0), (1, 0)], Some(&names));
        assert_eq!(r.classes.len(), 4);
        assert_eq!(r.confusion[0], vec![1, 1, 0, 0]);
    }
}
