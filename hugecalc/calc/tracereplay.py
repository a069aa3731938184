"""A record replayed under the settings at the time and under a what-if: faults, folios by size,
zero-page mappings, populated memory at the end and at its peak, TLB entries and page tables of
the process, and populated memory and faults over time.

"At the end" is the last moment before the process's address space was torn down (``exit_mmap``),
its memory still mapped.

Kernel reference
----------------
The fault rules of ``hugecalc.calc.trace`` (``do_anonymous_page()``, ``alloc_anon_folio()``,
``create_huge_pmd()``, ``wp_page_copy()``, ``do_huge_zero_wp_pmd()``); ``mm_pgtables_bytes()``
(VmPTE); the contiguous-PTE TLB block of ``hugecalc.calc.mthp.tlb_block_pages()``.
"""

from __future__ import annotations

from hugecalc.calc.addrspace import Vma
from hugecalc.calc.mthp import FolioCount, tlb_block_pages
from hugecalc.calc.orders import ThpSettings, pmd_order
from hugecalc.calc.tables import counted_levels, level_row, vmpte_bytes
from hugecalc.calc.trace import CLONE_VM, Process, check_record
from hugecalc.machine.trace import (BRK, EXEC, EXIT_MMAP, FAULT, IMAGE_BSS, MADVISE, MMAP, MPROTECT, MREMAP, MUNMAP,
                                    NEWTASK, THP_DISABLE)
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.result import Derivation, Figure, Model, Result, field
from hugecalc.units import ceil_div

TIMELINE_POINTS = 200


class TimePoint(Model):
    seconds: float = field("Since the start", "seconds")
    populated_bytes: int = field("Populated", "bytes")
    faults: int = field("Faults so far", "count")
    page_table_bytes: int = field("Page tables", "bytes")


class TraceRun(Model):
    """The process under one set of settings."""

    label: str  # now, what-if
    settings: dict = field("THP settings")
    faults: int = field("Page faults", "count")
    read_faults: int = field("Read faults", "count")
    write_faults: int = field("Write faults", "count")
    folios: list[FolioCount]
    zero_page_mappings: int = field("Zero-page mappings made", "count")
    populated_bytes: int = field("Memory populated at the end", "bytes")
    peak_populated_bytes: int = field("Memory populated at the peak", "bytes")
    touched_bytes: int = field("Memory the program touched (base pages)", "bytes")
    bloat: float = field("Populated / touched")
    tlb_entries: int = field("Last-level TLB entries at the end", "count")
    tables: dict[str, int] = field("Page tables by level at the end")
    page_table_bytes: int = field("Page tables (as VmPTE counts)", "bytes")
    peak_page_table_bytes: int = field("Page tables at the peak (sampled)", "bytes")
    timeline: list[TimePoint]


class TraceResult(Result):
    command: str = "mthp"
    pid: int = field("Process")
    events: int = field("Events recorded", "count")
    recorded_faults: int = field("Faults recorded (base pages)", "count")
    runs: list[TraceRun]

    def figures(self) -> dict[str, Figure]:
        out = {}
        for r in self.runs:
            out[f"faults {r.label}"] = Figure(r.faults)
            out[f"populated {r.label}"] = Figure(r.populated_bytes, "bytes")
        return out


def _end_state(proc: Process, label: str, touched: int, timeline: list) -> TraceRun:
    """What the process holds at the end, under one set of settings."""
    profile, space = proc.profile, proc.space
    page, P = profile.page_size, pmd_order(profile)
    folios: dict[int, int] = {}
    for f in space.folios.values():
        if f.anon:
            folios[page << f.order] = folios.get(page << f.order, 0) + 1
    cont = tlb_block_pages(profile, proc.release)
    units = set()
    for p, fid in space.pages.items():  # fid: a folio, or the (huge) zero page (negative)
        if fid >= 0 and not space.folios[fid].anon:
            continue
        if (p >> P) in space.pmd_mapped:
            units.add(("pmd", p >> P))
        elif fid >= 0 and cont > 1 and (1 << space.folios[fid].order) >= cont:
            units.add(("cont", p // cont))
        else:
            units.add(("page", p))
    rows = [level_row(profile, proc.release, name, n) for name, n in _tables(proc).items()]
    populated = proc.populated_bytes()
    table_bytes = vmpte_bytes(profile, rows)
    return TraceRun(label=label, settings=proc.settings.shown(), faults=proc.faults, read_faults=proc.read_faults,
                    write_faults=proc.write_faults,
                    folios=[FolioCount(size_bytes=s, count=n) for s, n in sorted(folios.items())],
                    zero_page_mappings=proc.zero_maps, populated_bytes=populated,
                    peak_populated_bytes=proc.peak_populated * page, touched_bytes=touched,
                    bloat=populated / touched if touched else 0.0, tlb_entries=len(units),
                    tables={r.level: r.tables for r in rows}, page_table_bytes=table_bytes,
                    peak_page_table_bytes=max([table_bytes, *(p.page_table_bytes for p in timeline)]),
                    timeline=timeline)


def page_table_bytes(proc: Process) -> int:
    """The process's page tables now, as VmPTE counts them."""
    rows = [level_row(proc.profile, proc.release, name, n) for name, n in _tables(proc).items()]
    return vmpte_bytes(proc.profile, rows)


def _tables(proc: Process) -> dict[str, int]:
    """Tables per counted level: PTE tables as allocated, upper ones over the PMD blocks in use."""
    profile, space = proc.profile, proc.space
    blocks = space.pte_tables | set(space.pmd_mapped)
    levels = counted_levels(profile)
    out = {}
    for name in levels[:-1]:
        per = profile.table_span_bytes(name) // profile.pmd_size
        out[name] = len({b // per for b in blocks})
    out[levels[-1]] = len(space.pte_tables)
    for name in profile.preallocated_levels:
        out[name] = 0
    return out


class Replay:
    """Every process of a record, event by event, under one set of settings."""

    def __init__(self, profile: Profile, release: Release, settings: ThpSettings) -> None:
        self.profile, self.release, self.settings = profile, release, settings
        self.procs: dict[int, Process] = {}
        self.touched: dict[int, set] = {}

    def process(self, tgid: int) -> Process:
        proc = self.procs.get(tgid)
        if proc is None:
            proc = self.procs[tgid] = Process(tgid, self.profile, self.release, self.settings)
        return proc

    def event(self, kind: int, tgid: int, a: int, b: int, c: int, d: int, e: int) -> None:
        proc, page = self.process(tgid), self.profile.page_size
        if kind == FAULT:
            proc.fault(a, bool(b & 2))
            self.touched.setdefault(tgid, set()).add(a // page)
        elif kind == MMAP:
            proc.mmap(a, b, c, d, e)
        elif kind == MUNMAP:
            proc.space.unmap(a, a + ceil_div(b, page) * page)
        elif kind == BRK:
            proc.brk(a)
        elif kind == MREMAP:
            proc.mremap(a, b, c, d, e)
        elif kind == MPROTECT:
            proc.space.change(a, a + ceil_div(b, page) * page, prot=c)
        elif kind == MADVISE:
            proc.madvise(a, b, c)
        elif kind == NEWTASK and not b & CLONE_VM:  # fork(): the child's copy of the address space
            child = self.process(a)
            child.space, child.thp_disabled = proc.space.copy(), proc.thp_disabled
        elif kind == EXEC:  # a new address space; MMF_DISABLE_THP stays
            self.procs[tgid] = Process(tgid, self.profile, self.release, self.settings)
            self.procs[tgid].thp_disabled = proc.thp_disabled
            self.touched[tgid] = set()
        elif kind == THP_DISABLE:
            proc.thp_disabled = bool(a)
        elif kind == IMAGE_BSS:
            proc.space.insert(Vma(a, b, "anon", prot=c, pgoff=a))

    def end(self, tgid: int, label: str, timeline: list) -> TraceRun:
        return _end_state(self.process(tgid), label, len(self.touched.get(tgid, ())) * self.profile.page_size,
                          list(timeline))


def replay_one(profile: Profile, release: Release, events: dict[str, list], pid: int, settings: ThpSettings,
               label: str) -> tuple[TraceRun, int]:
    """Every event of the record (its columns as lists), in order, under ``settings``: the end state
    of process ``pid`` (at its last exit_mmap), and how many address spaces the record holds."""
    replay = Replay(profile, release, settings)
    t, tgid, kind = events["t_ns"], events["tgid"], events["kind"]
    a, b, c, d, e = (events[k] for k in "abcde")
    step = max(1, len(t) // TIMELINE_POINTS)
    timeline: list[TimePoint] = []
    final = None
    for i in range(len(t)):
        if kind[i] == EXIT_MMAP:
            if tgid[i] == pid:
                final = replay.end(pid, label, timeline)
            continue
        replay.event(kind[i], tgid[i], a[i], b[i], c[i], d[i], e[i])
        if tgid[i] == pid and i % step == 0:
            main = replay.process(pid)
            timeline.append(TimePoint(seconds=(t[i] - t[0]) / 1e9, populated_bytes=main.populated_bytes(),
                                      faults=main.faults, page_table_bytes=page_table_bytes(main)))
    return final or replay.end(pid, label, timeline), len(replay.procs)


def compute_trace(profile: Profile, release: Release, record, runs: dict[str, ThpSettings],
                  pid: int | None = None, command: str = "mthp") -> TraceResult:
    """The record replayed under each named set of settings (``now``, ``what-if``).

    Kernel reference
    ----------------
    ``do_anonymous_page()``, ``alloc_anon_folio()``, ``create_huge_pmd()``, ``wp_page_copy()``,
    ``do_huge_zero_wp_pmd()`` (mm/memory.c, mm/huge_memory.c); ``mm_pgtables_bytes()`` (VmPTE).
    """
    check_record(profile, record.meta)
    pid = pid if pid is not None else record.meta["pid"]
    if not (record.columns["tgid"] == pid).any():
        raise InputError(f"process {pid} has no event in the record", field="pid")
    events = {k: record.columns[k].tolist() for k in ("t_ns", "tgid", "kind", *"abcde")}  # once, for every run
    results, processes = [], 0
    for label, settings in runs.items():
        run, processes = replay_one(profile, release, events, pid, settings, label)
        results.append(run)
    code = record.meta.get("exit_status") or 0
    status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    notes = [f"the record of {' '.join(record.meta.get('command', []))} ({status}): "
             f"{record.events:,} events, {record.faults:,} page faults, {processes} address space(s); the "
             f"figures are process {pid}'s at the end (its last exit_mmap)",
             "faults in mappings made before the record could see them (the program's own image, its stack) "
             "replay as base pages and are not counted among the folios"]
    return TraceResult(command=command, profile=profile.name, kernel=str(release), pid=pid, events=record.events,
                       recorded_faults=record.faults, runs=results, notes=notes,
                       inputs={"trace": record.meta.get("path"), "pid": pid, "runs": list(runs)},
                       explain=[_derivation(r) for r in results])


def _derivation(run: TraceRun) -> Derivation:
    return Derivation(
        scope=run.label, figure="faults and folios",
        formula=f"each recorded fault replayed in order under top level {run.settings['top_level']}, per size "
                + (", ".join(f"{s}={m}" for s, m in run.settings["enabled"].items() if m != "never") or "never")
                + f", with the VMAs as they stood: {run.faults:,} faults ({run.read_faults:,} read, "
                  f"{run.write_faults:,} write), {run.zero_page_mappings:,} zero-page mappings",
        rule="do_anonymous_page(), alloc_anon_folio(), wp_page_copy() in mm/memory.c; do_huge_zero_wp_pmd() in "
             "mm/huge_memory.c")
