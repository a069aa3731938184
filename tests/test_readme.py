"""Every `$ hugecalc ...` example in the README shows what the command prints today."""

import shutil
from pathlib import Path

import pytest

from tests.readme_examples import README, blocks, run

EXAMPLES = blocks(README.read_text())


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("command,shown", [(c, o) for c, o, _, _ in EXAMPLES], ids=[c for c, *_ in EXAMPLES])
def test_readme_example_is_current(command, shown):
    if "| jq" in command and not shutil.which("jq"):
        pytest.skip("jq is not installed")
    assert run(command) == "\n".join(line.rstrip() for line in shown.splitlines()) + "\n", (
        "README example is stale: run `make readme`")


@pytest.mark.parametrize("columns", [60, 80, 100, 120])
def test_no_number_is_ever_cut(columns):
    """At 60, 80, 100 and 120 columns (piped), tables reflow: wrapped labels, split tables, never a `…`."""
    import os
    import subprocess
    import sys

    from tests.readme_examples import README, blocks

    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "PATH": bindir + os.pathsep + os.environ["PATH"]}
    for command, *_ in blocks(README.read_text()):
        out = subprocess.run(f"{command} 2>&1", shell=True, capture_output=True, text=True, env=env,
                             cwd=README.parent).stdout
        assert "…" not in out, f"COLUMNS={columns} {command}:\n{out}"
