"""Every size, address, count and fraction is checked against the profile before any computation:
beyond a limit, exit 2 with one line naming the option and the limit; within them, exact integers."""

import math

import pytest

from hugecalc.calc.faults import repeat_period
from tests.passes import compute_mthp
from hugecalc.profiles import load_profile
from hugecalc.releases import parse_release

NEWEST = parse_release(None)


@pytest.mark.parametrize("args,names", [
    # The case: 2^64 reached a numba kernel and ended as "internal error".
    (["mthp", "--touch-stride", "16E", "--vma-size", "2m", "--profile", "arm64-64k"],
     ["--touch-stride", "TASK_SIZE 0x1000000000000"]),
    (["mthp", "--prepopulated-stride", "0xffffffffffffffff"], ["--prepopulated-stride", "TASK_SIZE"]),
    (["mthp", "--memory", "shmem", "--file-offset", "0x7fffffffffff0000"], ["--file-offset", "MAX_LFS_FILESIZE"]),
    (["mthp", "--max-ptes-none", "512", "--khugepaged", "--prepopulated-stride", "1M"], ["--max-ptes-none", "511"]),
    (["pgtable", "--vma-size", "1G", "--touch-stride", "1E"], ["--touch-stride", "TASK_SIZE"]),
    (["pgtable", "--vma-size", "1G", "--touch-fraction", "nan"], ["--touch-fraction", "not a finite number"]),
    (["pgtable", "--vma-size", "1G", "--touch-fraction", "1.5"], ["--touch-fraction", "0<=x<=1"]),
    (["pgtable", "--vma-size", "1G", "--touch-fraction", "0.1", "--seed", "-1"], ["--seed", "0<=x<=4294967295"]),
    (["pgtable", "--vma-size", "2G", "--backing", "hugetlb-2M", "--shared-by", "99999999"], ["--shared-by", "4194304"]),
    (["pgtable", "--vma-size", "16E"], ["does not fit", "TASK_SIZE"]),
    (["pgtable", "--pid", "0"], ["--pid", "1<=x<=4194304"]),
    (["vmemmap", "--pages", "16E"], ["--pages", "MAX_PHYSMEM_BITS 46"]),
    (["vmemmap", "--pages", "99999999999", "--hugepage-size", "1G"], ["--pages", "MAX_PHYSMEM_BITS 46"]),
    (["vmemmap", "--pages", "1T", "--struct-page-size", "8192"], ["--struct-page-size", "at most a 4K page"]),
    (["hgm", "--guest-memory", "16E"], ["--guest-memory", "MAX_PHYSMEM_BITS 46"]),
    (["hgm", "--atomic-ns", "inf"], ["--atomic-ns", "not a finite number"]),
    (["hgm", "--entry-ns", "nan"], ["--entry-ns", "not a finite number"]),
])
def test_beyond_a_limit_is_bad_input(run, args, names):
    r = run(*args)
    assert r.exit_code == 2, r.stderr
    assert r.stdout == ""
    assert len([line for line in r.stderr.splitlines() if line.strip()]) <= 3  # click adds its usage line
    for name in names:
        assert name in r.stderr


def test_the_limits_themselves_are_accepted(run):
    assert run("vmemmap", "--pages", "64T", "--json").exit_code == 0  # 2^46: all x86-64 can address
    assert run("vmemmap", "--pages", "4P", "--profile", "x86-64-la57", "--json").exit_code == 0
    assert run("mthp", "--size", "64k", "--vma-size", "2M", "--touch-stride", "0x7ffffffff000",
               "--json").json["faults"] == 1


def test_a_period_beyond_int64_is_walked_exactly():
    """lcm(stride, prepopulated stride, PMD) of two large coprime strides is far beyond 2^63: no
    period is multiplied out, and the counts stay exact (each stride touches once per its span)."""
    p = load_profile("x86-64-la57")
    stride, pre = (1 << 44) + 4096, (1 << 44) - 4096
    start, end = 1 << 48, (1 << 48) + (1 << 50)
    assert math.lcm(stride, p.pmd_size, pre) > 1 << 63
    assert repeat_period(start, end, p.pmd_size, stride, pre) == 0
    r = compute_mthp(p, NEWEST, vma_size=1 << 50, vma_start=start, touch_stride=stride, prepopulated_stride=pre)
    touches = len(range(start, end, stride))
    prepopulated = len(range(start, end, pre))
    both = len(set(range(start, end, stride)) & set(range(start, end, pre)))
    assert r.faults == touches - both and r.write_faults == r.faults
    assert r.tlb_entries == touches
    assert r.populated_bytes == (touches - both) * 4096
    assert prepopulated > 0
