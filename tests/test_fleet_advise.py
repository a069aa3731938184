"""hugecalc fleet advise: every host's record advised as `advise --trace FILE` advises it, the
settings within the budget on all of them, the best, the hosts that differ; on a real
dask.distributed cluster (LocalCluster, worker processes) the same as in-process."""

import shutil

import pytest

from tests.records import brk, mmap, touch, write_events

K = 1 << 10


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Three hosts: the sqlite3 record, a 2 MiB arena written page by page, a heap grown 132K at a time."""
    folder = tmp_path_factory.mktemp("records")
    shutil.copy("tests/data/records/sqlite3.record", folder / "sqlite3.record")
    arena = 0x40000000
    write_events(folder / "arena.record", [mmap(arena, 2 << 20), *(touch(arena + p * 4 * K) for p in range(512))])
    heap, events = 0x10000000, [brk(0x10000000)]
    for step in range(1, 8):
        events += [brk(heap + step * 0x21000), *(touch(heap + p * 4 * K) for p in range((step - 1) * 33, step * 33))]
    write_events(folder / "heap.record", events)
    return folder


def _outcome(doc, label):
    return next(c for c in doc["candidates"] if label == c["label"] or label in c["same_as"])


def test_the_fleet_setting_is_within_budget_on_every_host_with_the_fewest_tlb_entries(run, records):
    fleet = run("fleet", "advise", str(records), "--max-bloat", "5%", "--profile", "arm64-4k", "--json").json
    assert fleet["hosts"] == 3 and fleet["hosts_failed"] == 0 and fleet["advised"]
    singles = {h["source"]: run("advise", "--trace", h["source"], "--max-bloat", "5%", "--profile", "arm64-4k",
                                "--json").json for h in fleet["hosts_advice"]}
    total = 0
    for host in fleet["hosts_advice"]:
        single = singles[host["source"]]
        assert host["advised"] == single["advised"]  # each host as `advise --trace FILE` advises it
        mine = _outcome(single, fleet["advised"])
        assert mine["within_budget"]
        total += mine["tlb_entries"]
    best = fleet["within_budget_everywhere"][0]
    assert best["label"] == fleet["advised"] and best["tlb_entries"] == total
    assert all(s["tlb_entries"] >= best["tlb_entries"] for s in fleet["within_budget_everywhere"])
    for label, n in fleet["disagree"].items():  # a host that differs has another outcome there
        assert n >= 1 and label != fleet["advised"]


def test_a_bad_record_costs_only_its_host(run, records, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(records, folder)
    (folder / "broken.record").write_bytes(b"PAR1 not a record")
    out = run("fleet", "advise", str(folder), "--json")
    assert out.exit_code == 1
    doc = out.json
    assert doc["hosts"] == 4 and doc["hosts_failed"] == 1 and doc["advised"]
    failed = [h for h in doc["hosts_advice"] if h["error"]]
    assert failed[0]["source"].endswith("broken.record") and "not a whole hugecalc record" in failed[0]["error"]


@pytest.mark.parametrize("args, message", [
    (["/nonexistent"], "no such file"),
    (["tests/data/bad_profiles"], "holds no record"),
    (["tests/data/records", "--max-bloat", "lots"], "is not a percentage"),
    (["tests/data/records", "--kernel", "6.99"], "no Linux 6.99"),
])
def test_bad_input_is_refused(run, args, message):
    out = run("fleet", "advise", *args)
    assert out.exit_code == 2 and out.stdout == "" and message in out.stderr


def test_local_cluster_equals_in_process(run, records):
    distributed = pytest.importorskip("distributed")
    args = ["fleet", "advise", str(records), "--max-bloat", "5%", "--json"]
    local = run(*args).json
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        remote = run(*args, "--scheduler", cluster.scheduler_address).json
    assert local == remote and local["hosts"] == 3


def test_captures_are_fleet_sources_too(run, tmp_path):
    """A capture's processes are advised from their snapshots, each as 'advise --host FILE --pid PID'
    advises it; a folder's records and captures are both sources; a capture without processes fails
    its host alone."""
    import json
    from pathlib import Path

    data = Path(__file__).parent / "data"
    folder = tmp_path / "fleet"
    folder.mkdir()
    shutil.copy(data / "records" / "sqlite3.record", folder / "db.record")
    capture = json.loads((data / "captures" / "x86-64-6.18.json").read_text())
    (folder / "app.json").write_text(json.dumps(capture))
    (folder / "bare.json").write_text(json.dumps({**capture, "processes": []}))
    doc = run("fleet", "advise", str(folder), "--max-bloat", "5%", "--json").json
    by = {h["source"]: h for h in doc["hosts_advice"]}
    assert doc["hosts"] == 2 + len(capture["processes"]) and doc["hosts_failed"] == 1
    assert "holds no process" in by[str(folder / "bare.json")]["error"]
    for p in capture["processes"]:
        one = run("advise", "--host", str(folder / "app.json"), "--pid", str(p["pid"]), "--max-bloat", "5%",
                  "--json").json
        assert by[f"{folder / 'app.json'}: pid {p['pid']} ({p['comm']})"]["advised"] == one["advised"]
    assert by[str(folder / "db.record")]["advised"] == run(
        "advise", "--trace", str(folder / "db.record"), "--max-bloat", "5%", "--json").json["advised"]
    assert any("snapshot of its present pages" in n for n in doc["notes"])
