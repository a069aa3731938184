"""The child process of ``hugecalc verify pgtable``: map, touch, madvise, and report VmPTE.

Run as ``python -m hugecalc._probe SPEC.json``; prints one JSON line.  Kept free of numba and
of hugecalc's models so that its own page tables stay small and predictable.
"""

from __future__ import annotations

import ctypes
import json
import re
import sys

PROT_RW = 0x3
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x20, 0x4000
MAP_HUGETLB, MAP_FIXED_NOREPLACE, MAP_HUGE_SHIFT = 0x40000, 0x100000, 26
MADV = {"dontneed": 4, "free": 8, "hugepage": 14, "nohugepage": 15}


def vm_pte_kb() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmPTE:\s+(\d+)", f.read()).group(1))


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as f:
        maps = f.read()
    start, size = spec["start"], spec["size"]
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
    print(json.dumps({"before_kb": before, "touched_kb": touched, "after_kb": after, "maps": maps}))


if __name__ == "__main__":
    main()
