"""Shared parts of ``nki.isa`` for both dialects: engines, enums, and argument conversion."""

from __future__ import annotations

from . import _core as c
from . import _ops as o


class _Engine:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"nki.isa.{self.name}_engine"


tensor_engine = _Engine("tensor")
vector_engine = _Engine("vector")
scalar_engine = _Engine("scalar")
gpsimd_engine = _Engine("gpsimd")
sync_engine = _Engine("sync")
unknown_engine = _Engine("unknown")


class engine:
    tensor = tensor_engine
    vector = vector_engine
    scalar = scalar_engine
    gpsimd = gpsimd_engine
    sync = sync_engine
    unknown = unknown_engine


class _Enum:
    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __repr__(self):
        return f"nki.isa.{self.owner}.{self.name}"


class oob_mode:
    error = _Enum("oob_mode", "error")
    skip = _Enum("oob_mode", "skip")


class dge_mode:
    unknown = _Enum("dge_mode", "unknown")
    swdge = _Enum("dge_mode", "swdge")
    hwdge = _Enum("dge_mode", "hwdge")
    none = _Enum("dge_mode", "none")


class reduce_cmd:
    idle = _Enum("reduce_cmd", "idle")
    reset = _Enum("reduce_cmd", "reset")
    reduce = _Enum("reduce_cmd", "reduce")
    reset_reduce = _Enum("reduce_cmd", "reset_reduce")
    load_reduce = _Enum("reduce_cmd", "load_reduce")


class matmul_perf_mode:
    none = _Enum("matmul_perf_mode", "none")
    double_row = _Enum("matmul_perf_mode", "double_row")


class nc_version:
    gen2 = 2
    gen3 = 3
    gen4 = 4


def get_nc_version():
    return c.tracer().generation if c._state.tracer is not None else 3


def engine_name(e, default: str, allowed) -> str:
    """The engine an instruction runs on: the caller's choice, or the default."""
    if e is None or e is unknown_engine:
        return default
    name = e.name if isinstance(e, _Engine) else str(e)
    if name not in allowed:
        c.fail(f"this instruction cannot run on the {name} engine (allowed: {', '.join(allowed)})")
    return name


def act_name(op) -> str:
    n = o.op_name(op)
    if n not in o.ACT:
        c.unsupported(f"the activation function nl.{n}")
    return o.ACT[n]


def reduce_name(op) -> str:
    n = o.op_name(op)
    if n in ("add", "sum"):
        return "add"
    if n in ("max", "maximum", "amax"):
        return "max"
    if n in ("min", "minimum", "amin"):
        return "min"
    c.unsupported(f"the reduce operator {n}")


def affine_of(expr):
    """``(base, channel_multiplier, steps)`` of an index expression over a grid whose first
    axis is the partition."""
    e = c.Expr.of(expr)
    nd = max((v.ndim for v in e.terms), default=2)
    steps = [0] * nd
    sizes = [1] * nd
    for v, k in e.terms.items():
        steps[v.axis] += k
        sizes[v.axis] = v.size
    return e.const, steps[0], steps[1:], sizes


def missing(name):
    def f(*args, **kwargs):
        c.unsupported(f"nki.isa.{name}")

    f.__name__ = name
    return f
