"""The one place numba options are set.

- ``cache=True``: compiled machine code is written next to the module (or to NUMBA_CACHE_DIR),
  so only the first run after an install compiles; later runs load it in milliseconds.
- ``nogil=True``: kernels hold no Python state, so threads run them side by side (the chunks of
  ``blocksim.simulate``, the settings of ``advise``'s whole replays).
- ``error_model="numpy"``: integer division by zero is not checked per operation (the callers
  validate every divisor first), which keeps the loops tight.

numba is imported only when a kernel is made (``jit``, for the modules whose every call needs one:
the mthp fault walk) or first called (``lazy_jit``, for kernels a command may not need: listed
touch intervals): closed-form paths (vmemmap, hgm, the worst case, pgtable strides and fractions)
never pay its start-up.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from hugecalc import calc

COMPILE_NOTICE_SECONDS = 1.0


def cache_dir(package_dir: str | None = None) -> str | None:
    """Where numba's on-disk cache can go: next to the module (None: numba's default) when that is
    writable, else ``$NUMBA_CACHE_DIR``, ``$XDG_CACHE_HOME/hugecalc/numba`` (or ~/.cache), a per-user
    temporary directory; "" when nothing is writable (then nothing is cached)."""
    import os
    import tempfile

    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    if os.access(package_dir or os.path.dirname(os.path.abspath(__file__)), os.W_OK):
        return None
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for path in (os.path.join(xdg, "hugecalc", "numba"),
                 os.path.join(tempfile.gettempdir(), f"hugecalc-{os.geteuid()}", "numba")):
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return ""


def jit(fn: Callable, inline: bool = False) -> Any:
    import os

    where = cache_dir()
    if where:
        os.environ["NUMBA_CACHE_DIR"] = where  # read by numba when it first caches
    elif where == "" and calc.on_slow_compile is not None:
        calc.on_slow_compile("no writable place for numba's cache: compiling on every run")
    import numba

    return numba.njit(cache=where != "", nogil=True, error_model="numpy", inline="always" if inline else "never")(fn)


_COMPILE_LOCK = threading.Lock()


def compile_module(module: Any, names: tuple[str, ...], inline: frozenset = frozenset()) -> Any:
    """``module`` with its kernels ``names`` compiled in place (their globals rebound to numba
    dispatchers), once per process and one thread at a time; ``module._compiled`` says it is done.
    A name bound to another module's kernel is compiled again from its Python function, with this
    module's options (an inlined step, say)."""
    with _COMPILE_LOCK:
        if not getattr(module, "_compiled", False):
            g = vars(module)
            for name in names:
                fn = getattr(g[name], "py_func", g[name])
                g[name] = jit(fn, inline=name in inline)
            module._compiled = True
    return module


class lazy_jit:  # noqa: N801 - used as a decorator, like jit
    """A kernel compiled (or loaded from the cache) on its first call, not at import."""

    def __init__(self, fn: Callable) -> None:
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._kernel: Any = None

    @property
    def kernel(self) -> Any:
        if self._kernel is None:
            self._kernel = jit(self.py_func)
        return self._kernel

    @property
    def signatures(self) -> list:
        return getattr(self._kernel, "signatures", True) if self._kernel is not None else []

    def __call__(self, *args: Any) -> Any:
        return self.kernel(*args)


def call(kernel: Any, *args: Any) -> Any:
    """Call a jitted kernel; if compiling it for these arguments (not running it: a warm cache
    loads in milliseconds, however long the run) takes more than a second, say so."""
    notify = calc.on_slow_compile
    # With NUMBA_DISABLE_JIT=1 a kernel is its plain Python function: nothing to compile.
    if notify is None or getattr(kernel, "signatures", True):
        return kernel(*args)
    dispatcher = kernel.kernel if isinstance(kernel, lazy_jit) else kernel
    if not hasattr(dispatcher, "compile"):  # NUMBA_DISABLE_JIT=1 made a lazy kernel a plain function
        return kernel(*args)
    timer = threading.Timer(
        COMPILE_NOTICE_SECONDS,
        notify,
        args=(f"compiling {kernel.__name__} (first run after install; cached for later runs)...",),
    )
    timer.daemon = True
    timer.start()
    try:  # Dispatcher.compile: compile, or load from the on-disk cache, without running
        dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))
    finally:
        timer.cancel()
    return kernel(*args)
