//! kiln's own compute kernels.
//!
//! tract runs integer-op ONNX models far slower than its own f32 path, and runs QDQ models as
//! f32, so int8 quantization gains nothing in the pure-Rust engine. This crate holds the kernel
//! that closes that gap: an **int8 linear layer** with
//!
//! - int8 weights, symmetric per output channel (`w_scale[n]`), packed once at load;
//! - activations quantized per row to u8 at run time (asymmetric, the row's own scale and zero
//!   point, so a row's output never depends on the other rows of its batch);
//! - exact integer accumulation in i32, then `y = f32(acc) · (s_row · w_scale[n]) + bias[n]`.
//!
//! The instruction set is chosen at run time: AVX-512 VNNI (`vpdpbusd`, four u8×i8 products per
//! 32-bit lane per instruction), AVX2 (`vpmaddwd` on 16-bit operands) or portable Rust. Every
//! path computes the same integers, so every path returns bit-identical results, equal to
//! [`reference_linear`], which spells the semantics out in plain scalar code. The semantics are
//! exactly those of the ONNX function body kiln's quantizer writes next to the fast op (see
//! `kiln-optimize`), so any ONNX runtime computes the same numbers.
//!
//! ```
//! use kiln_kernels::Int8Linear;
//! // A 3 → 2 layer: weights (row-major K × N), per-column scales and bias.
//! let w: Vec<i8> = vec![10, -20, 30, 40, -50, 60];
//! let layer = Int8Linear::new(&w, 3, 2, vec![0.01, 0.02], Some(vec![0.5, -0.5]))?;
//! let x = [1.0f32, -2.0, 0.5];
//! let mut y = [0.0f32; 2];
//! layer.forward(&x, 1, &mut y)?;
//! let mut expected = [0.0f32; 2];
//! kiln_kernels::reference_linear(&x, 1, 3, 2, &w, &[0.01, 0.02], &[0.5, -0.5], &mut expected);
//! assert_eq!(y, expected);
//! # Ok::<(), kiln_kernels::KernelError>(())
//! ```

mod linear;
mod quant;
mod rows;
mod softmax;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86;

pub use linear::{Int8Linear, Isa, MAX_K, reference_linear, reference_linear_static};
pub use quant::{quantize_row, quantize_weights_i8};
pub use rows::{RowOp, apply_rows, argmax_rows};
pub use softmax::softmax_rows;

/// Marks the upper halves of the x86 vector registers clean (`vzeroupper`); a no-op elsewhere
/// and on CPUs without AVX.
///
/// Some of tract's hand-written AVX-512 kernels return without it. Until the next `vzeroupper`,
/// every legacy-SSE instruction (all code compiled for the baseline x86-64 target: kiln's
/// engine glue, Rust's standard library) then carries a false dependency on the dirty upper
/// state; measured, that made a 640-value softmax in plain Rust take 50 µs instead of 3.
/// kiln's tract engine calls this after every plan run and its ops call it on entry.
pub fn clear_upper_state() {
    #[cfg(target_arch = "x86_64")]
    x86::zero_upper();
}

/// Errors from building or running a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A buffer's length does not match the shape it was given with.
    #[error("{what} has {got} values, but the shape needs {expected}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Values it holds.
        got: usize,
        /// Values the shape needs.
        expected: usize,
    },
    /// The reduction dimension is too long for exact i32 accumulation.
    #[error(
        "the layer has {k} inputs; exact i32 accumulation allows at most {max}; keep this layer in float"
    )]
    TooWide {
        /// Inputs of the layer.
        k: usize,
        /// The limit.
        max: usize,
    },
    /// The requested instruction set is not available on this CPU.
    #[error("{0} is not available on this CPU")]
    Unsupported(Isa),
    /// A weight scale is not a positive finite number.
    #[error("weight scale {value} of output {index} is not positive and finite")]
    BadScale {
        /// Output channel.
        index: usize,
        /// The scale.
        value: f32,
    },
}
