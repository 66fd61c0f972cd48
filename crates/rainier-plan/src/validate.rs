//! `rainier validate`: predict every committed validation point and report the error.

use rainier_hw::Catalog;
use rainier_model::{Mlp, Model, Recompute};
use rainier_perf::{NeuronCosts, Precision};
use serde::{Deserialize, Serialize};

use crate::{evaluate, TrainConfig};

/// The median relative error the validation test allows (stated in the README).
pub const VALIDATION_MEDIAN_LIMIT: f64 = 0.10;

/// The largest relative error any single point may have (stated in the README).
pub const VALIDATION_MAX_LIMIT: f64 = 0.25;

const DATASET: &str = include_str!("../data/validation.json");

#[derive(Debug, Deserialize)]
struct Dataset {
    points: Vec<Point>,
}

#[derive(Debug, Deserialize)]
struct Point {
    id: String,
    source: String,
    chip: String,
    chips: u64,
    model: serde_json::Value,
    seq: u64,
    global_batch: u64,
    micro_batch: u64,
    tp: u64,
    pp: u64,
    dp: u64,
    precision: String,
    zero: u8,
    recompute: String,
    metric: String,
    measured: f64,
}

/// One point's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationPoint {
    pub id: String,
    pub source: String,
    pub chip: String,
    pub metric: String,
    pub measured: f64,
    pub predicted: f64,
    /// `predicted / measured − 1`.
    pub error: f64,
    pub fits: bool,
    /// The recompute policy evaluated.
    pub recompute: String,
    /// True for the points the in-step kernel efficiency was fitted on.
    pub calibration: bool,
}

/// Every point, with the median and maximum absolute error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationReport {
    pub points: Vec<ValidationPoint>,
    pub median_abs_error: f64,
    pub max_abs_error: f64,
}

/// Megatron-LM's model FLOPs per token (`num_floating_point_operations` in
/// `megatron/training/training.py`, 2024): full (non-causal) attention, GQA, SwiGLU and MoE
/// aware, logits counted once.
pub fn megatron_flops_per_token(model: &Model, seq: u64) -> f64 {
    let h = model.hidden as f64;
    let layers = model.layers as f64;
    let query = model.attention_width() as f64 / h;
    let groups = model.kv_heads as f64 / model.heads as f64;
    let experts = model.moe.map_or(1.0, |m| m.top_k as f64);
    let gated = if model.mlp == Mlp::SwiGlu { 1.5 } else { 1.0 };
    12.0 * layers
        * h
        * h
        * ((1.0 + groups + seq as f64 / h) * query
            + model.ffn as f64 / h * experts * gated
            + model.vocab as f64 / (2.0 * layers * h))
}

/// The validation points the in-step kernel efficiency is fitted on; every other point
/// only checks it.
pub const CALIBRATION_SUBSET: [&str; 2] = ["megatron-h100-16b", "megatron-h100-314b"];

/// Fits the in-step kernel efficiency on [`CALIBRATION_SUBSET`]: the value (to 0.01) that
/// makes the geometric mean of predicted/measured closest to 1.
pub fn calibrate_step_efficiency() -> Result<f64, String> {
    let mut best = (f64::INFINITY, 1.0);
    for step in 50..=100 {
        let eta = f64::from(step) / 100.0;
        let report = validate_with(Some(eta))?;
        let log_mean = report
            .points
            .iter()
            .filter(|p| CALIBRATION_SUBSET.contains(&p.id.as_str()))
            .map(|p| (1.0 + p.error).ln())
            .sum::<f64>()
            .abs();
        if log_mean < best.0 {
            best = (log_mean, eta);
        }
    }
    Ok(best.1)
}

/// Predicts every point of the committed dataset with the built-in catalog.
pub fn validate() -> Result<ValidationReport, String> {
    validate_with(None)
}

fn validate_with(step_efficiency: Option<f64>) -> Result<ValidationReport, String> {
    let dataset: Dataset =
        serde_json::from_str(DATASET).map_err(|e| format!("validation dataset: {e}"))?;
    let catalog = Catalog::built_in();
    let mut points = Vec::new();
    for p in dataset.points {
        let model = match &p.model {
            serde_json::Value::String(name) => Model::preset(name),
            config => Model::from_config_json(&config.to_string(), &p.id),
        }
        .map_err(|e| e.to_string())?;
        let chip = catalog.chip(&p.chip).map_err(|e| e.to_string())?;
        let cfg = TrainConfig {
            micro_batch: Some(p.micro_batch),
            tp: Some(p.tp),
            pp: Some(p.pp),
            dp: Some(p.dp),
            precision: match p.precision.as_str() {
                "bf16" => Precision::Bf16,
                "amp-bf16" => Precision::AmpBf16,
                "fp8" => Precision::Fp8,
                other => return Err(format!("{}: unknown precision {other}", p.id)),
            },
            recompute: Recompute::None,
            zero: p.zero,
            neuron_costs: NeuronCosts::Tables,
            step_efficiency,
            ..TrainConfig::new(p.chips, p.seq, p.global_batch)
        };
        // Recompute as the source states it; where it does not ("auto"), the lightest policy
        // that fits, as a practitioner would choose.
        let policies: &[Recompute] = match p.recompute.as_str() {
            "none" => &[Recompute::None],
            "selective" => &[Recompute::Selective],
            "full" => &[Recompute::Full],
            "auto" => &[Recompute::None, Recompute::Selective, Recompute::Full],
            other => return Err(format!("{}: unknown recompute {other}", p.id)),
        };
        let mut report = None;
        for &recompute in policies {
            let r = evaluate(&model, chip, &TrainConfig { recompute, ..cfg.clone() })
                .map_err(|e| format!("{}: {e}", p.id))?;
            let fits = r.fits;
            report = Some(r);
            if fits {
                break;
            }
        }
        let Some(report) = report else { continue };
        let predicted = match p.metric.as_str() {
            "megatron_model_tflops_per_chip" => {
                report.tokens_per_s_per_chip * megatron_flops_per_token(&model, p.seq) / 1e12
            }
            "tokens_per_s_per_chip" => report.tokens_per_s_per_chip,
            "sequences_per_s" => report.tokens_per_s / p.seq as f64,
            other => return Err(format!("{}: unknown metric {other}", p.id)),
        };
        let calibration = CALIBRATION_SUBSET.contains(&p.id.as_str());
        points.push(ValidationPoint {
            id: p.id,
            source: p.source,
            chip: p.chip,
            metric: p.metric,
            measured: p.measured,
            predicted,
            error: predicted / p.measured - 1.0,
            fits: report.fits,
            recompute: report.plan.recompute.clone(),
            calibration,
        });
    }
    let mut errors: Vec<f64> = points.iter().map(|p| p.error.abs()).collect();
    errors.sort_by(f64::total_cmp);
    let median = match errors.len() {
        0 => 0.0,
        n if n % 2 == 1 => errors[n / 2],
        n => (errors[n / 2 - 1] + errors[n / 2]) / 2.0,
    };
    Ok(ValidationReport {
        points,
        median_abs_error: median,
        max_abs_error: errors.last().copied().unwrap_or(0.0),
    })
}
