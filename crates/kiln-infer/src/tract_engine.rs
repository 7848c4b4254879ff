use crate::InferError;
use kiln_core::{InferenceEngine, Tensor};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

/// Rewrites a model for tract: inlines model-local functions (tract does not run them) except
/// kiln's int8 op, which [`framework`] runs natively, and rewrites patterns tract would
/// simplify incorrectly (see `compat`). Returns the number of changes.
pub(crate) fn prepare(m: &mut kiln_onnx::proto::ModelProto) -> usize {
    let inlined = kiln_onnx::inline::inline_functions_keeping(m, &kiln_onnx::int8::OPS);
    inlined + crate::compat::tract_compat(m)
}

/// tract's ONNX framework with kiln's ops registered; kiln's int8 op splits large calls over
/// `threads` threads.
pub(crate) fn framework(threads: usize) -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    crate::int8_op::register(&mut onnx, threads);
    onnx
}

/// The tract engine: parses the ONNX bytes, optimizes the graph once for a symbolic batch
/// dimension, and runs any batch size through the same plan.
pub struct TractEngine {
    plan: Arc<TypedRunnableModel>,
    /// tract's multithreaded executor for this engine's calls, when more than one thread.
    executor: Option<tract_linalg::multithread::Executor>,
}

impl std::fmt::Debug for TractEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEngine").finish_non_exhaustive()
    }
}

impl TractEngine {
    /// Loads a model from serialized ONNX bytes. `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, InferError> {
        Self::from_bytes_with_threads(bytes, origin, 1)
    }

    /// [`TractEngine::from_bytes`] with `threads` intra-op threads: tract's matrix products run
    /// on a pool of that many threads (tract's `multithread-mm`), and kiln's int8 op
    /// (`ai.kiln.Int8Linear`) splits large calls over as many. 1 runs each call on the calling
    /// thread alone.
    pub fn from_bytes_with_threads(
        bytes: &[u8],
        origin: &Path,
        threads: usize,
    ) -> Result<Self, InferError> {
        let load = |reason: String| {
            // tract says `Unimplemented(Op)`: name the operator and the way out.
            let reason = match reason
                .split("Unimplemented(")
                .nth(1)
                .and_then(|r| r.split(')').next())
            {
                Some(op) => format!(
                    "the model uses operator {op:?}, which tract does not implement; run it with --engine ort, or re-export it without that operator ({reason})"
                ),
                None => reason,
            };
            InferError::Load {
                path: origin.to_path_buf(),
                engine: "tract",
                reason,
            }
        };
        // Inline model-local functions (tract does not run them) and rewrite patterns tract
        // would simplify incorrectly (see `compat`); other models are handed to tract byte for
        // byte.
        let patched = kiln_onnx::decode(bytes)
            .ok()
            .and_then(|mut m| (prepare(&mut m) > 0).then(|| kiln_onnx::encode(&m)));
        let bytes = patched.as_deref().unwrap_or(bytes);
        let model = framework(threads)
            .model_for_read(&mut &bytes[..])
            .map_err(|e| load(format!("{e:#}")))?;
        let plan = model
            .into_optimized()
            .and_then(|mut m| {
                crate::row_ops::replace_slow_ops(&mut m)?;
                m.into_runnable()
            })
            .map_err(|e| load(format!("{e:#}")))?;
        let executor = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("kiln-tract-{i}"))
                .build()
                .map_err(|e| load(format!("cannot start {threads} threads: {e}")))?;
            Some(tract_linalg::multithread::Executor::MultiThread(Arc::new(
                pool,
            )))
        } else {
            None
        };
        Ok(Self { plan, executor })
    }

    /// Loads a model file.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.to_path_buf(),
            engine: "tract",
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, path)
    }
}

fn to_tract(t: Tensor) -> Result<TValue, InferError> {
    let bad = |e: TractError| InferError::Input(format!("{e:#}"));
    Ok(match t {
        Tensor::F32 { shape, data } => tract_onnx::prelude::Tensor::from_shape(&shape, &data)
            .map_err(bad)?
            .into_tvalue(),
        Tensor::I64 { shape, data } => tract_onnx::prelude::Tensor::from_shape(&shape, &data)
            .map_err(bad)?
            .into_tvalue(),
    })
}

fn from_tract(v: &TValue) -> Result<Tensor, InferError> {
    let shape = v.shape().to_vec();
    let run = |e: TractError| InferError::Run {
        engine: "tract",
        reason: format!("{e:#}"),
    };
    match v.datum_type() {
        DatumType::F32 => Ok(Tensor::F32 {
            shape,
            data: v
                .to_plain_array_view::<f32>()
                .map_err(run)?
                .iter()
                .copied()
                .collect(),
        }),
        DatumType::I64 => Ok(Tensor::I64 {
            shape,
            data: v
                .to_plain_array_view::<i64>()
                .map_err(run)?
                .iter()
                .copied()
                .collect(),
        }),
        other => {
            let cast = v.cast_to::<f32>().map_err(|e| {
                InferError::Signature(format!(
                    "output of type {other:?} cannot be read as f32: {e:#}"
                ))
            })?;
            Ok(Tensor::F32 {
                shape,
                data: cast
                    .to_plain_array_view::<f32>()
                    .map_err(run)?
                    .iter()
                    .copied()
                    .collect(),
            })
        }
    }
}

impl TractEngine {
    /// Runs the plan, inside this engine's thread pool when it has one.
    fn execute(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let out = match &self.executor {
            Some(pool) => tract_linalg::multithread::multithread_tract_scope(pool.clone(), || {
                self.plan.run(inputs)
            }),
            None => self.plan.run(inputs),
        };
        // tract's AVX-512 kernels can leave the upper register state dirty, which slows every
        // SSE instruction after them (see `kiln_kernels::clear_upper_state`).
        kiln_kernels::clear_upper_state();
        out
    }
}

impl InferenceEngine for TractEngine {
    type Error = InferError;

    fn name(&self) -> &'static str {
        "tract"
    }

    fn run_f32(&self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, InferError> {
        // One copy, into tract's aligned storage, as when calling tract directly.
        let input = tract_onnx::prelude::Tensor::from_shape(shape, data)
            .map_err(|e| InferError::Input(format!("{e:#}")))?;
        let outputs = self
            .execute(tvec!(input.into_tvalue()))
            .map_err(|e| InferError::Run {
                engine: "tract",
                reason: format!("{e:#}"),
            })?;
        outputs.iter().map(from_tract).collect()
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let inputs: TVec<TValue> = inputs.into_iter().map(to_tract).collect::<Result<_, _>>()?;
        let outputs = self.execute(inputs).map_err(|e| InferError::Run {
            engine: "tract",
            reason: format!("{e:#}"),
        })?;
        outputs.iter().map(from_tract).collect()
    }
}
