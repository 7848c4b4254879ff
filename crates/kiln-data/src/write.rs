use crate::DataError;
use kiln_core::{Dataset, Targets};
use std::path::Path;

/// Writes a data set as CSV (features, then the target column), atomically. Floats are written
/// in their shortest round-trip form, so reading the file back gives the same values.
pub fn write_csv(path: &Path, data: &Dataset, target: &str) -> Result<(), DataError> {
    kiln_core::fsutil::write_atomic_with(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let mut header: Vec<&str> = data.feature_names.iter().map(String::as_str).collect();
        if data.targets.is_some() {
            header.push(target);
        }
        out.write_record(&header)?;
        for i in 0..data.rows() {
            let mut rec: Vec<String> = data.row(i).iter().map(|v| v.to_string()).collect();
            match &data.targets {
                Some(Targets::Classes { indices, names }) => {
                    rec.push(names[indices[i] as usize].clone())
                }
                Some(Targets::Values(v)) => rec.push(v[i].to_string()),
                None => {}
            }
            out.write_record(&rec)?;
        }
        out.flush()
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn csv_write_read_round_trips(values in proptest::collection::vec(-1e6f32..1e6, 1..40), classes in 1usize..4) {
            let rows = values.len();
            let data = Dataset {
                feature_names: vec!["x".into()],
                features: values.clone(),
                targets: Some(Targets::Classes {
                    indices: (0..rows).map(|i| (i % classes) as u32).collect(),
                    names: (0..classes).map(|c| format!("c{c}")).collect(),
                }),
            };
            let dir = tempfile::tempdir().expect("tempdir");
            let p = dir.path().join("d.csv");
            write_csv(&p, &data, "label").expect("write");
            let names = data.class_names().expect("names").to_vec();
            let back = crate::load_dataset(&p, "label", Some(&names)).expect("read");
            prop_assert_eq!(back.features, data.features);
            prop_assert_eq!(back.targets, data.targets);
        }
    }
}
