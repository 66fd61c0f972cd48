"""``nki.language`` for both dialects (the legacy ``neuronxcc.nki.language`` and the current
``nki.language``): dtypes, buffers, index expressions, loops, tensor creation, and the
high-level operations whose instructions the compiler chooses (see ``_ops``)."""

from __future__ import annotations

import builtins

import ml_dtypes
import numpy as np

from . import _core as c
from . import _ops as o
from ._core import (  # noqa: F401 - re-exported NKI names
    DSlice, Mask, View, arange, ds, hbm, mgrid, par_dim, private_hbm, psum, sbuf, shared_hbm,
    tfloat32, unsupported,
)

# -- dtypes (NumPy / ml_dtypes objects, so `.astype(nl.bfloat16)` works on host arrays)
float32 = np.float32
float16 = np.float16
bfloat16 = ml_dtypes.bfloat16
float8_e4m3 = ml_dtypes.float8_e4m3
float8_e4m3fn = ml_dtypes.float8_e4m3fn
float8_e5m2 = ml_dtypes.float8_e5m2
int32 = np.int32
uint8 = np.uint8
int8 = np.int8
int16 = np.int16
uint16 = np.uint16
uint32 = np.uint32
bool_ = np.bool_
# NeuronCore-v4 MX: 4-packed data types and the OCP e8m0 scale type.
float8_e5m2_x4 = c.float8_e5m2_x4
float8_e4m3fn_x4 = c.float8_e4m3fn_x4
float4_e2m1fn_x4 = c.float4_e2m1fn_x4
if hasattr(ml_dtypes, "float8_e8m0fnu"):
    float8_e8m0fnu = ml_dtypes.float8_e8m0fnu


class _Finfo:
    """``nl.fp32``: float32 with its range (``nl.fp32.min`` is the most negative finite)."""

    dtype = np.dtype(np.float32)
    min = float(np.finfo(np.float32).min)
    max = float(np.finfo(np.float32).max)

    def __repr__(self):
        return "nl.fp32"


fp32 = _Finfo()


class _TileSize:
    """``nl.tile_size``: the hardware tile limits."""

    pmax = 128
    psum_fmax = 512
    gemm_stationary_fmax = 128
    gemm_moving_fmax = 512
    bn_stats_fmax = 512
    psum_min_align = 4
    sbuf_min_align = 64

    @property
    def total_available_sbuf_size(self):
        """SBUF bytes per partition of the chip being traced (from rainier-arch)."""
        from .. import _native
        from ._runner import chip_of

        t = c._state.tracer
        return _native.core_params(t.chip if t is not None else chip_of())[1]


tile_size = _TileSize()


# -- loops


def _range_args(start, stop, step):
    """``range(start, stop, step)`` with NKI's signature ``(start, stop=None, step=1)``."""
    if stop is None:
        start, stop = 0, start
    return range(int(start), int(stop), int(step))


def affine_range(start, stop=None, step=1, **_):
    """Iterations without loop-carried dependencies: they may overlap in time."""
    return iter(_range_args(start, stop, step))


def static_range(start, stop=None, step=1, **_):
    return iter(_range_args(start, stop, step))


def sequential_range(start, stop=None, step=1, **_):
    """Iterations in program order. Not a barrier: as the Neuron compiler does, only the data
    dependencies between iterations order them (tracked like any other), so loads of the next
    iteration may overlap compute of this one (the fully optimised matmul tutorial reaches 85 %
    of peak with its K loop a ``sequential_range``)."""
    return iter(_range_args(start, stop, step))


def dynamic_range(start, stop=None, step=1, **_):
    return sequential_range(start, stop, step)


# -- SPMD


def program_id(axis=0):
    t = c.tracer()
    axis = int(axis)
    if axis >= len(t.program_ids):
        return 0
    return t.program_ids[axis]


def num_programs(axes=None):
    t = c.tracer()
    if axes is None:
        return int(np.prod(t.grid)) if t.grid else 1
    if isinstance(axes, (tuple, list)):
        return int(np.prod([t.grid[a] if a < len(t.grid) else 1 for a in axes]))
    return t.grid[axes] if axes < len(t.grid) else 1


def program_ndim():
    return len(c.tracer().grid)


class CoreDim(int):
    """A launch-grid dimension whose instances are spread over ``cores`` NeuronCores (a
    logical NeuronCore, LNC=2 on trn2/trn3): instance ``i`` runs on core
    ``(i // stride) % cores``."""

    def __new__(cls, size, cores, stride):
        v = super().__new__(cls, int(size))
        v.cores, v.stride = int(cores), int(stride)
        return v

    def __mul__(self, m):
        return spmd_dim(self, m)

    def __rmul__(self, m):
        return spmd_dim(m, self)


def nc(n):
    """``nl.nc(n)``: a launch-grid dimension of ``n`` instances, one per NeuronCore."""
    return CoreDim(n, n, 1)


def spmd_dim(*dims):
    """``nl.spmd_dim(nl.nc(2), 4)`` (instances 0–3 on core 0) or ``nl.spmd_dim(4, nl.nc(2))``
    (even instances on core 0): a grid dimension of the product of ``dims``."""
    size = int(np.prod([int(d) for d in dims]))
    cores = [(k, d) for k, d in enumerate(dims) if isinstance(d, CoreDim)]
    if not cores:
        return size
    if len(cores) > 1:
        c.fail("nl.spmd_dim takes one nl.nc(...) dimension")
    k, d = cores[0]
    inner = int(np.prod([int(x) for x in dims[k + 1:]]))
    return CoreDim(size, d.cores, d.stride * inner)


# -- tensors


def _buffer_name(buffer):
    if buffer is None:
        return "sbuf"
    if isinstance(buffer, c.Buffer):
        return buffer.name
    return str(buffer)


def ndarray(shape, dtype, buffer=None, name="", **_):
    """A tensor in ``buffer`` (SBUF by default). HBM tensors a kernel returns are its outputs."""
    b = _buffer_name(buffer)
    if isinstance(shape, int):
        shape = (shape,)
    if b in ("hbm", "shared_hbm", "private_hbm"):
        t = c.tracer()
        if b == "shared_hbm" and t.grid and any(t.program_ids):
            # Every SPMD instance sees the same shared tensor: the k-th one created.
            if t.shared_cursor < len(t.shared):
                v = t.shared[t.shared_cursor]
                t.shared_cursor += 1
                return v
        v = c.hbm_tensor(shape, dtype, "scratch", name)
        if b == "shared_hbm":
            t.shared.append(v)
            t.shared_cursor = len(t.shared)
        return v
    if len(shape) == 1:
        shape = (shape[0], 1) if not isinstance(shape[0], par_dim) else (shape[0], 1)
    return c.Tensor(shape, dtype, b, name).full()


def zeros(shape, dtype, buffer=None, name="", **_):
    v = ndarray(shape, dtype, buffer, name)
    if not v.tensor.on_chip:
        unsupported("nl.zeros in HBM")
    if v.tensor.buffer == "psum":
        # Deferred: the first matmul into each region starts a fresh accumulation instead.
        v.tensor.zero_pending = [[0, v.tensor.spec["bytes"]]]
    else:
        o.emit_memset(v, 0.0)
    return v


def full(shape, fill_value, dtype, buffer=None, name="", **_):
    v = ndarray(shape, dtype, buffer, name)
    if not v.tensor.on_chip:
        unsupported("nl.full in HBM")
    o.emit_memset(v, fill_value)
    return v


def ones(shape, dtype, buffer=None, name="", **_):
    return full(shape, 1.0, dtype, buffer, name)


def zeros_like(a, dtype=None, buffer=None, name="", **_):
    return zeros(a.shape, dtype or a.dtype, buffer or a.buffer, name)


def empty_like(a, dtype=None, buffer=None, name="", **_):
    return ndarray(a.shape, dtype or a.dtype, buffer or a.buffer, name)


def shared_constant(constant, dtype=None, **_):
    """A constant HBM tensor holding ``constant`` (a NumPy array), loaded with the inputs."""
    arr = np.asarray(constant)
    if dtype is not None:
        arr = arr.astype(c.np_dtype(dtype))
    return c.tracer().constant(arr, "constant")


def shared_identity_matrix(n, dtype=np.uint8, **_):
    """An ``n × n`` identity matrix in HBM."""
    return c.tracer().constant(np.eye(int(n), dtype=c.np_dtype(dtype)), "identity")


def is_hbm(buffer):
    return _buffer_name(buffer) in ("hbm", "shared_hbm", "private_hbm")


def is_sbuf(buffer):
    return _buffer_name(buffer) == "sbuf"


def is_psum(buffer):
    return _buffer_name(buffer) == "psum"


def is_on_chip(buffer):
    return is_sbuf(buffer) or is_psum(buffer)


# -- data movement


def load(src, mask=None, dtype=None, **_):
    return o.load(src, mask=mask, dtype=dtype)


def store(dst, value, mask=None, **_):
    o.store(dst, value, mask=mask)


def copy(src, mask=None, dtype=None, **_):
    return o.copy(src, dtype=dtype, mask=mask)


def load_transpose2d(src, mask=None, dtype=None, **_):
    """Loads ``src[F, P]`` as a ``[P, F]`` tile: a DMA whose SBUF side walks the columns."""
    if len(src.shape) != 2:
        c.fail("nl.load_transpose2d takes a 2-D HBM tensor")
    f, p = src.shape
    out = o.fresh((p, f), dtype or src.dtype)
    (s0, n0, _), (s1, n1, _) = src.axes
    swapped = View(src.tensor, src.p0, src.off, [(s1, n1, False), (s0, n0, False)], src.dt)
    r = o.masked(mask, out, swapped)
    if r is None:
        return out
    i = o.emit_dma(r[0], r[1])
    return o.produced(out, i)


def broadcast_to(src, shape=None, **kw):
    return o.broadcast_to(src, shape if shape is not None else kw["shape"])


def expand_dims(data, axis):
    shape = list(data.shape)
    axis = int(axis) % (len(shape) + 1)
    shape.insert(axis, 1)
    return c.reshape_view(data, shape)


def static_cast(input_data, dtype):
    return o.copy(input_data, dtype=dtype)


# -- compute


def matmul(x, y, transpose_x=False, mask=None, **_):
    """``x @ y`` into PSUM (fp32). With ``transpose_x`` x is ``[K, M]``; otherwise ``[M, K]``
    and the compiler transposes it on the Tensor engine first."""
    if not transpose_x:
        xt = o.transpose(x)
        x = o.fresh(xt.shape, x.dtype)
        o.emit_copy(x, xt)
    return o.nc_matmul(x, y, mask=mask)


def transpose(x, dtype=None, mask=None, **_):
    return o.transpose(x, dtype=dtype, mask=mask)


def _binary(name):
    def f(x, y, dtype=None, mask=None, **_):
        return o.binary(x, y, o.ALU[name], dtype=_dt(dtype), mask=mask)

    f.__name__ = name
    f._nki_name = name
    return f


def _dt(dtype):
    """NKI's comparisons default to ``dtype=bool``: a 0/1 uint8 tile."""
    return np.uint8 if dtype is bool else dtype


add = _binary("add")
subtract = _binary("subtract")
multiply = _binary("multiply")
divide = _binary("divide")
maximum = _binary("maximum")
minimum = _binary("minimum")
def _comparison(name):
    def f(x, y, dtype=bool, mask=None, **_):
        return o.binary(x, y, o.ALU[name], dtype=_dt(dtype), mask=mask)

    f.__name__ = name
    f._nki_name = name
    return f


equal = _comparison("equal")
not_equal = _comparison("not_equal")
greater = _comparison("greater")
greater_equal = _comparison("greater_equal")
less = _comparison("less")
less_equal = _comparison("less_equal")


def _unary(name):
    def f(x, dtype=None, mask=None, **_):
        return o.unary(name, x, dtype=dtype, mask=mask)

    f.__name__ = name
    f._nki_name = name
    return f


exp = _unary("exp")
log = _unary("log")
tanh = _unary("tanh")
sigmoid = _unary("sigmoid")
relu = _unary("relu")
gelu = _unary("gelu")
gelu_apprx_tanh = _unary("gelu_apprx_tanh")
silu = _unary("silu")
sqrt = _unary("sqrt")
rsqrt = _unary("rsqrt")
square = _unary("square")
reciprocal = _unary("reciprocal")
negative = _unary("negative")
abs = _unary("abs")  # noqa: A001 - NKI's name
sign = _unary("sign")
sin = _unary("sin")
cos = _unary("cos")
tan = _unary("tan")
arctan = _unary("arctan")
erf = _unary("erf")
erf_dx = _unary("erf_dx")
softplus = _unary("softplus")
mish = _unary("mish")
gelu_apprx_sigmoid = _unary("gelu_apprx_sigmoid")
gelu_dx = _unary("gelu_dx")
silu_dx = _unary("silu_dx")


def _missing(name):
    def f(*args, **kwargs):
        unsupported(f"nl.{name}")

    f.__name__ = name
    f._nki_name = name
    return f


for _name in ("gelu_apprx_sigmoid_dx", "ceil", "floor", "trunc", "sign", "power", "fmod", "mod", "bitwise_and",
              "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift", "logical_and",
              "logical_or", "logical_xor", "logical_not", "abs_max", "abs_min",
              "random_seed", "atomic_rmw", "all_reduce",
              "loop_reduce", "prod", "var", "all"):
    if _name not in globals():
        globals()[_name] = _missing(_name)


def sum(x, axis, dtype=None, mask=None, keepdims=False, **_):  # noqa: A001 - NKI's name
    return o.reduce(x, "add", axis, dtype=dtype, keepdims=keepdims, mask=mask)


sum._nki_name = "add"


def max(x, axis, dtype=None, mask=None, keepdims=False, **_):  # noqa: A001
    return o.reduce(x, "max", axis, dtype=dtype, keepdims=keepdims, mask=mask)


max._nki_name = "max"


def min(x, axis, dtype=None, mask=None, keepdims=False, **_):  # noqa: A001
    return o.reduce(x, "min", axis, dtype=dtype, keepdims=keepdims, mask=mask)


min._nki_name = "min"


def mean(x, axis, dtype=None, mask=None, keepdims=False, **_):
    axes = [axis] if isinstance(axis, int) else list(axis)
    n = int(np.prod([x.shape[a] for a in axes]))
    s = o.reduce(x, "add", axis, dtype=np.float32, keepdims=keepdims, mask=mask)
    out_dt = dtype or (x.dtype if c.is_float(x.dtype) else np.float32)
    return o.binary(s, 1.0 / n, "multiply", dtype=out_dt, mask=None)


def where(condition, x, y, dtype=None, mask=None, **_):
    """``condition ? x : y`` elementwise (Vector engine ``select``)."""
    return o.where(condition, x, y, dtype=dtype, mask=mask)


def gather_flattened(data, indices, mask=None, dtype=None, **_):
    """``out[p, j] = data[p, indices[p, j]]`` over the flattened free dimensions."""
    return o.gather(None, data, indices, dtype, mask)


def dropout(x, rate, dtype=None, mask=None, **_):
    """Zeros each element with probability ``rate`` (Vector engine ``dropout``; no rescaling)."""
    return o.dropout(None, x, rate, dtype, mask)


def _trailing(x, axis):
    axes = [axis] if isinstance(axis, int) else list(axis)
    axes = sorted(a % x.ndim for a in axes)
    if 0 in axes or axes != list(range(x.ndim - len(axes), x.ndim)):
        c.fail(f"axis {axis}: must be the trailing free dimensions of a {x.ndim}-D tile")
    return axes


def softmax(x, axis, dtype=None, compute_dtype=None, mask=None, **_):
    """``exp(x - max) / sum`` along the trailing free axes: a Vector max, a ScalarE exp with
    the negated max as bias and a fused sum, a Vector reciprocal and a multiply."""
    _trailing(x, axis)
    if x.ndim != 2:
        unsupported("nl.softmax of a tile with more than one free dimension")
    dt = dtype or compute_dtype or x.dtype
    neg_max = o.reduce(x, "max", axis, dtype=np.float32, mask=mask, negate=True)
    e = o.fresh(x.shape, np.float32)
    total = o.fresh((x.partitions, 1), np.float32)
    r = o.masked(mask, e, x, neg_max, total)
    if r is None:
        return e
    o.emit_activation(r[0], r[1], "exp", bias=r[2], reduce=r[3])
    inv = o.fresh((x.partitions, 1), np.float32)
    o.emit_simple("reciprocal", inv, src=total)
    return o.binary(e, inv, "multiply", dtype=dt, mask=mask)


def rms_norm(x, w, axis, n, epsilon=1e-06, dtype=None, compute_dtype=None, mask=None, **_):
    """``x / sqrt(mean(x²) + epsilon) * w`` along the trailing free axes (``n`` values)."""
    _trailing(x, axis)
    if x.ndim != 2:
        unsupported("nl.rms_norm of a tile with more than one free dimension")
    dt = dtype or compute_dtype or x.dtype
    sq = o.fresh(x.shape, np.float32)
    ss = o.fresh((x.partitions, 1), np.float32)
    r = o.masked(mask, sq, x, ss)
    if r is None:
        return sq
    o.emit_activation(r[0], r[1], "square", reduce=r[2])
    ms = o.binary(ss, 1.0 / float(n), "multiply", dtype=np.float32)
    ms = o.binary(ms, float(epsilon), "add", dtype=np.float32)
    rstd = o.unary("rsqrt", ms, dtype=np.float32)
    y = o.binary(x, rstd, "multiply", dtype=np.float32, mask=mask)
    return o.binary(y, w, "multiply", dtype=dt, mask=mask)


def rand(shape, dtype=np.float32, **_):
    """Uniform [0, 1) values in a new SBUF tile. The engines' random-number generator is not
    modelled: the values come from a host generator seeded by the tile's position in the
    kernel (deterministic) and are loaded by DMA, so the time is a DMA's, not the RNG's."""
    t = c.tracer()
    seed = len(t.constant_inputs) + 1
    arr = np.random.default_rng(seed).random(tuple(int(s) for s in shape)).astype(c.np_dtype(dtype))
    return o.load(t.constant(arr, "rand"))


def device_print(prefix, x, mask=None, **_):
    """Device printing has no effect in Rainier (the values are in the outputs)."""


def finfo(dtype):
    return ml_dtypes.finfo(dtype) if c.is_float(dtype) else np.iinfo(dtype)


# `builtins` keeps Python's own sum/max/min reachable inside this module.
_py_sum, _py_max, _py_min = builtins.sum, builtins.max, builtins.min
