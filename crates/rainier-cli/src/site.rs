//! `rainier site`: what a datacenter site of a given power holds of one chip kind, and the
//! largest training job it runs.
//!
//! Chips: the site's power over each chip's all-in draw at the meter (the catalog's system
//! power per chip, chip and host at full load, times the provider's PUE), in whole nodes.
//! Network switches and storage draw no power here (a gap, named in the report). The job is
//! the plan search's best on all those chips; the global batch bounds data parallelism, so
//! chips may stay idle, and the report says how many and why. Cost per year is the chips'
//! price per chip-hour (`--pricing`, on one basis) for 8,760 hours; energy per year is the
//! facility draw of the job's chips at its busy share plus the idle chips' full draw.

use anyhow::{bail, Result};
use clap::Args;
use rainier_plan::{search, Pricing, SearchOptions, TrainConfig};
use serde::Serialize;

use crate::out;
use crate::plan::{
    load_catalog, load_model, parse_count, CatalogArgs, DatacenterArgs, EconomicsArgs,
};

/// `rainier site` arguments.
#[derive(Debug, Args)]
pub(crate) struct SiteArgs {
    /// Facility power in megawatts (Project Rainier's Indiana campus: ~2,200 MW planned;
    /// OpenAI's Trainium commitment: ~2,000 MW).
    #[arg(long, default_value_t = 1000.0, value_name = "MW")]
    power_mw: f64,
    /// Chip kind (see `rainier chips`).
    #[arg(long, default_value = "trn2")]
    chip: String,
    /// The training job: a preset or a Hugging Face config.json.
    #[arg(long, default_value = "llama3.1-405b")]
    model: String,
    /// Tokens to train (15T, 1.5e12, 300B).
    #[arg(long, default_value = "15T", value_parser = parse_count)]
    tokens: f64,
    #[arg(long, default_value_t = 8192)]
    seq: u64,
    /// Sequences per optimizer step (it bounds data parallelism, so the chips a job uses).
    #[arg(long, default_value_t = 8192)]
    global_batch: u64,
    #[command(flatten)]
    economics: EconomicsArgs,
    #[command(flatten)]
    datacenter: DatacenterArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Scenario files (`--scenario`, `--dump-scenario`).
    #[command(flatten)]
    _scenario: crate::scenario::ScenarioArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The site and its job.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SiteReport {
    power_mw: f64,
    chip: String,
    pue: f64,
    /// All-in draw per chip at full load, at the meter (PUE included), watts.
    facility_w_per_chip: f64,
    chips: u64,
    nodes: u64,
    scale_up_domains: u64,
    model: String,
    tokens: f64,
    chips_used: u64,
    idle_chips: u64,
    /// Why chips stay idle, where some do.
    idle_because: Option<String>,
    tokens_per_s: f64,
    mfu: f64,
    time_to_train_days: Option<f64>,
    goodput: Option<f64>,
    failures_per_day: Option<f64>,
    /// "job restart" or "replica swap", and the hot-spare nodes a swap holds.
    recovery: Option<String>,
    spare_nodes: Option<f64>,
    usd_per_chip_hour: f64,
    pricing: String,
    usd_per_year: f64,
    energy_mwh_per_year: f64,
    plan: rainier_plan::Plan,
    gaps: Vec<&'static str>,
}

const GAPS: &[&str] = &[
    "network switches, storage and cooling beyond the PUE draw no power here",
    "one chip kind per site; the hot-spare nodes a replica swap holds are counted, not taken from the chips the job uses",
];

pub(crate) fn run(args: &SiteArgs) -> Result<()> {
    if !(args.power_mw.is_finite() && args.power_mw > 0.0 && args.power_mw <= 1e5) {
        bail!("--power-mw must be in (0, 100000] MW, found {}", args.power_mw);
    }
    let catalog = load_catalog(&args.catalog)?;
    let chip = catalog.chip(&args.chip)?;
    let model = load_model(&args.model)?;
    let economics = args.economics.config(Some(args.tokens));
    let pue = economics.pue.unwrap_or(chip.node.pue.value);
    if !(pue.is_finite() && pue >= 1.0) {
        bail!("--pue must be at least 1, found {pue}");
    }
    let facility_w_per_chip = chip.node.system_w_per_chip.value * pue;
    let node = u64::from(chip.node.chips);
    let nodes = (args.power_mw * 1e6 / facility_w_per_chip / node as f64).floor() as u64;
    let chips = nodes * node;
    if chips == 0 {
        bail!(
            "--power-mw {}: one {} node draws {:.3} MW at the meter; the site holds none",
            args.power_mw,
            chip.name,
            facility_w_per_chip * node as f64 / 1e6
        );
    }
    let domain = chip.node.ultra.as_ref().map_or(chip.node.scale_up_domain_chips, |u| u.chips);
    let cfg = TrainConfig {
        datacenter: args.datacenter.config(),
        economics: economics.clone(),
        ..TrainConfig::new(chips, args.seq, args.global_batch)
    };
    let bar = crate::progress_bar("searching plans for the whole site");
    let tick = |_: u64, total: u64| {
        bar.set_length(total);
        bar.inc(1);
    };
    let found = search(
        &model,
        chip,
        &cfg,
        &SearchOptions { top: 1, ..SearchOptions::default() },
        Some(&tick),
    );
    bar.finish_and_clear();
    let best = found?.best;
    let e = &best.economics;
    let used = best.plan.chips_used;
    let idle = chips - used;
    let idle_because = (idle > 0).then(|| {
        format!(
            "the best plan uses {used} chips: data parallelism is bounded by the global batch ({} sequences of {} tokens; dp {} × micro-batch {} × {} micro-batches); a larger --global-batch fills more",
            args.global_batch, args.seq, best.plan.dp, best.plan.micro_batch, best.plan.micro_batches
        )
    });
    let budget = e.budget.as_ref();
    let goodput = budget.map(|b| b.goodput.clone());
    let idle_w = chip.node.system_w_per_chip.value * pue;
    let energy_mwh_per_year = (e.facility_mw * 1e6 + idle as f64 * idle_w) * 8760.0 / 1e6;
    let report = SiteReport {
        power_mw: args.power_mw,
        chip: chip.name.clone(),
        pue,
        facility_w_per_chip,
        chips,
        nodes,
        scale_up_domains: chips / u64::from(domain.max(1)),
        model: model.name.clone(),
        tokens: args.tokens,
        chips_used: used,
        idle_chips: idle,
        idle_because,
        tokens_per_s: best.tokens_per_s,
        mfu: best.mfu,
        time_to_train_days: budget.and_then(|b| b.time_to_train_days),
        goodput: goodput.as_ref().map(|g| g.fraction),
        failures_per_day: goodput.as_ref().map(|g| 24.0 / g.job_mtbf_hours),
        recovery: goodput.as_ref().map(|g| g.recovery.clone()),
        spare_nodes: goodput.as_ref().map(|g| g.spare_nodes),
        usd_per_chip_hour: e.usd_per_chip_hour,
        pricing: e.pricing.clone(),
        usd_per_year: e.usd_per_chip_hour * chips as f64 * 8760.0,
        energy_mwh_per_year,
        plan: best.plan.clone(),
        gaps: GAPS.to_vec(),
    };
    crate::ensure_finite(&[
        ("tokens/s", report.tokens_per_s),
        ("cost per year", report.usd_per_year),
    ])?;
    if args.json {
        crate::out_json("site", &report)?;
    } else {
        out(&text(&report, economics.pricing));
    }
    Ok(())
}

fn text(r: &SiteReport, pricing: Pricing) -> String {
    let p = &r.plan;
    let mut s = format!(
        "site: {:.0} MW of {} at PUE {:.2}: {} chips in {} nodes ({} scale-up domains), {:.0} W per chip at the meter\n",
        r.power_mw, r.chip, r.pue, r.chips, r.nodes, r.scale_up_domains, r.facility_w_per_chip
    );
    s += &format!(
        "job: {} on the whole site, {:.3e} tokens: tp {} × cp {} × pp {} × dp {} (ep {}, vpp {}, micro-batch {}), {} chips used\n",
        r.model, r.tokens, p.tp, p.cp, p.pp, p.dp, p.ep, p.vpp, p.micro_batch, r.chips_used
    );
    if let Some(why) = &r.idle_because {
        s += &format!("  {} chips idle: {why}\n", r.idle_chips);
    }
    s += &format!(
        "  {:.3e} tokens/s, MFU {:.1} %, {} to train",
        r.tokens_per_s,
        100.0 * r.mfu,
        r.time_to_train_days
            .map_or("never (failures outpace restarts)".into(), |d| format!("{d:.1} days"))
    );
    if let (Some(g), Some(f)) = (r.goodput, r.failures_per_day) {
        s += &format!(", goodput {:.1} % ({f:.1} failures a day", 100.0 * g);
        s += &match (r.recovery.as_deref(), r.spare_nodes) {
            (Some("replica swap"), Some(n)) => format!(
                ", each idling one of {} replicas while a hot spare replaces it; {n:.0} spare nodes held)",
                p.dp
            ),
            (Some(how), _) => format!(", each a {how})"),
            _ => ")".into(),
        };
    }
    s += &format!(
        "\ncost: ${:.3} per chip-hour ({}{}), ${:.3e} per year for the site; energy {:.3e} MWh per year\n",
        r.usd_per_chip_hour,
        r.pricing,
        if pricing == Pricing::OnDemand { "; --pricing capacity-block for the other basis" } else { "" },
        r.usd_per_year,
        r.energy_mwh_per_year
    );
    s += &format!("not modelled: {}", r.gaps.join("; "));
    s
}
