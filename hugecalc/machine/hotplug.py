"""Hugepages in hot-plugged memory: with ``memory_hotplug.memmap_on_memory`` a hot-plugged memory
block hosts its own vmemmap, and HVO leaves a hugepage there alone (6.1+).

Hot-plugged memory is found as /proc/iomem shows it: the top-level "System RAM (driver)" ranges a
driver added and manages (virtio_mem, kmem: ``IORESOURCE_SYSRAM_DRIVER_MANAGED``).  Memory that
ACPI hot-plugged reads "System RAM" like boot memory and is not told apart.  The hugetlb pages in
those ranges are counted by size from /proc/kpageflags (a head page: KPF_HUGE and
KPF_COMPOUND_HEAD; its size: its run of KPF_HUGE pages).  Root only: without it /proc/iomem reads
zeros and kpageflags cannot be opened, and the capture says it could not read them.

Kernel reference
----------------
``vmemmap_should_optimize_folio()`` / ``PageVmemmapSelfHosted()`` in mm/hugetlb_vmemmap.c (6.1+);
``add_memory_driver_managed()`` ("System RAM (...)" resources) in mm/memory_hotplug.c;
``KPF_HUGE`` (17), ``KPF_COMPOUND_HEAD`` (15) in include/uapi/linux/kernel-page-flags.h.
"""

from __future__ import annotations

import os
import re

import numpy as np

from hugecalc.machine import kernelfs

KPF_COMPOUND_HEAD, KPF_HUGE = 15, 17
CHUNK_PAGES = 1 << 18  # PFNs per read (2 MiB of flags), aligned: as large as a 1G hugepage of 4K pages
_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM \((.+)\)$")


def driver_managed_ram(iomem: str) -> list[tuple[int, int, str]]:
    """The top-level "System RAM (driver)" ranges of /proc/iomem: (start, end exclusive, driver)."""
    out = []
    for line in iomem.splitlines():
        m = _RANGE.match(line)  # top level: no indentation
        if m:
            out.append((int(m[1], 16), int(m[2], 16) + 1, m[3]))
    return out


def hugepages_by_size(flags: np.ndarray, page: int) -> dict[int, int]:
    """The hugetlb pages whose head is among ``flags`` (one kpageflags word per PFN, in order), by
    size: each head and the KPF_HUGE tail pages that follow it."""
    huge = (flags >> KPF_HUGE) & 1 == 1
    head = huge & ((flags >> KPF_COMPOUND_HEAD) & 1 == 1)
    if not head.any():
        return {}
    run = np.cumsum(head)  # which hugepage each page belongs to (0: before the first head)
    pages = np.bincount(run[huge & (run > 0)], minlength=int(run[-1]) + 1)[1:]
    sizes, counts = np.unique(pages * page, return_counts=True)
    return {int(s): int(n) for s, n in zip(sizes, counts)}


def hotplugged_hugepages(page: int) -> tuple[int, dict[int, int]] | None:
    """(bytes of driver-managed hot-plugged RAM, its hugepages by size); None where /proc/iomem or
    /proc/kpageflags cannot be read as they must (not root)."""
    try:
        ranges = driver_managed_ram(kernelfs.read(kernelfs.PROC / "iomem"))
    except OSError:
        return None
    if any(start == 0 and end == 1 for start, end, _ in ranges):
        return None  # addresses hidden: not root
    if not ranges:
        return 0, {}
    try:
        fd = kernelfs.open_fd(kernelfs.PROC / "kpageflags")
    except OSError:
        return None
    found: dict[int, int] = {}
    try:
        for start, end, _ in ranges:
            first, last = start // page, end // page
            for chunk in range(first // CHUNK_PAGES * CHUNK_PAGES, last, CHUNK_PAGES):  # aligned: no hugepage cut
                lo, hi = max(chunk, first), min(chunk + CHUNK_PAGES, last)
                flags = np.frombuffer(os.pread(fd, (hi - lo) * 8, lo * 8), np.uint64)
                for size, count in hugepages_by_size(flags, page).items():
                    found[size] = found.get(size, 0) + count
    except OSError:
        return None
    finally:
        os.close(fd)
    return sum(end - start for start, end, _ in ranges), found
