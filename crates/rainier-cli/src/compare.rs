//! `rainier compare`: one training (or serving) job on every chip kind, side by side.

use anyhow::{bail, Result};
use clap::Args;
use rainier_plan::{
    compare, compare_serve, price_range, CompareConfig, CompareReport, ServeCompareReport,
    TrainConfig,
};

use crate::out;
use crate::plan::{
    load_catalog, load_model, parse_count, precision, CatalogArgs, DatacenterArgs, EconomicsArgs,
    PrecisionArg,
};
use crate::serve::ServeJobArgs;
use crate::versus::{Errors, Outcome, Versus};

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
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Scenario files (`--scenario`, `--dump-scenario`).
    #[command(flatten)]
    _scenario: crate::scenario::ScenarioArgs,
    /// Compare serving instead of training: the cheapest plan and concurrency per chip kind
    /// that meets the SLO (default SLO with --serve: TTFT ≤ 2000 ms, TPOT ≤ 50 ms).
    #[arg(long)]
    serve: bool,
    #[command(flatten)]
    serve_job: ServeJobArgs,
    /// The chip every other is measured against: tokens per dollar and per chip-second as
    /// ratios, each with a p10-p90 band from the model's errors on published measurements of
    /// both chips' families (added to --only when missing).
    #[arg(long, default_value = "h100", value_name = "CHIP")]
    baseline: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &CompareArgs) -> Result<()> {
    let catalog = load_catalog(&args.catalog)?;
    let model = load_model(&args.model)?;
    let baseline = catalog
        .chip(&args.baseline)
        .map_err(|e| anyhow::anyhow!("--baseline {}: {e}", args.baseline))?;
    let mut only = args.only.clone();
    if !only.is_empty() && !only.contains(&baseline.name) {
        only.push(baseline.name.clone());
    }
    if args.serve && args.budget_usd.is_some() {
        bail!(
            "--budget-usd sizes a training run by its cost, and serving has no run length: \
             use --chips with --serve (the report gives $/M tokens and $/chip-hour)"
        );
    }
    if args.serve {
        let base = args.serve_job.config(args.chips, &model)?;
        let cfg = rainier_plan::ServeConfig {
            slo_ttft_ms: base.slo_ttft_ms.or(Some(2000.0)),
            slo_tpot_ms: base.slo_tpot_ms.or(Some(50.0)),
            cluster: TrainConfig {
                datacenter: args.datacenter.config(),
                economics: args.economics.config(None),
                ..TrainConfig::new(args.chips, 1, 1)
            },
            ..base
        };
        let report =
            compare_serve(&model, &catalog, &cfg, (!only.is_empty()).then_some(&only[..]))?;
        let outcomes: Vec<Outcome> = report
            .rows
            .iter()
            .filter_map(|row| {
                let r = row.report.as_ref()?;
                Some(Outcome {
                    chip: &row.chip,
                    family: catalog.chip(&row.chip).ok()?.family,
                    usd_per_million_tokens: r.cost_usd_per_million_output_tokens,
                    tokens_per_s_per_chip: r.output_tokens_per_s_per_chip,
                    price_grade: grade_of(&row.price_source),
                    usd_per_chip_hour: row.usd_per_chip_hour,
                    price_range: catalog
                        .chip(&row.chip)
                        .ok()
                        .and_then(|c| price_range(c, &cfg.cluster.economics)),
                })
            })
            .collect();
        let versus = against(&outcomes, &baseline.name, true)?;
        if args.json {
            crate::out_json("compare-serve", &with_versus(&report, &versus)?)?;
        } else {
            out(&with_verdict(&versus, "serving:", serve_text(&report)));
        }
        return Ok(());
    }
    let cfg = CompareConfig {
        train: TrainConfig {
            precision: precision(args.precision),
            datacenter: args.datacenter.config(),
            economics: args.economics.config(None),
            ..TrainConfig::new(args.chips, args.seq, args.global_batch)
        },
        tokens: args.tokens,
        budget_usd: args.budget_usd,
        chips: (!only.is_empty()).then(|| only.clone()),
    };
    let bar = crate::progress_bar("planning every chip kind");
    let tick = |done: u64, total: u64| {
        // Threads report out of order: count, do not set.
        let _ = done;
        bar.set_length(total);
        bar.inc(1);
    };
    let report = compare(&model, &catalog, &cfg, Some(&tick));
    bar.finish_and_clear();
    let report = report?;
    let outcomes: Vec<Outcome> = report
        .rows
        .iter()
        .filter_map(|row| {
            let plan = row.plan.as_ref()?;
            Some(Outcome {
                chip: &row.chip,
                family: catalog.chip(&row.chip).ok()?.family,
                usd_per_million_tokens: row.usd_per_million_tokens?,
                tokens_per_s_per_chip: row.tokens_per_s? / plan.chips_used.max(1) as f64,
                price_grade: &row.price_grade,
                usd_per_chip_hour: row.usd_per_chip_hour,
                price_range: catalog
                    .chip(&row.chip)
                    .ok()
                    .and_then(|c| price_range(c, &cfg.train.economics)),
            })
        })
        .collect();
    let versus = against(&outcomes, &baseline.name, false)?;
    if args.json {
        crate::out_json("compare", &with_versus(&report, &versus)?)?;
    } else {
        out(&with_verdict(&versus, "training:", text(&report)));
    }
    Ok(())
}

/// The comparison against `baseline`, or why there is none (the baseline has no plan).
fn against(
    outcomes: &[Outcome],
    baseline: &str,
    serving: bool,
) -> Result<std::result::Result<Versus, String>> {
    let Some(base) = outcomes.iter().find(|o| o.chip == baseline) else {
        return Ok(Err(format!("the baseline {baseline} has no plan for this job")));
    };
    let errors = Errors::measure()?;
    Ok(Ok(crate::versus::versus(outcomes, base, errors, serving)))
}

/// `body` led by the verdict and followed by the versus table (or why there is none).
fn with_verdict(versus: &std::result::Result<Versus, String>, what: &str, body: String) -> String {
    match versus {
        Ok(v) => format!("{}{body}{}", crate::versus::verdict(v, what), crate::versus::table(v)),
        Err(why) => format!("no verdict: {why}\n\n{body}"),
    }
}

/// `report` as JSON with `versus` (or `versus_error`) added.
fn with_versus(
    report: &impl serde::Serialize,
    versus: &std::result::Result<Versus, String>,
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(report)?;
    if let Some(o) = v.as_object_mut() {
        match versus {
            Ok(vs) => o.insert("versus".into(), serde_json::to_value(vs)?),
            Err(why) => o.insert("versus_error".into(), why.clone().into()),
        };
    }
    Ok(v)
}

/// The grade in a `[grade] source` price text.
fn grade_of(source: &str) -> &str {
    source.strip_prefix('[').and_then(|s| s.split(']').next()).unwrap_or("unknown")
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

fn serve_text(r: &ServeCompareReport) -> String {
    let slo = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v} ms"));
    let mut s = format!(
        "serving {} · {} prompt + {} output tokens · SLO TTFT {} TPOT {} · {} chips of each kind · each with its cheapest plan meeting the SLO\n\n",
        r.model,
        r.input_len,
        r.output_len,
        slo(r.slo_ttft_ms),
        slo(r.slo_tpot_ms),
        r.chips
    );
    s += &format!(
        "{:<9} {:<14} {:>8} {:>9} {:>8} {:>12} {:>12} {:>10} {:>9}\n",
        "chip",
        "plan tp·pp·ep",
        "in flight",
        "TTFT ms",
        "TPOT ms",
        "tok/s/chip",
        "$/M out tok",
        "J/token",
        "$/chip-h"
    );
    let mut failed = Vec::new();
    for row in &r.rows {
        let Some(rep) = &row.report else {
            failed.push(format!("  {}: {}", row.chip, row.error.as_deref().unwrap_or("no plan")));
            s += &format!("{:<9} — (see below)\n", row.chip);
            continue;
        };
        let p = &rep.plan;
        s += &format!(
            "{:<9} {:<14} {:>8} {:>9.1} {:>8.2} {:>12.1} {:>12.3} {:>10.3} {:>9.3}\n",
            row.chip,
            format!("{}·{}·{} ×{}", p.tp, p.pp, p.ep, p.replicas),
            rep.batch,
            rep.ttft_ms,
            rep.tpot_ms,
            rep.output_tokens_per_s_per_chip,
            rep.cost_usd_per_million_output_tokens,
            rep.energy_j_per_output_token,
            row.usd_per_chip_hour
        );
    }
    if !failed.is_empty() {
        s += "\nno plan\n";
        s += &failed.join("\n");
        s += "\n";
    }
    s += &workload_table(r);
    s += &disaggregated_table(r);
    s += "\nprices (per chip-hour)\n";
    for row in &r.rows {
        s += &format!("  {:<9} ${:<7.3} {}\n", row.chip, row.usd_per_chip_hour, row.price_source);
    }
    s += "\nin flight: sequences per replica under continuous batching; J/token: facility energy (PUE included).";
    s
}

/// Each chip's chips split into prefill and decode pools, when a split meets the SLO.
fn disaggregated_table(r: &ServeCompareReport) -> String {
    let rows: Vec<_> =
        r.rows.iter().filter_map(|row| row.disaggregated.as_ref().map(|d| (row, d))).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\ndisaggregated: the same chips as a prefill pool and a decode pool (serve --disaggregate; no queueing)\n{:<9} {:>14} {:>14} {:>9} {:>8} {:>12} {:>12} {:>12}\n",
        "chip", "prefill ×tp", "decode ×tp", "TTFT ms", "TPOT ms", "tok/s/chip", "$/M out tok", "vs colocated"
    );
    for (row, d) in rows {
        let versus = row.report.as_ref().map_or("—".to_string(), |c| {
            format!(
                "{:.2}×",
                c.cost_usd_per_million_output_tokens / d.cost_usd_per_million_output_tokens
            )
        });
        s += &format!(
            "{:<9} {:>14} {:>14} {:>9.1} {:>8.2} {:>12.1} {:>12.3} {:>12}\n",
            row.chip,
            format!("{} ×{}", d.prefill.chips, d.prefill.tp),
            format!("{} ×{}", d.decode.chips, d.decode.tp),
            d.ttft_ms,
            d.tpot_ms,
            d.output_tokens_per_s_per_chip,
            d.cost_usd_per_million_output_tokens,
            versus
        );
    }
    s += "vs colocated: tokens per dollar over the colocated plan's above.\n";
    s
}

/// Each chip's plan under the workload, when there is one.
fn workload_table(r: &ServeCompareReport) -> String {
    let rows: Vec<_> = r
        .rows
        .iter()
        .filter_map(|row| row.report.as_ref()?.workload.as_ref().map(|w| (row, w)))
        .collect();
    let Some((_, first)) = rows.first() else { return String::new() };
    let mut s = format!(
        "\nunder the workload {} ({} requests at {:.2} per s over each cluster)\n",
        first.name, first.requests, first.rate_per_s
    );
    s += &format!(
        "{:<9} {:>11} {:>11} {:>11} {:>11} {:>12} {:>16} {:>14}\n",
        "chip",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "$/M out tok",
        "max rate at SLO",
        "$/M at max"
    );
    for (row, w) in rows {
        let max = w.max_rate_meeting_slo_per_s.map_or("—".to_string(), |m| format!("{m:.2}/s"));
        let at_max = w
            .cost_usd_per_million_output_tokens_at_max_rate
            .map_or("—".into(), |c| format!("{c:.3}"));
        s += &format!(
            "{:<9} {:>11.1} {:>11.1} {:>11.2} {:>11.2} {:>12.3} {:>16} {:>14}\n",
            row.chip,
            w.ttft_ms_p50,
            w.ttft_ms_p99,
            w.tpot_ms_p50,
            w.tpot_ms_p99,
            w.cost_usd_per_million_output_tokens,
            max,
            at_max
        );
    }
    s
}
