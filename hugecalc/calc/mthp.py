"""Multi-size THP: which folio size each page fault gets, and the faults, folios, TLB entries and
page tables that follow from it.

The measured pass touches one byte every ``touch_stride`` from the start of the VMA to its end, in
address order, like ``memset``.  ``compute_mthp`` runs in stages: the settings of the pass, the
orders a fault may get, the fault walk (``hugecalc.calc.faults``), the counts, the result.

Kernel reference
----------------
- Which orders are allowed: ``hugecalc.calc.orders`` (``thp_vma_allowable_orders()``,
  ``shmem_allowable_huge_orders()``, ``thp_vma_suitable_order()``).
- ``__handle_mm_fault()``: the PMD path (``create_huge_pmd()``) only while ``pmd_none()``.
- ``alloc_anon_folio()`` (mm/memory.c, v6.8+): the highest allowed order whose aligned range is
  ``pte_range_none()``; order 0 otherwise.
- ``do_anonymous_page()``: a read fault maps the zero page; ``wp_page_copy()`` then copies it into
  an order-0 folio; ``do_huge_pmd_anonymous_page()`` maps the huge zero page on a read fault and
  ``do_huge_zero_wp_pmd()`` (v6.13) replaces it with a PMD THP on the write.
- ``shmem_suitable_orders()`` (mm/shmem.c); ``finish_fault()`` maps a whole large folio at one fault; ``do_set_pmd()`` maps a
  PMD-size one with a PMD and deposits no PTE table (x86).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from hugecalc.calc import explaining, per_profile
from hugecalc.calc._jit import call
from hugecalc.calc import faults
from hugecalc.calc.khugepaged import KhugepagedDesign, compute_khugepaged, prepopulated_bitmaps
from hugecalc.calc.orders import (Pass, PassShape, ThpSettings, allowed_orders, anon_orders, file_orders,
                                  pass_settings, pmd_order)
from hugecalc.calc.tables import counted_levels, level_row, preallocated_note, stride_blocks, vmpte_bytes
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import (ARM64_CONTPTE, HUGE_ZERO_WP_THP, KHUGEPAGED_MTHP, MTHP_ANON, SHMEM_MTHP,
                               Release, unconfirmed_notes)
from hugecalc.result import Figure, Derivation, Model, Result, field
from hugecalc.units import fmt_bytes, fmt_size

KHUGEPAGED_SERIES = 'Nico Pache, "khugepaged: mTHP support", 2025'
FAULT_AROUND_BYTES = 65536  # fault_around_bytes default (mm/memory.c)


def tlb_block_pages(profile: Profile, release: Release) -> int:
    """Pages one last-level TLB entry covers inside a large enough folio: arm64's contpte block
    (from v6.9), else the hardware coalescing the profile assumes (1: none)."""
    if profile.cont_pte_entries > 1 and release.has(ARM64_CONTPTE, profile.arch.value):
        return profile.cont_pte_entries
    return profile.tlb_coalesce_pages


def fault_around_pages(profile: Profile) -> int:
    """``fault_around_pages``: 65536 >> PAGE_SHIFT (16 on 4K pages)."""
    return max(FAULT_AROUND_BYTES // profile.page_size, 1)


class FolioCount(Model):
    size_bytes: int = field("Folio size", "bytes")
    count: int = field("Folios", "count")


class MthpResult(Result):
    command: str = "mthp"
    faults: int = field("Page faults", "count")
    read_faults: int = field("Read faults", "count")
    write_faults: int = field("Write faults", "count")
    folios: list[FolioCount]
    fault_orders_bytes: list[int] = field("Sizes a fault may get", "bytes")
    tlb_entries: int = field("Last-level TLB entries", "count")
    tables: dict[str, int] = field("Page tables by level")
    page_table_bytes: int = field("Page tables (as VmPTE counts)", "bytes")
    populated_bytes: int = field("Memory populated", "bytes")
    touched_bytes: int = field("Memory touched (whole pages)", "bytes")
    bloat: float = field("Populated / touched")
    largest_fault_clear_bytes: int = field("Largest single fault clears", "bytes")
    largest_fault_clear_seconds: float = field("Its zeroing time", "seconds")
    khugepaged: list[KhugepagedDesign] | None = None

    def figures(self) -> dict[str, Figure]:
        return {"faults": Figure(self.faults), "TLB entries": Figure(self.tlb_entries),
                "populated": Figure(self.populated_bytes, "bytes"),
                "page tables": Figure(self.page_table_bytes, "bytes")}


class MthpNowWhatIf(Result):
    """A machine's THP settings now beside a what-if (``--host``/``--profile host``)."""

    command: str = "mthp"
    now: MthpResult
    what_if: MthpResult | None = None

    def figures(self) -> dict[str, Figure]:
        later = self.what_if or self.now
        return {"faults now": Figure(self.now.faults), "faults what-if": Figure(later.faults),
                "TLB entries now": Figure(self.now.tlb_entries), "TLB entries what-if": Figure(later.tlb_entries),
                "populated now": Figure(self.now.populated_bytes, "bytes"),
                "populated what-if": Figure(later.populated_bytes, "bytes")}


class SizeRow(Model):
    """One mTHP size alone, for the side-by-side comparison."""

    size_bytes: int = field("Size", "size")
    faults: int = field("Faults", "count")
    folios: int = field("Folios", "count")
    tlb_entries: int = field("TLB entries", "count")
    page_table_bytes: int = field("Page tables", "bytes")
    populated_bytes: int = field("Populated", "bytes")
    bloat: float = field("Bloat")
    largest_fault_clear_bytes: int = field("Largest fault clears", "bytes")
    largest_fault_clear_seconds: float = field("Worst fault clear", "seconds")
    tables: dict[str, int] = field("Page tables by level")


class MthpComparison(Result):
    command: str = "mthp"
    sizes: list[SizeRow]

    def figures(self) -> dict[str, Figure]:
        """Faults of each size alone (the first is base pages only)."""
        return {f"faults {fmt_size(r.size_bytes)}": Figure(r.faults) for r in self.sizes}


@dataclass(frozen=True)
class Walk:
    """Stage 3, what the fault walk found."""

    read_faults: int
    write_faults: int
    populated_bytes: int
    tlb_entries: int
    largest_folio_bytes: int
    folios: tuple[int, ...]  # count per order
    tables: MappingProxyType  # per counted level, top down (read-only: a walk is shared by the passes that repeat it)
    cont_pages: int  # the TLB's contiguous block, in pages (1: none)


def walk(profile: Profile, release: Release, p: Pass, allowed: set[int]) -> Walk:
    """Stage 3: run the fault walk and count the page tables the pass needs; once per profile object,
    release, the pass's range and touches, and the orders allowed (a sweep's or a fleet's passes repeat)."""
    key = (walk, walk_release(profile, release), walk_key(p), frozenset(allowed))
    return per_profile(profile, key, lambda: _walk(profile, release, p, allowed))


def walk_key(p: Pass) -> tuple:
    """What a walk reads of a pass besides the orders allowed: its range and touches."""
    return p.start, p.end, p.touch_stride, p.prepopulated_stride, p.shmem, p.access


def walk_release(profile: Profile, release: Release) -> tuple:
    """All a walk reads of the release (keep with ``_walk``): releases alike in these walk alike,
    so a fleet's many kernels share their walks."""
    return release.has(HUGE_ZERO_WP_THP), tlb_block_pages(profile, release)


def _walk(profile: Profile, release: Release, p: Pass, allowed: set[int]) -> Walk:
    # Reads of the release: walk_release() only (the memo's key).
    P = pmd_order(profile)
    out_folios = np.zeros(P + 1, dtype=np.int64)
    out = np.zeros(6, dtype=np.int64)
    cont = tlb_block_pages(profile, release)
    period = faults.repeat_period(p.start, p.end, profile.pmd_size, p.touch_stride, p.prepopulated_stride)
    # Work: PMD blocks walked (the edges and one period, or every block with a touch) x faults in one.
    blocks = (p.end - p.start) // profile.pmd_size + 2
    touches = (p.end - p.start) // p.touch_stride + ((p.end - p.start) // p.prepopulated_stride if p.prepopulated_stride else 0) + 2
    walked = min(blocks, 2 + period // profile.pmd_size) if period else min(blocks, touches)
    upper = sum((p.end - p.start) // profile.table_span_bytes(name) + 2 for name in counted_levels(profile)[:-1])
    f = faults.module_for(walked * min(profile.pmd_size // max(p.touch_stride, profile.page_size), 512) + upper)
    call(f.fault_walk, p.start, p.end, profile.page_size, profile.pmd_size, p.touch_stride, p.prepopulated_stride, period,
         sum(1 << o for o in allowed if o < P), P in allowed, p.shmem, p.access == "read-then-write",
         release.has(HUGE_ZERO_WP_THP), cont, out_folios, out)
    levels = counted_levels(profile)  # top down; the PTE tables come from the walk
    tables = {name: int(call(f.upper_tables, p.start, p.end, profile.table_span_bytes(name), p.touch_stride, p.prepopulated_stride))
              for name in levels[:-1]}
    tables[levels[-1]] = int(out[5])
    for name in profile.preallocated_levels:
        tables[name] = 0  # every process has them already (preallocated_note())
    return Walk(read_faults=int(out[0]), write_faults=int(out[1]), populated_bytes=int(out[2]),
                tlb_entries=int(out[3]), largest_folio_bytes=int(out[4]), folios=tuple(int(c) for c in out_folios),
                tables=MappingProxyType(tables), cont_pages=cont)


def tlb_derivation(profile: Profile, release: Release, cont: int, scope: str, where: str) -> Derivation:
    """How last-level TLB entries are counted: PMD leaves, contiguous-PTE blocks, pages."""
    return Derivation(
        scope=scope, figure="last-level TLB entries",
        formula=f"one per PMD leaf, one per {cont}-page contiguous block inside a folio at least that large, "
                f"else one per page; {where}" if cont > 1 else f"one per PMD leaf, else one per page; {where}",
        rule=ARM64_CONTPTE.cite if profile.cont_pte_entries > 1 and release.has(ARM64_CONTPTE, profile.arch.value)
        else ("no contpte before v6.9: " + ARM64_CONTPTE.cite) if profile.cont_pte_entries > 1 else
        "no kernel-managed contiguous bit" + (" (hardware PTE coalescing assumed)" if cont > 1 else ""))


def _derivations(profile: Profile, release: Release, p: Pass, allowed: set[int], why: str, w: Walk,
             clear_s: float) -> list[Derivation]:
    """Stage 4b: how each figure was derived."""
    page = profile.page_size
    huge_zero_thp = release.has(HUGE_ZERO_WP_THP)
    n_pre = (p.end - 1 - p.start) // p.prepopulated_stride + 1 if p.prepopulated_stride else 0
    explain = [Derivation(scope="orders", figure="sizes a fault may get",
                          formula=(", ".join(fmt_size(page << o) for o in sorted(allowed)) or "base pages only")
                          + f" ({why})",
                          rule="thp_vma_allowable_orders() in include/linux/huge_mm.h" if not p.shmem else
                          "shmem_allowable_huge_orders() in mm/shmem.c")]
    if p.access == "read-then-write" and not p.shmem:
        explain.append(Derivation(
            scope="faults", figure="read-then-write",
            formula="a read fault maps the zero page; the write then copies it into an order-0 folio "
                    + ("(a huge zero page is replaced by a PMD THP)" if huge_zero_thp else
                       "(a huge zero page is split and every written page copied at order 0)"),
            rule="do_anonymous_page(), wp_page_copy() in mm/memory.c; " + HUGE_ZERO_WP_THP.cite))
    explain.append(Derivation(
        scope="faults", figure="faults",
        formula=f"{w.read_faults:,} read + {w.write_faults:,} write: one per folio "
                + ("(mapped whole by finish_fault())" if p.shmem else "(alloc_anon_folio() maps it at once)")
                + (f", and none on the {n_pre:,} prepopulated pages" if p.prepopulated_stride else ""),
        rule="alloc_anon_folio() in mm/memory.c" if not p.shmem else "shmem_fault() and finish_fault()"))
    if p.shmem and p.access == "read-then-write":
        explain.append(Derivation(
            scope="faults", figure="fault-around",
            formula=f"read faults first map pages already in the page cache within fault_around_bytes = "
                    f"{FAULT_AROUND_BYTES} ({fault_around_pages(profile)} pages), clamped to the VMA and PTE "
                    "table; the pass meets fresh memory, so there are none and each fault allocates its folio",
            rule="do_read_fault() / do_fault_around() in mm/memory.c"))
    explain.append(tlb_derivation(profile, release, w.cont_pages, "tlb", "counted where the pass touched"))
    explain.append(Derivation(
        scope="latency", figure="largest single fault",
        formula=f"clears {fmt_bytes(w.largest_folio_bytes)} at {profile.costs.clear_gib_per_s:g} GiB/s = "
                f"{clear_s * 1e6:.1f} us",
        rule="folio_zero_user() / clear_huge_page() zero a new folio inside the fault"))
    return explain


@dataclass(frozen=True)
class KhugepagedScan:
    """What khugepaged finds after the pass: ``max_ptes_none`` and, per PMD range, which PTEs are
    present (None: the prepopulated pages and the pass)."""

    max_ptes_none: int = 511
    occupancy: list | None = None


def _khugepaged(profile: Profile, release: Release, p: Pass, allowed: set[int], scan: KhugepagedScan,
                notes: list[str]) -> list[KhugepagedDesign]:
    if p.shmem:
        raise InputError("models anonymous memory: mTHP collapse is for anon VMAs", field="khugepaged")
    occupancy = scan.occupancy
    if occupancy is None:
        if not p.prepopulated_stride:
            raise InputError("needs the occupancy: --prepopulated-stride or --occupancy-file", field="khugepaged")
        occupancy = prepopulated_bitmaps(profile, p.start, p.end, p.prepopulated_stride)
    notes += khugepaged_notes(release)
    return compute_khugepaged(profile, occupancy, allowed, scan.max_ptes_none)


def khugepaged_notes(release: Release) -> list[str]:
    """Which design of khugepaged's mTHP collapse, if any, ``release`` has."""
    notes = unconfirmed_notes(release, [(KHUGEPAGED_MTHP, None)])
    if release.has(KHUGEPAGED_MTHP):
        notes.append(f"khugepaged mTHP collapse on {release}: the v18 design ({KHUGEPAGED_MTHP.cite})")
    else:
        notes.append(f"khugepaged mTHP collapse is not in {release} ({KHUGEPAGED_SERIES}; {KHUGEPAGED_MTHP.cite}): "
                     "there only the PMD-size collapses of each design happen")
    return notes


def pass_inputs(profile: Profile, shape: PassShape, p: Pass) -> dict:
    """The resolved inputs of one pass, as its JSON shows them."""
    page = profile.page_size
    return {
        "memory": shape.memory, "vma_size_bytes": shape.vma_size, "vma_start": p.start,
        "file_offset_bytes": shape.file_offset, "touch_stride_bytes": p.touch_stride,
        "prepopulated_stride_bytes": shape.prepopulated_stride, "access": shape.access, "top_level": p.top_level,
        "madvise": shape.madvise, "nohugepage": shape.nohugepage, "stack": shape.stack, "huge": p.huge,
        "enabled": {fmt_size(page << o): m for o, m in sorted(p.anon_modes.items())},
        "shmem_enabled": {fmt_size(page << o): m for o, m in sorted(p.shm_modes.items())},
    }


def _stages(profile: Profile, release: Release, shape: PassShape, settings: ThpSettings,
            notes: list[str]) -> tuple[Pass, set[int], str, Walk, list]:
    """Stages 1 to 3 and the page-table rows: the pass, the orders allowed and why, the walk."""
    p = pass_settings(profile, release, shape, settings, notes)
    allowed, why = allowed_orders(profile, release, p, notes)
    w = walk(profile, release, p, allowed)
    return p, allowed, why, w, _level_rows(profile, release, w)


def pass_figures(profile: Profile, release: Release, shape: PassShape, settings: ThpSettings) -> dict[str, int]:
    """A pass's faults, populated memory, page tables and TLB entries as ``compute_mthp`` gives them,
    without building its result (a fleet's kinds of hosts: the walk is kept, by ``walk``)."""
    p = pass_settings(profile, release, shape, settings, [])
    allowed, _ = allowed_orders(profile, release, p, [], reason=False)
    w = walk(profile, release, p, allowed)
    return {"faults": w.read_faults + w.write_faults, "populated_bytes": w.populated_bytes,
            "page_table_bytes": vmpte_bytes(profile, _level_rows(profile, release, w)), "tlb_entries": w.tlb_entries}


def _level_rows(profile: Profile, release: Release, w: Walk) -> list:
    return [level_row(profile, release, name, n) for name, n in w.tables.items()]


def compute_mthp(profile: Profile, release: Release, shape: PassShape = PassShape(),
                 settings: ThpSettings = ThpSettings(), khugepaged: KhugepagedScan | None = None) -> MthpResult:
    """Faults, folios, TLB entries and page tables of one pass over a VMA.

    Kernel reference
    ----------------
    ``thp_vma_allowable_orders()``, ``thp_vma_suitable_order()`` (include/linux/huge_mm.h);
    ``alloc_anon_folio()``, ``do_anonymous_page()``, ``wp_page_copy()``, ``finish_fault()``
    (mm/memory.c); ``do_huge_pmd_anonymous_page()``, ``do_huge_zero_wp_pmd()`` (mm/huge_memory.c);
    ``shmem_allowable_huge_orders()`` (mm/shmem.c).
    """
    notes: list[str] = []
    p, allowed, why, w, rows = _stages(profile, release, shape, settings, notes)
    # Stage 4: the counts.
    page = profile.page_size
    touched = stride_blocks(p.start, (p.end - 1 - p.start) // p.touch_stride + 1, p.touch_stride, page) * page
    clear_s = w.largest_folio_bytes / (profile.costs.clear_gib_per_s * (1 << 30))
    if profile.preallocated_levels:
        notes.append(preallocated_note(profile, release))
    designs = _khugepaged(profile, release, p, allowed, khugepaged, notes) if khugepaged else None
    # Stage 5: the result.
    return MthpResult(
        profile=profile.name, kernel=str(release), inputs=pass_inputs(profile, shape, p),
        faults=w.read_faults + w.write_faults, read_faults=w.read_faults, write_faults=w.write_faults,
        folios=[FolioCount(size_bytes=page << o, count=c) for o, c in enumerate(w.folios) if c],
        fault_orders_bytes=[page << o for o in sorted(allowed)], tlb_entries=w.tlb_entries,
        tables={r.level: r.tables for r in rows}, page_table_bytes=vmpte_bytes(profile, rows),
        populated_bytes=w.populated_bytes, touched_bytes=touched,
        bloat=w.populated_bytes / touched if touched else 0.0, largest_fault_clear_bytes=w.largest_folio_bytes,
        largest_fault_clear_seconds=clear_s, khugepaged=designs, notes=notes,
        explain=_derivations(profile, release, p, allowed, why, w, clear_s) if explaining() else [],
    )


def _size_row(size: int, r: MthpResult) -> SizeRow:
    return SizeRow(size_bytes=size, faults=r.faults, folios=sum(f.count for f in r.folios), tlb_entries=r.tlb_entries,
                   page_table_bytes=r.page_table_bytes, populated_bytes=r.populated_bytes, bloat=r.bloat,
                   largest_fault_clear_bytes=r.largest_fault_clear_bytes,
                   largest_fault_clear_seconds=r.largest_fault_clear_seconds, tables=r.tables)


def compare_sizes(profile: Profile, release: Release, shape: PassShape = PassShape()) -> MthpComparison:
    """Every size the profile supports, each alone (others off), side by side, and base pages."""
    shmem = shape.memory != "anon"
    per_size = release.has(SHMEM_MTHP if shmem else MTHP_ANON)
    orders = (file_orders(profile) if shmem else anon_orders(profile)) if per_size else [pmd_order(profile)]
    rows, explain = [], []
    base = None
    for o in [None] + orders:
        modes = {profile.page_size << x: "always" if x == o else "never" for x in orders}
        if not per_size:  # no per-size switch in this release: the top-level switch alone
            on = "always" if o is not None else "never"
            settings = ThpSettings(huge=on) if shmem else ThpSettings(top_level=on)
        else:
            settings = ThpSettings(shmem_enabled=modes, huge="never") if shmem else ThpSettings(enabled=modes)
        r = compute_mthp(profile, release, shape, settings)
        base = base or r
        explain += [d.model_copy(update={"scope": f"{fmt_size(profile.page_size << (o or 0))}: {d.scope}"})
                    for d in r.explain if d.scope in ("orders", "faults", "tlb")]
        rows.append(_size_row(profile.page_size << (o or 0), r))
    notes = [f"each size alone ({'shmem_enabled' if shmem else 'enabled'}=always, every other size never); "
             f"the first row is base pages only" if per_size else
             f"kernel {release} has no per-size switch: base pages ({'shmem_enabled' if shmem else 'enabled'} never) "
             f"beside the PMD size ({'shmem_enabled' if shmem else 'enabled'} always)"]
    if pmd_order(profile) not in orders:
        notes.append(f"the PMD size {fmt_size(profile.pmd_size)} is above MAX_PAGECACHE_ORDER for shmem here")
    return MthpComparison(profile=profile.name, kernel=str(release), inputs=base.inputs, sizes=rows, notes=notes,
                          explain=explain)
