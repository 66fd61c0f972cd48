"""Kernels that pin down NKI semantics the tracer must get right (legacy dialect)."""

import neuronxcc.nki as nki
import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl


@nki.jit
def accumulate_then_copy(a):
    """An SBUF accumulator built with +=, then copied to another tile."""
    out = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
    acc = nl.zeros(a.shape, nl.float32, buffer=nl.sbuf)
    for _ in nl.affine_range(3):
        acc += nl.load(a)
    res = nl.ndarray(a.shape, a.dtype, buffer=nl.sbuf)
    res[...] = acc
    nl.store(out, res)
    return out


@nki.jit
def temp_used_after_assign(a):
    """y is copied into buf, buf changes, y is stored: y must keep its own value (2a)."""
    out = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
    y = nl.multiply(nl.load(a), 2.0)
    buf = nl.ndarray(a.shape, nl.bfloat16, buffer=nl.sbuf)
    buf[...] = y
    buf[...] = nl.add(buf, 1.0)
    nl.store(out, y)
    return out


@nki.jit
def psum_zeros_then_assign(x, y):
    out = nl.ndarray((128, 256), nl.float32, buffer=nl.shared_hbm)
    ps = nl.zeros((128, 256), nl.float32, buffer=nl.psum)
    ps[...] = nl.matmul(nl.load(x), nl.load(y), transpose_x=True)
    nl.store(out, ps)
    return out


@nki.jit
def psum_zeros_partial_accumulate(x, y):
    """+= into half the partitions of a zeroed PSUM tile: the other half stays 0."""
    out = nl.ndarray((128, 256), nl.float32, buffer=nl.shared_hbm)
    ps = nl.zeros((128, 256), nl.float32, buffer=nl.psum)
    ps[0:64, :] += nl.matmul(nl.load(x), nl.load(y), transpose_x=True)
    nl.store(out, ps)
    return out


@nki.jit
def psum_zeros_strided_accumulate(x, y):
    """+= into every other column of a zeroed PSUM tile after PSUM was dirtied."""
    out = nl.ndarray((128, 128), nl.float32, buffer=nl.shared_hbm)
    for _ in nl.affine_range(8):
        junk = nl.ndarray((128, 512), nl.float32, buffer=nl.psum)
        junk[...] = nisa.memset((128, 512), 7.0, nl.float32)
        nl.store(out, junk[:, 0:128])
    ps = nl.zeros((128, 128), nl.float32, buffer=nl.psum)
    ps[:, 0:128:2] += nisa.nc_matmul(nl.load(x), nl.load(y))
    nl.store(out, nl.copy(ps))
    return out


@nki.jit
def masked_matmul_accumulate(x, y):
    out = nl.ndarray((128, 256), nl.float32, buffer=nl.shared_hbm)
    xt, yt = nl.load(x), nl.load(y)
    ps = nl.zeros((128, 256), nl.float32, buffer=nl.psum)
    i_k = nl.arange(64)[:, None]
    i_n = nl.arange(256)[None, :]
    ps[...] += nisa.nc_matmul(xt, yt[i_k, i_n], mask=(i_n < 100))
    nl.store(out, nl.copy(ps))
    return out


@nki.jit
def small_psum_blocks(x, y):
    """16 PSUM blocks of 512 B: together 8 KiB, each less than a bank."""
    out = nl.ndarray((16, 128, 128), nl.float32, buffer=nl.shared_hbm)
    xt, yt = nl.load(x), nl.load(y)
    ps = nl.ndarray((16, nl.par_dim(128), 128), nl.float32, buffer=nl.psum)
    for i in nl.affine_range(16):
        ps[i] = nisa.nc_matmul(xt, yt)
    for i in nl.affine_range(16):
        nl.store(out[i], nl.copy(ps[i]))
    return out


@nki.jit
def compute_into_hbm_and_psum(a):
    """hbm[...] = exp(t) (a store), psum[...] = iota (GpSimd cannot write PSUM: a copy)."""
    out = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
    idx = nl.ndarray(a.shape, nl.float32, buffer=nl.shared_hbm)
    out[...] = nl.exp(nl.load(a))
    ps = nl.ndarray(a.shape, nl.float32, buffer=nl.psum)
    ps[...] = nisa.iota(nl.arange(a.shape[0])[:, None] + nl.arange(a.shape[1])[None, :], dtype=nl.float32)
    nl.store(idx, ps)
    return out, idx


@nki.jit
def store_into_argument(a, out):
    """Legacy output-argument style on an SPMD grid."""
    i = nl.program_id(0)
    t = nl.load(a[i * 64:(i + 1) * 64, :])
    nl.store(out[i * 64:(i + 1) * 64, :], nl.add(t, 1.0))


@nki.jit
def mixed_dtypes(a8, b16):
    """int8 + fp16 and fp16 + int8 are both fp16; mean of int32 is fp32."""
    o1 = nl.ndarray(b16.shape, b16.dtype, buffer=nl.shared_hbm)
    o2 = nl.ndarray(b16.shape, b16.dtype, buffer=nl.shared_hbm)
    x, y = nl.load(a8), nl.load(b16)
    s1, s2 = nl.add(x, y), nl.add(y, x)
    assert str(s1.dtype) == str(s2.dtype) == "float16", (s1.dtype, s2.dtype)
    nl.store(o1, s1)
    nl.store(o2, s2)
    return o1, o2


@nki.jit
def gather_rows(table, idx):
    """out[p, :] = table[idx[p], :] (indirect load), then a scatter-add of those rows."""
    out = nl.ndarray((idx.shape[0], table.shape[1]), dtype=table.dtype, buffer=nl.shared_hbm)
    acc = nl.ndarray(table.shape, dtype=table.dtype, buffer=nl.shared_hbm)
    i_p = nl.arange(idx.shape[0])[:, None]
    i_f = nl.arange(table.shape[1])[None, :]
    ix = nl.load(idx)
    rows = nl.load(table[ix[i_p, 0], i_f])
    nl.store(out, value=rows)
    nisa.dma_copy(dst=acc, src=table)
    nisa.dma_copy(dst=acc[ix[i_p, 0], i_f], src=rows, dst_rmw_op=nl.add)
    return out, acc


@nki.jit
def masked_indirect_load(table, idx):
    """Only partitions 64.. load their rows; the rest keep zeros."""
    out = nl.ndarray((128, table.shape[1]), dtype=table.dtype, buffer=nl.shared_hbm)
    i_p = nl.arange(128)[:, None]
    i_f = nl.arange(table.shape[1])[None, :]
    ix = nl.load(idx)
    z = nl.zeros((128, table.shape[1]), dtype=table.dtype)
    z[i_p, i_f] = nl.load(table[ix[i_p, 0], i_f], mask=(i_p >= 64))
    nl.store(out, value=z)
    return out


@nki.jit
def indirect_from_a_view(table, idx):
    """Indices count rows of the view table[0:100], not of the whole tensor."""
    out = nl.ndarray((idx.shape[0], table.shape[1]), dtype=table.dtype, buffer=nl.shared_hbm)
    sub = table[0:100, :]
    ix = nl.load(idx)
    i_p = nl.arange(idx.shape[0])[:, None]
    i_f = nl.arange(table.shape[1])[None, :]
    out[...] = nl.load(sub[ix[i_p, 0], i_f])
    return out


@nki.jit
def int_scatter_add(table, idx, ones):
    acc = nl.ndarray(table.shape, dtype=table.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=acc, src=table)
    i_p = nl.arange(idx.shape[0])[:, None]
    i_f = nl.arange(table.shape[1])[None, :]
    ix = nl.load(idx)
    nisa.dma_copy(dst=acc[ix[i_p, 0], i_f], src=nl.load(ones), dst_rmw_op=nl.add)
    return acc
