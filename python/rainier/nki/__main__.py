"""``python -m rainier.nki FILE.py::FUNCTION``: run an NKI kernel file on the simulated
NeuronCore without writing Python around it.

Examples::

    python -m rainier.nki mm.py::nki_matmul_tiled_ --chip trn1 \\
        --random lhsT=1024x512:bfloat16 --random rhs=1024x2048:bfloat16 --trace mm.json
    python -m rainier.nki add.py::nki_tensor_add --input a_input=a.npy --input b_input=b.npy \\
        --save out --json
    python -m rainier.nki mm.py::nki_matmul_fully_optimized_ --chip trn1 --time-only \\
        --random lhsT=8192x4096:bfloat16 --random rhs=8192x8192:bfloat16
    python -m rainier.nki validate      # the timing model against published hardware times

Tensor arguments come from ``.npy`` files (``--input``) or are drawn at random
(``--random NAME=SHAPE:DTYPE``, uniform in [-1, 1), seed printed); other arguments are Python
literals (``--arg pool_size=2``). ``--grid 2,2`` launches an SPMD grid. The report gives the
simulated device time, each engine's busy time and utilisation, and DMA traffic.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
import traceback

import numpy as np


def _parse_pairs(items, what):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: {what} '{item}' is not NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _dtype(name):
    from . import _language as nl

    table = {"float32": np.float32, "f32": np.float32, "float16": np.float16, "f16": np.float16,
             "bfloat16": nl.bfloat16, "bf16": nl.bfloat16, "int32": np.int32, "uint8": np.uint8,
             "int8": np.int8, "float8_e4m3": nl.float8_e4m3, "float8_e5m2": nl.float8_e5m2}
    if name not in table:
        raise SystemExit(f"error: unknown dtype '{name}' (known: {', '.join(sorted(table))})")
    return table[name]


def _random_spec(spec):
    """``8192x4096:bfloat16`` -> (shape, dtype)."""
    shape_s, _, dt = spec.partition(":")
    try:
        shape = tuple(int(s) for s in shape_s.lower().replace(",", "x").split("x"))
    except ValueError:
        raise SystemExit(f"error: bad shape '{shape_s}' (write e.g. 128x512 or 128,512)") from None
    return shape, _dtype(dt or "float32")


def _load_kernel(target):
    if "::" not in target:
        raise SystemExit("error: name the kernel as FILE.py::FUNCTION")
    path, func = target.rsplit("::", 1)
    if not os.path.isfile(path):
        raise SystemExit(f"error: no such kernel file: {path}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location("rainier_cli_kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, func):
        names = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
        raise SystemExit(f"error: {path} has no function '{func}' (it has: {', '.join(names)})")
    return getattr(mod, func)


def _describe(e: BaseException, target: str) -> str:
    """One line for an exception: where in the kernel file it happened, what it was."""
    from . import NkiError

    if isinstance(e, NkiError):
        return str(e).splitlines()[0] if "\n" not in str(e) else " ".join(str(e).split())
    path = os.path.abspath(target.rsplit("::", 1)[0])
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == path]
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}: SyntaxError: {e.msg}"
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(e).__name__}: {e}"


def _report(res) -> str:
    lines = [f"{res.kernel} on {res.chip}: {res.time_ns / 1000:.3f} us device time, "
             f"{res.instructions} instructions"]
    lines.append(f"  {'engine':<8} {'busy us':>10} {'util':>6} {'instr':>8}")
    for name, e in res.engines.items():
        if name == "dma":
            continue
        lines.append(f"  {name:<8} {e['busy_ns'] / 1000:>10.3f} {e['utilization']:>6.1%} "
                     f"{e['instructions']:>8}")
    d = res.engines["dma"]
    lines.append(f"  dma      {d['busy_ns'] / 1000:>10.3f} {d['utilization']:>6.1%} "
                 f"{d['transfers']:>8} transfers, {d['bytes'] / 1e6:.3f} MB, "
                 f"{d['bandwidth_gb_per_s']:.1f} GB/s")
    return "\n".join(lines)


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["validate"]:
        from .validate import main as validate_main

        return validate_main(args[1:])
    p = argparse.ArgumentParser(
        prog="python -m rainier.nki", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kernel", help="FILE.py::FUNCTION, a kernel of either NKI dialect")
    p.add_argument("--chip", choices=["trn1", "inf2", "trn2", "trn3"],
                   help="simulated chip (default: $NEURON_PLATFORM_TARGET_OVERRIDE, else trn2)")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="a tensor argument from .npy")
    p.add_argument("--random", action="append", metavar="NAME=SHAPE:DTYPE",
                   help="a random tensor argument, e.g. lhsT=1024x512:bfloat16")
    p.add_argument("--arg", action="append", metavar="NAME=LITERAL", help="a Python-literal argument")
    p.add_argument("--grid", help="SPMD launch grid, e.g. 2,2")
    p.add_argument("--seed", type=int, help="seed of --random (default: fresh, printed)")
    p.add_argument("--time-only", action="store_true", help="simulate time only (no values)")
    p.add_argument("--save", metavar="PREFIX", help="write each output to PREFIX_<i>.npy")
    p.add_argument("--trace", metavar="FILE.json", help="write a Chrome/Perfetto trace")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(args)

    from . import install, run
    from ._runner import TensorType

    if a.time_only and a.save:
        print("error: --save needs values; drop --time-only", file=sys.stderr)
        return 2
    install()
    try:
        kernel = _load_kernel(a.kernel)
        kwargs = {}
        for name, path in _parse_pairs(a.input, "--input").items():
            try:
                kwargs[name] = np.load(path)
            except OSError as e:
                raise SystemExit(f"error: --input {name}: {e}") from None
        randoms = _parse_pairs(a.random, "--random")
        if randoms:
            seed = a.seed if a.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
            print(f"random inputs: seed {seed}", file=sys.stderr)
            rng = np.random.default_rng(seed)
            for name, spec in randoms.items():
                shape, dt = _random_spec(spec)
                if a.time_only:
                    kwargs[name] = TensorType(shape, dt)
                elif np.issubdtype(np.dtype(dt), np.integer):
                    lo = 0 if np.issubdtype(np.dtype(dt), np.unsignedinteger) else -100
                    kwargs[name] = rng.integers(lo, 100, shape).astype(dt)
                else:
                    kwargs[name] = rng.uniform(-1, 1, shape).astype(dt)
        for name, lit in _parse_pairs(a.arg, "--arg").items():
            try:
                kwargs[name] = ast.literal_eval(lit)
            except (ValueError, SyntaxError):
                raise SystemExit(f"error: --arg {name}={lit} is not a Python literal") from None
        grid = None
        if a.grid:
            try:
                grid = tuple(int(g) for g in a.grid.split(","))
            except ValueError:
                raise SystemExit(f"error: --grid {a.grid} is not a list of integers (e.g. 2,2)") from None
            if any(g <= 0 for g in grid):
                raise SystemExit(f"error: --grid {a.grid}: every dimension must be positive")
        res = run(kernel, chip=a.chip, grid=grid, values=False if a.time_only else None, **kwargs)
        if a.trace:
            res.write_trace(a.trace)
        if a.save and res.outputs is not None:
            outs = res.outputs
            if isinstance(outs, dict):
                outs = list(outs.values())
            elif not isinstance(outs, (tuple, list)):
                outs = [outs]
            for i, o in enumerate(outs):
                np.save(f"{a.save}_{i}.npy", o)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - one line for anything the kernel or a file raised
        print(f"error: {_describe(e, a.kernel)}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(res.summary, indent=2, sort_keys=True))
    else:
        print(_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
