"""The command line as users and their pipelines meet it: output, JSON keys, errors, exit codes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hugecalc import __version__

BAD = Path(__file__).parent / "data" / "bad_profiles"
CAPTURES = Path(__file__).parent / "data" / "captures"
ROW_KEYS = {
    "hugepage_size_bytes", "hugepages", "vmemmap_pages_per_hugepage", "vmemmap_bytes_per_hugepage",
    "reserved_pages_per_hugepage", "freed_pages_per_hugepage", "split_pte_tables", "saved_bytes",
    "optimizable", "reason",
}


def test_version(run):
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.stdout


def test_vmemmap_default_rows_for_every_size(run):
    r = run("vmemmap", "--pages", "1024G", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json
    assert {"schema_version", "command", "profile", "kernel", "inputs"} <= set(doc)
    assert (doc["command"], doc["profile"], doc["kernel"]) == ("vmemmap", "x86-64", "7.3")
    assert doc["inputs"]["pool_bytes"] == 1 << 40
    assert [row["hugepage_size_bytes"] for row in doc["rows"]] == [2 << 20, 1 << 30]
    for row in doc["rows"]:
        assert ROW_KEYS <= set(row)
        assert isinstance(row["saved_bytes"], int) and isinstance(row["split_pte_tables"], int)
    assert doc["rows"][0]["freed_pages_per_hugepage"] == 7
    assert "explain" not in doc


def test_vmemmap_issue_example(run):
    doc = run("vmemmap", "--pages", "1024G", "--kernel", "5.14", "--hugepage-size", "2M", "--json").json
    row = doc["rows"][0]
    assert row["freed_bytes"] // 4096 == 3_145_728
    assert row["split_pte_tables"] == 8192
    assert row["saved_bytes"] // 4096 == 3_137_536


def test_vmemmap_count_and_fractional_pages(run):
    doc = run("vmemmap", "--pages", "512", "--profile", "arm64-64k", "--kernel", "6.2",
              "--hugepage-size", "2M", "--json").json
    row = doc["rows"][0]
    assert row["hugepages"] == 512
    assert row["vmemmap_pages_per_hugepage"] == 1 / 32 and row["vmemmap_bytes_per_hugepage"] == 2048
    assert row["optimizable"] is False and "nothing to free" in row["reason"]


def test_vmemmap_table_and_explain(run):
    r = run("vmemmap", "--pages", "1024G", "--kernel", "5.14", "--hugepage-size", "2M", "--explain")
    assert r.exit_code == 0
    assert "11.97 GiB" in r.stdout and "8,192" in r.stdout
    assert "How each figure was derived" in r.stdout
    assert "524288 x 6 x 4 KiB - 32 MiB" in r.stdout
    assert "RESERVE_VMEMMAP_NR = 2" in r.stdout and "split_vmemmap_huge_pmd()" in r.stdout


def test_explain_in_json(run):
    doc = run("vmemmap", "--pages", "1G", "--json", "--explain").json
    assert any(d["figure"] == "Net saving" and d["scope"] == "1G" for d in doc["explain"])


def test_vmemmap_arm64_refusal_in_table(run):
    r = run("vmemmap", "--pages", "64G", "--profile", "arm64-4k")
    assert r.exit_code == 0
    assert "arm64 has no HVO in 7.3" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["vmemmap", "--pages", "12Q"], "'12Q' is not a size"),
        (["vmemmap", "--pages", "-5G"], "'-5G' is not a size"),
        (["vmemmap", "--pages", "0"], "must be greater than zero"),
        (["vmemmap", "--pages", "1024G", "--hugepage-size", "3M"], "3M is not supported by profile x86-64"),
        (["vmemmap", "--pages", "1024G", "--hugepage-size", "0"], "must be greater than zero"),
        (["vmemmap", "--pages", "3G", "--hugepage-size", "2G"], "2G is not supported"),
        (["vmemmap", "--pages", "1025M", "--hugepage-size", "1G"], "not a whole number of 1G hugepages"),
        (["vmemmap", "--pages", "1G", "--profile", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read profile"),
        (["vmemmap", "--pages", "1G", "--profile", str(BAD / "unknown_key.yaml")], "page_shfit: Extra inputs"),
        (["vmemmap", "--pages", "1G", "--kernel", "banana"], "'banana' is not a kernel release"),
        (["vmemmap", "--pages", "1G", "--kernel", "7.4"], "there is no Linux 7.4 (the newest release is 7.3)"),
        (["vmemmap", "--pages", "1G", "--kernel", "8.1"], "models releases 4.0 to 7.3"),
        (["vmemmap", "--pages", "1G", "--kernel", "5.25"], "there is no Linux 5.25 (5.x ended with 5.19)"),
        (["vmemmap", "--pages", "1G", "--kernel", "4.99"], "there is no Linux 4.99 (4.x ended with 4.20)"),
        (["vmemmap", "--pages", "1G", "--struct-page-size", "60"], "whole number of 8-byte words"),
        (["vmemmap", "--pages", "1G", "--bogus"], "No such option"),
        (["vmemmap"], "--pages is required (or use --host FILE or --profile host"),
    ],
)
def test_bad_input_exit_2_stderr_only(run, args, message):
    r = run(*args)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 6


def test_profiles_list_and_show(run):
    r = run("profiles")
    assert r.exit_code == 0 and "arm64-16k" in r.stdout and "x86-64-la57" in r.stdout
    doc = run("profiles", "arm64-16k", "--json").json
    assert {"schema_version", "command", "profile", "kernel", "inputs"} <= set(doc)
    assert doc["profile"] == "arm64-16k" and doc["definition"]["name"] == "arm64-16k"
    assert len(run("profiles", "--json").json["profiles"]) >= 7
    assert doc["geometry"][0] == {"level": "pgd", "entries": 2, "entry_bytes": 8, "table_bytes": 16,
                                  "entry_span_bytes": 1 << 47, "table_span_bytes": 1 << 48}
    r = run("profiles", "x86-64")
    assert "Page-table levels" in r.stdout and "1 GiB" in r.stdout


def test_profiles_unknown_name(run):
    r = run("profiles", "sparc")
    assert r.exit_code == 2 and "neither a bundled profile" in r.stderr and r.stdout == ""


def test_user_profile_path(run, tmp_path):
    src = Path(__file__).parent.parent / "configs" / "x86-64.yaml"
    mine = tmp_path / "mine.yaml"
    mine.write_text(src.read_text().replace("name: x86-64", "name: mine").replace("struct_page_bytes: 64",
                                                                                  "struct_page_bytes: 128"))
    doc = run("vmemmap", "--pages", "2M", "--profile", str(mine), "--json").json
    assert doc["profile"] == "mine" and doc["rows"][0]["freed_pages_per_hugepage"] == 15


def test_installed_entry_point_no_traceback():
    """The real console script: bad input gives exit 2, empty stdout, no traceback."""
    exe = Path(sys.executable).parent / "hugecalc"
    if not exe.exists():
        pytest.skip("hugecalc console script not installed beside this python")
    p = subprocess.run([str(exe), "vmemmap", "--pages", "12Q", "--json"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    p = subprocess.run([str(exe), "vmemmap", "--pages", "1T", "--json"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("{")


def test_hgm_json_contract(run):
    doc = run("hgm", "--hugepage-size", "1G", "--path", "4K,2M,1G", "--json").json
    assert doc["command"] == "hgm" and doc["upstream"] is False and "not merged" in doc["series"]
    by = {s["scheme"]: s for s in doc["schemes"]}
    assert set(by) == {"thp-like", "head-only", "hstate-level"}
    assert by["thp-like"]["atomic_ops"] == 786_433 and by["head-only"]["atomic_ops"] == 263_169
    for s in doc["schemes"]:
        assert {"scheme", "atomic_ops", "steps", "estimated_seconds"} <= set(s)
        assert len(s["steps"]) == 2


def test_hgm_table_says_not_merged(run):
    r = run("hgm", "--path", "4K,1G", "--guest-memory", "1T", "--explain")
    assert r.exit_code == 0 and "never merged" in r.stdout and "calibration" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [(["hgm", "--path", "1G,4K"], "must grow from small to large"),
     (["hgm", "--path", "4K,3M,1G"], "maps one of"),
     (["hgm", "--path", "4K,1G", "--scheme", "magic"], "choose from"),
     (["hgm", "--path", "4K,banana"], "'banana' is not a size"),
     (["hgm", "--hugepage-size", "2M", "--path", "4K,1G"], "must end at the hugepage size 2M"),
     (["hgm", "--path", "4K,1G", "--atomic-ns", "0"], "--atomic-ns")],
)
def test_hgm_bad_input(run, args, message):
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr


def test_numba_cache_falls_back_to_a_writable_place(tmp_path, monkeypatch):
    """A read-only install: the cache goes to $XDG_CACHE_HOME, else a per-user temp dir, else nowhere."""
    import os

    from hugecalc.calc import _jit

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    writable = {"pkg": False}
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: writable["pkg"] if str(p).endswith("pkg") else real(p, m))
    assert _jit.cache_dir(str(tmp_path / "pkg")) == str(tmp_path / "xdg" / "hugecalc" / "numba")
    writable["pkg"] = True
    assert _jit.cache_dir(str(tmp_path / "pkg")) is None  # next to the module, numba's default
    writable["pkg"] = False
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-place")
    monkeypatch.setattr("tempfile.gettempdir", lambda: "/proc/no-such-place-either")
    assert _jit.cache_dir(str(tmp_path / "pkg")) == ""


@pytest.mark.parametrize("columns", ["0", "-4", "abc", "60"])
def test_any_columns_value_works(columns):
    env = {**os.environ, "COLUMNS": columns}
    p = subprocess.run([sys.executable, "-m", "hugecalc", "vmemmap", "--pages", "1G"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0 and p.stderr == "" and "Net saving" in p.stdout


@pytest.mark.parametrize("args", [["vmemmap", "--pages", "1G"], ["vmemmap", "--pages", "1G", "--json"],
                                  ["pgtable", "--vma-size", "1T", "--sweep", "touch-fraction=1e-6..1x10"]])
def test_a_closed_pipe_is_not_an_error(args):
    p = subprocess.Popen([sys.executable, "-m", "hugecalc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait() == 0 and err == b""


def test_a_closed_stdout_is_not_an_error():
    p = subprocess.run([sys.executable, "-m", "hugecalc", "vmemmap", "--pages", "1G"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, pass_fds=(), close_fds=True,
                       preexec_fn=lambda: os.close(1))
    assert p.returncode == 0 and p.stderr == b""


def test_newcomer_edges(run):
    """Findings of the newcomer review: help, explain, tables, pools, hgm's hugepage, NO_COLOR."""
    assert "printf '0x8000000000\\n0x8000200000" in run("pgtable", "--help").stdout  # not garbled
    assert "rule:" in run("mthp", "--explain", "--vma-size", "64M").stdout  # the side-by-side view explains
    assert run("pgtable", "--worst-case", "--json").json["tables"] == {"pud": 256, "pmd": 131072, "pte": 67108864}
    assert run("vmemmap", "--pages", "0x10", "--hugepage-size", "2M", "--json").json["rows"][0]["hugepages"] == 16
    r = run("vmemmap", "--pages", "1M", "--hugepage-size", "2M")
    assert r.exit_code == 2 and "2M" in r.stderr
    assert run("hgm", "--path", "4K,2M", "--json").json["inputs"]["hugepage_size_bytes"] == 2 << 20
    top = run("--help").stdout
    assert top.index("vmemmap") < top.index("pgtable") < top.index("mthp") < top.index("verify")
    assert "..." not in top.split("Commands:")[1]


def test_no_color_means_no_escapes():
    env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "100"}
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: a real terminal on stdout
        os.execvpe(sys.executable, [sys.executable, "-m", "hugecalc", "vmemmap", "--pages", "1G"], env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    assert b"Net saving" in out and b"\x1b[" not in out


@pytest.mark.parametrize("args,error", [
    (["mthp", "--vma-size", "-1G"], "Error: --vma-size '-1G' is not a size"),
    (["pgtable", "--vma-size", "0"], "Error: --vma-size '0' must be greater than zero"),
    (["pgtable", "--bogus"], "Error: No such option '--bogus'"),
    (["pgtable", "--after", "x"], "Error: Invalid value for '--after': 'x' is not one of"),
    (["mthp", "--size", "63k"], "Error: --size 63K is not a power-of-two number of 4K pages"),
    (["mthp", "--size", "4k"], "Error: --size 4K is the base page, not a THP size: x86-64 has 16K..2M"),
    (["mthp", "--vma-size", "1k"], "Error: --vma-size 1K must be a positive multiple of the 4K page"),
])
def test_an_error_is_one_line_and_where_help_is(args, error):
    """Usage errors say what is wrong once (no 'Usage:' block, no option named twice), then where help is."""
    p = subprocess.run([sys.executable, "-m", "hugecalc", *args], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert lines[0].startswith(error), lines
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1] == f"Try 'hugecalc {args[0]} --help' for help.")
    assert lines[0].count(args[1]) == 1


def test_wrapped_notes_and_derivations_keep_their_indent():
    """At 60 columns a long note, reason or derivation wraps under itself, never back to column 0."""
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
    args = ["vmemmap", "--pages", "1400", "--hugepage-size", "1G", "--profile", "arm64-4k", "--kernel", "6.1.50",
            "--explain"]
    out = subprocess.run([sys.executable, "-m", "hugecalc", *args], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("why not"))
    block = out[start:]
    assert all(len(line) <= 60 for line in block)
    assert len(block) > 10 and block[1].startswith("    (ARCH_WANT")
    # after the table every line is a heading, a first line (note:, why not, a figure, rule:) or indented
    firsts = ("why not", "note:", "How each", "1G")
    assert all(line == "" or line.startswith(firsts) or line.startswith("  ") for line in block)
    figure = out.index("  HVO optimizable: no: arm64 has no HVO in 6.1.50")
    assert out[figure + 1].startswith("    (ARCH_WANT")


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_a_table_too_wide_stacks_its_rows_and_never_folds_a_word(columns):
    """hgm's step table has ten columns: where they cannot all fit, each row becomes a block of
    'title value' lines; no word (collapse, hstate-level) and no figure (765 ms) is folded or cut."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-m", "hugecalc", "hgm"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert all(len(line) <= columns for line in out.splitlines())
    words = set(out.split())
    assert {"collapse", "hstate-level", "thp-like", "head-only", "262,145"} <= words
    doc = json.loads(subprocess.run([sys.executable, "-m", "hugecalc", "hgm", "--json"], capture_output=True,
                                    text=True, check=True).stdout)
    for scheme in doc["schemes"]:
        for step in scheme["steps"]:
            ms = f"{step['estimated_seconds'] * 1e3:.3g} ms"
            assert ms in out or step["estimated_seconds"] >= 0.9995, ms


@pytest.mark.parametrize("pages", ["0x", "0xg", "x", "0x0", "-1", "1.3K"])
def test_a_pool_that_is_no_size_nor_count(run, pages):
    r = run("vmemmap", "--pages", pages)
    assert r.exit_code == 2 and r.stdout == "" and "--pages" in r.stderr and "internal error" not in r.stderr


def test_each_phrase_reads_as_a_reader_expects(run):
    """Counts agree with their nouns; notes say what a reader would look for."""
    assert "HVO for a pool of 1400 hugepages of 1G" in run("vmemmap", "--pages", "1400", "--hugepage-size", "1G").stdout
    notes = run("vmemmap", "--pages", "3M", "--json").json["notes"]
    assert any("rounded down to 1 hugepage" in n and "1 hugepages" not in n for n in notes)
    assert "contiguous PTE block: none" in run("profiles", "x86-64").stdout
    hgm = run("hgm").stdout
    assert hgm.count("never merged") == 1 and "(guest)" not in hgm
    assert "vmemmap dedup applies" in run("vmemmap", "--pages", "1G", "--devdax").stdout


@pytest.mark.parametrize("args", [["vmemmap", "--pages", "１２G"], ["vmemmap", "--pages", "1T", "--zones", "١٢"],
                                  ["vmemmap", "--pages", "1T", "--zones=२"], ["vmemmap", "--pages", "1G", "--kernel", "٦.١"],
                                  ["pgtable", "--vma-size", "1G", "--sweep", "seed=١,٢"]])
def test_digits_that_are_not_ascii_are_not_numbers(run, args):
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == "" and "internal error" not in r.stderr


@pytest.mark.parametrize("args,message", [
    (["vmemmap", "--pages", "1G", "--plot", "x.svg"], "--plot draws the chart of a --sweep"),
    (["pgtable", "--vma-size", "1G", "--plot", "x.svg"], "--plot draws the chart of a --sweep or a --trace"),
    (["mthp", "--size", "64k", "--plot", "x.svg"], "--plot draws the chart of a --sweep"),
    (["mthp", "--max-ptes-none", "3"], "--max-ptes-none describes what khugepaged finds"),
    (["mthp", "--huge", "always"], "--huge is shmem_enabled"),
    (["fleet", "vmemmap", "tests/data/captures", "--by", "bogus"], "--by 'bogus' is not a capture field"),
    (["vmemmap", "--pages", "1G", "--profile", "x86"], "neither a bundled profile"),
    (["vmemmap", "--profile", "host", "--host", "tests/data/captures/x86-64-6.18.json"], "give one of them"),
    (["verify", "--restore", "vmemmap"], "--restore only puts back"),
])
def test_options_that_would_be_ignored_or_misread_are_refused(run, args, message, tmp_path):
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr, r.stderr
    assert not (tmp_path / "x.svg").exists()


def test_a_capture_without_its_pools_is_damaged_not_empty(run, tmp_path):
    import json
    from pathlib import Path

    data = json.loads(Path("tests/data/captures/x86-64-6.18.json").read_text())
    del data["pools"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    r = run("vmemmap", "--host", str(path))
    assert r.exit_code == 2 and "pools" in r.stderr


def test_newcomer_polish_round_two(run):
    """Newcomer review 2026-11-30: #24 profile sources, #27 split order, #33 whole summaries, #34 a
    copyable batch example, #36 schema's argument name, #42 a tiny share, #46 the size message."""
    r = run("profiles", "arm64-4k", "--profile", "x86-64")
    assert r.exit_code == 2 and "not with --profile or --host too" in r.stderr
    assert run("profiles", "host").exit_code == 0
    assert "nor 'host' (this machine)" in run("vmemmap", "--profile", "x86", "--pages", "1G").stderr
    assert "HGM split 1G->2M->4K" in run("hgm", "--operation", "split", "--path", "4K,2M,1G").stdout
    for group in ("fleet", "verify"):
        commands = run(group, "--help").stdout.split("Commands:")[1]
        assert "..." not in commands, commands
    assert '{"command": "mthp", "options": {"size": "64k", "vma-size": "1G"}}' in run("batch", "--help").stdout
    assert "Invalid value for '[COMMAND]'" in run("schema", "bogus").stderr
    assert "0.000405%" in run("pgtable", "--vma-size", "16G", "--backing", "hugetlb-2M", "--shared-by", "100").stdout
    assert "use a whole number (4096, 0x1000), or a number with a binary suffix" in run(
        "vmemmap", "--pages", "2.0").stderr
    assert "Free memory needed to release one hugepage" in run("vmemmap", "--pages", "1G").stdout


def test_newcomer_polish_round_two_b(run, tmp_path):
    """#37 plurals and the byte count, #39 fleet's JSON error as --host says it, #43 no trailing
    spaces, #44 synthetic captures have a config and a missing field groups as '(not captured)'."""
    import json

    out = tmp_path / "c.json"
    r = run("host", "--output", str(out))
    assert f"({out.stat().st_size:,} bytes, 0 processes)" in r.stderr
    assert "of 1 PMD range," in run("mthp", "--size", "64k", "--prepopulated-stride", "1M", "--khugepaged",
                                    "--vma-size", "2M", "--profile", "arm64-4k").stdout
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "bad.json").write_text("garbage\n")
    r = run("fleet", "synth", "--hosts", "3", "--seed", "1", "--output", str(tmp_path / "synth"))
    assert r.exit_code == 0
    doc = json.loads(next((tmp_path / "synth").glob("*.json")).read_text())
    assert doc["config"]["CONFIG_TRANSPARENT_HUGEPAGE"] == "y" and "CONFIG_PT_RECLAIM" in doc["config"]
    (fleet / "good.json").write_text(json.dumps(doc))
    r = run("fleet", "vmemmap", str(fleet), "--by", "config.CONFIG_BOGUS")
    assert "not a capture: not valid JSON" in r.stdout and "(not captured)" in r.stdout
    assert "fleet vmemmap: 1 host," in r.stdout
    for args in (["profiles"], ["vmemmap", "--pages", "1G"], ["mthp", "--size", "64k"]):
        assert not [line for line in run(*args).stdout.splitlines() if line.endswith(" ")], args


def test_vma_size_defaults_alike(run):
    """Newcomer review #45: pgtable (and fleet pgtable) default --vma-size to 1G as mthp and verify
    pgtable do, and their help says so."""
    def doc(*args):
        return run(*args, "--json").json

    assert doc("pgtable")["inputs"] == doc("pgtable", "--vma-size", "1G")["inputs"]
    assert doc("pgtable")["inputs"]["vma_size_bytes"] == doc("mthp", "--size", "64k")["inputs"]["vma_size_bytes"] == 1 << 30
    for command in (["pgtable"], ["mthp"], ["verify", "pgtable"], ["fleet", "pgtable"]):
        assert re.search(r"--vma-size SIZE\s+Size of the (mapping|VMA)\.\s+\[default:\s+1G\]",
                         run(*command, "--help").stdout), command
    fleet = run("fleet", "pgtable", str(CAPTURES), "--json").json
    assert fleet["inputs"]["what_if"]["vma_size"] == 1 << 30


def test_every_input_error_ends_with_the_help_hint(run):
    """Newcomer review #38: bad input a command finds (not only the ones click finds) ends with the
    command's help hint; a host error (exit 1) does not."""
    for args, command in ((["pgtable", "--vma-size", "0"], "pgtable"), (["vmemmap", "--pages", "1x"], "vmemmap"),
                          (["fleet", "vmemmap", "/nonexistent"], "fleet vmemmap")):
        p = subprocess.run([sys.executable, "-m", "hugecalc", *args], capture_output=True, text=True)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and p.stdout == "" and len(lines) == 2 and lines[0].startswith("Error: ")
        assert lines[1] == f"Try 'hugecalc {command} --help' for help."
    r = run("mthp", "--trace", "/nonexistent/x")
    assert r.exit_code == 2 and "Try" in r.stderr


def test_an_impossible_stable_sublevel_is_refused(run):
    """Newcomer review #47: 6.1.999 never existed (no stable branch has had 500 releases), as 5.25 did not."""
    r = run("vmemmap", "--pages", "1G", "--kernel", "6.1.999")
    assert r.exit_code == 2 and r.stdout == "" and "there is no Linux 6.1.999" in r.stderr
    assert run("vmemmap", "--pages", "1G", "--kernel", "4.9.337").exit_code == 0
