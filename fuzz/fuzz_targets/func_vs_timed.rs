//! Differential: a random race-free program (made by the kernel builder from the input bytes)
//! ends with identical memory in the functional simulator and in the timed one with values.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rainier_arch::Chip;
use rainier_isa::{ActFunc, AluOp, DmaOperand, Engine, ScalarOperand, Tile};
use rainier_kernels::KernelBuilder;
use rainier_tensor::{DType, HostTensor};

const ROWS: u64 = 128;
const COLS: u64 = 128;

fn build(chip: Chip, ops: &[u8]) -> Option<rainier_isa::Program> {
    let mut kb = KernelBuilder::new(chip);
    let x = kb.input("x", DType::F32, &[ROWS, COLS]).ok()?;
    let y = kb.input("y", DType::F32, &[ROWS, COLS]).ok()?;
    let out = kb.output("out", DType::F32, &[ROWS, COLS]).ok()?;
    let mut tiles: Vec<Tile> = Vec::new();
    for t in [x, y] {
        let tile = kb.sbuf(ROWS as u32, DType::F32, &[COLS]).ok()?;
        kb.dma(DmaOperand::Tile(tile.clone()), DmaOperand::Hbm(kb.block(t, 0..ROWS, 0..COLS)));
        tiles.push(tile);
    }
    // Engines each op may run on for this chip: ScalarE has tensor_copy from NeuronCore-v3 and
    // tensor_scalar beyond add/multiply from v4; GpSimd cannot read PSUM.
    let v3 = chip.params().core.scalar_has_tensor_copy();
    let v4 = chip.params().core.has_fast_exponential();
    let copy_engines: &[Engine] = if v3 {
        &[Engine::Vector, Engine::GpSimd, Engine::Scalar]
    } else {
        &[Engine::Vector, Engine::GpSimd]
    };
    let psum_readers: &[Engine] =
        if v3 { &[Engine::Vector, Engine::Scalar] } else { &[Engine::Vector] };
    for op in ops.chunks_exact(4).take(48) {
        let [kind, a, b, c] = [op[0], op[1], op[2], op[3]];
        let src = tiles[a as usize % tiles.len()].clone();
        let other = tiles[b as usize % tiles.len()].clone();
        let dst = kb.sbuf(ROWS as u32, DType::F32, &[COLS]).ok()?;
        match kind % 5 {
            0 => {
                let alu = AluOp::ALL[c as usize % 6];
                let engine = [Engine::Vector, Engine::GpSimd][c as usize / 6 % 2];
                kb.tensor_tensor(engine, &dst, &src, &other, alu);
            }
            1 => {
                let alu = AluOp::ALL[c as usize % AluOp::ALL.len()];
                let imm = f32::from(b) / 16.0 - 4.0;
                let scalar_ok = v4 || matches!(alu, AluOp::Add | AluOp::Multiply);
                let engine = match c as usize / 16 % 3 {
                    2 if scalar_ok => Engine::Scalar,
                    1 => Engine::GpSimd,
                    _ => Engine::Vector,
                };
                kb.tensor_scalar(engine, &dst, &src, &[(alu, ScalarOperand::Imm(imm))]);
            }
            2 => {
                let func =
                    [ActFunc::Identity, ActFunc::Exp, ActFunc::Tanh, ActFunc::Relu][c as usize % 4];
                let scale = ScalarOperand::Imm(f32::from(b % 8) / 4.0);
                kb.activation(&dst, &src, func, scale, None, None);
            }
            3 => kb.copy(copy_engines[c as usize % copy_engines.len()], &dst, &src),
            _ => {
                // A matmul through PSUM (`srcᵀ · other`, square tiles), copied back to SBUF.
                let ps = kb.psum(ROWS as u32, DType::F32, &[COLS]).ok()?;
                kb.matmul(&ps, &src, &other, false);
                kb.copy(psum_readers[c as usize % psum_readers.len()], &dst, &ps);
                kb.free(&ps).ok()?;
            }
        }
        tiles.push(dst);
    }
    let last = tiles.last()?.clone();
    kb.dma(DmaOperand::Hbm(kb.block(out, 0..ROWS, 0..COLS)), DmaOperand::Tile(last));
    // Every op above is legal on the chip, so a rejected program is a bug to report.
    Some(kb.finish().unwrap_or_else(|e| panic!("the builder rejected a generated program: {e}")))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, ops)) = data.split_first() else { return };
    let input = |k: u32| {
        let n = (ROWS * COLS) as usize;
        let values: Vec<f32> = (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ (u32::from(seed) + k)) % 2000)
            .map(|v| v as f32 / 500.0 - 2.0)
            .collect();
        HostTensor::from_f32(DType::F32, &[ROWS as usize, COLS as usize], &values)
    };
    let inputs: BTreeMap<String, HostTensor> =
        [("x".to_string(), input(1)), ("y".to_string(), input(2))].into();
    for chip in [Chip::Trn1, Chip::Trn3] {
        let Some(program) = build(chip, ops) else { return };
        let params = chip.params();
        let f = rainier_funcsim::run(&program, &params, &inputs)
            .unwrap_or_else(|e| panic!("functional run of a builder program failed: {e}"));
        let t = rainier_timesim::simulate(&program, &params, Some(&inputs), false)
            .unwrap_or_else(|e| panic!("timed run of a builder program failed: {e}"));
        assert!(t.machine.as_ref() == Some(&f.machine), "memory differs on {chip}:\n{program}");
        assert_eq!(t.outputs, f.outputs);
    }
});
