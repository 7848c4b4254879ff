//! `ai.kiln.Int8Linear` as a native tract op, backed by `kiln-kernels`.
//!
//! tract 0.23 runs integer-op ONNX models far slower than f32 and QDQ models as f32, so int8
//! brings no speed in the pure-Rust engine. kiln's quantizer therefore writes its own op (see
//! [`kiln_onnx::int8`]): a model-local function whose body any runtime can run, and which this
//! module registers in tract's ONNX op registry so that tract runs it with kiln's SIMD int8
//! kernel instead. The weights are packed once, when the model is loaded.

use kiln_kernels::Int8Linear;
use std::sync::Arc;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// Registers the op in a tract ONNX framework; each call of a layer may use up to `threads`
/// threads (see [`Int8Linear::with_threads`]).
pub fn register(onnx: &mut tract_onnx::Onnx, threads: usize) {
    // tract's registry takes plain function pointers, so the thread count is chosen among
    // builders: one per count up to 8 (more gains nothing on an MLP layer).
    type Builder = fn(
        &tract_onnx::model::ParsingContext,
        &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;
    let builder: Builder = match threads {
        0 | 1 => |c, n| build(c, n, 1),
        2 => |c, n| build(c, n, 2),
        3 => |c, n| build(c, n, 3),
        4 => |c, n| build(c, n, 4),
        5 => |c, n| build(c, n, 5),
        6 => |c, n| build(c, n, 6),
        7 => |c, n| build(c, n, 7),
        _ => |c, n| build(c, n, 8),
    };
    for (_, op) in kiln_onnx::int8::OPS {
        onnx.op_register.insert(op, builder);
    }
}

fn build(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
    threads: usize,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.domain != kiln_onnx::int8::DOMAIN {
        bail!(
            "operator {:?} of domain {:?} is not kiln's {}.{}",
            node.op_type,
            node.domain,
            kiln_onnx::int8::DOMAIN,
            kiln_onnx::int8::OP
        );
    }
    Ok((
        expand(Int8LinearExpansion {
            relu: node.op_type.ends_with("Relu"),
            fixed: node.op_type.starts_with(kiln_onnx::int8::OP_STATIC),
            threads,
        }),
        vec![],
    ))
}

/// The op as parsed: four inputs, of which the last three must be constants; `relu` for
/// `Int8LinearRelu`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Int8LinearExpansion {
    relu: bool,
    /// `Int8LinearStatic`: inputs 1 and 2 are the calibrated activation scale and zero point.
    fixed: bool,
    threads: usize,
}

impl Expansion for Int8LinearExpansion {
    fn name(&self) -> StaticName {
        "KilnInt8Linear".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        // The static op carries the activation scale and zero point before the weights.
        let w = if self.fixed { 3 } else { 1 };
        check_input_arity(inputs, w + 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[w].rank, 2)?;
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            if rank == 0 {
                bail!("Int8Linear needs an input with at least one axis");
            }
            for ax in 0..rank - 1 {
                s.equals(&inputs[0].shape[ax], &outputs[0].shape[ax])?;
            }
            s.equals(&inputs[0].shape[rank - 1], &inputs[w].shape[0])?;
            s.equals(&outputs[0].shape[rank - 1], &inputs[w].shape[1])?;
            Ok(())
        })?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| -> TractResult<Arc<Tensor>> {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("Int8Linear's {what} must be a constant (an initializer)"))
        };
        let first = if self.fixed { 3 } else { 1 };
        let w = konst(first, "weight")?;
        let ws = konst(first + 1, "weight scale")?;
        let b = konst(first + 2, "bias")?;
        if w.datum_type() != i8::datum_type() || w.rank() != 2 {
            bail!(
                "Int8Linear's weight must be int8 [K, N], not {:?} {:?}",
                w.datum_type(),
                w.shape()
            );
        }
        let (k, n) = (w.shape()[0], w.shape()[1]);
        let w = w.try_as_plain_ram()?.as_slice::<i8>()?.to_vec();
        let f32s = |t: &Tensor| -> TractResult<Vec<f32>> {
            Ok(t.cast_to::<f32>()?
                .try_as_plain_ram()?
                .as_slice::<f32>()?
                .to_vec())
        };
        let mut layer = Int8Linear::new(&w, k, n, f32s(&ws)?, Some(f32s(&b)?))
            .map_err(|e| format_err!("Int8Linear: {e}"))?
            .with_relu(self.relu)
            .with_threads(self.threads);
        if self.fixed {
            let scale = f32s(konst(1, "activation scale")?.as_ref())?;
            let zp = konst(2, "activation zero point")?;
            if scale.len() != 1 || zp.len() != 1 || zp.datum_type() != u8::datum_type() {
                bail!("Int8LinearStatic takes a float scalar scale and a uint8 scalar zero point");
            }
            let zp = zp.try_as_plain_ram()?.as_slice::<u8>()?[0];
            layer = layer
                .with_static_activation(scale[0], zp)
                .map_err(|e| format_err!("Int8LinearStatic: {e}"))?;
        }
        model.wire_node(
            prefix,
            KilnInt8Linear {
                layer: Arc::new(layer),
            },
            &inputs[..1],
        )
    }
}

/// The typed op: the packed layer, applied to the last axis of its one input.
#[derive(Debug, Clone)]
pub struct KilnInt8Linear {
    layer: Arc<Int8Linear>,
}

impl PartialEq for KilnInt8Linear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer)
    }
}

impl Eq for KilnInt8Linear {}

impl Op for KilnInt8Linear {
    fn name(&self) -> StaticName {
        "KilnInt8Linear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}×{} int8{}, {} kernel, {} thread(s)",
            self.layer.inputs(),
            self.layer.outputs(),
            if self.layer.relu() { " + relu" } else { "" },
            self.layer.isa(),
            self.layer.threads()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for KilnInt8Linear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        kiln_kernels::clear_upper_state();
        let input = args_1!(inputs);
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let (k, n) = (self.layer.inputs(), self.layer.outputs());
        let mut shape: TVec<usize> = input.shape().into();
        let rows = x.len().checked_div(k).unwrap_or(0);
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let mut out = Tensor::zero::<f32>(&shape)?;
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let y = view.as_slice_mut::<f32>()?;
            self.layer
                .forward(x, rows, y)
                .map_err(|e| format_err!("Int8Linear: {e}"))?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for KilnInt8Linear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        match shape.last_mut() {
            Some(last) => *last = self.layer.outputs().to_dim(),
            None => bail!("Int8Linear needs an input with at least one axis"),
        }
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0]
            .shape
            .iter()
            .take(inputs[0].rank().saturating_sub(1))
            .product();
        Ok(tvec!((
            Cost::FMA(i32::datum_type()),
            rows * (self.layer.inputs() * self.layer.outputs()) as i64
        )))
    }

    as_op!();
}
