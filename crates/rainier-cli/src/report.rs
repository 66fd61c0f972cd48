//! Timing reports: the human summary and the JSON document of `rainier sim`.

use std::fmt::Write as _;
use std::path::Path;

use rainier_arch::ChipParams;
use rainier_isa::Engine;
use rainier_timesim::Report;
use serde_json::{json, Value};

fn ns(ps: u64) -> f64 {
    ps as f64 / 1000.0
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The busiest track: an engine or "dma", with its busy time.
fn bottleneck(r: &Report) -> (&'static str, u64) {
    let mut best = ("dma", r.dma.busy_ps);
    for e in Engine::ALL {
        let busy = r.engines[e.index()].busy_ps;
        if busy > best.1 {
            best = (e.name(), busy);
        }
    }
    best
}

pub(crate) fn timing_json(r: &Report, chip: &ChipParams, path: &Path) -> Value {
    let mut engines = serde_json::Map::new();
    for e in Engine::ALL {
        let s = &r.engines[e.index()];
        engines.insert(
            e.name().to_string(),
            json!({
                "instructions": s.instructions,
                "busy_ns": ns(s.busy_ps),
                "utilization": fraction(s.busy_ps, r.time_ps),
                "semaphore_stall_ns": ns(s.semaphore_stall_ps),
                "resource_stall_ns": ns(s.resource_stall_ps),
            }),
        );
    }
    let bw = if r.dma.busy_ps == 0 { 0.0 } else { r.dma.bytes as f64 / ns(r.dma.busy_ps) };
    engines.insert(
        "dma".to_string(),
        json!({
            "transfers": r.dma.transfers,
            "bytes": r.dma.bytes,
            "busy_ns": ns(r.dma.busy_ps),
            "utilization": fraction(r.dma.busy_ps, r.time_ps),
            "achieved_bytes_per_ns": bw,
        }),
    );
    let (neck, _) = bottleneck(r);
    json!({
        "chip": chip.chip.name(),
        "generation": chip.core.generation.to_string(),
        "program": path.display().to_string(),
        "instructions_executed": r.instructions_executed,
        "time_ns": r.time_ns(),
        "engines": engines,
        "bottleneck": neck,
    })
}

pub(crate) fn timing_text(r: &Report, chip: &ChipParams, path: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} on {} ({}): {} instructions in {:.3} us",
        path.display(),
        chip.chip,
        chip.core.generation,
        r.instructions_executed,
        r.time_ns() / 1000.0
    );
    let _ = writeln!(
        s,
        "  {:<7} {:>6} {:>12} {:>6} {:>16} {:>16}",
        "engine", "instr", "busy (us)", "util", "sem stall (us)", "resource (us)"
    );
    for e in Engine::ALL {
        let st = &r.engines[e.index()];
        if st.instructions == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<7} {:>6} {:>12.3} {:>5.1}% {:>16.3} {:>16.3}",
            e.name(),
            st.instructions,
            ns(st.busy_ps) / 1000.0,
            100.0 * fraction(st.busy_ps, r.time_ps),
            ns(st.semaphore_stall_ps) / 1000.0,
            ns(st.resource_stall_ps) / 1000.0
        );
    }
    if r.dma.transfers > 0 {
        let queues = r.dma.per_engine_busy_ps.iter().filter(|&&b| b > 0).count();
        let _ = writeln!(
            s,
            "  dma     {:>6} {:>12.3} {:>5.1}%   {} bytes on {queues} DMA engines, {:.1} GB/s while busy",
            r.dma.transfers,
            ns(r.dma.busy_ps) / 1000.0,
            100.0 * fraction(r.dma.busy_ps, r.time_ps),
            r.dma.bytes,
            r.dma.bytes as f64 / ns(r.dma.busy_ps).max(1e-9)
        );
    }
    let (neck, busy) = bottleneck(r);
    let (sem, res): (u64, u64) = r
        .engines
        .iter()
        .fold((0, 0), |(a, b), e| (a + e.semaphore_stall_ps, b + e.resource_stall_ps));
    let what = if neck == "dma" { "DMA".to_string() } else { format!("{neck} engine") };
    let _ = writeln!(
        s,
        "  bottleneck: {what}, busy {:.1}% of the run; engines waited {:.3} us on semaphores and {:.3} us on resources (same-engine results, PSUM banks)",
        100.0 * fraction(busy, r.time_ps),
        ns(sem) / 1000.0,
        ns(res) / 1000.0
    );
    s
}
