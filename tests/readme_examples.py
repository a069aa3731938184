"""The README's console examples: run each `$ hugecalc ...` block and compare or rewrite its output.

    python tests/readme_examples.py --write    # `make readme`: refresh every block

Blocks starting with `$ sudo` (verify, which needs root and changes the machine) are left alone.
Commands run with COLUMNS=80 (a pipe's width and a default terminal's) and NO_COLOR=1 through the shell, so `| jq` pipelines work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```console\n\$ (hugecalc [^\n]*)\n(.*?)```", re.S)


def run(command: str) -> str:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "PATH": bindir + os.pathsep + os.environ["PATH"]}
    out = subprocess.run(f"{command} 2>&1", shell=True, capture_output=True, text=True, env=env,
                         cwd=README.parent).stdout
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


def blocks(text: str):
    return [(m.group(1), m.group(2), m.start(2), m.end(2)) for m in BLOCK.finditer(text)]


def main() -> None:
    text = README.read_text()
    for command, _, start, end in reversed(blocks(text)):
        text = text[:start] + run(command) + text[end:]
    README.write_text(text)


if __name__ == "__main__" and "--write" in sys.argv:
    main()
