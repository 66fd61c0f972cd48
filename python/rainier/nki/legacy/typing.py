"""``neuronxcc.nki.typing``: ``nt.tensor[[shape], dtype]`` placeholders (time-only runs)."""

from .._runner import TensorType


class _TensorFactory:
    """``tensor[shape, dtype]`` or ``tensor[[d0, d1], dtype]``: a type with no values; a kernel
    called with it runs for time only (as ``nki.benchmark`` does)."""

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return TensorType(tuple(key) if isinstance(key, (list, tuple)) else (key,), None)
        if len(key) == 2 and isinstance(key[0], (list, tuple)):
            return TensorType(tuple(key[0]), key[1])
        dims = [k for k in key if isinstance(k, int)]
        dt = [k for k in key if not isinstance(k, int)]
        return TensorType(tuple(dims), dt[0] if dt else None)


tensor = _TensorFactory()
scalar = float
