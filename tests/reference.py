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


def pgtable_naive(profile, start: int, end: int, touched: list[int], backing: str):
    """Tables per counted level and populated bytes, by listing every touched address.

    A table at a level is needed for each distinct table-span block holding a touched address
    (mm/memory.c allocates it on the first fault in its range).  thp: PMD ranges entirely inside
    the mapping are one 2M THP each with a deposited PTE table; the rest are base pages.
    hugetlb-S: the unit is the hugepage; no table below the level mapping it.
    """
    names = [lvl.name for lvl in profile.levels]
    if backing.startswith("hugetlb-"):
        from hugecalc.units import parse_size

        h = profile.hugetlb_size(parse_size(backing.removeprefix("hugetlb-")))
        leaf, unit = h.level, h.size
    else:
        leaf, unit = "pte", profile.page_size
    levels = names[1 : names.index(leaf) + 1]
    tables = {name: set() for name in levels}
    units = set()
    pmd = profile.pmd_size
    for addr in touched:
        assert start <= addr < end
        for name in levels:
            tables[name].add(addr // profile.table_span_bytes(name))
        if backing == "thp" and addr - addr % pmd >= start and addr - addr % pmd + pmd <= end:
            units.add(("thp", addr // pmd))
        else:
            units.add(("unit", addr // unit))
    populated = sum(pmd if kind == "thp" else unit for kind, _ in units)
    # Preallocated levels (i386 PAE's PMDs, from pgd_alloc()): the process has them, the mapping adds none.
    return {name: 0 if name in profile.preallocated_levels else len(s) for name, s in tables.items()}, populated


class MapcountSim:
    """Simulates the mapcount fields of one hugepage under an HGM scheme, counting each atomic.

    thp-like: a sub-hugepage entry increments the ``_mapcount`` of every subpage it covers, a
    hugepage-sized entry the compound mapcount.  head-only: one count per entry, on the head.
    hstate-level: one count while the hstate-level entry is populated (set when the first entry
    appears under it, cleared when the last goes; a collapse or split keeps it populated).
    """

    def __init__(self, scheme: str, hugepage: int, base: int) -> None:
        self.scheme, self.hugepage, self.base = scheme, hugepage, base
        self.subpage = [0] * (hugepage // base)
        self.head = 0
        self.entries = 0
        self.ops = 0

    def _one(self, offset: int, size: int, delta: int) -> None:
        if self.scheme == "thp-like" and size < self.hugepage:
            for i in range(offset // self.base, (offset + size) // self.base):
                self.subpage[i] += delta
                self.ops += 1
        elif self.scheme in ("thp-like", "head-only"):
            self.head += delta
            self.ops += 1

    def replace(self, old_size: int | None, new_size: int | None) -> None:
        """Every entry of ``old_size`` in the hugepage becomes entries of ``new_size``."""
        was_populated = self.entries > 0
        if old_size:
            for off in range(0, self.hugepage, old_size):
                self._one(off, old_size, -1)
            self.entries -= self.hugepage // old_size
        if new_size:
            for off in range(0, self.hugepage, new_size):
                self._one(off, new_size, +1)
            self.entries += self.hugepage // new_size
        if self.scheme == "hstate-level" and was_populated != (self.entries > 0):
            self.head += 1 if self.entries else -1
            self.ops += 1


def mthp_naive(profile, start, end, stride, pre_stride, allowed_orders, shmem, read_then_write,
               huge_zero_thp):
    """Page-by-page simulation of the fault path, with explicit PTE and PMD state.

    State per PMD block: none | table | thp | hzp (huge zero page).  Per page: none | zero |
    mapped (folio start, folio size).  Touches go one by one in address order; a read-then-write
    touch is a read access, then a write access.  Returns the same figures as compute_mthp.
    """
    page, pmd = profile.page_size, profile.pmd_size
    P = (pmd // page).bit_length() - 1
    cont = profile.cont_pte_entries if profile.cont_pte_entries > 1 else profile.tlb_coalesce_pages
    block = {}
    pte = {}
    faults = {"read": 0, "write": 0}
    folios = {}
    populated = 0
    largest = 0

    def alloc(order, x):
        nonlocal populated, largest
        folios[order] = folios.get(order, 0) + 1
        populated += page << order
        largest = max(largest, page << order)
        for q in range(x, x + (page << order), page):
            pte[q] = ("mapped", x, page << order)

    if pre_stride:
        for a in range(start, end, pre_stride):
            q = a - a % page
            pte[q] = ("mapped", q, page)
            block[q - q % pmd] = "table"

    def access(a, write):
        p = a - a % page
        x = p - p % pmd
        st = block.get(x, "none")
        if st == "thp":
            return
        if st == "hzp":
            if not write:
                return
            faults["write"] += 1
            if huge_zero_thp:
                block[x] = "thp"
                alloc(P, x)
                return
            block[x] = "table"
            for q in range(x, x + pmd, page):
                pte[q] = ("zero",)
            pte[p] = ("none",)
            alloc(0, p)  # wp_page_copy()
            return
        state = pte.get(p, ("none",))
        if state[0] == "mapped":
            return
        if state[0] == "zero":
            if write:
                faults["write"] += 1
                alloc(0, p)
            return
        faults["write" if write else "read"] += 1
        if st == "none" and P in allowed_orders and x >= start and x + pmd <= end:
            if shmem or write:
                block[x] = "thp"
                alloc(P, x)
            else:
                block[x] = "hzp"
            return
        block[x] = "table"
        if not write and not shmem:
            pte[p] = ("zero",)
            return
        for o in sorted((o for o in allowed_orders if o < P), reverse=True):
            sz = page << o
            y = p - p % sz
            if y >= start and y + sz <= end and all(pte.get(q, ("none",))[0] == "none" for q in range(y, y + sz, page)):
                alloc(o, y)
                return
        alloc(0, p)

    touched = set()
    for a in range(start, end, stride):
        touched.add(a - a % page)
        if read_then_write:
            access(a, False)
            access(a, True)
        else:
            access(a, True)
    units = set()
    for p in touched:
        x = p - p % pmd
        if block.get(x) == "thp":
            units.add(("pmd", x))
            continue
        _, fx, fsize = pte[p]
        if cont > 1 and fsize >= cont * page:
            units.add(("cont", p - p % (cont * page)))
        else:
            units.add(("page", p))
    names = [lvl.name for lvl in profile.levels]
    tables = {}
    used_blocks = {x for x, st in block.items() if st in ("table", "thp", "hzp")}
    tables["pte"] = len({x for x, st in block.items() if st == "table" or (st == "thp" and not shmem)})
    for name in names[1:-1]:
        span = profile.table_span_bytes(name)
        tables[name] = 0 if name in profile.preallocated_levels else len({x // span for x in used_blocks})
    return {
        "read_faults": faults["read"], "write_faults": faults["write"],
        "folios": {page << o: n for o, n in folios.items()}, "populated_bytes": populated,
        "tlb_entries": len(units), "tables": tables, "largest": largest,
    }
