use crate::OnnxError;
use crate::proto::{TensorProto, data_type};

/// An initializer's data decoded into a typed vector.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValue {
    /// float32 data.
    F32(Vec<f32>),
    /// int64 data.
    I64(Vec<i64>),
    /// int32 data.
    I32(Vec<i32>),
    /// uint8 data.
    U8(Vec<u8>),
    /// int8 data.
    I8(Vec<i8>),
}

fn named(name: &str, dims: &[usize], dt: i32) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(dt),
        ..Default::default()
    }
}

/// A float32 tensor stored as little-endian `raw_data`.
pub fn tensor_f32(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    let mut t = named(name, dims, data_type::FLOAT);
    t.raw_data = Some(data.iter().flat_map(|v| v.to_le_bytes()).collect());
    t
}

/// An int64 tensor stored as little-endian `raw_data`.
pub fn tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    let mut t = named(name, dims, data_type::INT64);
    t.raw_data = Some(data.iter().flat_map(|v| v.to_le_bytes()).collect());
    t
}

/// A uint8 tensor.
pub fn tensor_u8(name: &str, dims: &[usize], data: &[u8]) -> TensorProto {
    let mut t = named(name, dims, data_type::UINT8);
    t.raw_data = Some(data.to_vec());
    t
}

/// An int8 tensor.
pub fn tensor_i8(name: &str, dims: &[usize], data: &[i8]) -> TensorProto {
    let mut t = named(name, dims, data_type::INT8);
    t.raw_data = Some(data.iter().map(|&v| v as u8).collect());
    t
}

fn le_chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

impl TensorValue {
    /// Decodes an initializer, from `raw_data` or the typed fields. External data is not read.
    pub fn from_proto(t: &TensorProto) -> Result<Self, OnnxError> {
        let err = |reason: String| OnnxError::Tensor {
            name: t.name().to_string(),
            reason,
        };
        if t.data_location() == 1 || !t.external_data.is_empty() {
            return Err(err(
                "data is stored externally; kiln reads inline tensors only".into(),
            ));
        }
        // Dims come from the file: negative or overflowing ones are malformed, not a panic.
        let numel = t
            .dims
            .iter()
            .try_fold(1usize, |acc, &d| {
                usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
            })
            .ok_or_else(|| err(format!("dims {:?} are negative or too large", t.dims)))?;
        let raw = t.raw_data.as_deref();
        let v = match t.data_type() {
            data_type::FLOAT => TensorValue::F32(match raw {
                Some(r) => le_chunks(r, f32::from_le_bytes),
                None => t.float_data.clone(),
            }),
            data_type::INT64 => TensorValue::I64(match raw {
                Some(r) => le_chunks(r, i64::from_le_bytes),
                None => t.int64_data.clone(),
            }),
            data_type::INT32 => TensorValue::I32(match raw {
                Some(r) => le_chunks(r, i32::from_le_bytes),
                None => t.int32_data.clone(),
            }),
            data_type::UINT8 => TensorValue::U8(match raw {
                Some(r) => r.to_vec(),
                None => t.int32_data.iter().map(|&v| v as u8).collect(),
            }),
            data_type::INT8 => TensorValue::I8(match raw {
                Some(r) => r.iter().map(|&b| b as i8).collect(),
                None => t.int32_data.iter().map(|&v| v as i8).collect(),
            }),
            other => {
                return Err(err(format!(
                    "data type {} is not supported here",
                    data_type::name(other)
                )));
            }
        };
        if v.len() != numel {
            return Err(err(format!(
                "holds {} values but its dims {:?} need {numel}",
                v.len(),
                t.dims
            )));
        }
        Ok(v)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorValue::F32(v) => v.len(),
            TensorValue::I64(v) => v.len(),
            TensorValue::I32(v) => v.len(),
            TensorValue::U8(v) => v.len(),
            TensorValue::I8(v) => v.len(),
        }
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32, when the tensor holds floats.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            TensorValue::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The values as i64 (integer tensors widen).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            TensorValue::I64(v) => Some(v.clone()),
            TensorValue::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorValue::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorValue::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorValue::F32(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn f32_tensors_round_trip(data in proptest::collection::vec(any::<f32>(), 0..64)) {
            let t = tensor_f32("w", &[data.len()], &data);
            let back = TensorValue::from_proto(&t).expect("decode");
            let got = back.as_f32().expect("f32");
            prop_assert_eq!(got.len(), data.len());
            for (a, b) in got.iter().zip(&data) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }

    #[test]
    fn typed_fields_are_read_when_raw_data_is_absent() {
        let t = TensorProto {
            name: Some("t".into()),
            dims: vec![2],
            data_type: Some(data_type::FLOAT),
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(
            TensorValue::from_proto(&t).expect("decode"),
            TensorValue::F32(vec![1.0, 2.0])
        );
    }

    #[test]
    fn wrong_element_count_is_an_error() {
        let mut t = tensor_f32("w", &[3], &[1.0, 2.0, 3.0]);
        t.dims = vec![4];
        let err = TensorValue::from_proto(&t)
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("\"w\"") && err.contains("need 4"), "{err}");
    }
}
