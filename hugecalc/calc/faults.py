"""The fault walk of one pass over a VMA: which folio each page fault allocates, in numba.

The pass touches one byte every ``stride`` from the start of the VMA to its end, in address order,
like ``memset``.  The walk visits faults only: after a fault it jumps to the first touch past the
folio it allocated, so a 1 TiB VMA costs one loop iteration per fault, and interior PMD blocks
that repeat are walked once per period and multiplied out.  The rules that decide the order are
those of ``hugecalc.calc.mthp`` (its docstring cites them); this module only applies them.
"""

from __future__ import annotations

import math

from hugecalc.calc.tables import stride_blocks

# The same closed form the pure-Python callers use, for the walk.
_stride_units = stride_blocks

#: The walk's functions, callees first.  They are plain Python until :func:`kernels` compiles them
#: (or loads them from numba's on-disk cache) and rebinds these names to numba dispatchers: a walk
#: small enough to run in Python in a few milliseconds never pays numba's start-up.
KERNELS = ("_has_point", "_next_touch", "_stride_units", "_walk_block", "fault_walk", "upper_tables", "replay_walk")
SMALL_WALK = 5_000  # loop iterations below which Python is quicker than loading compiled code
_compiled = False


def kernels():
    """This module, with the walk compiled by numba (once per process)."""
    import sys

    from hugecalc.calc._jit import compile_module

    return compile_module(sys.modules[__name__], KERNELS)


def module_for(iterations: int):
    """The walk to use for about ``iterations`` loop iterations: Python, or compiled."""
    import sys

    return kernels() if _compiled or iterations > SMALL_WALK else sys.modules[__name__]


def repeat_period(start: int, end: int, pmd: int, stride: int, pre_stride: int) -> int:
    """lcm(stride, prepopulated stride, PMD) in exact integers, or 0 when it does not fit twice in
    the VMA (then there is nothing to multiply out, and the lcm may not even fit in an int64)."""
    period = math.lcm(stride, pmd, pre_stride or 1)
    return period if 2 * period <= end - start else 0


def _has_point(lo, hi, first, step):
    """Whether a prepopulated point ``first + k*step`` (k >= 0) lies in ``[lo, hi)``."""
    if step <= 0 or hi <= first:
        return False
    k = (lo - first + step - 1) // step if lo > first else 0
    return first + k * step < hi


def _next_touch(b, start, stride):
    """The first touch at or after ``b``."""
    if b <= start:
        return start
    return start + ((b - start + stride - 1) // stride) * stride


def _walk_block(lo, hi, start, page, pmd, pmd_order, stride, pre_stride, order_mask, pmd_ok, shmem,
                read_then_write, huge_zero_thp, cont_pages, out_folios, out):
    """The faults of the pass inside one PMD block ``[lo, hi)`` (the part of it inside the VMA).

    Folios never cross a PMD boundary, so blocks are independent.  ``out``: read faults, write
    faults, populated bytes, TLB entries, largest folio bytes, PTE tables.
    """
    needs_pte_table = False
    last_end = lo
    a = _next_touch(lo, start, stride)
    while a < hi:
        p = a - a % page
        if p < last_end:
            a = _next_touch(last_end, start, stride)
            continue
        if _has_point(p, p + page, start, pre_stride):
            out[3] += 1  # a prepopulated base page: mapped, no fault; one TLB entry
            a = _next_touch(p + page, start, stride)
            continue
        x = p - p % pmd
        if pmd_ok and x == lo and x + pmd == hi and x >= last_end and not _has_point(x, x + pmd, start, pre_stride):
            # The PMD path: create_huge_pmd() while pmd_none().
            if shmem or not read_then_write:
                out[0 if read_then_write else 1] += 1  # shmem: the read fault maps it writable
            else:
                out[0] += 1  # the huge zero page
                if huge_zero_thp:
                    out[1] += 1  # do_huge_zero_wp_pmd()
                else:
                    # Split into zero PTEs; every written page is copied at order 0.
                    n = (x + pmd - 1 - a) // stride + 1
                    pages = _stride_units(a, n, stride, page)
                    out[1] += pages
                    out_folios[0] += pages
                    out[2] += pages * page
                    out[3] += pages
                    if page > out[4]:
                        out[4] = page
                    out[5] += 1
                    return
            order = pmd_order
            x_start = x
            if not shmem:
                needs_pte_table = True  # pgtable_trans_huge_deposit()
        else:
            needs_pte_table = True
            order = 0
            x_start = p
            if read_then_write and not shmem:
                out[0] += 1  # the zero page, then wp_page_copy() at order 0
                out[1] += 1
            else:
                for o in range(pmd_order - 1, 0, -1):
                    if (order_mask >> o) & 1:
                        sz = page << o
                        y = p - p % sz
                        if y >= lo and y + sz <= hi and y >= last_end and not _has_point(y, y + sz, start, pre_stride):
                            order = o
                            x_start = y
                            break
                out[0 if read_then_write else 1] += 1
        size = page << order
        out_folios[order] += 1
        out[2] += size
        if size > out[4]:
            out[4] = size
        # TLB entries for the touched part of the folio: a PMD leaf, contiguous blocks, or pages.
        unit = page
        if order == pmd_order:
            unit = pmd
        elif cont_pages > 1 and (size // page) >= cont_pages:
            unit = cont_pages * page
        n = (x_start + size - 1 - a) // stride + 1
        out[3] += _stride_units(a, n, stride, unit)
        last_end = x_start + size
        a = _next_touch(last_end, start, stride)
    if needs_pte_table or _has_point(lo, hi, start, pre_stride):
        out[5] += 1


class _BlockMemo:
    """The plain-Python walk's blocks, each kind walked once (a sweep's passes meet the same blocks
    again and again).  A block's faults are the same wherever its PMD lies: they depend on where the
    walked part starts and ends in it, the phase there of the touches (``start`` mod ``stride``) and
    of the prepopulated pages, and the pass's constants; so they are kept by those, and added.  The
    compiled walk calls ``_walk_block`` itself (``compile_module`` compiles ``py_func``)."""

    def __init__(self, fn):
        self.py_func = fn
        self.blocks: dict = {}

    def __call__(self, lo, hi, start, page, pmd, pmd_order, stride, pre_stride, *rest):
        *constants, out_folios, out = rest
        x = lo - lo % pmd
        key = (lo - x, hi - x, (start - x) % stride, (start - x) % pre_stride if pre_stride > 0 else 0, page, pmd,
               stride, pre_stride, *constants)
        block = self.blocks.get(key)
        if block is None:
            folios, counts = out_folios * 0, out * 0
            self.py_func(lo, hi, start, page, pmd, pmd_order, stride, pre_stride, *constants, folios, counts)
            if len(self.blocks) >= 1 << 16:
                self.blocks.clear()
            block = self.blocks[key] = (folios, counts)
        folios, counts = block
        out_folios += folios
        largest = max(out[4], counts[4])
        out += counts
        out[4] = largest  # the largest folio is a maximum, not a sum


_walk_block = _BlockMemo(_walk_block)


def fault_walk(start, end, page, pmd, stride, pre_stride, period, order_mask, pmd_ok, shmem, read_then_write,
               huge_zero_thp, cont_pages, out_folios, out):
    """Walk the pass PMD block by PMD block.  Interior blocks repeat with a ``period`` of
    lcm(stride, prepopulated stride, PMD) bytes (:func:`repeat_period`; 0: none fits in the
    VMA); one period is walked and the rest multiplied."""
    pmd_order = 0
    while (page << pmd_order) < pmd:
        pmd_order += 1
    period_blocks = period // pmd
    first = start - start % pmd
    interior_lo = first if first == start else first + pmd
    interior_hi = end - end % pmd
    b = first
    while b < end:
        if period and b >= interior_lo and b + 2 * period <= interior_hi and period_blocks <= 1 << 20:
            folios_before = out_folios.copy()
            out_before = out.copy()
            for i in range(period_blocks):
                lo = b + i * pmd
                _walk_block(lo, lo + pmd, start, page, pmd, pmd_order, stride, pre_stride, order_mask, pmd_ok,
                            shmem, read_then_write, huge_zero_thp, cont_pages, out_folios, out)
            reps = (interior_hi - b) // period - 1
            for k in range(out.shape[0]):
                if k != 4:  # the largest folio is a maximum, not a sum
                    out[k] += (out[k] - out_before[k]) * reps
            for k in range(out_folios.shape[0]):
                out_folios[k] += (out_folios[k] - folios_before[k]) * reps
            b += period * (reps + 1)
            continue
        lo = max(b, start)
        hi = min(b + pmd, end)
        # A block with no touch and no prepopulated page has no fault and needs no table: skip to
        # the block of the next one.
        nxt = _next_touch(lo, start, stride)
        if pre_stride > 0:
            nxt = min(nxt, _next_touch(lo, start, pre_stride))
        if nxt >= hi:
            b = max(b + pmd, nxt - nxt % pmd)
            continue
        _walk_block(lo, hi, start, page, pmd, pmd_order, stride, pre_stride, order_mask, pmd_ok, shmem,
                    read_then_write, huge_zero_thp, cont_pages, out_folios, out)
        b += pmd


def upper_tables(start, end, span, stride, pre_stride):
    """Tables of a level above the PTE level: spans holding a touch or a prepopulated page."""
    count = 0
    b = start - start % span
    while b < end:
        lo = max(b, start)
        hi = min(b + span, end)
        if _has_point(lo, hi, start, stride) or _has_point(lo, hi, start, pre_stride):
            count += 1
        b += span
    return count


def replay_walk(pages, lo, hi, page, pmd, order_mask, pmd_ok, shmem, cont_pages, out_folios, out, pte_blocks):
    """Fault in the sorted, distinct page addresses ``pages`` of the VMA ``[lo, hi)`` in address
    order, as a program writing them once would, under the same rules as :func:`fault_walk`.

    ``out``: faults, populated bytes, TLB entries (distinct units over the pages), largest folio,
    PTE tables; ``pte_blocks`` receives the PMD-block index of each PTE table (``out[4]`` of them).
    """
    pmd_order = 0
    while (page << pmd_order) < pmd:
        pmd_order += 1
    last_end = lo
    unit = page
    last_unit = -1
    block_seen = -1  # the last PMD block a fault happened in: its PTE table (or PMD) exists
    for i in range(pages.shape[0]):
        p = pages[i]
        if p >= last_end:
            x = p - p % pmd
            if pmd_ok and x >= lo and x + pmd <= hi and x >= last_end and x != block_seen:
                order = pmd_order  # create_huge_pmd() while pmd_none()
                start = x
                unit = pmd
                if not shmem:  # pgtable_trans_huge_deposit()
                    pte_blocks[out[4]] = x // pmd
                    out[4] += 1
            else:
                order = 0
                start = p
                for o in range(pmd_order - 1, 0, -1):
                    if (order_mask >> o) & 1:
                        sz = page << o
                        y = p - p % sz
                        if y >= lo and y + sz <= hi and y >= last_end:
                            order = o
                            start = y
                            break
                size = page << order
                unit = cont_pages * page if cont_pages > 1 and size >= cont_pages * page else page
                if x != block_seen:
                    pte_blocks[out[4]] = x // pmd
                    out[4] += 1
            block_seen = x
            size = page << order
            out_folios[order] += 1
            out[0] += 1
            out[1] += size
            if size > out[3]:
                out[3] = size
            last_end = start + size
        u = p - p % unit  # the start of its TLB unit: distinct units never share one
        if u != last_unit:
            out[2] += 1
            last_unit = u
