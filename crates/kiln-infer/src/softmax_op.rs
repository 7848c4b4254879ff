//! A softmax over short rows for tract plans.
//!
//! tract 0.23's softmax has a SIMD fast path only for rows whose length is a multiple of 4;
//! other rows (10 classes, 3 classes: every classifier kiln trains) go through per-row kernel
//! calls that cost about half a microsecond each, which made the softmax of a 64-row batch
//! slower than the whole MLP before it. After optimizing a plan, kiln swaps such softmax nodes
//! (f32, one trailing axis) for this op: the same function, `exp(x − max) · (1 / Σ exp(x − max))`
//! per row ([`kiln_kernels::softmax_rows`]).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
use tract_onnx::tract_hir::internal::*;

/// Softmax over the last axis of an f32 tensor.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowSoftmax;

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "KilnRowSoftmax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        kiln_kernels::clear_upper_state();
        let input = args_1!(inputs);
        let mut output = input.into_tensor();
        let row = output.shape().last().copied().unwrap_or(1).max(1);
        {
            let mut view = output.try_as_plain_ram_mut()?;
            kiln_kernels::softmax_rows(view.as_slice_mut::<f32>()?, row);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

/// Replaces the softmax nodes of an optimized plan that tract would run row by row (f32, one
/// trailing axis of a fixed length that is not a multiple of 4) by [`RowSoftmax`]. Returns the
/// number replaced.
pub fn replace_slow_softmax(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes.len() {
        let Some(sm) = model.nodes[id].op_as::<Softmax>() else {
            continue;
        };
        let Some(&input) = model.nodes[id].inputs.first() else {
            continue;
        };
        let fact = model.outlet_fact(input)?;
        let rank = fact.rank();
        let row = fact.shape.last().and_then(|d| d.to_usize().ok());
        let slow = sm.kind == SoftmaxKind::Softmax
            && sm.quant_output_dt.is_none()
            && fact.datum_type == f32::datum_type()
            && rank > 0
            && sm.axes.as_slice() == [rank - 1]
            && row.is_some_and(|r| !r.is_multiple_of(4));
        if slow {
            model.nodes[id].op = Box::new(RowSoftmax);
            replaced += 1;
        }
    }
    Ok(replaced)
}
