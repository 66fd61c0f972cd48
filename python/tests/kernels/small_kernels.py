"""Small kernels written for Rainier's own tests (legacy dialect unless noted)."""

import neuronxcc.nki as nki
import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl
import numpy as np


@nki.jit
def scale_rows(x, factor):
    """out = x * factor, row tiles of 128 with a mask for the last one."""
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    rows, cols = x.shape
    ip = nl.arange(128)[:, None]
    jf = nl.arange(cols)[None, :]
    for i in nl.affine_range((rows + 127) // 128):
        t = nl.load(x[i * 128 + ip, jf], mask=(i * 128 + ip < rows))
        y = nl.multiply(t, factor, mask=(i * 128 + ip < rows))
        nl.store(out[i * 128 + ip, jf], value=y, mask=(i * 128 + ip < rows))
    return out


@nki.jit
def copy_loop_affine(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(x.shape[0] // 128):
        t = nl.load(x[i * 128:(i + 1) * 128, :])
        nl.store(out[i * 128:(i + 1) * 128, :], value=nl.exp(t))
    return out


@nki.jit
def copy_loop_sequential(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    for i in nl.sequential_range(x.shape[0] // 128):
        t = nl.load(x[i * 128:(i + 1) * 128, :])
        nl.store(out[i * 128:(i + 1) * 128, :], value=nl.exp(t))
    return out


@nki.jit
def too_big(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    big = nl.ndarray((128, 80000), dtype=nl.float32, buffer=nl.sbuf)  # 320 KB per partition
    big[:, 0:512] = nl.load(x)
    nl.store(out, value=big[:, 0:512])
    return out


@nki.jit
def raises_inside(x):
    t = nl.load(x)
    raise_here = 1 / 0  # noqa: F841 - a Python error inside the kernel
    return t


@nki.jit
def uses_unsupported(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    y = nl.floor(t)
    nl.store(out, value=y)
    return out


@nki.jit
def reverse_columns(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    nl.store(out, value=nl.copy(t[:, ::-1]))
    return out


@nki.jit
def broadcast_ops(x, row, col):
    """x [P, F] * row [1, F] (partition broadcast) + col [P, 1] (per-partition scalar)."""
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    r = nl.load(row)
    c = nl.load(col)
    y = nl.add(nl.multiply(t, r.broadcast_to(t.shape)), c)
    nl.store(out, value=y)
    return out


@nki.jit
def two_outputs(x):
    a = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    b = nl.ndarray((x.shape[0], 1), dtype=np.float32, buffer=nl.shared_hbm)
    t = nl.load(x)
    nl.store(a, value=nl.square(t))
    nl.store(b, value=nl.max(t, axis=[1]))
    return {"square": a, "rowmax": b}


@nki.jit
def add_tiles(a, b):
    """One [128, 512] tile per SPMD instance along the rows (grid over row tiles)."""
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    i = nl.program_id(0)
    x = nl.load(a[i * 128:(i + 1) * 128, :])
    y = nl.load(b[i * 128:(i + 1) * 128, :])
    nl.store(out[i * 128:(i + 1) * 128, :], value=nl.add(x, y))
    return out


@nki.jit
def relu_by_where(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    nl.store(out, value=nl.where(nl.greater(t, 0.0), t, 0.0))
    return out


@nki.jit
def unary_functions(x):
    """Every ScalarE function nl exposes, one output each."""
    names = ["abs", "sign", "sin", "cos", "arctan", "erf", "erf_dx", "softplus", "mish",
             "gelu_apprx_sigmoid", "gelu_dx", "silu_dx", "exp", "tanh", "sigmoid", "gelu",
             "gelu_apprx_tanh", "silu", "relu", "square"]
    t = nl.load(x)
    outs = {}
    for n in names:
        o = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        nl.store(o, value=getattr(nl, n)(t))
        outs[n] = o
    return outs


@nki.jit
def softmax_and_rmsnorm(x, w):
    sm = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    rn_ = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    g = nl.load(w)
    nl.store(sm, value=nl.softmax(t, axis=1))
    nl.store(rn_, value=nl.rms_norm(t, g.broadcast_to(t.shape), axis=1, n=x.shape[1]))
    return sm, rn_


@nki.jit
def dma_transpose_on_chip(a):
    """b = aᵀ by a DMA transpose of the loaded tile (SBUF to SBUF)."""
    b_sb = nisa.dma_transpose(nl.load(a))
    b = nl.ndarray(b_sb.shape, dtype=b_sb.dtype, buffer=nl.shared_hbm)
    nl.store(b, value=b_sb)
    return b
