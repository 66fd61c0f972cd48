//! The timing model against published figures (each test names its source), and its
//! invariants: values identical to the functional simulator, deterministic traces, clear errors.

use std::collections::BTreeMap;

use rainier_arch::Chip;
use rainier_isa::{parse, Engine, Program};
use rainier_tensor::{DType, HostTensor};
use rainier_timesim::{chrome_trace, simulate, write_chrome_trace, Report, Track};

fn example(name: &str) -> Program {
    let path = format!("{}/../../examples/asm/{name}", env!("CARGO_MANIFEST_DIR"));
    parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn timing(p: &Program, chip: Chip) -> Report {
    simulate(p, &chip.params(), None, true).unwrap_or_else(|e| panic!("{e}"))
}

fn busy_ns(r: &Report, e: Engine) -> f64 {
    r.engines[e.index()].busy_ps as f64 / 1000.0
}

fn within(got: f64, want: f64, rel: f64) -> bool {
    (got / want - 1.0).abs() <= rel
}

/// [N-arch2, N-isa-226]: a bf16 128x128x512 matmul is 512 TensorE cycles: 183 ns at 2.8 GHz
/// (trn1), 213 ns at 2.4 GHz (trn2). `mm_stream.asm` issues 64 of them into one PSUM bank.
#[test]
fn mm_stream_tensor_busy_is_64_matmuls() {
    let p = example("mm_stream.asm");
    for (chip, per_mm_ns) in
        [(Chip::Trn1, 182.857), (Chip::Trn2, 213.333), (Chip::Inf2, 182.857), (Chip::Trn3, 213.333)]
    {
        let r = timing(&p, chip);
        let tensor = busy_ns(&r, Engine::Tensor);
        assert!(
            within(tensor, 64.0 * per_mm_ns, 0.05),
            "{chip}: tensor busy {tensor} ns vs {}",
            64.0 * per_mm_ns
        );
        assert_eq!(r.engines[Engine::Tensor.index()].instructions, 64);
    }
}

/// Back-to-back matmuls with a resident stationary: 512 cycles each; fp32 inputs cost 4x
/// ([N-isa-226]).
#[test]
fn back_to_back_matmul_interval_and_fp32_factor() {
    for (dtype, factor) in [("bf16", 1.0), ("f32", 4.0)] {
        let esz = if dtype == "f32" { 4 } else { 2 };
        let mut text = String::new();
        for i in 0..10 {
            let acc = if i > 0 { " accumulate=true" } else { "" };
            text.push_str(&format!("nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:{dtype}[128], sb[0:128]@{}:{dtype}[512]{acc}\n", 128 * esz));
        }
        let r = timing(&parse(&text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn1);
        let mm: Vec<_> =
            r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Tensor)).collect();
        // Steady state: consecutive starts 512 cycles apart (x4 for fp32).
        let interval_ns = (mm[9].start_ps - mm[1].start_ps) as f64 / 8.0 / 1000.0;
        assert!(within(interval_ns, 182.857 * factor, 0.01), "{dtype}: {interval_ns} ns");
    }
}

/// [N-arch4]: an MX matmul contracts 4 × 128 values in the time of a bf16 matmul of the same M
/// and N (512 cycles at 2.4 GHz), and quantize_mx converts 4 elements per partition per cycle.
#[test]
fn mx_matmul_runs_at_the_bf16_interval_with_four_times_the_contraction() {
    let mut text = String::new();
    for i in 0..10 {
        let acc = if i > 0 { " accumulate=true" } else { "" };
        text.push_str(&format!("nc_matmul_mx ps[0:128]@0:f32[512], sb[0:128]@0:fp8e4m3fnx4[128], sb[0:128]@512:fp8e4m3fnx4[512], sb[0:128]@2560:u8[128], sb[0:128]@2688:u8[512]{acc}\n"));
    }
    let r = timing(&parse(&text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn3);
    let mm: Vec<_> = r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Tensor)).collect();
    let interval_ns = (mm[9].start_ps - mm[1].start_ps) as f64 / 8.0 / 1000.0;
    assert!(within(interval_ns, 213.333, 0.01), "{interval_ns} ns");
    let q = "quantize_mx sb[0:128]@0:fp8e5m2x4[1024], sb[0:128]@4096:bf16[4096], sb[0:128]@16384:u8[1024]";
    let r = timing(&parse(q).unwrap_or_else(|e| panic!("{e}")), Chip::Trn3);
    // 4096 elements / 4 per cycle at the Vector engine's 1.2 GHz on v4 [N-arch4].
    let vector = busy_ns(&r, Engine::Vector);
    assert!(within(vector, 1024.0 / 1.2, 0.1), "quantize_mx {vector} ns");
}

/// TensorE transposes: `max(P, min(64, F))` cycles back to back [N-isa-226]; NeuronCore-v4 runs
/// them in the background two at once, "~2x on long transpose chains" [N-arch4].
#[test]
fn tensor_transposes_twice_as_fast_on_v4() {
    let text = "nc_transpose ps[0:128]@0:f32[128], sb[0:128]@0:bf16[128]\n".repeat(10);
    let p = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    for (chip, cycles) in [(Chip::Trn2, 128.0), (Chip::Trn3, 64.0)] {
        let r = timing(&p, chip);
        let mm: Vec<_> =
            r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Tensor)).collect();
        let interval_ns = (mm[9].start_ps - mm[1].start_ps) as f64 / 8.0 / 1000.0;
        assert!(within(interval_ns, cycles / 2.4, 0.02), "{chip}: {interval_ns} ns");
    }
}

/// [N-arch2, N-arch3, N-arch4]: VectorE streams 128 elements per cycle on NeuronCore-v2 and
/// 256 of a 32-bit dtype on v3/v4 (2 per lane), so a 2048-element fp32 max over PSUM issues every
/// 2048 cycles on trn1 and 1024 on trn2/trn3; ScalarE stays at one per lane.
#[test]
fn vector_data_path_is_two_lanes_wide_for_fp32_from_v3() {
    let reduce = "tensor_reduce sb[0:128]@{o}:f32[1], ps[0:128]@0:f32[2048] op=max axes=1\n";
    let text: String = (0..10).map(|i| reduce.replace("{o}", &(4 * i).to_string())).collect();
    let p = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    for (chip, cycles) in [(Chip::Trn1, 2048.0), (Chip::Trn2, 1024.0), (Chip::Trn3, 1024.0)] {
        let r = timing(&p, chip);
        let ops: Vec<_> =
            r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Vector)).collect();
        let interval_ns = (ops[9].start_ps - ops[1].start_ps) as f64 / 8.0 / 1000.0;
        let ghz = chip.params().core.vector_clock_hz.value / 1e9;
        assert!(within(interval_ns, cycles / ghz, 0.02), "{chip}: {interval_ns} ns");
    }
    let act = "activation sb[0:128]@{o}:f32[2048], ps[0:128]@0:f32[2048] func=exp\n";
    let text: String = (0..10).map(|i| act.replace("{o}", &(8192 * i).to_string())).collect();
    let p = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let r = timing(&p, Chip::Trn2);
    let ops: Vec<_> =
        r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Scalar)).collect();
    let interval_ns = (ops[9].start_ps - ops[1].start_ps) as f64 / 8.0 / 1000.0;
    assert!(within(interval_ns, 2048.0 / 1.2, 0.02), "scalar: {interval_ns} ns");
}

/// [N-perf]: dependent 1-element ScalarE instructions on NeuronCore-v2 issue about every 189 ns.
#[test]
fn dependent_scalar_chain_on_v2() {
    let mut text = String::from("memset sb[0:128]@0:f32[1] value=0.5 S[0]++\n");
    for i in 0..20 {
        let (a, b) = if i % 2 == 0 { (0, 4) } else { (4, 0) };
        let wait = if i == 0 { " S[0]>=1" } else { "" };
        text.push_str(&format!(
            "activation sb[0:128]@{b}:f32[1], sb[0:128]@{a}:f32[1] func=exp{wait}\n"
        ));
    }
    let r = timing(&parse(&text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn1);
    let acts: Vec<_> =
        r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Scalar)).collect();
    let interval_ns = (acts[19].start_ps - acts[1].start_ps) as f64 / 18.0 / 1000.0;
    assert!(within(interval_ns, 189.0, 0.05), "{interval_ns} ns");
    // Independent instructions issue at MIN_II (64 cycles), far faster.
    let text = text
        .replace("@4:f32[1], sb[0:128]@0:f32[1]", "@8:f32[1], sb[0:128]@12:f32[1]")
        .replace("@0:f32[1], sb[0:128]@4:f32[1]", "@16:f32[1], sb[0:128]@12:f32[1]");
    let r = timing(&parse(&text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn1);
    let acts: Vec<_> =
        r.slices.iter().filter(|s| s.track == Track::Engine(Engine::Scalar)).collect();
    let interval_ns = (acts[19].start_ps - acts[1].start_ps) as f64 / 18.0 / 1000.0;
    assert!(within(interval_ns, 64.0 / 1.4, 0.02), "{interval_ns} ns");
}

/// [N-dma]: one Trn2 DMA engine moves 32 KiB HBM -> SBUF in about 1.4 us (1,416 ns).
#[test]
fn one_dma_engine_moves_32_kib_in_1_4_us() {
    let text = "hbm x: f32[8192] input\ndma_copy sb[0:1]@0:f32[8192], x S[0]++\n";
    let r = timing(&parse(text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn2);
    let pieces: Vec<_> = r.slices.iter().filter(|s| matches!(s.track, Track::Dma(_))).collect();
    assert_eq!(pieces.len(), 1);
    let ns = pieces[0].duration_ps as f64 / 1000.0;
    assert!(within(ns, 1416.0, 0.05), "{ns} ns");
    assert_eq!(r.dma.bytes, 32768);
    // End to end the trigger and the ~1.3 us fixed cost come first ([N-dmabw]).
    assert!(r.time_ns() > 1300.0 + ns);
}

/// 128 partitions spread over all 16 DMA engines; HBM bandwidth per core caps the total.
#[test]
fn wide_dma_uses_sixteen_engines_and_respects_hbm_share() {
    let text = "hbm x: f32[128, 8192] input\ndma_copy sb[0:128]@0:f32[8192], x S[0]++\n";
    let chip = Chip::Trn2.params();
    let r = simulate(&parse(text).unwrap_or_else(|e| panic!("{e}")), &chip, None, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let engines: std::collections::BTreeSet<_> = r
        .slices
        .iter()
        .filter_map(|s| match s.track {
            Track::Dma(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!(engines.len(), 16);
    let achieved = r.dma.bytes as f64 / (r.dma.busy_ps as f64 / 1000.0); // B/ns
    let share = chip.hbm_bytes_per_s.value / f64::from(chip.cores_per_chip.value) / 1e9;
    assert!(
        achieved <= share * 1.001 && achieved > share * 0.9,
        "{achieved} B/ns vs share {share}"
    );
}

/// A DMA engine moves elements: 2-byte data at half the byte rate of 4-byte data (the trn1
/// matmul tutorial's bf16 loads run at ~100-106 GB/s per core, timings.json).
#[test]
fn dma_engines_move_bf16_at_half_the_fp32_byte_rate() {
    let one = |dt: &str, n: usize| {
        let text = format!("hbm x: {dt}[8, {n}] input\ndma_copy sb[0:8]@0:{dt}[{n}], x S[0]++\n");
        let r = timing(&parse(&text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn1);
        let piece =
            r.slices.iter().find(|s| matches!(s.track, Track::Dma(_))).map(|s| s.duration_ps);
        piece.unwrap_or_else(|| panic!("no DMA piece")) as f64
    };
    // The same bytes: 8 partitions x 16 KiB.
    let (f32_ps, bf16_ps) = (one("f32", 4096), one("bf16", 8192));
    assert!(within(bf16_ps / f32_ps, 2.0, 0.05), "bf16 {bf16_ps} ps vs f32 {f32_ps} ps");
}

/// [N-arch3]: a DMA transpose SBUF -> SBUF moves at up to 50 % of a copy's throughput: eight
/// of them spread over eight queues take a DMA engine twice as long as eight copies.
#[test]
fn dma_transpose_moves_at_half_the_copy_rate() {
    let run = |op: &str| {
        let text: String = (0..8)
            .map(|q| {
                let (dst, src) = (q * 8192, q * 8192 + 4096);
                format!("{op} sb[0:128]@{dst}:bf16[128], sb[0:128]@{src}:bf16[128] queue={q}\n")
            })
            .collect();
        let r = timing(&parse(&text).unwrap_or_else(|e| panic!("{e}")), Chip::Trn2);
        assert_eq!(r.dma.bytes, 8 * 128 * 128 * 2);
        (r.dma.per_engine_busy_ps[0] as f64, r.dma.busy_ps as f64)
    };
    let ((copy, copy_span), (transpose, transpose_span)) = (run("dma_copy"), run("dma_transpose"));
    assert!(within(transpose / copy, 2.0, 0.01), "transpose {transpose} ps vs copy {copy} ps");
    assert!(transpose_span > 1.5 * copy_span, "{transpose_span} vs {copy_span}");
}

fn random_input(shape: &[usize], seed: u64) -> HostTensor {
    let mut s = seed | 1;
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect();
    HostTensor::from_f32(DType::F32, shape, &v)
}

/// Timing mode with values ends in memory bit-identical to the functional simulator.
#[test]
fn values_mode_matches_functional_memory() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(9, |t| t.as_nanos() as u64);
    for (name, inputs) in [
        ("matmul.asm", vec![("a", vec![128, 128]), ("b", vec![128, 512])]),
        ("softmax.asm", vec![("x", vec![128, 512])]),
        ("mm_stream.asm", vec![("a", vec![128, 128]), ("b", vec![128, 512])]),
    ] {
        let p = example(name);
        let given: BTreeMap<String, HostTensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, (n, s))| (n.to_string(), random_input(s, seed + i as u64)))
            .collect();
        for chip in [Chip::Trn1, Chip::Trn2, Chip::Trn3] {
            let f =
                rainier_funcsim::run(&p, &chip.params(), &given).unwrap_or_else(|e| panic!("{e}"));
            let t =
                simulate(&p, &chip.params(), Some(&given), false).unwrap_or_else(|e| panic!("{e}"));
            assert!(t.machine.as_ref() == Some(&f.machine), "{name} on {chip} (seed {seed})");
            assert_eq!(t.outputs, f.outputs);
        }
    }
}

#[test]
fn trace_is_deterministic_and_well_formed() {
    let p = example("softmax.asm");
    let chip = Chip::Trn2.params();
    let a = serde_json::to_string(&chrome_trace(&p, &chip, &timing(&p, Chip::Trn2)))
        .unwrap_or_default();
    let b = serde_json::to_string(&chrome_trace(&p, &chip, &timing(&p, Chip::Trn2)))
        .unwrap_or_default();
    assert_eq!(a, b);
    // The streaming writer gives the same bytes, one event in memory at a time.
    let mut streamed = Vec::new();
    write_chrome_trace(&p, &chip, &timing(&p, Chip::Trn2), &mut streamed)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8(streamed).unwrap_or_default(), a);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap_or_default();
    let events = v["traceEvents"].as_array().cloned().unwrap_or_default();
    let slices: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    // 5 instructions on engine tracks + DMA pieces (16 engines per 128-partition transfer).
    assert_eq!(slices.iter().filter(|e| e["cat"] != "dma").count(), 5);
    assert_eq!(slices.iter().filter(|e| e["cat"] == "dma").count(), 32);
    assert!(slices.iter().any(|e| e["name"] == "activation"
        && e["args"]["text"].as_str().unwrap_or("").contains("func=exp")));
    let names: Vec<_> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        names.contains(&"tensor engine".to_string())
            && names.contains(&"DMA engine 15".to_string())
    );
}

#[test]
fn deadlock_names_engine_instruction_and_cycle() {
    let p = parse("memset sb[0:128]@0:f32[4] value=1 S[1]++\nmemset sb[0:128]@16:f32[4] value=1 engine=gpsimd S[1]>=2\n").unwrap_or_else(|e| panic!("{e}"));
    let e = simulate(&p, &Chip::Trn2.params(), None, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("deadlock at") && e.contains("gpsimd engine (free since cycle 0) waits forever at line 2 (instruction #1 memset) on S[1]>=2 (S[1] is 1)"), "{e}");
}

/// Engines run concurrently: a Vector op and a Scalar op with no dependency overlap in time.
#[test]
fn independent_engines_overlap() {
    let p = parse("tensor_copy sb[0:128]@0:f32[4096], sb[0:128]@16384:f32[4096]\nactivation sb[0:128]@32768:f32[4096], sb[0:128]@49152:f32[4096] func=exp\n").unwrap_or_else(|e| panic!("{e}"));
    let r = timing(&p, Chip::Trn2);
    let total = r.time_ps as f64;
    let sum = (r.engines[Engine::Vector.index()].busy_ps
        + r.engines[Engine::Scalar.index()].busy_ps) as f64;
    assert!(total < 0.8 * sum, "no overlap: {total} vs {sum}");
}

/// A program whose result depends on timing (Vector reads a tile GpSimd writes, no semaphore
/// between them: 0 on trn1/trn2, 1 on trn3 before races were detected) does not run: both
/// simulators refuse it with the two instructions' lines.
#[test]
fn racy_programs_are_refused_by_both_simulators() {
    let text = "hbm y: f32[128, 4] output
memset sb[0:128]@0:f32[4] value=0 S[0]++
memset sb[0:128]@0:f32[4] value=1 engine=gpsimd
dma_copy y, sb[0:128]@0:f32[4] S[0]>=1
";
    let p = parse(text).unwrap_or_else(|e| panic!("{e}"));
    for chip in Chip::ALL {
        let f =
            rainier_funcsim::run(&p, &chip.params(), &BTreeMap::new()).err().map(|e| e.to_string());
        let t = simulate(&p, &chip.params(), None, false).err().map(|e| e.to_string());
        for e in [f, t] {
            let e = e.unwrap_or_default();
            assert!(e.contains("line 3 (instruction #1 memset): data race with line 2 (instruction #0 memset on vector): it writes"), "{chip}: {e}");
            assert!(
                e.contains("line 4 (instruction #2 dma_copy): data race with line 3"),
                "{chip}: {e}"
            );
        }
    }
}
