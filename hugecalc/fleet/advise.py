"""``hugecalc fleet advise``: the THP settings that meet a budget on every host of a fleet.

Each host is one record (``hugecalc record`` on that host), advised as ``advise --trace FILE``
advises it, or one capture (``hugecalc host --pids``), each of whose processes is advised as
``advise --host FILE --pid PID`` advises it from its snapshot (with the snapshot's stated bound);
one Dask task a source.  Over the fleet: the settings within the budget on every host,
ranked by the TLB entries they leave in all (then faults, then memory), the best of them, and the
hosts whose own advice differs from it.
"""

from __future__ import annotations

import os
from glob import glob
from pathlib import Path

from hugecalc.errors import HugecalcError, InputError
from hugecalc.result import Model, Result, field


class HostAdvice(Model):
    source: str = field("Record, or captured process")
    advised: str | None = field("Its own advice")
    error: str | None = field("Why it failed", default=None)


class FleetSetting(Model):
    label: str = field("Setting")
    same_as: list[str] = field("Settings with the same figures on every host")
    tlb_entries: int = field("TLB entries, all hosts", "count")
    faults: int = field("Page faults, all hosts", "count")
    populated_bytes: int = field("Memory populated, all hosts", "bytes")
    worst_bloat: float = field("Worst host's bloat", "share")


class FleetAdviseResult(Result):
    command: str = "fleet advise"
    hosts: int = field("Hosts", "count")
    hosts_failed: int = field("Hosts that failed", "count")
    advised: str | None = field("Advised for every host")
    within_budget_everywhere: list[FleetSetting]
    hosts_advice: list[HostAdvice]
    disagree: dict[str, int] = field("Hosts whose own advice is another setting, by that setting")


def record_sources(sources: list[str]) -> list[str]:
    """Records and captures, from files, folders (their ``*.record`` and capture ``*.json``) and
    patterns."""
    from hugecalc.fleet.sources import is_capture_name

    out: list[str] = []
    for source in sources:
        if any(c in source for c in "*?["):
            found = sorted(glob(source))
        elif os.path.isdir(source):
            found = [str(p) for p in sorted(Path(source).iterdir()) if not p.name.startswith(".")
                     and (p.suffix == ".record" or p.suffix == ".json" and is_capture_name(p.name))]
        elif os.path.exists(source):
            found = [source]
        else:
            raise InputError(f"{source}: no such file, directory or pattern")
        if not found:
            raise InputError(f"{source}: holds no record (*.record, made by 'hugecalc record') and no capture "
                             "(*.json, made by 'hugecalc host --pids')")
        out += found
    return out


def advise_host(path: str, options: dict) -> list[dict]:
    """One source: a record advised as ``advise --trace FILE`` advises it, or each process of a
    capture as ``advise --host FILE --pid PID`` does; every setting within the budget with its figures."""
    from hugecalc.machine.trace import is_record

    try:
        if is_record(path):
            return [_advice(path, _advise_record(path, options))]
        return _advise_capture(path, options)
    except HugecalcError as e:
        return [{"source": path, "advised": None, "error": str(e), "within": {}}]


def _context(capture, options: dict) -> tuple:
    from hugecalc.calc.replay import settings_from_capture
    from hugecalc.machine.capture import captured_release
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release

    profile = load_profile(options["profile"]) if options.get("profile") else capture.profile
    release = parse_release(options["kernel"]) if options.get("kernel") else captured_release(capture)
    return profile, release, settings_from_capture(capture)[0]


def _advise_record(path: str, options: dict):
    from hugecalc.calc.advise import compute_advise
    from hugecalc.machine.capture import Capture
    from hugecalc.machine.trace import read_record

    record = read_record(path)
    profile, release, now = _context(Capture.model_validate(record.meta["capture"]), options)
    return compute_advise(profile, release, record, now, None, options.get("max_bloat"), options.get("max_memory"))


def _advise_capture(path: str, options: dict) -> list[dict]:
    """Each captured process with anonymous or shmem pages present, advised from its snapshot."""
    from hugecalc.calc.advise_snapshot import compute_advise_snapshot
    from hugecalc.machine.capture import load_capture

    capture = load_capture(path)
    if not capture.processes:
        raise InputError("the capture holds no process (capture with 'hugecalc host --pids PID,...')")
    profile, release, now = _context(capture, options)
    rows = []
    for proc in capture.processes:
        present = proc.present_vmas(capture.page_size)
        try:
            result = compute_advise_snapshot(profile, release, proc.pid, proc.comm, present, proc.thp_enabled is False,
                                             now, options.get("max_bloat"), options.get("max_memory"))
        except InputError as e:
            if e.field == "pid":
                continue  # a process without anonymous or shmem pages: no setting changes it
            raise
        rows.append(_advice(f"{path}: pid {proc.pid} ({proc.comm})", result))
    if not rows:
        raise InputError("no captured process has anonymous or shmem pages present: nothing to advise")
    return rows


def _advice(source: str, result) -> dict:
    within = {}
    for c in result.candidates:
        if c.within_budget:
            for label in (c.label, *c.same_as):
                within[label] = (c.tlb_entries, c.faults, c.populated_bytes, c.bloat)
    return {"source": source, "advised": result.advised, "error": None, "within": within}


def run(sources: list[str], options: dict, scheduler: str | None, timeout: float | None = None) -> list[dict]:
    """Every host advised: in-process (Dask's synchronous scheduler), or on the cluster (a host whose
    task is lost or late fails alone: ``engine.on_cluster``)."""
    import dask

    from hugecalc.fleet.engine import on_cluster

    tasks = [dask.delayed(advise_host, pure=True)(path, options) for path in sources]
    if scheduler is None:
        done = list(dask.compute(*tasks, scheduler="synchronous"))
    else:
        done = on_cluster(scheduler, tasks, timeout,
                          lambda i, why: [{"source": sources[i], "advised": None, "error": why, "within": {}}])
    return [row for rows in done for row in rows]


def fleet_advice(rows: list[dict], options: dict) -> FleetAdviseResult:
    """The settings within the budget on every host that did not fail, ranked; the hosts that differ."""
    ok = [r for r in rows if r["error"] is None]
    common = set.intersection(*(set(r["within"]) for r in ok)) if ok else set()
    same: dict[tuple, list[str]] = {}  # the settings with the same figures on every host, simplest first
    for label in sorted(common, key=lambda x: (x.count("+"), x)):
        same.setdefault(tuple(r["within"][label] for r in ok), []).append(label)
    ranked = []
    for figs, labels in same.items():
        ranked.append(FleetSetting(label=labels[0], same_as=labels[1:], tlb_entries=sum(f[0] for f in figs),
                                   faults=sum(f[1] for f in figs), populated_bytes=sum(f[2] for f in figs),
                                   worst_bloat=max(f[3] for f in figs)))
    ranked.sort(key=lambda s: (s.tlb_entries, s.faults, s.populated_bytes, s.label.count("+"), s.label))
    best = ranked[0].label if ranked else None
    disagree: dict[str, int] = {}
    for r in ok:  # a host's own advice differs when it is another setting with other figures there
        own = r["advised"]
        if own != best and (own is None or best is None or r["within"].get(own) != r["within"].get(best)):
            disagree[str(own)] = disagree.get(str(own), 0) + 1
    notes = [f"{len(ok)} of {len(rows)} hosts advised, each record as 'hugecalc advise --trace FILE' advises it "
             "and each captured process as 'advise --host FILE --pid PID' does; the fleet's setting is within the "
             "budget on every one of them, with the fewest TLB entries in all"]
    if any(": pid " in r["source"] for r in rows):
        notes.append("a captured process is advised from a snapshot of its present pages, which cannot know the "
                     "order of its faults: its figures are bounds (see 'advise --host FILE --pid PID'); a record "
                     "of it is exact")
    if ok and best is None:
        notes.append("no setting is within the budget on every host")
    return FleetAdviseResult(profile=options.get("profile") or "each host's", kernel=options.get("kernel") or
                             "each host's", inputs=options, hosts=len(rows), hosts_failed=len(rows) - len(ok),
                             advised=best, within_budget_everywhere=ranked[:20],
                             hosts_advice=[HostAdvice(source=r["source"], advised=r["advised"], error=r["error"])
                                           for r in rows], disagree=disagree, notes=notes)
