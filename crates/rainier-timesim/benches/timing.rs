//! Host speed of timing-only simulation (issue #3 target: >= 5 million simulated instructions
//! per second on one core). The program is a software-pipelined GEMM-like loop: DMA loads,
//! matmuls into rotating PSUM banks, Vector/Scalar evictions, DMA stores, all semaphore-ordered.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rainier_arch::Chip;

/// `iters` iterations of 8 instructions each.
fn pipeline_program(iters: usize) -> String {
    let mut s = String::from("hbm a: bf16[128, 1024] input\nhbm o: f32[128, 512] output\n");
    for i in 0..iters {
        let bank = (i % 8) * 2048;
        let buf = (i % 4) * 1024;
        let n = i as u64 + 1;
        s.push_str(&format!("dma_copy sb[0:128]@{buf}:bf16[512], a[0:128, 0:512] S[0]++\n"));
        s.push_str(&format!("nc_matmul ps[0:128]@{bank}:f32[512], sb[0:128]@{buf}:bf16[128], sb[0:128]@{buf}:bf16[512] S[0]>={n}\n"));
        s.push_str(&format!("nc_matmul ps[0:128]@{bank}:f32[512], sb[0:128]@{buf}:bf16[128], sb[0:128]@{buf}:bf16[512] accumulate=true S[1]++\n"));
        s.push_str(&format!(
            "tensor_copy sb[0:128]@{}:f32[512], ps[0:128]@{bank}:f32[512] S[1]>={n} S[2]++\n",
            8192 + buf * 2
        ));
        s.push_str(&format!(
            "activation sb[0:128]@{}:f32[512], sb[0:128]@{}:f32[512] func=gelu S[2]>={n} S[3]++\n",
            16384 + buf * 2,
            8192 + buf * 2
        ));
        s.push_str(&format!("tensor_scalar sb[0:128]@{}:f32[512], sb[0:128]@{}:f32[512] op0=multiply operand0=0.5 S[3]>={n} S[4]++\n", 24576 + buf * 2, 16384 + buf * 2));
        s.push_str(&format!(
            "iota sb[0:128]@{}:i32[64] base=0 channel_multiplier=1 steps=[1]\n",
            40960 + (i % 2) * 256
        ));
        s.push_str(&format!("dma_copy o, sb[0:128]@{}:f32[512] S[4]>={n}\n", 24576 + buf * 2));
    }
    s
}

fn bench(c: &mut Criterion) {
    let chip = Chip::Trn2.params();
    let mut g = c.benchmark_group("timesim");
    g.sample_size(10);
    // 16k instructions: the program fits in cache; 200k: it streams from memory.
    for iters in [2_000, 25_000] {
        let program =
            rainier_isa::parse(&pipeline_program(iters)).unwrap_or_else(|e| panic!("{e}"));
        g.throughput(Throughput::Elements(program.instructions.len() as u64));
        g.bench_function(format!("timing_only_{}_instructions", program.instructions.len()), |b| {
            b.iter(|| {
                rainier_timesim::simulate(black_box(&program), &chip, None, false)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
