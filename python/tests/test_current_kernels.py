"""The current-dialect kernels (../shared/nki/kernels/current, `import nki`), unmodified, on
fresh random inputs against NumPy (tolerances as in conftest.close)."""

import ml_dtypes
import numpy as np
import pytest

import rainier.nki as rn
from conftest import close, load_module, need_shared, run_main
from test_legacy_kernels import np_mamba, ref_matmul

BF16 = ml_dtypes.bfloat16


def current(rel, **kw):
    return load_module(need_shared() / "kernels/current" / rel, **kw)


@pytest.mark.parametrize("script", [
    "aws-neuron-sdk/tensor_addition/tensor_addition_nki_kernels.py",
    "aws-neuron-sdk/transpose2d/transpose2d_nki_kernels.py",
    "aws-neuron-sdk/average_pool2d/average_pool2d_nki_kernels.py",
    "aws-neuron-sdk/simulate/nki_simulate_example.py",
    "aws-neuron-sdk/getting_started_baremetal.py",
])
def test_main_runs_unmodified(script, monkeypatch):
    run_main(need_shared() / "kernels/current" / script, monkeypatch)


def test_tensor_add_sets_chip_from_environment(rng, monkeypatch):
    """The kernel file sets NEURON_PLATFORM_TARGET_OVERRIDE=trn1 at import, as on AWS."""
    m = current("aws-neuron-sdk/tensor_addition/tensor_addition_nki_kernels.py")
    a = rng.standard_normal((256, 1024)).astype(np.float32)
    b = rng.standard_normal((256, 1024)).astype(np.float32)
    res = rn.run(m.nki_tensor_add, a, b)
    assert res.chip == "trn1"
    np.testing.assert_array_equal(res.outputs, a + b)


def test_avgpool_access_pattern(rng):
    m = current("aws-neuron-sdk/average_pool2d/average_pool2d_nki_kernels.py")
    a = rng.standard_normal((96, 12, 20)).astype(np.float32)
    close(m.tensor_avgpool_kernel(a, 2), m.np_average_pool_2D(a, 2), np.float32, "avgpool")


def test_maxpool_ap_and_split(rng):
    pool = current("aws-neuron-sdk/index-case-3.py")
    a = rng.standard_normal((64, 12, 16)).astype(np.float32)
    want = a.reshape(64, 6, 2, 8, 2).max(axis=(2, 4))
    np.testing.assert_array_equal(pool.tensor_maxpool_kernel_(a, 2), want)
    split = current("aws-neuron-sdk/index-case-1.py")
    x = rng.standard_normal((100, 37)).astype(np.float32)
    even, odd = split.tensor_split_kernel_(x)
    np.testing.assert_array_equal(even, x[:, 0::2])
    np.testing.assert_array_equal(odd, x[:, 1::2])


def test_exp_layout(rng):
    m = current("aws-neuron-sdk/layout-pass.py")
    x = rng.standard_normal((128, 512)).astype(np.float32)
    close(m.tensor_exp_kernel_(x), np.exp(x.astype(np.float64)), np.float32, "exp")


@pytest.mark.parametrize("file", ["aws-neuron-sdk/matrix_multiplication", "nki-samples/matrix_multiplication"])
@pytest.mark.parametrize("name,shape", [
    ("nki_matmul_basic_", (128, 64, 512)),
    ("nki_matmul_tiled_", (256, 256, 1024)),
    ("nki_matmul_hoist_load_", (256, 128, 1024)),
    ("nki_matmul_block_free_dimension_", (256, 512, 2048)),
    ("nki_matmul_fully_optimized_", (1024, 2048, 1024)),
])
def test_matmul(rng, file, name, shape):
    m = current(f"{file}/matrix_multiplication_nki_kernels.py")
    k, mm, n = shape
    lhsT = rng.standard_normal((k, mm)).astype(BF16)
    rhs = rng.standard_normal((k, n)).astype(BF16)
    out = getattr(m, name)(lhsT, rhs)
    close(out.astype(np.float32), ref_matmul(lhsT, rhs), BF16, f"{file} {name}")


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_mamba(rng, version):
    m = current("aws-neuron-sdk/fused_mamba/mamba_nki_kernels.py")
    bsz, ch, seq, st = 1, 256, 512, 4
    delta = rng.uniform(0.01, 0.1, (bsz, ch, seq)).astype(np.float32)
    u = rng.standard_normal((bsz, ch, seq)).astype(np.float32)
    A = -rng.uniform(0.5, 2.0, (ch, st)).astype(np.float32)
    B = rng.standard_normal((bsz, st, seq)).astype(np.float32)
    C = rng.standard_normal((bsz, st, seq)).astype(np.float32)
    out = getattr(m, f"mamba_{version}")(delta, u, A, B, C)
    close(out, np_mamba(delta, u, A, B, C), np.float32, f"mamba {version}")


@pytest.mark.parametrize("script", ["getting_started_jax.py", "getting_started_torch.py"])
def test_getting_started_kernels(rng, script):
    """The framework scripts' kernels, called with NumPy instead of JAX/PyTorch tensors."""
    m = current(f"aws-neuron-sdk/{script}")
    a = rng.standard_normal((128, 512)).astype(np.float32)
    b = rng.standard_normal((128, 512)).astype(np.float32)
    np.testing.assert_array_equal(m.nki_tensor_add_kernel(a, b), a + b)


def test_layout_violation_is_a_clear_error(rng):
    """The layout guide's counter-example loads 256 rows into one tile: refused at its line."""
    m = current("aws-neuron-sdk/layout-violation.py")
    x = rng.standard_normal((256, 512)).astype(np.float32)
    with pytest.raises(rn.NkiError, match=r"layout-violation\.py:\d+: a tile has at most 128 partitions"):
        m.tensor_exp_kernel_(x)


def test_python_error_in_an_sdk_fragment_keeps_its_line(rng):
    """layout-loop.py uses an undefined name (i_f) inside the kernel: a NameError whose
    traceback names the kernel file and line."""
    import traceback

    m = current("aws-neuron-sdk/layout-loop.py", stubs=["torch_neuronx"],
                stub_attrs={"torch_neuronx": {"nki_jit": __import__("nki").jit}})
    x = rng.standard_normal((256, 512)).astype(np.float32)
    with pytest.raises(NameError) as e:
        m.tensor_exp_kernel_(x)
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(e.tb)]
    assert any(fn.endswith("layout-loop.py") for fn, _ in frames), frames


# -- the MXFP matmul tutorial for Trn3 (nki-samples mxfp-matmul), unmodified

def _mx():
    kernels = current("nki-samples/mxfp-matmul/mx_kernels.py")
    utils = current("nki-samples/mxfp-matmul/mx_cpu_utils.py")
    import nki.language as nl

    x4 = {ml_dtypes.float8_e5m2: nl.float8_e5m2_x4, ml_dtypes.float8_e4m3fn: nl.float8_e4m3fn_x4,
          ml_dtypes.float4_e2m1fn: nl.float4_e2m1fn_x4}
    return kernels, utils, x4


def _mx_close(out, golden):
    """bf16 output of an fp32 sum: within one bf16 ulp of the golden's fp32 value (the
    tutorial itself checks rtol = atol = 5e-2)."""
    assert out.dtype == BF16 and out.shape == golden.shape
    o = out.astype(np.float32)
    np.testing.assert_allclose(o, golden, rtol=2.0**-8, atol=1e-6 * np.abs(golden).max())


@pytest.mark.parametrize("q", ["float8_e5m2", "float8_e4m3fn", "float4_e2m1fn"])
def test_mx_offline_quantized_matmul(q, rng):
    k, u, x4 = _mx()
    q = getattr(ml_dtypes, q)
    np.random.seed(int(rng.integers(2**31)))  # the tutorial's generator draws from np.random
    _, _, st, st_scale = u.generate_stabilized_mx_data(q, (128, 512))
    _, _, mv, mv_scale = u.generate_stabilized_mx_data(q, (128, 2048))
    out = k.kernel_offline_quantized_mx_matmul(st, st_scale, mv, mv_scale, x4[q])
    assert k.kernel_offline_quantized_mx_matmul.last_result.chip == "trn3"  # platform_target
    _mx_close(out, u.nc_matmul_mx_golden(st, mv, st_scale, mv_scale, q, q))


@pytest.mark.parametrize("qs,qm", [("float4_e2m1fn", "float8_e5m2"), ("float8_e5m2", "float8_e5m2"),
                                   ("float8_e4m3fn", "float8_e4m3fn")])
def test_mx_on_device_quantize_matmul(qs, qm, rng):
    """Quantize-MX on the Vector engine with the documented scale (twice the OCP sample
    algorithm's, which the tutorial's golden uses): stabilized data quantizes exactly under both."""
    k, u, x4 = _mx()
    qs, qm = getattr(ml_dtypes, qs), getattr(ml_dtypes, qm)
    np.random.seed(int(rng.integers(2**31)))
    _, _, st, st_scale = u.generate_stabilized_mx_data(qs, (128, 512))
    mv, _, _, _ = u.generate_stabilized_mx_data(qm, (128, 2048))
    out = k.kernel_on_device_quantize_matmul_mx(st, st_scale, mv.astype(BF16), x4[qs], x4[qm])
    md, ms = u.quantize_mx_golden(mv, qm)
    _mx_close(out, u.nc_matmul_mx_golden(st, md, st_scale, ms, qs, qm))


@pytest.mark.parametrize("use_tensor_copy", [True, False])
def test_mx_copy_strided_quantize_matmul(use_tensor_copy, rng):
    """The interleaved layout built by a strided tensor_copy or DMA, then both operands
    quantized on device: against the unquantized product with the tutorial's tolerance."""
    k, u, x4 = _mx()
    q = ml_dtypes.float8_e5m2
    np.random.seed(int(rng.integers(2**31)))
    st, _, _, _ = u.generate_stabilized_mx_data(q, (512, 128))
    mv, _, _, _ = u.generate_stabilized_mx_data(q, (512, 512))
    out = k.kernel_copy_strided_quantize_matmul_mx(st.astype(BF16), mv.astype(BF16), x4[q],
                                                   use_tensor_copy)
    np.testing.assert_allclose(out.astype(np.float32), st.T @ mv, rtol=5e-2, atol=5e-2)


def test_mx_needs_trn3(rng):
    k, u, x4 = _mx()
    q = ml_dtypes.float8_e5m2
    _, _, st, st_scale = u.generate_stabilized_mx_data(q, (128, 512))
    _, _, mv, mv_scale = u.generate_stabilized_mx_data(q, (128, 2048))
    with pytest.raises(rn.NkiError, match="nc_matmul_mx needs NeuronCore-v4"):
        rn.run(k.kernel_offline_quantized_mx_matmul, st, st_scale, mv, mv_scale, x4[q], chip="trn2")
