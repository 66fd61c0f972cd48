//! `rainier compare`: one training job on every chip kind, side by side.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rainier_plan::{compare, CompareConfig, CompareReport, TrainConfig};

use crate::out;
use crate::plan::{
    load_catalog, load_model, parse_count, precision, DatacenterArgs, EconomicsArgs, PrecisionArg,
};

/// `rainier compare` arguments.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// A preset or a Hugging Face config.json.
    #[arg(long, default_value = "llama3-70b")]
    model: String,
    /// Tokens to train (15T, 1.5e12, 300B).
    #[arg(long, default_value = "15T", value_parser = parse_count)]
    tokens: f64,
    /// Chips of each kind.
    #[arg(long, default_value_t = 1024, conflicts_with = "budget_usd")]
    chips: u64,
    /// Instead of --chips: for each kind, the largest cluster (node × 2^k chips) whose run
    /// costs at most this many dollars.
    #[arg(long, value_name = "USD", value_parser = parse_count)]
    budget_usd: Option<f64>,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 8192)]
    seq: u64,
    /// Sequences per optimizer step (2048 × 8192 ≈ 16.8M tokens, Llama 3's batch).
    #[arg(long, default_value_t = 2048)]
    global_batch: u64,
    #[arg(long, value_enum, default_value = "bf16")]
    precision: PrecisionArg,
    /// Compare only these chips (comma-separated; default: the whole catalog).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[command(flatten)]
    economics: EconomicsArgs,
    #[command(flatten)]
    datacenter: DatacenterArgs,
    /// A catalog file overriding or extending the built-in one.
    #[arg(long, value_name = "FILE.json")]
    catalog: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &CompareArgs) -> Result<()> {
    let catalog = load_catalog(args.catalog.as_deref())?;
    let model = load_model(&args.model)?;
    let cfg = CompareConfig {
        train: TrainConfig {
            precision: precision(args.precision),
            datacenter: args.datacenter.config(),
            economics: args.economics.config(None),
            ..TrainConfig::new(args.chips, args.seq, args.global_batch)
        },
        tokens: args.tokens,
        budget_usd: args.budget_usd,
        chips: (!args.only.is_empty()).then(|| args.only.clone()),
    };
    let bar = crate::progress_bar("planning every chip");
    bar.set_length(1);
    let report = compare(&model, &catalog, &cfg);
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        out(&serde_json::to_string_pretty(&report)?);
    } else {
        out(&text(&report));
    }
    Ok(())
}

fn text(r: &CompareReport) -> String {
    let mut s = format!(
        "{} · {:.3e} tokens · seq {} · global batch {} · {} · each chip with its own best plan{}\n\n",
        r.model,
        r.tokens,
        r.seq,
        r.global_batch,
        r.precision,
        match r.budget_usd {
            Some(b) => format!(" · largest cluster within ${b:.3e}"),
            None => String::new(),
        }
    );
    s += &format!(
        "{:<9} {:>7} {:<26} {:>6} {:>10} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8}\n",
        "chip",
        "chips",
        "plan tp·cp·pp·dp·ep mb",
        "MFU %",
        "Mtok/s",
        "days",
        "$/M tok",
        "cost $M",
        "MWh",
        "MW",
        "goodput",
        "$/chip-h"
    );
    let mut failed = Vec::new();
    for row in &r.rows {
        let Some(p) = &row.plan else {
            failed.push(format!("  {}: {}", row.chip, row.error.as_deref().unwrap_or("no plan")));
            s += &format!("{:<9} {:>7} {:<26}\n", row.chip, row.chips, "— (see below)");
            continue;
        };
        let opt = |v: Option<f64>, scale: f64, width: usize, digits: usize| match v {
            Some(v) => format!("{:>width$.digits$}", v / scale),
            None => format!("{:>width$}", "—"),
        };
        s += &format!(
            "{:<9} {:>7} {:<26} {:>6.1} {} {} {} {} {} {} {} {:>8.3}\n",
            row.chip,
            p.chips_used,
            format!(
                "{}·{}·{}·{}·{} mb{} {}",
                p.tp,
                p.cp,
                p.pp,
                p.dp,
                p.ep,
                p.micro_batch,
                &p.recompute[..3.min(p.recompute.len())]
            ),
            100.0 * row.mfu.unwrap_or(0.0),
            opt(row.tokens_per_s, 1e6, 10, 3),
            opt(row.time_to_train_days, 1.0, 8, 1),
            opt(row.usd_per_million_tokens, 1.0, 9, 3),
            opt(row.cost_usd, 1e6, 9, 2),
            opt(row.energy_mwh, 1.0, 9, 0),
            opt(row.facility_mw, 1.0, 7, 2),
            match &row.goodput {
                Some(g) => format!("{:>7.1}%", 100.0 * g.fraction),
                None => format!("{:>8}", "—"),
            },
            row.usd_per_chip_hour
        );
    }
    if !failed.is_empty() {
        s += "\nnot runnable\n";
        s += &failed.join("\n");
        s += "\n";
    }
    s += "\nprices (per chip-hour; grade: doc = vendor, 3p = third party, assumed = no public price)\n";
    for row in &r.rows {
        s += &format!("  {:<9} ${:<7.3} {}\n", row.chip, row.usd_per_chip_hour, row.price_source);
    }
    s += "\ndays and cost include checkpoints, failures and restarts (goodput); MWh and MW are facility figures (PUE included).\nEvery figure: rainier chips --chip NAME; every assumption: rainier chips --assumptions.";
    s
}
