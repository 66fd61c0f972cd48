"""``nki.isa`` (current dialect): every instruction writes an explicit ``dst``."""

from __future__ import annotations

import numpy as np

from .. import _core as c
from .. import _ops as o
from .._isa_common import (  # noqa: F401
    act_name, dge_mode, engine, engine_name, get_nc_version, gpsimd_engine, matmul_perf_mode,
    missing, nc_version, oob_mode, reduce_cmd, reduce_name, scalar_engine, sync_engine,
    tensor_engine, unknown_engine, vector_engine,
)


def _span_written(dst) -> bool:
    """Whether ``dst``'s PSUM bytes were written before (for ``accumulate=None``); records them."""
    t = dst.tensor
    spans = t.__dict__.setdefault("written", [])
    lo, hi = o._byte_span(dst)
    p0, p1 = dst.p0, dst.p0 + dst.partitions
    hit = any(a < hi and lo < b and q0 < p1 and p0 < q1 for a, b, q0, q1 in spans)
    spans.append((lo, hi, p0, p1))
    return hit


def dma_copy(dst, src, priority=None, oob_mode=None, dge_mode=None, engine=None, name=None,
             dst_rmw_op=None, **_):
    if src.tensor.buffer == "psum" or dst.tensor.buffer == "psum":
        c.fail("DMA cannot reach PSUM")
    if dst_rmw_op is not None and o.op_name(dst_rmw_op) != "add":
        c.unsupported(f"nki.isa.dma_copy with dst_rmw_op={o.op_name(dst_rmw_op)} (only add)")
    skip = getattr(oob_mode, "name", oob_mode) == "skip"
    o.emit_dma(dst, src, oob_skip=skip, accumulate=dst_rmw_op is not None)


def tensor_copy(dst, src, engine=unknown_engine, name=None, **_):
    e = engine_name(engine, "vector", ("vector", "scalar", "gpsimd"))
    o.emit_copy(dst, src, e)


def memset(dst, value, engine=unknown_engine, name=None, **_):
    e = engine_name(engine, "vector", ("vector", "gpsimd"))
    o.emit_memset(dst, value, e)


def nc_matmul(dst, stationary, moving, is_stationary_onezero=False, is_moving_onezero=False,
              is_transpose=False, accumulate=None, tile_position=(), tile_size=(), perf_mode=None,
              name=None, **_):
    if is_transpose:
        # The data is the stationary operand (the moving one is the identity).
        o.emit_transpose(dst, stationary, "tensor")
        return
    written = _span_written(dst)
    acc = written if accumulate is None else bool(accumulate)
    o.nc_matmul(stationary, moving, dst=dst, accumulate=acc, double_row=o.is_double_row(perf_mode))


def nc_matmul_mx(dst, stationary, moving, stationary_scale, moving_scale, tile_position=None,
                 tile_size=None, accumulate=None, name=None, **_):
    """MX matmul (NeuronCore-v4). Row tiling (``tile_position``/``tile_size``) computes the
    same values; Rainier times every MX matmul as one on the whole array."""
    if c.tracer().generation < 4:
        c.fail("nc_matmul_mx needs NeuronCore-v4 (trn3)")
    written = _span_written(dst)
    acc = written if accumulate is None else bool(accumulate)
    o._emit({"op": "matmul_mx", "dst": o.acc(dst), "stationary": o.acc(stationary),
             "moving": o.acc(moving), "stationary_scale": o.acc(stationary_scale),
             "moving_scale": o.acc(moving_scale), "accumulate": acc}, dst)


def quantize_mx(dst, src, dst_scale, name=None, **_):
    """bf16/fp16 to MXFP8 data and scales on the Vector engine (NeuronCore-v4)."""
    if c.tracer().generation < 4:
        c.fail("quantize_mx needs NeuronCore-v4 (trn3)")
    o._emit({"op": "quantize_mx", "dst": o.acc(dst), "src": o.acc(src),
             "scale": o.acc(dst_scale)}, dst)


def nc_transpose(dst, data, engine=unknown_engine, name=None, **_):
    default = "tensor" if dst.tensor.buffer == "psum" else "vector"
    o.emit_transpose(dst, data, engine_name(engine, default, ("tensor", "vector")))


def tensor_tensor(dst, data1, data2, op, engine=unknown_engine, name=None, **_):
    e = engine_name(engine, "vector", ("vector", "gpsimd"))
    o.emit_tensor_tensor(dst, data1, data2, o.alu(op), e)


def tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None,
                  reverse1=False, engine=unknown_engine, name=None, **_):
    e = engine_name(engine, "vector", ("vector", "scalar", "gpsimd"))
    stages = [(o.alu(op0), operand0, reverse0)]
    if op1 is not None:
        stages.append((o.alu(op1), operand1, reverse1))
    o.emit_tensor_scalar(dst, data, stages, e)


def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, name=None, **_):
    axes = o._axes_list(axis, data.ndim)
    if 0 in axes or axes != list(range(data.ndim - len(axes), data.ndim)):
        c.fail(f"tensor_reduce reduces trailing free axes; got axis={axis} for shape {data.shape}")
    o.emit_reduce(dst, data, reduce_name(op), len(axes), negate)


def activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None,
               reduce_cmd=None, name=None, **_):
    if isinstance(bias, (int, float)):
        if bias != 0:
            b = o.fresh((data.partitions, 1), np.float32)
            o.emit_memset(b, bias)
            bias = b
        else:
            bias = None
    if reduce_res is not None and reduce_name(reduce_op or "add") != "add":
        c.unsupported("nki.isa.activation with a reduce other than add")
    cmd = getattr(reduce_cmd, "name", reduce_cmd)
    if cmd not in (None, "idle", "reset_reduce"):
        c.unsupported(f"nki.isa.activation with reduce_cmd={cmd} (the Scalar engine's accumulator registers)")
    o.emit_activation(dst, data, act_name(op), scale=scale, bias=bias, reduce=reduce_res)


def activation_reduce(dst, op, data, reduce_op, reduce_res, bias=None, scale=1.0, name=None, **_):
    activation(dst, op, data, bias=bias, scale=scale, reduce_op=reduce_op, reduce_res=reduce_res)


def _pattern_steps(dst, pattern):
    steps = [int(s) for s, _ in pattern]
    nums = [int(n) for _, n in pattern]
    if int(np.prod(nums)) != dst.free_size:
        c.fail(f"the pattern covers {int(np.prod(nums))} elements per partition, dst has {dst.free_size}")
    return steps, nums


def iota(dst, pattern, offset=0, channel_multiplier=0, name=None, **_):
    steps, nums = _pattern_steps(dst, pattern)
    view = c.View(dst.tensor, dst.p0, dst.off, [dst.axes[0]] + _contig(dst, nums), dst.dt)
    c.tracer().emit({"op": "iota", "dst": o.acc(view), "base": int(offset),
                     "channel_multiplier": int(channel_multiplier), "steps": steps})


def _contig(dst, nums):
    free = [a for a in dst.axes[1:]]
    expect = 1
    for s, n, _ in reversed(free):
        if n != 1 and s != expect:
            c.unsupported("iota/affine_select into a non-contiguous tile")
        expect *= n
    axes = []
    acc = 1
    for n in reversed(nums):
        axes.append((acc, n, False))
        acc *= n
    return list(reversed(axes))


def affine_select(dst, pattern, channel_multiplier, on_true_tile, on_false_value, cmp_op=None,
                  offset=0, name=None, **_):
    steps, nums = _pattern_steps(dst, pattern)
    d = c.View(dst.tensor, dst.p0, dst.off, [dst.axes[0]] + _contig(dst, nums), dst.dt)
    s = c.View(on_true_tile.tensor, on_true_tile.p0, on_true_tile.off,
               [on_true_tile.axes[0]] + _contig(on_true_tile, nums), on_true_tile.dt)
    cmp = o.ALU[o.op_name(cmp_op)] if cmp_op is not None else "eq"
    c.tracer().emit({"op": "affine_select", "dst": o.acc(d), "src": o.acc(s), "cmp": cmp,
                     "base": int(offset), "channel_multiplier": int(channel_multiplier),
                     "steps": steps, "on_false": o.fnum(on_false_value)})


def tensor_tensor_scan(dst, data0, data1, initial, op0, op1, reverse0=False, reverse1=False,
                       name=None, **_):
    o.emit_scan(dst, data0, data1, initial, o.alu(op0), o.alu(op1), reverse0, reverse1)


def bn_stats(dst, data, name=None, **_):
    o.emit_simple("bn_stats", dst, src=data)


def bn_aggr(dst, data, name=None, **_):
    o.emit_simple("bn_aggr", dst, src=data)


def reciprocal(dst, data, name=None, **_):
    o.emit_simple("reciprocal", dst, src=data)


def scalar_tensor_tensor(dst, data, op0, operand0, op1, operand1, reverse0=False, reverse1=False,
                         name=None, **_):
    o.emit_stt(dst, data, operand0, operand1, o.alu(op0), o.alu(op1), reverse0, reverse1)


def tensor_scalar_reduce(dst, data, op0, operand0, reduce_op, reduce_res=None, reverse0=False,
                         reduce_cmd=None, reduce_init=None, reduce_res_negate=False, name=None, **_):
    if reduce_res is None:
        o.emit_tensor_scalar(dst, data, [(o.alu(op0), operand0, reverse0)])
        return
    if reduce_init is not None or reduce_res_negate:
        c.unsupported("nki.isa.tensor_scalar_reduce reduce_init/reduce_res_negate")
    o.emit_tsr(dst, data, o.alu(op0), operand0, reduce_name(reduce_op), reduce_res, reverse0)


def tensor_copy_predicated(dst, src, predicate, reverse_pred=False, name=None, **_):
    """``dst = predicate ? src : dst`` (``reverse_pred``: where the predicate is 0)."""
    o.emit_select(dst, predicate, dst, src) if reverse_pred else o.emit_select(dst, predicate, src, dst)


def range_select(dst, on_true_tile, comp_op0, comp_op1, bound0, bound1, reduce_cmd=None,
                 reduce_res=None, reduce_op=None, range_start=0, on_false_value=None, name=None, **_):
    o.emit_range_select(dst, on_true_tile, bound0, bound1, comp_op0, comp_op1, range_start,
                        on_false_value, reduce_cmd if reduce_cmd is not None else "reset_reduce",
                        reduce_res, reduce_op)


def select_reduce(dst, predicate, on_true, on_false, reduce_res=None, reduce_cmd=None,
                  reduce_op=None, reverse_pred=False, name=None, **_):
    o.emit_select_reduce(dst, predicate, on_true, on_false, reverse_pred, reduce_cmd, reduce_res,
                         reduce_op)


def local_gather(dst, src_buffer, index, num_elem_per_idx=1, num_valid_indices=None, name=None, **_):
    o.local_gather(dst, src_buffer, index, num_elem_per_idx, num_valid_indices)


def tensor_partition_reduce(dst, op, data, name=None, **_):
    o.partition_reduce(dst, data, reduce_name(op))


def tensor_scalar_cumulative(dst, src, op0, op1, imm0, imm1=None, reduce_cmd=None, name=None, **_):
    o.emit_cumulative(dst, src, op0, imm0, op1, imm1, reduce_cmd, False)


def exponential(dst, src, max_value=0.0, reduce_res=None, reduce_cmd=None, reduce_init=0.0,
                name=None, **_):
    o.emit_exponential(dst, src, max_value, reduce_res, reduce_cmd, reduce_init)


def nc_stream_shuffle(dst, src, shuffle_mask, name=None, **_):
    o.emit_stream_shuffle(dst, src, shuffle_mask)


def nc_match_replace8(dst, data, vals, imm, dst_idx=None, name=None, **_):
    o.emit_match_replace8(dst, data, vals, imm, dst_idx)


def sequence_bounds(dst, segment_ids, name=None, **_):
    o.sequence_bounds(dst, segment_ids)


def dropout(dst, data, prob, name=None, **_):
    o.dropout(dst, data, prob)


def max8(dst, src, name=None, **_):
    o.emit_simple("max8", dst, src=src)


def nc_find_index8(dst, data, vals, name=None, **_):
    o.emit_simple("nc_find_index8", dst, data=data, vals=vals)


def dma_transpose(dst, src, axes=None, name=None, **_):
    o.dma_transpose(dst, src, axes)


for _name in ("tensor_copy_predicated", "nc_matmul_mx", "dma_transpose",
              "tensor_partition_reduce", "tensor_scalar_cumulative", "activate2", "local_gather",
              "nc_n_gather", "nc_stream_shuffle",
              "rng", "dropout", "set_rng_seed", "rand_set_state", "rand_get_state", "rand2",
              "exponential", "max8", "sequence_bounds", "core_barrier", "dma_compute", "quantize_mx",
              "range_select", "select_reduce", "sendrecv", "register_alloc", "register_move",
              "register_load", "register_store", "nc_find_index8", "nc_match_replace8",
              "nonzero_with_count", "topk"):
    if _name not in globals():
        globals()[_name] = missing(_name)
