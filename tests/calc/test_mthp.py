"""mTHP fault walk against a page-by-page simulation, the measurements on 6.18 and the kernel rules."""

import pytest
from hypothesis import assume, given, settings, strategies as st

from hugecalc.calc.mthp import anon_orders, fault_around_pages, file_orders
from hugecalc.calc.orders import kernel_pmd_aligns_anon_mmap
from tests.passes import compute_mthp
from hugecalc.errors import InputError
from hugecalc.profiles import load_profile
from hugecalc.releases import parse_release
from tests import reference

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
X86 = load_profile("x86-64")
NEWEST = parse_release(None)
R = parse_release


def mthp(profile=X86, kernel=None, **kw):
    return compute_mthp(profile, parse_release(kernel), **kw)


# --- measured on 6.18: memset of 1 GiB under 4K, 64K and PMD -----------------------------------------

def test_seed_anon_memset_4k():
    r = mthp()
    assert r.faults == 262_144 and r.write_faults == 262_144
    assert [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 262_144)]


def test_seed_anon_memset_64k():
    r = mthp(enabled=[(64 * K, "always")])
    assert r.faults == 16_384 and [(f.size_bytes, f.count) for f in r.folios] == [(64 * K, 16_384)]


def test_pmd_wins_on_an_aligned_vma_with_madvise():
    """Measured on 6.18: with PMD size inherit and MADV_HUGEPAGE, PMD beats 64K on a 1 GiB VMA."""
    r = mthp(enabled=[(64 * K, "always")], madvise=True)
    assert r.faults == 512 and [(f.size_bytes, f.count) for f in r.folios] == [(2 * M, 512)]


def test_seed_memfd_64k_shmem():
    r = mthp(memory="shmem", shmem_enabled=[(64 * K, "always")])
    assert r.faults == 16_384


def test_shmem_force_and_deny():
    """shmem_allowable_huge_orders() (6.11+): "if (shmem_huge == SHMEM_HUGE_DENY) return 0; if
    (shmem_huge == SHMEM_HUGE_FORCE) return READ_ONCE(huge_shmem_orders_inherit);" (kernel review N11,
    measured on 6.18: force with 64K=always gives 2M folios, or base pages where 2M does not fit)."""
    force = mthp(memory="shmem", huge="force", shmem_enabled=[(64 * K, "always")], vma_size=4 * M)
    assert [(f.size_bytes, f.count) for f in force.folios] == [(2 * M, 2)]
    small = mthp(memory="shmem", huge="force", shmem_enabled=[(64 * K, "always")], vma_size=1 * M)
    assert [(f.size_bytes, f.count) for f in small.folios] == [(4 * K, 256)]
    deny = mthp(memory="shmem", huge="deny", shmem_enabled=[(64 * K, "always")], vma_size=4 * M)
    assert deny.faults == 1024
    assert mthp(memory="tmpfs", huge="force", vma_size=4 * M).faults == 2
    assert mthp(memory="shmem", huge="force", vma_size=4 * M, kernel="6.6").faults == 2  # shmem_is_huge()
    with pytest.raises(InputError, match="shmem_valid_huge"):
        mthp(memory="shmem", huge="force", shmem_enabled=[(64 * K, "inherit")], vma_size=4 * M)


def test_seed_tmpfs_huge_always():
    r = mthp(memory="tmpfs", huge="always")
    assert r.faults == 512 and r.tables["pte"] == 0  # do_set_pmd(): no deposited table on x86


# --- per-size modes, inherit and the top level ------------------------------------------------------------------------

@pytest.mark.parametrize("profile,mask", [("x86-64", 0x3FC), ("arm64-16k", 0xFFC), ("arm64-64k", 0x3FFC)])
def test_thp_orders_all_anon(profile, mask):
    assert sum(1 << o for o in anon_orders(load_profile(profile))) == mask


def test_file_orders_cap_at_max_pagecache_order():
    assert file_orders(load_profile("arm64-64k"))[-1] == 11  # PMD order 13 > MAX_XAS_ORDER
    assert file_orders(X86) == list(range(1, 10))


def test_default_modes():
    r = mthp()
    assert r.inputs["enabled"]["2M"] == "inherit" and r.inputs["enabled"]["64K"] == "never"
    assert r.fault_orders_bytes == []  # top-level madvise, no MADV_HUGEPAGE


def test_inherit_follows_top_level_and_madvise():
    assert mthp(enabled=[(64 * K, "inherit")]).fault_orders_bytes == []
    assert 64 * K in mthp(enabled=[(64 * K, "inherit")], madvise=True).fault_orders_bytes
    assert mthp(enabled=[(64 * K, "inherit")], madvise=True, top_level="never").fault_orders_bytes == []
    assert 64 * K in mthp(enabled=[(64 * K, "madvise")], madvise=True).fault_orders_bytes
    assert mthp(enabled=[(64 * K, "always")], nohugepage=True).fault_orders_bytes == []


def test_order_1_is_not_anonymous():
    with pytest.raises(InputError, match=r"8K is order 1 \(THP_ORDERS_ALL_ANON excludes order 1\): x86-64 has 16K..2M"):
        mthp(enabled=[(8 * K, "always")])
    assert 8 * K in mthp(memory="shmem", shmem_enabled=[(8 * K, "always")]).fault_orders_bytes


@pytest.mark.parametrize("kw,message", [
    (dict(enabled=[(48 * K, "always")]), "not a power-of-two number"),
    (dict(enabled=[(4 * M, "always")]), "is order 10"),
    (dict(enabled=[(64 * K, "sometimes")]), "the mode must be one of"),
    (dict(shmem_enabled=[(64 * K, "madvise")], memory="shmem"), "the mode must be one of"),
    (dict(madvise=True, nohugepage=True), "exclude each other"),
    (dict(vma_size=0), "positive multiple"),
    (dict(vma_size=200 * T), "does not fit"),
    (dict(top_level="sometimes"), "top_level 'sometimes'"),
])
def test_bad_inputs(kw, message):
    with pytest.raises(InputError, match=message):
        mthp(**kw)


def test_releases():
    old = mthp(kernel="6.7", enabled=[(64 * K, "always")])
    assert old.faults == 262_144 and "no per-size THP switch (hugepages-<size>kB/enabled came in 6.8" in old.notes[0]
    # Read-then-write under PMD THP: the huge zero page, then a THP (6.13+) or base-page copies.
    new = mthp(madvise=True, access="read-then-write")
    assert (new.read_faults, new.write_faults) == (512, 512)
    older = mthp(kernel="6.12", madvise=True, access="read-then-write")
    assert (older.read_faults, older.write_faults) == (512, 262_144)
    # tmpfs faults: the PMD order only, before and after 6.14's large folios for write()/fallocate().
    assert mthp(kernel="6.13", memory="tmpfs", huge="always").fault_orders_bytes == [2 * M]
    assert mthp(kernel="6.14", memory="tmpfs", huge="always").fault_orders_bytes == [2 * M]


def test_read_then_write_copies_the_zero_page_at_base_size():
    r = mthp(enabled=[(64 * K, "always")], access="read-then-write")
    assert (r.read_faults, r.write_faults) == (262_144, 262_144)
    assert [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 262_144)]


def test_prepopulated_pages_force_fallback():
    r = mthp(enabled=[(64 * K, "always")], prepopulated_stride=1 * M)
    # Each 1M: page 0 is there already; pages 1..15 fault one by one; then 15 x 64K.
    assert r.faults == 1024 * (15 + 15)
    assert {f.size_bytes: f.count for f in r.folios} == {4 * K: 1024 * 15, 64 * K: 1024 * 15}


def test_sparse_touches_bloat():
    r = mthp(enabled=[(64 * K, "always")], touch_stride=1 * M)
    assert r.populated_bytes == 1024 * 64 * K and r.touched_bytes == 1024 * 4 * K and r.bloat == 16


def test_contpte_tlb_entries():
    """arm64 4K: 16 PTEs = 64K behind one entry; 16K: 128 = 2M; 64K: 32 = 2M."""
    assert mthp(load_profile("arm64-4k"), enabled=[(64 * K, "always")]).tlb_entries == 16_384
    assert mthp(load_profile("arm64-4k"), enabled=[(32 * K, "always")]).tlb_entries == 262_144
    assert mthp(load_profile("arm64-16k"), enabled=[(2 * M, "always")], vma_size=1 * G).tlb_entries == 512
    assert mthp(enabled=[(64 * K, "always")]).tlb_entries == 262_144  # x86-64: none by default
    amd = X86.model_copy(update={"tlb_coalesce_pages": 8})
    assert mthp(amd, enabled=[(64 * K, "always")]).tlb_entries == 262_144 // 8


def test_zero_fill_latency():
    r = mthp(madvise=True)
    assert r.largest_fault_clear_bytes == 2 * M
    assert r.largest_fault_clear_seconds == pytest.approx(2 * M / (10 * G))


def test_file_offset_alignment():
    r = mthp(memory="tmpfs", huge="always", file_offset=4 * K)
    assert r.fault_orders_bytes == [] and r.faults == 262_144
    assert "disagree in alignment" in r.notes[-1]
    r = mthp(memory="tmpfs", huge="always", file_offset=64 * K)  # tmpfs faults: PMD or base pages
    assert r.fault_orders_bytes == [] and r.faults == 262_144
    every = [(K << s, "always") for s in range(3, 12)]  # anonymous shmem: 8K .. 2M
    r = mthp(memory="shmem", shmem_enabled=every, file_offset=64 * K)
    assert r.fault_orders_bytes == [8 * K, 16 * K, 32 * K, 64 * K]


def test_one_tib_is_quick():
    r = mthp(vma_size=1 * T, enabled=[(64 * K, "always")], prepopulated_stride=1 * M)
    assert r.faults == 1 * T // M * 30


# --- agreement with the page-by-page simulation -------------------------------------------------

@settings(max_examples=60, deadline=None)  # the reference walks page by page (make test < 2 min)
@given(
    profile=st.sampled_from(["x86-64", "arm64-4k", "arm64-16k"]),
    memory=st.sampled_from(["anon", "shmem"]),
    sizes=st.sets(st.integers(2, 11), max_size=4),
    pmd_mode=st.sampled_from(["never", "always"]),
    start_pages=st.integers(0, 1500),
    vma_pages=st.integers(1, 5000),
    stride=st.sampled_from([1, 2, 3, 16, 100, 4096, 9000, 40000, 1 << 20]),
    pre=st.sampled_from([0, 7 * 4096, 1 << 20, 3 << 20]),
    rtw=st.booleans(),
    kernel=st.sampled_from(["6.12", "6.18"]),
)
def test_agrees_with_page_by_page_simulation(profile, memory, sizes, pmd_mode, start_pages, vma_pages, stride,
                                             pre, rtw, kernel):
    p = load_profile(profile)
    P = (p.pmd_size // p.page_size).bit_length() - 1
    orders = sorted(o for o in sizes if o < P)
    start = (1 << 30) + start_pages * p.page_size
    vma = vma_pages * p.page_size
    stride = stride * p.page_size // 4096 if stride < 4096 else stride
    # The reference takes every touch in turn: a byte stride over thousands of pages is millions of
    # them (20 s an example); sub-page strides keep to mappings it walks in well under a second.
    assume(vma // stride <= 200_000)
    kw = dict(vma_start=start, vma_size=vma, touch_stride=stride, prepopulated_stride=pre or None,
              access="read-then-write" if rtw else "write", memory=memory)
    if memory == "anon":
        kw["enabled"] = [(p.page_size << o, "always") for o in orders if o >= 2] + [(p.pmd_size, pmd_mode)]
    else:
        kw["shmem_enabled"] = [(p.page_size << o, "always") for o in orders if o <= 11] + [(p.pmd_size, pmd_mode)] \
            if P <= 11 else [(p.page_size << o, "always") for o in orders]
    r = compute_mthp(p, parse_release(kernel), **kw)
    allowed = {(b // p.page_size).bit_length() - 1 for b in r.fault_orders_bytes}
    ref = reference.mthp_naive(p, start, start + vma, stride, pre, allowed, memory != "anon", rtw,
                               parse_release(kernel).version >= (6, 13))
    assert (r.read_faults, r.write_faults) == (ref["read_faults"], ref["write_faults"])
    assert {f.size_bytes: f.count for f in r.folios} == ref["folios"]
    assert r.populated_bytes == ref["populated_bytes"]
    assert r.tlb_entries == ref["tlb_entries"]
    assert r.tables == ref["tables"]
    assert r.largest_fault_clear_bytes == ref["largest"]


def test_period_shortcut_agrees_with_a_full_walk():
    """Many PMD blocks: the periodic shortcut against the simulation over 64 MiB."""
    p = X86
    kw = dict(vma_start=G + 3 * 4096, vma_size=64 * M + 4096, touch_stride=12288, prepopulated_stride=3 * M + 4096,
              enabled=[(16 * K, "always"), (64 * K, "always")])
    r = compute_mthp(p, NEWEST, **kw)
    ref = reference.mthp_naive(p, kw["vma_start"], kw["vma_start"] + kw["vma_size"], 12288, 3 * M + 4096,
                               {2, 4}, False, False, True)
    assert r.write_faults == ref["write_faults"] and {f.size_bytes: f.count for f in r.folios} == ref["folios"]
    assert r.tlb_entries == ref["tlb_entries"] and r.tables == ref["tables"]


@pytest.mark.parametrize("kernel,length,aligned", [
    ("6.18", 3 * M, False), ("6.18", 4 * M, True), ("6.12", 3 * M, False),
    ("6.8", 3 * M, True), ("6.6", 4 * M, False), ("6.18", 1 * M, False),
])
def test_kernel_thp_alignment_of_anon_mmap(kernel, length, aligned):
    """On 6.12+ a 3 MiB anonymous mmap is not PMD-aligned, a 4 MiB one is (d4148aeab412)."""
    assert kernel_pmd_aligns_anon_mmap(X86, parse_release(kernel), length) is aligned
    assert not kernel_pmd_aligns_anon_mmap(load_profile("i386"), parse_release(kernel), length)


def test_unaligned_mmap_is_pointed_out():
    r = mthp(vma_size=3 * M, madvise=True)
    assert any("not placed PMD-aligned" in n and "d4148aeab412" in n for n in r.notes)
    assert not any("PMD-aligned" in n for n in mthp(vma_size=4 * M).notes)


def test_fault_around():
    """fault_around_bytes 65536 -> 16 pages on 4K; it maps nothing new on fresh memory."""
    assert fault_around_pages(X86) == 16 and fault_around_pages(load_profile("arm64-64k")) == 1
    r = mthp(memory="shmem", access="read-then-write", vma_size=64 * M)
    assert (r.read_faults, r.write_faults) == (16_384, 0)  # one read fault per page, mapped writable
    assert any(d.figure == "fault-around" and "16 pages" in d.formula for d in r.explain)


# --- release by release, each with its kernel commit ----------------------------------------


def test_tmpfs_faults_get_the_pmd_size_or_base_pages():
    # 1M tmpfs VMA on 6.14: the 2M PMD does not fit, so 256 faults of 4K (not one 1M folio).
    r = compute_mthp(X86, R("6.14"), memory="tmpfs", huge="always", vma_size=1 * M)
    assert r.faults == 256 and [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 256)]
    # A VMA 64K off a PMD boundary: no PMD fits either, 16,384 x 4K (not 1,024 x 64K).
    r = compute_mthp(X86, R("7.3"), memory="tmpfs", huge="always", vma_size=64 * M, vma_start=0x40010000)
    assert r.faults == 16_384 and r.fault_orders_bytes == []
    assert any("write() and fallocate()" in n for n in r.notes)


def test_sysv_shm_ignores_the_per_size_switches():
    kw = dict(shmem_enabled=[(64 * K, "always")], vma_size=64 * M)
    memfd = compute_mthp(X86, R("6.18"), memory="shmem", **kw)
    sysv = compute_mthp(X86, R("6.18"), memory="sysv", **kw)
    assert memfd.fault_orders_bytes == [64 * K] and memfd.faults == 1024
    assert sysv.fault_orders_bytes == [] and sysv.faults == 16_384
    assert any("ignore the per-size switches" in n for n in sysv.notes)
    # The top-level shmem_enabled (the internal shm mount's huge=) gives SysV the PMD size.
    assert compute_mthp(X86, R("6.18"), memory="sysv", huge="always", vma_size=64 * M).faults == 32


def test_thp_alignment_in_stable_branches():
    from hugecalc.calc.orders import kernel_pmd_aligns_anon_mmap

    # efa7df3e3bb5 is not in 6.6.y: the 6.6.18 bound rested on a misread (kernel review N7)
    assert not kernel_pmd_aligns_anon_mmap(X86, R("6.6.17"), 2 * M)
    assert not kernel_pmd_aligns_anon_mmap(X86, R("6.6.18"), 2 * M)
    assert kernel_pmd_aligns_anon_mmap(X86, R("6.7"), 2 * M)
    assert kernel_pmd_aligns_anon_mmap(X86, R("6.11.6"), 3 * M)  # any length >= PMD_SIZE
    assert not kernel_pmd_aligns_anon_mmap(X86, R("6.11.7"), 3 * M)  # only PMD multiples (d4148aeab412)


def test_arm64_contpte_only_from_6_9():
    arm = load_profile("arm64-4k")
    kw = dict(enabled=[(64 * K, "always")], vma_size=64 * M)
    assert compute_mthp(arm, R("6.8"), **kw).tlb_entries == 16_384
    assert compute_mthp(arm, R("6.9"), **kw).tlb_entries == 1024


def test_32_bit_alignment_and_map_stack():
    """4ef9ad19e176 (6.8) tests CONFIG_32BIT, which x86-32 never sets: i386 stayed aligned until the
    !CONFIG_64BIT fix (6.11; 6.10.3, 6.6.46) (kernel review N5). MAP_STACK -> VM_NOHUGEPAGE came with
    c4608d1bf7c6 in 6.8 and in 6.7.6 (N6)."""
    from hugecalc.calc.orders import kernel_pmd_aligns_anon_mmap

    pae = load_profile("i386-pae")  # PMD_SIZE 2M
    big = 64 * M
    for kernel, aligned in (("6.7", True), ("6.9", True), ("6.10.2", True), ("6.10.3", False), ("6.11", False)):
        assert kernel_pmd_aligns_anon_mmap(pae, R(kernel), big) is aligned, kernel
    notes = compute_mthp(pae, R("6.9"), enabled=[(2 * M, "always")], vma_size=big).notes
    assert not any("not placed PMD-aligned" in n for n in notes)
    stack = compute_mthp(X86, R("6.8"), madvise=True, stack=True, vma_size=64 * M)
    assert stack.fault_orders_bytes == [] and stack.faults == 16_384
    assert compute_mthp(X86, R("6.7.6"), top_level="always", stack=True, vma_size=64 * M).faults == 16_384
    assert compute_mthp(X86, R("6.7.5"), top_level="always", stack=True, vma_size=64 * M).faults == 32
    assert compute_mthp(X86, R("6.7"), madvise=True, stack=True, vma_size=64 * M).faults == 32


def test_a_write_to_the_huge_zero_page_got_a_thp_before_5_8_too():
    """do_huge_pmd_wp_page() before 3917c80280c9 (v5.8): 'goto alloc' gave a written huge zero page
    a PMD THP; 5.8-6.12 split it; 1ced09e0331f (v6.13) allocates again (kernel review N1)."""
    kw = dict(access="read-then-write", top_level="always", vma_size=64 * M)
    for kernel in ("4.19", "5.4", "5.7"):
        r = compute_mthp(X86, R(kernel), **kw)
        assert (r.read_faults, r.write_faults, r.tlb_entries) == (32, 32, 32), kernel
        assert [(f.size_bytes, f.count) for f in r.folios] == [(2 * M, 32)]
        assert r.page_table_bytes == 136 * K and r.largest_fault_clear_bytes == 2 * M
    r = compute_mthp(X86, R("5.8"), **kw)
    assert (r.read_faults, r.write_faults) == (32, 16_384) and [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 16_384)]


def test_no_per_size_switch_before_6_8_nor_for_shmem_before_6_11():
    """hugepage_vma_check() before 6.8 and shmem_is_huge() before 6.11 know the top-level switch
    only (kernel review N2): a capture's per-size modes are ignored there, the top level decides."""
    r = compute_mthp(X86, R("6.1"), enabled=[(2 * M, "always")], vma_size=64 * M)  # top level madvise, no madvise
    assert r.faults == 16_384 and [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 16_384)]
    assert any("no per-size THP switch" in n for n in r.notes)
    r = compute_mthp(X86, R("6.1"), enabled=[(2 * M, "never")], top_level="always", vma_size=64 * M)
    assert [(f.size_bytes, f.count) for f in r.folios] == [(2 * M, 32)]
    assert compute_mthp(X86, R("6.1"), madvise=True, vma_size=64 * M).faults == 32
    r = compute_mthp(X86, R("6.6"), memory="shmem", huge="never", shmem_enabled=[(2 * M, "always")], vma_size=64 * M)
    assert [(f.size_bytes, f.count) for f in r.folios] == [(4 * K, 16_384)]
    from hugecalc.calc.mthp import compare_sizes
    from hugecalc.calc.orders import PassShape

    rows = compare_sizes(X86, R("6.1"), PassShape(vma_size=64 * M)).sizes
    assert [(row.size_bytes, row.faults) for row in rows] == [(4 * K, 16_384), (2 * M, 32)]


def test_tmpfs_and_khugepaged_figures_say_their_release_is_unconfirmed():
    r = compute_mthp(X86, R("6.18"), memory="tmpfs", huge="always", vma_size=64 * M)
    assert any(n.startswith("release unconfirmed: 6.14") for n in r.notes)
    k = compute_mthp(X86, R("7.3"), enabled=[(64 * K, "always")], prepopulated_stride=M, khugepaged=True)
    assert any(n.startswith("release unconfirmed: 7.2") for n in k.notes)


def test_walks_are_shared_only_by_releases_that_walk_alike():
    """A walk and a pass's figures are kept per profile and what they read of the release (not the
    release itself: a fleet runs many kernels): each release's figures, computed with the others'
    kept, are the ones it gets alone."""
    import hugecalc.calc as calc
    from hugecalc.calc.mthp import pass_figures
    from hugecalc.calc.orders import PassShape, ThpSettings

    kernels = ["4.14", "4.19", "5.15", "6.1", "6.8", "6.9", "6.12", "6.13", "6.18", "7.1"]
    cases = [(p, R(k), PassShape(vma_size=6 * M + 20 * K, access=access), ThpSettings(top_level=top, enabled=enabled))
             for p in (X86, load_profile("arm64-4k")) for k in kernels for access in ("write", "read-then-write")
             for top, enabled in (("never", {}), ("always", {}), ("never", {64 * K: "always"}),
                                  ("madvise", {16 * K: "inherit", 64 * K: "always"}))]
    alone = []
    for case in cases:
        calc._BY_PROFILE.clear()
        alone.append(pass_figures(*case))
    calc._BY_PROFILE.clear()
    shared = [pass_figures(*case) for case in reversed(cases)][::-1]
    assert shared == alone
    assert len({str(f) for f in alone}) >= 6  # the releases and switches do change the figures
