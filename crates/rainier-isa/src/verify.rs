//! The verifier: every rule the hardware enforces, checked before anything runs. It reports all
//! violations at once, each with its source line and instruction index.

use std::fmt;

use rainier_arch::{CoreParams, Generation};
use rainier_tensor::DType;

use crate::{
    pattern_extent, pattern_len, Access, DmaOperand, Engine, HbmAccess, Memory, Op, Program,
    ScalarOperand, Tile,
};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Instruction index in program order.
    pub index: usize,
    /// 1-based source line.
    pub line: u32,
    pub opcode: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} (instruction #{} {}): {}",
            self.line, self.index, self.opcode, self.message
        )
    }
}

/// Every violation of a program, in program order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} rule violation{}", if n == 1 { "" } else { "s" })?;
        for v in &self.0 {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// Hardware limits of an engine access pattern ([N-arch2], [N-ap]).
const MAX_FREE_DIMS: usize = 4;
const MAX_DIM_SIZE: u64 = u16::MAX as u64;
/// "free size up to 64K elements from SBUF" [N-arch2]; applied to DMA's SBUF side too
/// (assumption), which also bounds every instruction's work.
const MAX_FREE_ELEMENTS: u64 = 1 << 16;
const STRIDE_RANGE: std::ops::RangeInclusive<i64> = i16::MIN as i64..=i16::MAX as i64;
/// HBM side of a DMA: partition-like outer dim plus up to 4 free dims (assumption: descriptors
/// carry up to 4 dims per side [R-neff]; we allow one more for the partition axis).
const MAX_HBM_DIMS: usize = 5;

struct Checker<'a> {
    core: &'a CoreParams,
    program: &'a Program,
    index: usize,
    opcode: &'static str,
    out: Vec<Violation>,
}

impl Checker<'_> {
    fn fail(&mut self, message: impl Into<String>) {
        self.out.push(Violation {
            index: self.index,
            line: self.program.line_of(self.index),
            opcode: self.opcode,
            message: message.into(),
        });
    }

    fn capacity(&self, m: Memory) -> u64 {
        match m {
            Memory::Sbuf => u64::from(self.core.sbuf_bytes_per_partition.value),
            Memory::Psum => u64::from(self.core.psum_bytes_per_partition.value),
        }
    }

    /// Shape, bounds, alignment and dtype rules of one tile accessed by `engine` (`None`: DMA).
    fn tile(&mut self, operand: usize, t: &Tile, engine: Option<Engine>) {
        let what = format_args!("operand {operand}");
        let parts = self.core.partitions.value;
        if t.partitions == 0 {
            self.fail(format!("{what}: empty partition range"));
        } else if u64::from(t.start_partition) + u64::from(t.partitions) > u64::from(parts) {
            self.fail(format!(
                "{what}: partitions {}:{} exceed the {parts} partitions",
                t.start_partition,
                t.start_partition + t.partitions
            ));
        } else if engine.is_some() {
            // Start-partition rule [N-arch2]: >64 partitions start at 0; 33-64 at 0 or 64;
            // 1-32 at 0, 32, 64 or 96.
            let ok = match t.partitions {
                65.. => t.start_partition == 0,
                33..=64 => t.start_partition % 64 == 0,
                _ => t.start_partition % 32 == 0,
            };
            if !ok {
                self.fail(format!(
                    "{what}: an engine access of {} partitions cannot start at partition {} (>64 partitions start at 0; 33-64 at 0 or 64; 1-32 at a multiple of 32)",
                    t.partitions, t.start_partition
                ));
            }
        }
        if t.dims.is_empty() || t.dims.len() > MAX_FREE_DIMS {
            self.fail(format!("{what}: {} free dims (1 to {MAX_FREE_DIMS} allowed)", t.dims.len()));
        }
        for (i, d) in t.dims.iter().enumerate() {
            if d.size == 0 {
                self.fail(format!("{what}: free dim {i} has size 0"));
            } else if d.size > MAX_DIM_SIZE {
                self.fail(format!("{what}: free dim {i} size {} exceeds {MAX_DIM_SIZE}", d.size));
            }
            if !STRIDE_RANGE.contains(&d.stride) {
                self.fail(format!("{what}: free dim {i} stride {} is outside int16", d.stride));
            }
        }
        if t.free_len() > MAX_FREE_ELEMENTS {
            self.fail(format!(
                "{what}: {} elements per partition exceed {MAX_FREE_ELEMENTS}",
                t.free_len()
            ));
        }
        let esz = t.dtype.size_bytes() as u64;
        if t.offset_bytes % esz != 0 {
            self.fail(format!(
                "{what}: byte offset {} is not a multiple of the {}-byte {}",
                t.offset_bytes, esz, t.dtype
            ));
        }
        let (lo, hi) = t.byte_range();
        let cap = self.capacity(t.memory);
        if lo < 0 || hi > i128::from(cap) {
            let mem = if t.memory == Memory::Sbuf { "SBUF" } else { "PSUM" };
            self.fail(format!(
                "{what}: bytes {lo}..{hi} of each partition fall outside {mem}'s {cap} bytes"
            ));
        }
        if t.dtype == DType::Fp8E4m3fn && self.core.generation < Generation::V4 {
            self.fail(format!("{what}: fp8e4m3fn exists only on NeuronCore-v4"));
        }
        if let Some(engine) = engine {
            if t.memory == Memory::Psum {
                if engine == Engine::GpSimd {
                    self.fail(format!("{what}: the GpSimd engine cannot access PSUM"));
                }
                let fmax = u64::from(self.core.psum_access_fmax.value);
                if matches!(engine, Engine::Vector | Engine::Scalar) && t.free_len() > fmax {
                    self.fail(format!(
                        "{what}: {} elements per partition from PSUM exceed {fmax}",
                        t.free_len()
                    ));
                }
            }
        }
    }

    fn same_shape(&mut self, a_name: &str, a: &Tile, b_name: &str, b: &Tile) {
        if a.partitions != b.partitions || a.free_len() != b.free_len() {
            self.fail(format!(
                "{a_name} is [{}, {}] but {b_name} is [{}, {}] (partitions, elements per partition)",
                a.partitions,
                a.free_len(),
                b.partitions,
                b.free_len()
            ));
        }
    }

    fn top8_source(&mut self, what: &str, t: &Tile) {
        if !(8..=16384).contains(&t.free_len()) {
            self.fail(format!("{what} has {} elements per partition (8 to 16384)", t.free_len()));
        }
    }

    fn eight_per_partition(&mut self, what: &str, t: &Tile, src: &Tile) {
        if t.partitions != src.partitions || t.free_len() != 8 {
            self.fail(format!(
                "{what} must be [{}, 8], found [{}, {}]",
                src.partitions,
                t.partitions,
                t.free_len()
            ));
        }
    }

    fn per_partition(&mut self, what: &str, v: &Tile, src: &Tile) {
        if v.partitions != src.partitions || v.free_len() != 1 {
            self.fail(format!(
                "{what} must be a [{}, 1] per-partition vector, found [{}, {}]",
                src.partitions,
                v.partitions,
                v.free_len()
            ));
        }
    }

    fn hbm(&mut self, what: &str, h: &HbmAccess) {
        let Some(decl) = self.program.tensors.get(h.tensor) else {
            self.fail(format!("{what}: tensor #{} is not declared", h.tensor));
            return;
        };
        if h.dims.is_empty() || h.dims.len() > MAX_HBM_DIMS {
            self.fail(format!(
                "{what}: {} dims on '{}' (1 to {MAX_HBM_DIMS} allowed)",
                h.dims.len(),
                decl.name
            ));
        }
        if h.dims.iter().any(|d| d.size == 0) {
            self.fail(format!("{what}: an access of '{}' has a dim of size 0", decl.name));
            return;
        }
        let (lo, hi) = pattern_extent(&h.dims);
        let (first, last) = (h.offset as i128 + i128::from(lo), h.offset as i128 + i128::from(hi));
        if first < 0 || last >= i128::from(decl.len()) {
            self.fail(format!(
                "{what}: elements {first}..={last} fall outside '{}' ({} elements)",
                decl.name,
                decl.len()
            ));
        }
    }

    fn matmul(&mut self, dst: &Tile, stationary: &Tile, moving: &Tile, double_row: bool) {
        let c = self.core;
        let rows = if double_row { 2 } else { 1 };
        if double_row {
            if !c.has_fp8_double_row() {
                self.fail(format!("double_row needs NeuronCore-v3 or later, not {}", c.generation));
            }
            let fp8 =
                |t: &Tile| matches!(t.dtype, DType::Fp8E4m3 | DType::Fp8E5m2 | DType::Fp8E4m3fn);
            if !fp8(stationary) || !fp8(moving) {
                self.fail(format!(
                    "double_row needs fp8 inputs, found {} and {}",
                    stationary.dtype, moving.dtype
                ));
            }
            if stationary.free_len() % 2 != 0 || moving.free_len() % 2 != 0 {
                self.fail("double_row inputs have two rows: even free sizes [2, M] and [2, N]");
            }
        }
        let (m, n) = (stationary.free_len() / rows, moving.free_len() / rows);
        self.matmul_shape(dst, stationary, moving, m, n);
        let allowed = [
            DType::F32,
            DType::Tf32,
            DType::Bf16,
            DType::F16,
            DType::Fp8E4m3,
            DType::Fp8E5m2,
            DType::Fp8E4m3fn,
        ];
        for (name, t) in [("stationary", stationary), ("moving", moving)] {
            if !allowed.contains(&t.dtype) {
                self.fail(format!("{name} dtype {} is not a matmul input type", t.dtype));
            }
        }
        let wide = |d: DType| matches!(d, DType::F32 | DType::Tf32);
        if wide(stationary.dtype) != wide(moving.dtype) {
            self.fail(format!(
                "stationary {} and moving {} cannot pair: fp32/tf32 pairs only with fp32/tf32",
                stationary.dtype, moving.dtype
            ));
        }
        let (a, b) = (stationary.dtype, moving.dtype);
        if (a == DType::Fp8E4m3 && b == DType::Fp8E4m3fn)
            || (a == DType::Fp8E4m3fn && b == DType::Fp8E4m3)
        {
            self.fail("legacy fp8e4m3 cannot be mixed with fp8e4m3fn");
        }
    }

    /// The rules every TensorE matmul shares: K partitions on both inputs, M and N within the
    /// generation's limits, dst `[M, N]` in PSUM (one bank before v4) in an allowed dtype.
    fn matmul_shape(&mut self, dst: &Tile, stationary: &Tile, moving: &Tile, m: u64, n: u64) {
        let c = self.core;
        let k = stationary.partitions;
        if moving.partitions != k {
            self.fail(format!(
                "stationary has {k} partitions (K) but moving has {}",
                moving.partitions
            ));
        }
        if m > u64::from(c.matmul_stationary_fmax.value) {
            self.fail(format!(
                "stationary free size M = {m} exceeds {}",
                c.matmul_stationary_fmax.value
            ));
        }
        let fmax = if dst.dtype == DType::Bf16 {
            c.matmul_moving_fmax_bf16.value
        } else {
            c.matmul_moving_fmax_fp32.value
        };
        let dst_ok = dst.dtype == DType::F32 || (dst.dtype == DType::Bf16 && c.has_v4_matmul());
        if !dst_ok {
            let allowed = if c.has_v4_matmul() { "f32 or bf16" } else { "f32" };
            self.fail(format!(
                "dst dtype {} is not allowed in PSUM on {} ({allowed})",
                dst.dtype, c.generation
            ));
        } else if n > u64::from(fmax) {
            self.fail(format!("moving free size N = {n} exceeds {fmax} on {}", c.generation));
        }
        if u64::from(dst.partitions) != m || dst.free_len() != n {
            self.fail(format!(
                "dst must be [M, N] = [{m}, {n}], found [{}, {}]",
                dst.partitions,
                dst.free_len()
            ));
        }
        if dst.memory != Memory::Psum {
            self.fail("dst must be in PSUM");
        }
        if dst.memory == Memory::Psum && !c.has_v4_matmul() {
            let bank = u64::from(c.psum_bank_bytes());
            let (lo, hi) = dst.byte_range();
            if lo >= 0 && hi > lo && (lo as u64) / bank != (hi as u64 - 1) / bank {
                self.fail(format!("dst bytes {lo}..{hi} cross a {bank}-byte PSUM bank boundary"));
            }
        }
    }

    /// Packed MX tiles are for DMA, `quantize_mx` and `nc_matmul_mx` only.
    fn packed_operands(&mut self, op: &Op) {
        if matches!(op, Op::DmaCopy { .. } | Op::MatmulMx { .. } | Op::QuantizeMx { .. }) {
            return;
        }
        let mut packed = None;
        op.for_each_tile(|t, _| {
            if t.dtype.is_packed() {
                packed = Some(t.dtype);
            }
        });
        if let Some(d) = packed {
            self.fail(format!(
                "{d} is MX packed data: only dma_copy, quantize_mx and nc_matmul_mx take it"
            ));
        }
    }

    fn v4_only(&mut self, what: &str) {
        if self.core.generation < Generation::V4 {
            self.fail(format!("{what} needs NeuronCore-v4 or later, not {}", self.core.generation));
        }
    }

    /// MX data [P, F] with its scale tile: P a multiple of 32 up to 128 on a quadrant, and the
    /// scale layout of [`crate::mx_scale_partitions`].
    fn mx_data(&mut self, what: &str, data: &Tile, scale: &Tile) {
        let p = data.partitions;
        if p == 0 || p % 32 != 0 || p > 128 || data.start_partition % 32 != 0 {
            self.fail(format!(
                "{what} has partitions {}..{}: MX data spans whole 32-partition quadrants (a multiple of 32, at most 128)",
                data.start_partition,
                data.start_partition + p
            ));
        }
        if scale.dtype != DType::U8 {
            self.fail(format!("{what}'s scale must be u8 (e8m0 bytes), found {}", scale.dtype));
        }
        let want = crate::mx_scale_partitions(p);
        if scale.partitions != want || scale.free_len() != data.free_len() {
            self.fail(format!(
                "{what}'s scale must be [{want}, {}] (one byte per 8 partitions x 1 packed element, four per quadrant), found [{}, {}]",
                data.free_len(),
                scale.partitions,
                scale.free_len()
            ));
        }
        if scale.memory != Memory::Sbuf {
            self.fail(format!("{what}'s scale must be in SBUF"));
        }
    }

    fn matmul_mx(&mut self, dst: &Tile, s: &Tile, v: &Tile, s_scale: &Tile, v_scale: &Tile) {
        self.v4_only("nc_matmul_mx");
        for (name, t) in [("stationary", s), ("moving", v)] {
            if !t.dtype.is_packed() {
                self.fail(format!(
                    "{name} dtype {} is not MX data (fp8e5m2x4, fp8e4m3fnx4 or fp4e2m1fnx4)",
                    t.dtype
                ));
            }
        }
        self.mx_data("stationary", s, s_scale);
        self.mx_data("moving", v, v_scale);
        if s.free_len() % 2 != 0 {
            self.fail(format!("stationary free size M = {} must be even", s.free_len()));
        }
        self.matmul_shape(dst, s, v, s.free_len(), v.free_len());
    }

    fn dma_transpose(&mut self, dst: &Tile, src: &Tile, queue: u8) {
        if !self.core.has_dma_transpose() {
            self.fail(format!(
                "dma_transpose needs NeuronCore-v3 or later (hardware DGE), not {}",
                self.core.generation
            ));
        }
        if i64::from(queue) >= crate::DMA_QUEUES {
            self.fail(format!("queue={queue}: a DMA engine has queues 0-15"));
        }
        for (name, t) in [("dst", dst), ("src", src)] {
            if t.memory != Memory::Sbuf {
                self.fail(format!("{name} must be in SBUF"));
            }
        }
        if dst.dtype != src.dtype
            || !matches!(src.dtype.size_bytes(), 2 | 4)
            || src.dtype.is_packed()
        {
            self.fail(format!(
                "dst and src must have one 2- or 4-byte dtype, found {} and {}",
                dst.dtype, src.dtype
            ));
        }
        let (p, f) = (u64::from(src.partitions), src.free_len());
        if p % 16 != 0 {
            self.fail(format!(
                "src has {p} partitions: the DMA transposes blocks of 16 rows, so a multiple of 16"
            ));
        }
        if u64::from(dst.partitions) != f || dst.free_len() != p {
            self.fail(format!(
                "dst must be [{f}, {p}] for src [{p}, {f}], found [{}, {}]",
                dst.partitions,
                dst.free_len()
            ));
        }
    }

    fn quantize_mx(&mut self, dst: &Tile, src: &Tile, scale: &Tile) {
        self.v4_only("quantize_mx");
        if !matches!(dst.dtype, DType::Fp8E5m2x4 | DType::Fp8E4m3fnx4) {
            self.fail(format!("dst dtype {} must be fp8e5m2x4 or fp8e4m3fnx4", dst.dtype));
        }
        if !matches!(src.dtype, DType::Bf16 | DType::F16) {
            self.fail(format!("src dtype {} must be bf16 or f16", src.dtype));
        }
        if src.partitions != dst.partitions || src.free_len() != 4 * dst.free_len() {
            self.fail(format!(
                "src [{}, {}] must be [P, 4·F] for dst [P, F] = [{}, {}]",
                src.partitions,
                src.free_len(),
                dst.partitions,
                dst.free_len()
            ));
        }
        self.mx_data("dst", dst, scale);
        for (name, t) in [("dst", dst), ("src", src)] {
            if t.memory != Memory::Sbuf {
                self.fail(format!("{name} must be in SBUF"));
            }
        }
    }

    fn op(&mut self, engine: Engine, op: &Op) {
        let eng = Some(engine);
        // Memory permissions, bounds, shapes of every tile.
        let is_dma = op.is_dma();
        let mut n = 0;
        op.for_each_tile(|t, access| {
            n += 1;
            let what = format_args!("operand {n}");
            self.tile(n, t, if is_dma { None } else { eng });
            if is_dma && t.memory == Memory::Psum {
                self.fail(format!("{what}: DMA cannot access PSUM"));
            }
            if engine == Engine::Tensor && !is_dma {
                match (access, t.memory) {
                    (Access::Read, Memory::Psum) => {
                        self.fail(format!("{what}: the Tensor engine reads only SBUF"))
                    }
                    (Access::Write | Access::ReadWrite, Memory::Sbuf) => {
                        self.fail(format!("{what}: the Tensor engine writes only PSUM"))
                    }
                    _ => {}
                }
            }
        });
        self.packed_operands(op);
        let gen = self.core.generation;
        match op {
            Op::DmaCopy { dst, src, queue } => {
                if i64::from(*queue) >= crate::DMA_QUEUES {
                    self.fail(format!("queue={queue}: a DMA engine has queues 0-15"));
                }
                let dtype_of = |o: &DmaOperand| match o {
                    DmaOperand::Tile(t) => Some(t.dtype),
                    DmaOperand::Hbm(h) => self.program.tensors.get(h.tensor).map(|d| d.dtype),
                };
                if let (Some(a), Some(b)) = (dtype_of(dst), dtype_of(src)) {
                    if a != b && (a.is_packed() || b.is_packed()) {
                        self.fail(format!(
                            "DMA cannot convert {b} to {a}: MX packed data moves as it is"
                        ));
                    }
                }
                for (name, o) in [("dst", dst), ("src", src)] {
                    if let DmaOperand::Hbm(h) = o {
                        self.hbm(name, h);
                    }
                }
                if dst.len() != src.len() {
                    self.fail(format!("dst has {} elements but src has {}", dst.len(), src.len()));
                }
            }
            Op::Matmul { dst, stationary, moving, double_row, .. } => {
                self.matmul(dst, stationary, moving, *double_row)
            }
            Op::Transpose { dst, src } => {
                let (p, f) = (u64::from(src.partitions), src.free_len());
                let limit = if engine == Engine::Vector { 32 } else { 128 };
                if p > limit || f > limit {
                    self.fail(format!(
                        "{engine} transpose is at most [{limit}, {limit}], found [{p}, {f}]"
                    ));
                }
                if u64::from(dst.partitions) != f || dst.free_len() != p {
                    self.fail(format!(
                        "dst must be [{f}, {p}], found [{}, {}]",
                        dst.partitions,
                        dst.free_len()
                    ));
                }
                let widen = engine == Engine::Tensor && dst.dtype == DType::F32;
                if dst.dtype != src.dtype && !widen {
                    self.fail(format!(
                        "dst dtype {} must equal src dtype {}",
                        dst.dtype, src.dtype
                    ));
                }
                if engine == Engine::Vector {
                    let quadrant = |t: &Tile| {
                        t.start_partition / 32 == (t.start_partition + t.partitions.max(1) - 1) / 32
                    };
                    if !quadrant(src) || !quadrant(dst) {
                        self.fail("a Vector transpose stays within one 32-partition quadrant");
                    }
                }
            }
            Op::TensorTensor { dst, in0, in1, .. } => {
                self.same_shape("in0", in0, "dst", dst);
                self.same_shape("in1", in1, "dst", dst);
                if in0.memory == Memory::Psum && in1.memory == Memory::Psum {
                    self.fail("in0 and in1 cannot both be in PSUM");
                }
            }
            Op::TensorTensorScan { dst, in0, in1, initial, .. } => {
                self.same_shape("in0", in0, "dst", dst);
                self.same_shape("in1", in1, "dst", dst);
                if in0.memory == Memory::Psum && in1.memory == Memory::Psum {
                    self.fail("in0 and in1 cannot both be in PSUM");
                }
                if let ScalarOperand::Vector(v) = initial {
                    self.per_partition("initial", v, in0);
                }
            }
            Op::ScalarTensorTensor { dst, src, operand0, in1, .. } => {
                self.same_shape("src", src, "dst", dst);
                self.same_shape("in1", in1, "dst", dst);
                if src.memory == Memory::Psum && in1.memory == Memory::Psum {
                    self.fail("src and in1 cannot both be in PSUM");
                }
                if let ScalarOperand::Vector(v) = operand0 {
                    self.per_partition("operand0", v, src);
                }
            }
            Op::TensorScalarReduce { dst, src, operand0, reduce, .. } => {
                self.same_shape("src", src, "dst", dst);
                if let ScalarOperand::Vector(v) = operand0 {
                    self.per_partition("operand0", v, src);
                }
                self.per_partition("reduce", reduce, src);
            }
            Op::Max8 { dst, src } => {
                self.top8_source("src", src);
                self.eight_per_partition("dst", dst, src);
            }
            Op::FindIndex8 { dst, data, vals } => {
                self.top8_source("data", data);
                self.eight_per_partition("vals", vals, data);
                self.eight_per_partition("dst", dst, data);
                if dst.dtype.is_float() {
                    self.fail(format!(
                        "dst must have an integer dtype (uint16/uint32), not {}",
                        dst.dtype
                    ));
                }
            }
            Op::Reciprocal { dst, src } => self.same_shape("src", src, "dst", dst),
            Op::DmaIndirect { dst, src, index, queue, .. } => {
                if i64::from(*queue) >= crate::DMA_QUEUES {
                    self.fail(format!("queue={queue}: a DMA engine has queues 0-15"));
                }
                let (h, t) = match (dst, src) {
                    (DmaOperand::Hbm(h), DmaOperand::Tile(t))
                    | (DmaOperand::Tile(t), DmaOperand::Hbm(h)) => (h, t),
                    _ => {
                        self.fail("one side must be an HBM access and the other an SBUF tile");
                        return;
                    }
                };
                if h.tensor >= self.program.tensors.len() {
                    self.fail(format!("no HBM tensor #{}", h.tensor));
                }
                let rows = h.dims.first().map_or(0, |d| d.size);
                if rows != u64::from(t.partitions) {
                    self.fail(format!(
                        "the HBM side's outer dim has {rows} rows but the tile has {} partitions",
                        t.partitions
                    ));
                }
                if index.partitions != t.partitions
                    || index.free_len() != 1
                    || index.dtype.is_float()
                {
                    self.fail(format!(
                        "index must be an integer [{}, 1] tile, found {}[{}, {}]",
                        t.partitions,
                        index.dtype,
                        index.partitions,
                        index.free_len()
                    ));
                }
                if index.memory != Memory::Sbuf {
                    self.fail("index must be in SBUF");
                }
                if dst.len() != src.len() {
                    self.fail(format!("dst has {} elements but src has {}", dst.len(), src.len()));
                }
            }
            Op::TensorScalarCumulative { dst, src, operand0, op1, reduce_cmd, init, .. } => {
                self.same_shape("src", src, "dst", dst);
                if let ScalarOperand::Vector(v) = operand0 {
                    self.per_partition("operand0", v, src);
                }
                if let Some(ScalarOperand::Vector(v)) = init {
                    self.per_partition("init", v, src);
                }
                use crate::AluOp::*;
                if !matches!(op1, Add | Subtract | Multiply | Max | Min) {
                    self.fail(format!("op1={} (add, subtract, multiply, max or min)", op1.name()));
                }
                if *reduce_cmd == crate::ReduceCmd::LoadReduce && init.is_none() {
                    self.fail("reduce_cmd=load_reduce needs init=");
                }
                for (k, t) in [("src", src), ("dst", dst)] {
                    if matches!(t.dtype, DType::I32 | DType::U32) {
                        self.fail(format!("{k} is {}: int32/uint32 are not supported", t.dtype));
                    }
                }
            }
            Op::MatchReplace8 { dst, data, vals, indices, .. } => {
                self.top8_source("data", data);
                self.same_shape("data", data, "dst", dst);
                self.eight_per_partition("vals", vals, data);
                if let Some(i) = indices {
                    self.eight_per_partition("indices", i, data);
                    if i.dtype.is_float() {
                        self.fail(format!("indices must have an integer dtype, not {}", i.dtype));
                    }
                }
            }
            Op::Gather { dst, src, index } => {
                if dst.partitions != src.partitions || index.partitions != src.partitions {
                    self.fail("dst, src and index must span the same partitions");
                }
                if dst.free_len() != index.free_len() {
                    self.fail(format!(
                        "dst has {} elements per partition but index has {}",
                        dst.free_len(),
                        index.free_len()
                    ));
                }
                if dst.dtype != src.dtype {
                    self.fail("gather copies bits: dst dtype must equal src dtype");
                }
                if index.dtype.is_float() {
                    self.fail(format!("index must have an integer dtype, not {}", index.dtype));
                }
            }
            Op::SequenceBounds { dst, src } => {
                if dst.partitions != src.partitions || dst.free_len() != 2 * src.free_len() {
                    self.fail(format!("dst must be [{}, 2, {}]", src.partitions, src.free_len()));
                }
            }
            Op::MatmulMx { dst, stationary, moving, stationary_scale, moving_scale, .. } => {
                self.matmul_mx(dst, stationary, moving, stationary_scale, moving_scale)
            }
            Op::QuantizeMx { dst, src, scale } => self.quantize_mx(dst, src, scale),
            Op::DmaTranspose { dst, src, queue } => self.dma_transpose(dst, src, *queue),
            Op::Exponential { dst, src, max, reduce_cmd, init, reduce } => {
                if !self.core.has_fast_exponential() {
                    self.fail(format!(
                        "exponential needs NeuronCore-v4 or later, not {}",
                        self.core.generation
                    ));
                }
                self.same_shape("src", src, "dst", dst);
                for (what, s) in [("max", Some(max)), ("init", init.as_ref())] {
                    if let Some(ScalarOperand::Vector(v)) = s {
                        self.per_partition(what, v, src);
                    }
                }
                if let Some(r) = reduce {
                    self.per_partition("reduce", r, src);
                }
                let load = *reduce_cmd == crate::ReduceCmd::LoadReduce;
                if load != init.is_some() {
                    self.fail("init= goes with reduce_cmd=load_reduce, and load_reduce needs it");
                }
            }
            Op::Dropout { dst, src, prob, .. } => {
                self.same_shape("src", src, "dst", dst);
                if let ScalarOperand::Vector(v) = prob {
                    self.per_partition("prob", v, src);
                }
            }
            Op::StreamShuffle { dst, src, mask } => {
                if dst.dtype != src.dtype || dst.free_len() != src.free_len() {
                    self.fail("dst and src must have the same dtype and elements per partition");
                }
                if mask.len() != 32 || mask.iter().any(|&m| m >= 32 && m != 255) {
                    self.fail("mask needs 32 entries, each 0..=31 or 255");
                } else {
                    for i in 0..dst.partitions {
                        let m = mask[(i % 32) as usize];
                        if m != 255 && (i / 32) * 32 + u32::from(m) >= src.partitions {
                            self.fail(format!(
                                "dst partition {i} would read src partition {} of {}",
                                (i / 32) * 32 + u32::from(m),
                                src.partitions
                            ));
                            break;
                        }
                    }
                }
            }
            Op::PartitionReduce { dst, src, .. } => {
                if dst.partitions != 1 || dst.free_len() != src.free_len() {
                    self.fail(format!(
                        "dst must be [1, {}], found [{}, {}]",
                        src.free_len(),
                        dst.partitions,
                        dst.free_len()
                    ));
                }
            }
            Op::LocalGather { dst, src, index, elems, valid } => {
                if src.partitions != index.partitions || dst.partitions != src.partitions {
                    self.fail("src, index and dst must span the same partitions");
                }
                if src.partitions % 16 != 0 || src.start_partition % 16 != 0 {
                    self.fail("local_gather works on whole groups of 16 partitions (one GpSimd core each)");
                }
                if ![1, 2, 4, 8, 16, 32].contains(elems) {
                    self.fail(format!("elems={elems} (1, 2, 4, 8, 16 or 32)"));
                }
                let max_valid = 16 * index.free_len();
                if u64::from(*valid) > max_valid.min(4096) {
                    self.fail(format!(
                        "valid={valid} exceeds the {} indices a core may use",
                        max_valid.min(4096)
                    ));
                }
                if dst.free_len() != u64::from(*valid) * u64::from(*elems) {
                    self.fail(format!(
                        "dst must have {} elements per partition (valid x elems)",
                        u64::from(*valid) * u64::from(*elems)
                    ));
                }
                if dst.dtype != src.dtype {
                    self.fail("local_gather copies bits: dst dtype must equal src dtype");
                }
                if index.dtype.is_float() {
                    self.fail(format!("index must have an integer dtype, not {}", index.dtype));
                }
            }
            Op::RangeSelect {
                dst, src, bound0, bound1, cmp0, cmp1, reduce, reduce_cmd, ..
            } => {
                if *reduce_cmd == crate::ReduceCmd::LoadReduce {
                    self.fail("reduce_cmd=load_reduce is not accepted by range_select");
                }
                if gen < Generation::V3 {
                    self.fail("range_select needs NeuronCore-v3 or later");
                }
                self.same_shape("src", src, "dst", dst);
                self.per_partition("bound0", bound0, src);
                self.per_partition("bound1", bound1, src);
                if let Some(r) = reduce {
                    self.per_partition("reduce", r, src);
                }
                for (k, c) in [("cmp0", cmp0), ("cmp1", cmp1)] {
                    if !c.is_comparison() || *c == crate::AluOp::Ne {
                        self.fail(format!("{k}={} (eq, lt, le, gt or ge)", c.name()));
                    }
                }
            }
            Op::SelectReduce { dst, predicate, on_true, on_false, reduce, .. } => {
                self.same_shape("predicate", predicate, "dst", dst);
                self.same_shape("on_true", on_true, "dst", dst);
                if predicate.memory == Memory::Psum && on_true.memory == Memory::Psum {
                    self.fail("predicate and on_true cannot both be in PSUM");
                }
                if let ScalarOperand::Vector(v) = on_false {
                    self.per_partition("on_false", v, on_true);
                }
                if let Some(r) = reduce {
                    self.per_partition("reduce", r, on_true);
                }
            }
            Op::BnStats { dst, src } => {
                if src.free_len() == 0 || src.free_len() > 512 {
                    self.fail(format!(
                        "src has {} elements per partition (1 to 512, nl.tile_size.bn_stats_fmax)",
                        src.free_len()
                    ));
                }
                if dst.partitions != src.partitions || dst.free_len() != 6 {
                    self.fail(format!(
                        "dst must be [{}, 6], found [{}, {}]",
                        src.partitions,
                        dst.partitions,
                        dst.free_len()
                    ));
                }
            }
            Op::BnAggr { dst, src } => {
                if src.free_len() == 0 || src.free_len() % 3 != 0 {
                    self.fail(format!(
                        "src has {} elements per partition (a positive multiple of 3: bn_stats triples)",
                        src.free_len()
                    ));
                }
                if dst.partitions != src.partitions || dst.free_len() != 2 {
                    self.fail(format!(
                        "dst must be [{}, 2], found [{}, {}]",
                        src.partitions,
                        dst.partitions,
                        dst.free_len()
                    ));
                }
            }
            Op::TensorScalar { dst, src, stages } => {
                self.same_shape("src", src, "dst", dst);
                if stages.is_empty() || stages.len() > 2 {
                    self.fail(format!("{} stages (1 or 2 allowed)", stages.len()));
                }
                for (i, s) in stages.iter().enumerate() {
                    if let ScalarOperand::Vector(v) = &s.operand {
                        self.per_partition(&format!("operand{i}"), v, src);
                    }
                    let scalar_ok = matches!(s.op, crate::AluOp::Add | crate::AluOp::Multiply);
                    if engine == Engine::Scalar && gen < Generation::V4 && !scalar_ok {
                        self.fail(format!("op{i}={} on the Scalar engine (only add and multiply before NeuronCore-v4)", s.op.name()));
                    }
                }
            }
            Op::TensorReduce { dst, src, axes, .. } => {
                let nd = src.dims.len() as u32;
                if *axes == 0 || *axes > nd {
                    self.fail(format!("axes={axes} but src has {nd} free dims"));
                } else {
                    let kept = pattern_len(&src.dims[..(nd - axes) as usize]);
                    if dst.partitions != src.partitions || dst.free_len() != kept {
                        self.fail(format!(
                            "dst must be [{}, {kept}] after reducing {axes} trailing dims, found [{}, {}]",
                            src.partitions,
                            dst.partitions,
                            dst.free_len()
                        ));
                    }
                }
            }
            Op::TensorCopy { dst, src } => {
                self.same_shape("src", src, "dst", dst);
                if engine == Engine::Scalar && !self.core.scalar_has_tensor_copy() {
                    self.fail("the Scalar engine has no tensor_copy on NeuronCore-v2; use activation func=copy");
                }
            }
            Op::Memset { .. } => {}
            Op::Select { dst, predicate, on_true, on_false } => {
                self.same_shape("predicate", predicate, "dst", dst);
                self.same_shape("on_true", on_true, "dst", dst);
                self.same_shape("on_false", on_false, "dst", dst);
            }
            Op::Activation { dst, src, scale, bias, reduce, .. } => {
                self.same_shape("src", src, "dst", dst);
                if let ScalarOperand::Vector(v) = scale {
                    self.per_partition("scale", v, src);
                }
                if let Some(b) = bias {
                    self.per_partition("bias", b, src);
                }
                if let Some(r) = reduce {
                    self.per_partition("reduce", r, src);
                }
            }
            Op::Iota { dst, affine } => {
                if affine.steps.len() != dst.dims.len() {
                    self.fail(format!(
                        "{} steps for {} free dims of dst",
                        affine.steps.len(),
                        dst.dims.len()
                    ));
                }
            }
            Op::AffineSelect { dst, src, affine, cmp, .. } => {
                if affine.steps.len() != dst.dims.len() {
                    self.fail(format!(
                        "{} steps for {} free dims of dst",
                        affine.steps.len(),
                        dst.dims.len()
                    ));
                }
                if dst.partitions != src.partitions || dst.free_shape() != src.free_shape() {
                    self.fail("dst and src must have the same shape");
                }
                if !cmp.is_comparison() {
                    self.fail(format!("cmp={} is not a comparison", cmp.name()));
                }
            }
        }
    }
}

/// Checks `program` against the rules of `core`, then for data races (conflicting accesses no
/// semaphore orders, see `races.rs`). `Ok` means every instruction is legal and the result does
/// not depend on timing.
pub fn verify(program: &Program, core: &CoreParams) -> Result<(), Violations> {
    verify_rules(program, core)?;
    let races = crate::races::races(program);
    if races.is_empty() {
        Ok(())
    } else {
        Err(Violations(races))
    }
}

/// The hardware rules of [`verify`] without its data-race analysis: for programs whose
/// synchronization is correct by construction (the kernel builder's), before they run.
pub fn verify_rules(program: &Program, core: &CoreParams) -> Result<(), Violations> {
    let mut c = Checker { core, program, index: 0, opcode: "", out: Vec::new() };
    for (i, ins) in program.instructions.iter().enumerate() {
        c.index = i;
        c.opcode = ins.op.name();
        if !ins.op.info().engines.contains(&ins.engine) {
            c.fail(format!("cannot run on the {} engine", ins.engine));
        }
        let sems = core.semaphores.value;
        for s in ins.waits.iter().map(|w| w.semaphore).chain(ins.signals.iter().copied()) {
            if s >= sems {
                c.fail(format!("semaphore S[{s}] does not exist ({sems} per NeuronCore)"));
            }
        }
        c.op(ins.engine, &ins.op);
    }
    if c.out.is_empty() {
        Ok(())
    } else {
        Err(Violations(c.out))
    }
}
