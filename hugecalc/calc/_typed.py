"""The typed dicts the compiled page kernels (``hugecalc.calc.pages``) work on.

Made by compiled code, loaded from numba's cache: a typed dict made from Python compiles numba's
dict methods on every run (half a second).  Imported only when the kernels are compiled.
"""

from numba import types
from numba.typed import Dict

from hugecalc.calc._jit import jit

_ROW = types.int32[::1]


@jit
def new_rows():
    """PMD block -> its row of pages."""
    return Dict.empty(key_type=types.int64, value_type=_ROW)


@jit
def new_map():
    """PMD block, folio id or page -> an integer."""
    return Dict.empty(key_type=types.int64, value_type=types.int64)
