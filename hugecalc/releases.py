"""What each kernel release does: the one place that states release-dependent rules.

A rule is a feature with the releases it is present in, per architecture where that matters,
and the citation that says so.  Calculations ask ``release.has(RULE, arch)`` and quote
``RULE.cite`` in their explanations; they never compare version numbers themselves.

Citation format (drgn's): ``Linux kernel commit <sha12> ("<subject>") (in vX.Y)``.  Where no
commit hash was read, the document or patch series is named instead: no hash is invented.
"""

from __future__ import annotations

from hugecalc.versions import (LAST_MINOR, NEWEST, OLDEST, Commit, Full, Release, Rule, Span, Version, parse_release,
                               sublevel_notes, unconfirmed_notes)

__all__ = ["LAST_MINOR", "NEWEST", "OLDEST", "Commit", "Full", "Release", "Rule", "Span", "Version", "parse_release",
           "sublevel_notes", "unconfirmed_notes"]

#: Commits that bound more than one span.
FREE_VMEMMAP = Commit("f41f2ed43ca5", "mm: hugetlb: free the vmemmap pages associated with each HugeTLB page")
ARM64_HVO_ON = Commit("1e63ac088f20", "arm64: mm: hugetlb: enable HUGETLB_PAGE_FREE_VMEMMAP for arm64")
ARM64_HVO_OFF = Commit("060a2c92d1b6", "arm64: mm: hugetlb: Disable HUGETLB_PAGE_OPTIMIZE_VMEMMAP")
S390_HVO_ON = Commit("00a34d5a99c0", "s390: select ARCH_WANT_HUGETLB_PAGE_OPTIMIZE_VMEMMAP")
S390_HVO_OFF = Commit("64e2f60f355e", "s390: Disable ARCH_WANT_OPTIMIZE_HUGETLB_VMEMMAP")
DAX_DEDUP = Commit("4917f55b4ef9", "mm/sparse-vmemmap: improve memory savings for compound devmaps")
DAX_GATE = Commit("87a7ae75d738", "mm/vmemmap/devdax: fix kernel crash when probing devdax devices")
PT_RECLAIM_MORE = Commit("9c8c02df3f87", "mm: make PT_RECLAIM depends on MMU_GATHER_RCU_TABLE_FREE")
MAP_STACK = Commit("c4608d1bf7c6", "mm: mmap: map MAP_STACK to VM_NOHUGEPAGE")
NOT_64BIT = Commit("7fd282f0961e", "mm: huge_memory: use !CONFIG_64BIT to relax huge page alignment on 32 bit "
                                  "machines")
PMD_MULTIPLES = Commit("d4148aeab412", "mm, mmap: limit THP alignment of anonymous mappings to PMD-aligned sizes")

# --- HugeTLB Vmemmap Optimization (mm/hugetlb_vmemmap.c) --------------------------------------------

HVO = Rule(
    "HugeTLB Vmemmap Optimization (hugetlb_free_vmemmap)",
    'patch series "Free some vmemmap pages of HugeTLB page" (Muchun Song) (in v5.14); '
    "Documentation/admin-guide/mm/hugetlbpage.rst",
    spans=(Span((5, 14), by=FREE_VMEMMAP),),
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
        "x86_64": (Span((5, 14), by=FREE_VMEMMAP),),
        "arm64": (Span((5, 19), (6, 1, 16), by=ARM64_HVO_ON, until_by=ARM64_HVO_OFF),
                  Span((6, 2), (6, 2, 3), by=ARM64_HVO_ON, until_by=ARM64_HVO_OFF)),
        "s390": (Span((6, 2), (6, 6, 117), by=S390_HVO_ON, until_by=S390_HVO_OFF),
                 Span((6, 7), (6, 12, 58), by=S390_HVO_ON, until_by=S390_HVO_OFF),
                 Span((6, 13), (6, 17, 8), by=S390_HVO_ON, until_by=S390_HVO_OFF)),
        "riscv64": (Span((6, 4), by=Commit("26b0812f4cf8", "RISC-V: fixup in-flight collision with "
                                            "ARCH_WANT_OPTIMIZE_VMEMMAP rename")),),
        # the LoongArch commit that selected it was not found: its 6.2 stays unconfirmed
        "loongarch64": (Span((6, 2), confirmed=False),),
    },
)

HVO_SHARED_TAIL = Rule(
    "HVO maps every hugepage's tail vmemmap to one read-only page shared per zone and hugepage order",
    'patch series "mm: Eliminate fake head pages from vmemmap optimization" (Kiryl Shutsemau) (in v7.1, '
    'release unconfirmed): Linux kernel commit 8c846c879e22 ("mm: rework compound_head() for power-of-2 '
    'sizeof(struct page)"), zone->vmemmap_tails[], vmemmap_get_tail(); "maintaining the same memory savings"',
    spans=(Span((7, 1), confirmed=False,
                by=Commit("8c846c879e22", "mm: rework compound_head() for power-of-2 sizeof(struct page)")),),
)

HVO_RESERVE_ONE = Rule(
    "HVO keeps 1 vmemmap page per hugepage (2 before)",
    'Linux kernel commit e7d324850bfc ("mm: hugetlb: free the 2nd vmemmap page associated '
    'with each HugeTLB page") (in v5.18); before it RESERVE_VMEMMAP_NR = 2 (mm/hugetlb_vmemmap.c, v5.14)',
    spans=(Span((5, 18), by=Commit("e7d324850bfc", "mm: hugetlb: free the 2nd vmemmap page associated with each "
                                             "HugeTLB page")),),
)

HVO_BATCHED = Rule(
    "HVO splits, remaps and restores folios in batches",
    'patch series "Batch hugetlb vmemmap modification operations" (Mike Kravetz) (in v6.7): '
    "hugetlb_vmemmap_optimize_folios(), hugetlb_vmemmap_restore_folios()",
    spans=(Span((6, 7), by=Commit("91f386bf0772", "hugetlb: batch freeing of vmemmap pages")),),
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
        "x86_64": (Span((5, 19), by=DAX_DEDUP),),
        # the 6.3 gate's 6.1.y/6.2.y sublevels unconfirmed
        "arm64": (Span((5, 19), (6, 3), by=DAX_DEDUP, until_by=DAX_GATE),),
        "ppc64": (Span((5, 19), (6, 3), by=DAX_DEDUP, until_by=DAX_GATE),
                  Span((6, 5), by=Commit("7e6ebd8ee418", "mm/vmemmap optimization: split hugetlb and devdax vmemmap "
                                                        "optimization"))),
        "riscv64": (Span((6, 11), confirmed=False,
                         by=Commit("4705c1571ad3", "riscv: Enable DAX VMEMMAP optimization")),),
    },
)


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
    per_arch={"x86_64": (Span((6, 14), by=Commit("6375e95f381e", "mm: pgtable: reclaim empty PTE page in "
                                                 "madvise(MADV_DONTNEED)")),),
              **{arch: (Span((7, 0), confirmed=False, by=PT_RECLAIM_MORE),)
                 for arch in ("arm64", "riscv64", "loongarch64", "i386")}},
)

HUGETLB_DONTNEED = Rule(
    "MADV_DONTNEED works on hugetlb mappings (EINVAL before)",
    'Linux kernel commit 90e7e7f5ef3f ("mm: enable MADV_DONTNEED for hugetlb mappings") (in v5.18); '
    "__unmap_hugepage_range() then calls huge_pmd_unshare(), which drops a shared PMD table from the "
    "caller (pud_clear(), mm_dec_nr_pmds())",
    spans=(Span((5, 18), by=Commit("90e7e7f5ef3f", "mm: enable MADV_DONTNEED for hugetlb mappings")),),
)

VMPTE_ALL_LEVELS = Rule(
    "VmPTE counts PTE, PMD and PUD tables (mm->pgtables_bytes)",
    'Linux kernel commit af5b0f6a09e4 ("mm: consolidate page table accounting") (in v4.15)',
    spans=(Span((4, 15), by=Commit("af5b0f6a09e4", "mm: consolidate page table accounting")),),
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
    spans=(Span((6, 8), by=Commit("19eaf44954df", "mm: thp: support allocation of anonymous multi-size THP")),),
)

HUGE_ZERO_WP_THP = Rule(
    "a write fault on the huge zero page allocates a PMD THP (5.8-6.12: split, then base-page copies)",
    "do_huge_pmd_wp_page() before v5.8: 'if (is_huge_zero_pmd(orig_pmd)) goto alloc' allocates a PMD THP; "
    'Linux kernel commit 3917c80280c9 ("thp: change CoW semantics for anon-THP") (in v5.8) splits the PMD '
    'instead; Linux kernel commit 1ced09e0331f ("mm: Allocate THP on hugezeropage wp-fault") (in v6.13): '
    "do_huge_zero_wp_pmd() in mm/huge_memory.c",
    spans=(Span((4, 0), (5, 8), until_by=Commit("3917c80280c9", "thp: change CoW semantics for anon-THP")),
           Span((6, 13), by=Commit("1ced09e0331f", "mm: Allocate THP on hugezeropage wp-fault"))),
)

SHMEM_MTHP = Rule(
    "multi-size THP for anonymous shmem (per-size shmem_enabled), whole large folio mapped at one fault",
    'patch series "add mTHP support for anonymous shmem" (Baolin Wang) (in v6.11, release unconfirmed): '
    "shmem_allowable_huge_orders(), finish_fault() mapping a large folio",
    spans=(Span((6, 11), confirmed=False,
                by=Commit("e7a2ab7b3bb5", "mm: shmem: add mTHP support for anonymous shmem")),),
)

TMPFS_MTHP = Rule(
    "tmpfs write() and fallocate() allocate large folios of every order; page faults still get PMD or base pages",
    'patch series "support large folios for tmpfs" (Baolin Wang) (in v6.14, release unconfirmed): '
    'shmem_huge_global_enabled(): "For tmpfs mmap()\'s huge order, we still use PMD-sized order to allocate '
    'huge pages due to lack of a write size hint": if (vma) return maybe_pmd_order',
    spans=(Span((6, 14), confirmed=False, by=Commit("acd7ccb284b8", "mm: shmem: add large folio support for tmpfs")),),
)

ARM64_CONTPTE = Rule(
    "arm64 maps large folios with the contiguous bit (contpte), one TLB entry per block",
    'Linux kernel commit "arm64/mm: wire up PTE_CONT for user mappings" (Ryan Roberts), ARM64_CONTPTE, '
    "arch/arm64/mm/contpte.c (in v6.9); 6.8 mapped mTHP folios without PTE_CONT",
    per_arch={"arm64": (Span((6, 9), by=Commit("4602e5757bcc", "arm64/mm: wire up PTE_CONT for user mappings")),)},
)

MAP_STACK_NOHUGEPAGE = Rule(
    "mmap(MAP_STACK) sets VM_NOHUGEPAGE: stacks get no THP",
    'Linux kernel commit c4608d1bf7c6 ("mm: mmap: map MAP_STACK to VM_NOHUGEPAGE") (in v6.8, and in '
    "6.7.6: the queue/6.7 and rolling-stable revlists of 2024-02-23)",
    spans=(Span((6, 7, 6), (6, 8), by=MAP_STACK, until_by=MAP_STACK), Span((6, 8), by=MAP_STACK)),
)

KHUGEPAGED_MTHP = Rule(
    "khugepaged collapses anonymous memory to mTHP sizes (max_ptes_none 0 or 511)",
    'patch series "khugepaged: add mTHP collapse support" (Nico Pache), v17 in mm-unstable (May 2026), '
    'LWN "Automatic mTHP creation in 7.2" (in v7.2, release unconfirmed: only linux-next ids of "khugepaged: add '
    'mTHP support" were found, which change as the tree is rebased; no mainline one)',
    spans=(Span((7, 2), confirmed=False),),
)

THP_ALIGN_ANON = Rule(
    "anonymous mmap() of at least PMD size is placed PMD-aligned",
    'Linux kernel commit efa7df3e3bb5 ("mm: align larger anonymous mappings on THP boundaries") '
    "(in v6.7); __thp_get_unmapped_area() in mm/huge_memory.c. Not in 6.6.y: the 6.6.18 bound an earlier "
    "version gave rested on a misread (what 6.6.18 carries is the 32-bit fix's context, and no 6.6.y "
    "backport of efa7df3e3bb5 itself was found in the stable queue); unconfirmed against linux-6.6.y",
    spans=(Span((6, 7), by=Commit("efa7df3e3bb5", "mm: align larger anonymous mappings on THP boundaries")),),
)

THP_ALIGN_NOT_32BIT = Rule(
    "no THP alignment of anonymous mmap() on 32-bit",
    'Linux kernel commit 4ef9ad19e176 ("mm: huge_memory: don\'t force huge page alignment on 32 bit") '
    "(in v6.8) tests IS_ENABLED(CONFIG_32BIT), which x86-32 never sets: i386 kept the alignment until "
    '"mm: huge_memory: use !CONFIG_64BIT to relax huge page alignment on 32 bit machines" (in v6.11, and '
    "in the stable releases 6.10.3 and 6.6.46). 32-bit processes on a 64-bit kernel (in_compat_syscall()) are "
    "not modelled",
    per_arch={"i386": (Span((6, 10, 3), (6, 11), by=NOT_64BIT, until_by=NOT_64BIT), Span((6, 11), by=NOT_64BIT))},
)

THP_ALIGN_PMD_MULTIPLES = Rule(
    "only anonymous mmap() lengths that are a multiple of PMD_SIZE are PMD-aligned",
    'Linux kernel commit d4148aeab412 ("mm, mmap: limit THP alignment of anonymous mappings to '
    'PMD-aligned sizes") (in v6.12; backported to 6.11.7, and to 6.6.y at a sublevel unconfirmed)',
    spans=(Span((6, 11, 7), (6, 12), by=PMD_MULTIPLES, until_by=PMD_MULTIPLES), Span((6, 12), by=PMD_MULTIPLES)),
)

# --- Large-folio mapcounts (the reference schemes of hgm) -----------------------------------

FOLIO_LARGE_MAPCOUNT = Rule(
    "large folios have a _large_mapcount, raised once per rmap batch",
    "folio->_large_mapcount (David Hildenbrand) (in v6.11): folio_add_anon_rmap_ptes() in mm/rmap.c",
    spans=(Span((6, 11), by=Commit("05c5323b2a34", "mm: track mapcount of large folios in single value")),),
)

FOLIO_BATCHED_NR_PAGES_MAPPED = Rule(
    "_nr_pages_mapped is updated once per rmap batch, not once per page",
    '"mm/rmap: minimize folio->_nr_pages_mapped updates when batching PTE (un)mapping" (David '
    "Hildenbrand, 2024-08-07) (in v6.12)",
    spans=(Span((6, 12), confirmed=False),),  # its mainline commit id was not found: the release stays unconfirmed
)

NO_PAGE_MAPCOUNT = Rule(
    "CONFIG_NO_PAGE_MAPCOUNT: no per-page _mapcount in large folios, per-folio counters only",
    'patch series "mm: no per-page mapcount in large folios" (David Hildenbrand) (in v6.15)',
    spans=(Span((6, 15), confirmed=False),),  # its mainline commit id was not found: the release stays unconfirmed
)
