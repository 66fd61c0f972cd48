//! Plan search, the parallel dimensions beyond TP/PP/DP, economics and goodput.

use rainier_hw::Catalog;
use rainier_model::Model;
use rainier_plan::{
    evaluate, price_range, search, EconomicsConfig, Placement, Pricing, Recovery, SearchOptions,
    TrainConfig, TrainReport,
};

fn chip(name: &str) -> rainier_hw::Chip {
    Catalog::built_in().chip(name).expect("chip").clone()
}

fn model(name: &str) -> Model {
    Model::preset(name).expect("preset")
}

fn fixed(chips: u64, seq: u64, batch: u64, tp: u64, pp: u64, dp: u64) -> TrainConfig {
    TrainConfig {
        tp: Some(tp),
        pp: Some(pp),
        dp: Some(dp),
        micro_batch: Some(1),
        ..TrainConfig::new(chips, seq, batch)
    }
}

#[test]
fn search_is_at_least_as_good_as_the_practitioner_choice() {
    let (m, c) = (model("llama3-70b"), chip("h100"));
    let cfg = TrainConfig::new(256, 8192, 512);
    let chosen = evaluate(&m, &c, &cfg).expect("plan");
    let found = search(&m, &c, &cfg, &SearchOptions::default(), None).expect("search");
    assert!(found.best.fits && chosen.fits);
    assert!(found.best.tokens_per_s >= chosen.tokens_per_s * 0.9999);
    assert!(found.evaluated > 1000 && found.fitting <= found.evaluated);
    // The best by cost costs no more per token than the best by throughput.
    assert!(
        found.best_by_cost.usd_per_million_tokens
            <= found.best.economics.usd_per_million_tokens * 1.0001
    );
}

#[test]
fn neuron_searches_stop_at_zero_1_as_neuronx_distributed_does() {
    // NxD shards optimizer states only: a Neuron search never proposes ZeRO-2/3, a GPU
    // search may; a ZeRO-3 Neuron plan asked for explicitly runs, marked a what-if.
    let m = model("llama2-13b");
    let cfg = TrainConfig::new(64, 4096, 256);
    let top = SearchOptions { top: 200, ..SearchOptions::default() };
    let trn1 = search(&m, &chip("trn1"), &cfg, &top, None).expect("trn1 search");
    assert!(trn1.plans.iter().all(|p| p.zero <= 1) && trn1.best.plan.zero <= 1);
    let h100 = search(&m, &chip("h100"), &cfg, &top, None).expect("h100 search");
    assert!(h100.plans.iter().any(|p| p.zero > 1));
    let zero3 = TrainConfig { zero: 3, ..fixed(64, 4096, 256, 8, 1, 16) };
    let report = evaluate(&m, &chip("trn1"), &zero3).expect("zero-3 plan");
    assert!(report.notes.iter().any(|n| n.starts_with("ZeRO-3: a what-if")), "{:?}", report.notes);
}

#[test]
fn search_does_not_depend_on_the_thread_count() {
    let (m, c) = (model("mixtral-8x7b"), chip("trn2"));
    let cfg = TrainConfig::new(128, 4096, 256);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            serde_json::to_string(
                &search(&m, &c, &cfg, &SearchOptions { top: 20, ..SearchOptions::default() }, None)
                    .expect("search"),
            )
            .expect("json")
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn a_half_million_chip_search_answers() {
    let (m, c) = (model("llama3.1-405b"), chip("trn2"));
    let cfg = TrainConfig::new(500_000, 8192, 16_384);
    let found = search(&m, &c, &cfg, &SearchOptions::default(), None).expect("search");
    let plan = &found.best.plan;
    assert!(found.best.fits);
    assert!(plan.chips_used <= 500_000 && plan.chips_used > 400_000, "{}", plan.chips_used);
    assert_eq!(plan.ranks, plan.tp * plan.cp * plan.pp * plan.dp);
    assert!(found.best.mfu > 0.1 && found.best.mfu < 0.7);
}

/// No cliff at scale: half a million chips fail every few minutes, which whole-job restarts
/// cannot outrun; the job keeps training by swapping replicas (auto, or asked for), holding
/// hot spares. At 1,024 chips restarts cost little and stay the default.
#[test]
fn huge_jobs_keep_running_by_swapping_replicas() {
    let m = model("llama3.1-405b");
    let economics =
        |recovery| EconomicsConfig { tokens: Some(15e12), recovery, ..EconomicsConfig::default() };
    let run = |chips: u64, dp: u64, recovery| {
        let cfg =
            TrainConfig { economics: economics(recovery), ..fixed(chips, 8192, 16_384, 32, 8, dp) };
        let r = evaluate(&m, &chip("trn2"), &cfg).expect("plan");
        r.economics.budget.expect("budget").goodput
    };
    let small = run(1024, 16, Recovery::Auto);
    assert_eq!(small.recovery, "job restart");
    assert!(small.fraction > 0.9 && small.spare_nodes == 0.0, "{small:?}");
    let huge = run(524_288, 8192, Recovery::Auto);
    assert_eq!(huge.recovery, "replica swap");
    assert!(huge.fraction > 0.99 && huge.job_mtbf_hours < 0.2, "{huge:?}");
    assert!(huge.spare_nodes >= 1.0, "{huge:?}");
    let restarts = run(524_288, 8192, Recovery::Restart);
    assert!(restarts.fraction < 0.5, "{restarts:?}");
    assert_eq!(run(524_288, 8192, Recovery::Replica), huge);
}

#[test]
fn context_parallelism_splits_activations_and_keeps_the_flops() {
    let (m, c) = (model("llama3-8b"), chip("h100"));
    let run = |cp| {
        evaluate(&m, &c, &TrainConfig { cp: Some(cp), ..fixed(64, 8192, 64, 1, 1, 64 / cp) })
            .expect("plan")
    };
    let (one, four) = (run(1), run(4));
    let act = |r: &TrainReport| r.memory_gib_per_device.activations;
    assert!(act(&four) < 0.3 * act(&one), "{} vs {}", act(&four), act(&one));
    assert!(four.breakdown_s.communication_by_kind.cp.total > 0.0);
    assert_eq!(one.breakdown_s.communication_by_kind.cp.total, 0.0);
    // Same tokens on the same chips: throughput within the communication overhead.
    assert!((four.tokens_per_s / one.tokens_per_s - 1.0).abs() < 0.2);
}

#[test]
fn expert_parallelism_shards_the_experts_and_pays_all_to_alls() {
    let (m, c) = (model("mixtral-8x7b"), chip("h100"));
    let run = |ep| {
        evaluate(&m, &c, &TrainConfig { ep: Some(ep), zero: 0, ..fixed(64, 4096, 64, 1, 1, 64) })
            .expect("plan")
    };
    let (one, eight) = (run(1), run(8));
    assert!(eight.memory_gib_per_device.params < 0.3 * one.memory_gib_per_device.params);
    assert!(eight.breakdown_s.communication_by_kind.ep.exposed > 0.0);
    assert_eq!(one.breakdown_s.communication_by_kind.ep.total, 0.0);
}

#[test]
fn interleaving_shrinks_the_bubble() {
    let (m, c) = (model("llama3-70b"), chip("h100"));
    let base = TrainConfig { tp: Some(8), ..fixed(64, 4096, 64, 8, 4, 2) };
    let plain = evaluate(&m, &c, &base).expect("plan");
    let inter = evaluate(&m, &c, &TrainConfig { vpp: Some(2), ..base.clone() }).expect("plan");
    let ratio = inter.breakdown_s.pipeline_bubble / plain.breakdown_s.pipeline_bubble;
    assert!((ratio - 0.5).abs() < 0.01, "{ratio}");
    assert!(
        inter.breakdown_s.communication_by_kind.pp.total
            > plain.breakdown_s.communication_by_kind.pp.total
    );
    assert!(inter.memory_gib_per_device.activations > plain.memory_gib_per_device.activations);
    let e = evaluate(&m, &c, &TrainConfig { vpp: Some(3), ..base }).expect_err("80 layers");
    assert!(e.to_string().contains("pp × vpp"), "{e}");
}

#[test]
fn placement_decides_which_group_crosses_nodes() {
    let (m, c) = (model("llama3-8b"), chip("h100"));
    let base = fixed(64, 4096, 64, 1, 8, 8);
    let run =
        |p| evaluate(&m, &c, &TrainConfig { placement: Some(p), ..base.clone() }).expect("plan");
    let (dp_inner, pp_inner) = (run(Placement::DpInner), run(Placement::PpInner));
    // DP peers inside an 8-GPU node reduce over NVLink; spread over nodes they use the NIC.
    let dp = |r: &TrainReport| r.breakdown_s.communication_by_kind.dp.total;
    assert!(dp(&pp_inner) > 3.0 * dp(&dp_inner), "{} {}", dp(&pp_inner), dp(&dp_inner));
}

#[test]
fn prices_power_and_energy_follow_their_definitions() {
    let (m, c) = (model("llama3-8b"), chip("h100"));
    let cfg = TrainConfig {
        economics: EconomicsConfig { tokens: Some(1e12), ..EconomicsConfig::default() },
        ..fixed(64, 4096, 256, 1, 1, 64)
    };
    let r = evaluate(&m, &c, &cfg).expect("plan");
    let e = &r.economics;
    assert_eq!(e.usd_per_chip_hour, c.node.usd_per_chip_hour.value);
    let per_m = 64.0 * e.usd_per_chip_hour / 3600.0 / r.tokens_per_s * 1e6;
    assert!((e.usd_per_million_tokens / per_m - 1.0).abs() < 1e-12);
    assert!(e.chip_w <= c.power_w.value && e.chip_w > 0.3 * c.power_w.value);
    assert!((e.facility_mw - 64.0 * e.system_w_per_chip * e.pue / 1e6).abs() < 1e-9);
    let b = e.budget.as_ref().expect("budget");
    let days = b.time_to_train_days.expect("finishes");
    assert!(days >= b.ideal_days && b.goodput.fraction > 0.9);
    assert!((b.energy_mwh.expect("mwh") - e.facility_mw * days * 24.0).abs() < 1e-6 * days);
    assert!(
        (b.cost_usd.expect("cost") - days * 24.0 * 64.0 * e.usd_per_chip_hour).abs() < 1e-6 * days
    );
    // Committed and user prices.
    let committed = evaluate(
        &m,
        &c,
        &TrainConfig {
            economics: EconomicsConfig {
                pricing: Pricing::Committed,
                ..EconomicsConfig::default()
            },
            ..cfg.clone()
        },
    )
    .expect("plan");
    assert!(committed.economics.usd_per_chip_hour < e.usd_per_chip_hour);
    let user = evaluate(
        &m,
        &c,
        &TrainConfig {
            economics: EconomicsConfig {
                usd_per_chip_hour: Some(1.0),
                ..EconomicsConfig::default()
            },
            ..cfg
        },
    )
    .expect("plan");
    assert_eq!(user.economics.usd_per_chip_hour, 1.0);
    assert_eq!(user.economics.pricing, "user");
}

/// Prices on one basis: a chip's published rate on it, else its other basis's converted by
/// AWS's capacity-block/on-demand ratio (0.83), graded derived (assumed stays assumed).
#[test]
fn prices_are_put_on_one_basis() {
    let m = model("llama3-8b");
    let price = |name: &str, pricing| {
        let cfg = TrainConfig {
            economics: EconomicsConfig { pricing, ..EconomicsConfig::default() },
            ..TrainConfig::new(64, 4096, 256)
        };
        let e = evaluate(&m, &chip(name), &cfg).expect("plan").economics;
        (e.usd_per_chip_hour, e.price_grade, e.pricing)
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b;
    // Trn2 is sold by capacity block only; H100 both ways; A100 on demand only.
    let (trn2_cb, grade, basis) = price("trn2", Pricing::CapacityBlock);
    assert!(close(trn2_cb, 2.235) && grade == "doc" && basis == "capacity-block");
    let (trn2_od, grade, _) = price("trn2", Pricing::OnDemand);
    assert!(close(trn2_od, 2.235 / 0.83) && grade == "derived", "{trn2_od} {grade}");
    let (h100_cb, grade, _) = price("h100", Pricing::CapacityBlock);
    assert!(close(h100_cb, 5.191) && grade == "doc", "{h100_cb} {grade}");
    assert!(close(price("h100", Pricing::OnDemand).0, 6.88));
    let (a100_cb, grade, _) = price("a100", Pricing::CapacityBlock);
    assert!(close(a100_cb, 3.431 * 0.83) && grade == "derived", "{a100_cb} {grade}");
    let (_, grade, _) = price("trn3", Pricing::OnDemand);
    assert_eq!(grade, "assumed");
    // Ranges: none for a published price on its basis; the conversion ratio's 0.75-0.87 for a
    // converted one; an assumed price's catalog range (converted too when it must be).
    let range = |name: &str, pricing| {
        let cfg = EconomicsConfig { pricing, ..EconomicsConfig::default() };
        price_range(&chip(name), &cfg)
    };
    assert_eq!(range("h100", Pricing::OnDemand), None);
    assert_eq!(range("h100", Pricing::CapacityBlock), None);
    assert_eq!(range("trn2", Pricing::CapacityBlock), None);
    let (lo, hi) = range("trn2", Pricing::OnDemand).expect("converted");
    assert!(close(lo, 2.235 / 0.87) && close(hi, 2.235 / 0.75), "{lo} {hi}");
    let (lo, hi) = range("trn3", Pricing::CapacityBlock).expect("assumed");
    assert!(close(lo, 2.24) && close(hi, 4.33), "{lo} {hi}");
    let user = EconomicsConfig { usd_per_chip_hour: Some(1.0), ..EconomicsConfig::default() };
    assert_eq!(price_range(&chip("trn3"), &user), None);
}

/// H100 power all-in, chip and host, in dense training: near the MLPerf-measured node average
/// (6.74 kW per 8 GPUs = 843 W per GPU, the host figure's source), not the DGX PSU rating
/// (1,275 W per GPU, which the model used until 2026-12-03).
#[test]
fn h100_power_is_near_the_measured_node_not_its_rating() {
    let cfg = TrainConfig::new(1024, 8192, 2048);
    let e = evaluate(&model("llama3-70b"), &chip("h100"), &cfg).expect("plan").economics;
    assert!((800.0..950.0).contains(&e.system_w_per_chip), "{} W", e.system_w_per_chip);
}

/// Young/Daly: the interval is √(2·δ·M); a job whose failures outpace its restarts never ends.
#[test]
fn goodput_follows_young_daly() {
    let (m, c) = (model("llama3-70b"), chip("h100"));
    let with_recovery = |mtbf: f64, restart: f64, recovery| {
        let economics = EconomicsConfig {
            tokens: Some(1e12),
            mtbf_chip_hours: Some(mtbf),
            restart_s: Some(restart),
            recovery,
            ..EconomicsConfig::default()
        };
        let r = evaluate(&m, &c, &TrainConfig { economics, ..TrainConfig::new(1024, 8192, 1024) })
            .expect("plan");
        r.economics.budget.expect("budget")
    };
    let with = |mtbf: f64, restart: f64| with_recovery(mtbf, restart, Recovery::Restart);
    let b = with(50_700.0, 600.0);
    let g = &b.goodput;
    let tau = (2.0 * g.checkpoint_write_s * g.job_mtbf_hours * 3600.0).sqrt();
    assert!((g.checkpoint_interval_min * 60.0 / tau - 1.0).abs() < 1e-9);
    assert!((g.job_mtbf_hours - 50_700.0 / 1024.0).abs() < 1e-9);
    assert!(g.fraction > 0.5 && g.fraction < 1.0);
    assert!(with(1e9, 0.0).goodput.fraction > 0.999);
    assert!(with(5_000.0, 600.0).goodput.fraction < g.fraction);
    let hopeless = with(100.0, 3600.0);
    assert_eq!(hopeless.goodput.fraction, 0.0);
    assert!(hopeless.time_to_train_days.is_none() && hopeless.cost_usd.is_none());
    // Left to choose, the same job swaps replicas instead of never finishing.
    let swapped = with_recovery(100.0, 3600.0, Recovery::Auto);
    assert_eq!(swapped.goodput.recovery, "replica swap");
    assert!(swapped.goodput.fraction > 0.9 && swapped.time_to_train_days.is_some());
}
