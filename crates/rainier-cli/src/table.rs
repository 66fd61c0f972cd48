//! `rainier kernel table --chip C`: the library kernels swept over the shapes transformer
//! layers use, timed on one simulated NeuronCore; the cost table the planners read
//! (`tables/CHIP.csv`) and the raw runs beside it (`tables/CHIP.runs.json`). Deterministic:
//! the same code gives the same bytes, and a test fails when the committed tables are stale.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use rainier_arch::Chip;
use rainier_isa::{Engine, Program};
use rainier_kernels::{AdamW, AttentionShape, KernelError};
use rainier_tensor::DType;
use serde_json::{json, Value};

/// One sweep point.
struct Case {
    kernel: &'static str,
    dtype: DType,
    /// Shape as `key=value` pairs, in a fixed order.
    shape: Vec<(&'static str, u64)>,
    flops: f64,
    build: Box<dyn Fn(Chip) -> Result<Program, KernelError>>,
}

/// Hidden sizes of common models (Llama-3 8B 4096, 70B 8192) and their MLP widths, at token
/// counts from a decode batch to a training micro-batch.
fn cases(chip: Chip) -> Vec<Case> {
    let mut v = Vec::new();
    let bf16 = DType::Bf16;
    // bf16, then fp8 (e4m3: double row on NeuronCore-v3/v4, the bf16 rate on v2), then on
    // NeuronCore-v4 MXFP8 (e4m3fn) and MXFP4 with offline-quantized inputs.
    let mut gemm_dtypes = vec![bf16, DType::Fp8E4m3];
    if chip.params().core.generation >= rainier_arch::Generation::V4 {
        gemm_dtypes.extend([DType::Fp8E4m3fnx4, DType::Fp4E2m1fnx4]);
    }
    for dtype in gemm_dtypes {
        for tokens in [128u64, 512, 2048] {
            for (n, k) in [(4096u64, 4096u64), (14336, 4096), (4096, 14336), (8192, 8192)] {
                v.push(Case {
                    kernel: "gemm",
                    dtype,
                    shape: vec![("m", tokens), ("n", n), ("k", k)],
                    flops: 2.0 * (tokens * n * k) as f64,
                    build: Box::new(move |c| rainier_kernels::gemm(c, tokens, n, k, dtype)),
                });
            }
        }
    }
    type RowwiseFn = fn(Chip, u64, u64, DType) -> Result<Program, KernelError>;
    let rowwise: [(&'static str, RowwiseFn, f64); 6] = [
        ("rmsnorm", rainier_kernels::rmsnorm, 4.0),
        ("layernorm", rainier_kernels::layernorm, 8.0),
        ("softmax", rainier_kernels::softmax, 5.0),
        ("gelu", rainier_kernels::gelu, 8.0),
        ("swiglu", rainier_kernels::swiglu, 5.0),
        ("residual-add", rainier_kernels::residual_add, 1.0),
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

/// The table (CSV) and the raw runs (JSON) for `chip`.
pub(crate) fn generate(chip: Chip) -> Result<(String, String)> {
    let params = chip.params();
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
    let mut csv = String::from(
        "kernel,dtype,shape,time_ns,flops,hbm_bytes,tflops,peak_fraction,hbm_fraction,bottleneck\n",
    );
    let mut runs = Vec::new();
    for case in cases(chip) {
        let shape: Vec<String> = case.shape.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let shape = shape.join(" ");
        let program =
            (case.build)(chip).with_context(|| format!("{} {shape} on {chip}", case.kernel))?;
        let r = rainier_timesim::simulate(&program, &params, None, false)?;
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
            "instructions": program.instructions.len(),
            "time_ps": r.time_ps,
            "engines": engines,
            "dma": { "transfers": r.dma.transfers, "bytes": r.dma.bytes, "hbm_bytes": r.dma.hbm_bytes, "busy_ps": r.dma.busy_ps },
        }));
    }
    let doc = json!({
        "chip": chip.name(),
        "generation": params.core.generation.to_string(),
        "scope": "one NeuronCore; chip time = per-core time when each core runs its share (see docs/kernels.md)",
        "regenerate": "cargo run --release -- kernel table --chip CHIP",
        "runs": runs,
    });
    Ok((csv, serde_json::to_string_pretty(&doc)? + "\n"))
}

/// Writes `DIR/CHIP.csv` and `DIR/CHIP.runs.json`.
pub(crate) fn write(chip: Chip, dir: &Path) -> Result<()> {
    let (csv, runs) = generate(chip)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let csv_path = dir.join(format!("{}.csv", chip.name()));
    let runs_path = dir.join(format!("{}.runs.json", chip.name()));
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    std::fs::write(&runs_path, runs)
        .with_context(|| format!("cannot write {}", runs_path.display()))?;
    crate::out(&format!("wrote {} and {}", csv_path.display(), runs_path.display()));
    Ok(())
}
