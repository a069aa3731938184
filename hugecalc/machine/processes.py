"""A live process as a capture holds it: its mappings (/proc/PID/smaps), their present pages
(pagemap) and folios (kpageflags), and its VmPTE."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from hugecalc.errors import HostError, InputError
from hugecalc.machine import kernelfs
from hugecalc.machine.capture import Process, Vma, encode_runs
from hugecalc.machine.folios import folio_counts


KEPT_FLAGS = ("hg", "nh", "sh", "um", "uw", "ui")
_SPECIAL = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]")


def vma_kind(name: str, flags: list[str], kernel_page: int, page: int) -> str:
    if kernel_page != page or "anon_hugepage" in name or "hugetlb" in name:
        return "hugetlb"
    if name in _SPECIAL:
        return "special"
    if name == "[stack]":
        return "stack"
    if name == "[heap]":
        return "heap"
    if name.startswith("/SYSV"):
        return "sysv"
    if name.startswith("/memfd:") or name.startswith("/dev/zero") or name.startswith("[anon_shmem") or (
            not name and "sh" in flags):
        return "shmem"
    if not name or name.startswith("[anon"):
        return "anon"
    return "file"


def smaps(pid: int, page: int, option: str = "--pids") -> list[dict]:
    """Each VMA of ``pid``: range, name, kernel page size, VmFlags (from /proc/PID/smaps)."""
    path = kernelfs.PROC / str(pid) / "smaps"
    try:
        text = kernelfs.read(path)
    except FileNotFoundError:
        raise InputError(f"{option} {pid}: no such process") from None
    except PermissionError:
        raise InputError(f"{option} {pid}: permission denied reading {path} (run as its owner or root)") from None
    except OSError as e:  # ESRCH while it exits
        raise InputError(f"{option} {pid}: the process went away while it was read ({e.strerror})") from None
    vmas: list[dict] = []
    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and ":" not in head[0] and len(head) >= 5:
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            vmas.append({"start": lo, "end": hi, "name": head[5] if len(head) > 5 else "", "kps": page, "flags": []})
        elif line.startswith("KernelPageSize:") and vmas:
            vmas[-1]["kps"] = int(line.split()[1]) << 10
        elif line.startswith("VmFlags:") and vmas:
            vmas[-1]["flags"] = line.split()[1:]
    return vmas


def capture_process(pid: int, page: int, user_va: int, option: str = "--pids") -> Process:
    try:
        return _capture_process(pid, page, user_va, option)
    except (HostError, OSError) as e:
        cause = e if isinstance(e, OSError) else e.__cause__
        exited = isinstance(cause, OSError) and cause.errno in (errno.ESRCH, errno.ENOENT)  # a zombie: ESRCH
        if not exited and (kernelfs.PROC / str(pid)).exists():
            raise
        raise InputError(f"{option} {pid}: the process went away while it was read") from None


def _capture_process(pid: int, page: int, user_va: int, option: str) -> Process:
    vmas = []
    for v in smaps(pid, page, option):
        if v["start"] >= user_va:
            continue  # [vsyscall]: kernel address space
        kind = vma_kind(v["name"], v["flags"], v["kps"], page)
        entries = kernelfs.pagemap(pid, v["start"], v["end"], page)
        used = (entries & np.uint64(kernelfs.PAGEMAP_PRESENT | kernelfs.PAGEMAP_SWAPPED)) != 0
        edges = np.diff(np.concatenate(([0], used.astype(np.int8), [0])))
        starts = v["start"] + np.flatnonzero(edges == 1).astype(np.int64) * page
        ends = v["start"] + np.flatnonzero(edges == -1).astype(np.int64) * page
        folios, unknown, zero = folio_counts(entries, page) if kind != "hugetlb" else (None, 0, 0)
        swapped = int(((entries & np.uint64(kernelfs.PAGEMAP_SWAPPED)) != 0).sum())
        vmas.append(Vma(start=v["start"], end=v["end"], kind=kind, name=v["name"],
                        flags=[f for f in v["flags"] if f in KEPT_FLAGS], kernel_page_bytes=v["kps"],
                        present_pages=int(used.sum()), present_runs=encode_runs(starts, ends, v["start"], page),
                        folios=folios, unclassified_pages=unknown, zero_pages=zero, swapped_pages=swapped))
    try:
        comm = kernelfs.read(kernelfs.PROC / str(pid) / "comm").strip()
        vm_pte = kernelfs.vm_pte_bytes(pid)
        status = kernelfs.read(kernelfs.PROC / str(pid) / "status")
    except (OSError, HostError):
        raise InputError(f"{option} {pid}: the process went away while it was read") from None
    thp = next((line.split()[1] for line in status.splitlines() if line.startswith("THP_enabled:")), None)
    return Process(pid=pid, comm=comm, vm_pte_bytes=vm_pte, vmas=vmas,
                   thp_enabled=None if thp is None else thp != "0")


def all_pids() -> list[int]:
    me = os.getpid()
    return sorted(int(p.name) for p in kernelfs.glob(kernelfs.PROC, "[0-9]*")
                  if int(p.name) != me and kernelfs.exists(p / "smaps") and _has_mm(p))


def _has_mm(p: Path) -> bool:
    try:
        return "VmPTE:" in kernelfs.read(p / "status")  # kernel threads have no mm
    except OSError:
        return False


# --- the whole machine ----------------------------------------------------------------------------------
