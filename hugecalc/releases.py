"""What each kernel release does: the one place that states release-dependent rules.

A rule is a feature with the releases it is present in, per architecture where that matters,
and the citation that says so.  Calculations ask ``release.has(RULE, arch)`` and quote
``RULE.cite`` in their explanations; they never compare version numbers themselves.

Citation format (drgn's): ``Linux kernel commit <sha12> ("<subject>") (in vX.Y)``.  Where no
commit hash was read, the document or patch series is named instead: no hash is invented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hugecalc.errors import InputError

Version = tuple[int, int]

OLDEST: Version = (4, 0)
NEWEST: Version = (6, 18)  # the newest release modelled; the default for --kernel


@dataclass(frozen=True)
class Release:
    """A kernel release, ``X.Y``."""

    major: int
    minor: int

    @property
    def version(self) -> Version:
        return (self.major, self.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def has(self, rule: Rule, arch: str | None = None) -> bool:
        """Whether ``rule`` holds in this release (on ``arch``, for per-arch rules)."""
        return rule.spans_for(arch).contains(self.version)


@dataclass(frozen=True)
class Span:
    """Present from ``since`` (inclusive) until ``until`` (exclusive; None = still present)."""

    since: Version
    until: Version | None = None

    def contains(self, v: Version) -> bool:
        return self.since <= v and (self.until is None or v < self.until)

    def __str__(self) -> str:
        since = f"{self.since[0]}.{self.since[1]}"
        if self.until is None:
            return f"{since} and later"
        return f"{since} to {self.until[0]}.{self.until[1] - 1}" if self.until[1] else f"{since} until {self.until[0]}.0"




class _Spans(tuple):
    def contains(self, v: Version) -> bool:
        return any(s.contains(v) for s in self)

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self) or "no release"


@dataclass(frozen=True)
class Rule:
    """A release-dependent kernel behaviour and where it is stated."""

    name: str
    cite: str
    spans: tuple[Span, ...] = ()
    per_arch: dict[str, tuple[Span, ...]] | None = None

    def spans_for(self, arch: str | None) -> _Spans:
        if self.per_arch is None:
            return _Spans(self.spans)
        return _Spans(self.per_arch.get(arch or "", ()))


# --- HugeTLB Vmemmap Optimization (kernel-facts §1) ------------------------------------------

HVO = Rule(
    "HugeTLB Vmemmap Optimization (hugetlb_free_vmemmap)",
    'patch series "Free some vmemmap pages of HugeTLB page" (Muchun Song) (in v5.14); '
    "Documentation/admin-guide/mm/hugetlbpage.rst",
    spans=(Span((5, 14)),),
)

HVO_ARCH = Rule(
    "HVO on this architecture (ARCH_WANT_OPTIMIZE_HUGETLB_VMEMMAP)",
    "x86-64: in v5.14 with the feature; "
    'arm64: Linux kernel commit 1e63ac088f20 ("arm64: mm: hugetlb: enable '
    'HUGETLB_PAGE_FREE_VMEMMAP for arm64") (in v5.19), disabled by Linux kernel commit '
    '060a2c92d1b6 ("arm64: mm: hugetlb: Disable HUGETLB_PAGE_OPTIMIZE_VMEMMAP") (in v6.3, '
    "break-before-make rules); s390: Linux kernel commit 00a34d5a99c0 (in v6.2), disabled by "
    "Linux kernel commit 64e2f60f355e (in v6.18, valid-to-valid PTE replacement is not allowed); "
    "riscv64: Linux kernel commit a3c7d6b642e4 (in v6.4); loongarch64: in v6.2",
    per_arch={
        "x86_64": (Span((5, 14)),),
        "arm64": (Span((5, 19), (6, 3)),),
        "s390": (Span((6, 2), (6, 18)),),
        "riscv64": (Span((6, 4)),),
        "loongarch64": (Span((6, 2)),),
    },
)

HVO_RESERVE_ONE = Rule(
    "HVO keeps 1 vmemmap page per hugepage (2 before)",
    'Linux kernel commit e7d324850bfc ("mm: hugetlb: free the 2nd vmemmap page associated '
    'with each HugeTLB page") (in v5.18); before it RESERVE_VMEMMAP_NR = 2 (mm/hugetlb_vmemmap.c, v5.14)',
    spans=(Span((5, 18)),),
)

HVO_BATCHED = Rule(
    "HVO splits, remaps and restores folios in batches",
    'patch series "Batch hugetlb vmemmap modification operations" (Mike Kravetz) (in v6.7): '
    "hugetlb_vmemmap_optimize_folios(), hugetlb_vmemmap_restore_folios()",
    spans=(Span((6, 7)),),
)

DAX_VMEMMAP = Rule(
    "device-DAX compound pages share tail vmemmap pages",
    'patch series "mm, device-dax: Introduce compound pages in devmap" (Joao Martins) (in v5.17, '
    "release unconfirmed); ARCH_WANT_OPTIMIZE_DAX_VMEMMAP, VMEMMAP_RESERVE_NR = 2 "
    "(__vmemmap_can_optimize(), include/linux/mm.h); Documentation/mm/vmemmap_dedup.rst",
    per_arch={"x86_64": (Span((5, 17)),), "ppc64": (Span((6, 5)),)},
)


_RELEASE_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:[.\-+~].*)?\s*$")


def parse_release(text: str | None) -> Release:
    """``6.18``, ``v6.8``, ``6.18.44-foo`` -> Release; the newest modelled when None."""
    if text is None:
        return Release(*NEWEST)
    match = _RELEASE_RE.match(text)
    if not match:
        raise InputError(f"--kernel {text!r} is not a kernel release: use X.Y, e.g. 6.18")
    release = Release(int(match[1]), int(match[2]))
    if not OLDEST <= release.version <= NEWEST:
        raise InputError(
            f"--kernel {text}: hugecalc models releases {OLDEST[0]}.{OLDEST[1]} to "
            f"{NEWEST[0]}.{NEWEST[1]}; use a release in that range"
        )
    return release


# --- Page tables (kernel-facts §2) -----------------------------------------------------------

PT_RECLAIM = Rule(
    "MADV_DONTNEED frees empty PTE tables (CONFIG_PT_RECLAIM)",
    'patch series "synchronously scan and reclaim empty user PTE pages" v4 (Qi Zheng) (in v6.14): '
    "mm/pt_reclaim.c, try_to_free_pte() from zap_pte_range(); only x86_64 selects "
    "ARCH_SUPPORTS_PT_RECLAIM; MADV_FREE does not reclaim",
    per_arch={"x86_64": (Span((6, 14)),)},
)

VMPTE_ALL_LEVELS = Rule(
    "VmPTE counts PTE, PMD and PUD tables (mm->pgtables_bytes)",
    'Linux kernel commit af5b0f6a09e4 ("mm: consolidate page table accounting") (in v4.15)',
    spans=(Span((4, 15)),),
)

HUGE_PMD_SHARE = Rule(
    "MAP_SHARED hugetlb shares PMD tables between processes (ARCH_WANT_HUGE_PMD_SHARE)",
    "huge_pmd_share() in mm/hugetlb.c: a PMD table is shared when the VMA covers the whole "
    "PUD_SIZE-aligned range; mm_inc_nr_pmds() counts it in every sharer's VmPTE",
    per_arch={"x86_64": (Span((4, 0)),), "arm64": (Span((4, 0)),)},
)


# --- THP and mTHP (kernel-facts §4) ----------------------------------------------------------

MTHP_ANON = Rule(
    "multi-size THP for anonymous memory (per-size hugepages-<size>kB/enabled)",
    'patch series "Multi-size THP for anonymous memory" (Ryan Roberts) (in v6.8): alloc_anon_folio() '
    "in mm/memory.c, THP_ORDERS_ALL_ANON in include/linux/huge_mm.h",
    spans=(Span((6, 8)),),
)

HUGE_ZERO_WP_THP = Rule(
    "a write fault on the huge zero page allocates a PMD THP (before: split, then base-page copies)",
    'do_huge_zero_wp_pmd() in mm/huge_memory.c, "mm: Allocate THP on hugezeropage wp-fault" '
    "(Dev Jain, Sept 2024) (in v6.13, release unconfirmed)",
    spans=(Span((6, 13)),),
)

SHMEM_MTHP = Rule(
    "multi-size THP for anonymous shmem (per-size shmem_enabled), whole large folio mapped at one fault",
    'patch series "add mTHP support for anonymous shmem" (Baolin Wang) (in v6.11, release unconfirmed): '
    "shmem_allowable_huge_orders(), finish_fault() mapping a large folio",
    spans=(Span((6, 11)),),
)

TMPFS_MTHP = Rule(
    "tmpfs mounts with huge= use large folios of every order, PMD first",
    'patch series "support large folios for tmpfs" (Baolin Wang) (in v6.14, release unconfirmed): '
    "shmem_huge_global_enabled() returns THP_ORDERS_ALL_FILE_DEFAULT; before it tmpfs faults used the PMD order only",
    spans=(Span((6, 14)),),
)

THP_ALIGN_ANON = Rule(
    "anonymous mmap() of at least PMD size is placed PMD-aligned",
    'Linux kernel commit efa7df3e3bb5 ("mm: align larger anonymous mappings on THP boundaries") '
    "(in v6.7); __thp_get_unmapped_area() in mm/huge_memory.c",
    spans=(Span((6, 7)),),
)

THP_ALIGN_PMD_MULTIPLES = Rule(
    "only anonymous mmap() lengths that are a multiple of PMD_SIZE are PMD-aligned",
    'Linux kernel commit d4148aeab412 ("mm, mmap: limit THP alignment of anonymous mappings to '
    'PMD-aligned sizes") (in v6.12; backported to 6.11.7 and 6.6.y)',
    spans=(Span((6, 12)),),
)
