//! The Tensor engine's arithmetic: `out[m, n] = Σ_k stationary[k, m] · moving[k, n]`.
//!
//! Model: each product of two inputs is formed exactly (8- and 16-bit floats and tf32 have at
//! most 11 significant bits, so their products fit fp32's 24) or, for fp32 inputs, rounded to
//! fp32; the partial sums run down the systolic column k = 0, 1, ..., K-1 in fp32 with round to
//! nearest even, starting from +0. The order is our assumption (the hardware's adder tree is not
//! documented); it matters only in the last bits of fp32 sums.
//!
//! Because products of narrow inputs are exact, a fused multiply-add gives the same bits as a
//! multiply followed by an add; the fast path uses FMA where the host has it.

/// Computes `out[m * n_len + n] = Σ_k s[k * m_len + m] · v[k * n_len + n]` for `m < m_len`,
/// `n < n_len`, in the order stated in the module docs. `exact_products` must be true only when
/// every product of the inputs is exactly representable in fp32.
pub fn matmul_f32(
    s: &[f32],
    v: &[f32],
    k_len: usize,
    m_len: usize,
    n_len: usize,
    exact_products: bool,
    out: &mut [f32],
) {
    assert!(s.len() >= k_len * m_len && v.len() >= k_len * n_len && out.len() >= m_len * n_len);
    #[cfg(target_arch = "x86_64")]
    if exact_products && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the features the function is compiled for were detected at run time.
        unsafe { matmul_avx512(s, v, k_len, m_len, n_len, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if exact_products
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the features the function is compiled for were detected at run time.
        unsafe { matmul_avx2_fma(s, v, k_len, m_len, n_len, out) };
        return;
    }
    let _ = exact_products;
    kernel::<false, 4, 32>(s, v, k_len, m_len, n_len, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn matmul_avx512(s: &[f32], v: &[f32], k: usize, m: usize, n: usize, out: &mut [f32]) {
    kernel::<true, 4, 64>(s, v, k, m, n, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn matmul_avx2_fma(s: &[f32], v: &[f32], k: usize, m: usize, n: usize, out: &mut [f32]) {
    kernel::<true, 4, 32>(s, v, k, m, n, out);
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, acc: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

#[inline(always)]
fn kernel<const FMA: bool, const MR: usize, const NR: usize>(
    s: &[f32],
    v: &[f32],
    k_len: usize,
    m_len: usize,
    n_len: usize,
    out: &mut [f32],
) {
    let m_main = m_len - m_len % MR;
    let n_main = n_len - n_len % NR;
    for m0 in (0..m_main).step_by(MR) {
        for n0 in (0..n_main).step_by(NR) {
            let mut acc = [[0f32; NR]; MR];
            for k in 0..k_len {
                let b: &[f32; NR] = v[k * n_len + n0..][..NR].try_into().unwrap_or(&[0.0; NR]);
                let a: &[f32; MR] = s[k * m_len + m0..][..MR].try_into().unwrap_or(&[0.0; MR]);
                for r in 0..MR {
                    for j in 0..NR {
                        acc[r][j] = madd::<FMA>(a[r], b[j], acc[r][j]);
                    }
                }
            }
            for r in 0..MR {
                out[(m0 + r) * n_len + n0..][..NR].copy_from_slice(&acc[r]);
            }
        }
    }
    // Remainders: rows past m_main (all columns) and columns past n_main (main rows).
    let scalar = |m: usize, n: usize| {
        let mut acc = 0f32;
        for k in 0..k_len {
            acc = madd::<FMA>(s[k * m_len + m], v[k * n_len + n], acc);
        }
        acc
    };
    for m in 0..m_len {
        let cols = if m < m_main { n_main..n_len } else { 0..n_len };
        for n in cols {
            out[m * n_len + n] = scalar(m, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked/FMA path and a plain triple loop agree bit for bit on exact-product inputs.
    #[test]
    fn fast_path_matches_plain_loop() {
        let (k, m, n) = (37, 9, 70);
        let val = |i: usize| ((i * 7919 % 257) as f32 - 128.0) / 64.0; // 8-bit significands
        let s: Vec<f32> = (0..k * m).map(val).collect();
        let v: Vec<f32> = (0..k * n).map(|i| val(i + 13)).collect();
        let mut fast = vec![0.0; m * n];
        matmul_f32(&s, &v, k, m, n, true, &mut fast);
        for mi in 0..m {
            for ni in 0..n {
                let mut acc = 0f32;
                for ki in 0..k {
                    acc += s[ki * m + mi] * v[ki * n + ni];
                }
                assert_eq!(fast[mi * n + ni].to_bits(), acc.to_bits());
            }
        }
    }
}
