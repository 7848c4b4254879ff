//! The int8 linear layer: weight packing, run-time dispatch and the shared epilogue.

use crate::KernelError;
use crate::quant::quantize_row;

/// Longest reduction dimension with exact i32 accumulation: `Σ (q − zp)·w` is bounded by
/// `k · 255 · 127` per term group, and the kernels subtract `zp · Σw` from `Σ q·w`, each bounded
/// by that, so `2 · k · 32 385 < 2³¹` must hold.
pub const MAX_K: usize = 32_768;

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512 with VNNI: `vpdpbusd` multiplies four u8×i8 pairs per 32-bit lane and adds them
    /// to the accumulator in one instruction.
    Avx512Vnni,
    /// AVX2: operands widened to 16 bits, `vpmaddwd` multiplies pairs into 32-bit lanes.
    Avx2,
    /// Plain Rust, for any CPU.
    Portable,
}

impl Isa {
    /// The fastest instruction set this CPU supports.
    pub fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU supports it.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => crate::x86::has_vnni(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::x86::has_avx2(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every instruction set this CPU supports, fastest first.
    pub fn all_available() -> Vec<Isa> {
        [Isa::Avx512Vnni, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// A short name (`avx512-vnni`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// Weights in the layout of one instruction set.
#[derive(Debug, Clone)]
enum Packed {
    /// Panels of 16 columns; per panel, groups of 4 rows: 16 columns × 4 bytes = 64 bytes.
    Vnni { kp: usize, np: usize, data: Vec<i8> },
    /// Panels of 8 columns; per panel, pairs of rows: 8 columns × 2 i16 = 32 bytes.
    Avx2 {
        kp: usize,
        np: usize,
        data: Vec<i16>,
    },
    /// Row-major `k × n`.
    Portable { data: Vec<i8> },
}

/// An int8 linear layer `y = x · W + b` with weights packed for one instruction set.
///
/// See the crate documentation for the exact semantics; [`reference_linear`] computes the same
/// numbers in plain scalar code.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    k: usize,
    n: usize,
    isa: Isa,
    packed: Packed,
    col_sum: Vec<i32>,
    w_scale: Vec<f32>,
    bias: Vec<f32>,
    relu: bool,
    threads: usize,
    /// A calibrated activation scale and zero point used for every row, instead of each row's
    /// own (kiln's static op).
    activation: Option<(f32, f32)>,
}

/// Rows each thread must get for a call to be split: below that, waking a pool thread costs
/// more than it saves (measured: at 64 rows of 784→256, two threads were slower than one).
const MIN_ROWS_PER_THREAD: usize = 64;

impl Int8Linear {
    /// Packs a row-major `k × n` int8 weight matrix for the fastest instruction set here.
    /// `w_scale` has one positive scale per output column; `bias` is `n` values or none.
    pub fn new(
        weights: &[i8],
        k: usize,
        n: usize,
        w_scale: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self, KernelError> {
        Self::with_isa(weights, k, n, w_scale, bias, Isa::best())
    }

    /// Like [`Int8Linear::new`], for a chosen instruction set (tests and benchmarks compare
    /// them); refuses one the CPU lacks.
    pub fn with_isa(
        weights: &[i8],
        k: usize,
        n: usize,
        w_scale: Vec<f32>,
        bias: Option<Vec<f32>>,
        isa: Isa,
    ) -> Result<Self, KernelError> {
        if !isa.available() {
            return Err(KernelError::Unsupported(isa));
        }
        if k > MAX_K {
            return Err(KernelError::TooWide { k, max: MAX_K });
        }
        let check = |what, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(KernelError::Shape {
                    what,
                    got,
                    expected,
                })
            }
        };
        check("weights", weights.len(), k * n)?;
        check("w_scale", w_scale.len(), n)?;
        let bias = bias.unwrap_or_else(|| vec![0.0; n]);
        check("bias", bias.len(), n)?;
        if let Some((index, &value)) = w_scale
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(KernelError::BadScale { index, value });
        }
        let mut col_sum = vec![0i32; n];
        for row in weights.chunks_exact(n.max(1)).take(k) {
            for (s, &w) in col_sum.iter_mut().zip(row) {
                *s += i32::from(w);
            }
        }
        let at = |r: usize, c: usize| -> i8 {
            if r < k && c < n {
                weights[r * n + c]
            } else {
                0
            }
        };
        let packed = match isa {
            Isa::Avx512Vnni => {
                let (kp, np) = (round_up(k, 4), round_up(n, 16));
                let mut data = Vec::with_capacity(kp * np);
                for p in 0..np / 16 {
                    for g in 0..kp / 4 {
                        for c in 0..16 {
                            for j in 0..4 {
                                data.push(at(4 * g + j, 16 * p + c));
                            }
                        }
                    }
                }
                Packed::Vnni { kp, np, data }
            }
            Isa::Avx2 => {
                let (kp, np) = (round_up(k, 2), round_up(n, 8));
                let mut data = Vec::with_capacity(kp * np);
                for p in 0..np / 8 {
                    for g in 0..kp / 2 {
                        for c in 0..8 {
                            for j in 0..2 {
                                data.push(i16::from(at(2 * g + j, 8 * p + c)));
                            }
                        }
                    }
                }
                Packed::Avx2 { kp, np, data }
            }
            Isa::Portable => Packed::Portable {
                data: weights.to_vec(),
            },
        };
        Ok(Self {
            k,
            n,
            isa,
            packed,
            col_sum,
            w_scale,
            bias,
            relu: false,
            threads: 1,
            activation: None,
        })
    }

    /// Quantizes every row with this calibrated scale and zero point (kiln's static op,
    /// `Int8LinearStatic`) instead of each row's own range: `q = clamp(round(x · (1 / scale)) +
    /// zero_point, 0, 255)`. Refuses a scale that is not positive and finite or a zero point
    /// outside 0..=255.
    pub fn with_static_activation(
        mut self,
        scale: f32,
        zero_point: u8,
    ) -> Result<Self, KernelError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(KernelError::BadScale {
                index: 0,
                value: scale,
            });
        }
        self.activation = Some((scale, f32::from(zero_point)));
        Ok(self)
    }

    /// Splits calls of many rows across up to `threads` threads of rayon's pool (rows are
    /// independent, so the result is the same bit for bit). 0 and 1 mean one thread.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The threads a call may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The same layer followed by `max(·, 0)` (a fused ReLU).
    pub fn with_relu(mut self, relu: bool) -> Self {
        self.relu = relu;
        self
    }

    /// Whether a ReLU is fused.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Inputs per row.
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// The instruction set the weights are packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs `m` rows: `x` is row-major `m × k`, `y` receives row-major `m × n`.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
        let (k, n) = (self.k, self.n);
        for (what, got, expected) in [("input", x.len(), m * k), ("output", y.len(), m * n)] {
            if got != expected {
                return Err(KernelError::Shape {
                    what,
                    got,
                    expected,
                });
            }
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let parts = self.threads.min(m / MIN_ROWS_PER_THREAD);
        if parts > 1 && k > 0 {
            // Whole tiles of 8 rows per part, so that every part runs the full-height kernel.
            // The calling thread computes the first part itself while rayon's pool takes the
            // others, so a call never waits idle for a pool thread to wake up.
            let rows = m.div_ceil(parts).next_multiple_of(8);
            let mut chunks = x.chunks(rows * k).zip(y.chunks_mut(rows * n));
            let Some((x0, y0)) = chunks.next() else {
                return Ok(());
            };
            rayon::in_place_scope(|scope| {
                for (xc, yc) in chunks {
                    scope.spawn(move |_| self.forward_rows(xc, xc.len() / k, yc));
                }
                self.forward_rows(x0, x0.len() / k, y0);
            });
            return Ok(());
        }
        self.forward_rows(x, m, y);
        Ok(())
    }

    /// One thread's share: `m` rows, shapes already checked.
    fn forward_rows(&self, x: &[f32], m: usize, y: &mut [f32]) {
        // Rows of activations and of accumulators in the packing's padded widths.
        let (kp, np) = match &self.packed {
            Packed::Vnni { kp, np, .. } | Packed::Avx2 { kp, np, .. } => (*kp, *np),
            Packed::Portable { .. } => (self.k, self.n),
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => self.forward_with(x, m, y, kp, np, &mut s),
            // Only if a caller re-entered on this thread: fresh buffers then.
            Err(_) => self.forward_with(x, m, y, kp, np, &mut Scratch::default()),
        });
    }

    /// [`Self::forward_rows`] with its buffers (reused between calls on one thread: a small
    /// layer's call otherwise spent as long allocating them as multiplying).
    fn forward_with(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        kp: usize,
        np: usize,
        s: &mut Scratch,
    ) {
        let Scratch { scale, zp, q, acc } = s;
        // Zeroed like fresh buffers: the row padding of `q` and the accumulators must start at 0.
        q.clear();
        q.resize(m * kp, 0);
        scale.clear();
        scale.resize(m, 0.0);
        zp.clear();
        zp.resize(m, 0);
        acc.clear();
        acc.resize(m * np, 0);
        let (scale, zp, q, acc) = (&mut scale[..], &mut zp[..], &mut q[..], &mut acc[..]);
        quantize_rows(self.isa, x, self.k, kp, q, scale, zp, self.activation);
        match &self.packed {
            Packed::Vnni { data, .. } => {
                #[cfg(target_arch = "x86_64")]
                crate::x86::gemm_vnni(q, m, kp, data, np, acc);
                #[cfg(not(target_arch = "x86_64"))]
                let _ = data;
            }
            Packed::Avx2 { data, .. } => {
                #[cfg(target_arch = "x86_64")]
                crate::x86::gemm_avx2(&crate::x86::widen_u8_avx2(q), m, kp, data, np, acc);
                #[cfg(not(target_arch = "x86_64"))]
                let _ = data;
            }
            Packed::Portable { data } => {
                let n = self.n;
                for (qr, ar) in q.chunks_exact(kp.max(1)).zip(acc.chunks_exact_mut(n)) {
                    for (&qv, wr) in qr.iter().zip(data.chunks_exact(n)) {
                        let qv = i32::from(qv);
                        for (a, &w) in ar.iter_mut().zip(wr) {
                            *a += qv * i32::from(w);
                        }
                    }
                }
            }
        }
        self.epilogue(acc, np, scale, zp, y);
    }

    /// `y = f32(Σ q·w − zp·Σw) · (s · w_scale) + bias`, in that order (the ONNX body's order),
    /// then `max(y, 0)` with a fused ReLU.
    fn epilogue(&self, acc: &[i32], stride: usize, scale: &[f32], zp: &[i32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.isa != Isa::Portable {
            crate::x86::epilogue_avx2(self, acc, stride, scale, zp, y);
            return;
        }
        self.epilogue_generic(acc, stride, scale, zp, y);
    }

    #[inline(always)]
    pub(crate) fn epilogue_generic(
        &self,
        acc: &[i32],
        stride: usize,
        scale: &[f32],
        zp: &[i32],
        y: &mut [f32],
    ) {
        let n = self.n;
        // Per-column operands sliced to the row's width, and a zip instead of indexing: no
        // bounds checks in the loop, so it vectorizes (indexed, it ran scalar and took half
        // of a 64→64 layer's time).
        let (col_sum, w_scale, bias) = (&self.col_sum[..n], &self.w_scale[..n], &self.bias[..n]);
        for ((yr, ar), (&s, &z)) in y
            .chunks_exact_mut(n)
            .zip(acc.chunks(stride.max(1)))
            .zip(scale.iter().zip(zp))
        {
            for ((((yv, &a), &cs), &ws), &b) in yr
                .iter_mut()
                .zip(&ar[..n])
                .zip(col_sum)
                .zip(w_scale)
                .zip(bias)
            {
                let exact = a - z * cs;
                *yv = exact as f32 * (s * ws) + b;
            }
            if self.relu {
                for v in yr.iter_mut() {
                    *v = if *v < 0.0 { 0.0 } else { *v };
                }
            }
        }
    }
}

/// One thread's buffers for [`Int8Linear::forward_rows`].
#[derive(Default)]
struct Scratch {
    scale: Vec<f32>,
    zp: Vec<i32>,
    q: Vec<u8>,
    acc: Vec<i32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Quantizes `m` rows of `k` values into rows of `stride ≥ k` bytes (the padding stays 0; the
/// packed weights are 0 there too).
#[allow(clippy::too_many_arguments)]
fn quantize_rows(
    isa: Isa,
    x: &[f32],
    k: usize,
    stride: usize,
    q: &mut [u8],
    scale: &mut [f32],
    zp: &mut [i32],
    fixed: Option<(f32, f32)>,
) {
    if k == 0 {
        scale.fill(fixed.map_or(1.0, |f| f.0));
        return;
    }
    if let Some((s, z)) = fixed {
        let inv = 1.0 / s;
        for (r, xr) in x.chunks_exact(k).enumerate() {
            let qr = &mut q[r * stride..r * stride + k];
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => crate::x86::quantize_fixed_avx512(xr, qr, inv, z),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => crate::x86::quantize_fixed_avx2(xr, qr, inv, z),
                _ => crate::quant::quantize_fixed(xr, qr, inv, z),
            }
            scale[r] = s;
            zp[r] = z as i32;
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        crate::x86::quantize_rows_avx512(x, k, stride, q, scale, zp);
        return;
    }
    for (r, xr) in x.chunks_exact(k).enumerate() {
        let qr = &mut q[r * stride..r * stride + k];
        let (s, z) = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => crate::x86::quantize_row_avx512(xr, qr),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::x86::quantize_row_avx2(xr, qr),
            _ => quantize_row(xr, qr),
        };
        scale[r] = s;
        zp[r] = z;
    }
}

/// [`reference_linear`] with every row quantized by the calibrated `(scale, zero_point)`.
#[allow(clippy::too_many_arguments)]
pub fn reference_linear_static(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[i8],
    w_scale: &[f32],
    bias: &[f32],
    activation: (f32, u8),
    y: &mut [f32],
) {
    let (s, zp) = (activation.0, f32::from(activation.1));
    let inv = 1.0 / s;
    reference_rows(x, m, k, n, w, w_scale, bias, y, |row, q| {
        for (o, &v) in q.iter_mut().zip(row) {
            *o = crate::quant::quantize_value(v, inv, zp);
        }
        (s, i32::from(activation.1))
    });
}

/// The int8 linear semantics in plain scalar code: each row quantized by
/// [`quantize_row`](crate::quantize_row), `acc = Σ (q − zp)·w` in integers, then
/// `y = f32(acc) · (s · w_scale) + bias`. `w` is row-major `k × n`.
#[allow(clippy::too_many_arguments)]
pub fn reference_linear(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[i8],
    w_scale: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    reference_rows(x, m, k, n, w, w_scale, bias, y, quantize_row);
}

/// The scalar reference body shared by both forms: `quantize` turns a row into bytes and
/// returns its `(scale, zero point)`.
#[allow(clippy::too_many_arguments)]
fn reference_rows(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[i8],
    w_scale: &[f32],
    bias: &[f32],
    y: &mut [f32],
    quantize: impl Fn(&[f32], &mut [u8]) -> (f32, i32),
) {
    let mut q = vec![0u8; k];
    for r in 0..m {
        let (s, zp) = quantize(&x[r * k..(r + 1) * k], &mut q);
        for c in 0..n {
            let acc: i64 = (0..k)
                .map(|i| (i64::from(q[i]) - i64::from(zp)) * i64::from(w[i * n + c]))
                .sum();
            y[r * n + c] = (acc as i32) as f32 * (s * w_scale[c]) + bias[c];
        }
    }
}
