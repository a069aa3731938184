"""Page tables of a live process: the tables its present pages need, beside its VmPTE.

Kernel reference
----------------
``mm_pgtables_bytes()`` (VmPTE); ``pagemap_pmd_range()``/``pagemap_hugetlb_range()`` in
``fs/proc/task_mmu.c`` (present bit 63, swapped bit 62).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc._jit import call
from hugecalc.calc.tables import LevelRow, level_row, preallocated_tables, vmpte_bytes
from hugecalc.calc.touches import distinct_blocks
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.result import Result, field
from hugecalc.units import fmt_bytes


class ProcessResult(Result):
    command: str = "pgtable"
    tables: dict[str, int] = field("Tables by level")
    levels: list[LevelRow]
    page_table_bytes: int = field("Predicted page tables (as VmPTE counts)", "bytes")
    vm_pte_bytes: int = field("The process's VmPTE", "bytes")
    present_bytes: int = field("Present or swapped memory", "bytes")
    vmas: int = field("Mappings", "count")


def compute_process(profile: Profile, release: Release, pid: int,
                    vmas: list[tuple[int, int, int, str, np.ndarray, np.ndarray]],
                    vm_pte_bytes: int) -> ProcessResult:
    """Tables a process needs for the pages it has present (or swapped), across all its mappings.

    ``vmas``: ``(start, end, kernel_page_bytes, name, starts, ends)`` with the present intervals.
    A hugetlb mapping needs no tables below its hugepage's level; tables are shared between
    neighbouring mappings, so each level is counted over the union of all mappings.

    Kernel reference
    ----------------
    ``mm_pgtables_bytes()`` (VmPTE); ``pagemap_pmd_range()``/``pagemap_hugetlb_range()`` in
    ``fs/proc/task_mmu.c`` (present bit 63, swapped bit 62).
    """
    names = [lvl.name for lvl in profile.levels]
    level_rows = []
    for lvl in profile.levels[1:]:
        depth = names.index(lvl.name)
        parts_s, parts_e = [], []
        for _start, _end, kps, _, s, e in vmas:
            leaf = profile.hugetlb_size(kps).level if kps != profile.page_size else "pte"
            if depth <= names.index(leaf) and s.size:
                parts_s.append(s)
                parts_e.append(e)
        n = 0
        if parts_s:
            s = np.concatenate(parts_s)
            e = np.concatenate(parts_e)
            order = np.argsort(s, kind="stable")
            n = int(call(distinct_blocks, s[order], e[order], profile.table_span_bytes(lvl.name), 0, 1 << 62))
        n = max(n, preallocated_tables(profile, lvl.name))  # i386 PAE: the PMDs come with the process
        level_rows.append(level_row(profile, release, lvl.name, n))
    total = vmpte_bytes(profile, level_rows)
    present = int(sum(int((e - s).sum()) for *_, s, e in vmas))
    notes = []
    if vm_pte_bytes != total:
        notes.append(
            f"VmPTE is {fmt_bytes(vm_pte_bytes)}, {fmt_bytes(abs(vm_pte_bytes - total))} "
            f"{'more' if vm_pte_bytes > total else 'less'} than the tables the present pages need: tables "
            "stay allocated after their pages are unmapped or zapped (munmap of part of a range, "
            "MADV_DONTNEED without PT_RECLAIM, THP splits), and PMD-mapped THPs carry a deposited table")
    return ProcessResult(
        profile=profile.name, kernel=str(release), inputs={"pid": pid},
        tables={r.level: r.tables for r in level_rows}, levels=level_rows, page_table_bytes=total,
        vm_pte_bytes=vm_pte_bytes, present_bytes=present, vmas=len(vmas), notes=notes,
    )
