"""Page tables of a live process: the tables its present pages need, beside its VmPTE.

Kernel reference
----------------
``mm_pgtables_bytes()`` (VmPTE); ``pagemap_pmd_range()``/``pagemap_hugetlb_range()`` in
``fs/proc/task_mmu.c`` (present bit 63, swapped bit 62).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc._jit import call
from hugecalc.calc.tables import (LevelRow, level_derivations, level_row, partial_pmd_ranges, preallocated_tables,
                                  vmpte_bytes)
from hugecalc.calc.touches import distinct_blocks
from hugecalc.machine.capture import PresentVma, ANON_KINDS
from hugecalc.profiles import Profile
from hugecalc.releases import PT_RECLAIM, Release, unconfirmed_notes
from hugecalc.result import Derivation, Result, field
from hugecalc.units import ceil_div, fmt_bytes


class ProcessResult(Result):
    command: str = "pgtable"
    tables: dict[str, int] = field("Tables by level")
    levels: list[LevelRow]
    page_table_bytes: int = field("Predicted page tables (as VmPTE counts)", "bytes")
    page_table_bytes_after: int | None = field("After madvise", "bytes", default=None)
    page_table_bytes_backing: int | None = field("Page tables with --backing", "bytes", default=None)
    populated_bytes_backing: int | None = field("Memory populated with --backing", "bytes", default=None)
    vm_pte_bytes: int = field("The process's VmPTE", "bytes")
    present_bytes: int = field("Present or swapped memory", "bytes")
    vmas: int = field("Mappings", "count")


def block_ids(starts: np.ndarray, ends: np.ndarray, span: int) -> np.ndarray:
    """The distinct ``span``-aligned block indices the byte intervals touch."""
    if starts.size == 0:
        return np.zeros(0, dtype=np.int64)
    first, last = starts // span, (ends - 1) // span
    counts = last - first + 1
    offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(np.repeat(first, counts) + offsets)


def level_counts(profile: Profile, vmas: list[tuple[int, np.ndarray, np.ndarray]],
                 pte_blocks: np.ndarray | None = None,
                 pte_vmas: list[tuple[int, np.ndarray, np.ndarray]] | None = None) -> dict[str, int]:
    """Tables per level (top down) for mappings given as ``(kernel_page_bytes, starts, ends)``
    of their present pages; each level over the union of all mappings, as neighbours share tables.
    A hugetlb mapping needs no tables below its hugepage's level.  For a replayed fault walk:
    ``pte_blocks``, the PMD-block indices of the PTE tables it found, joined to those of the
    mappings ``pte_vmas`` (default ``vmas``) for the PTE level."""
    names = [lvl.name for lvl in profile.levels]
    out = {}
    for lvl in profile.levels[1:]:
        depth = names.index(lvl.name)
        listed = pte_vmas if lvl.name == "pte" and pte_vmas is not None else vmas
        parts = [(s, e) for kps, s, e in listed if s.size and depth <= names.index(
            profile.hugetlb_size(kps).level if kps != profile.page_size else "pte")]
        s = np.concatenate([a for a, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
        e = np.concatenate([b for _, b in parts]) if parts else np.zeros(0, dtype=np.int64)
        span = profile.table_span_bytes(lvl.name)
        if lvl.name == "pte" and pte_blocks is not None:
            n = int(np.union1d(block_ids(s, e, span), pte_blocks).size)
        elif s.size:
            order = np.argsort(s, kind="stable")
            n = int(call(distinct_blocks, s[order], e[order], span, 0, 1 << 62))
        else:
            n = 0
        out[lvl.name] = max(n, preallocated_tables(profile, lvl.name))  # i386 PAE: the PMDs come with the process
    return out


def compute_process(profile: Profile, release: Release, pid: int, vmas: list[PresentVma], vm_pte_bytes: int,
                    after: str | None = None, backing: str = "anon") -> ProcessResult:
    """Tables a process needs for the pages it has present (or swapped), across all its mappings,
    and with ``after``, what remains after madvise(MADV_DONTNEED|MADV_FREE) of its anonymous ones.

    ``vmas``: each mapping with its present (or swapped) pages as byte intervals.
    A hugetlb mapping needs no tables below its hugepage's level; tables are shared between
    neighbouring mappings, so each level is counted over the union of all mappings.  After
    MADV_DONTNEED with PT_RECLAIM a PTE table goes only where its whole PMD range lies inside one
    anonymous mapping; PMD and upper tables stay.  ``backing`` (thp, hugetlb-SIZE): the what-if
    of the anonymous mappings' whole aligned ranges holding a present page backed that way.

    Kernel reference
    ----------------
    ``mm_pgtables_bytes()`` (VmPTE); ``pagemap_pmd_range()``/``pagemap_hugetlb_range()`` in
    ``fs/proc/task_mmu.c`` (present bit 63, swapped bit 62); ``reclaim_pt_is_enabled()`` in
    ``zap_pte_range()`` (mm/pt_reclaim.c).
    """
    listed = [(v.kernel_page_bytes, v.starts, v.ends) for v in vmas]
    counts = level_counts(profile, listed)
    notes: list[str] = []
    reclaims = after == "dontneed" and release.has(PT_RECLAIM, profile.arch.value)
    after_counts = None
    if after is not None:
        after_counts = dict(counts)
        if reclaims and "pte" in counts:
            after_counts["pte"] = _pte_tables_after_reclaim(profile, vmas, listed)
        notes += unconfirmed_notes(release, [(PT_RECLAIM, profile.arch.value)] if after == "dontneed" else [])
        notes.append(f"after MADV_{after.upper()} of the anonymous mappings (heap and stack too) on {release}: "
                     + ("PTE tables whose whole PMD range lies inside one of them go (PT_RECLAIM); the others stay"
                        if reclaims else "no table is freed"))
    level_rows = [level_row(profile, release, name, n, None if after_counts is None else after_counts[name])
                  for name, n in counts.items()]
    total = vmpte_bytes(profile, level_rows)
    backed = None
    if backing != "anon":
        backed = _backed(profile, release, vmas, backing)
        notes.append(f"--backing {backing}: the anonymous mappings' whole {fmt_bytes(backed[2])}-aligned ranges that "
                     "hold a present page backed that way, their edges as now"
                     + ("; a PMD-mapped THP still deposits its PTE table" if backing == "thp" else ""))
    present = int(sum(int((v.ends - v.starts).sum()) for v in vmas))
    if vm_pte_bytes != total:
        notes.append(
            f"VmPTE is {fmt_bytes(vm_pte_bytes)}, {fmt_bytes(abs(vm_pte_bytes - total))} "
            f"{'more' if vm_pte_bytes > total else 'less'} than the tables the present pages need: tables "
            "stay allocated after their pages are unmapped or zapped (munmap of part of a range, "
            "MADV_DONTNEED without PT_RECLAIM, THP splits), and PMD-mapped THPs carry a deposited table")
    return ProcessResult(
        profile=profile.name, kernel=str(release), inputs={"pid": pid, "after": after, "backing": backing},
        tables={r.level: r.tables for r in level_rows}, levels=level_rows, page_table_bytes=total,
        page_table_bytes_after=None if after is None else vmpte_bytes(profile, level_rows, after=True),
        page_table_bytes_backing=None if backed is None else backed[0],
        populated_bytes_backing=None if backed is None else backed[1],
        vm_pte_bytes=vm_pte_bytes, present_bytes=present, vmas=len(vmas), notes=notes,
        explain=_derivations(profile, release, level_rows, len(vmas), present, after, reclaims),
    )


def _pte_tables_after_reclaim(profile: Profile, vmas: list[PresentVma], listed: list) -> int:
    """PTE tables left after MADV_DONTNEED with PT_RECLAIM: an anonymous mapping keeps those at its
    unaligned edges (the PMD range is not wholly zapped), every other mapping keeps them all."""
    kept = []
    for v, item in zip(vmas, listed):
        if v.kind not in ANON_KINDS:
            kept.append(item)
            continue
        for a, b in partial_pmd_ranges(v.start, v.end, profile.pmd_size):
            s, e = np.maximum(v.starts, a), np.minimum(v.ends, b)
            kept.append((item[0], s[s < e], e[s < e]))
    return level_counts(profile, kept)["pte"]


def _derivations(profile: Profile, release: Release, level_rows: list, mappings: int, present: int,
                 after: str | None, reclaims: bool) -> list[Derivation]:
    out = [Derivation(scope="pages", figure="present or swapped memory",
                      formula=f"pagemap entries with bit 63 (present) or 62 (swapped) in {mappings:,} mappings "
                              f"= {fmt_bytes(present)}",
                      rule="pagemap_pmd_range()/pagemap_hugetlb_range() in fs/proc/task_mmu.c")]
    out += level_derivations(profile, release, level_rows,
                             f"holding a present or swapped page, over the union of the {mappings:,} mappings "
                             "(neighbours share tables; a hugetlb mapping has none below its hugepage's level)")
    if after is not None:
        out.append(Derivation(
            scope="after", figure=f"tables after MADV_{after.upper()}",
            formula=", ".join(f"{r.level} {r.tables:,} -> {r.tables_after:,}" for r in level_rows)
                    + f" = {fmt_bytes(vmpte_bytes(profile, level_rows, after=True))}",
            rule=("reclaim_pt_is_enabled() in zap_pte_range() (mm/pt_reclaim.c): a PTE table goes when its whole "
                  "PMD range is zapped" if reclaims else
                  "zap_pte_range() in mm/memory.c clears entries and keeps the tables")))
    return out


def _backed(profile: Profile, release: Release, vmas: list[PresentVma], backing: str) -> tuple[int, int, int]:
    """(page-table bytes, populated bytes, unit) with the anonymous mappings' whole unit-aligned
    ranges that hold a present page backed by ``backing`` (thp: PMD THPs with their deposited PTE
    table; hugetlb-SIZE: no table below the hugepage's level)."""
    from hugecalc.calc.pgtable import Backing

    b = Backing(profile, backing)
    unit = profile.pmd_size if b.thp else b.unit
    listed, populated = [], 0
    for v in vmas:
        s, e = v.starts, v.ends
        if v.kind not in ANON_KINDS or v.kernel_page_bytes != profile.page_size:
            listed.append((v.kernel_page_bytes, s, e))
            populated += int((e - s).sum())
            continue
        lo, hi = ceil_div(v.start, unit) * unit, (v.end // unit) * unit
        for a, z in [(v.start, lo), (hi, v.end)] if lo < hi else [(v.start, v.end)]:
            es, ee = np.maximum(s, a), np.minimum(e, z)  # the edges stay base pages
            listed.append((profile.page_size, es[es < ee], ee[es < ee]))
            populated += int((ee - es)[es < ee].sum())
        if lo < hi:
            ws, we = np.maximum(s, lo), np.minimum(e, hi)  # present pages in the whole units
            ids = block_ids(ws[ws < we], we[ws < we], unit)
            whole_s, whole_e = ids * unit, ids * unit + unit
            listed.append((profile.page_size if b.thp else unit, whole_s, whole_e))
            populated += int(ids.size) * unit
    rows = [level_row(profile, release, name, n) for name, n in level_counts(profile, listed).items()]
    return vmpte_bytes(profile, rows), populated, unit
