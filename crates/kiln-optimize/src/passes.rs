//! Graph passes. Each pass rewrites a model in place and reports what it changed.

use crate::OptimizeError;
use kiln_onnx::graph;
use kiln_onnx::proto::ModelProto;
use serde::Serialize;

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassReport {
    /// The pass.
    pub pass: &'static str,
    /// Number of rewrites.
    pub changes: usize,
    /// One line per rewrite or per skipped node.
    pub details: Vec<String>,
}

impl PassReport {
    /// One summary line.
    pub fn summary(&self) -> String {
        format!("{}: {} change(s)", self.pass, self.changes)
    }
}

/// A graph rewrite.
pub trait Pass {
    /// The pass's name.
    fn name(&self) -> &'static str;
    /// Rewrites `model` in place.
    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError>;
}

fn graph_mut<'a>(
    model: &'a mut ModelProto,
    pass: &'static str,
) -> Result<&'a mut kiln_onnx::proto::GraphProto, OptimizeError> {
    model.graph.as_mut().ok_or(OptimizeError::Pass {
        pass,
        reason: "the model has no graph".into(),
    })
}

/// Removes `Identity` nodes and inference-mode `Dropout` nodes (whose mask output is unused),
/// rewiring their consumers to their input.
#[derive(Debug, Clone, Copy)]
pub struct RemoveIdentities;

impl Pass for RemoveIdentities {
    fn name(&self) -> &'static str {
        "remove-identities"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let mut details = Vec::new();
        loop {
            let outputs = graph::output_names(g);
            let used = graph::consumers(g);
            let inputs: std::collections::HashSet<String> =
                g.input.iter().map(|i| i.name().to_string()).collect();
            let found = g.node.iter().enumerate().find_map(|(i, n)| {
                let removable_op = n.domain().is_empty()
                    && match n.op_type() {
                        "Identity" => true,
                        // Dropout is the identity at inference, unless its mask is read or
                        // training_mode is fed.
                        "Dropout" => {
                            n.input.len() < 3
                                && n.output.get(1).is_none_or(|m| {
                                    m.is_empty() || (!used.contains_key(m) && !outputs.contains(m))
                                })
                        }
                        _ => false,
                    };
                (removable_op && n.input.first().is_some_and(|i| !i.is_empty()))
                    .then(|| (i, n.input[0].clone(), n.output[0].clone()))
            });
            let Some((idx, src, dst)) = found else { break };
            if outputs.contains(&dst) {
                // The identity feeds a graph output: make the producer write the output name
                // directly, when there is a producer and its value is not itself an output.
                let producer = g.node.iter().position(|n| n.output.contains(&src));
                match producer {
                    Some(p) if !outputs.contains(&src) && !inputs.contains(&src) => {
                        for o in g.node[p].output.iter_mut().filter(|o| **o == src) {
                            *o = dst.clone();
                        }
                        graph::rename_uses(g, &src, &dst);
                    }
                    _ => break,
                }
            } else {
                graph::rename_uses(g, &dst, &src);
            }
            let n = g.node.remove(idx);
            details.push(format!("removed {} {:?}", n.op_type(), n.name()));
        }
        Ok(PassReport {
            pass: self.name(),
            changes: details.len(),
            details,
        })
    }
}

/// Evaluates nodes whose inputs are all constants and replaces them by initializers. Nodes of
/// an operator this pass cannot evaluate are left alone and listed in the report.
#[derive(Debug, Clone, Copy)]
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        crate::fold::fold_constants(g).map(|(changes, details)| PassReport {
            pass: self.name(),
            changes,
            details,
        })
    }
}

/// Evaluates `Shape` and the int64 shape arithmetic built on it wherever the dimensions are
/// static (see `shapes`), replacing the results by initializers.
#[derive(Debug, Clone, Copy)]
pub struct FoldShapes;

impl Pass for FoldShapes {
    fn name(&self) -> &'static str {
        "fold-shapes"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let (changes, details) = crate::shapes::fold_shapes(g);
        Ok(PassReport {
            pass: self.name(),
            changes,
            details,
        })
    }
}

/// Removes nodes and initializers that no output depends on.
#[derive(Debug, Clone, Copy)]
pub struct EliminateDead;

impl Pass for EliminateDead {
    fn name(&self) -> &'static str {
        "eliminate-dead"
    }

    fn run(&self, model: &mut ModelProto) -> Result<PassReport, OptimizeError> {
        let g = graph_mut(model, self.name())?;
        let (nodes, inits) = graph::eliminate_dead(g);
        let mut details = Vec::new();
        if nodes > 0 {
            details.push(format!("removed {nodes} dead node(s)"));
        }
        if inits > 0 {
            details.push(format!("removed {inits} unused initializer(s)"));
        }
        Ok(PassReport {
            pass: self.name(),
            changes: nodes + inits,
            details,
        })
    }
}
