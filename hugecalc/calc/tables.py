"""Page-table geometry shared by every calculation: rows per level, what VmPTE counts, where a
mapping lands by default, and how many aligned blocks a stride touches.

Pure Python, no numba: the closed-form paths (``pgtable --worst-case``) use it without paying for
the JIT.

Kernel reference
----------------
- ``mm_pgtables_bytes()`` / ``VmPTE`` in ``fs/proc/task_mmu.c``: ``mm_inc_nr_ptes/pmds/puds()``
  add ``PTRS_PER_X * sizeof(entry)``; ``__p4d_alloc()`` accounts nothing and the PGD comes with
  the mm.  PTE, PMD and PUD tables since commit af5b0f6a09e4 ("mm: consolidate page table
  accounting", v4.15); PTE tables only before.
- ``__pte_alloc()``/``__pmd_alloc()``/``__pud_alloc()`` in ``mm/memory.c``: a table on the first
  fault in its range.
"""

from __future__ import annotations

from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import VMPTE_ALL_LEVELS, Release
from hugecalc.result import Derivation, Model, Result, field
from hugecalc.units import ceil_div, fmt_bytes


class LevelRow(Model):
    """Tables one level needs."""

    level: str = field("Level")
    tables: int = field("Tables", "count")
    table_bytes: int = field("Bytes per table", "bytes")
    bytes: int = field("Bytes", "bytes")
    in_vmpte: bool = field("In VmPTE")
    tables_after: int | None = field("Tables after madvise", "count", default=None)


class WorstCaseResult(Result):
    command: str = "pgtable"
    tables: dict[str, int] = field("Tables by level")
    levels: list[LevelRow]
    page_table_bytes: int = field("Page tables (as VmPTE counts)", "bytes")
    pte_ref: list[dict] = []


def in_vmpte(release: Release, level: str) -> bool:
    """Whether VmPTE counts this level's tables (PTE always; PMD and PUD from v4.15; never P4D)."""
    return level == "pte" or (level in ("pmd", "pud") and release.has(VMPTE_ALL_LEVELS))


def level_row(profile: Profile, release: Release, name: str, tables: int, tables_after: int | None = None) -> LevelRow:
    lvl = profile.level(name)
    return LevelRow(level=name, tables=tables, table_bytes=lvl.bytes_per_table, bytes=tables * lvl.bytes_per_table,
                    in_vmpte=in_vmpte(release, name), tables_after=tables_after)


def level_derivations(profile: Profile, release: Release, rows: list[LevelRow], where: str) -> list[Derivation]:
    """What VmPTE counts, and each level's tables: distinct table-span blocks ``where`` (e.g. "of
    [start, end) holding a touched address")."""
    top = profile.levels[0]
    out = [Derivation(
        scope="levels", figure="counted as VmPTE",
        formula=("PTE, PMD and PUD tables" if release.has(VMPTE_ALL_LEVELS) else
                 f"PTE tables only (kernel {release}; PMD tables were reported as VmPMD)")
                + f"; the {top.name} ({fmt_bytes(top.bytes_per_table)}) exists for every process and P4D tables "
                "(5-level paging) are not accounted: neither is counted",
        rule=VMPTE_ALL_LEVELS.cite + "; __p4d_alloc() in mm/memory.c accounts nothing")]
    for r in rows:
        out.append(Derivation(
            scope="levels", figure=f"{r.level} tables",
            formula=f"distinct {fmt_bytes(profile.table_span_bytes(r.level))}-aligned blocks {where} = {r.tables:,}; "
                    f"x {fmt_bytes(r.table_bytes)} = {fmt_bytes(r.bytes)}",
            rule="__pte_alloc()/__pmd_alloc()/__pud_alloc() in mm/memory.c: a table on the first fault in its range"))
    return out


def vmpte_bytes(profile: Profile, rows: list[LevelRow], after: bool = False) -> int:
    """What VmPTE would show for these tables: PTE, PMD and PUD tables, PTRS_PER_X * sizeof(entry)."""
    total = 0
    for r in rows:
        if r.in_vmpte:
            lvl = profile.level(r.level)
            total += (r.tables_after if after else r.tables) * lvl.entries * lvl.entry_bytes
    return total


def counted_levels(profile: Profile) -> list[str]:
    """The levels below the top one, top down: the tables a mapping can add."""
    return [lvl.name for lvl in profile.levels[1:]]


def preallocated_tables(profile: Profile, level: str) -> int:
    """User tables of a preallocated level every process has (i386 PAE: 3 PMDs for 3 GiB)."""
    return ceil_div(profile.user_va_bytes, profile.table_span_bytes(level)) if level in profile.preallocated_levels else 0


def preallocated_note(profile: Profile, release: Release) -> str | None:
    """What a profile with preallocated tables means for a mapping's count."""
    if not profile.preallocated_levels:
        return None
    parts = [f"{preallocated_tables(profile, name)} {name.upper()} tables "
             f"({fmt_bytes(preallocated_tables(profile, name) * profile.level(name).bytes_per_table)})"
             for name in profile.preallocated_levels]
    return (f"{profile.name}: every process has its {', '.join(parts)} from pgd_alloc() on, counted in its VmPTE"
            + ("" if release.has(VMPTE_ALL_LEVELS) else " (as VmPMD before 4.15)") + ": a mapping adds none")


def table_aligned_start(profile: Profile, size: int, min_align: int) -> int:
    """The default start of a ``size``-byte mapping: aligned to the span of the smallest table
    that can hold it whole (or the largest counted table's span), and to ``min_align`` at least,
    so that it needs as few tables as it can."""
    spans = [profile.table_span_bytes(name) for name in counted_levels(profile)] or [profile.page_size]
    return max(min([s for s in spans if s >= size], default=max(spans)), min_align)


def partial_pmd_ranges(start: int, end: int, pmd: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` in PMD ranges it does not cover whole: its edges."""
    lo, hi = ceil_div(start, pmd) * pmd, (end // pmd) * pmd
    if lo >= hi:
        return [(start, end)]
    return [(a, b) for a, b in ((start, lo), (hi, end)) if a < b]


def stride_blocks(first: int, n: int, stride: int, block: int) -> int:
    """Distinct ``block``-sized aligned blocks holding ``first + k*stride``, k < n (closed form)."""
    if n <= 0:
        return 0
    if stride >= block:
        return n  # consecutive touches are at least a block apart
    last = first + (n - 1) * stride
    return last // block - first // block + 1  # no block between first and last is skipped


def check_user_span(profile: Profile, value: int, field: str) -> int:
    """A stride or length inside one process's address space: positive and at most TASK_SIZE."""
    if value <= 0:
        raise InputError("must be greater than zero", field=field)
    if value > profile.user_va_bytes:
        raise InputError(f"{value:#x} is larger than {profile.name}'s user address space "
                         f"({fmt_bytes(profile.user_va_bytes)}, TASK_SIZE {profile.user_va_bytes:#x})", field=field)
    return value


# --- worst case -----------------------------------------------------------------------------

# Documentation/mm/pte_ref.rst (Qi Zheng's 2022 RFC "Try to free user PTE page table pages"):
# "for 32-bit, take 3G user address space, 4K page size; for 64-bit, take 48-bit address width".
PTE_REF = [
    {"case": "32-bit, 3G user space, 4K", "pte_bytes": 3 << 20, "pmd_bytes": 3 << 10},
    {"case": "64-bit, 48-bit address width, 4K", "pte_bytes": 512 << 30, "pmd_bytes": 1 << 30},
]


def compute_worst_case(profile: Profile, release: Release) -> WorstCaseResult:
    """Every table a process could need: its whole user address space fully populated.

    Kernel reference
    ----------------
    ``TASK_SIZE`` per architecture; ``VmPTE`` counts every level below the PGD (v4.15+);
    Documentation/mm/pte_ref.rst's worst-case table.
    """
    rows = []
    explain = []
    for lvl in profile.levels[1:]:
        span = profile.table_span_bytes(lvl.name)
        n = ceil_div(profile.user_va_bytes, span)
        rows.append(level_row(profile, release, lvl.name, n))
        explain.append(Derivation(
            scope="worst case", figure=f"{lvl.name} tables",
            formula=f"ceil({profile.user_va_bytes:#x} / {fmt_bytes(span)}) = {n:,} x {fmt_bytes(lvl.bytes_per_table)} "
                    f"= {fmt_bytes(n * lvl.bytes_per_table)}",
            rule="TASK_SIZE; one table per table-sized block of user address space"))
    top = profile.levels[0]
    used = ceil_div(profile.user_va_bytes, profile.span_bytes(top.name))
    notes = [f"{top.name}: 1 table of {fmt_bytes(top.bytes_per_table)} ({used:,} entries used = "
             f"{fmt_bytes(used * top.entry_bytes)}), not in VmPTE"]
    return WorstCaseResult(
        profile=profile.name, kernel=str(release), inputs={"worst_case": True, "user_va_bytes": profile.user_va_bytes},
        tables={r.level: r.tables for r in rows}, levels=rows, page_table_bytes=vmpte_bytes(profile, rows),
        pte_ref=PTE_REF, notes=notes, explain=explain,
    )


