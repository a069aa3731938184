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

from hugecalc.calc.addrspace import (HUGE_ZERO, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_HUGETLB,
                                     MAP_SHARED, MAP_STACK, MREMAP_DONTUNMAP, ZERO, AddressSpace, Vma)
from hugecalc.calc.orders import PassShape, ThpSettings, allowed_orders, pass_settings, pmd_order
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


class Process:
    """One address space being replayed, and what its faults did."""

    def __init__(self, tgid: int, profile: Profile, release: Release, settings: ThpSettings) -> None:
        self.tgid, self.profile, self.release, self.settings = tgid, profile, release, settings
        self.space = AddressSpace(profile.page_size, profile.pmd_size)
        self.faults = self.read_faults = self.write_faults = 0
        self.zero_maps = 0
        self.peak_populated = 0  # pages
        self.thp_disabled = False  # prctl(PR_SET_THP_DISABLE): kept across fork and exec
        self._orders: dict[Vma, set[int]] = {}

    # --- which orders a fault in this VMA may get ------------------------------------------

    def orders(self, vma: Vma) -> set[int]:
        """thp_vma_allowable_orders() for this VMA as it stands (cached per VMA); none at all in a
        process that set PR_SET_THP_DISABLE (vma_thp_disabled())."""
        if self.thp_disabled:
            return set()
        if vma not in self._orders:
            if vma.kind not in (*ANON, "shmem"):
                self._orders[vma] = set()
            else:
                shape = PassShape(memory="anon" if vma.kind in ANON else "shmem", vma_size=vma.end - vma.start,
                                  vma_start=vma.start, madvise=vma.hugepage and not vma.nohugepage,
                                  nohugepage=vma.nohugepage, stack=vma.stack and vma.kind in ANON)
                p = pass_settings(self.profile, self.release, shape, self.settings, [])
                self._orders[vma] = allowed_orders(self.profile, self.release, p, [])[0]
        return self._orders[vma]

    def _fits(self, vma: Vma, first: int, order: int) -> bool:
        """The order's aligned range lies inside the VMA and none of its pages is present."""
        page = self.profile.page_size
        if first * page < vma.start or (first + (1 << order)) * page > vma.end:
            return False
        pages = self.space.pages
        return not any(p in pages for p in range(first, first + (1 << order)))

    def _order(self, vma: Vma, p: int) -> int:
        """The order alloc_anon_folio() (or the PMD path) gives a fault on page ``p``, and maps it."""
        P = pmd_order(self.profile)
        allowed = self.orders(vma)
        block = p >> P
        if P in allowed and block not in self.space.pte_tables and block not in self.space.pmd_mapped \
                and self._fits(vma, block << P, P):
            return P
        for order in sorted((o for o in allowed if o < P), reverse=True):
            if self._fits(vma, p & ~((1 << order) - 1), order):
                return order
        return 0

    # --- faults -----------------------------------------------------------------------------

    def fault(self, addr: int, write: bool) -> None:
        page = self.profile.page_size
        p = addr // page
        vma = self.space.find(addr)
        state = self.space.pages.get(p)
        if vma is None or vma.kind not in (*ANON, "shmem"):
            if state is None:  # a file, hugetlb or unknown mapping: the page, as the record had it
                self.space.pages[p] = ZERO if not write else self._new_base(p)
                self.space.pte_tables.add(p >> pmd_order(self.profile))
            return
        if state is None:
            self._first_touch(self.space.faulted(vma) if vma.kind in ANON else vma, p, write)
        elif write and state in (ZERO, HUGE_ZERO):
            self._write_zero(vma, p, state)

    def _new_base(self, p: int) -> int:
        self.space.map_folio(p, 0, anon=False)
        return self.space.pages[p]

    def _first_touch(self, vma: Vma, p: int, write: bool) -> None:
        P = pmd_order(self.profile)
        space = self.space
        self.faults += 1
        self.write_faults += write
        self.read_faults += not write
        order = self._order(vma, p)
        if not write and vma.kind in ANON:  # do_anonymous_page(): the zero page (huge: at the PMD)
            self.zero_maps += 1
            if order == P:
                block = p >> P
                for q in range(block << P, (block + 1) << P):
                    space.pages[q] = HUGE_ZERO
                space.pmd_mapped[block] = HUGE_ZERO
                space.pte_tables.add(block)  # pgtable_trans_huge_deposit()
            else:
                space.pages[p] = ZERO
                space.pte_tables.add(p >> P)
            return
        first = p & ~((1 << order) - 1)
        space.map_folio(first, order)
        if order == P:
            space.pmd_mapped[p >> P] = space.pages[first]
            if vma.kind in ANON:
                space.pte_tables.add(p >> P)  # the deposited table
        else:
            space.pte_tables.add(p >> P)
        self._count_peak()

    def _write_zero(self, vma: Vma, p: int, state: int) -> None:
        """A write to a page the zero page maps: wp_page_copy(), or for the huge zero page
        do_huge_zero_wp_pmd() (v6.13) / a split and a copy (before)."""
        P = pmd_order(self.profile)
        space = self.space
        self.faults += 1
        self.write_faults += 1
        block = p >> P
        if state == HUGE_ZERO and self.release.has(HUGE_ZERO_WP_THP):
            for q in range(block << P, (block + 1) << P):
                space.pages.pop(q, None)
            space.map_folio(block << P, P)
            space.pmd_mapped[block] = space.pages[block << P]
        else:
            if state == HUGE_ZERO:
                space.pmd_mapped.pop(block, None)  # split: every PTE maps the zero page
                for q in range(block << P, (block + 1) << P):
                    space.pages[q] = ZERO
            del space.pages[p]
            space.map_folio(p, 0)
        self._count_peak()

    def _count_peak(self) -> None:
        if self.space.populated_pages > self.peak_populated:
            self.peak_populated = self.space.populated_pages

    def populated_bytes(self) -> int:
        return self.space.populated_pages * self.profile.page_size

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

    def brk(self, new: int) -> None:
        space = self.space
        if space.brk_start is None:
            space.brk_start = space.brk = new
            return
        if new > space.brk:
            heap = space.find(space.brk_start) if space.brk > space.brk_start else None
            space.insert(Vma(space.brk_start, new, "heap", pgoff=space.brk_start,
                             anon_vma=heap.anon_vma if heap else None))
        elif new < space.brk:
            space.unmap(new, space.brk)
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
            if self.release.has(PT_RECLAIM, self.profile.arch.value):
                pmd = self.profile.pmd_size
                for block in range(-(-start // pmd), end // pmd):  # wholly zapped PMD ranges lose their table
                    if not any(q in self.space.pages for q in range(block * (pmd // self.profile.page_size),
                                                                    (block + 1) * (pmd // self.profile.page_size))):
                        self.space.pte_tables.discard(block)
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
