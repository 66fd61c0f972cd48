//! Plan search: every valid plan of a job on a cluster, ranked by throughput and by cost.
//!
//! The space is `tp × cp × ep × pp × vpp × micro-batch × recompute × ZeRO × placement` with
//! `dp` the largest that the global batch allows on the cluster (a cluster the batch does not
//! divide leaves some chips idle, reported as `chips_used`). Op costs depend only on
//! `(tp, cp, ep, micro-batch)`, so they are computed once per such group and every plan in it
//! is arithmetic on them plus a few collective costs: hundreds of thousands of plans per
//! second per core, the same for a thousand chips as for a million. Groups run in parallel
//! (rayon); results are merged in a fixed order, so the answer does not depend on threads.

use rainier_hw::Chip;
use rainier_model::{Model, Recompute};
use rayon::prelude::*;
use serde::Serialize;

use crate::train::{Degrees, Outcome, Placement, Planner};
use crate::{PlanError, TrainConfig, TrainReport};

/// What the search leaves open beyond the config's `None` degrees.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// `None`: try none, selective and full.
    pub recompute: Option<Recompute>,
    /// `None`: try ZeRO 0 to the deepest stage the chip's stack runs (3; 1 on Neuron, whose
    /// NeuronX Distributed shards optimizer states only).
    pub zero: Option<u8>,
    /// Rows in the `plans` table.
    pub top: usize,
}

impl Default for SearchOptions {
    fn default() -> SearchOptions {
        SearchOptions { recompute: None, zero: None, top: 10 }
    }
}

/// One row of the plan table.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PlanSummary {
    pub tp: u64,
    pub cp: u64,
    pub ep: u64,
    pub pp: u64,
    pub vpp: u64,
    pub dp: u64,
    pub micro_batch: u64,
    pub recompute: String,
    pub zero: u8,
    pub placement: Placement,
    pub chips_used: u64,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub memory_gib_per_device: f64,
    pub usd_per_million_tokens: f64,
}

/// The search's answer: the best plan by throughput in full (its fields at the top level),
/// the best by cost, and the top plans by throughput.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SearchReport {
    #[serde(flatten)]
    pub best: TrainReport,
    pub best_by_cost: PlanSummary,
    pub plans: Vec<PlanSummary>,
    /// Plans evaluated, and how many of them fit in memory.
    pub evaluated: u64,
    pub fitting: u64,
}

/// Progress of a search: `(groups done, groups in all)`.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Candidate values of each dimension.
struct Space {
    tps: Vec<u64>,
    cps: Vec<u64>,
    eps: Vec<u64>,
    pps: Vec<u64>,
    mbs: Vec<u64>,
    recomputes: Vec<Recompute>,
    zeros: Vec<u8>,
    placements: Vec<Placement>,
    /// Interleaving: the config's, or every divisor of the layers per stage.
    vpp: Option<u64>,
    /// `None`: exact fill of the cluster; `Some`: largest dividing the batch (idle allowed).
    dp: Option<u64>,
    partial: bool,
}

fn powers(limit: u64) -> impl Iterator<Item = u64> {
    (0..40).map(|i| 1u64 << i).take_while(move |v| *v <= limit)
}

fn divisors(n: u64) -> Vec<u64> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut i = 1;
    while i * i <= n {
        if n % i == 0 {
            small.push(i);
            if i != n / i {
                large.push(n / i);
            }
        }
        i += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

/// Best plan among those a practitioner would try: TP a power of two inside one node or
/// instance, PP a power of two dividing the layers, micro-batches 1, 2, 4, for MoE models EP
/// a power of two dividing the experts, the config's CP/VPP (default 1), recompute and ZeRO.
/// The fastest that fits, else the smallest.
pub(crate) fn choose(planner: &Planner) -> Result<TrainReport, PlanError> {
    let (model, cfg, chip) = (planner.model, planner.cfg, planner.chip);
    let node = u64::from(chip.node.chips) * u64::from(planner.per_chip);
    let tp_limit = node.min(planner.topology.scale_up_ranks()).min(planner.ranks);
    let space = Space {
        tps: cfg.tp.map_or_else(
            || powers(tp_limit).filter(|tp| model.heads % tp == 0).collect(),
            |t| vec![t],
        ),
        cps: vec![cfg.cp.unwrap_or(1)],
        eps: cfg.ep.map_or_else(
            || match model.moe {
                Some(moe) => powers(moe.experts).filter(|ep| moe.experts % ep == 0).collect(),
                None => vec![1],
            },
            |e| vec![e],
        ),
        pps: cfg.pp.map_or_else(
            || powers(model.layers).filter(|pp| model.layers % pp == 0).collect(),
            |p| vec![p],
        ),
        mbs: cfg.micro_batch.map_or_else(|| vec![1, 2, 4], |m| vec![m]),
        recomputes: vec![cfg.recompute],
        zeros: vec![cfg.zero],
        placements: vec![cfg.placement.unwrap_or(Placement::DpInner)],
        vpp: Some(cfg.vpp.unwrap_or(1)),
        dp: cfg.dp,
        // As in the search: chips may stay idle (reported as `chips_used`), so given degrees
        // that use fewer ranks than the cluster has run as given.
        partial: true,
    };
    let result = run(planner, &space, 1, None)?;
    match result.ranked.first() {
        Some((d, o)) => Ok(planner.report(d, o, true)),
        None => {
            let (d, o) = result.smallest.ok_or_else(|| no_plan(planner, result.last_error))?;
            Ok(planner.report(&d, &o, true))
        }
    }
}

fn no_plan(planner: &Planner, last: Option<PlanError>) -> PlanError {
    match last {
        Some(e) => PlanError::NoPlan(e.to_string()),
        None => PlanError::NoPlan(format!(
            "no tp × cp × pp × dp over {} ranks matches the given degrees and divides the model",
            planner.ranks
        )),
    }
}

/// Searches every valid plan of `cfg` (its `None` degrees open) and ranks those that fit.
pub fn search(
    model: &Model,
    chip: &Chip,
    cfg: &TrainConfig,
    options: &SearchOptions,
    progress: Option<Progress>,
) -> Result<SearchReport, PlanError> {
    let planner = Planner::new(model, chip, cfg)?;
    // TP may span the whole scale-up fabric (an UltraServer's instances too), priced on the
    // levels it crosses; the default plan (`choose`) stays inside one instance.
    let tp_limit = planner.topology.scale_up_fabric_ranks().min(planner.ranks);
    let seq = cfg.seq;
    let space = Space {
        tps: cfg.tp.map_or_else(
            || powers(tp_limit).filter(|tp| model.heads % tp == 0).collect(),
            |t| vec![t],
        ),
        cps: cfg.cp.map_or_else(
            || powers(32).filter(|&cp| cp == 1 || seq % (2 * cp) == 0).collect(),
            |c| vec![c],
        ),
        eps: cfg.ep.map_or_else(
            || match model.moe {
                Some(moe) => powers(moe.experts).filter(|ep| moe.experts % ep == 0).collect(),
                None => vec![1],
            },
            |e| vec![e],
        ),
        pps: cfg.pp.map_or_else(|| (1..=model.layers).collect(), |p| vec![p]),
        mbs: cfg.micro_batch.map_or_else(|| vec![1, 2, 4, 8], |m| vec![m]),
        recomputes: options.recompute.map_or_else(
            || vec![Recompute::None, Recompute::Selective, Recompute::Full],
            |r| vec![r],
        ),
        zeros: options.zero.map_or_else(|| (0..=planner.max_zero()).collect(), |z| vec![z]),
        placements: cfg.placement.map_or_else(|| Placement::ALL.to_vec(), |p| vec![p]),
        vpp: cfg.vpp,
        dp: cfg.dp,
        partial: cfg.dp.is_none(),
    };
    let result = run(&planner, &space, options.top.max(1), progress)?;
    let Some((best_d, best_o)) = result.ranked.first() else {
        return Err(match result.smallest {
            Some((_, o)) => PlanError::NoPlan(format!(
                "no plan fits in memory: the smallest needs {:.1} GiB per {} of {:.1} GiB",
                o.memory.total,
                if planner.per_chip > 1 { "rank" } else { "device" },
                o.memory.capacity
            )),
            None => no_plan(&planner, result.last_error),
        });
    };
    let usd = planner.report(best_d, best_o, true).economics.usd_per_chip_hour;
    let summary = |d: &Degrees, o: &Outcome| {
        let per_chip = o.tokens_per_s / o.chips_used as f64;
        let mfu = per_chip * model.model_flops_per_token(cfg.seq)
            / (planner.cost.peak_flops() * f64::from(planner.per_chip));
        PlanSummary {
            tp: d.tp,
            cp: d.cp,
            ep: d.ep,
            pp: d.pp,
            vpp: d.vpp,
            dp: d.dp,
            micro_batch: d.mb,
            recompute: crate::recompute_name(d.recompute).into(),
            zero: d.zero,
            placement: d.placement,
            chips_used: o.chips_used,
            step_time_s: o.step,
            tokens_per_s: o.tokens_per_s,
            mfu,
            memory_gib_per_device: o.memory.total,
            usd_per_million_tokens: usd * o.chips_used as f64 / 3600.0 / o.tokens_per_s * 1e6,
        }
    };
    let (cost_d, cost_o) = result.cheapest.unwrap_or((*best_d, *best_o));
    Ok(SearchReport {
        best: planner.report(best_d, best_o, true),
        best_by_cost: summary(&cost_d, &cost_o),
        plans: result.ranked.iter().map(|(d, o)| summary(d, o)).collect(),
        evaluated: result.evaluated,
        fitting: result.fitting,
    })
}

/// What one pass over a space found.
#[derive(Default)]
struct Found {
    /// Fitting plans, fastest first, at most `top`.
    ranked: Vec<(Degrees, Outcome)>,
    /// The fitting plan with the lowest chip-seconds per token.
    cheapest: Option<(Degrees, Outcome)>,
    /// The plan with the least memory (when none fits).
    smallest: Option<(Degrees, Outcome)>,
    evaluated: u64,
    fitting: u64,
    last_error: Option<PlanError>,
}

/// Orders by a score, ties broken by the degrees, so results never depend on thread timing.
fn better(a: (f64, &Degrees), b: (f64, &Degrees)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl Found {
    fn add(&mut self, d: Degrees, o: Outcome, top: usize) {
        self.evaluated += 1;
        if o.fits() {
            self.fitting += 1;
            self.offer_cheapest(d, o);
            self.offer_ranked(d, o, top);
        } else {
            self.offer_smallest(d, o);
        }
    }

    fn offer_smallest(&mut self, d: Degrees, o: Outcome) {
        let key = |o: &Outcome| o.memory.total;
        if self.smallest.as_ref().is_none_or(|(sd, so)| better((key(&o), &d), (key(so), sd))) {
            self.smallest = Some((d, o));
        }
    }

    /// Cost per token is proportional to chips used per token per second.
    fn offer_cheapest(&mut self, d: Degrees, o: Outcome) {
        let key = |o: &Outcome| o.chips_used as f64 / o.tokens_per_s;
        if self.cheapest.as_ref().is_none_or(|(cd, co)| better((key(&o), &d), (key(co), cd))) {
            self.cheapest = Some((d, o));
        }
    }

    fn offer_ranked(&mut self, d: Degrees, o: Outcome, top: usize) {
        let key = |o: &Outcome| -o.tokens_per_s;
        let at = self.ranked.partition_point(|(rd, ro)| better((key(ro), rd), (key(&o), &d)));
        if at < top {
            self.ranked.insert(at, (d, o));
            self.ranked.truncate(top);
        }
    }

    fn merge(mut self, other: Found, top: usize) -> Found {
        for (d, o) in other.ranked {
            self.offer_ranked(d, o, top);
        }
        if let Some((d, o)) = other.cheapest {
            self.offer_cheapest(d, o);
        }
        if let Some((d, o)) = other.smallest {
            self.offer_smallest(d, o);
        }
        self.evaluated += other.evaluated;
        self.fitting += other.fitting;
        self.last_error = self.last_error.or(other.last_error);
        self
    }
}

fn run(
    planner: &Planner,
    space: &Space,
    top: usize,
    progress: Option<Progress>,
) -> Result<Found, PlanError> {
    let (model, cfg) = (planner.model, planner.cfg);
    let batch_divisors = divisors(cfg.global_batch);
    let mut groups = Vec::new();
    for &tp in &space.tps {
        for &cp in &space.cps {
            for &ep in &space.eps {
                for &mb in &space.mbs {
                    groups.push((tp, cp, ep, mb));
                }
            }
        }
    }
    let total = groups.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let found = groups
        .par_iter()
        .map(|&(tp, cp, ep, mb)| {
            let mut found = Found::default();
            let mut costs = None;
            for (pp, dp) in space.pps.iter().flat_map(|&pp| {
                let inner = tp.checked_mul(cp).and_then(|x| x.checked_mul(pp));
                let dps = inner.map_or_else(Vec::new, |inner| {
                    choose_dp(planner, space, &batch_divisors, inner, mb, ep)
                });
                dps.into_iter().map(move |dp| (pp, dp))
            }) {
                let vpps: Vec<u64> = match space.vpp {
                    Some(v) => vec![v],
                    None if pp == 1 => vec![1],
                    // Plain 1F1B, or interleaving where the layers split evenly into
                    // pp × vpp chunks (up to 16 virtual stages).
                    None => std::iter::once(1)
                        .chain((2..=16).filter(|v| model.layers % (pp * v) == 0))
                        .collect(),
                };
                for &vpp in &vpps {
                    for &recompute in &space.recomputes {
                        for &zero in &space.zeros {
                            for &placement in &space.placements {
                                // Placement only matters with both DP and PP.
                                if placement != space.placements[0] && (pp == 1 || dp == 1) {
                                    continue;
                                }
                                let d = Degrees {
                                    tp,
                                    cp,
                                    ep,
                                    pp,
                                    vpp,
                                    dp,
                                    mb,
                                    recompute,
                                    zero,
                                    placement,
                                };
                                if let Err(e) = planner.check(&d, space.partial) {
                                    found.last_error = Some(e);
                                    continue;
                                }
                                let costs = costs
                                    .get_or_insert_with(|| planner.layer_costs(tp, cp, ep, mb));
                                let o = planner.outcome(costs, &d);
                                found.add(d, o, top);
                            }
                        }
                    }
                }
            }
            if let Some(report) = progress {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                report(n, total);
            }
            found
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Found::default(), |a, b| a.merge(b, top));
    Ok(found)
}

/// The data-parallel degrees to try for `inner = tp × cp × pp`: the config's, the exact fill
/// of the cluster, or (idle chips allowed) every one that divides the batch per micro-batch
/// size, fits the cluster and is a multiple of `ep`, largest first: fewer replicas can be
/// faster (more micro-batches per pipeline, a smaller bubble), so a larger cluster is never
/// worse than a smaller one.
fn choose_dp(
    planner: &Planner,
    space: &Space,
    divisors: &[u64],
    inner: u64,
    mb: u64,
    ep: u64,
) -> Vec<u64> {
    let limit = planner.ranks / inner;
    if limit == 0 {
        return Vec::new();
    }
    if let Some(dp) = space.dp {
        return vec![dp];
    }
    let per_mb = planner.cfg.global_batch / mb;
    if planner.cfg.global_batch % mb != 0 {
        return Vec::new();
    }
    if !space.partial {
        return if planner.ranks % inner == 0 { vec![limit] } else { Vec::new() };
    }
    divisors
        .iter()
        .rev()
        .copied()
        .filter(|&d| d <= limit && per_mb % d == 0 && d % ep == 0)
        .collect()
}
