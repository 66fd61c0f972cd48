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

pub use config::{
    LayerGroup, Mla, Mlp, Model, ModelError, Moe, Norm, Positions, PRESETS, SUPPORTED_MODEL_TYPES,
};
pub use ops::{
    Batch, InferenceFormats, LayerOps, MemKind, Op, OpKind, Pass, Recompute, Routing, ACT_BYTES,
};

/// Parameter counts of a [`Model`], in parameters (not bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamCount {
    /// Token embedding table (`vocab × hidden`).
    pub embedding: u64,
    /// Learned position embeddings (GPT-2 style), 0 with RoPE.
    pub positions: u64,
    /// Every transformer layer, every expert included.
    pub layers: u64,
    /// Every transformer layer as one token sees it: `top_k` of the routed experts.
    pub layers_active: u64,
    /// The routed experts' part of `layers` (what expert parallelism shards).
    pub experts: u64,
    /// The LM head if it is not tied to the embedding (else 0: it shares `embedding`).
    pub lm_head: u64,
    /// The final norm.
    pub final_norm: u64,
    /// Multi-token-prediction modules (outside the model's published size and `total`).
    pub mtp: u64,
}

impl ParamCount {
    /// Every parameter stored: what weights, gradients and optimizer states are sized by.
    pub fn total(&self) -> u64 {
        self.embedding + self.positions + self.layers + self.lm_head + self.final_norm
    }

    /// Parameters one token's forward pass uses, the embedding row included (the convention
    /// of Qwen's and Meta's "active parameters"; [`crate::Model::matmul_params_active`]
    /// leaves the embedding out, as OpenAI's and DeepSeek's counts do).
    pub fn active_with_embedding(&self) -> u64 {
        self.embedding + self.positions + self.layers_active + self.lm_head + self.final_norm
    }
}
