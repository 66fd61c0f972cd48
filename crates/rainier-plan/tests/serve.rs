//! The serving model: decode bound by weight and KV reads, formats, batching, SLOs, errors.

use rainier_hw::Catalog;
use rainier_model::Model;
use rainier_plan::{serve, serve_search, KvFormat, ServeConfig, ServeReport, WeightFormat};

fn chip(name: &str) -> rainier_hw::Chip {
    Catalog::built_in().chip(name).expect("chip").clone()
}

fn model(name: &str) -> Model {
    Model::preset(name).expect("preset")
}

fn run(m: &str, c: &str, cfg: &ServeConfig) -> ServeReport {
    serve(&model(m), &chip(c), cfg).expect("serve")
}

fn one(chips: u64, tp: u64, input: u64, output: u64) -> ServeConfig {
    ServeConfig {
        tp: Some(tp),
        pp: Some(1),
        batch: Some(1),
        ..ServeConfig::new(chips, input, output)
    }
}

/// Batch-1 decode reads every weight once: the GEMM time is the weight bytes at the streaming
/// bandwidth the H100 GEMMs were fitted with (0.75 of 3.35 TB/s) plus 5 µs per kernel (4 per
/// layer and the LM head), at the in-step efficiency 0.88.
#[test]
fn batch_one_decode_is_weight_bandwidth_bound() {
    let m = model("llama3-8b");
    let r = run("llama3-8b", "h100", &one(1, 1, 128, 128));
    let weights = (m.matmul_params_active()) as f64 * 2.0;
    let kernels = (4 * m.layers + 1) as f64 * 5e-6;
    let expected = (weights / (3.35e12 * 0.75) + kernels) / 0.88 * 1e3;
    assert!((r.decode.gemm_ms / expected - 1.0).abs() < 0.03, "{} vs {expected}", r.decode.gemm_ms);
    assert!(r.tpot_ms > r.decode.gemm_ms && r.ttft_ms > r.tpot_ms);
}

#[test]
fn narrower_formats_cut_weight_reads_and_kv_memory() {
    let base = one(1, 1, 1024, 1024);
    let bf16 = run("llama3-8b", "h100", &base);
    let int8 =
        run("llama3-8b", "h100", &ServeConfig { weights: WeightFormat::Int8, ..base.clone() });
    let fp8kv = run("llama3-8b", "h100", &ServeConfig { kv: KvFormat::Fp8, ..base.clone() });
    let ratio = int8.decode.gemm_ms / bf16.decode.gemm_ms;
    assert!(ratio > 0.45 && ratio < 0.65, "{ratio}");
    assert!((int8.memory_gib_per_device.weights / bf16.memory_gib_per_device.weights) < 0.55);
    let c = |r: &ServeReport| r.continuous.max_concurrency as f64;
    assert!((c(&fp8kv) / c(&bf16) - 2.0).abs() < 0.1, "{} {}", c(&fp8kv), c(&bf16));
}

#[test]
fn kv_cache_counts_grouped_query_heads() {
    let m = model("llama3-8b");
    assert_eq!(m.kv_bytes_per_token(2.0), (32 * 2 * 8 * 128 * 2) as f64);
    let m70 = model("llama2-70b");
    assert_eq!(m70.kv_bytes_per_token(1.0), (80 * 2 * 8 * 128) as f64);
}

#[test]
fn longer_prompts_and_contexts_cost_more() {
    let short = run("llama3-8b", "h100", &one(1, 1, 128, 128));
    let long = run("llama3-8b", "h100", &one(1, 1, 4096, 4096));
    assert!(long.ttft_ms > 10.0 * short.ttft_ms);
    assert!(long.tpot_ms > short.tpot_ms);
    let batch = |input, output| ServeConfig { batch: Some(32), ..one(1, 1, input, output) };
    let (short, long) =
        (run("llama3-8b", "h100", &batch(128, 128)), run("llama3-8b", "h100", &batch(4096, 4096)));
    // 32× the context read per step (kernel overheads aside).
    assert!(long.decode.attention_ms > 10.0 * short.decode.attention_ms);
}

#[test]
fn tensor_parallelism_cuts_batch_one_latency_and_pays_all_reduces() {
    let tp4 = run("llama3-70b", "h100", &one(8, 4, 512, 512));
    let tp8 = run("llama3-70b", "h100", &one(8, 8, 512, 512));
    assert!(tp8.tpot_ms < tp4.tpot_ms);
    assert!(tp8.decode.communication_ms > 0.0);
    assert_eq!(tp4.plan.replicas, 2);
    assert_eq!(tp8.plan.replicas, 1);
}

/// Inferentia2 ranks are NeuronCores (2 per chip); Trn2 at LNC=2 has 4.
#[test]
fn neuron_ranks_are_neuroncores() {
    let inf2 = run("llama3-8b", "inf2", &one(12, 24, 128, 128));
    assert_eq!((inf2.plan.ranks, inf2.plan.ranks_per_chip), (24, 2));
    let trn2 = run("llama3-8b", "trn2", &one(1, 4, 128, 128));
    assert_eq!((trn2.plan.ranks, trn2.plan.ranks_per_chip), (4, 4));
}

#[test]
fn slos_trade_throughput_for_latency() {
    let base = ServeConfig { tp: Some(1), ..ServeConfig::new(8, 1024, 512) };
    let loose = run("llama3-8b", "h100", &base);
    let tight = run("llama3-8b", "h100", &ServeConfig { slo_tpot_ms: Some(15.0), ..base.clone() });
    assert!(tight.continuous.meets_slo && tight.continuous.tpot_ms <= 15.0);
    assert!(tight.continuous.concurrency < loose.continuous.concurrency);
    assert!(tight.continuous.output_tokens_per_s < loose.continuous.output_tokens_per_s);
    assert!(loose.continuous.concurrency <= loose.continuous.max_concurrency);
    let impossible = ServeConfig { slo_tpot_ms: Some(0.01), ..base };
    let e = serve_search(&model("llama3-8b"), &chip("h100"), &impossible).expect_err("no plan");
    assert!(e.to_string().contains("meets the SLO"), "{e}");
}

#[test]
fn search_finds_a_plan_no_dearer_than_a_fixed_one() {
    let cfg = ServeConfig {
        slo_ttft_ms: Some(2000.0),
        slo_tpot_ms: Some(50.0),
        ..ServeConfig::new(16, 1024, 1024)
    };
    let best = serve_search(&model("llama3-70b"), &chip("h100"), &cfg).expect("search");
    assert!(best.continuous.meets_slo && best.fits);
    let fixed = run("llama3-70b", "h100", &ServeConfig { tp: Some(8), pp: Some(1), ..cfg.clone() });
    if fixed.continuous.meets_slo {
        assert!(
            best.cost_usd_per_million_output_tokens
                <= fixed.continuous.cost_usd_per_million_output_tokens * 1.0001
        );
    }
    // Deterministic to the byte.
    let again = serve_search(&model("llama3-70b"), &chip("h100"), &cfg).expect("search");
    assert_eq!(
        serde_json::to_string(&best).expect("json"),
        serde_json::to_string(&again).expect("json")
    );
}

#[test]
fn cost_and_energy_follow_throughput() {
    let r = run("llama3-8b", "h100", &one(1, 1, 1024, 1024));
    let c = &r.continuous;
    let usd = 6.88 / 3600.0 / c.output_tokens_per_s * 1e6;
    assert!((c.cost_usd_per_million_output_tokens / usd - 1.0).abs() < 1e-9);
    assert!(
        c.energy_j_per_output_token > 0.0
            && c.energy_j_per_output_token < r.energy_j_per_output_token
    );
}

#[test]
fn impossible_requests_are_clear_errors() {
    let (m, h100) = (model("llama3-8b"), chip("h100"));
    for (cfg, needle) in [
        (one(8, 3, 128, 128), "does not divide"),
        (ServeConfig { ep: Some(2), ..one(8, 1, 128, 128) }, "mixture-of-experts"),
        (one(8, 1, 8000, 1000), "max_position_embeddings"),
        (one(8, 1, 0, 128), "--input-len must be positive"),
        (ServeConfig { slo_ttft_ms: Some(-1.0), ..one(8, 1, 128, 128) }, "--slo-ttft-ms"),
    ] {
        let e = serve(&m, &h100, &cfg).expect_err(needle);
        assert!(e.to_string().contains(needle), "{e}");
    }
    // 70B in bf16 does not fit one H100: the report says so.
    let r = serve(&model("llama3-70b"), &h100, &one(1, 1, 128, 128)).expect("serve");
    assert!(!r.fits);
}

/// Pipeline stages keep one micro-batch each in flight: continuous throughput with PP 8 is
/// in the range of TP 8 on the same GPUs, not a fraction of it.
#[test]
fn pipeline_parallel_serving_keeps_every_stage_busy() {
    let cfg =
        |tp, pp| ServeConfig { tp: Some(tp), pp: Some(pp), ..ServeConfig::new(8, 1024, 1024) };
    let pp = run("llama3-70b", "h100", &cfg(1, 8));
    let tp = run("llama3-70b", "h100", &cfg(8, 1));
    let ratio = pp.continuous.output_tokens_per_s / tp.continuous.output_tokens_per_s;
    assert!(ratio > 0.7 && ratio < 1.4, "{ratio}");
}

/// With `--search` the report's memory and steps are those of the concurrency it chose.
#[test]
fn search_reports_memory_at_the_chosen_concurrency() {
    let cfg = ServeConfig { slo_tpot_ms: Some(60.0), ..ServeConfig::new(8, 1024, 1024) };
    let r = serve_search(&model("llama3-70b"), &chip("h100"), &cfg).expect("search");
    assert_eq!(r.batch, r.continuous.concurrency);
    assert!(r.batch > 8);
    let kv_per_sequence = model("llama3-70b").kv_bytes_per_token(2.0) * 1536.0
        / (r.plan.tp * r.plan.pp) as f64
        / (1u64 << 30) as f64;
    let expected = kv_per_sequence * r.batch as f64;
    assert!(
        (r.memory_gib_per_device.kv_cache / expected - 1.0).abs() < 0.05,
        "{} vs {expected}",
        r.memory_gib_per_device.kv_cache
    );
    assert!(r.fits && (r.tpot_ms - r.continuous.tpot_ms).abs() < 1e-9);
}

/// Compiled Neuron graphs pad: with buckets a 1500-token prompt costs what the 2048 bucket
/// does; one static graph at 4096 costs more in both phases; GPUs (dynamic shapes) pay only
/// for the prompt they have.
#[test]
fn neuron_prompts_run_at_their_compiled_bucket() {
    use rainier_plan::NeuronShapes;
    let with = |chip: &str, input: u64, shapes: NeuronShapes| {
        let cfg = ServeConfig {
            neuron_shapes: shapes,
            compiled_seq: (chip == "trn2").then_some(4096),
            ..one(1, if chip == "trn2" { 4 } else { 1 }, input, 250)
        };
        run("llama3-8b", chip, &cfg)
    };
    let bucket_1500 = with("trn2", 1500, NeuronShapes::Buckets);
    let bucket_2048 = with("trn2", 2048, NeuronShapes::Buckets);
    assert_eq!(bucket_1500.ttft_ms, bucket_2048.ttft_ms);
    let fixed = with("trn2", 1500, NeuronShapes::Static);
    assert!(fixed.ttft_ms > 1.5 * bucket_1500.ttft_ms, "{} {}", fixed.ttft_ms, bucket_1500.ttft_ms);
    assert!(fixed.tpot_ms > bucket_1500.tpot_ms);
    let gpu_1500 = with("h100", 1500, NeuronShapes::Buckets);
    let gpu_2048 = with("h100", 2048, NeuronShapes::Buckets);
    assert!(gpu_1500.ttft_ms < 0.9 * gpu_2048.ttft_ms);
}

#[test]
fn a_compiled_length_shorter_than_a_request_is_an_error() {
    let cfg = ServeConfig { compiled_seq: Some(1024), ..one(1, 4, 1000, 100) };
    let err = serve(&model("llama3-8b"), &chip("trn2"), &cfg).expect_err("must fail");
    assert!(err.to_string().contains("--compiled-seq 1024"), "{err}");
}

/// The serving search may span a Trn2 UltraServer's instances: 405B at a 30 ms TPOT needs
/// more than one instance's 64 NeuronCores of TP, which only trn2u has over NeuronLink.
#[test]
fn the_ultraserver_lets_tp_span_instances_where_it_pays() {
    let cfg = ServeConfig { slo_tpot_ms: Some(30.0), ..ServeConfig::new(64, 1024, 1024) };
    let m = model("llama3.1-405b");
    assert!(serve_search(&m, &chip("trn2"), &cfg).is_err(), "one instance cannot meet 30 ms");
    let r = serve_search(&m, &chip("trn2u"), &cfg).expect("an UltraServer plan");
    assert!(r.plan.tp > 64, "tp {}", r.plan.tp);
    assert!(r.tpot_ms <= 30.0);
}

/// FP4 serving: NVFP4 on Blackwell at its catalog FP4 peak (prefill and decode faster than
/// fp8, weights a quarter of bf16's plus scales); MXFP4 on Trainium3 from the simulated MX
/// gemm; each refused where the chip lacks the format.
#[test]
fn fp4_serving_runs_where_the_chip_has_fp4_and_is_refused_elsewhere() {
    let with = |chip: &str, tp: u64, weights| {
        let cfg = ServeConfig { weights, ..one(4, tp, 1024, 256) };
        serve(&model("llama3-70b"), &self::chip(chip), &cfg)
    };
    for (chip, tp, fp4) in [("b200", 4, WeightFormat::Nvfp4), ("trn3", 4, WeightFormat::Mxfp4)] {
        let fp8 = with(chip, tp, WeightFormat::Fp8).expect("fp8");
        let r = with(chip, tp, fp4).expect("fp4");
        assert!(r.ttft_ms < fp8.ttft_ms && r.tpot_ms < fp8.tpot_ms, "{chip}: {r:?}");
        let ratio = r.memory_gib_per_device.weights / fp8.memory_gib_per_device.weights;
        assert!((0.5..0.6).contains(&ratio), "{chip}: weights {ratio}");
    }
    for (chip, weights) in [
        ("h100", WeightFormat::Nvfp4),
        ("trn2", WeightFormat::Mxfp4),
        ("b200", WeightFormat::Mxfp4),
    ] {
        let err = with(chip, 4, weights).expect_err("no such format");
        assert!(err.to_string().contains(" run"), "{chip}: {err}");
    }
}

/// Prefix caching: the prefill computes only the missed tokens, so TTFT falls with the hit
/// rate (on a GPU, without buckets, about in proportion for the GEMMs; attention falls by
/// `1 − h²`), decode is untouched, a shared prefix's K/V is held once so more sequences fit,
/// and a hit rate of 0 is no cache at all.
#[test]
fn prefix_caching_prefills_only_missed_tokens() {
    use rainier_plan::PrefixCache;
    let base = ServeConfig { batch: Some(8), ..one(8, 8, 4096, 256) };
    let at =
        |cache| run("llama3-70b", "h100", &ServeConfig { prefix_cache: cache, ..base.clone() });
    let none = at(PrefixCache::None);
    let zero = at(PrefixCache::HitRate(0.0));
    assert_eq!(none.ttft_ms, zero.ttft_ms);
    assert_eq!(none.tpot_ms, zero.tpot_ms);
    let half = at(PrefixCache::HitRate(0.5));
    let most = at(PrefixCache::HitRate(0.9));
    assert!(half.ttft_ms < 0.6 * none.ttft_ms && half.ttft_ms > 0.4 * none.ttft_ms);
    assert!(most.ttft_ms < 0.2 * none.ttft_ms, "{} vs {}", most.ttft_ms, none.ttft_ms);
    assert_eq!(most.tpot_ms, none.tpot_ms);
    // Attention of the missed queries over the whole prompt: 1 − 0.5² of it.
    let ratio = half.prefill.attention_ms / none.prefill.attention_ms;
    assert!((ratio - 0.75).abs() < 0.02, "{ratio}");
    let cached = half.prefix_cache.expect("reported");
    assert_eq!(cached.cached_tokens_per_request, 2048);
    // Shared blocks once: more sequences fit in continuous batching.
    let shared = at(PrefixCache::SharedPrefix(3072));
    assert!(shared.continuous.max_concurrency > none.continuous.max_concurrency);
    assert!(shared.memory_gib_per_device.kv_cache < none.memory_gib_per_device.kv_cache);
    // A full hit still computes the last prompt token.
    let full = at(PrefixCache::HitRate(1.0));
    assert_eq!(full.prefix_cache.expect("reported").cached_tokens_per_request, 4095);
    assert!(full.ttft_ms > 0.0 && full.ttft_ms < most.ttft_ms);
    // Bad input names the flag.
    for bad in
        [PrefixCache::HitRate(1.5), PrefixCache::HitRate(f64::NAN), PrefixCache::SharedPrefix(5000)]
    {
        let e = serve(
            &model("llama3-70b"),
            &chip("h100"),
            &ServeConfig { prefix_cache: bad, ..base.clone() },
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("prefix"), "{e}");
    }
}

/// Speculative decoding with a draft: the expected tokens per round follow
/// `(1 − α^(K+1))/(1 − α)`, a draft that is never accepted only costs, one that is helps a
/// bandwidth-bound batch-1 decode more than a batch of 128, the draft's weights and K/V are
/// held, and bad drafts are refused.
#[test]
fn speculative_decoding_pays_the_draft_and_verifies_in_one_forward() {
    use rainier_plan::Speculative;
    let spec = |acceptance| Speculative {
        draft: model("llama3-8b"),
        tokens: 4,
        acceptance,
        shares_head: false,
    };
    let at = |batch, s: Option<Speculative>| {
        let cfg = ServeConfig { batch: Some(batch), speculative: s, ..one(4, 4, 1024, 256) };
        run("llama3-70b", "h100", &cfg)
    };
    let plain = at(1, None);
    let never = at(1, Some(spec(0.0)));
    assert!(never.tpot_ms > plain.tpot_ms);
    assert!(never.ttft_ms > plain.ttft_ms, "the draft prefills the prompt too");
    let good = at(1, Some(spec(0.8)));
    let r = good.speculative.as_ref().expect("reported");
    let expected = (1.0 - 0.8f64.powi(5)) / 0.2;
    assert!((r.tokens_per_round - expected).abs() < 1e-12);
    assert!((good.tpot_ms - r.round_ms / expected).abs() < 1e-9);
    assert!(r.speedup > 1.5, "batch 1: {}", r.speedup);
    let big = at(128, Some(spec(0.8)));
    assert!(big.speculative.expect("reported").speedup < r.speedup);
    assert!(good.memory_gib_per_device.weights > plain.memory_gib_per_device.weights + 3.0);
    assert!(good.memory_gib_per_device.kv_cache > plain.memory_gib_per_device.kv_cache);
    let perfect = at(1, Some(spec(1.0))).speculative.expect("reported");
    assert_eq!(perfect.tokens_per_round, 5.0);
    // Bad drafts and settings, each a clear error naming the flag.
    let bad = [
        (Speculative { acceptance: 1.5, ..spec(0.8) }, "--acceptance"),
        (Speculative { tokens: 0, ..spec(0.8) }, "--spec-tokens"),
        (Speculative { draft: model("llama3.1-405b"), ..spec(0.8) }, "not smaller"),
        (Speculative { draft: model("llama2-7b"), ..spec(0.8) }, "tokenizer"),
    ];
    for (s, want) in bad {
        let cfg = ServeConfig { speculative: Some(s), ..one(4, 4, 1024, 256) };
        let e = serve(&model("llama3-70b"), &chip("h100"), &cfg).expect_err("refused").to_string();
        assert!(e.contains(want), "{e}");
    }
}

/// A vLLM server adds its host time once per engine step: to the prefill, to every decode
/// step, and once per speculative round (the draft's steps run inside it); GPUs refuse it.
#[test]
fn a_vllm_frontend_pays_its_host_time_once_per_engine_step() {
    use rainier_plan::{Frontend, Speculative};
    let host_ms = rainier_plan::SERVE_ASSUMPTIONS
        .iter()
        .find(|a| a.name == "serve.vllm_neuron_host_step_s")
        .expect("named")
        .value
        * 1e3;
    let base = ServeConfig { lnc: Some(2), ..one(1, 4, 512, 128) };
    let vllm = ServeConfig { frontend: Frontend::Vllm, ..base.clone() };
    let (a, b) = (run("llama3-8b", "trn2", &base), run("llama3-8b", "trn2", &vllm));
    assert!((b.ttft_ms - a.ttft_ms - host_ms).abs() < 1e-9, "{} {}", a.ttft_ms, b.ttft_ms);
    assert!((b.tpot_ms - a.tpot_ms - host_ms).abs() < 1e-9, "{} {}", a.tpot_ms, b.tpot_ms);
    assert!(b.output_tokens_per_s < a.output_tokens_per_s);
    assert!(b.continuous.output_tokens_per_s < a.continuous.output_tokens_per_s);
    let spec = Some(Speculative {
        draft: model("llama3.2-1b"),
        tokens: 4,
        acceptance: 0.7,
        shares_head: false,
    });
    let (sa, sb) = (
        run("llama3-8b", "trn2", &ServeConfig { speculative: spec.clone(), ..base.clone() }),
        run("llama3-8b", "trn2", &ServeConfig { speculative: spec, ..vllm.clone() }),
    );
    let round = |r: &ServeReport| r.speculative.as_ref().expect("reported").round_ms;
    assert!((round(&sb) - round(&sa) - host_ms).abs() < 1e-9, "{} {}", round(&sa), round(&sb));
    let e = serve(
        &model("llama3-8b"),
        &chip("h100"),
        &ServeConfig { frontend: Frontend::Vllm, ..one(1, 1, 512, 128) },
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("frontend vllm") && e.contains("h100"), "{e}");
}

/// A self-speculative head (EAGLE, MTP) is one layer of the target's shape that shares its
/// embedding and LM head: it holds one layer's weights, costs far less than a draft model,
/// and MTP needs the model's MTP modules (its default acceptance the DeepSeek-V3 report's).
#[test]
fn a_speculative_head_is_one_shared_layer() {
    use rainier_plan::{Speculative, SpeculativeHead};
    let target = model("llama3-70b");
    let eagle = Speculative::head(&target, SpeculativeHead::Eagle, 3, Some(0.75)).expect("eagle");
    assert!(eagle.shares_head && eagle.draft.layers == 1 && eagle.draft.mtp_layers == 0);
    assert_eq!(
        (eagle.draft.hidden, eagle.draft.ffn, eagle.draft.vocab),
        (8192, 28672, target.vocab)
    );
    let at = |s: Option<Speculative>| {
        let cfg = ServeConfig { batch: Some(1), speculative: s, ..one(8, 8, 1024, 256) };
        run("llama3-70b", "h100", &cfg)
    };
    let plain = at(None);
    let with_eagle = at(Some(eagle.clone()));
    // One layer's weights per rank: attention (q, o: 8192² each; k, v: 8192 × 1024 each) and
    // the MLP (3 × 8192 × 28672), bf16, over TP 8.
    let layer = (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672) as f64 * 2.0 / 8.0;
    let added = (with_eagle.memory_gib_per_device.weights - plain.memory_gib_per_device.weights)
        * (1u64 << 30) as f64;
    assert!((added / layer - 1.0).abs() < 0.01, "{added} bytes added for a {layer}-byte layer");
    let as_draft = at(Some(Speculative { shares_head: false, ..eagle.clone() }));
    assert!(as_draft.memory_gib_per_device.weights > with_eagle.memory_gib_per_device.weights);
    let r = with_eagle.speculative.as_ref().expect("reported");
    assert!(r.speedup > 2.0, "EAGLE K=3 α=0.75 at batch 1: {}", r.speedup);
    let small_draft = at(Some(Speculative {
        draft: model("llama3.2-1b"),
        tokens: 3,
        acceptance: 0.75,
        shares_head: false,
    }));
    assert!(
        with_eagle.tpot_ms < small_draft.tpot_ms,
        "a one-layer head is cheaper than a 1B draft"
    );
    // MTP: only where the model has it; 0.85 by default.
    let e = Speculative::head(&target, SpeculativeHead::Mtp, 1, None).expect_err("no MTP");
    assert!(e.to_string().contains("num_nextn_predict_layers"), "{e}");
    let mtp = Speculative::head(&model("deepseek-v3"), SpeculativeHead::Mtp, 1, None).expect("mtp");
    assert_eq!(mtp.acceptance, 0.85);
    assert!(mtp.draft.moe.is_some(), "DeepSeek-V3's MTP block is a MoE layer");
    assert!(Speculative::head(&target, SpeculativeHead::Eagle, 3, None).is_err());
}
