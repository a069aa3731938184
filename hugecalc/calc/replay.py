"""Replay a real process under other THP settings: its present pages as the touch pattern.

Each anonymous or shmem mapping's present pages are faulted in again, in address order, as a
program writing each of them once would, under the settings now and under a what-if; the other
mappings (files, hugetlb, the vDSO) keep the pages they have.  Page tables are counted over the
whole process, the way VmPTE counts them, so with the what-if equal to the settings now the
replay gives back the process's VmPTE.

Kernel reference
----------------
The fault rules of ``hugecalc.calc.mthp`` (``alloc_anon_folio()``, ``create_huge_pmd()``,
``shmem_allowable_huge_orders()``); ``mm_pgtables_bytes()`` (VmPTE).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc._jit import call
from hugecalc.calc import faults
from hugecalc.calc.mthp import FolioCount, tlb_block_pages, tlb_derivation
from hugecalc.calc.orders import PassShape, ThpSettings, allowed_orders, pass_settings, pmd_order
from hugecalc.calc.process import block_ids, level_counts
from hugecalc.calc.tables import level_row, vmpte_bytes
from hugecalc.machine.capture import PresentVma, REPLAYED_KINDS
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.result import Figure, Derivation, Model, Result, field
from hugecalc.units import fmt_bytes

class ReplayVma(Model):
    start: int = field("Start", "address")
    kind: str = field("Kind")
    touched_bytes: int = field("Touched (present now)", "bytes")
    faults: int = field("Faults", "count")
    populated_bytes: int = field("Populated", "bytes")
    tlb_entries: int = field("TLB entries", "count")
    folios: list[FolioCount] = field("Folios by size")


class ReplayRun(Model):
    """One set of settings replayed over the whole process."""

    label: str  # the column: now, what-if
    settings: dict = field("THP settings")
    faults: int = field("Page faults", "count")
    folios: list[FolioCount]
    touched_bytes: int = field("Memory touched (present now, replayed mappings)", "bytes")
    populated_bytes: int = field("Memory populated (replayed mappings)", "bytes")
    bloat: float = field("Populated / present")
    tlb_entries: int = field("Last-level TLB entries (replayed)", "count")
    tables: dict[str, int] = field("Page tables by level (whole process)")
    page_table_bytes: int = field("Page tables (as VmPTE counts)", "bytes")
    vmas: list[ReplayVma]


class ReplayResult(Result):
    command: str = "mthp"
    pid: int = field("Process")
    comm: str = field("Command")
    vm_pte_bytes: int = field("VmPTE now", "bytes")
    present_folios: list[FolioCount] | None = field("Folios by size present now (kpageflags)", default=None)
    #: Deprecated: present_folios in the shape every other folio count has; removed in schema_version 2.
    captured_folios: dict[str, int] | None = field("Folios by size now (kpageflags), deprecated: use present_folios",
                                                   default=None, deprecated=True)
    runs: list[ReplayRun]

    def figures(self) -> dict[str, Figure]:
        out = {}
        for r in self.runs:
            out[f"faults {r.label}"] = Figure(r.faults)
            out[f"TLB entries {r.label}"] = Figure(r.tlb_entries)
            out[f"populated {r.label}"] = Figure(r.populated_bytes, "bytes")
        return out


UFFD_FLAGS = {"um", "uw", "ui"}  # VmFlags of a userfaultfd-registered VMA


def replay(profile: Profile, release: Release, vmas: list[PresentVma], settings: ThpSettings, label: str,
           thp_disabled: bool = False) -> ReplayRun:
    """Every mapping of ``vmas`` under ``settings``: the replayed ones faulted in again."""
    page, pmd = profile.page_size, profile.pmd_size
    P = pmd_order(profile)
    cont = tlb_block_pages(profile, release)
    present, kept, pte_blocks, rows = [], [], [], []
    folios = np.zeros(P + 1, dtype=np.int64)
    for v in vmas:
        present.append((v.kernel_page_bytes, v.starts, v.ends))
        memory = REPLAYED_KINDS.get(v.kind)
        if memory is None or v.kernel_page_bytes != page:
            kept.append(present[-1])
            continue
        flags = v.flags
        shape = PassShape(memory=memory, madvise="hg" in flags and "nh" not in flags, nohugepage="nh" in flags,
                          vma_size=v.end - v.start, vma_start=v.start)
        p = pass_settings(profile, release, shape, settings, [])
        allowed, _ = allowed_orders(profile, release, p, [], reason=False)
        if thp_disabled or UFFD_FLAGS & set(flags):  # vma_thp_disabled(); userfaultfd_armed() in alloc_anon_folio()
            allowed = set()
        pages = block_ids(v.starts, v.ends, page) * page  # every present page, in order
        out = np.zeros(5, dtype=np.int64)
        vf = np.zeros(P + 1, dtype=np.int64)
        blocks = np.zeros(max(pages.shape[0], 1), dtype=np.int64)
        call(faults.module_for(pages.shape[0]).replay_walk, pages, v.start, v.end, page, pmd,
             sum(1 << o for o in allowed if o < P), P in allowed, memory != "anon", cont, vf, out, blocks)
        pte_blocks.append(blocks[: out[4]])
        folios += vf
        rows.append(ReplayVma(start=v.start, kind=v.kind, touched_bytes=pages.shape[0] * page,
                              faults=int(out[0]), populated_bytes=int(out[1]), tlb_entries=int(out[2]),
                              folios=[FolioCount(size_bytes=page << o, count=int(c)) for o, c in enumerate(vf) if c]))
    # Upper tables from the present pages (a folio never leaves the PMD block of the page that
    # faulted it in); PTE tables from the walk for the replayed mappings, as present for the rest.
    counts = level_counts(profile, present, np.concatenate(pte_blocks) if pte_blocks else None, kept)
    level_rows = [level_row(profile, release, name, n) for name, n in counts.items()]
    touched = sum(r.touched_bytes for r in rows)
    populated = sum(r.populated_bytes for r in rows)
    return ReplayRun(label=label, settings=settings.shown(), faults=sum(r.faults for r in rows),
                     folios=[FolioCount(size_bytes=page << o, count=int(c)) for o, c in enumerate(folios) if c],
                     touched_bytes=touched, populated_bytes=populated, bloat=populated / touched if touched else 0.0,
                     tlb_entries=sum(r.tlb_entries for r in rows), tables={r.level: r.tables for r in level_rows},
                     page_table_bytes=vmpte_bytes(profile, level_rows), vmas=rows)


def snapshot_bound(vmas: list, page: int) -> str:
    """How far a snapshot's replay can be off, and why: it knows neither the order of the faults
    nor how the mappings stood at each one."""
    grown = [v for v in vmas if v.kind in ("heap", "stack")]
    present = sum(int((v.ends - v.starts).sum()) for v in grown)
    where = ", ".join(f"the {v.kind} ({fmt_bytes(int((v.ends - v.starts).sum()))} present)" for v in grown)
    return ("a snapshot knows neither the order of the faults nor the mappings as they stood at each: for each "
            "size above the base page, the memory the kernel puts in folios of that size or larger is at most what "
            "is shown (a read before a write, a mapping that grew while it was faulted, give less)"
            + (f"; mappings that grow: {where}, "
                                                                      f"{fmt_bytes(present)} in all" if grown else "")
            + "; for the exact answer record the program: hugecalc record -- CMD, then mthp --trace FILE")


def _no_folio_note(zero_pages: int, swapped_pages: int, unclassified_pages: int) -> str:
    """Why the replay's base-page folios exceed the folios counted now: present pages with no folio
    now, or whose folio kpageflags could not show."""
    why = [f"{zero_pages:,} map{'s' if zero_pages == 1 else ''} the shared zero page (read, never written: "
           "do_anonymous_page() maps the zero page for a read fault)"] if zero_pages else []
    why += [f"{swapped_pages:,} {'is' if swapped_pages == 1 else 'are'} swapped out"] if swapped_pages else []
    why += [f"{unclassified_pages:,} could not be classified (/proc/kpageflags reads 0 for them, or they cut a "
            "folio seen only in part): their folios are not in 'present now'"] if unclassified_pages else []
    n = zero_pages + swapped_pages + unclassified_pages
    return (f"{n:,} present page{'s' if n != 1 else ''} of the replayed mappings {'are' if n != 1 else 'is'} in no "
            "folio counted now: " + "; ".join(why) + "; the replay writes every present page, so it counts a folio "
            "for each")


def compute_replay(profile: Profile, release: Release, pid: int, comm: str, vm_pte_bytes: int, vmas: list[PresentVma],
                   runs: dict[str, ThpSettings], captured_folios: dict[str, int] | None,
                   thp_disabled: bool = False, zero_pages: int = 0, swapped_pages: int = 0,
                   unclassified_pages: int = 0) -> ReplayResult:
    """The process replayed under each named set of settings (``now``, ``what-if``).

    Kernel reference
    ----------------
    ``alloc_anon_folio()`` and ``create_huge_pmd()`` in mm/memory.c, ``shmem_allowable_huge_orders()``
    in mm/shmem.c, as modelled by ``hugecalc.calc.mthp``; ``mm_pgtables_bytes()`` (VmPTE).
    """
    notes = ["present pages are replayed in address order, each written once; files, hugetlb and special "
             "mappings keep the pages they have"]
    results = [replay(profile, release, vmas, settings, label, thp_disabled) for label, settings in runs.items()]
    notes.append(snapshot_bound(vmas, profile.page_size))
    if thp_disabled:
        notes.append("the process set PR_SET_THP_DISABLE (THP_enabled: 0 in /proc/PID/status): vma_thp_disabled() "
                     "gives every fault base pages, whatever the settings")
    if zero_pages or swapped_pages or unclassified_pages:
        notes.append(_no_folio_note(zero_pages, swapped_pages, unclassified_pages))
    uffd = sum(1 for v in vmas if UFFD_FLAGS & set(v.flags))
    if uffd:
        notes.append(f"{uffd} mapping(s) registered with userfaultfd: alloc_anon_folio() falls back to base pages there")
    if results and results[0].page_table_bytes != vm_pte_bytes:
        notes.append(f"VmPTE now is {vm_pte_bytes:,} bytes, the replay of the settings now gives "
                     f"{results[0].page_table_bytes:,}: the process did not fault its pages in address order, or "
                     "kept tables after unmapping or zapping pages")
    explain = [d for r in results for d in _derivations(profile, release, r, len(vmas) - len(r.vmas))]
    return ReplayResult(profile=profile.name, kernel=str(release), inputs={"pid": pid, "runs": list(runs), "mappings": len(vmas)},
                        pid=pid, comm=comm, vm_pte_bytes=vm_pte_bytes, captured_folios=captured_folios,
                        present_folios=None if captured_folios is None else sorted(
                            (FolioCount(size_bytes=int(s), count=n) for s, n in captured_folios.items()),
                            key=lambda f: f.size_bytes),
                        runs=results, notes=notes, explain=explain)


def _derivations(profile: Profile, release: Release, run: ReplayRun, kept: int) -> list[Derivation]:
    s = run.settings
    tables = ", ".join(f"{level} {n:,}" for level, n in run.tables.items())
    on = ", ".join(f"{size}={mode}" for size, mode in s["enabled"].items() if mode != "never")
    some_never = "never" in s["enabled"].values()
    return [
        Derivation(scope=run.label, figure="sizes a fault may get",
                   formula=f"per mapping, under enabled {on or 'every size never'}"
                           + (", the other sizes never" if on and some_never else "")
                           + f" (top level {s.get('top_level', '-')}) and its VmFlags (hg: MADV_HUGEPAGE, "
                             "nh: MADV_NOHUGEPAGE)",
                   rule="thp_vma_allowable_orders() in include/linux/huge_mm.h; shmem_allowable_huge_orders() in "
                        "mm/shmem.c"),
        Derivation(scope=run.label, figure="faults",
                   formula=f"one per folio, each present page of the {len(run.vmas):,} replayed mappings written once "
                           f"in address order = {run.faults:,}, populating {fmt_bytes(run.populated_bytes)} for "
                           f"{fmt_bytes(run.touched_bytes)} present",
                   rule="alloc_anon_folio() in mm/memory.c (anon); shmem_fault() and finish_fault() (shmem)"),
        tlb_derivation(profile, release, tlb_block_pages(profile, release), run.label,
                       f"over the replayed mappings = {run.tlb_entries:,}"),
        Derivation(scope=run.label, figure="page tables",
                   formula=f"{tables} = {fmt_bytes(run.page_table_bytes)} as VmPTE counts: upper levels over every "
                           "present page (a folio never leaves its PMD block), PTE tables from the walk for the "
                           f"replayed mappings and as present for the other {kept:,}",
                   rule="__pte_alloc()/__pmd_alloc()/__pud_alloc() in mm/memory.c; mm_pgtables_bytes() (VmPTE)"),
    ]


def settings_from_capture(capture) -> tuple[ThpSettings, list[str]]:
    """The THP switches of a capture (sizes its profile does not allow are left out)."""
    th = capture.thp
    notes = []
    if th.boot_params:
        notes.append("the machine booted with " + " ".join(f"{k}={v}" for k, v in th.boot_params.items())
                     + ": the switches read as the capture holds them now, which the what-if starts from")
    return switches_of(capture.profile, th.enabled, th.shmem_enabled, th.sizes), notes


def switches_of(profile: Profile, enabled: str | None, shmem_enabled: str | None, sizes: dict) -> ThpSettings:
    """Settings of a capture's switches: the top-level ones and its per-size entries ("64K" -> modes)."""
    from hugecalc.calc.orders import anon_orders, file_orders
    from hugecalc.units import parse_size

    page = profile.page_size
    anon = {page << o for o in anon_orders(profile)}
    files = {page << o for o in file_orders(profile)}
    return ThpSettings(
        top_level=enabled if enabled in ("always", "madvise", "never") else "never", huge=shmem_enabled or "never",
        enabled={parse_size(k): v["enabled"] for k, v in sizes.items() if "enabled" in v and parse_size(k) in anon},
        shmem_enabled={parse_size(k): v["shmem_enabled"] for k, v in sizes.items()
                       if "shmem_enabled" in v and parse_size(k) in files})


def compute_now_and_what_if(profile: Profile, release: Release, capture, shape: PassShape, what_if: ThpSettings):
    """The pass under a capture's THP settings now, and under them with the ``what_if`` switches
    when those change anything.

    Kernel reference
    ----------------
    As ``compute_mthp``: ``thp_vma_allowable_orders()``, ``alloc_anon_folio()`` (mm/memory.c).
    """
    from hugecalc.calc.mthp import MthpNowWhatIf, compute_mthp

    now_settings, notes = settings_from_capture(capture)
    what_if_settings = now_settings.with_overrides(what_if)
    now = compute_mthp(profile, release, shape, now_settings)
    changed = what_if_settings != now_settings
    what_if_result = compute_mthp(profile, release, shape, what_if_settings) if changed else None
    # One list of derivations, each scoped "now" or "what-if", not one inside each result.
    explain = [d.model_copy(update={"scope": f"{label}: {d.scope}"}) for label, r in (("now", now), ("what-if", what_if_result))
               if r is not None for d in r.explain]
    return MthpNowWhatIf(profile=profile.name, kernel=str(release),
                         inputs={**now.inputs, "what_if": _what_if_shown(what_if)},
                         now=now.model_copy(update={"explain": []}), notes=notes + now.notes, explain=explain,
                         what_if=None if what_if_result is None else what_if_result.model_copy(update={"explain": []}))


def _what_if_shown(what_if: ThpSettings) -> dict:
    """The switches the what-if sets, as the JSON shows them (the ones it leaves alone left out)."""
    shown = what_if.model_dump(exclude_none=True, exclude_defaults=True)
    for key in ("enabled", "shmem_enabled"):
        if key in shown:
            shown[key] = [[size, mode] for size, mode in sorted(shown[key].items())]
    return shown
