//! Op-cost models against their calibration data.

use rainier_hw::{Catalog, Framework};
use rainier_model::{Batch, Model, OpKind};
use rainier_perf::{gemm_fit_report, CostModel, GemmOperands, NeuronCosts, NeuronTable, Precision};

/// Fitted on square shapes only; the held-out training-sized shapes (M ≥ 512) must agree.
#[test]
fn gpu_gemm_model_predicts_held_out_h100_shapes() {
    let report = gemm_fit_report();
    let (cal_median, cal_max) = report.errors(|p| p.6);
    assert!(cal_median < 0.06 && cal_max < 0.15, "calibration {cal_median} {cal_max}");
    let (median, max) = report.errors(|p| !p.6 && p.0 >= 512);
    assert!(median < 0.08 && max < 0.30, "held-out M>=512: median {median}, max {max}");
    let (median, _) = report.errors(|p| !p.6);
    assert!(median < 0.12, "all held-out: median {median}");
}

#[test]
fn neuron_tables_parse_for_every_generation() {
    for chip in ["trn1", "inf2", "trn2", "trn3"] {
        let t = NeuronTable::for_chip(chip).expect(chip);
        let flops = 2.0 * 4096.0 * 4096.0 * 4096.0;
        let s = t.gemm_seconds(4096, 4096, 4096, flops, GemmOperands::Bf16).expect("gemm");
        // One NeuronCore: 79-92 TF peak; the tables reach 75-98 % of it on big GEMMs.
        let tflops = flops / s / 1e12;
        assert!((55.0..95.0).contains(&tflops), "{chip}: {tflops}");
    }
    assert!(NeuronTable::for_chip("h100").is_err());
    assert!(NeuronTable::parse("header\ngemm,bf16,m=1 n=2,5", "x").is_err());
}

#[test]
fn costs_are_positive_and_scale_with_work_on_every_chip() {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-8b").expect("preset");
    for chip in &catalog.chips {
        for precision in [Precision::Bf16, Precision::Fp8] {
            let cost = CostModel::new(chip, 1, precision, Framework::Fused, NeuronCosts::Tables)
                .expect("model");
            let small = model.layer_ops(Batch::new(1, 2048, 1));
            let big = model.layer_ops(Batch::new(4, 2048, 1));
            let t = |ops: &rainier_model::LayerOps| ops.sum(|op| cost.op_seconds(op));
            let (ts, tb) = (t(&small), t(&big));
            assert!(ts > 0.0 && ts.is_finite(), "{}", chip.name);
            assert!(tb > 2.5 * ts && tb < 4.5 * ts, "{}: {ts} -> {tb}", chip.name);
            // No op beats the chip's peak or its HBM bandwidth.
            for op in small.forward.iter().chain(&small.backward) {
                let s = cost.op_seconds(op);
                assert!(
                    op.flops / s <= chip.peak(precision.math()) * 1.0001,
                    "{} {}",
                    chip.name,
                    op.name
                );
                if let OpKind::Memory { .. } = op.kind {
                    assert!(
                        op.bytes / s <= chip.hbm_bytes_per_s.value,
                        "{} {}",
                        chip.name,
                        op.name
                    );
                }
            }
        }
    }
}

/// Decode GEMMs (1-32 tokens) on NeuronCores are weight-bound: the interpolated time never
/// falls as tokens grow and stays within 25 % of the one-token time up to 32 tokens at a wide
/// shape.
#[test]
fn neuron_decode_gemms_are_weight_bound_at_every_interpolated_batch() {
    for chip in ["trn1", "inf2", "trn2", "trn3"] {
        let t = NeuronTable::for_chip(chip).expect(chip);
        let (n, k) = (6144, 4096);
        let seconds =
            |m: u64| t.gemm_seconds(m, n, k, 2.0 * (m * n * k) as f64, GemmOperands::Bf16);
        let seconds = |m: u64| seconds(m).expect("gemm");
        let one = seconds(1);
        let mut last = 0.0;
        for m in 1..=32 {
            let s = seconds(m);
            assert!(s >= last * (1.0 - 1e-9), "{chip}: m={m} {s} < {last}");
            assert!(s <= one * 1.25, "{chip}: m={m} {s} vs one token {one}");
            last = s;
        }
    }
}

/// MX GEMMs on NeuronCore-v4 come from the simulated MX gemm rows, not a peak ratio: at
/// 4096³ on trn3 the MXFP8 time is the table's and 1.5-4× faster than bf16; chips without
/// NeuronCore-v4's MX matmul refuse the MX precisions.
#[test]
fn mx_gemms_come_from_the_simulated_mx_kernel_on_neuroncore_v4_only() {
    let catalog = Catalog::built_in();
    let t = NeuronTable::for_chip("trn3").expect("trn3");
    assert!(t.has_mx());
    let flops = 2.0 * 4096f64.powi(3);
    let mx = t.gemm_seconds(4096, 4096, 4096, flops, GemmOperands::Mxfp8).expect("mx row");
    let bf16 = t.gemm_seconds(4096, 4096, 4096, flops, GemmOperands::Bf16).expect("bf16 row");
    assert!((1.5..4.0).contains(&(bf16 / mx)), "MXFP8 speed-up {}", bf16 / mx);
    let trn3 = catalog.chip("trn3").expect("trn3");
    // One rank per physical core, so the op time is the per-core table time.
    let cost = CostModel::new(trn3, 8, Precision::Mxfp8, Framework::Fused, NeuronCosts::Tables)
        .expect("trn3 runs MX")
        .with_step_efficiency(1.0);
    let op = rainier_model::Op {
        name: "gemm",
        pass: rainier_model::Pass::Forward,
        kind: OpKind::Gemm { m: 4096, n: 4096, k: 4096, count: 1 },
        flops,
        bytes: 3.0 * 2.0 * 4096.0 * 4096.0,
    };
    let t_op = cost.op_seconds(&op);
    assert!(t_op >= mx && t_op < mx * 1.2, "op {t_op} vs row {mx} (+ the activation cast)");
    for chip in ["trn1", "trn2", "inf2", "h100", "tpu-v5p"] {
        let c = catalog.chip(chip).expect(chip);
        let err = CostModel::new(c, 1, Precision::Mxfp4, Framework::Fused, NeuronCosts::Tables)
            .expect_err("no MX matmul");
        assert!(err.to_string().contains("NeuronCore-v4"), "{chip}: {err}");
    }
}
