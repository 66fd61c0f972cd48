//! config.json parsing, presets, parameter counts and op accounting.

use rainier_model::{Batch, Mlp, Model, ModelError, Recompute, PRESETS};

fn fixture(name: &str) -> Model {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    Model::from_config_json(&text, &path).expect("fixture parses")
}

/// Published parameter counts (model cards / papers), billions, and our count's tolerance.
#[test]
fn preset_parameter_counts_match_published_sizes() {
    for (name, billions, active) in [
        ("llama2-7b", 6.74, None),
        ("llama2-13b", 13.02, None),
        ("llama2-70b", 68.98, None),
        ("llama3-8b", 8.03, None),
        ("llama3-70b", 70.55, None),
        ("llama3.1-405b", 405.85, None),
        ("mixtral-8x7b", 46.70, Some(12.88)),
        ("gpt3-175b", 174.6, None),
        ("gpt2-124m", 0.1244, None),
    ] {
        let m = Model::preset(name).expect("preset");
        let total = m.params().total() as f64 / 1e9;
        assert!((total / billions - 1.0).abs() < 0.01, "{name}: {total} B vs {billions} B");
        if let Some(active) = active {
            let a = m.params().active_with_embedding() as f64 / 1e9;
            assert!((a / active - 1.0).abs() < 0.01, "{name} active: {a} vs {active}");
        }
    }
}

#[test]
fn every_preset_parses_and_names_itself() {
    for (name, _) in PRESETS {
        let m = Model::preset(name).expect("preset");
        assert_eq!(m.name, name);
        assert!(m.heads % m.kv_heads == 0);
    }
}

#[test]
fn hub_configs_of_each_supported_type_parse() {
    let mistral = fixture("mistral-7b-v0.1.json");
    assert_eq!((mistral.kv_heads, mistral.sliding_window), (8, Some(4096)));
    let qwen = fixture("qwen2-7b.json");
    assert!(qwen.qkv_bias && !qwen.tied_embeddings && qwen.sliding_window.is_none());
    let small = fixture("qwen2-0.5b.json");
    assert!(small.tied_embeddings);
    assert_eq!(small.params().lm_head, 0);
    let mixtral = Model::preset("mixtral-8x7b").expect("preset");
    assert_eq!(mixtral.moe.map(|m| (m.experts, m.top_k)), Some((8, 2)));
    let gpt2 = Model::preset("gpt2-124m").expect("preset");
    assert_eq!(gpt2.mlp, Mlp::Gelu);
}

#[test]
fn errors_name_the_file_and_the_field() {
    let base = r#"{"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
        "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000}"#;
    assert!(Model::from_config_json(base, "ok.json").is_ok());
    let cases = [
        (base.replace("\"hidden_size\": 4096,", ""), "hidden_size"),
        (base.replace("4096", "-4096"), "hidden_size"),
        (base.replace("4096", "\"4096\""), "hidden_size"),
        (base.replace("32000", "0"), "vocab_size"),
        (
            base.replace(
                "\"num_attention_heads\": 32",
                "\"num_attention_heads\": 32, \"num_key_value_heads\": 5",
            ),
            "num_key_value_heads",
        ),
        (base.replace("\"llama\"", "7"), "model_type"),
        // Found by the config_json fuzz target: a hidden size near 2^59 overflowed the
        // default MLP width (4 · hidden) before the size limit was checked.
        (base.replace("4096", "512099999999999999"), "hidden_size"),
        (
            r#"{"model_type": "gpt2", "n_embd": 5120999999999999999, "n_layer": 2, "n_head": 2, "n_positions": 1024,
                "vocab_size": 100}"#
                .to_string(),
            "n_embd",
        ),
    ];
    for (text, field) in cases {
        let e = Model::from_config_json(&text, "cfg/bad.json").expect_err(field);
        let msg = e.to_string();
        assert!(msg.starts_with("cfg/bad.json:") && msg.contains(field), "{msg}");
    }
    let e = Model::from_config_json(&base.replace("llama", "bert"), "x.json").expect_err("type");
    assert!(matches!(e, ModelError::UnknownType { .. }));
    for family in ["deepseek_v3", "gpt2", "gpt_oss", "llama4", "mixtral", "qwen3_moe"] {
        assert!(e.to_string().contains(family), "{e}");
    }
    assert!(Model::from_config_json("{not json", "x.json")
        .expect_err("json")
        .to_string()
        .starts_with("x.json: not valid JSON"));
    assert!(Model::preset("llama9").expect_err("preset").to_string().contains("llama3-8b"));
}

/// Forward and backward GEMM FLOPs of a layer stack are exactly `6 · N · tokens` for the
/// matmul parameters (biases and norms excluded), at any TP degree that divides the heads,
/// summed over the context-parallel ranks; under expert parallelism the experts' share is
/// the busiest rank's (`busiest_rank_load` times the mean).
#[test]
fn gemm_flops_are_six_n_per_token() {
    for name in ["llama3-8b", "gpt2-124m", "mixtral-8x7b", "llama2-70b"] {
        let m = Model::preset(name).expect("preset");
        for (tp, cp, ep) in
            [(1, 1, 1), (2, 1, 1), (4, 1, 1), (8, 1, 1), (2, 2, 1), (1, 4, 8), (2, 1, 4)]
        {
            if m.heads % tp != 0 || m.kv_heads % tp != 0 {
                continue;
            }
            let b = Batch { cp, ep, ..Batch::new(2, 1024, tp) };
            let gemm = |ops: &rainier_model::LayerOps| {
                ops.sum(|op| {
                    if matches!(op.kind, rainier_model::OpKind::Gemm { .. }) {
                        op.flops
                    } else {
                        0.0
                    }
                })
            };
            let layer = gemm(&m.layer_ops(b)) * (tp * cp) as f64;
            let head = gemm(&m.head_ops(b)) * (tp * cp) as f64;
            let h = m.hidden;
            let attention = 2 * h * m.attention_width() + 2 * h * m.kv_width();
            let (dense, experts) = match m.moe {
                None => (attention + m.mlp_matrices() * h * m.ffn, 0),
                Some(moe) => {
                    (attention + h * moe.experts, moe.top_k * m.mlp_matrices() * h * m.ffn)
                }
            };
            let load = m.busiest_rank_load(b);
            assert!(load >= 1.0 && (ep > 1 || load == 1.0), "{name}: load {load}");
            let tokens = (b.sequences * b.seq) as f64;
            let expected = 6.0 * tokens * (dense as f64 + load * experts as f64);
            // MoE: tokens per expert are rounded up, a tiny excess.
            assert!(
                (layer / expected - 1.0).abs() < 1e-3,
                "{name} tp {tp} cp {cp} ep {ep}: {layer} vs {expected}"
            );
            let lm = 6.0 * (m.vocab * h) as f64 * tokens;
            assert!((head / lm - 1.0).abs() < 1e-3, "{name} tp {tp} head");
        }
    }
}

/// Korthikanti et al.: a GPT layer keeps 34·s·b·h bytes (two of them dropout masks) plus the
/// attention `seq²` terms flash attention removes; sequence parallelism divides by tp.
#[test]
fn gpt_activation_memory_is_korthikanti_without_dropout() {
    let m = Model::preset("gpt3-175b").expect("preset");
    for tp in [1, 8] {
        let b = Batch::new(1, 2048, tp);
        let sbh = (b.tokens() * m.hidden) as f64;
        let lse = (b.sequences * m.heads / tp * b.seq * 4) as f64;
        let bytes = m.activation_bytes_per_layer(b, Recompute::None);
        assert!(((bytes - lse) / (32.0 * sbh / tp as f64) - 1.0).abs() < 1e-9, "tp {tp}");
        let full = m.activation_bytes_per_layer(b, Recompute::Full);
        assert_eq!(full, 2.0 * sbh / tp as f64);
        let selective = m.activation_bytes_per_layer(b, Recompute::Selective);
        assert!(full < selective && selective < bytes);
    }
}

#[test]
fn model_flops_follow_the_stated_convention() {
    let m = Model::preset("llama2-7b").expect("preset");
    let n = m.matmul_params_active() as f64;
    let s = 4096.0;
    let expected = 6.0 * n + 6.0 * (m.layers * m.hidden) as f64 * s;
    assert!((m.model_flops_per_token(4096) / expected - 1.0).abs() < 1e-12);
    // A sliding window caps the attention term.
    let mistral = fixture("mistral-7b-v0.1.json");
    assert!(mistral.mean_context(32768) < 4096.0 && mistral.mean_context(2048) == 1024.0);
}

/// Found by the `config_json` fuzz target: a `model_type` with a newline made a two-line error.
#[test]
fn an_unknown_model_type_is_quoted_on_one_line() {
    let e = Model::from_config_json("{\"model_type\": \"llamo\\nx\"}", "m.json")
        .expect_err("unknown type")
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("llamo\\nx"), "{e}");
}

/// Found by the `config_json` fuzz target in CI: a control byte inside a field's value was
/// echoed raw in the field error.
#[test]
fn field_errors_escape_control_characters() {
    let text = "{\"model_type\": \"gpt2\", \"n_embd\": 64, \"n_layer\": 2, \"n_head\": 2, \
                \"vocab_size\": 100, \"activation_function\": \"gel\\u001du\"}";
    let e = Model::from_config_json(text, "m.json").expect_err("unknown activation").to_string();
    assert!(!e.chars().any(char::is_control), "{e}");
    assert!(e.contains("gel\\u{1d}u"), "{e}");
}
