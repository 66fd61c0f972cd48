//! `adamw`: one AdamW step (PyTorch's `torch.optim.AdamW`) over fp32 parameters, gradients and
//! moments in HBM, streamed in blocks of 128 x 2048 with the passes spread over ScalarE,
//! VectorE and GpSimd.
//!
//! ```text
//! m' = β1·m + (1-β1)·g          v' = β2·v + (1-β2)·g²
//! p' = p·(1 - lr·λ) - lr/(1-β1^t) · m' / (sqrt(v'/(1-β2^t)) + ε)
//! ```

use rainier_arch::ChipParams;
use rainier_isa::{ActFunc, AluOp, Engine, Program, ScalarOperand, Tile};
use rainier_tensor::DType;

use crate::rowwise::pipelined_multi;
use crate::{KernelBuilder, KernelError};

/// AdamW hyper-parameters; `Default` is PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
/// weight decay 0.01) at step 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// The step number `t` (from 1) used for bias correction.
    pub step: u32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: 1 }
    }
}

/// Elements per row of a block (each of the seven fp32 tiles of a block is 8 KiB a partition).
const COLS: u64 = 2048;

/// One AdamW step over `params` fp32 parameters: inputs `p`, `g`, `m`, `v` (`[params]`),
/// outputs `p_out`, `m_out`, `v_out`.
pub fn adamw(chip: impl Into<ChipParams>, params: u64, hp: &AdamW) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    if params == 0 || hp.step == 0 {
        return Err(KernelError::Shape {
            what: "adamw".into(),
            detail: format!("params={params}, step={} must be positive", hp.step),
        });
    }
    let dtype = DType::F32;
    let mut kb = KernelBuilder::new(&chip);
    let ins: Vec<usize> = ["p", "g", "m", "v"]
        .iter()
        .map(|n| kb.input(n, dtype, &[params]))
        .collect::<Result<_, _>>()?;
    let outs: Vec<usize> = ["p_out", "m_out", "v_out"]
        .iter()
        .map(|n| kb.output(n, dtype, &[params]))
        .collect::<Result<_, _>>()?;
    let t = hp.step as i32;
    let (bc1, bc2) = (1.0 - f64::from(hp.beta1).powi(t), 1.0 - f64::from(hp.beta2).powi(t));
    let step = |kb: &mut KernelBuilder,
                x: &[Tile],
                p: u64,
                cols: u64|
     -> Result<Vec<Tile>, KernelError> {
        let (pt, gt, mt, vt) = (&x[0], &x[1], &x[2], &x[3]);
        let tile = |kb: &mut KernelBuilder| kb.sbuf(p as u32, dtype, &[cols]);
        // m' = β1·m + (1-β1)·g
        let (bm, gs, m_new) = (tile(kb)?, tile(kb)?, tile(kb)?);
        kb.activation(&bm, mt, ActFunc::Identity, ScalarOperand::Imm(hp.beta1), None, None);
        kb.tensor_scalar(
            Engine::GpSimd,
            &gs,
            gt,
            &[(AluOp::Multiply, ScalarOperand::Imm(1.0 - hp.beta1))],
        );
        kb.tensor_tensor(Engine::Vector, &m_new, &bm, &gs, AluOp::Add);
        // v' = β2·v + (1-β2)·g²  (ScalarE squares √(1-β2)·g)
        let (g2, bv, v_new) = (bm, gs, tile(kb)?);
        kb.activation(
            &g2,
            gt,
            ActFunc::Square,
            ScalarOperand::Imm((1.0 - hp.beta2).sqrt()),
            None,
            None,
        );
        kb.tensor_scalar(
            Engine::GpSimd,
            &bv,
            vt,
            &[(AluOp::Multiply, ScalarOperand::Imm(hp.beta2))],
        );
        kb.tensor_tensor(Engine::Vector, &v_new, &bv, &g2, AluOp::Add);
        // update = m' / (sqrt(v' / bc2) + ε)
        let (den, upd) = (g2, bv);
        kb.activation(
            &den,
            &v_new,
            ActFunc::Sqrt,
            ScalarOperand::Imm((1.0 / bc2) as f32),
            None,
            None,
        );
        kb.tensor_scalar(Engine::GpSimd, &den, &den, &[(AluOp::Add, ScalarOperand::Imm(hp.eps))]);
        kb.tensor_tensor(Engine::Vector, &upd, &m_new, &den, AluOp::Divide);
        // p' = p·(1 - lr·λ) - (lr / bc1)·update
        let p_new = den;
        kb.tensor_scalar(
            Engine::GpSimd,
            &p_new,
            pt,
            &[(AluOp::Multiply, ScalarOperand::Imm(1.0 - hp.lr * hp.weight_decay))],
        );
        let step_size = -(f64::from(hp.lr) / bc1) as f32;
        kb.tensor_scalar(
            Engine::Vector,
            &upd,
            &upd,
            &[(AluOp::Multiply, ScalarOperand::Imm(step_size))],
        );
        kb.tensor_tensor(Engine::Vector, &p_new, &p_new, &upd, AluOp::Add);
        kb.free(&upd)?;
        Ok(vec![p_new, m_new, v_new])
    };
    let (full, tail) = (params / COLS, params % COLS);
    let at = |tensors: &[usize], base: u64| -> Vec<(usize, u64)> {
        tensors.iter().map(|&t| (t, base)).collect()
    };
    if full > 0 {
        pipelined_multi(&mut kb, full, &at(&ins, 0), COLS, dtype, &at(&outs, 0), |kb, x, p| {
            step(kb, x, p, COLS)
        })?;
    }
    if tail > 0 {
        let base = full * COLS;
        pipelined_multi(&mut kb, 1, &at(&ins, base), tail, dtype, &at(&outs, base), |kb, x, p| {
            step(kb, x, p, tail)
        })?;
    }
    kb.finish()
}
