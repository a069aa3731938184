"""Obvious pure-Python models, written line by line from the kernel code they cite.

The calculators must agree with these exactly.  Slow on purpose: no shortcuts.
"""

from __future__ import annotations


def is_power_of_2(n: int) -> bool:
    return n != 0 and (n & (n - 1)) == 0


def hvo_freed_pages_v5_14(nr_pages: int, struct_page_bytes: int, page_size: int) -> int:
    """mm/hugetlb_vmemmap.c (v5.15): hugetlb_vmemmap_init() with RESERVE_VMEMMAP_NR = 2."""
    if not is_power_of_2(struct_page_bytes):
        return 0
    page_shift = page_size.bit_length() - 1
    vmemmap_pages = (nr_pages * struct_page_bytes) >> page_shift
    if vmemmap_pages > 2:
        return vmemmap_pages - 2
    return 0


def hvo_freed_pages_v5_18(nr_pages: int, struct_page_bytes: int, page_size: int) -> int:
    """mm/hugetlb_vmemmap.h (v6.10): hugetlb_vmemmap_optimizable_size() >> PAGE_SHIFT."""
    size = nr_pages * struct_page_bytes - page_size  # HUGETLB_VMEMMAP_RESERVE_SIZE = PAGE_SIZE
    if not is_power_of_2(struct_page_bytes):
        return 0
    return max(size, 0) // page_size


def dax_freed_pages(nr_pages: int, struct_page_bytes: int, page_size: int) -> int:
    """__vmemmap_can_optimize() (include/linux/mm.h): needs more than VMEMMAP_RESERVE_NR = 2 pages."""
    if not is_power_of_2(struct_page_bytes):
        return 0
    nr_vmemmap_pages = (nr_pages * struct_page_bytes) // page_size
    return nr_vmemmap_pages - 2 if nr_vmemmap_pages > 2 else 0


def split_pte_tables_walk(
    hugepages: int, nr_pages: int, struct_page_bytes: int, page_size: int, pmd_size: int, scattered: bool
) -> int:
    """Walk every vmemmap page of every hugepage and count the distinct vmemmap PMDs it lies in.

    Packed: hugepage i starts at pfn i * nr_pages.  Scattered: hugepage i starts a fresh
    vmemmap PMD block of its own (pfn i * max(nr_pages, pfns per vmemmap PMD)).
    """
    pfns_per_pmd = pmd_size // struct_page_bytes
    pmds = set()
    for i in range(hugepages):
        first_pfn = i * (max(nr_pages, pfns_per_pmd) if scattered else nr_pages)
        start = first_pfn * struct_page_bytes
        end = start + nr_pages * struct_page_bytes
        addr = start
        while addr < end:
            pmds.add(addr // pmd_size)
            addr += min(page_size, end - addr)
    return len(pmds)
