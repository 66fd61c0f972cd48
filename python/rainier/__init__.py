"""Rainier: an executable model of AWS Trainium. ``rainier.nki`` runs NKI kernels on the
simulated NeuronCore; ``rainier.plan`` runs the training and serving planners."""

from . import nki, plan  # noqa: F401
from ._native import __version__  # noqa: F401
