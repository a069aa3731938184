"""Pure calculations, one module per domain.  No click, rich or YAML here; nothing from the host."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable

#: Called with a message when a numba kernel's first call in this process is still compiling
#: after a second (see ``_jit.call``).  The CLI points it at stderr; None keeps the library silent.
#: Kept here, not in ``_jit``, so that setting it does not import numba.
on_slow_compile: Callable[[str], None] | None = None

#: Whether the derivations of a result are wanted (``--explain``): the command line and each batch
#: request set it; building their text is most of a small computation's cost when nobody reads it.
EXPLAINING: ContextVar[bool] = ContextVar("explaining", default=True)


def explaining() -> bool:
    return EXPLAINING.get()


_BY_PROFILE: dict = {}


def per_profile(profile: object, key: object, make: Callable[[], Any], store: dict = _BY_PROFILE) -> Any:
    """``make()``, computed once per profile object and ``key`` (figures that depend on nothing else).
    Keyed by the object's identity and holding it, so its id is not reused while cached; the 4,096
    used last are kept (a fleet's hosts with their own switches do not push out the walks they share).
    A fleet reads many captures with equal profiles as one object (``fleet.engine``), so they share it.
    ``store``: a dict of the caller's, for results that rarely repeat and would push the others out."""
    k = (id(profile), key)
    hit = store.pop(k, None)
    if hit is None:
        if len(store) >= 4096:
            del store[next(iter(store))]  # the least recently used
        hit = (profile, make())
    store[k] = hit
    return hit[1]
