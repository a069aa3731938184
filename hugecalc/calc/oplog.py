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

from hugecalc.calc.pages import ANON, OTHER

#: the kinds of block items (:func:`block_items`), as ``hugecalc.calc.blocksim`` replays them
FAULT_ITEM, ZAP_ITEM, DISCARD_ITEM = 0, 1, 2

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
        j, inside = vma_of(vstart, vend, a)
        j = j[inside]
        faulted[j[vkind[j] == ANON]] = 1  # anon_vma_prepare()
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


def coupled(ops: list, target: int) -> str | None:
    """Why the address space ``target`` of a journal (``hugecalc.calc.oplog``) cannot be replayed
    block by block, or None."""
    if any(op[0] == COPY and op[2] == target for op in ops):
        return "its address space began as a copy of its parent's (fork)"
    if any(op[0] == MOVE and op[1] == target for op in ops):
        return "its pages moved (mremap)"
    return None


def block_items(ops: list, target: int, addrs: np.ndarray, errors: np.ndarray, page_shift: int, shift: int) -> np.ndarray:
    """The journal's calls on ``target`` as items, sorted by block, then in order: columns block,
    kind, a..f (a fault: page, write, VMA kind, key, VMA's first page and last page + 1; a zap:
    first page and last page + 1; a discard: nothing more)."""
    parts, seqs, seq = [], [], 0
    zaps = []
    for op in ops:
        if op[1] != target:
            continue
        if op[0] == FAULTS:
            parts.append(_fault_items(op, addrs, errors, page_shift, shift))
            seqs.append(seq + np.arange(len(parts[-1])))
            seq += len(parts[-1])
        elif op[0] in (ZAP, DISCARD):
            zaps.append((seq, op))
            seq += 1
    seen = np.unique(np.concatenate([p[:, 0] for p in parts])) if parts else np.zeros(0, np.int64)
    for at, op in zaps:
        if op[0] == ZAP:
            first, last = op[2] >> page_shift, op[3] >> page_shift
            if last <= first:
                continue
            blocks = seen[np.searchsorted(seen, first >> shift):np.searchsorted(seen, ((last - 1) >> shift) + 1)]
            kind, a, b = ZAP_ITEM, first, last
        else:
            blocks, kind, a, b = np.asarray(op[2], np.int64), DISCARD_ITEM, 0, 0
        part = np.zeros((len(blocks), 8), np.int64)
        part[:, 0], part[:, 1], part[:, 2], part[:, 3] = blocks, kind, a, b
        parts.append(part)
        seqs.append(np.full(len(blocks), at))
    if not parts:
        return np.zeros((0, 8), np.int64)
    table, order = np.concatenate(parts), np.concatenate(seqs)
    return np.ascontiguousarray(table[np.lexsort((order, table[:, 0]))])


def _fault_items(op: tuple, addrs: np.ndarray, errors: np.ndarray, page_shift: int, shift: int) -> np.ndarray:
    _, _, lo, hi, vstart, vend, vkind, vkey = op
    a = addrs[lo:hi]
    out = np.zeros((hi - lo, 8), np.int64)
    pages = a >> page_shift
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = pages >> shift, FAULT_ITEM, pages, (errors[lo:hi] & 2) != 0
    out[:, 4], out[:, 5] = OTHER, -1
    j, inside = vma_of(vstart, vend, a)
    j = j[inside]
    out[inside, 4], out[inside, 5] = vkind[j], vkey[j]
    out[inside, 6] = (vstart[j] + (1 << page_shift) - 1) >> page_shift
    out[inside, 7] = vend[j] >> page_shift
    return out


def vma_of(vstart: np.ndarray, vend: np.ndarray, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each address, the VMA (of the table ``vstart``/``vend``, sorted) that would hold it, and
    whether it does (an index is 0, and meaningless, where it does not)."""
    if not len(vstart):
        return np.zeros(len(addrs), np.int64), np.zeros(len(addrs), bool)
    j = np.maximum(np.searchsorted(vstart, addrs, side="right") - 1, 0)
    return j, (vstart[j] <= addrs) & (vend[j] > addrs)
