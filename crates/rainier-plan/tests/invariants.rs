//! Invariants every plan must satisfy, over random valid jobs (issue 19): finite positive
//! times, MFU at most 100 %, `fits` agreeing with the memory figures, no throughput gained by
//! removing chips, a search on more chips never worse, and serving bounded below by physics
//! (TPOT by reading the weights once at HBM bandwidth, TTFT by the prefill FLOPs at peak).

use proptest::prelude::*;
use rainier_hw::Catalog;
use rainier_model::Model;
use rainier_plan::{
    evaluate, search, serve, SearchOptions, ServeConfig, ServeReport, TrainConfig, TrainReport,
};

const MODELS: [&str; 5] = ["llama2-7b", "llama3-8b", "llama3-70b", "gpt3-175b", "mixtral-8x7b"];
const DENSE: [&str; 4] = ["llama2-7b", "llama3-8b", "llama3-70b", "gpt3-175b"];
const CHIPS: [&str; 7] = ["h100", "h200", "b200", "trn1", "trn2", "inf2", "tpu-v5p"];

fn chip(name: &str) -> rainier_hw::Chip {
    Catalog::built_in().chip(name).unwrap_or_else(|e| panic!("{e}")).clone()
}

fn check_train(r: &TrainReport) -> Result<(), TestCaseError> {
    let finite_positive = |x: f64| x.is_finite() && x > 0.0;
    prop_assert!(finite_positive(r.step_time_s) && finite_positive(r.tokens_per_s), "{r:?}");
    prop_assert!(r.mfu > 0.0 && r.mfu <= 1.0, "MFU {}", r.mfu);
    let tokens = (r.global_batch * r.seq) as f64;
    prop_assert!((tokens / r.step_time_s / r.tokens_per_s - 1.0).abs() < 1e-9);
    let m = &r.memory_gib_per_device;
    let parts = m.params + m.grads + m.optimizer + m.activations + m.other;
    prop_assert!((parts - m.total).abs() <= 1e-9 * m.total.max(1.0), "{m:?}");
    prop_assert_eq!(r.fits, m.total <= m.capacity);
    prop_assert!(r.plan.chips_used <= r.chips, "{:?}", r.plan);
    Ok(())
}

fn fixed(r: &TrainReport, cfg: &TrainConfig, chips: u64) -> TrainConfig {
    let p = &r.plan;
    TrainConfig {
        chips,
        tp: Some(p.tp),
        cp: Some(p.cp),
        ep: Some(p.ep),
        pp: Some(p.pp),
        vpp: Some(p.vpp),
        dp: Some(p.dp),
        micro_batch: Some(p.micro_batch),
        placement: Some(p.placement),
        ..cfg.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn training_plans_are_physical(model_i in 0usize..5, chip_i in 0usize..7, chips_log in 3u32..11,
                                   seq_log in 11u32..14, batch_log in 6u32..12) {
        let model = Model::preset(MODELS[model_i]).unwrap_or_else(|e| panic!("{e}"));
        let chip = chip(CHIPS[chip_i]);
        let chips = 1u64 << chips_log;
        let cfg = TrainConfig::new(chips, 1 << seq_log, 1 << batch_log);
        // Jobs no plan can run (too long a sequence, no scale-out network) are errors, tested
        // elsewhere; the invariants are about the plans that exist.
        let Ok(r) = evaluate(&model, &chip, &cfg) else { return Ok(()) };
        check_train(&r)?;
        // Chips without a scale-out network cannot grow the cluster.
        if chip.node.scale_out_bits_per_s.value <= 0.0 {
            return Ok(());
        }
        // The same plan on twice the chips (the rest idle) is no slower, and on exactly the
        // chips it uses no faster: removing idle chips gains nothing.
        let wide = evaluate(&model, &chip, &fixed(&r, &cfg, 2 * chips));
        let wide = wide.unwrap_or_else(|e| panic!("the plan on {} chips: {e}", 2 * chips));
        check_train(&wide)?;
        prop_assert!(wide.tokens_per_s >= r.tokens_per_s * (1.0 - 1e-9));
        let tight = evaluate(&model, &chip, &fixed(&r, &cfg, r.plan.chips_used));
        let tight = tight.unwrap_or_else(|e| panic!("the plan on its own chips: {e}"));
        prop_assert!(tight.tokens_per_s <= wide.tokens_per_s * (1.0 + 1e-9));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// The search may leave chips idle, so it never does worse on a larger cluster.
    #[test]
    fn a_search_on_more_chips_is_never_worse(model_i in 0usize..4, chip_i in 0usize..5,
                                             chips_log in 4u32..10, batch_log in 5u32..9) {
        let model = Model::preset(DENSE[model_i]).unwrap_or_else(|e| panic!("{e}"));
        let chip = chip(CHIPS[chip_i]);
        let run = |chips: u64| {
            let cfg = TrainConfig::new(chips, 4096, 1 << batch_log);
            search(&model, &chip, &cfg, &SearchOptions { top: 1, ..SearchOptions::default() }, None)
        };
        let Ok(small) = run(1 << chips_log) else { return Ok(()) };
        let large = run(2 << chips_log).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(large.best.tokens_per_s >= small.best.tokens_per_s * (1.0 - 1e-9),
                     "{} < {}", large.best.tokens_per_s, small.best.tokens_per_s);
    }
}

fn check_serve(
    r: &ServeReport,
    model: &Model,
    chip: &rainier_hw::Chip,
) -> Result<(), TestCaseError> {
    prop_assert!(
        r.ttft_ms.is_finite() && r.ttft_ms > 0.0 && r.tpot_ms.is_finite() && r.tpot_ms > 0.0
    );
    let m = &r.memory_gib_per_device;
    prop_assert_eq!(r.fits, m.total <= m.capacity);
    // Each decode step reads every weight a device holds at least once.
    let per_device_bw = chip.hbm_bytes_per_s.value / f64::from(r.plan.ranks_per_chip);
    let read_s = m.weights * (1u64 << 30) as f64 / per_device_bw;
    prop_assert!(
        r.tpot_ms * 1e-3 >= read_s * (1.0 - 1e-9),
        "TPOT {} ms < {} ms",
        r.tpot_ms,
        read_s * 1e3
    );
    // The first token needs its prompt's forward pass: 2 FLOP per active matmul weight per
    // token, on the replica's chips at their highest peak.
    let replica_chips = (r.plan.chips_used / r.plan.replicas.max(1)).max(1) as f64;
    let peak = chip.peak_flops.bf16.value.max(chip.peak_flops.fp8.value);
    let flops = 2.0 * model.matmul_params_active() as f64 * r.input_len as f64;
    prop_assert!(
        r.ttft_ms * 1e-3 >= flops / (replica_chips * peak) * (1.0 - 1e-9),
        "TTFT {} ms below the prefill FLOPs at peak",
        r.ttft_ms
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn serving_is_bounded_by_weight_reads_and_prefill_flops(model_i in 0usize..4, chip_i in 0usize..7,
            chips_log in 0u32..7, input_log in 7u32..13, output_log in 5u32..11, batch_log in 0u32..7) {
        let model = Model::preset(DENSE[model_i]).unwrap_or_else(|e| panic!("{e}"));
        let chip = chip(CHIPS[chip_i]);
        let cfg = ServeConfig {
            batch: Some(1 << batch_log),
            ..ServeConfig::new(1 << chips_log, 1 << input_log, 1 << output_log)
        };
        let Ok(r) = serve(&model, &chip, &cfg) else { return Ok(()) };
        check_serve(&r, &model, &chip)?;
    }
}
