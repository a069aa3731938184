"""The obvious model of a replayed address space's pages: a dict from page to folio, a set of PTE
tables, a dict of PMD mappings, each fault rule written out as the kernel states it.  It has the
interface of ``hugecalc.calc.pages.Pages``; the tests swap it in and hold the compiled kernels to it.

Kernel rules: do_anonymous_page() (a read maps the zero page, a write allocates
alloc_anon_folio()'s folio: the highest allowed order whose aligned range lies inside the VMA and
is pte_range_none()); create_huge_pmd() (the PMD order only while pmd_none(); a read maps the huge
zero page and deposits a table); wp_page_copy(); do_huge_zero_wp_pmd() (6.13); shmem_fault()
allocates for reads; zap_pte_range() and __split_huge_pmd().
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

ZERO, HUGE_ZERO = -1, -2
ANON, SHMEM = 1, 2


@dataclass
class Folio:
    order: int
    mapped: int
    anon: bool


class ModelPages:
    def __init__(self, page_size: int, pmd_size: int, compiled: bool = False) -> None:
        self.page, self.pmd_size, self.compiled = page_size, pmd_size, compiled
        self.P = (pmd_size // page_size).bit_length() - 1
        self.pages: dict[int, int] = {}
        self.folios: dict[int, Folio] = {}
        self.pte: set[int] = set()
        self.pmd: dict[int, int] = {}
        self.next_folio = 0
        self.populated_pages = 0  # pages of anonymous (and shmem) folios mapped in part or whole

    def copy(self) -> ModelPages:
        child = ModelPages(self.page, self.pmd_size)
        child.pages, child.pte, child.pmd = dict(self.pages), set(self.pte), dict(self.pmd)
        child.folios = {i: Folio(f.order, f.mapped, f.anon) for i, f in self.folios.items()}
        child.next_folio, child.populated_pages = self.next_folio, self.populated_pages
        return child

    # --- faults -------------------------------------------------------------------------------

    def fault_run(self, addrs, errors, lo, hi, vmas, faulted, counts, wp_thp) -> None:
        starts, ends, orders, kinds = vmas[:4]
        for i in range(lo, hi):
            addr, write = int(addrs[i]), bool(errors[i] & 2)
            k = bisect.bisect_right(starts.tolist(), addr) - 1
            j = k if k >= 0 and addr < ends[k] else None
            self._fault(addr // self.page, write, j, vmas, faulted, counts, wp_thp)

    def _fault(self, p, write, j, vmas, faulted, counts, wp_thp) -> None:
        starts, ends, orders, kinds = vmas[:4]
        state = self.pages.get(p)
        if j is None or kinds[j] not in (ANON, SHMEM):
            if state is None:  # a file, hugetlb or unknown mapping: the page as the record had it
                self.pages[p] = ZERO if not write else self._map(p, 0, anon=False)
                self.pte.add(p >> self.P)
            return
        if state is None:
            if kinds[j] == ANON:
                faulted[j] = 1
            self._first_touch(p, write, int(kinds[j]), int(orders[j]), int(starts[j]), int(ends[j]), counts)
        elif write and state in (ZERO, HUGE_ZERO):
            self._write_zero(p, state, counts, wp_thp)
        counts[4] = max(counts[4], self.populated_pages)

    def _fits(self, first, order, start, end) -> bool:
        return (first * self.page >= start and (first + (1 << order)) * self.page <= end
                and not any(q in self.pages for q in range(first, first + (1 << order))))

    def _order(self, p, allowed, start, end) -> int:
        P, block = self.P, p >> self.P
        if allowed >> P & 1 and block not in self.pte and block not in self.pmd and self._fits(block << P, P, start, end):
            return P
        for order in range(P - 1, 0, -1):
            if allowed >> order & 1 and self._fits(p & ~((1 << order) - 1), order, start, end):
                return order
        return 0

    def _map(self, first, order, anon=True) -> int:
        fid = self.next_folio
        self.next_folio += 1
        self.folios[fid] = Folio(order, 1 << order, anon)
        self.populated_pages += (1 << order) if anon else 0
        for q in range(first, first + (1 << order)):
            self.pages[q] = fid
        return fid

    def _first_touch(self, p, write, kind, allowed, start, end, counts) -> None:
        P, block = self.P, p >> self.P
        counts[0] += 1
        counts[2 if write else 1] += 1
        order = self._order(p, allowed, start, end)
        if not write and kind == ANON:
            counts[3] += 1
            if order == P:
                for q in range(block << P, (block + 1) << P):
                    self.pages[q] = HUGE_ZERO
                self.pmd[block] = HUGE_ZERO
            else:
                self.pages[p] = ZERO
            self.pte.add(block)
            return
        fid = self._map(p & ~((1 << order) - 1), order)
        if order == P:
            self.pmd[block] = fid
        if order != P or kind == ANON:
            self.pte.add(block)

    def _write_zero(self, p, state, counts, wp_thp) -> None:
        P, block = self.P, p >> self.P
        counts[0] += 1
        counts[2] += 1
        if state == HUGE_ZERO and wp_thp:
            for q in range(block << P, (block + 1) << P):
                self.pages.pop(q, None)
            self.pmd[block] = self._map(block << P, P)
            return
        if state == HUGE_ZERO:
            self.pmd.pop(block, None)
            for q in range(block << P, (block + 1) << P):
                self.pages[q] = ZERO
        del self.pages[p]
        self._map(p, 0)

    # --- unmapping ----------------------------------------------------------------------------

    def _unmap_page(self, p) -> None:
        fid = self.pages.pop(p, None)
        if fid is not None and fid >= 0:
            self.folios[fid].mapped -= 1
            if self.folios[fid].mapped == 0:
                self.populated_pages -= (1 << self.folios[fid].order) if self.folios[fid].anon else 0
                del self.folios[fid]

    def zap(self, start, end) -> None:
        first, last = start // self.page, end // self.page
        if last <= first:
            return
        n = 1 << self.P
        for block in range(first // n, (last - 1) // n + 1):
            if block in self.pmd:
                del self.pmd[block]
                if first <= block * n and last >= (block + 1) * n:
                    self.pte.discard(block)
        for p in [p for p in self.pages if first <= p < last]:
            self._unmap_page(p)

    def empty_blocks(self, start, end) -> np.ndarray:
        n = 1 << self.P
        blocks = range(start // self.pmd_size, (end - 1) // self.pmd_size + 1)
        return np.array([b for b in blocks if b in self.pte
                         and not any(q in self.pages for q in range(b * n, (b + 1) * n))], dtype=np.int64)

    def discard_tables(self, blocks) -> None:
        for b in blocks:
            self.pte.discard(int(b))

    def move(self, old, new, length) -> None:
        shift, n = (new - old) // self.page, 1 << self.P
        moved = {p: f for p, f in self.pages.items() if old // self.page <= p < (old + length) // self.page}
        for p in moved:
            del self.pages[p]
        for p, f in moved.items():
            self.pages[p + shift] = f
            self.pte.add((p + shift) // n)
        for block in [b for b in self.pmd if old // self.pmd_size <= b < (old + length) // self.pmd_size]:
            fid = self.pmd.pop(block)
            if (new - old) % self.pmd_size == 0:
                self.pmd[block + (new - old) // self.pmd_size] = fid

    # --- the end state ------------------------------------------------------------------------

    def folio_orders(self) -> np.ndarray:
        out = np.zeros(64, np.int64)
        for f in self.folios.values():
            if f.anon:
                out[f.order] += 1
        return out

    def tlb_entries(self, cont) -> int:
        units = set()
        for p, fid in self.pages.items():
            if fid >= 0 and not self.folios[fid].anon:
                continue
            if p >> self.P in self.pmd:
                units.add(("pmd", p >> self.P))
            elif fid >= 0 and cont > 1 and 1 << self.folios[fid].order >= cont:
                units.add(("cont", p // cont))
            else:
                units.add(("page", p))
        return len(units)

    def table_blocks(self):
        return np.array(sorted(self.pte | set(self.pmd)), dtype=np.int64), len(self.pte)
