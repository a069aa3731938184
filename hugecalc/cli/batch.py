"""``hugecalc batch``: many what-ifs in one process, JSON Lines in and out."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from hugecalc.cli.spec import Spec
from hugecalc.errors import HugecalcError, InputError


def error_line(message: str, code: int, command: str | None = None) -> str:
    """The result line of a request that failed: ``{"error", "exit_code"[, "command"]}``."""
    from hugecalc.result import BatchError

    return BatchError(error=message, exit_code=code, command=command).model_dump_json(exclude_none=True)


def request_args(request: Any) -> list[str]:
    """``{"command": C, "args": [...]}`` or ``{"command": C, "options": {...}}`` -> argv."""
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise InputError('a request is an object with a "command" and "args" (a list) or "options" (an object)')
    command = request["command"]
    args = request.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise InputError('"args" must be a list of strings')
    argv = [command, *map(str, args)]
    options = request.get("options", {})
    if not isinstance(options, dict):
        raise InputError('"options" must be an object of option names and values')
    for key, value in options.items():
        flag = "--" + key.lstrip("-").replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if v is True:
                argv.append(flag)
            elif v not in (False, None):
                argv += [flag, str(v)]
    return argv


def run_one(line: str) -> tuple[str, bool]:
    """One request line -> (one result line, ok): the command's own ``compute``, its result as
    the compact document ``--json`` prints."""
    from hugecalc.cli.command import compute_argv, load
    from hugecalc.render import to_json

    try:
        request = json.loads(line)
    except ValueError as e:
        return error_line(f"not a JSON object: {e}", 2), False
    command = None
    try:
        argv = request_args(request)
        command = argv[0]
        found = load(command)
        if found is None or not found[0].batch:
            raise InputError(f"{command!r} cannot run in a batch" if found else f"no such command {command!r}")
        rest = [a for a in argv[1:] if a != "--json"]
        return to_json(compute_argv(*found, rest), "--explain" in rest), True
    except HugecalcError as e:
        code, message = e.exit_code, str(e)
    except click.ClickException as e:
        code, message = e.exit_code, e.format_message()
    except Exception as e:  # a bug: reported on its line, the batch goes on
        code, message = 1, f"internal error: {type(e).__name__}: {e}"
    return error_line(message, code, command), False


def _run_chunk(lines: list[str]) -> list[tuple[str, bool]]:
    from hugecalc import render

    render.JSON_INDENT = None
    if any('"mthp"' in line for line in lines):
        from hugecalc.calc import faults

        faults.kernels()  # many walks: compile (or load) them once
    return [run_one(line) for line in lines]


@click.command()
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes to spread the requests over (results stay in input order).")
def batch(jobs: int) -> None:
    """Run many what-ifs in one process: JSON Lines of requests on stdin, one result document per
    line on stdout, in input order (the documents --json prints). A bad line gets an error object
    on its line and the run goes on; exit 1 if any line failed, 2 if the input cannot be read.

    A request is {"command": "mthp", "args": ["--size", "64k"]} or the same with an options object,
    {"command": "mthp", "options": {"size": "64k", "vma-size": "1G"}}; true is a flag.

    \b
    Examples:
      printf '%s\\n' '{"command":"vmemmap","args":["--pages","1T"]}' | hugecalc batch
      jq -c '{command:"mthp", options:{size:.}}' <<< '"16k" "64k" "2M"' | hugecalc batch | jq .faults
      hugecalc batch --jobs 2 < requests.jsonl > results.jsonl
    """
    try:
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        lines = [line for line in raw.decode("utf-8").splitlines() if line.strip()]
        if any("\0" in line for line in lines):
            raise UnicodeDecodeError("utf-8", raw, 0, 1, "a NUL byte: binary input")
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"stdin cannot be read as JSON Lines text: {e}") from None
    if jobs == 1 or len(lines) < 2 * jobs:
        results = _run_chunk(lines)
    else:
        import multiprocessing

        size = max(1, len(lines) // (jobs * 8))
        chunks = [lines[i:i + size] for i in range(0, len(lines), size)]
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = [r for part in pool.imap(_run_chunk, chunks) for r in part]
    failed = 0
    for text, ok in results:
        click.echo(text)
        failed += not ok
    if failed:
        raise click.exceptions.Exit(1)


SPEC = Spec(name="batch", rank=7, documents={})
