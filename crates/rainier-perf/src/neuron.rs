//! NeuronCore op costs from the simulator's op-cost tables (`tables/CHIP.csv`).
//!
//! Each table row is one library kernel timed on one simulated NeuronCore. A rate is read off
//! each row (FLOP/s for GEMM and attention, HBM bytes/s for memory-bound kernels) and
//! interpolated between shapes (linear in log size, clamped at the ends). A rank's time is the
//! per-core time over the cores it spans: at LNC=2 a logical core is two physical cores that
//! split every op evenly ([`LNC_SPLIT`]), and the per-core HBM share in the tables is the
//! chip's bandwidth over its cores, so a chip of `c` cores runs `c` per-core tables at once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use rainier_arch::ChipParams;
use rainier_model::{MemKind, Mlp, Norm};

use crate::gpu::interpolate;
use crate::Assumption;

pub(crate) const LNC_SPLIT: Assumption = Assumption {
    name: "neuron.lnc_split",
    value: 1.0,
    why: "a logical NeuronCore of 2 physical cores (LNC=2) runs each op in half the per-core time (perfect split assumed; the compiler shards each op across the pair)",
};

/// Where NeuronCore op costs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NeuronCosts {
    /// The simulator's op-cost tables, roofline for ops they lack.
    #[default]
    Tables,
    /// TensorE peak × the chip's GEMM ceiling and HBM bandwidth for every op.
    Roofline,
    /// The tables, except that a dense Llama-style layer's forward and backward passes are
    /// decoder-layer programs of the library kernels simulated on the chip's NeuronCore
    /// (kernel overlap, HBM hand-offs and layout transposes computed), once per shape.
    LayerPrograms,
}

/// The operand format of a NeuronCore GEMM: which of the tables' gemm grids it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmOperands {
    Bf16,
    /// fp8 e4m3 (double row on NeuronCore-v3/v4, the bf16 rate on v2).
    Fp8,
    /// OCP MXFP8 / MXFP4 through `nc_matmul_mx` (NeuronCore-v4).
    Mxfp8,
    Mxfp4,
}

/// A committed table that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TableError {
    #[error("tables/{chip}.csv line {line}: {message}")]
    Malformed { chip: String, line: usize, message: String },
    #[error("no op-cost table for chip `{0}` (tables exist for trn1, inf2, trn2, trn3)")]
    Missing(String),
    /// A catalog chip whose NeuronCore cannot be made (unknown base, bad `neuron_core` entry).
    #[error("chip `{chip}`: {message}")]
    Core { chip: String, message: String },
    /// The sweep failed on a what-if chip's parameters.
    #[error("chip `{chip}`: {message}")]
    Sweep { chip: String, message: String },
}

/// `(x, rate)` points sorted by `x` (a log2 size).
type Curve = Vec<(f64, f64)>;

/// Rates on a full grid of `(log2 m, log2 n, log2 k)`.
#[derive(Debug, Clone, PartialEq, Default)]
struct GemmGrid {
    /// The parsed points, in file order.
    points: Vec<([f64; 3], f64)>,
    /// Sorted distinct values per axis.
    axes: [Vec<f64>; 3],
    /// Natural logs of the rates, in `m`-major, then `n`, then `k` order.
    log_rates: Vec<f64>,
}

impl GemmGrid {
    /// Builds the axes and the dense rate array; every grid point must be present once.
    fn index(&mut self) -> Result<(), String> {
        if self.points.is_empty() {
            return Ok(());
        }
        for (a, axis) in self.axes.iter_mut().enumerate() {
            *axis = self.points.iter().map(|p| p.0[a]).collect();
            axis.sort_by(f64::total_cmp);
            axis.dedup();
        }
        let [lm, ln, lk] = [0, 1, 2].map(|a| self.axes[a].len());
        if self.points.len() != lm * ln * lk {
            return Err(format!(
                "each dtype's gemm rows must cover a full m × n × k grid: {} rows for {lm} × {ln} × {lk}",
                self.points.len()
            ));
        }
        let mut log_rates = vec![f64::NAN; lm * ln * lk];
        for &(p, rate) in &self.points {
            let at = |a: usize| self.axes[a].iter().position(|&v| v == p[a]).unwrap_or(0);
            let slot = &mut log_rates[(at(0) * ln + at(1)) * lk + at(2)];
            if !slot.is_nan() {
                return Err(format!(
                    "gemm m={} n={} k={} appears twice",
                    p[0].exp2(),
                    p[1].exp2(),
                    p[2].exp2()
                ));
            }
            *slot = rate.ln();
        }
        self.log_rates = log_rates;
        Ok(())
    }

    /// The rate at `x` (log2 sizes): trilinear in log rate between grid points (a power law
    /// between them, exact where a GEMM is weight-bound and its rate grows as `m`), clamped at
    /// the edges.
    fn rate(&self, x: [f64; 3]) -> Option<f64> {
        if self.log_rates.is_empty() {
            return None;
        }
        // Per axis: the lower grid index and the weight of the upper one.
        let cell = |a: usize| -> (usize, f64) {
            let axis = &self.axes[a];
            let last = axis.len() - 1;
            if last == 0 || x[a] <= axis[0] {
                return (0, 0.0);
            }
            if x[a] >= axis[last] {
                return (last - 1, 1.0);
            }
            let i = axis.partition_point(|&v| v <= x[a]) - 1;
            (i, (x[a] - axis[i]) / (axis[i + 1] - axis[i]))
        };
        let (cells, dims) = ([cell(0), cell(1), cell(2)], [0, 1, 2].map(|a| self.axes[a].len()));
        let mut rate = 0.0;
        for corner in 0..8 {
            let mut weight = 1.0;
            let mut index = 0;
            for a in 0..3 {
                let (i, w) = cells[a];
                let up = corner >> a & 1 == 1;
                let i = if up { (i + 1).min(dims[a] - 1) } else { i };
                weight *= if up { w } else { 1.0 - w };
                index = index * dims[a] + i;
            }
            if weight > 0.0 {
                rate += weight * self.log_rates[index];
            }
        }
        Some(rate.exp())
    }
}

/// Interpolated per-core rates of one chip's op-cost table.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronTable {
    /// bf16 GEMM rates on the sweep's `m × n × k` grid.
    gemm: GemmGrid,
    /// fp8 (e4m3) GEMM rates on the same grid: one-byte operands (double row on
    /// NeuronCore-v3/v4, the bf16 rate on v2).
    gemm_fp8: GemmGrid,
    /// MXFP8 and MXFP4 GEMM rates (NeuronCore-v4 tables only; `m` from 128).
    gemm_mxfp8: GemmGrid,
    gemm_mxfp4: GemmGrid,
    /// `(kernel, [(log2 bytes, bytes/s)])`.
    memory: Vec<(&'static str, Curve)>,
    /// `[(log2 seq, FLOP/s)]` of causal attention at head dim 128, forward and backward.
    attention: Curve,
    attention_backward: Curve,
    /// Seconds per parameter of the fp32 AdamW kernel at its largest size, and its bytes per
    /// parameter.
    adamw: Option<(f64, f64)>,
}

const MEMORY_KERNELS: [&str; 8] = [
    "residual-add",
    "layernorm",
    "rmsnorm",
    "gelu",
    "swiglu",
    "rope",
    "cross-entropy",
    "cross-entropy-backward",
];

fn poisoned(chip: &str) -> TableError {
    TableError::Sweep { chip: chip.into(), message: "a table generation panicked earlier".into() }
}

impl NeuronTable {
    /// The committed table of `chip`, parsed once per process.
    pub fn for_chip(chip: &str) -> Result<&'static NeuronTable, TableError> {
        static TABLES: OnceLock<Vec<(&'static str, Result<NeuronTable, TableError>)>> =
            OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            rainier_arch::Chip::ALL
                .into_iter()
                .map(|c| (c.name(), NeuronTable::parse(rainier_tables::committed(c), c.name())))
                .collect()
        });
        match tables.iter().find(|(name, _)| *name == chip) {
            Some((_, table)) => table.as_ref().map_err(Clone::clone),
            None => Err(TableError::Missing(chip.into())),
        }
    }

    /// The table of one NeuronCore of `params` (`chip` names it in errors): a built-in chip's
    /// committed table, else one generated from the same kernel sweep on these parameters
    /// (cached on disk and, parsed, for the rest of the process). `progress` is told
    /// `(cases done, cases)` while a table is generated.
    pub fn for_params(
        chip: &str,
        params: &ChipParams,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<&'static NeuronTable, TableError> {
        if *params == params.chip.params() {
            return NeuronTable::for_chip(params.chip.name());
        }
        static MADE: OnceLock<Mutex<HashMap<String, &'static NeuronTable>>> = OnceLock::new();
        let key = rainier_tables::cache_key(params);
        let made = MADE.get_or_init(Mutex::default);
        if let Some(table) = made.lock().map_err(|_| poisoned(chip))?.get(&key) {
            return Ok(table);
        }
        let (text, _origin) = rainier_tables::table_for(params, progress)
            .map_err(|e| TableError::Sweep { chip: chip.into(), message: e.to_string() })?;
        // One parsed table per distinct parameter set for the life of the process.
        let table: &'static NeuronTable = Box::leak(Box::new(NeuronTable::parse(&text, chip)?));
        made.lock().map_err(|_| poisoned(chip))?.insert(key, table);
        Ok(table)
    }

    /// Parses `kernel,dtype,shape,time_ns,flops,hbm_bytes,...` rows.
    pub fn parse(text: &str, chip: &str) -> Result<NeuronTable, TableError> {
        let mut table = NeuronTable {
            gemm: GemmGrid::default(),
            gemm_fp8: GemmGrid::default(),
            gemm_mxfp8: GemmGrid::default(),
            gemm_mxfp4: GemmGrid::default(),
            memory: Vec::new(),
            attention: Vec::new(),
            attention_backward: Vec::new(),
            adamw: None,
        };
        for (index, line) in text.lines().enumerate().skip(1) {
            let bad = |message: String| TableError::Malformed {
                chip: chip.into(),
                line: index + 1,
                message,
            };
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() < 6 {
                return Err(bad(format!("expected at least 6 columns, found {}", cols.len())));
            }
            let number = |i: usize| -> Result<f64, TableError> {
                cols[i].parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
                    bad(format!("column {} is not a positive number: `{}`", i + 1, cols[i]))
                })
            };
            let shape = |key: &str| -> Result<f64, TableError> {
                cols[2]
                    .split(' ')
                    .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| bad(format!("shape `{}` has no `{key}`", cols[2])))
            };
            let seconds = number(3)? * 1e-9;
            match cols[0] {
                "gemm" => {
                    let grid = match cols[1] {
                        "bf16" => &mut table.gemm,
                        "fp8e4m3" => &mut table.gemm_fp8,
                        "fp8e4m3fnx4" => &mut table.gemm_mxfp8,
                        "fp4e2m1fnx4" => &mut table.gemm_mxfp4,
                        other => {
                            return Err(bad(format!(
                                "gemm dtype `{other}` is not one the planner reads"
                            )))
                        }
                    };
                    let (m, n, k) = (shape("m")?.log2(), shape("n")?.log2(), shape("k")?.log2());
                    grid.points.push(([m, n, k], number(4)? / seconds));
                }
                "attention" | "attention-bwd" => {
                    if shape("causal")? == 1.0 && shape("head_dim")? == 128.0 {
                        let point = (shape("seq")?.log2(), number(4)? / seconds);
                        match cols[0] {
                            "attention" => table.attention.push(point),
                            _ => table.attention_backward.push(point),
                        }
                    }
                }
                "adamw" => {
                    let params = shape("params")?;
                    // Rows grow in size; the largest (last) one is kept.
                    table.adamw = Some((seconds / params, number(5)? / params));
                }
                kernel => {
                    if let Some(name) = MEMORY_KERNELS.iter().find(|k| **k == kernel) {
                        let bytes = number(5)?;
                        let point = (bytes.log2(), bytes / seconds);
                        match table.memory.iter_mut().find(|m| m.0 == *name) {
                            Some(m) => m.1.push(point),
                            None => table.memory.push((name, vec![point])),
                        }
                    }
                }
            }
        }
        let by_x = |a: &(f64, f64), b: &(f64, f64)| a.0.total_cmp(&b.0);
        for grid in
            [&mut table.gemm, &mut table.gemm_fp8, &mut table.gemm_mxfp8, &mut table.gemm_mxfp4]
        {
            grid.index().map_err(|message| TableError::Malformed {
                chip: chip.into(),
                line: 0,
                message,
            })?;
        }
        for m in &mut table.memory {
            m.1.sort_by(by_x);
        }
        table.attention.sort_by(by_x);
        table.attention_backward.sort_by(by_x);
        Ok(table)
    }

    /// Whether the table has the MX gemm rows (a NeuronCore-v4 chip's).
    pub fn has_mx(&self) -> bool {
        !self.gemm_mxfp8.log_rates.is_empty() && !self.gemm_mxfp4.log_rates.is_empty()
    }

    /// Per-core seconds of a `[m, k] · [k, n]` GEMM of `flops` with `operands`: the simulated
    /// rate interpolated trilinearly in `(log2 m, log2 n, log2 k)` over the sweep's grid
    /// (clamped at its edges); below the smallest `m` the rate falls in proportion to `m`.
    /// `None` when the table lacks that format.
    pub fn gemm_seconds(
        &self,
        m: u64,
        n: u64,
        k: u64,
        flops: f64,
        operands: GemmOperands,
    ) -> Option<f64> {
        let grid = match operands {
            GemmOperands::Bf16 => &self.gemm,
            GemmOperands::Fp8 => &self.gemm_fp8,
            GemmOperands::Mxfp8 => &self.gemm_mxfp8,
            GemmOperands::Mxfp4 => &self.gemm_mxfp4,
        };
        let log = |v: u64| (v.max(1) as f64).log2();
        let rate = grid.rate([log(m), log(n), log(k)])?;
        let m_min = grid.axes[0].first().map_or(1.0, |l| l.exp2());
        // Small products are slower than the smallest measured one; never faster.
        let rate = if (m as f64) < m_min { rate * m.max(1) as f64 / m_min } else { rate };
        Some(flops / rate)
    }

    /// Per-core seconds of flash attention (forward, or backward from the simulated
    /// `attention-bwd` kernel) of `flops` at this sequence length.
    pub fn attention_seconds(
        &self,
        seq: u64,
        head_dim: u64,
        backward: bool,
        flops: f64,
    ) -> Option<f64> {
        let curve = if backward && !self.attention_backward.is_empty() {
            &self.attention_backward
        } else {
            &self.attention
        };
        if curve.is_empty() || head_dim != 128 {
            return None;
        }
        Some(flops / interpolate(curve, (seq.max(1) as f64).log2()))
    }

    /// Per-core seconds of a memory-bound op moving `bytes`.
    pub fn memory_seconds(&self, kind: MemKind, bytes: f64) -> Option<f64> {
        let rate = |name: &str| {
            let curve = &self.memory.iter().find(|m| m.0 == name)?.1;
            Some(interpolate(curve, bytes.max(1.0).log2()))
        };
        let rate = match kind {
            MemKind::Add => rate("residual-add")?,
            MemKind::Norm(Norm::LayerNorm) => rate("layernorm")?,
            MemKind::Norm(Norm::RmsNorm) => rate("rmsnorm")?,
            MemKind::Activation(Mlp::Gelu) => rate("gelu")?,
            MemKind::Activation(Mlp::SwiGlu) => rate("swiglu")?,
            MemKind::Rope => rate("rope")?,
            // One rate for both passes: forward and backward kernels' bytes over their time.
            MemKind::CrossEntropy => {
                let (f, b) = (rate("cross-entropy")?, rate("cross-entropy-backward")?);
                3.0 / (1.0 / f + 2.0 / b)
            }
            // Plain DMA streams (a decode step's K/V cache reads, embedding rows, MoE token
            // permutes): the chip's simulated streaming rate, which carries its DMA limits
            // (on NeuronCore-v2 the 16 DMA engines cap a core below its HBM share).
            MemKind::Embedding | MemKind::Permute | MemKind::KvCache => rate("residual-add")?,
        };
        Some(bytes / rate)
    }

    /// Per-core seconds of AdamW over `params` parameters moving `bytes_per_param` bytes each,
    /// at the simulated kernel's bandwidth.
    pub fn optimizer_seconds(&self, params: f64, bytes_per_param: f64) -> f64 {
        match self.adamw {
            Some((seconds_per_param, kernel_bytes_per_param)) => {
                params * seconds_per_param * bytes_per_param / kernel_bytes_per_param
            }
            None => f64::INFINITY,
        }
    }
}
