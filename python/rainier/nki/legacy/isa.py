"""``neuronxcc.nki.isa`` (legacy dialect): instructions that return their result tile."""

from __future__ import annotations

import numpy as np

from .. import _core as c
from .. import _ops as o
from .._isa_common import (  # noqa: F401
    act_name, affine_of, dge_mode, engine, engine_name, get_nc_version, gpsimd_engine,
    matmul_perf_mode, missing, nc_version, oob_mode, reduce_cmd, reduce_name, scalar_engine,
    sync_engine, tensor_engine, unknown_engine, vector_engine,
)


def nc_matmul(stationary, moving, is_stationary_onezero=False, is_moving_onezero=False,
              is_transpose=False, tile_position=(), tile_size=(), mask=None, perf_mode=None, **_):
    """``stationaryᵀ @ moving`` on the Tensor engine, into a fresh PSUM tile (fp32).

    ``tile_position``/``tile_size`` (PE-array row/column tiling) compute the same values; the
    timing model runs such matmuls one after another (docs/nki.md)."""
    if is_transpose:
        # The data is the stationary operand (the moving one is the identity).
        return o.transpose(stationary, mask=mask)
    return o.nc_matmul(stationary, moving, mask=mask, double_row=o.is_double_row(perf_mode))


def nc_transpose(data, mask=None, dtype=None, engine=unknown_engine, **_):
    e = engine_name(engine, "tensor" if data.free_size > 32 or data.partitions > 32 else "vector",
                    ("tensor", "vector"))
    return o.transpose(data, dtype=dtype, engine=e, mask=mask)


def activation(op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None,
               reduce_cmd=None, mask=None, dtype=None, **_):
    func = act_name(op)
    cmd = getattr(reduce_cmd, "name", reduce_cmd)
    if cmd not in (None, "idle", "reset_reduce"):
        c.unsupported(f"nki.isa.activation with reduce_cmd={cmd} (the Scalar engine's accumulator registers)")
    if isinstance(bias, (int, float)):
        bias = None if bias == 0 else _const_column(data.partitions, bias)
    out = o.fresh(data.shape, dtype or data.dtype)
    r = o.masked(mask, out, data, bias, scale if isinstance(scale, c.View) else None, reduce_res)
    if r is None:
        return out
    d, s, b, sc, red = r
    if reduce_res is not None and reduce_name(reduce_op or np.add) != "add":
        c.unsupported("nki.isa.activation with a reduce other than add")
    i = o.emit_activation(d, s, func, scale=sc if sc is not None else scale, bias=b, reduce=red)
    return o.produced(out, i, o.mask_ranges(mask))


def activation_reduce(op, data, reduce_op, reduce_res, bias=None, scale=1.0, mask=None, dtype=None, **_):
    return activation(op, data, bias=bias, scale=scale, reduce_op=reduce_op, reduce_res=reduce_res,
                      mask=mask, dtype=dtype)


def _const_column(p, value):
    v = o.fresh((p, 1), np.float32)
    o.emit_memset(v, value)
    v.tensor.producer = None
    return v


def tensor_tensor(data1, data2, op, dtype=None, mask=None, engine=unknown_engine, **_):
    e = engine_name(engine, "vector", ("vector", "gpsimd"))
    shape = o.result_shape(data1, data2)
    out = o.fresh(shape, dtype or c.promote(data1.dtype, data2.dtype))
    r = o.masked(mask, out, data1, data2)
    if r is None:
        return out
    i = o.emit_tensor_tensor(r[0], r[1], r[2], o.alu(op), e)
    return o.produced(out, i, o.mask_ranges(mask))


def tensor_scalar(data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False,
                  dtype=None, mask=None, engine=unknown_engine, **_):
    e = engine_name(engine, "vector", ("vector", "scalar", "gpsimd"))
    out = o.fresh(data.shape, dtype or data.dtype)
    stages = [(o.alu(op0), operand0, reverse0)]
    if op1 is not None:
        stages.append((o.alu(op1), operand1, reverse1))
    views = [out, data] + [x for _, x, _ in stages]
    r = o.masked(mask, *views)
    if r is None:
        return out
    stages = [(op, r[2 + k], rev) for k, (op, _, rev) in enumerate(stages)]
    i = o.emit_tensor_scalar(r[0], r[1], stages, e)
    return o.produced(out, i, o.mask_ranges(mask))


def tensor_reduce(op, data, axis, mask=None, dtype=None, negate=False, keepdims=False, **_):
    return o.reduce(data, reduce_name(op), axis, dtype=dtype, keepdims=keepdims, mask=mask,
                    negate=negate)


def tensor_copy(src, mask=None, dtype=None, engine=unknown_engine, **_):
    e = engine_name(engine, "vector", ("vector", "scalar", "gpsimd"))
    return o.copy(src, dtype=dtype, mask=mask, engine=e)


def memset(shape, value, dtype, mask=None, engine=unknown_engine, **_):
    e = engine_name(engine, "vector", ("vector", "gpsimd"))
    out = o.fresh(shape, dtype)
    r = o.masked(mask, out)
    if r is None:
        return out
    i = o.emit_memset(r[0], value, e)
    return o.produced(out, i, o.mask_ranges(mask))


def iota(expr, dtype, mask=None, **_):
    """``dst[p, i…] = expr(p, i…)`` on GpSimd, for an affine index expression."""
    base, cm, steps, sizes = affine_of(expr)
    out = o.fresh(tuple(sizes), dtype)
    r = o.masked(mask, out)
    if r is None:
        return out
    i = c.tracer().emit({"op": "iota", "dst": o.acc(r[0]), "base": base, "channel_multiplier": cm,
                         "steps": steps})
    return o.produced(out, i, o.mask_ranges(mask))


def affine_select(pred, on_true_tile, on_false_value, mask=None, dtype=None, **_):
    """``dst = pred(p, i…) ? on_true_tile : on_false_value``, ``pred`` an affine comparison."""
    if not isinstance(pred, c.Mask) or len(pred.terms) != 1:
        c.fail("nki.isa.affine_select takes one affine comparison as its predicate")
    e, cmp = pred.terms[0]
    base, cm, steps, _ = affine_of(e)
    out = o.fresh(on_true_tile.shape, dtype or on_true_tile.dtype)
    r = o.masked(mask, out, on_true_tile)
    if r is None:
        return out
    steps = steps + [0] * (len(out.shape) - 1 - len(steps))
    i = c.tracer().emit({"op": "affine_select", "dst": o.acc(r[0]), "src": o.acc(r[1]), "cmp": cmp,
                         "base": base, "channel_multiplier": cm, "steps": steps,
                         "on_false": o.fnum(on_false_value)})
    return o.produced(out, i, o.mask_ranges(mask))


def dma_copy(dst, src, mask=None, dst_rmw_op=None, oob_mode=None, dge_mode=None, **_):
    """A DMA; ``src``/``dst`` indexed by a tile make it indirect (``oob_mode`` decides what an
    out-of-range index does; ``dst_rmw_op=np.add`` accumulates: a scatter-add)."""
    if dst_rmw_op is not None and o.op_name(dst_rmw_op) != "add":
        c.unsupported(f"nki.isa.dma_copy with dst_rmw_op={o.op_name(dst_rmw_op)} (only add)")
    r = o.masked(mask, dst, src)
    if r is None:
        return
    d, s = r
    if s.tensor.buffer == "psum":
        c.fail("DMA cannot read PSUM")
    skip = getattr(oob_mode, "name", oob_mode) == "skip"
    o.emit_dma(d, s, oob_skip=skip, accumulate=dst_rmw_op is not None)


def tensor_tensor_scan(data0, data1, initial, op0, op1, reverse0=False, reverse1=False,
                       dtype=None, mask=None, **_):
    """A scan along each partition: ``x = op1(op0(data0[i], x), data1[i])`` from ``initial``."""
    dt = dtype or c.promote(data0.dtype, data1.dtype)
    out = o.fresh(data0.shape, dt)
    r = o.masked(mask, out, data0, data1, initial if isinstance(initial, c.View) else None)
    if r is None:
        return out
    init = r[3] if r[3] is not None else initial
    i = o.emit_scan(r[0], r[1], r[2], init, o.alu(op0), o.alu(op1), reverse0, reverse1)
    return o.produced(out, i, o.mask_ranges(mask))


def _one_source(kind, data, shape, dtype, mask):
    """An instruction of one source into a fresh tile of ``shape`` (``None``: data's)."""
    out = o.fresh(shape or data.shape, dtype or data.dtype)
    r = o.masked(mask, out, data)
    if r is None:
        return out
    return o.produced(out, o.emit_simple(kind, r[0], src=r[1]), o.mask_ranges(mask))


def bn_stats(data, mask=None, dtype=None, **_):
    """Per partition ``(count, mean, var·count)`` of the even then odd elements: ``[P, 6]``."""
    return _one_source("bn_stats", data, (data.partitions, 6), dtype, mask)


def bn_aggr(data, mask=None, dtype=None, **_):
    """Mean and variance per partition from ``bn_stats`` triples: ``[P, 2]``."""
    return _one_source("bn_aggr", data, (data.partitions, 2), dtype, mask)


def reciprocal(data, dtype=None, mask=None, **_):
    """``1 / data`` on the Vector engine."""
    return _one_source("reciprocal", data, None, dtype, mask)


def scalar_tensor_tensor(data, op0, operand0, op1, operand1, reverse0=False, reverse1=False,
                         dtype=None, mask=None, **_):
    """``(data op0 operand0) op1 operand1`` on the Vector engine."""
    out = o.fresh(data.shape, dtype or c.promote(data.dtype, operand1.dtype))
    r = o.masked(mask, out, data, operand0 if isinstance(operand0, c.View) else None, operand1)
    if r is None:
        return out
    s0 = r[2] if r[2] is not None else operand0
    i = o.emit_stt(r[0], r[1], s0, r[3], o.alu(op0), o.alu(op1), reverse0, reverse1)
    return o.produced(out, i, o.mask_ranges(mask))


def tensor_scalar_reduce(data, op0, operand0, reduce_op, reduce_res, reverse0=False, dtype=None,
                         mask=None, **_):
    """``data op0 operand0`` with a reduction of the result into ``reduce_res`` (Vector)."""
    out = o.fresh(data.shape, dtype or data.dtype)
    r = o.masked(mask, out, data, operand0 if isinstance(operand0, c.View) else None, reduce_res)
    if r is None:
        return out
    s0 = r[2] if r[2] is not None else operand0
    i = o.emit_tsr(r[0], r[1], o.alu(op0), s0, reduce_name(reduce_op), r[3], reverse0)
    return o.produced(out, i, o.mask_ranges(mask))


def tensor_copy_predicated(src, dst, predicate, reverse_pred=False, mask=None, dtype=None, **_):
    """``dst = predicate ? src : dst`` (``reverse_pred``: where the predicate is 0)."""
    r = o.masked(mask, dst, predicate, src if isinstance(src, c.View) else None)
    if r is None:
        return
    d, p, s = r
    s = s if s is not None else src
    o.emit_select(d, p, d, s) if reverse_pred else o.emit_select(d, p, s, d)


def range_select(on_true_tile, comp_op0, comp_op1, bound0, bound1, reduce_cmd=None,
                 reduce_res=None, reduce_op=None, range_start=0, on_false_value=None, mask=None,
                 dtype=None, **_):
    """Keeps elements whose free index + range_start passes both bounds (v3+), folding row
    maxima into the Vector engine's accumulator registers by ``reduce_cmd``."""
    out = o.fresh(on_true_tile.shape, dtype or on_true_tile.dtype)
    r = o.masked(mask, out, on_true_tile, bound0, bound1, reduce_res)
    if r is None:
        return out
    i = o.emit_range_select(r[0], r[1], r[2], r[3], comp_op0, comp_op1, range_start, on_false_value,
                            reduce_cmd, r[4], reduce_op)
    return o.produced(out, i, o.mask_ranges(mask))


def select_reduce(dst, predicate, on_true, on_false, reduce_res=None, reduce_cmd=None,
                  reduce_op=None, reverse_pred=False, mask=None, dtype=None, **_):
    """``dst = predicate ? on_true : on_false`` with row maxima into the accumulators."""
    r = o.masked(mask, dst, predicate, on_true, on_false if isinstance(on_false, c.View) else None,
                 reduce_res)
    if r is None:
        return
    f = r[3] if r[3] is not None else on_false
    o.emit_select_reduce(r[0], r[1], r[2], f, reverse_pred, reduce_cmd, r[4], reduce_op)


def local_gather(src_buffer, index, num_elem_per_idx=1, num_valid_indices=None, mask=None, **_):
    """Gather within each 16-partition group on GpSimd: ``[P, valid, num_elem_per_idx]``."""
    return o.local_gather(None, src_buffer, index, num_elem_per_idx, num_valid_indices)


def tensor_partition_reduce(op, data, mask=None, dtype=None, **_):
    """A reduction across partitions on GpSimd: ``[1, ...]``."""
    out = o.fresh((1,) + tuple(data.shape[1:]), dtype or data.dtype)
    r = o.masked(mask, out, data)
    if r is None:
        return out
    i = o.partition_reduce(r[0], r[1], reduce_name(op))
    return o.produced(out, i, o.mask_ranges(mask))


def tensor_scalar_cumulative(src, dst, op0, op1, imm0, imm1=None, reduce_cmd=None, reverse0=False,
                             mask=None, dtype=None, **_):
    """A running ``op1`` over ``src op0 imm0`` through the Vector engine's accumulators."""
    r = o.masked(mask, dst, src)
    if r is None:
        return
    o.emit_cumulative(r[0], r[1], op0, imm0, op1, imm1, reduce_cmd, reverse0)


def nc_stream_shuffle(src, dst, shuffle_mask, dtype=None, mask=None, **_):
    """Moves partitions within each 32-partition quadrant: dst[i] = src[shuffle_mask[i]]."""
    r = o.masked(mask, dst, src)
    if r is None:
        return
    o.emit_stream_shuffle(r[0], r[1], shuffle_mask)


def nc_match_replace8(data, vals, imm, dst_idx=None, mask=None, dtype=None, **_):
    """``data`` with the first match of each of the 8 ``vals`` replaced by ``imm``."""
    out = o.fresh(data.shape, dtype or data.dtype)
    r = o.masked(mask, out, data)
    if r is None:
        return out
    i = o.emit_match_replace8(r[0], r[1], vals, imm, dst_idx)
    return o.produced(out, i, o.mask_ranges(mask))


def sequence_bounds(segment_ids, dtype=None, **_):
    """Per element, the [start, end) of its run of equal segment ids: ``[P, 2, N]``."""
    return o.sequence_bounds(None, segment_ids, dtype)


def dropout(data, prob, mask=None, dtype=None, **_):
    return o.dropout(None, data, prob, dtype, mask)


def max8(src, mask=None, dtype=None, **_):
    """The 8 largest values of each partition, descending: ``[P, 8]``."""
    return _one_source("max8", src, (src.partitions, 8), dtype, mask)


def nc_find_index8(data, vals, mask=None, dtype=None, **_):
    """Indices of the first occurrence of each of 8 values per partition: ``[P, 8]`` uint32."""
    out = o.fresh((data.partitions, 8), dtype or np.uint32)
    r = o.masked(mask, None, data)
    i = o.emit_simple("nc_find_index8", out, data=r[1], vals=vals)
    return o.produced(out, i)


def dma_transpose(src, axes=None, mask=None, dtype=None, **_):
    nd = len(src.shape)
    perm = tuple(axes) if axes is not None else {2: (1, 0), 3: (2, 1, 0), 4: (3, 1, 2, 0)}.get(nd, ())
    shape = tuple(src.shape[i] for i in perm) if perm else src.shape[::-1]
    out = o.fresh(shape, dtype or src.dtype)
    i = o.dma_transpose(out, src, axes)
    return o.produced(out, i) if i is not None else out


for _name in ( "nc_stream_shuffle", "tensor_copy_dynamic_dst",
              "tensor_copy_dynamic_src",
              "builtin_custom_op", "nc_matmul_mx", "quantize_mx"):
    if _name not in globals():
        globals()[_name] = missing(_name)
