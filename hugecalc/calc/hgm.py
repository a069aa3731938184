"""HugeTLB high-granularity mapping (HGM): what each mapcount scheme costs, step by step.

HGM was **never merged**.  James Houghton posted it to linux-mm as "[PATCH v2 00/46] hugetlb:
introduce HugeTLB high-granularity mapping" (2023-02-18; RFC v1 2022-06-24, RFC v2 2022-10-21,
v1 2023-01-05), x86_64 and MAP_SHARED only, with ``MADV_SPLIT`` and hugetlb ``MADV_COLLAPSE``.
Sean Christopherson (guest_memfd cover letter, Nov 2023): HGM "has reached a bit of an impasse
and is unlikely to ever be merged".  Everything here is a model of proposals, labelled as such.

Schemes (thread "[PATCH 21/46] hugetlb: use struct hugetlb_pte for walk_hugetlb_range",
James Houghton and Peter Xu, 2023-01-26..31):

- ``thp-like`` (v2): a mapping smaller than the hugepage increments ``_mapcount`` of every subpage
  it covers; a hugepage-sized mapping increments the compound (entire) mapcount once.  Tail
  struct pages must be distinct and writable, so HVO cannot be used (HGM and HVO were exclusive).
- ``head-only``: one count per mapping entry, all on the head page: one hot counter.
- ``hstate-level`` (Peter Xu): count only when the hstate-level entry (the PUD for 1G) is
  populated, leaf or not; nothing changes while it stays populated.
- ``folio`` and ``folio-no-page-mapcount``, for reference: how released kernels account a large
  folio mapped by PTE batches or as a whole (``folio_add_*_rmap_ptes()``/``_pmd()`` in
  ``mm/rmap.c``: per-page ``_mapcount`` plus ``_large_mapcount`` (v6.11) and ``_nr_pages_mapped``
  per batch (per page before v6.12); with ``CONFIG_NO_PAGE_MAPCOUNT`` (v6.15) only per-folio
  counters).  Released kernels never
  map part of a folio with a PMD, so steps through intermediate sizes are marked not applicable.
"""

from __future__ import annotations

from hugecalc.errors import InputError
from hugecalc.calc.vmemmap import check_addressable
from hugecalc.profiles import Profile
from hugecalc.releases import (FOLIO_BATCHED_NR_PAGES_MAPPED, FOLIO_LARGE_MAPCOUNT, NO_PAGE_MAPCOUNT, Release,
                               unconfirmed_notes)
from hugecalc.result import Derivation, Model, Result, field
from hugecalc.units import ceil_div, fmt_bytes, fmt_size

SCHEMES = ("thp-like", "head-only", "hstate-level", "folio", "folio-no-page-mapcount")
OPERATIONS = ("collapse", "split", "map", "unmap")
HGM_SERIES = (
    'James Houghton, "[PATCH v2 00/46] hugetlb: introduce HugeTLB high-granularity mapping", '
    "linux-mm, 2023-02-18 (not merged)"
)
THREAD = ('"[PATCH 21/46] hugetlb: use struct hugetlb_pte for walk_hugetlb_range", James Houghton and '
          "Peter Xu, linux-mm, 2023-01-26..31")
HVO_EXCLUSIVE = "HGM v2: CONFIG_HUGETLB_HIGH_GRANULARITY_MAPPING excludes HVO (tail struct pages must be writable)"


class Step(Model):
    """One step of the operation on one hugepage."""

    operation: str = field("Operation")
    from_bytes: int | None = field("From", "size")
    to_bytes: int | None = field("To", "size")
    entries_removed: int = field("Entries removed", "count")
    entries_added: int = field("Entries added", "count")
    atomic_ops: int | None = field("Atomic ops", "count")
    spread_atomic_ops: int | None = field("Spread over struct pages", "count")
    hot_atomic_ops: int | None = field("On one hot counter", "count")
    cache_lines: int | None = field("Cache lines touched", "count")
    estimated_seconds: float | None = field("Estimated time", "seconds")
    note: str | None = field("Note", default=None)


class SchemeRow(Model):
    scheme: str = field("Scheme")
    upstream: bool = field("Merged upstream")
    atomic_ops: int | None = field("Atomic ops per hugepage", "count")
    estimated_seconds: float | None = field("Estimated time per hugepage", "seconds")
    blocked_seconds: float | None = field("vCPUs blocked per hugepage", "seconds")
    guest_seconds: float | None = field("Whole guest", "seconds")
    optimizable: bool = field("HVO optimizable")  # as vmemmap's rows: HVO can free this page's vmemmap
    freed_bytes_lost: int = field("vmemmap freed by HVO, lost", "bytes")  # vmemmap's freed_bytes, kept
    steps: list[Step]


class HgmResult(Result):
    command: str = "hgm"
    upstream: bool = False
    series: str = HGM_SERIES
    hugepages: int = field("Hugepages in the guest", "count")
    schemes: list[SchemeRow]


def _counts(scheme: str, size: int, hugepage: int, base: int, entries: int, table_entries: int,
            release: Release):
    """(spread, hot) atomic ops to map or unmap ``entries`` entries of ``size`` in one hugepage,
    or None where the scheme cannot express it."""
    if scheme == "thp-like":
        if size == hugepage:
            return 0, entries  # compound (entire) mapcount
        return entries * (size // base), 0  # every covered subpage's _mapcount
    if scheme == "head-only":
        return 0, entries
    # Released kernels' large-folio accounting (mm/rmap.c), release by release.
    if scheme == "folio-no-page-mapcount" and not release.has(NO_PAGE_MAPCOUNT):
        return None
    if size == hugepage:
        return 0, 2 * entries  # _entire_mapcount, and _large_mapcount (before 6.11 _nr_pages_mapped)
    if size == base:
        batches = ceil_div(entries, table_entries)  # one rmap batch per PTE table
        if scheme == "folio-no-page-mapcount":
            return 0, 2 * batches  # _large_mapcount, _mm_id_mapcount
        large = batches if release.has(FOLIO_LARGE_MAPCOUNT) else 0
        nr_mapped = batches if release.has(FOLIO_BATCHED_NR_PAGES_MAPPED) else entries
        return entries, large + nr_mapped  # per-page _mapcount; the folio's counters
    return None


def _time(profile: Profile, entries: int, atomics: int, lines: int) -> float:
    """Per-entry work, an atomic per op, and a cache miss per distinct line touched."""
    c = profile.costs
    return (entries * c.entry_ns + atomics * c.atomic_ns + lines * c.cache_miss_ns) / 1e9


def _mapping_sizes(profile: Profile, hugepage: int) -> list[int]:
    """Sizes one page-table entry can map inside the hugepage: each level's entry span, and the
    contiguous blocks (arm64) where the profile has them."""
    sizes = {profile.span_bytes(lvl.name) for lvl in profile.levels}
    sizes.add(profile.page_size * profile.cont_pte_entries)
    sizes.add(profile.pmd_size * profile.cont_pmd_entries)
    return sorted(s for s in sizes if s <= hugepage and hugepage % s == 0)


def _check(profile: Profile, size: int, path: list[int], schemes: list[str], operation: str,
           guest_memory: int | None) -> None:
    """The path, schemes, operation and guest an HGM question names, against the profile."""
    allowed = _mapping_sizes(profile, size)
    for name in schemes:
        if name not in SCHEMES:
            raise InputError(f"{name!r}: choose from {', '.join(SCHEMES)}", field="schemes")
    if operation not in OPERATIONS:
        raise InputError(f"{operation!r}: choose from {', '.join(OPERATIONS)}", field="operation")
    shown = ",".join(fmt_size(s) for s in path)
    if operation in ("collapse", "split"):
        if len(path) < 2:
            raise InputError("needs at least two sizes, from small to large (e.g. 4K,1G)", field="path_text")
        for a, b in zip(path, path[1:]):
            if b <= a:
                raise InputError(f"{shown}: sizes must grow from small to large ({fmt_size(b)} follows {fmt_size(a)})",
                                 field="path_text")
        if path[-1] != size:
            raise InputError(f"must end at the hugepage size {fmt_size(size)}, not {fmt_size(path[-1])}",
                             field="path_text")
    elif len(path) != 1:
        raise InputError(f"{operation} maps or unmaps at one granularity: give one size in --path", field="operation")
    for s in path:
        if s not in allowed:
            raise InputError(f"size {fmt_size(s)}: a {profile.name} page-table entry inside a {fmt_size(size)} page "
                             f"maps one of {', '.join(fmt_size(x) for x in allowed)}", field="path_text")
    if guest_memory is not None and (guest_memory <= 0 or guest_memory % size):
        raise InputError(f"{fmt_size(guest_memory)} is not a whole number of {fmt_size(size)} hugepages",
                         field="guest_memory")
    if guest_memory is not None:
        check_addressable(profile, guest_memory, fmt_size(guest_memory), "guest_memory")


def _moves(operation: str, path: list[int], size: int) -> list[tuple]:
    """The entry changes of the operation, step by step: (label, from, to, (size, removed), (size, added))."""
    if operation == "collapse":
        return [("collapse", a, b, (a, size // a), (b, size // b)) for a, b in zip(path, path[1:])]
    if operation == "split":
        rev = list(reversed(path))
        return [("split", b, a, (b, size // b), (a, size // a)) for b, a in zip(rev, rev[1:])]
    if operation == "map":
        return [("map", None, path[0], None, (path[0], size // path[0]))]
    return [("unmap", path[0], None, (path[0], size // path[0]), None)]


def _step(profile: Profile, release: Release, name: str, size: int, move: tuple,
          explain: list[Derivation]) -> Step:
    """One step of one scheme: its atomics, cache lines and time (None where released kernels cannot)."""
    label, frm, to, removed, added = move
    sides = [side for side in (removed, added) if side]
    entries = sum(n for _, n in sides)
    if name == "hstate-level":
        # Only populating or clearing the hstate-level entry counts (Peter Xu); a collapse or split
        # happens below it and changes nothing.
        counted = [(0, 1 if label in ("map", "unmap") else 0)]
    else:
        counted = [_counts(name, s, size, profile.page_size, n, profile.level("pte").entries, release)
                   for s, n in sides]
    step = dict(operation=label, from_bytes=frm, to_bytes=to, entries_removed=removed[1] if removed else 0,
                entries_added=added[1] if added else 0)
    if None in counted:
        return Step(**step, atomic_ops=None, spread_atomic_ops=None, hot_atomic_ops=None, cache_lines=None,
                    estimated_seconds=None, note="released kernels never map part of a folio with a PMD or PUD")
    spread, hot = sum(c[0] for c in counted), sum(c[1] for c in counted)
    # A struct page is one 64-byte line; a step touches each covered subpage at most once per
    # direction, and the head's counters share one line.
    lines = min(spread, size // profile.page_size) + (1 if hot else 0)
    seconds = _time(profile, entries, spread + hot, lines)
    explain.append(Derivation(
        scope=name, figure=f"{label} {fmt_size(frm) if frm else ''}->{fmt_size(to) if to else ''}".strip(),
        formula=f"{spread:,} atomics spread over struct pages + {hot:,} on the head; "
                f"{entries:,} entries x {profile.costs.entry_ns:g} ns + {spread + hot:,} atomics x "
                f"{profile.costs.atomic_ns:g} ns + {lines:,} lines x {profile.costs.cache_miss_ns:g} ns "
                f"= {seconds:.4g} s",
        rule=THREAD if not name.startswith("folio") else
        "folio_add_anon_rmap_ptes()/folio_remove_rmap_ptes() in mm/rmap.c (constants UNCONFIRMED)"))
    return Step(**step, atomic_ops=spread + hot, spread_atomic_ops=spread, hot_atomic_ops=hot, cache_lines=lines,
                estimated_seconds=seconds)


def _scheme(profile: Profile, release: Release, name: str, size: int, moves: list[tuple], hugepages: int,
            hvo_freed_bytes: int, explain: list[Derivation]) -> SchemeRow:
    steps = [_step(profile, release, name, size, move, explain) for move in moves]
    known = all(s.atomic_ops is not None for s in steps)
    total_ops = sum(s.atomic_ops for s in steps) if known else None
    total_s = sum(s.estimated_seconds for s in steps) if known else None
    blocked = None if total_s is None else total_s + profile.costs.notifier_invalidation_ms / 1e3
    thp_like = name == "thp-like"
    return SchemeRow(scheme=name, upstream=name.startswith("folio"), atomic_ops=total_ops, estimated_seconds=total_s,
                     blocked_seconds=blocked, guest_seconds=None if blocked is None else blocked * hugepages,
                     optimizable=not thp_like, freed_bytes_lost=hvo_freed_bytes if thp_like else 0, steps=steps)


def compute_hgm(profile: Profile, release: Release, *, hugepage_size: int, path: list[int],
                schemes: list[str] | None = None, operation: str = "collapse",
                guest_memory: int | None = None) -> HgmResult:
    """Mapcount cost of an HGM operation on one hugepage, per scheme, and for a whole guest.

    Kernel reference
    ----------------
    Not in any kernel: HGM v2 (2023-02-18) and its review thread; the folio reference schemes
    follow ``folio_add_anon_rmap_ptes()``/``folio_remove_rmap_ptes()`` in ``mm/rmap.c`` release by
    release: ``_large_mapcount`` from v6.11, ``_nr_pages_mapped`` once per batch from v6.12,
    ``CONFIG_NO_PAGE_MAPCOUNT`` from v6.15.
    """
    from hugecalc.calc.vmemmap import compute_vmemmap

    h = profile.hugetlb_size(hugepage_size)
    schemes = list(dict.fromkeys(schemes or SCHEMES[:3]))
    _check(profile, h.size, path, schemes, operation, guest_memory)
    hugepages = guest_memory // h.size if guest_memory else 1
    hvo = compute_vmemmap(profile, release, hugepage_count=hugepages, hugepage_sizes=[h.size]).rows[0]
    explain: list[Derivation] = []
    moves = _moves(operation, path, h.size)
    results = [_scheme(profile, release, name, h.size, moves, hugepages, hvo.freed_bytes, explain) for name in schemes]
    explain.append(Derivation(
        scope="time model", figure="calibration",
        formula=f"atomic {profile.costs.atomic_ns:g} ns, cache miss {profile.costs.cache_miss_ns:g} ns, "
                f"entry {profile.costs.entry_ns:g} ns, EPT invalidation {profile.costs.notifier_invalidation_ms:g} ms "
                "per window: thp-like 4K->1G ~1 s and 30% slower than head-only, as measured in the thread",
        rule=THREAD))
    if "thp-like" in schemes:
        explain.append(Derivation(
            scope="thp-like", figure="HVO",
            formula=f"HVO would free {hvo.freed_pages_per_hugepage:,} vmemmap pages per {fmt_size(h.size)} page "
                    f"({fmt_bytes(hvo.freed_bytes)} for {hugepages:,}); thp-like needs them all",
            rule=HVO_EXCLUSIVE))
    inputs = {"hugepage_size_bytes": h.size, "path_bytes": path, "operation": operation,
              "guest_memory_bytes": guest_memory, "schemes": schemes, "costs": profile.costs.model_dump()}
    # "never merged" is the result's own field (upstream, series), shown at the top of the table.
    rules = {"folio": [FOLIO_LARGE_MAPCOUNT, FOLIO_BATCHED_NR_PAGES_MAPPED],
             "folio-no-page-mapcount": [FOLIO_LARGE_MAPCOUNT, FOLIO_BATCHED_NR_PAGES_MAPPED, NO_PAGE_MAPCOUNT]}
    used = list(dict.fromkeys(r for s in schemes for r in rules.get(s, [])))
    return HgmResult(profile=profile.name, kernel=str(release), inputs=inputs, hugepages=hugepages,
                     schemes=results, explain=explain, notes=unconfirmed_notes(release, [(r, None) for r in used]))
