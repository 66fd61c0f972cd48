//! [`NeuronCosts::LayerPrograms`](crate::NeuronCosts): a dense layer's forward pass as the
//! `rainier-kernels` decoder-layer program on the timed NeuronCore, simulated once per shape
//! per process (a plan search asks for few shapes: one per TP degree and micro-batch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rainier_arch::ChipParams;
use rainier_kernels::{decoder_layer, Composition, LayerShape};
use rainier_model::{Batch, Mlp, Model, Norm, Positions};
use rainier_tensor::DType;

/// One chip's layer programs and the times simulated so far (shared by clones).
#[derive(Debug, Clone)]
pub struct LayerPrograms {
    core: ChipParams,
    times: Arc<Mutex<HashMap<LayerShape, Option<f64>>>>,
}

impl LayerPrograms {
    /// Layer programs on `core` (one NeuronCore of the chip).
    pub fn new(core: ChipParams) -> Self {
        LayerPrograms { core, times: Arc::default() }
    }

    /// Seconds of one NeuronCore on `model`'s layer forward at `batch` (sequence parallel over
    /// the TP group), or `None` when the program cannot express it.
    pub fn forward_seconds(&self, model: &Model, batch: Batch) -> Option<f64> {
        let shape = layer_shape(model, batch)?;
        if let Some(&t) = self.times.lock().ok()?.get(&shape) {
            return t;
        }
        // Simulated outside the lock; two threads asking at once both simulate (same result).
        let t = decoder_layer(&self.core, &shape, DType::Bf16, Composition::Overlapped)
            .ok()
            .and_then(|p| rainier_timesim::simulate(&p, &self.core, None, false).ok())
            .map(|r| r.time_ps as f64 * 1e-12);
        self.times.lock().ok()?.insert(shape, t);
        t
    }
}

/// The program's shape of one rank's layer: dense, Llama-style (rmsnorm, rope, SwiGLU, no
/// biases, q/k norms, sinks or windows), heads and MLP split evenly by TP, no CP or EP.
fn layer_shape(model: &Model, b: Batch) -> Option<LayerShape> {
    let llama_like = model.moe.is_none()
        && model.mla.is_none()
        && model.layer_groups.len() <= 1
        && model.mlp == Mlp::SwiGlu
        && model.norm == Norm::RmsNorm
        && model.positions == Positions::Rope
        && !(model.qk_norm || model.qkv_bias || model.linear_bias || model.attention_sinks)
        && model.sliding_window.is_none()
        && model.attention_chunk.is_none();
    let tp = b.tp.max(1);
    let even = model.heads % tp == 0 && model.ffn % tp == 0 && (b.sequences * b.seq) % tp == 0;
    if !llama_like || !even || b.cp > 1 || b.ep > 1 || b.seq % 128 != 0 {
        return None;
    }
    Some(LayerShape {
        batch: b.sequences,
        seq: b.seq,
        hidden: model.hidden,
        heads: model.heads / tp,
        kv_heads: model.kv_heads.div_ceil(tp).max(1),
        head_dim: model.head_dim,
        ffn: model.ffn / tp,
        sequence_parallel: tp,
    })
}
