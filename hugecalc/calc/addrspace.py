"""One process's address space as a record replays it: its VMAs as the kernel splits and merges
them, and its present pages, each mapped to a folio, the zero page or the huge zero page.

Kernel reference
----------------
``do_mmap()``/``mmap_region()`` (a MAP_FIXED mapping replaces what was there; a new anonymous
mapping merges with an adjacent compatible one: ``vma_merge_new_range()``), ``do_vmi_munmap()``
and ``free_pgtables()`` (mm/vma.c, mm/memory.c), ``do_brk_flags()`` (mm/mmap.c), ``mremap()``
(mm/mremap.c), ``mprotect_fixup()`` and ``madvise_update_vma()`` (split and merge),
``zap_page_range_single()`` for MADV_DONTNEED; a PMD-mapped folio partly unmapped is split to PTEs
(``__split_huge_pmd()``), the folio itself stays large until it is freed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

ZERO, HUGE_ZERO = -1, -2  # a page mapped to the zero page, or to the huge zero page
MAP_SHARED, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE = 0x01, 0x20, 0x10, 0x100000
MAP_STACK, MAP_HUGETLB = 0x20000, 0x40000
MREMAP_DONTUNMAP = 4


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    kind: str  # anon, heap, shmem, file, hugetlb
    prot: int = 3
    hugepage: bool = False  # VM_HUGEPAGE (MADV_HUGEPAGE)
    nohugepage: bool = False  # VM_NOHUGEPAGE (MADV_NOHUGEPAGE)
    stack: bool = False  # mmap(MAP_STACK)
    advised: frozenset = frozenset()  # other vm_flags madvise() sets: dontcopy, dontdump, wipeonfork, mergeable
    pgoff: int = 0  # vm_pgoff, in bytes: an anonymous VMA's first address, kept when mremap() moves it
    anon_vma: int | None = None  # which anon_vma its pages hang off (None: not faulted yet)

    def mergeable(self, after: Vma) -> bool:
        """``after`` starts where this ends and vma_merge_new_range() would join them: same flags
        and protection, contiguous vm_pgoff, compatible anon_vma (is_mergeable_anon_vma())."""
        return (self.end == after.start and self.kind == after.kind and self.kind != "file"
                and (self.prot, self.hugepage, self.nohugepage, self.stack, self.advised) ==
                (after.prot, after.hugepage, after.nohugepage, after.stack, after.advised)
                and self.pgoff + (self.end - self.start) == after.pgoff
                and (self.anon_vma is None or after.anon_vma is None or self.anon_vma == after.anon_vma))

    def part(self, start: int, end: int) -> Vma:
        """[start, end) of this VMA split off: its vm_pgoff moves with its start."""
        return replace(self, start=start, end=end, pgoff=self.pgoff + (start - self.start))


@dataclass
class Folio:
    order: int
    mapped: int  # pages of it still mapped
    anon: bool = True  # anonymous or shmem memory (not a file's or an unknown mapping's copy)


class AddressSpace:
    """VMAs (sorted, not overlapping) and pages: page number -> folio id, ZERO or HUGE_ZERO."""

    def __init__(self, page: int, pmd: int) -> None:
        self.page, self.pmd = page, pmd
        self.pmd_pages = pmd // page
        self.vmas: list[Vma] = []
        self.pages: dict[int, int] = {}
        self.folios: dict[int, Folio] = {}
        self.pte_tables: set[int] = set()  # PMD blocks with a PTE table (deposited ones too)
        self.pmd_mapped: dict[int, int] = {}  # PMD block -> folio id or HUGE_ZERO mapped by one PMD
        self.brk_start: int | None = None
        self.brk: int | None = None
        self.next_folio = 0
        self.populated_pages = 0  # pages of anonymous folios mapped in part or whole
        self._starts: list[int] | None = None

    def copy(self) -> AddressSpace:
        """fork(): the child's copy (its anonymous pages shared, copy-on-write)."""
        child = AddressSpace(self.page, self.pmd)
        child.vmas, child.pages = list(self.vmas), dict(self.pages)
        child.folios = {i: Folio(f.order, f.mapped, f.anon) for i, f in self.folios.items()}
        child.pte_tables, child.pmd_mapped = set(self.pte_tables), dict(self.pmd_mapped)
        child.brk_start, child.brk, child.next_folio = self.brk_start, self.brk, self.next_folio
        child.populated_pages = self.populated_pages
        return child

    # --- VMAs ---------------------------------------------------------------------------------

    def find(self, addr: int) -> Vma | None:
        if self._starts is None:
            self._starts = [v.start for v in self.vmas]
        i = bisect.bisect_right(self._starts, addr) - 1
        return self.vmas[i] if i >= 0 and self.vmas[i].end > addr else None

    def split_out(self, start: int, end: int) -> list[Vma]:
        """Split the VMAs at ``start`` and ``end``; remove and return those inside."""
        self._starts = None
        keep, inside = [], []
        for v in self.vmas:
            if v.end <= start or v.start >= end:
                keep.append(v)
                continue
            if v.start < start:
                keep.append(v.part(v.start, start))
            if v.end > end:
                keep.append(v.part(end, v.end))
            inside.append(v.part(max(v.start, start), min(v.end, end)))
        self.vmas = sorted(keep, key=lambda v: v.start)
        return inside

    def insert(self, vma: Vma) -> None:
        """A new VMA, merged with compatible neighbours that touch it (vma_merge_new_range())."""
        self.split_out(vma.start, vma.end)
        i = bisect.bisect_left([v.start for v in self.vmas], vma.start)
        self.vmas.insert(i, vma)
        self._merge_around(i)

    def _merge_around(self, i: int) -> None:
        self._starts = None
        merged = self.vmas[i]
        if i + 1 < len(self.vmas) and merged.mergeable(self.vmas[i + 1]):
            after = self.vmas.pop(i + 1)
            merged = replace(merged, end=after.end, anon_vma=merged.anon_vma or after.anon_vma)
        if i > 0 and self.vmas[i - 1].mergeable(merged):
            before = self.vmas.pop(i - 1)
            merged = replace(before, end=merged.end, anon_vma=before.anon_vma or merged.anon_vma)
            i -= 1
        self.vmas[i] = merged

    def faulted(self, vma: Vma) -> Vma:
        """anon_vma_prepare(): the VMA's pages hang off an anon_vma from its first fault on."""
        if vma.anon_vma is not None:
            return vma
        self.next_folio += 1
        ready = replace(vma, anon_vma=self.next_folio)
        self.vmas[self.vmas.index(vma)] = ready
        return ready

    def change(self, start: int, end: int, set_flag: str | None = None, clear_flag: str | None = None,
               **attrs: object) -> None:
        """mprotect()/madvise(): the VMAs of [start, end) split off with new attributes, then merged."""
        for v in sorted(self.split_out(start, end), key=lambda v: v.start):
            advised = (v.advised | {set_flag} if set_flag else v.advised) - ({clear_flag} if clear_flag else set())
            changed = replace(v, advised=frozenset(advised), **attrs)
            i = bisect.bisect_left([w.start for w in self.vmas], changed.start)
            self.vmas.insert(i, changed)
            self._merge_around(i)

    # --- pages --------------------------------------------------------------------------------

    def map_folio(self, first: int, order: int, anon: bool = True) -> None:
        fid = self.next_folio
        self.next_folio += 1
        self.folios[fid] = Folio(order, 1 << order, anon)
        self.populated_pages += (1 << order) if anon else 0
        for p in range(first, first + (1 << order)):
            self.pages[p] = fid

    def unmap_page(self, p: int) -> None:
        fid = self.pages.pop(p, None)
        if fid is not None and fid >= 0:
            folio = self.folios[fid]
            folio.mapped -= 1
            if folio.mapped == 0:
                del self.folios[fid]
                self.populated_pages -= (1 << folio.order) if folio.anon else 0

    def zap(self, start: int, end: int) -> None:
        """The pages of [start, end) unmapped; a PMD mapping cut in part is split to PTEs first."""
        first, last = start // self.page, end // self.page
        for block in range(first // self.pmd_pages, (last - 1) // self.pmd_pages + 1 if last > first else 0):
            if block in self.pmd_mapped:
                lo, hi = block * self.pmd_pages, (block + 1) * self.pmd_pages
                if first > lo or last < hi:  # __split_huge_pmd(): PTE-mapped from now on
                    self.pmd_mapped.pop(block)
                else:
                    self.pmd_mapped.pop(block)
                    self.pte_tables.discard(block)  # the deposited table goes with the PMD
        if last - first > len(self.pages):
            doomed = [p for p in self.pages if first <= p < last]
        else:
            doomed = [p for p in range(first, last) if p in self.pages]
        for p in doomed:
            self.unmap_page(p)

    def free_tables(self, start: int, end: int) -> None:
        """free_pgtables(): PTE tables of PMD blocks in [start, end) that no VMA and no page use."""
        for block in range(start // self.pmd, (end - 1) // self.pmd + 1):
            lo, hi = block * self.pmd, (block + 1) * self.pmd
            if block in self.pte_tables and not any(v.start < hi and v.end > lo for v in self.vmas) \
                    and not any(p in self.pages for p in range(lo // self.page, hi // self.page)):
                self.pte_tables.discard(block)

    def unmap(self, start: int, end: int) -> None:
        """munmap(): pages, VMAs, then the tables nothing uses any more."""
        self.zap(start, end)
        self.split_out(start, end)
        self.free_tables(start, end)

    def move(self, old: int, new: int, length: int) -> None:
        """mremap() moving [old, old + length) to ``new``: the pages keep their folios; PMD
        mappings that land unaligned are PTE-mapped."""
        shift = (new - old) // self.page
        moved = {p: f for p, f in self.pages.items() if old // self.page <= p < (old + length) // self.page}
        for p in moved:
            del self.pages[p]
        for p, f in moved.items():
            self.pages[p + shift] = f
            self.pte_tables.add((p + shift) // self.pmd_pages)
        for block in [b for b in self.pmd_mapped if old // self.pmd <= b < (old + length) // self.pmd]:
            folio = self.pmd_mapped.pop(block)
            if (new - old) % self.pmd == 0:
                self.pmd_mapped[block + (new - old) // self.pmd] = folio
