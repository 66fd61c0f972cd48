//! The training planner.
//!
//! [`evaluate`] takes a [`Model`](rainier_model::Model), a [`Chip`](rainier_hw::Chip) and a
//! [`TrainConfig`] (cluster size, sequence, batch, parallel degrees or none, precision,
//! recompute, ZeRO stage, framework) and predicts one training step: step time with its
//! breakdown (compute, communication and how much of it is exposed, pipeline bubble,
//! optimizer), throughput, MFU and memory per device. Pure functions over `rainier-model`,
//! `rainier-hw` and `rainier-perf`; nothing here reads files or knows the simulators.
//! [`validate`] runs the committed validation dataset and reports the error per point.

mod compare;
mod economics;
mod queueing;
mod search;
mod serve;
mod train;
mod validate;
mod workload;

pub use compare::{
    compare, compare_serve, CompareConfig, CompareReport, CompareRow, ServeCompareReport,
    ServeCompareRow,
};
pub use economics::{
    price_range, Budget, Economics, EconomicsConfig, Goodput, Pricing, Recovery,
    ECONOMICS_ASSUMPTIONS,
};
pub use search::{search, PlanSummary, Progress, SearchOptions, SearchReport};
pub use serve::{
    serve, serve_disaggregated, serve_search, ColocatedReport, Continuous, DisaggregatedReport,
    Disaggregation, Frontend, KvFormat, KvTransferReport, NeuronShapes, PoolReport, PrefixCache,
    PrefixCacheReport, ServeConfig, ServeMemory, ServePlan, ServeReport, Speculative,
    SpeculativeHead, SpeculativeReport, StepBreakdown, WeightFormat, WorkloadReport,
    SERVE_ASSUMPTIONS,
};
pub use train::{
    evaluate, precision_name, ranks_per_chip, recompute_name, Breakdown, Comm, CommByKind, Memory,
    Moments, Placement, Plan, PlanError, TrainConfig, TrainReport, TRAIN_ASSUMPTIONS,
};
pub use validate::{
    calibrate_neuron_step_efficiency, calibrate_step_efficiency, megatron_flops_per_token,
    validate, validate_neuron_costs, ValidationPoint, ValidationReport, CALIBRATION_SUBSET,
    INFERENCE_MAX_LIMIT, INFERENCE_MEDIAN_LIMIT, NEURON_CALIBRATION_SUBSET, VALIDATION_MAX_LIMIT,
    VALIDATION_MEDIAN_LIMIT,
};
pub use workload::{parse_trace, LengthDistribution, Request, Workload};

/// The note every report about a what-if chip carries: the figures the user changed.
pub(crate) fn what_if_note(chip: &rainier_hw::Chip) -> Option<String> {
    let figures = chip.what_if_figures();
    if figures.is_empty() {
        return None;
    }
    let changed: Vec<String> = figures.iter().map(|(name, v)| format!("{name} = {v:e}")).collect();
    Some(format!(
        "what-if chip {}: {} (graded what-if, not a published figure; `rainier chips --chip {}` shows each source)",
        chip.name,
        changed.join(", "),
        chip.name
    ))
}
