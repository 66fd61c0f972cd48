//! Disaggregated serving: prompts prefilled on one pool of replicas and decoded on another
//! (DistServe, Splitwise, NVIDIA Dynamo, llm-d, SGLang and vLLM prefill/decode
//! disaggregation), each request's KV cache moved between them over the scale-out network.
//!
//! Steady state, per pool: a prefill replica runs `b` prompts per step (at most the
//! scheduler's token budget, the largest `b` meeting the TTFT SLO that fits), a decode replica
//! keeps `n` sequences in flight (the most that fit and meet the TPOT SLO), with no prompt
//! chunks riding on its steps. The served rate is the smaller pool's capacity (or the
//! network's); a search finds each pool's TP and the split of the chips with the lowest cost
//! per output token. The KV transfer streams layer by layer behind the prefill (as vLLM's
//! NIXL and Mooncake connectors do): TTFT pays what the last layer's transfer and any excess
//! over the prefill add. Queueing is not modelled (the pools run at the capacity they have).

use rainier_hw::Chip;
use rainier_model::Model;
use serde::Serialize;

use super::{tp_candidates, ServeConfig, Server, CHUNK_TOKENS};
use crate::train::ranks_per_chip;
use crate::PlanError;

const GIB: f64 = (1u64 << 30) as f64;

/// How serving splits into a prefill pool and a decode pool; `None` fields are searched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disaggregation {
    /// Chips of the prefill pool (the rest of the cluster's `chips` decode).
    pub prefill_chips: Option<u64>,
    pub prefill_tp: Option<u64>,
    /// Context parallelism of a prefill replica (ring attention over `cp` groups of
    /// `prefill_tp` ranks, each holding `1/cp` of the prompt); searched over 1, 2, 4, 8.
    pub prefill_cp: Option<u64>,
    pub decode_tp: Option<u64>,
}

/// One pool of a disaggregated deployment.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PoolReport {
    pub chip: String,
    pub chips: u64,
    pub tp: u64,
    /// Context parallelism (prefill; 1 for decode).
    pub cp: u64,
    pub replicas: u64,
    /// Prefill: prompts per step; decode: sequences in flight per replica.
    pub batch: u64,
    /// One step, ms (decode: per output token, speculation included).
    pub step_ms: f64,
    /// Requests per second the pool can prefill (or finish decoding).
    pub capacity_requests_per_s: f64,
    /// The served rate over the capacity.
    pub utilization: f64,
    pub memory_gib_per_device: f64,
    pub capacity_gib_per_device: f64,
    pub usd_per_chip_hour: f64,
}

/// Moving each request's KV cache from its prefill replica to its decode replica.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct KvTransferReport {
    /// K/V bytes one request's decode replica receives (all layers, every rank's copy).
    pub bytes_per_request: f64,
    /// The transfer alone at the pools' scale-out bandwidth, ms.
    pub transfer_ms: f64,
    /// What it adds to TTFT, streamed layer by layer behind the prefill, ms.
    pub exposed_ms: f64,
    /// Share of the prefill pool's scale-out bandwidth the served rate uses.
    pub network_utilization: f64,
}

/// The same chips serving colocated (continuous batching with chunked prefill) at the SLO.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ColocatedReport {
    pub chip: String,
    pub chips: u64,
    pub tp: u64,
    pub ttft_ms: f64,
    pub tpot_ms: f64,
    pub output_tokens_per_s: f64,
    pub cost_usd_per_million_output_tokens: f64,
}

/// A disaggregated deployment at its steady state.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DisaggregatedReport {
    pub model: String,
    /// Chips of the cluster; the pools use whole replicas of them and may leave a few idle.
    pub chips: u64,
    pub input_len: u64,
    pub output_len: u64,
    pub prefill: PoolReport,
    pub decode: PoolReport,
    pub kv_transfer: KvTransferReport,
    /// Prefill step plus the exposed KV transfer (no queueing), ms.
    pub ttft_ms: f64,
    pub tpot_ms: f64,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub output_tokens_per_s_per_chip: f64,
    pub cost_usd_per_million_output_tokens: f64,
    pub meets_slo: bool,
    /// Colocated serving on the whole cluster for comparison (decode's chip kind; absent when
    /// no colocated plan meets the SLO or the kinds differ in number of chips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colocated: Option<ColocatedReport>,
    pub notes: Vec<String>,
}

/// What one replica of a pool can do, independent of the pool's size.
#[derive(Debug, Clone)]
struct Unit {
    tp: u64,
    cp: u64,
    /// Chips of the smallest whole number of replicas, and that number.
    chips: u64,
    replicas: u64,
    batch: u64,
    step_ms: f64,
    /// Requests per second per unit.
    rate: f64,
    memory_gib: f64,
    capacity_gib: f64,
    meets: bool,
}

/// The pool configuration of `chips` chips (the cluster's other fields kept).
fn pool_cfg(cfg: &ServeConfig, chips: u64) -> ServeConfig {
    ServeConfig { chips, workload: None, ..cfg.clone() }
}

fn unit_chips(tp: u64, per_chip: u64) -> u64 {
    tp.div_ceil(per_chip)
}

/// The prefill pool's configuration: the draft of speculative decoding runs on the decode
/// pool (its prompt prefill is not costed there).
fn prefill_cfg(cfg: &ServeConfig) -> ServeConfig {
    ServeConfig { speculative: None, ..cfg.clone() }
}

/// The prefill server of one unit: TP `tp`, context parallelism `cp`.
fn prefill_server<'a>(
    model: &'a Model,
    chip: &'a Chip,
    pool: &'a ServeConfig,
    (tp, cp): (u64, u64),
) -> Result<Server<'a>, PlanError> {
    let server = Server::new(model, chip, pool, tp, 1, 1)?;
    if cp > 1 {
        server.with_context_parallel(cp)
    } else {
        Ok(server)
    }
}

/// Prefill units at TP `tp` and CP `cp`: one per number of prompts per step (powers of two
/// within the token budget) that fits and whose step meets the TTFT SLO, or the smallest
/// batch when none does. Whether the step plus the K/V transfer meets it is the pair's check.
fn prefill_units(model: &Model, chip: &Chip, cfg: &ServeConfig, (tp, cp): (u64, u64)) -> Vec<Unit> {
    let Ok(per_chip) = ranks_per_chip(chip, cfg.lnc).map(u64::from) else { return vec![] };
    let Some(ranks) = tp.checked_mul(cp) else { return vec![] };
    let chips = unit_chips(ranks, per_chip);
    let pool = pool_cfg(&prefill_cfg(cfg), chips);
    let Ok(server) = prefill_server(model, chip, &pool, (tp, cp)) else { return vec![] };
    let prompt = server.new_prompt_tokens() as f64;
    let most = (CHUNK_TOKENS.value / prompt).floor().max(1.0) as u64;
    let (weights, reserve) = server.fixed_memory();
    let mut units: Vec<Unit> = Vec::new();
    let mut b = 1u64;
    while b <= most {
        let step_ms = server.cached_prefill(b, true).total_ms;
        // Each rank holds its 1/cp of the prompts' K/V and activations.
        let kv = server.kv_bytes(b as f64, cfg.input_len as f64) / cp as f64;
        let tokens = b as f64 * prompt / cp as f64;
        let memory = weights + reserve + kv + server.workspace(tokens, b as f64);
        if memory > server.capacity() {
            break;
        }
        let meets = cfg.slo_ttft_ms.is_none_or(|s| step_ms <= s);
        if meets || units.is_empty() {
            units.push(Unit {
                tp,
                cp,
                chips,
                replicas: server.replicas,
                batch: b,
                step_ms,
                rate: server.replicas as f64 * b as f64 / (step_ms / 1e3),
                memory_gib: memory / GIB,
                capacity_gib: server.capacity() / GIB,
                meets,
            });
        }
        if !meets {
            break;
        }
        b *= 2;
    }
    units
}

/// A decode unit at TP `tp`: the most sequences in flight that fit and meet the TPOT SLO.
fn decode_unit(model: &Model, chip: &Chip, cfg: &ServeConfig, tp: u64) -> Option<Unit> {
    let per_chip = u64::from(ranks_per_chip(chip, cfg.lnc).ok()?);
    let chips = unit_chips(tp, per_chip);
    let pool = pool_cfg(cfg, chips);
    let server = Server::new(model, chip, &pool, tp, 1, 1).ok()?;
    let context = server.decode_context();
    let per_round = server.tokens_per_round();
    let output = cfg.output_len.max(1) as f64;
    let fits = |n: u64| {
        let (w, kv, ws, r) = server.continuous_memory(n, 0.0);
        (w + kv + ws + r <= server.capacity()).then_some(w + kv + ws + r)
    };
    fits(1)?;
    let mut best: Option<Unit> = None;
    let mut n = 1u64;
    while let Some(memory) = fits(n) {
        let tpot = server.round_ms(n, context) / per_round;
        let meets = cfg.slo_tpot_ms.is_none_or(|s| tpot <= s);
        if !meets && best.is_some() {
            break;
        }
        let rate = server.replicas as f64 * n as f64 / (tpot / 1e3) / output;
        if best.as_ref().is_none_or(|b| !b.meets || rate > b.rate) {
            best = Some(Unit {
                tp,
                cp: 1,
                chips,
                replicas: server.replicas,
                batch: n,
                step_ms: tpot,
                rate,
                memory_gib: memory / GIB,
                capacity_gib: server.capacity() / GIB,
                meets,
            });
        }
        if !meets || n >= 4096 {
            break;
        }
        n = (n + 1).max((n as f64 * 1.25) as u64);
    }
    best
}

/// Moving a request's K/V from the prefill pool to the decode pool.
struct Link {
    /// K/V bytes a request's decode replica receives (every decode rank's copy).
    bytes: f64,
    /// Scale-out bytes/s of one chip of each pool, and the slower side's step latency.
    prefill_chip_bytes_per_s: f64,
    decode_chip_bytes_per_s: f64,
    latency_s: f64,
}

impl Link {
    /// The bandwidth one prefill replica's transfers get: its share of its unit's NICs, or
    /// one decode replica's share of its unit's, whichever is smaller.
    fn replica_bytes_per_s(&self, p: &Unit, d: &Unit) -> f64 {
        let prefill = p.chips as f64 * self.prefill_chip_bytes_per_s / p.replicas as f64;
        let decode = d.chips as f64 * self.decode_chip_bytes_per_s / d.replicas as f64;
        prefill.min(decode)
    }

    /// Requests per second the pools' NICs carry: the smaller side's total over a request.
    fn capacity(&self, (p, p_units): (&Unit, u64), (d, d_units): (&Unit, u64)) -> f64 {
        let prefill = (p_units * p.chips) as f64 * self.prefill_chip_bytes_per_s;
        let decode = (d_units * d.chips) as f64 * self.decode_chip_bytes_per_s;
        prefill.min(decode) / self.bytes
    }

    /// A prefill step's K/V (its `b` prompts) at the replica's bandwidth, and what it adds
    /// to TTFT streamed layer by layer behind the step, seconds.
    fn transfer(&self, p: &Unit, d: &Unit, layers: u64) -> (f64, f64) {
        let transfer =
            self.latency_s + p.batch as f64 * self.bytes / self.replica_bytes_per_s(p, d);
        let exposed = (transfer - p.step_ms / 1e3).max(0.0) + transfer / layers as f64;
        (transfer, exposed)
    }
}

/// The K/V link between `prefill_chip` and `decode_chip` for decode replicas at TP
/// `decode_tp`.
fn kv_link(
    model: &Model,
    prefill_chip: &Chip,
    decode_chip: &Chip,
    cfg: &ServeConfig,
    decode: &Unit,
) -> Result<Link, PlanError> {
    let pool = pool_cfg(cfg, decode.chips);
    let server = Server::new(model, decode_chip, &pool, decode.tp, 1, 1)?;
    let bytes = server.kv_per_sequence(cfg.input_len as f64) * decode.tp as f64;
    let nic = |chip: &Chip| -> Result<(f64, f64), PlanError> {
        let per_chip = ranks_per_chip(chip, cfg.lnc)?;
        let topo = rainier_perf::Topology::new(chip, per_chip, &cfg.cluster.datacenter);
        let level = topo.levels.iter().find(|l| !l.scale_up).ok_or_else(|| {
            PlanError::Invalid(format!(
                "{} has no scale-out network to move the KV cache between pools",
                chip.name
            ))
        })?;
        Ok((level.bytes_per_s, level.latency_s))
    };
    let (p_bw, p_lat) = nic(prefill_chip)?;
    let (d_bw, d_lat) = nic(decode_chip)?;
    Ok(Link {
        bytes,
        prefill_chip_bytes_per_s: p_bw,
        decode_chip_bytes_per_s: d_bw,
        latency_s: p_lat.max(d_lat),
    })
}

/// The disaggregated deployment of `model`: prefill on `prefill_chip`, decode on
/// `decode_chip`, `cfg.chips` chips in all, split and sized as `split` says or searched.
pub fn serve_disaggregated(
    model: &Model,
    prefill_chip: &Chip,
    decode_chip: &Chip,
    cfg: &ServeConfig,
    split: &Disaggregation,
) -> Result<DisaggregatedReport, PlanError> {
    let mut report = search(model, prefill_chip, decode_chip, cfg, split)?;
    if prefill_chip.name == decode_chip.name {
        report.colocated =
            super::serve_search(model, decode_chip, cfg).ok().map(|c| ColocatedReport {
                chip: c.chip.clone(),
                chips: c.chips,
                tp: c.plan.tp,
                ttft_ms: c.continuous.ttft_ms,
                tpot_ms: c.continuous.tpot_ms,
                output_tokens_per_s: c.continuous.output_tokens_per_s,
                cost_usd_per_million_output_tokens: c.continuous.cost_usd_per_million_output_tokens,
            });
    }
    Ok(report)
}

/// [`serve_disaggregated`] on one chip kind with every degree searched, without the colocated
/// comparison (for a caller that has it already: `compare --serve`).
pub(crate) fn disaggregated_without_colocated(
    model: &Model,
    chip: &Chip,
    cfg: &ServeConfig,
) -> Result<DisaggregatedReport, PlanError> {
    search(model, chip, chip, cfg, &Disaggregation::default())
}

/// The cheapest deployment meeting the SLO, without the colocated comparison.
fn search(
    model: &Model,
    prefill_chip: &Chip,
    decode_chip: &Chip,
    cfg: &ServeConfig,
    split: &Disaggregation,
) -> Result<DisaggregatedReport, PlanError> {
    super::check(model, cfg)?;
    crate::train::check_counts(
        &[
            ("prefill-chips", split.prefill_chips),
            ("prefill-tp", split.prefill_tp),
            ("prefill-cp", split.prefill_cp),
            ("decode-tp", split.decode_tp),
        ],
        1 << 24,
    )?;
    if let Some(c) = split.prefill_chips.filter(|&c| c >= cfg.chips) {
        return Err(PlanError::Invalid(format!(
            "--prefill-chips {c} leaves none of the {} chips to decode",
            cfg.chips
        )));
    }
    if cfg.workload.is_some() {
        return Err(PlanError::Invalid(
            "a workload simulation of disaggregated pools is not modelled; drop --workload".into(),
        ));
    }
    let candidates = |chip: &Chip, tp: Option<u64>| -> Result<Vec<u64>, PlanError> {
        let per_chip = u64::from(ranks_per_chip(chip, cfg.lnc)?);
        let ranks = cfg.chips * per_chip;
        let domain = rainier_perf::Topology::new(chip, per_chip as u32, &cfg.cluster.datacenter)
            .scale_up_ranks();
        Ok(match tp {
            Some(t) => vec![t],
            None => tp_candidates(model, chip, ranks, domain),
        })
    };
    let cps: Vec<u64> = split.prefill_cp.map_or_else(|| vec![1, 2, 4, 8], |c| vec![c]);
    let prefills: Vec<Unit> = candidates(prefill_chip, split.prefill_tp)?
        .into_iter()
        .flat_map(|tp| cps.iter().map(move |&cp| (tp, cp)))
        .flat_map(|degrees| prefill_units(model, prefill_chip, cfg, degrees))
        .collect();
    let decodes: Vec<Unit> = candidates(decode_chip, split.decode_tp)?
        .into_iter()
        .filter_map(|tp| decode_unit(model, decode_chip, cfg, tp))
        .collect();
    let mut best: Option<(f64, DisaggregatedReport)> = None;
    let mut last_error = None;
    for d in &decodes {
        let link = match kv_link(model, prefill_chip, decode_chip, cfg, d) {
            Ok(link) => link,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let d_price = unit_price(model, decode_chip, cfg, d)?;
        for p in &prefills {
            let splits: Vec<u64> = match split.prefill_chips {
                Some(c) if c % p.chips == 0 => vec![c / p.chips],
                Some(_) => continue,
                None => (1..=cfg.chips.saturating_sub(d.chips) / p.chips).collect(),
            };
            // The split with the lowest chip-hours per request (the pools' own prices) is
            // found by arithmetic on the units' capacities; only it is costed in full.
            let p_price = unit_price(model, prefill_chip, cfg, p)?;
            let score = |units: u64| {
                let decode_units = cfg.chips.saturating_sub(units * p.chips) / d.chips;
                let network = link.capacity((p, units), (d, decode_units));
                let rate = (units as f64 * p.rate).min(decode_units as f64 * d.rate).min(network);
                let usd =
                    (units * p.chips) as f64 * p_price + (decode_units * d.chips) as f64 * d_price;
                (decode_units > 0 && rate > 0.0).then_some(usd / rate)
            };
            let cheapest = splits
                .into_iter()
                .filter_map(|u| score(u).map(|s| (s, u)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, units)) = cheapest {
                let decode_units = cfg.chips.saturating_sub(units * p.chips) / d.chips;
                let r = match deployment(
                    model,
                    (prefill_chip, p, units),
                    (decode_chip, d, decode_units),
                    &link,
                    cfg,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                };
                let key =
                    if r.meets_slo { r.cost_usd_per_million_output_tokens } else { f64::INFINITY };
                let better = match &best {
                    None => true,
                    Some((k, b)) => {
                        key.total_cmp(k).is_lt()
                            || (key == *k && !b.meets_slo && r.requests_per_s > b.requests_per_s)
                    }
                };
                if better {
                    best = Some((key, r));
                }
            }
        }
    }
    let (_, report) = best.ok_or_else(|| {
        last_error.unwrap_or_else(|| {
            PlanError::NoPlan(format!(
                "no split of {} chips holds a prefill replica of {} on {} and a decode replica on {}",
                cfg.chips, model.name, prefill_chip.name, decode_chip.name
            ))
        })
    })?;
    if !report.meets_slo && (cfg.slo_ttft_ms.is_some() || cfg.slo_tpot_ms.is_some()) {
        return Err(PlanError::NoPlan(format!(
            "no disaggregated plan of {} on {} chips meets the SLO: the best reach TTFT {:.1} ms and TPOT {:.2} ms",
            model.name, cfg.chips, report.ttft_ms, report.tpot_ms
        )));
    }
    Ok(report)
}

/// A chip-hour's price for a pool of `unit`'s chips.
fn unit_price(
    model: &Model,
    chip: &Chip,
    cfg: &ServeConfig,
    unit: &Unit,
) -> Result<f64, PlanError> {
    let pool = pool_cfg(&prefill_cfg(cfg), unit.chips);
    Ok(prefill_server(model, chip, &pool, (unit.tp, unit.cp))?.money(1.0, 1.0).2)
}

/// The steady state of `p_units` prefill units and `d_units` decode units.
fn deployment(
    model: &Model,
    (p_chip, p, p_units): (&Chip, &Unit, u64),
    (d_chip, d, d_units): (&Chip, &Unit, u64),
    link: &Link,
    cfg: &ServeConfig,
) -> Result<DisaggregatedReport, PlanError> {
    let (transfer_s, exposed_s) = link.transfer(p, d, model.layers);
    let network_cap = link.capacity((p, p_units), (d, d_units));
    let prefill_cap = p_units as f64 * p.rate;
    let decode_cap = d_units as f64 * d.rate;
    let rate = prefill_cap.min(decode_cap).min(network_cap);
    let ttft_ms = p.step_ms + exposed_s * 1e3;
    let tpot_ms = d.step_ms;
    let meets = p.meets
        && d.meets
        && cfg.slo_ttft_ms.is_none_or(|s| ttft_ms <= s)
        && cfg.slo_tpot_ms.is_none_or(|s| tpot_ms <= s);
    let output_tps = rate * cfg.output_len.max(1) as f64;
    let (p_chips, d_chips) = (p_units * p.chips, d_units * d.chips);
    // Each pool's cost per token of the shared stream, at its own chips and utilization.
    let money = |chip: &Chip, unit: &Unit, units: u64, cap: f64| -> Result<(f64, f64), PlanError> {
        let pool = pool_cfg(&prefill_cfg(cfg), units * unit.chips);
        let server = prefill_server(model, chip, &pool, (unit.tp, unit.cp))?;
        let (usd, _, usd_per_chip_hour, _) = server.money(output_tps, (rate / cap).min(1.0));
        Ok((usd, usd_per_chip_hour))
    };
    let (p_usd, p_price) = money(p_chip, p, p_units, prefill_cap)?;
    let (d_usd, d_price) = money(d_chip, d, d_units, decode_cap)?;
    let pool = |chip: &Chip, u: &Unit, units: u64, cap: f64, price: f64| PoolReport {
        chip: chip.name.clone(),
        chips: units * u.chips,
        tp: u.tp,
        cp: u.cp,
        replicas: units * u.replicas,
        batch: u.batch,
        step_ms: u.step_ms,
        capacity_requests_per_s: cap,
        utilization: rate / cap,
        memory_gib_per_device: u.memory_gib,
        capacity_gib_per_device: u.capacity_gib,
        usd_per_chip_hour: price,
    };
    let bound = if rate == network_cap {
        "the KV transfer network"
    } else if rate == prefill_cap {
        "the prefill pool"
    } else {
        "the decode pool"
    };
    Ok(DisaggregatedReport {
        model: model.name.clone(),
        chips: cfg.chips,
        input_len: cfg.input_len,
        output_len: cfg.output_len,
        prefill: pool(p_chip, p, p_units, prefill_cap, p_price),
        decode: pool(d_chip, d, d_units, decode_cap, d_price),
        kv_transfer: KvTransferReport {
            bytes_per_request: link.bytes,
            transfer_ms: transfer_s * 1e3,
            exposed_ms: exposed_s * 1e3,
            network_utilization: rate / network_cap,
        },
        ttft_ms,
        tpot_ms,
        requests_per_s: rate,
        output_tokens_per_s: output_tps,
        output_tokens_per_s_per_chip: output_tps / (p_chips + d_chips) as f64,
        cost_usd_per_million_output_tokens: p_usd + d_usd,
        meets_slo: meets,
        colocated: None,
        notes: vec![
            format!("the served rate is set by {bound}; the other pool runs below its capacity (no queueing modelled: TTFT is the prefill step and the exposed transfer)"),
            "prefill replicas run whole prompts, up to the scheduler's token budget per step (serve.chunk_tokens); decode replicas run decode steps only, with no prompt chunks".into(),
            "KV transfer over the scale-out network of the smaller side (prefill replica's or decode replica's NICs), streamed layer by layer behind the prefill (vLLM NIXL / Mooncake connectors); every decode rank receives its copy".into(),
        ],
    })
}
