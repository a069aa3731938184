"""Runs hugecalc commands one after another on the terminal it was started in (a tmux pane), as
`hugecalc ARGS` would: tests/test_terminal.py resizes the pane, drops request N (``N.json``:
argv, width, height) into the folder given, and reads the screen once ``N.done`` (the size the
command saw) appears.  The interpreter and the imports are paid once, not once per command and
width.

Each command starts with its own marker line, so the screen is read from there on."""

import json
import os
import sys
import time
from pathlib import Path

from hugecalc.cli import main


def serve(folder: Path) -> None:
    n = 0
    while True:
        request = folder / f"{n}.json"
        while not request.exists():
            time.sleep(0.01)
        argv, width, height = json.loads(request.read_text())
        deadline = time.monotonic() + 10  # the pane's new size reaches the terminal (TIOCGWINSZ)
        while tuple(os.get_terminal_size()) != (width, height) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"\x1b[H\x1b[2J<<request {n}>>", flush=True)
        sys.argv = ["hugecalc", *argv]
        try:
            main()
        except SystemExit:
            pass
        sys.stdout.flush()
        done = folder / f"{n}.done"  # written whole, then named: the test reads it once it appears
        done.with_suffix(".part").write_text(json.dumps(list(os.get_terminal_size())))
        done.with_suffix(".part").rename(done)
        n += 1


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
