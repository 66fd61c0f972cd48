//! `rainier serve`: inference serving of a model on a cluster.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use rainier_plan::{
    parse_trace, serve, serve_search, Frontend, KvFormat, LengthDistribution, NeuronShapes,
    PrefixCache, ServeConfig, ServeReport, Speculative, SpeculativeHead, TrainConfig, WeightFormat,
    Workload,
};

use crate::out;
use crate::plan::{load_catalog, load_model, CatalogArgs, DatacenterArgs, EconomicsArgs};

/// A self-speculative head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SpecHeadArg {
    /// EAGLE: one decoder layer on the target's hidden states.
    Eagle,
    /// The model's multi-token-prediction module (DeepSeek-V3).
    Mtp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum WeightsArg {
    Bf16,
    /// fp8 weights and GEMMs (fp8 tensor cores where the chip has them).
    Fp8,
    /// Weight-only int8, dequantized on the fly (bf16 math).
    Int8,
    /// OCP MXFP8 weights and GEMMs (trn3/trn4: NeuronCore-v4's MX matmul, from the simulated
    /// MX gemm).
    Mxfp8,
    /// OCP MXFP4 weights and GEMMs (trn3/trn4).
    Mxfp4,
    /// NVFP4 weights and GEMMs (b200/gb200 FP4 tensor cores, at the catalog's FP4 peak).
    Nvfp4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NeuronShapesArg {
    Buckets,
    Static,
}

/// What drives the compiled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FrontendArg {
    /// A benchmark harness calling the compiled model in process (transformers-neuronx and
    /// NxD Inference benchmarks, trtllm-bench)
    Harness,
    /// vLLM's OpenAI server (Neuron chips: the vllm-neuron plugin), its host loop per engine
    /// step (serve.vllm_neuron_host_step_s, 2.69 ms, fitted on one vLLM-Neuron point) serial
    /// with the device; TTFT and TPOT as a client measures them
    Vllm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KvArg {
    Bf16,
    Fp8,
}

/// The serving job (shared by `serve` and `compare --serve`).
#[derive(Debug, Args)]
pub(crate) struct ServeJobArgs {
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 1024)]
    pub(crate) input_len: u64,
    /// Generated tokens per request.
    #[arg(long, default_value_t = 1024)]
    pub(crate) output_len: u64,
    /// Weight format.
    #[arg(long, value_enum, default_value = "bf16")]
    pub(crate) weights: WeightsArg,
    /// KV-cache format.
    #[arg(long, value_enum, default_value = "bf16")]
    pub(crate) kv: KvArg,
    /// Time-to-first-token objective, milliseconds.
    #[arg(long, value_name = "MS")]
    pub(crate) slo_ttft_ms: Option<f64>,
    /// Time-per-output-token objective (mean over the output), milliseconds.
    #[arg(long, value_name = "MS")]
    pub(crate) slo_tpot_ms: Option<f64>,
    /// Prefix caching: the share of each prompt's tokens found in the cache (0 to 1, a mean
    /// over requests). Cached tokens are not prefilled and their K/V is held once.
    #[arg(long, value_name = "SHARE", conflicts_with = "shared_prefix_len")]
    pub(crate) prefix_hit_rate: Option<f64>,
    /// Prefix caching: every prompt starts with the same this many tokens (a system prompt),
    /// prefilled once and held once.
    #[arg(long, value_name = "TOKENS")]
    pub(crate) shared_prefix_len: Option<u64>,
    /// Speculative decoding: the draft model (a preset or config.json sharing the target's
    /// tokenizer), run on the same ranks at the same TP. Needs --spec-tokens and --acceptance.
    #[arg(long, value_name = "MODEL", group = "speculator", requires_all = ["spec_tokens", "acceptance"])]
    pub(crate) draft_model: Option<String>,
    /// Self-speculative decoding with a head on the target instead of a draft model: `eagle`
    /// (one decoder layer of the target's shape on its hidden states, as EAGLE-1/2/3 run in
    /// vLLM, SGLang and TensorRT-LLM; needs --acceptance) or `mtp` (the model's own
    /// multi-token-prediction module, DeepSeek-V3's; acceptance default 0.85). The head
    /// shares the target's embedding and LM head. Needs --spec-tokens.
    #[arg(long, value_enum, group = "speculator", requires = "spec_tokens")]
    pub(crate) spec_head: Option<SpecHeadArg>,
    /// Speculative decoding: tokens the draft proposes per round (K, 1 to 32).
    #[arg(long, value_name = "K", requires = "speculator")]
    pub(crate) spec_tokens: Option<u64>,
    /// Speculative decoding: the probability that the target accepts a proposed token (0 to 1;
    /// it depends on the pair and the data: measure it, e.g. vLLM's spec-decode metrics).
    #[arg(long, value_name = "PROBABILITY", requires = "speculator")]
    pub(crate) acceptance: Option<f64>,
    /// Simulate the plan under a request stream: `fixed` (every request --input-len +
    /// --output-len), `uniform` (each length uniform on [L/2, 3L/2]), `lognormal` (heavy-
    /// tailed, means --input-len and --output-len), or a trace file of `arrival_s input_len
    /// output_len` lines. Reports TTFT, TPOT and end-to-end p50/p90/p99, queueing,
    /// preemptions, and with an SLO the goodput and the highest rate meeting it (p99s).
    #[arg(long, value_name = "NAME|FILE")]
    pub(crate) workload: Option<String>,
    /// Requests per second over the cluster, Poisson arrivals (synthetic workloads; implies
    /// --workload fixed).
    #[arg(long, value_name = "REQUESTS_PER_S")]
    pub(crate) rate: Option<f64>,
    /// Requests in a synthetic workload.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub(crate) requests: u64,
    /// Seed of a synthetic workload's lengths and arrivals (and speculative acceptances).
    #[arg(long, value_name = "SEED", default_value_t = 1)]
    pub(crate) seed: u64,
    /// Sequences in flight at most in the workload simulation (vLLM's max_num_seqs)
    /// [default: the assumption serve.max_num_seqs, 256].
    #[arg(long, value_name = "N")]
    pub(crate) max_seqs: Option<u64>,
}

impl ServeJobArgs {
    /// The workload the flags name, if any.
    fn workload(&self) -> Result<Option<Workload>> {
        let name = match (&self.workload, self.rate) {
            (None, None) => return Ok(None),
            (None, Some(_)) => "fixed",
            (Some(w), _) => w.as_str(),
        };
        let lengths = match name {
            "fixed" => Some(LengthDistribution::Fixed),
            "uniform" => Some(LengthDistribution::Uniform),
            "lognormal" => Some(LengthDistribution::LogNormal),
            _ => None,
        };
        if let Some(lengths) = lengths {
            let Some(rate_per_s) = self.rate else {
                bail!("--workload {name} needs --rate (requests per second over the cluster)");
            };
            return Ok(Some(Workload::Synthetic {
                lengths,
                rate_per_s,
                requests: self.requests,
                seed: self.seed,
            }));
        }
        let path = std::path::Path::new(name);
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "--workload {name}: not fixed, uniform or lognormal, and not a readable trace file ({e})"
            )
        })?;
        if self.rate.is_some() {
            bail!("--rate sets a synthetic workload's arrivals; the trace {name} carries its own");
        }
        Ok(Some(Workload::Trace { name: name.to_string(), requests: parse_trace(&text, name)? }))
    }

    /// The job's serving configuration for `model` (the target of speculative decoding).
    pub(crate) fn config(&self, chips: u64, model: &rainier_model::Model) -> Result<ServeConfig> {
        if self.max_seqs == Some(0) {
            bail!("--max-seqs must be positive");
        }
        Ok(ServeConfig {
            workload: self.workload()?,
            max_seqs: self.max_seqs,
            weights: match self.weights {
                WeightsArg::Bf16 => WeightFormat::Bf16,
                WeightsArg::Fp8 => WeightFormat::Fp8,
                WeightsArg::Int8 => WeightFormat::Int8,
                WeightsArg::Mxfp8 => WeightFormat::Mxfp8,
                WeightsArg::Mxfp4 => WeightFormat::Mxfp4,
                WeightsArg::Nvfp4 => WeightFormat::Nvfp4,
            },
            kv: match self.kv {
                KvArg::Bf16 => KvFormat::Bf16,
                KvArg::Fp8 => KvFormat::Fp8,
            },
            slo_ttft_ms: self.slo_ttft_ms,
            slo_tpot_ms: self.slo_tpot_ms,
            prefix_cache: match (self.prefix_hit_rate, self.shared_prefix_len) {
                (Some(h), _) => PrefixCache::HitRate(h),
                (None, Some(n)) => PrefixCache::SharedPrefix(n),
                (None, None) => PrefixCache::None,
            },
            speculative: match (&self.draft_model, self.spec_head, self.spec_tokens) {
                (Some(draft), _, Some(tokens)) => Some(Speculative {
                    draft: load_model(draft)?,
                    tokens,
                    acceptance: self
                        .acceptance
                        .ok_or_else(|| anyhow::anyhow!("--draft-model needs --acceptance"))?,
                    shares_head: false,
                }),
                (None, Some(head), Some(tokens)) => {
                    let head = match head {
                        SpecHeadArg::Eagle => SpeculativeHead::Eagle,
                        SpecHeadArg::Mtp => SpeculativeHead::Mtp,
                    };
                    Some(Speculative::head(model, head, tokens, self.acceptance)?)
                }
                _ => None,
            },
            ..ServeConfig::new(chips, self.input_len, self.output_len)
        })
    }
}

/// `rainier serve` arguments.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A preset or a Hugging Face config.json.
    #[arg(long)]
    model: String,
    /// Chip (see `rainier chips`).
    #[arg(long)]
    chip: String,
    /// Number of chips.
    #[arg(long)]
    chips: u64,
    /// Tensor-parallel degree per replica (ranks: NeuronCores on Trainium/Inferentia).
    #[arg(long)]
    tp: Option<u64>,
    /// Pipeline stages per replica.
    #[arg(long)]
    pp: Option<u64>,
    /// Expert parallelism over replicas (MoE).
    #[arg(long)]
    ep: Option<u64>,
    /// MoE routing imbalance: the busiest expert-parallel rank's routed tokens over the mean
    /// beyond sampling noise, 1 to 4 (dropless routing) [default: the assumption
    /// moe.routing_skew, 1.1].
    #[arg(long, value_name = "RATIO")]
    moe_skew: Option<f64>,
    /// MoE expert capacity over the mean routed tokens (GShard/Switch-style: tokens beyond
    /// it dropped, experts below it padded, as static-shape stacks run) [default: dropless].
    #[arg(long, value_name = "RATIO")]
    capacity_factor: Option<f64>,
    /// Static batch: sequences served together [default: 1]. Not with --search, which finds
    /// the concurrency of continuous batching itself.
    #[arg(long, conflicts_with = "search")]
    batch: Option<u64>,
    #[command(flatten)]
    job: ServeJobArgs,
    #[command(flatten)]
    disaggregation: DisaggregationArgs,
    /// Find the cheapest plan and concurrency that meets the SLO (continuous batching).
    #[arg(long)]
    search: bool,
    /// Print a plan that does not fit in device memory instead of refusing it (marked
    /// DOES NOT FIT; the exit status is still 0).
    #[arg(long)]
    allow_oversubscribed: bool,
    /// Trainium logical NeuronCore size (1 or 2).
    #[arg(long)]
    lnc: Option<u32>,
    /// Neuron: the sequence length the inference graphs are compiled for (their K/V cache
    /// length, the largest bucket) [default: the smallest power of two that holds
    /// input + output].
    #[arg(long, value_name = "TOKENS")]
    compiled_seq: Option<u64>,
    /// Neuron: how compiled graphs pad sequences. `buckets`: a graph per power of two from
    /// 128 (NxD Inference's default); `static`: one graph at --compiled-seq (an export
    /// without bucketing), every prompt and decode step's attention padded to it.
    #[arg(long, value_enum, default_value = "buckets")]
    neuron_shapes: NeuronShapesArg,
    /// What drives the compiled model: a benchmark harness in process, or a vLLM server
    /// (Neuron chips only).
    #[arg(long, value_enum, default_value = "harness")]
    frontend: FrontendArg,
    #[command(flatten)]
    economics: EconomicsArgs,
    #[command(flatten)]
    datacenter: DatacenterArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Scenario files (`--scenario`, `--dump-scenario`).
    #[command(flatten)]
    _scenario: crate::scenario::ScenarioArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    if args.disaggregation.disaggregate {
        return disaggregated(args);
    }
    let report = report(args)?;
    let bands = bands(args, &report)?;
    if args.json {
        let name = if args.search { "serve-search" } else { "serve" };
        crate::out_json(name, &crate::with_field(&report, "bands", &bands)?)?;
    } else {
        let lines: Vec<String> = bands.iter().map(|b| b.line()).collect();
        out(&format!("{}\n{}", text(&report), lines.join("\n")));
    }
    Ok(())
}

/// Bands of a serving prediction: TTFT from its family's TTFT errors, the decode figures from
/// its TPOT (or throughput) errors.
fn bands(args: &ServeArgs, r: &ServeReport) -> Result<Vec<crate::versus::Bands>> {
    use crate::versus::{family_for, Bands, Errors, Quantity};
    let catalog = load_catalog(&args.catalog)?;
    let chip = catalog.chip(&args.chip)?;
    let errors = Errors::measure()?;
    let decode = family_for(chip.family, true);
    let prefill = match chip.family {
        rainier_hw::Family::Neuron => Some(crate::cases::FAMILIES[1]),
        _ => decode,
    };
    let price =
        (r.usd_per_chip_hour, rainier_plan::price_range(chip, &args.economics.config(None)));
    let decode_values = [
        ("tpot_ms", r.tpot_ms, Quantity::Time),
        ("output_tokens_per_s", r.output_tokens_per_s, Quantity::Rate),
        (
            "cost_usd_per_million_output_tokens",
            r.cost_usd_per_million_output_tokens,
            Quantity::Cost,
        ),
    ];
    Ok(vec![
        Bands::of(errors, prefill, &[("ttft_ms", r.ttft_ms, Quantity::Time)], price),
        Bands::of(errors, decode, &decode_values, price),
    ])
}

/// The report `rainier serve` prints, or its error.
pub(crate) fn report(args: &ServeArgs) -> Result<ServeReport> {
    let catalog = load_catalog(&args.catalog)?;
    let chip = catalog.chip(&args.chip)?;
    let model = load_model(&args.model)?;
    let neuron_flags =
        args.compiled_seq.is_some() || args.neuron_shapes != NeuronShapesArg::Buckets;
    if neuron_flags && chip.family != rainier_hw::Family::Neuron {
        bail!(
            "--compiled-seq and --neuron-shapes set the shapes of compiled Neuron graphs; {} is not a Trainium or Inferentia chip",
            chip.name
        );
    }
    let cfg = config(args, &model)?;
    let report =
        if args.search { serve_search(&model, chip, &cfg)? } else { serve(&model, chip, &cfg)? };
    crate::ensure_finite(&[
        ("TTFT", report.ttft_ms),
        ("TPOT", report.tpot_ms),
        ("output tokens/s", report.output_tokens_per_s),
    ])?;
    if !report.fits && !args.allow_oversubscribed {
        let m = &report.memory_gib_per_device;
        return Err(crate::NoPlan(format!(
            "the plan does not fit: {:.2} GiB per device of {:.2} (weights {:.2}, KV cache {:.2}, activations {:.2}, other {:.2}); more chips, larger --tp/--pp, fp8 weights, a smaller --batch or --search may fit, --allow-oversubscribed prints it anyway",
            m.total, m.capacity, m.weights, m.kv_cache, m.activations, m.other
        ))
        .into());
    }
    if report.continuous.max_concurrency == 0 && !args.allow_oversubscribed {
        bail!(
            "continuous batching cannot run: the KV cache of a replica holds no {}-token sequence beside the weights and the prefill workspace (as a serving engine refuses to start); more chips, larger --tp, an fp8 KV cache or shorter sequences may fit, --allow-oversubscribed prints the static batch anyway",
            report.input_len + report.output_len
        );
    }
    Ok(report)
}

/// The serving configuration the flags mean.
fn config(args: &ServeArgs, model: &rainier_model::Model) -> Result<ServeConfig> {
    Ok(ServeConfig {
        tp: args.tp,
        compiled_seq: args.compiled_seq,
        neuron_shapes: match args.neuron_shapes {
            NeuronShapesArg::Buckets => NeuronShapes::Buckets,
            NeuronShapesArg::Static => NeuronShapes::Static,
        },
        frontend: match args.frontend {
            FrontendArg::Harness => Frontend::Harness,
            FrontendArg::Vllm => Frontend::Vllm,
        },
        pp: args.pp,
        ep: args.ep,
        batch: args.batch,
        lnc: args.lnc,
        cluster: TrainConfig {
            moe_skew: args.moe_skew,
            capacity_factor: args.capacity_factor,
            datacenter: args.datacenter.config(),
            economics: args.economics.config(None),
            ..TrainConfig::new(args.chips, 1, 1)
        },
        ..args.job.config(args.chips, model)?
    })
}

fn text(r: &ServeReport) -> String {
    let p = &r.plan;
    let m = &r.memory_gib_per_device;
    let c = &r.continuous;
    let mut s = format!(
        "{} on {} × {}, {} prompt + {} output tokens, {} weights, {} KV cache\n",
        r.model,
        r.chips,
        r.chip,
        r.input_len,
        r.output_len,
        serde_json::to_string(&p.weights).unwrap_or_default().trim_matches('"'),
        serde_json::to_string(&p.kv).unwrap_or_default().trim_matches('"')
    );
    s += &format!(
        "plan{}: tp {} × pp {} per replica, {} replicas, ep {} = {} ranks ({} per chip, a rank is a {}) on {} chips\n\n",
        if p.chosen { " (chosen by rainier)" } else { "" },
        p.tp, p.pp, p.replicas, p.ep, p.ranks, p.ranks_per_chip, p.rank_unit, p.chips_used
    );
    s += &format!("batch {} sequences\n", r.batch);
    s += &format!("  TTFT                      {:>10.2} ms\n", r.ttft_ms);
    s += &format!("  TPOT (mean)               {:>10.2} ms\n", r.tpot_ms);
    s += &format!(
        "  output tokens/s           {:>10.0}  ({:.1} per chip)\n",
        r.output_tokens_per_s, r.output_tokens_per_s_per_chip
    );
    s += &format!("  $ per M output tokens     {:>10.3}\n", r.cost_usd_per_million_output_tokens);
    s += &format!(
        "  J per output token        {:>10.3}  (facility, PUE included)\n\n",
        r.energy_j_per_output_token
    );
    s += &format!(
        "continuous batching: {} sequences in flight per replica (KV cache holds {}), prompts prefilled in chunks of {:.0} tokens\n",
        c.concurrency, c.max_concurrency, c.chunk_tokens
    );
    s += &format!(
        "  TTFT {:.1} ms, TPOT {:.2} ms, {:.0} output tokens/s ({:.1} per chip), ${:.3} per M output tokens{}\n\n",
        c.ttft_ms,
        c.tpot_ms,
        c.output_tokens_per_s,
        c.output_tokens_per_s_per_chip,
        c.cost_usd_per_million_output_tokens,
        if c.meets_slo { "" } else { "  — SLO NOT MET" }
    );
    s += "step (ms)              gemm   attention   other ops   communication   overhead     total\n";
    for (name, b) in [("prefill", &r.prefill), ("decode (mean)", &r.decode)] {
        s += &format!(
            "  {name:<16} {:>9.3} {:>11.3} {:>11.3} {:>15.3} {:>10.3} {:>9.3}\n",
            b.gemm_ms,
            b.attention_ms,
            b.other_ops_ms,
            b.communication_ms,
            b.overhead_ms,
            b.total_ms
        );
    }
    s += &format!(
        "\nmemory per device (GiB): weights {:.2}, KV cache {:.2}, activations {:.2}, other {:.2}, total {:.2} of {:.2}  {}\n",
        m.weights, m.kv_cache, m.activations, m.other, m.total, m.capacity,
        if r.fits { "fits" } else { "DOES NOT FIT" }
    );
    if let Some(w) = &r.workload {
        s += &workload_text(w);
    }
    if !r.notes.is_empty() {
        s += "\nnotes\n";
        for n in &r.notes {
            s += &format!("  - {n}\n");
        }
    }
    s.trim_end().to_string()
}

fn workload_text(w: &rainier_plan::WorkloadReport) -> String {
    let seed = w.seed.map_or(String::new(), |s| format!(", seed {s}"));
    let mut s = format!(
        "\nworkload {}: {} requests at {:.2} per s{seed}, mean {:.0} prompt + {:.0} output tokens, at most {} sequences in flight\n",
        w.name, w.requests, w.rate_per_s, w.mean_input_len, w.mean_output_len, w.max_seqs
    );
    s += "  (ms)            p50        p90        p99\n";
    s += &format!(
        "  TTFT     {:>10.1} {:>10.1} {:>10.1}\n",
        w.ttft_ms_p50, w.ttft_ms_p90, w.ttft_ms_p99
    );
    s += &format!(
        "  TPOT     {:>10.2} {:>10.2} {:>10.2}\n",
        w.tpot_ms_p50, w.tpot_ms_p90, w.tpot_ms_p99
    );
    s += &format!("  queue    {:>10.1} {:>10} {:>10.1}\n", w.queue_ms_p50, "", w.queue_ms_p99);
    s += &format!("  e2e      {:>10.1} {:>10} {:>10.1}\n", w.e2e_ms_p50, "", w.e2e_ms_p99);
    s += &format!(
        "  {:.0} output tokens/s, {:.1} sequences in flight per replica, {} preemptions, ${:.3} per M output tokens\n",
        w.output_tokens_per_s, w.mean_running_per_replica, w.preemptions, w.cost_usd_per_million_output_tokens
    );
    if let (Some(a), Some(g)) = (w.slo_attainment, w.goodput_requests_per_s) {
        s += &format!("  SLO met by {:.1} % of requests (goodput {:.2} requests/s)", a * 100.0, g);
        if let Some(m) = w.max_rate_meeting_slo_per_s {
            s += &format!("; the p99s meet it up to {m:.2} requests/s");
        }
        s += "\n";
    }
    s
}

/// Disaggregated serving: a prefill pool and a decode pool.
#[derive(Debug, Clone, Args)]
pub(crate) struct DisaggregationArgs {
    /// Serve disaggregated: prompts prefilled on one pool of replicas and decoded on another,
    /// each request's KV cache moved between them over the scale-out network (DistServe,
    /// Dynamo, llm-d). --chips counts both pools; the split and each pool's TP are searched
    /// for the lowest cost per token at the SLO unless given; colocated serving on the same
    /// chips is shown beside it.
    #[arg(long, conflicts_with_all = ["search", "batch", "tp", "pp", "ep"])]
    disaggregate: bool,
    /// The prefill pool's chip kind [default: --chip, which then is the decode pool's only].
    #[arg(long, requires = "disaggregate")]
    prefill_chip: Option<String>,
    /// Chips of the prefill pool (the rest of --chips decode) [default: searched].
    #[arg(long, requires = "disaggregate")]
    prefill_chips: Option<u64>,
    /// Tensor-parallel degree of a prefill replica [default: searched].
    #[arg(long, requires = "disaggregate")]
    prefill_tp: Option<u64>,
    /// Context parallelism of a prefill replica: ring attention over this many groups of
    /// --prefill-tp ranks, each holding a slice of the prompt (long prompts) [default:
    /// searched over 1, 2, 4, 8].
    #[arg(long, requires = "disaggregate")]
    prefill_cp: Option<u64>,
    /// Tensor-parallel degree of a decode replica [default: searched].
    #[arg(long, requires = "disaggregate")]
    decode_tp: Option<u64>,
}

/// `rainier serve --disaggregate`.
fn disaggregated(args: &ServeArgs) -> Result<()> {
    let catalog = load_catalog(&args.catalog)?;
    let decode_chip = catalog.chip(&args.chip)?;
    let d = &args.disaggregation;
    let prefill_chip = match &d.prefill_chip {
        Some(name) => catalog.chip(name)?,
        None => decode_chip,
    };
    let model = load_model(&args.model)?;
    let split = rainier_plan::Disaggregation {
        prefill_chips: d.prefill_chips,
        prefill_tp: d.prefill_tp,
        prefill_cp: d.prefill_cp,
        decode_tp: d.decode_tp,
    };
    let r = rainier_plan::serve_disaggregated(
        &model,
        prefill_chip,
        decode_chip,
        &config(args, &model)?,
        &split,
    )?;
    crate::ensure_finite(&[
        ("TTFT", r.ttft_ms),
        ("TPOT", r.tpot_ms),
        ("output tokens/s", r.output_tokens_per_s),
    ])?;
    if args.json {
        return crate::out_json("serve-disaggregated", &r);
    }
    out(&disaggregated_text(&r));
    Ok(())
}

fn disaggregated_text(r: &rainier_plan::DisaggregatedReport) -> String {
    let (p, d, kv) = (&r.prefill, &r.decode, &r.kv_transfer);
    let mut s = format!(
        "{} disaggregated on {} of {} chips: prefill on {} × {}, decode on {} × {}; {} prompt + {} output tokens\n\n",
        r.model,
        p.chips + d.chips,
        r.chips,
        p.chips,
        p.chip,
        d.chips,
        d.chip,
        r.input_len,
        r.output_len
    );
    s += "pool        chips  tp·cp  replicas  batch   step ms  capacity req/s  utilization  GiB/device\n";
    for (name, pool, unit) in [("prefill", p, "prompts"), ("decode", d, "in flight")] {
        s += &format!(
            "{name:<10} {:>6} {:>6} {:>9} {:>6}  {:>8.2}  {:>14.2}  {:>10.1}%  {:>5.2} of {:.2}  ({unit})\n",
            pool.chips,
            format!("{}·{}", pool.tp, pool.cp),
            pool.replicas,
            pool.batch,
            pool.step_ms,
            pool.capacity_requests_per_s,
            pool.utilization * 100.0,
            pool.memory_gib_per_device,
            pool.capacity_gib_per_device
        );
    }
    s += &format!(
        "\nKV transfer: {:.1} MiB per request, {:.2} ms at the link, {:.2} ms exposed, network {:.1}% busy\n",
        kv.bytes_per_request / (1u64 << 20) as f64,
        kv.transfer_ms,
        kv.exposed_ms,
        kv.network_utilization * 100.0
    );
    s += &format!(
        "TTFT {:.1} ms, TPOT {:.2} ms, {:.2} requests/s, {:.0} output tokens/s ({:.1} per chip), ${:.3} per M output tokens{}\n",
        r.ttft_ms,
        r.tpot_ms,
        r.requests_per_s,
        r.output_tokens_per_s,
        r.output_tokens_per_s_per_chip,
        r.cost_usd_per_million_output_tokens,
        if r.meets_slo { "" } else { " (misses the SLO)" }
    );
    match &r.colocated {
        Some(c) => {
            s += &format!(
                "colocated on the same {} × {} (tp {}, continuous batching with chunked prefill): TTFT {:.1} ms, TPOT {:.2} ms, {:.0} output tokens/s, ${:.3} per M output tokens; disaggregated serves {:.2}× the tokens per dollar\n",
                c.chips,
                c.chip,
                c.tp,
                c.ttft_ms,
                c.tpot_ms,
                c.output_tokens_per_s,
                c.cost_usd_per_million_output_tokens,
                c.cost_usd_per_million_output_tokens / r.cost_usd_per_million_output_tokens
            );
        }
        None => s +=
            "colocated: no comparison (different chip kinds, or no colocated plan meets the SLO)\n",
    }
    s += "\nnotes\n";
    for n in &r.notes {
        s += &format!("  - {n}\n");
    }
    s.trim_end().to_string()
}
