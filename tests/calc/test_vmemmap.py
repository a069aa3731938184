"""HVO figures against the kernel docs' worked numbers and tests/reference.py."""

from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from hugecalc.calc.vmemmap import compute_vmemmap
from hugecalc.errors import InputError
from hugecalc.profiles import Arch, bundled_profiles, load_profile
from hugecalc.releases import parse_release
from tests import reference

K, M, G = 1 << 10, 1 << 20, 1 << 30
R = parse_release
X86 = load_profile("x86-64")


def row(profile, kernel, size, **kw):
    kw.setdefault("hugepage_count", 1)
    return compute_vmemmap(load_profile(profile) if isinstance(profile, str) else profile, R(kernel),
                           hugepage_sizes=[size], **kw).rows[0]


# Documentation/mm/vmemmap_dedup.rst sizes, 64-byte struct page:
# profile, size, struct pages, vmemmap bytes, vmemmap pages, freed (reserve 1), freed (reserve 2)
TABLE = [
    ("x86-64", 2 * M, 512, 32 * K, 8, 7, 6),
    ("x86-64", 1 * G, 262144, 16 * M, 4096, 4095, 4094),
    ("arm64-4k", 64 * K, 16, 1 * K, Fraction(1, 4), 0, 0),
    ("arm64-4k", 2 * M, 512, 32 * K, 8, 7, 6),
    ("arm64-4k", 32 * M, 8192, 512 * K, 128, 127, 126),
    ("arm64-4k", 1 * G, 262144, 16 * M, 4096, 4095, 4094),
    ("arm64-16k", 2 * M, 128, 8 * K, Fraction(1, 2), 0, 0),
    ("arm64-16k", 32 * M, 2048, 128 * K, 8, 7, 6),
    ("arm64-16k", 1 * G, 65536, 4 * M, 256, 255, 254),
    ("arm64-64k", 2 * M, 32, 2 * K, Fraction(1, 32), 0, 0),
    ("arm64-64k", 512 * M, 8192, 512 * K, 8, 7, 6),
    ("arm64-64k", 16 * G, 262144, 16 * M, 256, 255, 254),
]


def _as_x86(name):
    """The profile's geometry under x86-64's release rules: the arithmetic of both reserve eras."""
    return load_profile(name).model_copy(update={"arch": Arch.x86_64})


@pytest.mark.parametrize("profile,size,structs,vm_bytes,vm_pages,freed1,freed2", TABLE)
def test_kernel_facts_table(profile, size, structs, vm_bytes, vm_pages, freed1, freed2):
    native = "6.2" if profile.startswith("arm64") else "6.18"  # arm64 had HVO in 5.19..6.2
    r = row(profile, native, size)
    assert r.struct_pages_per_hugepage == structs
    assert r.vmemmap_bytes_per_hugepage == vm_bytes
    assert r.vmemmap_pages_per_hugepage == vm_pages
    assert r.freed_pages_per_hugepage == freed1
    assert r.optimizable == (freed1 > 0)
    if not r.optimizable:
        assert "not more than the 1 page HVO keeps" in r.reason
    old = row(_as_x86(profile), "5.15", size)
    assert old.freed_pages_per_hugepage == freed2
    assert old.reserved_pages_per_hugepage == (vm_pages - freed2)


def test_doc_numbers_x86_2m_1g():
    """vm.rst: "7 pages per 2MB HugeTLB page and 4095 pages per 1GB"; 6 and 4094 on 5.14-5.17."""
    assert row("x86-64", "6.18", 2 * M).freed_pages_per_hugepage == 7
    assert row("x86-64", "6.18", 1 * G).freed_pages_per_hugepage == 4095
    assert row("x86-64", "5.17", 2 * M).freed_pages_per_hugepage == 6
    assert row("x86-64", "5.14", 1 * G).freed_pages_per_hugepage == 4094
    assert row("x86-64", "5.18", 2 * M).freed_pages_per_hugepage == 7


def test_muchun_1024g_of_2m_on_5_14():
    """Muchun Song's reply to Barry Song: 524288 x 6 - 8192 PTE pages = 3,137,536 pages = 11.97 GiB."""
    r = compute_vmemmap(load_profile("x86-64"), R("5.14"), pool_bytes=1024 * G, hugepage_sizes=[2 * M]).rows[0]
    assert r.hugepages == 524288
    assert r.freed_bytes // 4096 == 3_145_728
    assert r.split_pte_tables == 8192
    assert r.saved_bytes // 4096 == 3_137_536
    assert round(r.saved_bytes / G, 2) == 11.97
    # Best case 12 GiB (no split), worst 10 GiB (one PTE page per hugepage: scattered)
    assert r.freed_bytes == 12 * G
    worst = compute_vmemmap(load_profile("x86-64"), R("5.14"), pool_bytes=1024 * G,
                            hugepage_sizes=[2 * M], layout="scattered").rows[0]
    assert worst.saved_bytes == 10 * G


def test_1g_pool_about_16gib():
    """Cover letter: 1024 GiB of 1G pages saves "~16GB"; 4094 freed - 8 split PTE pages = 4086 each."""
    r = compute_vmemmap(load_profile("x86-64"), R("5.14"), hugepage_count=1024, hugepage_sizes=[1 * G]).rows[0]
    assert r.split_pte_tables == 8 * 1024
    assert r.saved_bytes == 1024 * 4086 * 4096
    assert round(r.saved_bytes / G) == 16
    new = compute_vmemmap(load_profile("x86-64"), R("6.18"), hugepage_count=1, hugepage_sizes=[1 * G]).rows[0]
    assert new.freed_pages_per_hugepage - new.split_pte_tables == 4087


def test_reserve_two_to_one_gains_2gib_per_tib():
    """"Free the 2nd vmemmap page" cover letter: 2GB per 1TB of 2M HugeTLB."""
    pool = dict(pool_bytes=1024 * G, hugepage_sizes=[2 * M])
    old = compute_vmemmap(load_profile("x86-64"), R("5.17"), **pool).rows[0]
    new = compute_vmemmap(load_profile("x86-64"), R("5.18"), **pool).rows[0]
    assert new.saved_bytes - old.saved_bytes == 2 * G


def test_split_one_pte_table_per_128m_of_2m_pages():
    r = compute_vmemmap(load_profile("x86-64"), R("6.18"), pool_bytes=128 * M, hugepage_sizes=[2 * M]).rows[0]
    assert r.split_pte_tables == 1
    r = compute_vmemmap(load_profile("x86-64"), R("6.18"), pool_bytes=128 * M + 2 * M, hugepage_sizes=[2 * M]).rows[0]
    assert r.split_pte_tables == 2


@pytest.mark.parametrize("kernel", ["6.3", "6.18"])
def test_arm64_has_no_hvo_since_6_3(kernel):
    r = row("arm64-4k", kernel, 2 * M)
    assert not r.optimizable and r.freed_pages_per_hugepage == 0 and r.saved_bytes == 0
    assert "arm64 has no HVO in" in r.reason and "060a2c92d1b6" in r.reason and "5.19 to before 6.1.16" in r.reason


def test_release_without_hvo():
    r = row("x86-64", "5.13", 2 * M)
    assert not r.optimizable and "added in 5.14" in r.reason


def test_riscv_from_6_4():
    assert not row("riscv64-sv48", "6.3", 2 * M).optimizable
    assert row("riscv64-sv48", "6.4", 2 * M).freed_pages_per_hugepage == 7


def test_struct_page_not_power_of_two():
    r = row("x86-64", "6.18", 2 * M, struct_page_bytes=72)
    assert not r.optimizable and "72 is not a power of two" in r.reason
    assert r.vmemmap_bytes_per_hugepage == 512 * 72


def test_32_bit_refused():
    r = compute_vmemmap(load_profile("i386"), R("6.18"), hugepage_count=4).rows[0]
    assert not r.optimizable and "32-bit" in r.reason


def test_devdax_keeps_the_tail_page():
    """vmemmap_dedup.rst "Device DAX": 2M frees 6 of 8, 1G 4094 of 4096."""
    res = compute_vmemmap(load_profile("x86-64"), R("6.18"), hugepage_count=1, devdax=True)
    by_size = {r.hugepage_size_bytes: r for r in res.rows}
    assert by_size[2 * M].freed_pages_per_hugepage == 6
    assert by_size[1 * G].freed_pages_per_hugepage == 4094
    # Base-page population of a vmemmap x86 would otherwise PMD-map: one PTE table per 2M of
    # vmemmap, 8 per 1G page, exactly like the HVO split (kernel review F9).
    assert (by_size[2 * M].split_pte_tables, by_size[1 * G].split_pte_tables) == (1, 8)
    assert by_size[1 * G].saved_bytes == 4094 * 4096 - 8 * 4096
    assert all(r.restore_bytes == 0 for r in res.rows)
    with pytest.raises(InputError, match="device-DAX compound pages are"):
        compute_vmemmap(load_profile("x86-64"), R("6.18"), hugepage_count=1, devdax=True,
                        hugepage_sizes=[64 * K])


def test_restore_memory_is_what_was_freed():
    r = compute_vmemmap(load_profile("x86-64"), R("6.18"), hugepage_count=10, hugepage_sizes=[1 * G]).rows[0]
    assert r.restore_bytes_per_hugepage == 4095 * 4096
    assert r.restore_bytes == 10 * 4095 * 4096


def test_pool_not_multiple_of_size():
    with pytest.raises(InputError, match="not a whole number of 1G hugepages"):
        compute_vmemmap(load_profile("x86-64"), R("6.18"), pool_bytes=3 * G + 2 * M, hugepage_sizes=[1 * G])
    res = compute_vmemmap(load_profile("x86-64"), R("6.18"), pool_bytes=3 * G + 2 * M)
    assert [r.hugepages for r in res.rows] == [1537, 3]
    assert "rounded down to 3 hugepages" in res.notes[0]


def test_unsupported_size_is_input_error():
    with pytest.raises(InputError, match="3M is not supported by profile x86-64"):
        compute_vmemmap(load_profile("x86-64"), R("6.18"), hugepage_count=1, hugepage_sizes=[3 * M])


# --- agreement with the reference model, every profile -----------------------------------------

CASES = [(name, h.size) for name in sorted(bundled_profiles()) if load_profile(name).bits == 64
         for h in load_profile(name).hugetlb]


@pytest.mark.parametrize("name,size", CASES)
@pytest.mark.parametrize("sp", [32, 56, 64, 72, 80, 128])
def test_agrees_with_reference(name, size, sp):
    p = _as_x86(name)
    nr = size // p.page_size
    for kernel, ref in (("5.15", reference.hvo_freed_pages_v5_14), ("6.18", reference.hvo_freed_pages_v5_18)):
        r = row(p, kernel, size, struct_page_bytes=sp, hugepage_count=3)
        assert r.freed_pages_per_hugepage == ref(nr, sp, p.page_size)
        expected_split = 0
        if r.freed_pages_per_hugepage and p.vmemmap_pmd_mapped:
            expected_split = reference.split_pte_tables_walk(3, nr, sp, p.page_size, p.pmd_size, False)
        assert r.split_pte_tables == expected_split
    d = row(p, "6.18", size, struct_page_bytes=sp, devdax=True) if size in (p.pmd_size,) else None
    if d is not None:
        assert d.freed_pages_per_hugepage == reference.dax_freed_pages(nr, sp, p.page_size)


@settings(max_examples=60, deadline=None)
@given(
    hugepages=st.integers(min_value=1, max_value=300),
    size=st.sampled_from([2 * M, 1 * G]),
    layout=st.sampled_from(["packed", "scattered"]),
    kernel=st.sampled_from(["5.14", "5.18", "6.7", "6.18"]),
)
def test_split_and_saving_properties(hugepages, size, layout, kernel):
    if size == G:  # the reference walks 4,096 vmemmap pages a 1G hugepage: 64 of them are 16 vmemmap PMDs
        hugepages = hugepages % 64 + 1
    p = load_profile("x86-64")
    r = row(p, kernel, size, hugepage_count=hugepages, layout=layout)
    nr = size // 4096
    assert r.split_pte_tables == reference.split_pte_tables_walk(
        hugepages, nr, 64, 4096, p.pmd_size, layout == "scattered")
    assert 0 <= r.saved_bytes <= r.freed_bytes <= r.vmemmap_bytes
    more = row(p, kernel, size, hugepage_count=hugepages + 1, layout=layout)
    assert more.saved_bytes >= r.saved_bytes


def test_s390_lost_hvo_in_6_18_and_loongarch_has_it_from_6_2():
    """s390 HVO was disabled by 64e2f60f355e (in v6.18); LoongArch gained it in v6.2."""
    s390 = load_profile("x86-64").model_copy(update={"arch": Arch.s390, "vmemmap_pmd_mapped": False})
    assert row(s390, "6.17", 2 * M).freed_pages_per_hugepage == 7
    gone = row(s390, "6.18", 2 * M)
    assert not gone.optimizable and "s390 has no HVO in 6.18" in gone.reason and "64e2f60f355e" in gone.reason
    loong = load_profile("x86-64").model_copy(update={"arch": Arch.loongarch64})
    assert not row(loong, "6.1", 2 * M).optimizable and row(loong, "6.2", 2 * M).optimizable


# --- release by release, each with its kernel commit ----------------------------------------


def test_stable_sublevels():
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


def test_device_dax_from_5_19_on_its_architectures():
    assert not compute_vmemmap(X86, R("5.18"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert compute_vmemmap(X86, R("5.19"), hugepage_count=1, devdax=True).rows[0].freed_pages_per_hugepage == 6
    riscv = load_profile("riscv64-sv48")
    assert compute_vmemmap(riscv, R("6.12"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert not compute_vmemmap(riscv, R("6.6"), hugepage_count=1, devdax=True).rows[0].optimizable


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


def test_struct_page_not_64_is_said():
    r = compute_vmemmap(X86, R("6.18"), pool_bytes=1 << 40, struct_page_bytes=80)
    assert not any(row.optimizable for row in r.rows)
    assert any("not the usual 64" in n and "pahole" in n for n in r.notes)
    assert not any("usual 64" in n for n in compute_vmemmap(X86, R("6.18"), pool_bytes=1 << 40).notes)


def test_s390_hvo_left_6_6_and_6_17_too():
    """64e2f60f355e ("s390: Disable ARCH_WANT_OPTIMIZE_HUGETLB_VMEMMAP") is in 6.6.117, 6.12.58 and
    6.17.8 as well as 6.18 (kernel review N3)."""
    s390 = load_profile("x86-64").model_copy(update={"arch": Arch.s390})

    def optimizable(kernel):
        return compute_vmemmap(s390, R(kernel), hugepage_count=1, hugepage_sizes=[2 * M]).rows[0].optimizable

    assert optimizable("6.6.116") and not optimizable("6.6.117")
    assert optimizable("6.17.7") and not optimizable("6.17.8")
    assert optimizable("6.12.57") and not optimizable("6.12.58") and not optimizable("6.18")


def test_device_dax_dedup_was_not_arch_gated_before_6_3():
    """4917f55b4ef9 (5.19) ran on every ZONE_DEVICE arch; 6.3-6.4 the HVO symbol gated it, from 6.5
    the DAX symbol; s390 and loongarch have no device-DAX (kernel review N8)."""
    arm = load_profile("arm64-4k")
    assert compute_vmemmap(arm, R("6.1.20"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert not compute_vmemmap(arm, R("6.3"), hugepage_count=1, devdax=True).rows[0].optimizable
    ppc = load_profile("x86-64").model_copy(update={"arch": Arch.ppc64})
    assert compute_vmemmap(ppc, R("6.1"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert not compute_vmemmap(ppc, R("6.4"), hugepage_count=1, devdax=True).rows[0].optimizable
    assert compute_vmemmap(ppc, R("6.5"), hugepage_count=1, devdax=True).rows[0].optimizable
    s390 = load_profile("x86-64").model_copy(update={"arch": Arch.s390})
    assert not compute_vmemmap(s390, R("6.2"), hugepage_count=1, devdax=True).rows[0].optimizable


def test_memmap_on_memory_makes_the_saving_an_upper_bound():
    """From 6.1 a hugepage whose vmemmap is self-hosted (memory hot-plugged with
    memory_hotplug.memmap_on_memory) is not optimized: vmemmap_should_optimize() (kernel review N10).
    Before 6.1 the sysctl was not registered at all with it on."""
    from hugecalc.calc.hvo_now import compute_hvo_now

    on = compute_hvo_now(X86, R("6.18"), [(2 * M, 512)], 1, 8 << 30, memmap_on_memory=True)
    assert any("memmap_on_memory is on" in n and "at most" in n for n in on.notes)
    off = compute_hvo_now(X86, R("6.18"), [(2 * M, 512)], 1, 8 << 30, memmap_on_memory=False)
    assert not any("memmap_on_memory" in n for n in off.notes)
    missing = compute_hvo_now(X86, R("6.18"), [(2 * M, 512)], None, 8 << 30)
    assert any("from 6.1 memmap_on_memory no longer removes it" in n for n in missing.notes)
    old = compute_hvo_now(X86, R("6.0"), [(2 * M, 512)], None, 8 << 30)
    assert any("or memmap_on_memory" in n for n in old.notes)


def test_figures_on_a_release_that_is_unconfirmed_say_so_under_the_table():
    """Kernel review N12: a rule whose first release is not confirmed (the shared tail page, 7.1)
    is named in the notes, not only in --explain; a release before it has no such note."""
    new = compute_vmemmap(X86, R("7.1"), pool_bytes=1 << 40)
    assert any(n.startswith("release unconfirmed: 7.1") for n in new.notes)
    assert not any("release unconfirmed" in n for n in compute_vmemmap(X86, R("7.0"), pool_bytes=1 << 40).notes)


def test_hugepages_in_hot_plugged_memory_are_left_out_of_the_saving():
    """N10: with memmap_on_memory, a hugepage in hot-plugged memory keeps its vmemmap (6.1+): the
    saving is that of the other hugepages, as compute_vmemmap gives it for them."""
    from hugecalc.calc.hvo_now import compute_hvo_now
    from hugecalc.calc.vmemmap import compute_vmemmap

    found = (8 << 30, {2 * M: 100})
    r = compute_hvo_now(X86, R("6.18"), [(2 * M, 512)], 1, 8 << 30, memmap_on_memory=True, hotplugged=found)
    row = r.rows[0]
    assert row.self_hosted_hugepages == 100
    assert row.saved_now_bytes == compute_vmemmap(X86, R("6.18"), hugepage_count=412, hugepage_sizes=[2 * M]).rows[0].saved_bytes
    assert any("100 of the pools' hugepages sit in the 8 GiB a driver hot-plugged" in n for n in r.notes)
    assert not any("at most" in n for n in r.notes)
    # memmap_on_memory off, or before 6.1: every hugepage is optimized
    off = compute_hvo_now(X86, R("6.18"), [(2 * M, 512)], 1, 8 << 30, memmap_on_memory=False, hotplugged=found)
    assert off.rows[0].self_hosted_hugepages == 0
    assert compute_hvo_now(X86, R("6.0"), [(2 * M, 512)], 1, 8 << 30, memmap_on_memory=True,
                           hotplugged=found).rows[0].self_hosted_hugepages == 0


def test_hugepages_are_found_in_hot_plugged_ranges_from_kpageflags():
    import numpy as np

    from hugecalc.machine.hotplug import KPF_COMPOUND_HEAD, KPF_HUGE, driver_managed_ram, hugepages_by_size

    iomem = ("00001000-0009fbff : System RAM\n100000000-13fffffff : System RAM (virtio_mem)\n"
             "  100000000-100ffffff : Kernel code\n140000000-17fffffff : System RAM (kmem)\n")
    assert driver_managed_ram(iomem) == [(0x100000000, 0x140000000, "virtio_mem"), (0x140000000, 0x180000000, "kmem")]
    huge, head = np.uint64(1 << KPF_HUGE), np.uint64(1 << KPF_COMPOUND_HEAD)
    flags = np.zeros(2048, np.uint64)
    flags[0:512] = huge  # a 2M hugepage: head and 511 tails
    flags[0] |= head
    flags[512:520] = 1  # ordinary pages
    flags[1024:1536] = huge  # another
    flags[1024] |= head
    assert hugepages_by_size(flags, 4096) == {2 * M: 2}
    assert hugepages_by_size(np.zeros(8, np.uint64), 4096) == {}


def test_riscv_64k_hugetlb_needs_svnapot():
    """§4: NAPOT hugetlb (64K on riscv) exists only where the hart has Svnapot: the profile says so,
    and a pool of that size carries the note."""
    riscv = load_profile("riscv64-sv48")
    assert riscv.hugetlb_size(64 << 10).requires == "Svnapot"
    r = compute_vmemmap(riscv, R("6.12"), pool_bytes=1 << 30, hugepage_sizes=[64 << 10])
    assert any("only where the CPU has Svnapot" in n for n in r.notes)
    assert not any("Svnapot" in n for n in compute_vmemmap(riscv, R("6.12"), pool_bytes=1 << 30,
                                                              hugepage_sizes=[2 << 20]).notes)
