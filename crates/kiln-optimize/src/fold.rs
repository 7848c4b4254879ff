//! Constant evaluation for the folding pass: a small f32/i64 tensor evaluator for the ops that
//! appear in constant sub-graphs of exported models.

use crate::OptimizeError;
use kiln_onnx::proto::{GraphProto, NodeProto, TensorProto};
use kiln_onnx::{TensorValue, graph, tensor_f32, tensor_i64};
use std::collections::HashMap;

/// Largest tensor the folding pass computes (16 M values, 64 MiB of f32).
const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

#[derive(Debug, Clone)]
struct Const {
    dims: Vec<usize>,
    value: TensorValue,
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

/// Index into a tensor of shape `dims` broadcast to `out` for the flat output index `flat`.
fn broadcast_index(flat: usize, out: &[usize], dims: &[usize]) -> usize {
    let mut idx = 0;
    let mut stride = 1;
    let mut rem = flat;
    let mut coords = vec![0; out.len()];
    for i in (0..out.len()).rev() {
        coords[i] = rem % out[i];
        rem /= out[i];
    }
    for i in (0..dims.len()).rev() {
        let c = coords[i + out.len() - dims.len()];
        let c = if dims[i] == 1 { 0 } else { c };
        idx += c * stride;
        stride *= dims[i];
    }
    idx
}

fn binary(op: &str, a: &Const, b: &Const) -> Option<Const> {
    let (TensorValue::F32(x), TensorValue::F32(y)) = (&a.value, &b.value) else {
        return None;
    };
    let dims = broadcast_shape(&a.dims, &b.dims)?;
    // A broadcast can multiply sizes: leave huge (or overflowing) results unfolded.
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_FOLDED_ELEMENTS)?;
    let f: fn(f32, f32) -> f32 = match op {
        "Add" => |p, q| p + q,
        "Sub" => |p, q| p - q,
        "Mul" => |p, q| p * q,
        "Div" => |p, q| p / q,
        _ => return None,
    };
    let v = (0..n)
        .map(|i| {
            f(
                x[broadcast_index(i, &dims, &a.dims)],
                y[broadcast_index(i, &dims, &b.dims)],
            )
        })
        .collect();
    Some(Const {
        dims,
        value: TensorValue::F32(v),
    })
}

fn transpose(a: &Const, perm: &[usize]) -> Option<Const> {
    let TensorValue::F32(x) = &a.value else {
        return None;
    };
    let r = a.dims.len();
    if perm.len() != r {
        return None;
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| a.dims[p]).collect();
    let mut in_strides = vec![1; r];
    for i in (0..r.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * a.dims[i + 1];
    }
    let n: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rem = flat;
        let mut src = 0;
        for i in (0..r).rev() {
            let c = rem % out_dims[i];
            rem /= out_dims[i];
            src += c * in_strides[perm[i]];
        }
        out.push(x[src]);
    }
    Some(Const {
        dims: out_dims,
        value: TensorValue::F32(out),
    })
}

fn eval(node: &NodeProto, inputs: &[Const]) -> Option<Const> {
    match node.op_type() {
        "Add" | "Sub" | "Mul" | "Div" if inputs.len() == 2 => {
            binary(node.op_type(), &inputs[0], &inputs[1])
        }
        "Neg" | "Sqrt" | "Reciprocal" | "Relu" | "Exp" if inputs.len() == 1 => {
            let TensorValue::F32(x) = &inputs[0].value else {
                return None;
            };
            let f: fn(f32) -> f32 = match node.op_type() {
                "Neg" => |v| -v,
                "Sqrt" => f32::sqrt,
                "Reciprocal" => |v| 1.0 / v,
                "Relu" => |v| v.max(0.0),
                _ => f32::exp,
            };
            Some(Const {
                dims: inputs[0].dims.clone(),
                value: TensorValue::F32(x.iter().map(|&v| f(v)).collect()),
            })
        }
        "Transpose" if inputs.len() == 1 => {
            let r = inputs[0].dims.len();
            let perm: Vec<usize> = match graph::attr(node, "perm") {
                Some(a) => a.ints.iter().map(|&p| p as usize).collect(),
                None => (0..r).rev().collect(),
            };
            transpose(&inputs[0], &perm)
        }
        "Reshape" if inputs.len() == 2 => {
            let shape = inputs[1].value.to_i64()?;
            let total = inputs[0].value.len();
            let mut dims: Vec<i64> = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d == 0 {
                        inputs[0].dims.get(i).map_or(0, |&x| x as i64)
                    } else {
                        d
                    }
                })
                .collect();
            let known = dims
                .iter()
                .filter(|&&d| d != -1)
                .try_fold(1i64, |acc, &d| acc.checked_mul(d))?;
            if let Some(p) = dims.iter().position(|&d| d == -1) {
                dims[p] = if known == 0 { 0 } else { total as i64 / known };
            }
            let dims: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
            let numel = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
            (numel == total).then(|| Const {
                dims,
                value: inputs[0].value.clone(),
            })
        }
        "Identity" if inputs.len() == 1 => Some(inputs[0].clone()),
        _ => None,
    }
}

fn to_proto(name: &str, c: &Const) -> Option<TensorProto> {
    match &c.value {
        TensorValue::F32(v) => Some(tensor_f32(name, &c.dims, v)),
        TensorValue::I64(v) => Some(tensor_i64(name, &c.dims, v)),
        _ => None,
    }
}

/// Folds constant nodes of the default domain. Returns the number of folded nodes and a line per
/// fold or per constant node that could not be evaluated.
pub(crate) fn fold_constants(g: &mut GraphProto) -> Result<(usize, Vec<String>), OptimizeError> {
    let graph_inputs: std::collections::HashSet<String> =
        g.input.iter().map(|i| i.name().to_string()).collect();
    let mut consts: HashMap<String, Const> = HashMap::new();
    for t in &g.initializer {
        // An initializer that is also a graph input can be overridden at run time: not constant.
        if graph_inputs.contains(t.name()) {
            continue;
        }
        if let Ok(v) = TensorValue::from_proto(t) {
            consts.insert(
                t.name().to_string(),
                Const {
                    dims: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
                    value: v,
                },
            );
        }
    }
    let mut details = Vec::new();
    let mut folded = 0;
    let mut i = 0;
    while i < g.node.len() {
        let node = &g.node[i];
        let is_default = node.domain().is_empty() || node.domain() == "ai.onnx";
        if node.op_type() == "Constant"
            && is_default
            && node.output.len() == 1
            && let Some(t) = graph::attr(node, "value").and_then(|a| a.t.clone())
        {
            let name = node.output[0].clone();
            let mut t = t;
            t.name = Some(name.clone());
            if let Ok(v) = TensorValue::from_proto(&t) {
                consts.insert(
                    name.clone(),
                    Const {
                        dims: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
                        value: v,
                    },
                );
            }
            g.initializer.push(t);
            g.node.remove(i);
            details.push(format!("Constant {name:?} became an initializer"));
            folded += 1;
            continue;
        }
        let all_const = !node.input.is_empty() && node.input.iter().all(|n| consts.contains_key(n));
        if is_default && all_const && node.output.len() == 1 {
            let inputs: Vec<Const> = node
                .input
                .iter()
                .filter_map(|n| consts.get(n).cloned())
                .collect();
            let out = node.output[0].clone();
            match eval(node, &inputs).and_then(|c| to_proto(&out, &c).map(|t| (c, t))) {
                Some((c, t)) => {
                    details.push(format!(
                        "folded {} {:?} into a constant",
                        node.op_type(),
                        node.name()
                    ));
                    consts.insert(out, c);
                    g.initializer.push(t);
                    g.node.remove(i);
                    folded += 1;
                    continue;
                }
                None => details.push(format!(
                    "skipped {} {:?}: constant inputs, but kiln cannot evaluate this op here",
                    node.op_type(),
                    node.name()
                )),
            }
        }
        i += 1;
    }
    Ok((folded, details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 1], &[1, 4]), Some(vec![2, 4]));
        assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
        let a = Const {
            dims: vec![2, 2],
            value: TensorValue::F32(vec![1.0, 2.0, 3.0, 4.0]),
        };
        let b = Const {
            dims: vec![2],
            value: TensorValue::F32(vec![10.0, 20.0]),
        };
        let c = binary("Add", &a, &b).expect("add");
        assert_eq!(c.value, TensorValue::F32(vec![11.0, 22.0, 13.0, 24.0]));
    }

    #[test]
    fn transpose_swaps_axes() {
        let a = Const {
            dims: vec![2, 3],
            value: TensorValue::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        };
        let t = transpose(&a, &[1, 0]).expect("transpose");
        assert_eq!(t.dims, vec![3, 2]);
        assert_eq!(
            t.value,
            TensorValue::F32(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
        );
    }
}
