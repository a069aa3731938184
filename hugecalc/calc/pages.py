"""The present pages of one replayed address space, and the faults that fill them, in numba.

A record holds millions of faults; between two changes of the address space (mmap, brk, madvise,
...) they run here, in one compiled loop, against the VMAs as arrays (:class:`VmaTable`).  Pages
are kept by PMD block: ``rows[block]`` is an int32 array of one entry per page of the block (a
folio id, :data:`ZERO`, :data:`HUGE_ZERO` or :data:`EMPTY`) and, last, how many are present, so
"does this aligned range hold a page" (``pte_range_none()``) is a scan of contiguous memory, and
an empty block is known at once.  ``folios[fid]`` (an array: folio ids are handed out in order)
packs the folio's order, whether it is anonymous (or shmem) memory, and how many of its pages are
still mapped (0: freed).  ``pte`` holds the PMD
blocks with a PTE table (deposited ones too), ``pmd`` those one PMD maps (a folio or the huge zero
page).

The same functions run as plain Python on plain dicts (a short record, or ``NUMBA_DISABLE_JIT``)
and compiled on numba's typed dicts.  ``tests/trace_model.py`` is the obvious dict-per-page model
of the same rules; the tests hold the two to each other.

Kernel reference
----------------
``do_anonymous_page()``: a read fault maps the zero page, a write allocates ``alloc_anon_folio()``'s
folio: the highest allowed order whose aligned range lies inside the VMA and is
``pte_range_none()``; ``create_huge_pmd()``: the PMD order only while ``pmd_none()``, a read maps the
huge zero page (its table deposited: ``pgtable_trans_huge_deposit()``); ``wp_page_copy()`` copies a
written zero page at order 0; ``do_huge_zero_wp_pmd()`` (v6.13) replaces a written huge zero page
with a PMD THP, before it the PMD is split and the page copied; ``shmem_fault()`` allocates for
reads too; ``zap_pte_range()``/``__split_huge_pmd()`` for unmapping (mm/memory.c, mm/huge_memory.c).
"""

from __future__ import annotations

import sys

import numpy as np

EMPTY, ZERO, HUGE_ZERO = -3, -1, -2
#: VMA kinds as the fault loop sees them: no THP rule (a file, hugetlb, nothing), anonymous, shmem.
OTHER, ANON, SHMEM = 0, 1, 2
#: space counters: the next folio id, pages of anonymous folios mapped in part or whole
NEXT, POPULATED = 0, 1
#: process counters (MAX_ORDER: the largest folio a fault allocated; USED: the orders the THP rules
#: chose that changed the state, a bit mask: see ``hugecalc.calc.advise``)
FAULTS, READS, WRITES, ZERO_MAPS, PEAK, MAX_ORDER, USED = 0, 1, 2, 3, 4, 5, 6
SMALL_RECORD = 20_000  # faults below which plain Python is quicker than loading compiled code

KERNELS = ("pack", "_row", "set_entry", "clear_entry", "_unref", "pte_range_none", "_order", "map_folio", "blocks_in", "zap",
           "_first_touch", "_write_zero", "fault_run", "empty_blocks", "discard_empty", "discard", "move", "folio_orders",
           "tlb_entries", "table_blocks", "present_count", "copy_rows", "copy_map")
_compiled = False


def kernels():
    """This module, with its functions compiled by numba (once per process)."""
    from hugecalc.calc._jit import compile_module

    return compile_module(sys.modules[__name__], KERNELS)


def compiled() -> bool:
    return _compiled


def pack(order, anon, mapped):
    return order | (anon << 8) | (mapped << 16)


def _row(rows, block, n):
    """The block's row, made empty on first use (rows are dropped only by ``zap`` and ``move``)."""
    if block not in rows:
        row = np.full(n + 1, EMPTY, np.int32)
        row[n] = 0
        rows[block] = row
    return rows[block]


def set_entry(row, i, value, n):
    if row[i] == EMPTY:
        row[n] += 1
    row[i] = value


def clear_entry(row, i, n):
    """Take entry ``i`` out of its row; what it held (EMPTY if nothing)."""
    was = row[i]
    if was != EMPTY:
        row[i] = EMPTY
        row[n] -= 1
    return was


def _unref(folios, space, fid, pages):
    """``pages`` pages of folio ``fid`` unmapped; the folio freed with its last."""
    f = folios[fid] - (pages << 16)
    if f >> 16 == 0:
        folios[fid] = 0
        if (f >> 8) & 1:
            space[POPULATED] -= 1 << (f & 0xFF)
    else:
        folios[fid] = f


def pte_range_none(row, i, count):
    """As the kernel's: no entry of ``row[i:i + count]`` is present."""
    for k in range(i, i + count):
        if row[k] != EMPTY:
            return False
    return True


def _order(row, pte, pmd, block, p, allowed, lo_page, hi_page, n, shift):
    """alloc_anon_folio() (or the PMD path): the highest allowed order whose aligned range around
    page ``p`` lies in the VMA [lo_page, hi_page) and is empty; the PMD order only while
    pmd_none() (no table, no PMD mapping)."""
    if (allowed >> shift) & 1 and row[n] == 0 and block not in pte and block not in pmd \
            and block << shift >= lo_page and (block + 1) << shift <= hi_page:
        return shift
    for order in range(shift - 1, 0, -1):
        first = p & ~((1 << order) - 1)
        if (allowed >> order) & 1 and first >= lo_page and first + (1 << order) <= hi_page \
                and (row[n] == 0 or pte_range_none(row, first & (n - 1), 1 << order)):
            return order
    return 0


def map_folio(row, folios, space, first, order, anon, n):
    """A new folio of ``order`` mapped from page ``first`` (all in the block of ``row``)."""
    fid = space[NEXT]
    space[NEXT] += 1
    folios[fid] = pack(order, anon, 1 << order)
    if anon:
        space[POPULATED] += 1 << order
    i = first & (n - 1)
    for k in range(i, i + (1 << order)):
        set_entry(row, k, fid, n)
    return fid


def blocks_in(d, b0, b1):
    """The keys of ``d`` in [b0, b1), as an array (a walk of the range or of the keys, the shorter)."""
    if b1 - b0 <= len(d):
        out = [b for b in range(b0, b1) if b in d]
    else:
        out = [b for b in d.keys() if b0 <= b < b1]
    return np.array(out, dtype=np.int64)


def zap(rows, folios, pte, pmd, space, first, last, n, shift):
    """Pages [first, last) unmapped; a PMD mapping cut in part is split to PTEs first
    (__split_huge_pmd()), a whole one goes with its deposited table."""
    if last <= first:
        return
    b0, b1 = first >> shift, ((last - 1) >> shift) + 1
    for block in blocks_in(pmd, b0, b1):
        del pmd[block]
        if first <= block << shift and last >= (block + 1) << shift and block in pte:
            del pte[block]
    for block in blocks_in(rows, b0, b1):
        row = rows[block]
        base = block << shift
        held, pages = -1, 0  # a run of pages of one folio, unreferenced at once
        for i in range(max(first, base) - base, min(last, base + n) - base):
            if row[n] == 0:
                break
            fid = clear_entry(row, i, n)
            if fid >= 0:
                if fid != held and pages:
                    _unref(folios, space, held, pages)
                    pages = 0
                held = fid
                pages += 1
        if pages:
            _unref(folios, space, held, pages)
        if row[n] == 0:
            del rows[block]


def _first_touch(row, folios, pte, pmd, space, proc, p, write, kind, allowed, lo_page, hi_page, n, shift):
    proc[FAULTS] += 1
    if write:
        proc[WRITES] += 1
    else:
        proc[READS] += 1
    block = p >> shift
    order = _order(row, pte, pmd, block, p, allowed, lo_page, hi_page, n, shift)
    if not write and kind == ANON:  # do_anonymous_page(): the zero page (huge: at the PMD)
        proc[ZERO_MAPS] += 1
        if order == shift:
            for k in range(n):
                set_entry(row, k, HUGE_ZERO, n)
            pmd[block] = HUGE_ZERO
            proc[USED] |= 1 << shift
        else:
            set_entry(row, p & (n - 1), ZERO, n)
        return order
    fid = map_folio(row, folios, space, p & ~((1 << order) - 1), order, 1, n)
    if order == shift:
        pmd[block] = fid
    if order > proc[MAX_ORDER]:
        proc[MAX_ORDER] = order
    if order:
        proc[USED] |= 1 << order
    if space[POPULATED] > proc[PEAK]:
        proc[PEAK] = space[POPULATED]
    return order


def _write_zero(row, folios, pmd, space, proc, p, state, wp_thp, n, shift):
    """A write to a page the zero page maps: wp_page_copy(), or for the huge zero page
    do_huge_zero_wp_pmd() (v6.13) / a split and a copy (before)."""
    proc[FAULTS] += 1
    proc[WRITES] += 1
    block = p >> shift
    if state == HUGE_ZERO and wp_thp:
        for k in range(n):
            clear_entry(row, k, n)
        pmd[block] = map_folio(row, folios, space, block << shift, shift, 1, n)
        proc[MAX_ORDER] = shift
    else:
        if state == HUGE_ZERO:  # split: every PTE maps the zero page
            if block in pmd:
                del pmd[block]
            for k in range(n):
                set_entry(row, k, ZERO, n)
        clear_entry(row, p & (n - 1), n)
        map_folio(row, folios, space, p, 0, 1, n)
    if space[POPULATED] > proc[PEAK]:
        proc[PEAK] = space[POPULATED]


def fault_run(addrs, errors, lo, hi, vstart, vend, vorders, vkind, vfaulted, rows, folios, pte, pmd, space, proc,
              page_shift, shift, wp_thp):
    """Recorded faults ``lo..hi-1`` (address, error code: bit 1 a write) of one process, in order.
    ``vorders[j]`` is VMA j's thp_vma_allowable_orders() as a bit mask; ``vfaulted[j]`` is set
    when VMA j takes its first anonymous fault (anon_vma_prepare())."""
    n = 1 << shift
    cur, row = -1, np.empty(0, np.int32)  # the last block faulted in, and its row
    tabled = -1  # the last block known to have its PTE table
    j = -1  # the VMA of the last fault
    for i in range(lo, hi):
        addr = addrs[i]
        write = (errors[i] & 2) != 0
        p = addr >> page_shift
        if j < 0 or not vstart[j] <= addr < vend[j]:
            j = np.searchsorted(vstart, addr, side="right") - 1
        kind = vkind[j] if j >= 0 and vend[j] > addr else OTHER
        block = p >> shift
        if block != cur:  # every fault maps a page of its block, so the row is made here
            cur, row = block, _row(rows, block, n)
        state = row[p & (n - 1)]
        if kind == OTHER:
            if state == EMPTY:  # a file, hugetlb or unknown mapping: the page, as the record had it
                if write:
                    map_folio(row, folios, space, p, 0, 0, n)
                else:
                    set_entry(row, p & (n - 1), ZERO, n)
                if block != tabled:
                    pte[block], tabled = 1, block
        elif state == EMPTY:
            if kind == ANON:
                vfaulted[j] = 1
            order = _first_touch(row, folios, pte, pmd, space, proc, p, write, kind, vorders[j],
                                 (vstart[j] + (1 << page_shift) - 1) >> page_shift, vend[j] >> page_shift, n, shift)
            # a PTE table, or the one pgtable_trans_huge_deposit() keeps (not for shmem's PMD)
            if block != tabled and (order != shift or kind == ANON):
                pte[block], tabled = 1, block
        elif write and (state == ZERO or state == HUGE_ZERO):
            _write_zero(row, folios, pmd, space, proc, p, state, wp_thp, n, shift)


def empty_blocks(rows, pte, b0, b1):
    """Blocks in [b0, b1) with a PTE table and no present page."""
    out = [b for b in blocks_in(pte, b0, b1) if b not in rows or rows[b][len(rows[b]) - 1] == 0]
    return np.array(out, dtype=np.int64)


def discard_empty(rows, pte, blocks):
    """The PTE tables of those ``blocks`` that hold no page, discarded."""
    for b in blocks:
        if b in pte and (b not in rows or rows[b][len(rows[b]) - 1] == 0):
            del pte[b]


def discard(pte, blocks):
    for b in blocks:
        if b in pte:
            del pte[b]


def move(rows, pte, pmd, first, last, delta_pages, n, shift):
    """mremap(): the pages of [first, last) moved by ``delta_pages``, keeping their folios; a PMD
    mapping that lands unaligned is PTE-mapped."""
    moved_pages, moved_fids = [0], [0]
    for block in blocks_in(rows, first >> shift, ((last - 1) >> shift) + 1 if last > first else 0):
        row, base = rows[block], block << shift
        for p in range(max(first, base), min(last, base + n)):
            was = clear_entry(row, p - base, n)
            if was != EMPTY:
                moved_pages.append(p)
                moved_fids.append(was)
        if row[n] == 0:
            del rows[block]
    for k in range(1, len(moved_pages)):
        q = moved_pages[k] + delta_pages
        set_entry(_row(rows, q >> shift, n), q & (n - 1), moved_fids[k], n)
        pte[q >> shift] = 1
    aligned = delta_pages % n == 0
    for block in blocks_in(pmd, first >> shift, last >> shift):
        fid = pmd[block]
        del pmd[block]
        if aligned:
            pmd[block + delta_pages // n] = fid


def folio_orders(folios, count, anon_only):
    """How many folios of each order among the first ``count`` ids (anonymous or shmem ones only, if
    asked)."""
    out = np.zeros(64, np.int64)
    for fid in range(count):
        f = folios[fid]
        if f and (not anon_only or (f >> 8) & 1):
            out[f & 0xFF] += 1
    return out


def tlb_entries(rows, folios, pmd, cont, n, shift):
    """Last-level TLB entries of the anonymous memory mapped: one per PMD mapping, per
    contiguous-PTE block of a folio at least that large (``cont`` pages), per other page."""
    units = 0
    for block in rows.keys():
        row = rows[block]
        by_pmd = block in pmd
        last_cont = -1
        for i in range(n):
            fid = row[i]
            if fid == EMPTY:
                continue
            order = folios[fid] & 0xFF if fid >= 0 else 0
            if fid >= 0 and not (folios[fid] >> 8) & 1:
                continue
            if by_pmd:
                units += 1
                break
            if fid >= 0 and cont > 1 and (1 << order) >= cont:
                if i // cont != last_cont:
                    units += 1
                    last_cont = i // cont
            else:
                units += 1
    return units


def table_blocks(pte, pmd):
    """The PMD blocks in use (a PTE table or a PMD mapping), in no order (the caller sorts them in
    NumPy: a compiled sort would cost more to compile than to run), and how many have a PTE table."""
    out = [b for b in pte.keys()]
    for b in pmd.keys():
        if b not in pte:
            out.append(b)
    return np.array(out, dtype=np.int64), len(pte)


def present_count(rows):
    total = 0
    for row in rows.values():
        total += row[len(row) - 1]
    return total


def copy_rows(src, dst):
    for block, row in src.items():
        dst[block] = row.copy()


# Arrays are copied element by element: numba's array-to-array assignment compiles its shape-mismatch
# message (string formatting) for every shape, seconds of a first run's compile.

def copy_1d(dst, src, n):
    """dst[:n] = src[:n]"""
    for i in range(n):
        dst[i] = src[i]


def copy_2d(dst, src, n):
    """dst[:n] = src[:n], rows of the same length"""
    for i in range(n):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


def copy_map(src, dst):
    for k, v in src.items():
        dst[k] = v
