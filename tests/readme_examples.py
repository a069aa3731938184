"""The README's console examples: run each `$ hugecalc ...` block and compare or rewrite its output.

    python tests/readme_examples.py --write    # `make readme`: refresh every block

Blocks starting with `$ sudo` (verify, which needs root and changes the machine) are left alone.
Commands run with COLUMNS=80 (a pipe's width and a default terminal's) and NO_COLOR=1, stderr with
stdout; pipelines (`| jq`) through the shell, single commands through the entry point in-process.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL = re.compile(r"[|&;<>$`]")  # a pipeline or a redirect: run by the shell
BLOCK = re.compile(r"```console\n\$ (hugecalc [^\n]*)\n(.*?)```", re.S)


def run(command: str) -> str:
    if SHELL.search(command):
        bindir = str(Path(sys.executable).parent)
        env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "PATH": bindir + os.pathsep + os.environ["PATH"]}
        out = subprocess.run(f"{command} 2>&1", shell=True, capture_output=True, text=True, env=env,
                             cwd=README.parent).stdout
    else:
        out = in_process(shlex.split(command)[1:])
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


def in_process(argv: list[str]) -> str:
    """``hugecalc ARGV 2>&1`` through the entry point (``hugecalc.cli:main``), in this interpreter:
    a command without a pipe does not need a shell and a new interpreter to print the same."""
    from click.testing import CliRunner

    from hugecalc.cli import main

    cwd, argv0 = os.getcwd(), sys.argv
    os.chdir(README.parent)
    try:
        with CliRunner().isolation(env={"COLUMNS": "80", "NO_COLOR": "1"}) as (_, _, output):
            sys.argv = ["hugecalc", *argv]
            try:
                main()
            except SystemExit:
                pass
            return output.getvalue().decode()
    finally:
        sys.argv = argv0
        os.chdir(cwd)


def blocks(text: str):
    return [(m.group(1), m.group(2), m.start(2), m.end(2)) for m in BLOCK.finditer(text)]


def main() -> None:
    text = README.read_text()
    for command, _, start, end in reversed(blocks(text)):
        text = text[:start] + run(command) + text[end:]
    README.write_text(text)


if __name__ == "__main__" and "--write" in sys.argv:
    main()
