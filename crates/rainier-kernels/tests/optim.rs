//! `adamw` against f64 math on fresh random state; tolerances count the fp32 roundings on each
//! path (m', v': 3 each; p': up to 12 on the update, 3 on the decayed parameter), relative to
//! the magnitudes that enter each sum (for the update: the terms of m', which may cancel).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_kernels::{adamw, AdamW};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn adamw_matches_f64(params in 1u64..20_000, seed: u64, step in 1u32..100,
                         chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])) {
        let hp = AdamW { step, ..AdamW::default() };
        let prog = adamw(chip, params, &hp).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let n = params as usize;
        let mut gen = |lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| r.gen_range(lo..hi)).collect() };
        let (p, g, m, v) = (gen(-1.0, 1.0), gen(-1.0, 1.0), gen(-0.1, 0.1), gen(0.0, 0.01));
        let t = |x: &[f32]| HostTensor::from_f32(DType::F32, &[n], x);
        let inputs = BTreeMap::from([("p".to_string(), t(&p)), ("g".to_string(), t(&g)), ("m".to_string(), t(&m)), ("v".to_string(), t(&v))]);
        let params_chip = chip.params();
        let f = rainier_funcsim::run(&prog, &params_chip, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ts = rainier_timesim::simulate(&prog, &params_chip, Some(&inputs), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(ts.machine.as_ref() == Some(&f.machine));
        let out = |name: &str| f.outputs[name].to_f32();
        let (po, mo, vo) = (out("p_out"), out("m_out"), out("v_out"));
        let u = 2f64.powi(-24);
        let (b1, b2, lr, eps, wd) = (f64::from(hp.beta1), f64::from(hp.beta2), f64::from(hp.lr), f64::from(hp.eps), f64::from(hp.weight_decay));
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..n {
            let (pi, gi, mi, vi) = (f64::from(p[i]), f64::from(g[i]), f64::from(m[i]), f64::from(v[i]));
            let m_new = b1 * mi + (1.0 - b1) * gi;
            let v_new = b2 * vi + (1.0 - b2) * gi * gi;
            let upd = m_new / ((v_new / bc2).sqrt() + eps);
            let p_new = pi * (1.0 - lr * wd) - lr / bc1 * upd;
            prop_assert!((f64::from(mo[i]) - m_new).abs() <= 4.0 * u * (b1 * mi.abs() + (1.0 - b1) * gi.abs()), "m[{i}]");
            prop_assert!((f64::from(vo[i]) - v_new).abs() <= 6.0 * u * (b2 * vi + (1.0 - b2) * gi * gi), "v[{i}]");
            // The update's error is relative to the magnitudes of m's terms (they may cancel).
            let den = (v_new / bc2).sqrt() + eps;
            let m_mag = b1 * mi.abs() + (1.0 - b1) * gi.abs();
            let bound = 3.0 * u * pi.abs() + 12.0 * u * lr / bc1 * m_mag / den + 1e-30;
            prop_assert!((f64::from(po[i]) - p_new).abs() <= bound, "p[{i}] = {} vs {p_new}", po[i]);
        }
    }
}

/// Issue #4's target for memory-bound kernels: >= 60% of one trn2 core's HBM share.
#[test]
fn adamw_reaches_60_percent_of_hbm_share_on_trn2() {
    let params = Chip::Trn2.params();
    let p = adamw(Chip::Trn2, 16 << 20, &AdamW::default()).unwrap_or_else(|e| panic!("{e}"));
    let r = rainier_timesim::simulate(&p, &params, None, false).unwrap_or_else(|e| panic!("{e}"));
    let share = params.hbm_bytes_per_s.value / f64::from(params.cores_per_chip.value);
    let fraction = r.dma.bytes as f64 / (r.time_ps as f64 * 1e-12) / share;
    assert!(fraction >= 0.6, "{fraction}");
}
