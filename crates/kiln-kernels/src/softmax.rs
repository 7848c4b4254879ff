//! Softmax over short rows.

/// Below this, `exp(x − max)` is flushed to 0: it is under 2·10⁻³⁵, and letting it become a
/// subnormal number makes every later operation on it about a hundred times slower (a batch of
/// confident predictions is full of them).
const FLUSH_BELOW: f32 = -80.0;

/// Softmax of each `row`-long row of `data`, in place: `exp(x − max) · (1 / Σ exp(x − max))`,
/// with terms under 2·10⁻³⁵ flushed to 0. A trailing partial row is treated as a row of its own.
///
/// On x86-64 with AVX2 the loop is compiled VEX-encoded: after tract's AVX-512 kernels, legacy
/// SSE code pays a state-transition stall on every instruction mixing the two (measured: the
/// softmax of 64 rows took 50 µs instead of 3).
pub fn softmax_rows(data: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::x86::has_avx2() {
        crate::x86::softmax_rows_avx2(data, row);
        return;
    }
    softmax_rows_generic(data, row);
}

#[inline(always)]
pub(crate) fn softmax_rows_generic(data: &mut [f32], row: usize) {
    let row = row.max(1);
    // Three passes, so that the exponentials run as one long vectorized loop over the whole
    // batch (rows of 10 classes are too short to vectorize one at a time): subtract each row's
    // max, exponentiate everything, then divide each row by its sum, taken left to right.
    for r in data.chunks_mut(row) {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        r.iter_mut().for_each(|v| *v -= max);
    }
    for v in data.iter_mut() {
        *v = if *v < FLUSH_BELOW {
            0.0
        } else {
            exp_non_positive(*v)
        };
    }
    for r in data.chunks_mut(row) {
        let inv = r.iter().fold(0.0f32, |s, &v| s + v).recip();
        r.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `exp(d)` for `d` in [−80, 0] (what softmax needs after subtracting the row's max and
/// flushing), within 1 ulp (0.82 measured), as straight-line f32 arithmetic the compiler vectorizes; libm's
/// `expf` is a call per element and was a third of a 64×10 softmax. `d = n·ln 2 + r` with
/// `n = round(d / ln 2)` and |r| ≤ ln 2 / 2 (ln 2 split in two parts so that `n·ln 2` is exact),
/// `exp(r)` by its Taylor series to degree 7 (truncation error under 10⁻⁸), and `2ⁿ` built
/// from its exponent bits.
#[inline(always)]
pub(crate) fn exp_non_positive(d: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_145_75; // 16 significant bits: n · LN2_HI is exact for |n| < 256
    const LN2_LO: f32 = 1.428_606_8e-6;
    let t = d * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (d - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n is t's integer part: its low mantissa bits, offset by MAGIC's.
    let n_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_one_ulp_over_its_range() {
        let mut worst = 0f64;
        for i in 0..=800_000 {
            let d = -80.0 * i as f32 / 800_000.0;
            let want = f64::from(d).exp();
            let got = f64::from(exp_non_positive(d));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
        }
        assert!(worst <= 1.0, "worst error {worst} ulp");
        assert_eq!(exp_non_positive(0.0), 1.0);
    }

    #[test]
    fn rows_sum_to_one_and_keep_their_order() {
        let mut x = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1000.0];
        softmax_rows(&mut x, 3);
        for r in x.chunks(3) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(x[0] < x[1] && x[1] < x[2]);
        // A huge logit does not overflow: the max is subtracted first; the others flush to 0.
        assert!((x[5] - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
    }
}
