use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, tensor_shape_proto, type_proto,
};

/// A tensor dimension in a value's declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A known size.
    Fixed(usize),
    /// A named symbolic size, such as the batch dimension `N`.
    Symbol(String),
}

/// Builds a float attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::FLOAT),
        f: Some(v),
        ..Default::default()
    }
}

/// Builds an int attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(v),
        ..Default::default()
    }
}

/// Builds an ints attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// Builds a string attribute.
pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::STRING),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A tensor-typed value info.
pub fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Symbol(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// Builds a graph node by node, giving every node and intermediate value a unique name.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
    used_domains: Vec<(String, i64)>,
    functions: Vec<crate::proto::FunctionProto>,
}

impl GraphBuilder {
    /// A new, empty graph with the given name.
    pub fn new(name: &str) -> Self {
        Self {
            graph: GraphProto {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.input.push(value_info(name, elem_type, dims));
    }

    /// Declares a graph output.
    pub fn output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem_type, dims));
    }

    /// Records the type of an intermediate value (`value_info`).
    pub fn annotate(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.graph
            .value_info
            .push(value_info(name, elem_type, dims));
    }

    /// Adds an initializer.
    pub fn initializer(&mut self, tensor: TensorProto) -> String {
        let name = tensor.name().to_string();
        self.graph.initializer.push(tensor);
        name
    }

    /// Adds a float32 initializer with a unique name derived from `stem`.
    pub fn constant_f32(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        let name = if self.graph.initializer.iter().any(|t| t.name() == stem) {
            self.fresh(stem)
        } else {
            stem.to_string()
        };
        self.initializer(crate::tensor_f32(&name, dims, data))
    }

    /// Adds a node of the default domain with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[AttributeProto]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, &[&out], attrs);
        out
    }

    /// Adds a node of the default domain with explicit output names.
    pub fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[AttributeProto],
    ) {
        let name = self.fresh(op);
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(name),
            op_type: Some(op.into()),
            attribute: attrs.to_vec(),
            ..Default::default()
        });
    }

    /// Renames a value produced by the last node that output it (used to give outputs their
    /// public names).
    pub fn rename_output_of_last(&mut self, from: &str, to: &str) {
        if let Some(n) = self
            .graph
            .node
            .iter_mut()
            .rev()
            .find(|n| n.output.iter().any(|o| o == from))
        {
            for o in n.output.iter_mut().filter(|o| *o == from) {
                *o = to.to_string();
            }
        }
    }

    /// Adds a node calling `op` of `domain` (a model-local function, or a custom op) with one
    /// output, and returns the output's name.
    pub fn node_in_domain(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        attrs: &[AttributeProto],
    ) -> String {
        let out = self.fresh(&op.to_lowercase());
        let name = self.fresh(op);
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: Some(name),
            op_type: Some(op.into()),
            domain: Some(domain.into()),
            attribute: attrs.to_vec(),
            ..Default::default()
        });
        out
    }

    /// Adds a model-local function (once per domain and name) and declares its domain.
    pub fn function(&mut self, f: crate::proto::FunctionProto) {
        let same =
            |g: &crate::proto::FunctionProto| g.name() == f.name() && g.domain() == f.domain();
        if !self.functions.iter().any(same) {
            self.use_domain(f.domain(), 1);
            self.functions.push(f);
        }
    }

    /// Declares that the graph uses an operator-set domain besides the default one.
    pub fn use_domain(&mut self, domain: &str, version: i64) {
        if !self.used_domains.iter().any(|(d, _)| d == domain) {
            self.used_domains.push((domain.to_string(), version));
        }
    }

    /// The graph built so far.
    pub fn graph(&self) -> &GraphProto {
        &self.graph
    }

    /// Wraps the graph in a model importing the default domain at `opset`, with the matching IR
    /// version.
    pub fn into_model(self, opset: i64) -> ModelProto {
        let mut opset_import = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }];
        for (d, v) in self.used_domains {
            opset_import.push(OperatorSetIdProto {
                domain: Some(d),
                version: Some(v),
            });
        }
        ModelProto {
            ir_version: Some(crate::ir_version_for_opset(opset).unwrap_or(8)),
            opset_import,
            graph: Some(self.graph),
            functions: self.functions,
            ..Default::default()
        }
    }
}
