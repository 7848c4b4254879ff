use crate::ExportError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Named f32 tensors read from a SafeTensors file.
#[derive(Debug, Clone)]
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    sha256: String,
}

impl Weights {
    /// Reads every tensor of a SafeTensors file; non-f32 tensors are an error.
    pub fn load(path: &Path) -> Result<Self, ExportError> {
        let err = |reason: String| ExportError::Weights {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| err(format!("not a valid SafeTensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(err(format!(
                    "tensor {name:?} is {:?}; kiln exports f32 weights",
                    view.dtype()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            sha256,
        })
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32], ExportError> {
        let err = |reason: String| ExportError::Weights {
            path: self.path.clone(),
            reason,
        };
        let (s, d) = self.tensors.get(name).ok_or_else(|| {
            let mut known: Vec<&String> = self.tensors.keys().collect();
            known.sort();
            err(format!(
                "tensor {name:?} is missing (the file has: {known:?})"
            ))
        })?;
        if s != shape {
            return Err(err(format!(
                "tensor {name:?} has shape {s:?}, the spec needs {shape:?}"
            )));
        }
        Ok(d)
    }

    /// sha256 of the weights file, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}
