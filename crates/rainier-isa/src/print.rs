//! Canonical text form. `parse(&program.to_string())` returns an equal program.

use std::fmt::{self, Write as _};

use crate::{
    contiguous_dims, Affine, Dim, DmaOperand, HbmAccess, Instruction, Op, Program, ScalarOperand,
    TensorDecl, Tile,
};

fn pattern(dims: &[Dim], sizes_only: bool) -> String {
    if sizes_only {
        let s: Vec<String> = dims.iter().map(|d| d.size.to_string()).collect();
        format!("[{}]", s.join(", "))
    } else {
        let s: Vec<String> = dims.iter().map(|d| format!("[{}, {}]", d.stride, d.size)).collect();
        format!("[{}]", s.join(", "))
    }
}

fn float(v: f32) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v:?}")
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes_only = !self.dims.is_empty() && self.is_contiguous();
        write!(
            f,
            "{}[{}:{}]@{}:{}{}",
            self.memory.name(),
            self.start_partition,
            self.start_partition + self.partitions,
            self.offset_bytes,
            self.dtype,
            pattern(&self.dims, sizes_only)
        )
    }
}

/// `name`, `name[a:b, c:d]` when the access is a slice of the declared shape, else
/// `name@offset[[stride, size], ...]`.
fn hbm(h: &HbmAccess, tensors: &[TensorDecl]) -> String {
    let Some(decl) = tensors.get(h.tensor) else { return format!("<tensor {}>", h.tensor) };
    let full = contiguous_dims(&decl.shape);
    if h.offset == 0 && h.dims == full {
        return decl.name.clone();
    }
    if h.dims.len() == full.len() && h.dims.iter().zip(&full).all(|(a, b)| a.stride == b.stride) {
        let mut rest = h.offset;
        let mut slices = Vec::new();
        for (d, f) in h.dims.iter().zip(&full) {
            let stride = f.stride as u64;
            let start = rest / stride;
            rest %= stride;
            if start + d.size > f.size || d.size == 0 {
                break;
            }
            slices.push(format!("{start}:{}", start + d.size));
        }
        if rest == 0 && slices.len() == full.len() {
            return format!("{}[{}]", decl.name, slices.join(", "));
        }
    }
    format!("{}@{}{}", decl.name, h.offset, pattern(&h.dims, false))
}

fn dma(o: &DmaOperand, tensors: &[TensorDecl]) -> String {
    match o {
        DmaOperand::Hbm(h) => hbm(h, tensors),
        DmaOperand::Tile(t) => t.to_string(),
    }
}

fn scalar(s: &ScalarOperand) -> String {
    match s {
        ScalarOperand::Imm(v) => float(*v),
        ScalarOperand::Vector(t) => t.to_string(),
    }
}

fn affine(a: &Affine) -> String {
    let steps: Vec<String> = a.steps.iter().map(i32::to_string).collect();
    format!(
        "base={} channel_multiplier={} steps=[{}]",
        a.base,
        a.channel_multiplier,
        steps.join(", ")
    )
}

impl Program {
    /// The canonical text of instruction `index`.
    pub fn instruction_text(&self, index: usize) -> String {
        self.instructions.get(index).map_or_else(String::new, |i| self.format_instruction(i))
    }

    fn format_instruction(&self, ins: &Instruction) -> String {
        let mut s = String::from(ins.op.name());
        let mut opts: Vec<String> = Vec::new();
        let operands: Vec<String> = match &ins.op {
            Op::DmaCopy { dst, src, queue } => {
                if *queue > 0 {
                    opts.push(format!("queue={queue}"));
                }
                vec![dma(dst, &self.tensors), dma(src, &self.tensors)]
            }
            Op::DmaIndirect { dst, src, index, oob_skip, accumulate, rows, queue } => {
                if *queue > 0 {
                    opts.push(format!("queue={queue}"));
                }
                if *rows > 0 {
                    opts.push(format!("rows={rows}"));
                }
                if *oob_skip {
                    opts.push("oob=skip".into());
                }
                if *accumulate {
                    opts.push("accumulate=true".into());
                }
                vec![dma(dst, &self.tensors), dma(src, &self.tensors), index.to_string()]
            }
            Op::Matmul { dst, stationary, moving, accumulate, double_row } => {
                if *accumulate {
                    opts.push("accumulate=true".into());
                }
                if *double_row {
                    opts.push("double_row=true".into());
                }
                vec![dst.to_string(), stationary.to_string(), moving.to_string()]
            }
            Op::Transpose { dst, src }
            | Op::TensorCopy { dst, src }
            | Op::BnStats { dst, src }
            | Op::BnAggr { dst, src }
            | Op::Max8 { dst, src }
            | Op::Reciprocal { dst, src } => {
                vec![dst.to_string(), src.to_string()]
            }
            Op::FindIndex8 { dst, data, vals } => {
                vec![dst.to_string(), data.to_string(), vals.to_string()]
            }
            Op::TensorScalarCumulative {
                dst,
                src,
                op0,
                operand0,
                reverse0,
                op1,
                reduce_cmd,
                init,
            } => {
                opts.push(format!("op0={} operand0={}", op0.name(), scalar(operand0)));
                if *reverse0 {
                    opts.push("reverse0=true".into());
                }
                opts.push(format!("op1={} reduce_cmd={}", op1.name(), reduce_cmd.name()));
                if let Some(i) = init {
                    opts.push(format!("init={}", scalar(i)));
                }
                vec![dst.to_string(), src.to_string()]
            }
            Op::MatchReplace8 { dst, data, vals, imm, indices } => {
                opts.push(format!("imm={}", float(*imm)));
                if let Some(i) = indices {
                    opts.push(format!("indices={i}"));
                }
                vec![dst.to_string(), data.to_string(), vals.to_string()]
            }
            Op::Gather { dst, src, index } => {
                vec![dst.to_string(), src.to_string(), index.to_string()]
            }
            Op::SequenceBounds { dst, src } => vec![dst.to_string(), src.to_string()],
            Op::MatmulMx {
                dst,
                stationary,
                moving,
                stationary_scale,
                moving_scale,
                accumulate,
            } => {
                if *accumulate {
                    opts.push("accumulate=true".into());
                }
                [dst, stationary, moving, stationary_scale, moving_scale]
                    .iter()
                    .map(|t| t.to_string())
                    .collect()
            }
            Op::QuantizeMx { dst, src, scale } => {
                vec![dst.to_string(), src.to_string(), scale.to_string()]
            }
            Op::DmaTranspose { dst, src, queue } => {
                if *queue > 0 {
                    opts.push(format!("queue={queue}"));
                }
                vec![dst.to_string(), src.to_string()]
            }
            Op::Exponential { dst, src, max, reduce_cmd, init, reduce } => {
                if *max != ScalarOperand::Imm(0.0) {
                    opts.push(format!("max={}", scalar(max)));
                }
                if *reduce_cmd != crate::ReduceCmd::Idle {
                    opts.push(format!("reduce_cmd={}", reduce_cmd.name()));
                }
                if let Some(i) = init {
                    opts.push(format!("init={}", scalar(i)));
                }
                if let Some(r) = reduce {
                    opts.push(format!("reduce={r}"));
                }
                vec![dst.to_string(), src.to_string()]
            }
            Op::Dropout { dst, src, prob, seed } => {
                opts.push(format!("prob={} seed={seed}", scalar(prob)));
                vec![dst.to_string(), src.to_string()]
            }
            Op::StreamShuffle { dst, src, mask } => {
                let m: Vec<String> = mask.iter().map(u8::to_string).collect();
                opts.push(format!("mask=[{}]", m.join(", ")));
                vec![dst.to_string(), src.to_string()]
            }
            Op::PartitionReduce { dst, src, op } => {
                opts.push(format!("op={}", op.name()));
                vec![dst.to_string(), src.to_string()]
            }
            Op::LocalGather { dst, src, index, elems, valid } => {
                opts.push(format!("elems={elems} valid={valid}"));
                vec![dst.to_string(), src.to_string(), index.to_string()]
            }
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
            } => {
                opts.push(format!(
                    "cmp0={} cmp1={} range_start={range_start} on_false={} reduce_cmd={}",
                    cmp0.name(),
                    cmp1.name(),
                    float(*on_false),
                    reduce_cmd.name()
                ));
                if let Some(r) = reduce {
                    opts.push(format!("reduce={r}"));
                }
                vec![dst.to_string(), src.to_string(), bound0.to_string(), bound1.to_string()]
            }
            Op::SelectReduce { dst, predicate, on_true, on_false, reverse, reduce_cmd, reduce } => {
                opts.push(format!(
                    "on_false={} reduce_cmd={}",
                    scalar(on_false),
                    reduce_cmd.name()
                ));
                if *reverse {
                    opts.push("reverse=true".into());
                }
                if let Some(r) = reduce {
                    opts.push(format!("reduce={r}"));
                }
                vec![dst.to_string(), predicate.to_string(), on_true.to_string()]
            }
            Op::ScalarTensorTensor { dst, src, operand0, in1, op0, op1, reverse0, reverse1 } => {
                opts.push(format!(
                    "op0={} operand0={} op1={}",
                    op0.name(),
                    scalar(operand0),
                    op1.name()
                ));
                if *reverse0 {
                    opts.push("reverse0=true".into());
                }
                if *reverse1 {
                    opts.push("reverse1=true".into());
                }
                vec![dst.to_string(), src.to_string(), in1.to_string()]
            }
            Op::TensorScalarReduce { dst, src, op0, operand0, reverse0, reduce_op, reduce } => {
                opts.push(format!("op0={} operand0={}", op0.name(), scalar(operand0)));
                if *reverse0 {
                    opts.push("reverse0=true".into());
                }
                opts.push(format!("reduce_op={} reduce={reduce}", reduce_op.name()));
                vec![dst.to_string(), src.to_string()]
            }
            Op::TensorTensorScan { dst, in0, in1, initial, op0, op1, reverse0, reverse1 } => {
                opts.push(format!(
                    "op0={} op1={} initial={}",
                    op0.name(),
                    op1.name(),
                    scalar(initial)
                ));
                if *reverse0 {
                    opts.push("reverse0=true".into());
                }
                if *reverse1 {
                    opts.push("reverse1=true".into());
                }
                vec![dst.to_string(), in0.to_string(), in1.to_string()]
            }
            Op::TensorTensor { dst, in0, in1, op } => {
                opts.push(format!("op={}", op.name()));
                vec![dst.to_string(), in0.to_string(), in1.to_string()]
            }
            Op::TensorScalar { dst, src, stages } => {
                for (i, st) in stages.iter().enumerate() {
                    opts.push(format!("op{i}={} operand{i}={}", st.op.name(), scalar(&st.operand)));
                    if st.reverse {
                        opts.push(format!("reverse{i}=true"));
                    }
                }
                vec![dst.to_string(), src.to_string()]
            }
            Op::TensorReduce { dst, src, op, axes, negate } => {
                opts.push(format!("op={} axes={axes}", op.name()));
                if *negate {
                    opts.push("negate=true".into());
                }
                vec![dst.to_string(), src.to_string()]
            }
            Op::Memset { dst, value } => {
                opts.push(format!("value={}", float(*value)));
                vec![dst.to_string()]
            }
            Op::Select { dst, predicate, on_true, on_false } => {
                vec![
                    dst.to_string(),
                    predicate.to_string(),
                    on_true.to_string(),
                    on_false.to_string(),
                ]
            }
            Op::Activation { dst, src, func, scale, bias, reduce } => {
                opts.push(format!("func={}", func.name()));
                if *scale != ScalarOperand::Imm(1.0) {
                    opts.push(format!("scale={}", scalar(scale)));
                }
                if let Some(b) = bias {
                    opts.push(format!("bias={b}"));
                }
                if let Some(r) = reduce {
                    opts.push(format!("reduce={r}"));
                }
                vec![dst.to_string(), src.to_string()]
            }
            Op::Iota { dst, affine: a } => {
                opts.push(affine(a));
                vec![dst.to_string()]
            }
            Op::AffineSelect { dst, src, affine: a, cmp, on_false } => {
                opts.push(format!(
                    "cmp={} {} on_false={}",
                    cmp.name(),
                    affine(a),
                    float(*on_false)
                ));
                vec![dst.to_string(), src.to_string()]
            }
        };
        if ins.op.info().engines[0] != ins.engine {
            opts.insert(0, format!("engine={}", ins.engine));
        }
        let _ = write!(s, " {}", operands.join(", "));
        for o in opts {
            let _ = write!(s, " {o}");
        }
        for w in &ins.waits {
            let _ = write!(s, " S[{}]>={}", w.semaphore, w.value);
        }
        for sig in &ins.signals {
            let _ = write!(s, " S[{sig}]++");
        }
        s
    }
}

impl fmt::Display for TensorDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        write!(f, "hbm {}: {}[{}] {}", self.name, self.dtype, shape.join(", "), self.kind.name())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tensors {
            writeln!(f, "{t}")?;
        }
        for ins in &self.instructions {
            writeln!(f, "{}", self.format_instruction(ins))?;
        }
        Ok(())
    }
}
