//! ONNX models for kiln: complete protobuf messages, reading and writing, a small graph builder
//! and graph utilities shared by the export and optimize stages.
//!
//! The principal types are [`proto::ModelProto`] and its children, written from the ONNX IR
//! specification as prost messages. The design decision that matters: the messages keep proto2
//! field *presence* (`Option<T>`) and every field of the current IR, so a model from another
//! tool can be decoded, rewritten and encoded again without losing anything. A round-trip test
//! over models built by Python's `onnx` package pins this.
//!
//! ```
//! use kiln_onnx::{GraphBuilder, proto::data_type};
//!
//! let mut g = GraphBuilder::new("double");
//! g.input("x", data_type::FLOAT, &[kiln_onnx::Dim::Symbol("N".into()), kiln_onnx::Dim::Fixed(3)]);
//! let two = g.constant_f32("two", &[], &[2.0]);
//! let y = g.node("Mul", &["x", &two], &[]);
//! g.output(&y, data_type::FLOAT, &[kiln_onnx::Dim::Symbol("N".into()), kiln_onnx::Dim::Fixed(3)]);
//! let model = g.into_model(17);
//! let bytes = kiln_onnx::encode(&model);
//! let back = kiln_onnx::decode(&bytes).unwrap();
//! assert_eq!(model, back);
//! ```

#![warn(missing_docs)]

mod builder;
mod error;
pub mod graph;
pub mod inline;
pub mod int8;
pub mod proto;
mod summary;
mod tensor;

pub use builder::{Dim, GraphBuilder, attr_float, attr_int, attr_ints, attr_string};
pub use error::OnnxError;
pub use summary::{ModelSummary, describe_value};
pub use tensor::{TensorValue, tensor_f32, tensor_i8, tensor_i64, tensor_u8};

use proto::ModelProto;
use std::path::Path;

/// Protobuf's hard limit on a single message; ONNX files above it need external data.
pub const PROTOBUF_LIMIT: u64 = 2 * 1024 * 1024 * 1024 - 1;

/// The IR version that goes with an opset of the default domain, per the ONNX versioning table.
pub fn ir_version_for_opset(opset: i64) -> Option<i64> {
    Some(match opset {
        7..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21 => 10,
        22 => 10,
        23 => 11,
        _ => return None,
    })
}

/// Decodes a serialized `ModelProto`.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    use prost::Message;
    ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: None,
        reason: e.to_string(),
    })
}

/// Encodes a `ModelProto`.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    use prost::Message;
    model.encode_to_vec()
}

/// Reads an ONNX file, with errors that name the file and say what to do.
pub fn load(path: &Path) -> Result<ModelProto, OnnxError> {
    let meta = std::fs::metadata(path).map_err(|e| OnnxError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.is_dir() {
        return Err(OnnxError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "this is a directory; pass an .onnx file",
            ),
        });
    }
    if meta.len() > PROTOBUF_LIMIT {
        return Err(OnnxError::Decode {
            path: Some(path.to_path_buf()),
            reason: format!(
                "the file is {} bytes, above protobuf's 2 GiB limit; store its weights as ONNX external data",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| OnnxError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let model = decode(&bytes).map_err(|e| match e {
        OnnxError::Decode { reason, .. } => OnnxError::Decode {
            path: Some(path.to_path_buf()),
            reason: format!(
                "not a valid ONNX model ({reason}); is the file truncated or of another format?"
            ),
        },
        other => other,
    })?;
    if model.graph.is_none() {
        return Err(OnnxError::Decode {
            path: Some(path.to_path_buf()),
            reason: "the model has no graph; is this really an ONNX model file?".into(),
        });
    }
    check_opset(&model).map_err(|reason| OnnxError::Decode {
        path: Some(path.to_path_buf()),
        reason,
    })?;
    Ok(model)
}

/// The newest default-domain opset kiln accepts: ONNX's newest released opset when this kiln
/// was written. Newer models may use operator versions no engine here implements.
pub const MAX_OPSET: i64 = 23;

/// Refuses a model whose default-domain opset is newer than [`MAX_OPSET`] (or not positive).
pub fn check_opset(model: &ModelProto) -> Result<(), String> {
    match default_opset(model) {
        Some(v) if v > MAX_OPSET => Err(format!(
            "the model uses ONNX opset {v}, newer than the opsets this kiln knows (1 to {MAX_OPSET}); re-export it with an older opset (e.g. torch.onnx.export(..., opset_version=17))"
        )),
        Some(v) if v < 1 => Err(format!(
            "the model declares ONNX opset {v}, which does not exist"
        )),
        _ => Ok(()),
    }
}

/// Writes an ONNX file atomically (temporary file + rename).
pub fn save(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    kiln_core::fsutil::write_atomic(path, &encode(model)).map_err(OnnxError::Write)
}

/// Reads `metadata_props` as key/value pairs.
pub fn metadata(model: &ModelProto) -> Vec<(String, String)> {
    model
        .metadata_props
        .iter()
        .map(|p| (p.key().to_string(), p.value().to_string()))
        .collect()
}

/// Looks up one `metadata_props` value.
pub fn metadata_value<'a>(model: &'a ModelProto, key: &str) -> Option<&'a str> {
    model
        .metadata_props
        .iter()
        .find(|p| p.key() == key)
        .map(|p| p.value())
}

/// Sets (or replaces) one `metadata_props` entry.
pub fn set_metadata(model: &mut ModelProto, key: &str, value: &str) {
    if let Some(p) = model.metadata_props.iter_mut().find(|p| p.key() == key) {
        p.value = Some(value.to_string());
    } else {
        model.metadata_props.push(proto::StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
        });
    }
}

/// The opset version the model imports for the default ONNX domain.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_file_gives_a_clear_error() {
        let mut g = GraphBuilder::new("t");
        g.input("x", proto::data_type::FLOAT, &[Dim::Fixed(2)]);
        let y = g.node("Relu", &["x"], &[]);
        g.output(&y, proto::data_type::FLOAT, &[Dim::Fixed(2)]);
        let bytes = encode(&g.into_model(17));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.onnx");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
        let err = load(&p).expect_err("truncated").to_string();
        assert!(err.contains("t.onnx") && err.contains("truncated"), "{err}");
    }

    #[test]
    fn metadata_set_and_get() {
        let mut m = GraphBuilder::new("t").into_model(17);
        set_metadata(&mut m, "a", "1");
        set_metadata(&mut m, "a", "2");
        assert_eq!(metadata_value(&m, "a"), Some("2"));
        assert_eq!(m.metadata_props.len(), 1);
    }

    #[test]
    fn ir_versions_follow_the_table() {
        assert_eq!(ir_version_for_opset(17), Some(8));
        assert_eq!(ir_version_for_opset(13), Some(7));
        assert_eq!(ir_version_for_opset(21), Some(10));
        assert_eq!(ir_version_for_opset(99), None);
    }
}
