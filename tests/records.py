"""Records written by hand, event by event, for the replay's rules (no root, no tracing)."""

import numpy as np

from hugecalc.machine.capture import Capture
from hugecalc.machine.trace import BRK, EXIT_MMAP, FAULT, MADVISE, MMAP, MUNMAP, write_record

PID = 4242
CAPTURE = "tests/data/captures/x86-64-6.18.json"
WRITE, READ = 0x6, 0x4  # error_code: user, write / user, read (not present)
MAP_ANON_PRIVATE = 0x22


def mmap(addr, length, flags=MAP_ANON_PRIVATE, prot=3):
    return (MMAP, addr, length, prot, flags, -1)


def munmap(addr, length):
    return (MUNMAP, addr, length, 0, 0, 0)


def brk(new):
    return (BRK, new, new, 0, 0, 0)


def madvise(addr, length, advice):
    return (MADVISE, addr, length, advice, 0, 0)


def touch(addr, write=True):
    return (FAULT, addr, WRITE if write else READ, 0, 0, 0)


def write_events(path, events, pid=PID, attached=False):
    """A record of ``events`` (kind, a, b, c, d, e) by one process, then its exit (``attached``: as
    ``record --pid`` writes one, the process's pages at the start first)."""
    rows = [(i * 1000, pid, pid, *event) for i, event in enumerate([*events, (EXIT_MMAP, 0, 0, 0, 0, 0)])]
    array = np.array(rows, dtype=np.int64)
    columns = {name: array[:, i] for i, name in enumerate(("t_ns", "tgid", "tid", "kind", "a", "b", "c", "d", "e"))}
    with open(CAPTURE) as f:
        capture = Capture.model_validate_json(f.read())
    meta = {"command": ["a-test"], "pid": pid, "exit_status": 0, "seconds": 0.0, "thp_disabled": True,
            "lost_events": 0, "kernel": capture.kernel, "page_size": capture.page_size,
            "capture": capture.model_copy(update={"processes": []}).model_dump(mode="json")}
    if attached:
        from hugecalc.machine.trace import ATTACH_VMA

        first = next((i for i, e in enumerate(events) if e[0] not in (ATTACH_VMA, FAULT)), len(events))
        meta.update(attached=True, exited=False, thp_disabled=False,
                    present_at_start_pages=sum(e[0] == FAULT for e in events[:first]))
    write_record(str(path), columns, meta)
    return path
