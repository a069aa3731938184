"""A record replayed under many THP settings at once, PMD block by PMD block.

The folio a fault gets depends on its own PMD block alone (the block's pages, its PTE table, its
PMD mapping: ``alloc_anon_folio()``, ``pte_range_none()``, ``pmd_none()``) and on its VMA as it
stood, and the VMAs do not depend on the THP settings.  So from the journal of the one walk of the
record (``hugecalc.calc.oplog``) each fault becomes an item with its page, its VMA's bounds and its
VMA's key (what ``thp_vma_allowable_orders()`` reads), each zap and each table discard one per
block it covers (:func:`items`).  Then, for every setting, every block replays its own items from
empty (:func:`simulate`, the rules of ``hugecalc.calc.pages`` on one block's row), in compiled
code, the settings spread over the cores.  Each figure at the end is a
sum over blocks (upper page-table levels: the distinct tables over the blocks in use).

This stands for a full replay when nothing couples two blocks: not when the process's pages moved
(``mremap()``), nor when its address space began as a copy of its parent's (``fork()``); then the
search replays the journal once per setting (:func:`coupled` says why).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from hugecalc.calc import oplog
from hugecalc.calc.pages import ANON, EMPTY, HUGE_ZERO, OTHER, ZERO

FAULT_ITEM, ZAP_ITEM, DISCARD_ITEM = 0, 1, 2
NONE = -4  # no PMD mapping
#: per-setting counts
#: USED: the orders the THP rules chose that changed the state (a folio, or the huge zero page): a
#: setting that still allows those, and allows nothing more, replays the same (``advise``)
FAULTS, READS, WRITES, ZERO_MAPS, POPULATED, TLB, PTE_TABLES, MAX_ORDER, USED = range(9)
KERNELS = ("_put", "_take", "_none", "_new", "_order", "_fault", "_zap", "_compact", "_close", "_run_setting",
           "simulate")
#: small steps of the loop, inlined into it (a call per step would cost more than the step)
INLINED = {"_put", "_take", "_none", "_new", "_order", "_fault", "_zap"}
_compiled = False
_LOCK = threading.Lock()
prange = range


def kernels():
    """This module, compiled by numba (the settings in parallel over the cores)."""
    global _compiled
    with _LOCK:  # one thread compiles; the others wait for it
        if not _compiled:
            import numba

            from hugecalc.calc._jit import jit

            g = globals()
            g["prange"] = numba.prange
            for name in KERNELS:
                g[name] = jit(g[name], parallel=name == "simulate", inline=name in INLINED)
            _compiled = True
    return sys.modules[__name__]


def coupled(ops: list, target: int) -> str | None:
    """Why the address space ``target`` of a journal (``hugecalc.calc.oplog``) cannot be replayed
    block by block, or None."""
    if any(op[0] == oplog.COPY and op[2] == target for op in ops):
        return "its address space began as a copy of its parent's (fork)"
    if any(op[0] == oplog.MOVE and op[1] == target for op in ops):
        return "its pages moved (mremap)"
    return None


def items(ops: list, target: int, addrs: np.ndarray, errors: np.ndarray, page_shift: int, shift: int) -> np.ndarray:
    """The journal's calls on ``target`` as items, sorted by block, then in order: columns block,
    kind, a..f (a fault: page, write, VMA kind, key, VMA's first page and last page + 1; a zap:
    first page and last page + 1; a discard: nothing more)."""
    parts, seqs, seq = [], [], 0
    zaps = []
    for op in ops:
        if op[1] != target:
            continue
        if op[0] == oplog.FAULTS:
            parts.append(_fault_items(op, addrs, errors, page_shift, shift))
            seqs.append(seq + np.arange(len(parts[-1])))
            seq += len(parts[-1])
        elif op[0] in (oplog.ZAP, oplog.DISCARD):
            zaps.append((seq, op))
            seq += 1
    seen = np.unique(np.concatenate([p[:, 0] for p in parts])) if parts else np.zeros(0, np.int64)
    for at, op in zaps:
        if op[0] == oplog.ZAP:
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
    if len(vstart):
        j = np.searchsorted(vstart, a, side="right") - 1
        jj = np.maximum(j, 0)
        inside = (j >= 0) & (vend[jj] > a)
        out[inside, 4], out[inside, 5] = vkind[jj[inside]], vkey[jj[inside]]
        out[inside, 6] = (vstart[jj[inside]] + (1 << page_shift) - 1) >> page_shift
        out[inside, 7] = vend[jj[inside]] >> page_shift
    return out


# --- one block's replay (the rules of hugecalc.calc.pages, on one row) --------------------------
# st: [PTE table (0/1), PMD mapping (NONE, HUGE_ZERO or a folio), folios handed out]

def _put(row, i, value, n):
    if row[i] == EMPTY:
        row[n] += 1
    row[i] = value


def _take(row, i, n):
    was = row[i]
    if was != EMPTY:
        row[i] = EMPTY
        row[n] -= 1
    return was


def _none(row, i, count):
    for k in range(i, i + count):
        if row[k] != EMPTY:
            return False
    return True


def _compact(row, fol, st, n):
    """The block's live folios renumbered from 0, so that ids do not run out."""
    live = 0
    renum = np.full(len(fol), -1, np.int64)
    for f in range(st[2]):
        if fol[f, 1] > 0:
            fol[live, 0], fol[live, 1], fol[live, 2] = fol[f, 0], fol[f, 1], fol[f, 2]
            renum[f] = live
            live += 1
    for k in range(n):
        if row[k] >= 0:
            row[k] = renum[row[k]]
    if st[1] >= 0:
        st[1] = renum[st[1]]
    st[2] = live


def _new(row, fol, st, i, order, anon, n):
    """A folio of ``order`` mapped from entry ``i`` (the caller keeps an id free: ``_compact``)."""
    fid = st[2]
    st[2] += 1
    fol[fid, 0] = order
    fol[fid, 1] = 1 << order
    fol[fid, 2] = anon
    for k in range(i, i + (1 << order)):
        _put(row, k, fid, n)
    return fid


def _order(row, st, block, p, allowed, lo, hi, n, shift):
    """alloc_anon_folio() (or the PMD path), as ``hugecalc.calc.pages._order``."""
    if (allowed >> shift) & 1 and row[n] == 0 and st[0] == 0 and st[1] == NONE \
            and block << shift >= lo and (block + 1) << shift <= hi:
        return shift
    for order in range(shift - 1, 0, -1):
        first = p & ~((1 << order) - 1)
        if (allowed >> order) & 1 and first >= lo and first + (1 << order) <= hi \
                and (row[n] == 0 or _none(row, first & (n - 1), 1 << order)):
            return order
    return 0


def _fault(row, fol, st, cnt, p, write, kind, allowed, lo, hi, n, shift, wp_thp):
    """One recorded fault: ``pages.fault_run``'s step, ``_first_touch`` and ``_write_zero``."""
    i, block = p & (n - 1), p >> shift
    state = row[i]
    if kind == OTHER:
        if state == EMPTY:  # a file, hugetlb or unknown mapping: the page as the record had it
            if write:
                _new(row, fol, st, i, 0, 0, n)
            else:
                _put(row, i, ZERO, n)
            st[0] = 1
        return
    if state == EMPTY:
        cnt[FAULTS] += 1
        cnt[WRITES if write else READS] += 1
        order = _order(row, st, block, p, allowed, lo, hi, n, shift)
        if not write and kind == ANON:  # the zero page, or the huge zero page with its deposited table
            cnt[ZERO_MAPS] += 1
            if order == shift:
                for k in range(n):
                    _put(row, k, HUGE_ZERO, n)
                st[1] = HUGE_ZERO
                cnt[USED] |= 1 << shift
            else:
                _put(row, i, ZERO, n)
            st[0] = 1
            return
        fid = _new(row, fol, st, (p & ~((1 << order) - 1)) & (n - 1), order, 1, n)
        cnt[MAX_ORDER] = max(cnt[MAX_ORDER], order)
        if order:
            cnt[USED] |= 1 << order
        if order == shift:
            st[1] = fid
        if order != shift or kind == ANON:
            st[0] = 1
    elif write and (state == ZERO or state == HUGE_ZERO):
        cnt[FAULTS] += 1
        cnt[WRITES] += 1
        if state == HUGE_ZERO and wp_thp:  # do_huge_zero_wp_pmd()
            for k in range(n):
                _take(row, k, n)
            st[1] = _new(row, fol, st, 0, shift, 1, n)
            cnt[MAX_ORDER] = max(cnt[MAX_ORDER], shift)
        else:
            if state == HUGE_ZERO:  # split: every PTE maps the zero page
                st[1] = NONE
                for k in range(n):
                    _put(row, k, ZERO, n)
            _take(row, i, n)
            _new(row, fol, st, i, 0, 1, n)


def _zap(row, fol, st, block, first, last, n, shift):
    base = block << shift
    if st[1] != NONE:
        st[1] = NONE
        if first <= base and last >= base + n:
            st[0] = 0
    for i in range(max(first, base) - base, min(last, base + n) - base):
        if row[n] == 0:
            break
        fid = _take(row, i, n)
        if fid >= 0:
            fol[fid, 1] -= 1


def _close(row, fol, st, cnt, folios, upper, last_upper, pers, block, cont, n):
    """A block's share of the figures at the end."""
    for f in range(st[2]):
        if fol[f, 1] > 0 and fol[f, 2]:
            cnt[POPULATED] += 1 << fol[f, 0]
            folios[fol[f, 0]] += 1
    last_cont = -1
    for i in range(n):
        fid = row[i]
        if fid == EMPTY or (fid >= 0 and not fol[fid, 2]):
            continue
        if st[1] != NONE:
            cnt[TLB] += 1
            break
        if fid >= 0 and cont > 1 and (1 << fol[fid, 0]) >= cont:
            if i // cont != last_cont:
                cnt[TLB] += 1
                last_cont = i // cont
        else:
            cnt[TLB] += 1
    cnt[PTE_TABLES] += st[0]
    if st[0] or st[1] != NONE:
        for level in range(len(pers)):
            u = block // pers[level]
            if u != last_upper[level]:
                upper[level] += 1
                last_upper[level] = u


def _run_setting(items, allowed, cnt, folios, upper, pers, n, shift, cont, wp_thp):
    row = np.empty(n + 1, np.int64)
    fol = np.zeros((4 * n, 3), np.int64)  # order, pages mapped, anonymous
    st = np.zeros(3, np.int64)
    last_upper = np.full(len(pers), -1, np.int64)
    block = -1
    for k in range(items.shape[0]):
        if items[k, 0] != block:
            if block >= 0:
                _close(row, fol, st, cnt, folios, upper, last_upper, pers, block, cont, n)
            block = items[k, 0]
            row[:n] = EMPTY
            row[n] = 0
            st[0], st[1], st[2] = 0, NONE, 0
        kind = items[k, 1]
        if kind == FAULT_ITEM:
            if st[2] >= len(fol) - 1:  # a fault makes at most one folio
                _compact(row, fol, st, n)
            key = items[k, 5]
            _fault(row, fol, st, cnt, items[k, 2], items[k, 3] != 0, items[k, 4], allowed[key] if key >= 0 else 0,
                   items[k, 6], items[k, 7], n, shift, wp_thp)
        elif kind == ZAP_ITEM:
            _zap(row, fol, st, block, items[k, 2], items[k, 3], n, shift)
        elif st[0] and row[n] == 0:  # a table discard: free_pgtables(), or PT_RECLAIM's
            st[0] = 0
    if block >= 0:
        _close(row, fol, st, cnt, folios, upper, last_upper, pers, block, cont, n)


def simulate(items, allowed, pers, n, shift, cont, wp_thp):
    """Every setting's figures: ``allowed[s, key]`` is setting s's allowed orders for a VMA key.
    Returns counts (per setting: FAULTS..MAX_ORDER), folios by order, upper-level tables by level."""
    settings = allowed.shape[0]
    cnt = np.zeros((settings, 9), np.int64)
    folios = np.zeros((settings, 64), np.int64)
    upper = np.zeros((settings, len(pers)), np.int64)
    for s in prange(settings):
        _run_setting(items, allowed[s], cnt[s], folios[s], upper[s], pers, n, shift, cont, wp_thp)
    return cnt, folios, upper
