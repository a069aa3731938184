"""A real terminal (tmux): the README examples at 80x24, 60, 100 and 120 columns show every count
of their JSON result whole, and no `…`; the width is the terminal's own (no COLUMNS)."""

import functools
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HUGECALC = str(Path(sys.executable).parent / "hugecalc")
CASES = [
    (["vmemmap", "--pages", "1024G"], lambda d: [r[k] for r in d["rows"] for k in ("hugepages", "split_pte_tables")]),
    (["mthp", "--size", "64k"], lambda d: [d[k] for k in ("faults", "write_faults", "tlb_entries")]),
    (["mthp", "--profile", "arm64-4k", "--vma-size", "64M"],
     lambda d: [r[k] for r in d["sizes"] for k in ("faults", "folios", "tlb_entries")]),
    (["pgtable", "--vma-size", "64G", "--touch-stride", "2M", "--after", "dontneed"],
     lambda d: [r["tables"] for r in d["levels"]]),
    (["hgm", "--hugepage-size", "1G", "--path", "4K,2M,1G", "--guest-memory", "1T"],
     lambda d: [s["atomic_ops"] for s in d["schemes"] if s["atomic_ops"] is not None]),
    (["mthp", "--trace", str(Path(__file__).parent / "data/records/sqlite3.record"), "--size", "64k"],
     lambda d: [r[k] for r in d["runs"] for k in ("faults", "tlb_entries")]),
    (["hgm"],  # ten step columns: stacked where they do not fit
     lambda d: [st[k] for s in d["schemes"] for st in s["steps"] for k in ("entries_removed", "cache_lines")]),
]


@functools.lru_cache(maxsize=None)
def _json(*args: str) -> dict:
    """The command's --json document: one run for all the widths it is shown at."""
    return json.loads(subprocess.run([HUGECALC, *args, "--json"], capture_output=True, text=True, check=True).stdout)


class Terminal:
    """A tmux session whose pane runs tests/terminal_session.py: each command drawn on a real
    terminal of the size asked for, one interpreter for them all (one per test process)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0
        self.session = f"hugecalc-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", "80", "-y", "24",
                        "env", "-u", "COLUMNS", "-u", "LINES", "NO_COLOR=1", "TERM=xterm",
                        sys.executable, str(Path(__file__).parent / "terminal_session.py"), str(folder)],
                       check=True)

    def show(self, args: list[str], width: int, height: int) -> str:
        """The screen (and the scrollback) after ``hugecalc ARGS`` on a ``width``x``height`` terminal."""
        n, self.count = self.count, self.count + 1
        tmux = ["tmux"]
        subprocess.run([*tmux, "resize-window", "-t", self.session, "-x", str(width), "-y", str(height)], check=True)
        subprocess.run([*tmux, "clear-history", "-t", self.session], check=True)
        request = self.folder / f"{n}.json"
        request.with_suffix(".tmp").write_text(json.dumps([args, width, height]))
        request.with_suffix(".tmp").rename(request)
        deadline = time.monotonic() + 60
        while not (self.folder / f"{n}.done").exists():
            assert time.monotonic() < deadline, f"no screen for {args} within 60 s"
            time.sleep(0.02)
        assert json.loads((self.folder / f"{n}.done").read_text()) == [width, height]  # the size it drew for
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-S", "-", "-t", self.session],
                                capture_output=True, text=True, check=True).stdout
        marker = f"<<request {n}>>"
        assert marker in screen, screen
        return screen.split(marker, 1)[1]

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


@pytest.fixture(scope="session")
def terminal(tmp_path_factory):
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    term = Terminal(tmp_path_factory.mktemp("terminal"))
    yield term
    term.close()


@pytest.mark.parametrize("width,height", [(80, 24), (60, 40), (100, 30), (120, 30)])
@pytest.mark.parametrize("args,numbers", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_every_number_whole_in_a_real_terminal(terminal, args, numbers, width, height):
    doc = _json(*args)
    screen = terminal.show(args, width, height)
    assert "…" not in screen, screen
    for n in numbers(doc):
        assert f"{n:,}" in screen, f"{n:,} is not on the {width}-column screen:\n{screen}"


@pytest.mark.parametrize("width", [80, 120])  # 60 columns (a block per row) is held piped: tests/test_widths.py
def test_a_grouped_fleet_table_whole_in_a_real_terminal(terminal, fleet200, width):
    args = ["fleet", "mthp", str(fleet200), "--size", "64k", "--by", "arch", "--by", "kernel"]
    doc = _json(*args)
    screen = terminal.show(args, width, 500)
    assert "…" not in screen, screen
    from hugecalc.units import fmt_bytes

    for g in doc["groups"]:
        assert f"{g['hosts']:,}" in screen
        for metric, stats in g["metrics"].items():
            for v in stats.values():
                shown = fmt_bytes(v) if metric.endswith("_bytes") else f"{v:,.0f}"
                assert shown in screen, (metric, shown, screen)
