//! The traced kernel: what a front end (the `rainier` Python package) records while it runs an
//! NKI kernel's Python body, as JSON. Tensors are virtual: on-chip ones have a partition count
//! and bytes per partition but no address (allocation is [`crate::compile`]'s job); every
//! operand is an affine access into one tensor, in elements of the access's dtype.

use serde::{Deserialize, Serialize};

/// A kernel as traced: its tensors and its instructions in program order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trace {
    /// The kernel's Python name (for reports and traces).
    pub kernel: String,
    /// Source files named by [`SourceRef`]s.
    #[serde(default)]
    pub files: Vec<String>,
    pub tensors: Vec<TensorSpec>,
    pub ops: Vec<TraceOp>,
}

/// Where a tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Buffer {
    /// HBM, given by the caller.
    Input,
    /// HBM, returned to the caller.
    Output,
    /// HBM, device-only working memory.
    Scratch,
    Sbuf,
    Psum,
}

impl Buffer {
    pub fn is_hbm(self) -> bool {
        matches!(self, Buffer::Input | Buffer::Output | Buffer::Scratch)
    }
}

/// `[file index, line]` of the kernel source that made a tensor or an instruction.
pub type SourceRef = [u32; 2];

/// A declared tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub buffer: Buffer,
    /// NKI or Rainier dtype name (`float32`, `bfloat16`, `f32`, ...).
    pub dtype: String,
    /// HBM tensors: the shape (row-major, dense).
    #[serde(default)]
    pub shape: Vec<u64>,
    /// On-chip tensors: the partitions spanned.
    #[serde(default)]
    pub partitions: u32,
    /// On-chip tensors: bytes per partition.
    #[serde(default)]
    pub bytes: u64,
    /// On-chip tensors with block dimensions (`nl.par_dim` not first): bytes of one block per
    /// partition. When no access spans two blocks, each block is allocated on its own, with
    /// its own lifetime, as a compiler does; 0 means one block.
    #[serde(default)]
    pub block_bytes: u64,
    #[serde(default)]
    pub src: SourceRef,
    /// An input the kernel writes (legacy kernels that store into an argument): its final
    /// contents are returned with the outputs.
    #[serde(default)]
    pub written: bool,
}

/// An affine access into a tensor. On-chip: partitions `[p, p + n)` and, within each, the
/// elements `off + Σ i_j · stride_j`. HBM: the elements `off + Σ i_j · stride_j` of the dense
/// tensor (`p`, `n` unused; the first dim plays the partition role in a DMA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Tensor index.
    pub t: usize,
    #[serde(default)]
    pub p: u32,
    #[serde(default)]
    pub n: u32,
    #[serde(default)]
    pub off: i64,
    /// `[stride, size]` per free dim, outermost first.
    pub dims: Vec<[i64; 2]>,
    /// A dtype other than the tensor's (a bitcast view), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt: Option<String>,
}

/// The scalar operand of `tensor_scalar` and `activation`'s scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScalarSpec {
    Imm(f32),
    /// A non-finite immediate, which JSON cannot write as a number: `"inf"`, `"-inf"`, `"nan"`.
    Named(String),
    Tile(Access),
}

/// A float that may be non-finite (`"inf"`, `"-inf"`, `"nan"` in JSON).
fn de_f32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        F(f32),
        S(String),
    }
    match Repr::deserialize(d)? {
        Repr::F(v) => Ok(v),
        Repr::S(s) => {
            named_f32(&s).ok_or_else(|| serde::de::Error::custom(format!("not a number: '{s}'")))
        }
    }
}

/// `"inf"`, `"-inf"` or `"nan"` as an f32.
pub(crate) fn named_f32(s: &str) -> Option<f32> {
    match s {
        "inf" => Some(f32::INFINITY),
        "-inf" => Some(f32::NEG_INFINITY),
        "nan" => Some(f32::NAN),
        _ => None,
    }
}

/// One stage of `tensor_scalar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    pub alu: String,
    pub operand: ScalarSpec,
    #[serde(default)]
    pub reverse: bool,
}

/// One traced instruction and the kernel line that issued it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceOp {
    #[serde(default)]
    pub s: SourceRef,
    pub i: OpSpec,
}

fn scalar_one() -> ScalarSpec {
    ScalarSpec::Imm(1.0)
}

fn scalar_zero() -> ScalarSpec {
    ScalarSpec::Imm(0.0)
}

/// An NKI instruction with virtual operands (see `docs/isa.md` for the semantics of each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpSpec {
    Dma {
        dst: Access,
        src: Access,
        /// Indirect DMA: the HBM side's outer rows come from this `[R, 1]` integer tile.
        #[serde(default)]
        index: Option<Access>,
        #[serde(default)]
        oob_skip: bool,
        #[serde(default)]
        accumulate: bool,
        /// The indexed axis's size: indices outside `[0, rows)` are out of range.
        #[serde(default)]
        rows: u32,
    },
    Matmul {
        dst: Access,
        stationary: Access,
        moving: Access,
        #[serde(default)]
        accumulate: bool,
        /// fp8 double-row mode (v3+): operands `[K, 2·M]`, `[K, 2·N]`.
        #[serde(default)]
        double_row: bool,
    },
    /// MX matmul (v4): packed operands with their scale tiles.
    MatmulMx {
        dst: Access,
        stationary: Access,
        moving: Access,
        stationary_scale: Access,
        moving_scale: Access,
        #[serde(default)]
        accumulate: bool,
    },
    /// `quantize_mx` (v4, Vector engine).
    QuantizeMx {
        dst: Access,
        src: Access,
        scale: Access,
    },
    Transpose {
        dst: Access,
        src: Access,
        engine: String,
    },
    /// `dma_transpose` of an on-chip 2-D tile (v3+ hardware DGE).
    DmaTranspose {
        dst: Access,
        src: Access,
    },
    TensorTensor {
        dst: Access,
        in0: Access,
        in1: Access,
        alu: String,
        engine: String,
    },
    TensorScalar {
        dst: Access,
        src: Access,
        stages: Vec<StageSpec>,
        engine: String,
    },
    TensorReduce {
        dst: Access,
        src: Access,
        reduce: String,
        axes: u32,
        #[serde(default)]
        negate: bool,
    },
    TensorCopy {
        dst: Access,
        src: Access,
        engine: String,
    },
    Memset {
        dst: Access,
        #[serde(deserialize_with = "de_f32")]
        value: f32,
        engine: String,
    },
    Select {
        dst: Access,
        predicate: Access,
        on_true: Access,
        on_false: Access,
    },
    Activation {
        dst: Access,
        src: Access,
        func: String,
        #[serde(default = "scalar_one")]
        scale: ScalarSpec,
        #[serde(default)]
        bias: Option<Access>,
        #[serde(default)]
        reduce: Option<Access>,
    },
    Iota {
        dst: Access,
        base: i32,
        channel_multiplier: i32,
        steps: Vec<i32>,
    },
    AffineSelect {
        dst: Access,
        src: Access,
        cmp: String,
        base: i32,
        channel_multiplier: i32,
        steps: Vec<i32>,
        #[serde(deserialize_with = "de_f32")]
        on_false: f32,
    },
    TensorTensorScan {
        dst: Access,
        in0: Access,
        in1: Access,
        initial: ScalarSpec,
        op0: String,
        op1: String,
        #[serde(default)]
        reverse0: bool,
        #[serde(default)]
        reverse1: bool,
    },
    BnStats {
        dst: Access,
        src: Access,
    },
    BnAggr {
        dst: Access,
        src: Access,
    },
    ScalarTensorTensor {
        dst: Access,
        src: Access,
        operand0: ScalarSpec,
        in1: Access,
        op0: String,
        op1: String,
        #[serde(default)]
        reverse0: bool,
        #[serde(default)]
        reverse1: bool,
    },
    TensorScalarReduce {
        dst: Access,
        src: Access,
        op0: String,
        operand0: ScalarSpec,
        #[serde(default)]
        reverse0: bool,
        reduce_op: String,
        reduce: Access,
    },
    Max8 {
        dst: Access,
        src: Access,
    },
    #[serde(rename = "nc_find_index8")]
    FindIndex8 {
        dst: Access,
        data: Access,
        vals: Access,
    },
    Reciprocal {
        dst: Access,
        src: Access,
    },
    RangeSelect {
        dst: Access,
        src: Access,
        bound0: Access,
        bound1: Access,
        cmp0: String,
        cmp1: String,
        #[serde(default)]
        range_start: i32,
        #[serde(deserialize_with = "de_f32")]
        on_false: f32,
        reduce_cmd: String,
        #[serde(default)]
        reduce: Option<Access>,
    },
    SelectReduce {
        dst: Access,
        predicate: Access,
        on_true: Access,
        on_false: ScalarSpec,
        #[serde(default)]
        reverse: bool,
        reduce_cmd: String,
        #[serde(default)]
        reduce: Option<Access>,
    },
    TensorScalarCumulative {
        dst: Access,
        src: Access,
        op0: String,
        operand0: ScalarSpec,
        #[serde(default)]
        reverse0: bool,
        op1: String,
        reduce_cmd: String,
        #[serde(default)]
        init: Option<ScalarSpec>,
    },
    Exponential {
        dst: Access,
        src: Access,
        #[serde(default = "scalar_zero")]
        max: ScalarSpec,
        reduce_cmd: String,
        #[serde(default)]
        init: Option<ScalarSpec>,
        #[serde(default)]
        reduce: Option<Access>,
    },
    PartitionReduce {
        dst: Access,
        src: Access,
        reduce: String,
    },
    StreamShuffle {
        dst: Access,
        src: Access,
        mask: Vec<u8>,
    },
    Gather {
        dst: Access,
        src: Access,
        index: Access,
    },
    SequenceBounds {
        dst: Access,
        src: Access,
    },
    Dropout {
        dst: Access,
        src: Access,
        prob: ScalarSpec,
        #[serde(default)]
        seed: u32,
    },
    #[serde(rename = "nc_match_replace8")]
    MatchReplace8 {
        dst: Access,
        data: Access,
        vals: Access,
        #[serde(deserialize_with = "de_f32")]
        imm: f32,
        #[serde(default)]
        indices: Option<Access>,
    },
    LocalGather {
        dst: Access,
        src: Access,
        index: Access,
        elems: u32,
        valid: u32,
    },
    /// Every later instruction waits for every earlier one (`sequential_range` iterations).
    Fence,
}

impl OpSpec {
    /// Every operand with whether it is written, sources first.
    pub fn accesses(&self) -> Vec<(&Access, bool)> {
        let mut v: Vec<(&Access, bool)> = Vec::with_capacity(4);
        match self {
            OpSpec::Dma { dst, src, index, .. } => {
                v.push((src, false));
                if let Some(i) = index {
                    v.push((i, false));
                }
                v.push((dst, true));
            }
            OpSpec::Transpose { dst, src, .. }
            | OpSpec::DmaTranspose { dst, src }
            | OpSpec::TensorCopy { dst, src, .. }
            | OpSpec::TensorReduce { dst, src, .. }
            | OpSpec::AffineSelect { dst, src, .. }
            | OpSpec::BnStats { dst, src }
            | OpSpec::BnAggr { dst, src }
            | OpSpec::Max8 { dst, src }
            | OpSpec::Reciprocal { dst, src } => {
                v.push((src, false));
                v.push((dst, true));
            }
            OpSpec::FindIndex8 { dst, data, vals } => {
                v.push((data, false));
                v.push((vals, false));
                v.push((dst, true));
            }
            OpSpec::Exponential { dst, src, max, init, reduce, .. } => {
                v.push((src, false));
                for s in [Some(max), init.as_ref()].into_iter().flatten() {
                    if let ScalarSpec::Tile(t) = s {
                        v.push((t, false));
                    }
                }
                v.push((dst, true));
                if let Some(r) = reduce {
                    v.push((r, true));
                }
            }
            OpSpec::TensorScalarCumulative { dst, src, operand0, init, .. } => {
                v.push((src, false));
                if let ScalarSpec::Tile(t) = operand0 {
                    v.push((t, false));
                }
                if let Some(ScalarSpec::Tile(t)) = init {
                    v.push((t, false));
                }
                v.push((dst, true));
            }
            OpSpec::MatchReplace8 { dst, data, vals, indices, .. } => {
                v.push((data, false));
                v.push((vals, false));
                v.push((dst, true));
                if let Some(i) = indices {
                    v.push((i, true));
                }
            }
            OpSpec::Gather { dst, src, index } => {
                v.push((src, false));
                v.push((index, false));
                v.push((dst, true));
            }
            OpSpec::SequenceBounds { dst, src } => {
                v.push((src, false));
                v.push((dst, true));
            }
            OpSpec::Dropout { dst, src, prob, .. } => {
                v.push((src, false));
                if let ScalarSpec::Tile(t) = prob {
                    v.push((t, false));
                }
                v.push((dst, true));
            }
            OpSpec::StreamShuffle { dst, src, .. } => {
                v.push((src, false));
                v.push((dst, true));
            }
            OpSpec::PartitionReduce { dst, src, .. } => {
                v.push((src, false));
                v.push((dst, true));
            }
            OpSpec::LocalGather { dst, src, index, .. } => {
                v.push((src, false));
                v.push((index, false));
                v.push((dst, true));
            }
            OpSpec::RangeSelect { dst, src, bound0, bound1, reduce, .. } => {
                v.push((src, false));
                v.push((bound0, false));
                v.push((bound1, false));
                v.push((dst, true));
                if let Some(r) = reduce {
                    v.push((r, true));
                }
            }
            OpSpec::SelectReduce { dst, predicate, on_true, on_false, reduce, .. } => {
                v.push((predicate, false));
                v.push((on_true, false));
                if let ScalarSpec::Tile(t) = on_false {
                    v.push((t, false));
                }
                v.push((dst, true));
                if let Some(r) = reduce {
                    v.push((r, true));
                }
            }
            OpSpec::ScalarTensorTensor { dst, src, operand0, in1, .. } => {
                v.push((src, false));
                if let ScalarSpec::Tile(t) = operand0 {
                    v.push((t, false));
                }
                v.push((in1, false));
                v.push((dst, true));
            }
            OpSpec::TensorScalarReduce { dst, src, operand0, reduce, .. } => {
                v.push((src, false));
                if let ScalarSpec::Tile(t) = operand0 {
                    v.push((t, false));
                }
                v.push((reduce, true));
                v.push((dst, true));
            }
            OpSpec::TensorTensorScan { dst, in0, in1, initial, .. } => {
                v.push((in0, false));
                v.push((in1, false));
                if let ScalarSpec::Tile(t) = initial {
                    v.push((t, false));
                }
                v.push((dst, true));
            }
            OpSpec::Matmul { dst, stationary, moving, .. } => {
                v.push((stationary, false));
                v.push((moving, false));
                v.push((dst, true));
            }
            OpSpec::MatmulMx {
                dst, stationary, moving, stationary_scale, moving_scale, ..
            } => {
                for a in [stationary, stationary_scale, moving, moving_scale] {
                    v.push((a, false));
                }
                v.push((dst, true));
            }
            OpSpec::QuantizeMx { dst, src, scale } => {
                v.push((src, false));
                v.push((dst, true));
                v.push((scale, true));
            }
            OpSpec::TensorTensor { dst, in0, in1, .. } => {
                v.push((in0, false));
                v.push((in1, false));
                v.push((dst, true));
            }
            OpSpec::TensorScalar { dst, src, stages, .. } => {
                v.push((src, false));
                for s in stages {
                    if let ScalarSpec::Tile(t) = &s.operand {
                        v.push((t, false));
                    }
                }
                v.push((dst, true));
            }
            OpSpec::Memset { dst, .. } | OpSpec::Iota { dst, .. } => v.push((dst, true)),
            OpSpec::Select { dst, predicate, on_true, on_false } => {
                v.push((predicate, false));
                v.push((on_true, false));
                v.push((on_false, false));
                v.push((dst, true));
            }
            OpSpec::Activation { dst, src, scale, bias, reduce, .. } => {
                v.push((src, false));
                if let ScalarSpec::Tile(t) = scale {
                    v.push((t, false));
                }
                if let Some(b) = bias {
                    v.push((b, false));
                }
                v.push((dst, true));
                if let Some(r) = reduce {
                    v.push((r, true));
                }
            }
            OpSpec::Fence => {}
        }
        v
    }

    /// The NKI name of the instruction, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            OpSpec::Dma { .. } => "dma_copy",
            OpSpec::Matmul { .. } => "nc_matmul",
            OpSpec::MatmulMx { .. } => "nc_matmul_mx",
            OpSpec::QuantizeMx { .. } => "quantize_mx",
            OpSpec::Transpose { .. } => "nc_transpose",
            OpSpec::DmaTranspose { .. } => "dma_transpose",
            OpSpec::TensorTensor { .. } => "tensor_tensor",
            OpSpec::TensorScalar { .. } => "tensor_scalar",
            OpSpec::TensorReduce { .. } => "tensor_reduce",
            OpSpec::TensorCopy { .. } => "tensor_copy",
            OpSpec::Memset { .. } => "memset",
            OpSpec::Select { .. } => "select",
            OpSpec::Activation { .. } => "activation",
            OpSpec::Iota { .. } => "iota",
            OpSpec::AffineSelect { .. } => "affine_select",
            OpSpec::TensorTensorScan { .. } => "tensor_tensor_scan",
            OpSpec::BnStats { .. } => "bn_stats",
            OpSpec::BnAggr { .. } => "bn_aggr",
            OpSpec::ScalarTensorTensor { .. } => "scalar_tensor_tensor",
            OpSpec::TensorScalarReduce { .. } => "tensor_scalar_reduce",
            OpSpec::Max8 { .. } => "max8",
            OpSpec::FindIndex8 { .. } => "nc_find_index8",
            OpSpec::Reciprocal { .. } => "reciprocal",
            OpSpec::LocalGather { .. } => "local_gather",
            OpSpec::PartitionReduce { .. } => "tensor_partition_reduce",
            OpSpec::StreamShuffle { .. } => "nc_stream_shuffle",
            OpSpec::Gather { .. } => "gather",
            OpSpec::SequenceBounds { .. } => "sequence_bounds",
            OpSpec::Dropout { .. } => "dropout",
            OpSpec::MatchReplace8 { .. } => "nc_match_replace8",
            OpSpec::TensorScalarCumulative { .. } => "tensor_scalar_cumulative",
            OpSpec::Exponential { .. } => "exponential",
            OpSpec::RangeSelect { .. } => "range_select",
            OpSpec::SelectReduce { .. } => "select_reduce",
            OpSpec::Fence => "fence",
        }
    }
}
