"""A record walked once, replayed under many settings: the page operations of every address space,
in order, as the VMAs made them.

The VMAs of a replay do not depend on the THP settings; only the pages do.  So the record is
walked once with an :class:`OpLog` in place of each address space's pages: the VMAs split and
merge in Python as in any replay, and every call the pages would get (a run of faults with the
VMA table it ran against, a zap, a table discard, a move, a fork's copy) is logged.  A setting is
then :func:`replayed` by making those calls on real, compiled pages (``hugecalc.calc.addrspace.Pages``)
with the VMA table's allowed orders taken from the setting: no Python VMA work per setting, and
the compiled kernels release the GIL, so settings run on threads side by side.

This is exact wherever a whole replay is (it makes the same calls); ``hugecalc.calc.blocksim``
is quicker where no two PMD blocks are coupled (no mremap, no fork).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc.pages import ANON

FAULTS, ZAP, DISCARD, MOVE, COPY = range(5)


class Journal:
    """The calls of one walk, in order, over all its address spaces."""

    def __init__(self) -> None:
        self.ops: list[tuple] = []
        self.spaces = 0

    def new(self, page_size: int, pmd_size: int) -> OpLog:
        """The pages of a new address space (the walk's ``new_pages``)."""
        self.spaces += 1
        return OpLog(self, self.spaces - 1, page_size, pmd_size)


class OpLog:
    """Stands in for one address space's pages in the walk: logs each call in the journal."""

    compiled = False
    populated_pages = 0

    def __init__(self, journal: Journal, space: int, page_size: int, pmd_size: int) -> None:
        self.journal, self.ops, self.id = journal, journal.ops, space
        self.page_size, self.pmd_size = page_size, pmd_size
        self.blocks: set[int] = set()  # PMD blocks a fault touched (or a move filled)

    def copy(self) -> OpLog:
        child = self.journal.new(self.page_size, self.pmd_size)
        child.blocks = set(self.blocks)
        self.ops.append((COPY, self.id, child.id))
        return child

    def fault_run(self, addrs, errors, lo, hi, vmas, faulted, counts, wp_thp) -> None:
        vstart, vend, _, vkind, vkey = vmas
        a = addrs[lo:hi]
        j = np.searchsorted(vstart, a, side="right") - 1
        inside = j >= 0
        if len(vend):
            inside &= vend[np.maximum(j, 0)] > a
            faulted[j[inside & (vkind[np.maximum(j, 0)] == ANON)]] = 1  # anon_vma_prepare()
        self.ops.append((FAULTS, self.id, lo, hi, vstart, vend, vkind, vkey))
        self.blocks.update(np.unique(a // self.pmd_size).tolist())

    def zap(self, start: int, end: int) -> None:
        self.ops.append((ZAP, self.id, start, end))

    def empty_blocks(self, start: int, end: int) -> np.ndarray:
        """Every block in the range a fault touched: whether it is empty is each setting's to say."""
        b0, b1 = start // self.pmd_size, (end - 1) // self.pmd_size + 1
        return np.array(sorted(b for b in self.blocks if b0 <= b < b1), dtype=np.int64)

    def discard_tables(self, blocks: np.ndarray) -> None:
        if len(blocks):
            self.ops.append((DISCARD, self.id, blocks))

    def move(self, old: int, new: int, length: int) -> None:
        self.ops.append((MOVE, self.id, old, new, length))
        self.blocks.update(range(new // self.pmd_size, (new + length - 1) // self.pmd_size + 1))

    def tlb_entries(self, cont: int) -> int:
        return 0

    def table_blocks(self) -> tuple[np.ndarray, int]:
        return np.zeros(0, np.int64), 0

    def folio_orders(self) -> np.ndarray:
        return np.zeros(64, np.int64)


def replayed(ops: list, target: int, addrs: np.ndarray, errors: np.ndarray, allowed: np.ndarray,
             new_pages, wp_thp: bool) -> tuple:
    """The logged calls made on real pages, under a setting whose allowed orders per VMA key are
    ``allowed``: the pages of address space ``target`` and its process counters at the end."""
    spaces: dict[int, object] = {}
    counts: dict[int, np.ndarray] = {}

    def space(i: int):
        if i not in spaces:
            spaces[i], counts[i] = new_pages(), np.zeros(7, np.int64)
        return spaces[i]

    mask = np.append(allowed, 0).astype(np.int64)  # key -1: no THP rule
    for op in ops:
        kind, i = op[0], op[1]
        pg = space(i)
        if kind == FAULTS:
            _, _, lo, hi, vstart, vend, vkind, vkey = op
            orders = mask[vkey]
            pg.fault_run(addrs, errors, lo, hi, (vstart, vend, orders, vkind), np.zeros(len(vstart), np.int64),
                         counts[i], wp_thp)
        elif kind == ZAP:
            pg.zap(op[2], op[3])
        elif kind == DISCARD:
            pg.discard_empty_tables(op[2])
        elif kind == MOVE:
            pg.move(op[2], op[3], op[4])
        else:  # a fork: the child's copy
            spaces[op[2]], counts[op[2]] = pg.copy(), np.zeros(7, np.int64)
    return space(target), counts[target]
