//! The sweep: the library kernels over the shapes transformer layers use, each timed on one
//! simulated NeuronCore. Deterministic: the same code and parameters give the same bytes
//! (cases run in parallel; rows are written in case order).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use rainier_arch::ChipParams;
use rainier_isa::{Engine, Program};
use rainier_kernels::{AdamW, AttentionShape, KernelError};
use rainier_tensor::DType;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::TableError;

/// Builds one case's program for the given parameters.
type Build = dyn Fn(&ChipParams) -> Result<Program, KernelError> + Send + Sync;

/// One sweep point.
struct Case {
    kernel: &'static str,
    dtype: DType,
    /// Shape as `key=value` pairs, in a fixed order.
    shape: Vec<(&'static str, u64)>,
    flops: f64,
    build: Box<Build>,
}

/// GEMM widths of the sweep (`n` and `k`, each): powers of two from a high-TP shard (Llama-3 70B
/// at TP 32: out_proj k = 256, qkv n = 320) to an unsharded MLP (16384).
pub const GEMM_WIDTHS: [u64; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];
/// GEMM token counts (`m`) of the sweep, from a decode batch to a training micro-batch.
pub const GEMM_TOKENS: [u64; 3] = [128, 512, 2048];
/// Decode token counts (`m` below 128: one sequence to a small decode batch), swept for bf16
/// and fp8; the MX path needs an even `m` of at least 128 in the tables.
pub const GEMM_DECODE_TOKENS: [u64; 3] = [1, 8, 32];

/// Every kernel at the shapes transformer layers use: GEMMs on the full `m × n × k` grid
/// above (the planner interpolates in it), writing bf16 as a layer's GEMMs do; the rest at the hidden sizes of common models
/// (Llama-3 8B 4096, 70B 8192).
fn cases(chip: &ChipParams) -> Vec<Case> {
    let mut v = Vec::new();
    let bf16 = DType::Bf16;
    // bf16, then fp8 (e4m3: double row on NeuronCore-v3/v4, the bf16 rate on v2), then on
    // NeuronCore-v4 MXFP8 (e4m3fn) and MXFP4 with offline-quantized inputs.
    let mut gemm_dtypes = vec![bf16, DType::Fp8E4m3];
    if chip.core.generation >= rainier_arch::Generation::V4 {
        gemm_dtypes.extend([DType::Fp8E4m3fnx4, DType::Fp4E2m1fnx4]);
    }
    for dtype in gemm_dtypes {
        let decode: &[u64] = if dtype.is_packed() { &[] } else { &GEMM_DECODE_TOKENS };
        for tokens in decode.iter().copied().chain(GEMM_TOKENS) {
            for (n, k) in GEMM_WIDTHS.iter().flat_map(|&n| GEMM_WIDTHS.map(|k| (n, k))) {
                v.push(Case {
                    kernel: "gemm",
                    dtype,
                    shape: vec![("m", tokens), ("n", n), ("k", k)],
                    flops: 2.0 * (tokens * n * k) as f64,
                    build: Box::new(move |c| {
                        rainier_kernels::gemm_to(c, tokens, n, k, dtype, bf16)
                    }),
                });
            }
        }
    }
    type RowwiseFn = fn(&ChipParams, u64, u64, DType) -> Result<Program, KernelError>;
    let rowwise: [(&'static str, RowwiseFn, f64); 6] = [
        ("rmsnorm", |c, r, k, d| rainier_kernels::rmsnorm(c, r, k, d), 4.0),
        ("layernorm", |c, r, k, d| rainier_kernels::layernorm(c, r, k, d), 8.0),
        ("softmax", |c, r, k, d| rainier_kernels::softmax(c, r, k, d), 5.0),
        ("gelu", |c, r, k, d| rainier_kernels::gelu(c, r, k, d), 8.0),
        ("swiglu", |c, r, k, d| rainier_kernels::swiglu(c, r, k, d), 5.0),
        ("residual-add", |c, r, k, d| rainier_kernels::residual_add(c, r, k, d), 1.0),
    ];
    for (name, f, per) in rowwise {
        for rows in [512u64, 4096] {
            for cols in [4096u64, 8192] {
                v.push(Case {
                    kernel: name,
                    dtype: bf16,
                    shape: vec![("rows", rows), ("cols", cols)],
                    flops: per * (rows * cols) as f64,
                    build: Box::new(move |c| f(c, rows, cols, bf16)),
                });
            }
        }
    }
    for rows in [512u64, 4096] {
        v.push(Case {
            kernel: "rope",
            dtype: bf16,
            shape: vec![("rows", rows), ("cols", 128)],
            flops: 3.0 * (rows * 128) as f64,
            build: Box::new(move |c| rainier_kernels::rope(c, rows, 128, bf16)),
        });
    }
    for (rows, vocab) in [(512u64, 32000u64), (512, 128256)] {
        for backward in [false, true] {
            v.push(Case {
                kernel: if backward { "cross-entropy-backward" } else { "cross-entropy" },
                dtype: bf16,
                shape: vec![("rows", rows), ("vocab", vocab)],
                flops: if backward { 3.0 } else { 5.0 } * (rows * vocab) as f64,
                build: Box::new(move |c| {
                    if backward {
                        rainier_kernels::cross_entropy_backward(c, rows, vocab, bf16)
                    } else {
                        rainier_kernels::cross_entropy(c, rows, vocab, bf16)
                    }
                }),
            });
        }
    }
    for params in [1u64 << 20, 1 << 24] {
        v.push(Case {
            kernel: "adamw",
            dtype: DType::F32,
            shape: vec![("params", params)],
            flops: 11.0 * params as f64,
            build: Box::new(move |c| rainier_kernels::adamw(c, params, &AdamW::default())),
        });
    }
    // Attention forward and backward at head dim 128 over sequences 1K-32K and at head dim 64
    // at 1K, 4K, 16K and 32K (the non-causal backward to 16K: at 32K it alone would double the
    // sweep); the planners read the causal head-dim-128 curves.
    let d128: &[u64] = &[1024, 2048, 4096, 8192, 16384, 32768];
    for (head_dim, seqs) in [(64u64, &[1024u64, 4096, 16384, 32768][..]), (128, d128)] {
        for &seq in seqs {
            for causal in [false, true] {
                let s = AttentionShape { batch: 1, heads: 1, kv_heads: 1, seq, head_dim, causal };
                let shape =
                    vec![("seq", seq), ("head_dim", head_dim), ("causal", u64::from(causal))];
                v.push(Case {
                    kernel: "attention",
                    dtype: bf16,
                    shape: shape.clone(),
                    flops: s.flops(),
                    build: Box::new(move |c| rainier_kernels::attention(c, &s, bf16)),
                });
                if causal || seq <= 16384 {
                    v.push(Case {
                        kernel: "attention-bwd",
                        dtype: bf16,
                        shape,
                        flops: 2.5 * s.flops(),
                        build: Box::new(move |c| rainier_kernels::attention_backward(c, &s, bf16)),
                    });
                }
            }
        }
    }
    v
}

/// The table (CSV) and the raw runs (JSON, naming the chip `name`) for one NeuronCore of
/// `params`; `progress` is told `(cases done, cases)` as cases finish (from worker threads).
pub fn generate(
    name: &str,
    params: &ChipParams,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(String, String), TableError> {
    // TensorE peak per dtype: fp32 at a quarter, fp8 at twice bf16 on v3+ (double row), MX
    // at four times [N-arch4].
    let peak = |d: DType| {
        let fp8 = matches!(d, DType::Fp8E4m3 | DType::Fp8E5m2 | DType::Fp8E4m3fn);
        let factor = match d {
            DType::F32 => 0.25,
            _ if d.is_packed() => 4.0,
            _ if fp8 && params.core.has_fp8_double_row() => 2.0,
            _ => 1.0,
        };
        128.0 * 128.0 * 2.0 * params.core.tensor_clock_hz.value * factor
    };
    let hbm_share = params.hbm_bytes_per_s.value / f64::from(params.cores_per_chip.value);
    let cases = cases(params);
    let done = AtomicUsize::new(0);
    let results: Vec<_> = cases
        .par_iter()
        .map(|case| {
            let shape: Vec<String> = case.shape.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let shape = shape.join(" ");
            let what = || format!("{} {shape} on {params}", case.kernel);
            let program =
                (case.build)(params).map_err(|e| TableError::Kernel(what(), e.to_string()))?;
            // Library kernels: race-free by construction (their tests run the full verifier).
            let r = rainier_timesim::simulate_built(&program, params, None, false)
                .map_err(|e| TableError::Kernel(what(), e.to_string()))?;
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, cases.len());
            Ok((shape, program.instructions.len(), r))
        })
        .collect::<Result<_, TableError>>()?;
    let mut csv = String::from(
        "kernel,dtype,shape,time_ns,flops,hbm_bytes,tflops,peak_fraction,hbm_fraction,bottleneck\n",
    );
    let mut runs = Vec::new();
    for (case, (shape, instructions, r)) in cases.iter().zip(results) {
        let seconds = r.time_ps as f64 * 1e-12;
        let (tflops, pf, hf) = (
            case.flops / seconds / 1e12,
            case.flops / seconds / peak(case.dtype),
            r.dma.hbm_bytes as f64 / seconds / hbm_share,
        );
        let neck = Engine::ALL
            .iter()
            .map(|e| (r.engines[e.index()].busy_ps, e.name()))
            .chain([(r.dma.busy_ps, "dma")])
            .max()
            .map_or("none", |(_, n)| n);
        let _ = writeln!(
            csv,
            "{},{},{shape},{:.3},{:.0},{},{tflops:.4},{pf:.4},{hf:.4},{neck}",
            case.kernel,
            case.dtype,
            r.time_ns(),
            case.flops,
            r.dma.hbm_bytes
        );
        let engines: serde_json::Map<String, Value> = Engine::ALL
            .iter()
            .map(|e| {
                let s = &r.engines[e.index()];
                (e.name().to_string(), json!({ "instructions": s.instructions, "busy_ps": s.busy_ps, "semaphore_stall_ps": s.semaphore_stall_ps, "resource_stall_ps": s.resource_stall_ps }))
            })
            .collect();
        runs.push(json!({
            "kernel": case.kernel,
            "dtype": case.dtype.name(),
            "shape": case.shape.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "instructions": instructions,
            "time_ps": r.time_ps,
            "engines": engines,
            "dma": { "transfers": r.dma.transfers, "bytes": r.dma.bytes, "hbm_bytes": r.dma.hbm_bytes, "busy_ps": r.dma.busy_ps },
        }));
    }
    let mut doc = json!({
        "chip": name,
        "generation": params.core.generation.to_string(),
        "scope": "one NeuronCore; chip time = per-core time when each core runs its share (see docs/kernels.md)",
        "regenerate": "cargo run --release -- kernel table --chip CHIP",
        "runs": runs,
    });
    if name != params.chip.name() {
        doc["built_on"] = json!(params.chip.name());
    }
    let runs = serde_json::to_string_pretty(&doc)
        .map_err(|e| TableError::Kernel("runs JSON".into(), e.to_string()))?;
    Ok((csv, runs + "\n"))
}
