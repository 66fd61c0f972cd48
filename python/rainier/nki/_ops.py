"""Instructions and the compiler's choices for NKI's high-level operations.

``emit_*`` record one NeuronCore instruction each. The high-level helpers (``binary``,
``unary``, ``reduce``, ``load``, ``store``, ``matmul``, ...) pick the engine and instruction
as the Neuron compiler does for the legacy dialect: transcendental functions on the Scalar
engine (``activation``), elementwise arithmetic and reductions on the Vector engine, matrix
products and partition transposes on the Tensor engine, broadcasts across partitions as a
matmul with a ones vector, PSUM results copied to SBUF before a store.
"""

from __future__ import annotations

import numpy as np

from . import _core as c
from ._core import View, fail, unsupported

# ALU operators by NKI function name (nl.add is passed as `op=nl.add`).
ALU = {
    "add": "add", "subtract": "subtract", "multiply": "multiply", "divide": "divide",
    "maximum": "max", "minimum": "min", "max": "max", "min": "min",
    "equal": "eq", "not_equal": "ne", "greater_equal": "ge", "greater": "gt",
    "less_equal": "le", "less": "lt",
    "eq": "eq", "ne": "ne", "ge": "ge", "gt": "gt", "le": "le", "lt": "lt",
}
# ScalarE activation functions by NKI name.
ACT = {
    "exp": "exp", "log": "log", "tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu",
    "gelu": "gelu", "gelu_apprx_tanh": "gelu_tanh", "silu": "silu", "sqrt": "sqrt",
    "rsqrt": "rsqrt", "square": "square", "reciprocal": "reciprocal", "copy": "identity",
    "identity": "identity", "abs": "abs", "sign": "sign", "sin": "sin", "cos": "cos",
    "tan": "tan", "arctan": "arctan", "erf": "erf", "erf_dx": "erf_dx", "softplus": "softplus",
    "mish": "mish", "gelu_apprx_sigmoid": "gelu_apprx_sigmoid", "gelu_dx": "gelu_dx",
    "silu_dx": "silu_dx", "absolute": "abs",
}
REDUCE = {"add": "add", "max": "max", "min": "min", "maximum": "max", "minimum": "min", "sum": "add"}


def op_name(op) -> str:
    """The NKI name of an operator argument (a function like ``nl.add``, or a string)."""
    if isinstance(op, str):
        return op
    name = getattr(op, "_nki_name", None) or getattr(op, "__name__", None)
    if name is None:
        fail(f"not an NKI operator: {op!r}")
    return name


def alu(op) -> str:
    n = op_name(op)
    if n not in ALU:
        unsupported(f"the ALU operator nl.{n}")
    return ALU[n]


# ---------------------------------------------------------------------------------------------
# operands


def acc(v: View) -> dict:
    """The access of ``v``, after zeroing a PSUM tensor whose zeros were deferred."""
    t = v.tensor
    consumed = getattr(t, "consumed", None)
    if consumed:
        fail(f"this matmul result was accumulated into PSUM with += at {consumed} and exists only "
             "there; assign it to a tile (x[...] = nl.matmul(...)) to use it again")
    if t.zero_pending:
        materialize_zero(t)
    return v.access()


def materialize_zero(t):
    pend, t.zero_pending = t.zero_pending, []
    full = t.full()
    esz = c.itemsize(t.dtype)
    total = full.free_size * esz
    if pend == [[0, total]]:
        emit_memset(full, 0.0)
        return
    parts = t.shape[t.par]
    for lo, hi in pend:
        # A flat byte range of every partition (blocks are outermost within a partition).
        view = View(t, 0, lo // esz, [(1, parts, True), (1, (hi - lo) // esz, False)])
        emit_memset(view, 0.0)


def _byte_span(v: View):
    esz = c.itemsize(v.dtype)
    lo = hi = v.off
    for s, n, p in v.axes:
        if p:
            continue
        span = s * (n - 1)
        lo += min(span, 0)
        hi += max(span, 0)
    return lo * esz, (hi + 1) * esz


def take_zero(v: View) -> bool:
    """Whether ``v`` lies in deferred zeros of its PSUM tensor (they are then consumed: the
    matmul writing ``v`` starts a new accumulation instead of adding to zeros)."""
    t = v.tensor
    if not t.zero_pending:
        return False
    lo, hi = _byte_span(v)
    if v.partitions != t.shape[t.par]:
        return False
    if v.free_size * c.itemsize(v.dtype) != hi - lo:
        return False  # a strided region leaves bytes in its span unwritten
    for k, (a, b) in enumerate(t.zero_pending):
        if a <= lo and hi <= b:
            rest = [[a, lo]] if a < lo else []
            if hi < b:
                rest.append([hi, b])
            t.zero_pending[k:k + 1] = rest
            return True
    return False


def fnum(x):
    """A float for the trace (JSON has no inf or nan: those go as strings)."""
    v = float(x)
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return v


def scalar_operand(x):
    if isinstance(x, View):
        return acc(x)
    return fnum(x)


def is_scalar(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating, bool))


# ---------------------------------------------------------------------------------------------
# single instructions


def _emit(op: dict, dst: View | None = None) -> int:
    i = c.tracer().emit(op)
    if dst is not None and getattr(dst.tensor, "producer", None) is not None:
        dst.tensor.producer = None
    return i


def emit_dma(dst: View, src: View, oob_skip=False, accumulate=False):
    """A DMA; an indirect one (``dma_indirect``) when a side was indexed by a tile."""
    if dst.tensor.kind == "input":
        dst.tensor.spec["written"] = True
    if dst.tensor.buffer == "psum" or src.tensor.buffer == "psum":
        fail("DMA cannot reach PSUM; copy the tile to SBUF first")
    if dst.partitions * dst.free_size != src.partitions * src.free_size and not (
            int(np.prod(dst.shape)) == int(np.prod(src.shape))):
        fail(f"DMA between shapes {src.shape} and {dst.shape} of different sizes")
    ind = dst.ind if dst.ind is not None else src.ind
    if dst.ind is not None and src.ind is not None:
        unsupported("a DMA indexed by tiles on both sides")
    op = {"op": "dma", "dst": acc(dst), "src": acc(src)}
    # A bitcast view of HBM (x.view(dtype)): the bytes move as the tensor's own dtype into a
    # tile of the view's dtype, which then reads them as that dtype.
    for h, t, hk, tk in ((src, dst, "src", "dst"), (dst, src, "dst", "src")):
        if not h.tensor.on_chip and h.dt is not None and t.tensor.on_chip:
            if c.dtype_name(t.dtype) != c.dtype_name(h.dt):
                unsupported("a DMA between a bitcast HBM view and a tile of another dtype")
            op[hk].pop("dt", None)
            op[tk]["dt"] = c.dtype_name(h.tensor.dtype)
    if ind is not None:
        rows = dst.ind_rows if dst.ind is not None else src.ind_rows
        op.update({"index": acc(ind), "oob_skip": bool(oob_skip), "accumulate": bool(accumulate),
                   "rows": int(rows)})
    elif accumulate:
        unsupported("a DMA read-modify-write (dst_rmw_op) that is not indexed by a tile")
    return _emit(op, dst)


def reachable(v: View, engine: str) -> View:
    """``v``, or for GpSimd (which cannot reach PSUM) an SBUF copy of a partition broadcast the
    front end left in PSUM."""
    if engine == "gpsimd" and getattr(v.tensor, "psum_broadcast", False):
        tmp = fresh(v.shape, v.dtype)
        emit_copy(tmp, v)
        return tmp
    return v


def emit_copy(dst: View, src: View, engine="vector"):
    src = reachable(src, engine)
    if engine == "scalar" and c.tracer().generation == 2:
        return emit_activation(dst, src, "identity")
    return _emit({"op": "tensor_copy", "dst": acc(dst), "src": acc(src), "engine": engine}, dst)


def tiles_of(v: View):
    """``v`` as tiles whose first axis is the partition: one per index of the block axes in
    front of it (a blocked tensor is one tile per block)."""
    parts = [i for i, a in enumerate(v.axes) if a[2]]
    if not parts or parts[0] == 0:
        return [v]
    k = parts[0]
    out = []
    for idx in np.ndindex(*[a[1] for a in v.axes[:k]]):
        off = v.off + sum(int(i) * a[0] for i, a in zip(idx, v.axes[:k]))
        out.append(View(v.tensor, v.p0, off, v.axes[k:], v.dt))
    return out


def engine_partitions_ok(p0: int, n: int) -> bool:
    """The engines' start-partition rule: more than 64 partitions start at 0, 33-64 at 0 or 64,
    up to 32 at a multiple of 32 (docs/isa.md)."""
    if n > 64:
        return p0 == 0
    if n > 32:
        return p0 in (0, 64)
    return p0 % 32 == 0


def emit_memset(dst: View, value, engine="vector"):
    last = None
    for d in tiles_of(dst):
        if d.tensor.buffer == "sbuf" and not engine_partitions_ok(d.p0, d.partitions):
            # An engine cannot start there: set an aligned tile and move it by DMA.
            tmp = fresh(d.shape, d.dtype)
            _emit({"op": "memset", "dst": tmp.access(), "value": fnum(value), "engine": engine}, tmp)
            last = emit_dma(d, tmp)
            continue
        last = _emit({"op": "memset", "dst": d.access(), "value": fnum(value), "engine": engine}, d)
    return last


def emit_tensor_tensor(dst, a, b, op, engine="vector"):
    a, b = reachable(a, engine), reachable(b, engine)
    if a.tensor.buffer == "psum" and b.tensor.buffer == "psum":
        # The Vector engine reads one PSUM operand per instruction.
        tmp = c.new_tile(b.shape, b.dtype)
        emit_copy(tmp, b)
        b = tmp
    return _emit({"op": "tensor_tensor", "dst": acc(dst), "in0": acc(a), "in1": acc(b),
                  "alu": op, "engine": engine}, dst)


def emit_tensor_scalar(dst, src, stages, engine="vector"):
    src = reachable(src, engine)
    st = [{"alu": op, "operand": scalar_operand(x), "reverse": bool(rev)} for op, x, rev in stages]
    return _emit({"op": "tensor_scalar", "dst": acc(dst), "src": acc(src), "stages": st,
                  "engine": engine}, dst)


def emit_activation(dst, src, func, scale=1.0, bias=None, reduce=None):
    op = {"op": "activation", "dst": acc(dst), "src": acc(src), "func": func,
          "scale": scalar_operand(scale)}
    if bias is not None:
        op["bias"] = acc(bias)
    if reduce is not None:
        op["reduce"] = acc(reduce)
    return _emit(op, dst)


def emit_reduce(dst, src, op, axes, negate=False):
    return _emit({"op": "tensor_reduce", "dst": acc(dst), "src": acc(src), "reduce": op,
                  "axes": int(axes), "negate": bool(negate)}, dst)


def emit_matmul(dst, stationary, moving, accumulate):
    return _emit({"op": "matmul", "dst": acc(dst), "stationary": acc(stationary),
                  "moving": acc(moving), "accumulate": bool(accumulate)}, dst)


def emit_scan(dst, in0, in1, initial, op0, op1, reverse0=False, reverse1=False):
    return _emit({"op": "tensor_tensor_scan", "dst": acc(dst), "in0": acc(in0), "in1": acc(in1),
                  "initial": scalar_operand(initial), "op0": op0, "op1": op1,
                  "reverse0": bool(reverse0), "reverse1": bool(reverse1)}, dst)


def emit_stt(dst, src, operand0, in1, op0, op1, reverse0=False, reverse1=False):
    return _emit({"op": "scalar_tensor_tensor", "dst": acc(dst), "src": acc(src),
                  "operand0": scalar_operand(operand0), "in1": acc(in1), "op0": op0, "op1": op1,
                  "reverse0": bool(reverse0), "reverse1": bool(reverse1)}, dst)


def emit_tsr(dst, src, op0, operand0, reduce_op, reduce, reverse0=False):
    return _emit({"op": "tensor_scalar_reduce", "dst": acc(dst), "src": acc(src), "op0": op0,
                  "operand0": scalar_operand(operand0), "reverse0": bool(reverse0),
                  "reduce_op": reduce_op, "reduce": acc(reduce)}, dst)


def emit_simple(kind, dst, **srcs):
    op = {"op": kind, "dst": acc(dst)}
    op.update({k: acc(v) for k, v in srcs.items()})
    return _emit(op, dst)


def _tile_of(x, like: View):
    """``x`` as a tile shaped like ``like`` (a scalar becomes a memset tile)."""
    if isinstance(x, View):
        return x
    t = fresh(like.shape, like.dtype)
    emit_memset(t, x)
    return t


def emit_select(dst: View, predicate: View, on_true, on_false):
    """``dst = predicate != 0 ? on_true : on_false`` on the Vector engine."""
    on_true, on_false = _tile_of(on_true, dst), _tile_of(on_false, dst)
    return _emit({"op": "select", "dst": acc(dst), "predicate": acc(predicate),
                  "on_true": acc(on_true), "on_false": acc(on_false)}, dst)


def reduce_cmd_name(cmd) -> str:
    name = getattr(cmd, "name", cmd) or "idle"
    if name not in ("idle", "reset", "reduce", "reset_reduce"):
        unsupported(f"reduce_cmd={name}")
    return name


def _max_only(reduce_op, api):
    if reduce_op is not None and op_name(reduce_op) not in ("max", "amax", "maximum"):
        unsupported(f"{api} with reduce_op={op_name(reduce_op)} (only max)")


def emit_range_select(dst, src, bound0, bound1, cmp0, cmp1, range_start=0, on_false=None,
                      reduce_cmd=None, reduce=None, reduce_op=None):
    _max_only(reduce_op, "range_select")
    if c.tracer().generation < 3:
        fail("nki.isa.range_select needs NeuronCore-v3 or later (trn2, trn3)")
    op = {"op": "range_select", "dst": acc(dst), "src": acc(src), "bound0": acc(bound0),
          "bound1": acc(bound1), "cmp0": alu(cmp0), "cmp1": alu(cmp1),
          "range_start": int(range_start),
          "on_false": fnum(np.finfo(np.float32).min if on_false is None else on_false),
          "reduce_cmd": reduce_cmd_name(reduce_cmd)}
    if reduce is not None:
        op["reduce"] = acc(reduce)
    return _emit(op, dst)


def emit_select_reduce(dst, predicate, on_true, on_false, reverse=False, reduce_cmd=None,
                       reduce=None, reduce_op=None):
    _max_only(reduce_op, "select_reduce")
    op = {"op": "select_reduce", "dst": acc(dst), "predicate": acc(predicate),
          "on_true": acc(on_true), "on_false": scalar_operand(on_false), "reverse": bool(reverse),
          "reduce_cmd": reduce_cmd_name(reduce_cmd)}
    if reduce is not None:
        op["reduce"] = acc(reduce)
    return _emit(op, dst)


def emit_cumulative(dst, src, op0, imm0, op1, imm1=None, reduce_cmd=None, reverse0=False):
    cmd = getattr(reduce_cmd, "name", reduce_cmd) or "reset_reduce"
    if cmd not in ("reset_reduce", "reduce", "load_reduce"):
        unsupported(f"tensor_scalar_cumulative with reduce_cmd={cmd}")
    op = {"op": "tensor_scalar_cumulative", "dst": acc(dst), "src": acc(src), "op0": alu(op0),
          "operand0": scalar_operand(imm0), "reverse0": bool(reverse0), "op1": alu(op1),
          "reduce_cmd": cmd}
    if imm1 is not None:
        op["init"] = scalar_operand(imm1)
    return _emit(op, dst)


def emit_exponential(dst, src, max_value=0.0, reduce_res=None, reduce_cmd=None, reduce_init=0.0):
    """``dst = exp(src - max_value)`` on the Vector engine (NeuronCore-v4), summing into the
    accumulator registers as ``reduce_cmd`` says."""
    cmd = getattr(reduce_cmd, "name", reduce_cmd) or "idle"
    op = {"op": "exponential", "dst": acc(dst), "src": acc(src),
          "max": scalar_operand(max_value), "reduce_cmd": cmd}
    if cmd == "load_reduce":
        op["init"] = scalar_operand(reduce_init)
    elif reduce_init is not None and not (is_scalar(reduce_init) and float(reduce_init) == 0.0):
        fail("exponential: reduce_init is only used with reduce_cmd=load_reduce")
    if reduce_res is not None:
        op["reduce"] = acc(reduce_res)
    return _emit(op, dst)


def emit_match_replace8(dst, data, vals, imm, indices=None):
    op = {"op": "nc_match_replace8", "dst": acc(dst), "data": acc(data), "vals": acc(vals),
          "imm": fnum(imm)}
    if indices is not None:
        op["indices"] = acc(indices)
    return _emit(op, dst)


def gather(dst, data: View, indices: View, dtype=None, mask=None):
    """``dst[p, j] = data[p, indices[p, j]]`` over flattened free dims (GpSimd)."""
    if dst is None:
        dst = fresh(indices.shape, dtype or data.dtype)
    r = masked(mask, dst, indices)
    if r is None:
        return dst
    i = _emit({"op": "gather", "dst": acc(r[0]), "src": acc(data), "index": acc(r[1])}, dst)
    return produced(dst, i, mask_ranges(mask))


def sequence_bounds(dst, segment_ids: View, dtype=None):
    if dst is None:
        dst = fresh((segment_ids.partitions, 2, segment_ids.free_size), dtype or segment_ids.dtype)
    i = _emit({"op": "sequence_bounds", "dst": acc(dst), "src": acc(segment_ids)}, dst)
    return produced(dst, i)


def dropout(dst, data: View, prob, dtype=None, mask=None):
    """Zeros each element with probability ``prob`` (a number or a ``[P, 1]`` tile). The mask
    comes from a deterministic generator seeded per instruction, not the engine's RNG."""
    t = c.tracer()
    t.dropout_seed = getattr(t, "dropout_seed", 0) + 1
    if dst is None:
        dst = fresh(data.shape, dtype or data.dtype)
    r = masked(mask, dst, data, prob if isinstance(prob, View) else None)
    if r is None:
        return dst
    p = r[2] if r[2] is not None else prob
    i = _emit({"op": "dropout", "dst": acc(r[0]), "src": acc(r[1]), "prob": scalar_operand(p),
               "seed": t.dropout_seed}, dst)
    return produced(dst, i, mask_ranges(mask))


def emit_stream_shuffle(dst, src, shuffle_mask):
    mask = []
    for m in shuffle_mask:
        e = c.Expr.of(m)
        if e.terms:
            fail("nc_stream_shuffle mask entries must be constants")
        mask.append(int(e.const))
    if len(mask) != 32:
        fail(f"nc_stream_shuffle takes 32 mask entries, got {len(mask)}")
    return _emit({"op": "stream_shuffle", "dst": acc(dst), "src": acc(src), "mask": mask}, dst)


def where(cond: View, x, y, dtype=None, mask=None) -> View:
    like = x if isinstance(x, View) else y if isinstance(y, View) else cond
    out = fresh(cond.shape, dtype or like.dtype)
    r = masked(mask, out, cond, x if isinstance(x, View) else None, y if isinstance(y, View) else None)
    if r is None:
        return out
    i = emit_select(r[0], r[1], r[2] if r[2] is not None else x, r[3] if r[3] is not None else y)
    return produced(out, i, mask_ranges(mask))


def partition_reduce(dst: View, src: View, op: str):
    return _emit({"op": "partition_reduce", "dst": acc(dst), "src": acc(src), "reduce": op}, dst)


def local_gather(dst, src: View, index: View, elems=1, valid=None):
    """GpSimd gather (``nisa.local_gather``); a fresh ``[P, valid, elems]`` tile when ``dst`` is
    None."""
    per_core = index.free_size * 16
    valid = int(valid) if valid else per_core
    if dst is None:
        dst = fresh((src.partitions, valid, int(elems)), src.dtype)
    i = _emit({"op": "local_gather", "dst": acc(dst), "src": acc(src), "index": acc(index),
               "elems": int(elems), "valid": valid}, dst)
    return produced(dst, i)


def dma_transpose(dst: View, src: View, axes=None):
    """A transpose by DMA: HBM sources as one transfer walking the permuted strides; SBUF
    sources (the partition axis moves into the free axis) as one transfer per source column."""
    nd = len(src.axes)
    perm = tuple(axes) if axes is not None else {2: (1, 0), 3: (2, 1, 0), 4: (3, 1, 2, 0)}.get(nd)
    if perm is None or sorted(perm) != list(range(nd)):
        fail(f"dma_transpose of a {nd}-D tile needs axes (1, 0), (2, 1, 0) or (3, 1, 2, 0)")
    if not src.tensor.on_chip:
        v = View(src.tensor, src.p0, src.off, [src.axes[i] for i in perm], src.dt)
        return emit_dma(dst, v)
    if nd != 2:
        unsupported("dma_transpose of an on-chip tile with more than 2 dimensions")
    p, f = src.shape
    if c.tracer().generation >= 3 and p % 16 == 0 and c.itemsize(src.dtype) in (2, 4):
        # The hardware DGE transpose (NeuronCore-v3+): one instruction.
        return _emit({"op": "dma_transpose", "dst": acc(dst), "src": acc(src)}, dst)
    last = None
    for j in range(f):
        col = c.index_view(src, (slice(None), slice(j, j + 1)))
        row = c.index_view(dst, (slice(j, j + 1), slice(None)))
        last = emit_dma(row, col)
    return last


def emit_transpose(dst, src, engine="tensor"):
    return _emit({"op": "transpose", "dst": acc(dst), "src": acc(src), "engine": engine}, dst)


# ---------------------------------------------------------------------------------------------
# the compiler's side of the legacy dialect


def fresh(shape, dtype, buffer="sbuf") -> View:
    return c.new_tile(shape, dtype, buffer)


def produced(v: View, op_index: int, ranges=None) -> View:
    """Marks ``v`` (a fresh temporary) as written only by instruction ``op_index``, so that a
    store of it into another tile can write there directly."""
    v.tensor.producer = op_index
    v.tensor.producer_ranges = ranges
    return v


def mask_ranges(mask):
    if mask is None or mask is True:
        return {}
    if isinstance(mask, c.Mask):
        return mask.ranges()
    fail(f"a mask must be an index comparison such as (i * 128 + ix < n), not {mask!r}")


def masked(mask, *views):
    """The views restricted to the mask's index ranges, or None when nothing is selected."""
    r = mask_ranges(mask)
    if r is None:
        return None
    if not r:
        return views
    return tuple(c.restrict(v, r) if isinstance(v, View) else v for v in views)


def _same_elements(a: View, b: View) -> bool:
    return [n for n in a.shape if n != 1] == [n for n in b.shape if n != 1]


def assign(dst: View, value, mask=None):
    """``dst[...] = value``: a copy. When ``value`` is a fresh temporary written only by the
    instruction just before, the copy is marked so that, if the temporary is not used again,
    the tracer makes that instruction write ``dst`` directly (``Tracer.elide_copies``)."""
    if is_scalar(value):
        r = masked(mask, dst)
        if r is not None:
            emit_memset(r[0], value)
        return
    if not isinstance(value, View):
        fail(f"cannot assign {type(value).__name__} to a tile")
    t = value.tensor
    ops = c.tracer().ops
    prod = getattr(t, "producer", None)
    candidate = (mask is None and prod is not None and prod == len(ops) - 1
                 and value.axes == t.full().axes and value.p0 == 0 and value.off == 0
                 and dst.tensor is not t and _same_elements(dst, value))
    if candidate:
        d, v = _reshaped_like(dst, value), value
        ranges = getattr(t, "producer_ranges", None)
        if ranges:
            # The producer wrote only the masked region: copy that region.
            d, v = c.restrict(d, ranges), c.restrict(v, ranges)
        take_zero(d)  # an overwrite needs no deferred zeros
    else:
        r = masked(mask, dst, value)
        if r is None:
            return
        d, v = r
    before = len(ops)
    if d.tensor.on_chip and v.tensor.on_chip:
        if v.partitions != d.partitions and v.partitions == 1:
            v = broadcast_to(v, d.shape)
        emit_copy(d, v)
    elif d.tensor.on_chip or v.tensor.on_chip:
        if v.tensor.buffer == "psum":
            tmp = fresh(v.shape, v.dtype)
            emit_copy(tmp, v)
            v = tmp
        emit_dma(d, v)
    else:
        emit_dma(d, v)
    if candidate and len(ops) == before + 1 and before == prod + 1:
        ops[-1]["e"] = [t.id, prod]


def _reshaped_like(dst: View, like: View) -> View:
    """``dst`` with the axis structure of ``like`` when only size-1 axes differ."""
    if dst.shape == like.shape:
        return dst
    axes = [a for a in dst.axes if a[1] != 1]
    out = []
    it = iter(axes)
    for s, n, p in like.axes:
        if n == 1:
            out.append((0, 1, False))
        else:
            out.append(next(it))
    return View(dst.tensor, dst.p0, dst.off, out, dst.dt)


def accumulate(dst: View, value):
    """``dst[...] += value``: a matmul result accumulates in PSUM, anything else adds."""
    if isinstance(value, View):
        t = value.tensor
        ops = c.tracer().ops
        prod = getattr(t, "producer", None)
        if (prod is not None and prod == len(ops) - 1 and ops[prod]["i"]["op"] == "matmul"
                and dst.tensor.buffer == "psum" and value.axes == t.full().axes
                and _same_elements(dst, value)):
            op = ops[prod]["i"]
            target = _reshaped_like(dst, value)
            ranges = getattr(t, "producer_ranges", None)
            if ranges:
                target = c.restrict(target, ranges)
            start = take_zero(target)
            if not start and target.tensor.zero_pending:
                # Zeros elsewhere in the tensor (or a partial region): materialize them before
                # the matmul, which is already in the trace.
                m = ops.pop()
                materialize_zero(target.tensor)
                ops.append(m)
            op["dst"] = acc(target)
            op["accumulate"] = not start
            t.producer = None
            t.consumed = c.where()
            return
    if dst.tensor.zero_pending and take_zero(dst):
        assign(dst, value)
        return
    assign(dst, binary(dst, value, "add"))


def _bcast_free(v: View, shape) -> View:
    """``v`` broadcast along free axes of size 1 to ``shape`` (stride 0: no instruction)."""
    vs = list(v.shape)
    if len(vs) < len(shape):
        vs_axes = list(v.axes) + [(0, 1, False)] * (len(shape) - len(vs))
    else:
        vs_axes = list(v.axes)
    axes = []
    for (s, n, p), want in zip(vs_axes, shape):
        if n == want:
            axes.append((s, n, p))
        elif n == 1 and not p:
            axes.append((0, want, False))
        else:
            return None
    return View(v.tensor, v.p0, v.off, axes, v.dt)


def result_shape(a: View, b: View):
    sa, sb = list(a.shape), list(b.shape)
    n = max(len(sa), len(sb))
    sa += [1] * (n - len(sa))
    sb += [1] * (n - len(sb))
    out = []
    for x, y in zip(sa, sb):
        if x != y and x != 1 and y != 1:
            fail(f"shapes {a.shape} and {b.shape} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def binary(a, b, op, dtype=None, mask=None, dst=None):
    """``a op b`` elementwise: Vector engine; tile ⊕ scalar or ⊕ ``[P, 1]`` as tensor_scalar."""
    if op in ALU:
        op = ALU[op]
    if is_scalar(a) and is_scalar(b):
        fail("an elementwise op needs at least one tile")
    if is_scalar(b) or is_scalar(a):
        tile, s, rev = (a, b, False) if is_scalar(b) else (b, a, True)
        dtype = dtype or tile.dtype
        out = dst if dst is not None else fresh(tile.shape, dtype)
        r = masked(mask, out, tile)
        if r is None:
            return out
        i = emit_tensor_scalar(r[0], r[1], [(op, float(s), rev)])
        return out if dst is not None else produced(out, i, mask_ranges(mask))
    shape = result_shape(a, b)
    dtype = dtype or c.promote(a.dtype, b.dtype)
    out = dst if dst is not None else fresh(shape, dtype)
    # A [P, 1] operand against a [P, F] tile: per-partition scalar.
    for x, y, rev in ((a, b, False), (b, a, True)):
        if (y.partitions == x.partitions and y.free_size == 1 and x.free_size > 1
                and tuple(x.shape) == tuple(shape) and x.partitions == shape[0]):
            r = masked(mask, out, x, y)
            if r is None:
                return out
            i = emit_tensor_scalar(r[0], r[1], [(op, r[2], rev)])
            return out if dst is not None else produced(out, i, mask_ranges(mask))
    a2, b2 = a, b
    if a.partitions != shape[0]:
        a2 = broadcast_to(a, shape)
    if b.partitions != shape[0]:
        b2 = broadcast_to(b, shape)
    a2, b2 = _bcast_free(a2, shape), _bcast_free(b2, shape)
    if a2 is None or b2 is None:
        fail(f"cannot broadcast {a.shape} and {b.shape} to {shape}")
    r = masked(mask, out, a2, b2)
    if r is None:
        return out
    i = emit_tensor_tensor(r[0], r[1], r[2], op)
    return out if dst is not None else produced(out, i, mask_ranges(mask))


def unary(func, x, dtype=None, mask=None, scale=1.0, bias=None):
    """``f(x)`` on the Scalar engine (activation)."""
    if func == "negative":
        return binary(x, -1.0, "multiply", dtype=dtype, mask=mask)
    if func not in ACT:
        unsupported(f"nl.{func}")
    out = fresh(x.shape, dtype or x.dtype)
    r = masked(mask, out, x)
    if r is None:
        return out
    i = emit_activation(r[0], r[1], ACT[func], scale=scale, bias=bias)
    return produced(out, i, mask_ranges(mask))


def _axes_list(axis, ndim):
    if isinstance(axis, (int, np.integer)):
        axis = [int(axis)]
    axis = sorted(int(a) % ndim for a in axis)
    return axis


def reduce(x: View, op, axis, dtype=None, keepdims=False, mask=None, negate=False):
    """A reduction over trailing free axes on the Vector engine; over the partition axis as a
    matmul against a ones column."""
    axes = _axes_list(axis, x.ndim)
    if 0 in axes:
        unsupported("a reduction over the partition axis in nl.sum/max/min (use nisa.tensor_partition_reduce)")
    kept = [n for i, n in enumerate(x.shape) if i not in axes]
    if axes != list(range(x.ndim - len(axes), x.ndim)):
        # The Vector engine walks any access pattern: put the reduced axes innermost.
        order = [i for i in range(x.ndim) if i not in axes] + axes
        x = View(x.tensor, x.p0, x.off, [x.axes[i] for i in order], x.dt)
        if keepdims:
            unsupported("keepdims on a reduction over non-trailing axes")
    out_shape = kept if not keepdims else [1 if i in axes else n for i, n in enumerate(x.shape)]
    out = fresh(tuple(kept) + (1,) if len(kept) == 1 else tuple(kept), dtype or x.dtype)
    r = masked(mask, out, x)
    if r is None:
        return out
    i = emit_reduce(r[0], r[1], REDUCE[op], len(axes), negate)
    produced(out, i, mask_ranges(mask))
    if keepdims and tuple(out.shape) != tuple(out_shape):
        return c.reshape_view(out, out_shape)
    return out


def load(src: View, mask=None, dtype=None) -> View:
    if src.tensor.on_chip:
        fail("nl.load reads HBM; this tensor is already on chip")
    shape = src.shape if len(src.shape) > 1 else (src.shape[0], 1)
    if shape[0] > 128:
        fail(f"a tile has at most 128 partitions; nl.load of shape {src.shape} needs {shape[0]} "
             "(tile the first dimension)")
    out = fresh(shape, dtype or src.dtype)
    r = masked(mask, out, src)
    if r is None:
        return out
    i = emit_dma(r[0], r[1])
    return produced(out, i, mask_ranges(mask))


def store(dst: View, value, mask=None):
    if dst.tensor.on_chip:
        fail("nl.store writes HBM; use tile[...] = value for on-chip tensors")
    if not isinstance(value, View) and not is_scalar(value):
        fail(f"nl.store stores a tile or a number, not {type(value).__name__}")
    if is_scalar(value):
        tile = fresh(dst.shape if len(dst.shape) > 1 else (dst.shape[0], 1), dst.dtype)
        emit_memset(tile, value)
        value = tile
    if value.tensor.buffer == "psum":
        tmp = fresh(value.shape, value.dtype)
        emit_copy(tmp, value)
        value = tmp
    r = masked(mask, dst, value)
    if r is None:
        return
    emit_dma(r[0], r[1])


def copy(x: View, dtype=None, mask=None, engine="vector") -> View:
    if not x.tensor.on_chip:
        return load(x, mask=mask, dtype=dtype)
    out = fresh(x.shape, dtype or x.dtype)
    r = masked(mask, out, x)
    if r is None:
        return out
    i = emit_copy(r[0], r[1], engine)
    return produced(out, i, mask_ranges(mask))


def _sbuf(x: View) -> View:
    if x.tensor.buffer == "sbuf":
        return x
    tmp = fresh(x.shape, x.dtype)
    emit_copy(tmp, x)
    return tmp


def is_double_row(perf_mode) -> bool:
    name = getattr(perf_mode, "name", perf_mode)
    if name in (None, "none"):
        return False
    if name in ("double_row", "double_row_gen3"):
        return True
    unsupported(f"nc_matmul perf_mode={name!r}")


def nc_matmul(stationary: View, moving: View, mask=None, dst: View | None = None, accumulate=False,
              double_row=False):
    """``stationary[K, M]ᵀ · moving[K, N]`` into PSUM ``[M, N]`` fp32, in ≤ 512-column steps.
    ``double_row`` (fp8, v3+): operands ``[K, 2, M]`` and ``[K, 2, N]`` contract over both."""
    stationary, moving = _sbuf(stationary), _sbuf(moving)
    k, m = stationary.partitions, stationary.free_size
    k2, n = moving.partitions, moving.free_size
    if double_row:
        if c.tracer().generation < 3:
            fail("double_row matmuls need NeuronCore-v3 or later (trn2, trn3)")
        out = dst if dst is not None else fresh((m // 2, n // 2), np.float32, "psum")
        i = _emit({"op": "matmul", "dst": acc(out), "stationary": acc(stationary),
                   "moving": acc(moving), "accumulate": bool(accumulate), "double_row": True}, out)
        return out if dst is not None else produced(out, i)
    if k != k2:
        fail(f"matmul contraction (partition) sizes differ: {k} and {k2}")
    if m > 128:
        fail(f"the stationary tile of a matmul has at most 128 columns, got {m}")
    out = dst if dst is not None else fresh((m, n), np.float32, "psum")
    r = masked(mask, out, stationary, moving)
    if r is None:
        return out
    o, s, mv = r
    step = 512
    last = None
    if o.free_size <= step:
        last = emit_matmul(o, s, mv, accumulate)
    else:
        if len(o.axes) != 2 or len(mv.axes) != 2:
            fail("a matmul wider than 512 columns needs 2-D tiles")
        for j in range(0, o.free_size, step):
            w = min(step, o.free_size - j)
            oj = c.index_view(o, (slice(None), slice(j, j + w)))
            mj = c.index_view(mv, (slice(None), slice(j, j + w)))
            last = emit_matmul(oj, s, mj, accumulate)
        last = None
    if dst is None and last is not None:
        produced(out, last, mask_ranges(mask))
    return out


def transpose(x: View, dtype=None, engine="tensor", mask=None) -> View:
    """Partition ↔ free transpose. Tensor engine: SBUF ``[P, F ≤ 128]`` to PSUM ``[F, P]``."""
    if engine == "vector":
        out = fresh((x.free_size, x.partitions), dtype or x.dtype)
    else:
        x = _sbuf(x)
        out = fresh((x.free_size, x.partitions), dtype or x.dtype, "psum")
    r = masked(mask, out, x)
    if r is None:
        return out
    i = emit_transpose(r[0], r[1], engine)
    return produced(out, i, mask_ranges(mask))


def ones_row(n: int, dtype) -> View:
    """A cached SBUF ``[1, n]`` row of ones (the stationary of a partition broadcast)."""
    t = c.tracer()
    key = (n, c.dtype_name(dtype))
    v = t.ones_cache.get(key)
    if v is None:
        v = fresh((1, n), dtype)
        emit_memset(v, 1.0)
        v.tensor.producer = None
        t.ones_cache[key] = v
    return v


def _broadcast_by_dma(flat: View, shape) -> View:
    """Integer rows (a matmul would round them through fp32): SBUF-to-SBUF DMAs that double
    the filled partitions each time (log2(P) transfers)."""
    p = shape[0]
    out = fresh((p, flat.free_size), flat.dtype)
    emit_dma(c.index_view(out, (slice(0, 1), slice(None))), flat)
    k = 1
    while k < p:
        w = min(k, p - k)
        emit_dma(c.index_view(out, (slice(k, k + w), slice(None))),
                 c.index_view(out, (slice(0, w), slice(None))))
        k += w
    if len(shape) > 2:
        return c.reshape_view(out, shape)
    return _bcast_free(out, shape) if out.shape != tuple(shape) else out


# fp32 elements per partition of a partition broadcast left in PSUM (two of its eight banks);
# larger ones, and 16-bit ones (whose consumers expect their dtype), are copied to SBUF.
_PSUM_BROADCAST_MAX = 1024


def broadcast_to(x: View, shape) -> View:
    """``x`` broadcast to ``shape``: along free axes by a stride-0 view; across partitions by a
    matmul of a ones row with ``x`` (exact: one product per output), left in PSUM when small and
    fp32, else copied to SBUF."""
    shape = tuple(int(s) for s in shape)
    if x.partitions == shape[0] or not x.tensor.on_chip:
        v = _bcast_free(x, shape)
        if v is None:
            fail(f"cannot broadcast {x.shape} to {shape}")
        return v
    if x.partitions != 1:
        fail(f"cannot broadcast {x.partitions} partitions to {shape[0]}")
    src = _sbuf(x)
    flat = c.reshape_view(src, (1, src.free_size)) if len(src.axes) != 2 else src
    nfree = flat.free_size
    if not c.is_float(src.dtype):
        return _broadcast_by_dma(flat, shape)
    is_f32 = c.dtype_name(src.dtype) in ("f32", "tf32")
    ones = ones_row(shape[0], np.float32 if is_f32 else c.np_dtype(src.dtype))
    full_free = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if nfree != full_free:
        if nfree == 1:
            # A single value per partition after the broadcast.
            ps = fresh((shape[0], 1), np.float32, "psum")
            emit_matmul(ps, ones, flat, False)
            out = fresh((shape[0], 1), src.dtype)
            emit_copy(out, ps)
            return _bcast_free(out, shape)
        fail(f"cannot broadcast {x.shape} to {shape}")
    if c.dtype_name(src.dtype) == "f32" and nfree <= _PSUM_BROADCAST_MAX:
        # The compiler's lowering: engines read the broadcast where TensorE left it (a Vector
        # operand in PSUM also streams at one element per cycle [N-isa-226 tensor_tensor]).
        ps = fresh((shape[0], nfree), np.float32, "psum")
        for k in range(0, nfree, 512):
            kw = min(512, nfree - k)
            emit_matmul(c.index_view(ps, (slice(None), slice(k, k + kw))), ones,
                        c.index_view(flat, (slice(None), slice(k, k + kw))), False)
        ps.tensor.psum_broadcast = True
        return c.reshape_view(ps, shape) if len(shape) > 2 else ps
    out = fresh((shape[0], nfree), src.dtype)
    chunk = 2048  # fp32 elements of one PSUM tile of four banks
    for j in range(0, nfree, chunk):
        w = min(chunk, nfree - j)
        ps = fresh((shape[0], w), np.float32, "psum")
        for k in range(0, w, 512):
            kw = min(512, w - k)
            emit_matmul(c.index_view(ps, (slice(None), slice(k, k + kw))), ones,
                        c.index_view(flat, (slice(None), slice(j + k, j + k + kw))), False)
        emit_copy(c.index_view(out, (slice(None), slice(j, j + w))), ps)
    if len(shape) > 2:
        return c.reshape_view(out, shape)
    return out
