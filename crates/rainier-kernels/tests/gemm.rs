//! `gemm` against the f64 reference on fresh random inputs (odd sizes included), and the
//! builder's synchronization checked by running the same program in timing mode.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_isa::Engine;
use rainier_kernels::{gemm, gemm_to, KernelBuilder, KernelError};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

fn random(dtype: DType, shape: &[u64], seed: u64) -> HostTensor {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product::<u64>() as usize;
    let v: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    HostTensor::from_f32(dtype, &shape, &v)
}

/// Runs `p` functionally and in timing mode on `a`, `b`; checks `c` against the f64 product:
/// exact products of the input format, fp32 accumulation over K adds at most
/// (K + 2) · 2^-24 · Σ|a·b|.
fn check(
    p: &rainier_isa::Program,
    chip: Chip,
    a: &HostTensor,
    b: &HostTensor,
    mnk: (u64, u64, u64),
) -> Result<(), TestCaseError> {
    check_rounded(p, chip, a, b, mnk, 0.0)
}

/// [`check`] for an output rounded once from fp32 with unit roundoff `out_eps` (relative
/// below the normal range's bottom 2^-14 of fp16, absolute `out_eps · 2^-14` under it).
fn check_rounded(
    p: &rainier_isa::Program,
    chip: Chip,
    a: &HostTensor,
    b: &HostTensor,
    (m, n, k): (u64, u64, u64),
    out_eps: f64,
) -> Result<(), TestCaseError> {
    let inputs = BTreeMap::from([("a".to_string(), a.clone()), ("b".to_string(), b.clone())]);
    let params = chip.params();
    let f = rainier_funcsim::run(p, &params, &inputs)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = f.outputs["c"].to_f32();
    let (av, bv): (Vec<f64>, Vec<f64>) = (
        a.to_f32().iter().map(|&x| f64::from(x)).collect(),
        b.to_f32().iter().map(|&x| f64::from(x)).collect(),
    );
    let want = rainier_reference::matmul(&av, &bv, k as usize, m as usize, n as usize);
    let (mu, nu) = (m as usize, n as usize);
    for i in 0..mu * nu {
        let (mi, ni) = (i / nu, i % nu);
        let scale: f64 =
            (0..k as usize).map(|kk| (av[kk * mu + mi] * bv[kk * nu + ni]).abs()).sum();
        let bound = (k as f64 + 2.0) * 2f64.powi(-24) * scale * (1.0 + out_eps)
            + out_eps * (want[i].abs() + 2f64.powi(-14))
            + 1e-30;
        prop_assert!(
            (f64::from(got[i]) - want[i]).abs() <= bound,
            "c[{mi}, {ni}] = {} vs {}",
            got[i],
            want[i]
        );
    }
    // The automatic semaphores make the program race-free: timing mode computes the same.
    let t = rainier_timesim::simulate(p, &params, Some(&inputs), false)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(t.machine.as_ref() == Some(&f.machine));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// Tolerance: products of `dtype` inputs are exact; fp32 accumulation over K adds at most
    /// K · 2^-24 · Σ|a·b| (fp32 inputs: one more rounding per product).
    #[test]
    fn gemm_matches_reference(m in 1u64..300, n in 1u64..700, k in 1u64..300, seed: u64,
                              dtype in prop::sample::select(vec![DType::Bf16, DType::F16, DType::F32]),
                              chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])) {
        let p = gemm(chip, m, n, k, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (a, b) = (random(dtype, &[k, m], seed), random(dtype, &[k, n], seed ^ 1));
        check(&p, chip, &a, &b, (m, n, k))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// bf16 and fp16 outputs (one K block and several): the fp32 bound plus one rounding of
    /// the result (unit roundoff: 2^-8 bf16, 2^-11 fp16; round to nearest even).
    #[test]
    fn gemm_with_narrow_output_matches_reference(m in 1u64..300, n in 1u64..700, k in prop::sample::select(vec![1u64, 130, 300, 9000]),
                                                 seed: u64,
                                                 out in prop::sample::select(vec![DType::Bf16, DType::F16]),
                                                 chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn3])) {
        let p = gemm_to(chip, m, n, k, DType::Bf16, out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.tensors.iter().find(|t| t.name == "c").map(|t| t.dtype), Some(out));
        let (a, b) = (random(DType::Bf16, &[k, m], seed), random(DType::Bf16, &[k, n], seed ^ 1));
        let eps = if out == DType::Bf16 { 2f64.powi(-8) } else { 2f64.powi(-11) };
        check_rounded(&p, chip, &a, &b, (m, n, k), eps)?;
    }

    /// fp8 (double row on v3/v4 where K allows, single row on v2 and for the remainder):
    /// exact fp8 products, fp32 accumulation, the same bound; timing mode agrees.
    #[test]
    fn fp8_gemm_matches_reference(m in 1u64..200, n in 1u64..600, k in 1u64..700, seed: u64,
                                  dtype in prop::sample::select(vec![DType::Fp8E4m3, DType::Fp8E5m2]),
                                  chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3])) {
        let p = gemm(chip, m, n, k, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let double_rows = p.instructions.iter().filter(|i| matches!(i.op, rainier_isa::Op::Matmul { double_row: true, .. })).count();
        prop_assert_eq!(double_rows > 0, chip != Chip::Trn1 && k >= 256);
        let (a, b) = (random(dtype, &[k, m], seed), random(dtype, &[k, n], seed ^ 1));
        check(&p, chip, &a, &b, (m, n, k))?;
    }
}

/// Double row doubles fp8 throughput on NeuronCore-v3: a 4096³ fp8 gemm on trn2 takes about
/// half the time of bf16, and none on trn1 (no double row on v2).
#[test]
fn fp8_double_row_halves_gemm_time_on_trn2() {
    let time = |chip: Chip, dtype| {
        let p = gemm(chip, 4096, 4096, 4096, dtype).unwrap_or_else(|e| panic!("{e}"));
        rainier_timesim::simulate(&p, &chip.params(), None, false)
            .unwrap_or_else(|e| panic!("{e}"))
            .time_ns()
    };
    let (bf16, fp8) = (time(Chip::Trn2, DType::Bf16), time(Chip::Trn2, DType::Fp8E4m3));
    let ratio = fp8 / bf16;
    assert!(ratio > 0.45 && ratio < 0.7, "trn2 fp8/bf16 = {ratio}");
    let (bf16, fp8) = (time(Chip::Trn1, DType::Bf16), time(Chip::Trn1, DType::Fp8E4m3));
    let ratio = fp8 / bf16;
    assert!(ratio > 0.8, "trn1 fp8/bf16 = {ratio}");
}

/// NeuronCore-v4 widens MXFP4 to MXFP8 before the PE array [A-nc4]: on trn3 a TensorE-bound
/// MXFP4 gemm takes as long as MXFP8. A what-if core with `timing.mxfp4_matmul_speedup = 2`
/// (trn4's reading of AWS's 6x FP4 / 3x FP8 claims) halves TensorE's busy time for MXFP4 and
/// leaves MXFP8 alone.
#[test]
fn mxfp4_speedup_moves_mxfp4_matmuls_only() {
    let trn3 = Chip::Trn3.params();
    let mut fast = trn3.clone();
    fast.set("timing.mxfp4_matmul_speedup", 2.0).unwrap_or_else(|e| panic!("{e}"));
    let tensor_busy = |params: &rainier_arch::ChipParams, dtype| {
        let p = gemm(params.clone(), 2048, 2048, 4096, dtype).unwrap_or_else(|e| panic!("{e}"));
        let r =
            rainier_timesim::simulate(&p, params, None, false).unwrap_or_else(|e| panic!("{e}"));
        r.engines[Engine::Tensor.index()].busy_ps as f64
    };
    let (fp8, fp4) = (DType::Fp8E4m3fnx4, DType::Fp4E2m1fnx4);
    let same = tensor_busy(&trn3, fp4) / tensor_busy(&trn3, fp8);
    assert!((same - 1.0).abs() < 0.02, "trn3 MXFP4/MXFP8 TensorE busy = {same}");
    let fp8_ratio = tensor_busy(&fast, fp8) / tensor_busy(&trn3, fp8);
    assert!((fp8_ratio - 1.0).abs() < 1e-9, "MXFP8 moved: {fp8_ratio}");
    let fp4_ratio = tensor_busy(&fast, fp4) / tensor_busy(&trn3, fp4);
    assert!(fp4_ratio > 0.45 && fp4_ratio < 0.6, "MXFP4 with speed-up 2: {fp4_ratio}");
}

/// A K whose strip of b would not fit in SBUF streams b: K = 50,000 on trn1 (192 KiB per
/// partition) against the f64 reference, and the timing run agrees.
#[test]
fn very_long_k_streams_b() {
    let (m, n, k) = (3u64, 600u64, 50_000u64);
    let chip = Chip::Trn1;
    let p = gemm(chip, m, n, k, DType::Bf16).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (random(DType::Bf16, &[k, m], 7), random(DType::Bf16, &[k, n], 8));
    check(&p, chip, &a, &b, (m, n, k)).unwrap_or_else(|e| panic!("{e}"));
}

/// K blocks with fp32 accumulators in SBUF over several row tiles (the a tiles of a chunk
/// budgeted beside the b tiles), full and partial tiles, against the f64 reference; and shapes
/// whose K strip nearly fills SBUF build.
#[test]
fn k_blocked_gemm_with_several_row_tiles() {
    for (chip, dtype, (m, n, k), seed) in [
        (Chip::Trn1, DType::F32, (256u64, 512u64, 3200u64), 11u64),
        (Chip::Trn1, DType::F32, (130, 2100, 1700), 12),
    ] {
        let p = gemm(chip, m, n, k, dtype).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (random(dtype, &[k, m], seed), random(dtype, &[k, n], seed + 100));
        check(&p, chip, &a, &b, (m, n, k)).unwrap_or_else(|e| panic!("{m}x{n}x{k}: {e}"));
    }
    for (chip, dtype, (m, n, k)) in [
        (Chip::Trn1, DType::F32, (512u64, 512u64, 6144u64)),
        (Chip::Trn1, DType::Bf16, (512, 256, 16384)),
        (Chip::Trn2, DType::Bf16, (512, 512, 14336)),
        (Chip::Trn1, DType::Bf16, (4096, 512, 16384)),
    ] {
        assert!(gemm(chip, m, n, k, dtype).is_ok(), "{m}x{n}x{k} {dtype} on {chip}");
    }
}

#[test]
fn kernels_that_do_not_fit_get_a_clear_error() {
    let mut kb = KernelBuilder::new(Chip::Trn1);
    let e = kb.sbuf(128, DType::F32, &[60_000]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("does not fit in SBUF") && e.contains("196608"), "{e}");
    let _a = kb.psum(128, DType::F32, &[512]).unwrap_or_else(|e| panic!("{e}"));
    let e = kb.psum(128, DType::F32, &[4096]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("does not fit in PSUM"), "{e}");
    let t = kb.sbuf(128, DType::F32, &[16]).unwrap_or_else(|e| panic!("{e}"));
    assert!(kb.free(&t).is_ok());
    assert!(matches!(kb.free(&t), Err(KernelError::BadFree(_))));
    assert!(gemm(Chip::Trn2, 0, 4, 4, DType::Bf16).is_err());
}

/// A large gemm on trn2, timing only: how close the simulated kernel gets to TensorE peak.
#[test]
#[allow(clippy::print_stderr)]
fn gemm_timing_reaches_a_reasonable_fraction_of_peak() {
    let (m, n, k) = (1024u64, 1024, 1024);
    let p = gemm(Chip::Trn2, m, n, k, DType::Bf16).unwrap_or_else(|e| panic!("{e}"));
    let params = Chip::Trn2.params();
    let r = rainier_timesim::simulate(&p, &params, None, false).unwrap_or_else(|e| panic!("{e}"));
    let peak = 128.0 * 128.0 * 2.0 * params.core.tensor_clock_hz.value;
    let achieved = 2.0 * (m * n * k) as f64 / (r.time_ps as f64 * 1e-12);
    let fraction = achieved / peak;
    let tensor = &r.engines[Engine::Tensor.index()];
    eprintln!(
        "gemm {m}x{n}x{k} bf16 on trn2: {:.1} us, {:.1}% of TensorE peak, tensor busy {:.1}%",
        r.time_ns() / 1000.0,
        100.0 * fraction,
        100.0 * tensor.busy_ps as f64 / r.time_ps as f64
    );
    // Regression floor: 62% today, DMA-bound at this size (the fp32 output is as many bytes
    // as both bf16 inputs together). A serialized pipeline (no multi-buffering) gives ~9%.
    assert!(fraction > 0.55, "{fraction}");
}

/// Issue #4's target: gemm 4096³ bf16 on one trn2 NeuronCore reaches >= 85% of TensorE peak
/// in the model (96%, TensorE-bound: unverified, no TensorE-bound kernel has been measured; on
/// trn1 the library gemm and the tutorial's blocked kernel are DMA-bound at 85%, which the
/// model reproduces for the tutorial, timings.json).
#[test]
fn gemm_4096_cubed_reaches_85_percent_of_peak_on_trn2() {
    let n = 4096u64;
    let p = gemm(Chip::Trn2, n, n, n, DType::Bf16).unwrap_or_else(|e| panic!("{e}"));
    let params = Chip::Trn2.params();
    let r = rainier_timesim::simulate(&p, &params, None, false).unwrap_or_else(|e| panic!("{e}"));
    let peak = 128.0 * 128.0 * 2.0 * params.core.tensor_clock_hz.value;
    let fraction = 2.0 * (n * n * n) as f64 / (r.time_ps as f64 * 1e-12) / peak;
    assert!(fraction >= 0.85, "{fraction}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 32, ..ProptestConfig::default() })]

    /// MX on trn3 (MXFP8 e4m3fn/e5m2, MXFP4): inputs quantized on the host, the product of the
    /// dequantized values in f64 within the fp32-accumulation bound over K; timing mode agrees.
    #[test]
    fn mx_gemm_matches_reference(half_m in 1u64..100, n in 1u64..600, k32 in 1u64..8, seed: u64,
                                 dtype in prop::sample::select(vec![DType::Fp8E4m3fnx4, DType::Fp8E5m2x4, DType::Fp4E2m1fnx4])) {
        let (k, m) = (128 * k32, 2 * half_m);
        let chip = Chip::Trn3;
        let p = gemm(chip, m, n, k, dtype).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let uses_mx = p.instructions.iter().any(|i| matches!(i.op, rainier_isa::Op::MatmulMx { .. }));
        prop_assert!(uses_mx);
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let values = |len: usize, s: u64| -> Vec<f32> {
            let mut r = rand::rngs::StdRng::seed_from_u64(s);
            // Magnitudes spread over 2^-6..2^6 so the groups' scales differ.
            (0..len).map(|_| r.gen_range(-1.0f32..1.0) * 2f32.powi(r.gen_range(-6..6))).collect()
        };
        let (a, a_scale) = rainier_kernels::quantize_mx_host(dtype, ku, mu, &values(ku * mu, seed));
        let (b, b_scale) = rainier_kernels::quantize_mx_host(dtype, ku, nu, &values(ku * nu, seed ^ 1));
        let av = rainier_kernels::dequantize_mx_host(&a, &a_scale);
        let bv = rainier_kernels::dequantize_mx_host(&b, &b_scale);
        let inputs = BTreeMap::from([
            ("a".to_string(), a), ("b".to_string(), b),
            ("a_scale".to_string(), a_scale), ("b_scale".to_string(), b_scale),
        ]);
        let params = chip.params();
        let f = rainier_funcsim::run(&p, &params, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = f.outputs["c"].to_f32();
        let want = rainier_reference::matmul(&av, &bv, ku, mu, nu);
        for i in 0..mu * nu {
            let (mi, ni) = (i / nu, i % nu);
            let scale: f64 = (0..ku).map(|kk| (av[kk * mu + mi] * bv[kk * nu + ni]).abs()).sum();
            let bound = (k as f64 + 2.0) * 2f64.powi(-24) * scale + 1e-30;
            prop_assert!((f64::from(got[i]) - want[i]).abs() <= bound, "c[{mi}, {ni}] = {} vs {}", got[i], want[i]);
        }
        let t = rainier_timesim::simulate(&p, &params, Some(&inputs), false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(t.machine.as_ref() == Some(&f.machine));
    }
}

/// MX is refused before NeuronCore-v4 and for K not a multiple of 128, with the reason.
#[test]
fn mx_gemm_shape_errors() {
    let e = gemm(Chip::Trn2, 128, 128, 512, DType::Fp8E4m3fnx4).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("needs NeuronCore-v4"));
    let e = gemm(Chip::Trn3, 128, 128, 500, DType::Fp4E2m1fnx4).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("multiple of 128"));
    let e = gemm(Chip::Trn3, 127, 128, 512, DType::Fp4E2m1fnx4).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("M must be even"));
}

/// Issue 19, defect 10: a gemm beyond the instruction limit is refused from its shape, before
/// it is built (65536³ took 16 s and 2.3 GB to refuse; 33.5M matmuls would be needed).
#[test]
fn oversized_gemm_is_refused_before_building() {
    let e = gemm(Chip::Trn2, 65536, 65536, 65536, DType::Bf16)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("too large to build"), "{e}");
}
