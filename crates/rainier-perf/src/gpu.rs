//! The GPU op-cost model, calibrated on one H100 (`data/h100-microbench.json`).
//!
//! GEMM: `t = max(F / (peak · e · u · c), B / (bw · e_s)) + t_k`, with `e` the best-shape
//! efficiency, `u` the wave and tile quantization of 128-row × 128-column output tiles over
//! the SMs (64-row tiles for skinny products), `c` the sustained-clock factor, `e_s` the
//! weight-streaming efficiency and `t_k` the per-kernel overhead. `e` and `t_k` were fitted on
//! the square GEMMs (256³ … 16384³, bf16 and fp8; `tools/fit_gpu_gemm.py`), `e_s` on the
//! M ≤ 16 products; [`gemm_fit_report`] checks the fit on the other shapes.

use std::sync::OnceLock;

use rainier_hw::Framework;
use rainier_model::{MemKind, Mlp, Norm};
use serde::Deserialize;

use crate::Assumption;

pub(crate) const GEMM_EFF_BF16: Assumption = Assumption {
    name: "gpu.gemm_eff_bf16",
    value: 0.78,
    why: "fitted on the H100 square bf16 GEMMs (do_bench, burst clock); held-out shapes in gemm_fit_report",
};
pub(crate) const GEMM_EFF_FP8: Assumption = Assumption {
    name: "gpu.gemm_eff_fp8",
    value: 0.70,
    why: "fitted on the H100 square fp8 GEMMs (torch._scaled_mm)",
};
/// No FP4 GEMM was measured: NVFP4 GEMMs on Blackwell are taken at the fp8 efficiency.
pub(crate) const GEMM_EFF_FP4: Assumption = Assumption {
    name: "gpu.gemm_eff_fp4",
    value: 0.70,
    why: "no FP4 GEMM measurement: the H100 fp8 fit (0.70 of peak) carried to Blackwell's FP4 tensor cores, range 0.5-0.8 (B200 measured fp8 at 76 % of peak, hardware-catalog §4)",
};
pub(crate) const KERNEL_OVERHEAD_S: Assumption = Assumption {
    name: "gpu.kernel_overhead_s",
    value: 5e-6,
    why: "fitted on the H100 square GEMMs (256³ runs in 6.6 µs); the 1 MiB copy gives 4.5 µs",
};
pub(crate) const GEMM_STREAM_EFF: Assumption = Assumption {
    name: "gpu.gemm_stream_eff",
    value: 0.75,
    why: "fitted on the H100 GEMMs with M ≤ 16 (weight streaming): median error 9 %",
};
pub(crate) const SUSTAINED_CLOCK: Assumption = Assumption {
    name: "gpu.sustained_clock",
    value: 681.0 / 739.0,
    why: "H100 8192³ bf16 sustained 4 s at the 700 W cap (681 TF, SM 1,365 MHz) over its do_bench burst (739 TF); assumed the same on every GPU",
};
pub(crate) const FUSED_STREAM_EFF: Assumption = Assumption {
    name: "gpu.fused_stream_eff",
    value: 2937.0 / 3350.0,
    why: "a fused elementwise kernel streams like the measured H100 bf16 add (2.94 TB/s of 3.35)",
};
pub(crate) const EAGER_ROPE_EFF: Assumption = Assumption {
    name: "gpu.eager_rope_eff",
    value: 1049.6 / 3350.0,
    why: "eager RoPE (rotate_half, two multiplies, add) assumed as efficient as the measured eager silu·mul",
};

/// The best-shape bf16 GEMM ceiling of the H100 in the catalog (MAMF 794.5 / 989.4), the
/// reference other GPUs' efficiencies are scaled by.
pub(crate) const H100_CEILING: f64 = 794.5 / 989.4;

const H100_BF16_PEAK: f64 = 989.4e12;
const H100_HBM: f64 = 3.35e12;

/// Streaming multiprocessors per GPU (wave quantization).
pub(crate) fn streaming_multiprocessors(name: &str) -> u64 {
    match name {
        // NVIDIA A100 whitepaper: 108 SMs; B200: 148 SMs (2 × 74); H100/H200 SXM: 132
        // (measured on our H100, calibration `device.sms`).
        "a100" => 108,
        "b200" | "gb200" => 148,
        _ => 132,
    }
}

/// Output tiles of a GEMM over the SMs: the fraction of SM-time doing useful work.
pub(crate) fn wave_efficiency(m: u64, n: u64, k: u64, count: u64, sms: u64) -> f64 {
    let tile_m = m.next_power_of_two().clamp(64, 128);
    let tile_n = 128;
    let tiles_m = m.div_ceil(tile_m).max(1);
    let tiles_n = n.div_ceil(tile_n).max(1);
    let output_tiles = tiles_m * tiles_n * count.max(1);
    // Skinny products (decode, one 128-row tile) with too few output tiles to fill the SMs run
    // split-K / GEMV kernels: K is split into slices of at least 256.
    let split_k =
        if m <= 128 && output_tiles < sms { (sms / output_tiles).min(k / 256).max(1) } else { 1 };
    let tiles = output_tiles * split_k;
    let waves = tiles.div_ceil(sms);
    let occupancy = tiles as f64 / (waves * sms) as f64;
    let fill = m as f64 / (tiles_m * tile_m) as f64 * (n as f64 / (tiles_n * tile_n) as f64);
    occupancy * fill
}

#[derive(Debug, Deserialize)]
struct Microbench {
    gemm: Vec<GemmPoint>,
    attention: Vec<AttentionPoint>,
}

#[derive(Debug, Clone, Deserialize)]
struct GemmPoint {
    #[serde(rename = "M")]
    m: u64,
    #[serde(rename = "N")]
    n: u64,
    #[serde(rename = "K")]
    k: u64,
    dtype: String,
    ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct AttentionPoint {
    #[serde(rename = "S")]
    s: u64,
    #[serde(rename = "D")]
    d: u64,
    causal: bool,
    fwd_ms: f64,
    fwdbwd_ms: f64,
    fwd_tflops: f64,
}

/// Measured causal flash-attention efficiency curves on the H100, per head dim:
/// `(head_dim, forward, backward)`, each `[(log2 seq, fraction of bf16 peak)]`; the backward
/// is `2.5 ×` the forward FLOPs over `fwdbwd − fwd` time.
type AttentionCurves = Vec<(u64, Vec<(f64, f64)>, Vec<(f64, f64)>)>;

fn attention_curves() -> &'static AttentionCurves {
    static CURVES: OnceLock<AttentionCurves> = OnceLock::new();
    CURVES.get_or_init(|| {
        let mut points: Vec<&AttentionPoint> =
            microbench().attention.iter().filter(|p| p.causal).collect();
        points.sort_by_key(|p| (p.d, p.s));
        let mut curves: AttentionCurves = Vec::new();
        for p in points {
            let x = (p.s as f64).log2();
            let fwd_flops = p.fwd_tflops * 1e12 * p.fwd_ms * 1e-3;
            let fwd = p.fwd_tflops * 1e12 / H100_BF16_PEAK;
            let bwd = 2.5 * fwd_flops / ((p.fwdbwd_ms - p.fwd_ms) * 1e-3) / H100_BF16_PEAK;
            match curves.last_mut() {
                Some(c) if c.0 == p.d => {
                    c.1.push((x, fwd));
                    c.2.push((x, bwd));
                }
                _ => curves.push((p.d, vec![(x, fwd)], vec![(x, bwd)])),
            }
        }
        curves
    })
}

fn microbench() -> &'static Microbench {
    static DATA: OnceLock<Microbench> = OnceLock::new();
    DATA.get_or_init(|| {
        // Committed data; a test parses it, so a failure here is a build defect.
        serde_json::from_str(include_str!("../data/h100-microbench.json"))
            .expect("data/h100-microbench.json parses")
    })
}

/// H100 flash-attention efficiency (fraction of the bf16 peak, burst clock) at this sequence
/// length and head dim: the nearest measured head dim, linear in `log2 seq` between measured
/// lengths, clamped at the ends.
pub(crate) fn attention_efficiency(seq: u64, head_dim: u64, backward: bool) -> f64 {
    let Some((_, fwd, bwd)) = attention_curves().iter().min_by_key(|c| c.0.abs_diff(head_dim))
    else {
        return 0.0;
    };
    interpolate(if backward { bwd } else { fwd }, (seq.max(1) as f64).log2())
}

/// Piecewise-linear interpolation over sorted `(x, y)`, clamped outside.
pub(crate) fn interpolate(curve: &[(f64, f64)], x: f64) -> f64 {
    let (Some(first), Some(last)) = (curve.first(), curve.last()) else { return 0.0 };
    if x <= first.0 {
        return first.1;
    }
    if x >= last.0 {
        return last.1;
    }
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            return if x1 > x0 { y0 + (y1 - y0) * (x - x0) / (x1 - x0) } else { y1 };
        }
    }
    last.1
}

/// Share of HBM bandwidth and kernel count of a memory-bound op on a GPU stack. Eager values
/// are the H100 measurements (bf16, 16384 × 4096; cross-entropy fp32 over 8192 × 128256,
/// forward plus backward); fused stacks run activations, RoPE and adds as one streaming
/// kernel each. Norms are one kernel in both. Cross-entropy keeps the eager figure on every
/// stack: Megatron-Core's vocab-parallel cross-entropy is several fp32 PyTorch kernels unless
/// its fusion flag is set.
pub(crate) fn memory_efficiency(kind: MemKind, framework: Framework) -> (f64, f64) {
    let fused = framework == Framework::Fused;
    let stream = FUSED_STREAM_EFF.value;
    match kind {
        MemKind::Add | MemKind::Embedding | MemKind::Permute | MemKind::KvCache => (stream, 1.0),
        MemKind::Norm(Norm::LayerNorm) => (2223.6 / 3350.0, 1.0),
        MemKind::Norm(Norm::RmsNorm) => (2143.8 / 3350.0, 1.0),
        MemKind::Activation(Mlp::Gelu) => (if fused { stream } else { 2852.3 / 3350.0 }, 1.0),
        MemKind::Activation(Mlp::SwiGlu) => {
            if fused {
                (stream, 1.0)
            } else {
                (1049.6 / 3350.0, 2.0)
            }
        }
        MemKind::Rope => {
            if fused {
                (stream, 1.0)
            } else {
                (EAGER_ROPE_EFF.value, 4.0)
            }
        }
        // 3 × 8192 × 128256 × 2 bytes (forward read, backward read and write) in 17.81 ms.
        MemKind::CrossEntropy => (3.0 * 8192.0 * 128256.0 * 2.0 / 17.809e-3 / 3350e9, 3.0),
    }
}

/// How the GEMM model fits the H100 measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmFitReport {
    /// `(m, n, k, dtype, measured s, predicted s, calibration point?)`.
    pub points: Vec<(u64, u64, u64, String, f64, f64, bool)>,
}

impl GemmFitReport {
    /// Median and maximum `|predicted/measured − 1|` over the points `keep` selects.
    pub fn errors(
        &self,
        keep: impl Fn(&(u64, u64, u64, String, f64, f64, bool)) -> bool,
    ) -> (f64, f64) {
        let mut errors: Vec<f64> =
            self.points.iter().filter(|p| keep(p)).map(|p| (p.5 / p.4 - 1.0).abs()).collect();
        errors.sort_by(f64::total_cmp);
        let median = errors.get(errors.len() / 2).copied().unwrap_or(0.0);
        (median, errors.last().copied().unwrap_or(0.0))
    }
}

/// The GEMM model (burst clock, as do_bench measures) against every bf16/fp8 GEMM of the
/// H100 microbenchmarks. Square shapes are the calibration set; the rest are held out.
pub fn gemm_fit_report() -> GemmFitReport {
    let points = microbench()
        .gemm
        .iter()
        .filter(|g| g.dtype == "bf16" || g.dtype == "fp8")
        .map(|g| {
            let fp8 = g.dtype == "fp8";
            let (peak, eff, elem) = if fp8 {
                (2.0 * H100_BF16_PEAK, GEMM_EFF_FP8.value, 1)
            } else {
                (H100_BF16_PEAK, GEMM_EFF_BF16.value, 2)
            };
            let flops = 2.0 * (g.m * g.n * g.k) as f64;
            let bytes = ((g.m * g.k + g.n * g.k) * elem + g.m * g.n * 2) as f64;
            let u = wave_efficiency(g.m, g.n, g.k, 1, 132);
            let t = (flops / (peak * eff * u)).max(bytes / (H100_HBM * GEMM_STREAM_EFF.value))
                + KERNEL_OVERHEAD_S.value;
            let calibration = g.m == g.n && g.n == g.k;
            (g.m, g.n, g.k, g.dtype.clone(), g.ms * 1e-3, t, calibration)
        })
        .collect();
    GemmFitReport { points }
}
