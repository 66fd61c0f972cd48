//! `rainier demo`: the example programs on random inputs on a simulated NeuronCore (values and
//! time), checked against the host.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rainier_arch::Chip;

use crate::{out, random_tensor, seeded};

const MATMUL: &str = include_str!("../../../examples/asm/matmul.asm");
const SOFTMAX: &str = include_str!("../../../examples/asm/softmax.asm");
const MM_STREAM: &str = include_str!("../../../examples/asm/mm_stream.asm");

/// bf16 inputs (8 significant bits) with fp32 accumulation over K = 128: relative to Σ|a·b|,
/// the error of a bf16-rounded product sum is at most about 2 · 2^-8.
const MATMUL_TOLERANCE: f64 = 2.0 * 1.0 / 256.0;
/// fp32 softmax of inputs in [-8, 8): the fp32 argument x - max (|.| < 16) carries up to
/// 2^-20 absolute error, which is a 2^-20 ≈ 9.5e-7 relative error of exp; the exp, the 512-term
/// fp32 sum and the division add a few 2^-24 more. 4e-6 relative bounds it all.
const SOFTMAX_TOLERANCE: f64 = 4e-6;

pub(crate) fn run(chip: Chip, seed: u64) -> Result<()> {
    let params = chip.params();
    let core = &params.core;
    let mut rng = seeded(seed);
    out(&format!("Rainier demo on {chip} ({}), seed {seed}", core.generation));

    let program = rainier_isa::parse(MATMUL)?;
    let a = random_tensor(&mut rng, &[128, 128], -1.0, 1.0);
    let b = random_tensor(&mut rng, &[128, 512], -1.0, 1.0);
    let inputs = BTreeMap::from([("a".to_string(), a.clone()), ("b".to_string(), b.clone())]);
    let res = rainier_timesim::simulate(&program, &params, Some(&inputs), false)?;
    let c = res.outputs["c"].to_f32();
    let (av, bv) = (a.to_f32(), b.to_f32());
    let mut worst = 0f64;
    for m in 0..128 {
        for n in 0..512 {
            let (mut exact, mut scale) = (0f64, 0f64);
            for k in 0..128 {
                let p = f64::from(av[k * 128 + m]) * f64::from(bv[k * 512 + n]);
                exact += p;
                scale += p.abs();
            }
            worst = worst.max((f64::from(c[m * 512 + n]) - exact).abs() / scale);
        }
    }
    out(&format!(
        "  matmul.asm   c = aᵀ·b [128x128]ᵀ·[128x512], bf16 inputs, fp32 PSUM: {} instructions, {:.2} us simulated, max error {worst:.2e} of Σ|a·b| (bound {MATMUL_TOLERANCE:.1e})",
        res.instructions_executed,
        res.time_ns() / 1000.0
    ));
    if worst > MATMUL_TOLERANCE {
        bail!("matmul result is off by {worst:.3e} (more than {MATMUL_TOLERANCE:.1e})");
    }

    let program = rainier_isa::parse(SOFTMAX)?;
    let x = random_tensor(&mut rng, &[128, 512], -8.0, 8.0);
    let inputs = BTreeMap::from([("x".to_string(), x.clone())]);
    let res = rainier_timesim::simulate(&program, &params, Some(&inputs), false)?;
    let y = res.outputs["y"].to_f32();
    let xv = x.to_f32();
    let mut worst = 0f64;
    for row in 0..128 {
        let r = &xv[row * 512..(row + 1) * 512];
        let mx = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let denom: f64 = r.iter().map(|&v| (f64::from(v) - mx).exp()).sum();
        for (f, &v) in r.iter().enumerate() {
            let want = (f64::from(v) - mx).exp() / denom;
            worst = worst.max((f64::from(y[row * 512 + f]) - want).abs() / want);
        }
    }
    out(&format!(
        "  softmax.asm  y = softmax(x) [128x512] fp32: {} instructions, {:.2} us simulated, max relative error {worst:.2e} (bound {SOFTMAX_TOLERANCE:.0e})",
        res.instructions_executed,
        res.time_ns() / 1000.0
    ));
    if worst > SOFTMAX_TOLERANCE {
        bail!("softmax result is off by {worst:.3e} relative (more than {SOFTMAX_TOLERANCE:.0e})");
    }
    // The Tensor engine's steady state: 64 back-to-back bf16 128x128x512 matmuls.
    let program = rainier_isa::parse(MM_STREAM)?;
    let res = rainier_timesim::simulate(&program, &params, None, false)?;
    let tensor = &res.engines[rainier_isa::Engine::Tensor.index()];
    let per_mm_ns = tensor.busy_ps as f64 / 1000.0 / tensor.instructions.max(1) as f64;
    let flops = 2.0 * 128.0 * 128.0 * 512.0;
    out(&format!(
        "  mm_stream.asm 64 bf16 matmuls (timing only): {per_mm_ns:.1} ns each on the Tensor engine = {:.1} TFLOP/s; whole program {:.2} us with DMA",
        flops / per_mm_ns / 1000.0,
        res.time_ns() / 1000.0
    ));
    out("  both results match the host computation");
    Ok(())
}
