//! The whole decoder-layer program against a plain f64 Llama layer (rmsnorm, projections,
//! rotate-half rope, causal grouped-query attention, SwiGLU MLP, residuals) on fresh random
//! inputs, and its timing: overlapped kernels beat the same kernels run one after another.
//! The backward program against the same layer's backward by hand in f64 (from the f64
//! forward's saved activations, rounded to the program's dtype), every gradient checked.
//!
//! Tolerance: `max |y − want| <= tol · rms(want)`, tol = 2^-16 for fp32 (a few hundred fp32
//! roundings deep, exp and rsqrt) and 2^-4 for bf16 (every kernel rounds its output to bf16:
//! about twelve hand-offs of 2^-9 relative each, amplified through softmax and the MLP).
//! Backward: 2^-14 for fp32 (about twice as deep; seen: 2^-17) and 2^-3 for bf16 (the saved
//! activations rounded to bf16 as well, and twice the hand-offs; seen: up to 2^-4.5 on dx).
// A test binary: a panic is a failure, and the printed seed replays it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;

use rainier_arch::Chip;
use rainier_kernels::{
    decoder_layer, decoder_layer_backward, Composition, LayerShape, RMSNORM_EPS,
};
use rainier_tensor::{DType, HostTensor};
use rand::{Rng, SeedableRng};

type Inputs = BTreeMap<String, HostTensor>;

fn random(dtype: DType, shape: &[u64], scale: f32, rng: &mut rand::rngs::StdRng) -> HostTensor {
    let n: u64 = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-scale..scale)).collect();
    let dims: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
    HostTensor::from_f32(dtype, &dims, &v)
}

/// `cos`/`sin [d, T]`: Llama's rope angles `pos · 10000^(−2i/d)` with `i = j mod d/2`.
fn rope_tables(s: &LayerShape, dtype: DType) -> (HostTensor, HostTensor) {
    let (d, t) = (s.head_dim as usize, s.tokens() as usize);
    let angle = |j: usize, tok: usize| {
        let pos = (tok % s.seq as usize) as f64;
        pos * 10000f64.powf(-2.0 * (j % (d / 2)) as f64 / d as f64)
    };
    let table = |f: fn(f64) -> f64| {
        let v: Vec<f32> = (0..d * t).map(|i| f(angle(i / t, i % t)) as f32).collect();
        HostTensor::from_f32(dtype, &[d, t], &v)
    };
    (table(f64::cos), table(f64::sin))
}

fn inputs(s: &LayerShape, dtype: DType, seed: u64) -> Inputs {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (t, h, d, f) = (s.tokens(), s.hidden, s.head_dim, s.ffn);
    let (nh, nkv) = (s.heads, s.kv_heads);
    let w = |k: u64| 1.0 / (k as f32).sqrt();
    let mut m = Inputs::new();
    m.insert("x".into(), random(dtype, &[t, h], 1.0, &mut rng));
    m.insert("attn_norm".into(), random(dtype, &[h], 1.5, &mut rng));
    m.insert("wqkv".into(), random(dtype, &[h, (nh + 2 * nkv) * d], 2.0 * w(h), &mut rng));
    m.insert("wo".into(), random(dtype, &[nh * d, h], w(nh * d), &mut rng));
    m.insert("mlp_norm".into(), random(dtype, &[h], 1.5, &mut rng));
    m.insert("wg".into(), random(dtype, &[h, f], 2.0 * w(h), &mut rng));
    m.insert("wu".into(), random(dtype, &[h, f], 2.0 * w(h), &mut rng));
    m.insert("wd".into(), random(dtype, &[f, h], w(f), &mut rng));
    let (cos, sin) = rope_tables(s, dtype);
    m.insert("cos".into(), cos);
    m.insert("sin".into(), sin);
    m
}

fn values(m: &Inputs, name: &str) -> Vec<f64> {
    m[name].to_f32().into_iter().map(f64::from).collect()
}

/// `a [r, k] · b [k, c]`, row-major.
fn matmul(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..c {
                out[i * c + j] += x * b[p * c + j];
            }
        }
    }
    out
}

fn rmsnorm(x: &[f64], w: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
            let r = 1.0 / (ms + f64::from(RMSNORM_EPS)).sqrt();
            row.iter().zip(w).map(move |(v, w)| v * r * w)
        })
        .collect()
}

/// The f64 layer, token-major throughout.
fn reference(s: &LayerShape, m: &Inputs) -> Vec<f64> {
    let (t, h, d, f) =
        (s.tokens() as usize, s.hidden as usize, s.head_dim as usize, s.ffn as usize);
    let (nh, nkv, seq) = (s.heads as usize, s.kv_heads as usize, s.seq as usize);
    let (x, cos, sin) = (values(m, "x"), values(m, "cos"), values(m, "sin"));
    let xn = rmsnorm(&x, &values(m, "attn_norm"), h);
    let qkv_w = (nh + 2 * nkv) * d;
    let qkv = matmul(&xn, &values(m, "wqkv"), t, h, qkv_w);
    let qk_w = (nh + nkv) * d;
    let mut qk: Vec<f64> = qkv.chunks(qkv_w).flat_map(|row| row[..qk_w].to_vec()).collect();
    let v: Vec<f64> = qkv.chunks(qkv_w).flat_map(|row| row[qk_w..].to_vec()).collect();
    for tok in 0..t {
        for head in 0..nh + nkv {
            let base = tok * qk_w + head * d;
            let old: Vec<f64> = qk[base..base + d].to_vec();
            for j in 0..d {
                let rot = if j < d / 2 { -old[j + d / 2] } else { old[j - d / 2] };
                qk[base + j] = old[j] * cos[j * t + tok] + rot * sin[j * t + tok];
            }
        }
    }
    let mut o = vec![0.0; t * nh * d];
    let group = nh / nkv;
    for b in 0..s.batch as usize {
        for head in 0..nh {
            let kv = head / group;
            for i in 0..seq {
                let qi = (b * seq + i) * qk_w + head * d;
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = (b * seq + j) * qk_w + (nh + kv) * d;
                        (0..d).map(|c| qk[qi + c] * qk[kj + c]).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
                let total: f64 = p.iter().sum();
                for c in 0..d {
                    o[(b * seq + i) * nh * d + head * d + c] = (0..=i)
                        .map(|j| p[j] * v[(b * seq + j) * nkv * d + kv * d + c])
                        .sum::<f64>()
                        / total;
                }
            }
        }
    }
    let attn = matmul(&o, &values(m, "wo"), t, nh * d, h);
    let res: Vec<f64> = x.iter().zip(&attn).map(|(a, b)| a + b).collect();
    let hn = rmsnorm(&res, &values(m, "mlp_norm"), h);
    let g = matmul(&hn, &values(m, "wg"), t, h, f);
    let u = matmul(&hn, &values(m, "wu"), t, h, f);
    let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    let z = matmul(&a, &values(m, "wd"), t, f, h);
    res.iter().zip(&z).map(|(a, b)| a + b).collect()
}

fn check(chip: Chip, s: &LayerShape, dtype: DType, tol: f64) {
    let seed: u64 = rand::random();
    println!("seed {seed}: {chip} {s:?} {dtype}");
    let m = inputs(s, dtype, seed);
    let p = decoder_layer(chip, s, dtype, Composition::Overlapped).unwrap();
    let params = chip.params();
    let f = rainier_funcsim::run(&p, &params, &m).unwrap();
    let timed = rainier_timesim::simulate(&p, &params, Some(&m), false).unwrap();
    assert!(timed.machine.as_ref() == Some(&f.machine), "timing and functional memory differ");
    let got: Vec<f64> = f.outputs["y"].to_f32().into_iter().map(f64::from).collect();
    let want = reference(s, &m);
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    println!("max error {:.3e} of rms {rms:.3}", worst);
    assert!(worst <= tol * rms, "seed {seed}: max error {worst:e} > {tol:e} · rms {rms}");
}

const SMALL: LayerShape = LayerShape {
    batch: 2,
    seq: 128,
    hidden: 256,
    heads: 4,
    kv_heads: 2,
    head_dim: 64,
    ffn: 384,
    sequence_parallel: 1,
};

#[test]
fn layer_matches_f64_in_fp32_on_every_generation() {
    for chip in [Chip::Trn1, Chip::Trn2, Chip::Trn3] {
        check(chip, &SMALL, DType::F32, 2f64.powi(-16));
    }
}

#[test]
fn layer_matches_f64_in_bf16_with_full_heads() {
    let s = LayerShape {
        batch: 1,
        seq: 256,
        hidden: 256,
        heads: 2,
        kv_heads: 1,
        head_dim: 128,
        ffn: 512,
        sequence_parallel: 1,
    };
    check(Chip::Trn2, &s, DType::Bf16, 2f64.powi(-4));
}

#[test]
fn overlapped_kernels_beat_the_same_kernels_in_series() {
    let s = LayerShape {
        batch: 1,
        seq: 512,
        hidden: 1024,
        heads: 8,
        kv_heads: 2,
        head_dim: 128,
        ffn: 2048,
        sequence_parallel: 1,
    };
    for chip in [Chip::Trn1, Chip::Trn2] {
        let time = |c: Composition| {
            let p = decoder_layer(chip, &s, DType::Bf16, c).unwrap();
            rainier_timesim::simulate(&p, &chip.params(), None, false).unwrap().time_ps
        };
        let (overlapped, serial) = (time(Composition::Overlapped), time(Composition::Serial));
        println!("{chip}: overlapped {overlapped} ps, serial {serial} ps");
        assert!(overlapped < serial, "{chip}: {overlapped} >= {serial}");
    }
}

#[test]
fn sequence_parallel_norms_see_their_share_of_the_tokens() {
    let full = LayerShape {
        batch: 1,
        seq: 1024,
        hidden: 1024,
        heads: 4,
        kv_heads: 1,
        head_dim: 128,
        ffn: 1024,
        sequence_parallel: 1,
    };
    let sp = LayerShape { sequence_parallel: 8, ..full };
    let chip = Chip::Trn2;
    let p = decoder_layer(chip, &sp, DType::Bf16, Composition::Overlapped).unwrap();
    let shape_of = |name: &str| p.tensors.iter().find(|t| t.name == name).map(|t| t.shape.clone());
    assert_eq!(shape_of("x"), Some(vec![128, 1024]));
    assert_eq!(shape_of("xn_received"), Some(vec![1024, 1024]), "the all-gather's output");
    assert_eq!(shape_of("z_sent"), Some(vec![1024, 1024]), "the reduce-scatter's input");
    let time = |s: &LayerShape| {
        let p = decoder_layer(chip, s, DType::Bf16, Composition::Overlapped).unwrap();
        rainier_timesim::simulate(&p, &chip.params(), None, false).unwrap().time_ps
    };
    let (with_sp, without) = (time(&sp), time(&full));
    println!("{chip}: with sequence parallelism {with_sp} ps, without {without} ps");
    assert!(with_sp < without, "{with_sp} >= {without}");
    let err = decoder_layer(
        chip,
        &LayerShape { sequence_parallel: 3, ..full },
        DType::Bf16,
        Composition::Overlapped,
    )
    .unwrap_err();
    assert!(err.to_string().contains("sequence_parallel=3"), "{err}");
}

#[test]
fn bad_layer_shapes_are_named() {
    let odd = LayerShape { head_dim: 63, ..SMALL };
    let err = decoder_layer(Chip::Trn2, &odd, DType::Bf16, Composition::Overlapped).unwrap_err();
    assert!(err.to_string().contains("head_dim=63"), "{err}");
    let gqa = LayerShape { kv_heads: 3, ..SMALL };
    let err = decoder_layer(Chip::Trn2, &gqa, DType::Bf16, Composition::Overlapped).unwrap_err();
    assert!(err.to_string().contains("kv_heads=3"), "{err}");
    let err =
        decoder_layer(Chip::Trn2, &SMALL, DType::Fp8E4m3, Composition::Overlapped).unwrap_err();
    assert!(err.to_string().contains("bf16 or fp32"), "{err}");
}

// ---- Backward ------------------------------------------------------------------------------

/// `a [r, c]` transposed, row-major.
fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..c * r).map(|i| a[(i % r) * c + i / r]).collect()
}

/// `aᵀ · b` for `a [k, r]`, `b [k, c]`.
fn matmul_tn(a: &[f64], b: &[f64], k: usize, r: usize, c: usize) -> Vec<f64> {
    matmul(&transpose(a, k, r), b, r, k, c)
}

/// `a · bᵀ` for `a [r, k]`, `b [c, k]`.
fn matmul_nt(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    matmul(a, &transpose(b, c, k), r, k, c)
}

/// rmsnorm's input and weight gradients for rows of `cols`.
fn rmsnorm_grad(x: &[f64], w: &[f64], dy: &[f64], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; cols]);
    for (r, (row, drow)) in x.chunks(cols).zip(dy.chunks(cols)).enumerate() {
        let rstd = 1.0
            / (row.iter().map(|v| v * v).sum::<f64>() / cols as f64 + f64::from(RMSNORM_EPS))
                .sqrt();
        let dot: f64 = (0..cols).map(|c| row[c] * drow[c] * w[c]).sum();
        for c in 0..cols {
            dx[r * cols + c] = rstd * drow[c] * w[c] - row[c] * rstd.powi(3) * dot / cols as f64;
            dw[c] += drow[c] * row[c] * rstd;
        }
    }
    (dx, dw)
}

/// Rotate-half on one head: `(R·x)[j] = −x[j + d/2]` below `d/2`, `x[j − d/2]` above.
fn rotate(x: &[f64]) -> Vec<f64> {
    let d = x.len();
    (0..d).map(|j| if j < d / 2 { -x[j + d / 2] } else { x[j - d / 2] }).collect()
}

/// What the forward keeps, token-major, and the layer's gradients.
struct Grads {
    saved: Inputs,
    grads: BTreeMap<&'static str, Vec<f64>>,
}

/// The f64 layer forward (keeping what the backward program takes, in its layouts and
/// `dtype`) and its backward from `dy`, by hand.
fn reference_backward(s: &LayerShape, m: &Inputs, dy: &[f64], dtype: DType) -> Grads {
    let (t, h, d, f) =
        (s.tokens() as usize, s.hidden as usize, s.head_dim as usize, s.ffn as usize);
    let (nh, nkv, seq) = (s.heads as usize, s.kv_heads as usize, s.seq as usize);
    let (qk_w, qkv_w) = ((nh + nkv) * d, (nh + 2 * nkv) * d);
    let (x, cos, sin) = (values(m, "x"), values(m, "cos"), values(m, "sin"));
    let (wqkv, wo) = (values(m, "wqkv"), values(m, "wo"));
    let (wg, wu, wd) = (values(m, "wg"), values(m, "wu"), values(m, "wd"));
    let (attn_norm, mlp_norm) = (values(m, "attn_norm"), values(m, "mlp_norm"));
    // Forward.
    let xn = rmsnorm(&x, &attn_norm, h);
    let qkv = matmul(&xn, &wqkv, t, h, qkv_w);
    let mut qk: Vec<f64> = qkv.chunks(qkv_w).flat_map(|row| row[..qk_w].to_vec()).collect();
    let v: Vec<f64> = qkv.chunks(qkv_w).flat_map(|row| row[qk_w..].to_vec()).collect();
    let cs = |j: usize, tok: usize| (cos[j * t + tok], sin[j * t + tok]);
    for tok in 0..t {
        for head in 0..nh + nkv {
            let base = tok * qk_w + head * d;
            let rot = rotate(&qk[base..base + d]);
            for j in 0..d {
                qk[base + j] = qk[base + j] * cos[j * t + tok] + rot[j] * sin[j * t + tok];
            }
        }
    }
    let scale = 1.0 / (d as f64).sqrt();
    let group = nh / nkv;
    let q_at = |tok: usize, head: usize| tok * qk_w + head * d;
    let k_at = |tok: usize, kv: usize| tok * qk_w + (nh + kv) * d;
    let v_at = |tok: usize, kv: usize| tok * nkv * d + kv * d;
    // Probabilities per (sequence, head, query): p[j] over keys 0..=i, and the lse.
    let mut probs = vec![Vec::new(); t * nh];
    let mut lse = vec![0.0; nh * t];
    let mut o = vec![0.0; t * nh * d];
    for b in 0..s.batch as usize {
        for head in 0..nh {
            let kv = head / group;
            for i in 0..seq {
                let ti = b * seq + i;
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let (qi, kj) = (q_at(ti, head), k_at(b * seq + j, kv));
                        (0..d).map(|c| qk[qi + c] * qk[kj + c]).sum::<f64>() * scale
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|x| (x - mx).exp()).sum();
                lse[head * t + ti] = mx + total.ln();
                let p: Vec<f64> = scores.iter().map(|x| (x - mx).exp() / total).collect();
                for c in 0..d {
                    o[ti * nh * d + head * d + c] =
                        (0..=i).map(|j| p[j] * v[v_at(b * seq + j, kv) + c]).sum();
                }
                probs[ti * nh + head] = p;
            }
        }
    }
    let attn = matmul(&o, &wo, t, nh * d, h);
    let res: Vec<f64> = x.iter().zip(&attn).map(|(a, b)| a + b).collect();
    let hn = rmsnorm(&res, &mlp_norm, h);
    let g = matmul(&hn, &wg, t, h, f);
    let u = matmul(&hn, &wu, t, h, f);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g * sig(*g) * u).collect();
    // Backward: the MLP.
    let da = matmul_nt(dy, &wd, t, h, f);
    let dwd = matmul_tn(&a, dy, t, f, h);
    let dg: Vec<f64> =
        (0..t * f).map(|i| da[i] * u[i] * sig(g[i]) * (1.0 + g[i] * (1.0 - sig(g[i])))).collect();
    let du: Vec<f64> = (0..t * f).map(|i| da[i] * g[i] * sig(g[i])).collect();
    let dhn: Vec<f64> = matmul_nt(&dg, &wg, t, f, h)
        .iter()
        .zip(matmul_nt(&du, &wu, t, f, h))
        .map(|(a, b)| a + b)
        .collect();
    let (dwg, dwu) = (matmul_tn(&hn, &dg, t, h, f), matmul_tn(&hn, &du, t, h, f));
    let dwgu: Vec<f64> = (0..h)
        .flat_map(|r| [&dwg[r * f..(r + 1) * f], &dwu[r * f..(r + 1) * f]].concat())
        .collect();
    let (dres_norm, d_mlp_norm) = rmsnorm_grad(&res, &mlp_norm, &dhn, h);
    let dres: Vec<f64> = dy.iter().zip(&dres_norm).map(|(a, b)| a + b).collect();
    // Attention.
    let d_o = matmul_nt(&dres, &wo, t, h, nh * d);
    let dwo = matmul_tn(&o, &dres, t, nh * d, h);
    let mut dqk = vec![0.0; t * qk_w];
    let mut dv = vec![0.0; t * nkv * d];
    for b in 0..s.batch as usize {
        for head in 0..nh {
            let kv = head / group;
            for i in 0..seq {
                let ti = b * seq + i;
                let p = &probs[ti * nh + head];
                let doi = &d_o[ti * nh * d + head * d..ti * nh * d + (head + 1) * d];
                let dp: Vec<f64> = (0..=i)
                    .map(|j| (0..d).map(|c| doi[c] * v[v_at(b * seq + j, kv) + c]).sum())
                    .collect();
                let delta: f64 = (0..=i).map(|j| p[j] * dp[j]).sum();
                for j in 0..=i {
                    let tj = b * seq + j;
                    let ds = p[j] * (dp[j] - delta) * scale;
                    for c in 0..d {
                        dv[v_at(tj, kv) + c] += p[j] * doi[c];
                        dqk[q_at(ti, head) + c] += ds * qk[k_at(tj, kv) + c];
                        dqk[k_at(tj, kv) + c] += ds * qk[q_at(ti, head) + c];
                    }
                }
            }
        }
    }
    // Rope backward: dx = C·dy − R·(S·dy), then [dq dk dv] token-major.
    let mut dqkv = vec![0.0; t * qkv_w];
    for tok in 0..t {
        for head in 0..nh + nkv {
            let base = tok * qk_w + head * d;
            let sdy: Vec<f64> = (0..d).map(|j| dqk[base + j] * cs(j, tok).1).collect();
            let rot = rotate(&sdy);
            for j in 0..d {
                dqkv[tok * qkv_w + head * d + j] = dqk[base + j] * cs(j, tok).0 - rot[j];
            }
        }
        let dvs = &dv[tok * nkv * d..(tok + 1) * nkv * d];
        dqkv[tok * qkv_w + qk_w..(tok + 1) * qkv_w].copy_from_slice(dvs);
    }
    let dxn = matmul_nt(&dqkv, &wqkv, t, qkv_w, h);
    let dwqkv = matmul_tn(&xn, &dqkv, t, h, qkv_w);
    let (dx_norm, d_attn_norm) = rmsnorm_grad(&x, &attn_norm, &dxn, h);
    let dx: Vec<f64> = dres.iter().zip(&dx_norm).map(|(a, b)| a + b).collect();
    // The program's inputs.
    let tensor = |v: &[f64], shape: &[usize]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        HostTensor::from_f32(dtype, shape, &v)
    };
    let features = |v: &[f64], cols: usize| transpose(v, t, cols);
    let mut saved: Inputs = m.clone();
    saved.remove("sin");
    let neg: Vec<f64> = sin.iter().map(|v| -v).collect();
    saved.insert("neg_sin".into(), tensor(&neg, &[d, t]));
    saved.insert("xn".into(), tensor(&xn, &[t, h]));
    saved.insert("qk_rope".into(), tensor(&features(&qk, qk_w), &[qk_w, t]));
    saved.insert("v_t".into(), tensor(&features(&v, nkv * d), &[nkv * d, t]));
    saved.insert("o_t".into(), tensor(&features(&o, nh * d), &[nh * d, t]));
    let lse32: Vec<f32> = lse.iter().map(|&v| v as f32).collect();
    saved.insert("lse".into(), HostTensor::from_f32(DType::F32, &[nh, t], &lse32));
    saved.insert("h".into(), tensor(&res, &[t, h]));
    saved.insert("hn".into(), tensor(&hn, &[t, h]));
    saved.insert("g_t".into(), tensor(&features(&g, f), &[f, t]));
    saved.insert("u_t".into(), tensor(&features(&u, f), &[f, t]));
    saved.insert("a_t".into(), tensor(&features(&a, f), &[f, t]));
    saved.insert("dy".into(), tensor(dy, &[t, h]));
    let grads = BTreeMap::from([
        ("dx", dx),
        ("d_attn_norm", d_attn_norm),
        ("dwqkv", dwqkv),
        ("dwo", dwo),
        ("d_mlp_norm", d_mlp_norm),
        ("dwgu", dwgu),
        ("dwd", dwd),
    ]);
    Grads { saved, grads }
}

/// Every gradient of the backward program within `tol · rms` of the f64 backward.
fn check_backward(chip: Chip, s: &LayerShape, dtype: DType, tol: f64) {
    let seed: u64 = rand::random();
    println!("seed {seed}: {chip} {s:?} {dtype}");
    let m = inputs(s, dtype, seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let dy: Vec<f64> =
        (0..s.tokens() * s.hidden).map(|_| rng.gen_range(-1.0..1.0f64) as f32 as f64).collect();
    let Grads { saved, grads } = reference_backward(s, &m, &dy, dtype);
    let p = decoder_layer_backward(chip, s, dtype, Composition::Overlapped).unwrap();
    let params = chip.params();
    let f = rainier_funcsim::run(&p, &params, &saved).unwrap();
    let timed = rainier_timesim::simulate(&p, &params, Some(&saved), false).unwrap();
    assert!(timed.machine.as_ref() == Some(&f.machine), "timing and functional memory differ");
    for (name, want) in &grads {
        let got: Vec<f64> = f.outputs[*name].to_f32().into_iter().map(f64::from).collect();
        assert_eq!(got.len(), want.len(), "{name}");
        let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
        let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
        println!("{name}: max error {worst:.3e} of rms {rms:.3e}");
        assert!(
            worst <= tol * rms,
            "seed {seed}: {name}: max error {worst:e} > {tol:e} · rms {rms}"
        );
    }
}

#[test]
fn layer_backward_matches_f64_in_fp32_on_every_generation() {
    for chip in [Chip::Trn1, Chip::Trn2, Chip::Trn3] {
        check_backward(chip, &SMALL, DType::F32, 2f64.powi(-14));
    }
}

#[test]
fn layer_backward_matches_f64_in_bf16() {
    let s = LayerShape { batch: 1, seq: 256, heads: 2, kv_heads: 1, head_dim: 128, ..SMALL };
    check_backward(Chip::Trn2, &s, DType::Bf16, 2f64.powi(-3));
}
