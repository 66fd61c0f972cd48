//! `rainier kernel NAME ...`: build a library kernel, time it on the simulated NeuronCore and,
//! with `--check`, run it on fresh random inputs against the f64 reference.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rainier_arch::{Chip, Generation};
use rainier_tensor::{DType, HostTensor};
use rand::Rng;
use serde_json::json;

use crate::{out, report};

/// Element types a kernel computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KernelDType {
    Bf16,
    Fp16,
    Fp8,
    Fp32,
}

impl KernelDType {
    fn dtype(self) -> DType {
        match self {
            KernelDType::Bf16 => DType::Bf16,
            KernelDType::Fp16 => DType::F16,
            // Neuron's fp8 e4m3 (the OCP e4m3fn variant exists only on NeuronCore-v4).
            KernelDType::Fp8 => DType::Fp8E4m3,
            KernelDType::Fp32 => DType::F32,
        }
    }

    /// TensorE MACs per PE per cycle for this dtype: 1 for 16-bit, 1/4 for fp32, and for fp8
    /// 2 on NeuronCore-v3/v4 (double_row, not yet used by the kernels) [N-arch3].
    fn peak_factor(self, generation: Generation) -> f64 {
        match self {
            KernelDType::Bf16 | KernelDType::Fp16 => 1.0,
            KernelDType::Fp32 => 0.25,
            KernelDType::Fp8 if generation >= Generation::V3 => 2.0,
            KernelDType::Fp8 => 1.0,
        }
    }
}

/// Output elements checked against the reference at most (sampled evenly beyond that).
const CHECK_SAMPLES: usize = 4096;

pub(crate) struct GemmRequest<'a> {
    pub(crate) chip: Chip,
    pub(crate) m: u64,
    pub(crate) n: u64,
    pub(crate) k: u64,
    pub(crate) dtype: KernelDType,
    pub(crate) check: bool,
    pub(crate) json: bool,
    pub(crate) trace: Option<&'a Path>,
}

pub(crate) fn gemm(req: &GemmRequest<'_>) -> Result<()> {
    let (chip, m, n, k) = (req.chip, req.m, req.n, req.k);
    if m == 0 || n == 0 || k == 0 || m > 1 << 20 || n > 1 << 20 || k > 1 << 20 {
        bail!("gemm shape --m {m} --n {n} --k {k}: each must be between 1 and 1048576");
    }
    let dtype = req.dtype.dtype();
    let params = chip.params();
    let program = rainier_kernels::gemm(chip, m, n, k, dtype)
        .with_context(|| format!("gemm {m}x{n}x{k} on {chip}"))?;
    let report = rainier_timesim::simulate(&program, &params, None, req.trace.is_some())?;
    if let Some(trace) = req.trace {
        let text =
            serde_json::to_string(&rainier_timesim::chrome_trace(&program, &params, &report))?;
        std::fs::write(trace, text)
            .with_context(|| format!("--trace: cannot write {}", trace.display()))?;
    }
    let flops = 2.0 * (m * n * k) as f64;
    let seconds = report.time_ps as f64 * 1e-12;
    let peak = 128.0
        * 128.0
        * 2.0
        * params.core.tensor_clock_hz.value
        * req.dtype.peak_factor(params.core.generation);
    let achieved = flops / seconds;
    let check = if req.check { Some(check_gemm(&program, chip, m, n, k, dtype)?) } else { None };
    let name = Path::new("gemm");
    if req.json {
        let mut v = report::timing_json(&report, &params, name);
        let doc = json!({
            "kernel": "gemm",
            "shape": { "m": m, "n": n, "k": k },
            "chip": chip.name(),
            "dtype": format!("{:?}", req.dtype).to_lowercase(),
            "time_ns": report.time_ns(),
            "flops": flops,
            "hbm_bytes": report.dma.bytes,
            "tflops": achieved / 1e12,
            "peak_fraction": achieved / peak,
            "instructions": program.instructions.len(),
            "engines": v["engines"].take(),
            "bottleneck": v["bottleneck"].take(),
        });
        let mut doc = doc;
        if let Some((err, passed)) = check {
            doc["check"] = json!({ "max_rel_error": err, "passed": passed });
        }
        out(&serde_json::to_string_pretty(&doc)?);
    } else {
        out(&format!(
            "gemm c[{m}, {n}] = aᵀ·b, a [{k}, {m}], b [{k}, {n}] {dtype} -> f32 on one {chip} NeuronCore: {:.3} us, {:.2} TFLOP/s = {:.1}% of TensorE peak ({} instructions)",
            report.time_ns() / 1000.0,
            achieved / 1e12,
            100.0 * achieved / peak,
            program.instructions.len()
        ));
        out(report::timing_text(&report, &params, name)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end());
        if let Some((err, passed)) = check {
            out(&format!(
                "  check: max error {err:.2e} of Σ|a·b| on fresh random inputs: {}",
                if passed { "passed" } else { "FAILED" }
            ));
        }
    }
    if check.is_some_and(|(_, passed)| !passed) {
        bail!("gemm check failed");
    }
    Ok(())
}

/// Runs the program functionally on random inputs; returns the largest error relative to
/// Σ|a·b| over (a sample of) the outputs, and whether it is within fp32 accumulation's bound.
fn check_gemm(
    program: &rainier_isa::Program,
    chip: Chip,
    m: u64,
    n: u64,
    k: u64,
    dtype: DType,
) -> Result<(f64, bool)> {
    let mut rng = rand::thread_rng();
    let mut random = |rows: u64, cols: u64| {
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        HostTensor::from_f32(dtype, &[rows as usize, cols as usize], &v)
    };
    let (a, b) = (random(k, m), random(k, n));
    let inputs = BTreeMap::from([("a".to_string(), a.clone()), ("b".to_string(), b.clone())]);
    let res = rainier_funcsim::run(program, &chip.params(), &inputs)?;
    let c = res.outputs["c"].to_f32();
    let (av, bv) = (a.to_f32(), b.to_f32());
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let total = mu * nu;
    let step = (total / CHECK_SAMPLES).max(1);
    let mut worst = 0f64;
    for i in (0..total).step_by(step) {
        let (mi, ni) = (i / nu, i % nu);
        let col_a: Vec<f64> = (0..ku).map(|kk| f64::from(av[kk * mu + mi])).collect();
        let col_b: Vec<f64> = (0..ku).map(|kk| f64::from(bv[kk * nu + ni])).collect();
        let want = rainier_reference::matmul(&col_a, &col_b, ku, 1, 1)[0];
        let scale: f64 = col_a
            .iter()
            .zip(&col_b)
            .map(|(x, y)| (x * y).abs())
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        worst = worst.max((f64::from(c[i]) - want).abs() / scale);
    }
    // Exact products, fp32 accumulation over K (+1 rounding per product for fp32 inputs).
    let bound = (k as f64 + 2.0) * 2f64.powi(-24);
    Ok((worst, worst <= bound))
}
