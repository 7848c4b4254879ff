//! `Model::evaluate`: predictions scored against a data set's targets by class name, so a set
//! whose class list is ordered differently (or lacks classes) is still scored right.

mod common;

use kiln_core::{Dataset, Targets};

fn set(features: Vec<f32>, targets: Targets) -> Dataset {
    Dataset {
        feature_names: vec!["a".into(), "b".into(), "c".into()],
        features,
        targets: Some(targets),
    }
}

#[test]
fn classes_are_matched_by_name_not_by_index() {
    let m = common::model();
    // The model predicts classes 2, 3 and 1 for these rows (argmax of each weight row).
    let x = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let names = vec!["3".to_string(), "1".to_string(), "2".to_string()];
    let eval = m
        .evaluate(&set(
            x.clone(),
            Targets::Classes {
                indices: vec![2, 0, 1],
                names,
            },
        ))
        .expect("evaluate");
    let labels: Vec<&str> = eval.predictions.iter().map(|p| &*p.label).collect();
    assert_eq!(labels, ["2", "3", "1"]);
    let report = eval.classification.expect("classification");
    assert_eq!((report.rows, report.accuracy), (3, 1.0));
    // A wrong truth is counted wrong.
    let names = vec!["0".to_string()];
    let eval = m
        .evaluate(&set(
            x,
            Targets::Classes {
                indices: vec![0, 0, 0],
                names,
            },
        ))
        .expect("evaluate");
    assert_eq!(eval.classification.expect("report").accuracy, 0.0);
}

#[test]
fn numeric_targets_get_regression_metrics_and_widths_must_match() {
    let m = common::model();
    let x = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let eval = m
        .evaluate(&set(x, Targets::Values(vec![0.0, 1.0])))
        .expect("evaluate");
    let r = eval.regression.expect("regression");
    assert_eq!(r.labelled, 2);
    let wide = Dataset {
        feature_names: vec!["a".into(), "b".into()],
        features: vec![0.0; 4],
        targets: None,
    };
    let err = m.evaluate(&wide).expect_err("width");
    assert!(err.to_string().contains("3 features"), "{err}");
}
