//! What `kiln inspect` shows of a model: producer, opsets, the graph's inputs and outputs
//! (initializers left out), operator counts and metadata.

use crate::proto::{ModelProto, ValueInfoProto, tensor_shape_proto::dimension::Value, type_proto};

/// A model at a glance.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// `producer_name`.
    pub producer: String,
    /// `producer_version`.
    pub producer_version: String,
    /// `ir_version`.
    pub ir_version: i64,
    /// `domain:version` of each imported opset (`ai.onnx` for the default domain).
    pub opsets: Vec<String>,
    /// Each graph input that is not an initializer, as `name: type [dims]`.
    pub inputs: Vec<String>,
    /// Each graph output, as `name: type [dims]`.
    pub outputs: Vec<String>,
    /// Nodes in the main graph.
    pub nodes: usize,
    /// Initializers in the main graph.
    pub initializers: usize,
    /// Operator counts (`domain:op` outside the default domain).
    pub ops: Vec<(String, usize)>,
    /// Metadata properties, in file order.
    pub metadata: Vec<(String, String)>,
}

impl ModelSummary {
    /// Summarizes `model`.
    pub fn of(model: &ModelProto) -> Self {
        let g = model.graph.clone().unwrap_or_default();
        let inits: std::collections::HashSet<&str> =
            g.initializer.iter().map(|t| t.name()).collect();
        Self {
            producer: model.producer_name().to_string(),
            producer_version: model.producer_version().to_string(),
            ir_version: model.ir_version(),
            opsets: model
                .opset_import
                .iter()
                .map(|o| {
                    let domain = if o.domain().is_empty() {
                        "ai.onnx"
                    } else {
                        o.domain()
                    };
                    format!("{domain}:{}", o.version())
                })
                .collect(),
            inputs: g
                .input
                .iter()
                .filter(|i| !inits.contains(i.name()))
                .map(describe_value)
                .collect(),
            outputs: g.output.iter().map(describe_value).collect(),
            nodes: g.node.len(),
            initializers: g.initializer.len(),
            ops: crate::graph::op_counts(&g),
            metadata: crate::metadata(model),
        }
    }
}

/// `name: elem_type [d0, d1, …]`, a dim shown as its value, its symbol, or `?` when the file
/// gives neither.
pub fn describe_value(v: &ValueInfoProto) -> String {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let dims: Vec<String> = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Value::DimValue(n)) => n.to_string(),
                            Some(Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{}: {} [{}]",
                v.name(),
                crate::proto::data_type::name(t.elem_type()),
                dims.join(", ")
            )
        }
        _ => format!("{}: (non-tensor)", v.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::data_type::FLOAT;
    use crate::{Dim, GraphBuilder};

    #[test]
    fn inputs_skip_initializers_and_unknown_dims_show_as_such() {
        let mut g = GraphBuilder::new("g");
        g.input("x", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(2)]);
        let w = g.constant_f32("w", &[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        g.node_named("MatMul", &["x", &w], &["y"], &[]);
        g.output("y", FLOAT, &[Dim::Symbol("N".into()), Dim::Fixed(2)]);
        let mut model = g.into_model(17);
        // skl2onnx writes the batch dim with neither a value nor a name.
        if let Some(graph) = model.graph.as_mut()
            && let Some(shape) = graph.output[0]
                .r#type
                .as_mut()
                .and_then(|t| t.value.as_mut())
                .and_then(|v| match v {
                    type_proto::Value::TensorType(t) => t.shape.as_mut(),
                    _ => None,
                })
        {
            shape.dim[0].value = None;
        }
        let s = ModelSummary::of(&model);
        assert_eq!(s.inputs, ["x: float32 [N, 2]"]);
        assert_eq!(s.outputs, ["y: float32 [?, 2]"]);
        assert_eq!((s.nodes, s.ops.len()), (1, 1));
        assert!(
            s.opsets.contains(&"ai.onnx:17".to_string()),
            "{:?}",
            s.opsets
        );
    }
}
