//! Invariant: for any correctly synchronized program, the timing model with values ends in the
//! same memory (SBUF, PSUM, HBM, semaphores) as the functional simulator, although it executes
//! the engines' instructions in a different interleaving.
//!
//! Programs are random but race-free: every instruction writes a fresh 32 x 32 fp32 region,
//! reads only regions written before it (waiting on their producers' semaphores), and runs on a
//! random engine that can execute it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_tensor::{DType, HostTensor};

#[derive(Debug, Clone)]
enum Kind {
    TensorTensor { gpsimd: bool, op: usize },
    TensorScalar { engine: usize, mul: bool, imm: f32 },
    Activation { func: usize },
    Copy { gpsimd: bool },
    Iota { base: i32 },
    Memset { gpsimd: bool, value: f32 },
    Matmul,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (any::<bool>(), 0usize..5).prop_map(|(gpsimd, op)| Kind::TensorTensor { gpsimd, op }),
        (0usize..3, any::<bool>(), -2.0f32..2.0)
            .prop_map(|(engine, mul, imm)| Kind::TensorScalar { engine, mul, imm }),
        (0usize..4).prop_map(|func| Kind::Activation { func }),
        any::<bool>().prop_map(|gpsimd| Kind::Copy { gpsimd }),
        (-50i32..50).prop_map(|base| Kind::Iota { base }),
        (any::<bool>(), -3.0f32..3.0).prop_map(|(gpsimd, value)| Kind::Memset { gpsimd, value }),
        Just(Kind::Matmul),
    ]
}

/// Region `k`: SBUF or (for matmul results) PSUM, 32 partitions x 32 fp32.
fn region(k: usize, psum: &[bool]) -> String {
    if psum[k] {
        format!("ps[0:32]@{}:f32[32]", k * 128)
    } else {
        format!("sb[0:32]@{}:f32[32]", k * 128)
    }
}

fn program(kinds: &[(Kind, usize, usize)]) -> String {
    let n = kinds.len() + 2;
    let mut psum = vec![false; n];
    let mut text = String::from("hbm x: f32[32, 64] input\nhbm y: f32[32, 32] output\n");
    text.push_str("dma_copy sb[0:32]@0:f32[32], x[0:32, 0:32] S[0]++\n");
    text.push_str("dma_copy sb[0:32]@128:f32[32], x[0:32, 32:64] S[1]++\n");
    for (i, (kind, a, b)) in kinds.iter().enumerate() {
        let k = i + 2;
        // Inputs: earlier SBUF regions (PSUM results are read only by copies).
        let pick = |r: usize, want_sbuf: bool| -> usize {
            let mut j = r % k;
            while want_sbuf && psum[j] {
                j = (j + 1) % k;
                if j == r % k {
                    return 0;
                }
            }
            j
        };
        let (ra, rb) = (pick(*a, true), pick(*b, true));
        let wait = |js: &[usize]| js.iter().map(|j| format!(" S[{j}]>=1")).collect::<String>();
        let line = match kind {
            Kind::TensorTensor { gpsimd, op } => {
                let ops = ["add", "subtract", "multiply", "max", "min"];
                let engine = if *gpsimd { " engine=gpsimd" } else { "" };
                format!(
                    "tensor_tensor {}, {}, {} op={}{engine}{}",
                    region(k, &psum),
                    region(ra, &psum),
                    region(rb, &psum),
                    ops[*op],
                    wait(&[ra, rb])
                )
            }
            Kind::TensorScalar { engine, mul, imm } => {
                let e = ["vector", "scalar", "gpsimd"][*engine];
                let op = if *mul { "multiply" } else { "add" };
                format!(
                    "tensor_scalar {}, {} op0={op} operand0={imm:?} engine={e}{}",
                    region(k, &psum),
                    region(ra, &psum),
                    wait(&[ra])
                )
            }
            Kind::Activation { func } => {
                let f = ["exp", "tanh", "gelu", "sigmoid"][*func];
                format!(
                    "activation {}, {} func={f} scale=0.5{}",
                    region(k, &psum),
                    region(ra, &psum),
                    wait(&[ra])
                )
            }
            Kind::Copy { gpsimd } => {
                // Copies may also evacuate PSUM results (Vector engine).
                let src = if !gpsimd && psum[*a % k] { *a % k } else { ra };
                let engine = if *gpsimd { " engine=gpsimd" } else { "" };
                format!(
                    "tensor_copy {}, {}{engine}{}",
                    region(k, &psum),
                    region(src, &psum),
                    wait(&[src])
                )
            }
            Kind::Iota { base } => {
                format!("iota {} base={base} channel_multiplier=3 steps=[1]", region(k, &psum))
            }
            Kind::Memset { gpsimd, value } => {
                let engine = if *gpsimd { " engine=gpsimd" } else { "" };
                format!("memset {} value={value:?}{engine}", region(k, &psum))
            }
            Kind::Matmul => {
                psum[k] = true;
                format!(
                    "nc_matmul {}, {}, {}{}",
                    region(k, &psum),
                    region(ra, &psum),
                    region(rb, &psum),
                    wait(&[ra, rb])
                )
            }
        };
        text.push_str(&line);
        text.push_str(&format!(" S[{k}]++\n"));
    }
    let last = (0..n).rev().find(|&j| !psum[j]).unwrap_or(0);
    text.push_str(&format!("dma_copy y, {} S[{last}]>=1\n", region(last, &psum)));
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 512, ..ProptestConfig::default() })]

    #[test]
    fn timing_with_values_equals_functional(kinds in prop::collection::vec((kind(), any::<usize>(), any::<usize>()), 1..60),
                                           chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3]), seed: u32) {
        let text = program(&kinds);
        let p = rainier_isa::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let xs: Vec<f32> = (0..32 * 64).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 1000.0 - 1.0).collect();
        let inputs = BTreeMap::from([("x".to_string(), HostTensor::from_f32(DType::F32, &[32, 64], &xs))]);
        let params = chip.params();
        let f = rainier_funcsim::run(&p, &params, &inputs).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let t = rainier_timesim::simulate(&p, &params, Some(&inputs), false).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(t.machine.as_ref() == Some(&f.machine), "memory differs on {}:\n{}", chip, text);
        prop_assert_eq!(&t.outputs, &f.outputs);
        prop_assert_eq!(t.instructions_executed, f.instructions_executed);
    }
}
