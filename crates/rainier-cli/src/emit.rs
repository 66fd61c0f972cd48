//! `rainier train --emit FRAMEWORK`: the launch arguments or config file that would run the
//! chosen plan on a training framework, in that framework's own flag names.
//!
//! Each emitter maps the plan's degrees (TP/PP/VPP/CP/EP/DP), batch, recompute, ZeRO stage and
//! precision, and refuses what the framework has no documented setting for, naming it. The
//! model's architecture is written out where the framework takes it as flags (Megatron,
//! MaxText); NeMo, NxD and torchtitan take it from their own recipe or model config.

use anyhow::{bail, Result};
use clap::ValueEnum;
use rainier_hw::{Chip, Family};
use rainier_model::{Mlp, Model, Norm, Positions};
use rainier_plan::{Placement, TrainReport};

/// The frameworks a plan can be emitted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EmitFramework {
    /// Megatron-LM `pretrain_gpt.py` arguments (NVIDIA GPUs)
    Megatron,
    /// NeMo 2 recipe overrides for `nemo llm pretrain` (NVIDIA GPUs)
    Nemo,
    /// NeuronX Distributed Training YAML (Trainium)
    Nxd,
    /// MaxText `train.py` overrides (TPUs and GPUs)
    Maxtext,
    /// torchtitan TOML job config (NVIDIA GPUs)
    Torchtitan,
}

/// The launch config of `r` (a plan of `model` on `chip`) for `framework`, ending in a newline.
pub(crate) fn emit(
    framework: EmitFramework,
    model: &Model,
    chip: &Chip,
    r: &TrainReport,
    options: &TrainOptions,
) -> Result<String> {
    let gpu = chip.family == Family::Gpu;
    match framework {
        EmitFramework::Megatron | EmitFramework::Nemo | EmitFramework::Torchtitan if !gpu => {
            bail!(
                "--emit {}: the framework runs on NVIDIA GPUs; {} is not one (Trainium: --emit nxd, TPU: --emit maxtext)",
                name(framework),
                chip.name
            )
        }
        EmitFramework::Nxd if chip.family != Family::Neuron => {
            bail!(
                "--emit nxd: NeuronX Distributed runs on Trainium; {} is not a Trainium chip",
                chip.name
            )
        }
        EmitFramework::Maxtext if chip.family == Family::Neuron => {
            bail!(
                "--emit maxtext: MaxText runs on TPUs and GPUs; {} is a Trainium chip (--emit nxd)",
                chip.name
            )
        }
        _ => {}
    }
    let text = match framework {
        EmitFramework::Megatron => megatron(model, r, options)?,
        EmitFramework::Nemo => nemo(r, options)?,
        EmitFramework::Nxd => nxd(r, options)?,
        EmitFramework::Maxtext => maxtext(model, r, options)?,
        EmitFramework::Torchtitan => torchtitan(r, options)?,
    };
    Ok(text)
}

/// Settings beyond the plan that the launch config carries.
pub(crate) struct TrainOptions {
    pub bf16_moments: bool,
    pub offload_layer_inputs: bool,
}

/// The framework's name as `--emit` spells it.
fn name(f: EmitFramework) -> String {
    f.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

fn refuse(framework: &str, what: &str) -> Result<String> {
    bail!("--emit {framework}: {what}")
}

/// Megatron-LM: `torchrun ... pretrain_gpt.py` arguments, one per line.
fn megatron(model: &Model, r: &TrainReport, o: &TrainOptions) -> Result<String> {
    let p = &r.plan;
    let mut a: Vec<String> = vec![
        format!("--tensor-model-parallel-size {}", p.tp),
        format!("--pipeline-model-parallel-size {}", p.pp),
        format!("--context-parallel-size {}", p.cp),
    ];
    if p.vpp > 1 {
        a.push(format!(
            "--num-layers-per-virtual-pipeline-stage {}",
            model.layers / (p.pp * p.vpp)
        ));
    }
    if p.ep > 1 {
        a.push(format!("--expert-model-parallel-size {}", p.ep));
    }
    if p.tp > 1 {
        a.push("--sequence-parallel".into());
    }
    if p.placement == Placement::PpInner {
        a.push("--use-tp-pp-dp-mapping".into());
    }
    a.push(format!("--micro-batch-size {}", p.micro_batch));
    a.push(format!("--global-batch-size {}", r.global_batch));
    a.push(format!("--seq-length {}", r.seq));
    a.push(format!("--max-position-embeddings {}", r.seq.max(model.max_positions)));
    match p.recompute.as_str() {
        "full" => a.push(
            "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1"
                .into(),
        ),
        "selective" => a.push("--recompute-granularity selective".into()),
        _ => {}
    }
    match p.zero {
        0 => {}
        1 => a.push("--use-distributed-optimizer".into()),
        3 => a.push("--use-torch-fsdp2".into()),
        z => return refuse("megatron", &format!("ZeRO-{z} has no Megatron-LM flag (ZeRO-1 is --use-distributed-optimizer, ZeRO-3 --use-torch-fsdp2): plan with --zero 1 or 3")),
    }
    match p.precision.as_str() {
        "bf16" | "amp-bf16" => a.push("--bf16".into()),
        "fp8" => a.push("--bf16 --fp8-format hybrid".into()),
        "mxfp8" => a.push("--bf16 --fp8-format e4m3 --fp8-recipe mxfp8".into()),
        other => {
            return refuse(
                "megatron",
                &format!("precision {other} has no Megatron-LM training flag here"),
            )
        }
    }
    if o.bf16_moments {
        a.push(
            "--use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16".into(),
        );
    }
    if o.offload_layer_inputs {
        return refuse(
            "megatron",
            "--offload-layer-inputs has no Megatron-LM equivalent emitted here",
        );
    }
    a.extend(megatron_model(model));
    Ok(a.join(" \\\n") + "\n")
}

/// The model's architecture as Megatron-LM flags.
fn megatron_model(m: &Model) -> Vec<String> {
    let mut a = vec![
        format!("--num-layers {}", m.layers),
        format!("--hidden-size {}", m.hidden),
        format!("--ffn-hidden-size {}", m.ffn),
        format!("--num-attention-heads {}", m.heads),
        format!("--kv-channels {}", m.head_dim),
    ];
    if m.kv_heads != m.heads {
        a.push(format!("--group-query-attention --num-query-groups {}", m.kv_heads));
    }
    if m.mlp == Mlp::SwiGlu {
        a.push("--swiglu".into());
    }
    if m.norm == Norm::RmsNorm {
        a.push("--normalization RMSNorm".into());
    }
    if m.positions == Positions::Rope {
        a.push("--position-embedding-type rope".into());
    }
    if !m.linear_bias {
        a.push("--disable-bias-linear".into());
    }
    if !m.tied_embeddings {
        a.push("--untie-embeddings-and-output-weights".into());
    }
    if let Some(moe) = m.moe {
        a.push(format!("--num-experts {} --moe-router-topk {}", moe.experts, moe.top_k));
        a.push(format!("--moe-ffn-hidden-size {}", moe.expert_ffn));
    }
    a
}

/// NeMo 2: overrides of a `nemo llm pretrain --factory RECIPE` run (the recipe names the model).
fn nemo(r: &TrainReport, o: &TrainOptions) -> Result<String> {
    let p = &r.plan;
    let vpp = if p.vpp > 1 { p.vpp.to_string() } else { "null".into() };
    let mut a = vec![
        format!("trainer.strategy.tensor_model_parallel_size={}", p.tp),
        format!("trainer.strategy.pipeline_model_parallel_size={}", p.pp),
        format!("trainer.strategy.virtual_pipeline_model_parallel_size={vpp}"),
        format!("trainer.strategy.context_parallel_size={}", p.cp),
        format!("trainer.strategy.expert_model_parallel_size={}", p.ep),
        format!("trainer.strategy.sequence_parallel={}", p.tp > 1),
        format!("data.micro_batch_size={}", p.micro_batch),
        format!("data.global_batch_size={}", r.global_batch),
        format!("data.seq_length={}", r.seq),
    ];
    match p.recompute.as_str() {
        "full" => a.extend([
            "model.config.recompute_granularity=full".to_string(),
            "model.config.recompute_method=uniform".into(),
            "model.config.recompute_num_layers=1".into(),
        ]),
        "selective" => a.push("model.config.recompute_granularity=selective".into()),
        _ => a.push("model.config.recompute_granularity=null".into()),
    }
    match p.zero {
        0 | 1 => a.push(format!("optim.config.use_distributed_optimizer={}", p.zero == 1)),
        z => return refuse("nemo", &format!("ZeRO-{z}: NeMo's Megatron strategy shards optimizer states (ZeRO-1); plan with --zero 0 or 1")),
    }
    if p.placement == Placement::PpInner {
        a.push("trainer.strategy.use_tp_pp_dp_mapping=true".into());
    }
    match p.precision.as_str() {
        "bf16" | "amp-bf16" => a.push("trainer.plugins=bf16_mixed".into()),
        "fp8" => a.push("trainer.plugins=bf16_with_fp8_mixed".into()),
        other => {
            return refuse("nemo", &format!("precision {other} has no NeMo plugin emitted here"))
        }
    }
    if o.bf16_moments || o.offload_layer_inputs {
        return refuse(
            "nemo",
            "--moments bf16 and --offload-layer-inputs are not emitted for NeMo",
        );
    }
    Ok(a.join(" \\\n") + "\n")
}

/// NeuronX Distributed Training: the plan's part of its YAML config.
fn nxd(r: &TrainReport, o: &TrainOptions) -> Result<String> {
    let p = &r.plan;
    if p.cp > 1 || p.ep > 1 {
        return refuse(
            "nxd",
            "context and expert parallelism are not emitted for NeuronX Distributed Training",
        );
    }
    if p.zero > 1 {
        return refuse(
            "nxd",
            &format!("ZeRO-{}: NeuronX Distributed shards optimizer states only (zero1)", p.zero),
        );
    }
    if o.bf16_moments || o.offload_layer_inputs {
        return refuse("nxd", "--moments bf16 and --offload-layer-inputs are not emitted for NeuronX Distributed Training");
    }
    let checkpoint = match p.recompute.as_str() {
        "full" => "full",
        "selective" => "selective",
        _ => "null",
    };
    let precision = match p.precision.as_str() {
        "bf16" => "bf16SR",
        "amp-bf16" => "autocast",
        "fp8" | "mxfp8" | "mxfp4" => {
            return refuse(
                "nxd",
                &format!(
                    "precision {}: no NeuronX Distributed Training precision type emitted for it",
                    p.precision
                ),
            )
        }
        other => return refuse("nxd", &format!("precision {other}")),
    };
    Ok(format!(
        "trainer:\n  num_nodes: {nodes}\ndistributed_strategy:\n  tensor_model_parallel_size: {tp}\n  pipeline_model_parallel_size: {pp}\n  virtual_pipeline_model_parallel_size: {vpp}\n  zero1: {zero1}\n  sequence_parallel: {sp}\ndata:\n  micro_batch_size: {mb}\n  global_batch_size: {gb}\n  seq_length: {seq}\nmodel:\n  activations_checkpoint_granularity: {checkpoint}\nprecision:\n  type: {precision}\n",
        nodes = p.chips_used.div_ceil(16),
        tp = p.tp,
        pp = p.pp,
        vpp = p.vpp,
        zero1 = p.zero == 1,
        sp = p.tp > 1,
        mb = p.micro_batch,
        gb = r.global_batch,
        seq = r.seq,
    ))
}

/// MaxText: `train.py` overrides, the architecture as `base_*` keys.
fn maxtext(model: &Model, r: &TrainReport, o: &TrainOptions) -> Result<String> {
    let p = &r.plan;
    let devices = p.chips_used;
    // MaxText's global batch is per_device_batch_size × devices × accumulation steps.
    let per_device = r.global_batch as f64 / (devices * p.micro_batches) as f64;
    let data = if p.zero >= 3 { "ici_fsdp_parallelism" } else { "ici_data_parallelism" };
    let remat = match (p.recompute.as_str(), o.offload_layer_inputs) {
        ("full", true) => "custom decoder_layer_input=offload",
        ("full", false) => "full",
        ("selective", _) => "save_dot_except_mlpwi",
        _ => "minimal",
    };
    let mut a = vec![
        format!("{data}={}", p.dp),
        format!("ici_tensor_parallelism={}", p.tp),
        format!("ici_pipeline_parallelism={}", p.pp),
        format!("ici_context_parallelism={}", p.cp),
        format!("ici_expert_parallelism={}", p.ep),
        format!("per_device_batch_size={}", trim(per_device)),
        format!("gradient_accumulation_steps={}", p.micro_batches),
        format!("max_target_length={}", r.seq),
        format!("remat_policy={remat}"),
        "dtype=bfloat16".into(),
    ];
    if p.pp > 1 {
        a.push(format!("num_pipeline_microbatches={}", p.micro_batches.max(p.pp)));
    }
    match p.precision.as_str() {
        "bf16" | "amp-bf16" => {}
        "fp8" => a.push("quantization=fp8".into()),
        other => {
            return refuse(
                "maxtext",
                &format!("precision {other} has no MaxText quantization emitted here"),
            )
        }
    }
    if o.bf16_moments {
        a.push("mu_dtype=bfloat16".into());
    }
    a.extend([
        format!("base_num_decoder_layers={}", model.layers),
        format!("base_emb_dim={}", model.hidden),
        format!("base_mlp_dim={}", model.ffn),
        format!("base_num_query_heads={}", model.heads),
        format!("base_num_kv_heads={}", model.kv_heads),
        format!("head_dim={}", model.head_dim),
        format!("vocab_size={}", model.vocab),
    ]);
    Ok(a.join(" \\\n") + "\n")
}

/// torchtitan: the plan's sections of a job TOML.
fn torchtitan(r: &TrainReport, o: &TrainOptions) -> Result<String> {
    let p = &r.plan;
    let (replicate, shard) = match p.zero {
        0 => (p.dp, 1),
        3 => (1, p.dp),
        z => return refuse("torchtitan", &format!("ZeRO-{z}: torchtitan replicates (ZeRO-0) or shards with FSDP2 (ZeRO-3); plan with --zero 0 or 3")),
    };
    let checkpoint = match p.recompute.as_str() {
        "full" => "full",
        "selective" => "selective",
        _ => "none",
    };
    if o.bf16_moments || o.offload_layer_inputs {
        return refuse(
            "torchtitan",
            "--moments bf16 and --offload-layer-inputs are not emitted for torchtitan",
        );
    }
    let converters = match p.precision.as_str() {
        "bf16" | "amp-bf16" => "",
        "fp8" => "\n[model]\nconverters = [\"float8\"]\n",
        other => {
            return refuse(
                "torchtitan",
                &format!("precision {other} has no torchtitan converter emitted here"),
            )
        }
    };
    let schedule = if p.vpp > 1 { "Interleaved1F1B" } else { "1F1B" };
    Ok(format!(
        "[training]\nlocal_batch_size = {mb}\nglobal_batch_size = {gb}\nseq_len = {seq}\nmixed_precision_param = \"bfloat16\"\n\n[parallelism]\ndata_parallel_replicate_degree = {replicate}\ndata_parallel_shard_degree = {shard}\ntensor_parallel_degree = {tp}\npipeline_parallel_degree = {pp}\npipeline_parallel_schedule = \"{schedule}\"\ncontext_parallel_degree = {cp}\nexpert_parallel_degree = {ep}\n\n[activation_checkpoint]\nmode = \"{checkpoint}\"\n{converters}",
        mb = p.micro_batch,
        gb = r.global_batch,
        seq = r.seq,
        tp = p.tp,
        pp = p.pp,
        cp = p.cp,
        ep = p.ep,
    ))
}

/// A number without a trailing `.0` when whole.
fn trim(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}
