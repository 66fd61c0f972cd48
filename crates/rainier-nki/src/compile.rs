//! From a [`Trace`] to a NeuronCore [`Program`]: on-chip tensors placed by liveness over the
//! traced program (each block of a blocked tensor on its own when no access spans blocks),
//! then every traced instruction lowered to the ISA through [`KernelBuilder::push`], which
//! derives the semaphores from the data each instruction touches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::str::FromStr;

use rainier_arch::ChipParams;
use rainier_isa::{
    ActFunc, Affine, AluOp, Dim, DmaOperand, Engine, HbmAccess, Memory, Op, Program, ReduceCmd,
    ReduceOp, ScalarOperand, ScalarStage, TensorKind, Tile,
};
use rainier_kernels::{Arena, KernelBuilder, SBUF_ALIGN};
use rainier_tensor::DType;

use crate::trace::{Access, Buffer, OpSpec, ScalarSpec, SourceRef, TensorSpec, Trace};
use crate::NkiError;

/// A compiled kernel: the program, the kernel source line of each instruction, and where each
/// on-chip tensor went.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub program: Program,
    /// `[file, line]` of each instruction.
    pub sources: Vec<SourceRef>,
    /// Program tensor index of each HBM trace tensor (`None` for on-chip tensors).
    pub hbm_index: Vec<Option<usize>>,
    /// Most SBUF / PSUM bytes per partition live at once.
    pub sbuf_peak_bytes: u64,
    pub psum_peak_bytes: u64,
    /// SBUF spills: units stored to HBM and loaded back because the live set did not fit.
    pub spills: usize,
}

/// A unit stored to HBM after op `store_after` and loaded back (as unit `after`, possibly
/// elsewhere in SBUF) before op `reload_before`.
#[derive(Debug, Clone, Copy)]
struct Spill {
    before: usize,
    after: usize,
    store_after: usize,
    reload_before: usize,
    /// Element column of the slot in the spill tensor of the unit's dtype.
    column: u64,
}

/// An allocation unit: a whole on-chip tensor, or one block of it, over one live range (a
/// spilled unit becomes two: before the spill and after the reload).
#[derive(Debug, Clone, Copy)]
struct Unit {
    tensor: usize,
    /// Byte offset of the unit within the tensor's per-partition storage.
    start: u64,
    bytes: u64,
    first: usize,
    last: usize,
    /// Assigned address (bytes within each partition).
    addr: u64,
}

pub(crate) fn dtype_of(name: &str) -> Result<DType, NkiError> {
    let alias = match name {
        "float8_e4m3" | "float8e4" => Some(DType::Fp8E4m3),
        "float8_e4m3fn" => Some(DType::Fp8E4m3fn),
        "float8_e5m2" | "float8e5" => Some(DType::Fp8E5m2),
        "tfloat32" => Some(DType::Tf32),
        _ => None,
    };
    alias.map_or_else(|| DType::from_str(name).map_err(|e| NkiError::Input(e.to_string())), Ok)
}

fn engine_of(name: &str) -> Result<Engine, NkiError> {
    Engine::from_name(name)
        .ok_or_else(|| NkiError::Input(format!("unknown engine '{name}' in the trace")))
}

fn reduce_of(name: &str) -> Result<ReduceOp, NkiError> {
    ReduceOp::ALL
        .into_iter()
        .find(|o| o.name() == name)
        .ok_or_else(|| NkiError::Input(format!("unknown reduce operator '{name}'")))
}

fn reduce_cmd_of(name: &str) -> Result<ReduceCmd, NkiError> {
    ReduceCmd::ALL
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| NkiError::Input(format!("unknown reduce_cmd '{name}' in the trace")))
}

fn alu_of(name: &str) -> Result<AluOp, NkiError> {
    AluOp::ALL
        .into_iter()
        .find(|o| o.name() == name)
        .ok_or_else(|| NkiError::Input(format!("unknown ALU operator '{name}' in the trace")))
}

/// Byte range `[lo, hi)` an on-chip access touches within each partition.
fn byte_range(a: &Access, esz: u64) -> (i128, i128) {
    let (mut lo, mut hi) = (i128::from(a.off), i128::from(a.off));
    for [stride, size] in &a.dims {
        let span = i128::from(*stride) * i128::from((*size).max(1) - 1);
        lo += span.min(0);
        hi += span.max(0);
    }
    let e = i128::from(esz);
    (lo * e, (hi + 1) * e)
}

struct Lowering<'a> {
    trace: &'a Trace,
    dtypes: Vec<DType>,
    /// Per on-chip tensor: its units (sorted by start) when split into blocks.
    units: Vec<Unit>,
    unit_of_tensor: Vec<Vec<usize>>,
    hbm_index: Vec<Option<usize>>,
    last_writer: HashMap<usize, Engine>,
    /// The trace op being lowered (picks a spilled unit's live range).
    current_op: usize,
}

impl<'a> Lowering<'a> {
    fn src(&self, s: SourceRef) -> String {
        let file = self.trace.files.get(s[0] as usize).map_or("<kernel>", String::as_str);
        format!("{file}:{}", s[1])
    }

    fn access_dtype(&self, a: &Access) -> Result<DType, NkiError> {
        match &a.dt {
            Some(d) => dtype_of(d),
            None => Ok(self.dtypes[a.t]),
        }
    }

    fn raw_dims(dims: &[[i64; 2]]) -> Vec<Dim> {
        let mut dims: Vec<Dim> =
            dims.iter().map(|&[stride, size]| Dim { stride, size: size as u64 }).collect();
        if dims.is_empty() {
            dims.push(Dim { stride: 1, size: 1 });
        }
        dims
    }

    fn dims(a: &Access) -> Vec<Dim> {
        merge_dims(Self::raw_dims(&a.dims))
    }

    /// The unit an access falls in (it was checked to fall in one).
    fn unit_at(&self, a: &Access, esz: u64) -> Result<usize, NkiError> {
        let (lo, _) = byte_range(a, esz);
        let us = &self.unit_of_tensor[a.t];
        let at = us.partition_point(|&u| i128::from(self.units[u].start) <= lo);
        let before = &us[..at];
        // The units of that start are its live ranges in order (several once spilled): the
        // last one begun by this op.
        let start = before.last().map(|&u| self.units[u].start);
        let now = self.current_op;
        let mut same_start =
            before.iter().rev().take_while(|&&u| Some(self.units[u].start) == start);
        same_start.find(|&&u| self.units[u].first <= now).or(before.last()).copied().ok_or_else(|| {
            let spec = &self.trace.tensors[a.t];
            NkiError::Input(format!(
                "'{}' is in {:?}, which this instruction cannot reach (only DMA moves data to and from HBM)",
                spec.name, spec.buffer
            ))
        })
    }

    fn tile(&self, a: &Access) -> Result<Tile, NkiError> {
        self.tile_with(a, Self::dims(a))
    }

    /// The tile of `a` with its dims as traced (one per traced dim: affine predicates keep
    /// their steps).
    fn tile_unmerged(&self, a: &Access) -> Result<Tile, NkiError> {
        self.tile_with(a, Self::raw_dims(&a.dims))
    }

    fn tile_with(&self, a: &Access, dims: Vec<Dim>) -> Result<Tile, NkiError> {
        let spec = &self.trace.tensors[a.t];
        let dtype = self.access_dtype(a)?;
        let esz = dtype.size_bytes() as u64;
        let unit = self.units[self.unit_at(a, esz)?];
        let memory = if spec.buffer == Buffer::Psum { Memory::Psum } else { Memory::Sbuf };
        let base = unit.addr as i64 - unit.start as i64;
        let byte_off = base + a.off * esz as i64;
        // Fold a negative element offset (negative strides) into the pattern's origin.
        Ok(Tile {
            memory,
            start_partition: a.p,
            partitions: a.n,
            offset_bytes: byte_off.max(0) as u64,
            dtype,
            dims,
        })
    }

    /// The HBM access of `a`; an indexed one keeps its outer (row) dim as traced.
    fn hbm(&self, a: &Access, indexed: bool) -> HbmAccess {
        let dims = if indexed && a.dims.len() > 1 {
            let mut d = Self::raw_dims(&a.dims[..1]);
            d.extend(merge_dims(Self::raw_dims(&a.dims[1..])));
            d
        } else {
            Self::dims(a)
        };
        HbmAccess { tensor: self.hbm_index[a.t].unwrap_or(0), offset: a.off.max(0) as u64, dims }
    }

    fn dma_operand(&self, a: &Access, indexed: bool) -> Result<DmaOperand, NkiError> {
        if self.trace.tensors[a.t].buffer.is_hbm() {
            Ok(DmaOperand::Hbm(self.hbm(a, indexed)))
        } else {
            Ok(DmaOperand::Tile(self.tile(a)?))
        }
    }

    fn scalar(&self, s: &ScalarSpec) -> Result<ScalarOperand, NkiError> {
        Ok(match s {
            ScalarSpec::Imm(v) => ScalarOperand::Imm(*v),
            ScalarSpec::Named(n) => ScalarOperand::Imm(
                crate::trace::named_f32(n)
                    .ok_or_else(|| NkiError::Input(format!("not a number in the trace: '{n}'")))?,
            ),
            ScalarSpec::Tile(a) => ScalarOperand::Vector(self.tile(a)?),
        })
    }

    fn lower(&mut self, op: &OpSpec) -> Result<Option<(Engine, Op)>, NkiError> {
        let t = |a: &Access| self.tile(a);
        Ok(Some(match op {
            OpSpec::Fence => return Ok(None),
            OpSpec::Dma { dst, src, index, oob_skip, accumulate, rows } => {
                // A store is triggered from the queue of the engine that produced its data, so
                // it does not hold up the loads queued behind it on the Sync engine.
                let engine = if self.trace.tensors[src.t].buffer.is_hbm() {
                    Engine::Sync
                } else {
                    let esz = self.access_dtype(src)?.size_bytes() as u64;
                    let u = self.unit_at(src, esz)?;
                    self.last_writer.get(&u).copied().unwrap_or(Engine::Sync)
                };
                let indexed = index.is_some();
                let (dst, src) = (self.dma_operand(dst, indexed)?, self.dma_operand(src, indexed)?);
                let op = match index {
                    None => Op::DmaCopy { dst, src, queue: 0 },
                    Some(i) => Op::DmaIndirect {
                        dst,
                        src,
                        index: t(i)?,
                        oob_skip: *oob_skip,
                        accumulate: *accumulate,
                        rows: *rows,
                        queue: 0,
                    },
                };
                (engine, op)
            }
            OpSpec::Matmul { dst, stationary, moving, accumulate, double_row } => (
                Engine::Tensor,
                Op::Matmul {
                    dst: t(dst)?,
                    stationary: t(stationary)?,
                    moving: t(moving)?,
                    accumulate: *accumulate,
                    double_row: *double_row,
                },
            ),
            OpSpec::MatmulMx {
                dst,
                stationary,
                moving,
                stationary_scale,
                moving_scale,
                accumulate,
            } => (
                Engine::Tensor,
                Op::MatmulMx {
                    dst: t(dst)?,
                    stationary: t(stationary)?,
                    moving: t(moving)?,
                    stationary_scale: t(stationary_scale)?,
                    moving_scale: t(moving_scale)?,
                    accumulate: *accumulate,
                },
            ),
            OpSpec::QuantizeMx { dst, src, scale } => {
                (Engine::Vector, Op::QuantizeMx { dst: t(dst)?, src: t(src)?, scale: t(scale)? })
            }
            OpSpec::Transpose { dst, src, engine } => {
                (engine_of(engine)?, Op::Transpose { dst: t(dst)?, src: t(src)? })
            }
            OpSpec::DmaTranspose { dst, src } => {
                // Triggered from the queue of the engine that produced the source.
                let esz = self.access_dtype(src)?.size_bytes() as u64;
                let u = self.unit_at(src, esz)?;
                let engine = self.last_writer.get(&u).copied().unwrap_or(Engine::Sync);
                (engine, Op::DmaTranspose { dst: t(dst)?, src: t(src)?, queue: 0 })
            }
            OpSpec::TensorTensor { dst, in0, in1, alu, engine } => (
                engine_of(engine)?,
                Op::TensorTensor { dst: t(dst)?, in0: t(in0)?, in1: t(in1)?, op: alu_of(alu)? },
            ),
            OpSpec::TensorScalar { dst, src, stages, engine } => {
                let stages = stages
                    .iter()
                    .map(|s| {
                        Ok(ScalarStage {
                            op: alu_of(&s.alu)?,
                            operand: self.scalar(&s.operand)?,
                            reverse: s.reverse,
                        })
                    })
                    .collect::<Result<Vec<_>, NkiError>>()?;
                (engine_of(engine)?, Op::TensorScalar { dst: t(dst)?, src: t(src)?, stages })
            }
            OpSpec::TensorReduce { dst, src, reduce, axes, negate } => {
                let op = reduce_of(reduce)?;
                // The reduced dims are the innermost `axes` of the access as traced: merge the
                // kept and the reduced dims separately so the boundary survives.
                let split = src.dims.len().saturating_sub(*axes as usize);
                let kept = merge_dims(Self::raw_dims(&src.dims[..split]));
                let reduced = merge_dims(Self::raw_dims(&src.dims[split..]));
                let axes = reduced.len() as u32;
                let mut dims = if split == 0 { Vec::new() } else { kept };
                dims.extend(reduced);
                let src_t = self.tile_with(src, dims)?;
                (
                    Engine::Vector,
                    Op::TensorReduce { dst: t(dst)?, src: src_t, op, axes, negate: *negate },
                )
            }
            OpSpec::TensorCopy { dst, src, engine } => {
                (engine_of(engine)?, Op::TensorCopy { dst: t(dst)?, src: t(src)? })
            }
            OpSpec::Memset { dst, value, engine } => {
                (engine_of(engine)?, Op::Memset { dst: t(dst)?, value: *value })
            }
            OpSpec::Select { dst, predicate, on_true, on_false } => (
                Engine::Vector,
                Op::Select {
                    dst: t(dst)?,
                    predicate: t(predicate)?,
                    on_true: t(on_true)?,
                    on_false: t(on_false)?,
                },
            ),
            OpSpec::Activation { dst, src, func, scale, bias, reduce } => {
                let f = ActFunc::from_name(func).ok_or_else(|| {
                    NkiError::Input(format!("unknown activation function '{func}'"))
                })?;
                (
                    Engine::Scalar,
                    Op::Activation {
                        dst: t(dst)?,
                        src: t(src)?,
                        func: f,
                        scale: self.scalar(scale)?,
                        bias: bias.as_ref().map(t).transpose()?,
                        reduce: reduce.as_ref().map(t).transpose()?,
                    },
                )
            }
            OpSpec::TensorTensorScan { dst, in0, in1, initial, op0, op1, reverse0, reverse1 } => (
                Engine::Vector,
                Op::TensorTensorScan {
                    dst: t(dst)?,
                    in0: t(in0)?,
                    in1: t(in1)?,
                    initial: self.scalar(initial)?,
                    op0: alu_of(op0)?,
                    op1: alu_of(op1)?,
                    reverse0: *reverse0,
                    reverse1: *reverse1,
                },
            ),
            OpSpec::BnStats { dst, src } => {
                (Engine::Vector, Op::BnStats { dst: t(dst)?, src: t(src)? })
            }
            OpSpec::BnAggr { dst, src } => {
                (Engine::Vector, Op::BnAggr { dst: t(dst)?, src: t(src)? })
            }
            OpSpec::Max8 { dst, src } => (Engine::Vector, Op::Max8 { dst: t(dst)?, src: t(src)? }),
            OpSpec::TensorScalarCumulative {
                dst,
                src,
                op0,
                operand0,
                reverse0,
                op1,
                reduce_cmd,
                init,
            } => (
                Engine::Vector,
                Op::TensorScalarCumulative {
                    dst: t(dst)?,
                    src: t(src)?,
                    op0: alu_of(op0)?,
                    operand0: self.scalar(operand0)?,
                    reverse0: *reverse0,
                    op1: alu_of(op1)?,
                    reduce_cmd: reduce_cmd_of(reduce_cmd)?,
                    init: init.as_ref().map(|i| self.scalar(i)).transpose()?,
                },
            ),
            OpSpec::Exponential { dst, src, max, reduce_cmd, init, reduce } => (
                Engine::Vector,
                Op::Exponential {
                    dst: t(dst)?,
                    src: t(src)?,
                    max: self.scalar(max)?,
                    reduce_cmd: reduce_cmd_of(reduce_cmd)?,
                    init: init.as_ref().map(|i| self.scalar(i)).transpose()?,
                    reduce: reduce.as_ref().map(t).transpose()?,
                },
            ),
            OpSpec::MatchReplace8 { dst, data, vals, imm, indices } => (
                Engine::Vector,
                Op::MatchReplace8 {
                    dst: t(dst)?,
                    data: t(data)?,
                    vals: t(vals)?,
                    imm: *imm,
                    indices: indices.as_ref().map(t).transpose()?,
                },
            ),
            OpSpec::Gather { dst, src, index } => {
                (Engine::GpSimd, Op::Gather { dst: t(dst)?, src: t(src)?, index: t(index)? })
            }
            OpSpec::SequenceBounds { dst, src } => {
                (Engine::GpSimd, Op::SequenceBounds { dst: t(dst)?, src: t(src)? })
            }
            OpSpec::Dropout { dst, src, prob, seed } => (
                Engine::Vector,
                Op::Dropout { dst: t(dst)?, src: t(src)?, prob: self.scalar(prob)?, seed: *seed },
            ),
            OpSpec::StreamShuffle { dst, src, mask } => (
                Engine::Vector,
                Op::StreamShuffle { dst: t(dst)?, src: t(src)?, mask: mask.clone() },
            ),
            OpSpec::PartitionReduce { dst, src, reduce } => {
                let op = reduce_of(reduce)?;
                (Engine::GpSimd, Op::PartitionReduce { dst: t(dst)?, src: t(src)?, op })
            }
            OpSpec::LocalGather { dst, src, index, elems, valid } => (
                Engine::GpSimd,
                Op::LocalGather {
                    dst: t(dst)?,
                    src: t(src)?,
                    index: t(index)?,
                    elems: *elems,
                    valid: *valid,
                },
            ),
            OpSpec::RangeSelect {
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
            } => (
                Engine::Vector,
                Op::RangeSelect {
                    dst: t(dst)?,
                    src: t(src)?,
                    bound0: t(bound0)?,
                    bound1: t(bound1)?,
                    cmp0: alu_of(cmp0)?,
                    cmp1: alu_of(cmp1)?,
                    range_start: *range_start,
                    on_false: *on_false,
                    reduce_cmd: reduce_cmd_of(reduce_cmd)?,
                    reduce: reduce.as_ref().map(t).transpose()?,
                },
            ),
            OpSpec::SelectReduce {
                dst,
                predicate,
                on_true,
                on_false,
                reverse,
                reduce_cmd,
                reduce,
            } => (
                Engine::Vector,
                Op::SelectReduce {
                    dst: t(dst)?,
                    predicate: t(predicate)?,
                    on_true: t(on_true)?,
                    on_false: self.scalar(on_false)?,
                    reverse: *reverse,
                    reduce_cmd: reduce_cmd_of(reduce_cmd)?,
                    reduce: reduce.as_ref().map(t).transpose()?,
                },
            ),
            OpSpec::Reciprocal { dst, src } => {
                (Engine::Vector, Op::Reciprocal { dst: t(dst)?, src: t(src)? })
            }
            OpSpec::FindIndex8 { dst, data, vals } => {
                (Engine::Vector, Op::FindIndex8 { dst: t(dst)?, data: t(data)?, vals: t(vals)? })
            }
            OpSpec::ScalarTensorTensor {
                dst,
                src,
                operand0,
                in1,
                op0,
                op1,
                reverse0,
                reverse1,
            } => (
                Engine::Vector,
                Op::ScalarTensorTensor {
                    dst: t(dst)?,
                    src: t(src)?,
                    operand0: self.scalar(operand0)?,
                    in1: t(in1)?,
                    op0: alu_of(op0)?,
                    op1: alu_of(op1)?,
                    reverse0: *reverse0,
                    reverse1: *reverse1,
                },
            ),
            OpSpec::TensorScalarReduce { dst, src, op0, operand0, reverse0, reduce_op, reduce } => {
                let rop = reduce_of(reduce_op)?;
                (
                    Engine::Vector,
                    Op::TensorScalarReduce {
                        dst: t(dst)?,
                        src: t(src)?,
                        op0: alu_of(op0)?,
                        operand0: self.scalar(operand0)?,
                        reverse0: *reverse0,
                        reduce_op: rop,
                        reduce: t(reduce)?,
                    },
                )
            }
            OpSpec::Iota { dst, base, channel_multiplier, steps } => {
                let dst = self.tile_unmerged(dst)?;
                let steps = fit_steps(steps, &dst.dims);
                let affine = Affine { base: *base, channel_multiplier: *channel_multiplier, steps };
                (Engine::GpSimd, Op::Iota { dst, affine })
            }
            OpSpec::AffineSelect { dst, src, cmp, base, channel_multiplier, steps, on_false } => {
                let dst = self.tile_unmerged(dst)?;
                let steps = fit_steps(steps, &dst.dims);
                let affine = Affine { base: *base, channel_multiplier: *channel_multiplier, steps };
                (
                    Engine::GpSimd,
                    Op::AffineSelect {
                        src: self.tile_unmerged(src)?,
                        dst,
                        affine,
                        cmp: alu_of(cmp)?,
                        on_false: *on_false,
                    },
                )
            }
        }))
    }
}

/// One step per dim of `dims` (the front end passes one per traced dim; an empty access got a
/// unit dim).
fn fit_steps(steps: &[i32], dims: &[Dim]) -> Vec<i32> {
    if steps.len() == dims.len() {
        return steps.to_vec();
    }
    let mut out = steps[steps.len().saturating_sub(dims.len())..].to_vec();
    out.resize(dims.len(), 0);
    out
}

/// Merges adjacent dims that walk memory contiguously (`outer.stride == inner.stride ×
/// inner.size`), and drops size-1 dims, keeping at least one dim.
pub(crate) fn merge_dims(dims: Vec<Dim>) -> Vec<Dim> {
    let mut out: Vec<Dim> = Vec::with_capacity(dims.len());
    for d in dims.into_iter().filter(|d| d.size != 1) {
        out.push(d);
    }
    if out.is_empty() {
        return vec![Dim { stride: 1, size: 1 }];
    }
    let mut merged: Vec<Dim> = Vec::with_capacity(out.len());
    for d in out.into_iter().rev() {
        match merged.last_mut() {
            Some(inner)
                if inner.stride.checked_mul(inner.size as i64) == Some(d.stride)
                    && inner.size.checked_mul(d.size).is_some() =>
            {
                inner.size *= d.size;
            }
            _ => merged.push(d),
        }
    }
    merged.reverse();
    merged
}

/// Largest size one traced dim may have: the front end writes tensor extents, far below this;
/// it keeps every product of sizes and strides inside 64 bits.
const MAX_DIM_SIZE: i64 = 1 << 32;
/// Largest element stride one traced dim may have (the same bound).
const MAX_DIM_STRIDE: i64 = 1 << 40;

/// Every dim of `a` has a size in `0..=2³²` and a stride within ±2⁴⁰.
fn check_dims(a: &Access, what: &str) -> Result<(), String> {
    for [stride, size] in &a.dims {
        if !(0..=MAX_DIM_SIZE).contains(size) {
            return Err(format!("{what}: dim size {size} is outside 0..={MAX_DIM_SIZE}"));
        }
        if stride.unsigned_abs() > MAX_DIM_STRIDE as u64 {
            return Err(format!("{what}: dim stride {stride} is outside ±{MAX_DIM_STRIDE}"));
        }
    }
    Ok(())
}

fn check_access(
    trace: &Trace,
    dtypes: &[DType],
    a: &Access,
    what: &str,
    parts: u32,
) -> Result<(), String> {
    let spec = trace.tensors.get(a.t).ok_or_else(|| format!("{what}: no tensor #{}", a.t))?;
    let dtype = match &a.dt {
        Some(d) => dtype_of(d).map_err(|e| e.to_string())?,
        None => dtypes[a.t],
    };
    let esz = dtype.size_bytes() as u64;
    let (lo, hi) = byte_range(a, esz);
    if spec.buffer.is_hbm() {
        let total = i128::from(spec.shape.iter().product::<u64>())
            * i128::from(dtypes[a.t].size_bytes() as u64);
        if lo < 0 || hi > total {
            return Err(format!(
                "{what} of '{}' is out of bounds (bytes {lo}..{hi} of {total})",
                spec.name
            ));
        }
        return Ok(());
    }
    if a.n == 0 || a.p + a.n > spec.partitions.min(parts) {
        return Err(format!(
            "{what} of '{}' touches partitions {}..{} of {}",
            spec.name,
            a.p,
            a.p + a.n,
            spec.partitions
        ));
    }
    if lo < 0 || hi > i128::from(spec.bytes) {
        return Err(format!(
            "{what} of '{}' is out of bounds (bytes {lo}..{hi} of {} per partition)",
            spec.name, spec.bytes
        ));
    }
    Ok(())
}

/// Allocates, lowers and verifies `trace` for one NeuronCore of `chip`.
pub fn compile(trace: &Trace, chip: &ChipParams) -> Result<Compiled, NkiError> {
    let core = &chip.core;
    let parts = core.partitions.value;
    let dtypes: Vec<DType> =
        trace.tensors.iter().map(|t| dtype_of(&t.dtype)).collect::<Result<_, _>>()?;
    let where_ = |s: SourceRef| {
        let file = trace.files.get(s[0] as usize).map_or("<kernel>", String::as_str);
        format!("{file}:{}", s[1])
    };
    let mut hbm_bytes = 0u64;
    for (t, spec) in trace.tensors.iter().enumerate() {
        check_tensor(spec, dtypes[t], parts)
            .map_err(|m| NkiError::Kernel { at: where_(spec.src), message: m })?;
        if spec.buffer.is_hbm() {
            let bytes = spec
                .shape
                .iter()
                .try_fold(dtypes[t].size_bytes() as u64, |a, &d| a.checked_mul(d))
                .unwrap_or(u64::MAX);
            hbm_bytes = hbm_bytes.saturating_add(bytes);
            if hbm_bytes > chip.hbm_bytes.value {
                return Err(NkiError::Kernel {
                    at: where_(spec.src),
                    message: format!(
                        "the kernel's HBM tensors need more than the {} bytes of one {} chip (at '{}')",
                        chip.hbm_bytes.value, chip.chip, spec.name
                    ),
                });
            }
        }
    }

    // Which on-chip tensors can be split into blocks: every access within one block.
    let mut splittable: Vec<bool> = trace
        .tensors
        .iter()
        .map(|t| {
            // PSUM is handed out in banks: blocks smaller than a bank stay packed together.
            let bank = u64::from(core.psum_bank_bytes());
            let whole_banks = t.buffer != Buffer::Psum || t.block_bytes % bank == 0;
            !t.buffer.is_hbm() && t.block_bytes > 0 && t.block_bytes < t.bytes && whole_banks
        })
        .collect();
    // Per tensor: (first, last) use, and per block for splittable ones.
    let mut block_use: HashMap<(usize, u64), (usize, usize)> = HashMap::new();
    let mut whole_use: Vec<Option<(usize, usize)>> = vec![None; trace.tensors.len()];
    // The ops that use each tensor and block, in order (for spilling).
    let mut block_ops: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut whole_ops: Vec<Vec<usize>> = vec![Vec::new(); trace.tensors.len()];
    let push_op = |v: &mut Vec<usize>, i: usize| {
        if v.last() != Some(&i) {
            v.push(i);
        }
    };
    for (i, op) in trace.ops.iter().enumerate() {
        let indexed = matches!(op.i, OpSpec::Dma { index: Some(_), .. });
        for (a, _) in op.i.accesses() {
            check_dims(a, op.i.name())
                .map_err(|m| NkiError::Kernel { at: where_(op.s), message: m })?;
            // An indexed HBM side's rows are data: the simulator checks them as it runs.
            if !(indexed && trace.tensors.get(a.t).is_some_and(|t| t.buffer.is_hbm())) {
                check_access(trace, &dtypes, a, op.i.name(), parts)
                    .map_err(|m| NkiError::Kernel { at: where_(op.s), message: m })?;
            }
            let spec = &trace.tensors[a.t];
            if spec.buffer.is_hbm() {
                continue;
            }
            let u = whole_use[a.t].get_or_insert((i, i));
            u.1 = i;
            push_op(&mut whole_ops[a.t], i);
            if splittable[a.t] {
                let esz = match &a.dt {
                    Some(d) => dtype_of(d)?.size_bytes() as u64,
                    None => dtypes[a.t].size_bytes() as u64,
                };
                let (lo, hi) = byte_range(a, esz);
                let (b0, b1) = (lo as u64 / spec.block_bytes, (hi as u64 - 1) / spec.block_bytes);
                if b0 != b1 {
                    splittable[a.t] = false;
                } else {
                    let e = block_use.entry((a.t, b0)).or_insert((i, i));
                    e.1 = i;
                    push_op(block_ops.entry((a.t, b0)).or_default(), i);
                }
            }
        }
    }
    let mut units: Vec<Unit> = Vec::new();
    let mut unit_of_tensor: Vec<Vec<usize>> = vec![Vec::new(); trace.tensors.len()];
    let mut blocks: Vec<((usize, u64), (usize, usize))> = block_use.into_iter().collect();
    blocks.sort_unstable_by_key(|&(k, _)| k);
    let mut uses: Vec<Vec<usize>> = Vec::new();
    for ((t, b), (first, last)) in blocks {
        if splittable[t] {
            let bb = trace.tensors[t].block_bytes;
            units.push(Unit { tensor: t, start: b * bb, bytes: bb, first, last, addr: 0 });
            uses.push(block_ops.remove(&(t, b)).unwrap_or_default());
        }
    }
    for (t, u) in whole_use.iter().enumerate() {
        if let (Some((first, last)), false) = (u, splittable[t]) {
            let bytes = trace.tensors[t].bytes;
            units.push(Unit { tensor: t, start: 0, bytes, first: *first, last: *last, addr: 0 });
            uses.push(std::mem::take(&mut whole_ops[t]));
        }
    }
    let alloc = allocate(trace, chip, &dtypes, &mut units, &mut uses, &where_)?;
    let (sbuf_peak_bytes, psum_peak_bytes) = alloc.peak;
    for (u, unit) in units.iter().enumerate() {
        unit_of_tensor[unit.tensor].push(u);
    }
    for us in &mut unit_of_tensor {
        us.sort_by_key(|&u| (units[u].start, units[u].first));
    }

    // HBM tensors in trace order.
    let mut b = KernelBuilder::new(chip.chip);
    let mut hbm_index = vec![None; trace.tensors.len()];
    let mut n_hbm = 0usize;
    for (t, spec) in trace.tensors.iter().enumerate() {
        let kind = match spec.buffer {
            Buffer::Input => TensorKind::Input,
            Buffer::Output => TensorKind::Output,
            Buffer::Scratch => TensorKind::Scratch,
            _ => continue,
        };
        let r = match kind {
            TensorKind::Input => b.input(&spec.name, dtypes[t], &spec.shape),
            TensorKind::Output => b.output(&spec.name, dtypes[t], &spec.shape),
            TensorKind::Scratch => b.scratch(&spec.name, dtypes[t], &spec.shape),
        };
        r.map_err(|e| NkiError::Kernel { at: where_(spec.src), message: e.to_string() })?;
        hbm_index[t] = Some(n_hbm);
        n_hbm += 1;
    }
    // One spill tensor per dtype spilled: [128, columns] of that dtype.
    let mut spill_tensor: HashMap<DType, usize> = HashMap::new();
    for (&dtype, &cols) in &alloc.spill_columns {
        let mut name = format!("spill_{dtype}");
        while trace.tensors.iter().any(|t| t.name == name) {
            name.push('_'); // a kernel tensor of that name
        }
        let r = b.scratch(&name, dtype, &[u64::from(parts), cols]);
        spill_tensor.insert(dtype, r.map_err(|e| NkiError::Input(e.to_string()))?);
    }
    let spill_dma = |b: &mut KernelBuilder, units: &[Unit], s: &Spill, store: bool| {
        let unit = units[if store { s.before } else { s.after }];
        let spec = &trace.tensors[unit.tensor];
        let dtype = dtypes[unit.tensor];
        let n = unit.bytes / dtype.size_bytes() as u64;
        let tile = Tile::new(Memory::Sbuf, 0..spec.partitions, unit.addr, dtype, &[n]);
        let hbm =
            b.block(spill_tensor[&dtype], 0..u64::from(spec.partitions), s.column..s.column + n);
        let (t, h) = (DmaOperand::Tile(tile), DmaOperand::Hbm(hbm));
        if store {
            b.dma(h, t);
        } else {
            b.dma(t, h);
        }
    };
    let mut reloads: HashMap<usize, Vec<Spill>> = HashMap::new();
    let mut stores: HashMap<usize, Vec<Spill>> = HashMap::new();
    for s in &alloc.spills {
        reloads.entry(s.reload_before).or_default().push(*s);
        stores.entry(s.store_after).or_default().push(*s);
    }
    let mut low = Lowering {
        trace,
        dtypes: dtypes.clone(),
        units,
        unit_of_tensor,
        hbm_index,
        last_writer: HashMap::new(),
        current_op: 0,
    };
    let mut sources = Vec::with_capacity(trace.ops.len());
    for (i, op) in trace.ops.iter().enumerate() {
        for s in reloads.get(&i).into_iter().flatten() {
            spill_dma(&mut b, &low.units, s, false);
            sources.push(op.s);
        }
        low.current_op = i;
        if matches!(op.i, OpSpec::Fence) {
            b.fence();
            continue;
        }
        let lowered = low.lower(&op.i).map_err(|e| match e {
            NkiError::Input(m) => NkiError::Kernel { at: low.src(op.s), message: m },
            other => other,
        })?;
        let Some((engine, isa)) = lowered else {
            for s in stores.get(&i).into_iter().flatten() {
                spill_dma(&mut b, &low.units, s, true);
                sources.push(op.s);
            }
            continue;
        };
        if engine != Engine::Sync {
            if let Some((dst, _)) = op.i.accesses().into_iter().rev().find(|(_, w)| *w) {
                if !trace.tensors[dst.t].buffer.is_hbm() {
                    let esz = low.access_dtype(dst)?.size_bytes() as u64;
                    let u = low.unit_at(dst, esz).map_err(|e| match e {
                        NkiError::Input(m) => NkiError::Kernel { at: low.src(op.s), message: m },
                        other => other,
                    })?;
                    low.last_writer.insert(u, engine);
                }
            }
        }
        b.push(engine, isa);
        sources.push(op.s);
        for s in stores.get(&i).into_iter().flatten() {
            spill_dma(&mut b, &low.units, s, true);
            sources.push(op.s);
        }
    }
    let lines: Vec<u32> = sources.iter().map(|s| s[1]).collect();
    let program = b.into_program(lines).map_err(|e| match e {
        rainier_kernels::KernelError::Invalid(v) => {
            let msgs: Vec<String> =
                v.0.iter()
                    .take(8)
                    .map(|x| format!("{}: {}: {}", low.src(sources[x.index]), x.opcode, x.message))
                    .collect();
            NkiError::Rules(msgs.join("\n  "))
        }
        other => NkiError::Input(other.to_string()),
    })?;
    Ok(Compiled {
        program,
        sources,
        hbm_index: low.hbm_index,
        sbuf_peak_bytes,
        psum_peak_bytes,
        spills: alloc.spills.len(),
    })
}

fn check_tensor(spec: &TensorSpec, dtype: DType, parts: u32) -> Result<(), String> {
    if spec.buffer.is_hbm() {
        if spec.shape.is_empty() || spec.shape.contains(&0) {
            return Err(format!("tensor '{}' has an empty shape {:?}", spec.name, spec.shape));
        }
        return Ok(());
    }
    if spec.partitions == 0 || spec.partitions > parts {
        return Err(format!(
            "tensor '{}' spans {} partitions; a NeuronCore has {parts} (the partition dimension is the first, or the nl.par_dim one)",
            spec.name, spec.partitions
        ));
    }
    if spec.bytes == 0 || spec.bytes % dtype.size_bytes() as u64 != 0 {
        return Err(format!("tensor '{}' has {} bytes per partition", spec.name, spec.bytes));
    }
    Ok(())
}

/// What [`allocate`] decided.
struct Allocation {
    /// Most SBUF / PSUM bytes per partition live at once.
    peak: (u64, u64),
    spills: Vec<Spill>,
    /// Columns of the spill tensor of each dtype.
    spill_columns: BTreeMap<DType, u64>,
}

/// Places every unit by liveness, sweeping the program. Memory of a unit whose last use has
/// passed is reused as late as possible: dead units wait in a queue and are released, oldest
/// first, only when a placement would otherwise fail, and placement is next fit. So successive
/// loop iterations rotate through as many buffers as fit, and a load of the next iteration
/// does not reuse (and wait for) the buffer the current one is still reading, as a compiler
/// that prefetches allocates them. Reports the peak bytes of live units.
///
/// When SBUF cannot hold the live set, a live unit not used by the op at hand is spilled, as a
/// compiler spills: the one whose next use is farthest (Belady's choice; the Neuron compiler's
/// policy is not published, so this is an assumption). It is stored to an HBM scratch tensor
/// after its last use so far and loaded back, as a new unit, before its next use. PSUM is not
/// spilled (an error, as before).
fn allocate(
    trace: &Trace,
    chip: &ChipParams,
    dtypes: &[DType],
    units: &mut Vec<Unit>,
    uses: &mut Vec<Vec<usize>>,
    where_: &dyn Fn(SourceRef) -> String,
) -> Result<Allocation, NkiError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let core = &chip.core;
    let bank = u64::from(core.psum_bank_bytes());
    let is_psum = |u: &Unit| trace.tensors[u.tensor].buffer == Buffer::Psum;
    let size = |u: &Unit| if is_psum(u) { u.bytes.div_ceil(bank) * bank } else { u.bytes };
    let mut sbuf = Arena::new(u64::from(core.sbuf_bytes_per_partition.value));
    let mut psum = Arena::new(u64::from(core.psum_bytes_per_partition.value));
    let mut pending: BinaryHeap<Reverse<(usize, usize)>> =
        units.iter().enumerate().map(|(u, x)| Reverse((x.first, u))).collect();
    // Placed units by last use, to retire them; dead units not yet released, oldest first.
    let mut placed: BinaryHeap<Reverse<(usize, usize)>> = BinaryHeap::new();
    let mut dead: [VecDeque<usize>; 2] = [VecDeque::new(), VecDeque::new()];
    let (mut live, mut peak) = ([0u64; 2], [0u64; 2]);
    // Live SBUF units (placed, not yet dead), for choosing what to spill.
    let mut live_sbuf: Vec<usize> = Vec::new();
    let mut spills = Vec::new();
    let mut spill_columns: BTreeMap<DType, u64> = BTreeMap::new();
    // Spill slots: (dtype, column, columns, free from op).
    let mut slots: Vec<(DType, u64, u64, usize)> = Vec::new();
    while let Some(Reverse((first, u))) = pending.pop() {
        while let Some(&Reverse((last, v))) = placed.peek() {
            if last >= first {
                break;
            }
            placed.pop();
            if units[v].last != last {
                continue; // shortened by a spill: retired already
            }
            let m = usize::from(is_psum(&units[v]));
            live[m] -= size(&units[v]);
            dead[m].push_back(v);
            live_sbuf.retain(|&x| x != v);
        }
        let m = usize::from(is_psum(&units[u]));
        let bytes = size(&units[u]);
        let addr = loop {
            let (arena, align) = if m == 1 { (&mut psum, bank) } else { (&mut sbuf, SBUF_ALIGN) };
            if let Some(a) = arena.alloc(bytes, align) {
                break a;
            }
            if let Some(v) = dead[m].pop_front() {
                arena.release(units[v].addr, size(&units[v]));
                continue;
            }
            // Spill the live SBUF unit whose next use is farthest.
            let victim = (m == 0)
                .then(|| {
                    live_sbuf
                        .iter()
                        .copied()
                        .filter(|&v| !uses[v].contains(&first))
                        .filter_map(|v| uses[v].iter().find(|&&i| i > first).map(|&n| (n, v)))
                        .max_by_key(|&(next, v)| (next, Reverse(v)))
                })
                .flatten();
            let Some((next, v)) = victim else {
                let spec = &trace.tensors[units[u].tensor];
                let what = if m == 1 { "PSUM" } else { "SBUF" };
                return Err(NkiError::OutOfMemory {
                    at: where_(spec.src),
                    message: format!(
                        "tensor '{}' needs {bytes} bytes per partition of {what} but the largest free block is {} of {} bytes ({} bytes in use by live tensors{})",
                        spec.name,
                        arena.largest(),
                        arena.capacity(),
                        arena.capacity() - arena.free_bytes(),
                        if m == 0 { ", none of which can be spilled" } else { "" }
                    ),
                });
            };
            let (before, after): (Vec<usize>, Vec<usize>) =
                uses[v].iter().partition(|&&i| i < first);
            let store_after = *before.last().unwrap_or(&units[v].first);
            let mut tail = units[v];
            tail.first = next;
            tail.addr = 0;
            units[v].last = store_after;
            uses[v] = before;
            let w = units.len();
            units.push(tail);
            uses.push(after);
            pending.push(Reverse((next, w)));
            // The slot: reuse one whose reload is emitted before this store.
            let dtype = dtypes[tail.tensor];
            let cols = tail.bytes / dtype.size_bytes() as u64;
            let slot = slots.iter_mut().find(|s| s.0 == dtype && s.2 >= cols && s.3 <= store_after);
            let column = match slot {
                Some(s) => {
                    s.3 = next;
                    s.1
                }
                None => {
                    let c = spill_columns.entry(dtype).or_insert(0);
                    let column = *c;
                    *c += cols;
                    slots.push((dtype, column, cols, next));
                    column
                }
            };
            spills.push(Spill { before: v, after: w, store_after, reload_before: next, column });
            live[0] -= size(&units[v]);
            live_sbuf.retain(|&x| x != v);
            arena.release(units[v].addr, size(&units[v]));
        };
        units[u].addr = addr;
        live[m] += bytes;
        peak[m] = peak[m].max(live[m]);
        placed.push(Reverse((units[u].last, u)));
        if m == 0 {
            live_sbuf.push(u);
        }
    }
    Ok(Allocation { peak: (peak[0], peak[1]), spills, spill_columns })
}
