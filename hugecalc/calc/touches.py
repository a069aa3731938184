"""Which bytes of a mapping are touched: a stride, a random fraction, or listed intervals, and
the aligned blocks those touches hold.

Touches are never expanded page by page: strides are counted in closed form
(:func:`hugecalc.calc.tables.stride_blocks`), address lists as merged intervals
(:func:`distinct_blocks`, a numba loop), random fractions by drawing per table
(:func:`fraction_counts`).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc._jit import lazy_jit
from hugecalc.units import ceil_div
from hugecalc.errors import InputError


@lazy_jit
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
    k0 = ceil_div(lo - start, stride) if lo > start else 0
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
            raise InputError(f"line {lineno}: {raw.strip()!r} is not ADDR or ADDR-END", field="touch_file")
        try:
            a = parse_address(parts[0], "address")
            b = parse_address(parts[1], "address") if len(parts) == 2 else a + 1
        except InputError as e:
            raise InputError(f"line {lineno}: {e}", field="touch_file") from None
        if b <= a:
            raise InputError(f"line {lineno}: range {raw.strip()!r} is empty or reversed", field="touch_file")
        if a < start or b > end:
            raise InputError(
                f"--touch-file line {lineno}: {raw.strip()!r} is outside the mapping [{start:#x}, {end:#x})"
            )
        intervals.append((a, b))
    if not intervals:
        raise InputError("lists no address", field="touch_file")
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


class Counts:
    """What one mapping's touches need: tables per level (top down), populated bytes, PMD-mapped
    THPs (each with a deposited PTE table), and the touched PTE tables in PMD ranges the mapping
    covers only in part (its edges)."""

    def __init__(self, tables: list[int], populated: int, thps: int, edge_ptes: int) -> None:
        self.tables, self.populated, self.thps, self.edge_ptes = tables, populated, thps, edge_ptes


EXACT_SUM_TABLES = 1 << 22  # beyond this many touched tables, their page counts' sum is drawn from its normal limit


def _ztb_sum(rng, m: int, n: int, p: float) -> int:
    """The sum of ``m`` independent Binomial(n, p) draws each conditioned on being > 0 (the touched
    units of ``m`` tables known to be touched).  Each is 1 + Binomial(n - G, p) with G the first
    success, a geometric truncated to 1..n; so the sum is m + Binomial(sum(n - G), p)."""
    if m == 0:
        return 0
    p0 = (1.0 - p) ** n
    if p0 < 1e-15:  # the condition changes nothing a double can see
        return int(rng.binomial(n * m, p))
    if m > EXACT_SUM_TABLES:  # mean and variance of the truncated binomial, times m
        mean = n * p / (1 - p0)
        var = n * p * (1 - p) / (1 - p0) + (n * p) ** 2 * (1 / (1 - p0) - 1 / (1 - p0) ** 2)
        return int(round(rng.normal(m * mean, (m * max(var, 0.0)) ** 0.5)))
    gaps = 0
    for lo in range(0, m, 1 << 20):
        u = rng.random(min(1 << 20, m - lo))
        first = np.ceil(np.log1p(-u * (1 - p0)) / np.log1p(-p)).clip(1, n)
        gaps += int((n - first).sum())
    return m + int(rng.binomial(gaps, p))


def fraction_counts(spans: list[int], leaf: int, unit: int, page: int, thp: bool, has_pte: bool, start: int,
                    end: int, fraction: float, seed: int) -> Counts:
    """A random ``fraction`` of base pages touched, drawn per table, not per page: O(tables).

    Every leaf table (PTE table; for hugetlb, the table holding its entries) whole inside the
    mapping is touched with probability q = 1 - (1 - f)^(pages it maps); how many of those a table
    of the level above holds is Binomial(its leaf tables, q), which gives that level's tables and,
    by their block indices, every level above.  The partial leaf tables at the edges are drawn unit
    by unit.  The populated units of the touched leaf tables are drawn as a sum (``_ztb_sum``).
    THP: a whole leaf table is one PMD THP; edges are base pages.  Reproducible with ``seed``.
    ``spans``: the table span of each counted level, top down; ``leaf``: the leaf table's span.
    """
    rng = np.random.default_rng(seed)
    p_unit = 1.0 - (1.0 - fraction) ** (unit // page)
    first, last = ceil_div(start, leaf), end // leaf  # the whole leaf blocks: [first, last)
    if first >= last:  # no whole leaf block: one or two partial ones
        first = last = 0
        cut = (start // leaf + 1) * leaf
        edges = [(start, cut), (cut, end)] if cut < end else [(start, end)]
    else:
        edges = [(a, b) for a, b in ((start, first * leaf), (last * leaf, end)) if a < b]
    populated, touched_edges, edge_blocks = 0, 0, []
    for a, b in edges:
        k = int(rng.binomial((b - a) // unit, p_unit)) if b - a >= unit else 0
        populated += k * unit
        if k:
            touched_edges += 1
            edge_blocks.append(a // leaf)
    n_leaf = last - first
    q = 1.0 - (1.0 - fraction) ** (leaf // page)
    parent = spans[-2] if len(spans) > 1 else None
    if parent is None or n_leaf == 0:
        m = int(rng.binomial(n_leaf, q)) if n_leaf else 0
        parents = np.zeros(0, dtype=np.int64)
    else:
        g = parent // leaf
        idx = np.arange(first // g, (last - 1) // g + 1, dtype=np.int64)
        size = np.minimum(last, (idx + 1) * g) - np.maximum(first, idx * g)
        k = rng.binomial(size, q)
        m = int(k.sum())
        parents = idx[k > 0]
    thps = 0
    if thp:
        thps = m
        populated += m * leaf
    else:
        populated += _ztb_sum(rng, m, leaf // unit, p_unit) * unit
    counts = []
    for i, span in enumerate(spans):
        if i == len(spans) - 1:
            counts.append(m + touched_edges)
            continue
        blocks = np.concatenate([parents * parent // span,
                                 np.array([b * leaf // span for b in edge_blocks], dtype=np.int64)])
        counts.append(int(np.unique(blocks).size))
    return Counts(counts, populated, thps, touched_edges if has_pte else 0)
