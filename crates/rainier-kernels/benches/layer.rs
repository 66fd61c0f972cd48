//! Host speed of the decoder-layer programs the planner simulates under
//! `--neuron-costs layer-programs` (Llama 2 7B at TP 8, 4096 tokens, bf16, trn1): building
//! each pass's program, and building plus timing it as the planner does
//! (`rainier_timesim::simulate_built`, the builder's programs being race-free by construction).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rainier_arch::Chip;
use rainier_kernels::{decoder_layer, decoder_layer_backward, Composition, LayerShape};
use rainier_tensor::DType;

const SHAPE: LayerShape = LayerShape {
    batch: 1,
    seq: 4096,
    hidden: 4096,
    heads: 4,
    kv_heads: 4,
    head_dim: 128,
    ffn: 1376,
    sequence_parallel: 8,
};

fn layer(c: &mut Criterion) {
    let chip = Chip::Trn1;
    let params = chip.params();
    let mut group = c.benchmark_group("decoder_layer_llama2_7b_tp8_4096");
    group.sample_size(10);
    for (pass, backward) in [("forward", false), ("backward", true)] {
        let build = || {
            let built = if backward {
                decoder_layer_backward(chip, &SHAPE, DType::Bf16, Composition::Overlapped)
            } else {
                decoder_layer(chip, &SHAPE, DType::Bf16, Composition::Overlapped)
            };
            built.unwrap_or_else(|e| panic!("{pass}: {e}"))
        };
        group.throughput(Throughput::Elements(build().instructions.len() as u64));
        group.bench_function(format!("{pass}_build"), |b| b.iter(build));
        group.bench_function(format!("{pass}_build_and_time"), |b| {
            b.iter(|| {
                rainier_timesim::simulate_built(&build(), &params, None, false)
                    .unwrap_or_else(|e| panic!("{pass}: {e}"))
                    .time_ps
            })
        });
    }
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
