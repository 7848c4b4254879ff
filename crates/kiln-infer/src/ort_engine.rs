//! The ONNX Runtime engine, through `ort` with `load-dynamic`: `libonnxruntime.so` is loaded at
//! run time, so building kiln needs nothing installed, and a missing library is an error that
//! says how to get it.

use crate::InferError;
use kiln_core::{InferenceEngine, Tensor};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where to find the library when nothing else says: `scripts/fetch-onnxruntime.sh` puts it here.
pub const REPO_LIB: &str = ".ort/lib/libonnxruntime.so";

const HOW_TO_GET: &str = "run scripts/fetch-onnxruntime.sh, set ORT_DYLIB_PATH, or pass --ort-lib <path to libonnxruntime.so>";

/// Finds `libonnxruntime.so`: an explicit path, then `ORT_DYLIB_PATH`, then `.ort/lib` in the
/// working directory or above the running executable.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, InferError> {
    let missing = |what: String| InferError::EngineUnavailable {
        engine: "ort",
        reason: format!("ONNX Runtime library not found ({what}): {HOW_TO_GET}"),
    };
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(missing(format!("{} does not exist", p.display())))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(format!(
                "ORT_DYLIB_PATH={} does not exist",
                p.display()
            )))
        };
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots
        .into_iter()
        .map(|r| r.join(REPO_LIB))
        .find(|p| p.is_file())
        .ok_or_else(|| missing("no ORT_DYLIB_PATH and no .ort/lib/libonnxruntime.so".into()))
}

/// The process-wide ONNX Runtime environment. ONNX Runtime allows one per process, so the first
/// successful load wins; a failed load is remembered and reported again.
pub fn environment(
    lib: Option<&Path>,
) -> Result<&'static ort::environment::Environment, InferError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        // Keep only the reason: the error below says "the ort engine is unavailable" itself.
        let path = find_library(lib).map_err(|e| match e {
            InferError::EngineUnavailable { reason, .. } => reason,
            other => other.to_string(),
        })?;
        ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}; {HOW_TO_GET}", path.display()))?
            .with_name("kiln")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    env.as_ref()
        .map_err(|reason| InferError::EngineUnavailable {
            engine: "ort",
            reason: reason.clone(),
        })
}

/// True when the ONNX Runtime library can be found and loaded.
pub fn available(lib: Option<&Path>) -> Result<(), InferError> {
    environment(lib).map(|_| ())
}

/// Options of the ONNX Runtime engine.
#[derive(Debug, Clone, Default)]
pub struct OrtOptions {
    /// Path of `libonnxruntime.so` (else `ORT_DYLIB_PATH`, else `.ort/lib`).
    pub lib: Option<PathBuf>,
    /// Intra-op threads (ONNX Runtime's default when `None`).
    pub threads: Option<usize>,
    /// The execution provider.
    pub provider: crate::Provider,
    /// Sessions in the pool (at least 1): as many as threads that will call the engine at once.
    pub sessions: usize,
    /// Record ONNX Runtime's profiling trace, into files starting with this path (see
    /// [`OrtEngine::end_profiling`]).
    pub profiling: Option<PathBuf>,
}

/// The error for a provider this build was compiled without.
#[cfg(not(all(feature = "cuda", feature = "tensorrt")))]
fn unavailable(provider: crate::Provider, name: &str, feature: &str) -> InferError {
    InferError::ProviderUnavailable {
        provider: provider.to_string(),
        reason: format!(
            "this kiln was built without the {name} execution provider; rebuild with `--features {feature}` (and use an ONNX Runtime library built with {name}, e.g. from the onnxruntime-gpu wheel)"
        ),
    }
}

/// The execution providers to register for `provider`, each set to fail loudly: ort's default
/// is to fall back to the CPU silently when a provider cannot be registered.
fn execution_providers(
    provider: crate::Provider,
) -> Result<Vec<ort::ep::ExecutionProviderDispatch>, InferError> {
    match provider {
        crate::Provider::Cpu => Ok(vec![]),
        #[cfg(feature = "cuda")]
        crate::Provider::Cuda { device } => Ok(vec![
            ort::ep::CUDA::default()
                .with_device_id(device as i32)
                .build()
                .error_on_failure(),
        ]),
        #[cfg(not(feature = "cuda"))]
        crate::Provider::Cuda { .. } => Err(unavailable(provider, "CUDA", "cuda")),
        #[cfg(feature = "tensorrt")]
        crate::Provider::TensorRt { device } => Ok(vec![
            ort::ep::TensorRT::default()
                .with_device_id(device as i32)
                .build()
                .error_on_failure(),
        ]),
        #[cfg(not(feature = "tensorrt"))]
        crate::Provider::TensorRt { .. } => Err(unavailable(provider, "TensorRT", "tensorrt")),
    }
}

/// A model loaded in ONNX Runtime: a pool of sessions, one per concurrent caller.
pub struct OrtEngine {
    // `Session::run` takes `&mut self`, and the engine trait is `&self` so that one engine can be
    // shared by worker threads: each call takes a free session from the pool (waiting on the
    // first one only when all are busy).
    sessions: Vec<Mutex<ort::session::Session>>,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine").finish_non_exhaustive()
    }
}

impl OrtEngine {
    /// Loads serialized ONNX bytes; `origin` names the model in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path, opts: &OrtOptions) -> Result<Self, InferError> {
        let env = environment(opts.lib.as_deref())?;
        let load = |reason: String| InferError::Load {
            path: origin.to_path_buf(),
            engine: "ort",
            reason,
        };
        let mut sessions = Vec::with_capacity(opts.sessions.max(1));
        for _ in 0..opts.sessions.max(1) {
            let mut builder =
                ort::session::Session::builder(env).map_err(|e| load(e.to_string()))?;
            if let Some(t) = opts.threads {
                builder = builder
                    .with_intra_threads(t)
                    .map_err(|e| load(e.to_string()))?;
            }
            if let Some(prefix) = &opts.profiling {
                builder = builder
                    .with_profiling(prefix)
                    .map_err(|e| load(e.to_string()))?;
            }
            let providers = execution_providers(opts.provider)?;
            if !providers.is_empty() {
                builder = builder.with_execution_providers(providers).map_err(|e| {
                    InferError::ProviderUnavailable {
                        provider: opts.provider.to_string(),
                        reason: format!("ONNX Runtime could not register it: {e}"),
                    }
                })?;
            }
            let session = builder
                .commit_from_memory(bytes)
                .map_err(|e| load(e.to_string()))?;
            sessions.push(Mutex::new(session));
        }
        Ok(Self { sessions })
    }

    /// Ends ONNX Runtime's profiling of the first session and returns the trace file it wrote
    /// (Chrome trace JSON: one event per node and run).
    pub fn end_profiling(&self) -> Result<PathBuf, InferError> {
        let mut s = self.sessions[0].lock().map_err(|_| InferError::Run {
            engine: "ort",
            reason: "a previous run panicked while holding the session".into(),
        })?;
        s.end_profiling()
            .map(PathBuf::from)
            .map_err(|e| InferError::Run {
                engine: "ort",
                reason: format!("ending the profile: {e}"),
            })
    }

    /// A free session, or the first one (waiting) when all are busy.
    fn session(&self) -> Result<std::sync::MutexGuard<'_, ort::session::Session>, InferError> {
        let poisoned = || InferError::Run {
            engine: "ort",
            reason: "a previous run panicked while holding the session".into(),
        };
        for m in &self.sessions {
            match m.try_lock() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::WouldBlock) => continue,
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
            }
        }
        self.sessions[0].lock().map_err(|_| poisoned())
    }
}

impl InferenceEngine for OrtEngine {
    type Error = InferError;

    fn name(&self) -> &'static str {
        "ort"
    }

    fn run_f32(&self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, InferError> {
        // ONNX Runtime reads the caller's buffer in place: no copy at all.
        let input = ort::value::TensorRef::from_array_view((shape.to_vec(), data))
            .map_err(|e| InferError::Input(e.to_string()))?;
        let mut session = self.session()?;
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| InferError::Run {
                engine: "ort",
                reason: e.to_string(),
            })?;
        extract(&outputs)
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let run_err = |reason: String| InferError::Run {
            engine: "ort",
            reason,
        };
        let values: Vec<ort::session::SessionInputValue<'_>> = inputs
            .into_iter()
            .map(
                |t| -> Result<ort::session::SessionInputValue<'_>, InferError> {
                    Ok(match t {
                        Tensor::F32 { shape, data } => {
                            ort::value::Tensor::from_array((shape, data))
                                .map_err(|e| InferError::Input(e.to_string()))?
                                .into()
                        }
                        Tensor::I64 { shape, data } => {
                            ort::value::Tensor::from_array((shape, data))
                                .map_err(|e| InferError::Input(e.to_string()))?
                                .into()
                        }
                    })
                },
            )
            .collect::<Result<_, _>>()?;
        let mut session = self.session()?;
        let outputs = session
            .run(values.as_slice())
            .map_err(|e| run_err(e.to_string()))?;
        extract(&outputs)
    }
}

fn extract(outputs: &ort::session::SessionOutputs<'_>) -> Result<Vec<Tensor>, InferError> {
    let mut result = Vec::with_capacity(outputs.len());
    for (_, v) in outputs.iter() {
        if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
            result.push(Tensor::F32 {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                data: data.to_vec(),
            });
        } else if let Ok((shape, data)) = v.try_extract_tensor::<i64>() {
            result.push(Tensor::I64 {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                data: data.to_vec(),
            });
        } else {
            return Err(InferError::Signature(format!(
                "output of type {:?} is neither float32 nor int64",
                v.dtype()
            )));
        }
    }
    Ok(result)
}
