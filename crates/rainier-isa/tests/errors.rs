//! Parser and verifier diagnostics: each names what is wrong and where.

use rainier_arch::Chip;
use rainier_isa::{parse, verify};

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(p) => panic!("parsed:\n{p}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_errors_name_line_column_and_problem() {
    let decl = "hbm a: f32[128, 128] input\n";
    for (text, want) in [
        ("", "no instructions"),
        ("# only a comment\n", "no instructions"),
        ("nc_matmull sb[0:1]@0:f32[1]", "line 1, column 1: unknown instruction 'nc_matmull'"),
        ("memset sb[0:128]@0:f99[4] value=1", "unknown dtype 'f99'"),
        ("memset sb[0:128]@0:f32[4]", "missing option value="),
        ("memset sb[0:128]@0:f32[4] value=abc", "value: 'abc' is not a number"),
        ("memset sb[0:128]@0:f32[4] value=1 colour=red", "does not take option 'colour'"),
        ("memset sb[0:128]@0:f32[4] value=1 value=2", "given twice"),
        ("memset sb[4:2]@0:f32[4] value=1", "reversed"),
        ("tensor_copy sb[0:128]@0:f32[4]", "takes 2 operands"),
        (
            "tensor_copy sb[0:128]@0:f32[4], sb[0:128]@0:f32[4], sb[0:1]@0:f32[1]",
            "takes 2 operands",
        ),
        ("dma_copy sb[0:128]@0:f32[4], nope", "unknown HBM tensor 'nope'"),
        ("iota sb[0:128]@0:i32[4] engine=tensor steps=[1]", "cannot run on the tensor engine"),
        (
            "affine_select sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] cmp=add steps=[1] on_false=0",
            "must be a comparison",
        ),
        (
            "activation sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] func=hardswish",
            "unknown activation function 'hardswish'",
        ),
        ("memset sb[0:1]@0:f32[4] value=1 S[3]", "expected '>=' or '++'"),
        ("memset sb[0:1]@0:f32[4] value=1 $", "unexpected character '$'"),
        ("hbm a: f32[0] input\nmemset sb[0:1]@0:f32[1] value=0", "dimension 0 is out of range"),
        ("hbm sb: f32[4] input\nmemset sb[0:1]@0:f32[1] value=0", "reserved"),
    ] {
        let e = parse_err(text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let e = parse_err(&format!("{decl}dma_copy sb[0:128]@0:f32[128], a[0:200, 0:128]"));
    assert!(e.starts_with("line 2, column 34") && e.contains("outside dim 0 of 'a'"), "{e}");
}

#[test]
fn verifier_reports_every_violation_with_its_line() {
    let text = "\
hbm a: f32[128, 128] input
# line 2 is a comment
dma_copy sb[0:128]@0:f32[128], a S[0]++
nc_matmul ps[0:128]@0:f32[600], sb[0:128]@0:bf16[128], sb[0:128]@0:f32[600]
memset sb[16:48]@0:f32[4] value=1
tensor_copy ps[0:128]@0:f32[4], ps[0:128]@16:f32[4] engine=gpsimd
memset sb[0:128]@229372:f32[4] value=0 S[300]++
dma_copy sb[0:128]@0:f32[129], a
memset sb[0:1]@0:f32[[0, 300], [0, 300]] value=1
";
    let p = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let v = match verify(&p, &Chip::Trn2.params().core) {
        Err(v) => v,
        Ok(()) => panic!("verified"),
    };
    let msgs: Vec<String> = v.0.iter().map(ToString::to_string).collect();
    let all = msgs.join("\n");
    for want in [
        "line 4 (instruction #1 nc_matmul): moving free size N = 600 exceeds 512",
        "line 4 (instruction #1 nc_matmul): dst bytes 0..2400 cross a 2048-byte PSUM bank boundary",
        "stationary bf16 and moving f32 cannot pair",
        "line 5 (instruction #2 memset): operand 1: an engine access of 32 partitions cannot start at partition 16",
        "line 6 (instruction #3 tensor_copy): operand 1: the GpSimd engine cannot access PSUM",
        "line 7 (instruction #4 memset): operand 1: bytes 229372..229388 of each partition fall outside SBUF's 229376 bytes",
        "semaphore S[300] does not exist (256 per NeuronCore)",
        "line 8 (instruction #5 dma_copy): dst has 16512 elements but src has 16384",
        "line 9 (instruction #6 memset): operand 1: 90000 elements per partition exceed 65536",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
    // The same SBUF offset is legal on trn3 (256 KiB partitions).
    let trn3 =
        verify(&p, &Chip::Trn3.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(!trn3.contains("229376"), "{trn3}");
    // N = 600 fits NeuronCore-v4's 4096 limit.
    assert!(!trn3.contains("N = 600"), "{trn3}");
}

#[test]
fn generation_rules() {
    let p = parse("tensor_copy sb[0:128]@0:f32[4], sb[0:128]@16:f32[4] engine=scalar")
        .unwrap_or_else(|e| panic!("{e}"));
    let e = verify(&p, &Chip::Trn1.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("use activation func=copy"), "{e}");
    assert!(verify(&p, &Chip::Trn2.params().core).is_ok());
    let p = parse("memset sb[0:128]@0:fp8e4m3fn[4] value=1").unwrap_or_else(|e| panic!("{e}"));
    assert!(verify(&p, &Chip::Trn2.params().core).is_err());
    assert!(verify(&p, &Chip::Trn3.params().core).is_ok());
    // fp8 double row: v3+, fp8 only, two rows per operand.
    let ok = "nc_matmul ps[0:64]@0:f32[512], sb[0:128]@0:fp8e4m3[2, 64], sb[0:128]@128:fp8e4m3[2, 512] double_row=true";
    let p = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    assert!(verify(&p, &Chip::Trn2.params().core).is_ok());
    let e = verify(&p, &Chip::Trn1.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("double_row needs NeuronCore-v3"), "{e}");
    let bf16 = "nc_matmul ps[0:64]@0:f32[512], sb[0:128]@0:bf16[2, 64], sb[0:128]@256:bf16[2, 512] double_row=true";
    let p = parse(bf16).unwrap_or_else(|e| panic!("{e}"));
    let e = verify(&p, &Chip::Trn2.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("double_row needs fp8 inputs"), "{e}");
    // The fast exponential: v4 only; init goes with load_reduce.
    let ok = "exponential sb[0:128]@0:bf16[64], sb[0:128]@128:f32[64] max=sb[0:128]@512:f32[1] reduce_cmd=reset_reduce reduce=sb[0:128]@516:f32[1]";
    let p = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    assert!(verify(&p, &Chip::Trn3.params().core).is_ok());
    let e = verify(&p, &Chip::Trn2.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("exponential needs NeuronCore-v4"), "{e}");
    let p = parse("exponential sb[0:128]@0:f32[64], sb[0:128]@256:f32[64] reduce_cmd=load_reduce")
        .unwrap_or_else(|e| panic!("{e}"));
    let e = verify(&p, &Chip::Trn3.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("load_reduce needs it"), "{e}");
    // MX: v4 only; quadrant-sized data, the scale layout, packed data only where MX is.
    let mx = "nc_matmul_mx ps[0:128]@0:f32[512], sb[0:128]@0:fp8e4m3fnx4[128], sb[0:128]@512:fp4e2m1fnx4[512], sb[0:128]@2048:u8[128], sb[0:128]@2176:u8[512]\n\
              quantize_mx sb[0:64]@8192:fp8e5m2x4[16], sb[0:64]@8256:bf16[64], sb[0:64]@8384:u8[16]";
    let p = parse(mx).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = verify(&p, &Chip::Trn3.params().core) {
        panic!("{e}");
    }
    let e = verify(&p, &Chip::Trn2.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("nc_matmul_mx needs NeuronCore-v4"), "{e}");
    assert!(e.contains("quantize_mx needs NeuronCore-v4"), "{e}");
    for (bad, want) in [
        (
            "quantize_mx sb[0:16]@0:fp8e5m2x4[16], sb[0:16]@64:bf16[64], sb[0:2]@192:u8[16]",
            "whole 32-partition quadrants",
        ),
        (
            "quantize_mx sb[0:64]@0:fp8e5m2x4[16], sb[0:64]@64:bf16[64], sb[0:8]@192:u8[16]",
            "scale must be [64, 16]",
        ),
        (
            "quantize_mx sb[0:32]@0:fp4e2m1fnx4[16], sb[0:32]@64:bf16[64], sb[0:4]@192:u8[16]",
            "must be fp8e5m2x4 or fp8e4m3fnx4",
        ),
        (
            "quantize_mx sb[0:32]@0:fp8e5m2x4[16], sb[0:32]@64:f32[64], sb[0:4]@512:u8[16]",
            "must be bf16 or f16",
        ),
        ("tensor_copy sb[0:32]@0:fp8e5m2x4[16], sb[0:32]@64:fp8e5m2x4[16]", "MX packed data"),
        (
            "nc_matmul_mx ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@512:fp4e2m1fnx4[512], sb[0:128]@2048:u8[128], sb[0:128]@2176:u8[512]",
            "stationary dtype bf16 is not MX data",
        ),
        (
            "nc_matmul_mx ps[0:127]@0:f32[512], sb[0:128]@0:fp8e5m2x4[127], sb[0:128]@512:fp8e5m2x4[512], sb[0:128]@2048:u8[127], sb[0:128]@2176:u8[512]",
            "must be even",
        ),
        ("hbm a: u32[64] input\ndma_copy sb[0:1]@0:fp8e5m2x4[64], a", "DMA cannot convert"),
    ] {
        let p = parse(bad).unwrap_or_else(|e| panic!("{e}"));
        let e =
            verify(&p, &Chip::Trn3.params().core).err().map(|v| v.to_string()).unwrap_or_default();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn dma_transpose_rules() {
    let ok = "dma_transpose sb[0:128]@0:bf16[32], sb[0:32]@256:bf16[128] queue=2";
    let p = parse(ok).unwrap_or_else(|e| panic!("{e}"));
    for chip in [Chip::Trn2, Chip::Trn3] {
        verify(&p, &chip.params().core).unwrap_or_else(|e| panic!("{chip}: {e}"));
    }
    let e = verify(&p, &Chip::Trn1.params().core).err().map(|v| v.to_string()).unwrap_or_default();
    assert!(e.contains("dma_transpose needs NeuronCore-v3"), "{e}");
    for (bad, want) in [
        ("dma_transpose sb[0:128]@0:bf16[24], sb[0:24]@256:bf16[128]", "a multiple of 16"),
        ("dma_transpose sb[0:128]@0:bf16[16], sb[0:32]@256:bf16[128]", "dst must be [128, 32]"),
        ("dma_transpose sb[0:128]@0:f32[32], sb[0:32]@256:bf16[128]", "one 2- or 4-byte dtype"),
        ("dma_transpose sb[0:128]@0:u8[32], sb[0:32]@256:u8[128]", "one 2- or 4-byte dtype"),
        ("dma_transpose ps[0:128]@0:bf16[32], sb[0:32]@256:bf16[128]", "DMA cannot access PSUM"),
    ] {
        let p = parse(bad).unwrap_or_else(|e| panic!("{e}"));
        let e =
            verify(&p, &Chip::Trn2.params().core).err().map(|v| v.to_string()).unwrap_or_default();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn the_example_programs_verify_on_every_chip() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/asm");
    for name in ["matmul.asm", "softmax.asm", "mm_stream.asm"] {
        let text = std::fs::read_to_string(format!("{dir}/{name}"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for chip in Chip::ALL {
            verify(&p, &chip.params().core).unwrap_or_else(|v| panic!("{name} on {chip}: {v}"));
        }
    }
}

/// docs/isa.md is generated from the instruction table; regenerate with
/// `cargo run -- isa > docs/isa.md` (or `RAINIER_BLESS=1 cargo test`).
#[test]
fn isa_doc_is_fresh() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/isa.md");
    let want = rainier_isa::isa_markdown();
    if std::env::var_os("RAINIER_BLESS").is_some() {
        std::fs::write(path, &want).unwrap_or_else(|e| panic!("{e}"));
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(have == want, "docs/isa.md is stale: run `RAINIER_BLESS=1 cargo test -p rainier-isa`");
}

/// `Op::info` and the table agree on every mnemonic.
/// A finite literal beyond fp32's range is an error, not a silent inf.
#[test]
fn immediates_beyond_fp32_are_refused() {
    let e = parse("memset sb[0:1]@0:f32[4] value=1e39").err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("beyond fp32's range"));
    assert!(parse("memset sb[0:1]@0:f32[4] value=inf").is_ok());
    assert!(parse("memset sb[0:1]@0:f32[4] value=3e38").is_ok());
}

#[test]
fn op_info_rows_match_names() {
    let p = parse(
        "hbm a: f32[4] input
dma_copy sb[0:1]@0:f32[4], a
nc_matmul ps[0:1]@0:f32[4], sb[0:1]@0:bf16[1], sb[0:1]@0:bf16[4]
nc_transpose ps[0:1]@0:f32[1], sb[0:1]@0:f32[1]
tensor_tensor sb[0:1]@0:f32[4], sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] op=add
tensor_scalar sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] op0=add operand0=1
tensor_reduce sb[0:1]@0:f32[1], sb[0:1]@0:f32[4] op=add
tensor_copy sb[0:1]@0:f32[4], sb[0:1]@0:f32[4]
memset sb[0:1]@0:f32[4] value=0
select sb[0:1]@0:f32[4], sb[0:1]@0:f32[4], sb[0:1]@0:f32[4], sb[0:1]@0:f32[4]
activation sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] func=exp
iota sb[0:1]@0:i32[4] steps=[1]
affine_select sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] cmp=ge steps=[1] on_false=0
tensor_tensor_scan sb[0:1]@0:f32[4], sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] op0=multiply op1=add initial=0
bn_stats sb[0:1]@0:f32[6], sb[0:1]@0:f32[4]
bn_aggr sb[0:1]@0:f32[2], sb[0:1]@0:f32[6]
scalar_tensor_tensor sb[0:1]@0:f32[4], sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] op0=subtract operand0=1 op1=multiply
tensor_scalar_reduce sb[0:1]@0:f32[4], sb[0:1]@0:f32[4] op0=multiply operand0=2 reduce_op=add reduce=sb[0:1]@64:f32[1]
max8 sb[0:1]@0:f32[8], sb[0:1]@0:f32[16]
nc_find_index8 sb[0:1]@0:u32[8], sb[0:1]@0:f32[16], sb[0:1]@64:f32[8]
reciprocal sb[0:1]@0:f32[4], sb[0:1]@0:f32[4]
range_select sb[0:1]@0:f32[4], sb[0:1]@0:f32[4], sb[0:1]@64:f32[1], sb[0:1]@68:f32[1] cmp0=ge cmp1=lt reduce_cmd=reset_reduce reduce=sb[0:1]@72:f32[1]
select_reduce sb[0:1]@0:f32[4], sb[0:1]@16:u8[4], sb[0:1]@32:f32[4] on_false=-1 reduce_cmd=reduce
local_gather sb[0:16]@0:f32[8], sb[0:16]@64:f32[32], sb[0:16]@256:u16[1] elems=2 valid=4
tensor_partition_reduce sb[0:1]@0:f32[8], sb[0:16]@64:f32[8] op=add
dma_indirect sb[0:1]@0:f32[4], a, sb[0:1]@64:i32[1] oob=skip
tensor_scalar_cumulative sb[0:1]@0:f32[4], sb[0:1]@16:f32[4] op0=multiply operand0=2 op1=add
nc_match_replace8 sb[0:1]@0:f32[16], sb[0:1]@64:f32[16], sb[0:1]@128:f32[8] imm=0 indices=sb[0:1]@160:u32[8]
gather sb[0:1]@0:f32[4], sb[0:1]@16:f32[8], sb[0:1]@64:u32[4]
sequence_bounds sb[0:1]@0:f32[8], sb[0:1]@64:f32[4]
dropout sb[0:1]@0:f32[4], sb[0:1]@16:f32[4] prob=0.5 seed=3
exponential sb[0:1]@0:f32[4], sb[0:1]@16:f32[4] max=1 reduce_cmd=reset_reduce
nc_matmul_mx ps[0:32]@0:bf16[8], sb[0:32]@0:fp8e5m2x4[4], sb[0:32]@16:fp4e2m1fnx4[8], sb[0:4]@64:u8[4], sb[0:4]@68:u8[8] accumulate=true
quantize_mx sb[0:32]@0:fp8e4m3fnx4[4], sb[0:32]@16:bf16[16], sb[0:4]@64:u8[4]
dma_transpose sb[0:4]@0:bf16[16], sb[0:16]@64:bf16[4] queue=3
nc_stream_shuffle sb[0:32]@0:f32[4], sb[0:32]@16:f32[4] mask=[1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 255]
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.instructions.len(), rainier_isa::OPCODES.len());
    for ins in &p.instructions {
        assert_eq!(ins.op.info().name, ins.op.name());
    }
}

fn races_of(text: &str) -> String {
    let p = parse(text).unwrap_or_else(|e| panic!("{e}"));
    verify(&p, &Chip::Trn2.params().core).err().map(|v| v.to_string()).unwrap_or_default()
}

/// Issue 19's reproducer: GpSimd overwrites a tile VectorE reads, with no semaphore between
/// them (the result depended on the chip's timing).
#[test]
fn unsynchronised_conflicts_are_data_races_naming_both_lines() {
    let racy = "hbm x: f32[128, 64] input
hbm y: f32[128, 64] output
dma_copy sb[0:128]@0:f32[64], x S[5]++
tensor_scalar sb[0:128]@256:f32[64], sb[0:128]@0:f32[64] op0=add operand0=1 S[5]>=1 S[0]++
memset sb[0:128]@0:f32[64] value=1 engine=gpsimd
dma_copy y, sb[0:128]@256:f32[64] S[0]>=1
";
    let e = races_of(racy);
    assert!(e.contains("line 5 (instruction #2 memset): data race with line 4 (instruction #1 tensor_scalar on vector)"), "{e}");
    assert!(e.contains("SBUF partitions 0..128 bytes 0..256"), "{e}");
    // ... and with the DMA that wrote the tile (GpSimd never waited for it).
    assert!(
        e.contains("data race with line 3 (instruction #0 dma_copy on sync): it writes"),
        "{e}"
    );
    // GpSimd waiting for VectorE (which itself waited for the DMA) orders all three.
    let ordered = racy.replace("value=1 engine=gpsimd", "value=1 engine=gpsimd S[0]>=1");
    assert_eq!(races_of(&ordered), "");
    // Disjoint bytes never race.
    let disjoint = racy.replace("memset sb[0:128]@0:f32[64]", "memset sb[0:128]@1024:f32[64]");
    assert_eq!(races_of(&disjoint), "");
}

#[test]
fn a_dma_is_known_done_only_through_its_semaphore() {
    // The issuing engine's later instructions do not wait for its DMA.
    let e = races_of(
        "hbm x: f32[128, 64] input
dma_copy sb[0:128]@0:f32[64], x engine=vector S[5]++
tensor_scalar sb[0:128]@256:f32[64], sb[0:128]@0:f32[64] op0=add operand0=1
",
    );
    assert!(e.contains("data race with line 2 (instruction #0 dma_copy on vector)"), "{e}");
    // A DMA that reads a tile its engine has just written must wait for it too.
    let e = races_of(
        "hbm y: f32[128, 64] output
tensor_scalar sb[0:128]@0:f32[64], sb[0:128]@1024:f32[64] op0=add operand0=1 engine=scalar
dma_copy y, sb[0:128]@0:f32[64] engine=scalar
",
    );
    assert!(e.contains("data race with line 2 (instruction #0 tensor_scalar on scalar)"), "{e}");
}

#[test]
fn semaphore_knowledge_is_transitive_and_counts_only_ordered_signals() {
    // ScalarE learns the DMA is done through VectorE, which waited for it.
    assert_eq!(
        races_of(
            "hbm x: f32[128, 64] input
dma_copy sb[0:128]@0:f32[64], x S[5]++
memset sb[0:128]@1024:f32[4] value=0 S[5]>=1 S[0]++
activation sb[0:128]@512:f32[64], sb[0:128]@0:f32[64] func=exp S[0]>=1
"
        ),
        ""
    );
    // Two unordered DMAs signal S[5]: S[5] >= 1 may be either, so reading the second's
    // destination races with it.
    let two = "hbm x: f32[128, 64] input
dma_copy sb[0:128]@0:f32[64], x S[5]++
dma_copy sb[0:128]@256:f32[64], x engine=gpsimd S[5]++
tensor_copy sb[0:128]@512:f32[64], sb[0:128]@256:f32[64] S[5]>=1
";
    let e = races_of(two);
    let want = "line 3 (instruction #1 dma_copy): data race with line 4 (instruction #2 tensor_copy on vector): it reads";
    assert!(e.contains(want), "{e}");
    // Waiting for both is enough...
    assert_eq!(races_of(&two.replace("S[5]>=1\n", "S[5]>=2\n")), "");
    // ... and so is a chain: the second DMA starts after the first has landed, so S[5] >= 1
    // means the first and S[5] >= 2 both.
    let chained = two.replace("engine=gpsimd S[5]++", "engine=gpsimd S[5]>=1 S[5]++");
    let read_first = chained.replace(
        "sb[0:128]@512:f32[64], sb[0:128]@256:f32[64] S[5]>=1",
        "sb[0:128]@512:f32[64], sb[0:128]@0:f32[64] S[5]>=1",
    );
    assert_eq!(races_of(&read_first), "");
    // A compute instruction's completion says nothing about the count of a semaphore it
    // shares with an unordered DMA (found in review: S[1] reached 2 in the schedule).
    let e = races_of(
        "hbm a: f32[128, 4] input
dma_copy sb[0:128]@0:f32[4], a S[1]++
memset sb[0:128]@64:f32[4] value=1 engine=gpsimd S[0]++ S[1]++
tensor_copy sb[0:128]@128:f32[4], sb[0:128]@0:f32[4] S[0]>=1
",
    );
    assert!(e.contains("line 4 (instruction #2 tensor_copy): data race with line 2"), "{e}");
}
