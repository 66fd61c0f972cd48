"""Rainier: an executable model of AWS Trainium. ``rainier.nki`` runs NKI kernels on the
simulated NeuronCore."""

from . import nki  # noqa: F401
from ._native import __version__  # noqa: F401
