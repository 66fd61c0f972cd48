//! Row-wise kernels over `x: [rows, cols]`: rows on partitions (blocks of 128), a whole row in
//! the free dimension (up to what SBUF holds), loads on the Sync queue, stores on the GpSimd
//! queue, the passes over each row spread over the Scalar engine (functions with fused row
//! sums), the Vector engine and GpSimd so that none of them outruns the DMA.

use rainier_arch::Chip;
use rainier_isa::{
    ActFunc, AluOp, DmaOperand, Engine, HbmAccess, Op, Program, ReduceOp, ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const PT: u64 = 128;

/// `eps` of [`rmsnorm`] (Llama's `rms_norm_eps`).
pub const RMSNORM_EPS: f32 = 1e-6;

fn check_shape(kernel: &str, rows: u64, cols: u64) -> Result<(), KernelError> {
    if rows == 0 || cols == 0 || cols > 1 << 16 {
        return Err(KernelError::Shape {
            what: kernel.into(),
            detail: format!("rows={rows}, cols={cols} (rows >= 1, 1 <= cols <= 65536: a row lives in one partition)"),
        });
    }
    Ok(())
}

fn blocks(len: u64, tile: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..len.div_ceil(tile)).map(move |i| (i * tile, tile.min(len - i * tile)))
}

/// A per-partition `[p, 1]` fp32 constant.
fn constant(kb: &mut KernelBuilder, value: f32) -> Result<Tile, KernelError> {
    let t = kb.sbuf(PT as u32, DType::F32, &[1])?;
    kb.push(Engine::Vector, Op::Memset { dst: t.clone(), value });
    Ok(t)
}

fn rows_of(t: &Tile, p: u64) -> Tile {
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
    pipelined_multi(kb, rows, inputs, cols, 0, dtype, &[y], |kb, t, p| Ok(vec![compute(kb, t, p)?]))
}

/// Rows `r0..r0 + p` of `cols` elements each, starting `base` elements into a row-major tensor
/// of any rank.
fn rows_at(tensor: usize, base: u64, r0: u64, p: u64, cols: u64) -> HbmAccess {
    HbmAccess {
        tensor,
        offset: base + r0 * cols,
        dims: vec![
            rainier_isa::Dim { stride: cols as i64, size: p },
            rainier_isa::Dim { stride: 1, size: cols },
        ],
    }
}

/// [`pipelined`] with several outputs (`compute` returns one tile per tensor in `outputs`),
/// over the rows of `cols` elements that start `base` elements into each tensor.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pipelined_multi(
    kb: &mut KernelBuilder,
    rows: u64,
    inputs: &[usize],
    cols: u64,
    base: u64,
    dtype: DType,
    outputs: &[usize],
    mut compute: impl FnMut(&mut KernelBuilder, &[Tile], u64) -> Result<Vec<Tile>, KernelError>,
) -> Result<(), KernelError> {
    let all: Vec<(u64, u64)> = blocks(rows, PT).collect();
    let mut loaded = std::collections::VecDeque::new();
    let load = |kb: &mut KernelBuilder, (r0, p): (u64, u64)| -> Result<Vec<Tile>, KernelError> {
        let mut tiles = Vec::with_capacity(inputs.len());
        for &x in inputs {
            let t = kb.sbuf(p as u32, dtype, &[cols])?;
            kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(rows_at(x, base, r0, p, cols)));
            tiles.push(t);
        }
        Ok(tiles)
    };
    for &b in all.iter().take(PREFETCH) {
        loaded.push_back(load(kb, b)?);
    }
    for (i, &(r0, p)) in all.iter().enumerate() {
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
        for (&y, y_t) in outputs.iter().zip(&results) {
            kb.dma(DmaOperand::Hbm(rows_at(y, base, r0, p, cols)), DmaOperand::Tile(y_t.clone()));
            kb.free(y_t)?;
        }
    }
    Ok(())
}

/// `y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · w`, with `x`, `w: [cols]` and `y` in `dtype`.
pub fn rmsnorm(chip: Chip, rows: u64, cols: u64, dtype: DType) -> Result<Program, KernelError> {
    check_shape("rmsnorm", rows, cols)?;
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let w = kb.input("w", dtype, &[cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    // w broadcast to every partition (stride-0 partition dim).
    let w_t = kb.sbuf(PT as u32, dtype, &[cols])?;
    let broadcast = HbmAccess {
        tensor: w,
        offset: 0,
        dims: vec![
            rainier_isa::Dim { stride: 0, size: PT },
            rainier_isa::Dim { stride: 1, size: cols },
        ],
    };
    kb.dma(DmaOperand::Tile(w_t.clone()), DmaOperand::Hbm(broadcast));
    let eps = constant(&mut kb, RMSNORM_EPS)?;
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, xs_in, p| {
        let x_t = &xs_in[0];
        // Σ x² per row (ScalarE square with its fused add-reduction).
        let sq = kb.sbuf(p as u32, dtype, &[cols])?;
        let ss = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(&sq, x_t, ActFunc::Square, ScalarOperand::Imm(1.0), None, Some(&ss));
        kb.free(&sq)?;
        // rstd = 1 / sqrt(Σ x² / cols + eps)
        let rstd = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(
            &rstd,
            &ss,
            ActFunc::Rsqrt,
            ScalarOperand::Imm(1.0 / cols as f32),
            Some(&rows_of(&eps, p)),
            None,
        );
        kb.free(&ss)?;
        // y = (x · rstd) · w: the scaling on GpSimd, the weight on VectorE.
        let xs = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_scalar(
            Engine::GpSimd,
            &xs,
            x_t,
            &[(AluOp::Multiply, ScalarOperand::Vector(rstd.clone()))],
        );
        kb.free(&rstd)?;
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_tensor(Engine::Vector, &y_t, &xs, &rows_of(&w_t, p), AluOp::Multiply);
        kb.free(&xs)?;
        Ok(y_t)
    })?;
    kb.finish()
}

/// `y[r, :] = softmax(x[r, :])`, numerically stable (row max subtracted), in `dtype`.
pub fn softmax(chip: Chip, rows: u64, cols: u64, dtype: DType) -> Result<Program, KernelError> {
    check_shape("softmax", rows, cols)?;
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, xs_in, p| {
        let x_t = &xs_in[0];
        let negmax = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.push(
            Engine::Vector,
            Op::TensorReduce {
                dst: negmax.clone(),
                src: x_t.clone(),
                op: ReduceOp::Max,
                axes: 1,
                negate: true,
            },
        );
        // e = exp(x - max) with the row sums fused (ScalarE).
        let e = kb.sbuf(p as u32, dtype, &[cols])?;
        let sum = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(&e, x_t, ActFunc::Exp, ScalarOperand::Imm(1.0), Some(&negmax), Some(&sum));
        kb.free(&negmax)?;
        // The normalization on GpSimd, so VectorE (max), ScalarE (exp) and GpSimd share the
        // three passes over the row.
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_scalar(
            Engine::GpSimd,
            &y_t,
            &e,
            &[(AluOp::Divide, ScalarOperand::Vector(sum.clone()))],
        );
        kb.free(&e)?;
        kb.free(&sum)?;
        Ok(y_t)
    })?;
    kb.finish()
}

/// `y = gelu(x) = x · Φ(x)` (erf form), elementwise.
pub fn gelu(chip: Chip, rows: u64, cols: u64, dtype: DType) -> Result<Program, KernelError> {
    check_shape("gelu", rows, cols)?;
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, t, p| {
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.activation(&y_t, &t[0], ActFunc::Gelu, ScalarOperand::Imm(1.0), None, None);
        Ok(y_t)
    })?;
    kb.finish()
}

/// `y = silu(gate) · up` (the SwiGLU MLP's elementwise part), elementwise.
pub fn swiglu(chip: Chip, rows: u64, cols: u64, dtype: DType) -> Result<Program, KernelError> {
    check_shape("swiglu", rows, cols)?;
    let mut kb = KernelBuilder::new(chip);
    let gate = kb.input("gate", dtype, &[rows, cols])?;
    let up = kb.input("up", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    pipelined(&mut kb, rows, &[gate, up], cols, dtype, y, |kb, t, p| {
        let s = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.activation(&s, &t[0], ActFunc::Silu, ScalarOperand::Imm(1.0), None, None);
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_tensor(Engine::Vector, &y_t, &s, &t[1], AluOp::Multiply);
        kb.free(&s)?;
        Ok(y_t)
    })?;
    kb.finish()
}

/// `y = x + residual`, elementwise.
pub fn residual_add(
    chip: Chip,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    check_shape("residual-add", rows, cols)?;
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let r = kb.input("residual", dtype, &[rows, cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    let mut flip = false;
    pipelined(&mut kb, rows, &[x, r], cols, dtype, y, |kb, t, p| {
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
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
    })?;
    kb.finish()
}

/// `eps` of [`layernorm`] (PyTorch's default).
pub const LAYERNORM_EPS: f32 = 1e-5;

/// `y = (x - mean(x)) / sqrt(var(x) + eps) · w + b` along each row; `w`, `b: [cols]`.
pub fn layernorm(chip: Chip, rows: u64, cols: u64, dtype: DType) -> Result<Program, KernelError> {
    check_shape("layernorm", rows, cols)?;
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let w = kb.input("w", dtype, &[cols])?;
    let bias = kb.input("b", dtype, &[cols])?;
    let y = kb.output("y", dtype, &[rows, cols])?;
    let broadcast = |kb: &mut KernelBuilder, tensor: usize| -> Result<Tile, KernelError> {
        let t = kb.sbuf(PT as u32, dtype, &[cols])?;
        let src = HbmAccess {
            tensor,
            offset: 0,
            dims: vec![
                rainier_isa::Dim { stride: 0, size: PT },
                rainier_isa::Dim { stride: 1, size: cols },
            ],
        };
        kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(src));
        Ok(t)
    };
    let (w_t, b_t) = (broadcast(&mut kb, w)?, broadcast(&mut kb, bias)?);
    let eps = constant(&mut kb, LAYERNORM_EPS)?;
    pipelined(&mut kb, rows, &[x], cols, dtype, y, |kb, t, p| {
        let x_t = &t[0];
        let junk = kb.sbuf(p as u32, dtype, &[cols])?;
        // Σ x (ScalarE identity with its add-reduction), then -mean.
        let sum = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(&junk, x_t, ActFunc::Identity, ScalarOperand::Imm(1.0), None, Some(&sum));
        // -mean on ScalarE too: a hop to another engine here would serialize the blocks.
        let negmean = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(
            &negmean,
            &sum,
            ActFunc::Identity,
            ScalarOperand::Imm(-1.0 / cols as f32),
            None,
            None,
        );
        kb.free(&sum)?;
        // Σ (x - mean)² (ScalarE square of x + (-mean), reduced).
        let var = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(
            &junk,
            x_t,
            ActFunc::Square,
            ScalarOperand::Imm(1.0),
            Some(&negmean),
            Some(&var),
        );
        kb.free(&junk)?;
        let rstd = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(
            &rstd,
            &var,
            ActFunc::Rsqrt,
            ScalarOperand::Imm(1.0 / cols as f32),
            Some(&rows_of(&eps, p)),
            None,
        );
        kb.free(&var)?;
        // (x - mean) · rstd on GpSimd, then · w + b on VectorE.
        let xn = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_scalar(
            Engine::GpSimd,
            &xn,
            x_t,
            &[
                (AluOp::Add, ScalarOperand::Vector(negmean.clone())),
                (AluOp::Multiply, ScalarOperand::Vector(rstd.clone())),
            ],
        );
        kb.free(&negmean)?;
        kb.free(&rstd)?;
        let y_t = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_tensor(Engine::Vector, &y_t, &xn, &rows_of(&w_t, p), AluOp::Multiply);
        kb.tensor_tensor(Engine::Vector, &y_t, &y_t, &rows_of(&b_t, p), AluOp::Add);
        kb.free(&xn)?;
        Ok(y_t)
    })?;
    kb.finish()
}

/// Rotary position embedding as Hugging Face's `apply_rotary_pos_emb` applies it to one head:
/// `y = x · cos + rotate_half(x) · sin` with `rotate_half([x1, x2]) = [-x2, x1]`, for
/// `x, cos, sin: [rows, cols]` (`cos`/`sin` hold each frequency twice, as HF expands them).
pub fn rope(chip: Chip, rows: u64, cols: u64, dtype: DType) -> Result<Program, KernelError> {
    check_shape("rope", rows, cols)?;
    if cols % 2 != 0 {
        return Err(KernelError::Shape {
            what: "rope".into(),
            detail: format!("cols={cols} must be even (head dim)"),
        });
    }
    let mut kb = KernelBuilder::new(chip);
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
