"""The one place numba options are set.

- ``cache=True``: compiled machine code is written next to the module (or to NUMBA_CACHE_DIR),
  so only the first run after an install compiles; later runs load it in milliseconds.
- ``nogil=True``: kernels hold no Python state.
- ``error_model="numpy"``: integer division by zero is not checked per operation (the callers
  validate every divisor first), which keeps the loops tight.

numba is imported here, lazily, by the calculations that walk large ranges; one-shot formulas
(vmemmap) never import it and never pay its start-up cost.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numba

from hugecalc import calc

COMPILE_NOTICE_SECONDS = 1.0


def jit(fn: Callable) -> Any:
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


def call(kernel: Any, *args: Any) -> Any:
    """Call a jitted kernel; if its first call compiles for more than a second, say so."""
    notify = calc.on_slow_compile
    # With NUMBA_DISABLE_JIT=1 a kernel is its plain Python function: nothing to compile.
    if notify is None or getattr(kernel, "signatures", True):
        return kernel(*args)
    timer = threading.Timer(
        COMPILE_NOTICE_SECONDS,
        notify,
        args=(f"compiling {kernel.__name__} (first run after install; cached for later runs)...",),
    )
    timer.daemon = True
    timer.start()
    try:
        return kernel(*args)
    finally:
        timer.cancel()
