//! A whole decoder layer as one NeuronCore program: the library kernels emitted one after
//! another into a single [`KernelBuilder`], handing activations over through HBM, so the
//! timing model overlaps each kernel's start with the previous one's tail wherever the data
//! allow (the builder's dependency tracking covers HBM regions), and the engines, DMA queues
//! and HBM bandwidth are shared between them, as one compiled Neuron graph shares them.
//!
//! The layer is a Llama-style pre-norm block on one rank's share (after tensor parallelism):
//!
//! ```text
//! xn = rmsnorm(x)                      [T/sp, H]  h  = x + (o · Wo)           [T/sp, H]
//!   (all-gather: not in the program)   [T, H]     hn = rmsnorm(h)             [T/sp, H]
//! xnᵀ            (TensorE transpose)   [H, T]     hnᵀ (after the all-gather)  [H, T]
//! [q; k; v]ᵀ = Wqkvᵀ · xnᵀ             [(nh+2nkv)d, T]  gᵀ, uᵀ = Wgᵀ·hnᵀ, Wuᵀ·hnᵀ [F, T]
//! [q; k]ᵀ ← rope, head dim on partitions          aᵀ = silu(gᵀ) · uᵀ          [F, T]
//! v = (vᵀ)ᵀ      (TensorE transpose)   [T, nkv·d] y  = h + (a · Wd)           [T/sp, H]
//! o = attention(q, k, v) per sequence  [nh, T, d]
//! oᵀ             (TensorE transpose)   [nh·d, T]  (o · Wo and a · Wd: reduce-scattered)
//! ```
//!
//! Activations alternate between token-major (`[T, features]`, what the row-wise kernels and
//! the residual stream use) and feature-major (`[features, T]`, what a GEMM's contraction on
//! the partition axis reads); TensorE transposes move between them (of `xn`, `hn`, `o` and
//! the `v` rows). Rope works on the
//! feature-major `[d, T]` head tiles: `rotate_half` is a `d × d` signed permutation, applied
//! on TensorE (exact: one ±x term per output), then `x · cos + rot(x) · sin` on the Vector
//! engine and GpSimd, with `cos`/`sin` given feature-major (`[d, T]`, position `t mod seq`).
//!
//! What production kernels do that this does not: NxD's fused kernels keep the normalized
//! activations in SBUF for the projection (no HBM round trip), and fold the transposes into
//! their loads. The composition here is of the library kernels as they stand, so it is an
//! upper bound on a fused layer's time and a lower bound on the sum of separate launches.
//! Against the planner's summed op tables (`rainier-perf` `tests/layer_program.rs`) it is
//! 1–3 % slower at TP 1 and 15–33 % at TP 4–32: the transposes, which the op list does not
//! have; the kernels' overlap saves 1–3 %.

use rainier_arch::ChipParams;
use rainier_isa::{Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Op, Program, Tile};
use rainier_tensor::DType;

use crate::attention::{attention_into, AttentionTensors, HeadLayout};
use crate::gemm::{gemm_into, GemmTensors};
use crate::rowwise::{elementwise_into, rmsnorm_into, Elementwise, RowTensors};
use crate::{AttentionShape, KernelBuilder, KernelError};

/// Partitions per tile.
const PT: u64 = 128;
/// Tokens per rope tile (one PSUM bank of fp32).
const ROPE_TOKENS: u64 = 512;

/// One rank's share of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerShape {
    /// Sequences in the micro-batch.
    pub batch: u64,
    /// Tokens per sequence (a multiple of 128).
    pub seq: u64,
    /// Model width `H`.
    pub hidden: u64,
    /// Query heads on this rank.
    pub heads: u64,
    /// Key/value heads on this rank (divides `heads`).
    pub kv_heads: u64,
    /// Head dimension `d` (even, at most 128).
    pub head_dim: u64,
    /// MLP width on this rank `F`.
    pub ffn: u64,
    /// Sequence parallelism over this many ranks (1: none): the norms and residual adds see
    /// `T / sp` tokens, the projections all `T` (Megatron's and NxD's scheme). The all-gathers
    /// and reduce-scatters between them are not in the program (the planner prices them on
    /// the fabric): their outputs are inputs and their inputs outputs.
    pub sequence_parallel: u64,
}

impl LayerShape {
    /// Tokens of the micro-batch, `T = batch · seq`.
    pub fn tokens(&self) -> u64 {
        self.batch * self.seq
    }

    /// Useful FLOPs: the projections and MLP GEMMs (2 per multiply-add) plus causal attention.
    pub fn flops(&self) -> f64 {
        let (t, h, d) = (self.tokens() as f64, self.hidden as f64, self.head_dim as f64);
        let (nh, nkv, f) = (self.heads as f64, self.kv_heads as f64, self.ffn as f64);
        let projections = 2.0 * t * h * d * (2.0 * nh + 2.0 * nkv);
        let mlp = 2.0 * t * h * f * 3.0;
        projections + mlp + self.attention().flops()
    }

    /// Useful FLOPs of the backward pass: two GEMMs per forward GEMM (input and weight
    /// gradients) and flash attention's backward (2.5× its forward: five matmuls per score).
    pub fn backward_flops(&self) -> f64 {
        let attention = self.attention().flops();
        2.0 * (self.flops() - attention) + 2.5 * attention
    }

    pub(crate) fn attention(&self) -> AttentionShape {
        AttentionShape {
            batch: self.batch,
            heads: self.heads,
            kv_heads: self.kv_heads,
            seq: self.seq,
            head_dim: self.head_dim,
            causal: true,
        }
    }

    pub(crate) fn check(&self) -> Result<(), KernelError> {
        let LayerShape { batch, seq, hidden, heads, kv_heads, head_dim, ffn, sequence_parallel } =
            *self;
        let bad = |detail: String| KernelError::Shape { what: "decoder layer".into(), detail };
        if [batch, seq, hidden, heads, kv_heads, head_dim, ffn, sequence_parallel].contains(&0) {
            return Err(bad(format!("{self:?}: every size must be positive")));
        }
        if (batch * seq) % sequence_parallel != 0 {
            return Err(bad(format!(
                "sequence_parallel={sequence_parallel} must divide the {} tokens",
                batch * seq
            )));
        }
        if heads % kv_heads != 0 {
            return Err(bad(format!("heads={heads} must be a multiple of kv_heads={kv_heads}")));
        }
        if head_dim % 2 != 0 || head_dim > PT {
            return Err(bad(format!(
                "head_dim={head_dim}: rope needs an even head dim of at most 128"
            )));
        }
        if seq % PT != 0 {
            return Err(bad(format!("seq={seq} must be a multiple of 128 (pad it)")));
        }
        Ok(())
    }
}

/// How the layer's kernels follow one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Composition {
    /// One program: a kernel starts as soon as its data and engines allow.
    Overlapped,
    /// A fence between kernels: each starts when the previous one has finished, as separate
    /// launches would (without any launch overhead).
    Serial,
}

/// The decoder layer program. Inputs: `x [T/sp, H]`, `attn_norm [H]`, `wqkv [H, (nh + 2nkv)·d]`
/// (the q heads' columns, then the k heads', then the v heads'), `wo [nh·d, H]`,
/// `mlp_norm [H]`, `wg`, `wu [H, F]`, `wd [F, H]`, `cos`, `sin [d, T]`; output `y [T/sp, H]`;
/// everything in `dtype` (bf16 or fp32). Query head `i` uses key/value head `i / (nh / nkv)`.
/// With sequence parallelism (`sp > 1`) each collective's side is a tensor: `xn_sent`,
/// `attn_sent`, `hn_sent`, `z_sent` outputs and `xn_received`, `attn_received`,
/// `hn_received`, `z_received` inputs.
pub fn decoder_layer(
    chip: impl Into<ChipParams>,
    shape: &LayerShape,
    dtype: DType,
    composition: Composition,
) -> Result<Program, KernelError> {
    Ok(decoder_layer_parts(chip, shape, dtype, composition)?.program)
}

/// One kernel of a [`LayerProgram`]: its name (the planner's op names where there is one)
/// and its instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPart {
    pub name: &'static str,
    pub instructions: std::ops::Range<usize>,
}

/// A decoder layer program and the kernels it is made of, in program order.
#[derive(Debug, Clone)]
pub struct LayerProgram {
    pub program: Program,
    pub parts: Vec<LayerPart>,
}

/// [`decoder_layer`] with its parts.
pub fn decoder_layer_parts(
    chip: impl Into<ChipParams>,
    shape: &LayerShape,
    dtype: DType,
    composition: Composition,
) -> Result<LayerProgram, KernelError> {
    shape.check()?;
    check_dtype(dtype)?;
    let mut kb = KernelBuilder::new(chip);
    let LayerShape { hidden: h, heads: nh, kv_heads: nkv, head_dim: d, ffn: f, .. } = *shape;
    let t = shape.tokens();
    let qk = (nh + nkv) * d;
    let qkv = qk + nkv * d;
    let local = t / shape.sequence_parallel;
    let x = kb.input("x", dtype, &[local, h])?;
    let LayerWeights { attn_norm, wqkv, wo, mlp_norm, wg, wu, wd } =
        LayerWeights::declare(&mut kb, shape, dtype)?;
    let cos = kb.input("cos", dtype, &[d, t])?;
    let sin = kb.input("sin", dtype, &[d, t])?;
    let y = kb.output("y", dtype, &[local, h])?;
    let scratch =
        |kb: &mut KernelBuilder, name: &str, shape: &[u64]| kb.scratch(name, dtype, shape);
    // Where a sequence-parallel collective sits between two kernels: (what the first writes,
    // what the second reads); one scratch tensor without sequence parallelism.
    let split = |kb: &mut KernelBuilder, name: &str, rows: (u64, u64)| {
        if shape.sequence_parallel == 1 {
            let both = kb.scratch(name, dtype, &[t, h])?;
            return Ok::<(usize, usize), KernelError>((both, both));
        }
        let sent = kb.output(&format!("{name}_sent"), dtype, &[rows.0, h])?;
        let received = kb.input(&format!("{name}_received"), dtype, &[rows.1, h])?;
        Ok((sent, received))
    };
    // All-gathers after the norms, reduce-scatters after the row-parallel projections.
    let (xn, xn_full) = split(&mut kb, "xn", (local, t))?;
    let xn_t = scratch(&mut kb, "xn_t", &[h, t])?;
    let qkv_t = scratch(&mut kb, "qkv_t", &[qkv, t])?;
    let qk_rope = scratch(&mut kb, "qk_rope", &[qk, t])?;
    let v = scratch(&mut kb, "v", &[t, nkv * d])?;
    let o = scratch(&mut kb, "o", &[nh, t, d])?;
    let o_t = scratch(&mut kb, "o_t", &[nh * d, t])?;
    let (attn, attn_local) = split(&mut kb, "attn", (t, local))?;
    let res = scratch(&mut kb, "h", &[local, h])?;
    let (hn, hn_full) = split(&mut kb, "hn", (local, t))?;
    let hn_t = scratch(&mut kb, "hn_t", &[h, t])?;
    let g_t = scratch(&mut kb, "g_t", &[f, t])?;
    let u_t = scratch(&mut kb, "u_t", &[f, t])?;
    let a_t = scratch(&mut kb, "a_t", &[f, t])?;
    let (z, z_local) = split(&mut kb, "z", (t, local))?;
    let gemm = |kb: &mut KernelBuilder, (a, b, c): (usize, usize, usize), m, n, k| {
        gemm_into(kb, GemmTensors { a, b, scales: None, c }, m, n, k, dtype, dtype)
    };
    let mut parts = Parts::new(composition);
    let mut end_part = |kb: &mut KernelBuilder, name| parts.end(kb, name);

    // Attention block.
    rmsnorm_into(&mut kb, RowTensors { x, w: attn_norm, y: xn }, local, h, dtype)?;
    end_part(&mut kb, "input_norm");
    transpose_into(&mut kb, (xn_full, xn_t, 0), whole(t, h), dtype)?;
    end_part(&mut kb, "transpose_xn");
    gemm(&mut kb, (wqkv, xn_t, qkv_t), qkv, t, h)?;
    end_part(&mut kb, "qkv_proj");
    rope_into(&mut kb, [qkv_t, cos, sin, qk_rope], nh + nkv, d, t, dtype)?;
    end_part(&mut kb, "rope");
    let v_rows = (HeadLayout { base: qk * t, head_stride: 0, row_stride: t }, 1, nkv * d, t);
    transpose_into(&mut kb, (qkv_t, v, 0), v_rows, dtype)?;
    end_part(&mut kb, "transpose_v");
    for b in 0..shape.batch {
        let s0 = b * shape.seq;
        let tensors = AttentionTensors {
            q: (qk_rope, HeadLayout { base: s0, head_stride: d * t, row_stride: t }),
            k: (qk_rope, HeadLayout { base: nh * d * t + s0, head_stride: d * t, row_stride: t }),
            v: (v, HeadLayout { base: s0 * nkv * d, head_stride: d, row_stride: nkv * d }),
            o: (o, HeadLayout { base: s0 * d, head_stride: t * d, row_stride: d }),
        };
        attention_into(
            &mut kb,
            &tensors,
            &AttentionShape { batch: 1, ..shape.attention() },
            dtype,
        )?;
    }
    end_part(&mut kb, "attention");
    let heads_of_o = (HeadLayout::rows_of(t, d), nh, t, d);
    transpose_into(&mut kb, (o, o_t, 0), heads_of_o, dtype)?;
    end_part(&mut kb, "transpose_o");
    gemm(&mut kb, (o_t, wo, attn), t, h, nh * d)?;
    end_part(&mut kb, "out_proj");
    elementwise_into(&mut kb, Elementwise::Add, [x, attn_local, res], local, h, dtype)?;
    end_part(&mut kb, "residual_add");
    // MLP block.
    rmsnorm_into(&mut kb, RowTensors { x: res, w: mlp_norm, y: hn }, local, h, dtype)?;
    end_part(&mut kb, "post_norm");
    transpose_into(&mut kb, (hn_full, hn_t, 0), whole(t, h), dtype)?;
    end_part(&mut kb, "transpose_hn");
    gemm(&mut kb, (wg, hn_t, g_t), f, t, h)?;
    end_part(&mut kb, "mlp_gate");
    gemm(&mut kb, (wu, hn_t, u_t), f, t, h)?;
    end_part(&mut kb, "mlp_up");
    elementwise_into(&mut kb, Elementwise::Swiglu, [g_t, u_t, a_t], f, t, dtype)?;
    end_part(&mut kb, "mlp_act");
    gemm(&mut kb, (a_t, wd, z), t, h, f)?;
    end_part(&mut kb, "mlp_down");
    elementwise_into(&mut kb, Elementwise::Add, [res, z_local, y], local, h, dtype)?;
    end_part(&mut kb, "residual_add");
    parts.finish(kb)
}

/// A layer's weights as HBM inputs, the same in the forward and backward programs:
/// `attn_norm [H]`, `wqkv [H, (nh + 2nkv)·d]`, `wo [nh·d, H]`, `mlp_norm [H]`, `wg`, `wu [H, F]`,
/// `wd [F, H]`.
pub(crate) struct LayerWeights {
    pub attn_norm: usize,
    pub wqkv: usize,
    pub wo: usize,
    pub mlp_norm: usize,
    pub wg: usize,
    pub wu: usize,
    pub wd: usize,
}

impl LayerWeights {
    pub(crate) fn declare(
        kb: &mut KernelBuilder,
        shape: &LayerShape,
        dtype: DType,
    ) -> Result<LayerWeights, KernelError> {
        let LayerShape { hidden: h, heads: nh, kv_heads: nkv, head_dim: d, ffn: f, .. } = *shape;
        let mut input = |name: &str, dims: &[u64]| kb.input(name, dtype, dims);
        Ok(LayerWeights {
            attn_norm: input("attn_norm", &[h])?,
            wqkv: input("wqkv", &[h, (nh + 2 * nkv) * d])?,
            wo: input("wo", &[nh * d, h])?,
            mlp_norm: input("mlp_norm", &[h])?,
            wg: input("wg", &[h, f])?,
            wu: input("wu", &[h, f])?,
            wd: input("wd", &[f, h])?,
        })
    }
}

/// The parts of a layer program as its kernels are emitted.
pub(crate) struct Parts {
    parts: Vec<LayerPart>,
    composition: Composition,
}

impl Parts {
    pub(crate) fn new(composition: Composition) -> Parts {
        Parts { parts: Vec::new(), composition }
    }

    /// Ends the part `name` (its instructions since the previous part's end); a fence after
    /// it under [`Composition::Serial`].
    pub(crate) fn end(&mut self, kb: &mut KernelBuilder, name: &'static str) {
        let start = self.parts.last().map_or(0, |p| p.instructions.end);
        self.parts.push(LayerPart { name, instructions: start..kb.len() });
        if self.composition == Composition::Serial {
            kb.fence();
        }
    }

    pub(crate) fn finish(self, kb: KernelBuilder) -> Result<LayerProgram, KernelError> {
        Ok(LayerProgram { program: kb.finish()?, parts: self.parts })
    }
}

/// A whole `[rows, cols]` matrix as [`transpose_into`]'s source.
pub(crate) fn whole(rows: u64, cols: u64) -> (HeadLayout, u64, u64, u64) {
    (HeadLayout::rows_of(rows, cols), 1, rows, cols)
}

/// The layer programs run in bf16 or fp32.
pub(crate) fn check_dtype(dtype: DType) -> Result<(), KernelError> {
    if matches!(dtype, DType::Bf16 | DType::F32) {
        return Ok(());
    }
    Err(KernelError::Shape {
        what: "decoder layer".into(),
        detail: format!("dtype {dtype}: bf16 or fp32"),
    })
}

/// `dst` head `i` = `src` head `i` transposed, for `heads` matrices of `[rows, cols]` laid out
/// in `src` by `layout` and written to `dst` as `[cols, rows]` each, one after another from
/// element `dst_base`: blocks of `[128, 128]` loaded, transposed on TensorE into PSUM and
/// evacuated by the Vector and Scalar engines in turn.
pub(crate) fn transpose_into(
    kb: &mut KernelBuilder,
    (src, dst, dst_base): (usize, usize, u64),
    (layout, heads, rows, cols): (HeadLayout, u64, u64, u64),
    dtype: DType,
) -> Result<(), KernelError> {
    let mut turn = false;
    for head in 0..heads {
        for r0 in (0..rows).step_by(PT as usize) {
            let p = PT.min(rows - r0);
            for c0 in (0..cols).step_by(PT as usize) {
                let w = PT.min(cols - c0);
                let tile = kb.sbuf(p as u32, dtype, &[w])?;
                let from = HbmAccess {
                    tensor: src,
                    offset: layout.base + head * layout.head_stride + r0 * layout.row_stride + c0,
                    dims: vec![
                        Dim { stride: layout.row_stride as i64, size: p },
                        Dim { stride: 1, size: w },
                    ],
                };
                kb.dma(DmaOperand::Tile(tile.clone()), DmaOperand::Hbm(from));
                let ps = kb.psum(w as u32, dtype, &[p])?;
                kb.push(Engine::Tensor, Op::Transpose { dst: ps.clone(), src: tile.clone() });
                kb.free(&tile)?;
                let out = kb.sbuf(w as u32, dtype, &[p])?;
                turn = !turn;
                evacuate(kb, turn, &out, &ps);
                kb.free(&ps)?;
                let to = HbmAccess {
                    tensor: dst,
                    offset: dst_base + head * rows * cols + c0 * rows + r0,
                    dims: vec![Dim { stride: rows as i64, size: w }, Dim { stride: 1, size: p }],
                };
                kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(to), DmaOperand::Tile(out.clone()));
                kb.free(&out)?;
            }
        }
    }
    Ok(())
}

/// Copies a PSUM tile to SBUF on the Vector engine, or (`scalar`, where the Scalar engine can
/// copy: NeuronCore-v3+) on the Scalar engine.
fn evacuate(kb: &mut KernelBuilder, scalar: bool, dst: &Tile, src: &Tile) {
    if scalar && kb.chip().core.scalar_has_tensor_copy() {
        kb.copy(Engine::Scalar, dst, src);
    } else {
        kb.copy(Engine::Vector, dst, src);
    }
}

/// Rope on `heads` feature-major heads `[d, T]` of `x` (rows `i·d..`), `cos`/`sin [d, T]`,
/// into `y` (the shape of `x`): `y = x · cos + R·x · sin`, `R` the signed permutation of
/// `rotate_half` (`(R·x)[i] = −x[i + d/2]` below `d/2`, `x[i − d/2]` above), on TensorE.
pub(crate) fn rope_into(
    kb: &mut KernelBuilder,
    [x, cos, sin, y]: [usize; 4],
    heads: u64,
    d: u64,
    t: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    let rotation = rotate_half_matrix(kb, d, dtype)?;
    let window = |tensor: usize, row0: u64, c0: u64, w: u64| HbmAccess {
        tensor,
        offset: row0 * t + c0,
        dims: vec![Dim { stride: t as i64, size: d }, Dim { stride: 1, size: w }],
    };
    for c0 in (0..t).step_by(ROPE_TOKENS as usize) {
        let w = ROPE_TOKENS.min(t - c0);
        let load = |kb: &mut KernelBuilder, tensor: usize, row0: u64| {
            let tile = kb.sbuf(d as u32, dtype, &[w])?;
            kb.dma(DmaOperand::Tile(tile.clone()), DmaOperand::Hbm(window(tensor, row0, c0, w)));
            Ok::<Tile, KernelError>(tile)
        };
        let (cos_t, sin_t) = (load(kb, cos, 0)?, load(kb, sin, 0)?);
        for head in 0..heads {
            let x_t = load(kb, x, head * d)?;
            let rot = kb.psum(d as u32, DType::F32, &[w])?;
            kb.matmul(&rot, &rotation, &x_t, false);
            let u = kb.sbuf(d as u32, dtype, &[w])?;
            kb.tensor_tensor(Engine::Vector, &u, &rot, &sin_t, AluOp::Multiply);
            kb.free(&rot)?;
            let out = kb.sbuf(d as u32, dtype, &[w])?;
            kb.tensor_tensor(Engine::GpSimd, &out, &x_t, &cos_t, AluOp::Multiply);
            kb.free(&x_t)?;
            kb.tensor_tensor(Engine::Vector, &out, &out, &u, AluOp::Add);
            kb.free(&u)?;
            let to = DmaOperand::Hbm(window(y, head * d, c0, w));
            kb.dma_from(Engine::GpSimd, to, DmaOperand::Tile(out.clone()));
            kb.free(&out)?;
        }
        kb.free(&cos_t)?;
        kb.free(&sin_t)?;
    }
    kb.free(&rotation)
}

/// `Rᵀ` as TensorE's stationary operand `[d (contraction), d]`: `S[k, m] = R[m, k]`, so
/// `+1` where `k = m − d/2` and `−1` where `k = m + d/2`, built with affine selects.
fn rotate_half_matrix(kb: &mut KernelBuilder, d: u64, dtype: DType) -> Result<Tile, KernelError> {
    let half = (d / 2) as i32;
    // `value` on the line k − m + offset = 0, 0 elsewhere.
    let line = |kb: &mut KernelBuilder, value: f32, offset: i32| {
        let tile = kb.sbuf(d as u32, dtype, &[d])?;
        kb.push(Engine::GpSimd, Op::Memset { dst: tile.clone(), value });
        for sign in [1, -1] {
            let affine =
                Affine { base: sign * offset, channel_multiplier: sign, steps: vec![-sign] };
            let select = Op::AffineSelect {
                dst: tile.clone(),
                src: tile.clone(),
                affine,
                cmp: AluOp::Ge,
                on_false: 0.0,
            };
            kb.push(Engine::GpSimd, select);
        }
        Ok::<Tile, KernelError>(tile)
    };
    let plus = line(kb, 1.0, half)?;
    let minus = line(kb, -1.0, -half)?;
    kb.tensor_tensor(Engine::Vector, &plus, &plus, &minus, AluOp::Add);
    kb.free(&minus)?;
    Ok(plus)
}
