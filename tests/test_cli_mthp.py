"""`hugecalc mthp` from the command line, and `verify mthp` on the running kernel."""

from pathlib import Path

import pytest

from tests.conftest import needs_root_and

THP = Path("/sys/kernel/mm/transparent_hugepage")


def test_mthp_json_contract(run):
    doc = run("mthp", "--size", "64k", "--json").json
    assert {"schema_version", "command", "profile", "kernel", "inputs", "faults", "read_faults", "write_faults",
            "folios", "tlb_entries", "page_table_bytes"} <= set(doc)
    assert doc["faults"] == 16_384 and doc["folios"] == [{"size_bytes": 65536, "count": 16_384}]
    assert doc["inputs"]["enabled"]["64K"] == "always" and doc["inputs"]["top_level"] == "madvise"


def test_every_size_side_by_side(run):
    r = run("mthp")
    assert r.exit_code == 0 and "● faults" in r.stdout and "size (x log, y log)" in r.stdout  # the chart
    doc = run("mthp", "--json").json
    assert [row["size_bytes"] for row in doc["sizes"]][:3] == [4096, 16384, 32768]
    assert {row["size_bytes"]: row["faults"] for row in doc["sizes"]}[2 << 20] == 512


def test_mthp_explain_and_khugepaged(run):
    r = run("mthp", "--size", "64k", "--prepopulated-stride", "1M", "--khugepaged", "--explain", "--kernel", "6.18")
    assert r.exit_code == 0 and "not in 6.18" in r.stdout
    assert "alloc_anon_folio()" in r.stdout and "thp_vma_allowable_orders()" in r.stdout


def test_one_tib(run):
    doc = run("mthp", "--vma-size", "1T", "--size", "64k", "--prepopulated-stride", "1M", "--json").json
    assert doc["faults"] == 30 * (1 << 20)


@pytest.mark.parametrize(
    "args,message",
    [(["mthp", "--size", "48k"], "not a power-of-two number"),
     (["mthp", "--size", "8k"], "is order 1"),
     (["mthp", "--enabled", "64K=sometimes"], "the mode must be one of"),
     (["mthp", "--enabled", "64K"], "use SIZE=MODE"),
     (["mthp", "--madvise", "--nohugepage"], "exclude each other"),
     (["mthp", "--vma-size", "0"], "must be greater than zero"),
     (["mthp", "--khugepaged"], "needs the occupancy"),
     (["mthp", "--memory", "disk"], "Invalid value for '--memory'")],
)
def test_mthp_bad_input(run, args, message):
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr and "Traceback" not in r.stderr


def _thp_state():
    return sorted((str(p), p.read_text()) for p in THP.rglob("*enabled")) + [
        ("use_zero_page", (THP / "use_zero_page").read_text())]


@pytest.mark.root
@needs_root_and(THP / "hugepages-64kB" / "stats" / "anon_fault_alloc")
@pytest.mark.parametrize(
    "args",
    [["--size", "64k", "--vma-size", "256M"],
     ["--size", "64k", "--prepopulated-stride", "1M", "--vma-size", "64M"],
     ["--madvise", "--access", "read-then-write", "--vma-size", "64M"],
     ["--memory", "shmem", "--shmem-enabled", "64K=always", "--vma-size", "64M"],
     ["--memory", "tmpfs", "--huge", "always", "--vma-size", "64M"],
     ["--size", "16k", "--size", "128k", "--touch-stride", "100K", "--vma-start", "0x40003000", "--vma-size", "50M"],
     ["--vma-size", "64M"]],  # no THP option: the classic 64K question, not base pages
)
def test_verify_mthp_on_running_kernel(run, args):
    before = _thp_state()
    r = run("verify", "mthp", *args, "--json")
    assert _thp_state() == before, "THP settings were not restored"
    assert r.exit_code == 0, r.stdout + r.stderr
    checks = r.json["checks"]
    assert checks[0]["figure"] == "page faults of the pass" and checks[0]["measured"] > 0
    assert all(c["match"] for c in checks)
    if args == ["--vma-size", "64M"]:
        assert checks[0]["measured"] == (64 << 20) // (64 << 10)  # one fault per 64K folio
        assert "verifying --size 64K" in " ".join(r.json["notes"])


@pytest.mark.root
@needs_root_and(THP / "hugepages-64kB" / "shmem_enabled", THP / "shmem_enabled")
@pytest.mark.parametrize("args,faults,folios", [
    # kernel review F1: a tmpfs VMA smaller than a PMD gets base pages, not one 1M folio
    (["--memory", "tmpfs", "--huge", "always", "--vma-size", "1M"], 256, {4096: 256}),
    # F5: memfd is anonymous shmem and follows the per-size switch; SysV SHM does not
    (["--memory", "shmem", "--shmem-enabled", "64K=always", "--vma-size", "64M"], 1024, {65536: 1024}),
    (["--memory", "sysv", "--shmem-enabled", "64K=always", "--vma-size", "64M"], 16384, {4096: 16384}),
    (["--memory", "sysv", "--huge", "always", "--vma-size", "64M"], 32, {2 << 20: 32}),
    # N11: shmem_enabled force grants anonymous shmem the inherit sizes only (the PMD size), the
    # per-size always ignored; deny grants nothing, over every mount too
    (["--memory", "shmem", "--huge", "force", "--shmem-enabled", "64K=always", "--vma-size", "4M"], 2, {2 << 20: 2}),
    (["--memory", "shmem", "--huge", "force", "--shmem-enabled", "64K=always", "--vma-size", "1M"], 256,
     {4096: 256}),
    (["--memory", "shmem", "--huge", "deny", "--shmem-enabled", "64K=always", "--vma-size", "4M"], 1024,
     {4096: 1024}),
    (["--memory", "tmpfs", "--huge", "force", "--vma-size", "4M"], 2, {2 << 20: 2}),
], ids=["tmpfs-1M", "memfd-64K", "sysv-64K", "sysv-huge", "force-4M", "force-1M", "deny", "tmpfs-force"])
def test_verify_shmem_kinds_with_the_kernels_numbers(run, args, faults, folios):
    before = _thp_state()
    r = run("verify", "mthp", *args, "--json")
    assert _thp_state() == before, "THP settings were not restored"
    assert r.exit_code == 0, r.stdout + r.stderr
    checks = {c["figure"]: c for c in r.json["checks"]}
    assert checks["page faults of the pass"]["measured"] == faults
    for size, count in folios.items():
        from hugecalc.units import fmt_size

        assert checks[f"{fmt_size(size)} folios mapped (pagemap, kpageflags)"]["predicted"] == count
    assert all(c["match"] for c in checks.values())


@pytest.mark.parametrize("args,message", [
    (["--size", "64k", "--memory", "shmem"], "--memory shmem does not use"),
    (["--shmem-enabled", "64K=always"], "not --memory anon"),
    (["--size", "64k", "--enabled", "64K=never"], "contradict each other"),
    (["--file-offset", "64K"], "--file-offset is for shmem and tmpfs mappings, not anonymous memory"),
])
def test_ignored_or_contradicting_options_are_refused(run, args, message):
    r = run("mthp", *args)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr


def test_one_name_for_the_mapping_size(run):
    assert run("mthp", "--vsize", "64M", "--size", "64k", "--json").json["inputs"]["vma_size_bytes"] == 64 << 20
    assert run("pgtable", "--vsize", "1G", "--json").json["inputs"]["vma_size_bytes"] == 1 << 30
    for command in ("pgtable", "mthp"):
        help_text = run(command, "--help").stdout
        assert "--vma-size" in help_text and "--vsize" not in help_text  # the alias works, hidden
    r = run("pgtable", "--worst-case", "--vsize", "1G")
    assert r.exit_code == 2 and "takes no mapping" in r.stderr


@pytest.mark.parametrize("args,option,instead", [
    (["--size", "2M", "--kernel", "6.1"], "--size", "--top-level always"),
    (["--enabled", "2M=never", "--top-level", "always", "--kernel", "6.7"], "--enabled", "--madvise"),
    (["--memory", "shmem", "--shmem-enabled", "2M=always", "--kernel", "6.6"], "--shmem-enabled", "--huge always"),
])
def test_a_per_size_switch_on_a_release_without_one_is_refused_with_the_way_to_say_it(run, args, option, instead):
    r = run("mthp", *args)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.startswith(f"Error: {option} is a per-size switch")
    assert instead in r.stderr
