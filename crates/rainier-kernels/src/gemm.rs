//! `gemm`: `c[M, N] = aᵀ · b` for `a: [K, M]`, `b: [K, N]` in HBM (the contraction on the
//! partition axis, as TensorE wants it), any M, N, K, fp32 output.
//!
//! Tiling: 128 (K) x 128 (M) stationary tiles, 128 x 512 moving tiles, one PSUM bank per
//! [128, 512] output block. For each 512-wide column block of `b`, its K strip is loaded once.
//! Rows of `c` go in super-blocks of 512: each K step loads one [128, 512] strip of `a` (1 KiB
//! contiguous per partition, so DMA descriptors are not overhead-bound) and feeds four matmuls,
//! one per 128-row block, accumulating in four PSUM banks. The Vector engine evacuates each
//! bank to SBUF and a DMA stores it (triggered from the GpSimd queue so that loads keep
//! flowing). Next-fit reuse of freed tiles and the builder's dependency tracking turn this into
//! multi-buffering.

use rainier_arch::Chip;
use rainier_isa::{contiguous_dims, DmaOperand, Engine, Program, Tile};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const KT: u64 = 128;
const MT: u64 = 128;
const NT: u64 = 512;
/// Rows of `c` per super-block: four PSUM banks of accumulators, leaving four for the next.
const M_SUPER: u64 = 4 * MT;

fn blocks(len: u64, tile: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..len.div_ceil(tile)).map(move |i| (i * tile, tile.min(len - i * tile)))
}

/// The gemm program for `chip`; inputs `a` and `b` are `dtype` in HBM, output `c` is fp32.
pub fn gemm(chip: Chip, m: u64, n: u64, k: u64, dtype: DType) -> Result<Program, KernelError> {
    if m == 0 || n == 0 || k == 0 {
        return Err(KernelError::Shape {
            what: "gemm".into(),
            detail: format!("M={m}, N={n}, K={k} must be positive"),
        });
    }
    let mut kb = KernelBuilder::new(chip);
    let a = kb.input("a", dtype, &[k, m])?;
    let b = kb.input("b", dtype, &[k, n])?;
    let c = kb.output("c", DType::F32, &[m, n])?;
    for (n0, nsz) in blocks(n, NT) {
        // The K strip of b for this column block, loaded once.
        let mut b_strip = Vec::new();
        for (k0, ksz) in blocks(k, KT) {
            let t = kb.sbuf(ksz as u32, dtype, &[nsz])?;
            let src = kb.block(b, k0..k0 + ksz, n0..n0 + nsz);
            kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(src));
            b_strip.push(t);
        }
        for (ms0, mssz) in blocks(m, M_SUPER) {
            let row_blocks: Vec<(u64, u64)> = blocks(mssz, MT).collect();
            let mut accs = Vec::with_capacity(row_blocks.len());
            for &(_, msz) in &row_blocks {
                accs.push(kb.psum(msz as u32, DType::F32, &[nsz])?);
            }
            for (i, (k0, ksz)) in blocks(k, KT).enumerate() {
                let a_strip = kb.sbuf(ksz as u32, dtype, &[mssz])?;
                let src = kb.block(a, k0..k0 + ksz, ms0..ms0 + mssz);
                kb.dma(DmaOperand::Tile(a_strip.clone()), DmaOperand::Hbm(src));
                for (acc, &(m0, msz)) in accs.iter().zip(&row_blocks) {
                    let stationary = Tile {
                        offset_bytes: a_strip.offset_bytes + m0 * dtype.size_bytes() as u64,
                        dims: contiguous_dims(&[msz]),
                        ..a_strip.clone()
                    };
                    kb.matmul(acc, &stationary, &b_strip[i], i > 0);
                }
                kb.free(&a_strip)?;
            }
            for (acc, &(m0, msz)) in accs.iter().zip(&row_blocks) {
                let out = kb.sbuf(msz as u32, DType::F32, &[nsz])?;
                kb.copy(Engine::Vector, &out, acc);
                kb.free(acc)?;
                // Stores wait for results: trigger them from the (otherwise idle) GpSimd queue
                // so the Sync queue keeps prefetching the next blocks' operands.
                let row = ms0 + m0;
                let dst = kb.block(c, row..row + msz, n0..n0 + nsz);
                kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(dst), DmaOperand::Tile(out.clone()));
                kb.free(&out)?;
            }
        }
        for t in &b_strip {
            kb.free(t)?;
        }
    }
    kb.finish()
}
