//! Row-wise elementwise steps and arg-max over short rows: the operations around a small
//! classifier's matrix products (input normalization before the first layer, the label after
//! the last). Simple loops the compiler vectorizes; what they replace in tract cost a kernel
//! call per row.

/// One elementwise step `x ← x ∘ b` of a chain, with `b` one scalar or one value per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowOp {
    /// `x + b`
    Add,
    /// `x − b`
    Sub,
    /// `b − x`
    SubFrom,
    /// `x · b`
    Mul,
}

/// Applies `x ← x ∘ b` to every row of `data` (rows of `row` values), where `b` holds one
/// value per column (`b.len() == row`) or a single value for every element. Returns `false`,
/// changing nothing, when `b` has any other length.
pub fn apply_rows(data: &mut [f32], row: usize, op: RowOp, b: &[f32]) -> bool {
    fn run(data: &mut [f32], row: usize, b: &[f32], f: impl Fn(f32, f32) -> f32) {
        if b.len() == 1 {
            let s = b[0];
            data.iter_mut().for_each(|x| *x = f(*x, s));
        } else {
            for r in data.chunks_mut(row) {
                r.iter_mut().zip(b).for_each(|(x, &c)| *x = f(*x, c));
            }
        }
    }
    if row == 0 || !(b.len() == 1 || b.len() == row) {
        return false;
    }
    match op {
        RowOp::Add => run(data, row, b, |x, c| x + c),
        RowOp::Sub => run(data, row, b, |x, c| x - c),
        RowOp::SubFrom => run(data, row, b, |x, c| c - x),
        RowOp::Mul => run(data, row, b, |x, c| x * c),
    }
    true
}

/// The index of each row's largest value (rows of `row` values) into `out`, one per row: the
/// first such index, or with `last` the last; NaN never counts as larger, and a row with no
/// value above `f32::MIN` gives 0 (ONNX `ArgMax` as tract evaluates it).
pub fn argmax_rows(data: &[f32], row: usize, last: bool, out: &mut [i64]) {
    for (r, o) in data.chunks(row.max(1)).zip(out.iter_mut()) {
        let (mut best, mut at) = (f32::MIN, 0usize);
        for (i, &v) in r.iter().enumerate() {
            if v > best || (last && v == best) {
                (best, at) = (v, i);
            }
        }
        *o = at as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_broadcast_per_column_or_as_a_scalar() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        assert!(apply_rows(&mut x, 2, RowOp::Sub, &[1.0, 2.0]));
        assert_eq!(x, [0.0, 0.0, 2.0, 2.0]);
        assert!(apply_rows(&mut x, 2, RowOp::Mul, &[0.5]));
        assert_eq!(x, [0.0, 0.0, 1.0, 1.0]);
        assert!(apply_rows(&mut x, 2, RowOp::SubFrom, &[1.0, 3.0]));
        assert_eq!(x, [1.0, 3.0, 0.0, 2.0]);
        assert!(apply_rows(&mut x, 2, RowOp::Add, &[1.0]));
        assert_eq!(x, [2.0, 4.0, 1.0, 3.0]);
        assert!(!apply_rows(&mut x, 2, RowOp::Add, &[1.0, 2.0, 3.0]));
        assert_eq!(x, [2.0, 4.0, 1.0, 3.0]);
    }

    #[test]
    fn argmax_takes_the_first_or_last_of_ties_and_skips_nan() {
        let x = [
            1.0,
            3.0,
            3.0,
            f32::NAN,
            0.0,
            -1.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut out = [9i64; 2];
        argmax_rows(&x, 4, false, &mut out);
        assert_eq!(out, [1, 0]);
        argmax_rows(&x, 4, true, &mut out);
        assert_eq!(out, [2, 0]);
    }
}
