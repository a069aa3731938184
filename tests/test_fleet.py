"""`hugecalc fleet` on synthetic and real captures, in-process and on a real dask.distributed
LocalCluster with worker processes: the two must agree exactly."""

import importlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

CAPTURES = Path(__file__).parent / "data" / "captures"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from hugecalc.fleet.synth import write_synthetic

    folder = tmp_path_factory.mktemp("fleet")
    write_synthetic(120, 7, str(folder / "hosts"))
    write_synthetic(80, 8, str(folder / "more.jsonl"))
    return folder


def test_synth_is_reproducible(tmp_path, run):
    for name in ("a", "b"):
        assert run("fleet", "synth", "--hosts", "5", "--seed", "3", "--output", str(tmp_path / name)).exit_code == 0
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_text() == (tmp_path / "b" / f.name).read_text()
    from hugecalc.machine.capture import load_capture

    capture = load_capture(tmp_path / "a" / "host-000000.json")  # a valid capture, every calculator takes it
    assert run("vmemmap", "--host", str(tmp_path / "a" / "host-000000.json"), "--json").exit_code == 0
    assert capture.processes and capture.pools


def test_fleet_vmemmap_groups_and_totals(run, synthetic):
    doc = run("fleet", "vmemmap", str(synthetic / "hosts"), str(synthetic / "more.jsonl"), "--by", "arch",
              "--json").json
    assert doc["hosts"] == 200 and doc["hosts_failed"] == 0
    groups = {g["group"].get("arch", "all"): g for g in doc["groups"]}
    assert set(groups) == {"x86_64", "aarch64", "all"}
    assert groups["all"]["hosts"] == groups["x86_64"]["hosts"] + groups["aarch64"]["hosts"]
    for metric in ("pool_bytes", "gain_bytes"):
        total = groups["all"]["metrics"][metric]
        assert total["sum"] == sum(groups[a]["metrics"][metric]["sum"] for a in ("x86_64", "aarch64"))
        assert total["p50"] <= total["p95"] <= total["p99"]


def test_per_host_equals_host_file(run, synthetic, tmp_path):
    """Per host, fleet gives what `--host FILE` gives."""
    import pyarrow.parquet as pq

    out = tmp_path / "rows.parquet"
    r = run("fleet", "mthp", str(synthetic / "hosts"), "--size", "64k", "--output", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 120
    skipped = [row for row in rows if row["skipped"]]
    # arm64 64K pages, and kernels before 6.8, which have no per-size switch
    assert skipped and all("64K is the base page" in row["skipped"] or "has none (hugepages-<size>kB/enabled came "
                           "in 6.8)" in row["skipped"] for row in skipped)
    assert any("came in 6.8" in row["skipped"] for row in skipped) and any("base page" in row["skipped"] for row in skipped)
    assert r.json["hosts"] + r.json["hosts_skipped"] == 120
    for row in [row for row in rows if not row["skipped"]][:5]:
        doc = run("mthp", "--host", row["source"], "--size", "64k", "--json").json
        assert row["faults_now"] == doc["now"]["faults"]
        assert row["faults_what_if"] == (doc["what_if"] or doc["now"])["faults"]


def test_skipped_hosts_counted_whole_listed_a_few_per_reason(run, synthetic, tmp_path, monkeypatch):
    """Hosts a what-if does not apply to: every one counted, by reason; by name only the first few of
    each reason (the JSON and the run's memory do not grow with them); --output has every host's reason."""
    import pyarrow.parquet as pq

    from hugecalc.fleet import engine

    monkeypatch.setattr(engine, "SKIPPED_LISTED", 3)
    out = tmp_path / "rows.parquet"
    doc = run("fleet", "mthp", str(synthetic / "hosts"), str(synthetic / "more.jsonl"), "--size", "64k",
              "--output", str(out), "--json").json
    rows = pq.read_table(out).to_pylist()
    counts: dict = {}
    for row in rows:
        if row["skipped"]:
            counts.setdefault(row["skipped"], []).append(row["source"])
    assert doc["hosts_skipped"] == sum(map(len, counts.values())) > 3 * len(counts)
    assert doc["skipped_reasons"] == sorted(({"reason": k, "hosts": len(v)} for k, v in counts.items()),
                                            key=lambda x: -x["hosts"])
    assert sorted((x["reason"], x["source"]) for x in doc["skipped"]) == sorted(
        (k, source) for k, v in counts.items() for source in v[:3])  # the first of each reason, in source order


def test_bad_hosts_are_listed_and_left_out(run, synthetic, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(synthetic / "hosts", folder)
    (folder / "host-bad1.json").write_text("{truncated")
    newer = json.loads((folder / "host-000000.json").read_text())
    newer["schema_version"] = 99
    (folder / "host-bad2.json").write_text(json.dumps(newer))
    r = run("fleet", "vmemmap", str(folder), "--json")
    assert r.exit_code == 1
    doc = r.json
    assert doc["hosts"] == 120 and doc["hosts_failed"] == 2
    assert {Path(f["source"]).name for f in doc["failed"]} == {"host-bad1.json", "host-bad2.json"}


def test_bad_fleet_input(run, tmp_path):
    for args, message in ((["fleet", "vmemmap", str(tmp_path / "none")], "no such file"),
                          (["fleet", "vmemmap", str(tmp_path / "*.json")], "matches no file"),
                          (["fleet", "vmemmap", str(CAPTURES), "--kernel", "5.25"], "there is no Linux 5.25"),
                          (["fleet", "vmemmap", str(CAPTURES), "--output", "x.csv"], ".parquet")):
        r = run(*args)
        assert r.exit_code == 2 and r.stdout == "" and message in r.stderr, (args, r.stderr)


def test_real_captures_and_a_kernel_what_if(run):
    doc = run("fleet", "pgtable", str(CAPTURES), "--vma-size", "100M", "--vma-start", "0x40010000", "--after",
              "dontneed", "--by", "profile", "--json").json
    assert doc["hosts"] == 3
    by = {g["group"].get("profile"): g for g in doc["groups"]}
    assert by["host:vm"]["metrics"]["page_table_bytes_after"]["sum"] == 16384  # x86-64 6.18: edge tables stay
    def arm64_after(*kernel):
        doc = run("fleet", "pgtable", str(CAPTURES), "--vma-size", "100M", "--after", "dontneed", "--by", "profile",
                  *kernel, "--json").json
        metrics = {g["group"].get("profile"): g["metrics"] for g in doc["groups"]}["host:synthetic-arm64"]
        return metrics["page_table_bytes"]["sum"], metrics["page_table_bytes_after"]["sum"]

    tables, after = arm64_after()  # its own 6.8: no PT_RECLAIM on arm64
    assert after == tables
    assert arm64_after("--kernel", "7.0") == (tables, 8192)  # 7.0: the 50 PTE tables go, PMD and PUD stay


def test_local_cluster_equals_in_process(run, synthetic, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from hugecalc.fleet import engine

    cut = engine.partitions
    monkeypatch.setattr(engine, "partitions", lambda s: cut(s, 37))  # many tasks, one cut inside the JSON Lines
    args = ["fleet", "vmemmap", str(synthetic / "hosts"), str(synthetic / "more.jsonl"), "--by", "kernel", "--json"]
    local = run(*args).json
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        remote = run(*args, "--scheduler", cluster.scheduler_address).json
        mthp_local = run("fleet", "mthp", str(synthetic / "hosts"), "--size", "64k", "--json").json
        mthp_remote = run("fleet", "mthp", str(synthetic / "hosts"), "--size", "64k", "--json",
                          "--scheduler", cluster.scheduler_address).json
    for a, b in ((local, remote), (mthp_local, mthp_remote)):
        a["inputs"].pop("scheduler"), b["inputs"].pop("scheduler")
        assert a == b
    assert local["hosts"] == 200


def test_a_parquet_table_of_captures(run, synthetic, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = (synthetic / "more.jsonl").read_text().splitlines()
    pq.write_table(pa.table({"capture": lines}), tmp_path / "captures.parquet")
    a = run("fleet", "vmemmap", str(synthetic / "more.jsonl"), "--by", "arch", "--json").json
    b = run("fleet", "vmemmap", str(tmp_path / "captures.parquet"), "--by", "arch", "--json").json
    assert a["hosts"] == b["hosts"] == 80 and a["groups"] == b["groups"]


def test_fleet_explains_per_host_and_over_hosts(run):
    doc = run("fleet", "vmemmap", str(CAPTURES), "--explain", "--json").json
    per_host, over = doc["explain"]
    assert per_host["scope"] == "per host" and "compute_hvo_now()" in per_host["rule"]
    total = doc["groups"][-1]
    s = total["metrics"]["pool_bytes"]
    assert over["scope"] == "over hosts"
    assert f"sum of {total['hosts']:,} hosts = {s['sum']:,}" in over["formula"]
    r = run("fleet", "vmemmap", str(CAPTURES), "--explain")
    assert "How each figure was derived" in r.stdout and "numpy.percentile" in r.stdout


@pytest.mark.parametrize("args", [["vmemmap"], ["mthp", "--size", "64k"], ["pgtable", "--vma-size", "1G"]])
@pytest.mark.parametrize("by", [[], ["--by", "arch"], ["--by", "arch", "--by", "kernel"], ["--by", "profile"]])
def test_fleet_tables_never_cut_a_number(fleet200, args, by):
    """Every figure of every group, at every width from 60 to 160 columns: whole in the table."""
    from hugecalc.units import fmt_bytes

    from click.testing import CliRunner

    from hugecalc.cli import cli

    base = ["fleet", args[0], str(fleet200), *args[1:], *by]
    doc = json.loads(CliRunner().invoke(cli, [*base, "--json"]).stdout)
    cells = set()
    for g in doc["groups"]:
        for metric, stats in g["metrics"].items():
            for value in stats.values():
                cells.add(fmt_bytes(value) if metric.endswith("_bytes") else f"{value:,.0f}")
    for width in range(60, 161, 20):
        out = CliRunner().invoke(cli, base, env={"COLUMNS": str(width)}).stdout
        assert max(len(line) for line in out.splitlines()) <= width, (width, by)
        missing = [c for c in cells if c not in out]
        assert not missing and "…" not in out, (width, by, missing[:5])


def test_a_what_if_no_host_takes_is_bad_input(fleet200):
    from click.testing import CliRunner

    from hugecalc.cli import cli

    r = CliRunner().invoke(cli, ["fleet", "mthp", str(fleet200), "--size", "3K"])
    assert r.exit_code == 2 and r.stdout == "" and "applies to none of the 200 hosts" in r.stderr


def test_hidden_backup_and_result_files_are_not_hosts(fleet200, tmp_path):
    from click.testing import CliRunner

    from hugecalc.cli import cli

    folder = tmp_path / "hosts"
    shutil.copytree(fleet200, folder)
    one = (folder / "host-000001.json").read_text()
    (folder / ".host-copy.json").write_text(one)
    (folder / "host-000001.json~").write_text(one)
    assert CliRunner().invoke(cli, ["fleet", "vmemmap", str(folder), "-o", str(folder / "rows.parquet")]).exit_code == 0
    r = CliRunner().invoke(cli, ["fleet", "vmemmap", str(folder), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["hosts"] + doc["hosts_skipped"] == 200 and doc["hosts_failed"] == 0


def _hangs_or_dies(capture, profile, release, what_if):
    """A host function for the cluster test: one host's worker hangs (past --timeout, let go once
    its run is over), another's dies every time, once the good hosts are done
    (a task queued on a dying worker would count as a suspect); flags in $HUGECALC_TEST_FLAGS."""
    import os
    import time

    flags = os.environ["HUGECALC_TEST_FLAGS"]

    def wait_for(*names):
        deadline = time.monotonic() + 600
        while not all(os.path.exists(os.path.join(flags, n)) for n in names) and time.monotonic() < deadline:
            time.sleep(0.02)

    if capture.hostname.endswith("-hang"):
        wait_for("let-go")
    elif capture.hostname.endswith("-die"):
        wait_for("a")
        os._exit(1)
    open(os.path.join(flags, capture.hostname), "w").close()
    return {"hugepages": 1}


def test_a_hung_or_lost_worker_costs_only_its_hosts(tmp_path, monkeypatch):
    """On a real LocalCluster (worker processes): a task whose worker dies every time it runs
    (KilledWorker) and one that hangs past --timeout fail their hosts; the rest are computed."""
    distributed = pytest.importorskip("distributed")
    from hugecalc.fleet import engine

    base = json.loads((CAPTURES / "x86-64-6.18.json").read_text())
    for name in ("a", "b", "x-hang", "y-die"):
        (tmp_path / f"{name}.json").write_text(json.dumps({**base, "hostname": name}))
    sources = [str(tmp_path / f"{n}.json") for n in ("a", "b", "x-hang", "y-die")]
    cut = engine.partitions
    monkeypatch.setattr(engine, "partitions", lambda s: cut(s, 1))  # one host a task
    (tmp_path / "flags").mkdir()
    monkeypatch.setenv("HUGECALC_TEST_FLAGS", str(tmp_path / "flags"))  # read by the worker processes
    with dask_config(distributed), distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                                            dashboard_address=":0") as cluster:
        # Every worker with the task's modules loaded, so that a good task is done well within the timeout
        # on a busy machine; then the hung one, then, apart (a worker that dies twice makes suspects of
        # what it held, and its restarted workers start cold), the lost one.
        with distributed.Client(cluster) as client:
            client.run(importlib.import_module, __name__)
        rows = engine.run(_hangs_or_dies, sources[1:3], {"what_if": {}}, [], cluster.scheduler_address, timeout=3,
                          figures=["hugepages"], keep_rows=True).rows
        (tmp_path / "flags" / "let-go").touch()  # its worker's thread free again for the next run's tasks
        rows += engine.run(_hangs_or_dies, sources[:1] + sources[3:], {"what_if": {}}, [], cluster.scheduler_address,
                           timeout=120, figures=["hugepages"], keep_rows=True).rows
    by = {Path(r["source"]).stem: r for r in rows}
    assert by["a"]["error"] is None and by["b"]["error"] is None and by["a"]["hugepages"] == 1
    assert "no result within 3 s" in by["x-hang"]["error"]
    assert "the cluster lost this task" in by["y-die"]["error"]


def test_hosts_a_cluster_lost_are_named_as_read(tmp_path):
    """failed_rows names each host of a lost task as reading it would (JSON Lines with blank lines,
    Parquet rows, files): the same locator in a failed row as in a computed one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hugecalc.fleet.engine import failed_rows
    from hugecalc.fleet.sources import captures, partitions

    text = json.dumps(json.loads((CAPTURES / "x86-64-6.18.json").read_text()))
    (tmp_path / "a.jsonl").write_text("\n".join([text, "", text, "  ", text, text]) + "\n")
    pq.write_table(pa.table({"capture": [text] * 5}), tmp_path / "b.parquet")
    (tmp_path / "c.json").write_text(text)
    parts = partitions([str(tmp_path / n) for n in ("a.jsonl", "b.parquet", "c.json")], 3)
    assert len(parts) > 2
    for part in parts:
        read = [source for item in part for source, _, _ in captures(item)]
        assert [r["source"] for r in failed_rows(part, "lost")] == read


def dask_config(distributed):
    import dask

    # a task whose worker dies is retried on another worker at most once before KilledWorker; a
    # worker is given one task at a time, so a good task never sits queued on a worker that dies
    # (dask counts the tasks assigned to a dying worker as suspects too)
    return dask.config.set({"distributed.scheduler.allowed-failures": 1,
                            "distributed.scheduler.worker-saturation": 1.0})


def test_timeout_needs_a_cluster(run, synthetic):
    r = run("fleet", "vmemmap", str(synthetic / "hosts"), "--timeout", "5s")
    assert r.exit_code == 2 and "give --scheduler too" in r.stderr


def test_sums_are_exact_beyond_a_float64s_integers():
    """A fleet's bytes add up past 2^53: the sum is an exact integer, not a float64's rounding."""
    from hugecalc.fleet.engine import Hosts, aggregate

    rows = [{"source": "x", "error": None, "skipped": None, "group": None, "saved_bytes": v}
            for v in (1 << 60, 1, None, 3, 1 << 62)]
    [total] = aggregate(["saved_bytes"], Hosts(["saved_bytes"]).add(rows), [])
    assert total["hosts"] == 5 and total["metrics"]["saved_bytes"]["sum"] == (1 << 60) + (1 << 62) + 4
    assert total["metrics"]["saved_bytes"]["p50"] == 3.0 + ((1 << 60) - 3) / 2  # of the 4 with a value


def test_vmemmap_figures_per_host_are_the_host_files_sums(fleet200):
    """fleet vmemmap's lean per-host figures (hvo_now_figures: no rows, notes or derivations) are
    the sums over pools of what `vmemmap --host FILE` computes (compute_hvo_now), host by host, on the
    captured release and on 7.1, with two zones, and with memory hot-plugged under memmap_on_memory."""
    from hugecalc.calc.hvo_now import compute_hvo_now, hvo_now_figures
    from hugecalc.machine.capture import captured_release, load_capture
    from hugecalc.releases import parse_release

    checked = 0
    for path in sorted(fleet200.glob("*.json")):
        capture = load_capture(path)
        pools = [(p.size_bytes, p.nr) for p in capture.pools]
        hotplugged = (1 << 30, {size: nr // 2 for size, nr in pools})
        for release in (captured_release(capture), parse_release("7.1")):
            for zones, memmap_on_memory, plugged in ((1, None, None), (2, True, hotplugged)):
                args = (capture.profile, release, pools, capture.hugetlb_optimize_vmemmap)
                full = compute_hvo_now(*args, None, zones, memmap_on_memory, plugged)
                lean = hvo_now_figures(*args, zones, memmap_on_memory, plugged)
                assert lean == {"pool_bytes": sum(r.hugepage_size_bytes * r.hugepages for r in full.rows),
                                "hugepages": sum(r.hugepages for r in full.rows),
                                "saved_now_bytes": sum(r.saved_now_bytes for r in full.rows),
                                "saved_what_if_bytes": sum(r.saved_what_if_bytes for r in full.rows),
                                "gain_bytes": sum(r.gain_bytes for r in full.rows)}, (path.name, str(release))
                checked += bool(lean["saved_what_if_bytes"])
    assert checked > 50


def test_mthp_figures_computed_once_for_alike_hosts_are_each_hosts_own(fleet200):
    """fleet mthp computes figures only (calc.mthp_fleet), once for hosts alike in profile, release
    and THP switches: on 200 hosts read twice (the second time every host a hit), each row, or the
    reason the what-if does not apply, is what `mthp --host FILE` gives the host."""
    from hugecalc.cli import mthp
    from hugecalc.calc.orders import PassShape, ThpSettings
    from hugecalc.errors import InputError
    from hugecalc.fleet.engine import read_host
    from hugecalc.machine.capture import captured_release

    what_if = {"shape": PassShape(), "settings": ThpSettings(enabled={64 << 10: "always"})}
    profiles: list = []
    hosts = [read_host(str(p), p.read_text(), None, [], profiles)[1] for p in sorted(fleet200.glob("*.json"))]
    hosts += [read_host(str(p), p.read_text(), None, [], profiles)[1] for p in sorted(fleet200.glob("*.json"))]
    compared = 0
    for capture in hosts:
        release = captured_release(capture)
        try:
            row = mthp._fleet_row(capture, capture.profile, release, what_if)
        except InputError as e:
            row = str(e)
        assert row == _whole_path(capture, release, what_if["shape"], what_if["settings"]), capture.hostname
        compared += isinstance(row, dict)
    assert compared > 100  # the others' kernels have no per-size switch, or 64K is their base page


_MODES = ["always", "inherit", "madvise", "never", "within_size", "advise"]
_TOP = ["always", "madvise", "never", "[madvise]", None]
_HUGE = ["always", "within_size", "advise", "never", "deny", "force", None]


@st.composite
def _host_switches(draw, capture):
    """A host's THP switches: odd ones too (force, deny, an unknown mode, a size spelled twice, a label that is no size)."""
    from hugecalc.units import fmt_size

    page, pmd = capture.profile.page_size, capture.profile.pmd_size
    # A few sizes, so that hosts often share their orders: the first two, 64K, the PMD size.
    labels = [fmt_size(page << o) for o in (1, 2, 4, (pmd // page).bit_length() - 1)]
    modes = st.sampled_from(_MODES[:4] * 8 + _MODES[4:] + ["bogus"])
    sizes = {label: {k: draw(modes) for k in draw(st.sampled_from([("enabled",), ("shmem_enabled",),
                                                                     ("enabled", "shmem_enabled")] * 3 + [()]))}
             for label in draw(st.lists(st.sampled_from(labels * 8 + ["3K", "64kB"]), max_size=5))}
    return capture.thp.model_copy(update={"enabled": draw(st.sampled_from(_TOP)),
                                          "shmem_enabled": draw(st.sampled_from(_HUGE)), "sizes": sizes})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_mthp_fleet_figures_are_the_whole_paths(fleet200_captures, data):
    """fleet mthp decides each per-size entry once for hosts alike (calc.mthp_fleet.now_and_what_if_figures):
    for any switches, kernel, memory and what-if, each host's figures, or its error, are what the whole
    path of `mthp --host FILE` gives it (check_release_has_switches, then compute_now_and_what_if), for
    a run of hosts with one what-if (as a fleet: they share what is decided)."""
    from hugecalc.calc.orders import PassShape, ThpSettings
    from hugecalc.calc.mthp_fleet import now_and_what_if_figures
    from hugecalc.errors import InputError
    from hugecalc.releases import parse_release

    draw = data.draw
    capture = fleet200_captures[draw(st.integers(0, len(fleet200_captures) - 1))]  # (an index: its repr is long)
    page, pmd = capture.profile.page_size, capture.profile.pmd_size
    memory = draw(st.sampled_from(["anon", "anon", "shmem", "sysv", "tmpfs"]))
    shape = PassShape(memory=memory, vma_size=pmd * 2, madvise=draw(st.booleans()),
                      file_offset=0 if memory in ("anon", "sysv") else draw(st.sampled_from([0, 3 * page])))
    what_if = ThpSettings.model_construct(
        top_level=draw(st.sampled_from(["always", "madvise", "never", None])), huge=draw(st.sampled_from(_HUGE)),
        enabled={page << o: draw(st.sampled_from(_MODES[:4])) for o in draw(st.sets(st.integers(1, 5), max_size=2))},
        shmem_enabled={page << o: draw(st.sampled_from(["always", "inherit", "advise", "never"]))
                       for o in draw(st.sets(st.integers(1, 5), max_size=1))})
    release = parse_release(draw(st.sampled_from(["6.1", "6.8", "6.12", "7.1"])))
    for thp in draw(st.lists(_host_switches(capture), min_size=1, max_size=40)):
        host = capture.model_copy(update={"thp": thp})
        expected = _whole_path(host, release, shape, what_if)
        try:
            got = now_and_what_if_figures(host, capture.profile, release, shape, what_if)
        except InputError as e:
            got = str(e)
        assert got == expected  # a reason given (a str) or raised: the same
        event("figures" if isinstance(got, dict) else "refused: " + got.split(" ")[0])


def _whole_path(capture, release, shape, what_if):
    """`mthp --host FILE`'s figures for a host (or its error): the reference of the fleet's."""
    from hugecalc.calc.orders import check_release_has_switches
    from hugecalc.calc.replay import compute_now_and_what_if
    from hugecalc.errors import InputError

    try:
        check_release_has_switches(release, what_if, {"enabled": "enabled", "shmem_enabled": "shmem_enabled"})
        r = compute_now_and_what_if(capture.profile, release, capture, shape, what_if)
    except InputError as e:
        return str(e)
    now, then = r.now, r.what_if or r.now
    return {"faults_now": now.faults, "faults_what_if": then.faults, "populated_now_bytes": now.populated_bytes,
            "populated_what_if_bytes": then.populated_bytes, "page_table_now_bytes": now.page_table_bytes,
            "page_table_what_if_bytes": then.page_table_bytes, "tlb_now": now.tlb_entries, "tlb_what_if": then.tlb_entries}


def test_mthp_fleet_figures_every_mode_of_two_sizes(fleet200_captures):
    """Every host alike but in two per-size entries (64K and the PMD size: absent, or each mode) and the
    top-level switches, under what-ifs that leave them or set them: many hosts share their orders with
    others whose switches differ, and each gets the whole path's figures."""
    from itertools import product

    from hugecalc.calc.orders import PassShape, ThpSettings
    from hugecalc.calc.mthp_fleet import now_and_what_if_figures
    from hugecalc.errors import InputError
    from hugecalc.releases import parse_release

    capture = next(c for c in fleet200_captures if c.profile.page_size == 4096)
    absent = None
    compared = {"figures": 0, "refused": 0}
    for what_if, memory, kernel in [(ThpSettings(), "anon", "6.12"), (ThpSettings(top_level="always"), "anon", "6.8"),
                                    (ThpSettings(enabled={64 << 10: "always"}), "anon", "7.1"),
                                    (ThpSettings(huge="always"), "shmem", "6.12"), (ThpSettings(), "tmpfs", "6.18")]:
        shape, release = PassShape(memory=memory, vma_size=8 << 20), parse_release(kernel)
        field = "enabled" if memory == "anon" else "shmem_enabled"
        for top, huge, small, pmd in product(["always", "madvise", "never"], ["never", "always", "force"],
                                             [absent, "never", "always", "inherit"], [absent, "never", "inherit"]):
            sizes = {label: {field: mode} for label, mode in (("64K", small), ("2M", pmd)) if mode}
            host = capture.model_copy(update={"thp": capture.thp.model_copy(
                update={"enabled": top, "shmem_enabled": huge, "sizes": sizes})})
            try:
                got = now_and_what_if_figures(host, capture.profile, release, shape, what_if)
            except InputError as e:
                got = str(e)
            assert got == _whole_path(host, release, shape, what_if), (what_if, memory, top, huge, sizes)
            compared["figures" if isinstance(got, dict) else "refused"] += 1
    assert compared["figures"] > 300 and compared["refused"] > 5


@pytest.fixture(scope="module")
def fleet200_captures(fleet200):
    from hugecalc.fleet.engine import read_host

    profiles: list = []  # as the engine reads them: equal profiles one object
    hosts = [read_host(str(p), p.read_text(), None, [], profiles)[1] for p in sorted(fleet200.glob("*.json"))[:60]]
    return [h for h in hosts if h is not None]


def _jsonl_items_model(path: str, size: int) -> list[tuple]:
    """The obvious cut: line by line, a new item every ``size`` non-blank lines."""
    items, offset, lines, start = [], 0, 0, 0
    with open(path, "rb") as f:
        for line in f:
            if lines == size:
                items.append(("jsonl", path, start, lines))
                start, lines = offset, 0
            offset += len(line)
            lines += bool(line.strip())
    if lines:
        items.append(("jsonl", path, start, lines))
    return items


def test_jsonl_cut_by_newlines_equals_the_line_by_line_cut(tmp_path):
    """The partitions of a JSON Lines file (found by memchr over blocks) are where a line-by-line
    reader cuts: blank and whitespace lines, a last line without newline, lines across 1 MiB blocks."""
    import random

    from hugecalc.fleet.sources import _jsonl_items

    rng = random.Random(5)
    path = str(tmp_path / "t.jsonl")
    pieces = [b"", b" ", b"\n", b"  \n", b"\t\r\n", b"{}", b"y" * 70, b"y" * 64 + b"\n"]
    for case in range(400):
        long = 300_000 if case % 50 == 0 else 200  # now and then a file past a block
        parts = [rng.choice(pieces + [b"x" * rng.randint(1, long) + b"\n"]) for _ in range(rng.randint(0, 30))]
        Path(path).write_bytes(b"".join(parts))
        for size in (1, 2, 3, 7):
            assert _jsonl_items(path, size) == _jsonl_items_model(path, size), (parts, size)
