"""Shared fixtures: the NKI material in ../shared/nki, the installed NKI modules, seeded RNGs."""

import os
import pathlib
import sys

import numpy as np
import pytest

import rainier.nki as rn

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("RAINIER_SHARED", REPO.parent / "shared"))
NKI = SHARED / "nki"


def need_shared():
    if not NKI.is_dir():
        pytest.skip(f"the NKI material is not at {NKI} (set RAINIER_SHARED)")
    return NKI


@pytest.fixture(autouse=True)
def _nki_modules(monkeypatch):
    """Every test sees `neuronxcc.nki` and `nki` backed by Rainier, default chip trn2."""
    monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    rn.install(chip="trn2")
    yield
    rn.uninstall()


@pytest.fixture
def rng(request):
    """A fresh generator per test; its seed is printed (rerun with RAINIER_SEED=...)."""
    seed = int(os.environ.get("RAINIER_SEED", np.random.SeedSequence().entropy % (2**32)))
    print(f"{request.node.name}: seed {seed}")
    return np.random.default_rng(seed)


def load_module(path, name=None, stubs=(), stub_attrs=None):
    """Imports a kernel file by path (with stand-ins for modules it imports but does not need
    here, e.g. torch_xla; ``stub_attrs`` gives them attributes)."""
    import importlib.util
    import types

    for s in stubs:
        parts = s.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for mod, attrs in (stub_attrs or {}).items():
        for k, v in attrs.items():
            setattr(sys.modules[mod], k, v)
    name = name or f"k_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(pathlib.Path(path).parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    return mod


def close(got, want, dtype, what=""):
    """Per-dtype tolerance: relative to the largest |want|, a few roundoffs of `dtype`."""
    tol = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}[np.dtype(dtype).name]
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got - want).max() / scale
    assert err <= tol, f"{what}: max error {err:.3g} of the largest value exceeds {tol:g} ({dtype})"


def run_main(path, monkeypatch):
    """Runs a kernel file's own ``__main__`` (its NumPy check asserts)."""
    import runpy

    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setattr("sys.argv", [str(path)])
    runpy.run_path(str(path), run_name="__main__")
