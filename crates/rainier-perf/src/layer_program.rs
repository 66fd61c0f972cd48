//! [`NeuronCosts::LayerPrograms`](crate::NeuronCosts): a dense layer's forward and backward
//! passes as the `rainier-kernels` decoder-layer programs on the timed NeuronCore, simulated
//! once per chip, shape and pass per process (a plan search asks for few shapes: one per TP
//! degree and micro-batch; a calibration asks for the same ones again).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use rainier_arch::ChipParams;
use rainier_kernels::{decoder_layer, decoder_layer_backward, Composition, LayerShape};
use rainier_model::{Batch, Mlp, Model, Norm, Pass, Positions};
use rainier_tensor::DType;

/// One chip's layer programs.
#[derive(Debug, Clone)]
pub struct LayerPrograms {
    core: ChipParams,
    /// The chip parameters' digest (`rainier_tables::cache_key`).
    key: String,
}

/// (chip key, shape, backward) → simulated seconds (`None`: not expressible), for the
/// process.
type Times = HashMap<(String, LayerShape, bool), Option<f64>>;

fn times() -> &'static Mutex<Times> {
    static TIMES: OnceLock<Mutex<Times>> = OnceLock::new();
    TIMES.get_or_init(Mutex::default)
}

impl LayerPrograms {
    /// Layer programs on `core` (one NeuronCore of the chip).
    pub fn new(core: ChipParams) -> Self {
        let key = rainier_tables::cache_key(&core);
        LayerPrograms { core, key }
    }

    /// Seconds of one NeuronCore on `model`'s layer `pass` at `batch` (sequence parallel over
    /// the TP group; backward from what the forward keeps, without recompute), or `None` when
    /// the programs cannot express it.
    pub fn seconds(&self, model: &Model, batch: Batch, pass: Pass) -> Option<f64> {
        let shape = layer_shape(model, batch)?;
        let key = (self.key.clone(), shape, pass == Pass::Backward);
        if let Some(&t) = times().lock().ok()?.get(&key) {
            return t;
        }
        // Simulated outside the lock; two threads asking at once both simulate (same result).
        let program = match pass {
            Pass::Forward => {
                decoder_layer(&self.core, &shape, DType::Bf16, Composition::Overlapped)
            }
            Pass::Backward => {
                decoder_layer_backward(&self.core, &shape, DType::Bf16, Composition::Overlapped)
            }
        };
        let t = program
            .ok()
            .and_then(|p| rainier_timesim::simulate_built(&p, &self.core, None, false).ok())
            .map(|r| r.time_ps as f64 * 1e-12);
        times().lock().ok()?.insert(key, t);
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
