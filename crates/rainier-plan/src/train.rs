//! One training step of a model on a cluster under a parallel plan.

use rainier_hw::{Chip, Family, Framework};
use rainier_model::{Batch, LayerOps, Model, OpKind, Pass, Recompute, ACT_BYTES};
use rainier_perf::{
    Collective, CollectiveKind, CostModel, Fabric, NeuronCosts, PerfError, Precision,
};
use serde::Serialize;

/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

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
    pub precision: Precision,
    pub recompute: Recompute,
    /// ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters, sharded over DP.
    pub zero: u8,
    /// `None`: the chip's usual stack.
    pub framework: Option<Framework>,
    /// Trainium logical NeuronCore size (1 or 2; trn2/trn3 default 2). Ignored elsewhere.
    pub lnc: Option<u32>,
    pub neuron_costs: NeuronCosts,
    /// In-step kernel efficiency (`None`: the calibrated `step.kernel_efficiency`).
    pub step_efficiency: Option<f64>,
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
            precision: Precision::Bf16,
            recompute: Recompute::Selective,
            zero: 1,
            framework: None,
            lnc: None,
            neuron_costs: NeuronCosts::Tables,
            step_efficiency: None,
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
    #[error("tp × pp × dp = {tp} × {pp} × {dp} = {product}, but {chips} × {chip} has {ranks} ranks ({per_chip} per chip{unit})")]
    Degrees {
        tp: u64,
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
    #[error("{chip} has no scale-out network: a job spans at most one {node} ({per_node} chips), asked for {chips}")]
    NoScaleOut { chip: String, node: String, per_node: u32, chips: u64 },
    #[error("no valid plan: {0}")]
    NoPlan(String),
    #[error("step efficiency must be in (0, 1], found {0}")]
    StepEfficiency(f64),
    #[error("{0}")]
    Perf(#[from] PerfError),
}

/// The plan evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub tp: u64,
    pub pp: u64,
    pub dp: u64,
    pub micro_batch: u64,
    /// Micro-batches per pipeline per step (gradient accumulation steps).
    pub micro_batches: u64,
    pub ranks: u64,
    pub ranks_per_chip: u32,
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Where the step's time goes, seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    /// Forward and backward compute of all micro-batches on the slowest stage, recompute
    /// included, outside the bubble.
    pub compute: f64,
    /// Every collective and transfer, overlapped or not.
    pub communication: f64,
    /// The part of `communication` on the critical path.
    pub exposed_communication: f64,
    /// 1F1B pipeline fill and drain.
    pub pipeline_bubble: f64,
    pub optimizer: f64,
}

/// The prediction for one plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    pub model: String,
    pub chip: String,
    pub chips: u64,
    pub seq: u64,
    pub global_batch: u64,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    pub tokens_per_s_per_chip: f64,
    pub model_tflops_per_chip: f64,
    pub mfu: f64,
    pub memory_gib_per_device: Memory,
    pub fits: bool,
    pub breakdown_s: Breakdown,
    pub plan: Plan,
    /// What overlaps with what, and what was assumed.
    pub notes: Vec<String>,
}

/// Ranks per chip: NeuronCores at the logical-core size on Trainium, else 1.
pub fn ranks_per_chip(chip: &Chip, lnc: Option<u32>) -> Result<u32, PlanError> {
    if chip.family != Family::Neuron {
        return Ok(1);
    }
    // Trn1/Inf2 (NeuronCore-v2) have no LNC setting: each core is a rank.
    let default = if chip.cores_per_chip >= 8 { 2 } else { 1 };
    let lnc = lnc.unwrap_or(default);
    if lnc != 1 && lnc != 2 {
        return Err(PlanError::Lnc(lnc));
    }
    Ok((chip.cores_per_chip / if chip.cores_per_chip >= 8 { lnc } else { 1 }).max(1))
}

fn rank_unit(chip: &Chip, per_chip: u32) -> String {
    match chip.family {
        Family::Gpu => "GPU".into(),
        Family::Tpu => "TPU chip".into(),
        Family::Neuron if chip.cores_per_chip >= 8 => {
            format!("NeuronCore (LNC={})", chip.cores_per_chip / per_chip)
        }
        Family::Neuron => "NeuronCore".into(),
    }
}

/// Evaluates `cfg` (choosing what it leaves open) for `model` on `chip`.
pub fn evaluate(model: &Model, chip: &Chip, cfg: &TrainConfig) -> Result<TrainReport, PlanError> {
    check_sizes(model, chip, cfg)?;
    let per_chip = ranks_per_chip(chip, cfg.lnc)?;
    let ranks = cfg.chips * u64::from(per_chip);
    let framework = cfg.framework.unwrap_or(chip.default_framework);
    let mut cost = CostModel::new(chip, per_chip, cfg.precision, framework, cfg.neuron_costs)?;
    if let Some(eta) = cfg.step_efficiency {
        if !(eta > 0.0 && eta <= 1.0) {
            return Err(PlanError::StepEfficiency(eta));
        }
        cost = cost.with_step_efficiency(eta);
    }
    let ctx = Context { model, chip, cfg, per_chip, ranks, framework, cost: &cost };
    match (cfg.tp, cfg.pp, cfg.dp) {
        (Some(tp), Some(pp), Some(dp)) => {
            ctx.evaluate_plan(tp, pp, dp, cfg.micro_batch.unwrap_or(1), false)
        }
        _ => ctx.choose(),
    }
}

fn check_sizes(model: &Model, chip: &Chip, cfg: &TrainConfig) -> Result<(), PlanError> {
    const LIMIT: u64 = 1 << 32;
    for (name, value) in
        [("chips", cfg.chips), ("seq", cfg.seq), ("global-batch", cfg.global_batch)]
    {
        if value == 0 {
            return Err(PlanError::NotPositive { name, value });
        }
        if value > LIMIT {
            return Err(PlanError::TooLarge { name, value, limit: LIMIT });
        }
    }
    for (name, value) in
        [("micro-batch", cfg.micro_batch), ("tp", cfg.tp), ("pp", cfg.pp), ("dp", cfg.dp)]
    {
        match value {
            Some(0) => return Err(PlanError::NotPositive { name, value: 0 }),
            Some(v) if v > LIMIT => {
                return Err(PlanError::TooLarge { name, value: v, limit: LIMIT })
            }
            _ => {}
        }
    }
    if cfg.seq > model.max_positions {
        return Err(PlanError::SeqTooLong { seq: cfg.seq, max: model.max_positions });
    }
    if cfg.zero > 3 {
        return Err(PlanError::Zero(cfg.zero));
    }
    if chip.node.scale_out_bits_per_s.value <= 0.0 && cfg.chips > u64::from(chip.node.chips) {
        return Err(PlanError::NoScaleOut {
            chip: chip.name.clone(),
            node: chip.node.name.clone(),
            per_node: chip.node.chips,
            chips: cfg.chips,
        });
    }
    Ok(())
}

struct Context<'a> {
    model: &'a Model,
    chip: &'a Chip,
    cfg: &'a TrainConfig,
    per_chip: u32,
    ranks: u64,
    framework: Framework,
    cost: &'a CostModel,
}

/// Per-micro-batch times of one pipeline stage, seconds.
struct StageTimes {
    forward: f64,
    backward: f64,
    /// Tensor-parallel collectives (forward + backward), and the part not hidden behind
    /// the layer's GEMMs.
    tp_comm: f64,
    tp_exposed: f64,
    recompute: f64,
}

impl Context<'_> {
    fn degrees_error(&self, tp: u64, pp: u64, dp: u64) -> PlanError {
        PlanError::Degrees {
            tp,
            pp,
            dp,
            product: u128::from(tp) * u128::from(pp) * u128::from(dp),
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

    fn ranks_per_node(&self) -> u64 {
        u64::from(self.chip.node.scale_up_domain_chips) * u64::from(self.per_chip)
    }

    /// Tries the plans a practitioner would: TP inside one node or instance (8 GPUs, a
    /// 16-chip Trainium instance, a TPU host) dividing the heads, PP dividing the layers, DP
    /// the rest; micro-batches 1, 2, 4. Keeps the fastest that fits, or the smallest if none
    /// fits.
    fn choose(&self) -> Result<TrainReport, PlanError> {
        let mut best: Option<TrainReport> = None;
        let mut last_error = None;
        let powers = |limit: u64| (0..20).map(|i| 1u64 << i).take_while(move |v| *v <= limit);
        let tps: Vec<u64> = match self.cfg.tp {
            Some(tp) => vec![tp],
            None => {
                let node = u64::from(self.chip.node.chips) * u64::from(self.per_chip);
                powers(node.min(self.ranks_per_node()).min(self.ranks))
                    .filter(|tp| self.model.heads % tp == 0)
                    .collect()
            }
        };
        let pps: Vec<u64> = match self.cfg.pp {
            Some(pp) => vec![pp],
            None => powers(self.model.layers).filter(|pp| self.model.layers % pp == 0).collect(),
        };
        let mbs: Vec<u64> = match self.cfg.micro_batch {
            Some(mb) => vec![mb],
            None => vec![1, 2, 4],
        };
        for &tp in &tps {
            for &pp in &pps {
                let Some(dp) = tp
                    .checked_mul(pp)
                    .and_then(|tp_pp| self.ranks.checked_div(tp_pp))
                    .filter(|dp| dp * tp * pp == self.ranks)
                else {
                    continue;
                };
                if self.cfg.dp.is_some_and(|d| d != dp) {
                    continue;
                }
                for &mb in &mbs {
                    match self.evaluate_plan(tp, pp, dp, mb, true) {
                        Ok(report) => {
                            let better = match &best {
                                None => true,
                                Some(b) => match (report.fits, b.fits) {
                                    (true, false) => true,
                                    (false, true) => false,
                                    (true, true) => report.step_time_s < b.step_time_s,
                                    (false, false) => {
                                        report.memory_gib_per_device.total
                                            < b.memory_gib_per_device.total
                                    }
                                },
                            };
                            if better {
                                best = Some(report);
                            }
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
            }
        }
        best.ok_or_else(|| match last_error {
            Some(e) => PlanError::NoPlan(e.to_string()),
            None => PlanError::NoPlan(format!(
                "no tp × pp × dp over {} ranks matches the given degrees and divides the model",
                self.ranks
            )),
        })
    }

    fn evaluate_plan(
        &self,
        tp: u64,
        pp: u64,
        dp: u64,
        mb: u64,
        chosen: bool,
    ) -> Result<TrainReport, PlanError> {
        let (model, cfg, chip) = (self.model, self.cfg, self.chip);
        if u128::from(tp) * u128::from(pp) * u128::from(dp) != u128::from(self.ranks) {
            return Err(self.degrees_error(tp, pp, dp));
        }
        if model.heads % tp != 0 {
            return Err(PlanError::NotDivisible {
                what: format!("tp {tp}"),
                total: model.heads,
                of: "the attention heads",
            });
        }
        if pp > model.layers {
            return Err(PlanError::TooManyStages { pp, layers: model.layers });
        }
        let per_step = dp.saturating_mul(mb);
        if cfg.global_batch % per_step != 0 {
            return Err(PlanError::NotDivisible {
                what: format!("dp × micro-batch = {dp} × {mb}"),
                total: cfg.global_batch,
                of: "the global batch",
            });
        }
        // Keeps tokens × widths × bytes inside u64 (widths are below 2^24).
        const MAX_TOKENS: u64 = 1 << 32;
        if mb.saturating_mul(cfg.seq) > MAX_TOKENS {
            return Err(PlanError::TooLarge {
                name: "micro-batch × --seq",
                value: mb.saturating_mul(cfg.seq),
                limit: MAX_TOKENS,
            });
        }
        let micro_batches = cfg.global_batch / per_step;
        let batch = Batch { sequences: mb, seq: cfg.seq, tp };
        let layers_per_stage = model.layers.div_ceil(pp);

        // --- Compute per micro-batch on the slowest (last) stage.
        let layer = model.layer_ops(batch);
        let head = model.head_ops(batch);
        let embedding = model.embedding_ops(batch);
        let stage = self.stage_times(&layer, &head, &embedding, layers_per_stage, pp, batch);

        // --- Pipeline (1F1B): m micro-batches plus (pp − 1) of fill and drain.
        let per_mb = stage.forward + stage.backward + stage.recompute + stage.tp_exposed;
        let pp_send = self.pp_send_seconds(tp, pp, batch);
        let compute = micro_batches as f64 * (stage.forward + stage.backward + stage.recompute);
        let bubble = (pp - 1) as f64 * per_mb;
        // Stage-to-stage sends: overlapped with compute by fused stacks (Megatron's
        // overlap_p2p_comm), on the critical path in eager.
        let pp_total = if pp > 1 { 2.0 * (micro_batches + pp - 1) as f64 * pp_send } else { 0.0 };
        let pp_exposed = match self.framework {
            Framework::Eager => pp_total,
            Framework::Fused => 0.0,
        };

        // --- Data parallel: gradient reduction (and parameter gathering) per step.
        let params = self.params_per_rank(tp, pp);
        let (grad_bytes, weight_bytes, master_bytes) = self.bytes_per_param();
        let (dp_comm, dp_exposed) =
            self.dp_seconds(tp, dp, params, grad_bytes, weight_bytes, &stage, micro_batches);
        let shard = |stage_min: u8| if cfg.zero >= stage_min { dp as f64 } else { 1.0 };

        // --- Optimizer: AdamW over this rank's shard, read + write of master, m, v, and the
        // gradient read and the weight write.
        let opt_params = params / shard(1);
        let optimizer =
            self.cost.optimizer_seconds(opt_params, 2.0 * master_bytes + grad_bytes + weight_bytes);

        let tp_comm_total = micro_batches as f64 * stage.tp_comm;
        let tp_exposed = micro_batches as f64 * stage.tp_exposed;
        let step = compute + tp_exposed + bubble + pp_exposed + dp_exposed + optimizer;
        let tokens = (cfg.global_batch * cfg.seq) as f64;
        let tokens_per_s = tokens / step;
        let per_chip = tokens_per_s / cfg.chips as f64;
        let model_flops = model.model_flops_per_token(cfg.seq);
        let model_tflops_per_chip = per_chip * model_flops / 1e12;
        let peak_chip = self.cost.peak_flops() * f64::from(self.per_chip);

        // --- Memory per rank.
        let weights = params * weight_bytes / shard(3);
        let grads = params * grad_bytes / shard(2);
        let optimizer_states = params * self.optimizer_state_bytes() / shard(1);
        let in_flight = pp.min(micro_batches) as f64;
        let activations = (model.activation_bytes_per_layer(batch, cfg.recompute)
            * layers_per_stage as f64
            + (batch.tokens().div_ceil(tp) * model.hidden * ACT_BYTES) as f64)
            * in_flight;
        // Logits (bf16) and their fp32 softmax/gradient on the last stage.
        let logits = (batch.tokens() * model.vocab.div_ceil(tp)) as f64 * (2.0 + 4.0);
        // amp-bf16 casts fp32 weights to bf16 copies each forward; fp8 keeps fp8 copies.
        let copies = match cfg.precision {
            Precision::AmpBf16 => params * 2.0 / shard(3),
            Precision::Fp8 => params / shard(3),
            Precision::Bf16 => 0.0,
        };
        let reserve = rainier_perf::framework_reserve_gib(chip.family) * GIB;
        let other = logits + copies + reserve;
        let total = weights + grads + optimizer_states + activations + other;
        let capacity = chip.hbm_bytes() / f64::from(self.per_chip);

        let communication = tp_comm_total + dp_comm + pp_total;
        let exposed = tp_exposed + pp_exposed + dp_exposed;
        Ok(TrainReport {
            model: model.name.clone(),
            chip: chip.name.clone(),
            chips: cfg.chips,
            seq: cfg.seq,
            global_batch: cfg.global_batch,
            step_time_s: step,
            tokens_per_s,
            tokens_per_s_per_chip: per_chip,
            model_tflops_per_chip,
            mfu: model_tflops_per_chip * 1e12 / peak_chip,
            memory_gib_per_device: Memory {
                params: weights / GIB,
                grads: grads / GIB,
                optimizer: optimizer_states / GIB,
                activations: activations / GIB,
                other: other / GIB,
                total: total / GIB,
                capacity: capacity / GIB,
            },
            fits: total <= capacity,
            breakdown_s: Breakdown {
                compute,
                communication,
                exposed_communication: exposed,
                pipeline_bubble: bubble,
                optimizer,
            },
            plan: Plan {
                tp,
                pp,
                dp,
                micro_batch: mb,
                micro_batches,
                ranks: self.ranks,
                ranks_per_chip: self.per_chip,
                rank_unit: rank_unit(chip, self.per_chip),
                precision: precision_name(cfg.precision).into(),
                recompute: recompute_name(cfg.recompute).into(),
                zero: cfg.zero,
                framework: match self.framework {
                    Framework::Eager => "eager".into(),
                    Framework::Fused => "fused".into(),
                },
                chosen,
            },
            notes: self.notes(tp, pp, dp),
        })
    }

    fn stage_times(
        &self,
        layer: &LayerOps,
        head: &LayerOps,
        embedding: &LayerOps,
        layers_per_stage: u64,
        pp: u64,
        batch: Batch,
    ) -> StageTimes {
        let cost = self.cost;
        let time =
            |ops: &[rainier_model::Op]| ops.iter().map(|op| cost.op_seconds(op)).sum::<f64>();
        let n = layers_per_stage as f64;
        // The last stage carries the head; with one stage the embedding too.
        let ends_fwd = time(&head.forward) + if pp == 1 { time(&embedding.forward) } else { 0.0 };
        let ends_bwd = time(&head.backward) + if pp == 1 { time(&embedding.backward) } else { 0.0 };
        // One pass over the layer: forward and backward time, the GEMMs TP communication can
        // hide behind (the router's tiny product excluded), the activation selective recompute
        // re-runs.
        let (mut layer_fwd, mut layer_bwd, mut tp_gemms, mut activation) = (0.0, 0.0, 0.0, 0.0);
        for op in layer.forward.iter().chain(&layer.backward) {
            let t = cost.op_seconds(op);
            match op.pass {
                Pass::Forward => layer_fwd += t,
                Pass::Backward => layer_bwd += t,
            }
            if matches!(op.kind, OpKind::Gemm { .. }) && op.name != "router" {
                tp_gemms += t;
            }
            if op.pass == Pass::Forward && op.name.ends_with("_act") {
                activation += t;
            }
        }
        let recompute_per_layer = match self.cfg.recompute {
            Recompute::None => 0.0,
            Recompute::Selective => activation,
            Recompute::Full => layer_fwd,
        };
        // Sequence parallelism: per layer, forward all-gathers before the attention and the
        // MLP and reduce-scatters after them; backward the same again (and the forward's once
        // more under full recompute).
        let tp = batch.tp;
        let tp_comm = if tp > 1 {
            let bytes = (batch.tokens() * self.model.hidden * ACT_BYTES) as f64;
            let fabric = self.fabric_for_group(tp, 1);
            let ag =
                Collective { kind: CollectiveKind::AllGather, bytes, ranks: tp }.seconds(&fabric);
            let rs = Collective { kind: CollectiveKind::ReduceScatter, bytes, ranks: tp }
                .seconds(&fabric);
            let passes = if self.cfg.recompute == Recompute::Full { 3.0 } else { 2.0 };
            passes * (2.0 * ag + 2.0 * rs) * n
        } else {
            0.0
        };
        // Fused stacks overlap the sequence-parallel collectives with the GEMMs they feed
        // (Transformer Engine userbuffers, NxD, XLA collective matmul); eager runs them in turn.
        let tp_exposed = match self.framework {
            Framework::Eager => tp_comm,
            Framework::Fused => (tp_comm - n * tp_gemms).max(0.0),
        };
        StageTimes {
            forward: n * layer_fwd + ends_fwd,
            backward: n * layer_bwd + ends_bwd,
            tp_comm,
            tp_exposed,
            recompute: n * recompute_per_layer,
        }
    }

    /// The fabric a group of `size` ranks, `stride` apart in rank order, communicates over:
    /// scale-up when it fits in one scale-up domain, else the scale-out network.
    fn fabric_for_group(&self, size: u64, stride: u64) -> Fabric {
        if size * stride <= self.ranks_per_node() {
            Fabric::scale_up(self.chip, self.per_chip)
        } else {
            Fabric::scale_out(self.chip, self.per_chip)
        }
    }

    /// One activation transfer between adjacent stages (rank order is tp, dp, pp: stages are
    /// `tp × dp` ranks apart).
    fn pp_send_seconds(&self, tp: u64, pp: u64, batch: Batch) -> f64 {
        if pp <= 1 {
            return 0.0;
        }
        let dp = self.ranks / (tp * pp);
        let bytes = (batch.tokens() * self.model.hidden * ACT_BYTES) as f64 / tp as f64;
        let fabric = self.fabric_for_group(2, tp * dp);
        Collective { kind: CollectiveKind::SendRecv, bytes, ranks: 2 }.seconds(&fabric)
    }

    /// Gradient reduction (and, with ZeRO, parameter gathering) per step: total seconds and
    /// the part not hidden behind compute. Hierarchical: reduce-scatter inside the scale-up
    /// domain, all-reduce of the `1/g` shard across domains, all-gather inside again.
    #[allow(clippy::too_many_arguments)]
    fn dp_seconds(
        &self,
        tp: u64,
        dp: u64,
        params: f64,
        grad_bytes: f64,
        weight_bytes: f64,
        stage: &StageTimes,
        micro_batches: u64,
    ) -> (f64, f64) {
        if dp <= 1 {
            return (0.0, 0.0);
        }
        let per_node = (self.ranks_per_node() / tp).clamp(1, dp);
        let nodes = dp.div_ceil(per_node);
        let up = Fabric::scale_up(self.chip, self.per_chip);
        let out = Fabric::scale_out(self.chip, self.per_chip);
        let on =
            |kind, bytes, ranks, fabric: &Fabric| Collective { kind, bytes, ranks }.seconds(fabric);
        let collective = |kind: CollectiveKind, bytes: f64| -> f64 {
            if nodes <= 1 {
                return on(kind, bytes, per_node, &up);
            }
            // Inside the domain (an all-reduce splits into a reduce-scatter before and an
            // all-gather after), and the 1/g shard of each rank across domains.
            let inside = match kind {
                CollectiveKind::AllReduce => {
                    on(CollectiveKind::ReduceScatter, bytes, per_node, &up)
                        + on(CollectiveKind::AllGather, bytes, per_node, &up)
                }
                _ => on(kind, bytes, per_node, &up),
            };
            inside + on(kind, bytes / per_node as f64, nodes, &out)
        };
        let grads = params * grad_bytes;
        let weights = params * weight_bytes;
        match self.cfg.zero {
            0 => {
                // DDP / Megatron: all-reduce in buckets during the last micro-batch's backward.
                let t = collective(CollectiveKind::AllReduce, grads);
                (t, (t - stage.backward).max(0.0))
            }
            1 | 2 => {
                // Distributed optimizer: reduce-scatter during the last backward, all-gather
                // of updated weights during the next step's first forward.
                let rs = collective(CollectiveKind::ReduceScatter, grads);
                let ag = collective(CollectiveKind::AllGather, weights);
                (rs + ag, (rs - stage.backward).max(0.0) + (ag - stage.forward).max(0.0))
            }
            _ => {
                // ZeRO-3 / FSDP: weights gathered for forward and again for backward, gradients
                // reduce-scattered, every micro-batch, prefetched behind compute.
                let ag = collective(CollectiveKind::AllGather, weights);
                let rs = collective(CollectiveKind::ReduceScatter, grads);
                let m = micro_batches as f64;
                let exposed = (ag - stage.forward).max(0.0)
                    + (ag + rs - stage.backward - stage.recompute).max(0.0);
                (m * (2.0 * ag + rs), m * exposed)
            }
        }
    }

    /// Parameters held by the most loaded rank before ZeRO sharding: its stage's layers over
    /// TP, plus the embedding on the first stage or the LM head on the last (both with one
    /// stage; a tied head is a second copy when the stages differ).
    fn params_per_rank(&self, tp: u64, pp: u64) -> f64 {
        let model = self.model;
        let p = model.params();
        let layers = model.layers.div_ceil(pp) as f64 * p.per_layer as f64;
        let embedding = (p.embedding + p.positions) as f64;
        let head = (model.vocab * model.hidden) as f64 + p.final_norm as f64;
        let ends = if pp == 1 {
            embedding + p.lm_head as f64 + p.final_norm as f64
        } else {
            embedding.max(head)
        };
        (layers + ends) / tp as f64
    }

    /// (gradient, weight, fp32 master-or-state) bytes per parameter.
    fn bytes_per_param(&self) -> (f64, f64, f64) {
        match self.cfg.precision {
            Precision::Bf16 | Precision::Fp8 => (2.0, 2.0, 4.0),
            Precision::AmpBf16 => (4.0, 4.0, 4.0),
        }
    }

    /// Optimizer-state bytes per parameter: Adam m and v in fp32, plus the fp32 master copy
    /// when weights are kept in bf16.
    fn optimizer_state_bytes(&self) -> f64 {
        match self.cfg.precision {
            Precision::Bf16 | Precision::Fp8 => 12.0,
            Precision::AmpBf16 => 8.0,
        }
    }

    fn notes(&self, tp: u64, pp: u64, dp: u64) -> Vec<String> {
        let mut notes = Vec::new();
        let fused = self.framework == Framework::Fused;
        if tp > 1 {
            notes.push(if fused {
                "TP (sequence parallel) all-gathers and reduce-scatters overlapped with the layer's GEMMs; the excess is exposed".to_string()
            } else {
                "TP (sequence parallel) all-gathers and reduce-scatters on the critical path (eager: no overlap)".to_string()
            });
        }
        if pp > 1 {
            notes.push(if fused {
                "PP: 1F1B, bubble = (pp-1) micro-batch times; stage sends overlapped with compute"
                    .to_string()
            } else {
                "PP: 1F1B, bubble = (pp-1) micro-batch times; stage sends on the critical path"
                    .to_string()
            });
        }
        if dp > 1 {
            notes.push(match self.cfg.zero {
                0 => "DP: gradient all-reduce overlapped with the last micro-batch's backward".into(),
                1 | 2 => "DP: gradient reduce-scatter overlapped with the last backward, weight all-gather with the first forward".into(),
                _ => "DP: ZeRO-3 weight all-gathers and gradient reduce-scatters every micro-batch, prefetched behind its forward and backward".into(),
            });
        }
        if self.chip.family == Family::Neuron {
            notes.push(match self.cfg.neuron_costs {
                NeuronCosts::Tables => "NeuronCore op costs from the simulator's tables (tables/CHIP.csv); attention backward at the forward kernel's rate".into(),
                NeuronCosts::Roofline => "NeuronCore op costs from a roofline on TensorE peak and HBM bandwidth".into(),
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
