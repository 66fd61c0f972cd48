//! The builder on random kernels: whatever it emits passes the verifier, and its automatic
//! semaphores make the program race-free, so the timing model (which interleaves engines
//! differently) ends in the same memory as the functional simulator.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_isa::{ActFunc, AluOp, DmaOperand, Engine, Op, Tile};
use rainier_kernels::KernelBuilder;
use rainier_tensor::{DType, HostTensor};

#[derive(Debug, Clone)]
enum Step {
    Alloc,
    Free(usize),
    Load(usize, u64),
    Binary(usize, usize, usize, bool),
    Act(usize, usize),
    Matmul(usize, usize, usize),
    Evacuate(usize, usize),
    Store(usize, u64, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let i = any::<usize>();
    prop_oneof![
        2 => Just(Step::Alloc),
        1 => i.prop_map(Step::Free),
        2 => (i, 0u64..4).prop_map(|(t, c)| Step::Load(t, c)),
        3 => (i, i, i, any::<bool>()).prop_map(|(d, a, b, g)| Step::Binary(d, a, b, g)),
        2 => (i, i).prop_map(|(d, s)| Step::Act(d, s)),
        2 => (i, i, i).prop_map(|(d, a, b)| Step::Matmul(d, a, b)),
        2 => (i, i).prop_map(|(d, s)| Step::Evacuate(d, s)),
        1 => (i, 0u64..4, any::<bool>()).prop_map(|(t, c, g)| Step::Store(t, c, g)),
    ]
}

fn build(steps: &[Step], chip: Chip) -> rainier_isa::Program {
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", DType::F32, &[32, 128]).unwrap_or_else(|e| panic!("{e}"));
    let y = kb.output("y", DType::F32, &[32, 128]).unwrap_or_else(|e| panic!("{e}"));
    let mut sb: Vec<Tile> = Vec::new();
    let mut ps: Vec<Tile> = Vec::new();
    let alloc_sb = |kb: &mut KernelBuilder, sb: &mut Vec<Tile>| {
        if let Ok(t) = kb.sbuf(32, DType::F32, &[32]) {
            sb.push(t);
        }
    };
    alloc_sb(&mut kb, &mut sb);
    for s in steps {
        match *s {
            Step::Alloc => {
                if sb.len() < 10 {
                    alloc_sb(&mut kb, &mut sb);
                }
                if ps.len() < 4 {
                    if let Ok(t) = kb.psum(32, DType::F32, &[32]) {
                        ps.push(t);
                    }
                }
            }
            Step::Free(i) if sb.len() > 1 => {
                let t = sb.remove(i % sb.len());
                kb.free(&t).unwrap_or_else(|e| panic!("{e}"));
            }
            Step::Free(_) => {}
            Step::Load(t, c) => {
                let src = kb.block(x, 0..32, c * 32..c * 32 + 32);
                kb.dma(DmaOperand::Tile(sb[t % sb.len()].clone()), DmaOperand::Hbm(src));
            }
            Step::Binary(d, a, b, gpsimd) => {
                let (d, a, b) =
                    (sb[d % sb.len()].clone(), sb[a % sb.len()].clone(), sb[b % sb.len()].clone());
                let engine = if gpsimd { Engine::GpSimd } else { Engine::Vector };
                kb.push(engine, Op::TensorTensor { dst: d, in0: a, in1: b, op: AluOp::Add });
            }
            Step::Act(d, s) => {
                let (dst, src) = (sb[d % sb.len()].clone(), sb[s % sb.len()].clone());
                kb.push(
                    Engine::Scalar,
                    Op::Activation {
                        dst,
                        src,
                        func: ActFunc::Tanh,
                        scale: rainier_isa::ScalarOperand::Imm(0.5),
                        bias: None,
                        reduce: None,
                    },
                );
            }
            Step::Matmul(d, a, b) if !ps.is_empty() => {
                let acc = ps[d % ps.len()].clone();
                let (a, b) = (sb[a % sb.len()].clone(), sb[b % sb.len()].clone());
                kb.matmul(&acc, &a, &b, d % 2 == 1);
            }
            Step::Evacuate(d, s) if !ps.is_empty() => {
                let (dst, src) = (sb[d % sb.len()].clone(), ps[s % ps.len()].clone());
                kb.copy(Engine::Vector, &dst, &src);
            }
            Step::Matmul(..) | Step::Evacuate(..) => {}
            Step::Store(t, c, gpsimd) => {
                let dst = kb.block(y, 0..32, c * 32..c * 32 + 32);
                let src = DmaOperand::Tile(sb[t % sb.len()].clone());
                if gpsimd {
                    kb.dma_from(Engine::GpSimd, DmaOperand::Hbm(dst), src);
                } else {
                    kb.dma(DmaOperand::Hbm(dst), src);
                }
            }
        }
    }
    kb.finish().unwrap_or_else(|e| panic!("the verifier rejected a built kernel: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 512, ..ProptestConfig::default() })]

    #[test]
    fn built_kernels_verify_and_are_race_free(steps in prop::collection::vec(step(), 1..80),
                                              chip in prop::sample::select(vec![Chip::Trn1, Chip::Trn2, Chip::Trn3]), seed: u32) {
        let p = build(&steps, chip);
        let xs: Vec<f32> = (0..32 * 128).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2000) as f32 / 1000.0 - 1.0).collect();
        let inputs = BTreeMap::from([("x".to_string(), HostTensor::from_f32(DType::F32, &[32, 128], &xs))]);
        let params = chip.params();
        let f = rainier_funcsim::run(&p, &params, &inputs).map_err(|e| TestCaseError::fail(format!("{e}\n{p}")))?;
        let t = rainier_timesim::simulate(&p, &params, Some(&inputs), false).map_err(|e| TestCaseError::fail(format!("{e}\n{p}")))?;
        prop_assert!(t.machine.as_ref() == Some(&f.machine), "memory differs on {}:\n{}", chip, p);
    }
}

/// DMA semaphores are reused round robin, and transfers land out of order: a wait for the
/// first transfer on a semaphore must not be satisfied by a later, quicker one on the same
/// semaphore. A big load, a reader of it, enough small loads to come back to the big load's
/// semaphore, and a small load there: the reader must still see the big load's data.
#[test]
fn dma_semaphore_reuse_keeps_transfers_ordered() {
    let chip = Chip::Trn2;
    let mut kb = KernelBuilder::new(chip);
    let big = kb.input("big", DType::F32, &[128, 16384]).unwrap_or_else(|e| panic!("{e}"));
    let small = kb.input("small", DType::F32, &[1, 4]).unwrap_or_else(|e| panic!("{e}"));
    let out = kb.output("out", DType::F32, &[128, 16384]).unwrap_or_else(|e| panic!("{e}"));
    let x = kb.sbuf(128, DType::F32, &[16384]).unwrap_or_else(|e| panic!("{e}"));
    kb.dma(DmaOperand::Tile(x.clone()), DmaOperand::Hbm(kb.block(big, 0..128, 0..16384)));
    let y = kb.sbuf(128, DType::F32, &[16384]).unwrap_or_else(|e| panic!("{e}"));
    kb.copy(Engine::Vector, &y, &x);
    kb.dma_from(
        Engine::GpSimd,
        DmaOperand::Hbm(kb.block(out, 0..128, 0..16384)),
        DmaOperand::Tile(y.clone()),
    );
    let pool = chip.params().core.semaphores.value as usize - 5;
    let mut smalls = Vec::new();
    for _ in 0..pool {
        let t = kb.sbuf(1, DType::F32, &[4]).unwrap_or_else(|e| panic!("{e}"));
        kb.dma_from(
            Engine::Scalar,
            DmaOperand::Tile(t.clone()),
            DmaOperand::Hbm(kb.block(small, 0..1, 0..4)),
        );
        smalls.push(t);
    }
    let p = kb.finish().unwrap_or_else(|e| panic!("{e}"));
    // Soundness on any DMA arbitration: a transfer that reuses a semaphore waits for the
    // previous transfer on it, so the semaphore counts its transfers in order.
    let mut issued: BTreeMap<u32, u32> = BTreeMap::new();
    for ins in &p.instructions {
        if let Some(&s) = ins.signals.first().filter(|_| ins.op.is_dma()) {
            let n = issued.entry(s).or_insert(0);
            if *n > 0 {
                assert!(ins.waits.iter().any(|w| w.semaphore == s && w.value >= *n), "{ins:?}");
            }
            *n += 1;
        }
    }
    let v: Vec<f32> = (0..128 * 16384).map(|i| (i % 1000) as f32 + 1.0).collect();
    let inputs = BTreeMap::from([
        ("big".to_string(), HostTensor::from_f32(DType::F32, &[128, 16384], &v)),
        ("small".to_string(), HostTensor::from_f32(DType::F32, &[1, 4], &[1.0, 2.0, 3.0, 4.0])),
    ]);
    let params = chip.params();
    let f = rainier_funcsim::run(&p, &params, &inputs).unwrap_or_else(|e| panic!("{e}"));
    let t = rainier_timesim::simulate(&p, &params, Some(&inputs), false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(t.machine.as_ref() == Some(&f.machine), "the copy ran before the big load landed");
    // And in time: the copy starts after the big load's last transfer ends.
    let t = rainier_timesim::simulate(&p, &params, None, true).unwrap_or_else(|e| panic!("{e}"));
    let load_end =
        t.slices.iter().filter(|s| s.instruction == 0).map(|s| s.start_ps + s.duration_ps).max();
    let copy_start = t.slices.iter().filter(|s| s.instruction == 1).map(|s| s.start_ps).min();
    assert!(copy_start >= load_end, "copy at {copy_start:?} ps, big load done at {load_end:?} ps");
}
