//! Running a compiled trace on the timed NeuronCore and reporting what a kernel developer
//! asks of a profiler: device time, per-engine busy time and utilisation, DMA traffic, and a
//! Perfetto timeline whose slices name the kernel source lines.

use std::collections::BTreeMap;

use rainier_arch::ChipParams;
use rainier_isa::Engine;
use rainier_tensor::HostTensor;
use rainier_timesim::{chrome_trace, simulate, write_chrome_trace_mapped, Report};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{compile, Buffer, Compiled, NkiError, Trace};

/// What to compute.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Compute values (every input must be given); otherwise time only.
    pub values: bool,
    /// Keep every slice for [`Outcome::chrome_trace`].
    pub record: bool,
}

/// One engine's share of the kernel's time.
#[derive(Debug, Clone, Serialize)]
pub struct EngineUse {
    pub engine: &'static str,
    pub instructions: u64,
    pub busy_ns: f64,
    /// Busy time over the kernel's device time.
    pub utilization: f64,
    /// Time its next instruction waited on semaphores (data from other engines or DMA).
    pub semaphore_stall_ns: f64,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub compiled: Compiled,
    pub report: Report,
    /// Output tensors by trace name (with values only).
    pub outputs: BTreeMap<String, HostTensor>,
}

impl Outcome {
    pub fn time_ns(&self) -> f64 {
        self.report.time_ns()
    }

    /// Per compute engine (Sync is the DMA trigger queue and is left out).
    pub fn engines(&self) -> Vec<EngineUse> {
        let total = self.report.time_ps.max(1) as f64;
        Engine::ALL
            .iter()
            .filter(|e| **e != Engine::Sync)
            .map(|e| {
                let s = &self.report.engines[e.index()];
                EngineUse {
                    engine: e.name(),
                    instructions: s.instructions,
                    busy_ns: s.busy_ps as f64 / 1000.0,
                    utilization: s.busy_ps as f64 / total,
                    semaphore_stall_ns: s.semaphore_stall_ps as f64 / 1000.0,
                }
            })
            .collect()
    }

    /// The report as JSON: time, engines, DMA, memory, instruction counts.
    pub fn summary(&self, chip: &ChipParams) -> Value {
        let r = &self.report;
        let time_s = r.time_ps as f64 * 1e-12;
        let dma = &r.dma;
        let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
        for ins in &self.compiled.program.instructions {
            *by_op.entry(ins.op.name()).or_insert(0) += 1;
        }
        json!({
            "chip": chip.chip.name(),
            "time_ns": r.time_ns(),
            "launch_overhead_ns": chip.core.timing.launch_overhead_ns.value,
            "device_latency_ns": r.time_ns() + chip.core.timing.launch_overhead_ns.value,
            "instructions": self.compiled.program.instructions.len(),
            "instructions_by_opcode": by_op,
            "engines": self.engines(),
            "dma": {
                "transfers": dma.transfers,
                "bytes": dma.bytes,
                "hbm_bytes": dma.hbm_bytes,
                "busy_ns": dma.busy_ps as f64 / 1000.0,
                "utilization": dma.busy_ps as f64 / r.time_ps.max(1) as f64,
                "bandwidth_gb_per_s": if time_s > 0.0 { dma.bytes as f64 / time_s / 1e9 } else { 0.0 },
            },
            "sbuf_peak_bytes_per_partition": self.compiled.sbuf_peak_bytes,
            "psum_peak_bytes_per_partition": self.compiled.psum_peak_bytes,
            "sbuf_spills": self.compiled.spills,
        })
    }

    /// Chrome/Perfetto trace JSON; every slice is named `opcode file:line` after the kernel
    /// source line that issued it (run with `record`).
    pub fn chrome_trace(&self, chip: &ChipParams, files: &[String]) -> Value {
        let mut v = chrome_trace(&self.compiled.program, chip, &self.report);
        if let Some(events) = v.get_mut("traceEvents").and_then(Value::as_array_mut) {
            events.iter_mut().for_each(|e| self.name_after_source(e, files));
        }
        v
    }

    /// [`Outcome::chrome_trace`] as JSON text, written one event at a time (the same bytes as
    /// its `to_string`, without the whole trace as a JSON value in memory).
    pub fn chrome_trace_text(&self, chip: &ChipParams, files: &[String]) -> String {
        let mut out = Vec::new();
        let named = |e: &mut Value| self.name_after_source(e, files);
        // Writing into memory cannot fail, and serde_json writes UTF-8.
        let _ =
            write_chrome_trace_mapped(&self.compiled.program, chip, &self.report, &mut out, named);
        String::from_utf8(out).unwrap_or_default()
    }

    fn name_after_source(&self, e: &mut Value, files: &[String]) {
        let Some(i) = e.pointer("/args/instruction").and_then(Value::as_u64) else { return };
        let Some(src) = self.compiled.sources.get(i as usize) else { return };
        let file = files.get(src[0] as usize).map_or("<kernel>", String::as_str);
        let short = file.rsplit('/').next().unwrap_or(file);
        let name = e["name"].as_str().unwrap_or("").to_string();
        e["name"] = json!(format!("{name} {short}:{}", src[1]));
        e["args"]["source"] = json!(format!("{file}:{}", src[1]));
    }
}

/// Compiles `trace` and runs it on one NeuronCore of `chip`. `inputs` are by trace tensor name
/// (needed with `values`).
pub fn run(
    trace: &Trace,
    chip: &ChipParams,
    inputs: &BTreeMap<String, HostTensor>,
    options: RunOptions,
) -> Result<Outcome, NkiError> {
    let compiled = compile(trace, chip)?;
    let report = simulate(
        &compiled.program,
        chip,
        if options.values { Some(inputs) } else { None },
        options.record,
    )
    .map_err(|e| {
        let msg = e.to_string();
        NkiError::Run(match &e {
            rainier_timesim::TimeError::Run(rainier_funcsim::RunError::Exec { index, .. }) => {
                let s = compiled.sources.get(*index).copied().unwrap_or_default();
                let file = trace.files.get(s[0] as usize).map_or("<kernel>", String::as_str);
                format!("{file}:{}: {msg}", s[1])
            }
            _ => msg,
        })
    })?;
    let mut outputs = report.outputs.clone();
    if let Some(m) = &report.machine {
        for (t, spec) in trace.tensors.iter().enumerate() {
            if let (Buffer::Input, true, Some(i)) =
                (spec.buffer, spec.written, compiled.hbm_index[t])
            {
                let decl = &compiled.program.tensors[i];
                let shape = decl.shape.iter().map(|&d| d as usize).collect();
                let data = m.hbm(i).to_vec();
                outputs.insert(spec.name.clone(), HostTensor { dtype: decl.dtype, shape, data });
            }
        }
    }
    Ok(Outcome { compiled, report, outputs })
}
