//! The planner against published training measurements (`data/validation.json`).

use rainier_perf::NeuronCosts;
use rainier_plan::{
    calibrate_neuron_step_efficiency, calibrate_step_efficiency, validate, INFERENCE_MAX_LIMIT,
    INFERENCE_MEDIAN_LIMIT, VALIDATION_MAX_LIMIT, VALIDATION_MEDIAN_LIMIT,
};

#[test]
fn validation_median_error_is_within_the_stated_limit() {
    let report = validate().expect("dataset evaluates");
    assert!(report.points.len() >= 9);
    for p in &report.points {
        assert!(p.fits, "{}: the evaluated plan does not fit in memory", p.id);
        assert!(p.predicted.is_finite() && p.predicted > 0.0, "{}", p.id);
    }
    assert!(
        report.median_abs_error <= VALIDATION_MEDIAN_LIMIT,
        "median |error| {:.3} above the stated {:.2}",
        report.median_abs_error,
        VALIDATION_MEDIAN_LIMIT
    );
    // No per-point correction factors: every training point within the stated maximum.
    for p in report.points.iter().filter(|p| p.kind == "training") {
        assert!(
            p.error.abs() <= VALIDATION_MAX_LIMIT,
            "{}: error {:+.3} beyond the stated {:.2}",
            p.id,
            p.error,
            VALIDATION_MAX_LIMIT
        );
    }
}

#[test]
fn neuron_step_efficiency_is_what_its_calibration_point_gives() {
    for costs in [NeuronCosts::Tables, NeuronCosts::LayerPrograms] {
        let fitted = calibrate_neuron_step_efficiency(costs).expect("calibration runs");
        let used = match costs {
            NeuronCosts::LayerPrograms => rainier_perf::NEURON_LAYER_PROGRAM_STEP_EFFICIENCY,
            _ => rainier_perf::NEURON_STEP_KERNEL_EFFICIENCY,
        }
        .value;
        assert!(
            (fitted - used).abs() < 0.015,
            "{costs:?}: the trn1 points give {fitted}, the model uses {used}"
        );
    }
}

#[test]
fn step_efficiency_is_what_the_calibration_subset_gives() {
    let fitted = calibrate_step_efficiency().expect("calibration runs");
    let used = rainier_perf::STEP_KERNEL_EFFICIENCY.value;
    assert!(
        (fitted - used).abs() < 0.015,
        "calibration subset gives {fitted}, the model uses {used}"
    );
}

/// Points that miss the stated limit, each with why; the test asserts they still miss.
const KNOWN_MISSES: &[(&str, &str, &str)] = &[(
    "inf2-llama3-8b-bs1",
    "ttft_ms",
    "-37 % (-50 % before NeuronLink collectives ran at the rate of one-direction rings): a context-encoding graph's costs beyond its kernels, collectives and the per-layer cost fitted on decode (graph switch, bucket KV writes, host work before the first token) are not modelled; it was -45 % while the per-layer cost was 120 µs",
)];

/// Serving: the published latencies and throughput within the (weaker) stated limits, and the
/// calibration point reproduced.
#[test]
fn inference_points_are_within_their_stated_limits() {
    let report = validate().expect("dataset evaluates");
    let inference: Vec<_> = report.points.iter().filter(|p| p.kind == "inference").collect();
    assert!(inference.len() >= 5);
    for p in &inference {
        assert!(p.fits, "{} {}", p.id, p.metric);
        if let Some(why) =
            KNOWN_MISSES.iter().find(|k| (k.0, k.1) == (p.id.as_str(), p.metric.as_str()))
        {
            // Still a miss: when it is fixed, this list must shrink.
            assert!(
                p.error.abs() > INFERENCE_MAX_LIMIT,
                "{} {} now within limits: {}",
                p.id,
                p.metric,
                why.2
            );
            continue;
        }
        assert!(p.error.abs() <= INFERENCE_MAX_LIMIT, "{} {}: {:+.3}", p.id, p.metric, p.error);
        if p.calibration {
            assert!(p.error.abs() < 0.02, "calibration {} {}: {:+.3}", p.id, p.metric, p.error);
        }
    }
    assert!(report.inference_median_abs_error <= INFERENCE_MEDIAN_LIMIT);
}
