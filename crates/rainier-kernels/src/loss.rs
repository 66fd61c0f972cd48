//! `cross_entropy`: per-row softmax cross-entropy over a large vocabulary, forward and backward.
//!
//! Rows go on partitions (blocks of 128); the vocabulary streams in chunks of up to 8192
//! columns with an online log-sum-exp (running max `m`, running sum `l` rescaled by
//! `exp(m_old - m_new)`), so any vocabulary size fits. The target's logit is picked without a
//! gather: GpSimd writes column indices (`iota`), compares them with each row's target and
//! VectorE sums `logits · mask`.
//!
//! - forward: `loss[r] = lse[r] - logits[r, target[r]]` and `lse[r] = log Σ_j exp(logits[r, j])`
//!   (fp32), from `logits: [rows, vocab]` and `target: [rows]` (int32).
//! - backward: `grad[r, j] = exp(logits[r, j] - lse[r]) - (j == target[r])`, the gradient of
//!   `loss[r]` (scale it by the upstream gradient, e.g. `1/rows` for a mean).

use rainier_arch::ChipParams;
use rainier_isa::{
    ActFunc, Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Op, Program, ReduceOp,
    ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const PT: u64 = 128;
const CHUNK: u64 = 8192;

fn bad(detail: String) -> KernelError {
    KernelError::Shape { what: "cross-entropy".into(), detail }
}

fn check(rows: u64, vocab: u64) -> Result<(), KernelError> {
    if rows == 0 || vocab == 0 || vocab >= 1 << 24 {
        return Err(bad(format!("rows={rows}, vocab={vocab} (rows >= 1, 1 <= vocab < 2^24)")));
    }
    Ok(())
}

fn rows_of(tensor: usize, r0: u64, p: u64, width: u64, c0: u64, c: u64) -> HbmAccess {
    HbmAccess {
        tensor,
        offset: r0 * width + c0,
        dims: vec![Dim { stride: width as i64, size: p }, Dim { stride: 1, size: c }],
    }
}

fn vecop(t: &Tile) -> ScalarOperand {
    ScalarOperand::Vector(t.clone())
}

/// `mask[p, j] = (c0 + j == target[p])` as 1.0 / 0.0, on GpSimd.
fn target_mask(
    kb: &mut KernelBuilder,
    p: u64,
    c0: u64,
    c: u64,
    target: &Tile,
) -> Result<Tile, KernelError> {
    let mask = kb.sbuf(p as u32, DType::F32, &[c])?;
    let affine = Affine { base: c0 as i32, channel_multiplier: 0, steps: vec![1] };
    kb.push(Engine::GpSimd, Op::Iota { dst: mask.clone(), affine });
    kb.tensor_scalar(Engine::GpSimd, &mask, &mask, &[(AluOp::Eq, vecop(target))]);
    Ok(mask)
}

/// Loads a row block's targets as fp32 `[p, 1]` (exact below 2^24).
fn load_targets(
    kb: &mut KernelBuilder,
    targets: usize,
    r0: u64,
    p: u64,
) -> Result<Tile, KernelError> {
    let t = kb.sbuf(p as u32, DType::F32, &[1])?;
    kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(rows_of(targets, r0, p, 1, 0, 1)));
    Ok(t)
}

/// The forward kernel: outputs `loss` and `lse`, both `[rows]` fp32.
pub fn cross_entropy(
    chip: impl Into<ChipParams>,
    rows: u64,
    vocab: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check(rows, vocab)?;
    let mut kb = KernelBuilder::new(&chip);
    let logits = kb.input("logits", dtype, &[rows, vocab])?;
    let targets = kb.input("target", DType::I32, &[rows])?;
    let loss = kb.output("loss", DType::F32, &[rows])?;
    let lse_out = kb.output("lse", DType::F32, &[rows])?;
    for r0 in (0..rows).step_by(PT as usize) {
        let p = PT.min(rows - r0);
        let tgt = load_targets(&mut kb, targets, r0, p)?;
        let small = |kb: &mut KernelBuilder, value: f32| -> Result<Tile, KernelError> {
            let t = kb.sbuf(p as u32, DType::F32, &[1])?;
            kb.push(Engine::Vector, Op::Memset { dst: t.clone(), value });
            Ok(t)
        };
        let (mut negm, l, tl) =
            (small(&mut kb, 3.0e38)?, small(&mut kb, 0.0)?, small(&mut kb, 0.0)?);
        for c0 in (0..vocab).step_by(CHUNK as usize) {
            let c = CHUNK.min(vocab - c0);
            let x = kb.sbuf(p as u32, dtype, &[c])?;
            kb.dma(
                DmaOperand::Tile(x.clone()),
                DmaOperand::Hbm(rows_of(logits, r0, p, vocab, c0, c)),
            );
            // negm_new = min(negm, -max(x)): the running max, negated.
            let negmax = kb.sbuf(p as u32, DType::F32, &[1])?;
            kb.push(
                Engine::Vector,
                Op::TensorReduce {
                    dst: negmax.clone(),
                    src: x.clone(),
                    op: ReduceOp::Max,
                    axes: 1,
                    negate: true,
                },
            );
            let negm_new = kb.sbuf(p as u32, DType::F32, &[1])?;
            kb.tensor_tensor(Engine::Vector, &negm_new, &negm, &negmax, AluOp::Min);
            kb.free(&negmax)?;
            // Σ exp(x - m_new) (ScalarE, fused sum; the values themselves are not kept).
            let e = kb.sbuf(p as u32, DType::Bf16, &[c])?;
            let s = kb.sbuf(p as u32, DType::F32, &[1])?;
            kb.activation(&e, &x, ActFunc::Exp, ScalarOperand::Imm(1.0), Some(&negm_new), Some(&s));
            kb.free(&e)?;
            // l = l · exp(m_old - m_new) + s, with exp(-negm_old + negm_new).
            let corr = kb.sbuf(p as u32, DType::F32, &[1])?;
            kb.activation(
                &corr,
                &negm,
                ActFunc::Exp,
                ScalarOperand::Imm(-1.0),
                Some(&negm_new),
                None,
            );
            kb.tensor_tensor(Engine::Vector, &l, &l, &corr, AluOp::Multiply);
            kb.tensor_tensor(Engine::Vector, &l, &l, &s, AluOp::Add);
            kb.free(&corr)?;
            kb.free(&s)?;
            kb.free(&negm)?;
            negm = negm_new;
            // The target's logit, if it falls in this chunk: Σ x · mask.
            let mask = target_mask(&mut kb, p, c0, c, &tgt)?;
            kb.tensor_tensor(Engine::GpSimd, &mask, &mask, &x, AluOp::Multiply);
            let picked = kb.sbuf(p as u32, DType::F32, &[1])?;
            kb.push(
                Engine::Vector,
                Op::TensorReduce {
                    dst: picked.clone(),
                    src: mask.clone(),
                    op: ReduceOp::Add,
                    axes: 1,
                    negate: false,
                },
            );
            kb.tensor_tensor(Engine::Vector, &tl, &tl, &picked, AluOp::Add);
            kb.free(&picked)?;
            kb.free(&mask)?;
            kb.free(&x)?;
        }
        // lse = log(l) + m = log(l) - negm; loss = lse - target logit.
        let lse = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.activation(&lse, &l, ActFunc::Log, ScalarOperand::Imm(1.0), None, None);
        kb.tensor_tensor(Engine::Vector, &lse, &lse, &negm, AluOp::Subtract);
        let out = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.tensor_tensor(Engine::Vector, &out, &lse, &tl, AluOp::Subtract);
        kb.dma(DmaOperand::Hbm(rows_of(loss, r0, p, 1, 0, 1)), DmaOperand::Tile(out.clone()));
        kb.dma(DmaOperand::Hbm(rows_of(lse_out, r0, p, 1, 0, 1)), DmaOperand::Tile(lse.clone()));
        for t in [&out, &lse, &l, &tl, &negm, &tgt] {
            kb.free(t)?;
        }
    }
    kb.finish()
}

/// The backward kernel: `grad [rows, vocab]` in `dtype` from `logits`, `target` and the
/// forward's `lse`.
pub fn cross_entropy_backward(
    chip: impl Into<ChipParams>,
    rows: u64,
    vocab: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check(rows, vocab)?;
    let mut kb = KernelBuilder::new(&chip);
    let logits = kb.input("logits", dtype, &[rows, vocab])?;
    let targets = kb.input("target", DType::I32, &[rows])?;
    let lse_in = kb.input("lse", DType::F32, &[rows])?;
    let grad = kb.output("grad", dtype, &[rows, vocab])?;
    for r0 in (0..rows).step_by(PT as usize) {
        let p = PT.min(rows - r0);
        let tgt = load_targets(&mut kb, targets, r0, p)?;
        let lse = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.dma(DmaOperand::Tile(lse.clone()), DmaOperand::Hbm(rows_of(lse_in, r0, p, 1, 0, 1)));
        let neg = kb.sbuf(p as u32, DType::F32, &[1])?;
        kb.tensor_scalar(
            Engine::Vector,
            &neg,
            &lse,
            &[(AluOp::Multiply, ScalarOperand::Imm(-1.0))],
        );
        for c0 in (0..vocab).step_by(CHUNK as usize) {
            let c = CHUNK.min(vocab - c0);
            let x = kb.sbuf(p as u32, dtype, &[c])?;
            kb.dma(
                DmaOperand::Tile(x.clone()),
                DmaOperand::Hbm(rows_of(logits, r0, p, vocab, c0, c)),
            );
            let sm = kb.sbuf(p as u32, DType::F32, &[c])?;
            kb.activation(&sm, &x, ActFunc::Exp, ScalarOperand::Imm(1.0), Some(&neg), None);
            kb.free(&x)?;
            let mask = target_mask(&mut kb, p, c0, c, &tgt)?;
            let g = kb.sbuf(p as u32, dtype, &[c])?;
            kb.tensor_tensor(Engine::Vector, &g, &sm, &mask, AluOp::Subtract);
            kb.free(&mask)?;
            kb.free(&sm)?;
            kb.dma(
                DmaOperand::Hbm(rows_of(grad, r0, p, vocab, c0, c)),
                DmaOperand::Tile(g.clone()),
            );
            kb.free(&g)?;
        }
        for t in [&neg, &lse, &tgt] {
            kb.free(t)?;
        }
    }
    kb.finish()
}
