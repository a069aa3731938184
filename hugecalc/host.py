"""The running kernel: the only module that reads or writes /proc and /sys.

Used by ``hugecalc verify`` and ``pgtable --pid``.  Every setting verify changes goes through
:class:`hugecalc.restore.Restorer`, which puts it back on exit, on errors, on Ctrl-C and on
SIGTERM, and after a SIGKILL through its journal.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from hugecalc.errors import HostError, InputError
from hugecalc.units import fmt_size

PROC = Path("/proc")
SYS_HUGEPAGES = Path("/sys/kernel/mm/hugepages")
SYS_THP = Path("/sys/kernel/mm/transparent_hugepage")
HVO_SYSCTL = PROC / "sys/vm/hugetlb_optimize_vmemmap"


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise HostError(f"cannot read {path}: {e.strerror}") from e


def write_text(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise HostError(f"cannot write {value.strip()!r} to {path}: {e.strerror}") from e


def read_keyed(path: Path) -> dict[str, int]:
    """``/proc/vmstat`` and ``/proc/meminfo``: name -> integer (meminfo's kB left as kB)."""
    out = {}
    for line in read_text(path).splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def setting(path: Path) -> str:
    """A setting as it can be written back: sysfs selector files (``always [madvise] never``)
    give their ``[selected]`` token; other files their stripped text."""
    text = read_text(path).strip()
    if "[" in text and "]" in text:
        return text[text.index("[") + 1 : text.index("]")]
    return text


def is_root() -> bool:
    return os.geteuid() == 0


def running_release() -> str:
    return platform.release()


def thp_size_bytes(name: str) -> int:
    """The folio size a ``hugepages-<size>kB`` directory is named after, in bytes."""
    return int(name.removeprefix("hugepages-").removesuffix("kB")) << 10


def thp_dir(size: int) -> Path:
    """transparent_hugepage/hugepages-<size>kB."""
    return SYS_THP / f"hugepages-{size >> 10}kB"


def hugepage_dir(size: int) -> Path:
    path = SYS_HUGEPAGES / f"hugepages-{size >> 10}kB"
    if not path.is_dir():
        have = sorted(p.name for p in SYS_HUGEPAGES.glob("hugepages-*")) if SYS_HUGEPAGES.is_dir() else []
        raise InputError(
            f"hugepage size {fmt_size(size)} is not supported by the running kernel "
            f"(it has {', '.join(have) or 'no hugetlb sizes'})"
        )
    return path


def memmap_pages() -> int:
    """``nr_memmap_pages + nr_memmap_boot_pages``: pages holding struct pages right now."""
    vmstat = read_keyed(PROC / "vmstat")
    if "nr_memmap_pages" not in vmstat:
        raise HostError("/proc/vmstat has no nr_memmap_pages counter (it arrived around 6.11)")
    return vmstat["nr_memmap_pages"] + vmstat.get("nr_memmap_boot_pages", 0)


# --- page tables of a live process (hugecalc pgtable --pid) ----------------------------------

PAGEMAP_PRESENT = 1 << 63
PAGEMAP_SWAPPED = 1 << 62
_PAGEMAP_CHUNK_PAGES = 1 << 18  # 2 MiB of pagemap per read


def vm_pte_bytes(pid: int | str = "self") -> int:
    for line in read_text(PROC / str(pid) / "status").splitlines():
        if line.startswith("VmPTE:"):
            return int(line.split()[1]) << 10
    raise HostError(f"/proc/{pid}/status has no VmPTE line (a kernel thread?)")


def pagemap_chunks(pid: int, start: int, end: int, page_size: int):
    """``(first page number, entries)`` chunks of ``/proc/PID/pagemap`` for ``[start, end)``, in order;
    stops early where the file ends."""
    import numpy as np

    path = PROC / str(pid) / "pagemap"
    try:
        f = open(path, "rb")
    except OSError as e:
        raise HostError(f"cannot read {path}: {e.strerror}") from e
    with f:
        page, last = start // page_size, end // page_size
        while page < last:
            n = min(_PAGEMAP_CHUNK_PAGES, last - page)
            f.seek(page * 8)
            raw = f.read(n * 8)
            if len(raw) < n * 8:
                return
            yield page, np.frombuffer(raw, dtype=np.uint64)
            page += n


def pagemap(pid: int, start: int, end: int, page_size: int):
    """The /proc/PID/pagemap entries of ``[start, end)``, one per page (fewer where the file ends)."""
    import numpy as np

    chunks = [entries for _, entries in pagemap_chunks(pid, start, end, page_size)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)


# --- page flags, for the folio sizes of a mapping (hugecalc.snapshot) -------------------------

KPF_COMPOUND_TAIL = 1 << 16  # include/uapi/linux/kernel-page-flags.h
KPF_ZERO_PAGE = 1 << 24
PAGEMAP_PFN_MASK = (1 << 55) - 1
