"""Run NKI kernels on Rainier's simulated NeuronCore.

``rainier.nki.run(kernel, *arrays, chip="trn2")`` runs a kernel of either dialect and returns
its outputs, simulated device time, per-engine utilisation and a Perfetto trace.
``rainier.nki.install()`` makes ``neuronxcc.nki`` (legacy) and ``nki`` (current) importable, so
unmodified kernel files and their test scripts run on Rainier.
"""

from __future__ import annotations

import sys
import types

from ._core import NkiError, NotSupportedError  # noqa: F401
from ._runner import (  # noqa: F401
    CHIPS, Kernel, RunResult, TensorType, benchmark, chip_of, jit, simulate, simulate_kernel,
)
from ._runner import run as _run
from ._runner import DEFAULT_CHIP

__all__ = ["run", "install", "uninstall", "RunResult", "NkiError", "NotSupportedError", "jit"]

_INSTALLED: dict = {}


def run(kernel, *args, chip=None, grid=None, values=None, trace=True, **kwargs) -> RunResult:
    """Runs ``kernel`` (an ``@nki.jit`` kernel or a plain function of either dialect) on the
    simulated NeuronCore of ``chip`` (``trn1``, ``inf2``, ``trn2``, ``trn3``; default: the
    ``NEURON_PLATFORM_TARGET_OVERRIDE`` environment variable, else ``trn2``).

    Returns a :class:`RunResult` with ``outputs`` (NumPy arrays, in the kernel's return
    structure), ``time_ns``, ``engines``, ``instructions`` and ``write_trace(path)``."""
    return _run(kernel, *args, chip=chip, grid=grid, values=values, trace=trace, **kwargs)


def install(chip: str | None = None):
    """Provides ``neuronxcc.nki`` (``.language``, ``.isa``, ``.typing``, ``.compiler``) and
    ``nki`` (``.language``, ``.isa``) as modules backed by Rainier. ``chip`` sets the default
    chip for kernels run through them."""
    from . import current, legacy
    from .current import isa as cur_isa
    from .current import language as cur_lang
    from .legacy import compiler as leg_compiler
    from .legacy import isa as leg_isa
    from .legacy import language as leg_lang
    from .legacy import typing as leg_typing
    from . import collectives
    from . import _isa_common

    if chip is not None:
        DEFAULT_CHIP[0] = chip_of(chip)
    neuronxcc = sys.modules.get("neuronxcc")
    if neuronxcc is None or getattr(neuronxcc, "__rainier__", False) is False:
        neuronxcc = types.ModuleType("neuronxcc")
        neuronxcc.__rainier__ = True
        neuronxcc.__path__ = []
    mods = {
        "neuronxcc": neuronxcc,
        "neuronxcc.nki": legacy,
        "neuronxcc.nki.language": leg_lang,
        "neuronxcc.nki.isa": leg_isa,
        "neuronxcc.nki.typing": leg_typing,
        "neuronxcc.nki.compiler": leg_compiler,
        "nki": current,
        "nki.language": cur_lang,
        "nki.isa": cur_isa,
        "nki.collectives": collectives,
        "nki.typing": leg_typing,
        "neuronxcc.nki.isa.constants": _isa_common,
        "neuronxcc.nki.language.constants": _isa_common,
    }
    neuronxcc.nki = legacy
    for name, mod in mods.items():
        if name not in _INSTALLED:
            _INSTALLED[name] = sys.modules.get(name)
        sys.modules[name] = mod


def uninstall():
    """Undoes :func:`install`."""
    for name, prev in _INSTALLED.items():
        if prev is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = prev
    _INSTALLED.clear()
    DEFAULT_CHIP[0] = "trn2"
