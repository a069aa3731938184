"""HGM mapcount schemes against the thread's numbers and a simulation of the mapcount fields."""

import pytest

from hugecalc.calc.hgm import compute_hgm
from hugecalc.errors import InputError
from hugecalc.profiles import load_profile
from hugecalc.releases import parse_release
from tests.reference import MapcountSim

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
X86 = load_profile("x86-64")
NEWEST = parse_release(None)
R = parse_release


def hgm(path, schemes=("thp-like", "head-only", "hstate-level"), size=G, profile=X86, **kw):
    res = compute_hgm(profile, NEWEST, hugepage_size=size, path=path, schemes=list(schemes), **kw)
    return {s.scheme: s for s in res.schemes}


def test_issue_numbers():
    """The HGM v2 thread's table of atomics per scheme, derived from its rules."""
    direct = hgm([4 * K, G])
    assert direct["thp-like"].atomic_ops == 262_145
    assert direct["head-only"].atomic_ops == 262_145
    assert direct["hstate-level"].atomic_ops == 0
    via = hgm([4 * K, 2 * M, G])
    assert via["thp-like"].atomic_ops == 786_433
    assert via["head-only"].atomic_ops == 263_169
    assert via["hstate-level"].atomic_ops == 0
    assert [s.atomic_ops for s in via["thp-like"].steps] == [524_288, 262_145]
    assert [s.atomic_ops for s in via["head-only"].steps] == [262_656, 513]
    ratio = via["thp-like"].steps[1].atomic_ops / via["head-only"].steps[1].atomic_ops
    assert round(ratio) == 511


def test_time_model_calibration():
    """Thread: thp-like 4K->1G "~1 second for each 1G", "about 30% slower overall" than head-only."""
    direct = hgm([4 * K, G])
    assert direct["thp-like"].estimated_seconds == pytest.approx(1.0, rel=0.01)
    slower = direct["thp-like"].estimated_seconds / direct["head-only"].estimated_seconds
    assert slower == pytest.approx(1.30, abs=0.01)
    # ... and the 2M->1G step is "~100-500x bigger" with thp-like than head-only.
    via = hgm([4 * K, 2 * M, G])
    step = via["thp-like"].steps[1].estimated_seconds / via["head-only"].steps[1].estimated_seconds
    assert 100 <= step <= 500
    # The mmu_notifier window adds the secondary-MMU invalidation (10-30 ms in the thread).
    assert direct["thp-like"].blocked_seconds == pytest.approx(direct["thp-like"].estimated_seconds + 0.020)


def test_costs_change_the_estimate():
    cheap = X86.model_copy(update={"costs": X86.costs.model_copy(update={"cache_miss_ns": 0.0})})
    assert hgm([4 * K, G], profile=cheap)["thp-like"].estimated_seconds < hgm([4 * K, G])["thp-like"].estimated_seconds


def test_counters_hit():
    via = hgm([4 * K, 2 * M, G])
    thp, head = via["thp-like"].steps[0], via["head-only"].steps[0]
    assert thp.hot_atomic_ops == 0 and thp.cache_lines == 262_144  # spread, each subpage once
    assert head.spread_atomic_ops == 0 and head.cache_lines == 1  # one hot counter


@pytest.mark.parametrize("scheme", ["thp-like", "head-only", "hstate-level"])
@pytest.mark.parametrize(
    "profile,size,path",
    [("x86-64", G, [4 * K, G]), ("x86-64", G, [4 * K, 2 * M, G]), ("x86-64", G, [2 * M, G]),
     ("x86-64", 2 * M, [4 * K, 2 * M]), ("arm64-4k", 32 * M, [4 * K, 64 * K, 2 * M, 32 * M]),
     ("arm64-64k", 512 * M, [64 * K, 2 * M, 512 * M])],
)
@pytest.mark.parametrize("operation", ["collapse", "split"])
def test_agrees_with_mapcount_simulation(scheme, profile, size, path, operation):
    p = load_profile(profile)
    got = hgm(path, schemes=[scheme], size=size, profile=p, operation=operation)[scheme]
    sim = MapcountSim(scheme, size, p.page_size)
    order = path if operation == "collapse" else list(reversed(path))
    sim.replace(None, order[0])
    sim.ops = 0  # the starting mapping is not part of the operation
    step_ops = []
    for old, new in zip(order, order[1:]):
        before = sim.ops
        sim.replace(old, new)
        step_ops.append(sim.ops - before)
    assert [s.atomic_ops for s in got.steps] == step_ops
    assert got.atomic_ops == sim.ops
    # After the operation the counts describe exactly the final mapping.
    final = order[-1]
    if scheme == "thp-like" and final < size:
        assert set(sim.subpage) == {1}
    elif scheme != "hstate-level":
        assert sim.head == (size // final if scheme == "head-only" else 1)


@pytest.mark.parametrize("scheme", ["thp-like", "head-only", "hstate-level"])
@pytest.mark.parametrize("granularity", [4 * K, 2 * M, G])
def test_map_and_unmap_agree_with_simulation(scheme, granularity):
    for operation in ("map", "unmap"):
        got = hgm([granularity], schemes=[scheme], operation=operation)[scheme]
        sim = MapcountSim(scheme, G, 4 * K)
        if operation == "unmap":
            sim.replace(None, granularity)
            sim.ops = 0
            sim.replace(granularity, None)
        else:
            sim.replace(None, granularity)
        assert got.atomic_ops == sim.ops


def test_folio_reference_schemes():
    res = hgm([4 * K, G], schemes=["folio", "folio-no-page-mapcount"])
    # 512 PTE-table batches: 512 per-page _mapcount + 2 folio counters each; then 2 for the whole.
    assert res["folio"].atomic_ops == 512 * (512 + 2) + 2
    assert res["folio-no-page-mapcount"].atomic_ops == 512 * 2 + 2
    assert res["folio"].upstream and not hgm([4 * K, G])["thp-like"].upstream
    via = hgm([4 * K, 2 * M, G], schemes=["folio"])["folio"]
    assert via.atomic_ops is None and "never map part of a folio" in via.steps[0].note


def test_thp_like_costs_hvo():
    res = hgm([4 * K, G], guest_memory=T)
    assert res["thp-like"].freed_bytes_lost == 1024 * 4095 * 4096 and not res["thp-like"].optimizable
    assert res["head-only"].freed_bytes_lost == 0 and res["head-only"].optimizable
    assert res["thp-like"].guest_seconds == pytest.approx(1024 * res["thp-like"].blocked_seconds)


@pytest.mark.parametrize(
    "kw,message",
    [(dict(path=[G, 4 * K]), "must grow from small to large"),
     (dict(path=[4 * K, 2 * M]), "must end at the hugepage size 1G"),
     (dict(path=[4 * K, 3 * M, G]), "maps one of 4K, 2M, 1G"),
     (dict(path=[4 * K]), "at least two sizes"),
     (dict(path=[4 * K, G], schemes=["magic"]), "choose from"),
     (dict(path=[4 * K, G], guest_memory=3 * M), "not a whole number of 1G"),
     (dict(path=[4 * K, G], operation="map"), "give one size"),
     (dict(path=[4 * K, G], size=4 * M), "4M is not supported")],
)
def test_bad_inputs(kw, message):
    size = kw.pop("size", G)
    with pytest.raises(InputError, match=message):
        compute_hgm(X86, NEWEST, hugepage_size=size, **kw)


# --- release by release, each with its kernel commit ----------------------------------------


def test_hgm_folio_scheme_from_6_12():
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
