//! Print/parse round trip of arbitrary programs, and the parser on arbitrary text (never panics).

use proptest::prelude::*;
use rainier_isa::*;
use rainier_tensor::DType;

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

fn dims() -> impl Strategy<Value = Vec<Dim>> {
    prop::collection::vec(
        (-40i64..40, 1u64..600).prop_map(|(stride, size)| Dim { stride, size }),
        1..=4,
    )
}

fn tile() -> impl Strategy<Value = Tile> {
    (any::<bool>(), 0u32..128, 0u32..=128, 0u64..100_000, dtype(), dims(), any::<bool>()).prop_map(
        |(psum, start, parts, offset_bytes, dtype, dims, contiguous)| {
            let dims = if contiguous {
                contiguous_dims(&dims.iter().map(|d| d.size).collect::<Vec<_>>())
            } else {
                dims
            };
            Tile {
                memory: if psum { Memory::Psum } else { Memory::Sbuf },
                start_partition: start,
                partitions: parts,
                offset_bytes,
                dtype,
                dims,
            }
        },
    )
}

fn imm() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1e6f32..1e6,
        Just(0.0),
        Just(-0.0),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        proptest::num::f32::NORMAL
    ]
}

fn scalar() -> impl Strategy<Value = ScalarOperand> {
    prop_oneof![imm().prop_map(ScalarOperand::Imm), tile().prop_map(ScalarOperand::Vector)]
}

fn affine() -> impl Strategy<Value = Affine> {
    (any::<i32>(), any::<i32>(), prop::collection::vec(any::<i32>(), 1..=4))
        .prop_map(|(base, channel_multiplier, steps)| Affine { base, channel_multiplier, steps })
}

fn alu() -> impl Strategy<Value = AluOp> {
    prop::sample::select(AluOp::ALL.to_vec())
}

fn hbm(n_tensors: usize) -> impl Strategy<Value = HbmAccess> {
    (0..n_tensors, 0u64..10_000, dims()).prop_map(|(tensor, offset, dims)| HbmAccess {
        tensor,
        offset,
        dims,
    })
}

fn dma_operand(n: usize) -> impl Strategy<Value = DmaOperand> {
    prop_oneof![tile().prop_map(DmaOperand::Tile), hbm(n).prop_map(DmaOperand::Hbm)]
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (dma_operand(n), dma_operand(n), 0u8..16).prop_map(|(dst, src, queue)| Op::DmaCopy {
            dst,
            src,
            queue
        }),
        (tile(), tile(), tile(), any::<bool>(), any::<bool>()).prop_map(
            |(dst, stationary, moving, accumulate, double_row)| Op::Matmul {
                dst,
                stationary,
                moving,
                accumulate,
                double_row
            }
        ),
        (tile(), tile()).prop_map(|(dst, src)| Op::Transpose { dst, src }),
        (tile(), tile(), tile(), alu()).prop_map(|(dst, in0, in1, op)| Op::TensorTensor {
            dst,
            in0,
            in1,
            op
        }),
        (
            tile(),
            tile(),
            prop::collection::vec(
                (alu(), scalar(), any::<bool>()).prop_map(|(op, operand, reverse)| ScalarStage {
                    op,
                    operand,
                    reverse
                }),
                1..=2
            )
        )
            .prop_map(|(dst, src, stages)| Op::TensorScalar { dst, src, stages }),
        (tile(), tile(), prop::sample::select(ReduceOp::ALL.to_vec()), 1u32..=4, any::<bool>())
            .prop_map(|(dst, src, op, axes, negate)| Op::TensorReduce {
                dst,
                src,
                op,
                axes,
                negate
            }),
        (tile(), tile()).prop_map(|(dst, src)| Op::TensorCopy { dst, src }),
        (tile(), imm()).prop_map(|(dst, value)| Op::Memset { dst, value }),
        (tile(), tile(), tile(), tile()).prop_map(|(dst, predicate, on_true, on_false)| {
            Op::Select { dst, predicate, on_true, on_false }
        }),
        (
            tile(),
            tile(),
            prop::sample::select(ActFunc::ALL.to_vec()),
            scalar(),
            prop::option::of(tile()),
            prop::option::of(tile())
        )
            .prop_map(|(dst, src, func, scale, bias, reduce)| Op::Activation {
                dst,
                src,
                func,
                scale,
                bias,
                reduce
            }),
        (tile(), affine()).prop_map(|(dst, affine)| Op::Iota { dst, affine }),
        (
            tile(),
            tile(),
            affine(),
            prop::sample::select(vec![
                AluOp::Eq,
                AluOp::Ne,
                AluOp::Ge,
                AluOp::Gt,
                AluOp::Le,
                AluOp::Lt
            ]),
            imm()
        )
            .prop_map(|(dst, src, affine, cmp, on_false)| Op::AffineSelect {
                dst,
                src,
                affine,
                cmp,
                on_false
            }),
        (tile(), tile(), tile(), scalar(), alu(), alu(), any::<bool>(), any::<bool>()).prop_map(
            |(dst, in0, in1, initial, op0, op1, reverse0, reverse1)| Op::TensorTensorScan {
                dst,
                in0,
                in1,
                initial,
                op0,
                op1,
                reverse0,
                reverse1
            }
        ),
        (tile(), tile()).prop_map(|(dst, src)| Op::BnStats { dst, src }),
        (tile(), tile()).prop_map(|(dst, src)| Op::BnAggr { dst, src }),
        (tile(), tile(), scalar(), tile(), alu(), alu(), any::<bool>(), any::<bool>()).prop_map(
            |(dst, src, operand0, in1, op0, op1, reverse0, reverse1)| Op::ScalarTensorTensor {
                dst,
                src,
                operand0,
                in1,
                op0,
                op1,
                reverse0,
                reverse1
            }
        ),
        (
            tile(),
            tile(),
            alu(),
            scalar(),
            any::<bool>(),
            prop::sample::select(ReduceOp::ALL.to_vec()),
            tile()
        )
            .prop_map(|(dst, src, op0, operand0, reverse0, reduce_op, reduce)| {
                Op::TensorScalarReduce { dst, src, op0, operand0, reverse0, reduce_op, reduce }
            }),
        (tile(), tile()).prop_map(|(dst, src)| Op::Max8 { dst, src }),
        (tile(), tile(), tile()).prop_map(|(dst, data, vals)| Op::FindIndex8 { dst, data, vals }),
        (tile(), tile()).prop_map(|(dst, src)| Op::Reciprocal { dst, src }),
        (
            (tile(), tile(), tile(), tile()),
            (alu(), alu(), any::<i32>(), imm()),
            (prop::sample::select(ReduceCmd::ALL.to_vec()), prop::option::of(tile()))
        )
            .prop_map(
                |(
                    (dst, src, bound0, bound1),
                    (cmp0, cmp1, range_start, on_false),
                    (reduce_cmd, reduce),
                )| {
                    Op::RangeSelect {
                        dst,
                        src,
                        bound0,
                        bound1,
                        cmp0,
                        cmp1,
                        range_start,
                        on_false,
                        reduce_cmd,
                        reduce,
                    }
                }
            ),
        (
            (tile(), tile(), tile(), scalar(), any::<bool>()),
            (prop::sample::select(ReduceCmd::ALL.to_vec()), prop::option::of(tile()))
        )
            .prop_map(
                |((dst, predicate, on_true, on_false, reverse), (reduce_cmd, reduce))| {
                    Op::SelectReduce {
                        dst,
                        predicate,
                        on_true,
                        on_false,
                        reverse,
                        reduce_cmd,
                        reduce,
                    }
                }
            ),
        (tile(), tile(), tile(), prop::sample::select(vec![1u32, 2, 4, 8, 16, 32]), 1u32..4096)
            .prop_map(|(dst, src, index, elems, valid)| Op::LocalGather {
                dst,
                src,
                index,
                elems,
                valid
            }),
        (tile(), tile(), prop::sample::select(ReduceOp::ALL.to_vec()))
            .prop_map(|(dst, src, op)| Op::PartitionReduce { dst, src, op }),
        (
            dma_operand(n),
            dma_operand(n),
            tile(),
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            0u8..16
        )
            .prop_map(|(dst, src, index, oob_skip, accumulate, rows, queue)| {
                Op::DmaIndirect { rows, queue, dst, src, index, oob_skip, accumulate }
            }),
        (
            (tile(), tile(), alu(), scalar(), any::<bool>()),
            (alu(), prop::sample::select(ReduceCmd::ALL.to_vec()), prop::option::of(scalar()))
        )
            .prop_map(|((dst, src, op0, operand0, reverse0), (op1, reduce_cmd, init))| {
                Op::TensorScalarCumulative {
                    dst,
                    src,
                    op0,
                    operand0,
                    reverse0,
                    op1,
                    reduce_cmd,
                    init,
                }
            }),
        (tile(), tile(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(dst, src, mask)| Op::StreamShuffle { dst, src, mask }),
        (tile(), tile(), tile(), imm(), prop::option::of(tile())).prop_map(
            |(dst, data, vals, imm, indices)| Op::MatchReplace8 { dst, data, vals, imm, indices }
        ),
        (tile(), tile(), tile()).prop_map(|(dst, src, index)| Op::Gather { dst, src, index }),
        (tile(), tile()).prop_map(|(dst, src)| Op::SequenceBounds { dst, src }),
        (tile(), tile(), scalar(), any::<u32>()).prop_map(|(dst, src, prob, seed)| Op::Dropout {
            dst,
            src,
            prob,
            seed
        }),
        (
            tile(),
            tile(),
            scalar(),
            prop::sample::select(ReduceCmd::ALL.to_vec()),
            prop::option::of(scalar()),
            prop::option::of(tile())
        )
            .prop_map(|(dst, src, max, reduce_cmd, init, reduce)| Op::Exponential {
                dst,
                src,
                max,
                reduce_cmd,
                init,
                reduce
            }),
        (tile(), tile(), tile(), tile(), tile(), any::<bool>()).prop_map(
            |(dst, stationary, moving, stationary_scale, moving_scale, accumulate)| Op::MatmulMx {
                dst,
                stationary,
                moving,
                stationary_scale,
                moving_scale,
                accumulate
            }
        ),
        (tile(), tile(), tile()).prop_map(|(dst, src, scale)| Op::QuantizeMx { dst, src, scale }),
        (tile(), tile(), 0u8..16).prop_map(|(dst, src, queue)| Op::DmaTranspose {
            dst,
            src,
            queue
        }),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    let decls = prop::collection::vec(
        (
            dtype(),
            prop::collection::vec(1u64..300, 1..=4),
            prop::sample::select(vec![TensorKind::Input, TensorKind::Output, TensorKind::Scratch]),
        ),
        1..=3,
    );
    decls.prop_flat_map(|decls| {
        let n = decls.len();
        let tensors: Vec<TensorDecl> = decls
            .into_iter()
            .enumerate()
            .map(|(i, (dtype, shape, kind))| TensorDecl {
                name: format!("t{i}"),
                dtype,
                shape,
                kind,
            })
            .collect();
        let ins = (
            op(n),
            prop::collection::vec(
                (0u32..256, 0u32..1000).prop_map(|(semaphore, value)| SemWait { semaphore, value }),
                0..3,
            ),
            prop::collection::vec(0u32..256, 0..2),
        )
            .prop_flat_map(|(op, waits, signals)| {
                let engines = opcode(op.name()).map(|o| o.engines.to_vec()).unwrap_or_default();
                (prop::sample::select(engines), Just(op), Just(waits), Just(signals))
            })
            .prop_map(|(engine, op, waits, signals)| Instruction {
                engine,
                op,
                waits,
                signals,
            });
        (Just(tensors), prop::collection::vec(ins, 1..8))
            .prop_map(|(tensors, instructions)| Program { tensors, instructions, lines: vec![] })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 1024, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(p in program()) {
        let text = p.to_string();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &p, "\n{}", text);
        prop_assert_eq!(back.to_string(), text);
    }

    /// Arbitrary text: an error or a program, never a panic.
    #[test]
    fn parser_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }

    /// Token soup from the assembly's own vocabulary finds deeper paths than random characters.
    #[test]
    fn parser_never_panics_on_token_soup(toks in prop::collection::vec(prop::sample::select(vec![
        "hbm", "a", ":", "f32", "bf16", "[", "]", "128", "0", "-1", "99999999999999999999", ",", "@", "=", "input", "output",
        "sb", "ps", "dma_copy", "nc_matmul", "tensor_scalar", "activation", "iota", "affine_select", "S", ">=", "++",
        "op0", "operand0", "multiply", "func", "exp", "steps", "cmp", "ge", "accumulate", "true", "engine", "gpsimd",
        "\n", "#", "1e39", "nan", "-inf", "0x10", "-", "axes", "on_false", "value", "1.5",
    ]), 0..60)) {
        let text = toks.join(" ");
        if let Ok(p) = parse(&text) {
            // Whatever parses must print and parse back to itself.
            prop_assert_eq!(parse(&p.to_string()).ok(), Some(p));
        }
    }
}
