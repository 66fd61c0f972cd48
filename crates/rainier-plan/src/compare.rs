//! `rainier compare`: the same training job on every chip kind, each with its own best plan.

use rainier_hw::Catalog;
use rainier_model::Model;
use rayon::prelude::*;
use serde::Serialize;

use crate::{
    search, serve_search, Goodput, PlanError, PlanSummary, SearchOptions, SearchReport,
    ServeConfig, ServeReport, TrainConfig,
};

/// The job and the cluster size (or budget) to compare at.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareConfig {
    /// The job; its `chips` is the cluster size unless a budget is given.
    pub train: TrainConfig,
    /// Tokens to train.
    pub tokens: f64,
    /// Instead of a fixed size: the largest cluster (powers of two times the node) whose run
    /// costs at most this many dollars.
    pub budget_usd: Option<f64>,
    /// Chip names to compare (`None`: every chip in the catalog).
    pub chips: Option<Vec<String>>,
}

/// One chip kind's answer.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CompareRow {
    pub chip: String,
    pub display: String,
    /// Chips in the cluster (the budget's choice under `--budget-usd`).
    pub chips: u64,
    /// `null` when the job cannot run on this chip kind; `error` says why.
    pub plan: Option<PlanSummary>,
    pub error: Option<String>,
    pub mfu: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub time_to_train_days: Option<f64>,
    pub usd_per_million_tokens: Option<f64>,
    pub cost_usd: Option<f64>,
    pub energy_mwh: Option<f64>,
    pub facility_mw: Option<f64>,
    pub goodput: Option<Goodput>,
    pub usd_per_chip_hour: f64,
    /// "on-demand", "committed" or "user".
    pub pricing: Option<String>,
    pub price_grade: String,
    pub price_source: String,
}

/// Every chip kind side by side.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CompareReport {
    pub model: String,
    pub tokens: f64,
    pub seq: u64,
    pub global_batch: u64,
    pub precision: String,
    pub budget_usd: Option<f64>,
    pub rows: Vec<CompareRow>,
}

/// Plans the job on every chip kind of `catalog` and reports the best plan of each;
/// `progress` hears `(chip kinds done, chip kinds)`.
pub fn compare(
    model: &Model,
    catalog: &Catalog,
    cfg: &CompareConfig,
    progress: Option<crate::Progress>,
) -> Result<CompareReport, PlanError> {
    if !(cfg.tokens.is_finite() && cfg.tokens > 0.0 && cfg.tokens < 1e30) {
        return Err(PlanError::Invalid(format!(
            "--tokens must be a positive number, found {}",
            cfg.tokens
        )));
    }
    if let Some(b) = cfg.budget_usd {
        if !(b.is_finite() && b > 0.0 && b < 1e30) {
            return Err(PlanError::Invalid(format!(
                "--budget-usd must be a positive number, found {b}"
            )));
        }
    }
    crate::train::check_job(model, &cfg.train)?;
    let chips: Vec<&rainier_hw::Chip> = match &cfg.chips {
        Some(names) => names
            .iter()
            .map(|n| catalog.chip(n).map_err(|e| PlanError::Invalid(e.to_string())))
            .collect::<Result<_, _>>()?,
        None => catalog.chips.iter().collect(),
    };
    let mut train = cfg.train.clone();
    train.economics.tokens = Some(cfg.tokens);
    let options = SearchOptions { top: 1, ..SearchOptions::default() };
    let done = std::sync::atomic::AtomicU64::new(0);
    let rows = chips
        .par_iter()
        .map(|chip| {
            let run = |n: u64| {
                search(model, chip, &TrainConfig { chips: n, ..train.clone() }, &options, None)
            };
            let (n, result) = match cfg.budget_usd {
                None => (train.chips, run(train.chips)),
                Some(budget) => within_budget(chip, budget, &run),
            };
            if let Some(report) = progress {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                report(n, chips.len() as u64);
            }
            row(chip, n, result)
        })
        .collect();
    Ok(CompareReport {
        model: model.name.clone(),
        tokens: cfg.tokens,
        seq: train.seq,
        global_batch: train.global_batch,
        precision: crate::precision_name(train.precision).into(),
        budget_usd: cfg.budget_usd,
        rows,
    })
}

/// The largest cluster of `node × 2^k` chips (up to about a million) whose run costs at most
/// `budget`; cost is not monotonic in size (small clusters may need slow, memory-saving plans),
/// so every size is tried. Without one: the cheapest size, with its cost, as the error.
fn within_budget(
    chip: &rainier_hw::Chip,
    budget: f64,
    run: &dyn Fn(u64) -> Result<SearchReport, PlanError>,
) -> (u64, Result<SearchReport, PlanError>) {
    let node = u64::from(chip.node.chips).max(1);
    let sizes: Vec<u64> = if chip.node.scale_out_bits_per_s.value > 0.0 {
        (0..21).map(|k| node << k).take_while(|&n| n <= 1 << 20).collect()
    } else {
        vec![node]
    };
    let cost = |r: &Result<SearchReport, PlanError>| {
        r.as_ref().ok().and_then(|r| r.best.economics.budget.as_ref()?.cost_usd)
    };
    let mut fitting: Option<(u64, Result<SearchReport, PlanError>)> = None;
    let mut cheapest: Option<(u64, f64)> = None;
    let mut last = None;
    for &n in &sizes {
        let r = run(n);
        match cost(&r) {
            Some(c) if c <= budget => fitting = Some((n, r)),
            Some(c) => {
                if cheapest.is_none_or(|(_, best)| c < best) {
                    cheapest = Some((n, c));
                }
            }
            None => last = Some((n, r)),
        }
    }
    if let Some(found) = fitting {
        return found;
    }
    match cheapest {
        Some((n, c)) => (
            n,
            Err(PlanError::Invalid(format!(
                "no cluster fits the budget: the cheapest ({n} chips) costs ${c:.3e} for the token budget, over ${budget:.3e}"
            ))),
        ),
        None => last.unwrap_or_else(|| (node, run(node))),
    }
}

fn row(chip: &rainier_hw::Chip, chips: u64, result: Result<SearchReport, PlanError>) -> CompareRow {
    let price = &chip.node.usd_per_chip_hour;
    let mut row = CompareRow {
        chip: chip.name.clone(),
        display: chip.display.clone(),
        chips,
        plan: None,
        error: None,
        mfu: None,
        tokens_per_s: None,
        time_to_train_days: None,
        usd_per_million_tokens: None,
        cost_usd: None,
        energy_mwh: None,
        facility_mw: None,
        goodput: None,
        usd_per_chip_hour: price.value,
        pricing: None,
        price_grade: price.grade.to_string(),
        price_source: format!("[{}] {}", price.grade, price.source),
    };
    match result {
        Ok(r) => {
            let best = &r.best;
            let e = &best.economics;
            let budget = e.budget.as_ref();
            row.mfu = Some(best.mfu);
            row.tokens_per_s = Some(best.tokens_per_s);
            row.usd_per_million_tokens = Some(e.usd_per_million_tokens);
            row.facility_mw = Some(e.facility_mw);
            row.time_to_train_days = budget.and_then(|b| b.time_to_train_days);
            row.cost_usd = budget.and_then(|b| b.cost_usd);
            row.energy_mwh = budget.and_then(|b| b.energy_mwh);
            row.goodput = budget.map(|b| b.goodput.clone());
            row.usd_per_chip_hour = e.usd_per_chip_hour;
            row.pricing = Some(e.pricing.clone());
            row.price_source = e.price_source.clone();
            row.price_grade = e.price_grade.clone();
            row.plan = r.plans.into_iter().next();
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// One chip kind's cheapest serving plan at the SLO.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ServeCompareRow {
    pub chip: String,
    pub display: String,
    /// `null` when no plan holds the model and meets the SLO; `error` says why.
    pub report: Option<ServeReport>,
    pub error: Option<String>,
    pub usd_per_chip_hour: f64,
    pub price_source: String,
    /// The same chips split into prefill and decode pools at the SLO (`serve --disaggregate`);
    /// `null` under a workload (not modelled there) or when no split meets the SLO.
    pub disaggregated: Option<crate::DisaggregatedReport>,
}

/// Serving the same model on every chip kind.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ServeCompareReport {
    pub model: String,
    pub chips: u64,
    pub input_len: u64,
    pub output_len: u64,
    pub slo_ttft_ms: Option<f64>,
    pub slo_tpot_ms: Option<f64>,
    pub rows: Vec<ServeCompareRow>,
}

/// The cheapest serving plan meeting the SLO (continuous batching) on every chip kind of
/// `catalog` (or those named).
pub fn compare_serve(
    model: &Model,
    catalog: &Catalog,
    cfg: &ServeConfig,
    only: Option<&[String]>,
) -> Result<ServeCompareReport, PlanError> {
    // Argument errors are the caller's, not a chip's.
    crate::serve::check(model, cfg)?;
    let chips: Vec<&rainier_hw::Chip> = match only {
        Some(names) => names
            .iter()
            .map(|n| catalog.chip(n).map_err(|e| PlanError::Invalid(e.to_string())))
            .collect::<Result<_, _>>()?,
        None => catalog.chips.iter().collect(),
    };
    let rows = chips
        .par_iter()
        .map(|chip| {
            let result = serve_search(model, chip, cfg);
            let disaggregated = cfg
                .workload
                .is_none()
                .then(|| crate::serve::disaggregated_without_colocated(model, chip, cfg).ok())
                .flatten();
            let price = &chip.node.usd_per_chip_hour;
            let (report, error) = match result {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            };
            ServeCompareRow {
                chip: chip.name.clone(),
                display: chip.display.clone(),
                // The rate the report used (committed or the user's, when asked).
                usd_per_chip_hour: report.as_ref().map_or(price.value, |r| r.usd_per_chip_hour),
                price_source: report.as_ref().map_or_else(
                    || format!("[{}] {}", price.grade, price.source),
                    |r| r.price_source.clone(),
                ),
                report,
                error,
                disaggregated,
            }
        })
        .collect::<Vec<_>>();
    Ok(ServeCompareReport {
        model: model.name.clone(),
        chips: cfg.chips,
        input_len: cfg.input_len,
        output_len: cfg.output_len,
        slo_ttft_ms: cfg.slo_ttft_ms,
        slo_tpot_ms: cfg.slo_tpot_ms,
        rows,
    })
}
