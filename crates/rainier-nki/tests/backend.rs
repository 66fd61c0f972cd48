//! The NKI back end on hand-written traces: liveness allocation, blocked tensors, errors that
//! name the kernel line, sequential fences, HBM -> HBM copies, values against the host.

#![allow(clippy::print_stderr)] // the random seeds are printed

use std::collections::BTreeMap;

use rainier_arch::Chip;
use rainier_nki::{compile, run, NkiError, RunOptions, Trace};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};
use serde_json::json;

fn trace(v: serde_json::Value) -> Trace {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

fn sbuf(name: &str, bytes: u64, block: u64, line: u32) -> serde_json::Value {
    json!({"name": name, "buffer": "sbuf", "dtype": "float32", "partitions": 128, "bytes": bytes,
           "block_bytes": block, "src": [0, line]})
}

/// `n` iterations of load x[i] -> tile_i -> store y[i]; each tile lives one iteration.
fn copy_loop(n: u64, tile_bytes: u64, fence: bool) -> Trace {
    let cols = tile_bytes / 4;
    let mut tensors = vec![
        json!({"name": "x", "buffer": "input", "dtype": "float32", "shape": [128 * n, cols]}),
        json!({"name": "y", "buffer": "output", "dtype": "float32", "shape": [128 * n, cols]}),
    ];
    let mut ops = Vec::new();
    for i in 0..n {
        tensors.push(sbuf(&format!("t{i}"), tile_bytes, 0, 10));
        let t = 2 + i as usize;
        let hbm =
            |k: usize| json!({"t": k, "off": i * 128 * cols, "dims": [[cols, 128], [1, cols]]});
        let tile = json!({"t": t, "p": 0, "n": 128, "off": 0, "dims": [[1, cols]]});
        if fence && i > 0 {
            ops.push(json!({"s": [0, 11], "i": {"op": "fence"}}));
        }
        ops.push(json!({"s": [0, 12], "i": {"op": "dma", "dst": tile, "src": hbm(0)}}));
        ops.push(json!({"s": [0, 13], "i": {"op": "dma", "dst": hbm(1), "src": tile}}));
    }
    trace(json!({"kernel": "copy", "files": ["k.py"], "tensors": tensors, "ops": ops}))
}

fn random_input(shape: &[usize], seed: u64) -> HostTensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vals: Vec<f32> = (0..shape.iter().product()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    HostTensor::from_f32(DType::F32, shape, &vals)
}

#[test]
fn tiles_of_finished_iterations_are_reused() {
    // 64 tiles of 64 KiB per partition would need 4 MiB; only two iterations are live at once.
    let c = compile(&copy_loop(64, 64 * 1024, false), &Chip::Trn1.params())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.sbuf_peak_bytes <= 2 * 64 * 1024, "peak {}", c.sbuf_peak_bytes);
}

#[test]
fn copies_are_exact_and_fences_serialize() {
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let x = random_input(&[1024, 512], seed);
    let inputs = BTreeMap::from([("x".to_string(), x.clone())]);
    let opts = RunOptions { values: true, record: false };
    let chip = Chip::Trn2.params();
    let free =
        run(&copy_loop(8, 2048, false), &chip, &inputs, opts).unwrap_or_else(|e| panic!("{e}"));
    let fenced =
        run(&copy_loop(8, 2048, true), &chip, &inputs, opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(free.outputs["y"].data, x.data);
    assert_eq!(fenced.outputs["y"].data, x.data);
    assert!(fenced.time_ns() > 1.2 * free.time_ns(), "{} vs {}", fenced.time_ns(), free.time_ns());
}

#[test]
fn out_of_sbuf_names_the_tensor_line_and_bytes() {
    let t = trace(json!({
        "kernel": "big", "files": ["kern.py"],
        "tensors": [sbuf("small", 1024, 0, 3), sbuf("huge", 200 * 1024, 0, 7)],
        "ops": [
            {"s": [0, 4], "i": {"op": "memset", "dst": {"t": 0, "p": 0, "n": 128, "dims": [[1, 256]]}, "value": 1.0, "engine": "vector"}},
            {"s": [0, 8], "i": {"op": "memset", "dst": {"t": 1, "p": 0, "n": 128, "dims": [[1, 512]]}, "value": 1.0, "engine": "vector"}},
            {"s": [0, 9], "i": {"op": "tensor_copy", "dst": {"t": 1, "p": 0, "n": 128, "dims": [[1, 256]]}, "src": {"t": 0, "p": 0, "n": 128, "dims": [[1, 256]]}, "engine": "vector"}}
        ]
    }));
    let e = compile(&t, &Chip::Trn1.params()).map(|_| ()).expect_err("must not compile");
    let msg = e.to_string();
    assert!(matches!(e, NkiError::OutOfMemory { .. }), "{msg}");
    assert!(
        msg.contains("kern.py:7") && msg.contains("'huge'") && msg.contains("204800 bytes"),
        "{msg}"
    );
}

#[test]
fn blocks_of_a_blocked_tensor_are_placed_separately() {
    // 64 blocks of 16 KiB (1 MiB per partition, far beyond SBUF), each used by one iteration.
    let mut ops = Vec::new();
    for b in 0..64u64 {
        let blk = json!({"t": 1, "p": 0, "n": 128, "off": b * 4096, "dims": [[1, 4096]]});
        ops.push(json!({"s": [0, 5], "i": {"op": "dma", "dst": blk, "src": {"t": 0, "off": 0, "dims": [[4096, 128], [1, 4096]]}}}));
        ops.push(json!({"s": [0, 6], "i": {"op": "dma", "dst": {"t": 2, "off": b * 4096 * 128, "dims": [[4096, 128], [1, 4096]]}, "src": blk}}));
    }
    let t = trace(json!({
        "kernel": "blocked", "files": ["k.py"],
        "tensors": [
            {"name": "x", "buffer": "input", "dtype": "float32", "shape": [128, 4096]},
            sbuf("blocks", 64 * 16384, 16384, 2),
            {"name": "y", "buffer": "output", "dtype": "float32", "shape": [64 * 128, 4096]}
        ],
        "ops": ops
    }));
    let c = compile(&t, &Chip::Trn1.params()).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.sbuf_peak_bytes <= 2 * 16384);
}

#[test]
fn access_out_of_bounds_is_an_error_at_its_line() {
    let t = trace(json!({
        "kernel": "oob", "files": ["k.py"],
        "tensors": [
            {"name": "x", "buffer": "input", "dtype": "float32", "shape": [128, 64]},
            sbuf("t", 256, 0, 2)
        ],
        "ops": [{"s": [0, 3], "i": {"op": "dma", "dst": {"t": 1, "p": 0, "n": 128, "dims": [[1, 64]]},
                                      "src": {"t": 0, "off": 64, "dims": [[64, 128], [1, 64]]}}}]
    }));
    let msg =
        compile(&t, &Chip::Trn2.params()).map(|_| ()).expect_err("must not compile").to_string();
    assert!(msg.starts_with("k.py:3:") && msg.contains("out of bounds"), "{msg}");
}

/// Found by the `nki_trace` fuzz target: a negative dim size wrapped to 2⁶⁴ - 28 and overflowed
/// the dim merge; a huge stride overflowed it the same way.
#[test]
fn dims_with_negative_sizes_or_huge_strides_are_errors_at_their_line() {
    for (dims, word) in
        [(json!([[64, -28], [1, 64]]), "size"), (json!([[1i64 << 50, 2], [1, 64]]), "stride")]
    {
        let t = trace(json!({
            "kernel": "bad", "files": ["k.py"],
            "tensors": [
                {"name": "x", "buffer": "input", "dtype": "float32", "shape": [128, 64]},
                sbuf("t", 256, 0, 2)
            ],
            "ops": [{"s": [0, 4], "i": {"op": "dma", "dst": {"t": 1, "p": 0, "n": 128, "dims": [[1, 64]]},
                                          "src": {"t": 0, "off": 0, "dims": dims}}}]
        }));
        let msg = compile(&t, &Chip::Trn2.params())
            .map(|_| ())
            .expect_err("must not compile")
            .to_string();
        assert!(msg.starts_with("k.py:4:") && msg.contains(&format!("dim {word}")), "{msg}");
    }
}

#[test]
fn hbm_to_hbm_copy_moves_the_data_and_uses_both_sides_bandwidth() {
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let x = random_input(&[512, 1024], seed);
    let t = trace(json!({
        "kernel": "h2h", "files": ["k.py"],
        "tensors": [
            {"name": "x", "buffer": "input", "dtype": "float32", "shape": [512, 1024]},
            {"name": "y", "buffer": "output", "dtype": "float32", "shape": [512, 1024]}
        ],
        "ops": [{"s": [0, 2], "i": {"op": "dma", "dst": {"t": 1, "off": 0, "dims": [[1024, 512], [1, 1024]]},
                                      "src": {"t": 0, "off": 0, "dims": [[1024, 512], [1, 1024]]}}}]
    }));
    let inputs = BTreeMap::from([("x".to_string(), x.clone())]);
    let chip = Chip::Trn2.params();
    let r = run(&t, &chip, &inputs, RunOptions { values: true, record: false })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.outputs["y"].data, x.data);
    // 2 MiB read and 2 MiB written through one core's HBM share.
    let share = chip.hbm_bytes_per_s.value / f64::from(chip.cores_per_chip.value);
    let floor_ns = 2.0 * (512.0 * 1024.0 * 4.0) / share * 1e9;
    assert!(r.time_ns() >= floor_ns, "{} < {floor_ns}", r.time_ns());
}

/// The streamed trace text is the trace value's JSON, slices named after their source lines.
#[test]
fn streamed_trace_text_equals_the_trace_value() {
    let t = trace(json!({
        "kernel": "h2h", "files": ["dir/k.py"],
        "tensors": [
            {"name": "x", "buffer": "input", "dtype": "float32", "shape": [128, 256]},
            {"name": "y", "buffer": "output", "dtype": "float32", "shape": [128, 256]}
        ],
        "ops": [{"s": [0, 7], "i": {"op": "dma", "dst": {"t": 1, "off": 0, "dims": [[256, 128], [1, 256]]},
                                      "src": {"t": 0, "off": 0, "dims": [[256, 128], [1, 256]]}}}]
    }));
    let chip = Chip::Trn1.params();
    let r = run(&t, &chip, &BTreeMap::new(), RunOptions { values: false, record: true })
        .unwrap_or_else(|e| panic!("{e}"));
    let files = vec!["dir/k.py".to_string()];
    let text = r.chrome_trace_text(&chip, &files);
    assert_eq!(text, r.chrome_trace(&chip, &files).to_string());
    assert!(text.contains("\"dma_copy k.py:7\""), "{text}");
}
