"""The legacy-dialect tutorial kernels (../shared/nki/kernels/legacy), unmodified, on fresh
random inputs against NumPy. Tolerances (relative to the largest reference value): fp32 2e-5,
fp16 2e-3, bf16 1.6e-2 (see conftest.close); matmuls accumulate in fp32 from exact products."""

import ml_dtypes
import numpy as np
import pytest

import rainier.nki as rn
from conftest import close, load_module, need_shared, run_main

BF16 = ml_dtypes.bfloat16


def legacy(rel, **kw):
    return load_module(need_shared() / "kernels/legacy/nki-samples" / rel, **kw)


@pytest.mark.parametrize("script", [
    "tensor_addition/tensor_addition_nki_kernels.py",
    "tensor_addition/spmd_tensor_addition_nki_kernels.py",
    "tensor_addition/spmd_multiple_nc_tensor_addition_nki_kernels.py",
    "transpose2d/transpose2d_nki_kernels.py",
    "average_pool2d/average_pool2d_nki_kernels.py",
    "rmsnorm/rmsnorm_nki_kernels.py",
])
def test_tutorial_main_runs_unmodified(script, monkeypatch):
    """The kernel file's own `__main__` (its NumPy check asserts)."""
    run_main(need_shared() / "kernels/legacy/nki-samples" / script, monkeypatch)


@pytest.mark.parametrize("chip", ["trn1", "trn2", "trn3"])
def test_tensor_add_spmd(rng, chip):
    m = legacy("tensor_addition/tensor_addition_nki_kernels.py")
    a = rng.standard_normal((384, 1536)).astype(np.float16)
    b = rng.standard_normal((384, 1536)).astype(np.float16)
    res = rn.run(m.nki_tensor_add_kernel_[3, 3], a, b, chip=chip)
    np.testing.assert_array_equal(res.outputs, (a + b))  # fp32 add of fp16 then RNE: exact
    assert res.time_ns > 0 and res.engines["vector"]["instructions"] >= 9


def test_transpose2d_float(rng):
    m = legacy("transpose2d/transpose2d_nki_kernels.py")
    p, x, y = 96, 6, 10
    a = rng.standard_normal((p, x * y)).astype(np.float32)
    out = m.tensor_transpose2D_kernel_(a, (x, y))
    np.testing.assert_array_equal(out, a.reshape(p, x, y).transpose(0, 2, 1).reshape(p, x * y))


def test_average_pool(rng):
    m = legacy("average_pool2d/average_pool2d_nki_kernels.py")
    a = rng.standard_normal((64, 16, 24)).astype(np.float32)
    out = m.tensor_avgpool_kernel(a, 4)
    close(out, m.np_average_pool_2D(a, 4), np.float32, "avgpool")


@pytest.mark.parametrize("rows", [128, 300])
def test_rmsnorm(rng, rows):
    m = legacy("rmsnorm/rmsnorm_nki_kernels.py")
    a = rng.standard_normal((rows, 512)).astype(np.float32)
    g = rng.standard_normal(512).astype(np.float32)
    out = m.nki_rmsnorm_kernel(a, g)
    want = a / np.sqrt(np.mean(a.astype(np.float64) ** 2, axis=1, keepdims=True)) * g
    close(out, want, np.float32, "rmsnorm")


@pytest.mark.parametrize("rows", [128, 250])
def test_softmax(rng, rows):
    m = legacy("softmax/softmax_nki_kernels.py", stubs=["torch_xla.core.xla_model"])
    a = (rng.standard_normal((rows, 1024)) * 4).astype(np.float32)
    out = m.nki_softmax_kernel(a)
    e = np.exp(a - a.max(axis=1, keepdims=True))
    close(out, e / e.sum(axis=1, keepdims=True), np.float32, "softmax")


def np_layernorm(x, eps, g, b):
    x = x.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_layernorm(rng, version):
    m = legacy("layernorm/layernorm_nki_kernel.py")
    x = rng.standard_normal((300, 1000)).astype(np.float32)
    g = rng.standard_normal(1000).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)
    f = getattr(m, f"nki_layernorm_kernel_{version}")
    out = f(x, 1e-5, g, b)
    close(out, np_layernorm(x, 1e-5, g, b), np.float32, f"layernorm {version}")


def ref_matmul(lhsT, rhs):
    return lhsT.astype(np.float64).T @ rhs.astype(np.float64)


@pytest.mark.parametrize("name,shape", [
    ("nki_matmul_tiled_", (256, 256, 1024)),
    ("nki_matmul_hoist_load_", (384, 128, 1024)),
    ("nki_matmul_block_free_dimension_", (256, 512, 2048)),
    ("nki_matmul_fully_optimized_", (1024, 2048, 1024)),
])
def test_matmul_tutorial(rng, name, shape):
    m = legacy("matrix_multiplication/matrix_multiplication_nki_kernels.py")
    k, mm, n = shape
    lhsT = rng.standard_normal((k, mm)).astype(BF16)
    rhs = rng.standard_normal((k, n)).astype(BF16)
    f = getattr(m, name)
    out = f(lhsT, rhs)
    # fp32 accumulation then one bf16 rounding of the result
    close(out.astype(np.float32), ref_matmul(lhsT, rhs), BF16, name)
    res = f.last_result
    assert res.engines["tensor"]["instructions"] == (k // 128) * (mm // 128) * (n // 512)


def test_matmul_basic(rng):
    m = legacy("matrix_multiplication/matrix_multiplication_nki_kernels.py")
    lhsT = rng.standard_normal((128, 64)).astype(BF16)
    rhs = rng.standard_normal((128, 512)).astype(BF16)
    out = m.nki_matmul_basic_(lhsT, rhs)
    close(out.astype(np.float32), ref_matmul(lhsT, rhs), BF16, "matmul basic")


def np_mamba(delta, u, A, B, C):
    """Selective scan: h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t; y_t = Σ_s C_t h_t."""
    delta, u, A, B, C = (x.astype(np.float64) for x in (delta, u, A, B, C))
    bsz, ch, seq = delta.shape
    st = A.shape[1]
    out = np.zeros((bsz, ch, seq))
    for b in range(bsz):
        for s in range(st):
            dA = np.exp(delta[b] * A[:, s:s + 1])
            dBu = delta[b] * u[b] * B[b, s][None, :]
            h = np.zeros(ch)
            for t in range(seq):
                h = dA[:, t] * h + dBu[:, t]
                out[b, :, t] += h * C[b, s, t]
    return out


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_mamba(rng, version):
    m = legacy("fused_mamba/mamba_nki_kernels.py")
    bsz, ch, seq, st = 1, 256, 512, 4
    delta = rng.uniform(0.01, 0.1, (bsz, ch, seq)).astype(np.float32)
    u = rng.standard_normal((bsz, ch, seq)).astype(np.float32)
    A = -rng.uniform(0.5, 2.0, (ch, st)).astype(np.float32)
    B = rng.standard_normal((bsz, st, seq)).astype(np.float32)
    C = rng.standard_normal((bsz, st, seq)).astype(np.float32)
    out = getattr(m, f"mamba_{version}")(delta, u, A, B, C)
    close(out, np_mamba(delta, u, A, B, C), np.float32, f"mamba {version}")
