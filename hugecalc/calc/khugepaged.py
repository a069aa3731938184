"""khugepaged mTHP collapse: which PMD ranges collapse to which size, under both proposed designs.

**In v7.2 at the earliest (release unconfirmed), not before.**  PMD collapse is (``hpage_collapse_scan_pmd()``: at most
``max_ptes_none`` empty PTEs in the range); collapsing to smaller sizes is Nico Pache's series
"khugepaged: mTHP support" (RFC 2025-01-08, v12 2025-10-22, v17 in mm-unstable May 2026, v18):

- ``scaled`` (early versions, and Dev Jain's RFC): an order-``o`` range may have at most
  ``max_ptes_none >> (PMD_ORDER - o)`` empty PTEs.
- ``v12`` (to v17): ``max_ptes_none`` must be 0 or ``HPAGE_PMD_NR - 1``: 511 allows ``(1 << o) - 1``
  empty PTEs, 0 allows none, any other value warns and skips mTHP collapse (PMD collapse is unchanged).
- ``v18`` (2026-05-22, the version meant for v7.2): as v12, but any other value warns and mTHP
  collapse defaults to ``max_ptes_none = 0``.

Both walk a PMD range as ``mthp_collapse()`` does: try the PMD order, and where it does not
qualify, the two halves at the next order down, to ``KHUGEPAGED_MIN_MTHP_ORDER = 2``, lower
address first.  Shared or swapped PTEs, which abort an mTHP collapse, are not modelled.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.result import Model, field
from hugecalc.units import ceil_div, fmt_size, parse_address

MIN_MTHP_ORDER = 2
DESIGNS = ("scaled", "v12", "v18")


class Collapse(Model):
    size_bytes: int = field("Collapsed to", "bytes")
    count: int = field("Ranges", "count")


class KhugepagedDesign(Model):
    design: str = field("Design")
    max_ptes_none: int = field("max_ptes_none", "count")
    collapses: list[Collapse]
    pmd_ranges: int = field("PMD ranges scanned", "count")
    untouched_ranges: int = field("Ranges left as they are", "count")
    note: str | None = field("Note", default=None)


def max_none(design: str, order: int, pmd_order: int, max_ptes_none: int) -> int | None:
    """Empty PTEs an order-``order`` collapse tolerates; None: this design skips that order."""
    if order == pmd_order:
        return max_ptes_none
    if design == "scaled":
        return max_ptes_none >> (pmd_order - order)
    nr = 1 << pmd_order
    if max_ptes_none == nr - 1:
        return (1 << order) - 1
    if max_ptes_none == 0:
        return 0
    if design == "v18":
        return 0  # v18: any other value warns, and mTHP collapse uses max_ptes_none = 0
    return None  # v12: any other value warns and skips mTHP collapse


def collapse_range(bitmap: np.ndarray, design: str, enabled: set[int], pmd_order: int,
                   max_ptes_none: int) -> list[int]:
    """Orders collapsed within one PMD range (``bitmap``: one bool per PTE), per mthp_collapse()."""
    prefix = np.concatenate(([0], np.cumsum(bitmap, dtype=np.int64)))
    out = []
    stack = [(0, pmd_order)]
    while stack:
        offset, order = stack.pop()
        nr = 1 << order
        occupied = int(prefix[offset + nr] - prefix[offset])
        limit = max_none(design, order, pmd_order, max_ptes_none) if order in enabled else None
        if occupied and limit is not None and nr - occupied <= limit:
            out.append(order)
            continue
        if order > MIN_MTHP_ORDER and occupied:
            stack.append((offset + nr // 2, order - 1))
            stack.append((offset, order - 1))
    return out


def prepopulated_bitmaps(profile: Profile, start: int, end: int, stride: int):
    """(bitmap, how many PMD ranges have it) for the prepopulated pattern, one period computed."""
    page, pmd = profile.page_size, profile.pmd_size
    nr = pmd // page
    first = start - start % pmd
    blocks = (end - first + pmd - 1) // pmd
    period = (stride * pmd // gcd(stride, pmd)) // pmd  # the pattern repeats every lcm(stride, PMD)
    groups: dict[bytes, list] = {}

    def bitmap_of(b: int) -> np.ndarray:
        lo, hi = max(b, start), min(b + pmd, end)
        bits = np.zeros(nr, dtype=bool)
        k = ceil_div(lo - start, stride)
        addrs = np.arange(start + k * stride, hi, stride, dtype=np.int64)
        bits[(addrs - b) // page] = True
        return bits

    edge = {0, blocks - 1}
    interior = [i for i in range(1, min(blocks - 1, 1 + period))]
    for i in sorted(edge | set(interior)):
        if i < 0 or i >= blocks:
            continue
        bits = bitmap_of(first + i * pmd)
        weight = 1
        if i not in edge:
            weight = len(range(i, blocks - 1, period))
        entry = groups.setdefault(bits.tobytes(), [bits, 0])
        entry[1] += weight
    return [(bits, n) for bits, n in groups.values()]


def parse_occupancy(text: str, profile: Profile):
    """Lines ``ADDR: SPEC``: a PMD range's address and its present PTEs (``0-15,32,64-127``)."""
    nr = profile.pmd_size // profile.page_size
    out: dict[int, np.ndarray] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" not in line:
            raise InputError(f"line {lineno}: expected 'ADDR: PTE indexes', got {raw.strip()!r}", field="occupancy_file")
        addr_text, spec = line.split(":", 1)
        try:
            addr = parse_address(addr_text.strip(), "address")
        except InputError as e:
            raise InputError(f"line {lineno}: {e}", field="occupancy_file") from None
        if addr % profile.pmd_size:
            raise InputError(f"line {lineno}: {addr:#x} is not aligned to the {fmt_size(profile.pmd_size)} PMD", field="occupancy_file")
        bits = out.setdefault(addr, np.zeros(nr, dtype=bool))
        for part in filter(None, (x.strip() for x in spec.split(","))):
            lo, _, hi = part.partition("-")
            try:
                a, b = int(lo, 0), int(hi or lo, 0)
            except ValueError:
                raise InputError(f"line {lineno}: {part!r} is not a PTE index or range", field="occupancy_file") from None
            if not 0 <= a <= b < nr:
                raise InputError(f"line {lineno}: {part!r} is outside 0..{nr - 1}", field="occupancy_file")
            bits[a : b + 1] = True
    if not out:
        raise InputError("lists no PMD range", field="occupancy_file")
    return [(bits, 1) for bits in out.values()]


def compute_khugepaged(profile: Profile, occupancy, enabled_orders: set[int], max_ptes_none: int) -> list[KhugepagedDesign]:
    """Collapses per design for PMD ranges given as (bitmap, multiplicity) pairs, or (bitmap,
    multiplicity, the range's own enabled orders) where ranges differ (a record's VMAs).

    Kernel reference
    ----------------
    ``hpage_collapse_scan_pmd()`` in mm/khugepaged.c (PMD); ``mthp_collapse()`` and
    ``collapse_max_ptes_none()`` in the "khugepaged: mTHP support" series (not released).
    """
    nr = profile.pmd_size // profile.page_size
    pmd_order = nr.bit_length() - 1
    if not 0 <= max_ptes_none <= nr - 1:
        raise InputError(f"{max_ptes_none} must be between 0 and {nr - 1} (HPAGE_PMD_NR - 1)", field="max_ptes_none")
    designs = []
    for design in DESIGNS:
        counts: dict[int, int] = {}
        untouched = 0
        total = 0
        for bits, n, *own in occupancy:
            total += n
            orders = collapse_range(bits, design, own[0] if own else enabled_orders, pmd_order, max_ptes_none)
            if not orders:
                untouched += n
            for o in orders:
                counts[o] = counts.get(o, 0) + n
        note = None
        odd = max_ptes_none not in (0, nr - 1) and any(o < pmd_order for o in enabled_orders)
        if design == "v12" and odd:
            note = (f"max_ptes_none {max_ptes_none} is neither 0 nor {nr - 1}: v12 warns and collapses to the PMD "
                    "size only")
        elif design == "v18" and odd:
            note = (f"max_ptes_none {max_ptes_none} is neither 0 nor {nr - 1}: v18 warns and collapses mTHP sizes "
                    "as with 0")
        designs.append(KhugepagedDesign(
            design=design, max_ptes_none=max_ptes_none, pmd_ranges=total, untouched_ranges=untouched,
            collapses=[Collapse(size_bytes=profile.page_size << o, count=c) for o, c in sorted(counts.items(), reverse=True)],
            note=note))
    return designs
