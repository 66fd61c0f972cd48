//! Mixture-of-experts training: routing imbalance, all-to-all overlap, group-limited routing,
//! and DeepSeek-V3's published training throughput.

use rainier_hw::Catalog;
use rainier_model::{Batch, Model, Routing};
use rainier_perf::Precision;
use rainier_plan::{evaluate, TrainConfig, TrainReport};

fn preset(name: &str) -> Model {
    Model::preset(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The busiest rank's load: 1 without expert parallelism, above 1 with it, falling towards
/// the skew as tokens grow, rising with the group, capped by what a rank can receive.
#[test]
fn busiest_rank_load_follows_the_sampling_spread() {
    let m = preset("deepseek-v3");
    let load = |sequences, ep, skew| {
        let routing = Routing::Dropless { skew };
        m.busiest_rank_load(Batch { ep, routing, ..Batch::new(sequences, 4096, 1) })
    };
    assert_eq!(load(1, 1, 1.3), 1.0);
    assert!(load(1, 64, 1.0) > 1.0);
    assert!(load(1, 64, 1.0) > load(8, 64, 1.0));
    assert!(load(1, 256, 1.0) > load(1, 8, 1.0));
    assert!((load(1, 64, 1.2) / load(1, 64, 1.0) - 1.2).abs() < 1e-12);
    // 4096 tokens × 8 experts over 64 ranks: σ/μ = √((1 − 1/64)/32768), times √(2 ln 64).
    let expected = 1.0 + (2.0 * 64f64.ln() * (1.0 - 1.0 / 64.0) / 32768.0).sqrt();
    assert!((load(1, 64, 1.0) - expected).abs() < 1e-12);
    // One token over 256 single-expert ranks: at most 8 of the 256 ranks' mean of 1/32 each.
    let one = m.busiest_rank_load(Batch { ep: 256, ..Batch::new(1, 1, 1) });
    assert!(one <= 32.0 + 1e-9, "{one}");
    // Dense models have no routing.
    assert_eq!(
        preset("llama3-8b").busiest_rank_load(Batch { ep: 8, ..Batch::new(1, 4096, 1) }),
        1.0
    );
}

fn deepseek_cfg(moe_skew: Option<f64>) -> TrainConfig {
    TrainConfig {
        tp: Some(1),
        pp: Some(16),
        ep: Some(64),
        micro_batch: Some(1),
        precision: Precision::Fp8,
        moe_skew,
        ..TrainConfig::new(2048, 4096, 15360)
    }
}

fn run(model: &Model, chip: &str, cfg: &TrainConfig) -> TrainReport {
    let catalog = Catalog::built_in();
    evaluate(model, catalog.chip(chip).expect("chip"), cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// DeepSeek-V3 technical report (arXiv 2412.19437, 2024): 180K H800 GPU-hours per trillion
/// tokens on 2,048 H800s (1,543 tokens/s per GPU) with 16-way pipeline parallelism (DualPipe),
/// 64-way expert parallelism over 8 nodes, ZeRO-1 data parallelism, no tensor parallelism, FP8
/// training, 4,096-token sequences and a 15,360-sequence batch. Checked on the H100 (the H800
/// is an H100 with NVLink cut to 400 GB/s, which carries no TP here). Not modelled: the MTP
/// module (about one layer more), DualPipe's smaller bubble, and its memory savings (FP8
/// activation caching: this plan needs about 91 GiB per GPU in Rainier's accounting).
#[test]
fn deepseek_v3_training_throughput_is_within_fifteen_percent() {
    let r = run(&preset("deepseek-v3"), "h100", &deepseek_cfg(None));
    let measured = 1e12 / (180e3 * 3600.0);
    let error = r.tokens_per_s_per_chip / measured - 1.0;
    assert!(
        error.abs() < 0.15,
        "deepseek-v3: {:.0} vs {measured:.0} tokens/s per GPU ({:+.1} %)",
        r.tokens_per_s_per_chip,
        100.0 * error
    );
    // The all-to-alls are mostly hidden, not free.
    let ep = r.breakdown_s.communication_by_kind.ep;
    assert!(ep.exposed > 0.0 && ep.exposed < 0.3 * ep.total, "{ep:?}");
}

#[test]
fn routing_skew_slows_expert_parallel_training_only() {
    let d = preset("deepseek-v3");
    let even = run(&d, "h100", &deepseek_cfg(Some(1.0)));
    let skewed = run(&d, "h100", &deepseek_cfg(Some(1.3)));
    assert!(skewed.step_time_s > even.step_time_s * 1.05);
    let dense = preset("llama3-8b");
    let cfg = |moe_skew| TrainConfig {
        tp: Some(1),
        pp: Some(1),
        moe_skew,
        ..TrainConfig::new(8, 4096, 64)
    };
    assert_eq!(
        run(&dense, "h100", &cfg(Some(1.0))).step_time_s,
        run(&dense, "h100", &cfg(Some(1.3))).step_time_s
    );
    let catalog = Catalog::built_in();
    let e = evaluate(&dense, catalog.chip("h100").expect("h100"), &cfg(Some(0.9)))
        .expect_err("below 1");
    assert!(e.to_string().contains("--moe-skew"), "{e}");
}

/// GPU stacks hide the all-to-alls behind another micro-batch; eager stacks, Trainium and
/// a single micro-batch do not.
#[test]
fn all_to_all_overlap_needs_a_fused_gpu_stack_and_two_micro_batches() {
    let m = preset("mixtral-8x7b");
    let cfg = |batch, framework| TrainConfig {
        tp: Some(1),
        pp: Some(1),
        ep: Some(8),
        micro_batch: Some(1),
        framework,
        ..TrainConfig::new(64, 4096, batch)
    };
    let ep = |r: &TrainReport| r.breakdown_s.communication_by_kind.ep;
    let fused = ep(&run(&m, "h100", &cfg(128, None)));
    assert!(fused.exposed < 0.5 * fused.total, "{fused:?}");
    let eager = ep(&run(&m, "h100", &cfg(128, Some(rainier_hw::Framework::Eager))));
    assert_eq!(eager.exposed, eager.total);
    let single = ep(&run(&m, "h100", &cfg(64, None)));
    assert_eq!(single.exposed, single.total);
    let trn = ep(&run(&m, "trn2", &TrainConfig { chips: 16, ..cfg(128, None) }));
    assert_eq!(trn.exposed, trn.total);
}

/// DeepSeek's group-limited routing (4 of 8 groups, one per node) halves what a token sends
/// over the network once the expert-parallel group spans nodes.
#[test]
fn group_limited_routing_cuts_the_network_all_to_all() {
    let limited = preset("deepseek-v3");
    assert_eq!(limited.moe.and_then(|m| m.max_groups), Some(4));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rainier-model/presets/deepseek-v3.json");
    let text = std::fs::read_to_string(path)
        .expect("preset")
        .replace("\"topk_group\": 4", "\"topk_group\": 8");
    let free = Model::from_config_json(&text, "free.json").expect("parses");
    assert_eq!(free.moe.and_then(|m| m.max_groups), None);
    let ep = |m: &Model| {
        run(m, "h100", &deepseek_cfg(Some(1.0))).breakdown_s.communication_by_kind.ep.total
    };
    let ratio = ep(&limited) / ep(&free);
    assert!(ratio > 0.4 && ratio < 0.6, "{ratio}");
}

/// A capacity factor fixes every expert's work at `factor × mean` (dropped or padded), on
/// every rank, expert parallel or not; it excludes the dropless skew.
#[test]
fn capacity_factor_pads_every_expert() {
    let m = preset("mixtral-8x7b");
    let b = |ep, routing| Batch { ep, routing, ..Batch::new(2, 4096, 1) };
    assert_eq!(m.busiest_rank_load(b(1, Routing::Capacity { factor: 1.25 })), 1.25);
    assert_eq!(m.busiest_rank_load(b(8, Routing::Capacity { factor: 1.25 })), 1.25);
    let cfg = |capacity_factor| TrainConfig {
        tp: Some(1),
        pp: Some(1),
        ep: Some(1),
        micro_batch: Some(1),
        capacity_factor,
        ..TrainConfig::new(64, 4096, 128)
    };
    let dropless = run(&m, "trn2", &TrainConfig { chips: 16, ..cfg(None) });
    let padded = run(&m, "trn2", &TrainConfig { chips: 16, ..cfg(Some(1.5)) });
    let dropping = run(&m, "trn2", &TrainConfig { chips: 16, ..cfg(Some(0.8)) });
    assert!(
        padded.step_time_s > dropless.step_time_s && dropless.step_time_s > dropping.step_time_s
    );
    let catalog = Catalog::built_in();
    let both = TrainConfig { moe_skew: Some(1.2), ..cfg(Some(1.25)) };
    let e = evaluate(&m, catalog.chip("h100").expect("h100"), &both).expect_err("both");
    assert!(e.to_string().contains("--capacity-factor"), "{e}");
    let zero = cfg(Some(0.0));
    let e = evaluate(&m, catalog.chip("h100").expect("h100"), &zero).expect_err("zero");
    assert!(e.to_string().contains("--capacity-factor"), "{e}");
}
