//! Cross-entropy forward and backward against f64 math on fresh random logits and targets,
//! across several vocabulary chunks.
//!
//! Tolerances: the fp32 running sum over the vocabulary bounds lse's absolute error by
//! (vocab + 16) · 2^-24 (+ 2^-23 · |lse| for the final additions); the gradient carries that
//! error relatively, plus one rounding of its dtype.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_kernels::{cross_entropy, cross_entropy_backward};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn cross_entropy_matches_f64(rows in 1usize..200, vocab in 1usize..20_000, seed: u64,
                                 dtype in prop::sample::select(vec![DType::F32, DType::Bf16]),
                                 chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])) {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let x: Vec<f32> = (0..rows * vocab).map(|_| r.gen_range(-8.0..8.0)).collect();
        let t: Vec<f32> = (0..rows).map(|_| r.gen_range(0..vocab) as f32).collect();
        let logits = HostTensor::from_f32(dtype, &[rows, vocab], &x);
        let target = HostTensor::from_f32(DType::I32, &[rows], &t);
        let xv: Vec<f64> = logits.to_f32().into_iter().map(f64::from).collect();
        let params = chip.params();
        let run = |p: &rainier_isa::Program, inputs: BTreeMap<String, HostTensor>| -> Result<BTreeMap<String, HostTensor>, TestCaseError> {
            let f = rainier_funcsim::run(p, &params, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ts = rainier_timesim::simulate(p, &params, Some(&inputs), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(ts.machine.as_ref() == Some(&f.machine), "timing and functional memory differ");
            Ok(f.outputs)
        };
        let fwd = cross_entropy(chip, rows as u64, vocab as u64, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = run(&fwd, BTreeMap::from([("logits".to_string(), logits.clone()), ("target".to_string(), target.clone())]))?;
        let (loss, lse) = (out["loss"].to_f32(), out["lse"].clone());
        let lse_v = lse.to_f32();
        let mut want_lse = vec![0f64; rows];
        for i in 0..rows {
            let row = &xv[i * vocab..(i + 1) * vocab];
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            want_lse[i] = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            let want_loss = want_lse[i] - row[t[i] as usize];
            let tol = (vocab as f64 + 16.0) * 2f64.powi(-24) + 2f64.powi(-22) * want_lse[i].abs();
            prop_assert!((f64::from(lse_v[i]) - want_lse[i]).abs() <= tol, "lse[{i}] = {} vs {}", lse_v[i], want_lse[i]);
            prop_assert!((f64::from(loss[i]) - want_loss).abs() <= tol + 2f64.powi(-23) * row[t[i] as usize].abs(), "loss[{i}] = {} vs {want_loss}", loss[i]);
        }
        let bwd = cross_entropy_backward(chip, rows as u64, vocab as u64, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = run(&bwd, BTreeMap::from([("logits".to_string(), logits), ("target".to_string(), target), ("lse".to_string(), lse)]))?;
        let grad = out["grad"].to_f32();
        let u = if dtype == DType::Bf16 { 2f64.powi(-8) } else { 2f64.powi(-23) };
        for i in 0..rows {
            let rel_lse = (vocab as f64 + 16.0) * 2f64.powi(-24) + 2f64.powi(-22) * want_lse[i].abs();
            for j in 0..vocab {
                let sm = (xv[i * vocab + j] - want_lse[i]).exp();
                let want = sm - if j == t[i] as usize { 1.0 } else { 0.0 };
                let g = f64::from(grad[i * vocab + j]);
                prop_assert!((g - want).abs() <= 2.0 * rel_lse * sm + u * want.abs() + 1e-30, "grad[{i}, {j}] = {g} vs {want}");
            }
        }
    }
}
