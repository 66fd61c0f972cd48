//! `attention`: flash-style forward attention for `batch · heads` heads with grouped-query
//! K/V heads, in the layout NKI's flash kernels use: `q, k: [heads, d, seq]` (head dim on
//! partitions, as TensorE contracts over partitions), `v: [kv_heads, seq, d]`, output
//! `o: [heads, seq, d]`.
//!
//! Per 128-query block, K/V stream in blocks of 512 keys (one PSUM bank of fp32 scores):
//! `s = qᵀk` on TensorE; on diagonal blocks of a causal head the scores are masked with
//! `affine_select` (GpSimd, via SBUF); the running row max `m`, sum `l` and output `o` are
//! updated online (`p = exp(scale·(s - m_new))` with the row sum fused on ScalarE,
//! `corr = exp(scale·(m_old - m_new))`, `o = o·corr + p·v`); `p` is transposed on TensorE in
//! 128 x 128 chunks so that `p·v` contracts over keys on partitions. `o / l` is stored at the end.

use std::collections::VecDeque;

use rainier_arch::Chip;
use rainier_isa::{
    contiguous_dims, ActFunc, Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Op, Program,
    ReduceOp, ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const QT: u64 = 128;
const KT: u64 = 512;
const CHUNK: u64 = 128;
/// Key blocks whose QKᵀ is issued ahead of the softmax being processed.
const LOOKAHEAD: usize = 2;
/// Query blocks whose key steps are interleaved.
const INTERLEAVE: usize = 4;
/// Stands for -inf in masked scores (finite, so `exp` of it scaled is exactly 0).
const MASKED: f32 = -3.0e38;

/// Shape of an attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub seq: u64,
    pub head_dim: u64,
    pub causal: bool,
}

impl AttentionShape {
    /// Useful FLOPs: `4 · seq² · head_dim` per head (QKᵀ and PV), halved when causal.
    pub fn flops(&self) -> f64 {
        let per_head = 4.0 * (self.seq * self.seq * self.head_dim) as f64;
        let f = per_head * (self.batch * self.heads) as f64;
        if self.causal {
            f / 2.0
        } else {
            f
        }
    }
}

fn columns(t: &Tile, first: u64, count: u64) -> Tile {
    Tile {
        offset_bytes: t.offset_bytes + first * t.dtype.size_bytes() as u64,
        dims: contiguous_dims(&[count]),
        ..t.clone()
    }
}

/// The forward attention program; `q`, `k`, `v` in `dtype`, `o` in `dtype`.
pub fn attention(chip: Chip, shape: &AttentionShape, dtype: DType) -> Result<Program, KernelError> {
    let AttentionShape { batch, heads, kv_heads, seq, head_dim: d, causal } = *shape;
    let bad = |detail: String| KernelError::Shape { what: "attention".into(), detail };
    if batch == 0 || heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(bad(format!("batch={batch}, heads={heads}, kv_heads={kv_heads}: heads must be a positive multiple of kv_heads")));
    }
    if !matches!(dtype, DType::Bf16 | DType::F16 | DType::F32) {
        return Err(bad(format!(
            "dtype {dtype}: attention runs in bf16, fp16 or fp32 (fp8 attention needs per-tensor scales, not modelled)"
        )));
    }
    if seq == 0 || seq % QT != 0 || d == 0 || d > 128 {
        return Err(bad(format!(
            "seq={seq}, head_dim={d}: seq must be a multiple of 128 and 1 <= head_dim <= 128"
        )));
    }
    let (nh, nkv) = (batch * heads, batch * kv_heads);
    // Each (head, query block, key block) step emits about 25 instructions: refuse shapes
    // whose program could not be held before building the step list.
    let q_blocks = u128::from(seq / QT);
    let key_steps = if causal {
        (0..seq / QT).map(|i| u128::from((i + 1) * QT).div_ceil(u128::from(KT))).sum::<u128>()
    } else {
        q_blocks * u128::from(seq.div_ceil(KT))
    };
    if u128::from(nh) * key_steps * 25 > crate::MAX_INSTRUCTIONS as u128 {
        return Err(KernelError::TooLarge { limit: crate::MAX_INSTRUCTIONS });
    }
    let mut kb = KernelBuilder::new(chip);
    let q = kb.input("q", dtype, &[nh, d, seq])?;
    let k = kb.input("k", dtype, &[nkv, d, seq])?;
    let v = kb.input("v", dtype, &[nkv, seq, d])?;
    let o = kb.output("o", dtype, &[nh, seq, d])?;
    let scale = 1.0 / (d as f32).sqrt();
    let group = heads / kv_heads;
    // Every (head, query block, key block) step in order; the loads and QKᵀ of step i + 1 are
    // issued before the softmax and PV of step i, so TensorE always has independent work
    // queued while the other engines finish a block.
    // Query blocks go in groups of `INTERLEAVE` whose key steps are interleaved round-robin:
    // each block's online softmax is a serial, latency-bound chain, and interleaving gives the
    // engines independent chains to overlap.
    let mut steps = Vec::new();
    let q_blocks: Vec<(u64, u64)> =
        (0..nh).flat_map(|h| (0..seq).step_by(QT as usize).map(move |q0| (h, q0))).collect();
    for group in q_blocks.chunks(INTERLEAVE) {
        let per_block: Vec<Vec<Step>> = group
            .iter()
            .map(|&(h, q0)| {
                let k_end = if causal { q0 + QT } else { seq };
                let n = k_end.div_ceil(KT);
                (0..n)
                    .map(|i| Step {
                        h,
                        q0,
                        k0: i * KT,
                        ksz: KT.min(k_end - i * KT),
                        first: i == 0,
                        last: i + 1 == n,
                    })
                    .collect()
            })
            .collect();
        let rounds = per_block.iter().map(Vec::len).max().unwrap_or(0);
        for r in 0..rounds {
            steps.extend(per_block.iter().filter_map(|b| b.get(r).copied()));
        }
    }
    let ctx = Ctx { q, k, v, o, d, seq, heads, kv_heads, group, dtype, scale, causal };
    // Query-block states by (head, q0). Each step goes through three phases emitted in a
    // software pipeline: scores (QKᵀ), then LOOKAHEAD steps later its softmax statistics and
    // exp, then one step later its PV and accumulation; so each engine's in-order queue holds
    // independent work from different steps instead of one step's dependency chain.
    let mut pipe = Pipeline { blocks: Vec::new(), scored: VecDeque::new(), exped: VecDeque::new() };
    for step in &steps {
        if step.first {
            let b = start_block(&mut kb, &ctx, step)?;
            pipe.blocks.push(((step.h, step.q0), b));
        }
        let q_t = pipe.block(step)?.q_t.clone();
        let scores = issue_scores(&mut kb, &ctx, step, &q_t)?;
        pipe.scored.push_back((*step, scores));
        pipe.advance(&mut kb, &ctx, LOOKAHEAD, 1)?;
    }
    pipe.advance(&mut kb, &ctx, 0, 0)?;
    kb.finish()
}

/// One key block of one query block of one head.
#[derive(Debug, Clone, Copy)]
struct Step {
    h: u64,
    q0: u64,
    k0: u64,
    ksz: u64,
    /// The first key block of its query block.
    first: bool,
    /// The last key block of its query block.
    last: bool,
}

/// What every step needs to know.
#[derive(Debug)]
struct Ctx {
    q: usize,
    k: usize,
    v: usize,
    o: usize,
    d: u64,
    seq: u64,
    heads: u64,
    kv_heads: u64,
    group: u64,
    dtype: DType,
    scale: f32,
    causal: bool,
}

impl Ctx {
    fn kv_head(&self, h: u64) -> u64 {
        (h / self.heads) * self.kv_heads + (h % self.heads) / self.group
    }
}

/// The running state of one query block.
#[derive(Debug)]
struct QBlock {
    q_t: Tile,
    m: Tile,
    l: Tile,
    acc: Tile,
}

/// A step's scores (PSUM) and its V block, issued ahead of its softmax.
#[derive(Debug)]
struct Scores {
    s_ps: Tile,
    v_t: Tile,
}

fn start_block(kb: &mut KernelBuilder, c: &Ctx, st: &Step) -> Result<QBlock, KernelError> {
    let q_t = kb.sbuf(c.d as u32, c.dtype, &[QT])?;
    let src = HbmAccess {
        tensor: c.q,
        offset: st.h * c.d * c.seq + st.q0,
        dims: vec![Dim { stride: c.seq as i64, size: c.d }, Dim { stride: 1, size: QT }],
    };
    kb.dma(DmaOperand::Tile(q_t.clone()), DmaOperand::Hbm(src));
    let m = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.push(Engine::Vector, Op::Memset { dst: m.clone(), value: MASKED });
    let l = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.push(Engine::Vector, Op::Memset { dst: l.clone(), value: 0.0 });
    let acc = kb.sbuf(QT as u32, DType::F32, &[c.d])?;
    kb.push(Engine::GpSimd, Op::Memset { dst: acc.clone(), value: 0.0 });
    Ok(QBlock { q_t, m, l, acc })
}

fn issue_scores(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    q_t: &Tile,
) -> Result<Scores, KernelError> {
    let (d, seq, hk) = (c.d, c.seq, c.kv_head(st.h));
    let chunks = st.ksz / CHUNK;
    let k_t = kb.sbuf(d as u32, c.dtype, &[st.ksz])?;
    let src = HbmAccess {
        tensor: c.k,
        offset: hk * d * seq + st.k0,
        dims: vec![Dim { stride: seq as i64, size: d }, Dim { stride: 1, size: st.ksz }],
    };
    kb.dma(DmaOperand::Tile(k_t.clone()), DmaOperand::Hbm(src));
    // v block as [128 keys, chunk, d]
    let v_t = kb.sbuf(CHUNK as u32, c.dtype, &[chunks, d])?;
    let src = HbmAccess {
        tensor: c.v,
        offset: (hk * seq + st.k0) * d,
        dims: vec![
            Dim { stride: d as i64, size: CHUNK },
            Dim { stride: (CHUNK * d) as i64, size: chunks },
            Dim { stride: 1, size: d },
        ],
    };
    kb.dma(DmaOperand::Tile(v_t.clone()), DmaOperand::Hbm(src));
    // s = qᵀ k  [128 queries, ksz keys]
    let s_ps = kb.psum(QT as u32, DType::F32, &[st.ksz])?;
    kb.matmul(&s_ps, q_t, &k_t, false);
    kb.free(&k_t)?;
    Ok(Scores { s_ps, v_t })
}

/// Steps between phases, and the state of every query block in flight.
#[derive(Debug)]
struct Pipeline {
    blocks: Vec<((u64, u64), QBlock)>,
    /// Steps whose scores are issued, oldest first.
    scored: VecDeque<(Step, Scores)>,
    /// Steps whose probabilities are computed, oldest first.
    exped: VecDeque<(Step, Probs)>,
}

impl Pipeline {
    fn position(&self, st: &Step) -> Result<usize, KernelError> {
        self.blocks.iter().position(|(key, _)| *key == (st.h, st.q0)).ok_or_else(|| {
            KernelError::Shape { what: "attention".into(), detail: "pipeline state".into() }
        })
    }

    fn block(&self, st: &Step) -> Result<&QBlock, KernelError> {
        Ok(&self.blocks[self.position(st)?].1)
    }

    /// Runs phase 2 until at most `scored` steps wait for it, and phase 3 until at most
    /// `exped` steps wait for it (finishing query blocks whose last step is done).
    fn advance(
        &mut self,
        kb: &mut KernelBuilder,
        c: &Ctx,
        scored: usize,
        exped: usize,
    ) -> Result<(), KernelError> {
        while self.scored.len() > scored || self.exped.len() > exped {
            if self.scored.len() > scored {
                if let Some((st, sc)) = self.scored.pop_front() {
                    let at = self.position(&st)?;
                    let pr = softmax_stats(kb, c, &st, sc, &mut self.blocks[at].1)?;
                    self.exped.push_back((st, pr));
                }
            }
            while self.exped.len() > exped.max(usize::from(self.scored.len() > scored)) {
                let Some((st, pr)) = self.exped.pop_front() else { break };
                let at = self.position(&st)?;
                accumulate(kb, c, &st, pr, &mut self.blocks[at].1)?;
                if st.last {
                    let (_, b) = self.blocks.remove(at);
                    finish_block(kb, c, &st, b)?;
                }
            }
        }
        Ok(())
    }
}

/// A step's probabilities, its correction factor and its V block, between the two phases.
#[derive(Debug)]
struct Probs {
    p: Tile,
    corr: Tile,
    v_t: Tile,
}

/// Phase 2: mask, row max, `p = exp(scale·(s - m_new))` with its row sum, `corr`, and `l`.
fn softmax_stats(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    sc: Scores,
    b: &mut QBlock,
) -> Result<Probs, KernelError> {
    let scale = c.scale;
    let Scores { s_ps, v_t } = sc;
    let mut s_sb = None;
    let scores = if c.causal && st.k0 + st.ksz > st.q0 {
        // Keep key j for query i where (q0 + i) - (k0 + j) >= 0.
        let t = kb.sbuf(QT as u32, DType::F32, &[st.ksz])?;
        kb.copy(Engine::Vector, &t, &s_ps);
        let affine = Affine {
            base: (st.q0 as i64 - st.k0 as i64) as i32,
            channel_multiplier: 1,
            steps: vec![-1],
        };
        kb.push(
            Engine::GpSimd,
            Op::AffineSelect {
                dst: t.clone(),
                src: t.clone(),
                affine,
                cmp: AluOp::Ge,
                on_false: MASKED,
            },
        );
        s_sb = Some(t.clone());
        t
    } else {
        s_ps.clone()
    };
    let m_blk = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.push(
        Engine::Vector,
        Op::TensorReduce {
            dst: m_blk.clone(),
            src: scores.clone(),
            op: ReduceOp::Max,
            axes: 1,
            negate: false,
        },
    );
    let m_new = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.tensor_tensor(Engine::Vector, &m_new, &b.m, &m_blk, AluOp::Max);
    kb.free(&m_blk)?;
    let neg = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.tensor_scalar(
        Engine::Vector,
        &neg,
        &m_new,
        &[(AluOp::Multiply, ScalarOperand::Imm(-scale))],
    );
    let p = kb.sbuf(QT as u32, c.dtype, &[st.ksz])?;
    let l_blk = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.activation(&p, &scores, ActFunc::Exp, ScalarOperand::Imm(scale), Some(&neg), Some(&l_blk));
    let corr = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.activation(&corr, &b.m, ActFunc::Exp, ScalarOperand::Imm(scale), Some(&neg), None);
    kb.free(&neg)?;
    kb.free(&s_ps)?;
    if let Some(t) = s_sb {
        kb.free(&t)?;
    }
    kb.free(&b.m)?;
    b.m = m_new;
    kb.tensor_tensor(Engine::Vector, &b.l, &b.l, &corr, AluOp::Multiply);
    kb.tensor_tensor(Engine::Vector, &b.l, &b.l, &l_blk, AluOp::Add);
    kb.free(&l_blk)?;
    Ok(Probs { p, corr, v_t })
}

/// Phase 3: `acc = acc · corr + p · v`, contracting over keys: all pᵀ chunks into one PSUM
/// bank on TensorE, one ScalarE evacuation, then the matmuls.
fn accumulate(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    pr: Probs,
    b: &mut QBlock,
) -> Result<(), KernelError> {
    let d = c.d;
    let chunks = st.ksz / CHUNK;
    let Probs { p, corr, v_t } = pr;
    let pt_ps = kb.psum(CHUNK as u32, DType::F32, &[chunks * QT])?;
    for j in 0..chunks {
        kb.push(
            Engine::Tensor,
            Op::Transpose { dst: columns(&pt_ps, j * QT, QT), src: columns(&p, j * CHUNK, CHUNK) },
        );
    }
    let pt = kb.sbuf(CHUNK as u32, c.dtype, &[chunks * QT])?;
    kb.activation(&pt, &pt_ps, ActFunc::Identity, ScalarOperand::Imm(1.0), None, None);
    kb.free(&pt_ps)?;
    let o_ps = kb.psum(QT as u32, DType::F32, &[d])?;
    for j in 0..chunks {
        kb.matmul(&o_ps, &columns(&pt, j * QT, QT), &columns(&v_t, j * d, d), j > 0);
    }
    kb.free(&pt)?;
    kb.free(&p)?;
    kb.free(&v_t)?;
    kb.tensor_scalar(
        Engine::Vector,
        &b.acc,
        &b.acc,
        &[(AluOp::Multiply, ScalarOperand::Vector(corr.clone()))],
    );
    kb.tensor_tensor(Engine::Vector, &b.acc, &b.acc, &o_ps, AluOp::Add);
    kb.free(&corr)?;
    kb.free(&o_ps)?;
    Ok(())
}

fn finish_block(kb: &mut KernelBuilder, c: &Ctx, st: &Step, b: QBlock) -> Result<(), KernelError> {
    let out = kb.sbuf(QT as u32, c.dtype, &[c.d])?;
    kb.tensor_scalar(
        Engine::Vector,
        &out,
        &b.acc,
        &[(AluOp::Divide, ScalarOperand::Vector(b.l.clone()))],
    );
    let dst = HbmAccess {
        tensor: c.o,
        offset: (st.h * c.seq + st.q0) * c.d,
        dims: vec![Dim { stride: c.d as i64, size: QT }, Dim { stride: 1, size: c.d }],
    };
    kb.dma(DmaOperand::Hbm(dst), DmaOperand::Tile(out.clone()));
    for t in [&out, &b.acc, &b.l, &b.m, &b.q_t] {
        kb.free(t)?;
    }
    Ok(())
}
