"""The tracer behind both NKI dialects.

Running a kernel's Python body records a trace: virtual tensors (HBM, SBUF, PSUM; no
addresses) and NKI-level instructions whose operands are affine accesses into them, each with
the kernel source line that issued it. The Rust back end (``rainier._native``) allocates the
on-chip tensors by liveness, lowers the instructions to the NeuronCore ISA, and simulates them.

A :class:`View` is what NKI calls a tile or a tensor slice: a tensor, a partition start and an
element offset, and one ``(stride, size, is_partition)`` per axis. Index expressions
(``nl.arange``, ``nl.mgrid``, slices, ints, their affine combinations) are resolved here into
strides and offsets; masks restrict an instruction's iteration space by index ranges.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NkiError(Exception):
    """A kernel the hardware (or Rainier) cannot run; the message names the kernel line."""


class NotSupportedError(NkiError):
    """An NKI API Rainier does not implement yet."""


# ---------------------------------------------------------------------------------------------
# dtypes

_DTYPE_NAMES = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(ml_dtypes.bfloat16): "bf16",
    np.dtype(ml_dtypes.float8_e4m3): "fp8e4m3",
    np.dtype(ml_dtypes.float8_e4m3fn): "fp8e4m3fn",
    np.dtype(ml_dtypes.float8_e5m2): "fp8e5m2",
    np.dtype(np.int32): "i32",
    np.dtype(np.uint8): "u8",
    np.dtype(np.int8): "i8",
    np.dtype(np.int16): "i16",
    np.dtype(np.uint16): "u16",
    np.dtype(np.uint32): "u32",
}
_BY_NAME = {v: k for k, v in _DTYPE_NAMES.items()}


class _Packed:
    """An MX 4-packed dtype of NeuronCore-v4 (``nl.float8_e5m2_x4`` & co.): four fp8 or fp4
    values per element along the contraction; NumPy holds an element as ``holder``."""

    def __init__(self, name, rname, itemsize, holder):
        self.name, self.rname, self.itemsize, self.holder = name, rname, itemsize, holder

    def __repr__(self):
        return f"nl.{self.name}"


float8_e5m2_x4 = _Packed("float8_e5m2_x4", "fp8e5m2x4", 4, np.uint32)
float8_e4m3fn_x4 = _Packed("float8_e4m3fn_x4", "fp8e4m3fnx4", 4, np.uint32)
float4_e2m1fn_x4 = _Packed("float4_e2m1fn_x4", "fp4e2m1fnx4", 2, np.uint16)
_BY_NAME.update({p.rname: p for p in (float8_e5m2_x4, float8_e4m3fn_x4, float4_e2m1fn_x4)})
# OCP e8m0 scale bytes (``nl.float8_e8m0fnu``) are uint8 to the NeuronCore.
_E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu) if hasattr(ml_dtypes, "float8_e8m0fnu") else None


class _TF32:
    """NKI's tfloat32: fp32 storage whose mantissa TensorE rounds to 10 bits."""

    name = "tfloat32"
    itemsize = 4

    def __repr__(self):
        return "tfloat32"


tfloat32 = _TF32()


def dtype_name(dt) -> str:
    """Rainier's name of a NumPy/ml_dtypes dtype; an error for dtypes the NeuronCore model lacks."""
    if dt is tfloat32:
        return "tf32"
    if isinstance(dt, _Packed):
        return dt.rname
    if dt is bool or dt is np.bool_:
        return "u8"
    try:
        d = np.dtype(dt)
    except TypeError as e:
        raise NkiError(f"not a dtype: {dt!r}") from e
    if d == np.bool_ or d == _E8M0:
        return "u8"
    name = _DTYPE_NAMES.get(d)
    if name is None:
        known = ", ".join(sorted(str(k) for k in _DTYPE_NAMES))
        raise NotSupportedError(f"dtype {d} is not supported by Rainier (supported: {known}, tfloat32)")
    return name


def np_dtype(dt):
    """The NumPy dtype that holds values of ``dt``."""
    if dt is tfloat32:
        return np.dtype(np.float32)
    if isinstance(dt, _Packed):
        return np.dtype(dt.holder)
    if dt is bool or dt is np.bool_:
        return np.dtype(np.uint8)
    return np.dtype(dt)


def itemsize(dt) -> int:
    return 4 if dt is tfloat32 else np_dtype(dt).itemsize


def is_packed(dt) -> bool:
    return isinstance(dt, _Packed)


def is_float(dt) -> bool:
    if isinstance(dt, _Packed):
        return False
    return dt is tfloat32 or np_dtype(dt).kind in "fV" or np_dtype(dt) in (
        np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3), np.dtype(ml_dtypes.float8_e4m3fn),
        np.dtype(ml_dtypes.float8_e5m2))


# Precision order of result dtypes (NKI: "whichever has the highest precision"; floats above
# integers; ties by the order here).
_RANK = {"f32": 9, "tf32": 8, "f16": 7, "bf16": 6, "fp8e4m3fn": 5, "fp8e4m3": 4, "fp8e5m2": 3,
         "i32": 2.5, "u32": 2.4, "i16": 2.2, "u16": 2.1, "i8": 2.0, "u8": 1.9}


def promote(*dts):
    """Result dtype of an elementwise op on inputs of ``dts``: the most precise of them
    (independent of the order), fp32 when any is fp32."""
    dts = [d for d in dts if d is not None]
    if any(d is tfloat32 or np_dtype(d) == np.float32 for d in dts):
        return np.dtype(np.float32)
    return max(dts, key=lambda d: _RANK.get(dtype_name(d), 0))


# ---------------------------------------------------------------------------------------------
# buffers


class Buffer:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"nl.{self.name}"


sbuf = Buffer("sbuf")
psum = Buffer("psum")
hbm = Buffer("hbm")
shared_hbm = Buffer("shared_hbm")
private_hbm = Buffer("private_hbm")

_HBM_BUFFERS = ("hbm", "shared_hbm", "private_hbm")


class par_dim:
    """Marks the partition dimension of an on-chip tensor's shape (block dimensions before it)."""

    def __init__(self, size):
        self.size = int(size)

    def __int__(self):
        return self.size

    def __index__(self):
        return self.size

    def __repr__(self):
        return f"par_dim({self.size})"


# ---------------------------------------------------------------------------------------------
# the trace


class _State(threading.local):
    tracer: "Tracer | None" = None


_state = _State()


def tracer() -> "Tracer":
    t = _state.tracer
    if t is None:
        raise NkiError(
            "an NKI API was called outside a kernel: call the kernel through nki.jit, "
            "nki.simulate_kernel or rainier.nki.run")
    return t


def source_ref():
    """``[file index, line]`` of the innermost frame outside the rainier package."""
    t = tracer()
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
    if f is None:
        return [0, 0]
    fname = f.f_code.co_filename
    idx = t.file_ids.get(fname)
    if idx is None:
        idx = t.file_ids[fname] = len(t.files)
        t.files.append(fname)
    return [idx, f.f_lineno]


def op_accesses(op: dict):
    """Every access dict of a traced instruction."""
    for v in op.values():
        if isinstance(v, dict) and "t" in v:
            yield v
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, dict):
                    if "t" in x:
                        yield x
                    o = x.get("operand")
                    if isinstance(o, dict) and "t" in o:
                        yield o


# Instructions that only write their ``dst`` (activation also its optional ``reduce``) and
# compute it from their operands alone: candidates for common-subexpression elimination.
_PURE = frozenset({"tensor_tensor", "tensor_scalar", "tensor_copy", "activation", "tensor_reduce",
                   "tensor_tensor_scan", "scalar_tensor_tensor", "bn_stats", "bn_aggr",
                   "reciprocal"})


def _written(ins: dict):
    """Tensors an instruction may write: ``dst`` (and activation's ``reduce``) of a pure one,
    every tensor it touches otherwise."""
    if ins["op"] in _PURE:
        yield ins["dst"]["t"]
        if isinstance(ins.get("reduce"), dict):
            yield ins["reduce"]["t"]
    else:
        for a in op_accesses(ins):
            yield a["t"]


def where() -> str:
    """``file:line`` of the kernel line being traced, for error messages."""
    t = _state.tracer
    if t is None:
        return "<kernel>"
    code = getattr(t, "kernel_code", None)
    if code is not None:
        # Outside the kernel's body (binding its arguments, collecting its results): its def.
        f = sys._getframe(1)
        while f is not None and f.f_code is not code:
            f = f.f_back
        if f is None:
            return f"{code.co_filename}:{code.co_firstlineno}"
    s = source_ref()
    return f"{t.files[s[0]]}:{s[1]}"


def fail(message, cls=NkiError):
    raise cls(f"{where()}: {message}")


def unsupported(api: str):
    raise NotSupportedError(f"not supported by Rainier: {api} ({where()})")


class Tracer:
    """One kernel launch being traced."""

    def __init__(self, chip: str, name: str):
        self.chip = chip
        self.generation = {"trn1": 2, "inf2": 2, "trn2": 3, "trn3": 4}[chip]
        self.name = name
        self.files: list[str] = []
        self.file_ids: dict[str, int] = {}
        self.tensors: list[dict] = []
        self.ops: list[dict] = []
        self.names: set[str] = set()
        self.name_counts: dict[str, int] = {}
        self.program_ids: tuple = ()
        self.grid: tuple = ()
        # shared HBM tensors of a grid launch, by creation order within an instance
        self.shared: list["Tensor"] = []
        self.shared_cursor = 0
        self.ones_cache: dict = {}
        self.constants: dict = {}
        self.constant_inputs: list = []
        self.identity_cache: dict = {}

    def unique(self, base: str) -> str:
        base = base or "t"
        name = base
        k = self.name_counts.get(base, 0)
        while name in self.names:
            k += 1
            name = f"{base}.{k}"
        self.name_counts[base] = k
        self.names.add(name)
        return name

    def source_of(self, code) -> list:
        """``[file index, line]`` of a function's definition."""
        idx = self.file_ids.get(code.co_filename)
        if idx is None:
            idx = self.file_ids[code.co_filename] = len(self.files)
            self.files.append(code.co_filename)
        return [idx, code.co_firstlineno]

    def constant(self, arr, name):
        """An HBM input tensor holding ``arr`` (shared constants), one per distinct value."""
        key = (arr.shape, arr.dtype.str, arr.tobytes())
        v = self.constants.get(key)
        if v is None:
            v = hbm_tensor(arr.shape, arr.dtype, "input", name)
            self.constants[key] = v
            self.constant_inputs.append((v.tensor.name, arr))
        return v

    def add_tensor(self, spec: dict) -> int:
        self.tensors.append(spec)
        return len(self.tensors) - 1

    def emit(self, op: dict) -> int:
        self.ops.append({"s": source_ref(), "i": op})
        return len(self.ops) - 1

    def elide_copies(self):
        """Copy elision, as the compiler does for ``tile[...] = op(...)``: a copy marked by
        ``assign`` whose source temporary was written by the instruction just before it and is
        never used again becomes that instruction writing the copy's destination."""
        ops = self.ops
        last = {}
        for k, op in enumerate(ops):
            for a in op_accesses(op["i"]):
                last[a["t"]] = k
        drop = set()
        for k, op in enumerate(ops):
            mark = op.pop("e", None)
            if mark is None:
                continue
            temp, j = mark
            if j != k - 1 or j in drop or last.get(temp) != k:
                continue
            prod, copy = ops[j]["i"], op["i"]
            if prod.get("dst") != copy["src"] or not self._may_write(prod, copy["dst"]):
                continue
            prod["dst"] = copy["dst"]
            drop.add(k)
        if drop:
            self.ops = [op for k, op in enumerate(ops) if k not in drop]

    def _may_write(self, prod: dict, target: dict) -> bool:
        """Whether instruction ``prod`` can write ``target`` instead of its temporary with the
        same result: the engine reaches that memory and no extra rounding is skipped."""
        kind = prod["op"]
        tgt = self.tensors[target["t"]]
        tmp = self.tensors[prod["dst"]["t"]]
        buf = tgt["buffer"]
        dt_t = target.get("dt", tgt["dtype"])
        dt_s = prod["dst"].get("dt", tmp["dtype"])
        same = dt_t == dt_s
        if kind == "dma":
            if "index" in prod:
                return buf == "sbuf" and (same or dt_s == "f32")  # the other side is HBM
            return buf != "psum" and (same or dt_s == "f32")
        if kind == "matmul" or (kind == "transpose" and prod.get("engine") == "tensor"):
            return buf == "psum" and same
        if buf not in ("sbuf", "psum"):
            return False
        if kind in ("iota", "affine_select"):
            # Their steps follow the destination's dims.
            return buf == "sbuf" and same and target["dims"] == prod["dst"]["dims"]
        if prod.get("engine") == "gpsimd" and buf == "psum":
            return False
        return same or dt_s == "f32"

    def eliminate_common_subexpressions(self):
        """Common-subexpression elimination, as the compiler's loop-invariant code motion does:
        a pure compute instruction whose SBUF temporary result repeats an earlier one (same
        operation on the same operand versions, same destination layout) is dropped, and its
        readers read the earlier result (``delta * u`` inside a loop over states is computed
        once). Only instructions on the allowlist below are pure; any other instruction is taken
        to write every tensor it touches."""
        ops = self.ops
        writes: dict[int, int] = {}
        for op in ops:
            for t in _written(op["i"]):
                writes[t] = writes.get(t, 0) + 1
        version: dict[int, int] = {}
        seen: dict[str, int] = {}
        rename: dict[int, int] = {}
        drop = set()
        for k, op in enumerate(ops):
            ins = op["i"]
            for a in op_accesses(ins):
                a["t"] = rename.get(a["t"], a["t"])
            key = self._cse_key(ins, version, writes)
            if key is not None:
                first = seen.get(key)
                if first is None:
                    seen[key] = ins["dst"]["t"]
                elif self._same_layout(first, ins["dst"]["t"]):
                    rename[ins["dst"]["t"]] = first
                    drop.add(k)
                    continue
            for t in _written(ins):
                version[t] = version.get(t, 0) + 1
        if drop:
            self.ops = [op for k, op in enumerate(ops) if k not in drop]

    def _cse_key(self, ins: dict, version: dict, writes: dict) -> str | None:
        """The identity of a pure instruction writing a fresh SBUF temporary once, else None."""
        if ins["op"] not in _PURE or isinstance(ins.get("reduce"), dict):
            return None
        dst = ins.get("dst")
        if not isinstance(dst, dict) or writes.get(dst["t"]) != 1 or version.get(dst["t"]):
            return None
        if self.tensors[dst["t"]]["buffer"] != "sbuf":
            return None
        canon = json.loads(json.dumps(ins))
        for a in op_accesses(canon):
            a["t"] = -1 if a is canon["dst"] else f"{a['t']}@{version.get(a['t'], 0)}"
        return json.dumps(canon, sort_keys=True)

    def _same_layout(self, a: int, b: int) -> bool:
        ta, tb = self.tensors[a], self.tensors[b]
        return {k: v for k, v in ta.items() if k != "name"} == {
            k: v for k, v in tb.items() if k != "name"}

    def to_json(self) -> str:
        self.elide_copies()
        self.eliminate_common_subexpressions()
        return json.dumps(
            {"kernel": self.name, "files": self.files, "tensors": self.tensors, "ops": self.ops},
            separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# tensors and views


class Tensor:
    """A virtual tensor. HBM: dense row-major ``shape``. On chip: ``shape`` with the partition
    axis ``par`` (its index); the other axes are row-major within each partition (block axes,
    those before ``par``, outermost)."""

    def __init__(self, shape, dtype, buffer: str, name: str = "", kind: str | None = None):
        t = tracer()
        self.dtype = dtype
        self.buffer = buffer
        par = 0
        dims = []
        for i, s in enumerate(shape):
            if isinstance(s, par_dim):
                par = i
            dims.append(int(s))
        if not dims:
            dims = [1]
        if any(d <= 0 for d in dims):
            fail(f"tensor shape {tuple(dims)} has an empty dimension")
        self.shape = tuple(dims)
        self.par = par
        self.name = t.unique(name or ("hbm" if buffer in _HBM_BUFFERS else buffer))
        esz = itemsize(dtype)
        self.zero_pending: list[list[int]] = []  # PSUM byte ranges still to be zeroed
        self.producer: int | None = None  # op index of a fresh temporary's only write
        if buffer in _HBM_BUFFERS:
            self.kind = kind or "scratch"
            strides = []
            acc = 1
            for d in reversed(dims):
                strides.append(acc)
                acc *= d
            self.strides = list(reversed(strides))
            spec = {"name": self.name, "buffer": self.kind, "dtype": dtype_name(dtype),
                    "shape": dims, "src": source_ref()}
        else:
            self.kind = buffer
            free = [d for i, d in enumerate(dims) if i != par]
            strides = [0] * len(dims)
            strides[par] = 1  # the partition axis steps one partition
            acc = 1
            for i in reversed(range(len(dims))):
                if i == par:
                    continue
                strides[i] = acc
                acc *= dims[i]
            self.strides = strides
            per_part = int(np.prod(free)) if free else 1
            block = int(np.prod(dims[par + 1:])) if par > 0 else 0
            spec = {"name": self.name, "buffer": buffer, "dtype": dtype_name(dtype),
                    "partitions": dims[par], "bytes": per_part * esz,
                    "block_bytes": block * esz, "src": source_ref()}
        self.spec = spec
        self.id = t.add_tensor(spec)

    @property
    def on_chip(self):
        return self.buffer in ("sbuf", "psum")

    def retype(self, dtype):
        """Reinterprets an HBM tensor's bytes as a flat tensor of ``dtype`` (what
        ``.ap(dtype=...)`` means, e.g. uint32 words as ``nl.float8_e5m2_x4``); the kernel's
        argument keeps its bytes."""
        if dtype_name(dtype) == dtype_name(self.dtype):
            return
        if self.kind != "input":
            unsupported(f".ap(dtype=...) reinterpreting '{self.name}', which is not a kernel input")
        if getattr(self, "accessed", False):
            unsupported(f"viewing HBM tensor '{self.name}' as {dtype} after an instruction "
                        f"accessed it as {self.dtype}")
        total = int(np.prod(self.shape)) * itemsize(self.dtype)
        if total % itemsize(dtype):
            fail(f"HBM tensor '{self.name}' has {total} bytes, not a whole number of {dtype}")
        self.dtype = dtype
        self.shape = (total // itemsize(dtype),)
        self.strides = [1]
        self.spec["dtype"] = dtype_name(dtype)
        self.spec["shape"] = [self.shape[0]]
        self.spec["retyped"] = True
        # Views made before count elements of the old dtype: they may no longer be used.
        self.generation = getattr(self, "generation", 0) + 1

    def full(self) -> "View":
        axes = [(self.strides[i], d, self.on_chip and i == self.par) for i, d in enumerate(self.shape)]
        return View(self, 0, 0, axes)


@dataclass
class IndexVar:
    """One axis of an index grid: ``size`` values along axis ``axis`` of an ``ndim``-D grid."""

    size: int
    axis: int
    ndim: int
    uid: int = field(default_factory=lambda: IndexVar._next())

    _counter = [0]

    @staticmethod
    def _next():
        IndexVar._counter[0] += 1
        return IndexVar._counter[0]

    def __hash__(self):
        return self.uid

    def __eq__(self, o):
        return isinstance(o, IndexVar) and o.uid == self.uid


class Expr:
    """An affine index expression ``const + Σ coeff · var``, broadcast like a NumPy index array."""

    __slots__ = ("const", "terms")

    def __init__(self, const=0, terms=None):
        self.const = int(const)
        self.terms = terms or {}

    @staticmethod
    def of(x):
        if isinstance(x, Expr):
            return x
        if isinstance(x, (int, np.integer)):
            return Expr(int(x))
        raise TypeError(f"not an index expression: {x!r}")

    def _combine(self, o, sign):
        o = Expr.of(o)
        terms = dict(self.terms)
        for v, c in o.terms.items():
            terms[v] = terms.get(v, 0) + sign * c
            if terms[v] == 0:
                del terms[v]
        return Expr(self.const + sign * o.const, terms)

    def __add__(self, o):
        return self._combine(o, 1)

    __radd__ = __add__

    def __sub__(self, o):
        return self._combine(o, -1)

    def __rsub__(self, o):
        return Expr.of(o)._combine(self, -1)

    def __neg__(self):
        return Expr(-self.const, {v: -c for v, c in self.terms.items()})

    def __mul__(self, k):
        if isinstance(k, Expr):
            if k.terms and self.terms:
                fail("an index expression may not multiply two indices")
            if k.terms:
                return k * self.const
            k = k.const
        k = int(k)
        return Expr(self.const * k, {v: c * k for v, c in self.terms.items() if c * k})

    __rmul__ = __mul__

    def __floordiv__(self, k):
        if self.terms:
            fail("integer division of an index expression is not affine")
        return Expr(self.const // int(k))

    def _cmp(self, o, op):
        return Mask([(self - Expr.of(o), op)])

    def __lt__(self, o):
        return self._cmp(o, "lt")

    def __le__(self, o):
        return self._cmp(o, "le")

    def __gt__(self, o):
        return self._cmp(o, "gt")

    def __ge__(self, o):
        return self._cmp(o, "ge")

    def __eq__(self, o):  # noqa: D105 - NKI index comparisons build masks
        return self._cmp(o, "eq")

    def __ne__(self, o):
        return self._cmp(o, "ne")

    __hash__ = object.__hash__

    def __getitem__(self, key):
        """``nl.arange(n)[:, None]``: place a 1-D index along one axis of a 2-D grid."""
        if len(self.terms) != 1:
            fail("only a 1-D nl.arange can be expanded with [:, None] / [None, :]")
        (v, c), = self.terms.items()
        key = key if isinstance(key, tuple) else (key,)
        pos = [i for i, k in enumerate(key) if k is not None]
        if len(pos) != 1:
            fail(f"unsupported index-expression subscript {key!r}")
        nv = IndexVar(v.size, pos[0], len(key))
        return Expr(self.const, {nv: c})

    @property
    def shape(self):
        if not self.terms:
            return ()
        nd = max(v.ndim for v in self.terms)
        s = [1] * nd
        for v in self.terms:
            s[v.axis] = v.size
        return tuple(s)

    def values(self):
        """The expression as a NumPy index array (for masks and bounds)."""
        shape = self.shape or (1,)
        out = np.full(shape, self.const, dtype=np.int64)
        for v, c in self.terms.items():
            s = [1] * len(shape)
            s[v.axis] = v.size
            out = out + c * np.arange(v.size, dtype=np.int64).reshape(s)
        return out


def arange(*args):
    """``nl.arange(stop)`` / ``nl.arange(start, stop)``: a 1-D index."""
    if len(args) == 1:
        start, stop = 0, int(args[0])
    else:
        start, stop = int(args[0]), int(args[1])
    return Expr(start, {IndexVar(stop - start, 0, 1): 1})


class _Grid:
    """``nl.mgrid[0:a, 0:b]``: one index per axis; ``.p``, ``.x``, ``.y``, ``.z`` name them."""

    def __init__(self, exprs):
        self.exprs = exprs

    def __iter__(self):
        return iter(self.exprs)

    def __getitem__(self, i):
        return self.exprs[i]

    def __len__(self):
        return len(self.exprs)

    @property
    def p(self):
        return self.exprs[0]

    @property
    def x(self):
        return self.exprs[1]

    @property
    def y(self):
        return self.exprs[2]

    @property
    def z(self):
        return self.exprs[3]


class _MGrid:
    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        n = len(key)
        exprs = []
        for i, k in enumerate(key):
            if not isinstance(k, slice):
                fail("nl.mgrid takes slices, e.g. nl.mgrid[0:128, 0:512]")
            start = int(k.start or 0)
            if k.step not in (None, 1):
                fail("nl.mgrid with a step is not supported")
            exprs.append(Expr(start, {IndexVar(int(k.stop) - start, i, n): 1}))
        if n == 1:
            return exprs[0]
        return _Grid(exprs)


mgrid = _MGrid()


class DSlice:
    """``nl.ds(start, size)``: a dynamic slice of ``size`` elements from ``start``."""

    def __init__(self, start, size):
        self.start = start
        self.size = int(size)


def ds(start, size):
    return DSlice(start, size)


class Mask:
    """A conjunction of affine comparisons with 0: ``expr op 0``."""

    def __init__(self, terms):
        self.terms = terms

    def __and__(self, o):
        if o is None or o is True:
            return self
        return Mask(self.terms + o.terms)

    __rand__ = __and__

    def ranges(self):
        """``{(axis, ndim-agnostic axis position): (lo, hi)}`` per grid axis restricted; None
        when the mask is empty. Each comparison must involve one index."""
        out = {}
        for e, op in self.terms:
            if len(e.terms) > 1:
                unsupported("a mask comparing two indices (use nisa.affine_select)")
            if not e.terms:
                ok = {"lt": e.const < 0, "le": e.const <= 0, "gt": e.const > 0, "ge": e.const >= 0,
                      "eq": e.const == 0, "ne": e.const != 0}[op]
                if not ok:
                    return None
                continue
            (v, c), = e.terms.items()
            vals = e.const + c * np.arange(v.size)
            keep = {"lt": vals < 0, "le": vals <= 0, "gt": vals > 0, "ge": vals >= 0,
                    "eq": vals == 0, "ne": vals != 0}[op]
            idx = np.nonzero(keep)[0]
            if idx.size == 0:
                return None
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            if hi - lo != idx.size:
                unsupported("a mask that keeps a non-contiguous index range")
            key = (v.axis, v.size)
            plo, phi = out.get(key, (0, v.size))
            lo, hi = max(lo, plo), min(hi, phi)
            if lo >= hi:
                return None
            out[key] = (lo, hi)
        return out


class View:
    """A tile or tensor slice: an affine access into one tensor."""

    __slots__ = ("tensor", "p0", "off", "axes", "dt", "checks", "ind", "ind_rows", "generation")

    def __init__(self, tensor: Tensor, p0: int, off: int, axes, dt=None, checks=None, ind=None,
                 ind_rows=0):
        self.tensor = tensor
        self.p0 = p0
        self.off = off
        self.axes = axes  # [(stride, size, is_partition)]
        self.dt = dt
        # Index bounds to check once masks have cut the axes: [(size, const, [(axis, coeff)])]
        # with the axes' first index in `checks[-1]` (see `restrict`).
        self.checks = checks
        # Indirect access (HBM only): the first axis's rows come from this [R, 1] index tile;
        # indices must lie in [0, ind_rows).
        self.ind = ind
        self.ind_rows = ind_rows
        # The tensor's dtype generation this view's offsets count in (see Tensor.retype).
        self.generation = getattr(tensor, "generation", 0)

    # -- properties NKI code reads
    @property
    def shape(self):
        return tuple(a[1] for a in self.axes)

    @property
    def dtype(self):
        return self.dt if self.dt is not None else self.tensor.dtype

    @property
    def ndim(self):
        return len(self.axes)

    @property
    def buffer(self):
        return {"sbuf": sbuf, "psum": psum}.get(self.tensor.buffer, shared_hbm)

    @property
    def name(self):
        return self.tensor.name

    def __len__(self):
        return self.axes[0][1]

    def __repr__(self):
        return f"<{self.tensor.buffer} tensor {self.tensor.name} {self.shape} {self.dtype}>"

    def __iter__(self):
        raise TypeError("an NKI tile cannot be iterated over in Python")

    def __bool__(self):
        return True  # a tensor object, as in NKI (its values exist only on the device)

    def check_bounds(self):
        """Indices out of their dimension after masking are an error (as on the hardware)."""
        if not self.checks:
            return
        bounds, origin = self.checks
        for size, const, terms in bounds:
            lo = hi = const
            for axis, k in terms:
                first = origin[axis]
                last = first + self.axes[axis][1] - 1
                lo += min(k * first, k * last)
                hi += max(k * first, k * last)
            if lo < 0 or hi >= size:
                fail(f"index {lo}..{hi} out of bounds for a dimension of size {size} of "
                     f"'{self.tensor.name}' (mask the access)")

    # -- the access the back end sees
    def access(self) -> dict:
        self.check_bounds()
        t = self.tensor
        if not t.on_chip:
            if self.generation != getattr(t, "generation", 0):
                fail(f"a view of '{t.name}' made before .ap(dtype=...) reinterpreted its bytes "
                     "counts elements of the old dtype; make the view from the .ap() result")
            t.accessed = True
            a = {"t": t.id, "off": self.off, "dims": [[s, n] for s, n, _ in self.axes]}
        else:
            parts = [i for i, ax in enumerate(self.axes) if ax[2]]
            if parts and parts[0] != 0:
                fail(f"the partition dimension of '{t.name}' must be the first dimension of a tile "
                     f"(tile shape {self.shape})")
            if parts:
                s, n, _ = self.axes[0]
                if s != 1:
                    fail(f"a tile of '{t.name}' steps over partitions by {s}; partitions must be contiguous")
                rest = self.axes[1:]
                a = {"t": t.id, "p": self.p0, "n": n, "off": self.off,
                     "dims": [[s, n] for s, n, _ in rest]}
            else:
                a = {"t": t.id, "p": self.p0, "n": 1, "off": self.off,
                     "dims": [[s, n] for s, n, _ in self.axes]}
        if self.dt is not None:
            a["dt"] = dtype_name(self.dt)
        return a

    @property
    def partitions(self):
        if self.axes and self.axes[0][2]:
            return self.axes[0][1]
        return 1

    @property
    def free_size(self):
        n = 1
        for s, size, p in self.axes:
            if not p:
                n *= size
        return n

    # -- indexing
    def __getitem__(self, key):
        return index_view(self, key)

    def __setitem__(self, key, value):
        from . import _ops

        dst = index_view(self, key)
        if value is _ALREADY_STORED:
            return
        if (isinstance(value, _InPlace) and value.tensor is dst.tensor and value.p0 == dst.p0
                and value.off == dst.off and value.axes == dst.axes):
            return  # `tile[k] += x`: the addition already wrote tile[k]
        _ops.assign(dst, value)

    def __iadd__(self, o):
        from . import _ops

        _ops.accumulate(self, o)
        return _InPlace(self)

    def reshape(self, shape):
        return reshape_view(self, shape)

    def view(self, dtype):
        """Bitcast view in another dtype of the same size."""
        if itemsize(dtype) != itemsize(self.dtype):
            unsupported("a .view() that changes the element size")
        return View(self.tensor, self.p0, self.off, list(self.axes), dtype)

    def broadcast_to(self, shape):
        from . import _ops

        return _ops.broadcast_to(self, shape)

    def ap(self, pattern, offset=0, scalar_offset=None, vector_offset=None, indirect_dim=0,
           dtype=None):
        """Current dialect's ``.ap(pattern=[[step, num], ...], offset=...)``: an explicit access
        pattern; the first pair steps over partitions."""
        if scalar_offset is not None or vector_offset is not None:
            unsupported(".ap() with a scalar_offset/vector_offset (dynamic or indirect access)")
        t = self.tensor
        dt = self.dt
        if dtype is not None and dtype_name(dtype) != dtype_name(self.dtype):
            # ``.ap(dtype=...)`` reads the same bytes as another dtype, the pattern and offset
            # counting elements of that dtype.
            if not t.on_chip:
                start = self.off * itemsize(self.dtype)
                t.retype(dtype)
                if start % itemsize(dtype):
                    fail(f".ap(dtype={dtype}) of '{t.name}' starts inside a {dtype} element")
                axes = [(int(step), int(num), False) for step, num in pattern]
                return View(t, 0, start // itemsize(dtype) + int(offset), axes)
            if itemsize(dtype) != itemsize(self.dtype):
                unsupported(".ap(dtype=...) changing the element size of an on-chip tile")
            dt = dtype
        if not t.on_chip:
            axes = [(int(step), int(num), False) for step, num in pattern]
            return View(t, 0, self.off + int(offset), axes, dt)
        # On chip the first pair walks partitions (its step is the per-partition size in the
        # flattened layout); the offset counts elements of that layout too.
        per_part = t.spec["bytes"] // itemsize(self.dtype)
        (pstep, pnum), rest = pattern[0], pattern[1:]
        if int(pnum) > 1 and int(pstep) not in (1, per_part):
            unsupported(f".ap() stepping {pstep} elements over partitions of '{t.name}'")
        p_off, f_off = divmod(int(offset), per_part) if per_part else (0, int(offset))
        axes = [(1, int(pnum), True)] + [(int(step), int(num), False) for step, num in rest]
        return View(t, self.p0 + p_off, self.off + f_off, axes, dt)

    # -- arithmetic builds instructions (the compiler picks the engine)
    def _bin(self, o, op, reverse=False):
        from . import _ops

        # Comparisons give 0/1 uint8 tiles, as nl.less & co. do by default (dtype=bool).
        dt = np.uint8 if op in ("lt", "le", "gt", "ge") else None
        return _ops.binary(o, self, op, dtype=dt) if reverse else _ops.binary(self, o, op, dtype=dt)

    def __add__(self, o):
        return self._bin(o, "add")

    def __radd__(self, o):
        return self._bin(o, "add", True)

    def __sub__(self, o):
        return self._bin(o, "subtract")

    def __rsub__(self, o):
        return self._bin(o, "subtract", True)

    def __mul__(self, o):
        return self._bin(o, "multiply")

    def __rmul__(self, o):
        return self._bin(o, "multiply", True)

    def __truediv__(self, o):
        return self._bin(o, "divide")

    def __rtruediv__(self, o):
        return self._bin(o, "divide", True)

    def __neg__(self):
        return self._bin(-1.0, "multiply")

    def __lt__(self, o):
        return self._bin(o, "lt")

    def __le__(self, o):
        return self._bin(o, "le")

    def __gt__(self, o):
        return self._bin(o, "gt")

    def __ge__(self, o):
        return self._bin(o, "ge")

    def __isub__(self, o):
        from . import _ops

        _ops.assign(self, _ops.binary(self, o, "subtract"))
        return _InPlace(self)

    def __imul__(self, o):
        from . import _ops

        _ops.assign(self, _ops.binary(self, o, "multiply"))
        return _InPlace(self)

    __hash__ = object.__hash__


class _InPlace(View):
    """What ``tile[...] += x`` hands back to ``__setitem__``: already stored."""

    __slots__ = ()

    def __init__(self, v: View):
        super().__init__(v.tensor, v.p0, v.off, v.axes, v.dt)


_ALREADY_STORED = object()


def _norm_key(key, ndim):
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = ndim - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) < ndim:
        key = key + (slice(None),) * (ndim - len(key))
    if len(key) > ndim:
        fail(f"{len(key)} indices for a tensor of {ndim} dimensions")
    return key


def c_is_float(dt):
    return is_float(dt)


def index_view(v: View, key) -> View:
    """``v[key]``: ints, slices, ``nl.ds``, affine index expressions (broadcast as NumPy index
    arrays; their grid axes become the result's axes, in grid order, before any slices)."""
    if isinstance(key, _Grid):
        key = tuple(key.exprs)
    key = _norm_key(key, len(v.axes))
    p0, off = v.p0, v.off
    ind, ind_rows = None, 0
    bounds = []
    basic = []  # (stride, size, is_part) from slices
    grid: dict[int, tuple] = {}  # grid axis -> (size, stride, is_part)
    nd = 0
    for (stride, size, is_part), k in zip(v.axes, key):
        if isinstance(k, View):
            # An index tile: each of its R partitions picks the row of this (first) axis that
            # a DMA moves (indirect DMA); it becomes the result's first axis.
            if v.tensor.on_chip:
                unsupported("indexing an on-chip tile with a tile of indices")
            if ind is not None or (stride, size) != (v.axes[0][0], v.axes[0][1]):
                unsupported("a tile of indices on an axis other than the first")
            if c_is_float(k.dtype):
                fail(f"indices must be integers, not {k.dtype}")
            ind, ind_rows = k, size
            grid[0] = (k.partitions, stride, False, -1)
            nd = max(nd, 1)
            continue
        if isinstance(k, DSlice):
            k = slice(k.start, Expr.of(k.start) + k.size if isinstance(k.start, Expr) else int(k.start) + k.size)
        if isinstance(k, slice):
            bounds_ = []
            for x in (k.start, k.stop, k.step):
                if isinstance(x, Expr):
                    if x.terms:
                        fail("slice bounds must be integers")
                    x = x.const
                bounds_.append(None if x is None else int(x))
            start, stop, step = slice(*bounds_).indices(size)
            n = len(range(start, stop, step))
            if n == 0:
                fail(f"slice {k.start}:{k.stop}:{k.step} is empty for a dimension of size {size}")
            if is_part:
                if step != 1:
                    fail("partition slices must have step 1")
                p0 += start
            else:
                off += start * stride
            basic.append((stride * step, n, is_part))
            continue
        e = Expr.of(k)
        lo = hi = e.const
        for var, k2 in e.terms.items():
            lo += min(0, k2 * (var.size - 1))
            hi += max(0, k2 * (var.size - 1))
        if lo < 0 or hi >= size:
            # Legal when a mask cuts it back: checked when the access is emitted.
            bounds.append((size, e.const, [(var.axis, k2) for var, k2 in e.terms.items()]))
        if is_part:
            p0 += e.const
        else:
            off += e.const * stride
        for var, c in e.terms.items():
            nd = max(nd, var.ndim)
            prev = grid.get(var.axis)
            if prev is not None and prev[3] != var.uid:
                fail("two different indices along the same grid axis")
            s0 = prev[1] if prev else 0
            part0 = prev[2] if prev else False
            if is_part and c != 1:
                fail("a partition index must step by 1")
            grid[var.axis] = (var.size, s0 + c * stride, part0 or is_part, var.uid)
    axes = []
    if grid:
        for a in range(nd):
            if a in grid:
                size, stride, part, _ = grid[a]
                axes.append((stride, size, part))
            else:
                axes.append((0, 1, False))
    axes.extend(basic)
    if not axes:
        axes = [(1, 1, False)]
    checks = (bounds, [0] * len(axes)) if bounds else None
    return View(v.tensor, p0, off, axes, v.dt, checks, ind, ind_rows)


def reshape_view(v: View, shape) -> View:
    shape = tuple(int(s) for s in shape)
    if int(np.prod(shape)) != int(np.prod(v.shape)):
        fail(f"cannot reshape {v.shape} to {shape}")
    t = v.tensor
    if not t.on_chip:
        # contiguous row-major only
        expect = 1
        for s, n, _ in reversed(v.axes):
            if n != 1 and s != expect:
                unsupported("reshape of a non-contiguous HBM view")
            expect *= n
        axes = []
        acc = 1
        for n in reversed(shape):
            axes.append((acc, n, False))
            acc *= n
        return View(t, v.p0, v.off, list(reversed(axes)), v.dt)
    if not v.axes[0][2] or shape[0] != v.axes[0][1]:
        unsupported("a reshape that changes the partition dimension of an on-chip tile")
    free = v.axes[1:]
    expect = 1
    for s, n, _ in reversed(free):
        if n != 1 and s != expect:
            unsupported("reshape of a non-contiguous tile")
        expect *= n
    axes = [v.axes[0]]
    acc = 1
    rest = []
    for n in reversed(shape[1:]):
        rest.append((acc, n, False))
        acc *= n
    axes.extend(reversed(rest))
    return View(t, v.p0, v.off, axes, v.dt)


def restrict(v: View, ranges: dict) -> View:
    """``v`` with each axis whose grid position and size match a mask range cut to it."""
    axes = list(v.axes)
    p0, off = v.p0, v.off
    checks = v.checks
    origin = list(checks[1]) if checks else None
    for (axis, size), (lo, hi) in ranges.items():
        if axis >= len(axes):
            continue
        s, n, part = axes[axis]
        if n != size:
            continue
        if part:
            p0 += lo
        elif not (axis == 0 and v.ind is not None):
            # (An indexed axis's rows come from the index tile, which is cut instead.)
            off += lo * s
        axes[axis] = (s, hi - lo, part)
        if origin is not None:
            origin[axis] += lo
    ind = v.ind
    if ind is not None:
        # The index tile's partitions are the rows of axis 0: cut them with it.
        ind = restrict(ind, {k: r for k, r in ranges.items() if k[0] == 0})
    return View(v.tensor, p0, off, axes, v.dt, (checks[0], origin) if checks else None, ind,
                v.ind_rows)


def new_tile(shape, dtype, buffer="sbuf", name="") -> View:
    """A fresh on-chip tile; partitions = ``shape[0]``."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        shape = (1, 1)
    if len(shape) == 1:
        shape = (shape[0], 1)
    return Tensor(shape, dtype, buffer, name).full()


def hbm_tensor(shape, dtype, kind, name="") -> View:
    return Tensor(tuple(int(s) for s in shape), dtype, "shared_hbm", name, kind=kind).full()
