"""``hugecalc batch``: many what-ifs in one process, JSON Lines in and out."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import click

from hugecalc.cli.spec import Spec
from hugecalc.errors import HugecalcError, InputError


MAX_LINE_BYTES = 1 << 20  # a request longer than this is refused on its line, unread
KEYS = {"command", "args", "options"}
#: Options that read something outside the request (the live machine, a process, a file): a request
#: with one is computed every time; any other is a pure function of its text, answered once.
IMPURE = ("--host", "--pid", "--trace", "--touch-file", "--occupancy-file", "--profile")
CACHE_BYTES = 64 << 20  # results kept for identical requests, at most
_answers: dict[bytes, str] = {}
_kept = [0]
WALKS_BEFORE_COMPILED = 64  # distinct mthp requests after which the compiled walk pays for its loading
_walks = [0]


def error_line(message: str, code: int, command: str | None = None, line: int | None = None) -> str:
    """The result line of a request that failed: ``{"error", "exit_code"[, "command"], "line"}``."""
    from hugecalc.result import BatchError

    return BatchError(error=message, exit_code=code, command=command, line=line).model_dump_json(exclude_none=True)


def request_args(request: Any) -> list[str]:
    """``{"command": C, "args": [...]}`` or ``{"command": C, "options": {...}}`` -> argv."""
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        raise InputError('a request is an object with a "command" and "args" (a list) or "options" (an object)')
    unknown = sorted(set(request) - KEYS)
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} in the request: use command, args, options")
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


def pure(argv: list[str]) -> bool:
    """Whether a request's answer depends on its text alone (a bundled --profile is pure)."""
    from hugecalc.profiles import bundled_profiles

    if argv[0] == "host":
        return False
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in IMPURE:
            if flag != "--profile":
                return False
            name = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if name not in bundled_profiles():
                return False
    return True


def run_one(raw: bytes, number: int) -> tuple[str, bool]:
    """Input line ``number`` -> (one result line, ok): the command's own ``compute``, its result as
    the compact document ``--json`` prints; any failure costs only this line. A request seen before,
    byte for byte, whose answer depends on its text alone (:func:`pure`) is answered from then on."""
    known = _answers.get(raw)
    if known is not None:
        return known, True
    if b'"mthp"' in raw:
        _walks[0] += 1
        if _walks[0] == WALKS_BEFORE_COMPILED:  # many distinct walks: load the compiled walk once
            from hugecalc.calc import faults

            faults.kernels()
    out, ok, argv = _run_one(raw, number)
    if ok and argv and pure(argv) and _kept[0] + len(out) <= CACHE_BYTES:
        _answers[raw] = out
        _kept[0] += len(raw) + len(out)
    return out, ok


def _run_one(raw: bytes, number: int) -> tuple[str, bool, list[str] | None]:
    from hugecalc.calc import EXPLAINING
    from hugecalc.cli.command import compute_argv, load
    from hugecalc.render import to_json

    if len(raw) > MAX_LINE_BYTES:
        return error_line(f"the request is {len(raw):,} bytes, more than {MAX_LINE_BYTES:,}", 2, line=number), False, None
    try:
        text = raw.decode("utf-8")
        if not text.strip():
            raise ValueError("an empty line")
        request = json.loads(text)
    except (ValueError, RecursionError) as e:
        message = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"not a JSON object: {str(e)[:200]}"
        return error_line(message, 2, line=number), False, None
    command, argv = None, None
    try:
        argv = request_args(request)
        command = argv[0]
        found = load(command)
        if found is None or not found[0].batch:
            raise InputError(f"{command!r} cannot run in a batch" if found else f"no such command {command!r}")
        rest = [a for a in argv[1:] if a != "--json"]
        wanted = EXPLAINING.set("--explain" in rest)  # derivations are built only to be printed
        try:
            return to_json(compute_argv(*found, rest), "--explain" in rest), True, argv
        finally:
            EXPLAINING.reset(wanted)
    except HugecalcError as e:
        code, message = e.exit_code, str(e)
    except click.ClickException as e:
        code, message = e.exit_code, e.format_message()
    except RecursionError:
        code, message = 2, "the request is nested too deeply"
    except Exception as e:  # a bug: reported on its line, the batch goes on
        code, message = 1, f"internal error: {type(e).__name__}: {e}"
    return error_line(message, code, command, number), False, None


def _run_chunk(lines: list[tuple[int, bytes]]) -> list[tuple[str, bool]]:
    from hugecalc import render

    render.JSON_INDENT = None
    return [run_one(raw, number) for number, raw in lines]


def _lines(stream, size: int):
    """(line number, bytes) chunks of ``size`` lines, read as they come: split at newlines only
    (U+2028 inside a string is not a line break), one long line read no further than the limit."""
    chunk, number = [], 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            break
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of an overlong line, keeping its place
                more = stream.readline(MAX_LINE_BYTES)
                if not more or more.endswith(b"\n"):
                    break
        number += 1
        chunk.append((number, raw.rstrip(b"\r\n") if len(raw) <= MAX_LINE_BYTES else raw))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def in_order(pool: Any, fn: Any, chunks: Any, ahead: int) -> Any:
    """``fn`` of each chunk on the pool's workers, yielded in input order, with at most ``ahead``
    chunks read and not yet yielded (Pool.imap would read the whole input into its task queue)."""
    from collections import deque

    pending: deque = deque()
    for chunk in chunks:
        pending.append(pool.apply_async(fn, (chunk,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@click.command()
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes to spread the requests over (results stay in input order).")
def batch(jobs: int) -> None:
    """Run many what-ifs in one process: JSON Lines of requests on stdin, one result document per
    line on stdout, in input order, each printed as soon as it is computed (the documents --json
    prints). A bad line (blank, not UTF-8, not JSON, too long, an unknown key) gets an error object
    with its line number on its line and the run goes on; exit 1 if any line failed.

    A request gives the command's arguments, or its options as an object (true is a flag):

    \b
      {"command": "mthp", "args": ["--size", "64k"]}
      {"command": "mthp", "options": {"size": "64k", "vma-size": "1G"}}

    \b
    Examples:
      printf '%s\\n' '{"command":"vmemmap","args":["--pages","1T"]}' | hugecalc batch
      jq -c '{command:"mthp", options:{size:.}}' <<< '"16k" "64k" "2M"' | hugecalc batch | jq .faults
      hugecalc batch --jobs 2 < requests.jsonl > results.jsonl
    """
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO(sys.stdin.read().encode())
    if jobs == 1:
        results = (r for chunk in _lines(stream, 1) for r in _run_chunk(chunk))
    else:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(jobs)
        results = (r for part in in_order(pool, _run_chunk, _lines(stream, 64), 8 * jobs) for r in part)
    failed = 0
    try:
        for text, ok in results:  # each as soon as it is computed, in input order
            click.echo(text)
            sys.stdout.flush()
            failed += not ok
    finally:
        if jobs > 1:
            pool.terminate()
    if failed:
        raise click.exceptions.Exit(1)


SPEC = Spec(name="batch", rank=7, documents={})
