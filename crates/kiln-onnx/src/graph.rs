//! Graph utilities shared by the optimizer passes: lookups, rewiring and dead-code removal.

use crate::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};

/// Finds an attribute of a node by name.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

/// An int attribute, or `default` when absent.
pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

/// A float attribute, or `default` when absent.
pub fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

/// The initializer with this name.
pub fn initializer<'a>(graph: &'a GraphProto, name: &str) -> Option<&'a TensorProto> {
    graph.initializer.iter().find(|t| t.name() == name)
}

/// For each value name, the indices of the nodes that read it.
pub fn consumers(graph: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            map.entry(input.clone()).or_default().push(i);
        }
    }
    map
}

/// Names of the graph's outputs.
pub fn output_names(graph: &GraphProto) -> HashSet<String> {
    graph.output.iter().map(|o| o.name().to_string()).collect()
}

/// Replaces every read of value `from` by `to` in the graph's nodes (and in sub-graphs'
/// references to outer values, which ONNX allows).
pub fn rename_uses(graph: &mut GraphProto, from: &str, to: &str) {
    for n in &mut graph.node {
        for i in n.input.iter_mut().filter(|i| *i == from) {
            *i = to.to_string();
        }
        for a in &mut n.attribute {
            if let Some(g) = a.g.as_mut() {
                rename_uses(g, from, to);
            }
            for g in &mut a.graphs {
                rename_uses(g, from, to);
            }
        }
    }
}

/// Values read by nodes in sub-graphs (If/Loop/Scan bodies), which keep outer values alive.
fn subgraph_reads(graph: &GraphProto, acc: &mut HashSet<String>) {
    for n in &graph.node {
        for a in &n.attribute {
            let subs = a.g.iter().map(|g| g.as_ref()).chain(a.graphs.iter());
            for g in subs {
                for sn in &g.node {
                    acc.extend(sn.input.iter().cloned());
                }
                subgraph_reads(g, acc);
            }
        }
    }
}

/// Removes nodes whose outputs nobody reads and initializers nobody reads. Returns the number of
/// nodes and initializers removed.
pub fn eliminate_dead(graph: &mut GraphProto) -> (usize, usize) {
    let mut live: HashSet<String> = output_names(graph);
    subgraph_reads(graph, &mut live);
    let mut keep = vec![false; graph.node.len()];
    // Walk backwards: nodes are topologically sorted, so consumers come after producers.
    for (i, n) in graph.node.iter().enumerate().rev() {
        if n.output.iter().any(|o| live.contains(o)) {
            keep[i] = true;
            live.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    let before_nodes = graph.node.len();
    let mut idx = 0;
    graph.node.retain(|_| {
        let k = keep[idx];
        idx += 1;
        k
    });
    let inputs: HashSet<String> = graph.input.iter().map(|i| i.name().to_string()).collect();
    let before_inits = graph.initializer.len();
    // An initializer that is also a graph input is an overridable default: keep it.
    graph
        .initializer
        .retain(|t| live.contains(t.name()) || inputs.contains(t.name()));
    let dead_names: HashSet<String> = graph
        .value_info
        .iter()
        .map(|v| v.name().to_string())
        .filter(|n| !live.contains(n))
        .collect();
    graph.value_info.retain(|v| !dead_names.contains(v.name()));
    (
        before_nodes - graph.node.len(),
        before_inits - graph.initializer.len(),
    )
}

/// Counts nodes per operator type, sorted by type.
pub fn op_counts(graph: &GraphProto) -> Vec<(String, usize)> {
    let mut map: std::collections::BTreeMap<String, usize> = Default::default();
    for n in &graph.node {
        let key = if n.domain().is_empty() {
            n.op_type().to_string()
        } else {
            format!("{}:{}", n.domain(), n.op_type())
        };
        *map.entry(key).or_default() += 1;
    }
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dim, GraphBuilder, proto::data_type::FLOAT};

    #[test]
    fn dead_nodes_and_initializers_are_removed() {
        let mut g = GraphBuilder::new("t");
        g.input("x", FLOAT, &[Dim::Fixed(2)]);
        let c = g.constant_f32("unused", &[1], &[1.0]);
        let _dead = g.node("Add", &["x", &c], &[]);
        let y = g.node("Relu", &["x"], &[]);
        g.output(&y, FLOAT, &[Dim::Fixed(2)]);
        let mut m = g.into_model(17);
        let graph = m.graph.as_mut().expect("graph");
        assert_eq!(eliminate_dead(graph), (1, 1));
        assert_eq!(graph.node.len(), 1);
        assert_eq!(graph.node[0].op_type(), "Relu");
    }

    #[test]
    fn live_graph_is_untouched() {
        let mut g = GraphBuilder::new("t");
        g.input("x", FLOAT, &[Dim::Fixed(2)]);
        let y = g.node("Relu", &["x"], &[]);
        g.output(&y, FLOAT, &[Dim::Fixed(2)]);
        let mut m = g.into_model(17);
        assert_eq!(eliminate_dead(m.graph.as_mut().expect("graph")), (0, 0));
    }
}
