"""NKI semantics the tracer must keep: copies and accumulators, deferred PSUM zeros, masks on
matmuls, PSUM blocks, engines' memory reach, output arguments on LNC grids, dtype promotion."""

import pathlib

import numpy as np
import pytest

import rainier.nki as rn
from conftest import close, load_module

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def k():
    return load_module(HERE / "kernels" / "semantics_kernels.py", name="semantics_kernels")


def test_accumulator_then_copy(k, rng):
    a = rng.standard_normal((128, 64)).astype(np.float32)
    close(k.accumulate_then_copy(a), 3.0 * a.astype(np.float64), np.float32)


def test_temporary_keeps_its_value_after_being_copied(k, rng):
    a = rng.standard_normal((128, 64)).astype(np.float32)
    np.testing.assert_array_equal(k.temp_used_after_assign(a), 2.0 * a)


def test_psum_zeros(k, rng):
    x = rng.standard_normal((64, 128)).astype(np.float32)
    y = rng.standard_normal((64, 256)).astype(np.float32)
    ref = x.astype(np.float64).T @ y
    close(k.psum_zeros_then_assign(x, y), ref, np.float32)
    half = np.zeros((128, 256))
    x64 = x[:, :64]
    half[:64] = x64.astype(np.float64).T @ y
    close(k.psum_zeros_partial_accumulate(x64, y), half, np.float32)
    yy = rng.standard_normal((64, 64)).astype(np.float32)
    strided = np.zeros((128, 128))
    strided[:, ::2] = x.astype(np.float64).T @ yy
    close(k.psum_zeros_strided_accumulate(x, yy), strided, np.float32)


def test_masked_matmul_accumulate(k, rng):
    x = rng.standard_normal((64, 128)).astype(np.float32)
    y = rng.standard_normal((64, 256)).astype(np.float32)
    ref = x.astype(np.float64).T @ y
    ref[:, 100:] = 0
    close(k.masked_matmul_accumulate(x, y), ref, np.float32)


def test_small_psum_blocks_share_banks(k, rng):
    x = rng.standard_normal((64, 128)).astype(np.float32)
    y = rng.standard_normal((64, 128)).astype(np.float32)
    ref = np.broadcast_to(x.astype(np.float64).T @ y, (16, 128, 128))
    close(k.small_psum_blocks(x, y), ref, np.float32)


def test_engines_reach_only_their_memories(k, rng):
    a = rng.standard_normal((128, 64)).astype(np.float32)
    out, idx = k.compute_into_hbm_and_psum(a)
    close(out, np.exp(a.astype(np.float64)), np.float32)
    np.testing.assert_array_equal(idx, np.add.outer(np.arange(128), np.arange(64)))


@pytest.mark.parametrize("lnc", [False, True])
def test_output_argument_on_grids(k, rng, lnc):
    import neuronxcc.nki.language as nl

    a = rng.standard_normal((128, 32)).astype(np.float32)
    out = np.zeros_like(a)
    (k.store_into_argument[nl.nc(2)] if lnc else k.store_into_argument[2])(a, out)
    np.testing.assert_array_equal(out, a + np.float32(1.0))


def test_dtype_promotion_is_order_independent(k, rng):
    a8 = rng.integers(-100, 100, (128, 32)).astype(np.int8)
    b16 = rng.standard_normal((128, 32)).astype(np.float16)
    o1, o2 = k.mixed_dtypes(a8, b16)
    want = (a8.astype(np.float32) + b16.astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(o1, want)
    np.testing.assert_array_equal(o2, want)


def test_indirect_gather_and_scatter_add(k, rng):
    table = rng.standard_normal((200, 64)).astype(np.float32)
    idx = rng.integers(0, 200, (96, 1)).astype(np.int32)
    out, acc = k.gather_rows(table, idx)
    np.testing.assert_array_equal(out, table[idx[:, 0]])
    want = table.copy()
    for r in idx[:, 0]:
        want[r] += table[r]
    np.testing.assert_array_equal(acc, want)


def test_indirect_out_of_range_is_an_index_error(k, rng):
    table = rng.standard_normal((16, 8)).astype(np.float32)
    idx = np.array([[3], [16]], dtype=np.int32)
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 128"):
        k.gather_rows(table, idx)


def test_masked_indirect_load_keeps_its_rows(k, rng):
    table = rng.standard_normal((300, 16)).astype(np.float32)
    idx = rng.integers(0, 300, (128, 1)).astype(np.int32)
    want = np.zeros((128, 16), np.float32)
    want[64:] = table[idx[64:, 0]]
    np.testing.assert_array_equal(k.masked_indirect_load(table, idx), want)


def test_indirect_indices_are_bounded_by_the_view(k, rng):
    table = rng.standard_normal((300, 8)).astype(np.float32)
    ok = rng.integers(0, 100, (16, 1)).astype(np.int32)
    np.testing.assert_array_equal(k.indirect_from_a_view(table, ok), table[ok[:, 0]])
    bad = ok.copy()
    bad[0, 0] = 150
    with pytest.raises(IndexError, match="index 150 is out of bounds for axis 0 with size 100"):
        k.indirect_from_a_view(table, bad)


def test_integer_indices_and_scatter_add_are_exact(k):
    big = 16_777_217  # 2^24 + 1: not an fp32 value
    table = np.full((20, 4), big, dtype=np.int32)
    idx = (np.arange(128) % 10).reshape(128, 1).astype(np.int32)
    ones = np.ones((128, 4), dtype=np.int32)
    want = table.copy()
    want[:10] += (13 - (np.arange(10) >= 8)).reshape(10, 1)  # rows 0..7 picked 13 times, 8..9 12
    np.testing.assert_array_equal(k.int_scatter_add(table, idx, ones), want)


def test_hbm_bitcast_view_moves_bits(rng):
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def bits(x):
        out = nl.ndarray(x.shape, dtype=nl.int32, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, dtype=nl.int32, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x.view(nl.int32))
        nisa.dma_copy(dst=out, src=t)
        return out

    x = rng.standard_normal((128, 16)).astype(np.float32)
    np.testing.assert_array_equal(bits(x), x.view(np.int32))


def test_matmul_accumulate_none_tracks_partitions(rng):
    """accumulate=None: the second matmul writes other partitions, so it must not accumulate
    onto whatever that reused PSUM held."""
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def halves(a, b):
        out = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
        for _ in nl.affine_range(8):  # every PSUM bank holds 100s
            junk = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
            nisa.memset(junk, 100.0)
            tmp = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_copy(dst=tmp, src=junk)
            nisa.dma_copy(dst=out, src=tmp[:, 0:64])
        sa = nl.ndarray((32, 64), dtype=nl.float32, buffer=nl.sbuf)
        sb = nl.ndarray((32, 64), dtype=nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=sa, src=a)
        nisa.dma_copy(dst=sb, src=b)
        ps = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(ps[0:64, :], sa, sb)
        nisa.nc_matmul(ps[64:128, :], sa, sb)
        res = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_copy(dst=res, src=ps)
        nisa.dma_copy(dst=out, src=res)
        return out

    a = rng.standard_normal((32, 64)).astype(np.float32)
    b = rng.standard_normal((32, 64)).astype(np.float32)
    ref = a.astype(np.float64).T @ b
    close(halves(a, b), np.vstack([ref, ref]), np.float32)


def test_fast_exponential_on_trn3(rng):
    """nisa.exponential (NeuronCore-v4): exp(x - max) with the running sum through the Vector
    accumulator registers over two calls (reset_reduce, then reduce); refused on trn2."""
    import nki
    import nki.isa as nisa
    import nki.language as nl

    import rainier.nki as rn

    @nki.jit
    def softmax_parts(x, m):
        out = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.shared_hbm)
        sums = nl.ndarray((x.shape[0], 1), dtype=nl.float32, buffer=nl.shared_hbm)
        xt = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.sbuf)
        mt = nl.ndarray((x.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=xt, src=x)
        nisa.dma_copy(dst=mt, src=m)
        y = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.sbuf)
        s = nl.ndarray((x.shape[0], 1), dtype=nl.float32, buffer=nl.sbuf)
        half = x.shape[1] // 2
        nisa.exponential(dst=y[:, 0:half], src=xt[:, 0:half], max_value=mt,
                         reduce_cmd=nisa.reduce_cmd.reset_reduce)
        nisa.exponential(dst=y[:, half:], src=xt[:, half:], max_value=mt, reduce_res=s,
                         reduce_cmd=nisa.reduce_cmd.reduce)
        nisa.dma_copy(dst=out, src=y)
        nisa.dma_copy(dst=sums, src=s)
        return out, sums

    x = rng.uniform(-4, 2, (128, 96)).astype(np.float32)
    m = rng.uniform(-1, 1, (128, 1)).astype(np.float32)
    y, s = rn.run(softmax_parts, x, m, chip="trn3").outputs
    want = np.exp(x.astype(np.float64) - m)
    close(y, want, np.float32, "exponential")
    close(s, want.sum(axis=1, keepdims=True), np.float32, "running sum")
    with pytest.raises(rn.NkiError, match="NeuronCore-v4"):
        rn.run(softmax_parts, x, m, chip="trn2")


def test_partition_broadcast_reaches_gpsimd(rng):
    """A small fp32 partition broadcast stays in PSUM for VectorE, and is copied to SBUF for a
    GpSimd instruction (GpSimd cannot reach PSUM)."""
    import neuronxcc.nki as nki
    import neuronxcc.nki.isa as nisa
    import neuronxcc.nki.language as nl

    @nki.jit
    def add_row(x, row):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        xt = nl.load(x)
        r = nl.load(row)
        b = r.broadcast_to((128, 64))
        y = nisa.tensor_tensor(xt, b, op=nl.add, engine=nisa.gpsimd_engine)
        z = nisa.tensor_tensor(y, b, op=nl.add)
        nl.store(out, value=z)
        return out

    x = rng.standard_normal((128, 64)).astype(np.float32)
    row = rng.standard_normal((1, 64)).astype(np.float32)
    close(add_row(x, row), x.astype(np.float64) + 2 * row, np.float32)


def test_sbuf_spilling_keeps_values(rng):
    """Four 64 KiB-per-partition tiles live at once exceed trn1's 192 KiB SBUF partitions: the
    compiler spills (stores to HBM after a last use, reloads before the next) and the sum is
    still NumPy's, bit for bit; the run reports the spills. trn2's 192 KiB too; trn3's bigger
    SBUF needs none."""
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def sum4(a, b, c, d):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        tiles = []
        for x in (a, b, c, d):
            t = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=x)
            tiles.append(t)
        acc = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=acc, data1=tiles[0], data2=tiles[1], op=nl.add)
        for t in tiles[2:]:
            nisa.tensor_tensor(dst=acc, data1=acc, data2=t, op=nl.add)
        nisa.dma_copy(dst=out, src=acc)
        return out

    xs = [rng.standard_normal((128, 16384)).astype(np.float32) for _ in range(4)]
    res = rn.run(sum4, *xs, chip="trn1")
    np.testing.assert_array_equal(res.outputs, ((xs[0] + xs[1]) + xs[2]) + xs[3])
    assert res.summary["sbuf_spills"] >= 1
    assert res.summary["sbuf_peak_bytes_per_partition"] <= 192 * 1024
    small = [x[:, :4096] for x in xs]
    assert rn.run(sum4, *small, chip="trn1").summary["sbuf_spills"] == 0


def test_ap_dtype_reinterprets_inputs_only_and_stale_views_fail(rng):
    """``.ap(dtype=...)`` views a kernel input's bytes as another dtype; a view made before it
    (offsets in the old dtype) is refused, and so is reinterpreting a non-input."""
    import nki
    import nki.isa as nisa
    import nki.language as nl

    @nki.jit
    def stale(x):
        out = nl.ndarray((128, 64), dtype=nl.uint16, buffer=nl.shared_hbm)
        early = x[0:128, 0:32]
        x.ap(pattern=[[64, 128], [1, 64]], offset=0, dtype=nl.uint16)
        t = nl.ndarray((128, 32), dtype=nl.uint32, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=early)
        return out

    x = rng.integers(0, 2**31, (128, 32), dtype=np.uint32)
    with pytest.raises(rn.NkiError, match="made before .ap"):
        rn.run(stale, x, chip="trn3")

    @nki.jit
    def halves(x):
        out = nl.ndarray((128, 64), dtype=nl.uint16, buffer=nl.shared_hbm)
        t = nl.ndarray((128, 64), dtype=nl.uint16, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x.ap(pattern=[[64, 128], [1, 64]], offset=0, dtype=nl.uint16))
        nisa.dma_copy(dst=out, src=t)
        return out

    np.testing.assert_array_equal(rn.run(halves, x, chip="trn3").outputs, x.view(np.uint16))
