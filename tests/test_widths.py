"""Every view of every command holds at every width from 60 to 160 columns: no line wider than the
terminal, no `…`, and every number the widest rendering shows is still there whole (a cut number,
``16,945,`` for 16,945,986, would be a token the wide rendering does not have). Chart titles are
whole too. Charts draw as many ticks as fit, so their axis lines are left out of the comparison.

Piped (``COLUMNS``, in-process); ``tests/test_terminal.py`` shows the same in a real terminal (tmux)."""

import json
import re
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
X86 = str(DATA / "captures" / "x86-64-6.18.json")
RECORD = str(DATA / "records" / "sqlite3.record")
WIDTHS = (60, 80, 100, 120, 160)
_TOKEN = re.compile(r"\d[\d,.]*\d|\d")


def _pid_in_capture():
    return str(json.loads(Path(X86).read_text())["processes"][0]["pid"])


CASES = {
    "vmemmap": ["vmemmap", "--pages", "1024G"],
    "vmemmap explain": ["vmemmap", "--pages", "1400", "--hugepage-size", "1G", "--profile", "arm64-4k",
                        "--kernel", "6.1.50", "--explain"],
    "vmemmap host": ["vmemmap", "--host", X86],
    "vmemmap sweep": ["vmemmap", "--sweep", "pages=1G..1Tx4"],
    "vmemmap flat sweep": ["vmemmap", "--pages", "1T", "--sweep", "kernel=5.14,5.18,6.3,7.1", "--profile", "arm64-4k"],
    "pgtable": ["pgtable", "--vma-size", "64G", "--touch-stride", "2M", "--after", "dontneed", "--explain"],
    "pgtable worst": ["pgtable", "--worst-case"],
    "pgtable pid": ["pgtable", "--host", X86, "--pid", _pid_in_capture(), "--after", "dontneed"],
    "pgtable trace": ["pgtable", "--trace", RECORD, "--after", "dontneed"],
    "pgtable sweep": ["pgtable", "--vma-size", "1T", "--sweep", "touch-fraction=1e-6..1x10"],
    "mthp": ["mthp", "--size", "64k", "--explain"],
    "mthp sizes": ["mthp", "--profile", "arm64-4k", "--vma-size", "64M"],
    "mthp host": ["mthp", "--host", X86, "--size", "64k", "--vma-size", "64M"],
    "mthp pid": ["mthp", "--host", X86, "--pid", _pid_in_capture(), "--size", "64k"],
    "mthp trace": ["mthp", "--trace", RECORD, "--size", "64k", "--khugepaged"],
    "mthp sweep": ["mthp", "--sweep", "size=16k,64k,2M", "--vma-size", "64M"],
    "mthp khugepaged": ["mthp", "--size", "64k", "--prepopulated-stride", "1M", "--khugepaged",
                        "--profile", "arm64-4k"],
    "hgm": ["hgm"],
    "hgm guest": ["hgm", "--hugepage-size", "1G", "--path", "4K,2M,1G", "--guest-memory", "1T", "--explain"],
    "advise": ["advise", "--trace", RECORD, "--max-bloat", "2%", "--explain"],
    "host": ["host"],
    "profiles": ["profiles"],
    "profile": ["profiles", "arm64-16k"],
}
FLEET = {
    "fleet vmemmap": ["vmemmap"],
    "fleet vmemmap by arch kernel": ["vmemmap", "--by", "arch", "--by", "kernel"],
    "fleet mthp by profile": ["mthp", "--size", "64k", "--by", "profile"],
    "fleet pgtable": ["pgtable", "--vma-size", "1G"],
}


def _render(args, width):
    from click.testing import CliRunner

    from hugecalc.cli import cli

    r = CliRunner().invoke(cli, list(args), env={"COLUMNS": str(width), "NO_COLOR": "1"}, catch_exceptions=False)
    assert r.exit_code == 0, (args, r.stderr)
    return r.stdout


def _tokens(text):
    """Number tokens outside charts: a chart's body and tick lines ('│' rows, the '└' axis and the
    tick labels under it) change with the width by design."""
    out, after_axis = [], False
    for line in text.splitlines():
        if "└" in line:
            after_axis = True
            continue
        if after_axis or ("│" in line and ("●" in line or "○" in line or line.rstrip().endswith("│")
                                          or re.search(r"│\s*$|│\s{2,}", line))):
            after_axis = after_axis and line.strip() != "" and not line.startswith(("note", "How"))
            continue
        out += _TOKEN.findall(line)
    return sorted(out)


def _computed_once(monkeypatch, command):
    """``command``'s result computed once per set of options and drawn at every width: what the
    widths change is the drawing (the computation never reads the terminal)."""
    import dataclasses
    import importlib

    module = importlib.import_module(f"hugecalc.cli.{command}")
    spec, results = module.SPEC, {}

    def compute(params):
        key = repr((sorted(params.values.items()), params.profile.name, str(params.release)))
        if key not in results:
            results[key] = spec.compute(params)
        return results[key]

    monkeypatch.setattr(module, "SPEC", dataclasses.replace(spec, compute=compute))


def _check(args, widths=WIDTHS):
    wide = _render(args, 400)
    expected = _tokens(wide)
    titles = [line.strip() for line in wide.splitlines() if " — " in line and "│" not in line]
    for width in widths:
        out = _render(args, width)
        lines = out.splitlines()
        assert max(map(len, lines), default=0) <= width, (width, max(lines, key=len))
        assert "…" not in out, (width, out)
        missing = sorted(set(expected) - set(_tokens(out)))
        assert not missing, (width, missing[:8], out)
        flat = " ".join(out.split())
        for title in titles:  # a title may wrap, never lose a word
            assert " ".join(title.split()) in flat, (width, title)


@pytest.mark.parametrize("name", list(CASES))
def test_every_view_holds_at_every_width(name, monkeypatch):
    _computed_once(monkeypatch, CASES[name][0])
    _check(CASES[name])


@pytest.mark.parametrize("name", list(FLEET))
def test_every_fleet_view_holds_at_every_width(fleet200, name):
    command, *options = FLEET[name]
    _check(["fleet", command, str(fleet200), *options])
