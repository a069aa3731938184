"""`hugecalc batch`: JSON Lines of requests in, one result document per line out, in order."""

import json
import subprocess
import sys
from pathlib import Path

HUGECALC = str(Path(sys.executable).parent / "hugecalc")
REQUESTS = [
    {"command": "vmemmap", "args": ["--pages", "1T", "--kernel", "5.14"]},
    {"command": "mthp", "options": {"size": "64k", "vma-size": "64M", "madvise": True}},
    {"command": "pgtable", "options": {"vma_size": "4G", "touch-stride": "2M", "after": "dontneed"}},
    {"command": "mthp", "options": {"size": ["16k", "128k"], "touch_stride": "100K"}},
]


def lines(*requests):
    return "".join(json.dumps(r) + "\n" for r in requests)


def test_results_are_the_json_documents_in_input_order(run):
    r = run("batch", input=lines(*REQUESTS))
    assert r.exit_code == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == len(REQUESTS)
    assert [d["command"] for d in out] == ["vmemmap", "mthp", "pgtable", "mthp"]
    # The same documents as --json, request by request.
    assert out[0] == run("vmemmap", "--pages", "1T", "--kernel", "5.14", "--json").json
    assert out[1] == run("mthp", "--size", "64k", "--vma-size", "64M", "--madvise", "--json").json
    assert out[3] == run("mthp", "--size", "16k", "--size", "128k", "--touch-stride", "100K", "--json").json


def test_a_bad_line_fails_alone(run):
    r = run("batch", input=lines(REQUESTS[0], {"command": "mthp", "args": ["--size", "48k"]}) + "not json\n"
            + lines({"command": "verify", "args": ["mthp"]}, {"nope": 1}, REQUESTS[1]))
    assert r.exit_code == 1
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == 6
    assert out[0]["command"] == "vmemmap" and out[5]["command"] == "mthp"
    assert out[1]["exit_code"] == 2 and "not a power-of-two" in out[1]["error"]
    assert "not a JSON object" in out[2]["error"]
    assert "cannot run in a batch" in out[3]["error"]
    assert '"command"' in out[4]["error"]


def test_unreadable_input_is_exit_2():
    p = subprocess.run([HUGECALC, "batch"], input=b"\xff\xfe\x00garbage", capture_output=True)
    assert p.returncode == 2 and p.stdout == b"" and b"cannot be read" in p.stderr


def test_jobs_spread_over_processes_and_keep_the_order():
    text = lines(*(REQUESTS * 10))
    one = subprocess.run([HUGECALC, "batch"], input=text, capture_output=True, text=True)
    two = subprocess.run([HUGECALC, "batch", "--jobs", "2"], input=text, capture_output=True, text=True)
    assert one.returncode == two.returncode == 0, two.stderr
    assert one.stdout == two.stdout and len(one.stdout.splitlines()) == 40
