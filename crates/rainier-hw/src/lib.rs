//! The hardware catalog: chips, their nodes and networks, prices and power.
//!
//! The catalog is data (`data/catalog.json`, compiled from `shared/hardware-catalog.md`),
//! embedded in the binary and overridable from a file of the same shape
//! ([`Catalog::with_overrides`]). Every number is a [`Sourced`] value: the figure, a source
//! key or sentence, and a [`Grade`] saying how much to trust it. Nothing here computes time;
//! `rainier-perf` turns these figures into op costs.

use serde::{Deserialize, Serialize};

mod patch;

pub use patch::Patch;

/// How a figure is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// Vendor documentation, datasheet or vendor source code.
    Doc,
    /// Third party: press, blogs, community benchmarks.
    #[serde(rename = "3p")]
    ThirdParty,
    /// Our arithmetic on sourced numbers.
    Derived,
    /// Measured by this project.
    Meas,
    /// No public source: a modelling choice, named so it can be calibrated.
    Assumed,
    /// Changed by the user to ask "what if" (a catalog override or patch).
    #[serde(rename = "what-if")]
    WhatIf,
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grade::Doc => "doc",
            Grade::ThirdParty => "3p",
            Grade::Derived => "derived",
            Grade::Meas => "meas",
            Grade::Assumed => "assumed",
            Grade::WhatIf => "what-if",
        })
    }
}

/// A number with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sourced {
    pub value: f64,
    pub source: String,
    pub grade: Grade,
}

/// Who makes a chip, which decides its op-cost model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Gpu,
    Tpu,
    Neuron,
}

/// The execution style of the usual training stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    /// PyTorch eager: one kernel per op, elementwise ops unfused, flash attention.
    Eager,
    /// Fused kernels and overlapped communication (Megatron-Core + Transformer Engine,
    /// NeuronX Distributed, XLA/MaxText).
    Fused,
}

/// Dense peak FLOP/s per chip by math precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Peaks {
    pub bf16: Sourced,
    pub fp8: Sourced,
    pub fp32: Sourced,
    /// FP4 tensor-core peak (NVFP4/MXFP4 on Blackwell), where the chip has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp4: Option<Sourced>,
}

/// How the chips of one network level are wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Every chip reaches every other at its full bandwidth (NVSwitch, NeuronSwitch, a
    /// non-blocking fat tree).
    #[default]
    Switch,
    /// A ring of chips (Inferentia2, the Trn2 UltraServer's Z dimension).
    Ring,
    /// A torus with these side lengths, innermost first (Trn1/Trn2 4×4, TPU 16×16×24); the
    /// chip's links are split evenly over the dimensions.
    Torus(Vec<u32>),
}

impl Shape {
    /// Chips in one domain of this shape, where the shape fixes it (a torus).
    pub fn chips(&self) -> Option<u64> {
        match self {
            Shape::Torus(dims) => Some(dims.iter().map(|&d| u64::from(d)).product()),
            _ => None,
        }
    }
}

/// A second scale-up level joining several nodes (the Trn2 UltraServer's NeuronLink ring of
/// four instances).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UltraLevel {
    pub name: String,
    /// Chips in one domain of this level (a multiple of the scale-up domain).
    pub chips: u32,
    /// How the scale-up domains are joined.
    pub shape: Shape,
    /// Bandwidth per chip on this level's links, one direction, bytes/s.
    pub bytes_per_s_per_dir: Sourced,
    pub latency_s: Sourced,
}

/// The terms a price is sold on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PriceBasis {
    /// Pay by the hour, no commitment.
    OnDemand,
    /// Reserved for a fixed window ahead of time (AWS EC2 Capacity Blocks for ML).
    CapacityBlock,
    /// A one-year reservation or committed-use discount.
    #[serde(rename = "reserved-1y")]
    Reserved1y,
    /// A three-year reservation or committed-use discount.
    #[serde(rename = "reserved-3y")]
    Reserved3y,
}

impl PriceBasis {
    pub fn name(self) -> &'static str {
        match self {
            PriceBasis::OnDemand => "on-demand",
            PriceBasis::CapacityBlock => "capacity-block",
            PriceBasis::Reserved1y => "reserved-1y",
            PriceBasis::Reserved3y => "reserved-3y",
        }
    }
}

impl std::fmt::Display for PriceBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The node (instance) a chip is usually deployed in, and its networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// Chips per node or instance.
    pub chips: u32,
    /// Chips sharing the scale-up fabric (NVLink, NeuronLink, ICI).
    pub scale_up_domain_chips: u32,
    /// How the scale-up domain is wired (default: switched).
    #[serde(default)]
    pub scale_up_shape: Shape,
    /// Where the wiring (shapes and domain sizes) comes from.
    #[serde(default)]
    pub topology_source: String,
    /// Scale-up bandwidth per chip, one direction, bytes/s.
    pub scale_up_bytes_per_s_per_dir: Sourced,
    /// Latency of one collective step on the scale-up fabric, seconds.
    pub scale_up_latency_s: Sourced,
    /// Scale-out (NIC) line rate per chip, one direction, bits/s.
    pub scale_out_bits_per_s: Sourced,
    /// Latency of one collective step on the scale-out network, seconds.
    pub scale_out_latency_s: Sourced,
    /// A level between the scale-up domain and the scale-out network, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ultra: Option<UltraLevel>,
    /// On-demand price, or the only published one (capacity blocks where AWS sells no
    /// on-demand SKU; the source says which).
    pub usd_per_chip_hour: Sourced,
    /// The terms of `usd_per_chip_hour` (`None`: unstated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_basis: Option<PriceBasis>,
    /// `[low, high]` of an assumed `usd_per_chip_hour` (its source gives the reasoning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_chip_hour_range: Option<[f64; 2]>,
    /// The best published committed rate (reserved instance, committed-use discount,
    /// capacity block), where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_chip_hour_committed: Option<Sourced>,
    /// The terms of `usd_per_chip_hour_committed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_basis: Option<PriceBasis>,
    /// Power usage effectiveness of the provider's datacenters.
    pub pue: Sourced,
    /// All-in node power per chip (host, NICs, fans), watts, before PUE: the rating a site
    /// provisions for.
    pub system_w_per_chip: Sourced,
    /// What the node beyond the accelerators (hosts, NICs, fans) draws per chip at training
    /// load, watts, where measured or derived from a measurement; else the rating's overhead
    /// `system_w_per_chip − power_w` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_w_per_chip: Option<Sourced>,
}

/// One accelerator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chip {
    /// Command-line name: `trn2`, `h100`, `tpu-v5p`, ...
    pub name: String,
    pub display: String,
    pub vendor: String,
    pub family: Family,
    /// NeuronCores (Neuron), TensorCores (TPU) or 1 (GPU).
    pub cores_per_chip: u32,
    pub peak_flops: Peaks,
    /// Best-shape bf16 GEMM throughput over the dense peak.
    pub matmul_ceiling: Sourced,
    pub hbm_bytes: Sourced,
    pub hbm_bytes_per_s: Sourced,
    pub power_w: Sourced,
    pub node: Node,
    /// The simulated NeuronCore whose op-cost tables this chip uses (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<String>,
    /// NeuronCore parameters set on top of the `tables` chip's (a what-if): names as
    /// `rainier arch` lists them (`tensor_clock_hz`, `timing.min_ii_cycles`, ...). Chip-level
    /// figures (cores per chip, HBM capacity and bandwidth) come from this entry's own fields.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub neuron_core: std::collections::BTreeMap<String, Sourced>,
    /// The usual training software stack.
    pub stack: String,
    pub default_framework: Framework,
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub about: String,
    pub chips: Vec<Chip>,
    /// `rainier chips --json` prints a catalog with its output envelope (`schema`, `rainier`):
    /// read back as a catalog file, the envelope is ignored.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub schema: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub rainier: Option<serde::de::IgnoredAny>,
}

/// Why a catalog or a chip could not be had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HwError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: chip `{chip}`: {message}")]
    Invalid { file: String, chip: String, message: String },
    #[error("unknown chip `{name}` (known: {known})")]
    UnknownChip { name: String, known: String },
}

const BUILT_IN: &str = include_str!("../data/catalog.json");

/// `text` with control characters escaped, so an error quoting a file's text stays one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn built_in() -> Catalog {
        // The embedded file is checked by a test; a failure here is a build defect.
        Catalog::parse(BUILT_IN, "built-in catalog").expect("the built-in catalog is valid")
    }

    /// Parses and checks a catalog file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Catalog, HwError> {
        let catalog: Catalog = serde_json::from_str(text)
            .map_err(|e| HwError::Parse { file: file.into(), message: one_line(&e.to_string()) })?;
        for chip in &catalog.chips {
            chip.check().map_err(|message| HwError::Invalid {
                file: file.into(),
                chip: one_line(&chip.name),
                message: one_line(&message),
            })?;
        }
        Ok(catalog)
    }

    /// This catalog with the chips of `overrides` (a file of the same shape) replacing those of
    /// the same name and the others added.
    pub fn with_overrides(mut self, text: &str, file: &str) -> Result<Catalog, HwError> {
        let overrides = Catalog::parse(text, file)?;
        for chip in overrides.chips {
            match self.chips.iter_mut().find(|c| c.name == chip.name) {
                Some(existing) => *existing = chip,
                None => self.chips.push(chip),
            }
        }
        Ok(self)
    }

    pub fn chip(&self, name: &str) -> Result<&Chip, HwError> {
        let lower = name.to_ascii_lowercase();
        self.chips.iter().find(|c| c.name == lower).ok_or_else(|| HwError::UnknownChip {
            name: name.into(),
            known: self.chips.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// The range a catalog figure must lie in, `(low, high, unit)`: wide enough for any chip,
/// past or what-if (from a 2010s GPU to a chip 100× beyond a GB200), narrow enough to catch a
/// unit slip or a value that would make every result 0, inf or NaN (zero, where a figure may
/// be zero, is checked separately).
fn plausible_range(field: &str) -> Option<(f64, f64, &'static str)> {
    Some(match field {
        "peak_flops.bf16" | "peak_flops.fp8" | "peak_flops.fp32" | "peak_flops.fp4" => {
            (1e11, 1e18, "FLOP/s")
        }
        "matmul_ceiling" => (0.05, 1.0, "of peak"),
        "hbm_bytes" => (1e9, 1e14, "bytes"),
        "hbm_bytes_per_s" => (1e10, 1e15, "bytes/s"),
        "power_w" | "node.system_w_per_chip" | "node.host_w_per_chip" => (1.0, 1e5, "W"),
        "node.scale_up_bytes_per_s_per_dir" | "node.ultra.bytes_per_s_per_dir" => {
            (1e8, 1e15, "bytes/s")
        }
        "node.scale_out_bits_per_s" => (1e8, 1e15, "bits/s"),
        "node.scale_up_latency_s" | "node.scale_out_latency_s" | "node.ultra.latency_s" => {
            (1e-9, 1e-1, "s")
        }
        "node.usd_per_chip_hour" | "node.usd_per_chip_hour_committed" => (1e-3, 1e4, "$/h"),
        _ => return None,
    })
}

impl Chip {
    /// Every sourced figure with a dotted name, for listings.
    pub fn figures(&self) -> Vec<(&'static str, &Sourced)> {
        let n = &self.node;
        let mut figures = vec![
            ("peak_flops.bf16", &self.peak_flops.bf16),
            ("peak_flops.fp8", &self.peak_flops.fp8),
            ("peak_flops.fp32", &self.peak_flops.fp32),
            ("matmul_ceiling", &self.matmul_ceiling),
            ("hbm_bytes", &self.hbm_bytes),
            ("hbm_bytes_per_s", &self.hbm_bytes_per_s),
            ("power_w", &self.power_w),
            ("node.scale_up_bytes_per_s_per_dir", &n.scale_up_bytes_per_s_per_dir),
            ("node.scale_up_latency_s", &n.scale_up_latency_s),
            ("node.scale_out_bits_per_s", &n.scale_out_bits_per_s),
            ("node.scale_out_latency_s", &n.scale_out_latency_s),
            ("node.usd_per_chip_hour", &n.usd_per_chip_hour),
            ("node.system_w_per_chip", &n.system_w_per_chip),
            ("node.pue", &n.pue),
        ];
        if let Some(fp4) = &self.peak_flops.fp4 {
            figures.insert(3, ("peak_flops.fp4", fp4));
        }
        if let Some(ultra) = &n.ultra {
            figures.push(("node.ultra.bytes_per_s_per_dir", &ultra.bytes_per_s_per_dir));
            figures.push(("node.ultra.latency_s", &ultra.latency_s));
        }
        if let Some(committed) = &n.usd_per_chip_hour_committed {
            figures.push(("node.usd_per_chip_hour_committed", committed));
        }
        if let Some(host) = &n.host_w_per_chip {
            figures.push(("node.host_w_per_chip", host));
        }
        figures
    }

    /// The name of the op-cost tables a NeuronCore chip reads.
    pub fn table_name(&self) -> &str {
        self.tables.as_deref().unwrap_or(&self.name)
    }

    /// The NeuronCore parameters of a Neuron chip: the built-in chip its `tables` field (or its
    /// name) names, with this entry's cores per chip, HBM capacity and HBM bandwidth, then every
    /// `neuron_core` entry set on top (graded what-if). A built-in chip gives exactly its
    /// built-in parameters.
    pub fn neuron_params(&self) -> Result<rainier_arch::ChipParams, String> {
        if self.family != Family::Neuron {
            return Err("only a Neuron chip has NeuronCore parameters".into());
        }
        let base: rainier_arch::Chip = self.table_name().parse().map_err(|_| {
            format!(
                "`tables` must name the built-in NeuronCore chip this one builds on (trn1, inf2, trn2, trn3), not `{}`",
                one_line(self.table_name())
            )
        })?;
        let mut params = base.params();
        if self.cores_per_chip != params.cores_per_chip.value {
            params.set("cores_per_chip", f64::from(self.cores_per_chip))?;
        }
        if self.hbm_bytes.value != params.hbm_bytes.value as f64 {
            params.set("hbm_bytes", self.hbm_bytes.value.round())?;
        }
        if self.hbm_bytes_per_s.value != params.hbm_bytes_per_s.value {
            params.set("hbm_bytes_per_s", self.hbm_bytes_per_s.value)?;
        }
        for (name, figure) in &self.neuron_core {
            params.set(name, figure.value).map_err(|m| format!("neuron_core: {}", one_line(&m)))?;
        }
        Ok(params)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name != self.name.to_ascii_lowercase() {
            return Err("name must be non-empty lower case".into());
        }
        if self.cores_per_chip == 0 || self.node.chips == 0 || self.node.scale_up_domain_chips == 0
        {
            return Err(
                "cores_per_chip, node.chips and node.scale_up_domain_chips must be positive".into(),
            );
        }
        for (field, figure) in self.figures() {
            let v = figure.value;
            // Scale-out may be 0 (Inferentia2 has no EFA); everything else must be positive.
            let may_be_zero = field == "node.scale_out_bits_per_s";
            if !v.is_finite() || v < 0.0 || (v == 0.0 && !may_be_zero) {
                return Err(format!("{field} must be a positive number, found {v}"));
            }
            if figure.source.trim().is_empty() {
                return Err(format!("{field} has no source"));
            }
            if let Some((lo, hi, unit)) = plausible_range(field) {
                if v != 0.0 && !(lo..=hi).contains(&v) {
                    return Err(format!(
                        "{field} = {v:e} is outside the plausible range {lo:e}..{hi:e} {unit} (a typo or a unit slip? what-if chips stay within it)"
                    ));
                }
            }
        }
        if let Some([lo, hi]) = self.node.usd_per_chip_hour_range {
            let v = self.node.usd_per_chip_hour.value;
            if !(lo > 0.0 && lo <= v && v <= hi && hi.is_finite()) {
                return Err(format!(
                    "node.usd_per_chip_hour_range [{lo}, {hi}] must hold the price {v} (0 < low <= price <= high)"
                ));
            }
        }
        if self.family == Family::Neuron {
            self.neuron_params()?;
        } else if !self.neuron_core.is_empty() {
            return Err("neuron_core is only for Neuron chips".into());
        }
        for (name, figure) in &self.neuron_core {
            if figure.source.trim().is_empty() {
                return Err(format!("neuron_core.{} has no source", one_line(name)));
            }
        }
        let domain = u64::from(self.node.scale_up_domain_chips);
        if let Some(torus) = self.node.scale_up_shape.chips() {
            if torus != domain {
                return Err(format!(
                    "node.scale_up_shape has {torus} chips but node.scale_up_domain_chips is {domain}"
                ));
            }
        }
        if let Some(ultra) = &self.node.ultra {
            let chips = u64::from(ultra.chips);
            if chips <= domain || chips % domain != 0 {
                return Err(format!(
                    "node.ultra.chips ({chips}) must be a multiple of node.scale_up_domain_chips ({domain}) above it"
                ));
            }
            if let Some(shape) = ultra.shape.chips() {
                if shape * domain != chips {
                    return Err(format!(
                        "node.ultra.shape joins {shape} domains of {domain} chips, not {chips}"
                    ));
                }
            }
        }
        if !(1.0..=3.0).contains(&self.node.pue.value) {
            return Err(format!("node.pue must be in [1, 3], found {}", self.node.pue.value));
        }
        if self.matmul_ceiling.value > 1.0 {
            return Err(format!(
                "matmul_ceiling must be at most 1, found {}",
                self.matmul_ceiling.value
            ));
        }
        Ok(())
    }

    /// Dense peak FLOP/s per chip for a math precision.
    pub fn peak(&self, precision: MathPrecision) -> f64 {
        match precision {
            MathPrecision::Bf16 => self.peak_flops.bf16.value,
            MathPrecision::Fp8 => self.peak_flops.fp8.value,
            MathPrecision::Fp32 => self.peak_flops.fp32.value,
            // 0 where the chip has no FP4 tensor cores (cost models refuse that precision).
            MathPrecision::Fp4 => self.peak_flops.fp4.as_ref().map_or(0.0, |p| p.value),
        }
    }

    /// HBM capacity in bytes.
    pub fn hbm_bytes(&self) -> f64 {
        self.hbm_bytes.value
    }
}

/// The precision of matmul inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathPrecision {
    Bf16,
    Fp8,
    Fp32,
    /// NVFP4 (e2m1 values, an e4m3 scale per 16) on FP4 tensor cores.
    Fp4,
}
