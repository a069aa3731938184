"""Replay a record (``hugecalc record``) under THP settings: the true fault sequence, with the VMAs
as they stood at each fault.

Every recorded fault is a base-page fault (the program ran with THP disabled), so it names the
first touch of a page, or a write to a page a read mapped to the zero page.  Replayed under other
settings, a fault on a page not yet present allocates the folio the kernel would allocate there
at that moment; a fault on a page an earlier, larger folio already mapped is no fault at all.

Kernel reference
----------------
``do_anonymous_page()``: a read fault maps the zero page (order 0; ``use_zero_page``), a write
fault allocates ``alloc_anon_folio()``'s folio: the highest allowed order whose aligned range lies
inside the VMA and is ``pte_range_none()``; ``__handle_mm_fault()``/``create_huge_pmd()``: the PMD
order only while ``pmd_none()``, a read maps the huge zero page; ``wp_page_copy()`` copies a
written zero page at order 0; ``do_huge_zero_wp_pmd()`` (v6.13) replaces a written huge zero page
with a PMD THP, before it the PMD is split and the page copied; ``shmem_fault()`` allocates for
reads too; ``thp_vma_allowable_orders()`` and its VM_HUGEPAGE/VM_NOHUGEPAGE and MAP_STACK rules.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hugecalc.calc import pages
from hugecalc.calc.addrspace import (MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_HUGETLB, MAP_SHARED,
                                     MAP_STACK, MREMAP_DONTUNMAP, AddressSpace, Vma)
from hugecalc.calc.orders import PassShape, ThpSettings, allowed_orders, pass_settings
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import HUGE_ZERO_WP_THP, PT_RECLAIM, Release

CLONE_VM = 0x100
MADV_DONTNEED, MADV_REMOVE, MADV_HUGEPAGE, MADV_NOHUGEPAGE = 4, 9, 14, 15
#: madvise() advice that sets (or clears) a vm_flag, and so splits the VMA and keeps it from
#: merging with neighbours without it (madvise_update_vma()).
MADV_FLAGS = {10: ("dontcopy", None), 11: (None, "dontcopy"), 12: ("mergeable", None), 13: (None, "mergeable"),
              16: ("dontdump", None), 17: (None, "dontdump"), 18: ("wipeonfork", None), 19: (None, "wipeonfork")}
ANON = ("anon", "heap")


def vma_key(vma: Vma) -> tuple | None:
    """What thp_vma_allowable_orders() reads of a VMA: its flags (an anonymous VMA's bounds do not
    matter: the fault loop checks that a folio fits), and for shmem its bounds too
    (thp_vma_suitable_order()); None for a VMA no THP rule applies to, and for one registered with
    userfaultfd: a fault there gets a base page (alloc_anon_folio(): "if (unlikely(userfaultfd_armed(vma)))
    goto fallback"; a PMD fault is handed to the handler, handle_userfault(), which fills base pages)."""
    if vma.kind not in (*ANON, "shmem") or vma.uffd:  # userfaultfd_armed(): alloc_anon_folio() falls back
        return None
    return (vma.kind in ANON, vma.hugepage, vma.nohugepage, vma.stack,
            None if vma.kind in ANON else (vma.start, vma.end))


def allowed_mask(profile: Profile, release: Release, settings: ThpSettings, vma: Vma) -> int:
    """thp_vma_allowable_orders() for this VMA under ``settings``, as a bit mask of orders."""
    shape = PassShape(memory="anon" if vma.kind in ANON else "shmem", vma_size=vma.end - vma.start,
                      vma_start=vma.start, madvise=vma.hugepage and not vma.nohugepage,
                      nohugepage=vma.nohugepage, stack=vma.stack and vma.kind in ANON)
    p = pass_settings(profile, release, shape, settings, [])
    return sum(1 << o for o in allowed_orders(profile, release, p, [], reason=False)[0])


class Process:
    """One address space being replayed, and what its faults did."""

    def __init__(self, tgid: int, profile: Profile, release: Release, settings: ThpSettings, new_pages: Callable,
                 keys: dict | None = None) -> None:
        self.tgid, self.profile, self.release, self.settings = tgid, profile, release, settings
        self.space = AddressSpace(profile.page_size, profile.pmd_size, new_pages(profile.page_size, profile.pmd_size))
        self.counts = np.zeros(7, np.int64)  # pages.FAULTS, READS, WRITES, ZERO_MAPS, PEAK, MAX_ORDER, USED
        self.thp_disabled = False  # prctl(PR_SET_THP_DISABLE): kept across fork and exec
        #: every VMA key seen -> (its number, the first VMA with it): shared by a replay's processes
        self.keys = {} if keys is None else keys
        self._orders: dict[tuple, int] = {}
        self._table: tuple = ()
        self._table_key: tuple = ()

    # --- which orders a fault in this VMA may get ------------------------------------------

    def key_id(self, vma: Vma) -> int:
        """The VMA's key (:func:`vma_key`) as a number; -1 when no THP rule applies, also in a
        process that set PR_SET_THP_DISABLE (vma_thp_disabled())."""
        key = vma_key(vma)
        if self.thp_disabled or key is None:
            return -1
        if key not in self.keys:
            self.keys[key] = (len(self.keys), vma)
        return self.keys[key][0]

    def orders(self, vma: Vma) -> int:
        """thp_vma_allowable_orders() for this VMA as it stands, as a bit mask (cached per key)."""
        key = vma_key(vma)
        if self.thp_disabled or key is None:
            return 0
        if key not in self._orders:
            self._orders[key] = allowed_mask(self.profile, self.release, self.settings, vma)
        return self._orders[key]

    def vma_table(self) -> tuple:
        """The VMAs as the fault loop reads them: starts, ends, allowed orders, kinds, key numbers
        (rebuilt only when the VMAs or the process's THP switch changed)."""
        key = (self.space.version, self.thp_disabled)
        if key != self._table_key:
            vmas = self.space.vmas
            kinds = [pages.ANON if v.kind in ANON else pages.SHMEM if v.kind == "shmem" else pages.OTHER
                     for v in vmas]
            self._table = (np.array([v.start for v in vmas], np.int64), np.array([v.end for v in vmas], np.int64),
                           np.array([self.orders(v) for v in vmas], np.int64), np.array(kinds, np.int64),
                           np.array([self.key_id(v) for v in vmas], np.int64))
            self._table_key = key
        return self._table

    # --- faults -----------------------------------------------------------------------------

    def faults(self, addrs: np.ndarray, errors: np.ndarray, lo: int, hi: int) -> None:
        """Recorded faults ``lo..hi-1`` of this process, in order (``pages.fault_run``)."""
        vmas = self.vma_table()
        faulted = np.zeros(len(vmas[0]), np.int64)
        self.space.pages.fault_run(addrs, errors, lo, hi, vmas, faulted, self.counts,
                                   self.release.has(HUGE_ZERO_WP_THP))
        for i in np.flatnonzero(faulted).tolist():
            self.space.faulted(i)

    @property
    def peak_populated(self) -> int:
        return int(self.counts[pages.PEAK])

    def populated_bytes(self) -> int:
        return self.space.pages.populated_pages * self.profile.page_size

    def khugepaged_ranges(self) -> list[tuple[np.ndarray, int, set[int]]]:
        """What khugepaged scans now: each PMD range wholly inside an anonymous VMA that THP allows,
        mapped by a PTE table (``hpage_collapse_scan_pmd()``; a PMD-mapped range is huge already, one
        without a table is SCAN_PMD_NULL), as (its present PTEs, 1, the VMA's allowed orders). The
        zero page counts as none (``is_zero_pfn()``)."""
        pg = self.space.pages
        span = self.profile.pmd_size
        out = []
        for block in sorted(int(b) for b in pg.pte.keys()):
            vma = self.space.find(block * span)
            if vma is None or vma.kind not in ANON or vma.end < (block + 1) * span or block in pg.pmd:
                continue
            mask = self.orders(vma)
            if mask:
                row = pg.rows.get(block)
                bits = np.asarray(row[:pg.n]) >= 0 if row is not None else np.zeros(pg.n, bool)
                out.append((bits, 1, {o for o in range(mask.bit_length()) if mask >> o & 1}))
        return out

    # --- the address space ------------------------------------------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int) -> None:
        end = addr + _page_up(length, self.profile.page_size)
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            self.space.unmap(addr, end)
        if flags & MAP_HUGETLB:
            kind = "hugetlb"
        elif flags & MAP_ANONYMOUS:
            kind = "shmem" if flags & MAP_SHARED else "anon"
        else:
            kind = "file"
        self.space.insert(Vma(addr, end, kind, prot=prot, stack=bool(flags & MAP_STACK), pgoff=addr))

    def attach_vma(self, start: int, end: int, prot: int, kind: str, hugepage: bool, nohugepage: bool) -> None:
        """A mapping the process had when the record attached to it; the heap's end is its break."""
        self.space.insert(Vma(start, end, kind, prot=prot, hugepage=hugepage, nohugepage=nohugepage, pgoff=start))
        if kind == "heap":
            if self.space.brk_start is None:
                self.space.brk_start = start
            self.space.brk = end

    def uffd(self, start: int, end: int, armed: bool) -> None:
        """The userfaultfd-registered ranges: none from now on (``armed`` False), or [start, end) one."""
        if armed:
            self.space.change(start, end, uffd=True)
            return
        for v in [v for v in self.space.vmas if v.uffd]:
            self.space.change(v.start, v.end, uffd=False)

    def brk(self, new: int) -> None:
        """brk() (mm/mmap.c): the heap VMA ends at PAGE_ALIGN(mm->brk); growing adds
        [PAGE_ALIGN(old), PAGE_ALIGN(new)) with do_brk_flags(), which extends the heap's last VMA
        when it can merge; shrinking unmaps [PAGE_ALIGN(new), PAGE_ALIGN(old))."""
        space, page = self.space, self.profile.page_size
        if space.brk_start is None:  # the first brk() the record saw: the heap starts there
            space.brk_start = space.brk = new
            return
        old_end, new_end = _page_up(space.brk, page), _page_up(new, page)
        if new_end > old_end:
            space.insert(Vma(old_end, new_end, "heap", pgoff=old_end))
        elif new_end < old_end:
            space.unmap(new_end, old_end)
        space.brk = new

    def mremap(self, old: int, old_len: int, new_len: int, flags: int, new: int) -> None:
        page = self.profile.page_size
        old_len, new_len = _page_up(old_len, page), _page_up(new_len, page)
        vma = self.space.find(old)
        if vma is None:
            return
        if new == old:
            if new_len < old_len:
                self.space.unmap(old + new_len, old + old_len)
            elif new_len > old_len:  # grown in place: vma_expand()
                self.space.insert(Vma(old + old_len, old + new_len, vma.kind, vma.prot, vma.hugepage,
                                      vma.nohugepage, vma.stack, pgoff=vma.pgoff + (old + old_len - vma.start),
                                      anon_vma=vma.anon_vma))
            return
        kept = min(old_len, new_len)
        self.space.unmap(new, new + new_len)
        self.space.move(old, new, kept)
        if old_len > kept:
            self.space.zap(old + kept, old + old_len)
        self.space.split_out(old, old + old_len)
        if flags & MREMAP_DONTUNMAP:
            self.space.insert(vma.part(old, old + old_len))
        moved = vma.part(old, old + new_len)  # move_vma(): it keeps its vm_pgoff and anon_vma
        self.space.insert(Vma(new, new + new_len, vma.kind, vma.prot, vma.hugepage, vma.nohugepage, vma.stack,
                              pgoff=moved.pgoff, anon_vma=vma.anon_vma))
        self.space.free_tables(old, old + old_len)

    def madvise(self, start: int, length: int, advice: int) -> None:
        end = start + _page_up(length, self.profile.page_size)
        if advice in (MADV_DONTNEED, MADV_REMOVE):
            self.space.zap(start, end)
            pmd = self.profile.pmd_size
            lo, hi = _page_up(start, pmd), end // pmd * pmd
            if self.release.has(PT_RECLAIM, self.profile.arch.value) and hi > lo:
                # wholly zapped PMD ranges lose their empty table (zap_pte_range() → try_to_free_pte())
                self.space.pages.discard_tables(self.space.pages.empty_blocks(lo, hi))
        elif advice == MADV_HUGEPAGE:
            self.space.change(start, end, hugepage=True, nohugepage=False)
        elif advice == MADV_NOHUGEPAGE:
            self.space.change(start, end, hugepage=False, nohugepage=True)
        elif advice in MADV_FLAGS:
            set_flag, clear_flag = MADV_FLAGS[advice]
            self.space.change(start, end, set_flag=set_flag, clear_flag=clear_flag)


def _page_up(n: int, page: int) -> int:
    return -(-n // page) * page


def check_record(profile: Profile, meta: dict) -> None:
    """A record replays on a profile with its page size."""
    if meta.get("page_size") != profile.page_size:
        raise InputError(f"the record was made with {meta.get('page_size')}-byte pages, profile {profile.name} has "
                         f"{profile.page_size}: replay it with the profile of the machine it came from",
                         field="trace")
