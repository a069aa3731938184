"""Page-table overhead of one mapping, level by level, and what ``madvise()`` leaves behind.

A level's table is needed for every distinct table-sized, table-aligned block of address space
that holds a touched address; the top level (PGD) always exists and is not counted, as
``/proc/PID/status`` ``VmPTE`` does not count it.  Touches are never expanded page by page:
strides are counted in closed form, address lists as merged intervals, and random fractions by
drawing per table (``touches.fraction_counts``).

Kernel reference
----------------
- ``mm_pgtables_bytes()`` / ``VmPTE`` in ``fs/proc/task_mmu.c``: PTE, PMD and PUD tables since
  Linux kernel commit af5b0f6a09e4 ("mm: consolidate page table accounting") (in v4.15).
- ``pgtable_trans_huge_deposit()`` from ``do_huge_pmd_anonymous_page()`` (``mm/huge_memory.c``):
  one PTE table is deposited, and counted (``mm_inc_nr_ptes``), per PMD-mapped anonymous THP;
  ``zap_huge_pmd()`` frees it with the THP.
- ``mm/pt_reclaim.c`` (v6.14, x86_64): ``MADV_DONTNEED`` frees PTE tables it empties; PMD/PUD
  tables are never reclaimed; ``MADV_FREE`` frees nothing.
- ``huge_pmd_share()`` in ``mm/hugetlb.c``: PMD-table sharing for MAP_SHARED hugetlb.
- The worst case (every table of a whole address space) is geometry: ``hugecalc.calc.tables``.
"""

from __future__ import annotations


from hugecalc.calc import explaining
from hugecalc.calc._jit import call
from hugecalc.calc.tables import (LevelRow, check_user_span, level_derivations, level_row, partial_pmd_ranges, preallocated_note,
                                  stride_blocks, table_aligned_start, vmpte_bytes)
from hugecalc.calc.touches import Counts, Touches, distinct_blocks, fraction_counts, stride_touches_in
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import HUGE_PMD_SHARE, HUGETLB_DONTNEED, PT_RECLAIM, Release, unconfirmed_notes
from hugecalc.result import Figure, Derivation, Model, Result, field
from hugecalc.units import ceil_div, fmt_bytes, fmt_size


class Comparison(Model):
    """The same mapping and touches with another backing."""

    backing: str = field("Backing")
    page_table_bytes: int | None = field("Page tables", "bytes", default=None)
    populated_bytes: int | None = field("Memory populated", "bytes", default=None)
    note: str | None = field("Note", default=None)


class PgtableResult(Result):
    command: str = "pgtable"
    tables: dict[str, int] = field("Tables by level")
    levels: list[LevelRow]
    page_table_bytes: int = field("Page tables (as VmPTE counts)", "bytes")
    page_table_bytes_after: int | None = field("Page tables after madvise", "bytes", default=None)
    populated_bytes: int = field("Memory the touches populate", "bytes")
    overhead_share: float = field("Page tables / populated memory", "share")
    shared_page_table_bytes: int | None = field("Page tables of all sharers, physically", "bytes", default=None)
    compare: list[Comparison] = []

    def figures(self) -> dict[str, Figure]:
        out = {"page tables": Figure(self.page_table_bytes, "bytes"), "populated": Figure(self.populated_bytes, "bytes")}
        if self.page_table_bytes_after is not None:
            out["after madvise"] = Figure(self.page_table_bytes_after, "bytes")
        return out


# --- the model ------------------------------------------------------------------------------


class Backing:
    """How touched memory is mapped: leaf level, unit of population, THP deposit."""

    def __init__(self, profile: Profile, name: str) -> None:
        self.name = name
        self.thp = name == "thp"
        self.hugetlb = name.startswith("hugetlb-")
        if name in ("anon", "thp"):
            self.leaf_level, self.unit = "pte", profile.page_size
        elif self.hugetlb:
            from hugecalc.units import parse_size

            size = parse_size(name.removeprefix("hugetlb-"), "--backing")
            h = profile.hugetlb_size(size)
            self.leaf_level, self.unit = h.level, size
        else:
            sizes = ", ".join(f"hugetlb-{fmt_size(h.size)}" for h in profile.hugetlb)
            raise InputError(f"{name!r}: use anon, thp or one of the profile's hugetlb sizes ({sizes})", field="backing")
        if self.thp and "pmd" not in [lvl.name for lvl in profile.levels[1:]]:
            raise InputError(f"thp: profile {profile.name} has no PMD level for PMD-mapped THP", field="backing")
        names = [lvl.name for lvl in profile.levels]
        # Tables needed: every level below the top down to the one whose entries map the unit.
        self.levels = names[1 : names.index(self.leaf_level) + 1]


def mapping_bounds(profile: Profile, vma_size: int, vma_start: int | None, backing: Backing) -> int:
    if vma_size <= 0:
        raise InputError("must be greater than zero", field="vma_size")
    if vma_start is None:
        align = table_aligned_start(profile, vma_size, backing.unit)
        vma_start = align if align + vma_size <= profile.user_va_bytes else 0
    if vma_start % profile.page_size:
        raise InputError(f"{vma_start:#x} is not aligned to the {fmt_size(profile.page_size)} page", field="vma_start")
    if vma_start + vma_size > profile.user_va_bytes:
        raise InputError(
            f"mapping [{vma_start:#x}, {vma_start + vma_size:#x}) does not fit in {profile.name}'s user "
            f"address space of {fmt_bytes(profile.user_va_bytes)} (TASK_SIZE {profile.user_va_bytes:#x})"
        )
    if backing.hugetlb and (vma_start % backing.unit or vma_size % backing.unit):
        raise InputError(
            f"--backing {backing.name}: the mapping's start {vma_start:#x} and size {fmt_size(vma_size)} must be "
            f"multiples of the {fmt_size(backing.unit)} hugepage (hugetlb mmap alignment)"
        )
    return vma_start


def _count(profile: Profile, backing: Backing, start: int, end: int, touches: Touches) -> Counts:
    page = profile.page_size
    spans = [profile.table_span_bytes(name) for name in backing.levels]
    pmd_span = profile.pmd_size
    has_pte = "pte" in backing.levels
    # THP: the PMD-aligned part entirely inside the mapping is PMD-mapped; edges are base pages.
    thp_lo = ceil_div(start, pmd_span) * pmd_span if backing.thp else start
    thp_hi = (end // pmd_span) * pmd_span if backing.thp else start
    if thp_hi <= thp_lo:
        thp_lo = thp_hi = start
    if touches.fraction is not None:
        spans = [profile.table_span_bytes(name) for name in backing.levels]
        leaf = pmd_span if backing.thp else (spans[-1] if spans else backing.unit)
        return fraction_counts(spans, leaf, page if backing.thp else backing.unit, page, backing.thp,
                               "pte" in backing.levels, start, end, touches.fraction, touches.seed)

    def blocks(block: int, lo: int, hi: int) -> int:
        if lo >= hi:
            return 0
        if touches.intervals is not None:
            return int(call(distinct_blocks, touches.intervals[0], touches.intervals[1], block, lo, hi))
        stride = touches.stride or page
        first, n = stride_touches_in(start, stride, lo, hi)
        return stride_blocks(first, n, stride, block)

    counts = [blocks(span, start, end) for span in spans]
    thps = 0
    if backing.thp:
        thps = blocks(pmd_span, thp_lo, thp_hi)
        populated = thps * pmd_span + page * (blocks(page, start, thp_lo) + blocks(page, thp_hi, end))
    else:
        populated = blocks(backing.unit, start, end) * backing.unit
    edges = sum(blocks(pmd_span, a, b) for a, b in partial_pmd_ranges(start, end, pmd_span)) if has_pte else 0
    return Counts(counts, populated, thps, edges)


def _check_options(profile: Profile, release: Release, b: Backing, touches: Touches, after: str | None,
                   shared_by: int) -> None:
    if touches.stride is not None:
        check_user_span(profile, touches.stride, "touch_stride")
    if touches.fraction is not None and not 0.0 <= touches.fraction <= 1.0:
        raise InputError(f"{touches.fraction} must be between 0 and 1", field="touch_fraction")
    if shared_by < 1:
        raise InputError("must be at least 1", field="shared_by")
    if shared_by > 1 and not b.hugetlb:
        raise InputError("applies to MAP_SHARED hugetlb mappings (--backing hugetlb-SIZE)", field="shared_by")
    if after == "free" and b.hugetlb:
        raise InputError("free: madvise(MADV_FREE) on a hugetlb mapping fails with EINVAL "
                         "(madvise_free_single_vma() accepts only anonymous VMAs)", field="after")
    if after == "dontneed" and b.hugetlb and not release.has(HUGETLB_DONTNEED):
        raise InputError(f"dontneed: madvise(MADV_DONTNEED) on a hugetlb mapping fails with EINVAL on {release}; "
                         "it works from 5.18 (commit 90e7e7f5ef3f)", field="after")


def _sharing(profile: Profile, release: Release, b: Backing, level_rows: list, shareable: int, shared_by: int,
             explain: list[Derivation], notes: list[str]) -> int:
    """Physical tables of ``shared_by`` processes (every level below the top, whatever VmPTE counts):
    each sharer has its own, except the shared PMD tables, which exist once."""
    own = sum(r.bytes for r in level_rows)
    pmd_bytes = profile.level("pmd").bytes_per_table if shareable else 0
    shared_total = shared_by * own - (shared_by - 1) * shareable * pmd_bytes
    if shareable:
        explain.append(Derivation(
            scope="sharing", figure="PMD tables shared",
            formula=f"{shareable} PMD tables cover whole {fmt_bytes(profile.table_span_bytes('pmd'))}-aligned ranges "
                    f"of the mapping and exist once for all {shared_by} processes: {shared_by} x {fmt_bytes(own)} of "
                    f"tables per process - {shared_by - 1} x {shareable} x {fmt_bytes(pmd_bytes)} = "
                    f"{fmt_bytes(shared_total)} physically; each process's VmPTE still counts them",
            rule=HUGE_PMD_SHARE.cite))
    else:
        notes.append(f"no page-table sharing for {b.name} on {profile.arch.value} {release}: only PMD tables of "
                     "MAP_SHARED hugetlb mappings that cover whole PUD-sized ranges are shared "
                     f"({HUGE_PMD_SHARE.name}: {HUGE_PMD_SHARE.spans_for(profile.arch.value)})")
    return shared_total


def _compare_backings(profile: Profile, release: Release, b: Backing, vma_size: int, start: int,
                      touches: Touches) -> list[Comparison]:
    """The same mapping and touches under each other backing the profile has."""
    out = []
    for other in _comparison_backings(profile, b):
        try:
            o = compute_pgtable(profile, release, vma_size=vma_size, vma_start=start, touches=touches, backing=other,
                                compare=False)
            out.append(Comparison(backing=other, page_table_bytes=o.page_table_bytes, populated_bytes=o.populated_bytes))
        except InputError as e:
            out.append(Comparison(backing=other, note=str(e).split(": ", 1)[-1]))
    return out


THP_DEPOSIT = Derivation(
    scope="levels", figure="pte tables (thp)",
    formula="a PMD-mapped THP needs no PTE table, but one is deposited and counted per THP, so every touched PMD "
            "range costs a PTE table either way",
    rule="pgtable_trans_huge_deposit() in do_huge_pmd_anonymous_page(), mm/huge_memory.c")


def compute_pgtable(profile: Profile, release: Release, *, vma_size: int, vma_start: int | None = None,
                    touches: Touches | None = None, backing: str = "anon", after: str | None = None,
                    shared_by: int = 1, compare: bool = True) -> PgtableResult:
    """Page tables one mapping needs for its touches, level by level.

    Kernel reference
    ----------------
    ``__pte_alloc()``/``__pmd_alloc()``/``__pud_alloc()`` in ``mm/memory.c`` allocate a table on
    the first fault in its range; ``mm_pgtables_bytes()`` (VmPTE); ``pgtable_trans_huge_deposit()``;
    ``mm/pt_reclaim.c``; ``huge_pmd_share()`` in ``mm/hugetlb.c``.
    """
    touches = touches or Touches()
    b = Backing(profile, backing)
    start = mapping_bounds(profile, vma_size, vma_start, b)
    end = start + vma_size
    _check_options(profile, release, b, touches, after, shared_by)
    c = _count(profile, b, start, end, touches)
    explain: list[Derivation] = []
    notes: list[str] = []
    if profile.preallocated_levels:
        c.tables = [0 if name in profile.preallocated_levels else n for name, n in zip(b.levels, c.tables)]
        notes.append(preallocated_note(profile, release))
    shareable = _shareable_pmd_tables(profile, release, b, start, end) if shared_by > 1 else 0
    after_counts = None
    if after is not None:
        after_counts, why, rule = _after_madvise(profile, release, b, c, after, shareable)
        explain.append(Derivation(scope="after", figure="Tables after madvise", formula=why, rule=rule))
    level_rows = [level_row(profile, release, name, n, None if after_counts is None else after_counts[i])
                  for i, (name, n) in enumerate(zip(b.levels, c.tables))]
    total = vmpte_bytes(profile, level_rows)
    if explaining():
        explain += level_derivations(profile, release, level_rows,
                                     f"of [{start:#x}, {end:#x}) holding a touched address")
    if b.thp:
        explain.append(THP_DEPOSIT)
    shared_total = (_sharing(profile, release, b, level_rows, shareable, shared_by, explain, notes)
                    if shared_by > 1 else None)
    arch = profile.arch.value
    notes += unconfirmed_notes(release, ([(PT_RECLAIM, arch)] if after == "dontneed" else [])
                               + ([(HUGE_PMD_SHARE, arch)] if shared_by > 1 else []))
    inputs = {"vma_size_bytes": vma_size, "vma_start": start, "vma_end": end, "backing": backing,
              "after": after, "shared_by": shared_by, **touches.describe(profile.page_size)}
    return PgtableResult(
        profile=profile.name, kernel=str(release), inputs=inputs,
        tables={r.level: r.tables for r in level_rows}, levels=level_rows, page_table_bytes=total,
        page_table_bytes_after=None if after_counts is None else vmpte_bytes(profile, level_rows, after=True),
        populated_bytes=c.populated, overhead_share=total / c.populated if c.populated else 0.0,
        shared_page_table_bytes=shared_total, notes=notes, explain=explain,
        compare=_compare_backings(profile, release, b, vma_size, start, touches) if compare else [],
    )


def _shareable_pmd_tables(profile: Profile, release: Release, b: Backing, start: int, end: int) -> int:
    """PMD tables of a MAP_SHARED hugetlb mapping that other processes share: those covering a
    whole PUD_SIZE-aligned range (huge_pmd_share(), on the arches that want it)."""
    names = [lvl.name for lvl in profile.levels]
    if b.leaf_level != "pmd" or "pud" not in names or not release.has(HUGE_PMD_SHARE, profile.arch.value):
        return 0
    pud_span = profile.table_span_bytes("pmd")
    lo, hi = ceil_div(start, pud_span) * pud_span, (end // pud_span) * pud_span
    return max(hi - lo, 0) // pud_span


def _after_madvise(profile: Profile, release: Release, b: Backing, c: Counts, after: str,
                   shared_pmds: int) -> tuple[list[int], str, str]:
    """Tables per level after madvise() of the whole mapping, why, and the rule."""
    arch = profile.arch.value
    tables = list(c.tables)
    where = f"kernel {release} on {arch}: "
    if after == "free":
        return tables, where + "MADV_FREE only marks pages lazily freeable; no table is freed", PT_RECLAIM.cite
    if b.hugetlb:
        why = "hugetlb page tables stay until munmap()"
        if shared_pmds:
            i = b.levels.index("pmd")
            tables[i] -= shared_pmds
            why += (f"; the {shared_pmds} shared PMD tables are unshared from this process, which drops them "
                    "from its VmPTE (they stay for the other sharers)")
        return tables, where + why, HUGETLB_DONTNEED.cite
    i = b.levels.index("pte")
    if release.has(PT_RECLAIM, arch) and arch != "x86_64":
        where = f"kernel {release} on {arch} (PT_RECLAIM on {arch} since 7.0): "
    if release.has(PT_RECLAIM, arch):
        tables[i] = c.edge_ptes
        why = ("MADV_DONTNEED frees every PTE table whose whole PMD range lies inside the mapping "
               "(CONFIG_PT_RECLAIM); " + (f"the {c.edge_ptes} touched tables at its unaligned edges stay"
                                          if c.edge_ptes else "the mapping has no touched partial PMD range")
               + "; PMD and upper tables stay")
    elif b.thp:
        tables[i] -= c.thps  # zap_huge_pmd() frees the deposited table
        why = "no PT_RECLAIM here: emptied PTE tables stay until munmap(); zap_huge_pmd() frees each THP's deposited PTE table"
    else:
        why = "no PT_RECLAIM here: emptied PTE tables stay until munmap()"
    return tables, where + why, PT_RECLAIM.cite


def _comparison_backings(profile: Profile, current: Backing) -> list[str]:
    """The profile's PMD- and PUD-level hugetlb sizes (2M and 1G on x86-64), plus anon."""
    names = [] if current.name == "anon" else ["anon"]
    for h in profile.hugetlb:
        if h.contig == 1 and h.level in ("pmd", "pud"):
            name = f"hugetlb-{fmt_size(h.size)}"
            if name != current.name:
                names.append(name)
    return names
