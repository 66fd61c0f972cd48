//! Row-wise kernels over `x: [rows, cols]`: rows on partitions (blocks of 128), a whole row in
//! the free dimension, loads on the Sync queue, stores on the GpSimd queue, the passes over
//! each row spread over the Scalar engine (functions with fused row sums), the Vector engine
//! and GpSimd so that none of them outruns the DMA.
//!
//! Rows longer than [`ROW_CHUNK_BYTES`] per partition go in column chunks: elementwise kernels treat each
//! chunk on its own; the normalizations make a statistics pass over the chunks (row sums, or
//! softmax's online max and sum), then a pass that reloads each chunk and writes its output.

use rainier_arch::ChipParams;
use rainier_isa::{
    ActFunc, AluOp, DmaOperand, Engine, HbmAccess, Op, Program, ReduceOp, ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

pub(crate) const PT: u64 = 128;

/// `eps` of [`rmsnorm`] (Llama's `rms_norm_eps`).
pub const RMSNORM_EPS: f32 = 1e-6;

/// Bytes per partition of one column chunk of a long row (8192 bf16 or 4096 fp32 columns).
pub const ROW_CHUNK_BYTES: u64 = 16 * 1024;

/// Whether rows of `cols` elements of `dtype` go in column chunks.
pub(crate) fn chunked(cols: u64, dtype: DType) -> bool {
    cols * dtype.size_bytes() as u64 > ROW_CHUNK_BYTES
}

/// The column chunks of a row: equal widths (the last one up to a few columns narrower), so
/// freed chunk tiles fit the next ones and SBUF does not fragment.
fn column_chunks(cols: u64, dtype: DType) -> Vec<(u64, u64)> {
    let most = (ROW_CHUNK_BYTES / dtype.size_bytes() as u64).max(1);
    let width = cols.div_ceil(cols.div_ceil(most));
    blocks(cols, width).collect()
}

pub(crate) fn check_shape(kernel: &str, rows: u64, cols: u64) -> Result<(), KernelError> {
    if rows == 0 || cols == 0 || rows > 1 << 24 || cols > 1 << 24 {
        return Err(KernelError::Shape {
            what: kernel.into(),
            detail: format!("rows={rows}, cols={cols} (1 <= rows, cols <= 16777216)"),
        });
    }
    // About 12 instructions per (row block, column chunk of at least 4096 columns).
    if u128::from(rows.div_ceil(PT)) * u128::from(cols.div_ceil(4096)) * 12
        > crate::MAX_INSTRUCTIONS as u128
    {
        return Err(KernelError::TooLarge { limit: crate::MAX_INSTRUCTIONS });
    }
    Ok(())
}

pub(crate) fn blocks(len: u64, tile: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..len.div_ceil(tile)).map(move |i| (i * tile, tile.min(len - i * tile)))
}

/// A per-partition `[p, 1]` fp32 constant.
pub(crate) fn constant(kb: &mut KernelBuilder, value: f32) -> Result<Tile, KernelError> {
    let t = kb.sbuf(PT as u32, DType::F32, &[1])?;
    kb.push(Engine::Vector, Op::Memset { dst: t.clone(), value });
    Ok(t)
}

pub(crate) fn rows_of(t: &Tile, p: u64) -> Tile {
    Tile { partitions: p as u32, ..t.clone() }
}

/// Row blocks ahead of the one being computed whose loads are already queued.
const PREFETCH: usize = 2;

/// Streams `x` through `compute` one block of up to 128 rows at a time and stores each result
/// in `y`. All DMAs go on the Sync queue, each block's store after the load `PREFETCH` blocks
/// ahead, so a store waiting for its results never holds up the loads that keep the engines
/// fed.
fn pipelined(
    kb: &mut KernelBuilder,
    rows: u64,
    inputs: &[usize],
    cols: u64,
    dtype: DType,
    y: usize,
    mut compute: impl FnMut(&mut KernelBuilder, &[Tile], u64) -> Result<Tile, KernelError>,
) -> Result<(), KernelError> {
    let inputs: Vec<(usize, u64)> = inputs.iter().map(|&x| (x, 0)).collect();
    pipelined_multi(kb, rows, &inputs, cols, dtype, &[(y, 0)], |kb, t, p| {
        Ok(vec![compute(kb, t, p)?])
    })
}

/// Columns `c0..c0 + width` of rows `r0..r0 + p` of a row-major `[.., cols]` tensor.
fn window(
    tensor: usize,
    base: u64,
    r0: u64,
    p: u64,
    cols: u64,
    (c0, width): (u64, u64),
) -> HbmAccess {
    HbmAccess {
        tensor,
        offset: base + r0 * cols + c0,
        dims: vec![
            rainier_isa::Dim { stride: cols as i64, size: p },
            rainier_isa::Dim { stride: 1, size: width },
        ],
    }
}

/// Columns `c0..c0 + width` of a `[cols]` vector on every one of 128 partitions.
pub(crate) fn broadcast(
    kb: &mut KernelBuilder,
    tensor: usize,
    dtype: DType,
    (c0, width): (u64, u64),
) -> Result<Tile, KernelError> {
    let t = kb.sbuf(PT as u32, dtype, &[width])?;
    let src = HbmAccess {
        tensor,
        offset: c0,
        dims: vec![
            rainier_isa::Dim { stride: 0, size: PT },
            rainier_isa::Dim { stride: 1, size: width },
        ],
    };
    kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(src));
    Ok(t)
}

/// [`pipelined`] with several outputs (`compute` returns one tile per tensor in `outputs`),
/// over the rows of `cols` elements that start `base` elements into each `(tensor, base)`.
pub(crate) fn pipelined_multi(
    kb: &mut KernelBuilder,
    rows: u64,
    inputs: &[(usize, u64)],
    cols: u64,
    dtype: DType,
    outputs: &[(usize, u64)],
    mut compute: impl FnMut(&mut KernelBuilder, &[Tile], u64) -> Result<Vec<Tile>, KernelError>,
) -> Result<(), KernelError> {
    // Row blocks, each in column chunks when rows are long (elementwise kernels only:
    // `compute` sees a chunk as a row).
    let chunks = column_chunks(cols, dtype);
    let all: Vec<(u64, u64, (u64, u64))> =
        blocks(rows, PT).flat_map(|(r0, p)| chunks.iter().map(move |&c| (r0, p, c))).collect();
    let mut loaded = std::collections::VecDeque::new();
    let load = |kb: &mut KernelBuilder,
                (r0, p, c): (u64, u64, (u64, u64))|
     -> Result<Vec<Tile>, KernelError> {
        let mut tiles = Vec::with_capacity(inputs.len());
        for &(x, base) in inputs {
            let t = kb.sbuf(p as u32, dtype, &[c.1])?;
            kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(window(x, base, r0, p, cols, c)));
            tiles.push(t);
        }
        Ok(tiles)
    };
    for &b in all.iter().take(PREFETCH) {
        loaded.push_back(load(kb, b)?);
    }
    for (i, &(r0, p, c)) in all.iter().enumerate() {
        let tiles = loaded.pop_front().ok_or_else(|| KernelError::Shape {
            what: "pipeline".into(),
            detail: "no block loaded".into(),
        })?;
        let results = compute(kb, &tiles, p)?;
        for t in &tiles {
            kb.free(t)?;
        }
        if let Some(&next) = all.get(i + PREFETCH) {
            loaded.push_back(load(kb, next)?);
        }
        for (&(y, base), y_t) in outputs.iter().zip(&results) {
            kb.dma(DmaOperand::Hbm(window(y, base, r0, p, cols, c)), DmaOperand::Tile(y_t.clone()));
            kb.free(y_t)?;
        }
    }
    Ok(())
}

/// A long-row normalization: for each block of rows, `stats` sees every column chunk of `x`
/// (loaded in turn) and returns the running row statistics, `between` turns them into what
/// the output needs, then `apply` sees every chunk again and returns its output chunk, which
/// is stored to `y`.
#[allow(clippy::too_many_arguments)]
fn two_pass(
    kb: &mut KernelBuilder,
    rows: u64,
    cols: u64,
    x: usize,
    y: usize,
    dtype: DType,
    mut stats: impl FnMut(
        &mut KernelBuilder,
        &Tile,
        u64,
        Option<Vec<Tile>>,
    ) -> Result<Vec<Tile>, KernelError>,
    mut between: impl FnMut(&mut KernelBuilder, Vec<Tile>, u64) -> Result<Vec<Tile>, KernelError>,
    mut apply: impl FnMut(
        &mut KernelBuilder,
        &Tile,
        u64,
        (u64, u64),
        &[Tile],
    ) -> Result<Tile, KernelError>,
) -> Result<(), KernelError> {
    let chunks = column_chunks(cols, dtype);
    for (r0, p) in blocks(rows, PT) {
        let mut acc: Option<Vec<Tile>> = None;
        for &c in &chunks {
            let t = kb.sbuf(p as u32, dtype, &[c.1])?;
            kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(window(x, 0, r0, p, cols, c)));
            acc = Some(stats(kb, &t, p, acc)?);
            kb.free(&t)?;
        }
        let acc = between(kb, acc.unwrap_or_default(), p)?;
        for &c in &chunks {
            let t = kb.sbuf(p as u32, dtype, &[c.1])?;
            kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(window(x, 0, r0, p, cols, c)));
            let y_t = apply(kb, &t, p, c, &acc)?;
            kb.free(&t)?;
            kb.dma_from(
                Engine::GpSimd,
                DmaOperand::Hbm(window(y, 0, r0, p, cols, c)),
                DmaOperand::Tile(y_t.clone()),
            );
            kb.free(&y_t)?;
        }
        for t in &acc {
            kb.free(t)?;
        }
    }
    Ok(())
}

/// `acc += part` (fp32 `[p, 1]`), or `part` itself for the first chunk.
fn accumulate(kb: &mut KernelBuilder, acc: Option<&Tile>, part: Tile) -> Result<Tile, KernelError> {
    match acc {
        None => Ok(part),
        Some(a) => {
            kb.tensor_tensor(Engine::Vector, a, a, &part, AluOp::Add);
            kb.free(&part)?;
            Ok(a.clone())
        }
    }
}

/// Per-row `[p, 1]` statistic tile (fp32).
pub(crate) fn stat(kb: &mut KernelBuilder, p: u64) -> Result<Tile, KernelError> {
    kb.sbuf(p as u32, DType::F32, &[1])
}

/// `Σ f(x + bias)` per row on ScalarE (the function's output is discarded).
pub(crate) fn row_sum(
    kb: &mut KernelBuilder,
    x_t: &Tile,
    func: ActFunc,
    bias: Option<&Tile>,
    p: u64,
) -> Result<Tile, KernelError> {
    let junk = kb.sbuf(p as u32, x_t.dtype, &[x_t.free_len()])?;
    let sum = stat(kb, p)?;
    kb.activation(&junk, x_t, func, ScalarOperand::Imm(1.0), bias, Some(&sum));
    kb.free(&junk)?;
    Ok(sum)
}

/// `1 / sqrt(sum_sq · inv + eps)` per row; frees `sum_sq`.
pub(crate) fn rstd_of(
    kb: &mut KernelBuilder,
    sum_sq: Tile,
    inv: f32,
    eps: &Tile,
    p: u64,
) -> Result<Tile, KernelError> {
    let rstd = stat(kb, p)?;
    let scale = ScalarOperand::Imm(inv);
    kb.activation(&rstd, &sum_sq, ActFunc::Rsqrt, scale, Some(&rows_of(eps, p)), None);
    kb.free(&sum_sq)?;
    Ok(rstd)
}

/// `(x · rstd) · w` (rmsnorm's output): the scaling on GpSimd, the weight on VectorE.
fn rms_output(
    kb: &mut KernelBuilder,
    x_t: &Tile,
    rstd: &Tile,
    w_t: &Tile,
    p: u64,
) -> Result<Tile, KernelError> {
    let width = x_t.free_len();
    let xs = kb.sbuf(p as u32, x_t.dtype, &[width])?;
    kb.tensor_scalar(
        Engine::GpSimd,
        &xs,
        x_t,
        &[(AluOp::Multiply, ScalarOperand::Vector(rstd.clone()))],
    );
    let y_t = kb.sbuf(p as u32, x_t.dtype, &[width])?;
    kb.tensor_tensor(Engine::Vector, &y_t, &xs, &rows_of(w_t, p), AluOp::Multiply);
    kb.free(&xs)?;
    Ok(y_t)
}

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · w`, with `x`, `w: [cols]` and `y` in `dtype`.
pub fn rmsnorm(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("rmsnorm", rows, cols)?;
    let mut kb = KernelBuilder::new(&chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let w = kb.input("w", dtype, &[cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    rmsnorm_into(&mut kb, RowTensors { x, w, y }, rows, cols, dtype)?;
    kb.finish()
}

/// The HBM tensors of a normalization: `x` and `y` `[rows, cols]`, `w` `[cols]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowTensors {
    pub x: usize,
    pub w: usize,
    pub y: usize,
}

/// Emits [`rmsnorm`] into `kb` on tensors declared there; every tile it takes is freed.
pub(crate) fn rmsnorm_into(
    kb: &mut KernelBuilder,
    RowTensors { x, w, y }: RowTensors,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    check_shape("rmsnorm", rows, cols)?;
    let eps = constant(kb, RMSNORM_EPS)?;
    let inv = 1.0 / cols as f32;
    if chunked(cols, dtype) {
        two_pass(
            kb,
            rows,
            cols,
            x,
            y,
            dtype,
            |kb, t, p, acc| {
                let part = row_sum(kb, t, ActFunc::Square, None, p)?;
                Ok(vec![accumulate(kb, acc.as_ref().map(|a| &a[0]), part)?])
            },
            |kb, mut acc, p| Ok(vec![rstd_of(kb, acc.remove(0), inv, &eps, p)?]),
            |kb, t, p, c, acc| {
                let w_t = broadcast(kb, w, dtype, c)?;
                let y_t = rms_output(kb, t, &acc[0], &w_t, p)?;
                kb.free(&w_t)?;
                Ok(y_t)
            },
        )?;
        return kb.free(&eps);
    }
    // w broadcast to every partition (stride-0 partition dim).
    let w_t = broadcast(kb, w, dtype, (0, cols))?;
    pipelined(kb, rows, &[x], cols, dtype, y, |kb, xs_in, p| {
        let ss = row_sum(kb, &xs_in[0], ActFunc::Square, None, p)?;
        let rstd = rstd_of(kb, ss, inv, &eps, p)?;
        let y_t = rms_output(kb, &xs_in[0], &rstd, &w_t, p)?;
        kb.free(&rstd)?;
        Ok(y_t)
    })?;
    kb.free(&w_t)?;
    kb.free(&eps)
}

/// `−max(x)` per row (VectorE).
fn neg_row_max(kb: &mut KernelBuilder, x_t: &Tile, p: u64) -> Result<Tile, KernelError> {
    let neg = stat(kb, p)?;
    let reduce = Op::TensorReduce {
        dst: neg.clone(),
        src: x_t.clone(),
        op: ReduceOp::Max,
        axes: 1,
        negate: true,
    };
    kb.push(Engine::Vector, reduce);
    Ok(neg)
}

/// `exp(x − max) / sum`: the exponent on ScalarE (with its row sum fused into `sum_into` when
/// given), the normalization on GpSimd, so VectorE (max), ScalarE and GpSimd share the passes.
fn softmax_output(
    kb: &mut KernelBuilder,
    x_t: &Tile,
    neg_max: &Tile,
    sum: &Tile,
    sum_into: bool,
    p: u64,
) -> Result<Tile, KernelError> {
    let width = x_t.free_len();
    let e = kb.sbuf(p as u32, x_t.dtype, &[width])?;
    let fused = sum_into.then_some(sum);
    kb.activation(&e, x_t, ActFunc::Exp, ScalarOperand::Imm(1.0), Some(neg_max), fused);
    let y_t = kb.sbuf(p as u32, x_t.dtype, &[width])?;
    kb.tensor_scalar(
        Engine::GpSimd,
        &y_t,
        &e,
        &[(AluOp::Divide, ScalarOperand::Vector(sum.clone()))],
    );
    kb.free(&e)?;
    Ok(y_t)
}

/// `y[r, :] = softmax(x[r, :])`, numerically stable (row max subtracted), in `dtype`.
pub fn softmax(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("softmax", rows, cols)?;
    let mut kb = KernelBuilder::new(&chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    if chunked(cols, dtype) {
        // Online: the running −max and the sum of exp(x − max), rescaled when the max grows.
        two_pass(
            &mut kb,
            rows,
            cols,
            x,
            y,
            dtype,
            |kb, t, p, acc| {
                let neg = neg_row_max(kb, t, p)?;
                let sum = match acc {
                    None => {
                        let sum = stat(kb, p)?;
                        kb.push(Engine::Vector, Op::Memset { dst: sum.clone(), value: 0.0 });
                        sum
                    }
                    Some(a) => {
                        // −max_new = min(−max_old, −max_chunk); sum ·= exp(−max_new + max_old).
                        let (old, sum) = (&a[0], &a[1]);
                        kb.tensor_tensor(Engine::Vector, &neg, &neg, old, AluOp::Min);
                        let diff = stat(kb, p)?;
                        kb.tensor_tensor(Engine::Vector, &diff, &neg, old, AluOp::Subtract);
                        kb.activation(
                            &diff,
                            &diff,
                            ActFunc::Exp,
                            ScalarOperand::Imm(1.0),
                            None,
                            None,
                        );
                        kb.tensor_tensor(Engine::Vector, sum, sum, &diff, AluOp::Multiply);
                        kb.free(&diff)?;
                        kb.free(old)?;
                        sum.clone()
                    }
                };
                let part = row_sum(kb, t, ActFunc::Exp, Some(&neg), p)?;
                kb.tensor_tensor(Engine::Vector, &sum, &sum, &part, AluOp::Add);
                kb.free(&part)?;
                Ok(vec![neg, sum])
            },
            |_, acc, _| Ok(acc),
            |kb, t, p, _, acc| softmax_output(kb, t, &acc[0], &acc[1], false, p),
        )?;
        return kb.finish();
    }
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, xs_in, p| {
        let neg = neg_row_max(kb, &xs_in[0], p)?;
        let sum = stat(kb, p)?;
        let y_t = softmax_output(kb, &xs_in[0], &neg, &sum, true, p)?;
        kb.free(&neg)?;
        kb.free(&sum)?;
        Ok(y_t)
    })?;
    kb.finish()
}

/// `y = gelu(x) = x · Φ(x)` (erf form), elementwise.
pub fn gelu(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("gelu", rows, cols)?;
    let mut kb = KernelBuilder::new(&chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, t, p| {
        let y_t = kb.sbuf(p as u32, dtype, &[t[0].free_len()])?;
        kb.activation(&y_t, &t[0], ActFunc::Gelu, ScalarOperand::Imm(1.0), None, None);
        Ok(y_t)
    })?;
    kb.finish()
}

/// `y = silu(gate) · up` (the SwiGLU MLP's elementwise part), elementwise.
pub fn swiglu(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("swiglu", rows, cols)?;
    let mut kb = KernelBuilder::new(&chip);
    let gate = kb.input("gate", dtype, &[rows, cols])?;
    let up = kb.input("up", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    elementwise_into(&mut kb, Elementwise::Swiglu, [gate, up, y], rows, cols, dtype)?;
    kb.finish()
}

/// A two-input elementwise kernel emitted by [`elementwise_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elementwise {
    /// [`swiglu`]: `silu(a) · b`.
    Swiglu,
    /// [`residual_add`]: `a + b`.
    Add,
}

/// Emits [`swiglu`] or [`residual_add`] into `kb` on `[a, b, y]` (`[rows, cols]` each).
pub(crate) fn elementwise_into(
    kb: &mut KernelBuilder,
    kind: Elementwise,
    [a, b, y]: [usize; 3],
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    match kind {
        Elementwise::Swiglu => swiglu_blocks(kb, [a, b, y], rows, cols, dtype),
        Elementwise::Add => add_blocks(kb, [a, b, y], rows, cols, dtype),
    }
}

fn swiglu_blocks(
    kb: &mut KernelBuilder,
    [gate, up, y]: [usize; 3],
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    check_shape("swiglu", rows, cols)?;
    pipelined(kb, rows, &[gate, up], cols, dtype, y, |kb, t, p| {
        let width = t[0].free_len();
        let s = kb.sbuf(p as u32, dtype, &[width])?;
        kb.activation(&s, &t[0], ActFunc::Silu, ScalarOperand::Imm(1.0), None, None);
        let y_t = kb.sbuf(p as u32, dtype, &[width])?;
        kb.tensor_tensor(Engine::Vector, &y_t, &s, &t[1], AluOp::Multiply);
        kb.free(&s)?;
        Ok(y_t)
    })
}

/// `y = x + residual`, elementwise.
pub fn residual_add(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("residual-add", rows, cols)?;
    let mut kb = KernelBuilder::new(&chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let r = kb.input("residual", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    elementwise_into(&mut kb, Elementwise::Add, [x, r, y], rows, cols, dtype)?;
    kb.finish()
}

fn add_blocks(
    kb: &mut KernelBuilder,
    [x, r, y]: [usize; 3],
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    check_shape("residual-add", rows, cols)?;
    let mut flip = false;
    pipelined(kb, rows, &[x, r], cols, dtype, y, |kb, t, p| {
        let y_t = kb.sbuf(p as u32, dtype, &[t[0].free_len()])?;
        // Alternate blocks between VectorE and GpSimd.
        flip = !flip;
        kb.tensor_tensor(
            if flip { Engine::Vector } else { Engine::GpSimd },
            &y_t,
            &t[0],
            &t[1],
            AluOp::Add,
        );
        Ok(y_t)
    })
}

/// `eps` of [`layernorm`] (PyTorch's default).
pub const LAYERNORM_EPS: f32 = 1e-5;

/// The mean (kept as `−mean`) and the centred sum of squares of each row of `x_t`, on ScalarE
/// (a hop to another engine between them would serialize the blocks), both passes writing
/// their discarded output to one scratch tile.
fn centred_stats(kb: &mut KernelBuilder, x_t: &Tile, p: u64) -> Result<(Tile, Tile), KernelError> {
    let junk = kb.sbuf(p as u32, x_t.dtype, &[x_t.free_len()])?;
    let one = ScalarOperand::Imm(1.0);
    let sum = stat(kb, p)?;
    kb.activation(&junk, x_t, ActFunc::Identity, one.clone(), None, Some(&sum));
    let neg_mean = stat(kb, p)?;
    let scale = ScalarOperand::Imm(-1.0 / x_t.free_len() as f32);
    kb.activation(&neg_mean, &sum, ActFunc::Identity, scale, None, None);
    kb.free(&sum)?;
    let m2 = stat(kb, p)?;
    kb.activation(&junk, x_t, ActFunc::Square, one, Some(&neg_mean), Some(&m2));
    kb.free(&junk)?;
    Ok((neg_mean, m2))
}

/// `(x − mean) · rstd · w + b` (layernorm's output): the normalization on GpSimd, the affine
/// part on VectorE.
fn ln_output(
    kb: &mut KernelBuilder,
    x_t: &Tile,
    stats: (&Tile, &Tile),
    (w_t, b_t): (&Tile, &Tile),
    p: u64,
) -> Result<Tile, KernelError> {
    let width = x_t.free_len();
    let xn = kb.sbuf(p as u32, x_t.dtype, &[width])?;
    let stages = [
        (AluOp::Add, ScalarOperand::Vector(stats.0.clone())),
        (AluOp::Multiply, ScalarOperand::Vector(stats.1.clone())),
    ];
    kb.tensor_scalar(Engine::GpSimd, &xn, x_t, &stages);
    let y_t = kb.sbuf(p as u32, x_t.dtype, &[width])?;
    kb.tensor_tensor(Engine::Vector, &y_t, &xn, &rows_of(w_t, p), AluOp::Multiply);
    kb.tensor_tensor(Engine::Vector, &y_t, &y_t, &rows_of(b_t, p), AluOp::Add);
    kb.free(&xn)?;
    Ok(y_t)
}

/// `y = (x - mean(x)) / sqrt(var(x) + eps) · w + b` along each row; `w`, `b: [cols]`.
pub fn layernorm(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("layernorm", rows, cols)?;
    let mut kb = KernelBuilder::new(&chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let w = kb.input("w", dtype, &[cols])?;
    let bias = kb.input("b", dtype, &[cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    let eps = constant(&mut kb, LAYERNORM_EPS)?;
    let inv = 1.0 / cols as f32;
    if chunked(cols, dtype) {
        // Per chunk: its mean and centred sum of squares; chunks combine with Chan et al.'s
        // pairwise update (exact in exact arithmetic, and stable when |mean| ≫ std):
        // δ = μ_c − μ, μ += δ·w/(n+w), M2 += M2_c + δ²·n·w/(n+w). Kept as −μ.
        let mut seen = 0u64;
        two_pass(
            &mut kb,
            rows,
            cols,
            x,
            y,
            dtype,
            |kb, t, p, acc| {
                let w = t.free_len();
                let (neg_mu, m2) = centred_stats(kb, t, p)?;
                let Some(acc) = acc else {
                    seen = w;
                    return Ok(vec![neg_mu, m2]);
                };
                let (neg_mean, total) = (&acc[0], &acc[1]);
                let (n, wf) = (seen as f32, w as f32);
                // δ' = −μ_c − (−μ) = −δ
                let delta = stat(kb, p)?;
                kb.tensor_tensor(Engine::Vector, &delta, &neg_mu, neg_mean, AluOp::Subtract);
                kb.free(&neg_mu)?;
                kb.tensor_tensor(Engine::Vector, total, total, &m2, AluOp::Add);
                kb.free(&m2)?;
                let sq = stat(kb, p)?;
                kb.tensor_tensor(Engine::Vector, &sq, &delta, &delta, AluOp::Multiply);
                let weight = ScalarOperand::Imm(n * wf / (n + wf));
                kb.tensor_scalar(Engine::Vector, &sq, &sq, &[(AluOp::Multiply, weight)]);
                kb.tensor_tensor(Engine::Vector, total, total, &sq, AluOp::Add);
                kb.free(&sq)?;
                let share = ScalarOperand::Imm(wf / (n + wf));
                kb.tensor_scalar(Engine::Vector, &delta, &delta, &[(AluOp::Multiply, share)]);
                kb.tensor_tensor(Engine::Vector, neg_mean, neg_mean, &delta, AluOp::Add);
                kb.free(&delta)?;
                seen += w;
                Ok(acc)
            },
            |kb, mut acc, p| {
                let rstd = rstd_of(kb, acc.remove(1), inv, &eps, p)?;
                Ok(vec![acc.remove(0), rstd])
            },
            |kb, t, p, c, acc| {
                let (w_t, b_t) = (broadcast(kb, w, dtype, c)?, broadcast(kb, bias, dtype, c)?);
                let y_t = ln_output(kb, t, (&acc[0], &acc[1]), (&w_t, &b_t), p)?;
                kb.free(&w_t)?;
                kb.free(&b_t)?;
                Ok(y_t)
            },
        )?;
        return kb.finish();
    }
    let (w_t, b_t) =
        (broadcast(&mut kb, w, dtype, (0, cols))?, broadcast(&mut kb, bias, dtype, (0, cols))?);
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, t, p| {
        let (neg_mean, m2) = centred_stats(kb, &t[0], p)?;
        let rstd = rstd_of(kb, m2, inv, &eps, p)?;
        let y_t = ln_output(kb, &t[0], (&neg_mean, &rstd), (&w_t, &b_t), p)?;
        kb.free(&neg_mean)?;
        kb.free(&rstd)?;
        Ok(y_t)
    })?;
    kb.finish()
}

/// Rotary position embedding as Hugging Face's `apply_rotary_pos_emb` applies it to one head:
/// `y = x · cos + rotate_half(x) · sin` with `rotate_half([x1, x2]) = [-x2, x1]`, for
/// `x, cos, sin: [rows, cols]` (`cos`/`sin` hold each frequency twice, as HF expands them).
pub fn rope(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_shape("rope", rows, cols)?;
    if cols > 2048 {
        return Err(KernelError::Shape {
            what: "rope".into(),
            detail: format!("cols={cols}: rope rotates a head dimension, at most 2048"),
        });
    }
    if cols % 2 != 0 {
        return Err(KernelError::Shape {
            what: "rope".into(),
            detail: format!("cols={cols} must be even (head dim)"),
        });
    }
    let mut kb = KernelBuilder::new(&chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let cos = kb.input("cos", dtype, &[rows, cols])?;
    let sin = kb.input("sin", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    let h = cols / 2;
    let half = |t: &Tile, second: bool| Tile {
        offset_bytes: t.offset_bytes + if second { h * dtype.size_bytes() as u64 } else { 0 },
        dims: rainier_isa::contiguous_dims(&[h]),
        ..t.clone()
    };
    pipelined(&mut kb, rows, &[x, cos, sin], cols, dtype, y, |kb, t, p| {
        let (x_t, cos_t, sin_t) = (&t[0], &t[1], &t[2]);
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
        let u = kb.sbuf(p as u32, dtype, &[cols])?;
        // y = x · cos (VectorE); u = [x2 · sin1, x1 · sin2] (GpSimd)
        kb.tensor_tensor(Engine::Vector, &y_t, x_t, cos_t, AluOp::Multiply);
        kb.tensor_tensor(
            Engine::GpSimd,
            &half(&u, false),
            &half(x_t, true),
            &half(sin_t, false),
            AluOp::Multiply,
        );
        kb.tensor_tensor(
            Engine::GpSimd,
            &half(&u, true),
            &half(x_t, false),
            &half(sin_t, true),
            AluOp::Multiply,
        );
        // y1 -= x2 · sin1, y2 += x1 · sin2 (VectorE)
        kb.tensor_tensor(
            Engine::Vector,
            &half(&y_t, false),
            &half(&y_t, false),
            &half(&u, false),
            AluOp::Subtract,
        );
        kb.tensor_tensor(
            Engine::Vector,
            &half(&y_t, true),
            &half(&y_t, true),
            &half(&u, true),
            AluOp::Add,
        );
        kb.free(&u)?;
        Ok(y_t)
    })?;
    kb.finish()
}
