"""Each finding of the kernel review (shared/reviews/kernel-review-2026-11-23.md), with the kernel's
own number: the figure a user gets must be the one the kernel produces."""

import pytest

from hugecalc.calc.hgm import compute_hgm
from tests.passes import compute_mthp
from hugecalc.calc.pgtable import compute_pgtable
from hugecalc.calc.vmemmap import compute_vmemmap
from hugecalc.errors import InputError
from hugecalc.profiles import Arch, load_profile
from hugecalc.releases import parse_release as R

K, M, G = 1 << 10, 1 << 20, 1 << 30
X86 = load_profile("x86-64")


def test_f1_tmpfs_faults_get_the_pmd_size_or_base_pages():
    # 1M tmpfs VMA on 6.14: the 2M PMD does not fit, so 256 faults of 4K (not one 1M folio).
    r = compute_mthp(X86, R("6.14"), memory="tmpfs", huge="always", vma_size=1 * M)
    assert r.faults == 256 and [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 256)]
    # A VMA 64K off a PMD boundary: no PMD fits either, 16,384 x 4K (not 1,024 x 64K).
    r = compute_mthp(X86, R("7.3"), memory="tmpfs", huge="always", vma_size=64 * M, vma_start=0x40010000)
    assert r.faults == 16_384 and r.fault_orders_bytes == []
    assert any("write() and fallocate()" in n for n in r.notes)


def test_f5_sysv_shm_ignores_the_per_size_switches():
    kw = dict(shmem_enabled=[(64 * K, "always")], vma_size=64 * M)
    memfd = compute_mthp(X86, R("6.18"), memory="shmem", **kw)
    sysv = compute_mthp(X86, R("6.18"), memory="sysv", **kw)
    assert memfd.fault_orders_bytes == [64 * K] and memfd.faults == 1024
    assert sysv.fault_orders_bytes == [] and sysv.faults == 16_384
    assert any("ignore the per-size switches" in n for n in sysv.notes)
    # The top-level shmem_enabled (the internal shm mount's huge=) gives SysV the PMD size.
    assert compute_mthp(X86, R("6.18"), memory="sysv", huge="always", vma_size=64 * M).faults == 32


def test_f2_pt_reclaim_keeps_the_edge_tables():
    def after(size, start):
        r = compute_pgtable(X86, R("6.18"), vma_size=size, vma_start=start, after="dontneed", compare=False)
        return r.page_table_bytes_after

    assert after(3 * M, 0x40100000) == 12 * K  # measured on 6.18.44: the first PTE table stays
    assert after(100 * M, 0x40001000) == 16 * K  # two edge tables
    assert after(64 * M, 0x40000000) == 8 * K  # aligned: every PTE table goes


def test_f3_stable_sublevels():
    def saved(kernel):
        return compute_vmemmap(load_profile("arm64-4k"), R(kernel), pool_bytes=64 * G,
                               hugepage_sizes=[2 * M]).rows[0].saved_bytes

    assert saved("6.1.15") == 894 * M and saved("6.1.16") == 0 and saved("6.1.100") == 0
    assert saved("6.2.2") == 894 * M and saved("6.2.3") == 0
    res = compute_vmemmap(load_profile("arm64-4k"), R("6.1"), pool_bytes=64 * G, hugepage_sizes=[2 * M])
    assert res.kernel == "6.1" and any("6.1.16" in n for n in res.notes)
    res = compute_vmemmap(load_profile("arm64-4k"), R("6.1.0-18-amd64"), pool_bytes=64 * G, hugepage_sizes=[2 * M])
    assert res.kernel == "6.1.0-18-amd64" and any("6.1.16" in n for n in res.notes)
    s390 = load_profile("x86-64").model_copy(update={"arch": Arch.s390})
    assert compute_vmemmap(s390, R("6.12.57"), hugepage_count=1, hugepage_sizes=[2 * M]).rows[0].optimizable
    assert not compute_vmemmap(s390, R("6.12.58"), hugepage_count=1, hugepage_sizes=[2 * M]).rows[0].optimizable
    for never in ("5.25", "4.99", "7.4"):
        with pytest.raises(InputError, match="there is no Linux"):
            R(never)


def test_f3_thp_alignment_in_stable_branches():
    from hugecalc.calc.orders import kernel_pmd_aligns_anon_mmap

    assert not kernel_pmd_aligns_anon_mmap(X86, R("6.6.17"), 2 * M)
    assert kernel_pmd_aligns_anon_mmap(X86, R("6.6.18"), 2 * M)
    assert kernel_pmd_aligns_anon_mmap(X86, R("6.11.6"), 3 * M)  # any length >= PMD_SIZE
    assert not kernel_pmd_aligns_anon_mmap(X86, R("6.11.7"), 3 * M)  # only PMD multiples (d4148aeab412)


def test_f4_arm64_contpte_only_from_6_9():
    arm = load_profile("arm64-4k")
    kw = dict(enabled=[(64 * K, "always")], vma_size=64 * M)
    assert compute_mthp(arm, R("6.8"), **kw).tlb_entries == 16_384
    assert compute_mthp(arm, R("6.9"), **kw).tlb_entries == 1024


def test_f6_f7_f8_shared_hugetlb_tables():
    riscv = load_profile("riscv64-sv48")
    kw = dict(vma_size=4 * G, backing="hugetlb-2M", shared_by=4, compare=False)
    assert compute_pgtable(riscv, R("6.18"), **kw).shared_page_table_bytes == 32 * K  # F6
    old = compute_pgtable(X86, R("4.0"), **kw)
    assert old.shared_page_table_bytes == 32 * K and old.page_table_bytes == 0  # F7: physical, not VmPTE
    after = compute_pgtable(X86, R("6.18"), after="dontneed", **kw)  # F8: the caller unshares
    assert (after.page_table_bytes, after.page_table_bytes_after) == (20 * K, 4 * K)
    alone = compute_pgtable(X86, R("6.18"), vma_size=4 * G, backing="hugetlb-2M", after="dontneed", compare=False)
    assert alone.page_table_bytes_after == alone.page_table_bytes  # nothing shared, nothing unshared
    with pytest.raises(InputError, match="EINVAL on 5.17"):
        compute_pgtable(X86, R("5.17"), vma_size=4 * G, backing="hugetlb-2M", after="dontneed", compare=False)


def test_f9_device_dax():
    assert not compute_vmemmap(X86, R("5.18"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert compute_vmemmap(X86, R("5.19"), hugepage_count=1, devdax=True).rows[0].freed_pages_per_hugepage == 6
    riscv = load_profile("riscv64-sv48")
    assert compute_vmemmap(riscv, R("6.12"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert not compute_vmemmap(riscv, R("6.6"), hugepage_count=1, devdax=True).rows[0].optimizable


def test_f11_smaller_boundaries():
    from hugecalc.calc.orders import kernel_pmd_aligns_anon_mmap

    i386 = load_profile("i386").model_copy(update={"hugetlb": []})
    big = 4 * M
    assert kernel_pmd_aligns_anon_mmap(i386.model_copy(update={"bits": 32}), R("6.7"), big) is (i386.pmd_size <= big)
    assert not kernel_pmd_aligns_anon_mmap(i386, R("6.8"), big)
    stack = compute_mthp(X86, R("6.8"), madvise=True, stack=True, vma_size=64 * M)
    assert stack.fault_orders_bytes == [] and stack.faults == 16_384
    assert compute_mthp(X86, R("6.7"), madvise=True, stack=True, vma_size=64 * M).faults == 32


def test_f11_hgm_folio_scheme_from_6_12():
    def folio_ops(kernel):
        r = compute_hgm(X86, R(kernel), hugepage_size=1 * G, path=[4 * K, 1 * G], schemes=["folio"])
        return r.schemes[0].atomic_ops

    # 4K -> 1G collapse: unmap 262,144 PTEs in 512 batches, map one PUD entry (2 atomics).
    n, batches = 262_144, 512
    assert folio_ops("6.12") == n + 2 * batches + 2  # _nr_pages_mapped once per batch (6.12)
    assert folio_ops("6.11") == n + batches + n + 2  # per page before, _large_mapcount per batch (6.11)
    assert folio_ops("6.10") == n + n + 2
    r = compute_hgm(X86, R("6.14"), hugepage_size=1 * G, path=[4 * K, 1 * G], schemes=["folio-no-page-mapcount"])
    assert r.schemes[0].atomic_ops is None  # CONFIG_NO_PAGE_MAPCOUNT arrived in 6.15


@pytest.mark.parametrize("kernel", ["6.19", "7.0", "7.1", "7.2", "7.3"])
def test_newer_releases_are_modelled(kernel):
    r = compute_vmemmap(X86, R(kernel), pool_bytes=1 << 40)
    assert r.kernel == kernel and r.rows[0].freed_pages_per_hugepage == 7


def test_7_1_one_shared_tail_page_per_zone_and_size():
    before = compute_vmemmap(X86, R("7.0"), pool_bytes=1 << 40).rows
    after = compute_vmemmap(X86, R("7.1"), pool_bytes=1 << 40, zones=2).rows
    for b, a in zip(before, after):
        assert a.freed_pages_per_hugepage == b.freed_pages_per_hugepage  # per hugepage: unchanged
        assert a.saved_bytes == b.saved_bytes - 2 * 4096 and a.shared_tail_pages == 2


def test_i386_pae_preallocates_its_pmds():
    pae = load_profile("i386-pae")
    r = compute_pgtable(pae, R("6.18"), vma_size=64 * M, compare=False)
    assert r.tables == {"pmd": 0, "pte": 32} and r.page_table_bytes == 128 * K
    assert any("3 PMD tables (12 KiB)" in n for n in r.notes)
    from hugecalc.calc.tables import compute_worst_case

    worst = compute_worst_case(pae, R("6.18"))
    assert {row.level: row.tables for row in worst.levels} == {"pmd": 3, "pte": 1536}
    hugetlb = compute_pgtable(pae, R("6.18"), vma_size=64 * M, backing="hugetlb-2M", compare=False)
    assert hugetlb.page_table_bytes == 0  # 2M pages live in the preallocated PMDs


def test_struct_page_not_64_is_said():
    r = compute_vmemmap(X86, R("6.18"), pool_bytes=1 << 40, struct_page_bytes=80)
    assert not any(row.optimizable for row in r.rows)
    assert any("not the usual 64" in n and "pahole" in n for n in r.notes)
    assert not any("usual 64" in n for n in compute_vmemmap(X86, R("6.18"), pool_bytes=1 << 40).notes)
