"""The legacy dialect (``import neuronxcc.nki``, Neuron 2.20–2.26), backed by Rainier."""

from .. import _runner
from .._runner import baremetal, benchmark, jit, simulate_kernel, trace  # noqa: F401
from . import compiler, isa, language, typing  # noqa: F401

_runner.DIALECT_MODULES["legacy"] = True
