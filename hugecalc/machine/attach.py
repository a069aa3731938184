"""``hugecalc record --pid PID --duration D``: a running process recorded from now on.

The tracing starts first (every thread of the process in the instance's pid filter, its new tasks
following), then the process is read as ``host --pids`` reads it: its mappings and present pages
become the record's first rows, one ``ATTACH_VMA`` per mapping and one write fault per present page
in address order (what ``mthp --pid`` assumes of a snapshot), stamped just before the first traced
event.  A page the traced events touch again finds itself present, so the order of the two reads
cannot double a page.

Unlike a command it starts, a running process keeps the machine's THP settings: where they gave
it large folios, the pages inside them never fault one by one, and the record cannot know them
(the replay says so when it sees such folios).
"""

from __future__ import annotations

import os
import select
import time

from hugecalc.errors import InputError
from hugecalc.machine import kernelfs
from hugecalc.machine.trace import ATTACH_HUGEPAGE, ATTACH_KINDS, ATTACH_NOHUGEPAGE, ATTACH_VMA, FAULT, USER_TOP

#: a snapshot's mapping kinds as the replay's (a stack is anonymous memory; sysv is a file of shm)
KIND = {"anon": "anon", "stack": "anon", "heap": "heap", "shmem": "shmem", "hugetlb": "hugetlb"}
WRITE = 2  # the error-code bit of a write


def thread_ids(pid: int) -> list[int]:
    """The process's threads (each must be in the tracefs pid filter: it matches task ids)."""
    try:
        return sorted(int(t.name) for t in kernelfs.glob(kernelfs.PROC / str(pid) / "task", "[0-9]*"))
    except OSError:
        raise InputError(f"--pid {pid}: no such process") from None


def command_line(pid: int) -> list[str]:
    """The process's argv (its comm, where the command line is empty: a kernel thread has none)."""
    try:
        argv = kernelfs.read(kernelfs.PROC / str(pid) / "cmdline").split("\0")[:-1]
        return argv or [kernelfs.read(kernelfs.PROC / str(pid) / "comm").strip()]
    except OSError:
        raise InputError(f"--pid {pid}: no such process") from None


def initial_rows(pid: int, page: int, user_va: int, t_ns: int) -> tuple[list[tuple], object]:
    """The process as it stands: its mappings and present pages as record rows at ``t_ns``, and
    the snapshot they came from."""
    from hugecalc.machine.processes import capture_process, smaps

    prot = {v["start"]: ("rd" in v["flags"]) | ("wr" in v["flags"]) << 1 | ("ex" in v["flags"]) << 2
            for v in smaps(pid, page, "--pid")}
    proc = capture_process(pid, page, user_va, "--pid")
    rows: list[tuple] = []
    for v in proc.present_vmas(page):
        kind = KIND.get(v.kind, "file")
        flags = ATTACH_HUGEPAGE * ("hg" in v.flags) | ATTACH_NOHUGEPAGE * ("nh" in v.flags)
        rows.append((t_ns, pid, pid, ATTACH_VMA, v.start, v.end, prot.get(v.start, 3), ATTACH_KINDS.index(kind),
                     flags))
        if kind in ("anon", "heap", "shmem"):
            for lo, hi in zip(v.starts.tolist(), v.ends.tolist()):
                rows += [(t_ns, pid, pid, FAULT, addr, WRITE, 0, 0, 0) for addr in range(lo, hi, page)]
    return rows, proc


def wait(pid: int, seconds: float) -> bool:
    """Until the process exits or ``seconds`` pass (Ctrl-C ends it early too): whether it exited."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], seconds)
        return bool(ready)
    except KeyboardInterrupt:
        return False
    finally:
        os.close(fd)


def monotonic_ns() -> int:
    """The clock the tracefs instance stamps events with (trace_clock mono)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def run_attached(pid: int, seconds: float, instance, on_start, parser, source: str,
                  page: int, user_va: int) -> tuple[int, None, float, dict]:
    """A running process traced for ``seconds`` (or until it exits): (its pid, no status, seconds
    traced, what the record says of it); its state at the start becomes the parser's first rows."""
    from hugecalc.machine.perffaults import PerfFaults, collect

    tids = thread_ids(pid)
    command = command_line(pid)
    t0 = monotonic_ns()
    instance.start(tids)
    perf = PerfFaults(tids, on_exec=False) if source == "perf" else None
    try:
        started = time.time()
        rows, proc = initial_rows(pid, page, user_va, t0)
        parser.rows += rows
        parser.execed.add(pid)  # its own prctl() calls count from now on
        if on_start:
            on_start(pid)
        exited = wait(pid, seconds)
        elapsed = time.time() - started
        time.sleep(0.05)  # the last events reach the buffer
        collect(perf, parser, USER_TOP, FAULT)
    finally:
        if perf is not None:  # closed already after a normal stop: close() is then a no-op
            perf.close()
    held = {"command": command, "attached": True, "exited": exited,
            "present_at_start_pages": sum(v.present_pages for v in proc.vmas if KIND.get(v.kind)
                                          in ("anon", "heap", "shmem")),
            "thp_disabled": proc.thp_enabled is False}
    return pid, None, elapsed, held
