"""khugepaged mTHP collapse under both designs: the v12+ and early rules."""

import numpy as np
import pytest

from hugecalc.calc.khugepaged import collapse_range, compute_khugepaged, max_none, parse_occupancy
from tests.passes import compute_mthp
from hugecalc.errors import InputError
from hugecalc.profiles import load_profile
from hugecalc.releases import parse_release

X86 = load_profile("x86-64")
K, M = 1 << 10, 1 << 20


@pytest.mark.parametrize("mpn,expected", [(511, 15), (0, 0), (255, None)])
def test_v12_limits(mpn, expected):
    """v12+, order 4 (64K): 511 -> 15 empty PTEs allowed; 0 -> 0; 255 -> skipped."""
    assert max_none("v12", 4, 9, mpn) == expected


@pytest.mark.parametrize("mpn,expected", [(511, 15), (256, 8)])
def test_scaled_limits(mpn, expected):
    """Early design, 511 >> 5 = 15; 256 >> 5 = 8."""
    assert max_none("scaled", 4, 9, mpn) == expected


def test_pmd_collapse_is_unchanged_by_design():
    assert max_none("v12", 9, 9, 255) == 255 == max_none("scaled", 9, 9, 255)


def bits(*ranges):
    b = np.zeros(512, dtype=bool)
    for lo, hi in ranges:
        b[lo:hi] = True
    return b


def test_collapse_walk_prefers_the_largest_qualifying_size():
    # 16 present PTEs at the start: with only 64K (order 4) enabled and max_ptes_none 0 -> one 64K.
    assert collapse_range(bits((0, 16)), "v12", {4}, 9, 0) == [4]
    # One PTE present: 511 lets the PMD collapse if enabled, else the 64K around it.
    assert collapse_range(bits((0, 1)), "v12", {4, 9}, 9, 511) == [9]
    assert collapse_range(bits((0, 1)), "v12", {4}, 9, 511) == [4]
    # Scaled with max_ptes_none 256: order 4 tolerates 8 empty -> 8 present needed.
    assert collapse_range(bits((0, 7)), "scaled", {4}, 9, 256) == []
    assert collapse_range(bits((0, 8)), "scaled", {4}, 9, 256) == [4]
    # Two separate islands collapse separately, lower address first.
    assert collapse_range(bits((0, 16), (256, 272)), "v12", {4}, 9, 0) == [4, 4]


def test_boundary_pair_like_the_selftest():
    """khugepaged.c selftest: NR - max_ptes_none - 1 present: no collapse; NR - max_ptes_none: collapse."""
    for mpn in (0, 64, 511):
        assert collapse_range(bits((0, 512 - mpn - 1)), "v12", {9}, 9, mpn) == []
        assert collapse_range(bits((0, 512 - mpn)), "v12", {9}, 9, mpn) == [9]


def test_v12_skips_mthp_for_other_values():
    designs = compute_khugepaged(X86, [(bits((0, 16)), 3)], {4}, 100)
    by = {d.design: d for d in designs}
    assert by["v12"].collapses == [] and "neither 0 nor 511" in by["v12"].note
    assert by["scaled"].collapses[0].count == 3  # 100 >> 5 = 3 empty allowed; 0 empty here


def test_from_the_prepopulated_pattern():
    r = compute_mthp(X86, parse_release(None), enabled=[(64 * K, "always")], prepopulated_stride=1 * M,
                     khugepaged=True)
    by = {d.design: d for d in r.khugepaged}
    assert by["v12"].pmd_ranges == 512
    assert [(c.size_bytes, c.count) for c in by["v12"].collapses] == [(64 * K, 1024)]  # 2 per 2M range
    assert "the v18 design" in r.notes[-1] and "release unconfirmed" in r.notes[-1]  # 7.2 and later
    old = compute_mthp(X86, parse_release("7.1"), enabled=[(64 * K, "always")], prepopulated_stride=1 * M,
                       khugepaged=True)
    assert "not in 7.1" in old.notes[-1]


def test_v18_treats_other_max_ptes_none_as_zero():
    by = {d.design: d for d in compute_khugepaged(X86, [(bits((0, 16)), 3)], {4}, 100)}
    assert by["v18"].collapses[0].count == 3 and "as with 0" in by["v18"].note  # 16 present of 16: 0 empty
    by = {d.design: d for d in compute_khugepaged(X86, [(bits((0, 15)), 3)], {4}, 100)}
    assert by["v18"].collapses == [] and by["scaled"].collapses[0].count == 3  # 1 empty: 0 allowed vs 3


def test_occupancy_file():
    occ = parse_occupancy("0x40000000: 0-15\n0x40200000: 0,2,4\n", X86)
    designs = compute_khugepaged(X86, occ, {4}, 0)
    assert [(c.size_bytes, c.count) for c in designs[1].collapses] == [(64 * K, 1)]
    assert designs[1].untouched_ranges == 1


@pytest.mark.parametrize("text,message", [("garbage", "expected 'ADDR: PTE indexes'"),
                                          ("0x1000: 0", "not aligned to the 2M PMD"),
                                          ("0x200000: 0-600", "outside 0..511"),
                                          ("0x200000: x", "not a PTE index"), ("", "lists no PMD range")])
def test_bad_occupancy(text, message):
    with pytest.raises(InputError, match=message):
        parse_occupancy(text, X86)


def test_needs_occupancy_and_anon():
    with pytest.raises(InputError, match="needs the occupancy"):
        compute_mthp(X86, parse_release(None), khugepaged=True)
    with pytest.raises(InputError, match="models anonymous memory"):
        compute_mthp(X86, parse_release(None), memory="shmem", khugepaged=True, prepopulated_stride=M)
