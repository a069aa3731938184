"""``hugecalc record``: run a command and record its true fault sequence with the kernel's own
tracing (tracefs), for the whole process tree.

The command runs with ``PR_SET_THP_DISABLE`` (inherited across fork and exec), so every first
touch of every page is a base-page fault in the record, whatever the machine's THP settings.  The
tracing lives in a tracefs instance of its own (``instances/hugecalc-PID``), filtered to the
command's pid with ``event-fork`` (its children and threads follow), and the instance is removed
when the record ends (through the ``Restorer`` journal after a crash too).

Kernel reference
----------------
``exceptions:page_fault_user`` and ``page_fault_kernel`` (arch/x86/include/asm/trace/exceptions.h:
address, ip, error_code; the kernel's faults on user pages, in copy_to_user() and the like, fault
pages in too); the ``syscalls`` enter/exit events of mmap, munmap, brk, mremap, mprotect, madvise;
``task:task_newtask`` (clone_flags), ``sched:sched_process_exec``, ``mmap:exit_mmap``;
``PR_SET_THP_DISABLE`` (kernel/sys.c, ``MMF_DISABLE_THP``).
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from pathlib import Path

from hugecalc.errors import HostError, InputError
from hugecalc.machine import kernelfs
from hugecalc.machine.trace import (BRK, EXEC, EXIT_MMAP, FAULT, IMAGE_BSS, MADVISE, MMAP, MPROTECT, MREMAP, MUNMAP,
                                    NEWTASK, THP_DISABLE, UFFD, USER_TOP)

TRACEFS = Path("/sys/kernel/tracing")
PR_SET_THP_DISABLE = 41
BUFFER_KB_PER_CPU = 131072
SYSCALLS = ("mmap", "munmap", "brk", "mremap", "mprotect", "madvise", "prctl", "ioctl")
UFFDIO_REGISTER, UFFDIO_UNREGISTER = 0xC020AA00, 0x8010AA01  # _IOWR/_IOR(0xAA, 0/1, ...)
#: filters on syscall entries: only the ioctls that change the userfaultfd-registered ranges
FILTERS = {"syscalls/sys_enter_ioctl": f"cmd == {UFFDIO_REGISTER:#x} || cmd == {UFFDIO_UNREGISTER:#x}"}
FAULT_EVENTS = ("exceptions/page_fault_user", "exceptions/page_fault_kernel")  # x86 only
EVENTS = ("task/task_newtask", "sched/sched_process_exec", "mmap/exit_mmap",
          *(f"syscalls/sys_{edge}_{name}" for name in SYSCALLS for edge in ("enter", "exit")))
#: where the faults come from: the x86 tracepoints (read or write recorded), or perf's page-faults
#: software event, on every architecture (read or write inferred: hugecalc.machine.perffaults)
SOURCES = {"tracepoint": "exceptions:page_fault_user", "perf": "perf page-faults"}
#: events after which a page may be gone, or a write to it is copy-on-write (perffaults.infer_writes)
RESETS = (MUNMAP, MADVISE, MREMAP, BRK, NEWTASK, EXEC, EXIT_MMAP, MPROTECT)

_LINE = re.compile(rb"^\s*.*?-(\d+)\s+\(\s*(\d+|-+)\)\s+\[\d+\]\s+\S*\s*(\d+)\.(\d+): (\w+)(?:: | -> |\()(.*)$")
_ARGS = re.compile(rb"(\w+)[:=] ?(0x[0-9a-fA-F]+|-?\d+)")


def fault_source(asked: str = "auto") -> str:
    """The fault source to use: ``asked``, or for ``auto`` the tracepoints where the kernel has them."""
    root = tracefs_root()
    has_tracepoints = all(kernelfs.exists(root / "events" / e) for e in FAULT_EVENTS)
    if asked == "tracepoint" and not has_tracepoints:
        raise HostError("this kernel has no tracepoint exceptions:page_fault_user (x86 only): "
                        "record with --fault-source perf")
    return asked if asked != "auto" else "tracepoint" if has_tracepoints else "perf"


def tracefs_root() -> Path:
    """The tracefs mount, mounted where it is missing (root)."""
    if not kernelfs.exists(TRACEFS / "instances"):
        import subprocess

        if subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True).returncode:
            raise HostError(f"tracefs is not mounted at {TRACEFS} and cannot be: the kernel has no tracing")
    for event in EVENTS:
        if not kernelfs.exists(TRACEFS / "events" / event):
            raise HostError(f"this kernel has no tracepoint {event.replace('/', ':')}: a record needs it "
                            "(CONFIG_FTRACE_SYSCALLS for the syscalls)")
    return TRACEFS


class Parser:
    """Trace lines -> event rows; a syscall's enter and exit become one row at its exit."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.pending: dict[tuple[int, bytes], dict[bytes, int]] = {}
        self.lost = 0
        self.execed: set[int] = set()  # processes past an exec: before it, the prctl is hugecalc's own

    def feed(self, line: bytes) -> None:
        m = _LINE.match(line)
        if m is None:
            if b"LOST" in line:
                count = re.search(rb"LOST (\d+)", line)
                self.lost += int(count[1]) if count else 1
            return
        tid, tgid = int(m[1]), int(m[2]) if m[2].isdigit() else int(m[1])
        t_ns = int(m[3]) * 1_000_000_000 + int(m[4].ljust(9, b"0")[:9])
        name, rest = m[5], m[6]
        if name in (b"page_fault_user", b"page_fault_kernel"):
            args = _args(rest)
            if args[b"address"] < USER_TOP:  # a user page (the kernel's own faults are not ours)
                self.rows.append((t_ns, tgid, tid, FAULT, args[b"address"], args[b"error_code"], 0, 0, 0))
        elif name.startswith(b"sys_") and line[m.end(5):m.end(5) + 1] == b"(":
            self.pending[(tid, name)] = _args(rest)
        elif name.startswith(b"sys_"):
            ret = int(rest.strip(), 16) if rest.strip().startswith(b"0x") else int(rest.strip())
            self._syscall(t_ns, tgid, tid, name[4:], self.pending.pop((tid, name), {}), ret)
        elif name == b"task_newtask":
            args = _args(rest)
            self.rows.append((t_ns, tgid, tid, NEWTASK, args[b"pid"], args[b"clone_flags"], 0, 0, 0))
        elif name == b"sched_process_exec":
            self.execed.add(tgid)
            self.rows.append((t_ns, tgid, tid, EXEC, 0, 0, 0, 0, 0))
            for start, end, prot in image_bss(tgid):  # read now, while the program is young
                self.rows.append((t_ns + 1, tgid, tid, IMAGE_BSS, start, end, prot, 0, 0))
        elif name == b"exit_mmap":
            self.rows.append((t_ns, tgid, tid, EXIT_MMAP, 0, 0, 0, 0, 0))

    def _syscall(self, t_ns: int, tgid: int, tid: int, name: bytes, a: dict, ret: int) -> None:
        if ret < 0 or (ret >= 1 << 63):  # failed: the address space did not change
            return
        if name == b"mmap":
            self.rows.append((t_ns, tgid, tid, MMAP, ret, a.get(b"len", 0), a.get(b"prot", 0), a.get(b"flags", 0),
                              _signed(a.get(b"fd", 0))))
        elif name == b"munmap":
            self.rows.append((t_ns, tgid, tid, MUNMAP, a.get(b"addr", 0), a.get(b"len", 0), 0, 0, 0))
        elif name == b"brk":
            self.rows.append((t_ns, tgid, tid, BRK, ret, a.get(b"brk", 0), 0, 0, 0))
        elif name == b"mremap":
            self.rows.append((t_ns, tgid, tid, MREMAP, a.get(b"addr", 0), a.get(b"old_len", 0), a.get(b"new_len", 0),
                              a.get(b"flags", 0), ret))
        elif name == b"mprotect":
            self.rows.append((t_ns, tgid, tid, MPROTECT, a.get(b"start", 0), a.get(b"len", 0), a.get(b"prot", 0), 0, 0))
        elif name == b"madvise":
            self.rows.append((t_ns, tgid, tid, MADVISE, a.get(b"start", 0), a.get(b"len_in", 0),
                              a.get(b"behavior", 0), 0, 0))
        elif name == b"prctl" and a.get(b"option") == PR_SET_THP_DISABLE and tgid in self.execed:
            self.rows.append((t_ns, tgid, tid, THP_DISABLE, a.get(b"arg2", 0), 0, 0, 0, 0))
        elif name == b"ioctl" and a.get(b"cmd") in (UFFDIO_REGISTER, UFFDIO_UNREGISTER):
            self.rows += uffd_ranges(t_ns, tgid, tid)

    def columns(self) -> dict:
        import numpy as np

        from hugecalc.machine.trace import COLUMNS

        if not self.rows:
            return {c: np.zeros(0, dtype=np.int64) for c in COLUMNS}
        array = np.array(self.rows, dtype=np.uint64).astype(np.int64)
        order = np.argsort(array[:, 0], kind="stable")  # per-CPU buffers interleave: by time
        return {c: array[order, i] for i, c in enumerate(COLUMNS)}


def uffd_ranges(t_ns: int, tgid: int, tid: int) -> list[tuple]:
    """The process's userfaultfd-registered mappings (VmFlags um, uw, ui in /proc/PID/smaps), read as
    an UFFDIO_(UN)REGISTER is parsed, a few milliseconds after it: the registration's range is in the
    program's memory, which no tracepoint shows."""
    from hugecalc.machine.processes import smaps

    try:
        vmas = smaps(tgid, os.sysconf("SC_PAGESIZE"))
    except InputError:  # it went away
        return []
    return [(t_ns, tgid, tid, UFFD, 0, 0, 0, 0, 0)] + [
        (t_ns, tgid, tid, UFFD, v["start"], v["end"], 1, 0, 0) for v in vmas
        if {"um", "uw", "ui"} & set(v["flags"])]


def image_bss(pid: int) -> list[tuple[int, int, int]]:
    """The anonymous mappings execve() made for a program and its interpreter, their bss: each an
    unnamed mapping right after a file mapping of the executable or the interpreter (load_elf_binary()
    maps them before the program runs, so no mmap of the record shows them)."""
    try:
        lines = kernelfs.read(kernelfs.PROC / str(pid) / "maps").splitlines()
        exe = os.readlink(kernelfs.PROC / str(pid) / "exe")
    except OSError:
        return []
    out, previous = [], None
    for line in lines:
        parts = line.split()
        start, end = (int(x, 16) for x in parts[0].split("-"))
        name = parts[5] if len(parts) > 5 else ""
        if not name and previous and previous[0] == start and (previous[1] == exe or "/ld-" in previous[1]):
            prot = (parts[1][0] == "r") | (parts[1][1] == "w") << 1 | (parts[1][2] == "x") << 2
            out.append((start, end, prot))
        previous = (end, name)
    return out


def _args(rest: bytes) -> dict[bytes, int]:
    return {k: int(v, 16) if v.startswith(b"0x") else int(v) for k, v in _ARGS.findall(rest)}


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


class Instance:
    """A tracefs instance of our own: the events on, filtered to one pid and its descendants."""

    def __init__(self, restorer, source: str = "tracepoint") -> None:
        self.events = (*FAULT_EVENTS, *EVENTS) if source == "tracepoint" else EVENTS
        self.path = tracefs_root() / "instances" / f"hugecalc-{os.getpid()}"
        restorer.scratch("tracefs-instance", str(self.path))
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise HostError(f"cannot create the tracefs instance {self.path}: {e.strerror}") from None
        for option, value in (("record-tgid", "1"), ("event-fork", "1"), ("overwrite", "0")):
            kernelfs.write_text(self.path / "options" / option, value)
        kernelfs.write_text(self.path / "buffer_size_kb", str(BUFFER_KB_PER_CPU))
        # CLOCK_MONOTONIC: the clock perf's samples and an attach's first rows carry, so that they merge in order
        kernelfs.write_text(self.path / "trace_clock", "mono")

    def start(self, pids: list[int]) -> None:
        kernelfs.write_text(self.path / "set_event_pid", " ".join(map(str, pids)))
        for event, expression in FILTERS.items():
            kernelfs.write_text(self.path / "events" / event / "filter", expression)
        for event in self.events:
            kernelfs.write_text(self.path / "events" / event / "enable", "1")
        kernelfs.write_text(self.path / "tracing_on", "1")

    def stop(self) -> None:
        kernelfs.write_text(self.path / "tracing_on", "0")


def _drain(pipe: int, parser: Parser, done: threading.Event) -> None:
    """Read trace_pipe until ``done`` and the pipe is empty, parsing as it comes."""
    tail = b""
    while True:
        ready, _, _ = select.select([pipe], [], [], 0.05)
        chunk = b""
        if ready:
            try:
                chunk = os.read(pipe, 1 << 20)
            except BlockingIOError:
                chunk = b""
        if chunk:
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                parser.feed(line)
        elif done.is_set():
            break
    if tail:
        parser.feed(tail)


def spawn_without_thp(argv: list[str]) -> tuple[int, int, int]:
    """Fork the command, held before exec until a byte is written to the pipe returned: (pid, that
    pipe, a pipe that reads the exec's error, or EOF once it ran). The child sets
    PR_SET_THP_DISABLE and execs."""
    import ctypes

    go_read, go_write = os.pipe()
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: no Python state past this point matters
        try:
            os.close(go_write)
            os.close(err_read)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
            os.read(go_read, 1)
            os.close(go_read)
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(err_write, (e.strerror or str(e)).encode())
        os._exit(127)
    os.close(go_read)
    os.close(err_write)
    return pid, go_write, err_read


def _run_traced(argv: list[str], instance: Instance, on_start, parser: Parser,
                source: str) -> tuple[int, int, float]:
    """The command, traced from its exec on: (its pid, its wait status, seconds it ran)."""
    from hugecalc.machine.perffaults import PerfFaults, collect

    pid, go, exec_error = spawn_without_thp(argv)
    perf = None
    try:
        instance.start([pid])
        if source == "perf":
            perf = PerfFaults([pid])  # enabled at the exec
        started = time.time()
        os.write(go, b"x")
        os.close(go)
        failed = os.read(exec_error, 512).decode()
        os.close(exec_error)
        if failed:
            os.waitpid(pid, 0)
            raise InputError(f"{argv[0]}: {failed}: the command cannot run; nothing recorded")
        if on_start:
            on_start(pid)
        _, status = os.waitpid(pid, 0)
        elapsed = time.time() - started
        time.sleep(0.05)  # the last events reach the buffer
        collect(perf, parser, USER_TOP, FAULT)
        return pid, status, elapsed
    except BaseException:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    finally:
        if perf is not None:  # closed already after a normal stop: close() is then a no-op
            perf.close()


def record(argv: list[str], output: str, on_start=None, force: bool = False,
           source: str = "auto", attach: tuple[int, float] | None = None) -> tuple[int, dict]:
    """Run ``argv`` under tracing, or with ``attach`` = (pid, seconds) trace a running process; write
    the record to ``output``: (the command's exit status, 0 for an attach; what the record holds).
    ``source``: where the faults come from (:data:`SOURCES`, or auto)."""
    from hugecalc.machine.restore import Restorer
    from hugecalc.machine.snapshot import capture_machine
    from hugecalc.machine.trace import write_record

    if not kernelfs.is_root():
        raise InputError("hugecalc record traces the kernel (tracefs): run it as root")
    if not argv and attach is None:
        raise InputError("give the command to record after --, e.g. hugecalc record -- python3 app.py")
    capture = capture_machine()
    parser = Parser()
    source = fault_source(source)
    with Restorer() as restorer:
        instance = Instance(restorer, source)
        pipe = os.open(instance.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        done = threading.Event()
        reader = threading.Thread(target=_drain, args=(pipe, parser, done), daemon=True)
        reader.start()
        held = {"thp_disabled": True}
        try:
            if attach is None:
                pid, status, elapsed = _run_traced(argv, instance, on_start, parser, source)
            else:
                from hugecalc.machine.attach import run_attached

                pid, status, elapsed, held = run_attached(*attach, instance, on_start, parser, source,
                                                          capture.page_size, capture.profile.user_va_bytes)
                argv = held.pop("command")
        finally:  # the instance can only go once nothing reads it
            instance.stop()
            done.set()
            reader.join()
            os.close(pipe)
    code = os.waitstatus_to_exitcode(status) if status is not None else 0  # an attach: not ours to know
    columns = parser.columns()
    if source == "perf":
        from hugecalc.machine.perffaults import infer_writes

        infer_writes(columns, capture.page_size, FAULT, RESETS)
    meta = {"command": argv, "pid": pid, "exit_status": code if status is not None else None, "seconds": round(elapsed, 6),
            "fault_source": SOURCES[source], "read_write": "recorded" if source == "tracepoint" else "inferred",
            **held, "lost_events": parser.lost, "kernel": capture.kernel,
            "page_size": capture.page_size, "capture": capture.model_dump(mode="json")}
    if parser.lost:
        raise HostError(f"the kernel's trace buffer overflowed: {parser.lost:,} events lost; nothing written")
    write_record(output, columns, meta, force)
    return code, {"events": int(columns["kind"].shape[0]), "faults": int((columns["kind"] == FAULT).sum()),
                  "seconds": elapsed, "exited": held.get("exited"),
                  "present_at_start": held.get("present_at_start_pages", 0)}
