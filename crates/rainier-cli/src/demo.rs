//! `rainier demo`: the example programs on random inputs, checked against the host.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rainier_arch::Chip;

use crate::{out, random_tensor, seeded};

const MATMUL: &str = include_str!("../../../examples/asm/matmul.asm");
const SOFTMAX: &str = include_str!("../../../examples/asm/softmax.asm");

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
    let res = rainier_funcsim::run(&program, &params, &inputs)?;
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
        "  matmul.asm   c = aᵀ·b [128x128]ᵀ·[128x512], bf16 inputs, fp32 PSUM: {} instructions, max error {worst:.2e} of Σ|a·b| (bound {MATMUL_TOLERANCE:.1e})",
        res.instructions_executed
    ));
    if worst > MATMUL_TOLERANCE {
        bail!("matmul result is off by {worst:.3e} (more than {MATMUL_TOLERANCE:.1e})");
    }

    let program = rainier_isa::parse(SOFTMAX)?;
    let x = random_tensor(&mut rng, &[128, 512], -8.0, 8.0);
    let res =
        rainier_funcsim::run(&program, &params, &BTreeMap::from([("x".to_string(), x.clone())]))?;
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
        "  softmax.asm  y = softmax(x) [128x512] fp32: {} instructions, max relative error {worst:.2e} (bound {SOFTMAX_TOLERANCE:.0e})",
        res.instructions_executed
    ));
    if worst > SOFTMAX_TOLERANCE {
        bail!("softmax result is off by {worst:.3e} relative (more than {SOFTMAX_TOLERANCE:.0e})");
    }
    out("  both results match the host computation");
    Ok(())
}
