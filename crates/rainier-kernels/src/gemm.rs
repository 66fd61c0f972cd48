//! `gemm`: `c[M, N] = aᵀ · b` for `a: [K, M]`, `b: [K, N]` in HBM (the contraction on the
//! partition axis, as TensorE wants it), any M, N, K, fp32 output.
//!
//! Tiling: 128 (K) x 128 (M) stationary tiles, 128 x 512 moving tiles, one PSUM bank per
//! [128, 512] output block. For each 512-wide column block of `b`, its K strip is loaded once
//! (when it takes at most half an SBUF partition; a longer K streams `b` step by step).
//! Rows of `c` go in super-blocks of 512: each K step loads one [128, 512] strip of `a` (1 KiB
//! contiguous per partition, so DMA descriptors are not overhead-bound) and feeds four matmuls,
//! one per 128-row block, accumulating in four PSUM banks. The Vector engine evacuates each
//! bank to SBUF and a DMA stores it (triggered from the GpSimd queue so that loads keep
//! flowing). Next-fit reuse of freed tiles and the builder's dependency tracking turn this into
//! multi-buffering.
//!
//! fp8 on NeuronCore-v3/v4 uses the `double_row` perf mode: each K step covers 256 rows, held
//! as two 128-row halves side by side in the free dimension (`[128, 2, X]`), in the time of a
//! 128-row step — twice the throughput [N-arch3]. A K remainder below 256 runs single-row.

use rainier_arch::Chip;
use rainier_isa::{contiguous_dims, Dim, DmaOperand, Engine, Program, Tile};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const KT: u64 = 128;
const MT: u64 = 128;
const NT: u64 = 512;
/// Rows of `c` per super-block: four PSUM banks of accumulators, leaving four for the next.
const M_SUPER: u64 = 4 * MT;

/// One contraction step: `rows` halves of `ksz` rows each from `k0` (2 with double row).
#[derive(Debug, Clone, Copy)]
struct KStep {
    k0: u64,
    ksz: u64,
    rows: u64,
}

/// K in steps of 256 (two 128-row halves) with double row, then 128-row steps for the rest.
fn k_steps(k: u64, double_row: bool) -> Vec<KStep> {
    let full = if double_row { k / (2 * KT) } else { 0 };
    let mut steps: Vec<KStep> =
        (0..full).map(|i| KStep { k0: i * 2 * KT, ksz: KT, rows: 2 }).collect();
    let rest = full * 2 * KT;
    steps.extend(blocks(k - rest, KT).map(|(k0, ksz)| KStep { k0: rest + k0, ksz, rows: 1 }));
    steps
}

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
    let fp8 = matches!(dtype, DType::Fp8E4m3 | DType::Fp8E5m2 | DType::Fp8E4m3fn);
    let steps = k_steps(k, fp8 && chip.params().core.has_fp8_double_row());
    let esz = dtype.size_bytes() as u64;
    // Loads rows `k0..k0 + rows·ksz` of `src` (columns `c0..c0 + width`) into a tile of `ksz`
    // partitions holding the `rows` halves side by side: one DMA, the halves as the middle
    // dimension of the HBM pattern (1 KiB per partition at width 512, as for a bf16 step).
    let load = |kb: &mut KernelBuilder,
                src,
                step: KStep,
                c0: u64,
                width: u64|
     -> Result<Tile, KernelError> {
        let t = kb.sbuf(step.ksz as u32, dtype, &[step.rows * width])?;
        let mut hbm = kb.block(src, step.k0..step.k0 + step.ksz, c0..c0 + width);
        if step.rows == 2 {
            let row_stride = hbm.dims[0].stride;
            hbm.dims.insert(1, Dim { stride: row_stride * step.ksz as i64, size: 2 });
        }
        kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(hbm));
        Ok(t)
    };
    // The K strip of b for a column block stays in SBUF when it takes at most half of a
    // partition; a longer K streams b with a's steps instead (re-read per row super-block).
    let strip_bytes = steps.iter().map(|s| s.rows * NT.min(n) * esz).sum::<u64>();
    let keep_strip =
        strip_bytes <= u64::from(chip.params().core.sbuf_bytes_per_partition.value) / 2;
    for (n0, nsz) in blocks(n, NT) {
        let mut b_strip = Vec::new();
        if keep_strip {
            for &step in &steps {
                b_strip.push(load(&mut kb, b, step, n0, nsz)?);
            }
        }
        for (ms0, mssz) in blocks(m, M_SUPER) {
            let row_blocks: Vec<(u64, u64)> = blocks(mssz, MT).collect();
            let mut accs = Vec::with_capacity(row_blocks.len());
            for &(_, msz) in &row_blocks {
                accs.push(kb.psum(msz as u32, DType::F32, &[nsz])?);
            }
            for (i, &step) in steps.iter().enumerate() {
                let a_strip = load(&mut kb, a, step, ms0, mssz)?;
                let b_tile = match b_strip.get(i) {
                    Some(t) => t.clone(),
                    None => load(&mut kb, b, step, n0, nsz)?,
                };
                for (acc, &(m0, msz)) in accs.iter().zip(&row_blocks) {
                    // Rows of this block in each half: [rows, msz] with the halves mssz apart.
                    let stationary = Tile {
                        offset_bytes: a_strip.offset_bytes + m0 * esz,
                        dims: if step.rows == 2 {
                            vec![Dim { stride: mssz as i64, size: 2 }, Dim { stride: 1, size: msz }]
                        } else {
                            contiguous_dims(&[msz])
                        },
                        ..a_strip.clone()
                    };
                    if step.rows == 2 {
                        kb.matmul_double_row(acc, &stationary, &b_tile, i > 0);
                    } else {
                        kb.matmul(acc, &stationary, &b_tile, i > 0);
                    }
                }
                kb.free(&a_strip)?;
                if !keep_strip {
                    kb.free(&b_tile)?;
                }
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
