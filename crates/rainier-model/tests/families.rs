//! The 2025 model families (Qwen3 dense and MoE, DeepSeek-V3, Llama 4, GPT-OSS) read from
//! their Hub `config.json` (the presets are those files): parameter counts against the
//! published figures, layer kinds, MLA's cache, and the configs' own errors.

use rainier_model::{Batch, LayerGroup, Model, OpKind};

fn preset(name: &str) -> Model {
    Model::preset(name).unwrap_or_else(|e| panic!("{e}"))
}

/// `ours` matches a published figure given to the precision of `published` (its last digit
/// at `unit`): within half a unit, as rounding allows.
fn rounds_to(ours: f64, published: f64, unit: f64) -> bool {
    (ours - published).abs() <= unit / 2.0
}

/// Published total and active parameters, billions. Vendors count "active" two ways:
/// OpenAI and DeepSeek leave the embedding lookup out (`matmul_params_active`), Qwen and
/// Meta count it (`active_with_embedding`).
#[test]
fn parameter_counts_match_the_model_cards() {
    let b = |n: u64| n as f64 / 1e9;
    // OpenAI, gpt-oss model card (2025-08), table 1: 116.83 B total, 5.13 B active;
    // 20.91 B and 3.61 B.
    for (name, total, active) in [("gpt-oss-120b", 116.83, 5.13), ("gpt-oss-20b", 20.91, 3.61)] {
        let m = preset(name);
        assert!(rounds_to(b(m.params().total()), total, 0.01), "{name}: {}", b(m.params().total()));
        assert!(rounds_to(b(m.matmul_params_active()), active, 0.01), "{name} active");
    }
    // Qwen3-32B model card: 32.8 B parameters, 31.2 B without the embeddings.
    let q = preset("qwen3-32b");
    let p = q.params();
    assert!(rounds_to(b(p.total()), 32.8, 0.1), "{}", b(p.total()));
    assert!(rounds_to(b(p.total() - p.embedding - p.lm_head), 31.2, 0.1));
    // Qwen3-235B-A22B model card: 235 B total, 22 B activated.
    let q = preset("qwen3-235b-a22b");
    assert!(rounds_to(b(q.params().total()), 235.0, 1.0));
    assert!(rounds_to(b(q.params().active_with_embedding()), 22.0, 1.0));
    // DeepSeek-V3 model card: 671 B total, 37 B activated, and 685 B on the Hub with the
    // 14 B multi-token-prediction module (which stores its own embedding and head copies).
    let d = preset("deepseek-v3");
    let p = d.params();
    assert!(rounds_to(b(p.total()), 671.0, 1.0), "{}", b(p.total()));
    assert!(rounds_to(b(d.matmul_params_active()), 37.0, 1.0), "{}", b(d.matmul_params_active()));
    let hub = p.total() + p.mtp + p.embedding + p.lm_head;
    assert!((b(hub) / 685.0 - 1.0).abs() < 0.002, "{}", b(hub));
    // Meta, Llama 4 model card: 17 B active for both; 109 B and 400 B total including the
    // vision encoder (about 0.9 B), which the planners do not model: the text model is
    // within 1.5 %.
    for (name, total) in [("llama4-scout", 109.0), ("llama4-maverick", 400.0)] {
        let m = preset(name);
        let p = m.params();
        assert!(rounds_to(b(p.active_with_embedding()), 17.0, 1.0), "{name} active");
        assert!((b(p.total()) / total - 1.0).abs() < 0.015, "{name}: {}", b(p.total()));
    }
    // Meta, Llama 3.2 model card: 1.23 B parameters (the 1B, embeddings tied to the head; the
    // speculative draft of the Llama 3 family). We count 1.2358 B, within 0.5 % (the card
    // truncates).
    let l = preset("llama3.2-1b");
    assert!((b(l.params().total()) / 1.23 - 1.0).abs() < 0.01, "{}", b(l.params().total()));
    assert_eq!(l.params().lm_head, 0);
    assert_eq!(l.vocab, preset("llama3-70b").vocab);
}

#[test]
fn layer_kinds_follow_the_configs() {
    let group = |count, moe, local| LayerGroup { count, moe, local };
    let d = preset("deepseek-v3");
    assert_eq!(d.layer_groups, [group(3, false, false), group(58, true, false)]);
    assert_eq!((d.moe_layers(), d.mtp_layers), (58, 1));
    assert_eq!(d.quantization.as_deref(), Some("fp8"));
    let moe = d.moe.expect("moe");
    assert_eq!((moe.experts, moe.top_k, moe.expert_ffn, moe.shared_ffn), (256, 8, 2048, 2048));
    // Maverick: MoE on odd layers, every fourth layer NoPE with full attention.
    let m = preset("llama4-maverick");
    assert_eq!(
        m.layer_groups,
        [group(24, false, true), group(12, true, true), group(12, true, false)]
    );
    assert_eq!((m.ffn, m.moe.map(|e| e.expert_ffn)), (16384, Some(8192)));
    assert_eq!(m.attention_chunk, Some(8192));
    let g = preset("gpt-oss-120b");
    assert_eq!(g.layer_groups, [group(18, true, true), group(18, true, false)]);
    assert_eq!((g.sliding_window, g.quantization.as_deref()), (Some(128), Some("mxfp4")));
    let q = preset("qwen3-235b-a22b");
    assert_eq!(q.layer_groups, [group(94, true, false)]);
    assert!(q.qk_norm && q.head_dim == 128 && q.attention_width() == 8192);
    // Variants are uniform models whose layers sum to the model's.
    for name in ["deepseek-v3", "llama4-maverick", "gpt-oss-20b", "llama3-8b"] {
        let m = preset(name);
        let variants = m.variants();
        assert_eq!(variants.iter().map(|(c, _)| c).sum::<u64>(), m.layers, "{name}");
        for (count, v) in &variants {
            assert_eq!((v.layers, v.layer_groups.len()), (*count, 1), "{name}");
        }
    }
    assert_eq!(preset("llama3-8b").variants()[0].1, preset("llama3-8b"));
}

/// Qwen3-MoE's `mlp_only_layers` and `decoder_sparse_step`, Qwen's windowed layers.
#[test]
fn qwen_moe_and_window_layers() {
    let text = include_str!("../presets/qwen3-235b-a22b.json")
        .replace("\"mlp_only_layers\": []", "\"mlp_only_layers\": [0, 1]")
        .replace("\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2");
    let m = Model::from_config_json(&text, "q.json").expect("parses");
    // Odd layers are MoE (step 2), layer 1 is listed dense: 46 MoE layers of 94.
    assert_eq!(m.moe_layers(), 46);
    let windowed = include_str!("../presets/qwen3-32b.json")
        .replace("\"use_sliding_window\": false", "\"use_sliding_window\": true")
        .replace("\"sliding_window\": null", "\"sliding_window\": 4096")
        .replace("\"max_window_layers\": 64", "\"max_window_layers\": 60");
    let m = Model::from_config_json(&windowed, "w.json").expect("parses");
    assert_eq!(m.layer_groups.iter().find(|g| g.local).map(|g| g.count), Some(4));
}

/// MLA caches a 512-wide latent plus a 64-wide rope key per layer: DeepSeek-V2's paper
/// (table 1) gives `(d_c + d_h^R)·l` elements per token, 70 KB in bf16 for V3's 61 layers.
#[test]
fn mla_caches_the_latent() {
    let d = preset("deepseek-v3");
    assert_eq!(d.kv_bytes_per_token(2.0), (61 * (512 + 64) * 2) as f64);
    assert_eq!(d.kv_elements_per_layer(8), 576, "every TP rank holds the whole latent");
    // A decode step reads the latent cache once per sequence per layer.
    let formats = rainier_model::InferenceFormats { weight_bytes: 1.0, kv_bytes: 1.0 };
    let ops = d.variants()[1].1.decode_layer_ops(Batch::new(4, 1, 1), 4096.0, formats);
    let attention = ops.iter().find(|op| op.name == "attention").expect("attention");
    // The latent cache, plus each head's query read and output written (bf16).
    let cache = 4.0 * 4096.0 * 576.0;
    let queries = (2 * 4 * 128 * 192 * 2) as f64;
    assert_eq!(attention.bytes, cache + queries);
}

/// The training GEMMs of every layer kind are `6·N` per token for the layers' active
/// parameters (norms, biases and sinks aside: under 0.1 %).
#[test]
fn training_gemm_flops_are_six_n_per_token() {
    for name in ["deepseek-v3", "qwen3-235b-a22b", "llama4-maverick", "gpt-oss-120b", "qwen3-32b"] {
        let m = preset(name);
        let b = Batch::new(2, 512, 1);
        let flops: f64 = m
            .variants()
            .iter()
            .map(|(count, v)| {
                *count as f64
                    * v.layer_ops(b).sum(|op| {
                        if matches!(op.kind, OpKind::Gemm { .. }) {
                            op.flops
                        } else {
                            0.0
                        }
                    })
            })
            .sum();
        let expected = 6.0 * m.params().layers_active as f64 * 1024.0;
        assert!((flops / expected - 1.0).abs() < 1e-3, "{name}: {flops:e} vs {expected:e}");
    }
}

/// Chunked attention: each query sees its chunk's earlier tokens.
#[test]
fn chunked_attention_caps_the_context() {
    let scout = preset("llama4-scout");
    let chunked = &scout.variants()[0].1;
    assert_eq!(chunked.attention_chunk, Some(8192));
    assert_eq!(chunked.mean_context(8192), 4096.0);
    assert_eq!(chunked.mean_context(32768), 4096.0);
    assert!(
        (chunked.mean_context(12288) - (8192.0f64.powi(2) + 4096.0f64.powi(2)) / (2.0 * 12288.0))
            .abs()
            < 1e-9
    );
    let full = &scout.variants()[1].1;
    assert_eq!(full.mean_context(32768), 16384.0);
    let unchunked = Model { attention_chunk: None, ..scout.clone() };
    assert!(scout.model_flops_per_token(32768) < unchunked.model_flops_per_token(32768));
}

/// A preset's config with `edit` applied to its JSON.
fn edited(name: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    let path = format!("{}/presets/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("preset")).expect("json");
    edit(&mut value);
    value.to_string()
}

#[test]
fn contradictory_configs_name_the_field() {
    let deepseek = include_str!("../presets/deepseek-v3.json");
    let last_type = edited("gpt-oss-20b", |v| v["layer_types"][23] = "local_attention".into());
    let short = edited("gpt-oss-20b", |v| {
        v["layer_types"].as_array_mut().expect("list").pop();
    });
    let qwen = include_str!("../presets/qwen3-235b-a22b.json");
    let scout = include_str!("../presets/llama4-scout.json");
    let cases = [
        (
            deepseek.replace("\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 300"),
            "num_experts_per_tok",
        ),
        (deepseek.replace("\"kv_lora_rank\": 512,", ""), "kv_lora_rank"),
        (deepseek.replace("\"type\": \"yarn\"", "\"type\": \"warp\""), "rope_scaling"),
        (
            deepseek.replace("\"n_routed_experts\": 256", "\"n_routed_experts\": 99999999"),
            "n_routed_experts",
        ),
        (last_type, "layer_types"),
        (short, "layer_types"),
        (
            edited("qwen3-235b-a22b", |v| v["mlp_only_layers"] = serde_json::json!([94])),
            "mlp_only_layers",
        ),
        (qwen.replace("\"moe_intermediate_size\": 1536,", ""), "moe_intermediate_size"),
        (scout.replace("\"text_config\"", "\"txt_config\""), "text_config"),
        (
            scout.replace("\"num_local_experts\": 16", "\"num_local_experts\": 0"),
            "num_local_experts",
        ),
    ];
    for (text, field) in cases {
        let msg = Model::from_config_json(&text, "bad.json").expect_err(field).to_string();
        assert!(msg.starts_with("bad.json:") && msg.contains(field), "{field}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
