//! Flash-attention backward against plain f64 gradients of softmax(q·kᵀ/√d)·v
//! (`rainier_reference::attention_backward`, written without the kernel's blocking) on fresh random
//! inputs: causal and not, grouped-query heads, bf16 and fp32; the timing run ends in the same
//! memory as the functional run.
//!
//! Tolerance per output tensor: |g − want| ≤ tol · max|want|, with tol = 8 · 2^-8 for bf16
//! (p, ds and the outputs are rounded to bf16; o is given in bf16) and 2^-14 for fp32 (exp,
//! fp32 sums over up to 640 keys, o rounded to fp32).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_kernels::{attention_backward, attention_backward_chunked, AttentionShape};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn attention_backward_matches_f64(seq_blocks in 1u64..5, d in prop::sample::select(vec![16u64, 64, 128, 96]), causal: bool,
                                      heads_kv in prop::sample::select(vec![(1u64, 1u64), (2, 1), (4, 2)]), seed: u64,
                                      query_chunk in prop::option::of(1u64..4), key_chunk in prop::option::of(1u64..4),
                                      dtype in prop::sample::select(vec![DType::Bf16, DType::F32]),
                                      chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])) {
        let shape = AttentionShape { batch: 1, heads: heads_kv.0, kv_heads: heads_kv.1, seq: 128 * seq_blocks, head_dim: d, causal };
        // Sometimes only a few query or key blocks in SBUF at once (the long-sequence
        // schedules: query chunks, the key side streamed with dq partial sums in HBM).
        let p = attention_backward_chunked(chip, &shape, dtype, query_chunk, key_chunk).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let (nh, nkv, seq, d) = (shape.heads as usize, shape.kv_heads as usize, shape.seq as usize, d as usize);
        let mut gen = |n: usize| -> Vec<f32> { (0..n).map(|_| r.gen_range(-1.0..1.0)).collect() };
        let t = |x: &[f32], s: &[usize]| HostTensor::from_f32(dtype, s, x);
        let (qt, kt, vt, dt) = (t(&gen(nh * d * seq), &[nh, d, seq]), t(&gen(nkv * d * seq), &[nkv, d, seq]),
                                t(&gen(nkv * d * seq), &[nkv, d, seq]), t(&gen(nh * d * seq), &[nh, d, seq]));
        let f64s = |x: &HostTensor| -> Vec<f64> { x.to_f32().iter().map(|&v| f64::from(v)).collect() };
        let [o, lse, dq, dk, dv] = rainier_reference::attention_backward(
            &f64s(&qt), &f64s(&kt), &f64s(&vt), &f64s(&dt), shape.heads as usize, shape.kv_heads as usize, nh, seq, d, shape.causal);
        let o32: Vec<f32> = o.iter().map(|&x| x as f32).collect();
        let lse32: Vec<f32> = lse.iter().map(|&x| x as f32).collect();
        let inputs = BTreeMap::from([
            ("q".to_string(), qt), ("k".to_string(), kt), ("v".to_string(), vt), ("dout".to_string(), dt),
            ("o".to_string(), t(&o32, &[nh, d, seq])), ("lse".to_string(), HostTensor::from_f32(DType::F32, &[nh, seq], &lse32)),
        ]);
        let params = chip.params();
        let f = rainier_funcsim::run(&p, &params, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ts = rainier_timesim::simulate(&p, &params, Some(&inputs), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(ts.machine.as_ref() == Some(&f.machine), "timing and functional memory differ");
        let tol = if dtype == DType::Bf16 { 8.0 * 2f64.powi(-8) } else { 2f64.powi(-14) };
        for (name, want) in [("dq", &dq), ("dk", &dk), ("dv", &dv)] {
            let got = f.outputs[name].to_f32();
            let max = want.iter().fold(0f64, |m, x| m.max(x.abs()));
            for i in 0..want.len() {
                prop_assert!((f64::from(got[i]) - want[i]).abs() <= tol * max, "{name}[{i}] = {} vs {} (max {max})", got[i], want[i]);
            }
        }
    }
}

#[test]
fn bad_shapes_are_clear_errors() {
    let shape =
        AttentionShape { batch: 1, heads: 3, kv_heads: 2, seq: 128, head_dim: 64, causal: true };
    let e = attention_backward(Chip::Trn2, &shape, DType::Bf16)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("multiple of kv_heads"), "{e}");
    let shape = AttentionShape { heads: 2, kv_heads: 1, seq: 100, ..shape };
    let e = attention_backward(Chip::Trn2, &shape, DType::Bf16)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("multiple of 128"), "{e}");
    let err = |chip, shape: &AttentionShape, dtype| {
        attention_backward(chip, shape, dtype).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let shape = AttentionShape { seq: 256, ..shape };
    assert!(err(Chip::Trn2, &shape, DType::Fp8E4m3).contains("bf16, fp16 or fp32"));
    let e = rainier_kernels::attention(Chip::Trn2, &shape, DType::Fp8E4m3)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("bf16, fp16 or fp32"), "{e}");
    // Query blocks go in chunks and, beyond 12K on trn1, the key side is streamed: 32K builds
    // (with the dq scratch accumulator) where 12,032 was the limit.
    let long = AttentionShape { seq: 8192, head_dim: 128, ..shape };
    let p = attention_backward(Chip::Trn1, &long, DType::Bf16).unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.tensors.iter().any(|t| t.name == "dq_acc"));
    let longer = AttentionShape { seq: 32768, causal: false, heads: 1, ..long };
    let p = attention_backward(Chip::Trn1, &longer, DType::Bf16).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.tensors.iter().any(|t| t.name == "dq_acc"));
}
