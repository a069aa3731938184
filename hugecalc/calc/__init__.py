"""Pure calculations, one module per domain.  No click, rich or YAML here; nothing from the host."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Callable

#: Called with a message when a numba kernel's first call in this process is still compiling
#: after a second (see ``_jit.call``).  The CLI points it at stderr; None keeps the library silent.
#: Kept here, not in ``_jit``, so that setting it does not import numba.
on_slow_compile: Callable[[str], None] | None = None

#: Whether the derivations of a result are wanted (``--explain``): the command line and each batch
#: request set it; building their text is most of a small computation's cost when nobody reads it.
EXPLAINING: ContextVar[bool] = ContextVar("explaining", default=True)


def explaining() -> bool:
    return EXPLAINING.get()
