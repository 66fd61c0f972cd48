//! `attention`: flash-style forward attention for `batch · heads` heads with grouped-query
//! K/V heads, in the layout NKI's flash kernels use: `q, k: [heads, d, seq]` (head dim on
//! partitions, as TensorE contracts over partitions), `v: [kv_heads, seq, d]`, output
//! `o: [heads, seq, d]`.
//!
//! Structured the way production NKI flash attention is:
//!
//! - query blocks of 128 go in groups of [`GROUP`] that share every K/V block: a block of up to
//!   1024 keys is loaded once (K with long rows, V as `[128 keys, chunk, d]`) and read by every
//!   query block of the group that sees it, so K/V traffic is a quarter of one pass per block;
//! - per (query block, key block) step, `s = qᵀk` fills two PSUM banks on TensorE; on the
//!   diagonal step of a causal head a precomputed `[128, 128]` mask (0 or -inf) is added to the
//!   last 128 scores in PSUM; VectorE copies the scores to SBUF in the pass that takes their
//!   row max (freeing the banks early), and `p = exp(scale·(s - m_new))` with its row sum fused
//!   is one instruction reading SBUF (ScalarE, or VectorE's fast exponential on v4);
//! - `p` is transposed in 128 x 128 chunks: on v3+ up to [`DMA_TRANSPOSE_CHUNKS`] of them by the
//!   DMA engines' hardware transpose (`dma_transpose`, SBUF to SBUF), the rest on TensorE into
//!   one PSUM bank in bf16 (a transpose is exact in the input dtype) evacuated by ScalarE
//!   (VectorE carries the row max); `p·v` accumulates over the chunks in one bank;
//! - the running max and output are updated with fused instructions
//!   (`neg = min(neg, -scale·m_blk)`, `o = o·corr + p·v`), `l = l·corr + l_blk` on GpSimd, and
//!   `o / l` is stored at the end; a query block's first step writes them directly;
//! - steps are emitted as a software pipeline (scores of later steps issued before the softmax
//!   and PV of earlier ones; with DMA transposes, [`DMA_PV_LAG`] steps of them in flight), and
//!   each step's PSUM banks leave room for the next step's.

use std::collections::VecDeque;

use rainier_arch::ChipParams;
use rainier_isa::{
    contiguous_dims, ActFunc, Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Op, Program,
    ReduceCmd, ReduceOp, ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const QT: u64 = 128;
/// Keys per step: two PSUM banks of fp32 scores, one of their bf16 transposes.
const KT: u64 = 1024;
const CHUNK: u64 = 128;
/// Key blocks whose QKᵀ is issued ahead of the softmax being processed.
const LOOKAHEAD: usize = 1;
/// Query blocks sharing each K/V block, their key steps interleaved.
const GROUP: usize = 32;
/// On v3+, up to this many of a step's 128-key pᵀ chunks go by `dma_transpose`, the rest on
/// TensorE through PSUM: the DMA moves a transpose at half a copy's rate [N-arch3], and with
/// every chunk on it the DMA engines saturate once K/V blocks are reloaded per query group
/// (seq 8K+); half and half is the best split measured over seq 1K-32K (docs/kernels.md).
const DMA_TRANSPOSE_CHUNKS: u64 = 4;
/// With pᵀ by DMA (its ~1.3 µs fixed latency [N-dmabw] on every step's chain), this many
/// steps' transposes are in flight before the oldest one's `p·v` is issued (2 measured best
/// over 1-4 at seq 4096 causal on trn2 and trn3).
const DMA_PV_LAG: usize = 2;
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
pub fn attention(
    chip: impl Into<ChipParams>,
    shape: &AttentionShape,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_attention(shape, dtype)?;
    let AttentionShape { batch, heads, kv_heads, seq, head_dim: d, .. } = *shape;
    let (nh, nkv) = (batch * heads, batch * kv_heads);
    let mut kb = KernelBuilder::new(&chip);
    let q = kb.input("q", dtype, &[nh, d, seq])?;
    let k = kb.input("k", dtype, &[nkv, d, seq])?;
    let v = kb.input("v", dtype, &[nkv, seq, d])?;
    let o = kb.output("o", dtype, &[nh, seq, d])?;
    let tensors = AttentionTensors {
        q: (q, HeadLayout::rows_of(d, seq)),
        k: (k, HeadLayout::rows_of(d, seq)),
        v: (v, HeadLayout::rows_of(seq, d)),
        o: (o, HeadLayout::rows_of(seq, d)),
    };
    attention_into(&mut kb, &tensors, shape, dtype)?;
    kb.finish()
}

/// Where one head's `[rows, cols]` matrix lies in a tensor: element `(h, r, c)` of head `h`
/// at `base + h·head_stride + r·row_stride + c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLayout {
    pub base: u64,
    pub head_stride: u64,
    pub row_stride: u64,
}

impl HeadLayout {
    /// Heads of `[rows, cols]` each, one after another.
    pub(crate) fn rows_of(rows: u64, cols: u64) -> Self {
        HeadLayout { base: 0, head_stride: rows * cols, row_stride: cols }
    }

    pub(crate) fn at(&self, head: u64, row: u64) -> u64 {
        self.base + head * self.head_stride + row * self.row_stride
    }
}

/// Attention's HBM tensors and their layouts: per head, `q` and `k` `[d, seq]`, `v` and `o`
/// `[seq, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttentionTensors {
    pub q: (usize, HeadLayout),
    pub k: (usize, HeadLayout),
    pub v: (usize, HeadLayout),
    pub o: (usize, HeadLayout),
}

fn check_attention(shape: &AttentionShape, dtype: DType) -> Result<(), KernelError> {
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
    let nh = batch * heads;
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
    Ok(())
}

/// Emits [`attention`] into `kb` on tensors declared there, laid out as `tensors` says; every
/// tile it takes is freed.
pub(crate) fn attention_into(
    kb: &mut KernelBuilder,
    tensors: &AttentionTensors,
    shape: &AttentionShape,
    dtype: DType,
) -> Result<(), KernelError> {
    check_attention(shape, dtype)?;
    let chip = kb.chip().clone();
    let AttentionShape { batch, heads, kv_heads, seq, head_dim: d, causal } = *shape;
    let nh = batch * heads;
    let scale = 1.0 / (d as f32).sqrt();
    let group = heads / kv_heads;
    // Every (head, query block, key block) step in order. Query blocks go in groups of
    // `GROUP` whose key steps are interleaved round-robin: each block's online softmax is a
    // serial, latency-bound chain, and interleaving gives the engines independent chains to
    // overlap; the blocks of a group share the K/V block of each round.
    let mut steps = Vec::new();
    let mut kv_blocks: Vec<KvBlock> = Vec::new();
    let q_blocks: Vec<(u64, u64)> =
        (0..nh).flat_map(|h| (0..seq).step_by(QT as usize).map(move |q0| (h, q0))).collect();
    for group in q_blocks.chunks(GROUP) {
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
                        kv: 0,
                    })
                    .collect()
            })
            .collect();
        let rounds = per_block.iter().map(Vec::len).max().unwrap_or(0);
        for r in 0..rounds {
            // One K/V block per (head, round): a group may span two heads.
            let mut round: Vec<Step> = per_block.iter().filter_map(|b| b.get(r).copied()).collect();
            let base = kv_blocks.len();
            for st in &mut round {
                let found = kv_blocks[base..].iter().position(|b| b.h == st.h && b.k0 == st.k0);
                let at = found.map_or_else(
                    || {
                        kv_blocks.push(KvBlock {
                            h: st.h,
                            k0: st.k0,
                            ksz: 0,
                            k_left: 0,
                            v_left: 0,
                        });
                        kv_blocks.len() - 1
                    },
                    |i| base + i,
                );
                let kvb = &mut kv_blocks[at];
                kvb.ksz = kvb.ksz.max(st.ksz);
                kvb.k_left += 1;
                kvb.v_left += 1;
                st.kv = at;
            }
            steps.extend(round);
        }
    }
    let mask = if causal { Some(causal_mask(kb)?) } else { None };
    // Part of pᵀ by the DMA engines' hardware transpose where there is one (v3+, NKI's
    // `dma_transpose`), taking it off TensorE and out of PSUM.
    let dma_transposes = chip.core.has_dma_transpose();
    let fast_exp = chip.core.has_fast_exponential();
    let ctx = Ctx {
        tensors: *tensors,
        d,
        heads,
        kv_heads,
        group,
        dtype,
        scale,
        mask,
        dma_transposes,
        fast_exp,
    };
    let kv_tiles: Vec<Option<KvTiles>> = (0..kv_blocks.len()).map(|_| None).collect();
    // Query-block states by (head, q0). Each step goes through three phases emitted in a
    // software pipeline: scores (QKᵀ), then LOOKAHEAD steps later its softmax statistics and
    // exp, then one step later its PV and accumulation; so each engine's in-order queue holds
    // independent work from different steps instead of one step's dependency chain.
    let mut pipe = Pipeline {
        blocks: Vec::new(),
        scored: VecDeque::new(),
        exped: VecDeque::new(),
        transposed: VecDeque::new(),
        multiplied: VecDeque::new(),
        kv_tiles,
        kv_blocks,
    };
    for step in &steps {
        if step.first {
            let b = start_block(kb, &ctx, step)?;
            pipe.blocks.push(((step.h, step.q0), b));
        }
        if pipe.kv_tiles[step.kv].is_none() {
            let tiles = load_kv(kb, &ctx, step.h, &pipe.kv_blocks[step.kv])?;
            pipe.kv_tiles[step.kv] = Some(tiles);
        }
        let q_t = pipe.block(step)?.q_t.clone();
        let k_t =
            pipe.kv_tiles[step.kv].as_ref().map(|t| t.k_t.clone()).ok_or_else(pipeline_error)?;
        let scores = issue_scores(kb, &ctx, step, &q_t, &k_t)?;
        let kvb = &mut pipe.kv_blocks[step.kv];
        kvb.k_left -= 1;
        if kvb.k_left == 0 {
            kb.free(&k_t)?;
        }
        pipe.scored.push_back((*step, scores));
        pipe.advance(kb, &ctx)?;
    }
    pipe.drain(kb, &ctx)?;
    if let Some(m) = &ctx.mask {
        kb.free(&m.identity)?;
        kb.free(&m.mask)?;
    }
    Ok(())
}

fn pipeline_error() -> KernelError {
    KernelError::Shape { what: "attention".into(), detail: "pipeline state".into() }
}

/// One K/V block: keys `k0..k0 + ksz` of head `h`'s K/V head, with the steps still to read
/// its K and its V.
#[derive(Debug, Clone, Copy)]
struct KvBlock {
    h: u64,
    k0: u64,
    ksz: u64,
    k_left: u64,
    v_left: u64,
}

/// A loaded K/V block.
#[derive(Debug)]
struct KvTiles {
    k_t: Tile,
    v_t: Tile,
}

/// The causal mask, added to a diagonal block's scores by a TensorE matmul accumulating into
/// their PSUM bank (`s += Iᵀ · mask`, exact in fp32): an identity and a `[128, 128]` tile of 0
/// where key j <= query i and -inf (`MASKED`) above the diagonal.
#[derive(Debug)]
struct CausalMask {
    identity: Tile,
    mask: Tile,
}

fn causal_mask(kb: &mut KernelBuilder) -> Result<CausalMask, KernelError> {
    let select =
        |kb: &mut KernelBuilder, t: &Tile, base: i32, channel: i32, step: i32, off: f32| {
            let affine = Affine { base, channel_multiplier: channel, steps: vec![step] };
            kb.push(
                Engine::GpSimd,
                Op::AffineSelect {
                    dst: t.clone(),
                    src: t.clone(),
                    affine,
                    cmp: AluOp::Ge,
                    on_false: off,
                },
            );
        };
    let mask = kb.sbuf(QT as u32, DType::F32, &[QT])?;
    kb.push(Engine::GpSimd, Op::Memset { dst: mask.clone(), value: 0.0 });
    select(kb, &mask, 0, 1, -1, MASKED);
    // Ones where i - j >= 0 and j - i >= 0.
    let identity = kb.sbuf(QT as u32, DType::F32, &[QT])?;
    kb.push(Engine::GpSimd, Op::Memset { dst: identity.clone(), value: 1.0 });
    select(kb, &identity, 0, 1, -1, 0.0);
    select(kb, &identity, 0, -1, 1, 0.0);
    Ok(CausalMask { identity, mask })
}

/// Loads K `[d, ksz]` (rows of `ksz` contiguous keys) and V `[128 keys, chunk, d]`.
fn load_kv(kb: &mut KernelBuilder, c: &Ctx, h: u64, b: &KvBlock) -> Result<KvTiles, KernelError> {
    let (d, hk) = (c.d, c.kv_head(h));
    let ((k, kl), (v, vl)) = (c.tensors.k, c.tensors.v);
    let chunks = b.ksz / CHUNK;
    let k_t = kb.sbuf(d as u32, c.dtype, &[b.ksz])?;
    let src = HbmAccess {
        tensor: k,
        offset: kl.at(hk, 0) + b.k0,
        dims: vec![Dim { stride: kl.row_stride as i64, size: d }, Dim { stride: 1, size: b.ksz }],
    };
    kb.dma(DmaOperand::Tile(k_t.clone()), DmaOperand::Hbm(src));
    let v_t = kb.sbuf(CHUNK as u32, c.dtype, &[chunks, d])?;
    let src = HbmAccess {
        tensor: v,
        offset: vl.at(hk, b.k0),
        dims: vec![
            Dim { stride: vl.row_stride as i64, size: CHUNK },
            Dim { stride: (CHUNK * vl.row_stride) as i64, size: chunks },
            Dim { stride: 1, size: d },
        ],
    };
    kb.dma(DmaOperand::Tile(v_t.clone()), DmaOperand::Hbm(src));
    Ok(KvTiles { k_t, v_t })
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
    /// Its K/V block.
    kv: usize,
}

/// What every step needs to know.
#[derive(Debug)]
struct Ctx {
    tensors: AttentionTensors,
    d: u64,
    heads: u64,
    kv_heads: u64,
    group: u64,
    dtype: DType,
    scale: f32,
    /// The causal mask (causal heads only).
    mask: Option<CausalMask>,
    /// pᵀ by `dma_transpose` (else on TensorE through PSUM).
    dma_transposes: bool,
    /// The exp on VectorE's fast exponential (NeuronCore-v4) instead of ScalarE.
    fast_exp: bool,
}

impl Ctx {
    fn kv_head(&self, h: u64) -> u64 {
        (h / self.heads) * self.kv_heads + (h % self.heads) / self.group
    }
}

/// The running state of one query block; `None` before its first key step sets it (the
/// first step writes its statistics and output directly instead of updating initial values).
#[derive(Debug)]
struct QBlock {
    q_t: Tile,
    /// The running row max as the exp takes it: `-scale · m` (ScalarE's bias), or `scale · m`
    /// with the fast exponential.
    m: Option<Tile>,
    l: Option<Tile>,
    acc: Option<Tile>,
}

/// A step's scores (PSUM), issued ahead of its softmax.
#[derive(Debug)]
struct Scores {
    s_ps: Tile,
}

fn start_block(kb: &mut KernelBuilder, c: &Ctx, st: &Step) -> Result<QBlock, KernelError> {
    let q_t = kb.sbuf(c.d as u32, c.dtype, &[QT])?;
    let src = HbmAccess {
        tensor: c.tensors.q.0,
        offset: c.tensors.q.1.at(st.h, 0) + st.q0,
        dims: vec![
            Dim { stride: c.tensors.q.1.row_stride as i64, size: c.d },
            Dim { stride: 1, size: QT },
        ],
    };
    kb.dma(DmaOperand::Tile(q_t.clone()), DmaOperand::Hbm(src));
    Ok(QBlock { q_t, m: None, l: None, acc: None })
}

fn issue_scores(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    q_t: &Tile,
    k_t: &Tile,
) -> Result<Scores, KernelError> {
    // s = qᵀ k  [128 queries, ksz keys], one matmul per 512-key PSUM bank.
    let s_ps = kb.psum(QT as u32, DType::F32, &[st.ksz])?;
    for c0 in (0..st.ksz).step_by(512) {
        let w = 512.min(st.ksz - c0);
        kb.matmul(&columns(&s_ps, c0, w), q_t, &columns(k_t, c0, w), false);
    }
    if let Some(m) = c.mask.as_ref().filter(|_| st.k0 + st.ksz > st.q0) {
        // The diagonal chunk: keys q0..q0 + 128 are the step's last 128 (ksz ends there).
        kb.matmul(&columns(&s_ps, st.ksz - QT, QT), &m.identity, &m.mask, true);
    }
    Ok(Scores { s_ps })
}

/// Steps between phases, and the state of every query block in flight.
#[derive(Debug)]
struct Pipeline {
    blocks: Vec<((u64, u64), QBlock)>,
    /// Steps whose scores are issued, oldest first.
    scored: VecDeque<(Step, Scores)>,
    /// Steps whose probabilities are computed, oldest first.
    exped: VecDeque<(Step, Probs)>,
    /// Steps whose pᵀ is in SBUF, awaiting `p·v`, oldest first.
    transposed: VecDeque<(Step, Transposed)>,
    /// Steps whose `p·v` is issued, awaiting the accumulator update, oldest first.
    multiplied: VecDeque<(Step, Product)>,
    /// Loaded K/V blocks (None: not loaded yet or freed) and their readers.
    kv_tiles: Vec<Option<KvTiles>>,
    kv_blocks: Vec<KvBlock>,
}

impl Pipeline {
    fn position(&self, st: &Step) -> Result<usize, KernelError> {
        self.blocks.iter().position(|(key, _)| *key == (st.h, st.q0)).ok_or_else(pipeline_error)
    }

    fn block(&self, st: &Step) -> Result<&QBlock, KernelError> {
        Ok(&self.blocks[self.position(st)?].1)
    }

    /// Once more than `lookahead` steps have scores: the oldest gets its softmax (phase 2),
    /// the step before it its pᵀ (phase 3), the one before that its `p·v` (phase 4) and the
    /// one before that its accumulator update (phase 5), so each engine's in-order queue
    /// interleaves independent work of different steps instead of waiting on one step's
    /// chain.
    fn advance(&mut self, kb: &mut KernelBuilder, c: &Ctx) -> Result<(), KernelError> {
        while self.scored.len() > LOOKAHEAD {
            self.phase2(kb, c)?;
            while self.exped.len() > 1 {
                self.phase3(kb, c)?;
            }
            // Steps whose pᵀ is issued before the oldest one's `p·v` is.
            let pv_lag = if c.dma_transposes { DMA_PV_LAG } else { 1 };
            while self.transposed.len() > pv_lag {
                self.phase4(kb, c)?;
            }
            while self.multiplied.len() > 1 {
                self.phase5(kb, c)?;
            }
        }
        Ok(())
    }

    /// Runs every phase of every step still in flight.
    fn drain(&mut self, kb: &mut KernelBuilder, c: &Ctx) -> Result<(), KernelError> {
        while !(self.scored.is_empty()
            && self.exped.is_empty()
            && self.transposed.is_empty()
            && self.multiplied.is_empty())
        {
            self.phase2(kb, c)?;
            self.phase3(kb, c)?;
            self.phase4(kb, c)?;
            self.phase5(kb, c)?;
        }
        Ok(())
    }

    fn phase2(&mut self, kb: &mut KernelBuilder, c: &Ctx) -> Result<(), KernelError> {
        if let Some((st, sc)) = self.scored.pop_front() {
            let at = self.position(&st)?;
            let pr = softmax_stats(kb, c, &st, sc, &mut self.blocks[at].1)?;
            self.exped.push_back((st, pr));
        }
        Ok(())
    }

    fn phase3(&mut self, kb: &mut KernelBuilder, c: &Ctx) -> Result<(), KernelError> {
        if let Some((st, pr)) = self.exped.pop_front() {
            let t = transpose_p(kb, c, &st, pr)?;
            self.transposed.push_back((st, t));
        }
        Ok(())
    }

    fn phase4(&mut self, kb: &mut KernelBuilder, c: &Ctx) -> Result<(), KernelError> {
        let Some((st, t)) = self.transposed.pop_front() else { return Ok(()) };
        let tiles = self.kv_tiles[st.kv].as_ref();
        let v_t = tiles.map(|t| t.v_t.clone()).ok_or_else(pipeline_error)?;
        let product = multiply_v(kb, c, &st, t, &v_t)?;
        let kvb = &mut self.kv_blocks[st.kv];
        kvb.v_left -= 1;
        if kvb.v_left == 0 {
            kb.free(&v_t)?;
            self.kv_tiles[st.kv] = None;
        }
        self.multiplied.push_back((st, product));
        Ok(())
    }

    fn phase5(&mut self, kb: &mut KernelBuilder, c: &Ctx) -> Result<(), KernelError> {
        let Some((st, product)) = self.multiplied.pop_front() else { return Ok(()) };
        let at = self.position(&st)?;
        update_acc(kb, product, &mut self.blocks[at].1)?;
        if st.last {
            let (_, b) = self.blocks.remove(at);
            finish_block(kb, c, &st, b)?;
        }
        Ok(())
    }
}

/// A step's probabilities and its correction factor, between the two phases.
#[derive(Debug)]
struct Probs {
    p: Tile,
    /// None on a query block's first step.
    corr: Option<Tile>,
}

/// Phase 2: the row max, `p = exp(scale·(s - m_new))` with its row sum, `corr`, and `l`.
///
/// VectorE copies the scores out of PSUM (fp32, exact) in the same pass that takes their row
/// max, so the PSUM banks are free for the next step's QKᵀ as soon as VectorE has read them,
/// and the exp reads SBUF: on ScalarE, or on NeuronCore-v4 by VectorE's fast exponential.
fn softmax_stats(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    sc: Scores,
    b: &mut QBlock,
) -> Result<Probs, KernelError> {
    let Scores { s_ps } = sc;
    let m_blk = kb.sbuf(QT as u32, DType::F32, &[1])?;
    let s = kb.sbuf(QT as u32, DType::F32, &[st.ksz])?;
    // The fast exponential subtracts its max unscaled, so its path scales the copy instead.
    let copy_scale = if c.fast_exp { c.scale } else { 1.0 };
    kb.push(
        Engine::Vector,
        Op::TensorScalarReduce {
            dst: s.clone(),
            src: s_ps.clone(),
            op0: AluOp::Multiply,
            operand0: ScalarOperand::Imm(copy_scale),
            reverse0: false,
            reduce_op: ReduceOp::Max,
            reduce: m_blk.clone(),
        },
    );
    kb.free(&s_ps)?;
    let old = b.m.take();
    let exp = if c.fast_exp {
        fast_exp(kb, c, st, s, m_blk, old)?
    } else {
        scalar_exp(kb, c, st, s, m_blk, old)?
    };
    let Exped { p, l_blk, corr, state } = exp;
    b.m = Some(state);
    // l = l·corr + l_blk on the otherwise idle GpSimd engine (off the critical path); the
    // first step's l_blk is l.
    match (&b.l, &corr) {
        (Some(l), Some(corr)) => {
            kb.tensor_tensor(Engine::GpSimd, l, l, corr, AluOp::Multiply);
            kb.tensor_tensor(Engine::GpSimd, l, l, &l_blk, AluOp::Add);
            kb.free(&l_blk)?;
        }
        _ => b.l = Some(l_blk),
    }
    Ok(Probs { p, corr })
}

/// A step's probabilities, their row sum, the correction of the running sums (`None` on the
/// first step) and the new running-max state.
struct Exped {
    p: Tile,
    l_blk: Tile,
    corr: Option<Tile>,
    state: Tile,
}

/// ScalarE's exp of SBUF scores `s`: state `neg = -scale · m`, updated as
/// `min(neg_m, -scale · m_blk)` in one instruction; `corr = exp(neg - neg_m)`. Tiles are
/// allocated in this order on purpose: the next-fit reuse it gives is the measured one.
fn scalar_exp(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    s: Tile,
    m_blk: Tile,
    old: Option<Tile>,
) -> Result<Exped, KernelError> {
    let neg = kb.sbuf(QT as u32, DType::F32, &[1])?;
    let mut stages = vec![(AluOp::Multiply, ScalarOperand::Imm(-c.scale))];
    if let Some(old) = &old {
        stages.push((AluOp::Min, ScalarOperand::Vector(old.clone())));
    }
    kb.tensor_scalar(Engine::Vector, &neg, &m_blk, &stages);
    kb.free(&m_blk)?;
    let p = kb.sbuf(QT as u32, c.dtype, &[st.ksz])?;
    let l_blk = kb.sbuf(QT as u32, DType::F32, &[1])?;
    kb.activation(&p, &s, ActFunc::Exp, ScalarOperand::Imm(c.scale), Some(&neg), Some(&l_blk));
    kb.free(&s)?;
    let corr = match old {
        Some(old) => {
            let corr = kb.sbuf(QT as u32, DType::F32, &[1])?;
            let bias = Some(&neg);
            kb.activation(&corr, &old, ActFunc::Exp, ScalarOperand::Imm(-1.0), bias, None);
            kb.free(&old)?;
            Some(corr)
        }
        None => None,
    };
    Ok(Exped { p, l_blk, corr, state: neg })
}

/// VectorE's fast exponential (NeuronCore-v4) of scaled SBUF scores `s' = scale · s`: state
/// `m = max(m_old, m_blk)`, `p = exp(s' - m)`, `corr = exp(m_old - m)`.
fn fast_exp(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    s: Tile,
    m_blk: Tile,
    old: Option<Tile>,
) -> Result<Exped, KernelError> {
    let m = match &old {
        Some(old) => {
            let m = kb.sbuf(QT as u32, DType::F32, &[1])?;
            kb.tensor_tensor(Engine::Vector, &m, &m_blk, old, AluOp::Max);
            kb.free(&m_blk)?;
            m
        }
        None => m_blk,
    };
    let p = kb.sbuf(QT as u32, c.dtype, &[st.ksz])?;
    let l_blk = kb.sbuf(QT as u32, DType::F32, &[1])?;
    let exp = |kb: &mut KernelBuilder, dst: &Tile, src: &Tile, sum: Option<&Tile>| {
        let reduce_cmd = if sum.is_some() { ReduceCmd::ResetReduce } else { ReduceCmd::Idle };
        kb.push(
            Engine::Vector,
            Op::Exponential {
                dst: dst.clone(),
                src: src.clone(),
                max: ScalarOperand::Vector(m.clone()),
                reduce_cmd,
                init: None,
                reduce: sum.cloned(),
            },
        );
    };
    exp(kb, &p, &s, Some(&l_blk));
    kb.free(&s)?;
    let corr = match old {
        Some(old) => {
            let corr = kb.sbuf(QT as u32, DType::F32, &[1])?;
            exp(kb, &corr, &old, None);
            kb.free(&old)?;
            Some(corr)
        }
        None => None,
    };
    Ok(Exped { p, l_blk, corr, state: m })
}

/// A step's `p·v` (PSUM) and its correction factor, awaiting the accumulator update.
#[derive(Debug)]
struct Product {
    o_ps: Tile,
    corr: Option<Tile>,
}

/// A step's pᵀ in SBUF and its correction factor, awaiting `p·v`.
#[derive(Debug)]
struct Transposed {
    pt: Tile,
    corr: Option<Tile>,
}

/// Phase 3: pᵀ, the 128 x 128 chunks transposed into one PSUM bank (in p's dtype: a transpose
/// is exact) on TensorE, evacuated to SBUF by VectorE and ScalarE.
fn transpose_p(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    pr: Probs,
) -> Result<Transposed, KernelError> {
    let all = st.ksz / CHUNK;
    let Probs { p, corr } = pr;
    let pt = kb.sbuf(CHUNK as u32, c.dtype, &[all * QT])?;
    let by_dma = if c.dma_transposes { DMA_TRANSPOSE_CHUNKS.min(all) } else { 0 };
    let chunks = all - by_dma;
    // The last chunks by DMA straight into SBUF, triggered from TensorE (in order behind the
    // exp they wait for, ahead of the PV that reads them).
    for j in chunks..all {
        let (dst, src) = (columns(&pt, j * QT, QT), columns(&p, j * CHUNK, CHUNK));
        kb.dma_transpose_from(Engine::Tensor, &dst, &src);
    }
    if chunks == 0 {
        kb.free(&p)?;
        return Ok(Transposed { pt, corr });
    }
    let pt_ps = kb.psum(CHUNK as u32, c.dtype, &[chunks * QT])?;
    for j in 0..chunks {
        kb.push(
            Engine::Tensor,
            Op::Transpose { dst: columns(&pt_ps, j * QT, QT), src: columns(&p, j * CHUNK, CHUNK) },
        );
    }
    // ScalarE evacuates: VectorE carries the row max (splitting the copy between the two, or
    // giving it to VectorE, measured slower at seq 4096 causal on trn2 and trn3).
    let w = chunks * QT;
    let dst = columns(&pt, 0, w);
    if kb.chip().core.scalar_has_tensor_copy() {
        kb.copy(Engine::Scalar, &dst, &pt_ps);
    } else {
        kb.activation(&dst, &pt_ps, ActFunc::Identity, ScalarOperand::Imm(1.0), None, None);
    }
    kb.free(&pt_ps)?;
    kb.free(&p)?;
    Ok(Transposed { pt, corr })
}

/// Phase 4: `p · v`, contracting over keys, into one PSUM bank.
fn multiply_v(
    kb: &mut KernelBuilder,
    c: &Ctx,
    st: &Step,
    t: Transposed,
    v_t: &Tile,
) -> Result<Product, KernelError> {
    let (d, chunks) = (c.d, st.ksz / CHUNK);
    let Transposed { pt, corr } = t;
    let o_ps = kb.psum(QT as u32, DType::F32, &[d])?;
    for j in 0..chunks {
        kb.matmul(&o_ps, &columns(&pt, j * QT, QT), &columns(v_t, j * d, d), j > 0);
    }
    kb.free(&pt)?;
    Ok(Product { o_ps, corr })
}

/// Phase 5: `acc = acc · corr + o_ps` in one instruction, or `acc = o_ps` on the first step.
fn update_acc(kb: &mut KernelBuilder, product: Product, b: &mut QBlock) -> Result<(), KernelError> {
    let Product { o_ps, corr } = product;
    match (&b.acc, corr) {
        (Some(acc), Some(corr)) => {
            kb.push(
                Engine::Vector,
                Op::ScalarTensorTensor {
                    dst: acc.clone(),
                    src: acc.clone(),
                    operand0: ScalarOperand::Vector(corr.clone()),
                    in1: o_ps.clone(),
                    op0: AluOp::Multiply,
                    op1: AluOp::Add,
                    reverse0: false,
                    reverse1: false,
                },
            );
            kb.free(&corr)?;
        }
        (None, None) => {
            let acc = kb.sbuf(QT as u32, DType::F32, &[o_ps.free_len()])?;
            kb.copy(Engine::Vector, &acc, &o_ps);
            b.acc = Some(acc);
        }
        _ => return Err(pipeline_error()),
    }
    kb.free(&o_ps)?;
    Ok(())
}

fn finish_block(kb: &mut KernelBuilder, c: &Ctx, st: &Step, b: QBlock) -> Result<(), KernelError> {
    let (Some(acc), Some(l), Some(m)) = (b.acc, b.l, b.m) else {
        return Err(pipeline_error());
    };
    let out = kb.sbuf(QT as u32, c.dtype, &[c.d])?;
    kb.tensor_scalar(
        Engine::GpSimd,
        &out,
        &acc,
        &[(AluOp::Divide, ScalarOperand::Vector(l.clone()))],
    );
    let dst = HbmAccess {
        tensor: c.tensors.o.0,
        offset: c.tensors.o.1.at(st.h, st.q0),
        dims: vec![
            Dim { stride: c.tensors.o.1.row_stride as i64, size: QT },
            Dim { stride: 1, size: c.d },
        ],
    };
    kb.dma(DmaOperand::Hbm(dst), DmaOperand::Tile(out.clone()));
    for t in [&out, &acc, &l, &m, &b.q_t] {
        kb.free(t)?;
    }
    Ok(())
}
