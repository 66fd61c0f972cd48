//! `rainier train`, `rainier chips` and `rainier validate`: the training planner's commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use rainier_hw::{Catalog, Framework};
use rainier_model::{Model, Recompute};
use rainier_perf::{NeuronCosts, Precision, ASSUMPTIONS};
use rainier_plan::{evaluate, validate, TrainConfig, TrainReport, VALIDATION_MEDIAN_LIMIT};

use crate::out;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// bf16 weights, activations and gradients; fp32 master weights and Adam states (Megatron).
    Bf16,
    /// PyTorch autocast: fp32 parameters and gradients, bf16 compute.
    AmpBf16,
    /// fp8 GEMMs (Transformer Engine style), bf16 elsewhere.
    Fp8,
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
}

/// `rainier train` arguments.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// A preset (llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3-70b, llama3.1-405b,
    /// mixtral-8x7b, gpt3-175b, gpt2-124m) or a Hugging Face config.json.
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
    #[arg(long, value_enum, default_value = "bf16")]
    precision: PrecisionArg,
    #[arg(long, value_enum, default_value = "selective")]
    recompute: RecomputeArg,
    /// ZeRO stage over data parallel: 0, 1 (optimizer states; Megatron's distributed
    /// optimizer), 2 (+ gradients), 3 (+ parameters; FSDP).
    #[arg(long, default_value_t = 1)]
    zero: u8,
    /// Execution style (default: the chip's usual stack).
    #[arg(long, value_enum)]
    framework: Option<FrameworkArg>,
    /// Trainium logical NeuronCore size: 2 (default on trn2/trn3: 4 ranks per chip) or 1.
    #[arg(long)]
    lnc: Option<u32>,
    /// Where NeuronCore op costs come from.
    #[arg(long, value_enum, default_value = "tables")]
    neuron_costs: NeuronCostsArg,
    /// A catalog file (same shape as `rainier chips --json`) whose chips replace or extend
    /// the built-in ones.
    #[arg(long, value_name = "FILE.json")]
    catalog: Option<PathBuf>,
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
    /// A catalog file overriding or extending the built-in one.
    #[arg(long, value_name = "FILE.json")]
    catalog: Option<PathBuf>,
}

fn load_catalog(path: Option<&Path>) -> Result<Catalog> {
    let catalog = Catalog::built_in();
    match path {
        None => Ok(catalog),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(catalog.with_overrides(&text, &path.display().to_string())?)
        }
    }
}

fn load_model(name: &str) -> Result<Model> {
    let path = Path::new(name);
    if name.ends_with(".json") || path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        Ok(Model::from_config_json(&text, name)?)
    } else {
        Ok(Model::preset(name)?)
    }
}

pub(crate) fn train(args: &TrainArgs) -> Result<()> {
    let catalog = load_catalog(args.catalog.as_deref())?;
    let chip = catalog.chip(&args.chip)?;
    let model = load_model(&args.model)?;
    let cfg = TrainConfig {
        micro_batch: args.micro_batch,
        tp: args.tp,
        pp: args.pp,
        dp: args.dp,
        precision: match args.precision {
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::AmpBf16 => Precision::AmpBf16,
            PrecisionArg::Fp8 => Precision::Fp8,
        },
        recompute: match args.recompute {
            RecomputeArg::None => Recompute::None,
            RecomputeArg::Selective => Recompute::Selective,
            RecomputeArg::Full => Recompute::Full,
        },
        zero: args.zero,
        framework: args.framework.map(|f| match f {
            FrameworkArg::Eager => Framework::Eager,
            FrameworkArg::Fused => Framework::Fused,
        }),
        lnc: args.lnc,
        neuron_costs: match args.neuron_costs {
            NeuronCostsArg::Tables => NeuronCosts::Tables,
            NeuronCostsArg::Roofline => NeuronCosts::Roofline,
        },
        ..TrainConfig::new(args.chips, args.seq, args.global_batch)
    };
    let report = evaluate(&model, chip, &cfg)?;
    if args.json {
        out(&serde_json::to_string_pretty(&report)?);
    } else {
        out(&train_text(&report));
    }
    Ok(())
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
        "plan{}: tp {} × pp {} × dp {} = {} ranks ({} per chip, a rank is a {}), micro-batch {} × {} per step\n",
        if p.chosen { " (chosen by rainier)" } else { "" },
        p.tp,
        p.pp,
        p.dp,
        p.ranks,
        p.ranks_per_chip,
        p.rank_unit,
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
    let catalog = load_catalog(args.catalog.as_deref())?;
    if args.json {
        out(&serde_json::to_string_pretty(&catalog)?);
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
        for a in ASSUMPTIONS {
            s += &format!("  {:<32} {:>12.6}  {}\n", a.name, a.value, a.why);
        }
    }
    out(s.trim_end());
    Ok(())
}

pub(crate) fn validate_cmd(json: bool) -> Result<()> {
    let report = validate().map_err(anyhow::Error::msg)?;
    if json {
        out(&serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut s = format!(
        "{:<26} {:<8} {:<32} {:>10} {:>10} {:>8}\n",
        "point", "chip", "metric", "measured", "predicted", "error"
    );
    for p in &report.points {
        s += &format!(
            "{:<26} {:<8} {:<32} {:>10.1} {:>10.1} {:>+7.1}%{}\n",
            p.id,
            p.chip,
            p.metric,
            p.measured,
            p.predicted,
            100.0 * p.error,
            if p.fits { "" } else { "  (does not fit)" }
        );
    }
    s += &format!(
        "\nmedian |error| {:.1} %, max {:.1} % over {} points (test limit on the median: {:.0} %)",
        100.0 * report.median_abs_error,
        100.0 * report.max_abs_error,
        report.points.len(),
        100.0 * VALIDATION_MEDIAN_LIMIT
    );
    out(&s);
    Ok(())
}
