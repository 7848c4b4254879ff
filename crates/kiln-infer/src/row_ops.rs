//! Row-wise operations for tract plans, swapped in where tract pays a kernel call per row.
//!
//! These are the operators around a small classifier's matrix products, where tract's
//! per-call overhead, not arithmetic, decides the time: kiln's MLP on the digits data spent
//! more in them at batch 64 than in its three layers.
//!
//! - **Softmax.** tract 0.23's softmax has a SIMD fast path only for rows whose length is a
//!   multiple of 4; other rows (10 classes, 3 classes: every classifier kiln trains) go
//!   through per-row kernel calls that cost about half a microsecond each, which made the
//!   softmax of a 64-row batch slower than the whole MLP before it. [`RowSoftmax`] computes
//!   the same function, `exp(x − max) · (1 / Σ exp(x − max))` per row
//!   ([`kiln_kernels::softmax_rows`], within 1e-6 of tract's).
//! - **Elementwise chains by per-column constants** (`(x − mean) / std`, the input
//!   normalization of every exported tabular model). tract runs them as one kernel call per
//!   row and step (13 µs for 64 rows of 64 features, measured); [`RowAffine`] applies the same
//!   steps, in the same order and with the same operands, in one loop per step
//!   ([`kiln_kernels::apply_rows`]), so the results are bit-identical.
//! - **ArgMax over the last axis.** tract's generic reduction walks an ndarray lane per row
//!   (8 µs for 64 rows of 10); [`RowArgMax`] is the same first-(or last-)maximum rule
//!   ([`kiln_kernels::argmax_rows`]).

use kiln_kernels::RowOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::{
    BinMiniOp, OptBinByScalar, OptBinChain, OptBinUnicast, TypedBinOp,
};
use tract_onnx::tract_core::ops::math::{Add, Mul, Sub, SubF};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, Softmax, SoftmaxKind};
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

/// `x ← x ∘ b` for each step in turn; input 0 is `x` (f32, rows of a fixed length), input
/// `i + 1` is step `i`'s operand: one value per column or one scalar.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowAffine {
    steps: Vec<RowOp>,
}

impl Op for RowAffine {
    fn name(&self) -> StaticName {
        "KilnRowAffine".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowAffine {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        kiln_kernels::clear_upper_state();
        let mut output = inputs.remove(0).into_tensor();
        let row = output.shape().last().copied().unwrap_or(1).max(1);
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let data = view.as_slice_mut::<f32>()?;
            for (step, b) in self.steps.iter().zip(&inputs) {
                let b = b.try_as_plain_ram()?;
                let b = b.as_slice::<f32>()?;
                ensure!(
                    kiln_kernels::apply_rows(data, row, *step, b),
                    "KilnRowAffine: an operand of {} values for rows of {row}",
                    b.len()
                );
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for RowAffine {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

/// ArgMax over the last axis of an f32 tensor, keeping that axis (length 1), as tract's
/// `Reduce<ArgMax>` does before it removes the axis.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowArgMax {
    last: bool,
}

impl Op for RowArgMax {
    fn name(&self) -> StaticName {
        "KilnRowArgMax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowArgMax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        kiln_kernels::clear_upper_state();
        let input = args_1!(inputs);
        let mut shape: TVec<usize> = input.shape().into();
        let row = shape.last().copied().unwrap_or(1);
        if let Some(l) = shape.last_mut() {
            *l = 1;
        }
        let mut out = vec![0i64; shape.iter().product()];
        if row > 0 {
            let x = input.try_as_plain_ram()?;
            kiln_kernels::argmax_rows(x.as_slice::<f32>()?, row, self.last, &mut out);
        }
        Ok(tvec!(tensor1(&out).into_shape(&shape)?.into_tvalue()))
    }
}

impl TypedOp for RowArgMax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        if let Some(l) = shape.last_mut() {
            *l = 1.to_dim();
        }
        Ok(tvec!(i64::fact(shape)))
    }

    as_op!();
}

/// kiln's step for one of tract's binary mini-ops, where it has one.
fn row_op(binop: &dyn BinMiniOp) -> Option<RowOp> {
    if binop.is::<Add>() {
        Some(RowOp::Add)
    } else if binop.is::<Sub>() {
        Some(RowOp::Sub)
    } else if binop.is::<SubF>() {
        Some(RowOp::SubFrom)
    } else if binop.is::<Mul>() {
        Some(RowOp::Mul)
    } else {
        None
    }
}

/// Swaps the nodes of an optimized plan that tract would run row by row for kiln's row ops:
/// softmax over a trailing axis whose fixed length is not a multiple of 4 ([`RowSoftmax`]),
/// chains of f32 `+ − ·` by per-column or scalar operands ([`RowAffine`]) and f32 ArgMax over
/// the last axis ([`RowArgMax`]). Returns the number of nodes swapped.
pub fn replace_slow_ops(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = replace_slow_softmax(model)?;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let steps: Option<Vec<RowOp>> = if let Some(chain) = node.op_as::<OptBinChain>() {
            chain.steps.iter().map(|s| row_op(&*s.binop)).collect()
        } else if let Some(op) = node.op_as::<OptBinUnicast>() {
            row_op(&*op.binop).map(|s| vec![s])
        } else if let Some(op) = node.op_as::<OptBinByScalar>() {
            row_op(&*op.binop).map(|s| vec![s])
        } else if let Some(TypedBinOp(binop, None)) = node.op_as::<TypedBinOp>() {
            row_op(&**binop).map(|s| vec![s])
        } else {
            None
        };
        if let Some(steps) = steps.filter(|s| s.len() + 1 == node.inputs.len()) {
            // `c + x` and `c · x` with the constant first: `x` goes first (only once the swap
            // is certain: tract's own op must keep its input order).
            let flip = matches!(steps.as_slice(), [RowOp::Add | RowOp::Mul])
                && model.outlet_fact(node.inputs[0])?.konst.is_some()
                && model.outlet_fact(node.inputs[1])?.konst.is_none();
            let mut inputs = node.inputs.clone();
            if flip {
                inputs.swap(0, 1);
            }
            let a = model.outlet_fact(inputs[0])?;
            let row = a.shape.last().and_then(|d| d.to_usize().ok());
            let fits = |b: &TypedFact| {
                let dims: Option<Vec<usize>> = b.shape.iter().map(|d| d.to_usize().ok()).collect();
                b.datum_type == f32::datum_type()
                    && b.rank() <= a.rank()
                    && dims.is_some_and(|d| {
                        let volume: usize = d.iter().product();
                        volume == 1
                            || (Some(volume) == row && d.last().copied() == row && volume > 0)
                    })
            };
            let mut all_fit = a.datum_type == f32::datum_type() && a.rank() > 0 && row.is_some();
            for b in &inputs[1..] {
                all_fit &= fits(model.outlet_fact(*b)?);
            }
            if all_fit {
                if flip {
                    swap_inputs(model, id);
                }
                model.nodes[id].op = Box::new(RowAffine { steps });
                replaced += 1;
            }
            continue;
        }
        if let Some(reduce) = node.op_as::<Reduce>()
            && let Reducer::ArgMax(last) = reduce.reducer
            && let Some(&input) = node.inputs.first()
        {
            let fact = model.outlet_fact(input)?;
            if fact.datum_type == f32::datum_type()
                && fact.rank() > 0
                && reduce.axes.as_slice() == [fact.rank() - 1]
            {
                model.nodes[id].op = Box::new(RowArgMax { last });
                replaced += 1;
            }
        }
    }
    Ok(replaced)
}

/// Swaps a two-input node's inputs, keeping its producers' successor lists true.
fn swap_inputs(model: &mut TypedModel, id: usize) {
    let (a, b) = (model.nodes[id].inputs[0], model.nodes[id].inputs[1]);
    model.nodes[id].inputs.swap(0, 1);
    for (outlet, from, to) in [(a, 0, 1), (b, 1, 0)] {
        if let Some(out) = model.nodes[outlet.node].outputs.get_mut(outlet.slot) {
            for inlet in out.successors.iter_mut() {
                if inlet.node == id && inlet.slot == from {
                    inlet.slot = to;
                    break;
                }
            }
        }
    }
}

/// Replaces the softmax nodes of an optimized plan that tract would run row by row (f32, one
/// trailing axis of a fixed length that is not a multiple of 4) by [`RowSoftmax`]. Returns the
/// number replaced.
fn replace_slow_softmax(model: &mut TypedModel) -> TractResult<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_onnx::proto::data_type::{FLOAT, INT64};
    use kiln_onnx::{Dim, GraphBuilder, attr_int};
    use proptest::prelude::*;

    /// x [N,6] → (x − mean) / std · 2 → normalized, Gemm → Softmax over 10 → probabilities, ArgMax → label;
    /// and a Sub of two inputs (no constant operand), which must stay tract's.
    fn classifier() -> Vec<u8> {
        let mut g = GraphBuilder::new("rows");
        let n = || Dim::Symbol("N".into());
        g.input("x", FLOAT, &[n(), Dim::Fixed(6)]);
        g.input("y", FLOAT, &[n(), Dim::Fixed(6)]);
        let mean = g.constant_f32("mean", &[6], &[0.5, -1.0, 2.0, 0.0, 3.0, -0.25]);
        let std = g.constant_f32("std", &[1, 6], &[1.5, 0.5, 2.0, 1.0, 3.0, 0.75]);
        let two = g.constant_f32("two", &[], &[2.0]);
        let d = g.node("Sub", &["x", &mean], &[]);
        let d = g.node("Div", &[&d, &std], &[]);
        g.node_named("Mul", &[&two, &d], &["normalized"], &[]);
        let d = "normalized".to_string();
        let w: Vec<f32> = (0..60).map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0).collect();
        let w = g.constant_f32("w", &[6, 10], &w);
        let logits = g.node("Gemm", &[&d, &w], &[]);
        g.node_named(
            "Softmax",
            &[&logits],
            &["probabilities"],
            &[attr_int("axis", 1)],
        );
        g.node_named(
            "ArgMax",
            &["probabilities"],
            &["label"],
            &[attr_int("axis", 1), attr_int("keepdims", 0)],
        );
        g.node_named("Sub", &["x", "y"], &["diff"], &[]);
        g.output("probabilities", FLOAT, &[n(), Dim::Fixed(10)]);
        g.output("label", INT64, &[n()]);
        g.output("diff", FLOAT, &[n(), Dim::Fixed(6)]);
        g.output("normalized", FLOAT, &[n(), Dim::Fixed(6)]);
        kiln_onnx::encode(&g.into_model(17))
    }

    fn plan(bytes: &[u8], swap: bool) -> (Arc<TypedRunnableModel>, usize, Vec<String>) {
        let mut m = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.into_optimized())
            .expect("optimize");
        let swapped = if swap {
            replace_slow_ops(&mut m).expect("swap")
        } else {
            0
        };
        let names = m.nodes.iter().map(|n| n.op.name().to_string()).collect();
        (m.into_runnable().expect("plan"), swapped, names)
    }

    #[test]
    fn the_classifier_head_and_normalization_are_swapped() {
        let (_, swapped, names) = plan(&classifier(), true);
        assert_eq!(swapped, 4, "{names:?}");
        for op in ["KilnRowAffine", "KilnRowSoftmax", "KilnRowArgMax"] {
            assert!(names.iter().any(|n| n == op), "{op} missing: {names:?}");
        }
        // The Sub of two inputs has no constant operand of a fixed shape: still tract's.
        assert!(
            names
                .iter()
                .any(|n| n.contains("Sub") && !n.starts_with("Kiln")),
            "{names:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The swapped plan gives tract's own results: the normalization and the labels bit for
        /// bit (ties included: values are drawn from a coarse grid), the softmax within 1e-6.
        #[test]
        fn swapped_ops_match_tract(rows in 1usize..40, seed in any::<u64>()) {
            let bytes = classifier();
            let (tract, _, _) = plan(&bytes, false);
            let (kiln, _, _) = plan(&bytes, true);
            let mut s = seed | 1;
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 59) as f32 - 16.0) / 4.0
            };
            let x: Vec<f32> = (0..rows * 6).map(|_| next()).collect();
            let y: Vec<f32> = (0..rows * 6).map(|_| next()).collect();
            let inputs = || -> TVec<TValue> {
                tvec!(
                    tract_ndarray::Array2::from_shape_vec((rows, 6), x.clone()).expect("x").into_tvalue(),
                    tract_ndarray::Array2::from_shape_vec((rows, 6), y.clone()).expect("y").into_tvalue()
                )
            };
            let (a, b) = (tract.run(inputs()).expect("tract"), kiln.run(inputs()).expect("kiln"));
            let f = |t: &TValue| t.to_plain_array_view::<f32>().expect("f32").iter().copied().collect::<Vec<_>>();
            let (pa, pb) = (f(&a[0]), f(&b[0]));
            for (p, q) in pa.iter().zip(&pb) {
                prop_assert!((p - q).abs() <= 1e-6, "{p} vs {q}");
            }
            let l = |t: &TValue| t.to_plain_array_view::<i64>().expect("i64").iter().copied().collect::<Vec<_>>();
            prop_assert_eq!(l(&a[1]), l(&b[1]));
            prop_assert_eq!(f(&a[2]), f(&b[2]));
            prop_assert_eq!(f(&a[3]), f(&b[3]));
        }
    }
}
