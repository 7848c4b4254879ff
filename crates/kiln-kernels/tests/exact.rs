//! Every instruction set's int8 linear equals the scalar reference bit for bit.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_arguments,
    clippy::type_complexity
)]

use kiln_kernels::{Int8Linear, Isa, reference_linear};
use proptest::prelude::*;

fn run(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[i8],
    ws: &[f32],
    b: &[f32],
) -> Vec<f32> {
    let layer = Int8Linear::with_isa(w, k, n, ws.to_vec(), Some(b.to_vec()), isa).unwrap();
    let mut y = vec![0.0f32; m * n];
    layer.forward(x, m, &mut y).unwrap();
    y
}

fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<i8>, Vec<f32>, Vec<f32>)> {
    (1usize..200, 1usize..70, 1usize..40).prop_flat_map(|(m, k, n)| {
        (
            Just(m),
            Just(k),
            Just(n),
            prop::collection::vec(-8.0f32..8.0, m * k),
            prop::collection::vec(-127i8..=127, k * n),
            prop::collection::vec(0.0001f32..0.1, n),
            prop::collection::vec(-1.0f32..1.0, n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_isa_equals_the_reference((m, k, n, x, w, ws, b) in case()) {
        let mut expected = vec![0.0f32; m * n];
        reference_linear(&x, m, k, n, &w, &ws, &b, &mut expected);
        for isa in Isa::all_available() {
            let y = run(isa, &x, m, k, n, &w, &ws, &b);
            prop_assert_eq!(&y, &expected, "{}", isa);
        }
    }

    #[test]
    fn threads_change_nothing((m, k, n, x, w, ws, b) in case(), threads in 2usize..5) {
        let one = run(Isa::best(), &x, m, k, n, &w, &ws, &b);
        let layer = Int8Linear::new(&w, k, n, ws.clone(), Some(b.clone()))
            .unwrap()
            .with_threads(threads)
            .with_relu(true);
        let mut y = vec![0.0f32; m * n];
        layer.forward(&x, m, &mut y).unwrap();
        let relu: Vec<f32> = one.iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect();
        prop_assert_eq!(y, relu);
    }

    #[test]
    fn a_static_activation_scale_is_exact_too(
        (m, k, n, x, w, ws, b) in case(),
        scale in 0.001f32..0.2,
        zp in 0u8..=255,
    ) {
        let mut expected = vec![0.0f32; m * n];
        kiln_kernels::reference_linear_static(&x, m, k, n, &w, &ws, &b, (scale, zp), &mut expected);
        for isa in Isa::all_available() {
            let layer = Int8Linear::with_isa(&w, k, n, ws.clone(), Some(b.clone()), isa)
                .unwrap()
                .with_static_activation(scale, zp)
                .unwrap();
            let mut y = vec![0.0f32; m * n];
            layer.forward(&x, m, &mut y).unwrap();
            prop_assert_eq!(&y, &expected, "{}", isa);
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch((m, k, n, x, w, ws, b) in case()) {
        let all = run(Isa::best(), &x, m, k, n, &w, &ws, &b);
        for r in 0..m {
            let one = run(Isa::best(), &x[r * k..(r + 1) * k], 1, k, n, &w, &ws, &b);
            prop_assert_eq!(&one[..], &all[r * n..(r + 1) * n]);
        }
    }
}

#[test]
fn extreme_weights_and_long_rows_stay_exact() {
    // Every weight at ±127 and every activation at the ends of its range: the largest sums
    // the accumulators see.
    let (m, k, n) = (9, 4099, 33);
    let x: Vec<f32> = (0..m * k)
        .map(|i| if i % 3 == 0 { -5.0 } else { 7.0 })
        .collect();
    let w: Vec<i8> = (0..k * n)
        .map(|i| if i % 2 == 0 { 127 } else { -127 })
        .collect();
    let ws = vec![0.01f32; n];
    let b = vec![0.0f32; n];
    let mut expected = vec![0.0f32; m * n];
    reference_linear(&x, m, k, n, &w, &ws, &b, &mut expected);
    for isa in Isa::all_available() {
        assert_eq!(run(isa, &x, m, k, n, &w, &ws, &b), expected, "{isa}");
    }
}

#[test]
fn bad_shapes_and_scales_are_refused() {
    assert!(Int8Linear::new(&[1, 2, 3], 2, 2, vec![1.0; 2], None).is_err());
    assert!(Int8Linear::new(&[1, 2, 3, 4], 2, 2, vec![1.0], None).is_err());
    assert!(Int8Linear::new(&[1, 2, 3, 4], 2, 2, vec![1.0, 0.0], None).is_err());
    assert!(Int8Linear::new(&[1, 2, 3, 4], 2, 2, vec![1.0, f32::NAN], None).is_err());
    let layer = Int8Linear::new(&[1, 2, 3, 4], 2, 2, vec![1.0; 2], None).unwrap();
    let mut y = [0.0f32; 2];
    assert!(layer.forward(&[1.0, 2.0, 3.0], 1, &mut y).is_err());
    assert!(Int8Linear::new(&vec![0; 40_000], 40_000, 1, vec![1.0], None).is_err());
}
