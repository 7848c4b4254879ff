//! The quantization arithmetic shared by every kernel path and by the reference.

/// `1.5 · 2²³`: adding then subtracting it rounds an f32 of magnitude below 2²² to the nearest
/// integer, ties to even (the sum lands where the spacing of f32 values is exactly 1, and
/// IEEE addition rounds to nearest even). Unlike `f32::round_ties_even` it vectorizes.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Round half to even, exact for `|v| < 2²²` (ONNX `Round`). Quantized values are bounded by
/// 255 in magnitude, far inside that range; NaN stays NaN.
#[inline(always)]
pub(crate) fn round_even(v: f32) -> f32 {
    (v + ROUND_MAGIC) - ROUND_MAGIC
}

/// Quantizes one row of activations to u8, the way the kiln int8 op defines it (the same
/// arithmetic as the ONNX function body kiln writes for the op):
///
/// ```text
/// lo = min(0, min x)   hi = max(0, max x)
/// s  = (hi − lo) / 255, or 1 when that is 0 (an all-zero row)
/// zp = clamp(round(−lo / s), 0, 255)
/// q  = clamp(round(x · (1 / s)) + zp, 0, 255)          round = half to even
/// ```
///
/// Writes `q` (as many values as `x`) and returns `(s, zp)`. Rows with NaN or infinite values
/// quantize to unspecified (but defined) bytes.
#[inline(always)]
pub fn quantize_row(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (s, inv, zp) = row_params(x);
    for (o, &v) in q.iter_mut().zip(x) {
        *o = quantize_value(v, inv, zp);
    }
    (s, zp as i32)
}

/// Quantizes a row with a given `1/scale` and zero point.
#[inline(always)]
pub(crate) fn quantize_fixed(x: &[f32], q: &mut [u8], inv: f32, zp: f32) {
    for (o, &v) in q.iter_mut().zip(x) {
        *o = quantize_value(v, inv, zp);
    }
}

/// `(s, 1/s, zp)` of a row; lane-wise min/max so that it vectorizes.
#[inline(always)]
pub(crate) fn row_params(x: &[f32]) -> (f32, f32, f32) {
    let mut lo = [0.0f32; 16];
    let mut hi = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
    }
    let lo = lo.iter().fold(0.0f32, |a, &b| if b < a { b } else { a });
    let hi = hi.iter().fold(0.0f32, |a, &b| if b > a { b } else { a });
    params_from_range(lo, hi)
}

/// `(s, 1/s, zp)` from a row's range (which includes 0).
#[inline(always)]
pub(crate) fn params_from_range(lo: f32, hi: f32) -> (f32, f32, f32) {
    let s0 = (hi - lo) / 255.0;
    let s = if s0 == 0.0 { 1.0 } else { s0 };
    let zp = round_even(-lo / s).clamp(0.0, 255.0);
    (s, 1.0 / s, zp)
}

/// One activation: `clamp(round(v · inv) + zp, 0, 255)`.
#[inline(always)]
pub(crate) fn quantize_value(v: f32, inv: f32, zp: f32) -> u8 {
    let t = round_even(v * inv) + zp;
    let t = if t < 0.0 { 0.0 } else { t };
    let t = if t > 255.0 { 255.0 } else { t };
    t as u8
}

/// Symmetric per-column int8 quantization of a row-major `k × n` f32 weight matrix:
/// `scale[c] = max|w[·, c]| / 127` (1 for an all-zero column) and
/// `q = clamp(round(w / scale), −127, 127)`.
pub fn quantize_weights_i8(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut scale = vec![0.0f32; n];
    for row in w.chunks_exact(n).take(k) {
        for (s, &v) in scale.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    for s in &mut scale {
        *s = if *s > 0.0 && s.is_finite() {
            *s / 127.0
        } else {
            1.0
        };
    }
    let q = w
        .chunks_exact(n)
        .take(k)
        .flat_map(|row| {
            row.iter()
                .zip(&scale)
                .map(|(&v, &s)| round_even(v / s).clamp(-127.0, 127.0) as i8)
        })
        .collect();
    (q, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_even_matches_std() {
        for i in -70_000..70_000 {
            let v = i as f32 * 0.0625 + 0.003 * (i % 7) as f32;
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
        for v in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 254.5, 255.5] {
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn row_quantization_covers_zero_and_extremes() {
        let x = [-1.0f32, 0.0, 3.0];
        let mut q = [0u8; 3];
        let (s, zp) = quantize_row(&x, &mut q);
        assert_eq!(s, 4.0 / 255.0);
        assert_eq!(q[0], 0);
        assert_eq!(q[2], 255);
        assert_eq!(q[1] as i32, zp);
        // An all-zero row quantizes to the zero point with scale 1.
        let mut q = [9u8; 2];
        assert_eq!(quantize_row(&[0.0, 0.0], &mut q), (1.0, 0));
        assert_eq!(q, [0, 0]);
    }

    #[test]
    fn weights_are_symmetric_per_column() {
        let w = [1.0f32, -0.5, -2.0, 0.25, 0.0, 0.0];
        let (q, s) = quantize_weights_i8(&w, 3, 2);
        assert_eq!(s, vec![2.0 / 127.0, 0.5 / 127.0]);
        assert_eq!(q[2], -127);
        assert_eq!(q[1], -127);
        assert_eq!(q[3], 64);
    }
}
