"""mthp --trace: a record replayed fault by fault, with the VMAs as they stood at each fault, by the
kernel's rules; each case worked out by hand from the rule it names. And bad records."""

import json
from pathlib import Path

import pytest

from tests.conftest import needs_root_and
from tests.records import brk, madvise, mmap, munmap, touch, write_events

K, M = 1 << 10, 1 << 20
HEAP = 0x10000000
MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTNEED = 14, 15, 4
MAP_STACK = 0x20000


def replay(run, path, *options):
    return run("mthp", "--trace", str(path), *options, "--json").json


def folios(run_doc):
    return {f["size_bytes"]: f["count"] for f in run_doc["folios"]}


def test_a_heap_that_grows_in_steps_gets_large_folios_only_where_it_had_grown(run, tmp_path):
    """alloc_anon_folio(): a 64K folio only where its whole aligned range is inside the VMA at the
    fault. A brk heap grown 132K at a time leaves the block at its end to base pages, and the pages
    faulted then keep the next block from ever getting one (pte_range_none())."""
    events = [brk(HEAP), brk(HEAP + 0x21000), *(touch(HEAP + p * 4 * K) for p in range(33)),
              brk(HEAP + 0x42000), *(touch(HEAP + p * 4 * K) for p in range(33, 66))]
    doc = replay(run, write_events(tmp_path / "heap.record", events), "--size", "64k")
    now, what_if = doc["runs"]
    assert folios(now) == {4 * K: 66} and now["faults"] == 66
    # pages 0-15, 16-31, 48-63 in 64K folios; 32 (the heap ended at 33), 33-47 (32 was there), 64, 65 alone
    assert folios(what_if) == {4 * K: 18, 64 * K: 3} and what_if["faults"] == 21
    assert what_if["populated_bytes"] == 66 * 4 * K and what_if["touched_bytes"] == 66 * 4 * K


def test_a_read_maps_the_zero_page_and_a_write_then_copies_it(run, tmp_path):
    """do_anonymous_page() maps the zero page on a read; wp_page_copy() copies it at order 0 on the write."""
    events = [mmap(0x20000000, 64 * K), touch(0x20000000, write=False), touch(0x20000000)]
    doc = replay(run, write_events(tmp_path / "rw.record", events), "--size", "64k")
    for r in doc["runs"]:
        assert (r["faults"], r["read_faults"], r["write_faults"], r["zero_page_mappings"]) == (2, 1, 1, 1)
        assert folios(r) == {4 * K: 1}  # a read first: no 64K folio, even where one would fit


def test_madv_hugepage_gets_the_pmd_and_its_other_pages_never_fault(run, tmp_path):
    """thp_vma_allowable_orders(): top level madvise (the capture's) allows the PMD size with
    MADV_HUGEPAGE; create_huge_pmd() maps 2M at the first write, the rest of the block is there."""
    base = 0x40000000
    events = [mmap(base, 4 * M), madvise(base, 4 * M, MADV_HUGEPAGE),
              *(touch(base + p * 4 * K) for p in range(1024))]
    doc = replay(run, write_events(tmp_path / "hp.record", events), "--top-level", "never")
    now, what_if = doc["runs"]
    assert folios(now) == {2 * M: 2} and now["faults"] == 2 and now["tables"]["pte"] == 2  # deposited tables
    assert folios(what_if) == {4 * K: 1024} and what_if["faults"] == 1024  # top level never: base pages


def test_madv_nohugepage_and_map_stack_keep_base_pages_under_thp_always(run, tmp_path):
    events = [mmap(0x40000000, 2 * M), madvise(0x40000000, 2 * M, MADV_NOHUGEPAGE), touch(0x40000000),
              mmap(0x80000000, 2 * M, flags=0x22 | MAP_STACK), touch(0x80000000),
              mmap(0xc0000000, 2 * M), touch(0xc0000000)]
    doc = replay(run, write_events(tmp_path / "no.record", events), "--top-level", "always")
    # VM_NOHUGEPAGE; MAP_STACK sets it too from 6.7.6/6.8 (c4608d1bf7c6); the third VMA gets its PMD
    assert folios(doc["runs"][-1]) == {4 * K: 2, 2 * M: 1}


def test_a_write_to_the_huge_zero_page_gets_a_pmd_thp_on_6_13_and_later(run, tmp_path):
    """do_huge_pmd_anonymous_page() maps the huge zero page on a read; do_huge_zero_wp_pmd() (v6.13)
    replaces it with a PMD THP on the write; before 6.13 the PMD is split and the page copied."""
    events = [mmap(0x40000000, 2 * M), touch(0x40000000, write=False), touch(0x40001000)]
    path = write_events(tmp_path / "hz.record", events)
    new = replay(run, path, "--top-level", "always")["runs"][-1]
    assert (new["faults"], new["zero_page_mappings"], folios(new)) == (2, 1, {2 * M: 1})
    old = replay(run, path, "--top-level", "always", "--kernel", "6.12")["runs"][-1]
    assert (old["faults"], folios(old)) == (2, {4 * K: 1})


def test_unmapped_and_zapped_pages_leave_the_end_state(run, tmp_path):
    base = 0x40000000
    events = [mmap(base, 1 * M), *(touch(base + p * 4 * K) for p in range(256)), munmap(base, 512 * K),
              madvise(base + 512 * K, 256 * K, MADV_DONTNEED)]
    r = replay(run, write_events(tmp_path / "z.record", events))["runs"][0]
    assert folios(r) == {4 * K: 64} and r["populated_bytes"] == 256 * K
    assert r["peak_populated_bytes"] == 1 * M


def test_adjacent_anonymous_mappings_merge_and_share_large_folios(run, tmp_path):
    """vma_merge_new_range(): a new anonymous mapping next to a compatible one joins it, so a 64K
    range across the two fits in the one VMA."""
    events = [mmap(0x40008000, 32 * K), mmap(0x40000000, 32 * K), touch(0x40000000)]
    r = replay(run, write_events(tmp_path / "m.record", events), "--size", "64k")["runs"][-1]
    assert folios(r) == {64 * K: 1}


@pytest.mark.parametrize("damage,message", [
    ("truncate", "not a whole hugecalc record"),
    ("not parquet", "not a whole hugecalc record"),
    ("missing", "no such record file"),
])
def test_a_damaged_record_is_refused(run, tmp_path, damage, message):
    path = write_events(tmp_path / "a.record", [mmap(0x40000000, 64 * K), touch(0x40000000)])
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not parquet":
        path.write_text("hello\n")
    else:
        path.unlink()
    r = run("mthp", "--trace", str(path))
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr and "--trace" in r.stderr


def test_a_record_from_a_newer_hugecalc_is_refused(run, tmp_path):
    import pyarrow.parquet as pq

    path = write_events(tmp_path / "new.record", [touch(0x40000000)])
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"hugecalc"])
    meta["schema_version"] = 99
    pq.write_table(table.replace_schema_metadata({"hugecalc": json.dumps(meta)}), path)
    r = run("mthp", "--trace", str(path))
    assert r.exit_code == 2 and "schema_version 99 is newer" in r.stderr


def test_a_process_the_record_does_not_hold(run, tmp_path):
    path = write_events(tmp_path / "p.record", [touch(0x40000000)])
    r = run("mthp", "--trace", str(path), "--pid", "1")
    assert r.exit_code == 2 and "process 1 has no event in the record" in r.stderr


def test_record_refuses_what_it_cannot_do(run, tmp_path):
    r = run("record", "-o", str(tmp_path / "x.record"))
    assert r.exit_code == 2 and "give the command to record" in r.stderr
    r = run("record", "-o", str(tmp_path / "no/such/x.record"), "--", "true")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_record_needs_root(run, tmp_path, monkeypatch):
    from hugecalc.machine import kernelfs

    monkeypatch.setattr(kernelfs, "is_root", lambda: False)
    r = run("record", "-o", str(tmp_path / "x.record"), "--", "true")
    assert r.exit_code == 2 and r.stdout == "" and "run it as root" in r.stderr
    assert not (tmp_path / "x.record").exists()


@pytest.mark.root
@needs_root_and("/sys/kernel/tracing")
def test_record_passes_the_command_on(run, tmp_path):
    """A command that does not exist is refused (nothing written); one that fails has its status
    passed on, and its record is written all the same."""
    r = run("record", "-o", str(tmp_path / "x.record"), "--", "no-such-command-hugecalc")
    assert r.exit_code == 2 and "cannot run; nothing recorded" in r.stderr and not (tmp_path / "x.record").exists()
    r = run("record", "-o", str(tmp_path / "y.record"), "--", "sh", "-c", "exit 3")
    assert r.exit_code == 3 and "exit status 3" in r.stderr and (tmp_path / "y.record").exists()
    assert not list(tmp_path.glob(".hugecalc-record.*")) and not list(Path("/sys/kernel/tracing/instances").glob("hugecalc-*"))


def test_a_program_that_disables_thp_for_itself_gets_base_pages(run, tmp_path):
    """prctl(PR_SET_THP_DISABLE) sets MMF_DISABLE_THP: vma_thp_disabled() for every VMA after it,
    kept across fork and exec (kernel review N9)."""
    from hugecalc.machine.trace import THP_DISABLE

    base = 0x40000000
    events = [mmap(base, 4 * M), touch(base), (THP_DISABLE, 1, 0, 0, 0, 0), touch(base + 2 * M)]
    r = replay(run, write_events(tmp_path / "off.record", events), "--top-level", "always")["runs"][-1]
    assert folios(r) == {2 * M: 1, 4 * K: 1}


def test_the_heap_ends_at_the_page_aligned_break(run, tmp_path):
    """brk() in mm/mmap.c: newbrk = PAGE_ALIGN(brk), so a break 100 bytes short of 64K still maps the
    whole 64K, and the 64K folio fits; shrinking unmaps only from PAGE_ALIGN(new break)."""
    events = [brk(HEAP), brk(HEAP + 64 * K - 100), touch(HEAP), brk(HEAP + 60 * K - 100), touch(HEAP + 56 * K)]
    doc = replay(run, write_events(tmp_path / "brk.record", events), "--size", "64k")
    now, what_if = doc["runs"]
    assert folios(now) == {4 * K: 2}
    # the 64K folio, then the shrink unmaps its last page (60K..64K) only; page 56K is still mapped
    assert folios(what_if) == {64 * K: 1} and what_if["faults"] == 1
    assert what_if["populated_bytes"] == 64 * K


def test_a_record_reads_as_the_capture_of_its_machine(run, tmp_path):
    """A record carries the machine as it was when it was made: --host and --profile take it as they
    take that capture, and --pid on it points to --trace."""
    import pyarrow.parquet as pq

    record = Path(__file__).parent / "data" / "records" / "sqlite3.record"
    capture = tmp_path / "cap.json"
    capture.write_text(json.dumps(json.loads(pq.read_schema(record).metadata[b"hugecalc"])["capture"]))
    for command, *options in (["vmemmap", "--pages", "1G"], ["mthp", "--size", "64k", "--vma-size", "8M"],
                              ["pgtable", "--vma-size", "1G"]):
        by_record = run(command, "--host", str(record), *options, "--json")
        assert by_record.exit_code == 0, by_record.stderr
        assert by_record.json == run(command, "--host", str(capture), *options, "--json").json
    assert run("mthp", "--profile", str(record), "--json").json == run("mthp", "--profile", str(capture), "--json").json
    r = run("mthp", "--host", str(record), "--pid", "7")
    assert r.exit_code == 2 and f"replay it with --trace {record} --pid 7" in r.stderr
    damaged = tmp_path / "half.record"
    damaged.write_bytes(record.read_bytes()[:-100])
    r = run("mthp", "--host", str(damaged))
    assert r.exit_code == 2 and r.stdout == "" and "not a whole hugecalc record" in r.stderr


def test_khugepaged_on_a_record_scans_the_end_state(run, tmp_path):
    """hpage_collapse_scan_pmd() on what the replay leaves: PMD ranges wholly inside an anonymous VMA
    with a PTE table; a range that is PMD-mapped already, or only partly inside the VMA, is not
    scanned; max_ptes_none bounds the empty PTEs (the zero page counts as empty)."""
    base = 0x40000000
    events = [mmap(base, 8 * M), madvise(base, 8 * M, MADV_HUGEPAGE),
              *(touch(base + p * 4 * K) for p in range(0, 512, 2)),  # range 0: half present
              *(touch(base + 2 * M + p * 4 * K) for p in range(8)),  # range 1: 8 pages
              *(touch(base + 4 * M + p * 4 * K, write=False) for p in range(40)),  # range 2: zero pages
              mmap(base + 8 * M + 1 * M, 2 * M), madvise(base + 9 * M, 2 * M, MADV_HUGEPAGE),
              touch(base + 10 * M)]  # a range the VMA covers in part only
    path = write_events(tmp_path / "k.record", events)
    doc = replay(run, path, "--top-level", "never", "--khugepaged", "--max-ptes-none", "256", "--kernel", "6.18")
    by = {d["design"]: d for d in doc["runs"][-1]["khugepaged"]}
    assert by["v18"]["pmd_ranges"] == 0  # under --top-level never, no VMA is khugepaged's
    doc = replay(run, path, "--top-level", "madvise", "--khugepaged", "--max-ptes-none", "256", "--kernel", "6.18")
    what_if = doc["runs"][-1]
    by = {d["design"]: d for d in what_if["khugepaged"]}
    # the faults: range 0's first write gets a PMD THP (MADV_HUGEPAGE), so it is not scanned; range 1
    # too; range 2's reads map the huge zero page. Nothing is left for khugepaged.
    assert {f["size_bytes"]: f["count"] for f in what_if["folios"]} == {2 * M: 2, 4 * K: 1}
    assert by["v18"]["pmd_ranges"] == 0
    no_thp_then = [mmap(base, 8 * M), *(touch(base + p * 4 * K) for p in range(0, 512, 2)),
                   *(touch(base + 2 * M + p * 4 * K) for p in range(8)),
                   *(touch(base + 4 * M + p * 4 * K, write=False) for p in range(40)),
                   madvise(base, 8 * M, MADV_HUGEPAGE)]  # asked for after the faults: khugepaged's job
    path = write_events(tmp_path / "late.record", no_thp_then)
    doc = replay(run, path, "--top-level", "madvise", "--khugepaged", "--max-ptes-none", "256", "--kernel", "6.18")
    for design in doc["runs"][-1]["khugepaged"]:
        # range 0: 256 empty <= 256 collapses; range 1: 504 empty > 256 stays; range 2: all zero pages
        assert design["pmd_ranges"] == 3 and design["untouched_ranges"] == 2
        assert design["collapses"] == [{"size_bytes": 2 * M, "count": 1}]
    assert any("khugepaged mTHP collapse is not in 6.18" in n for n in doc["notes"])
    r = run("mthp", "--trace", str(path), "--khugepaged", "--occupancy-file", str(path))
    assert r.exit_code == 2 and "khugepaged finds what the replay leaves" in r.stderr
    r = run("mthp", "--pid", "1", "--khugepaged")
    assert r.exit_code == 2 and r.stdout == "" and "record the program" in r.stderr


def test_the_write_bit_of_perf_faults_is_inferred_from_the_sequence():
    """perf's page-faults event has no read/write: with THP disabled for the program, a read maps the
    zero page and the write to it faults again, so a page that faults twice before anything could
    unmap it (munmap, madvise, ...) or make its next write copy-on-write (fork) was read first."""
    import numpy as np

    from hugecalc.machine.perffaults import infer_writes
    from hugecalc.machine.record import RESETS
    from hugecalc.machine.trace import COLUMNS, FAULT, MUNMAP, NEWTASK

    a, b = 0x40000000, 0x40001000
    rows = [(1, 7, FAULT, a), (2, 7, FAULT, b), (3, 7, FAULT, a),  # a: read, then written
            (4, 8, FAULT, b),  # another process: its own page
            (5, 7, MUNMAP, a), (6, 7, FAULT, a),  # after munmap: a new page, written
            (7, 7, NEWTASK, 9), (8, 7, FAULT, b)]  # after fork: copy-on-write of a written page
    columns = {c: np.zeros(len(rows), np.int64) for c in COLUMNS}
    for i, (t, tgid, kind, addr) in enumerate(rows):
        columns["t_ns"][i], columns["tgid"][i], columns["kind"][i], columns["a"][i] = t, tgid, kind, addr
    infer_writes(columns, 4096, FAULT, RESETS)
    faults = columns["kind"] == FAULT
    assert (columns["b"][faults] & 2).tolist() == [0, 2, 2, 2, 2, 2]


def test_record_asked_for_a_fault_source_the_kernel_lacks(run, tmp_path, monkeypatch):
    from hugecalc.machine import kernelfs, record

    real = kernelfs.exists
    monkeypatch.setattr(kernelfs, "is_root", lambda: True)
    monkeypatch.setattr(kernelfs, "exists", lambda p: "exceptions" not in str(p) and real(p))
    assert record.fault_source("auto") == "perf"
    r = run("record", "--fault-source", "tracepoint", "-o", str(tmp_path / "x.record"), "--", "true")
    assert r.exit_code == 1 and r.stdout == "" and "record with --fault-source perf" in r.stderr
    assert not (tmp_path / "x.record").exists()


@pytest.mark.parametrize("args,message", [
    (["--pid", "1", "--", "true"], "not both"),
    (["--duration", "30s", "--", "true"], "give --pid too"),
    (["--pid", "1", "--duration", "0s"], "not a duration of more than 0"),
    (["--pid", "1", "--duration", "2d"], "not a duration"),
    (["--pid", "1", "--duration", "１s"], "not a duration"),
    (["--pid", "1", "--duration", "nan"], "not a duration"),
    (["--pid", "0"], "0"),
])
def test_record_attach_refuses_bad_input(run, tmp_path, args, message):
    r = run("record", "-o", str(tmp_path / "x.record"), *args)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr, r.stderr
    assert not (tmp_path / "x.record").exists()


def test_an_attached_record_replays_its_start_then_its_events(run, tmp_path):
    """record --pid: the mappings and present pages at the attach (ATTACH_VMA, then a write per page
    in address order), then the events; the heap's break is where the heap ends, so a later brk()
    grows it from there."""
    from hugecalc.machine.trace import ATTACH_KINDS, ATTACH_VMA

    heap = 0x10000000
    events = [(ATTACH_VMA, heap, heap + 64 * K, 3, ATTACH_KINDS.index("heap"), 0),
              *(touch(heap + p * 4 * K) for p in range(16)),
              brk(heap + 192 * K), *(touch(heap + p * 4 * K) for p in range(16, 48))]
    doc = replay(run, write_events(tmp_path / "a.record", events, attached=True), "--size", "64k")
    # the heap grew from its end (64K) to 192K: pages 16-47 fill two aligned 64K blocks
    assert folios(doc["runs"][-1]) == {64 * K: 3}
    assert any("16 pages present when the record attached replay first" in n for n in doc["notes"]), doc["notes"]


def test_a_userfaultfd_registered_range_gets_base_pages(run, tmp_path):
    """alloc_anon_folio(): "if (unlikely(userfaultfd_armed(vma))) goto fallback"; a PMD fault goes to
    the handler (handle_userfault()), which fills base pages. Unregistered, THP applies again."""
    from hugecalc.machine.trace import UFFD

    base = 0x40000000
    events = [mmap(base, 8 * M), (UFFD, 0, 0, 0, 0, 0), (UFFD, base, base + 4 * M, 1, 0, 0),
              *(touch(base + p * 4 * K) for p in range(0, 1024, 256)),  # one page in each 1M of the range
              (UFFD, 0, 0, 0, 0, 0),  # unregistered: none from now on
              touch(base + 4 * M), touch(base + 6 * M)]
    doc = replay(run, write_events(tmp_path / "u.record", events), "--top-level", "always")
    assert folios(doc["runs"][-1]) == {4 * K: 4, 2 * M: 2}


def test_pgtable_after_madvise_of_the_end_state(run, tmp_path):
    """pgtable --trace --after dontneed: every anonymous mapping zapped at the end; with PT_RECLAIM
    (6.14 on x86-64) the PTE tables of the PMD ranges it covers whole go (zap_pte_range() ->
    try_to_free_pte()), the edge tables of an unaligned mapping stay; before it, and after
    MADV_FREE, every table stays."""
    base = 0x40000000
    events = [mmap(base, 8 * M), *(touch(base + p * 2 * M + 4 * K) for p in range(4)),
              mmap(base + 16 * M + 1 * M, 2 * M), touch(base + 17 * M), touch(base + 18 * M)]
    path = write_events(tmp_path / "t.record", events)

    def tables(*options):
        run_doc = run("pgtable", "--trace", str(path), *options, "--json").json["runs"][0]
        return run_doc["tables"]["pte"], (run_doc["tables_after"] or {}).get("pte")

    assert tables("--kernel", "6.18") == (6, None)
    assert tables("--after", "dontneed", "--kernel", "6.18") == (6, 2)  # the two edge tables of the 2M at 17M
    assert tables("--after", "dontneed", "--kernel", "6.13") == (6, 6)
    assert tables("--after", "free", "--kernel", "6.18") == (6, 6)
