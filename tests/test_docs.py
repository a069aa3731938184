"""Every command has help with an example and is documented in the README."""

from pathlib import Path

import click
import pytest

from hugecalc.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text()


def _commands(group, prefix=""):
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")


@pytest.mark.parametrize("name,command", list(_commands(cli)))
def test_command_has_help_and_is_in_readme(name, command):
    assert command.help, f"{name} has no help"
    assert f"hugecalc {name}" in README, f"README does not show `hugecalc {name}`"
    if not isinstance(command, click.Group):
        assert "Example" in command.help, f"{name} --help shows no example"
