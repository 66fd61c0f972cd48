//! The operations of a transformer, per layer and per pass, with shapes, FLOPs and bytes.

use crate::{Mlp, Model, Norm};

/// Bytes per activation element: activations are bf16 in every precision modelled.
pub const ACT_BYTES: u64 = 2;

/// Forward or backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Backward,
}

/// The kind of a memory-bound op, which decides how well a given stack runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemKind {
    /// Residual add, copies, gradient accumulation at a branch.
    Add,
    Norm(Norm),
    /// The MLP activation (GELU, or SiLU times the up projection).
    Activation(Mlp),
    Rope,
    /// Embedding lookup (forward) or its scatter-add (backward).
    Embedding,
    /// Softmax cross-entropy over the vocabulary (fp32 math on bf16 logits).
    CrossEntropy,
    /// MoE token dispatch and combine (permutations).
    Permute,
    /// Decode attention: one query per sequence reading its whole K/V cache (streaming).
    KvCache,
}

/// What an op computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpKind {
    /// `count` independent products `[m, k] · [k, n]` (several for MoE experts).
    Gemm { m: u64, n: u64, k: u64, count: u64 },
    /// Flash attention (forward, or its backward with the recomputation flash does) over
    /// `batch × heads` query heads of `seq` tokens, each attending to `mean_context` keys on
    /// average (`seq/2` when causal).
    Attention { batch: u64, heads: u64, seq: u64, head_dim: u64, causal: bool, backward: bool },
    /// A memory-bound op moving `bytes` (the minimal reads plus writes).
    Memory { kind: MemKind },
}

/// One op of one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub name: &'static str,
    pub pass: Pass,
    pub kind: OpKind,
    /// Floating-point operations (multiply-add = 2).
    pub flops: f64,
    /// Minimal bytes read and written in HBM.
    pub bytes: f64,
}

/// The micro-batch and sharding one device computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch {
    /// Sequences per micro-batch.
    pub sequences: u64,
    /// Tokens per sequence.
    pub seq: u64,
    /// Tensor-parallel degree: heads, MLP width and vocabulary are split this many ways, and
    /// norms and residual adds run on `1/tp` of the tokens (sequence parallelism).
    pub tp: u64,
    /// Context-parallel degree: each rank holds `seq/cp` tokens of every sequence and
    /// attends them to the whole sequence (ring attention, causally load-balanced).
    pub cp: u64,
    /// Expert-parallel degree: each rank holds `experts/ep` whole experts and computes the
    /// tokens routed to them from the `ep` ranks of its group.
    pub ep: u64,
    /// How MoE layers size their experts' work.
    pub routing: Routing,
}

/// How a MoE layer sizes its experts' work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// Every routed token is computed (Megatron, DeepSeek, MegaBlocks): the busiest
    /// expert-parallel rank gets the sampling spread times `skew`, the router's systematic
    /// imbalance (1: balanced in expectation).
    Dropless { skew: f64 },
    /// Every expert computes a fixed capacity of `factor × mean` tokens (GShard, Switch,
    /// MaxText's dropping path and static-shape stacks): tokens beyond it are dropped, experts
    /// below it padded, the all-to-alls carry the full capacity buffers.
    Capacity { factor: f64 },
}

impl Batch {
    /// A micro-batch of `sequences × seq` tokens under tensor parallelism `tp` only.
    pub fn new(sequences: u64, seq: u64, tp: u64) -> Batch {
        Batch { sequences, seq, tp, cp: 1, ep: 1, routing: Routing::Dropless { skew: 1.0 } }
    }

    /// Tokens on this rank before tensor parallelism splits widths: `sequences × seq/cp`.
    pub fn tokens(&self) -> u64 {
        self.sequences * self.seq.div_ceil(self.cp.max(1))
    }
}

/// The ops of one layer (or of the model's ends), forward and backward.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerOps {
    pub forward: Vec<Op>,
    pub backward: Vec<Op>,
}

impl LayerOps {
    fn gemm(&mut self, name: &'static str, m: u64, n: u64, k: u64, count: u64) {
        let flops = 2.0 * m as f64 * n as f64 * k as f64 * count as f64;
        let bytes = ((m * k + k * n + m * n) * count * ACT_BYTES) as f64;
        self.forward.push(Op {
            name,
            pass: Pass::Forward,
            kind: OpKind::Gemm { m, n, k, count },
            flops,
            bytes,
        });
        // dX[m, k] = dY[m, n] · Wᵀ and dW[n, k] = dYᵀ · X[m, k]: two products of the same size.
        let dgrad = OpKind::Gemm { m, n: k, k: n, count };
        let wgrad = OpKind::Gemm { m: n, n: k, k: m, count };
        for kind in [dgrad, wgrad] {
            self.backward.push(Op { name, pass: Pass::Backward, kind, flops, bytes });
        }
    }

    /// A memory-bound op moving `bytes` forward and `backward_factor × bytes` backward.
    fn memory(&mut self, name: &'static str, kind: MemKind, bytes: u64, backward_factor: f64) {
        let kind = OpKind::Memory { kind };
        let bytes = bytes as f64;
        self.forward.push(Op { name, pass: Pass::Forward, kind, flops: 0.0, bytes });
        if backward_factor > 0.0 {
            let bytes = bytes * backward_factor;
            self.backward.push(Op { name, pass: Pass::Backward, kind, flops: 0.0, bytes });
        }
    }

    /// Sum of `f` over both passes.
    pub fn sum(&self, f: impl Fn(&Op) -> f64) -> f64 {
        self.forward.iter().chain(&self.backward).map(f).sum()
    }
}

impl Model {
    /// The ops of one transformer layer on one tensor-parallel rank, as the top-level fields
    /// describe it (for a model whose layers differ, call this on each of its
    /// [variants](Model::variants)). Backward GEMMs are the two products (input and weight
    /// gradients); attention backward is flash's five matmuls (2.5× the forward FLOPs, the
    /// recomputed `QKᵀ` included); a memory-bound op's backward moves its inputs, output
    /// gradient and input gradients. MLA runs in its training form: keys and values expanded
    /// from the latent per head, the latent projections replicated on every TP rank.
    pub fn layer_ops(&self, b: Batch) -> LayerOps {
        let tp = b.tp.max(1);
        let t = b.tokens();
        let h = self.hidden;
        // Sequence parallelism: norms and adds see 1/tp of the tokens.
        let t_sp = t.div_ceil(tp);
        let heads = self.heads.div_ceil(tp);
        let kv_heads = self.kv_heads.div_ceil(tp).max(1);
        let q_width = heads * self.head_dim;
        let kv_width = kv_heads * self.head_dim;
        let out_width = heads * self.v_head_dim();
        let ffn = self.moe.map_or(self.ffn, |m| m.expert_ffn).div_ceil(tp);
        let norm = MemKind::Norm(self.norm);
        let mut ops = LayerOps::default();

        // Norm: read x, write y; backward reads x and dy, writes dx.
        ops.memory("input_norm", norm, 2 * t_sp * h * ACT_BYTES, 1.5);
        let rope_width = match self.mla {
            None => {
                ops.gemm("qkv_proj", t, q_width + 2 * kv_width, h, 1);
                q_width + kv_width
            }
            Some(a) => {
                let latents = match a.q_lora_rank {
                    Some(r) => {
                        ops.gemm("q_down", t, r, h, 1);
                        ops.gemm("q_up", t, q_width, r, 1);
                        r + a.kv_lora_rank
                    }
                    None => {
                        ops.gemm("q_proj", t, q_width, h, 1);
                        a.kv_lora_rank
                    }
                };
                ops.gemm("kv_down", t, a.kv_lora_rank + a.qk_rope_dim, h, 1);
                ops.memory("latent_norm", norm, 2 * t * latents * ACT_BYTES, 1.5);
                ops.gemm("kv_up", t, heads * (a.qk_nope_dim + a.v_dim), a.kv_lora_rank, 1);
                (heads + 1) * a.qk_rope_dim
            }
        };
        if self.positions == crate::Positions::Rope {
            ops.memory("rope", MemKind::Rope, 2 * t * rope_width * ACT_BYTES, 1.0);
        }
        let (fwd, bwd) = self.attention_ops(b.sequences, heads, b.seq, b.cp.max(1));
        ops.forward.push(fwd);
        ops.backward.push(bwd);
        ops.gemm("out_proj", t, h, out_width, 1);
        ops.memory("residual_add", MemKind::Add, 3 * t_sp * h * ACT_BYTES, 1.0);
        ops.memory("post_norm", norm, 2 * t_sp * h * ACT_BYTES, 1.5);

        let (up_width, act_bytes, act_backward) = self.mlp_shape(ffn);
        match self.moe {
            None => self.dense_mlp_ops(&mut ops, ["mlp_up", "mlp_act", "mlp_down"], t, ffn),
            Some(moe) => {
                ops.gemm("router", t, moe.experts, h, 1);
                // With expert parallelism a rank holds experts/ep experts and receives the
                // tokens routed to them from the ep ranks of its group: the same work in
                // fewer, taller GEMMs, on the busiest rank (which sets the pace) `load` times
                // the mean. The rank's experts share its tokens evenly.
                let ep = b.ep.clamp(1, moe.experts);
                let local_experts = moe.experts.div_ceil(ep);
                let load = self.busiest_rank_load(b);
                let routed = if load != 1.0 {
                    ((t * moe.top_k) as f64 * load).ceil() as u64
                } else {
                    t * moe.top_k
                };
                let per_expert = if load != 1.0 {
                    ((t * moe.top_k * ep) as f64 / moe.experts as f64 * load).ceil() as u64
                } else {
                    (t * moe.top_k * ep).div_ceil(moe.experts)
                };
                // Dispatch copies each routed token's row in, combine copies it back out.
                ops.memory("moe_permute", MemKind::Permute, 4 * routed * h * ACT_BYTES, 1.0);
                ops.gemm("experts_up", per_expert, up_width, h, local_experts);
                ops.memory(
                    "experts_act",
                    MemKind::Activation(self.mlp),
                    act_bytes * routed * ffn * ACT_BYTES,
                    act_backward,
                );
                ops.gemm("experts_down", per_expert, h, ffn, local_experts);
                if moe.shared_ffn > 0 {
                    // Shared experts: a dense MLP every token passes through, split by TP.
                    let names = ["shared_up", "shared_act", "shared_down"];
                    self.dense_mlp_ops(&mut ops, names, t, moe.shared_ffn.div_ceil(tp));
                }
            }
        }
        ops.memory("residual_add", MemKind::Add, 3 * t_sp * h * ACT_BYTES, 1.0);
        ops
    }

    /// An MLP of inner width `ffn`: its up projection's width (gate and up for SwiGLU), and
    /// its activation's elements moved per inner element forward and the backward's ratio
    /// (GELU reads u, writes a; backward u, da → du. SwiGLU reads g and u, writes a; backward
    /// g, u, da → dg, du).
    fn mlp_shape(&self, ffn: u64) -> (u64, u64, f64) {
        match self.mlp {
            Mlp::SwiGlu => (2 * ffn, 3, 5.0 / 3.0),
            Mlp::Gelu => (ffn, 2, 1.5),
        }
    }

    /// A dense MLP of inner width `ffn` (this rank's share) over `t` tokens: up (gate and up
    /// for SwiGLU), activation, down, named `names`.
    fn dense_mlp_ops(&self, ops: &mut LayerOps, names: [&'static str; 3], t: u64, ffn: u64) {
        let h = self.hidden;
        let (up_width, act_bytes, act_backward) = self.mlp_shape(ffn);
        ops.gemm(names[0], t, up_width, h, 1);
        let act = MemKind::Activation(self.mlp);
        ops.memory(names[1], act, act_bytes * t * ffn * ACT_BYTES, act_backward);
        ops.gemm(names[2], t, h, ffn, 1);
    }

    /// Routed rows the busiest of `b.ep` expert-parallel ranks computes over the mean. With a
    /// capacity, the capacity factor (on every rank, expert parallel or not). Dropless: the
    /// router's systematic skew times the sampling spread of a balanced router. Each
    /// rank's `t·k` routed slots (t tokens, k experts each) come from `N = t·k·ep` slots that
    /// land on it with probability `1/ep`: a binomial of mean `t·k` and variance
    /// `t·k·(1 − 1/ep)`, whose expected maximum over `ep` ranks is about
    /// `mean + σ·√(2·ln ep)` (slots of one token treated as independent). 1 without MoE or
    /// expert parallelism (a rank holding every expert computes every routed token).
    pub fn busiest_rank_load(&self, b: Batch) -> f64 {
        let Some(moe) = self.moe else { return 1.0 };
        let skew = match b.routing {
            Routing::Capacity { factor } => return factor,
            Routing::Dropless { skew } => skew,
        };
        let ep = b.ep.clamp(1, moe.experts);
        if ep == 1 {
            return 1.0;
        }
        let slots = (b.tokens() * moe.top_k).max(1) as f64;
        let ep_f = ep as f64;
        let spread = (2.0 * ep_f.ln() * (1.0 - 1.0 / ep_f) / slots).sqrt();
        // No rank gets more than every token's slots that its experts can take.
        let most = ep_f * moe.top_k.min(moe.experts / ep) as f64 / moe.top_k as f64;
        (skew.max(1.0) * (1.0 + spread)).min(most)
    }

    /// Flash attention forward and backward for `sequences × heads` heads, of which this rank
    /// holds `seq/cp` query positions attending to the whole (causal) context; under context
    /// parallelism the work comes in blocks of `seq/cp` keys.
    fn attention_ops(&self, sequences: u64, heads: u64, seq: u64, cp: u64) -> (Op, Op) {
        let d = self.head_dim;
        let queries = seq.div_ceil(cp);
        // QKᵀ and PV: 2·d_qk + 2·d_v FLOPs per (query, key) pair.
        let pairs = (sequences * heads * queries) as f64 * self.mean_context(seq);
        let flops = match self.mla {
            None => 4.0 * pairs * d as f64,
            Some(a) => 2.0 * pairs * (d + a.v_dim) as f64,
        };
        // Reads q, k, v, writes o (k, v shared by a group's heads: counted per q head, an
        // upper bound that only matters where attention is memory-bound).
        let bytes = (4 * sequences * heads * queries * d * ACT_BYTES) as f64;
        let kind = |backward| OpKind::Attention {
            batch: sequences,
            heads,
            seq: queries,
            head_dim: d,
            causal: true,
            backward,
        };
        let fwd = Op { name: "attention", pass: Pass::Forward, kind: kind(false), flops, bytes };
        let bwd = Op {
            name: "attention",
            pass: Pass::Backward,
            kind: kind(true),
            flops: 2.5 * flops,
            bytes: 2.0 * bytes,
        };
        (fwd, bwd)
    }

    /// Ops outside the layers, on the first pipeline stage: the embedding lookup.
    pub fn embedding_ops(&self, b: Batch) -> LayerOps {
        let mut ops = LayerOps::default();
        // Read the token's row, write the activation (backward: scatter-add into the grads).
        ops.memory("embedding", MemKind::Embedding, 2 * b.tokens() * self.hidden * ACT_BYTES, 1.0);
        ops
    }

    /// Ops outside the layers, on the last pipeline stage: final norm, LM head and the
    /// cross-entropy loss over the (tensor-parallel split) vocabulary.
    pub fn head_ops(&self, b: Batch) -> LayerOps {
        let tp = b.tp.max(1);
        let t = b.tokens();
        let vocab = self.vocab.div_ceil(tp);
        let mut ops = LayerOps::default();
        ops.memory(
            "final_norm",
            MemKind::Norm(self.norm),
            2 * t.div_ceil(tp) * self.hidden * ACT_BYTES,
            1.5,
        );
        ops.gemm("lm_head", t, vocab, self.hidden, 1);
        // Forward reads the logits; backward reads them again and writes their gradient.
        ops.memory("cross_entropy", MemKind::CrossEntropy, t * vocab * ACT_BYTES, 2.0);
        ops
    }
}

/// Number formats of inference weights and KV cache, in bytes per element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferenceFormats {
    /// Bytes per matmul weight (2 bf16, 1 fp8 or int8).
    pub weight_bytes: f64,
    /// Bytes per KV-cache element (2 bf16, 1 fp8).
    pub kv_bytes: f64,
}

impl Model {
    /// KV-cache bytes per token of context for the whole model, before any window caps the
    /// context (every layer, K and V, all KV heads: grouped-query attention stores
    /// `kv_heads`, not `heads`; MLA stores its latent and rope key).
    pub fn kv_bytes_per_token(&self, kv_bytes: f64) -> f64 {
        let elements: u64 =
            self.variants().iter().map(|(count, v)| count * v.kv_elements_per_layer(1)).sum();
        elements as f64 * kv_bytes
    }

    /// Cached elements per token of one layer on one of `tp` ranks: K and V of the rank's KV
    /// heads, or MLA's latent and rope key (every rank holds them whole).
    pub fn kv_elements_per_layer(&self, tp: u64) -> u64 {
        match self.mla {
            None => 2 * self.kv_heads.div_ceil(tp.max(1)).max(1) * self.head_dim,
            Some(a) => a.kv_lora_rank + a.qk_rope_dim,
        }
    }

    /// Tokens of a `context`-token sequence a layer keeps cached: all of them, the last
    /// `w` under a sliding window, the current chunk's under chunked attention (at most `c`).
    pub fn cached_context(&self, context: f64) -> f64 {
        match (self.sliding_window, self.attention_chunk) {
            (Some(w), _) => context.min(w as f64),
            (_, Some(c)) => context.min(c as f64),
            _ => context,
        }
    }

    /// Keys a decoding query at `context` attends to: the cached context, or half a chunk on
    /// average once the context passes a chunk (the position within the chunk is uniform).
    fn attended_context(&self, context: f64) -> f64 {
        match self.attention_chunk {
            Some(c) if context > c as f64 => c as f64 / 2.0,
            _ => self.cached_context(context),
        }
    }

    /// Forward ops of one layer for a prefill of `b` (the whole prompt of every sequence),
    /// with GEMM bytes at the weights' format (weight-only int8 is dequantized on the fly:
    /// the GEMM reads 1 byte per weight and computes in bf16).
    pub fn prefill_layer_ops(&self, b: Batch, formats: InferenceFormats) -> Vec<Op> {
        let mut ops = self.layer_ops(b).forward;
        for op in &mut ops {
            reprice_weights(op, formats.weight_bytes);
        }
        ops
    }

    /// Forward ops of one layer for one decode step: `b.sequences` sequences, one new token
    /// each, attending to `context` cached tokens (K/V read from HBM, the step's memory-bound
    /// core), GEMMs with `m = sequences` reading every weight once.
    pub fn decode_layer_ops(&self, b: Batch, context: f64, formats: InferenceFormats) -> Vec<Op> {
        let step = Batch { seq: 1, cp: 1, ..b };
        let heads = self.heads.div_ceil(step.tp.max(1));
        // A sliding window or a chunk caps what each query reads.
        let context = self.attended_context(context);
        let cache = step.sequences as f64 * context * self.kv_elements_per_layer(step.tp) as f64;
        self.layer_ops(step)
            .forward
            .into_iter()
            .map(|mut op| {
                if matches!(op.kind, OpKind::Attention { .. }) {
                    // q·Kᵀ and p·V for one query per head over the context; MLA absorbs
                    // the key and value expansions into q and the output, so each head
                    // scores against the latent and rope key and sums latents.
                    op.flops = match self.mla {
                        None => 4.0 * (step.sequences * heads * self.head_dim) as f64 * context,
                        Some(a) => {
                            let per_key = 2 * (2 * a.kv_lora_rank + a.qk_rope_dim);
                            (step.sequences * heads * per_key) as f64 * context
                        }
                    };
                    op.bytes = cache * formats.kv_bytes
                        + (2 * step.sequences * heads * self.head_dim * ACT_BYTES) as f64;
                    op.kind = OpKind::Memory { kind: MemKind::KvCache };
                }
                // A small batch touches only the experts its tokens are routed to: of this
                // rank's `count` experts, `count·(1 − (1 − k/E)^t)` on average for `t`
                // tokens (from the ep ranks of its group) routed uniformly at random.
                // (With a fixed capacity every expert computes its padded buffer.)
                let dropless = matches!(step.routing, Routing::Dropless { .. });
                if let (OpKind::Gemm { m, n, k, count }, Some(moe)) = (op.kind, self.moe) {
                    if op.name.starts_with("experts_") && dropless {
                        let tokens = (step.sequences * step.ep.max(1)) as f64;
                        let miss = 1.0 - moe.top_k as f64 / moe.experts as f64;
                        let expected = count as f64 * (1.0 - miss.powf(tokens));
                        let touched = (expected.ceil() as u64).clamp(1, count);
                        // The same routed tokens, concentrated in fewer experts.
                        let rows = (m * count).div_ceil(touched);
                        op.kind = OpKind::Gemm { m: rows, n, k, count: touched };
                    }
                }
                reprice_weights(&mut op, formats.weight_bytes);
                op
            })
            .collect()
    }

    /// Ops of the model's last stage for `sequences` sequences producing one token each
    /// (logits for the last position only, as serving engines compute them): final norm and
    /// LM head.
    pub fn sampling_ops(&self, sequences: u64, tp: u64, formats: InferenceFormats) -> Vec<Op> {
        let b = Batch::new(sequences, 1, tp);
        let mut ops = self.head_ops(b).forward;
        ops.retain(|op| op.name != "cross_entropy");
        for op in &mut ops {
            reprice_weights(op, formats.weight_bytes);
        }
        ops
    }
}

/// A GEMM's bytes with its weight matrix (`k × n` per product) in `weight_bytes` per element.
fn reprice_weights(op: &mut Op, weight_bytes: f64) {
    if let OpKind::Gemm { m, n, k, count } = op.kind {
        op.bytes =
            ((m * k + m * n) * count * ACT_BYTES) as f64 + (k * n * count) as f64 * weight_bytes;
    }
}

/// Which activations are kept for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recompute {
    /// Keep everything the backward pass reads.
    None,
    /// Drop the MLP activation output and recompute it, and with MLA its expanded q, k, v
    /// (re-expanded from the latents; attention's `seq²` part is never stored: flash
    /// attention already recomputes it).
    Selective,
    /// Keep only each layer's input and recompute the whole layer forward in backward.
    Full,
}

impl Model {
    /// Bytes one layer keeps for backward on one tensor-parallel rank (the Korthikanti et al.
    /// accounting with flash attention, sequence parallelism and no dropout). For a GPT layer
    /// without recomputation this is `32·s·b·h/tp` bytes: Korthikanti's `34·s·b·h` without
    /// the two dropout masks, with the `5·a·s²·b` attention term gone.
    pub fn activation_bytes_per_layer(&self, b: Batch, recompute: Recompute) -> f64 {
        let tp = b.tp.max(1);
        let t = b.tokens();
        let t_sp = t.div_ceil(tp);
        let h = self.hidden;
        let heads = self.heads.div_ceil(tp);
        let q_width = heads * self.head_dim;
        let kv_heads = self.kv_heads.div_ceil(tp).max(1);
        // K and V (V of MLA's `v_head_dim`), and MLA's latents.
        let kv_width = kv_heads * (self.head_dim + self.v_head_dim());
        let latents =
            self.mla.map_or(0, |a| a.q_lora_rank.unwrap_or(0) + a.kv_lora_rank + a.qk_rope_dim);
        let ffn = self.moe.map_or(self.ffn, |m| m.expert_ffn).div_ceil(tp);
        let layer_input = t_sp * h * ACT_BYTES;
        if recompute == Recompute::Full {
            return layer_input as f64;
        }
        // Attention block: layer input, norm output, q/k/v, output and its fp32 logsumexp.
        // MLA under selective recompute keeps only its latents and re-expands q, k and v in
        // backward (DeepSeek-V3 recomputes its up-projections).
        let qkv = if self.mla.is_some() && recompute == Recompute::Selective {
            latents
        } else {
            q_width + kv_width + latents
        };
        let attention = layer_input
            + t_sp * h * ACT_BYTES
            + t * qkv * ACT_BYTES
            + t * heads * self.v_head_dim() * ACT_BYTES
            + t * heads * 4;
        // MLP block: residual stream (norm input), norm output, activation input, and the
        // activation output unless recomputed.
        let up_width = match self.mlp {
            Mlp::SwiGlu => 2 * ffn,
            Mlp::Gelu => ffn,
        };
        let (mlp_tokens, router) = match self.moe {
            None => (t, 0),
            Some(moe) => (t * moe.top_k, t * moe.experts * 4),
        };
        let kept_out = |tokens: u64, width: u64| {
            if recompute == Recompute::Selective {
                0
            } else {
                tokens * width * ACT_BYTES
            }
        };
        let act_out = kept_out(mlp_tokens, ffn);
        // Shared experts keep their activation input (and output) for every token.
        let shared = self.moe.map_or(0, |m| {
            let width = m.shared_ffn.div_ceil(tp);
            let up = if self.mlp == Mlp::SwiGlu { 2 * width } else { width };
            t * up * ACT_BYTES + kept_out(t, width)
        });
        let mlp = 2 * t_sp * h * ACT_BYTES
            + router
            + if self.moe.is_some() { mlp_tokens * h * ACT_BYTES } else { 0 }
            + mlp_tokens * up_width * ACT_BYTES
            + act_out
            + shared;
        (attention + mlp) as f64
    }
}
