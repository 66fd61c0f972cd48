//! Backward passes of the row-wise kernels, in their layout (rows on partitions in blocks of
//! 128, a whole row in the free dimension):
//!
//! - `rmsnorm-bwd`: for `y = x · r · w`, `r = 1/sqrt(mean(x²) + eps)`, given `dy`:
//!   `dx = r · (dy ∘ w) − x · r³ · mean(x ∘ dy ∘ w)` per row, and the weight gradient
//!   `dw = Σ_rows dy ∘ x · r` (fp32): each block's column sums on TensorE (a ones vector as the
//!   stationary operand, 512 columns per matmul), added into an fp32 accumulator in SBUF.
//! - `swiglu-bwd`: for `y = silu(g) · u`, given `dy`: `du = dy · silu(g)`,
//!   `dg = dy · u · silu'(g)` (ScalarE's `silu` and `silu_dx`, VectorE and GpSimd products).

use rainier_arch::ChipParams;
use rainier_isa::{
    contiguous_dims, ActFunc, AluOp, DmaOperand, Engine, HbmAccess, Op, Program, ReduceOp,
    ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::rowwise::{
    broadcast, check_shape, chunked, constant, pipelined_multi, row_sum, rows_of, rstd_of, stat, PT,
};
use crate::{KernelBuilder, KernelError, ROW_CHUNK_BYTES};

/// Columns per column-sum matmul (one PSUM bank of fp32).
const SUM_COLS: u64 = 512;

/// The rmsnorm backward program: inputs `x [rows, cols]`, `w [cols]`, `dy [rows, cols]` in
/// `dtype`; outputs `dx [rows, cols]` in `dtype` and `dw [cols]` in fp32.
pub fn rmsnorm_backward(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", dtype, &[rows, cols])?;
    let w = kb.input("w", dtype, &[cols])?;
    let dy = kb.input("dy", dtype, &[rows, cols])?;
    let dx = kb.output("dx", dtype, &[rows, cols])?;
    let dw = kb.output("dw", DType::F32, &[cols])?;
    rmsnorm_backward_into(&mut kb, NormGradTensors { x, w, dy, dx, dw }, rows, cols, dtype)?;
    kb.finish()
}

/// The HBM tensors of [`rmsnorm_backward`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct NormGradTensors {
    pub x: usize,
    pub w: usize,
    pub dy: usize,
    pub dx: usize,
    pub dw: usize,
}

/// Emits [`rmsnorm_backward`] into `kb`; every tile it takes is freed.
pub(crate) fn rmsnorm_backward_into(
    kb: &mut KernelBuilder,
    NormGradTensors { x, w, dy, dx, dw }: NormGradTensors,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    check_shape("rmsnorm-bwd", rows, cols)?;
    if chunked(cols, dtype) {
        return Err(KernelError::Shape {
            what: "rmsnorm-bwd".into(),
            detail: format!(
                "cols={cols} of {dtype}: rows beyond {ROW_CHUNK_BYTES} bytes per partition need column chunks, which the backward does not have yet"
            ),
        });
    }
    let eps = constant(kb, crate::RMSNORM_EPS)?;
    let inv = 1.0 / cols as f32;
    let w_t = broadcast(kb, w, dtype, (0, cols))?;
    let ones = kb.sbuf(PT as u32, dtype, &[1])?;
    kb.push(Engine::GpSimd, Op::Memset { dst: ones.clone(), value: 1.0 });
    let acc = kb.sbuf(1, DType::F32, &[cols])?;
    kb.push(Engine::Vector, Op::Memset { dst: acc.clone(), value: 0.0 });
    pipelined_multi(kb, rows, &[(x, 0), (dy, 0)], cols, dtype, &[(dx, 0)], |kb, t, p| {
        let (x_t, dy_t) = (&t[0], &t[1]);
        let ss = row_sum(kb, x_t, ActFunc::Square, None, p)?;
        let rstd = rstd_of(kb, ss, inv, &eps, p)?;
        // g = dy ∘ w and its row dot product with x.
        let g = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_tensor(Engine::Vector, &g, dy_t, &rows_of(&w_t, p), AluOp::Multiply);
        let xg = kb.sbuf(p as u32, dtype, &[cols])?;
        kb.tensor_tensor(Engine::GpSimd, &xg, x_t, &g, AluOp::Multiply);
        let dot = stat(kb, p)?;
        let reduce = Op::TensorReduce {
            dst: dot.clone(),
            src: xg.clone(),
            op: ReduceOp::Add,
            axes: 1,
            negate: false,
        };
        kb.push(Engine::Vector, reduce);
        // coef = −r³ · dot / cols.
        let coef = stat(kb, p)?;
        kb.tensor_tensor(Engine::Vector, &coef, &rstd, &rstd, AluOp::Multiply);
        kb.tensor_tensor(Engine::Vector, &coef, &coef, &rstd, AluOp::Multiply);
        kb.tensor_tensor(Engine::Vector, &coef, &coef, &dot, AluOp::Multiply);
        kb.tensor_scalar(
            Engine::Vector,
            &coef,
            &coef,
            &[(AluOp::Multiply, ScalarOperand::Imm(-inv))],
        );
        kb.free(&dot)?;
        // dx = x · coef + g · r.
        let gr = kb.sbuf(p as u32, DType::F32, &[cols])?;
        kb.tensor_scalar(
            Engine::GpSimd,
            &gr,
            &g,
            &[(AluOp::Multiply, ScalarOperand::Vector(rstd.clone()))],
        );
        kb.free(&g)?;
        let dx_t = kb.sbuf(p as u32, dtype, &[cols])?;
        let combine = Op::ScalarTensorTensor {
            dst: dx_t.clone(),
            src: x_t.clone(),
            operand0: ScalarOperand::Vector(coef.clone()),
            in1: gr.clone(),
            op0: AluOp::Multiply,
            op1: AluOp::Add,
            reverse0: false,
            reverse1: false,
        };
        kb.push(Engine::Vector, combine);
        kb.free(&gr)?;
        kb.free(&coef)?;
        // dw += column sums of (x · r) ∘ dy, reusing xg.
        kb.tensor_scalar(
            Engine::GpSimd,
            &xg,
            x_t,
            &[(AluOp::Multiply, ScalarOperand::Vector(rstd.clone()))],
        );
        kb.tensor_tensor(Engine::GpSimd, &xg, &xg, dy_t, AluOp::Multiply);
        kb.free(&rstd)?;
        for c0 in (0..cols).step_by(SUM_COLS as usize) {
            let width = SUM_COLS.min(cols - c0);
            let sums = kb.psum(1, DType::F32, &[width])?;
            kb.matmul(&sums, &rows_of(&ones, p), &columns(&xg, c0, width), false);
            let acc_cols = columns(&acc, c0, width);
            kb.tensor_tensor(Engine::Vector, &acc_cols, &acc_cols, &sums, AluOp::Add);
            kb.free(&sums)?;
        }
        kb.free(&xg)?;
        Ok(vec![dx_t])
    })?;
    let to = HbmAccess { tensor: dw, offset: 0, dims: contiguous_dims(&[1, cols]) };
    kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(to), DmaOperand::Tile(acc.clone()));
    for t in [acc, ones, w_t, eps] {
        kb.free(&t)?;
    }
    Ok(())
}

/// Columns `c0..c0 + width` of a one-dimensional tile.
fn columns(t: &Tile, c0: u64, width: u64) -> Tile {
    Tile {
        offset_bytes: t.offset_bytes + c0 * t.dtype.size_bytes() as u64,
        dims: contiguous_dims(&[width]),
        ..t.clone()
    }
}

/// The SwiGLU backward program: inputs `gate`, `up`, `dy [rows, cols]`; outputs `dgate`,
/// `dup [rows, cols]`; all in `dtype`.
pub fn swiglu_backward(
    chip: impl Into<ChipParams>,
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let mut kb = KernelBuilder::new(chip);
    let gate = kb.input("gate", dtype, &[rows, cols])?;
    let up = kb.input("up", dtype, &[rows, cols])?;
    let dy = kb.input("dy", dtype, &[rows, cols])?;
    let dgate = kb.output("dgate", dtype, &[rows, cols])?;
    let dup = kb.output("dup", dtype, &[rows, cols])?;
    let at = |t| (t, 0);
    swiglu_backward_into(&mut kb, [gate, up, dy, dgate, dup].map(at), rows, cols, dtype)?;
    kb.finish()
}

/// Emits [`swiglu_backward`] into `kb` on `[gate, up, dy, dgate, dup]`, each a
/// `(tensor, base)`: its rows start `base` elements into the tensor.
pub(crate) fn swiglu_backward_into(
    kb: &mut KernelBuilder,
    [gate, up, dy, dgate, dup]: [(usize, u64); 5],
    rows: u64,
    cols: u64,
    dtype: DType,
) -> Result<(), KernelError> {
    check_shape("swiglu-bwd", rows, cols)?;
    let one = ScalarOperand::Imm(1.0);
    pipelined_multi(kb, rows, &[gate, up, dy], cols, dtype, &[dgate, dup], |kb, t, p| {
        let (g, u, d) = (&t[0], &t[1], &t[2]);
        let width = g.free_len();
        let tile = |kb: &mut KernelBuilder| kb.sbuf(p as u32, dtype, &[width]);
        let s = tile(kb)?;
        kb.activation(&s, g, ActFunc::Silu, one.clone(), None, None);
        let du = tile(kb)?;
        kb.tensor_tensor(Engine::Vector, &du, &s, d, AluOp::Multiply);
        kb.activation(&s, g, ActFunc::SiluDx, one.clone(), None, None);
        let dg = tile(kb)?;
        kb.tensor_tensor(Engine::GpSimd, &dg, d, u, AluOp::Multiply);
        kb.tensor_tensor(Engine::Vector, &dg, &dg, &s, AluOp::Multiply);
        kb.free(&s)?;
        Ok(vec![dg, du])
    })
}
