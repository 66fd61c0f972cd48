//! Disaggregated serving: the pools balance, the search's split is the cheapest, the KV
//! transfer carries what the cache holds, the SLO holds, and longer prompts take more of the
//! cluster for prefill.

use rainier_hw::{Catalog, Chip};
use rainier_model::Model;
use rainier_plan::{serve_disaggregated, DisaggregatedReport, Disaggregation, ServeConfig};

fn chip(name: &str) -> Chip {
    Catalog::built_in().chip(name).expect("chip").clone()
}

fn run(m: &str, c: &str, cfg: &ServeConfig, split: &Disaggregation) -> DisaggregatedReport {
    let model = Model::preset(m).expect("preset");
    serve_disaggregated(&model, &chip(c), &chip(c), cfg, split).expect("a disaggregated plan")
}

fn slo(chips: u64, input: u64, output: u64) -> ServeConfig {
    ServeConfig {
        slo_ttft_ms: Some(3000.0),
        slo_tpot_ms: Some(50.0),
        ..ServeConfig::new(chips, input, output)
    }
}

/// The served rate is the smaller pool's capacity; that pool is fully used, the other not
/// beyond; tokens/s are the rate times the output; the SLO holds.
#[test]
fn the_pools_balance_at_the_smaller_capacity() {
    for c in ["h100", "trn2"] {
        let r = run("llama3-70b", c, &slo(32, 4096, 512), &Disaggregation::default());
        let (p, d) = (&r.prefill, &r.decode);
        let rate = p.capacity_requests_per_s.min(d.capacity_requests_per_s);
        assert!((r.requests_per_s - rate).abs() <= 1e-9 * rate, "{c}: {r:?}");
        assert!(p.utilization <= 1.0 + 1e-12 && d.utilization <= 1.0 + 1e-12);
        assert!((p.utilization.max(d.utilization) - 1.0).abs() < 1e-9, "{c}");
        assert!(
            (r.output_tokens_per_s - r.requests_per_s * 512.0).abs() < 1e-6 * r.output_tokens_per_s
        );
        assert!(r.meets_slo && r.ttft_ms <= 3000.0 && r.tpot_ms <= 50.0, "{c}: {r:?}");
        assert!(p.chips + d.chips <= 32 && p.memory_gib_per_device <= p.capacity_gib_per_device);
    }
}

/// The search's split is the cheapest: moving one replica's chips from one pool to the other
/// (same TPs) costs no less per token.
#[test]
fn the_searched_split_is_the_cheapest_neighbour() {
    let cfg = slo(32, 2048, 256);
    let best = run("llama3-70b", "h100", &cfg, &Disaggregation::default());
    // An H100 is one rank: a prefill replica is tp × cp chips.
    let unit = (best.prefill.tp * best.prefill.cp) as i64;
    let mut compared = 0;
    for delta in [-unit, unit] {
        let chips = best.prefill.chips as i64 + delta;
        if chips <= 0 || chips as u64 + best.decode.tp > 32 {
            continue;
        }
        let split = Disaggregation {
            prefill_chips: Some(chips as u64),
            prefill_tp: Some(best.prefill.tp),
            prefill_cp: Some(best.prefill.cp),
            decode_tp: Some(best.decode.tp),
        };
        let model = Model::preset("llama3-70b").expect("preset");
        let h100 = chip("h100");
        if let Ok(other) = serve_disaggregated(&model, &h100, &h100, &cfg, &split) {
            compared += 1;
            assert!(
                other.cost_usd_per_million_output_tokens
                    >= best.cost_usd_per_million_output_tokens * (1.0 - 1e-12),
                "{chips} prefill chips cost {} < the search's {}",
                other.cost_usd_per_million_output_tokens,
                best.cost_usd_per_million_output_tokens
            );
        }
    }
    assert!(compared >= 1, "no neighbouring split to compare with");
}

/// A request's K/V is every layer's K and V for its prompt: 80 layers × 8 KV heads × 128 ×
/// 2 × 2 bytes per token for Llama 3 70B (decode TP up to 8 holds each head once).
#[test]
fn the_transfer_carries_the_prompts_kv_cache() {
    let split = Disaggregation { decode_tp: Some(8), ..Disaggregation::default() };
    let r = run("llama3-70b", "h100", &slo(32, 4096, 512), &split);
    let per_token = 80.0 * 8.0 * 128.0 * 2.0 * 2.0;
    assert_eq!(r.kv_transfer.bytes_per_request, per_token * 4096.0);
    // Streamed behind a prefill longer than the transfer, only the last layer's shows.
    assert!(r.kv_transfer.transfer_ms < r.prefill.step_ms);
    assert!((r.kv_transfer.exposed_ms - r.kv_transfer.transfer_ms / 80.0).abs() < 1e-9);
    assert!((r.ttft_ms - r.prefill.step_ms - r.kv_transfer.exposed_ms).abs() < 1e-9);
}

/// Long prompts and short outputs need more prefill; short prompts and long outputs more
/// decode.
#[test]
fn longer_prompts_take_more_of_the_cluster_for_prefill() {
    let share = |input, output| {
        let r = run("llama3-8b", "h100", &slo(32, input, output), &Disaggregation::default());
        r.prefill.chips as f64 / (r.prefill.chips + r.decode.chips) as f64
    };
    let (long_prompt, long_output) = (share(6144, 128), share(256, 2048));
    assert!(long_prompt > long_output, "prefill share {long_prompt} vs {long_output}");
}

/// What cannot run is an error naming why.
#[test]
fn impossible_disaggregations_are_errors() {
    let model = Model::preset("llama3-70b").expect("preset");
    let inf2 = chip("inf2");
    let e = serve_disaggregated(
        &model,
        &inf2,
        &inf2,
        &ServeConfig::new(12, 1024, 256),
        &Disaggregation::default(),
    )
    .expect_err("inf2 has no network between nodes");
    assert!(e.to_string().contains("no scale-out network"), "{e}");
    let h100 = chip("h100");
    let tight = ServeConfig { slo_ttft_ms: Some(1.0), ..ServeConfig::new(8, 4096, 256) };
    let e = serve_disaggregated(&model, &h100, &h100, &tight, &Disaggregation::default())
        .expect_err("a 1 ms TTFT is out of reach");
    assert!(e.to_string().contains("meets the SLO"), "{e}");
}

/// `compare --serve` carries each chip's disaggregated deployment: the same search as
/// `serve --disaggregate`, without the colocated comparison it already has; none under a
/// workload.
#[test]
fn compare_serve_carries_the_disaggregated_deployment() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-70b").expect("preset");
    let cfg = slo(64, 2048, 512);
    let only = ["h100".to_string(), "trn2".to_string()];
    let report = rainier_plan::compare_serve(&model, &catalog, &cfg, Some(&only)).expect("compare");
    for row in &report.rows {
        let d = row.disaggregated.as_ref().expect("a split meets the SLO");
        let alone = run("llama3-70b", &row.chip, &cfg, &Disaggregation::default());
        assert!(d.colocated.is_none() && alone.colocated.is_some());
        assert_eq!(DisaggregatedReport { colocated: None, ..alone }, *d);
    }
    let workload = rainier_plan::Workload::Synthetic {
        lengths: rainier_plan::LengthDistribution::Fixed,
        rate_per_s: 1.0,
        requests: 50,
        seed: 1,
    };
    let under = ServeConfig { workload: Some(workload), ..cfg };
    let report =
        rainier_plan::compare_serve(&model, &catalog, &under, Some(&only[..1])).expect("compare");
    assert!(report.rows[0].disaggregated.is_none());
}

/// Context parallelism splits a long prompt's prefill over rank groups (ring attention): at
/// 64K tokens the step shrinks nearly by the degree, the throughput per chip stays, and a
/// TTFT only CP reaches makes the search choose it.
#[test]
fn context_parallel_prefill_cuts_a_long_prompts_ttft() {
    let model = Model::preset("llama3.1-405b").expect("preset");
    let h100 = chip("h100");
    let cfg = ServeConfig {
        weights: rainier_plan::WeightFormat::Fp8,
        ..ServeConfig::new(128, 65536, 512)
    };
    let at = |cp| {
        let split = Disaggregation {
            prefill_cp: Some(cp),
            prefill_tp: Some(8),
            decode_tp: Some(8),
            prefill_chips: Some(96),
        };
        serve_disaggregated(&model, &h100, &h100, &cfg, &split).expect("a plan")
    };
    let (one, four) = (at(1), at(4));
    assert_eq!((one.prefill.cp, four.prefill.cp), (1, 4));
    let speedup = one.prefill.step_ms / four.prefill.step_ms;
    assert!(speedup > 3.5 && speedup <= 4.0 + 1e-9, "cp 4 prefill speed-up {speedup}");
    let per_chip =
        |r: &DisaggregatedReport| r.prefill.capacity_requests_per_s / r.prefill.chips as f64;
    assert!((per_chip(&four) / per_chip(&one) - 1.0).abs() < 0.05);
    // The same chips at the same rate cost the same: every rank of a CP replica is paid for.
    let cost = |r: &DisaggregatedReport| r.cost_usd_per_million_output_tokens;
    assert!((cost(&four) / cost(&one) - 1.0).abs() < 0.05, "{} vs {}", cost(&four), cost(&one));
    let slo = ServeConfig { slo_ttft_ms: Some(8000.0), ..cfg };
    let best = serve_disaggregated(&model, &h100, &h100, &slo, &Disaggregation::default())
        .expect("CP meets it");
    assert!(best.prefill.cp > 1 && best.ttft_ms <= 8000.0, "{:?}", best.prefill);
}

/// Degrees out of range are one-line errors naming the flag; speculation runs on the decode
/// pool (the draft is not put on the prefill replicas).
#[test]
fn bad_degrees_are_refused_and_speculation_decodes() {
    let model = Model::preset("llama3-70b").expect("preset");
    let h100 = chip("h100");
    let cfg = ServeConfig::new(32, 1024, 256);
    for (split, message) in [
        (Disaggregation { prefill_cp: Some(u64::MAX), ..Default::default() }, "prefill-cp"),
        (Disaggregation { prefill_chips: Some(0), ..Default::default() }, "prefill-chips"),
        (Disaggregation { prefill_chips: Some(32), ..Default::default() }, "leaves none"),
        (Disaggregation { decode_tp: Some(0), ..Default::default() }, "decode-tp"),
    ] {
        let e = serve_disaggregated(&model, &h100, &h100, &cfg, &split).expect_err("refused");
        assert!(e.to_string().contains(message), "{e}");
    }
    let spec = rainier_plan::Speculative {
        draft: Model::preset("llama3.2-1b").expect("preset"),
        tokens: 3,
        acceptance: 0.7,
        shares_head: false,
    };
    let with = ServeConfig { speculative: Some(spec), ..cfg.clone() };
    let plain =
        serve_disaggregated(&model, &h100, &h100, &cfg, &Disaggregation::default()).expect("plain");
    let fast = serve_disaggregated(&model, &h100, &h100, &with, &Disaggregation::default())
        .expect("with a draft");
    assert!(fast.decode.capacity_requests_per_s / fast.decode.chips as f64 > 0.0);
    assert!(fast.tpot_ms > 0.0 && plain.tpot_ms > 0.0);
}
