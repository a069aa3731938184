"""A record replayed under many THP settings at once, PMD block by PMD block.

The folio a fault gets depends on its own PMD block alone (the block's pages, its PTE table, its
PMD mapping: ``alloc_anon_folio()``, ``pte_range_none()``, ``pmd_none()``) and on its VMA as it
stood, and the VMAs do not depend on the THP settings.  So from the journal of the one walk of the
record (``hugecalc.calc.oplog``) each fault becomes an item with its page, its VMA's bounds and
key (what ``thp_vma_allowable_orders()`` reads), each zap and table discard one per block it
covers (``oplog.block_items``).  Then every block replays its own items from empty, for every
setting (:func:`simulate`, the rules of ``hugecalc.calc.pages`` on one block's row), compiled, the
blocks spread over the cores.  Each figure is a sum over blocks (upper page-table levels: the
distinct tables over the blocks in use).

This stands for a full replay when nothing couples two blocks: not when the process's pages moved
(``mremap()``), nor when its address space began as a copy of its parent's (``fork()``); then the
search replays the journal once per setting (``oplog.coupled`` says why).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hugecalc.calc.oplog import FAULT_ITEM, ZAP_ITEM
from hugecalc.calc.pages import (ANON, EMPTY, HUGE_ZERO, OTHER, ZERO, clear_entry, copy_1d, copy_2d, pte_range_none,
                                 set_entry)

NONE = -4  # no PMD mapping
#: per-setting counts
#: USED: the orders the THP rules chose that changed the state (a folio, or the huge zero page): a
#: setting that still allows those, and allows nothing more, replays the same (``advise``)
FAULTS, READS, WRITES, ZERO_MAPS, POPULATED, TLB, PTE_TABLES, MAX_ORDER, USED = range(9)
KERNELS = ("set_entry", "clear_entry", "pte_range_none", "_hb", "_fits_mask", "copy_1d", "copy_2d", "_compact",
           "_masks", "_grow", "_split", "_figures", "_close", "_group_run", "_run_chunk")
#: small steps of the loop, inlined into it (a call per step would cost more than the step)
INLINED = frozenset({"set_entry", "clear_entry", "pte_range_none", "_hb", "_fits_mask", "copy_1d", "copy_2d"})
_compiled = False


def kernels():
    """This module, compiled by numba (:func:`simulate` runs the chunks of blocks over the cores)."""
    from hugecalc.calc._jit import compile_module
    return compile_module(sys.modules[__name__], KERNELS, inline=INLINED)


def compiled() -> bool:
    return _compiled


# --- one block's replay (the rules of hugecalc.calc.pages, on one row) --------------------------
# st: [PTE table (0/1), PMD mapping (NONE, HUGE_ZERO or a folio), folios handed out]

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


def _hb(mask):
    """The highest set bit of ``mask`` (0 when none)."""
    b = 0
    while mask > 1:
        mask >>= 1
        b += 1
    return b


def _fits_mask(row, pte, pmd, block, p, lo, hi, wanted, n, shift):
    """The orders whose aligned range around page ``p`` lies in the VMA [lo, hi) and holds no page
    (the PMD order also needs pmd_none(): no table, no PMD mapping), among those of ``wanted``: a
    fault under a setting gets the highest one its setting allows (alloc_anon_folio())."""
    fits = 0
    if (wanted >> shift) & 1 and row[n] == 0 and pte == 0 and pmd == NONE \
            and block << shift >= lo and (block + 1) << shift <= hi:
        fits |= 1 << shift
    top = _hb(wanted & ((1 << shift) - 1))
    for order in range(1, top + 1):  # nested ranges: once one fails, every larger one does
        first = p & ~((1 << order) - 1)
        if first < lo or first + (1 << order) > hi or (row[n] != 0 and not pte_range_none(row, first & (n - 1), 1 << order)):
            break
        fits |= 1 << order
    return fits


# --- every setting at once: the settings that share a block's state share its replay ---------------
# A block starts with one group holding every setting.  At a first touch, the orders that fit are
# the same for the whole group (its state is one); a group splits only when its settings would pick
# different orders, each part keeping its own copy of the state from then on.

def _masks(allowed, members, start, count, inter, union):
    """Per VMA key: the orders every setting of the group allows, and those any allows."""
    for k in range(allowed.shape[1]):
        a, u = -1, 0
        for m in range(start, start + count):
            v = allowed[members[m], k]
            a &= v
            u |= v
        inter[k], union[k] = a, u


def _grow(rows, fols, sts, gcnt, ginter, gunion, mstart, mcount):
    """The group pools, twice as large (copied element by element: ``pages.copy_2d``)."""
    g = rows.shape[0]
    out = (np.empty((2 * g, rows.shape[1]), np.int64), np.zeros((2 * g, fols.shape[1], 3), np.int64),
           np.zeros((2 * g, 3), np.int64), np.zeros((2 * g, gcnt.shape[1]), np.int64),
           np.zeros((2 * g, ginter.shape[1]), np.int64), np.zeros((2 * g, gunion.shape[1]), np.int64),
           np.zeros(2 * g, np.int64), np.zeros(2 * g, np.int64))
    for dst, src in ((out[0], rows), (out[2], sts), (out[3], gcnt), (out[4], ginter), (out[5], gunion)):
        copy_2d(dst, src, g)
    for i in range(g):
        copy_2d(out[1][i], fols[i], fols.shape[1])
        out[6][i], out[7][i] = mstart[i], mcount[i]
    return out


def _split(allowed, members, tmp, bkt, mstart, mcount, g, key, fits, ng, rows, fols, sts, gcnt, ginter, gunion,
           new_orders):
    """Group ``g`` split by the order each of its settings picks (the highest it allows of ``fits``):
    the first part keeps ``g``, the others become groups ``ng``.. with a copy of its state.  Returns
    the new number of groups; ``new_orders[j]`` is the order of group j (g, then the new ones)."""
    s0, c = mstart[g], mcount[g]
    counts = np.zeros(64, np.int64)
    for m in range(s0, s0 + c):
        b = _hb(allowed[members[m], key] & fits)
        bkt[m] = b
        counts[b] += 1
    offs = np.zeros(64, np.int64)
    running = 0
    for b in range(64):
        offs[b] = running
        running += counts[b]
    for m in range(s0, s0 + c):
        tmp[s0 + offs[bkt[m]]] = members[m]
        offs[bkt[m]] += 1
    for m in range(s0, s0 + c):
        members[m] = tmp[m]
    start, parts = s0, 0
    for b in range(64):
        if counts[b] == 0:
            continue
        dst = g if parts == 0 else ng + parts - 1
        if parts:
            copy_1d(rows[dst], rows[g], rows.shape[1])
            copy_2d(fols[dst], fols[g], sts[g, 2])
            copy_1d(sts[dst], sts[g], 3)
            copy_1d(gcnt[dst], gcnt[g], gcnt.shape[1])
        mstart[dst], mcount[dst] = start, counts[b]
        _masks(allowed, members, start, counts[b], ginter[dst], gunion[dst])
        new_orders[parts] = b
        start += counts[b]
        parts += 1
    return ng + parts - 1, parts


def _figures(row, fol, st, n, cont, forders, figs):
    """A group's share of the figures at the block's end: populated pages, TLB entries, PTE table,
    whether the block is in use; folios by order."""
    forders[:] = 0
    figs[:] = 0
    for f in range(st[2]):
        if fol[f, 1] > 0 and fol[f, 2]:
            figs[0] += 1 << fol[f, 0]
            forders[fol[f, 0]] += 1
    last_cont = -1
    for i in range(n):
        fid = row[i]
        if fid == EMPTY or (fid >= 0 and not fol[fid, 2]):
            continue
        if st[1] != NONE:
            figs[1] += 1
            break
        if fid >= 0 and cont > 1 and (1 << fol[fid, 0]) >= cont:
            if i // cont != last_cont:
                figs[1] += 1
                last_cont = i // cont
        else:
            figs[1] += 1
    figs[2] = st[0]
    figs[3] = 1 if st[0] or st[1] != NONE else 0


def _close(g, block, rows, fols, sts, gcnt, members, mstart, mcount, pers, n, cont, cnt, folios, upper, forders,
           figs):
    """Group ``g``'s figures of the block, added to each of its settings'."""
    _figures(rows[g], fols[g], sts[g], n, cont, forders, figs)
    for m in range(mstart[g], mstart[g] + mcount[g]):
        s = members[m]
        for c in range(ZERO_MAPS + 1):
            cnt[s, c] += gcnt[g, c]
        cnt[s, POPULATED] += figs[0]
        cnt[s, TLB] += figs[1]
        cnt[s, PTE_TABLES] += figs[2]
        cnt[s, MAX_ORDER] = max(cnt[s, MAX_ORDER], gcnt[g, MAX_ORDER])
        cnt[s, USED] |= gcnt[g, USED]
        for o in range(len(forders)):
            folios[s, o] += forders[o]
        if figs[3]:
            for lv in range(len(pers)):  # upper[s, lv]: count, first and last table index
                u = block // pers[lv]
                if u != upper[s, lv, 2]:
                    upper[s, lv, 0] += 1
                    upper[s, lv, 2] = u
                    if upper[s, lv, 1] < 0:
                        upper[s, lv, 1] = u


def _run_chunk(items, lo, hi, allowed, pers, n, shift, cont, wp_thp, cnt, folios, upper):
    """The blocks of items [lo, hi), one at a time: each group runs through the block's items in a
    tight loop (:func:`_group_run`); the groups a split makes wait on a stack with the item they go
    on from and the order they get there."""
    T, K = allowed.shape
    G = 8
    rows, fols, sts = np.empty((G, n + 1), np.int64), np.zeros((G, 2 * n, 3), np.int64), np.zeros((G, 3), np.int64)
    gcnt, ginter, gunion = np.zeros((G, 9), np.int64), np.zeros((G, K), np.int64), np.zeros((G, K), np.int64)
    mstart, mcount = np.zeros(G, np.int64), np.zeros(G, np.int64)
    members, tmp, bkt = np.arange(T), np.empty(T, np.int64), np.empty(T, np.int64)
    all_inter, all_union = np.zeros(K, np.int64), np.zeros(K, np.int64)
    _masks(allowed, members, 0, T, all_inter, all_union)
    forders, figs, new_orders = np.zeros(shift + 1, np.int64), np.zeros(4, np.int64), np.zeros(64, np.int64)
    stack = np.zeros((T + 1, 3), np.int64)  # group, item, order at that item (-1: its own choice)
    b0 = lo
    while b0 < hi:
        block = items[b0, 0]
        b1 = b0
        while b1 < hi and items[b1, 0] == block:
            b1 += 1
        for m in range(T):
            members[m] = m
        mstart[0], mcount[0] = 0, T
        rows[0, :n], rows[0, n] = EMPTY, 0
        sts[0, 0], sts[0, 1], sts[0, 2] = 0, NONE, 0
        gcnt[0, :] = 0
        copy_1d(ginter[0], all_inter, K)
        copy_1d(gunion[0], all_union, K)
        ng, depth = 1, 1
        stack[0, 0], stack[0, 1], stack[0, 2] = 0, b0, -1
        while depth:
            depth -= 1
            g, k, forced = stack[depth, 0], stack[depth, 1], stack[depth, 2]
            while True:
                while rows.shape[0] < min(T, ng + shift + 1):  # room for a split's parts
                    rows, fols, sts, gcnt, ginter, gunion, mstart, mcount = _grow(rows, fols, sts, gcnt, ginter,
                                                                                 gunion, mstart, mcount)
                k, made, status = _group_run(items, k, b1, block, g, forced, ng, allowed, members, tmp, bkt, mstart,
                                             mcount, rows, fols, sts, gcnt, ginter, gunion, new_orders, n, shift,
                                             wp_thp)
                if status == 0:
                    break
                forced = -1
                if status == 2:  # split at item k: the new parts go on from it with their orders, g with its own
                    for j in range(ng, made):
                        stack[depth, 0], stack[depth, 1], stack[depth, 2] = j, k, new_orders[j - ng + 1]
                        depth += 1
                    forced, ng = new_orders[0], made
            _close(g, block, rows, fols, sts, gcnt, members, mstart, mcount, pers, n, cont, cnt, folios, upper,
                   forders, figs)
        b0 = b1


def _group_run(items, k, b1, block, g, forced, ng, allowed, members, tmp, bkt, mstart, mcount, rows, fols, sts,
               gcnt, ginter, gunion, new_orders, n, shift, wp_thp):
    """Group ``g`` through the block's items from ``k`` (there, the order ``forced`` if not -1): the
    rules of ``pages.fault_run``, ``_first_touch``, ``_write_zero`` and ``zap``, written out in one
    loop on local copies of the group's state (a call per step, passing arrays, would cost more
    than the step).  Returns (the next item, the number of groups, 0: the block is done, 1: a
    split needs room, 2: the group split at that item, its parts' orders in ``new_orders``)."""
    row, fol = rows[g], fols[g]
    pte, pmd, nfol = sts[g, 0], sts[g, 1], sts[g, 2]
    faults, reads, writes, zero_maps = gcnt[g, FAULTS], gcnt[g, READS], gcnt[g, WRITES], gcnt[g, ZERO_MAPS]
    max_order, used = gcnt[g, MAX_ORDER], gcnt[g, USED]
    status, fits = 0, 0
    while k < b1:
        kind = items[k, 1]
        if kind == FAULT_ITEM:
            if nfol >= 2 * n - 1:  # a fault makes at most one folio
                sts[g, 1], sts[g, 2] = pmd, nfol
                _compact(row, fol, sts[g], n)
                pmd, nfol = sts[g, 1], sts[g, 2]
            p, write, vkind, key = items[k, 2], items[k, 3] != 0, items[k, 4], items[k, 5]
            i = p & (n - 1)
            state = row[i]
            if vkind == OTHER:
                if state == EMPTY:  # a file, hugetlb or unknown mapping: the page as the record had it
                    if write:
                        fol[nfol, 0], fol[nfol, 1], fol[nfol, 2] = 0, 1, 0
                        set_entry(row, i, nfol, n)
                        nfol += 1
                    else:
                        set_entry(row, i, ZERO, n)
                    pte = 1
            elif state == EMPTY:
                order = forced
                if order < 0:
                    order = 0
                    if key >= 0 and gunion[g, key]:
                        fits = _fits_mask(row, pte, pmd, block, p, items[k, 6], items[k, 7], gunion[g, key], n, shift)
                        order = _hb(gunion[g, key] & fits)
                        if order and not (ginter[g, key] >> order) & 1:  # its settings part here
                            status = 1 if rows.shape[0] < min(allowed.shape[0], ng + shift + 1) else 2
                            break
                faults += 1
                if write:
                    writes += 1
                else:
                    reads += 1
                if not write and vkind == ANON:  # the zero page, or the huge zero page (its table deposited)
                    zero_maps += 1
                    if order == shift:
                        for q in range(n):
                            set_entry(row, q, HUGE_ZERO, n)
                        pmd = HUGE_ZERO
                        used |= 1 << shift
                    else:
                        set_entry(row, i, ZERO, n)
                    pte = 1
                else:  # alloc_anon_folio()'s folio (shmem's too, on a read)
                    first = (p & ~((1 << order) - 1)) & (n - 1)
                    fol[nfol, 0], fol[nfol, 1], fol[nfol, 2] = order, 1 << order, 1
                    for q in range(first, first + (1 << order)):
                        set_entry(row, q, nfol, n)
                    max_order = max(max_order, order)
                    if order:
                        used |= 1 << order
                    if order == shift:
                        pmd = nfol
                    if order != shift or vkind == ANON:  # shmem's PMD has no deposited table
                        pte = 1
                    nfol += 1
            elif write and (state == ZERO or state == HUGE_ZERO):
                faults += 1
                writes += 1
                if state == HUGE_ZERO and wp_thp:  # do_huge_zero_wp_pmd()
                    fol[nfol, 0], fol[nfol, 1], fol[nfol, 2] = shift, n, 1
                    for q in range(n):
                        set_entry(row, q, nfol, n)
                    pmd = nfol
                    max_order = shift
                    nfol += 1
                else:  # wp_page_copy(); a huge zero page is split first
                    if state == HUGE_ZERO:
                        pmd = NONE
                        for q in range(n):
                            set_entry(row, q, ZERO, n)
                    fol[nfol, 0], fol[nfol, 1], fol[nfol, 2] = 0, 1, 1
                    set_entry(row, i, nfol, n)
                    nfol += 1
            forced = -1
        elif kind == ZAP_ITEM:  # zap_pte_range(); a PMD mapping cut in part is split first
            first, last, base = items[k, 2], items[k, 3], block << shift
            if pmd != NONE:
                pmd = NONE
                if first <= base and last >= base + n:
                    pte = 0
            for q in range(max(first, base) - base, min(last, base + n) - base):
                if row[n] == 0:
                    break
                fid = clear_entry(row, q, n)
                if fid >= 0:
                    fol[fid, 1] -= 1
        elif pte and row[n] == 0:  # a table discard: free_pgtables(), or PT_RECLAIM's
            pte = 0
        k += 1
    sts[g, 0], sts[g, 1], sts[g, 2] = pte, pmd, nfol
    gcnt[g, FAULTS], gcnt[g, READS], gcnt[g, WRITES], gcnt[g, ZERO_MAPS] = faults, reads, writes, zero_maps
    gcnt[g, MAX_ORDER], gcnt[g, USED] = max_order, used
    if status == 2:
        ng, _ = _split(allowed, members, tmp, bkt, mstart, mcount, g, items[k, 5], fits, ng, rows, fols, sts, gcnt,
                       ginter, gunion, new_orders)
    return k, ng, status


def simulate(items, allowed, pers, n, shift, cont, wp_thp, bounds):
    """Every setting's figures: ``allowed[s, key]`` is setting s's allowed orders for a VMA key;
    ``bounds`` cuts the items into chunks of whole blocks, replayed side by side.  Returns, per chunk
    and setting, the counts (FAULTS..USED), folios by order, and per upper level the tables in use
    (count, first and last table index: a chunk may share its first with the chunk before)."""
    T, chunks, L = allowed.shape[0], len(bounds) - 1, len(pers)
    cnt, folios = np.zeros((chunks, T, 9), np.int64), np.zeros((chunks, T, 64), np.int64)
    upper = np.zeros((chunks, T, L, 3), np.int64)  # count, first and last table index
    upper[:, :, :, 1:] = -1

    def run(c: int) -> None:
        _run_chunk(items, int(bounds[c]), int(bounds[c + 1]), allowed, pers, n, shift, cont, wp_thp, cnt[c],
                   folios[c], upper[c])

    with ThreadPoolExecutor(chunks) as pool:  # the compiled chunks release the GIL (numba's prange: 9 s more compile)
        list(pool.map(run, range(chunks)))
    return cnt, folios, upper
