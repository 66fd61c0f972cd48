//! A plan served under a request stream: the scheduler simulation (`queueing`) driven by the
//! plan's step costs, giving latency distributions, goodput at the SLO and the highest rate
//! that meets it.

use std::cell::RefCell;
use std::collections::HashMap;

use rainier_hw::Family;
use rainier_perf::Assumption;
use serde::Serialize;

use super::{Server, CHUNK_TOKENS};
use crate::queueing::{quantile, simulate, Engine, Served, StepCost, StepShape, Stuck};
use crate::workload::{Request, Workload};
use crate::PlanError;

pub(crate) const MAX_NUM_SEQS: Assumption = Assumption {
    name: "serve.max_num_seqs",
    value: 256.0,
    why: "sequences a serving engine keeps in flight at most (vLLM's default max_num_seqs, recalled: V1 raises it to 1024 on GPUs of 70 GiB or more; not in the project's corpus); the workload simulation's limit beside the KV cache; range 64-1024, set with --max-seqs",
};

/// K/V cache block of the paged cache, tokens (vLLM's default block size).
const BLOCK_TOKENS: u64 = 16;

/// A plan under a workload: latency distributions over the requests and what the SLO allows.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkloadReport {
    /// `fixed`, `uniform`, `lognormal` or the trace's file name.
    pub name: String,
    /// Requests simulated and the seed of their lengths and arrivals (absent for a trace).
    pub requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Offered load over the cluster, requests per second.
    pub rate_per_s: f64,
    pub mean_input_len: f64,
    pub mean_output_len: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p90: f64,
    pub ttft_ms_p99: f64,
    pub tpot_ms_p50: f64,
    pub tpot_ms_p90: f64,
    pub tpot_ms_p99: f64,
    pub e2e_ms_p50: f64,
    pub e2e_ms_p99: f64,
    /// From arrival to admission into the running batch.
    pub queue_ms_p50: f64,
    pub queue_ms_p99: f64,
    /// Achieved output tokens per second over the cluster (first arrival to last finish).
    pub output_tokens_per_s: f64,
    /// Sequences in flight per replica, time-weighted mean.
    pub mean_running_per_replica: f64,
    /// Sequences preempted (K/V dropped and recomputed) because the cache was full.
    pub preemptions: u64,
    pub max_seqs: u64,
    pub cost_usd_per_million_output_tokens: f64,
    /// With an SLO: the share of requests meeting both objectives, and their rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo_attainment: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput_requests_per_s: Option<f64>,
    /// With an SLO: the highest offered rate (the stream's arrivals compressed or stretched)
    /// at which the p99 TTFT and p99 TPOT meet it; 0 when none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate_meeting_slo_per_s: Option<f64>,
    /// With an SLO: $ per M output tokens at that rate (the plan's cost at its SLO capacity;
    /// below it a cluster's price is spread over fewer tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd_per_million_output_tokens_at_max_rate: Option<f64>,
}

/// Geometric grid points: 1, 2, …, 16, then ×1.08 (rounded), and `max`.
#[derive(Debug)]
struct Axis(Vec<f64>);

impl Axis {
    fn new(max: f64) -> Axis {
        let max = max.max(1.0);
        let mut points = Vec::new();
        let mut x = 1.0f64;
        while x < max {
            points.push(x);
            x = if x < 16.0 { x + 1.0 } else { (x * 1.08).round() };
        }
        points.push(max);
        Axis(points)
    }

    /// The grid cell holding `x` (clamped): its lower index and the upper point's weight.
    fn locate(&self, x: f64) -> (usize, f64) {
        let p = &self.0;
        if p.len() == 1 {
            return (0, 0.0);
        }
        let x = x.clamp(p[0], p[p.len() - 1]);
        let i = p.partition_point(|&v| v <= x).saturating_sub(1).min(p.len() - 2);
        (i, (x - p[i]) / (p[i + 1] - p[i]))
    }
}

/// Values computed once per grid point.
type Memo = RefCell<HashMap<(usize, usize), f64>>;

/// The plan's step costs for the simulation: each part of a step from the serving model at
/// grid points, interpolated linearly between them (a step's parts are smooth in its token
/// counts; grid points 8 % apart).
struct StepGrid<'s, 'a> {
    server: &'s Server<'a>,
    tokens: Axis,
    sequences: Axis,
    context: Axis,
    /// A step's GEMMs, row ops, collectives and overheads over `tokens` tokens.
    body: Memo,
    /// Logits and sampling for `sequences`.
    sampling: Memo,
    /// Decode attention of `sequences` at a context.
    attention: Memo,
    /// The causal attention of a whole prompt of a length.
    prompt: Memo,
    /// Speculative decoding's draft steps and verify beyond a plain decode.
    speculation: Memo,
}

impl StepGrid<'_, '_> {
    fn at1(&self, axis: &Axis, memo: &Memo, x: f64, f: impl Fn(f64) -> f64) -> f64 {
        let (i, w) = axis.locate(x);
        let value = |i: usize| *memo.borrow_mut().entry((i, 0)).or_insert_with(|| f(axis.0[i]));
        if w == 0.0 {
            return value(i);
        }
        (1.0 - w) * value(i) + w * value(i + 1)
    }

    fn at2(&self, memo: &Memo, n: f64, context: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
        let ((i, wi), (j, wj)) = (self.sequences.locate(n), self.context.locate(context));
        let (a, b) = (&self.sequences.0, &self.context.0);
        let value = |i: usize, j: usize| {
            let ii = i.min(a.len() - 1);
            let jj = j.min(b.len() - 1);
            *memo.borrow_mut().entry((ii, jj)).or_insert_with(|| f(a[ii], b[jj]))
        };
        let lo = (1.0 - wj) * value(i, j) + if wj > 0.0 { wj * value(i, j + 1) } else { 0.0 };
        if wi == 0.0 {
            return lo;
        }
        let hi =
            (1.0 - wj) * value(i + 1, j) + if wj > 0.0 { wj * value(i + 1, j + 1) } else { 0.0 };
        (1.0 - wi) * lo + wi * hi
    }
}

impl StepCost for StepGrid<'_, '_> {
    fn step_ms(&self, shape: &StepShape) -> f64 {
        let s = self.server;
        // With PP the replica's sequences form `pp` micro-batches, one per stage, each
        // advancing once per pass through every stage; the step is the slowest micro-batch's
        // pass: its share of the decodes and the step's whole prefill chunk.
        let n = (shape.decodes as f64 / s.pp as f64).ceil();
        let chunk = shape.prefill_tokens() as f64;
        let sampled = n + shape.completed as f64;
        let body = self.at1(&self.tokens, &self.body, n + chunk, |t| {
            let t = t as u64;
            let b = s.batch(t, 1);
            let kinds = s.layer_ops(|m| m.decode_layer_ops(b, 1.0, s.formats));
            let step = s.step(&kinds, t, 0, true);
            step.total_ms - step.attention_ms
        });
        let sampling =
            self.at1(&self.sequences, &self.sampling, sampled, |q| s.sampling_ms(q as u64));
        let mut ms = body + sampling;
        if shape.decodes > 0 {
            let context = match s.chip.family {
                // Compiled graphs run the batch at the bucket of its longest sequence.
                Family::Neuron => s.padded(shape.context_max + 1) as f64,
                _ => shape.context_sum / shape.decodes as f64,
            };
            ms += self.at2(&self.attention, n, context, |q, c| s.decode(q as u64, c).attention_ms);
            if s.draft.is_some() {
                ms += self
                    .at2(&self.speculation, n, context, |q, c| s.speculation_ms(q as u64, c, 0.0));
            }
        }
        for &(start, end, len) in &shape.prefill {
            let whole = self.at1(&self.context, &self.prompt, len as f64, |l| {
                s.prefill(1, l as u64).attention_ms
            });
            let l = len as f64;
            ms += whole * ((end * end - start * start) as f64 / (l * l));
        }
        ms
    }

    fn kv_bytes(&self, tokens: u64) -> f64 {
        let s = self.server;
        let draft = s.draft.as_ref().map_or(0.0, |d| d.kv_per_sequence(tokens as f64));
        s.kv_per_sequence(tokens as f64) + draft
    }
}

/// One simulation of the stream at a rate scale.
struct Run {
    served: Vec<Served>,
    preemptions: u64,
    mean_running: f64,
}

impl Server<'_> {
    /// Logits and sampling for `sequences`, ms.
    pub(super) fn sampling_ms(&self, sequences: u64) -> f64 {
        let cost = self.decode_cost.as_ref().unwrap_or(&self.cost);
        let ops = self.model.sampling_ops(sequences.max(1), self.tp, self.formats);
        ops.iter().map(|op| cost.op_seconds(op)).sum::<f64>() * 1e3
    }

    fn max_seqs(&self) -> u64 {
        self.cfg.max_seqs.unwrap_or(MAX_NUM_SEQS.value as u64)
    }

    /// The scheduler's limits for this plan: the chunk budget, the sequence limit, and the
    /// K/V cache left beside the weights, the reserve, the workspace of a full step and the
    /// shared prefix.
    fn engine(&self) -> Result<Engine, PlanError> {
        let max_seqs = self.max_seqs();
        let (weights, reserve) = self.fixed_memory();
        let per_mb = max_seqs.div_ceil(self.pp) as f64;
        let workspace = self.workspace(per_mb + CHUNK_TOKENS.value, per_mb);
        let shared = self
            .kv_bytes(1.0, self.cached_tokens() as f64)
            .min(self.kv_per_sequence(self.cached_tokens() as f64));
        let kv = self.capacity() - weights - reserve - workspace - shared;
        if kv <= 0.0 {
            return Err(PlanError::NoPlan(format!(
                "the workload cannot run: a replica's weights, reserve and the workspace of {max_seqs} sequences leave no memory for the KV cache; fewer --max-seqs, more chips or larger --tp may fit"
            )));
        }
        let speculative = self.cfg.speculative.as_ref().map(|s| (s.tokens, s.acceptance));
        Ok(Engine {
            budget_tokens: CHUNK_TOKENS.value as u64,
            max_seqs,
            kv_capacity_bytes: kv,
            block_tokens: BLOCK_TOKENS,
            static_kv_tokens: (self.chip.family == Family::Neuron).then(|| self.kv_len()),
            prefix: self.cfg.prefix_cache,
            speculative,
        })
    }

    fn grid(&self, engine: &Engine, longest: u64) -> StepGrid<'_, '_> {
        let per_mb = engine.max_seqs.div_ceil(self.pp) as f64;
        StepGrid {
            server: self,
            tokens: Axis::new(per_mb + engine.budget_tokens as f64),
            sequences: Axis::new(per_mb),
            context: Axis::new(longest as f64),
            body: Memo::default(),
            sampling: Memo::default(),
            attention: Memo::default(),
            prompt: Memo::default(),
            speculation: Memo::default(),
        }
    }

    /// The request streams of the replicas simulated: a synthetic stream is one replica's
    /// share of the cluster's Poisson arrivals (random routing thins a Poisson process into
    /// Poisson processes), a trace is dealt round-robin over the replicas.
    fn streams(&self, w: &Workload) -> Vec<Vec<Request>> {
        let (input, output) = (self.cfg.input_len, self.cfg.output_len);
        let max_len = self.model.max_positions;
        match w {
            &Workload::Synthetic { lengths, rate_per_s, requests, seed } => {
                let per_replica = Workload::Synthetic {
                    lengths,
                    rate_per_s: rate_per_s / self.replicas as f64,
                    requests,
                    seed,
                };
                vec![per_replica.requests(input, output, max_len)]
            }
            Workload::Trace { .. } => {
                let all = w.requests(input, output, max_len);
                let r = (self.replicas as usize).min(all.len()).max(1);
                (0..r).map(|k| all.iter().skip(k).step_by(r).copied().collect()).collect()
            }
        }
    }

    fn run(
        &self,
        streams: &[Vec<Request>],
        engine: Engine,
        grid: &StepGrid<'_, '_>,
        scale: f64,
        seed: u64,
    ) -> Result<Run, PlanError> {
        let mut run = Run { served: Vec::new(), preemptions: 0, mean_running: 0.0 };
        for (k, stream) in streams.iter().enumerate() {
            let scaled: Vec<Request> =
                stream.iter().map(|r| Request { arrival_s: r.arrival_s / scale, ..*r }).collect();
            let out = simulate(&scaled, engine, grid, seed.wrapping_add(k as u64)).map_err(
                |Stuck::TooLong { index, input, output }| {
                    PlanError::NoPlan(format!(
                        "request {} ({input} prompt + {output} output tokens) does not fit in a replica's KV cache even alone",
                        index + 1
                    ))
                },
            )?;
            run.preemptions += out.preemptions;
            run.mean_running += out.mean_running / streams.len() as f64;
            run.served.extend(out.served);
        }
        Ok(run)
    }

    fn meets_p99(&self, served: &[Served]) -> bool {
        let (ttft, tpot) = percentiles(served);
        self.meets(quantile(&ttft, 0.99), quantile(&tpot, 0.99))
    }

    /// Serves the workload on this plan.
    pub(super) fn workload(&self, w: &Workload) -> Result<WorkloadReport, PlanError> {
        let streams = self.streams(w);
        let longest =
            streams.iter().flatten().map(|r| r.input_len + r.output_len).max().unwrap_or(1);
        if let Some((i, r)) = streams
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, r)| r.input_len + r.output_len > self.model.max_positions)
        {
            return Err(PlanError::Invalid(format!(
                "request {} of the workload ({} + {} tokens) exceeds the model's max_position_embeddings ({})",
                i + 1,
                r.input_len,
                r.output_len,
                self.model.max_positions
            )));
        }
        if self.chip.family == Family::Neuron {
            if let Some((i, r)) = streams
                .iter()
                .flatten()
                .enumerate()
                .find(|(_, r)| r.input_len + r.output_len > self.kv_len())
            {
                return Err(PlanError::Invalid(format!(
                    "request {} of the workload ({} + {} tokens) is longer than the compiled sequence length {}; set --compiled-seq",
                    i + 1,
                    r.input_len,
                    r.output_len,
                    self.kv_len()
                )));
            }
        }
        let engine = self.engine()?;
        let grid = self.grid(&engine, longest);
        let seed = match w {
            Workload::Synthetic { seed, .. } => *seed,
            Workload::Trace { .. } => 0,
        };
        let run = self.run(&streams, engine, &grid, 1.0, seed)?;
        let served = &run.served;
        let count = served.len() as f64;
        let (ttft, tpot) = percentiles(served);
        let mut e2e: Vec<f64> = served.iter().map(|s| (s.finish_s - s.arrival_s) * 1e3).collect();
        let mut queue: Vec<f64> =
            served.iter().map(|s| (s.admitted_s - s.arrival_s) * 1e3).collect();
        e2e.sort_by(f64::total_cmp);
        queue.sort_by(f64::total_cmp);
        let requests: Vec<&Request> = streams.iter().flatten().collect();
        let start = requests.iter().map(|r| r.arrival_s).fold(f64::INFINITY, f64::min);
        let end = served.iter().map(|s| s.finish_s).fold(0.0, f64::max);
        let replicas_simulated = streams.len() as f64;
        let scale_up = self.replicas as f64 / replicas_simulated;
        let tokens: u64 = served.iter().map(|s| s.output_len).sum();
        let tps = tokens as f64 / (end - start).max(1e-9) * scale_up;
        let context = self.decode_context();
        let mb = (run.mean_running.round() as u64).div_ceil(self.pp).max(1);
        let step = self.mixed(mb, context, 0.0);
        let busy = (step.gemm_ms + step.attention_ms + step.other_ops_ms) / step.total_ms;
        let (usd, _, _, _) = self.money(tps, busy);
        let has_slo = self.cfg.slo_ttft_ms.is_some() || self.cfg.slo_tpot_ms.is_some();
        let met =
            served.iter().filter(|s| self.meets(s.ttft_ms(), s.tpot_ms().unwrap_or(0.0))).count()
                as f64;
        let max_rate = if has_slo {
            Some(self.max_rate(&streams, engine, &grid, seed)? * w.rate_per_s())
        } else {
            None
        };
        Ok(WorkloadReport {
            name: w.name(),
            requests: served.len() as u64,
            seed: matches!(w, Workload::Synthetic { .. }).then_some(seed),
            rate_per_s: w.rate_per_s(),
            mean_input_len: requests.iter().map(|r| r.input_len as f64).sum::<f64>() / count,
            mean_output_len: requests.iter().map(|r| r.output_len as f64).sum::<f64>() / count,
            ttft_ms_p50: quantile(&ttft, 0.5),
            ttft_ms_p90: quantile(&ttft, 0.9),
            ttft_ms_p99: quantile(&ttft, 0.99),
            tpot_ms_p50: quantile(&tpot, 0.5),
            tpot_ms_p90: quantile(&tpot, 0.9),
            tpot_ms_p99: quantile(&tpot, 0.99),
            e2e_ms_p50: quantile(&e2e, 0.5),
            e2e_ms_p99: quantile(&e2e, 0.99),
            queue_ms_p50: quantile(&queue, 0.5),
            queue_ms_p99: quantile(&queue, 0.99),
            output_tokens_per_s: tps,
            mean_running_per_replica: run.mean_running,
            preemptions: run.preemptions,
            max_seqs: engine.max_seqs,
            cost_usd_per_million_output_tokens: usd,
            slo_attainment: has_slo.then(|| met / count),
            goodput_requests_per_s: has_slo.then(|| met / (end - start).max(1e-9) * scale_up),
            max_rate_meeting_slo_per_s: max_rate,
            cost_usd_per_million_output_tokens_at_max_rate: max_rate
                .filter(|&m| m > 0.0)
                .map(|m| self.money(tps * m / w.rate_per_s(), busy).0),
        })
    }

    /// The largest factor on the stream's rate at which the p99s meet the SLO: doubled or
    /// halved to bracket it, then bisected geometrically to 1 %; 0 if even 1/1024 fails.
    fn max_rate(
        &self,
        streams: &[Vec<Request>],
        engine: Engine,
        grid: &StepGrid<'_, '_>,
        seed: u64,
    ) -> Result<f64, PlanError> {
        let meets = |scale: f64| -> Result<bool, PlanError> {
            Ok(self.meets_p99(&self.run(streams, engine, grid, scale, seed)?.served))
        };
        let (mut lo, mut hi) = if meets(1.0)? { (1.0, 2.0) } else { (0.5, 1.0) };
        if lo == 1.0 {
            while meets(hi)? {
                (lo, hi) = (hi, hi * 2.0);
                if hi > 1024.0 {
                    return Ok(lo);
                }
            }
        } else {
            while !meets(lo)? {
                (lo, hi) = (lo / 2.0, lo);
                if lo < 1.0 / 1024.0 {
                    return Ok(0.0);
                }
            }
        }
        while hi / lo > 1.01 {
            let mid = (lo * hi).sqrt();
            if meets(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Sorted TTFTs and TPOTs (one-token outputs have none) of the served requests, ms.
fn percentiles(served: &[Served]) -> (Vec<f64>, Vec<f64>) {
    let mut ttft: Vec<f64> = served.iter().map(Served::ttft_ms).collect();
    let mut tpot: Vec<f64> = served.iter().filter_map(Served::tpot_ms).collect();
    ttft.sort_by(f64::total_cmp);
    tpot.sort_by(f64::total_cmp);
    (ttft, tpot)
}
