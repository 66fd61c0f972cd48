"""The current dialect (``import nki``, NKI 0.6), backed by Rainier."""

from .._runner import baremetal, benchmark, jit, simulate  # noqa: F401
from . import isa, language  # noqa: F401
from .. import collectives  # noqa: F401
