"""The compiled replay (``hugecalc.calc.pages``) against the obvious model (``tests/trace_model.py``):
the same record, the same what-if, the same document, on a real program's record and on random
ones that mmap, brk, mremap, madvise, fork and fault in a few PMD blocks, so that folios collide."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hugecalc.calc import addrspace
from hugecalc.machine.trace import MPROTECT, MREMAP, NEWTASK
from tests.records import brk, madvise, mmap, munmap, touch, write_events
from tests.trace_model import ModelPages

SQLITE = "tests/data/records/sqlite3.record"
K, M = 1 << 10, 1 << 20
BASE = 0x40000000  # PMD-aligned: the random records live in [BASE, BASE + 6M)
WHAT_IFS = [["--size", "64k"], ["--top-level", "always"], ["--size", "16k", "--size", "64k", "--size", "2M"],
            ["--top-level", "always", "--kernel", "6.1"], ["--top-level", "always", "--profile", "arm64-4k"],
            ["--size", "64k", "--profile", "arm64-4k", "--kernel", "7.0"], ["--top-level", "madvise"]]


def replay(run, monkeypatch, path, options, pages, compiled):
    monkeypatch.setattr(addrspace, "Pages", pages)
    monkeypatch.setattr(addrspace, "use_compiled", lambda faults: compiled)
    result = run("mthp", "--trace", str(path), *options, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json


def same(run, monkeypatch, path, options):
    model = replay(run, monkeypatch, path, options, ModelPages, False)
    for compiled in (True, False):
        doc = replay(run, monkeypatch, path, options, addrspace.Pages, compiled)
        assert doc == model, f"compiled={compiled} {options}"
    return model


@pytest.mark.parametrize("options", WHAT_IFS, ids=" ".join)
def test_the_kernels_replay_a_real_program_as_the_model_does(run, monkeypatch, options):
    doc = same(run, monkeypatch, SQLITE, options)
    assert doc["runs"][-1]["faults"] > 0  # the record was replayed, not refused


def _addr(page):
    return BASE + page * 4 * K


events = st.one_of(
    st.builds(lambda p, n, f: mmap(_addr(p), n * 4 * K, flags=f), st.integers(0, 1400), st.integers(1, 600),
              st.sampled_from([0x22 | 0x10, 0x21 | 0x10, 0x22 | 0x10 | 0x20000])),
    st.builds(lambda p, n: munmap(_addr(p), n * 4 * K), st.integers(0, 1500), st.integers(1, 700)),
    st.builds(lambda p: brk(_addr(p) + 100), st.integers(1000, 1530)),
    st.builds(lambda p, n, a: madvise(_addr(p), n * 4 * K, a), st.integers(0, 1500), st.integers(1, 700),
              st.sampled_from([4, 14, 15, 10])),
    st.builds(lambda p, n, prot: (MPROTECT, _addr(p), n * 4 * K, prot, 0, 0), st.integers(0, 1500),
              st.integers(1, 300), st.sampled_from([1, 3])),
    st.builds(lambda p, n, m, q: (MREMAP, _addr(p), n * 4 * K, m * 4 * K, 3, _addr(q)), st.integers(0, 700),
              st.integers(1, 300), st.integers(1, 400), st.integers(0, 1100)),
    st.just((NEWTASK, 4243, 0, 0, 0, 0)),  # a fork: the child's copy must not touch the parent's pages
    st.lists(st.builds(lambda p, w: touch(_addr(p), w), st.integers(0, 1535), st.booleans()), min_size=1,
             max_size=40),
)


def _flatten(items):
    out = [brk(_addr(1000))]
    for item in items:
        out += item if isinstance(item, list) else [item]
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(events, min_size=1, max_size=40), what_if=st.sampled_from(WHAT_IFS))
def test_the_kernels_replay_random_records_as_the_model_does(run, monkeypatch, tmp_path_factory, items, what_if):
    path = write_events(tmp_path_factory.mktemp("r") / "random.record", _flatten(items))
    same(run, monkeypatch, path, what_if)
