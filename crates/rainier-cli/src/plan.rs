//! `rainier train`, `rainier chips` and `rainier validate`: the training planner's commands.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use rainier_hw::{Catalog, Framework};
use rainier_model::{Model, Recompute};
use rainier_perf::{Datacenter, NeuronCosts, Precision, ASSUMPTIONS};
use rainier_plan::{
    evaluate, search, EconomicsConfig, Placement, PlanSummary, Pricing, SearchOptions,
    SearchReport, TrainConfig, TrainReport, ECONOMICS_ASSUMPTIONS, VALIDATION_MEDIAN_LIMIT,
};

use crate::out;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PlacementArg {
    /// Data-parallel peers near, pipeline stages far (Megatron's default order).
    TpCpDpPp,
    /// Pipeline neighbours near, data-parallel peers far.
    TpCpPpDp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PricingArg {
    /// On-demand rates; chips sold by capacity block only (Trn2, GB200) at that rate / 0.83
    /// (AWS's capacity-block/on-demand ratio on p5, p5en, p6-b200), marked derived.
    OnDemand,
    /// Capacity-block rates; chips sold on demand only at that rate × 0.83, marked derived.
    CapacityBlock,
    /// The best published committed rate (reserved instance, committed use, capacity block:
    /// mixed terms).
    Committed,
}

/// Money, energy and failures.
#[derive(Debug, Args)]
pub(crate) struct EconomicsArgs {
    /// Which catalog price to use.
    #[arg(long, value_enum, default_value = "on-demand")]
    pricing: PricingArg,
    /// Price per chip-hour, overriding the catalog.
    #[arg(long, value_name = "USD")]
    usd_per_chip_hour: Option<f64>,
    /// Datacenter PUE (default: the provider's, from the catalog: AWS 1.14, Google 1.09).
    #[arg(long)]
    pue: Option<f64>,
    /// Mean time between failures per chip, hours (default 50,700: the Llama 3 report's
    /// interruption rate on 16,384 H100s).
    #[arg(long, value_name = "HOURS")]
    mtbf_chip_hours: Option<f64>,
    /// Aggregate checkpoint storage bandwidth, GB/s (default: 2 TB/s per 16,384 chips, Llama 3).
    #[arg(long, value_name = "GB/S")]
    checkpoint_gb_per_s: Option<f64>,
    /// Restart overhead after a failure before the restore, seconds (default 600).
    #[arg(long, value_name = "S")]
    restart_s: Option<f64>,
    /// How a failure is recovered: the whole job restarts from its checkpoint, or a hot
    /// spare replaces the failed data-parallel replica while the others train on; auto
    /// restarts unless restarts would cost over 10 % of the time.
    #[arg(long, value_enum, default_value = "auto")]
    recovery: RecoveryArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RecoveryArg {
    Auto,
    Restart,
    Replica,
}

impl EconomicsArgs {
    pub(crate) fn config(&self, tokens: Option<f64>) -> EconomicsConfig {
        EconomicsConfig {
            pricing: match self.pricing {
                PricingArg::OnDemand => Pricing::OnDemand,
                PricingArg::CapacityBlock => Pricing::CapacityBlock,
                PricingArg::Committed => Pricing::Committed,
            },
            usd_per_chip_hour: self.usd_per_chip_hour,
            pue: self.pue,
            tokens,
            mtbf_chip_hours: self.mtbf_chip_hours,
            checkpoint_bytes_per_s: self.checkpoint_gb_per_s.map(|g| g * 1e9),
            restart_s: self.restart_s,
            recovery: match self.recovery {
                RecoveryArg::Auto => rainier_plan::Recovery::Auto,
                RecoveryArg::Restart => rainier_plan::Recovery::Restart,
                RecoveryArg::Replica => rainier_plan::Recovery::Replica,
            },
        }
    }
}

/// The datacenter above the scale-out fat tree.
#[derive(Debug, Args)]
pub(crate) struct DatacenterArgs {
    /// Chips under one non-blocking fat tree (a building) [default: 65536].
    #[arg(long)]
    building_chips: Option<u64>,
    /// Oversubscription of the links between buildings [default: 4].
    #[arg(long)]
    building_oversubscription: Option<f64>,
    /// Chips on one site (campus) [default: 1048576].
    #[arg(long)]
    site_chips: Option<u64>,
    /// Oversubscription of the links between sites [default: 16].
    #[arg(long)]
    site_oversubscription: Option<f64>,
}

impl DatacenterArgs {
    pub(crate) fn config(&self) -> Datacenter {
        let d = Datacenter::default();
        Datacenter {
            building_chips: self.building_chips.unwrap_or(d.building_chips),
            building_oversubscription: self
                .building_oversubscription
                .unwrap_or(d.building_oversubscription),
            site_chips: self.site_chips.unwrap_or(d.site_chips),
            site_oversubscription: self.site_oversubscription.unwrap_or(d.site_oversubscription),
        }
    }
}

/// Parses a count such as `15T`, `1.5e12`, `300B`, `8M`, `4096`.
pub(crate) fn parse_count(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('B' | 'G') => (&t[..t.len() - 1], 1e9),
        Some('T') => (&t[..t.len() - 1], 1e12),
        _ => (t, 1.0),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a number (examples: 15T, 1.5e12, 300B)"))?;
    let v = v * scale;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("`{s}` must be positive"));
    }
    Ok(v)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// bf16 weights, activations and gradients; fp32 master weights and Adam states (Megatron).
    Bf16,
    /// PyTorch autocast: fp32 parameters and gradients, bf16 compute.
    AmpBf16,
    /// fp8 GEMMs (Transformer Engine style), bf16 elsewhere.
    Fp8,
    /// OCP MXFP8 GEMMs (trn3/trn4: NeuronCore-v4's MX matmul, timed from the simulated MX
    /// gemm), bf16 elsewhere.
    Mxfp8,
    /// OCP MXFP4 GEMMs (trn3/trn4), bf16 elsewhere.
    Mxfp4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RecomputeArg {
    None,
    /// Recompute the MLP activation (flash attention never stores seq²).
    Selective,
    /// Keep only layer inputs; recompute each layer's forward in backward.
    Full,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum MomentsArg {
    /// fp32 Adam moments, 8 bytes per parameter (every stack's default)
    Fp32,
    /// bf16 Adam moments, 4 bytes per parameter (MaxText mu_dtype bfloat16, Megatron's
    /// precision-aware optimizer)
    Bf16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FrameworkArg {
    /// PyTorch eager: one kernel per op, unfused elementwise ops, flash attention.
    Eager,
    /// Megatron-Core + Transformer Engine, NeuronX Distributed, XLA/MaxText.
    Fused,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum NeuronCostsArg {
    /// The simulator's op-cost tables (tables/CHIP.csv).
    Tables,
    /// TensorE peak and HBM bandwidth only.
    Roofline,
    /// The tables, with each dense Llama-style layer's forward and backward passes simulated
    /// as decoder-layer programs of the library kernels (once per shape; seconds each).
    LayerPrograms,
}

/// `rainier train` arguments.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// A preset (`rainier models` lists them: Llama 2/3, Mixtral, GPT-3, Qwen3, DeepSeek-V3,
    /// Llama 4, GPT-OSS), a Hugging Face config.json, or a snapshot directory holding one.
    #[arg(long)]
    model: String,
    /// Chip (see `rainier chips`): trn1 trn2 trn3 inf2 a100 h100 h200 b200 gb200 tpu-v5e
    /// tpu-v5p tpu-v6e tpu-v7.
    #[arg(long)]
    chip: String,
    /// Number of chips.
    #[arg(long)]
    chips: u64,
    /// Tokens per sequence.
    #[arg(long)]
    seq: u64,
    /// Sequences per optimizer step, whole cluster.
    #[arg(long)]
    global_batch: u64,
    /// Sequences per micro-batch (default: chosen, or 1 with explicit degrees).
    #[arg(long)]
    micro_batch: Option<u64>,
    /// Tensor-parallel degree (ranks: NeuronCores on Trainium, chips elsewhere).
    #[arg(long)]
    tp: Option<u64>,
    /// Pipeline-parallel degree.
    #[arg(long)]
    pp: Option<u64>,
    /// Data-parallel degree.
    #[arg(long)]
    dp: Option<u64>,
    /// Context-parallel degree (ring attention; default 1, searched with --search).
    #[arg(long)]
    cp: Option<u64>,
    /// Expert-parallel degree for MoE models (default: the fastest power of two dividing the
    /// experts; searched with --search).
    #[arg(long)]
    ep: Option<u64>,
    /// MoE routing imbalance: the busiest expert-parallel rank's routed tokens over the mean
    /// beyond sampling noise, 1 to 4 (dropless routing) [default: the assumption
    /// moe.routing_skew, 1.1].
    #[arg(long, value_name = "RATIO")]
    moe_skew: Option<f64>,
    /// MoE expert capacity over the mean routed tokens (GShard/Switch-style: tokens beyond
    /// it dropped, experts below it padded, as static-shape stacks run) [default: dropless].
    #[arg(long, value_name = "RATIO")]
    capacity_factor: Option<f64>,
    /// Virtual pipeline stages per rank: interleaved 1F1B (default 1, searched with --search).
    #[arg(long)]
    vpp: Option<u64>,
    /// Order of the parallel dimensions over ranks, innermost first.
    #[arg(long, value_enum)]
    placement: Option<PlacementArg>,
    #[arg(long, value_enum, default_value = "bf16")]
    precision: PrecisionArg,
    /// Activation recompute [default: selective; every policy with --search].
    #[arg(long, value_enum)]
    recompute: Option<RecomputeArg>,
    /// ZeRO stage over data parallel: 0, 1 (optimizer states; Megatron's distributed
    /// optimizer), 2 (+ gradients), 3 (+ parameters; FSDP) [default: 1; with --search every
    /// stage the chip's stack runs: 0-3, 0-1 on Neuron (NeuronX Distributed has ZeRO-1)].
    #[arg(long)]
    zero: Option<u8>,
    /// Search every valid plan (tp, cp, ep, pp, vpp, dp, micro-batch, recompute, ZeRO,
    /// placement; what you fix stays fixed) and print the best by throughput and by cost
    /// and the top plans.
    #[arg(long)]
    search: bool,
    /// Print a plan that does not fit in device memory instead of refusing it (marked
    /// DOES NOT FIT; the exit status is still 0).
    #[arg(long)]
    allow_oversubscribed: bool,
    /// Plans in the --search table.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// A token budget to train (e.g. 15T): adds time to train, cost, energy and goodput.
    #[arg(long, value_parser = parse_count)]
    tokens: Option<f64>,
    #[command(flatten)]
    economics: EconomicsArgs,
    #[command(flatten)]
    datacenter: DatacenterArgs,
    /// Execution style (default: the chip's usual stack).
    #[arg(long, value_enum)]
    framework: Option<FrameworkArg>,
    /// Adam moment format.
    #[arg(long, value_enum, default_value = "fp32")]
    moments: MomentsArg,
    /// Under full recompute, keep each layer's saved input in host memory (MaxText's
    /// decoder-layer-input offload): two layers' inputs stay in HBM, the transfers run over
    /// the host link (host.offload_bytes_per_s, 25 GB/s) behind the layers' compute. With
    /// --search only full-recompute plans are offloaded.
    #[arg(long)]
    offload_layer_inputs: bool,
    /// Print the launch arguments or config that would run the plan (the chosen one with
    /// --search) on this framework, in its own flag names, instead of the report. Settings the
    /// framework has no documented flag for are refused, named.
    #[arg(long, value_enum, value_name = "FRAMEWORK", conflicts_with = "json")]
    emit: Option<crate::emit::EmitFramework>,
    /// Trainium logical NeuronCore size: 2 (default on trn2/trn3: 4 ranks per chip) or 1.
    #[arg(long)]
    lnc: Option<u32>,
    /// Where NeuronCore op costs come from.
    #[arg(long, value_enum, default_value = "tables")]
    neuron_costs: NeuronCostsArg,
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Scenario files (`--scenario`, `--dump-scenario`).
    #[command(flatten)]
    _scenario: crate::scenario::ScenarioArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `rainier chips` arguments.
#[derive(Debug, Args)]
pub(crate) struct ChipsArgs {
    /// Print the whole catalog as JSON (every figure with source and grade).
    #[arg(long)]
    json: bool,
    /// Show every figure of one chip with its source.
    #[arg(long)]
    chip: Option<String>,
    /// Also list the performance model's named assumptions.
    #[arg(long)]
    assumptions: bool,
    #[command(flatten)]
    catalog: CatalogArgs,
}

/// Where the chips come from: the built-in catalog, a file overriding or extending it, and
/// patches on top.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CatalogArgs {
    /// A catalog file (same shape as `rainier chips --json`) whose chips replace or extend
    /// the built-in ones.
    #[arg(long, value_name = "FILE.json")]
    pub(crate) catalog: Option<PathBuf>,
    /// A what-if chip from a catalog chip with named figures changed, each graded what-if in
    /// every report: CHIP:KEY=VALUE[,KEY=VALUE...], the key `as` naming the new chip (without
    /// it the chip itself changes); keys as `rainier chips --chip CHIP` lists them, NeuronCore
    /// parameters as neuron_core.NAME (`rainier arch`). Repeatable; applied in order after
    /// --catalog. Example: --patch trn2:hbm_bytes_per_s=5.8e12,as=trn2-2xbw
    #[arg(long, value_name = "CHIP:KEY=VALUE,...")]
    pub(crate) patch: Vec<String>,
}

pub(crate) fn load_catalog(args: &CatalogArgs) -> Result<Catalog> {
    let mut catalog = Catalog::built_in();
    if let Some(path) = &args.catalog {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        catalog = catalog.with_overrides(&text, &path.display().to_string())?;
    }
    for spec in &args.patch {
        let patch =
            rainier_hw::Patch::parse(spec, "--patch").map_err(|m| anyhow!("--patch: {m}"))?;
        catalog = catalog.with_patch(&patch)?;
    }
    if args.catalog.is_some() || !args.patch.is_empty() {
        prepare_neuron_tables(&catalog)?;
    }
    Ok(catalog)
}

/// Makes the op-cost table of every what-if Neuron chip in `catalog` (one whose NeuronCore
/// parameters differ from every built-in chip's): from the on-disk cache, or by running the
/// kernel sweep on its parameters with a progress bar (seconds per chip).
fn prepare_neuron_tables(catalog: &Catalog) -> Result<()> {
    for chip in catalog.chips.iter().filter(|c| c.family == rainier_hw::Family::Neuron) {
        let params = chip.neuron_params().map_err(|m| anyhow!("chip `{}`: {m}", chip.name))?;
        if params == params.chip.params() {
            continue;
        }
        let bar = crate::progress_bar("timing the kernel sweep for a what-if chip");
        rainier_perf::NeuronTable::for_params(&chip.name, &params, &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
    }
    Ok(())
}

/// A model from a preset name, a config.json file, or a Hugging Face snapshot directory (its
/// `config.json`). A directory without one does not hide the preset of the same name.
pub(crate) fn load_model(name: &str) -> Result<Model> {
    if let Some(text) = crate::cases::model_config(name) {
        return Ok(Model::from_config_json(text?, name)?);
    }
    let path = Path::new(name);
    let config = if path.is_dir() {
        let inner = path.join("config.json");
        if !inner.is_file() {
            return Model::preset(name).map_err(|_| {
                anyhow!("{name} is a directory without a config.json (and not a preset)")
            });
        }
        inner
    } else if name.ends_with(".json") || path.exists() {
        path.to_path_buf()
    } else {
        return Ok(Model::preset(name)?);
    };
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    Ok(Model::from_config_json(&text, &config.display().to_string())?)
}

pub(crate) fn precision(p: PrecisionArg) -> Precision {
    match p {
        PrecisionArg::Bf16 => Precision::Bf16,
        PrecisionArg::AmpBf16 => Precision::AmpBf16,
        PrecisionArg::Fp8 => Precision::Fp8,
        PrecisionArg::Mxfp8 => Precision::Mxfp8,
        PrecisionArg::Mxfp4 => Precision::Mxfp4,
    }
}

fn recompute(r: RecomputeArg) -> Recompute {
    match r {
        RecomputeArg::None => Recompute::None,
        RecomputeArg::Selective => Recompute::Selective,
        RecomputeArg::Full => Recompute::Full,
    }
}

/// What `rainier train` computes: a plan search, or one plan.
pub(crate) enum TrainOutput {
    Search(Box<SearchReport>),
    Plan(Box<TrainReport>),
}

pub(crate) fn train(args: &TrainArgs) -> Result<()> {
    let output = train_output(args)?;
    let best = match &output {
        TrainOutput::Search(r) => &r.best,
        TrainOutput::Plan(r) => r.as_ref(),
    };
    if let Some(framework) = args.emit {
        let catalog = load_catalog(&args.catalog)?;
        let options = crate::emit::TrainOptions {
            bf16_moments: matches!(args.moments, MomentsArg::Bf16),
            offload_layer_inputs: args.offload_layer_inputs,
        };
        let model = load_model(&args.model)?;
        let text = crate::emit::emit(framework, &model, catalog.chip(&args.chip)?, best, &options)?;
        out(text.trim_end());
        return Ok(());
    }
    let bands = train_bands(args, best)?;
    match &output {
        TrainOutput::Search(report) if args.json => {
            crate::out_json("train-search", &crate::with_field(report, "bands", &bands)?)?
        }
        TrainOutput::Search(report) => out(&format!("{}\n{}", search_text(report), bands.line())),
        TrainOutput::Plan(report) if args.json => {
            crate::out_json("train", &crate::with_field(report, "bands", &bands)?)?
        }
        TrainOutput::Plan(report) => out(&format!("{}\n{}", train_text(report), bands.line())),
    }
    Ok(())
}

/// The bands of a training prediction from its chip family's validation errors.
fn train_bands(args: &TrainArgs, r: &TrainReport) -> Result<crate::versus::Bands> {
    use crate::versus::{family_for, Bands, Errors, Quantity};
    let catalog = load_catalog(&args.catalog)?;
    let chip = catalog.chip(&r.chip)?;
    let e = &r.economics;
    let mut values = vec![
        ("tokens_per_s", r.tokens_per_s, Quantity::Rate),
        ("step_time_s", r.step_time_s, Quantity::Time),
        ("usd_per_million_tokens", e.usd_per_million_tokens, Quantity::Cost),
    ];
    if let Some(b) = &e.budget {
        values.extend(b.time_to_train_days.map(|d| ("time_to_train_days", d, Quantity::Time)));
        values.extend(b.cost_usd.map(|c| ("cost_usd", c, Quantity::Cost)));
        values.extend(b.energy_mwh.map(|m| ("energy_mwh", m, Quantity::Time)));
    }
    let price =
        (e.usd_per_chip_hour, rainier_plan::price_range(chip, &args.economics.config(args.tokens)));
    Ok(Bands::of(Errors::measure()?, family_for(chip.family, false), &values, price))
}

/// The report `rainier train` prints, or its error.
pub(crate) fn train_output(args: &TrainArgs) -> Result<TrainOutput> {
    let catalog = load_catalog(&args.catalog)?;
    let chip = catalog.chip(&args.chip)?;
    let model = load_model(&args.model)?;
    let cfg = TrainConfig {
        micro_batch: args.micro_batch,
        tp: args.tp,
        pp: args.pp,
        dp: args.dp,
        cp: args.cp,
        ep: args.ep,
        vpp: args.vpp,
        placement: args.placement.map(|p| match p {
            PlacementArg::TpCpDpPp => Placement::DpInner,
            PlacementArg::TpCpPpDp => Placement::PpInner,
        }),
        precision: precision(args.precision),
        recompute: recompute(args.recompute.unwrap_or(RecomputeArg::Selective)),
        zero: args.zero.unwrap_or(1),
        framework: args.framework.map(|f| match f {
            FrameworkArg::Eager => Framework::Eager,
            FrameworkArg::Fused => Framework::Fused,
        }),
        lnc: args.lnc,
        neuron_costs: neuron_costs_of(args.neuron_costs),
        moe_skew: args.moe_skew,
        capacity_factor: args.capacity_factor,
        moments: match args.moments {
            MomentsArg::Fp32 => rainier_plan::Moments::Fp32,
            MomentsArg::Bf16 => rainier_plan::Moments::Bf16,
        },
        offload_layer_inputs: args.offload_layer_inputs,
        datacenter: args.datacenter.config(),
        economics: args.economics.config(args.tokens),
        ..TrainConfig::new(args.chips, args.seq, args.global_batch)
    };
    if args.search {
        let options = SearchOptions {
            recompute: args.recompute.map(recompute),
            zero: args.zero,
            top: args.top.max(1),
        };
        let bar = crate::progress_bar("searching plans");
        let tick = |done: u64, total: u64| {
            // Threads report out of order: count, do not set.
            let _ = done;
            bar.set_length(total);
            bar.inc(1);
        };
        let report = search(&model, chip, &cfg, &options, Some(&tick));
        bar.finish_and_clear();
        return Ok(TrainOutput::Search(Box::new(report?)));
    }
    let report = evaluate(&model, chip, &cfg)?;
    crate::ensure_finite(&[
        ("step time", report.step_time_s),
        ("tokens/s", report.tokens_per_s),
        ("MFU", report.mfu),
    ])?;
    if !report.fits && !args.allow_oversubscribed {
        let m = &report.memory_gib_per_device;
        return Err(crate::NoPlan(format!(
            "the plan does not fit: {:.2} GiB per device of {:.2} (parameters {:.2}, gradients {:.2}, optimizer {:.2}, activations {:.2}, other {:.2}); more chips, --zero 3, --recompute full, larger --tp/--pp or --search may fit, --allow-oversubscribed prints it anyway",
            m.total, m.capacity, m.params, m.grads, m.optimizer, m.activations, m.other
        ))
        .into());
    }
    Ok(TrainOutput::Plan(Box::new(report)))
}

fn summary_row(p: &PlanSummary) -> String {
    format!(
        "{:>4} {:>3} {:>3} {:>4} {:>3} {:>7} {:>3} {:<9} {:>4} {:<11} {:>9} {:>9.3} {:>11.0} {:>6.1} {:>8.1} {:>9.3}",
        p.tp,
        p.cp,
        p.ep,
        p.pp,
        p.vpp,
        p.dp,
        p.micro_batch,
        p.recompute,
        p.zero,
        p.placement.name(),
        p.chips_used,
        p.step_time_s,
        p.tokens_per_s,
        100.0 * p.mfu,
        p.memory_gib_per_device,
        p.usd_per_million_tokens
    )
}

fn search_text(r: &SearchReport) -> String {
    let mut s = train_text(&r.best);
    s += &format!(
        "\n\nsearch: {} plans evaluated, {} fit in memory; top {} by throughput:\n",
        r.evaluated,
        r.fitting,
        r.plans.len()
    );
    s += &format!(
        "{:>4} {:>3} {:>3} {:>4} {:>3} {:>7} {:>3} {:<9} {:>4} {:<11} {:>9} {:>9} {:>11} {:>6} {:>8} {:>9}\n",
        "tp", "cp", "ep", "pp", "vpp", "dp", "mb", "recompute", "zero", "placement", "chips", "step s",
        "tokens/s", "MFU %", "mem GiB", "$/M tok"
    );
    for p in &r.plans {
        s += &summary_row(p);
        s += "\n";
    }
    s += "best by cost:\n";
    s += &summary_row(&r.best_by_cost);
    s
}

fn train_text(r: &TrainReport) -> String {
    let p = &r.plan;
    let m = &r.memory_gib_per_device;
    let b = &r.breakdown_s;
    let mut s = format!(
        "{} on {} × {}, seq {}, global batch {} sequences\n",
        r.model, r.chips, r.chip, r.seq, r.global_batch
    );
    s += &format!(
        "plan{}: tp {} × cp {} × pp {} × dp {} = {} ranks ({} per chip, a rank is a {}) on {} chips\n",
        if p.chosen { " (chosen by rainier)" } else { "" },
        p.tp,
        p.cp,
        p.pp,
        p.dp,
        p.ranks,
        p.ranks_per_chip,
        p.rank_unit,
        p.chips_used,
    );
    s += &format!(
        "      ep {}, vpp {}, placement {}, micro-batch {} × {} per step\n",
        p.ep,
        p.vpp,
        p.placement.name(),
        p.micro_batch,
        p.micro_batches
    );
    s += &format!(
        "      precision {}, recompute {}, ZeRO-{}, framework {}\n\n",
        p.precision, p.recompute, p.zero, p.framework
    );
    s += &format!("step time              {:>12.4} s\n", r.step_time_s);
    s += &format!("tokens/s               {:>12.0}\n", r.tokens_per_s);
    s += &format!("tokens/s per chip      {:>12.1}\n", r.tokens_per_s_per_chip);
    s += &format!("model TFLOP/s per chip {:>12.1}\n", r.model_tflops_per_chip);
    s += &format!("MFU                    {:>12.1} %\n\n", 100.0 * r.mfu);
    s += "time (s)                 total\n";
    for (name, v) in [
        ("compute", b.compute),
        ("communication", b.communication),
        ("  exposed", b.exposed_communication),
        ("pipeline bubble", b.pipeline_bubble),
        ("optimizer", b.optimizer),
    ] {
        s += &format!("  {name:<20} {v:>10.4}\n");
    }
    let c = &b.communication_by_kind;
    s += "communication (s)        total    exposed\n";
    for (name, k) in [("TP", c.tp), ("CP", c.cp), ("EP", c.ep), ("PP", c.pp), ("DP", c.dp)] {
        if k.total > 0.0 {
            s += &format!("  {name:<20} {:>10.4} {:>10.4}\n", k.total, k.exposed);
        }
    }
    let e = &r.economics;
    s += &format!(
        "\ncost and power\n  ${:.3} per chip-hour ({}), ${:.3} per million tokens\n  {:.0} W per chip ({:.0} W with host and network), PUE {:.2}, facility {:.3} MW\n",
        e.usd_per_chip_hour, e.pricing, e.usd_per_million_tokens, e.chip_w, e.system_w_per_chip, e.pue, e.facility_mw
    );
    if let Some(bu) = &e.budget {
        let g = &bu.goodput;
        s += &format!(
            "  {:.3e} tokens: {:.1} days failure-free; {}\n  goodput {:.1} %: job MTBF {:.3} h, checkpoint {:.0} GB in {:.3} s every {:.2} min, recovery {:.0} s\n",
            bu.tokens,
            bu.ideal_days,
            match (bu.time_to_train_days, bu.cost_usd, bu.energy_mwh) {
                (Some(d), Some(c), Some(m)) => format!("{d:.1} days with failures, ${:.2}M, {m:.0} MWh", c / 1e6),
                _ => "never finishes: failures come faster than checkpoints and restarts allow".into(),
            },
            100.0 * g.fraction,
            g.job_mtbf_hours,
            g.checkpoint_gb,
            g.checkpoint_write_s,
            g.checkpoint_interval_min,
            g.recovery_s
        );
    }
    s += "\nmemory per device (GiB)\n";
    for (name, v) in [
        ("parameters", m.params),
        ("gradients", m.grads),
        ("optimizer", m.optimizer),
        ("activations", m.activations),
        ("other", m.other),
        ("total", m.total),
    ] {
        s += &format!("  {name:<20} {v:>10.2}\n");
    }
    s += &format!(
        "  {:<20} {:>10.2}  {}\n",
        "capacity",
        m.capacity,
        if r.fits { "fits" } else { "DOES NOT FIT" }
    );
    if !r.notes.is_empty() {
        s += "\nnotes\n";
        for note in &r.notes {
            s += &format!("  - {note}\n");
        }
    }
    s.trim_end().to_string()
}

pub(crate) fn chips(args: &ChipsArgs) -> Result<()> {
    let catalog = load_catalog(&args.catalog)?;
    if args.json {
        crate::out_json("catalog", &catalog)?;
        return Ok(());
    }
    let mut s = String::new();
    match &args.chip {
        Some(name) => {
            let chip = catalog.chip(name)?;
            s += &format!(
                "{} ({}), node {}: {} chips, scale-up domain {} chips, usual stack {}\n",
                chip.name,
                chip.display,
                chip.node.name,
                chip.node.chips,
                chip.node.scale_up_domain_chips,
                chip.stack
            );
            for (field, f) in chip.figures() {
                s += &format!("  {field:<36} {:>14.6e}  [{}] {}\n", f.value, f.grade, f.source);
            }
            let n = &chip.node;
            let basis = |b: Option<rainier_hw::PriceBasis>| b.map_or("unstated", |b| b.name());
            s += &format!("  price basis: {}", basis(n.price_basis));
            if let Some([lo, hi]) = n.usd_per_chip_hour_range {
                s += &format!(", assumed range ${lo}-{hi} per chip-hour");
            }
            if n.usd_per_chip_hour_committed.is_some() {
                s += &format!("; committed price basis: {}", basis(n.committed_basis));
            }
            s += "\n";
            for (field, f) in &chip.neuron_core {
                let field = format!("neuron_core.{field}");
                s += &format!("  {field:<36} {:>14.6e}  [{}] {}\n", f.value, f.grade, f.source);
            }
            if chip.family == rainier_hw::Family::Neuron {
                let p = chip.neuron_params().map_err(|m| anyhow!("chip `{}`: {m}", chip.name))?;
                let changed =
                    p.provenance().into_iter().filter(|r| r.grade == rainier_arch::Grade::WhatIf);
                let changed: Vec<String> =
                    changed.map(|r| format!("{} = {}", r.name, r.value)).collect();
                s += &format!(
                    "  NeuronCore: {} ({}, {} cores per chip){}{}\n",
                    p.chip,
                    p.core.generation,
                    p.cores_per_chip.value,
                    if changed.is_empty() { "" } else { ", changed: " },
                    changed.join(", ")
                );
            }
        }
        None => {
            s += &format!(
                "{:<8} {:>6} {:>9} {:>9} {:>8} {:>9} {:>10} {:>9} {:>7} {:>6}  {}\n",
                "chip",
                "cores",
                "bf16 TF",
                "fp8 TF",
                "HBM GiB",
                "HBM TB/s",
                "up GB/s/d",
                "out Gb/s",
                "$/h",
                "W",
                "node"
            );
            for c in &catalog.chips {
                s += &format!(
                    "{:<8} {:>6} {:>9.1} {:>9.1} {:>8.1} {:>9.2} {:>10.0} {:>9.0} {:>7.3} {:>6.0}  {} ({} chips)\n",
                    c.name,
                    c.cores_per_chip,
                    c.peak_flops.bf16.value / 1e12,
                    c.peak_flops.fp8.value / 1e12,
                    c.hbm_bytes.value / (1u64 << 30) as f64,
                    c.hbm_bytes_per_s.value / 1e12,
                    c.node.scale_up_bytes_per_s_per_dir.value / 1e9,
                    c.node.scale_out_bits_per_s.value / 1e9,
                    c.node.usd_per_chip_hour.value,
                    c.power_w.value,
                    c.node.name,
                    c.node.chips
                );
            }
            s += "\nEvery figure has a source and a grade: `rainier chips --chip NAME` or `--json`.\n";
        }
    }
    if args.assumptions {
        s += "\nperformance-model assumptions (rainier-perf::ASSUMPTIONS)\n";
        for a in ASSUMPTIONS
            .iter()
            .chain(ECONOMICS_ASSUMPTIONS)
            .chain(rainier_plan::SERVE_ASSUMPTIONS)
            .chain(rainier_plan::TRAIN_ASSUMPTIONS)
        {
            s += &format!("  {:<38} {:>12.6}  {}\n", a.name, a.value, a.why);
        }
    }
    out(s.trim_end());
    Ok(())
}

fn neuron_costs_of(arg: NeuronCostsArg) -> NeuronCosts {
    match arg {
        NeuronCostsArg::Tables => NeuronCosts::Tables,
        NeuronCostsArg::Roofline => NeuronCosts::Roofline,
        NeuronCostsArg::LayerPrograms => NeuronCosts::LayerPrograms,
    }
}

pub(crate) fn validate_cmd(json: bool, neuron_costs: NeuronCostsArg) -> Result<()> {
    let costs = neuron_costs_of(neuron_costs);
    let report = rainier_plan::validate_neuron_costs(costs).map_err(anyhow::Error::msg)?;
    let bar = crate::progress_bar("published commands");
    let flag = match neuron_costs {
        NeuronCostsArg::Tables => None,
        NeuronCostsArg::Roofline => Some("roofline"),
        NeuronCostsArg::LayerPrograms => Some("layer-programs"),
    };
    let commands = crate::cases::run(true, flag);
    bar.finish_and_clear();
    let commands = commands?;
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("commands".into(), serde_json::to_value(&commands)?);
        }
        crate::out_json("validate", &v)?;
        return Ok(());
    }
    let mut s = String::new();
    for (kind, title) in [("training", "training"), ("inference", "inference (serving)")] {
        s += &format!(
            "{title}\n{:<28} {:<8} {:<32} {:>10} {:>10} {:>8}\n",
            "point", "chip", "metric", "measured", "predicted", "error"
        );
        for p in report.points.iter().filter(|p| p.kind == kind) {
            s += &format!(
                "{:<28} {:<8} {:<32} {:>10.2} {:>10.2} {:>+7.1}%{}{}\n",
                p.id,
                p.chip,
                p.metric,
                p.measured,
                p.predicted,
                100.0 * p.error,
                if p.calibration { "  (calibration)" } else { "" },
                if p.fits { "" } else { "  (does not fit)" }
            );
        }
        s += "\n";
    }
    let count = |kind: &str| report.points.iter().filter(|p| p.kind == kind).count();
    s += &format!(
        "training: median |error| {:.1} % ({:.1} % without the calibration points), max {:.1} % over {} points (test limits {:.0} % / {:.0} %)\n",
        100.0 * report.median_abs_error,
        100.0 * report.held_out_median_abs_error,
        100.0 * report.max_abs_error,
        count("training"),
        100.0 * VALIDATION_MEDIAN_LIMIT,
        100.0 * rainier_plan::VALIDATION_MAX_LIMIT
    );
    s += &format!(
        "inference: median |error| {:.1} % ({:.1} % without the calibration point), max {:.1} % over {} metrics (test limits {:.0} % / {:.0} %)",
        100.0 * report.inference_median_abs_error,
        100.0 * report.inference_held_out_median_abs_error,
        100.0 * report.inference_max_abs_error,
        count("inference"),
        100.0 * rainier_plan::INFERENCE_MEDIAN_LIMIT,
        100.0 * rainier_plan::INFERENCE_MAX_LIMIT
    );
    s += "\n\n";
    s += &crate::cases::text(&commands);
    out(s.trim_end());
    Ok(())
}
