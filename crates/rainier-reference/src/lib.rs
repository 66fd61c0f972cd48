//! Plain-loop reference implementations of the NeuronCore instructions' math, in f64.
//!
//! This crate depends on nothing else of Rainier's and shares no code with the simulator, so a
//! bug cannot hide in both. Values are f64; formats and operators are named by strings (the
//! assembly names), so not even an enum is shared. [`round_to`] is an independent
//! implementation of round-to-nearest-even into every format, written with f64 arithmetic
//! rather than bit manipulation.

/// Rounds `x` to the nearest value of `format` (ties to even), with the overflow behaviour of
/// the format: IEEE formats (`f32`, `bf16`, `f16`, `tf32`) overflow to ±inf, fp8 formats
/// saturate to ±max (OCP saturating mode), integers saturate and map NaN to 0.
///
/// # Panics
/// On an unknown format name (a test-code bug).
pub fn round_to(format: &str, x: f64) -> f64 {
    // (explicit mantissa bits, smallest normal exponent, largest finite, saturating)
    let (man, emin, max, saturating) = match format {
        "f32" => (23, -126, (2.0 - 2f64.powi(-23)) * 2f64.powi(127), false),
        "bf16" => (7, -126, (2.0 - 2f64.powi(-7)) * 2f64.powi(127), false),
        "f16" => (10, -14, 65504.0, false),
        "tf32" => (10, -126, (2.0 - 2f64.powi(-10)) * 2f64.powi(127), false),
        "fp8e4m3" => (3, -6, 240.0, true),
        "fp8e4m3fn" => (3, -6, 448.0, true),
        "fp8e5m2" => (2, -14, 57344.0, true),
        "i32" => return round_int(x, -2147483648.0, 2147483647.0),
        "u8" => return round_int(x, 0.0, 255.0),
        "i8" => return round_int(x, -128.0, 127.0),
        "i16" => return round_int(x, -32768.0, 32767.0),
        "u16" => return round_int(x, 0.0, 65535.0),
        "u32" => return round_int(x, 0.0, 4294967295.0),
        other => panic!("unknown format {other}"),
    };
    if x.is_nan() || x == 0.0 {
        return x;
    }
    if x.is_infinite() {
        return if saturating { max.copysign(x) } else { x };
    }
    let a = x.abs();
    // Binade by repeated halving/doubling: no bit tricks, so independent of the simulator.
    let mut e = 0i32;
    let mut y = a;
    while y >= 2.0 {
        y /= 2.0;
        e += 1;
    }
    while y < 1.0 {
        y *= 2.0;
        e -= 1;
    }
    let quantum = 2f64.powi(e.max(emin) - man);
    let q = a / quantum;
    let fl = q.floor();
    let diff = q - fl;
    let n = if diff > 0.5 || (diff == 0.5 && fl % 2.0 == 1.0) { fl + 1.0 } else { fl };
    let r = n * quantum;
    let r = if r > max {
        if saturating {
            max
        } else {
            f64::INFINITY
        }
    } else {
        r
    };
    r.copysign(x)
}

fn round_int(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    let fl = x.floor();
    let diff = x - fl;
    let n = if diff > 0.5 || (diff == 0.5 && fl % 2.0 != 0.0) { fl + 1.0 } else { fl };
    n.clamp(lo, hi)
}

/// `out[m][n] = Σ_k s[k][m] · v[k][n]` in f64 (exact for narrow inputs up to rounding of f64).
pub fn matmul(s: &[f64], v: &[f64], k: usize, m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0;
            for ki in 0..k {
                acc += s[ki * m + mi] * v[ki * n + ni];
            }
            out[mi * n + ni] = acc;
        }
    }
    out
}

/// The same sum with the documented rounding points: each product rounded to fp32 (exact for
/// narrow inputs), accumulated in fp32 for k = 0..K-1 from +0.
pub fn matmul_fp32_sequential(s: &[f64], v: &[f64], k: usize, m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0;
            for ki in 0..k {
                let p = round_to("f32", s[ki * m + mi] * v[ki * n + ni]);
                acc = round_to("f32", acc + p);
            }
            out[mi * n + ni] = acc;
        }
    }
    out
}

/// `a op b` for an ALU operator name; comparisons give 1 or 0.
///
/// # Panics
/// On an unknown operator (a test-code bug).
pub fn binary(op: &str, a: f64, b: f64) -> f64 {
    let t = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        "add" => a + b,
        "subtract" => a - b,
        "multiply" => a * b,
        "divide" => a / b,
        "max" => {
            if a.is_nan() {
                b
            } else if b.is_nan() || a > b {
                a
            } else {
                b
            }
        }
        "min" => {
            if a.is_nan() {
                b
            } else if b.is_nan() || a < b {
                a
            } else {
                b
            }
        }
        "eq" => t(a == b),
        "ne" => t(a != b),
        "ge" => t(a >= b),
        "gt" => t(a > b),
        "le" => t(a <= b),
        "lt" => t(a < b),
        other => panic!("unknown operator {other}"),
    }
}

/// erf by its Maclaurin series (|x| < 3) or the continued fraction of erfc (|x| >= 3).
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let mut term = a;
        let mut sum = a;
        // At |x| < 3 the terms fall below 1e-17 of the sum within 60 terms.
        for k in 1..200 {
            let k = f64::from(k);
            term *= -a * a / k;
            let add = term / (2.0 * k + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    };
    r.copysign(x)
}

/// An activation function by name, in f64.
///
/// # Panics
/// On an unknown function (a test-code bug).
pub fn activation(func: &str, x: f64) -> f64 {
    match func {
        "identity" | "copy" => x,
        "exp" => x.exp(),
        "log" => x.ln(),
        "tanh" => x.tanh(),
        "sigmoid" => 1.0 / (1.0 + (-x).exp()),
        "relu" => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        "gelu" => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        "gelu_tanh" => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        "silu" => x / (1.0 + (-x).exp()),
        "sqrt" => x.sqrt(),
        "rsqrt" => 1.0 / x.sqrt(),
        "square" => x * x,
        "reciprocal" => 1.0 / x,
        "abs" => {
            if x < 0.0 {
                -x
            } else {
                x
            }
        }
        "sign" => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tan" => x.tan(),
        "arctan" => x.atan(),
        "erf" => erf(x),
        "erf_dx" => 2.0 / std::f64::consts::PI.sqrt() * (-(x * x)).exp(),
        // ln(1 + e^x), written as log of a sum (not the simulator's stable form).
        "softplus" => {
            if x > 30.0 {
                x
            } else {
                (1.0 + x.exp()).ln()
            }
        }
        "mish" => {
            let sp = if x > 30.0 { x } else { (1.0 + x.exp()).ln() };
            x * sp.tanh()
        }
        "gelu_apprx_sigmoid" => x * (1.0 / (1.0 + (-1.702 * x).exp())),
        "gelu_dx" => {
            0.5 * (1.0 + erf(x / 2f64.sqrt()))
                + x * (-(x * x) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        "silu_dx" => {
            let s = 1.0 / (1.0 + (-x).exp());
            s + x * s * (1.0 - s)
        }
        other => panic!("unknown activation {other}"),
    }
}

/// `op` over `xs` left to right from the first element (`add`, `max`, `min`).
pub fn reduce(op: &str, xs: &[f64]) -> f64 {
    let mut acc = xs[0];
    for &x in &xs[1..] {
        acc = match op {
            "add" => acc + x,
            "max" => binary("max", acc, x),
            "min" => binary("min", acc, x),
            other => panic!("unknown reduce op {other}"),
        };
    }
    acc
}

/// `out[f][p] = x[p][f]` for `x` of `p` rows and `f` columns.
pub fn transpose(x: &[f64], p: usize, f: usize) -> Vec<f64> {
    let mut out = vec![0.0; p * f];
    for i in 0..p {
        for j in 0..f {
            out[j * p + i] = x[i * f + j];
        }
    }
    out
}

/// The affine expression of `iota`/`affine_select` at partition `p`, free multi-index `idx`.
pub fn affine(base: i64, channel_multiplier: i64, steps: &[i64], p: i64, idx: &[i64]) -> i64 {
    let mut v = base + channel_multiplier * p;
    for i in 0..steps.len() {
        v += steps[i] * idx[i];
    }
    v
}

/// `cmp(a, 0)` for a comparison name.
pub fn compare_with_zero(cmp: &str, a: i64) -> bool {
    binary(cmp, a as f64, 0.0) != 0.0
}

/// Scaled-dot-product attention forward and backward in f64, for `nh` query heads sharing
/// `nkv` K/V heads in groups of `nh_per_batch / nkv_per_batch` (`heads` and `kv_heads` per
/// batch element). Layouts (row-major): `q`, `dout`: `[nh, d, seq]`; `k`, `v`: `[nkv, d, seq]`.
/// Returns `[o [nh, d, seq], lse [nh, seq], dq [nh, seq, d], dk [nkv, seq, d],
/// dv [nkv, seq, d]]` with `p = softmax(q·kᵀ/√d)` (causal: keys up to the query),
/// `lse = log Σ exp(q·k/√d)`, `ds = p ∘ (dout·vᵀ − rowsum(dout ∘ o))`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
    heads: usize,
    kv_heads: usize,
    nh: usize,
    seq: usize,
    d: usize,
    causal: bool,
) -> [Vec<f64>; 5] {
    let nkv = nh / heads * kv_heads;
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let (mut o, mut lse) = (vec![0.0; nh * d * seq], vec![0.0; nh * seq]);
    let mut dq = vec![0.0; nh * seq * d];
    let (mut dk, mut dv) = (vec![0.0; nkv * seq * d], vec![0.0; nkv * seq * d]);
    for h in 0..nh {
        let hk = (h / heads) * kv_heads + (h % heads) / group;
        let at = |x: &[f64], head: usize, c: usize, pos: usize| x[(head * d + c) * seq + pos];
        let mut p = vec![vec![0.0; seq]; seq];
        for i in 0..seq {
            let keys = if causal { i + 1 } else { seq };
            let sc: Vec<f64> = (0..keys)
                .map(|j| scale * (0..d).map(|c| at(q, h, c, i) * at(k, hk, c, j)).sum::<f64>())
                .collect();
            let mx = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let l = mx + sc.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
            lse[h * seq + i] = l;
            for j in 0..keys {
                p[i][j] = (sc[j] - l).exp();
            }
            for c in 0..d {
                o[(h * d + c) * seq + i] = (0..keys).map(|j| p[i][j] * at(v, hk, c, j)).sum();
            }
        }
        for i in 0..seq {
            let delta: f64 = (0..d).map(|c| at(dout, h, c, i) * o[(h * d + c) * seq + i]).sum();
            let keys = if causal { i + 1 } else { seq };
            for j in 0..keys {
                let dp: f64 = (0..d).map(|c| at(dout, h, c, i) * at(v, hk, c, j)).sum();
                let ds = p[i][j] * (dp - delta);
                for c in 0..d {
                    dq[(h * seq + i) * d + c] += scale * ds * at(k, hk, c, j);
                    dk[(hk * seq + j) * d + c] += scale * ds * at(q, h, c, i);
                    dv[(hk * seq + j) * d + c] += p[i][j] * at(dout, h, c, i);
                }
            }
        }
    }
    [o, lse, dq, dk, dv]
}

/// `tensor_tensor_scan` of one partition in f64 with fp32 rounding after each operator (the
/// simulator's stated rounding points): `x = op1(op0(a[i], x), b[i])`, operands swapped by
/// `reverse0`/`reverse1`.
pub fn scan(
    a: &[f64],
    b: &[f64],
    initial: f64,
    ops: (&str, &str),
    reverse: (bool, bool),
) -> Vec<f64> {
    let mut x = initial;
    a.iter()
        .zip(b)
        .map(|(&u, &v)| {
            let t =
                round_to("f32", if reverse.0 { binary(ops.0, x, u) } else { binary(ops.0, u, x) });
            x = round_to("f32", if reverse.1 { binary(ops.1, v, t) } else { binary(ops.1, t, v) });
            x
        })
        .collect()
}

/// Exact `(count, mean, Σ (x − mean)²)` of `xs` (f64, two passes).
pub fn moments(xs: &[f64]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n;
    (n, mean, xs.iter().map(|x| (x - mean) * (x - mean)).sum())
}

/// The value of an OCP minifloat bit pattern (`fp8e5m2`, `fp8e4m3fn` or `fp4e2m1`, the
/// pattern in the low bits of `bits`), from the format's field widths [OCP MX v1.0 §5.3].
///
/// # Panics
/// On an unknown format name (a test-code bug).
pub fn decode_minifloat(format: &str, bits: u8) -> f64 {
    let (exp_bits, man_bits, bias) = match format {
        "fp8e5m2" => (5, 2, 15),
        "fp8e4m3fn" => (4, 3, 7),
        "fp4e2m1" => (2, 1, 1),
        other => panic!("unknown minifloat {other}"),
    };
    let width = 1 + exp_bits + man_bits;
    let sign = if (bits >> (width - 1)) & 1 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> man_bits) & ((1 << exp_bits) - 1));
    let man = f64::from(bits & ((1 << man_bits) - 1));
    let all_ones = (1 << exp_bits) - 1;
    match format {
        "fp8e5m2" if exp == all_ones => {
            return if man == 0.0 { sign * f64::INFINITY } else { f64::NAN }
        }
        "fp8e4m3fn" if exp == all_ones && man == 7.0 => return f64::NAN,
        _ => {}
    }
    let frac = man / f64::from(1 << man_bits);
    if exp == 0 {
        sign * frac * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + frac) * 2f64.powi(exp - bias)
    }
}

/// The MX scale-tile row holding the scale of data partition `p`: groups of 8 partitions, the
/// four groups of each 32-partition quadrant in that quadrant's first four rows.
pub fn mx_scale_row(p: usize) -> usize {
    p / 32 * 32 + p % 32 / 8
}

/// MX data dequantized: `data[k][f]` packed elements of `element_bytes` bytes, each holding four
/// `format` values (fp8: one per byte; fp4: two per byte, low nibble first), times
/// `2^(scale − 127)` of the scale byte at `scale[mx_scale_row(k)][f]` (255: NaN), each product
/// rounded to fp32. Returns `[4k][f]` with row `4·k + q` holding element `q`.
pub fn mx_dequantize(format: &str, data: &[u8], scale: &[u8], k: usize, f: usize) -> Vec<f64> {
    let eb = if format == "fp4e2m1" { 2 } else { 4 };
    let mut out = vec![0.0; 4 * k * f];
    for p in 0..k {
        for j in 0..f {
            let e = &data[(p * f + j) * eb..][..eb];
            let s = scale[mx_scale_row(p) * f + j];
            let x = if s == 255 { f64::NAN } else { 2f64.powi(i32::from(s) - 127) };
            for q in 0..4 {
                let bits = if eb == 2 { (e[q / 2] >> (4 * (q % 2))) & 0xf } else { e[q] };
                out[(4 * p + q) * f + j] = round_to("f32", decode_minifloat(format, bits) * x);
            }
        }
    }
    out
}

/// `quantize_mx` as NKI documents it: per group of 8 rows × 4 consecutive columns of `x`
/// (`[p][4·f]`), `X = 2^(⌊log2 max|x|⌋ − (E_max − 1))` (`E_max` 15 for e5m2, 8 for e4m3fn), the
/// scale byte `log2 X + 127` clamped to 0..=254 (0 for an all-zero group), and each value
/// `round_to(format, x / X)`. Returns the values `[p][4·f]` and the scale bytes `[p/8][f]`.
pub fn quantize_mx(format: &str, x: &[f64], p: usize, f: usize) -> (Vec<f64>, Vec<u8>) {
    let emax = if format == "fp8e5m2" { 15 } else { 8 };
    let mut vals = vec![0.0; p * 4 * f];
    let mut scales = vec![0u8; p / 8 * f];
    for g in 0..p / 8 {
        for j in 0..f {
            let idx = |r: usize, q: usize| (8 * g + r) * 4 * f + 4 * j + q;
            let amax = (0..32).map(|i| x[idx(i / 4, i % 4)].abs()).fold(0.0, f64::max);
            let byte = if amax == 0.0 {
                0
            } else {
                // ⌊log2 amax⌋ by comparison with powers of two.
                let mut e = 0i32;
                while 2f64.powi(e) > amax {
                    e -= 1;
                }
                while 2f64.powi(e + 1) <= amax {
                    e += 1;
                }
                (e - (emax - 1) + 127).clamp(0, 254)
            };
            scales[g * f + j] = byte as u8;
            let xs = 2f64.powi(byte - 127);
            for i in 0..32 {
                let at = idx(i / 4, i % 4);
                vals[at] = round_to(format, x[at] / xs);
            }
        }
    }
    (vals, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_examples() {
        assert_eq!(round_to("bf16", 1.0 + 2f64.powi(-8)), 1.0);
        assert_eq!(round_to("bf16", 1.0 + 3.0 * 2f64.powi(-8)), 1.0 + 2f64.powi(-6));
        assert_eq!(round_to("fp8e4m3fn", 1000.0), 448.0);
        assert_eq!(round_to("fp8e4m3", -1000.0), -240.0);
        assert_eq!(round_to("f16", 70000.0), f64::INFINITY);
        assert_eq!(round_to("fp8e5m2", 2f64.powi(-17)), 0.0); // tie to even (0)
        assert_eq!(round_to("fp8e5m2", 3.0 * 2f64.powi(-17)), 2f64.powi(-15));
        assert_eq!(round_to("i32", 2.5), 2.0);
        assert_eq!(round_to("u8", 300.0), 255.0);
    }

    #[test]
    fn erf_matches_known_values() {
        // Abramowitz & Stegun table 7.1.
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f64::NAN).is_nan());
        for (x, want) in [
            (0.5, 0.520_499_877_813_047),
            (1.0, 0.842_700_792_949_715),
            (2.0, 0.995_322_265_018_953),
            (3.5, 0.999_999_256_901_628),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-14);
        }
    }
}
