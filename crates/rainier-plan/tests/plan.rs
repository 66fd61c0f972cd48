//! The training planner: plans, memory, errors and monotonicity.

use proptest::prelude::*;
use rainier_hw::Catalog;
use rainier_model::{Model, Recompute};
use rainier_plan::{evaluate, PlanError, TrainConfig};

fn cfg(chips: u64, seq: u64, batch: u64) -> TrainConfig {
    TrainConfig::new(chips, seq, batch)
}

#[test]
fn explicit_plan_reports_every_field() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-70b").expect("preset");
    let chip = catalog.chip("h100").expect("h100");
    let c = TrainConfig {
        tp: Some(8),
        pp: Some(4),
        dp: Some(8),
        micro_batch: Some(1),
        ..cfg(256, 8192, 512)
    };
    let r = evaluate(&model, chip, &c).expect("plan");
    assert!(!r.plan.chosen && r.plan.micro_batches == 64);
    assert!(r.step_time_s > 0.0 && r.mfu > 0.2 && r.mfu < 0.7, "mfu {}", r.mfu);
    let b = &r.breakdown_s;
    assert!(b.pipeline_bubble > 0.0 && b.communication >= b.exposed_communication);
    let sum = b.compute + b.exposed_communication + b.pipeline_bubble + b.optimizer;
    assert!((sum / r.step_time_s - 1.0).abs() < 1e-9);
    let m = &r.memory_gib_per_device;
    let parts = m.params + m.grads + m.optimizer + m.activations + m.other;
    assert!((parts - m.total).abs() < 1e-9 && r.fits == (m.total <= m.capacity));
    assert!((r.tokens_per_s_per_chip * 256.0 - r.tokens_per_s).abs() < 1e-6 * r.tokens_per_s);
}

#[test]
fn trainium_ranks_are_neuroncores() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama2-7b").expect("preset");
    let trn2 = catalog.chip("trn2").expect("trn2");
    // 16 trn2 chips at LNC=2: 64 ranks.
    let r = evaluate(
        &model,
        trn2,
        &TrainConfig { tp: Some(8), pp: Some(1), dp: Some(8), ..cfg(16, 4096, 64) },
    )
    .expect("plan");
    assert_eq!((r.plan.ranks, r.plan.ranks_per_chip), (64, 4));
    let r = evaluate(
        &model,
        trn2,
        &TrainConfig { tp: Some(8), pp: Some(1), dp: Some(16), lnc: Some(1), ..cfg(16, 4096, 64) },
    )
    .expect("plan");
    assert_eq!(r.plan.ranks, 128);
    let e = evaluate(
        &model,
        trn2,
        &TrainConfig { tp: Some(8), pp: Some(1), dp: Some(16), ..cfg(16, 4096, 64) },
    )
    .expect_err("degrees");
    assert!(e.to_string().contains("64 ranks (4 per chip, NeuronCores"), "{e}");
    let trn1 = catalog.chip("trn1").expect("trn1");
    let r = evaluate(
        &model,
        trn1,
        &TrainConfig { tp: Some(8), pp: Some(1), dp: Some(4), ..cfg(16, 4096, 64) },
    )
    .expect("plan");
    assert_eq!(r.plan.ranks_per_chip, 2);
}

#[test]
fn chosen_plan_fits_and_says_so() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-70b").expect("preset");
    for chip in ["h100", "trn2", "tpu-v5p", "b200"] {
        let r =
            evaluate(&model, catalog.chip(chip).expect(chip), &cfg(64, 4096, 256)).expect("plan");
        assert!(r.plan.chosen && r.fits, "{chip}: {:?}", r.plan);
        assert_eq!(r.plan.tp * r.plan.pp * r.plan.dp, r.plan.ranks);
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama2-7b").expect("preset");
    let h100 = catalog.chip("h100").expect("h100");
    let cases: Vec<(TrainConfig, &str)> = vec![
        (cfg(0, 4096, 8), "--chips must be positive"),
        (cfg(8, 0, 8), "--seq must be positive"),
        (cfg(8, 8192, 8), "max_position_embeddings"),
        (
            TrainConfig { tp: Some(3), pp: Some(1), dp: Some(8), ..cfg(8, 4096, 8) },
            "tp × cp × pp × dp",
        ),
        (
            TrainConfig { tp: Some(1), pp: Some(1), dp: Some(8), ..cfg(8, 4096, 12) },
            "does not divide the global batch (12)",
        ),
        (
            TrainConfig {
                tp: Some(1),
                pp: Some(1),
                dp: Some(8),
                micro_batch: Some(0),
                ..cfg(8, 4096, 8)
            },
            "--micro-batch must be positive",
        ),
        (TrainConfig { zero: 4, ..cfg(8, 4096, 8) }, "--zero"),
        (cfg(1 << 40, 4096, 8), "absurdly large"),
    ];
    for (c, needle) in cases {
        let e = evaluate(&model, h100, &c).expect_err(needle);
        assert!(e.to_string().contains(needle), "{e} ∌ {needle}");
    }
    let inf2 = catalog.chip("inf2").expect("inf2");
    let e = evaluate(&model, inf2, &cfg(24, 4096, 48)).expect_err("no EFA");
    assert!(matches!(e, PlanError::NoScaleOut { .. }), "{e}");
}

#[test]
fn deterministic() {
    let catalog = Catalog::built_in();
    let model = Model::preset("mixtral-8x7b").expect("preset");
    let chip = catalog.chip("trn2").expect("trn2");
    let a = serde_json::to_string(&evaluate(&model, chip, &cfg(32, 4096, 128)).expect("plan"))
        .expect("json");
    let b = serde_json::to_string(&evaluate(&model, chip, &cfg(32, 4096, 128)).expect("plan"))
        .expect("json");
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Recomputing more costs time and saves memory; a bigger micro-batch needs more
    /// activation memory; more data-parallel chips never lower cluster throughput.
    #[test]
    fn planner_is_monotonic(model_i in 0usize..4, chip_i in 0usize..6, tp_log in 0u32..4, seq_log in 10u32..13, mb_log in 0u32..2) {
        let catalog = Catalog::built_in();
        let model = Model::preset(["llama2-7b", "llama3-8b", "gpt3-175b", "mixtral-8x7b"][model_i]).expect("preset");
        let chip = catalog.chip(["h100", "b200", "trn1", "trn2", "tpu-v5p", "tpu-v6e"][chip_i]).expect("chip");
        let per_chip = rainier_plan::ranks_per_chip(chip, None).expect("ranks") as u64;
        let tp = 1u64 << tp_log;
        let chips = 16u64;
        let ranks = chips * per_chip;
        prop_assume!(ranks % tp == 0 && (1u64 << seq_log) <= model.max_positions);
        let dp = ranks / tp;
        let mb = 1u64 << mb_log;
        let base = TrainConfig { tp: Some(tp), pp: Some(1), dp: Some(dp), micro_batch: Some(mb), ..cfg(chips, 1 << seq_log, dp * mb * 4) };
        let run = |c: &TrainConfig| evaluate(&model, chip, c).expect("plan");
        let none = run(&TrainConfig { recompute: Recompute::None, ..base.clone() });
        let sel = run(&TrainConfig { recompute: Recompute::Selective, ..base.clone() });
        let full = run(&TrainConfig { recompute: Recompute::Full, ..base.clone() });
        prop_assert!(none.step_time_s <= sel.step_time_s && sel.step_time_s <= full.step_time_s);
        let act = |r: &rainier_plan::TrainReport| r.memory_gib_per_device.activations;
        prop_assert!(act(&full) <= act(&sel) && act(&sel) <= act(&none));
        if mb > 1 {
            let half = run(&TrainConfig { micro_batch: Some(mb / 2), global_batch: dp * mb * 4, ..base.clone() });
            prop_assert!(act(&half) < act(&sel));
        }
        let double = run(&TrainConfig { dp: Some(2 * dp), chips: 2 * chips, global_batch: 2 * dp * mb * 4, ..base.clone() });
        prop_assert!(double.tokens_per_s >= sel.tokens_per_s * 0.999);
    }
}

/// Training in MXFP8/MXFP4 on NeuronCore-v4 (trn3, trn4) from the simulated MX gemm: faster
/// than bf16, and an error naming the requirement on chips without MX matmul.
#[test]
fn mx_training_runs_on_neuroncore_v4_and_is_refused_elsewhere() {
    let model = Model::preset("llama3-8b").expect("preset");
    let catalog = Catalog::built_in();
    let step = |chip: &str, precision| {
        let c = TrainConfig { precision, ..cfg(64, 4096, 256) };
        evaluate(&model, catalog.chip(chip).expect(chip), &c)
    };
    for chip in ["trn3", "trn4"] {
        let bf16 = step(chip, rainier_perf::Precision::Bf16).expect("bf16");
        for mx in [rainier_perf::Precision::Mxfp8, rainier_perf::Precision::Mxfp4] {
            let r = step(chip, mx).expect("mx");
            assert!(
                r.step_time_s < 0.8 * bf16.step_time_s,
                "{chip} {mx:?}: {} vs {}",
                r.step_time_s,
                bf16.step_time_s
            );
        }
    }
    let err = step("trn2", rainier_perf::Precision::Mxfp8).expect_err("no MX on trn2");
    assert!(err.to_string().contains("NeuronCore-v4"), "{err}");
}

/// Offloading layer inputs holds two of them in HBM instead of one per layer, costs nothing
/// where the host link keeps up with the layer (405B on TPU7x) and stalls where it does not
/// (GPT-2 small's short layers on an H100), and needs full recompute.
#[test]
fn offloaded_layer_inputs_leave_hbm_and_stall_only_beyond_the_host_link() {
    let catalog = Catalog::built_in();
    let plan = |model: &str, chip: &str, (chips, seq, mb): (u64, u64, u64), offload, recompute| {
        let c = TrainConfig {
            tp: Some(1),
            pp: Some(1),
            dp: Some(chips),
            zero: 3,
            micro_batch: Some(mb),
            recompute,
            offload_layer_inputs: offload,
            ..cfg(chips, seq, chips * mb)
        };
        let model = Model::preset(model).expect("preset");
        evaluate(&model, catalog.chip(chip).expect("chip"), &c)
    };
    let big = |offload| plan("llama3.1-405b", "tpu-v7", (256, 8192, 6), offload, Recompute::Full);
    let (kept, off) = (big(false).expect("plan"), big(true).expect("plan"));
    let layers = 126.0;
    let per_layer = kept.memory_gib_per_device.activations / (layers + 1.0);
    assert!(kept.memory_gib_per_device.activations > 100.0 && !kept.fits);
    assert!((off.memory_gib_per_device.activations / per_layer - 3.0).abs() < 0.05);
    assert!(off.fits);
    assert!((off.step_time_s / kept.step_time_s - 1.0).abs() < 1e-9);
    let small = |offload| plan("gpt2-124m", "h100", (8, 1024, 32), offload, Recompute::Full);
    let (kept, off) = (small(false).expect("plan"), small(true).expect("plan"));
    assert!(off.step_time_s > 1.05 * kept.step_time_s, "{} {}", off.step_time_s, kept.step_time_s);
    let e =
        plan("gpt2-124m", "h100", (8, 1024, 32), true, Recompute::Selective).expect_err("refused");
    assert!(e.to_string().contains("full recompute"), "{e}");
}

/// bf16 Adam moments take 4 of the 12 bytes of optimizer state per parameter away.
#[test]
fn bf16_moments_cut_optimizer_state_by_a_third() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-8b").expect("preset");
    let chip = catalog.chip("h100").expect("h100");
    let base = TrainConfig { tp: Some(1), pp: Some(1), dp: Some(8), ..cfg(8, 4096, 32) };
    let fp32 = evaluate(&model, chip, &base).expect("plan");
    let c = TrainConfig { moments: rainier_plan::Moments::Bf16, ..base };
    let bf16 = evaluate(&model, chip, &c).expect("plan");
    let ratio = bf16.memory_gib_per_device.optimizer / fp32.memory_gib_per_device.optimizer;
    assert!((ratio - 8.0 / 12.0).abs() < 1e-9, "{ratio}");
}
