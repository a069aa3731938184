"""Multi-size THP: which folio size each page fault gets, and the faults, folios, TLB entries and
page tables that follow from it.

The measured pass touches one byte every ``touch_stride`` from the start of the VMA to its end, in
address order, like ``memset``.  The walk visits faults only: after a fault it jumps to the first
touch past the folio it allocated, so a 1 TiB VMA costs one loop iteration per fault.

Kernel reference
----------------
- ``thp_vma_allowable_orders()`` (include/linux/huge_mm.h): per-size ``always``, ``madvise``
  (needs ``MADV_HUGEPAGE``) and ``inherit`` (follows the top-level ``enabled``); ``VM_NOHUGEPAGE``
  disables all (``vma_thp_disabled()``).
- ``thp_vma_suitable_order()``: the naturally aligned range must lie inside the VMA (for files and
  shmem, the file offset must be aligned too).
- ``__handle_mm_fault()``: the PMD path (``create_huge_pmd()``) only while ``pmd_none()``.
- ``alloc_anon_folio()`` (mm/memory.c, v6.8+): the highest allowed order whose aligned range is
  ``pte_range_none()``; order 0 otherwise.
- ``do_anonymous_page()``: a read fault maps the zero page; ``wp_page_copy()`` then copies it into
  an order-0 folio; ``do_huge_pmd_anonymous_page()`` maps the huge zero page on a read fault and
  ``do_huge_zero_wp_pmd()`` (v6.13) replaces it with a PMD THP on the write.
- ``shmem_allowable_huge_orders()``, ``shmem_huge_global_enabled()``, ``shmem_suitable_orders()``
  (mm/shmem.c); ``finish_fault()`` maps a whole large folio at one fault; ``do_set_pmd()`` maps a
  PMD-size one with a PMD and deposits no PTE table (x86).
- THP_ORDERS_ALL_ANON excludes order 1; THP_ORDERS_ALL_FILE_DEFAULT allows orders 1 up to
  MAX_PAGECACHE_ORDER = min(MAX_XAS_ORDER = 11, PMD order).
"""

from __future__ import annotations

import math

import numpy as np

from hugecalc.calc._jit import call, jit
from hugecalc.calc.khugepaged import KhugepagedDesign, compute_khugepaged, prepopulated_bitmaps
from hugecalc.calc.pgtable import _level_row, _stride_blocks, vmpte_bytes
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import (HUGE_ZERO_WP_THP, MTHP_ANON, SHMEM_MTHP, THP_ALIGN_ANON, THP_ALIGN_PMD_MULTIPLES,
                               TMPFS_MTHP, Release)
from hugecalc.result import Derivation, Model, Result, field
from hugecalc.units import fmt_bytes, fmt_size

ANON_MODES = ("always", "inherit", "madvise", "never")
SHMEM_MODES = ("always", "inherit", "within_size", "advise", "never")
HUGE_MODES = ("always", "within_size", "advise", "never")
MAX_XAS_ORDER = 11  # XA_CHUNK_SHIFT * 2 - 1 (include/linux/xarray.h)
KHUGEPAGED_SERIES = 'Nico Pache, "khugepaged: mTHP support", 2025'
FAULT_AROUND_BYTES = 65536  # fault_around_bytes default (mm/memory.c)


def fault_around_pages(profile: Profile) -> int:
    """``fault_around_pages``: 65536 >> PAGE_SHIFT (16 on 4K pages)."""
    return max(FAULT_AROUND_BYTES // profile.page_size, 1)


def kernel_pmd_aligns_anon_mmap(profile: Profile, release: Release, length: int) -> bool:
    """Whether ``mmap(NULL, length, ..., MAP_ANONYMOUS)`` gets a PMD-aligned address.

    ``__get_unmapped_area()`` uses ``thp_get_unmapped_area_vmflags()`` for anonymous mappings since
    v6.7, not on 32-bit, and since v6.12 only when ``IS_ALIGNED(len, PMD_SIZE)``.
    """
    if profile.bits != 64 or not release.has(THP_ALIGN_ANON) or length < profile.pmd_size:
        return False
    return length % profile.pmd_size == 0 or not release.has(THP_ALIGN_PMD_MULTIPLES)



def pmd_order(profile: Profile) -> int:
    return int(math.log2(profile.pmd_size // profile.page_size))


def anon_orders(profile: Profile) -> list[int]:
    """THP_ORDERS_ALL_ANON: orders 2..PMD_ORDER ("order 1 is a limitation of the THP implementation")."""
    return list(range(2, pmd_order(profile) + 1))


def file_orders(profile: Profile) -> list[int]:
    """THP_ORDERS_ALL_FILE_DEFAULT: orders 1..MAX_PAGECACHE_ORDER."""
    return list(range(1, min(MAX_XAS_ORDER, pmd_order(profile)) + 1))


class FolioCount(Model):
    size_bytes: int = field("Folio size", "bytes")
    count: int = field("Folios", "count")


class MthpResult(Result):
    command: str = "mthp"
    faults: int = field("Page faults", "count")
    read_faults: int = field("Read faults", "count")
    write_faults: int = field("Write faults", "count")
    folios: list[FolioCount]
    fault_orders_bytes: list[int] = field("Sizes a fault may get", "bytes")
    tlb_entries: int = field("Last-level TLB entries", "count")
    tables: dict[str, int] = field("Page tables by level")
    page_table_bytes: int = field("Page tables (as VmPTE counts)", "bytes")
    populated_bytes: int = field("Memory populated", "bytes")
    touched_bytes: int = field("Memory touched (whole pages)", "bytes")
    bloat: float = field("Populated / touched")
    largest_fault_clear_bytes: int = field("Largest single fault clears", "bytes")
    largest_fault_clear_seconds: float = field("Its zeroing time", "seconds")
    khugepaged: list[KhugepagedDesign] | None = None


class SizeRow(Model):
    """One mTHP size alone, for the side-by-side comparison."""

    size_bytes: int = field("Size", "size")
    faults: int = field("Faults", "count")
    folios: int = field("Folios", "count")
    tlb_entries: int = field("TLB entries", "count")
    page_table_bytes: int = field("Page tables", "bytes")
    populated_bytes: int = field("Populated", "bytes")
    bloat: float = field("Bloat")
    largest_fault_clear_seconds: float = field("Worst fault clear", "seconds")


class MthpComparison(Result):
    command: str = "mthp"
    sizes: list[SizeRow]


# --- the walk ------------------------------------------------------------------------------


@jit
def _has_point(lo, hi, first, step):
    """Whether a prepopulated point ``first + k*step`` (k >= 0) lies in ``[lo, hi)``."""
    if step <= 0 or hi <= first:
        return False
    k = (lo - first + step - 1) // step if lo > first else 0
    return first + k * step < hi


@jit
def _next_touch(b, start, stride):
    """The first touch at or after ``b``."""
    if b <= start:
        return start
    return start + ((b - start + stride - 1) // stride) * stride


@jit
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


@jit
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@jit
def _fault_walk(start, end, page, pmd, stride, pre_stride, order_mask, pmd_ok, shmem, read_then_write,
                huge_zero_thp, cont_pages, out_folios, out):
    """Walk the pass PMD block by PMD block.  Interior blocks repeat with a period of
    lcm(stride, prepopulated stride, PMD) bytes; one period is walked and the rest multiplied."""
    pmd_order = 0
    while (page << pmd_order) < pmd:
        pmd_order += 1
    period = stride // _gcd(stride, pmd) * pmd
    if pre_stride > 0:
        period = period // _gcd(period, pre_stride) * pre_stride
    period_blocks = period // pmd
    first = start - start % pmd
    interior_lo = first if first == start else first + pmd
    interior_hi = end - end % pmd
    b = first
    while b < end:
        if b >= interior_lo and b + 2 * period <= interior_hi and period_blocks <= 1 << 20:
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
        _walk_block(lo, hi, start, page, pmd, pmd_order, stride, pre_stride, order_mask, pmd_ok, shmem,
                    read_then_write, huge_zero_thp, cont_pages, out_folios, out)
        b += pmd


@jit
def _upper_tables(start, end, span, stride, pre_stride):
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


@jit
def _stride_units(first, n, stride, unit):
    """Distinct ``unit``-sized blocks holding ``first + k*stride``, k < n."""
    if n <= 0:
        return 0
    if stride >= unit:
        return n
    last = first + (n - 1) * stride
    return last // unit - first // unit + 1


# --- settings -------------------------------------------------------------------------------


def _order_of(profile: Profile, size: int, what: str) -> int:
    pages, rest = divmod(size, profile.page_size)
    if rest or pages & (pages - 1):
        raise InputError(f"{what} {fmt_size(size)} is not a power-of-two number of {fmt_size(profile.page_size)} pages")
    return pages.bit_length() - 1


def _allowed(modes: dict[int, str], always: tuple[str, ...], advised: str, madvise: bool,
             global_on: bool) -> set[int]:
    """Orders a per-size mode allows: ``always`` ones; the ``advised`` mode (madvise/advise) with
    MADV_HUGEPAGE; ``inherit`` when the top-level switch is on for this VMA.

    thp_vma_allowable_orders() (include/linux/huge_mm.h); shmem_allowable_huge_orders() (mm/shmem.c).
    """
    return {o for o, m in modes.items()
            if m in always or (m == advised and madvise) or (m == "inherit" and global_on)}


def _why(page: int, rule: str, madvise: bool, modes: dict[int, str]) -> str:
    return (f"{rule}, {'MADV_HUGEPAGE' if madvise else 'no MADV_HUGEPAGE'}; per size: "
            + ", ".join(f"{fmt_size(page << o)}={m}" for o, m in sorted(modes.items()) if m != "never"))


def parse_modes(profile: Profile, items: list[tuple[int, str]], allowed_orders: list[int], modes: tuple[str, ...],
                what: str, rule: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for size, mode in items:
        order = _order_of(profile, size, what)
        if order not in allowed_orders:
            lo, hi = allowed_orders[0], allowed_orders[-1]
            raise InputError(
                f"{what} {fmt_size(size)} is order {order}: {profile.name} allows orders {lo}..{hi} "
                f"({fmt_size(profile.page_size << lo)}..{fmt_size(profile.page_size << hi)}) ({rule})"
            )
        if mode not in modes:
            raise InputError(f"{what} {fmt_size(size)}={mode}: the mode must be one of {', '.join(modes)}")
        out[order] = mode
    return out


def compute_mthp(
    profile: Profile,
    release: Release,
    *,
    enabled: list[tuple[int, str]] = (),
    top_level: str = "madvise",
    madvise: bool = False,
    nohugepage: bool = False,
    memory: str = "anon",
    shmem_enabled: list[tuple[int, str]] = (),
    huge: str = "never",
    vma_size: int = 1 << 30,
    vma_start: int | None = None,
    file_offset: int = 0,
    touch_stride: int | None = None,
    prepopulated_stride: int | None = None,
    access: str = "write",
    khugepaged: bool = False,
    max_ptes_none: int = 511,
    occupancy: list | None = None,
) -> MthpResult:
    """Faults, folios, TLB entries and page tables of one pass over a VMA.

    Kernel reference
    ----------------
    ``thp_vma_allowable_orders()``, ``thp_vma_suitable_order()`` (include/linux/huge_mm.h);
    ``alloc_anon_folio()``, ``do_anonymous_page()``, ``wp_page_copy()``, ``finish_fault()``
    (mm/memory.c); ``do_huge_pmd_anonymous_page()``, ``do_huge_zero_wp_pmd()`` (mm/huge_memory.c);
    ``shmem_allowable_huge_orders()`` (mm/shmem.c).
    """
    page = profile.page_size
    pmd = profile.pmd_size
    P = pmd_order(profile)
    if top_level not in ("always", "madvise", "never"):
        raise InputError(f"--top-level {top_level!r}: use always, madvise or never")
    if memory not in ("anon", "shmem", "tmpfs"):
        raise InputError(f"--memory {memory!r}: use anon, shmem or tmpfs")
    if huge not in HUGE_MODES:
        raise InputError(f"--huge {huge!r}: use {', '.join(HUGE_MODES)}")
    if access not in ("write", "read-then-write"):
        raise InputError(f"--access {access!r}: use write or read-then-write")
    if madvise and nohugepage:
        raise InputError("--madvise and --nohugepage exclude each other (MADV_HUGEPAGE vs MADV_NOHUGEPAGE)")
    if vma_size <= 0 or vma_size % page:
        raise InputError(f"--vma-size {vma_size} must be a positive multiple of the {fmt_size(page)} page")
    stride = touch_stride or page
    if stride <= 0:
        raise InputError("--touch-stride must be greater than zero")
    if prepopulated_stride is not None and prepopulated_stride <= 0:
        raise InputError("--prepopulated-stride must be greater than zero")
    default_start = vma_start is None
    if default_start:
        # Like pgtable: aligned to the span of the smallest table that holds the VMA (PMD at least).
        spans_up = [profile.table_span_bytes(lvl.name) for lvl in profile.levels[1:]]
        vma_start = max(min([x for x in spans_up if x >= vma_size], default=max(spans_up)), pmd)
    start = vma_start
    if start % page:
        raise InputError(f"--vma-start {start:#x} is not aligned to the {fmt_size(page)} page")
    if start + vma_size > profile.user_va_bytes:
        raise InputError(f"the VMA [{start:#x}, {start + vma_size:#x}) does not fit in {profile.name}'s user "
                         f"address space ({fmt_bytes(profile.user_va_bytes)})")
    if file_offset % page:
        raise InputError(f"--file-offset {file_offset} is not a multiple of the {fmt_size(page)} page")
    end = start + vma_size
    notes: list[str] = []
    explain: list[Derivation] = []
    shmem = memory != "anon"
    if default_start and not shmem and not kernel_pmd_aligns_anon_mmap(profile, release, vma_size):
        notes.append(f"the start here is aligned, but mmap() of {fmt_size(vma_size)} on {release} is not placed "
                     "PMD-aligned by the kernel (" + (THP_ALIGN_PMD_MULTIPLES.cite if release.has(THP_ALIGN_ANON)
                                                     else THP_ALIGN_ANON.cite)
                     + "): pass --vma-start to model the address a program really gets")

    # --- which orders a fault may get ---
    anon_modes = {o: "never" for o in anon_orders(profile)}
    anon_modes[P] = "inherit"  # transhuge.rst: PMD size inherits, the other sizes are off
    anon_modes.update(parse_modes(profile, list(enabled), anon_orders(profile), ANON_MODES, "--enabled",
                                  "THP_ORDERS_ALL_ANON excludes order 1"))
    shm_modes = {o: "never" for o in file_orders(profile)}
    if P in shm_modes:
        shm_modes[P] = "inherit"
    shm_modes.update(parse_modes(profile, list(shmem_enabled), file_orders(profile), SHMEM_MODES,
                                 "--shmem-enabled", "THP_ORDERS_ALL_FILE_DEFAULT: orders 1..MAX_PAGECACHE_ORDER"))
    allowed: set[int] = set()
    # The top-level switch that per-size "inherit" follows: enabled (anon), or shmem_enabled / huge=.
    shmem_global_on = huge in ("always", "within_size") or (huge == "advise" and madvise)
    if nohugepage:
        why = "MADV_NOHUGEPAGE: vma_thp_disabled() allows no THP"
    elif not shmem:
        allowed = _allowed(anon_modes, ("always",), "madvise", madvise,
                           top_level == "always" or (madvise and top_level != "never"))
        if not release.has(MTHP_ANON):
            allowed &= {P}
            if any(o != P and m != "never" for o, m in anon_modes.items()):
                notes.append(f"kernel {release} has no multi-size THP (added in 6.8): sizes below "
                             f"{fmt_size(pmd)} do not exist there; only PMD-size THP applies")
        why = _why(page, "thp_vma_allowable_orders(): top-level " + top_level, madvise, anon_modes)
    else:
        if memory == "tmpfs":
            # shmem_allowable_huge_orders(): a tmpfs mount uses its huge= orders; per-size knobs are for anon shmem.
            if shmem_global_on:
                allowed = set(file_orders(profile)) if release.has(TMPFS_MTHP) else ({P} & set(file_orders(profile)))
            why = f"tmpfs huge={huge}" + ("" if release.has(TMPFS_MTHP) else f" (kernel {release}: PMD order only)")
        else:
            allowed = _allowed(shm_modes, ("always", "within_size"), "advise", madvise, shmem_global_on)
            if not release.has(SHMEM_MTHP):
                allowed &= {P}
                if any(o != P and m != "never" for o, m in shm_modes.items()):
                    notes.append(f"kernel {release} has no per-size shmem THP (added in 6.11): only PMD-size applies")
            why = _why(page, "shmem_allowable_huge_orders(): shmem_enabled " + huge, madvise, shm_modes)
        if huge == "within_size" or "within_size" in shm_modes.values():
            notes.append("within_size: the file is taken to end where the VMA ends, so every order that fits "
                         "the VMA also fits i_size")
        # thp_vma_suitable_order() for files: (vm_start >> PAGE_SHIFT) - vm_pgoff aligned to the order.
        misaligned = {o for o in allowed if ((start - file_offset) // page) % (1 << o)}
        if misaligned:
            notes.append("file offset and VMA start disagree in alignment for "
                         + ", ".join(fmt_size(page << o) for o in sorted(misaligned)) + ": those sizes are never used")
            allowed -= misaligned
    order_mask = sum(1 << o for o in allowed if o < P)
    pmd_ok = P in allowed
    explain.append(Derivation(scope="orders", figure="sizes a fault may get",
                              formula=(", ".join(fmt_size(page << o) for o in sorted(allowed)) or "base pages only")
                              + f" ({why})",
                              rule="thp_vma_allowable_orders() in include/linux/huge_mm.h" if not shmem else
                              "shmem_allowable_huge_orders() in mm/shmem.c"))

    # --- the walk ---
    names = [lvl.name for lvl in profile.levels]
    levels = list(reversed(names[1:]))  # pte first
    out_folios = np.zeros(P + 1, dtype=np.int64)
    out = np.zeros(6, dtype=np.int64)
    pre_stride = prepopulated_stride or 0
    cont = profile.cont_pte_entries if profile.cont_pte_entries > 1 else profile.tlb_coalesce_pages
    huge_zero_thp = release.has(HUGE_ZERO_WP_THP)
    call(_fault_walk, start, end, page, pmd, stride, pre_stride, order_mask, pmd_ok, shmem,
         access == "read-then-write", huge_zero_thp, cont, out_folios, out)
    tables = [int(out[5])] + [int(call(_upper_tables, start, end, profile.table_span_bytes(n), stride, pre_stride))
                              for n in levels[1:]]
    n_pre = (end - 1 - start) // pre_stride + 1 if pre_stride else 0
    n_touch = (end - 1 - start) // stride + 1
    touched = _stride_blocks(start, n_touch, stride, page) * page
    rows = [_level_row(profile, release, name, tables[i]) for i, name in enumerate(levels)]
    rows.reverse()
    folios = [FolioCount(size_bytes=page << o, count=int(c)) for o, c in enumerate(out_folios) if c]
    read_faults, write_faults = int(out[0]), int(out[1])
    populated, largest = int(out[2]), int(out[4])
    clear_s = largest / (profile.costs.clear_gib_per_s * (1 << 30))

    if access == "read-then-write" and not shmem:
        explain.append(Derivation(
            scope="faults", figure="read-then-write",
            formula="a read fault maps the zero page; the write then copies it into an order-0 folio "
                    + ("(a huge zero page is replaced by a PMD THP)" if huge_zero_thp else
                       "(a huge zero page is split and every written page copied at order 0)"),
            rule="do_anonymous_page(), wp_page_copy() in mm/memory.c; " + HUGE_ZERO_WP_THP.cite))
    explain.append(Derivation(
        scope="faults", figure="faults",
        formula=f"{read_faults:,} read + {write_faults:,} write: one per folio "
                + ("(mapped whole by finish_fault())" if shmem else "(alloc_anon_folio() maps it at once)")
                + (f", and none on the {n_pre:,} prepopulated pages" if pre_stride else ""),
        rule="alloc_anon_folio() in mm/memory.c" if not shmem else "shmem_fault() and finish_fault()"))
    if shmem and access == "read-then-write":
        explain.append(Derivation(
            scope="faults", figure="fault-around",
            formula=f"read faults first map pages already in the page cache within fault_around_bytes = "
                    f"{FAULT_AROUND_BYTES} ({fault_around_pages(profile)} pages), clamped to the VMA and PTE "
                    "table; the pass meets fresh memory, so there are none and each fault allocates its folio",
            rule="do_read_fault() / do_fault_around() in mm/memory.c"))
    explain.append(Derivation(
        scope="tlb", figure="last-level TLB entries",
        formula=f"one per PMD leaf, one per {cont}-page contiguous block inside a folio at least that large, "
                "else one per page; counted where the pass touched" if cont > 1 else
                "one per PMD leaf, else one per page touched",
        rule="arm64 contpte (arch/arm64/mm/contpte.c)" if profile.cont_pte_entries > 1 else
        "no kernel-managed contiguous bit" + (" (hardware PTE coalescing assumed)" if cont > 1 else "")))
    explain.append(Derivation(
        scope="latency", figure="largest single fault",
        formula=f"clears {fmt_bytes(largest)} at {profile.costs.clear_gib_per_s:g} GiB/s = {clear_s * 1e6:.1f} us",
        rule="folio_zero_user() / clear_huge_page() zero a new folio inside the fault"))

    designs = None
    if khugepaged:
        if shmem:
            raise InputError("--khugepaged models anonymous memory: mTHP collapse is for anon VMAs")
        if occupancy is None:
            if not pre_stride:
                raise InputError("--khugepaged needs the occupancy: --prepopulated-stride or --occupancy-file")
            occupancy = prepopulated_bitmaps(profile, start, end, pre_stride)
        designs = compute_khugepaged(profile, occupancy, allowed, max_ptes_none)
        notes.append("khugepaged mTHP collapse is not in a released kernel (" + KHUGEPAGED_SERIES + ")")
    inputs = {
        "memory": memory, "vma_size_bytes": vma_size, "vma_start": start, "file_offset_bytes": file_offset,
        "touch_stride_bytes": stride, "prepopulated_stride_bytes": prepopulated_stride, "access": access,
        "top_level": top_level, "madvise": madvise, "nohugepage": nohugepage, "huge": huge,
        "enabled": {fmt_size(page << o): m for o, m in sorted(anon_modes.items())},
        "shmem_enabled": {fmt_size(page << o): m for o, m in sorted(shm_modes.items())},
    }
    return MthpResult(
        profile=profile.name, kernel=str(release), inputs=inputs,
        faults=read_faults + write_faults, read_faults=read_faults, write_faults=write_faults,
        folios=folios, fault_orders_bytes=[page << o for o in sorted(allowed)],
        tlb_entries=int(out[3]), tables={r.level: r.tables for r in rows},
        page_table_bytes=vmpte_bytes(profile, rows), populated_bytes=populated, touched_bytes=touched,
        bloat=populated / touched if touched else 0.0, largest_fault_clear_bytes=largest,
        largest_fault_clear_seconds=clear_s, khugepaged=designs, notes=notes, explain=explain,
    )


def compare_sizes(profile: Profile, release: Release, **kw) -> MthpComparison:
    """Every size the profile supports, each alone (others off), side by side, and base pages."""
    shmem = kw.get("memory", "anon") != "anon"
    orders = file_orders(profile) if shmem else anon_orders(profile)
    P = pmd_order(profile)
    rows = []
    base = None
    for o in [None] + orders:
        modes = [(profile.page_size << x, "always" if x == o else "never") for x in orders]
        key = "shmem_enabled" if shmem else "enabled"
        extra = {"huge": "never"} if shmem else {}
        r = compute_mthp(profile, release, **{**kw, key: modes, **extra})
        base = base or r
        rows.append(SizeRow(size_bytes=profile.page_size << (o or 0), faults=r.faults,
                            folios=sum(f.count for f in r.folios), tlb_entries=r.tlb_entries,
                            page_table_bytes=r.page_table_bytes, populated_bytes=r.populated_bytes,
                            bloat=r.bloat, largest_fault_clear_seconds=r.largest_fault_clear_seconds))
    notes = [f"each size alone ({'shmem_enabled' if shmem else 'enabled'}=always, every other size never); "
             f"the first row is base pages only"]
    if P not in orders:
        notes.append(f"the PMD size {fmt_size(profile.pmd_size)} is above MAX_PAGECACHE_ORDER for shmem here")
    return MthpComparison(profile=profile.name, kernel=str(release), inputs=base.inputs, sizes=rows, notes=notes)
