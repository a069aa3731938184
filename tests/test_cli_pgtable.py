"""`hugecalc pgtable` from the command line, and `verify pgtable` on the running kernel."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root_and

HP2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_pgtable_json_contract(run):
    doc = run("pgtable", "--vma-size", "64G", "--touch-stride", "2M", "--after", "dontneed", "--json").json
    assert {"schema_version", "command", "profile", "kernel", "inputs", "tables", "page_table_bytes",
            "page_table_bytes_after"} <= set(doc)
    assert doc["tables"] == {"pud": 1, "pmd": 64, "pte": 32768}
    assert doc["page_table_bytes"] == 32833 * 4096
    assert doc["page_table_bytes_after"] == 65 * 4096
    assert doc["inputs"]["vma_start"] == 0x8000000000


def test_pgtable_table_output(run):
    r = run("pgtable", "--vma-size", "4G", "--backing", "thp", "--after", "dontneed", "--explain")
    assert r.exit_code == 0
    assert "pgtable_trans_huge_deposit()" in r.stdout and "after MADV_DONTNEED" in r.stdout
    assert "hugetlb-1G" in r.stdout  # the comparison


def test_pgtable_la57_uses_p4d(run):
    doc = run("pgtable", "--profile", "x86-64-la57", "--vma-size", "128T", "--touch-stride", "1G", "--json").json
    assert doc["tables"]["p4d"] == 1 and doc["tables"]["pte"] == 131072


def test_touch_file_from_stdin(run):
    r = run("pgtable", "--vma-size", "2G", "--vma-start", "0x8000000000", "--touch-file", "-", "--json",
            input="0x8000000000\n0x8000200000-0x8000400000  # one whole PTE table\n")
    assert r.exit_code == 0, r.stderr
    assert r.json["tables"] == {"pud": 1, "pmd": 1, "pte": 2}


def test_worst_case_cli(run):
    doc = run("pgtable", "--worst-case", "--json").json
    assert {lv["level"]: lv["bytes"] for lv in doc["levels"]} == {"pud": 1 << 20, "pmd": 512 << 20, "pte": 256 << 30}


@pytest.mark.parametrize(
    "args,message",
    [
        (["pgtable", "--vma-size", "0"], "must be greater than zero"),
        (["pgtable", "--vma-size", "128T"], "does not fit in x86-64's user address space"),
        (["pgtable", "--vma-size", "1G", "--touch-stride", "4K", "--touch-fraction", "0.1"], "use one of"),
        (["pgtable", "--vma-size", "1G", "--touch-fraction", "2"], "not in the range"),
        (["pgtable", "--vma-size", "1G", "--backing", "hugetlb-3M"], "3M is not supported"),
        (["pgtable", "--vma-size", "1G", "--backing", "hugetlb-2M", "--after", "free"], "EINVAL"),
        (["pgtable", "--vma-size", "1G", "--vma-start", "0xzz"], "is not a size"),
        (["pgtable", "--vma-size", "1G", "--touch-file", "-"], "lists no address"),
        (["pgtable", "--worst-case", "--pid", "1"], "either --worst-case or --pid"),
    ],
)
def test_pgtable_bad_input(run, args, message):
    r = run(*args, input="")
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr and "Traceback" not in r.stderr


def test_pid_of_a_simple_process(run):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # Wait until it has finished exec and dynamic loading and sits in nanosleep().
        stat = Path(f"/proc/{sleeper.pid}/stat")
        for _ in range(200):
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "S":
                break
            time.sleep(0.01)
        if not os.access(f"/proc/{sleeper.pid}/pagemap", os.R_OK):
            pytest.skip("cannot read another process's pagemap here")
        doc = run("pgtable", "--pid", str(sleeper.pid), "--json").json
        # sleep maps its pages once and never frees any: its tables are exactly what they need.
        assert doc["page_table_bytes"] == doc["vm_pte_bytes"]
        assert doc["tables"]["pte"] >= 3 and doc["present_bytes"] > 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_missing(run):
    r = run("pgtable", "--pid", "999999999")
    assert r.exit_code == 2 and "--pid" in r.stderr and "4194304" in r.stderr  # beyond PID_MAX_LIMIT
    r = run("pgtable", "--pid", "4194303")  # a pid that can exist but (here) does not
    assert r.exit_code == 2 and r.stderr.splitlines()[0] == "Error: --pid 4194303: no such process" and r.stdout == ""


@pytest.mark.root
@needs_root_and(HP2M, THP)
@pytest.mark.parametrize(
    "args",
    [["--vma-size", "8G", "--touch-stride", "2M", "--after", "dontneed"],
     ["--vma-size", "256M", "--touch-fraction", "0.01", "--seed", "3", "--after", "free"],
     ["--vma-size", "64M", "--backing", "thp", "--after", "dontneed"],
     ["--vma-size", "32M", "--backing", "hugetlb-2M"],
     []],  # the default run: 1 GiB, every base page
)
def test_verify_pgtable_on_running_kernel(run, args):
    before = (HP2M.read_text(), THP.read_text())
    r = run("verify", "pgtable", *args, "--json")
    assert (HP2M.read_text(), THP.read_text()) == before, "settings were not restored"
    assert r.exit_code == 0, r.stdout + r.stderr
    checks = r.json["checks"]
    assert checks and all(c["match"] for c in checks)
    assert checks[0]["measured"] > 0
    if not args:
        predicted = run("pgtable", "--vma-size", "1G", "--kernel", r.json["kernel"], "--json").json
        assert checks[0]["measured"] == predicted["page_table_bytes"]


@pytest.mark.root
@needs_root_and(THP)
@pytest.mark.parametrize("args,touched,after", [
    # kernel review F2, measured on 6.18: a VMA not PMD-aligned keeps its edge PTE tables
    (["--vma-size", "3M", "--vma-start", "0x40100000"], 16384, 12288),
    (["--vma-size", "100M", "--vma-start", "0x40001000"], 217088, 16384),
    (["--vma-size", "64M"], 139264, 8192),
], ids=["3M-1M-in", "100M-4K-in", "aligned"])
def test_verify_unaligned_dontneed_keeps_edge_tables(run, args, touched, after):
    import platform

    from hugecalc.releases import PT_RECLAIM, parse_release

    if platform.machine() != "x86_64" or not parse_release(platform.release()).has(PT_RECLAIM, "x86_64"):
        pytest.skip("the running kernel has no PT_RECLAIM (x86-64, 6.14 and later)")
    r = run("verify", "pgtable", *args, "--after", "dontneed", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    measured = [c["measured"] for c in r.json["checks"]]
    assert measured == [touched, after] and all(c["match"] for c in r.json["checks"])
