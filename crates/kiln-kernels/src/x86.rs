//! x86-64 SIMD paths. The only module of kiln allowed `unsafe`: each public function checks the
//! CPU features and the buffer sizes, then calls a `#[target_feature]` function whose pointer
//! arithmetic stays inside those checked sizes.

use std::arch::x86_64::*;

pub(crate) fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

/// [`crate::quant::quantize_row`] compiled with AVX-512 (16-wide min/max/divide/round).
pub(crate) fn quantize_row_avx512(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    assert!(has_vnni(), "caller checked the CPU");
    // SAFETY: the CPU has the features the function is compiled for (asserted above); the
    // function itself is safe code.
    unsafe { quantize_row_512(x, q) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_row_512(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = range_512(x);
    let (s, inv, zp) = crate::quant::params_from_range(lo, hi);
    apply_512(x, q, inv, zp);
    (s, zp as i32)
}

/// Quantizes `m` rows of `k` values (row `r` into `q[r · stride..]`) as
/// [`quantize_row_avx512`] does each, in three passes over the batch: every row's range, then
/// every row's scale and zero point, then the values. The per-row chain (reduce, three
/// divisions, quantize) is latency-bound; batched, the rows' divisions overlap. Same results,
/// bit for bit.
pub(crate) fn quantize_rows_avx512(
    x: &[f32],
    k: usize,
    stride: usize,
    q: &mut [u8],
    scale: &mut [f32],
    zp: &mut [i32],
) {
    assert!(has_vnni(), "caller checked the CPU");
    // SAFETY: as for `quantize_row_avx512`.
    unsafe { quantize_rows_512(x, k, stride, q, scale, zp) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_rows_512(
    x: &[f32],
    k: usize,
    stride: usize,
    q: &mut [u8],
    scale: &mut [f32],
    zp: &mut [i32],
) {
    // Two small vectors, measured faster than one reused in place (64→64 layer at batch 64:
    // 2.05 µs against 2.3 µs): the parameter pass then reads and writes separate memory.
    let ranges: Vec<(f32, f32)> = x.chunks_exact(k.max(1)).map(|r| range_512(r)).collect();
    let params: Vec<(f32, f32, f32)> = ranges
        .iter()
        .map(|&(lo, hi)| crate::quant::params_from_range(lo, hi))
        .collect();
    for (((xr, qr), &(s, inv, z)), (so, zo)) in x
        .chunks_exact(k.max(1))
        .zip(q.chunks_mut(stride.max(1)))
        .zip(&params)
        .zip(scale.iter_mut().zip(zp.iter_mut()))
    {
        apply_512(xr, &mut qr[..k], inv, z);
        (*so, *zo) = (s, z as i32);
    }
}

/// [`crate::quant::quantize_fixed`] with AVX-512 (the static form's calibrated scale and zero
/// point): the same arithmetic as the dynamic path's last pass.
pub(crate) fn quantize_fixed_avx512(x: &[f32], q: &mut [u8], inv: f32, zp: f32) {
    assert!(has_vnni(), "caller checked the CPU");
    // SAFETY: as for `quantize_row_avx512`.
    unsafe { apply_512(x, q, inv, zp) }
}

/// The smallest and largest of `x`, and 0: the range always includes 0 (ONNX
/// DynamicQuantizeLinear).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn range_512(x: &[f32]) -> (f32, f32) {
    let full = x.len() / 16 * 16;
    let mut lo = _mm512_setzero_ps();
    let mut hi = _mm512_setzero_ps();
    for c in x[..full].chunks_exact(16) {
        // SAFETY: `c` holds exactly 16 f32.
        let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    let mut lo = _mm512_reduce_min_ps(lo);
    let mut hi = _mm512_reduce_max_ps(hi);
    for &v in &x[full..] {
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    (lo, hi)
}

/// `q = clamp(round_even(x · inv) + zp, 0, 255)`, 16 values at a time.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn apply_512(x: &[f32], q: &mut [u8], inv: f32, zp: f32) {
    let n = x.len().min(q.len());
    let full = n / 16 * 16;
    let magic = _mm512_set1_ps(12_582_912.0);
    let vinv = _mm512_set1_ps(inv);
    let vzp = _mm512_set1_ps(zp);
    let zero = _mm512_setzero_ps();
    let top = _mm512_set1_ps(255.0);
    for (c, o) in x[..full]
        .chunks_exact(16)
        .zip(q[..full].chunks_exact_mut(16))
    {
        // SAFETY: `c` holds 16 f32 and `o` 16 bytes.
        unsafe {
            let v = _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), vinv);
            // Round half to even by the magic constant, exactly as `quant::round_even`.
            let r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
            let t = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, vzp), zero), top);
            let b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t));
            _mm_storeu_si128(o.as_mut_ptr().cast(), b);
        }
    }
    for (o, &v) in q[full..n].iter_mut().zip(&x[full..n]) {
        *o = crate::quant::quantize_value(v, inv, zp);
    }
}

/// [`crate::quant::quantize_fixed`] compiled with AVX2 (vectorized by the compiler).
pub(crate) fn quantize_fixed_avx2(x: &[f32], q: &mut [u8], inv: f32, zp: f32) {
    assert!(has_avx2(), "caller checked the CPU");
    // SAFETY: as for `quantize_row_avx512`.
    unsafe { quantize_fixed_256(x, q, inv, zp) }
}

#[target_feature(enable = "avx2,fma")]
fn quantize_fixed_256(x: &[f32], q: &mut [u8], inv: f32, zp: f32) {
    crate::quant::quantize_fixed(x, q, inv, zp);
}

/// [`crate::quant::quantize_row`] compiled with AVX2.
pub(crate) fn quantize_row_avx2(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    assert!(has_avx2(), "caller checked the CPU");
    // SAFETY: as for `quantize_row_avx512`.
    unsafe { quantize_row_256(x, q) }
}

#[target_feature(enable = "avx2,fma")]
fn quantize_row_256(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let n = x.len().min(q.len());
    let full = n / 8 * 8;
    let mut lo = _mm256_setzero_ps();
    let mut hi = _mm256_setzero_ps();
    for c in x[..full].chunks_exact(8) {
        // SAFETY: `c` holds exactly 8 f32.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
    }
    let (mut lo_l, mut hi_l) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: both arrays hold 8 f32.
    unsafe {
        _mm256_storeu_ps(lo_l.as_mut_ptr(), lo);
        _mm256_storeu_ps(hi_l.as_mut_ptr(), hi);
    }
    let mut lo = lo_l.iter().fold(0.0f32, |a, &b| if b < a { b } else { a });
    let mut hi = hi_l.iter().fold(0.0f32, |a, &b| if b > a { b } else { a });
    for &v in &x[full..n] {
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    let (s, inv, zp) = crate::quant::params_from_range(lo, hi);
    let magic = _mm256_set1_ps(12_582_912.0);
    let vinv = _mm256_set1_ps(inv);
    let vzp = _mm256_set1_ps(zp);
    let zero = _mm256_setzero_ps();
    let top = _mm256_set1_ps(255.0);
    for (c, o) in x[..full].chunks_exact(8).zip(q[..full].chunks_exact_mut(8)) {
        // SAFETY: `c` holds 8 f32; `bytes` is 8 bytes long.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), vinv);
            // Round half to even by the magic constant, exactly as `quant::round_even`.
            let r = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
            let t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vzp), zero), top);
            let i = _mm256_cvttps_epi32(t);
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), i);
            for (b, l) in o.iter_mut().zip(lanes) {
                *b = l as u8;
            }
        }
    }
    for (o, &v) in q[full..n].iter_mut().zip(&x[full..n]) {
        *o = crate::quant::quantize_value(v, inv, zp);
    }
    (s, zp as i32)
}

pub(crate) fn has_avx() -> bool {
    is_x86_feature_detected!("avx")
}

/// `vzeroupper`: marks the upper halves of the vector registers clean.
pub(crate) fn zero_upper() {
    if has_avx() {
        // SAFETY: the CPU has AVX (checked just above).
        unsafe { zero_upper_avx() }
    }
}

#[target_feature(enable = "avx")]
fn zero_upper_avx() {
    _mm256_zeroupper();
}

/// u8 activations widened to i16 for the AVX2 product, VEX-encoded.
pub(crate) fn widen_u8_avx2(q: &[u8]) -> Vec<i16> {
    assert!(has_avx2(), "caller checked the CPU");
    // SAFETY: as below.
    unsafe { widen_256(q) }
}

#[target_feature(enable = "avx2")]
fn widen_256(q: &[u8]) -> Vec<i16> {
    q.iter().map(|&v| i16::from(v)).collect()
}

/// [`crate::softmax::softmax_rows`] compiled VEX-encoded (AVX2, FMA).
pub(crate) fn softmax_rows_avx2(data: &mut [f32], row: usize) {
    assert!(has_avx2(), "caller checked the CPU");
    // SAFETY: the CPU has the features the function is compiled for (asserted above); the
    // function itself is safe code.
    unsafe { softmax_rows_256(data, row) }
}

#[target_feature(enable = "avx2,fma")]
fn softmax_rows_256(data: &mut [f32], row: usize) {
    crate::softmax::softmax_rows_generic(data, row);
}

/// The int8 layer's epilogue compiled VEX-encoded, for the same reason as the softmax.
pub(crate) fn epilogue_avx2(
    layer: &crate::Int8Linear,
    acc: &[i32],
    stride: usize,
    scale: &[f32],
    zp: &[i32],
    y: &mut [f32],
) {
    assert!(has_avx2(), "caller checked the CPU");
    // SAFETY: as above.
    unsafe { epilogue_256(layer, acc, stride, scale, zp, y) }
}

#[target_feature(enable = "avx2,fma")]
fn epilogue_256(
    layer: &crate::Int8Linear,
    acc: &[i32],
    stride: usize,
    scale: &[f32],
    zp: &[i32],
    y: &mut [f32],
) {
    layer.epilogue_generic(acc, stride, scale, zp, y);
}

/// `acc[m × np] = a[m × kp] (u8) · b (i8, VNNI-packed kp × np)`.
pub(crate) fn gemm_vnni(a: &[u8], m: usize, kp: usize, b: &[i8], np: usize, acc: &mut [i32]) {
    assert!(has_vnni(), "caller checked the CPU");
    assert!(
        kp.is_multiple_of(4) && np.is_multiple_of(16),
        "packed shapes"
    );
    assert!(a.len() >= m * kp && b.len() == kp * np && acc.len() >= m * np);
    let groups = kp / 4;
    let panels = np / 16;
    let mut p = 0;
    while p < panels {
        let two = p + 1 < panels;
        let mut r = 0;
        while r < m {
            let mr = (m - r).min(8);
            macro_rules! go {
                ($($mr:literal),*) => {
                    match (mr, two) {
                        $(
                            ($mr, true) => tile_vnni::<$mr, 2>(a, kp, r, b, p, groups, acc, np),
                            ($mr, false) => tile_vnni::<$mr, 1>(a, kp, r, b, p, groups, acc, np),
                        )*
                        _ => unreachable!("tile heights are 1 to 8"),
                    }
                };
            }
            // SAFETY: features checked above; `tile_vnni` reads rows r..r+mr of `a` (each
            // `kp` long), panels p..p+NP of `b` (each `groups · 64` bytes) and writes rows
            // r..r+mr, columns 16p..16(p+NP) of `acc`, all inside the sizes asserted above.
            unsafe { go!(1, 2, 3, 4, 5, 6, 7, 8) }
            r += mr;
        }
        p += if two { 2 } else { 1 };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_vnni<const MR: usize, const NP: usize>(
    a: &[u8],
    kp: usize,
    r0: usize,
    b: &[i8],
    p0: usize,
    groups: usize,
    acc: &mut [i32],
    np: usize,
) {
    // SAFETY: the caller checked the CPU features and that every row, panel and output
    // tile touched here lies inside the buffers.
    unsafe {
        let mut c = [[_mm512_setzero_si512(); NP]; MR];
        let ap = a.as_ptr().add(r0 * kp);
        let bp = b.as_ptr().add(p0 * groups * 64);
        for g in 0..groups {
            let mut bv = [_mm512_setzero_si512(); NP];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(bp.add((j * groups + g) * 64).cast());
            }
            for (i, ci) in c.iter_mut().enumerate() {
                let word = ap.add(i * kp + 4 * g).cast::<i32>().read_unaligned();
                let av = _mm512_set1_epi32(word);
                for (cij, &bj) in ci.iter_mut().zip(&bv) {
                    *cij = _mm512_dpbusd_epi32(*cij, av, bj);
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            for (j, cij) in ci.iter().enumerate() {
                let out = acc.as_mut_ptr().add((r0 + i) * np + (p0 + j) * 16);
                _mm512_storeu_si512(out.cast(), *cij);
            }
        }
    }
}

/// `acc[m × np] = a[m × kp] (u8 widened to i16) · b (i16, AVX2-packed kp × np)`.
pub(crate) fn gemm_avx2(a: &[i16], m: usize, kp: usize, b: &[i16], np: usize, acc: &mut [i32]) {
    assert!(has_avx2(), "caller checked the CPU");
    assert!(
        kp.is_multiple_of(2) && np.is_multiple_of(8),
        "packed shapes"
    );
    assert!(a.len() >= m * kp && b.len() == kp * np && acc.len() >= m * np);
    let groups = kp / 2;
    let panels = np / 8;
    let mut p = 0;
    while p < panels {
        let two = p + 1 < panels;
        let mut r = 0;
        while r < m {
            let mr = (m - r).min(4);
            macro_rules! go {
                ($($mr:literal),*) => {
                    match (mr, two) {
                        $(
                            ($mr, true) => tile_avx2::<$mr, 2>(a, kp, r, b, p, groups, acc, np),
                            ($mr, false) => tile_avx2::<$mr, 1>(a, kp, r, b, p, groups, acc, np),
                        )*
                        _ => unreachable!("tile heights are 1 to 4"),
                    }
                };
            }
            // SAFETY: as in `gemm_vnni`, with 32-byte panel groups of 8 columns.
            unsafe { go!(1, 2, 3, 4) }
            r += mr;
        }
        p += if two { 2 } else { 1 };
    }
}

#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const MR: usize, const NP: usize>(
    a: &[i16],
    kp: usize,
    r0: usize,
    b: &[i16],
    p0: usize,
    groups: usize,
    acc: &mut [i32],
    np: usize,
) {
    // SAFETY: the caller checked the CPU features and that every row, panel and output
    // tile touched here lies inside the buffers.
    unsafe {
        let mut c = [[_mm256_setzero_si256(); NP]; MR];
        let ap = a.as_ptr().add(r0 * kp);
        let bp = b.as_ptr().add(p0 * groups * 16);
        for g in 0..groups {
            let mut bv = [_mm256_setzero_si256(); NP];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(bp.add((j * groups + g) * 16).cast());
            }
            for (i, ci) in c.iter_mut().enumerate() {
                let word = ap.add(i * kp + 2 * g).cast::<i32>().read_unaligned();
                let av = _mm256_set1_epi32(word);
                for (cij, &bj) in ci.iter_mut().zip(&bv) {
                    *cij = _mm256_add_epi32(*cij, _mm256_madd_epi16(av, bj));
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            for (j, cij) in ci.iter().enumerate() {
                let out = acc.as_mut_ptr().add((r0 + i) * np + (p0 + j) * 8);
                _mm256_storeu_si256(out.cast(), *cij);
            }
        }
    }
}
