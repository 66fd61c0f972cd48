//! Transformer model descriptions, as the planners see them.
//!
//! A [`Model`] is read from a Hugging Face `config.json` exactly as the Hub ships it
//! ([`Model::from_config_json`]) or taken from a built-in preset ([`Model::preset`], the
//! presets are those same files, committed under `presets/`). [`Model::layer_ops`] lists the
//! operations of one transformer layer — GEMMs, flash attention and memory-bound
//! elementwise work — with their shapes, FLOPs and bytes, forward and backward, for a given
//! micro-batch and tensor-parallel degree. This crate knows nothing about hardware: it says
//! *what* is computed, never how long it takes.
//!
//! Conventions: activations are bf16 (2 bytes per element) in every precision the planners
//! model; FLOPs count a multiply-add as 2; attention is flash-style (no `seq²` tensor in
//! memory) and causal attention computes the lower triangle only.

mod config;
mod ops;

pub use config::{Mlp, Model, ModelError, Moe, Norm, Positions, PRESETS, SUPPORTED_MODEL_TYPES};
pub use ops::{Batch, InferenceFormats, LayerOps, MemKind, Op, OpKind, Pass, Recompute, ACT_BYTES};

/// Parameter counts of a [`Model`], in parameters (not bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamCount {
    /// Token embedding table (`vocab × hidden`).
    pub embedding: u64,
    /// Learned position embeddings (GPT-2 style), 0 with RoPE.
    pub positions: u64,
    /// One transformer layer, every expert included.
    pub per_layer: u64,
    /// One transformer layer as one token sees it: `top_k` of the experts.
    pub per_layer_active: u64,
    /// The LM head if it is not tied to the embedding (else 0: it shares `embedding`).
    pub lm_head: u64,
    /// The final norm.
    pub final_norm: u64,
}

impl ParamCount {
    /// Every parameter stored: what weights, gradients and optimizer states are sized by.
    pub fn total(&self, layers: u64) -> u64 {
        self.embedding + self.positions + self.per_layer * layers + self.lm_head + self.final_norm
    }
}
