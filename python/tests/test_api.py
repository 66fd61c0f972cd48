"""rainier.nki's own API: results, traces, benchmark, chip selection, errors, determinism,
the command line."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import rainier.nki as rn
from conftest import close, load_module

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def k():
    return load_module(HERE / "kernels" / "small_kernels.py", name="small_kernels")


def test_run_result_fields_and_trace(k, rng, tmp_path):
    x = rng.standard_normal((300, 256)).astype(np.float32)
    res = rn.run(k.scale_rows, x, 2.5, chip="trn1")
    np.testing.assert_array_equal(res.outputs, x * np.float32(2.5))
    assert res.chip == "trn1" and res.time_ns > 0 and res.instructions > 0
    assert set(res.engines) == {"tensor", "vector", "scalar", "gpsimd", "dma"}
    v = res.engines["vector"]
    assert v["instructions"] >= 3 and 0 < v["utilization"] <= 1 and v["busy_ns"] > 0
    assert res.engines["dma"]["bytes"] == 2 * x.nbytes
    path = tmp_path / "t.json"
    res.write_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e.get("ph") == "X"]
    assert slices and all("small_kernels.py:" in e["name"] for e in slices)
    assert any(e["args"]["source"].endswith("small_kernels.py:18") for e in slices)  # the multiply


def test_time_only_run(k):
    from neuronxcc.nki.typing import tensor

    res = rn.run(k.copy_loop_affine, tensor[[1024, 512], np.float32])
    assert res.outputs is None and res.time_ns > 0


def test_benchmark_latency_is_the_simulated_time(k, rng):
    import neuronxcc.nki as nki

    x = rng.standard_normal((256, 512)).astype(np.float32)
    b = nki.benchmark(warmup=2, iters=5)(k.copy_loop_affine)
    b(x)
    lat = b.benchmark_result.nc_latency
    assert lat.get_latency_percentile(50) == lat.get_latency_percentile(99)
    # NCLatency counts the launch overhead besides the instructions' own time.
    res = b.last_result
    assert res.launch_overhead_ns > 0
    assert lat.get_latency_percentile(99) == pytest.approx(res.device_latency_ns / 1000)
    assert res.device_latency_ns == pytest.approx(res.time_ns + res.launch_overhead_ns)


def test_sequential_range_is_ordered_by_data_only(k, rng):
    """`sequential_range` is not a barrier (the compiler only respects the loop-carried
    dependencies): iterations without any overlap as `affine_range` ones do."""
    x = rng.standard_normal((1024, 512)).astype(np.float32)
    a = rn.run(k.copy_loop_affine, x)
    s = rn.run(k.copy_loop_sequential, x)
    close(a.outputs, np.exp(x.astype(np.float64)), np.float32)
    np.testing.assert_array_equal(a.outputs, s.outputs)
    assert s.time_ns == pytest.approx(a.time_ns), (a.time_ns, s.time_ns)


def test_chip_from_environment(k, rng, monkeypatch):
    x = rng.standard_normal((128, 64)).astype(np.float32)
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "trn3")
    assert rn.run(k.scale_rows, x, 1.0).chip == "trn3"
    assert rn.run(k.scale_rows, x, 1.0, chip="trn1").chip == "trn1"


def test_chips_differ_in_time(k, rng):
    x = rng.standard_normal((1024, 512)).astype(np.float32)
    t = {c: rn.run(k.copy_loop_affine, x, chip=c).time_ns for c in ("trn1", "trn2", "trn3")}
    assert t["trn1"] != t["trn2"] != t["trn3"]


def test_dma_transpose_uses_the_hardware_transpose_on_v3(k, rng):
    # NeuronCore-v3+ has the DMA engines' transpose (one instruction at half a copy's rate);
    # v2 moves the tile element by element, one dma_copy per source column.
    a = rng.standard_normal((128, 128)).astype(np.float16)
    for chip, instruction in (("trn2", "dma_transpose "), ("trn3", "dma_transpose "), ("trn1", None)):
        res = rn.run(k.dma_transpose_on_chip, a, chip=chip)
        np.testing.assert_array_equal(res.outputs, a.T)
        text = res.program_text()
        if instruction:
            assert text.count(instruction) == 1, chip
        else:
            assert "dma_transpose" not in text and text.count("dma_copy") >= 128


def test_negative_stride_and_broadcasts(k, rng):
    x = rng.standard_normal((128, 96)).astype(np.float32)
    np.testing.assert_array_equal(k.reverse_columns(x), x[:, ::-1])
    row = rng.standard_normal((1, 96)).astype(np.float32)
    col = rng.standard_normal((128, 1)).astype(np.float32)
    np.testing.assert_array_equal(k.broadcast_ops(x, row, col), (x * row) + col)


def test_dict_outputs(k, rng):
    x = rng.standard_normal((64, 40)).astype(np.float32)
    out = k.two_outputs(x)
    np.testing.assert_array_equal(out["square"], x * x)
    np.testing.assert_array_equal(out["rowmax"], x.max(axis=1, keepdims=True))


def test_deterministic(k, rng, tmp_path):
    x = rng.standard_normal((300, 256)).astype(np.float32)
    r1 = rn.run(k.scale_rows, x, 3.0)
    r2 = rn.run(k.scale_rows, x, 3.0)
    assert r1.time_ns == r2.time_ns
    np.testing.assert_array_equal(r1.outputs, r2.outputs)
    r1.write_trace(tmp_path / "a.json")
    r2.write_trace(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_sbuf_overflow_names_tensor_line_and_bytes(k, rng):
    x = rng.standard_normal((128, 512)).astype(np.float32)
    with pytest.raises(rn.NkiError) as e:
        rn.run(k.too_big, x, chip="trn1")
    msg = str(e.value)
    assert "small_kernels.py:44" in msg and "320000 bytes" in msg and "SBUF" in msg


def test_python_error_in_kernel_keeps_its_line(k, rng):
    x = rng.standard_normal((128, 512)).astype(np.float32)
    with pytest.raises(ZeroDivisionError) as e:
        rn.run(k.raises_inside, x)
    import traceback

    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(e.tb)]
    assert any(fn.endswith("small_kernels.py") and ln == 53 for fn, ln in frames)


def test_unsupported_api_names_itself(k, rng):
    x = rng.standard_normal((128, 512)).astype(np.float32)
    with pytest.raises(rn.NotSupportedError, match=r"not supported by Rainier: nl\.floor \(.*small_kernels\.py:61\)"):
        rn.run(k.uses_unsupported, x)


def test_bad_arguments(k, rng):
    x = rng.standard_normal((128, 512))
    with pytest.raises(rn.NotSupportedError, match="float64"):
        rn.run(k.copy_loop_affine, x)
    with pytest.raises(ValueError, match="unknown chip 'trn9'"):
        rn.run(k.copy_loop_affine, x.astype(np.float32), chip="trn9")
    with pytest.raises(rn.NkiError, match="out of bounds"):
        rn.run(k.scale_rows.func.__globals__["nki"].jit(_oob_kernel), x.astype(np.float32))


def _oob_kernel(x):
    import neuronxcc.nki.language as nl

    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x[0:128, 0:512])
    nl.store(out[0:128, 0:512], value=t)
    ip = nl.arange(128)[:, None]
    jf = nl.arange(512)[None, :]
    nl.store(out[ip + 64, jf], value=t)  # rows 64..191 of 128, no mask
    return out


def test_install_provides_both_dialects():
    import neuronxcc.nki as legacy
    import neuronxcc.nki.isa
    import neuronxcc.nki.language
    import neuronxcc.nki.typing  # noqa: F401
    import nki
    import nki.isa
    import nki.language  # noqa: F401

    assert callable(legacy.jit) and callable(legacy.simulate_kernel) and callable(nki.simulate)
    assert nki.language.tile_size.pmax == 128


def test_command_line(tmp_path):
    kernel = HERE / "kernels" / "small_kernels.py"
    trace = tmp_path / "t.json"
    cmd = [sys.executable, "-m", "rainier.nki", f"{kernel}::scale_rows", "--chip", "trn2",
           "--random", "x=300x128:float32", "--arg", "factor=2.0", "--json", "--trace", str(trace),
           "--seed", "7"]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(p.stdout)
    assert summary["chip"] == "trn2" and summary["time_ns"] > 0
    assert "seed 7" in p.stderr and trace.stat().st_size > 0
    human = subprocess.run(cmd[:-5], capture_output=True, text=True, check=True).stdout
    assert "device time" in human and "vector" in human
    bad = subprocess.run([sys.executable, "-m", "rainier.nki", f"{kernel}::nope"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "has no function 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("dim", ["nc_major", "nc_minor"])
def test_lnc2_grid_runs_on_two_cores(k, rng, dim, tmp_path):
    """An nl.nc(2) grid dimension: half the instances on each NeuronCore of a logical core;
    the device time is the slower core's, about half the one-core time."""
    import neuronxcc.nki.language as nl

    a = rng.standard_normal((1024, 512)).astype(np.float32)
    b = rng.standard_normal((1024, 512)).astype(np.float32)
    g = nl.spmd_dim(nl.nc(2), 4) if dim == "nc_major" else nl.spmd_dim(4, nl.nc(2))
    two = rn.run(k.add_tiles[g], a, b, chip="trn2")
    one = rn.run(k.add_tiles[8], a, b, chip="trn2")
    np.testing.assert_array_equal(two.outputs, a + b)
    np.testing.assert_array_equal(one.outputs, a + b)
    assert [c["core"] for c in two.summary["cores"]] == [0, 1]
    assert 0.4 * one.time_ns < two.time_ns < 0.75 * one.time_ns, (one.time_ns, two.time_ns)
    two.write_trace(tmp_path / "lnc.json")
    events = json.loads((tmp_path / "lnc.json").read_text())["traceEvents"]
    assert {e["pid"] for e in events if e.get("ph") == "X"} == {1, 2}


def test_where_selects(k, rng):
    x = rng.standard_normal((128, 300)).astype(np.float32)
    np.testing.assert_array_equal(k.relu_by_where(x), np.where(x > 0, x, 0).astype(np.float32))


def test_unary_functions_match_numpy(k, rng):
    from math import erf

    x = rng.uniform(-3, 3, (128, 64)).astype(np.float32)
    xd = x.astype(np.float64)
    verf = np.vectorize(erf)
    sig = 1 / (1 + np.exp(-xd))
    sp = np.log1p(np.exp(xd))
    cdf = 0.5 * (1 + verf(xd / np.sqrt(2)))
    want = {
        "abs": np.abs(xd), "sign": np.sign(xd), "sin": np.sin(xd), "cos": np.cos(xd),
        "arctan": np.arctan(xd), "erf": verf(xd), "erf_dx": 2 / np.sqrt(np.pi) * np.exp(-xd * xd),
        "softplus": sp, "mish": xd * np.tanh(sp), "gelu_apprx_sigmoid": xd / (1 + np.exp(-1.702 * xd)),
        "gelu_dx": cdf + xd * np.exp(-xd * xd / 2) / np.sqrt(2 * np.pi), "silu_dx": sig * (1 + xd * (1 - sig)),
        "exp": np.exp(xd), "tanh": np.tanh(xd), "sigmoid": sig, "gelu": xd * cdf,
        "gelu_apprx_tanh": 0.5 * xd * (1 + np.tanh(np.sqrt(2 / np.pi) * (xd + 0.044715 * xd ** 3))),
        "silu": xd * sig, "relu": np.maximum(xd, 0), "square": xd * xd,
    }
    got = k.unary_functions(x)
    for name, w in want.items():
        close(got[name], w, np.float32, name)


def test_command_line_errors_are_one_line(tmp_path):
    kernel = HERE / "kernels" / "small_kernels.py"
    cases = [
        ([f"{kernel}::raises_inside", "--random", "x=128x512:float32"], "small_kernels.py:53: ZeroDivisionError"),
        ([f"{kernel}::scale_rows", "--random", "x=128x64:float32", "--arg", "factor=2.0",
          "--trace", str(tmp_path / "no" / "t.json")], "FileNotFoundError"),
        ([f"{kernel}::scale_rows", "--random", "x=128x64:float32", "--grid", "0"], "--grid 0"),
        ([f"{kernel}::scale_rows", "--random", "x=0x64:float32", "--arg", "factor=1.0"], "empty"),
        ([f"{kernel}::copy_loop_affine", "--random", "x=128x64:float32", "--time-only", "--save", "o"], "--save needs values"),
        ([f"{kernel}::copy_loop_affine", "--random", "x=128,1000000000:float32", "--time-only"],
         "the kernel's HBM tensors need more than"),
        ([f"{kernel}::copy_loop_affine", "--random", "x=128x64:float99"], "unknown dtype 'float99'"),
    ]
    for args, want in cases:
        p = subprocess.run([sys.executable, "-m", "rainier.nki", *args], capture_output=True, text=True)
        err = [l for l in p.stderr.strip().splitlines() if not l.startswith("random inputs")]
        assert p.returncode != 0 and len(err) == 1 and want in err[0], (args, p.stderr)
        assert "Traceback" not in p.stderr


def test_range_keywords_and_transpose_mode(rng):
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def k(x):
        out = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.shared_hbm)
        acc = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.sbuf)
        nisa.memset(acc, 0.0)
        for i in nl.sequential_range(0, stop=4, step=2):
            t = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=x[i])
            nisa.tensor_tensor(dst=acc, data1=acc, data2=t, op=nl.add)
        ps = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
        ident = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.sbuf)
        nisa.memset(ident, 0.0)
        nisa.nc_matmul(ps, acc, ident, is_transpose=True)  # the data is the stationary
        res = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=res, src=ps)
        nisa.dma_copy(dst=out, src=res)
        return out

    x = rng.standard_normal((4, 128, 128)).astype(np.float32)
    np.testing.assert_array_equal(k(x), (x[0] + x[2]).T)


def test_softmax_and_rms_norm(k, rng):
    x = (rng.standard_normal((128, 300)) * 3).astype(np.float32)
    w = rng.standard_normal((1, 300)).astype(np.float32)
    sm, rms = k.softmax_and_rmsnorm(x, w)
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(axis=1, keepdims=True))
    close(sm, e / e.sum(axis=1, keepdims=True), np.float32, "softmax")
    close(rms, xd / np.sqrt((xd * xd).mean(axis=1, keepdims=True) + 1e-6) * w, np.float32, "rms_norm")


def test_validate_reports_published_points():
    """`python -m rainier.nki validate` runs timings.json points (two quick ones here) and
    reports predicted vs measured; accuracy is issue 13's subject, not asserted."""
    from conftest import need_shared

    shared = need_shared().parent
    p = subprocess.run([sys.executable, "-m", "rainier.nki", "validate", "--shared", str(shared),
                        "--only", "layernorm-tutorial-v1", "--only", "mamba-tutorial-v1-small",
                        "--json"], capture_output=True, text=True, check=True)
    out = json.loads(p.stdout)
    assert [r["id"] for r in out["points"]] == ["layernorm-tutorial-v1", "mamba-tutorial-v1-small"]
    for r in out["points"]:
        assert r["predicted_us"] > 0 and r["measured_us"] > 0 and "error_percent" in r
    bad = subprocess.run([sys.executable, "-m", "rainier.nki", "validate", "--shared", str(shared),
                          "--only", "nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no point nope" in bad.stderr


def test_validate_targets():
    """Issue 13's calibration targets on the published trn1 kernels of timings.json: median
    |error| <= 15 % and every point within 2x; every point runs (mamba v2 at seq 8192 only
    with SBUF spilling, which it reports). The scaling table runs in `validate` itself."""
    from conftest import need_shared

    shared = need_shared().parent
    p = subprocess.run([sys.executable, "-m", "rainier.nki", "validate", "--shared", str(shared),
                        "--no-scaling", "--json"], capture_output=True, text=True, check=True)
    out = json.loads(p.stdout)
    assert len(out["points"]) >= 10
    assert out["median_abs_error_percent"] <= 15.0, out["median_abs_error_percent"]
    for r in out["points"]:
        assert "predicted_us" in r, r
        q = r["predicted_us"] / r["measured_us"]
        assert 0.5 <= q <= 2.0, (r["id"], q)
