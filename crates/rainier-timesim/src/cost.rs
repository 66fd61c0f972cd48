//! Per-instruction costs from the published formulas ([N-isa-226], [N-arch2], [N-arch3]); every
//! constant comes from [`TimingParams`]. Costs are issue intervals in the executing engine's
//! cycles; `N` is the free size (elements per partition) of the instruction's main operand.

use rainier_arch::{CoreParams, TimingParams};
use rainier_isa::{AluOp, Engine, Memory, Op, ReduceOp, ScalarOperand, Tile};
use rainier_tensor::DType;

/// Engine cycles an instruction occupies its engine, and for matmuls the stationary load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) cycles: u64,
    /// LoadStationary cycles (matmul only): paid when the stationary tile changes, hidden behind
    /// the previous matmul when they run back to back (background weight load).
    pub(crate) load_stationary_cycles: u64,
}

fn is16(d: DType) -> bool {
    matches!(d, DType::Bf16 | DType::F16)
}

/// Whether a tile's innermost stride exceeds the engine access width (halves bandwidth).
fn wide_stride(t: &Tile, tp: &TimingParams) -> bool {
    t.dims.last().is_some_and(|d| {
        d.size > 1
            && d.stride.unsigned_abs() * t.dtype.size_bytes() as u64
                > u64::from(tp.stride_penalty_bytes.value)
    })
}

/// Cost of `op` on `engine`.
pub(crate) fn cost(op: &Op, engine: Engine, core: &CoreParams) -> Cost {
    let tp = &core.timing;
    let min_ii = u64::from(tp.min_ii_cycles.value);
    let startup = u64::from(tp.gpsimd_startup_cycles.value);
    let perf_modes = tp.vector_perf_modes.value;
    let mut penalty = false;
    op.for_each_tile(|t, _| penalty |= wide_stride(t, tp));
    // Streaming term at one element per lane per cycle, twice as long with a wide stride.
    let raw = |n: u64| if penalty { 2 * n } else { n };
    // VectorE's base data-path width: `lanes` elements per lane per cycle; `mode` is a rule's
    // own speed-up over one per cycle (16-bit modes), the faster of the two applies.
    let lanes = if engine == Engine::Vector {
        u64::from(tp.vector_lane_elements_per_cycle.value)
    } else {
        1
    };
    let at = |n: u64, mode: u64| n.div_ceil(mode.max(lanes).max(1));
    let stream = |n: u64| at(raw(n), 1);
    let plain = |cycles| Cost { cycles, load_stationary_cycles: 0 };
    match op {
        Op::DmaCopy { .. } | Op::DmaIndirect { .. } | Op::DmaTranspose { .. } => {
            plain(u64::from(tp.dma_trigger_cycles.value))
        }
        Op::Matmul { stationary, moving, double_row, .. } => {
            // Double row does K = 2 × partitions in the time of one row [N-arch3].
            let rows = if *double_row { 2 } else { 1 };
            let (m, n) = (stationary.free_len() / rows, moving.free_len() / rows);
            let fp32 = stationary.dtype == DType::F32 || moving.dtype == DType::F32;
            let factor = if fp32 { u64::from(tp.matmul_fp32_factor.value) } else { 1 };
            let init = u64::from(tp.matmul_init_cycles.value);
            let fast = u64::from(tp.fast_weight_load_factor.value).max(1);
            Cost {
                cycles: m.min(init).max(n) * factor,
                load_stationary_cycles: m.div_ceil(fast).max(1) * factor,
            }
        }
        // MX: K = 4 × partitions in the time of a bf16 matmul of the same M and N, "4x BF16
        // throughput" [N-arch4]; LoadStationary as bf16's (assumption). MXFP4 on both sides
        // runs `mxfp4_matmul_speedup` times faster (1 on NeuronCore-v4; a what-if beyond).
        Op::MatmulMx { stationary, moving, .. } => {
            let (m, n) = (stationary.free_len(), moving.free_len());
            let init = u64::from(tp.matmul_init_cycles.value);
            let fast = u64::from(tp.fast_weight_load_factor.value).max(1);
            let fp4 = stationary.dtype == DType::Fp4E2m1fnx4 && moving.dtype == DType::Fp4E2m1fnx4;
            let speedup = if fp4 { u64::from(tp.mxfp4_matmul_speedup.value).max(1) } else { 1 };
            Cost {
                cycles: m.min(init).max(n).div_ceil(speedup),
                load_stationary_cycles: m.div_ceil(fast).max(1),
            }
        }
        // quantize_mx: 4 elements per partition per cycle [N-arch4], `max(MIN_II, N / 4)`.
        Op::QuantizeMx { src, .. } => plain(min_ii.max(raw(src.free_len()).div_ceil(4))),
        Op::Transpose { src, .. } => {
            let (p, f) = (u64::from(src.partitions), src.free_len());
            if engine == Engine::Tensor {
                // NeuronCore-v4's background transposes run two at once: half the issue time
                // ("~2x on long transpose chains" [N-arch4]; overlap with matmuls beyond that
                // is not modelled).
                let cycles = p.max(f.min(64));
                plain(if core.has_background_transpose() { cycles.div_ceil(2) } else { cycles })
            } else {
                plain(min_ii.max(stream(f)))
            }
        }
        Op::TensorTensor { dst, in0, in1, op } => {
            let n = dst.free_len();
            if engine == Engine::GpSimd {
                return plain(startup + stream(2 * n));
            }
            let one_psum = in0.memory == Memory::Psum || in1.memory == Memory::Psum;
            let fast_op = matches!(op, AluOp::Add | AluOp::Subtract | AluOp::Multiply);
            let all16 = is16(in0.dtype) && is16(in1.dtype) && is16(dst.dtype);
            let single = one_psum || (all16 && (fast_op || perf_modes));
            plain(min_ii.max(at(raw(2 * n), if single { 2 } else { 1 })))
        }
        Op::TensorScalar { dst, src, stages } => {
            let n = src.free_len();
            match engine {
                Engine::GpSimd => plain(startup + stream(n)),
                Engine::Vector => {
                    let vector_operand =
                        stages.iter().any(|s| matches!(s.operand, ScalarOperand::Vector(_)));
                    let mode = vector_mode(src, dst, perf_modes && !vector_operand);
                    plain(min_ii.max(at(raw(n), mode)))
                }
                _ => plain(min_ii.max(stream(n))),
            }
        }
        Op::TensorCopy { dst, src } => {
            let n = src.free_len();
            match engine {
                Engine::GpSimd => plain(startup + stream(n)),
                Engine::Vector => plain(min_ii.max(at(raw(n), vector_mode(src, dst, perf_modes)))),
                _ => plain(min_ii.max(stream(n))),
            }
        }
        Op::TensorReduce { dst, src, op, .. } => {
            let n = src.free_len();
            let half = src.dtype == DType::Bf16
                && dst.dtype == DType::Bf16
                && matches!(op, ReduceOp::Add | ReduceOp::Max);
            plain(min_ii.max(at(raw(n), if half { 2 } else { 1 })))
        }
        Op::Memset { dst, value } => {
            let n = dst.free_len();
            if engine == Engine::GpSimd {
                return plain(startup + stream(n));
            }
            let half = *value == 0.0 && is16(dst.dtype);
            plain(min_ii.max(at(raw(n), if half { 2 } else { 1 })))
        }
        // Like tensor_copy_predicated with all operands in SBUF: `max(MIN_II, 2N)`.
        Op::Select { dst, .. } => plain(min_ii.max(stream(2 * dst.free_len()))),
        Op::Activation { src, reduce, .. } => {
            let base = min_ii.max(stream(src.free_len()));
            plain(base + if reduce.is_some() { min_ii } else { 0 })
        }
        Op::Iota { dst, .. } => plain(startup + stream(dst.free_len())),
        // The NKI ISA reference's estimates [N-isa-226]: scan `max(MIN_II, 2N)`, bn_stats
        // `max(MIN_II, N)`, bn_aggr `max(MIN_II, 13·N/3)`.
        Op::TensorTensorScan { in0, .. } => plain(min_ii.max(stream(2 * in0.free_len()))),
        Op::BnStats { src, .. } => plain(min_ii.max(stream(src.free_len()))),
        Op::BnAggr { src, .. } => plain(min_ii.max(stream(13 * (src.free_len() / 3)))),
        // [N-isa-226]: scalar_tensor_tensor `N` for bf16 data and in1 with subtract then
        // multiply and an even N, else `2N`; tensor_scalar_reduce `max(MIN_II, N) + MIN_II`;
        // max8 and nc_find_index8 `N`; reciprocal `max(MIN_II, 8N)`.
        Op::ScalarTensorTensor { src, in1, op0, op1, .. } => {
            let n = src.free_len();
            let fast = src.dtype == DType::Bf16
                && in1.dtype == DType::Bf16
                && *op0 == AluOp::Subtract
                && *op1 == AluOp::Multiply
                && n % 2 == 0;
            plain(min_ii.max(at(raw(2 * n), if fast { 2 } else { 1 })))
        }
        Op::TensorScalarReduce { src, .. } => plain(min_ii.max(stream(src.free_len())) + min_ii),
        Op::Max8 { src, .. } => plain(min_ii.max(stream(src.free_len()))),
        Op::FindIndex8 { data, .. } => plain(min_ii.max(stream(data.free_len()))),
        Op::Reciprocal { src, .. } => plain(min_ii.max(stream(8 * src.free_len()))),
        // [N-isa-226]: `max(MIN_II, N)` (nc_match_replace8's page says `min`, taken as a typo).
        Op::StreamShuffle { src, .. } => plain(min_ii.max(stream(src.free_len()))),
        Op::MatchReplace8 { data, .. } => plain(min_ii.max(stream(data.free_len()))),
        // dropout `max(MIN_II, N)` [N-isa-226]; gather and sequence_bounds are unpublished:
        // GpSimd `150 + K` and `150 + 2N` (assumptions).
        Op::Dropout { src, .. } => plain(min_ii.max(stream(src.free_len()))),
        // NeuronCore-v4's fast exponential: "4x ScalarE exp throughput" [N-arch4], ScalarE's
        // exp being `N` cycles at the same clock: `max(MIN_II, N / 4)` from SBUF. From PSUM
        // VectorE reads as it does elsewhere here (assumption): 2 elements per cycle for
        // 16-bit data, its base data-path width for 32-bit.
        Op::Exponential { src, .. } => {
            let rate = match (src.memory, is16(src.dtype)) {
                (Memory::Sbuf, _) => 4,
                (Memory::Psum, true) => 2,
                (Memory::Psum, false) => 1,
            };
            plain(min_ii.max(at(raw(src.free_len()), rate)))
        }
        Op::Gather { index, .. } => plain(startup + stream(index.free_len())),
        Op::SequenceBounds { src, .. } => plain(startup + stream(2 * src.free_len())),
        // Unpublished: as tensor_scalar on the Vector engine, `max(MIN_II, N)` (assumption).
        Op::TensorScalarCumulative { src, .. } => plain(min_ii.max(stream(src.free_len()))),
        // range_select `max(MIN_II, N)` [N-isa-226]; select_reduce as select (assumption).
        Op::RangeSelect { src, .. } => plain(min_ii.max(stream(src.free_len()))),
        Op::SelectReduce { dst, .. } => plain(min_ii.max(stream(2 * dst.free_len()))),
        // Unpublished: the 8 GpSimd cores reduce their 16 partitions each, then combine the 8
        // partial rows (assumption: `150 + (P/8)·N + N`).
        Op::PartitionReduce { src, .. } => {
            let n = src.free_len();
            plain(startup + stream(u64::from(src.partitions).div_ceil(8) * n + n))
        }
        // [N-isa-226]: `150 + valid·n / C`, `C = ((28 + t·n) / (t·n)) / min(4 / dtype_size, n)`,
        // t = 4.
        Op::LocalGather { src, elems, valid, .. } => {
            let (n, t) = (f64::from(*elems), 4.0);
            let per = (4.0 / src.dtype.size_bytes() as f64).min(n);
            let c = ((28.0 + t * n) / (t * n)) / per;
            plain(startup + (f64::from(*valid) * n / c).ceil() as u64)
        }
        Op::AffineSelect { dst, .. } => plain(startup + stream(dst.free_len())),
    }
}

/// NeuronCore-v3 Vector performance mode for copies and tensor_scalar [N-arch3]: 4x with both
/// sides 16-bit in SBUF and contiguous, 2x when not contiguous or one side in PSUM.
fn vector_mode(src: &Tile, dst: &Tile, enabled: bool) -> u64 {
    if !enabled || !is16(src.dtype) || !is16(dst.dtype) {
        return 1;
    }
    let both_sbuf = src.memory == Memory::Sbuf && dst.memory == Memory::Sbuf;
    let contiguous = src.dims.last().is_some_and(|d| d.stride == 1)
        && dst.dims.last().is_some_and(|d| d.stride == 1);
    if both_sbuf && contiguous {
        4
    } else {
        2
    }
}
