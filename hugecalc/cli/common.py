"""What every command shares: the size type, the options declared once (``--profile``,
``--kernel``, ``--json``, ``--explain``), error plumbing and the one output path.

Command modules import from here, never from each other's underscore names.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

from hugecalc.errors import HugecalcError, InputError
from hugecalc.profiles import DEFAULT_PROFILE, load_profile
from hugecalc.releases import NEWEST
from hugecalc.units import parse_size

if TYPE_CHECKING:
    from rich.console import Console


class UserError(click.ClickException):
    """A HugecalcError on its way out: message to stderr, its own exit code; bad input (exit 2) ends
    with the command's help hint, as click's own usage errors do."""

    def __init__(self, error: HugecalcError, command: str | None = None) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code
        self.command = command

    def show(self, file: Any = None) -> None:
        super().show(file)
        if self.exit_code == 2 and self.command:
            click.echo(f"Try '{self.command} --help' for help.", err=True)


class Group(click.Group):
    """A command group whose HugecalcErrors become one-line messages with their exit code."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands in their order, each with its whole first sentence (not cut at 45 characters)."""
        rows = [(name, command.get_short_help_str(limit=200)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HugecalcError as e:
            sub = ctx.invoked_subcommand
            raise UserError(e, f"{ctx.command_path} {sub}" if sub else ctx.command_path) from e


class Size(click.ParamType):
    """A size spelled like the kernel's memparse (4096, 0x1000, 64K, 2M, 1G, 2MiB); as an
    address (``positive=False``) zero is allowed too."""

    def __init__(self, name: str = "SIZE", positive: bool = True) -> None:
        self.name, self.positive = name, positive

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        what = param.opts[0] if param else self.name.lower()
        try:
            n = parse_size(value, what)
        except InputError as e:  # the message names the option already: not "Invalid value for ..."
            raise click.UsageError(str(e), ctx) from None
        if self.positive and n <= 0:
            raise click.UsageError(f"{what} {value!r} must be greater than zero", ctx)
        return n


def _complete_profile(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of --profile: the bundled names and ``host``, or a path."""
    from click.shell_completion import CompletionItem

    from hugecalc.profiles import bundled_profiles

    if "/" in incomplete or incomplete.startswith("."):
        return [CompletionItem(incomplete, type="file")]
    return [CompletionItem(n) for n in [*sorted(bundled_profiles()), "host"] if n.startswith(incomplete)]


def complete_backing(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of --backing: anon, thp and the hugetlb sizes of the default profile."""
    from click.shell_completion import CompletionItem

    from hugecalc.units import fmt_size

    names = ["anon", "thp", *(f"hugetlb-{fmt_size(h.size)}" for h in load_profile().hugetlb)]
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


class AliasOption(click.Option):
    """An option whose later names are hidden aliases: they work, and --help shows only the first."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts = self.opts
        self.opts = opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


class Real(click.FloatRange):
    """A finite number within a range: ``nan`` and ``inf`` are refused, not carried into a result."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


PID_MAX_LIMIT = 4 << 20  # include/linux/threads.h: the most processes a 64-bit kernel can have

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Duration(click.ParamType):
    """A time: 30s, 500ms, 2m, 1h, or a number of seconds; more than 0, at most a day."""

    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        m = _DURATION.match(str(value).strip()) if str(value).isascii() else None
        seconds = float(m[1]) * _SECONDS[m[2]] if m else 0.0
        if not 0 < seconds <= 86400:
            self.fail(f"{value!r} is not a duration of more than 0 and at most a day (30s, 500ms, 2m, 1h)", param, ctx)
        return seconds


SIZE = Size()
ADDR = Size("ADDR", positive=False)  # hex (0x7f0000000000), decimal, or a size spelling (1G)


def Text(*args: Any, **kw: Any) -> Any:  # noqa: N802 - stands in for rich.text.Text
    """rich.text.Text, imported when a table is drawn: --json output never loads rich."""
    from rich.text import Text as RichText

    return RichText(*args, **kw)


def Table(*args: Any, **kw: Any) -> Any:  # noqa: N802 - stands in for rich.table.Table
    """rich.table.Table, imported when a table is drawn."""
    from rich.table import Table as RichTable

    return RichTable(*args, **kw)


def terminal_width() -> int:
    """$COLUMNS when it is a positive number, else the terminal's (stdout's, or stderr's or stdin's
    when stdout is piped), else 80; never less than 40."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), 40)
    for stream in (sys.stdout, sys.stderr, sys.stdin):
        try:
            return max(os.get_terminal_size(stream.fileno()).columns, 40)
        except (AttributeError, OSError, ValueError):
            continue
    return 80


def quiet_exit() -> None:
    """Exit 0 after the reader of stdout went away (`| head`), without the interpreter's own
    complaint when it flushes the closed pipe at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def console() -> Console:
    """stdout: Rich on a terminal, plain text elsewhere (and with NO_COLOR)."""
    from rich.console import Console

    class Quiet(Console):
        def on_broken_pipe(self) -> None:  # `| head` took what it wanted: exit 0, no message
            quiet_exit()

        def _render_buffer(self, buffer: Any) -> str:  # no line ends in the padding of a table or title
            return "\n".join(line.rstrip(" ") for line in super()._render_buffer(buffer).split("\n"))

    plain = bool(os.environ.get("NO_COLOR"))  # no-color.org: no escapes at all, bold included
    return Quiet(width=terminal_width(), highlight=False, color_system=None if plain else "auto")


def common_options(fn: Callable) -> Callable:
    """--profile, --kernel, --host, --json, --explain: every command takes them
    (``command.resolve`` turns the first three into the profile, release and capture)."""
    for decorator in reversed([
        click.option("--profile", "profile_name", metavar="NAME|PATH|host", default=None,
                     shell_complete=_complete_profile,
                     help=f"Machine profile: a bundled name (default {DEFAULT_PROFILE}), a YAML file or a capture, "
                          "or 'host' for the running machine."),
        click.option("--kernel", "kernel", metavar="X.Y[.Z]", default=None,
                     help=f"Kernel release whose rules apply (default {NEWEST[0]}.{NEWEST[1]}, the newest modelled; "
                          "with --host, the captured one)."),
        click.option("--host", "host_file", metavar="FILE", default=None,
                     help="A capture from 'hugecalc host --output FILE', or a record (its machine when it was made): "
                          "its profile, kernel and settings."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout."),
        click.option("--explain", is_flag=True, help="Show how each figure was derived and the kernel rule."),
    ]):
        fn = decorator(fn)
    return fn


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, in the order given (as sqlite-utils shares them)."""

    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def emit(result: Any, as_json: bool, explain: bool, draw: Callable[[Console], None]) -> None:
    """The one output path: the JSON document, or the table ``draw`` prints, then notes and (with
    --explain) the derivations."""
    from hugecalc.render import print_explain, print_notes, to_json

    if as_json:
        click.echo(to_json(result, explain))
        return
    out = console()
    draw(out)
    print_notes(out, result)
    if explain:
        print_explain(out, result)


def process_from(params: Any, pid: int) -> tuple[Any, Any, Any, Any]:
    """The process ``pid`` from ``--host FILE``, or captured live now with this machine's profile and
    kernel (unless --profile/--kernel say otherwise): (capture, process, profile, release)."""
    capture, profile, release = params.capture, params.profile, params.release
    if capture is None or not capture.processes:
        if "host_file" in params.given:
            from hugecalc.machine.trace import is_record

            if is_record(params.values["host_file"]):
                raise InputError(f"--pid {pid}: a record holds no snapshot of its processes: replay it with "
                                 f"--trace {params.values['host_file']} --pid {pid}")
            raise InputError(f"--pid {pid}: the capture has no processes (capture with 'hugecalc host --pids {pid}')")
        from hugecalc.machine.snapshot import capture_machine

        capture = capture_machine([pid], "--pid")
        if "profile_name" in params.given and profile.arch.value != capture.profile.arch.value:
            raise InputError(f"--profile {profile.name} is {profile.arch.value}, but process {pid} runs here on "
                             f"{capture.profile.arch.value}: replay a live process with this machine's profile")
        if "profile_name" not in params.given:
            profile = capture.profile
        if "kernel" not in params.given:
            from hugecalc.machine.capture import captured_release

            release = captured_release(capture)
    if profile.page_size != capture.page_size:
        raise InputError(f"--profile {profile.name} has {profile.page_size}-byte pages, but the process was "
                         f"captured with {capture.page_size}-byte pages")
    return capture, capture.process(pid), profile, release


def record_context(params: Any) -> tuple[Any, Any, Any, Any, list[str]]:
    """``--trace FILE``: the record, the recorded machine's profile and kernel unless --profile or
    --kernel say otherwise, its THP settings then, and notes on them."""
    from hugecalc.calc.replay import settings_from_capture
    from hugecalc.machine.capture import Capture, captured_release
    from hugecalc.machine.trace import read_record

    record = read_record(params.trace)
    record.meta["path"] = params.trace
    capture = Capture.model_validate(record.meta["capture"])
    profile = params.profile if "profile_name" in params.given else capture.profile
    release = params.release if "kernel" in params.given else captured_release(capture)
    now, notes = settings_from_capture(capture)
    return record, profile, release, now, notes


def replay_record(params: Any, what_if: Any, command: str) -> Any:
    """``--trace FILE`` replayed under its THP settings then, and under them with the what-if."""
    from hugecalc.calc.tracereplay import AtEnd, compute_trace

    record, profile, release, now, notes = record_context(params)
    changed = now.with_overrides(what_if)
    runs = {"now": now} | ({"what-if": changed} if changed != now else {})
    at_end = AtEnd(max_ptes_none=params.values["max_ptes_none"] if params.values.get("khugepaged") else None,
                   after=params.values.get("after"))
    result = compute_trace(profile, release, record, runs, params.pid, command, at_end)
    result.notes[:0] = notes
    return result


def read_input(path: str, option: str) -> str:
    """An input file's text (``-``: stdin), bounded; a FIFO, device or directory is refused."""
    from hugecalc.files import READ_LIMIT, read_text

    if path == "-":
        data = sys.stdin.buffer.read(READ_LIMIT + 1) if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        if len(data) > READ_LIMIT:
            raise InputError(f"{option} -: more than the {READ_LIMIT:,} bytes hugecalc reads")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{option} -: not UTF-8 text") from None
    return read_text(path, option)
