//! Op costs per chip and collective costs.
//!
//! [`CostModel::new`] prepares, once, everything needed to time the ops of
//! `rainier-model` on one rank of a chip from `rainier-hw`; [`CostModel::op_seconds`] is then
//! a few arithmetic operations, so a whole plan evaluates in microseconds.
//!
//! Three methods, by chip family:
//! - **GPUs**: a model calibrated on the H100 microbenchmarks in `data/h100-microbench.json`
//!   (GEMM efficiency with wave and tile quantization, measured flash-attention efficiency,
//!   memory-bound kernels at their measured share of HBM bandwidth, a per-kernel overhead,
//!   and the sustained clock under the 700 W limit), carried to other GPUs by their
//!   specifications (peak, bandwidth, SM count, best-shape GEMM ceiling).
//! - **TPUs**: the same method from specifications: the chip's GEMM ceiling with MXU padding,
//!   fused memory-bound ops at the streaming efficiency measured on the H100.
//! - **NeuronCores**: the simulator's op-cost tables (`tables/CHIP.csv`, made by
//!   `rainier kernel table`), interpolated between shapes; ops the tables lack fall back to a
//!   roofline on TensorE peak and HBM bandwidth. `--neuron-costs roofline` uses the roofline
//!   for everything.
//!
//! Every coefficient that is not a catalog figure is listed in [`ASSUMPTIONS`].

mod collective;
mod gpu;
mod layer_program;
mod neuron;

use rainier_hw::{Chip, Family, Framework, MathPrecision};
use rainier_model::{MemKind, Op, OpKind};

pub use collective::{CollectiveKind, Datacenter, Group, Level, Topology, SCALE_UP_MAX_SHARED};
pub use gpu::{gemm_fit_report, GemmFitReport};
pub use layer_program::LayerPrograms;
pub use neuron::{GemmOperands, NeuronCosts, NeuronTable, TableError};

/// A named modelling assumption: a coefficient with no catalog source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assumption {
    pub name: &'static str,
    pub value: f64,
    pub why: &'static str,
}

/// Every modelling coefficient of this crate that is not a catalog figure, in one place.
pub const ASSUMPTIONS: &[Assumption] = &[
    STEP_KERNEL_EFFICIENCY,
    NEURON_STEP_KERNEL_EFFICIENCY,
    NEURON_LAYER_PROGRAM_STEP_EFFICIENCY,
    gpu::GEMM_EFF_BF16,
    gpu::GEMM_EFF_FP8,
    gpu::GEMM_EFF_FP4,
    gpu::KERNEL_OVERHEAD_S,
    gpu::GEMM_STREAM_EFF,
    gpu::SUSTAINED_CLOCK,
    gpu::FUSED_STREAM_EFF,
    gpu::EAGER_ROPE_EFF,
    TPU_KERNEL_OVERHEAD_S,
    TPU_ATTENTION_RATIO,
    ROOFLINE_HBM_EFF,
    neuron::LNC_SPLIT,
    collective::SCALE_UP_EFF,
    collective::SCALE_OUT_EFF,
    collective::BASE_LATENCY_S,
    collective::MESH_EFF,
    collective::HALVING_DOUBLING_EFF,
    collective::NEURON_RING_LINK_SHARE,
    collective::SCALE_UP_MAX_SHARED,
    collective::BUILDING_CHIPS,
    collective::BUILDING_OVERSUBSCRIPTION,
    collective::BUILDING_LATENCY_S,
    collective::SITE_CHIPS,
    collective::SITE_OVERSUBSCRIPTION,
    collective::SITE_LATENCY_S,
    RESERVE_GPU_GIB,
    RESERVE_NEURON_GIB,
    RESERVE_TPU_GIB,
    LOGIT_BYTES_TPU,
    MOE_ROUTING_SKEW,
    MOE_A2A_SM_SHARE,
];

/// The share of a GPU's SMs that overlapped expert-parallel communication kernels hold.
pub const MOE_A2A_SM_SHARE: Assumption = Assumption {
    name: "moe.a2a_sm_share",
    value: 20.0 / 132.0,
    why: "DeepSeek-V3 technical report (arXiv 2412.19437, section 3.2.2): its all-to-all kernels overlapped with computation use 20 of an H800's 132 SMs; the overlapped compute is charged this share of the hidden communication time (not in the shared fact set: quoted from the report)",
};

/// The router's systematic imbalance across expert-parallel ranks (the sampling spread of a
/// balanced router is computed, not assumed: `Model::busiest_rank_load`).
pub const MOE_ROUTING_SKEW: Assumption = Assumption {
    name: "moe.routing_skew",
    value: 1.1,
    why: "busiest expert-parallel rank's routed tokens over the mean beyond sampling noise; unsourced (no per-batch expert-load statistics in the shared set), range 1.0-1.3: balanced routers (auxiliary losses, DeepSeek-V3's bias-based balancing without token dropping) keep whole-rank loads near the mean, and GShard/Switch-style training provisions capacity factors of 1.0-1.25 for the busiest expert; --moe-skew overrides it",
};

/// Bytes per logit a training step holds on the last stage: bf16 logits plus their fp32
/// softmax/gradient (PyTorch stacks materialize both), on TPUs the bf16 logits only.
pub const LOGIT_BYTES_TPU: Assumption = Assumption {
    name: "memory.logit_bytes_tpu",
    value: 2.0,
    why: "XLA fuses the fp32 upcast, log-softmax and its gradient into the loss, so only the bf16 logits stay live (range 2-6: 6 if the fp32 copy is materialized as on GPUs and NeuronCores)",
};

/// Bytes per logit held in a training step on a device of this family.
pub fn logit_bytes(family: Family) -> f64 {
    match family {
        Family::Tpu => LOGIT_BYTES_TPU.value,
        Family::Gpu | Family::Neuron => 2.0 + 4.0,
    }
}

/// Framework memory outside the model's tensors, per device (rank), GiB.
const RESERVE_GPU_GIB: Assumption = Assumption {
    name: "memory.reserve_gpu_gib",
    value: 3.0,
    why: "CUDA context, NCCL buffers and allocator fragmentation per GPU; no public source gives one number",
};
const RESERVE_NEURON_GIB: Assumption = Assumption {
    name: "memory.reserve_neuron_rank_gib",
    value: 1.0,
    why: "Neuron runtime scratch and collective buffers per NeuronCore rank; no public source",
};
const RESERVE_TPU_GIB: Assumption = Assumption {
    name: "memory.reserve_tpu_gib",
    value: 1.0,
    why: "XLA runtime reserve per TPU chip; no public source",
};

/// The framework reserve of a device of this family, GiB (a named assumption).
pub fn framework_reserve_gib(family: Family) -> f64 {
    match family {
        Family::Gpu => RESERVE_GPU_GIB.value,
        Family::Neuron => RESERVE_NEURON_GIB.value,
        Family::Tpu => RESERVE_TPU_GIB.value,
    }
}

/// Kernels inside a real training step run slower than the same kernels timed alone
/// (launch gaps, synchronization, allocator, SMs lent to communication, data loading and
/// logging between steps). Fitted by `rainier-plan`'s `calibrate_step_efficiency` on the
/// stated calibration subset of the validation dataset (megatron-h100-16b and
/// megatron-h100-314b) and checked on the other points.
pub const STEP_KERNEL_EFFICIENCY: Assumption = Assumption {
    name: "step.kernel_efficiency",
    value: 0.88,
    why: "fitted on the calibration subset megatron-h100-16b, megatron-h100-314b (geometric-mean error 0); checked on the other GPU and TPU validation points",
};

/// The same for NeuronX Distributed on Trainium: its steps lose more to launch and
/// synchronization than Megatron's on H100. Fitted by `rainier-plan`'s
/// `calibrate_neuron_step_efficiency` on trn1-llama2-7b and checked on trn1-llama2-13b.
/// Used by the training planner for NeuronCore chips (the serving model runs Neuron kernels
/// at their simulated times, efficiency 1, plus its own fitted per-layer cost).
pub const NEURON_STEP_KERNEL_EFFICIENCY: Assumption = Assumption {
    name: "step.neuron_kernel_efficiency",
    value: 0.56,
    why: "fitted on the calibration points trn1-llama2-7b (NeuronX Distributed, Neuron 2.20) and trn1-llama2-13b (Neuron 2.18), the geometric mean of both (the 7B run alone, nearly bound by its NeuronLink collectives, fits anything above 0.8); checked on the trn1 command cases of public-points-2 (0.58 on the 7B alone before NeuronLink rings ran one direction, 0.80 before the NeuronCore model was calibrated on measured kernels and the gemm and attention kernels were restructured, 0.61 before the attention backward was pipelined deeper: faster kernels leave more to this coefficient, which issue 14 replaces with mechanisms)",
};

/// NeuronX Distributed's in-step efficiency for the dense layers whose forward and backward
/// passes are simulated decoder-layer programs ([`NeuronCosts::LayerPrograms`]): what the
/// programs leave unexplained (ops outside them keep [`NEURON_STEP_KERNEL_EFFICIENCY`]),
/// fitted on the same two points.
pub const NEURON_LAYER_PROGRAM_STEP_EFFICIENCY: Assumption = Assumption {
    name: "step.neuron_layer_program_efficiency",
    value: 0.67,
    why: "fitted on the calibration points trn1-llama2-7b and trn1-llama2-13b (geometric mean) with both passes of their layers simulated as decoder-layer programs (the transposes, kernel hand-offs and overlap computed, not fitted); checked on the trn1 llama2-13b PP 8 command case",
};

/// XLA fuses elementwise chains into few large kernels; its per-kernel cost is small.
const TPU_KERNEL_OVERHEAD_S: Assumption = Assumption {
    name: "tpu.kernel_overhead_s",
    value: 2e-6,
    why: "no TPU kernel-level measurements; XLA launches fewer, larger fusions than eager GPUs",
};

/// TPU flash attention reaches this fraction of the chip's GEMM efficiency.
const TPU_ATTENTION_RATIO: Assumption = Assumption {
    name: "tpu.attention_over_gemm",
    value: 0.76,
    why: "H100 measured causal flash attention (S=4096, D=128) over its GEMM efficiency, carried to TPUs",
};

/// Roofline HBM efficiency for NeuronCore ops the tables lack.
const ROOFLINE_HBM_EFF: Assumption = Assumption {
    name: "neuron.roofline_hbm_eff",
    value: 0.85,
    why: "streaming efficiency of the simulated memory-bound kernels at large shapes (tables/*.csv, 0.84-0.97)",
};

/// Matmul precision for a training precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// bf16 weights, activations and gradients; fp32 master weights and Adam states.
    Bf16,
    /// PyTorch autocast: fp32 parameters and gradients, bf16 compute.
    AmpBf16,
    /// fp8 GEMMs (delayed scaling), bf16 elsewhere.
    Fp8,
    /// OCP MXFP8 GEMMs (e4m3 values, one e8m0 scale per 32), bf16 elsewhere: NeuronCore-v4's
    /// `nc_matmul_mx`, timed from the simulated MX gemm (tables' `fp8e4m3fnx4` rows).
    Mxfp8,
    /// OCP MXFP4 GEMMs (e2m1 values, one e8m0 scale per 32): the simulated MX gemm's
    /// `fp4e2m1fnx4` rows.
    Mxfp4,
    /// NVFP4 GEMMs (e2m1 values, an e4m3 scale per 16) on Blackwell's FP4 tensor cores, from
    /// the catalog's FP4 peak.
    Nvfp4,
}

impl Precision {
    pub fn math(self) -> MathPrecision {
        match self {
            Precision::Bf16 | Precision::AmpBf16 => MathPrecision::Bf16,
            // The chip's fp8 peak is its MX peak where it has one (Trainium3: MXFP8 2.52 PF).
            Precision::Fp8 | Precision::Mxfp8 | Precision::Mxfp4 => MathPrecision::Fp8,
            Precision::Nvfp4 => MathPrecision::Fp4,
        }
    }

    /// An OCP microscaling format.
    pub fn is_mx(self) -> bool {
        matches!(self, Precision::Mxfp8 | Precision::Mxfp4)
    }
}

/// Times ops on one rank of one chip.
#[derive(Debug, Clone)]
pub struct CostModel {
    family: Family,
    framework: Framework,
    math: MathPrecision,
    /// Dense peak FLOP/s of one rank for the GEMM precision, and for bf16.
    peak: f64,
    peak_bf16: f64,
    /// HBM bytes/s of one rank.
    hbm: f64,
    /// Best-shape GEMM efficiency for `math` (before the sustained-clock factor).
    gemm_eff: f64,
    /// Streaming multiprocessors (GPU wave quantization) or MXU edge (TPU padding).
    parallel_units: u64,
    tile: u64,
    ceiling: f64,
    neuron: Option<&'static NeuronTable>,
    /// Simulated decoder-layer programs ([`NeuronCosts::LayerPrograms`]).
    layer_programs: Option<LayerPrograms>,
    /// NeuronCores per rank (1 or 2 at LNC=2); 1 elsewhere.
    cores_per_rank: f64,
    /// Every op's isolated time is divided by this in a step ([`STEP_KERNEL_EFFICIENCY`]).
    step_efficiency: f64,
    /// A simulated layer program's time is divided by this in a step
    /// ([`NEURON_LAYER_PROGRAM_STEP_EFFICIENCY`]).
    program_efficiency: f64,
    /// fp8 GEMM inputs are quantized by a separate streaming kernel (training stacks) rather
    /// than in the producing kernel's epilogue (inference engines).
    separate_fp8_casts: bool,
    /// NeuronCore GEMMs read int8 weight-only weights: below 128 tokens (weight-bound) the fp8
    /// rows of the tables, whose operands stream at one byte per value; bf16 rows above.
    int8_weights: bool,
    /// The training precision (the MX ones read the tables' MX rows).
    precision: Precision,
}

/// Why a cost model could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PerfError {
    #[error("{0}")]
    Table(#[from] TableError),
    #[error("ranks per chip must be positive")]
    NoRanks,
    /// A precision the chip's matmul unit does not have.
    #[error("{0}")]
    Unsupported(String),
}

impl CostModel {
    /// A cost model for one rank of `chip`, the chip split into `ranks_per_chip` ranks (on
    /// Trainium, logical NeuronCores; elsewhere 1).
    pub fn new(
        chip: &Chip,
        ranks_per_chip: u32,
        precision: Precision,
        framework: Framework,
        neuron_costs: NeuronCosts,
    ) -> Result<CostModel, PerfError> {
        if ranks_per_chip == 0 {
            return Err(PerfError::NoRanks);
        }
        let ranks = f64::from(ranks_per_chip);
        let math = precision.math();
        let ceiling = chip.matmul_ceiling.value;
        let (gemm_eff, parallel_units, tile) = match chip.family {
            Family::Gpu => {
                let base = match math {
                    MathPrecision::Fp8 => gpu::GEMM_EFF_FP8.value,
                    MathPrecision::Fp4 => gpu::GEMM_EFF_FP4.value,
                    _ => gpu::GEMM_EFF_BF16.value,
                };
                (
                    base * ceiling / gpu::H100_CEILING,
                    gpu::streaming_multiprocessors(&chip.name),
                    128,
                )
            }
            Family::Tpu => (ceiling, 1, tpu_mxu_edge(&chip.name)),
            Family::Neuron => (ceiling, 1, 128),
        };
        let core = (chip.family == Family::Neuron)
            .then(|| chip.neuron_params())
            .transpose()
            .map_err(|message| TableError::Core { chip: chip.name.clone(), message })?;
        let neuron = match (&core, neuron_costs) {
            (Some(params), NeuronCosts::Tables | NeuronCosts::LayerPrograms) => {
                Some(NeuronTable::for_params(&chip.name, params, &|_, _| {})?)
            }
            _ => None,
        };
        if precision == Precision::Nvfp4
            && (chip.family != Family::Gpu || chip.peak_flops.fp4.is_none())
        {
            return Err(PerfError::Unsupported(format!(
                "NVFP4 runs on FP4 tensor cores (b200, gb200): {} has no FP4 peak in the catalog",
                chip.name
            )));
        }
        if precision.is_mx() {
            // The sweep times the MX gemm on NeuronCore-v4 cores only.
            let has_mx =
                core.as_ref().is_some_and(|p| p.core.generation >= rainier_arch::Generation::V4);
            if !has_mx {
                return Err(PerfError::Unsupported(format!(
                    "MX precisions (mxfp8, mxfp4) run on NeuronCore-v4 chips (trn3, trn4): {} has no MX matmul in this model",
                    chip.name
                )));
            }
        }
        let cores_per_rank = if chip.family == Family::Neuron {
            f64::from(chip.cores_per_chip) / ranks
        } else {
            1.0
        };
        // MXFP4 GEMMs run at the chip's FP4 peak where it states one above its MXFP8 peak.
        let peak_math = match (precision, &chip.peak_flops.fp4) {
            (Precision::Mxfp4, Some(_)) => MathPrecision::Fp4,
            _ => math,
        };
        Ok(CostModel {
            family: chip.family,
            framework,
            math,
            peak: chip.peak(peak_math) / ranks,
            peak_bf16: chip.peak(MathPrecision::Bf16) / ranks,
            hbm: chip.hbm_bytes_per_s.value / ranks,
            gemm_eff,
            parallel_units,
            tile,
            ceiling,
            neuron,
            layer_programs: match (core, neuron_costs) {
                (Some(params), NeuronCosts::LayerPrograms) => Some(LayerPrograms::new(params)),
                _ => None,
            },
            cores_per_rank,
            step_efficiency: STEP_KERNEL_EFFICIENCY.value,
            program_efficiency: NEURON_LAYER_PROGRAM_STEP_EFFICIENCY.value,
            separate_fp8_casts: true,
            int8_weights: false,
            precision,
        })
    }

    /// This model with fp8 activations quantized inside the kernels that produce them
    /// (TensorRT-LLM's and vLLM's fused norm/activation + quantize kernels): no cast kernel.
    pub fn with_fused_fp8_casts(self) -> CostModel {
        CostModel { separate_fp8_casts: false, ..self }
    }

    /// This model with one-byte weight-only (int8) GEMM weights on NeuronCores: weight-bound
    /// GEMMs (below 128 tokens) at the simulated fp8 rows, whose weights stream at one byte per
    /// value; larger ones compute in bf16 (the dequantize work is not counted).
    pub fn with_int8_weights(self) -> CostModel {
        CostModel { int8_weights: true, ..self }
    }

    /// This model with another in-step kernel efficiency (for calibration and what-ifs).
    pub fn with_step_efficiency(self, step_efficiency: f64) -> CostModel {
        CostModel { step_efficiency, ..self }
    }

    /// This model with another in-step efficiency for simulated layer programs.
    pub fn with_program_efficiency(self, program_efficiency: f64) -> CostModel {
        CostModel { program_efficiency, ..self }
    }

    /// Seconds one rank spends on one `pass` of `model`'s (uniform) layer at `batch`, as a
    /// simulated decoder-layer program, under [`NeuronCosts::LayerPrograms`] and where the
    /// program can express the layer (dense, Llama-style, bf16, no CP or EP); `None` else.
    pub fn layer_program_seconds(
        &self,
        model: &rainier_model::Model,
        batch: rainier_model::Batch,
        pass: rainier_model::Pass,
    ) -> Option<f64> {
        if !matches!(self.precision, Precision::Bf16 | Precision::AmpBf16) {
            return None;
        }
        let t = self.layer_programs.as_ref()?.seconds(model, batch, pass)?;
        Some(t / self.cores_per_rank / self.program_efficiency)
    }

    /// Seconds one rank spends on `op`.
    pub fn op_seconds(&self, op: &Op) -> f64 {
        let t = match self.family {
            Family::Gpu => self.gpu_seconds(op),
            Family::Tpu => self.tpu_seconds(op),
            Family::Neuron => self.neuron_seconds(op),
        };
        (t + self.fp8_cast_seconds(op)) / self.step_efficiency
    }

    /// fp8 GEMMs first quantize their activation (or gradient) operand: read bf16, write
    /// fp8, 3 bytes per element, one streaming kernel (Transformer Engine's cast; weights are
    /// cast once per step and not counted).
    fn fp8_cast_seconds(&self, op: &Op) -> f64 {
        match op.kind {
            OpKind::Gemm { m, k, count, .. }
                if self.math == MathPrecision::Fp8 && self.separate_fp8_casts =>
            {
                let bytes = 3.0 * (m * k * count) as f64;
                let overhead =
                    if self.family == Family::Gpu { gpu::KERNEL_OVERHEAD_S.value } else { 0.0 };
                bytes / (self.hbm * gpu::FUSED_STREAM_EFF.value) + overhead
            }
            _ => 0.0,
        }
    }

    /// Seconds for an Adam(W) step over `params` parameters moving `bytes_per_param` bytes
    /// each (memory-bound on every chip; one fused kernel per tensor group).
    pub fn optimizer_seconds(&self, params: f64, bytes_per_param: f64) -> f64 {
        let bytes = params * bytes_per_param;
        let t = match (&self.neuron, self.family) {
            (Some(table), _) => {
                table.optimizer_seconds(params, bytes_per_param) / self.cores_per_rank
            }
            (None, Family::Gpu) => bytes / (self.hbm * gpu::FUSED_STREAM_EFF.value),
            (None, _) => bytes / (self.hbm * ROOFLINE_HBM_EFF.value),
        };
        t / self.step_efficiency
    }

    /// Rank peak FLOP/s for the GEMM precision.
    pub fn peak_flops(&self) -> f64 {
        self.peak
    }

    fn roofline(&self, op: &Op) -> f64 {
        let compute = match op.kind {
            OpKind::Gemm { .. } => op.flops / (self.peak * self.ceiling),
            OpKind::Attention { .. } => op.flops / (self.peak_bf16 * self.ceiling),
            OpKind::Memory { .. } => 0.0,
        };
        compute.max(op.bytes / (self.hbm * ROOFLINE_HBM_EFF.value))
    }

    fn gpu_seconds(&self, op: &Op) -> f64 {
        let sustained = gpu::SUSTAINED_CLOCK.value;
        let overhead = gpu::KERNEL_OVERHEAD_S.value;
        match op.kind {
            OpKind::Gemm { m, n, k, count } => {
                let eff = self.gemm_eff * gpu::wave_efficiency(m, n, k, count, self.parallel_units);
                let compute = op.flops / (self.peak * eff * sustained);
                let stream = op.bytes / (self.hbm * gpu::GEMM_STREAM_EFF.value);
                compute.max(stream) + overhead
            }
            OpKind::Attention { seq, head_dim, backward, .. } => {
                let eff = gpu::attention_efficiency(seq, head_dim, backward) * self.gemm_eff
                    / gpu::GEMM_EFF_BF16.value;
                op.flops / (self.peak_bf16 * eff * sustained) + overhead
            }
            OpKind::Memory { kind } => {
                let (eff, kernels) = gpu::memory_efficiency(kind, self.framework);
                op.bytes / (self.hbm * eff) + kernels * overhead
            }
        }
    }

    fn tpu_seconds(&self, op: &Op) -> f64 {
        let overhead = TPU_KERNEL_OVERHEAD_S.value;
        match op.kind {
            OpKind::Gemm { m, n, k, .. } => {
                let pad = |x: u64| x as f64 / (x.div_ceil(self.tile) * self.tile) as f64;
                let eff = self.gemm_eff * pad(m) * pad(n) * pad(k);
                let stream = op.bytes / (self.hbm * gpu::GEMM_STREAM_EFF.value);
                (op.flops / (self.peak * eff)).max(stream) + overhead
            }
            OpKind::Attention { .. } => {
                op.flops / (self.peak_bf16 * self.gemm_eff * TPU_ATTENTION_RATIO.value) + overhead
            }
            OpKind::Memory { .. } => op.bytes / (self.hbm * gpu::FUSED_STREAM_EFF.value) + overhead,
        }
    }

    fn neuron_seconds(&self, op: &Op) -> f64 {
        let Some(table) = &self.neuron else { return self.roofline(op) };
        let per_core = match op.kind {
            OpKind::Gemm { m, n, k, .. } => {
                // Each format at its own simulated kernel: fp8 e4m3 (double row on v3/v4, the
                // bf16 rate on v2) and MX, not the bf16 rows scaled by a peak ratio.
                let operands = match self.precision {
                    Precision::Mxfp8 => GemmOperands::Mxfp8,
                    Precision::Mxfp4 => GemmOperands::Mxfp4,
                    Precision::Fp8 => GemmOperands::Fp8,
                    _ if self.int8_weights && m < 128 => GemmOperands::Fp8,
                    _ => GemmOperands::Bf16,
                };
                table.gemm_seconds(m, n, k, op.flops, operands)
            }
            OpKind::Attention { seq, head_dim, backward, .. } => {
                table.attention_seconds(seq, head_dim, backward, op.flops)
            }
            OpKind::Memory { kind } => table.memory_seconds(kind, op.bytes),
        };
        match per_core {
            Some(t) => t / self.cores_per_rank,
            None => self.roofline(op),
        }
    }
}

/// MXU edge: 128 on v5e/v5p, 256 on v6e and TPU7x.
fn tpu_mxu_edge(name: &str) -> u64 {
    match name {
        "tpu-v6e" | "tpu-v7" => 256,
        _ => 128,
    }
}

/// Memory-bound kinds in a stable order (for listings).
pub const MEM_KINDS: [MemKind; 10] = [
    MemKind::Add,
    MemKind::Norm(rainier_model::Norm::LayerNorm),
    MemKind::Norm(rainier_model::Norm::RmsNorm),
    MemKind::Activation(rainier_model::Mlp::Gelu),
    MemKind::Activation(rainier_model::Mlp::SwiGlu),
    MemKind::Rope,
    MemKind::Embedding,
    MemKind::CrossEntropy,
    MemKind::Permute,
    MemKind::KvCache,
];
