//! `rainier models`: the model presets (or one model) with their shape and parameter counts.

use anyhow::Result;
use rainier_model::{Model, PRESETS};
use serde_json::{json, Value};

/// One model as `rainier models --json` prints it.
fn describe(m: &Model) -> Value {
    let p = m.params();
    json!({
        "name": m.name,
        "model_type": m.model_type,
        "layers": m.layers,
        "moe_layers": m.moe_layers(),
        "hidden": m.hidden,
        "heads": m.heads,
        "kv_heads": m.kv_heads,
        "head_dim": m.head_dim,
        "experts": m.moe.map(|e| e.experts),
        "experts_per_token": m.moe.map(|e| e.top_k),
        "latent_attention": m.mla.is_some(),
        "sliding_window": m.sliding_window,
        "attention_chunk": m.attention_chunk,
        "model_parameters": p.total(),
        "active_parameters_per_token": m.matmul_params_active(),
        "active_parameters_with_embedding": p.active_with_embedding(),
        "mtp_parameters": p.mtp,
        "kv_cache_bytes_per_token_bf16": m.kv_bytes_per_token(2.0),
        "checkpoint_quantization": m.quantization,
    })
}

/// The attention in words.
fn attention(m: &Model) -> String {
    let kind = match m.mla {
        Some(a) => format!("MLA {}+{}", a.kv_lora_rank, a.qk_rope_dim),
        None if m.kv_heads == m.heads => format!("MHA {}", m.heads),
        None => format!("GQA {}/{}", m.heads, m.kv_heads),
    };
    let local = m.layer_groups.iter().filter(|g| g.local).map(|g| g.count).sum::<u64>();
    match (m.sliding_window, m.attention_chunk) {
        (Some(w), _) => format!("{kind}, window {w} on {local}"),
        (_, Some(c)) => format!("{kind}, chunk {c} on {local}"),
        _ => kind,
    }
}

pub(crate) fn run(model: Option<&str>, json: bool) -> Result<()> {
    let models = match model {
        Some(name) => vec![crate::plan::load_model(name)?],
        None => PRESETS.iter().map(|(name, _)| Model::preset(name)).collect::<Result<_, _>>()?,
    };
    if json {
        let list: Vec<Value> = models.iter().map(describe).collect();
        crate::out_json("models", &serde_json::json!({ "models": list }))?;
        return Ok(());
    }
    let mut lines = vec![format!(
        "{:<18} {:<12} {:>7} {:>6} {:<28} {:>9} {:>9} {:>9} {:>7}",
        "model", "type", "layers", "hidden", "attention", "experts", "params", "active", "KV/tok"
    )];
    for m in &models {
        let p = m.params();
        let experts = m.moe.map_or("-".into(), |e| {
            let shared = if e.shared_ffn > 0 { "+s" } else { "" };
            format!("{}/{}{shared}", e.top_k, e.experts)
        });
        let layers = match m.moe_layers() {
            0 => m.layers.to_string(),
            moe if moe == m.layers => m.layers.to_string(),
            moe => format!("{moe}/{}", m.layers),
        };
        lines.push(format!(
            "{:<18} {:<12} {:>7} {:>6} {:<28} {:>9} {:>8.2}B {:>8.2}B {:>5.0}KB",
            m.name,
            m.model_type,
            layers,
            m.hidden,
            attention(m),
            experts,
            p.total() as f64 / 1e9,
            m.matmul_params_active() as f64 / 1e9,
            m.kv_bytes_per_token(2.0) / 1024.0,
        ));
    }
    lines.push(String::new());
    lines.push(
        "layers: MoE/total where they differ; experts: per token/routed (+s: shared experts); \
         params: every stored parameter; active: a token's matmul parameters (layers used and \
         LM head, no embedding lookup); KV/tok: bf16 cache per token of context before any \
         window"
            .into(),
    );
    crate::out(&lines.join("\n"));
    Ok(())
}
