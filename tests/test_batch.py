"""`hugecalc batch`: JSON Lines of requests in, one result document per line out, in order."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_bad_line_costs_only_its_own_result():
    """Binary, blank, nested, overlong lines and unknown keys: an error object with the line number,
    on that line; every other line computed; a U+2028 inside a string splits nothing."""
    good = json.dumps({"command": "vmemmap", "args": ["--pages", "1G"]}).encode()
    bad = [b"\xff\xfe\x00garbage", b"", b"[" * 100000, b'{"command": "vmemmap", "args": [], "extra": 1}',
           b"x" * (2 << 20)]
    text = b"\n".join(x for b_ in bad for x in (good, b_)) + b"\n" + good + b"\n"
    p = subprocess.run([HUGECALC, "batch"], input=text, capture_output=True)
    out = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert p.returncode == 1 and len(out) == 2 * len(bad) + 1
    assert all("rows" in out[i] for i in range(0, len(out), 2))  # every good line computed
    errors = [out[i] for i in range(1, len(out), 2)]
    assert [e["line"] for e in errors] == list(range(2, 2 * len(bad) + 1, 2))
    assert "not UTF-8" in errors[0]["error"] and "empty line" in errors[1]["error"]
    assert "unknown key 'extra'" in errors[3]["error"] and "more than" in errors[4]["error"]
    split = subprocess.run([HUGECALC, "batch"], input=b'{"command": "vmemmap", "args": ["--pages", "1G\xe2\x80\xa8"]}\n',
                           capture_output=True)
    assert split.returncode == 0 and len(split.stdout.splitlines()) == 1  # U+2028 is no line break


def test_results_come_as_they_are_computed():
    """The first result is printed before the last line is read."""
    with subprocess.Popen([HUGECALC, "batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
        p.stdin.write(json.dumps({"command": "vmemmap", "args": ["--pages", "1G"]}).encode() + b"\n")
        p.stdin.flush()
        first = p.stdout.readline()
        assert json.loads(first)["command"] == "vmemmap"
        p.stdin.close()
        assert p.wait() == 0


def test_jobs_spread_over_processes_and_keep_the_order():
    text = lines(*(REQUESTS * 10))
    one = subprocess.run([HUGECALC, "batch"], input=text, capture_output=True, text=True)
    two = subprocess.run([HUGECALC, "batch", "--jobs", "2"], input=text, capture_output=True, text=True)
    assert one.returncode == two.returncode == 0, two.stderr
    assert one.stdout == two.stdout and len(one.stdout.splitlines()) == 40


def _every_batch_mode():
    from tests.test_schema import MODES

    from hugecalc.cli.command import load

    for name, modes in MODES.items():
        found = load(name)
        if found is None or not found[0].batch:
            continue
        for mode, argv in modes:
            if "--sweep" not in argv:
                yield name, mode, argv


@pytest.mark.parametrize("name, mode, argv", list(_every_batch_mode()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_batch_request_is_read_as_click_reads_the_command_line(name, mode, argv):
    """The batch's own reading of a request (quick_values) gives the values, and the names given,
    that click gives the command line, for every command and mode a batch runs."""
    import click

    from hugecalc.cli.command import given_params, load, quick_values

    command = load(name)[1]
    quick = quick_values(command, list(argv))
    assert quick is not None, argv
    with command.make_context(name, list(argv)) as ctx:
        assert quick == (dict(ctx.params), given_params(ctx)), (name, mode)
    assert isinstance(ctx, click.Context)


@pytest.mark.parametrize("argv", [["--no-such-option"], ["--pages"], ["--pages=1G", "--explain=yes"], ["--pages", "１G"],
                                  ["--help"], ["extra"]])
def test_what_the_batch_reading_does_not_take_goes_through_click(argv):
    from hugecalc.cli.command import load, quick_values

    assert quick_values(load("vmemmap")[1], argv) is None


def _double(chunk):
    return [2 * x for x in chunk]


def test_jobs_read_the_input_only_a_few_chunks_ahead():
    """--jobs N keeps at most 2N chunks read and not yet printed: a long input is never read whole
    into memory (Pool.imap would queue all of it)."""
    import multiprocessing

    from hugecalc.cli.batch import in_order

    pulled = []

    def chunks():
        for i in range(100):
            pulled.append(i)
            yield [i]

    with multiprocessing.get_context("fork").Pool(2) as pool:
        out = in_order(pool, _double, chunks(), 4)
        first = next(out)
        assert first == [0] and len(pulled) <= 4
        assert [first, *out] == [[2 * i] for i in range(100)]


def test_a_repeated_pure_request_is_answered_once_and_an_impure_one_every_time(tmp_path):
    """A request whose answer depends on its text alone is computed once (its later copies are the
    same bytes); one that reads a file or the machine (--host, --pid, --trace, a --profile that is a
    file) is computed each time: the file may have changed."""
    import json

    from hugecalc.cli import batch

    pure = b'{"command":"vmemmap","args":["--pages","7G","--kernel","6.1"]}'
    first, ok = batch.run_one(pure, 1)
    assert ok and pure in batch._answers and batch.run_one(pure, 2) == (first, True)
    capture = json.loads((Path(__file__).parent / "data/captures/x86-64-6.18.json").read_text())
    path = tmp_path / "cap.json"
    path.write_text(json.dumps(capture))
    impure = json.dumps({"command": "vmemmap", "args": ["--host", str(path)]}).encode()
    before, _ = batch.run_one(impure, 3)
    capture["pools"][0]["nr"] += 64
    path.write_text(json.dumps(capture))
    after, _ = batch.run_one(impure, 4)
    assert impure not in batch._answers and before != after
    assert not batch.pure(["vmemmap", "--profile", "host"]) and batch.pure(["mthp", "--profile", "arm64-4k"])
    assert not batch.pure(["mthp", "--profile=./my.yaml"]) and not batch.pure(["host"])
