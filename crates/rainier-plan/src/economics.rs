//! Money, energy and goodput of a training job.
//!
//! Price: the catalog's rate per chip-hour on the asked basis (on-demand or capacity block),
//! converted from the other one where the chip has no published price on it (by
//! [`CAPACITY_BLOCK_OVER_ON_DEMAND`], marked derived), or its best committed rate, or the
//! user's. Power: each chip draws `TDP × (idle + (1 − idle) × busy)`, `busy`
//! being the share of the step its engines compute; the host, NICs and fans draw the
//! catalog's system power minus the chip's TDP at all times; the facility multiplies by the
//! provider's PUE. Goodput: failures arrive at the cluster's rate (per-chip MTBF ÷ chips);
//! every checkpoint stops training for its write; a failure costs a restart, a restore and on
//! average half a checkpoint interval of lost work; the interval is Young/Daly's optimum
//! `τ = √(2·δ·M)`.

use rainier_hw::{Chip, PriceBasis};
use rainier_perf::Assumption;
use serde::Serialize;

pub(crate) const IDLE_POWER_FRACTION: Assumption = Assumption {
    name: "power.idle_fraction",
    value: 0.3,
    why: "share of TDP a chip draws while it waits on communication (clocks and HBM stay up); measured H100s draw 690–699 W of 700 W in dense training (hardware-catalog §6 [meas CAL]), idle ≈ 10–15 %; stalls inside a step sit between",
};
pub(crate) const MTBF_CHIP_HOURS: Assumption = Assumption {
    name: "goodput.mtbf_chip_hours",
    value: 50_700.0,
    why: "Llama 3 (Dubey et al. 2024, §3.3.4): 419 unexpected interruptions in 54 days on 16,384 H100s ⇒ 54·24·16384/419 ≈ 50,700 chip-hours between failures; assumed for every chip (no Trainium or TPU figure is public)",
};
pub(crate) const CHECKPOINT_BYTES_PER_S_PER_CHIP: Assumption = Assumption {
    name: "goodput.checkpoint_bytes_per_s_per_chip",
    value: 2e12 / 16_384.0,
    why: "Llama 3 (Dubey et al. 2024, §3.3.1): Tectonic sustains 2 TB/s for the 16,384-GPU cluster ⇒ ~122 MB/s per chip, storage assumed provisioned in proportion to the cluster",
};
pub(crate) const RESTART_S: Assumption = Assumption {
    name: "goodput.restart_s",
    value: 600.0,
    why: "rescheduling, process start, collective initialization and warm-up after a failure, before the checkpoint restore; no public figure (10 minutes assumed)",
};

pub(crate) const CAPACITY_BLOCK_OVER_ON_DEMAND: Assumption = Assumption {
    name: "price.capacity_block_over_on_demand",
    value: 0.83,
    why: "AWS's capacity-block rate over its on-demand rate where both are published (hardware-catalog §2.2 [doc via AWS-RPT], 2026-07/08): p5.48xlarge $41.528/$55.04 = 0.755, p5en.48xlarge $54.92/$63.296 = 0.868, p6-b200.48xlarge $98.84/$113.93 = 0.868; their mean 0.83, range 0.75-0.87; applied to chips sold on one basis only (Trn2, the Trn2 UltraServer and GB200 by capacity block; A100 and the TPUs on demand), which AWS does not price on both",
};

/// The range of [`CAPACITY_BLOCK_OVER_ON_DEMAND`] over AWS's published pairs.
const RATIO_RANGE: (f64, f64) = (0.75, 0.87);

/// The named assumptions of the economics and goodput model.
pub const ECONOMICS_ASSUMPTIONS: &[Assumption] = &[
    IDLE_POWER_FRACTION,
    MTBF_CHIP_HOURS,
    CHECKPOINT_BYTES_PER_S_PER_CHIP,
    RESTART_S,
    CAPACITY_BLOCK_OVER_ON_DEMAND,
    ELASTIC_THRESHOLD,
    REPLICA_RECOVERY_S,
    REPAIR_HOURS,
];

/// Which price to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pricing {
    /// On-demand rates; a chip sold by capacity block only at its rate over
    /// [`CAPACITY_BLOCK_OVER_ON_DEMAND`].
    #[default]
    OnDemand,
    /// Capacity-block rates; a chip sold on demand only at its rate times the ratio.
    CapacityBlock,
    /// The best published committed rate (reserved, committed use or capacity block).
    Committed,
}

/// The `[low, high]` of the price [`economics`] uses for `chip` under `cfg`: an assumed
/// price's catalog range, widened by the conversion ratio's range (0.75-0.87) where it is
/// converted between bases; `None` for a published price taken as it is, or the user's.
pub fn price_range(chip: &Chip, cfg: &EconomicsConfig) -> Option<(f64, f64)> {
    let basis = match (cfg.usd_per_chip_hour, cfg.pricing) {
        (Some(_), _) => return None,
        (None, Pricing::Committed) if chip.node.usd_per_chip_hour_committed.is_some() => {
            return None
        }
        (None, Pricing::CapacityBlock) => PriceBasis::CapacityBlock,
        (None, _) => PriceBasis::OnDemand,
    };
    let node = &chip.node;
    let listed = node.usd_per_chip_hour.value;
    let (lo, hi) = match node.usd_per_chip_hour_range {
        Some([lo, hi]) => (lo, hi),
        None => (listed, listed),
    };
    // A published committed price on the basis is taken as it is (the catalog assumes none);
    // otherwise the listed price, converted when it is on the other basis.
    let range = match node.price_basis {
        None => (lo, hi),
        Some(b) if b == basis => (lo, hi),
        Some(_) if node.committed_basis == Some(basis) => return None,
        Some(_) => match basis {
            PriceBasis::OnDemand => (lo / RATIO_RANGE.1, hi / RATIO_RANGE.0),
            _ => (lo * RATIO_RANGE.0, hi * RATIO_RANGE.1),
        },
    };
    (range.0 < range.1).then_some(range)
}

/// A chip's price per chip-hour on `basis`: its published one, or the other basis's
/// converted (value, grade, source). A price of unstated basis is taken as it is.
fn price_on(chip: &Chip, basis: PriceBasis) -> (f64, String, String) {
    let node = &chip.node;
    let prices = [
        (Some(&node.usd_per_chip_hour), node.price_basis),
        (node.usd_per_chip_hour_committed.as_ref(), node.committed_basis),
    ];
    let published = |b: PriceBasis| prices.iter().find_map(|&(p, pb)| p.filter(|_| pb == Some(b)));
    if let Some(p) = published(basis) {
        return (p.value, p.grade.to_string(), format!("[{}] {}", p.grade, p.source));
    }
    let ratio = CAPACITY_BLOCK_OVER_ON_DEMAND.value;
    let other = match basis {
        PriceBasis::OnDemand => Some((PriceBasis::CapacityBlock, 1.0 / ratio)),
        PriceBasis::CapacityBlock => Some((PriceBasis::OnDemand, ratio)),
        _ => None,
    };
    if let Some((from, factor)) = other {
        if let Some(p) = published(from) {
            // A converted assumption stays an assumption.
            let grade = match p.grade {
                rainier_hw::Grade::Assumed => "assumed",
                _ => "derived",
            };
            return (
                p.value * factor,
                grade.into(),
                format!(
                    "[{grade}] no {basis} price published: the {from} rate ${:.3} × {factor:.3} ({}, range 0.75-0.87); [{}] {}",
                    p.value, CAPACITY_BLOCK_OVER_ON_DEMAND.name, p.grade, p.source
                ),
            );
        }
    }
    let p = &node.usd_per_chip_hour;
    (p.value, p.grade.to_string(), format!("[{}] {}", p.grade, p.source))
}

/// What the user sets about money, energy and failures (`None`: the catalog or the named
/// assumptions).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EconomicsConfig {
    pub pricing: Pricing,
    pub usd_per_chip_hour: Option<f64>,
    pub pue: Option<f64>,
    /// A token budget to train (e.g. 15e12): adds time, cost, energy and goodput.
    pub tokens: Option<f64>,
    pub mtbf_chip_hours: Option<f64>,
    /// Aggregate checkpoint storage bandwidth, bytes/s (default: per chip × chips).
    pub checkpoint_bytes_per_s: Option<f64>,
    pub restart_s: Option<f64>,
    pub recovery: Recovery,
}

/// How a job recovers from a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Job restart where it costs at most [`ELASTIC_THRESHOLD`] of the time, else the replica
    /// swap (what operators at scales where restarts do not pay deploy).
    #[default]
    Auto,
    /// Every failure restarts the whole job from its last checkpoint.
    Restart,
    /// A failure takes out one data-parallel replica, which a hot spare replaces while the
    /// others train on (elastic data parallelism, peer copies of the state).
    Replica,
}

/// A restart's share of wall time beyond which `Recovery::Auto` swaps replicas instead.
pub(crate) const ELASTIC_THRESHOLD: Assumption = Assumption {
    name: "goodput.elastic_threshold",
    value: 0.10,
    why: "an operator's choice, assumed: past 10 % of wall time lost to whole-job restarts, the job runs with hot spares and replica-level recovery (range 0.02-0.3; Llama 3's 16k-GPU run restarted whole and kept >90 % effective time)",
};
/// A replica's recovery: spare swap, restart, rejoin, state copied from a peer replica.
pub(crate) const REPLICA_RECOVERY_S: Assumption = Assumption {
    name: "goodput.replica_recovery_s",
    value: 120.0,
    why: "no public figure: swapping a hot-spare node into the failed replica, restarting its processes, rejoining the collectives and copying its state from a peer replica, while the others train on (range 30-600 s)",
};
/// Hours a failed node is out before it is repaired or replaced (sizes the spare pool).
pub(crate) const REPAIR_HOURS: Assumption = Assumption {
    name: "goodput.repair_hours",
    value: 24.0,
    why: "no public figure: a failed node's diagnosis and repair or replacement (range 4-72 h); the hot-spare pool holds the nodes out at once"
};

/// Cost and power of the job, and what a token budget takes.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Economics {
    pub usd_per_chip_hour: f64,
    /// "on-demand", "capacity-block", "committed" or "user".
    pub pricing: String,
    /// The price's grade ("doc", "3p", "derived" when converted between bases, "assumed",
    /// "user").
    pub price_grade: String,
    /// Where the price comes from.
    pub price_source: String,
    /// Dollars per million trained tokens, before goodput losses.
    pub usd_per_million_tokens: f64,
    /// Average chip power at this plan's busy share, watts.
    pub chip_w: f64,
    /// Chip plus host, NICs and fans per chip, watts (before PUE).
    pub system_w_per_chip: f64,
    pub pue: f64,
    /// Facility power of the chips used, megawatts (PUE included).
    pub facility_mw: f64,
    /// Present when a token budget is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// Time, money and energy to train a token budget, with failures.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Budget {
    pub tokens: f64,
    /// Failure-free time, days.
    pub ideal_days: f64,
    /// Time with checkpoints, failures and restarts, days (`null` if the job cannot make
    /// progress between failures).
    pub time_to_train_days: Option<f64>,
    pub cost_usd: Option<f64>,
    /// Facility energy, MWh.
    pub energy_mwh: Option<f64>,
    pub goodput: Goodput,
}

/// Checkpointing and failures.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Goodput {
    /// Share of wall time that trains (1 without failures or checkpoints).
    pub fraction: f64,
    pub mtbf_chip_hours: f64,
    /// Mean time between failures of the whole job, hours.
    pub job_mtbf_hours: f64,
    /// Model and optimizer state written per checkpoint, GB.
    pub checkpoint_gb: f64,
    pub checkpoint_write_s: f64,
    /// Restart plus restore, seconds.
    pub recovery_s: f64,
    /// Young/Daly optimal interval between checkpoints, minutes.
    pub checkpoint_interval_min: f64,
    pub expected_failures: f64,
    /// "job restart" or "replica swap".
    pub recovery: String,
    /// Hot-spare nodes a replica swap holds (failed nodes out for repair at once); 0 for job
    /// restarts.
    pub spare_nodes: f64,
}

/// Inputs from the step model.
pub(crate) struct JobFacts {
    pub chips: u64,
    /// Data-parallel replicas (fault domains of a replica swap).
    pub replicas: u64,
    pub tokens_per_s: f64,
    /// Share of the step the chips compute.
    pub busy: f64,
    /// Bytes a checkpoint writes (weights, master copy, optimizer states).
    pub state_bytes: f64,
}

/// Prices, power and (with a budget) time, cost, energy and goodput.
pub(crate) fn economics(chip: &Chip, job: &JobFacts, cfg: &EconomicsConfig) -> Economics {
    let node = &chip.node;
    let (usd, pricing, price_grade, price_source) = match (cfg.usd_per_chip_hour, cfg.pricing) {
        (Some(usd), _) => (usd, "user", "user".to_string(), "--usd-per-chip-hour".to_string()),
        (None, Pricing::Committed) => match &node.usd_per_chip_hour_committed {
            Some(c) => {
                (c.value, "committed", c.grade.to_string(), format!("[{}] {}", c.grade, c.source))
            }
            None => {
                let (usd, grade, source) = price_on(chip, PriceBasis::OnDemand);
                (usd, "on-demand", grade, format!("no committed rate published; {source}"))
            }
        },
        (None, Pricing::OnDemand) => {
            let (usd, grade, source) = price_on(chip, PriceBasis::OnDemand);
            (usd, "on-demand", grade, source)
        }
        (None, Pricing::CapacityBlock) => {
            let (usd, grade, source) = price_on(chip, PriceBasis::CapacityBlock);
            (usd, "capacity-block", grade, source)
        }
    };
    let chips = job.chips as f64;
    let usd_per_s = usd * chips / 3600.0;
    let idle = IDLE_POWER_FRACTION.value;
    let tdp = chip.power_w.value;
    let chip_w = tdp * (idle + (1.0 - idle) * job.busy.clamp(0.0, 1.0));
    let overhead = node
        .host_w_per_chip
        .as_ref()
        .map_or((node.system_w_per_chip.value - tdp).max(0.0), |h| h.value);
    let system_w = chip_w + overhead;
    let pue = cfg.pue.unwrap_or(node.pue.value);
    let facility_w = chips * system_w * pue;
    let budget = cfg.tokens.map(|tokens| {
        let ideal_s = tokens / job.tokens_per_s;
        let goodput = goodput(job, cfg);
        let wall_s = (goodput.fraction > 0.0).then(|| ideal_s / goodput.fraction);
        Budget {
            tokens,
            ideal_days: ideal_s / 86_400.0,
            time_to_train_days: wall_s.map(|s| s / 86_400.0),
            cost_usd: wall_s.map(|s| s * usd_per_s),
            // Chips idle through restarts still draw power; counted at the training draw.
            energy_mwh: wall_s.map(|s| facility_w * s / 3.6e9),
            goodput: Goodput {
                expected_failures: wall_s.unwrap_or(0.0) / 3600.0 / goodput.job_mtbf_hours,
                ..goodput
            },
        }
    });
    Economics {
        usd_per_chip_hour: usd,
        pricing: pricing.into(),
        price_grade,
        price_source,
        usd_per_million_tokens: usd_per_s / job.tokens_per_s * 1e6,
        chip_w,
        system_w_per_chip: system_w,
        pue,
        facility_mw: facility_w / 1e6,
        budget,
    }
}

/// Young/Daly: with checkpoint cost δ, recovery R and job MTBF M, checkpoint every
/// `τ = √(2δM)`; the useful share of wall time is `τ/(τ+δ) · (1 − (R + (τ+δ)/2)/M)`.
fn goodput(job: &JobFacts, cfg: &EconomicsConfig) -> Goodput {
    let mtbf = cfg.mtbf_chip_hours.unwrap_or(MTBF_CHIP_HOURS.value);
    let job_mtbf_s = mtbf * 3600.0 / job.chips as f64;
    let bandwidth = cfg
        .checkpoint_bytes_per_s
        .unwrap_or(CHECKPOINT_BYTES_PER_S_PER_CHIP.value * job.chips as f64);
    let write = job.state_bytes / bandwidth;
    let recovery = cfg.restart_s.unwrap_or(RESTART_S.value) + write;
    let tau = (2.0 * write * job_mtbf_s).sqrt();
    let restart = (tau / (tau + write) * (1.0 - (recovery + (tau + write) / 2.0) / job_mtbf_s))
        .clamp(0.0, 1.0);
    // Replica swap: a failure idles one of the replicas for its recovery; the checkpoints to
    // storage become rare safety copies (not charged).
    let swap_s = REPLICA_RECOVERY_S.value;
    let swap = (1.0 - swap_s / job_mtbf_s / job.replicas.max(1) as f64).clamp(0.0, 1.0);
    let use_swap = job.replicas > 1
        && match cfg.recovery {
            Recovery::Replica => true,
            Recovery::Restart => false,
            Recovery::Auto => restart < 1.0 - ELASTIC_THRESHOLD.value && swap > restart,
        };
    let nodes_out = REPAIR_HOURS.value * 3600.0 / job_mtbf_s;
    Goodput {
        fraction: if use_swap { swap } else { restart },
        mtbf_chip_hours: mtbf,
        job_mtbf_hours: job_mtbf_s / 3600.0,
        checkpoint_gb: job.state_bytes / 1e9,
        checkpoint_write_s: write,
        recovery_s: if use_swap { swap_s } else { recovery },
        checkpoint_interval_min: tau / 60.0,
        expected_failures: 0.0,
        recovery: if use_swap { "replica swap" } else { "job restart" }.into(),
        spare_nodes: if use_swap { nodes_out.ceil() } else { 0.0 },
    }
}
