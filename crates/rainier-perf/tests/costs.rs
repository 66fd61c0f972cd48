//! Op-cost models against their calibration data.

use rainier_hw::{Catalog, Framework};
use rainier_model::{Batch, Model, OpKind};
use rainier_perf::{gemm_fit_report, CostModel, NeuronCosts, NeuronTable, Precision};

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
        let s = t.gemm_seconds(4096, 4096, 4096, flops, false).expect("gemm");
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
        let seconds = |m: u64| t.gemm_seconds(m, n, k, 2.0 * (m * n * k) as f64, false);
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
