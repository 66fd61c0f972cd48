//! A discrete-event simulation of one serving replica's scheduler: requests arrive, wait,
//! are admitted while the KV cache and the sequence limit allow, prefilled in chunks within a
//! per-step token budget beside the running decodes (vLLM V1's scheduler: decodes first, then
//! partial prefills, then new requests first come first served), decode one token per step
//! (or a speculative round's accepted tokens), and are preempted when the cache cannot grow
//! (the latest admitted first, its K/V dropped and recomputed later, as vLLM does).
//!
//! Each engine step's time comes from a [`StepCost`]; the simulation itself is arithmetic
//! over the sequences in flight, so 10^5 requests take well under a second.

use std::collections::VecDeque;

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::serve::{cached_prompt_tokens, PrefixCache};
use crate::workload::Request;

/// The work of one engine step.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepShape {
    /// Sequences decoding this step.
    pub decodes: u64,
    /// Their contexts (tokens held before this step), summed, and the longest.
    pub context_sum: f64,
    pub context_max: u64,
    /// Prefill pieces: (first position, last position + 1, the prompt's length).
    pub prefill: Vec<(u64, u64, u64)>,
    /// Prompts this step finishes (their first token is sampled).
    pub completed: u64,
}

impl StepShape {
    pub(crate) fn prefill_tokens(&self) -> u64 {
        self.prefill.iter().map(|(s, e, _)| e - s).sum()
    }
}

/// What the simulated engine costs and holds.
pub(crate) trait StepCost {
    /// One engine step, milliseconds.
    fn step_ms(&self, shape: &StepShape) -> f64;
    /// K/V bytes one sequence holds at `tokens` tokens of context.
    fn kv_bytes(&self, tokens: u64) -> f64;
}

/// The scheduler's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Engine {
    /// Tokens per step, decodes and prefill chunks together (vLLM's max_num_batched_tokens).
    pub budget_tokens: u64,
    /// Sequences in flight at most (vLLM's max_num_seqs).
    pub max_seqs: u64,
    /// Bytes of K/V cache the replica's ranks hold (per rank, as `kv_bytes` counts).
    pub kv_capacity_bytes: f64,
    /// Paged-cache block, tokens (vLLM: 16).
    pub block_tokens: u64,
    /// Statically shaped caches (Neuron): a sequence holds this many tokens from admission.
    pub static_kv_tokens: Option<u64>,
    /// What each request finds in the prefix cache (its cached tokens' K/V is shared, held
    /// once, outside `kv_capacity_bytes`).
    pub prefix: PrefixCache,
    /// Speculative decoding: tokens proposed per round and the acceptance probability.
    pub speculative: Option<(u64, f64)>,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Served {
    pub arrival_s: f64,
    /// First admitted into the running set.
    pub admitted_s: f64,
    pub first_token_s: f64,
    pub finish_s: f64,
    pub output_len: u64,
}

impl Served {
    pub(crate) fn ttft_ms(&self) -> f64 {
        (self.first_token_s - self.arrival_s) * 1e3
    }
    /// Mean time per output token after the first (none for one-token outputs).
    pub(crate) fn tpot_ms(&self) -> Option<f64> {
        (self.output_len > 1)
            .then(|| (self.finish_s - self.first_token_s) * 1e3 / (self.output_len - 1) as f64)
    }
}

/// The simulation's outcome for one replica.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub served: Vec<Served>,
    pub preemptions: u64,
    pub steps: u64,
    /// Time-weighted mean of the sequences in flight.
    pub mean_running: f64,
}

#[derive(Debug, Clone)]
struct Seq {
    index: usize,
    arrival_s: f64,
    input: u64,
    output: u64,
    /// Prompt tokens read from the prefix cache.
    cached: u64,
    /// Tokens to compute before decoding: the new prompt (and, after a preemption, the
    /// output so far, recomputed).
    to_prefill: u64,
    computed: u64,
    generated: u64,
    /// Tokens of K/V allocated (whole blocks) and their bytes.
    allocated: u64,
    kv_bytes: f64,
    first_token_s: Option<f64>,
    admitted_s: Option<f64>,
}

impl Seq {
    /// Tokens of context the sequence holds.
    fn context(&self) -> u64 {
        self.cached + self.computed + if self.prefilling() { 0 } else { self.generated }
    }
    fn prefilling(&self) -> bool {
        self.computed < self.to_prefill
    }
}

/// The paged K/V cache of a replica.
struct Cache<'a, C: StepCost> {
    cost: &'a C,
    engine: Engine,
    used: f64,
}

impl<C: StepCost> Cache<'_, C> {
    /// Grows `seq`'s allocation to hold `tokens` tokens, if the cache has room.
    fn grow(&mut self, seq: &mut Seq, tokens: u64) -> bool {
        let target = match self.engine.static_kv_tokens {
            Some(s) => s,
            None => tokens.div_ceil(self.engine.block_tokens) * self.engine.block_tokens,
        };
        if target <= seq.allocated {
            return true;
        }
        let shared = self.cost.kv_bytes(seq.cached);
        let bytes = (self.cost.kv_bytes(target) - shared).max(0.0);
        let extra = bytes - seq.kv_bytes;
        if self.used + extra > self.engine.kv_capacity_bytes {
            return false;
        }
        self.used += extra;
        seq.allocated = target;
        seq.kv_bytes = bytes;
        true
    }

    fn free(&mut self, seq: &mut Seq) {
        self.used -= seq.kv_bytes;
        seq.allocated = 0;
        seq.kv_bytes = 0.0;
    }
}

/// Preempts the latest admitted running sequence: its K/V is dropped, and it waits at the
/// head of the queue to recompute its prompt and the output so far (vLLM's recompute mode).
fn preempt_latest<C: StepCost>(
    running: &mut Vec<Seq>,
    waiting: &mut VecDeque<Seq>,
    cache: &mut Cache<'_, C>,
) {
    let Some(mut victim) = running.pop() else { return };
    cache.free(&mut victim);
    victim.to_prefill = victim.input - victim.cached + victim.generated;
    victim.computed = 0;
    waiting.push_front(victim);
}

/// Why a simulation cannot run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stuck {
    /// A request that cannot be admitted even into an empty cache.
    TooLong { index: usize, input: u64, output: u64 },
}

/// Simulates one replica serving `requests` (sorted by arrival).
pub(crate) fn simulate<C: StepCost>(
    requests: &[Request],
    engine: Engine,
    cost: &C,
    seed: u64,
) -> Result<Outcome, Stuck> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cache = Cache { cost, engine, used: 0.0 };
    let mut waiting: VecDeque<Seq> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut served: Vec<Option<Served>> = vec![None; requests.len()];
    let mut out = Outcome::default();
    let (mut next, mut now, mut running_time) = (0usize, 0.0f64, 0.0f64);
    let lookahead = engine.speculative.map_or(1, |(k, _)| k + 1);
    let mut shape = StepShape::default();
    loop {
        while next < requests.len() && requests[next].arrival_s <= now {
            let r = requests[next];
            let cached = cached_prompt_tokens(r.input_len, engine.prefix);
            waiting.push_back(Seq {
                index: next,
                arrival_s: r.arrival_s,
                input: r.input_len,
                output: r.output_len.max(1),
                cached,
                to_prefill: r.input_len - cached,
                computed: 0,
                generated: 0,
                allocated: 0,
                kv_bytes: 0.0,
                first_token_s: None,
                admitted_s: None,
            });
            next += 1;
        }
        if running.is_empty() && waiting.is_empty() {
            if next == requests.len() {
                break;
            }
            now = requests[next].arrival_s;
            continue;
        }
        shape.prefill.clear();
        shape.decodes = 0;
        shape.context_sum = 0.0;
        shape.context_max = 0;
        shape.completed = 0;
        // Decodes first: each needs room for its lookahead; preempt the latest admitted
        // until they all have it.
        let mut i = 0;
        while i < running.len() {
            if running[i].prefilling() {
                i += 1;
                continue;
            }
            let want = running[i].context() + lookahead;
            if cache.grow(&mut running[i], want) {
                i += 1;
                continue;
            }
            preempt_latest(&mut running, &mut waiting, &mut cache);
            out.preemptions += 1;
        }
        let mut budget = engine.budget_tokens;
        for s in running.iter().filter(|s| !s.prefilling()) {
            shape.decodes += 1;
            let c = s.context();
            shape.context_sum += c as f64;
            shape.context_max = shape.context_max.max(c);
            budget = budget.saturating_sub(lookahead);
        }
        // Partial prefills, then new requests, within the budget and the cache.
        let mut chunk_of = vec![0u64; 0];
        for s in running.iter_mut() {
            if !s.prefilling() || budget == 0 {
                chunk_of.push(0);
                continue;
            }
            let take = (s.to_prefill - s.computed).min(budget);
            let want = s.cached + s.computed + take;
            if cache.grow(s, want) {
                budget -= take;
                chunk_of.push(take);
            } else {
                chunk_of.push(0);
            }
        }
        while budget > 0 && (running.len() as u64) < engine.max_seqs {
            let Some(mut s) = waiting.pop_front() else { break };
            let take = s.to_prefill.min(budget);
            let want = s.cached + take;
            if !cache.grow(&mut s, want) {
                if running.is_empty() {
                    let r = requests[s.index];
                    return Err(Stuck::TooLong {
                        index: s.index,
                        input: r.input_len,
                        output: r.output_len,
                    });
                }
                waiting.push_front(s);
                break;
            }
            budget -= take;
            s.admitted_s.get_or_insert(now);
            running.push(s);
            chunk_of.push(take);
        }
        for (s, &take) in running.iter().zip(&chunk_of) {
            if take > 0 {
                let start = s.cached + s.computed;
                shape.prefill.push((start, start + take, s.cached + s.to_prefill));
                if s.computed + take == s.to_prefill {
                    shape.completed += 1;
                }
            }
        }
        if shape.decodes == 0 && shape.prefill.is_empty() {
            // Nothing schedulable: the cache is full of prefills in progress. Preempt the
            // latest admitted; a lone sequence that cannot grow never fits.
            if running.len() <= 1 {
                let s = running.first().or(waiting.front()).map_or(0, |s| s.index);
                let r = requests[s];
                return Err(Stuck::TooLong { index: s, input: r.input_len, output: r.output_len });
            }
            preempt_latest(&mut running, &mut waiting, &mut cache);
            out.preemptions += 1;
            continue;
        }
        let dt = cost.step_ms(&shape) / 1e3;
        running_time += running.len() as f64 * dt;
        now += dt;
        out.steps += 1;
        // Apply the step: decodes gain tokens, chunks advance, finished sequences leave.
        let mut k = 0;
        while k < running.len() {
            let take = chunk_of.get(k).copied().unwrap_or(0);
            let s = &mut running[k];
            if s.prefilling() {
                s.computed += take;
                if !s.prefilling() {
                    // The prompt's last position samples a token.
                    s.generated += 1;
                    s.first_token_s.get_or_insert(now);
                }
            } else {
                let gain = match engine.speculative {
                    None => 1,
                    Some((tokens, acceptance)) => {
                        1 + (0..tokens).take_while(|_| rng.gen::<f64>() < acceptance).count() as u64
                    }
                };
                s.generated = (s.generated + gain).min(s.output);
            }
            if s.generated >= s.output {
                let mut done = running.remove(k);
                chunk_of.remove(k);
                cache.free(&mut done);
                served[done.index] = Some(Served {
                    arrival_s: done.arrival_s,
                    admitted_s: done.admitted_s.unwrap_or(now),
                    first_token_s: done.first_token_s.unwrap_or(now),
                    finish_s: now,
                    output_len: done.output,
                });
            } else {
                k += 1;
            }
        }
    }
    let span = now - requests.first().map_or(0.0, |r| r.arrival_s);
    out.mean_running = if span > 0.0 { running_time / span } else { 0.0 };
    out.served = served.into_iter().flatten().collect();
    Ok(out)
}

/// The `q`-quantile of sorted values (nearest rank).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step costs a fixed 10 ms plus 1 µs per prefill token; one byte per K/V token.
    struct Linear;
    impl StepCost for Linear {
        fn step_ms(&self, shape: &StepShape) -> f64 {
            10.0 + 1e-3 * shape.prefill_tokens() as f64
        }
        fn kv_bytes(&self, tokens: u64) -> f64 {
            tokens as f64
        }
    }

    fn engine(kv: f64) -> Engine {
        Engine {
            budget_tokens: 512,
            max_seqs: 64,
            kv_capacity_bytes: kv,
            block_tokens: 16,
            static_kv_tokens: None,
            prefix: PrefixCache::None,
            speculative: None,
        }
    }

    fn stream(n: usize, gap_s: f64, input: u64, output: u64) -> Vec<Request> {
        (0..n)
            .map(|i| Request { arrival_s: i as f64 * gap_s, input_len: input, output_len: output })
            .collect()
    }

    #[test]
    fn a_lone_request_takes_its_prefill_then_one_step_per_token() {
        let out = simulate(&stream(1, 0.0, 300, 11), engine(1e9), &Linear, 1).expect("runs");
        let s = out.served[0];
        // One step prefills all 300 tokens (within the budget) and samples the first token.
        assert!((s.ttft_ms() - 10.3).abs() < 1e-9, "{}", s.ttft_ms());
        assert!((s.tpot_ms().expect("tpot") - 10.0).abs() < 1e-9);
        assert_eq!(out.steps, 11);
    }

    #[test]
    fn long_prompts_are_chunked_within_the_budget() {
        let out = simulate(&stream(1, 0.0, 1200, 2), engine(1e9), &Linear, 1).expect("runs");
        // 512 + 512 + 176 tokens: three steps to the first token.
        assert_eq!(out.served[0].ttft_ms().round(), 31.0);
    }

    #[test]
    fn a_full_cache_preempts_and_recomputes_but_everyone_finishes() {
        // 16 requests of 200 + 400 tokens in a cache of 2400 tokens: at most four fit at
        // their end; decodes preempt the latest admitted.
        let reqs = stream(16, 0.0, 200, 400);
        let out = simulate(&reqs, engine(2400.0), &Linear, 1).expect("runs");
        assert_eq!(out.served.len(), 16);
        assert!(out.preemptions > 0);
        assert!(out.served.iter().all(|s| s.finish_s > s.first_token_s));
    }

    #[test]
    fn a_request_larger_than_the_cache_is_an_error() {
        let e = simulate(&stream(2, 0.0, 5000, 10), engine(4096.0), &Linear, 1);
        assert_eq!(e.expect_err("too long"), Stuck::TooLong { index: 0, input: 5000, output: 10 });
    }

    #[test]
    fn speculation_gains_the_expected_tokens_per_round() {
        // K = 3 at acceptance 0.6: (1 − 0.6⁴) / 0.4 = 2.176 tokens per round.
        let e = Engine { speculative: Some((3, 0.6)), ..engine(1e9) };
        let out = simulate(&stream(200, 0.0, 100, 1000), e, &Linear, 9).expect("runs");
        let rounds: f64 = out.served.iter().map(|s| s.tpot_ms().expect("tpot") / 10.0).sum();
        let per_round = 1.0 / (rounds / out.served.len() as f64);
        assert!((per_round - 2.176).abs() < 0.05, "{per_round}");
    }

    #[test]
    fn littles_law_holds() {
        // Arrivals every 40 ms, each in flight about 10 steps of 10 ms: the time-weighted
        // number in flight is the rate times the mean time from admission to the end.
        let reqs = stream(2000, 0.04, 100, 10);
        let out = simulate(&reqs, engine(1e9), &Linear, 1).expect("runs");
        let mean_residence: f64 = out.served.iter().map(|s| s.finish_s - s.admitted_s).sum::<f64>()
            / out.served.len() as f64;
        let span = out.served.last().expect("served").finish_s - reqs[0].arrival_s;
        let l = out.mean_running;
        let expect = mean_residence * out.served.len() as f64 / span;
        assert!((l / expect - 1.0).abs() < 1e-9, "L {l} vs λW {expect}");
    }
}
