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
    for r in data.chunks_mut(row.max(1)) {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in r.iter_mut() {
            let d = *v - max;
            *v = if d < FLUSH_BELOW { 0.0 } else { d.exp() };
            sum += *v;
        }
        let inv = sum.recip();
        for v in r.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
