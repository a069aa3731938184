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

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hugecalc.calc.addrspace import Vma
from hugecalc.calc.khugepaged import KhugepagedDesign, compute_khugepaged
from hugecalc.calc.mthp import FolioCount, tlb_block_pages
from hugecalc.calc.orders import ThpSettings
from hugecalc.calc import addrspace
from hugecalc.calc.tables import counted_levels, level_row, vmpte_bytes
from hugecalc.calc.trace import ANON, CLONE_VM, MADV_DONTNEED, Process, check_record
from hugecalc.machine.trace import (ATTACH_HUGEPAGE, ATTACH_KINDS, ATTACH_NOHUGEPAGE, ATTACH_VMA, BRK, EXEC,
                                    EXIT_MMAP, FAULT, IMAGE_BSS, MADVISE, MMAP, MPROTECT, MREMAP, MUNMAP, NEWTASK,
                                    THP_DISABLE, UFFD)
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.result import Derivation, Figure, Model, Result, field
from hugecalc.units import ceil_div, fmt_size

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
    khugepaged: list[KhugepagedDesign] | None = None  # --khugepaged: its collapses on the end state
    after: str | None = None  # --after: madvise() of every anonymous mapping at the end
    tables_after: dict[str, int] | None = field("Page tables by level after it", default=None)
    after_page_table_bytes: int | None = field("Page tables after it (as VmPTE counts)", "bytes", default=None)


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


@dataclass(frozen=True)
class AtEnd:
    """What to work out on the end state too: khugepaged's collapses (``max_ptes_none``), and the
    page tables left after madvise(``after``) of every anonymous mapping."""

    max_ptes_none: int | None = None
    after: str | None = None  # dontneed, free


def end_state(proc: Process, label: str, touched_pages: int, timeline: list, at_end: AtEnd = AtEnd()) -> TraceRun:
    """What the process holds at the end, under one set of settings, and what ``at_end`` asks of it
    (khugepaged: ``compute_khugepaged()`` on :meth:`Process.khugepaged_ranges`)."""
    profile, pg = proc.profile, proc.space.pages
    page = profile.page_size
    by_order = pg.folio_orders()
    cont = tlb_block_pages(profile, proc.release)
    rows = [level_row(profile, proc.release, name, n) for name, n in _tables(proc).items()]
    populated = proc.populated_bytes()
    touched = touched_pages * page
    table_bytes = vmpte_bytes(profile, rows)
    faults, reads, writes, zero_maps = proc.counts[:4].tolist()
    return TraceRun(label=label, settings=proc.settings.shown(), faults=faults, read_faults=reads,
                    write_faults=writes,
                    folios=[FolioCount(size_bytes=page << o, count=int(n)) for o, n in enumerate(by_order) if n],
                    zero_page_mappings=zero_maps, populated_bytes=populated,
                    peak_populated_bytes=proc.peak_populated * page, touched_bytes=touched,
                    bloat=populated / touched if touched else 0.0,
                    tlb_entries=pg.tlb_entries(cont),
                    tables={r.level: r.tables for r in rows}, page_table_bytes=table_bytes,
                    peak_page_table_bytes=max([table_bytes, *(p.page_table_bytes for p in timeline)]),
                    timeline=timeline,
                    khugepaged=None if at_end.max_ptes_none is None else _khugepaged(proc, at_end.max_ptes_none),
                    **_after(proc, at_end.after))


def _after(proc: Process, after: str | None) -> dict:
    """The tables left once every anonymous mapping is madvise()d: MADV_DONTNEED zaps the pages and,
    with PT_RECLAIM, frees the PTE tables it empties (``zap_pte_range()`` -> ``try_to_free_pte()``);
    MADV_FREE frees no table (its pages go lazily, the tables stay). Runs last: it changes the state."""
    if after is None:
        return {}
    if after == "dontneed":
        for vma in [v for v in proc.space.vmas if v.kind in (*ANON, "shmem")]:
            proc.madvise(vma.start, vma.end - vma.start, MADV_DONTNEED)
    rows = [level_row(proc.profile, proc.release, name, n) for name, n in _tables(proc).items()]
    return {"after": after, "tables_after": {r.level: r.tables for r in rows},
            "after_page_table_bytes": vmpte_bytes(proc.profile, rows)}


def _khugepaged(proc: Process, max_ptes_none: int) -> list[KhugepagedDesign]:
    ranges = proc.khugepaged_ranges()
    return compute_khugepaged(proc.profile, ranges, set().union(*(r[2] for r in ranges)), max_ptes_none)


def page_table_bytes(proc: Process) -> int:
    """The process's page tables now, as VmPTE counts them."""
    rows = [level_row(proc.profile, proc.release, name, n) for name, n in _tables(proc).items()]
    return vmpte_bytes(proc.profile, rows)


def _tables(proc: Process) -> dict[str, int]:
    return tables_of(proc.profile, proc.space.pages)


def tables_of(profile: Profile, pages) -> dict[str, int]:
    """Tables per counted level: PTE tables as allocated, upper ones over the PMD blocks in use."""
    blocks, pte_tables = pages.table_blocks()
    uppers = []
    for per in upper_spans(profile):
        uppers.append(distinct_sorted(blocks // per))
    return tables_by_level(profile, uppers, pte_tables)


def upper_spans(profile: Profile) -> list[int]:
    """PMD blocks per table of each counted level above the PTE tables."""
    return [profile.table_span_bytes(name) // profile.pmd_size for name in counted_levels(profile)[:-1]]


def tables_by_level(profile: Profile, uppers: list[int], pte_tables: int) -> dict[str, int]:
    """The tables of each counted level: ``uppers`` above the PTE level, then the PTE tables."""
    levels = counted_levels(profile)
    out = dict(zip(levels[:-1], uppers))
    out[levels[-1]] = int(pte_tables)
    for name in profile.preallocated_levels:
        out[name] = 0
    return out


class Replay:
    """Every process of a record, event by event, under one set of settings."""

    def __init__(self, profile: Profile, release: Release, settings: ThpSettings, new_pages: Callable) -> None:
        self.profile, self.release, self.settings, self.new_pages = profile, release, settings, new_pages
        self.procs: dict[int, Process] = {}
        self.keys: dict = {}  # every VMA key seen (Process.key_id)

    def new_process(self, tgid: int) -> Process:
        return Process(tgid, self.profile, self.release, self.settings, self.new_pages, self.keys)

    def process(self, tgid: int) -> Process:
        proc = self.procs.get(tgid)
        if proc is None:
            proc = self.procs[tgid] = self.new_process(tgid)
        return proc

    def event(self, kind: int, tgid: int, a: int, b: int, c: int, d: int, e: int) -> None:
        """One event that is not a fault."""
        proc, page = self.process(tgid), self.profile.page_size
        if kind == MMAP:
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
            self.procs[tgid] = self.new_process(tgid)
            self.procs[tgid].thp_disabled = proc.thp_disabled
        elif kind == THP_DISABLE:
            proc.thp_disabled = bool(a)
        elif kind == IMAGE_BSS:
            proc.space.insert(Vma(a, b, "anon", prot=c, pgoff=a))
        elif kind == UFFD:
            proc.uffd(a, b, bool(c))
        elif kind == ATTACH_VMA:
            proc.attach_vma(a, b, c, ATTACH_KINDS[d], bool(e & ATTACH_HUGEPAGE), bool(e & ATTACH_NOHUGEPAGE))


class Events:
    """A record's events cut into what the replay runs at once: runs of one process's faults (up to
    a timeline point), and every other event alone.  Made once, for every set of settings."""

    def __init__(self, columns: dict, pid: int, page_size: int) -> None:
        kind, tgid = columns["kind"], columns["tgid"]
        n = len(kind)
        self.touched_pages = _touched_pages(columns, pid, page_size)
        self.pid, self.t_ns = pid, columns["t_ns"]
        self.step = max(1, n // TIMELINE_POINTS)
        self.addrs, self.errors = np.ascontiguousarray(columns["a"]), np.ascontiguousarray(columns["b"])
        fault = kind == FAULT
        cut = np.ones(n, bool)
        if n > 1:
            cut[1:] = ~fault[1:] | ~fault[:-1] | (tgid[1:] != tgid[:-1]) | (np.arange(n - 1) % self.step == 0)
        starts = np.flatnonzero(cut)
        ends = np.append(starts[1:], n)
        last = ends - 1
        self.segments = list(zip(starts.tolist(), ends.tolist(), fault[starts].tolist(), tgid[starts].tolist(),
                                 ((tgid[last] == pid) & (last % self.step == 0) & (kind[last] != EXIT_MMAP)).tolist()))
        other = np.flatnonzero(~fault)
        self.other = list(zip(*(columns[k][other].tolist() for k in ("kind", "tgid", *"abcde"))))


def _touched_pages(columns: dict, pid: int, page_size: int) -> int:
    """The pages process ``pid`` touched (faulted) in the address space whose end the replay reports:
    from its last exec to its last exit_mmap."""
    kind, tgid = columns["kind"], columns["tgid"]
    index = np.arange(len(kind))
    ends = np.flatnonzero((kind == EXIT_MMAP) & (tgid == pid))
    final = ends[-1] if len(ends) else len(kind)
    execs = np.flatnonzero((kind == EXEC) & (tgid == pid) & (index < final))
    begin = execs[-1] + 1 if len(execs) else 0
    mine = (kind == FAULT) & (tgid == pid) & (index >= begin) & (index < final)
    return distinct_sorted(np.sort(columns["a"][mine] // page_size))


def distinct_sorted(values: np.ndarray) -> int:
    """How many distinct values a sorted array holds (where it changes, without hashing them)."""
    return int(len(values) > 0) + int(np.count_nonzero(values[1:] != values[:-1]))


def walk(replay: Replay, events: Events, at_end: Callable[[Process], Any], sample: Callable | None = None) -> Any:
    """Every event of the record, in order: ``at_end(process)`` of process ``events.pid`` at its last
    exit_mmap (or after the last event), and ``sample(process, index)`` at each timeline point."""
    pid = events.pid
    final = None
    other = iter(events.other)
    for lo, hi, is_fault, tgid, sampled in events.segments:
        if is_fault:
            replay.process(tgid).faults(events.addrs, events.errors, lo, hi)
        else:
            kind, tgid, a, b, c, d, e = next(other)
            if kind == EXIT_MMAP:
                if tgid == pid:
                    final = at_end(replay.process(pid))
                continue
            replay.event(kind, tgid, a, b, c, d, e)
        if sampled and sample is not None:
            sample(replay.process(pid), hi - 1)
    return final if final is not None else at_end(replay.process(pid))


def replay_one(profile: Profile, release: Release, events: Events, settings: ThpSettings, label: str,
               compiled: bool, at_end: AtEnd = AtEnd()) -> tuple[TraceRun, int]:
    """Every event of the record, in order, under ``settings``: the end state of process
    ``events.pid`` (at its last exit_mmap), and how many address spaces the record holds."""
    replay = Replay(profile, release, settings, lambda page, pmd: addrspace.Pages(page, pmd, compiled))
    t = events.t_ns
    timeline: list[TimePoint] = []

    def sample(main: Process, i: int) -> None:
        timeline.append(TimePoint(seconds=(int(t[i]) - int(t[0])) / 1e9, populated_bytes=main.populated_bytes(),
                                  faults=int(main.counts[0]), page_table_bytes=page_table_bytes(main)))

    run = walk(replay, events,
               lambda proc: end_state(proc, label, events.touched_pages, list(timeline), at_end), sample)
    return run, len(replay.procs)


def checked_pid(profile: Profile, record, pid: int | None) -> int:
    """The process to report (default: the recorded command's), checked to be in the record, and the
    record checked to replay on ``profile``."""
    check_record(profile, record.meta)
    pid = pid if pid is not None else record.meta["pid"]
    if not (record.columns["tgid"] == pid).any():
        raise InputError(f"process {pid} has no event in the record", field="pid")
    return pid


def compute_trace(profile: Profile, release: Release, record, runs: dict[str, ThpSettings],
                  pid: int | None = None, command: str = "mthp", at_end: AtEnd = AtEnd()) -> TraceResult:
    """The record replayed under each named set of settings (``now``, ``what-if``); with
    ``at_end``, also what khugepaged would collapse of each end state, or the tables madvise() leaves.

    Kernel reference
    ----------------
    ``do_anonymous_page()``, ``alloc_anon_folio()``, ``create_huge_pmd()``, ``wp_page_copy()``,
    ``do_huge_zero_wp_pmd()`` (mm/memory.c, mm/huge_memory.c); ``mm_pgtables_bytes()`` (VmPTE).
    """
    pid = checked_pid(profile, record, pid)
    events = Events(record.columns, pid, profile.page_size)  # once, for every run
    compiled = addrspace.use_compiled(record.faults)
    results, processes = [], 0
    for label, settings in runs.items():
        run, processes = replay_one(profile, release, events, settings, label, compiled, at_end)
        results.append(run)
    notes = record_notes(record, pid, processes, results, profile.page_size)
    if at_end.max_ptes_none is not None:
        from hugecalc.calc.mthp import khugepaged_notes

        notes += ["khugepaged: every PMD range of the end state wholly inside an anonymous VMA THP allows and "
                  "mapped by a PTE table, scanned once; shared or swapped PTEs, which stop a collapse, are not "
                  "modelled", *khugepaged_notes(release)]
    return TraceResult(command=command, profile=profile.name, kernel=str(release), pid=pid, events=record.events,
                       recorded_faults=record.faults, runs=results, notes=notes,
                       inputs={"trace": record.meta.get("path"), "pid": pid, "runs": list(runs)},
                       explain=[_derivation(r) for r in results])


def record_notes(record, pid: int, processes: int, runs: list[TraceRun], page: int) -> list[str]:
    """What the record is and what it cannot know, for the replay's notes."""
    meta = record.meta
    command = " ".join(meta.get("command", []))
    counts = f"{record.events:,} events, {record.faults:,} page faults, {processes} address space(s)"
    if meta.get("attached"):
        end = "it exited" if meta.get("exited") else "still running when the record ended"
        notes = [f"the record of {command} (attached to it for {meta.get('seconds', 0):.2f} s; {end}): {counts}; "
                 f"the figures are process {pid}'s at the end of the record",
                 f"its {meta.get('present_at_start_pages', 0):,} pages present when the record attached replay "
                 "first, in address order, as mthp --pid replays a snapshot: for them the figures are bounds; "
                 "every event after the attach replays exactly"]
        large = [f for f in runs[0].folios if f.size_bytes > page]
        if not meta.get("thp_disabled") and large:
            notes.append("under the settings at the time it got larger folios (" + ", ".join(
                f"{f.count:,} x {fmt_size(f.size_bytes)}" for f in large) + "): the pages inside them never "
                "faulted one by one, so under smaller sizes the replay misses their faults")
    else:
        code = meta.get("exit_status") or 0
        status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        notes = [f"the record of {command} ({status}): {counts}; the figures are process {pid}'s at the end (its "
                 "last exit_mmap)",
                 "faults in mappings made before the record could see them (the program's own image, its stack) "
                 "replay as base pages and are not counted among the folios"]
    if meta.get("read_write") == "inferred":
        notes.append(f"the faults come from {meta.get('fault_source')}, which cannot tell a read from a write: "
                     "inferred from the sequence (a page that faulted again before anything could unmap it was read "
                     "first, the zero page, then written; a page faulted once, as written)")
    return notes


def _derivation(run: TraceRun) -> Derivation:
    return Derivation(
        scope=run.label, figure="faults and folios",
        formula=f"each recorded fault replayed in order under top level {run.settings['top_level']}, per size "
                + (", ".join(f"{s}={m}" for s, m in run.settings["enabled"].items() if m != "never") or "never")
                + f", with the VMAs as they stood: {run.faults:,} faults ({run.read_faults:,} read, "
                  f"{run.write_faults:,} write), {run.zero_page_mappings:,} zero-page mappings",
        rule="do_anonymous_page(), alloc_anon_folio(), wp_page_copy() in mm/memory.c; do_huge_zero_wp_pmd() in "
             "mm/huge_memory.c")
