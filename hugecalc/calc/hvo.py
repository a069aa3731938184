"""The HVO rule of one hugepage size: what a release, an architecture and a struct page decide.

Kernel reference
----------------
- ``hugetlb_vmemmap_size()``, ``hugetlb_vmemmap_optimizable_size()`` in ``mm/hugetlb_vmemmap.h``
- ``vmemmap_remap_split()`` in ``mm/hugetlb_vmemmap.c``; ``vmemmap_get_tail()`` (v7.1)
- Documentation/mm/vmemmap_dedup.rst
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from hugecalc.calc import per_profile
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import DAX_VMEMMAP, HVO, HVO_ARCH, HVO_RESERVE_ONE, HVO_SHARED_TAIL, Release
from hugecalc.units import ceil_div, fmt_bytes, fmt_size, is_power_of_2

Layout = Literal["packed", "scattered"]

# Hugetlb uses the head and 3 tail struct pages (__NR_USED_SUBPAGE in include/linux/hugetlb.h);
# device-DAX compound pages use 3 and keep page 1 too: VMEMMAP_RESERVE_NR = 2 (include/linux/mm.h).
DAX_VMEMMAP_RESERVE_NR = 2


def fraction_text(x: Fraction) -> str:
    """A count of pages as a whole number or N/D (a 4K page's vmemmap is 1/64 of a page)."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def hugetlb_vmemmap_size(pages_per_huge_page: int, struct_page_bytes: int) -> int:
    """``hugetlb_vmemmap_size()``: bytes of struct pages describing one hugepage."""
    return pages_per_huge_page * struct_page_bytes


def hvo_reserve_pages(release: Release, devdax: bool) -> int:
    """vmemmap pages HVO keeps mapped per hugepage (the rest map onto them read-only)."""
    if devdax:
        return DAX_VMEMMAP_RESERVE_NR
    return 1 if release.has(HVO_RESERVE_ONE) else 2


def refusal(profile: Profile, release: Release, struct_page_bytes: int, devdax: bool) -> str | None:
    """Why the architecture/release/config cannot optimize any size at all, or None."""
    arch = profile.arch.value
    if profile.bits != 64:
        return (
            f"{profile.name} is a {profile.bits}-bit kernel: HVO needs SPARSEMEM_VMEMMAP, which "
            "only 64-bit kernels have"
        )
    if devdax:
        if not release.has(DAX_VMEMMAP, arch):
            return (
                f"device-DAX vmemmap deduplication is not in {arch} {release} "
                f"(ARCH_WANT_OPTIMIZE_DAX_VMEMMAP: {DAX_VMEMMAP.spans_for(arch)})"
            )
    else:
        if not release.has(HVO):
            return f"HVO does not exist in {release}: it was added in 5.14"
        if not release.has(HVO_ARCH, arch):
            return (
                f"{arch} has no HVO in {release} (ARCH_WANT_OPTIMIZE_HUGETLB_VMEMMAP on {arch}: "
                f"{HVO_ARCH.spans_for(arch)}; see {arch_cite(arch)})"
            )
    if not is_power_of_2(struct_page_bytes):
        return (
            f"sizeof(struct page) = {struct_page_bytes} is not a power of two, so a struct page "
            "can cross a page boundary and hugetlb_vmemmap_optimizable_size() returns 0 "
            "(the vm.hugetlb_optimize_vmemmap sysctl is not even registered)"
        )
    return None


def arch_cite(arch: str) -> str:
    for part in HVO_ARCH.cite.split("; "):
        if part.startswith(f"{arch}:"):
            return part.removeprefix(f"{arch}: ")
    return HVO_ARCH.cite


def split_pte_tables(
    hugepages: int, vmemmap_bytes_per_hugepage: int, vmemmap_pmd_bytes: int, layout: Layout
) -> int:
    """PTE tables ``vmemmap_remap_split()`` allocates for a pool, PMD-mapped vmemmap assumed.

    ``packed``: the hugepages are physically contiguous from a vmemmap-PMD boundary, so their
    vmemmap ranges are contiguous and each PMD block is split once.  ``scattered``: every
    hugepage's vmemmap lies in PMD blocks of its own (the worst case).
    """
    if layout == "packed":
        return ceil_div(hugepages * vmemmap_bytes_per_hugepage, vmemmap_pmd_bytes)
    return hugepages * ceil_div(vmemmap_bytes_per_hugepage, vmemmap_pmd_bytes)


@dataclass(frozen=True)
class Rules:
    """What one run's release, architecture and struct page decide for every size."""

    struct_page_bytes: int
    reserve: int  # vmemmap pages reserved per hugepage
    reserve_rule: str
    refusal: str | None  # why no size can be optimized at all
    layout: Layout
    devdax: bool
    zones: int



def struct_page_bytes_of(profile: Profile, struct_page_bytes: int | None) -> int:
    sp = struct_page_bytes or profile.struct_page_bytes
    word = profile.bits // 8
    if sp <= 0 or sp % word or sp > profile.page_size:
        raise InputError(f"{sp}: a struct page is a whole number of {word}-byte words, at most a "
                         f"{fmt_size(profile.page_size)} page", field="struct_page_size")
    return sp



def _why_nothing_to_free(size: int, vmemmap_bytes: int, page: int, rules: Rules) -> str:
    kind = "device-DAX" if rules.devdax else "HVO"
    return (f"the vmemmap of one {fmt_size(size)} hugepage is {fmt_bytes(vmemmap_bytes)} "
            f"({fraction_text(Fraction(vmemmap_bytes, page))} pages), not more than the {rules.reserve} page"
            f"{'s' if rules.reserve > 1 else ''} {kind} keeps, so there is nothing to free "
            "(hugetlb_vmemmap_optimizable_size() = 0)")


@dataclass(frozen=True)
class SizeRule:
    """One hugepage size's HVO rule on a profile and release: the figures per hugepage, and the pool's
    as a function of its hugepages (``_row`` and the fleet's per-host figures share it)."""

    page: int
    vmemmap_bytes: int  # per hugepage: hugetlb_vmemmap_size()
    freed_pages: int  # per hugepage (0 where not optimizable)
    reason: str | None  # why HVO cannot optimize this size (None: it can)
    split_pmd_bytes: int  # the vmemmap PMD span HVO splits (0: the vmemmap is not PMD-mapped, or not optimizable)
    pte_table_bytes: int
    layout: Layout
    shared_tail: bool  # v7.1+: one shared tail page per zone (None in the row before 7.1)
    zones: int

    @property
    def optimizable(self) -> bool:
        return self.reason is None

    def split_pte_tables(self, hugepages: int) -> int:
        # HVO splits the PMD-mapped vmemmap; device-DAX populates it with base pages: the same tables.
        return split_pte_tables(hugepages, self.vmemmap_bytes, self.split_pmd_bytes, self.layout) if self.split_pmd_bytes else 0

    def shared_tail_pages(self, hugepages: int) -> int:
        # v7.1: the tail vmemmap maps one read-only page shared per zone and order, allocated once.
        return self.zones if self.shared_tail and self.optimizable and hugepages else 0

    def saved_bytes(self, hugepages: int) -> int:
        """The pool's net saving: freed vmemmap less the split PTE tables and the shared tail pages."""
        if not hugepages or self.reason is not None:
            return 0
        return (hugepages * self.freed_pages * self.page - self.split_pte_tables(hugepages) * self.pte_table_bytes
                - self.shared_tail_pages(hugepages) * self.page)


def rule_of_size(profile: Profile, release: Release, size: int, rules: Rules) -> SizeRule:
    page = profile.page_size
    vmemmap_bytes = hugetlb_vmemmap_size(size // page, rules.struct_page_bytes)
    # v5.14-v5.17 computed vmemmap pages with a shift (a partial page counts as none);
    # v5.18+ compares bytes: hugetlb_vmemmap_optimizable_size() = size - PAGE_SIZE, 0 if <= 0.
    optimizable_bytes = max(vmemmap_bytes - rules.reserve * page, 0)
    reason = rules.refusal
    if reason is None and (vmemmap_bytes // page) <= rules.reserve:
        reason = _why_nothing_to_free(size, vmemmap_bytes, page, rules)
    return SizeRule(page=page, vmemmap_bytes=vmemmap_bytes, freed_pages=optimizable_bytes // page if reason is None else 0,
                    reason=reason, split_pmd_bytes=profile.pmd_size if reason is None and profile.vmemmap_pmd_mapped else 0,
                    pte_table_bytes=profile.level("pte").bytes_per_table, layout=rules.layout,
                    shared_tail=release.has(HVO_SHARED_TAIL) and not rules.devdax, zones=rules.zones)


def size_rule(profile: Profile, release: Release, size: int, zones: int = 1) -> SizeRule | None:
    """The HVO rule of one hugetlb size as ``vm.hugetlb_optimize_vmemmap`` applies it (the profile's
    struct page, packed pools), computed once per profile object, release, size and zones; None where
    the size is not a hugetlb size of the profile."""
    def make() -> SizeRule | None:
        if not any(h.size == size for h in profile.hugetlb):
            return None
        sp = struct_page_bytes_of(profile, None)
        rules = Rules(struct_page_bytes=sp, reserve=hvo_reserve_pages(release, False), reserve_rule=HVO_RESERVE_ONE.cite,
                       refusal=refusal(profile, release, sp, False), layout="packed", devdax=False, zones=zones)
        return rule_of_size(profile, release, size, rules)

    return per_profile(profile, (size_rule, release, size, zones), make)
