//! Every instruction of the functional simulator against the independent f64 reference
//! (`rainier-reference`), on fresh random inputs each run (proptest picks new seeds).
//!
//! Tolerances, per kind of instruction:
//! - ALU (`tensor_tensor`, `tensor_scalar`), casts (`tensor_copy`, `memset`, `dma_copy`),
//!   `select`, `iota`, `affine_select`, transposes: bit-exact against the reference computed with
//!   the documented rounding points (fp32 after each ALU op, then the destination dtype).
//! - `tensor_reduce`, `nc_matmul`: bit-exact against the reference with the stated fp32
//!   accumulation order, and within the classical bound n·u₃₂·Σ|terms| + 1 ulp(dst) of exact
//!   f64 math.
//! - `activation`, `exponential`: within 1 ulp of the destination dtype (+1e-12 relative) of
//!   the f64 function at the same fp32 argument; reductions within n·u₃₂·Σ|y| + 1e-6.

mod common;

use common::*;
use proptest::prelude::*;
use rainier_arch::Chip;
use rainier_isa::{
    ActFunc, Affine, AluOp, DmaOperand, HbmAccess, Memory, Op, Program, ReduceCmd, ReduceOp,
    ScalarOperand, ScalarStage, TensorDecl, TensorKind,
};
use rainier_reference as reference;
use rainier_tensor::DType;

/// Error bounds of a two-pass fp32 mean and sum of squared deviations of `n` values of
/// magnitude ≤ `scale` whose exact sum of squared deviations is `m2`.
fn two_pass_bounds(n: f64, scale: f64, m2: f64) -> (f64, f64) {
    let u = 2f64.powi(-24);
    let delta = 4.0 * n * u * scale;
    (delta, 2.0 * (12.0 * n * u * scale + n * u * m2 + n * delta * delta) + 1e-12)
}

fn rd(d: DType, x: f64) -> f64 {
    reference::round_to(d.name(), x)
}

fn r32(x: f64) -> f64 {
    reference::round_to("f32", x)
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(float_dtypes())
}

fn sizes() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        (1u64..=512).prop_map(|n| vec![n]),
        (1u64..=16, 1u64..=32).prop_map(|(a, b)| vec![a, b]),
        (1u64..=4, 1u64..=8, 1u64..=8).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    prop::sample::select(AluOp::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn tensor_tensor(seed: u64, parts in 1u32..=128, sz in sizes(), d in prop::collection::vec(dtype(), 3),
                     op in alu_op(), psum_in0: bool, pad in 0u64..3) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let mem0 = if psum_in0 && sz.iter().product::<u64>() * 4 <= 2048 { Memory::Psum } else { Memory::Sbuf };
        let in0 = a.tile(mem0, start, parts, d[0], &sz, pad);
        let in1 = a.tile(Memory::Sbuf, start, parts, d[1], &sz, 0);
        let dst = a.tile(Memory::Sbuf, start, parts, d[2], &sz, pad);
        let x = fill(&mut m, &in0, &mut r, -4.0, 4.0);
        let y = fill(&mut m, &in1, &mut r, -4.0, 4.0);
        m.execute(&Op::TensorTensor { dst: dst.clone(), in0, in1, op }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        for i in 0..got.len() {
            let want = rd(d[2], r32(reference::binary(op.name(), x[i], y[i])));
            prop_assert!(same(got[i], want), "{} {} {}: got {} want {}", x[i], op.name(), y[i], got[i], want);
        }
    }

    #[test]
    fn tensor_scalar(seed: u64, parts in 1u32..=128, sz in sizes(), din in dtype(), dout in dtype(),
                     ops in prop::collection::vec((alu_op(), any::<bool>(), any::<bool>(), -3.0f32..3.0), 1..=2)) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, start, parts, din, &sz, 0);
        let dst = a.tile(Memory::Sbuf, start, parts, dout, &sz, 1);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        let mut stages = Vec::new();
        let mut vals = Vec::new();
        for &(op, vector, reverse, imm) in &ops {
            let operand = if vector {
                let t = a.tile(Memory::Sbuf, start, parts, DType::F32, &[1], 0);
                vals.push(fill(&mut m, &t, &mut r, -3.0, 3.0));
                ScalarOperand::Vector(t)
            } else {
                vals.push(vec![f64::from(imm); parts as usize]);
                ScalarOperand::Imm(imm)
            };
            stages.push(ScalarStage { op, operand, reverse });
        }
        m.execute(&Op::TensorScalar { dst: dst.clone(), src, stages: stages.clone() }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let f = sz.iter().product::<u64>() as usize;
        for i in 0..got.len() {
            let mut v = x[i];
            for (s, st) in stages.iter().enumerate() {
                let c = vals[s][i / f];
                v = r32(if st.reverse { reference::binary(st.op.name(), c, v) } else { reference::binary(st.op.name(), v, c) });
            }
            prop_assert!(same(got[i], rd(dout, v)), "element {i}: got {} want {}", got[i], rd(dout, v));
        }
    }

    #[test]
    fn tensor_tensor_scan(seed: u64, parts in 1u32..=128, sz in sizes(), d in prop::collection::vec(dtype(), 3),
                          ops in (prop::sample::select(vec![AluOp::Multiply, AluOp::Add, AluOp::Subtract, AluOp::Max]),
                                  prop::sample::select(vec![AluOp::Add, AluOp::Multiply, AluOp::Subtract, AluOp::Min])),
                          reverse: (bool, bool), vector_initial: bool, imm in -2.0f32..2.0) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let in0 = a.tile(Memory::Sbuf, start, parts, d[0], &sz, 0);
        let in1 = a.tile(Memory::Sbuf, start, parts, d[1], &sz, 1);
        let dst = a.tile(Memory::Sbuf, start, parts, d[2], &sz, 0);
        // |in0| < 1 keeps a multiplicative recurrence bounded.
        let x = fill(&mut m, &in0, &mut r, -0.95, 0.95);
        let y = fill(&mut m, &in1, &mut r, -2.0, 2.0);
        let (initial, init) = if vector_initial {
            let t = a.tile(Memory::Sbuf, start, parts, DType::F32, &[1], 0);
            let v = fill(&mut m, &t, &mut r, -2.0, 2.0);
            (ScalarOperand::Vector(t), v)
        } else {
            (ScalarOperand::Imm(imm), vec![f64::from(imm); parts as usize])
        };
        m.execute(&Op::TensorTensorScan { dst: dst.clone(), in0, in1, initial, op0: ops.0, op1: ops.1,
                                          reverse0: reverse.0, reverse1: reverse.1 }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let f = sz.iter().product::<u64>() as usize;
        for p in 0..parts as usize {
            let want = reference::scan(&x[p * f..(p + 1) * f], &y[p * f..(p + 1) * f], init[p],
                                       (ops.0.name(), ops.1.name()), reverse);
            for i in 0..f {
                prop_assert!(same(got[p * f + i], rd(d[2], want[i])), "partition {p} element {i}: got {} want {}", got[p * f + i], rd(d[2], want[i]));
            }
        }
    }

    /// bn_stats then bn_aggr give each partition's mean and population variance within the
    /// two-pass fp32 error bound of f64 (mean: 4·n·u₃₂·max|x|; Σ(x − mean)²: twice
    /// 12·n·u₃₂·max|x| + n·u₃₂·Σ(x − mean)² + n·δ², δ the mean's bound), and the counts exactly.
    #[test]
    fn bn_stats_and_aggr(seed: u64, parts in 1u32..=128, chunks in 1u64..=4, n in 1u64..=512, din in dtype(), offset in -100.0f32..100.0) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let stats = a.tile(Memory::Sbuf, start, parts, DType::F32, &[chunks * 6], 0);
        let mut all: Vec<Vec<f64>> = vec![Vec::new(); parts as usize];
        for c in 0..chunks {
            let src = a.tile(Memory::Sbuf, start, parts, din, &[n], 0);
            let x = fill(&mut m, &src, &mut r, offset - 3.0, offset + 3.0);
            for p in 0..parts as usize {
                all[p].extend_from_slice(&x[p * n as usize..(p + 1) * n as usize]);
            }
            let mut dst = stats.clone();
            dst.offset_bytes += c * 24;
            dst.dims = dims_of(&[6]);
            m.execute(&Op::BnStats { dst: dst.clone(), src }).unwrap_or_else(|e| panic!("{e}"));
            let got = read(&m, &dst);
            for p in 0..parts as usize {
                let row = &all[p][(c * n) as usize..];
                let even: Vec<f64> = row.iter().step_by(2).copied().collect();
                let odd: Vec<f64> = row.iter().skip(1).step_by(2).copied().collect();
                prop_assert_eq!(got[p * 6], even.len() as f64);
                prop_assert_eq!(got[p * 6 + 3], odd.len() as f64);
                for (k, g) in [even, odd].iter().enumerate() {
                    let (cnt, mean, m2) = reference::moments(g);
                    let (tol_mean, tol_m2) = two_pass_bounds(cnt, f64::from(offset.abs()) + 3.0, m2);
                    prop_assert!((got[p * 6 + 3 * k + 1] - mean).abs() <= tol_mean, "mean {} vs {mean}", got[p * 6 + 3 * k + 1]);
                    prop_assert!((got[p * 6 + 3 * k + 2] - m2).abs() <= tol_m2, "m2 {} vs {m2}", got[p * 6 + 3 * k + 2]);
                }
            }
        }
        let out = a.tile(Memory::Sbuf, start, parts, DType::F32, &[2], 0);
        m.execute(&Op::BnAggr { dst: out.clone(), src: stats }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &out);
        for p in 0..parts as usize {
            let (cnt, mean, m2) = reference::moments(&all[p]);
            let (tol_mean, tol_m2) = two_pass_bounds(cnt, f64::from(offset.abs()) + 3.0, m2);
            prop_assert!((got[2 * p] - mean).abs() <= tol_mean, "mean {} vs {mean}", got[2 * p]);
            // Chan's combination adds one more rounding per group: twice the two-pass bound.
            prop_assert!((got[2 * p + 1] - m2 / cnt).abs() <= 2.0 * tol_m2 / cnt, "var {} vs {}", got[2 * p + 1], m2 / cnt);
        }
    }

    #[test]
    fn scalar_tensor_tensor_and_reciprocal(seed: u64, parts in 1u32..=128, sz in sizes(), d in prop::collection::vec(dtype(), 3),
                                           op0 in alu_op(), op1 in alu_op(), reverse: (bool, bool), vector: bool, imm in -3.0f32..3.0) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, start, parts, d[0], &sz, 0);
        let in1 = a.tile(Memory::Sbuf, start, parts, d[1], &sz, 1);
        let dst = a.tile(Memory::Sbuf, start, parts, d[2], &sz, 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        let y = fill(&mut m, &in1, &mut r, -4.0, 4.0);
        let (operand0, s) = if vector {
            let t = a.tile(Memory::Sbuf, start, parts, DType::F32, &[1], 0);
            let v = fill(&mut m, &t, &mut r, -3.0, 3.0);
            (ScalarOperand::Vector(t), v)
        } else {
            (ScalarOperand::Imm(imm), vec![f64::from(imm); parts as usize])
        };
        m.execute(&Op::ScalarTensorTensor { dst: dst.clone(), src: src.clone(), operand0, in1, op0, op1,
                                            reverse0: reverse.0, reverse1: reverse.1 }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let f = sz.iter().product::<u64>() as usize;
        for i in 0..got.len() {
            let c = s[i / f];
            let t = r32(if reverse.0 { reference::binary(op0.name(), c, x[i]) } else { reference::binary(op0.name(), x[i], c) });
            let want = rd(d[2], r32(if reverse.1 { reference::binary(op1.name(), y[i], t) } else { reference::binary(op1.name(), t, y[i]) }));
            prop_assert!(same(got[i], want), "element {i}: got {} want {want}", got[i]);
        }
        // reciprocal: correctly rounded fp32 division, then the destination dtype.
        m.execute(&Op::Reciprocal { dst: dst.clone(), src }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        for i in 0..got.len() {
            let want = rd(d[2], r32(1.0 / x[i]));
            prop_assert!(same(got[i], want), "1/{}: got {} want {want}", x[i], got[i]);
        }
    }

    #[test]
    fn tensor_scalar_reduce(seed: u64, parts in 1u32..=128, sz in sizes(), din in dtype(), dout in dtype(), op0 in alu_op(),
                            reduce_op in prop::sample::select(ReduceOp::ALL.to_vec()), imm in -3.0f32..3.0, reverse0: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, start, parts, din, &sz, 0);
        let dst = a.tile(Memory::Sbuf, start, parts, dout, &sz, 1);
        let red = a.tile(Memory::Sbuf, start, parts, DType::F32, &[1], 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        m.execute(&Op::TensorScalarReduce { dst: dst.clone(), src, op0, operand0: ScalarOperand::Imm(imm), reverse0,
                                            reduce_op, reduce: red.clone() }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let sums = read(&m, &red);
        let f = sz.iter().product::<u64>() as usize;
        for p in 0..parts as usize {
            let y: Vec<f64> = (0..f).map(|j| {
                let v = x[p * f + j];
                r32(if reverse0 { reference::binary(op0.name(), f64::from(imm), v) } else { reference::binary(op0.name(), v, f64::from(imm)) })
            }).collect();
            for j in 0..f {
                prop_assert!(same(got[p * f + j], rd(dout, y[j])));
            }
            let name = if reduce_op == ReduceOp::Add { "add" } else { reduce_op.name() };
            let want = y[1..].iter().fold(y[0], |acc, &v| r32(reference::binary(name, acc, v)));
            prop_assert!(same(sums[p], want), "partition {p}: reduce got {} want {want}", sums[p]);
        }
    }

    #[test]
    fn max8_and_find_index8(seed: u64, parts in 1u32..=128, n in 8u64..=2048, din in dtype()) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, start, parts, din, &[n], 0);
        let top = a.tile(Memory::Sbuf, start, parts, DType::F32, &[8], 0);
        let idx = a.tile(Memory::Sbuf, start, parts, DType::U32, &[8], 0);
        let x = fill(&mut m, &src, &mut r, -100.0, 100.0);
        m.execute(&Op::Max8 { dst: top.clone(), src: src.clone() }).unwrap_or_else(|e| panic!("{e}"));
        m.execute(&Op::FindIndex8 { dst: idx.clone(), data: src.clone(), vals: top.clone() }).unwrap_or_else(|e| panic!("{e}"));
        // nc_match_replace8: each of the top 8 (in order) replaces its first remaining match.
        let rep = a.tile(Memory::Sbuf, start, parts, din, &[n], 0);
        let ridx = a.tile(Memory::Sbuf, start, parts, DType::U32, &[8], 0);
        m.execute(&Op::MatchReplace8 { dst: rep.clone(), data: src, vals: top.clone(), imm: -1000.0, indices: Some(ridx.clone()) }).unwrap_or_else(|e| panic!("{e}"));
        let replaced = read(&m, &rep);
        let rix = read(&m, &ridx);
        let got = read(&m, &top);
        let ix = read(&m, &idx);
        let n = n as usize;
        for p in 0..parts as usize {
            let mut row = x[p * n..(p + 1) * n].to_vec();
            let orig = row.clone();
            row.sort_by(|a, b| b.total_cmp(a));
            let mut work = orig.clone();
            for j in 0..8 {
                prop_assert_eq!(got[p * 8 + j], row[j]);
                let first = orig.iter().position(|&v| v == row[j]).unwrap_or(usize::MAX);
                prop_assert_eq!(ix[p * 8 + j], first as f64);
                let k = work.iter().position(|&v| v == row[j]).unwrap_or(0);
                work[k] = rd(din, -1000.0);
                prop_assert_eq!(rix[p * 8 + j], k as f64);
            }
            for i in 0..n {
                prop_assert!(same(replaced[p * n + i], work[i]), "partition {p} element {i}");
            }
        }
    }

    /// range_select and select_reduce against np.where-style f64 loops, and the accumulator
    /// registers across reset_reduce then reduce.
    #[test]
    fn range_select_and_select_reduce_accumulate(seed: u64, parts in 1u32..=128, n in 1u64..=300, din in dtype(),
                                                 start in -50i32..50, cmps in (prop::sample::select(vec![AluOp::Ge, AluOp::Gt, AluOp::Eq]),
                                                                              prop::sample::select(vec![AluOp::Lt, AluOp::Le])),
                                                 reverse: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (p0, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, p0, parts, din, &[n], 0);
        let dst = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[n], 0);
        let b0 = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        let b1 = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        let red = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        let pred = a.tile(Memory::Sbuf, p0, parts, DType::U8, &[n], 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        let lo = fill(&mut m, &b0, &mut r, -60.0, 200.0);
        let hi = fill(&mut m, &b1, &mut r, -60.0, 400.0);
        let pv = fill(&mut m, &pred, &mut r, 0.0, 1.0);
        let on_false = -1.0e30f32;
        m.execute(&Op::RangeSelect { dst: dst.clone(), src: src.clone(), bound0: b0, bound1: b1, cmp0: cmps.0, cmp1: cmps.1,
                                     range_start: start, on_false, reduce_cmd: ReduceCmd::ResetReduce, reduce: None }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let n = n as usize;
        let mut acc = vec![f64::NEG_INFINITY; parts as usize];
        for p in 0..parts as usize {
            for j in 0..n {
                let idx = f64::from(start) + j as f64;
                let keep = reference::binary(cmps.0.name(), idx, lo[p]) != 0.0 && reference::binary(cmps.1.name(), idx, hi[p]) != 0.0;
                let want = if keep { x[p * n + j] } else { f64::from(on_false) };
                prop_assert!(same(got[p * n + j], want), "p {p} j {j}: got {} want {want}", got[p * n + j]);
                acc[p] = acc[p].max(want);
            }
        }
        // select_reduce folds its maxima into the same registers and reports them.
        m.execute(&Op::SelectReduce { dst: dst.clone(), predicate: pred, on_true: src, on_false: ScalarOperand::Imm(-7.0),
                                      reverse, reduce_cmd: ReduceCmd::Reduce, reduce: Some(red.clone()) }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let regs = read(&m, &red);
        for p in 0..parts as usize {
            for j in 0..n {
                let want = if (pv[p * n + j] != 0.0) != reverse { x[p * n + j] } else { -7.0 };
                prop_assert!(same(got[p * n + j], want));
                acc[p] = acc[p].max(want);
            }
            prop_assert!(same(regs[p], acc[p]), "register {p}: {} vs {}", regs[p], acc[p]);
        }
    }

    /// local_gather against the SDK's NumPy description (indices read partition-first per
    /// 16-partition group, `elems` contiguous elements from each).
    #[test]
    fn local_gather(seed: u64, groups in 1u32..=8, k in 1u64..=8, elems in prop::sample::select(vec![1u32, 2, 4, 8]),
                    rows in 16u64..=128, d in dtype(), valid_pick in 0u64..1000) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let parts = groups * 16;
        let f = rows * u64::from(elems);
        let valid = 1 + valid_pick % (16 * k);
        let src = a.tile(Memory::Sbuf, 0, parts, d, &[f], 0);
        let index = a.tile(Memory::Sbuf, 0, parts, DType::U16, &[k], 0);
        let dst = a.tile(Memory::Sbuf, 0, parts, d, &[valid * u64::from(elems)], 0);
        let x = fill(&mut m, &src, &mut r, -8.0, 8.0);
        let rows_idx: Vec<f32> = (0..parts as u64 * k).map(|_| (rand::Rng::gen_range(&mut r, 0..rows) * u64::from(elems)) as f32).collect();
        m.write_tile(&index, &rows_idx).unwrap_or_else(|e| panic!("{e}"));
        m.execute(&Op::LocalGather { dst: dst.clone(), src, index, elems, valid: valid as u32 }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let (k, n, v) = (k as usize, elems as usize, valid as usize);
        for p in 0..parts as usize {
            let g = p / 16;
            // NumPy: index[g*16:(g+1)*16].flatten(order='F')[:valid]
            let flat: Vec<f32> = (0..k).flat_map(|kk| (0..16).map(move |q| (q, kk))).map(|(q, kk)| rows_idx[(g * 16 + q) * k + kk]).take(v).collect();
            for (j, &i) in flat.iter().enumerate() {
                for e in 0..n {
                    let want = x[p * f as usize + i as usize + e];
                    prop_assert!(same(got[p * v * n + j * n + e], want));
                }
            }
        }
    }

    #[test]
    fn tensor_partition_reduce(seed: u64, parts in 1u32..=128, sz in sizes(), din in dtype(), dout in dtype(),
                               op in prop::sample::select(ReduceOp::ALL.to_vec())) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, start, parts, din, &sz, 0);
        let dst = a.tile(Memory::Sbuf, 0, 1, dout, &sz, 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        m.execute(&Op::PartitionReduce { dst: dst.clone(), src, op }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let f = got.len();
        let name = if op == ReduceOp::Add { "add" } else { op.name() };
        for i in 0..f {
            let seq = (1..parts as usize).fold(x[i], |acc, p| r32(reference::binary(name, acc, x[p * f + i])));
            prop_assert!(same(got[i], rd(dout, seq)), "column {i}: got {} want {}", got[i], rd(dout, seq));
        }
    }

    /// dma_indirect: a gather of random rows (some out of range, skipped) into SBUF, then a
    /// scatter-add of those rows back into a copy of the table.
    #[test]
    fn dma_indirect_gather_and_scatter_add(seed: u64, rows in 1u64..=64, cols in 1u64..=64, parts in 1u32..=128) {
        let decl = TensorDecl { name: "table".into(), dtype: DType::F32, shape: vec![rows, cols], kind: TensorKind::Input };
        let mut m = rainier_funcsim::Machine::new(&Program { tensors: vec![decl], ..Program::default() }, &core(Chip::Trn2));
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let idx = a.tile(Memory::Sbuf, 0, parts, DType::I32, &[1], 0);
        let rows_of: Vec<f32> = (0..parts).map(|_| rand::Rng::gen_range(&mut r, -2i64..rows as i64 + 2) as f32).collect();
        m.write_tile(&idx, &rows_of).unwrap_or_else(|e| panic!("{e}"));
        let hbm_vals: Vec<f32> = (0..rows * cols).map(|_| rand::Rng::gen_range(&mut r, -4.0f32..4.0)).collect();
        let mut bytes = vec![0u8; hbm_vals.len() * 4];
        DType::F32.encode_into(&hbm_vals, &mut bytes);
        m.hbm_mut(0).copy_from_slice(&bytes);
        let dst = a.tile(Memory::Sbuf, 0, parts, DType::F32, &[cols], 0);
        m.write_tile(&dst, &vec![-9.0; (parts as u64 * cols) as usize]).unwrap_or_else(|e| panic!("{e}"));
        let src = DmaOperand::Hbm(HbmAccess { tensor: 0, offset: 0, dims: vec![rainier_isa::Dim { stride: cols as i64, size: u64::from(parts) }, rainier_isa::Dim { stride: 1, size: cols }] });
        m.execute(&Op::DmaIndirect { dst: DmaOperand::Tile(dst.clone()), src: src.clone(), index: idx.clone(), oob_skip: true, accumulate: false, rows: 0, queue: 0 }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        for p in 0..parts as usize {
            let row = rows_of[p] as i64;
            for c in 0..cols as usize {
                let want = if (0..rows as i64).contains(&row) { f64::from(hbm_vals[row as usize * cols as usize + c]) } else { -9.0 };
                prop_assert!(same(got[p * cols as usize + c], want), "partition {p} col {c}");
            }
        }
        // Out-of-range rows are an error unless skipped.
        if rows_of.iter().any(|&v| v < 0.0 || v >= rows as f32) {
            let e = m.execute(&Op::DmaIndirect { dst: DmaOperand::Tile(dst.clone()), src: src.clone(), index: idx.clone(), oob_skip: false, accumulate: false, rows: 0, queue: 0 });
            prop_assert!(matches!(e, Err(rainier_funcsim::ExecError::IndexOutOfRange(_))));
        }
        // Scatter-add the gathered rows back: every in-range row gains each time it was picked.
        m.execute(&Op::DmaIndirect { dst: src, src: DmaOperand::Tile(dst), index: idx, oob_skip: true, accumulate: true, rows: 0, queue: 0 }).unwrap_or_else(|e| panic!("{e}"));
        let mut want: Vec<f64> = hbm_vals.iter().map(|&v| f64::from(v)).collect();
        for &row in &rows_of {
            let row = row as i64;
            if (0..rows as i64).contains(&row) {
                for c in 0..cols as usize {
                    let i = row as usize * cols as usize + c;
                    want[i] = r32(want[i] + f64::from(hbm_vals[i]) * 1.0);
                }
            }
        }
        let after: Vec<f32> = m.hbm(0).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        for i in 0..after.len() {
            prop_assert!(same(f64::from(after[i]), want[i]), "element {i}: {} vs {}", after[i], want[i]);
        }
    }

    /// tensor_scalar_cumulative: reset_reduce then reduce (the register carries over), and
    /// load_reduce from a per-partition init, against f64 loops rounded to fp32 per operator.
    #[test]
    fn tensor_scalar_cumulative_chain(seed: u64, parts in 1u32..=128, n in 1u64..=64, op0 in prop::sample::select(vec![AluOp::Add, AluOp::Multiply, AluOp::Subtract]),
                                      op1 in prop::sample::select(vec![AluOp::Add, AluOp::Subtract, AluOp::Multiply, AluOp::Max, AluOp::Min]),
                                      imm in -1.0f32..1.0, reverse0: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (p0, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[n], 0);
        let dst = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[n], 0);
        let init = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        // Values near 1 keep running products bounded.
        let x = fill(&mut m, &src, &mut r, 0.5, 1.5);
        let iv = fill(&mut m, &init, &mut r, -2.0, 2.0);
        let n = n as usize;
        let step = |v: f64, reg: f64| {
            let t = r32(if reverse0 { reference::binary(op0.name(), f64::from(imm), v) } else { reference::binary(op0.name(), v, f64::from(imm)) });
            r32(reference::binary(op1.name(), t, reg))
        };
        let identity = match op1 { AluOp::Multiply => 1.0, AluOp::Max => f64::NEG_INFINITY, AluOp::Min => f64::INFINITY, _ => 0.0 };
        let mut regs = vec![identity; parts as usize];
        for cmd in [ReduceCmd::ResetReduce, ReduceCmd::Reduce, ReduceCmd::LoadReduce] {
            m.execute(&Op::TensorScalarCumulative { dst: dst.clone(), src: src.clone(), op0, operand0: ScalarOperand::Imm(imm), reverse0, op1,
                                                    reduce_cmd: cmd, init: Some(ScalarOperand::Vector(init.clone())) }).unwrap_or_else(|e| panic!("{e}"));
            let got = read(&m, &dst);
            for p in 0..parts as usize {
                let mut reg = match cmd { ReduceCmd::ResetReduce => identity, ReduceCmd::LoadReduce => iv[p], _ => regs[p] };
                for i in 0..n {
                    reg = step(x[p * n + i], reg);
                    prop_assert!(same(got[p * n + i], reg), "{cmd:?} p {p} i {i}: got {} want {reg}", got[p * n + i]);
                }
                regs[p] = reg;
            }
        }
    }

    /// exponential (NeuronCore-v4): exp(src - max) per partition, then reset_reduce, reduce and
    /// load_reduce sums through the accumulator registers, against f64 exp of the fp32
    /// difference (1 ulp of the destination dtype) and f64 sums (n·u₃₂·Σ|y| + 1e-6).
    #[test]
    fn exponential_chain(seed: u64, parts in 1u32..=128, n in 1u64..=64, d in prop::sample::select(vec![DType::F32, DType::Bf16, DType::F16])) {
        let mut m = machine(Chip::Trn3);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (p0, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[n], 0);
        let dst = a.tile(Memory::Sbuf, p0, parts, d, &[n], 0);
        let mx = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        let init = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        let sums = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[1], 0);
        let x = fill(&mut m, &src, &mut r, -6.0, 2.0);
        let mv = fill(&mut m, &mx, &mut r, -1.0, 1.0);
        let iv = fill(&mut m, &init, &mut r, 0.0, 4.0);
        let n = n as usize;
        let mut regs = vec![0.0f64; parts as usize];
        for cmd in [ReduceCmd::ResetReduce, ReduceCmd::Reduce, ReduceCmd::Idle, ReduceCmd::LoadReduce] {
            let init_op = (cmd == ReduceCmd::LoadReduce).then(|| ScalarOperand::Vector(init.clone()));
            m.execute(&Op::Exponential { dst: dst.clone(), src: src.clone(), max: ScalarOperand::Vector(mx.clone()), reduce_cmd: cmd,
                                         init: init_op, reduce: Some(sums.clone()) }).unwrap_or_else(|e| panic!("{e}"));
            let (got, got_sum) = (read(&m, &dst), read(&m, &sums));
            for p in 0..parts as usize {
                let mut abs = 0.0;
                let mut total = 0.0;
                for i in 0..n {
                    let y = reference::activation("exp", r32(x[p * n + i] - mv[p]));
                    let tol = ulp(d, y) + 1e-12 * y.abs();
                    prop_assert!((got[p * n + i] - y).abs() <= tol, "{cmd:?} p {p} i {i}: {} vs {y}", got[p * n + i]);
                    total += y;
                    abs += y.abs();
                }
                let want_reg = match cmd { ReduceCmd::ResetReduce => total, ReduceCmd::Reduce => regs[p] + total, ReduceCmd::LoadReduce => iv[p] + total, _ => regs[p] };
                let bound = (n as f64 + 2.0) * 2f64.powi(-24) * (abs + regs[p].abs() + iv[p].abs()) + 1e-6;
                prop_assert!((got_sum[p] - want_reg).abs() <= bound, "{cmd:?} p {p}: sum {} vs {want_reg}", got_sum[p]);
                regs[p] = want_reg;
            }
        }
    }

    /// nc_stream_shuffle in place and across tiles, with unmodified (255) partitions.
    #[test]
    fn stream_shuffle(seed: u64, quads in 1u32..=4, n in 1u64..=64, d in dtype(), keep in prop::collection::vec(any::<bool>(), 32)) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let parts = quads * 32;
        let src = a.tile(Memory::Sbuf, 0, parts, d, &[n], 0);
        let dst = a.tile(Memory::Sbuf, 0, parts, d, &[n], 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        let before = fill(&mut m, &dst, &mut r, -4.0, 4.0);
        let mask: Vec<u8> = (0..32u8).map(|i| if keep[i as usize] { 255 } else { (i * 7 + 3) % 32 }).collect();
        m.execute(&Op::StreamShuffle { dst: dst.clone(), src: src.clone(), mask: mask.clone() }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let n = n as usize;
        for i in 0..parts as usize {
            for j in 0..n {
                let mm = mask[i % 32];
                let want = if mm == 255 { before[i * n + j] } else { x[((i / 32) * 32 + mm as usize) * n + j] };
                prop_assert!(same(got[i * n + j], want));
            }
        }
        // In place: a rotation of each quadrant.
        let rot: Vec<u8> = (0..32u8).map(|i| (i + 31) % 32).collect();
        m.execute(&Op::StreamShuffle { dst: src.clone(), src: src.clone(), mask: rot }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &src);
        for i in 0..parts as usize {
            let from = (i / 32) * 32 + (i % 32 + 31) % 32;
            prop_assert!(same(got[i * n], x[from * n]));
        }
    }

    /// gather (nl.gather_flattened) against take_along_axis, sequence_bounds against the SDK's
    /// NumPy algorithm, dropout by its statistics (kept values exact, drop rate within 5
    /// standard deviations of prob, the same mask for the same seed).
    #[test]
    fn gather_sequence_bounds_dropout(seed: u64, parts in 1u32..=128, n in 2u64..=256, k in 1u64..=64, d in dtype(), prob in 0.05f32..0.95) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (p0, parts) = partition_range(parts, seed as u32);
        let (nu, ku) = (n as usize, k as usize);
        let src = a.tile(Memory::Sbuf, p0, parts, d, &[n], 0);
        let x = fill(&mut m, &src, &mut r, -8.0, 8.0);
        let index = a.tile(Memory::Sbuf, p0, parts, DType::U32, &[k], 0);
        let iv: Vec<f32> = (0..parts as u64 * k).map(|_| rand::Rng::gen_range(&mut r, 0..n) as f32).collect();
        m.write_tile(&index, &iv).unwrap_or_else(|e| panic!("{e}"));
        let dst = a.tile(Memory::Sbuf, p0, parts, d, &[k], 0);
        m.execute(&Op::Gather { dst: dst.clone(), src: src.clone(), index }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        for p in 0..parts as usize {
            for j in 0..ku {
                prop_assert!(same(got[p * ku + j], x[p * nu + iv[p * ku + j] as usize]));
            }
        }
        // sequence_bounds on sorted ids with padding zeros.
        let ids = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[n], 0);
        let mut idv: Vec<f32> = Vec::new();
        for _ in 0..parts {
            let mut row: Vec<f32> = (0..n).map(|_| rand::Rng::gen_range(&mut r, 0..6) as f32).collect();
            row.sort_by(f32::total_cmp);
            idv.extend(row);
        }
        m.write_tile(&ids, &idv).unwrap_or_else(|e| panic!("{e}"));
        let bounds = a.tile(Memory::Sbuf, p0, parts, DType::F32, &[2, n], 0);
        m.execute(&Op::SequenceBounds { dst: bounds.clone(), src: ids }).unwrap_or_else(|e| panic!("{e}"));
        let b = read(&m, &bounds);
        for p in 0..parts as usize {
            let s = &idv[p * nu..(p + 1) * nu];
            for i in 0..nu {
                let (lo, hi) = if s[i] == 0.0 {
                    (nu as f64, -1.0)
                } else {
                    let first = (0..=i).rev().take_while(|&j| s[j] == s[i]).last().unwrap_or(i);
                    let last = (i..nu).take_while(|&j| s[j] == s[i]).last().unwrap_or(i);
                    (first as f64, (last + 1) as f64)
                };
                prop_assert_eq!(b[p * 2 * nu + i], lo);
                prop_assert_eq!(b[p * 2 * nu + nu + i], hi);
            }
        }
        // dropout
        let out = a.tile(Memory::Sbuf, p0, parts, d, &[n], 0);
        let drop = |m: &mut rainier_funcsim::Machine, s: u32| {
            m.execute(&Op::Dropout { dst: out.clone(), src: src.clone(), prob: ScalarOperand::Imm(prob), seed: s }).unwrap_or_else(|e| panic!("{e}"));
            read(m, &out)
        };
        let y = drop(&mut m, 7);
        let zeros = y.iter().zip(&x).filter(|(v, xv)| **v == 0.0 && **xv != 0.0).count() as f64;
        for (v, xv) in y.iter().zip(&x) {
            prop_assert!(*v == 0.0 || same(*v, *xv));
        }
        let total = x.iter().filter(|v| **v != 0.0).count() as f64;
        let sd = (total * f64::from(prob) * (1.0 - f64::from(prob))).sqrt();
        prop_assert!((zeros - total * f64::from(prob)).abs() <= 5.0 * sd + 1.0, "{zeros} of {total} dropped at p = {prob}");
        prop_assert_eq!(drop(&mut m, 7), y);
    }

    #[test]
    fn tensor_reduce(seed: u64, parts in 1u32..=128, sz in sizes(), din in dtype(), axes_pick in 0usize..3,
                     op in prop::sample::select(ReduceOp::ALL.to_vec()), negate: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let axes = (axes_pick % sz.len()) + 1;
        let kept: u64 = sz[..sz.len() - axes].iter().product();
        let src = a.tile(Memory::Sbuf, start, parts, din, &sz, 2);
        let dst = a.tile(Memory::Sbuf, start, parts, DType::F32, &[kept], 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        m.execute(&Op::TensorReduce { dst: dst.clone(), src, op, axes: axes as u32, negate }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let run = x.len() / got.len();
        for (j, chunk) in x.chunks(run).enumerate() {
            let seq = chunk[1..].iter().fold(chunk[0], |acc, &v| r32(reference::binary(if op == ReduceOp::Add { "add" } else { op.name() }, acc, v)));
            let want = if negate { -seq } else { seq };
            prop_assert!(same(got[j], want), "got {} want {}", got[j], want);
            if op == ReduceOp::Add {
                let exact = reference::reduce("add", chunk);
                let bound = run as f64 * 2f64.powi(-24) * chunk.iter().map(|v| v.abs()).sum::<f64>() + 1e-30;
                prop_assert!((got[j].abs() - exact.abs()).abs() <= bound);
            }
        }
    }

    #[test]
    fn tensor_copy_memset_select(seed: u64, parts in 1u32..=128, sz in sizes(), din in dtype(), dout in dtype(), value in -500.0f32..500.0) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let src = a.tile(Memory::Sbuf, start, parts, din, &sz, 1);
        let dst = a.tile(Memory::Sbuf, start, parts, dout, &sz, 0);
        let x = fill(&mut m, &src, &mut r, -300.0, 300.0);
        m.execute(&Op::TensorCopy { dst: dst.clone(), src: src.clone() }).unwrap_or_else(|e| panic!("{e}"));
        for (g, w) in read(&m, &dst).iter().zip(&x) {
            prop_assert!(same(*g, rd(dout, *w)));
        }
        m.execute(&Op::Memset { dst: dst.clone(), value }).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(read(&m, &dst).iter().all(|g| same(*g, rd(dout, f64::from(value)))));
        let pred = a.tile(Memory::Sbuf, start, parts, DType::F32, &sz, 0);
        let on_false = a.tile(Memory::Sbuf, start, parts, din, &sz, 0);
        let p = fill(&mut m, &pred, &mut r, -1.0, 1.0).iter().map(|v| if *v > 0.0 { 1.0 } else { 0.0 }).collect::<Vec<_>>();
        m.write_tile(&pred, &p.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"));
        let y = fill(&mut m, &on_false, &mut r, -4.0, 4.0);
        m.execute(&Op::Select { dst: dst.clone(), predicate: pred, on_true: src, on_false }).unwrap_or_else(|e| panic!("{e}"));
        for (i, g) in read(&m, &dst).iter().enumerate() {
            let want = if p[i] != 0.0 { x[i] } else { y[i] };
            prop_assert!(same(*g, rd(dout, want)));
        }
    }

    #[test]
    fn activation(seed: u64, parts in 1u32..=128, sz in sizes(), din in dtype(), dout in dtype(),
                  func in prop::sample::select(ActFunc::ALL.to_vec()), vec_scale: bool, with_bias: bool, with_reduce: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let positive = matches!(func, ActFunc::Log | ActFunc::Sqrt | ActFunc::Rsqrt | ActFunc::Reciprocal);
        let (lo, hi) = if positive { (0.25, 4.0) } else { (-4.0, 4.0) };
        let src = a.tile(Memory::Sbuf, start, parts, din, &sz, 0);
        let dst = a.tile(Memory::Sbuf, start, parts, dout, &sz, 0);
        let x = fill(&mut m, &src, &mut r, lo, hi);
        let vector = |a: &mut Alloc, m: &mut rainier_funcsim::Machine, r: &mut rand::rngs::StdRng, lo, hi| {
            let t = a.tile(Memory::Sbuf, start, parts, DType::F32, &[1], 0);
            let v = fill(m, &t, r, lo, hi);
            (t, v)
        };
        let (scale, sv) = if vec_scale {
            let (t, v) = vector(&mut a, &mut m, &mut r, 0.5, 2.0);
            (ScalarOperand::Vector(t), v)
        } else {
            (ScalarOperand::Imm(1.25), vec![1.25; parts as usize])
        };
        let (bias, bv) = if with_bias {
            let (t, v) = vector(&mut a, &mut m, &mut r, 0.0, 0.5);
            (Some(t), v)
        } else {
            (None, vec![0.0; parts as usize])
        };
        let reduce = with_reduce.then(|| a.tile(Memory::Sbuf, start, parts, DType::F32, &[1], 0));
        m.execute(&Op::Activation { dst: dst.clone(), src, func, scale, bias, reduce: reduce.clone() }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let f = sz.iter().product::<u64>() as usize;
        let mut ys = vec![0.0; x.len()];
        for i in 0..got.len() {
            let arg = r32(r32(x[i] * sv[i / f]) + bv[i / f]);
            let y = reference::activation(func.name(), arg);
            ys[i] = y;
            let tol = ulp(dout, y) + 1e-12 * y.abs();
            prop_assert!((got[i] - y).abs() <= tol || same(got[i], rd(dout, y)), "{}({arg}) = {y}, got {}", func.name(), got[i]);
        }
        if let Some(rt) = reduce {
            for (p, s) in read(&m, &rt).iter().enumerate() {
                let chunk = &ys[p * f..(p + 1) * f];
                let exact: f64 = chunk.iter().sum();
                let bound = f as f64 * 2f64.powi(-23) * chunk.iter().map(|v| v.abs()).sum::<f64>() + 1e-6;
                prop_assert!((s - exact).abs() <= bound, "reduce {s} vs {exact}");
            }
        }
    }
}

fn matmul_pairs() -> Vec<(DType, DType)> {
    use DType::*;
    vec![
        (Bf16, Bf16),
        (F16, F16),
        (Fp8E4m3, Fp8E4m3),
        (Fp8E5m2, Bf16),
        (Bf16, Fp8E4m3),
        (F32, F32),
        (Tf32, Tf32),
        (Tf32, F32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn nc_matmul(seed: u64, k in 1u32..=128, mm in 1u64..=64, n in 1u64..=160, pair in prop::sample::select(matmul_pairs()), accumulate: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (ks, k) = partition_range(k, 0);
        let stationary = a.tile(Memory::Sbuf, ks, k, pair.0, &[mm], 0);
        let moving = a.tile(Memory::Sbuf, ks, k, pair.1, &[n], 0);
        let (ms, _) = partition_range(mm as u32, 0);
        let dst = a.tile(Memory::Psum, ms, mm as u32, DType::F32, &[n], 0);
        let s = fill(&mut m, &stationary, &mut r, -2.0, 2.0);
        let v = fill(&mut m, &moving, &mut r, -2.0, 2.0);
        let old = fill(&mut m, &dst, &mut r, -1.0, 1.0);
        m.execute(&Op::Matmul { dst: dst.clone(), stationary, moving, accumulate, double_row: false }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let (k, mm, n) = (k as usize, mm as usize, n as usize);
        let seq = reference::matmul_fp32_sequential(&s, &v, k, mm, n);
        let exact = reference::matmul(&s, &v, k, mm, n);
        for i in 0..mm * n {
            let want = if accumulate { r32(old[i] + seq[i]) } else { seq[i] };
            prop_assert!(same(got[i], want), "[{}, {}]: got {} want {}", i / n, i % n, got[i], want);
            let (mi, ni) = (i / n, i % n);
            let abs_sum: f64 = (0..k).map(|kk| (s[kk * mm + mi] * v[kk * n + ni]).abs()).sum();
            let base = if accumulate { old[i] } else { 0.0 };
            let bound = (k as f64 + 1.0) * 2f64.powi(-24) * (abs_sum + base.abs()) + 1e-30;
            prop_assert!((got[i] - (base + exact[i])).abs() <= bound);
        }
    }

    /// fp8 double_row: each partition holds two rows, the contraction runs over 2·K in the
    /// order (partition, row) — the same as a plain matmul of the [2K, M] and [2K, N] operands.
    #[test]
    fn nc_matmul_double_row(seed: u64, k in 1u32..=128, mm in 1u64..=64, n in 1u64..=160, e5m2: bool, accumulate: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let dtype = if e5m2 { DType::Fp8E5m2 } else { DType::Fp8E4m3 };
        let (ks, k) = partition_range(k, 0);
        let stationary = a.tile(Memory::Sbuf, ks, k, dtype, &[2, mm], 0);
        let moving = a.tile(Memory::Sbuf, ks, k, dtype, &[2, n], 0);
        let (ms, _) = partition_range(mm as u32, 0);
        let dst = a.tile(Memory::Psum, ms, mm as u32, DType::F32, &[n], 0);
        let s = fill(&mut m, &stationary, &mut r, -2.0, 2.0);
        let v = fill(&mut m, &moving, &mut r, -2.0, 2.0);
        let old = fill(&mut m, &dst, &mut r, -1.0, 1.0);
        m.execute(&Op::Matmul { dst: dst.clone(), stationary, moving, accumulate, double_row: true }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let (k2, mm, n) = (2 * k as usize, mm as usize, n as usize);
        let seq = reference::matmul_fp32_sequential(&s, &v, k2, mm, n);
        for i in 0..mm * n {
            let want = if accumulate { r32(old[i] + seq[i]) } else { seq[i] };
            prop_assert!(same(got[i], want), "[{}, {}]: got {} want {}", i / n, i % n, got[i], want);
        }
    }

    #[test]
    fn iota_and_affine_select(seed: u64, parts in 1u32..=128, sz in sizes(), base in -1000i32..1000, cm in -4i32..5,
                              steps in prop::collection::vec(-3i32..4, 3), cmp in prop::sample::select(vec![AluOp::Eq, AluOp::Ne, AluOp::Ge, AluOp::Gt, AluOp::Le, AluOp::Lt]),
                              dout in prop::sample::select(vec![DType::I32, DType::F32, DType::Bf16]), on_false in -100.0f32..100.0) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (start, parts) = partition_range(parts, seed as u32);
        let affine = Affine { base, channel_multiplier: cm, steps: steps[..sz.len()].to_vec() };
        let dst = a.tile(Memory::Sbuf, start, parts, dout, &sz, 1);
        m.execute(&Op::Iota { dst: dst.clone(), affine: affine.clone() }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let idx = |j: usize| -> Vec<i64> {
            let mut rest = j;
            let mut out = vec![0i64; sz.len()];
            for d in (0..sz.len()).rev() {
                out[d] = (rest % sz[d] as usize) as i64;
                rest /= sz[d] as usize;
            }
            out
        };
        let f = sz.iter().product::<u64>() as usize;
        let st: Vec<i64> = affine.steps.iter().map(|&s| i64::from(s)).collect();
        for (i, g) in got.iter().enumerate() {
            let v = reference::affine(i64::from(base), i64::from(cm), &st, (i / f) as i64, &idx(i % f));
            prop_assert!(same(*g, rd(dout, v as f64)), "iota {i}: {g} vs {v}");
        }
        let src = a.tile(Memory::Sbuf, start, parts, DType::F32, &sz, 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        m.execute(&Op::AffineSelect { dst: dst.clone(), src, affine: affine.clone(), cmp, on_false }).unwrap_or_else(|e| panic!("{e}"));
        for (i, g) in read(&m, &dst).iter().enumerate() {
            let v = reference::affine(i64::from(base), i64::from(cm), &st, (i / f) as i64, &idx(i % f));
            let want = if reference::compare_with_zero(cmp.name(), v) { x[i] } else { f64::from(on_false) };
            prop_assert!(same(*g, rd(dout, want)));
        }
    }

    #[test]
    fn nc_transpose(seed: u64, p in 1u32..=128, f in 1u64..=128, d in prop::sample::select(vec![DType::Bf16, DType::F32, DType::F16]), vector: bool) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (p, f) = if vector { (p.min(32), f.min(32)) } else { (p, f) };
        let (ps, p) = partition_range(p, 0);
        let src = a.tile(Memory::Sbuf, ps, p, d, &[f], 0);
        let dst_mem = if vector { Memory::Sbuf } else { Memory::Psum };
        let dst = a.tile(dst_mem, 0, f as u32, d, &[u64::from(p)], 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        m.execute(&Op::Transpose { dst: dst.clone(), src }).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(read(&m, &dst), reference::transpose(&x, p as usize, f as usize));
    }

    #[test]
    fn dma_transpose_is_a_bit_exact_transpose(seed: u64, blocks in 1u32..=8, f in 1u64..=128, d in prop::sample::select(vec![DType::Bf16, DType::F32, DType::F16, DType::I32])) {
        let mut m = machine(Chip::Trn2);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let p = 16 * blocks;
        let src = a.tile(Memory::Sbuf, 128 - p, p, d, &[f], 0);
        let dst = a.tile(Memory::Sbuf, 0, f as u32, d, &[u64::from(p)], 0);
        let x = fill(&mut m, &src, &mut r, -4.0, 4.0);
        m.execute(&Op::DmaTranspose { dst: dst.clone(), src, queue: 3 }).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(read(&m, &dst), reference::transpose(&x, p as usize, f as usize));
    }

    #[test]
    fn dma_copy_with_cast_and_strides(seed: u64, rows in 1u64..=64, cols in 1u64..=96, src_d in prop::sample::select(vec![DType::F32, DType::F16, DType::I32, DType::U8]),
                                      dst_d in dtype(), col0 in 0u64..8, step in 1i64..3) {
        // HBM x[rows, cols + 8] -> SBUF (every `step`-th column from col0 .. in the free pattern)
        // -> HBM y[rows, n] with a cast each way.
        let width = cols + 8;
        let n = (width - col0).div_ceil(step as u64).min(cols);
        let program = Program {
            tensors: vec![
                TensorDecl { name: "x".into(), dtype: src_d, shape: vec![rows, width], kind: TensorKind::Input },
                TensorDecl { name: "y".into(), dtype: DType::F32, shape: vec![rows, n], kind: TensorKind::Output },
            ],
            ..Program::default()
        };
        let mut m = rainier_funcsim::Machine::new(&program, &core(Chip::Trn2));
        let mut r = rng(seed);
        use rand::Rng;
        let xs: Vec<f32> = (0..rows * width).map(|_| if src_d.is_float() { r.gen_range(-200.0..200.0) } else { r.gen_range(0.0f32..250.0).round() }).collect();
        let host = rainier_tensor::HostTensor::from_f32(src_d, &[rows as usize, width as usize], &xs);
        m.hbm_mut(0).copy_from_slice(&host.data);
        let stored: Vec<f64> = host.to_f32().into_iter().map(f64::from).collect();
        let mut a = Alloc::new();
        let tile = a.tile(Memory::Sbuf, 0, rows as u32, dst_d, &[n], 0);
        let src = HbmAccess { tensor: 0, offset: col0, dims: vec![rainier_isa::Dim { stride: width as i64, size: rows }, rainier_isa::Dim { stride: step, size: n }] };
        m.execute(&Op::DmaCopy { dst: DmaOperand::Tile(tile.clone()), src: DmaOperand::Hbm(src), queue: 0 }).unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &tile);
        for row in 0..rows as usize {
            for j in 0..n as usize {
                let want = rd(dst_d, stored[row * width as usize + col0 as usize + j * step as usize]);
                prop_assert!(same(got[row * n as usize + j], want));
            }
        }
        let out = HbmAccess { tensor: 1, offset: 0, dims: dims_of(&[rows, n]) };
        m.execute(&Op::DmaCopy { dst: DmaOperand::Hbm(out), src: DmaOperand::Tile(tile.clone()), queue: 0 }).unwrap_or_else(|e| panic!("{e}"));
        let y: Vec<f64> = m.hbm(1).chunks(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect();
        prop_assert_eq!(&y, &got);
        // SBUF -> SBUF, reshaping [rows, n] into [rows, n] with a partition offset and a cast.
        let shifted = a.tile(Memory::Sbuf, 0, rows as u32, DType::F32, &[n], 0);
        let shifted = rainier_isa::Tile { start_partition: 128 - rows as u32, ..shifted };
        m.execute(&Op::DmaCopy { dst: DmaOperand::Tile(shifted.clone()), src: DmaOperand::Tile(tile), queue: 0 }).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(read(&m, &shifted), got);
    }
}

/// NeuronCore-v2 transposes through the PE array (a matmul with the identity), so one NaN
/// poisons its whole output row; v3 has the bit-exact transpose mode [N-arch3].
#[test]
fn v2_pe_transpose_propagates_nan_v3_does_not() {
    for (chip, poisoned) in [(Chip::Trn1, true), (Chip::Trn2, false)] {
        let mut m = machine(chip);
        let mut a = Alloc::new();
        let src = a.tile(Memory::Sbuf, 0, 4, DType::F32, &[4], 0);
        let dst = a.tile(Memory::Psum, 0, 4, DType::F32, &[4], 0);
        let mut x: Vec<f32> = (0..16).map(|i| i as f32 + 1.0).collect();
        x[5] = f32::NAN; // src[1, 1]
        m.write_tile(&src, &x).unwrap_or_else(|e| panic!("{e}"));
        m.execute(&Op::Transpose { dst: dst.clone(), src }).unwrap_or_else(|e| panic!("{e}"));
        let y = m.read_tile(&dst).unwrap_or_else(|e| panic!("{e}"));
        // Output row 1 holds src column 1.
        let nans = y[4..8].iter().filter(|v| v.is_nan()).count();
        assert_eq!(nans, if poisoned { 4 } else { 1 }, "{chip}: {y:?}");
        assert_eq!(y[0..4], [1.0, 5.0, 9.0, 13.0]);
    }
}

/// A full-size tile: 128 x 128 x 512 bf16 against exact f64 math.
#[test]
fn full_tile_bf16_matmul_within_bound() {
    let mut m = machine(Chip::Trn1);
    let mut r = rng(rand::random());
    let mut a = Alloc::new();
    let s_t = a.tile(Memory::Sbuf, 0, 128, DType::Bf16, &[128], 0);
    let v_t = a.tile(Memory::Sbuf, 0, 128, DType::Bf16, &[512], 0);
    let d_t = a.tile(Memory::Psum, 0, 128, DType::F32, &[512], 0);
    let s = fill(&mut m, &s_t, &mut r, -1.0, 1.0);
    let v = fill(&mut m, &v_t, &mut r, -1.0, 1.0);
    m.execute(&Op::Matmul {
        dst: d_t.clone(),
        stationary: s_t,
        moving: v_t,
        accumulate: false,
        double_row: false,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let got = read(&m, &d_t);
    let exact = reference::matmul(&s, &v, 128, 128, 512);
    for i in 0..got.len() {
        let (mi, ni) = (i / 512, i % 512);
        let abs_sum: f64 = (0..128).map(|k| (s[k * 128 + mi] * v[k * 512 + ni]).abs()).sum();
        assert!((got[i] - exact[i]).abs() <= 128.0 * 2f64.powi(-24) * abs_sum);
    }
}

/// The reference's name of a packed type's element format.
fn mx_format(d: DType) -> &'static str {
    match d {
        DType::Fp8E5m2x4 => "fp8e5m2",
        DType::Fp8E4m3fnx4 => "fp8e4m3fn",
        _ => "fp4e2m1",
    }
}

/// The same bytes as `t`, seen as u8 (to write and read packed data exactly).
fn bytes_view(t: &rainier_isa::Tile) -> rainier_isa::Tile {
    let n = t.free_len() * t.dtype.size_bytes() as u64;
    rainier_isa::Tile::new(
        t.memory,
        t.start_partition..t.start_partition + t.partitions,
        t.offset_bytes,
        DType::U8,
        &[n],
    )
}

/// Random finite MX data bytes for `t` (no NaN or Inf elements), written and returned.
fn fill_mx(
    m: &mut rainier_funcsim::Machine,
    t: &rainier_isa::Tile,
    r: &mut rand::rngs::StdRng,
) -> Vec<u8> {
    use rand::Rng;
    let view = bytes_view(t);
    let n = t.partitions as usize * t.free_len() as usize * t.dtype.size_bytes();
    let finite = |b: u8| match t.dtype {
        DType::Fp8E5m2x4 => b & 0x7c != 0x7c,
        DType::Fp8E4m3fnx4 => b & 0x7f != 0x7f,
        _ => true,
    };
    let bytes: Vec<u8> = (0..n)
        .map(|_| loop {
            let b: u8 = r.gen();
            if finite(b) {
                break b;
            }
        })
        .collect();
    let vals: Vec<f32> = bytes.iter().map(|&b| f32::from(b)).collect();
    m.write_tile(&view, &vals).unwrap_or_else(|e| panic!("{e}"));
    bytes
}

fn write_bytes(m: &mut rainier_funcsim::Machine, t: &rainier_isa::Tile, bytes: &[u8]) {
    let vals: Vec<f32> = bytes.iter().map(|&b| f32::from(b)).collect();
    m.write_tile(t, &vals).unwrap_or_else(|e| panic!("{e}"));
}

fn read_bytes(m: &rainier_funcsim::Machine, t: &rainier_isa::Tile) -> Vec<u8> {
    read(m, t).into_iter().map(|v| v as u8).collect()
}

fn mx_types() -> Vec<DType> {
    vec![DType::Fp8E5m2x4, DType::Fp8E4m3fnx4, DType::Fp4E2m1fnx4]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 128, ..ProptestConfig::default() })]

    /// `nc_matmul_mx`: bit-exact against the reference's dequantize-then-sequential-fp32 sum,
    /// over every pair of MX formats, quadrant counts, both PSUM dtypes, accumulation, and
    /// scales near 1 or anywhere in e8m0's range (products that leave fp32's range).
    #[test]
    fn nc_matmul_mx(seed: u64, quadrants in 1u32..=4, half_m in 1u64..=32, n in 1u64..=96,
                    st in prop::sample::select(mx_types()), mv in prop::sample::select(mx_types()),
                    bf16_dst: bool, accumulate: bool, wide_scales: bool) {
        use rand::Rng;
        let mut m = machine(Chip::Trn3);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let (k, mm) = (32 * quadrants, 2 * half_m);
        let sp = rainier_isa::mx_scale_partitions(k);
        let s_t = a.tile(Memory::Sbuf, 0, k, st, &[mm], 0);
        let v_t = a.tile(Memory::Sbuf, 0, k, mv, &[n], 0);
        let ss_t = a.tile(Memory::Sbuf, 0, sp, DType::U8, &[mm], 0);
        let vs_t = a.tile(Memory::Sbuf, 0, sp, DType::U8, &[n], 0);
        let dst = a.tile(Memory::Psum, 0, mm as u32, if bf16_dst { DType::Bf16 } else { DType::F32 }, &[n], 0);
        let s_bytes = fill_mx(&mut m, &s_t, &mut r);
        let v_bytes = fill_mx(&mut m, &v_t, &mut r);
        let (lo, hi) = if wide_scales { (0u8, 255u8) } else { (112, 142) };
        let mut scales = |len: usize| -> Vec<u8> { (0..len).map(|_| r.gen_range(lo..hi)).collect() };
        let ss = scales(sp as usize * mm as usize);
        let vs = scales(sp as usize * n as usize);
        write_bytes(&mut m, &ss_t, &ss);
        write_bytes(&mut m, &vs_t, &vs);
        let old = fill(&mut m, &dst, &mut r, -1.0, 1.0);
        m.execute(&Op::MatmulMx { dst: dst.clone(), stationary: s_t, moving: v_t, stationary_scale: ss_t, moving_scale: vs_t, accumulate })
            .unwrap_or_else(|e| panic!("{e}"));
        let got = read(&m, &dst);
        let (k, mm, n) = (k as usize, mm as usize, n as usize);
        let s = reference::mx_dequantize(mx_format(st), &s_bytes, &ss, k, mm);
        let v = reference::mx_dequantize(mx_format(mv), &v_bytes, &vs, k, n);
        let seq = reference::matmul_fp32_sequential(&s, &v, 4 * k, mm, n);
        for i in 0..mm * n {
            let sum = if accumulate { r32(old[i] + seq[i]) } else { seq[i] };
            let want = rd(dst.dtype, sum);
            prop_assert!(same(got[i], want), "[{}, {}]: got {} want {}", i / n, i % n, got[i], want);
        }
    }

    /// `quantize_mx`: data and scale bytes bit-exact against the reference's documented
    /// algorithm, on groups of widely different magnitudes, with all-zero groups.
    #[test]
    fn quantize_mx(seed: u64, quadrants in 1u32..=4, f in 1u64..=48, e5m2: bool, f16_src: bool) {
        use rand::Rng;
        let mut m = machine(Chip::Trn3);
        let mut r = rng(seed);
        let mut a = Alloc::new();
        let p = 32 * quadrants;
        let dtype = if e5m2 { DType::Fp8E5m2x4 } else { DType::Fp8E4m3fnx4 };
        let src_t = if f16_src { DType::F16 } else { DType::Bf16 };
        let src = a.tile(Memory::Sbuf, 0, p, src_t, &[4 * f], 0);
        let dst = a.tile(Memory::Sbuf, 0, p, dtype, &[f], 0);
        let sp = rainier_isa::mx_scale_partitions(p);
        let scale = a.tile(Memory::Sbuf, 0, sp, DType::U8, &[f], 0);
        // Group magnitudes 2^-12..2^12 (f16 keeps them normal), one group in 7 all zero.
        let (pu, fu) = (p as usize, f as usize);
        let mags: Vec<f32> = (0..pu / 8 * fu).map(|_| if r.gen_range(0..7) == 0 { 0.0 } else { 2f32.powi(r.gen_range(-12..12)) }).collect();
        let x: Vec<f32> = (0..pu * 4 * fu).map(|i| {
            let (row, col) = (i / (4 * fu), i % (4 * fu) / 4);
            mags[row / 8 * fu + col] * r.gen_range(-3.0f32..3.0)
        }).collect();
        m.write_tile(&src, &x).unwrap_or_else(|e| panic!("{e}"));
        let xs = read(&m, &src);
        m.execute(&Op::QuantizeMx { dst: dst.clone(), src, scale: scale.clone() }).unwrap_or_else(|e| panic!("{e}"));
        let (want_vals, want_scales) = reference::quantize_mx(mx_format(dtype), &xs, pu, fu);
        let got = read_bytes(&m, &bytes_view(&dst));
        for (i, &b) in got.iter().enumerate() {
            let v = reference::decode_minifloat(mx_format(dtype), b);
            prop_assert!(same(v, want_vals[i]), "element {i}: got {v} want {}", want_vals[i]);
        }
        let got_scales = read_bytes(&m, &scale);
        for g in 0..pu / 8 {
            for j in 0..fu {
                let row = reference::mx_scale_row(8 * g);
                prop_assert_eq!(got_scales[row * fu + j], want_scales[g * fu + j], "group {} column {}", g, j);
            }
        }
    }
}
