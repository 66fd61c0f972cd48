use std::fmt::Write as _;

use crate::{ActFunc, AluOp, Engine, ReduceOp};

/// One row of the instruction table: the single source of truth for mnemonics, engines, syntax
/// and semantics. `docs/isa.md` is generated from it (a test fails when the file is stale).
#[derive(Debug, Clone, Copy)]
pub struct OpcodeInfo {
    pub name: &'static str,
    /// Engines that may execute it; the first is the default when `engine=` is not given.
    pub engines: &'static [Engine],
    /// Operands, destination first.
    pub operands: &'static str,
    /// Accepted `key=value` options.
    pub options: &'static str,
    /// Exact semantics.
    pub semantics: &'static str,
    /// Operand rules the verifier enforces.
    pub rules: &'static str,
}

use Engine::*;

/// The instruction table.
pub static OPCODES: &[OpcodeInfo] = &[
    OpcodeInfo {
        name: "dma_copy",
        engines: &[Sync, Scalar, Vector, Tensor, GpSimd],
        operands: "dst, src (each an HBM access or an SBUF tile)",
        options: "queue=0..15 (default 0): the issuing engine's DMA queue it runs on",
        semantics: "dst[i] = cast(src[i]) over the row-major element order of both patterns; bit copy when the dtypes match, else src -> fp32 -> dst. The issuing engine only triggers the transfer; `S[k]++` fires when the data has landed.",
        rules: "equal element counts; HBM <-> SBUF, SBUF -> SBUF or HBM -> HBM (no PSUM); in bounds",
    },
    OpcodeInfo {
        name: "nc_matmul",
        engines: &[Tensor],
        operands: "dst (PSUM), stationary [K, M] (SBUF), moving [K, N] (SBUF)",
        options: "accumulate=true|false (default false); double_row=true|false (default false)",
        semantics: "dst[m, n] = (accumulate ? dst[m, n] : 0) + Σ_k stationary[k, m] · moving[k, n]. Inputs are read in their dtype (tf32 operands are rounded to 10 mantissa bits); each product is formed exactly for 8/16-bit and tf32 inputs and rounded to fp32 for fp32 inputs; the column sum is accumulated in fp32, k = 0..K-1 in order (systolic order: assumption), then added to PSUM in fp32. double_row (fp8 perf mode, v3+): stationary is [K, 2·M] and moving [K, 2·N] read as [K, 2, M] and [K, 2, N]; dst[m, n] sums over the partition k and the row r, (k, r) in order k-major (assumption), at the time of a single-row matmul of K partitions.",
        rules: "K = partitions of both inputs <= 128; M <= 128; N <= 512 (v2/v3), 4096 fp32 / 8192 bf16 dst (v4); dst [M, N] fp32 (bf16 also on v4) in one PSUM bank (v2/v3); fp32/tf32 pair only with fp32/tf32; fp8e4m3fn only on v4 and never with fp8e4m3; double_row: v3+, both inputs fp8, even free sizes (2·M, 2·N) with M and N within the limits above",
    },
    OpcodeInfo {
        name: "nc_transpose",
        engines: &[Tensor, Vector],
        operands: "dst, src",
        options: "engine=tensor|vector",
        semantics: "dst[f, p] = src[p, f]. Tensor engine: src SBUF [P <= 128, F <= 128] -> dst PSUM [F, P]; on v2 it is a matmul against the identity in fp32 (not NaN-safe: a NaN or Inf in a column poisons the whole output row), on v3+ bit-exact. Vector engine: <= 32 x 32 within one 32-partition quadrant, bit-exact.",
        rules: "dst partitions = src free size, dst free size = src partitions; equal dtypes (Tensor path may widen to fp32)",
    },
    OpcodeInfo {
        name: "tensor_tensor",
        engines: &[Vector, GpSimd],
        operands: "dst, in0, in1",
        options: "op=ALU_OP",
        semantics: "dst = in0 op in1 elementwise, fp32 math, cast to dst",
        rules: "same partition count and free size; in0 and in1 not both PSUM",
    },
    OpcodeInfo {
        name: "tensor_scalar",
        engines: &[Vector, Scalar, GpSimd],
        operands: "dst, src",
        options: "op0=ALU_OP operand0=IMM|TILE[P,1] [reverse0=true] [op1=ALU_OP operand1=IMM|TILE[P,1] [reverse1=true]]",
        semantics: "x = src; x = x op0 operand0 (operand0 op0 x when reverse0); then the same with op1; dst = cast(x); fp32 math",
        rules: "per-partition operands are [P, 1] tiles with the partitions of src",
    },
    OpcodeInfo {
        name: "tensor_reduce",
        engines: &[Vector],
        operands: "dst, src",
        options: "op=add|max|min [axes=N] [negate=true]",
        semantics: "dst = op over the last N free dims of src (default: all), fp32, left to right in element order (assumption); negated when negate=true",
        rules: "dst free size = product of the kept dims (1 when all are reduced)",
    },
    OpcodeInfo {
        name: "tensor_copy",
        engines: &[Vector, Scalar, GpSimd],
        operands: "dst, src",
        options: "engine=vector|scalar|gpsimd",
        semantics: "dst = src; bit-exact when the dtypes are equal, else cast via fp32",
        rules: "scalar engine only on v3+ (v2: use activation func=copy)",
    },
    OpcodeInfo {
        name: "memset",
        engines: &[Vector, GpSimd],
        operands: "dst",
        options: "value=IMM",
        semantics: "dst = cast(value)",
        rules: "",
    },
    OpcodeInfo {
        name: "select",
        engines: &[Vector],
        operands: "dst, predicate, on_true, on_false",
        options: "",
        semantics: "dst = predicate != 0 ? on_true : on_false elementwise (values pass through fp32)",
        rules: "all operands the same partition count and free size",
    },
    OpcodeInfo {
        name: "activation",
        engines: &[Scalar],
        operands: "dst, src",
        options: "func=ACT_FUNC [scale=IMM|TILE[P,1]] [bias=TILE[P,1]] [reduce=TILE[P,1]]",
        semantics: "dst = f(src · scale + bias), fp32 internal math; with reduce, reduce[p] = Σ_f f(...)[p, f] in fp32 before the cast to dst",
        rules: "bias, scale and reduce tiles are [P, 1] with the partitions of src",
    },
    OpcodeInfo {
        name: "iota",
        engines: &[GpSimd],
        operands: "dst",
        options: "base=INT channel_multiplier=INT steps=[INT, ...]",
        semantics: "dst[p, i] = base + channel_multiplier · p + Σ_j steps[j] · i_j in int32 math, cast to dst",
        rules: "one step per free dim of dst",
    },
    OpcodeInfo {
        name: "affine_select",
        engines: &[GpSimd],
        operands: "dst, src",
        options: "cmp=CMP_OP base=INT channel_multiplier=INT steps=[INT, ...] on_false=IMM",
        semantics: "dst[p, i] = cmp(base + channel_multiplier · p + Σ_j steps[j] · i_j, 0) ? src[p, i] : on_false (e.g. a causal mask)",
        rules: "one step per free dim; dst and src the same shape",
    },
    OpcodeInfo {
        name: "tensor_tensor_scan",
        engines: &[Vector],
        operands: "dst, in0, in1",
        options: "op0=ALU_OP op1=ALU_OP initial=IMM|TILE[P,1] [reverse0=true] [reverse1=true]",
        semantics: "per partition, along the row-major element order: x[-1] = initial, x[i] = op1(op0(in0[i], x[i-1]), in1[i]) (reverse0: op0(x[i-1], in0[i]); reverse1: op1(in1[i], ...)), fp32 math with x carried in fp32 (assumption), dst[i] = cast(x[i])",
        rules: "in0, in1 and dst the same partition count and free size; in0 and in1 not both PSUM; a tile initial is [P, 1]",
    },
    OpcodeInfo {
        name: "bn_stats",
        engines: &[Vector],
        operands: "dst [P, 6], src [P, N <= 512]",
        options: "",
        semantics: "per partition: (count, mean, variance * count) of the even-indexed elements of src, then of the odd-indexed ones, in fp32 (two-pass: mean, then the sum of squared deviations, left to right; assumption), cast to dst",
        rules: "src free size 1..=512 (nl.tile_size.bn_stats_fmax); dst the partitions of src and 6 elements",
    },
    OpcodeInfo {
        name: "bn_aggr",
        engines: &[Vector],
        operands: "dst [P, 2], src [P, 3k]",
        options: "",
        semantics: "per partition, from k triples (count, mean, variance * count): n = Σ count, mean = Σ count·mean / n, variance = (Σ variance·count + Σ count·(mean_j - mean)²) / n (population variance), fp32, cast to dst = [mean, variance]; groups with count 0 are skipped",
        rules: "src free size a positive multiple of 3; dst the partitions of src and 2 elements",
    },
    OpcodeInfo {
        name: "scalar_tensor_tensor",
        engines: &[Vector],
        operands: "dst, src, in1",
        options: "op0=ALU_OP operand0=IMM|TILE[P,1] op1=ALU_OP [reverse0=true] [reverse1=true]",
        semantics: "dst = (src op0 operand0) op1 in1 elementwise, fp32 math rounded after each operator, cast to dst (reverse0: operand0 op0 src; reverse1: in1 op1 x)",
        rules: "src, in1 and dst the same partition count and free size; src and in1 not both PSUM; a tile operand0 is [P, 1]",
    },
    OpcodeInfo {
        name: "tensor_scalar_reduce",
        engines: &[Vector],
        operands: "dst, src",
        options: "op0=ALU_OP operand0=IMM|TILE[P,1] [reverse0=true] reduce_op=add|max|min reduce=TILE[P,1]",
        semantics: "y = src op0 operand0 (fp32), dst = cast(y); reduce[p] = reduce_op over y[p, :] in fp32 before the cast, left to right (assumption)",
        rules: "src and dst the same shape; operand0 and reduce [P, 1] with the partitions of src",
    },
    OpcodeInfo {
        name: "max8",
        engines: &[Vector],
        operands: "dst [P, 8], src [P, 8..=16384]",
        options: "",
        semantics: "per partition, the 8 largest values of src (read as fp32) in descending order, cast to dst; NaNs order below every number (assumption)",
        rules: "src 8 to 16384 elements per partition; dst the partitions of src and 8 elements",
    },
    OpcodeInfo {
        name: "nc_find_index8",
        engines: &[Vector],
        operands: "dst [P, 8], data [P, 8..=16384], vals [P, 8]",
        options: "",
        semantics: "per partition, dst[p, j] = the index (from 0, row-major over data's pattern) of the first element of data equal to vals[p, j] (fp32 comparison); a value not present gives 2^32 - 1 saturated to dst's dtype (the hardware's result is undefined)",
        rules: "data 8 to 16384 elements per partition; vals and dst [P, 8] with the partitions of data; dst an integer dtype",
    },
    OpcodeInfo {
        name: "reciprocal",
        engines: &[Vector],
        operands: "dst, src",
        options: "",
        semantics: "dst = 1 / src elementwise, correctly rounded fp32 division (the engine's approximation is unpublished: assumption), cast to dst",
        rules: "src and dst the same partition count and free size",
    },
    OpcodeInfo {
        name: "range_select",
        engines: &[Vector],
        operands: "dst, src, bound0 [P, 1], bound1 [P, 1]",
        options: "cmp0=CMP_OP cmp1=CMP_OP [range_start=INT] [on_false=IMM] [reduce_cmd=idle|reset|reduce|reset_reduce] [reduce=TILE[P,1]]",
        semantics: "x = range_start + i (i the row-major element index, fp32); dst[p, i] = cmp0(x, bound0[p]) and cmp1(x, bound1[p]) ? src[p, i] : on_false (default -3.4028235e38, FP32_MIN), cast to dst. The engine's per-partition accumulator registers: reset sets them to -inf, reduce folds in max_i dst_fp32[p, i], reset_reduce sets them to it, idle leaves them; reduce receives them afterwards (v3+)",
        rules: "v3+; src and dst the same shape; bound0, bound1 and reduce [P, 1]; cmp ops eq, lt, le, gt, ge",
    },
    OpcodeInfo {
        name: "select_reduce",
        engines: &[Vector],
        operands: "dst, predicate, on_true",
        options: "on_false=IMM|TILE[P,1] [reverse=true] [reduce_cmd=idle|reset|reduce|reset_reduce] [reduce=TILE[P,1]]",
        semantics: "dst = (predicate != 0) xor reverse ? on_true : on_false, values through fp32, cast to dst; the row maxima go to the accumulator registers by reduce_cmd as in range_select, and reduce receives them afterwards",
        rules: "predicate, on_true and dst the same shape; predicate and on_true not both PSUM; on_false and reduce [P, 1]",
    },
    OpcodeInfo {
        name: "local_gather",
        engines: &[GpSimd],
        operands: "dst [P, valid * elems], src [P, F], index [P, K] (integer)",
        options: "elems=1|2|4|8|16|32 valid=INT",
        semantics: "each GpSimd core serves 16 partitions: its indices are index[g*16 + q, k] read q-minor, k-major (partition first), the first `valid` of them; dst[p, j*elems + e] = src[p, idx[j] + e] for the partitions p of the group, a bit copy (an index past the row is an error; undefined on hardware)",
        rules: "src, index and dst the same partitions, a multiple of 16 starting at a multiple of 16; elems in 1, 2, 4, 8, 16, 32; valid <= 16 * K and <= 4096; dst free size valid * elems and dst dtype = src dtype; index an integer dtype",
    },
    OpcodeInfo {
        name: "tensor_partition_reduce",
        engines: &[GpSimd],
        operands: "dst [1, F], src [P, F]",
        options: "op=add|max|min",
        semantics: "dst[0, i] = op over the partitions of src of src[p, i], fp32, partitions in ascending order (assumption), cast to dst",
        rules: "dst one partition with the free size of src",
    },
    OpcodeInfo {
        name: "dma_indirect",
        engines: &[Sync, Scalar, Vector, Tensor, GpSimd],
        operands: "dst, src (one an HBM access, the other an SBUF tile of R partitions), index [R, 1] (SBUF, integer)",
        options: "[oob=error|skip] [accumulate=true] [rows=INT] [queue=0..15]",
        semantics: "as dma_copy, except that the HBM side's outer dimension is indexed: transfer row r (partition r of the tile) uses HBM element offset + index[r] * outer stride. An index outside [0, rows) (rows=0: anywhere in the tensor) or a row outside the tensor is an error (oob=error, the default) or is skipped (oob=skip); accumulate adds into dst (scatter-add: fp32 for floats, exact for integers) instead of overwriting; indices are read exactly as integers",
        rules: "exactly one HBM side whose outer dim has R rows; the tile side R partitions; index [R, 1], integer dtype, in SBUF; equal element counts; no PSUM",
    },
    OpcodeInfo {
        name: "tensor_scalar_cumulative",
        engines: &[Vector],
        operands: "dst, src",
        options: "op0=ALU_OP operand0=IMM|TILE[P,1] [reverse0=true] op1=add|subtract|multiply|max|min [reduce_cmd=reset_reduce|reduce|load_reduce] [init=IMM|TILE[P,1]]",
        semantics: "per partition along the row-major elements: reg = op1(src[i] op0 operand0, reg) (reverse0: operand0 op0 src[i]), dst[i] = cast(reg), fp32; reg is the Vector engine's accumulator register, starting at op1's identity (reset_reduce, the default: 0 for add/subtract, 1 for multiply, -inf for max, +inf for min), at init (load_reduce) or where the last accumulating instruction left it (reduce)",
        rules: "src and dst the same shape; op1 add, subtract, multiply, max or min; load_reduce needs init; operand0 and init [P, 1]; no int32/uint32 operands",
    },
    OpcodeInfo {
        name: "nc_stream_shuffle",
        engines: &[Vector],
        operands: "dst, src",
        options: "mask=[INT x 32] (each 0..=31, or 255: leave unmodified)",
        semantics: "within each quadrant q of 32 partitions, dst partition q*32 + i (from dst's first) = src partition q*32 + mask[i] (from src's first), bit copy; src is read whole before dst is written (in place allowed); mask[i] = 255 leaves dst partition q*32 + i unmodified",
        rules: "equal dtypes and free sizes; 32 mask entries each < 32 or 255; every selected src partition inside src",
    },
    OpcodeInfo {
        name: "nc_match_replace8",
        engines: &[Vector],
        operands: "dst, data [P, 8..=16384], vals [P, 8]",
        options: "imm=IMM [indices=TILE[P,8]]",
        semantics: "per partition, for j = 0..7 in order: the first element of the data (as replaced so far, fp32 comparison) equal to vals[j] becomes imm, and indices[j] = its row-major index (0 when there is none); dst = the replaced data cast to dst",
        rules: "data and dst the same shape, 8 to 16384 elements per partition; vals and indices [P, 8]; indices an integer dtype",
    },
    OpcodeInfo {
        name: "gather",
        engines: &[GpSimd],
        operands: "dst [P, K], src [P, N], index [P, K] (integer)",
        options: "",
        semantics: "per partition, dst[p, j] = src[p, index[p, j]] over the row-major flattened free elements, a bit copy (nl.gather_flattened); an index past the row is an error (garbage on hardware)",
        rules: "the same partitions; dst free size = index free size; dst dtype = src dtype; index an integer dtype",
    },
    OpcodeInfo {
        name: "sequence_bounds",
        engines: &[GpSimd],
        operands: "dst [P, 2, N], src [P, N]",
        options: "",
        semantics: "per partition, with s the segment ids: dst[p, 0, i] = the index of the first element of the run of equal ids containing i, dst[p, 1, i] = one past its last; an id of 0 is padding with bounds (N, -1); cast to dst",
        rules: "dst the partitions of src and 2N elements",
    },
    OpcodeInfo {
        name: "dropout",
        engines: &[Vector],
        operands: "dst, src",
        options: "prob=IMM|TILE[P,1] [seed=INT]",
        semantics: "dst[p, i] = u(p, i) < prob[p] ? 0 : src[p, i], u uniform in [0, 1) from a counter-based generator (SplitMix64 of seed, partition, element): deterministic, and not the engine's RNG stream (assumption)",
        rules: "src and dst the same shape; a tile prob is [P, 1]",
    },
    OpcodeInfo {
        name: "exponential",
        engines: &[Vector],
        operands: "dst, src",
        options: "[max=IMM|TILE[P,1]] [reduce_cmd=idle|reset|reduce|reset_reduce|load_reduce] [init=IMM|TILE[P,1]] [reduce=TILE[P,1]]",
        semantics: "dst[p, i] = cast(exp(src[p, i] - max[p])) in fp32 (max defaults to 0); the Vector engine's accumulator register of each partition then holds: idle (the default) its value, reset 0, reduce its value plus the sum of the fp32 exponentials in element order, reset_reduce that sum from 0, load_reduce that sum from init; reduce (optional) receives the registers. NeuronCore-v4's fast exponential [N-arch4]",
        rules: "NeuronCore-v4 or later; src and dst the same shape; max, init and reduce [P, 1]; init only with load_reduce, which needs it",
    },
    OpcodeInfo {
        name: "nc_matmul_mx",
        engines: &[Tensor],
        operands: "dst (PSUM), stationary [K, M] x4 (SBUF), moving [K, N] x4 (SBUF), stationary_scale u8 (SBUF), moving_scale u8 (SBUF)",
        options: "accumulate=true|false (default false)",
        semantics: "MX matmul (OCP Microscaling v1.0): dst[m, n] = (accumulate ? dst[m, n] : 0) + Σ_{k, q} s[k, m, q] · v[k, n, q], where s[k, m, q] is element q of the packed stationary element [k, m] times 2^(scale − 127) of its group's stationary_scale byte, dequantized into fp32 (round to nearest even), and likewise v. A group is 8 partitions × one packed element (32 values); the scale of data partition p is in scale partition 32·(p / 32) + (p % 32) / 8 (the first four partitions of each quadrant), free index as the data's. Products are rounded to fp32 (exact unless they leave fp32's range) and summed in fp32 in the order (k, q), k-major, from +0 (assumption, as nc_matmul); scale byte 255 (NaN in e8m0) makes its group NaN. Four times the contraction of a bf16 nc_matmul in the same time [N-arch4].",
        rules: "NeuronCore-v4 or later; stationary and moving fp8e5m2x4, fp8e4m3fnx4 or fp4e2m1fnx4 (may differ); K = partitions of both, a multiple of 32 up to 128, starting on a quadrant; M <= 128 and even; N within nc_matmul's v4 limits; dst [M, N] f32 or bf16 in PSUM; scales u8 with K / 8 partitions (K = 32) or K partitions, and M (N) free elements",
    },
    OpcodeInfo {
        name: "quantize_mx",
        engines: &[Vector],
        operands: "dst [P, F] fp8e5m2x4 or fp8e4m3fnx4 (SBUF), src [P, 4·F] bf16 or f16 (SBUF), scale u8 (SBUF)",
        options: "",
        semantics: "For each group of 8 partitions × 4 consecutive elements of src (packed element j of dst): amax = max |x|, X = 2^(⌊log2 amax⌋ − (E_max − 1)) with E_max 15 (e5m2) or 8 (e4m3fn), the scale byte ⌊log2 X⌋ + 127 clamped to 0..254 (an all-zero group gets 0, X = 2^-127; a group with NaN or Inf gets 255 and NaN data: assumption), dst element q of [p, j] = the element format's saturating round-to-nearest-even of src[p, 4j + q] / X. X is twice the OCP sample algorithm's, so the largest value of a group never saturates [N-isa `quantize_mx`]. Scales go where nc_matmul_mx reads them.",
        rules: "NeuronCore-v4 or later; P a multiple of 32 up to 128, starting on a quadrant; src free size 4× dst's; scale u8 with P / 8 partitions (P = 32) or P partitions, and F free elements",
    },
    OpcodeInfo {
        name: "dma_transpose",
        engines: &[Sync, Scalar, Vector, Tensor, GpSimd],
        operands: "dst [F, P] (SBUF), src [P, F] (SBUF)",
        options: "queue=0..15 (default 0): the issuing engine's DMA queue it runs on",
        semantics: "dst[f, p] = src[p, f], a bit copy, by the DMA engines' hardware transpose (hardware DGE) [N-arch3, N-isa `dma_transpose`]; the issuing engine only triggers it, `S[k]++` fires when the data has landed. Moves its bytes at a fraction of a copy's rate (SBUF to SBUF: up to 50 % on Trn2 [N-arch3]).",
        rules: "NeuronCore-v3 or later (v2 has no hardware DGE: transposes by DMA are element-granular dma_copy); both tiles SBUF, equal 2- or 4-byte dtypes; src partitions a multiple of 16 (the hardware transposes blocks of 16 source rows into 16 contiguous elements of each dst partition [N-isa `dma_transpose`, N-arch3]); dst partitions = src free size, dst free size = src partitions",
    },
];

/// The table row of `name`.
pub fn opcode(name: &str) -> Option<&'static OpcodeInfo> {
    OPCODES.iter().find(|o| o.name == name)
}

/// Markdown reference generated from the table (committed as `docs/isa.md`).
pub fn isa_markdown() -> String {
    let mut s = String::new();
    s.push_str("# Rainier NeuronCore instruction set\n\n");
    s.push_str("Generated from `crates/rainier-isa/src/table.rs` by `cargo run -- isa`; do not edit by hand (a test compares).\n");
    s.push_str("Syntax of operands, options and semaphores: `docs/assembly.md`.\n\n");
    s.push_str(
        "| instruction | engines (default first) | operands | options |\n|---|---|---|---|\n",
    );
    for o in OPCODES {
        let engines: Vec<&str> = o.engines.iter().map(|e| e.name()).collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            o.name,
            engines.join(", "),
            o.operands,
            if o.options.is_empty() { "–" } else { o.options }
        );
    }
    for o in OPCODES {
        let _ = write!(s, "\n## `{}`\n\n{}\n", o.name, o.semantics);
        if !o.rules.is_empty() {
            let _ = writeln!(s, "\nRules: {}.", o.rules);
        }
    }
    let names = |v: Vec<&str>| v.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    s.push_str("\n## Operators and functions\n\n");
    let _ = writeln!(s, "- ALU_OP: {}", names(AluOp::ALL.iter().map(|o| o.name()).collect()));
    let cmps = AluOp::ALL.iter().filter(|o| o.is_comparison()).map(|o| o.name()).collect();
    let _ = writeln!(s, "- CMP_OP: {}", names(cmps));
    let _ = writeln!(s, "- reduce op: {}", names(ReduceOp::ALL.iter().map(|o| o.name()).collect()));
    let _ = writeln!(
        s,
        "- ACT_FUNC: {} (`copy` is an alias of `identity`)",
        names(ActFunc::ALL.iter().map(|f| f.name()).collect())
    );
    s
}
