//! Flash attention forward against plain f64 attention (softmax(q·kᵀ/√d)·v) on fresh random
//! inputs: causal and not, grouped-query heads, bf16 and fp32.
//!
//! Tolerance: |o - want| <= tol · max|v|, with tol = 6 · 2^-8 for bf16 (p and the output are
//! rounded to bf16, inputs are exact) and 64 · 2^-24 for fp32 (exp, the online rescaling and
//! fp32 sums over up to a few hundred keys).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_kernels::{attention, AttentionShape};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

#[allow(clippy::too_many_arguments)]
fn reference(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape) -> Vec<f64> {
    let (nh, seq, d) = ((s.batch * s.heads) as usize, s.seq as usize, s.head_dim as usize);
    let group = (s.heads / s.kv_heads) as usize;
    let mut out = vec![0.0; nh * seq * d];
    for h in 0..nh {
        let hk = (h / s.heads as usize) * s.kv_heads as usize + (h % s.heads as usize) / group;
        for i in 0..seq {
            let keys = if s.causal { i + 1 } else { seq };
            let scores: Vec<f64> = (0..keys)
                .map(|j| {
                    (0..d)
                        .map(|c| {
                            f64::from(q[(h * d + c) * seq + i])
                                * f64::from(k[(hk * d + c) * seq + j])
                        })
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
            let total: f64 = w.iter().sum();
            for c in 0..d {
                out[(h * seq + i) * d + c] =
                    (0..keys).map(|j| w[j] * f64::from(v[(hk * seq + j) * d + c])).sum::<f64>()
                        / total;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn attention_matches_f64(seq_blocks in 1u64..20, d in prop::sample::select(vec![16u64, 64, 128, 96]), causal: bool,
                             heads_kv in prop::sample::select(vec![(1u64, 1u64), (2, 1), (4, 2)]), seed: u64,
                             dtype in prop::sample::select(vec![DType::Bf16, DType::F32]),
                             chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])) {
        let shape = AttentionShape { batch: 1, heads: heads_kv.0, kv_heads: heads_kv.1, seq: 128 * seq_blocks, head_dim: d, causal };
        let p = attention(chip, &shape, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let (nh, nkv, seq, d) = (shape.heads as usize, shape.kv_heads as usize, shape.seq as usize, d as usize);
        let mut gen = |n: usize| -> Vec<f32> { (0..n).map(|_| r.gen_range(-1.0..1.0)).collect() };
        let (q, k, v) = (gen(nh * d * seq), gen(nkv * d * seq), gen(nkv * seq * d));
        let t = |x: &[f32], s: &[usize]| HostTensor::from_f32(dtype, s, x);
        let (qt, kt, vt) = (t(&q, &[nh, d, seq]), t(&k, &[nkv, d, seq]), t(&v, &[nkv, seq, d]));
        let (q, k, v) = (qt.to_f32(), kt.to_f32(), vt.to_f32());
        let inputs = BTreeMap::from([("q".to_string(), qt), ("k".to_string(), kt), ("v".to_string(), vt)]);
        let params = chip.params();
        let f = rainier_funcsim::run(&p, &params, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ts = rainier_timesim::simulate(&p, &params, Some(&inputs), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(ts.machine.as_ref() == Some(&f.machine), "timing and functional memory differ");
        let got = f.outputs["o"].to_f32();
        let want = reference(&q, &k, &v, &shape);
        let vmax = v.iter().fold(0f64, |m, x| m.max(f64::from(x.abs())));
        let tol = if dtype == DType::Bf16 { 6.0 * 2f64.powi(-8) } else { 64.0 * 2f64.powi(-24) } * vmax;
        for i in 0..want.len() {
            prop_assert!((f64::from(got[i]) - want[i]).abs() <= tol, "o[{i}] = {} vs {}", got[i], want[i]);
        }
    }
}

#[test]
fn oversized_attention_is_refused_before_building() {
    let shape = AttentionShape {
        batch: 65536,
        heads: 64,
        kv_heads: 64,
        seq: 1 << 20,
        head_dim: 128,
        causal: false,
    };
    let e =
        attention(Chip::Trn2, &shape, DType::Bf16).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("too large to build"), "{e}");
}
