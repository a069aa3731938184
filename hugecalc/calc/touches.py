"""Which bytes of a mapping are touched: a stride, a random fraction, or listed intervals, and
the aligned blocks those touches hold.

Touches are never expanded page by page: strides are counted in closed form
(:func:`hugecalc.calc.tables.stride_blocks`), address lists as merged intervals
(:func:`distinct_blocks`, a numba loop), random fractions by drawing per table
(``hugecalc.calc.pgtable``).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc._jit import jit
from hugecalc.errors import InputError


@jit
def distinct_blocks(starts, ends, block_bytes, lo, hi):
    """Distinct ``block_bytes``-aligned blocks holding a byte of the sorted, disjoint intervals
    ``[starts[i], ends[i])``, clipped to ``[lo, hi)``."""
    count = 0
    last = -1
    for i in range(starts.shape[0]):
        a = max(starts[i], lo)
        b = min(ends[i], hi)
        if a >= b:
            continue
        first = a // block_bytes
        end_block = (b - 1) // block_bytes
        if first <= last:
            first = last + 1
        if first <= end_block:
            count += end_block - first + 1
            last = end_block
    return count



def stride_touches_in(start: int, stride: int, lo: int, hi: int) -> tuple[int, int]:
    """First touch at or after ``lo`` and the number of touches in ``[lo, hi)``."""
    k0 = -(-(lo - start) // stride) if lo > start else 0
    first = start + k0 * stride
    if first >= hi:
        return first, 0
    return first, (hi - 1 - first) // stride + 1


def parse_touch_file(text: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Lines of ``ADDR`` or ``ADDR-END`` (end exclusive, like /proc/PID/maps; hex or decimal;
    ``#`` comments) -> sorted, merged intervals inside ``[start, end)``."""
    from hugecalc.units import parse_address

    intervals = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(" ", "").split("-")
        if len(parts) > 2:
            raise InputError(f"--touch-file line {lineno}: {raw.strip()!r} is not ADDR or ADDR-END")
        try:
            a = parse_address(parts[0], "address")
            b = parse_address(parts[1], "address") if len(parts) == 2 else a + 1
        except InputError as e:
            raise InputError(f"--touch-file line {lineno}: {e}") from None
        if b <= a:
            raise InputError(f"--touch-file line {lineno}: range {raw.strip()!r} is empty or reversed")
        if a < start or b > end:
            raise InputError(
                f"--touch-file line {lineno}: {raw.strip()!r} is outside the mapping [{start:#x}, {end:#x})"
            )
        intervals.append((a, b))
    if not intervals:
        raise InputError("--touch-file lists no address")
    intervals.sort()
    merged = [list(intervals[0])]
    for a, b in intervals[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    arr = np.array(merged, dtype=np.int64)
    return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])


class Touches:
    """Which bytes of ``[start, end)`` are touched: a stride, a random fraction, or intervals."""

    def __init__(self, stride: int | None = None, fraction: float | None = None, seed: int = 0,
                 intervals: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.stride, self.fraction, self.seed, self.intervals = stride, fraction, seed, intervals

    def describe(self, page: int) -> dict:
        if self.fraction is not None:
            return {"touch_fraction": self.fraction, "seed": self.seed}
        if self.intervals is not None:
            return {"touch_intervals": int(self.intervals[0].shape[0]),
                    "touched_bytes_listed": int((self.intervals[1] - self.intervals[0]).sum())}
        return {"touch_stride_bytes": self.stride or page}
