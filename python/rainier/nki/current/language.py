"""``nki.language`` (current dialect), backed by Rainier."""

from .._language import *  # noqa: F401,F403
from .._language import max, min, sum  # noqa: F401 - shadow the builtins on purpose
