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
Full = tuple[int, int, int]  # major, minor, stable sublevel

OLDEST: Version = (4, 0)
NEWEST: Version = (7, 3)  # the newest release modelled; the default for --kernel
#: The last X.Y of each major line: releases outside these never existed (5.25, 4.99).
LAST_MINOR = {4: 20, 5: 19, 6: 19, 7: 3}


def _full(v: tuple[int, ...]) -> Full:
    return (v[0], v[1], v[2] if len(v) > 2 else 0)


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in (v if len(v) > 2 and v[2] else v[:2]))


@dataclass(frozen=True)
class Release:
    """A kernel release: ``X.Y``, or a stable one ``X.Y.Z``; ``text`` is how the user gave it.

    ``sublevel`` is None when it is not known: ``6.1`` (the mainline release, computed as
    6.1.0), or a distribution's ABI string such as ``6.1.0-18-amd64`` whose ``.0`` is not the
    upstream stable sublevel.
    """

    major: int
    minor: int
    sublevel: int | None = None
    text: str | None = None

    @property
    def version(self) -> Version:
        return (self.major, self.minor)

    @property
    def full(self) -> Full:
        return (self.major, self.minor, self.sublevel or 0)

    def __str__(self) -> str:
        return self.text or _fmt(self.full if self.sublevel else self.version)

    def has(self, rule: Rule, arch: str | None = None) -> bool:
        """Whether ``rule`` holds in this release (on ``arch``, for per-arch rules)."""
        return rule.spans_for(arch).contains(self.full)

    def sublevel_matters(self, rule: Rule, arch: str | None = None) -> Full | None:
        """Where the sublevel is unknown and ``rule`` changed inside this stable branch: the first
        stable release that differs (the answer given is the X.Y.0 one)."""
        if self.sublevel is not None:
            return None
        points = [b for span in rule.spans_for(arch) for b in (span.since, span.until)
                  if b is not None and len(b) > 2 and b[:2] == self.version and b[2] > 0]
        return min(points, default=None)


@dataclass(frozen=True)
class Span:
    """Present from ``since`` (inclusive) until ``until`` (exclusive; None = still present).
    Bounds are ``(X, Y)`` or, where a stable backport changed a rule, ``(X, Y, Z)``."""

    since: tuple[int, ...]
    until: tuple[int, ...] | None = None
    confirmed: bool = True  # False: the release it starts in is not confirmed (the cite says why)

    def contains(self, v: tuple[int, ...]) -> bool:
        return _full(self.since) <= _full(v) and (self.until is None or _full(v) < _full(self.until))

    def __str__(self) -> str:
        since = _fmt(self.since)
        if self.until is None:
            return f"{since} and later"
        if len(self.until) > 2 and self.until[2]:
            return f"{since} to before {_fmt(self.until)}"
        if len(self.since) > 2 and self.since[2] and _full(self.until) == (self.since[0], self.since[1] + 1, 0):
            return f"{since} and later {self.since[0]}.{self.since[1]}.y"
        return f"{since} to {self.until[0]}.{self.until[1] - 1}" if self.until[1] else f"{since} until {self.until[0]}.0"


class _Spans(tuple):
    def contains(self, v: tuple[int, ...]) -> bool:
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


def unconfirmed_notes(release: Release, rules: list[tuple[Rule, str | None]]) -> list[str]:
    """A note for each rule that holds in this release only by a span whose first release is
    unconfirmed: the figures that rest on it say so under the table, not only in --explain."""
    notes = []
    for rule, arch in rules:
        span = next((s for s in rule.spans_for(arch) if s.contains(release.full)), None)
        if span is not None and not span.confirmed:
            where = f" on {arch}" if arch and rule.per_arch is not None else ""
            notes.append(f"release unconfirmed: {_fmt(span.since)} is taken as the first release with this rule"
                         f"{where}, and the figures that rest on it hold only if it is: {rule.name}")
    return notes


def sublevel_notes(release: Release, rules: list[tuple[Rule, str | None]]) -> list[str]:
    """A note for each rule whose answer depends on a stable sublevel this release does not give."""
    notes = []
    for rule, arch in rules:
        point = release.sublevel_matters(rule, arch)
        if point is not None:
            where = f" on {arch}" if arch and rule.per_arch is not None else ""
            notes.append(f"{rule.name}{where}: changed inside {release.major}.{release.minor}.y, in {_fmt(point)}; "
                         f"shown for {release.major}.{release.minor}.0 as '{release}' gives no stable sublevel "
                         f"(use --kernel {_fmt(point)} or later for the other answer)")
    return notes


# --- HugeTLB Vmemmap Optimization (mm/hugetlb_vmemmap.c) --------------------------------------------

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
    '060a2c92d1b6 ("arm64: mm: hugetlb: Disable HUGETLB_PAGE_OPTIMIZE_VMEMMAP") (in v6.3, and in '
    "the stable releases 6.1.16 and 6.2.3; break-before-make rules); s390: Linux kernel commit "
    "00a34d5a99c0 (in v6.2), disabled by Linux kernel commit 64e2f60f355e (\"s390: Disable "
    "ARCH_WANT_OPTIMIZE_HUGETLB_VMEMMAP\") (in v6.18, and in the stable releases 6.6.117, 6.12.58 and 6.17.8, "
    "as their announcements list it; valid-to-valid PTE replacement is not allowed); riscv64: Linux kernel commit 26b0812f4cf8 (in v6.4; a3c7d6b642e4 selected a "
    "renamed symbol); loongarch64: in v6.2",
    per_arch={
        "x86_64": (Span((5, 14)),),
        "arm64": (Span((5, 19), (6, 1, 16)), Span((6, 2), (6, 2, 3))),
        "s390": (Span((6, 2), (6, 6, 117)), Span((6, 7), (6, 12, 58)), Span((6, 13), (6, 17, 8))),
        "riscv64": (Span((6, 4)),),
        "loongarch64": (Span((6, 2)),),
    },
)

HVO_SHARED_TAIL = Rule(
    "HVO maps every hugepage's tail vmemmap to one read-only page shared per zone and hugepage order",
    'patch series "mm: Eliminate fake head pages from vmemmap optimization" (Kiryl Shutsemau) (in v7.1, '
    'release unconfirmed): Linux kernel commit 8c846c879e22 ("mm: rework compound_head() for power-of-2 '
    'sizeof(struct page)"), zone->vmemmap_tails[], vmemmap_get_tail(); "maintaining the same memory savings"',
    spans=(Span((7, 1), confirmed=False),),
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
    'Linux kernel commit 4917f55b4ef9 ("mm/sparse-vmemmap: improve memory savings for compound devmaps") '
    "(in v5.19) on every ZONE_DEVICE architecture, not gated by any arch symbol (it crashed on ppc64 hash MMU, "
    "which the v6.3 fix was about); v6.3-v6.4 __vmemmap_can_optimize() follows the HVO arch symbol; "
    'from v6.5 ARCH_WANT_OPTIMIZE_DAX_VMEMMAP ("mm/vmemmap optimization: split hugetlb and devdax vmemmap '
    'optimization"): x86-64, ppc64 (radix), riscv64 (Linux kernel commit 4705c1571ad3 "riscv: Enable DAX '
    'VMEMMAP optimization", in v6.11, release unconfirmed); s390 and loongarch have no device-DAX; '
    "VMEMMAP_RESERVE_NR = 2 (include/linux/mm.h); Documentation/mm/vmemmap_dedup.rst",
    per_arch={
        "x86_64": (Span((5, 19)),),
        "arm64": (Span((5, 19), (6, 3)),),  # the 6.3 gate's 6.1.y/6.2.y sublevels unconfirmed
        "ppc64": (Span((5, 19), (6, 3)), Span((6, 5))),
        "riscv64": (Span((6, 11), confirmed=False),),
    },
)


_RELEASE_RE = re.compile(r"^[ \t]*v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?(?P<rest>[-+~_].*)?[ \t]*$")


def parse_release(text: str | None) -> Release:
    """``6.18``, ``v6.8``, ``6.1.100``, ``6.18.44-foo``, ``6.1.0-18-amd64`` -> Release; the newest
    modelled when None.  Releases that never existed (``5.25``, ``4.99``) are refused."""
    if text is None:
        return Release(*NEWEST)
    match = _RELEASE_RE.match(text)
    if not match:
        raise InputError(f"--kernel {text!r} is not a kernel release: use X.Y or X.Y.Z, e.g. 6.18 or 6.1.100")
    major, minor = int(match[1]), int(match[2])
    if major in LAST_MINOR and minor > LAST_MINOR[major]:
        ended = f"{major}.x ended with" if major < NEWEST[0] else "the newest release is"
        raise InputError(f"--kernel {text}: there is no Linux {major}.{minor} ({ended} {major}.{LAST_MINOR[major]})")
    if not OLDEST <= (major, minor) <= NEWEST:
        raise InputError(
            f"--kernel {text}: hugecalc models releases {OLDEST[0]}.{OLDEST[1]} to "
            f"{NEWEST[0]}.{NEWEST[1]}; use a release in that range"
        )
    sublevel = int(match[3]) if match[3] is not None else None
    if sublevel == 0 and match["rest"]:
        sublevel = None  # a distribution ABI string (6.1.0-18-amd64): its .0 is not the stable sublevel
    return Release(major, minor, sublevel, text.strip())


# --- Page tables (mm/memory.c, mm/pt_reclaim.c) -----------------------------------------------------------

PT_RECLAIM = Rule(
    "MADV_DONTNEED frees the PTE tables it empties (CONFIG_PT_RECLAIM)",
    'patch series "synchronously scan and reclaim empty user PTE pages" v4 (Qi Zheng) (in v6.14, x86_64 '
    "only: ARCH_SUPPORTS_PT_RECLAIM); Linux kernel commit 9c8c02df3f87 (\"mm: make PT_RECLAIM depends on "
    'MMU_GATHER_RCU_TABLE_FREE") of the series "enable PT_RECLAIM on more 64-bit architectures" (in v7.0, '
    "release unconfirmed): every arch with MMU_GATHER_RCU_TABLE_FREE and no HAVE_ARCH_TLB_REMOVE_TABLE "
    "(arm64, riscv64, loongarch64; not powerpc, sparc64), and 32-bit x86 too: x86 selects "
    'MMU_GATHER_RCU_TABLE_FREE unconditionally from Linux kernel commit a37259732a7d ("x86/mm: Make '
    'MMU_GATHER_RCU_TABLE_FREE unconditional") (in v6.15). Only a table whose whole PMD_SIZE range lies '
    "inside the VMA and the madvise range: reclaim_pt_is_enabled() needs end - start >= PMD_SIZE in "
    "zap_pte_range() (mm/pt_reclaim.c; mm/memory.c from v7.0). MADV_FREE does not reclaim",
    per_arch={"x86_64": (Span((6, 14)),), "arm64": (Span((7, 0), confirmed=False),),
              "riscv64": (Span((7, 0), confirmed=False),), "loongarch64": (Span((7, 0), confirmed=False),),
              "i386": (Span((7, 0), confirmed=False),)},
)

HUGETLB_DONTNEED = Rule(
    "MADV_DONTNEED works on hugetlb mappings (EINVAL before)",
    'Linux kernel commit 90e7e7f5ef3f ("mm: enable MADV_DONTNEED for hugetlb mappings") (in v5.18); '
    "__unmap_hugepage_range() then calls huge_pmd_unshare(), which drops a shared PMD table from the "
    "caller (pud_clear(), mm_dec_nr_pmds())",
    spans=(Span((5, 18)),),
)

VMPTE_ALL_LEVELS = Rule(
    "VmPTE counts PTE, PMD and PUD tables (mm->pgtables_bytes)",
    'Linux kernel commit af5b0f6a09e4 ("mm: consolidate page table accounting") (in v4.15)',
    spans=(Span((4, 15)),),
)

HUGE_PMD_SHARE = Rule(
    "MAP_SHARED hugetlb shares PMD tables between processes (ARCH_WANT_HUGE_PMD_SHARE)",
    "huge_pmd_share() in mm/hugetlb.c: a PMD table is shared when the VMA covers the whole "
    "PUD_SIZE-aligned range; mm_inc_nr_pmds() counts it in every sharer's VmPTE; x86-64 and arm64, "
    "riscv64 with its hugetlb support ('riscv: Introduce huge page support for 32/64bit kernel', "
    "select ARCH_WANT_HUGE_PMD_SHARE if 64BIT) (in v5.4, release unconfirmed)",
    per_arch={"x86_64": (Span((4, 0)),), "arm64": (Span((4, 0)),), "riscv64": (Span((5, 4), confirmed=False),)},
)


# --- THP and mTHP (mm/huge_memory.c, mm/memory.c, mm/shmem.c) ----------------------------------------------------------

MTHP_ANON = Rule(
    "multi-size THP for anonymous memory (per-size hugepages-<size>kB/enabled)",
    'patch series "Multi-size THP for anonymous memory" (Ryan Roberts) (in v6.8): alloc_anon_folio() '
    "in mm/memory.c, THP_ORDERS_ALL_ANON in include/linux/huge_mm.h",
    spans=(Span((6, 8)),),
)

HUGE_ZERO_WP_THP = Rule(
    "a write fault on the huge zero page allocates a PMD THP (5.8-6.12: split, then base-page copies)",
    "do_huge_pmd_wp_page() before v5.8: 'if (is_huge_zero_pmd(orig_pmd)) goto alloc' allocates a PMD THP; "
    'Linux kernel commit 3917c80280c9 ("thp: change CoW semantics for anon-THP") (in v5.8) splits the PMD '
    'instead; Linux kernel commit 1ced09e0331f ("mm: Allocate THP on hugezeropage wp-fault") (in v6.13): '
    "do_huge_zero_wp_pmd() in mm/huge_memory.c",
    spans=(Span((4, 0), (5, 8)), Span((6, 13))),
)

SHMEM_MTHP = Rule(
    "multi-size THP for anonymous shmem (per-size shmem_enabled), whole large folio mapped at one fault",
    'patch series "add mTHP support for anonymous shmem" (Baolin Wang) (in v6.11, release unconfirmed): '
    "shmem_allowable_huge_orders(), finish_fault() mapping a large folio",
    spans=(Span((6, 11), confirmed=False),),
)

TMPFS_MTHP = Rule(
    "tmpfs write() and fallocate() allocate large folios of every order; page faults still get PMD or base pages",
    'patch series "support large folios for tmpfs" (Baolin Wang) (in v6.14, release unconfirmed): '
    'shmem_huge_global_enabled(): "For tmpfs mmap()\'s huge order, we still use PMD-sized order to allocate '
    'huge pages due to lack of a write size hint": if (vma) return maybe_pmd_order',
    spans=(Span((6, 14), confirmed=False),),
)

ARM64_CONTPTE = Rule(
    "arm64 maps large folios with the contiguous bit (contpte), one TLB entry per block",
    'Linux kernel commit "arm64/mm: wire up PTE_CONT for user mappings" (Ryan Roberts), ARM64_CONTPTE, '
    "arch/arm64/mm/contpte.c (in v6.9); 6.8 mapped mTHP folios without PTE_CONT",
    per_arch={"arm64": (Span((6, 9)),)},
)

MAP_STACK_NOHUGEPAGE = Rule(
    "mmap(MAP_STACK) sets VM_NOHUGEPAGE: stacks get no THP",
    'Linux kernel commit c4608d1bf7c6 ("mm: mmap: map MAP_STACK to VM_NOHUGEPAGE") (in v6.8, and in '
    "6.7.6: the queue/6.7 and rolling-stable revlists of 2024-02-23)",
    spans=(Span((6, 7, 6), (6, 8)), Span((6, 8))),
)

KHUGEPAGED_MTHP = Rule(
    "khugepaged collapses anonymous memory to mTHP sizes (max_ptes_none 0 or 511)",
    'patch series "khugepaged: add mTHP collapse support" (Nico Pache), v17 in mm-unstable (May 2026), '
    'LWN "Automatic mTHP creation in 7.2" (in v7.2, release unconfirmed)',
    spans=(Span((7, 2), confirmed=False),),
)

THP_ALIGN_ANON = Rule(
    "anonymous mmap() of at least PMD size is placed PMD-aligned",
    'Linux kernel commit efa7df3e3bb5 ("mm: align larger anonymous mappings on THP boundaries") '
    "(in v6.7); __thp_get_unmapped_area() in mm/huge_memory.c. Not in 6.6.y: the 6.6.18 bound an earlier "
    "version gave rested on a misread (what 6.6.18 carries is the 32-bit fix's context, and no 6.6.y "
    "backport of efa7df3e3bb5 itself was found in the stable queue); unconfirmed against linux-6.6.y",
    spans=(Span((6, 7)),),
)

THP_ALIGN_NOT_32BIT = Rule(
    "no THP alignment of anonymous mmap() on 32-bit",
    'Linux kernel commit 4ef9ad19e176 ("mm: huge_memory: don\'t force huge page alignment on 32 bit") '
    "(in v6.8) tests IS_ENABLED(CONFIG_32BIT), which x86-32 never sets: i386 kept the alignment until "
    '"mm: huge_memory: use !CONFIG_64BIT to relax huge page alignment on 32 bit machines" (in v6.11, and '
    "in the stable releases 6.10.3 and 6.6.46). 32-bit processes on a 64-bit kernel (in_compat_syscall()) are "
    "not modelled",
    per_arch={"i386": (Span((6, 10, 3), (6, 11)), Span((6, 11)))},
)

THP_ALIGN_PMD_MULTIPLES = Rule(
    "only anonymous mmap() lengths that are a multiple of PMD_SIZE are PMD-aligned",
    'Linux kernel commit d4148aeab412 ("mm, mmap: limit THP alignment of anonymous mappings to '
    'PMD-aligned sizes") (in v6.12; backported to 6.11.7, and to 6.6.y at a sublevel unconfirmed)',
    spans=(Span((6, 11, 7), (6, 12)), Span((6, 12))),
)

# --- Large-folio mapcounts (the reference schemes of hgm) -----------------------------------

FOLIO_LARGE_MAPCOUNT = Rule(
    "large folios have a _large_mapcount, raised once per rmap batch",
    "folio->_large_mapcount (David Hildenbrand) (in v6.11): folio_add_anon_rmap_ptes() in mm/rmap.c",
    spans=(Span((6, 11)),),
)

FOLIO_BATCHED_NR_PAGES_MAPPED = Rule(
    "_nr_pages_mapped is updated once per rmap batch, not once per page",
    '"mm/rmap: minimize folio->_nr_pages_mapped updates when batching PTE (un)mapping" (David '
    "Hildenbrand, 2024-08-07) (in v6.12)",
    spans=(Span((6, 12)),),
)

NO_PAGE_MAPCOUNT = Rule(
    "CONFIG_NO_PAGE_MAPCOUNT: no per-page _mapcount in large folios, per-folio counters only",
    'patch series "mm: no per-page mapcount in large folios" (David Hildenbrand) (in v6.15)',
    spans=(Span((6, 15)),),
)
