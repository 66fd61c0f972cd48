//! `gemm`: `c[M, N] = aᵀ · b` for `a: [K, M]`, `b: [K, N]` in HBM (the contraction on the
//! partition axis, as TensorE wants it), any M, N, K, fp32 output.
//!
//! The bound is DMA: a 128 x 128 x 512 matmul consumes its operands faster than 16 DMA engines
//! bring them unless each loaded element feeds many matmuls. Per 128-row K
//! step, an output block of `Mc x Nb` loads `128 (Mc + Nb)` elements for
//! `(Mc / 128)(Nb / 512)` matmuls; so the blocks are as large as SBUF allows, the way the
//! tutorial's fully optimised kernel blocks (85 % of peak on trn1, `timings.json`):
//!
//! - column blocks of `b` up to 2048 wide (`Nb`); for each, row chunks of `c` (`Mc`);
//! - K in blocks of steps: a block's `b` tiles (`[128, Nb]` per step) and `a` tiles
//!   (`[128, Mc]`) are loaded once and every matmul of the chunk reads them;
//! - matmuls accumulate over the K block in PSUM, four banks at a time (one bank per
//!   `[128, 512]` output tile; the other four fill meanwhile), then the Vector engine adds each
//!   bank into the chunk's fp32 accumulator in SBUF (copies it, for the first K block);
//! - when all of K is one block (the whole K strip fits), the banks are copied out and stored
//!   directly; otherwise the accumulators are stored after the last K block. Loads are
//!   triggered from the Sync engine and stores from the GpSimd engine, so loads keep flowing;
//!   the builder spreads them over DMA queues.
//!
//! Next-fit reuse of freed tiles and the builder's dependency tracking turn this into
//! multi-buffering.
//!
//! fp8 on NeuronCore-v3/v4 uses the `double_row` perf mode: each K step covers 256 rows, held
//! as two 128-row halves side by side in the free dimension (`[128, 2, X]`), in the time of a
//! 128-row step — twice the throughput [N-arch3]. A K remainder below 256 runs single-row.
//!
//! MX on NeuronCore-v4 (`dtype` one of the packed types): the inputs are offline-quantized in
//! the layout `nc_matmul_mx` reads, `a [K/4, M]` and `b [K/4, N]` packed four values along K
//! (row `r`, element `q` is contraction index `4r + q`) with e8m0 scales `a_scale [K/32, M]`
//! and `b_scale [K/32, N]` (one per 8 packed rows × 1 column, as OCP MX groups 32 values).
//! Each K step is 128 packed rows (512 values) in the time of a bf16 step [N-arch4]; its scale
//! rows go to the first four partitions of each 32-partition quadrant of a scale tile, four
//! DMAs per step as the MX tutorial's `load_scales_scattered` does. K must be a multiple of 128.

use rainier_arch::ChipParams;
use rainier_isa::{contiguous_dims, AluOp, Dim, DmaOperand, Engine, Program, Tile};
use rainier_tensor::DType;

use crate::{KernelBuilder, KernelError};

const KT: u64 = 128;
const MT: u64 = 128;
/// Output columns per PSUM bank (2 KiB of fp32).
const NT: u64 = 512;
/// PSUM banks accumulating at once, leaving the other four to fill meanwhile.
const GROUP_BANKS: u64 = 4;
/// Widest column block of `b`.
const NB_MAX: u64 = 4 * NT;

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

/// Block sizes for one gemm: column block `nb`, row chunk `mc`, K steps per block `kb`.
#[derive(Debug, Clone, Copy)]
struct Blocking {
    nb: u64,
    mc: u64,
    kb: usize,
}

impl Blocking {
    /// The largest blocks that fit: the whole K strip of `b` if it takes at most half of a
    /// partition (one K block, PSUM accumulation only, the strip loaded once per column block
    /// and read by every row chunk of one PSUM group's rows); else K blocks whose `b` tiles
    /// and whose chunk's `a` tiles each take an eighth, and fp32 accumulators for `mc` rows at
    /// most three eighths.
    fn choose(sbuf: u64, m: u64, n: u64, steps: &[KStep], esz: u64) -> Self {
        let nb = n.min(NB_MAX);
        // Bytes per partition of one column (of a or b) over all of K.
        let column: u64 = steps.iter().map(|s| s.rows * esz).sum::<u64>().max(1);
        // The strip is read by every chunk, so chunks only need to fill one PSUM group:
        // small chunks let the first matmuls start as soon as their a tiles arrive. The
        // chunk's a tiles for all of K must take at most an eighth.
        let group_rows = m.min((GROUP_BANKS / nb.div_ceil(NT)).max(1) * MT);
        if column * nb <= sbuf / 2 && column * group_rows <= sbuf / 8 {
            return Blocking { nb, mc: group_rows, kb: steps.len().max(1) };
        }
        // K blocks: b tiles in an eighth, the chunk's a tiles in another eighth, fp32
        // accumulators in three eighths.
        let widest = steps.iter().map(|s| s.rows * esz).max().unwrap_or(1).max(1);
        let kb = ((sbuf / 8) / (widest * nb)).max(1);
        let by_acc = (sbuf * 3 / 8) / (nb * 4) * MT;
        let by_a = (sbuf / 8) / (kb * widest) / MT * MT;
        Blocking { nb, mc: m.min(by_acc.min(by_a).max(MT)), kb: kb as usize }
    }
}

/// Columns `c0..c0 + w` of each of a step tile's `rows` halves (each `width` wide).
fn columns(t: &Tile, rows: u64, width: u64, c0: u64, w: u64) -> Tile {
    let esz = t.dtype.size_bytes() as u64;
    Tile {
        offset_bytes: t.offset_bytes + c0 * esz,
        dims: if rows == 2 {
            vec![Dim { stride: width as i64, size: 2 }, Dim { stride: 1, size: w }]
        } else {
            contiguous_dims(&[w])
        },
        ..t.clone()
    }
}

/// One K step of an operand in SBUF: its data tile and, for MX, its scale tile.
#[derive(Debug, Clone)]
struct Operand {
    data: Tile,
    scale: Option<Tile>,
}

impl Operand {
    /// Columns `c0..c0 + w` of the step tile(s), `width` wide.
    fn columns(&self, rows: u64, width: u64, c0: u64, w: u64) -> Operand {
        Operand {
            data: columns(&self.data, rows, width, c0, w),
            scale: self.scale.as_ref().map(|s| columns(s, 1, width, c0, w)),
        }
    }

    fn free(&self, kb: &mut KernelBuilder) -> Result<(), KernelError> {
        kb.free(&self.data)?;
        self.scale.as_ref().map_or(Ok(()), |s| kb.free(s))
    }
}

fn shape_error(detail: String) -> KernelError {
    KernelError::Shape { what: "gemm".into(), detail }
}

/// The gemm program for `chip`; inputs `a` and `b` are `dtype` in HBM (with `a_scale` and
/// `b_scale` for the MX types), output `c` is fp32.
pub fn gemm(
    chip: impl Into<ChipParams>,
    m: u64,
    n: u64,
    k: u64,
    dtype: DType,
) -> Result<Program, KernelError> {
    gemm_to(chip, m, n, k, dtype, DType::F32)
}

/// [`gemm`] writing `c` as `out` (fp32, bf16 or fp16): the accumulation stays fp32 in PSUM
/// and SBUF, and the Vector engine rounds once as it evacuates the last K block, as a layer's
/// GEMM writes bf16 activations (half the output bytes of fp32, which bound small-K GEMMs).
pub fn gemm_to(
    chip: impl Into<ChipParams>,
    m: u64,
    n: u64,
    k: u64,
    dtype: DType,
    out: DType,
) -> Result<Program, KernelError> {
    let chip: ChipParams = chip.into();
    check_gemm(&chip, m, n, k, dtype, out)?;
    let mx = dtype.is_packed();
    let mut kb = KernelBuilder::new(&chip);
    // HBM rows of a and b: K values, or K/4 packed MX elements.
    let rows = if mx { k / 4 } else { k };
    let a = kb.input("a", dtype, &[rows, m])?;
    let b = kb.input("b", dtype, &[rows, n])?;
    let scales = if mx {
        Some((
            kb.input("a_scale", DType::U8, &[k / 32, m])?,
            kb.input("b_scale", DType::U8, &[k / 32, n])?,
        ))
    } else {
        None
    };
    let c = kb.output("c", out, &[m, n])?;
    gemm_into(&mut kb, GemmTensors { a, b, scales, c }, m, n, k, dtype, out)?;
    kb.finish()
}

/// The HBM tensors of one gemm: `a [K, M]` and `b [K, N]` (MX: packed `[K/4, ..]`, with
/// scales `[K/32, ..]`), `c [M, N]`, each of exactly that shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmTensors {
    pub a: usize,
    pub b: usize,
    pub scales: Option<(usize, usize)>,
    pub c: usize,
}

fn check_gemm(
    chip: &ChipParams,
    m: u64,
    n: u64,
    k: u64,
    dtype: DType,
    out: DType,
) -> Result<(), KernelError> {
    if !matches!(out, DType::F32 | DType::Bf16 | DType::F16) {
        return Err(shape_error(format!("output dtype {out}: fp32, bf16 or fp16")));
    }
    if m == 0 || n == 0 || k == 0 {
        return Err(shape_error(format!("M={m}, N={n}, K={k} must be positive")));
    }
    let mx = dtype.is_packed();
    if mx && chip.core.generation < rainier_arch::Generation::V4 {
        return Err(shape_error(format!("{dtype} (MX) needs NeuronCore-v4 (trn3), not {chip}")));
    }
    if mx && k % 128 != 0 {
        return Err(shape_error(format!(
            "K={k}: MX data is packed in groups of 32 values over 8 partitions of 4, so K must be a multiple of 128 (pad it)"
        )));
    }
    if mx && m % 2 != 0 {
        return Err(shape_error(format!(
            "M={m}: nc_matmul_mx takes an even stationary free size, so M must be even (pad it)"
        )));
    }
    Ok(())
}

/// Emits [`gemm_to`]'s instructions into `kb` on tensors declared there.
pub(crate) fn gemm_into(
    kb: &mut KernelBuilder,
    tensors: GemmTensors,
    m: u64,
    n: u64,
    k: u64,
    dtype: DType,
    out_dtype: DType,
) -> Result<(), KernelError> {
    let chip = kb.chip().clone();
    check_gemm(&chip, m, n, k, dtype, out_dtype)?;
    let mx = dtype.is_packed();
    let rows = if mx { k / 4 } else { k };
    let GemmTensors { a, b, scales, c } = tensors;
    let fp8 = matches!(dtype, DType::Fp8E4m3 | DType::Fp8E5m2 | DType::Fp8E4m3fn);
    let steps = k_steps(rows, fp8 && chip.core.has_fp8_double_row());
    // One matmul per (128 rows of c, 512 columns, K step) at least: refuse before building
    // what could not be held.
    let matmuls = u128::from(m.div_ceil(128)) * u128::from(n.div_ceil(512)) * steps.len() as u128;
    if matmuls > crate::MAX_INSTRUCTIONS as u128 {
        return Err(KernelError::TooLarge { limit: crate::MAX_INSTRUCTIONS });
    }
    // SBUF bytes per partition of one column per step (an MX scale byte with each element).
    let esz = dtype.size_bytes() as u64 + u64::from(mx);
    let sbuf = u64::from(chip.core.sbuf_bytes_per_partition.value);
    let plan = Blocking::choose(sbuf, m, n, &steps, esz);
    // Loads rows `k0..k0 + rows·ksz` of `src` (columns `c0..c0 + width`) into a tile of `ksz`
    // partitions holding the `rows` halves side by side: one DMA, the halves as the middle
    // dimension of the HBM pattern. MX: the step's scale rows too, four per quadrant.
    let load = |kb: &mut KernelBuilder, src: usize, step: KStep, c0: u64, width: u64| {
        let t = kb.sbuf(step.ksz as u32, dtype, &[step.rows * width])?;
        let mut hbm = kb.block(src, step.k0..step.k0 + step.ksz, c0..c0 + width);
        if step.rows == 2 {
            let row_stride = hbm.dims[0].stride;
            hbm.dims.insert(1, Dim { stride: row_stride * step.ksz as i64, size: 2 });
        }
        kb.dma(DmaOperand::Tile(t.clone()), DmaOperand::Hbm(hbm));
        let scale = match scales {
            Some((a_scale, b_scale)) => {
                let src_scale = if src == a { a_scale } else { b_scale };
                let parts = rainier_isa::mx_scale_partitions(step.ksz as u32);
                let s = kb.sbuf(parts, DType::U8, &[width])?;
                let row0 = step.k0 / 8;
                for q in 0..(step.ksz / 32).max(1) {
                    let quadrant = Tile {
                        start_partition: s.start_partition + 32 * q as u32,
                        partitions: 4,
                        ..s.clone()
                    };
                    let hbm = kb.block(src_scale, row0 + 4 * q..row0 + 4 * q + 4, c0..c0 + width);
                    kb.dma(DmaOperand::Tile(quadrant), DmaOperand::Hbm(hbm));
                }
                Some(s)
            }
            None => None,
        };
        Ok::<Operand, KernelError>(Operand { data: t, scale })
    };
    let k_blocks: Vec<&[KStep]> = steps.chunks(plan.kb).collect();
    let single = k_blocks.len() == 1;
    for (n0, nsz) in blocks(n, plan.nb) {
        let n_tiles: Vec<(u64, u64)> = blocks(nsz, NT).collect();
        // With one K block, the strip is loaded with the first row chunk's a tiles (step by
        // step, so the first matmuls start early) and kept for the other chunks.
        let mut strip: Vec<Operand> = Vec::new();
        let group = (GROUP_BANKS / n_tiles.len() as u64).max(1) as usize;
        for (mc0, mcsz) in blocks(m, plan.mc) {
            let m_tiles: Vec<(u64, u64)> = blocks(mcsz, MT).collect();
            let mut accs = Vec::new();
            // Narrower outputs: the last K block's sums land in tiles of the output dtype.
            let mut outs = Vec::new();
            if !single {
                for &(_, msz) in &m_tiles {
                    accs.push(kb.sbuf(msz as u32, DType::F32, &[nsz])?);
                }
            }
            for (kbi, kblock) in k_blocks.iter().enumerate() {
                let last_block = kbi + 1 == k_blocks.len();
                if !single && last_block && out_dtype != DType::F32 {
                    for &(_, msz) in &m_tiles {
                        outs.push(kb.sbuf(msz as u32, out_dtype, &[nsz])?);
                    }
                }
                let mut b_tiles = Vec::with_capacity(kblock.len());
                let mut a_tiles = Vec::with_capacity(kblock.len());
                let first_chunk = strip.is_empty();
                for &step in kblock.iter() {
                    if !single {
                        b_tiles.push(load(kb, b, step, n0, nsz)?);
                    } else if first_chunk {
                        strip.push(load(kb, b, step, n0, nsz)?);
                    }
                    a_tiles.push(load(kb, a, step, mc0, mcsz)?);
                }
                let b_tiles: &[Operand] = if single { &strip } else { &b_tiles };
                for (g, tiles) in m_tiles.chunks(group).enumerate() {
                    // One PSUM bank per (row tile, column tile) of the group.
                    let mut banks = Vec::with_capacity(tiles.len() * n_tiles.len());
                    for &(_, msz) in tiles {
                        for &(_, ntsz) in &n_tiles {
                            banks.push(kb.psum(msz as u32, DType::F32, &[ntsz])?);
                        }
                    }
                    for (i, step) in kblock.iter().enumerate() {
                        for (r, &(m0, msz)) in tiles.iter().enumerate() {
                            let st = a_tiles[i].columns(step.rows, mcsz, m0, msz);
                            for (j, &(c0, ntsz)) in n_tiles.iter().enumerate() {
                                let mv = b_tiles[i].columns(step.rows, nsz, c0, ntsz);
                                let acc = &banks[r * n_tiles.len() + j];
                                match (&st.scale, &mv.scale) {
                                    (Some(ss), Some(ms)) => {
                                        kb.matmul_mx(acc, (&st.data, ss), (&mv.data, ms), i > 0)
                                    }
                                    _ if step.rows == 2 => {
                                        kb.matmul_double_row(acc, &st.data, &mv.data, i > 0)
                                    }
                                    _ => kb.matmul(acc, &st.data, &mv.data, i > 0),
                                }
                            }
                        }
                    }
                    for (r, &(m0, msz)) in tiles.iter().enumerate() {
                        for (j, &(c0, ntsz)) in n_tiles.iter().enumerate() {
                            let bank = &banks[r * n_tiles.len() + j];
                            if single {
                                let out = kb.sbuf(msz as u32, out_dtype, &[ntsz])?;
                                kb.copy(Engine::Vector, &out, bank);
                                let row = mc0 + m0;
                                let col = n0 + c0;
                                let dst = kb.block(c, row..row + msz, col..col + ntsz);
                                let src = DmaOperand::Tile(out.clone());
                                kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(dst), src);
                                kb.free(&out)?;
                            } else {
                                let acc = columns(&accs[g * group + r], 1, nsz, c0, ntsz);
                                if kbi == 0 {
                                    kb.copy(Engine::Vector, &acc, bank);
                                } else if let Some(o) = outs.get(g * group + r) {
                                    let dst = columns(o, 1, nsz, c0, ntsz);
                                    kb.tensor_tensor(Engine::Vector, &dst, &acc, bank, AluOp::Add);
                                } else {
                                    kb.tensor_tensor(Engine::Vector, &acc, &acc, bank, AluOp::Add);
                                }
                            }
                            kb.free(bank)?;
                        }
                    }
                }
                for t in &a_tiles {
                    t.free(kb)?;
                }
                if !single {
                    for t in b_tiles {
                        t.free(kb)?;
                    }
                }
            }
            for (i, (acc, &(m0, msz))) in accs.iter().zip(&m_tiles).enumerate() {
                let row = mc0 + m0;
                let dst = kb.block(c, row..row + msz, n0..n0 + nsz);
                let src = outs.get(i).unwrap_or(acc);
                kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(dst), DmaOperand::Tile(src.clone()));
                kb.free(acc)?;
                if let Some(o) = outs.get(i) {
                    kb.free(o)?;
                }
            }
        }
        for t in &strip {
            t.free(kb)?;
        }
    }
    Ok(())
}

/// Host-side MX quantization of `values` (`[k][cols]` row-major, contraction first) into
/// `gemm`'s MX inputs: packed data `[k/4, cols]` (row `r`, element `q` = value row `4r + q`) and
/// e8m0 scales `[k/32, cols]`, with `quantize_mx`'s documented block scale
/// `2^(⌊log2 amax⌋ − (E_max − 1))` per 32 values of one column (E_max 15 e5m2, 8 e4m3fn, 2
/// e2m1) and each value rounded to nearest even, saturating.
///
/// # Panics
/// If `dtype` is not packed, `k` is not a multiple of 32 or `values` is not `k · cols` long
/// (caller bugs).
pub fn quantize_mx_host(
    dtype: DType,
    k: usize,
    cols: usize,
    values: &[f32],
) -> (rainier_tensor::HostTensor, rainier_tensor::HostTensor) {
    let emax = dtype.packed_max_exponent().expect("a packed MX dtype");
    assert!(k % 32 == 0 && values.len() == k * cols, "MX values [{k}, {cols}]");
    let esz = dtype.size_bytes();
    let mut data = vec![0u8; k / 4 * cols * esz];
    let mut scale = vec![0u8; k / 32 * cols];
    for g in 0..k / 32 {
        for col in 0..cols {
            let at = |i: usize| values[(32 * g + i) * cols + col];
            let byte = rainier_tensor::mx_scale_byte((0..32).map(at), emax);
            scale[g * cols + col] = byte;
            let x = rainier_tensor::e8m0(byte);
            for r in 0..8 {
                let q: [f32; 4] = std::array::from_fn(|i| at(4 * r + i) / x);
                let row = 8 * g + r;
                dtype.pack_x4(q, &mut data[(row * cols + col) * esz..][..esz]);
            }
        }
    }
    let t = |dtype, shape: [usize; 2], data| rainier_tensor::HostTensor {
        dtype,
        shape: shape.to_vec(),
        data,
    };
    (t(dtype, [k / 4, cols], data), t(DType::U8, [k / 32, cols], scale))
}

/// The values of `gemm`'s MX input (`[k/4, cols]` data, `[k/32, cols]` scales) as `[k][cols]`.
pub fn dequantize_mx_host(
    data: &rainier_tensor::HostTensor,
    scale: &rainier_tensor::HostTensor,
) -> Vec<f64> {
    let (rows, cols) = (data.shape[0], data.shape[1]);
    let esz = data.dtype.size_bytes();
    let mut out = vec![0f64; 4 * rows * cols];
    for r in 0..rows {
        for col in 0..cols {
            let vals = data.dtype.unpack_x4(&data.data[(r * cols + col) * esz..][..esz]);
            let x = f64::from(rainier_tensor::e8m0(scale.data[r / 8 * cols + col]));
            for (q, v) in vals.into_iter().enumerate() {
                out[(4 * r + q) * cols + col] = f64::from(v) * x;
            }
        }
    }
    out
}
