"""HugeTLB Vmemmap Optimization (HVO): the vmemmap a hugetlb pool gives back, net of page tables.

Models, release by release, what the kernel frees when a hugetlb page is allocated with
``vm.hugetlb_optimize_vmemmap=1`` (or ``hugetlb_free_vmemmap=on``), and device-DAX's
deduplication of compound-page vmemmap.

Kernel reference
----------------
- ``hugetlb_vmemmap_size()``, ``hugetlb_vmemmap_optimizable_size()`` in ``mm/hugetlb_vmemmap.h``
  (v6.10+): ``pages_per_huge_page * sizeof(struct page) - HUGETLB_VMEMMAP_RESERVE_SIZE``, 0 unless
  ``is_power_of_2(sizeof(struct page))``.
- v5.14 to v5.17: ``RESERVE_VMEMMAP_NR = 2`` (``mm/hugetlb_vmemmap.c``); 1 from v5.18.
- ``vmemmap_remap_split()`` / ``split_vmemmap_huge_pmd()`` in ``mm/hugetlb_vmemmap.c``: one PTE
  table per PMD-mapped vmemmap block the range ``[head vmemmap, head vmemmap + size)`` touches,
  never merged back.
- Documentation/mm/vmemmap_dedup.rst (the worked 2M/1G numbers, device-DAX).
"""

from __future__ import annotations

from fractions import Fraction

from hugecalc.calc import explaining
from hugecalc.calc.hvo import Layout, Rules, fraction_text, hvo_reserve_pages, refusal, rule_of_size, struct_page_bytes_of
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import (DAX_VMEMMAP, HVO_ARCH, HVO_BATCHED, HVO_RESERVE_ONE, HVO_SHARED_TAIL, Release,
                               sublevel_notes, unconfirmed_notes)
from hugecalc.result import Figure, Derivation, Model, Result, field
from hugecalc.units import fmt_bytes, fmt_size


class VmemmapRow(Model):
    """HVO figures for one hugepage size, the whole pool being of that size."""

    hugepage_size_bytes: int = field("Hugepage size", "bytes")
    mapping: str = field("Mapped by")
    hugepages: int = field("Hugepages in the pool", "count")
    struct_pages_per_hugepage: int = field("struct pages per hugepage", "count")
    vmemmap_bytes_per_hugepage: int = field("vmemmap per hugepage", "bytes")
    vmemmap_pages_per_hugepage: int | float = field("vmemmap pages per hugepage", "pages")
    reserved_pages_per_hugepage: int | float = field("vmemmap pages reserved per hugepage", "pages")
    freed_pages_per_hugepage: int = field("vmemmap pages freed per hugepage", "pages")
    vmemmap_bytes: int = field("vmemmap of the pool", "bytes")
    freed_bytes: int = field("vmemmap freed", "bytes")
    split_pte_tables: int = field("PTE tables to split vmemmap PMDs", "count")
    split_pte_table_bytes: int = field("PTE tables cost", "bytes")
    shared_tail_pages: int | None = field("Shared tail pages (one per zone)", "pages", default=None)
    saved_bytes: int = field("Net saving", "bytes")
    saved_share_of_pool: float = field("Net saving / pool", "share")
    saved_share_of_vmemmap: float = field("Net saving / vmemmap", "share")
    restore_bytes_per_hugepage: int = field("Free memory needed to release one hugepage", "bytes")
    restore_bytes: int = field("Free memory needed to release the pool at once", "bytes")
    optimizable: bool = field("HVO optimizable")
    reason: str | None = field("Why not")


class VmemmapResult(Result):
    command: str = "vmemmap"
    rows: list[VmemmapRow]

    def figures(self) -> dict[str, Figure]:
        return {f"saved {fmt_size(r.hugepage_size_bytes)}": Figure(r.saved_bytes, "bytes") for r in self.rows}


def _check_pool(profile: Profile, pool_bytes: int | None, hugepage_count: int | None, zones: int) -> None:
    if zones < 1:
        raise InputError(f"{zones}: a pool lies in at least one zone", field="zones")
    if (pool_bytes is None) == (hugepage_count is None):
        raise InputError("give the pool either as a size or as a count of hugepages")
    if pool_bytes is not None:
        check_addressable(profile, pool_bytes, fmt_bytes(pool_bytes), "pool")


def check_addressable(profile: Profile, size: int, what: str, field: str) -> None:
    """Memory of ``size`` bytes the profile can address (MAX_PHYSMEM_BITS)."""
    if size > profile.max_phys_bytes:
        raise InputError(f"{what} is more than {profile.name} can address ({fmt_bytes(profile.max_phys_bytes)}, "
                         f"MAX_PHYSMEM_BITS {profile.max_phys_bytes.bit_length() - 1})", field=field)


def _sizes(profile: Profile, hugepage_sizes: list[int], devdax: bool) -> list[tuple[int, str]]:
    """(size, what maps it) of each hugepage size asked for, or of every size the profile has."""
    if devdax:
        # Device-DAX "align" sizes: PAGE_SIZE, PMD_SIZE, PUD_SIZE (vmemmap_dedup.rst "Device DAX").
        allowed = {profile.page_size: "pte", profile.pmd_size: "pmd"}
        if "pud" in [lvl.name for lvl in profile.levels]:
            allowed[profile.span_bytes("pud")] = "pud"
        for size in hugepage_sizes:
            if size not in allowed:
                raise InputError(f"{fmt_size(size)}: device-DAX compound pages are "
                                 f"{', '.join(fmt_size(s) for s in allowed)} on {profile.name}", field="hugepage_sizes")
        return [(s, allowed[s]) for s in (hugepage_sizes or [s for s in allowed if s != profile.page_size])]
    sizes = [profile.hugetlb_size(s) for s in hugepage_sizes] if hugepage_sizes else profile.hugetlb
    if not sizes:
        raise InputError(f"profile {profile.name} supports no hugetlb page size")
    return [(h.size, h.mapping) for h in sizes]


def _hugepages_in_pool(profile: Profile, size: int, pool_bytes: int | None, hugepage_count: int | None,
                       explicit: bool, notes: list[str]) -> int:
    """How many hugepages of ``size`` the pool holds (a pool given as a size is rounded down, with a
    note, unless the size was asked for)."""
    scope = fmt_size(size)
    if pool_bytes is None:
        check_addressable(profile, hugepage_count * size, f"{hugepage_count} x {scope}", "pool")
        return hugepage_count
    hugepages, rest = divmod(pool_bytes, size)
    if rest and explicit:
        raise InputError(f"{fmt_size(pool_bytes)} is not a whole number of {scope} hugepages: give a multiple of "
                         "the hugepage size, or a count", field="pool")
    if hugepages == 0:
        if explicit:
            raise InputError(f"{fmt_size(pool_bytes)} holds no {scope} hugepage", field="pool")
        notes.append(f"{scope}: {fmt_size(pool_bytes)} holds no {scope} hugepage")
    elif rest:
        notes.append(f"{scope}: {fmt_size(pool_bytes)} is not a multiple of {scope}; the pool is rounded down to "
                     f"{hugepages} hugepage{'s' if hugepages > 1 else ''}")
    return hugepages


def _row(profile: Profile, release: Release, size: int, mapping: str, hugepages: int, rules: Rules) -> VmemmapRow:
    """The HVO figures of one hugepage size, the whole pool being of that size."""
    r = rule_of_size(profile, release, size, rules)
    page, freed_per = r.page, r.freed_pages
    split = r.split_pte_tables(hugepages)
    saved = r.saved_bytes(hugepages)
    restore_per = 0 if rules.devdax else freed_per * page
    return VmemmapRow(
        hugepage_size_bytes=size, mapping=mapping, hugepages=hugepages, struct_pages_per_hugepage=size // page,
        vmemmap_bytes_per_hugepage=r.vmemmap_bytes, vmemmap_pages_per_hugepage=_number(Fraction(r.vmemmap_bytes, page)),
        reserved_pages_per_hugepage=_number(Fraction(r.vmemmap_bytes, page) - freed_per), freed_pages_per_hugepage=freed_per,
        vmemmap_bytes=hugepages * r.vmemmap_bytes, freed_bytes=hugepages * freed_per * page, split_pte_tables=split,
        split_pte_table_bytes=split * r.pte_table_bytes,
        shared_tail_pages=r.shared_tail_pages(hugepages) if r.shared_tail else None, saved_bytes=saved,
        saved_share_of_pool=saved / (hugepages * size) if hugepages else 0.0,
        saved_share_of_vmemmap=saved / (hugepages * r.vmemmap_bytes) if hugepages else 0.0,
        restore_bytes_per_hugepage=restore_per, restore_bytes=restore_per * hugepages,
        optimizable=r.optimizable, reason=r.reason,
    )


def _notes(profile: Profile, release: Release, rows: list[VmemmapRow], rules: Rules) -> list[str]:
    notes = []
    if any(r.shared_tail_pages for r in rows):
        notes.append(f"since 7.1 the tail vmemmap of every hugepage maps one read-only page shared per zone "
                     f"and size, allocated once: the pool saves {rules.zones} page{'s' if rules.zones > 1 else ''} "
                     "per size less (--zones), per hugepage the same")
    notes += sublevel_notes(release, [(DAX_VMEMMAP if rules.devdax else HVO_ARCH, profile.arch.value)])
    notes += unconfirmed_notes(release, [(DAX_VMEMMAP, profile.arch.value)] if rules.devdax else
                               [(HVO_ARCH, profile.arch.value)]
                               + ([(HVO_SHARED_TAIL, None)] if any(r.shared_tail_pages for r in rows) else []))
    if rules.struct_page_bytes != 64 and profile.bits == 64:
        notes.append(f"sizeof(struct page) is {rules.struct_page_bytes} here, not the usual 64: kernels with "
                     "CONFIG_KMSAN, or whose page flags leave no room for the cpupid (LAST_CPUPID_NOT_IN_PAGE_FLAGS), "
                     "have 72 or 80, and one without CONFIG_MEMCG (no memcg_data) may have 56 (unconfirmed): "
                     "none of them a power of two, so no HVO. To check a running kernel: 'pahole -C page "
                     "/sys/kernel/btf/vmlinux' prints its size (a capture reads it from BTF), and "
                     "/proc/sys/vm/hugetlb_optimize_vmemmap exists only where HVO can work")
    for h in sorted({profile.hugetlb_size(r.hugepage_size_bytes) for r in rows if profile.hugetlb_size(r.hugepage_size_bytes).requires},
                    key=lambda h: h.size):
        notes.append(f"{fmt_size(h.size)} hugetlb pages exist on {profile.name} only where the CPU has {h.requires} "
                     "(the kernel offers the size only then)")
    return notes


def compute_vmemmap(profile: Profile, release: Release, *, pool_bytes: int | None = None,
                    hugepage_count: int | None = None, hugepage_sizes: list[int] | None = None,
                    struct_page_bytes: int | None = None, devdax: bool = False, layout: Layout = "packed",
                    zones: int = 1) -> VmemmapResult:
    """HVO savings for a pool given as ``pool_bytes`` or as ``hugepage_count`` of each size.

    ``zones``: the memory zones the pool spans (from 7.1 each keeps one shared tail page per size).

    Kernel reference
    ----------------
    ``hugetlb_vmemmap_optimizable_size()`` in ``mm/hugetlb_vmemmap.h``; ``vmemmap_remap_split()``
    and ``hugetlb_vmemmap_restore_folios()`` in ``mm/hugetlb_vmemmap.c``; ``vmemmap_get_tail()``
    (v7.1); Documentation/mm/vmemmap_dedup.rst.
    """
    _check_pool(profile, pool_bytes, hugepage_count, zones)
    sp = struct_page_bytes_of(profile, struct_page_bytes)
    asked = list(dict.fromkeys(hugepage_sizes or []))  # a size named twice is one row
    sizes = _sizes(profile, asked, devdax)
    rules = Rules(struct_page_bytes=sp, reserve=hvo_reserve_pages(release, devdax),
                   reserve_rule="VMEMMAP_RESERVE_NR in __vmemmap_can_optimize(), include/linux/mm.h" if devdax
                   else HVO_RESERVE_ONE.cite, refusal=refusal(profile, release, sp, devdax), layout=layout,
                   devdax=devdax, zones=zones)
    rows, notes = [], []
    for size, mapping in sizes:
        hugepages = _hugepages_in_pool(profile, size, pool_bytes, hugepage_count, bool(asked), notes)
        rows.append(_row(profile, release, size, mapping, hugepages, rules))
    inputs = {"pool_bytes": pool_bytes, "hugepage_count": hugepage_count, "hugepage_sizes_bytes": [s for s, _ in sizes],
              "struct_page_bytes": sp, "page_size_bytes": profile.page_size, "devdax": devdax, "layout": layout,
              "zones": zones}
    return VmemmapResult(profile=profile.name, kernel=str(release), inputs=inputs, rows=rows,
                         notes=notes + _notes(profile, release, rows, rules),
                         explain=[d for row in rows for d in derivations(row, profile, release, rules)]
                         if explaining() else [])


def _number(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def derivations(row: VmemmapRow, profile: Profile, release: Release, rules: Rules) -> list[Derivation]:
    """How each figure of one size's row was derived, and the kernel rule."""
    scope, page = fmt_size(row.hugepage_size_bytes), profile.page_size
    out = [Derivation(scope=scope, figure="vmemmap per hugepage",
                      formula=f"{row.struct_pages_per_hugepage} struct pages x {rules.struct_page_bytes} B = "
                              f"{fmt_bytes(row.vmemmap_bytes_per_hugepage)} = "
                              f"{fraction_text(Fraction(row.vmemmap_bytes_per_hugepage, page))} pages of {fmt_bytes(page)}",
                      rule="hugetlb_vmemmap_size() in mm/hugetlb_vmemmap.h; Documentation/mm/vmemmap_dedup.rst")]
    if not row.optimizable:
        return out + [Derivation(scope=scope, figure="HVO optimizable", formula=f"no: {row.reason}",
                                 rule="hugetlb_vmemmap_optimizable_size() in mm/hugetlb_vmemmap.h")]
    out.append(Derivation(scope=scope, figure="vmemmap pages freed per hugepage",
                          formula=f"{fraction_text(Fraction(row.vmemmap_bytes_per_hugepage, page))} - {rules.reserve} kept = "
                                  f"{row.freed_pages_per_hugepage}", rule=f"kernel {release}: {rules.reserve_rule}"))
    out.append(_split_derivation(row, profile, rules))
    out.append(_saving_derivation(row, page))
    if not rules.devdax:
        out.append(_restore_derivation(row, page, release))
    return out


def _split_derivation(row: VmemmapRow, profile: Profile, rules: Rules) -> Derivation:
    scope, n, sp = fmt_size(row.hugepage_size_bytes), row.hugepages, rules.struct_page_bytes
    if not profile.vmemmap_pmd_mapped:
        return Derivation(scope=scope, figure="PTE tables to split vmemmap PMDs",
                          formula=f"0: {profile.name} maps the vmemmap with base pages",
                          rule="vmemmap_populate() for the architecture")
    per_pmd = profile.pmd_size // sp
    each, pmd = fmt_bytes(row.vmemmap_bytes_per_hugepage), fmt_bytes(profile.pmd_size)
    how = f"ceil({n} x {each} / {pmd})" if rules.layout == "packed" else f"{n} x ceil({each} / {pmd})"
    return Derivation(
        scope=scope, figure="PTE tables to split vmemmap PMDs",
        formula=f"{how} = {row.split_pte_tables} ({rules.layout} pool; one vmemmap PMD describes {per_pmd} struct "
                f"pages = {fmt_bytes(per_pmd * profile.page_size)} of RAM); "
                f"x {fmt_bytes(profile.level('pte').bytes_per_table)} = {fmt_bytes(row.split_pte_table_bytes)}; "
                + ("device-DAX populates the deduplicated vmemmap with base pages, where it would otherwise use "
                   "PMD leaves" if rules.devdax else "never merged back into a PMD"),
        rule="vmemmap_populate_compound_pages() in mm/sparse-vmemmap.c" if rules.devdax else
        "vmemmap_remap_split() / split_vmemmap_huge_pmd() in mm/hugetlb_vmemmap.c")


def _saving_derivation(row: VmemmapRow, page: int) -> Derivation:
    tails = row.shared_tail_pages
    return Derivation(
        scope=fmt_size(row.hugepage_size_bytes), figure="Net saving",
        formula=f"{row.hugepages} x {row.freed_pages_per_hugepage} x {fmt_bytes(page)} - "
                f"{fmt_bytes(row.split_pte_table_bytes)}"
                + (f" - {tails} shared tail page{'s' if tails > 1 else ''} x {fmt_bytes(page)}" if tails else "")
                + f" = {row.saved_bytes} B = {fmt_bytes(row.saved_bytes)}",
        rule="freed pages return to MemFree and leave nr_memmap_pages (free_vmemmap_page())"
             + (f"; {HVO_SHARED_TAIL.cite}: one read-only tail page per zone and hugepage order" if tails else ""))


def _restore_derivation(row: VmemmapRow, page: int, release: Release) -> Derivation:
    batch = release.has(HVO_BATCHED)
    return Derivation(
        scope=fmt_size(row.hugepage_size_bytes), figure="Free memory needed to release the pool",
        formula=f"{row.freed_pages_per_hugepage} x {fmt_bytes(page)} = {fmt_bytes(row.restore_bytes_per_hugepage)} "
                f"per hugepage before it can go back to the buddy allocator; x {row.hugepages} = "
                f"{fmt_bytes(row.restore_bytes)} when the pool is "
                + ("released in one batch (a hugepage whose vmemmap cannot be restored stays in the pool)"
                   if batch else "released (one hugepage at a time in this release)"),
        rule=HVO_BATCHED.cite if batch else "hugetlb_vmemmap_restore() / vmemmap_remap_alloc() in mm/hugetlb_vmemmap.c")
