"""The running kernel: the only module that reads or writes /proc and /sys.

Used by ``hugecalc verify``.  Every setting changed goes through :class:`Restorer`, which puts
it back on exit, on errors, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import os
import platform
import signal
from pathlib import Path

from hugecalc.errors import HostError, InputError
from hugecalc.units import fmt_size

PROC = Path("/proc")
SYS_HUGEPAGES = Path("/sys/kernel/mm/hugepages")
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


def is_root() -> bool:
    return os.geteuid() == 0


def running_release() -> str:
    return platform.release()


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


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by a signal
    raise _Terminated()


class Restorer:
    """Writes settings and restores every one of them, in reverse order, however the block ends."""

    def __init__(self) -> None:
        self._saved: list[tuple[Path, str]] = []
        self._old_handler = None

    def set(self, path: Path, value: str) -> None:
        if not any(p == path for p, _ in self._saved):
            self._saved.append((path, read_text(path).strip()))
        write_text(path, value)

    def __enter__(self) -> Restorer:
        self._old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # Ignore SIGINT/SIGTERM while restoring: a second Ctrl-C must not leave pages allocated.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        failures = []
        try:
            for path, value in reversed(self._saved):
                try:
                    write_text(path, value)
                except HostError as e:
                    failures.append(str(e))
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, self._old_handler or signal.SIG_DFL)
        if failures:
            raise HostError("could not restore settings: " + "; ".join(failures))
        if exc_type is _Terminated:
            raise HostError("terminated; every setting was restored")
        return False
