//! Exporting layer kinds kiln does not know: implement [`LayerExport`] for a
//! [`kiln_core::LayerSpec::Custom`] kind and register it with
//! [`crate::OnnxExporter::with_layer`]; no change to kiln's crates is needed.
//!
//! ```
//! use kiln_export::{ExportError, LayerContext, LayerExport};
//!
//! /// `y = x * scale`, one learned scale per feature (`{name}.scale`).
//! #[derive(Debug)]
//! struct Scale;
//!
//! impl LayerExport for Scale {
//!     fn kind(&self) -> &str {
//!         "scale"
//!     }
//!     fn export(
//!         &self,
//!         ctx: &mut LayerContext<'_>,
//!         name: &str,
//!         _params: &serde_json::Value,
//!         input: &str,
//!         input_shape: &[usize],
//!     ) -> Result<String, ExportError> {
//!         let key = format!("{name}.scale");
//!         let scale = ctx.weight(&key, input_shape)?.to_vec();
//!         let s = ctx.graph.constant_f32(&key, input_shape, &scale);
//!         Ok(ctx.graph.node("Mul", &[input, &s], &[]))
//!     }
//! }
//! ```

use crate::{ExportError, Weights};
use kiln_onnx::GraphBuilder;

/// What a [`LayerExport`] works with: the graph being built and the model's weights.
pub struct LayerContext<'a> {
    /// The graph: add initializers and nodes with it (the output's `value_info` is added by
    /// kiln from the spec's declared output shape).
    pub graph: &'a mut GraphBuilder,
    pub(crate) weights: &'a Weights,
}

impl LayerContext<'_> {
    /// The weight `name`, checked to have `shape`.
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<&[f32], ExportError> {
        self.weights.get(name, shape)
    }
}

/// Exports one custom layer kind to ONNX nodes.
pub trait LayerExport: Send + Sync + std::fmt::Debug {
    /// The `kind` of the `LayerSpec::Custom` layers this exports.
    fn kind(&self) -> &str;

    /// Adds the layer's nodes, reading from the value `input` (per-row shape `input_shape`),
    /// and returns the name of the value it produces.
    fn export(
        &self,
        ctx: &mut LayerContext<'_>,
        name: &str,
        params: &serde_json::Value,
        input: &str,
        input_shape: &[usize],
    ) -> Result<String, ExportError>;
}
