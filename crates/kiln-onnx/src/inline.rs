//! Function inlining: replaces calls to model-local functions (`ModelProto.functions`) by their
//! bodies, for runtimes that do not run ONNX functions (tract 0.23 leaves such calls
//! unimplemented).
//!
//! Per the ONNX IR: a node calls the function with the same `domain`, `op_type` (its name) and
//! `overload`; formal inputs and outputs bind positionally to the node's; attributes referenced
//! in the body with `ref_attr_name` take the node's value, else the function's default
//! (`attribute_proto`), else are dropped; names local to the body are renamed so that two calls
//! never collide.

use crate::proto::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
};
use std::collections::HashMap;

/// Calls to a function nested more deeply than this are left alone (a recursive function).
const MAX_DEPTH: usize = 16;

fn key(domain: &str, name: &str, overload: &str) -> (String, String, String) {
    (domain.to_string(), name.to_string(), overload.to_string())
}

/// Inlines every call to a model-local function, in the main graph and in sub-graphs, then
/// drops the functions that are no longer called and merges the functions' operator-set
/// imports into the model's. Returns the number of calls inlined.
pub fn inline_functions(model: &mut ModelProto) -> usize {
    inline_functions_keeping(model, &[])
}

/// [`inline_functions`], except calls to the functions named in `keep` as `(domain, name)`:
/// a runtime that implements those natively (kiln's tract engine runs
/// [`crate::int8::OP`] with its own kernel) keeps the node and the function definition.
pub fn inline_functions_keeping(model: &mut ModelProto, keep: &[(&str, &str)]) -> usize {
    if model.functions.is_empty() {
        return 0;
    }
    let functions: HashMap<(String, String, String), FunctionProto> = model
        .functions
        .iter()
        .filter(|f| !keep.contains(&(f.domain(), f.name())))
        .map(|f| (key(f.domain(), f.name(), f.overload()), f.clone()))
        .collect();
    if functions.is_empty() {
        return 0;
    }
    let mut counter = 0usize;
    let mut inlined = 0usize;
    if let Some(g) = model.graph.as_mut() {
        inlined += inline_graph(g, &functions, &mut counter);
    }
    if inlined > 0 {
        // The bodies' imports become the model's, so the inlined ops resolve to the versions the
        // function was written against.
        for f in functions.values() {
            for o in &f.opset_import {
                if !model.opset_import.iter().any(|m| m.domain() == o.domain()) {
                    model.opset_import.push(OperatorSetIdProto {
                        domain: o.domain.clone(),
                        version: o.version,
                    });
                }
            }
        }
        let still_called = |f: &FunctionProto| model_calls(model.graph.as_ref(), f);
        let keep: Vec<FunctionProto> = model
            .functions
            .iter()
            .filter(|f| still_called(f))
            .cloned()
            .collect();
        model.functions = keep;
    }
    inlined
}

fn model_calls(g: Option<&GraphProto>, f: &FunctionProto) -> bool {
    let Some(g) = g else { return false };
    g.node.iter().any(|n| {
        (n.domain() == f.domain() && n.op_type() == f.name() && n.overload() == f.overload())
            || n.attribute.iter().any(|a| {
                a.g.as_deref().is_some_and(|sg| model_calls(Some(sg), f))
                    || a.graphs.iter().any(|sg| model_calls(Some(sg), f))
            })
    })
}

fn inline_graph(
    g: &mut GraphProto,
    functions: &HashMap<(String, String, String), FunctionProto>,
    counter: &mut usize,
) -> usize {
    let mut inlined = 0;
    for n in &mut g.node {
        for a in &mut n.attribute {
            if let Some(sg) = a.g.as_deref_mut() {
                inlined += inline_graph(sg, functions, counter);
            }
            for sg in &mut a.graphs {
                inlined += inline_graph(sg, functions, counter);
            }
        }
    }
    let mut out = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        inlined += expand(n, functions, counter, 0, &mut out);
    }
    g.node = out;
    inlined
}

/// Appends `node`, or its function body with names bound, to `out`; returns the calls inlined.
fn expand(
    node: NodeProto,
    functions: &HashMap<(String, String, String), FunctionProto>,
    counter: &mut usize,
    depth: usize,
    out: &mut Vec<NodeProto>,
) -> usize {
    let Some(f) = functions
        .get(&key(node.domain(), node.op_type(), node.overload()))
        .filter(|_| depth < MAX_DEPTH)
    else {
        out.push(node);
        return 0;
    };
    *counter += 1;
    let prefix = format!(
        "{}__{}_{}__",
        if node.name().is_empty() {
            f.name()
        } else {
            node.name()
        },
        f.name(),
        counter
    );
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, formal) in f.input.iter().enumerate() {
        names.insert(
            formal.clone(),
            node.input.get(i).cloned().unwrap_or_default(),
        );
    }
    for (i, formal) in f.output.iter().enumerate() {
        if let Some(actual) = node.output.get(i) {
            names.insert(formal.clone(), actual.clone());
        }
    }
    let attr_value = |name: &str| -> Option<&AttributeProto> {
        node.attribute
            .iter()
            .find(|a| a.name() == name)
            .or_else(|| f.attribute_proto.iter().find(|a| a.name() == name))
    };
    let mut inlined = 1;
    for inner in &f.node {
        let mut n = inner.clone();
        let rename = |v: &String, names: &HashMap<String, String>| -> String {
            if v.is_empty() {
                return String::new();
            }
            names
                .get(v)
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{v}"))
        };
        n.input = n.input.iter().map(|v| rename(v, &names)).collect();
        n.output = n.output.iter().map(|v| rename(v, &names)).collect();
        // Node names must stay unique: body nodes are often unnamed, so fall back to their output.
        let local = if inner.name().is_empty() {
            inner.output.first().map(String::as_str).unwrap_or_default()
        } else {
            inner.name()
        };
        n.name = Some(format!("{prefix}{local}"));
        n.attribute = n
            .attribute
            .into_iter()
            .filter_map(|a| {
                if a.ref_attr_name().is_empty() {
                    return Some(a);
                }
                attr_value(a.ref_attr_name()).map(|v| AttributeProto {
                    name: a.name.clone(),
                    ref_attr_name: None,
                    ..v.clone()
                })
            })
            .collect();
        inlined += expand(n, functions, counter, depth + 1, out);
    }
    inlined
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::data_type::FLOAT;
    use crate::{Dim, GraphBuilder};

    fn swish() -> FunctionProto {
        FunctionProto {
            name: Some("Swish".into()),
            domain: Some("ai.kiln".into()),
            input: vec!["x".into()],
            output: vec!["y".into()],
            node: vec![
                NodeProto {
                    op_type: Some("Sigmoid".into()),
                    input: vec!["x".into()],
                    output: vec!["s".into()],
                    ..Default::default()
                },
                NodeProto {
                    op_type: Some("Mul".into()),
                    input: vec!["x".into(), "s".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
            ],
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn two_calls_are_inlined_with_distinct_names() {
        let mut g = GraphBuilder::new("f");
        g.input("x", FLOAT, &[Dim::Fixed(2)]);
        let mut m = g.into_model(17);
        let graph = m.graph.as_mut().expect("graph");
        for (i, o) in [("x", "a"), ("a", "b")] {
            graph.node.push(NodeProto {
                op_type: Some("Swish".into()),
                domain: Some("ai.kiln".into()),
                input: vec![i.into()],
                output: vec![o.into()],
                ..Default::default()
            });
        }
        graph
            .output
            .push(crate::builder::value_info("b", FLOAT, &[Dim::Fixed(2)]));
        m.functions.push(swish());
        m.opset_import.push(OperatorSetIdProto {
            domain: Some("ai.kiln".into()),
            version: Some(1),
        });
        assert_eq!(inline_functions(&mut m), 2);
        let graph = m.graph.as_ref().expect("graph");
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Sigmoid", "Mul", "Sigmoid", "Mul"]);
        assert_eq!(graph.node[1].output, ["a"]);
        assert_eq!(graph.node[3].input[0], "a");
        assert_ne!(
            graph.node[0].output[0], graph.node[2].output[0],
            "locals of two calls must not collide"
        );
        assert!(m.functions.is_empty(), "uncalled functions are dropped");
    }

    #[test]
    fn attribute_references_take_the_call_value_or_the_default() {
        let mut f = swish();
        f.attribute_proto.push(crate::attr_float("alpha", 0.5));
        f.node[0].attribute.push(AttributeProto {
            name: Some("alpha".into()),
            ref_attr_name: Some("alpha".into()),
            r#type: Some(1),
            ..Default::default()
        });
        let call = |attrs: Vec<AttributeProto>| NodeProto {
            op_type: Some("Swish".into()),
            domain: Some("ai.kiln".into()),
            input: vec!["x".into()],
            output: vec!["y".into()],
            attribute: attrs,
            ..Default::default()
        };
        for (attrs, want) in [
            (vec![], 0.5f32),
            (vec![crate::attr_float("alpha", 2.0)], 2.0),
        ] {
            let mut m = GraphBuilder::new("f").into_model(17);
            m.graph.as_mut().expect("graph").node.push(call(attrs));
            m.functions.push(f.clone());
            inline_functions(&mut m);
            let a = &m.graph.as_ref().expect("graph").node[0].attribute[0];
            assert_eq!(
                (a.name(), a.f, a.ref_attr_name()),
                ("alpha", Some(want), "")
            );
        }
    }
}
