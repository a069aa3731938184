"""Page-table counts against a page-by-page reference, the kernel docs' figures and the rules."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from hugecalc import calc
from hugecalc.calc import _jit
from hugecalc.calc.pgtable import compute_pgtable
from hugecalc.calc.tables import compute_worst_case
from hugecalc.calc.touches import Touches, distinct_blocks, parse_touch_file
from hugecalc.errors import InputError
from hugecalc.profiles import bundled_profiles, load_profile
from hugecalc.releases import parse_release
from hugecalc.units import parse_size
from tests import reference

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
R = parse_release
NEWEST = R(None)
X86 = load_profile("x86-64")


def backings(profile):
    """anon, thp, and every hugetlb size up to 4G (arm64's contiguous-bit sizes included)."""
    from hugecalc.units import fmt_size

    out = ["anon"] + (["thp"] if "pmd" in [lvl.name for lvl in profile.levels[1:]] else [])
    return out + [f"hugetlb-{fmt_size(h.size)}" for h in profile.hugetlb if h.size <= 4 * G]


CASES = [(n, b) for n in sorted(bundled_profiles()) for b in backings(load_profile(n))]


@pytest.mark.parametrize("name,backing", CASES)
@pytest.mark.parametrize("stride_pages", [1, 3, 512, 700, 262144])
def test_stride_agrees_with_page_by_page_reference(name, backing, stride_pages):
    p = load_profile(name)
    hp = parse_size(backing.removeprefix("hugetlb-")) if backing.startswith("hugetlb-") else p.page_size
    stride = stride_pages * p.page_size
    # Several leaf tables' worth, but few enough touches for the page-by-page reference.
    vma_size = min(max(8 * hp, 64 * p.pmd_size), max(200_000 * stride, 2 * hp), 64 * G)
    vma_size -= vma_size % hp
    start = 5 * hp if backing.startswith("hugetlb") else 3 * p.pmd_size + 7 * p.page_size
    touched = list(range(start, start + vma_size, stride))
    res = compute_pgtable(p, NEWEST, vma_size=vma_size, vma_start=start, touches=Touches(stride=stride), backing=backing,
                          compare=False)
    tables, populated = reference.pgtable_naive(p, start, start + vma_size, touched, backing)
    assert res.tables == tables
    assert res.populated_bytes == populated
    assert res.page_table_bytes == sum(tables[lv.name] * lv.entries * lv.entry_bytes for lv in p.levels
                                       if lv.name in tables and lv.name != "p4d")


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(["x86-64", "arm64-16k", "x86-64-la57", "i386"]),
    backing=st.sampled_from(["anon", "thp"]),
    start_pages=st.integers(0, 5000),
    vsize_pages=st.integers(1, 20000),
    stride=st.integers(256, 3 << 21),
)
def test_stride_property(name, backing, start_pages, vsize_pages, stride):
    p = load_profile(name)
    if backing == "thp" and name == "i386":
        backing = "anon"
    start = (1 << 30) + start_pages * p.page_size
    vma_size = vsize_pages * p.page_size
    assume(vma_size // stride <= 100_000)  # the reference visits every touch (sub-page strides over 300 MiB: 1M+)
    touched = list(range(start, start + vma_size, stride))
    res = compute_pgtable(p, NEWEST, vma_size=vma_size, vma_start=start, touches=Touches(stride=stride), backing=backing,
                          compare=False)
    assert (res.tables, res.populated_bytes) == reference.pgtable_naive(p, start, start + vma_size, touched, backing)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(1, 1 << 23)), min_size=1, max_size=40),
       st.sampled_from(["anon", "thp"]))
def test_touch_file_agrees_with_reference(pairs, backing):
    p = load_profile("x86-64")
    start, vma_size = 1 << 39, 1 << 26
    lines = [f"{start + a:#x}-{min(start + a + n, start + vma_size):#x}" if n > 1 else f"{start + a:#x}"
             for a, n in pairs if a < vma_size]
    if not lines:
        return
    iv = parse_touch_file("\n".join(lines), start, start + vma_size)
    touched = sorted({addr for a, b in zip(*iv) for addr in
                      [max(x, a) for x in range(a - a % 4096, b, 4096)]})
    res = compute_pgtable(p, NEWEST, vma_size=vma_size, vma_start=start, touches=Touches(intervals=iv), backing=backing,
                          compare=False)
    assert (res.tables, res.populated_bytes) == reference.pgtable_naive(p, start, start + vma_size, touched, backing)


def testdistinct_blocks_jit_equals_python():
    s = np.array([0, 5000, 9000, 1 << 22], dtype=np.int64)
    e = np.array([10, 8200, 9001, (1 << 22) + 1], dtype=np.int64)
    for block in (1, 4096, 8192, 1 << 21):
        assert distinct_blocks(s, e, block, 0, 1 << 40) == getattr(distinct_blocks, "py_func", distinct_blocks)(s, e, block, 0, 1 << 40)


def test_fraction_is_reproducible_and_right_in_distribution():
    p = load_profile("x86-64")
    run = lambda seed, f=0.001: compute_pgtable(p, NEWEST, vma_size=4 * G, touches=Touches(fraction=f, seed=seed),
                                                compare=False)
    a, b, c = run(1), run(1), run(2)
    assert a == b and a.tables != c.tables
    # Each of the 2048 PTE tables is needed with probability 1 - (1 - f)^512 (i.i.d. pages).
    q = 1 - (1 - 0.001) ** 512
    n = 2048
    assert abs(a.tables["pte"] - n * q) < 5 * (n * q * (1 - q)) ** 0.5
    pages = 4 * G // 4096
    assert abs(a.populated_bytes / 4096 - pages * 0.001) < 5 * (pages * 0.001) ** 0.5
    full = run(0, 1.0)
    assert full.tables == compute_pgtable(p, NEWEST, vma_size=4 * G, compare=False).tables
    assert run(0, 0.0).page_table_bytes == 0


def test_fraction_thp_and_hugetlb():
    p = load_profile("x86-64")
    thp = compute_pgtable(p, NEWEST, vma_size=4 * G, touches=Touches(fraction=1.0), backing="thp", compare=False)
    assert thp.tables == {"pud": 1, "pmd": 4, "pte": 2048} and thp.populated_bytes == 4 * G
    h = compute_pgtable(p, NEWEST, vma_size=4 * G, touches=Touches(fraction=0.5, seed=3), backing="hugetlb-2M",
                        compare=False)
    assert h.tables == {"pud": 1, "pmd": 4} and h.populated_bytes == 4 * G  # every hugepage gets a touch


def test_worst_case_figures():
    """pte_ref.rst; real x86-64 user space is 2^47 - 4K: PTE 256 GiB, PMD 512 MiB, PUD 1 MiB."""
    x86 = {r.level: r.bytes for r in compute_worst_case(load_profile("x86-64"), NEWEST).levels}
    assert x86 == {"pud": 1 * M, "pmd": 512 * M, "pte": 256 * G}
    arm = {r.level: r.bytes for r in compute_worst_case(load_profile("arm64-4k"), NEWEST).levels}
    assert arm["pte"] == 512 * G and arm["pmd"] == 1 * G
    i386 = compute_worst_case(load_profile("i386"), NEWEST)
    assert {r.level: r.bytes for r in i386.levels} == {"pte": 3 * M}
    assert "768 entries used = 3 KiB" in i386.notes[0]
    assert {r["case"]: r["pte_bytes"] for r in i386.pte_ref}["32-bit, 3G user space, 4K"] == 3 * M


@pytest.mark.parametrize(
    "kernel,backing,after,pte_after",
    [("6.14", "anon", "dontneed", 0), ("6.13", "anon", "dontneed", 2048), ("6.18", "anon", "free", 2048),
     ("6.13", "thp", "dontneed", 0), ("6.18", "thp", "free", 2048)],
)
def test_after_madvise(kernel, backing, after, pte_after):
    res = compute_pgtable(load_profile("x86-64"), R(kernel), vma_size=4 * G, backing=backing, after=after, compare=False)
    assert {r.level: r.tables_after for r in res.levels} == {"pud": 1, "pmd": 4, "pte": pte_after}


def test_pt_reclaim_arches():
    """x86-64 only from 6.14; every arch with RCU table freeing (arm64, riscv64, ...) from 7.0."""
    for name in ("arm64-4k", "riscv64-sv48"):
        res = compute_pgtable(load_profile(name), R("6.19"), vma_size=1 * G, after="dontneed", compare=False)
        assert res.page_table_bytes_after == res.page_table_bytes
        res = compute_pgtable(load_profile(name), R("7.0"), vma_size=1 * G, after="dontneed", compare=False)
        assert res.tables["pte"] == 512 and {r.level: r.tables_after for r in res.levels}["pte"] == 0


def test_thp_edges_keep_their_tables_after_dontneed_without_reclaim():
    p = load_profile("x86-64")
    res = compute_pgtable(p, R("6.13"), vma_size=5 * M, vma_start=(1 << 30) + 1 * M, backing="thp", after="dontneed",
                          compare=False)
    # [1G+1M, 1G+6M): a 1M base-page edge, then two whole PMD ranges mapped by THPs.
    assert res.tables["pte"] == 3 and res.populated_bytes == 1 * M + 2 * (2 * M)
    assert {r.level: r.tables_after for r in res.levels}["pte"] == 1  # both THPs' deposits are freed


def test_hugetlb_pmd_sharing():
    p = load_profile("x86-64")
    res = compute_pgtable(p, NEWEST, vma_size=16 * G, backing="hugetlb-2M", shared_by=100, compare=False)
    assert res.tables == {"pud": 1, "pmd": 16}
    assert res.shared_page_table_bytes == 100 * 4096 + 16 * 4096  # PUD per process, PMD tables once


def test_comparison_with_2m_and_1g():
    res = compute_pgtable(load_profile("x86-64"), NEWEST, vma_size=64 * G, touches=Touches(stride=2 * M))
    by = {c.backing: c for c in res.compare}
    assert by["hugetlb-2M"].page_table_bytes == (1 + 64) * 4096
    assert by["hugetlb-1G"].page_table_bytes == 4096


def test_large_ranges_are_quick():
    p = load_profile("x86-64-la57")
    res = compute_pgtable(p, NEWEST, vma_size=128 * T, touches=Touches(stride=1 * G), compare=False)
    assert res.tables["pte"] == 128 * T // G and res.tables["pud"] == 256 and res.tables["p4d"] == 1
    # __p4d_alloc() accounts nothing: the P4D table is not in VmPTE.
    assert res.page_table_bytes == (131072 + 131072 + 256) * 4096


@pytest.mark.parametrize(
    "kw,message",
    [(dict(vma_size=128 * T), "does not fit in x86-64's user address space"),
     (dict(vma_size=0), "must be greater than zero"),
     (dict(vma_size=3 * M, backing="hugetlb-2M"), "must be multiples of the 2M hugepage"),
     (dict(vma_size=1 * G, backing="hugetlb-2M", after="free"), "fails with EINVAL"),
     (dict(vma_size=1 * G, shared_by=2), "applies to MAP_SHARED hugetlb"),
     (dict(vma_size=1 * G, backing="hugetlb-4M"), "4M is not supported"),
     (dict(vma_size=1 * G, backing="shm"), "use anon, thp or one of"),
     (dict(vma_size=1 * G, vma_start=123), "not aligned to the 4K page"),
     (dict(vma_size=1 * G, touches=Touches(fraction=1.5)), "must be between 0 and 1")],
)
def test_bad_inputs(kw, message):
    with pytest.raises(InputError, match=message):
        compute_pgtable(load_profile("x86-64"), NEWEST, compare=False, **kw)


@pytest.mark.parametrize("text,message", [("zzz", "line 1: address 'zzz' is not a size"),
                                          ("0x1000-0x800", "empty or reversed"),
                                          ("0x10", "outside the mapping"), ("# nothing", "lists no address")])
def test_bad_touch_files(text, message):
    with pytest.raises(InputError, match=message):
        parse_touch_file(text, 1 << 30, 2 << 30)


@pytest.mark.skipif(__import__("os").environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing compiles without the JIT")
def test_slow_first_compile_is_announced(monkeypatch):
    import numba

    said = []
    monkeypatch.setattr(calc, "on_slow_compile", said.append)
    monkeypatch.setattr(_jit, "COMPILE_NOTICE_SECONDS", 0.0)
    kernel = numba.njit(lambda x: x + 1)  # a fresh dispatcher: its first call compiles
    assert _jit.call(kernel, 41) == 42
    assert said and "compiling" in said[0]
    said.clear()
    assert _jit.call(kernel, 1) == 2 and not said  # compiled now: silent


@pytest.mark.skipif(__import__("os").environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing compiles without the JIT")
def test_a_long_run_from_a_warm_cache_is_not_announced(tmp_path):
    """The notice times the compile (or the cache load), never the run: a 1 s+ run loaded from the
    cache says nothing."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "spin.py").write_text(textwrap.dedent("""
        from hugecalc.calc._jit import jit

        @jit
        def spin(n):
            acc = 0
            for i in range(n):
                acc = (acc * 31 + i) % 1000003
            return acc
    """))
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(tmp_path)!r})
        from hugecalc import calc
        from hugecalc.calc import _jit
        _jit.COMPILE_NOTICE_SECONDS = 0.5
        calc.on_slow_compile = lambda m: print("NOTICE", m)
        import spin
        t = time.perf_counter()
        _jit.call(spin.spin, int(sys.argv[1]))
        print("RUN", time.perf_counter() - t)
    """)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", script, "1"], env=env, check=True, capture_output=True)  # compiles, caches
    warm = subprocess.run([sys.executable, "-c", script, "400000000"], env=env, check=True, capture_output=True,
                          text=True).stdout
    assert float(warm.split("RUN")[1]) > 1.0, "the run must outlast the notice threshold for this test to mean anything"
    assert "NOTICE" not in warm


def test_a_lazy_kernel_runs_without_the_jit():
    """NUMBA_DISABLE_JIT=1 (make test-nojit, debugging): a lazy kernel is a plain function, called as one."""
    import subprocess
    import sys

    script = ("from hugecalc import calc\nfrom hugecalc.calc import _jit\ncalc.on_slow_compile = print\n"
              "k = _jit.lazy_jit(lambda x: x + 1)\nprint(_jit.call(k, 41))")
    out = subprocess.run([sys.executable, "-c", script], env={**__import__("os").environ, "NUMBA_DISABLE_JIT": "1"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "42"


def test_vmpte_before_4_15_counts_pte_tables_only():
    """af5b0f6a09e4 (v4.15) made VmPTE count PMD and PUD tables too."""
    old = compute_pgtable(load_profile("x86-64"), R("4.14"), vma_size=64 * G, touches=Touches(stride=2 * M), compare=False)
    assert old.tables == {"pud": 1, "pmd": 64, "pte": 32768}
    assert old.page_table_bytes == 32768 * 4096
    assert [r.in_vmpte for r in old.levels] == [False, False, True]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(bundled_profiles())), vsize_pages=st.integers(1, 1 << 20),
       more_pages=st.integers(0, 1 << 20), stride_pages=st.integers(1, 1 << 12))
def test_page_tables_never_decrease_with_the_mapping(name, vsize_pages, more_pages, stride_pages):
    p = load_profile(name)
    start = p.pmd_size * 8
    room = (p.user_va_bytes - start) // p.page_size  # keep both mappings inside user space
    vsize_pages = min(vsize_pages, room)
    more_pages = min(more_pages, room - vsize_pages)
    stride = stride_pages * p.page_size
    small = compute_pgtable(p, NEWEST, vma_size=vsize_pages * p.page_size, vma_start=start,
                            touches=Touches(stride=stride), compare=False)
    big = compute_pgtable(p, NEWEST, vma_size=(vsize_pages + more_pages) * p.page_size, vma_start=start,
                          touches=Touches(stride=stride), compare=False)
    assert all(big.tables[k] >= v for k, v in small.tables.items())
    assert big.page_table_bytes >= small.page_table_bytes


def test_fraction_thp_deposits_are_freed_by_dontneed():
    """Without PT_RECLAIM, MADV_DONTNEED frees exactly the deposited tables of the THPs drawn;
    [1G-1M, 2G) is a 1M base-page edge and 512 whole PMD ranges."""
    p = load_profile("x86-64")
    kw = dict(vma_size=1 * G + 1 * M, vma_start=G - 1 * M, backing="thp", after="dontneed", compare=False)
    full = compute_pgtable(p, R("6.13"), touches=Touches(fraction=1.0), **kw)
    pte = {x.level: x for x in full.levels}["pte"]
    assert (pte.tables, pte.tables_after) == (513, 1)  # the edge's table stays
    sparse = compute_pgtable(p, R("6.13"), touches=Touches(fraction=0.001, seed=5), **kw)
    pte = {x.level: x for x in sparse.levels}["pte"]
    assert pte.tables_after <= 1 and pte.tables - pte.tables_after == (sparse.populated_bytes // (2 * M))


def test_fraction_with_a_top_level_leaf():
    """i386 4M hugetlb pages sit in the PGD itself: no table below it, only population."""
    r = compute_pgtable(load_profile("i386"), NEWEST, vma_size=64 * M, backing="hugetlb-4M",
                        touches=Touches(fraction=1.0), compare=False)
    assert r.tables == {} and r.page_table_bytes == 0 and r.populated_bytes == 64 * M


# --- release by release, each with its kernel commit ----------------------------------------


def test_pt_reclaim_keeps_the_edge_tables():
    def after(size, start):
        r = compute_pgtable(X86, R("6.18"), vma_size=size, vma_start=start, after="dontneed", compare=False)
        return r.page_table_bytes_after

    assert after(3 * M, 0x40100000) == 12 * K  # measured on 6.18.44: the first PTE table stays
    assert after(100 * M, 0x40001000) == 16 * K  # two edge tables
    assert after(64 * M, 0x40000000) == 8 * K  # aligned: every PTE table goes


def test_shared_hugetlb_tables_physically_and_unshared():
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


def test_pt_reclaim_on_32_bit_x86_from_7_0():
    """x86 selects MMU_GATHER_RCU_TABLE_FREE unconditionally (a37259732a7d, 6.15), so 7.0's
    PT_RECLAIM covers i386 too: MADV_DONTNEED of a 64M mapping frees every PTE table (N4)."""
    for name in ("i386-pae", "i386"):
        r = compute_pgtable(load_profile(name), R("7.0"), vma_size=64 * M, after="dontneed", compare=False)
        assert r.page_table_bytes > 0 and r.page_table_bytes_after == 0, name
    old = compute_pgtable(load_profile("i386-pae"), R("6.18"), vma_size=64 * M, after="dontneed", compare=False)
    assert old.page_table_bytes_after == old.page_table_bytes == 128 * K
