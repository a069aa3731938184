"""The child process of ``hugecalc verify``: map, touch, and report what the kernel did.

Run as ``python -m hugecalc.machine._probe SPEC.json PARENT_PID``; prints JSON lines.  ``pgtable`` mode reports VmPTE
after touching and after madvise; ``mthp`` mode prepopulates, says ``ready`` and waits for the
parent to apply the THP settings, then runs the pass and reports its page faults (getrusage).
Kept free of numba and of hugecalc's models so that its own memory stays small and predictable.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import signal
import sys

from hugecalc.machine import kernelfs

PROT_RW = 0x3
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x20, 0x4000
MAP_HUGETLB, MAP_FIXED_NOREPLACE, MAP_HUGE_SHIFT = 0x40000, 0x100000, 26
MADV = {"dontneed": 4, "free": 8, "hugepage": 14, "nohugepage": 15}
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


def vm_pte_kb() -> int:
    return int(re.search(r"VmPTE:\s+(\d+)", kernelfs.read(kernelfs.PROC / "self/status")).group(1))


def faults() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def touch(lo: int, hi: int, start: int, stride: int, read_first: bool) -> None:
    """Touch one byte every ``stride`` from ``start``, within ``[lo, hi)``, in address order."""
    c = ctypes.c_char
    first = lo if lo <= start else start + -(-(lo - start) // stride) * stride
    for a in range(first, hi, stride):
        if read_first:
            _ = c.from_address(a).value  # the read access
        c.from_address(a).value = b"x"


def place(start: int, size: int, region: int, limit: int, maps: str) -> int:
    """``start`` moved by whole top-level entries (``region`` bytes) to where no mapping of this
    process shares a top-level entry with ``[start, start + size)``: every table the mapping needs
    is then new, so the VmPTE delta is exact, and the tables needed are the same (every lower
    table span divides ``region``)."""
    used = set()
    for line in maps.splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        used.update(range(lo // region, (hi - 1) // region + 1))
    offset = start % region
    first = start // region
    for k in list(range(first, limit // region)) + list(range(0, first)):
        base = k * region + offset
        if base + size > limit:
            continue
        if not used.intersection(range(base // region, (base + size - 1) // region + 1)):
            return base
    raise OSError(f"no free top-level region for {size:#x} bytes")


def mthp(spec: dict, libc) -> None:
    maps = kernelfs.read(kernelfs.PROC / "self/maps")
    size = spec["size"]
    start = place(spec["start"], size, spec["region"], spec["user_va"], maps)
    flags = MAP_FIXED_NOREPLACE
    fd = -1
    if spec["memory"] == "sysv":
        # shmget() + shmat() at the address; IPC_RMID at once, so the segment dies with us.
        libc.shmat.restype = ctypes.c_void_p
        libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        shmid = libc.shmget(IPC_PRIVATE, ctypes.c_size_t(size), IPC_CREAT | 0o600)
        addr = libc.shmat(shmid, ctypes.c_void_p(start), 0) if shmid >= 0 else None
        libc.shmctl(shmid, IPC_RMID, None)
    else:
        if spec["memory"] == "anon":
            flags |= MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        else:
            if spec["memory"] == "shmem":
                fd = os.memfd_create("hugecalc-verify")
            else:
                fd = os.open(spec["path"], os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(fd, spec["file_offset"] + size)
            flags |= MAP_SHARED
        addr = libc.mmap(start, size, PROT_RW, flags, fd, spec["file_offset"] if fd >= 0 else 0)
    if addr != start:
        print(json.dumps({"error": f"mapping at {start:#x} failed: errno {ctypes.get_errno()}"}), flush=True)
        return
    for advice in spec["advice"]:
        if libc.madvise(addr, size, MADV[advice]) != 0:
            print(json.dumps({"error": f"madvise({advice}) failed: errno {ctypes.get_errno()}"}), flush=True)
            return
    # Warm the loop up on a scratch buffer so that the measured pass allocates nothing of its own.
    scratch = ctypes.create_string_buffer(1 << 16)
    touch(ctypes.addressof(scratch), ctypes.addressof(scratch) + (1 << 16), ctypes.addressof(scratch), 4096, True)
    mapped_kb = vm_pte_kb()
    if spec["prepopulated_stride"]:
        touch(start, start + size, start, spec["prepopulated_stride"], False)
    print(json.dumps({"ready": True, "start": start}), flush=True)
    sys.stdin.readline()  # the parent applies the THP settings of the pass
    read_first = spec["access"] == "read-then-write"
    before = faults()
    touch(start, start + size, start, spec["stride"], read_first)
    measured = faults() - before
    after_kb = vm_pte_kb()
    before = faults()
    touch(start, start + size, start, spec["stride"], read_first)  # a null pass: the loop's own faults
    null = faults() - before
    print(json.dumps({"faults": measured, "null_pass_faults": null, "mapped_kb": mapped_kb,
                      "after_kb": after_kb}), flush=True)
    sys.stdin.readline()  # stay mapped while the parent reads our folios from pagemap


PR_SET_PDEATHSIG = 1


def die_with_parent(libc, parent: int) -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): if hugecalc is killed, the probe (and the memory and
    hugepages it maps) goes too, instead of running on under settings being restored."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    die_with_parent(libc, int(sys.argv[2]))
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if spec.get("mode") == "mthp":
        return mthp(spec, libc)
    maps = kernelfs.read(kernelfs.PROC / "self/maps")
    size = spec["size"]
    start = place(spec["start"], size, spec["region"], spec["user_va"], maps)
    shift = start - spec["start"]
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE
    if spec["hugepage_size"]:
        flags = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_HUGETLB
        flags |= (spec["hugepage_size"].bit_length() - 1) << MAP_HUGE_SHIFT
    before = vm_pte_kb()
    addr = libc.mmap(start, size, PROT_RW, flags, -1, 0)
    if addr != start:
        print(json.dumps({"error": f"mmap at {start:#x} failed: errno {ctypes.get_errno()}"}))
        return
    advice = spec.get("advice_before")
    if advice and libc.madvise(addr, size, MADV[advice]) != 0:
        print(json.dumps({"error": f"madvise({advice}) failed: errno {ctypes.get_errno()}"}))
        return
    page = spec["page_size"]
    for lo, hi in spec["intervals"]:  # touch one byte in every page of [lo, hi)
        lo, hi = lo + shift, hi + shift
        a = lo - lo % page
        while a < hi:
            ctypes.c_char.from_address(max(a, lo)).value = b"x"
            a += page
    touched = vm_pte_kb()
    after = None
    if spec.get("after"):
        if libc.madvise(addr, size, MADV[spec["after"]]) != 0:
            print(json.dumps({"error": f"madvise({spec['after']}) failed: errno {ctypes.get_errno()}"}))
            return
        after = vm_pte_kb()
    print(json.dumps({"before_kb": before, "touched_kb": touched, "after_kb": after, "start": start}))


if __name__ == "__main__":
    main()
