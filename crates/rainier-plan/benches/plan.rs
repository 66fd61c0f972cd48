//! Plan evaluations per second (the target: one evaluation in ≤ 10 µs).

use criterion::{criterion_group, criterion_main, Criterion};
use rainier_hw::Catalog;
use rainier_model::Model;
use rainier_plan::{evaluate, TrainConfig};

fn bench(c: &mut Criterion) {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-70b").expect("preset");
    for chip in ["h100", "trn2"] {
        let chip = catalog.chip(chip).expect("chip");
        let cfg = TrainConfig {
            tp: Some(8),
            pp: Some(4),
            dp: Some(32),
            micro_batch: Some(1),
            ..TrainConfig::new(1024, 8192, 1024)
        };
        let cfg = if chip.name == "trn2" { TrainConfig { dp: Some(128), ..cfg } } else { cfg };
        c.bench_function(&format!("evaluate llama3-70b on 1024 {}", chip.name), |b| {
            b.iter(|| {
                evaluate(std::hint::black_box(&model), chip, std::hint::black_box(&cfg))
                    .expect("plan")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
