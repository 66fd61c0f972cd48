//! One training step of a model on a cluster under a parallel plan.
//!
//! Ranks are laid out `tp` innermost, then `cp`, then `dp` and `pp` in the placement's order
//! (Megatron's `tp-cp-dp-pp` by default; `tp-cp-pp-dp` keeps pipeline stages nearer). Expert
//! parallelism is carved out of data parallelism (the first `ep` members of each DP group),
//! as Megatron-Core does. Every parallel group is then `size` ranks `stride` apart and its
//! collectives are costed on the chip's [`Topology`].

use rainier_hw::{Chip, Family, Framework};
use rainier_model::{Batch, Model, OpKind, Pass, Recompute, Routing, ACT_BYTES};
use rainier_perf::{
    Assumption, CollectiveKind, CostModel, Datacenter, Group, NeuronCosts, PerfError, Precision,
    Topology,
};
use serde::Serialize;

use crate::economics::{economics, Economics, EconomicsConfig, JobFacts};

/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// Host link bandwidth per chip available to activation offload.
pub(crate) const OFFLOAD_BYTES_PER_S: Assumption = Assumption {
    name: "host.offload_bytes_per_s",
    value: 25e9,
    why: "one direction of a chip's host link as activation offload (MaxText's host offload of decoder-layer inputs, Megatron's activation offloading) achieves it: PCIe Gen4 x16 (32 GB/s) to Gen5 x16 (64 GB/s) at about 0.8, shared with input and checkpoint traffic; per-chip host links are not in the catalog; range 12-50 GB/s",
};

/// The named assumptions of the training planner beyond the cost model's.
pub const TRAIN_ASSUMPTIONS: &[Assumption] = &[OFFLOAD_BYTES_PER_S];

/// Adam moment format (first and second moments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Moments {
    /// fp32 moments (every stack's default): 8 bytes per parameter.
    #[default]
    Fp32,
    /// bf16 moments (MaxText `mu_dtype`/`nu_dtype` bfloat16, Megatron's precision-aware
    /// optimizer `exp_avg_dtype`): 4 bytes per parameter.
    Bf16,
}

/// How the parallel dimensions are laid over rank order (innermost first).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
pub enum Placement {
    /// `tp-cp-dp-pp` (Megatron's default): data-parallel peers near, stages far.
    #[serde(rename = "tp-cp-dp-pp")]
    DpInner,
    /// `tp-cp-pp-dp`: pipeline neighbours near, data-parallel peers far.
    #[serde(rename = "tp-cp-pp-dp")]
    PpInner,
}

impl Placement {
    pub const ALL: [Placement; 2] = [Placement::DpInner, Placement::PpInner];

    pub fn name(self) -> &'static str {
        match self {
            Placement::DpInner => "tp-cp-dp-pp",
            Placement::PpInner => "tp-cp-pp-dp",
        }
    }
}

/// What the user asks for; `None` means "choose".
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub chips: u64,
    pub seq: u64,
    /// Sequences per optimizer step, over the whole cluster.
    pub global_batch: u64,
    pub micro_batch: Option<u64>,
    pub tp: Option<u64>,
    pub pp: Option<u64>,
    pub dp: Option<u64>,
    /// Context parallelism (ring attention); `None`: 1 unless searching.
    pub cp: Option<u64>,
    /// Expert parallelism (MoE); `None`: 1 unless searching.
    pub ep: Option<u64>,
    /// Virtual pipeline stages per rank (interleaved 1F1B); `None`: 1 unless searching.
    pub vpp: Option<u64>,
    /// `None`: `tp-cp-dp-pp` unless searching.
    pub placement: Option<Placement>,
    pub precision: Precision,
    pub recompute: Recompute,
    /// ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters, sharded over DP.
    pub zero: u8,
    /// `None`: the chip's usual stack.
    pub framework: Option<Framework>,
    /// Trainium logical NeuronCore size (1 or 2; trn2/trn3 default 2). Ignored elsewhere.
    pub lnc: Option<u32>,
    pub neuron_costs: NeuronCosts,
    /// In-step kernel efficiency (`None`: the calibrated `step.kernel_efficiency`, or
    /// `step.neuron_kernel_efficiency` on NeuronCore chips).
    pub step_efficiency: Option<f64>,
    /// In-step efficiency of simulated layer programs under [`NeuronCosts::LayerPrograms`]
    /// (`None`: the calibrated `step.neuron_layer_program_efficiency`).
    pub program_efficiency: Option<f64>,
    /// The router's systematic imbalance across expert-parallel ranks (default
    /// `moe.routing_skew`).
    pub moe_skew: Option<f64>,
    /// Expert capacity over the mean routed tokens (GShard/Switch-style dropping and padding;
    /// `None`: dropless).
    pub capacity_factor: Option<f64>,
    /// Adam moment format ([`Moments::Fp32`] by default).
    pub moments: Moments,
    /// Under full recompute, keep each layer's saved input in host memory (written while the
    /// layer's forward runs, read back one layer ahead of its backward) instead of HBM.
    pub offload_layer_inputs: bool,
    pub datacenter: Datacenter,
    pub economics: EconomicsConfig,
}

impl TrainConfig {
    /// Defaults: bf16, selective recompute, ZeRO-1 (distributed optimizer), the chip's stack.
    pub fn new(chips: u64, seq: u64, global_batch: u64) -> TrainConfig {
        TrainConfig {
            chips,
            seq,
            global_batch,
            micro_batch: None,
            tp: None,
            pp: None,
            dp: None,
            cp: None,
            ep: None,
            vpp: None,
            placement: None,
            precision: Precision::Bf16,
            recompute: Recompute::Selective,
            zero: 1,
            framework: None,
            lnc: None,
            neuron_costs: NeuronCosts::Tables,
            step_efficiency: None,
            program_efficiency: None,
            moe_skew: None,
            capacity_factor: None,
            moments: Moments::Fp32,
            offload_layer_inputs: false,
            datacenter: Datacenter::default(),
            economics: EconomicsConfig::default(),
        }
    }
}

/// Why a plan cannot be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("--{name} must be positive, found {value}")]
    NotPositive { name: &'static str, value: u64 },
    #[error("--{name} {value} is absurdly large (limit {limit})")]
    TooLarge { name: &'static str, value: u64, limit: u64 },
    #[error("tp × cp × pp × dp = {tp} × {cp} × {pp} × {dp} = {product}, but {chips} × {chip} has {ranks} ranks ({per_chip} per chip{unit})")]
    Degrees {
        tp: u64,
        cp: u64,
        pp: u64,
        dp: u64,
        product: u128,
        chips: u64,
        chip: String,
        ranks: u64,
        per_chip: u32,
        unit: &'static str,
    },
    #[error("{what} does not divide {of} ({total})")]
    NotDivisible { what: String, total: u64, of: &'static str },
    #[error("pp {pp} exceeds the model's {layers} layers")]
    TooManyStages { pp: u64, layers: u64 },
    #[error("--seq {seq} exceeds the model's max_position_embeddings ({max})")]
    SeqTooLong { seq: u64, max: u64 },
    #[error("--zero must be 0, 1, 2 or 3, found {0}")]
    Zero(u8),
    #[error("--lnc must be 1 or 2, found {0}")]
    Lnc(u32),
    #[error("{0}")]
    Invalid(String),
    #[error("{chip} has no scale-out network: a job spans at most one {node} ({per_node} chips), asked for {chips}")]
    NoScaleOut { chip: String, node: String, per_node: u32, chips: u64 },
    #[error("no valid plan: {0}")]
    NoPlan(String),
    #[error("step efficiency must be in (0, 1], found {0}")]
    StepEfficiency(f64),
    #[error(transparent)]
    Perf(#[from] PerfError),
}

/// The plan evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Plan {
    pub tp: u64,
    pub cp: u64,
    pub ep: u64,
    pub pp: u64,
    /// Virtual stages per rank (1: plain 1F1B).
    pub vpp: u64,
    pub dp: u64,
    pub micro_batch: u64,
    /// Micro-batches per pipeline per step (gradient accumulation steps).
    pub micro_batches: u64,
    pub placement: Placement,
    pub ranks: u64,
    pub ranks_per_chip: u32,
    /// Chips the plan uses (the rest of the cluster idles; a search may leave some).
    pub chips_used: u64,
    /// What a rank is: "GPU", "TPU chip", "NeuronCore (LNC=2)".
    pub rank_unit: String,
    pub precision: String,
    pub recompute: String,
    pub zero: u8,
    pub framework: String,
    /// True when Rainier chose the degrees.
    pub chosen: bool,
}

/// Memory per device (rank), GiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Memory {
    pub params: f64,
    pub grads: f64,
    pub optimizer: f64,
    pub activations: f64,
    /// Logits and loss buffers, weight copies, framework reserve.
    pub other: f64,
    pub total: f64,
    /// HBM of one rank.
    pub capacity: f64,
}

/// One kind of communication per step: all of it and the part on the critical path, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default, schemars::JsonSchema)]
pub struct Comm {
    pub total: f64,
    pub exposed: f64,
}

/// Communication per parallel dimension.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default, schemars::JsonSchema)]
pub struct CommByKind {
    pub tp: Comm,
    pub cp: Comm,
    pub ep: Comm,
    pub pp: Comm,
    pub dp: Comm,
}

/// Where the step's time goes, seconds.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Breakdown {
    /// Forward and backward compute of all micro-batches on the slowest stage, recompute
    /// included, outside the bubble.
    pub compute: f64,
    /// Every collective and transfer, overlapped or not.
    pub communication: f64,
    /// The part of `communication` on the critical path.
    pub exposed_communication: f64,
    /// Pipeline fill and drain.
    pub pipeline_bubble: f64,
    pub optimizer: f64,
    pub communication_by_kind: CommByKind,
}

/// The prediction for one plan.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TrainReport {
    pub model: String,
    /// Every parameter stored (the model card's total; DeepSeek's MTP modules aside).
    pub model_parameters: u64,
    /// Parameters a token's matmuls use: the active layers and the LM head, without the
    /// embedding lookup (the `N` of `6·N`).
    pub active_parameters_per_token: u64,
    pub chip: String,
    pub chips: u64,
    pub seq: u64,
    pub global_batch: u64,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    /// Per chip used.
    pub tokens_per_s_per_chip: f64,
    pub model_tflops_per_chip: f64,
    pub mfu: f64,
    pub memory_gib_per_device: Memory,
    pub fits: bool,
    pub breakdown_s: Breakdown,
    pub plan: Plan,
    pub economics: Economics,
    /// What overlaps with what, the collective algorithms, what was assumed.
    pub notes: Vec<String>,
}

/// `--moe-skew` is a ratio of at least 1 (the busiest rank never gets less than the mean) and
/// at most 4; `--capacity-factor` is above 0 and at most 16, and replaces the skew.
pub(crate) fn check_routing(cfg: &TrainConfig) -> Result<(), PlanError> {
    match (cfg.moe_skew, cfg.capacity_factor) {
        (Some(_), Some(_)) => Err(PlanError::Invalid(
            "--moe-skew applies to dropless routing; with --capacity-factor every expert computes its capacity: give one".into(),
        )),
        (Some(s), None) if !(1.0..=4.0).contains(&s) => Err(PlanError::Invalid(format!(
            "--moe-skew must be between 1 and 4 (the busiest rank's tokens over the mean), found {s}"
        ))),
        (None, Some(c)) if !(c > 0.0 && c <= 16.0) => Err(PlanError::Invalid(format!(
            "--capacity-factor must be above 0 and at most 16 (tokens per expert over the mean), found {c}"
        ))),
        _ => Ok(()),
    }
}

/// The MoE routing `cfg` asks for.
pub(crate) fn routing(cfg: &TrainConfig) -> Routing {
    match cfg.capacity_factor {
        Some(factor) => Routing::Capacity { factor },
        None => {
            Routing::Dropless { skew: cfg.moe_skew.unwrap_or(rainier_perf::MOE_ROUTING_SKEW.value) }
        }
    }
}

/// Ranks per chip: NeuronCores at the logical-core size on Trainium, else 1.
pub fn ranks_per_chip(chip: &Chip, lnc: Option<u32>) -> Result<u32, PlanError> {
    if chip.family != Family::Neuron {
        return match lnc {
            None => Ok(1),
            Some(_) => Err(PlanError::Invalid(format!(
                "--lnc sets Trainium's logical NeuronCore size; {} is not a Trainium chip",
                chip.name
            ))),
        };
    }
    // Trn1/Inf2 (NeuronCore-v2) have no LNC setting: each core is a rank.
    let default = if chip.cores_per_chip >= 8 { 2 } else { 1 };
    let lnc = lnc.unwrap_or(default);
    if lnc != 1 && lnc != 2 {
        return Err(PlanError::Lnc(lnc));
    }
    Ok((chip.cores_per_chip / if chip.cores_per_chip >= 8 { lnc } else { 1 }).max(1))
}

pub(crate) fn rank_unit(chip: &Chip, per_chip: u32) -> String {
    match chip.family {
        Family::Gpu => "GPU".into(),
        Family::Tpu => "TPU chip".into(),
        Family::Neuron if chip.cores_per_chip >= 8 => {
            format!("NeuronCore (LNC={})", chip.cores_per_chip / per_chip)
        }
        Family::Neuron => "NeuronCore".into(),
    }
}

/// Evaluates `cfg` (choosing what it leaves open among the plans a practitioner would try)
/// for `model` on `chip`.
pub fn evaluate(model: &Model, chip: &Chip, cfg: &TrainConfig) -> Result<TrainReport, PlanError> {
    let planner = Planner::new(model, chip, cfg)?;
    match (cfg.tp, cfg.pp, cfg.dp) {
        (Some(tp), Some(pp), Some(dp)) => {
            let d = Degrees {
                tp,
                cp: cfg.cp.unwrap_or(1),
                ep: cfg.ep.unwrap_or(1),
                pp,
                vpp: cfg.vpp.unwrap_or(1),
                dp,
                mb: cfg.micro_batch.unwrap_or(1),
                recompute: cfg.recompute,
                zero: cfg.zero,
                placement: cfg.placement.unwrap_or(Placement::DpInner),
            };
            if cfg.offload_layer_inputs && d.recompute != Recompute::Full {
                return Err(PlanError::Invalid(
                    "offloading layer inputs needs full recompute (what is offloaded is the layer input full recompute keeps)".into(),
                ));
            }
            // Degrees that use fewer ranks than the cluster has leave chips idle (as a
            // searched plan may), reported as `chips_used`.
            planner.check(&d, true)?;
            let costs = planner.layer_costs(d.tp, d.cp, d.ep, d.mb);
            let outcome = planner.outcome(&costs, &d);
            Ok(planner.report(&d, &outcome, false))
        }
        _ => crate::search::choose(&planner),
    }
}

fn check_sizes(model: &Model, chip: &Chip, cfg: &TrainConfig) -> Result<(), PlanError> {
    check_job(model, cfg)?;
    if chip.node.scale_out_bits_per_s.value <= 0.0
        && cfg.chips > u64::from(chip.node.scale_up_domain_chips)
    {
        return Err(PlanError::NoScaleOut {
            chip: chip.name.clone(),
            node: chip.node.name.clone(),
            per_node: chip.node.scale_up_domain_chips,
            chips: cfg.chips,
        });
    }
    Ok(())
}

/// Checks that every given size is positive and at most `limit`; `None` means "not given".
pub(crate) fn check_counts(
    counts: &[(&'static str, Option<u64>)],
    limit: u64,
) -> Result<(), PlanError> {
    for &(name, value) in counts {
        match value {
            Some(0) => return Err(PlanError::NotPositive { name, value: 0 }),
            Some(v) if v > limit => return Err(PlanError::TooLarge { name, value: v, limit }),
            _ => {}
        }
    }
    Ok(())
}

/// Checks what does not depend on the chip: sizes, degrees, datacenter and economics.
pub(crate) fn check_job(model: &Model, cfg: &TrainConfig) -> Result<(), PlanError> {
    check_counts(
        &[
            ("chips", Some(cfg.chips)),
            ("seq", Some(cfg.seq)),
            ("global-batch", Some(cfg.global_batch)),
            ("micro-batch", cfg.micro_batch),
            ("tp", cfg.tp),
            ("pp", cfg.pp),
            ("dp", cfg.dp),
            ("cp", cfg.cp),
            ("ep", cfg.ep),
            ("vpp", cfg.vpp),
        ],
        1 << 32,
    )?;
    if cfg.seq > model.max_positions {
        return Err(PlanError::SeqTooLong { seq: cfg.seq, max: model.max_positions });
    }
    if cfg.zero > 3 {
        return Err(PlanError::Zero(cfg.zero));
    }
    let dc = &cfg.datacenter;
    for (name, v) in [
        ("building-oversubscription", dc.building_oversubscription),
        ("site-oversubscription", dc.site_oversubscription),
    ] {
        if !(v.is_finite() && v >= 1.0) {
            return Err(PlanError::Invalid(format!("--{name} must be at least 1, found {v}")));
        }
    }
    if dc.building_chips == 0 || dc.site_chips == 0 {
        return Err(PlanError::Invalid(
            "--building-chips and --site-chips must be positive".into(),
        ));
    }
    let e = &cfg.economics;
    for (name, v) in [
        ("usd-per-chip-hour", e.usd_per_chip_hour),
        ("tokens", e.tokens),
        ("mtbf-chip-hours", e.mtbf_chip_hours),
        ("checkpoint-gb-per-s", e.checkpoint_bytes_per_s.map(|b| b / 1e9)),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0 && v < 1e30) {
                return Err(PlanError::Invalid(format!(
                    "--{name} must be a positive number, found {v}"
                )));
            }
        }
    }
    if let Some(v) = e.restart_s {
        if !(v.is_finite() && (0.0..1e12).contains(&v)) {
            return Err(PlanError::Invalid(format!("--restart-s must be non-negative, found {v}")));
        }
    }
    if let Some(pue) = e.pue {
        if !(1.0..=3.0).contains(&pue) {
            return Err(PlanError::Invalid(format!("--pue must be between 1 and 3, found {pue}")));
        }
    }
    Ok(())
}

/// One plan's degrees and policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Degrees {
    pub tp: u64,
    pub cp: u64,
    pub ep: u64,
    pub pp: u64,
    pub vpp: u64,
    pub dp: u64,
    pub mb: u64,
    pub recompute: Recompute,
    pub zero: u8,
    pub placement: Placement,
}

impl Degrees {
    pub(crate) fn ranks(&self) -> u128 {
        u128::from(self.tp) * u128::from(self.cp) * u128::from(self.pp) * u128::from(self.dp)
    }
}

/// What is fixed for a model, chip and cluster: everything a plan's evaluation reads.
pub(crate) struct Planner<'a> {
    pub model: &'a Model,
    pub chip: &'a Chip,
    pub cfg: &'a TrainConfig,
    pub per_chip: u32,
    pub ranks: u64,
    pub framework: Framework,
    pub cost: CostModel,
    pub topology: Topology,
    /// Parameters of one layer outside the experts, and of its experts.
    dense_per_layer: f64,
    expert_per_layer: f64,
}

/// Times of one layer (and the model's ends) for one micro-batch on one rank, and what the
/// layer keeps for backward, at fixed `tp`, `cp`, `ep` and micro-batch.
pub(crate) struct LayerCosts {
    batch: Batch,
    layer_fwd: f64,
    layer_bwd: f64,
    /// GEMMs TP communication can hide behind (the router's tiny product excluded).
    tp_gemms: f64,
    /// The activation selective recompute re-runs.
    activation: f64,
    attention_fwd: f64,
    attention_bwd: f64,
    head_fwd: f64,
    head_bwd: f64,
    embedding_fwd: f64,
    embedding_bwd: f64,
    /// Activation bytes per layer for none, selective, full recompute.
    act_bytes: [f64; 3],
    /// Sequence-parallel all-gathers and reduce-scatters of one pass of one layer.
    tp_pass: f64,
    /// Ring-attention K/V transfers of one layer, forward and backward.
    cp_fwd: f64,
    cp_bwd: f64,
    /// The fraction of layers that are MoE (and run expert-parallel all-to-alls).
    moe_share: f64,
}

/// One layer kind's share of [`LayerCosts`].
#[derive(Default)]
struct VariantCosts {
    forward: f64,
    backward: f64,
    tp_gemms: f64,
    activation: f64,
    attention_forward: f64,
    attention_backward: f64,
    act_bytes: [f64; 3],
}

/// A plan's numbers, before they become a report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub step: f64,
    pub compute: f64,
    pub bubble: f64,
    pub optimizer: f64,
    pub comm: CommByKind,
    pub memory: Memory,
    pub micro_batches: u64,
    pub tokens_per_s: f64,
    pub chips_used: u64,
}

impl Outcome {
    pub(crate) fn fits(&self) -> bool {
        self.memory.total <= self.memory.capacity
    }
}

fn recompute_index(r: Recompute) -> usize {
    match r {
        Recompute::None => 0,
        Recompute::Selective => 1,
        Recompute::Full => 2,
    }
}

impl<'a> Planner<'a> {
    /// The deepest ZeRO stage the chip's training stack runs: NeuronX Distributed (and
    /// neuronx-nemo-megatron) shard the optimizer states only, ZeRO-1 (`zero_one_enabled`,
    /// `shared/neuron-arch.md` §7 [NxD]); Megatron-Core, PyTorch FSDP and MaxText shard
    /// everything (3).
    pub(crate) fn max_zero(&self) -> u8 {
        if self.chip.family == Family::Neuron {
            1
        } else {
            3
        }
    }

    pub(crate) fn new(
        model: &'a Model,
        chip: &'a Chip,
        cfg: &'a TrainConfig,
    ) -> Result<Planner<'a>, PlanError> {
        check_sizes(model, chip, cfg)?;
        check_routing(cfg)?;
        let per_chip = ranks_per_chip(chip, cfg.lnc)?;
        let ranks = cfg.chips * u64::from(per_chip);
        let framework = cfg.framework.unwrap_or(chip.default_framework);
        let mut cost = CostModel::new(chip, per_chip, cfg.precision, framework, cfg.neuron_costs)?;
        // NeuronX Distributed has its own fitted in-step efficiency.
        let default = (chip.family == Family::Neuron)
            .then_some(rainier_perf::NEURON_STEP_KERNEL_EFFICIENCY.value);
        if let Some(eta) = cfg.step_efficiency.or(default) {
            if !(eta > 0.0 && eta <= 1.0) {
                return Err(PlanError::StepEfficiency(eta));
            }
            cost = cost.with_step_efficiency(eta);
        }
        if let Some(eta) = cfg.program_efficiency {
            if !(eta > 0.0 && eta <= 1.0) {
                return Err(PlanError::StepEfficiency(eta));
            }
            cost = cost.with_program_efficiency(eta);
        }
        let topology = Topology::new(chip, per_chip, &cfg.datacenter);
        // Per layer on average (models whose layers differ hold their experts unevenly:
        // stages are sized by the mean layer).
        let p = model.params();
        let layers = model.layers as f64;
        let expert_per_layer = p.experts as f64 / layers;
        Ok(Planner {
            model,
            chip,
            cfg,
            per_chip,
            ranks,
            framework,
            cost,
            topology,
            dense_per_layer: p.layers as f64 / layers - expert_per_layer,
            expert_per_layer,
        })
    }

    fn degrees_error(&self, d: &Degrees) -> PlanError {
        PlanError::Degrees {
            tp: d.tp,
            cp: d.cp,
            pp: d.pp,
            dp: d.dp,
            product: d.ranks(),
            chips: self.cfg.chips,
            chip: self.chip.name.clone(),
            ranks: self.ranks,
            per_chip: self.per_chip,
            unit: if self.chip.family == Family::Neuron {
                ", NeuronCores as NeuronX Distributed counts them"
            } else {
                ""
            },
        }
    }

    /// Checks the degrees against the model, batch and cluster. `partial` allows plans that
    /// leave ranks idle (searches over clusters whose size the batch does not divide).
    pub(crate) fn check(&self, d: &Degrees, partial: bool) -> Result<(), PlanError> {
        let (model, cfg) = (self.model, self.cfg);
        let ranks = d.ranks();
        if ranks > u128::from(self.ranks) || (!partial && ranks != u128::from(self.ranks)) {
            return Err(self.degrees_error(d));
        }
        let not_divisible = |what: String, total: u64, of: &'static str| {
            Err(PlanError::NotDivisible { what, total, of })
        };
        if model.heads % d.tp != 0 {
            return not_divisible(format!("tp {}", d.tp), model.heads, "the attention heads");
        }
        if d.pp > model.layers {
            return Err(PlanError::TooManyStages { pp: d.pp, layers: model.layers });
        }
        if d.cp > 1 && cfg.seq % (2 * d.cp) != 0 {
            return not_divisible(
                format!("2 × cp = {}", 2 * d.cp),
                cfg.seq,
                "--seq (ring attention balances causal work with 2·cp chunks)",
            );
        }
        if d.ep > 1 {
            let Some(moe) = model.moe else {
                return Err(PlanError::Invalid(format!(
                    "--ep {} needs a mixture-of-experts model; {} is dense",
                    d.ep, model.name
                )));
            };
            if moe.experts % d.ep != 0 {
                return not_divisible(format!("ep {}", d.ep), moe.experts, "the experts");
            }
            if d.dp % d.ep != 0 {
                return not_divisible(
                    format!("ep {}", d.ep),
                    d.dp,
                    "dp (expert parallelism is carved out of data parallelism)",
                );
            }
        }
        let per_step = d.dp.saturating_mul(d.mb);
        if cfg.global_batch % per_step != 0 {
            return not_divisible(
                format!("dp × micro-batch = {} × {}", d.dp, d.mb),
                cfg.global_batch,
                "the global batch",
            );
        }
        if d.vpp > 1 {
            if d.pp == 1 {
                return Err(PlanError::Invalid("--vpp above 1 needs --pp above 1".into()));
            }
            if model.layers % (d.pp * d.vpp) != 0 {
                return not_divisible(
                    format!("pp × vpp = {} × {}", d.pp, d.vpp),
                    model.layers,
                    "the layers",
                );
            }
            let micro_batches = cfg.global_batch / per_step;
            if micro_batches % d.pp != 0 {
                return not_divisible(
                    format!("pp {}", d.pp),
                    micro_batches,
                    "the micro-batches per step (interleaved 1F1B)",
                );
            }
        }
        // Keeps tokens × widths × bytes inside u64 (widths are below 2^24).
        const MAX_TOKENS: u64 = 1 << 32;
        if d.mb.saturating_mul(cfg.seq) > MAX_TOKENS {
            return Err(PlanError::TooLarge {
                name: "micro-batch × --seq",
                value: d.mb.saturating_mul(cfg.seq),
                limit: MAX_TOKENS,
            });
        }
        if d.zero > 3 {
            return Err(PlanError::Zero(d.zero));
        }
        Ok(())
    }

    /// Layer and end costs for one micro-batch at `tp`, `cp`, `ep`: the expensive part of a
    /// plan (op costs), shared by every plan with these degrees. A model whose layers differ
    /// gets the mean of its layer kinds, weighted by their counts.
    pub(crate) fn layer_costs(&self, tp: u64, cp: u64, ep: u64, mb: u64) -> LayerCosts {
        let (model, cost) = (self.model, &self.cost);
        let routing = self.routing();
        let batch = Batch { sequences: mb, seq: self.cfg.seq, tp, cp, ep, routing };
        let time =
            |ops: &[rainier_model::Op]| ops.iter().map(|op| cost.op_seconds(op)).sum::<f64>();
        let (mut layer_fwd, mut layer_bwd, mut tp_gemms, mut activation) = (0.0, 0.0, 0.0, 0.0);
        let (mut attention_fwd, mut attention_bwd) = (0.0, 0.0);
        let mut act_bytes = [0.0; 3];
        for (count, variant) in model.variants() {
            let share = count as f64 / model.layers as f64;
            let v = self.variant_costs(&variant, batch);
            layer_fwd += share * v.forward;
            layer_bwd += share * v.backward;
            tp_gemms += share * v.tp_gemms;
            activation += share * v.activation;
            attention_fwd += share * v.attention_forward;
            attention_bwd += share * v.attention_backward;
            for (total, bytes) in act_bytes.iter_mut().zip(v.act_bytes) {
                *total += share * bytes;
            }
        }
        let head = model.head_ops(batch);
        let embedding = model.embedding_ops(batch);
        // Sequence parallelism: per layer and pass, all-gathers before the attention and the
        // MLP and reduce-scatters after them.
        let tp_pass = if tp > 1 {
            let bytes = (batch.tokens() * model.hidden * ACT_BYTES) as f64;
            let group = Group { size: tp, stride: 1 };
            2.0 * (self.topology.seconds(CollectiveKind::AllGather, bytes, group, 1.0)
                + self.topology.seconds(CollectiveKind::ReduceScatter, bytes, group, 1.0))
        } else {
            0.0
        };
        // Ring attention: cp − 1 steps each passing this rank's K and V block to the next rank
        // (forward), and K, V and their gradients (backward).
        let (cp_fwd, cp_bwd) = if cp > 1 {
            let kv = (batch.tokens()
                * model.kv_heads.div_ceil(tp).max(1)
                * (model.head_dim + model.v_head_dim())
                * ACT_BYTES) as f64;
            let send = self.topology.seconds(
                CollectiveKind::SendRecv,
                kv,
                Group { size: cp, stride: tp },
                1.0,
            );
            ((cp - 1) as f64 * send, 2.0 * (cp - 1) as f64 * send)
        } else {
            (0.0, 0.0)
        };
        LayerCosts {
            batch,
            layer_fwd,
            layer_bwd,
            tp_gemms,
            activation,
            attention_fwd,
            attention_bwd,
            head_fwd: time(&head.forward),
            head_bwd: time(&head.backward),
            embedding_fwd: time(&embedding.forward),
            embedding_bwd: time(&embedding.backward),
            act_bytes,
            tp_pass,
            cp_fwd,
            cp_bwd,
            moe_share: model.moe_layers() as f64 / model.layers as f64,
        }
    }

    /// Op times of one layer of a uniform model (one of [`Model::variants`]).
    fn variant_costs(&self, model: &Model, batch: Batch) -> VariantCosts {
        let mut v = VariantCosts::default();
        let layer = model.layer_ops(batch);
        for op in layer.forward.iter().chain(&layer.backward) {
            let t = self.cost.op_seconds(op);
            match op.pass {
                Pass::Forward => v.forward += t,
                Pass::Backward => v.backward += t,
            }
            match op.kind {
                OpKind::Gemm { .. } if op.name != "router" => v.tp_gemms += t,
                OpKind::Attention { backward: false, .. } => v.attention_forward += t,
                OpKind::Attention { backward: true, .. } => v.attention_backward += t,
                _ => {}
            }
            // What selective recompute re-runs: the MLP activations, and MLA's up-projections
            // (its expanded q, k, v are not kept).
            let mla_up = model.mla.is_some() && matches!(op.name, "q_up" | "q_proj" | "kv_up");
            if op.pass == Pass::Forward && (op.name.ends_with("_act") || mla_up) {
                v.activation += t;
            }
        }
        v.act_bytes = [Recompute::None, Recompute::Selective, Recompute::Full]
            .map(|r| model.activation_bytes_per_layer(batch, r));
        // Each pass as one simulated program where asked and expressible (the attention and
        // GEMM shares, used for overlap and recompute, stay the ops').
        if let Some(forward) = self.cost.layer_program_seconds(model, batch, Pass::Forward) {
            v.forward = forward;
        }
        if let Some(backward) = self.cost.layer_program_seconds(model, batch, Pass::Backward) {
            v.backward = backward;
        }
        v
    }

    /// How MoE layers size their experts' work (`--capacity-factor`, else dropless with
    /// `--moe-skew` or the assumption).
    fn routing(&self) -> Routing {
        routing(self.cfg)
    }

    /// The micro-batch one rank computes under plan `d`.
    fn layer_batch(&self, d: &Degrees) -> Batch {
        let seq = self.cfg.seq;
        Batch { sequences: d.mb, seq, tp: d.tp, cp: d.cp, ep: d.ep, routing: self.routing() }
    }

    /// Whether the stack hides expert-parallel all-to-alls behind another micro-batch's
    /// compute: GPU stacks with fused kernels do (DualPipe, Megatron-core's
    /// `--overlap-moe-expert-parallel-comm`), given two micro-batches to interleave;
    /// NeuronX Distributed and XLA document no such schedule.
    fn ep_overlaps(&self, micro_batches: u64) -> bool {
        self.chip.family == Family::Gpu && self.framework == Framework::Fused && micro_batches > 1
    }

    /// Expert-parallel dispatch and combine all-to-alls of one micro-batch, forward and
    /// backward (forward again under full recompute), over the MoE layers of a stage. The
    /// busiest rank receives `load` times the mean; with group-limited routing a token
    /// crosses the network to at most `max_groups` nodes (forwarded inside each over the
    /// scale-up links, not priced); fp8 training dispatches fp8 activations (combine and
    /// the backward stay bf16), as DeepEP does.
    fn ep_seconds(&self, lc: &LayerCosts, d: &Degrees, dp_stride: u64) -> f64 {
        let (model, topo) = (self.model, &self.topology);
        let Some(moe) = model.moe.filter(|_| d.ep > 1) else { return 0.0 };
        let group = Group { size: d.ep, stride: dp_stride };
        let crosses_nodes = d.ep * dp_stride > topo.scale_up_ranks();
        let slots = match moe.max_groups {
            Some(groups) if crosses_nodes => groups.min(moe.top_k),
            _ => moe.top_k,
        };
        let rows = (lc.batch.tokens().div_ceil(d.tp) * slots * model.hidden) as f64
            * model.busiest_rank_load(lc.batch);
        let a2a = |bytes_per_value: f64| {
            topo.seconds(CollectiveKind::AllToAll, rows * bytes_per_value, group, 1.0)
        };
        let bf16 = ACT_BYTES as f64;
        let dispatch = match self.cfg.precision {
            Precision::Bf16 | Precision::AmpBf16 => bf16,
            // One byte per value plus a scale per 128 (DeepEP's fp8 dispatch).
            _ => 1.0 + 4.0 / 128.0,
        };
        let forward = a2a(dispatch) + a2a(bf16);
        let backward = 2.0 * a2a(bf16);
        let forwards = if d.recompute == Recompute::Full { 2.0 } else { 1.0 };
        let layers = model.layers.div_ceil(d.pp) as f64 * lc.moe_share;
        (forwards * forward + backward) * layers
    }

    /// Stride of the data-parallel and pipeline groups under a placement.
    fn strides(&self, d: &Degrees) -> (u64, u64) {
        let inner = d.tp * d.cp;
        match d.placement {
            Placement::DpInner => (inner, inner * d.dp),
            Placement::PpInner => (inner * d.pp, inner),
        }
    }

    /// The step under plan `d`, from its layer costs.
    pub(crate) fn outcome(&self, lc: &LayerCosts, d: &Degrees) -> Outcome {
        let (model, cfg) = (self.model, self.cfg);
        let topo = &self.topology;
        let micro_batches = cfg.global_batch / (d.dp * d.mb);
        let m = micro_batches as f64;
        let n = model.layers.div_ceil(d.pp) as f64;
        let (dp_stride, pp_stride) = self.strides(d);
        let full = d.recompute == Recompute::Full;

        // --- Compute per micro-batch on the slowest (last) stage; one stage holds the ends.
        let ends_fwd = lc.head_fwd + if d.pp == 1 { lc.embedding_fwd } else { 0.0 };
        let ends_bwd = lc.head_bwd + if d.pp == 1 { lc.embedding_bwd } else { 0.0 };
        let forward = n * lc.layer_fwd + ends_fwd;
        let backward = n * lc.layer_bwd + ends_bwd;
        let recompute = n * match d.recompute {
            Recompute::None => 0.0,
            Recompute::Selective => lc.activation,
            Recompute::Full => lc.layer_fwd,
        };

        // --- Tensor parallel (sequence parallel): forward and backward passes, and the
        // forward once more under full recompute. Fused stacks overlap it with the GEMMs it
        // feeds (Transformer Engine userbuffers, NxD, XLA collective matmul).
        let passes = if full { 3.0 } else { 2.0 };
        let tp_mb = passes * lc.tp_pass * n;
        let tp_exposed_mb = match self.framework {
            Framework::Eager => tp_mb,
            Framework::Fused => (tp_mb - n * lc.tp_gemms).max(0.0),
        };
        // --- Context parallel: ring-attention transfers overlap the attention blocks.
        let cp_fwd_mb = n * lc.cp_fwd * if full { 2.0 } else { 1.0 };
        let cp_mb = cp_fwd_mb + n * lc.cp_bwd;
        let cp_exposed_mb =
            n * (lc.cp_fwd - lc.attention_fwd).max(0.0) * if full { 2.0 } else { 1.0 }
                + n * (lc.cp_bwd - lc.attention_bwd).max(0.0);
        // --- Expert parallel: dispatch and combine all-to-alls around the experts, forward
        // and backward (forward again under full recompute), on the critical path.
        let ep_mb = self.ep_seconds(lc, d, dp_stride);
        // GPU stacks overlap one micro-batch's all-to-alls with another's compute (DeepSeek's
        // DualPipe, Megatron-core's 1F1B all-to-all overlap), on the compute TP has not already
        // hidden behind; the communication kernels hold SMs the overlapped compute loses.
        let ep_exposed_mb = if self.ep_overlaps(micro_batches) {
            let room = (forward + backward + recompute - (tp_mb - tp_exposed_mb)).max(0.0);
            let hidden = ep_mb.min(room);
            ep_mb - hidden + hidden * rainier_perf::MOE_A2A_SM_SHARE.value
        } else {
            ep_mb
        };

        // --- Offload: each layer input goes to the host during the layer's forward and comes
        // back during the next layer's backward (recompute and backward); the excess stalls.
        let offload_mb = if self.offloads(d) {
            let transfer =
                lc.act_bytes[recompute_index(Recompute::Full)] / OFFLOAD_BYTES_PER_S.value;
            n * ((transfer - lc.layer_fwd).max(0.0)
                + (transfer - lc.layer_fwd - lc.layer_bwd).max(0.0))
        } else {
            0.0
        };

        // --- Pipeline: 1F1B (interleaved: the bubble shrinks by vpp, sends grow by vpp).
        let per_mb = forward
            + backward
            + recompute
            + offload_mb
            + tp_exposed_mb
            + cp_exposed_mb
            + ep_exposed_mb;
        let compute = m * (forward + backward + recompute + offload_mb);
        let bubble = (d.pp - 1) as f64 / d.vpp as f64 * per_mb;
        let pp_total = if d.pp > 1 {
            let bytes = (lc.batch.tokens() * model.hidden * ACT_BYTES) as f64 / d.tp as f64;
            let send = topo.seconds(
                CollectiveKind::SendRecv,
                bytes,
                Group { size: d.pp, stride: pp_stride },
                1.0,
            );
            2.0 * d.vpp as f64 * (micro_batches + d.pp - 1) as f64 * send
        } else {
            0.0
        };
        // Stage sends overlap compute in fused stacks (Megatron's overlap_p2p_comm).
        let pp_exposed = match self.framework {
            Framework::Eager => pp_total,
            Framework::Fused => 0.0,
        };

        // --- Data parallel: gradients (and parameters under ZeRO-3) over the DP × CP ranks
        // holding the same weights; expert weights over the DP × CP / EP ranks.
        let (dense, experts) = self.params_per_rank(d);
        let (grad_bytes, weight_bytes, master_bytes) = self.bytes_per_param();
        // The scale-up links are also busy with TP and CP traffic while DP overlaps compute.
        // Counted per forward + backward (recompute adds both traffic and time).
        let busy = ((2.0 * lc.tp_pass + lc.cp_fwd + lc.cp_bwd) * n
            / (forward + backward).max(1e-12))
        .min(rainier_perf::SCALE_UP_MAX_SHARED.value);
        let free = 1.0 - busy;
        let cp_group = Group { size: d.cp, stride: d.tp };
        let dp_group = Group { size: d.dp, stride: dp_stride };
        let edp_group = Group { size: d.dp / d.ep, stride: dp_stride * d.ep };
        let collective = |kind, bytes: f64, dp: Group| {
            topo.seconds(kind, bytes, cp_group, free)
                + topo.seconds(kind, bytes / d.cp as f64, dp, free)
        };
        let both = |kind, per_param: f64| {
            collective(kind, dense * per_param, dp_group)
                + collective(kind, experts * per_param, edp_group)
        };
        let replicas = d.dp * d.cp;
        let dp_comm = if replicas <= 1 {
            Comm::default()
        } else {
            match d.zero {
                0 => {
                    // DDP / Megatron: all-reduce in buckets during the last backward.
                    let t = both(CollectiveKind::AllReduce, grad_bytes);
                    Comm { total: t, exposed: (t - backward).max(0.0) }
                }
                1 | 2 => {
                    // Distributed optimizer: reduce-scatter during the last backward,
                    // all-gather of updated weights during the next step's first forward.
                    let rs = both(CollectiveKind::ReduceScatter, grad_bytes);
                    let ag = both(CollectiveKind::AllGather, weight_bytes);
                    Comm {
                        total: rs + ag,
                        exposed: (rs - backward).max(0.0) + (ag - forward).max(0.0),
                    }
                }
                _ => {
                    // ZeRO-3 / FSDP: weights gathered for forward and again for backward,
                    // gradients reduce-scattered, every micro-batch, prefetched behind compute.
                    let ag = both(CollectiveKind::AllGather, weight_bytes);
                    let rs = both(CollectiveKind::ReduceScatter, grad_bytes);
                    let exposed =
                        (ag - forward).max(0.0) + (ag + rs - backward - recompute).max(0.0);
                    Comm { total: m * (2.0 * ag + rs), exposed: m * exposed }
                }
            }
        };
        let shard = |stage: u8, group: u64| if d.zero >= stage { group.max(1) as f64 } else { 1.0 };
        let (dense_dp, expert_dp) = (replicas, replicas / d.ep);

        // --- Optimizer: AdamW over this rank's shard.
        let opt_params = dense / shard(1, dense_dp) + experts / shard(1, expert_dp);
        let optimizer =
            self.cost.optimizer_seconds(opt_params, 2.0 * master_bytes + grad_bytes + weight_bytes);

        let comm = CommByKind {
            tp: Comm { total: m * tp_mb, exposed: m * tp_exposed_mb },
            cp: Comm { total: m * cp_mb, exposed: m * cp_exposed_mb },
            ep: Comm { total: m * ep_mb, exposed: m * ep_exposed_mb },
            pp: Comm { total: pp_total, exposed: pp_exposed },
            dp: dp_comm,
        };
        let step = compute
            + comm.tp.exposed
            + comm.cp.exposed
            + comm.ep.exposed
            + bubble
            + pp_exposed
            + dp_comm.exposed
            + optimizer;
        let tokens_per_s = (cfg.global_batch * cfg.seq) as f64 / step;

        // --- Memory per rank.
        let by = |per_param: f64, stage: u8| {
            dense * per_param / shard(stage, dense_dp)
                + experts * per_param / shard(stage, expert_dp)
        };
        // ZeRO-3 gathers each layer's full (TP-sharded) weights before using it, with the
        // next layer prefetched: two layers unsharded; ZeRO-2/3 hold one layer's gradients
        // unsharded until their reduce-scatter.
        let layer =
            self.dense_per_layer / d.tp as f64 + self.expert_per_layer / (d.tp * d.ep) as f64;
        let gathered = if d.zero >= 3 { 2.0 * layer * weight_bytes } else { 0.0 };
        let bucket = if d.zero >= 2 { layer * grad_bytes } else { 0.0 };
        let weights = by(weight_bytes, 3) + gathered;
        let grads = by(grad_bytes, 2) + bucket;
        let optimizer_states = by(self.optimizer_state_bytes(), 1);
        // 1F1B keeps up to pp micro-batches in flight on the first stage; interleaving adds
        // (pp − 1)/(pp·vpp) of a stage's worth (Narayanan et al. 2021).
        let interleave =
            if d.vpp > 1 { 1.0 + (d.pp - 1) as f64 / (d.pp * d.vpp) as f64 } else { 1.0 };
        let in_flight = d.pp.min(micro_batches) as f64 * interleave;
        let tokens = lc.batch.tokens();
        // Offloaded layer inputs: two in HBM at a time (the one in flight and the next).
        let held = if self.offloads(d) { n.min(2.0) } else { n };
        let activations = (lc.act_bytes[recompute_index(d.recompute)] * held
            + (tokens.div_ceil(d.tp) * model.hidden * ACT_BYTES) as f64)
            * in_flight;
        // Logits (bf16) and their fp32 softmax/gradient on the last stage (bf16 only under
        // XLA's fused loss: a named assumption).
        let logit_bytes = rainier_perf::logit_bytes(self.chip.family);
        let logits = (tokens * model.vocab.div_ceil(d.tp)) as f64 * logit_bytes;
        // amp-bf16 casts fp32 weights to bf16 copies each forward; fp8 keeps fp8 copies, MX
        // ones their values plus an e8m0 scale per 32.
        let copies = match cfg.precision {
            Precision::AmpBf16 => by(2.0, 3),
            Precision::Fp8 => by(1.0, 3),
            Precision::Mxfp8 => by(1.0 + 1.0 / 32.0, 3),
            Precision::Mxfp4 => by(0.5 + 1.0 / 32.0, 3),
            Precision::Nvfp4 => by(0.5 + 1.0 / 16.0, 3),
            Precision::Bf16 => 0.0,
        };
        let reserve = rainier_perf::framework_reserve_gib(self.chip.family) * GIB;
        let other = logits + copies + reserve;
        let total = weights + grads + optimizer_states + activations + other;
        let capacity = self.chip.hbm_bytes() / f64::from(self.per_chip);
        let ranks = (d.ranks().min(u128::from(u64::MAX))) as u64;
        Outcome {
            step,
            compute,
            bubble,
            optimizer,
            comm,
            memory: Memory {
                params: weights / GIB,
                grads: grads / GIB,
                optimizer: optimizer_states / GIB,
                activations: activations / GIB,
                other: other / GIB,
                total: total / GIB,
                capacity: capacity / GIB,
            },
            micro_batches,
            tokens_per_s,
            chips_used: ranks.div_ceil(u64::from(self.per_chip)),
        }
    }

    /// The full report of plan `d`.
    pub(crate) fn report(&self, d: &Degrees, o: &Outcome, chosen: bool) -> TrainReport {
        let (model, cfg, chip) = (self.model, self.cfg, self.chip);
        let per_chip = o.tokens_per_s / o.chips_used as f64;
        let model_tflops_per_chip = per_chip * model.model_flops_per_token(cfg.seq) / 1e12;
        let peak_chip = self.cost.peak_flops() * f64::from(self.per_chip);
        let c = &o.comm;
        let kinds = [c.tp, c.cp, c.ep, c.pp, c.dp];
        let state_bytes = model.params().total() as f64
            * (self.bytes_per_param().1 + self.optimizer_state_bytes());
        let economics = economics(
            chip,
            &JobFacts {
                chips: o.chips_used,
                replicas: d.dp,
                tokens_per_s: o.tokens_per_s,
                busy: o.compute / o.step,
                state_bytes,
            },
            &cfg.economics,
        );
        TrainReport {
            model: model.name.clone(),
            model_parameters: model.params().total(),
            active_parameters_per_token: model.matmul_params_active(),
            chip: chip.name.clone(),
            chips: cfg.chips,
            seq: cfg.seq,
            global_batch: cfg.global_batch,
            step_time_s: o.step,
            tokens_per_s: o.tokens_per_s,
            tokens_per_s_per_chip: per_chip,
            model_tflops_per_chip,
            mfu: model_tflops_per_chip * 1e12 / peak_chip,
            memory_gib_per_device: o.memory,
            fits: o.fits(),
            breakdown_s: Breakdown {
                compute: o.compute,
                communication: kinds.iter().map(|k| k.total).sum(),
                exposed_communication: kinds.iter().map(|k| k.exposed).sum(),
                pipeline_bubble: o.bubble,
                optimizer: o.optimizer,
                communication_by_kind: o.comm,
            },
            plan: Plan {
                tp: d.tp,
                cp: d.cp,
                ep: d.ep,
                pp: d.pp,
                vpp: d.vpp,
                dp: d.dp,
                micro_batch: d.mb,
                micro_batches: o.micro_batches,
                placement: d.placement,
                ranks: (d.ranks().min(u128::from(u64::MAX))) as u64,
                ranks_per_chip: self.per_chip,
                chips_used: o.chips_used,
                rank_unit: rank_unit(chip, self.per_chip),
                precision: precision_name(cfg.precision).into(),
                recompute: recompute_name(d.recompute).into(),
                zero: d.zero,
                framework: match self.framework {
                    Framework::Eager => "eager".into(),
                    Framework::Fused => "fused".into(),
                },
                chosen,
            },
            economics,
            notes: self.notes(d),
        }
    }

    /// Parameters held by the most loaded rank before ZeRO sharding, outside the experts and
    /// in them: its stage's layers over TP (experts over TP × EP), plus the embedding on the
    /// first stage or the LM head on the last (both with one stage; a tied head is a second
    /// copy when the stages differ).
    fn params_per_rank(&self, d: &Degrees) -> (f64, f64) {
        let model = self.model;
        let p = model.params();
        let layers = model.layers.div_ceil(d.pp) as f64;
        let embedding = (p.embedding + p.positions) as f64;
        let head = (model.vocab * model.hidden) as f64 + p.final_norm as f64;
        let ends = if d.pp == 1 {
            embedding + p.lm_head as f64 + p.final_norm as f64
        } else {
            embedding.max(head)
        };
        let tp = d.tp as f64;
        (
            (layers * self.dense_per_layer + ends) / tp,
            layers * self.expert_per_layer / (tp * d.ep as f64),
        )
    }

    /// (gradient, weight, fp32 master-or-state) bytes per parameter.
    fn bytes_per_param(&self) -> (f64, f64, f64) {
        match self.cfg.precision {
            Precision::Bf16
            | Precision::Fp8
            | Precision::Mxfp8
            | Precision::Mxfp4
            | Precision::Nvfp4 => (2.0, 2.0, 4.0),
            Precision::AmpBf16 => (4.0, 4.0, 4.0),
        }
    }

    /// Whether plan `d` keeps its layer inputs on the host.
    fn offloads(&self, d: &Degrees) -> bool {
        self.cfg.offload_layer_inputs && d.recompute == Recompute::Full
    }

    /// Optimizer-state bytes per parameter: Adam m and v (fp32, or bf16 when asked), plus
    /// the fp32 master copy when weights are kept in bf16.
    fn optimizer_state_bytes(&self) -> f64 {
        let moments = match self.cfg.moments {
            Moments::Fp32 => 0.0,
            Moments::Bf16 => 4.0,
        };
        -moments
            + match self.cfg.precision {
                Precision::Bf16
                | Precision::Fp8
                | Precision::Mxfp8
                | Precision::Mxfp4
                | Precision::Nvfp4 => 12.0,
                Precision::AmpBf16 => 8.0,
            }
    }

    fn notes(&self, d: &Degrees) -> Vec<String> {
        let mut notes: Vec<String> = crate::what_if_note(self.chip).into_iter().collect();
        let fused = self.framework == Framework::Fused;
        let topo = &self.topology;
        let (dp_stride, pp_stride) = self.strides(d);
        let mib = 1024.0 * 1024.0;
        if d.tp > 1 {
            let bytes = (self.cfg.seq * d.mb / d.cp * self.model.hidden * ACT_BYTES) as f64;
            let algo =
                topo.describe(CollectiveKind::AllGather, bytes, Group { size: d.tp, stride: 1 });
            notes.push(format!(
                "TP (sequence parallel) all-gathers/reduce-scatters of {:.1} MiB: {algo}; {}",
                bytes / mib,
                if fused {
                    "overlapped with the layer's GEMMs, the excess exposed"
                } else {
                    "on the critical path (eager)"
                }
            ));
        }
        if d.cp > 1 {
            notes.push(format!(
                "CP: ring attention over {} ranks, K/V blocks sent to the next rank while the current block computes",
                d.cp
            ));
        }
        if d.ep > 1 {
            let algo = topo.describe(
                CollectiveKind::AllToAll,
                1e6,
                Group { size: d.ep, stride: dp_stride },
            );
            let load = self.model.busiest_rank_load(self.layer_batch(d));
            let overlap = if self.ep_overlaps(self.cfg.global_batch / (d.dp * d.mb)) {
                "overlapped with another micro-batch's compute (DualPipe / 1F1B all-to-all overlap), the overlapped compute slowed by the communication kernels' SMs"
            } else {
                "on the critical path"
            };
            notes.push(format!("EP: dispatch and combine all-to-alls over {} ranks ({algo}), {overlap}; the busiest rank gets {load:.3}× the mean routed tokens (sampling spread of the router times moe.routing_skew)", d.ep));
        }
        if d.pp > 1 {
            let kind = if d.vpp > 1 {
                format!("interleaved 1F1B with {} virtual stages", d.vpp)
            } else {
                "1F1B".into()
            };
            let algo = topo.describe(
                CollectiveKind::SendRecv,
                1e6,
                Group { size: d.pp, stride: pp_stride },
            );
            notes.push(format!(
                "PP: {kind}, bubble = (pp-1)/vpp micro-batch times; stage sends ({algo}) {}",
                if fused { "overlapped with compute" } else { "on the critical path" }
            ));
        }
        if d.dp * d.cp > 1 {
            let (dense, _) = self.params_per_rank(d);
            let bytes = dense * self.bytes_per_param().0;
            let algo = topo.describe(
                CollectiveKind::ReduceScatter,
                bytes / d.cp as f64,
                Group { size: d.dp, stride: dp_stride },
            );
            notes.push(format!(
                "DP: {:.0} MiB of gradients per rank, reduce-scatter {algo}; {}",
                bytes / mib,
                match d.zero {
                    0 => "all-reduce overlapped with the last micro-batch's backward",
                    1 | 2 => "reduce-scatter overlapped with the last backward, weight all-gather with the first forward",
                    _ => "ZeRO-3 weight all-gathers and gradient reduce-scatters every micro-batch, prefetched behind compute",
                }
            ));
        }
        if self.offloads(d) {
            let lc = self.layer_costs(d.tp, d.cp, d.ep, d.mb);
            let bytes = lc.act_bytes[recompute_index(Recompute::Full)];
            notes.push(format!(
                "offload: each layer's input ({:.0} MiB per micro-batch) kept in host memory, two in HBM; {:.1} ms each way at host.offload_bytes_per_s ({:.0} GB/s) against a {:.1} ms layer forward, the excess stalls",
                bytes / mib,
                bytes / OFFLOAD_BYTES_PER_S.value * 1e3,
                OFFLOAD_BYTES_PER_S.value / 1e9,
                lc.layer_fwd * 1e3
            ));
        }
        if self.cfg.moments == Moments::Bf16 {
            notes.push("Adam moments in bf16 (4 bytes per parameter instead of 8)".into());
        }
        if d.zero > self.max_zero() {
            notes.push(format!(
                "ZeRO-{}: a what-if; NeuronX Distributed shards optimizer states only (ZeRO-1), so the search stops there",
                d.zero
            ));
        }
        if self.chip.family == Family::Neuron {
            notes.push(match self.cfg.neuron_costs {
                NeuronCosts::Tables => "NeuronCore op costs from the simulator's tables (tables/CHIP.csv), attention forward and backward from the simulated flash kernels".into(),
                NeuronCosts::Roofline => "NeuronCore op costs from a roofline on TensorE peak and HBM bandwidth".into(),
                NeuronCosts::LayerPrograms => "NeuronCore layer forward and backward passes from the decoder-layer programs of the library kernels simulated on the chip's NeuronCore (dense Llama-style layers without CP or EP; the others from the tables)".into(),
            });
        }
        notes
    }
}

/// Name of a precision as the command line spells it.
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Bf16 => "bf16",
        Precision::AmpBf16 => "amp-bf16",
        Precision::Fp8 => "fp8",
        Precision::Mxfp8 => "mxfp8",
        Precision::Mxfp4 => "mxfp4",
        Precision::Nvfp4 => "nvfp4",
    }
}

/// Name of a recompute policy as the command line spells it.
pub fn recompute_name(r: Recompute) -> &'static str {
    match r {
        Recompute::None => "none",
        Recompute::Selective => "selective",
        Recompute::Full => "full",
    }
}
