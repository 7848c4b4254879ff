//! Shape-op folding: `Shape` and the small int64 arithmetic exporters build on it
//! (`Gather`, `Slice`, `Unsqueeze`, `Squeeze`, `Concat`, `Cast`, `Add`/`Sub`/`Mul`/`Div`) are
//! evaluated wherever the dimensions they read are static, and replaced by initializers.
//!
//! PyTorch exports `x.view(x.size(0), -1)` as `Shape → Gather → Unsqueeze → Concat → Reshape`.
//! With a symbolic batch dimension `Shape(x)` is not constant, but the dimensions after it are:
//! the pass tracks shape vectors element by element (`Some(d)` static, `None` symbolic), so
//! `Gather(Shape(x), 1)` folds even when `Gather(Shape(x), 0)` cannot. Shapes come from the
//! graph inputs, `value_info`, initializers, and are carried through element-wise ops.

use kiln_onnx::graph;
use kiln_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use kiln_onnx::proto::{GraphProto, NodeProto, ValueInfoProto, data_type, type_proto};
use kiln_onnx::{TensorValue, tensor_i64};
use std::collections::HashMap;

/// Ops whose output has the shape of their first input.
const SAME_SHAPE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Identity",
    "Dropout",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Sqrt",
    "Erf",
    "Clip",
    "Cast",
    "Elu",
    "Selu",
    "HardSigmoid",
    "Softplus",
    "BatchNormalization",
    "LayerNormalization",
];

/// Longest int64 vector the pass evaluates: shape arithmetic is short.
const MAX_LEN: usize = 64;

/// A value the pass knows something about: an int64 vector (or scalar) with each element
/// either known or not.
#[derive(Debug, Clone)]
struct Partial {
    scalar: bool,
    values: Vec<Option<i64>>,
}

impl Partial {
    fn known(&self) -> Option<Vec<i64>> {
        self.values.iter().copied().collect()
    }
}

fn value_dims(v: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(
            t.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(DimValue::DimValue(n)) if n >= 0 => Some(n),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    graph::attr(node, name).map(|a| a.ints.clone())
}

/// Folds what it can; returns the number of nodes replaced and one line per fold.
pub fn fold_shapes(g: &mut GraphProto) -> (usize, Vec<String>) {
    let mut shapes: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    for v in g.input.iter().chain(&g.value_info) {
        if let Some(d) = value_dims(v) {
            shapes.insert(v.name().to_string(), d);
        }
    }
    let mut ints: HashMap<String, Partial> = HashMap::new();
    for t in &g.initializer {
        shapes.insert(
            t.name().to_string(),
            t.dims.iter().map(|&d| Some(d)).collect(),
        );
        if t.data_type() == data_type::INT64
            && t.dims.len() <= 1
            && let Ok(TensorValue::I64(v)) = TensorValue::from_proto(t)
            && v.len() <= MAX_LEN
        {
            ints.insert(
                t.name().to_string(),
                Partial {
                    scalar: t.dims.is_empty(),
                    values: v.into_iter().map(Some).collect(),
                },
            );
        }
    }
    let mut folded: Vec<(usize, Vec<i64>, bool)> = Vec::new();
    let mut details = Vec::new();
    for (idx, n) in g.node.iter().enumerate() {
        if !n.domain().is_empty() || n.output.is_empty() {
            continue;
        }
        let out = n.output[0].clone();
        if SAME_SHAPE.contains(&n.op_type())
            && let Some(s) = n.input.first().and_then(|i| shapes.get(i)).cloned()
        {
            shapes.insert(out.clone(), s);
        }
        let Some(p) = eval(n, &shapes, &ints) else {
            continue;
        };
        if let Some(v) = p.known() {
            details.push(format!(
                "folded {} {:?} to {:?}",
                n.op_type(),
                if n.name().is_empty() { &out } else { n.name() },
                v
            ));
            folded.push((idx, v, p.scalar));
        }
        shapes.insert(
            out.clone(),
            if p.scalar {
                vec![]
            } else {
                vec![Some(p.values.len() as i64)]
            },
        );
        ints.insert(out, p);
    }
    let changes = folded.len();
    // Replace from the back; the outputs become initializers with the same names.
    for (idx, v, scalar) in folded.into_iter().rev() {
        let node = g.node.remove(idx);
        let dims: Vec<usize> = if scalar { vec![] } else { vec![v.len()] };
        g.initializer.push(tensor_i64(&node.output[0], &dims, &v));
    }
    if changes > 0 {
        graph::eliminate_dead(g);
    }
    (changes, details)
}

fn eval(
    n: &NodeProto,
    shapes: &HashMap<String, Vec<Option<i64>>>,
    ints: &HashMap<String, Partial>,
) -> Option<Partial> {
    let input = |i: usize| n.input.get(i).filter(|s| !s.is_empty());
    let int = |i: usize| input(i).and_then(|s| ints.get(s));
    let known = |i: usize| int(i).and_then(Partial::known);
    match n.op_type() {
        "Shape" => {
            let dims = shapes.get(input(0)?)?;
            let rank = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clamp(graph::attr_i(n, "start", 0));
            let end = clamp(graph::attr_i(n, "end", rank));
            Some(Partial {
                scalar: false,
                values: dims.get(start..end.max(start))?.to_vec(),
            })
        }
        "Gather" => {
            let data = int(0)?;
            if graph::attr_i(n, "axis", 0) != 0 || data.scalar {
                return None;
            }
            let idx = int(1)?;
            let len = data.values.len() as i64;
            let values = idx
                .known()?
                .into_iter()
                .map(|i| {
                    let i = if i < 0 { i + len } else { i };
                    (0..len).contains(&i).then(|| data.values[i as usize])
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Partial {
                scalar: idx.scalar,
                values,
            })
        }
        "Unsqueeze" => {
            let data = int(0)?;
            let axes = ints_attr(n, "axes").or_else(|| known(1))?;
            // A scalar becomes a 1-element vector; that is all shape code does with it.
            (data.scalar && axes.len() == 1 && (axes[0] == 0 || axes[0] == -1)).then(|| Partial {
                scalar: false,
                values: data.values.clone(),
            })
        }
        "Squeeze" => {
            let data = int(0)?;
            (!data.scalar && data.values.len() == 1).then(|| Partial {
                scalar: true,
                values: data.values.clone(),
            })
        }
        "Concat" => {
            if graph::attr_i(n, "axis", 0) != 0 && graph::attr_i(n, "axis", 0) != -1 {
                return None;
            }
            let mut values = Vec::new();
            for i in 0..n.input.len() {
                let p = int(i)?;
                if p.scalar {
                    return None;
                }
                values.extend(&p.values);
            }
            (values.len() <= MAX_LEN).then_some(Partial {
                scalar: false,
                values,
            })
        }
        "Cast" => {
            (graph::attr_i(n, "to", 0) == data_type::INT64 as i64).then(|| int(0).cloned())?
        }
        "Slice" => {
            let data = int(0)?;
            if data.scalar {
                return None;
            }
            let (starts, ends) = (known(1)?, known(2)?);
            let axes = match input(3) {
                Some(_) => known(3)?,
                None => vec![0],
            };
            let steps = match input(4) {
                Some(_) => known(4)?,
                None => vec![1],
            };
            if starts.len() != 1 || ends.len() != 1 || !matches!(axes[..], [0] | [-1]) {
                return None;
            }
            if steps != [1] {
                return None;
            }
            let len = data.values.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
            let (s, e) = (clamp(starts[0]), clamp(ends[0]));
            Some(Partial {
                scalar: false,
                values: data.values.get(s..e.max(s))?.to_vec(),
            })
        }
        op @ ("Add" | "Sub" | "Mul" | "Div") => {
            let (a, b) = (int(0)?, int(1)?);
            let len = a.values.len().max(b.values.len());
            if !(a.values.len() == len || a.values.len() == 1)
                || !(b.values.len() == len || b.values.len() == 1)
            {
                return None;
            }
            let at = |p: &Partial, i: usize| p.values[if p.values.len() == 1 { 0 } else { i }];
            let values = (0..len)
                .map(|i| match (at(a, i), at(b, i)) {
                    (Some(x), Some(y)) => match op {
                        "Add" => x.checked_add(y),
                        "Sub" => x.checked_sub(y),
                        "Mul" => x.checked_mul(y),
                        // ONNX integer Div truncates toward zero, like Rust's.
                        _ => x.checked_div(y),
                    },
                    _ => None,
                })
                .collect();
            Some(Partial {
                scalar: a.scalar && b.scalar,
                values,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kiln_onnx::{Dim, GraphBuilder, attr_int};

    /// `x.view(x.size(0), -1)` as PyTorch exports it, for an input of shape `dims`.
    fn flatten_graph(batch: Dim) -> GraphProto {
        let mut g = GraphBuilder::new("flatten");
        g.input(
            "x",
            data_type::FLOAT,
            &[batch, Dim::Fixed(4), Dim::Fixed(2)],
        );
        let s = g.node("Shape", &["x"], &[]);
        let i0 = g.initializer(tensor_i64("i0", &[], &[0]));
        let i1 = g.initializer(tensor_i64("i1", &[], &[1]));
        let i2 = g.initializer(tensor_i64("i2", &[], &[2]));
        let d0 = g.node("Gather", &[&s, &i0], &[attr_int("axis", 0)]);
        let d1 = g.node("Gather", &[&s, &i1], &[attr_int("axis", 0)]);
        let d2 = g.node("Gather", &[&s, &i2], &[attr_int("axis", 0)]);
        let m = g.node("Mul", &[&d1, &d2], &[]);
        let ax = g.initializer(tensor_i64("ax", &[1], &[0]));
        let u0 = g.node("Unsqueeze", &[&d0, &ax], &[]);
        let u1 = g.node("Unsqueeze", &[&m, &ax], &[]);
        let c = g.node("Concat", &[&u0, &u1], &[attr_int("axis", 0)]);
        let y = g.node("Reshape", &["x", &c], &[]);
        g.output(&y, data_type::FLOAT, &[]);
        g.into_model(17).graph.unwrap()
    }

    #[test]
    fn static_shapes_fold_to_a_constant_reshape() {
        let mut g = flatten_graph(Dim::Fixed(3));
        let (changes, details) = fold_shapes(&mut g);
        assert!(changes >= 1, "{details:?}");
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Reshape"], "{details:?}");
        let shape = graph::initializer(&g, &g.node[0].input[1]).unwrap();
        assert_eq!(
            TensorValue::from_proto(shape).unwrap(),
            TensorValue::I64(vec![3, 8])
        );
    }

    #[test]
    fn a_symbolic_batch_keeps_its_shape_op_but_folds_the_rest() {
        let mut g = flatten_graph(Dim::Symbol("N".into()));
        let (changes, details) = fold_shapes(&mut g);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        // Shape → Gather(0) → Unsqueeze stay; Gather(1)·Gather(2) → Unsqueeze became [8].
        assert!(ops.contains(&"Shape") && ops.contains(&"Concat"), "{ops:?}");
        assert!(!ops.contains(&"Mul"), "{ops:?}");
        assert!(changes >= 1, "{details:?}");
        assert!(details.iter().any(|d| d.contains("[8]")), "{details:?}");
    }

    #[test]
    fn nothing_static_means_nothing_changes() {
        let mut g = GraphBuilder::new("dynamic");
        g.input(
            "x",
            data_type::FLOAT,
            &[Dim::Symbol("N".into()), Dim::Symbol("M".into())],
        );
        let s = g.node("Shape", &["x"], &[]);
        g.output(&s, data_type::INT64, &[Dim::Fixed(2)]);
        let mut g = g.into_model(17).graph.unwrap();
        let before = g.clone();
        assert_eq!(fold_shapes(&mut g).0, 0);
        assert_eq!(g, before);
    }
}
