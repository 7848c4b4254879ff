//! Synthetic classification data, reproducible from a seed.

use kiln_core::{Dataset, Targets};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn names(features: usize, classes: usize) -> (Vec<String>, Vec<String>) {
    (
        (0..features).map(|j| format!("f{j}")).collect(),
        (0..classes).map(|c| c.to_string()).collect(),
    )
}

/// Gaussian blobs: `classes` centres drawn uniformly in `[-6, 6]^features`, and points drawn
/// around them with standard deviation `spread`. Rows cycle through the classes, so every class
/// gets `rows / classes` rows (±1).
pub fn blobs(rows: usize, features: usize, classes: usize, spread: f32, seed: u64) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..features).map(|_| rng.random_range(-6.0..6.0)).collect())
        .collect();
    let noise = Normal::new(0.0f32, spread.max(1e-6))
        .unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for i in 0..rows {
        let c = i % classes.max(1);
        for &m in &centres[c] {
            x.push(m + noise.sample(&mut rng));
        }
        y.push(c as u32);
    }
    let (feature_names, class_names) = names(features, classes);
    Dataset {
        feature_names,
        features: x,
        targets: Some(Targets::Classes {
            indices: y,
            names: class_names,
        }),
    }
}

/// A `make_classification`-style generator: each class is a Gaussian cluster around a vertex of
/// a hypercube with side `2 * class_sep` in the `informative` dimensions; `features -
/// informative` further columns are random linear combinations of the informative ones plus
/// noise, so the task needs feature interactions to be solved well.
pub fn make_classification(
    rows: usize,
    features: usize,
    informative: usize,
    classes: usize,
    class_sep: f32,
    seed: u64,
) -> Dataset {
    let informative = informative.clamp(1, features.max(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let unit = Normal::new(0.0f32, 1.0).expect("unit normal");
    // Distinct hypercube vertices, one per class.
    let mut vertices: Vec<Vec<f32>> = Vec::new();
    let mut code = 0u64;
    while vertices.len() < classes {
        let v: Vec<f32> = (0..informative)
            .map(|b| {
                if (code >> (b % 63)) & 1 == 1 {
                    class_sep
                } else {
                    -class_sep
                }
            })
            .collect();
        code += 1;
        if !vertices.contains(&v) || code > (classes as u64) * 4 {
            vertices.push(v);
        }
    }
    let mix: Vec<Vec<f32>> = (0..features - informative)
        .map(|_| (0..informative).map(|_| unit.sample(&mut rng)).collect())
        .collect();
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for i in 0..rows {
        let c = i % classes.max(1);
        let inf: Vec<f32> = vertices[c]
            .iter()
            .map(|&v| v + unit.sample(&mut rng))
            .collect();
        x.extend_from_slice(&inf);
        for w in &mix {
            let v: f32 =
                w.iter().zip(&inf).map(|(a, b)| a * b).sum::<f32>() + 0.1 * unit.sample(&mut rng);
            x.push(v);
        }
        y.push(c as u32);
    }
    let (feature_names, class_names) = names(features, classes);
    Dataset {
        feature_names,
        features: x,
        targets: Some(Targets::Classes {
            indices: y,
            names: class_names,
        }),
    }
}

/// A `make_regression`-style generator: `y = x · w + b + noise` over standard-normal features,
/// with `informative` non-zero weights, plus a mild non-linearity (`0.5 · x₀²`) so that a
/// network has something to learn beyond a linear fit.
pub fn make_regression(
    rows: usize,
    features: usize,
    informative: usize,
    noise: f32,
    seed: u64,
) -> Dataset {
    let informative = informative.clamp(1, features.max(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let unit = Normal::new(0.0f32, 1.0).expect("unit normal");
    let w: Vec<f32> = (0..features)
        .map(|j| {
            if j < informative {
                rng.random_range(-3.0..3.0)
            } else {
                0.0
            }
        })
        .collect();
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f32> = (0..features).map(|_| unit.sample(&mut rng)).collect();
        let v = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>()
            + 0.5 * row[0] * row[0]
            + 1.0
            + noise * unit.sample(&mut rng);
        x.extend_from_slice(&row);
        y.push(v);
    }
    Dataset {
        feature_names: (0..features).map(|j| format!("f{j}")).collect(),
        features: x,
        targets: Some(Targets::Values(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_seeded_and_balanced() {
        let a = blobs(90, 3, 3, 1.0, 5);
        let b = blobs(90, 3, 3, 1.0, 5);
        assert_eq!(a, b);
        let counts = a
            .class_indices()
            .expect("classes")
            .iter()
            .fold([0; 3], |mut c, &i| {
                c[i as usize] += 1;
                c
            });
        assert_eq!(counts, [30, 30, 30]);
        let m = make_classification(50, 6, 3, 4, 2.0, 1);
        assert_eq!(m.rows(), 50);
        assert_eq!(m.n_features(), 6);
    }
}
