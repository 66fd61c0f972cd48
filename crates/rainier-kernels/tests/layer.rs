//! The whole decoder-layer program against a plain f64 Llama layer (rmsnorm, projections,
//! rotate-half rope, causal grouped-query attention, SwiGLU MLP, residuals) on fresh random
//! inputs, and its timing: overlapped kernels beat the same kernels run one after another.
//!
//! Tolerance: `max |y − want| <= tol · rms(want)`, tol = 2^-16 for fp32 (a few hundred fp32
//! roundings deep, exp and rsqrt) and 2^-4 for bf16 (every kernel rounds its output to bf16:
//! about twelve hand-offs of 2^-9 relative each, amplified through softmax and the MLP).
// A test binary: a panic is a failure, and the printed seed replays it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;

use rainier_arch::Chip;
use rainier_kernels::{decoder_layer, Composition, LayerShape, RMSNORM_EPS};
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
