//! Plan evaluations per second: one full evaluation (target ≤ 10 µs); a search on one core
//! (target ≥ 10^5 plans per second per core); the llama3.1-405b search on 500,000 Trn2 chips
//! (target < 10 s on a 2-core machine); a million chips costs what a thousand does; serving,
//! its workload simulation and the disaggregated search.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rainier_hw::Catalog;
use rainier_model::Model;
use rainier_plan::{
    evaluate, search, serve, serve_search, LengthDistribution, SearchOptions, ServeConfig,
    TrainConfig, Workload,
};

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

fn bench_search(c: &mut Criterion) {
    let catalog = Catalog::built_in();
    let trn2 = catalog.chip("trn2").expect("trn2");
    let model = Model::preset("llama3.1-405b").expect("preset");
    let options = SearchOptions::default();
    let mut group = c.benchmark_group("search");
    group.sample_size(10);
    for chips in [1_000u64, 500_000, 1_000_000] {
        let cfg = TrainConfig::new(chips, 8192, 16_384);
        let plans = search(&model, trn2, &cfg, &options, None).expect("search").evaluated;
        group.throughput(Throughput::Elements(plans));
        // One core: the per-core rate.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
        group.bench_function(
            format!("llama3.1-405b on {chips} trn2, 1 thread ({plans} plans)"),
            |b| {
                b.iter(|| {
                    one.install(|| search(&model, trn2, &cfg, &options, None).expect("search"))
                })
            },
        );
        group.bench_function(
            format!("llama3.1-405b on {chips} trn2, all threads ({plans} plans)"),
            |b| b.iter(|| search(&model, trn2, &cfg, &options, None).expect("search")),
        );
    }
    group.finish();
}

fn bench_serve(c: &mut Criterion) {
    let catalog = Catalog::built_in();
    let h100 = catalog.chip("h100").expect("h100");
    let model = Model::preset("llama3-70b").expect("preset");
    let fixed = ServeConfig { tp: Some(8), pp: Some(1), ..ServeConfig::new(1024, 1024, 1024) };
    c.bench_function("serve llama3-70b on 1024 h100, tp 8 (static + continuous)", |b| {
        b.iter(|| serve(&model, h100, std::hint::black_box(&fixed)).expect("serve"))
    });
    let slo = ServeConfig {
        slo_ttft_ms: Some(2000.0),
        slo_tpot_ms: Some(50.0),
        ..ServeConfig::new(1024, 1024, 1024)
    };
    c.bench_function("serve --search llama3-70b on 1024 h100 at an SLO", |b| {
        b.iter(|| serve_search(&model, h100, std::hint::black_box(&slo)).expect("search"))
    });
}

/// The serving simulation: 10^5 log-normal requests on one plan (target < 2 s), with and
/// without the search for the highest rate meeting the SLO.
fn bench_workload(c: &mut Criterion) {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-70b").expect("preset");
    let mut group = c.benchmark_group("workload");
    group.sample_size(10);
    for chip in ["h100", "trn2"] {
        let chip = catalog.chip(chip).expect("chip");
        let tp = if chip.name == "trn2" { 16 } else { 8 };
        let w = Workload::Synthetic {
            lengths: LengthDistribution::LogNormal,
            rate_per_s: 8.0,
            requests: 100_000,
            seed: 1,
        };
        let cfg = ServeConfig {
            tp: Some(tp),
            pp: Some(1),
            max_seqs: Some(256),
            workload: Some(w),
            ..ServeConfig::new(8, 1024, 256)
        };
        group.throughput(Throughput::Elements(100_000));
        group.bench_function(format!("10^5 requests, llama3-70b on 8 {}", chip.name), |b| {
            b.iter(|| serve(&model, chip, std::hint::black_box(&cfg)).expect("serve"))
        });
    }
    group.finish();
}

/// Disaggregated serving: every TP of each pool and every split of 1,024 chips at an SLO
/// (the split search is arithmetic over per-replica capacities).
fn bench_disaggregated(c: &mut Criterion) {
    let catalog = Catalog::built_in();
    let model = Model::preset("llama3-70b").expect("preset");
    let slo = ServeConfig {
        slo_ttft_ms: Some(2000.0),
        slo_tpot_ms: Some(50.0),
        ..ServeConfig::new(1024, 4096, 512)
    };
    let split = rainier_plan::Disaggregation::default();
    let mut group = c.benchmark_group("disaggregated");
    group.sample_size(10);
    for chip in ["h100", "trn2"] {
        let chip = catalog.chip(chip).expect("chip");
        group.bench_function(format!("search llama3-70b on 1024 {}", chip.name), |b| {
            b.iter(|| {
                rainier_plan::serve_disaggregated(&model, chip, chip, &slo, &split).expect("a plan")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_search, bench_serve, bench_workload, bench_disaggregated);
criterion_main!(benches);
