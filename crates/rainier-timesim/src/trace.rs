//! Chrome trace event format (opens in Perfetto and chrome://tracing): one track per engine
//! and per DMA engine, one slice per instruction or transfer piece. Deterministic: the same
//! report gives the same bytes.

use std::io::Write;

use rainier_arch::ChipParams;
use rainier_isa::{Engine, Program};
use serde_json::{json, Value};

use crate::{Report, Track};

const PID: u32 = 1;

fn tid(t: Track) -> u32 {
    match t {
        Track::Engine(e) => e.index() as u32,
        Track::Dma(q) => 16 + q,
    }
}

/// The trace of `report` (recorded with slices) as a JSON value.
pub fn chrome_trace(program: &Program, chip: &ChipParams, report: &Report) -> Value {
    let events: Vec<Value> = events(program, chip, report).collect();
    json!({ "traceEvents": events, "displayTimeUnit": "ns" })
}

/// Writes the same trace as [`chrome_trace`], byte for byte as its `serde_json::to_writer`,
/// one event at a time: memory stays bounded by one event, not the whole trace.
pub fn write_chrome_trace(
    program: &Program,
    chip: &ChipParams,
    report: &Report,
    w: impl Write,
) -> std::io::Result<()> {
    write_chrome_trace_mapped(program, chip, report, w, |_| {})
}

/// [`write_chrome_trace`] with `map` applied to each event before it is written (a front end
/// naming slices after its own source lines).
pub fn write_chrome_trace_mapped(
    program: &Program,
    chip: &ChipParams,
    report: &Report,
    mut w: impl Write,
    mut map: impl FnMut(&mut Value),
) -> std::io::Result<()> {
    w.write_all(br#"{"displayTimeUnit":"ns","traceEvents":["#)?;
    for (i, mut event) in events(program, chip, report).enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        map(&mut event);
        serde_json::to_writer(&mut w, &event)?;
    }
    w.write_all(b"]}")?;
    w.flush()
}

/// The trace's events in order: process and track names, then one slice per instruction or
/// transfer piece.
fn events<'a>(
    program: &'a Program,
    chip: &ChipParams,
    report: &'a Report,
) -> impl Iterator<Item = Value> + 'a {
    let mut meta = vec![json!({
        "name": "process_name", "ph": "M", "pid": PID, "tid": 0,
        "args": { "name": format!("NeuronCore 0 ({}, {})", chip.chip, chip.core.generation) },
    })];
    let mut tracks: Vec<(Track, String)> =
        Engine::ALL.iter().map(|e| (Track::Engine(*e), format!("{e} engine"))).collect();
    let mut queues: Vec<u32> = report
        .slices
        .iter()
        .filter_map(|s| match s.track {
            Track::Dma(q) => Some(q),
            Track::Engine(_) => None,
        })
        .collect();
    queues.sort_unstable();
    queues.dedup();
    tracks.extend(queues.into_iter().map(|q| (Track::Dma(q), format!("DMA engine {q}"))));
    for (t, name) in &tracks {
        meta.push(json!({ "name": "thread_name", "ph": "M", "pid": PID, "tid": tid(*t), "args": { "name": name } }));
        meta.push(json!({ "name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid(*t), "args": { "sort_index": tid(*t) } }));
    }
    meta.into_iter().chain(report.slices.iter().map(move |s| slice_event(program, s)))
}

fn slice_event(program: &Program, s: &crate::Slice) -> Value {
    let us = |ps: u64| ps as f64 / 1e6;
    let ins = &program.instructions[s.instruction];
    let mut args = json!({
        "instruction": s.instruction,
        "line": program.line_of(s.instruction),
        "text": program.instruction_text(s.instruction),
    });
    match s.track {
        Track::Engine(_) => args["cycles"] = json!(s.amount),
        Track::Dma(_) => args["bytes"] = json!(s.amount),
    }
    let shapes: Vec<String> = ins
        .op
        .tiles()
        .iter()
        .map(|(t, _)| {
            let f: Vec<String> = t.free_shape().iter().map(u64::to_string).collect();
            format!("{}[{}, {}]", t.dtype, t.partitions, f.join("x"))
        })
        .collect();
    args["shapes"] = json!(shapes);
    json!({
        "name": ins.op.name(),
        "cat": match s.track { Track::Engine(e) => e.name(), Track::Dma(_) => "dma" },
        "ph": "X",
        "pid": PID,
        "tid": tid(s.track),
        "ts": us(s.start_ps),
        "dur": us(s.duration_ps),
        "args": args,
    })
}
