//! `rmsnorm_backward` and `swiglu_backward` against f64 gradients on fresh random inputs (the
//! proptest seed replays a case), functional and timed simulation agreeing on memory.
//!
//! Tolerances, per element, against the magnitudes that enter it (cancellation makes a
//! gradient element small while its terms are not):
//! - rmsnorm `dx = r·g − x·r³·Σ(x∘g)/H` (`g = dy∘w`): `tol · (|r·g| + |x|·r³·Σ|x∘g|/H)`;
//!   `dw = Σ_rows x·r·dy`: `tol · Σ_rows |x·r·dy|`;
//! - swiglu `du = dy·silu(g)`, `dg = dy·u·silu'(g)`: `tol · |dy|·|silu(g)|` and
//!   `tol · |dy·u|·1.1` (`|silu'| <= 1.1`);
//!
//! with tol = (cols + rows + 64) · 2^-24 for fp32 (row and column sums, a few roundings and
//! the activation tables' error) and 4 · 2^-8 for bf16 (the bf16 intermediates and output).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_kernels::{rmsnorm_backward, swiglu_backward, RMSNORM_EPS};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

fn random(dtype: DType, shape: &[usize], lo: f32, hi: f32, seed: u64) -> HostTensor {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| r.gen_range(lo..hi)).collect();
    HostTensor::from_f32(dtype, shape, &v)
}

fn f64s(t: &HostTensor) -> Vec<f64> {
    t.to_f32().into_iter().map(f64::from).collect()
}

fn tolerance(dtype: DType, rows: usize, cols: usize) -> f64 {
    match dtype {
        DType::Bf16 => 4.0 * 2f64.powi(-8),
        _ => (cols + rows + 64) as f64 * 2f64.powi(-24),
    }
}

/// Runs `p` functionally and timed; the outputs by name.
fn run(
    p: &rainier_isa::Program,
    chip: Chip,
    inputs: BTreeMap<String, HostTensor>,
) -> Result<BTreeMap<String, Vec<f64>>, TestCaseError> {
    let params = chip.params();
    let f = rainier_funcsim::run(p, &params, &inputs)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let t = rainier_timesim::simulate(p, &params, Some(&inputs), false)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(t.machine.as_ref() == Some(&f.machine), "timing and functional memory differ");
    Ok(f.outputs.iter().map(|(k, v)| (k.clone(), f64s(v))).collect())
}

fn dtypes() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![DType::F32, DType::Bf16])
}

fn chips() -> impl Strategy<Value = Chip> {
    prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn rmsnorm_backward_matches_f64(rows in 1usize..300, cols in 2usize..2100, seed: u64,
                                    dtype in dtypes(), chip in chips()) {
        let p = rmsnorm_backward(chip, rows as u64, cols as u64, dtype)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let x = random(dtype, &[rows, cols], -3.0, 3.0, seed);
        let w = random(dtype, &[cols], 0.5, 1.5, seed ^ 7);
        let dy = random(dtype, &[rows, cols], -1.0, 1.0, seed ^ 11);
        let (xv, wv, dyv) = (f64s(&x), f64s(&w), f64s(&dy));
        let inputs = BTreeMap::from([("x".into(), x), ("w".into(), w), ("dy".into(), dy)]);
        let got = run(&p, chip, inputs)?;
        let tol = tolerance(dtype, rows, cols);
        let h = cols as f64;
        let mut dw = vec![0.0; cols];
        let mut dw_scale = vec![0.0; cols];
        for r in 0..rows {
            let row = |v: &[f64]| v[r * cols..(r + 1) * cols].to_vec();
            let (x, dy) = (row(&xv), row(&dyv));
            let rstd = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / h + f64::from(RMSNORM_EPS)).sqrt();
            let g: Vec<f64> = dy.iter().zip(&wv).map(|(d, w)| d * w).collect();
            let dot: f64 = x.iter().zip(&g).map(|(a, b)| a * b).sum();
            let dot_abs: f64 = x.iter().zip(&g).map(|(a, b)| (a * b).abs()).sum();
            for c in 0..cols {
                let want = rstd * g[c] - x[c] * rstd.powi(3) * dot / h;
                let scale = (rstd * g[c]).abs() + x[c].abs() * rstd.powi(3) * dot_abs / h;
                let got_dx = got["dx"][r * cols + c];
                prop_assert!((got_dx - want).abs() <= tol * scale + 1e-30,
                    "dx[{r}, {c}] = {got_dx} vs {want} (scale {scale})");
                dw[c] += x[c] * rstd * dy[c];
                dw_scale[c] += (x[c] * rstd * dy[c]).abs();
            }
        }
        for c in 0..cols {
            let g = got["dw"][c];
            prop_assert!((g - dw[c]).abs() <= tol * dw_scale[c] + 1e-30, "dw[{c}] = {g} vs {}", dw[c]);
        }
    }

    #[test]
    fn swiglu_backward_matches_f64(rows in 1usize..300, cols in 1usize..3000, seed: u64,
                                   dtype in dtypes(), chip in chips()) {
        let p = swiglu_backward(chip, rows as u64, cols as u64, dtype)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let g = random(dtype, &[rows, cols], -6.0, 6.0, seed);
        let u = random(dtype, &[rows, cols], -2.0, 2.0, seed ^ 3);
        let dy = random(dtype, &[rows, cols], -1.0, 1.0, seed ^ 5);
        let (gv, uv, dyv) = (f64s(&g), f64s(&u), f64s(&dy));
        let inputs = BTreeMap::from([("gate".into(), g), ("up".into(), u), ("dy".into(), dy)]);
        let got = run(&p, chip, inputs)?;
        let tol = tolerance(dtype, 0, 0);
        for i in 0..rows * cols {
            let s = 1.0 / (1.0 + (-gv[i]).exp());
            let silu = gv[i] * s;
            let dsilu = s * (1.0 + gv[i] * (1.0 - s));
            let (du, dg) = (dyv[i] * silu, dyv[i] * uv[i] * dsilu);
            prop_assert!((got["dup"][i] - du).abs() <= tol * (dyv[i] * silu).abs() + 1e-30,
                "dup[{i}] = {} vs {du}", got["dup"][i]);
            prop_assert!((got["dgate"][i] - dg).abs() <= tol * (dyv[i] * uv[i]).abs() * 1.1 + 1e-30,
                "dgate[{i}] = {} vs {dg}", got["dgate"][i]);
        }
    }
}

#[test]
fn long_rows_are_a_clear_error_not_a_wrong_answer() {
    let e =
        rmsnorm_backward(Chip::Trn2, 128, 16384, DType::Bf16).expect_err("long rows").to_string();
    assert!(e.contains("rmsnorm-bwd") && e.contains("column chunks"), "{e}");
}
