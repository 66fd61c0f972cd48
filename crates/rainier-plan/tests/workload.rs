//! The serving simulation under a request stream: it agrees with the analytical model where
//! both apply (a lone request, a saturated batch), queues as load rises, finds the highest
//! rate meeting the SLO, and refuses what cannot run.

use rainier_hw::Catalog;
use rainier_model::Model;
use rainier_plan::{
    parse_trace, serve, LengthDistribution, ServeConfig, ServeReport, Workload, WorkloadReport,
};

fn run(m: &str, c: &str, cfg: &ServeConfig) -> ServeReport {
    let chip = Catalog::built_in().chip(c).expect("chip").clone();
    serve(&Model::preset(m).expect("preset"), &chip, cfg).expect("serve")
}

fn synthetic(lengths: LengthDistribution, rate: f64, requests: u64) -> Workload {
    Workload::Synthetic { lengths, rate_per_s: rate, requests, seed: 1 }
}

fn plan(chips: u64, tp: u64, input: u64, output: u64, w: Workload) -> ServeConfig {
    ServeConfig {
        tp: Some(tp),
        pp: Some(1),
        workload: Some(w),
        ..ServeConfig::new(chips, input, output)
    }
}

fn workload(r: &ServeReport) -> &WorkloadReport {
    r.workload.as_ref().expect("workload report")
}

/// At a rate so low that requests never meet, each is a lone prefill and a batch-1 decode:
/// the simulation's median TTFT and TPOT are the static batch's (within the step grid's
/// interpolation and chunked prefill's decode-shaped GEMMs).
#[test]
fn a_lone_request_matches_the_static_batch() {
    for (m, c, chips, tp) in [("llama3-70b", "h100", 8, 8), ("llama3-70b", "trn2", 4, 16)] {
        let cfg = plan(chips, tp, 1024, 256, synthetic(LengthDistribution::Fixed, 0.02, 100));
        let r = run(m, c, &cfg);
        let w = workload(&r);
        let ttft = w.ttft_ms_p50 / r.ttft_ms - 1.0;
        let tpot = w.tpot_ms_p50 / r.tpot_ms - 1.0;
        assert!(ttft.abs() < 0.05, "{c}: TTFT {} vs {}", w.ttft_ms_p50, r.ttft_ms);
        assert!(tpot.abs() < 0.02, "{c}: TPOT {} vs {}", w.tpot_ms_p50, r.tpot_ms);
    }
}

/// Far above capacity the engine runs full: with the analytical model's concurrency as the
/// sequence limit, the throughput is the analytical continuous batching's within 15 % (the
/// simulation admits prompts as the token budget allows rather than at the mean rate, so it
/// runs somewhat fewer sequences than the limit).
#[test]
fn a_saturated_engine_reaches_the_analytical_throughput() {
    let analytical = run(
        "llama3-70b",
        "h100",
        &ServeConfig {
            workload: None,
            ..plan(8, 8, 1024, 256, synthetic(LengthDistribution::Fixed, 1.0, 1))
        },
    )
    .continuous;
    let w = synthetic(LengthDistribution::Fixed, 1000.0, 3000);
    let cfg = ServeConfig { max_seqs: Some(analytical.concurrency), ..plan(8, 8, 1024, 256, w) };
    let r = run("llama3-70b", "h100", &cfg);
    let w = workload(&r);
    let ratio = w.output_tokens_per_s / analytical.output_tokens_per_s;
    assert!((ratio - 1.0).abs() < 0.15, "simulated/analytical throughput: {ratio}");
    assert!(w.mean_running_per_replica > 0.6 * analytical.concurrency as f64);
    assert!(w.ttft_ms_p99 > 10.0 * r.ttft_ms, "an overloaded queue: {}", w.ttft_ms_p99);
}

#[test]
fn latency_rises_with_load_and_the_same_seed_repeats() {
    let at = |rate: f64| {
        let r = run(
            "llama3-70b",
            "h100",
            &plan(8, 8, 1024, 256, synthetic(LengthDistribution::LogNormal, rate, 1500)),
        );
        workload(&r).clone()
    };
    let (low, high) = (at(1.0), at(8.0));
    assert!(high.ttft_ms_p99 > low.ttft_ms_p99, "{} vs {}", high.ttft_ms_p99, low.ttft_ms_p99);
    assert!(high.tpot_ms_p50 > low.tpot_ms_p50);
    assert!(high.mean_running_per_replica > low.mean_running_per_replica);
    assert_eq!(at(8.0), high);
    // Throughput follows the offered load below capacity.
    let offered = 8.0 * high.mean_output_len;
    assert!((high.output_tokens_per_s / offered - 1.0).abs() < 0.05);
}

/// The highest rate meeting the SLO: at it the p99s meet the objectives, 10 % above it they
/// do not.
#[test]
fn the_slo_rate_is_where_the_p99s_cross_the_objectives() {
    let cfg = |rate: f64| ServeConfig {
        slo_ttft_ms: Some(500.0),
        slo_tpot_ms: Some(40.0),
        ..plan(8, 8, 1024, 256, synthetic(LengthDistribution::LogNormal, rate, 1500))
    };
    let w = workload(&run("llama3-70b", "h100", &cfg(2.0))).clone();
    let max = w.max_rate_meeting_slo_per_s.expect("max rate");
    assert!(max > 2.0, "{max}");
    let at = workload(&run("llama3-70b", "h100", &cfg(max))).clone();
    assert!(at.ttft_ms_p99 <= 500.0 && at.tpot_ms_p99 <= 40.0, "{at:?}");
    let above = workload(&run("llama3-70b", "h100", &cfg(max * 1.1))).clone();
    assert!(above.ttft_ms_p99 > 500.0 || above.tpot_ms_p99 > 40.0, "{above:?}");
    assert!(w.slo_attainment.expect("attainment") > 0.99);
}

/// A trace is dealt round-robin over the replicas; its arrivals are its own.
#[test]
fn traces_drive_every_replica() {
    let text: String = (0..400)
        .map(|i| format!("{} {} {}\n", i as f64 * 0.05, 200 + i % 7 * 100, 50 + i % 5 * 20))
        .collect();
    let requests = parse_trace(&text, "trace").expect("trace");
    let w = Workload::Trace { name: "trace".into(), requests };
    // Two replicas of TP 4.
    let r = run("llama3-70b", "h100", &plan(8, 4, 500, 90, w));
    let w = workload(&r);
    assert_eq!(r.plan.replicas, 2);
    assert_eq!(w.requests, 400);
    assert!((w.rate_per_s - 20.0).abs() < 0.1, "{}", w.rate_per_s);
    assert!(w.seed.is_none());
}

#[test]
fn impossible_workloads_are_errors() {
    let chip = Catalog::built_in().chip("trn2").expect("chip").clone();
    let model = Model::preset("llama3-70b").expect("preset");
    let bad_rate = plan(4, 16, 1024, 256, synthetic(LengthDistribution::Fixed, -1.0, 10));
    let e = serve(&model, &chip, &bad_rate).expect_err("negative rate").to_string();
    assert!(e.contains("--rate must be a positive"), "{e}");
    // Log-normal prompts reach 8× the mean: beyond graphs compiled for 2048 tokens; without
    // --compiled-seq the graphs are compiled for the workload's longest request.
    let long = ServeConfig {
        compiled_seq: Some(2048),
        ..plan(4, 16, 1024, 256, synthetic(LengthDistribution::LogNormal, 1.0, 500))
    };
    let fitted = ServeConfig { compiled_seq: None, ..long.clone() };
    let w = serve(&model, &chip, &fitted).expect("compiled for the workload").workload;
    assert_eq!(w.map(|w| w.requests), Some(500));
    let e = serve(&model, &chip, &long).expect_err("too long").to_string();
    assert!(e.contains("longer than the compiled sequence length 2048"), "{e}");
    let empty = Workload::Trace { name: "t".into(), requests: vec![] };
    let e = serve(&model, &chip, &plan(4, 16, 1024, 256, empty)).expect_err("empty").to_string();
    assert!(e.contains("has no requests"), "{e}");
}
