//! `attention-bwd`: flash-attention backward for `batch · heads` heads with grouped-query K/V
//! heads, in the layout of NKI's flash backward kernel: `q, k, v, o, dout: [heads, d, seq]`
//! (head dim on partitions; `k`, `v` per K/V head) and the forward's log-sum-exp
//! `lse: [heads, seq]` (fp32, `lse = log Σ_j exp(scale · q·k_j)`). Outputs, one row per
//! position: `dq: [heads, seq, d]`, `dk, dv: [kv_heads, seq, d]`.
//!
//! Per K/V head the key blocks `k_j`, `v_j` (and `k_j` transposed) stay in SBUF, with fp32
//! `dk`, `dv` accumulators — all of them, or for long sequences a chunk of them at a time (the
//! key side streamed): the query side is then prepared again per key chunk and each query
//! block's fp32 `dq` goes to an HBM scratch accumulator between chunks (loaded back by the
//! next), until the chunk after which no key block reaches it. Per query head, each query block's `q_i` and `dout_i` (and their
//! transposes, made on TensorE), `-lse_i` and `D_i = rowsum(dout_i ∘ o_i)` (an elementwise
//! product and a matmul against ones) are prepared once, with an fp32 `dq` accumulator. Then
//! for every key block `j` and query block `i` (`i ≥ j` when causal):
//!
//! ```text
//! s = q_iᵀ k_j                    TensorE, PSUM [q, k]
//! p = exp(scale · s − lse_i)      ScalarE (masked to 0 above the diagonal: GpSimd)
//! dp = dout_iᵀ v_j                TensorE
//! ds = p ∘ (dp − D_i)             VectorE, GpSimd
//! dv_j += pᵀ dout_i               TensorE, accumulated in PSUM over i
//! dk_j += dsᵀ q_i                 TensorE, accumulated in PSUM over i
//! dq_i += ds k_j                  TensorE on dsᵀ (transposed on TensorE), VectorE add
//! ```
//!
//! `ds` is one VectorE `scalar_tensor_tensor` reading dp from PSUM. The steps are a software
//! pipeline: the scores and ds of the next [`LOOKAHEAD`] steps are issued before a step's dv,
//! dk and dsᵀ, and its dq [`DQ_LAG`] steps after those.
//!
//! `dq` and `dk` are scaled by `scale` when stored. 2.5× the forward's FLOPs (five matmuls per
//! score instead of two).

use std::collections::VecDeque;

use rainier_arch::ChipParams;
use rainier_isa::{
    ActFunc, Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Op, Program, ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::attention::HeadLayout;
use crate::{AttentionShape, KernelBuilder, KernelError};

/// Queries and keys per block (one partition each).
const B: u64 = 128;
/// Steps whose scores are issued ahead of the gradients being issued.
const LOOKAHEAD: usize = 2;
/// Steps whose dv, dk and dsᵀ are issued before the oldest one's dq (the dq matmul waits for
/// its dsᵀ evacuation; 2 measured best over 0-2 on trn1-trn3, 0 being the old schedule).
const DQ_LAG: usize = 2;

/// The backward program; `q, k, v, o, dout` and the outputs in `dtype`, `lse` fp32.
pub fn attention_backward(
    chip: impl Into<ChipParams>,
    shape: &AttentionShape,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    attention_backward_chunked(&chip, shape, dtype, None, None)
}

/// [`attention_backward`] with at most `max_query_blocks` query blocks and `max_key_blocks`
/// key blocks in SBUF at once (`None`: as many as fit), to exercise the chunked schedules at
/// small shapes.
pub fn attention_backward_chunked(
    chip: impl Into<ChipParams>,
    shape: &AttentionShape,
    dtype: DType,
    max_query_blocks: Option<u64>,
    max_key_blocks: Option<u64>,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_backward(shape, dtype)?;
    let AttentionShape { batch, heads, kv_heads, seq, head_dim: d, .. } = *shape;
    let (nh, nkv) = (batch * heads, batch * kv_heads);
    let mut kb = KernelBuilder::new(&chip);
    let per_head = |rows, cols| HeadLayout::rows_of(rows, cols);
    let t = AttentionGradTensors {
        q: (kb.input("q", dtype, &[nh, d, seq])?, per_head(d, seq)),
        k: (kb.input("k", dtype, &[nkv, d, seq])?, per_head(d, seq)),
        v: (kb.input("v", dtype, &[nkv, d, seq])?, per_head(d, seq)),
        o: (kb.input("o", dtype, &[nh, d, seq])?, per_head(d, seq)),
        dout: (kb.input("dout", dtype, &[nh, d, seq])?, per_head(d, seq)),
        lse: (kb.input("lse", DType::F32, &[nh, seq])?, per_head(1, seq)),
        dq: (kb.output("dq", dtype, &[nh, seq, d])?, per_head(seq, d)),
        dk: (kb.output("dk", dtype, &[nkv, seq, d])?, per_head(seq, d)),
        dv: (kb.output("dv", dtype, &[nkv, seq, d])?, per_head(seq, d)),
    };
    attention_backward_into(&mut kb, &t, shape, dtype, (max_query_blocks, max_key_blocks))?;
    kb.finish()
}

/// The shapes and dtypes attention backward takes.
fn check_backward(shape: &AttentionShape, dtype: DType) -> Result<(), KernelError> {
    let AttentionShape { batch, heads, kv_heads, seq, head_dim: d, .. } = *shape;
    let bad = |detail: String| KernelError::Shape { what: "attention-bwd".into(), detail };
    if batch == 0 || heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(bad(format!("batch={batch}, heads={heads}, kv_heads={kv_heads}: heads must be a positive multiple of kv_heads")));
    }
    if !matches!(dtype, DType::Bf16 | DType::F16 | DType::F32) {
        return Err(bad(format!(
            "dtype {dtype}: attention-bwd runs in bf16, fp16 or fp32 (fp8 attention needs per-tensor scales, not modelled)"
        )));
    }
    if seq == 0 || seq % B != 0 || d == 0 || d > 128 {
        return Err(bad(format!(
            "seq={seq}, head_dim={d}: seq must be a multiple of 128 and 1 <= head_dim <= 128"
        )));
    }
    Ok(())
}

/// The HBM tensors of attention backward and their layouts: per head, `q, k, v, o, dout`
/// `[d, seq]`, `lse` `[1, seq]` (fp32), `dq, dk, dv` `[seq, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttentionGradTensors {
    pub q: (usize, HeadLayout),
    pub k: (usize, HeadLayout),
    pub v: (usize, HeadLayout),
    pub o: (usize, HeadLayout),
    pub dout: (usize, HeadLayout),
    pub lse: (usize, HeadLayout),
    pub dq: (usize, HeadLayout),
    pub dk: (usize, HeadLayout),
    pub dv: (usize, HeadLayout),
}

/// Emits [`attention_backward_chunked`]'s instructions into `kb` on tensors declared there
/// (`max_blocks`: its query and key block limits); every tile it takes is freed.
pub(crate) fn attention_backward_into(
    kb: &mut KernelBuilder,
    t: &AttentionGradTensors,
    shape: &AttentionShape,
    dtype: DType,
    (max_query_blocks, max_key_blocks): (Option<u64>, Option<u64>),
) -> Result<(), KernelError> {
    check_backward(shape, dtype)?;
    let chip = kb.chip().clone();
    let AttentionShape { batch, heads, kv_heads, seq, head_dim: d, causal } = *shape;
    let bad = |detail: String| KernelError::Shape { what: "attention-bwd".into(), detail };
    let (nh, nkv, blocks) = (batch * heads, batch * kv_heads, seq / B);
    // About 14 instructions per (head, key block, query block) step.
    let pairs = if causal {
        u128::from(blocks) * u128::from(blocks + 1) / 2
    } else {
        u128::from(blocks) * u128::from(blocks)
    };
    if u128::from(nh) * pairs * 14 > crate::MAX_INSTRUCTIONS as u128 {
        return Err(KernelError::TooLarge { limit: crate::MAX_INSTRUCTIONS });
    }
    // The K/V blocks of a K/V head stay in SBUF for the whole sequence; query blocks go in
    // chunks whose state fits beside them. Per 128 positions: k, v, kᵀ and the fp32 dk, dv
    // accumulators (key side); q, dout, their transposes, −lse, D and the fp32 dq accumulator
    // (query side). 10 % for next-fit fragmentation, 8 KiB for the step's transient tiles
    // (fitted to where the builder runs out).
    let esz = dtype.size_bytes() as u64;
    let key_side = (2 * B * esz + d * esz + 8 * d) * 11 / 10;
    let query_side = (2 * B * esz + 2 * d * esz + 8 + 4 * d) * 11 / 10;
    let transient = 8 * 1024;
    let sbuf = u64::from(chip.core.sbuf_bytes_per_partition.value);
    // All key blocks when they leave room for four query blocks (or all of them); else the key
    // side streamed in chunks taking half of SBUF.
    let usable = sbuf.saturating_sub(transient);
    let all_keys = blocks * key_side + blocks.min(4) * query_side <= usable;
    let key_chunk = if all_keys { blocks } else { (usable / 2 / key_side).max(1) };
    let key_chunk = key_chunk.min(max_key_blocks.unwrap_or(u64::MAX)).max(1);
    let room = usable.saturating_sub(key_chunk * key_side);
    let chunk = (room / query_side).min(blocks).min(max_query_blocks.unwrap_or(u64::MAX));
    if chunk == 0 {
        return Err(bad(format!(
            "seq={seq}, head_dim={d}, {dtype}: one key block and one query block need {} bytes per SBUF partition, {chip} has {sbuf}",
            key_side + query_side + transient
        )));
    }
    let key_chunks: Vec<(u64, u64)> = (0..blocks)
        .step_by(key_chunk as usize)
        .map(|ks| (ks, (ks + key_chunk).min(blocks)))
        .collect();
    // fp32 dq partial sums between key chunks.
    let dq_acc = if key_chunks.len() > 1 {
        Some((kb.scratch("dq_acc", DType::F32, &[nh, seq, d])?, HeadLayout::rows_of(seq, d)))
    } else {
        None
    };
    let scale = 1.0 / (d as f32).sqrt();
    let group = heads / kv_heads;
    let ones = kb.sbuf(d as u32, DType::F32, &[1])?;
    kb.push(Engine::GpSimd, Op::Memset { dst: ones.clone(), value: 1.0 });
    for (hk, &(ks, ke)) in (0..nkv).flat_map(|hk| key_chunks.iter().map(move |c| (hk, c))) {
        // K/V blocks of this chunk of this K/V head, k transposed to [keys, d], fp32
        // accumulators.
        let mut keys = Vec::with_capacity((ke - ks) as usize);
        for j in ks..ke {
            let k_t = load_cols(kb, t.k, hk, j, d, dtype)?;
            let v_t = load_cols(kb, t.v, hk, j, d, dtype)?;
            let k_kd = transpose(kb, &k_t, dtype)?;
            let dk = kb.sbuf(B as u32, DType::F32, &[d])?;
            let dv = kb.sbuf(B as u32, DType::F32, &[d])?;
            kb.push(Engine::GpSimd, Op::Memset { dst: dk.clone(), value: 0.0 });
            kb.push(Engine::GpSimd, Op::Memset { dst: dv.clone(), value: 0.0 });
            keys.push(KeyBlock { k_t, v_t, k_kd, dk, dv });
        }
        // Query heads sharing this K/V head.
        let first = (hk / kv_heads) * heads + (hk % kv_heads) * group;
        // Causal: query blocks before the chunk see none of its keys.
        let q_from = if causal { ks } else { 0 };
        for h in first..first + group {
            for qs in (q_from..blocks).step_by(chunk as usize) {
                let qe = (qs + chunk).min(blocks);
                let mut queries = Vec::with_capacity((qe - qs) as usize);
                for i in qs..qe {
                    // The dq partial sum of earlier key chunks, if any.
                    let partial = dq_acc.filter(|_| ks > 0);
                    let qb = prepare_queries(kb, t, (h, i), d, dtype, &ones, partial)?;
                    queries.push(qb);
                }
                for (j, key) in keys.iter().enumerate() {
                    let j = ks + j as u64;
                    let from = if causal { j.max(qs) } else { qs };
                    if from >= qe {
                        continue;
                    }
                    let dv_ps = kb.psum(B as u32, DType::F32, &[d])?;
                    let dk_ps = kb.psum(B as u32, DType::F32, &[d])?;
                    // Software pipeline: the scores and ds of the next `LOOKAHEAD` steps are
                    // issued before a step's gradient matmuls, so TensorE has independent work
                    // queued while the other engines finish a step.
                    // A step's dq (behind its dsᵀ evacuation) is issued after the next step's
                    // dv and dk, so TensorE does not wait on the evacuation.
                    let mut pending: VecDeque<(Probs, &QueryBlock, bool)> = VecDeque::new();
                    let mut deferred: VecDeque<(Tile, &QueryBlock)> = VecDeque::new();
                    for i in from..qe {
                        let qb = &queries[(i - qs) as usize];
                        let probs = scores(kb, qb, key, causal && i == j, scale, dtype)?;
                        pending.push_back((probs, qb, i > from));
                        if pending.len() > LOOKAHEAD {
                            if let Some((pr, pqb, acc)) = pending.pop_front() {
                                let ds_t = gradients(kb, pqb, &dv_ps, &dk_ps, acc, pr, dtype)?;
                                deferred.push_back((ds_t, pqb));
                            }
                        }
                        while deferred.len() > DQ_LAG {
                            if let Some((ds_t, pqb)) = deferred.pop_front() {
                                query_gradient(kb, pqb, key, ds_t)?;
                            }
                        }
                    }
                    while let Some((pr, pqb, acc)) = pending.pop_front() {
                        let ds_t = gradients(kb, pqb, &dv_ps, &dk_ps, acc, pr, dtype)?;
                        deferred.push_back((ds_t, pqb));
                        while deferred.len() > DQ_LAG {
                            if let Some((ds_t, pqb)) = deferred.pop_front() {
                                query_gradient(kb, pqb, key, ds_t)?;
                            }
                        }
                    }
                    while let Some((ds_t, pqb)) = deferred.pop_front() {
                        query_gradient(kb, pqb, key, ds_t)?;
                    }
                    kb.tensor_tensor(Engine::Vector, &key.dv, &key.dv, &dv_ps, AluOp::Add);
                    kb.tensor_tensor(Engine::Vector, &key.dk, &key.dk, &dk_ps, AluOp::Add);
                    kb.free(&dv_ps)?;
                    kb.free(&dk_ps)?;
                }
                for (i, qb) in (qs..qe).zip(queries) {
                    // Final once no later key chunk reaches block i.
                    let last = if causal { i < ke } else { ke == blocks };
                    match dq_acc {
                        Some(acc) if !last => {
                            let dst = rows(acc, h, i, d);
                            let src = DmaOperand::Tile(qb.dq.clone());
                            kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(dst), src);
                        }
                        _ => store_rows(kb, t.dq, (h, i), d, &qb.dq, scale, dtype)?,
                    }
                    for tile in
                        [&qb.q_t, &qb.do_t, &qb.q_qd, &qb.do_qd, &qb.neg_lse, &qb.delta, &qb.dq]
                    {
                        kb.free(tile)?;
                    }
                }
            }
        }
        for (j, key) in (ks..ke).zip(keys) {
            store_rows(kb, t.dk, (hk, j), d, &key.dk, scale, dtype)?;
            store_rows(kb, t.dv, (hk, j), d, &key.dv, 1.0, dtype)?;
            for tile in [&key.k_t, &key.v_t, &key.k_kd, &key.dk, &key.dv] {
                kb.free(tile)?;
            }
        }
    }
    kb.free(&ones)
}

/// A step's recomputed probabilities and `ds`, between its two halves.
struct Probs {
    p: Tile,
    ds: Tile,
}

/// The first half of a (key block, query block) step: recomputes p and `ds = p ∘ (dp − D)`.
fn scores(
    kb: &mut KernelBuilder,
    qb: &QueryBlock,
    key: &KeyBlock,
    diagonal: bool,
    scale: f32,
    dtype: DType,
) -> Result<Probs, KernelError> {
    // s = qᵀk, p = exp(scale·s − lse)
    let s_ps = kb.psum(B as u32, DType::F32, &[B])?;
    kb.matmul(&s_ps, &qb.q_t, &key.k_t, false);
    let p = kb.sbuf(B as u32, dtype, &[B])?;
    kb.activation(&p, &s_ps, ActFunc::Exp, ScalarOperand::Imm(scale), Some(&qb.neg_lse), None);
    kb.free(&s_ps)?;
    if diagonal {
        // Keep key c for query r where r − c >= 0 (same block offsets).
        let affine = Affine { base: 0, channel_multiplier: 1, steps: vec![-1] };
        kb.push(
            Engine::GpSimd,
            Op::AffineSelect {
                dst: p.clone(),
                src: p.clone(),
                affine,
                cmp: AluOp::Ge,
                on_false: 0.0,
            },
        );
    }
    // dp = doutᵀ v, ds = p ∘ (dp − D): one VectorE instruction reading dp from PSUM.
    let dp_ps = kb.psum(B as u32, DType::F32, &[B])?;
    kb.matmul(&dp_ps, &qb.do_t, &key.v_t, false);
    let ds = kb.sbuf(B as u32, dtype, &[B])?;
    kb.push(
        Engine::Vector,
        Op::ScalarTensorTensor {
            dst: ds.clone(),
            src: dp_ps.clone(),
            operand0: ScalarOperand::Vector(qb.delta.clone()),
            in1: p.clone(),
            op0: AluOp::Subtract,
            op1: AluOp::Multiply,
            reverse0: false,
            reverse1: false,
        },
    );
    kb.free(&dp_ps)?;
    Ok(Probs { p, ds })
}

/// The second half: dv and dk (accumulated in PSUM over the query blocks), and dsᵀ for dq.
fn gradients(
    kb: &mut KernelBuilder,
    qb: &QueryBlock,
    dv_ps: &Tile,
    dk_ps: &Tile,
    acc: bool,
    pr: Probs,
    dtype: DType,
) -> Result<Tile, KernelError> {
    let Probs { p, ds } = pr;
    // dv += pᵀ dout, dk += dsᵀ q (contracting over queries on partitions)
    kb.matmul(dv_ps, &p, &qb.do_qd, acc);
    kb.matmul(dk_ps, &ds, &qb.q_qd, acc);
    kb.free(&p)?;
    // dsᵀ on TensorE, for dq (by `dma_transpose` it measured 24-30 % at lags 2-6: the
    // DMA's fixed latency stays on the chain).
    let ds_t = transpose(kb, &ds, dtype)?;
    kb.free(&ds)?;
    Ok(ds_t)
}

/// dq += ds k, contracting over keys, added to the query block's fp32 accumulator.
fn query_gradient(
    kb: &mut KernelBuilder,
    qb: &QueryBlock,
    key: &KeyBlock,
    ds_t: Tile,
) -> Result<(), KernelError> {
    let dq_ps = kb.psum(B as u32, DType::F32, &[key.k_kd.free_len()])?;
    kb.matmul(&dq_ps, &ds_t, &key.k_kd, false);
    kb.free(&ds_t)?;
    kb.tensor_tensor(Engine::Vector, &qb.dq, &qb.dq, &dq_ps, AluOp::Add);
    kb.free(&dq_ps)?;
    Ok(())
}

/// One key block of a K/V head.
struct KeyBlock {
    /// `[d, keys]`.
    k_t: Tile,
    v_t: Tile,
    /// `[keys, d]`.
    k_kd: Tile,
    /// fp32 `[keys, d]` accumulators.
    dk: Tile,
    dv: Tile,
}

/// One query block of a query head.
struct QueryBlock {
    /// `[d, queries]`.
    q_t: Tile,
    do_t: Tile,
    /// `[queries, d]`.
    q_qd: Tile,
    do_qd: Tile,
    /// `[queries, 1]` fp32: `−lse` and `D = rowsum(dout ∘ o)`.
    neg_lse: Tile,
    delta: Tile,
    /// fp32 `[queries, d]` accumulator.
    dq: Tile,
}

/// Block `j` (128 positions) of head `h` of a `[d, seq]`-per-head tensor, as `[d, 128]`.
fn load_cols(
    kb: &mut KernelBuilder,
    (tensor, layout): (usize, HeadLayout),
    h: u64,
    j: u64,
    d: u64,
    dtype: DType,
) -> Result<Tile, KernelError> {
    let t = kb.sbuf(d as u32, dtype, &[B])?;
    let src = HbmAccess {
        tensor,
        offset: layout.at(h, 0) + j * B,
        dims: vec![Dim { stride: layout.row_stride as i64, size: d }, Dim { stride: 1, size: B }],
    };
    kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(src));
    Ok(t)
}

/// `src [p, f]` transposed on TensorE into PSUM and copied to SBUF as `[f, p]` in `dtype`.
fn transpose(kb: &mut KernelBuilder, src: &Tile, dtype: DType) -> Result<Tile, KernelError> {
    let (p, f) = (u64::from(src.partitions), src.free_len());
    let ps = kb.psum(f as u32, DType::F32, &[p])?;
    kb.push(Engine::Tensor, Op::Transpose { dst: ps.clone(), src: src.clone() });
    let out = kb.sbuf(f as u32, dtype, &[p])?;
    kb.activation(&out, &ps, ActFunc::Identity, ScalarOperand::Imm(1.0), None, None);
    kb.free(&ps)?;
    Ok(out)
}

/// Rows `i·128..` of head `h` of a `[seq, d]`-per-head HBM tensor.
fn rows((tensor, layout): (usize, HeadLayout), h: u64, i: u64, d: u64) -> HbmAccess {
    HbmAccess {
        tensor,
        offset: layout.at(h, i * B),
        dims: vec![Dim { stride: layout.row_stride as i64, size: B }, Dim { stride: 1, size: d }],
    }
}

/// Loads query block `i` of head `h` and prepares what every key block needs; its fp32 dq
/// accumulator starts at zero, or at the partial sum in the `partial` HBM tensor.
fn prepare_queries(
    kb: &mut KernelBuilder,
    t: &AttentionGradTensors,
    (h, i): (u64, u64),
    d: u64,
    dtype: DType,
    ones: &Tile,
    partial: Option<(usize, HeadLayout)>,
) -> Result<QueryBlock, KernelError> {
    let q_t = load_cols(kb, t.q, h, i, d, dtype)?;
    let do_t = load_cols(kb, t.dout, h, i, d, dtype)?;
    let o_t = load_cols(kb, t.o, h, i, d, dtype)?;
    let q_qd = transpose(kb, &q_t, dtype)?;
    let do_qd = transpose(kb, &do_t, dtype)?;
    // D = Σ_d dout ∘ o: the product on VectorE, the sum over partitions as a matmul with ones.
    let prod = kb.sbuf(d as u32, DType::F32, &[B])?;
    kb.tensor_tensor(Engine::Vector, &prod, &do_t, &o_t, AluOp::Multiply);
    kb.free(&o_t)?;
    let delta_ps = kb.psum(B as u32, DType::F32, &[1])?;
    kb.matmul(&delta_ps, &prod, ones, false);
    kb.free(&prod)?;
    let delta = kb.sbuf(B as u32, DType::F32, &[1])?;
    kb.copy(Engine::Vector, &delta, &delta_ps);
    kb.free(&delta_ps)?;
    let lse = kb.sbuf(B as u32, DType::F32, &[1])?;
    let src = HbmAccess {
        tensor: t.lse.0,
        offset: t.lse.1.at(h, 0) + i * B,
        dims: vec![Dim { stride: 1, size: B }, Dim { stride: 1, size: 1 }],
    };
    kb.dma(DmaOperand::Tile(lse.clone()), DmaOperand::Hbm(src));
    let neg_lse = kb.sbuf(B as u32, DType::F32, &[1])?;
    kb.tensor_scalar(
        Engine::GpSimd,
        &neg_lse,
        &lse,
        &[(AluOp::Multiply, ScalarOperand::Imm(-1.0))],
    );
    kb.free(&lse)?;
    let dq = kb.sbuf(B as u32, DType::F32, &[d])?;
    match partial {
        Some(acc) => kb.dma(DmaOperand::Tile(dq.clone()), DmaOperand::Hbm(rows(acc, h, i, d))),
        None => kb.push(Engine::GpSimd, Op::Memset { dst: dq.clone(), value: 0.0 }),
    }
    Ok(QueryBlock { q_t, do_t, q_qd, do_qd, neg_lse, delta, dq })
}

/// `acc · scale` in `dtype` stored as rows `j·128..` of head `h` of a `[seq, d]`-per-head
/// output.
fn store_rows(
    kb: &mut KernelBuilder,
    tensor: (usize, HeadLayout),
    (h, j): (u64, u64),
    d: u64,
    acc: &Tile,
    scale: f32,
    dtype: DType,
) -> Result<(), KernelError> {
    let out = kb.sbuf(B as u32, dtype, &[d])?;
    kb.tensor_scalar(Engine::Vector, &out, acc, &[(AluOp::Multiply, ScalarOperand::Imm(scale))]);
    let dst = rows(tensor, h, j, d);
    kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(dst), DmaOperand::Tile(out.clone()));
    kb.free(&out)?;
    Ok(())
}
