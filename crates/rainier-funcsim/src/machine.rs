use rainier_arch::CoreParams;
use rainier_isa::{
    pattern_extent, ActFunc, Affine, Dim, DmaOperand, HbmAccess, Memory, Op, Program, ReduceCmd,
    ReduceOp, ScalarOperand, Tile,
};
use rainier_tensor::DType;

use crate::matmul::matmul_f32;

/// A failure while executing one instruction. The verifier rules these out for verified
/// programs; they guard callers that execute unverified instructions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("{0} is outside its memory")]
    OutOfBounds(String),
    #[error("HBM tensor #{0} is not declared")]
    UnknownTensor(usize),
    #[error("operand shapes disagree: {0}")]
    Shape(String),
    /// A data-dependent address (an indirect DMA's index) outside its tensor.
    #[error("{0}")]
    IndexOutOfRange(String),
}

/// The state of one NeuronCore plus its program's HBM tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    core: CoreParams,
    sbuf: Vec<u8>,
    psum: Vec<u8>,
    /// One buffer per declared tensor of the program, in declaration order.
    hbm: Vec<Vec<u8>>,
    hbm_dtypes: Vec<DType>,
    /// Semaphore values.
    pub semaphores: Vec<u32>,
    /// The Vector engine's per-partition max accumulator registers (`range_select`,
    /// `select_reduce`); -inf until an instruction sets them.
    pub vector_accumulators: Vec<f32>,
}

/// Where an element lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Sbuf,
    Psum,
    Hbm(usize),
}

/// Byte offsets (within one partition) of a tile's elements, in row-major order of its dims.
fn free_offsets(t: &Tile) -> Vec<usize> {
    let esz = t.dtype.size_bytes() as i64;
    let mut offs = Vec::with_capacity(t.free_len() as usize);
    let mut idx = vec![0u64; t.dims.len()];
    let total = t.free_len();
    for _ in 0..total {
        let e: i64 = t.dims.iter().zip(&idx).map(|(d, &i)| d.stride * i as i64).sum();
        offs.push((t.offset_bytes as i64 + e * esz) as usize);
        for j in (0..idx.len()).rev() {
            idx[j] += 1;
            if idx[j] < t.dims[j].size {
                break;
            }
            idx[j] = 0;
        }
    }
    offs
}

/// The multi-indices of a pattern in row-major order, flattened (`dims.len()` per element).
fn multi_indices(sizes: &[u64]) -> Vec<u64> {
    let total: u64 = sizes.iter().product();
    let mut out = Vec::with_capacity(total as usize * sizes.len());
    let mut idx = vec![0u64; sizes.len()];
    for _ in 0..total {
        out.extend_from_slice(&idx);
        for j in (0..idx.len()).rev() {
            idx[j] += 1;
            if idx[j] < sizes[j] {
                break;
            }
            idx[j] = 0;
        }
    }
    out
}

fn act(func: ActFunc, x: f32) -> f32 {
    let x = f64::from(x);
    let y = match func {
        ActFunc::Identity => x,
        ActFunc::Exp => x.exp(),
        ActFunc::Log => x.ln(),
        ActFunc::Tanh => x.tanh(),
        ActFunc::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        ActFunc::Relu => x.max(0.0),
        ActFunc::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        ActFunc::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        ActFunc::Silu => x / (1.0 + (-x).exp()),
        ActFunc::Sqrt => x.sqrt(),
        ActFunc::Rsqrt => 1.0 / x.sqrt(),
        ActFunc::Square => x * x,
        ActFunc::Reciprocal => 1.0 / x,
        ActFunc::Abs => x.abs(),
        ActFunc::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        ActFunc::Sin => x.sin(),
        ActFunc::Cos => x.cos(),
        ActFunc::Tan => x.tan(),
        ActFunc::Arctan => x.atan(),
        ActFunc::Erf => libm::erf(x),
        ActFunc::ErfDx => 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp(),
        ActFunc::Softplus => softplus(x),
        ActFunc::Mish => x * softplus(x).tanh(),
        ActFunc::GeluApproxSigmoid => x / (1.0 + (-1.702 * x).exp()),
        ActFunc::GeluDx => {
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        ActFunc::SiluDx => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
    };
    y as f32
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl Machine {
    /// A core with zeroed SBUF, PSUM and semaphores, and zeroed HBM tensors for `program`.
    pub fn new(program: &Program, core: &CoreParams) -> Self {
        let parts = core.partitions.value as usize;
        Machine {
            core: core.clone(),
            sbuf: vec![0; parts * core.sbuf_bytes_per_partition.value as usize],
            psum: vec![0; parts * core.psum_bytes_per_partition.value as usize],
            hbm: program
                .tensors
                .iter()
                .map(|t| vec![0; (t.len() as usize) * t.dtype.size_bytes()])
                .collect(),
            hbm_dtypes: program.tensors.iter().map(|t| t.dtype).collect(),
            semaphores: vec![0; core.semaphores.value as usize],
            vector_accumulators: vec![f32::NEG_INFINITY; parts],
        }
    }

    /// The bytes of HBM tensor `index`.
    pub fn hbm(&self, index: usize) -> &[u8] {
        &self.hbm[index]
    }

    /// Mutable bytes of HBM tensor `index`.
    pub fn hbm_mut(&mut self, index: usize) -> &mut [u8] {
        &mut self.hbm[index]
    }

    fn region(&self, r: Region) -> &[u8] {
        match r {
            Region::Sbuf => &self.sbuf,
            Region::Psum => &self.psum,
            Region::Hbm(i) => &self.hbm[i],
        }
    }

    fn region_mut(&mut self, r: Region) -> &mut [u8] {
        match r {
            Region::Sbuf => &mut self.sbuf,
            Region::Psum => &mut self.psum,
            Region::Hbm(i) => &mut self.hbm[i],
        }
    }

    fn partition_bytes(&self, m: Memory) -> usize {
        match m {
            Memory::Sbuf => self.core.sbuf_bytes_per_partition.value as usize,
            Memory::Psum => self.core.psum_bytes_per_partition.value as usize,
        }
    }

    /// Absolute byte addresses of a tile's elements, partition-major then row-major free order.
    fn tile_addresses(&self, t: &Tile) -> Result<(Region, Vec<usize>), ExecError> {
        let pb = self.partition_bytes(t.memory);
        let (lo, hi) = t.byte_range();
        let parts = self.core.partitions.value;
        if lo < 0
            || hi > pb as i128
            || t.start_partition + t.partitions > parts
            || t.dims.is_empty()
        {
            return Err(ExecError::OutOfBounds(format!("tile {t}")));
        }
        let offs = free_offsets(t);
        let mut addrs = Vec::with_capacity(offs.len() * t.partitions as usize);
        for p in t.start_partition..t.start_partition + t.partitions {
            let base = p as usize * pb;
            addrs.extend(offs.iter().map(|o| base + o));
        }
        let region = if t.memory == Memory::Sbuf { Region::Sbuf } else { Region::Psum };
        Ok((region, addrs))
    }

    fn hbm_addresses(&self, h: &HbmAccess) -> Result<(Region, DType, Vec<usize>), ExecError> {
        let buf = self.hbm.get(h.tensor).ok_or(ExecError::UnknownTensor(h.tensor))?;
        let dtype = self.hbm_dtypes[h.tensor];
        let esz = dtype.size_bytes();
        let sizes: Vec<u64> = h.dims.iter().map(|d| d.size).collect();
        let total: u64 = sizes.iter().product();
        let mut addrs = Vec::with_capacity(total as usize);
        let mut idx = vec![0u64; sizes.len()];
        for _ in 0..total {
            let e = h.offset as i64
                + h.dims.iter().zip(&idx).map(|(d, &i)| d.stride * i as i64).sum::<i64>();
            let a = e * esz as i64;
            if a < 0 || a as usize + esz > buf.len() {
                return Err(ExecError::OutOfBounds(format!(
                    "HBM tensor #{} element {e}",
                    h.tensor
                )));
            }
            addrs.push(a as usize);
            for j in (0..idx.len()).rev() {
                idx[j] += 1;
                if idx[j] < sizes[j] {
                    break;
                }
                idx[j] = 0;
            }
        }
        Ok((Region::Hbm(h.tensor), dtype, addrs))
    }

    /// Checks a tile's bounds and returns its region, bytes per partition, the byte offsets
    /// (within a partition) of its contiguous runs, and the elements per run.
    fn tile_runs(&self, t: &Tile) -> Result<(Region, usize, Vec<usize>, usize), ExecError> {
        let pb = self.partition_bytes(t.memory);
        let (lo, hi) = t.byte_range();
        if lo < 0
            || hi > pb as i128
            || t.start_partition + t.partitions > self.core.partitions.value
            || t.dims.is_empty()
        {
            return Err(ExecError::OutOfBounds(format!("tile {t}")));
        }
        let region = if t.memory == Memory::Sbuf { Region::Sbuf } else { Region::Psum };
        let inner = t.dims[t.dims.len() - 1];
        if inner.stride == 1 {
            let outer = Tile { dims: t.dims[..t.dims.len() - 1].to_vec(), ..t.clone() };
            let runs = if outer.dims.is_empty() {
                vec![t.offset_bytes as usize]
            } else {
                free_offsets(&outer)
            };
            Ok((region, pb, runs, inner.size as usize))
        } else {
            Ok((region, pb, free_offsets(t), 1))
        }
    }

    /// Reads a tile as fp32 values, `[partition][free element]` row-major.
    pub fn read_tile(&self, t: &Tile) -> Result<Vec<f32>, ExecError> {
        let (r, pb, runs, len) = self.tile_runs(t)?;
        let esz = t.dtype.size_bytes();
        let mem = self.region(r);
        let mut out = Vec::with_capacity(t.partitions as usize * runs.len() * len);
        for p in t.start_partition as usize..(t.start_partition + t.partitions) as usize {
            for &off in &runs {
                let a = p * pb + off;
                t.dtype.decode_into(&mem[a..a + len * esz], &mut out);
            }
        }
        Ok(out)
    }

    /// Writes fp32 values into a tile, rounding to its dtype.
    pub fn write_tile(&mut self, t: &Tile, values: &[f32]) -> Result<(), ExecError> {
        let (r, pb, runs, len) = self.tile_runs(t)?;
        let total = t.partitions as usize * runs.len() * len;
        if values.len() != total {
            return Err(ExecError::Shape(format!(
                "{} values for a tile of {total} elements",
                values.len()
            )));
        }
        let esz = t.dtype.size_bytes();
        let dtype = t.dtype;
        let start = t.start_partition as usize;
        let mem = self.region_mut(r);
        for (i, chunk) in values.chunks_exact(len.max(1)).enumerate() {
            let (p, run) = (start + i / runs.len(), runs[i % runs.len()]);
            let a = p * pb + run;
            dtype.encode_into(chunk, &mut mem[a..a + len * esz]);
        }
        Ok(())
    }

    fn read_raw(&self, r: Region, addrs: &[usize], esz: usize) -> Vec<u8> {
        let mem = self.region(r);
        let mut out = Vec::with_capacity(addrs.len() * esz);
        for &a in addrs {
            out.extend_from_slice(&mem[a..a + esz]);
        }
        out
    }

    fn write_raw(&mut self, r: Region, addrs: &[usize], esz: usize, bytes: &[u8]) {
        let mem = self.region_mut(r);
        for (&a, b) in addrs.iter().zip(bytes.chunks_exact(esz)) {
            mem[a..a + esz].copy_from_slice(b);
        }
    }

    fn scalar_values(&self, s: &ScalarOperand, partitions: usize) -> Result<Vec<f32>, ExecError> {
        match s {
            ScalarOperand::Imm(v) => Ok(vec![*v; partitions]),
            ScalarOperand::Vector(t) => self.read_tile(t),
        }
    }

    /// Executes one instruction's semantics (no semaphore effects; see [`crate::run`]).
    pub fn execute(&mut self, op: &Op) -> Result<(), ExecError> {
        match op {
            Op::DmaCopy { dst, src, .. } => self.dma(dst, src),
            Op::DmaIndirect { dst, src, index, oob_skip, accumulate, rows, .. } => {
                self.dma_indirect(dst, src, index, *oob_skip, *accumulate, *rows)
            }
            Op::Matmul { dst, stationary, moving, accumulate, double_row } => {
                self.matmul(dst, stationary, moving, *accumulate, *double_row)
            }
            Op::MatmulMx {
                dst,
                stationary,
                moving,
                stationary_scale,
                moving_scale,
                accumulate,
            } => {
                self.matmul_mx(dst, stationary, moving, stationary_scale, moving_scale, *accumulate)
            }
            Op::QuantizeMx { dst, src, scale } => self.quantize_mx(dst, src, scale),
            Op::Transpose { dst, src } => self.transpose(dst, src),
            Op::DmaTranspose { dst, src, .. } => self.dma_transpose(dst, src),
            Op::TensorTensor { dst, in0, in1, op } => {
                let a = self.read_tile(in0)?;
                let b = self.read_tile(in1)?;
                let out: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| op.apply(x, y)).collect();
                self.write_tile(dst, &out)
            }
            Op::TensorScalar { dst, src, stages } => {
                let mut x = self.read_tile(src)?;
                let f = src.free_len() as usize;
                for st in stages {
                    let v = self.scalar_values(&st.operand, src.partitions as usize)?;
                    for (i, e) in x.iter_mut().enumerate() {
                        let s = v[i / f.max(1)];
                        *e = if st.reverse { st.op.apply(s, *e) } else { st.op.apply(*e, s) };
                    }
                }
                self.write_tile(dst, &x)
            }
            Op::TensorReduce { dst, src, op, axes, negate } => {
                let x = self.read_tile(src)?;
                let nd = src.dims.len();
                let a = (*axes as usize).min(nd);
                let run: u64 = src.dims[nd - a..].iter().map(|d| d.size).product();
                let out: Vec<f32> = x
                    .chunks(run.max(1) as usize)
                    .map(|c| {
                        let r = c.iter().skip(1).fold(c[0], |acc, &v| match op {
                            ReduceOp::Add => acc + v,
                            ReduceOp::Max => acc.max(v),
                            ReduceOp::Min => acc.min(v),
                        });
                        if *negate {
                            -r
                        } else {
                            r
                        }
                    })
                    .collect();
                self.write_tile(dst, &out)
            }
            Op::TensorCopy { dst, src } => {
                if dst.dtype == src.dtype {
                    let (rs, a_src) = self.tile_addresses(src)?;
                    let (rd, a_dst) = self.tile_addresses(dst)?;
                    if a_src.len() != a_dst.len() {
                        return Err(ExecError::Shape("tensor_copy sizes differ".into()));
                    }
                    let esz = src.dtype.size_bytes();
                    let bytes = self.read_raw(rs, &a_src, esz);
                    self.write_raw(rd, &a_dst, esz, &bytes);
                    Ok(())
                } else {
                    let x = self.read_tile(src)?;
                    self.write_tile(dst, &x)
                }
            }
            Op::Memset { dst, value } => {
                let n = dst.partitions as usize * dst.free_len() as usize;
                self.write_tile(dst, &vec![*value; n])
            }
            Op::Select { dst, predicate, on_true, on_false } => {
                let p = self.read_tile(predicate)?;
                let t = self.read_tile(on_true)?;
                let f = self.read_tile(on_false)?;
                let out: Vec<f32> = p
                    .iter()
                    .zip(t.iter().zip(&f))
                    .map(|(&p, (&t, &f))| if p != 0.0 { t } else { f })
                    .collect();
                self.write_tile(dst, &out)
            }
            Op::Activation { dst, src, func, scale, bias, reduce } => {
                let x = self.read_tile(src)?;
                let parts = src.partitions as usize;
                let f = (src.free_len() as usize).max(1);
                let scale = self.scalar_values(scale, parts)?;
                let bias = match bias {
                    Some(b) => Some(self.read_tile(b)?),
                    None => None,
                };
                // Without a bias no addition happens (so -0.0 keeps its sign).
                let y: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let a = v * scale[i / f];
                        act(*func, bias.as_ref().map_or(a, |b| a + b[i / f]))
                    })
                    .collect();
                if let Some(r) = reduce {
                    let sums: Vec<f32> =
                        y.chunks(f).map(|c| c.iter().fold(0.0f32, |a, &v| a + v)).collect();
                    self.write_tile(r, &sums)?;
                }
                self.write_tile(dst, &y)
            }
            Op::Iota { dst, affine } => self.iota(dst, affine),
            Op::TensorTensorScan { dst, in0, in1, initial, op0, op1, reverse0, reverse1 } => {
                let a = self.read_tile(in0)?;
                let b = self.read_tile(in1)?;
                let f = (in0.free_len() as usize).max(1);
                let init = self.scalar_values(initial, in0.partitions as usize)?;
                let mut out = vec![0.0f32; a.len()];
                for (p, row) in out.chunks_mut(f).enumerate() {
                    let mut x = init[p];
                    for (i, o) in row.iter_mut().enumerate() {
                        let (u, v) = (a[p * f + i], b[p * f + i]);
                        let t = if *reverse0 { op0.apply(x, u) } else { op0.apply(u, x) };
                        x = if *reverse1 { op1.apply(v, t) } else { op1.apply(t, v) };
                        *o = x;
                    }
                }
                self.write_tile(dst, &out)
            }
            Op::BnStats { dst, src } => {
                let x = self.read_tile(src)?;
                let f = (src.free_len() as usize).max(1);
                let out: Vec<f32> = x
                    .chunks(f)
                    .flat_map(|row| {
                        let mut v = [0.0f32; 6];
                        for (k, start) in [0usize, 1].into_iter().enumerate() {
                            let (n, mean, m2) = moments(row.iter().skip(start).step_by(2).copied());
                            v[3 * k..3 * k + 3].copy_from_slice(&[n, mean, m2]);
                        }
                        v
                    })
                    .collect();
                self.write_tile(dst, &out)
            }
            Op::ScalarTensorTensor { dst, src, operand0, in1, op0, op1, reverse0, reverse1 } => {
                let x = self.read_tile(src)?;
                let y = self.read_tile(in1)?;
                let f = (src.free_len() as usize).max(1);
                let s = self.scalar_values(operand0, src.partitions as usize)?;
                let out: Vec<f32> = x
                    .iter()
                    .zip(&y)
                    .enumerate()
                    .map(|(i, (&a, &b))| {
                        let c = s[i / f];
                        let t = if *reverse0 { op0.apply(c, a) } else { op0.apply(a, c) };
                        if *reverse1 {
                            op1.apply(b, t)
                        } else {
                            op1.apply(t, b)
                        }
                    })
                    .collect();
                self.write_tile(dst, &out)
            }
            Op::TensorScalarReduce { dst, src, op0, operand0, reverse0, reduce_op, reduce } => {
                let x = self.read_tile(src)?;
                let f = (src.free_len() as usize).max(1);
                let s = self.scalar_values(operand0, src.partitions as usize)?;
                let y: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| {
                        let c = s[i / f];
                        if *reverse0 {
                            op0.apply(c, a)
                        } else {
                            op0.apply(a, c)
                        }
                    })
                    .collect();
                let red: Vec<f32> = y
                    .chunks(f)
                    .map(|row| {
                        row.iter().skip(1).fold(row[0], |acc, &v| match reduce_op {
                            ReduceOp::Add => acc + v,
                            ReduceOp::Max => acc.max(v),
                            ReduceOp::Min => acc.min(v),
                        })
                    })
                    .collect();
                self.write_tile(reduce, &red)?;
                self.write_tile(dst, &y)
            }
            Op::Max8 { dst, src } => {
                let x = self.read_tile(src)?;
                let f = (src.free_len() as usize).max(1);
                let out: Vec<f32> = x
                    .chunks(f)
                    .flat_map(|row| {
                        let mut v = row.to_vec();
                        // Descending, NaN last.
                        v.sort_by(|a, b| {
                            b.partial_cmp(a)
                                .unwrap_or_else(|| b.is_nan().cmp(&a.is_nan()).reverse())
                        });
                        v.truncate(8);
                        v
                    })
                    .collect();
                self.write_tile(dst, &out)
            }
            Op::FindIndex8 { dst, data, vals } => {
                let x = self.read_tile(data)?;
                let v = self.read_tile(vals)?;
                let f = (data.free_len() as usize).max(1);
                let idx: Vec<i64> = v
                    .chunks(8)
                    .enumerate()
                    .flat_map(|(p, want)| {
                        let row = &x[p * f..(p + 1) * f];
                        want.iter()
                            .map(|w| {
                                row.iter()
                                    .position(|e| e == w)
                                    .map_or(i64::from(u32::MAX), |i| i as i64)
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                self.write_tile_i64(dst, &idx)
            }
            Op::RangeSelect {
                dst,
                src,
                bound0,
                bound1,
                cmp0,
                cmp1,
                range_start,
                on_false,
                reduce_cmd,
                reduce,
            } => {
                let x = self.read_tile(src)?;
                let b0 = self.read_tile(bound0)?;
                let b1 = self.read_tile(bound1)?;
                let f = (src.free_len() as usize).max(1);
                let out: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let (p, j) = (i / f, i % f);
                        let idx = (i64::from(*range_start) + j as i64) as f32;
                        let keep = cmp0.apply(idx, b0[p]) != 0.0 && cmp1.apply(idx, b1[p]) != 0.0;
                        if keep {
                            v
                        } else {
                            *on_false
                        }
                    })
                    .collect();
                self.accumulate(src.start_partition, f, &out, *reduce_cmd, reduce.as_ref())?;
                self.write_tile(dst, &out)
            }
            Op::SelectReduce { dst, predicate, on_true, on_false, reverse, reduce_cmd, reduce } => {
                let p = self.read_tile(predicate)?;
                let t = self.read_tile(on_true)?;
                let f = (on_true.free_len() as usize).max(1);
                let fv = self.scalar_values(on_false, on_true.partitions as usize)?;
                let out: Vec<f32> = p
                    .iter()
                    .zip(&t)
                    .enumerate()
                    .map(|(i, (&pv, &tv))| if (pv != 0.0) != *reverse { tv } else { fv[i / f] })
                    .collect();
                self.accumulate(on_true.start_partition, f, &out, *reduce_cmd, reduce.as_ref())?;
                self.write_tile(dst, &out)
            }
            Op::TensorScalarCumulative {
                dst,
                src,
                op0,
                operand0,
                reverse0,
                op1,
                reduce_cmd,
                init,
            } => {
                let x = self.read_tile(src)?;
                let parts = src.partitions as usize;
                let f = (src.free_len() as usize).max(1);
                let c = self.scalar_values(operand0, parts)?;
                let start = match (reduce_cmd, init) {
                    (ReduceCmd::LoadReduce, Some(i)) => self.scalar_values(i, parts)?,
                    (ReduceCmd::Reduce | ReduceCmd::Idle, _) => {
                        let s = src.start_partition as usize;
                        self.vector_accumulators[s..(s + parts).min(self.vector_accumulators.len())]
                            .to_vec()
                    }
                    _ => {
                        let identity = match op1 {
                            rainier_isa::AluOp::Multiply => 1.0,
                            rainier_isa::AluOp::Max => f32::NEG_INFINITY,
                            rainier_isa::AluOp::Min => f32::INFINITY,
                            _ => 0.0,
                        };
                        vec![identity; parts]
                    }
                };
                let mut out = vec![0.0f32; x.len()];
                for p in 0..parts {
                    let mut reg = start.get(p).copied().unwrap_or(0.0);
                    for i in 0..f {
                        let v = x[p * f + i];
                        let t = if *reverse0 { op0.apply(c[p], v) } else { op0.apply(v, c[p]) };
                        reg = op1.apply(t, reg);
                        out[p * f + i] = reg;
                    }
                    if let Some(a) =
                        self.vector_accumulators.get_mut(src.start_partition as usize + p)
                    {
                        *a = reg;
                    }
                }
                self.write_tile(dst, &out)
            }
            Op::MatchReplace8 { dst, data, vals, imm, indices } => {
                let mut x = self.read_tile(data)?;
                let v = self.read_tile(vals)?;
                let f = (data.free_len() as usize).max(1);
                let mut idx = vec![0i64; v.len()];
                for (p, row) in x.chunks_mut(f).enumerate() {
                    for j in 0..8 {
                        let want = v[p * 8 + j];
                        if let Some(k) = row.iter().position(|&e| e == want) {
                            row[k] = *imm;
                            idx[p * 8 + j] = k as i64;
                        }
                    }
                }
                if let Some(t) = indices {
                    self.write_tile_i64(t, &idx)?;
                }
                self.write_tile(dst, &x)
            }
            Op::Gather { dst, src, index } => {
                let idx = self.read_tile(index)?;
                let (rs, a_src) = self.tile_addresses(src)?;
                let (rd, a_dst) = self.tile_addresses(dst)?;
                let (n, k) = (src.free_len() as usize, index.free_len() as usize);
                let esz = src.dtype.size_bytes();
                let mut from = Vec::with_capacity(a_dst.len());
                for (i, &v) in idx.iter().enumerate() {
                    let p = i / k.max(1);
                    if v < 0.0 || v as usize >= n {
                        return Err(ExecError::IndexOutOfRange(format!(
                            "index {v} is out of bounds for axis 1 with size {n}"
                        )));
                    }
                    from.push(a_src[p * n + v as usize]);
                }
                let bytes = self.read_raw(rs, &from, esz);
                self.write_raw(rd, &a_dst, esz, &bytes);
                Ok(())
            }
            Op::SequenceBounds { dst, src } => {
                let x = self.read_tile(src)?;
                let n = (src.free_len() as usize).max(1);
                let mut out = Vec::with_capacity(2 * x.len());
                for row in x.chunks(n) {
                    let (mut lo, mut hi) = (vec![0.0f32; n], vec![0.0f32; n]);
                    for i in 0..n {
                        lo[i] = if row[i] == 0.0 {
                            n as f32
                        } else if i > 0 && row[i] == row[i - 1] {
                            lo[i - 1]
                        } else {
                            i as f32
                        };
                    }
                    for i in (0..n).rev() {
                        hi[i] = if row[i] == 0.0 {
                            -1.0
                        } else if i + 1 < n && row[i] == row[i + 1] {
                            hi[i + 1]
                        } else {
                            (i + 1) as f32
                        };
                    }
                    out.extend(lo);
                    out.extend(hi);
                }
                self.write_tile(dst, &out)
            }
            Op::Exponential { dst, src, max, reduce_cmd, init, reduce } => {
                let x = self.read_tile(src)?;
                let parts = src.partitions as usize;
                let f = (src.free_len() as usize).max(1);
                let m = self.scalar_values(max, parts)?;
                let out: Vec<f32> =
                    x.iter().enumerate().map(|(i, &v)| (v - m[i / f]).exp()).collect();
                let s = src.start_partition as usize;
                let start: Vec<f32> = match (reduce_cmd, init) {
                    (ReduceCmd::LoadReduce, Some(i)) => self.scalar_values(i, parts)?,
                    (ReduceCmd::Reduce | ReduceCmd::Idle, _) => (0..parts)
                        .map(|p| self.vector_accumulators.get(s + p).copied().unwrap_or(0.0))
                        .collect(),
                    _ => vec![0.0; parts],
                };
                for (p, row) in out.chunks(f).enumerate() {
                    let reg = match reduce_cmd {
                        ReduceCmd::Idle | ReduceCmd::Reset => start[p],
                        _ => row.iter().fold(start[p], |a, &y| a + y),
                    };
                    if let Some(a) = self.vector_accumulators.get_mut(s + p) {
                        *a = reg;
                    }
                }
                if let Some(r) = reduce {
                    let end = (s + parts).min(self.vector_accumulators.len());
                    let regs = self.vector_accumulators[s..end].to_vec();
                    self.write_tile(r, &regs)?;
                }
                self.write_tile(dst, &out)
            }
            Op::Dropout { dst, src, prob, seed } => {
                let x = self.read_tile(src)?;
                let f = (src.free_len() as usize).max(1);
                let p = self.scalar_values(prob, src.partitions as usize)?;
                let out: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let part = src.start_partition as u64 + (i / f) as u64;
                        let u = uniform(*seed, part, (i % f) as u64);
                        if u < p[i / f] {
                            0.0
                        } else {
                            v
                        }
                    })
                    .collect();
                self.write_tile(dst, &out)
            }
            Op::StreamShuffle { dst, src, mask } => {
                let (rs, a_src) = self.tile_addresses(src)?;
                let esz = src.dtype.size_bytes();
                let f = src.free_len() as usize;
                let bytes = self.read_raw(rs, &a_src, esz);
                let (rd, a_dst) = self.tile_addresses(dst)?;
                let mut addrs = Vec::new();
                let mut data = Vec::new();
                for i in 0..dst.partitions as usize {
                    let m = mask.get(i % 32).copied().unwrap_or(255);
                    if m == 255 {
                        continue;
                    }
                    let from = (i / 32) * 32 + usize::from(m);
                    if from >= src.partitions as usize {
                        return Err(ExecError::Shape(format!(
                            "stream shuffle reads src partition {from}"
                        )));
                    }
                    addrs.extend_from_slice(&a_dst[i * f..(i + 1) * f]);
                    data.extend_from_slice(&bytes[from * f * esz..(from + 1) * f * esz]);
                }
                self.write_raw(rd, &addrs, esz, &data);
                Ok(())
            }
            Op::PartitionReduce { dst, src, op } => {
                let x = self.read_tile(src)?;
                let f = (src.free_len() as usize).max(1);
                let mut out = x[..f].to_vec();
                for row in x.chunks(f).skip(1) {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = match op {
                            ReduceOp::Add => *o + v,
                            ReduceOp::Max => o.max(v),
                            ReduceOp::Min => o.min(v),
                        };
                    }
                }
                self.write_tile(dst, &out)
            }
            Op::LocalGather { dst, src, index, elems, valid } => {
                let idx = self.read_tile(index)?;
                let (rs, a_src) = self.tile_addresses(src)?;
                let (rd, a_dst) = self.tile_addresses(dst)?;
                let (fs, fd, k) =
                    (src.free_len() as usize, dst.free_len() as usize, index.free_len() as usize);
                let (n, v) = (*elems as usize, *valid as usize);
                let esz = src.dtype.size_bytes();
                let mut from = Vec::with_capacity(a_dst.len());
                for p in 0..src.partitions as usize {
                    let g = p / 16;
                    for j in 0..v {
                        let (kk, q) = (j / 16, j % 16);
                        let i = idx[(g * 16 + q) * k + kk];
                        for e in 0..n {
                            let col = i as usize + e;
                            if i < 0.0 || col >= fs {
                                return Err(ExecError::Shape(format!(
                                    "local_gather index {i} + {e} is past the {fs} elements of a src partition"
                                )));
                            }
                            from.push(a_src[p * fs + col]);
                        }
                    }
                }
                debug_assert_eq!(from.len(), fd * dst.partitions as usize);
                let bytes = self.read_raw(rs, &from, esz);
                self.write_raw(rd, &a_dst, esz, &bytes);
                Ok(())
            }
            Op::Reciprocal { dst, src } => {
                let x = self.read_tile(src)?;
                let out: Vec<f32> = x.iter().map(|&v| 1.0 / v).collect();
                self.write_tile(dst, &out)
            }
            Op::BnAggr { dst, src } => {
                let x = self.read_tile(src)?;
                let f = (src.free_len() as usize).max(1);
                let out: Vec<f32> = x.chunks(f).flat_map(aggregate).collect();
                self.write_tile(dst, &out)
            }
            Op::AffineSelect { dst, src, affine, cmp, on_false } => {
                let x = self.read_tile(src)?;
                let sizes = src.free_shape();
                let idx = multi_indices(&sizes);
                let f = (src.free_len() as usize).max(1);
                let nd = sizes.len();
                let out: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let (p, j) = (i / f, i % f);
                        let a = affine.at(p as u64, &idx[j * nd..(j + 1) * nd]);
                        if cmp_i64(*cmp, a) {
                            v
                        } else {
                            *on_false
                        }
                    })
                    .collect();
                self.write_tile(dst, &out)
            }
        }
    }

    /// Applies `cmd` to the accumulator registers of the partitions from `start` with the row
    /// maxima of `values` (rows of `f`), then writes them to `out` when given.
    fn accumulate(
        &mut self,
        start: u32,
        f: usize,
        values: &[f32],
        cmd: ReduceCmd,
        out: Option<&Tile>,
    ) -> Result<(), ExecError> {
        for (k, row) in values.chunks(f).enumerate() {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let Some(a) = self.vector_accumulators.get_mut(start as usize + k) else { continue };
            *a = match cmd {
                ReduceCmd::Idle => *a,
                ReduceCmd::Reset => f32::NEG_INFINITY,
                ReduceCmd::Reduce | ReduceCmd::LoadReduce => a.max(m),
                ReduceCmd::ResetReduce => m,
            };
        }
        if let Some(t) = out {
            let n = t.partitions as usize;
            let s = start as usize;
            let end = (s + n).min(self.vector_accumulators.len());
            let regs = self.vector_accumulators[s..end].to_vec();
            self.write_tile(t, &regs)?;
        }
        Ok(())
    }

    /// Writes exact integers (index results) into `t`, saturating to its dtype.
    fn write_tile_i64(&mut self, t: &Tile, values: &[i64]) -> Result<(), ExecError> {
        let (r, addrs) = self.tile_addresses(t)?;
        if addrs.len() != values.len() {
            return Err(ExecError::Shape(format!(
                "{} values for a tile of {} elements",
                values.len(),
                addrs.len()
            )));
        }
        let esz = t.dtype.size_bytes();
        let dtype = t.dtype;
        let mem = self.region_mut(r);
        for (&a, &v) in addrs.iter().zip(values) {
            dtype.store_i64(v, &mut mem[a..a + esz]);
        }
        Ok(())
    }

    fn iota(&mut self, dst: &Tile, affine: &Affine) -> Result<(), ExecError> {
        let (r, addrs) = self.tile_addresses(dst)?;
        let sizes = dst.free_shape();
        let idx = multi_indices(&sizes);
        let f = dst.free_len() as usize;
        let nd = sizes.len();
        let esz = dst.dtype.size_bytes();
        let dtype = dst.dtype;
        let mem = self.region_mut(r);
        for (i, &a) in addrs.iter().enumerate() {
            let (p, j) = (i / f, i % f);
            let v = affine.at(p as u64, &idx[j * nd..(j + 1) * nd]);
            // int32 arithmetic on the hardware: wrap to 32 bits.
            dtype.store_i64(i64::from(v as i32), &mut mem[a..a + esz]);
        }
        Ok(())
    }

    /// `dma_indirect`: one `dma_copy` (or add) per transfer row, the HBM row from `index`.
    fn dma_indirect(
        &mut self,
        dst: &DmaOperand,
        src: &DmaOperand,
        index: &Tile,
        oob_skip: bool,
        accumulate: bool,
        bound: u32,
    ) -> Result<(), ExecError> {
        let hbm_is_dst = matches!(dst, DmaOperand::Hbm(_));
        let (h, t) = match (dst, src) {
            (DmaOperand::Hbm(h), DmaOperand::Tile(t))
            | (DmaOperand::Tile(t), DmaOperand::Hbm(h)) => (h, t),
            _ => {
                return Err(ExecError::Shape("dma_indirect needs one HBM and one SBUF side".into()))
            }
        };
        let rows = self.read_tile_i64(index)?;
        let len =
            self.hbm.get(h.tensor).map_or(0, |b| b.len() / self.hbm_dtypes[h.tensor].size_bytes())
                as i64;
        let outer = h.dims.first().copied().unwrap_or(Dim { stride: 1, size: 1 });
        let inner: Vec<Dim> =
            if h.dims.len() > 1 { h.dims[1..].to_vec() } else { vec![Dim { stride: 1, size: 1 }] };
        let (lo, hi) = pattern_extent(&inner);
        for (r, &row) in rows.iter().enumerate() {
            let first = h.offset as i64 + row * outer.stride;
            let outside_tensor = first + lo < 0 || first + hi >= len;
            let outside_view = bound > 0 && !(0..i64::from(bound)).contains(&row);
            if outside_tensor || outside_view {
                if oob_skip {
                    continue;
                }
                // NumPy's wording, as NKI's simulator reports it: the flat element past the
                // tensor, or the row past the indexed view.
                return Err(ExecError::IndexOutOfRange(if outside_tensor {
                    format!("index {} is out of bounds for axis 0 with size {len}", first + lo)
                } else {
                    format!("index {row} is out of bounds for axis 0 with size {bound}")
                }));
            }
            let hrow = DmaOperand::Hbm(HbmAccess {
                tensor: h.tensor,
                offset: first as u64,
                dims: inner.clone(),
            });
            let trow = DmaOperand::Tile(Tile {
                start_partition: t.start_partition + r as u32,
                partitions: 1,
                ..t.clone()
            });
            let (d, s) = if hbm_is_dst { (hrow, trow) } else { (trow, hrow) };
            if accumulate {
                self.add_into(&d, &s)?;
            } else {
                self.dma(&d, &s)?;
            }
        }
        Ok(())
    }

    /// `d += s` elementwise: fp32 for float destinations, exact for integer ones.
    fn add_into(&mut self, d: &DmaOperand, s: &DmaOperand) -> Result<(), ExecError> {
        let (rd, dd, ad) = self.dma_addresses(d)?;
        let (rs, ds, as_) = self.dma_addresses(s)?;
        let (ed, es) = (dd.size_bytes(), ds.size_bytes());
        let vals: Vec<(f64, f64)> = {
            let (md, ms) = (self.region(rd), self.region(rs));
            ad.iter()
                .zip(&as_)
                .map(|(&x, &y)| (int_or_f64(dd, &md[x..x + ed]), int_or_f64(ds, &ms[y..y + es])))
                .collect()
        };
        let mem = self.region_mut(rd);
        for (&a, (x, y)) in ad.iter().zip(vals) {
            if dd.is_int() {
                dd.store_i64((x + y) as i64, &mut mem[a..a + ed]);
            } else {
                dd.store(x as f32 + y as f32, &mut mem[a..a + ed]);
            }
        }
        Ok(())
    }

    /// The integer values of an integer tile, exactly (no fp32 rounding).
    fn read_tile_i64(&self, t: &Tile) -> Result<Vec<i64>, ExecError> {
        let (r, addrs) = self.tile_addresses(t)?;
        let esz = t.dtype.size_bytes();
        let mem = self.region(r);
        Ok(addrs.iter().map(|&a| int_or_f64(t.dtype, &mem[a..a + esz]) as i64).collect())
    }

    fn dma(&mut self, dst: &DmaOperand, src: &DmaOperand) -> Result<(), ExecError> {
        let (rs, ds, a_src) = self.dma_addresses(src)?;
        let (rd, dd, a_dst) = self.dma_addresses(dst)?;
        if a_src.len() != a_dst.len() {
            return Err(ExecError::Shape(format!(
                "dma_copy moves {} elements into {}",
                a_src.len(),
                a_dst.len()
            )));
        }
        let (es, ed) = (ds.size_bytes(), dd.size_bytes());
        let bytes = self.read_raw(rs, &a_src, es);
        if ds == dd {
            self.write_raw(rd, &a_dst, ed, &bytes);
        } else {
            let mem = self.region_mut(rd);
            for (&a, b) in a_dst.iter().zip(bytes.chunks_exact(es)) {
                dd.store(ds.load(b), &mut mem[a..a + ed]);
            }
        }
        Ok(())
    }

    fn dma_addresses(&self, o: &DmaOperand) -> Result<(Region, DType, Vec<usize>), ExecError> {
        match o {
            DmaOperand::Tile(t) => {
                let (r, a) = self.tile_addresses(t)?;
                Ok((r, t.dtype, a))
            }
            DmaOperand::Hbm(h) => self.hbm_addresses(h),
        }
    }

    fn matmul(
        &mut self,
        dst: &Tile,
        stationary: &Tile,
        moving: &Tile,
        accumulate: bool,
        double_row: bool,
    ) -> Result<(), ExecError> {
        let rows = if double_row { 2 } else { 1 };
        let k = stationary.partitions as usize;
        let (m, n) = (stationary.free_len() as usize / rows, moving.free_len() as usize / rows);
        if moving.partitions as usize != k
            || dst.partitions as usize != m
            || dst.free_len() as usize != n
        {
            return Err(ExecError::Shape("nc_matmul operand shapes".into()));
        }
        let read_input = |t: &Tile| -> Result<Vec<f32>, ExecError> {
            let mut v = self.read_tile(t)?;
            if t.dtype == DType::Tf32 {
                v.iter_mut().for_each(|x| *x = DType::Tf32.round(*x));
            }
            Ok(v)
        };
        let s = read_input(stationary)?;
        let v = read_input(moving)?;
        let exact = stationary.dtype != DType::F32 && moving.dtype != DType::F32;
        let mut out = vec![0f32; m * n];
        // Double row: partition p, row r is contraction index 2p + r (each partition's free
        // data is [2, X] row-major, so its two rows are consecutive k).
        matmul_f32(&s, &v, k * rows, m, n, exact, &mut out);
        if accumulate {
            let old = self.read_tile(dst)?;
            out.iter_mut().zip(&old).for_each(|(o, &p)| *o += p);
        }
        self.write_tile(dst, &out)
    }

    /// MX data `[K, F]` dequantized into fp32 as `[4K, F]`, row `4k + q` holding element `q`
    /// of partition `k`'s packed elements times their group's scale.
    fn mx_dequantize(&self, data: &Tile, scale: &Tile) -> Result<Vec<f32>, ExecError> {
        let (k, f) = (data.partitions as usize, data.free_len() as usize);
        if k % 32 != 0
            || k > 128
            || scale.partitions != rainier_isa::mx_scale_partitions(data.partitions)
            || scale.free_len() as usize != f
        {
            return Err(ExecError::Shape("nc_matmul_mx data or scale tile shape".into()));
        }
        let (rd, ad) = self.tile_addresses(data)?;
        let esz = data.dtype.size_bytes();
        let bytes = self.read_raw(rd, &ad, esz);
        let (rs, a_scale) = self.tile_addresses(scale)?;
        let scales = self.read_raw(rs, &a_scale, 1);
        let mut out = vec![0f32; 4 * k * f];
        for p in 0..k {
            let sp = rainier_isa::mx_scale_partition(p as u32) as usize;
            for j in 0..f {
                let vals = data.dtype.unpack_x4(&bytes[(p * f + j) * esz..][..esz]);
                let x = rainier_tensor::e8m0(scales[sp * f + j]);
                for (q, v) in vals.into_iter().enumerate() {
                    out[(4 * p + q) * f + j] = v * x;
                }
            }
        }
        Ok(out)
    }

    fn matmul_mx(
        &mut self,
        dst: &Tile,
        stationary: &Tile,
        moving: &Tile,
        stationary_scale: &Tile,
        moving_scale: &Tile,
        accumulate: bool,
    ) -> Result<(), ExecError> {
        let k = stationary.partitions as usize;
        let (m, n) = (stationary.free_len() as usize, moving.free_len() as usize);
        if moving.partitions as usize != k
            || dst.partitions as usize != m
            || dst.free_len() as usize != n
            || !stationary.dtype.is_packed()
            || !moving.dtype.is_packed()
        {
            return Err(ExecError::Shape("nc_matmul_mx operand shapes".into()));
        }
        let s = self.mx_dequantize(stationary, stationary_scale)?;
        let v = self.mx_dequantize(moving, moving_scale)?;
        // Dequantized values carry at most 4 significant bits, so their products are exact in
        // fp32 unless a product leaves fp32's normal range.
        let tame = |x: &f32| *x == 0.0 || (2f32.powi(-60)..=2f32.powi(60)).contains(&x.abs());
        let exact = s.iter().all(tame) && v.iter().all(tame);
        let mut out = vec![0f32; m * n];
        matmul_f32(&s, &v, 4 * k, m, n, exact, &mut out);
        if accumulate {
            let old = self.read_tile(dst)?;
            out.iter_mut().zip(&old).for_each(|(o, &p)| *o += p);
        }
        self.write_tile(dst, &out)
    }

    fn quantize_mx(&mut self, dst: &Tile, src: &Tile, scale: &Tile) -> Result<(), ExecError> {
        let (p, f) = (dst.partitions as usize, dst.free_len() as usize);
        let Some(emax) = dst.dtype.packed_max_exponent() else {
            return Err(ExecError::Shape("quantize_mx dst must be MX data".into()));
        };
        if src.partitions as usize != p
            || src.free_len() as usize != 4 * f
            || p % 32 != 0
            || p > 128
            || scale.partitions != rainier_isa::mx_scale_partitions(dst.partitions)
            || scale.free_len() as usize != f
        {
            return Err(ExecError::Shape("quantize_mx operand shapes".into()));
        }
        let x = self.read_tile(src)?;
        let esz = dst.dtype.size_bytes();
        let mut data = vec![0u8; p * f * esz];
        let (rs, a_scale) = self.tile_addresses(scale)?;
        let mut scale_addrs = Vec::with_capacity(p / 8 * f);
        let mut scale_bytes = Vec::with_capacity(p / 8 * f);
        for g in 0..p / 8 {
            let sp = rainier_isa::mx_scale_partition(8 * g as u32) as usize;
            for j in 0..f {
                let group = |r: usize| &x[(8 * g + r) * 4 * f + 4 * j..][..4];
                let byte = rainier_tensor::mx_scale_byte((0..8).flat_map(group).copied(), emax);
                let x_scale = rainier_tensor::e8m0(byte);
                for r in 0..8 {
                    let v = group(r);
                    let q: [f32; 4] = std::array::from_fn(|i| v[i] / x_scale);
                    dst.dtype.pack_x4(q, &mut data[((8 * g + r) * f + j) * esz..]);
                }
                scale_addrs.push(a_scale[sp * f + j]);
                scale_bytes.push(byte);
            }
        }
        let (rd, a_dst) = self.tile_addresses(dst)?;
        self.write_raw(rd, &a_dst, esz, &data);
        self.write_raw(rs, &scale_addrs, 1, &scale_bytes);
        Ok(())
    }

    /// `dst[f, p] = src[p, f]` as raw elements (a bit copy, NaN payloads kept).
    fn dma_transpose(&mut self, dst: &Tile, src: &Tile) -> Result<(), ExecError> {
        let (p, f) = (src.partitions as usize, src.free_len() as usize);
        if dst.partitions as usize != f || dst.free_len() as usize != p || dst.dtype != src.dtype {
            return Err(ExecError::Shape(
                "dma_transpose dst must be [src free, src partitions] of src's dtype".into(),
            ));
        }
        let (rs, a_src) = self.tile_addresses(src)?;
        let (rd, a_dst) = self.tile_addresses(dst)?;
        let esz = src.dtype.size_bytes();
        let bytes = self.read_raw(rs, &a_src, esz);
        let mut out = vec![0u8; bytes.len()];
        for i in 0..p {
            for j in 0..f {
                let (s, d) = ((i * f + j) * esz, (j * p + i) * esz);
                out[d..d + esz].copy_from_slice(&bytes[s..s + esz]);
            }
        }
        self.write_raw(rd, &a_dst, esz, &out);
        Ok(())
    }

    fn transpose(&mut self, dst: &Tile, src: &Tile) -> Result<(), ExecError> {
        let (p, f) = (src.partitions as usize, src.free_len() as usize);
        if dst.partitions as usize != f || dst.free_len() as usize != p {
            return Err(ExecError::Shape(
                "nc_transpose dst must be [src free, src partitions]".into(),
            ));
        }
        let x = self.read_tile(src)?;
        let pe_identity_matmul = dst.memory == Memory::Psum && !self.core.has_exact_pe_transpose();
        let out = if pe_identity_matmul {
            // NeuronCore-v2 transposes on the PE array by multiplying with the identity:
            // out[f, p] = Σ_k src[k, f] · I[k, p], so NaN/Inf poison their whole output row.
            let mut eye = vec![0f32; p * p];
            (0..p).for_each(|i| eye[i * p + i] = 1.0);
            let mut out = vec![0f32; f * p];
            matmul_f32(&x, &eye, p, f, p, true, &mut out);
            out
        } else {
            let mut out = vec![0f32; f * p];
            for i in 0..p {
                for j in 0..f {
                    out[j * p + i] = x[i * f + j];
                }
            }
            out
        };
        self.write_tile(dst, &out)
    }
}

fn cmp_i64(cmp: rainier_isa::AluOp, a: i64) -> bool {
    use rainier_isa::AluOp::*;
    match cmp {
        Eq => a == 0,
        Ne => a != 0,
        Ge => a >= 0,
        Gt => a > 0,
        Le => a <= 0,
        Lt => a < 0,
        _ => false,
    }
}

/// `(count, mean, Σ (x − mean)²)` of `xs` in fp32: the mean first, then the squared deviations,
/// left to right (the hardware's order is not published: assumption).
fn moments(xs: impl Iterator<Item = f32> + Clone) -> (f32, f32, f32) {
    let (n, sum) = xs.clone().fold((0u32, 0.0f32), |(n, s), v| (n + 1, s + v));
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let count = n as f32;
    let mean = sum / count;
    let m2 = xs.fold(0.0f32, |a, v| {
        let d = v - mean;
        a + d * d
    });
    (count, mean, m2)
}

/// `[mean, variance]` of the groups given as `(count, mean, variance · count)` triples (Chan et
/// al.'s pairwise combination, in fp32, in order).
fn aggregate(row: &[f32]) -> [f32; 2] {
    let (mut n, mut mean, mut m2) = (0.0f32, 0.0f32, 0.0f32);
    for t in row.chunks_exact(3) {
        let (nb, mb, m2b) = (t[0], t[1], t[2]);
        if nb == 0.0 {
            continue;
        }
        let total = n + nb;
        let delta = mb - mean;
        mean += delta * (nb / total);
        m2 += m2b + delta * delta * (n * nb / total);
        n = total;
    }
    if n == 0.0 {
        return [0.0, 0.0];
    }
    [mean, m2 / n]
}

/// A uniform value in [0, 1) for element `e` of partition `p` under `seed`: SplitMix64 of the
/// three, the top 24 bits as an fp32 fraction. Deterministic; not the engines' RNG stream.
fn uniform(seed: u32, p: u64, e: u64) -> f32 {
    let mut z = (u64::from(seed) << 40 ^ p << 32 ^ e).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// An element as f64: integers exactly, floats through their fp32 value.
fn int_or_f64(d: DType, b: &[u8]) -> f64 {
    match d {
        DType::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::U32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::I16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
        DType::U16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
        DType::I8 => f64::from(b[0] as i8),
        DType::U8 => f64::from(b[0]),
        _ => f64::from(d.load(b)),
    }
}
