//! The `rainier` command. The only crate that parses arguments, touches files and prints.
//!
//! The binary is [`main`]; [`run_captured`] runs one command line in process and returns what
//! it would print (the Python package's planner API calls it, so Python gets the CLI's numbers);
//! [`output_schemas`] are the JSON Schemas of its outputs.

pub use schemas::output_schemas;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use rainier_arch::Chip;
use rainier_isa::Program;
use rainier_tensor::{npy, DType, HostTensor};
use rand::{Rng, SeedableRng};

mod cases;
mod compare;
mod demo;
mod emit;
mod kernel;
mod models;
mod plan;
mod report;
mod scenario;
mod schemas;
mod serve;
mod site;
mod table;
mod versus;

const ABOUT: &str = "Rainier: an open, executable model of AWS Trainium and Inferentia.

Today Rainier simulates one NeuronCore (NeuronCore-v2 on trn1/inf2, v3 on trn2, v4 on trn3):
programs written in a small assembly language (docs/assembly.md) in the NKI instruction
vocabulary run on the Tensor, Vector, Scalar and GpSimd engines over SBUF, PSUM and HBM. The
simulator computes the numbers the hardware would (fp32 accumulation, bf16/fp8 rounding,
saturation) and how long they take (published cost formulas, DMA queues, semaphores), with
profiler traces for Perfetto. Library kernels (gemm, rmsnorm, layernorm, softmax, gelu, swiglu,
residual add, rope, adamw, cross-entropy, attention forward and backward) are built on it with a kernel API in the spirit of NKI.

On top, a training planner reads models as Hugging Face config.json, chips from a sourced catalog
(Trainium, Inferentia2, NVIDIA A100-GB200, TPU v5e-v7) and their cluster topologies, searches
parallel plans and predicts step time, memory, MFU, cost, energy and goodput (train, compare).";

const AFTER_HELP: &str = "Examples:
  rainier compare                                llama3-70b, 15T tokens, 1,024 chips of every kind, side by side
  rainier compare --model llama3.1-405b --chips 16384 --tokens 15T --pricing committed
  rainier train --model llama3.1-405b --chip trn2 --chips 500000 --seq 8192 --global-batch 16384 --search
  rainier train --model llama3-70b --chip h100 --chips 1024 --seq 8192 --global-batch 2048 --tp 8 --pp 4 --dp 32
  rainier chips --chip trn2u                     every figure of a chip with its source
  rainier demo                                   run the example programs on random inputs and check them
  rainier sim examples/asm/matmul.asm --chip trn2 --input a=a.npy --input b=b.npy --output c=c.npy
  rainier sim examples/asm/softmax.asm --chip trn1 --input x=x.npy --json
  rainier sim examples/asm/mm_stream.asm --chip trn2 --no-values --trace mm.json   time only, Perfetto trace
  rainier kernel gemm --m 1024 --n 1024 --k 1024 --dtype bf16 --chip trn2 --check
  rainier verify my_kernel.asm --chip trn3       list every rule the program breaks
  rainier arch --chip trn2                       NeuronCore parameters with their sources
  rainier isa                                    the instruction reference (docs/isa.md)

Exit codes: 0 success; 1 bad input (a value, file, model or chip); 2 usage (an unknown flag, a
missing or malformed value); 3 no plan (the request is valid but does not fit in memory or meets
no SLO). Errors are one `error:` line on stderr; under --json, one JSON object
{\"error\": {\"kind\": \"input\"|\"usage\"|\"no_plan\", \"message\", \"field\"}} instead.";

#[derive(Parser, Debug)]
#[command(name = "rainier", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the example programs (matmul, softmax) on fresh random inputs on a simulated
    /// NeuronCore and check the results against a host computation.
    Demo {
        /// Chip to simulate: trn1, inf2, trn2, trn3.
        #[arg(long, default_value = "trn2")]
        chip: Chip,
        /// Seed of the random inputs (default: 2026, so runs repeat).
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// Run an assembly program on a simulated NeuronCore: the values the hardware computes and
    /// how long it takes (engine timelines, DMA, semaphore and resource stalls).
    Sim {
        /// The program (.asm; `-` reads standard input); see docs/assembly.md.
        program: PathBuf,
        /// Chip to simulate: trn1, inf2, trn2, trn3.
        #[arg(long)]
        chip: Chip,
        /// An input tensor: NAME=FILE.npy (float32, float16, int32 or uint8, C order), whose
        /// dtype and shape match the program's `hbm NAME: ... input` declaration. Repeat per input.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Write an output tensor: NAME=FILE.npy (`NAME=-`: to standard output, the report then
        /// on standard error). Repeat per output. Without it, a summary of every output is
        /// printed.
        #[arg(long = "output", value_name = "NAME=FILE.npy")]
        outputs: Vec<String>,
        /// Print a JSON report instead of text: time_ns, per-engine busy_ns, instructions,
        /// utilization and stalls, DMA bytes and busy_ns, the bottleneck, output summaries.
        #[arg(long)]
        json: bool,
        /// Model time only, without computing values (for large programs; no inputs needed).
        #[arg(long)]
        no_values: bool,
        /// Write a Chrome/Perfetto trace: one track per engine and DMA engine, one slice per
        /// instruction with its operands, shapes and cycles or bytes (`-`: to standard output,
        /// the report then on standard error).
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Build a library kernel, time it on one simulated NeuronCore and optionally check it on
    /// fresh random inputs against the f64 reference.
    Kernel {
        #[command(subcommand)]
        kernel: KernelCommand,
    },
    /// Check a program against a chip's rules without running it; lists every violation.
    Verify {
        /// The program (.asm; `-` reads standard input).
        program: PathBuf,
        #[arg(long)]
        chip: Chip,
    },
    /// Print a program in canonical form (what the parser understood).
    Fmt {
        /// The program (.asm; `-` reads standard input).
        program: PathBuf,
    },
    /// Show a chip's NeuronCore parameters, each with its source and grade.
    Arch {
        #[arg(long)]
        chip: Chip,
        #[arg(long)]
        json: bool,
    },
    /// Print the instruction-set reference in Markdown (the content of docs/isa.md).
    Isa,
    /// Print a shell completion script: `rainier completions bash > /etc/bash_completion.d/rainier`
    /// (zsh: into a directory on $fpath as _rainier; fish: ~/.config/fish/completions/rainier.fish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `rainier man > rainier.1 && man ./rainier.1`.
    Man,
    /// Predict one training step of a model on a cluster: step time, tokens/s, MFU, memory per
    /// device and where the time goes (compute, exposed communication, pipeline bubble,
    /// optimizer). Without --tp/--pp/--dp, Rainier chooses a plan and says which.
    Train(plan::TrainArgs),
    /// List the hardware catalog: chips, nodes, networks, prices and power, with sources.
    Chips(plan::ChipsArgs),
    /// List the model presets with their layers, attention, experts, parameters (total and
    /// active per token) and KV cache per token; --model describes one preset, config.json
    /// or Hugging Face snapshot directory instead.
    Models {
        /// A preset name, a config.json, or a directory holding one.
        #[arg(long)]
        model: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Plan the same training job on every chip kind in the catalog, each with its own best
    /// plan (a full search), and print time to train, MFU, $/M tokens, total cost, energy,
    /// facility power and goodput side by side with the price sources. With no arguments:
    /// llama3-70b, 15T tokens, 1,024 chips of each kind.
    Compare(compare::CompareArgs),
    /// What a datacenter site of a given power holds of one chip kind (chips, nodes,
    /// scale-up domains, at each chip's all-in draw times the PUE) and the largest training
    /// job it runs: the best plan on the whole site, tokens/s, days to train, goodput and
    /// failures a day at that scale, idle chips and why, cost and energy per year. With no
    /// arguments: 1,000 MW of trn2 training llama3.1-405b on 15T tokens.
    Site(site::SiteArgs),
    /// Predict inference serving of a model on a cluster: TTFT, TPOT and throughput of a
    /// static batch, continuous batching at the highest-throughput concurrency the KV cache holds and
    /// the SLO allows, memory per device, $ per million output tokens and joules per token.
    /// --search finds the cheapest plan and concurrency that meets the SLO.
    Serve(serve::ServeArgs),
    /// Predict every point of the committed validation dataset (published training and
    /// serving runs) and report predicted vs measured, the error, its median and maximum; then
    /// run the published command-form cases (each a `rainier train|serve` command, its JSON
    /// field and the measured value; training cases also by plan search) and report each
    /// family's median and maximum error.
    Validate {
        /// Print JSON (the published commands under "commands").
        #[arg(long)]
        json: bool,
        /// NeuronCore training costs: the op tables (the default), a roofline, or the
        /// simulated decoder-layer programs (Trainium command cases then skip the search).
        #[arg(long, value_enum, default_value = "tables")]
        neuron_costs: plan::NeuronCostsArg,
    },
    /// Run a scenario file: the command it names (train, serve, compare or site) with its
    /// flags, then the FLAGS given here, which override the file's. A scenario is TOML:
    /// `command = "train"`, one key per flag (`model = "llama3-70b"`, `global-batch = 1024`,
    /// `json = true`) and `[[patch]]` tables for what-if chips (`chip = "trn2"`,
    /// `as = "trn2-2xbw"`, `set = { hbm_bytes_per_s = 5.8e12 }`). `--dump-scenario` on any of
    /// those commands writes the scenario its command line means.
    Run {
        /// The scenario (TOML).
        file: PathBuf,
        /// Flags overriding the file's.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KernelCommand {
    /// c[M, N] = aᵀ·b for a [K, M], b [K, N] (fp32 output), any sizes.
    Gemm {
        #[arg(long)]
        m: u64,
        #[arg(long)]
        n: u64,
        #[arg(long)]
        k: u64,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// One tensor-parallel rank's decoder layer forward (or --backward) as one program of the
    /// library kernels (rmsnorm, QKV, rope, causal attention, O projection, residual, rmsnorm,
    /// SwiGLU MLP, residual), so the timing model overlaps each kernel with the next; also
    /// times the same kernels one after another.
    Layer {
        #[command(flatten)]
        shape: kernel::LayerArgs,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// Flash attention forward: q, k [heads, head_dim, seq], v [kv_heads, seq, head_dim].
    Attention {
        #[command(flatten)]
        shape: kernel::AttentionArgs,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// Flash attention backward: q, o, dout [heads, head_dim, seq], k, v [kv_heads, head_dim,
    /// seq], lse [heads, seq] fp32 -> dq [heads, seq, head_dim], dk, dv [kv_heads, seq,
    /// head_dim].
    AttentionBwd {
        #[command(flatten)]
        shape: kernel::AttentionArgs,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// y = x / sqrt(mean(x²) + 1e-6) · w along each row of x [rows, cols].
    Rmsnorm {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// y = softmax(x) along each row of x [rows, cols] (row max subtracted).
    Softmax {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// y = (x - mean) / sqrt(var + 1e-5) · w + b along each row of x [rows, cols].
    Layernorm {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// Rotary embedding of one head, x [rows (positions), cols (head dim, even)], as Hugging
    /// Face applies it (cos/sin inputs hold each frequency twice).
    Rope {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// y = gelu(x) (erf form), elementwise over [rows, cols].
    Gelu {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// y = silu(gate) · up, elementwise over [rows, cols].
    Swiglu {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// Sweep every kernel over transformer-layer shapes on one chip and write the op-cost table
    /// (DIR/CHIP.csv) and the raw runs (DIR/CHIP.runs.json); --chip all writes every chip's.
    Table {
        /// trn1, inf2, trn2, trn3, trn4 (the built-in what-if, from the catalog) or all.
        #[arg(long, default_value = "all")]
        chip: String,
        /// Output directory.
        #[arg(long, default_value = "tables")]
        out: PathBuf,
    },
    /// Softmax cross-entropy over a vocabulary: loss and log-sum-exp per row (forward), or the
    /// gradient softmax - onehot (--backward); logits [rows, vocab], int32 targets [rows].
    CrossEntropy {
        #[arg(long)]
        rows: u64,
        #[arg(long)]
        vocab: u64,
        /// The backward kernel (gradient of each row's loss) instead of the forward one.
        #[arg(long)]
        backward: bool,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// One AdamW step (PyTorch defaults) over fp32 parameters, gradients and moments.
    Adamw {
        /// Number of parameters.
        #[arg(long)]
        params: u64,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
    /// y = x + residual, elementwise over [rows, cols].
    ResidualAdd {
        #[command(flatten)]
        shape: kernel::RowsCols,
        #[command(flatten)]
        opts: kernel::KernelOpts,
    },
}

/// `text` with control characters other than newline and tab escaped (`\u{1b}`), so an error
/// that quotes bad input cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What a command line asks for, once parsed.
enum Parsed {
    /// Run this command.
    Run(Box<Cli>),
    /// Print this scenario (`--dump-scenario`).
    Scenario(String),
}

/// Why a command line could not be parsed.
enum ParseFailure {
    /// A scenario file that cannot be read (bad input).
    Scenario(anyhow::Error),
    /// A command line clap refuses, or `--help` / `--version`.
    Clap(clap::Error),
}

/// Parses `argv` (program name first), scenario files expanded, and says whether `--json`
/// was asked for (by the command line or its scenario).
fn parse(argv: Vec<std::ffi::OsString>) -> (Result<Parsed, ParseFailure>, bool) {
    let early_json = argv.iter().skip(1).any(|a| a == "--json");
    let mut command = scenario::overriding(<Cli as clap::CommandFactory>::command());
    let argv = match scenario::expand(argv, &command) {
        Ok(argv) => argv,
        Err(e) => return (Err(ParseFailure::Scenario(e)), early_json),
    };
    let json = argv.iter().skip(1).any(|a| a == "--json");
    let matches = match command.try_get_matches_from_mut(argv) {
        Ok(matches) => matches,
        Err(e) => return (Err(ParseFailure::Clap(e)), json),
    };
    if let Some(text) = scenario::dump(&command, &matches) {
        return (Ok(Parsed::Scenario(text)), json);
    }
    let parsed = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
        .map(|cli| Parsed::Run(Box::new(cli)))
        .map_err(ParseFailure::Clap);
    (parsed, json)
}

/// The `rainier` binary: parses the process's arguments, runs the command, prints, exits.
pub fn main() -> ExitCode {
    // Under --json, errors are JSON too (on stderr), for programs that read the output.
    let (parsed, json) = parse(std::env::args_os().collect());
    let result = match parsed {
        Ok(Parsed::Scenario(text)) => {
            out(text.trim_end());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(cli)) => run(*cli),
        Err(ParseFailure::Clap(e)) if !(json && e.use_stderr()) => e.exit(),
        Err(ParseFailure::Clap(e)) => {
            let (message, field) = clap_message(&e);
            return report_error(true, ErrorKind::Usage, &message, field);
        }
        Err(ParseFailure::Scenario(e)) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (kind, field) = classify(&e);
            report_error(json, kind, &printable(&format!("{e:#}")), field)
        }
    }
}

thread_local! {
    /// Where [`out`] writes while [`run_captured`] runs a command on this thread.
    static CAPTURE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A command that failed, as `--json` reports it: the kind (`input`, `usage`, `no_plan`), the
/// field at fault where one is known, and the one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub kind: &'static str,
    pub field: Option<String>,
    pub message: String,
}

/// Runs one command line (`args` without the program name) in this process and returns what
/// the binary would print on standard output, or the error it would report. Scenario files
/// and `--dump-scenario` work as on the command line; `--help` returns the help text.
pub fn run_captured(args: &[String]) -> Result<String, CommandError> {
    let argv = std::iter::once("rainier".into()).chain(args.iter().map(Into::into)).collect();
    let failed = |kind: ErrorKind, field, message: String| CommandError {
        kind: kind.name(),
        field,
        message: printable(&message),
    };
    let cli = match parse(argv).0 {
        Ok(Parsed::Scenario(text)) => return Ok(text),
        Ok(Parsed::Run(cli)) => cli,
        Err(ParseFailure::Clap(e)) if !e.use_stderr() => return Ok(e.to_string()),
        Err(ParseFailure::Clap(e)) => {
            let (message, field) = clap_message(&e);
            return Err(failed(ErrorKind::Usage, field, message));
        }
        Err(ParseFailure::Scenario(e)) => {
            return Err(failed(ErrorKind::Input, None, format!("{e:#}")))
        }
    };
    CAPTURE.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = run(*cli);
    let text = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    result.map(|()| text).map_err(|e| {
        let (kind, field) = classify(&e);
        failed(kind, field, format!("{e:#}"))
    })
}

/// The first line of a clap error and the flag it names (`--tokens <TOKENS>` names the field
/// `tokens`).
fn clap_message(e: &clap::Error) -> (String, Option<String>) {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let field = e.get(clap::error::ContextKind::InvalidArg).and_then(|a| {
        let a = a.to_string();
        let name = a.trim_start_matches('-').split([' ', '=']).next()?.to_string();
        (!name.is_empty()).then_some(name)
    });
    (message, field)
}

/// What went wrong, as programs see it: the `kind` of a JSON error and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// Bad input: a value, a file, a model, a chip (exit 1).
    Input,
    /// The command line itself: an unknown flag, a missing value (exit 2, as clap exits).
    Usage,
    /// Valid input for which no plan exists: it does not fit in memory or meets no SLO (exit 3).
    NoPlan,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::Usage => "usage",
            ErrorKind::NoPlan => "no_plan",
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Input => 1,
            ErrorKind::Usage => 2,
            ErrorKind::NoPlan => 3,
        }
    }
}

/// A valid request with no plan that runs it (the message says what was closest).
#[derive(Debug)]
pub(crate) struct NoPlan(pub(crate) String);

impl std::fmt::Display for NoPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoPlan {}

/// The kind of an error and the input field it names, where one is known: the planner's
/// typed errors name theirs; otherwise the first `--flag` of the message.
fn classify(e: &anyhow::Error) -> (ErrorKind, Option<String>) {
    use rainier_plan::PlanError;
    let no_plan = e.chain().any(|c| {
        c.is::<NoPlan>() || matches!(c.downcast_ref::<PlanError>(), Some(PlanError::NoPlan(_)))
    });
    let typed = e.chain().find_map(|c| match c.downcast_ref::<PlanError>()? {
        PlanError::NotPositive { name, .. } | PlanError::TooLarge { name, .. } => {
            Some((*name).to_string())
        }
        PlanError::SeqTooLong { .. } => Some("seq".into()),
        PlanError::Zero(_) => Some("zero".into()),
        PlanError::Lnc(_) => Some("lnc".into()),
        PlanError::TooManyStages { .. } => Some("pp".into()),
        _ => None,
    });
    // A chip or a model that cannot be had names its flag; so does a bad patch or catalog.
    let typed = typed.or_else(|| {
        e.chain().find_map(|c| {
            if c.is::<rainier_model::ModelError>() {
                return Some("model".to_string());
            }
            match c.downcast_ref::<rainier_hw::HwError>()? {
                rainier_hw::HwError::UnknownChip { .. } => Some("chip".into()),
                rainier_hw::HwError::Invalid { file, .. } if file == "--patch" => {
                    Some("patch".into())
                }
                _ => Some("catalog".into()),
            }
        })
    });
    let flag = || {
        let message = e.to_string();
        let at = message.find("--")?;
        let name: String = message[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (!name.is_empty()).then_some(name)
    };
    if no_plan {
        // Its message suggests flags; no one input is wrong.
        return (ErrorKind::NoPlan, None);
    }
    (ErrorKind::Input, typed.or_else(flag))
}

/// Prints an error (one `error:` line, or under --json one JSON object
/// `{"error": {"kind", "message", "field"}}`) on stderr and returns its exit code.
fn report_error(json: bool, kind: ErrorKind, message: &str, field: Option<String>) -> ExitCode {
    let text = if json {
        let error = serde_json::json!({ "kind": kind.name(), "message": message, "field": field });
        serde_json::json!({ "error": error }).to_string()
    } else {
        format!("error: {}", message.trim_end())
    };
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{text}");
    }
    ExitCode::from(kind.exit_code())
}

/// An impossible result (infinite or NaN) is an error, never a report.
fn ensure_finite(figures: &[(&str, f64)]) -> anyhow::Result<()> {
    for &(what, v) in figures {
        if !v.is_finite() {
            anyhow::bail!(
                "the predicted {what} is {v}: an input (a catalog figure, a model dimension) makes the result impossible"
            );
        }
    }
    Ok(())
}

/// Version of every JSON output's schema: bumped when a field is renamed, removed or changes
/// meaning (adding a field does not bump it).
const SCHEMA_VERSION: u32 = 1;

/// `body` as a JSON object with `key` added.
pub(crate) fn with_field(
    body: &impl serde::Serialize,
    key: &str,
    value: &impl serde::Serialize,
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(body)?;
    if let Some(o) = v.as_object_mut() {
        o.insert(key.into(), serde_json::to_value(value)?);
    }
    Ok(v)
}

/// Prints `body` (a JSON object) as pretty JSON with, first, `schema` (`{name: "rainier.NAME",
/// version}`) and `rainier` (`{version, commit}`: the tool and the git commit it was built
/// from). `schemas.rs` describes the same envelope for the JSON Schemas.
pub(crate) fn out_json(name: &str, body: &impl serde::Serialize) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Schema {
        name: String,
        version: u32,
    }
    #[derive(serde::Serialize)]
    struct Tool {
        version: &'static str,
        commit: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Envelope<'a, T: serde::Serialize> {
        schema: Schema,
        rainier: Tool,
        #[serde(flatten)]
        body: &'a T,
    }
    let envelope = Envelope {
        schema: Schema { name: format!("rainier.{name}"), version: SCHEMA_VERSION },
        rainier: Tool { version: env!("CARGO_PKG_VERSION"), commit: env!("RAINIER_GIT_COMMIT") },
        body,
    };
    out(&serde_json::to_string_pretty(&envelope)?);
    Ok(())
}

/// Prints to stdout (the one place the CLI does so). A reader that stops early (`| head`)
/// ends the program quietly and successfully, as Unix tools do; any other write failure is a
/// one-line error.
fn out(text: &str) {
    use std::io::Write;
    let captured = CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        c.as_mut().map(|buffer| {
            buffer.push_str(text);
            buffer.push('\n');
        })
    });
    if captured.is_some() {
        return;
    }
    if STDOUT_TAKEN.load(std::sync::atomic::Ordering::SeqCst) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{text}");
        }
        return;
    }
    if let Err(e) = writeln!(std::io::stdout().lock(), "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: cannot write to standard output: {e}");
        }
        std::process::exit(1);
    }
}

/// A progress bar on standard error, drawn only when it is a terminal.
fn progress_bar(message: &'static str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} {elapsed}")
    {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

/// Reads and parses a program; `-` reads standard input.
fn load_program(path: &Path) -> Result<Program> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the program from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    rainier_isa::parse(&text)
        .map_err(|e| anyhow!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message))
}

fn split_binding(arg: &str, flag: &str) -> Result<(String, PathBuf)> {
    let (name, file) = arg
        .split_once('=')
        .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        .ok_or_else(|| anyhow!("{flag} '{arg}' must be NAME=FILE.npy"))?;
    Ok((name.to_string(), PathBuf::from(file)))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { chip, seed } => demo::run(chip, seed),
        Command::Sim { program, chip, inputs, outputs, json, no_values, trace } => {
            sim(&SimRequest {
                path: &program,
                chip,
                inputs: &inputs,
                outputs: &outputs,
                json,
                no_values,
                trace: trace.as_deref(),
            })
        }
        Command::Kernel { kernel } => match kernel {
            KernelCommand::Gemm { m, n, k, opts } => kernel::gemm(m, n, k, &opts),
            KernelCommand::Rmsnorm { shape, opts } => {
                kernel::rmsnorm(shape.rows, shape.cols, &opts)
            }
            KernelCommand::Softmax { shape, opts } => {
                kernel::softmax(shape.rows, shape.cols, &opts)
            }
            KernelCommand::Layernorm { shape, opts } => {
                kernel::rowwise(kernel::Rowwise::Layernorm, &shape, &opts)
            }
            KernelCommand::Gelu { shape, opts } => {
                kernel::rowwise(kernel::Rowwise::Gelu, &shape, &opts)
            }
            KernelCommand::Rope { shape, opts } => {
                kernel::rowwise(kernel::Rowwise::Rope, &shape, &opts)
            }
            KernelCommand::Swiglu { shape, opts } => {
                kernel::rowwise(kernel::Rowwise::Swiglu, &shape, &opts)
            }
            KernelCommand::Adamw { params, opts } => kernel::adamw(params, &opts),
            KernelCommand::CrossEntropy { rows, vocab, backward, opts } => {
                kernel::cross_entropy(rows, vocab, backward, &opts)
            }
            KernelCommand::Table { chip, out } => table::write_named(&chip, &out),
            KernelCommand::Attention { shape, opts } => kernel::attention(&shape, &opts),
            KernelCommand::Layer { shape, opts } => kernel::layer(&shape, &opts),
            KernelCommand::AttentionBwd { shape, opts } => kernel::attention_bwd(&shape, &opts),
            KernelCommand::ResidualAdd { shape, opts } => {
                kernel::rowwise(kernel::Rowwise::ResidualAdd, &shape, &opts)
            }
        },
        Command::Verify { program, chip } => {
            let p = load_program(&program)?;
            check_hbm_capacity(&program, &p, chip)?;
            rainier_isa::verify(&p, &chip.params().core)
                .map_err(|v| anyhow!("{}: {v}", program.display()))?;
            out(&format!(
                "{}: ok ({} instructions, {} on {chip})",
                program.display(),
                p.instructions.len(),
                chip.params().core.generation
            ));
            Ok(())
        }
        Command::Fmt { program } => {
            let p = load_program(&program)?;
            out(p.to_string().trim_end());
            Ok(())
        }
        Command::Arch { chip, json } => arch(chip, json),
        Command::Isa => {
            out(rainier_isa::isa_markdown().trim_end());
            Ok(())
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "rainier",
                &mut script,
            );
            out(String::from_utf8_lossy(&script).trim_end());
            Ok(())
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            out(String::from_utf8_lossy(&page).trim_end());
            Ok(())
        }
        Command::Train(args) => plan::train(&args),
        Command::Chips(args) => plan::chips(&args),
        Command::Models { model, json } => models::run(model.as_deref(), json),
        Command::Compare(args) => compare::run(&args),
        Command::Site(args) => site::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Validate { json, neuron_costs } => plan::validate_cmd(json, neuron_costs),
        // `scenario::expand` rewrites `rainier run FILE ...` before parsing; only a command
        // line with a flag before the file gets here.
        Command::Run { file, flags } => {
            bail!("the scenario comes first: rainier run {} {}", file.display(), flags.join(" "))
        }
    }
}

/// What `rainier sim` was asked to do.
struct SimRequest<'a> {
    path: &'a Path,
    chip: Chip,
    inputs: &'a [String],
    outputs: &'a [String],
    json: bool,
    no_values: bool,
    trace: Option<&'a Path>,
}

/// The program's HBM tensors must fit in one chip's HBM.
fn check_hbm_capacity(path: &Path, program: &rainier_isa::Program, chip: Chip) -> Result<()> {
    let bytes = program.hbm_bytes();
    let capacity = chip.params().hbm_bytes.value;
    if bytes > capacity {
        bail!(
            "{}: the HBM tensors take {:.1} GiB, more than the HBM of one {chip} chip ({:.1} GiB)",
            path.display(),
            bytes as f64 / (1u64 << 30) as f64,
            capacity as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

fn sim(req: &SimRequest<'_>) -> Result<()> {
    let (path, chip) = (req.path, req.chip);
    let program = load_program(path)?;
    check_hbm_capacity(path, &program, chip)?;
    if req.no_values && !(req.inputs.is_empty() && req.outputs.is_empty()) {
        bail!("--no-values models time only: drop --input/--output, or drop --no-values to compute values");
    }
    let mut given = BTreeMap::new();
    for arg in req.inputs {
        let (name, file) = split_binding(arg, "--input")?;
        let f = std::fs::File::open(&file)
            .with_context(|| format!("--input {name}: cannot open {}", file.display()))?;
        let t = npy::read(std::io::BufReader::new(f))
            .with_context(|| format!("--input {name}: {}", file.display()))?;
        if given.insert(name.clone(), t).is_some() {
            bail!("--input {name} is given twice");
        }
    }
    let mut wanted = Vec::new();
    for arg in req.outputs {
        let (name, file) = split_binding(arg, "--output")?;
        // Bad outputs are errors before the simulation, not after it.
        let outputs: Vec<&str> = program
            .tensors
            .iter()
            .filter(|t| t.kind == rainier_isa::TensorKind::Output)
            .map(|t| t.name.as_str())
            .collect();
        if !outputs.contains(&name.as_str()) {
            bail!(
                "--output {name}: the program has no output tensor '{name}' (outputs: {})",
                outputs.join(", ")
            );
        }
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            bail!("--output {name}: the folder of {} does not exist", file.display());
        }
        wanted.push((name, file));
    }
    one_stdout(wanted.iter().map(|(_, f)| f.as_path()).chain(req.trace))?;
    let params = chip.params();
    let values = (!req.no_values).then_some(&given);
    let report = rainier_timesim::simulate(&program, &params, values, req.trace.is_some())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for (name, file) in &wanted {
        let t = report.outputs.get(name).ok_or_else(|| {
            let names: Vec<&str> = report.outputs.keys().map(String::as_str).collect();
            anyhow!(
                "--output {name}: the program has no output tensor '{name}' (outputs: {})",
                names.join(", ")
            )
        })?;
        write_npy(t, file).with_context(|| format!("--output {name}: {}", file.display()))?;
    }
    if let Some(trace) = req.trace {
        write_trace(trace, &program, &params, &report)?;
    }
    if req.json {
        let mut v = report::timing_json(&report, &params, path);
        let outs: serde_json::Map<String, serde_json::Value> =
            report.outputs.iter().map(|(n, t)| (n.clone(), summary_json(t))).collect();
        v["outputs"] = serde_json::Value::Object(outs);
        out_json("sim", &v)?;
    } else {
        out(report::timing_text(&report, &params, path).trim_end());
        for (name, t) in &report.outputs {
            let written =
                wanted.iter().find(|(n, _)| n == name).map(|(_, f)| format!(" -> {}", f.display()));
            out(&format!("  output {name}: {}{}", summary_text(t), written.unwrap_or_default()));
        }
        if let Some(trace) = req.trace {
            out(&format!(
                "  trace: {} (open in https://ui.perfetto.dev or chrome://tracing)",
                trace.display()
            ));
        }
    }
    Ok(())
}

/// Set once an output goes to standard output (a file named `-`): the report then goes to
/// standard error, so the data stays clean.
static STDOUT_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `file` means standard output.
fn is_stdout(file: &Path) -> bool {
    file.as_os_str() == "-"
}

/// A buffered writer to `file`, or to standard output for `-` (the report moves to stderr).
fn create_output(file: &Path) -> std::io::Result<Box<dyn std::io::Write>> {
    if is_stdout(file) {
        if CAPTURE.with(|c| c.borrow().is_some()) {
            return Err(std::io::Error::other("`-` (standard output) is for the command line"));
        }
        STDOUT_TAKEN.store(true, std::sync::atomic::Ordering::SeqCst);
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    Ok(Box::new(std::io::BufWriter::new(std::fs::File::create(file)?)))
}

/// At most one output of a command may be standard output.
fn one_stdout<'a>(files: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    if files.into_iter().filter(|f| is_stdout(f)).count() > 1 {
        bail!("only one output can be `-` (standard output)");
    }
    Ok(())
}

/// Streams the Perfetto trace of `report` to `file` (`-`: standard output).
fn write_trace(
    file: &Path,
    program: &Program,
    params: &rainier_arch::ChipParams,
    report: &rainier_timesim::Report,
) -> Result<()> {
    use std::io::Write as _;
    let cannot = || format!("--trace: cannot write {}", file.display());
    let mut w = create_output(file).with_context(cannot)?;
    rainier_timesim::write_chrome_trace(program, params, report, &mut w).with_context(cannot)?;
    w.flush().with_context(cannot)
}

/// Writes `t` as `.npy` (`-`: standard output); dtypes NumPy has no type for are written as
/// float32, converted while streaming (no widened copy in memory).
fn write_npy(t: &HostTensor, file: &Path) -> Result<()> {
    let mut w = create_output(file).with_context(|| format!("cannot create {}", file.display()))?;
    if npy::descr_of(t.dtype).is_some() {
        npy::write(t, &mut w)?;
    } else {
        npy::write_f32(t, &mut w)?;
    }
    std::io::Write::flush(&mut w)?;
    Ok(())
}

/// Min, max and mean, read element by element (no widened copy: a 1 GiB u8 output needed
/// 4 GiB more for its summary).
fn stats(t: &HostTensor) -> (f64, f64, f64) {
    let (mut lo, mut hi, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for b in t.data.chunks_exact(t.dtype.size_bytes().max(1)) {
        let x = f64::from(t.dtype.load(b));
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x;
        n += 1;
    }
    (lo, hi, sum / n.max(1) as f64)
}

fn shape_text(shape: &[usize]) -> String {
    let s: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", s.join(", "))
}

fn summary_text(t: &HostTensor) -> String {
    let (lo, hi, mean) = stats(t);
    format!("{}{} min {lo:.6} max {hi:.6} mean {mean:.6}", t.dtype, shape_text(&t.shape))
}

fn summary_json(t: &HostTensor) -> serde_json::Value {
    let (lo, hi, mean) = stats(t);
    serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "min": lo, "max": hi, "mean": mean })
}

fn arch(chip: Chip, json: bool) -> Result<()> {
    let p = chip.params();
    let rows = p.provenance();
    if json {
        let params: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|r| {
                (r.name.to_string(), serde_json::json!({ "value": r.value, "source": r.source, "grade": r.grade.to_string() }))
            })
            .collect();
        let report = serde_json::json!({ "chip": chip.name(), "name": p.marketing_name, "generation": p.core.generation.to_string(), "parameters": params });
        out_json("arch", &report)?;
        return Ok(());
    }
    out(&format!(
        "{} ({}), {} x {}",
        chip.name(),
        p.marketing_name,
        p.cores_per_chip.value,
        p.core.generation
    ));
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in rows {
        out(&format!("  {:width$}  {:>14}  [{}] {}", r.name, r.value, r.grade, r.source));
    }
    Ok(())
}

/// Deterministic random tensor for the demo and tests.
fn random_tensor(rng: &mut rand::rngs::StdRng, shape: &[usize], lo: f32, hi: f32) -> HostTensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    HostTensor::from_f32(DType::F32, shape, &v)
}

fn seeded(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}
