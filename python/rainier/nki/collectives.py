"""``nki.collectives``: collectives between NeuronCores are not simulated by the one-core model."""

from ._core import unsupported


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def f(*args, **kwargs):
        unsupported(f"nki.collectives.{name}")

    return f
