"""The page faults of a process tree from perf's ``page-faults`` software event, where the kernel has
no ``exceptions:page_fault_user`` tracepoint (every architecture but x86).

Every architecture's fault handler counts a fault with ``perf_sw_event(PERF_COUNT_SW_PAGE_FAULTS,
1, regs, address)`` before it handles it, so one sampled event per CPU (``sample_period`` 1,
``inherit``: the process's threads and children follow, their samples go to the event's ring
buffer) gives every fault's address, task and time (``CLOCK_MONOTONIC``, the clock the tracefs
instance is set to, so the two streams merge in order).  What it cannot give is whether the fault
read or wrote: :func:`infer_writes` reads that from the sequence (a page that faults again before
anything could have unmapped it was mapped to the zero page by a read, then written).

Kernel reference
----------------
``perf_sw_event(PERF_COUNT_SW_PAGE_FAULTS, ...)`` in ``do_user_addr_fault()`` (x86),
``do_page_fault()`` (arm64, riscv, powerpc, s390); ``perf_output_begin()``: "For inherited events we
send all the output towards the parent"; include/uapi/linux/perf_event.h (the ABI).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
import threading
import time

import numpy as np

from hugecalc.errors import HostError

PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS = 1, 2
PERF_SAMPLE_TID, PERF_SAMPLE_TIME, PERF_SAMPLE_ADDR = 1 << 1, 1 << 2, 1 << 3
PERF_RECORD_LOST, PERF_RECORD_SAMPLE = 2, 9
#: perf_event_attr.flags bits
DISABLED, INHERIT, EXCLUDE_HV, ENABLE_ON_EXEC, USE_CLOCKID = 1 << 0, 1 << 1, 1 << 6, 1 << 12, 1 << 25
CLOCK_MONOTONIC = 1
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_DISABLE = 0x2401
ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5: up to clockid and sample_regs_intr
#: __NR_perf_event_open by machine (the syscall has no libc wrapper)
SYSCALL = {"x86_64": 298, "aarch64": 241, "arm64": 241, "riscv64": 241, "loongarch64": 241, "ppc64le": 319,
           "ppc64": 319, "s390x": 331, "i686": 336, "i386": 336, "armv7l": 364}
RING_PAGES = 1 << 12  # 16 MiB of samples per CPU with 4K pages, drained as they come
SAMPLE = struct.Struct("<IHHIIQQ")  # header (type, misc, size), pid, tid, time, addr


def available() -> str | None:
    """Why perf's page-faults event cannot be used here, or None when it can."""
    if platform.machine() not in SYSCALL:
        return f"no perf_event_open() number known for {platform.machine()}"
    if not os.path.exists("/proc/sys/kernel/perf_event_paranoid"):
        return "this kernel has no perf events (CONFIG_PERF_EVENTS)"
    return None


def online_cpus() -> list[int]:
    """The CPUs online (a per-CPU event can be opened on those only)."""
    try:
        text = open("/sys/devices/system/cpu/online").read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def _attr(on_exec: bool) -> bytes:
    buf = bytearray(ATTR_SIZE)
    start = DISABLED | ENABLE_ON_EXEC if on_exec else 0
    struct.pack_into("<IIQQQQQ", buf, 0, PERF_TYPE_SOFTWARE, ATTR_SIZE, PERF_COUNT_SW_PAGE_FAULTS, 1,
                     PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_ADDR, 0, start | INHERIT | EXCLUDE_HV | USE_CLOCKID)
    struct.pack_into("<I", buf, 48, 0)  # wakeup_events: none per sample (no one polls: the thread drains the rings every 10 ms)
    struct.pack_into("<i", buf, 92, CLOCK_MONOTONIC)  # clockid
    return bytes(buf)


class PerfFaults:
    """One page-faults event per CPU on each task of ``tids`` (a command held before its exec: the
    events start there; or the threads of a running process: from now on), read by a thread of its
    own."""

    def __init__(self, tids: list[int], on_exec: bool = True) -> None:
        why = available()
        if why:
            raise HostError(f"cannot record page faults: {why}")
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(_attr(on_exec), ATTR_SIZE)
        self.page = mmap.PAGESIZE
        self.fds, self.rings, self.chunks, self.lost = [], [], [], 0
        for tid, cpu in ((t, c) for t in tids for c in online_cpus()):
            fd = libc.syscall(SYSCALL[platform.machine()], attr, tid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                self.close()
                raise HostError(f"perf_event_open(page-faults) of task {tid} on CPU {cpu}: {os.strerror(err)}")
            self.fds.append(fd)
            self.rings.append(mmap.mmap(fd, (1 + RING_PAGES) * self.page))
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            busy = any([self._read(ring) for ring in self.rings])
            if not busy:
                if self.done.is_set():
                    return
                time.sleep(0.01)

    def _read(self, ring: mmap.mmap) -> bool:
        """The samples between the ring's tail and head, kept; the tail moved past them."""
        head, tail = struct.unpack_from("<QQ", ring, 1024)  # data_head, data_tail
        if head == tail:
            return False
        size = RING_PAGES * self.page
        start, length = tail % size, head - tail
        if start + length <= size:
            data = ring[self.page + start:self.page + start + length]
        else:  # the samples wrap around the end of the ring
            data = ring[self.page + start:self.page + size] + ring[self.page:self.page + length - (size - start)]
        self.chunks.append(data)
        struct.pack_into("<Q", ring, 1032, head)
        return True

    def stop(self) -> None:
        import fcntl

        for fd in self.fds:
            try:
                fcntl.ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)
            except OSError:
                pass
        self.done.set()
        self.thread.join()
        self.close()

    def close(self) -> None:
        for ring in self.rings:
            ring.close()
        for fd in self.fds:
            os.close(fd)
        self.rings, self.fds = [], []

    def rows(self, user_top: int, fault_kind: int) -> list[tuple]:
        """The samples as record rows (t_ns, tgid, tid, FAULT, address, error_code 0, 0, 0, 0); the
        write bit is set later (:func:`infer_writes`)."""
        out = []
        for data in self.chunks:
            at = 0
            while at + 8 <= len(data):
                kind, _, size = struct.unpack_from("<IHH", data, at)
                if size < 8:
                    break
                if kind == PERF_RECORD_SAMPLE and size >= SAMPLE.size:
                    _, _, _, pid, tid, t_ns, addr = SAMPLE.unpack_from(data, at)
                    if addr < user_top:
                        out.append((t_ns, pid, tid, fault_kind, addr, 0, 0, 0, 0))
                elif kind == PERF_RECORD_LOST:
                    self.lost += struct.unpack_from("<Q", data, at + 16)[0]
                at += size
        return out


def collect(perf: PerfFaults | None, parser, user_top: int, fault_kind: int) -> None:
    """perf's samples, once the events are stopped, among the parser's rows (its lost count too)."""
    if perf is not None:
        perf.stop()
        parser.rows += perf.rows(user_top, fault_kind)
        parser.lost += perf.lost


def infer_writes(columns: dict, page_size: int, fault: int, resets: tuple[int, ...]) -> None:
    """The write bit of each fault, from the sequence (the process ran with THP disabled, so a
    read of a page maps the zero page and a later write to it faults again): a fault is a read when
    the same process faults the same page again before any event in ``resets`` (which can unmap
    it, or fork, after which a write fault is copy-on-write) -- else a write."""
    kind, tgid = columns["kind"], columns["tgid"]
    n = len(kind)
    if not n:
        return
    epoch = np.zeros(n, np.int64)
    reset = np.isin(kind, resets)
    for pid in np.unique(tgid):
        mine = tgid == pid
        epoch[mine] = np.cumsum(reset[mine])
    faults = np.flatnonzero(kind == fault)
    key_page = columns["a"][faults] // page_size
    order = np.lexsort((faults, key_page, epoch[faults], tgid[faults]))
    f, page, ep, who = faults[order], key_page[order], epoch[faults][order], tgid[faults][order]
    again = np.zeros(len(f), bool)
    again[:-1] = (page[1:] == page[:-1]) & (ep[1:] == ep[:-1]) & (who[1:] == who[:-1])
    errors = columns["b"]
    errors[f] = np.where(again, 0, 2)
