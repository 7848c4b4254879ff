//! The KServe v2 / Open Inference Protocol messages, in JSON and with Triton's binary tensor
//! extension (`Inference-Header-Content-Length`), which `tritonclient` uses by default.

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The HTTP header that splits a binary request or response into JSON and tensor bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An inference request.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output`, `timeout` in microseconds, ...).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors.
    pub inputs: Vec<RequestInput>,
    /// Requested outputs; all of the model's when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of a request.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    /// Tensor name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<i64>,
    /// KServe datatype (`FP32`, `INT64`, ...).
    pub datatype: String,
    /// Tensor parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Row-major values, flat or nested.
    #[serde(default)]
    pub data: Option<FlatData>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// Output parameters (`binary_data`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// Tensor values from JSON, flattened in row-major order whatever their nesting.
#[derive(Debug, Default, PartialEq)]
pub struct FlatData(pub Vec<f64>);

struct Flatten<'a>(&'a mut Vec<f64>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, as a flat or nested array")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(v);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.reserve(n);
        }
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Vec::new();
        d.deserialize_any(Flatten(&mut v))?;
        Ok(FlatData(v))
    }
}

/// An inference response.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    /// The model's name.
    pub model_name: &'a str,
    /// The model's version.
    pub model_version: &'a str,
    /// The request's id, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Serialize)]
pub struct ResponseOutput {
    /// Output name.
    pub name: String,
    /// KServe datatype.
    pub datatype: &'static str,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// `binary_data_size` when the data travels after the JSON header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// The values, when sent as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<OutputData>,
}

/// Output values.
#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum OutputData {
    /// `FP32`.
    F32(Vec<f32>),
    /// `INT64`.
    I64(Vec<i64>),
}

impl OutputData {
    /// Little-endian bytes, as the binary tensor extension sends them.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            OutputData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// The KServe datatype of an ONNX element type.
pub fn datatype_name(onnx_elem_type: i32) -> &'static str {
    match onnx_elem_type {
        1 => "FP32",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        9 => "BOOL",
        10 => "FP16",
        11 => "FP64",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BF16",
        _ => "UNKNOWN",
    }
}

/// Reads a boolean parameter, accepting JSON booleans only.
pub fn bool_param(params: Option<&Map<String, Value>>, key: &str) -> Option<bool> {
    params?.get(key)?.as_bool()
}

/// Reads a non-negative integer parameter.
pub fn u64_param(params: Option<&Map<String, Value>>, key: &str) -> Option<u64> {
    params?.get(key)?.as_u64()
}

/// The FP32 rows of a request for a model with one input `expected` of `width` features:
/// checks the input's name, datatype and shape `[rows, width]`, takes the values from JSON
/// `data` or from the binary tensor bytes (`binary_data_size`), and refuses non-finite values.
/// The message names the tensor and what is wrong; it is the body of a 400 answer.
pub fn decode_rows(
    req: &InferRequest,
    binary: &[u8],
    expected: &str,
    width: usize,
) -> Result<(Vec<f32>, usize), String> {
    let [input] = req.inputs.as_slice() else {
        return Err(format!(
            "the model takes one input '{expected}', the request has {} ({})",
            req.inputs.len(),
            req.inputs
                .iter()
                .map(|i| format!("'{}'", i.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if input.name != expected {
        return Err(format!(
            "unknown input '{}'; the model's input is '{expected}'",
            input.name
        ));
    }
    if input.datatype != "FP32" {
        return Err(format!(
            "input '{}' has datatype {}, the model takes FP32",
            input.name, input.datatype
        ));
    }
    let shape_ok = input.shape.len() == 2 && input.shape[0] >= 1 && input.shape[1] == width as i64;
    // rows × width values of 4 bytes must fit in memory arithmetic; a huge declared shape is a
    // bad request, not an overflow.
    let rows = usize::try_from(input.shape.first().copied().unwrap_or(0)).unwrap_or(0);
    let want = rows
        .checked_mul(width)
        .filter(|w| w.checked_mul(4).is_some());
    let (true, Some(want)) = (shape_ok, want) else {
        return Err(format!(
            "input '{}' has shape {:?}, the model takes [-1, {width}] (rows of {width} features)",
            input.name, input.shape
        ));
    };
    let values: Vec<f32> = match u64_param(input.parameters.as_ref(), "binary_data_size") {
        Some(size) => {
            if usize::try_from(size).ok() != Some(binary.len()) || binary.len() != want * 4 {
                return Err(format!(
                    "input '{}' declares {size} binary bytes; shape {:?} of FP32 needs {} and the body carries {}",
                    input.name,
                    input.shape,
                    want * 4,
                    binary.len()
                ));
            }
            binary
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        None => {
            let Some(FlatData(data)) = &input.data else {
                return Err(format!(
                    "input '{}' has neither data nor binary_data_size",
                    input.name
                ));
            };
            if data.len() != want {
                return Err(format!(
                    "input '{}' has {} values; shape {:?} needs {want}",
                    input.name,
                    data.len(),
                    input.shape
                ));
            }
            data.iter().map(|&v| v as f32).collect()
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "input '{}' value {i} (row {}, column {}) is not a finite FP32 number",
            input.name,
            i / width.max(1),
            i % width.max(1)
        ));
    }
    Ok((values, rows))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_is_flattened_whatever_the_nesting() {
        let r: RequestInput = serde_json::from_str(
            r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[-3,4e0]]}"#,
        )
        .expect("parses");
        assert_eq!(r.data, Some(FlatData(vec![1.0, 2.5, -3.0, 4.0])));
        let r: RequestInput =
            serde_json::from_str(r#"{"name":"x","shape":[1,2],"datatype":"FP32","data":[7,8]}"#)
                .expect("parses");
        assert_eq!(r.data, Some(FlatData(vec![7.0, 8.0])));
    }

    #[test]
    fn non_numbers_are_refused() {
        for bad in [r#"["a"]"#, "[true]", "[null]", r#"[{"a":1}]"#] {
            let text = format!(r#"{{"name":"x","shape":[1],"datatype":"FP32","data":{bad}}}"#);
            assert!(
                serde_json::from_str::<RequestInput>(&text).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn binary_output_is_little_endian() {
        assert_eq!(
            OutputData::F32(vec![1.0]).to_le_bytes(),
            1.0f32.to_le_bytes().to_vec()
        );
        assert_eq!(OutputData::I64(vec![2, 3]).to_le_bytes().len(), 16);
    }

    #[test]
    fn a_huge_declared_shape_is_a_bad_request_not_an_overflow() {
        let req: InferRequest = serde_json::from_str(
            r#"{"inputs":[{"name":"x","shape":[4611686018427387904,4],"datatype":"FP32","data":[1]}]}"#,
        )
        .unwrap();
        let err = decode_rows(&req, &[], "x", 4).unwrap_err();
        assert!(err.contains("has shape"), "{err}");
        let req: InferRequest = serde_json::from_str(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#,
        )
        .unwrap();
        assert_eq!(
            decode_rows(&req, &[], "x", 2).unwrap(),
            (vec![1.0, 2.0, 3.0, 4.0], 2)
        );
    }
}
