use crate::OptimizeError;
use kiln_infer::{EngineKind, Model};
use serde::Serialize;
use std::path::Path;

/// How an optimized model compares with the model it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Where the rows came from: "validation data" or "generated inputs".
    pub source: String,
    /// Rows compared.
    pub rows: usize,
    /// Largest absolute difference between the two models' score outputs.
    pub max_abs_diff: f32,
    /// Fraction of rows where both models predict the same class.
    pub agreement: f64,
    /// Accuracy of the input model (validation data only).
    pub accuracy_before: Option<f64>,
    /// Accuracy of the optimized model (validation data only).
    pub accuracy_after: Option<f64>,
}

impl Comparison {
    /// One summary line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "compared on {} rows of {}: agreement {:.4}, max abs diff {:.3e}",
            self.rows, self.source, self.agreement, self.max_abs_diff
        );
        if let (Some(a), Some(b)) = (self.accuracy_before, self.accuracy_after) {
            s.push_str(&format!(", accuracy {a:.4} -> {b:.4}"));
        }
        s
    }

    /// `accuracy_after / accuracy_before`, when both are known.
    pub fn accuracy_ratio(&self) -> Option<f64> {
        match (self.accuracy_before, self.accuracy_after) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        }
    }
}

/// Runs both serialized models (tract) on the same rows and compares their predictions: on
/// labelled `data` when given (accuracy of each), else on 256 generated rows drawn around the
/// model's standardisation statistics.
pub fn compare_models(
    before: &[u8],
    after: &[u8],
    data: Option<&Path>,
    target: &str,
    origin: &Path,
) -> Result<Comparison, OptimizeError> {
    let a = Model::from_bytes(before, origin, EngineKind::Tract)?;
    let b = Model::from_bytes(after, origin, EngineKind::Tract)?;
    let (features, rows, targets, source) = match data {
        Some(path) => {
            let table =
                kiln_data::read_rows(path, None, target, a.info().feature_names.as_deref())?;
            let mut x = Vec::new();
            let mut t = Vec::new();
            for r in table.rows {
                if let Ok((f, label)) = r.result {
                    x.extend(f);
                    t.push(label);
                }
            }
            let n = t.len();
            (x, n, Some(t), "validation data".to_string())
        }
        None => {
            if a.info().input_width.is_none() {
                return Err(OptimizeError::Options("the model's input width is not fixed; pass --validate-data to compare on real rows".into()));
            }
            let n = 256;
            (
                kiln_infer::synthetic_rows(a.info(), n, 0x6b696c6e)?,
                n,
                None,
                "generated inputs".to_string(),
            )
        }
    };
    if rows == 0 {
        return Err(OptimizeError::Options(
            "the validation data has no readable rows".into(),
        ));
    }
    let pa = a.predict(&features, rows)?;
    let pb = b.predict(&features, rows)?;
    let mut max_abs = 0f32;
    let mut agree = 0usize;
    for (x, y) in pa.iter().zip(&pb) {
        for (p, q) in x.scores.iter().zip(&y.scores) {
            let d = (p - q).abs();
            if d.is_nan() || d > max_abs {
                max_abs = d;
            }
        }
        if x.label == y.label {
            agree += 1;
        }
    }
    let classification = a.info().task == kiln_core::Task::Classification;
    let accuracy = |preds: &[kiln_infer::Prediction]| -> Option<f64> {
        if !classification {
            return None;
        }
        let t = targets.as_ref()?;
        let labelled: Vec<(&kiln_infer::Prediction, &String)> = preds
            .iter()
            .zip(t)
            .filter_map(|(p, l)| l.as_ref().map(|l| (p, l)))
            .collect();
        (!labelled.is_empty()).then(|| {
            labelled.iter().filter(|(p, l)| *p.label == ***l).count() as f64 / labelled.len() as f64
        })
    };
    Ok(Comparison {
        source,
        rows,
        max_abs_diff: max_abs,
        agreement: agree as f64 / rows as f64,
        accuracy_before: accuracy(&pa),
        accuracy_after: accuracy(&pb),
    })
}
