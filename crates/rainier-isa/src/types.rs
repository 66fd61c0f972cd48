use std::fmt;

use rainier_tensor::DType;

/// An engine's in-order instruction stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// Sequencer only: control and DMA triggers.
    Sync,
    Tensor,
    Vector,
    Scalar,
    GpSimd,
}

impl Engine {
    pub const ALL: [Engine; 5] =
        [Engine::Sync, Engine::Tensor, Engine::Vector, Engine::Scalar, Engine::GpSimd];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sync => "sync",
            Engine::Tensor => "tensor",
            Engine::Vector => "vector",
            Engine::Scalar => "scalar",
            Engine::GpSimd => "gpsimd",
        }
    }

    pub fn from_name(s: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == s)
    }

    /// Position in [`Engine::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An on-chip memory of a NeuronCore. Both are 128 partitions of per-partition byte arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Memory {
    /// State buffer (`sb`): 192/224/256 KiB per partition.
    Sbuf,
    /// Partial-sum buffer (`ps`): 16 KiB per partition in 8 banks of 2 KiB.
    Psum,
}

impl Memory {
    pub fn name(self) -> &'static str {
        match self {
            Memory::Sbuf => "sb",
            Memory::Psum => "ps",
        }
    }
}

/// One free dimension of an access pattern: `size` elements, `stride` elements apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dim {
    /// Elements between consecutive indices (int16 on the hardware; may be 0 or negative).
    pub stride: i64,
    /// Number of indices (uint16 on the hardware).
    pub size: u64,
}

/// Row-major contiguous dims for `sizes` (innermost stride 1).
pub fn contiguous_dims(sizes: &[u64]) -> Vec<Dim> {
    let mut stride = 1i64;
    let mut dims: Vec<Dim> = sizes
        .iter()
        .rev()
        .map(|&size| {
            let d = Dim { stride, size };
            stride = stride.saturating_mul(size as i64);
            d
        })
        .collect();
    dims.reverse();
    dims
}

/// Number of elements of a pattern, saturating.
pub fn pattern_len(dims: &[Dim]) -> u64 {
    dims.iter().fold(1u64, |acc, d| acc.saturating_mul(d.size))
}

/// Lowest and highest element offset a pattern touches (relative to its start).
pub fn pattern_extent(dims: &[Dim]) -> (i64, i64) {
    dims.iter().fold((0, 0), |(lo, hi), d| {
        let span = d.stride.saturating_mul(d.size.saturating_sub(1) as i64);
        (lo + span.min(0), hi + span.max(0))
    })
}

/// A tile: a contiguous partition range of SBUF or PSUM and the same free-dimension access
/// pattern in each partition (the engines access partitions in lock-step).
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub memory: Memory,
    pub start_partition: u32,
    pub partitions: u32,
    /// Byte offset of element 0 within each partition.
    pub offset_bytes: u64,
    pub dtype: DType,
    /// Free dimensions, outermost first (1 to 4 on the hardware).
    pub dims: Vec<Dim>,
}

impl Tile {
    /// A tile with a contiguous free pattern of `sizes`.
    pub fn new(
        memory: Memory,
        partitions: std::ops::Range<u32>,
        offset_bytes: u64,
        dtype: DType,
        sizes: &[u64],
    ) -> Self {
        Tile {
            memory,
            start_partition: partitions.start,
            partitions: partitions.end.saturating_sub(partitions.start),
            offset_bytes,
            dtype,
            dims: contiguous_dims(sizes),
        }
    }

    /// Elements per partition.
    pub fn free_len(&self) -> u64 {
        pattern_len(&self.dims)
    }

    /// Sizes of the free dimensions.
    pub fn free_shape(&self) -> Vec<u64> {
        self.dims.iter().map(|d| d.size).collect()
    }

    /// Whether the free pattern is row-major contiguous.
    pub fn is_contiguous(&self) -> bool {
        self.dims == contiguous_dims(&self.free_shape())
    }

    /// Byte range `[start, end)` touched within each partition (may be out of bounds; the
    /// verifier checks).
    pub fn byte_range(&self) -> (i128, i128) {
        let (lo, hi) = pattern_extent(&self.dims);
        let esz = self.dtype.size_bytes() as i128;
        let base = i128::from(self.offset_bytes);
        (base + i128::from(lo) * esz, base + (i128::from(hi) + 1) * esz)
    }
}

/// A strided view of a declared HBM tensor, in elements of the tensor's dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct HbmAccess {
    /// Index into [`Program::tensors`].
    pub tensor: usize,
    /// Element offset of the first element.
    pub offset: u64,
    /// Dimensions, outermost first; the element order of a DMA is row-major over them.
    pub dims: Vec<Dim>,
}

/// One side of a `dma_copy`.
#[derive(Debug, Clone, PartialEq)]
pub enum DmaOperand {
    Hbm(HbmAccess),
    Tile(Tile),
}

impl DmaOperand {
    /// Total elements moved.
    pub fn len(&self) -> u64 {
        match self {
            DmaOperand::Hbm(h) => pattern_len(&h.dims),
            DmaOperand::Tile(t) => u64::from(t.partitions).saturating_mul(t.free_len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The scalar operand of `tensor_scalar` and `activation`'s scale: an fp32 immediate or a
/// per-partition vector (a `[P, 1]` tile, read as fp32).
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarOperand {
    Imm(f32),
    Vector(Tile),
}

/// Arithmetic and comparison operators of the Vector/Scalar/GpSimd ALUs (fp32 math).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    Max,
    Min,
    /// Comparisons yield 1.0 when true and 0.0 when false.
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

impl AluOp {
    pub const ALL: [AluOp; 12] = [
        AluOp::Add,
        AluOp::Subtract,
        AluOp::Multiply,
        AluOp::Divide,
        AluOp::Max,
        AluOp::Min,
        AluOp::Eq,
        AluOp::Ne,
        AluOp::Ge,
        AluOp::Gt,
        AluOp::Le,
        AluOp::Lt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AluOp::Add => "add",
            AluOp::Subtract => "subtract",
            AluOp::Multiply => "multiply",
            AluOp::Divide => "divide",
            AluOp::Max => "max",
            AluOp::Min => "min",
            AluOp::Eq => "eq",
            AluOp::Ne => "ne",
            AluOp::Ge => "ge",
            AluOp::Gt => "gt",
            AluOp::Le => "le",
            AluOp::Lt => "lt",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, AluOp::Eq | AluOp::Ne | AluOp::Ge | AluOp::Gt | AluOp::Le | AluOp::Lt)
    }

    /// `a op b` in fp32 (IEEE, round to nearest even); comparisons give 1.0 or 0.0.
    /// `max`/`min` return the non-NaN operand when one is NaN (IEEE maxNum; assumption).
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            AluOp::Add => a + b,
            AluOp::Subtract => a - b,
            AluOp::Multiply => a * b,
            AluOp::Divide => a / b,
            AluOp::Max => a.max(b),
            AluOp::Min => a.min(b),
            AluOp::Eq => f32::from(u8::from(a == b)),
            AluOp::Ne => f32::from(u8::from(a != b)),
            AluOp::Ge => f32::from(u8::from(a >= b)),
            AluOp::Gt => f32::from(u8::from(a > b)),
            AluOp::Le => f32::from(u8::from(a <= b)),
            AluOp::Lt => f32::from(u8::from(a < b)),
        }
    }
}

/// Reduction operators of `tensor_reduce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Add,
    Max,
    Min,
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Add, ReduceOp::Max, ReduceOp::Min];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Add => "add",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// Functions of the Scalar engine's `activation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActFunc {
    /// `f(x) = x` (also spelled `copy`).
    Identity,
    Exp,
    Log,
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    Relu,
    /// `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
    Gelu,
    /// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
    GeluTanh,
    /// `x · sigmoid(x)`.
    Silu,
    Sqrt,
    Rsqrt,
    Square,
    Reciprocal,
    /// `|x|`.
    Abs,
    /// -1, 0 or 1.
    Sign,
    /// sine.
    Sin,
    /// cosine.
    Cos,
    /// tangent.
    Tan,
    /// arctangent.
    Arctan,
    /// the error function.
    Erf,
    /// `2/√π · e^(−x²)`.
    ErfDx,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x · tanh(softplus(x))`.
    Mish,
    /// `x · sigmoid(1.702 x)`.
    GeluApproxSigmoid,
    /// `Φ(x) + x · φ(x)`, the derivative of gelu.
    GeluDx,
    /// `σ(x) · (1 + x · (1 − σ(x)))`, the derivative of silu.
    SiluDx,
}

impl ActFunc {
    pub const ALL: [ActFunc; 26] = [
        ActFunc::Identity,
        ActFunc::Exp,
        ActFunc::Log,
        ActFunc::Tanh,
        ActFunc::Sigmoid,
        ActFunc::Relu,
        ActFunc::Gelu,
        ActFunc::GeluTanh,
        ActFunc::Silu,
        ActFunc::Sqrt,
        ActFunc::Rsqrt,
        ActFunc::Square,
        ActFunc::Reciprocal,
        ActFunc::Abs,
        ActFunc::Sign,
        ActFunc::Sin,
        ActFunc::Cos,
        ActFunc::Tan,
        ActFunc::Arctan,
        ActFunc::Erf,
        ActFunc::ErfDx,
        ActFunc::Softplus,
        ActFunc::Mish,
        ActFunc::GeluApproxSigmoid,
        ActFunc::GeluDx,
        ActFunc::SiluDx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActFunc::Identity => "identity",
            ActFunc::Exp => "exp",
            ActFunc::Log => "log",
            ActFunc::Tanh => "tanh",
            ActFunc::Sigmoid => "sigmoid",
            ActFunc::Relu => "relu",
            ActFunc::Gelu => "gelu",
            ActFunc::GeluTanh => "gelu_tanh",
            ActFunc::Silu => "silu",
            ActFunc::Sqrt => "sqrt",
            ActFunc::Rsqrt => "rsqrt",
            ActFunc::Square => "square",
            ActFunc::Reciprocal => "reciprocal",
            ActFunc::Abs => "abs",
            ActFunc::Sign => "sign",
            ActFunc::Sin => "sin",
            ActFunc::Cos => "cos",
            ActFunc::Tan => "tan",
            ActFunc::Arctan => "arctan",
            ActFunc::Erf => "erf",
            ActFunc::ErfDx => "erf_dx",
            ActFunc::Softplus => "softplus",
            ActFunc::Mish => "mish",
            ActFunc::GeluApproxSigmoid => "gelu_apprx_sigmoid",
            ActFunc::GeluDx => "gelu_dx",
            ActFunc::SiluDx => "silu_dx",
        }
    }

    pub fn from_name(s: &str) -> Option<ActFunc> {
        if s == "copy" {
            return Some(ActFunc::Identity);
        }
        ActFunc::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// One stage of `tensor_scalar`: `x = x op operand` (or `operand op x` when `reverse`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarStage {
    pub op: AluOp,
    pub operand: ScalarOperand,
    pub reverse: bool,
}

/// What an accumulating Vector instruction does to the engine's per-partition max
/// accumulator registers (shared by `range_select` and `select_reduce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceCmd {
    /// Leave the registers as they are.
    Idle,
    /// Set them to -inf (nothing accumulated).
    Reset,
    /// Fold this instruction's row maxima into them.
    Reduce,
    /// Set them to this instruction's row maxima.
    ResetReduce,
    /// Load them from an operand, then reduce (`tensor_scalar_cumulative`).
    LoadReduce,
}

impl ReduceCmd {
    pub const ALL: [ReduceCmd; 5] = [
        ReduceCmd::Idle,
        ReduceCmd::Reset,
        ReduceCmd::Reduce,
        ReduceCmd::ResetReduce,
        ReduceCmd::LoadReduce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReduceCmd::Idle => "idle",
            ReduceCmd::Reset => "reset",
            ReduceCmd::Reduce => "reduce",
            ReduceCmd::ResetReduce => "reset_reduce",
            ReduceCmd::LoadReduce => "load_reduce",
        }
    }
}

/// The affine predicate of `iota` and `affine_select`:
/// `value(p, i₀…iₙ) = base + channel_multiplier · p + Σ steps[j] · i_j`, where `p` counts
/// partitions from the tile's first and `i_j` indexes free dimension `j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affine {
    pub base: i32,
    pub channel_multiplier: i32,
    pub steps: Vec<i32>,
}

impl Affine {
    /// The affine value at partition `p` and free multi-index `idx` (int32 math, in i64).
    #[inline]
    pub fn at(&self, p: u64, idx: &[u64]) -> i64 {
        let mut v = i64::from(self.base) + i64::from(self.channel_multiplier) * p as i64;
        for (s, &i) in self.steps.iter().zip(idx) {
            v += i64::from(*s) * i as i64;
        }
        v
    }
}

/// What an instruction does. Operand order is always destination first.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `dst[i] = cast(src[i])` over the row-major element order of both access patterns.
    /// `queue` is the DMA queue (of the issuing engine's, on each DMA engine) it runs on.
    DmaCopy { dst: DmaOperand, src: DmaOperand, queue: u8 },
    /// `dst[m, n] (+)= Σ_k stationary[k, m] · moving[k, n]`, fp32 accumulation. With
    /// `double_row` (fp8, v3+) each operand is `[128, 2, X]`: the contraction runs over the
    /// partition and the row, `Σ_p Σ_r stationary[p, r, m] · moving[p, r, n]`.
    Matmul { dst: Tile, stationary: Tile, moving: Tile, accumulate: bool, double_row: bool },
    /// `dst[f, p] = src[p, f]`.
    Transpose { dst: Tile, src: Tile },
    /// `dst = in0 op in1`, elementwise.
    TensorTensor { dst: Tile, in0: Tile, in1: Tile, op: AluOp },
    /// `dst = (src op0 operand0) op1 operand1`.
    TensorScalar { dst: Tile, src: Tile, stages: Vec<ScalarStage> },
    /// `dst = reduce_op over the last `axes` free dims of src` (negated when `negate`).
    TensorReduce { dst: Tile, src: Tile, op: ReduceOp, axes: u32, negate: bool },
    /// `dst = cast(src)`; bit-exact when the dtypes are equal.
    TensorCopy { dst: Tile, src: Tile },
    /// `dst = value`.
    Memset { dst: Tile, value: f32 },
    /// `dst = predicate != 0 ? on_true : on_false`, elementwise.
    Select { dst: Tile, predicate: Tile, on_true: Tile, on_false: Tile },
    /// `dst = f(src · scale + bias)`; `reduce[p] = Σ_f dst_fp32[p, f]` when given.
    Activation {
        dst: Tile,
        src: Tile,
        func: ActFunc,
        scale: ScalarOperand,
        bias: Option<Tile>,
        reduce: Option<Tile>,
    },
    /// `dst[p, i] = affine(p, i)` in int32 math, cast to dst's dtype.
    Iota { dst: Tile, affine: Affine },
    /// `dst[p, i] = cmp(affine(p, i), 0) ? src[p, i] : on_false`.
    AffineSelect { dst: Tile, src: Tile, affine: Affine, cmp: AluOp, on_false: f32 },
    /// A scan along each partition's elements: `x₋₁ = initial[p]`,
    /// `xᵢ = op1(op0(in0ᵢ, xᵢ₋₁), in1ᵢ)` in fp32 (`reverse0`/`reverse1` swap the operands of
    /// op0/op1), `dstᵢ = cast(xᵢ)`.
    TensorTensorScan {
        dst: Tile,
        in0: Tile,
        in1: Tile,
        initial: ScalarOperand,
        op0: AluOp,
        op1: AluOp,
        reverse0: bool,
        reverse1: bool,
    },
    /// Per partition: `(count, mean, variance · count)` of the even-indexed elements of src,
    /// then of the odd-indexed ones (6 values).
    BnStats { dst: Tile, src: Tile },
    /// Per partition: the mean and the population variance of the groups whose
    /// `(count, mean, variance · count)` triples src holds (2 values).
    BnAggr { dst: Tile, src: Tile },
    /// `dst = (src op0 operand0) op1 in1` in fp32, rounded to fp32 after each operator
    /// (`reverse0`/`reverse1` swap the operands of op0/op1).
    ScalarTensorTensor {
        dst: Tile,
        src: Tile,
        operand0: ScalarOperand,
        in1: Tile,
        op0: AluOp,
        op1: AluOp,
        reverse0: bool,
        reverse1: bool,
    },
    /// `y = src op0 operand0` (fp32), `dst = cast(y)`, `reduce[p] = reduce_op over y[p, :]`.
    TensorScalarReduce {
        dst: Tile,
        src: Tile,
        op0: AluOp,
        operand0: ScalarOperand,
        reverse0: bool,
        reduce_op: ReduceOp,
        reduce: Tile,
    },
    /// The 8 largest values of each partition, in descending order.
    Max8 { dst: Tile, src: Tile },
    /// Per partition, the index of the first element of `data` equal to each of the 8 `vals`.
    FindIndex8 { dst: Tile, data: Tile, vals: Tile },
    /// `dst = 1 / src` (Vector engine), fp32 division.
    Reciprocal { dst: Tile, src: Tile },
    /// `dst[p, i] = cmp0(range_start + i, bound0[p]) && cmp1(range_start + i, bound1[p]) ?
    /// src[p, i] : on_false` (fp32 comparisons, `i` the row-major element index), with the
    /// row maxima folded into the accumulator registers by `reduce_cmd`; `reduce` receives
    /// the registers afterwards.
    RangeSelect {
        dst: Tile,
        src: Tile,
        bound0: Tile,
        bound1: Tile,
        cmp0: AluOp,
        cmp1: AluOp,
        range_start: i32,
        on_false: f32,
        reduce_cmd: ReduceCmd,
        reduce: Option<Tile>,
    },
    /// `dst = (predicate != 0) != reverse ? on_true : on_false` with `on_false` a scalar or a
    /// `[P, 1]` vector; row maxima into the accumulator registers as `range_select`.
    SelectReduce {
        dst: Tile,
        predicate: Tile,
        on_true: Tile,
        on_false: ScalarOperand,
        reverse: bool,
        reduce_cmd: ReduceCmd,
        reduce: Option<Tile>,
    },
    /// GpSimd gather within each group of 16 partitions: the group's `index` elements, read
    /// partition-first (`index[g·16 + q, k]` in order k-major, q-minor), the first `valid` of
    /// them; `dst[p, j·elems + e] = src[p, idx[j] + e]` (bit copy).
    LocalGather { dst: Tile, src: Tile, index: Tile, elems: u32, valid: u32 },
    /// `dst[0, i] = op over partitions p of src[p, i]` (GpSimd), fp32, partitions in order.
    PartitionReduce { dst: Tile, src: Tile, op: ReduceOp },
    /// `dma_copy` whose HBM side's outer dimension is indexed by data: transfer row `r` uses
    /// HBM row `index[r]` (an integer `[R, 1]` SBUF tile) instead of `r`. Out-of-range rows
    /// are an error, or skipped with `oob_skip`; `accumulate` adds into dst (scatter-add).
    /// `rows` bounds the index (the indexed axis's size; 0: the whole tensor).
    DmaIndirect {
        dst: DmaOperand,
        src: DmaOperand,
        index: Tile,
        oob_skip: bool,
        accumulate: bool,
        rows: u32,
        queue: u8,
    },
    /// A running reduction through the Vector engine's accumulator registers: per partition,
    /// `reg = op1(src[i] op0 operand0, reg); dst[i] = reg` in fp32 along the elements; the
    /// registers start at op1's identity (`reset_reduce`), at `init` (`load_reduce`) or as they
    /// are (`reduce`).
    TensorScalarCumulative {
        dst: Tile,
        src: Tile,
        op0: AluOp,
        operand0: ScalarOperand,
        reverse0: bool,
        op1: AluOp,
        reduce_cmd: ReduceCmd,
        init: Option<ScalarOperand>,
    },
    /// Cross-partition movement within each quadrant of 32 partitions (Vector engine): dst
    /// partition `q·32 + i` gets src partition `q·32 + mask[i]` (all of src is read first, so
    /// in place is allowed); `mask[i] = 255` leaves that dst partition as it is. Bit copy.
    StreamShuffle { dst: Tile, src: Tile, mask: Vec<u8> },
    /// Per partition, for each of the 8 `vals` in order: the first element of the (partly
    /// replaced) data equal to it becomes `imm`, and its index goes to `indices` (0 when none).
    MatchReplace8 { dst: Tile, data: Tile, vals: Tile, imm: f32, indices: Option<Tile> },
    /// Per partition, `dst[p, j] = src[p, index[p, j]]` over the flattened free dims.
    Gather { dst: Tile, src: Tile, index: Tile },
    /// Per partition, for each segment id: `dst[p, 0, i]` = the first and `dst[p, 1, i]` = one
    /// past the last index of the run of equal ids containing `i`; id 0 is padding (`n`, `-1`).
    SequenceBounds { dst: Tile, src: Tile },
    /// `dst = u < prob ? 0 : src` with `u` uniform in [0, 1) per element from a deterministic
    /// counter-based generator seeded by `seed` (the engine's RNG stream is not modelled).
    Dropout { dst: Tile, src: Tile, prob: ScalarOperand, seed: u32 },
    /// `dst[i] = exp(src[i] - max)` in fp32 on the Vector engine (NeuronCore-v4); the
    /// accumulator registers sum the fp32 exponentials per partition as `reduce_cmd` says
    /// (`reset_reduce`: from 0, `reduce`: onto them, `load_reduce`: from `init`; `reset`
    /// zeroes them, `idle` leaves them), and `reduce` (optional) receives them.
    Exponential {
        dst: Tile,
        src: Tile,
        max: ScalarOperand,
        reduce_cmd: ReduceCmd,
        init: Option<ScalarOperand>,
        reduce: Option<Tile>,
    },
    /// MX matmul (NeuronCore-v4): `dst[m, n] = (accumulate ? dst : 0) + Σ_{k, q}
    /// S[k, m, q] · 2^(ss(k, m) − 127) · V[k, n, q] · 2^(sv(k, n) − 127)` over the partitions `k`
    /// and the four packed elements `q` of each x4 element; the scales are one byte per group of
    /// 8 partitions × 1 packed element (32 values), laid out as [`mx_scale_partition`] says.
    MatmulMx {
        dst: Tile,
        stationary: Tile,
        moving: Tile,
        stationary_scale: Tile,
        moving_scale: Tile,
        accumulate: bool,
    },
    /// `quantize_mx` (NeuronCore-v4, Vector engine): bf16/fp16 `src [P, 4F]` to MXFP8
    /// `dst [P, F]` (x4-packed along the free axis) and one scale byte per group of 8
    /// partitions × 4 elements, scale `X = 2^(⌊log2 amax⌋ − (E_max − 1))`.
    QuantizeMx { dst: Tile, src: Tile, scale: Tile },
    /// `dma_transpose` (NeuronCore-v3+, hardware DGE): `dst[f, p] = src[p, f]`, SBUF to SBUF,
    /// bit-exact, run by the DMA engines on queue `queue` of the issuing engine.
    DmaTranspose { dst: Tile, src: Tile, queue: u8 },
}

/// The scale-tile partition (relative to the scale tile's start) that holds the MX scales of
/// data partition `p` (relative to the data tile's start): groups of 8 partitions, four groups
/// per 32-partition quadrant, each quadrant's scales in the first four partitions of that
/// quadrant (data of at most 32 partitions: scale partitions 0..P/8) [N-isa `quantize_mx`].
pub fn mx_scale_partition(p: u32) -> u32 {
    32 * (p / 32) + (p % 32) / 8
}

/// Partitions a scale tile of MX data with `data_partitions` partitions must have.
pub fn mx_scale_partitions(data_partitions: u32) -> u32 {
    if data_partitions <= 32 {
        data_partitions / 8
    } else {
        data_partitions
    }
}

/// How an instruction uses a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Read then written (accumulating matmul).
    ReadWrite,
}

impl Op {
    /// The assembly mnemonic.
    pub fn name(&self) -> &'static str {
        match self {
            Op::DmaCopy { .. } => "dma_copy",
            Op::Matmul { .. } => "nc_matmul",
            Op::Transpose { .. } => "nc_transpose",
            Op::TensorTensor { .. } => "tensor_tensor",
            Op::TensorScalar { .. } => "tensor_scalar",
            Op::TensorReduce { .. } => "tensor_reduce",
            Op::TensorCopy { .. } => "tensor_copy",
            Op::Memset { .. } => "memset",
            Op::Select { .. } => "select",
            Op::Activation { .. } => "activation",
            Op::Iota { .. } => "iota",
            Op::AffineSelect { .. } => "affine_select",
            Op::TensorTensorScan { .. } => "tensor_tensor_scan",
            Op::BnStats { .. } => "bn_stats",
            Op::BnAggr { .. } => "bn_aggr",
            Op::ScalarTensorTensor { .. } => "scalar_tensor_tensor",
            Op::TensorScalarReduce { .. } => "tensor_scalar_reduce",
            Op::Max8 { .. } => "max8",
            Op::FindIndex8 { .. } => "nc_find_index8",
            Op::Reciprocal { .. } => "reciprocal",
            Op::RangeSelect { .. } => "range_select",
            Op::SelectReduce { .. } => "select_reduce",
            Op::LocalGather { .. } => "local_gather",
            Op::PartitionReduce { .. } => "tensor_partition_reduce",
            Op::DmaIndirect { .. } => "dma_indirect",
            Op::TensorScalarCumulative { .. } => "tensor_scalar_cumulative",
            Op::StreamShuffle { .. } => "nc_stream_shuffle",
            Op::MatchReplace8 { .. } => "nc_match_replace8",
            Op::Gather { .. } => "gather",
            Op::SequenceBounds { .. } => "sequence_bounds",
            Op::Dropout { .. } => "dropout",
            Op::Exponential { .. } => "exponential",
            Op::MatmulMx { .. } => "nc_matmul_mx",
            Op::QuantizeMx { .. } => "quantize_mx",
            Op::DmaTranspose { .. } => "dma_transpose",
        }
    }

    /// The instruction's row of the ISA table ([`crate::OPCODES`]).
    pub fn info(&self) -> &'static crate::OpcodeInfo {
        let row = match self {
            Op::DmaCopy { .. } => 0,
            Op::Matmul { .. } => 1,
            Op::Transpose { .. } => 2,
            Op::TensorTensor { .. } => 3,
            Op::TensorScalar { .. } => 4,
            Op::TensorReduce { .. } => 5,
            Op::TensorCopy { .. } => 6,
            Op::Memset { .. } => 7,
            Op::Select { .. } => 8,
            Op::Activation { .. } => 9,
            Op::Iota { .. } => 10,
            Op::AffineSelect { .. } => 11,
            Op::TensorTensorScan { .. } => 12,
            Op::BnStats { .. } => 13,
            Op::BnAggr { .. } => 14,
            Op::ScalarTensorTensor { .. } => 15,
            Op::TensorScalarReduce { .. } => 16,
            Op::Max8 { .. } => 17,
            Op::FindIndex8 { .. } => 18,
            Op::Reciprocal { .. } => 19,
            Op::RangeSelect { .. } => 20,
            Op::SelectReduce { .. } => 21,
            Op::LocalGather { .. } => 22,
            Op::PartitionReduce { .. } => 23,
            Op::DmaIndirect { .. } => 24,
            Op::TensorScalarCumulative { .. } => 25,
            Op::StreamShuffle { .. } => 26,
            Op::MatchReplace8 { .. } => 27,
            Op::Gather { .. } => 28,
            Op::SequenceBounds { .. } => 29,
            Op::Dropout { .. } => 30,
            Op::Exponential { .. } => 31,
            Op::MatmulMx { .. } => 32,
            Op::QuantizeMx { .. } => 33,
            Op::DmaTranspose { .. } => 34,
        };
        &crate::OPCODES[row]
    }

    /// The two sides of a DMA (`dma_copy` or `dma_indirect`), destination first.
    /// The DMA queue a transfer runs on (`None`: not a DMA).
    pub fn dma_queue(&self) -> Option<u8> {
        match self {
            Op::DmaCopy { queue, .. }
            | Op::DmaIndirect { queue, .. }
            | Op::DmaTranspose { queue, .. } => Some(*queue),
            _ => None,
        }
    }

    /// Whether the DMA engines run it (the issuing engine only triggers it).
    pub fn is_dma(&self) -> bool {
        self.dma_queue().is_some()
    }

    pub fn dma_operands(&self) -> Option<(&DmaOperand, &DmaOperand)> {
        match self {
            Op::DmaCopy { dst, src, .. } | Op::DmaIndirect { dst, src, .. } => Some((dst, src)),
            _ => None,
        }
    }

    /// Every on-chip tile the instruction touches, with how (DMA's HBM side is not listed).
    pub fn tiles(&self) -> Vec<(&Tile, Access)> {
        let mut v = Vec::with_capacity(4);
        self.for_each_tile(|t, a| v.push((t, a)));
        v
    }

    /// Calls `f` on every on-chip tile the instruction touches, in operand order (sources
    /// first, destination last), without allocating.
    pub fn for_each_tile<'a>(&'a self, mut f: impl FnMut(&'a Tile, Access)) {
        use Access::*;
        match self {
            Op::DmaCopy { dst, src, .. } => {
                if let DmaOperand::Tile(t) = src {
                    f(t, Read);
                }
                if let DmaOperand::Tile(t) = dst {
                    f(t, Write);
                }
            }
            Op::DmaIndirect { dst, src, index, accumulate, .. } => {
                if let DmaOperand::Tile(t) = src {
                    f(t, Read);
                }
                f(index, Read);
                if let DmaOperand::Tile(t) = dst {
                    f(t, if *accumulate { ReadWrite } else { Write });
                }
            }
            Op::Matmul { dst, stationary, moving, accumulate, .. } => {
                f(stationary, Read);
                f(moving, Read);
                f(dst, if *accumulate { ReadWrite } else { Write });
            }
            Op::Transpose { dst, src }
            | Op::TensorCopy { dst, src }
            | Op::DmaTranspose { dst, src, .. } => {
                f(src, Read);
                f(dst, Write);
            }
            Op::TensorTensor { dst, in0, in1, .. } => {
                f(in0, Read);
                f(in1, Read);
                f(dst, Write);
            }
            Op::TensorScalar { dst, src, stages } => {
                f(src, Read);
                for s in stages {
                    if let ScalarOperand::Vector(t) = &s.operand {
                        f(t, Read);
                    }
                }
                f(dst, Write);
            }
            Op::TensorReduce { dst, src, .. }
            | Op::AffineSelect { dst, src, .. }
            | Op::BnStats { dst, src }
            | Op::BnAggr { dst, src }
            | Op::Max8 { dst, src }
            | Op::Reciprocal { dst, src }
            | Op::PartitionReduce { dst, src, .. }
            | Op::SequenceBounds { dst, src } => {
                f(src, Read);
                f(dst, Write);
            }
            Op::Gather { dst, src, index } => {
                f(src, Read);
                f(index, Read);
                f(dst, Write);
            }
            Op::Dropout { dst, src, prob, .. } => {
                f(src, Read);
                if let ScalarOperand::Vector(t) = prob {
                    f(t, Read);
                }
                f(dst, Write);
            }
            Op::MatmulMx {
                dst,
                stationary,
                moving,
                stationary_scale,
                moving_scale,
                accumulate,
            } => {
                for t in [stationary, stationary_scale, moving, moving_scale] {
                    f(t, Read);
                }
                f(dst, if *accumulate { ReadWrite } else { Write });
            }
            Op::QuantizeMx { dst, src, scale } => {
                f(src, Read);
                f(dst, Write);
                f(scale, Write);
            }
            Op::Exponential { dst, src, max, init, reduce, .. } => {
                f(src, Read);
                for s in [Some(max), init.as_ref()].into_iter().flatten() {
                    if let ScalarOperand::Vector(t) = s {
                        f(t, Read);
                    }
                }
                f(dst, Write);
                if let Some(r) = reduce {
                    f(r, Write);
                }
            }
            Op::StreamShuffle { dst, src, mask } => {
                f(src, Read);
                // Partitions marked 255 keep their values: a read-modify-write.
                f(dst, if mask.contains(&255) { ReadWrite } else { Write });
            }
            Op::FindIndex8 { dst, data, vals } => {
                f(data, Read);
                f(vals, Read);
                f(dst, Write);
            }
            Op::MatchReplace8 { dst, data, vals, indices, .. } => {
                f(data, Read);
                f(vals, Read);
                f(dst, Write);
                if let Some(i) = indices {
                    f(i, Write);
                }
            }
            Op::LocalGather { dst, src, index, .. } => {
                f(src, Read);
                f(index, Read);
                f(dst, Write);
            }
            Op::RangeSelect { dst, src, bound0, bound1, reduce, .. } => {
                f(src, Read);
                f(bound0, Read);
                f(bound1, Read);
                f(dst, Write);
                if let Some(r) = reduce {
                    f(r, Write);
                }
            }
            Op::SelectReduce { dst, predicate, on_true, on_false, reduce, .. } => {
                f(predicate, Read);
                f(on_true, Read);
                if let ScalarOperand::Vector(t) = on_false {
                    f(t, Read);
                }
                f(dst, Write);
                if let Some(r) = reduce {
                    f(r, Write);
                }
            }
            Op::ScalarTensorTensor { dst, src, operand0, in1, .. } => {
                f(src, Read);
                if let ScalarOperand::Vector(t) = operand0 {
                    f(t, Read);
                }
                f(in1, Read);
                f(dst, Write);
            }
            Op::TensorScalarCumulative { dst, src, operand0, init, .. } => {
                f(src, Read);
                if let ScalarOperand::Vector(t) = operand0 {
                    f(t, Read);
                }
                if let Some(ScalarOperand::Vector(t)) = init {
                    f(t, Read);
                }
                f(dst, Write);
            }
            Op::TensorScalarReduce { dst, src, operand0, reduce, .. } => {
                f(src, Read);
                if let ScalarOperand::Vector(t) = operand0 {
                    f(t, Read);
                }
                f(dst, Write);
                f(reduce, Write);
            }
            Op::TensorTensorScan { dst, in0, in1, initial, .. } => {
                f(in0, Read);
                f(in1, Read);
                if let ScalarOperand::Vector(t) = initial {
                    f(t, Read);
                }
                f(dst, Write);
            }
            Op::Memset { dst, .. } | Op::Iota { dst, .. } => f(dst, Write),
            Op::Select { dst, predicate, on_true, on_false } => {
                f(predicate, Read);
                f(on_true, Read);
                f(on_false, Read);
                f(dst, Write);
            }
            Op::Activation { dst, src, scale, bias, reduce, .. } => {
                f(src, Read);
                if let ScalarOperand::Vector(t) = scale {
                    f(t, Read);
                }
                if let Some(t) = bias {
                    f(t, Read);
                }
                f(dst, Write);
                if let Some(t) = reduce {
                    f(t, Write);
                }
            }
        }
    }
}

/// A semaphore wait: the instruction issues only once `S[semaphore] >= value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SemWait {
    pub semaphore: u32,
    pub value: u32,
}

/// One instruction of an engine's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub engine: Engine,
    pub op: Op,
    /// All must hold before the instruction starts.
    pub waits: Vec<SemWait>,
    /// Semaphores incremented by one when the instruction completes (for DMA: when the transfer
    /// has landed).
    pub signals: Vec<u32>,
}

/// DMA queues per DMA engine (IDs 0-15) [N-dma, DRV `DMA_QUEUE_PER_ENG 16`].
pub const DMA_QUEUES: i64 = 16;

/// What a declared HBM tensor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Given by the caller; must be supplied.
    Input,
    /// Returned to the caller; starts as zeros.
    Output,
    /// Device-only working memory; starts as zeros.
    Scratch,
}

impl TensorKind {
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Input => "input",
            TensorKind::Output => "output",
            TensorKind::Scratch => "scratch",
        }
    }
}

/// A declared HBM tensor: dense, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub kind: TensorKind,
}

impl TensorDecl {
    pub fn len(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A NeuronCore program.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub tensors: Vec<TensorDecl>,
    pub instructions: Vec<Instruction>,
    /// Source line of each instruction (1-based), when parsed from text; empty otherwise.
    pub lines: Vec<u32>,
}

/// Programs are equal when their tensors and instructions are; source lines do not count.
impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.tensors == other.tensors && self.instructions == other.instructions
    }
}

impl Program {
    /// Bytes of all declared HBM tensors (saturating).
    pub fn hbm_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.len().saturating_mul(t.dtype.size_bytes() as u64))
            .fold(0, u64::saturating_add)
    }

    /// The declared tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<(usize, &TensorDecl)> {
        self.tensors.iter().enumerate().find(|(_, t)| t.name == name)
    }

    /// Source line of instruction `index`, or `index + 1` for programs built in code.
    pub fn line_of(&self, index: usize) -> u32 {
        self.lines.get(index).copied().unwrap_or(index as u32 + 1)
    }

    /// Why instruction `index` can never issue: "waits forever at line L (instruction #i op) on
    /// S[s]>=v (S[s] is n)" for each unmet wait, given each semaphore's final value.
    pub fn describe_stuck(&self, index: usize, semaphore_value: impl Fn(u32) -> u32) -> String {
        let Some(ins) = self.instructions.get(index) else { return String::new() };
        let waits: Vec<String> = ins
            .waits
            .iter()
            .filter(|w| semaphore_value(w.semaphore) < w.value)
            .map(|w| {
                format!(
                    "S[{s}]>={} (S[{s}] is {})",
                    w.value,
                    semaphore_value(w.semaphore),
                    s = w.semaphore
                )
            })
            .collect();
        format!(
            "waits forever at line {} (instruction #{index} {}) on {}",
            self.line_of(index),
            ins.op.name(),
            waits.join(" and ")
        )
    }

    /// The instruction indices of each engine's stream, in order (indexed by [`Engine::index`]).
    pub fn streams(&self) -> [Vec<usize>; 5] {
        let mut s: [Vec<usize>; 5] = Default::default();
        for (i, ins) in self.instructions.iter().enumerate() {
            s[ins.engine.index()].push(i);
        }
        s
    }
}
