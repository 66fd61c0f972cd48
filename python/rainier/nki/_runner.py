"""Launching a kernel: trace its Python body, simulate it in Rust, hand back NumPy outputs,
device time, per-engine utilisation and a trace."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re

import numpy as np

from . import _core as c

#: The chip used when neither ``chip=`` nor ``NEURON_PLATFORM_TARGET_OVERRIDE`` says one.
DEFAULT_CHIP = ["trn2"]
CHIPS = ("trn1", "inf2", "trn2", "trn3")
DIALECT_MODULES: dict = {}


def chip_of(chip=None) -> str:
    """The chip a run uses: ``chip``, else ``NEURON_PLATFORM_TARGET_OVERRIDE``, else the default
    set by :func:`rainier.nki.install` (``trn2``)."""
    name = chip or os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE") or DEFAULT_CHIP[0]
    name = str(name).lower()
    if name not in CHIPS:
        raise ValueError(f"unknown chip '{name}' (known: {', '.join(CHIPS)})")
    return name


class TensorType:
    """A kernel argument with a shape and dtype but no values (``nt.tensor[[M, N], dtype]``)."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype if dtype is not None else np.float32

    def __repr__(self):
        return f"tensor[{list(self.shape)}, {self.dtype}]"


class EngineStats(dict):
    """One engine's figures: ``busy_ns``, ``utilization``, ``instructions``, ``semaphore_stall_ns``."""

    __getattr__ = dict.__getitem__


class RunResult:
    """A simulated kernel run.

    - ``outputs``: NumPy arrays in the kernel's return structure (None for time-only runs)
    - ``time_ns``: simulated time of the kernel's instructions, first to last
    - ``device_latency_ns``: ``time_ns`` plus the launch overhead a measured device latency
      (``nki.benchmark``'s NCLatency) includes (``launch_overhead_ns``, see docs/timing.md)
    - ``engines``: per engine (tensor, vector, scalar, gpsimd): busy ns, utilisation, instructions;
      ``engines["dma"]``: transfers, bytes, busy ns, utilisation and average bandwidth
    - ``instructions``: NeuronCore instructions executed
    - ``write_trace(path)``: Chrome/Perfetto JSON; slices are named ``opcode file:line``
    """

    def __init__(self, native, outputs, summary, kernel):
        self._native = native
        self.outputs = outputs
        self.summary = summary
        self.kernel = kernel
        self.chip = summary["chip"]
        self.time_ns = summary["time_ns"]
        self.launch_overhead_ns = summary["launch_overhead_ns"]
        self.device_latency_ns = self.time_ns + self.launch_overhead_ns
        self.instructions = summary["instructions"]
        self.engines = {e["engine"]: EngineStats(e) for e in summary["engines"]}
        self.engines["dma"] = EngineStats(summary["dma"])

    @property
    def time_us(self):
        return self.time_ns / 1000.0

    def write_trace(self, path):
        """Writes the Chrome/Perfetto trace (open it at https://ui.perfetto.dev)."""
        with open(path, "w") as f:
            f.write(self._native.trace_json())

    def program_text(self) -> str:
        """The lowered NeuronCore program in Rainier's assembly."""
        return self._native.program_text()

    def __repr__(self):
        util = ", ".join(f"{k} {v['utilization']:.0%}" for k, v in self.engines.items())
        return f"<RunResult {self.kernel} on {self.chip}: {self.time_ns / 1000:.2f} us ({util})>"


def _is_array(x):
    return isinstance(x, np.ndarray) or isinstance(x, TensorType)


def _bind(fn, args, kwargs):
    try:
        sig = inspect.signature(fn)
        bound = sig.bind(*args, **kwargs)
        return list(bound.arguments.items())
    except (TypeError, ValueError):
        named = [(f"arg{i}", a) for i, a in enumerate(args)]
        return named + list(kwargs.items())


def _collect_outputs(ret, out_views):
    """Marks returned HBM tensors as outputs; returns a builder of the return structure."""
    if isinstance(ret, c.View):
        t = ret.tensor
        if t.on_chip:
            # An on-chip tile returned (as the simulator allows): stored to a new HBM output.
            from . import _ops

            if c.tracer().grid:
                c.fail("an SPMD kernel must return HBM tensors (each instance would return its own tile)")
            out = c.hbm_tensor(ret.shape, ret.dtype, "output", t.name)
            _ops.store(out, ret)
            ret, t = out, out.tensor
        if t.kind == "input":
            c.fail(f"a kernel returned its input '{t.name}'; return a tensor it created")
        t.kind = "output"
        t.spec["buffer"] = "output"
        out_views.append(ret)
        return ("t", t.name, ret)
    if isinstance(ret, (tuple, list)):
        return (type(ret), [_collect_outputs(r, out_views) for r in ret])
    if isinstance(ret, dict):
        return ("d", {k: _collect_outputs(v, out_views) for k, v in ret.items()})
    if ret is None:
        return ("n",)
    return ("v", ret)


def _build(struct, arrays):
    tag = struct[0]
    if tag == "t":
        _, name, view = struct
        a = arrays.get(name) if arrays is not None else None
        if a is not None and view.shape != view.tensor.shape:
            a = a.reshape(view.shape)
        return a
    if tag == "d":
        return {k: _build(v, arrays) for k, v in struct[1].items()}
    if tag == "n":
        return None
    if tag == "v":
        return struct[1]
    return struct[0](_build(s, arrays) for s in struct[1])


def core_of(grid, pid) -> int:
    """The NeuronCore an SPMD instance runs on (0 unless a grid dimension is an nl.nc one)."""
    for size, i in zip(grid, pid):
        cores = getattr(size, "cores", None)
        if cores:
            return (int(i) // size.stride) % cores
    return 0


def core_count(grid) -> int:
    return max([getattr(g, "cores", 1) for g in grid] or [1])


def trace_kernel(fn, args, kwargs, chip, grid=(), core=0):
    """Runs the kernel's Python body under a tracer for the SPMD instances of NeuronCore
    ``core``; returns (tracer, inputs, structure)."""
    name = getattr(fn, "__name__", "kernel")
    t = c.Tracer(chip, name)
    t.kernel_code = getattr(fn, "__code__", None)
    prev = c._state.tracer
    c._state.tracer = t
    try:
        params = _bind(fn, args, kwargs)
        inputs = []
        new_args = {}
        for pname, value in params:
            if _is_array(value):
                if isinstance(value, np.ndarray) and value.ndim == 0:
                    c.fail(f"argument '{pname}' is a 0-d array; pass a Python number")
                arr = value
                v = c.hbm_tensor(arr.shape, arr.dtype, "input", pname)
                if t.kernel_code is not None:
                    # An argument is declared where the kernel is defined.
                    v.tensor.spec["src"] = t.source_of(t.kernel_code)
                inputs.append((v.tensor.name, arr))
                new_args[pname] = v
            else:
                new_args[pname] = value
        t.grid = tuple(int(g) for g in grid) if grid else ()
        ids = [pid for pid in (np.ndindex(*t.grid) if grid else [()]) if core_of(grid, pid) == core]
        struct = None
        sig_ok = True
        try:
            inspect.signature(fn).bind(**new_args)
        except (TypeError, ValueError):
            sig_ok = False
        for pid in ids:
            t.program_ids = tuple(int(i) for i in pid)
            t.shared_cursor = 0
            if sig_ok:
                ret = fn(**new_args)
            else:
                ret = fn(*new_args.values())
            if struct is None:
                out_views = []
                struct = _collect_outputs(ret, out_views)
        return t, inputs + t.constant_inputs, struct
    finally:
        c._state.tracer = prev


def run(kernel, *args, chip=None, grid=None, values=None, trace=True, **kwargs) -> RunResult:
    """Runs an NKI kernel (either dialect) on the simulated NeuronCore of ``chip``.

    ``args`` are NumPy arrays (or ``nt.tensor[...]`` types for a time-only run) and any Python
    values the kernel takes; ``grid`` is an SPMD launch grid (``kernel[g]`` does the same).
    With ``values=False`` (implied when any argument has no values) only time is simulated.
    """
    fn = getattr(kernel, "func", kernel)
    grid = grid if grid is not None else getattr(kernel, "grid", ())
    if isinstance(grid, int):
        grid = (grid,)
    chip = chip_of(chip or getattr(kernel, "options", {}).get("platform_target"))
    natives, summaries = [], []
    arrays = None
    # One program per NeuronCore of an LNC grid; each later core starts from the HBM outputs
    # of the earlier ones (their SPMD instances write disjoint parts of the shared tensors).
    struct = None
    user_inputs = None
    for core in range(core_count(grid)):
        t, inputs, core_struct = trace_kernel(fn, args, kwargs, chip, grid, core)
        if core_struct is None:
            continue  # no instance of the grid on this core
        struct = struct or core_struct
        has_values = all(isinstance(a, np.ndarray) for _, a in inputs)
        if values is None:
            values = has_values
        if values and not has_values:
            raise ValueError("values=True needs NumPy arrays for every tensor argument")
        if user_inputs is None:
            user_inputs = dict(inputs)
        if core > 0 and values:
            # Arguments earlier cores stored into start from what those cores wrote.
            inputs = [(n, arrays[n] if n in arrays else a) for n, a in inputs]
            for spec in t.tensors:
                if spec["buffer"] == "output" and spec["name"] in arrays:
                    spec["buffer"], spec["written"] = "input", True
                    inputs.append((spec["name"], arrays[spec["name"]]))
        native = _launch(t, chip, inputs, values, trace)
        natives.append(native)
        summaries.append(json.loads(native.summary_json()))
        if values:
            arrays = dict(arrays or {})
            for name, dt, shape, data in native.outputs():
                npdt = c.np_dtype(c._BY_NAME[dt])
                arrays[name] = np.frombuffer(data, dtype=npdt).reshape(shape).copy()
    slowest = max(range(len(summaries)), key=lambda k: summaries[k]["time_ns"])
    summary = dict(summaries[slowest])
    if len(summaries) > 1:
        summary["cores"] = [{"core": k, "time_ns": s["time_ns"]} for k, s in enumerate(summaries)]
    native = natives[0] if len(natives) == 1 else _MultiCore(natives)
    outputs = _build(struct, arrays) if values else None
    if values:
        # Inputs the kernel stored into (legacy output arguments) are updated in place.
        for spec in t.tensors:
            if spec.get("written") and spec["name"] in arrays and spec["name"] in user_inputs:
                arr = user_inputs[spec["name"]]
                if isinstance(arr, np.ndarray) and arr.flags.writeable:
                    np.copyto(arr, arrays[spec["name"]].view(arr.dtype).reshape(arr.shape))
    return RunResult(native, outputs, summary, t.name)


def _launch(t, chip, inputs, values, trace):
    from .. import _native

    native_inputs = []
    if values:
        specs = {s["name"]: s for s in t.tensors}
        for name, arr in inputs:
            dt, shape = c.dtype_name(arr.dtype), list(arr.shape)
            spec = specs.get(name)
            if spec is not None and spec.get("retyped"):
                dt, shape = spec["dtype"], spec["shape"]  # the same bytes as the kernel sees them
            native_inputs.append((name, dt, shape, np.ascontiguousarray(arr).tobytes()))
    try:
        return _native.run_trace(t.to_json(), chip, native_inputs, values, trace)
    except RuntimeError as e:
        msg = str(e)
        m = re.search(r"index -?\d+ is out of bounds for axis 0 with size \d+", msg)
        if m:
            # A data-dependent index out of range: NumPy's (and NKI's simulator's) IndexError.
            err = IndexError(m.group(0))
            err.add_note(msg)
            raise err from None
        raise c.NkiError(msg) from None


class _MultiCore:
    """The runs of an LNC launch's NeuronCores, as one trace (a process per core)."""

    def __init__(self, natives):
        self.natives = natives

    def trace_json(self):
        events = []
        for k, n in enumerate(self.natives):
            for e in json.loads(n.trace_json())["traceEvents"]:
                e["pid"] = k + 1
                if e.get("name") == "process_name":
                    e["args"]["name"] = e["args"]["name"].replace("NeuronCore 0", f"NeuronCore {k}")
                events.append(e)
        return json.dumps({"traceEvents": events, "displayTimeUnit": "ns"})

    def program_text(self):
        return "\n".join(f"# NeuronCore {k}\n{n.program_text()}" for k, n in enumerate(self.natives))


class Kernel:
    """What ``@nki.jit`` makes: calling it with NumPy arrays runs the kernel on Rainier and
    returns its outputs; ``kernel[grid]`` launches an SPMD grid."""

    def __init__(self, func, grid=(), mode=None, **options):
        self.func = func
        self.grid = grid
        self.mode = mode
        self.options = options
        self.last_result: RunResult | None = None
        functools.update_wrapper(self, func)

    def __getitem__(self, grid):
        g = grid if isinstance(grid, tuple) else (grid,)
        return Kernel(self.func, tuple(x if hasattr(x, "cores") else int(x) for x in g),
                      self.mode, **self.options)

    def __call__(self, *args, **kwargs):
        if c._state.tracer is not None:
            # A kernel called from inside another kernel is inlined.
            return self.func(*args, **kwargs)
        res = run(self, *args, **kwargs)
        self.last_result = res
        return res.outputs


def jit(func=None, mode=None, **options):
    """``@nki.jit`` / ``@nki.jit(mode="simulation")``: NumPy arguments run on Rainier."""
    if func is None:
        return lambda f: Kernel(f, mode=mode, **options)
    return Kernel(func, mode=mode, **options)


def trace(func=None, **options):
    return jit(func, **options)


baremetal = jit


def simulate_kernel(kernel, *args, **kwargs):
    """Legacy ``nki.simulate_kernel(kernel, *arrays)``: the kernel's outputs."""
    return run(kernel, *args, **kwargs).outputs


def simulate(kernel):
    """Current ``nki.simulate(kernel)(*arrays)``: the kernel's outputs."""
    if isinstance(kernel, Kernel):
        k = kernel
    else:
        k = Kernel(kernel)

    def call(*args, **kwargs):
        return k(*args, **kwargs)

    return call


class _Latency:
    def __init__(self, us):
        self._us = us

    def get_latency_percentile(self, p):
        """Simulated device time in microseconds; the model is deterministic, so every
        percentile is the same."""
        return self._us


class BenchmarkResult:
    def __init__(self, res: RunResult):
        self.result = res
        self.nc_latency = _Latency(res.device_latency_ns / 1000.0)


class _Benchmark(Kernel):
    def __call__(self, *args, **kwargs):
        res = run(self, *args, **kwargs)
        self.last_result = res
        self.benchmark_result = BenchmarkResult(res)
        return res.outputs


def benchmark(func=None, warmup=None, iters=None, save_neff_name=None, save_trace_name=None,
              **options):
    """``nki.benchmark(warmup=, iters=)(kernel)``: runs once on the deterministic model;
    ``.benchmark_result.nc_latency.get_latency_percentile(p)`` is the device latency in µs
    (the instructions' time plus the launch overhead, as NCLatency counts it)."""

    def wrap(f):
        fn = getattr(f, "func", f)
        b = _Benchmark(fn, getattr(f, "grid", ()))
        return b

    if func is None:
        return wrap
    return wrap(func)
