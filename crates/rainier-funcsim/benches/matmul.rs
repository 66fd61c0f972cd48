//! Host speed of the functional `nc_matmul` against a tuned host f32 GEMM (`matrixmultiply`)
//! on the same tile shapes. Target (issue #2): the simulated instruction reaches at least half
//! the host GEMM's FLOP/s. Throughput is reported in FLOP/s (criterion's "elements").

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rainier_arch::Chip;
use rainier_funcsim::{matmul::matmul_f32, Machine};
use rainier_isa::{Memory, Op, Program, Tile};
use rainier_tensor::DType;

const SHAPES: [(usize, usize, usize); 2] = [(128, 128, 512), (128, 64, 128)];

fn bench(c: &mut Criterion) {
    let core = Chip::Trn2.params().core;
    for (k, m, n) in SHAPES {
        let flops = 2 * k * m * n;
        let mut g = c.benchmark_group(format!("matmul_{k}x{m}x{n}"));
        g.throughput(Throughput::Elements(flops as u64));

        // The whole simulated instruction: SBUF gather, bf16 decode, fp32 MACs, PSUM write.
        let mut machine = Machine::new(&Program::default(), &core);
        let stationary = Tile::new(Memory::Sbuf, 0..k as u32, 0, DType::Bf16, &[m as u64]);
        let moving = Tile::new(Memory::Sbuf, 0..k as u32, 4096, DType::Bf16, &[n as u64]);
        let dst = Tile::new(Memory::Psum, 0..m as u32, 0, DType::F32, &[n as u64]);
        let vals = |len: usize| {
            (0..len).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect::<Vec<_>>()
        };
        machine.write_tile(&stationary, &vals(k * m)).unwrap_or_else(|e| panic!("{e}"));
        machine.write_tile(&moving, &vals(k * n)).unwrap_or_else(|e| panic!("{e}"));
        let op = Op::Matmul { dst, stationary, moving, accumulate: false, double_row: false };
        g.bench_function("funcsim_nc_matmul_bf16", |b| {
            b.iter(|| machine.execute(black_box(&op)).unwrap_or_else(|e| panic!("{e}")))
        });

        // The arithmetic core alone.
        let (s, v) = (vals(k * m), vals(k * n));
        let mut out = vec![0f32; m * n];
        g.bench_function("funcsim_kernel_only", |b| {
            b.iter(|| matmul_f32(black_box(&s), black_box(&v), k, m, n, true, &mut out))
        });

        // Host reference: C[M, N] = Aᵀ · B with A stored [K, M] row-major (column-major view).
        let mut c_host = vec![0f32; m * n];
        g.bench_function("host_matrixmultiply_sgemm", |b| {
            b.iter(|| unsafe {
                // SAFETY: the pointers and strides describe the live slices above.
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    s.as_ptr(),
                    1,
                    m as isize, // Aᵀ: element (i, p) at s[p * m + i]
                    v.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c_host.as_mut_ptr(),
                    n as isize,
                    1,
                )
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
