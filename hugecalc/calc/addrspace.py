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

import numpy as np

from hugecalc.calc import pages

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
    uffd: bool = False  # registered with userfaultfd (VM_UFFD_MISSING/WP/MINOR: userfaultfd_armed())

    def mergeable(self, after: Vma) -> bool:
        """``after`` starts where this ends and vma_merge_new_range() would join them: same flags
        and protection, contiguous vm_pgoff, compatible anon_vma (is_mergeable_anon_vma())."""
        return (self.end == after.start and self.kind == after.kind and self.kind != "file"
                and (self.prot, self.hugepage, self.nohugepage, self.stack, self.advised, self.uffd) ==
                (after.prot, after.hugepage, after.nohugepage, after.stack, after.advised, after.uffd)
                and self.pgoff + (self.end - self.start) == after.pgoff
                and (self.anon_vma is None or after.anon_vma is None or self.anon_vma == after.anon_vma))

    def part(self, start: int, end: int) -> Vma:
        """[start, end) of this VMA split off: its vm_pgoff moves with its start."""
        return replace(self, start=start, end=end, pgoff=self.pgoff + (start - self.start))


class AddressSpace:
    """VMAs (sorted, not overlapping) and the present pages (:class:`hugecalc.calc.pages.Pages`)."""

    def __init__(self, page: int, pmd: int, present: Pages) -> None:
        self.page, self.pmd = page, pmd
        self.vmas: list[Vma] = []
        self.pages = present
        self.brk_start: int | None = None
        self.brk: int | None = None
        self.next_anon_vma = 0
        self.version = 0  # changes whenever the VMAs do
        self._starts: list[int] | None = None

    def copy(self) -> AddressSpace:
        """fork(): the child's copy (its anonymous pages shared, copy-on-write)."""
        child = AddressSpace(self.page, self.pmd, self.pages.copy())
        child.vmas = list(self.vmas)
        child.brk_start, child.brk, child.next_anon_vma = self.brk_start, self.brk, self.next_anon_vma
        return child

    # --- VMAs ---------------------------------------------------------------------------------

    def find(self, addr: int) -> Vma | None:
        if self._starts is None:
            self._starts = [v.start for v in self.vmas]
        i = bisect.bisect_right(self._starts, addr) - 1
        return self.vmas[i] if i >= 0 and self.vmas[i].end > addr else None

    def split_out(self, start: int, end: int) -> list[Vma]:
        """Split the VMAs at ``start`` and ``end``; remove and return those inside."""
        self._changed()
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

    def _changed(self) -> None:
        self._starts = None
        self.version += 1

    def _merge_around(self, i: int) -> None:
        self._changed()
        merged = self.vmas[i]
        if i + 1 < len(self.vmas) and merged.mergeable(self.vmas[i + 1]):
            after = self.vmas.pop(i + 1)
            merged = replace(merged, end=after.end, anon_vma=merged.anon_vma or after.anon_vma)
        if i > 0 and self.vmas[i - 1].mergeable(merged):
            before = self.vmas.pop(i - 1)
            merged = replace(before, end=merged.end, anon_vma=before.anon_vma or merged.anon_vma)
            i -= 1
        self.vmas[i] = merged

    def faulted(self, i: int) -> None:
        """anon_vma_prepare(): VMA ``i``'s pages hang off an anon_vma from its first fault on."""
        if self.vmas[i].anon_vma is None:
            self.next_anon_vma += 1
            self.vmas[i] = replace(self.vmas[i], anon_vma=self.next_anon_vma)

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

    def zap(self, start: int, end: int) -> None:
        self.pages.zap(start, end)

    def free_tables(self, start: int, end: int) -> None:
        """free_pgtables(): PTE tables of PMD blocks in [start, end) that no VMA and no page use."""
        if end <= start:
            return
        unused = [b for b in self.pages.empty_blocks(start, end).tolist()
                  if not self._overlaps(b * self.pmd, (b + 1) * self.pmd)]
        self.pages.discard_tables(np.array(unused, dtype=np.int64))

    def _overlaps(self, lo: int, hi: int) -> bool:
        """Whether a VMA overlaps [lo, hi)."""
        if self._starts is None:
            self._starts = [v.start for v in self.vmas]
        i = bisect.bisect_left(self._starts, hi) - 1
        return i >= 0 and self.vmas[i].end > lo

    def unmap(self, start: int, end: int) -> None:
        """munmap(): pages, VMAs, then the tables nothing uses any more."""
        self.zap(start, end)
        self.split_out(start, end)
        self.free_tables(start, end)

    def move(self, old: int, new: int, length: int) -> None:
        """mremap() moving [old, old + length) to ``new``: the pages keep their folios; PMD
        mappings that land unaligned are PTE-mapped."""
        self.pages.move(old, new, length)


class Pages:
    """The present pages of one address space: the containers above, and the module (plain Python
    or compiled) that works on them."""

    def __init__(self, page_size: int, pmd_size: int, compiled: bool) -> None:
        self.k = pages.kernels() if compiled else pages
        self.compiled = compiled
        self.page_shift = page_size.bit_length() - 1
        self.shift = (pmd_size // page_size).bit_length() - 1
        self.n = 1 << self.shift
        self.rows, self.pte, self.pmd = new_map(compiled, "rows"), new_map(compiled), new_map(compiled)
        self.folios = np.zeros(1024, np.int64)
        self.space = np.zeros(2, np.int64)

    def copy(self) -> Pages:
        """fork(): the child's copy (its anonymous pages shared, copy-on-write)."""
        child = Pages(1 << self.page_shift, 1 << (self.page_shift + self.shift), self.compiled)
        self.k.copy_rows(self.rows, child.rows)
        child.folios = self.folios.copy()
        for name in ("pte", "pmd"):
            self.k.copy_map(getattr(self, name), getattr(child, name))
        child.space[:] = self.space
        return child

    def reserve(self, folios: int) -> None:
        """Room for ``folios`` more folios."""
        need = int(self.space[pages.NEXT]) + folios + 1
        if need > len(self.folios):
            grown = np.zeros(max(need, 2 * len(self.folios)), np.int64)
            grown[:len(self.folios)] = self.folios
            self.folios = grown

    def folio_orders(self) -> np.ndarray:
        """How many anonymous (and shmem) folios of each order are mapped."""
        return self.k.folio_orders(self.folios, int(self.space[pages.NEXT]), True)

    def fault_run(self, addrs: np.ndarray, errors: np.ndarray, lo: int, hi: int, vmas: tuple, faulted: np.ndarray,
                  counts: np.ndarray, wp_thp: bool) -> None:
        """Recorded faults ``lo..hi-1`` of the process (:func:`fault_run`); ``vmas`` is its VMA table."""
        self.reserve(hi - lo)  # a fault makes at most one folio
        self.k.fault_run(addrs, errors, lo, hi, *vmas[:4], faulted, self.rows, self.folios, self.pte, self.pmd,
                         self.space, counts, self.page_shift, self.shift, wp_thp)

    def tlb_entries(self, cont: int) -> int:
        return int(self.k.tlb_entries(self.rows, self.folios, self.pmd, cont, self.n, self.shift))

    def table_blocks(self) -> tuple[np.ndarray, int]:
        """The PMD blocks in use (a PTE table or a PMD mapping), sorted, and how many PTE tables."""
        blocks, tables = self.k.table_blocks(self.pte, self.pmd)
        return np.sort(blocks), int(tables)

    def zap(self, start: int, end: int) -> None:
        """The pages of [start, end) unmapped."""
        self.k.zap(self.rows, self.folios, self.pte, self.pmd, self.space, start >> self.page_shift,
                   end >> self.page_shift, self.n, self.shift)

    def empty_blocks(self, start: int, end: int) -> np.ndarray:
        """PMD blocks from the one holding ``start`` to the one holding ``end - 1`` with a PTE table
        and no page."""
        span = self.page_shift + self.shift
        return self.k.empty_blocks(self.rows, self.pte, start >> span, ((end - 1) >> span) + 1)

    def discard_tables(self, blocks: np.ndarray) -> None:
        self.k.discard(self.pte, blocks)

    def discard_empty_tables(self, blocks: np.ndarray) -> None:
        """Those of ``blocks`` that hold no page lose their PTE table."""
        self.k.discard_empty(self.rows, self.pte, blocks)

    def move(self, old: int, new: int, length: int) -> None:
        first = old >> self.page_shift
        self.k.move(self.rows, self.pte, self.pmd, first, first + (length >> self.page_shift),
                    (new - old) >> self.page_shift, self.n, self.shift)

    @property
    def populated_pages(self) -> int:
        return int(self.space[pages.POPULATED])


def new_map(compiled: bool, kind: str = "int"):
    """An empty container: a typed dict when the kernels are compiled, else a dict."""
    if not compiled:
        return {}
    from hugecalc.calc import _typed

    return _typed.new_rows() if kind == "rows" else _typed.new_map()


def use_compiled(faults: int) -> bool:
    """Compiled kernels for a record of this many faults (or once they are loaded anyway)."""
    return pages.compiled() or faults >= pages.SMALL_RECORD
