//! A whole decoder layer's backward pass as one NeuronCore program, the counterpart of
//! [`decoder_layer`](crate::decoder_layer): the library kernels' backward passes emitted into
//! one [`KernelBuilder`], on one rank's share (after tensor parallelism), from what the forward
//! pass keeps (no recompute) to the input gradient and every weight gradient:
//!
//! ```text
//! MLP (y = h + a·Wd, a = silu(g)·u)              attention (h = x + o·Wo)
//! dzᵀ, Wdᵀ, a         (TensorE transposes)       dhᵀ, Woᵀ, o        (transposes)
//! daᵀ  = Wd · dzᵀ                [F, T]          doᵀ  = Wo · dhᵀ            [nh·d, T]
//! dWd  = aᵀ · dz                 [F, H]          dWo  = oᵀ · dh             [nh·d, H]
//! [dg; du]ᵀ = swiglu-bwd(gᵀ, uᵀ, daᵀ) [2F, T]    dq, dk, dv = attention-bwd per sequence
//! dhn  = [dg du] · [Wg Wu]ᵀ      [T, H]          [dq; dk]ᵀ ← rope backward (sin negated)
//! dWgu = hnᵀ · [dg du]           [H, 2F]         dxn  = dqkv · Wqkvᵀ        [T, H]
//! dh   = dy + rmsnorm-bwd(h, dhn)                dWqkv = xnᵀ · dqkv         [H, qkv]
//!                                                dx   = dh + rmsnorm-bwd(x, dxn)
//! ```
//!
//! Each linear layer's backward is two GEMMs: the input gradient contracts over the output
//! features (the gradient feature-major, the weight transposed), the weight gradient over the
//! tokens (both operands token-major), so the gradients and saved activations are transposed
//! on TensorE between them, as in the forward program. Rope's backward is rope with `−sin`:
//! `(C + S·R)ᵀ = C − R·S`, and `R·S = S·R` because Llama's tables repeat each frequency in both
//! halves of the head. Weight gradients are fp32 (NxD and Megatron accumulate them in fp32),
//! written once (accumulation over micro-batches, a read-modify-write, is not in the program).
//! With sequence parallelism the all-gathers of `dy` and `dh` and the reduce-scatters of `dhn`
//! and `dxn` are collective sides, as in the forward: `dy_received`, `dh_received`,
//! `dhn_received`, `dxn_received` inputs and `dhn_sent`, `dxn_sent` outputs.

use rainier_arch::ChipParams;
use rainier_isa::Program;
use rainier_tensor::DType;

use crate::attention::HeadLayout;
use crate::attention_bwd::{attention_backward_into, AttentionGradTensors};
use crate::gemm::{gemm_into, GemmTensors};
use crate::layer::{check_dtype, rope_into, transpose_into, whole, LayerWeights, Parts};
use crate::rowwise::{elementwise_into, Elementwise};
use crate::rowwise_bwd::{rmsnorm_backward_into, swiglu_backward_into, NormGradTensors};
use crate::LayerShape;
use crate::{AttentionShape, Composition, KernelBuilder, KernelError, LayerProgram};

/// The decoder layer backward program. Inputs, what the forward keeps: `x`, `h` (the residual
/// after attention) `[T/sp, H]`; `xn`, `hn` (the normalized inputs after the all-gathers)
/// `[T, H]`; `qk_rope [(nh + nkv)·d, T]` (rotated q and k heads, feature-major),
/// `v_t [nkv·d, T]`, `o_t [nh·d, T]`, `lse [nh, T]` (fp32, attention's log-sum-exp);
/// `g_t`, `u_t`, `a_t [F, T]`; the weights as [`decoder_layer`](crate::decoder_layer) takes
/// them; `cos`, `neg_sin [d, T]`; and `dy [T/sp, H]`. Outputs: `dx [T/sp, H]` in `dtype`; fp32
/// `d_attn_norm`, `d_mlp_norm [H]` (this rank's share of the tokens), `dwqkv [H, qkv]`,
/// `dwo [nh·d, H]`, `dwgu [H, 2F]` (gate columns, then up columns), `dwd [F, H]`.
pub fn decoder_layer_backward(
    chip: impl Into<ChipParams>,
    shape: &LayerShape,
    dtype: DType,
    composition: Composition,
) -> Result<Program, KernelError> {
    Ok(decoder_layer_backward_parts(chip, shape, dtype, composition)?.program)
}

/// [`decoder_layer_backward`] with its parts.
pub fn decoder_layer_backward_parts(
    chip: impl Into<ChipParams>,
    shape: &LayerShape,
    dtype: DType,
    composition: Composition,
) -> Result<LayerProgram, KernelError> {
    shape.check()?;
    check_dtype(dtype)?;
    let mut kb = KernelBuilder::new(chip);
    let LayerShape { hidden: h, heads: nh, kv_heads: nkv, head_dim: d, ffn: f, .. } = *shape;
    let t = shape.tokens();
    let (qk, qkv) = ((nh + nkv) * d, (nh + 2 * nkv) * d);
    let local = t / shape.sequence_parallel;
    let sp = shape.sequence_parallel > 1;
    let f32 = DType::F32;
    let input = |kb: &mut KernelBuilder, name: &str, shape: &[u64]| kb.input(name, dtype, shape);
    let x = input(&mut kb, "x", &[local, h])?;
    let LayerWeights { attn_norm, wqkv, wo, mlp_norm, wg, wu, wd } =
        LayerWeights::declare(&mut kb, shape, dtype)?;
    let xn = input(&mut kb, "xn", &[t, h])?;
    let qk_rope = input(&mut kb, "qk_rope", &[qk, t])?;
    let v_t = input(&mut kb, "v_t", &[nkv * d, t])?;
    let o_t = input(&mut kb, "o_t", &[nh * d, t])?;
    let lse = kb.input("lse", f32, &[nh, t])?;
    let res = input(&mut kb, "h", &[local, h])?;
    let hn = input(&mut kb, "hn", &[t, h])?;
    let g_t = input(&mut kb, "g_t", &[f, t])?;
    let u_t = input(&mut kb, "u_t", &[f, t])?;
    let a_t = input(&mut kb, "a_t", &[f, t])?;
    let cos = input(&mut kb, "cos", &[d, t])?;
    let neg_sin = input(&mut kb, "neg_sin", &[d, t])?;
    let dy = input(&mut kb, "dy", &[local, h])?;
    let dx = kb.output("dx", dtype, &[local, h])?;
    let d_attn_norm = kb.output("d_attn_norm", f32, &[h])?;
    let dwqkv = kb.output("dwqkv", f32, &[h, qkv])?;
    let dwo = kb.output("dwo", f32, &[nh * d, h])?;
    let d_mlp_norm = kb.output("d_mlp_norm", f32, &[h])?;
    let dwgu = kb.output("dwgu", f32, &[h, 2 * f])?;
    let dwd = kb.output("dwd", f32, &[f, h])?;
    let scratch =
        |kb: &mut KernelBuilder, name: &str, shape: &[u64]| kb.scratch(name, dtype, shape);
    // An all-gather's output: the received side, or the local tensor itself.
    let gathered = |kb: &mut KernelBuilder, name: &str, local_tensor: usize| {
        if sp {
            kb.input(&format!("{name}_received"), dtype, &[t, h])
        } else {
            Ok(local_tensor)
        }
    };
    // A reduce-scatter's (input, output).
    let scattered = |kb: &mut KernelBuilder, name: &str| {
        if !sp {
            let both = kb.scratch(name, dtype, &[t, h])?;
            return Ok::<(usize, usize), KernelError>((both, both));
        }
        let sent = kb.output(&format!("{name}_sent"), dtype, &[t, h])?;
        Ok((sent, kb.input(&format!("{name}_received"), dtype, &[local, h])?))
    };
    let gemm = |kb: &mut KernelBuilder, (a, b, c): (usize, usize, usize), mnk, out| {
        let (m, n, k) = mnk;
        gemm_into(kb, GemmTensors { a, b, scales: None, c }, m, n, k, dtype, out)
    };
    let heads_of = |heads: u64| (HeadLayout::rows_of(t, d), heads, t, d);
    let mut parts = Parts::new(composition);
    let mut end_part = |kb: &mut KernelBuilder, name| parts.end(kb, name);

    // MLP block: y = h + a · Wd.
    let dz = gathered(&mut kb, "dy", dy)?;
    let dz_t = scratch(&mut kb, "dz_t", &[h, t])?;
    transpose_into(&mut kb, (dz, dz_t, 0), whole(t, h), dtype)?;
    end_part(&mut kb, "transpose_dz");
    let wd_t = scratch(&mut kb, "wd_t", &[h, f])?;
    transpose_into(&mut kb, (wd, wd_t, 0), whole(f, h), dtype)?;
    end_part(&mut kb, "transpose_wd");
    let da_t = scratch(&mut kb, "da_t", &[f, t])?;
    gemm(&mut kb, (wd_t, dz_t, da_t), (f, t, h), dtype)?;
    end_part(&mut kb, "mlp_down_dgrad");
    let a = scratch(&mut kb, "a", &[t, f])?;
    transpose_into(&mut kb, (a_t, a, 0), whole(f, t), dtype)?;
    end_part(&mut kb, "transpose_a");
    gemm(&mut kb, (a, dz, dwd), (f, h, t), f32)?;
    end_part(&mut kb, "mlp_down_wgrad");
    let dgu_t = scratch(&mut kb, "dgu_t", &[2 * f, t])?;
    let swiglu = [(g_t, 0), (u_t, 0), (da_t, 0), (dgu_t, 0), (dgu_t, f * t)];
    swiglu_backward_into(&mut kb, swiglu, f, t, dtype)?;
    end_part(&mut kb, "mlp_act");
    let wgu_t = scratch(&mut kb, "wgu_t", &[2 * f, h])?;
    transpose_into(&mut kb, (wg, wgu_t, 0), whole(h, f), dtype)?;
    transpose_into(&mut kb, (wu, wgu_t, f * h), whole(h, f), dtype)?;
    end_part(&mut kb, "transpose_wgu");
    let (dhn, dhn_local) = scattered(&mut kb, "dhn")?;
    gemm(&mut kb, (dgu_t, wgu_t, dhn), (t, h, 2 * f), dtype)?;
    end_part(&mut kb, "mlp_up_dgrad");
    let dgu = scratch(&mut kb, "dgu", &[t, 2 * f])?;
    transpose_into(&mut kb, (dgu_t, dgu, 0), whole(2 * f, t), dtype)?;
    end_part(&mut kb, "transpose_dgu");
    gemm(&mut kb, (hn, dgu, dwgu), (h, 2 * f, t), f32)?;
    end_part(&mut kb, "mlp_up_wgrad");
    let dres_norm = scratch(&mut kb, "dres_norm", &[local, h])?;
    let norm =
        NormGradTensors { x: res, w: mlp_norm, dy: dhn_local, dx: dres_norm, dw: d_mlp_norm };
    rmsnorm_backward_into(&mut kb, norm, local, h, dtype)?;
    end_part(&mut kb, "post_norm");
    let dres = scratch(&mut kb, "dh", &[local, h])?;
    elementwise_into(&mut kb, Elementwise::Add, [dy, dres_norm, dres], local, h, dtype)?;
    end_part(&mut kb, "residual_add");

    // Attention block: h = x + o · Wo.
    let dattn = gathered(&mut kb, "dh", dres)?;
    let dattn_t = scratch(&mut kb, "dattn_t", &[h, t])?;
    transpose_into(&mut kb, (dattn, dattn_t, 0), whole(t, h), dtype)?;
    end_part(&mut kb, "transpose_dattn");
    let wo_t = scratch(&mut kb, "wo_t", &[h, nh * d])?;
    transpose_into(&mut kb, (wo, wo_t, 0), whole(nh * d, h), dtype)?;
    end_part(&mut kb, "transpose_wo");
    let do_t = scratch(&mut kb, "do_t", &[nh * d, t])?;
    gemm(&mut kb, (wo_t, dattn_t, do_t), (nh * d, t, h), dtype)?;
    end_part(&mut kb, "out_proj_dgrad");
    let o = scratch(&mut kb, "o", &[t, nh * d])?;
    transpose_into(&mut kb, (o_t, o, 0), whole(nh * d, t), dtype)?;
    end_part(&mut kb, "transpose_o");
    gemm(&mut kb, (o, dattn, dwo), (nh * d, h, t), f32)?;
    end_part(&mut kb, "out_proj_wgrad");
    let dq = scratch(&mut kb, "dq", &[nh, t, d])?;
    let dk = scratch(&mut kb, "dk", &[nkv, t, d])?;
    let dv = scratch(&mut kb, "dv", &[nkv, t, d])?;
    for b in 0..shape.batch {
        let s0 = b * shape.seq;
        // Per head `[d, seq]` of a feature-major `[heads·d, T]` tensor from row `row0`.
        let features =
            |row0: u64| HeadLayout { base: row0 * t + s0, head_stride: d * t, row_stride: t };
        let positions = HeadLayout { base: s0 * d, head_stride: t * d, row_stride: d };
        let tensors = AttentionGradTensors {
            q: (qk_rope, features(0)),
            k: (qk_rope, features(nh * d)),
            v: (v_t, features(0)),
            o: (o_t, features(0)),
            dout: (do_t, features(0)),
            lse: (lse, HeadLayout { base: s0, head_stride: t, row_stride: 1 }),
            dq: (dq, positions),
            dk: (dk, positions),
            dv: (dv, positions),
        };
        let one_sequence = AttentionShape { batch: 1, ..shape.attention() };
        attention_backward_into(&mut kb, &tensors, &one_sequence, dtype, (None, None))?;
    }
    end_part(&mut kb, "attention");
    let drot_t = scratch(&mut kb, "drot_t", &[qk, t])?;
    let dqkv_t = scratch(&mut kb, "dqkv_t", &[qkv, t])?;
    transpose_into(&mut kb, (dq, drot_t, 0), heads_of(nh), dtype)?;
    transpose_into(&mut kb, (dk, drot_t, nh * d * t), heads_of(nkv), dtype)?;
    transpose_into(&mut kb, (dv, dqkv_t, qk * t), heads_of(nkv), dtype)?;
    end_part(&mut kb, "transpose_dqkv_heads");
    rope_into(&mut kb, [drot_t, cos, neg_sin, dqkv_t], nh + nkv, d, t, dtype)?;
    end_part(&mut kb, "rope");
    let wqkv_t = scratch(&mut kb, "wqkv_t", &[qkv, h])?;
    transpose_into(&mut kb, (wqkv, wqkv_t, 0), whole(h, qkv), dtype)?;
    end_part(&mut kb, "transpose_wqkv");
    let (dxn, dxn_local) = scattered(&mut kb, "dxn")?;
    gemm(&mut kb, (dqkv_t, wqkv_t, dxn), (t, h, qkv), dtype)?;
    end_part(&mut kb, "qkv_proj_dgrad");
    let dqkv = scratch(&mut kb, "dqkv", &[t, qkv])?;
    transpose_into(&mut kb, (dqkv_t, dqkv, 0), whole(qkv, t), dtype)?;
    end_part(&mut kb, "transpose_dqkv");
    gemm(&mut kb, (xn, dqkv, dwqkv), (h, qkv, t), f32)?;
    end_part(&mut kb, "qkv_proj_wgrad");
    let dx_norm = scratch(&mut kb, "dx_norm", &[local, h])?;
    let norm = NormGradTensors { x, w: attn_norm, dy: dxn_local, dx: dx_norm, dw: d_attn_norm };
    rmsnorm_backward_into(&mut kb, norm, local, h, dtype)?;
    end_part(&mut kb, "input_norm");
    elementwise_into(&mut kb, Elementwise::Add, [dres, dx_norm, dx], local, h, dtype)?;
    end_part(&mut kb, "residual_add");
    parts.finish(kb)
}
