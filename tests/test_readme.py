"""Every `$ hugecalc ...` example in the README shows what the command prints today."""

import shutil

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
