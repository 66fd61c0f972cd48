//! Inference serving: prefill and decode per device, static and continuous batching, SLOs,
//! and cost per output token.
//!
//! A replica is `tp × pp` ranks; the cluster holds `ranks / (tp·pp)` replicas, and expert
//! parallelism shards the experts over `ep` replicas (carved out of the replicas, as in
//! training). Per step a replica runs the layers' forward ops on the chip's cost model:
//!
//! - **Prefill** of `I` prompt tokens per sequence: the layers' forward GEMMs, flash attention
//!   and memory-bound ops, logits for the last position only.
//! - **Decode**: one token per sequence; GEMMs with `m = sequences` read every weight once (at
//!   the weights' format: int8 weight-only is dequantized on the fly and computes in bf16),
//!   attention reads the K/V cache of the whole context.
//! - Per layer two tensor-parallel all-reduces of the step's activations (latency-bound at
//!   small batch), stage sends under PP, dispatch/combine all-to-alls under EP, and a fixed
//!   per-step overhead (named assumption).
//!
//! Static batching serves `B` sequences together: TTFT is the prefill, TPOT the mean decode
//! step over the output (context from `I` to `I+O`). Continuous batching keeps `N` sequences in
//! flight, each step decoding `N` tokens; prompts are prefilled in chunks riding on decode
//! steps, often enough that admissions match completions (`N·I/O` prompt tokens per step on
//! average); the `N` with the highest throughput that fits the KV cache and meets the SLO
//! wins.

use rainier_hw::{Chip, Family, Framework};
use rainier_model::{Batch, InferenceFormats, LayerGroup, Model, Op, OpKind, ACT_BYTES};
use rainier_perf::{
    Assumption, CollectiveKind, CostModel, Group, NeuronCosts, Precision, Topology,
};
use serde::Serialize;

mod disaggregated;
mod simulated;

pub(crate) use disaggregated::disaggregated_without_colocated;
pub use disaggregated::{
    serve_disaggregated, ColocatedReport, DisaggregatedReport, Disaggregation, KvTransferReport,
    PoolReport,
};
pub use simulated::WorkloadReport;

use crate::economics::{economics, EconomicsConfig, JobFacts};
use crate::train::ranks_per_chip;
use crate::workload::Workload;
use crate::{PlanError, TrainConfig};

const GIB: f64 = (1u64 << 30) as f64;

pub(crate) const STEP_OVERHEAD_S: Assumption = Assumption {
    name: "serve.step_overhead_s",
    value: 50e-6,
    why: "host-side scheduling, sampling and launch of one serving step (CUDA graphs / compiled Neuron graphs); no public breakdown, assumed",
};

pub(crate) const NEURON_LAYER_OVERHEAD_S: Assumption = Assumption {
    name: "serve.neuron_layer_overhead_s",
    value: 46e-6,
    why: "fixed cost per layer of a compiled Neuron inference graph beyond its simulated kernels and collectives (engine synchronization between kernels, collective handshakes); the Neuron serving stacks' one fitted coefficient, fitted on the calibration point trn1-llama3-70b-bs1 TPOT ((26.48 − 22.74 − 0.05 ms) / 80 layers = 46.1 µs; 47.8 µs before NeuronLink rings ran one direction) and checked on the other Trainium/Inferentia serving points; it was 120 µs while decode GEMMs were a roofline at 0.85 of HBM bandwidth: the simulated kernels' DMA limit (16 engines cap a NeuronCore-v2 at 0.59 of its HBM share) explains 60 % of that",
};

pub(crate) const CHUNK_TOKENS: Assumption = Assumption {
    name: "serve.chunk_tokens",
    value: 2048.0,
    why: "prompt tokens a continuous-batching scheduler adds to one step (vLLM's default max_num_batched_tokens with chunked prefill; TensorRT-LLM's max_num_tokens is 8192)",
};

pub(crate) const VLLM_NEURON_HOST_STEP_S: Assumption = Assumption {
    name: "serve.vllm_neuron_host_step_s",
    value: 2.69e-3,
    why: "host time per engine step of a vLLM server on NeuronCores (the vllm-neuron plugin on NxD Inference: scheduling, input preparation and transfer, graph launch, reading back the sampled tokens, detokenizing and streaming), serial with the device at low concurrency; vLLM's own profile of v0.5.3 on Llama 3 8B / 1 H100 put 62 % of a step on the host (API server 33 %, scheduling and input preparation 29 %; vLLM blog, 2024-09-05), the mechanism, not the value. The vLLM-Neuron stack's one fitted coefficient: fitted on trn2 qwen3-32b tp64 bs1 TPOT (10.766 ms measured − 8.076 ms simulated device step), checked on the other vLLM points (trn2 qwen3-32b TTFT, trn2 llama3.1-8b TTFT and TPOT); range 1-7 ms (the llama3.1-8b TPOT alone implies 6.8 ms)",
};

/// The named assumptions of the serving model.
pub const SERVE_ASSUMPTIONS: &[Assumption] = &[
    STEP_OVERHEAD_S,
    NEURON_LAYER_OVERHEAD_S,
    VLLM_NEURON_HOST_STEP_S,
    CHUNK_TOKENS,
    NEURON_MIN_BUCKET,
    MTP_ACCEPTANCE,
    simulated::MAX_NUM_SEQS,
    crate::workload::LOGNORMAL_SIGMA,
];

/// What drives the compiled model, and so what host time each engine step pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Frontend {
    /// A benchmark harness calling the compiled model in process (transformers-neuronx and
    /// NxD Inference benchmarks, trtllm-bench): only the launch overhead of a step.
    #[default]
    Harness,
    /// vLLM's OpenAI-compatible server (on Neuron the vllm-neuron plugin on NxD Inference):
    /// its host loop adds [`VLLM_NEURON_HOST_STEP_S`] to every engine step, and a measured
    /// TTFT or TPOT is the client's.
    Vllm,
}

/// Weight format of the matmuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    Bf16,
    /// fp8 weights and fp8 GEMMs where the chip has them.
    Fp8,
    /// Weight-only int8: 1 byte per weight read, dequantized on the fly, bf16 math.
    Int8,
    /// OCP MXFP8 weights and activations (NeuronCore-v4: the simulated MX gemm).
    Mxfp8,
    /// OCP MXFP4 weights and activations (NeuronCore-v4: the simulated MX gemm).
    Mxfp4,
    /// NVFP4 weights and activations (Blackwell FP4 tensor cores, at the catalog's FP4 peak).
    Nvfp4,
}

/// KV-cache format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KvFormat {
    Bf16,
    Fp8,
}

/// The sequence lengths a compiled Neuron inference graph runs at (Neuron graphs have static
/// shapes: a prompt, and a decode step's attention over its context, run at a compiled length
/// and pay for the padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NeuronShapes {
    /// Context-encoding and token-generation graphs per power-of-two bucket from 128 to the
    /// compiled length, as NxD Inference builds them by default: a prompt (a step's context)
    /// runs at the smallest bucket that holds it.
    Buckets,
    /// One graph at the compiled length (an export without bucketing): every prompt and
    /// every decode step's attention run at it.
    Static,
}

/// The smallest Neuron bucket.
pub(crate) const NEURON_MIN_BUCKET: Assumption = Assumption {
    name: "serve.neuron_min_bucket",
    value: 128.0,
    why: "NxD Inference's automatic context-encoding and token-generation buckets are powers of two from 128 up to the compiled length (its feature guide, recalled: not in the project's corpus); range 64-512",
};

/// What the user asks for; `None` means "choose" (with `search`) or the default.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    pub chips: u64,
    pub tp: Option<u64>,
    pub pp: Option<u64>,
    pub ep: Option<u64>,
    /// Static batch (sequences served together); default 1.
    pub batch: Option<u64>,
    pub input_len: u64,
    pub output_len: u64,
    pub weights: WeightFormat,
    pub kv: KvFormat,
    pub slo_ttft_ms: Option<f64>,
    pub slo_tpot_ms: Option<f64>,
    pub lnc: Option<u32>,
    pub neuron_costs: NeuronCosts,
    pub framework: Option<Framework>,
    /// What drives the compiled model ([`Frontend::Harness`] by default).
    pub frontend: Frontend,
    /// Neuron: how compiled graphs pad sequences ([`NeuronShapes::Buckets`] by default).
    pub neuron_shapes: NeuronShapes,
    /// Neuron: the sequence length the graphs are compiled for (their K/V cache length);
    /// default the smallest power of two that holds a request (input + output).
    pub compiled_seq: Option<u64>,
    /// Prompt tokens found in the prefix cache (vLLM's automatic prefix caching, SGLang's
    /// radix cache, NxD Inference's prefix caching); none by default.
    pub prefix_cache: PrefixCache,
    /// Speculative decoding with a draft model; none by default.
    pub speculative: Option<Speculative>,
    /// A request stream to simulate the chosen plan under (latency distributions, goodput);
    /// none by default.
    pub workload: Option<Workload>,
    /// Sequences in flight at most in the workload simulation (default the assumption
    /// `serve.max_num_seqs`).
    pub max_seqs: Option<u64>,
    /// Datacenter and economics (the training config's fields; its sizes are unused).
    pub cluster: TrainConfig,
}

/// Speculative decoding with a draft model (vLLM, TensorRT-LLM, NxD Inference): each round
/// the draft proposes `tokens` tokens, one decode step each, and the target verifies them in
/// one forward over `tokens + 1` positions per sequence, keeping the accepted prefix and one
/// token of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Speculative {
    /// The draft model (same tokenizer, smaller), on the same ranks at the same TP.
    pub draft: Model,
    /// Tokens the draft proposes per round (K).
    pub tokens: u64,
    /// Probability that the target accepts a proposed token, the same at every position.
    pub acceptance: f64,
    /// The draft is a head on the target (EAGLE, DeepSeek's MTP): it reads the target's
    /// embedding and LM head, so only its own layers take memory.
    pub shares_head: bool,
}

/// A self-speculative head on the target: its proposals come from the target's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeculativeHead {
    /// EAGLE (EAGLE-1/2/3 in vLLM, SGLang, TensorRT-LLM): one decoder layer of the target's
    /// shape on its hidden states, with the target's embedding and LM head.
    Eagle,
    /// Multi-token prediction (DeepSeek-V3's `num_nextn_predict_layers` modules): the
    /// model's own MTP block, reused for each proposed token, with the shared head.
    Mtp,
}

/// The MTP head's acceptance when the user gives none.
pub(crate) const MTP_ACCEPTANCE: Assumption = Assumption {
    name: "serve.mtp_acceptance",
    value: 0.85,
    why: "DeepSeek-V3 technical report (arXiv 2412.19437, §5.4.3): the second token its MTP module predicts is accepted 85-90 % of the time across generation topics (recalled, not in the project's corpus); the low end, for one proposed token; more tokens chained through the same module are assumed to keep it. Range 0.85-0.90",
};

impl Speculative {
    /// A self-speculative `head` on `target` proposing `tokens` tokens per round, accepted
    /// with `acceptance` (for MTP, [`MTP_ACCEPTANCE`] when `None`). The head is one layer of
    /// the target's last layer kind (EAGLE; MTP: the model's MTP block, a full layer);
    /// its fusion projection (2–3 × hidden²) is not costed.
    pub fn head(
        target: &Model,
        head: SpeculativeHead,
        tokens: u64,
        acceptance: Option<f64>,
    ) -> Result<Speculative, PlanError> {
        let name = match head {
            SpeculativeHead::Eagle => "eagle",
            SpeculativeHead::Mtp => "mtp",
        };
        if head == SpeculativeHead::Mtp && target.mtp_layers == 0 {
            return Err(PlanError::Invalid(format!(
                "--spec-head mtp needs a model with multi-token-prediction modules (num_nextn_predict_layers > 0, as DeepSeek-V3 has); {} has none: use --spec-head eagle",
                target.name
            )));
        }
        let acceptance = match (acceptance, head) {
            (Some(a), _) => a,
            (None, SpeculativeHead::Mtp) => MTP_ACCEPTANCE.value,
            (None, SpeculativeHead::Eagle) => {
                return Err(PlanError::Invalid(
                    "--spec-head eagle needs --acceptance (EAGLE's acceptance depends on the head's training; no default is sourced)".into(),
                ))
            }
        };
        let last = target.variants().pop().map_or_else(|| target.clone(), |(_, m)| m);
        let group = last.layer_groups.first().map(|g| LayerGroup { count: 1, ..*g });
        let draft = Model {
            name: format!("{}-{name}", target.name),
            layers: 1,
            mtp_layers: 0,
            layer_groups: group.into_iter().collect(),
            ..last
        };
        Ok(Speculative { draft, tokens, acceptance, shares_head: true })
    }
}

/// What speculative decoding does to the static batch's decode.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SpeculativeReport {
    pub draft: String,
    pub tokens: u64,
    pub acceptance: f64,
    /// Expected tokens a sequence gains per round: `(1 − α^(K+1)) / (1 − α)`.
    pub tokens_per_round: f64,
    /// One round: K draft decode steps and the target's verify step, ms.
    pub round_ms: f64,
    /// The plain decode step over the speculative TPOT.
    pub speedup: f64,
}

/// What the prefix cache saves per request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PrefixCacheReport {
    /// Prompt tokens per request read from the cache instead of prefilled.
    pub cached_tokens_per_request: u64,
    /// Their share of the prompt.
    pub hit_rate: f64,
}

/// Which part of every prompt the prefix cache holds. Cached tokens are not prefilled (their
/// K/V is read instead); the prompt's new tokens still attend to them; their K/V blocks are
/// held once per replica, shared by every sequence in flight.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PrefixCache {
    #[default]
    None,
    /// This share of each prompt's tokens hits the cache (a mean over requests).
    HitRate(f64),
    /// Every prompt starts with the same this many tokens (a system prompt, few-shot examples).
    SharedPrefix(u64),
}

/// Prompt tokens of a request of `input` tokens found in the prefix cache: at most all but the
/// last, which is computed for its logits (as vLLM does on a full hit).
pub(crate) fn cached_prompt_tokens(input: u64, prefix: PrefixCache) -> u64 {
    let cached = match prefix {
        PrefixCache::None => 0,
        PrefixCache::HitRate(h) => (h * input as f64).round() as u64,
        PrefixCache::SharedPrefix(n) => n,
    };
    cached.min(input.saturating_sub(1))
}

impl ServeConfig {
    pub fn new(chips: u64, input_len: u64, output_len: u64) -> ServeConfig {
        ServeConfig {
            chips,
            tp: None,
            pp: None,
            ep: None,
            batch: None,
            input_len,
            output_len,
            weights: WeightFormat::Bf16,
            kv: KvFormat::Bf16,
            slo_ttft_ms: None,
            slo_tpot_ms: None,
            lnc: None,
            neuron_costs: NeuronCosts::Tables,
            framework: None,
            frontend: Frontend::Harness,
            neuron_shapes: NeuronShapes::Buckets,
            compiled_seq: None,
            prefix_cache: PrefixCache::None,
            speculative: None,
            workload: None,
            max_seqs: None,
            cluster: TrainConfig::new(chips, 1, 1),
        }
    }
}

/// Memory per device (rank), GiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ServeMemory {
    pub weights: f64,
    /// K/V cache of the static batch at its full context.
    pub kv_cache: f64,
    /// Prefill workspace and logits.
    pub activations: f64,
    /// Framework reserve.
    pub other: f64,
    pub total: f64,
    pub capacity: f64,
}

/// The plan served.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ServePlan {
    pub tp: u64,
    pub pp: u64,
    pub ep: u64,
    /// Data-parallel replicas of the model.
    pub replicas: u64,
    pub ranks: u64,
    pub ranks_per_chip: u32,
    pub rank_unit: String,
    pub chips_used: u64,
    pub weights: WeightFormat,
    pub kv: KvFormat,
    pub framework: String,
    pub frontend: Frontend,
    pub chosen: bool,
}

/// Continuous batching at the highest-throughput concurrency that fits and meets the SLO.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Continuous {
    /// Sequences in flight per replica.
    pub concurrency: u64,
    /// Sequences the KV cache holds per replica.
    pub max_concurrency: u64,
    /// Prompt tokens per prefill chunk riding on a decode step.
    pub chunk_tokens: f64,
    pub ttft_ms: f64,
    pub tpot_ms: f64,
    pub output_tokens_per_s: f64,
    pub output_tokens_per_s_per_chip: f64,
    pub meets_slo: bool,
    pub cost_usd_per_million_output_tokens: f64,
    pub energy_j_per_output_token: f64,
}

/// Where a step's time goes, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StepBreakdown {
    pub gemm_ms: f64,
    pub attention_ms: f64,
    pub other_ops_ms: f64,
    pub communication_ms: f64,
    pub overhead_ms: f64,
    pub total_ms: f64,
}

/// The prediction for one serving plan.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ServeReport {
    pub model: String,
    /// Every parameter stored (the model card's total; DeepSeek's MTP modules aside).
    pub model_parameters: u64,
    /// Parameters a token's matmuls use: the active layers and the LM head, without the
    /// embedding lookup.
    pub active_parameters_per_token: u64,
    pub chip: String,
    pub chips: u64,
    pub input_len: u64,
    pub output_len: u64,
    /// The prefix cache's share of each prompt (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<PrefixCacheReport>,
    /// Speculative decoding (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculative: Option<SpeculativeReport>,
    /// Static batch (with `--search`: the continuous concurrency chosen).
    pub batch: u64,
    pub ttft_ms: f64,
    /// Mean time per output token over the output.
    pub tpot_ms: f64,
    pub output_tokens_per_s: f64,
    pub output_tokens_per_s_per_chip: f64,
    /// Sequences the cluster's (paged) KV cache holds in continuous batching, at the mean
    /// context `I + O/2`.
    pub max_concurrent_sequences: u64,
    pub memory_gib_per_device: ServeMemory,
    pub fits: bool,
    pub cost_usd_per_million_output_tokens: f64,
    /// Facility energy (PUE included) per output token, joules.
    pub energy_j_per_output_token: f64,
    pub usd_per_chip_hour: f64,
    /// "on-demand", "committed" or "user".
    pub pricing: String,
    pub price_source: String,
    /// The static batch's prefill (with `--search`: a continuous step carrying a chunk).
    pub prefill: StepBreakdown,
    /// The mean decode step (with `--search`: a continuous step without a chunk).
    pub decode: StepBreakdown,
    pub continuous: Continuous,
    /// The plan under the workload's request stream (absent without `workload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadReport>,
    pub plan: ServePlan,
    pub notes: Vec<String>,
}

/// Serving cost model of one plan.
struct Server<'a> {
    model: &'a Model,
    /// The model's layer kinds, each as a uniform model (`Model::variants`).
    variants: Vec<(u64, Model)>,
    chip: &'a Chip,
    cfg: &'a ServeConfig,
    per_chip: u32,
    cost: CostModel,
    /// Decode on NeuronCores with int8 weights: the simulated GEMMs with one-byte weights.
    decode_cost: Option<CostModel>,
    topology: Topology,
    formats: InferenceFormats,
    tp: u64,
    pp: u64,
    ep: u64,
    replicas: u64,
    framework: Framework,
    /// Host time of one engine step beyond its launch (the frontend's), s; a draft's steps
    /// run inside the target's engine step and pay none.
    host_step_s: f64,
    /// The speculative draft model, served on the same ranks at the same TP.
    draft: Option<Box<Server<'a>>>,
    /// Context parallelism of a prefill-only replica (disaggregated prefill pools): each of
    /// `cp` rank groups holds `1/cp` of every prompt, ring attention passing K/V blocks.
    cp: u64,
}

impl<'a> Server<'a> {
    /// This prefill server with its prompts split over `cp` groups of `tp` ranks (ring
    /// attention), replicas counted in `tp × cp` ranks. Decode is not context-parallel.
    fn with_context_parallel(mut self, cp: u64) -> Result<Server<'a>, PlanError> {
        let ranks = self.cfg.chips * u64::from(self.per_chip);
        let replica = self.tp * self.pp * cp;
        if cp == 0 || ranks % replica != 0 || self.draft.is_some() {
            return Err(PlanError::Invalid(format!(
                "context parallelism {cp} × tp {} does not divide the {ranks} ranks (or runs with a draft)",
                self.tp
            )));
        }
        self.cp = cp;
        self.replicas = ranks / replica;
        Ok(self)
    }

    fn new(
        model: &'a Model,
        chip: &'a Chip,
        cfg: &'a ServeConfig,
        tp: u64,
        pp: u64,
        ep: u64,
    ) -> Result<Server<'a>, PlanError> {
        let mut server = Server::build(model, chip, cfg, tp, pp, ep)?;
        if let Some(s) = &cfg.speculative {
            let draft = Server::build(&s.draft, chip, cfg, tp, 1, 1).map_err(|e| {
                PlanError::Invalid(format!("--draft-model {} at tp {tp}: {e}", s.draft.name))
            })?;
            server.draft = Some(Box::new(Server { host_step_s: 0.0, ..draft }));
        }
        Ok(server)
    }

    /// The server of `model` alone (no draft).
    fn build(
        model: &'a Model,
        chip: &'a Chip,
        cfg: &'a ServeConfig,
        tp: u64,
        pp: u64,
        ep: u64,
    ) -> Result<Server<'a>, PlanError> {
        crate::train::check_routing(&cfg.cluster)?;
        let per_chip = ranks_per_chip(chip, cfg.lnc)?;
        let ranks = cfg.chips * u64::from(per_chip);
        let replica = tp.saturating_mul(pp);
        if replica == 0 || ranks % replica != 0 {
            return Err(PlanError::Invalid(format!(
                "tp × pp = {tp} × {pp} does not divide the {ranks} ranks of {} × {} ({per_chip} per chip)",
                cfg.chips, chip.name
            )));
        }
        let replicas = ranks / replica;
        // Without a scale-out network a replica's ranks must share one node (replicas
        // themselves need no network between them).
        let replica_chips = replica.div_ceil(u64::from(per_chip));
        let node_chips = u64::from(chip.node.scale_up_domain_chips);
        if chip.node.scale_out_bits_per_s.value <= 0.0 && replica_chips > node_chips {
            return Err(PlanError::Invalid(format!(
                "tp × pp = {tp} × {pp} ranks span {replica_chips} chips, but {} has no scale-out network: a replica fits in one {} ({node_chips} chips)",
                chip.name, chip.node.name
            )));
        }
        if tp > model.heads.max(model.kv_heads) * 4 {
            return Err(PlanError::Invalid(format!(
                "tp {tp} is far above the model's {} heads",
                model.heads
            )));
        }
        if pp > model.layers {
            return Err(PlanError::TooManyStages { pp, layers: model.layers });
        }
        if ep > 1 {
            let Some(moe) = model.moe else {
                return Err(PlanError::Invalid(format!(
                    "--ep {ep} needs a mixture-of-experts model; {} is dense",
                    model.name
                )));
            };
            if moe.experts % ep != 0 || replicas % ep != 0 {
                return Err(PlanError::Invalid(format!(
                    "ep {ep} must divide the {} experts and the {replicas} replicas",
                    moe.experts
                )));
            }
        }
        let framework = cfg.framework.unwrap_or(Framework::Fused);
        let neuron = chip.family == Family::Neuron;
        let host_step_s = match cfg.frontend {
            Frontend::Harness => 0.0,
            Frontend::Vllm if neuron => VLLM_NEURON_HOST_STEP_S.value,
            Frontend::Vllm => {
                return Err(PlanError::Invalid(format!(
                    "frontend vllm is modelled on Neuron chips only (its host time per step is fitted on vLLM-Neuron points); {} is served in process (CUDA graphs, trtllm-bench-like)",
                    chip.name
                )))
            }
        };
        let precision = match cfg.weights {
            WeightFormat::Fp8 => Precision::Fp8,
            WeightFormat::Mxfp8 => Precision::Mxfp8,
            WeightFormat::Mxfp4 => Precision::Mxfp4,
            WeightFormat::Nvfp4 => Precision::Nvfp4,
            WeightFormat::Bf16 | WeightFormat::Int8 => Precision::Bf16,
        };
        // Serving engines quantize fp8 activations in the kernel that produces them.
        let base = CostModel::new(chip, per_chip, precision, framework, cfg.neuron_costs)?
            .with_fused_fp8_casts();
        // A compiled Neuron graph runs the simulated kernels back to back: no launch gaps, so
        // not the GPU training coefficient; what the graph adds per layer is
        // NEURON_LAYER_OVERHEAD_S, this stack's one fitted coefficient.
        let base = if neuron { base.with_step_efficiency(1.0) } else { base };
        // fp8, MX and NVFP4 select their GEMM rows by precision. int8 weight-only computes in
        // bf16: in decode its weight-bound GEMMs (below 128 tokens) stream one byte per
        // weight, as the fp8 rows do.
        let decode_cost =
            (neuron && cfg.weights == WeightFormat::Int8).then(|| base.clone().with_int8_weights());
        let cost = base;
        let weight_bytes = match cfg.weights {
            WeightFormat::Bf16 => 2.0,
            WeightFormat::Fp8 | WeightFormat::Int8 => 1.0,
            // Values plus one e8m0 scale byte per 32.
            WeightFormat::Mxfp8 => 1.0 + 1.0 / 32.0,
            WeightFormat::Mxfp4 => 0.5 + 1.0 / 32.0,
            // Values plus one e4m3 scale byte per 16.
            WeightFormat::Nvfp4 => 0.5 + 1.0 / 16.0,
        };
        let kv_bytes = match cfg.kv {
            KvFormat::Bf16 => 2.0,
            KvFormat::Fp8 => 1.0,
        };
        Ok(Server {
            model,
            variants: model.variants(),
            chip,
            cfg,
            per_chip,
            cost,
            decode_cost,
            topology: Topology::new(chip, per_chip, &cfg.cluster.datacenter),
            formats: InferenceFormats { weight_bytes, kv_bytes },
            tp,
            pp,
            ep,
            replicas,
            framework,
            host_step_s,
            draft: None,
            cp: 1,
        })
    }

    /// Expected tokens a sequence gains per decode round: 1, or with speculation
    /// `(1 − α^(K+1)) / (1 − α)` (the accepted prefix of K proposals and the target's own).
    fn tokens_per_round(&self) -> f64 {
        let Some(s) = &self.cfg.speculative else { return 1.0 };
        let (a, k) = (s.acceptance, s.tokens as i32);
        if a >= 1.0 {
            f64::from(k + 1)
        } else {
            (1.0 - a.powi(k + 1)) / (1.0 - a)
        }
    }

    /// What speculation adds to a decode step of `sequences` (with `chunk` prompt tokens
    /// riding on it), ms: the draft's K decode steps and its share of the chunk, and the
    /// target's verify step beyond a plain decode (GEMMs over `(K + 1)·B` tokens and logits for
    /// each; the K/V is read once, so the memory-bound attention stays the decode's).
    fn speculation_ms(&self, sequences: u64, context: f64, chunk: f64) -> f64 {
        let (Some(draft), Some(s)) = (&self.draft, &self.cfg.speculative) else { return 0.0 };
        let decode = self.decode(sequences, context);
        let tokens = sequences * (s.tokens + 1);
        let b = self.batch(tokens, 1);
        let kinds = self.layer_ops(|m| m.decode_layer_ops(b, context, self.formats));
        let verify = self.step(&kinds, tokens, tokens, true);
        let verify_extra =
            (verify.total_ms - verify.attention_ms) - (decode.total_ms - decode.attention_ms);
        let draft_decode = draft.decode(sequences, context).total_ms;
        let draft_chunk = if chunk > 0.0 {
            draft.mixed(sequences, context, chunk).total_ms - draft_decode
        } else {
            0.0
        };
        s.tokens as f64 * draft_decode + draft_chunk + verify_extra
    }

    /// One decode round of `sequences`: a decode step, or K draft steps and a verify step, ms.
    fn round_ms(&self, sequences: u64, context: f64) -> f64 {
        self.decode(sequences, context).total_ms + self.speculation_ms(sequences, context, 0.0)
    }

    /// Tokens of one request: its prompt and output.
    fn request_len(&self) -> u64 {
        self.cfg.input_len + self.cfg.output_len.max(1)
    }

    /// Prompt tokens per request found in the prefix cache: at most all but the last, which
    /// is computed for its logits (as vLLM does on a full hit).
    fn cached_tokens(&self) -> u64 {
        cached_prompt_tokens(self.cfg.input_len, self.cfg.prefix_cache)
    }

    /// Prompt tokens per request that are prefilled (at least one).
    fn new_prompt_tokens(&self) -> u64 {
        (self.cfg.input_len - self.cached_tokens()).max(1)
    }

    /// A prefill of `sequences` prompts past the prefix cache: GEMMs and row ops over the new
    /// tokens, attention of their queries over the whole prompt (the causal work of queries
    /// `c..I` is `1 − (c/I)²` of the prompt's); with `pad`, each at its Neuron bucket.
    fn cached_prefill(&self, sequences: u64, pad: bool) -> StepBreakdown {
        let (input, cached) = (self.cfg.input_len, self.cached_tokens());
        let len = |n: u64| if pad { self.padded(n) } else { n };
        let fresh = self.prefill(sequences, len(self.new_prompt_tokens()));
        if cached == 0 {
            return fresh;
        }
        let full = self.prefill(sequences, len(input));
        let attention = full.attention_ms * (1.0 - (cached as f64 / input as f64).powi(2));
        StepBreakdown {
            attention_ms: attention,
            total_ms: fresh.total_ms - fresh.attention_ms + attention,
            ..fresh
        }
    }

    /// The sequence length the graphs are compiled for (Neuron).
    fn compiled_seq(&self) -> u64 {
        self.cfg.compiled_seq.unwrap_or_else(|| self.request_len().next_power_of_two())
    }

    /// Tokens of K/V cache a sequence holds: the request, or on Neuron the compiled length
    /// (the graphs' cache is allocated at it).
    fn kv_len(&self) -> u64 {
        match self.chip.family {
            Family::Neuron => self.compiled_seq(),
            _ => self.request_len(),
        }
    }

    /// The length `len` tokens run at: on Neuron the bucket that holds them (or the compiled
    /// length), elsewhere `len` (dynamic shapes).
    fn padded(&self, len: u64) -> u64 {
        if self.chip.family != Family::Neuron {
            return len;
        }
        let max = self.compiled_seq();
        match self.cfg.neuron_shapes {
            NeuronShapes::Static => max,
            NeuronShapes::Buckets => {
                len.max(NEURON_MIN_BUCKET.value as u64).next_power_of_two().min(max)
            }
        }
    }

    /// The mean context a decode step's attention runs at over the output (contexts `I` to
    /// `I + O`): `I + O/2` with dynamic shapes; on Neuron the mean of the padded lengths, a
    /// step that holds `c` tokens writing position `c` and so running in the bucket of `c + 1`.
    fn decode_context(&self) -> f64 {
        let (input, output) = (self.cfg.input_len, self.cfg.output_len.max(1));
        if self.chip.family != Family::Neuron {
            return input as f64 + output as f64 / 2.0;
        }
        // Steps need lengths input+1 ..= input+output, one bucket's run at a time.
        let (mut context, end, mut sum) = (input + 1, input + output + 1, 0.0);
        while context < end {
            let bucket = self.padded(context);
            let run_end = end.min(bucket + 1);
            sum += bucket as f64 * (run_end - context) as f64;
            context = run_end;
        }
        sum / output as f64
    }

    fn batch(&self, sequences: u64, seq: u64) -> Batch {
        let routing = crate::train::routing(&self.cfg.cluster);
        Batch { sequences, seq, tp: self.tp, cp: self.cp, ep: self.ep, routing }
    }

    /// `(count, ops of one such layer)` for each of the model's layer kinds.
    fn layer_ops(&self, ops: impl Fn(&Model) -> Vec<Op>) -> Vec<(u64, Vec<Op>)> {
        self.variants.iter().map(|(count, variant)| (*count, ops(variant))).collect()
    }

    /// Time of a forward step over every layer (the replica's stages in turn) for the ops of
    /// each kind of layer, with `tokens` activations crossing TP all-reduces and stage
    /// boundaries, plus the last stage's sampling for `sequences`.
    fn step(
        &self,
        kinds: &[(u64, Vec<Op>)],
        tokens: u64,
        sequences: u64,
        decode: bool,
    ) -> StepBreakdown {
        let model = self.model;
        let cost =
            if decode { self.decode_cost.as_ref().unwrap_or(&self.cost) } else { &self.cost };
        let layers = model.layers as f64;
        let (mut gemm, mut attention, mut other) = (0.0, 0.0, 0.0);
        let sampling = if sequences > 0 {
            model.sampling_ops(sequences, self.tp, self.formats)
        } else {
            vec![]
        };
        let per_layer = kinds.iter().flat_map(|(count, ops)| ops.iter().map(|op| (*count, op)));
        for (count, op) in per_layer.chain(sampling.iter().map(|op| (1, op))) {
            let t = cost.op_seconds(op) * count as f64;
            match op.kind {
                OpKind::Gemm { .. } => gemm += t,
                OpKind::Attention { .. }
                | OpKind::Memory { kind: rainier_model::MemKind::KvCache } => attention += t,
                OpKind::Memory { .. } => other += t,
            }
        }
        let bytes = (tokens * model.hidden * ACT_BYTES) as f64;
        let topo = &self.topology;
        // Two all-reduces per layer (after attention and after the MLP).
        let all_reduce =
            topo.seconds(CollectiveKind::AllReduce, bytes, Group { size: self.tp, stride: 1 }, 1.0);
        let mut comm = 2.0 * layers * all_reduce;
        if self.cp > 1 && !decode {
            // Ring attention: cp − 1 steps passing this rank's K/V block on, behind the
            // attention blocks; what the sends exceed the attention by is exposed.
            let kv = tokens as f64 * model.kv_elements_per_layer(self.tp) as f64 * ACT_BYTES as f64;
            let group = Group { size: self.cp, stride: self.tp };
            let send = topo.seconds(CollectiveKind::SendRecv, kv, group, 1.0);
            let ring = (self.cp - 1) as f64 * send;
            comm += layers * (ring - attention / layers).max(0.0);
        }
        if self.pp > 1 {
            let send = topo.seconds(
                CollectiveKind::SendRecv,
                bytes,
                Group { size: self.pp, stride: self.tp },
                1.0,
            );
            comm += (self.pp - 1) as f64 * send;
        }
        if self.ep > 1 {
            // The busiest rank receives `load` times the mean.
            let top_k = model.moe.map_or(1, |m| m.top_k);
            let load = model.busiest_rank_load(self.batch(tokens, 1));
            let a2a = topo.seconds(
                CollectiveKind::AllToAll,
                bytes * top_k as f64 * load,
                Group { size: self.ep, stride: self.tp * self.pp },
                1.0,
            );
            comm += 2.0 * model.moe_layers() as f64 * a2a;
        }
        let per_layer =
            if self.chip.family == Family::Neuron { NEURON_LAYER_OVERHEAD_S.value } else { 0.0 };
        let overhead = STEP_OVERHEAD_S.value + per_layer * layers + self.host_step_s;
        let ms = 1e3;
        StepBreakdown {
            gemm_ms: gemm * ms,
            attention_ms: attention * ms,
            other_ops_ms: other * ms,
            communication_ms: comm * ms,
            overhead_ms: overhead * ms,
            total_ms: (gemm + attention + other + comm + overhead) * ms,
        }
    }

    fn prefill(&self, sequences: u64, tokens_per_sequence: u64) -> StepBreakdown {
        let b = self.batch(sequences, tokens_per_sequence);
        let kinds = self.layer_ops(|m| m.prefill_layer_ops(b, self.formats));
        self.step(&kinds, b.tokens(), sequences, false)
    }

    fn decode(&self, sequences: u64, context: f64) -> StepBreakdown {
        let b = self.batch(sequences, 1);
        let kinds = self.layer_ops(|m| m.decode_layer_ops(b, context, self.formats));
        self.step(&kinds, sequences, sequences, true)
    }

    /// A decode step of `sequences` that also prefills `chunk` prompt tokens (chunked prefill:
    /// one forward over both, the chunk's GEMMs sharing the weight reads; the chunk's attention
    /// at a prompt's cost; logits only for the decodes and the prompts the chunk completes).
    fn mixed(&self, sequences: u64, context: f64, chunk: f64) -> StepBreakdown {
        let decode = self.decode(sequences, context);
        if chunk <= 0.0 {
            return decode;
        }
        let tokens = sequences + chunk.ceil() as u64;
        let prompt = self.new_prompt_tokens() as f64;
        let completed = (chunk / prompt).ceil() as u64;
        let b = self.batch(tokens, 1);
        let kinds = self.layer_ops(|m| m.decode_layer_ops(b, context, self.formats));
        let combined = self.step(&kinds, tokens, sequences + completed, true);
        let chunk_attention = self.cached_prefill(1, false).attention_ms * chunk / prompt;
        let attention = decode.attention_ms + chunk_attention;
        StepBreakdown {
            attention_ms: attention,
            total_ms: combined.total_ms - combined.attention_ms + attention,
            ..combined
        }
    }

    /// Weights of this rank's layers alone (no embedding or LM head), bytes: its stage's
    /// layers of the mean layer (a stage of a model whose layers differ holds its share of
    /// each).
    fn layer_weight_bytes(&self) -> f64 {
        let m = self.model;
        let layer = self
            .variants
            .iter()
            .map(|(count, v)| *count as f64 * self.layer_weights(v))
            .sum::<f64>()
            / m.layers as f64;
        m.layers.div_ceil(self.pp) as f64 * layer * self.formats.weight_bytes
    }

    /// Weights and reserve per rank, bytes; the most loaded rank holds its stage's layers
    /// (heads and MLP width padded to a multiple of TP, as the compute is) and the
    /// embedding (first stage) or the LM head (last stage).
    fn fixed_memory(&self) -> (f64, f64) {
        let m = self.model;
        let p = m.params();
        let (tp, wb) = (self.tp, self.formats.weight_bytes);
        let h = m.hidden;
        // The embedding table stays bf16 (a lookup); an untied LM head is a quantized GEMM.
        let embedding = (p.embedding + p.positions) as f64 / tp as f64 * ACT_BYTES as f64;
        let head =
            (m.vocab * h) as f64 / tp as f64 * if p.lm_head > 0 { wb } else { ACT_BYTES as f64 };
        let ends = if self.pp == 1 {
            embedding + if p.lm_head > 0 { head } else { 0.0 }
        } else {
            embedding.max(head)
        };
        let draft = self.draft.as_ref().map_or(0.0, |d| {
            let shares = self.cfg.speculative.as_ref().is_some_and(|s| s.shares_head);
            if shares {
                d.layer_weight_bytes()
            } else {
                d.fixed_memory().0
            }
        });
        let weights = self.layer_weight_bytes() + ends + draft;
        let reserve = rainier_perf::framework_reserve_gib(self.chip.family) * GIB;
        (weights, reserve)
    }

    /// Weights of one layer of a uniform model on one rank, in parameters: heads and MLP
    /// widths padded to a multiple of TP, `experts/ep` routed experts, MLA's latent
    /// projections and the router whole on every rank.
    fn layer_weights(&self, v: &Model) -> f64 {
        let (tp, h) = (self.tp, v.hidden);
        let heads = v.heads.div_ceil(tp);
        let attention = match v.mla {
            None => (2 * heads + 2 * v.kv_heads.div_ceil(tp).max(1)) * v.head_dim * h,
            Some(a) => {
                let q = match a.q_lora_rank {
                    Some(r) => h * r + r * heads * v.head_dim,
                    None => h * heads * v.head_dim,
                };
                q + h * (a.kv_lora_rank + a.qk_rope_dim)
                    + a.kv_lora_rank * heads * (a.qk_nope_dim + a.v_dim)
                    + heads * a.v_dim * h
            }
        };
        let mlp = |ffn: u64| v.mlp_matrices() * h * ffn.div_ceil(tp);
        match v.moe {
            None => attention as f64 + mlp(v.ffn) as f64,
            Some(moe) => {
                let shared = if moe.shared_ffn > 0 { mlp(moe.shared_ffn) } else { 0 };
                (attention + h * moe.experts + shared) as f64
                    + moe.experts.div_ceil(self.ep) as f64 * mlp(moe.expert_ffn) as f64
            }
        }
    }

    /// KV-cache bytes per rank of one sequence at `context` tokens (a sliding window or an
    /// attention chunk caps what a layer keeps).
    fn kv_per_sequence(&self, context: f64) -> f64 {
        let m = self.model;
        let stage_layers = m.layers.div_ceil(self.pp) as f64;
        self.variants
            .iter()
            .map(|(count, v)| {
                let share = *count as f64 / m.layers as f64;
                v.cached_context(context)
                    * stage_layers
                    * v.kv_elements_per_layer(self.tp) as f64
                    * self.formats.kv_bytes
                    * share
            })
            .sum()
    }

    /// KV-cache bytes per rank of `sequences` at `context` tokens each, the cached prefix's
    /// blocks held once.
    fn kv_bytes(&self, sequences: f64, context: f64) -> f64 {
        if sequences <= 0.0 {
            return 0.0;
        }
        let shared = self.kv_per_sequence(self.cached_tokens() as f64);
        let draft = self.draft.as_ref().map_or(0.0, |d| d.kv_bytes(sequences, context));
        sequences * (self.kv_per_sequence(context) - shared).max(0.0) + shared + draft
    }

    fn capacity(&self) -> f64 {
        self.chip.hbm_bytes() / f64::from(self.per_chip)
    }

    /// Step workspace for `tokens` tokens in flight through a layer and logits for
    /// `sequences`, bytes per rank.
    fn workspace(&self, tokens: f64, sequences: f64) -> f64 {
        let m = self.model;
        let widest = |v: &Model| v.moe.map_or(v.ffn, |moe| moe.expert_ffn.max(moe.shared_ffn));
        let ffn = self.variants.iter().map(|(_, v)| widest(v)).max().unwrap_or(m.ffn);
        let width = (m.hidden + 2 * ffn.div_ceil(self.tp)) as f64;
        tokens * width * ACT_BYTES as f64 + sequences * m.vocab.div_ceil(self.tp) as f64 * 4.0
    }

    /// Memory per rank of continuous batching at `n` sequences in flight (the paged KV cache
    /// holds each one's current context, `I + O/2` on average) with `chunk` prompt tokens
    /// per step: (weights, KV, workspace, reserve) bytes.
    fn continuous_memory(&self, n: u64, chunk: f64) -> (f64, f64, f64, f64) {
        let (input, output) = (self.cfg.input_len as f64, self.cfg.output_len as f64);
        let (weights, reserve) = self.fixed_memory();
        let per_mb = n.div_ceil(self.pp) as f64;
        let kv = self.kv_bytes(n as f64, input + output / 2.0);
        (weights, kv, self.workspace(per_mb + chunk, per_mb), reserve)
    }

    /// Prompt tokens per chunk at `n` in flight: enough for admissions to match completions
    /// (`N·I/O` per round, one step of each of the `pp` micro-batches), at least the prompt
    /// (up to the scheduler's budget), at most the budget.
    fn chunk(&self, n: u64) -> f64 {
        let budget = CHUNK_TOKENS.value;
        let prompt = self.new_prompt_tokens() as f64;
        self.prompt_tokens_per_step(n).max(prompt.min(budget)).min(budget)
    }

    /// Prompt tokens each micro-batch step must prefill on average for admissions to match
    /// completions.
    fn prompt_tokens_per_step(&self, n: u64) -> f64 {
        let (input, output) = (self.new_prompt_tokens() as f64, self.cfg.output_len.max(1) as f64);
        n as f64 * input / output / self.pp as f64 * self.tokens_per_round()
    }

    /// The most sequences a replica can keep in flight: the KV cache and workspace fit in
    /// memory, and the chunk budget admits prompts as fast as sequences complete.
    fn max_concurrency(&self) -> u64 {
        let (input, output) = (self.new_prompt_tokens() as f64, self.cfg.output_len.max(1) as f64);
        let admitted = (CHUNK_TOKENS.value * output / input.max(1.0) / self.tokens_per_round())
            .floor()
            .max(1.0) as u64
            * self.pp;
        let fits = |n: u64| {
            let (w, kv, ws, r) = self.continuous_memory(n, self.chunk(n));
            w + kv + ws + r <= self.capacity()
        };
        if !fits(1) {
            return 0;
        }
        // Memory grows with n: bisect the largest that fits, up to the admission bound.
        let (mut lo, mut hi) = (1u64, admitted.max(1));
        if fits(hi) {
            return hi;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Continuous batching at `n` sequences per replica: (TTFT ms, mean TPOT ms, output
    /// tokens/s over the cluster, prompt tokens per chunk). With PP, `pp` micro-batches of
    /// `n/pp` are in flight, one per stage. A share `N·I/(O·C)` of the steps carries a chunk,
    /// so admissions match completions.
    fn continuous_at(&self, n: u64) -> (f64, f64, f64, f64) {
        let input = self.new_prompt_tokens() as f64;
        let context = self.decode_context();
        let mb = n.div_ceil(self.pp);
        let chunk = self.chunk(n);
        let needed = self.prompt_tokens_per_step(n);
        let plain = self.mixed(mb, context, 0.0).total_ms + self.speculation_ms(mb, context, 0.0);
        let with_chunk =
            self.mixed(mb, context, chunk).total_ms + self.speculation_ms(mb, context, chunk);
        let share = (needed / chunk).min(1.0);
        let step_ms = share * with_chunk + (1.0 - share) * plain;
        let ttft_ms = (input / chunk).ceil().max(1.0) * with_chunk;
        let per_round = self.tokens_per_round();
        let tokens_per_s = n as f64 * per_round / (step_ms / 1e3) * self.replicas as f64;
        (ttft_ms, step_ms / per_round, tokens_per_s, chunk)
    }

    fn meets(&self, ttft_ms: f64, tpot_ms: f64) -> bool {
        self.cfg.slo_ttft_ms.is_none_or(|s| ttft_ms <= s)
            && self.cfg.slo_tpot_ms.is_none_or(|s| tpot_ms <= s)
    }

    /// The concurrency with the highest throughput that fits and meets the SLO (a geometric
    /// scan plus the largest that fits), or 1 marked as missing the SLO.
    fn continuous(&self) -> (u64, f64, f64, f64, f64, bool, u64) {
        let max = self.max_concurrency();
        let mut candidates = Vec::new();
        let mut n = 1u64;
        while n < max {
            candidates.push(n);
            n = (n + 1).max((n as f64 * 1.05) as u64);
        }
        candidates.push(max.max(1));
        let mut best: Option<(u64, f64, f64, f64, f64)> = None;
        for n in candidates {
            let (ttft, tpot, tps, chunk) = self.continuous_at(n);
            if n <= max && self.meets(ttft, tpot) && best.is_none_or(|b| tps > b.3) {
                best = Some((n, ttft, tpot, tps, chunk));
            }
        }
        match best {
            Some((n, ttft, tpot, tps, chunk)) => (n, ttft, tpot, tps, chunk, true, max),
            None => {
                let (ttft, tpot, tps, chunk) = self.continuous_at(1);
                (1, ttft, tpot, tps, chunk, false, max)
            }
        }
    }

    /// Chips the plan occupies.
    fn chips_used(&self) -> u64 {
        (self.tp * self.pp * self.cp * self.replicas).div_ceil(u64::from(self.per_chip))
    }

    /// At `tps` output tokens/s over the cluster with the chips computing a `busy` share of
    /// the time: ($ per M output tokens, facility J per output token, $ per chip-hour,
    /// (pricing, price source)).
    fn money(&self, tps: f64, busy: f64) -> (f64, f64, f64, (String, String)) {
        let e = economics(
            self.chip,
            &JobFacts {
                chips: self.chips_used(),
                replicas: self.replicas,
                tokens_per_s: tps,
                busy,
                state_bytes: 0.0,
            },
            &EconomicsConfig { tokens: None, ..self.cfg.cluster.economics.clone() },
        );
        (
            e.usd_per_million_tokens,
            e.facility_mw * 1e6 / tps,
            e.usd_per_chip_hour,
            (e.pricing.to_string(), e.price_source),
        )
    }

    fn report(&self, batch: u64, chosen: bool, continuous_headline: bool) -> ServeReport {
        let (model, cfg, chip) = (self.model, self.cfg, self.chip);
        let (input, output) = (cfg.input_len, cfg.output_len.max(1));
        let context = self.decode_context();
        let ranks = self.tp * self.pp * self.replicas;
        let chips_used = ranks.div_ceil(u64::from(self.per_chip));
        let (n, c_ttft, c_tpot, c_tps, chunk, meets, max) = self.continuous();
        let money = |tps: f64, busy: f64| self.money(tps, busy);
        // Busy: the share of a step the chips compute (not communication or overhead).
        let busy = |s: &StepBreakdown| (s.gemm_ms + s.attention_ms + s.other_ops_ms) / s.total_ms;
        let c_mb = n.div_ceil(self.pp);
        let c_decode = self.mixed(c_mb, context, 0.0);
        let (cont_usd, cont_j, usd_per_chip_hour, (pricing, price_source)) =
            money(c_tps, busy(&c_decode));
        let continuous = Continuous {
            concurrency: n,
            max_concurrency: max,
            chunk_tokens: chunk,
            ttft_ms: c_ttft,
            tpot_ms: c_tpot,
            output_tokens_per_s: c_tps,
            output_tokens_per_s_per_chip: c_tps / chips_used as f64,
            meets_slo: meets,
            cost_usd_per_million_output_tokens: cont_usd,
            energy_j_per_output_token: cont_j,
        };
        let (weights, reserve) = self.fixed_memory();
        let capacity = self.capacity();
        let (batch, ttft_ms, tpot_ms, tps, usd, joules, prefill, decode, kv, workspace) =
            if continuous_headline {
                let (_, kv, ws, _) = self.continuous_memory(n, chunk);
                let prefill = self.mixed(c_mb, context, chunk);
                (n, c_ttft, c_tpot, c_tps, cont_usd, cont_j, prefill, c_decode, kv, ws)
            } else {
                // Static: the batch prefills together, then decodes to the end; with PP a
                // replica keeps pp such batches in flight, one per stage.
                let prefill = self.cached_prefill(batch, true);
                // The draft prefills the prompts too.
                let draft =
                    self.draft.as_ref().map_or(0.0, |d| d.cached_prefill(batch, true).total_ms);
                let ttft = prefill.total_ms + draft;
                let decode = self.decode(batch, context);
                let tpot = self.round_ms(batch, context) / self.tokens_per_round();
                let request_s = (ttft + (output - 1) as f64 * tpot) / 1e3;
                let tps = (batch * output * self.pp) as f64 / request_s * self.replicas as f64;
                let (usd, joules, _, _) = money(tps, busy(&decode));
                let kv = self.kv_bytes((batch * self.pp) as f64, self.kv_len() as f64);
                let ws = self.workspace(
                    (batch * self.padded(self.new_prompt_tokens())) as f64,
                    batch as f64,
                );
                (batch, ttft, tpot, tps, usd, joules, prefill, decode, kv, ws)
            };
        let total = weights + kv + workspace + reserve;
        ServeReport {
            model: model.name.clone(),
            model_parameters: model.params().total(),
            active_parameters_per_token: model.matmul_params_active(),
            chip: chip.name.clone(),
            chips: cfg.chips,
            input_len: input,
            output_len: cfg.output_len,
            speculative: cfg.speculative.as_ref().map(|s| {
                let round_ms = self.round_ms(batch, context);
                let tokens_per_round = self.tokens_per_round();
                SpeculativeReport {
                    draft: s.draft.name.clone(),
                    tokens: s.tokens,
                    acceptance: s.acceptance,
                    tokens_per_round,
                    round_ms,
                    speedup: self.decode(batch, context).total_ms * tokens_per_round / round_ms,
                }
            }),
            prefix_cache: (cfg.prefix_cache != PrefixCache::None).then(|| PrefixCacheReport {
                cached_tokens_per_request: self.cached_tokens(),
                hit_rate: self.cached_tokens() as f64 / input as f64,
            }),
            batch,
            ttft_ms,
            tpot_ms,
            output_tokens_per_s: tps,
            output_tokens_per_s_per_chip: tps / chips_used as f64,
            max_concurrent_sequences: max * self.replicas,
            memory_gib_per_device: ServeMemory {
                weights: weights / GIB,
                kv_cache: kv / GIB,
                activations: workspace / GIB,
                other: reserve / GIB,
                total: total / GIB,
                capacity: capacity / GIB,
            },
            fits: total <= capacity,
            cost_usd_per_million_output_tokens: usd,
            energy_j_per_output_token: joules,
            usd_per_chip_hour,
            pricing,
            price_source,
            prefill,
            decode,
            continuous,
            workload: None,
            plan: ServePlan {
                tp: self.tp,
                pp: self.pp,
                ep: self.ep,
                replicas: self.replicas,
                ranks,
                ranks_per_chip: self.per_chip,
                rank_unit: crate::train::rank_unit(chip, self.per_chip),
                chips_used,
                weights: cfg.weights,
                kv: cfg.kv,
                framework: match self.framework {
                    Framework::Eager => "eager".into(),
                    Framework::Fused => "fused".into(),
                },
                frontend: cfg.frontend,
                chosen,
            },
            notes: self.notes(),
        }
    }

    fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = crate::what_if_note(self.chip).into_iter().collect();
        notes.extend([
            format!(
                "TP: 2 all-reduces per layer ({}), latency-bound at small batch",
                self.topology.describe(CollectiveKind::AllReduce, (self.model.hidden * ACT_BYTES) as f64, Group { size: self.tp, stride: 1 })
            ),
            "continuous batching: each step decodes every sequence in flight; prompts are prefilled in chunks riding on decode steps, N·I/O prompt tokens per step on average (admissions match completions, no queueing)".to_string(),
        ]);
        if self.chip.family == Family::Neuron {
            notes.push("NeuronCore prefill and decode from the simulator's tables (decode GEMMs from the gemm kernel at 1-32 tokens, K/V reads at the simulated streaming rate)".into());
            let shapes = match self.cfg.neuron_shapes {
                NeuronShapes::Buckets => "power-of-two buckets from 128",
                NeuronShapes::Static => "no buckets",
            };
            notes.push(format!(
                "compiled Neuron graphs: sequence length {}, {shapes}; the prompt runs at {} tokens, decode attention at a mean context of {:.0}",
                self.compiled_seq(),
                self.padded(self.cfg.input_len),
                self.decode_context()
            ));
        }
        if self.host_step_s > 0.0 {
            notes.push(format!(
                "vLLM server: {:.2} ms of host time per engine step (serve.vllm_neuron_host_step_s, fitted on one vLLM-Neuron point), serial with the device",
                self.host_step_s * 1e3
            ));
        }
        if let Some(s) = &self.cfg.speculative {
            notes.push(format!(
                "speculative decoding: {} proposes {} token{} per round (one decode step each, same ranks and TP{}), the target verifies {} positions per sequence in one forward; acceptance {} gives {:.2} tokens per round",
                s.draft.name,
                s.tokens,
                if s.tokens == 1 { "" } else { "s" },
                if s.shares_head { "; a one-layer head sharing the target's embedding and LM head" } else { "" },
                s.tokens + 1,
                s.acceptance,
                self.tokens_per_round()
            ));
        }
        if self.cfg.prefix_cache != PrefixCache::None {
            notes.push(format!(
                "prefix cache: {} of {} prompt tokens per request cached; prefill computes the other {}, whose queries attend over the whole prompt; the cached K/V blocks are held once per replica",
                self.cached_tokens(),
                self.cfg.input_len,
                self.new_prompt_tokens()
            ));
        }
        if self.cfg.weights == WeightFormat::Int8 {
            notes.push(
                "int8 weight-only: 1 byte per weight read, dequantized on the fly, bf16 math"
                    .into(),
            );
        }
        notes
    }
}

pub(crate) fn check(model: &Model, cfg: &ServeConfig) -> Result<(), PlanError> {
    crate::train::check_counts(
        &[
            ("chips", Some(cfg.chips)),
            ("input-len", Some(cfg.input_len)),
            ("output-len", Some(cfg.output_len)),
            ("tp", cfg.tp),
            ("pp", cfg.pp),
            ("ep", cfg.ep),
            ("batch", cfg.batch),
        ],
        1 << 24,
    )?;
    let tokens = cfg.batch.unwrap_or(1).saturating_mul(cfg.input_len + cfg.output_len);
    if tokens > 1 << 32 {
        return Err(PlanError::TooLarge {
            name: "batch × (input-len + output-len)",
            value: tokens,
            limit: 1 << 32,
        });
    }
    if cfg.input_len + cfg.output_len > model.max_positions {
        return Err(PlanError::Invalid(format!(
            "--input-len + --output-len = {} exceeds the model's max_position_embeddings ({})",
            cfg.input_len + cfg.output_len,
            model.max_positions
        )));
    }
    if let Some(seq) = cfg.compiled_seq {
        if seq < cfg.input_len + cfg.output_len || seq > model.max_positions {
            return Err(PlanError::Invalid(format!(
                "--compiled-seq {seq} must hold a request (input-len + output-len = {}) and stay within the model's max_position_embeddings ({})",
                cfg.input_len + cfg.output_len,
                model.max_positions
            )));
        }
    }
    if let Some(s) = &cfg.speculative {
        if !(1..=32).contains(&s.tokens) {
            return Err(PlanError::Invalid(format!(
                "--spec-tokens must lie in 1..=32, found {}",
                s.tokens
            )));
        }
        if !(0.0..=1.0).contains(&s.acceptance) {
            return Err(PlanError::Invalid(format!(
                "--acceptance must lie in 0..=1 (a probability per proposed token), found {}",
                s.acceptance
            )));
        }
        if s.draft.vocab != model.vocab {
            return Err(PlanError::Invalid(format!(
                "--draft-model {} has a vocabulary of {} tokens, the target {} has {}: a draft must share the target's tokenizer",
                s.draft.name, s.draft.vocab, model.name, model.vocab
            )));
        }
        if s.draft.params().total() >= model.params().total() {
            return Err(PlanError::Invalid(format!(
                "--draft-model {} ({:.2}B parameters) is not smaller than the target {} ({:.2}B)",
                s.draft.name,
                s.draft.params().total() as f64 / 1e9,
                model.name,
                model.params().total() as f64 / 1e9
            )));
        }
        if s.draft.max_positions < cfg.input_len + cfg.output_len {
            return Err(PlanError::Invalid(format!(
                "--draft-model {} holds {} positions, fewer than a request's {}",
                s.draft.name,
                s.draft.max_positions,
                cfg.input_len + cfg.output_len
            )));
        }
    }
    match cfg.prefix_cache {
        PrefixCache::HitRate(h) if !(0.0..=1.0).contains(&h) => {
            return Err(PlanError::Invalid(format!(
                "--prefix-hit-rate must lie in 0..=1 (a share of each prompt), found {h}"
            )));
        }
        PrefixCache::SharedPrefix(n) if n > cfg.input_len => {
            return Err(PlanError::Invalid(format!(
                "--shared-prefix-len {n} is longer than the prompt (--input-len {})",
                cfg.input_len
            )));
        }
        _ => {}
    }
    for (name, v) in [("slo-ttft-ms", cfg.slo_ttft_ms), ("slo-tpot-ms", cfg.slo_tpot_ms)] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return Err(PlanError::Invalid(format!(
                    "--{name} must be a positive number, found {v}"
                )));
            }
        }
    }
    crate::train::check_job(
        model,
        &TrainConfig { chips: cfg.chips, seq: 1, global_batch: 1, ..cfg.cluster.clone() },
    )
}

/// TP degrees a serving engine runs on this chip: on GPUs and TPUs (vLLM, TensorRT-LLM,
/// JetStream) TP divides the attention heads; Neuron pads the heads to a multiple of TP
/// (transformers-neuronx, NxD Inference), so any TP up to the scale-up domain. Each divides
/// the cluster's ranks.
fn tp_candidates(model: &Model, chip: &Chip, ranks: u64, domain: u64) -> Vec<u64> {
    (1..=domain.min(ranks).min(1024))
        .filter(|t| ranks % t == 0)
        .filter(|t| chip.family == Family::Neuron || model.heads % t == 0)
        .collect()
}

/// Predicts serving `model` on `chip` under `cfg`: the static batch's TTFT, TPOT and
/// throughput, and continuous batching at the SLO. Open degrees: the smallest replica
/// (TP × PP, PP up to 8, fewest PP stages first) that holds the model with room for the
/// batch's KV cache.
pub fn serve(model: &Model, chip: &Chip, cfg: &ServeConfig) -> Result<ServeReport, PlanError> {
    check(model, cfg)?;
    let cfg = &compiled_for_workload(model, chip, cfg)?;
    with_workload(model, chip, cfg, serve_plan(model, chip, cfg)?)
}

/// On Neuron without `--compiled-seq`, a workload's graphs are compiled for its longest
/// request (the next power of two, as a deployment sized for its traffic would be).
fn compiled_for_workload(
    model: &Model,
    chip: &Chip,
    cfg: &ServeConfig,
) -> Result<ServeConfig, PlanError> {
    let (Some(w), None, Family::Neuron) = (&cfg.workload, cfg.compiled_seq, chip.family) else {
        return Ok(cfg.clone());
    };
    w.check()?;
    let requests = w.requests(cfg.input_len, cfg.output_len, model.max_positions);
    let longest = requests.iter().map(|r| r.input_len + r.output_len).max().unwrap_or(1);
    let seq = longest.max(cfg.input_len + cfg.output_len).next_power_of_two();
    Ok(ServeConfig { compiled_seq: Some(seq.min(model.max_positions)), ..cfg.clone() })
}

/// The report with the workload simulated on its plan, when the config has one.
fn with_workload(
    model: &Model,
    chip: &Chip,
    cfg: &ServeConfig,
    report: ServeReport,
) -> Result<ServeReport, PlanError> {
    let Some(w) = &cfg.workload else { return Ok(report) };
    w.check()?;
    let p = &report.plan;
    let server = Server::new(model, chip, cfg, p.tp, p.pp, p.ep)?;
    Ok(ServeReport { workload: Some(server.workload(w)?), ..report })
}

fn serve_plan(model: &Model, chip: &Chip, cfg: &ServeConfig) -> Result<ServeReport, PlanError> {
    let per_chip = ranks_per_chip(chip, cfg.lnc)?;
    let ranks = cfg.chips * u64::from(per_chip);
    let batch = cfg.batch.unwrap_or(1);
    let ep = cfg.ep.unwrap_or(1);
    if let (Some(tp), pp) = (cfg.tp, cfg.pp) {
        let server = Server::new(model, chip, cfg, tp, pp.unwrap_or(1), ep)?;
        return Ok(server.report(batch, false, false));
    }
    let domain = Topology::new(chip, per_chip, &cfg.cluster.datacenter).scale_up_ranks();
    let tps = tp_candidates(model, chip, ranks, domain);
    let pps: Vec<u64> = cfg.pp.map_or_else(|| vec![1, 2, 4, 8], |p| vec![p]);
    let mut plans: Vec<(u64, u64)> =
        tps.iter().flat_map(|&tp| pps.iter().map(move |&pp| (tp, pp))).collect();
    plans.sort_by_key(|&(tp, pp)| (tp * pp, pp));
    // The smallest replica whose static batch fits and whose KV cache holds a sequence for
    // continuous batching; else the smallest that fits; else the smallest.
    let (mut fitting, mut last) = (None, None);
    let mut error = None;
    for (tp, pp) in plans {
        let server = match Server::new(model, chip, cfg, tp, pp, ep) {
            Ok(s) => s,
            Err(e) => {
                // The smallest replica's reason is the most telling.
                error.get_or_insert(e);
                continue;
            }
        };
        let report = server.report(batch, true, false);
        if report.fits && report.continuous.max_concurrency > 0 {
            return Ok(report);
        }
        if report.fits && fitting.is_none() {
            fitting = Some(report);
        } else if last.is_none() {
            last = Some(report);
        }
    }
    match (fitting.or(last), error) {
        (Some(report), _) => Ok(report),
        (None, Some(e)) => Err(e),
        (None, None) => Err(PlanError::NoPlan(format!(
            "no tensor-parallel degree up to {domain} divides the {ranks} ranks"
        ))),
    }
}

/// The cheapest plan and concurrency that meets the SLO: every TP the chip's engines run
/// within the scale-up fabric (see `tp_candidates`; a Trn2 UltraServer's 64 chips), PP 1–8, EP over the experts' divisors;
/// continuous batching at the highest-throughput concurrency that meets the SLO; ranked by
/// cost per output token.
pub fn serve_search(
    model: &Model,
    chip: &Chip,
    cfg: &ServeConfig,
) -> Result<ServeReport, PlanError> {
    check(model, cfg)?;
    let cfg = &compiled_for_workload(model, chip, cfg)?;
    let per_chip = ranks_per_chip(chip, cfg.lnc)?;
    let ranks = cfg.chips * u64::from(per_chip);
    // The search's TP may span the whole scale-up fabric (all four instances of a Trn2
    // UltraServer); the default plan (`serve`) stays inside one instance's domain.
    let domain = Topology::new(chip, per_chip, &cfg.cluster.datacenter).scale_up_fabric_ranks();
    let tps: Vec<u64> = match cfg.tp {
        Some(t) => vec![t],
        None => tp_candidates(model, chip, ranks, domain),
    };
    let pps: Vec<u64> = cfg.pp.map_or_else(|| vec![1, 2, 4, 8], |p| vec![p]);
    let eps: Vec<u64> = match (cfg.ep, model.moe) {
        (Some(e), _) => vec![e],
        (None, Some(moe)) => (0..10).map(|i| 1u64 << i).filter(|e| moe.experts % e == 0).collect(),
        (None, None) => vec![1],
    };
    let mut passing: Vec<ServeReport> = Vec::new();
    let mut last_error = None;
    // The lowest TTFT and TPOT any valid plan reaches, for the error when none meets the SLO.
    let mut closest: Option<(f64, f64)> = None;
    for &tp in &tps {
        for &pp in &pps {
            for &ep in &eps {
                let server = match Server::new(model, chip, cfg, tp, pp, ep) {
                    Ok(s) => s,
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                };
                if server.max_concurrency() == 0 {
                    continue;
                }
                let r = server.report(1, true, true);
                let (ttft, tpot, _, _) = server.continuous_at(1);
                let low = closest.map_or((ttft, tpot), |(a, b)| (a.min(ttft), b.min(tpot)));
                closest = Some(low);
                if r.continuous.meets_slo {
                    passing.push(r);
                }
            }
        }
    }
    // The cheapest first (a stable sort: the earliest of equals).
    passing.sort_by(|a, b| {
        a.cost_usd_per_million_output_tokens.total_cmp(&b.cost_usd_per_million_output_tokens)
    });
    let best = passing.first().cloned();
    let best = best.ok_or_else(|| match (closest, last_error) {
        (Some((ttft, tpot)), _) => PlanError::NoPlan(format!(
            "no plan of {} on {} × {} meets the SLO: the best reach TTFT {ttft:.1} ms and TPOT {tpot:.2} ms",
            model.name, cfg.chips, chip.name
        )),
        (None, Some(e)) => PlanError::NoPlan(e.to_string()),
        (None, None) => PlanError::NoPlan(format!(
            "no plan of {} on {} × {} holds the model with room for one sequence's KV cache",
            model.name, cfg.chips, chip.name
        )),
    })?;
    let has_slo = cfg.slo_ttft_ms.is_some() || cfg.slo_tpot_ms.is_some();
    match &cfg.workload {
        Some(w) if has_slo => best_under_workload(model, chip, cfg, w, passing),
        _ => with_workload(model, chip, cfg, best),
    }
}

/// Plans the workload simulation ranks in a search: the analytically cheapest.
const WORKLOAD_CANDIDATES: usize = 8;

/// Of the analytically cheapest plans meeting the SLO, the one whose simulated p99s meet it
/// at the workload's rate and that sustains the highest rate within it (so the lowest cost
/// per token at its SLO capacity; at the offered rate every plan on these chips costs the
/// same).
fn best_under_workload(
    model: &Model,
    chip: &Chip,
    cfg: &ServeConfig,
    w: &Workload,
    passing: Vec<ServeReport>,
) -> Result<ServeReport, PlanError> {
    let mut chosen: Option<(f64, ServeReport)> = None;
    let mut reached = 0.0f64;
    for r in passing.into_iter().take(WORKLOAD_CANDIDATES) {
        let r = with_workload(model, chip, cfg, r)?;
        let max = r.workload.as_ref().and_then(|w| w.max_rate_meeting_slo_per_s).unwrap_or(0.0);
        reached = reached.max(max);
        if max >= w.rate_per_s() && chosen.as_ref().is_none_or(|(m, _)| max > *m) {
            chosen = Some((max, r));
        }
    }
    chosen.map(|(_, r)| r).ok_or_else(|| {
        PlanError::NoPlan(format!(
            "no plan of {} on {} × {} meets the SLO's p99s at {:.2} requests/s: the most the {WORKLOAD_CANDIDATES} cheapest plans meeting it on average sustain is {reached:.2} requests/s",
            model.name, cfg.chips, chip.name, w.rate_per_s()
        ))
    })
}
