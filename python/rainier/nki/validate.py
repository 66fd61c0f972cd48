"""``python -m rainier.nki validate``: the timing model against published hardware latencies.

Runs each point of ``../shared/nki/timings.json`` (a kernel of ``../shared/nki/kernels`` at
its published shapes, time only) on the simulated chip and prints the predicted and the
measured device time and the error, with the median and the largest |error|. A kernel that
does not fit is reported as such (not counted in the statistics).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys

from . import _language as nl

_DTYPES = {"float32": nl.float32, "bfloat16": nl.bfloat16, "float16": nl.float16}


def _default_shared() -> pathlib.Path:
    """``$RAINIER_SHARED``, else ``shared/`` beside the repository (a source checkout), else
    ``../shared`` from the working directory."""
    if "RAINIER_SHARED" in os.environ:
        return pathlib.Path(os.environ["RAINIER_SHARED"])
    beside_repo = pathlib.Path(__file__).resolve().parents[4] / "shared"
    return beside_repo if beside_repo.is_dir() else pathlib.Path.cwd().parent / "shared"


def _arguments(inputs: dict):
    """Kernel arguments for a point: tensor types (time only), scalars as they are, and the
    Mamba shapes (batch, seq_len, channels, state_size) as its five tensors."""
    from ._runner import TensorType

    if "seq_len" in inputs:
        b, s, c, n = inputs["batch"], inputs["seq_len"], inputs["channels"], inputs["state_size"]
        dt = _DTYPES[inputs.get("dtype", "float32")]
        shapes = [(b, c, s), (b, c, s), (c, n), (b, n, s), (b, n, s)]
        return [TensorType(sh, dt) for sh in shapes], {}
    kwargs = {}
    for name, v in inputs.items():
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], list):
            kwargs[name] = TensorType(tuple(v[0]), _DTYPES[v[1]])
        else:
            kwargs[name] = v
    return [], kwargs


def run_point(point: dict, nki_dir: pathlib.Path) -> dict:
    """One point: ``{"id", "measured_us", "predicted_us" | "error"}``."""
    from . import NkiError, run
    from ._runner import trace_kernel  # noqa: F401 - the package must be importable
    import importlib.util

    path = nki_dir / point["kernel"]
    spec = importlib.util.spec_from_file_location(f"rainier_validate_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    args, kwargs = _arguments(point["inputs"])
    out = {"id": point["id"], "chip": point["chip"], "measured_us": point["value"],
           "metric": point["metric"], "grade": point.get("grade", "")}
    try:
        res = run(getattr(mod, point["function"]), *args, chip=point["chip"], values=False, **kwargs)
    except NkiError as e:
        out["error"] = " ".join(str(e).split())
        return out
    out["predicted_us"] = res.time_ns / 1000.0
    out["error_percent"] = (out["predicted_us"] / point["value"] - 1.0) * 100.0
    out["instructions"] = res.instructions
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rainier.nki validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=pathlib.Path, default=_default_shared(),
                   help="the shared folder holding nki/timings.json (default: ../shared)")
    p.add_argument("--only", action="append", metavar="ID", help="run only these point ids")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    a = p.parse_args(argv)

    from . import install

    nki_dir = a.shared / "nki"
    try:
        points = json.loads((nki_dir / "timings.json").read_text())["points"]
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read {nki_dir / 'timings.json'}: {e}", file=sys.stderr)
        return 1
    if a.only:
        unknown = set(a.only) - {pt["id"] for pt in points}
        if unknown:
            print(f"error: no point {', '.join(sorted(unknown))} in timings.json", file=sys.stderr)
            return 1
        points = [pt for pt in points if pt["id"] in a.only]
    install()
    results = [run_point(pt, nki_dir) for pt in points]
    errors = [abs(r["error_percent"]) for r in results if "error_percent" in r]
    summary = {"points": results,
               "median_abs_error_percent": statistics.median(errors) if errors else None,
               "max_abs_error_percent": max(errors) if errors else None}
    if a.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    print(f"{'point':<34} {'chip':<5} {'predicted us':>13} {'measured us':>12} {'error':>8}")
    for r in results:
        if "predicted_us" in r:
            print(f"{r['id']:<34} {r['chip']:<5} {r['predicted_us']:>13.1f} {r['measured_us']:>12.1f} "
                  f"{r['error_percent']:>+7.1f}%")
        else:
            print(f"{r['id']:<34} {r['chip']:<5} {'does not run':>13} {r['measured_us']:>12.1f}   ({r['error'][:90]})")
    if errors:
        print(f"median |error| {summary['median_abs_error_percent']:.1f}%, "
              f"max {summary['max_abs_error_percent']:.1f}% over {len(errors)} points")
    return 0
